from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphHttpCase

CONFIRM = "/microsoft_outlook/confirm"
GRAPH_LOGGER = "odoo.addons.microsoft_outlook_graph.services.graph"


@tagged("post_install", "-at_install")
class TestConnectBadInput(GraphHttpCase):
    """Every bad answer gets a readable page or a clear error, and changes nothing."""

    def setUp(self):
        super().setUp()
        self.authenticate("admin", "admin")
        self.server = self.create_outgoing()

    def assert_refused(self, response, *texts, status=None):
        self.assertNotEqual(response.status_code, 500, response.text[:500])
        if status:
            self.assertEqual(response.status_code, status)
        page = response.text
        self.assertIn("Outlook (Microsoft Graph) connection not made", page)
        for text in texts:
            self.assertIn(text, page)
        self.assertNotIn("Traceback", page)
        self.server.invalidate_recordset()
        self.assertEqual(self.server.microsoft_graph_status, "not_connected")
        self.assertFalse(self.server.microsoft_graph_tokens_sealed)

    def accepted_redirect(self, login=None):
        """The redirect Microsoft would send back after Accept, not yet followed."""
        result = self.sandbox.sign_in(self.start_connect(self.server), login=login)
        return result

    def confirm(self, **params):
        return self.url_open(f"{CONFIRM}?{urlencode(params)}", allow_redirects=False)

    # the state ---------------------------------------------------------------------------

    def test_missing_state(self):
        self.assert_refused(self.confirm(code="abc"), "no valid state", status=400)

    def test_forged_state(self):
        self.start_connect(self.server)
        self.assert_refused(self.confirm(code="abc", state="forged-state"), "unknown", status=400)

    def test_oversized_state(self):
        self.assert_refused(self.confirm(code="abc", state="x" * 10_000), status=400)

    def test_state_with_markup(self):
        response = self.confirm(code="abc", state="<b>x</b>")
        self.assert_refused(response, status=400)
        self.assertNotIn("<b>x</b>", response.text)

    def test_replayed_answer(self):
        result = self.accepted_redirect()
        self.assertEqual(self.url_open(result.url, allow_redirects=False).status_code, 303)
        self.server.action_microsoft_graph_disconnect()
        self.assert_refused(self.url_open(result.url, allow_redirects=False), "already used")

    def test_expired_flow(self):
        result = self.accepted_redirect()
        self.env["microsoft.outlook.graph.flow"].sudo().search([]).write(
            {"expires_at": datetime.now() - timedelta(minutes=1)}
        )
        self.assert_refused(self.url_open(result.url, allow_redirects=False), "expired")

    def test_state_of_another_user(self):
        result = self.accepted_redirect()
        self.env["res.users"].create(
            {
                "name": "Other admin",
                "login": "other",
                "password": "other-password-1",
                "group_ids": [(6, 0, [self.env.ref("base.group_system").id])],
            }
        )
        self.authenticate("other", "other-password-1")
        self.assert_refused(self.url_open(result.url, allow_redirects=False), "another Odoo user")
        # The rightful user can still finish.
        self.authenticate("admin", "admin")
        self.assertEqual(self.url_open(result.url, allow_redirects=False).status_code, 303)
        self.assertEqual(self.server.microsoft_graph_status, "valid")

    def test_portal_user(self):
        result = self.accepted_redirect()
        self.env["res.users"].create(
            {
                "name": "Portal",
                "login": "portal_mog",
                "password": "portal-password-1",
                "group_ids": [(6, 0, [self.env.ref("base.group_portal").id])],
            }
        )
        self.authenticate("portal_mog", "portal-password-1")
        self.assert_refused(
            self.url_open(result.url, allow_redirects=False), "internal Odoo users", status=403
        )

    def test_public_user_is_sent_to_login(self):
        result = self.accepted_redirect()
        self.authenticate(None, None)
        response = self.url_open(result.url, allow_redirects=False)
        self.assertIn(response.status_code, (302, 303))
        self.assertIn("/web/login", response.headers["Location"])

    def test_server_deleted_meanwhile(self):
        result = self.accepted_redirect()
        self.server.unlink()
        response = self.url_open(result.url, allow_redirects=False)
        self.assertEqual(response.status_code, 404)
        self.assertIn("deleted", response.text)

    # Microsoft's answers -------------------------------------------------------------------

    def test_consent_cancelled(self):
        result = self.sandbox.sign_in(self.start_connect(self.server), accept=False)
        self.assertEqual(result.params["error"], "access_denied")
        self.assert_refused(self.url_open(result.url, allow_redirects=False))

    def test_error_with_markup_is_escaped(self):
        auth_uri = self.start_connect(self.server)
        state = parse_qs(urlsplit(auth_uri).query)["state"][0]
        response = self.confirm(
            state=state,
            error="server_error",
            error_description="AADSTS90000: <script>alert('x')</script>",
        )
        self.assert_refused(response)
        self.assertNotIn("<script>alert", response.text)
        self.assertIn("&lt;script&gt;", response.text)

    def test_error_and_code_together(self):
        auth_uri = self.start_connect(self.server)
        state = parse_qs(urlsplit(auth_uri).query)["state"][0]
        self.assert_refused(self.confirm(state=state, code="abc", error="access_denied"))

    def test_unknown_error_code(self):
        auth_uri = self.start_connect(self.server)
        state = parse_qs(urlsplit(auth_uri).query)["state"][0]
        self.assert_refused(self.confirm(state=state, error="made_up_error"))

    def test_garbage_code(self):
        auth_uri = self.start_connect(self.server)
        state = parse_qs(urlsplit(auth_uri).query)["state"][0]
        self.assert_refused(self.confirm(state=state, code="not-a-code"))

    def test_wrong_client_secret(self):
        result = self.accepted_redirect()
        self.configure_outlook(microsoft_graph_client_secret="wrong-secret")
        self.assert_refused(self.url_open(result.url, allow_redirects=False), "7000215")

    def test_expired_client_secret(self):
        app = self.sandbox.directory.apps[defaults.CLIENT_ID]
        app.secret_expires_at = self.sandbox.clock.now() - 60
        result = self.accepted_redirect()
        self.assert_refused(self.url_open(result.url, allow_redirects=False), "7000222")

    def test_mfa_required(self):
        result = self.accepted_redirect()
        self.sandbox.require_mfa(defaults.ADMIN)
        self.assert_refused(self.url_open(result.url, allow_redirects=False))

    def test_token_endpoint_unreachable(self):
        result = self.accepted_redirect()
        self.sandbox.inject_fault("reset", path=r"/oauth2/v2\.0/token", times=5)
        self.assert_refused(self.url_open(result.url, allow_redirects=False))

    def test_graph_unavailable_during_identity_check(self):
        result = self.accepted_redirect()
        self.sandbox.inject_fault("status", path=r"/v1\.0/me$", status=503, times=10)
        with mute_logger(GRAPH_LOGGER):
            self.assert_refused(self.url_open(result.url, allow_redirects=False))

    def test_redirect_uri_not_registered(self):
        """Microsoft keeps the browser: nothing comes back, nothing changes."""
        self.sandbox.directory.apps[defaults.CLIENT_ID].redirect_uris[:] = [
            "https://elsewhere.test/microsoft_outlook/confirm"
        ]
        result = self.sandbox.sign_in(self.start_connect(self.server))
        self.assertFalse(result.url)
        self.assertEqual(self.server.microsoft_graph_status, "not_connected")

    # identity ----------------------------------------------------------------------------

    def test_personal_mailbox_of_someone_else(self):
        result = self.accepted_redirect(login=defaults.ALICE)
        self.assert_refused(self.url_open(result.url, allow_redirects=False), defaults.ALICE)

    def test_shared_incoming_mailbox_without_access(self):
        """Reading a shared mailbox needs Full Access: without it nothing is connected."""
        self.server = self.create_incoming(defaults.SALES, kind="shared")
        result = self.accepted_redirect(login=defaults.ALICE)
        with mute_logger(GRAPH_LOGGER):
            self.assert_refused(self.url_open(result.url, allow_redirects=False), "Full Access")

    def test_shared_outgoing_mailbox_without_full_access_connects(self):
        """Sending needs Send As (or on Behalf), which Graph cannot show without sending, and
        not Full Access: the server connects and says which route its mail takes."""
        self.server.write({"smtp_user": defaults.SALES, "microsoft_graph_mailbox_kind": "shared"})
        result = self.accepted_redirect(login=defaults.ALICE)
        response = self.url_open(result.url, allow_redirects=False)
        self.assertIn(response.status_code, (302, 303))
        self.assertEqual(self.server.microsoft_graph_status, "valid")
        self.assertFalse(self.server.microsoft_graph_full_access)

    # the buttons ---------------------------------------------------------------------------

    def test_connect_without_app_settings(self):
        self.env["ir.config_parameter"].sudo().set_param("microsoft_outlook_client_id", "")
        with self.assertRaisesRegex(UserError, "Client ID"):
            self.start_connect(self.server)

    def test_connect_by_a_user_on_a_shared_server(self):
        user = self.env["res.users"].create(
            {
                "name": "Employee",
                "login": "employee_mog",
                "group_ids": [(6, 0, [self.env.ref("base.group_user").id])],
            }
        )
        with self.assertRaises(AccessError):
            self.server.with_user(user).action_microsoft_graph_connect()
        with self.assertRaises(AccessError):
            self.server.with_user(user).action_microsoft_graph_disconnect()

    def test_server_without_mailbox_address(self):
        with self.assertRaisesRegex(UserError, "mailbox address"):
            self.create_outgoing("not-an-address")

    def test_custom_endpoints_must_be_https(self):
        with self.assertRaisesRegex(UserError, "https"):
            self.configure_outlook(microsoft_graph_authority_url="http://127.0.0.1:1")

    def test_test_connection_when_not_connected(self):
        with (
            mute_logger("odoo.addons.microsoft_outlook_graph.models.microsoft_outlook_graph_mixin"),
            self.assertRaisesRegex(UserError, "not connected"),
        ):
            self.server.test_smtp_connection()

    def test_post_without_csrf_token(self):
        with self.assertLogs("odoo.http", "WARNING") as logged:
            response = self.url_open(
                CONFIRM, data={"state": "x", "code": "y"}, allow_redirects=False
            )
        self.assertIn("No CSRF validation token", logged.output[0])
        self.assertIn(response.status_code, (400, 403))
        self.assertEqual(self.server.microsoft_graph_status, "not_connected")

    def test_odoo_state_shape_with_wrong_types(self):
        response = self.confirm(code="abc", state='{"model": 1, "id": "x", "csrf_token": []}')
        self.assertNotEqual(response.status_code, 500)
        self.assertEqual(self.server.microsoft_graph_status, "not_connected")

    def test_error_without_description(self):
        auth_uri = self.start_connect(self.server)
        state = parse_qs(urlsplit(auth_uri).query)["state"][0]
        self.assert_refused(self.confirm(state=state, error="access_denied"))

    def test_state_is_single_use_even_after_an_error(self):
        auth_uri = self.start_connect(self.server)
        state = parse_qs(urlsplit(auth_uri).query)["state"][0]
        self.assert_refused(self.confirm(state=state, error="temporarily_unavailable"))
        self.assert_refused(self.confirm(state=state, code="abc"), "already used")

    def test_archived_server_meanwhile_is_still_the_one_connected(self):
        result = self.accepted_redirect()
        self.server.active = False
        response = self.url_open(result.url, allow_redirects=False)
        self.assertEqual(response.status_code, 303)
        self.assertEqual(self.server.microsoft_graph_status, "valid")
