"""Seal secrets for storage in database columns.

Every secret the addon keeps (OAuth tokens, the pending OAuth flow with its
PKCE verifier, the Azure client secret, subscription clientState values) is
sealed with Fernet under a key derived by HKDF-SHA256 from the database UUID
and, when configured, a secret that lives outside the database. The UUID
travels inside every dump; the configuration secret does not, which is what
keeps a leaked dump from being enough to decrypt.

Each purpose gets its own key (HKDF ``info``), so a value sealed as a token
cannot be replayed where a pending flow is expected.
"""

import base64
import re
import struct
from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CONFIG_OPTION = "microsoft_outlook_graph_vault_secret"
ENV_VARIABLE = "MICROSOFT_OUTLOOK_GRAPH_VAULT_SECRET"

# The purposes the addon seals (names, not secrets); any short lowercase name works.
PURPOSE_TOKEN = "token"  # noqa: S105
PURPOSE_FLOW = "flow"
PURPOSE_CLIENT_SECRET = "client_secret"  # noqa: S105
PURPOSE_CLIENT_STATE = "client_state"

VERSION_PREFIX = "v1:"

# Changing the salt or the info layout changes every key: that would need a
# new version prefix and a migration, never an edit in place.
_SALT = b"microsoft_outlook_graph/vault/v1"
_INFO_PREFIX = b"microsoft_outlook_graph/vault/v1/purpose="
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class VaultError(ValueError):
    """A sealed value cannot be opened; the message never holds secret content."""

    def __init__(self, purpose):
        self.purpose = purpose
        super().__init__(
            f"Cannot open the stored {purpose}: sealed with another key: "
            "the database was copied or the vault secret changed; reconnect."
        )


def config_secrets_from(odoo_config_value: str | None, environ: Mapping[str, str]) -> list[str]:
    """The vault secrets, current first, from the Odoo option or the environment.

    Both hold a comma-separated list: the first entry is the current secret, the
    others are previous ones kept until everything is re-sealed. The Odoo
    configuration option wins when it is set; the environment is read otherwise.
    Odoo hands ``None`` or ``False`` for an option that is absent.
    """
    raw = odoo_config_value or environ.get(ENV_VARIABLE) or ""
    secrets = []
    for secret in (part.strip() for part in str(raw).split(",")):
        if secret and secret not in secrets:
            secrets.append(secret)
    return secrets


class Vault:
    """Seal and open secrets bound to one database and the configured secrets."""

    def __init__(self, db_uuid: str, config_secrets: Sequence[str] = ()):
        db_uuid = (db_uuid or "").strip()
        if not db_uuid:
            raise ValueError("The vault needs the database UUID.")
        secrets = [s for s in config_secrets if s]
        # Length-prefixing the UUID keeps (uuid, secret) pairs from colliding.
        base = struct.pack(">I", len(db_uuid.encode())) + db_uuid.encode()
        self._materials = [base + s.encode() for s in secrets]
        # The UUID-only key stays last so that values sealed before a secret
        # was configured still open, and get re-sealed under the secret.
        self._materials.append(base)
        self._has_config_secret = bool(secrets)
        self._fernets = {}

    def __repr__(self):
        # Never show key material, even in a debugger or an error report.
        return f"<Vault config_secret={self._has_config_secret}>"

    @property
    def has_config_secret(self) -> bool:
        """False when a database dump alone is enough to open what is sealed."""
        return self._has_config_secret

    def seal(self, value: str | bytes, purpose: str) -> str:
        """Encrypt ``value`` (text, or UTF-8 bytes) under the current key."""
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, bytes):
            # The vault stores text: refuse now what could not be opened later,
            # without the codec's message, which quotes the offending byte.
            try:
                value.decode()
            except UnicodeDecodeError:
                raise ValueError("Only UTF-8 text can be sealed.") from None
        else:
            raise TypeError(f"Only text can be sealed, not {type(value).__name__}.")
        token = self._fernet(purpose).encrypt(value)
        return VERSION_PREFIX + token.decode("ascii")

    def open(self, sealed: str | bytes, purpose: str) -> str:
        """Decrypt a value sealed for ``purpose``, with the current or an older key."""
        token = self._token(sealed, purpose)
        try:
            return self._fernet(purpose).decrypt(token).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise VaultError(purpose) from None

    def open_or_none(self, sealed, purpose: str) -> str | None:
        """``open``, or None when nothing is stored (Odoo's empty field is False).

        A stored value that cannot be opened still raises :class:`VaultError`.
        """
        if not sealed:
            return None
        return self.open(sealed, purpose)

    def reseal(self, sealed: str | bytes, purpose: str) -> str:
        """Re-encrypt a sealed value under the current key (key rotation)."""
        token = self._token(sealed, purpose)
        try:
            rotated = self._fernet(purpose).rotate(token)
        except InvalidToken:
            raise VaultError(purpose) from None
        return VERSION_PREFIX + rotated.decode("ascii")

    def _token(self, sealed, purpose):
        self._check_purpose(purpose)
        if isinstance(sealed, bytes):
            try:
                sealed = sealed.decode("ascii")
            except UnicodeDecodeError:
                raise VaultError(purpose) from None
        if not isinstance(sealed, str) or not sealed.startswith(VERSION_PREFIX):
            raise VaultError(purpose)
        try:
            return sealed[len(VERSION_PREFIX) :].encode("ascii")
        except UnicodeEncodeError:
            raise VaultError(purpose) from None

    def _fernet(self, purpose):
        self._check_purpose(purpose)
        fernet = self._fernets.get(purpose)
        if fernet is None:
            keys = [Fernet(self._derive(m, purpose)) for m in self._materials]
            fernet = self._fernets[purpose] = MultiFernet(keys)
        return fernet

    @staticmethod
    def _derive(material, purpose):
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=_SALT,
            info=_INFO_PREFIX + purpose.encode(),
            backend=default_backend(),
        )
        return base64.urlsafe_b64encode(hkdf.derive(material))

    @staticmethod
    def _check_purpose(purpose):
        if not isinstance(purpose, str) or not _PURPOSE_RE.fullmatch(purpose):
            raise ValueError(f"Invalid vault purpose: {purpose!r}.")
