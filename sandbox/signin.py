"""A scripted browser for the consent page: what a user does between authorize and redirect."""

import http.client
import ssl
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class SignInResult:
    status: int
    # Where the browser is sent: the redirect target (or form_post action), else None.
    url: str | None = None
    # What the app receives: code/state or error/error_description (query, fragment or form).
    params: dict = field(default_factory=dict)
    # The HTML shown when the browser stays at Microsoft (error page, consent page with error).
    page: str = ""


class _Forms(HTMLParser):
    """Collects forms with their inputs and buttons."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "id": attrs.get("id"),
                    "action": attrs.get("action", ""),
                    "fields": {},
                    "ids": set(),
                }
            )
        elif tag in ("input", "button") and self.forms:
            form = self.forms[-1]
            if attrs.get("id"):
                form["ids"].add(attrs["id"])
            if attrs.get("name") and tag == "input":
                form["fields"][attrs["name"]] = attrs.get("value") or ""


def _parse_forms(page):
    parser = _Forms()
    parser.feed(page)
    return parser.forms


def _request(ca_file, url, method="GET", data=None):
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file)
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port, context=context, timeout=30
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return (
            response.status,
            response.getheader("Location"),
            response.read().decode("utf-8", "replace"),
        )
    finally:
        connection.close()


def _outcome(status, location, page):
    if location:
        parts = urllib.parse.urlsplit(location)
        params = dict(urllib.parse.parse_qsl(parts.fragment or parts.query, keep_blank_values=True))
        return SignInResult(status, location, params, "")
    for form in _parse_forms(page):
        if form["id"] == "form_post":
            return SignInResult(status, form["action"], dict(form["fields"]), page)
    return SignInResult(status, None, {}, page)


def sign_in(ca_file, auth_uri, accept=True, login=None):
    """Open auth_uri, then press Accept (optionally as another login) or Cancel."""
    status, location, page = _request(ca_file, auth_uri)
    forms = {form["id"]: form for form in _parse_forms(page)}
    if location or "accept-form" not in forms:
        return _outcome(status, location, page)
    form = forms["accept-form" if accept else "cancel-form"]
    data = dict(form["fields"])
    data["action"] = "accept" if accept else "cancel"
    if accept and login is not None:
        data["login"] = login
    action = urllib.parse.urljoin(auth_uri, form["action"])
    return _outcome(*_request(ca_file, action, "POST", data))
