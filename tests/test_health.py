from datetime import timedelta
from email.message import EmailMessage

from odoo import fields
from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase, connect_without_browser


@tagged("post_install", "-at_install")
class TestHealth(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.outgoing = connect_without_browser(self, self.create_outgoing())
        self.incoming = connect_without_browser(self, self.create_incoming())
        self.Mailbox = self.env["microsoft.outlook.graph.mailbox"]

    def notifications(self):
        return self.env["mail.message"].search_count([("message_type", "=", "user_notification")])

    def test_every_graph_server_on_one_list(self):
        self.env.flush_all()
        rows = self.Mailbox.search([])
        self.assertEqual(sorted(rows.mapped("direction")), ["incoming", "outgoing"])
        self.assertEqual(set(rows.mapped("status")), {"valid"})
        self.assertFalse(self.Mailbox.search([("needs_attention", "=", True)]))
        outgoing_row = rows.filtered(lambda row: row.direction == "outgoing")
        self.assertEqual(outgoing_row.mail_server_id, self.outgoing)
        self.assertEqual(outgoing_row.action_open_server()["res_id"], self.outgoing.id)

    def test_a_server_needing_reconnect_needs_attention(self):
        self.env["microsoft.outlook.graph.connection"]._write_committed(
            self.outgoing, {"needs_reconnect": True, "last_error": "Revoked."}
        )
        self.env.flush_all()
        [row] = self.Mailbox.search([("needs_attention", "=", True)])
        self.assertEqual(row.mail_server_id, self.outgoing)
        self.assertEqual(row.status, "reconnect")

    def test_daily_check_reports_each_problem_once(self):
        soon = fields.Date.today() + timedelta(days=10)
        self.env["ir.config_parameter"].sudo().set_param(
            "microsoft_outlook_graph.secret_expiry", fields.Date.to_string(soon)
        )
        mail = self.env["mail.mail"].create(
            {
                "email_from": defaults.ADMIN,
                "email_to": "customer@example.com",
                "subject": "Stuck",
                "mail_server_id": self.outgoing.id,
            }
        )
        self.env.cr.execute(
            "UPDATE mail_mail SET create_date = now() - interval '2 hours' WHERE id = %s",
            [mail.id],
        )
        self.env.invalidate_all()
        before = self.notifications()
        self.assertEqual(self.Mailbox._cron_microsoft_graph_health_check(), 2)
        self.assertEqual(self.notifications(), before + 2)
        # The next day, the same problems: nothing new.
        self.assertEqual(self.Mailbox._cron_microsoft_graph_health_check(), 0)
        self.assertEqual(self.notifications(), before + 2)
        # Solved, then back: reported again.
        mail.unlink()
        self.Mailbox._cron_microsoft_graph_health_check()
        again = self.env["mail.mail"].create(
            {
                "email_from": defaults.ADMIN,
                "email_to": "other@example.com",
                "subject": "Stuck again",
                "mail_server_id": self.outgoing.id,
            }
        )
        self.env.cr.execute(
            "UPDATE mail_mail SET create_date = now() - interval '2 hours' WHERE id = %s",
            [again.id],
        )
        self.env.invalidate_all()
        self.assertEqual(self.Mailbox._cron_microsoft_graph_health_check(), 1)

    def test_daily_check_reports_failing_notifications(self):
        self.env["microsoft.outlook.graph.subscription"].create(
            {"server_id": self.incoming.id, "last_error": "The validation request timed out."}
        )
        problems = self.Mailbox._current_problems()
        subject, body, record = problems[f"notifications:{self.incoming.id}"]
        self.assertIn(defaults.ADMIN, subject)
        self.assertIn("The validation request timed out.", body)
        self.assertEqual(record, self.incoming)
        self.incoming.microsoft_graph_use_notifications = False
        self.assertNotIn(f"notifications:{self.incoming.id}", self.Mailbox._current_problems())

    def test_the_list_counts_the_account_the_sender_spends(self):
        """One account key for the sender and the list: a shared mailbox with Send As only
        spends the connected account's budget (shared with that account's own server), and
        a server with no account yet spends its mailbox address's, however it was typed."""
        tenant = self.sandbox.directory.tenant(defaults.TENANT_ID)
        self.sandbox.add_shared_mailbox(tenant, "support@contoso.test", "Support")
        self.sandbox.grant("support@contoso.test", defaults.ADMIN, "SendAs")
        shared = connect_without_browser(
            self, self.create_outgoing("support@contoso.test", kind="shared", sequence=0)
        )
        self.assertFalse(shared.microsoft_graph_full_access)
        # Odoo sends nothing while tests run; this one is about sending.
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        mail = self.env["mail.mail"].create(
            {
                "email_from": "support@contoso.test",
                "email_to": "customer@example.com, other@example.com",
                "subject": "Sent as the shared mailbox",
                "auto_delete": False,
                "mail_server_id": shared.id,
            }
        )
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        not_connected = self.create_outgoing(
            "Jobs <Jobs@Contoso.test>", from_filter="jobs@contoso.test"
        )
        message = EmailMessage()
        message["To"] = "applicant@example.com"
        message["Message-Id"] = "<not-connected@odoo>"
        Ledger = self.env["microsoft.outlook.graph.send.ledger"]
        Ledger._admit_message(not_connected, message)
        self.env.flush_all()
        self.env.invalidate_all()
        spent = {
            server: sum(
                Ledger.search([("account", "=", server._microsoft_graph_budget_account())]).mapped(
                    "recipient_count"
                )
            )
            for server in (self.outgoing, shared, not_connected)
        }
        self.assertEqual(list(spent.values()), [2, 2, 1])
        rows = self.Mailbox.search([("direction", "=", "outgoing")])
        for server, recipients in spent.items():
            row = rows.filtered(lambda row, server=server: row.mail_server_id == server)
            self.assertEqual(
                (row.recipients_used, server.microsoft_graph_recipients_used),
                (recipients, recipients),
                server.name,
            )
