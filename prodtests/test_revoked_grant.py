"""Scenario 2: the user's grant is revoked (password change, admin revocation).

Expected: the admins get one notice per server, the mail stays queued (``outgoing``), and no
later run of the queue cron or the fetchmail cron logs a traceback or an error.
"""

from harness import (
    FETCH_CRON,
    QUEUE_CRON,
    assert_clean_log,
    deliver_incoming,
    delivery_counts,
    drive_import,
    drive_queue,
    mail_states,
    queue_mails,
    wait_for,
)


def notices(odoo, model, record_id):
    return odoo.call(
        "mail.message",
        "search_count",
        [
            ("model", "=", model),
            ("res_id", "=", record_id),
            ("subject", "ilike", "must be reconnected"),
        ],
    )


def status(odoo, model, record_id):
    return odoo.read_one(model, record_id, ["microsoft_graph_status"])["microsoft_graph_status"]


def test_revoked_grant(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("revoked")
    outgoing = mailboxes.connect_outgoing(address)
    incoming = mailboxes.connect_incoming(address)
    first = queue_mails(odoo, outgoing, address, subject="before revocation")
    drive_queue(odoo, first, timeout=120)
    drive_import(odoo, deliver_incoming(sandbox, address, 1, "before revocation"), timeout=120)

    sandbox.revoke(address)
    waiting = queue_mails(odoo, outgoing, address, count=2, subject="after revocation")
    deliver_incoming(sandbox, address, 1, "after revocation")
    for _run in range(3):
        odoo.run_cron(QUEUE_CRON)
        odoo.run_cron(FETCH_CRON)
    wait_for(
        lambda: status(odoo, "ir.mail_server", outgoing) == "reconnect",
        60,
        "the outgoing server to ask for a reconnection",
    )
    wait_for(
        lambda: status(odoo, "fetchmail.server", incoming) == "reconnect",
        60,
        "the incoming server to ask for a reconnection",
    )

    states = mail_states(odoo, waiting)
    assert {row["state"] for row in states.values()} == {"outgoing"}, states
    assert delivery_counts(sandbox, waiting.values()) == dict.fromkeys(waiting.values(), 0)
    assert notices(odoo, "ir.mail_server", outgoing) == 1
    assert notices(odoo, "fetchmail.server", incoming) == 1
    assert_clean_log(odoo_server, log_mark)
