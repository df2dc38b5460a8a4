import json
import time
import uuid

from odoo.tests import tagged
from odoo.tools import config, mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services.errors import GraphAuthError

from .common import GraphTransactionCase, connect_without_browser

MIXIN_LOGGER = "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_mixin"


@tagged("post_install", "-at_install")
class TestTokens(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        # The token refresh runs on its own cursor; in test mode it shares ours.
        self.registry_enter_test_mode()
        self.server = connect_without_browser(self, self.create_outgoing())

    def sealed_tokens(self):
        vault = self.server._microsoft_graph_vault()
        return json.loads(vault.open(self.server.microsoft_graph_tokens_sealed, "token"))

    def assert_auth_error(self, **kwargs):
        """Like assertRaises, without Odoo's savepoint: what the failure wrote must stay."""
        try:
            with mute_logger(MIXIN_LOGGER):
                self.server._microsoft_graph_access_token(**kwargs)
        except GraphAuthError as exc:
            return exc
        self.fail("GraphAuthError not raised")

    def admin_notifications(self):
        return self.env["mail.message"].search(
            [("model", "=", "ir.mail_server"), ("res_id", "=", self.server.id)]
        )

    def test_valid_token_is_reused(self):
        self.sandbox.clear_log()
        token = self.server._microsoft_graph_access_token()
        self.assertEqual(token, self.sealed_tokens()["access_token"])
        self.assertFalse([e for e in self.sandbox.requests if e.path.endswith("/token")])

    def test_refresh_before_expiry_rotates_the_refresh_token(self):
        before = self.sealed_tokens()
        tokens = dict(before, expires_at=int(time.time()) + 60)
        self.env["microsoft.outlook.graph.connection"]._write_committed(
            self.server,
            {
                "tokens_sealed": self.server._microsoft_graph_vault().seal(
                    json.dumps(tokens), "token"
                )
            },
        )
        token = self.server._microsoft_graph_access_token()
        after = self.sealed_tokens()
        self.assertEqual(token, after["access_token"])
        self.assertNotEqual(after["access_token"], before["access_token"])
        self.assertNotEqual(after["refresh_token"], before["refresh_token"])
        # A new hour, counted from the refresh: later than the old token's minute by far.
        self.assertGreater(after["expires_at"], tokens["expires_at"] + 3000)

    def test_a_server_nobody_sends_from_refreshes_nothing(self):
        """Tokens are refreshed on use only: the addon's crons and an empty mail queue leave
        an idle personal server's expired access token alone (no request to Microsoft)."""
        tokens = dict(self.sealed_tokens(), expires_at=int(time.time()) - 3600)
        self.env["microsoft.outlook.graph.connection"]._write_committed(
            self.server,
            {
                "tokens_sealed": self.server._microsoft_graph_vault().seal(
                    json.dumps(tokens), "token"
                )
            },
        )
        self.sandbox.clear_log()
        self.env["microsoft.outlook.graph.mailbox"]._cron_health_check()
        self.env["microsoft.outlook.graph.subscription"]._cron_keep_subscriptions()
        self.env["fetchmail.server"]._cron_microsoft_graph_poll()
        self.env["mail.mail"].process_email_queue()
        self.assertFalse(self.sandbox.requests)
        self.assertEqual(self.sealed_tokens(), tokens)

    def test_expired_access_token_is_refreshed_on_401(self):
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        me = self.server._microsoft_graph_client().me()
        self.assertEqual(me["mail"], defaults.ADMIN)

    def test_revoked_grant_needs_reconnect_and_notifies_once(self):
        self.sandbox.revoke(defaults.ADMIN)
        for _attempt in range(3):
            self.assert_auth_error(force_refresh=True)
        self.assertEqual(self.server.microsoft_graph_status, "reconnect")
        self.assertTrue(self.server.microsoft_graph_last_error)
        self.assertEqual(len(self.admin_notifications()), 1)
        # No further call goes to Microsoft while the server waits for a reconnect.
        self.sandbox.clear_log()
        self.assert_auth_error(force_refresh=True)
        self.assertFalse(self.sandbox.requests)

    def test_refresh_token_expired_through_inactivity(self):
        self.sandbox.expire_refresh_tokens(defaults.ADMIN)
        self.assert_auth_error(force_refresh=True)
        self.assertEqual(self.server.microsoft_graph_status, "reconnect")

    def test_database_copy_cannot_open_tokens(self):
        self.env["ir.config_parameter"].sudo().set_param("database.uuid", str(uuid.uuid4()))
        self.server.invalidate_recordset()
        self.assertEqual(self.server.microsoft_graph_status, "reconnect")
        with self.assertRaisesRegex(GraphAuthError, "another key"):
            self.server._microsoft_graph_access_token()

    def test_config_secret_protects_a_dump(self):
        """Sealed with a configuration secret, a dump without the file opens nothing."""
        self.patch(
            config, "options", dict(config.options, microsoft_outlook_graph_vault_secret="s1")
        )
        server = connect_without_browser(self, self.create_incoming())
        self.assertFalse(server.microsoft_graph_vault_warning)
        self.assertEqual(server.microsoft_graph_status, "valid")
        config.options.pop("microsoft_outlook_graph_vault_secret")
        server.invalidate_recordset()
        self.assertEqual(server.microsoft_graph_status, "reconnect")
        self.assertTrue(server.microsoft_graph_vault_warning)

    def test_reconnect_clears_the_flag(self):
        self.sandbox.revoke(defaults.ADMIN)
        self.assert_auth_error(force_refresh=True)
        connect_without_browser(self, self.server)
        self.assertEqual(self.server.microsoft_graph_status, "valid")
        self.assertFalse(self.server.microsoft_graph_last_error)

    def test_reseal_after_a_vault_secret_rotation(self):
        self.patch(
            config, "options", dict(config.options, microsoft_outlook_graph_vault_secret="old")
        )
        server = connect_without_browser(self, self.create_incoming())
        self.configure_outlook()  # the client secret, sealed under "old" too
        config.options["microsoft_outlook_graph_vault_secret"] = "new,old"
        resealed, unreadable = self.env[
            "microsoft.outlook.graph.mixin"
        ]._microsoft_graph_reseal_all()
        # The setUp server was sealed before any secret existed: resealed too.
        self.assertEqual((resealed, unreadable), (3, 0))
        config.options["microsoft_outlook_graph_vault_secret"] = "new"
        (server | self.env["fetchmail.server"]).invalidate_model()
        self.server.invalidate_recordset()
        self.assertEqual(server.microsoft_graph_status, "valid")
        self.assertEqual(self.server.microsoft_graph_status, "valid")
        self.assertTrue(server._microsoft_graph_client().me())

    def test_reseal_covers_the_app_certificate_key(self):
        self.patch(
            config, "options", dict(config.options, microsoft_outlook_graph_vault_secret="old")
        )
        self.env["res.config.settings"]._microsoft_graph_new_certificate()
        config.options["microsoft_outlook_graph_vault_secret"] = "new,old"
        Mixin = self.env["microsoft.outlook.graph.mixin"]
        _resealed, unreadable = Mixin._microsoft_graph_reseal_all()
        self.assertEqual(unreadable, 0)
        config.options["microsoft_outlook_graph_vault_secret"] = "new"
        [entry] = Mixin._microsoft_graph_certificates()
        key = Mixin._microsoft_graph_vault().open(entry["key_sealed"], "certificate_key")
        self.assertIn("PRIVATE KEY", key)
