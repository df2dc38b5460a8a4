"""Importing Outlook mail through Microsoft Graph, against the local sandbox.

Cron runs go through a registry test cursor: its commits are savepoints, and leaving it
on an exception rolls back to the last one, as a killed worker's transaction would.
"""

import base64
import datetime
import email.utils
import gc
import logging
import tracemalloc
from unittest.mock import patch

from odoo import api, fields
from odoo.tests import freeze_time, tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services import sync as sync_module

from .common import GraphTransactionCase, connect_without_browser

_logger = logging.getLogger(__name__)
FETCH_LOGGER = "odoo.addons.microsoft_outlook_graph.models.fetchmail_server"
IMPORT_LOGGER = "odoo.addons.microsoft_outlook_graph.models.graph_import_run"
GRAPH_LOGGER = "odoo.addons.microsoft_outlook_graph.services.graph"
MIXIN_LOGGER = "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_mixin"
GATEWAY_LOGGER = "odoo.addons.mail.models.mail_thread"
CUSTOMER = "customer@example.test"


class Crash(BaseException):
    """A worker killed in the middle of a page: nothing catches it."""


def mime(subject, to=defaults.ADMIN, sender=CUSTOMER, message_id=None, headers=None, body=None):
    """A small RFC 5322 message; returns (bytes, its Message-ID)."""
    message_id = message_id or email.utils.make_msgid(domain="example.test")
    lines = [
        f"From: Customer <{sender}>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: {message_id}",
        f"Date: {email.utils.formatdate()}",
        "MIME-Version: 1.0",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
        "Content-Type: text/plain; charset=utf-8",
        "",
        body or f"Body of {subject}",
        "",
    ]
    return "\r\n".join(lines).encode(), message_id


def large_mime(subject, size):
    """A message with one attachment, about ``size`` bytes of MIME; (bytes, Message-ID)."""
    message_id = email.utils.make_msgid(domain="example.test")
    payload = base64.encodebytes(b"\x00\x01pdf" * (size * 3 // 4 // 5)).decode()
    text = f"""From: Customer <{CUSTOMER}>
To: {defaults.ADMIN}
Subject: {subject}
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/plain

See the attachment.
--B
Content-Type: application/octet-stream; name="{subject}.bin"
Content-Disposition: attachment; filename="{subject}.bin"
Content-Transfer-Encoding: base64

{payload}
--B--
"""
    return text.replace("\n", "\r\n").encode(), message_id


def bounce_mime(original_message_id, bounced_address):
    boundary = "REPORT-BOUNDARY"
    text = f"""From: MAILER-DAEMON@contoso.test (Mail Delivery System)
To: {defaults.ADMIN}
Subject: Undelivered Mail Returned to Sender
Message-ID: {email.utils.make_msgid(domain="contoso.test")}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain

Your message could not be delivered.

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; contoso.test

Final-Recipient: rfc822; {bounced_address}
Action: failed
Status: 5.1.1

--{boundary}
Content-Type: message/rfc822

From: Admin <{defaults.ADMIN}>
To: <{bounced_address}>
Subject: Hello
Message-ID: {original_message_id}

Hello
--{boundary}--
"""
    return text.replace("\n", "\r\n").encode()


@tagged("post_install", "-at_install")
class TestIncoming(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        # Token refreshes and cron commits use registry cursors: in test mode they share ours.
        self.registry_enter_test_mode()
        self.partner_model = self.env["ir.model"]._get("res.partner")
        self.server = self.connect(self.create_incoming(object_id=self.partner_model.id))
        self.cron = self.env.ref("mail.ir_cron_mail_gateway_action")

    # helpers -----------------------------------------------------------------------------

    def connect(self, server):
        connect_without_browser(self, server)
        server.state = "done"
        return server

    def deliver(self, subject, mailbox=defaults.ADMIN, received=None, **kwargs):
        raw, message_id = mime(subject, **kwargs)
        graph_id = self.sandbox.deliver(mailbox, raw, received=received)
        return graph_id, message_id

    def run_cron(self, servers=None, expect_error=False):
        """One call of the fetchmail cron's method, on a cursor whose commits stick."""
        servers = servers or self.server
        self.env.flush_all()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, self.env.uid, {"cron_id": self.cron.id})
            error = servers.with_env(env)._fetch_mail()
        self.env.invalidate_all()
        if not expect_error:
            self.assertIsNone(error, f"the run failed: {error}")
        return error

    def messages_with(self, message_id):
        return self.env["mail.message"].search([("message_id", "=", message_id)])

    def partners_named(self, subject):
        return self.env["res.partner"].search([("name", "=", subject)])

    def failed(self, server=None):
        return self.env["microsoft.outlook.graph.failed.message"].search(
            [("server_id", "=", (server or self.server).id)]
        )

    def assert_imported_once(self, message_ids):
        for message_id in message_ids:
            self.assertEqual(len(self.messages_with(message_id)), 1, message_id)

    # routing ---------------------------------------------------------------------------

    def test_routing_to_the_server_model(self):
        _graph_id, message_id = self.deliver("New lead from the web")
        self.run_cron()
        partner = self.partners_named("New lead from the web")
        self.assertEqual(len(partner), 1)
        message = self.messages_with(message_id)
        self.assertEqual((message.model, message.res_id), ("res.partner", partner.id))
        self.assertEqual(self.server.microsoft_graph_imported_count, 1)
        self.assertTrue(self.server.microsoft_graph_last_success)
        self.assertTrue(self.server.date)
        self.assertFalse(self.server.error_date)

    def test_routing_to_an_alias_and_keep_original(self):
        domain = self.env["mail.alias.domain"].search([("name", "=", "contoso.test")])
        domain = domain or self.env["mail.alias.domain"].create({"name": "contoso.test"})
        self.env["mail.alias"].create(
            {
                "alias_name": "support",
                "alias_domain_id": domain.id,
                "alias_model_id": self.partner_model.id,
                "alias_defaults": "{'comment': 'from the support alias'}",
            }
        )
        self.server.write({"object_id": False, "original": True})
        _graph_id, message_id = self.deliver(
            "Printer on fire", to=f"support@contoso.test, {defaults.ADMIN}"
        )
        self.run_cron()
        partner = self.partners_named("Printer on fire")
        self.assertIn("from the support alias", partner.comment)
        message = self.messages_with(message_id)
        self.assertEqual(message.res_id, partner.id)
        self.assertIn("original_email.eml", message.attachment_ids.mapped("name"))

    def test_reply_threads_into_the_record_odoo_wrote_from(self):
        partner = self.env["res.partner"].create({"name": "Existing customer"})
        sent = partner.message_post(body="Your quote", message_type="comment")
        self.server.object_id = False
        _graph_id, message_id = self.deliver(
            "Re: Your quote",
            headers={"In-Reply-To": sent.message_id, "References": sent.message_id},
        )
        self.run_cron()
        reply = self.messages_with(message_id)
        self.assertEqual((reply.model, reply.res_id), ("res.partner", partner.id))
        self.assertFalse(self.partners_named("Re: Your quote"))

    def test_bounce_is_recorded_on_the_partner(self):
        partner = self.env["res.partner"].create({"name": "Lost", "email": "lost@example.test"})
        sent = partner.message_post(body="Hello", message_type="comment", partner_ids=partner.ids)
        self.sandbox.deliver(defaults.ADMIN, bounce_mime(sent.message_id, "lost@example.test"))
        self.run_cron()
        self.assertEqual(partner.message_bounce, 1)
        self.assertFalse(self.failed())
        # Replayed by nothing: a second run does not count it again.
        self.run_cron()
        self.assertEqual(partner.message_bounce, 1)

    def test_shared_mailbox(self):
        shared = self.connect(
            self.create_incoming(defaults.SALES, kind="shared", object_id=self.partner_model.id)
        )
        self.sandbox.clear_log()
        _graph_id, message_id = self.deliver("To the sales team", mailbox=defaults.SALES)
        self.run_cron(shared)
        self.assertEqual(self.messages_with(message_id).model, "res.partner")
        paths = [entry.path for entry in self.sandbox.requests]
        self.assertTrue(any(f"/users/{defaults.SALES}/mailFolders" in p for p in paths), paths)
        self.assertTrue(self.sandbox.messages(defaults.SALES)[0].is_read)

    # where the import starts --------------------------------------------------------------

    def test_baseline_ignores_mail_received_before_the_connection(self):
        server = self.create_incoming(object_id=self.partner_model.id)
        _old_id, old_message_id = self.deliver("Before the connection")
        self.connect(server)
        self.assertTrue(server.microsoft_graph_delta_link)
        _new_id, new_message_id = self.deliver("After the connection")
        self.run_cron(server)
        self.assertFalse(self.messages_with(old_message_id))
        self.assertEqual(len(self.messages_with(new_message_id)), 1)

    def test_since_date_imports_older_mail(self):
        now = datetime.datetime.now(datetime.UTC)
        self.deliver("Ten days ago", received=now - datetime.timedelta(days=10))
        _id, two_days = self.deliver("Two days ago", received=now - datetime.timedelta(days=2))
        self.server.microsoft_graph_since = (now - datetime.timedelta(days=5)).replace(tzinfo=None)
        self.assertFalse(self.server.microsoft_graph_delta_link, "a new start date restarts")
        self.run_cron()
        self.assertEqual(len(self.messages_with(two_days)), 1)
        self.assertFalse(self.partners_named("Ten days ago"))
        self.assertEqual(self.server.microsoft_graph_imported_count, 1)

    # exactly once ----------------------------------------------------------------------

    def test_exactly_once_across_runs(self):
        first = [self.deliver(f"First {n}")[1] for n in range(3)]
        self.run_cron()
        second = [self.deliver(f"Second {n}")[1] for n in range(2)]
        self.run_cron()
        self.run_cron()
        self.assert_imported_once(first + second)
        self.assertEqual(self.server.microsoft_graph_imported_count, 5)

    def test_crash_in_the_middle_of_a_page_replays_it_once(self):
        self.patch(self.registry["fetchmail.server"], "_microsoft_graph_page_size", 2)
        message_ids = [self.deliver(f"Message {n}")[1] for n in range(5)]
        original = self.registry["mail.thread"].message_process
        calls = []

        def crash_on_the_fourth(thread, *args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                raise Crash
            return original(thread, *args, **kwargs)

        with patch.object(self.registry["mail.thread"], "message_process", crash_on_the_fourth):
            try:
                self.run_cron()
            except Crash:
                pass
            else:
                self.fail("the worker did not crash")
        self.env.invalidate_all()
        # The first page (2 messages) was committed with its checkpoint; the second page's
        # first message went down with the crash.
        self.assertEqual(self.server.microsoft_graph_imported_count, 2)
        self.assert_imported_once(message_ids[:2])
        self.assertFalse(self.messages_with(message_ids[2]))
        self.run_cron()
        self.assert_imported_once(message_ids)
        self.assertEqual(self.server.microsoft_graph_imported_count, 5)

    def test_stale_delta_link_resyncs_without_duplicates(self):
        before = [self.deliver(f"Before expiry {n}")[1] for n in range(3)]
        self.run_cron()
        self.sandbox.expire_delta_tokens(defaults.ADMIN)
        after = [self.deliver(f"After expiry {n}")[1] for n in range(2)]
        self.sandbox.clear_log()
        with mute_logger(GRAPH_LOGGER):
            self.run_cron()
        self.assertIn(410, [entry.status for entry in self.sandbox.requests])
        self.assert_imported_once(before + after)
        self.assertEqual(self.server.microsoft_graph_imported_count, 5)
        self.run_cron()
        self.assertEqual(self.server.microsoft_graph_imported_count, 5)

    # failures --------------------------------------------------------------------------

    def test_message_without_route_is_kept_then_retried(self):
        self.server.object_id = False
        _bad_id, bad_message_id = self.deliver("Nobody wants me")
        self.deliver("Re: a thread", headers={"In-Reply-To": "<unknown@example.test>"})
        partner = self.env["res.partner"].create({"name": "Known"})
        sent = partner.message_post(body="Hi", message_type="comment")
        _reply_id, reply_message_id = self.deliver(
            "Re: Hi", headers={"In-Reply-To": sent.message_id}
        )
        with mute_logger(FETCH_LOGGER, IMPORT_LOGGER, GATEWAY_LOGGER):
            self.run_cron()
        kept = self.failed()
        self.assertEqual(len(kept), 2)
        self.assertEqual(self.server.microsoft_graph_failed_count, 2)
        self.assertEqual(len(self.messages_with(reply_message_id)), 1, "the rest goes on")
        bad = kept.filtered(lambda record: record.internet_message_id == bad_message_id)
        self.assertEqual(bad.state, "failed")
        self.assertEqual(bad.subject, "Nobody wants me")
        self.assertIn("route", bad.error)
        self.assertTrue(bad.raw)
        self.assertFalse(self.sandbox.messages(defaults.ADMIN)[0].is_read)
        # Kept messages are not fetched again by later runs.
        self.run_cron()
        self.assertEqual(len(self.failed()), 2)

        self.server.object_id = self.partner_model
        bad.action_retry()
        self.assertEqual(bad.state, "done")
        self.assertEqual(len(self.messages_with(bad_message_id)), 1)
        self.env.cr.postcommit.run()
        self.assertTrue(self.sandbox.messages(defaults.ADMIN)[0].is_read)
        other = kept - bad
        other.action_discard()
        self.assertEqual(other.state, "discarded")
        self.assertEqual(self.server.microsoft_graph_failed_count, 0)
        self.assertEqual(self.server.microsoft_graph_imported_count, 2)
        action = self.server.action_microsoft_graph_failed_messages()
        self.assertEqual(action["domain"], [("server_id", "=", self.server.id)])
        # Closed ones are pruned after 30 days; one still failing is kept.
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE microsoft_outlook_graph_failed_message "
            "SET write_date = now() - interval '31 days' WHERE id IN %s",
            [tuple(kept.ids)],
        )
        still_failed = self.env["microsoft.outlook.graph.failed.message"].create(
            {"server_id": self.server.id, "graph_id": "kept-for-an-admin", "state": "failed"}
        )
        self.env.flush_all()
        kept.invalidate_recordset()
        self.env["microsoft.outlook.graph.failed.message"]._gc_closed_messages()
        self.assertFalse(kept.exists())
        self.assertTrue(still_failed.exists())

    def test_message_graph_cannot_give_is_kept_and_refetched_on_retry(self):
        graph_id, message_id = self.deliver("Unreadable for now")
        fault = self.sandbox.inject_fault(
            "status", path=r"/\$value$", status=404, code="ErrorItemNotFound", times=None
        )
        _other, other_message_id = self.deliver("Readable")
        with mute_logger(GRAPH_LOGGER):
            self.run_cron()
        self.sandbox.remove_fault(fault)
        kept = self.failed()
        # Both fail: the fault matches every $value step.
        self.assertEqual(set(kept.mapped("graph_id")), {graph_id, _other})
        self.assertFalse(kept[0].raw)
        self.assertIn("ErrorItemNotFound", kept[0].error)
        kept.action_retry()
        self.assertEqual(set(kept.mapped("state")), {"done"})
        self.assert_imported_once([message_id, other_message_id])
        self.assertEqual(set(kept.mapped("subject")), {"Unreadable for now", "Readable"})

    def test_message_microsoft_was_too_busy_to_give_comes_back_by_itself(self):
        _id, message_id = self.deliver("Busy")
        fault = self.sandbox.inject_fault(
            "status", path=r"/\$value$", status=503, retry_after=60, times=None
        )
        with mute_logger(GRAPH_LOGGER):
            self.run_cron()
        self.sandbox.remove_fault(fault)
        kept = self.failed()
        self.assertTrue(kept.retry_automatically)
        self.assertFalse(self.messages_with(message_id))
        self.run_cron()
        self.assertEqual(kept.state, "done")
        self.assertFalse(kept.retry_automatically)
        self.assertEqual(len(self.messages_with(message_id)), 1)
        self.assertEqual(self.server.microsoft_graph_imported_count, 1)
        self.assertTrue(self.sandbox.messages(defaults.ADMIN)[0].is_read)

    def test_message_over_the_size_limit_is_kept(self):
        self.server.microsoft_graph_max_size = 1
        _id, big_message_id = self.deliver("Large", body="x" * (1024 * 1024 + 10))
        _id, small_message_id = self.deliver("Small")
        with mute_logger(FETCH_LOGGER, IMPORT_LOGGER):
            self.run_cron()
        kept = self.failed()
        self.assertEqual(kept.internet_message_id, big_message_id)
        self.assertIn("larger than 1 MB", kept.error)
        self.assertEqual(len(self.messages_with(small_message_id)), 1)
        kept.action_retry()
        self.assertEqual(kept.state, "done")

    def test_oversized_message_is_kept_without_download_and_the_position_moves(self):
        self.server.microsoft_graph_max_size = 1
        big_raw, big_message_id = large_mime("Huge", 3 * 1024 * 1024)
        big = self.sandbox.deliver(defaults.ADMIN, big_raw)
        _id, small_message_id = self.deliver("Small")
        # Downloading it would fail on this fault: the kept error says it was not tried.
        self.sandbox.inject_fault("status", path=big + r"/\$value$", status=404, times=None)
        self.sandbox.clear_log()
        self.run_cron()
        kept = self.failed()
        self.assertEqual((kept.graph_id, kept.internet_message_id), (big, big_message_id))
        self.assertIn("larger than 1 MB (3.", kept.error)
        self.assertFalse(kept.raw)
        self.assertFalse(kept.retry_automatically)
        self.assertFalse([e for e in self.sandbox.requests if e.path.endswith("/$value")])
        self.assertEqual(len(self.messages_with(small_message_id)), 1)
        # The position moved past it: the next run neither imports nor keeps it again.
        link = self.server.microsoft_graph_delta_link
        self.run_cron()
        self.assertNotEqual(link, False)
        self.assertEqual((len(self.failed()), kept.attempt_count), (1, 1))
        self.assertFalse(self.messages_with(big_message_id))

    def test_a_page_of_large_messages_imports_within_the_bound(self):
        size = 1024 * 1024
        # Scaled down from 20 messages of 35 MB: messages over 256 KB come alone.
        alone_from = 256 * 1024
        self.server.microsoft_graph_max_size = 3
        message_ids = []
        for n in range(20):
            raw, message_id = large_mime(f"Large {n}", size)
            self.sandbox.deliver(defaults.ADMIN, raw)
            message_ids.append(message_id)
        self.sandbox.clear_log()
        # The sandbox runs in this process: its parse of each message (for the answers
        # to Mark as Read) is Exchange's memory, not Odoo's; done before measuring.
        for message in self.sandbox.messages(defaults.ADMIN):
            message.graph()
        gc.collect()
        tracemalloc.start()
        try:
            with patch.object(sync_module, "ALONE_FROM", alone_from):
                self.run_cron()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        _logger.info("[Incoming Mail] 20 x 1 MB page: traced peak %.1f MB", peak / 1e6)
        self.assert_imported_once(message_ids)
        graph = [e for e in self.sandbox.requests if e.path.startswith("/v1.0/")]
        self.assertEqual(sum(e.path.endswith("/$value") for e in graph), 20)
        # docs/incoming.md: what the gateway holds for one message, never the page's
        # 20 MB (before: one $batch answer carried all of them, base64, about 4 times).
        bound = 2 * sync_module.PAGE_BYTES + 4 * sync_module.BATCH_BYTES + 12 * size
        self.assertLess(peak, bound)

    def test_throttling_and_faults_keep_the_position(self):
        for kind, options in (
            ("status", {"status": 429, "retry_after": 60}),
            ("status", {"status": 503, "retry_after": 60}),
            ("reset", {"times": 3}),
        ):
            with self.subTest(kind=kind, **options):
                _id, message_id = self.deliver(f"During a {kind} {options.get('status')}")
                link = self.server.microsoft_graph_delta_link
                fault = self.sandbox.inject_fault(
                    kind, path=r"/messages/delta|\$batch", **{"times": None, **options}
                )
                # Odoo's clock stands still until the wait is over, however slow the run.
                start = fields.Datetime.now()
                with freeze_time(start), mute_logger(GRAPH_LOGGER, FETCH_LOGGER, IMPORT_LOGGER):
                    error = self.run_cron(expect_error=True)
                self.sandbox.remove_fault(fault)
                self.assertTrue(error)
                self.assertEqual(self.server.microsoft_graph_delta_link, link)
                self.assertFalse(self.messages_with(message_id))
                self.assertTrue(self.server.error_date)
                self.assertEqual(self.server.microsoft_graph_status, "valid")
                # Microsoft's Retry-After (or the client's backoff after the resets):
                # the mailbox is skipped until then.
                until = self.server.microsoft_graph_throttled_until
                self.assertGreater(until, start)
                with freeze_time(start):
                    self.run_cron()
                self.assertFalse(self.messages_with(message_id))
                with freeze_time(until):
                    self.run_cron()
                self.assertEqual(len(self.messages_with(message_id)), 1)
                self.assertFalse(self.server.error_date)
                self.assertFalse(self.server.microsoft_graph_throttled_until)

    def test_one_failing_mailbox_does_not_stop_the_others(self):
        shared = self.connect(
            self.create_incoming(defaults.SALES, kind="shared", object_id=self.partner_model.id)
        )
        _id, own_message_id = self.deliver("To admin")
        _id, shared_message_id = self.deliver("To sales", mailbox=defaults.SALES)
        self.sandbox.inject_fault(
            "status",
            path=r"/me/mailFolders",
            status=503,
            retry_after=60,
            times=None,
        )
        with mute_logger(GRAPH_LOGGER, FETCH_LOGGER, IMPORT_LOGGER):
            error = self.run_cron(self.server | shared, expect_error=True)
        self.assertTrue(error)
        self.assertFalse(self.messages_with(own_message_id))
        self.assertEqual(len(self.messages_with(shared_message_id)), 1)
        self.assertTrue(self.server.error_message)
        self.assertFalse(shared.error_message)

    def test_revoked_connection_needs_reconnect_and_keeps_the_position(self):
        _id, message_id = self.deliver("After revocation")
        link = self.server.microsoft_graph_delta_link
        self.sandbox.revoke(defaults.ADMIN)
        with mute_logger(GRAPH_LOGGER, FETCH_LOGGER, IMPORT_LOGGER, MIXIN_LOGGER):
            error = self.run_cron(expect_error=True)
        self.assertTrue(error)
        self.assertEqual(self.server.microsoft_graph_status, "reconnect")
        self.assertEqual(self.server.microsoft_graph_delta_link, link)
        self.assertTrue(self.server.error_message)
        self.assertFalse(self.messages_with(message_id))
        connect_without_browser(self, self.server)
        self.run_cron()
        self.assertEqual(len(self.messages_with(message_id)), 1)

    # budget, options, log ----------------------------------------------------------------

    def test_budget_stops_the_run_and_triggers_the_cron(self):
        self.server.microsoft_graph_max_messages = 3
        message_ids = [self.deliver(f"Backlog {n}")[1] for n in range(7)]
        triggers = self.env["ir.cron.trigger"].search([("cron_id", "=", self.cron.id)])
        self.run_cron()
        self.assertEqual(self.server.microsoft_graph_imported_count, 3)
        self.assertTrue(self.server.microsoft_graph_pending)
        self.assertGreater(
            self.env["ir.cron.trigger"].search_count([("cron_id", "=", self.cron.id)]),
            len(triggers),
        )
        self.run_cron()
        self.assertEqual(self.server.microsoft_graph_imported_count, 6)
        self.run_cron()
        self.assertEqual(self.server.microsoft_graph_imported_count, 7)
        self.assertFalse(self.server.microsoft_graph_pending)
        self.assert_imported_once(message_ids)

    def test_seconds_budget_leaves_servers_for_the_next_call(self):
        shared = self.connect(
            self.create_incoming(defaults.SALES, kind="shared", object_id=self.partner_model.id)
        )
        Server = self.registry["fetchmail.server"]
        self.patch(Server, "_microsoft_graph_budget", lambda server: (500, 10))
        self.patch(Server, "_microsoft_graph_page_size", 2)
        self.clock_moved_per_message(10)
        own = [self.deliver(f"Own {n}")[1] for n in range(3)]
        _id, shared_message_id = self.deliver("Shared", mailbox=defaults.SALES)
        self.run_cron(self.server | shared)
        # One page of the first server, then the time was up: the second waits.
        self.assertEqual(self.server.microsoft_graph_imported_count, 2)
        self.assertTrue(self.server.microsoft_graph_pending)
        self.assertFalse(shared.date)
        self.assertTrue(self.env["ir.cron.trigger"].search([("cron_id", "=", self.cron.id)]))
        # The server left out goes first in the next call.
        self.run_cron(self.server | shared)
        self.assertEqual(len(self.messages_with(shared_message_id)), 1)
        self.run_cron(self.server | shared)
        self.assert_imported_once(own)

    # fair and isolated: each mailbox its slice of a call -----------------------------------

    def connect_shared(self):
        return self.connect(
            self.create_incoming(defaults.SALES, kind="shared", object_id=self.partner_model.id)
        )

    def requests_of(self, mailbox):
        return [entry for entry in self.sandbox.requests if entry.mailbox == mailbox]

    def clock_moved_per_message(self, seconds):
        """The import's clock, moved ``seconds`` by each message through the gateway."""
        clock = [1000.0]
        Server = self.registry["fetchmail.server"]
        process = Server._microsoft_graph_process

        def slow_process(server, raw, check_size=True):
            clock[0] += seconds
            return process(server, raw, check_size=check_size)

        self.patch(Server, "_microsoft_graph_clock", lambda server: clock[0])
        self.patch(Server, "_microsoft_graph_process", slow_process)
        return clock

    def test_a_mailbox_stops_at_its_slice_and_the_next_call_continues(self):
        shared = self.connect_shared()
        self.patch(self.registry["fetchmail.server"], "_microsoft_graph_page_size", 2)
        # 10 s a message: the 8 messages of the first mailbox would take 80 s of the
        # call's 60; its slice is half of them.
        self.clock_moved_per_message(10)
        own = [self.deliver(f"Own {n}")[1] for n in range(8)]
        _id, shared_message_id = self.deliver("Shared", mailbox=defaults.SALES)
        start_link = self.server.microsoft_graph_delta_link
        self.run_cron(self.server | shared)
        # Two pages (40 s) of the first, past its 30 s slice: it stopped there, its
        # position saved; the second was served in the same call.
        self.assertEqual(self.server.microsoft_graph_imported_count, 4)
        self.assertTrue(self.server.microsoft_graph_pending)
        self.assertNotEqual(self.server.microsoft_graph_delta_link, start_link)
        self.assertEqual(len(self.messages_with(shared_message_id)), 1)
        self.run_cron(self.server | shared)
        self.assertEqual(self.server.microsoft_graph_imported_count, 8)
        self.assertFalse(self.server.microsoft_graph_pending)
        self.assert_imported_once(own)

    def test_the_least_recently_served_mailbox_goes_first(self):
        shared = self.connect_shared()
        now = fields.Datetime.now()
        self.server.date = now
        shared.date = now - datetime.timedelta(hours=1)
        # One message takes longer than the whole call: one mailbox per call.
        self.clock_moved_per_message(100)
        _id, own_message_id = self.deliver("Own")
        _id, shared_message_id = self.deliver("Shared", mailbox=defaults.SALES)
        self.run_cron(self.server | shared)
        self.assertEqual(len(self.messages_with(shared_message_id)), 1)
        self.assertFalse(self.messages_with(own_message_id))
        self.assertTrue(self.env["ir.cron.trigger"].search([("cron_id", "=", self.cron.id)]))
        # The mailbox left out is now the least recently served.
        _id, shared_later_id = self.deliver("Shared later", mailbox=defaults.SALES)
        self.run_cron(self.server | shared)
        self.assertEqual(len(self.messages_with(own_message_id)), 1)
        self.assertFalse(self.messages_with(shared_later_id))

    def test_a_throttled_mailbox_costs_the_others_nothing(self):
        shared = self.connect_shared()
        shared.date = fields.Datetime.now() - datetime.timedelta(hours=1)  # served first
        clock = self.clock_moved_per_message(1)
        self.sandbox.inject_fault(
            "status", mailbox=defaults.SALES, status=429, retry_after=3600, times=None
        )
        _id, shared_message_id = self.deliver("Shared", mailbox=defaults.SALES)
        _id, own_message_id = self.deliver("Own")
        self.sandbox.clear_log()
        # Odoo's clock stands still until Microsoft's time, however slow the runs.
        start = fields.Datetime.now()
        with freeze_time(start), mute_logger(GRAPH_LOGGER, FETCH_LOGGER, IMPORT_LOGGER):
            self.run_cron(self.server | shared, expect_error=True)
        # One refused request, no wait: the other mailbox had the call's whole time.
        self.assertEqual(len(self.requests_of(defaults.SALES)), 1)
        self.assertEqual(clock[0], 1001.0)
        self.assertEqual(len(self.messages_with(own_message_id)), 1)
        until = shared.microsoft_graph_throttled_until
        self.assertEqual(until, start + datetime.timedelta(seconds=3600))
        self.assertTrue(
            self.env["ir.cron.trigger"].search(
                [("cron_id", "=", self.cron.id), ("call_at", "=", until)]
            )
        )
        # Until Microsoft's time, the mailbox costs no request at all.
        _id, own_later_id = self.deliver("Own later")
        self.sandbox.clear_log()
        with freeze_time(start):
            self.run_cron(self.server | shared)
        self.assertEqual(len(self.messages_with(own_later_id)), 1)
        self.assertFalse(self.requests_of(defaults.SALES))
        self.sandbox.clear_faults()
        with freeze_time(until):
            self.run_cron(self.server | shared)
        self.assertEqual(len(self.messages_with(shared_message_id)), 1)
        self.assertFalse(shared.microsoft_graph_throttled_until)

    def test_a_server_added_or_archived_is_picked_up_or_dropped_at_the_next_run(self):
        def run_gateway_cron():
            """The cron as Odoo runs it: it chooses the servers itself."""
            self.env.flush_all()
            with self.registry.cursor() as cr:
                env = api.Environment(cr, self.env.uid, {"cron_id": self.cron.id})
                env["fetchmail.server"]._fetch_mails()
            self.env.invalidate_all()

        _id, first_id = self.deliver("Before the shared server")
        run_gateway_cron()
        self.assertEqual(len(self.messages_with(first_id)), 1)
        self.connect_shared()  # added: taken by the next run
        _id, shared_id = self.deliver("Shared", mailbox=defaults.SALES)
        run_gateway_cron()
        self.assertEqual(len(self.messages_with(shared_id)), 1)
        self.server.active = False
        _id, own_id = self.deliver("While archived")
        self.sandbox.clear_log()
        run_gateway_cron()
        self.assertFalse(self.messages_with(own_id))
        self.assertFalse(self.requests_of(defaults.ADMIN), "an archived server costs nothing")
        self.assertTrue(self.requests_of(defaults.SALES))
        self.server.active = True
        run_gateway_cron()
        self.assertEqual(len(self.messages_with(own_id)), 1)

    def test_mark_as_read_by_default_and_move_when_asked(self):
        self.deliver("Read me")
        self.run_cron()
        self.assertTrue(all(m.is_read for m in self.sandbox.messages(defaults.ADMIN)))
        self.server.write(
            {"microsoft_graph_mark_read": False, "microsoft_graph_move_folder": "Archive"}
        )
        self.deliver("Archive me")
        self.run_cron()
        inbox = self.sandbox.messages(defaults.ADMIN)
        archived = self.sandbox.messages(defaults.ADMIN, "archive")
        self.assertEqual([m.subject for m in archived], ["Archive me"])
        self.assertFalse(archived[0].is_read)
        self.assertEqual([m.subject for m in inbox], ["Read me"])

    def test_one_log_line_per_server_and_run(self):
        self.deliver("Counted")
        # logging.INFO, not "INFO": Odoo gives that name to another level.
        with self.assertLogs(IMPORT_LOGGER, logging.INFO) as logs:
            self.run_cron()
        lines = [line for line in logs.output if "[Incoming Mail]" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("1 imported, 0 failed", lines[0])
        self.assertIn(defaults.ADMIN, lines[0])
        self.assertNotIn("deltatoken", lines[0])

    def test_fetch_now_imports_without_committing(self):
        _id, message_id = self.deliver("Fetched now")
        # TransactionCase forbids commits on its cursor: a commit here would fail.
        action = self.server.fetch_mail()
        self.assertEqual(action["params"]["type"], "success")
        self.assertEqual(len(self.messages_with(message_id)), 1)
        self.assertEqual(self.server.microsoft_graph_imported_count, 1)
        # Outlook hears of it only once the request's transaction is committed.
        self.assertFalse(self.sandbox.messages(defaults.ADMIN)[0].is_read)
        self.env.cr.postcommit.run()
        self.assertTrue(self.sandbox.messages(defaults.ADMIN)[0].is_read)
