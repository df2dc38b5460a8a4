import importlib.util
import time

from odoo.tests import TransactionCase, tagged
from odoo.tools.misc import file_path

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase


@tagged("post_install", "-at_install")
class TestMigration(GraphTransactionCase):
    """Odoo's Outlook IMAP/SMTP servers become Graph servers in place."""

    def outlook_values(self):
        return {
            "microsoft_outlook_refresh_token": "plaintext-refresh",
            "microsoft_outlook_access_token": "plaintext-access",
            "microsoft_outlook_access_token_expiration": int(time.time()) + 3600,
        }

    def test_outgoing_outlook_server_switches_to_graph(self):
        server = self.env["ir.mail_server"].create(
            {
                "name": "Outlook SMTP",
                "smtp_authentication": "outlook",
                "smtp_host": "smtp.outlook.com",
                "smtp_port": 587,
                "smtp_encryption": "starttls",
                "smtp_user": defaults.ADMIN,
                "from_filter": defaults.ADMIN,
                "sequence": 3,
                **self.outlook_values(),
            }
        )
        action = server.with_user(
            self.env.ref("base.user_admin")
        ).action_microsoft_graph_switch_from_outlook()
        self.assertEqual(action["type"], "ir.actions.act_url")
        self.assertTrue(action["url"].startswith(self.sandbox.base_url))
        self.assertEqual(server.smtp_authentication, "microsoft_graph")
        self.assertEqual(
            (server.smtp_user, server.from_filter, server.sequence),
            (defaults.ADMIN, defaults.ADMIN, 3),
        )
        self.assertFalse(server.microsoft_outlook_refresh_token)
        self.assertFalse(server.microsoft_outlook_access_token)
        self.assertEqual(server.microsoft_graph_status, "not_connected")

    def test_incoming_outlook_server_switches_to_graph(self):
        model = self.env["ir.model"]._get("res.partner")
        server = self.env["fetchmail.server"].create(
            {
                "name": "Outlook IMAP",
                "server_type": "outlook",
                "server": "imap.outlook.com",
                "port": 993,
                "is_ssl": True,
                "user": defaults.ADMIN,
                "object_id": model.id,
                "original": True,
                **self.outlook_values(),
            }
        )
        server.with_user(
            self.env.ref("base.user_admin")
        ).action_microsoft_graph_switch_from_outlook()
        self.assertEqual(server.server_type, "microsoft_graph")
        self.assertEqual(
            (server.user, server.object_id, server.original), (defaults.ADMIN, model, True)
        )
        self.assertFalse(server.microsoft_outlook_refresh_token)
        self.assertEqual(server.microsoft_graph_folder, "inbox")


def run_migration_step(env, step, version="19.0.1.1.0"):
    """Run migrations/19.0.1.2.0/<step>-migrate.py as Odoo's upgrade does."""
    path = file_path(f"microsoft_outlook_graph/migrations/19.0.1.2.0/{step}-migrate.py")
    spec = importlib.util.spec_from_file_location(f"migrate_19_0_1_2_0_{step}", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.migrate(env.cr, version)
    return script


@tagged("post_install", "-at_install")
class TestCronXmlIdsMigration(TransactionCase):
    """19.0.1.2.0 renames the crons' xml ids: a database of 19.0.1.1.0 keeps its crons."""

    def xmlid_row(self, name):
        self.env.cr.execute(
            "SELECT res_id, noupdate FROM ir_model_data WHERE module = %s AND name = %s",
            ["microsoft_outlook_graph", name],
        )
        return self.env.cr.fetchone()

    def test_crons_of_a_19_0_1_1_0_database_keep_their_rows_under_the_new_ids(self):
        pre = run_migration_step(self.env, "pre", version=None)  # fresh install: no-op
        renamed = pre.RENAMED_XMLIDS
        crons = {new: self.env.ref(f"microsoft_outlook_graph.{new}") for new in renamed.values()}
        # The database as 19.0.1.1.0 left it: old ids and names, the health cron updatable.
        for old, new in renamed.items():
            self.env.cr.execute(
                "UPDATE ir_model_data SET name = %s, noupdate = %s "
                "WHERE module = 'microsoft_outlook_graph' AND name = %s",
                [old, old != "microsoft_outlook_graph_health_cron", new],
            )
        health, poll, subscriptions = crons.values()
        health.name = "Outlook (Microsoft Graph): daily health check"
        poll.name = "Outlook: Check Mailboxes Without Change Notifications"
        subscriptions.name = "Subscriptions (renamed by the admin)"
        poll.active = False
        health.code = "model._cron_microsoft_graph_health_check()"
        subscriptions.code = "model._cron_microsoft_graph_subscriptions()"
        self.env.registry.clear_cache()

        run_migration_step(self.env, "pre")
        run_migration_step(self.env, "post")
        self.env.registry.clear_cache()
        self.env.invalidate_all()

        for old, new in renamed.items():
            self.assertIsNone(self.xmlid_row(old))
            self.assertEqual(self.xmlid_row(new), (crons[new].id, True))
            self.assertEqual(self.env.ref(f"microsoft_outlook_graph.{new}"), crons[new])
        self.assertEqual(health.name, "Microsoft Graph: Daily Mailbox Health Check")
        self.assertEqual(poll.name, "Microsoft Graph: Check Mailboxes Without Change Notifications")
        self.assertEqual(subscriptions.name, "Subscriptions (renamed by the admin)")
        self.assertFalse(poll.active, "the admin's choice survives the upgrade")
        self.assertEqual(health.code, "model._cron_health_check()")
        self.assertEqual(subscriptions.code, "model._cron_keep_subscriptions()")
        self.assertEqual(poll.code, "model._cron_microsoft_graph_poll()")
