"""Scenario 4: reports that claim Exchange refused a mail for the daily recipient limit.

A forged report has exactly the genuine form (the sandbox's own NDR builder makes it, from
the headers any recipient of the mail has) and names a Message-ID that Odoo really sent. It
arrives through the mail gateway (XML-RPC ``message_process``, as odoo-mailgate) and through
an IMAP-style path (``message_process`` with the context a non-Graph incoming server gives):
nothing may be paused, nothing resent. A genuine report, written by the sandbox's Exchange
when it refuses a mail and imported through the account's own Graph incoming server, still
puts the mail back in the queue.
"""

import xmlrpc.client

from harness import (
    FETCH_CRON,
    QUEUE_CRON,
    assert_clean_log,
    delivery_counts,
    drive,
    drive_queue,
    mail_states,
    queue_mails,
    wait_for,
)

from sandbox import exchange_limits


def forged_report(sandbox, address, message_id):
    """Exchange's NDR for message_id, byte for byte, written by someone who received it."""
    delivery = next(sent for sent in sandbox.outbox() if sent.internet_message_id == message_id)
    return exchange_limits.quota_ndr(
        sandbox.mailbox(address), delivery.raw, delivery.recipients, sandbox.clock.now(), 0x5EED
    )


def paused_until(odoo, server_id):
    return odoo.read_one("ir.mail_server", server_id, ["microsoft_graph_paused_until"])[
        "microsoft_graph_paused_until"
    ]


def sent_once(odoo, sandbox, mailboxes):
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    mails = queue_mails(odoo, server_id, address, subject="reported")
    drive_queue(odoo, mails, timeout=120)
    ((mail_id, message_id),) = mails.items()
    assert delivery_counts(sandbox, [message_id]) == {message_id: 1}
    return address, server_id, mail_id, message_id


def assert_nothing_changed(odoo, sandbox, server_id, mail_id, message_id):
    for _run in range(2):
        odoo.run_cron(QUEUE_CRON)
    assert not paused_until(odoo, server_id)
    assert mail_states(odoo, [mail_id])[mail_id]["state"] == "sent"
    assert delivery_counts(sandbox, [message_id]) == {message_id: 1}


def test_forged_report_through_the_mail_gateway(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address, server_id, mail_id, message_id = sent_once(odoo, sandbox, mailboxes)
    report = forged_report(sandbox, address, message_id)

    odoo.xmlrpc("mail.thread", "message_process", False, xmlrpc.client.Binary(report))

    assert_nothing_changed(odoo, sandbox, server_id, mail_id, message_id)
    assert_clean_log(odoo_server, log_mark)


def test_forged_report_through_an_imap_server(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address, server_id, mail_id, message_id = sent_once(odoo, sandbox, mailboxes)
    imap_id = odoo.call(
        "fetchmail.server",
        "create",
        {
            "name": "IMAP of the same mailbox",
            "server_type": "imap",
            "server": "imap.example.com",
            "user": address,
            "password": "not used",
        },
    )
    mailboxes.incoming.append(imap_id)
    report = forged_report(sandbox, address, message_id)

    # What Odoo's fetchmail runs for each message an IMAP server gives.
    odoo.xmlrpc(
        "mail.thread",
        "message_process",
        False,
        xmlrpc.client.Binary(report),
        context={"fetchmail_cron_running": True, "default_fetchmail_server_id": imap_id},
    )

    assert_nothing_changed(odoo, sandbox, server_id, mail_id, message_id)
    assert_clean_log(odoo_server, log_mark)


def test_genuine_report_through_the_graph_incoming_server(
    odoo, odoo_server, sandbox, mailboxes, log_mark
):
    address, server_id, _mail_id, _message_id = sent_once(odoo, sandbox, mailboxes)
    mailboxes.connect_incoming(address)
    # Mail sent from Outlook used the day's budget: Exchange allows one more recipient.
    used = exchange_limits.recipients_used(sandbox, address)
    sandbox.configure_sending_limits(mailbox=address, recipients_per_day=used + 1)
    mails = queue_mails(odoo, server_id, address, count=2, subject="over the limit")
    drive_queue(odoo, mails, timeout=120)
    counts = delivery_counts(sandbox, mails.values())
    refused = [mail_id for mail_id, message_id in mails.items() if not counts[message_id]]
    assert len(refused) == 1, counts
    report = wait_for(
        lambda: [m for m in sandbox.messages(address) if m.subject.startswith("Undeliverable")],
        30,
        "Exchange's report in the Inbox",
    )
    assert report
    # Odoo reads it through the Graph incoming server of the mailbox that sent the mail.
    drive(
        odoo,
        FETCH_CRON,
        lambda: mail_states(odoo, refused)[refused[0]]["state"] == "outgoing",
        120,
        "the refused mail to be queued again",
    )
    assert paused_until(odoo, server_id)
    assert delivery_counts(sandbox, [mails[refused[0]]]) == {mails[refused[0]]: 0}
    assert_clean_log(odoo_server, log_mark)
