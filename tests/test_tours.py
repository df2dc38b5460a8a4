"""Browser tours of the connect flow, the migration from Odoo's Outlook SMTP and the
health list: Odoo's web client in headless Chromium.

A tour clicks through Odoo until "Connect your Outlook account" sends the browser
to Microsoft, here the sandbox's consent page on another origin, where no tour
code runs. There the test plays the person through the browser itself: it types
the account into ``login`` when asked and clicks the page's real ``accept``
button. The sandbox redirects to Odoo's ``/microsoft_outlook/confirm``, Odoo
redirects to the form the sign-in started from, and the tour, whose place Odoo
keeps in the browser's local storage, resumes there.

What the browser needs, for these tests only:

- trust for the sandbox's throw-away certificate: Chrome is started with
  ``--ignore-certificate-errors-spki-list`` naming the public key of the
  sandbox's server certificate, and nothing else;
- requests to the sandbox go through: Odoo's test browser answers every request
  outside ``http://127.0.0.1`` with a 404 of its own, so requests to the
  sandbox's origin are let through and all others keep Odoo's behaviour.

Set ``MOG_SCREENSHOTS=1`` to write the connected forms, the health list and the guided
setup to ``docs/images/``.
"""

import base64
import binascii
import hashlib
import json
import os
import shutil
import ssl
import time
import urllib.parse
from concurrent.futures import CancelledError
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from unittest import SkipTest
from unittest.mock import patch

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from odoo.tests import common as odoo_common
from odoo.tests import tagged
from odoo.tools import config

from odoo.addons.microsoft_outlook_graph.sandbox import defaults
from odoo.addons.microsoft_outlook_graph.services.errors import error_from_token_response

from .common import GraphHttpCase, connect_without_browser

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
# The Azure app of the guided setup's tour, typed by the browser (static/tests/tours/
# setup_wizard_tour.js): the standard app's secret carries the leak guard's marker.
SETUP_CLIENT_ID = "55555555-5555-5555-5555-555555555555"
SETUP_CLIENT_SECRET = "guided-setup-secret-value"
AZURE_APP_PARAMS = (
    "microsoft_outlook_client_id",
    "microsoft_outlook_client_secret",
    "microsoft_outlook_graph.client_secret_sealed",
    "microsoft_outlook_graph.tenant",
)
CHROME_NAMES = ("google-chrome", "chromium", "chromium-browser", "google-chrome-stable")

# Runs on the Microsoft page: fill in the account when asked, then press Accept.
PERSON_AT_MICROSOFT = """
(() => {
    const accept = document.getElementById("accept");
    if (!accept) {
        return "no consent form on " + location.pathname + ": " + document.body.innerText;
    }
    const login = %s;
    if (login !== null) {
        document.getElementById("login").value = login;
    }
    accept.click();
    return "accepted";
})()
"""


def _chrome_missing():
    """Why the tours cannot run here, or None."""
    if not any(shutil.which(name) for name in CHROME_NAMES):
        return "no Chrome or Chromium on PATH (Debian: apt-get install chromium)"
    if odoo_common.websocket is None:
        return "websocket-client is not installed in Odoo's environment"
    return None


def _public_key_pin(base_url):
    """base64(SHA-256(SubjectPublicKeyInfo)) of the certificate base_url presents."""
    parts = urllib.parse.urlsplit(base_url)
    pem = ssl.get_server_certificate((parts.hostname, parts.port))
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class MicrosoftPerson:
    """What the person does once the browser is on Microsoft's consent page.

    ``login``: the account typed in before Accept (None keeps the one proposed).
    ``visits``: the sandbox pages the browser stopped on, with what was done there.
    """

    def __init__(self, login=None):
        self.login = login
        self.visits = []


class SandboxChromeBrowser(odoo_common.ChromeBrowser):
    """Odoo's test Chrome, able to reach the sandbox and to act there as the person."""

    def __init__(self, test_case, *args, origin, pin, person, screenshot=None, **kwargs):
        self.sandbox_origin = origin
        self.sandbox_pin = pin
        self.person = person
        self.screenshot = screenshot
        self._main_frame_url = None
        super().__init__(test_case, *args, **kwargs)
        self._handlers["Page.frameNavigated"] = self._on_frame_navigated
        self._handlers["Page.loadEventFired"] = self._on_load

    def _spawn_chrome(self, cmd):
        # trust the sandbox's server key only, not every certificate
        pin = f"--ignore-certificate-errors-spki-list={self.sandbox_pin}"
        return super()._spawn_chrome([*cmd[:-1], pin, cmd[-1]])

    def _handle_request_paused(self, **params):
        if params["request"]["url"].startswith(self.sandbox_origin + "/"):
            self._websocket_send("Fetch.continueRequest", params={"requestId": params["requestId"]})
            return
        super()._handle_request_paused(**params)

    def _on_frame_navigated(self, frame, **_kw):
        if not frame.get("parentId"):
            self._main_frame_url = frame["url"]

    def _on_load(self, **_kw):
        url = self._main_frame_url or ""
        if not url.startswith(self.sandbox_origin + "/"):
            return
        if self.person.visits:
            # a person presses Accept once; a second Microsoft page is an error page
            action = "read the page"
            expression = '(document.getElementById("error") || document.body).innerText'
        else:
            action = "accept"
            expression = PERSON_AT_MICROSOFT % json.dumps(self.person.login)
        visit = {"url": url, "action": action}
        self.person.visits.append(visit)
        self._logger.info("At Microsoft (%s): %s", urllib.parse.urlsplit(url).path, action)
        future = self._websocket_send(
            "Runtime.evaluate", params={"expression": expression}, with_future=True
        )
        future.add_done_callback(partial(self._after_microsoft_page, visit))

    def _after_microsoft_page(self, visit, future):
        try:
            value = future.result()["result"].get("value")
        except Exception as exc:  # reported as the tour's failure
            value = f"could not run on the page: {exc}"
        visit["result"] = value
        if value != "accepted":
            self._fail(f"Microsoft's page did not lead back to Odoo ({visit['url']}): {value}")

    def _fail(self, message):
        if not self._result.done():
            self._result.set_exception(odoo_common.ChromeBrowserException(message))

    def stop(self):
        if self.screenshot and self._succeeded():
            shot = self._websocket_request("Page.captureScreenshot", params={"format": "png"})
            self.screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.screenshot.write_bytes(binascii.a2b_base64(shot["data"]))
            self._logger.info("Screenshot written to %s", self.screenshot)
        super().stop()

    def _succeeded(self):
        if not self._result.done() or self._result.cancelled():
            return False
        try:
            return self._result.exception(timeout=0) is None
        except CancelledError:
            return False


@tagged("post_install", "-at_install")
class TestTours(GraphHttpCase):
    browser_size = "1366x900"

    @classmethod
    def setUpClass(cls):
        reason = _chrome_missing()
        if reason:
            raise SkipTest(f"browser tours skipped: {reason}")
        super().setUpClass()
        cls.sandbox_pin = _public_key_pin(cls.sandbox.base_url)

    def setUp(self):
        # as docs/security.md asks of a production setup: a vault secret in the
        # configuration (the forms, and their screenshots, then show no warning)
        options = dict(config.options, microsoft_outlook_graph_vault_secret="tours-vault-secret")
        self.startPatcher(patch.object(config, "options", options))
        super().setUp()

    @contextmanager
    def sandbox_browser(self, person, screenshot=None):
        """Run the tours inside with the browser that reaches the sandbox as ``person``."""
        if screenshot and os.environ.get("MOG_SCREENSHOTS") == "1":
            screenshot = IMAGES / screenshot
        else:
            screenshot = None
        browser = partial(
            SandboxChromeBrowser,
            origin=self.sandbox.base_url,
            pin=self.sandbox_pin,
            person=person,
            screenshot=screenshot,
        )
        with patch.object(odoo_common, "ChromeBrowser", browser):
            yield person

    @contextmanager
    def microsoft_person(self, login=None, screenshot=None):
        """Run the tours inside with a browser that acts as the person at Microsoft."""
        person = MicrosoftPerson(login=login)
        with self.sandbox_browser(person, screenshot):
            yield person
        self.assertEqual(
            [visit["action"] for visit in person.visits],
            ["accept"],
            "the browser should stop once on Microsoft's consent page and accept",
        )
        self.assertEqual(person.visits[0].get("result"), "accepted")
        accepted = [
            entry
            for entry in self.sandbox.requests
            if entry.method == "POST" and entry.path.endswith("/login") and entry.status == 302
        ]
        self.assertEqual(len(accepted), 1, "the consent form was posted once, by the browser")

    def test_outgoing_server(self):
        with self.microsoft_person(screenshot="outgoing_server_connected.png"):
            self.start_tour(
                "/odoo/settings?debug=1", "microsoft_outlook_graph_outgoing_server", login="admin"
            )
        server = self.env["ir.mail_server"].search([("name", "=", "Contoso administrator")])
        self.assertEqual(len(server), 1)
        self.assertEqual(server.smtp_authentication, "microsoft_graph")
        self.assertEqual(server.microsoft_graph_status, "valid")
        self.assertEqual(server.microsoft_graph_account_oid, self.sandbox.user(defaults.ADMIN).id)
        self.assertFalse(self.env["microsoft.outlook.graph.flow"].sudo().search([]))

    def test_incoming_server(self):
        with self.microsoft_person(screenshot="incoming_server_connected.png"):
            self.start_tour(
                "/odoo/settings?debug=1", "microsoft_outlook_graph_incoming_server", login="admin"
            )
        server = self.env["fetchmail.server"].search([("name", "=", "Contoso administrator inbox")])
        self.assertEqual(len(server), 1)
        self.assertEqual(server.server_type, "microsoft_graph")
        self.assertEqual(server.microsoft_graph_status, "valid")
        self.assertEqual(server.state, "done")

    def test_personal_server_from_preferences(self):
        user = self.env["res.users"].create(
            {
                "name": "Alice Martin",
                "login": "alice",
                "email": defaults.ALICE,
                "group_ids": [(6, 0, [self.env.ref("base.group_user").id])],
            }
        )
        self.env["ir.config_parameter"].sudo().set_param(
            "base_setup.default_external_email_server", True
        )
        with self.microsoft_person(login=defaults.ALICE):
            self.start_tour("/odoo", "microsoft_outlook_graph_preferences", login="alice")
        server = user.outgoing_mail_server_id.sudo()
        self.assertTrue(server.active)
        self.assertEqual(server.owner_user_id, user)
        self.assertEqual(server.microsoft_graph_status, "valid")
        self.assertEqual(server.microsoft_graph_account_oid, self.sandbox.user(defaults.ALICE).id)
        self.assertEqual(user.outgoing_mail_server_type, "microsoft_graph")

    def test_migration_from_outlook_smtp(self):
        server = self.env["ir.mail_server"].create(
            {
                "name": "Contoso Outlook SMTP",
                "smtp_authentication": "outlook",
                "smtp_host": "smtp.outlook.com",
                "smtp_port": 587,
                "smtp_encryption": "starttls",
                "smtp_user": defaults.ADMIN,
                "from_filter": defaults.ADMIN,
                # what Odoo's Outlook module keeps, in plaintext, once connected
                "microsoft_outlook_refresh_token": "outlook-smtp-refresh-token",
                "microsoft_outlook_access_token": "outlook-smtp-access-token",
                "microsoft_outlook_access_token_expiration": int(time.time()) + 3600,
            }
        )
        with self.microsoft_person():
            self.start_tour(
                "/odoo/settings?debug=1", "microsoft_outlook_graph_migration", login="admin"
            )
        server.invalidate_recordset()
        self.assertEqual(server.smtp_authentication, "microsoft_graph")
        self.assertEqual(server.microsoft_graph_status, "valid")
        self.assertEqual(server.microsoft_graph_account_oid, self.sandbox.user(defaults.ADMIN).id)
        self.assertEqual((server.smtp_user, server.from_filter), (defaults.ADMIN, defaults.ADMIN))
        self.assertFalse(server.microsoft_outlook_refresh_token)
        self.assertFalse(server.microsoft_outlook_access_token)
        self.assertFalse(server.microsoft_outlook_access_token_expiration)
        self.env.cr.execute(
            "SELECT count(*) FROM ir_mail_server WHERE to_jsonb(ir_mail_server)::text LIKE %s",
            ["%outlook-smtp-%"],
        )
        self.assertEqual(self.env.cr.fetchone()[0], 0, "an Outlook SMTP token is left in the table")

    def test_health_view(self):
        # The mailboxes of a small company, a week in: the administrator's own mailbox
        # sends and receives, the shared sales mailbox lost its connection.
        # Odoo sends nothing while tests run; this mail must leave to show a last send.
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        # every column of the list fits a 1400 px screen
        self.browser_size = "1400x440"
        # the Outlook block of Settings shows once custom email servers are used
        self.configure_outlook(external_email_server_default=True)
        outgoing = connect_without_browser(self, self.create_outgoing(name="Contoso administrator"))
        mail = self.env["mail.mail"].create(
            {
                "email_from": defaults.ADMIN,
                "email_to": "customer@example.com",
                "subject": "Your quotation",
                "body_html": "<p>Please find our quotation.</p>",
                "mail_server_id": outgoing.id,
                "auto_delete": False,
            }
        )
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        incoming = connect_without_browser(
            self,
            self.create_incoming(
                name="Contoso administrator inbox",
                object_id=self.env["ir.model"]._get_id("res.partner"),
            ),
        )
        incoming.state = "done"
        self.sandbox.deliver(
            defaults.ADMIN,
            b"From: customer@example.com\r\nTo: admin@contoso.test\r\n"
            b"Subject: Quotation accepted\r\nMessage-Id: <accepted@example.com>\r\n\r\n"
            b"We accept your quotation.\r\n",
        )
        incoming.fetch_mail()
        shared = connect_without_browser(
            self, self.create_outgoing(defaults.SALES, "shared", name="Contoso sales")
        )
        with self.assertLogs(
            "odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_mixin", "WARNING"
        ):
            shared._microsoft_graph_mark_reconnect(
                error_from_token_response(400, {"error": "invalid_grant", "error_codes": [70008]})
            )
        self.env.flush_all()
        with self.sandbox_browser(MicrosoftPerson(), screenshot="health_view.png") as person:
            self.start_tour("/odoo/settings", "microsoft_outlook_graph_health_view", login="admin")
        self.assertFalse(person.visits, "the health list never sends the browser to Microsoft")
        self.assertTrue(outgoing.microsoft_graph_last_sent_at)
        self.assertTrue(incoming.microsoft_graph_last_success)

    def test_setup_wizard(self):
        """A new administrator, no Azure app configured: the guided setup from Settings to a
        connected outgoing and incoming server, one sign-in at Microsoft each; the setup
        closed and opened again from Settings in between."""
        Config = self.env["ir.config_parameter"].sudo()
        Config.search([("key", "in", AZURE_APP_PARAMS)]).unlink()
        # The custom endpoints stay: here they stand for Microsoft's cloud. Settings shows
        # the Outlook block once custom mail servers are used.
        Config.set_param("base_setup.default_external_email_server", True)
        self.sandbox.add_app(
            self.sandbox.directory.tenant(defaults.TENANT_DOMAIN),
            SETUP_CLIENT_ID,
            SETUP_CLIENT_SECRET,
            [self.redirect_uri],
            display_name="Odoo (guided setup)",
        )
        tours = (
            ("microsoft_outlook_graph_setup_wizard", "setup_wizard_refused.png", []),
            ("microsoft_outlook_graph_setup_wizard_app", None, ["accept"]),
            ("microsoft_outlook_graph_setup_wizard_resumed", "setup_wizard.png", []),
            ("microsoft_outlook_graph_setup_wizard_incoming", None, ["accept"]),
        )
        for tour, screenshot, actions in tours:
            with self.sandbox_browser(MicrosoftPerson(), screenshot) as person:
                self.start_tour("/odoo/settings", tour, login="admin")
            self.assertEqual([visit["action"] for visit in person.visits], actions, tour)
        self.assertEqual(Config.get_param("microsoft_outlook_client_id"), SETUP_CLIENT_ID)
        admin = self.sandbox.user(defaults.ADMIN).id
        outgoing = self.env["ir.mail_server"].search([("name", "=", defaults.ADMIN)])
        self.assertEqual(outgoing.smtp_authentication, "microsoft_graph")
        self.assertEqual(outgoing.microsoft_graph_status, "valid")
        self.assertEqual(outgoing.microsoft_graph_account_oid, admin)
        incoming = self.env["fetchmail.server"].search([("name", "=", defaults.ADMIN)])
        self.assertEqual(incoming.server_type, "microsoft_graph")
        self.assertEqual(incoming.microsoft_graph_status, "valid")
        self.assertEqual(incoming.microsoft_graph_account_oid, admin)
        self.assertEqual(incoming.state, "done")
