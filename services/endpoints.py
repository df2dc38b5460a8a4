"""Where the addon reaches Microsoft: the one place that names a Microsoft host.

Every URL the addon calls is built from an :class:`Endpoints` value, made from
the national cloud chosen in Settings or from custom endpoints (a corporate TLS
proxy, or the project's local Microsoft 365 sandbox).
"""

from dataclasses import dataclass

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


class EndpointsError(ValueError):
    """The configured endpoints cannot be used."""


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

        A session-level ``verify`` loses to the environment's CA variables, so the
        environment is not read (``trust_env``); its proxy settings, NO_PROXY
        included, still apply because customers behind a corporate proxy rely on them.
        """
        session = _ProxyAwareSession()
        session.trust_env = False
        if self.ca_file:
            session.verify = self.ca_file
        return session


class _ProxyAwareSession(requests.Session):
    def request(self, method, url, *args, **kwargs):
        if not kwargs.get("proxies"):
            kwargs["proxies"] = requests.utils.get_environ_proxies(url)
        return super().request(method, url, *args, **kwargs)
