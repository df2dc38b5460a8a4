from odoo.modules.neutralize import neutralize_database
from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.hooks import uninstall_hook

from .common import GraphTransactionCase, connect_without_browser


@tagged("post_install", "-at_install")
class TestLifecycle(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.outgoing = connect_without_browser(self, self.create_outgoing())
        self.incoming = connect_without_browser(self, self.create_incoming())

    def test_neutralized_copy_forgets_the_microsoft_connections(self):
        self.start_connect(self.create_outgoing("alice@contoso.test"))
        self.env.flush_all()
        neutralize_database(self.env.cr)
        self.env.invalidate_all()
        for server in (self.outgoing, self.incoming):
            self.assertFalse(server.active)
            self.assertEqual(server.microsoft_graph_status, "not_connected")
            self.assertFalse(server.microsoft_graph_tokens_sealed)
        self.assertFalse(self.env["microsoft.outlook.graph.flow"].sudo().search([]))

    def test_uninstall_leaves_no_secret_and_no_active_graph_server(self):
        uninstall_hook(self.env)
        Config = self.env["ir.config_parameter"].sudo()
        self.assertFalse(Config.search([("key", "=like", "microsoft_outlook_graph.%")]))
        self.assertFalse(self.outgoing.active)
        self.assertFalse(self.incoming.active)
