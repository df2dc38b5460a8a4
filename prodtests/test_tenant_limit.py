"""Issue 17: Exchange's tenant external recipient limit, spent by several mailboxes.

Three mailboxes of one tenant queue mail to external recipients; the tenant's budget (Odoo's
and the sandbox's Exchange, set to the same room) has room for four of them. The queue cron
runs in the cron worker as in production. Four mails leave, the others wait in the queue with
the tenant's limit and a time as their reason; Exchange refuses nothing (no 5.7.233 report in
any mailbox), nothing fails, nothing is sent twice, and internal mail still goes.
"""

from harness import (
    QUEUE_CRON,
    assert_clean_log,
    delivery_counts,
    drive,
    mail_states,
    queue_mails,
)

from sandbox import defaults

ROOM = 4


def tenant_record(odoo):
    ids = odoo.call(
        "microsoft.outlook.graph.tenant", "search", [("tenant_id", "=", defaults.TENANT_ID)]
    )
    assert len(ids) == 1, "the tenant is made when its first server connects"
    return ids[0]


def settled(odoo, mail_ids):
    """Every mail sent, or waiting with the tenant's limit as its reason."""
    states = mail_states(odoo, mail_ids)
    return (
        all(
            row["state"] == "sent"
            or (
                row["state"] == "outgoing"
                and "Microsoft 365 tenant" in (row["failure_reason"] or "")
            )
            for row in states.values()
        )
        and states
    )


def test_the_tenant_budget_spent_by_several_mailboxes(
    odoo, odoo_server, sandbox, mailboxes, log_mark
):
    senders = [mailboxes.new_user(f"sender{n}") for n in range(3)]
    servers = {address: mailboxes.connect_outgoing(address) for address in senders}
    tenant_id = tenant_record(odoo)
    odoo_used = odoo.read_one("microsoft.outlook.graph.tenant", tenant_id, ["external_used"])[
        "external_used"
    ]
    exchange_used = sandbox.tenant_external_used(defaults.TENANT_DOMAIN)
    odoo.call(
        "microsoft.outlook.graph.tenant",
        "write",
        [tenant_id],
        {"external_limit": odoo_used + ROOM},
    )
    sandbox.configure_tenant_limit(
        defaults.TENANT_DOMAIN, external_recipients_per_day=exchange_used + ROOM
    )
    try:
        mails = {}
        for address, server_id in servers.items():
            mails.update(queue_mails(odoo, server_id, address, count=3, subject="offer"))
        internal = odoo.call(
            "mail.mail",
            "create",
            {
                "subject": "internal",
                "body_html": "<p>internal</p>",
                "email_from": senders[0],
                "email_to": senders[1],
                "mail_server_id": servers[senders[0]],
                "auto_delete": False,
            },
        )
        states = drive(
            odoo,
            QUEUE_CRON,
            lambda: settled(odoo, [*mails, internal]),
            240,
            "every mail sent or waiting for the tenant",
        )
        sent = [mail_id for mail_id in mails if states[mail_id]["state"] == "sent"]
        waiting = [mail_id for mail_id in mails if states[mail_id]["state"] == "outgoing"]
        assert len(sent) == ROOM, states
        assert len(waiting) == len(mails) - ROOM
        assert states[internal]["state"] == "sent"
        reason = states[waiting[0]]["failure_reason"]
        assert "every mailbox together" in reason and "sends after" in reason, reason
        # Two more runs: nothing more leaves, nothing fails.
        for _run in range(2):
            odoo.run_cron(QUEUE_CRON)
        assert all(row["state"] == "outgoing" for row in mail_states(odoo, waiting).values())
        counts = delivery_counts(sandbox, mails.values())
        assert sorted(counts.values()) == [0] * len(waiting) + [1] * ROOM, counts
        refused = [
            message.subject
            for address in senders
            for message in sandbox.messages(address)
            if message.subject.startswith("Undeliverable")
        ]
        assert not refused, refused
        assert sandbox.tenant_external_used(defaults.TENANT_DOMAIN) == exchange_used + ROOM
        health = odoo.call(
            "microsoft.outlook.graph.mailbox",
            "search_read",
            [("mail_server_id", "in", list(servers.values()))],
            ["tenant_external_used", "tenant_external_limit", "waiting_count"],
        )
        assert {row["tenant_external_limit"] for row in health} == {odoo_used + ROOM}
        assert sum(row["waiting_count"] for row in health) == len(waiting)
        assert_clean_log(odoo_server, log_mark)
    finally:
        odoo.call("microsoft.outlook.graph.tenant", "write", [tenant_id], {"external_limit": 0})
        sandbox.configure_tenant_limit(defaults.TENANT_DOMAIN, external_recipients_per_day=None)
