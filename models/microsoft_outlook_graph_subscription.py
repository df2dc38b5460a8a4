"""Graph change notifications on the incoming Outlook servers (docs/notifications.md).

One ``microsoft.outlook.graph.subscription`` per ``fetchmail.server`` of type
``microsoft_graph`` whose notifications can reach Odoo. A notification only moves the
next delta round forward: the controller triggers the fetchmail cron, and every Graph
call about subscriptions (create, renew, reauthorize) runs in this model's cron, never
inside the request that Microsoft is waiting for.
"""

import datetime
import logging

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..services.clock import aware_utc, naive_utc
from ..services.errors import GraphAuthError, GraphError
from ..services.subscriptions import (
    LOCAL_NAME,
    NO_DOMAIN,
    NO_HOST,
    NOT_HTTPS,
    PRIVATE_ADDRESS,
    SubscriptionClient,
    SubscriptionGone,
    client_state_matches,
    needs_renewal,
    new_client_state,
)
from ..services.subscriptions import notification_endpoint as endpoint_for
from ..services.vault import PURPOSE_CLIENT_STATE, VaultError
from .graph_error_text import graph_error_text
from .microsoft_outlook_graph_mixin import GRAPH

_logger = logging.getLogger(__name__)

GATEWAY_CRON = "mail.ir_cron_mail_gateway_action"
SUBSCRIPTION_CRON = "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_subscriptions"
URL_PARAM = "microsoft_outlook_graph.notification_url"
# "Last notification" is written at most this often: a burst must not write per POST.
LAST_NOTIFICATION_EVERY = datetime.timedelta(seconds=60)
# Renew this long before expiry; the cron runs every hour.
RENEWAL_MARGIN = datetime.timedelta(hours=12)


def notification_endpoint(env):
    """The notification and lifecycle URLs of this database, or why there are none
    (:func:`~..services.subscriptions.notification_endpoint`): the system parameter
    ``microsoft_outlook_graph.notification_url`` wins over ``web.base.url``."""
    Config = env["ir.config_parameter"].sudo()
    return endpoint_for(Config.get_param(URL_PARAM), Config.get_param("web.base.url"))


def endpoint_problem_text(env, endpoint):
    """Why Microsoft cannot call ``endpoint``, in the admin's words, or None."""
    if not endpoint.problem:
        return None
    url = endpoint.base_url or "-"
    if endpoint.problem == NOT_HTTPS:
        return env._(
            "Odoo's base URL (%(url)s) is not HTTPS, and Microsoft only calls public "
            "HTTPS addresses.",
            url=url,
        )
    why = {
        NO_HOST: env._("it has no host name"),
        LOCAL_NAME: env._("it names this machine or the local network"),
        NO_DOMAIN: env._("a host name without a domain is not public"),
        PRIVATE_ADDRESS: env._("its address is private or local"),
    }.get(endpoint.problem) or env._("it cannot be read")
    return env._("Microsoft cannot reach Odoo's base URL (%(url)s): %(why)s.", url=url, why=why)


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
    def _receive(self, notifications):
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
            expected = record._client_state()
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
            record._note_notified()
            for item in valid:
                event = item.lifecycle_event
                if event is None or event == "missed":
                    sync = True
                elif event == "subscriptionRemoved":
                    maintain |= record._ask_graph("recreate")
                elif event == "reauthorizationRequired":
                    maintain |= record._ask_graph("reauthorize")
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

    def _client_state(self):
        self.ensure_one()
        sealed = self.sudo().client_state_sealed
        if not sealed:
            return None
        try:
            return self.server_id._microsoft_graph_vault().open(sealed, PURPOSE_CLIENT_STATE)
        except VaultError:
            return None

    def _note_notified(self):
        now = fields.Datetime.now()
        if not self.last_notification_at or self.last_notification_at <= (
            now - LAST_NOTIFICATION_EVERY
        ):
            self.last_notification_at = now

    def _ask_graph(self, action):
        """Note a lifecycle request; True when it is new (a repeat writes nothing)."""
        if self.pending_action in (action, "recreate"):
            return False
        self.pending_action = action
        return True

    # ------------------------------------------------------------------
    # The scheduled action: create, renew, reauthorize, remove
    # ------------------------------------------------------------------

    @api.model
    def _cron_keep_subscriptions(self):
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
        unwanted._unsubscribe()
        if commit:
            self.env["ir.cron"]._commit_progress(len(unwanted), remaining=len(servers))
        for server in servers:
            Subscription._keep(server, endpoint)
            if commit and self.env["ir.cron"]._commit_progress(1) <= 0:
                break

    @api.model
    def _keep(self, server, endpoint):
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
                or not record._client_state()
            ):
                # Graph cannot change a subscription's resource or URL: start over.
                record._delete_quietly(client)
            if not record.subscription_id or record.pending_action == "recreate":
                record = self._subscribe(client, server, record, resource, endpoint)
                sync = True
            elif record.pending_action == "reauthorize" or needs_renewal(
                aware_utc(record.expires_at), margin=RENEWAL_MARGIN
            ):
                try:
                    if record.pending_action == "reauthorize":
                        client.reauthorize(record.subscription_id)
                    # A renewal also reauthorizes; after a reauthorization it costs
                    # one more call and spares the next run's.
                    renewed = client.renew(record.subscription_id)
                    record.write(
                        {
                            "expires_at": naive_utc(renewed.expires_at),
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
                    record = self._subscribe(client, server, record, resource, endpoint)
                    sync = True
        except (GraphError, UserError, ValueError) as exc:
            self._record_failure(server, record, exc)
            return record
        if sync:
            # Whatever arrived while there was no subscription.
            trigger_once(self.env, GATEWAY_CRON)
        return record

    @api.model
    def _subscribe(self, client, server, record, resource, endpoint):
        state = new_client_state()
        created = client.create(resource, endpoint.notification_url, endpoint.lifecycle_url, state)
        values = {
            "server_id": server.id,
            "subscription_id": created.id,
            "resource": resource,
            "notification_url": endpoint.notification_url,
            "expires_at": naive_utc(created.expires_at),
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
    def _record_failure(self, server, record, error):
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

    def _delete_quietly(self, client=None):
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

    def _unsubscribe(self):
        """Delete at Microsoft (best effort) and here."""
        records = self.sudo()
        for record in records.filtered("subscription_id"):
            record._delete_quietly()
        records.unlink()

    @api.model
    def _servers_changed(self, servers):
        """After a server's write: drop the subscriptions it no longer qualifies for at
        once, and ask the cron for the ones it now needs."""
        endpoint = notification_endpoint(self.env)
        Subscription = self.sudo()
        existing = Subscription.search([("server_id", "in", servers.ids)])
        wanted = servers.filtered(
            lambda server: server._microsoft_graph_wants_notifications(endpoint)
        )
        unwanted = existing.filtered(lambda record: record.server_id not in wanted)
        unwanted._unsubscribe()
        live = (existing - unwanted).filtered("subscription_id")
        if wanted - live.server_id or live.filtered(
            lambda record: record.resource != record.server_id._microsoft_graph_resource()
        ):
            trigger_once(self.env, SUBSCRIPTION_CRON)
