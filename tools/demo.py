"""Start the demo: the Microsoft 365 sandbox, then Odoo 19 with the addon wired to it."""

import json
import os
import signal
import subprocess
import sys
import time

from odoo_suite import REPO, VAR, addons_path, dropdb, ensure_addon_requirements, find_odoo

FIXTURE = REPO / "sandbox" / "fixtures" / "demo.json"


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
    ensure_addon_requirements(python)
    VAR.mkdir(exist_ok=True)
    database = os.environ.get("DEMO_DB", "mog_demo")
    http_port = int(os.environ.get("DEMO_HTTP_PORT", "8069"))
    sandbox_port = int(os.environ.get("SANDBOX_PORT", "8443"))
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
                "--init=microsoft_outlook_graph",
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
            input=DEMO_SETUP.format(
                sandbox_url=sandbox_url, ca_file=ca_file, fixture=fixture, base_url=base_url
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
            "Try: Settings > General Settings > Emails > Outgoing Email Servers > New, "
            "Authenticate with 'Outlook (Microsoft Graph)', username admin@contoso.test, Save, "
            "then 'Connect your Outlook account'.\n"
            "Stop with Ctrl+C.\n",
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


DEMO_SETUP = """
import json
app = json.load(open("{fixture}"))["tenants"][0]["apps"][0]
tenant = json.load(open("{fixture}"))["tenants"][0]
settings = env["res.config.settings"].create({{
    "microsoft_outlook_client_identifier": app["client_id"],
    "microsoft_graph_client_secret": app["client_secret"],
    "microsoft_graph_tenant": tenant.get("id") or tenant["domain"],
    "microsoft_graph_cloud": "custom",
    "microsoft_graph_authority_url": "{sandbox_url}",
    "microsoft_graph_graph_url": "{sandbox_url}",
    "microsoft_graph_ca_file": "{ca_file}",
    # shows the Outlook block and the mail server links in General Settings
    "external_email_server_default": True,
}})
settings.execute()
env["ir.config_parameter"].set_param("web.base.url", "{base_url}")
env["ir.config_parameter"].set_param("web.base.url.freeze", "True")
env.user.email = "admin@contoso.test"
env.cr.commit()
"""


if __name__ == "__main__":
    sys.exit(main())
