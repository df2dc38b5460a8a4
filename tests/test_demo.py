"""The demo's setup (tools/demo_setup.py) leaves an Odoo that an admin uses at once."""

import ast
import datetime
from pathlib import Path

from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase, connect_without_browser

SETUP = Path(__file__).resolve().parent.parent / "tools" / "demo_setup.py"
DEMO = SETUP.parent / "demo.py"


def load_setup():
    namespace = {}
    exec(compile(SETUP.read_text(encoding="utf-8"), str(SETUP), "exec"), namespace)  # noqa: S102
    return namespace


def demo_modules():
    """The modules tools/demo.py installs (its MODULES), read without running it."""
    for node in ast.parse(DEMO.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MODULES":
            return ast.literal_eval(node.value)
    return ()


@tagged("post_install", "-at_install")
class TestDemoModules(GraphTransactionCase):
    def test_demo_installs_contacts_for_readmes_chatter_message(self):
        # The imported mail's contacts need a menu, and the first chatter message a record.
        modules = demo_modules()
        self.assertIn("contacts", modules)
        known = self.env["ir.module.module"].search([("name", "in", list(modules))])
        self.assertEqual(sorted(known.mapped("name")), sorted(modules))
        self.assertNotIn("uninstallable", known.mapped("state"))


@tagged("post_install", "-at_install")
class TestDemoSetup(GraphTransactionCase):
    configure_in_test_transaction = False

    def setUp(self):
        super().setUp()
        self.registry_enter_test_mode()
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        # The mailbox holds mail from before the demo started, as the demo fixture's does.
        now = self.sandbox.clock.datetime()
        for day, subject in ((3, "Order 1042 shipped"), (2, "Lunch on Friday?")):
            self.sandbox.deliver(
                defaults.ADMIN,
                f"From: Bob Example <bob@example.test>\r\nTo: {defaults.ADMIN}\r\n"
                f"Subject: {subject}\r\nMessage-ID: <demo-{day}@example.test>\r\n\r\n"
                "Hello from before the connection.\r\n",
                received=now - datetime.timedelta(days=day),
            )
        base_url = self.env["ir.config_parameter"].sudo().get_param("web.base.url")
        self.outgoing, self.incoming = load_setup()["setup"](
            self.env,
            client_id=defaults.CLIENT_ID,
            client_secret=defaults.CLIENT_SECRET,
            tenant=defaults.TENANT_ID,
            sandbox_url=self.sandbox.base_url,
            ca_file=self.sandbox.ca_file,
            base_url=base_url,
        )
        self.admin = self.env.ref("base.user_admin")
        self.env.ref("base.user_admin").notification_type = "inbox"

    def test_admin_has_an_address_and_no_security_mail(self):
        self.assertEqual(self.admin.email, defaults.ADMIN)
        self.assertFalse(
            self.env["mail.mail"].search([("subject", "ilike", "Security Update")]),
            "no 'Security Update: Email Changed' mail waits in the queue",
        )

    def test_admin_sends_a_chatter_message_to_an_outside_address(self):
        connect_without_browser(self, self.outgoing)
        customer = self.env["res.partner"].create(
            {"name": "Customer", "email": "customer@example.com"}
        )
        message = customer.with_user(self.admin).message_post(
            body="Your quotation is ready.",
            partner_ids=customer.ids,
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
        )
        notification = message.notification_ids.filtered(lambda n: n.res_partner_id == customer)
        self.assertEqual(notification.notification_status, "sent", notification.failure_reason)
        # sent from the Administrator's own mailbox, as the Administrator
        self.assertEqual(len(self.sandbox.messages(defaults.ADMIN, "sentitems")), 1)
        self.assertIn(defaults.ADMIN, message.email_from)

    def test_fetch_now_imports_the_mail_already_in_the_mailbox(self):
        connect_without_browser(self, self.incoming)
        self.incoming.button_confirm_login()
        self.assertEqual(self.incoming.state, "done")
        action = self.incoming.fetch_mail()
        self.assertEqual(action["params"]["type"], "success", action["params"]["message"])
        self.assertEqual(self.incoming.microsoft_graph_imported_count, 2)
        partners = self.env["res.partner"].search(
            [("name", "in", ["Order 1042 shipped", "Lunch on Friday?"])]
        )
        self.assertEqual(len(partners), 2, "each message became a new contact")
