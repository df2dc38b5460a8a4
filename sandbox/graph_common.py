"""What every Graph endpoint shares: bearer tokens, target mailbox, permissions, limits, paging."""

import json
import urllib.parse
from functools import partial

from .errors import GraphError
from .tokens import GRAPH_APP_ID, b64url

PREFIX = r"/v1\.0/(?:me|users/(?P<user>[^/()]+)|users\('(?P<user_q>[^']+)'\))"
FOLDER = r"/mailFolders(?:/(?P<folder>[^/()]+)|\('(?P<folder_q>[^']+)'\))"

USER_SCOPES = {"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All"}
OTHER_USER_SCOPES = {"User.ReadBasic.All", "User.Read.All"}
# need -> (scopes for one's own mailbox, scopes for another one)
MAIL_SCOPES = {
    "mail.read": (
        {"Mail.Read", "Mail.ReadWrite", "Mail.Read.Shared", "Mail.ReadWrite.Shared"},
        {"Mail.Read.Shared", "Mail.ReadWrite.Shared"},
    ),
    "mail.write": ({"Mail.ReadWrite", "Mail.ReadWrite.Shared"}, {"Mail.ReadWrite.Shared"}),
    "mail.send": ({"Mail.Send", "Mail.Send.Shared"}, {"Mail.Send.Shared"}),
}


def add_route(router, sb, method, rest, handler, need):
    """Register a Graph endpoint under /me and /users/{id or address}.

    need is "user" (directory read) or "mail.read", "mail.write", "mail.send": the prelude
    checks it before the handler runs. For "mail.send" on another mailbox the scope and Full
    Access are checked here; the SendAs / SendOnBehalf right depends on the message and is
    the handler's to check.
    """
    return router.add(
        method,
        PREFIX + rest,
        partial(handler, sb),
        "graph",
        prelude=partial(prelude, sb),
        peek=partial(peek, sb),
        need=need,
    )


def param(request, name):
    """A path parameter written either as /name/value or as name('value')."""
    return request.params.get(name) or request.params.get(name + "_q")


def www_authenticate(request, extra=""):
    return (
        f'Bearer realm="", authorization_uri="{request.base_url}/common/oauth2/authorize", '
        f'client_id="{GRAPH_APP_ID}"{extra}'
    )


def _bearer(request):
    scheme, _, value = (request.header("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authenticate(sb, request):
    value = _bearer(request)
    headers = {"WWW-Authenticate": www_authenticate(request)}
    if not value:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", headers)
    token = sb.tokens.access.get(value)
    if token is None:
        message = "IDX14100: JWT is not well formed." if value.count(".") != 2 else None
        raise GraphError(401, "InvalidAuthenticationToken", message, headers)
    request.app_id = token.app.client_id
    if token.generation < token.user.generation and sb.cae:
        claims = b64url(
            json.dumps(
                {
                    "access_token": {
                        "nbf": {"essential": True, "value": str(int(token.user.revoked_at))}
                    }
                }
            )
        )
        headers["WWW-Authenticate"] = www_authenticate(
            request, f', error="insufficient_claims", claims="{claims}"'
        )
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "Continuous access evaluation resulted in challenge with result: InteractionRequired "
            "and code: TokenIssuedBeforeRevocationTimestamp",
            headers,
        )
    if request.now >= token.expires_at:
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
            headers,
        )
    return token


def peek(sb, request):
    """The mailbox a request is about, for faults and the log; never fails."""
    key = param(request, "user")
    if key:
        mailbox = sb.directory.mailbox(key)
        return mailbox.address if mailbox else key.lower()
    token = sb.tokens.access.get(_bearer(request))
    return token.user.address if token else None


def check_access(token, mailbox, need):
    scopes = token.scopes
    own = mailbox.id == token.user.id
    if need == "user":
        if not scopes & (USER_SCOPES if own else OTHER_USER_SCOPES):
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return
    own_scopes, other_scopes = MAIL_SCOPES[need]
    if own:
        allowed = bool(scopes & own_scopes)
    else:
        # Sending through /users/{other}/... too: "the sending user must have the Full Access
        # mailbox permission in addition to either the Send on Behalf or Send As permission"
        # ("Send Outlook messages from another user", Sent Items behavior,
        # https://learn.microsoft.com/graph/outlook-send-mail-from-other-user). Send As or Send
        # on Behalf alone sends through /me with from set (graph_send checks those rights).
        allowed = bool(scopes & other_scopes) and "FullAccess" in mailbox.rights_of(token.user)
    if not allowed:
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )


def prelude(sb, request, route):
    token = authenticate(sb, request)
    need = route.options["need"]
    key = param(request, "user")
    if key is None:
        mailbox = token.user.mailbox
    else:
        mailbox = sb.directory.mailbox(key, token.user.tenant)
        if mailbox is None:
            if need == "user":
                raise GraphError(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{key}' does not exist or one of its queried reference-property "
                    "objects are not present.",
                )
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
    request.token = token
    request.target_mailbox = mailbox
    request.mailbox = mailbox.address
    check_access(token, mailbox, need)
    if need == "user":
        return None
    return _take_limits(sb, token.app.client_id, mailbox.id)


def _take_limits(sb, app_id, mailbox_id):
    limits = sb.limits
    leave = limits.enter(app_id, mailbox_id)
    if leave is None:
        raise GraphError(
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            retry_after=limits.retry_after(limits.concurrency_retry_after),
        )
    wait = limits.admit(app_id, mailbox_id)
    if wait is not None:
        leave()
        raise GraphError(
            429,
            "TooManyRequests",
            "Application is over its request limit for this mailbox. Please retry later.",
            retry_after=limits.retry_after(wait),
        )
    return leave


# query options -------------------------------------------------------------------------


def selection(request, allowed, type_name):
    """The $select list in canonical case, or None; unknown names are a 400 like Graph's."""
    raw = request.query.get("$select")
    if not raw:
        return None
    canonical = {name.lower(): name for name in allowed}
    chosen = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        if name.lower() not in canonical:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
            )
        chosen.append(canonical[name.lower()])
    return chosen


def _int_option(request, name, default, maximum=None):
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (maximum is not None and value > maximum):
        raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for query option '{name}'.")
    return value


def paged(request, items, render, context, default_top=10, max_top=1000):
    """One page of items with @odata.nextLink built from $skip, as Outlook pages."""
    top = _int_option(request, "$top", default_top, max_top)
    skip = _int_option(request, "$skip", 0)
    page = items[skip : skip + top]
    result = {"@odata.context": context}
    if request.query.get("$count", "").lower() == "true":
        result["@odata.count"] = len(items)
    result["value"] = [render(item) for item in page]
    if skip + top < len(items):
        query = dict(request.query)
        query["$skip"] = str(skip + top)
        raw_path = urllib.parse.urlsplit(request.target).path
        result["@odata.nextLink"] = f"{request.base_url}{raw_path}?{urllib.parse.urlencode(query)}"
    return result


def metadata(request, mailbox, tail):
    return f"{request.base_url}/v1.0/$metadata#users('{mailbox.id}'){tail}"
