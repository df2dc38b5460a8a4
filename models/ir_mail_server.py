import contextlib
import logging
from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError
from odoo.sql_db import Cursor
from odoo.tools import email_normalize

from odoo.addons.base.models.ir_mail_server import MailDeliveryException

from ..services.errors import GraphAuthError, GraphError, GraphTransientError
from ..services.send import (
    MAX_MESSAGE_SIZE,
    GraphAmbiguousSendError,
    GraphSendDeferred,
    GraphSender,
)
from ..services.sending_limits import (
    Limits,
    is_quota_refusal,
)
from ..services.sent_items import find_sent_copy, message_recipients
from .graph_error_text import graph_error_sentence, graph_error_text
from .microsoft_outlook_graph_mixin import GRAPH

_logger = logging.getLogger(__name__)

# Namespace of the advisory locks that let one worker at a time send a server's queue.
SEND_LOCK = 0x4D534753
# How long a throttled or unreachable mailbox rests when Microsoft names no delay.
DEFAULT_PAUSE = timedelta(seconds=60)
LAST_SENT_RESOLUTION = timedelta(minutes=1)


class GraphMailSession:
    """What ``send_email`` expects from ``_connect__``, over Microsoft Graph.

    Odoo opens one per batch of queued mails: its HTTPS connection to Graph is
    reused by every mail of the batch, as an SMTP session would be.
    """

    def __init__(self, server, smtp_from):
        self.server = server
        self.from_filter = server.from_filter
        self.smtp_from = smtp_from
        self._sender = None

    def send_message(self, message, smtp_from=None, smtp_to_list=None, admitted=False):
        """admitted: the mail queue already entered the message in the sending ledger."""
        if self._sender is None:
            self._sender = self.server._microsoft_graph_sender()
        server = self.server.with_context(microsoft_graph_admitted=admitted)
        return server._microsoft_graph_send(message, self._sender)

    def quit(self):
        if self._sender is not None:
            self._sender.client.session.close()
            self._sender = None


class IrMailServer(models.Model):
    _name = "ir.mail_server"
    _inherit = ["ir.mail_server", "microsoft.outlook.graph.mixin"]

    _microsoft_graph_direction = "outgoing"

    smtp_authentication = fields.Selection(
        selection_add=[(GRAPH, "Outlook (Microsoft Graph)")],
        ondelete={GRAPH: "set default"},
    )
    microsoft_graph_save_to_sent_items = fields.Boolean(
        "Save to Sent Items",
        default=True,
        help="On: each mail is created as a draft and sent, so it lands in Sent Items and "
        "Odoo records its Microsoft message id (2 requests per mail). Off: one request per "
        "mail and no Microsoft id recorded.",
    )
    microsoft_graph_last_sent_at = fields.Datetime("Last Sent", copy=False, readonly=True)
    microsoft_graph_paused_until = fields.Datetime(
        "Sending Paused Until",
        copy=False,
        readonly=True,
        help="Microsoft asked to slow down or was unreachable: queued mails wait until then.",
    )
    microsoft_graph_recipients_per_day = fields.Integer(
        "Daily Recipient Limit",
        default=10_000,
        help="Exchange Online's recipient rate of the connected account: recipients (To, Cc "
        "and Bcc of every message) in a rolling 24 hours. 10,000 unless the tenant changed "
        "it; lower it to keep room for mail sent from Outlook. 0: no limit.",
    )
    microsoft_graph_recipients_per_message = fields.Integer(
        "Recipients per Message",
        default=500,
        help="Exchange Online's limit of recipients in one message: 500 by default, up to "
        "1,000 if the Microsoft 365 admin raised it. 0: no limit.",
    )
    microsoft_graph_messages_per_minute = fields.Integer(
        "Messages per Minute",
        default=30,
        help="Exchange Online's message rate: 30 a minute. Odoo paces its mail to it. 0: no limit.",
    )
    microsoft_graph_quota_backoff = fields.Integer(copy=False, readonly=True)
    microsoft_graph_recipients_used = fields.Integer(
        "Recipients in the Last 24 Hours", compute="_compute_microsoft_graph_usage"
    )
    microsoft_graph_messages_last_minute = fields.Integer(
        "Messages in the Last Minute", compute="_compute_microsoft_graph_usage"
    )
    microsoft_graph_waiting_count = fields.Integer(
        "Mails Waiting for Budget", compute="_compute_microsoft_graph_usage"
    )
    microsoft_graph_queue_empties_at = fields.Datetime(
        "Queue Empty At",
        compute="_compute_microsoft_graph_queue_empties_at",
        help="When the mails waiting for this mailbox's sending limits will all have left, "
        "at the pace the limits allow.",
    )

    def _microsoft_graph_budgeted(self):
        """The Graph servers of self that have a sending budget (saved ones)."""
        return self.filtered(lambda server: server.smtp_authentication == GRAPH and server.id)

    def _compute_microsoft_graph_usage(self):
        """For every server of the batch at once: one query for the ledgers and one for the
        waiting mails, with the same account key as the sender (the health list shows these)."""
        graph_servers = self._microsoft_graph_budgeted()
        Ledger = self.env["microsoft.outlook.graph.send.ledger"].sudo()
        usage = Ledger._usage(graph_servers.sudo(), self._microsoft_graph_now())
        for server in self:
            (
                server.microsoft_graph_recipients_used,
                server.microsoft_graph_messages_last_minute,
                server.microsoft_graph_waiting_count,
            ) = usage.get(server.id, (0, 0, 0))

    def _compute_microsoft_graph_queue_empties_at(self):
        """Once per read for every server of the batch: one forecast per tenant of all its
        waiting mails, no query per server or mail."""
        graph_servers = self._microsoft_graph_budgeted()
        Ledger = self.env["microsoft.outlook.graph.send.ledger"].sudo()
        empties = Ledger._queue_empties_at(graph_servers.sudo(), self._microsoft_graph_now())
        for server in self:
            server.microsoft_graph_queue_empties_at = empties.get(server.id, False)

    def _compute_smtp_authentication_info(self):
        graph_servers = self.filtered(lambda server: server.smtp_authentication == GRAPH)
        graph_servers.smtp_authentication_info = self.env._(
            "Mail leaves through Microsoft Graph with the Outlook account you connect: no SMTP "
            "host, port or password. Enter the Mailbox Address below (personal or shared), "
            "save, then connect."
        )
        return super(IrMailServer, self - graph_servers)._compute_smtp_authentication_info()

    @api.constrains("smtp_authentication", "smtp_user", "smtp_pass")
    def _check_microsoft_graph_server(self):
        for server in self.filtered(lambda server: server.smtp_authentication == GRAPH):
            if not server._microsoft_graph_mailbox_address():
                raise UserError(
                    self.env._(
                        "Enter the Outlook mailbox address as the username of “%s”.",
                        server.name,
                    )
                )
            if server.smtp_pass:
                raise UserError(
                    self.env._(
                        "Leave the password of “%s” empty: Microsoft Graph uses OAuth.", server.name
                    )
                )

    @api.constrains(
        "microsoft_graph_recipients_per_day",
        "microsoft_graph_recipients_per_message",
        "microsoft_graph_messages_per_minute",
    )
    def _check_microsoft_graph_limits(self):
        for server in self:
            if (
                min(
                    server.microsoft_graph_recipients_per_day,
                    server.microsoft_graph_recipients_per_message,
                    server.microsoft_graph_messages_per_minute,
                )
                < 0
            ):
                raise ValidationError(
                    self.env._(
                        "The Exchange sending limits of “%s” cannot be negative.", server.name
                    )
                )
            if server.microsoft_graph_recipients_per_message > 1_000:
                raise ValidationError(
                    self.env._(
                        "Exchange Online accepts at most 1,000 recipients per message, even when "
                        "the tenant's admin raised the limit: lower “Recipients per Message” of "
                        "“%s”.",
                        server.name,
                    )
                )

    @api.onchange("smtp_authentication", "smtp_user")
    def _onchange_smtp_authentication_microsoft_graph(self):
        if self.smtp_authentication == GRAPH:
            self.smtp_pass = False
            if self.smtp_user and not self.from_filter:
                self.from_filter = self.smtp_user

    @api.onchange("smtp_encryption")
    def _onchange_encryption(self):
        if self.smtp_authentication != GRAPH:
            return super()._onchange_encryption()
        return None

    def _connect__(
        self,
        host=None,
        port=None,
        user=None,
        password=None,
        encryption=None,
        smtp_from=None,
        ssl_certificate=None,
        ssl_private_key=None,
        smtp_debug=False,
        mail_server_id=None,
        allow_archived=False,
    ):
        if not self._disable_send() and not host:
            if mail_server_id:
                server = self.sudo().browse(mail_server_id)
            else:
                server, smtp_from = self.sudo()._find_mail_server(smtp_from)
            if server and server.smtp_authentication == GRAPH:
                self._check_forced_mail_server(server, allow_archived, smtp_from)
                return GraphMailSession(server, smtp_from)
        return super()._connect__(
            host=host,
            port=port,
            user=user,
            password=password,
            encryption=encryption,
            smtp_from=smtp_from,
            ssl_certificate=ssl_certificate,
            ssl_private_key=ssl_private_key,
            smtp_debug=smtp_debug,
            mail_server_id=mail_server_id,
            allow_archived=allow_archived,
        )

    def send_email(
        self,
        message,
        mail_server_id=None,
        smtp_server=None,
        smtp_port=None,
        smtp_user=None,
        smtp_password=None,
        smtp_encryption=None,
        smtp_ssl_certificate=None,
        smtp_ssl_private_key=None,
        smtp_debug=False,
        smtp_session=None,
    ):
        session = smtp_session
        if session is None and not smtp_server and not self._disable_send():
            # Look at the server that would be used, without opening an SMTP session.
            if mail_server_id:
                server, smtp_from = self.sudo().browse(mail_server_id), message["From"]
            else:
                server, smtp_from = self.sudo()._find_mail_server(message["From"])
            if server and server.smtp_authentication == GRAPH:
                session = self._connect__(smtp_from=smtp_from, mail_server_id=server.id)
        if not isinstance(session, GraphMailSession):
            return super().send_email(
                message,
                mail_server_id=mail_server_id,
                smtp_server=smtp_server,
                smtp_port=smtp_port,
                smtp_user=smtp_user,
                smtp_password=smtp_password,
                smtp_encryption=smtp_encryption,
                smtp_ssl_certificate=smtp_ssl_certificate,
                smtp_ssl_private_key=smtp_ssl_private_key,
                smtp_debug=smtp_debug,
                smtp_session=smtp_session,
            )
        # Same preparation as for SMTP (From rewriting, bounce address), then Graph.
        _smtp_from, _smtp_to_list, message = self._prepare_email_message__(message, session)
        if self._disable_send():
            return message["Message-Id"]
        try:
            session.send_message(
                message, admitted=self.env.context.get("microsoft_graph_admitted", False)
            )
        finally:
            # A pre-established session belongs to the caller, as with SMTP.
            if session is not smtp_session:
                session.quit()
        return message["Message-Id"]

    @contextlib.contextmanager
    def _microsoft_graph_sending(self):
        """Whether this worker may send this server's queue now: one worker at a time, on
        any Odoo host of the database (True), or another one is at it (False).

        The lock lives in a transaction of its own, held open for the block: the queue run
        commits after each mail, which would release a lock of its own transaction, and a
        failed run must not leave a lock behind on a pooled connection.
        """
        self.ensure_one()
        cr = self.env.registry.cursor()
        try:
            if not isinstance(cr, Cursor):
                # Odoo's test cursor: one transaction, no other worker, and its rollback
                # would undo the caller's work.
                yield True
                return
            cr.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [SEND_LOCK, self.id])
            acquired = cr.fetchone()[0]
            if not acquired:
                _logger.info(
                    "[Graph API] the queue of %s is being sent by another worker: left to it",
                    email_normalize(self.smtp_user),
                )
            yield acquired
        finally:
            cr.close()

    # sending limits -------------------------------------------------------------------

    def _microsoft_graph_now(self):
        return fields.Datetime.now()

    def _microsoft_graph_limits(self):
        self.ensure_one()
        scale = self.env["microsoft.outlook.graph.send.ledger"]._time_scale()
        return Limits(
            recipients_per_day=self.microsoft_graph_recipients_per_day or None,
            recipients_per_message=self.microsoft_graph_recipients_per_message or None,
            messages_per_minute=self.microsoft_graph_messages_per_minute or None,
        ).scaled(scale)

    def _microsoft_graph_budget_account(self):
        """Whose budget this server spends: Exchange counts the signed-in account's mail,
        shared mailboxes it sends as included."""
        self.ensure_one()
        return self.microsoft_graph_account_oid or email_normalize(self.smtp_user) or str(self.id)

    def _microsoft_graph_budget(self, now):
        return (
            self.env["microsoft.outlook.graph.send.ledger"]
            .sudo()
            ._budget(self._microsoft_graph_budget_account(), self._microsoft_graph_limits(), now)
        )

    def _microsoft_graph_tenant(self):
        """The Microsoft 365 tenant whose external recipient limit this server spends."""
        self.ensure_one()
        return (
            self.env["microsoft.outlook.graph.tenant"].sudo()._of(self.microsoft_graph_account_tid)
        )

    def _microsoft_graph_sender(self):
        self.ensure_one()
        return GraphSender(
            self._microsoft_graph_client(),
            save_to_sent_items=self.microsoft_graph_save_to_sent_items,
            # Every /users/{shared}/... route needs Full Access; Send As alone goes through /me.
            shared_via_me=self._microsoft_graph_sends_via_me(),
        )

    def _microsoft_graph_sends_via_me(self):
        return (
            self.microsoft_graph_mailbox_kind == "shared" and not self.microsoft_graph_full_access
        )

    def _microsoft_graph_send(self, message, sender=None):
        """Send Odoo's own MIME message through Graph and record what Microsoft says.

        Transient trouble (throttling, outages, a connection waiting for a reconnect)
        raises :class:`GraphSendDeferred`, which keeps the mail queued; anything
        Microsoft refuses for good raises ``MailDeliveryException`` with its reason.
        """
        self.ensure_one()
        message_id = message["Message-Id"]
        now = self._microsoft_graph_now()
        if self.microsoft_graph_paused_until and self.microsoft_graph_paused_until > now:
            raise GraphSendDeferred(
                self.env._(
                    "Waiting: Microsoft asked Odoo to slow down for %(mailbox)s "
                    "until %(time)s UTC.",
                    mailbox=self.smtp_user,
                    time=self.microsoft_graph_paused_until,
                ),
                message_id,
            )
        if not self.env.context.get("microsoft_graph_admitted"):
            # Sent outside Odoo's mail queue: no waiting room, so over budget is an error.
            self.env["microsoft.outlook.graph.send.ledger"].sudo()._admit_message(self, message)
        shared = self.microsoft_graph_mailbox_kind == "shared"
        from_address = self._microsoft_graph_mailbox_address() if shared else None
        sender = sender or self._microsoft_graph_sender()
        recipients = message_recipients(message)
        already_sent = None
        try:
            if self.env["microsoft.outlook.graph.handover"]._hand_over(message_id, recipients):
                already_sent = find_sent_copy(
                    sender.client,
                    message_id,
                    recipients,
                    shared_address=None if self._microsoft_graph_sends_via_me() else from_address,
                )
            if already_sent:
                sent = already_sent
                _logger.warning(
                    "[Graph API] mail %s came back to the queue although Microsoft had accepted "
                    "it (found in Sent Items): not sent again",
                    message_id,
                )
            else:
                sent = sender.send(message, from_address=from_address)
        except GraphAuthError as exc:
            self._microsoft_graph_record_error(exc)
            raise GraphSendDeferred(
                self.env._(
                    "Waiting for the Outlook mailbox %(mailbox)s to be reconnected: %(reason)s",
                    mailbox=self.smtp_user,
                    reason=graph_error_sentence(self.env, exc),
                ),
                message_id,
            ) from None
        except GraphTransientError as exc:
            if is_quota_refusal(exc):
                until = self.env["microsoft.outlook.graph.send.ledger"].sudo()._quota_refused(self)
                raise GraphSendDeferred(
                    self.env._(
                        "Exchange refused to send from %(mailbox)s: its daily recipient limit "
                        "is reached (mail sent from Outlook counts too). Odoo tries again after "
                        "%(time)s UTC.",
                        mailbox=self.smtp_user,
                        time=until.strftime("%Y-%m-%d %H:%M"),
                    ),
                    message_id,
                ) from None
            pause = timedelta(seconds=exc.retry_after) if exc.retry_after else DEFAULT_PAUSE
            self.microsoft_graph_paused_until = now + pause
            raise GraphSendDeferred(
                self.env._(
                    "Waiting: Microsoft 365 is busy for %(mailbox)s; the mail is tried again "
                    "after %(time)s UTC. (%(reason)s)",
                    mailbox=self.smtp_user,
                    time=self.microsoft_graph_paused_until,
                    reason=graph_error_text(self.env, exc),
                ),
                message_id,
            ) from None
        except GraphAmbiguousSendError as exc:
            raise MailDeliveryException(
                self.env._("Mail Delivery Uncertain"),
                self.env._(
                    "Microsoft may have accepted this mail before the connection dropped; to "
                    "never deliver it twice, Odoo did not send it again. Look for it in the "
                    "Sent Items of %(mailbox)s before resending. (%(reason)s)",
                    mailbox=self.smtp_user,
                    reason=graph_error_text(self.env, exc),
                ),
            ) from None
        except GraphError as exc:
            self._microsoft_graph_record_error(exc)
            raise MailDeliveryException(
                self.env._("Mail Delivery Failed"),
                self.env._("Microsoft Graph refused the mail: %s", graph_error_text(self.env, exc)),
            ) from None
        if not already_sent:
            # Exchange counts the message from when it accepted it, a moment after it was
            # admitted: a window that ends from there never ends before Exchange's does.
            # (A copy found in Sent Items was counted by the attempt that sent it.)
            accepted = self._microsoft_graph_now().replace(microsecond=0) + timedelta(seconds=1)
            self.env["microsoft.outlook.graph.send.ledger"].sudo()._confirm_sent(
                self._microsoft_graph_budget_account(), message_id, accepted
            )
        if not self.microsoft_graph_last_sent_at or (
            self.microsoft_graph_last_sent_at < now - LAST_SENT_RESOLUTION
        ):
            # At most one write a minute: concurrent senders would queue on this row.
            self.microsoft_graph_last_sent_at = now
        ids = {
            "microsoft_graph_message_id": sent.id,
            "microsoft_graph_internet_message_id": sent.internet_message_id,
        }
        mails = self.env["mail.mail"].sudo().search([("message_id", "=", message_id)])
        mails.write(ids)
        # Odoo deletes the mail once sent: its notifications keep the ids.
        self.env["mail.notification"].sudo().search([("mail_mail_id", "in", mails.ids)]).write(ids)
        _logger.info(
            "[Graph API] mail %s sent through %s (%s requests): Microsoft id %s, "
            "internetMessageId %s",
            message_id,
            email_normalize(self.smtp_user),
            sent.requests,
            sent.id or "-",
            sent.internet_message_id,
        )
        return sent

    def _microsoft_graph_store_tokens(self, token_set, account=None, connection=None):
        result = super()._microsoft_graph_store_tokens(
            token_set, account=account, connection=connection
        )
        if account and account.get("account_tid"):
            # A server of a new tenant: its external recipient limit, in this transaction.
            address = account.get("account_address") or self.smtp_user or ""
            self.env["microsoft.outlook.graph.tenant"].sudo()._ensure(
                account["account_tid"], address.rpartition("@")[2] or None
            )
        return result

    def _microsoft_graph_switch_values(self):
        return {"smtp_authentication": GRAPH, "smtp_pass": False}

    def _get_personal_mail_servers_limit(self):
        if self.smtp_authentication == GRAPH:
            # Exchange Online accepts 30 messages a minute per mailbox.
            return 30
        return super()._get_personal_mail_servers_limit()

    def test_smtp_connection(self, autodetect_max_email_size=False):
        graph_servers = self.filtered(lambda server: server.smtp_authentication == GRAPH)
        for server in graph_servers:
            checks = server.sudo()._microsoft_graph_test()
            if autodetect_max_email_size:
                # Graph has no SIZE to ask: Exchange Online's own limit is the answer.
                server.max_email_size = MAX_MESSAGE_SIZE / 1024**2
            if len(self) == 1 and autodetect_max_email_size:
                return server._microsoft_graph_test_action(
                    [
                        server.env._(
                            "Max Email Size set to %(size)s MB: the message size Exchange "
                            "Online accepts through Microsoft Graph (attachments included).",
                            size=f"{server.max_email_size:g}",
                        ),
                        *checks,
                    ],
                    title=server.env._("Max Email Size Updated"),
                    sticky=False,
                    # as Odoo's own Detect Max Limit: the form reloads to show the new size
                    next={"type": "ir.actions.act_window_close"},
                )
            if len(self) == 1:
                return server._microsoft_graph_test_action(checks, sticky=False)
        others = self - graph_servers
        if others:
            return super(IrMailServer, others).test_smtp_connection(autodetect_max_email_size)
        return True
