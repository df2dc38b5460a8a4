from odoo import fields, models


class MailNotification(models.Model):
    """Microsoft's ids of a mail sent through Graph, kept on the notification: the
    ``mail.mail`` that held them first is deleted once sent."""

    _inherit = "mail.notification"

    microsoft_graph_message_id = fields.Char("Microsoft Message Id", readonly=True, copy=False)
    microsoft_graph_internet_message_id = fields.Char(
        "Microsoft internetMessageId", readonly=True, copy=False
    )

    def _to_store_defaults(self, target):
        fnames = super()._to_store_defaults(target)
        if self.env.user.has_group("base.group_system"):
            # For the delivery popover: what an admin quotes to trace the mail in Exchange.
            fnames += ["microsoft_graph_message_id", "microsoft_graph_internet_message_id"]
        return fnames
