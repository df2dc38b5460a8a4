"""Graph change notifications: subscriptions on mail folders and the webhooks they call.

``POST /v1.0/subscriptions`` checks the request, the token's right to read the mailbox, then
runs the validation handshake against each URL (the sandbox lock is released meanwhile, so
a receiver may call the sandbox back) and answers 201. A background thread then watches the
subscribed folders: like delta rounds (graph_sync), it diffs each folder against the message
ids it saw last, so any way a message lands there (delivery, a move, sending to oneself)
becomes a ``created`` notification, POSTed never inside the request that caused it. Failed
deliveries are retried with a doubling delay for up to four hours of sandbox time. Every
attempt, handshakes included, lands in ``sb.notification_log``.

The state lives on the Directory (``directory.notifications``), so ``Sandbox.reset()``
forgets subscriptions, queued notifications, the log and the settings.
"""

import contextlib
import datetime
import http.client
import json
import re
import ssl
import threading
import time
import traceback
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from .errors import GraphError
from .graph_common import authenticate, peek
from .messages import parse_moment
from .web import Response, add_query, json_response

# Outlook messages: 10,080 minutes (docs/microsoft-facts.md; older pages say 4,230).
MAX_MINUTES = 10_080
MAX_CLIENT_STATE = 128
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# How much of a receiver's answer the sandbox reads (a validation token is short).
MAX_ANSWER = 64 * 1024
# A worker with nothing to watch stops after this many wall seconds; the next
# subscription or lifecycle event starts a new one.
IDLE_EXIT = 2.0

DEFAULTS = {
    # http:// notification URLs on a loopback host (tests); Graph wants public HTTPS.
    "allow_http_notifications": False,
    # The receiver answers the handshake within this many wall seconds (Graph: 10).
    "handshake_timeout": 10.0,
    # ... and a notification within this many (Graph: 3), else it is retried.
    "delivery_timeout": 3.0,
    # Wall seconds before the first retry; doubles on each failure up to retry_delay_max.
    "retry_delay": 1.0,
    "retry_delay_max": 60.0,
    # Sandbox seconds after the first attempt when a notification is given up (Graph: 4 h).
    "retry_window": 4 * 3600,
    "max_minutes": MAX_MINUTES,
    # How often (wall seconds) the worker looks at the folders and the queue.
    "poll_interval": 0.05,
    # CA bundle trusted for https:// receivers (None: the system's).
    "ca_file": None,
}

# Delegated scopes that let a subscription read messages of one's own mailbox. There is no
# delegated way to subscribe to another mailbox (shared or delegated): "Mail.Read.Shared or
# Mail.ReadWrite.Shared ... don't support subscribing to change notifications on items in shared
# or delegated folders"; only the application permission Mail.Read can, and the sandbox issues
# delegated tokens only ("Get Outlook messages in a shared or delegated folder",
# https://learn.microsoft.com/graph/outlook-share-messages-folders).
READ_OWN = {"Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite", "Mail.Read.Shared"}
READ_OWN |= {"Mail.ReadWrite.Shared"}
CHANGE_TYPES = ("created", "updated", "deleted")

_STATUS_NAMES = {400: "BadRequest", 403: "Forbidden", 404: "NotFound"}
_RESOURCE = re.compile(
    r"/?(?:me|users/(?P<user>[^/()']+)|users\('(?P<user_q>[^']+)'\))"
    r"/mailfolders(?:/(?P<folder>[^/()']+)|\('(?P<folder_q>[^']+)'\))/messages/?",
    re.IGNORECASE,
)


@dataclass(eq=False)
class Subscription:
    id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: float  # sandbox clock
    app: object = field(repr=False)
    user: object = field(repr=False)
    mailbox: object = field(repr=False)
    folder: object = field(repr=False)
    # The creator's token generation: a revocation (sb.revoke) removes the subscription.
    generation: int = 0
    created_at: float = 0.0
    # Message id -> changeKey of the folder as last notified (or before the subscription).
    known: dict = field(default_factory=dict, repr=False)
    # After a reauthorizationRequired event changes are dropped until PATCH or /reauthorize.
    reauthorization_required: bool = False

    @property
    def expiration(self):
        return datetime.datetime.fromtimestamp(self.expires_at, datetime.UTC)


@dataclass(frozen=True)
class NotificationAttempt:
    """One POST the sandbox made to a receiver (or tried to)."""

    kind: str  # "validation", "change" or "lifecycle"
    url: str
    subscription_ids: tuple
    attempt: int  # 1 for the first try of this payload
    status: int | None  # None: no answer (refused, reset, timeout)
    error: str | None
    outcome: str  # validated / failed (handshake), delivered / retry / dropped
    time: float  # sandbox clock
    payload: object  # the JSON body sent, or the validation token

    def __getitem__(self, key):
        return getattr(self, key)


@dataclass(eq=False)
class _Pending:
    kind: str
    url: str
    items: list
    first_at: float | None = None  # sandbox time of the first attempt
    due: float = 0.0  # time.monotonic() of the next attempt
    attempts: int = 0


class _State:
    def __init__(self):
        self.settings = dict(DEFAULTS)
        self.subscriptions = {}
        self.queue = []
        self.log = []
        self.paused = False
        self.in_flight = 0
        self.scans = 0


class NotificationLog(Sequence):
    """``sb.notification_log``: a live, read-only view of the attempts since the last reset."""

    def __init__(self, sb):
        self._sb = sb

    def _entries(self):
        with self._sb.lock:
            return list(_state(self._sb).log)

    def __getitem__(self, index):
        return self._entries()[index]

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries())

    def clear(self):
        with self._sb.lock:
            _state(self._sb).log.clear()

    def __repr__(self):
        return f"NotificationLog({self._entries()!r})"


def register(router, sb):
    base = r"/v1\.0/subscriptions"
    one = base + r"/(?P<sid>[^/]+)"
    for method, pattern, handler in (
        ("POST", base, create_subscription),
        ("GET", base, list_subscriptions),
        ("GET", one, get_subscription),
        ("PATCH", one, update_subscription),
        ("DELETE", one, delete_subscription),
        ("POST", one + r"/reauthorize", reauthorize_subscription),
    ):
        router.add(
            method,
            pattern,
            partial(handler, sb),
            "graph",
            prelude=partial(_prelude, sb),
            peek=partial(peek, sb),
        )


# test API ------------------------------------------------------------------------------


def _state(sb):
    """The notification state of the current Directory; callers hold the sandbox lock."""
    state = getattr(sb.directory, "notifications", None)
    if state is None:
        state = sb.directory.notifications = _State()
    return state


def configure_notifications(sb, **settings):
    """Change DEFAULTS' settings (allow_http_notifications, timeouts, retries, max_minutes)."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown notification settings {sorted(unknown)}")
    with sb.lock:
        _state(sb).settings.update(settings)


def subscriptions(sb):
    """The live subscriptions (expired and removed ones are gone)."""
    with sb.lock:
        state = _state(sb)
        _purge(sb, state)
        return list(state.subscriptions.values())


def set_paused(sb, paused):
    """While paused, changes are still noticed and queued but nothing is POSTed."""
    with sb.lock:
        _state(sb).paused = paused
        _ensure_worker(sb)


def lifecycle(sb, subscription_id, event):
    """Send a lifecycle event as Graph does on its own.

    reauthorizationRequired: change notifications stop (changes meanwhile are lost) until
    the app PATCHes the subscription or POSTs /reauthorize. subscriptionRemoved: the
    subscription is gone. missed: nothing changes; the app should run a delta sync.
    A subscription without a lifecycleNotificationUrl gets the effect, not the POST.
    """
    if event not in LIFECYCLE_EVENTS:
        raise ValueError(f"event must be one of {LIFECYCLE_EVENTS}")
    with sb.lock:
        state = _state(sb)
        _purge(sb, state)
        sub = state.subscriptions.get(subscription_id)
        if sub is None:
            raise KeyError(f"unknown subscription {subscription_id!r}")
        if event == "reauthorizationRequired":
            sub.reauthorization_required = True
        elif event == "subscriptionRemoved":
            del state.subscriptions[sub.id]
        _queue_lifecycle(state, sub, event)
        _ensure_worker(sb)


def flush_notifications(sb, timeout=60.0):
    """Wait until the folders were looked at and every queued POST was made.

    True once the queue is empty and nothing is in flight; False at the timeout (a
    receiver that keeps failing, or paused notifications, keep the queue busy). The
    timeout is a bound for a stuck queue, not a bet on how fast the machine delivers.
    """
    deadline = time.monotonic() + timeout
    with sb.lock:
        state = _state(sb)
        if not state.subscriptions and not state.queue and not state.in_flight:
            return True
        target = state.scans + 2
        _ensure_worker(sb)
    while time.monotonic() < deadline:
        with sb.lock:
            if state is not _state(sb):
                return True
            if state.scans >= target and not state.queue and not state.in_flight:
                return True
            _ensure_worker(sb)
        time.sleep(0.01)
    return False


# formats -------------------------------------------------------------------------------


def graph_datetime(timestamp):
    """Graph's form: seven fractional digits and a Z."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _render(request, sub, listed=False):
    return {
        "id": sub.id,
        "resource": sub.resource,
        "applicationId": sub.app.client_id,
        "changeType": sub.change_type,
        # Graph leaves clientState out of listings by design; GET of one shows it.
        "clientState": None if listed else sub.client_state,
        "notificationUrl": sub.notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "expirationDateTime": graph_datetime(sub.expires_at),
        "creatorId": sub.user.id,
        "includeResourceData": False,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }


def _entity(request, sub):
    body = {"@odata.context": f"{request.base_url}/v1.0/$metadata#subscriptions/$entity"}
    body.update(_render(request, sub))
    return body


def _change(sub, message_id, change_type="created", change_key=None):
    path = f"Users/{sub.mailbox.id}/Messages/{message_id}"
    data = {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": path}
    if change_key is not None:
        data["@odata.etag"] = f'W/"{change_key}"'
    data["id"] = message_id
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_datetime(sub.expires_at),
        "clientState": sub.client_state,
        "changeType": change_type,
        "resource": path,
        "tenantId": sub.mailbox.tenant.id,
        "resourceData": data,
    }


def _lifecycle_item(sub, event):
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_datetime(sub.expires_at),
        "tenantId": sub.mailbox.tenant.id,
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }


# request checks ------------------------------------------------------------------------


def _prelude(sb, request, route):
    request.token = authenticate(sb, request)
    request.mailbox = request.token.user.address


def _json_body(request):
    try:
        body = request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.")
    return body


def _extension_error(status, operation, reason):
    """Outlook's errors come back wrapped by the subscription service."""
    return GraphError(
        status,
        "ExtensionError",
        f"Operation: {operation}; Exception: [Status Code: {_STATUS_NAMES[status]}; "
        f"Reason: {reason}]",
    )


def _check_url(value, name, settings, required):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise GraphError(400, "BadRequest", f"{name} is a required property for subscription.")
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        host = None
    if not host:
        raise GraphError(400, "InvalidRequest", f"Invalid {name}: '{value}'.")
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and host in LOOPBACK_HOSTS and settings["allow_http_notifications"]:
        return value
    # Wording of the sandbox: Graph wants a public HTTPS endpoint.
    raise GraphError(400, "InvalidRequest", f"The {name} must use the https scheme.")


def _expiration(body, now, settings, operation):
    raw = body.get("expirationDateTime")
    if not isinstance(raw, str) or not raw:
        raise GraphError(
            400,
            "BadRequest",
            "expirationDateTime is a required property for subscription creation.",
        )
    try:
        moment = parse_moment(raw).timestamp()
    except (ValueError, OverflowError):
        raise GraphError(400, "BadRequest", f"Invalid expirationDateTime '{raw}'.") from None
    limit = settings["max_minutes"]
    if moment <= now:
        raise _extension_error(400, operation, "Subscription expiration must be in the future.")
    if moment - now > limit * 60:
        # Graph's own text (seen with 4230); clients read the limit from it.
        raise GraphError(
            400,
            "ExtensionError",
            f"Subscription expiration can only be {limit} minutes in the future.",
        )
    return moment


def _check_access(token, mailbox, operation):
    # Another mailbox (shared or delegated, Full Access or not) is refused to a delegated
    # token. Microsoft documents the rule, not the answer: the sandbox answers as for any
    # access refusal of the subscription service (sandbox/README.md).
    allowed = mailbox.id == token.user.id and bool(token.scopes & READ_OWN)
    if not allowed:
        raise _extension_error(403, operation, "Access is denied. Check credentials and try again.")


def _target(sb, request, resource, operation):
    """(mailbox, folder) of a resource string, checked against the token."""
    found = _RESOURCE.fullmatch(resource.strip()) if isinstance(resource, str) else None
    if found is None:
        raise _extension_error(
            400, operation, f"The value '{resource}' of parameter 'Resource' is invalid."
        )
    token = request.token
    key = found.group("user") or found.group("user_q")
    if key is None:
        mailbox = token.user.mailbox
    else:
        key = urllib.parse.unquote(key)
        mailbox = sb.directory.mailbox(key, token.user.tenant)
        if mailbox is None:
            raise _extension_error(404, operation, f"The requested user '{key}' is invalid.")
    _check_access(token, mailbox, operation)
    folder = mailbox.folder(found.group("folder") or found.group("folder_q"))
    if folder is None:
        raise _extension_error(
            400, operation, f"The value '{resource}' of parameter 'Resource' is invalid."
        )
    return mailbox, folder


def _owned(sb, request):
    """The subscription of the path, if the token's app and user created it."""
    state = _state(sb)
    _purge(sb, state)
    sub = state.subscriptions.get(request.params["sid"])
    token = request.token
    if sub is None or sub.app is not token.app or sub.user is not token.user:
        raise GraphError(404, "ResourceNotFound", "The object was not found.")
    return sub


# handshake -----------------------------------------------------------------------------


@dataclass
class _Answer:
    status: int
    content_type: str
    body: bytes


def _post(url, body, content_type, timeout, ca_file):
    """POST body to url; an answer slower than timeout (in total) is a TimeoutError."""
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(
            "POST",
            target,
            body=body,
            headers={"Content-Type": content_type, "User-Agent": "M365Sandbox-Notifications/1.0"},
        )
        response = conn.getresponse()
        data = response.read(MAX_ANSWER)
        answer = _Answer(response.status, response.getheader("Content-Type") or "", data)
    finally:
        conn.close()
    if time.monotonic() - started > timeout:
        raise TimeoutError("answered too late")
    return answer


def _describe(exc):
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


@contextlib.contextmanager
def _unlocked(lock):
    """Let go of the sandbox lock the pipeline holds around a handler, then take it back."""
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


def _handshake(url, token, settings, now):
    """(NotificationAttempt, GraphError or None) for one validation request."""
    status = error = None
    failure = None
    try:
        answer = _post(
            add_query(url, {"validationToken": token}),
            b"",
            "text/plain; charset=utf-8",
            settings["handshake_timeout"],
            settings["ca_file"],
        )
        status = answer.status
    except TimeoutError:
        error = "timeout"
        failure = GraphError(400, "InvalidRequest", "Subscription validation request timed out.")
    except (OSError, http.client.HTTPException) as exc:
        error = _describe(exc)
    if failure is None and (error is not None or status != 200):
        failure = GraphError(
            400,
            "ValidationError",
            "Subscription validation request failed. Notification endpoint must respond with "
            "200 OK to validation request.",
        )
    elif failure is None and (
        not answer.content_type.lower().startswith("text/plain")
        or answer.body != token.encode("utf-8")
    ):
        failure = GraphError(
            400,
            "ValidationError",
            "Subscription validation request failed. Response must exactly match "
            "validationToken query parameter.",
        )
    attempt = NotificationAttempt(
        kind="validation",
        url=url,
        subscription_ids=(),
        attempt=1,
        status=status,
        error=error,
        outcome="failed" if failure else "validated",
        time=now,
        payload=token,
    )
    return attempt, failure


# handlers ------------------------------------------------------------------------------


def create_subscription(sb, request):
    state = _state(sb)
    settings = dict(state.settings)
    body = _json_body(request)
    now = request.now
    change_type = body.get("changeType")
    if not isinstance(change_type, str) or not change_type:
        raise GraphError(400, "BadRequest", "changeType is a required property for subscription.")
    # Any combination of created, updated and deleted ("Change notifications for Outlook
    # resources in Microsoft Graph", https://learn.microsoft.com/graph/outlook-change-notifications-overview).
    types = [t.strip().lower() for t in change_type.split(",")]
    if any(t not in CHANGE_TYPES for t in types) or len(set(types)) != len(types):
        raise GraphError(400, "BadRequest", f"Invalid changeType '{change_type}'.")
    client_state = body.get("clientState")
    if client_state is not None and not isinstance(client_state, str):
        raise GraphError(400, "BadRequest", "clientState must be a string.")
    if client_state is not None and len(client_state) > MAX_CLIENT_STATE:
        raise GraphError(
            400,
            "BadRequest",
            f"clientState exceeds the maximum length of {MAX_CLIENT_STATE} characters.",
        )
    if body.get("includeResourceData"):
        raise GraphError(400, "BadRequest", "The sandbox has no rich notifications.")
    notification_url = _check_url(body.get("notificationUrl"), "notificationUrl", settings, True)
    lifecycle_url = _check_url(
        body.get("lifecycleNotificationUrl"), "lifecycleNotificationUrl", settings, False
    )
    expires_at = _expiration(body, now, settings, "Create")
    resource = body.get("resource")
    mailbox, folder = _target(sb, request, resource, "Create")

    token = (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {request.request_id}"
    )
    urls = [notification_url] + ([lifecycle_url] if lifecycle_url else [])
    attempts = []
    failure = None
    with _unlocked(sb.lock):
        for url in urls:
            attempt, failure = _handshake(url, token, settings, now)
            attempts.append(attempt)
            if failure is not None:
                break
    if sb.epoch != request.epoch:
        raise GraphError(503)
    state.log.extend(attempts)
    if failure is not None:
        raise failure
    sub = Subscription(
        id=sb.directory.new_guid(),
        resource=resource,
        change_type=",".join(types),
        notification_url=notification_url,
        lifecycle_url=lifecycle_url,
        client_state=client_state,
        expires_at=expires_at,
        app=request.token.app,
        user=request.token.user,
        mailbox=mailbox,
        folder=folder,
        generation=request.token.user.generation,
        created_at=sb.clock.now(),
        known={m.id: m.change_key for m in folder.messages.values()},
    )
    state.subscriptions[sub.id] = sub
    _ensure_worker(sb)
    return json_response(201, _entity(request, sub))


def list_subscriptions(sb, request):
    state = _state(sb)
    _purge(sb, state)
    token = request.token
    mine = [s for s in state.subscriptions.values() if s.app is token.app and s.user is token.user]
    body = {
        "@odata.context": f"{request.base_url}/v1.0/$metadata#subscriptions",
        "value": [_render(request, s, listed=True) for s in mine],
    }
    return json_response(200, body)


def get_subscription(sb, request):
    return json_response(200, _entity(request, _owned(sb, request)))


def update_subscription(sb, request):
    sub = _owned(sb, request)
    body = _json_body(request)
    if set(body) - {"expirationDateTime"}:
        raise GraphError(400, "BadRequest", "The sandbox updates expirationDateTime only.")
    expires_at = _expiration(body, request.now, _state(sb).settings, "Update")
    _check_access(request.token, sub.mailbox, "Update")
    sub.expires_at = expires_at
    # Renewing also reauthorizes (change-notifications-lifecycle-events.md).
    sub.reauthorization_required = False
    return json_response(200, _entity(request, sub))


def delete_subscription(sb, request):
    sub = _owned(sb, request)
    del _state(sb).subscriptions[sub.id]
    return Response(204)


def reauthorize_subscription(sb, request):
    sub = _owned(sb, request)
    _check_access(request.token, sub.mailbox, "Reauthorize")
    sub.reauthorization_required = False
    return Response(200)


# the worker ----------------------------------------------------------------------------


def _queue(state, kind, url, items):
    """Add items to a POST not tried yet for the same URL (a batch), or queue a new one."""
    for pending in state.queue:
        if pending.kind == kind and pending.url == url and pending.attempts == 0:
            pending.items.extend(items)
            return
    state.queue.append(_Pending(kind, url, list(items)))


def _queue_lifecycle(state, sub, event):
    if sub.lifecycle_url:
        _queue(state, "lifecycle", sub.lifecycle_url, [_lifecycle_item(sub, event)])


def _purge(sb, state):
    """Expired subscriptions vanish; those of a revoked user are removed with a notice."""
    now = sb.clock.now()
    for sub in list(state.subscriptions.values()):
        if now >= sub.expires_at:
            del state.subscriptions[sub.id]
        elif sub.user.generation != sub.generation:
            del state.subscriptions[sub.id]
            _queue_lifecycle(state, sub, "subscriptionRemoved")


def _scan(state):
    """Queue a notification for each change of a subscribed folder the subscription asked
    for: a message new in the folder (created), one with a new changeKey (updated), one gone
    from it, deleted or moved out (deleted)."""
    for sub in state.subscriptions.values():
        folder = sub.folder.messages
        current = {m.id: m.change_key for m in folder.values()}
        known, sub.known = sub.known, current
        if sub.reauthorization_required:
            continue
        wanted = set(sub.change_type.split(","))
        by_time = sorted(folder.values(), key=lambda m: (m.received, m.seq))
        items = []
        for message in by_time:
            if message.id not in known:
                kind = "created"
            elif known[message.id] != message.change_key:
                kind = "updated"
            else:
                continue
            if kind in wanted:
                items.append(_change(sub, message.id, kind, message.change_key))
        if "deleted" in wanted:
            items += [_change(sub, gone, "deleted") for gone in known if gone not in current]
        if items:
            _queue(state, "change", sub.notification_url, items)


def _ensure_worker(sb):
    """Start the delivery thread unless one runs; callers hold the sandbox lock."""
    worker = sb.notifications_worker
    if worker is not None and worker.is_alive():
        return
    worker = threading.Thread(
        target=_run_worker, args=(sb,), name="sandbox-notifications", daemon=True
    )
    sb.notifications_worker = worker
    worker.start()


def _take_due(state):
    """The POSTs to make now; change notifications of vanished subscriptions are dropped."""
    if state.paused:
        return []
    clock = time.monotonic()
    due = [p for p in state.queue if p.due <= clock]
    for pending in due:
        state.queue.remove(pending)
        if pending.kind == "change":
            pending.items = [i for i in pending.items if i["subscriptionId"] in state.subscriptions]
    due = [p for p in due if p.items]
    state.in_flight += len(due)
    return due


def _run_worker(sb):
    try:
        _work(sb)
    except Exception:  # a sandbox bug: keep it for the test, as the pipeline does
        with sb.lock:
            sb.server_errors.append(traceback.format_exc())
            if sb.notifications_worker is threading.current_thread():
                sb.notifications_worker = None


def _work(sb):
    me = threading.current_thread()
    idle_since = time.monotonic()
    while True:
        with sb.lock:
            if sb.notifications_worker is not me:
                return
            state = _state(sb)
            settings = dict(state.settings)
            _purge(sb, state)
            _scan(state)
            state.scans += 1
            if state.subscriptions or state.queue:
                idle_since = time.monotonic()
            elif sb.stopping.is_set() or time.monotonic() - idle_since > IDLE_EXIT:
                sb.notifications_worker = None
                return
            due = _take_due(state)
        for pending in due:
            _deliver(sb, state, pending, settings)
        if sb.stopping.wait(settings["poll_interval"]):
            with sb.lock:
                if sb.notifications_worker is me:
                    sb.notifications_worker = None
            return


def _deliver(sb, state, pending, settings):
    now = sb.clock.now()
    body = json.dumps({"value": pending.items}).encode("utf-8")
    status = error = None
    try:
        answer = _post(
            pending.url,
            body,
            "application/json; charset=utf-8",
            settings["delivery_timeout"],
            settings["ca_file"],
        )
        status = answer.status
    except (OSError, http.client.HTTPException) as exc:
        error = _describe(exc)
    with sb.lock:
        state.in_flight -= 1
        pending.attempts += 1
        if pending.first_at is None:
            pending.first_at = now
        if status is not None and 200 <= status < 300:
            outcome = "delivered"
        elif sb.clock.now() - pending.first_at >= settings["retry_window"]:
            outcome = "dropped"
            if pending.kind == "change":
                # The sandbox's choice: a notification given up is a missed one.
                for sub_id in dict.fromkeys(i["subscriptionId"] for i in pending.items):
                    sub = state.subscriptions.get(sub_id)
                    if sub is not None:
                        _queue_lifecycle(state, sub, "missed")
        else:
            outcome = "retry"
            delay = settings["retry_delay"] * 2 ** (pending.attempts - 1)
            pending.due = time.monotonic() + min(delay, settings["retry_delay_max"])
            state.queue.append(pending)
        state.log.append(
            NotificationAttempt(
                kind=pending.kind,
                url=pending.url,
                subscription_ids=tuple(dict.fromkeys(i["subscriptionId"] for i in pending.items)),
                attempt=pending.attempts,
                status=status,
                error=error,
                outcome=outcome,
                time=now,
                payload=json.loads(body),
            )
        )
