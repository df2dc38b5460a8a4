"""The harness itself: a mailbox connected from outside, one mail queued, delivered once; a
message that arrives right after the connection, imported once."""

from harness import (
    QUEUE_CRON,
    assert_clean_log,
    deliver_incoming,
    delivery_counts,
    drive_import,
    drive_queue,
    queue_mails,
)


def test_connect_and_send_one_mail(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    mails = queue_mails(odoo, server_id, address, count=1)

    states = drive_queue(odoo, mails, timeout=120)

    assert {row["state"] for row in states.values()} == {"sent"}, states
    assert delivery_counts(sandbox, mails.values()) == dict.fromkeys(mails.values(), 1)
    assert odoo.cron_idle(QUEUE_CRON)
    assert_clean_log(odoo_server, log_mark)


def test_mail_arriving_before_the_first_fetchmail_run(
    odoo, odoo_server, sandbox, mailboxes, log_mark
):
    """Mail that arrives after the connection is new mail, even before the first run."""
    address = mailboxes.new_user("inbox")
    mailboxes.connect_incoming(address, settle=False)
    delivered = deliver_incoming(sandbox, address, 2, "right after connecting")

    counts = drive_import(odoo, delivered, timeout=120)

    assert counts == dict.fromkeys(delivered, 1), counts
    assert_clean_log(odoo_server, log_mark)
