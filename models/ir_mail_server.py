import logging
import smtplib
from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import email_normalize

from odoo.addons.base.models.ir_mail_server import MailDeliveryException

from ..services.errors import GraphAuthError, GraphError, GraphTransientError
from ..services.send import GraphAmbiguousSendError, GraphSender

_logger = logging.getLogger(__name__)

GRAPH = "microsoft_graph"
# How long a throttled or unreachable mailbox rests when Microsoft names no delay.
DEFAULT_PAUSE = timedelta(seconds=60)
LAST_SENT_RESOLUTION = timedelta(minutes=1)


class GraphSendDeferred(smtplib.SMTPServerDisconnected):
    """Not sent, not failed: the mail stays in Odoo's queue for a later run.

    Odoo's mail queue leaves a mail "outgoing" (and stops the batch) only on a
    disconnected SMTP session, hence the base class.
    """

    def __init__(self, reason, message_id=None):
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


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

    def send_message(self, message, smtp_from=None, smtp_to_list=None):
        if self._sender is None:
            self._sender = self.server._microsoft_graph_sender()
        return self.server._microsoft_graph_send(message, self._sender)

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

    def _compute_smtp_authentication_info(self):
        graph_servers = self.filtered(lambda server: server.smtp_authentication == GRAPH)
        graph_servers.smtp_authentication_info = self.env._(
            "Mail leaves through Microsoft Graph with the Outlook account you connect: no SMTP "
            "host, port or password. The username is the mailbox address, personal or shared."
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
            session.send_message(message)
        finally:
            # A pre-established session belongs to the caller, as with SMTP.
            if session is not smtp_session:
                session.quit()
        return message["Message-Id"]

    def _microsoft_graph_sender(self):
        self.ensure_one()
        return GraphSender(
            self._microsoft_graph_client(),
            save_to_sent_items=self.microsoft_graph_save_to_sent_items,
        )

    def _microsoft_graph_send(self, message, sender=None):
        """Send Odoo's own MIME message through Graph and record what Microsoft says.

        Transient trouble (throttling, outages, a connection waiting for a reconnect)
        raises :class:`GraphSendDeferred`, which keeps the mail queued; anything
        Microsoft refuses for good raises ``MailDeliveryException`` with its reason.
        """
        self.ensure_one()
        message_id = message["Message-Id"]
        now = fields.Datetime.now()
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
        shared = self.microsoft_graph_mailbox_kind == "shared"
        sender = sender or self._microsoft_graph_sender()
        try:
            sent = sender.send(
                message.as_bytes(),
                from_address=self._microsoft_graph_mailbox_address() if shared else None,
            )
        except GraphAuthError as exc:
            self._microsoft_graph_record_error(exc)
            raise GraphSendDeferred(
                self.env._(
                    "Waiting for the Outlook mailbox %(mailbox)s to be reconnected: %(reason)s",
                    mailbox=self.smtp_user,
                    reason=exc.user_message,
                ),
                message_id,
            ) from None
        except GraphTransientError as exc:
            pause = timedelta(seconds=exc.retry_after) if exc.retry_after else DEFAULT_PAUSE
            self.microsoft_graph_paused_until = now + pause
            raise GraphSendDeferred(
                self.env._(
                    "Waiting: Microsoft 365 is busy for %(mailbox)s; the mail is tried again "
                    "after %(time)s UTC. (%(reason)s)",
                    mailbox=self.smtp_user,
                    time=self.microsoft_graph_paused_until,
                    reason=exc,
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
                    reason=exc,
                ),
            ) from None
        except GraphError as exc:
            self._microsoft_graph_record_error(exc)
            raise MailDeliveryException(
                self.env._("Mail Delivery Failed"),
                self.env._("Microsoft Graph refused the mail: %s", exc),
            ) from None
        if not self.microsoft_graph_last_sent_at or (
            self.microsoft_graph_last_sent_at < now - LAST_SENT_RESOLUTION
        ):
            # At most one write a minute: concurrent senders would queue on this row.
            self.microsoft_graph_last_sent_at = now
        self.env["mail.mail"].sudo().search([("message_id", "=", message_id)]).write(
            {
                "microsoft_graph_message_id": sent.id,
                "microsoft_graph_internet_message_id": sent.internet_message_id,
            }
        )
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
            if len(self) == 1:
                return server._microsoft_graph_test_action(checks, sticky=False)
        others = self - graph_servers
        if others:
            return super(IrMailServer, others).test_smtp_connection(autodetect_max_email_size)
        return True
