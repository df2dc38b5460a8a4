from datetime import timedelta

from odoo import fields
from odoo.tests import TransactionCase, tagged

ADDRESS = "news@contoso.test"


@tagged("post_install", "-at_install")
class TestMailingForecast(TransactionCase):
    """The forecast a mailing shows for a Microsoft 365 mailbox, from the sending ledger."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = cls.env["ir.mail_server"].create(
            {
                "name": "Newsletter mailbox",
                "smtp_authentication": "microsoft_graph",
                "smtp_user": ADDRESS,
                "from_filter": ADDRESS,
            }
        )
        cls.env["res.partner"].create(
            [{"name": f"Reader {n}", "email": f"reader{n}@bulk.test"} for n in range(20)]
        )
        cls.now = fields.Datetime.now().replace(microsecond=0)
        # 9,990 of the 10,000 recipients of the day were sent an hour ago.
        cls.env["microsoft.outlook.graph.send.ledger"].create(
            {
                "account": ADDRESS,
                "sent_at": cls.now - timedelta(hours=1),
                "recipient_count": 9_990,
                "mail_server_id": cls.server.id,
            }
        )

    def make_mailing(self, domain="[('email', 'like', '@bulk.test')]", **values):
        return self.env["mailing.mailing"].create(
            {
                "subject": "November news",
                "body_html": "<p>News</p>",
                "email_from": ADDRESS,
                "mail_server_id": self.server.id,
                "mailing_model_id": self.env["ir.model"]._get("res.partner").id,
                "mailing_domain": domain,
                **values,
            }
        )

    def test_a_mailing_over_the_budget_says_how_long_and_what_to_do(self):
        mailing = self.make_mailing()
        self.assertEqual(mailing.total, 20)
        text = mailing.microsoft_graph_forecast
        self.assertIn("20 recipients", text)
        self.assertIn("10 recipients Exchange still allows", text)
        self.assertIn("another outgoing server", text)
        rolls_on = self.now - timedelta(hours=1) + timedelta(days=1)
        self.assertIn(rolls_on.strftime("%Y-%m-%d %H:"), text)

    def test_a_mailing_within_the_budget_or_through_smtp_says_nothing(self):
        self.assertFalse(
            self.make_mailing(
                domain="[('email', '=', 'reader1@bulk.test')]"
            ).microsoft_graph_forecast
        )
        smtp = self.env["ir.mail_server"].create(
            {"name": "SMTP", "smtp_host": "smtp.example.com", "from_filter": "example.com"}
        )
        self.assertFalse(self.make_mailing(mail_server_id=smtp.id).microsoft_graph_forecast)

    def test_a_sending_mailing_shows_when_its_last_mails_leave(self):
        mailing = self.make_mailing()
        mailing.state = "sending"
        mail = self.env["mail.mail"].create(
            {
                "email_from": ADDRESS,
                "email_to": "reader0@bulk.test",
                "subject": "November news",
                "mailing_id": mailing.id,
                "microsoft_graph_budget_server_id": self.server.id,
            }
        )
        self.assertTrue(mail._microsoft_graph_is_bulk())
        self.assertIn("its last mails leave about", mailing.microsoft_graph_forecast)
