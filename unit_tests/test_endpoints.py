"""Custom endpoints are hosts: a path the addon adds itself (a Graph version, a tenant) is
refused where it is typed, naming the field and the host to type instead."""

import pytest

from services.endpoints import (
    Endpoints,
    EndpointsError,
    HostPathError,
    check_authority_host,
    check_graph_host,
)

HOST = "https://127.0.0.1:8443"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        (f"{HOST}/v1.0", "/v1.0"),
        (f"{HOST}/v1.0/", "/v1.0"),
        (f"{HOST}/beta", "/beta"),
        ("https://graph.microsoft.com/V1.0/me", "/V1.0/me"),
    ],
)
def test_graph_url_with_a_version_is_refused(url, part):
    with pytest.raises(HostPathError) as caught:
        check_graph_host(url)
    assert (caught.value.field, caught.value.part) == ("graph", part)
    assert "Graph URL" in str(caught.value)
    assert str(caught.value).endswith(f"enter the host only, {url[: url.index(part)]}.")


@pytest.mark.parametrize(
    ("url", "part"),
    [
        (f"{HOST}/0d7c9e2a-3f5b-4c1d-8e6f-a1b2c3d4e5f6", "/0d7c9e2a-3f5b-4c1d-8e6f-a1b2c3d4e5f6"),
        ("https://login.microsoftonline.com/common/", "/common"),
        ("https://login.microsoftonline.com/contoso.com/v2.0", "/contoso.com/v2.0"),
        ("https://login.example.com/oauth2/v2.0/authorize", "/oauth2/v2.0/authorize"),
    ],
)
def test_authority_url_with_a_tenant_is_refused(url, part):
    with pytest.raises(HostPathError) as caught:
        check_authority_host(url)
    assert (caught.value.field, caught.value.part) == ("authority", part)
    assert "Authority URL" in str(caught.value)


@pytest.mark.parametrize("url", [HOST, f"{HOST}/", "https://proxy.example.com/microsoft"])
def test_hosts_and_proxy_prefixes_are_accepted(url):
    check_graph_host(url)
    check_authority_host(url)


def test_custom_endpoints_refuse_a_saved_version():
    with pytest.raises(EndpointsError, match="Graph URL"):
        Endpoints.for_cloud("custom", HOST, f"{HOST}/v1.0")
    with pytest.raises(EndpointsError, match="Authority URL"):
        Endpoints.for_cloud("custom", f"{HOST}/common", HOST)
    endpoints = Endpoints.for_cloud("custom", f"{HOST}/", HOST)
    assert endpoints.graph_url("me") == f"{HOST}/v1.0/me"
    assert endpoints.authority("contoso.test") == f"{HOST}/contoso.test"
