import logging

from odoo import api, models

from ..services.sending_limits import parse_quota_ndr

_logger = logging.getLogger(__name__)


class MailThread(models.AbstractModel):
    _inherit = "mail.thread"

    @api.model
    def message_route(self, message, message_dict, model=None, thread_id=None, custom_values=None):
        # Exchange's report that it refused a mail for the daily recipient limit names every
        # recipient: Odoo's bounce handling would blame each of their addresses. The mail
        # itself goes back to the queue instead, whichever incoming server read the report.
        if message.get_content_type() == "multipart/report" or message.get(
            "X-MS-Exchange-Message-Is-Ndr"
        ):
            original = parse_quota_ndr(message.as_bytes())
            if original and self.env["microsoft.outlook.graph.send.ledger"].sudo()._requeue_refused(
                original
            ):
                return []
        return super().message_route(
            message, message_dict, model=model, thread_id=thread_id, custom_values=custom_values
        )
