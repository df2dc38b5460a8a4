"""Change notifications: the sandbox calls Odoo's test server as Microsoft Graph would.

The sandbox's POSTs carry no test cookie, and Odoo's HTTP thread shares the test's
transaction under a lock: every phase in which the sandbox may call Odoo runs inside
``serving()`` (the lock released, cookie-less requests allowed), and the test thread
never runs SQL while it waits for them.
"""

import contextlib
import datetime
import json
import threading

import requests

from odoo import fields
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.hooks import uninstall_hook
from odoo.addons.microsoft_outlook_graph.models.fetchmail_server import POLL_CRON
from odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_subscription import (
    GATEWAY_CRON,
    SUBSCRIPTION_CRON,
    URL_PARAM,
    notification_endpoint,
)
from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services.subscriptions import (
    LIFECYCLE_PATH,
    NOTIFICATION_PATH,
    SubscriptionClient,
)

from .common import GraphHttpCase, connect_without_browser
from .test_incoming import mime

MODEL_LOGGER = "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_subscription"
GRAPH_LOGGER = "odoo.addons.microsoft_outlook_graph.services.graph"
CONTROLLER_LOGGER = "odoo.addons.microsoft_outlook_graph.controllers.notifications"
JSON = "application/json; charset=utf-8"


@tagged("post_install", "-at_install")
class TestNotifications(GraphHttpCase):
    def setUp(self):
        super().setUp()
        self.sandbox.configure_notifications(
            allow_http_notifications=True, retry_delay=0.2, retry_delay_max=1
        )
        self.env["ir.config_parameter"].set_param(URL_PARAM, self.base_url())
        self.Subscription = self.env["microsoft.outlook.graph.subscription"]
        self.gateway = self.env.ref(GATEWAY_CRON)
        self.subscription_cron = self.env.ref(SUBSCRIPTION_CRON)
        partner_model = self.env["ir.model"]._get("res.partner")
        self.server = self.create_incoming(object_id=partner_model.id)
        connect_without_browser(self, self.server)
        self.server.state = "done"

    # helpers -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self):
        """Let the sandbox's cookie-less POSTs into Odoo's test server meanwhile."""
        self.env.flush_all()
        with self.allow_requests(all_requests=True):
            yield
        self.env.invalidate_all()

    def run_subscription_cron(self):
        with self.serving():
            self.Subscription._cron_keep_subscriptions()

    def subscribe(self):
        self.run_subscription_cron()
        record = self.Subscription.search([("server_id", "=", self.server.id)])
        self.assertTrue(record.subscription_id, record.last_error)
        self.clear_triggers()
        return record

    def wait_for_sandbox(self, action=None):
        """Do ``action`` (which makes the sandbox notify), then let every POST land."""
        with self.serving():
            if action:
                action()
            self.assertTrue(self.sandbox.flush_notifications(timeout=15))

    def triggers(self, cron):
        return self.env["ir.cron.trigger"].search([("cron_id", "=", cron.id)])

    def clear_triggers(self):
        self.env["ir.cron.trigger"].search(
            [("cron_id", "in", (self.gateway | self.subscription_cron).ids)]
        ).unlink()

    def post(self, path, payload=None, data=None, content_type=JSON, method="POST"):
        if payload is not None:
            data = json.dumps(payload).encode()
        return self.url_open(path, data=data, headers={"Content-Type": content_type}, method=method)

    def change(self, record, client_state=None, subscription_id=None):
        return {
            "subscriptionId": subscription_id or record.subscription_id,
            "clientState": client_state or record._client_state(),
            "changeType": "created",
            "resource": "Users/x/Messages/y",
            "resourceData": {"id": "y"},
        }

    def sandbox_subscription(self):
        subscriptions = self.sandbox.subscriptions()
        self.assertEqual(len(subscriptions), 1)
        return subscriptions[0]

    # subscribing -------------------------------------------------------------------------

    def test_cron_subscribes_after_the_handshake(self):
        self.assertEqual(len(self.triggers(self.subscription_cron)), 1, "confirming asks the cron")
        self.assertEqual(self.server.microsoft_graph_notification_state, "pending")
        self.run_subscription_cron()
        record = self.server.microsoft_graph_subscription_ids
        self.assertEqual(len(record), 1)
        remote = self.sandbox_subscription()
        self.assertEqual(remote.id, record.subscription_id)
        self.assertEqual(remote.resource, "/me/mailFolders('inbox')/messages")
        self.assertEqual(remote.notification_url, self.base_url() + NOTIFICATION_PATH)
        self.assertEqual(remote.lifecycle_url, self.base_url() + LIFECYCLE_PATH)
        handshakes = [a for a in self.sandbox.notification_log if a.kind == "validation"]
        self.assertEqual([(a.status, a.outcome) for a in handshakes], [(200, "validated")] * 2)
        # The clientState is stored sealed, and is the one Graph sends back.
        self.assertNotIn(remote.client_state, record.client_state_sealed)
        self.assertEqual(record._client_state(), remote.client_state)
        self.assertEqual(record.expires_at, remote.expiration.replace(tzinfo=None, microsecond=0))
        self.assertEqual(self.server.microsoft_graph_notification_state, "active")
        # What arrived before the subscription is fetched at once.
        self.assertEqual(len(self.triggers(self.gateway)), 1)
        # A second run has nothing to do.
        self.sandbox.clear_log()
        self.run_subscription_cron()
        self.assertFalse(self.sandbox.requests)
        self.assertEqual(self.server.microsoft_graph_subscription_ids, record)

    def test_handshake_answer(self):
        token = "Validation: Testing client application reachability <b>"
        response = self.url_open(
            NOTIFICATION_PATH, params={"validationToken": token[:-3]}, data=b"", method="POST"
        )
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.headers["Content-Type"].startswith("text/plain"))
        self.assertEqual(response.text, token[:-3])
        response = self.url_open(
            LIFECYCLE_PATH, params={"validationToken": token}, data=b"", method="POST"
        )
        self.assertEqual(response.status_code, 400)

    def test_failed_subscription_keeps_polling_and_says_why(self):
        self.sandbox.configure_notifications(allow_http_notifications=False)
        with mute_logger(MODEL_LOGGER, GRAPH_LOGGER):
            self.run_subscription_cron()
        record = self.server.microsoft_graph_subscription_ids
        self.assertFalse(record.subscription_id)
        self.assertIn("https", record.last_error)
        self.assertEqual(self.server.microsoft_graph_notification_state, "error")
        self.assertFalse(self.sandbox.subscriptions())
        # Once Microsoft can call, the next run subscribes.
        self.sandbox.configure_notifications(allow_http_notifications=True)
        self.subscribe()
        self.assertFalse(self.server.microsoft_graph_subscription_ids.last_error)

    def test_polling_without_a_public_url(self):
        Config = self.env["ir.config_parameter"]
        Config.set_param(URL_PARAM, False)
        for base, usable in (
            ("http://localhost:8069", False),
            ("https://localhost", False),
            ("https://127.0.0.1", False),
            ("https://10.1.2.3", False),
            ("https://192.168.0.10:8443", False),
            ("https://odoo", False),
            ("http://odoo.example.com", False),
            ("https://odoo.example.com", True),
            ("https://203.0.113.7", False),  # documentation range: not global
            ("https://8.8.8.8", True),
        ):
            Config.set_param("web.base.url", base)
            endpoint = notification_endpoint(self.env)
            self.assertEqual(bool(endpoint.notification_url), usable, base)
            self.assertEqual(bool(endpoint.problem), not usable, base)
        self.assertEqual(
            notification_endpoint(self.env).lifecycle_url, "https://8.8.8.8" + LIFECYCLE_PATH
        )
        Config.set_param("web.base.url", "http://localhost:8069")
        self.server.invalidate_recordset()
        self.assertEqual(self.server.microsoft_graph_notification_state, "polling")
        self.assertIn("not HTTPS", self.server.microsoft_graph_notification_info)
        self.assertIn(URL_PARAM, self.server.microsoft_graph_notification_info)
        self.run_subscription_cron()
        self.assertFalse(self.sandbox.subscriptions())
        self.assertFalse(self.server.microsoft_graph_subscription_ids)
        # A reverse proxy's public URL set by the admin wins over web.base.url.
        Config.set_param(URL_PARAM, self.base_url() + NOTIFICATION_PATH)
        self.subscribe()

    def test_switch_off_removes_the_subscription(self):
        self.subscribe()
        self.server.microsoft_graph_use_notifications = False
        self.assertFalse(self.sandbox.subscriptions())
        self.assertFalse(self.server.microsoft_graph_subscription_ids)
        self.assertEqual(self.server.microsoft_graph_notification_state, "polling")
        self.assertIn("off", self.server.microsoft_graph_notification_info)
        self.server.microsoft_graph_use_notifications = True
        self.assertEqual(len(self.triggers(self.subscription_cron)), 1)

    # shared mailboxes: polled, never subscribed ---------------------------------------------

    def connect_shared(self):
        partner_model = self.env["ir.model"]._get("res.partner")
        shared = self.create_incoming(defaults.SALES, kind="shared", object_id=partner_model.id)
        connect_without_browser(self, shared)
        shared.state = "done"
        return shared

    def test_a_shared_mailbox_is_polled_never_subscribed(self):
        """Microsoft Graph refuses a delegated subscription on a shared mailbox ("Get Outlook
        messages in a shared or delegated folder"): the addon never asks, and says why."""
        shared = self.connect_shared()
        self.assertFalse(
            shared._microsoft_graph_wants_notifications(notification_endpoint(self.env))
        )
        self.sandbox.clear_log()
        self.run_subscription_cron()
        posts = [e for e in self.sandbox.requests if e.path == "/v1.0/subscriptions"]
        self.assertEqual(len(posts), 1, "only the personal server subscribes")
        resources = [s.resource for s in self.sandbox.subscriptions()]
        self.assertEqual(resources, ["/me/mailFolders('inbox')/messages"])
        self.assertFalse(shared.microsoft_graph_subscription_ids)
        self.assertEqual(shared.microsoft_graph_notification_state, "polling")
        self.assertTrue(shared.microsoft_graph_shared_polled)
        self.assertFalse(self.server.microsoft_graph_shared_polled)
        seconds = shared.microsoft_graph_poll_seconds
        self.assertEqual(seconds, 60)
        self.assertEqual(
            shared.microsoft_graph_notification_info,
            "Microsoft sends change notifications for shared mailboxes only to apps with "
            f"application permissions: this mailbox is checked every {seconds} seconds.",
        )
        # Turning a personal server into a shared one drops its subscription at once.
        self.subscribe()
        self.server.microsoft_graph_mailbox_kind = "shared"
        self.server.user = defaults.SALES
        self.assertFalse(self.server.microsoft_graph_subscription_ids)
        self.assertFalse(self.sandbox.subscriptions())

    def test_the_poll_cron_fetches_the_servers_without_a_subscription(self):
        self.connect_shared()
        self.subscribe()
        poll = self.env.ref(POLL_CRON)
        self.assertTrue(poll.active)
        self.assertEqual((poll.interval_number, poll.interval_type), (1, "minutes"))
        raw, message_id = mime("To the sales team", to=defaults.SALES)
        self.sandbox.deliver(defaults.SALES, raw)
        personal_raw, personal_id = mime("Personal")
        self.sandbox.deliver(defaults.ADMIN, personal_raw)
        self.sandbox.clear_log()
        self.env["fetchmail.server"]._cron_microsoft_graph_poll()
        self.assertTrue(self.env["mail.message"].search([("message_id", "=", message_id)]))
        paths = {entry.path for entry in self.sandbox.requests}
        shared_only = all(f"/users/{defaults.SALES}/" in p or "$batch" in p for p in paths)
        self.assertTrue(shared_only, paths)
        # An idle round is one request: the delta link, answered with no change.
        self.sandbox.clear_log()
        self.env["fetchmail.server"]._cron_microsoft_graph_poll()
        self.assertEqual(len(self.sandbox.requests), 1, self.sandbox.requests)
        self.assertIn("/messages/delta", self.sandbox.requests[0].path)
        self.assertFalse(self.env["mail.message"].search([("message_id", "=", personal_id)]))
        # Without its subscription the personal server is polled too.
        self.server.microsoft_graph_use_notifications = False
        self.env["fetchmail.server"]._cron_microsoft_graph_poll()
        self.assertTrue(self.env["mail.message"].search([("message_id", "=", personal_id)]))

    # notifications -----------------------------------------------------------------------

    def test_new_mail_triggers_the_fetch_cron(self):
        record = self.subscribe()
        self.assertFalse(record.last_notification_at)
        raw, message_id = mime("Notified at once")
        self.wait_for_sandbox(lambda: self.sandbox.deliver(defaults.ADMIN, raw))
        changes = [a for a in self.sandbox.notification_log if a.kind == "change"]
        self.assertEqual([(a.status, a.outcome) for a in changes], [(202, "delivered")])
        self.assertEqual(len(self.triggers(self.gateway)), 1)
        self.assertTrue(record.last_notification_at)
        # A second one while the trigger waits adds nothing.
        self.wait_for_sandbox(lambda: self.sandbox.deliver(defaults.ADMIN, mime("Again")[0]))
        self.assertEqual(len(self.triggers(self.gateway)), 1)
        # The triggered run imports the message.
        self.server.fetch_mail()
        self.assertTrue(self.env["mail.message"].search([("message_id", "=", message_id)]))

    def test_wrong_client_state_and_unknown_subscription_are_ignored(self):
        record = self.subscribe()
        with self.assertLogs(MODEL_LOGGER, "WARNING") as logs:
            response = self.post(NOTIFICATION_PATH, {"value": [self.change(record, "forged")]})
        self.assertEqual(response.status_code, 202)
        self.assertIn("possible forgery", logs.output[0])
        self.assertIn(record.subscription_id, logs.output[0])
        self.assertNotIn("forged", logs.output[0])
        response = self.post(
            NOTIFICATION_PATH, {"value": [self.change(record, subscription_id="unknown-id")]}
        )
        self.assertEqual(response.status_code, 202)
        missing = self.change(record)
        del missing["clientState"]
        with mute_logger(MODEL_LOGGER):
            response = self.post(NOTIFICATION_PATH, {"value": [missing]})
        self.assertEqual(response.status_code, 202)
        self.assertFalse(self.triggers(self.gateway))
        record.invalidate_recordset()
        self.assertFalse(record.last_notification_at)
        # The right one does trigger.
        self.assertEqual(
            self.post(NOTIFICATION_PATH, {"value": [self.change(record)]}).status_code, 202
        )
        self.assertEqual(len(self.triggers(self.gateway)), 1)

    def test_bad_requests(self):
        record = self.subscribe()
        good = {"value": [self.change(record)]}
        with mute_logger(CONTROLLER_LOGGER):
            big = json.dumps({"value": [self.change(record)], "pad": "x" * 1_000_001}).encode()
            self.assertEqual(self.post(NOTIFICATION_PATH, data=big).status_code, 413)
            self.assertEqual(self.post(NOTIFICATION_PATH, data=b'{"value": [').status_code, 400)
            self.assertEqual(self.post(NOTIFICATION_PATH, data=b"\xff\xfe").status_code, 400)
            self.assertEqual(self.post(NOTIFICATION_PATH, {"value": []}).status_code, 400)
            self.assertEqual(self.post(NOTIFICATION_PATH, {"value": [{"x": 1}]}).status_code, 400)
            wrong_type = self.post(NOTIFICATION_PATH, good, content_type="text/plain")
            self.assertEqual(wrong_type.status_code, 415)
            form = self.post(
                NOTIFICATION_PATH, data=b"a=b", content_type="application/x-www-form-urlencoded"
            )
            self.assertEqual(form.status_code, 415)
            self.assertEqual(self.url_open(NOTIFICATION_PATH).status_code, 405)
            self.assertEqual(self.url_open(LIFECYCLE_PATH).status_code, 405)
        self.assertFalse(self.triggers(self.gateway))
        self.assertEqual(self.post(NOTIFICATION_PATH, good).status_code, 202)
        self.assertEqual(len(self.triggers(self.gateway)), 1)

    def test_a_burst_makes_one_trigger_and_no_rows(self):
        record = self.subscribe()
        item = self.change(record)
        record._note_notified()
        self.env.flush_all()
        before = self.table_sizes()
        url = self.base_url() + NOTIFICATION_PATH
        statuses = []

        def send(payload):
            answer = requests.post(url, json=payload, timeout=10)
            statuses.append(answer.status_code)

        # One POST of 1,000, then 1,000 more in 50 POSTs of 20 from 5 senders.
        batches = [{"value": [item] * 1000}] + [{"value": [item] * 20}] * 50
        with self.serving():
            send(batches[0])
            threads = [
                threading.Thread(target=lambda chunk=batches[1 + i :: 5]: [send(b) for b in chunk])
                for i in range(5)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        # Graph waits 3 seconds for an answer: the endpoint does no work but one trigger and
        # writes no row (asserted below), whatever the machine's speed.
        self.assertEqual(statuses, [202] * 51)
        self.assertEqual(len(self.triggers(self.gateway)), 1)
        after = self.table_sizes()
        grown = {
            table: (before.get(table), rows)
            for table, rows in after.items()
            if rows != before.get(table)
        }
        triggers = before["ir_cron_trigger"]
        self.assertEqual(grown, {"ir_cron_trigger": (triggers, triggers + 1)})

    def table_sizes(self):
        self.env.cr.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [row[0] for row in self.env.cr.fetchall()]
        # Table names from the catalogue, not from input.
        selects = [f"SELECT '{table}', count(*) FROM \"{table}\"" for table in tables]  # noqa: S608
        query = " UNION ALL ".join(selects)
        self.env.cr.execute(query)
        return dict(self.env.cr.fetchall())

    # lifecycle events --------------------------------------------------------------------

    def test_reauthorization_required(self):
        record = self.subscribe()
        with mute_logger(MODEL_LOGGER):
            self.wait_for_sandbox(
                lambda: self.sandbox.lifecycle(record.subscription_id, "reauthorizationRequired")
            )
        lifecycle = [a for a in self.sandbox.notification_log if a.kind == "lifecycle"]
        self.assertEqual(
            [(a.url, a.status) for a in lifecycle], [(self.base_url() + LIFECYCLE_PATH, 202)]
        )
        self.assertEqual(record.pending_action, "reauthorize")
        self.assertEqual(len(self.triggers(self.subscription_cron)), 1)
        self.assertFalse(self.triggers(self.gateway))
        self.assertTrue(self.sandbox_subscription().reauthorization_required)
        self.sandbox.clear_log()
        with mute_logger(MODEL_LOGGER):
            self.run_subscription_cron()
        paths = [(entry.method, entry.path) for entry in self.sandbox.requests]
        self.assertIn(("POST", f"/v1.0/subscriptions/{record.subscription_id}/reauthorize"), paths)
        self.assertFalse(record.pending_action)
        self.assertFalse(self.sandbox_subscription().reauthorization_required)
        # Notifications flow again.
        self.wait_for_sandbox(lambda: self.sandbox.deliver(defaults.ADMIN, mime("After")[0]))
        self.assertEqual(len(self.triggers(self.gateway)), 1)

    def test_subscription_removed_subscribes_again_then_syncs(self):
        record = self.subscribe()
        old_id = record.subscription_id
        with mute_logger(MODEL_LOGGER):
            self.wait_for_sandbox(lambda: self.sandbox.lifecycle(old_id, "subscriptionRemoved"))
        self.assertEqual(record.pending_action, "recreate")
        self.assertEqual(len(self.triggers(self.subscription_cron)), 1)
        self.assertFalse(self.sandbox.subscriptions())
        with mute_logger(MODEL_LOGGER):
            self.run_subscription_cron()
        self.assertNotEqual(record.subscription_id, old_id)
        self.assertEqual(self.sandbox_subscription().id, record.subscription_id)
        self.assertFalse(record.pending_action)
        self.assertEqual(len(self.triggers(self.gateway)), 1)

    def test_missed_triggers_a_sync(self):
        record = self.subscribe()
        with mute_logger(MODEL_LOGGER):
            self.wait_for_sandbox(lambda: self.sandbox.lifecycle(record.subscription_id, "missed"))
        self.assertEqual(len(self.triggers(self.gateway)), 1)
        self.assertFalse(record.pending_action)
        self.assertFalse(self.triggers(self.subscription_cron))

    # renewal -----------------------------------------------------------------------------

    def test_cron_renews_before_expiry(self):
        record = self.subscribe()
        soon = fields.Datetime.now() + datetime.timedelta(hours=2)
        record.expires_at = soon
        self.sandbox.clear_log()
        self.run_subscription_cron()
        paths = [(entry.method, entry.path) for entry in self.sandbox.requests]
        self.assertEqual(paths, [("PATCH", f"/v1.0/subscriptions/{record.subscription_id}")])
        self.assertGreater(record.expires_at, soon + datetime.timedelta(hours=24))
        self.assertEqual(
            record.expires_at,
            self.sandbox_subscription().expiration.replace(tzinfo=None, microsecond=0),
        )

    def test_renewal_of_a_vanished_subscription_subscribes_again(self):
        record = self.subscribe()
        old_id = record.subscription_id
        # Gone at Microsoft (deleted elsewhere, or expired while Odoo was down).
        SubscriptionClient(self.server._microsoft_graph_client()).delete(old_id)
        self.assertFalse(self.sandbox.subscriptions())
        record.expires_at = fields.Datetime.now() + datetime.timedelta(hours=1)
        with mute_logger(MODEL_LOGGER, GRAPH_LOGGER):
            self.run_subscription_cron()
        self.assertFalse(record.last_error)
        self.assertNotEqual(record.subscription_id, old_id)
        self.assertEqual(self.sandbox_subscription().id, record.subscription_id)
        self.assertEqual(len(self.triggers(self.gateway)), 1)

    def test_a_changed_folder_subscribes_again(self):
        record = self.subscribe()
        self.server.microsoft_graph_folder = "archive"
        self.assertEqual(len(self.triggers(self.subscription_cron)), 1)
        self.run_subscription_cron()
        remote = self.sandbox_subscription()
        self.assertEqual(remote.resource, "/me/mailFolders('archive')/messages")
        self.assertEqual(record.subscription_id, remote.id)

    # removal -----------------------------------------------------------------------------

    def assert_removed(self):
        self.assertFalse(self.sandbox.subscriptions())
        self.assertFalse(self.Subscription.search([]))

    def test_disconnect_removes_the_subscription(self):
        self.subscribe()
        self.server.action_microsoft_graph_disconnect()
        self.assert_removed()

    def test_archive_removes_the_subscription(self):
        self.subscribe()
        self.server.active = False
        self.assert_removed()
        self.server.active = True
        self.assertEqual(len(self.triggers(self.subscription_cron)), 1)

    def test_deletion_removes_the_subscription(self):
        self.subscribe()
        self.server.unlink()
        self.assert_removed()

    def test_cron_removes_what_no_longer_qualifies(self):
        self.subscribe()
        # Written behind the ORM's back: only the cron notices.
        self.env.cr.execute(
            "UPDATE fetchmail_server SET state = 'draft' WHERE id = %s", [self.server.id]
        )
        self.server.invalidate_recordset()
        self.run_subscription_cron()
        self.assert_removed()

    def test_removal_is_best_effort(self):
        self.subscribe()
        self.sandbox.inject_fault(
            "status", path="/v1.0/subscriptions/.+", method="DELETE", status=403, times=5
        )
        with self.assertLogs(MODEL_LOGGER, "WARNING") as logs, mute_logger(GRAPH_LOGGER):
            self.server.active = False
        self.assertIn("[Graph API]", logs.output[0])
        self.assertFalse(self.Subscription.search([]))

    def test_uninstall_deletes_subscriptions_at_microsoft(self):
        self.subscribe()
        uninstall_hook(self.env)
        self.assertFalse(self.sandbox.subscriptions())
        self.assertFalse(self.server.active)
        self.assertFalse(self.Subscription.search([]))
