"""The guided setup's tests at Microsoft: the authority's OpenID metadata (tenant and
cloud), then the app credential (client id and secret)."""

import socket

import pytest

from sandbox.defaults import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TENANT_DOMAIN, TENANT_ID
from services.auth import (
    AuthorityMetadata,
    OutlookAuth,
    check_authority,
    openid_configuration_url,
    parse_openid_configuration,
)
from services.endpoints import Endpoints
from services.errors import GraphConfigError, GraphTransientError

GLOBAL = Endpoints.for_cloud("global")


@pytest.fixture
def endpoints(sandbox):
    return Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)


def test_metadata_url_is_under_the_tenant_authority():
    assert openid_configuration_url(GLOBAL, "contoso.com") == (
        "https://login.microsoftonline.com/contoso.com/v2.0/.well-known/openid-configuration"
    )
    assert openid_configuration_url(Endpoints.for_cloud("china"), "common") == (
        "https://login.partner.microsoftonline.cn/common/v2.0/.well-known/openid-configuration"
    )


def test_parse_names_the_directory_behind_a_domain():
    body = {
        "token_endpoint": f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/v2.0/token",
        "issuer": f"https://login.microsoftonline.com/{TENANT_ID.upper()}/v2.0",
    }
    metadata = parse_openid_configuration(200, body)
    assert metadata == AuthorityMetadata(body["token_endpoint"], body["issuer"], TENANT_ID)


def test_parse_of_common_has_no_directory():
    body = {
        "token_endpoint": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
    }
    assert parse_openid_configuration(200, body).tenant_id is None


def test_parse_of_entra_refusal_keeps_its_code():
    body = {
        "error": "invalid_tenant",
        "error_description": "AADSTS90002: Tenant 'nowhere.test' not found.",
        "error_codes": [90002],
    }
    with pytest.raises(GraphConfigError) as caught:
        parse_openid_configuration(400, body)
    assert caught.value.code == "90002"
    assert "does not exist" in caught.value.user_message


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, None), (200, None), (200, {"issuer": "https://idp.example.com"}), (200, ["x"])],
)
def test_parse_of_something_else_is_not_an_authority(status, body):
    with pytest.raises(GraphConfigError) as caught:
        parse_openid_configuration(status, body)
    assert caught.value.code == "openid-configuration"
    assert "authority URL" in caught.value.user_message


def test_check_authority_at_the_sandbox(sandbox, endpoints):
    session = endpoints.session()
    metadata = check_authority(endpoints, TENANT_DOMAIN, session)
    assert metadata.tenant_id == TENANT_ID
    assert metadata.token_endpoint == f"{sandbox.base_url}/{TENANT_ID}/oauth2/v2.0/token"
    assert check_authority(endpoints, "common", session).tenant_id is None
    with pytest.raises(GraphConfigError) as caught:
        check_authority(endpoints, "nowhere.test", session)
    assert caught.value.code == "90002"


def test_check_authority_unreachable(sandbox):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    endpoints = Endpoints.for_cloud(
        "custom", f"https://127.0.0.1:{closed_port}", sandbox.base_url, sandbox.ca_file
    )
    with pytest.raises(GraphTransientError):
        check_authority(endpoints, TENANT_DOMAIN, endpoints.session())


# What the guided setup's second test meets at the sandbox's Entra ID: the app credential.

EXPIRED_CLIENT_ID = "44444444-4444-4444-4444-444444444444"


@pytest.mark.parametrize(
    ("client_id", "secret", "tenant", "code"),
    [
        (CLIENT_ID, "a-wrong-secret", TENANT_ID, "7000215"),
        ("99999999-9999-9999-9999-999999999999", CLIENT_SECRET, TENANT_ID, "700016"),
        # MSAL hides Entra's AADSTS90002 behind its own error: hence check_authority first.
        (CLIENT_ID, CLIENT_SECRET, "nowhere.test", "openid-configuration"),
        (CLIENT_ID, CLIENT_SECRET, "common", "tenant_required"),
        (CLIENT_ID, CLIENT_SECRET, "organizations", "tenant_required"),
    ],
)
def test_prove_credential_refusals(sandbox, endpoints, client_id, secret, tenant, code):
    auth = OutlookAuth(endpoints, tenant, client_id, secret, REDIRECT_URI, endpoints.session())
    with pytest.raises(GraphConfigError) as caught:
        auth.prove_credential()
    assert caught.value.code == code


def test_prove_credential_expired_secret(sandbox, endpoints):
    tenant = sandbox.directory.tenant(TENANT_DOMAIN)
    sandbox.add_app(
        tenant,
        EXPIRED_CLIENT_ID,
        "expired-secret-value",
        [REDIRECT_URI],
        secret_expires_at=sandbox.clock.now() - 86400,
    )
    auth = OutlookAuth(
        endpoints, TENANT_ID, EXPIRED_CLIENT_ID, "expired-secret-value", REDIRECT_URI
    )
    with pytest.raises(GraphConfigError) as caught:
        auth.prove_credential()
    assert caught.value.code == "7000222"
    good = OutlookAuth(endpoints, TENANT_DOMAIN, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    assert good.prove_credential() is True
