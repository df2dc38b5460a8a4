"""Delegated sign-in with Microsoft Entra ID through MSAL: authorization code flow
with PKCE, code redemption and refresh-token rotation.

MSAL keeps nothing between calls here: every operation builds its own
application object with an empty token cache, so no token outlives the call in
MSAL's memory, and MSAL's per-application memory of failed token requests
(60 s for a 400, Retry-After for a 429 or 5xx) never answers a later attempt.
The price is one OpenID configuration request per operation, a few per hour.
Storing, sealing and locking tokens is the caller's business.
"""

import dataclasses
import re
import time
import warnings

import msal
import requests

from .certificates import REFUSAL_PARAMS, AssertionSigner, CertificateError, explain_refusal
from .endpoints import CLOUDS
from .errors import (
    GraphAuthError,
    GraphConfigError,
    GraphTransientError,
    _lt,
    error_from_exception,
    error_from_token_response,
)

INCOMING = "incoming"
OUTGOING = "outgoing"

# Why each Graph permission is asked for; MSAL adds openid, profile and
# offline_access (id token and refresh token) itself and refuses them here.
SCOPE_REASONS = {
    "User.Read": _lt(
        "read the signed-in account's id and address, to check it is the "
        "mailbox's owner or has access to the shared mailbox"
    ),
    "Mail.Send": _lt("send mail as the signed-in user (outgoing server)"),
    "Mail.Send.Shared": _lt(
        "send as or on behalf of a shared mailbox the user has rights on "
        "(outgoing server of a shared mailbox)"
    ),
    "Mail.ReadWrite": _lt(
        "read new mail, mark it read and move it (incoming server); create "
        "the draft a sent mail leaves from, which is the only way Graph names the sent "
        "message's id and the only way to upload attachments over 3 MB (outgoing server)"
    ),
    "Mail.ReadWrite.Shared": _lt(
        "the same in a shared mailbox the user has Full Access to (servers of a shared mailbox)"
    ),
}

# direction -> (own mailbox, shared mailbox) scope names. A shared set keeps the
# non-shared name beside it: the user's own mailbox stays reachable through /me,
# and the .Shared permission already includes it, so nothing more is granted.
_SCOPES = {
    OUTGOING: (
        ("Mail.Send", "Mail.ReadWrite"),
        ("Mail.Send", "Mail.ReadWrite", "Mail.Send.Shared", "Mail.ReadWrite.Shared"),
    ),
    INCOMING: (("Mail.ReadWrite",), ("Mail.ReadWrite", "Mail.ReadWrite.Shared")),
}

# One number, not (connect, read): Odoo's test transport compares it with an int.
TIMEOUT = 30
# The Graph resource of the global cloud (custom endpoints stand in front of it); the
# other clouds name their own Graph host.
GRAPH_RESOURCE = CLOUDS["global"][1]
# Entra's answer to a client assertion signed with a key the app does not have (or has
# expired): the next (older) certificate may still be registered.
_UNKNOWN_KEY = "700027"


@dataclasses.dataclass(frozen=True)
class TokenSet:
    """Tokens and the identity they were issued to; tokens never show in its repr."""

    access_token: str = dataclasses.field(repr=False)
    refresh_token: str | None = dataclasses.field(repr=False)
    expires_at: int
    scopes: tuple = ()
    oid: str | None = None
    tid: str | None = None
    username: str | None = None
    name: str | None = None
    email: str | None = None

    def expires_within(self, seconds, now=None):
        return self.expires_at - (time.time() if now is None else now) <= seconds

    def to_dict(self):
        """Plain values for the caller to seal; the inverse of :meth:`from_dict`."""
        return {**dataclasses.asdict(self), "scopes": list(self.scopes)}

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in names}
        return cls(**{**values, "scopes": tuple(values.get("scopes") or ())})

    @classmethod
    def from_msal(cls, result, previous_refresh_token=None, now=None):
        claims = result.get("id_token_claims") or {}
        scope = result.get("scope") or ()
        now = int(time.time() if now is None else now)
        return cls(
            access_token=result["access_token"],
            # Microsoft rotates refresh tokens; keep the old one when it sends none.
            refresh_token=result.get("refresh_token") or previous_refresh_token,
            expires_at=now + int(result.get("expires_in") or 0),
            scopes=tuple(scope.split() if isinstance(scope, str) else scope),
            oid=claims.get("oid"),
            tid=claims.get("tid"),
            username=claims.get("preferred_username"),
            name=claims.get("name"),
            email=claims.get("email"),
        )


def scopes_for(direction, shared, endpoints=None):
    """The least-privilege Graph scopes of a server (see ``SCOPE_REASONS``).

    With ``endpoints``, names are written the way that cloud expects.
    """
    if direction not in _SCOPES:
        raise ValueError(f"Unknown mail direction: {direction!r}.")
    names = (*_SCOPES[direction][1 if shared else 0], "User.Read")
    return [endpoints.scope(name) if endpoints else name for name in names]


# Where an authority publishes its OpenID metadata (relative to the tenant's authority).
OPENID_CONFIGURATION_PATH = "v2.0/.well-known/openid-configuration"
_ISSUER_TENANT = re.compile(
    r"/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/v2\.0/?$", re.I
)


@dataclasses.dataclass(frozen=True)
class AuthorityMetadata:
    """What a tenant's OpenID metadata says: where tokens are asked for, and the
    directory (tenant) id behind a domain (None for common and organizations)."""

    token_endpoint: str
    issuer: str
    tenant_id: str | None


def openid_configuration_url(endpoints, tenant):
    return f"{endpoints.authority(tenant)}/{OPENID_CONFIGURATION_PATH}"


def parse_openid_configuration(status, body):
    """The :class:`AuthorityMetadata` of a metadata answer; raises :class:`GraphError`
    (Entra's own error for an unknown tenant, AADSTS90002) when it is not one."""
    if isinstance(body, dict) and body.get("error"):
        raise error_from_token_response(status, body)
    if status != 200 or not isinstance(body, dict):
        raise GraphConfigError(
            _lt(
                "No Microsoft sign-in metadata at this address: check the Microsoft cloud (or "
                "the custom authority URL) and the tenant."
            ),
            status=status,
            code="openid-configuration",
        )
    token_endpoint, issuer = body.get("token_endpoint"), body.get("issuer")
    if not (isinstance(token_endpoint, str) and isinstance(issuer, str)):
        raise GraphConfigError(
            _lt(
                "The sign-in metadata at this address names no token endpoint: the authority "
                "URL is not a Microsoft Entra ID one."
            ),
            status=status,
            code="openid-configuration",
        )
    match = _ISSUER_TENANT.search(issuer)
    return AuthorityMetadata(token_endpoint, issuer, match.group(1).lower() if match else None)


def check_authority(endpoints, tenant, session, timeout=TIMEOUT):
    """Fetch the tenant's OpenID metadata from the authority: proves that the cloud (or
    custom authority) answers and knows the tenant, before any credential is sent."""
    try:
        response = session.get(openid_configuration_url(endpoints, tenant), timeout=timeout)
    except requests.RequestException as exc:
        raise error_from_exception(exc) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    return parse_openid_configuration(response.status_code, body)


def _scope_name(scope):
    return scope.rsplit("/", 1)[-1].lower()


class _MsalHttpClient:
    """The caller's session as MSAL's HTTP client, with a timeout on every call
    (MSAL adds none to a client it is given) and the status of the last POST."""

    def __init__(self, session, timeout):
        self.session = session
        self.timeout = timeout
        self.last_post_status = None

    def post(self, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.post(url, **kwargs)
        self.last_post_status = response.status_code
        return response

    def get(self, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return self.session.get(url, **kwargs)

    def close(self):
        """The session belongs to the caller, who closes it."""


class OutlookAuth:
    """The OAuth 2.0 side of one Azure app registration in one tenant."""

    def __init__(
        self,
        endpoints,
        tenant,
        client_id,
        client_secret,
        redirect_uri,
        session=None,
        timeout=TIMEOUT,
        certificates=(),
    ):
        """``certificates``: ``(private key PEM, CertificateInfo)`` pairs, newest first. When
        given, the app proves itself with a client assertion signed by the first one Entra
        accepts (an older one is tried when Entra does not know the newer key), and the
        client secret is not sent."""
        self.endpoints = endpoints
        self.tenant = tenant
        self.client_id = client_id
        self._client_secret = client_secret
        self._certificates = list(certificates)
        self.redirect_uri = redirect_uri
        self.session = session or endpoints.session()
        self.timeout = timeout
        # The certificate (CertificateInfo) the last token request was accepted with.
        self.accepted_certificate = None

    def __repr__(self):
        return f"OutlookAuth(tenant={self.tenant!r}, client_id={self.client_id!r})"

    def scopes_for(self, direction, shared):
        return scopes_for(direction, shared, self.endpoints)

    def _credential(self, index):
        """MSAL's client_credential: the secret, or a callable signing assertions."""
        if not self._certificates:
            return self._client_secret, None
        private_key_pem, info = self._certificates[index]
        try:
            signer = AssertionSigner(private_key_pem, info, self.client_id)
        except CertificateError as exc:
            raise GraphConfigError(exc.template, params=exc.params, code="certificate") from None
        # MSAL 1.28 and later call a client_assertion callable for each token request.
        return {"client_assertion": signer}, signer

    def _app(self, index=0):
        http = _MsalHttpClient(self.session, self.timeout)
        credential, signer = self._credential(index)
        try:
            app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=credential,
                authority=self.endpoints.authority(self.tenant),
                # MSAL never runs instance discovery for the hosts of Microsoft's
                # clouds; for any other host it would ask the global cloud, which
                # custom endpoints and sovereign deployments must not depend on.
                instance_discovery=False,
                http_client=http,
                token_cache=msal.TokenCache(),
            )
        except ValueError:
            # MSAL's text quotes Microsoft's raw answer: keep it out.
            raise GraphConfigError(
                _lt(
                    "The Microsoft sign-in endpoint of this tenant was not found. Check the "
                    "tenant and the Microsoft cloud (or custom authority URL) in Settings."
                ),
                code="openid-configuration",
            ) from None
        except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            raise _transport_error(exc) from None
        if signer is not None:
            # The audience Entra expects: the token endpoint MSAL discovered and posts to.
            signer.audience = app.authority.token_endpoint
        return app, http

    def _acquire(self, call):
        """Run ``call(app)`` with the newest certificate Entra accepts: a 700027 (key not
        registered, or expired) moves on to the next one. Returns (result, http)."""
        count = max(1, len(self._certificates))
        for index in range(count):
            app, http = self._app(index)
            result = call(app)
            codes = (result or {}).get("error_codes") or []
            unknown_key = "error" in (result or {}) and [str(c) for c in codes] == [_UNKNOWN_KEY]
            if not unknown_key or index == count - 1:
                if self._certificates and "error" not in (result or {}):
                    self.accepted_certificate = self._certificates[index][1]
                return result, http
        raise AssertionError("unreachable")

    def prove_credential(self):
        """Ask Entra for an app-only token only to prove the app's credential (secret or
        the first certificate, no fallback), and drop the token at once: the addon uses
        delegated permissions only, and a token without roles opens nothing in Graph.

        Raises :class:`GraphError` with Entra's code when the credential is refused.
        """
        if str(self.tenant or "common").lower() in ("common", "organizations", "consumers"):
            # Entra refuses client credentials there (AADSTS9001023); say so before asking.
            raise GraphConfigError(
                explain_refusal("9001023", None), params=REFUSAL_PARAMS, code="tenant_required"
            )
        resource = self.endpoints.scope("") if self.endpoints.qualify_scopes else GRAPH_RESOURCE
        scope = f"{resource.rstrip('/')}/.default"
        app, http = self._app(0)
        try:
            result = app.acquire_token_for_client([scope])
        except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            raise _transport_error(exc) from None
        if "error" in result:
            raise certificate_error(http.last_post_status, result)
        if not result.get("access_token"):
            raise GraphTransientError(
                _lt("Microsoft's token answer held no access token; try again later."),
                status=http.last_post_status,
                code="no_access_token",
            )
        # Only whether Microsoft issued it matters: the token itself is dropped here.
        result.clear()
        if self._certificates:
            self.accepted_certificate = self._certificates[0][1]
        return True

    def start_flow(self, scopes, login_hint=None, prompt="select_account"):
        """Start a sign-in: ``(auth_uri, flow)``.

        ``flow`` holds the PKCE verifier, state and nonce: it is a secret for the
        caller to keep server-side, sealed, and to use once.
        """
        app, _http = self._app()
        with warnings.catch_warnings():
            # MSAL recommends form_post on every sign-in. Odoo's confirm route, which this
            # addon extends, takes the code from the query string; the code is single use
            # and bound to the PKCE verifier kept sealed server-side.
            warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
            flow = app.initiate_auth_code_flow(
                list(scopes),
                redirect_uri=self.redirect_uri,
                login_hint=login_hint or None,
                prompt=prompt or None,
                response_mode="query",
            )
        return flow["auth_uri"], flow

    def redeem(self, flow, query_params):
        """Finish a sign-in from the query of Microsoft's redirect: a :class:`TokenSet`."""
        query_params = dict(query_params)
        try:
            # A refused client credential leaves the code unspent: the next certificate
            # may redeem it.
            result, http = self._acquire(
                lambda app: app.acquire_token_by_auth_code_flow(dict(flow), query_params)
            )
        except ValueError:
            # MSAL's text quotes both states: keep it out.
            raise GraphAuthError(
                _lt(
                    "This sign-in link is stale or was not started here. Start the connection "
                    "again from Odoo."
                ),
                code="state_mismatch",
            ) from None
        except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            raise _transport_error(exc) from None
        except RuntimeError:
            # Nonce mismatch, or an id token MSAL could not read (its text holds claims).
            raise GraphAuthError(
                _lt(
                    "Microsoft's answer to this sign-in could not be verified. Start the "
                    "connection again from Odoo."
                ),
                code="id_token_invalid",
            ) from None
        if "error" in result:
            status = None if query_params.get("error") else http.last_post_status
            raise certificate_error(status, result)
        tokens = self._tokens(result, http)
        if not tokens.refresh_token:
            raise GraphAuthError(
                _lt(
                    "Microsoft granted no refresh token, so the connection would stop within "
                    "the hour. Connect again and accept all the requested permissions."
                ),
                code="no_refresh_token",
            )
        self._check_granted(flow.get("scope") or (), tokens.scopes)
        return tokens

    def refresh(self, refresh_token, scopes):
        """New tokens from a refresh token. Store the returned refresh token: Microsoft
        rotates it and the old one must be discarded."""
        try:
            result, http = self._acquire(
                lambda app: app.acquire_token_by_refresh_token(refresh_token, list(scopes))
            )
        except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            raise _transport_error(exc) from None
        if "error" in result:
            raise certificate_error(http.last_post_status, result)
        return self._tokens(result, http, previous_refresh_token=refresh_token)

    @staticmethod
    def _tokens(result, http, previous_refresh_token=None):
        if not result.get("access_token"):
            raise GraphTransientError(
                _lt("Microsoft's token answer held no access token; try again later."),
                status=http.last_post_status,
                code="no_access_token",
            )
        return TokenSet.from_msal(result, previous_refresh_token)

    @staticmethod
    def _check_granted(requested, granted):
        """A tenant may grant fewer permissions than asked; say which one is missing
        now rather than fail on the first send or fetch."""
        if not granted:
            return
        have = {_scope_name(s) for s in granted}
        missing = sorted(s for s in requested if _scope_name(s) not in have)
        missing = [s for s in missing if _scope_name(s) not in _MSAL_SCOPES]
        if missing:
            raise GraphConfigError(
                _lt(
                    "Microsoft did not grant the permission(s) %(permissions)s. Add them to the "
                    "Azure app's API permissions (Microsoft Graph, delegated), grant consent, "
                    "then connect again."
                ),
                params={"permissions": ", ".join(s.rsplit("/", 1)[-1] for s in missing)},
                code="scope_not_granted",
            )


_MSAL_SCOPES = frozenset({"openid", "profile", "offline_access"})


def certificate_error(status, result):
    """The typed error of a token answer, with the app-credential refusals (certificate,
    clock skew, wrong app) said in words an admin can act on."""
    error = error_from_token_response(status, result)
    words = explain_refusal(error.code, result.get("error_description"))
    if words and str(error.code) not in ("7000215", "7000222", "7000218", "700016", "90002"):
        error = GraphConfigError(
            words,
            params=REFUSAL_PARAMS,
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            detail=error.detail,
        )
    return error


def _transport_error(exc):
    if isinstance(exc, msal.exceptions.MsalServiceError):
        # MSAL raises this for a 5xx of the token or discovery endpoint.
        return GraphTransientError(
            _lt("Microsoft's sign-in service is unavailable; try again in a few minutes."),
            code="MsalServiceError",
        )
    return error_from_exception(exc)
