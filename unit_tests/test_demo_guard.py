"""tools/demo.py refuses to start while a demo runs, instead of dropping its database."""

import socket
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import demo  # noqa: E402


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_starts_when_ports_and_database_are_free():
    ports = [("Odoo", free_port()), ("sandbox", free_port())]
    assert demo.refusal("mog_demo_free", ports, sessions=lambda _db: 0) is None


def test_refuses_while_a_port_is_in_use():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        message = demo.refusal("mog_demo", [("Odoo", port)], sessions=lambda _db: 0)
    assert f"Odoo port {port} is already in use" in message
    assert "Nothing was changed" in message


def test_refuses_while_the_database_is_in_use():
    message = demo.refusal("mog_demo", [("Odoo", free_port())], sessions=lambda _db: 3)
    assert "database mog_demo is in use (3 open session(s))" in message
    assert "DEMO_DB" in message


def test_a_demo_that_runs_is_not_touched(monkeypatch):
    """main() returns before the sandbox, the database or pip are touched."""
    touched = []
    monkeypatch.setattr(demo, "find_odoo", lambda: ("/opt/odoo19", "python"))
    monkeypatch.setattr(demo, "refusal", lambda *_a, **_k: "Not starting: busy")
    monkeypatch.setattr(demo, "dropdb", touched.append)
    monkeypatch.setattr(demo, "ensure_addon_requirements", touched.append)
    monkeypatch.setattr(demo.subprocess, "Popen", lambda *a, **k: touched.append(a))
    assert demo.main() == 1
    assert touched == []


def test_demo_installs_contacts_and_names_the_guided_setup():
    assert "contacts" in demo.MODULES
    assert "Outlook (Microsoft Graph) setup" in demo.TRY
