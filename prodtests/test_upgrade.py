"""Upgrading a 19.0.1.1.0 database in place keeps its crons (19.0.1.2.0 renames their xml ids).

A real odoo-bin installs the addon as its last 19.0.1.1.0 commit was, the admin turns the poll
cron off over RPC, then ``odoo-bin -u`` runs the checkout's migrations/19.0.1.2.0 and the
server starts again on the upgraded database: the same three cron rows under the new xml ids,
with the new names, the admin's choice kept, no duplicate, nothing bad in the logs.
"""

import os
import subprocess
import time

import pytest
from harness import ROOT, Odoo, OdooServer, snapshot_addons_path

from tools.odoo_suite import ADDON, dropdb, ensure_addon_requirements, find_odoo

RENAMED = {
    "microsoft_outlook_graph_health_cron": (
        "ir_cron_microsoft_outlook_graph_health_check",
        "Microsoft Graph: Daily Mailbox Health Check",
    ),
    "ir_cron_microsoft_graph_poll": (
        "ir_cron_microsoft_outlook_graph_poll",
        "Microsoft Graph: Check Mailboxes Without Change Notifications",
    ),
    "ir_cron_microsoft_graph_subscriptions": (
        "ir_cron_microsoft_outlook_graph_subscriptions",
        "Microsoft Graph: Keep Change Notification Subscriptions",
    ),
}

# What each cron calls after the upgrade (the addon's own models dropped the method prefix).
CODE = {
    "ir_cron_microsoft_outlook_graph_health_check": "model._cron_health_check()",
    "ir_cron_microsoft_outlook_graph_poll": "model._cron_microsoft_graph_poll()",
    "ir_cron_microsoft_outlook_graph_subscriptions": "model._cron_keep_subscriptions()",
}


def last_commit_of_19_0_1_1_0():
    """The parent of the commit that set the version to 19.0.1.2.0."""
    first = subprocess.run(
        ["git", "log", "--format=%H", "--reverse", '-G"version": "19.0.1.2.0"', "__manifest__.py"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    return f"{first}^"


def upgrade(server):
    code, log_path = server.run_once("upgrade", f"--update={ADDON}", log_level="info")
    assert code == 0, f"odoo-bin -u failed; see {log_path}"
    return log_path.read_text(encoding="utf-8")


def test_a_19_0_1_1_0_database_keeps_its_crons_through_the_upgrade(tmp_path):
    try:
        src, python = find_odoo()
    except LookupError as exc:
        pytest.skip(f"no Odoo 19: {exc}")
    ensure_addon_requirements(python)
    database = f"mog_upgrade_{os.getpid()}_{int(time.time())}"
    old = OdooServer(src, python, database)
    old.addons_path = snapshot_addons_path(src, last_commit_of_19_0_1_1_0(), tmp_path / "old")
    new = OdooServer(src, python, database)
    try:
        old.install()
        old.start()
        admin = Odoo(old).login()
        cron_ids = {name: admin.ref(f"{ADDON}.{name}") for name in RENAMED}
        poll = cron_ids["ir_cron_microsoft_graph_poll"]
        admin.call("ir.cron", "write", [poll], {"active": False})
        old.stop()

        upgrade_log = upgrade(new)
        assert "Running migration [>19.0.1.2.0] pre-migrate" in upgrade_log
        assert "Running migration [19.0.1.2.0>] post-migrate" in upgrade_log
        assert not [line for line in upgrade_log.splitlines() if " ERROR " in line]
        new.start()
        admin = Odoo(new).login()
        for old_name, (new_name, label) in RENAMED.items():
            cron_id = cron_ids[old_name]
            assert admin.ref(f"{ADDON}.{new_name}") == cron_id
            found = admin.call(
                "ir.model.data", "search_count", [("module", "=", ADDON), ("name", "=", old_name)]
            )
            assert found == 0, old_name
            cron = admin.call(
                "ir.cron",
                "read",
                [cron_id],
                ["cron_name", "active", "code"],
                context={"active_test": False},
            )[0]
            assert cron["cron_name"] == label
            assert cron["code"].strip() == CODE[new_name]
            assert cron["active"] is (cron_id != poll), "the admin's choice survives"
        ours = admin.call(
            "ir.cron",
            "search_count",
            [("code", "in", list(CODE.values()))],
            context={"active_test": False},
        )
        assert ours == len(RENAMED), "no cron created twice"
        assert not new.problems_since(0)
    finally:
        old.stop()
        new.stop()
        dropdb(database)
        old.cleanup()
        new.cleanup()
