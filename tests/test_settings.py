"""Settings values are checked when saved; a value that goes bad later is explained."""

import os
import shutil
import tempfile

from lxml import etree

from odoo.exceptions import UserError
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase, connect_without_browser

PREFIX = "microsoft_outlook_graph."


@tagged("post_install", "-at_install")
class TestSettingsValidation(GraphTransactionCase):
    def params(self):
        Config = self.env["ir.config_parameter"].sudo()
        return {
            key: Config.get_param(PREFIX + key)
            for key in ("tenant", "cloud", "authority_url", "graph_url", "ca_file")
        }

    def assert_refused(self, fragment, **values):
        before = self.params()
        with self.assertRaises(UserError) as caught:
            self.configure_outlook(**values)
        self.assertIn(fragment, str(caught.exception))
        self.assertNotIn("Traceback", str(caught.exception))
        self.assertEqual(self.params(), before, "nothing may change on a refused value")
        return str(caught.exception)

    def test_valid_values_are_saved(self):
        for tenant in ("common", "Organizations", "consumers", defaults.TENANT_ID, "contoso.test"):
            self.configure_outlook(microsoft_graph_tenant=tenant)
            self.assertEqual(self.params()["tenant"], tenant.strip())

    def test_tenant(self):
        for tenant in (
            "contoso",
            "https://login.microsoftonline.com/contoso",
            "a b.com",
            "x@y.com",
        ):
            self.assert_refused("Microsoft Tenant", microsoft_graph_tenant=tenant)

    def test_urls(self):
        for field in ("microsoft_graph_authority_url", "microsoft_graph_graph_url"):
            for url in (
                "http://login.example.com",
                "login.example.com",
                "https://",
                "https://host.example.com/?x=1",
                "https://user:pw@host.example.com",
            ):
                self.assert_refused("https://", **{field: url})

    def test_urls_with_a_path_odoo_adds_name_the_field_and_the_host(self):
        # As the sandbox and Microsoft's docs print them: every Connect would then fail.
        host = self.sandbox.base_url
        for field, label, url, part in (
            ("microsoft_graph_graph_url", "Graph URL", f"{host}/v1.0", "/v1.0"),
            ("microsoft_graph_graph_url", "Graph URL", f"{host}/v1.0/", "/v1.0"),
            ("microsoft_graph_graph_url", "Graph URL", f"{host}/beta", "/beta"),
            ("microsoft_graph_authority_url", "Authority URL", f"{host}/common", "/common"),
            (
                "microsoft_graph_authority_url",
                "Authority URL",
                f"{host}/{defaults.TENANT_ID}",
                f"/{defaults.TENANT_ID}",
            ),
        ):
            message = self.assert_refused(f'{label} "{url}" ends in {part}', **{field: url})
            self.assertIn(f"enter the host only, {host}.", message)

    def test_graph_url_saved_before_the_check_is_named_at_connect(self):
        self.env["ir.config_parameter"].sudo().set_param(
            PREFIX + "graph_url", f"{self.sandbox.base_url}/v1.0"
        )
        server = self.create_outgoing()
        with self.assertRaises(UserError) as caught:
            server.action_microsoft_graph_connect()
        self.assertIn(f"enter the host only, {self.sandbox.base_url}.", str(caught.exception))
        self.assertIn("Graph URL", str(caught.exception))

    def test_ca_file_missing(self):
        message = self.assert_refused(
            "does not exist", microsoft_graph_ca_file="/nonexistent/ca-bundle.pem"
        )
        self.assertIn("CA Bundle File", message)

    def test_ca_file_directory(self):
        self.assert_refused("cannot be read", microsoft_graph_ca_file=tempfile.gettempdir())

    def test_ca_file_not_pem(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
            handle.write("this is not a certificate\n")
        self.addCleanup(os.unlink, handle.name)
        self.assert_refused("no PEM certificate", microsoft_graph_ca_file=handle.name)

    def test_ca_file_broken_pem(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
            handle.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        self.addCleanup(os.unlink, handle.name)
        self.assert_refused("CA Bundle File", microsoft_graph_ca_file=handle.name)


@tagged("post_install", "-at_install")
class TestCaFileGoneLater(GraphTransactionCase):
    """A CA file deleted after it was saved: every path explains it, none raises OSError."""

    def setUp(self):
        super().setUp()
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        self.ca_copy = os.path.join(folder, "ca.pem")
        shutil.copy(self.sandbox.ca_file, self.ca_copy)
        self.configure_outlook(microsoft_graph_ca_file=self.ca_copy)
        self.outgoing = connect_without_browser(self, self.create_outgoing())
        self.incoming = connect_without_browser(self, self.create_incoming())
        self.incoming.button_confirm_login()
        os.unlink(self.ca_copy)

    def assert_explained(self, text):
        self.assertIn("CA Bundle File", text)
        self.assertIn(self.ca_copy, text)
        self.assertNotIn("OSError", text)
        self.assertNotIn("suitable TLS CA", text)

    def test_connection_test(self):
        # No assertRaises: its savepoint would undo the error written on the server.
        try:
            self.outgoing.test_smtp_connection()
        except UserError as exc:
            self.assert_explained(str(exc))
        else:
            self.fail("Test Connection passed without a CA bundle")
        self.outgoing.invalidate_recordset()
        self.assertFalse(self.outgoing.microsoft_graph_needs_reconnect, "the tokens stay good")
        self.assertTrue(self.outgoing.microsoft_graph_tokens_sealed)
        self.assert_explained(self.outgoing.microsoft_graph_last_error)

    def test_fetch_now(self):
        try:
            action = self.incoming.fetch_mail()
        except UserError as exc:
            self.assert_explained(str(exc))
        else:
            self.assertEqual(action["params"]["type"], "danger")
            self.assert_explained(action["params"]["message"])
        self.incoming.invalidate_recordset()
        self.assert_explained(self.incoming.microsoft_graph_last_error)
        self.assertFalse(self.incoming.microsoft_graph_needs_reconnect)

    def test_send(self):
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        mail = self.env["mail.mail"].create(
            {
                "email_from": defaults.ADMIN,
                "email_to": "someone@example.com",
                "subject": "CA gone",
                "body_html": "<p>Hello</p>",
                "mail_server_id": self.outgoing.id,
            }
        )
        with mute_logger("odoo.addons.mail.models.mail_mail"):
            mail.send()
        self.assertEqual(mail.state, "exception")
        self.assert_explained(mail.failure_reason)


@tagged("post_install", "-at_install")
class TestServerWords(GraphTransactionCase):
    """What a server says points the admin the right way."""

    def test_never_connected_says_connect(self):
        server = self.create_outgoing()
        with self.assertRaises(UserError) as caught:
            server.test_smtp_connection()
        message = str(caught.exception)
        self.assertIn("connect it", message)
        self.assertNotIn("reconnect", message.lower())
        self.assertIn("Connect your Outlook account", message)

    def test_needs_reconnect_says_reconnect(self):
        server = connect_without_browser(self, self.create_outgoing())
        self.env["microsoft.outlook.graph.connection"]._write_committed(
            server, {"needs_reconnect": True}
        )
        server.invalidate_recordset()
        with self.assertRaises(UserError) as caught:
            server.test_smtp_connection()
        self.assertIn("Reconnect", str(caught.exception))

    def test_detect_max_limit_sets_exchange_limit(self):
        server = connect_without_browser(self, self.create_outgoing())
        self.assertFalse(server.max_email_size)
        action = server.action_retrieve_max_email_size()
        self.assertEqual(server.max_email_size, 35.0)
        self.assertIn("35", action["params"]["message"])
        self.assertIn("Exchange Online", action["params"]["message"])
        self.assertNotIn("Connection Test Successful", action["params"]["title"])
        # the form reloads, or it keeps showing 0.00 after the toast
        self.assertEqual(action["params"]["next"], {"type": "ir.actions.act_window_close"})


@tagged("post_install", "-at_install")
class TestSaveAndTestCredential(GraphTransactionCase):
    """The client id and secret are proved at Microsoft before anyone signs in."""

    def press(self, **values):
        settings = self.env["res.config.settings"].create(
            {
                "microsoft_outlook_client_identifier": defaults.CLIENT_ID,
                "microsoft_graph_tenant": defaults.TENANT_ID,
                "microsoft_graph_cloud": "custom",
                "microsoft_graph_authority_url": self.sandbox.base_url,
                "microsoft_graph_graph_url": self.sandbox.base_url,
                "microsoft_graph_ca_file": self.sandbox.ca_file,
                **values,
            }
        )
        return settings.action_microsoft_graph_save_and_test()["params"]

    def test_good_secret_is_accepted(self):
        params = self.press(microsoft_graph_client_secret=defaults.CLIENT_SECRET)
        self.assertEqual(params["type"], "success", params["message"])

    def test_wrong_secret_is_said_before_sign_in(self):
        with mute_logger("odoo.addons.microsoft_outlook_graph"):
            params = self.press(microsoft_graph_client_secret="not-the-secret")
        self.assertEqual(params["type"], "danger")
        self.assertIn("client secret", params["message"])
        self.assertIn("Certificates & secrets", params["message"])

    def test_wrong_client_id_is_said(self):
        with mute_logger("odoo.addons.microsoft_outlook_graph"):
            params = self.press(
                microsoft_outlook_client_identifier="00000000-0000-0000-0000-000000000000",
                microsoft_graph_client_secret=defaults.CLIENT_SECRET,
            )
        self.assertEqual(params["type"], "danger")


@tagged("post_install", "-at_install")
class TestScreenLabels(GraphTransactionCase):
    """Labels an admin reads without guessing (issue 19, a new admin in a browser)."""

    def arch(self, model, view_type):
        views = self.env[model].get_views([(False, view_type)])
        return etree.fromstring(views["views"][view_type]["arch"]), views["models"][model]

    def test_health_list_tenant_columns_are_told_apart(self):
        # At 1400 px their field names were both cut to "Tenant Exte...".
        arch, fields = self.arch("microsoft.outlook.graph.mailbox", "list")
        labels = []
        for name in ("tenant_external_used", "tenant_external_limit"):
            [node] = arch.xpath(f"//field[@name='{name}']")
            labels.append(node.get("string") or fields[name]["string"])
        self.assertTrue(all(len(label) <= 12 for label in labels), labels)
        self.assertNotEqual(labels[0][:11], labels[1][:11])

    def test_graph_incoming_form_has_no_empty_server_tab(self):
        arch, _fields = self.arch("fetchmail.server", "form")
        [login] = arch.xpath("//page[@name='server_login_details']")
        self.assertIn("server_type == 'microsoft_graph'", login.get("invisible", ""))
        # Create a New Record, the tab's only field for Graph, where Graph reads what to import
        self.assertTrue(
            arch.xpath("//page[@name='microsoft_graph_import']//field[@name='object_id']")
        )
