"""Entra ID v2.0: OpenID configuration, authorize with a consent page, token endpoint."""

import base64
import hmac
import html
import json
import re
import secrets
import time
import urllib.parse
from functools import partial

from . import app_certificates
from .directory import CONSUMERS, MULTI_TENANT_ALIASES
from .errors import EntraError, EntraPageError, HttpError, entra_description, entra_timestamp
from .tokens import (
    CODE_LIFETIME,
    GRAPH_RESOURCE,
    REFRESH_INACTIVITY,
    AuthCode,
    PendingAuthorization,
    client_info,
    id_token,
    jwks,
    new_secret,
    parse_scopes,
    pkce_s256,
)
from .web import add_query, html_page, html_response, json_response, redirect_response

TENANT = r"/(?P<tenant>(?!v1\.0$)[^/]+)"
SCOPE_TEXTS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
    "User.Read": "Sign you in and read your profile",
    "User.ReadBasic.All": "Read all users' basic profiles",
    "User.Read.All": "Read all users' full profiles",
    "Mail.Read": "Read your mail",
    "Mail.ReadBasic": "Read basic mail in your mailbox",
    "Mail.ReadWrite": "Read and write access to your mail",
    "Mail.Send": "Send mail as you",
    "Mail.Read.Shared": "Read mail you can access, including shared mail",
    "Mail.ReadWrite.Shared": "Read and write mail you can access, including shared mail",
    "Mail.Send.Shared": "Send mail on behalf of others",
    "MailboxSettings.Read": "Read your mailbox settings",
    "MailboxSettings.ReadWrite": "Read and write your mailbox settings",
}
# Refresh tokens the sandbox issues look like "1.AR8A-..."; other shapes are "malformed".
WELL_FORMED_REFRESH = re.compile(r"[01]\.A[A-Za-z0-9_\-.]{8,}")


def register(router, sb):
    router.add(
        "GET",
        TENANT + r"/v2\.0/\.well-known/openid-configuration",
        partial(openid_configuration, sb),
        "entra",
    )
    router.add("GET", TENANT + r"/discovery/v2\.0/keys", partial(keys, sb), "entra")
    router.add("GET", TENANT + r"/oauth2/v2\.0/authorize", partial(authorize, sb), "entra")
    router.add("POST", TENANT + r"/login", partial(login, sb), "entra")
    router.add("POST", TENANT + r"/oauth2/v2\.0/token", partial(token, sb), "entra")


def add_personal_account(sb, address, display_name):
    """A personal Microsoft account (Outlook.com) in the consumer tenant, with its mailbox."""
    with sb.lock:
        return sb.directory.add_user(sb.directory.consumer_tenant(), address, display_name)


# tenants and apps ----------------------------------------------------------------------


def _tenant(sb, segment, page=False):
    """The tenant an authority names; None for common/organizations; the consumer tenant
    for consumers or its id (once the sandbox has a personal account)."""
    if segment.lower() in MULTI_TENANT_ALIASES:
        return None
    tenant = sb.directory.tenant(segment)
    if tenant is None:
        raise (EntraPageError if page else EntraError)(90002, tenant=segment)
    return tenant


def _usable_in(app, tenant):
    if tenant is not None and tenant.consumer:
        return app.personal_accounts
    return tenant is None or app.multi_tenant or app.tenant is tenant


def _app(sb, client_id, tenant, segment, page=False):
    error = EntraPageError if page else EntraError
    if not client_id:
        raise error(900144, field="client_id")
    app = sb.directory.apps.get(client_id.lower())
    if app is None or not _usable_in(app, tenant):
        raise error(700016, client_id=client_id, tenant=segment)
    return app


# discovery -----------------------------------------------------------------------------


def openid_configuration(sb, request):
    segment = request.params["tenant"]
    tenant = _tenant(sb, segment)
    path_tenant = tenant.id if tenant else segment.lower()
    issuer_tenant = tenant.id if tenant else "{tenantid}"
    base = request.base_url
    host = base.split("://", 1)[1]
    if tenant is not None and tenant.consumer:
        path_tenant = CONSUMERS
    config = {
        "token_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{base}/{path_tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "sandbox",
        "cloud_graph_host_name": host,
        "msgraph_host": host,
    }
    return json_response(200, config)


def keys(sb, request):
    """jwks_uri: the RSA public keys that sign the ID tokens (each with its kid)."""
    tenant = _tenant(sb, request.params["tenant"])
    issuer = f"{request.base_url}/{tenant.id if tenant else '{tenantid}'}/v2.0"
    return json_response(200, jwks(issuer))


# authorize -----------------------------------------------------------------------------


def _deliver(redirect_uri, response_mode, params):
    """Send params back to the app the way response_mode asks."""
    if response_mode == "form_post":
        fields = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        body = (
            f'<form method="post" id="form_post" action="{html.escape(redirect_uri)}">{fields}'
            '<noscript><button type="submit">Continue</button></noscript></form>'
            "<script>document.getElementById('form_post').submit();</script>"
        )
        return html_response(200, html_page("Working...", body))
    if response_mode == "fragment":
        return redirect_response(f"{redirect_uri}#{urllib.parse.urlencode(params)}")
    return redirect_response(add_query(redirect_uri, params))


def _redirect_error(request, redirect_uri, response_mode, state, code, error=None, **values):
    params = {
        "error": error or EntraError(code).error,
        "error_description": entra_description(code, request, **values),
    }
    if state is not None:
        params["state"] = state
    return _deliver(redirect_uri, response_mode, params)


class RedirectError(HttpError):
    """An authorize error Microsoft reports by redirecting to the (registered) app."""

    def __init__(self, redirect_uri, response_mode, state, code, error=None, **values):
        super().__init__(302)
        self.args = (redirect_uri, response_mode, state, code)
        self.error = error
        self.values = values

    def render(self, request):
        return _redirect_error(request, *self.args, error=self.error, **self.values)


def _default_login(sb, app, tenant, hint):
    if sb.directory.signed_in:
        return sb.directory.signed_in
    if hint and sb.directory.user(hint) is not None:
        return hint
    users = sb.directory.tenant_users(tenant or app.tenant)
    return users[0].address if users else ""


def authorize(sb, request):
    query = request.query
    segment = request.params["tenant"]
    request.app_id = query.get("client_id")
    tenant = _tenant(sb, segment, page=True)
    app = _app(sb, query.get("client_id"), tenant, segment, page=True)
    redirect_uri = query.get("redirect_uri")
    if not redirect_uri:
        raise EntraPageError(900144, field="redirect_uri")
    if redirect_uri not in app.redirect_uris:
        # Never redirect to an address the app did not register.
        raise EntraPageError(50011, redirect_uri=redirect_uri, client_id=app.client_id)
    state = query.get("state")
    mode = query.get("response_mode", "query")
    if mode not in ("query", "fragment", "form_post"):
        raise RedirectError(redirect_uri, "query", state, 900144, field="response_mode")
    fail = partial(RedirectError, redirect_uri, mode, state)
    if query.get("response_type") != "code":
        raise fail(700054, response_type=query.get("response_type", ""))
    if not query.get("scope"):
        raise fail(900144, field="scope")
    scopes = parse_scopes(query["scope"])
    if scopes.spans_resources:
        raise fail(700022, scope=scopes.written())
    if scopes.unknown:
        raise fail(70011, scope=" ".join(scopes.unknown))
    if scopes.default:
        scopes.graph |= set(app.permissions or {"User.Read"})
    challenge = query.get("code_challenge")
    method = query.get("code_challenge_method")
    if method and method not in ("S256", "plain"):
        raise fail(501491)
    if challenge and not 43 <= len(challenge) <= 128:
        raise fail(501491)
    pending = PendingAuthorization(
        txn=secrets.token_urlsafe(16),
        app=app,
        tenant_segment=segment,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        nonce=query.get("nonce"),
        challenge=challenge,
        challenge_method=(method or "plain") if challenge else None,
        response_mode=mode,
        login=_default_login(sb, app, tenant, query.get("login_hint")),
        created=request.now,
        client_info=query.get("client_info") == "1",
    )
    if query.get("prompt") == "none":
        return _silent(sb, request, pending, tenant)
    sb.tokens.pending[pending.txn] = pending
    return html_response(200, _consent_page(pending, tenant))


def _silent(sb, request, pending, tenant):
    """prompt=none: a code only when someone is signed in and has already consented."""
    fail = partial(
        _redirect_error, request, pending.redirect_uri, pending.response_mode, pending.state
    )
    user = sb.directory.user(sb.directory.signed_in, tenant) if sb.directory.signed_in else None
    if user is None:
        return fail(50058)
    if not pending.scopes.graph <= sb.tokens.consented(user, pending.app):
        return fail(
            65001,
            error="consent_required",
            client_id=pending.app.client_id,
            app_name=pending.app.display_name,
        )
    return _issue_code(sb, request, pending, user)


def _consent_page(pending, tenant, error=None):
    app = pending.app
    esc = html.escape
    action = f"/{urllib.parse.quote(pending.tenant_segment)}/login"
    names = sorted(pending.scopes.graph) + sorted(pending.scopes.oidc)
    items = "".join(
        f'<li data-scope="{esc(name)}"><strong>{esc(name)}</strong>: '
        f"{esc(SCOPE_TEXTS.get(name, name))}</li>"
        for name in names
    )
    alert = f'<p id="error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        "<h1>Permissions requested</h1>"
        f'<p><span id="app-name">{esc(app.display_name)}</span> '
        f'(<span id="app-publisher">{esc(app.tenant.domain)}</span>) would like to:</p>'
        f'<ul id="scopes">{items}</ul>{alert}'
        f'<form id="accept-form" method="post" action="{esc(action)}">'
        f'<input type="hidden" name="txn" value="{esc(pending.txn)}">'
        '<label for="login">Signed in as</label> '
        f'<input id="login" name="login" type="email" value="{esc(pending.login or "")}">'
        '<button id="accept" type="submit" name="action" value="accept">Accept</button></form>'
        f'<form id="cancel-form" method="post" action="{esc(action)}">'
        f'<input type="hidden" name="txn" value="{esc(pending.txn)}">'
        '<button id="cancel" type="submit" name="action" value="cancel">Cancel</button></form>'
    )
    return html_page("Permissions requested", body)


def login(sb, request):
    form = request.form()
    pending = sb.tokens.pending.get(form.get("txn", ""))
    if pending is None or request.now > pending.created + CODE_LIFETIME:
        raise EntraPageError(50089)
    tenant = _tenant(sb, pending.tenant_segment, page=True)
    if form.get("action") != "accept":
        del sb.tokens.pending[pending.txn]
        response = _redirect_error(
            request, pending.redirect_uri, pending.response_mode, pending.state, 65004
        )
        if response.status == 302:
            response.headers["Location"] = add_query(
                response.headers["Location"], {"error_subcode": "cancel"}
            )
        return response
    address = form.get("login", "").strip()
    pending.login = address
    user = sb.directory.user(address)
    error = None
    if user is None:
        disabled = sb.directory.mailbox(address) is not None
        error = _page_text(request, 50057 if disabled else 50034, login=address)
    elif (
        (tenant is not None and user.tenant is not tenant)
        or not _usable_in(pending.app, user.tenant)
        or (pending.tenant_segment.lower() == "organizations" and user.tenant.consumer)
    ):
        error = _page_text(
            request,
            50020,
            login=address,
            tenant=(tenant or user.tenant).domain,
            client_id=pending.app.client_id,
        )
    if error:
        return html_response(200, _consent_page(pending, tenant, error))
    del sb.tokens.pending[pending.txn]
    sb.tokens.consent(user, pending.app, pending.scopes.graph)
    return _issue_code(sb, request, pending, user)


def _page_text(request, code, **values):
    return entra_description(code, request, **values).split("\r\n")[0]


def _issue_code(sb, request, pending, user):
    value = sb.tokens.remember(new_secret("0.AR8A"))
    sb.tokens.codes[value] = AuthCode(
        value=value,
        app=pending.app,
        user=user,
        redirect_uri=pending.redirect_uri,
        scopes=pending.scopes,
        nonce=pending.nonce,
        challenge=pending.challenge,
        challenge_method=pending.challenge_method,
        issued_at=request.now,
        generation=user.generation,
        # The sign-in page stands for an interactive sign-in, MFA included.
        mfa_done=user.mfa_code is not None,
    )
    params = {"code": value}
    if pending.client_info:
        params["client_info"] = client_info(user)
    if pending.state is not None:
        params["state"] = pending.state
    params["session_state"] = sb.directory.new_guid()
    return _deliver(pending.redirect_uri, pending.response_mode, params)


# token ---------------------------------------------------------------------------------


def _client_credentials(request, form):
    client_id, secret = form.get("client_id"), form.get("client_secret")
    auth = request.header("Authorization") or ""
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
        except ValueError:
            decoded = ":"
        basic_id, _, basic_secret = decoded.partition(":")
        client_id = client_id or urllib.parse.unquote_plus(basic_id)
        secret = secret or urllib.parse.unquote_plus(basic_secret)
    return client_id, secret


def _check_secret(app, secret, now):
    if app.public_client:
        if secret:
            raise EntraError(700025, status=401)
        return
    if not secret:
        raise EntraError(7000218, status=401)
    if app.client_secret is None:
        # An app with certificates only: any secret is a wrong one.
        raise EntraError(7000215, status=401, client_id=app.client_id)
    if not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
        raise EntraError(7000215, status=401, client_id=app.client_id)
    if app.secret_expires_at is not None and now >= app.secret_expires_at:
        raise EntraError(7000222, status=401, client_id=app.client_id)


def token(sb, request):
    form = request.form()
    segment = request.params["tenant"]
    tenant = _tenant(sb, segment)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise EntraError(900144, field="grant_type")
    client_id, secret = _client_credentials(request, form)
    request.app_id = client_id
    app = _app(sb, client_id, tenant, segment)
    _authenticate_client(sb, request, form, app, secret)
    if grant_type == "authorization_code":
        return _redeem_code(sb, request, form, app)
    if grant_type == "refresh_token":
        return _refresh(sb, request, form, app)
    if grant_type == "client_credentials":
        return _client_credentials_grant(sb, request, form, app, tenant)
    raise EntraError(70003, grant_type=grant_type)


def _authenticate_client(sb, request, form, app, secret):
    """A client secret, or a client assertion signed with a registered certificate."""
    if not (form.get("client_assertion") or form.get("client_assertion_type")):
        _check_secret(app, secret, request.now)
        return
    if secret:
        # RFC 6749 section 2.3: one authentication method per request (a sandbox choice
        # of code: README).
        raise EntraError(9002313)
    if app.public_client:
        raise EntraError(700025, status=401)
    app_certificates.check_client_assertion(sb, request, form, app)


def _client_credentials_grant(sb, request, form, app, tenant):
    """An app-only token: the proof that the app's credential is accepted. The sandbox's
    apps have no application permissions, so Graph refuses the token (no roles)."""
    if tenant is None or tenant.consumer:
        raise EntraError(9001023)
    scope = (form.get("scope") or "").split()
    if len(scope) != 1 or scope[0].lower() != f"{GRAPH_RESOURCE}/.default".lower():
        raise EntraError(70011, scope=" ".join(scope))
    lifetime = sb.access_token_lifetime
    body = {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        # Known to no Graph route: using it answers 401, as a token without roles would.
        "access_token": new_secret("eyJ0eXAiOiJKV1QiLCJhcHAiOiJvbmx5In0"),
    }
    return json_response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})


def _when(moment):
    return entra_timestamp(moment)


def _redeem_code(sb, request, form, app):
    for field in ("code", "redirect_uri"):
        if not form.get(field):
            raise EntraError(900144, field=field)
    redirect_uri = form["redirect_uri"]
    if redirect_uri not in app.redirect_uris:
        raise EntraError(50011, redirect_uri=redirect_uri, client_id=app.client_id)
    code = sb.tokens.codes.get(form["code"])
    if code is None or code.app is not app:
        raise EntraError(70000)
    if code.used:
        raise EntraError(54005)
    if request.now > code.issued_at + CODE_LIFETIME:
        raise EntraError(70008)
    if redirect_uri != code.redirect_uri:
        raise EntraError(500112, redirect_uri=redirect_uri, expected=code.redirect_uri)
    # The scope of the redemption is read as any token request's: one resource only.
    _check_scopes(parse_scopes(form.get("scope")))
    if code.challenge:
        verifier = form.get("code_verifier") or ""
        expected = pkce_s256(verifier) if code.challenge_method == "S256" else verifier
        if not hmac.compare_digest(expected.encode(), code.challenge.encode()):
            raise EntraError(501481)
    user = code.user
    if code.generation < user.generation:
        raise EntraError(50173, issued=_when(code.issued_at), valid_from=_when(user.revoked_at))
    if user.mfa_code and not code.mfa_done:
        claims = json.dumps(
            {"access_token": {"capolids": {"essential": True, "values": ["sandbox-mfa"]}}}
        )
        raise EntraError(user.mfa_code, error="interaction_required", claims=claims)
    code.used = True
    return _answer(
        sb, request, form, app, user, code.scopes, code.mfa_done, code.nonce, refresh=False
    )


def _check_scopes(scopes):
    if scopes.spans_resources:
        raise EntraError(700022, scope=scopes.written())
    if scopes.unknown:
        raise EntraError(70011, scope=" ".join(scopes.unknown))


def _format_span(seconds):
    days, rest = divmod(int(seconds), 86400)
    return f"{days}.{time.strftime('%H:%M:%S', time.gmtime(rest))}"


def _refresh(sb, request, form, app):
    value = form.get("refresh_token")
    if not value:
        raise EntraError(900144, field="refresh_token")
    rt = sb.tokens.refresh.get(value)
    if rt is None:
        raise EntraError(70000 if WELL_FORMED_REFRESH.fullmatch(value) else 9002313)
    if rt.app is not app:
        raise EntraError(70000)
    user = rt.user
    if rt.generation < user.generation:
        raise EntraError(50173, issued=_when(rt.issued_at), valid_from=_when(user.revoked_at))
    idle = request.now - rt.issued_at
    if rt.expired or idle > REFRESH_INACTIVITY:
        raise EntraError(
            700082,
            suberror="bad_token",
            issued=_when(rt.issued_at),
            inactive=_format_span(max(idle, REFRESH_INACTIVITY)),
        )
    scopes = parse_scopes(form.get("scope"))
    _check_scopes(scopes)
    consented = sb.tokens.consented(user, app)
    if not consented or not scopes.graph <= consented:
        raise EntraError(
            65001, suberror="consent_required", client_id=app.client_id, app_name=app.display_name
        )
    if user.mfa_code and not rt.mfa_done:
        raise EntraError(user.mfa_code, suberror="basic_action")
    return _answer(sb, request, form, app, user, scopes, rt.mfa_done, None, refresh=True)


def _answer(sb, request, form, app, user, scopes, mfa_done, nonce, refresh):
    granted = sb.tokens.consented(user, app)
    lifetime = sb.access_token_lifetime
    access = sb.tokens.access_token(app, user, granted, request.now, lifetime, request.base_url)
    body = {
        "token_type": "Bearer",
        "scope": scopes.render(granted),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access.value,
    }
    # A refresh always rotates; a code gives a refresh token only with offline_access.
    if refresh or "offline_access" in scopes.oidc:
        body["refresh_token"] = sb.tokens.refresh_token(app, user, request.now, mfa_done).value
    if "openid" in scopes.oidc:
        body["id_token"] = id_token(app, user, request.now, 3600, request.base_url, nonce)
    if form.get("client_info") == "1":
        body["client_info"] = client_info(user)
    return json_response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})
