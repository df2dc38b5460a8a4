"""Shared setup of the Odoo suite: the local Microsoft 365 sandbox and the leak guard."""

import logging

from odoo.tests import HttpCase, TransactionCase

from odoo.addons.microsoft_outlook_graph.sandbox import Sandbox, defaults
from odoo.addons.microsoft_outlook_graph.sandbox.leak_guard import LEAK_MARKERS, find_leaks

# Tables whose text columns must never hold a plaintext Microsoft secret; sealed
# values are Fernet ciphertext, in which the marker cannot appear.
GUARDED_TABLES = (
    "ir_mail_server",
    "fetchmail_server",
    "microsoft_outlook_graph_connection",
    "ir_config_parameter",
    "microsoft_outlook_graph_flow",
    "mail_message",
    "mail_mail",
    "ir_logging",
    "res_config_settings",
)


class _CapturingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.texts = []

    def emit(self, record):
        self.texts.append(self.format(record))


class GraphSandboxMixin:
    """Start one sandbox per test class; reset it and point Odoo at it per test."""

    sandbox = None
    # False for tests that configure Settings in their own committed transactions.
    configure_in_test_transaction = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sandbox = Sandbox(seed=0).start()
        cls.addClassCleanup(cls.sandbox.stop)

    def setUp(self):
        super().setUp()
        self.sandbox.reset()
        self.redirect_uri = self.env[
            "microsoft.outlook.graph.mixin"
        ]._microsoft_graph_redirect_uri()
        tenant = self.sandbox.add_tenant(defaults.TENANT_DOMAIN, defaults.TENANT_ID)
        self.sandbox.add_app(
            tenant,
            defaults.CLIENT_ID,
            defaults.CLIENT_SECRET,
            [self.redirect_uri],
            display_name=defaults.APP_NAME,
        )
        self.sandbox.add_user(tenant, defaults.ADMIN, defaults.ADMIN_NAME)
        self.sandbox.add_user(tenant, defaults.ALICE, defaults.ALICE_NAME)
        self.sandbox.add_shared_mailbox(tenant, defaults.SALES, defaults.SALES_NAME)
        self.sandbox.grant(defaults.SALES, defaults.ADMIN, "FullAccess")
        self.sandbox.grant(defaults.SALES, defaults.ADMIN, "SendAs")
        if self.configure_in_test_transaction:
            # The connection, the ledger and the hand-over marks are written on cursors of
            # their own; in test mode those share the test's transaction.
            self.registry_enter_test_mode()
            self.configure_outlook()
            # The addon's notices to administrators land in their Odoo inbox: mailed out,
            # they would leave through a test database's absent SMTP server, and Odoo
            # would warn about its fallback in every test that raises one.
            self.env.ref("base.user_admin").notification_type = "inbox"
        self._install_leak_guard()

    def registry_enter_test_mode(self, **kwargs):
        """Once per test, whoever asks first (this setUp, or a test class's own)."""
        if not type(self)._registry_patched:
            super().registry_enter_test_mode(**kwargs)

    def configure_outlook(self, env=None, **overrides):
        """Fill in Settings as an admin would, for the sandbox's custom endpoints."""
        values = {
            "microsoft_outlook_client_identifier": defaults.CLIENT_ID,
            "microsoft_graph_client_secret": defaults.CLIENT_SECRET,
            "microsoft_graph_tenant": defaults.TENANT_ID,
            "microsoft_graph_cloud": "custom",
            "microsoft_graph_authority_url": self.sandbox.base_url,
            "microsoft_graph_graph_url": self.sandbox.base_url,
            "microsoft_graph_ca_file": self.sandbox.ca_file,
            **overrides,
        }
        (env or self.env)["res.config.settings"].create(values).execute()

    def _install_leak_guard(self):
        handler = _CapturingHandler()
        root = logging.getLogger()
        root.addHandler(handler)
        self.addCleanup(root.removeHandler, handler)
        self.addCleanup(self._check_no_leak, handler)

    def _check_no_leak(self, handler):
        self.env.flush_all()
        texts = list(handler.texts)
        for table in GUARDED_TABLES:
            self.env.cr.execute(
                f"SELECT to_jsonb(t)::text FROM {table} t "  # noqa: S608 - fixed table names
                "WHERE to_jsonb(t)::text LIKE ANY(%s)",
                [[f"%{marker}%" for marker in LEAK_MARKERS]],
            )
            texts += [f"{table}: {row[0]}" for row in self.env.cr.fetchall()]
        # Issued secrets and PEM private keys (the app's certificate key).
        leaks = find_leaks(texts, marker=LEAK_MARKERS)
        self.assertFalse(leaks, f"Microsoft secrets leaked: {leaks}")

    # helpers ----------------------------------------------------------------------------

    def create_outgoing(self, address=defaults.ADMIN, kind="personal", **values):
        return self.env["ir.mail_server"].create(
            {
                "name": f"Graph {address}",
                "smtp_authentication": "microsoft_graph",
                "smtp_user": address,
                "from_filter": address,
                "microsoft_graph_mailbox_kind": kind,
                **values,
            }
        )

    def create_incoming(self, address=defaults.ADMIN, kind="personal", **values):
        return self.env["fetchmail.server"].create(
            {
                "name": f"Graph {address}",
                "server_type": "microsoft_graph",
                "user": address,
                "microsoft_graph_mailbox_kind": kind,
                **values,
            }
        )

    def start_connect(self, server, user=None):
        """Press "Connect your Outlook account" as ``user``; return the authorize URL."""
        user = user or self.env.ref("base.user_admin")
        action = server.with_user(user).action_microsoft_graph_connect()
        self.assertEqual(action["type"], "ir.actions.act_url")
        self.assertTrue(action["url"].startswith(self.sandbox.base_url))
        return action["url"]


class GraphTransactionCase(GraphSandboxMixin, TransactionCase):
    pass


class GraphHttpCase(GraphSandboxMixin, HttpCase):
    def sign_in_and_return(self, auth_uri, accept=True, login=None):
        """Play the user at Microsoft, then follow the redirect back into Odoo."""
        result = self.sandbox.sign_in(auth_uri, accept=accept, login=login)
        self.assertTrue(result.url, f"the sandbox did not redirect: {result.page[:300]}")
        self.assertTrue(result.url.startswith(self.redirect_uri), result.url)
        return self.url_open(result.url, allow_redirects=False)


def connect_without_browser(case, server, user=None, login=None):
    """Run the whole sign-in without an HTTP round trip into Odoo (TransactionCase)."""
    user = user or case.env.ref("base.user_admin")
    auth_uri = case.start_connect(server, user)
    result = case.sandbox.sign_in(auth_uri, login=login)
    pending, problem = (
        case.env["microsoft.outlook.graph.flow"]
        .with_user(user)
        .sudo()
        ._consume(result.params["state"])
    )
    case.assertFalse(problem)
    server.with_user(user).sudo()._microsoft_graph_finish_connect(
        pending["flow_sealed"], result.params
    )
    return server
