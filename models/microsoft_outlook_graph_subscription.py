"""Graph change notifications on the incoming Outlook servers (docs/notifications.md).

One ``microsoft.outlook.graph.subscription`` per ``fetchmail.server`` of type
``microsoft_graph`` whose notifications can reach Odoo. A notification only moves the
next delta round forward: the controller triggers the fetchmail cron, and every Graph
call about subscriptions (create, renew, reauthorize) runs in this model's cron, never
inside the request that Microsoft is waiting for.
"""

import datetime
import ipaddress
import logging
import urllib.parse
from dataclasses import dataclass

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..services.errors import GraphAuthError, GraphError
from ..services.subscriptions import (
    SubscriptionClient,
    SubscriptionGone,
    client_state_matches,
    needs_renewal,
    new_client_state,
    resource_for,
    subscribable,
)
from ..services.vault import PURPOSE_CLIENT_STATE, VaultError
from .graph_error_text import graph_error_text
from .microsoft_outlook_graph_mixin import GRAPH

_logger = logging.getLogger(__name__)

GATEWAY_CRON = "mail.ir_cron_mail_gateway_action"
SUBSCRIPTION_CRON = "microsoft_outlook_graph.ir_cron_microsoft_graph_subscriptions"
# Fetches the Graph servers Microsoft does not notify (shared mailboxes, no public URL),
# every minute, apart from Odoo's 5-minute fetchmail cron.
POLL_CRON = "microsoft_outlook_graph.ir_cron_microsoft_graph_poll"
INTERVAL_SECONDS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800, "months": 2592000}
NOTIFICATION_PATH = "/microsoft_outlook_graph/notifications"
LIFECYCLE_PATH = "/microsoft_outlook_graph/lifecycle"
URL_PARAM = "microsoft_outlook_graph.notification_url"
# "Last notification" is written at most this often: a burst must not write per POST.
LAST_NOTIFICATION_EVERY = datetime.timedelta(seconds=60)
# Renew this long before expiry; the cron runs every hour.
RENEWAL_MARGIN = datetime.timedelta(hours=12)
# Server fields whose change can make a server gain or lose its subscription.
NOTIFY_KEYS = frozenset(
    (
        "active",
        "state",
        "server_type",
        "microsoft_graph_use_notifications",
        "user",
        "microsoft_graph_folder",
        "microsoft_graph_mailbox_kind",
    )
)


@dataclass(frozen=True)
class NotificationEndpoint:
    """Where Microsoft would call Odoo, or why it cannot (``problem``)."""

    notification_url: str | None = None
    lifecycle_url: str | None = None
    problem: str | None = None


def _host_problem(env, host):
    """Why Microsoft cannot reach ``host``, or None."""
    host = (host or "").strip("[]").lower()
    if not host:
        return env._("it has no host name")
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return env._("it names this machine or the local network")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if "." not in host:
            return env._("a host name without a domain is not public")
        return None
    if not address.is_global:
        return env._("its address is private or local")
    return None


def notification_endpoint(env):
    """The notification and lifecycle URLs of this database, or why there are none.

    The system parameter ``microsoft_outlook_graph.notification_url`` (the public base
    URL, for an Odoo behind a reverse proxy, and the tests) wins; otherwise
    ``web.base.url`` is used when it is public HTTPS.
    """
    Config = env["ir.config_parameter"].sudo()
    base = (Config.get_param(URL_PARAM) or "").strip()
    if base:
        base = base.rstrip("/")
        if base.endswith(NOTIFICATION_PATH):
            base = base[: -len(NOTIFICATION_PATH)]
    else:
        base = (Config.get_param("web.base.url") or "").strip().rstrip("/")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme != "https":
            return NotificationEndpoint(
                problem=env._(
                    "Odoo's base URL (%(url)s) is not HTTPS, and Microsoft only calls public "
                    "HTTPS addresses.",
                    url=base or "-",
                )
            )
        try:
            problem = _host_problem(env, parts.hostname)
        except ValueError:
            problem = env._("it cannot be read")
        if problem:
            return NotificationEndpoint(
                problem=env._(
                    "Microsoft cannot reach Odoo's base URL (%(url)s): %(why)s.",
                    url=base,
                    why=problem,
                )
            )
    return NotificationEndpoint(
        notification_url=base + NOTIFICATION_PATH, lifecycle_url=base + LIFECYCLE_PATH
    )


def trigger_once(env, xmlid):
    """Trigger a cron "now" unless a trigger for now or earlier is already waiting.

    A burst of notifications then leaves one ``ir.cron.trigger`` row, not one each.
    """
    cron = env.ref(xmlid, raise_if_not_found=False)
    if not cron:
        return False
    cron = cron.sudo()
    waiting = (
        env["ir.cron.trigger"]
        .sudo()
        .search_count(
            [("cron_id", "=", cron.id), ("call_at", "<=", fields.Datetime.now())], limit=1
        )
    )
    if waiting:
        return False
    cron._trigger()
    return True


def _naive(moment):
    return moment.astimezone(datetime.UTC).replace(tzinfo=None, microsecond=0)


def _aware(moment):
    return moment.replace(tzinfo=datetime.UTC)


class MicrosoftOutlookGraphSubscription(models.Model):
    _name = "microsoft.outlook.graph.subscription"
    _description = "Outlook Change Notification Subscription"
    _order = "id"
    _rec_name = "server_id"

    server_id = fields.Many2one(
        "fetchmail.server", "Incoming Server", required=True, index=True, ondelete="cascade"
    )
    subscription_id = fields.Char("Subscription Id", index=True, readonly=True, copy=False)
    resource = fields.Char(readonly=True)
    notification_url = fields.Char("Notification URL", readonly=True)
    expires_at = fields.Datetime("Expires", readonly=True)
    client_state_sealed = fields.Char(groups="base.group_system", copy=False)
    last_notification_at = fields.Datetime("Last Notification", readonly=True)
    last_error = fields.Text(readonly=True)
    pending_action = fields.Selection(
        [("reauthorize", "Reauthorize"), ("recreate", "Create again")],
        readonly=True,
        help="Asked for by a lifecycle event; done by the next run of the scheduled action.",
    )

    _server_unique = models.Constraint(
        "UNIQUE(server_id)", "A mail server has one change notification subscription."
    )

    # ------------------------------------------------------------------
    # Receiving (called by the controller, as superuser)
    # ------------------------------------------------------------------

    @api.model
    def _microsoft_graph_receive(self, notifications):
        """Act on parsed notifications: only what fits in Graph's 3 seconds.

        Unknown subscriptions and wrong clientStates are dropped (the caller answers
        202 anyway). Valid changes and ``missed`` trigger the fetchmail cron once;
        ``reauthorizationRequired`` and ``subscriptionRemoved`` are noted on the record
        for this model's cron, which is triggered once.
        """
        by_id = {}
        for notification in notifications:
            by_id.setdefault(notification.subscription_id, []).append(notification)
        records = self.sudo().search([("subscription_id", "in", list(by_id))])
        sync = maintain = False
        for record in records:
            items = by_id[record.subscription_id]
            expected = record._microsoft_graph_client_state()
            valid = [item for item in items if client_state_matches(expected, item.client_state)]
            if len(valid) < len(items):
                _logger.warning(
                    "[Graph API] %d notification(s) for subscription %s of fetchmail.server "
                    "#%s dropped: wrong clientState (possible forgery)",
                    len(items) - len(valid),
                    record.subscription_id,
                    record.server_id.id,
                )
            if not valid:
                continue
            record._microsoft_graph_note_notified()
            for item in valid:
                event = item.lifecycle_event
                if event is None or event == "missed":
                    sync = True
                elif event == "subscriptionRemoved":
                    maintain |= record._microsoft_graph_ask("recreate")
                elif event == "reauthorizationRequired":
                    maintain |= record._microsoft_graph_ask("reauthorize")
            events = sorted({item.lifecycle_event for item in valid} - {None})
            if events:
                _logger.info(
                    "[Graph API] subscription %s of fetchmail.server #%s: lifecycle %s",
                    record.subscription_id,
                    record.server_id.id,
                    ", ".join(events),
                )
        unknown = len(by_id) - len(records)
        if unknown:
            _logger.debug(
                "[Graph API] notifications for %d unknown subscription(s) ignored", unknown
            )
        if sync:
            trigger_once(self.env, GATEWAY_CRON)
        if maintain:
            trigger_once(self.env, SUBSCRIPTION_CRON)
        return sync

    def _microsoft_graph_client_state(self):
        self.ensure_one()
        sealed = self.sudo().client_state_sealed
        if not sealed:
            return None
        try:
            return self.server_id._microsoft_graph_vault().open(sealed, PURPOSE_CLIENT_STATE)
        except VaultError:
            return None

    def _microsoft_graph_note_notified(self):
        now = fields.Datetime.now()
        if not self.last_notification_at or self.last_notification_at <= (
            now - LAST_NOTIFICATION_EVERY
        ):
            self.last_notification_at = now

    def _microsoft_graph_ask(self, action):
        """Note a lifecycle request; True when it is new (a repeat writes nothing)."""
        if self.pending_action in (action, "recreate"):
            return False
        self.pending_action = action
        return True

    # ------------------------------------------------------------------
    # The scheduled action: create, renew, reauthorize, remove
    # ------------------------------------------------------------------

    @api.model
    def _cron_microsoft_graph_subscriptions(self):
        """Give each qualifying server a live subscription and drop the others.

        In the cron each server's work is committed on its own; called elsewhere
        (tests, the server form) nothing is committed.
        """
        commit = bool(self.env.context.get("cron_id"))
        endpoint = notification_endpoint(self.env)
        Subscription = self.sudo()
        servers = (
            self.env["fetchmail.server"]
            .sudo()
            .search([("server_type", "=", GRAPH)])
            .filtered(lambda server: server._microsoft_graph_wants_notifications(endpoint))
        )
        unwanted = Subscription.search([("server_id", "not in", servers.ids)])
        unwanted._microsoft_graph_remove()
        if commit:
            self.env["ir.cron"]._commit_progress(len(unwanted), remaining=len(servers))
        for server in servers:
            Subscription._microsoft_graph_keep(server, endpoint)
            if commit and self.env["ir.cron"]._commit_progress(1) <= 0:
                break

    @api.model
    def _microsoft_graph_keep(self, server, endpoint):
        """Create, renew or reauthorize the subscription of one server, as needed."""
        record = self.search([("server_id", "=", server.id)], limit=1)
        sync = False
        try:
            client = SubscriptionClient(server._microsoft_graph_client())
            resource = server._microsoft_graph_resource()
            if resource is None:
                raise UserError(
                    self.env._(
                        "Change notifications need a well-known folder name or a folder id "
                        "as the Mail Folder, not “%s”.",
                        server.microsoft_graph_folder,
                    )
                )
            if record.subscription_id and (
                record.resource != resource
                or record.notification_url != endpoint.notification_url
                or not record._microsoft_graph_client_state()
            ):
                # Graph cannot change a subscription's resource or URL: start over.
                record._microsoft_graph_delete_quietly(client)
            if not record.subscription_id or record.pending_action == "recreate":
                record = self._microsoft_graph_create(client, server, record, resource, endpoint)
                sync = True
            elif record.pending_action == "reauthorize" or needs_renewal(
                _aware(record.expires_at), margin=RENEWAL_MARGIN
            ):
                try:
                    if record.pending_action == "reauthorize":
                        client.reauthorize(record.subscription_id)
                    # A renewal also reauthorizes; after a reauthorization it costs
                    # one more call and spares the next run's.
                    renewed = client.renew(record.subscription_id)
                    record.write(
                        {
                            "expires_at": _naive(renewed.expires_at),
                            "pending_action": False,
                            "last_error": False,
                        }
                    )
                except SubscriptionGone:
                    _logger.info(
                        "[Graph API] fetchmail.server #%s: subscription %s is gone at "
                        "Microsoft; creating another",
                        server.id,
                        record.subscription_id,
                    )
                    record = self._microsoft_graph_create(
                        client, server, record, resource, endpoint
                    )
                    sync = True
        except (GraphError, UserError, ValueError) as exc:
            self._microsoft_graph_failed(server, record, exc)
            return record
        if sync:
            # Whatever arrived while there was no subscription.
            trigger_once(self.env, GATEWAY_CRON)
        return record

    @api.model
    def _microsoft_graph_create(self, client, server, record, resource, endpoint):
        state = new_client_state()
        created = client.create(resource, endpoint.notification_url, endpoint.lifecycle_url, state)
        values = {
            "server_id": server.id,
            "subscription_id": created.id,
            "resource": resource,
            "notification_url": endpoint.notification_url,
            "expires_at": _naive(created.expires_at),
            "client_state_sealed": server._microsoft_graph_vault().seal(
                state, PURPOSE_CLIENT_STATE
            ),
            "pending_action": False,
            "last_error": False,
        }
        if record:
            record.write(values)
        else:
            record = self.create(values)
        _logger.info(
            "[Graph API] fetchmail.server #%s: change notifications on %s until %s "
            "(subscription %s)",
            server.id,
            resource,
            values["expires_at"],
            created.id,
        )
        return record

    @api.model
    def _microsoft_graph_failed(self, server, record, error):
        text = (
            graph_error_text(self.env, error)
            if isinstance(error, GraphError)
            else str(error.args[0])
        )
        _logger.warning(
            "[Graph API] fetchmail.server #%s: change notifications not set up, polling "
            "meanwhile: %s",
            server.id,
            error.reference if isinstance(error, GraphError) and error.reference else text,
        )
        if isinstance(error, GraphAuthError):
            server._microsoft_graph_record_error(error)
        values = {"last_error": text}
        if record:
            record.write(values)
        else:
            self.create({"server_id": server.id, **values})

    def _microsoft_graph_delete_quietly(self, client=None):
        """Delete at Microsoft, best effort: a failure is logged, never raised.

        Disconnect, archive, deletion and uninstall must go through even when
        Microsoft, the token or the settings are gone; a subscription left behind
        expires on its own within three days.
        """
        self.ensure_one()
        subscription_id = self.subscription_id
        try:
            client = client or SubscriptionClient(self.server_id._microsoft_graph_client())
            client.delete(subscription_id)
        except Exception as exc:  # best effort, see the docstring
            reason = exc.reference or exc.user_message if isinstance(exc, GraphError) else exc
            _logger.warning(
                "[Graph API] fetchmail.server #%s: subscription %s not deleted at Microsoft "
                "(it expires on its own): %s",
                self.server_id.id,
                subscription_id,
                reason,
            )
        self.write({"subscription_id": False, "expires_at": False, "client_state_sealed": False})

    def _microsoft_graph_remove(self):
        """Delete at Microsoft (best effort) and here."""
        records = self.sudo()
        for record in records.filtered("subscription_id"):
            record._microsoft_graph_delete_quietly()
        records.unlink()

    @api.model
    def _microsoft_graph_servers_changed(self, servers):
        """After a server's write: drop the subscriptions it no longer qualifies for at
        once, and ask the cron for the ones it now needs."""
        endpoint = notification_endpoint(self.env)
        Subscription = self.sudo()
        existing = Subscription.search([("server_id", "in", servers.ids)])
        wanted = servers.filtered(
            lambda server: server._microsoft_graph_wants_notifications(endpoint)
        )
        unwanted = existing.filtered(lambda record: record.server_id not in wanted)
        unwanted._microsoft_graph_remove()
        live = (existing - unwanted).filtered("subscription_id")
        if wanted - live.server_id or live.filtered(
            lambda record: record.resource != record.server_id._microsoft_graph_resource()
        ):
            trigger_once(self.env, SUBSCRIPTION_CRON)


class FetchmailServer(models.Model):
    _inherit = "fetchmail.server"

    microsoft_graph_use_notifications = fields.Boolean(
        "Use Change Notifications",
        default=True,
        help="Microsoft tells Odoo at once when mail arrives, so it is imported within "
        "seconds. Odoo's address must be public HTTPS; otherwise, or when this is off, "
        "the scheduled action polls the mailbox.",
    )
    microsoft_graph_subscription_ids = fields.One2many(
        "microsoft.outlook.graph.subscription", "server_id", readonly=True
    )
    microsoft_graph_notification_state = fields.Selection(
        [
            ("active", "Notified by Microsoft"),
            ("pending", "Being set up"),
            ("polling", "Polling"),
            ("error", "Polling (subscription failed)"),
        ],
        string="New Mail Detection",
        compute="_compute_microsoft_graph_notification",
    )
    microsoft_graph_notification_info = fields.Char(
        "New Mail Detection Details", compute="_compute_microsoft_graph_notification"
    )
    microsoft_graph_notification_expires_at = fields.Datetime(
        "Subscription Expires", compute="_compute_microsoft_graph_notification"
    )
    microsoft_graph_last_notification_at = fields.Datetime(
        "Last Notification", compute="_compute_microsoft_graph_notification"
    )
    microsoft_graph_shared_polled = fields.Boolean(
        "Polled (Shared Mailbox)",
        compute="_compute_microsoft_graph_poll",
        help="Microsoft sends change notifications for shared mailboxes only to apps with "
        "application permissions; this addon uses delegated ones, so the mailbox is polled.",
    )
    microsoft_graph_poll_seconds = fields.Integer(
        "Checked Every (Seconds)", compute="_compute_microsoft_graph_poll"
    )

    @api.depends("server_type", "microsoft_graph_mailbox_kind")
    def _compute_microsoft_graph_poll(self):
        seconds = self._microsoft_graph_poll_interval()
        for server in self:
            server.microsoft_graph_shared_polled = server.server_type == GRAPH and not subscribable(
                shared=server.microsoft_graph_mailbox_kind == "shared"
            )
            server.microsoft_graph_poll_seconds = seconds

    @api.model
    def _microsoft_graph_poll_interval(self):
        """Seconds between two looks at a mailbox Microsoft does not notify: the poll cron's
        interval, or the fetchmail cron's when the poll cron is off."""
        for xmlid in (POLL_CRON, GATEWAY_CRON):
            cron = self.env.ref(xmlid, raise_if_not_found=False)
            cron = cron.sudo() if cron else cron
            if cron and cron.active:
                return cron.interval_number * INTERVAL_SECONDS.get(cron.interval_type, 60)
        return 0

    @api.model
    def _cron_microsoft_graph_poll(self):
        """Fetch the Graph servers that have no live subscription, on a short schedule.

        Microsoft notifies only the servers with a subscription; shared mailboxes never have
        one with delegated permissions, nor does any server when Odoo is not reachable over
        public HTTPS. An idle delta round costs one Graph request per server.
        """
        servers = self.sudo().search([("server_type", "=", GRAPH), ("state", "=", "done")])
        notified = (
            self.env["microsoft.outlook.graph.subscription"]
            .sudo()
            .search([("server_id", "in", servers.ids), ("subscription_id", "!=", False)])
            .server_id
        )
        polled = servers - notified
        if polled:
            polled._microsoft_graph_fetch_servers()

    @api.depends(
        "microsoft_graph_use_notifications",
        "microsoft_graph_mailbox_kind",
        "active",
        "state",
        "microsoft_graph_subscription_ids.subscription_id",
        "microsoft_graph_subscription_ids.last_error",
    )
    def _compute_microsoft_graph_notification(self):
        endpoint = notification_endpoint(self.env)
        for server in self:
            record = server.sudo().microsoft_graph_subscription_ids[:1]
            server.microsoft_graph_notification_expires_at = record.expires_at
            server.microsoft_graph_last_notification_at = record.last_notification_at
            state, info = server._microsoft_graph_notification_summary(endpoint, record)
            server.microsoft_graph_notification_state = state
            server.microsoft_graph_notification_info = info

    def _microsoft_graph_notification_summary(self, endpoint, record):
        if not subscribable(shared=self.microsoft_graph_mailbox_kind == "shared"):
            return "polling", self.env._(
                "Microsoft sends change notifications for shared mailboxes only to apps with "
                "application permissions: this mailbox is checked every %(seconds)s seconds.",
                seconds=self._microsoft_graph_poll_interval(),
            )
        if not self.microsoft_graph_use_notifications:
            return "polling", self.env._(
                "Change notifications are off: the scheduled action polls the mailbox."
            )
        if endpoint.problem:
            return "polling", self.env._(
                "Polling is used: %(why)s Set web.base.url to Odoo's public https address, "
                "or the system parameter %(param)s to the public base URL of a reverse proxy.",
                why=endpoint.problem,
                param=URL_PARAM,
            )
        if record.subscription_id:
            return "active", self.env._(
                "Microsoft notifies Odoo of new mail at %(url)s.",
                url=record.notification_url,
            )
        if record.last_error:
            return "error", self.env._(
                "Polling is used: the subscription failed (%(error)s). The scheduled action "
                "tries again every hour.",
                error=record.last_error,
            )
        if not (self.active and self.state == "done" and self.microsoft_graph_status == "valid"):
            return "polling", self.env._(
                "Change notifications start once the server is connected and confirmed."
            )
        return "pending", self.env._("The scheduled action subscribes to new mail within moments.")

    def _microsoft_graph_wants_notifications(self, endpoint):
        self.ensure_one()
        return bool(
            endpoint.notification_url
            and self.server_type == GRAPH
            and self.active
            and self.state == "done"
            and self.microsoft_graph_use_notifications
            and subscribable(shared=self.microsoft_graph_mailbox_kind == "shared")
            and self.sudo().microsoft_graph_tokens_sealed
            and not self.microsoft_graph_needs_reconnect
        )

    def _microsoft_graph_resource(self):
        """The subscription resource of the server's folder (as ``_microsoft_graph_client``
        names the mailbox), or None for a folder name Graph would refuse."""
        self.ensure_one()
        shared = self.microsoft_graph_mailbox_kind == "shared"
        try:
            return resource_for(
                self._microsoft_graph_mailbox_address() if shared else None,
                self.microsoft_graph_folder or "inbox",
            )
        except ValueError:
            return None

    def write(self, vals):
        result = super().write(vals)
        if NOTIFY_KEYS.intersection(vals):
            graph = self.filtered(lambda server: server.server_type == GRAPH) | self.filtered(
                "microsoft_graph_subscription_ids"
            )
            if graph:
                self.env["microsoft.outlook.graph.subscription"]._microsoft_graph_servers_changed(
                    graph
                )
        return result

    def unlink(self):
        self.env["microsoft.outlook.graph.subscription"].sudo().search(
            [("server_id", "in", self.ids)]
        )._microsoft_graph_remove()
        return super().unlink()

    def _microsoft_graph_wipe(self):
        """Disconnect: the subscription goes first, while the tokens still work."""
        self.env["microsoft.outlook.graph.subscription"].sudo().search(
            [("server_id", "in", self.ids)]
        )._microsoft_graph_remove()
        return super()._microsoft_graph_wipe()

    def _microsoft_graph_finish_connect(self, flow_sealed, auth_response):
        result = super()._microsoft_graph_finish_connect(flow_sealed, auth_response)
        if self._microsoft_graph_wants_notifications(notification_endpoint(self.env)):
            trigger_once(self.env, SUBSCRIPTION_CRON)
        return result
