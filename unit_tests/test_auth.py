"""OutlookAuth against the sandbox's Entra ID: real MSAL, the real consent page, real TLS."""

import logging
import time
import warnings

import pytest

from sandbox import SECRET_MARKER
from sandbox.defaults import (
    ADMIN,
    ADMIN_NAME,
    ALICE,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    TENANT_DOMAIN,
    TENANT_ID,
)
from services.auth import SCOPE_REASONS, OutlookAuth, TokenSet, scopes_for
from services.endpoints import Endpoints
from services.errors import (
    GraphAuthError,
    GraphConfigError,
    GraphTransientError,
)
from services.graph import GraphClient
from services.redact import install_redaction

OTHER_CLIENT_ID = "33333333-3333-3333-3333-333333333333"
OTHER_SECRET = "other-SBXSECRET-client"
OTHER_REDIRECT = "https://odoo-other.test/microsoft_outlook/confirm"
TOKEN_PATH = r"/oauth2/v2\.0/token$"


@pytest.fixture
def endpoints(sandbox):
    return Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)


@pytest.fixture
def make_auth(sandbox, endpoints):
    sessions = []

    def make(client_id=CLIENT_ID, secret=CLIENT_SECRET, tenant=TENANT_DOMAIN, redirect=None):
        # MSAL logs the code it redeems at DEBUG; Odoo installs the addon's redaction
        # once logging is set up, and this runs in the test body, after pytest's handler.
        install_redaction()
        session = endpoints.session()
        sessions.append(session)
        return OutlookAuth(endpoints, tenant, client_id, secret, redirect or REDIRECT_URI, session)

    yield make
    for session in sessions:
        session.close()


def sign_in(sandbox, auth, login=ADMIN, accept=True, scopes=None):
    scopes = scopes or auth.scopes_for("incoming", shared=False)
    auth_uri, flow = auth.start_flow(scopes, login_hint=login)
    answer = sandbox.sign_in(auth_uri, accept=accept, login=login)
    assert answer.status == 302, answer.page
    return flow, answer.params


def connected(sandbox, auth, **options):
    flow, params = sign_in(sandbox, auth, **options)
    return auth.redeem(flow, params)


def token_posts(sandbox):
    return [e for e in sandbox.requests if e.path.endswith("/oauth2/v2.0/token")]


# scopes ---------------------------------------------------------------------------------


def test_scopes_per_server_kind():
    assert scopes_for("outgoing", False) == ["Mail.Send", "Mail.ReadWrite", "User.Read"]
    assert scopes_for("outgoing", True) == [
        "Mail.Send",
        "Mail.ReadWrite",
        "Mail.Send.Shared",
        "Mail.ReadWrite.Shared",
        "User.Read",
    ]
    assert scopes_for("incoming", False) == ["Mail.ReadWrite", "User.Read"]
    assert scopes_for("incoming", True) == ["Mail.ReadWrite", "Mail.ReadWrite.Shared", "User.Read"]
    every = {
        s for d in ("outgoing", "incoming") for shared in (0, 1) for s in scopes_for(d, shared)
    }
    assert every == set(SCOPE_REASONS)
    with pytest.raises(ValueError, match="direction"):
        scopes_for("sideways", False)


def test_national_clouds_qualify_scope_names():
    usgov = Endpoints.for_cloud("usgov_l4")
    assert scopes_for("outgoing", False, usgov) == [
        "https://graph.microsoft.us/Mail.Send",
        "https://graph.microsoft.us/Mail.ReadWrite",
        "https://graph.microsoft.us/User.Read",
    ]
    assert scopes_for("incoming", False, Endpoints.for_cloud("global")) == [
        "Mail.ReadWrite",
        "User.Read",
    ]


# the authorization code flow --------------------------------------------------------------


def test_complete_flow_through_the_consent_page(sandbox, make_auth, endpoints, caplog):
    auth = make_auth()
    auth_uri, flow = auth.start_flow(auth.scopes_for("incoming", shared=True), login_hint=ADMIN)
    assert auth_uri.startswith(f"{sandbox.base_url}/") and flow["state"] in auth_uri
    answer = sandbox.sign_in(auth_uri)
    assert answer.url.startswith(REDIRECT_URI + "?")
    before = int(time.time())
    tokens = auth.redeem(flow, answer.params)

    admin = sandbox.user(ADMIN)
    assert (tokens.oid, tokens.tid) == (admin.id, TENANT_ID)
    assert (tokens.username, tokens.email, tokens.name) == (ADMIN, ADMIN, ADMIN_NAME)
    assert {"Mail.ReadWrite", "Mail.ReadWrite.Shared", "User.Read"} <= set(tokens.scopes)
    assert before + 3590 <= tokens.expires_at <= int(time.time()) + 3600
    assert tokens.access_token in sandbox.issued_secrets()
    assert tokens.refresh_token in sandbox.issued_secrets()

    [authorize] = [e for e in sandbox.requests if e.path.endswith("/oauth2/v2.0/authorize")]
    query = authorize.query
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["prompt"] == "select_account" and query["login_hint"] == ADMIN
    assert query["redirect_uri"] == REDIRECT_URI and query["response_type"] == "code"
    assert set(query["scope"].split()) == {
        "Mail.ReadWrite",
        "Mail.ReadWrite.Shared",
        "User.Read",
        "offline_access",
        "openid",
        "profile",
    }

    # The token works against Graph, as the connect flow's identity check uses it.
    with endpoints.session() as session:
        client = GraphClient(endpoints, session, lambda force_refresh=False: tokens.access_token)
        assert client.me()["id"] == tokens.oid

    for text in (repr(tokens), str(tokens), repr(auth)):
        assert SECRET_MARKER not in text
    assert "oid=" in repr(tokens) and "access_token" not in repr(tokens)
    assert not [r for r in caplog.records if SECRET_MARKER in r.getMessage()]


def test_refresh_rotates_the_refresh_token(sandbox, make_auth):
    auth = make_auth()
    first = connected(sandbox, auth)
    scopes = auth.scopes_for("incoming", shared=False)
    second = auth.refresh(first.refresh_token, scopes)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert (second.oid, second.tid, second.username) == (first.oid, first.tid, first.username)
    third = auth.refresh(second.refresh_token, scopes)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    [redeem, *refreshes] = token_posts(sandbox)
    assert [e.status for e in (redeem, *refreshes)] == [200, 200, 200]


def test_missing_refresh_token_keeps_the_old_one():
    answer = {"access_token": "at", "expires_in": 60, "scope": "Mail.Send User.Read"}
    tokens = TokenSet.from_msal(answer, previous_refresh_token="old-rt", now=1000)
    assert tokens.refresh_token == "old-rt"
    assert tokens.expires_at == 1060 and tokens.scopes == ("Mail.Send", "User.Read")
    assert tokens.expires_within(61, now=1000) and not tokens.expires_within(59, now=1000)
    assert TokenSet.from_dict(tokens.to_dict()) == tokens
    assert "old-rt" not in repr(tokens) and "'at'" not in repr(tokens)


def test_consent_cancelled_on_the_cancel_form(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth, accept=False)
    assert params["error"] == "access_denied"
    with pytest.raises(GraphAuthError) as caught:
        auth.redeem(flow, params)
    assert caught.value.code == "65004" and caught.value.status is None
    assert "declined" in caught.value.user_message
    assert token_posts(sandbox) == []


def test_stale_or_foreign_state(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth)
    with pytest.raises(GraphAuthError, match="stale or was not started here") as caught:
        auth.redeem(flow, {**params, "state": "forged-state-value"})
    assert "forged-state-value" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert token_posts(sandbox) == []


def test_nonce_mismatch_is_an_auth_error(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth)
    with pytest.raises(GraphAuthError) as caught:
        auth.redeem({**flow, "nonce": "not-the-nonce-sent"}, params)
    assert caught.value.code == "id_token_invalid"


def test_permission_not_granted_is_named(sandbox, make_auth):
    # Entra may grant fewer permissions than asked. Simulated by asking, at redemption
    # only, for one the consent page never showed: the answer's scope lacks it.
    auth = make_auth()
    flow, params = sign_in(sandbox, auth, scopes=["User.Read", "Mail.Send"])
    flow["scope"] = [*flow["scope"], "Mail.Send.Shared"]
    with pytest.raises(GraphConfigError, match=r"Mail\.Send\.Shared") as caught:
        auth.redeem(flow, params)
    assert caught.value.code == "scope_not_granted"


# Entra ID errors -> the admin's next step ---------------------------------------------------


def expect(error_class, code, call):
    with pytest.raises(error_class) as caught:
        call()
    error = caught.value
    assert type(error) is error_class, error
    assert error.code == code, error
    assert SECRET_MARKER not in str(error) and SECRET_MARKER not in repr(error)
    return error


def test_wrong_client_secret(sandbox, make_auth):
    flow, params = sign_in(sandbox, make_auth())
    error = expect(
        GraphConfigError,
        "7000215",
        lambda: make_auth(secret="wrong-secret").redeem(flow, params),
    )
    assert error.status == 401 and "Value (not its ID)" in error.user_message
    assert error.detail.startswith("AADSTS7000215: Invalid client secret provided.")


def test_expired_client_secret(sandbox, make_auth):
    sandbox.add_app(
        TENANT_DOMAIN,
        OTHER_CLIENT_ID,
        OTHER_SECRET,
        [REDIRECT_URI],
        secret_expires_at=time.time() - 60,
    )
    answer = sandbox.issue_token(ADMIN, ["User.Read"], client_id=OTHER_CLIENT_ID)
    auth = make_auth(OTHER_CLIENT_ID, OTHER_SECRET)
    error = expect(
        GraphConfigError,
        "7000222",
        lambda: auth.refresh(answer["refresh_token"], ["User.Read"]),
    )
    assert "expired" in error.user_message


def test_unknown_client_id(sandbox, make_auth):
    auth = make_auth("44444444-4444-4444-4444-444444444444")
    expect(GraphConfigError, "700016", lambda: auth.refresh("1.AR8A-" + "x" * 40, ["User.Read"]))


def test_unknown_tenant_fails_before_any_sign_in(sandbox, make_auth):
    auth = make_auth(tenant="nowhere.test")
    expect(GraphConfigError, "openid-configuration", lambda: auth.start_flow(["User.Read"]))


def test_code_redeemed_twice(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth)
    auth.redeem(flow, params)
    expect(GraphAuthError, "54005", lambda: auth.redeem(flow, params))


def test_pkce_verifier_mismatch(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth)
    tampered = {**flow, "code_verifier": "v" * 43}
    expect(GraphAuthError, "501481", lambda: auth.redeem(tampered, params))


def test_redirect_uri_not_registered(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth)
    moved = {**flow, "redirect_uri": "https://elsewhere.test/microsoft_outlook/confirm"}
    error = expect(GraphConfigError, "50011", lambda: auth.redeem(moved, params))
    assert error.status == 400


def test_redirect_uri_differs_from_authorize(sandbox, make_auth):
    sandbox.add_app(TENANT_DOMAIN, OTHER_CLIENT_ID, OTHER_SECRET, [REDIRECT_URI, OTHER_REDIRECT])
    auth = make_auth(OTHER_CLIENT_ID, OTHER_SECRET)
    flow, params = sign_in(sandbox, auth)
    moved = {**flow, "redirect_uri": OTHER_REDIRECT}
    expect(GraphConfigError, "500112", lambda: auth.redeem(moved, params))


def test_revoked_grant(sandbox, make_auth):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    sandbox.revoke(ADMIN)
    expect(GraphAuthError, "50173", lambda: auth.refresh(tokens.refresh_token, ["User.Read"]))


def test_refresh_token_expired_by_inactivity(sandbox, make_auth):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    sandbox.expire_refresh_tokens(ADMIN)
    error = expect(
        GraphAuthError, "700082", lambda: auth.refresh(tokens.refresh_token, ["User.Read"])
    )
    assert "not used for too long" in error.user_message


@pytest.mark.parametrize("mfa_code", [50076, 50079])
def test_mfa_required_on_refresh(sandbox, make_auth, mfa_code):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    sandbox.require_mfa(ADMIN, mfa_code)
    expect(GraphAuthError, str(mfa_code), lambda: auth.refresh(tokens.refresh_token, ["User.Read"]))


def test_mfa_required_on_a_code_obtained_before(sandbox, make_auth):
    auth = make_auth()
    flow, params = sign_in(sandbox, auth, login=ALICE)
    sandbox.require_mfa(ALICE)
    expect(GraphAuthError, "50076", lambda: auth.redeem(flow, params))
    # A new sign-in on the consent page counts as done with MFA.
    assert connected(sandbox, auth, login=ALICE).username == ALICE


def test_consent_missing_for_a_wider_refresh(sandbox, make_auth):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    expect(
        GraphConfigError,
        "65001",
        lambda: auth.refresh(tokens.refresh_token, auth.scopes_for("outgoing", shared=False)),
    )


@pytest.mark.parametrize(
    ("refresh_token", "code"),
    [("garbage", "9002313"), ("1.AR8A-never-issued-by-this-tenant-0123456789abcdef", "70000")],
)
def test_refresh_token_unknown_to_microsoft(sandbox, make_auth, refresh_token, code):
    expect(GraphAuthError, code, lambda: make_auth().refresh(refresh_token, ["User.Read"]))


# transient failures -------------------------------------------------------------------


def test_token_endpoint_5xx_is_transient(sandbox, make_auth):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    sandbox.inject_fault("status", path=TOKEN_PATH, status=503)
    expect(
        GraphTransientError,
        "MsalServiceError",
        lambda: auth.refresh(tokens.refresh_token, ["User.Read"]),
    )
    # Nothing remembered the failure: the next attempt reaches Microsoft.
    assert auth.refresh(tokens.refresh_token, ["User.Read"]).access_token


def test_token_endpoint_throttling_is_transient(sandbox, make_auth):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    sandbox.inject_fault("status", path=TOKEN_PATH, status=429, retry_after=3)
    error = expect(
        GraphTransientError, "90055", lambda: auth.refresh(tokens.refresh_token, ["User.Read"])
    )
    assert error.status == 429


def test_connection_reset_during_refresh_is_transient(sandbox, make_auth):
    auth = make_auth()
    tokens = connected(sandbox, auth)
    sandbox.inject_fault("reset", path=TOKEN_PATH)
    expect(
        GraphTransientError,
        "ConnectionError",
        lambda: auth.refresh(tokens.refresh_token, ["User.Read"]),
    )


def test_discovery_outage_is_transient(sandbox, make_auth):
    sandbox.inject_fault("status", path=r"openid-configuration$", status=503)
    expect(GraphTransientError, "MsalServiceError", lambda: make_auth().start_flow(["User.Read"]))


def test_no_secret_in_any_log_record(sandbox, make_auth, caplog):
    caplog.set_level(logging.DEBUG)
    auth = make_auth()
    tokens = connected(sandbox, auth)
    auth.refresh(tokens.refresh_token, ["User.Read"])
    sandbox.revoke(ADMIN)
    with pytest.raises(GraphAuthError):
        auth.refresh(tokens.refresh_token, ["User.Read"])
    texts = [r.getMessage() for r in caplog.records]
    assert any("msal" in r.name for r in caplog.records)
    assert not [t for t in texts if SECRET_MARKER in t]


def test_start_flow_warns_nothing(make_auth):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auth_uri, flow = make_auth().start_flow(["User.Read"])
    assert "response_mode=query" in auth_uri and flow["code_verifier"]
