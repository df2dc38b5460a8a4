"""services/certificates.py: the app's key pair and certificate, and the client assertion."""

import base64
import datetime
import hashlib
import json
import time

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from services import certificates
from services.certificates import (
    PRIVATE_KEY_MARKER,
    AssertionSigner,
    CertificateError,
    CertificateInfo,
    explain_refusal,
    generate,
)


@pytest.fixture(scope="module")
def pair():
    # One 2048-bit key for the module: generating one takes a fraction of a second.
    return generate("Odoo test", lifetime_days=730, now=1_800_000_000)


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_generated_key_is_rsa_2048_and_certificate_self_signed(pair):
    cert = x509.load_pem_x509_certificate(pair.info.certificate_pem.encode())
    key = serialization.load_pem_private_key(pair.private_key_pem.encode(), None)
    assert key.key_size == 2048
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert cert.issuer == cert.subject
    assert "Odoo test" in cert.subject.rfc4514_string()
    # Self-signed: the certificate's own public key verifies its signature.
    cert.public_key().verify(
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False


def test_lifetime_and_validity(pair):
    # Valid from an hour back, so that a clock of Microsoft's a little behind Odoo's
    # still finds the key valid (Entra checks the key's start too).
    assert pair.info.not_before == 1_800_000_000 - certificates.NOT_BEFORE_MARGIN
    assert pair.info.not_after == 1_800_000_000 + 730 * 86400
    assert pair.info.is_valid_at(1_800_000_000)
    assert not pair.info.is_valid_at(pair.info.not_after + 1)
    assert not pair.info.is_valid_at(pair.info.not_before - 1)
    assert pair.info.days_left(pair.info.not_after - 86400 * 3) == 3
    expected = datetime.datetime.fromtimestamp(pair.info.not_after, datetime.UTC).date()
    assert pair.info.expires_on == expected


def test_stronger_keys_and_refused_weak_ones():
    strong = generate("Odoo", key_size=3072, lifetime_days=30)
    key = serialization.load_pem_private_key(strong.private_key_pem.encode(), None)
    assert key.key_size == 3072
    with pytest.raises(CertificateError):
        generate("Odoo", key_size=1024)
    with pytest.raises(CertificateError):
        generate("Odoo", lifetime_days=0)
    with pytest.raises(CertificateError):
        generate("Odoo", lifetime_days=certificates.MAX_LIFETIME_DAYS + 1)


def test_a_refusal_is_translated_before_its_values_are_filled_in():
    with pytest.raises(CertificateError) as caught:
        generate("Odoo", lifetime_days=0)
    refusal = caught.value
    assert str(refusal) == (
        f"A certificate lives between 1 and {certificates.MAX_LIFETIME_DAYS} days, not 0."
    )
    assert refusal.params == {"most": certificates.MAX_LIFETIME_DAYS, "days": 0}
    french = {refusal.template: "Un certificat vit entre 1 et %(most)s jours, pas %(days)s."}
    assert refusal.message(french.get) == (
        f"Un certificat vit entre 1 et {certificates.MAX_LIFETIME_DAYS} jours, pas 0."
    )


def test_thumbprints_are_those_of_the_der(pair):
    der = pair.info.der()
    assert pair.info.sha1 == hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - x5t is SHA-1
    assert pair.info.sha256 == hashlib.sha256(der).hexdigest().upper()
    assert CertificateInfo.from_pem(der) == pair.info
    assert CertificateInfo.from_pem(pair.info.certificate_pem) == pair.info


def test_public_parts_hold_no_private_key(pair):
    assert PRIVATE_KEY_MARKER in pair.private_key_pem
    assert PRIVATE_KEY_MARKER not in pair.info.certificate_pem
    assert PRIVATE_KEY_MARKER.encode() not in pair.info.der()
    # The repr of the pair (a traceback, a debugger) never shows the key.
    assert PRIVATE_KEY_MARKER not in repr(pair)
    assert "MII" not in repr(pair)
    # A PEM with a private key is refused as a certificate.
    with pytest.raises(CertificateError):
        CertificateInfo.from_pem(pair.private_key_pem + pair.info.certificate_pem)


def test_unreadable_certificate_is_refused():
    with pytest.raises(CertificateError):
        CertificateInfo.from_pem("not a certificate")


def test_assertion_is_ps256_with_sha256_thumbprint_and_entra_claims(pair):
    now = time.time()
    signer = AssertionSigner(pair.private_key_pem, pair.info, "client-1", clock=lambda: now)
    signer.audience = "https://login.example/tenant/oauth2/v2.0/token"
    first, second = signer(), signer()
    header_b64, payload_b64, signature_b64 = first.split(".")
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(payload_b64))
    assert header == {
        "alg": "PS256",
        "typ": "JWT",
        "x5t#S256": base64.urlsafe_b64encode(bytes.fromhex(pair.info.sha256)).rstrip(b"=").decode(),
    }
    assert claims["aud"] == "https://login.example/tenant/oauth2/v2.0/token"
    assert claims["iss"] == claims["sub"] == "client-1"
    assert claims["nbf"] == claims["iat"] == int(now)
    assert claims["exp"] == int(now) + certificates.ASSERTION_LIFETIME
    assert len(claims["jti"]) == 36
    # A new jti for every request.
    assert json.loads(b64url_decode(second.split(".")[1]))["jti"] != claims["jti"]
    public_key = x509.load_pem_x509_certificate(pair.info.certificate_pem.encode()).public_key()
    public_key.verify(
        b64url_decode(signature_b64),
        f"{header_b64}.{payload_b64}".encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    with pytest.raises(InvalidSignature):
        public_key.verify(
            b64url_decode(signature_b64),
            f"{header_b64}.{payload_b64}x".encode(),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
    assert PRIVATE_KEY_MARKER not in repr(signer)


def test_assertion_needs_an_audience(pair):
    signer = AssertionSigner(pair.private_key_pem, pair.info, "client-1")
    with pytest.raises(CertificateError):
        signer()


def test_signer_refuses_a_key_of_another_certificate(pair):
    other = generate("Other", lifetime_days=30)
    with pytest.raises(CertificateError):
        AssertionSigner(other.private_key_pem, pair.info, "client-1")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("700027", "not registered"),
        ("700024", "clock"),
        ("700021", "client id"),
        ("700023", "token endpoint"),
        ("7000215", "secret"),
        ("700016", "client id"),
    ],
)
def test_refusals_are_explained_in_words(code, words):
    assert words in explain_refusal(code, None).lower()


def test_expired_key_is_told_apart_from_an_unknown_one():
    expired = explain_refusal("700027", "[Reason - The key used is expired., Thumbprint ...]")
    missing = explain_refusal("700027", "[Reason - The key was not found., Thumbprint ...]")
    assert "expired" in expired.lower()
    assert "not registered" in missing.lower()
    assert explain_refusal("12345", None) is None
