"""Issue 17: fair incoming. Several shared mailboxes come in through Graph on one Odoo
(HTTP workers and a cron worker); one of them, first in line (the least recently served),
has a backlog of several pages and answers every Graph request in 10 s (the sandbox holds
its requests). One run of the fetchmail cron still imports the mail of every other mailbox:
the slow one stops at the end of its slice of the run, its position saved, instead of
spending the run's whole time. Once it answers again its mail follows, and no message is
imported twice.
"""

from harness import (
    FETCH_CRON,
    assert_clean_log,
    deliver_incoming,
    drive_import,
    imports,
    utc_ago,
)

from sandbox import defaults

SHARED = 4
MESSAGES_EACH = 3
# More than two delta pages of 50: at 10 s a request, more than the run's 60 s.
SLOW_BACKLOG = 120
SLOW_SECONDS = 10.0


def connect_shared(mailboxes, sandbox, reader, name):
    """A shared mailbox the reader has Full Access to, connected as an admin does it
    (signed in as the reader), confirmed, with its start position taken by one run."""
    address = f"{mailboxes.prefix}-{name}-{next(mailboxes.count)}@{defaults.TENANT_DOMAIN}"
    sandbox.add_shared_mailbox(mailboxes.tenant, address, name.title())
    sandbox.grant(address, reader, "FullAccess")
    odoo = mailboxes.odoo
    server_id = odoo.call(
        "fetchmail.server",
        "create",
        {
            "name": f"Graph {address}",
            "server_type": "microsoft_graph",
            "user": address,
            "microsoft_graph_mailbox_kind": "shared",
            "object_id": odoo.call("ir.model", "search", [("model", "=", "res.partner")])[0],
        },
    )
    mailboxes.incoming.append(server_id)
    mailboxes._connect("fetchmail.server", server_id, reader)
    odoo.call("fetchmail.server", "button_confirm_login", [server_id])
    odoo.run_cron(FETCH_CRON)
    return address, server_id


def test_a_slow_mailbox_delays_no_other(odoo, odoo_server, sandbox, mailboxes, log_mark):
    reader = mailboxes.new_user("reader")
    boxes = [connect_shared(mailboxes, sandbox, reader, f"box{n}") for n in range(SHARED)]
    (slow, slow_id), *others = boxes
    # The least recently run goes first: the slow one, here.
    odoo.call("fetchmail.server", "write", [slow_id], {"date": utc_ago(3600)})
    odoo.call("fetchmail.server", "write", [i for _a, i in others], {"date": utc_ago(0)})
    slow_mail = deliver_incoming(sandbox, slow, SLOW_BACKLOG, f"fair {slow}")
    others_mail = []
    for address, _server_id in others:
        others_mail += deliver_incoming(sandbox, address, MESSAGES_EACH, f"fair {address}")
    fault = sandbox.inject_fault("timeout", mailbox=slow, times=None, seconds=SLOW_SECONDS)
    try:
        odoo.run_cron(FETCH_CRON, timeout=300)
        # One run of the cron served every other mailbox.
        assert set(imports(odoo, others_mail).values()) == {1}
        assert fault.hits >= 1, "the slow mailbox was not asked at all"
        # The slow one stopped at its slice with more mail waiting, its position saved.
        slow_server = odoo.read_one(
            "fetchmail.server",
            slow_id,
            ["microsoft_graph_pending", "microsoft_graph_imported_count"],
        )
        assert slow_server["microsoft_graph_pending"], slow_server
        assert slow_server["microsoft_graph_imported_count"] < SLOW_BACKLOG, slow_server
    finally:
        sandbox.remove_fault(fault)
        fault.release()
    counts = drive_import(odoo, slow_mail + others_mail, timeout=300)
    assert set(counts.values()) == {1}, counts
    assert_clean_log(odoo_server, log_mark)
