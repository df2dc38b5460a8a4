"""Issue 16: the Azure app signs in with a certificate that Odoo makes and keeps.

Generate in Settings, download the public part, register it in the sandbox's Azure, test it,
then connect, refresh and send with no client secret anywhere (neither in Odoo nor on the
Azure app); an unregistered and an expired certificate are explained; rotation to a second
certificate loses no mail; the daily check warns 30, 14 and 3 days before expiry, once each;
no private key material in the database, the logs, the download or any RPC answer.
"""

import base64
import binascii
import json
import os
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path
from unittest import SkipTest
from unittest.mock import patch

from odoo.modules.neutralize import neutralize_database
from odoo.tests import common as odoo_common
from odoo.tests import freeze_time, tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.sandbox.leak_guard import PRIVATE_KEY_MARKER
from odoo.addons.microsoft_outlook_graph.services.certificates import CertificateInfo

from .common import GraphHttpCase, connect_without_browser

SECRET_PARAMS = ("microsoft_outlook_graph.client_secret_sealed", "microsoft_outlook_client_secret")


@tagged("post_install", "-at_install")
class TestCertificates(GraphHttpCase):
    def setUp(self):
        super().setUp()
        self.registry_enter_test_mode()
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        self.mixin = self.env["microsoft.outlook.graph.mixin"]
        self.Config = self.env["ir.config_parameter"].sudo()

    # helpers --------------------------------------------------------------------------

    def settings(self):
        return self.env["res.config.settings"].create({})

    def forget_every_secret(self):
        """No client secret at all: not in Odoo, not on the Azure app."""
        self.Config.search([("key", "in", SECRET_PARAMS)]).unlink()
        self.sandbox.remove_client_secret(defaults.CLIENT_ID)

    def entries(self):
        return self.mixin._microsoft_graph_certificates()

    def download(self, thumbprint):
        self.authenticate("admin", "admin")
        answer = self.url_open(f"/microsoft_outlook_graph/certificate/{thumbprint}.cer")
        self.assertEqual(answer.status_code, 200)
        self.assertIn("attachment", answer.headers["Content-Disposition"])
        return answer.content

    def generate_and_register(self, register=True, **register_options):
        self.settings().action_microsoft_graph_generate_certificate()
        [entry] = self.entries()[:1]
        action = self.settings().action_microsoft_graph_download_certificate()
        self.assertEqual(
            action["url"], f"/microsoft_outlook_graph/certificate/{entry['info']['sha1']}.cer"
        )
        content = self.download(entry["info"]["sha1"])
        if register:
            self.sandbox.add_app_certificate(defaults.CLIENT_ID, content, **register_options)
        return entry, content

    def test_message(self):
        action = self.settings().action_microsoft_graph_test_credential()
        self.assertEqual(action["tag"], "display_notification")
        return action["params"]["type"], action["params"]["message"]

    def make_mail(self, subject):
        return self.env["mail.mail"].create(
            {
                "email_from": f"Contoso Admin <{defaults.ADMIN}>",
                "email_to": "customer@example.com",
                "subject": subject,
                "body_html": "<p>Hello</p>",
                "auto_delete": False,
            }
        )

    def send(self, subject):
        mail = self.make_mail(subject)
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertIn(subject, [m.subject for m in self.sandbox.sent(defaults.ADMIN)])
        return mail

    def assert_no_private_key(self, *texts):
        key_bodies = []
        for entry in self.entries():
            pem = self.mixin._microsoft_graph_vault().open(entry["key_sealed"], "certificate_key")
            # Lines of the key's base64 that hold private numbers (the private exponent, the
            # CRT coefficient), not the modulus, which the certificate shares.
            lines = pem.splitlines()
            key_bodies += [lines[10], lines[-3]]
        for item in texts:
            text = item.decode("latin-1") if isinstance(item, bytes) else str(item)
            self.assertNotIn(PRIVATE_KEY_MARKER, text)
            for body in key_bodies:
                self.assertNotIn(body, text)

    # the whole way, without a secret ------------------------------------------------------

    def test_generate_download_register_test_connect_refresh_send_without_secret(self):
        self.forget_every_secret()
        entry, content = self.generate_and_register()
        # The download is the public certificate, in DER, nothing else.
        info = CertificateInfo.from_pem(content)
        self.assertEqual(info.sha1, entry["info"]["sha1"])
        self.assertGreaterEqual(info.not_after - time.time(), 729 * 86400)
        self.assertFalse(self.mixin._microsoft_graph_uses_certificate())
        kind, message = self.test_message()
        self.assertEqual(kind, "success", message)
        self.assertIn("is registered in Azure", message)
        self.assertTrue(self.mixin._microsoft_graph_uses_certificate())
        settings = self.settings()
        self.assertEqual(settings.microsoft_graph_app_credential, "certificate")
        self.assertEqual(settings.microsoft_graph_certificate_thumbprint, info.sha1)
        self.assertTrue(settings.microsoft_graph_certificate_proved)

        server = connect_without_browser(self, self.create_outgoing(sequence=1))
        self.assertEqual(server.microsoft_graph_status, "valid")
        self.send("Sent with a certificate")
        # Refresh: Microsoft's access token is gone, the stored refresh token is redeemed.
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        connection = server.microsoft_graph_connection_id
        connection.sudo().token_expires_at = datetime.now() - timedelta(minutes=1)
        server.invalidate_recordset()
        self.send("Sent after a refresh")
        token_requests = [e for e in self.sandbox.requests if e.path.endswith("/oauth2/v2.0/token")]
        self.assertGreaterEqual(len(token_requests), 3)  # test, code, refresh
        self.assertTrue(all(e.status == 200 for e in token_requests))
        self.assertFalse(self.Config.search([("key", "in", SECRET_PARAMS)]))

        # No private key in any RPC answer: Settings, the server, the system parameters.
        read_settings = self.make_jsonrpc_request(
            "/web/dataset/call_kw/res.config.settings/web_read",
            {
                "model": "res.config.settings",
                "method": "web_read",
                "args": [[settings.id]],
                # The fields of this addon and of Odoo's Outlook settings (other modules'
                # settings compute things, like IAP accounts, that do not belong here).
                "kwargs": {
                    "specification": {
                        name: {} for name in settings._fields if name.startswith("microsoft_")
                    }
                },
            },
        )
        read_params = self.make_jsonrpc_request(
            "/web/dataset/call_kw/ir.config_parameter/search_read",
            {
                "model": "ir.config_parameter",
                "method": "search_read",
                "args": [[("key", "like", "microsoft_outlook_graph.")]],
                "kwargs": {},
            },
        )
        read_server = self.make_jsonrpc_request(
            "/web/dataset/call_kw/ir.mail_server/web_read",
            {
                "model": "ir.mail_server",
                "method": "web_read",
                "args": [[server.id]],
                "kwargs": {"specification": {name: {} for name in server._fields}},
            },
        )
        self.assert_no_private_key(
            content,
            json.dumps(read_settings),
            json.dumps(read_params),
            json.dumps(read_server, default=str),
            base64.b64encode(content),
        )

    def test_unregistered_certificate_is_explained(self):
        entry, _content = self.generate_and_register(register=False)
        kind, message = self.test_message()
        self.assertEqual(kind, "danger")
        self.assertIn(entry["info"]["sha1"], message)
        self.assertIn("not registered on this Azure app", message)
        self.assertIn("Certificates & secrets > Certificates > Upload", message)
        self.assertIn("AADSTS700027", message)
        # Odoo keeps signing in with the secret until the certificate is proved.
        self.assertFalse(self.mixin._microsoft_graph_uses_certificate())
        connect_without_browser(self, self.create_outgoing(sequence=1))
        self.send("Still with the secret")

    def test_expired_certificate_is_explained(self):
        self.generate_and_register(end=time.time() - 3600)
        kind, message = self.test_message()
        self.assertEqual(kind, "danger")
        self.assertIn("expired", message)
        self.assertIn("AADSTS700027", message)
        self.assertFalse(self.mixin._microsoft_graph_uses_certificate())

    def test_clock_skew_is_explained(self):
        self.generate_and_register()
        self.sandbox.advance(3600)
        kind, message = self.test_message()
        self.assertEqual(kind, "danger")
        self.assertIn("clock", message)
        self.assertIn("AADSTS700024", message)

    # rotation -------------------------------------------------------------------------------

    def test_rotation_to_the_next_certificate_loses_no_mail(self):
        self.forget_every_secret()
        first, _content = self.generate_and_register()
        self.assertEqual(self.test_message()[0], "success")
        connect_without_browser(self, self.create_outgoing(sequence=1))
        self.send("Before the rotation")

        action = self.settings().action_microsoft_graph_prepare_next_certificate()
        second = self.entries()[0]
        self.assertNotEqual(second["info"]["sha1"], first["info"]["sha1"])
        self.assertIn(second["info"]["sha1"], action["url"])
        self.assertEqual(
            self.settings().microsoft_graph_certificate_pending, second["info"]["sha1"]
        )
        # Not uploaded yet: the first certificate keeps every mailbox working.
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        self.expire_connection()
        self.send("While the next one waits")
        kind, message = self.test_message()
        self.assertEqual(kind, "success", message)
        self.assertIn(first["info"]["sha1"], message)
        self.assertIn("not registered in Azure yet", message)

        self.sandbox.add_app_certificate(defaults.CLIENT_ID, self.download(second["info"]["sha1"]))
        # Uploaded: the newest certificate Azure accepts signs in, before anyone tests it.
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        self.expire_connection()
        self.send("Right after the upload")
        kind, message = self.test_message()
        self.assertEqual(kind, "success", message)
        self.assertIn(second["info"]["sha1"], message)
        self.assertIn(f"{first['info']['sha1']} are no longer used: delete them in Azure", message)
        self.assertEqual([e["info"]["sha1"] for e in self.entries()], [second["info"]["sha1"]])

        self.assertTrue(
            self.sandbox.remove_app_certificate(defaults.CLIENT_ID, first["info"]["sha1"])
        )
        self.sandbox.expire_access_tokens(defaults.ADMIN)
        self.expire_connection()
        self.send("After the old one is deleted in Azure")
        failed = self.env["mail.mail"].search([("state", "=", "exception")])
        self.assertFalse(failed, failed.mapped("failure_reason"))

    def expire_connection(self):
        server = self.env["ir.mail_server"].search(
            [("smtp_authentication", "=", "microsoft_graph")]
        )
        server.microsoft_graph_connection_id.sudo().token_expires_at = datetime.now() - timedelta(
            minutes=1
        )
        server.invalidate_recordset()

    # switching back, neutralize, the daily check ----------------------------------------------

    def test_switch_back_to_the_secret(self):
        self.generate_and_register()
        self.test_message()
        self.assertTrue(self.mixin._microsoft_graph_uses_certificate())
        self.settings().action_microsoft_graph_use_secret()
        self.assertFalse(self.mixin._microsoft_graph_uses_certificate())
        connect_without_browser(self, self.create_outgoing(sequence=1))
        self.send("Back with the secret")
        self.settings().action_microsoft_graph_remove_certificates()
        self.assertFalse(self.entries())

    def test_neutralize_forgets_the_certificates(self):
        self.generate_and_register()
        self.test_message()
        neutralize_database(self.env.cr)
        self.env.invalidate_all()
        self.assertFalse(self.Config.get_param("microsoft_outlook_graph.certificates"))
        self.assertFalse(self.mixin._microsoft_graph_uses_certificate())

    def test_daily_check_warns_30_14_and_3_days_before_expiry_once_each(self):
        self.generate_and_register()
        self.test_message()
        expires = CertificateInfo.from_dict(self.entries()[0]["info"]).not_after
        Mailbox = self.env["microsoft.outlook.graph.mailbox"]
        Message = self.env["mail.message"]
        counts = []
        for days in (40, 30, 29, 20, 14, 13, 3, 2):
            moment = datetime.fromtimestamp(expires) - timedelta(days=days, hours=1)
            before = Message.search_count([("subject", "like", "Outlook certificate expires")])
            with freeze_time(moment):
                Mailbox._cron_health_check()
            after = Message.search_count([("subject", "like", "Outlook certificate expires")])
            counts.append(after - before)
        self.assertEqual(counts, [0, 1, 0, 0, 1, 0, 1, 0])
        body = Message.search([("subject", "like", "Outlook certificate expires")], limit=1).body
        self.assertIn("Prepare the next certificate", body)


IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


class _ScreenshotBrowser(odoo_common.ChromeBrowser):
    """Odoo's test Chrome, writing a screenshot of the page when the tour succeeded."""

    screenshot = None

    def stop(self):
        result = self._result
        done = result.done() and not result.cancelled() and result.exception(timeout=0) is None
        if self.screenshot and done:
            shot = self._websocket_request("Page.captureScreenshot", params={"format": "png"})
            self.screenshot.write_bytes(binascii.a2b_base64(shot["data"]))
        super().stop()


@tagged("post_install", "-at_install")
class TestCertificateTour(GraphHttpCase):
    browser_size = "1366x900"

    @classmethod
    def setUpClass(cls):
        if not shutil.which("chromium") and not shutil.which("google-chrome"):
            raise SkipTest("no Chrome or Chromium on PATH")
        if odoo_common.websocket is None:
            raise SkipTest("websocket-client is not installed in Odoo's environment")
        super().setUpClass()

    def test_settings_flow(self):
        """Use a certificate instead, upload it (the test plays Azure's portal), test it."""
        Settings = type(self.env["res.config.settings"])
        new_certificate = Settings._microsoft_graph_new_certificate
        sandbox = self.sandbox

        def generate_and_upload(settings):
            entry = new_certificate(settings)
            sandbox.add_app_certificate(defaults.CLIENT_ID, entry["info"]["certificate_pem"])
            return entry

        self.patch(Settings, "_microsoft_graph_new_certificate", generate_and_upload)
        # Settings shows the Outlook block once external mail servers are on.
        self.env["ir.config_parameter"].sudo().set_param(
            "base_setup.default_external_email_server", True
        )
        browser = type("Browser", (_ScreenshotBrowser,), {})
        if os.environ.get("MOG_SCREENSHOTS") == "1":
            browser.screenshot = IMAGES / "certificate_settings.png"
        with patch.object(odoo_common, "ChromeBrowser", browser):
            self.start_tour(
                "/odoo/settings", "microsoft_outlook_graph_certificate_settings", login="admin"
            )
        mixin = self.env["microsoft.outlook.graph.mixin"]
        self.assertTrue(mixin._microsoft_graph_uses_certificate())
        [entry] = mixin._microsoft_graph_certificates()
        self.assertTrue(entry["proved"])
