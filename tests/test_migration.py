import time

from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase


@tagged("post_install", "-at_install")
class TestMigration(GraphTransactionCase):
    """Odoo's Outlook IMAP/SMTP servers become Graph servers in place."""

    def outlook_values(self):
        return {
            "microsoft_outlook_refresh_token": "plaintext-refresh",
            "microsoft_outlook_access_token": "plaintext-access",
            "microsoft_outlook_access_token_expiration": int(time.time()) + 3600,
        }

    def test_outgoing_outlook_server_switches_to_graph(self):
        server = self.env["ir.mail_server"].create(
            {
                "name": "Outlook SMTP",
                "smtp_authentication": "outlook",
                "smtp_host": "smtp.outlook.com",
                "smtp_port": 587,
                "smtp_encryption": "starttls",
                "smtp_user": defaults.ADMIN,
                "from_filter": defaults.ADMIN,
                "sequence": 3,
                **self.outlook_values(),
            }
        )
        action = server.with_user(
            self.env.ref("base.user_admin")
        ).action_microsoft_graph_switch_from_outlook()
        self.assertEqual(action["type"], "ir.actions.act_url")
        self.assertTrue(action["url"].startswith(self.sandbox.base_url))
        self.assertEqual(server.smtp_authentication, "microsoft_graph")
        self.assertEqual(
            (server.smtp_user, server.from_filter, server.sequence),
            (defaults.ADMIN, defaults.ADMIN, 3),
        )
        self.assertFalse(server.microsoft_outlook_refresh_token)
        self.assertFalse(server.microsoft_outlook_access_token)
        self.assertEqual(server.microsoft_graph_status, "not_connected")

    def test_incoming_outlook_server_switches_to_graph(self):
        model = self.env["ir.model"]._get("res.partner")
        server = self.env["fetchmail.server"].create(
            {
                "name": "Outlook IMAP",
                "server_type": "outlook",
                "server": "imap.outlook.com",
                "port": 993,
                "is_ssl": True,
                "user": defaults.ADMIN,
                "object_id": model.id,
                "original": True,
                **self.outlook_values(),
            }
        )
        server.with_user(
            self.env.ref("base.user_admin")
        ).action_microsoft_graph_switch_from_outlook()
        self.assertEqual(server.server_type, "microsoft_graph")
        self.assertEqual(
            (server.user, server.object_id, server.original), (defaults.ADMIN, model, True)
        )
        self.assertFalse(server.microsoft_outlook_refresh_token)
        self.assertEqual(server.microsoft_graph_folder, "inbox")
