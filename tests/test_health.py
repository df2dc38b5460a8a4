from datetime import timedelta
from email.message import EmailMessage

from odoo import fields
from odoo.tests import TransactionCase, tagged
from odoo.tools import SQL

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
        self.assertEqual(self.Mailbox._cron_health_check(), 2)
        self.assertEqual(self.notifications(), before + 2)
        # The next day, the same problems: nothing new.
        self.assertEqual(self.Mailbox._cron_health_check(), 0)
        self.assertEqual(self.notifications(), before + 2)
        # Solved, then back: reported again.
        mail.unlink()
        self.Mailbox._cron_health_check()
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
        self.assertEqual(self.Mailbox._cron_health_check(), 1)

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


SCALE_TENANT = "00000000-0000-0000-0000-00000000cafe"


@tagged("post_install", "-at_install")
class TestScreensAtScale(TransactionCase):
    """The health list of many mailboxes and the form of the busiest one, built straight in
    the tables (as many connected servers and queued mails would leave them), read as the
    web client reads them; their queries counted, not their time."""

    def setUp(self):
        super().setUp()
        # The connections are read on cursors of their own; in test mode those share the
        # test's transaction, which holds them.
        self.registry_enter_test_mode()

    def add_servers(self, first, count, connected=True):
        """count Graph servers, each with ten ledger entries of the last day; connected: to
        accounts of one tenant (rows of their own connection), else never connected."""
        created = self.env["ir.mail_server"].create(
            [
                {
                    "name": f"Mailbox {n}",
                    "smtp_authentication": "microsoft_graph",
                    "smtp_user": f"user{n}@contoso.test",
                    "from_filter": f"user{n}@contoso.test",
                }
                for n in range(first, first + count)
            ]
        )
        Tenant = self.env["microsoft.outlook.graph.tenant"]
        if not Tenant.search([("tenant_id", "=", SCALE_TENANT)]):
            Tenant.create({"tenant_id": SCALE_TENANT, "name": "Contoso"})
        cr = self.env.cr
        if connected:
            cr.execute(
                """
                INSERT INTO microsoft_outlook_graph_connection
                       (res_model, res_id, account_oid, account_tid, account_address)
                SELECT 'ir.mail_server', s.id, 'oid-' || s.id, %s, s.smtp_user
                  FROM ir_mail_server s WHERE s.id = ANY(%s)
                """,
                [SCALE_TENANT, created.ids],
            )
        cr.execute(
            """
            INSERT INTO microsoft_outlook_graph_send_ledger
                   (account, sent_at, recipient_count, tenant, external_count, confirmed)
            SELECT CASE WHEN %s THEN 'oid-' || s.id ELSE s.smtp_user END,
                   (now() at time zone 'UTC') - n * interval '1 hour', 3, %s, 1, true
              FROM ir_mail_server s, generate_series(1, 10) n WHERE s.id = ANY(%s)
            """,
            [connected, SCALE_TENANT, created.ids],
        )
        self.env.invalidate_all()
        return created

    def add_waiting(self, server, count):
        """count mails queued for the sending limits of server, two recipients each (one a
        partner), every tenth one mass mail."""
        partner = self.env["res.partner"].create({"name": "Customer", "email": "c@example.com"})
        message = self.env["mail.message"].create({"subject": "Newsletter", "body": "<p>Hi</p>"})
        cr = self.env.cr
        cr.execute(
            """
            INSERT INTO mail_mail (mail_message_id, state, email_to, body_html, headers,
                                   microsoft_graph_budget_server_id, auto_delete)
            SELECT %s, 'outgoing', 'customer' || n || '@example.com', '<p>Hi</p>',
                   CASE WHEN n %% 10 = 0 THEN '{''Precedence'': ''bulk''}' END, %s, true
              FROM generate_series(1, %s) n
            RETURNING id
            """,
            [message.id, server.id, count],
        )
        ids = [row[0] for row in cr.fetchall()]
        cr.execute(
            "INSERT INTO mail_mail_res_partner_rel (mail_mail_id, res_partner_id) "
            "SELECT unnest(%s::int[]), %s",
            [ids, partner.id],
        )
        self.env.invalidate_all()

    def read_health_list(self, limit=1000):
        Mailbox = self.env["microsoft.outlook.graph.mailbox"]
        fields = Mailbox.get_views([(False, "list")])["models"][Mailbox._name]["fields"]
        return Mailbox.web_search_read([], {name: {} for name in fields}, limit=limit)

    def read_form(self, server):
        fields = server.get_views([(False, "form")])["models"]["ir.mail_server"]["fields"]
        return server.web_read({name: {} for name in fields})

    def measured(self, read, *args):
        """(queries, result) of read on cold record caches (views and ormcaches warm, as in
        a running server)."""
        read(*args)
        self.env.invalidate_all()
        before = self.env.cr.sql_log_count
        result = read(*args)
        return self.env.cr.sql_log_count - before, result

    def test_health_list_costs_no_query_per_mailbox(self):
        self.add_servers(0, 25)
        self.add_servers(25, 25, connected=False)
        few, rows = self.measured(self.read_health_list)
        self.assertEqual(rows["length"], 50)
        self.add_servers(50, 225)
        self.add_servers(275, 225, connected=False)
        many, rows = self.measured(self.read_health_list)
        self.assertEqual(rows["length"], 500)
        self.assertEqual(many, few, "a query per mailbox")
        self.assertEqual({row["recipients_used"] for row in rows["records"]}, {30})

    def test_first_page_and_its_count_cost_no_query_per_mailbox(self):
        """A full first page (80 rows) makes the web client count every row of the list: that
        count is one query, and the page costs as many queries for 100 mailboxes as for 500."""
        Mailbox = self.env["microsoft.outlook.graph.mailbox"]
        self.add_servers(0, 50)
        self.add_servers(50, 50, connected=False)
        few_counted, count = self.measured(Mailbox.search_count, [])
        self.assertEqual(count, 100)
        few, page = self.measured(self.read_health_list, 80)
        self.assertEqual((len(page["records"]), page["length"]), (80, 100))
        self.add_servers(100, 200)
        self.add_servers(300, 200, connected=False)
        many_counted, count = self.measured(Mailbox.search_count, [])
        self.assertEqual(count, 500)
        many, page = self.measured(self.read_health_list, 80)
        self.assertEqual((len(page["records"]), page["length"]), (80, 500))
        self.assertEqual((few_counted, many_counted), (1, 1))
        self.assertEqual(many, few, "a query per mailbox")
        # The count reads the servers only: the joins of the figures it does not read (the
        # mail queue, the failed imports, the tenant) are left out of its plan.
        self.env.cr.execute(SQL("EXPLAIN %s", Mailbox._search([]).select("COUNT(*)")))
        plan = "\n".join(line for (line,) in self.env.cr.fetchall())
        for table in ("mail_mail", "microsoft_outlook_graph_failed_message", "_tenant"):
            self.assertNotIn(table, plan)

    def test_busiest_form_costs_no_query_per_waiting_mail(self):
        busiest = self.add_servers(0, 500)[0]
        self.add_waiting(busiest, 1_000)
        few, [form] = self.measured(self.read_form, busiest)
        self.assertEqual(form["microsoft_graph_waiting_count"], 1_000)
        self.add_waiting(busiest, 9_000)
        many, [form] = self.measured(self.read_form, busiest)
        self.assertEqual(form["microsoft_graph_waiting_count"], 10_000)
        self.assertTrue(form["microsoft_graph_queue_empties_at"])
        self.assertEqual(many, few, "queries that grow with the waiting mails")

    def test_servers_without_a_budget_read_zeros(self):
        """An SMTP server's form, and a Graph server being created, have no sending budget:
        their figures read as zero, without asking the ledger."""
        smtp = self.env["ir.mail_server"].create({"name": "SMTP", "smtp_host": "smtp.example.com"})
        draft = self.env["ir.mail_server"].new(
            {"smtp_authentication": "microsoft_graph", "smtp_user": "new@contoso.test"}
        )
        for server in (smtp, draft):
            self.assertEqual(
                (
                    server.microsoft_graph_recipients_used,
                    server.microsoft_graph_waiting_count,
                    server.microsoft_graph_queue_empties_at,
                ),
                (0, 0, False),
            )
