"""Graph change notifications on a mail folder: subscriptions and the webhook's helpers.

:class:`SubscriptionClient` creates, renews, reauthorizes and deletes subscriptions through
a :class:`~.graph.GraphClient`. The pure helpers serve the Odoo endpoint that receives the
notifications: the validation handshake (:func:`validation_response`), a strict reading of
a notification POST (:func:`parse_notifications`) and the clientState check
(:func:`client_state_matches`). A notification only says "look now": the delta query stays
the source of truth (docs/notifications.md).
"""

import datetime
import hmac
import ipaddress
import json
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import GraphError, GraphPermanentError, _lt
from .graph import quote_segment

# Outlook's documented maximum is 10,080 minutes on later pages and 4,230 on older ones
# (docs/microsoft-facts.md, "Change notifications"): just under the smaller one works with
# both; a refusal that names another limit is read and the request tried once more, shorter.
DEFAULT_MINUTES = 4200
# Kept under the limit Graph names, for the clock difference between Odoo and Microsoft.
LIMIT_MARGIN_MINUTES = 30
MAX_CLIENT_STATE = 128
# Graph's tokens are about a hundred characters; anything far longer is not Graph's.
MAX_VALIDATION_TOKEN = 1024
MAX_NOTIFICATION_BYTES = 1_000_000
# Bounds on the strings of one notification (ids of Exchange items are ~150 characters).
MAX_FIELD_CHARS = 2048
MAX_NOTIFICATIONS_PER_POST = 1000
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")

_LIMIT = re.compile(r"can only be (\d+) minutes in the future", re.IGNORECASE)
_FOLDER = re.compile(r"[A-Za-z0-9_\-=+.]{1,512}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MESSAGE_IN_RESOURCE = re.compile(r"/messages/([^/]+)$", re.IGNORECASE)


class SubscriptionGone(GraphPermanentError):
    """Graph no longer knows the subscription (deleted, expired or removed): create another."""

    default_message = _lt(
        "Microsoft 365 no longer knows this change notification subscription; "
        "a new one will be created."
    )


class NotificationRejected(Exception):
    """A POST to the notification endpoint that is not a Graph notification.

    ``status`` is the HTTP status to answer (400, 413 or 415); ``reason`` a short text
    safe to log (it never quotes the body).
    """

    def __init__(self, status, reason):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


@dataclass(frozen=True)
class Subscription:
    id: str
    expires_at: datetime.datetime
    resource: str
    change_type: str = "created"
    notification_url: str | None = None
    lifecycle_url: str | None = None


@dataclass(frozen=True)
class Notification:
    """One item of a notification POST: a change, or a lifecycle event."""

    subscription_id: str
    client_state: str | None
    change_type: str | None
    resource: str | None
    lifecycle_event: str | None
    message_id: str | None
    tenant_id: str | None = None
    subscription_expires_at: datetime.datetime | None = None

    @property
    def is_lifecycle(self):
        return self.lifecycle_event is not None


def _utcnow():
    return datetime.datetime.now(datetime.UTC)


def parse_graph_datetime(value):
    """An aware datetime from Graph's ISO form (any number of fractional digits), or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.11 takes up to 6 fractional digits everywhere; Graph writes 7.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def format_graph_datetime(moment):
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def resource_for(mailbox_address=None, folder="inbox"):
    """The subscription resource of a folder's messages: own mailbox (None) or another one.

    ``folder`` is a well-known name or a folder id (base64-like); Graph refuses display names.
    """
    if not isinstance(folder, str) or not _FOLDER.fullmatch(folder):
        raise ValueError("A folder is a well-known name or a folder id.")
    owner = "/me" if mailbox_address is None else f"/users/{quote_segment(mailbox_address)}"
    return f"{owner}/mailFolders('{folder}')/messages"


# The two addresses Microsoft calls, under the database's public base URL.
NOTIFICATION_PATH = "/microsoft_outlook_graph/notifications"
LIFECYCLE_PATH = "/microsoft_outlook_graph/lifecycle"
# Why Microsoft cannot reach a base URL (``NotificationEndpoint.problem``); the host
# reasons are those of :func:`host_problem`.
NOT_HTTPS = "not_https"
NO_HOST = "no_host"
LOCAL_NAME = "local_name"
NO_DOMAIN = "no_domain"
PRIVATE_ADDRESS = "private_address"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class NotificationEndpoint:
    """Where Microsoft would call Odoo, or why it cannot (``problem``, one of the
    reasons above, with the ``base_url`` it is about)."""

    notification_url: str | None = None
    lifecycle_url: str | None = None
    problem: str | None = None
    base_url: str = ""


def host_problem(host):
    """Why Microsoft cannot reach ``host`` (a reason above), or None."""
    host = (host or "").strip("[]").lower()
    if not host:
        return NO_HOST
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return LOCAL_NAME
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return NO_DOMAIN if "." not in host else None
    return None if address.is_global else PRIVATE_ADDRESS


def notification_endpoint(public_url, base_url):
    """The notification and lifecycle URLs, or why there are none.

    ``public_url`` (the public base URL set for an Odoo behind a reverse proxy, and the
    tests) wins as it is; otherwise ``base_url`` (Odoo's ``web.base.url``) is used when
    it is public HTTPS.
    """
    base = (public_url or "").strip()
    if base:
        base = base.rstrip("/").removesuffix(NOTIFICATION_PATH)
    else:
        base = (base_url or "").strip().rstrip("/")
        try:
            parts = urllib.parse.urlsplit(base)
            problem = NOT_HTTPS if parts.scheme != "https" else host_problem(parts.hostname)
        except ValueError:
            problem = UNREADABLE
        if problem:
            return NotificationEndpoint(problem=problem, base_url=base)
    return NotificationEndpoint(
        notification_url=base + NOTIFICATION_PATH,
        lifecycle_url=base + LIFECYCLE_PATH,
        base_url=base,
    )


def subscribable(shared, application_permissions=False):
    """Whether Graph takes a change notification subscription on the mailbox.

    Delegated permissions subscribe only to the signed-in user's own mailbox: the .Shared
    permissions "don't support subscribing to change notifications on items in shared or
    delegated folders"; the application permission Mail.Read is needed for those ("Get
    Outlook messages in a shared or delegated folder",
    https://learn.microsoft.com/graph/outlook-share-messages-folders). This addon uses
    delegated permissions only, so a shared mailbox is polled instead.
    """
    return not shared or application_permissions


def _limit_from(error):
    """The lifetime in minutes Graph says it allows, from a 400 refusal, or None."""
    if error.status != 400:
        return None
    found = _LIMIT.search(str(error.detail or ""))
    return int(found.group(1)) if found else None


def _subscription_of(data, fallback_resource=None):
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise GraphPermanentError(_lt("Microsoft Graph answered without a subscription id."))
    expires = parse_graph_datetime(data.get("expirationDateTime"))
    if expires is None:
        raise GraphPermanentError(_lt("Microsoft Graph answered without a subscription expiry."))
    return Subscription(
        id=data["id"],
        expires_at=expires,
        resource=data.get("resource") or fallback_resource,
        change_type=data.get("changeType") or "created",
        notification_url=data.get("notificationUrl"),
        lifecycle_url=data.get("lifecycleNotificationUrl"),
    )


class SubscriptionClient:
    """Change notification subscriptions through one :class:`~.graph.GraphClient`.

    ``clock()`` returns the current aware datetime (tests pass the sandbox's clock).
    """

    def __init__(self, client, clock=_utcnow):
        self.client = client
        self.clock = clock

    def resource(self, folder="inbox"):
        """The resource of a folder of the client's mailbox."""
        return resource_for(self.client.mailbox, folder)

    def _path(self, subscription_id, suffix=""):
        return f"/subscriptions/{quote_segment(subscription_id)}{suffix}"

    def _expiry(self, minutes):
        return format_graph_datetime(self.clock() + datetime.timedelta(minutes=minutes))

    def _with_lifetime(self, send, minutes):
        """send(expirationDateTime); once more, shorter, if Graph names a smaller limit."""
        try:
            return send(self._expiry(minutes))
        except GraphError as error:
            limit = _limit_from(error)
            if limit is None or limit >= minutes:
                raise
            shorter = max(1, limit - LIMIT_MARGIN_MINUTES)
            return send(self._expiry(shorter))

    # Not an Odoo model's create: nothing to call super() on.
    def create(  # pylint: disable=method-required-super
        self,
        resource,
        notification_url,
        lifecycle_url,
        client_state,
        minutes=DEFAULT_MINUTES,
    ):
        """Subscribe to new messages of ``resource``; Graph validates both URLs first.

        The GraphClient may send it again after a transient failure whose request had in
        fact created a subscription: that one then expires unused, or :meth:`list` finds
        it for :meth:`delete`.
        """
        if not isinstance(client_state, str) or not 0 < len(client_state) <= MAX_CLIENT_STATE:
            raise ValueError(f"clientState must be 1 to {MAX_CLIENT_STATE} characters.")
        body = {
            "changeType": "created",
            "notificationUrl": notification_url,
            "resource": resource,
            "clientState": client_state,
        }
        if lifecycle_url:
            body["lifecycleNotificationUrl"] = lifecycle_url

        def send(expiry):
            response = self.client.request(
                "POST",
                "/subscriptions",
                json={**body, "expirationDateTime": expiry},
                expected=(201,),
            )
            return _subscription_of(self.client.json_of(response), resource)

        return self._with_lifetime(send, minutes)

    def renew(self, subscription_id, minutes=DEFAULT_MINUTES):
        """Push the expiry ``minutes`` from now; this also reauthorizes the subscription."""

        def send(expiry):
            response = self.client.request(
                "PATCH",
                self._path(subscription_id),
                json={"expirationDateTime": expiry},
                expected=(200, 404),
            )
            if response.status_code == 404:
                response.close()
                raise SubscriptionGone(status=404)
            return _subscription_of(self.client.json_of(response))

        return self._with_lifetime(send, minutes)

    def reauthorize(self, subscription_id):
        """Answer a reauthorizationRequired event without changing the expiry."""
        response = self.client.request(
            "POST",
            self._path(subscription_id, "/reauthorize"),
            expected=(200, 202, 204, 404),
        )
        response.close()
        if response.status_code == 404:
            raise SubscriptionGone(status=404)

    def delete(self, subscription_id):
        """True if deleted, False if Graph had already forgotten it."""
        response = self.client.request(
            "DELETE", self._path(subscription_id), expected=(204, 200, 404)
        )
        response.close()
        return response.status_code != 404

    def get(self, subscription_id):
        """The subscription as Graph knows it, or None once it is gone."""
        response = self.client.request("GET", self._path(subscription_id), expected=(200, 404))
        if response.status_code == 404:
            response.close()
            return None
        return _subscription_of(self.client.json_of(response))

    def list(self):
        """The subscriptions this app made for the signed-in user (clientState not shown)."""
        return [_subscription_of(item) for item in self.client.iter_pages("/subscriptions")]


# the webhook's helpers -----------------------------------------------------------------


def new_client_state():
    """A random clientState: 64 URL-safe characters (Graph allows 128)."""
    return secrets.token_urlsafe(48)


def client_state_matches(expected, given):
    """Constant-time comparison; a missing value on either side never matches."""
    if not isinstance(expected, str) or not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _first(value):
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return ""
    return value


def _query_params(query_params):
    if isinstance(query_params, bytes):
        query_params = query_params.decode("latin-1")
    if isinstance(query_params, str):
        return urllib.parse.parse_qs(query_params.lstrip("?"), keep_blank_values=True)
    return query_params if isinstance(query_params, Mapping) else {}


def is_validation_request(query_params):
    """Whether a POST is Graph's validation handshake (it carries validationToken)."""
    return "validationToken" in _query_params(query_params)


def validation_response(query_params):
    """(status, text/plain body) answering Graph's validation handshake.

    ``query_params`` is the request's decoded query (a mapping, values may be lists) or
    the raw query string. The answer is the decoded token itself, as Graph requires;
    an empty, oversized or control-character token, or one with markup (Graph never
    sends any), is refused with 400.
    """
    token = _first(_query_params(query_params).get("validationToken"))
    if not isinstance(token, str) or not token:
        return 400, "Missing validationToken."
    if len(token) > MAX_VALIDATION_TOKEN:
        return 400, "validationToken too long."
    if _CONTROL.search(token) or "<" in token or ">" in token:
        return 400, "Invalid validationToken."
    return 200, token


def _media_type(content_type):
    """(type, charset) of a Content-Type header, lower-cased; charset None when absent."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    if not isinstance(content_type, str):
        return "", None
    kind, *params = content_type.split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


def _text(item, key, required=False):
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise NotificationRejected(400, f"Bad or missing '{key}'.")
    return value


def _notification(item):
    if not isinstance(item, dict):
        raise NotificationRejected(400, "A notification is not an object.")
    subscription_id = _text(item, "subscriptionId", required=True)
    client_state = item.get("clientState")
    if client_state is not None and (
        not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE
    ):
        raise NotificationRejected(400, "Bad 'clientState'.")
    lifecycle_event = _text(item, "lifecycleEvent")
    change_type = resource = message_id = None
    if lifecycle_event is None:
        change_type = _text(item, "changeType", required=True)
        resource = _text(item, "resource", required=True)
        data = item.get("resourceData")
        if data is not None and not isinstance(data, dict):
            raise NotificationRejected(400, "Bad 'resourceData'.")
        message_id = _text(data, "id") if data else None
        if message_id is None:
            found = _MESSAGE_IN_RESOURCE.search(resource)
            message_id = found.group(1) if found else None
    return Notification(
        subscription_id=subscription_id,
        client_state=client_state,
        change_type=change_type,
        resource=resource,
        lifecycle_event=lifecycle_event,
        message_id=message_id,
        tenant_id=_text(item, "tenantId"),
        subscription_expires_at=parse_graph_datetime(item.get("subscriptionExpirationDateTime")),
    )


def parse_notifications(body, content_type, max_bytes=MAX_NOTIFICATION_BYTES):
    """The notifications of a POST from Graph, or :class:`NotificationRejected`.

    413 over ``max_bytes``; 415 unless ``application/json`` in UTF-8; 400 for bytes that
    are not UTF-8, JSON that does not parse, or a shape that is not Graph's
    (``{"value": [{"subscriptionId", "changeType", "resource", ...} | {..., "lifecycleEvent"}]}``).
    The clientState is returned, not checked: see :func:`client_state_matches`.
    """
    body = body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(body) > max_bytes:
        raise NotificationRejected(413, "Notification body too large.")
    kind, charset = _media_type(content_type)
    if kind != "application/json" or charset not in (None, "utf-8", "utf8", "us-ascii"):
        raise NotificationRejected(415, "Notifications are application/json in UTF-8.")
    try:
        text = body.decode("utf-8-sig")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise NotificationRejected(400, "Notification body is not UTF-8.") from None
    except (ValueError, RecursionError):
        raise NotificationRejected(400, "Notification body is not JSON.") from None
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise NotificationRejected(400, "Notification body has no 'value' list.")
    if len(items) > MAX_NOTIFICATIONS_PER_POST:
        raise NotificationRejected(413, "Too many notifications in one POST.")
    return [_notification(item) for item in items]


def needs_renewal(expires_at, now=None, margin=datetime.timedelta(hours=12)):
    """Whether a subscription expiring at ``expires_at`` should be renewed now."""
    now = now or _utcnow()
    return expires_at - now <= margin
