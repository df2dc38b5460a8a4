"""python -m sandbox: the demo fixture, the printed addresses, a clean stop on SIGTERM."""

import os
import signal
import subprocess
import sys

from conftest import ROOT, trusting_session

from sandbox import Sandbox

DEMO = os.path.join(ROOT, "sandbox", "fixtures", "demo.json")


def test_demo_fixture_loads():
    sb = Sandbox()
    sb.load_fixture(DEMO)
    assert sb.user("admin@contoso.test").display_name == "Demo Admin"
    assert sb.mailbox("sales@contoso.test").rights_of(sb.user("admin@contoso.test")) == {
        "FullAccess",
        "SendAs",
    }
    for address in ("admin@contoso.test", "alice@contoso.test", "sales@contoso.test"):
        assert len(sb.messages(address)) == 3
    app = next(iter(sb.directory.apps.values()))
    assert "http://localhost:8069/microsoft_outlook/confirm" in app.redirect_uris


def test_cli_serves_until_sigterm(tmp_path):
    ca_out = tmp_path / "ca.pem"
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--tenant-fixture",
            DEMO,
            "--ca-out",
            str(ca_out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = {}
        while "CA file" not in lines:
            key, _, value = process.stdout.readline().partition(": ")
            assert key, "the sandbox exited early"
            lines[key] = value.strip()
        assert lines["CA file"] == str(ca_out)
        # hosts, as Settings takes them: no /v1.0, no tenant
        assert (
            lines["Authority URL and Graph URL (Settings, custom endpoints)"] == (lines["base URL"])
        )
        session = trusting_session(str(ca_out))
        config = session.get(
            f"{lines['base URL']}/contoso.test/v2.0/.well-known/openid-configuration"
        ).json()
        assert config["issuer"].endswith("/0d7c9e2a-3f5b-4c1d-8e6f-a1b2c3d4e5f6/v2.0")
        session.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
