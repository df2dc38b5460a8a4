from odoo import api, fields, models
from odoo.exceptions import UserError

GRAPH = "microsoft_graph"


class IrMailServer(models.Model):
    _name = "ir.mail_server"
    _inherit = ["ir.mail_server", "microsoft.outlook.graph.mixin"]

    _microsoft_graph_direction = "outgoing"

    smtp_authentication = fields.Selection(
        selection_add=[(GRAPH, "Outlook (Microsoft Graph)")],
        ondelete={GRAPH: "set default"},
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

    def test_smtp_connection(self, autodetect_max_email_size=False):
        graph_servers = self.filtered(lambda server: server.smtp_authentication == GRAPH)
        for server in graph_servers:
            checks = server.sudo()._microsoft_graph_test()
            if len(self) == 1:
                return {
                    "type": "ir.actions.client",
                    "tag": "display_notification",
                    "params": {
                        "title": self.env._("Connection Test Successful!"),
                        "message": "\n".join(checks),
                        "type": "success",
                        "sticky": False,
                    },
                }
        others = self - graph_servers
        if others:
            return super(IrMailServer, others).test_smtp_connection(autodetect_max_email_size)
        return True
