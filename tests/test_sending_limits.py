import datetime
import threading

from odoo import SUPERUSER_ID, api
from odoo.exceptions import ValidationError
from odoo.orm.environments import Transaction
from odoo.tests import TransactionCase, tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.sandbox.exchange_limits import quota_ndr, tenant_ndr

from .common import GraphTransactionCase, connect_without_browser

LEDGER_LOGGER = "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_send_ledger"
MAIL_LOGGERS = (
    "odoo.addons.mail.models.mail_mail",
    "odoo.addons.microsoft_outlook_graph.models.ir_mail_server",
    "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_send_ledger",
    "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_tenant",
    "odoo.addons.microsoft_outlook_graph.services.graph",
    "odoo.addons.microsoft_outlook_graph.services.send",
)


def addresses(count, prefix="r"):
    return ", ".join(f"{prefix}{n}@example.com" for n in range(count))


class SendingLimitsCase(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.registry_enter_test_mode()
        Server = type(self.env["ir.mail_server"])
        self.patch(Server, "_disable_send", classmethod(lambda cls: False))
        # Odoo's clock is the sandbox's, so that both see the same day roll on; it stands
        # still while the test runs, however slow the machine: only advance() moves it.
        self.patch(Server, "_microsoft_graph_now", lambda server: self.now())
        self.server = connect_without_browser(self, self.create_outgoing(sequence=1))
        # A queue run's slice per mailbox (models/mail_mail.py) reads the same clock: it
        # binds only when a test moves time or sets it.
        self.sandbox.clock.freeze()
        self.Ledger = self.env["microsoft.outlook.graph.send.ledger"]

    def now(self):
        return self.sandbox.clock.datetime().replace(tzinfo=None, microsecond=0)

    def make_mail(self, email_to="customer@example.com", bulk=False, **values):
        return self.env["mail.mail"].create(
            {
                "email_from": f"Contoso Admin <{defaults.ADMIN}>",
                "email_to": email_to,
                "subject": "Newsletter" if bulk else "Invoice INV/2026/0042",
                "body_html": "<p>Hello</p>",
                "auto_delete": False,
                "headers": repr({"Precedence": "bulk"}) if bulk else False,
                **values,
            }
        )

    def run_queue(self):
        with mute_logger(*MAIL_LOGGERS):
            self.env["mail.mail"].process_email_queue()

    def connect_reports_mailbox(self):
        """The sending mailbox's own Graph incoming server, where Exchange's reports land."""
        incoming = connect_without_browser(
            self,
            self.create_incoming(object_id=self.env["ir.model"]._get("res.partner").id),
        )
        incoming.state = "done"
        return incoming

    def fetch_through_graph(self, incoming):
        """One import of the incoming server, in a transaction of its own as the cron runs it."""
        self.env.flush_all()
        with mute_logger(*MAIL_LOGGERS), self.registry.cursor() as cr:
            env = api.Environment(cr, self.env.uid, {})
            self.assertIsNone(incoming.with_env(env)._fetch_mail())
        self.env.invalidate_all()

    def advance_to(self, moment):
        seconds = (moment - self.now()).total_seconds()
        if seconds > 0:
            self.sandbox.advance(seconds + 1)


@tagged("post_install", "-at_install")
class TestSendingLimits(SendingLimitsCase):
    def test_ledger_counts_each_message_against_the_signed_in_account(self):
        partner = self.env["res.partner"].create({"name": "Bob", "email": "bob@example.com"})
        mail = self.make_mail(
            email_to=addresses(3), email_cc="cc@example.com", recipient_ids=[(6, 0, partner.ids)]
        )
        self.run_queue()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        entries = self.Ledger.search([("mail_id", "=", mail.id)])
        self.assertEqual(sorted(entries.mapped("recipient_count")), [1, 4])
        self.assertEqual(set(entries.mapped("account")), {self.server.microsoft_graph_account_oid})
        self.assertEqual(entries.mapped("message_id"), [mail.message_id] * 2)
        self.assertEqual(self.server.microsoft_graph_recipients_used, 5)
        self.assertEqual(self.server.microsoft_graph_messages_last_minute, 2)
        self.assertEqual(self.sandbox.recipients_used(defaults.ADMIN), 5)
        self.env.flush_all()  # the health list is a view over the tables
        health = self.env["microsoft.outlook.graph.mailbox"].search(
            [("mail_server_id", "=", self.server.id)]
        )
        self.assertEqual((health.recipients_used, health.waiting_count), (5, 0))

    def test_too_many_recipients_fail_at_once_with_the_next_step(self):
        mail = self.make_mail(email_to=addresses(501))
        self.run_queue()
        self.assertEqual(mail.state, "exception")
        self.assertIn("501 recipients", mail.failure_reason)
        self.assertIn("Recipients per Message", mail.failure_reason)
        self.assertFalse(self.sandbox.outbox())
        self.assertFalse(self.Ledger.search([("mail_id", "=", mail.id)]))
        # A tenant that raised its limit: the admin raises the server's, and the mail goes.
        self.server.microsoft_graph_recipients_per_message = 1_000
        self.sandbox.configure_sending_limits(recipients_per_message=1_000)
        mail.mark_outgoing()
        self.run_queue()
        self.assertEqual(mail.state, "sent", mail.failure_reason)

    def test_limits_out_of_range_are_refused_with_a_reason(self):
        for values, words in (
            ({"microsoft_graph_recipients_per_message": 1_001}, "at most 1,000"),
            ({"microsoft_graph_messages_per_minute": -1}, "cannot be negative"),
        ):
            try:
                with self.env.cr.savepoint():
                    self.server.write(values)
            except ValidationError as error:
                self.assertIn(words, str(error))
            else:
                self.fail(f"{values} was accepted")
        self.assertEqual(self.server.microsoft_graph_recipients_per_message, 500)
        self.assertEqual(self.server.microsoft_graph_messages_per_minute, 30)

    def test_over_budget_mail_waits_with_a_time_and_leaves_by_itself(self):
        self.server.microsoft_graph_recipients_per_day = 5
        self.sandbox.configure_sending_limits(recipients_per_day=5)
        mails = [self.make_mail(mail_server_id=self.server.id) for _ in range(7)]
        started = self.now()
        self.run_queue()
        states = [mail.state for mail in mails]
        self.assertEqual(states, ["sent"] * 5 + ["outgoing"] * 2)
        waiting = mails[5]
        self.assertIn("Exchange daily recipient limit", waiting.failure_reason)
        self.assertEqual(waiting.microsoft_graph_budget_server_id, self.server)
        self.assertEqual(waiting.microsoft_graph_retry_at, waiting.microsoft_graph_send_after)
        self.assertAlmostEqual(
            waiting.microsoft_graph_send_after,
            started + datetime.timedelta(days=1),
            delta=datetime.timedelta(minutes=2),
        )
        self.assertEqual(self.server.microsoft_graph_waiting_count, 2)
        self.env.flush_all()  # the health list is a view over the tables
        health = self.env["microsoft.outlook.graph.mailbox"].search(
            [("mail_server_id", "=", self.server.id)]
        )
        self.assertEqual(health.waiting_count, 2)
        self.assertTrue(health.queue_empties_at)
        self.assertEqual(self.server.microsoft_graph_recipients_used, 5)
        # Paced, not stuck: the daily health check does not report them.
        self.env["mail.mail"].flush_model()
        self.env.cr.execute(
            "UPDATE mail_mail SET create_date = create_date - interval '2 hours' WHERE id IN %s",
            [tuple(mail.id for mail in mails)],
        )
        problems = self.env["microsoft.outlook.graph.mailbox"]._current_problems()
        self.assertNotIn(f"stuck:{self.server.id}", problems)
        mails[6].microsoft_graph_send_after = False  # no estimate: that one is stuck
        problems = self.env["microsoft.outlook.graph.mailbox"]._current_problems()
        self.assertIn(f"stuck:{self.server.id}", problems)
        mails[6].microsoft_graph_send_after = mails[5].microsoft_graph_send_after
        cron = self.env.ref("mail.ir_cron_mail_scheduler_action")
        triggers = self.env["ir.cron.trigger"].search([("cron_id", "=", cron.id)])
        self.assertTrue(any(t.call_at > started + datetime.timedelta(hours=23) for t in triggers))
        self.run_queue()  # nothing changed: they keep waiting
        self.assertEqual(len(self.sandbox.outbox()), 5)
        self.advance_to(waiting.microsoft_graph_send_after)
        self.run_queue()
        self.assertEqual([mail.state for mail in mails], ["sent"] * 7)
        self.assertFalse(mails[6].microsoft_graph_budget_server_id)
        self.assertEqual(len(self.sandbox.outbox()), 7)

    def test_twelve_thousand_recipients_transactional_first_no_refusal(self):
        """120 newsletters of 100 recipients queued before 20 invoices: 12,020 recipients
        through a 10,000 a day, 30 a minute mailbox, time moved on as the queue asks."""
        self.sandbox.configure_sending_limits(refusal="error")
        bulk = [self.make_mail(email_to=addresses(100, f"b{n}-"), bulk=True) for n in range(120)]
        invoices = [self.make_mail(email_to=f"client{n}@example.com") for n in range(20)]
        forecast = None
        for _round in range(80):
            self.run_queue()
            waiting = [mail for mail in bulk + invoices if mail.state == "outgoing"]
            if not waiting:
                break
            # The budget fields are computed on read and not stored: read them afresh, not
            # as the first round left them in the cache.
            self.server.invalidate_recordset()
            if forecast is None and self.server.microsoft_graph_recipients_used > 9_000:
                forecast = self.server.microsoft_graph_queue_empties_at
            # Every waiting mail has its time: the queue run's slice reads the frozen clock, so
            # it never leaves mails for the next run without one, however slow the machine.
            self.advance_to(min(mail.microsoft_graph_send_after for mail in waiting))
        self.assertEqual([m.state for m in bulk + invoices], ["sent"] * 140)
        out = self.sandbox.outbox()
        self.assertEqual(len(out), 140)  # none refused, none twice
        self.assertFalse(self.sandbox.messages(defaults.ADMIN))  # no report of a refusal
        self.assertEqual(
            {d.internet_message_id for d in out[:20]}, {m.message_id for m in invoices}
        )
        self.assertTrue(forecast)
        drained = datetime.datetime.fromtimestamp(max(d.delivered_at for d in out), datetime.UTC)
        self.assertAlmostEqual(
            forecast, drained.replace(tzinfo=None), delta=datetime.timedelta(minutes=1)
        )

    def test_quota_refusal_as_an_error_waits_with_a_back_off(self):
        # Outlook sent mail Odoo cannot count: Exchange has less room than the ledger says.
        self.sandbox.configure_sending_limits(recipients_per_day=2, refusal="error")
        mails = [self.make_mail() for _ in range(3)]
        self.run_queue()
        self.assertEqual([mail.state for mail in mails], ["sent", "sent", "outgoing"])
        self.assertIn("daily recipient limit", mails[2].failure_reason)
        self.assertFalse(self.Ledger.search([("mail_id", "=", mails[2].id)]))
        paused = self.server.microsoft_graph_paused_until
        self.assertAlmostEqual(
            paused, self.now() + datetime.timedelta(minutes=30), delta=datetime.timedelta(minutes=1)
        )
        self.run_queue()
        self.assertEqual(mails[2].state, "outgoing")
        self.assertEqual(len(self.sandbox.outbox()), 2)

    def test_quota_report_puts_the_mail_back_before_bounce_handling(self):
        """The report reaches Odoo through the mailbox's Graph incoming server."""
        self.sandbox.configure_sending_limits(recipients_per_day=2, refusal="ndr")
        incoming = self.connect_reports_mailbox()
        partner = self.env["res.partner"].create({"name": "C", "email": "customer@example.com"})
        mails = [self.make_mail() for _ in range(3)]
        self.run_queue()
        self.assertEqual([mail.state for mail in mails], ["sent"] * 3)  # accepted, then...
        [report] = self.sandbox.messages(defaults.ADMIN)
        self.assertIn(b"SubmissionQuotaExceeded", report.raw)
        self.fetch_through_graph(incoming)
        self.assertEqual(mails[2].state, "outgoing")
        self.assertIn("Exchange refused this mail", mails[2].failure_reason)
        self.assertFalse(self.Ledger.search([("message_id", "=", mails[2].message_id)]))
        self.assertTrue(self.server.microsoft_graph_paused_until)
        self.assertEqual(partner.message_bounce, 0)  # not blamed for the mailbox's limit
        self.assertFalse(self.env["res.partner"].search([("name", "ilike", "Undeliverable")]))
        self.assertEqual(mails[0].state, "sent")

    def test_a_forged_quota_report_changes_nothing(self):
        """Whoever received a mail knows its Message-ID and can write Exchange's report,
        headers included: through Odoo's mail gateway, or into the mailbox from outside
        (Exchange's header firewall strips its organization headers), it changes nothing."""
        incoming = self.connect_reports_mailbox()
        mail = self.make_mail()
        self.run_queue()
        self.assertEqual(mail.state, "sent")
        original = f"Message-ID: {mail.message_id}\r\nSubject: Invoice\r\n\r\n".encode()
        mailbox = self.sandbox.mailbox(defaults.ADMIN)
        forged = quota_ndr(mailbox, original, ["customer@example.com"], self.sandbox.clock.now(), 1)
        self.assertIn(b"X-MS-Exchange-Organization-AuthAs: Internal", forged)
        with mute_logger(*MAIL_LOGGERS, LEDGER_LOGGER):
            self.env["mail.thread"].message_process("res.partner", forged)
        self.sandbox.deliver(defaults.ADMIN, forged)
        with mute_logger(LEDGER_LOGGER):
            self.fetch_through_graph(incoming)
        self.assertEqual(mail.state, "sent")
        self.assertFalse(self.server.microsoft_graph_paused_until)
        self.assertTrue(self.Ledger.search([("message_id", "=", mail.message_id)]))
        self.run_queue()
        self.assertEqual(len(self.sandbox.outbox()), 1)


@tagged("post_install", "-at_install")
class TestTenantLimit(SendingLimitsCase):
    """Exchange's tenant external recipient rate (TERRL, docs/sending-limits.md): every
    mailbox of the tenant spends one budget of external recipients."""

    def setUp(self):
        super().setUp()
        self.alice_server = connect_without_browser(
            self, self.create_outgoing(defaults.ALICE, sequence=2), login=defaults.ALICE
        )
        self.tenant = self.env["microsoft.outlook.graph.tenant"].search(
            [("tenant_id", "=", defaults.TENANT_ID)]
        )

    def make_alice_mail(self, email_to, **values):
        return self.make_mail(
            email_to=email_to,
            email_from=f"Alice <{defaults.ALICE}>",
            mail_server_id=self.alice_server.id,
            **values,
        )

    def test_the_tenant_is_made_at_connect_with_microsofts_formula(self):
        self.assertEqual(len(self.tenant), 1)
        self.assertEqual(self.tenant.name, defaults.TENANT_DOMAIN)
        # Licences unknown: the two accounts connected here.
        self.assertEqual(self.tenant.external_recipients_per_day, int(500 * 2**0.7 + 9_500))
        self.tenant.licence_count = 100
        self.assertEqual(self.tenant.external_recipients_per_day, 22_059)
        self.tenant.trial = True
        self.assertEqual(self.tenant.external_recipients_per_day, 5_000)
        self.tenant.external_limit = 1_234
        self.assertEqual(self.tenant.external_recipients_per_day, 1_234)
        self.assertIn(defaults.TENANT_DOMAIN, self.tenant.accepted_domain_list)
        self.tenant.extra_domains = "Fabrikam.test, *.corp.test"
        self.assertEqual(
            self.tenant._accepted_domains(), {"contoso.test", "fabrikam.test", "*.corp.test"}
        )

    def test_several_mailboxes_spend_the_tenant_budget_the_rest_wait_nothing_refused(self):
        self.tenant.external_limit = 3
        self.sandbox.configure_tenant_limit(defaults.TENANT_DOMAIN, external_recipients_per_day=3)
        first = self.make_mail(email_to="a@example.com, b@example.com")
        internal = self.make_mail(email_to=f"{defaults.ALICE}, x@contoso.test")
        second = self.make_alice_mail("c@example.com")
        third = self.make_alice_mail("d@example.com")
        self.run_queue()
        self.assertEqual(
            [mail.state for mail in (first, internal, second, third)],
            ["sent", "sent", "sent", "outgoing"],
            third.failure_reason,
        )
        self.assertIn("external recipients of the Microsoft 365 tenant", third.failure_reason)
        self.assertIn("every mailbox together", third.failure_reason)
        self.assertEqual(third.microsoft_graph_tenant_id, self.tenant)
        self.assertAlmostEqual(
            third.microsoft_graph_send_after,
            self.now() + datetime.timedelta(days=1),
            delta=datetime.timedelta(minutes=2),
        )
        self.assertEqual(self.tenant.external_used, 3)
        self.assertEqual(self.tenant.waiting_count, 1)
        # Nothing refused by Exchange: no report in either Inbox.
        self.assertEqual(self.sandbox.tenant_external_used(defaults.TENANT_DOMAIN), 3)
        self.assertFalse([m for m in self.sandbox.messages(defaults.ADMIN) if b"5.7.233" in m.raw])
        self.assertFalse([m for m in self.sandbox.messages(defaults.ALICE) if b"5.7.233" in m.raw])
        # Internal mail keeps going; the waiting one leaves when the window rolls on.
        later_internal = self.make_mail(email_to="y@contoso.test")
        self.run_queue()
        self.assertEqual(later_internal.state, "sent")
        self.assertEqual(third.state, "outgoing")
        self.assertTrue(self.alice_server.microsoft_graph_queue_empties_at)
        self.env.flush_all()
        health = self.env["microsoft.outlook.graph.mailbox"].search(
            [("mail_server_id", "in", (self.server | self.alice_server).ids)]
        )
        self.assertEqual(set(health.mapped("tenant_external_used")), {3})
        self.assertEqual(set(health.mapped("tenant_external_limit")), {3})
        self.advance_to(third.microsoft_graph_send_after)
        self.run_queue()
        self.assertEqual(third.state, "sent", third.failure_reason)
        self.assertFalse(third.microsoft_graph_tenant_id)

    def test_a_mail_of_more_external_recipients_than_the_tenant_allows_fails_at_once(self):
        self.tenant.external_limit = 3
        mail = self.make_mail(email_to=addresses(4))
        self.run_queue()
        self.assertEqual(mail.state, "exception")
        self.assertIn("4 external recipients", mail.failure_reason)
        self.assertFalse(self.sandbox.outbox())

    def test_forecast_of_waiting_mails_counts_the_tenant(self):
        self.tenant.external_limit = 2
        mails = [self.make_mail() for _ in range(3)]
        self.run_queue()
        self.assertEqual([mail.state for mail in mails], ["sent", "sent", "outgoing"])
        self.assertEqual(self.server.microsoft_graph_waiting_count, 1)
        self.assertAlmostEqual(
            self.server.microsoft_graph_queue_empties_at,
            self.now() + datetime.timedelta(days=1),
            delta=datetime.timedelta(minutes=2),
        )

    def test_tenant_report_puts_the_mail_back_and_pauses_the_tenant(self):
        """Outlook sent external mail Odoo cannot count: Exchange's 5.7.233 report, read
        through the mailbox's Graph incoming server, is believed as the recipient-rate one."""
        self.sandbox.configure_tenant_limit(defaults.TENANT_DOMAIN, external_recipients_per_day=2)
        incoming = self.connect_reports_mailbox()
        mails = [self.make_mail() for _ in range(3)]
        self.run_queue()
        self.assertEqual([mail.state for mail in mails], ["sent"] * 3)
        [report] = self.sandbox.messages(defaults.ADMIN)
        self.assertIn(b"5.7.233", report.raw)
        self.fetch_through_graph(incoming)
        self.assertEqual(mails[2].state, "outgoing")
        self.assertIn("tenant's daily limit of external recipients", mails[2].failure_reason)
        self.assertTrue(self.tenant.paused_until)
        self.assertFalse(self.server.microsoft_graph_paused_until)
        # Internal mail still goes; external mail waits for the tenant's pause.
        internal = self.make_mail(email_to="z@contoso.test")
        external = self.make_alice_mail("w@example.com")
        self.run_queue()
        self.assertEqual(internal.state, "sent")
        self.assertEqual(external.state, "outgoing")
        self.assertIn("Microsoft 365 tenant", external.failure_reason)

    def test_each_mailbox_gets_a_turn_least_recently_served_first(self):
        """A queue run spends at most a slice of time on one mailbox; the mailboxes served
        least recently go first."""
        self.env["ir.config_parameter"].set_param("microsoft_outlook_graph.send_slice_seconds", 0)
        self.server.microsoft_graph_last_sent_at = self.now()
        admin_mails = [self.make_mail(mail_server_id=self.server.id) for _ in range(3)]
        alice_mail = self.make_alice_mail("c@example.com")
        self.run_queue()
        # One mail each (a slice of 0 s lets the first one go), Alice's first.
        self.assertEqual(alice_mail.state, "sent")
        self.assertEqual([mail.state for mail in admin_mails].count("sent"), 1)
        self.assertEqual(
            self.sandbox.outbox()[0].internet_message_id.strip("<>"),
            alice_mail.message_id.strip("<>"),
        )
        waiting = [mail for mail in admin_mails if mail.state == "outgoing"]
        self.assertFalse([mail.failure_reason for mail in waiting if mail.failure_reason])
        self.assertFalse(self.Ledger.search([("mail_id", "in", [m.id for m in waiting])]))
        self.run_queue()
        self.run_queue()
        self.assertEqual([mail.state for mail in admin_mails], ["sent"] * 3)
        self.assertEqual(len(self.sandbox.outbox()), 4)

    def test_a_slow_mailbox_ends_its_turn_when_its_slice_of_time_is_spent(self):
        """The slice is measured on the clock the test moves: each send here takes 6 s of it,
        so a 10 s slice sends two mails a run, whatever the machine's speed."""
        self.env["ir.config_parameter"].set_param("microsoft_outlook_graph.send_slice_seconds", 10)
        Server = type(self.env["ir.mail_server"])
        send = Server._microsoft_graph_send

        def slow_send(server, *args, **kwargs):
            sent = send(server, *args, **kwargs)
            self.sandbox.advance(6)
            return sent

        self.patch(Server, "_microsoft_graph_send", slow_send)
        mails = [self.make_mail(mail_server_id=self.server.id) for _ in range(3)]
        self.run_queue()
        self.assertEqual([mail.state for mail in mails], ["sent", "sent", "outgoing"])
        self.assertFalse(mails[2].failure_reason)
        self.run_queue()
        self.assertEqual(mails[2].state, "sent")

    def test_transactional_mail_of_any_mailbox_before_mass_mail_of_the_tenant(self):
        self.tenant.external_limit = 2
        self.alice_server.microsoft_graph_last_sent_at = self.now()
        newsletters = [self.make_mail(bulk=True, mail_server_id=self.server.id) for _ in range(2)]
        invoice = self.make_alice_mail("buyer@example.com")
        self.run_queue()
        self.assertEqual(invoice.state, "sent", invoice.failure_reason)
        self.assertEqual(sorted(mail.state for mail in newsletters), ["outgoing", "sent"])

    def test_the_queue_takes_transactional_mail_of_the_whole_queue_first(self):
        invoice = self.make_mail(email_to="buyer@example.com")
        newsletters = [self.make_mail(bulk=True) for _ in range(2)]
        with mute_logger(*MAIL_LOGGERS):
            self.env["mail.mail"].process_email_queue(batch_size=1)
        self.assertEqual(invoice.state, "sent", invoice.failure_reason)
        self.assertEqual(sorted(mail.state for mail in newsletters), ["outgoing", "sent"])

    def test_a_forged_tenant_report_changes_nothing(self):
        mail = self.make_mail()
        self.run_queue()
        original = f"Message-ID: {mail.message_id}\r\nSubject: Invoice\r\n\r\n".encode()
        forged = tenant_ndr(
            self.sandbox.mailbox(defaults.ADMIN),
            original,
            ["customer@example.com"],
            self.sandbox.clock.now(),
            1,
        )
        with mute_logger(*MAIL_LOGGERS, LEDGER_LOGGER):
            self.env["mail.thread"].message_process("res.partner", forged)
        self.assertEqual(mail.state, "sent")
        self.assertFalse(self.tenant.paused_until)


@tagged("post_install", "-at_install")
class TestSendingLimitsTwoWorkers(TransactionCase):
    """Two workers admit mail for one account at once, in their own committed
    transactions: together they never spend more than the budget."""

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            server = env["ir.mail_server"].create(
                {
                    "name": "Two workers",
                    "smtp_authentication": "microsoft_graph",
                    "smtp_user": defaults.ADMIN,
                    "from_filter": defaults.ADMIN,
                    "microsoft_graph_recipients_per_day": 12,
                }
            )
            mails = env["mail.mail"].create(
                [
                    {"email_from": defaults.ADMIN, "email_to": "c@example.com", "subject": "x"}
                    for _ in range(20)
                ]
            )
            self.server_id, self.mail_ids = server.id, mails.ids
        self.addCleanup(self.drop_committed_state)

    def drop_committed_state(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["microsoft.outlook.graph.send.ledger"].search(
                [("mail_server_id", "=", self.server_id)]
            ).unlink()
            env["mail.mail"].browse(self.mail_ids).unlink()
            env["ir.mail_server"].browse(self.server_id).unlink()

    def test_two_workers_never_overspend(self):
        start = threading.Barrier(2)
        admitted, errors = [], []

        def worker(mail_ids):
            try:
                with self.registry.cursor() as cr:
                    cr.transaction = Transaction(self.registry)
                    env = api.Environment(cr, SUPERUSER_ID, {})
                    server = env["ir.mail_server"].browse(self.server_id)
                    start.wait(timeout=120)
                    Ledger = env["microsoft.outlook.graph.send.ledger"]
                    admitted.extend(Ledger._admit(server, env["mail.mail"].browse(mail_ids)).ids)
            except Exception as exc:  # reported by the test
                errors.append(exc)

        threads = [
            threading.Thread(target=worker, args=(ids,))
            for ids in (self.mail_ids[:10], self.mail_ids[10:])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        self.assertFalse([thread for thread in threads if thread.is_alive()])
        self.assertFalse(errors)
        self.assertEqual(len(admitted), 12)
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT sum(recipient_count) FROM microsoft_outlook_graph_send_ledger "
                "WHERE mail_server_id = %s",
                [self.server_id],
            )
            self.assertEqual(cr.fetchone()[0], 12)
