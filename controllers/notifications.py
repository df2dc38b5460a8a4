import logging

from odoo import api, http
from odoo.http import request

from ..services.subscriptions import (
    LIFECYCLE_PATH,
    MAX_NOTIFICATION_BYTES,
    NOTIFICATION_PATH,
    NotificationRejected,
    is_validation_request,
    parse_notifications,
    validation_response,
)

_logger = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"


class MicrosoftGraphNotificationController(http.Controller):
    """The two public URLs Microsoft Graph POSTs to (docs/notifications.md).

    No session, no CSRF token and no login: the only credential is each
    subscription's clientState. The handshake needs no database row at all, and a
    notification costs a lookup and at most one cron trigger: Graph waits 10 s for the
    first and 3 s for the second. Every Graph call happens later, in a cron.
    """

    @http.route(
        [NOTIFICATION_PATH, LIFECYCLE_PATH],
        type="http",
        auth="none",
        methods=["POST"],
        csrf=False,
        save_session=False,
        readonly=lambda _controller, _rule, _args: is_validation_request(request.httprequest.args),
    )
    def microsoft_graph_notification(self, **_params):
        httprequest = request.httprequest
        if is_validation_request(httprequest.args):
            status, text = validation_response(httprequest.args)
            return _answer(status, text)
        try:
            body = _read_body(httprequest, MAX_NOTIFICATION_BYTES)
            notifications = parse_notifications(body, httprequest.headers.get("Content-Type"))
        except NotificationRejected as exc:
            _logger.info(
                "[Graph API] notification POST to %s refused (%s): %s",
                httprequest.path,
                exc.status,
                exc.reason,
            )
            return _answer(exc.status)
        if not request.db:
            _logger.warning(
                "[Graph API] notification POST to %s: no database chosen for host %s "
                "(set dbfilter); ignored",
                httprequest.path,
                httprequest.host,
            )
            return _answer(202)
        env = request.env(user=api.SUPERUSER_ID)
        env["microsoft.outlook.graph.subscription"]._receive(notifications)
        return _answer(202)


def _read_body(httprequest, limit):
    """The body, refused (413) past ``limit`` before reading it when its length is
    announced, and never read beyond ``limit + 1`` bytes when it is not."""
    length = httprequest.content_length
    if length is not None:
        if length > limit:
            raise NotificationRejected(413, "Notification body too large.")
        return httprequest.get_data(cache=True)
    # Chunked: werkzeug would read it all; read at most one byte past the limit.
    wrapped = getattr(httprequest, "_HTTPRequest__wrapped", None)
    if wrapped is None:
        return httprequest.get_data(cache=True)
    return wrapped.stream.read(limit + 1)


def _answer(status, text=""):
    return request.make_response(text, headers=[("Content-Type", TEXT)], status=status)
