from odoo import api, fields, models
from odoo.exceptions import UserError

GRAPH = "microsoft_graph"


class FetchmailServer(models.Model):
    _name = "fetchmail.server"
    _inherit = ["fetchmail.server", "microsoft.outlook.graph.mixin"]

    _microsoft_graph_direction = "incoming"

    server_type = fields.Selection(
        selection_add=[(GRAPH, "Outlook (Microsoft Graph)")],
        ondelete={GRAPH: "set default"},
    )
    microsoft_graph_folder = fields.Char(
        "Mail Folder",
        default="inbox",
        help="The folder to import from: a well-known name (inbox, archive, ...) or a folder id.",
    )

    def _compute_server_type_info(self):
        graph_servers = self.filtered(lambda server: server.server_type == GRAPH)
        graph_servers.server_type_info = self.env._(
            "Mail is read through Microsoft Graph with the Outlook account you connect. "
            "The username is the mailbox address, personal or shared."
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

    def button_confirm_login(self):
        graph_servers = self.filtered(lambda server: server.server_type == GRAPH)
        for server in graph_servers:
            checks = server.sudo()._microsoft_graph_test()
            server.sudo().write({"state": "done"})
            if len(self) == 1:
                return {
                    "type": "ir.actions.client",
                    "tag": "display_notification",
                    "params": {
                        "title": self.env._("Connection Test Successful!"),
                        "message": "\n".join(checks),
                        "type": "success",
                        "next": {"type": "ir.actions.client", "tag": "soft_reload"},
                    },
                }
        others = self - graph_servers
        if others:
            return super(FetchmailServer, others).button_confirm_login()
        return True
