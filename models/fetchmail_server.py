import datetime
import logging
import time

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import exception_to_unicode

from odoo.addons.mail.models.fetchmail import MAIL_SERVER_DEACTIVATE_TIME, MAIL_SERVER_DOMAIN

from ..services.errors import GraphAuthError, GraphError
from ..services.subscriptions import resource_for, subscribable
from ..services.sync import DeltaSync
from .graph_error_text import graph_error_sentence, graph_error_text
from .graph_import_run import GraphImportRun, write_back
from .mail_thread import GRAPH_IMPORT_SOURCE, GraphImportSource
from .microsoft_outlook_graph_mixin import GRAPH
from .microsoft_outlook_graph_subscription import (
    GATEWAY_CRON,
    SUBSCRIPTION_CRON,
    URL_PARAM,
    endpoint_problem_text,
    notification_endpoint,
    trigger_once,
)

_logger = logging.getLogger(__name__)

# Fetches the Graph servers Microsoft does not notify (shared mailboxes, no public URL),
# every minute, apart from Odoo's 5-minute fetchmail cron.
POLL_CRON = "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_poll"
INTERVAL_SECONDS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800, "months": 2592000}
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
# Fields whose change makes the stored delta link name another folder or mailbox.
SYNC_KEYS = ("user", "microsoft_graph_folder", "microsoft_graph_mailbox_kind")
# A server's share of a cron call is never shorter than this: a delta page and its
# commit fit in it, so a call over many mailboxes still moves each of them forward.
SLICE_FLOOR_SECONDS = 5
# First key of the advisory lock that keeps two workers off one server's import.
ADVISORY_LOCK_CLASS = 7_262_019


class MicrosoftGraphMailbox:
    """What ``_connect__`` returns for a Graph server: the delta sync of its folder.

    Odoo's IMAP loop wants a count of unread messages up front and commits message by
    message; a delta query knows neither its backlog nor a message it can leave unread,
    and its checkpoint must be committed with a whole page. The Graph servers therefore
    run their own page loop on this object (``GraphImportRun``, graph_import_run.py).
    """

    def __init__(self, client, folder, page_size):
        self.client = client
        self.sync = DeltaSync(client, folder=folder or "inbox", page_size=page_size)

    def disconnect(self):
        self.sync.close()
        self.client.session.close()


class FetchmailServer(models.Model):
    _name = "fetchmail.server"
    _inherit = ["fetchmail.server", "microsoft.outlook.graph.mixin"]

    _microsoft_graph_direction = "incoming"
    # Messages per delta page: one page of MIME is held in memory at a time.
    _microsoft_graph_page_size = 50

    server_type = fields.Selection(
        selection_add=[(GRAPH, "Outlook (Microsoft Graph)")],
        ondelete={GRAPH: "set default"},
    )
    microsoft_graph_folder = fields.Char(
        "Mail Folder",
        default="inbox",
        help="The folder to import from: a well-known name (inbox, archive, ...) or a folder id.",
    )
    microsoft_graph_since = fields.Datetime(
        "Import Mail Received Since",
        help="Left empty, the first run imports only mail that arrives after the mailbox is "
        "connected. Set, it also imports the mail of the folder received since this date.",
    )
    microsoft_graph_mark_read = fields.Boolean(
        "Mark as Read in Outlook",
        default=True,
        help="Mark each imported message as read in the mailbox.",
    )
    microsoft_graph_move_folder = fields.Char(
        "Move to Folder",
        help="After import, move each message to this folder: a well-known name "
        "(archive, deleteditems, ...), the name of a top-level folder, or a folder id. "
        "Empty: messages stay where they are.",
    )
    microsoft_graph_max_messages = fields.Integer(
        "Messages per Run",
        default=500,
        help="A run stops after this many messages; the rest follows at once in new runs.",
    )
    microsoft_graph_max_seconds = fields.Integer(
        "Seconds per Run",
        default=60,
        help="A run starts no new page of messages after this many seconds.",
    )
    microsoft_graph_max_size = fields.Integer(
        "Maximum Message Size (MB)",
        default=35,
        help="Larger messages are kept in the failed messages instead of being imported; "
        "Retry imports them anyway. 0: no limit.",
    )
    microsoft_graph_delta_link = fields.Char(
        "Synchronisation Position",
        copy=False,
        readonly=True,
        help="Microsoft Graph's delta link: where the next run starts.",
    )
    microsoft_graph_sync_start = fields.Datetime("Synchronised From", copy=False, readonly=True)
    microsoft_graph_latest_received = fields.Datetime(
        "Latest Message Received", copy=False, readonly=True
    )
    microsoft_graph_recent_ids = fields.Json(copy=False, readonly=True)
    microsoft_graph_last_success = fields.Datetime("Last Success", copy=False, readonly=True)
    microsoft_graph_imported_count = fields.Integer("Messages Imported", copy=False, readonly=True)
    microsoft_graph_pending = fields.Boolean(
        "More Mail Waiting",
        copy=False,
        readonly=True,
        help="The last run stopped at its budget; the next one is already scheduled.",
    )
    microsoft_graph_throttled_until = fields.Datetime(
        "Throttled Until",
        copy=False,
        readonly=True,
        help="Microsoft asked Odoo to wait (Retry-After), or its requests kept failing: the "
        "import skips the mailbox until then, and runs again at that time.",
    )
    microsoft_graph_failed_message_ids = fields.One2many(
        "microsoft.outlook.graph.failed.message", "server_id", string="Kept Messages"
    )
    microsoft_graph_failed_count = fields.Integer(
        "Failed Messages", compute="_compute_microsoft_graph_failed_count"
    )
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

    @api.depends("microsoft_graph_failed_message_ids.state")
    def _compute_microsoft_graph_failed_count(self):
        counts = dict(
            self.env["microsoft.outlook.graph.failed.message"]._read_group(
                [("server_id", "in", self.ids), ("state", "=", "failed")],
                ["server_id"],
                ["__count"],
            )
        )
        for server in self:
            server.microsoft_graph_failed_count = counts.get(server._origin, 0)

    @api.depends("server_type", "microsoft_graph_mailbox_kind")
    def _compute_microsoft_graph_poll(self):
        seconds = self._microsoft_graph_poll_interval()
        for server in self:
            server.microsoft_graph_shared_polled = server.server_type == GRAPH and not subscribable(
                shared=server.microsoft_graph_mailbox_kind == "shared"
            )
            server.microsoft_graph_poll_seconds = seconds

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

    def _microsoft_graph_switch_values(self):
        return {"server_type": GRAPH, "password": False}

    def _compute_server_type_info(self):
        graph_servers = self.filtered(lambda server: server.server_type == GRAPH)
        graph_servers.server_type_info = self.env._(
            "Mail is read through Microsoft Graph with the Outlook account you connect. "
            "Enter the Mailbox Address below (personal or shared), save, then connect."
        )
        return super(FetchmailServer, self - graph_servers)._compute_server_type_info()

    @api.constrains("server_type", "user")
    def _check_microsoft_graph_server(self):
        for server in self.filtered(lambda server: server.server_type == GRAPH):
            if not server._microsoft_graph_mailbox_address():
                raise UserError(
                    self.env._(
                        "Enter the Outlook mailbox address as the username of “%s”.", server.name
                    )
                )

    @api.onchange("server_type")
    def onchange_server_type(self):
        if self.server_type == GRAPH:
            self.server = False
            self.port = 0
            self.is_ssl = True
            self.password = False
            return None
        return super().onchange_server_type()

    def write(self, vals):
        # A delta link belongs to one folder of one mailbox and to its first call's
        # filter: when they change, the next run starts a new synchronisation.
        restart = self.browse()
        if any(key in vals for key in (*SYNC_KEYS, "microsoft_graph_since")):
            new = self.new(vals)
            restart = self.filtered(
                lambda server: server.microsoft_graph_delta_link
                and any(
                    key in vals and server[key] != new[key]
                    for key in (*SYNC_KEYS, "microsoft_graph_since")
                )
            )
        result = super().write(vals)
        if restart:
            super(FetchmailServer, restart).write(
                {
                    "microsoft_graph_delta_link": False,
                    "microsoft_graph_sync_start": False,
                    "microsoft_graph_pending": False,
                }
            )
        if NOTIFY_KEYS.intersection(vals):
            graph = self.filtered(lambda server: server.server_type == GRAPH) | self.filtered(
                "microsoft_graph_subscription_ids"
            )
            if graph:
                self.env["microsoft.outlook.graph.subscription"]._servers_changed(graph)
        return result

    def unlink(self):
        self._microsoft_graph_subscriptions()._unsubscribe()
        return super().unlink()

    def _microsoft_graph_wipe(self):
        """Disconnect: the subscription goes first, while the tokens still work."""
        self._microsoft_graph_subscriptions()._unsubscribe()
        return super()._microsoft_graph_wipe()

    def _microsoft_graph_subscriptions(self):
        return (
            self.env["microsoft.outlook.graph.subscription"]
            .sudo()
            .search([("server_id", "in", self.ids)])
        )

    def button_confirm_login(self):
        graph_servers = self.filtered(lambda server: server.server_type == GRAPH)
        for server in graph_servers:
            checks = server.sudo()._microsoft_graph_test()
            server.sudo().write({"state": "done"})
            if len(self) == 1:
                return server._microsoft_graph_test_action(
                    checks, next={"type": "ir.actions.client", "tag": "soft_reload"}
                )
        others = self - graph_servers
        if others:
            return super(FetchmailServer, others).button_confirm_login()
        return True

    def _microsoft_graph_finish_connect(self, flow_sealed, auth_response):
        """Once connected, take the "from now" position, unless a start date is set, and
        ask for change notifications when Microsoft can send them."""
        result = super()._microsoft_graph_finish_connect(flow_sealed, auth_response)
        if (
            self.server_type == GRAPH
            and not self.microsoft_graph_delta_link
            and not self.microsoft_graph_since
        ):
            mailbox = None
            try:
                mailbox = self._connect__(allow_archived=True)
                self.write(self._microsoft_graph_start_values(mailbox.sync))
            except GraphError as exc:
                _logger.info(
                    "[Incoming Mail] fetchmail.server #%s: no start position yet (%s); "
                    "the first run takes it",
                    self.id,
                    exc.reference or type(exc).__name__,
                )
            finally:
                if mailbox:
                    mailbox.disconnect()
        if self._microsoft_graph_wants_notifications(notification_endpoint(self.env)):
            trigger_once(self.env, SUBSCRIPTION_CRON)
        return result

    # ------------------------------------------------------------------
    # New mail detection: change notifications, or polling
    # ------------------------------------------------------------------

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
        notified = servers._microsoft_graph_subscriptions().filtered("subscription_id").server_id
        polled = servers - notified
        if polled:
            polled._microsoft_graph_fetch_servers()

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
                why=endpoint_problem_text(self.env, endpoint),
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

    # ------------------------------------------------------------------
    # Fetchmail hooks
    # ------------------------------------------------------------------

    def _connect__(self, allow_archived=False):
        self.ensure_one()
        if self.server_type != GRAPH:
            return super()._connect__(allow_archived=allow_archived)
        if not allow_archived and not self.active:
            raise UserError(
                self.env._(
                    'The server "%s" cannot be used because it is archived.', self.display_name
                )
            )
        page_size = max(1, min(self._microsoft_graph_page_size, self._microsoft_graph_budget()[0]))
        return MicrosoftGraphMailbox(
            self._microsoft_graph_client(), self.microsoft_graph_folder, page_size
        )

    def fetch_mail(self):
        """Fetch Now: import within the run's budget, in the request's transaction."""
        if self.server_type != GRAPH:
            return super().fetch_mail()
        self.ensure_one().check_access("write")
        server = self.sudo().with_context(fetchmail_cron_running=True)
        if not server._microsoft_graph_lock():
            raise UserError(
                self.env._(
                    "The mail of %s cannot be imported now: confirm the server first, or "
                    "try again in a moment if an import is running.",
                    self.display_name,
                )
            )
        run = server._microsoft_graph_fetch(commit=False)
        if run.error is not None:
            message = (
                graph_error_sentence(self.env, run.error)
                if isinstance(run.error, GraphError)
                else exception_to_unicode(run.error)
            )
            kind = "danger"
        else:
            message = self.env._(
                "%(imported)s message(s) imported, %(failed)s kept in the failed messages.",
                imported=run.imported,
                failed=run.failed,
            )
            if run.pending:
                message += " " + self.env._("More mail is waiting: it follows in the background.")
            kind = "warning" if run.failed else "success"
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Outlook mail of %s", self.display_name),
                "message": message,
                "type": kind,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def _fetch_mail(self, batch_limit=50) -> Exception | None:
        graph_servers = self.filtered(lambda server: server.server_type == GRAPH)
        others = self - graph_servers
        result = None
        if others:
            result = super(FetchmailServer, others)._fetch_mail(batch_limit=batch_limit)
        if graph_servers:
            graph_result = graph_servers._microsoft_graph_fetch_servers()
            result = result or graph_result
        return result

    # ------------------------------------------------------------------
    # The import
    # ------------------------------------------------------------------

    def _microsoft_graph_fetch_servers(self):
        """Run each Graph server in turn, each in its own slice of the call's time; one
        server's failure, slowness or throttling never stops the others.

        In the cron (``cron_id`` in the context) each page is committed with its
        checkpoint through ``ir.cron._commit_progress``; elsewhere nothing is committed.
        A call lasts about the largest seconds budget of its servers, shared out: each
        server gets what is left divided by the servers still to serve (at least
        ``SLICE_FLOOR_SECONDS``) and stops at a page boundary past it, its position kept.
        The least recently run go first, so a server left out when the call's time is up
        is first in the next call; a server Microsoft asked to wait is skipped until then.
        """
        commit = bool(self.env.context.get("cron_id"))
        cron_end = self.env.context.get("cron_end_time")
        if commit and cron_end and time.monotonic() > cron_end:
            # Odoo's cron calls again within one job while other servers report work
            # left (``cron_end_time`` is Odoo's own monotonic clock). Graph servers had
            # their budget in the job's first call: a trigger brings the rest in a new
            # job rather than holding this worker past its time limit.
            if any(self.mapped("microsoft_graph_pending")):
                self.env.ref(GATEWAY_CRON).sudo()._trigger()
            return None
        servers = self.with_context(fetchmail_cron_running=True)._microsoft_graph_due()
        if not servers:
            return None
        clock = self._microsoft_graph_clock
        call_end = clock() + max(server._microsoft_graph_budget()[1] for server in servers)
        result_exception = None
        left_out = False
        for position, server in enumerate(servers):
            left = call_end - clock()
            if left <= 0:
                left_out = True
                continue
            if not server._microsoft_graph_lock():
                _logger.info(
                    "[Incoming Mail] fetchmail.server #%s %s: skipped (being imported elsewhere)",
                    server.id,
                    server.name,
                )
                continue
            share = max(SLICE_FLOOR_SECONDS, left / (len(servers) - position))
            run = server._microsoft_graph_fetch(commit=commit, deadline=clock() + share)
            if run.error is not None:
                result_exception = run.error
            if commit:
                self.env.cr.commit()  # pylint: disable=invalid-commit
        if left_out:
            self.env.ref(GATEWAY_CRON).sudo()._trigger()
            if commit:
                self.env.cr.commit()  # pylint: disable=invalid-commit
        return result_exception

    def _microsoft_graph_due(self):
        """The servers to run now, least recently run first: not those Microsoft asked
        to wait (their run is triggered for the time it named)."""
        now = fields.Datetime.now()
        throttled = self.filtered(
            lambda server: server.microsoft_graph_throttled_until
            and server.microsoft_graph_throttled_until > now
        )
        for server in throttled:
            _logger.info(
                "[Incoming Mail] fetchmail.server #%s %s: skipped until %s (Microsoft asked "
                "to wait)",
                server.id,
                server.name,
                server.microsoft_graph_throttled_until,
            )
        return (self - throttled).sorted(lambda server: server.date or datetime.datetime.min)

    def _microsoft_graph_lock(self):
        """Take this server for the transaction, or say another worker has it.

        An advisory lock, not a row lock: the token refresh locks the server's row on
        its own cursor (the mixin), and must not wait for this transaction. For the
        same reason the import writes the server's row only right before a commit,
        or at the end of a run that does not commit (docs/incoming.md).
        """
        self.ensure_one()
        self.env.cr.execute(
            "SELECT pg_try_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_CLASS, self.id]
        )
        if not self.env.cr.fetchone()[0]:
            return False
        self.invalidate_recordset()
        return bool(self.filtered_domain(MAIL_SERVER_DOMAIN))

    def _microsoft_graph_budget(self):
        self.ensure_one()
        return (
            self.microsoft_graph_max_messages if self.microsoft_graph_max_messages > 0 else 500,
            self.microsoft_graph_max_seconds if self.microsoft_graph_max_seconds > 0 else 60,
        )

    def _microsoft_graph_clock(self):
        """Seconds of a monotonic clock: every budget and slice of the import reads it
        (tests move it)."""
        return time.monotonic()

    def _microsoft_graph_fetch(self, commit, deadline=None):
        """Import the new mail of this locked server (see ``GraphImportRun``)."""
        return GraphImportRun(self, commit, deadline=deadline).run()

    def _microsoft_graph_start_values(self, sync):
        """The first link: from the start date when set, else "from now" (baseline)."""
        self.ensure_one()
        if self.microsoft_graph_since:
            return {
                "microsoft_graph_delta_link": sync.start_link(self.microsoft_graph_since),
                "microsoft_graph_sync_start": self.microsoft_graph_since,
            }
        start = fields.Datetime.now()
        return {"microsoft_graph_delta_link": sync.baseline(), "microsoft_graph_sync_start": start}

    def _microsoft_graph_size_error(self, size, limit=None):
        return UserError(
            self.env._(
                "The message is larger than %(limit)s MB (%(size).1f MB): "
                "retry it to import it anyway.",
                limit=limit or self.microsoft_graph_max_size,
                size=size / 1024 / 1024,
            )
        )

    def _microsoft_graph_process(self, raw, check_size=True):
        """Run one MIME message through Odoo's mail gateway with this server's
        settings, in a savepoint. Returns None, or the error that stopped it."""
        self.ensure_one()
        limit = self.microsoft_graph_max_size * 1024 * 1024
        if check_size and limit and len(raw) > limit:
            return self._microsoft_graph_size_error(len(raw))
        MailThread = self.env["mail.thread"].with_context(
            default_fetchmail_server_id=self.id,
            **{GRAPH_IMPORT_SOURCE: GraphImportSource(self.id)},
        )
        try:
            with self.env.cr.savepoint():
                MailThread.message_process(
                    self.object_id.model,
                    raw,
                    save_original=self.original,
                    strip_attachments=not self.attach,
                )
        except Exception as exc:  # kept for an admin, never blocks the rest
            _logger.info(
                "[Incoming Mail] fetchmail.server #%s: a message could not be imported",
                self.id,
                exc_info=True,
            )
            return exc
        return None

    # ------------------------------------------------------------------
    # Writes back to the mailbox (after the commit)
    # ------------------------------------------------------------------

    def _microsoft_graph_write_back_after_commit(self, mailbox, ids):
        """Outside the cron the import commits with the request: mark read and move the
        imported messages after it."""
        server = self
        sync = mailbox.sync

        def after_commit():
            write_back(server, sync, ids, deferred=False)

        self.env.cr.postcommit.add(after_commit)

    # ------------------------------------------------------------------
    # Errors
    # ------------------------------------------------------------------

    def _microsoft_graph_record_failure(self, error):
        """Fetchmail's error recording (first error date, deactivation after days of
        failures), plus the connection status for Microsoft's errors."""
        self.ensure_one()
        if isinstance(error, GraphError):
            self._microsoft_graph_record_error(error)
            text = graph_error_text(self.env, error)
        else:
            text = exception_to_unicode(error)
        now = fields.Datetime.now()
        if not self.error_date:
            self.write({"error_date": now, "error_message": text})
        elif self.error_date < now - MAIL_SERVER_DEACTIVATE_TIME:
            self.write({"error_message": text})
            self.set_draft()
            self.env["ir.cron"]._notify_admin(
                f"Deactivating fetchmail {self.server_type} server {self.name} (too many failures)"
            )
        else:
            self.write({"error_message": text})
        level = logging.WARNING if isinstance(error, GraphAuthError) else logging.INFO
        _logger.log(
            level,
            "[Incoming Mail] fetchmail.server #%s %s: import stopped, position kept: %s",
            self.id,
            self.name,
            text,
            exc_info=not isinstance(error, GraphError),
        )

    def action_microsoft_graph_failed_messages(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "microsoft_outlook_graph.microsoft_outlook_graph_failed_message_action"
        )
        action["domain"] = [("server_id", "=", self.id)]
        action["context"] = {"search_default_filter_failed": 1, "default_server_id": self.id}
        return action
