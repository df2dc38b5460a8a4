"""Plain HTTP request/response values and the route table of the sandbox."""

import html
import json
import re
import urllib.parse
from dataclasses import dataclass, field


class Request:
    """One received HTTP request, already read off the wire."""

    def __init__(self, method, target, headers, body, base_url):
        self.method = method.upper()
        split = urllib.parse.urlsplit(target)
        self.target = target
        # Ids and addresses never contain "/", so unquoting the whole path is safe.
        self.path = urllib.parse.unquote(split.path)
        self.query_string = split.query
        self.query = {}
        for key, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            self.query.setdefault(key, value)
        self.headers = headers
        self.body = body
        self.base_url = base_url
        self.params = {}
        self.request_id = None
        self.client_request_id = headers.get("client-request-id")
        self.now = None
        self.epoch = None
        # Filled by the pipeline for the log, faults and limits.
        self.mailbox = None
        self.app_id = None
        self.token = None
        self.target_mailbox = None

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def form(self):
        """The body as an HTML form (first value wins, like Entra)."""
        values = {}
        text = self.body.decode("utf-8", "replace")
        for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            values.setdefault(key, value)
        return values

    def json(self):
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict = field(default_factory=dict)


def json_response(status, data, headers=None):
    body = json.dumps(data).encode("utf-8")
    return Response(status, body, "application/json; charset=utf-8", dict(headers or {}))


def html_response(status, page, headers=None):
    return Response(status, page.encode("utf-8"), "text/html; charset=utf-8", dict(headers or {}))


def redirect_response(location):
    return Response(302, b"", None, {"Location": location})


def html_page(title, body_html):
    """A complete small HTML page; callers escape what they put into body_html."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>\n"
    )


def add_query(url, params):
    """Append params to a URL that may already carry a query."""
    encoded = urllib.parse.urlencode(params)
    return f"{url}{'&' if '?' in url else '?'}{encoded}"


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: object
    family: str
    # prelude(request) runs before the handler (authentication, limits) and may return
    # a callable to run after it; peek(request) names the mailbox for faults and the log.
    prelude: object = None
    peek: object = None
    options: dict = field(default_factory=dict)


class Router:
    """Method + path regex -> handler(request) -> Response."""

    def __init__(self):
        self.routes = []

    def add(self, method, pattern, handler, family, prelude=None, peek=None, **options):
        route = Route(method.upper(), re.compile(pattern), handler, family, prelude, peek, options)
        self.routes.append(route)
        return route

    def match(self, method, path):
        """(route, groups) for a match, else (None, methods allowed on that path)."""
        allowed = []
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            if route.method == method:
                return route, {k: v for k, v in found.groupdict().items() if v is not None}
            allowed.append(route.method)
        return None, allowed
