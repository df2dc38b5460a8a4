from odoo import api, fields, models

from .microsoft_outlook_graph_mixin import GRAPH


class ResUsers(models.Model):
    _inherit = "res.users"

    outgoing_mail_server_type = fields.Selection(
        selection_add=[(GRAPH, "Outlook (Microsoft Graph)")],
        ondelete={GRAPH: "set default"},
    )

    @api.model
    def _get_mail_server_values(self, server_type):
        values = super()._get_mail_server_values(server_type)
        if server_type == GRAPH:
            values |= {
                "smtp_host": False,
                "smtp_authentication": GRAPH,
                "microsoft_graph_mailbox_kind": "personal",
            }
        return values

    @api.model
    def _get_mail_server_setup_end_action(self, smtp_server):
        if smtp_server.smtp_authentication == GRAPH:
            return smtp_server.action_microsoft_graph_connect()
        return super()._get_mail_server_setup_end_action(smtp_server)
