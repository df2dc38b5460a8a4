"""App registrations' certificate credentials and the client assertions signed with them.

An app may have certificates registered (Azure's "Certificates & secrets > Certificates":
the public part, its thumbprints and a validity). The token endpoint takes
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` with a
signed JWT instead of a client secret and checks it as Entra does; each rule and its source
is in sandbox/README.md ("Issue 16: certificate credentials").
"""

import base64
import binascii
import dataclasses
import datetime
import json
import uuid
from functools import partial

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from .errors import ENTRA_TEXTS, EntraError, entra_timestamp

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Claims Microsoft's page lists for the assertion; iat is optional there.
REQUIRED_CLAIMS = ("aud", "exp", "iss", "jti", "sub")
ALGORITHMS = ("PS256", "RS256")

# The texts of the errors this module raises, in Microsoft's words where they are known
# (sources in sandbox/README.md). Registered beside the others of sandbox/errors.py.
CERTIFICATE_TEXTS = {
    700027: (
        "invalid_client",
        "Client assertion failed signature validation. [Reason - {reason}, Thumbprint of key "
        "used by client: '{thumbprint}'{found}, Please visit the Azure Portal, Graph Explorer "
        "or directly use MS Graph to see configured keys for app Id '{client_id}'.]",
    ),
    700021: (
        "invalid_client",
        "Client assertion application identifier doesn't match 'client_id' parameter. Review "
        "the documentation at https://learn.microsoft.com/entra/identity-platform/"
        "certificate-credentials .",
    ),
    700023: (
        "invalid_client",
        "Client assertion audience claim does not match Realm issuer. Review the "
        "documentation at https://learn.microsoft.com/entra/identity-platform/"
        "certificate-credentials .",
    ),
    700024: (
        "invalid_client",
        "Client assertion is not within its valid time range. Current time: {now}, assertion "
        "valid from {nbf}, expiry time of assertion {exp}. Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    ),
    50027: ("invalid_request", "JWT token is invalid or malformed."),
    50048: (
        "invalid_client",
        "Subject mismatches Issuer claim in the client assertion for application '{client_id}'.",
    ),
    50013: ("invalid_client", "Assertion failed signature validation. [Reason - {reason}]"),
    9001023: (
        "invalid_request",
        "The grant type is not supported over the /common or /consumers endpoints. Please use "
        "the /organizations or tenant-specific endpoint.",
    ),
}
ENTRA_TEXTS.update(CERTIFICATE_TEXTS)


@dataclasses.dataclass(eq=False)
class KeyCredential:
    """One certificate of an app registration (Graph's keyCredential of type
    AsymmetricX509Cert): the public key, thumbprints and the validity Azure enforces."""

    key_id: str
    certificate_der: bytes = dataclasses.field(repr=False)
    sha1: bytes
    sha256: bytes
    start: float
    end: float
    display_name: str = ""

    @property
    def thumbprint(self):
        """The SHA-1 thumbprint in hex, as the Azure portal lists it."""
        return self.sha1.hex().upper()

    def public_key(self):
        return x509.load_der_x509_certificate(self.certificate_der).public_key()


def _epoch(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    return float(value)


def _load_certificate(data):
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if b"PRIVATE KEY" in raw:
        # The portal uploads .cer, .pem and .crt files: public keys only.
        raise ValueError("a certificate file with a private key is refused: upload the public part")
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError:
        raise ValueError("not an X.509 certificate") from None


def _validity(cert):
    start = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
    end = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    return _epoch(start), _epoch(end)


def add_app_certificate(sb, client_id, certificate, start=None, end=None, display_name=""):
    """Register a certificate (PEM text or DER bytes) on an app, as the portal's Upload does.

    start / end: the key's validity (epoch seconds or datetimes); the certificate's own by
    default, as the portal sets them.
    """
    cert = _load_certificate(certificate)
    cert_start, cert_end = _validity(cert)
    credential = KeyCredential(
        key_id=str(uuid.uuid4()),
        certificate_der=cert.public_bytes(serialization.Encoding.DER),
        sha1=cert.fingerprint(hashes.SHA1()),  # noqa: S303 - the x5t thumbprint is SHA-1
        sha256=cert.fingerprint(hashes.SHA256()),
        start=cert_start if start is None else _epoch(start),
        end=cert_end if end is None else _epoch(end),
        display_name=display_name or cert.subject.rfc4514_string(),
    )
    with sb.lock:
        app = sb.directory.apps[client_id.lower()]
        app.certificates.append(credential)
    return credential


def remove_app_certificate(sb, client_id, thumbprint):
    """Delete a certificate from an app by its SHA-1 thumbprint (hex); True if it was there."""
    wanted = thumbprint.replace(":", "").upper()
    with sb.lock:
        app = sb.directory.apps[client_id.lower()]
        kept = [c for c in app.certificates if c.thumbprint != wanted]
        removed = len(kept) != len(app.certificates)
        app.certificates = kept
    return removed


def app_certificates(sb, client_id):
    with sb.lock:
        return list(sb.directory.apps[client_id.lower()].certificates)


def remove_client_secret(sb, client_id):
    """Delete the app's client secret: it then signs in with a certificate or not at all."""
    with sb.lock:
        app = sb.directory.apps[client_id.lower()]
        app.client_secret = None
        app.secret_expires_at = None


# checking an assertion ------------------------------------------------------------------


def _b64url_decode(text):
    if not isinstance(text, str) or not text:
        raise ValueError("empty segment")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse(assertion):
    parts = assertion.split(".")
    if len(parts) != 3:
        raise EntraError(50027)
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2]) if parts[2] else b""
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise EntraError(50027) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise EntraError(50027)
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _thumbprint(header, name):
    value = header.get(name)
    if not isinstance(value, str):
        return None
    try:
        return _b64url_decode(value)
    except (ValueError, binascii.Error):
        return b""


def _number(claims, name):
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EntraError(90014, field=name)
    return float(value)


def _verify(key, algorithm, signing_input, signature):
    if algorithm == "PS256":
        # RFC 7518 section 3.5: the salt is as long as the hash.
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    else:
        pad = padding.PKCS1v15()
    key.verify(signature, signing_input, pad, hashes.SHA256())


def check_client_assertion(sb, request, form, app):
    """Authenticate the app by its client assertion, or raise Entra's error."""
    if form.get("client_assertion_type") != JWT_BEARER:
        raise EntraError(9002313)
    assertion = form.get("client_assertion")
    if not assertion:
        raise EntraError(900144, field="client_assertion")
    header, claims, signing_input, signature = _parse(assertion)
    exp = _check_claims(request, claims, app)
    credential = _find_key(request, header, app)
    algorithm = header.get("alg")
    refuse = partial(
        EntraError,
        700027,
        status=401,
        thumbprint=credential.thumbprint,
        client_id=app.client_id,
        found="",
    )
    if algorithm not in ALGORITHMS:
        raise refuse(reason="The signing algorithm is not supported.")
    try:
        _verify(credential.public_key(), algorithm, signing_input, signature)
    except (InvalidSignature, ValueError):
        raise refuse(reason="The signature does not match the key.") from None
    _check_replay(sb, request, app, claims["jti"], exp)
    return credential


def _check_claims(request, claims, app):
    """iss, sub, aud, nbf and exp as Microsoft's page lists them; returns exp."""
    fail = partial(EntraError, status=401)
    for name in REQUIRED_CLAIMS:
        if name not in claims:
            raise EntraError(90014, field=name)
    if claims["iss"] != claims["sub"]:
        raise fail(50048, client_id=app.client_id)
    if str(claims["iss"]).lower() != app.client_id:
        raise fail(700021)
    # The token endpoint this request was posted to, as the OpenID configuration names it.
    endpoint = f"{request.base_url}{request.path}"
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if endpoint not in audiences:
        raise fail(700023)
    exp = _number(claims, "exp")
    nbf = _number(claims, "nbf") if "nbf" in claims else None
    now = request.now
    if now >= exp or (nbf is not None and now < nbf):
        raise fail(
            700024,
            now=entra_timestamp(now),
            nbf=entra_timestamp(nbf if nbf is not None else _number(claims, "iat")),
            exp=entra_timestamp(exp),
        )
    return exp


def _find_key(request, header, app):
    """The registered certificate x5t#S256 (or x5t) names, valid now."""
    sha256 = _thumbprint(header, "x5t#S256")
    sha1 = _thumbprint(header, "x5t")
    shown = (sha1 or sha256 or b"").hex().upper()
    credential = next(
        (
            c
            for c in app.certificates
            if (sha256 is not None and c.sha256 == sha256) or (sha1 is not None and c.sha1 == sha1)
        ),
        None,
    )
    refuse = partial(EntraError, 700027, status=401, thumbprint=shown, client_id=app.client_id)
    if credential is None:
        raise refuse(reason="The key was not found.", found="")
    if not credential.start <= request.now <= credential.end:
        # Entra says "expired" for a key before its start as well.
        found = (
            f", Found key 'Start={entra_timestamp(credential.start)}, "
            f"End={entra_timestamp(credential.end)}'"
        )
        raise refuse(reason="The key used is expired.", found=found)
    return credential


def _check_replay(sb, request, app, jti, exp):
    """A replayed assertion is refused while it is valid (a sandbox choice, README)."""
    seen = sb.seen_assertion_ids
    for key, until in list(seen.items()):
        if until < request.now:
            del seen[key]
    key = (app.client_id, str(jti))
    if key in seen:
        raise EntraError(50013, status=401, reason="The assertion was already used (jti replayed).")
    seen[key] = exp
