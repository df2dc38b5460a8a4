"""Start the demo: the Microsoft 365 sandbox, then Odoo 19 with the addon wired to it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from odoo_suite import REPO, VAR, addons_path, dropdb, ensure_addon_requirements, find_odoo

FIXTURE = REPO / "sandbox" / "fixtures" / "demo.json"
SETUP = REPO / "tools" / "demo_setup.py"
# Contacts beside the addon: the imported mail's contacts have a menu, and a chatter to
# send README's first message from, without a trip to Apps.
MODULES = ("microsoft_outlook_graph", "contacts")
TRY = (
    "Try: Settings > General Settings > Emails > 'Outlook (Microsoft Graph) setup' (README's "
    "'Trying the demo' walks it: 'Test and save', Next, Next, admin@contoso.test, 'Create the "
    "servers', Connect > Accept; the setup again for the incoming server); then the incoming "
    "server's 'Test & Confirm' and 'Fetch Now': the mailbox's mail becomes contacts (Contacts "
    "app), to send a chatter message from."
)


def port_in_use(port, host="127.0.0.1"):
    """Whether something already listens on host:port (a demo that runs, say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def database_sessions(database):
    """How many sessions PostgreSQL has open on database (0 when it does not exist)."""
    # psql interpolates variables only in its input, not in -c: the name is quoted by it.
    result = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-d", "postgres", "-tA", "-v", f"db={database}"],
        input="SELECT count(*) FROM pg_stat_activity WHERE datname = :'db';\n",
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return int(result.stdout.strip() or 0)
    except ValueError:
        return 0


def refusal(database, ports, sessions=database_sessions):
    """Why the demo must not start (it would drop a live database), or None."""
    busy = [f"{name} port {port}" for name, port in ports if port_in_use(port)]
    if busy:
        verb = "is" if len(busy) == 1 else "are"
        return (
            f"Not starting: the {' and the '.join(busy)} {verb} already in use, most likely by "
            "a demo that runs (stop it with Ctrl+C first), or choose others with "
            "DEMO_HTTP_PORT and SANDBOX_PORT, and another DEMO_DB. Nothing was changed."
        )
    count = sessions(database)
    if count:
        return (
            f"Not starting: the database {database} is in use ({count} open session(s)), most "
            "likely by a demo that runs: the demo drops and re-creates it. Stop that Odoo "
            "first, or choose another DEMO_DB. Nothing was changed."
        )
    return None


def demo_fixture(base_url):
    """The demo tenant, its app also accepting the redirect URI of the chosen Odoo port."""
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    redirect_uri = f"{base_url}/microsoft_outlook/confirm"
    for tenant in fixture["tenants"]:
        for app in tenant["apps"]:
            if redirect_uri not in app["redirect_uris"]:
                app["redirect_uris"].append(redirect_uri)
    path = VAR / "demo-fixture.json"
    path.write_text(json.dumps(fixture, indent=1), encoding="utf-8")
    return path


def main():
    try:
        src, python = find_odoo()
    except LookupError as exc:
        print(
            f"The demo needs an installed Odoo 19 ({exc}): its source tree in ODOO_SRC and "
            "its Python, with Odoo's requirements installed, in ODOO_PY; and PostgreSQL."
        )
        return 2
    database = os.environ.get("DEMO_DB", "mog_demo")
    http_port = int(os.environ.get("DEMO_HTTP_PORT", "8069"))
    sandbox_port = int(os.environ.get("SANDBOX_PORT", "8443"))
    problem = refusal(database, [("Odoo", http_port), ("sandbox", sandbox_port)])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    ensure_addon_requirements(python)
    VAR.mkdir(exist_ok=True)
    ca_file = VAR / "sandbox-ca.pem"
    base_url = f"http://localhost:{http_port}"
    ca_file.unlink(missing_ok=True)
    fixture = demo_fixture(base_url)

    sandbox = subprocess.Popen(
        [
            python,
            "-m",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(sandbox_port),
            "--tenant-fixture",
            str(fixture),
            "--ca-out",
            str(ca_file),
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not ca_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        sandbox_url = f"https://127.0.0.1:{sandbox_port}"
        print(f"Creating database {database} with the addon (about 30 s)...", flush=True)
        dropdb(database)
        common = [
            python,
            str(REPO / "tools" / "odoo_test_runner.py"),
            f"--odoo-src={src}",
            "--",
            f"--addons-path={addons_path(src)}",
            f"--database={database}",
            "--db_host=127.0.0.1",
            "--db_user=" + os.environ.get("PGUSER", "root"),
            "--http-interface=127.0.0.1",
        ]
        subprocess.run(
            [
                *common,
                f"--init={','.join(MODULES)}",
                "--stop-after-init",
                "--log-level=warn",
                "--without-demo=True",
            ],
            check=True,
        )
        subprocess.run(
            [
                python,
                str(src / "odoo-bin"),
                "shell",
                f"--addons-path={addons_path(src)}",
                f"--database={database}",
                "--db_host=127.0.0.1",
                "--db_user=" + os.environ.get("PGUSER", "root"),
                "--log-level=warn",
                "--no-http",
            ],
            input=DEMO_SHELL.format(
                setup=SETUP,
                sandbox_url=sandbox_url,
                ca_file=ca_file,
                fixture=fixture,
                base_url=base_url,
            ),
            text=True,
            check=True,
        )
        # flushed: when the output goes to a file or a pipe, Odoo's log would come first
        print(
            f"\nOdoo:       {base_url}  (login admin, password admin; open this address, not "
            "127.0.0.1: Microsoft sends the browser back to it)\n"
            f"Microsoft:  {sandbox_url}  (a throw-away certificate: let the browser proceed, or "
            f"trust {ca_file}; no password, Accept signs in as the account typed there:"
            " admin@contoso.test or alice@contoso.test)\n"
            f"{TRY}\nStop with Ctrl+C.\n",
            flush=True,
        )
        odoo = subprocess.Popen([*common, f"--http-port={http_port}"])
        signal.signal(signal.SIGTERM, lambda *_: odoo.terminate())
        try:
            return odoo.wait()
        except KeyboardInterrupt:
            odoo.terminate()
            return odoo.wait()
    finally:
        sandbox.terminate()
        sandbox.wait()


DEMO_SHELL = """
import json
namespace = {{}}
exec(compile(open("{setup}").read(), "{setup}", "exec"), namespace)
tenant = json.load(open("{fixture}"))["tenants"][0]
app = tenant["apps"][0]
namespace["setup"](
    env,
    client_id=app["client_id"],
    client_secret=app["client_secret"],
    tenant=tenant.get("id") or tenant["domain"],
    sandbox_url="{sandbox_url}",
    ca_file="{ca_file}",
    base_url="{base_url}",
)
env.cr.commit()
"""


if __name__ == "__main__":
    sys.exit(main())
