"""The sandbox's certificate credentials: registered certificates and client assertions.

Each refusal is Entra's documented one (sandbox/README.md, "Issue 16"): 700027 for a key the
app does not have, an expired key or a bad signature; 700021 for another app's client id;
50048 for iss != sub; 700023 for another audience; 700024 outside nbf/exp; 90014 for a
missing claim; 50027 for something that is not a JWT; 9001023 for client credentials on
common; 50013 for a replayed assertion and 9002313 for two credentials (sandbox choices).
"""

import base64
import json
import time
import uuid

import msal
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.app_certificates import JWT_BEARER
from sandbox.defaults import ADMIN, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TENANT_ID
from services.auth import OutlookAuth
from services.certificates import AssertionSigner, generate
from services.endpoints import Endpoints
from services.errors import GraphConfigError, GraphError
from services.redact import install_redaction
from unit_tests.test_sandbox_entra import assert_entra_error

pytestmark = pytest.mark.unguarded_loggers("msal")
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


@pytest.fixture(scope="module")
def pair():
    return generate("Odoo sandbox test", lifetime_days=30)


@pytest.fixture(scope="module")
def other_pair():
    return generate("Another key", lifetime_days=30)


@pytest.fixture
def registered(sandbox, pair):
    """The default app with the certificate registered and its secret removed."""
    sandbox.add_app_certificate(CLIENT_ID, pair.info.certificate_pem)
    sandbox.remove_client_secret(CLIENT_ID)
    return pair


def endpoint(sandbox, tenant=TENANT_ID):
    return f"{sandbox.base_url}/{tenant}/oauth2/v2.0/token"


def b64url(data):
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_assertion(sandbox, pair, header=None, drop=(), alg="PS256", key_pair=None, **claims):
    """An assertion with chosen header and claims, signed with key_pair's key (pair's)."""
    now = int(time.time())
    body = {
        "aud": endpoint(sandbox),
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    for name in drop:
        body.pop(name)
    head = {"alg": alg, "typ": "JWT", "x5t#S256": b64url(bytes.fromhex(pair.info.sha256))}
    head.update(header or {})
    signing_input = f"{b64url(head)}.{b64url(body)}".encode()
    key = serialization.load_pem_private_key((key_pair or pair).private_key_pem.encode(), None)
    if alg == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    else:
        pad = padding.PKCS1v15()
    signature = key.sign(signing_input, pad, hashes.SHA256())
    return f"{signing_input.decode()}.{b64url(signature)}"


def client_credentials(sandbox, session, assertion, tenant=TENANT_ID, **form):
    data = {
        "client_id": CLIENT_ID,
        "grant_type": "client_credentials",
        "scope": GRAPH_DEFAULT,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **form,
    }
    return session.post(endpoint(sandbox, tenant), data=data)


def refused(answer, code, error="invalid_client", status=401):
    assert answer.status_code == status, answer.text
    assert_entra_error(answer.json(), code, error)
    return answer.json()["error_description"]


# accepted --------------------------------------------------------------------------------


def test_registered_certificate_gets_an_app_token_that_graph_refuses(
    sandbox, graph_session, registered
):
    answer = client_credentials(sandbox, graph_session, make_assertion(sandbox, registered))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    assert "id_token" not in body
    # The app has delegated permissions only: the token opens nothing in Graph.
    me = graph_session.get(
        f"{sandbox.graph_url}/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 401


def test_rs256_with_sha1_x5t_is_accepted_too(sandbox, graph_session, registered):
    """MSAL's older form (private_key + thumbprint) signs RS256 with the SHA-1 x5t."""
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential={
            "private_key": registered.private_key_pem,
            "thumbprint": registered.info.sha1,
        },
        authority=f"{sandbox.base_url}/{TENANT_ID}",
        instance_discovery=False,
        http_client=graph_session,
    )
    result = app.acquire_token_for_client([GRAPH_DEFAULT])
    assert "access_token" in result, result


def test_msal_callable_assertion_signs_in_a_user_without_any_secret(
    sandbox, graph_session, registered
):
    signer = AssertionSigner(registered.private_key_pem, registered.info, CLIENT_ID)
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential={"client_assertion": signer},
        authority=f"{sandbox.base_url}/{TENANT_ID}",
        instance_discovery=False,
        http_client=graph_session,
    )
    signer.audience = app.authority.token_endpoint
    flow = app.initiate_auth_code_flow(["Mail.Send", "User.Read"], redirect_uri=REDIRECT_URI)
    result = app.acquire_token_by_auth_code_flow(flow, sandbox.sign_in(flow["auth_uri"]).params)
    assert result.get("access_token"), result
    refreshed = app.acquire_token_by_refresh_token(result["refresh_token"], ["Mail.Send"])
    assert refreshed.get("access_token"), refreshed
    me = graph_session.get(
        f"{sandbox.graph_url}/me",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
    )
    assert me.json()["mail"] == ADMIN


def test_certificates_and_secret_live_side_by_side(sandbox, graph_session, pair):
    sandbox.add_app_certificate(CLIENT_ID, pair.info.der())
    [credential] = sandbox.app_certificates(CLIENT_ID)
    assert credential.thumbprint == pair.info.sha1
    answer = client_credentials(sandbox, graph_session, make_assertion(sandbox, pair))
    assert answer.status_code == 200
    secret = graph_session.post(
        endpoint(sandbox),
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
            "scope": GRAPH_DEFAULT,
        },
    )
    assert secret.status_code == 200
    assert sandbox.remove_app_certificate(CLIENT_ID, pair.info.sha1)
    refused(client_credentials(sandbox, graph_session, make_assertion(sandbox, pair)), 700027)


def test_a_private_key_is_never_registered(sandbox, pair):
    with pytest.raises(ValueError, match="private key"):
        sandbox.add_app_certificate(CLIENT_ID, pair.private_key_pem + pair.info.certificate_pem)


# refused ---------------------------------------------------------------------------------


def test_unregistered_certificate_700027(sandbox, graph_session, registered, other_pair):
    text = refused(
        client_credentials(sandbox, graph_session, make_assertion(sandbox, other_pair)), 700027
    )
    assert "The key was not found." in text
    assert other_pair.info.sha256 in text


def test_expired_key_700027(sandbox, graph_session, pair):
    sandbox.add_app_certificate(CLIENT_ID, pair.info.certificate_pem, end=time.time() - 60)
    text = refused(
        client_credentials(sandbox, graph_session, make_assertion(sandbox, pair)), 700027
    )
    assert "The key used is expired." in text and "Found key 'Start=" in text


def test_key_not_yet_valid_700027(sandbox, graph_session, pair):
    sandbox.add_app_certificate(CLIENT_ID, pair.info.certificate_pem, start=time.time() + 3600)
    text = refused(
        client_credentials(sandbox, graph_session, make_assertion(sandbox, pair)), 700027
    )
    assert "The key used is expired." in text


def test_signature_of_another_key_700027(sandbox, graph_session, registered, other_pair):
    forged = make_assertion(sandbox, registered, key_pair=other_pair)
    text = refused(client_credentials(sandbox, graph_session, forged), 700027)
    assert "signature" in text


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_unsigned_or_symmetric_assertion_700027(sandbox, graph_session, registered, alg):
    assertion = make_assertion(sandbox, registered)
    head, body, _sig = assertion.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header["alg"] = alg
    forged = f"{b64url(header)}.{body}."
    refused(client_credentials(sandbox, graph_session, forged), 700027)


def test_other_client_id_700021(sandbox, graph_session, registered):
    other = "22222222-2222-2222-2222-222222222222"
    assertion = make_assertion(sandbox, registered, iss=other, sub=other)
    refused(client_credentials(sandbox, graph_session, assertion), 700021)


def test_issuer_and_subject_differ_50048(sandbox, graph_session, registered):
    assertion = make_assertion(sandbox, registered, sub="someone-else")
    refused(client_credentials(sandbox, graph_session, assertion), 50048)


def test_other_audience_700023(sandbox, graph_session, registered):
    assertion = make_assertion(sandbox, registered, aud=f"{sandbox.base_url}/common/oauth2/token")
    refused(client_credentials(sandbox, graph_session, assertion), 700023)


def test_expired_assertion_700024(sandbox, graph_session, registered):
    now = int(time.time())
    assertion = make_assertion(sandbox, registered, nbf=now - 1200, iat=now - 1200, exp=now - 600)
    text = refused(client_credentials(sandbox, graph_session, assertion), 700024)
    assert "not within its valid time range" in text


def test_assertion_from_the_future_700024(sandbox, graph_session, registered):
    now = int(time.time())
    assertion = make_assertion(sandbox, registered, nbf=now + 600, exp=now + 1200)
    refused(client_credentials(sandbox, graph_session, assertion), 700024)


def test_clock_skew_700024(sandbox, graph_session, registered):
    """Microsoft's clock an hour ahead of the client's: the assertion has expired there."""
    sandbox.advance(3600)
    refused(client_credentials(sandbox, graph_session, make_assertion(sandbox, registered)), 700024)


@pytest.mark.parametrize("claim", ["jti", "exp", "aud", "iss", "sub"])
def test_missing_claim_90014(sandbox, graph_session, registered, claim):
    assertion = make_assertion(sandbox, registered, drop=(claim,))
    text = refused(
        client_credentials(sandbox, graph_session, assertion), 90014, "invalid_request", 400
    )
    assert f"'{claim}'" in text


@pytest.mark.parametrize("value", ["not-a-jwt", "a.b.c", "e30.e30"])
def test_malformed_assertion_50027(sandbox, graph_session, registered, value):
    refused(client_credentials(sandbox, graph_session, value), 50027, "invalid_request", 400)


def test_replayed_assertion_50013(sandbox, graph_session, registered):
    assertion = make_assertion(sandbox, registered)
    assert client_credentials(sandbox, graph_session, assertion).status_code == 200
    refused(client_credentials(sandbox, graph_session, assertion), 50013)


def test_secret_and_assertion_together_9002313(sandbox, graph_session, pair):
    sandbox.add_app_certificate(CLIENT_ID, pair.info.certificate_pem)
    answer = client_credentials(
        sandbox, graph_session, make_assertion(sandbox, pair), client_secret=CLIENT_SECRET
    )
    refused(answer, 9002313, "invalid_grant", 400)


def test_wrong_assertion_type_9002313(sandbox, graph_session, registered):
    answer = client_credentials(
        sandbox,
        graph_session,
        make_assertion(sandbox, registered),
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    )
    refused(answer, 9002313, "invalid_grant", 400)


def test_certificate_only_app_refuses_secrets_and_silence(sandbox, graph_session, registered):
    base = {"client_id": CLIENT_ID, "grant_type": "client_credentials", "scope": GRAPH_DEFAULT}
    refused(graph_session.post(endpoint(sandbox), data=base), 7000218)
    answer = graph_session.post(endpoint(sandbox), data={**base, "client_secret": CLIENT_SECRET})
    refused(answer, 7000215)


def test_public_client_may_not_present_an_assertion_700025(sandbox, graph_session, pair):
    public = "33333333-3333-3333-3333-333333333333"
    sandbox.add_app(TENANT_ID, public, None, [REDIRECT_URI])
    assertion = make_assertion(sandbox, pair, iss=public, sub=public)
    answer = client_credentials(sandbox, graph_session, assertion, client_id=public)
    refused(answer, 700025)


@pytest.mark.parametrize("tenant", ["common", "organizations"])
def test_client_credentials_need_a_tenant_9001023(sandbox, graph_session, registered, tenant):
    assertion = make_assertion(sandbox, registered, aud=endpoint(sandbox, tenant))
    answer = client_credentials(sandbox, graph_session, assertion, tenant=tenant)
    refused(answer, 9001023, "invalid_request", 400)


def test_client_credentials_need_dot_default_70011(sandbox, graph_session, registered):
    answer = client_credentials(
        sandbox, graph_session, make_assertion(sandbox, registered), scope="Mail.Send"
    )
    refused(answer, 70011, "invalid_scope", 400)


# the addon's OutlookAuth with certificates ----------------------------------------------


@pytest.fixture
def cert_auth(sandbox):
    install_redaction()
    endpoints = Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)
    sessions = []

    def make(certificates, secret=None, tenant=TENANT_ID):
        session = endpoints.session()
        sessions.append(session)
        pairs = [(p.private_key_pem, p.info) for p in certificates]
        return OutlookAuth(
            endpoints, tenant, CLIENT_ID, secret, REDIRECT_URI, session, certificates=pairs
        )

    yield make
    for session in sessions:
        session.close()


def test_auth_proves_connects_and_refreshes_with_a_certificate_only(sandbox, cert_auth, registered):
    auth = cert_auth([registered])
    assert auth.prove_credential() is True
    scopes = auth.scopes_for("outgoing", shared=False)
    auth_uri, flow = auth.start_flow(scopes, login_hint=ADMIN)
    tokens = auth.redeem(flow, sandbox.sign_in(auth_uri, login=ADMIN).params)
    assert tokens.username == ADMIN
    assert auth.accepted_certificate == registered.info
    refreshed = auth.refresh(tokens.refresh_token, scopes)
    assert refreshed.access_token != tokens.access_token


def test_auth_explains_an_unregistered_certificate(sandbox, cert_auth, registered, other_pair):
    with pytest.raises(GraphConfigError) as caught:
        cert_auth([other_pair]).prove_credential()
    assert caught.value.code == "700027"
    assert "not registered" in caught.value.user_message
    assert "Certificates & secrets" in caught.value.user_message


def test_auth_explains_clock_skew(sandbox, cert_auth, registered):
    sandbox.advance(3600)
    with pytest.raises(GraphConfigError) as caught:
        cert_auth([registered]).prove_credential()
    assert caught.value.code == "700024" and "clock" in caught.value.user_message


def test_auth_needs_a_tenant_to_prove(sandbox, cert_auth, registered):
    with pytest.raises(GraphError) as caught:
        cert_auth([registered], tenant="organizations").prove_credential()
    assert caught.value.code == "tenant_required" and "tenant" in caught.value.user_message


def test_auth_falls_back_to_the_older_certificate_azure_still_has(
    sandbox, cert_auth, registered, other_pair
):
    """Rotation: the newer certificate is not uploaded yet; the older one signs in."""
    auth = cert_auth([other_pair, registered])
    scopes = auth.scopes_for("incoming", shared=False)
    auth_uri, flow = auth.start_flow(scopes, login_hint=ADMIN)
    tokens = auth.redeem(flow, sandbox.sign_in(auth_uri, login=ADMIN).params)
    assert auth.accepted_certificate == registered.info
    sandbox.add_app_certificate(CLIENT_ID, other_pair.info.certificate_pem)
    auth.refresh(tokens.refresh_token, scopes)
    assert auth.accepted_certificate == other_pair.info
