from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphHttpCase


@tagged("post_install", "-at_install")
class TestConnect(GraphHttpCase):
    def setUp(self):
        super().setUp()
        self.authenticate("admin", "admin")

    def assert_connected(self, server, address):
        self.assertEqual(server.microsoft_graph_status, "valid")
        user = self.sandbox.user(address)
        self.assertEqual(server.microsoft_graph_account_oid, user.id)
        self.assertEqual(server.microsoft_graph_account_tid, defaults.TENANT_ID)
        self.assertFalse(self.env["microsoft.outlook.graph.flow"].sudo().search([]))

    def test_outgoing_personal_mailbox(self):
        server = self.create_outgoing()
        response = self.sign_in_and_return(self.start_connect(server))
        self.assertEqual(response.status_code, 303)
        self.assertTrue(response.headers["Location"].endswith(f"/odoo/ir.mail_server/{server.id}"))
        self.assert_connected(server, defaults.ADMIN)
        self.assertIn("Mail.Send", server.microsoft_graph_scopes)
        self.assertEqual(server.microsoft_graph_account_name, defaults.ADMIN_NAME)
        action = server.test_smtp_connection()
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn(defaults.ADMIN, action["params"]["message"])

    def test_incoming_personal_mailbox(self):
        server = self.create_incoming()
        response = self.sign_in_and_return(self.start_connect(server))
        self.assertEqual(response.status_code, 303)
        self.assert_connected(server, defaults.ADMIN)
        self.assertIn("Mail.ReadWrite", server.microsoft_graph_scopes)
        server.button_confirm_login()
        self.assertEqual(server.state, "done")

    def test_shared_mailbox(self):
        server = self.create_outgoing(defaults.SALES, kind="shared")
        response = self.sign_in_and_return(self.start_connect(server))
        self.assertEqual(response.status_code, 303)
        self.assert_connected(server, defaults.ADMIN)
        self.assertIn("Mail.Send.Shared", server.microsoft_graph_scopes)
        message = server.test_smtp_connection()["params"]["message"]
        self.assertIn("Send As", message)
        incoming = self.create_incoming(defaults.SALES, kind="shared")
        self.sign_in_and_return(self.start_connect(incoming))
        self.assertEqual(incoming.microsoft_graph_status, "valid")
        incoming.button_confirm_login()

    def test_personal_server_from_preferences(self):
        user = self.env["res.users"].create(
            {
                "name": "Alice",
                "login": "alice",
                "password": "alice-password-1",
                "email": defaults.ALICE,
                "group_ids": [(6, 0, [self.env.ref("base.group_user").id])],
            }
        )
        self.env["ir.config_parameter"].sudo().set_param(
            "base_setup.default_external_email_server", True
        )
        self.authenticate("alice", "alice-password-1")
        action = (
            self.env["res.users"]
            .with_user(user)
            .action_setup_outgoing_mail_server("microsoft_graph")
        )
        self.assertEqual(action["type"], "ir.actions.act_url")
        response = self.sign_in_and_return(action["url"], login=defaults.ALICE)
        self.assertEqual(response.status_code, 303)
        self.assertIn("/odoo/my-preferences/", response.headers["Location"])
        server = user.outgoing_mail_server_id
        self.assertTrue(server.active)
        self.assertEqual(server.sudo().microsoft_graph_status, "valid")
        self.assertEqual(user.outgoing_mail_server_type, "microsoft_graph")

    def test_disconnect_wipes_tokens(self):
        server = self.create_outgoing()
        self.sign_in_and_return(self.start_connect(server))
        server.action_microsoft_graph_disconnect()
        self.assertEqual(server.microsoft_graph_status, "not_connected")
        self.assertFalse(server.microsoft_graph_tokens_sealed)
        self.assertFalse(server.microsoft_graph_account_oid)

    def test_reconnect_replaces_the_tokens(self):
        server = self.create_outgoing()
        self.sign_in_and_return(self.start_connect(server))
        first = server.microsoft_graph_tokens_sealed
        self.sign_in_and_return(self.start_connect(server))
        self.assertNotEqual(server.microsoft_graph_tokens_sealed, first)
        self.assertEqual(server.microsoft_graph_status, "valid")

    def test_two_servers_in_two_tabs(self):
        """Pending sign-ins do not overwrite each other."""
        outgoing, incoming = self.create_outgoing(), self.create_incoming()
        first, second = self.start_connect(outgoing), self.start_connect(incoming)
        self.sign_in_and_return(second)
        self.sign_in_and_return(first)
        self.assertEqual(outgoing.microsoft_graph_status, "valid")
        self.assertEqual(incoming.microsoft_graph_status, "valid")

    def test_odoo_own_outlook_flow_still_answers(self):
        """A state of Odoo's IMAP/SMTP flow goes to Odoo's controller untouched."""
        with mute_logger("odoo.addons.microsoft_outlook.controllers.main"):
            response = self.url_open(
                '/microsoft_outlook/confirm?code=x&state={"model": "ir.mail_server", "id": 1, '
                '"csrf_token": "forged"}',
                allow_redirects=False,
            )
        self.assertEqual(response.status_code, 403)
