import threading
import time

from odoo import SUPERUSER_ID, api
from odoo.orm.environments import Transaction
from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services.auth import TokenSet

from .common import GraphTransactionCase

SETTINGS_PREFIXES = ("microsoft_outlook_graph.", "microsoft_outlook_client_id")


@tagged("post_install", "-at_install")
class TestTokenRace(GraphTransactionCase):
    """Two workers with their own committed transactions refresh one account at once:
    the row lock lets one refresh, the other reuses its token.

    Outside Odoo's test cursor on purpose: the row lock only means something between
    real, concurrent transactions.
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
            server = env["ir.mail_server"].create(
                {
                    "name": "Race",
                    "smtp_authentication": "microsoft_graph",
                    "smtp_user": defaults.ADMIN,
                    "from_filter": defaults.ADMIN,
                }
            )
            answer = self.sandbox.issue_token(
                defaults.ADMIN, ["Mail.Send", "Mail.ReadWrite", "User.Read"]
            )
            expired = {**TokenSet.from_msal(answer).to_dict(), "expires_at": int(time.time()) - 10}
            server._microsoft_graph_store_tokens(TokenSet.from_dict(expired))
            self.server_id = server.id
        self.addCleanup(self.drop_committed_state)

    def drop_committed_state(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["ir.mail_server"].browse(self.server_id).unlink()
            Config = env["ir.config_parameter"]
            Config.search([("key", "=like", "microsoft_outlook_graph.%")]).unlink()
            for key, value in self.saved_params.items():
                Config.set_param(key, value)

    def test_two_workers_refresh_once(self):
        self.sandbox.clear_log()
        tokens, errors = [], []
        start = threading.Barrier(2)

        def worker():
            try:
                # As _microsoft_graph_access_token does: read on the worker's cursor,
                # refresh on a new one. Odoo's test runner holds the registry lock that
                # a new Environment waits for, hence the explicit transactions.
                with self.registry.cursor() as cr, self.registry.cursor() as lock_cr:
                    cr.transaction = Transaction(self.registry)
                    lock_cr.transaction = Transaction(self.registry)
                    env = api.Environment(cr, SUPERUSER_ID, {})
                    server = env["ir.mail_server"].browse(self.server_id)
                    seen = server._microsoft_graph_open_tokens()["access_token"]
                    start.wait(timeout=10)
                    locked = server.with_env(server.env(cr=lock_cr))
                    tokens.append(locked._microsoft_graph_refresh_locked(seen, False))
            except Exception as exc:  # reported by the assertion below
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertFalse(errors)
        self.assertEqual(len(tokens), 2)
        self.assertEqual(tokens[0], tokens[1])
        refreshes = [e for e in self.sandbox.requests if e.path.endswith("/oauth2/v2.0/token")]
        self.assertEqual(len(refreshes), 1)
