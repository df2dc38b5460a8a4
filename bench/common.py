"""What the benchmarks share: Odoo found and run, a throwaway database, the sandbox, the CLI.

- Odoo: found the way ``tools/test`` does (``tools/odoo_suite.py``), the script re-run under
  Odoo's python, a throwaway database with the addon installed (dropped at the end, filestore
  included), and Odoo's registry opened in this process.
- The Microsoft 365 sandbox: started in this process, Odoo's Settings filled in for its custom
  cloud and CA file (as ``tools/demo.py`` does), and servers connected through its consent
  page (as ``tests/common.py`` ``connect_without_browser`` does).
- The command line and the output: the options and the ``main`` every script has, the JSON
  lines a child process prints for its parent, the machine line above the figures.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tools"))

from odoo_suite import (  # noqa: E402
    ADDON,
    VAR,
    addons_path,
    dropdb,
    ensure_addon_requirements,
    find_odoo,
    free_port,
)

__all__ = [
    "ADDON",
    "BENCH",
    "KB",
    "MB",
    "REPO",
    "SENDER",
    "VAR",
    "add_database_options",
    "bench_main",
    "connect_graph_incoming",
    "connect_through_consent",
    "create_database",
    "drop_database",
    "emit",
    "environment",
    "find_odoo",
    "free_port",
    "machine",
    "new_parser",
    "odoo_options",
    "open_registry",
    "reexec_under_odoo",
    "start_sandbox",
    "tagged",
    "throwaway_database",
]

KB = 1024
MB = 1024 * 1024
SENDER = "admin@contoso.test"


# Odoo and the throwaway database -------------------------------------------------------


def odoo_options(src, database):
    return [
        f"--addons-path={addons_path(src)}",
        f"--database={database}",
        "--db_host=127.0.0.1",
        "--db_user=" + os.environ.get("PGUSER", "root"),
        "--log-level=warn",
    ]


def create_database(src, python, database):
    print(f"Creating database {database} with {ADDON} (about a minute)...", flush=True)
    dropdb(database)
    subprocess.run(
        [
            python,
            str(REPO / "tools" / "odoo_test_runner.py"),
            f"--odoo-src={src}",
            "--",
            *odoo_options(src, database),
            f"--init={ADDON}",
            "--stop-after-init",
            "--without-demo=True",
        ],
        check=True,
    )


def drop_database(database):
    """Drop the database and its filestore, this process's connections to it closed first."""
    if "odoo.sql_db" in sys.modules:  # this process's connections keep it alive
        sys.modules["odoo.sql_db"].close_db(database)
    dropdb(database)
    if "odoo.tools" in sys.modules:
        config = sys.modules["odoo.tools"].config
        shutil.rmtree(config.filestore(database), ignore_errors=True)


@contextlib.contextmanager
def throwaway_database(options, src, python, prefix):
    """options.database, or a new one named after prefix, dropped at the end unless kept."""
    created = not options.database
    options.database = options.database or f"{prefix}_{os.getpid()}"
    if created:
        create_database(src, python, options.database)
    try:
        yield options.database
    finally:
        if created and not options.keep_database:
            drop_database(options.database)


def open_registry(src, database):
    """Odoo in this process, on the database: (registry, odoo.api)."""
    sys.path.insert(0, str(src))
    from odoo import api  # noqa: PLC0415 - Odoo is importable only from here on
    from odoo.modules.registry import Registry  # noqa: PLC0415
    from odoo.tools import config  # noqa: PLC0415

    config.parse_config(odoo_options(src, database), setup_logging=True)
    threading.current_thread().dbname = database
    return Registry(database), api


@contextlib.contextmanager
def environment(registry, api):
    with registry.cursor() as cr:
        yield api.Environment(cr, api.SUPERUSER_ID, {})


def reexec_under_odoo(python):
    """Run this script again under Odoo's python, unless it already runs there."""
    # Odoo's venv python is a symlink to a base interpreter: compare the paths as given.
    if os.path.abspath(sys.executable) != os.path.abspath(python) and not os.environ.get(
        "BENCH_REEXEC"
    ):
        os.environ["BENCH_REEXEC"] = "1"
        os.execv(python, [python, str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])  # noqa: S606


# the Microsoft 365 sandbox -------------------------------------------------------------


def start_sandbox(env, latency):
    """The sandbox in this process with SENDER's mailbox, and Odoo's Settings pointing at it."""
    from odoo.addons.microsoft_outlook_graph.sandbox import Sandbox, defaults  # noqa: PLC0415

    sb = Sandbox(seed=0).start()
    redirect_uri = env["microsoft.outlook.graph.mixin"]._microsoft_graph_redirect_uri()
    tenant = sb.add_tenant(defaults.TENANT_DOMAIN, defaults.TENANT_ID)
    sb.add_app(
        tenant, defaults.CLIENT_ID, defaults.CLIENT_SECRET, [redirect_uri], display_name="Bench"
    )
    sb.add_user(tenant, SENDER, "Contoso Admin")
    # Outlook's per-mailbox budgets are not what is measured here.
    sb.configure_limits(
        latency=latency, request_budget=10**9, upload_budget=10**12, concurrency=1000
    )
    env["res.config.settings"].create(
        {
            "microsoft_outlook_client_identifier": defaults.CLIENT_ID,
            "microsoft_graph_client_secret": defaults.CLIENT_SECRET,
            "microsoft_graph_tenant": defaults.TENANT_ID,
            "microsoft_graph_cloud": "custom",
            "microsoft_graph_authority_url": sb.base_url,
            "microsoft_graph_graph_url": sb.base_url,
            "microsoft_graph_ca_file": sb.ca_file,
        }
    ).execute()
    env.cr.commit()
    return sb


def connect_through_consent(env, server, sb, login=None):
    """Connect an ir.mail_server or fetchmail.server, the sandbox playing the consent page
    (signed in as ``login``, by default the sandbox's first account)."""
    admin = env.ref("base.user_admin")
    action = server.with_user(admin).action_microsoft_graph_connect()
    result = sb.sign_in(action["url"], login=login)
    if not result.params or "state" not in result.params:
        raise RuntimeError(f"the sandbox did not sign in: {result.page[:300]}")
    pending, problem = (
        env["microsoft.outlook.graph.flow"].with_user(admin).sudo()._consume(result.params["state"])
    )
    if problem:
        raise RuntimeError(problem)
    server.with_user(admin).sudo()._microsoft_graph_finish_connect(
        pending["flow_sealed"], result.params
    )


def connect_graph_incoming(env, sb, address=SENDER, name=None, mark_read=True):
    """An incoming Graph server (personal mailbox, into res.partner), connected and confirmed."""
    server = env["fetchmail.server"].create(
        {
            "name": name or f"Bench Graph {address}",
            "server_type": "microsoft_graph",
            "user": address,
            "microsoft_graph_mailbox_kind": "personal",
            "object_id": env["ir.model"]._get("res.partner").id,
            "microsoft_graph_mark_read": mark_read,
        }
    )
    connect_through_consent(env, server, sb)
    server.state = "done"  # as the tests do; this also triggers the subscription cron
    env.cr.commit()
    return server


# the command line and the output -------------------------------------------------------


def add_database_options(parser):
    parser.add_argument("--database", help="reuse this database (the addon installed)")
    parser.add_argument("--keep-database", action="store_true")


def bench_main(options, prefix, run, child=None, setup=None):
    """What every script's main does: Odoo found, the script re-run under Odoo's python, a
    child's work if ``child`` is given, else the requirements installed and
    ``run(options, src, python, database)`` on a throwaway database named after ``prefix``.
    """
    try:
        src, python = find_odoo()
    except LookupError as exc:
        print(f"The benchmark needs an installed Odoo 19: {exc}.")
        return 2
    reexec_under_odoo(python)
    if child:
        return child(options)
    ensure_addon_requirements(python)
    VAR.mkdir(exist_ok=True)
    if setup:
        setup(python)
    with throwaway_database(options, src, python, prefix) as database:
        return run(options, src, python, database)


def emit(tag, payload):
    """One line a child prints for its parent: the tag, then the payload as JSON."""
    print(f"{tag} {json.dumps(payload)}", flush=True)


def tagged(line, tag):
    """The payload of an ``emit`` line with this tag, or None for any other line."""
    if line.startswith(tag + " "):
        return json.loads(line[len(tag) + 1 :])
    return None


def machine():
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def new_parser(doc):
    """The scripts' parser, described by the first line of their docstring."""
    return argparse.ArgumentParser(description=doc.split("\n", 1)[0])
