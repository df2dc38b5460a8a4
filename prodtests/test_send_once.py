"""The harness itself: a mailbox connected from outside, one mail queued, delivered once."""

from harness import QUEUE_CRON, assert_clean_log, delivery_counts, drive_queue, queue_mails


def test_connect_and_send_one_mail(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    mails = queue_mails(odoo, server_id, address, count=1)

    states = drive_queue(odoo, mails, timeout=120)

    assert {row["state"] for row in states.values()} == {"sent"}, states
    assert delivery_counts(sandbox, mails.values()) == dict.fromkeys(mails.values(), 1)
    assert odoo.cron_idle(QUEUE_CRON)
    assert_clean_log(odoo_server, log_mark)
