import email
import email.policy
from datetime import timedelta

from odoo import fields
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services import send as graph_send

from .common import GraphTransactionCase, connect_without_browser

MB = 1024 * 1024
MAIL_LOGGERS = (
    "odoo.addons.mail.models.mail_mail",
    "odoo.addons.microsoft_outlook_graph.services.graph",
    "odoo.addons.microsoft_outlook_graph.services.send",
    "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_mixin",
)


SERVER_LOGGER = "odoo.addons.microsoft_outlook_graph.models.ir_mail_server"


@tagged("post_install", "-at_install")
class TestSend(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.registry_enter_test_mode()
        # Odoo sends nothing while tests run; these tests are about sending.
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        self.server = connect_without_browser(self, self.create_outgoing(sequence=1))
        # The sending limits and a queue run's slice per mailbox read Odoo's clock through
        # _microsoft_graph_now: held still here (a test that needs time to pass moves it), so a
        # busy machine never ends a queue run's turn early.
        now = fields.Datetime.now().replace(microsecond=0)
        self.patch(type(self.server), "_microsoft_graph_now", lambda server: now)

    def make_mail(self, email_from=defaults.ADMIN, **values):
        return self.env["mail.mail"].create(
            {
                "email_from": f"Contoso Admin <{email_from}>",
                "email_to": "customer@example.com",
                "subject": "Quotation S00042",
                "body_html": "<p>Here is your quotation.</p>",
                "auto_delete": False,
                **values,
            }
        )

    def sent_messages(self, mailbox=defaults.ADMIN):
        return [
            email.message_from_bytes(sent.raw, policy=email.policy.default)
            for sent in self.sandbox.sent(mailbox)
        ]

    def test_odoo_mime_arrives_as_built(self):
        attachment = self.env["ir.attachment"].create(
            {"name": "quote.pdf", "raw": b"%PDF-1.4 quotation bytes \x00\x01\x02"}
        )
        mail = self.make_mail(
            references="<parent@odoo.test>",
            reply_to="Sales <catchall@contoso.test>",
            headers={"X-Odoo-Objects": "sale.order-42"},
            attachment_ids=[(6, 0, attachment.ids)],
        )
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [stored] = self.sent_messages()
        self.assertEqual(stored["Message-Id"], mail.message_id)
        self.assertEqual(stored["References"], "<parent@odoo.test>")
        self.assertIn("catchall@contoso.test", stored["Reply-To"])
        self.assertEqual(stored["X-Odoo-Objects"], "sale.order-42")
        [part] = [p for p in stored.iter_attachments() if p.get_filename() == "quote.pdf"]
        self.assertEqual(part.get_content(), b"%PDF-1.4 quotation bytes \x00\x01\x02")
        self.assertTrue(mail.microsoft_graph_message_id)
        self.assertEqual(mail.microsoft_graph_internet_message_id, mail.message_id)
        self.assertEqual(len(self.sandbox.outbox()), 1)

    def test_queue_run_sends_through_graph(self):
        mail = self.make_mail()
        self.env["mail.mail"].process_email_queue(email_ids=mail.ids)
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self.sandbox.outbox()), 1)

    def test_large_mail_goes_through_upload_sessions(self):
        big = bytes(range(256)) * (5 * MB // 256)
        attachment = self.env["ir.attachment"].create({"name": "big.bin", "raw": big})
        mail = self.make_mail(attachment_ids=[(6, 0, attachment.ids)])
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [stored] = self.sent_messages()
        [part] = [p for p in stored.iter_attachments() if p.get_filename() == "big.bin"]
        self.assertEqual(part.get_content(), big)
        self.assertTrue([e for e in self.sandbox.requests if e.method == "PUT"])

    def test_large_mail_is_drafted_without_its_big_attachment(self):
        """Odoo's message object reaches the sender: the big part is never flattened, and
        every header and byte still arrives as Odoo built them."""
        big = bytes(range(256)) * (4 * MB // 256) + b"tail"
        attachments = self.env["ir.attachment"].create(
            [
                {"name": "big.bin", "raw": big},
                {"name": "note.txt", "raw": b"a small note\r\n"},
            ]
        )
        mail = self.make_mail(
            references="<root@odoo.test> <parent@odoo.test>",
            reply_to="Sales <catchall@contoso.test>",
            headers={"X-Odoo-Objects": "sale.order-42", "Return-Path": "bounce+7@contoso.test"},
            attachment_ids=[(6, 0, attachments.ids)],
        )
        flattened = []
        flatten = graph_send._flatten

        def spy(message):
            raw, detached = flatten(message)
            flattened.append((len(raw), [part.name for part in detached]))
            return raw, detached

        self.patch(graph_send, "_flatten", spy)
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [(draft_size, detached)] = flattened
        self.assertEqual(detached, ["big.bin"])
        self.assertLess(draft_size, 100_000)
        [stored] = self.sent_messages()
        self.assertEqual(stored["Message-Id"], mail.message_id)
        self.assertEqual(stored["References"], "<root@odoo.test> <parent@odoo.test>")
        self.assertIn("catchall@contoso.test", stored["Reply-To"])
        self.assertEqual(stored["X-Odoo-Objects"], "sale.order-42")
        self.assertIn("bounce+7@contoso.test", stored["Return-Path"])
        files = {p.get_filename(): p.get_payload(decode=True) for p in stored.iter_attachments()}
        self.assertEqual(files["big.bin"], big)
        self.assertEqual(files["note.txt"], b"a small note\r\n")
        self.assertEqual(mail.microsoft_graph_internet_message_id, mail.message_id)
        self.assertEqual(len(self.sandbox.outbox()), 1)

    def test_shared_mailbox_sends_as_the_shared_address(self):
        shared = connect_without_browser(
            self, self.create_outgoing(defaults.SALES, kind="shared", sequence=0)
        )
        mail = self.make_mail(email_from=defaults.SALES, mail_server_id=shared.id)
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [stored] = self.sent_messages(defaults.SALES)
        self.assertIn(defaults.SALES, stored["From"])

    def shared_server(self, address, *rights):
        tenant = self.sandbox.directory.tenant(defaults.TENANT_ID)
        self.sandbox.add_shared_mailbox(tenant, address, "Support")
        for right in rights:
            self.sandbox.grant(address, defaults.ADMIN, right)
        return connect_without_browser(
            self, self.create_outgoing(address, kind="shared", sequence=0)
        )

    def send_as_not_checked(self, address):
        return (
            f"Not checked: the Send As (or Send on Behalf) right of {defaults.ADMIN} on "
            f"{address}, which Microsoft Graph shows only when a mail is sent. Without it the "
            "first mail fails, and its failure reason names the right to grant."
        )

    def send_small_and_large(self, server, address):
        big = bytes(range(256)) * (4 * MB // 256)
        attachment = self.env["ir.attachment"].create({"name": "big.bin", "raw": big})
        mails = self.make_mail(email_from=address, mail_server_id=server.id) | self.make_mail(
            email_from=address, mail_server_id=server.id, attachment_ids=[(6, 0, attachment.ids)]
        )
        mails.send()
        self.assertEqual(mails.mapped("state"), ["sent", "sent"], mails.mapped("failure_reason"))
        out = self.sandbox.outbox()
        self.assertEqual(len(out), 2)
        self.assertEqual({delivery.from_ for delivery in out}, {address})
        return mails

    def test_shared_mailbox_with_send_as_only_sends_through_the_account(self):
        """Every /users/{shared}/... route needs Full Access: with Send As alone, mail leaves
        through /me with the shared address as From, small and large (upload sessions)."""
        address = "support@contoso.test"
        shared = self.shared_server(address, "SendAs")
        self.assertFalse(shared.microsoft_graph_full_access)
        checks = shared._microsoft_graph_test()
        self.assertIn("no Full Access", checks[1])
        self.assertIn("Not checked", checks[2])
        # What was checked and what was not, the same words whether Send As is there or not.
        self.assertTrue(checks[1].startswith(f"Checked: {defaults.ADMIN} has no Full Access"))
        self.assertEqual(checks[2], self.send_as_not_checked(address))
        self.sandbox.clear_log()
        self.send_small_and_large(shared, address)
        self.assertFalse([e for e in self.sandbox.requests if "/users/" in e.path])
        self.assertEqual(len(self.sent_messages(defaults.ADMIN)), 2)  # the account's own

    def test_shared_mailbox_with_full_access_sends_from_the_shared_mailbox(self):
        address = "support@contoso.test"
        shared = self.shared_server(address, "FullAccess", "SendAs")
        self.assertTrue(shared.microsoft_graph_full_access)
        action = shared.test_smtp_connection()
        self.assertEqual(action["params"]["type"], "success")
        checks = action["params"]["message"].split("\n")
        self.assertIn("has Full Access", checks[1])
        self.assertTrue(checks[1].startswith(f"Checked: {defaults.ADMIN} has Full Access"))
        self.assertEqual(checks[2], self.send_as_not_checked(address))
        self.send_small_and_large(shared, address)
        self.assertEqual(len(self.sent_messages(address)), 1)  # the small one, drafted there

    def test_mail_back_in_the_queue_after_microsoft_accepted_it_is_not_sent_again(self):
        """The worker's transaction rolled back after Microsoft accepted the mail: the
        hand-over mark, committed apart, sends the next attempt to Sent Items first."""
        mail = self.make_mail()
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        # What a rollback after the send leaves: the mail queued again, the mark kept.
        mail.write({"state": "outgoing", "microsoft_graph_message_id": False})
        with self.assertLogs(SERVER_LOGGER, "WARNING") as logged:
            mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self.sandbox.outbox()), 1)
        self.assertTrue(mail.microsoft_graph_message_id)
        self.assertIn("not sent again", logged.output[0])

    def test_shared_mailbox_without_send_as_fails_with_the_right_to_grant(self):
        tenant = self.sandbox.directory.tenant(defaults.TENANT_ID)
        self.sandbox.add_shared_mailbox(tenant, "support@contoso.test", "Support")
        self.sandbox.grant("support@contoso.test", defaults.ADMIN, "FullAccess")
        shared = connect_without_browser(
            self, self.create_outgoing("support@contoso.test", kind="shared", sequence=0)
        )
        mail = self.make_mail(email_from="support@contoso.test", mail_server_id=shared.id)
        with mute_logger(*MAIL_LOGGERS):
            mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertIn("Send As", mail.failure_reason)
        self.assertFalse(self.sandbox.outbox())

    def test_throttled_mailbox_keeps_mails_queued(self):
        self.sandbox.inject_fault(
            "status", path=r"/messages$", method="POST", status=429, retry_after=30, times=1
        )
        # The pause counts from Odoo's now, which the test holds still and moves itself.
        now = [fields.Datetime.now().replace(microsecond=0)]
        self.patch(type(self.server), "_microsoft_graph_now", lambda server: now[0])
        first, second = self.make_mail(), self.make_mail(subject="Second")
        with mute_logger(*MAIL_LOGGERS):
            (first | second).send()
        self.assertEqual(first.state, "outgoing", first.failure_reason)
        self.assertEqual(second.state, "outgoing")
        self.assertIn("busy", first.failure_reason)
        paused = self.server.microsoft_graph_paused_until
        self.assertEqual(paused, now[0] + timedelta(seconds=30))
        # While paused, a queue run does not call Microsoft at all.
        self.sandbox.clear_log()
        with mute_logger(*MAIL_LOGGERS):
            (first | second).send()
        self.assertFalse(self.sandbox.requests)
        now[0] = paused + timedelta(seconds=1)
        (first | second).send()
        self.assertEqual((first | second).mapped("state"), ["sent", "sent"])
        self.assertEqual(len(self.sandbox.outbox()), 2)

    def test_throttled_first_send_logs_one_warning_not_an_error(self):
        """Odoo's queue logs a dropped session as an ERROR with a traceback; a throttled
        mailbox is no error: one WARNING line, and the mail stays queued."""
        self.sandbox.inject_fault(
            "status", path=r"/messages$", method="POST", status=429, retry_after=30, times=1
        )
        mail = self.make_mail()
        with (
            self.assertLogs("odoo.addons.mail.models.mail_mail", "DEBUG") as logs,
            mute_logger("odoo.addons.microsoft_outlook_graph.services.graph"),
        ):
            self.env["mail.mail"].process_email_queue(email_ids=mail.ids)
        self.assertEqual(mail.state, "outgoing", mail.failure_reason)
        [record] = logs.records
        self.assertEqual(record.levelname, "WARNING")
        self.assertIsNone(record.exc_info)
        self.assertIn(f"mail {mail.message_id} stays queued", record.getMessage())
        self.assertIn("busy", record.getMessage())

    def test_revoked_connection_keeps_mails_until_reconnected(self):
        self.sandbox.revoke(defaults.ADMIN)
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        mail = self.make_mail()
        with mute_logger(*MAIL_LOGGERS):
            mail.send()
        self.assertEqual(mail.state, "outgoing", mail.failure_reason)
        self.assertIn("reconnected", mail.failure_reason)
        self.assertEqual(self.server.microsoft_graph_status, "reconnect")
        connect_without_browser(self, self.server)
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self.sandbox.outbox()), 1)

    def test_answer_lost_after_send_is_not_sent_twice(self):
        self.sandbox.inject_fault("accept_then_drop", path=r"/send$", method="POST", times=1)
        mail = self.make_mail()
        with mute_logger(*MAIL_LOGGERS):
            mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self.sandbox.outbox()), 1)

    def test_permanent_refusal_is_explained(self):
        self.sandbox.inject_fault(
            "status",
            path=r"/messages$",
            method="POST",
            status=400,
            code="ErrorInvalidRecipients",
            times=1,
        )
        mail = self.make_mail()
        with mute_logger(*MAIL_LOGGERS):
            mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertIn("Microsoft Graph refused the mail", mail.failure_reason)
        self.assertFalse(self.sandbox.outbox())

    def test_expired_access_token_is_refreshed_and_sent(self):
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        mail = self.make_mail()
        with mute_logger("odoo.addons.microsoft_outlook_graph.services.graph"):
            mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)

    def test_fast_path_without_sent_items_uses_one_request(self):
        self.server.microsoft_graph_save_to_sent_items = False
        self.sandbox.clear_log()
        mail = self.make_mail()
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(
            [e.path.rsplit("/", 1)[-1] for e in self.sandbox.requests if "/v1.0/" in e.path],
            ["sendMail"],
        )
        self.assertFalse(mail.microsoft_graph_message_id)

    def test_chatter_message_leaves_through_graph(self):
        """A message posted on a record goes out by Odoo's own notification path."""
        self.env.user.email = defaults.ADMIN
        customer = self.env["res.partner"].create(
            {"name": "Customer", "email": "customer@example.com"}
        )
        record = self.env["res.partner"].create({"name": "Thread"})
        record.message_post(
            body="<p>Hello from the chatter</p>",
            subject="Chatter",
            partner_ids=customer.ids,
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
            mail_auto_delete=False,
        )
        mails = self.env["mail.mail"].search([("subject", "=", "Chatter")])
        self.assertTrue(mails)
        mails.send()
        self.assertEqual(set(mails.mapped("state")), {"sent"}, mails.mapped("failure_reason"))
        [stored] = [m for m in self.sent_messages() if "customer@example.com" in m["To"]]
        # Replies thread back into Odoo through the message's own headers.
        self.assertIn(stored["Message-Id"], mails.mapped("message_id"))
        # Odoo sends one copy per recipient partner; each left exactly once.
        self.assertEqual(len(self.sandbox.outbox()), len(self.sent_messages()))

    def test_template_mail_leaves_through_graph(self):
        template = self.env["mail.template"].create(
            {
                "name": "Welcome",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "subject": "Welcome {{ object.name }}",
                "body_html": "<p>Welcome</p>",
                "email_from": defaults.ADMIN,
                "email_to": "{{ object.email }}",
                "auto_delete": False,
            }
        )
        partner = self.env["res.partner"].create({"name": "Bob", "email": "bob@example.com"})
        mail = self.env["mail.mail"].browse(template.send_mail(partner.id))
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [stored] = self.sent_messages()
        self.assertEqual(stored["Subject"], "Welcome Bob")

    def test_mail_force_smtp_from_does_not_exist_in_odoo_19(self):
        """Odoo 19 reads no ``mail.force.smtp.from`` (its role went to the alias domain's
        default From and the servers' From filters): set or not, a Graph server sends the
        mail with its own From, as the SMTP path does."""
        self.env["ir.config_parameter"].sudo().set_param(
            "mail.force.smtp.from", "forced@contoso.test"
        )
        mail = self.make_mail()
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [stored] = self.sent_messages()
        self.assertEqual(stored["From"].addresses[0].addr_spec, defaults.ADMIN)
        self.assertNotIn("forced@", str(stored))

    def test_outside_from_leaves_as_the_notification_address(self):
        """Odoo 19's successor of the forced From: a From no server may send as is
        rewritten to the alias domain's notification address, and the Graph server whose
        From filter matches that address sends it."""
        domain = self.env["mail.alias.domain"].create(
            {"name": defaults.TENANT_DOMAIN, "default_from": defaults.ADMIN.split("@")[0]}
        )
        self.env.company.alias_domain_id = domain
        mail = self.make_mail()
        mail.email_from = "Bob Builder <bob@example.com>"
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        [stored] = self.sent_messages()
        [sender] = stored["From"].addresses
        self.assertEqual(sender.addr_spec, defaults.ADMIN)
        self.assertEqual(sender.display_name, "Bob Builder")
        self.assertEqual(len(self.sandbox.outbox()), 1)

    def test_mass_mailing_leaves_through_graph(self):
        if "mailing.mailing" not in self.env:
            self.skipTest("mass_mailing is not installed in this database")
        readers = self.env["res.partner"].create(
            [{"name": f"Reader {n}", "email": f"reader{n}@example.com"} for n in range(3)]
        )
        mailing = self.env["mailing.mailing"].create(
            {
                "subject": "Contoso news",
                "body_html": "<p>News of the month</p>",
                "email_from": f"Contoso Admin <{defaults.ADMIN}>",
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "mailing_domain": repr([("id", "in", readers.ids)]),
                "keep_archives": True,
            }
        )
        mailing.action_send_mail()
        traces = mailing.mailing_trace_ids
        self.assertEqual(traces.mapped("trace_status"), ["sent"] * 3, traces.mapped("failure_type"))
        stored = self.sent_messages()
        self.assertEqual(
            sorted(m["To"].addresses[0].addr_spec for m in stored),
            sorted(readers.mapped("email")),
        )
        for message in stored:
            # The mailing's own headers reach the readers' mail clients.
            self.assertTrue(message["List-Unsubscribe"])
            self.assertEqual(message["Precedence"], "list")
        self.assertEqual(len(self.sandbox.outbox()), 3)
