"""Entra ID v2.0 of the sandbox, driven by real MSAL and requests over real TLS."""

import base64
import hashlib
import json
import re
import urllib.parse

import msal
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox import SECRET_MARKER
from sandbox.defaults import (
    ADMIN,
    ALICE,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    SALES,
    TENANT_DOMAIN,
    TENANT_ID,
)

# Raw MSAL, without the addon's redaction filter, logs the code it redeems at DEBUG.
pytestmark = pytest.mark.unguarded_loggers("msal")

DESCRIPTION = re.compile(
    r"AADSTS(\d+): .+\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\n"
    r"Timestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ",
    re.S,
)


def claims_of(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def assert_entra_error(body, code, error, suberror=None):
    """The body is shaped as Entra sends errors (docs/microsoft-facts.md, "Error answers")."""
    assert body["error"] == error
    assert body["error_codes"] == [code]
    found = DESCRIPTION.fullmatch(body["error_description"])
    assert found and found.group(1) == str(code), body["error_description"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["trace_id"] and body["correlation_id"]
    assert body["error_uri"].endswith(f"/error?code={code}")
    assert body.get("suberror") == suberror


def token_post(sandbox, session, **form):
    data = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    data.update(form)
    return session.post(f"{sandbox.base_url}/{TENANT_DOMAIN}/oauth2/v2.0/token", data=data)


def refresh_post(sandbox, session, refresh_token, **form):
    """A refresh_token grant posted as a confidential client would."""
    return token_post(
        sandbox, session, grant_type="refresh_token", refresh_token=refresh_token, **form
    )


def redeem_post(sandbox, session, flow, answer, **form):
    """The code of answer redeemed by hand, with the flow's PKCE verifier, as MSAL would."""
    return token_post(
        sandbox,
        session,
        grant_type="authorization_code",
        code=answer.params["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=flow["code_verifier"],
        **form,
    )


def start_flow(sandbox, app, scopes=("Mail.Read", "User.Read"), login=ADMIN, **options):
    flow = app.initiate_auth_code_flow(
        list(scopes), redirect_uri=options.pop("redirect_uri", REDIRECT_URI), **options
    )
    answer = sandbox.sign_in(flow["auth_uri"], login=login)
    return flow, answer


# discovery ---------------------------------------------------------------------------


def test_openid_configuration_names_tenant_endpoints(sandbox, graph_session):
    config = graph_session.get(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/v2.0/.well-known/openid-configuration"
    ).json()
    assert (
        config["authorization_endpoint"] == f"{sandbox.base_url}/{TENANT_ID}/oauth2/v2.0/authorize"
    )
    assert config["token_endpoint"] == f"{sandbox.base_url}/{TENANT_ID}/oauth2/v2.0/token"
    assert config["issuer"] == f"{sandbox.base_url}/{TENANT_ID}/v2.0"
    common = graph_session.get(
        f"{sandbox.base_url}/common/v2.0/.well-known/openid-configuration"
    ).json()
    assert common["token_endpoint"] == f"{sandbox.base_url}/common/oauth2/v2.0/token"
    assert common["issuer"] == f"{sandbox.base_url}/{{tenantid}}/v2.0"


def test_unknown_tenant_fails_discovery(sandbox, graph_session, make_msal_app):
    answer = graph_session.get(
        f"{sandbox.base_url}/nowhere.test/v2.0/.well-known/openid-configuration"
    )
    assert answer.status_code == 400
    assert_entra_error(answer.json(), 90002, "invalid_tenant")
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        make_msal_app(tenant="nowhere.test")


# the authorization code flow -----------------------------------------------------------


def test_auth_code_flow_with_msal(sandbox, graph_session, make_msal_app):
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    assert answer.status == 302 and answer.url.startswith(REDIRECT_URI + "?")
    assert answer.params["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    admin = sandbox.user(ADMIN)
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3600 and result["ext_expires_in"] == 3600
    assert set(result["scope"].split()) >= {"Mail.Read", "User.Read", "openid", "profile"}
    claims = result["id_token_claims"]
    assert claims["oid"] == admin.id and claims["tid"] == TENANT_ID
    assert claims["preferred_username"] == ADMIN and claims["email"] == ADMIN
    assert claims["aud"] == CLIENT_ID and claims["iss"] == f"{sandbox.base_url}/{TENANT_ID}/v2.0"
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert info == {"uid": admin.id, "utid": TENANT_ID}
    for secret in (answer.params["code"], result["access_token"], result["refresh_token"]):
        assert SECRET_MARKER in secret and secret in sandbox.issued_secrets()
    me = graph_session.get(
        f"{sandbox.graph_url}/me", headers={"Authorization": f"Bearer {result['access_token']}"}
    )
    assert me.json()["id"] == admin.id
    # MSAL now holds the account and its refresh token.
    [account] = app.get_accounts()
    assert account["username"] == ADMIN
    assert (
        app.acquire_token_silent(["Mail.Read"], account)["access_token"] == result["access_token"]
    )


def test_consent_page_shows_user_app_scopes_escaped(sandbox, graph_session):
    sandbox.add_app(
        TENANT_DOMAIN,
        "22222222-2222-2222-2222-222222222222",
        "x-SBXSECRET-y",
        [REDIRECT_URI],
        display_name='<script>alert("x")</script>',
    )
    query = {
        "client_id": "22222222-2222-2222-2222-222222222222",
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "Mail.Read offline_access",
        "state": '"><b>',
        "login_hint": ALICE,
    }
    page = graph_session.get(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/oauth2/v2.0/authorize", params=query
    )
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert (
        "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    )
    assert 'id="accept"' in text and 'id="cancel"' in text
    assert f'id="login" name="login" type="email" value="{ALICE}"' in text
    assert 'data-scope="Mail.Read"' in text and 'data-scope="offline_access"' in text
    assert "<b>" not in text


def test_signed_in_user_wins_over_login_hint(sandbox, make_msal_app):
    app = make_msal_app()
    sandbox.set_signed_in(ALICE)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, login_hint=ADMIN)
    result = app.acquire_token_by_auth_code_flow(flow, sandbox.sign_in(flow["auth_uri"]).params)
    assert result["id_token_claims"]["preferred_username"] == ALICE
    sandbox.set_signed_in(None)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI)
    result = app.acquire_token_by_auth_code_flow(flow, sandbox.sign_in(flow["auth_uri"]).params)
    assert result["id_token_claims"]["preferred_username"] == ADMIN  # the tenant's first user


def test_login_field_changes_who_signs_in(sandbox, connect):
    _, result = connect(login=ALICE)
    assert result["id_token_claims"]["oid"] == sandbox.user(ALICE).id


def test_unknown_or_shared_login_shows_the_page_again(sandbox, make_msal_app):
    app = make_msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI)
    answer = sandbox.sign_in(flow["auth_uri"], login="nobody@contoso.test")
    assert answer.status == 200 and answer.url is None and "AADSTS50034" in answer.page
    answer = sandbox.sign_in(flow["auth_uri"], login=SALES)
    assert "AADSTS50057" in answer.page and 'id="accept"' in answer.page


def test_cancel_redirects_with_access_denied(sandbox, make_msal_app):
    app = make_msal_app()
    flow = app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=REDIRECT_URI)
    answer = sandbox.sign_in(flow["auth_uri"], accept=False)
    assert answer.status == 302
    assert answer.params["error"] == "access_denied" and answer.params["error_subcode"] == "cancel"
    assert answer.params["error_description"].startswith("AADSTS65004: User declined to consent")
    assert answer.params["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "access_denied"


def test_form_post_response_mode(sandbox, make_msal_app):
    app = make_msal_app()
    flow = app.initiate_auth_code_flow(
        ["Mail.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post"
    )
    answer = sandbox.sign_in(flow["auth_uri"])
    assert answer.status == 200 and answer.url == REDIRECT_URI
    assert "document.getElementById('form_post').submit()" in answer.page
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert "access_token" in result


def test_prompt_none_needs_a_signed_in_user_with_consent(sandbox, make_msal_app, connect):
    app = make_msal_app()
    flow = app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=REDIRECT_URI, prompt="none")
    answer = sandbox.sign_in(flow["auth_uri"])
    assert answer.params["error"] == "login_required"
    connect(scopes=["Mail.Read"])
    sandbox.set_signed_in(ADMIN)
    flow = app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=REDIRECT_URI, prompt="none")
    assert "access_token" in app.acquire_token_by_auth_code_flow(
        flow, sandbox.sign_in(flow["auth_uri"]).params
    )
    flow = app.initiate_auth_code_flow(["Mail.Send"], redirect_uri=REDIRECT_URI, prompt="none")
    assert sandbox.sign_in(flow["auth_uri"]).params["error"] == "consent_required"


def test_unregistered_redirect_uri_is_an_error_page(sandbox, graph_session):
    query = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "Mail.Read",
        "redirect_uri": "https://evil.test/<x>",
    }
    page = graph_session.get(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/oauth2/v2.0/authorize",
        params=query,
        allow_redirects=False,
    )
    assert page.status_code == 400 and "Location" not in page.headers
    assert "AADSTS50011" in page.text and "https://evil.test/&lt;x&gt;" in page.text
    query["client_id"] = "99999999-9999-9999-9999-999999999999"
    page = graph_session.get(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/oauth2/v2.0/authorize", params=query
    )
    assert page.status_code == 400 and "AADSTS700016" in page.text


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        ({"scope": "Mail.Read Bogus.Scope"}, "invalid_scope", "70011"),
        ({"response_type": "token"}, "unsupported_response_type", "700054"),
        ({"scope": ""}, "invalid_request", "900144"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request", "501491"),
    ],
)
def test_authorize_request_errors_redirect(sandbox, graph_session, change, error, code):
    query = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "Mail.Read",
        "redirect_uri": REDIRECT_URI,
        "state": "s1",
    }
    query.update(change)
    answer = graph_session.get(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/oauth2/v2.0/authorize",
        params=query,
        allow_redirects=False,
    )
    assert answer.status_code == 302
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["Location"]).query))
    assert params["error"] == error and params["state"] == "s1"
    assert params["error_description"].startswith(f"AADSTS{code}: ")


# code redemption errors ----------------------------------------------------------------


def test_code_is_single_use_54005(sandbox, graph_session, make_msal_app):
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, answer.params)
    again = redeem_post(sandbox, graph_session, flow, answer)
    assert again.status_code == 400
    assert_entra_error(again.json(), 54005, "invalid_grant")
    # MSAL hands the same error back as a dict.
    result = make_msal_app().acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [54005]


def test_code_expires_after_ten_minutes_70008(sandbox, make_msal_app):
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    sandbox.advance(601)
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [70008]


def test_pkce_verifier_must_match_501481(sandbox, make_msal_app):
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    flow["code_verifier"] = "x" * 43
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [501481]


def test_plain_pkce_when_method_is_omitted(sandbox, graph_session):
    verifier = "v" * 50
    query = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "Mail.Read",
        "redirect_uri": REDIRECT_URI,
        "code_challenge": verifier,
    }
    answer = sandbox.sign_in(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/oauth2/v2.0/authorize?{urllib.parse.urlencode(query)}"
    )
    redeem = {
        "grant_type": "authorization_code",
        "code": answer.params["code"],
        "redirect_uri": REDIRECT_URI,
    }
    assert token_post(sandbox, graph_session, code_verifier="w" * 50, **redeem).json()[
        "error_codes"
    ] == [501481]
    assert token_post(sandbox, graph_session, code_verifier=verifier, **redeem).status_code == 200


def test_redirect_uri_differs_from_authorize_500112(sandbox, make_msal_app):
    other = "https://odoo.test/other"
    sandbox.directory.apps[CLIENT_ID].redirect_uris.append(other)
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    flow["redirect_uri"] = other
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [500112]


def test_unregistered_redirect_uri_at_token_endpoint_50011(sandbox, make_msal_app):
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    flow["redirect_uri"] = "https://odoo.test/unregistered"
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "invalid_client" and result["error_codes"] == [50011]


def test_client_secret_errors(sandbox, graph_session):
    answer = refresh_post(sandbox, graph_session, "1.Axxxxxxxxxx", client_secret="wrong")
    assert answer.status_code == 401
    assert_entra_error(answer.json(), 7000215, "invalid_client")
    answer = refresh_post(sandbox, graph_session, "1.Axxxxxxxxxx", client_secret="")
    assert answer.status_code == 401 and answer.json()["error_codes"] == [7000218]
    sandbox.directory.apps[CLIENT_ID].secret_expires_at = sandbox.clock.now() - 1
    answer = refresh_post(sandbox, graph_session, "1.Axxxxxxxxxx")
    assert answer.status_code == 401
    assert_entra_error(answer.json(), 7000222, "invalid_client")


def test_expired_secret_through_msal(sandbox, connect, make_msal_app):
    _app, result = connect()
    sandbox.directory.apps[CLIENT_ID].secret_expires_at = sandbox.clock.now()
    answer = make_msal_app().acquire_token_by_refresh_token(result["refresh_token"], ["Mail.Read"])
    assert answer["error"] == "invalid_client" and answer["error_codes"] == [7000222]


def test_mfa_required_at_code_redemption(sandbox, make_msal_app):
    app = make_msal_app()
    flow, answer = start_flow(sandbox, app)
    sandbox.require_mfa(ADMIN)
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["error"] == "interaction_required" and result["error_codes"] == [50076]
    assert "claims" in result
    # Signing in again counts as done with MFA.
    flow, answer = start_flow(sandbox, app)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, answer.params)


# refresh -------------------------------------------------------------------------------


def test_refresh_rotates_and_keeps_old_token_valid(sandbox, connect, make_msal_app):
    app, first = connect()
    second = app.acquire_token_by_refresh_token(first["refresh_token"], ["Mail.Read"])
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert set(second["scope"].split()) >= {"Mail.Read", "User.Read"}  # everything consented
    assert second["id_token_claims"]["oid"] == sandbox.user(ADMIN).id
    third = make_msal_app().acquire_token_by_refresh_token(first["refresh_token"], ["Mail.Read"])
    assert "access_token" in third  # the old one was not revoked, only superseded


def test_refresh_expired_by_inactivity_700082(sandbox, graph_session, connect, make_msal_app):
    _app, result = connect()
    sandbox.expire_refresh_tokens(ADMIN)
    answer = refresh_post(
        sandbox, graph_session, result["refresh_token"], scope="Mail.Read offline_access"
    )
    assert answer.status_code == 400
    assert_entra_error(answer.json(), 700082, "invalid_grant", suberror="bad_token")
    _, fresh = connect()
    sandbox.advance(91 * 86400)
    answer = make_msal_app().acquire_token_by_refresh_token(fresh["refresh_token"], ["Mail.Read"])
    assert answer["error_codes"] == [700082] and answer["suberror"] == "bad_token"


def test_revoked_grant_50173(sandbox, graph_session, connect):
    _app, result = connect()
    sandbox.revoke(ADMIN)
    answer = refresh_post(sandbox, graph_session, result["refresh_token"], scope="Mail.Read")
    assert answer.status_code == 400
    assert_entra_error(answer.json(), 50173, "invalid_grant")
    assert "TokensValidFrom" in answer.json()["error_description"]
    _, again = connect()  # a new sign-in works again
    assert "access_token" in again


def test_unknown_refresh_tokens(sandbox, graph_session):
    well_formed = refresh_post(sandbox, graph_session, "1.AR8A-SBXSECRET-unknownunknown")
    assert_entra_error(well_formed.json(), 70000, "invalid_grant")
    garbage = refresh_post(sandbox, graph_session, "not a token")
    assert_entra_error(garbage.json(), 9002313, "invalid_grant")


def test_refresh_beyond_consent_65001(sandbox, connect, make_msal_app):
    _app, result = connect(scopes=["Mail.Read"])
    answer = make_msal_app().acquire_token_by_refresh_token(result["refresh_token"], ["Mail.Send"])
    assert answer["error"] == "invalid_grant" and answer["error_codes"] == [65001]
    assert answer["suberror"] == "consent_required"


def test_mfa_required_on_refresh_50076(sandbox, graph_session, connect):
    _app, result = connect()
    sandbox.require_mfa(ADMIN)
    answer = refresh_post(sandbox, graph_session, result["refresh_token"], scope="Mail.Read")
    assert_entra_error(answer.json(), 50076, "invalid_grant", suberror="basic_action")
    sandbox.require_mfa(ADMIN, code=None)
    assert (
        refresh_post(sandbox, graph_session, result["refresh_token"], scope="Mail.Read").status_code
        == 200
    )


def test_access_token_lifetime_is_configurable(sandbox, connect):
    sandbox.access_token_lifetime = 120
    _, result = connect()
    assert result["expires_in"] == 120


# tenants -------------------------------------------------------------------------------


def test_multi_tenant_app_through_organizations(sandbox, make_msal_app):
    fabrikam = sandbox.add_tenant("fabrikam.test")
    sandbox.add_user(fabrikam, "bob@fabrikam.test", "Bob")
    sandbox.directory.apps[CLIENT_ID].multi_tenant = True
    app = make_msal_app(tenant="organizations")
    flow, answer = start_flow(sandbox, app, login="bob@fabrikam.test")
    result = app.acquire_token_by_auth_code_flow(flow, answer.params)
    assert result["id_token_claims"]["tid"] == fabrikam.id


def test_single_tenant_app_refuses_foreign_users(sandbox, make_msal_app):
    fabrikam = sandbox.add_tenant("fabrikam.test")
    sandbox.add_user(fabrikam, "bob@fabrikam.test", "Bob")
    app = make_msal_app(tenant="organizations")
    flow, answer = start_flow(sandbox, app, login="bob@fabrikam.test")
    assert answer.url is None and "AADSTS50020" in answer.page
    # The app is not registered in fabrikam's directory at all.
    flow = make_msal_app(tenant="fabrikam.test").initiate_auth_code_flow(
        ["Mail.Read"], redirect_uri=REDIRECT_URI
    )
    answer = sandbox.sign_in(flow["auth_uri"])
    assert answer.status == 400 and "AADSTS700016" in answer.page


def test_public_client_sends_no_secret(sandbox, graph_session):
    public = msal.PublicClientApplication(
        "33333333-3333-3333-3333-333333333333",
        authority=f"{sandbox.base_url}/{TENANT_DOMAIN}",
        instance_discovery=False,
        http_client=graph_session,
    )
    sandbox.add_app(
        TENANT_DOMAIN, "33333333-3333-3333-3333-333333333333", None, ["http://localhost:8400"]
    )
    flow = public.initiate_auth_code_flow(["Mail.Read"], redirect_uri="http://localhost:8400")
    result = public.acquire_token_by_auth_code_flow(flow, sandbox.sign_in(flow["auth_uri"]).params)
    assert "access_token" in result


def test_log_names_the_app_of_entra_requests(sandbox, connect):
    sandbox.clear_log()
    connect()
    paths = {entry.path.rsplit("/", 1)[-1]: entry for entry in sandbox.requests}
    assert paths["authorize"].app_id == CLIENT_ID and paths["token"].app_id == CLIENT_ID
    assert paths["token"].status == 200 and paths["token"].client_request_id  # MSAL sends one


# ID token signing keys ------------------------------------------------------------------


def test_id_token_is_rs256_signed_with_a_key_jwks_uri_serves(sandbox, graph_session, connect):
    """ "ID tokens in the Microsoft identity platform"
    (https://learn.microsoft.com/entra/identity-platform/id-tokens) and the OpenID Connect
    metadata (https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc): the
    jwks_uri of the configuration serves the signing keys; a token's kid header names the
    key that signed it (RS256)."""
    config = graph_session.get(
        f"{sandbox.base_url}/{TENANT_DOMAIN}/v2.0/.well-known/openid-configuration"
    ).json()
    answer = graph_session.get(config["jwks_uri"])
    assert answer.status_code == 200
    keys = answer.json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["use"] == "sig" and k["kid"] for k in keys)
    assert all("d" not in k for k in keys)  # public halves only
    _app, result = connect()
    head, payload, signature = result["id_token"].split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    assert header["alg"] == "RS256"
    (jwk,) = [k for k in keys if k["kid"] == header["kid"]]

    def number(text):
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    public = rsa.RSAPublicNumbers(number(jwk["e"]), number(jwk["n"])).public_key()
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    # Raises InvalidSignature when the token was not signed with that key.
    public.verify(raw_signature, f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert graph_session.get(f"{sandbox.base_url}/common/discovery/v2.0/keys").json() == {
        "keys": [{**jwk, "issuer": f"{sandbox.base_url}/{{tenantid}}/v2.0"}]
    }


# one resource per token request ----------------------------------------------------------

OUTLOOK_IMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"


def test_scopes_of_two_resources_are_refused_700022(sandbox, graph_session, make_msal_app):
    """A token is for one resource: "AADSTS700022 InvalidMultipleResourcesScope - The
    provided value for the input parameter scope isn't valid because it contains more than
    one resource" ("Microsoft Entra authentication and authorization error codes",
    https://learn.microsoft.com/entra/identity-platform/reference-error-codes). Field reports
    also show AADSTS70011 ("one or more scopes ... are not compatible with each other"):
    sandbox/README.md says which the sandbox picks; the addon treats both as invalid_scope."""
    app = make_msal_app()
    flow = app.initiate_auth_code_flow(["Mail.Read", OUTLOOK_IMAP], redirect_uri=REDIRECT_URI)
    answer = sandbox.sign_in(flow["auth_uri"])
    assert answer.params["error"] == "invalid_scope"
    assert "AADSTS700022" in answer.params["error_description"]
    # At code redemption too: the code was for Graph, the redemption names two resources.
    flow, answer = start_flow(sandbox, make_msal_app())
    redeemed = redeem_post(
        sandbox,
        graph_session,
        flow,
        answer,
        scope=f"Mail.Read {OUTLOOK_IMAP} offline_access openid profile",
    )
    assert redeemed.status_code == 400
    assert_entra_error(redeemed.json(), 700022, "invalid_scope")
    # The code was not spent by the refusal; a well-formed redemption still works.
    good = redeem_post(
        sandbox, graph_session, flow, answer, scope="Mail.Read offline_access openid profile"
    )
    assert good.status_code == 200, good.text
    refreshed = refresh_post(
        sandbox,
        graph_session,
        good.json()["refresh_token"],
        scope=f"https://graph.microsoft.com/Mail.Read {OUTLOOK_IMAP}",
    )
    assert_entra_error(refreshed.json(), 700022, "invalid_scope")
    # Another resource alone is not one the sandbox knows: 70011.
    alone = refresh_post(sandbox, graph_session, good.json()["refresh_token"], scope=OUTLOOK_IMAP)
    assert_entra_error(alone.json(), 70011, "invalid_scope")


# personal Microsoft accounts (Outlook.com) -----------------------------------------------

CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


def test_personal_accounts_sign_in_through_consumers(sandbox, graph_session, make_msal_app):
    """Personal Microsoft accounts sign in through the consumers (or common) authority and
    carry tid 9188040d-6c67-4c5b-b112-36a304b66dad ("ID token claims reference",
    https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference; "Microsoft
    identity platform and OAuth 2.0 authorization code flow", tenant values,
    https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow). The app
    registration must accept personal accounts; work accounts are refused there."""
    user = sandbox.add_personal_account("pat@outlook.test", "Pat")
    assert user.tenant.id == CONSUMER_TENANT
    # An app for work accounts only: the consumers authority refuses it.
    flow = make_msal_app(tenant="consumers").initiate_auth_code_flow(
        ["Mail.Read"], redirect_uri=REDIRECT_URI
    )
    refused = sandbox.sign_in(flow["auth_uri"], login="pat@outlook.test")
    assert refused.url is None and "AADSTS700016" in refused.page
    sandbox.directory.apps[CLIENT_ID].personal_accounts = True
    config = graph_session.get(
        f"{sandbox.base_url}/consumers/v2.0/.well-known/openid-configuration"
    ).json()
    assert config["issuer"] == f"{sandbox.base_url}/{CONSUMER_TENANT}/v2.0"
    assert config["token_endpoint"] == f"{sandbox.base_url}/consumers/oauth2/v2.0/token"
    for authority in ("consumers", "common"):
        app = make_msal_app(tenant=authority)
        flow, answer = start_flow(
            sandbox, app, scopes=("Mail.Send", "User.Read"), login="pat@outlook.test"
        )
        result = app.acquire_token_by_auth_code_flow(flow, answer.params)
        assert result["id_token_claims"]["tid"] == CONSUMER_TENANT, result
        me = graph_session.get(
            f"{sandbox.graph_url}/me",
            headers={"Authorization": f"Bearer {result['access_token']}"},
        )
        assert me.json()["mail"] == "pat@outlook.test"
    # A work account at the consumers authority, a personal one at organizations: refused.
    app = make_msal_app(tenant="consumers")
    _flow, answer = start_flow(sandbox, app, login=ADMIN)
    assert answer.url is None and "AADSTS50020" in answer.page
    app = make_msal_app(tenant="organizations")
    _flow, answer = start_flow(sandbox, app, login="pat@outlook.test")
    assert answer.url is None and "AADSTS50020" in answer.page
