import contextlib
import logging
from datetime import timedelta

from odoo import api, fields, models
from odoo.tools import email_normalize

from ..services.sending_limits import (
    TENANT_EXTERNAL,
    Budget,
    generated_by_exchange,
    quota_ndr_limit,
)
from .committed_cursor import committed_cursor
from .microsoft_outlook_graph_mixin import GRAPH

_logger = logging.getLogger(__name__)

# Namespace of the advisory locks that serialize the budget of one account.
LEDGER_LOCK = 0x4D534C47
# Namespace of the advisory locks that serialize the external recipient budget of one tenant.
TENANT_LOCK = 0x4D53544C
# Entries are purged once they count for no limit any more (with room for a time scale > 1).
KEEP = timedelta(days=3)


class MicrosoftOutlookGraphSendLedger(models.Model):
    """What one Microsoft account handed to Exchange: the memory of its sending limits.

    One row per message, written when the message is admitted (before it is sent), in a
    transaction of its own that every Odoo worker sees at once. Exchange counts a message
    sent as a shared mailbox against the signed-in account, hence the account key.
    """

    _name = "microsoft.outlook.graph.send.ledger"
    _description = "Microsoft Graph Sending Ledger"
    _order = "sent_at, id"
    _log_access = False

    account = fields.Char(required=True, index=True, readonly=True)
    sent_at = fields.Datetime(
        "Leaves At",
        required=True,
        index=True,
        readonly=True,
        help="When Exchange lets the message leave: the time it was handed over, or later "
        "when the message rate holds it back.",
    )
    recipient_count = fields.Integer("Recipients", readonly=True)
    mail_id = fields.Integer(index="btree_not_null", readonly=True)
    message_id = fields.Char("Message-Id", index="btree_not_null", readonly=True)
    mail_server_id = fields.Many2one("ir.mail_server", ondelete="set null", readonly=True)
    confirmed = fields.Boolean(
        readonly=True, help="Microsoft accepted the message: it counts whatever Odoo does next."
    )
    tenant = fields.Char(
        "Microsoft Tenant Id",
        index="btree_not_null",
        readonly=True,
        help="The tenant whose external recipient limit the message spends.",
    )
    external_count = fields.Integer(
        "External Recipients",
        readonly=True,
        help="Recipients outside the tenant's accepted domains (Exchange's tenant limit).",
    )

    @api.model
    def _budget(self, account, limits, now):
        """The Budget of account at now, from the entries that still count."""
        since = now - timedelta(seconds=max(limits.window, limits.minute))
        rows = self.search_fetch(
            [("account", "=", account), ("sent_at", ">", since)],
            ["sent_at", "recipient_count"],
            order="sent_at",
        )
        return Budget(((row.sent_at, row.recipient_count) for row in rows), limits)

    @api.model
    def _tenant_budget(self, tenant, limits, now):
        """The Budget of the tenant's external recipients at now, every account together."""
        since = now - timedelta(seconds=limits.window)
        rows = self.search_fetch(
            [("tenant", "=", tenant), ("external_count", ">", 0), ("sent_at", ">", since)],
            ["sent_at", "external_count"],
            order="sent_at",
        )
        return Budget(((row.sent_at, row.external_count) for row in rows), limits)

    @contextlib.contextmanager
    def _locked(self, account, tenant=None):
        """This model on a cursor of its own holding account's budget lock (and the tenant's,
        taken first: every worker takes them in that order); committed on exit.

        The transaction reads committed rows at every statement (READ COMMITTED), so what the
        previous lock holder wrote is seen as soon as the lock is granted; two workers never
        spend one budget twice. Release and confirmation take the account's lock only: they
        remove entries or move them later, which never lets a tenant's budget be overspent.
        """
        with committed_cursor(self.env) as env:
            if tenant:
                env.cr.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [TENANT_LOCK, tenant],
                )
            env.cr.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [LEDGER_LOCK, account])
            yield self.with_env(env)

    @api.model
    def _confirm_sent(self, account, message_id, accepted_at):
        """Confirm the entries of a sent message, moved to when Microsoft accepted it if later.

        In the ledger's own locked transaction, where the entries were written: the caller's
        transaction may not see them yet.
        """
        with self._locked(account) as ledger:
            entries = ledger.search([("account", "=", account), ("message_id", "=", message_id)])
            entries.filtered(lambda entry: entry.sent_at < accepted_at).sent_at = accepted_at
            entries.confirmed = True

    @api.model
    def _release(self, account, mail_ids):
        """Forget the entries of mails that Microsoft did not accept: they count for nothing.

        By mail ids, whatever their state: the caller's transaction may have failed.
        """
        if mail_ids:
            with self._locked(account) as ledger:
                ledger.search(
                    [
                        ("account", "=", account),
                        ("mail_id", "in", list(mail_ids)),
                        ("confirmed", "=", False),
                    ]
                ).unlink()

    @api.model
    def _requeue_refused(self, message_id, report, incoming_server_id):
        """Exchange reported that it refused the mail of message_id for the recipient rate
        of the sending account, or for the tenant's external recipient rate (5.7.233: then
        the tenant's external mail waits, not the server's).

        Believed only when it provably comes from the sending account's own Microsoft 365
        (``_trusted_report_senders``): anyone who received one of the company's mails knows
        a Message-ID and can write such a report. The mail counted for nothing at Microsoft:
        its entries go, and it waits in the queue again, after a back-off (the ledger
        undercounted). A mail that Odoo already deleted after sending cannot wait again: its
        recipients' notifications show the failure, so the author can resend it. False when
        the report is not believed or names no mail sent through Graph.
        """
        entries = self.search([("message_id", "=", message_id)])
        if not entries:
            return False
        servers = self._trusted_report_senders(entries.mail_server_id, report, incoming_server_id)
        if not servers:
            _logger.warning(
                "[Graph API] a report claims Exchange refused mail %s for the daily recipient "
                "limit, but it was not read from the sending account's own mailbox through "
                "Microsoft Graph with Exchange's marks: nothing changed",
                message_id,
            )
            return False
        entries = entries.filtered(lambda entry: entry.mail_server_id in servers)
        for account in set(entries.mapped("account")):
            with self._locked(account) as ledger:
                ledger.search([("account", "=", account), ("message_id", "=", message_id)]).unlink()
        # The report proves the mail did not leave: its next attempt is no resend.
        self.env["microsoft.outlook.graph.handover"].search(
            [("message_id", "=", message_id)]
        ).unlink()
        server = servers[:1]
        tenant_limit = quota_ndr_limit(report) == TENANT_EXTERNAL
        Tenant = self.env["microsoft.outlook.graph.tenant"].sudo()
        tenant = Tenant._of(server.microsoft_graph_account_tid) if tenant_limit else Tenant
        paused_until = False
        if tenant:
            paused_until = tenant._quota_refused(server._microsoft_graph_now())
            reason = self.env._(
                "Exchange refused this mail: the Microsoft 365 tenant's daily limit of external "
                "recipients (%(limit)s) was reached (mail sent from Outlook counts too).",
                limit=tenant.external_recipients_per_day,
            )
        else:
            for each in servers:
                each._microsoft_graph_quota_refused()
            paused_until = server.microsoft_graph_paused_until
            reason = self.env._(
                "Exchange refused this mail: the daily recipient limit of %(mailbox)s was "
                "reached (mail sent from Outlook counts too).",
                mailbox=server.smtp_user or "-",
            )
        mails = self.env["mail.mail"].search(
            [("message_id", "=", message_id), ("state", "in", ("sent", "exception"))]
        )
        if mails:
            mails.write(
                {
                    "state": "outgoing",
                    "failure_type": False,
                    "failure_reason": reason,
                    "microsoft_graph_budget_server_id": server.id,
                    "microsoft_graph_tenant_id": tenant.id,
                    "microsoft_graph_send_after": paused_until,
                }
            )
            self.env["mail.notification"].search(
                [("mail_mail_id", "in", mails.ids), ("notification_type", "=", "email")]
            ).write(
                {"notification_status": "ready", "failure_type": False, "failure_reason": False}
            )
            if paused_until:
                self.env.ref("mail.ir_cron_mail_scheduler_action")._trigger(paused_until)
        else:
            self.env["mail.notification"].search(
                [
                    ("mail_message_id.message_id", "=", message_id),
                    ("notification_type", "=", "email"),
                ]
            ).write(
                {
                    "notification_status": "exception",
                    "failure_type": "unknown",
                    "failure_reason": reason,
                }
            )
        _logger.warning(
            "[Graph API] Exchange refused mail %s for the %s: %s",
            message_id,
            f"external recipient limit of tenant {tenant.tenant_id}"
            if tenant
            else f"daily recipient limit of {server.smtp_user or '-'}",
            "back in the queue" if mails else "already deleted, its notifications show the failure",
        )
        return True

    @api.model
    def _trusted_report_senders(self, servers, report, incoming_server_id):
        """The servers among servers whose Microsoft 365 provably wrote report.

        It must have been read through Graph (``incoming_server_id``, set by this addon's
        import only) from a mailbox of the same Microsoft tenant that the server sends from
        (the mailbox itself, or the account that sends as it), and carry the marks Exchange
        puts on what it generates inside the organization, which its header firewall strips
        from mail coming from outside.
        """
        if not incoming_server_id or not generated_by_exchange(report):
            return servers.browse()
        incoming = self.env["fetchmail.server"].sudo().browse(incoming_server_id).exists()
        if (
            not incoming
            or incoming.server_type != GRAPH
            or not incoming.microsoft_graph_account_tid
        ):
            return servers.browse()
        mailbox = incoming._microsoft_graph_mailbox_address()
        return servers.filtered(
            lambda server: server.smtp_authentication == GRAPH
            and server.microsoft_graph_account_tid == incoming.microsoft_graph_account_tid
            and mailbox
            in {
                server._microsoft_graph_mailbox_address(),
                email_normalize(server.microsoft_graph_account_address or ""),
            }
        )

    @api.autovacuum
    def _gc_old_entries(self):
        self.sudo().search([("sent_at", "<", fields.Datetime.now() - KEEP)]).unlink()
