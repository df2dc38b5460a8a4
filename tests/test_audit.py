"""The Microsoft ids of a sent mail outlive the mail.mail that Odoo deletes."""

from odoo.tests import tagged

from odoo.addons.mail.tools.discuss import Store
from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphHttpCase, GraphTransactionCase, connect_without_browser


@tagged("post_install", "-at_install")
class TestSentMailIds(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        self.server = connect_without_browser(self, self.create_outgoing())
        self.env.user.partner_id.email = defaults.ADMIN
        self.customer = self.env["res.partner"].create(
            {"name": "Customer", "email": "customer@example.com"}
        )

    def test_chatter_message_keeps_the_ids_on_its_notification(self):
        message = self.customer.message_post(
            body="Your quotation is ready.",
            partner_ids=self.customer.ids,
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
        )
        notification = message.notification_ids.filtered(
            lambda n: n.res_partner_id == self.customer
        )
        # In tests Odoo sends a notification mail at once, then deletes it.
        self.assertFalse(self.env["mail.mail"].search([("mail_message_id", "=", message.id)]))
        self.assertEqual(notification.notification_status, "sent")
        self.assertTrue(notification.microsoft_graph_message_id)
        sent = self.sandbox.messages(defaults.ADMIN, "sentitems")
        self.assertIn(
            notification.microsoft_graph_internet_message_id,
            [item.internet_message_id for item in sent],
        )
        # The delivery popover reads the notification from the store: admins see the ids.
        store = Store()
        store.add(notification)
        values = store.get_result()["mail.notification"][0]
        self.assertEqual(
            values["microsoft_graph_internet_message_id"],
            notification.microsoft_graph_internet_message_id,
        )


@tagged("post_install", "-at_install")
class TestDeliveryPopover(GraphHttpCase):
    def test_admin_sees_the_ids_in_the_delivery_popover(self):
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        connect_without_browser(self, self.create_outgoing())
        self.env.ref("base.user_admin").partner_id.email = defaults.ADMIN
        customer = self.env["res.partner"].create(
            {"name": "Customer", "email": "customer@example.com"}
        )
        message = customer.with_user(self.env.ref("base.user_admin")).message_post(
            body="Your quotation is ready.",
            partner_ids=customer.ids,
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
        )
        self.assertTrue(message.notification_ids.microsoft_graph_internet_message_id)
        self.env.flush_all()
        self.start_tour(
            f"/odoo/res.partner/{customer.id}",
            "microsoft_outlook_graph_delivery_popover",
            login="admin",
        )
