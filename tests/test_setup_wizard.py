"""The guided setup: each step tested at the sandbox's Entra ID, each refusal explained with
the Azure page and the field to fix, and nothing saved in Settings unless the test passed."""

import socket

from odoo.exceptions import UserError
from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase

# Every parameter the guided setup may write, and Odoo's Outlook ones it shares.
PARAMS = (
    "microsoft_outlook_client_id",
    "microsoft_outlook_client_secret",
    "microsoft_outlook_graph.client_secret_sealed",
    "microsoft_outlook_graph.tenant",
    "microsoft_outlook_graph.cloud",
    "microsoft_outlook_graph.authority_url",
    "microsoft_outlook_graph.graph_url",
    "microsoft_outlook_graph.ca_file",
)
EXPIRED_CLIENT_ID = "44444444-4444-4444-4444-444444444444"
EXPIRED_SECRET = "expired-secret-value"


@tagged("post_install", "-at_install")
class TestSetupWizard(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        # A database with no Azure app configured.
        self.env["ir.config_parameter"].sudo().search([("key", "in", PARAMS)]).unlink()
        self.Setup = self.env["microsoft.outlook.graph.setup"]

    def params(self):
        Config = self.env["ir.config_parameter"].sudo()
        return {key: Config.get_param(key) for key in PARAMS}

    def app_step(self, **values):
        """The setup on step 2, filled in as the admin would for the sandbox."""
        return self.Setup.create(
            {
                "step": "app",
                "client_id": defaults.CLIENT_ID,
                "client_secret": defaults.CLIENT_SECRET,
                "tenant": defaults.TENANT_ID,
                "cloud": "custom",
                "authority_url": self.sandbox.base_url,
                "graph_url": self.sandbox.base_url,
                "ca_file": self.sandbox.ca_file,
                **values,
            }
        )

    def assert_refused(self, setup, *words):
        """The test failed with words naming what to fix; nothing reached Settings."""
        before = self.params()
        setup.action_test_app()
        self.assertEqual(setup.app_check_kind, "danger", setup.app_check)
        for word in words:
            self.assertIn(word, setup.app_check)
        self.assertFalse(setup.app_saved)
        self.assertEqual(self.params(), before, "a refused value changed Settings")
        with self.assertRaises(UserError):
            setup.action_next()
        self.assertEqual(setup.step, "app")

    # step 1 ---------------------------------------------------------------------------

    def test_settings_opens_the_setup_on_the_redirect_uri(self):
        action = self.env["res.config.settings"].create({}).action_microsoft_graph_open_setup()
        self.assertEqual(action["res_model"], "microsoft.outlook.graph.setup")
        self.assertEqual(action["target"], "new")
        setup = self.Setup.browse(action["res_id"])
        self.assertEqual(setup.step, "redirect")
        self.assertEqual(setup.redirect_uri, self.redirect_uri)
        self.assertTrue(setup.redirect_uri.endswith("/microsoft_outlook/confirm"))
        setup.action_next()
        self.assertEqual(setup.step, "app")
        setup.action_back()
        self.assertEqual(setup.step, "redirect")

    def test_redirect_uri_azure_refuses_is_said(self):
        Config = self.env["ir.config_parameter"].sudo()
        Config.set_param("web.base.url", "http://odoo.example.com")
        self.assertTrue(self.Setup.create({}).redirect_uri_not_https)
        Config.set_param("web.base.url", "https://odoo.example.com")
        self.assertFalse(self.Setup.create({}).redirect_uri_not_https)
        Config.set_param("web.base.url", "http://localhost:8069")
        self.assertFalse(self.Setup.create({}).redirect_uri_not_https)

    # step 2 ---------------------------------------------------------------------------

    def test_app_accepted_is_saved_where_settings_keeps_it(self):
        setup = self.app_step(tenant=defaults.TENANT_DOMAIN)
        setup.action_test_app()
        self.assertEqual(setup.app_check_kind, "success", setup.app_check)
        self.assertIn("Saved in Settings", setup.app_check)
        # the domain's directory, read from the tenant's OpenID metadata
        self.assertIn(defaults.TENANT_ID, setup.app_check)
        params = self.params()
        self.assertEqual(params["microsoft_outlook_client_id"], defaults.CLIENT_ID)
        self.assertEqual(params["microsoft_outlook_graph.tenant"], defaults.TENANT_DOMAIN)
        self.assertEqual(params["microsoft_outlook_graph.authority_url"], self.sandbox.base_url)
        mixin = self.env["microsoft.outlook.graph.mixin"]
        self.assertEqual(mixin._microsoft_graph_client_secret(), defaults.CLIENT_SECRET)
        self.assertTrue(mixin._microsoft_graph_auth().prove_credential())
        self.assertFalse(setup.sudo().client_secret_sealed, "the setup keeps no secret once saved")
        setup.action_next()
        self.assertEqual(setup.step, "permissions")

    def test_setup_reopens_where_it_was_left(self):
        first = self.Setup.browse(self.Setup.action_open()["res_id"])
        first.action_next()
        first.client_id = defaults.CLIENT_ID
        # closed to fetch the secret in Azure, then opened again from Settings
        self.assertEqual(self.Setup.action_open()["res_id"], first.id)
        self.assertEqual(first.step, "app")

    def test_settings_page_it_was_opened_from_saves_the_new_values(self):
        # Settings, as the admin opened it before the setup: no Azure app yet.
        page = self.env["res.config.settings"].create({})
        page.action_microsoft_graph_open_setup()
        setup = self.app_step()
        setup.action_test_app()
        self.assertEqual(setup.app_check_kind, "success", setup.app_check)
        # The setup closes, Settings shows its page again, and the admin presses Save.
        page.execute()
        self.assertEqual(self.params()["microsoft_outlook_client_id"], defaults.CLIENT_ID)
        self.assertEqual(self.params()["microsoft_outlook_graph.tenant"], defaults.TENANT_ID)
        mixin = self.env["microsoft.outlook.graph.mixin"]
        self.assertEqual(mixin._microsoft_graph_client_secret(), defaults.CLIENT_SECRET)

    def test_certificate_prepared_in_settings_is_tested_instead_of_a_secret(self):
        self.configure_outlook()
        settings = self.env["res.config.settings"].create({})
        entry = settings._microsoft_graph_new_certificate()
        self.sandbox.add_app_certificate(defaults.CLIENT_ID, entry["info"]["certificate_pem"])
        settings.action_microsoft_graph_test_credential()
        # The app has no secret any more: only the certificate can pass.
        self.sandbox.remove_client_secret(defaults.CLIENT_ID)
        setup = self.app_step(client_secret=False)
        self.assertTrue(setup.uses_certificate)
        setup.action_test_app()
        self.assertEqual(setup.app_check_kind, "success", setup.app_check)
        self.assertIn("the certificate", setup.app_check)

    def test_secret_is_never_stored_in_plaintext(self):
        setup = self.app_step(client_secret="wrong-secret-value")
        self.env.flush_all()
        self.env.cr.execute(
            "SELECT to_jsonb(s)::text FROM microsoft_outlook_graph_setup s WHERE id = %s",
            [setup.id],
        )
        self.assertNotIn("wrong-secret-value", self.env.cr.fetchone()[0])
        setup.invalidate_recordset()
        self.assertFalse(setup.client_secret)

    def test_wrong_secret(self):
        setup = self.app_step(client_secret="wrong-secret-value")
        self.assert_refused(
            setup,
            "AADSTS7000215",
            "Certificates & secrets > Client secrets",
            "Value (not the Secret ID)",
        )
        # one destination: the setup's own Client Secret field, not Settings
        self.assertNotIn("Settings", setup.app_check)

    def test_expired_secret(self):
        tenant = self.sandbox.directory.tenant(defaults.TENANT_DOMAIN)
        self.sandbox.add_app(
            tenant,
            EXPIRED_CLIENT_ID,
            EXPIRED_SECRET,
            [self.redirect_uri],
            secret_expires_at=self.sandbox.clock.now() - 86400,
        )
        self.assert_refused(
            self.app_step(client_id=EXPIRED_CLIENT_ID, client_secret=EXPIRED_SECRET),
            "AADSTS7000222",
            "New client secret",
        )

    def test_unknown_tenant(self):
        self.assert_refused(
            self.app_step(tenant="nowhere.test"),
            "tenant and cloud test failed",
            "AADSTS90002",
            "Overview: copy the Directory (tenant) ID",
        )

    def test_bad_client_id(self):
        self.assert_refused(
            self.app_step(client_id="99999999-9999-9999-9999-999999999999"),
            "AADSTS700016",
            "Overview: copy the Application (client) ID",
        )

    def test_metadata_unreachable(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        self.assert_refused(
            self.app_step(authority_url=f"https://127.0.0.1:{closed_port}"),
            "tenant and cloud test failed",
            f"could not reach Microsoft's sign-in service at https://127.0.0.1:{closed_port}",
            "Authority URL",
            "firewall",
        )

    def test_values_settings_would_refuse(self):
        self.assert_refused(self.app_step(tenant="not a tenant"), "is not valid")
        self.assert_refused(self.app_step(ca_file="/nonexistent/ca.pem"), "CA Bundle File")
        self.assert_refused(self.app_step(client_id=False), "Overview")
        self.assert_refused(self.app_step(client_secret=False), "New client secret")

    def test_endpoints_with_a_path_odoo_adds_are_refused(self):
        host = self.sandbox.base_url
        self.assert_refused(
            self.app_step(graph_url=f"{host}/v1.0"), "Graph URL", f"enter the host only, {host}."
        )
        self.assert_refused(
            self.app_step(authority_url=f"{host}/{defaults.TENANT_ID}"),
            "Authority URL",
            f"enter the host only, {host}.",
        )

    def test_common_tenant_cannot_be_tested_but_may_be_saved(self):
        before = self.params()
        setup = self.app_step(tenant="common")
        setup.action_test_app()
        self.assertEqual(setup.app_check_kind, "warning", setup.app_check)
        self.assertIn("cannot test a client secret on the tenant common", setup.app_check)
        self.assertIn("Save without the test", setup.app_check)
        self.assertEqual(self.params(), before)
        self.assertFalse(
            [e for e in self.sandbox.requests if e.path.endswith("/token")],
            "nothing is sent that Microsoft must refuse",
        )
        setup.action_save_untested()
        self.assertEqual(setup.step, "permissions")
        self.assertEqual(self.params()["microsoft_outlook_graph.tenant"], "common")
        self.assertEqual(self.params()["microsoft_outlook_client_id"], defaults.CLIENT_ID)

    def test_save_untested_needs_the_common_tenant_answer(self):
        setup = self.app_step(client_secret="wrong-secret-value")
        setup.action_test_app()
        with self.assertRaises(UserError):
            setup.action_save_untested()
        self.assertFalse(self.params()["microsoft_outlook_client_id"])

    # step 3 ---------------------------------------------------------------------------

    def test_permissions_of_the_servers_to_create(self):
        setup = self.Setup.create({"step": "permissions"})
        self.assertIn("Mail.Send", setup.permissions)
        self.assertIn("Mail.ReadWrite", setup.permissions)
        self.assertIn("User.Read", setup.permissions)
        for name in ("offline_access", "openid", "profile", "email"):
            self.assertIn(name, setup.permissions)
        self.assertNotIn(".Shared", setup.permissions)
        setup.write({"use_outgoing": False, "mailbox_kind": "shared"})
        self.assertIn("Mail.ReadWrite.Shared", setup.permissions)
        self.assertNotIn("Mail.Send", setup.permissions)
        setup.use_incoming = False
        with self.assertRaises(UserError):
            setup.action_next()

    # step 4 ---------------------------------------------------------------------------

    def sign_in(self, action):
        """The admin at Microsoft, then Odoo's confirm route, without a browser."""
        self.assertEqual(action["type"], "ir.actions.act_url")
        result = self.sandbox.sign_in(action["url"])
        Flow = self.env["microsoft.outlook.graph.flow"].sudo()
        pending, problem = Flow._consume(result.params["state"])
        self.assertFalse(problem)
        server = self.env[pending["res_model"]].browse(pending["res_id"]).sudo()
        server._microsoft_graph_finish_connect(pending["flow_sealed"], result.params)
        return server

    def test_first_mailbox_created_and_connected(self):
        self.configure_outlook()
        setup = self.Setup.create({"step": "servers", "mailbox_address": " Admin@Contoso.test "})
        setup.action_create_servers()
        outgoing, incoming = setup.outgoing_server_id, setup.incoming_server_id
        self.assertEqual((outgoing.name, outgoing.smtp_user), (defaults.ADMIN, defaults.ADMIN))
        self.assertEqual(outgoing.smtp_authentication, "microsoft_graph")
        self.assertEqual((incoming.name, incoming.user), (defaults.ADMIN, defaults.ADMIN))
        self.assertEqual(incoming.server_type, "microsoft_graph")
        self.assertEqual(self.sign_in(setup.action_connect_outgoing()), outgoing)
        self.assertEqual(outgoing.microsoft_graph_status, "valid")
        # from Settings again: the same setup, the incoming server still to connect
        reopened = self.Setup.action_open()
        self.assertEqual(reopened["res_id"], setup.id)
        self.assertEqual(self.sign_in(setup.action_connect_incoming()), incoming)
        self.assertEqual(incoming.microsoft_graph_status, "valid")
        self.assertNotEqual(self.Setup.action_open()["res_id"], setup.id)

    def test_existing_server_of_the_mailbox_is_reused(self):
        existing = self.create_outgoing(name="Contoso administrator")
        setup = self.Setup.create(
            {"step": "servers", "mailbox_address": defaults.ADMIN, "use_incoming": False}
        )
        setup.action_create_servers()
        self.assertEqual(setup.outgoing_server_id, existing)
        self.assertFalse(setup.incoming_server_id)

    def test_user_without_an_email_address_is_offered_the_mailbox_address(self):
        # A new database's Administrator: the first chatter message would fail.
        self.env.user.partner_id.email = False
        setup = self.Setup.create({"step": "servers"})
        self.assertTrue(setup.user_email_missing)
        with self.assertRaises(UserError):
            setup.action_set_user_email()
        setup.mailbox_address = " Admin@Contoso.test "
        setup.action_set_user_email()
        self.assertEqual(self.env.user.email, defaults.ADMIN)
        setup.invalidate_recordset()
        self.assertFalse(setup.user_email_missing)
        self.assertFalse(
            self.env["mail.mail"].search([("subject", "ilike", "Security Update")]),
            "no notice mailed to the empty previous address",
        )

    def test_user_email_address_is_kept(self):
        self.env.user.partner_id.email = "me@example.com"
        setup = self.Setup.create({"step": "servers", "mailbox_address": defaults.ADMIN})
        self.assertFalse(setup.user_email_missing)
        setup.action_set_user_email()
        self.assertEqual(self.env.user.email, "me@example.com")

    def test_mailbox_address_required(self):
        setup = self.Setup.create({"step": "servers", "mailbox_address": "not an address"})
        with self.assertRaises(UserError):
            setup.action_create_servers()
        self.assertFalse(setup.outgoing_server_id or setup.incoming_server_id)
