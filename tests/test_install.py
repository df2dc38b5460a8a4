from odoo.tests import tagged

from .common import GraphTransactionCase


@tagged("post_install", "-at_install")
class TestInstall(GraphTransactionCase):
    def test_reaches_the_sandbox_through_the_addon_client(self):
        """The custom cloud of Settings leads the addon's own client code to the sandbox."""
        mixin = self.env["microsoft.outlook.graph.mixin"]
        endpoints = mixin._microsoft_graph_endpoints()
        self.assertEqual(endpoints.authority_base, self.sandbox.base_url)
        session = endpoints.session()
        configuration = session.get(
            endpoints.authority("contoso.test") + "/v2.0/.well-known/openid-configuration",
            timeout=120,
        ).json()
        self.assertTrue(configuration["token_endpoint"].startswith(self.sandbox.base_url))
        # MSAL, configured by the addon, discovers the same authority.
        auth_uri, flow = mixin._microsoft_graph_auth().start_flow(["User.Read"])
        self.assertTrue(auth_uri.startswith(configuration["authorization_endpoint"]))
        self.assertIn("code_verifier", flow)

    def test_server_types_are_offered(self):
        self.assertIn(
            "microsoft_graph",
            dict(self.env["ir.mail_server"]._fields["smtp_authentication"].selection),
        )
        self.assertIn(
            "microsoft_graph",
            dict(self.env["fetchmail.server"]._fields["server_type"].selection),
        )

    def test_client_secret_is_sealed_in_settings(self):
        Config = self.env["ir.config_parameter"].sudo()
        sealed = Config.get_param("microsoft_outlook_graph.client_secret_sealed")
        self.assertTrue(sealed.startswith("v1:"))
        settings = self.env["res.config.settings"].create({})
        self.assertTrue(settings.microsoft_graph_client_secret_set)
        self.assertFalse(settings.microsoft_graph_client_secret)
        self.assertTrue(
            settings.microsoft_graph_redirect_uri.endswith("/microsoft_outlook/confirm")
        )
