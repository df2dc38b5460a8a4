import logging
from datetime import timedelta

import psycopg2

from odoo import api, fields, models

from ..services.send import GraphSendDeferred
from ..services.sending_limits import is_bulk, message_external, message_recipients
from .microsoft_outlook_graph_mixin import GRAPH

_logger = logging.getLogger(__name__)

# Seconds one queue run spends on one Graph mailbox before it moves on to the next
# (a slow or throttled mailbox costs the others at most this, plus the mail in flight); the
# rest of its mail stays queued for the next run. Hidden setting for tests and benchmarks.
SEND_SLICE = 10.0
SEND_SLICE_PARAM = "microsoft_outlook_graph.send_slice_seconds"


class MailMail(models.Model):
    _inherit = "mail.mail"

    microsoft_graph_message_id = fields.Char(
        "Microsoft Message Id", readonly=True, copy=False, groups="base.group_system"
    )
    microsoft_graph_internet_message_id = fields.Char(
        "Microsoft internetMessageId", readonly=True, copy=False, groups="base.group_system"
    )
    microsoft_graph_budget_server_id = fields.Many2one(
        "ir.mail_server",
        "Waiting for the Limits of",
        readonly=True,
        copy=False,
        index="btree_not_null",
        help="This mail waits in the queue for the Exchange sending limits of this server.",
    )
    microsoft_graph_send_after = fields.Datetime(
        "Estimated Send Time",
        readonly=True,
        copy=False,
        help="When the Exchange sending limits let this mail go, at the pace they allow.",
    )
    microsoft_graph_tenant_id = fields.Many2one(
        "microsoft.outlook.graph.tenant",
        "Waiting for the Tenant Limit of",
        readonly=True,
        copy=False,
        index="btree_not_null",
        ondelete="set null",
        help="This mail waits for the external recipient limit of this Microsoft 365 tenant.",
    )
    microsoft_graph_retry_at = fields.Datetime(
        readonly=True,
        copy=False,
        index="btree_not_null",
        help="Until then the mail waits for the daily recipient limit and the queue skips it.",
    )

    @api.model
    def process_email_queue(self, email_ids=(), batch_size=1000):
        # Mails waiting hours for the daily recipient limit are not due: the queue run leaves
        # them out (nor counts them as work left, which would re-run the cron at once), and
        # the cron trigger set for the first of them brings them back.
        now = self.env["ir.mail_server"]._microsoft_graph_now()
        not_waiting = [
            "|",
            ("microsoft_graph_retry_at", "=", False),
            ("microsoft_graph_retry_at", "<=", now),
        ]
        filters = [*self.env.context.get("filters", []), *not_waiting]
        if email_ids:
            return super(MailMail, self.with_context(filters=filters)).process_email_queue(
                email_ids=email_ids, batch_size=batch_size
            )
        # Transactional mail of the whole queue first, then mass mail, each mail once: Odoo
        # takes at most batch_size mails per run, and a password reset must not wait behind
        # a newsletter of thousands.
        mass = [("headers", "ilike", "precedence")]
        if "mailing_id" in self._fields:
            mass = ["|", ("mailing_id", "!=", False), *mass]
        super(MailMail, self.with_context(filters=[*filters, "!", *mass])).process_email_queue(
            batch_size=batch_size
        )
        return super(MailMail, self.with_context(filters=[*filters, *mass])).process_email_queue(
            batch_size=batch_size
        )

    def send(self, auto_commit=False, raise_exception=False, post_send_callback=None):
        # Transactional mail of every mailbox before any mass mail: mailboxes of one tenant
        # share its external recipient limit, so a newsletter of one mailbox must not spend
        # the budget an invoice of another one waits for.
        if len(self) > 1 and not self.env.context.get("microsoft_graph_pass"):
            bulk = self.filtered(lambda mail: mail._microsoft_graph_is_bulk())
            if bulk and bulk != self:
                for part in (self - bulk, bulk):
                    super(MailMail, part.with_context(microsoft_graph_pass=True)).send(
                        auto_commit=auto_commit,
                        raise_exception=raise_exception,
                        post_send_callback=post_send_callback,
                    )
                return True
        return super().send(
            auto_commit=auto_commit,
            raise_exception=raise_exception,
            post_send_callback=post_send_callback,
        )

    def _split_by_mail_configuration(self):
        """Odoo's batches, the Graph mailboxes least recently served first: a queue run never
        spends its time on the same mailboxes while the others wait."""
        batches = list(super()._split_by_mail_configuration())
        servers = (
            self.env["ir.mail_server"]
            .sudo()
            .browse({batch[0] for batch in batches if batch[0]})
            .exists()
        )
        graph = {
            server.id: server.microsoft_graph_last_sent_at
            or fields.Datetime.to_datetime("1970-01-01")
            for server in servers
            if server.smtp_authentication == GRAPH
        }
        # Other servers first, as Odoo orders them; then Graph mailboxes by their last send.
        batches.sort(key=lambda batch: (batch[0] in graph, graph.get(batch[0]) or 0))
        return iter(batches)

    def _send(self, auto_commit=False, raise_exception=False, smtp_session=None, **kwargs):
        server = kwargs.get("mail_server")
        if not (server and server.smtp_authentication == GRAPH) or server._disable_send():
            return super()._send(
                auto_commit=auto_commit,
                raise_exception=raise_exception,
                smtp_session=smtp_session,
                **kwargs,
            )
        with server.sudo()._microsoft_graph_sending() as sending:
            if not sending:
                # Another worker sends this mailbox's queue now: these mails stay queued.
                return True
            mails = self._microsoft_graph_claim()
            if not mails:
                return True
            Ledger = self.env["microsoft.outlook.graph.send.ledger"].sudo()
            mails = Ledger._admit(server.sudo(), mails).with_env(self.env)
            slice_ = float(
                self.env["ir.config_parameter"].sudo().get_param(SEND_SLICE_PARAM) or SEND_SLICE
            )
            # The sending limits' clock, which tests hold still and move: a slow machine never
            # ends a turn early in a test.
            clock = server._microsoft_graph_now
            deadline = clock() + timedelta(seconds=slice_)
            try:
                for position, mail in enumerate(mails):
                    if position and clock() >= deadline:
                        # Its turn is over: the rest waits for the next run, after the
                        # mailboxes served less recently (their ledger entries are released).
                        _logger.info(
                            "[Graph API] %s mails of %s left for the next queue run after %.0f s",
                            len(mails) - position,
                            server.smtp_user,
                            slice_,
                        )
                        break
                    super(MailMail, mail.with_context(microsoft_graph_admitted=True))._send(
                        auto_commit=auto_commit,
                        raise_exception=raise_exception,
                        smtp_session=smtp_session,
                        **kwargs,
                    )
                return True
            except GraphSendDeferred as deferred:
                # Odoo flags a mail as failed before sending it and counts on a rollback
                # when the session drops; put it back in the queue instead, saying why.
                message_id = deferred.message_id
                waiting = mails.filtered(lambda mail: mail.message_id == message_id)
                waiting.write(
                    {"state": "outgoing", "failure_type": False, "failure_reason": deferred.reason}
                )
                self.env["mail.notification"].sudo().search(
                    [
                        ("mail_mail_id", "in", waiting.ids),
                        ("notification_type", "=", "email"),
                        ("notification_status", "=", "exception"),
                    ]
                ).write(
                    {"notification_status": "ready", "failure_type": False, "failure_reason": False}
                )
                return True
            finally:
                # What did not leave counts for nothing against the limits. On the ledger's
                # own cursor, by ids: this transaction may have failed.
                Ledger._release(server.sudo()._microsoft_graph_budget_account(), mails.ids)

    def _microsoft_graph_claim(self):
        """The mails of self this transaction may send: still queued as it sees them, and
        not changed since by another transaction (locked until the next commit).

        Under REPEATABLE READ a mail that another worker sent after this transaction began
        still looks queued; locking it fails at once instead of after it was sent again.
        """
        queued = self.filtered(lambda mail: mail.state == "outgoing")
        if not queued:
            return queued
        claimed = []
        try:
            with self.env.cr.savepoint(flush=False):
                self.env.cr.execute(
                    "SELECT id FROM mail_mail WHERE id IN %s FOR NO KEY UPDATE SKIP LOCKED",
                    [tuple(queued.ids)],
                    log_exceptions=False,
                )
                claimed = [row[0] for row in self.env.cr.fetchall()]
        except psycopg2.errors.SerializationFailure:
            for mail in queued:
                try:
                    with self.env.cr.savepoint(flush=False):
                        self.env.cr.execute(
                            "SELECT id FROM mail_mail WHERE id = %s FOR NO KEY UPDATE SKIP LOCKED",
                            [mail.id],
                            log_exceptions=False,
                        )
                        claimed += [row[0] for row in self.env.cr.fetchall()]
                except psycopg2.errors.SerializationFailure:
                    continue
        left = len(queued) - len(claimed)
        if left:
            _logger.info(
                "[Graph API] %s queued mail(s) were sent or are being sent by another worker: "
                "left to it",
                left,
            )
        claimed = set(claimed)
        return queued.browse([mail_id for mail_id in queued.ids if mail_id in claimed])

    def _microsoft_graph_is_bulk(self):
        """Mass mail, which goes after transactional mail (a password reset, an invoice)."""
        self.ensure_one()
        return is_bulk(self.headers, "mailing_id" in self._fields and bool(self.mailing_id))

    def _microsoft_graph_queue_order(self):
        return self.sorted(lambda mail: (mail._microsoft_graph_is_bulk(), mail.id))

    def _microsoft_graph_message_recipients(self):
        """Recipients of each message Odoo makes of this mail, as Exchange counts them."""
        self.ensure_one()
        return message_recipients(self.email_to, self.email_cc, self.recipient_ids.mapped("email"))

    def _microsoft_graph_message_external(self, domains):
        """External recipients of each message Odoo makes of this mail (in the order of
        ``_microsoft_graph_message_recipients``): those outside the tenant's accepted domains."""
        self.ensure_one()
        return message_external(
            domains, self.email_to, self.email_cc, self.recipient_ids.mapped("email")
        )

    def _microsoft_graph_refuse(self, reason):
        """Fail a mail that Exchange would refuse whatever the time (too many recipients)."""
        self.write({"state": "exception", "failure_type": "unknown", "failure_reason": reason})
        self._postprocess_sent_message(
            success_pids=[], success_emails=[], failure_reason=reason, failure_type="unknown"
        )
