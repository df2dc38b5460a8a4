"""Fixtures of the pytest suites: the running sandbox, a trusting session, the leak guard.

The repository root is the Odoo addon (its __init__.py imports odoo), so it goes on sys.path
instead of being imported as a package: `import sandbox`, `import services` work as top level.
"""

import logging
import os
import sys
import time
import traceback

import msal
import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sandbox import Sandbox, defaults  # noqa: E402
from sandbox.leak_guard import find_leaks  # noqa: E402


def pytest_configure(config):
    # MSAL recommends form_post on every query-mode flow; the tests use both on purpose.
    config.addinivalue_line(
        "filterwarnings", "ignore:response_mode='form_post' is recommended:UserWarning"
    )
    config.addinivalue_line(
        "markers",
        "unguarded_loggers(*names): the leak guard skips records of these loggers (and children)",
    )


@pytest.fixture(scope="session")
def sandbox_server():
    sb = Sandbox(seed=0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox(sandbox_server):
    """The started sandbox, reset and holding the standard tenant of sandbox.defaults."""
    sandbox_server.reset()
    defaults.install(sandbox_server)
    yield sandbox_server
    errors = list(sandbox_server.server_errors)
    assert not errors, "sandbox handler failed:\n" + "\n".join(errors)


@pytest.fixture
def frozen_clock(sandbox):
    """The sandbox clock stands still: only sandbox.advance() moves it, however slow the
    machine. Opt-in: clients sign their assertions with the wall clock, which runs on."""
    return sandbox.clock.freeze()


# The seconds of a timeout fault that a test releases itself (fault.release()) once the
# requests it needs are held, however long the machine takes to bring them in; also the bound.
HELD = 600.0


def wait_until(predicate, what, bound=60.0):
    """Poll predicate until true; fail after a generous bound (a stuck test, not a slow one)."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {bound:.0f} s for {what}")
        time.sleep(0.01)


def trusting_session(ca_file):
    """A session that trusts the sandbox CA despite REQUESTS_CA_BUNDLE in the environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_file
    return session


@pytest.fixture
def graph_session(sandbox):
    session = trusting_session(sandbox.ca_file)
    yield session
    session.close()


@pytest.fixture
def make_msal_app(sandbox, graph_session):
    """A new MSAL application each call: MSAL remembers 400 answers for 60 s per app."""

    def make(
        client_id=defaults.CLIENT_ID, secret=defaults.CLIENT_SECRET, tenant=defaults.TENANT_DOMAIN
    ):
        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=secret,
            authority=f"{sandbox.base_url}/{tenant}",
            instance_discovery=False,
            http_client=graph_session,
        )

    return make


@pytest.fixture
def connect(sandbox, make_msal_app):
    """Run the real authorization code flow; returns (msal app, token result)."""

    def run(scopes=("Mail.Read", "User.Read"), login=defaults.ADMIN, app=None, **flow_options):
        app = app or make_msal_app()
        flow = app.initiate_auth_code_flow(
            list(scopes), redirect_uri=defaults.REDIRECT_URI, **flow_options
        )
        answer = sandbox.sign_in(flow["auth_uri"], login=login)
        assert answer.params.get("code"), answer
        return app, app.acquire_token_by_auth_code_flow(flow, answer.params)

    return run


@pytest.fixture(autouse=True)
def leak_guard(request, caplog):
    """Fail a test whose log records, at any level, show a secret the sandbox issued.

    Raw MSAL logs the authorization code it redeems at DEBUG; tests that drive MSAL
    without the addon's redaction filter name it with @pytest.mark.unguarded_loggers("msal").
    """
    caplog.set_level(logging.DEBUG)
    yield
    skipped = tuple(
        name for marker in request.node.iter_markers("unguarded_loggers") for name in marker.args
    )
    texts = []
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            if skipped and (
                record.name in skipped or record.name.startswith(tuple(n + "." for n in skipped))
            ):
                continue
            texts += [record.getMessage(), str(record.msg), repr(record.args), record.exc_text]
            if record.exc_info:
                texts.append("".join(traceback.format_exception(*record.exc_info)))
    leaks = find_leaks(texts)
    if leaks:
        pytest.fail(f"secret in log records: {leaks[0][1]!r}", pytrace=False)
