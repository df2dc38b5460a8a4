"""Typed errors for every failure met when talking to Microsoft.

Each error says what an admin should do next through its class:

- :class:`GraphAuthError`: the connection must be made again (sign in again);
- :class:`GraphConfigError`: the Azure app registration or the endpoints are wrong;
- :class:`GraphTransientError`: try again later, ``retry_after`` seconds if known;
- :class:`GraphPermanentError`: this request will never succeed as it is.

Messages are built from a fixed catalogue plus Microsoft's one-line
description, scrubbed; no token, code, secret or request body ever reaches them.

Every sentence an admin reads is written as ``_lt("...")``: Odoo's .pot export
collects that keyword from every Python file of the addon, while here it returns
the English sentence unchanged. An error keeps its sentence as a template with its
``params`` apart, so that the Odoo side translates the template in the user's
language first and fills in the values after (``models/graph_error_text.py``);
``str(error)`` and ``user_message`` stay English for logs and these tests.
"""

import email.utils
import json
import math
import re
import time

import requests

# Microsoft's own text is kept for diagnosis but bounded: it is echoed in the UI.
DETAIL_MAX_CHARS = 300


def _lt(sentence):
    """Mark ``sentence`` for Odoo's translation export; it is returned unchanged."""
    return sentence


def _untranslated(sentence):
    return sentence


def _fill(translate, template, params):
    """``template`` translated, then its placeholders filled in from ``params``."""
    sentence = translate(template)
    if not params:
        return sentence
    try:
        return sentence % params
    except (KeyError, TypeError, ValueError):
        # A translation that lost a placeholder must not hide the error itself.
        return template % params


class GraphError(Exception):
    """A failure talking to Microsoft Entra ID or Microsoft Graph."""

    default_message = _lt("Microsoft 365 refused the request.")

    def __init__(
        self,
        user_message=None,
        *,
        params=None,
        status=None,
        code=None,
        request_id=None,
        retry_after=None,
        detail=None,
        location=None,
    ):
        # A template when ``params`` are given: translated before they are filled in.
        self.template = user_message or self.default_message
        self.params = dict(params or {})
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.detail = detail
        # Graph's 410 on a stale delta token may point at a fresh delta URL.
        self.location = location
        super().__init__(self.user_message)

    def message(self, translate=_untranslated):
        """The sentence for an admin, through ``translate`` (English by default)."""
        return _fill(translate, self.template, self.params)

    @property
    def user_message(self):
        return self.message()

    def describe(self, translate=_untranslated):
        """The sentence, what Microsoft support asks for, and Microsoft's own words."""
        text = self.message(translate)
        if self.reference:
            text += f" [{self.reference}]"
        if self.detail:
            says = _fill(translate, _lt("Microsoft says: %(detail)s"), {"detail": self.detail})
            text += " " + says
        return text

    @property
    def reference(self):
        """What Microsoft support asks for: status, error code, request id."""
        parts = []
        if self.status:
            parts.append(f"HTTP {self.status}")
        if self.code:
            code = str(self.code)
            parts.append(f"AADSTS{code}" if code.isdigit() else code)
        if self.request_id:
            parts.append(f"request-id {self.request_id}")
        return ", ".join(parts)

    def __str__(self):
        return self.describe()

    def __repr__(self):
        return f"{type(self).__name__}({self.reference or self.user_message!r})"


class GraphAuthError(GraphError):
    default_message = _lt(
        "Microsoft no longer accepts this connection: connect the Outlook account again."
    )


class GraphConfigError(GraphError):
    default_message = _lt(
        "Microsoft rejected the Azure app settings: check the client id, secret, "
        "tenant and redirect URI in Settings against the Azure app registration."
    )


class GraphTransientError(GraphError):
    default_message = _lt(
        "Microsoft 365 is busy or unreachable: the request will be tried again later."
    )


class GraphPermanentError(GraphError):
    default_message = _lt("Microsoft 365 refused the request; trying again will not help.")


# Microsoft error (AADSTS number or Graph code, compared lower-cased) ->
# (error class, what happened and what to do, for an admin).
CATALOGUE = {
    # Entra ID: the grant is gone, only a new sign-in helps.
    "700082": (
        GraphAuthError,
        _lt(
            "The sign-in expired because the connection was not used for too long. Connect the "
            "Outlook account again."
        ),
    ),
    "50173": (
        GraphAuthError,
        _lt(
            "The sign-in was revoked, usually by a password change. Connect the Outlook account "
            "again."
        ),
    ),
    "70008": (
        GraphAuthError,
        _lt("The sign-in has expired or was revoked. Connect the Outlook account again."),
    ),
    "70000": (
        GraphAuthError,
        _lt(
            "Microsoft rejected the stored sign-in (revoked or invalid). Connect the Outlook "
            "account again."
        ),
    ),
    "9002313": (
        GraphAuthError,
        _lt(
            "Microsoft rejected the stored sign-in as malformed. Connect the Outlook account again."
        ),
    ),
    "54005": (
        GraphAuthError,
        _lt("This sign-in was already used. Start the connection again from Odoo."),
    ),
    "501481": (
        GraphAuthError,
        _lt(
            "The sign-in could not be verified (PKCE mismatch). Start the connection again from "
            "Odoo."
        ),
    ),
    "65004": (
        GraphAuthError,
        _lt(
            "The permissions were declined at Microsoft. Connect again and accept the requested "
            "permissions."
        ),
    ),
    "50076": (
        GraphAuthError,
        _lt(
            "Microsoft requires multi-factor authentication for this account. Connect the Outlook "
            "account again."
        ),
    ),
    "50079": (
        GraphAuthError,
        _lt(
            "Microsoft requires this account to register for multi-factor authentication. Complete "
            "the registration, then connect the Outlook account again."
        ),
    ),
    "53003": (
        GraphAuthError,
        _lt(
            "A Conditional Access policy of the tenant blocked the sign-in. Ask the Azure "
            "administrator to allow it, then connect the Outlook account again."
        ),
    ),
    "50126": (
        GraphAuthError,
        _lt("The username or password is wrong. Connect again with the right credentials."),
    ),
    "50020": (
        GraphAuthError,
        _lt(
            "The account belongs to another tenant than the one configured. Connect with an "
            "account of the configured tenant, or change the tenant in Settings."
        ),
    ),
    "90072": (
        GraphAuthError,
        _lt(
            "The account does not exist in the configured tenant. Connect with an account of that "
            "tenant, or add it there as a guest."
        ),
    ),
    "50034": (
        GraphAuthError,
        _lt("The account does not exist in the directory. Connect with another account."),
    ),
    "50057": (
        GraphAuthError,
        _lt("The account is disabled in Microsoft Entra ID. Enable it, then connect again."),
    ),
    "50055": (
        GraphAuthError,
        _lt(
            "The account's password has expired. Change it, then connect the Outlook account again."
        ),
    ),
    # Entra ID: the Azure app registration does not match Settings.
    "7000215": (
        GraphConfigError,
        _lt(
            "The client secret is wrong. Copy the secret's Value (not its ID) from the Azure app "
            "registration into the Client Secret field."
        ),
    ),
    "7000222": (
        GraphConfigError,
        _lt(
            "The client secret has expired. Create a new secret in the Azure app registration and "
            "enter it in Settings."
        ),
    ),
    "7000218": (
        GraphConfigError,
        _lt("No client secret was sent. Enter the client secret in Settings."),
    ),
    "50011": (
        GraphConfigError,
        _lt(
            "The redirect URI is not registered in the Azure app. Add this Odoo's "
            "/microsoft_outlook/confirm URL as a Web redirect URI."
        ),
    ),
    "500112": (
        GraphConfigError,
        _lt(
            "The redirect URI differs from the one used to start the sign-in. Check that Odoo's "
            "base URL matches the redirect URI registered in Azure, then connect again."
        ),
    ),
    "700016": (
        GraphConfigError,
        _lt(
            "No application with this client id exists in the tenant. Check the client id and the "
            "tenant in Settings."
        ),
    ),
    "65001": (
        GraphConfigError,
        _lt(
            "The Azure app lacks consent for the mail permissions. Grant admin consent in the "
            "app's API permissions, then connect the Outlook account again."
        ),
    ),
    "50194": (
        GraphConfigError,
        _lt(
            "The Azure app is single-tenant: enter its tenant id in Settings instead of 'common' "
            "or 'organizations'."
        ),
    ),
    "90002": (
        GraphConfigError,
        _lt("The tenant configured in Settings does not exist. Check the tenant id or domain."),
    ),
    "900023": (
        GraphConfigError,
        _lt("The tenant configured in Settings is not a valid tenant id or domain."),
    ),
    "7000112": (
        GraphConfigError,
        _lt("The Azure app is disabled. An Azure administrator must enable it."),
    ),
    # Microsoft Graph.
    "invalidauthenticationtoken": (
        GraphAuthError,
        _lt("Microsoft Graph rejected the access token. Connect the Outlook account again."),
    ),
    "erroraccessdenied": (
        GraphPermanentError,
        _lt(
            "The signed-in account has no access to this mailbox or folder. Give it Full Access "
            "(shared mailbox) in Exchange, or connect with the mailbox's own account."
        ),
    ),
    "authorization_requestdenied": (
        GraphPermanentError,
        _lt("The permissions granted to the Azure app do not allow this request."),
    ),
    "errorsendasdenied": (
        GraphPermanentError,
        _lt(
            "The signed-in account may not send as this address. Give it Send As or Send on Behalf "
            "permission on the mailbox in Exchange."
        ),
    ),
    "erroritemnotfound": (
        GraphPermanentError,
        _lt("The message or folder no longer exists in the mailbox."),
    ),
    "mailboxnotenabledforrestapi": (
        GraphPermanentError,
        _lt(
            "This mailbox cannot be reached through Microsoft Graph: it needs an Exchange Online "
            "licence (or is on-premises, or inactive)."
        ),
    ),
    "mailboxnotfound": (
        GraphPermanentError,
        _lt("The mailbox was not found. Check the address of the mail server."),
    ),
    "errornonexistentmailbox": (
        GraphPermanentError,
        _lt("The mailbox was not found. Check the address of the mail server."),
    ),
    "resourcenotfound": (
        GraphPermanentError,
        _lt("The mailbox or item was not found. Check the address of the mail server."),
    ),
    "request_resourcenotfound": (
        GraphPermanentError,
        _lt("The user or mailbox was not found in the tenant. Check the address."),
    ),
    "errorquotaexceeded": (
        GraphPermanentError,
        _lt("The mailbox is full. Free some space or raise its quota in Exchange."),
    ),
    "errormessagesizeexceeded": (
        GraphPermanentError,
        _lt("The message is larger than the mailbox accepts. Send smaller attachments."),
    ),
    "errortoomanyrecipients": (
        GraphPermanentError,
        _lt(
            "The message has more recipients than Exchange accepts in one message (500 by "
            "default). Send it to fewer recipients, or ask the Microsoft 365 admin to raise the "
            "tenant's limit (up to 1,000)."
        ),
    ),
    "requestentitytoolarge": (
        GraphPermanentError,
        _lt("The request is larger than Microsoft Graph accepts."),
    ),
    "errormimecontentinvalidbase64string": (
        GraphPermanentError,
        _lt("Microsoft Graph could not read the message's MIME content."),
    ),
    "errorinvalidrecipients": (
        GraphPermanentError,
        _lt("Microsoft rejected the recipients. Check the recipients' addresses."),
    ),
    "errormessagesubmissionblocked": (
        GraphPermanentError,
        _lt(
            "Exchange blocked sending from this mailbox (often after suspected spam). An Exchange "
            "administrator must unblock it."
        ),
    ),
    "errorattachmentsizeshouldnotbelessthanminimumsize": (
        GraphPermanentError,
        _lt("An attachment is too small for an upload session."),
    ),
    "syncstatenotfound": (
        GraphPermanentError,
        _lt("The mailbox synchronisation state expired; the next fetch starts a new one."),
    ),
    "resyncrequired": (
        GraphPermanentError,
        _lt("The mailbox synchronisation state expired; the next fetch starts a new one."),
    ),
    "toomanyrequests": (
        GraphTransientError,
        _lt("Microsoft 365 is throttling this mailbox; the request will be tried again later."),
    ),
    "applicationthrottled": (
        GraphTransientError,
        _lt("Microsoft 365 is throttling this mailbox; the request will be tried again later."),
    ),
    "errorsubmissionquotaexceeded": (
        GraphTransientError,
        _lt(
            "The mailbox reached Exchange's sending limit; mail will be sent when the limit window "
            "has passed."
        ),
    ),
    "errorserverbusy": (
        GraphTransientError,
        _lt("Exchange is busy; the request will be tried again later."),
    ),
    "errormailboxstoreunavailable": (
        GraphTransientError,
        _lt("The mailbox is temporarily unavailable; the request will be tried again later."),
    ),
    "serviceunavailable": (
        GraphTransientError,
        _lt("Microsoft Graph is temporarily unavailable; the request will be tried again later."),
    ),
}

# OAuth 2.0 `error` values, when no AADSTS number is known.
OAUTH_ERRORS = {
    "invalid_grant": (GraphAuthError, None),
    "interaction_required": (GraphAuthError, None),
    "login_required": (GraphAuthError, None),
    "consent_required": (
        GraphAuthError,
        _lt(
            "The account has not consented to the mail permissions. Connect the Outlook account "
            "again."
        ),
    ),
    "access_denied": (
        GraphAuthError,
        _lt(
            "The sign-in was cancelled or the permissions were declined at Microsoft. Connect "
            "again and accept the requested permissions."
        ),
    ),
    "invalid_client": (GraphConfigError, None),
    "unauthorized_client": (
        GraphConfigError,
        _lt(
            "The Azure app is not allowed to use this sign-in flow. Check that it is registered as "
            "a Web application with a client secret."
        ),
    ),
    "invalid_scope": (
        GraphConfigError,
        _lt(
            "Microsoft rejected the requested permissions. Check the Graph endpoint configured for "
            "this cloud."
        ),
    ),
    "invalid_request": (GraphConfigError, None),
    "unsupported_grant_type": (GraphConfigError, None),
    "server_error": (GraphTransientError, None),
    "temporarily_unavailable": (GraphTransientError, None),
}

_AADSTS = re.compile(r"AADSTS(\d+)")
# Long unbroken runs of token-ish characters mixing letters and digits (tokens,
# secrets, codes), except GUIDs, which are the identifiers an admin needs.
_SECRETISH = re.compile(r"[A-Za-z0-9._~+=\-]{20,}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _redact_match(match):
    word = match.group(0)
    if _GUID.fullmatch(word) or not (re.search(r"\d", word) and re.search(r"[A-Za-z]", word)):
        return word
    return "[redacted]"


def scrub(text):
    """First line of Microsoft's text, bounded, with anything token-like removed."""
    if not isinstance(text, str) or not text.strip():
        return None
    line = text.strip().splitlines()[0].strip()
    line = _SECRETISH.sub(_redact_match, line)
    if len(line) > DETAIL_MAX_CHARS:
        line = line[: DETAIL_MAX_CHARS - 1] + "…"
    return line


def parse_retry_after(value):
    """Seconds from a Retry-After header (seconds, fractional or an HTTP date)."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _class_for_status(status):
    if status == 401:
        return GraphAuthError
    if status is None or status == 429 or status >= 500 or status == 408:
        return GraphTransientError
    return GraphPermanentError


def _lookup(code):
    return CATALOGUE.get(str(code).lower()) if code else None


def error_from_token_response(status, body):
    """The typed error for an Entra ID error dict (token endpoint, redirect or MSAL).

    ``status`` is the HTTP status, or None when the error came back in the
    redirect to Odoo.
    """
    body = body if isinstance(body, dict) else {}
    oauth_error = str(body.get("error") or "") or None
    description = body.get("error_description")
    codes = body.get("error_codes") or []
    number = None
    if isinstance(codes, list) and codes:
        number = str(codes[0])
    elif isinstance(description, str):
        match = _AADSTS.search(description)
        number = match.group(1) if match else None
    request_id = body.get("correlation_id") or body.get("trace_id")
    entry = _lookup(number)
    if entry is None:
        entry = OAUTH_ERRORS.get(oauth_error)
    if entry is None:
        entry = (_class_for_status(status) if status else GraphPermanentError, None)
    cls, message = entry
    return cls(
        message,
        status=status,
        code=number or oauth_error,
        request_id=str(request_id) if request_id else None,
        detail=scrub(description),
    )


def _graph_error_chain(body):
    """Each level of a Graph error body, outermost first."""
    chain = []
    node = body.get("error") if isinstance(body, dict) else None
    while node is not None and len(chain) < 10:
        if isinstance(node, str):
            chain.append({"code": node})
            break
        if not isinstance(node, dict):
            break
        message = node.get("message")
        # Exchange sometimes wraps a whole Graph error body as the message text.
        if isinstance(message, str) and message.lstrip().startswith("{"):
            try:
                wrapped = json.loads(message)
            except ValueError:
                wrapped = None
            if isinstance(wrapped, dict) and "error" in wrapped:
                chain.append({**node, "message": None})
                chain.extend(_graph_error_chain(wrapped))
                break
        chain.append(node)
        node = node.get("innerError") or node.get("innererror")
    return chain


def error_from_graph_response(response):
    """The typed error for a failed Microsoft Graph response."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    chain = _graph_error_chain(body)
    codes = [str(node["code"]) for node in chain if node.get("code")]
    # The deepest code Microsoft gives is the most specific one.
    code = next((c for c in reversed(codes) if _lookup(c)), codes[0] if codes else None)
    request_id = next(
        (node.get("request-id") for node in chain if node.get("request-id")),
        response.headers.get("request-id"),
    )
    message_text = next(
        (node["message"] for node in chain if isinstance(node.get("message"), str)), None
    )
    challenge = response.headers.get("WWW-Authenticate", "")
    if status == 401 and "insufficient_claims" in challenge:
        cls, message = (
            GraphAuthError,
            _lt(
                "Microsoft revoked this connection (password change, account disabled or "
                "sign-in revoked). Connect the Outlook account again."
            ),
        )
        code = code or "insufficient_claims"
    else:
        cls, message = _lookup(code) or (_class_for_status(status), None)
    return cls(
        message,
        status=status,
        code=code,
        request_id=str(request_id) if request_id else None,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        detail=scrub(message_text),
        location=response.headers.get("Location") if status == 410 else None,
    )


_TRANSIENT_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_URL_EXCEPTIONS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
)


def error_from_exception(exc):
    """The typed error for a transport failure (the exception's text is not kept:
    requests puts URLs in it, and upload URLs carry a credential)."""
    kind = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return GraphConfigError(
            _lt(
                "The TLS certificate of the Microsoft endpoint could not be verified. "
                "Check the CA bundle of the custom endpoints, or the corporate proxy."
            ),
            code=kind,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return GraphTransientError(_lt("Microsoft 365 did not answer in time."), code=kind)
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        return GraphTransientError(
            _lt("The connection to Microsoft 365 failed; the request will be tried again later."),
            code=kind,
        )
    if isinstance(exc, _URL_EXCEPTIONS):
        return GraphConfigError(
            _lt("The Microsoft endpoint URL is invalid. Check the cloud settings."), code=kind
        )
    return GraphPermanentError(code=kind)
