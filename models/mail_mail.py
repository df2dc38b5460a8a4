from odoo import fields, models

from .ir_mail_server import GraphSendDeferred


class MailMail(models.Model):
    _inherit = "mail.mail"

    microsoft_graph_message_id = fields.Char(
        "Microsoft Message Id", readonly=True, copy=False, groups="base.group_system"
    )
    microsoft_graph_internet_message_id = fields.Char(
        "Microsoft internetMessageId", readonly=True, copy=False, groups="base.group_system"
    )

    def _send(self, auto_commit=False, raise_exception=False, smtp_session=None, **kwargs):
        try:
            return super()._send(
                auto_commit=auto_commit,
                raise_exception=raise_exception,
                smtp_session=smtp_session,
                **kwargs,
            )
        except GraphSendDeferred as deferred:
            # Odoo flags a mail as failed before sending it and counts on a rollback
            # when the session drops; put it back in the queue instead, saying why.
            message_id = deferred.message_id
            waiting = self.filtered(lambda mail: mail.message_id == message_id)
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
