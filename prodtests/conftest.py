"""The production-shape suite: a real ``odoo-bin`` driven from outside only.

Odoo's test cursor folds every transaction into one, so the Odoo suite cannot show a
serialization failure, a self-deadlock or a resend after a rollback. Here the addon runs as it
does in production: ``odoo-bin`` with ``--workers=2`` and a cron worker, on a fresh database,
wired to the Microsoft 365 sandbox over HTTPS through the "custom" cloud of Settings. This
process plays everyone else:

- the admin, through JSON-RPC (``/web/session/authenticate``, ``/web/dataset/call_kw``) and
  the sign-in at "Microsoft" (the sandbox's consent page) back to ``/microsoft_outlook/confirm``
  with the Odoo session cookie;
- the mail transfer agent, through XML-RPC ``mail.thread.message_process`` as odoo-mailgate;
- the scheduler's callers: ``ir.cron._trigger`` run inside Odoo (a server action called over
  RPC; an RPC cannot call a method starting with ``_``), which wakes the cron worker;
- Microsoft, through the sandbox's Python API (the sandbox runs in this process).

Every transaction is a real one. Each test connects its own sandbox users, so that tokens,
revocations and faults of one test do not reach another; at the end it archives its servers
and cancels the mail it left queued. Run it with ``tools/prod_suite.py``.
"""

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import Mailboxes, Odoo, OdooServer  # noqa: E402

from sandbox import Sandbox, defaults  # noqa: E402
from tools.odoo_suite import dropdb, ensure_addon_requirements, find_odoo  # noqa: E402

# fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox():
    sb = Sandbox(seed=0).start()
    yield sb
    sb.stop()


@pytest.fixture(scope="session")
def odoo_server(sandbox):
    try:
        src, python = find_odoo()
    except LookupError as exc:
        pytest.skip(f"no Odoo 19: {exc}")
    ensure_addon_requirements(python)
    server = OdooServer(src, python, f"mog_prod_{os.getpid()}_{int(time.time())}")
    server.install()
    try:
        server.start()
        admin = Odoo(server).login()
        admin.set_param("web.base.url", server.url)
        admin.set_param("web.base.url.freeze", "True")
        tenant = sandbox.add_tenant(defaults.TENANT_DOMAIN, defaults.TENANT_ID)
        sandbox.add_app(
            tenant,
            defaults.CLIENT_ID,
            defaults.CLIENT_SECRET,
            [f"{server.url}/microsoft_outlook/confirm"],
            display_name=defaults.APP_NAME,
        )
        server.tenant = tenant
        settings = admin.call(
            "res.config.settings",
            "create",
            {
                "microsoft_outlook_client_identifier": defaults.CLIENT_ID,
                "microsoft_graph_client_secret": defaults.CLIENT_SECRET,
                "microsoft_graph_tenant": defaults.TENANT_ID,
                "microsoft_graph_cloud": "custom",
                "microsoft_graph_authority_url": sandbox.base_url,
                "microsoft_graph_graph_url": sandbox.base_url,
                "microsoft_graph_ca_file": sandbox.ca_file,
            },
        )
        admin.call("res.config.settings", "execute", [settings])
        cron_model = admin.call("ir.model", "search", [("model", "=", "ir.cron")])[0]
        server.trigger_action = admin.call(
            "ir.actions.server",
            "create",
            {
                "name": "prodtests: trigger a cron as Odoo does",
                "model_id": cron_model,
                "state": "code",
                "code": "env.ref(env.context['prodtests_cron'])._trigger()",
            },
        )
        yield server
    finally:
        server.stop()
        dropdb(server.database)
        server.cleanup()


@pytest.fixture
def odoo(odoo_server):
    return Odoo(odoo_server).login()


@pytest.fixture
def log_mark(odoo_server):
    """The server log's size when the test started: its lines are what the test checks."""
    return odoo_server.log_size()


@pytest.fixture
def mailboxes(odoo, sandbox, odoo_server, request):
    boxes = Mailboxes(odoo, sandbox, odoo_server.tenant, request.node.name)
    yield boxes
    sandbox.clear_faults()
    sandbox.access_token_lifetime = 3600
    sandbox.configure_limits(latency=0.0)
    boxes.close()
