import contextlib
import datetime
import threading
import time

from odoo import SUPERUSER_ID, api, fields
from odoo.orm.environments import Transaction
from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services.auth import TokenSet
from odoo.addons.microsoft_outlook_graph.services.errors import GraphAuthError

from .common import GraphTransactionCase

SETTINGS_PREFIXES = ("microsoft_outlook_graph.", "microsoft_outlook_client_id")
LEDGER = "microsoft.outlook.graph.send.ledger"
MIXIN_LOGGER = "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_mixin"
ACCOUNT = "race-account"


@tagged("post_install", "-at_install")
class TestTokenRace(GraphTransactionCase):
    """Workers with their own committed transactions, as in production: Odoo's test cursor
    would fold them into one and hide what these tests are about (a refresh committed on
    its own cursor meeting the caller's later write, a worker waiting on itself, ledger rows
    its transaction cannot see).

    Every worker opens its transactions explicitly: Odoo's test runner holds the registry
    lock that a new Environment would wait for.
    """

    configure_in_test_transaction = False

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            Config = env["ir.config_parameter"]
            self.saved_params = {
                param.key: param.value
                for param in Config.search([])
                if param.key.startswith(SETTINGS_PREFIXES)
            }
            self.configure_outlook(env)
            admin = env.ref("base.user_admin")
            self.saved_notification_type = admin.notification_type
            admin.notification_type = "inbox"  # as the shared setUp does (tests/common.py)
            server = env["ir.mail_server"].create(
                {
                    "name": "Race",
                    "smtp_authentication": "microsoft_graph",
                    "smtp_user": defaults.ADMIN,
                    "from_filter": defaults.ADMIN,
                }
            )
            self.server_id = server.id
        # The connection is written on a cursor of its own, which waits for the server's
        # row to be committed (above).
        with self.worker_env() as env:
            answer = self.sandbox.issue_token(
                defaults.ADMIN, ["Mail.Send", "Mail.ReadWrite", "User.Read"]
            )
            expired = {**TokenSet.from_msal(answer).to_dict(), "expires_at": int(time.time()) - 10}
            env["ir.mail_server"].browse(self.server_id)._microsoft_graph_store_tokens(
                TokenSet.from_dict(expired)
            )
        self.addCleanup(self.drop_committed_state)

    def worker_env(self):
        """A new committed transaction of this database, as a worker of its own has."""
        registry = self.registry

        class _Worker:
            def __enter__(self):
                self.cr = registry.cursor()
                self.cr.transaction = Transaction(registry)
                return api.Environment(self.cr, SUPERUSER_ID, {})

            def __exit__(self, kind, value, traceback):
                if kind is None:
                    self.cr.commit()
                self.cr.close()

        return _Worker()

    def drop_committed_state(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["ir.mail_server"].browse(self.server_id).unlink()
            env[LEDGER].search([("account", "=", ACCOUNT)]).unlink()
            env.ref("base.user_admin").notification_type = self.saved_notification_type
            Config = env["ir.config_parameter"]
            Config.search([("key", "=like", "microsoft_outlook_graph.%")]).unlink()
            for key, value in self.saved_params.items():
                Config.set_param(key, value)

    def run_workers(self, *targets, timeout=300):
        """Run each target in a thread; fail (and unblock the database) if one hangs: waits
        on itself for good, not for long on a busy machine (the bound is generous)."""
        errors = []

        def guarded(target):
            try:
                target()
            except Exception as exc:  # reported by the assertion below
                errors.append(repr(exc))

        threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=timeout)
        hung = [thread for thread in threads if thread.is_alive()]
        if hung:
            with self.registry.cursor() as cr:
                cr.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            for thread in hung:
                thread.join(timeout=30)
        self.assertFalse(hung, "a worker waited on a lock for good")
        return errors

    def token_requests(self):
        return [e for e in self.sandbox.requests if e.path.endswith("/oauth2/v2.0/token")]

    def test_two_workers_refresh_once(self):
        self.sandbox.clear_log()
        tokens = []
        start = threading.Barrier(2)

        def worker():
            with self.worker_env() as env:
                server = env["ir.mail_server"].browse(self.server_id)
                server._microsoft_graph_open_tokens()
                start.wait(timeout=120)
                tokens.append(server._microsoft_graph_access_token())

        self.assertFalse(self.run_workers(worker, worker))
        self.assertEqual(len(tokens), 2)
        self.assertEqual(tokens[0], tokens[1])
        self.assertEqual(len(self.token_requests()), 1)

    def test_refresh_then_the_caller_writes_the_server_row(self):
        """The queue run refreshes in the middle of a send, then records the send on the
        server's row: the refresh's commit must not make that write a serialization failure
        (after Microsoft accepted the mail, a rollback would send it again)."""

        def worker():
            with self.worker_env() as env:
                server = env["ir.mail_server"].browse(self.server_id)
                server.read(["name", "microsoft_graph_last_sent_at"])  # the snapshot starts
                self.assertTrue(server._microsoft_graph_access_token())
                server.write(
                    {
                        "microsoft_graph_last_sent_at": fields.Datetime.now(),
                        "microsoft_graph_paused_until": False,
                    }
                )
                env.flush_all()

        self.assertFalse(self.run_workers(worker))
        self.assertEqual(len(self.token_requests()), 1)

    def test_refresh_after_the_caller_wrote_the_server_row(self):
        """A caller that already wrote the server's row, uncommitted, then needs a refresh:
        the refresh must not wait for that row (the worker would wait on itself)."""

        def worker():
            with self.worker_env() as env:
                server = env["ir.mail_server"].browse(self.server_id)
                server.microsoft_graph_paused_until = fields.Datetime.now()
                env.flush_all()
                self.assertTrue(server._microsoft_graph_access_token())

        self.assertFalse(self.run_workers(worker))

    def test_revoked_grant_flags_once_without_conflict(self):
        """Two runs meet a revoked grant: one flag, one notice, no serialization failure
        when each then records its outcome on the server's row."""
        self.sandbox.revoke(defaults.ADMIN)
        start = threading.Barrier(2)

        def worker(records_outcome):
            with self.worker_env() as env:
                server = env["ir.mail_server"].browse(self.server_id)
                server.read(["name"])
                start.wait(timeout=120)
                with contextlib.suppress(GraphAuthError):
                    server._microsoft_graph_access_token()
                if records_outcome:
                    server.microsoft_graph_paused_until = False
                    env.flush_all()

        with self.assertLogs(MIXIN_LOGGER, "WARNING") as logged:
            self.assertFalse(self.run_workers(lambda: worker(True), lambda: worker(False)))
        self.assertEqual(len([line for line in logged.output if "reconnected" in line]), 1)
        with self.worker_env() as env:
            server = env["ir.mail_server"].browse(self.server_id)
            self.assertEqual(server.microsoft_graph_status, "reconnect")
            notices = env["mail.message"].search(
                [("model", "=", "ir.mail_server"), ("res_id", "=", self.server_id)]
            )
            self.assertEqual(len(notices), 1)

    def test_release_sees_the_entries_admission_committed(self):
        """Admission commits ledger entries on its own cursor while the queue run's
        transaction is open; releasing the mails that did not leave must remove them."""
        moment = datetime.datetime(2026, 1, 1, 12, 0)

        def worker():
            with self.worker_env() as env:
                env[LEDGER].search_count([])  # the queue run's snapshot starts
                with env[LEDGER]._locked(ACCOUNT) as ledger:
                    ledger.create(
                        {"account": ACCOUNT, "sent_at": moment, "recipient_count": 3, "mail_id": 77}
                    )
                env[LEDGER]._release(ACCOUNT, [77])
                env[LEDGER]._confirm_sent(ACCOUNT, "<none@test>", moment)

        self.assertFalse(self.run_workers(worker))
        with self.worker_env() as env:
            self.assertFalse(env[LEDGER].search_count([("account", "=", ACCOUNT)]))
