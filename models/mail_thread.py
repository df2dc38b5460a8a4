import logging

from odoo import api, models

from ..services.sending_limits import parse_quota_ndr

_logger = logging.getLogger(__name__)


class GraphImportSource:
    """The context mark of a message read through Graph from a connected mailbox.

    A Python object, not a value: a context that arrives over RPC cannot hold one, so only
    this addon's own import can say that a message came from Microsoft's side.
    """

    __slots__ = ("server_id",)

    def __init__(self, server_id):
        self.server_id = server_id


GRAPH_IMPORT_SOURCE = "microsoft_graph_import_source"


class MailThread(models.AbstractModel):
    _inherit = "mail.thread"

    @api.model
    def message_route(self, message, message_dict, model=None, thread_id=None, custom_values=None):
        # Exchange's report that it refused a mail for the daily recipient limit names every
        # recipient: Odoo's bounce handling would blame each of their addresses. The mail
        # itself goes back to the queue instead, when the report provably comes from the
        # sending account's own Microsoft 365 (the ledger checks where it was read).
        if message.get_content_type() == "multipart/report" or message.get(
            "X-MS-Exchange-Message-Is-Ndr"
        ):
            original = parse_quota_ndr(message.as_bytes())
            source = self.env.context.get(GRAPH_IMPORT_SOURCE)
            if original and self.env["microsoft.outlook.graph.send.ledger"].sudo()._requeue_refused(
                original,
                message,
                source.server_id if isinstance(source, GraphImportSource) else None,
            ):
                return []
        return super().message_route(
            message, message_dict, model=model, thread_id=thread_id, custom_values=custom_values
        )
