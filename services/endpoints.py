"""Where the addon reaches Microsoft: the one place that names a Microsoft host.

Every URL the addon calls is built from an :class:`Endpoints` value, made from
the national cloud chosen in Settings or from custom endpoints (a corporate TLS
proxy, or the project's local Microsoft 365 sandbox).
"""

import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

# cloud key -> (Entra ID authority host, Microsoft Graph host)
CLOUDS = {
    "global": ("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov_l4": ("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgov_l5": ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": (
        "https://login.partner.microsoftonline.cn",
        "https://microsoftgraph.chinacloudapi.cn",
    ),
}
CUSTOM_CLOUD = "custom"
GRAPH_VERSION = "v1.0"
# Path segments the addon adds itself: typed into a custom endpoint, they come twice.
GRAPH_VERSIONS = ("v1.0", "beta")
AUTHORITY_SUFFIXES = ("v2.0", "oauth2")


TENANT_KEYWORDS = ("common", "organizations", "consumers")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}$", re.I
)
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class EndpointsError(ValueError):
    """The configured endpoints cannot be used."""


class CaBundleError(EndpointsError):
    """The CA bundle file cannot be used; ``reason`` says why, for a translated message.

    ``reason``: ``missing`` (no such file), ``unreadable`` (a directory, or no permission),
    ``not_pem`` (no PEM certificate in it) or ``invalid`` (PEM that does not load).
    """

    def __init__(self, path, reason, detail=""):
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"The CA bundle file {path} cannot be used ({reason}). {detail}".strip())


class HostPathError(EndpointsError):
    """A custom endpoint holds a path the addon adds itself (``part``): only its host works.

    ``field``: ``authority`` (a tenant, ``/v2.0`` or ``/oauth2`` after the host) or
    ``graph`` (a Graph version, ``/v1.0`` or ``/beta``).
    """

    def __init__(self, url, field, part):
        self.url = url
        self.field = field
        self.part = part
        name = "Authority URL" if field == "authority" else "Graph URL"
        self.base = url[: url.index(part)]
        super().__init__(
            f"The {name} {url} ends in {part}, which Odoo adds itself: enter the host only, "
            f"{self.base}."
        )


def check_ca_file(path):
    """Raise :class:`CaBundleError` unless path is a readable file of PEM certificates."""
    if not os.path.exists(path):
        raise CaBundleError(path, "missing")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise CaBundleError(path, "unreadable")
    try:
        with open(path, "rb") as handle:
            content = handle.read(5_000_000)
    except OSError as exc:
        raise CaBundleError(path, "unreadable", exc.strerror or "") from None
    if PEM_CERTIFICATE not in content:
        raise CaBundleError(path, "not_pem")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise CaBundleError(path, "invalid", str(exc)[:200]) from None


def check_https_host(url):
    """Raise :class:`EndpointsError` unless url is ``https://host[:port]`` (a path is kept)."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme != "https"
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or " " in url
    ):
        raise EndpointsError(f"{url!r} is not an https:// host address.")
    return port


def _path_from(url, is_added):
    """The URL's path from its first segment for which ``is_added`` holds, or ``None``."""
    segments = urlsplit(url).path.split("/")
    for index, segment in enumerate(segments):
        if segment and is_added(segment):
            return "/" + "/".join(segments[index:]).rstrip("/")
    return None


def check_graph_host(url):
    """Raise :class:`EndpointsError` unless url is an https host without a Graph version."""
    port = check_https_host(url)
    part = _path_from(url, lambda segment: segment.lower() in GRAPH_VERSIONS)
    if part:
        raise HostPathError(url, "graph", part)
    return port


def check_authority_host(url):
    """Raise :class:`EndpointsError` unless url is an https host without a tenant path."""
    port = check_https_host(url)
    part = _path_from(url, _is_authority_path)
    if part:
        raise HostPathError(url, "authority", part)
    return port


def _is_authority_path(segment):
    if segment.lower() in AUTHORITY_SUFFIXES:
        return True
    try:
        check_tenant(segment)
    except EndpointsError:
        return False
    return True


def check_tenant(tenant):
    """Raise :class:`EndpointsError` unless tenant is a GUID, a domain or a keyword."""
    value = (tenant or "").strip()
    if value.lower() in TENANT_KEYWORDS or _GUID.match(value) or _DOMAIN.match(value):
        return value
    raise EndpointsError(
        f"{tenant!r} is not a tenant id, a domain or {', '.join(TENANT_KEYWORDS)}."
    )


@dataclass(frozen=True)
class Endpoints:
    authority_base: str
    graph_base: str
    ca_file: str | None = None
    # Global and custom clouds take bare scope names; the other clouds need
    # their Graph host in front, because tokens never cross clouds.
    qualify_scopes: bool = False

    @classmethod
    def for_cloud(cls, cloud, authority_base=None, graph_base=None, ca_file=None):
        if cloud == CUSTOM_CLOUD:
            for url in (authority_base, graph_base):
                if not url or not url.startswith("https://"):
                    raise EndpointsError(
                        "Custom endpoints need an https:// authority URL and Graph URL."
                    )
            check_authority_host(authority_base)
            check_graph_host(graph_base)
            return cls(authority_base.rstrip("/"), graph_base.rstrip("/"), ca_file or None)
        if cloud not in CLOUDS:
            raise EndpointsError(f"Unknown Microsoft cloud: {cloud!r}.")
        authority, graph = CLOUDS[cloud]
        return cls(authority, graph, None, qualify_scopes=cloud != "global")

    def authority(self, tenant):
        return f"{self.authority_base}/{tenant or 'common'}"

    def graph_url(self, path):
        if path.startswith("https://"):
            return path
        return f"{self.graph_base}/{GRAPH_VERSION}/{path.lstrip('/')}"

    def scope(self, name):
        return f"{self.graph_base}/{name}" if self.qualify_scopes else name

    def session(self):
        """A requests session for Microsoft, immune to REQUESTS_CA_BUNDLE.

        Raises :class:`CaBundleError` when the CA bundle file went missing or bad.
        A session-level ``verify`` loses to the environment's CA variables, so the
        environment is not read (``trust_env``); its proxy settings, NO_PROXY
        included, still apply because customers behind a corporate proxy rely on them.
        """
        session = _ProxyAwareSession()
        session.trust_env = False
        if self.ca_file:
            # requests would raise a bare OSError at the first request: say which file, why.
            check_ca_file(self.ca_file)
            session.verify = self.ca_file
        return session


class _ProxyAwareSession(requests.Session):
    def request(self, method, url, *args, **kwargs):
        if not kwargs.get("proxies"):
            kwargs["proxies"] = requests.utils.get_environ_proxies(url)
        return super().request(method, url, *args, **kwargs)
