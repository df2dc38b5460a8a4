"""The Azure app's certificate credential: a key pair and a self-signed certificate that
Odoo makes, and the signed client assertion that proves the app at the token endpoint.

Microsoft's format ("Microsoft identity platform application authentication certificate
credentials", https://learn.microsoft.com/entra/identity-platform/certificate-credentials):
a JWT with header ``alg`` PS256, ``typ`` JWT and ``x5t#S256`` (base64url of the SHA-256
thumbprint of the certificate's DER); claims ``aud`` (the token endpoint), ``iss`` and
``sub`` (both the client id), ``jti`` (a GUID), ``nbf``, ``iat`` and ``exp`` (a few minutes
after ``nbf``); signed with PSS padding.

MSAL builds that form itself only from 1.35 (``public_certificate`` without ``thumbprint``);
its older versions sign RS256 with the SHA-1 ``x5t``. Every version from 1.28 on takes a
callable ``client_assertion`` and calls it for each token request, so the addon signs the
assertion here (:class:`AssertionSigner`) and gets the documented, stronger form, with a
fresh ``jti`` each time, whatever MSAL is installed.

The private key is plain PEM only between :func:`generate` and the caller's vault, and
inside :class:`AssertionSigner`; no repr shows it. Nothing here imports ``odoo``.
"""

import base64
import dataclasses
import datetime
import json
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .errors import _fill, _lt, _untranslated

MIN_KEY_SIZE = 2048
DEFAULT_KEY_SIZE = 2048
DEFAULT_LIFETIME_DAYS = 730
# Azure takes certificates of any lifetime; ten years bounds a typing mistake.
MAX_LIFETIME_DAYS = 3650
# The certificate starts an hour back: Entra refuses a key before its start ("The key
# used is expired" with a start in the future), so a Microsoft clock a little behind
# Odoo's must not make a new certificate unusable.
NOT_BEFORE_MARGIN = 3600
# Seconds an assertion is valid: Microsoft asks for a short one, "5-10 minutes after nbf".
ASSERTION_LIFETIME = 600
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Every PEM private key (PKCS#8, PKCS#1, encrypted) ends its header with this text.
PRIVATE_KEY_MARKER = "PRIVATE KEY-----"
# The Azure portal path, shown where the admin must act.
AZURE_UPLOAD_PATH = (
    "App registrations > your app > Certificates & secrets > Certificates > Upload certificate"
)


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the text never holds key material.

    Like a GraphError's, its sentence is a template marked for the .pot and its values are
    filled in after translation (``message(translate)``); ``str()`` is English.
    """

    def __init__(self, template, params=None):
        self.template = template
        self.params = params or {}
        super().__init__(self.message())

    def message(self, translate=_untranslated):
        return _fill(translate, self.template, self.params)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _epoch(moment):
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


def _validity(cert):
    # cryptography 42 added the *_utc properties and deprecated the naive ones; Odoo 19
    # pins 3.4.8, which has only the naive (UTC) ones.
    start = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
    end = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    return _epoch(start), _epoch(end)


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    """The public part of a certificate: what Azure is given and what Odoo shows."""

    certificate_pem: str = dataclasses.field(repr=False)
    sha1: str  # hex, upper case: the "Thumbprint" the Azure portal lists
    sha256: str  # hex, upper case: the x5t#S256 of the assertions
    not_before: int
    not_after: int
    subject: str = ""

    @classmethod
    def from_pem(cls, data):
        """Read a certificate from PEM text or DER bytes; refuse anything with a key."""
        raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
        if PRIVATE_KEY_MARKER.encode() in raw:
            raise CertificateError(
                _lt("This file holds a private key: only a certificate is read.")
            )
        try:
            if raw.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(raw)
            else:
                cert = x509.load_der_x509_certificate(raw)
        except ValueError:
            raise CertificateError(_lt("This is not an X.509 certificate.")) from None
        return cls._of(cert)

    @classmethod
    def _of(cls, cert):
        start, end = _validity(cert)
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return cls(
            certificate_pem=pem,
            sha1=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - x5t is SHA-1
            sha256=cert.fingerprint(hashes.SHA256()).hex().upper(),
            not_before=start,
            not_after=end,
            subject=cert.subject.rfc4514_string(),
        )

    def der(self):
        """The certificate in DER, the `.cer` the Azure portal uploads."""
        cert = x509.load_pem_x509_certificate(self.certificate_pem.encode("ascii"))
        return cert.public_bytes(serialization.Encoding.DER)

    def is_valid_at(self, now=None):
        now = time.time() if now is None else now
        return self.not_before <= now <= self.not_after

    def days_left(self, now=None):
        now = time.time() if now is None else now
        return int((self.not_after - now) // 86400)

    @property
    def expires_on(self):
        return datetime.datetime.fromtimestamp(self.not_after, datetime.UTC).date()

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A new certificate and its private key (PKCS#8 PEM, for the caller to seal at once)."""

    info: CertificateInfo
    private_key_pem: str = dataclasses.field(repr=False)


def generate(
    common_name,
    lifetime_days=DEFAULT_LIFETIME_DAYS,
    key_size=DEFAULT_KEY_SIZE,
    now=None,
):
    """An RSA key pair and a self-signed certificate valid ``lifetime_days`` from now."""
    if int(key_size) < MIN_KEY_SIZE:
        raise CertificateError(
            _lt("RSA keys of fewer than %(bits)s bits are refused."), {"bits": MIN_KEY_SIZE}
        )
    lifetime_days = int(lifetime_days)
    if not 1 <= lifetime_days <= MAX_LIFETIME_DAYS:
        raise CertificateError(
            _lt("A certificate lives between 1 and %(most)s days, not %(days)s."),
            {"most": MAX_LIFETIME_DAYS, "days": lifetime_days},
        )
    now = int(time.time() if now is None else now)
    key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_size))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(common_name)[:64])])
    start = datetime.datetime.fromtimestamp(now - NOT_BEFORE_MARGIN, datetime.UTC)
    end = datetime.datetime.fromtimestamp(now + lifetime_days * 86400, datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # cryptography 3.4.8 reads naive datetimes as UTC.
        .not_valid_before(start.replace(tzinfo=None))
        .not_valid_after(end.replace(tzinfo=None))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return KeyPair(info=CertificateInfo._of(cert), private_key_pem=private_pem)


def _load_key(private_key_pem):
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError):
        raise CertificateError(_lt("The stored private key cannot be read.")) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_SIZE:
        raise CertificateError(
            _lt("The stored key is not an RSA key of %(bits)s bits or more."),
            {"bits": MIN_KEY_SIZE},
        )
    return key


class AssertionSigner:
    """MSAL's ``client_assertion`` callable: a new signed assertion for each token request.

    ``audience`` is the token endpoint MSAL discovered; the caller sets it once the MSAL
    application exists (``app.authority.token_endpoint``).
    """

    def __init__(self, private_key_pem, certificate, client_id, audience=None, clock=time.time):
        self._key = _load_key(private_key_pem)
        public = x509.load_pem_x509_certificate(certificate.certificate_pem.encode("ascii"))
        if public.public_key().public_numbers() != self._key.public_key().public_numbers():
            raise CertificateError(_lt("The stored key does not belong to this certificate."))
        self.certificate = certificate
        self.client_id = client_id
        self.audience = audience
        self._clock = clock

    def __repr__(self):
        return f"AssertionSigner(certificate={self.certificate.sha1}, client_id={self.client_id!r})"

    def __call__(self):
        if not self.audience:
            raise CertificateError(_lt("The token endpoint (the assertion's audience) is unknown."))
        now = int(self._clock())
        header = {
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": _b64url(bytes.fromhex(self.certificate.sha256)),
        }
        claims = {
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(
            signing_input.encode("ascii"),
            # RFC 7518 section 3.5: PS256 is RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a
            # salt as long as the hash (32 bytes).
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
        return f"{signing_input}.{_b64url(signature)}"


# AADSTS code -> what it means for the app's certificate credential, for an admin. The
# sources are listed in sandbox/README.md ("Issue 16").
_REFUSALS = {
    "700027": _lt(
        "Microsoft does not know this certificate: it is not registered on this Azure app. "
        "Upload it in Azure (%(upload_path)s), wait a minute, then test again."
    ),
    "700024": _lt(
        "Microsoft found the sign-in proof outside its validity time: this server's clock "
        "and Microsoft's differ. Set the server's clock right (NTP), then test again."
    ),
    "700021": _lt(
        "The certificate proof names another application: check the Client ID in Settings "
        "against the Azure app's Application (client) ID."
    ),
    "50048": _lt(
        "The certificate proof names another application: check the Client ID in Settings "
        "against the Azure app's Application (client) ID."
    ),
    "700023": _lt(
        "The certificate proof was made for another token endpoint: check the tenant and the "
        "Microsoft cloud in Settings."
    ),
    "50027": _lt("Microsoft could not read the certificate proof. Generate a new certificate."),
    "90014": _lt("Microsoft could not read the certificate proof. Generate a new certificate."),
    "50013": _lt("Microsoft refused the certificate proof as used before; test again."),
    "7000215": _lt(
        "Microsoft expected the client secret, and the one sent is wrong: check the secret "
        "in Settings, or switch to the certificate once it is registered."
    ),
    "7000222": _lt(
        "The client secret has expired: switch to the certificate, or create a new secret."
    ),
    "7000218": _lt("Microsoft received no credential: enter a secret or generate a certificate."),
    "700016": _lt(
        "No application with this client id exists in the tenant: check the Client ID and "
        "the tenant in Settings."
    ),
    "90002": _lt("The tenant in Settings does not exist: check the tenant id or domain."),
    "9001023": _lt(
        "Testing the app credential needs your tenant: enter the Directory (tenant) ID of "
        "the Azure app instead of common, organizations or consumers."
    ),
}
_EXPIRED_REASON = "the key used is expired"
# The values the sentences above name, filled in after translation.
REFUSAL_PARAMS = {"upload_path": AZURE_UPLOAD_PATH}


def explain_refusal(code, description):
    """Words for an admin for a refused app credential (a template to fill in with
    REFUSAL_PARAMS), or None for another error."""
    code = str(code or "")
    if code == "700027" and _EXPIRED_REASON in str(description or "").lower():
        return _lt(
            "Microsoft has this certificate but it is expired (or not yet valid) in Azure: "
            "prepare the next certificate, upload it, and test again."
        )
    return _REFUSALS.get(code)
