"""Scopes, consents, authorization codes, access and refresh tokens."""

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SECRET_MARKER = "SBXSECRET"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
GRAPH_SCOPES = (
    "User.Read",
    "User.ReadBasic.All",
    "User.Read.All",
    "Mail.Read",
    "Mail.ReadBasic",
    "Mail.ReadWrite",
    "Mail.Send",
    "Mail.Read.Shared",
    "Mail.ReadWrite.Shared",
    "Mail.Send.Shared",
    "MailboxSettings.Read",
    "MailboxSettings.ReadWrite",
)
_CANONICAL = {name.lower(): name for name in GRAPH_SCOPES + OIDC_SCOPES}
CODE_LIFETIME = 600
REFRESH_INACTIVITY = 90 * 86400


def b64url(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value):
    return b64url(json.dumps(value, separators=(",", ":")))


def new_secret(prefix):
    """A value that is a secret: it carries the marker the leak guard looks for."""
    return f"{prefix}-{SECRET_MARKER}-{secrets.token_urlsafe(32)}"


def pkce_s256(verifier):
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass
class ScopeRequest:
    graph: set
    oidc: set
    unknown: list
    # Clients may name Graph scopes with the resource URL; answers keep their style.
    url_style: bool = False
    default: bool = False
    # Resources other than Graph the request names (".../IMAP.AccessAsUser.All", "api://x/y").
    others: dict = field(default_factory=dict)  # resource -> [scopes as written]

    @property
    def spans_resources(self):
        """True when Graph and another resource are asked for at once: one token has one
        audience, so Microsoft refuses (AADSTS700022, sandbox/README.md)."""
        return (bool(self.others) and bool(self.graph or self.default)) or len(self.others) > 1

    def written(self):
        return " ".join(
            [*sorted(self.graph), *(s for scopes in self.others.values() for s in scopes)]
        )

    def render(self, granted):
        prefix = f"{GRAPH_RESOURCE}/" if self.url_style else ""
        names = [prefix + name for name in sorted(granted)]
        names += [s for s in ("openid", "profile", "email") if s in self.oidc]
        return " ".join(names)


def parse_scopes(text):
    """Split a scope parameter into Graph and OpenID scopes, canonical case."""
    request = ScopeRequest(set(), set(), [])
    for item in (text or "").split():
        name = item
        lowered = item.lower()
        if lowered.startswith(GRAPH_RESOURCE + "/"):
            name = item[len(GRAPH_RESOURCE) + 1 :]
            lowered = name.lower()
            request.url_style = True
        elif "/" in name:
            # A scope of another resource: "{resource}/{scope}" (a URL, api://..., an app id).
            request.others.setdefault(name.rsplit("/", 1)[0].lower(), []).append(item)
            continue
        if lowered == ".default":
            request.default = True
            continue
        canonical = _CANONICAL.get(lowered)
        if canonical is None:
            request.unknown.append(item)
        elif canonical in OIDC_SCOPES:
            request.oidc.add(canonical)
        else:
            request.graph.add(canonical)
    if request.others and not request.spans_resources:
        # Only another resource: the sandbox issues no token for it.
        request.unknown += [s for scopes in request.others.values() for s in scopes]
    return request


@dataclass(eq=False)
class PendingAuthorization:
    """An authorize request waiting on the consent page."""

    txn: str
    app: object
    tenant_segment: str
    redirect_uri: str
    scopes: ScopeRequest
    state: str | None
    nonce: str | None
    challenge: str | None
    challenge_method: str | None
    response_mode: str
    login: str | None
    created: float
    client_info: bool = False


@dataclass(eq=False)
class AuthCode:
    value: str
    app: object
    user: object
    redirect_uri: str
    scopes: ScopeRequest
    nonce: str | None
    challenge: str | None
    challenge_method: str | None
    issued_at: float
    generation: int
    mfa_done: bool
    used: bool = False


@dataclass(eq=False)
class RefreshToken:
    value: str
    app: object
    user: object
    issued_at: float
    generation: int
    mfa_done: bool
    expired: bool = False


@dataclass(eq=False)
class AccessToken:
    value: str
    app: object
    user: object
    scopes: frozenset
    issued_at: float
    expires_at: float
    generation: int


@dataclass
class TokenStore:
    pending: dict = field(default_factory=dict)
    codes: dict = field(default_factory=dict)
    refresh: dict = field(default_factory=dict)
    access: dict = field(default_factory=dict)
    # (user id, client id) -> set of consented Graph scopes
    consents: dict = field(default_factory=dict)
    issued: set = field(default_factory=set)

    def remember(self, value):
        self.issued.add(value)
        return value

    def consented(self, user, app):
        return self.consents.get((user.id, app.client_id), set())

    def consent(self, user, app, scopes):
        self.consents.setdefault((user.id, app.client_id), set()).update(scopes)

    def access_token(self, app, user, scopes, now, lifetime, base_url):
        """A JWT-shaped access token whose signature part carries the secret marker."""
        header = {"typ": "JWT", "alg": "RS256", "kid": "sandbox"}
        claims = {
            "aud": GRAPH_RESOURCE,
            "iss": f"{base_url}/{user.tenant.id}/v2.0",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime),
            "appid": app.client_id,
            "oid": user.id,
            "tid": user.tenant.id,
            "scp": " ".join(sorted(scopes)),
            "upn": user.address,
            "ver": "1.0",
        }
        signature = SECRET_MARKER + secrets.token_urlsafe(32)
        value = f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"
        token = AccessToken(
            self.remember(value), app, user, frozenset(scopes), now, now + lifetime, user.generation
        )
        self.access[value] = token
        return token

    def refresh_token(self, app, user, now, mfa_done):
        value = self.remember(new_secret("1.AR8A"))
        token = RefreshToken(value, app, user, now, user.generation, mfa_done)
        self.refresh[value] = token
        return token


# ID token signing ----------------------------------------------------------------------
# "ID tokens in the Microsoft identity platform" and "Access tokens ... Validate the
# signature" (https://learn.microsoft.com/entra/identity-platform/id-tokens): ID tokens are
# RS256-signed JWTs whose header names the key (kid); the keys are the RSA public JWKs that
# the OpenID configuration's jwks_uri serves. One throw-away key per process, as the CA is.

_KEY_LOCK = threading.Lock()
_SIGNING_KEY = []


def signing_key():
    """(private key, kid) of the sandbox's ID token signing key."""
    with _KEY_LOCK:
        if not _SIGNING_KEY:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            numbers = key.public_key().public_numbers()
            n, e = _uint(numbers.n), _uint(numbers.e)
            # The RFC 7638 thumbprint of the public key, as a kid.
            canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"))
            kid = b64url(hashlib.sha256(canonical.encode()).digest())
            public = {"kty": "RSA", "use": "sig", "kid": kid, "n": n, "e": e}
            _SIGNING_KEY.append((key, kid, public))
        return _SIGNING_KEY[0][:2]


def _uint(value):
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def jwks(issuer=None):
    """The JSON Web Key Set jwks_uri answers: the public half of the signing key."""
    signing_key()
    key = dict(_SIGNING_KEY[0][2])
    if issuer:
        key["issuer"] = issuer
    return {"keys": [key]}


def sign_jwt(claims):
    key, kid = signing_key()
    header = {"typ": "JWT", "alg": "RS256", "kid": kid}
    signed = f"{b64url_json(header)}.{b64url_json(claims)}"
    signature = key.sign(signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{b64url(signature)}"


def id_token(app, user, now, lifetime, base_url, nonce):
    """An RS256-signed id_token (MSAL itself does not check the signature)."""
    claims = {
        "aud": app.client_id,
        "iss": f"{base_url}/{user.tenant.id}/v2.0",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lifetime),
        "name": user.display_name,
        "oid": user.id,
        "preferred_username": user.address,
        "email": user.address,
        "sub": b64url(hashlib.sha256(f"{user.id}|{app.client_id}".encode()).digest()),
        "tid": user.tenant.id,
        "ver": "2.0",
    }
    if nonce:
        claims["nonce"] = nonce
    return sign_jwt(claims)


def client_info(user):
    return b64url_json({"uid": user.id, "utid": user.tenant.id})
