"""Scenario 5: 300 queued mails across a token expiry and bursts of throttling.

Exchange's message rate is off on both sides (it would pace 300 mails over ten minutes; the
pacing has its own tests). Once a third of the mails left, Graph starts answering 401 for the
access token; then come two bursts of 429 with Retry-After. The queue cron is driven until the
queue is empty: every mail delivered exactly once.
"""

from harness import assert_clean_log, delivery_counts, drive_queue, queue_mails

MAILS = 300


def test_300_mails_across_expiry_and_throttling(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("bulk")
    server_id = mailboxes.connect_outgoing(address, microsoft_graph_messages_per_minute=0)
    sandbox.configure_sending_limits(mailbox=address, messages_per_minute=None)
    mails = queue_mails(odoo, server_id, address, count=MAILS, subject="bulk")
    troubles = [
        (MAILS // 3, lambda: sandbox.expire_access_tokens(address)),
        (MAILS // 2, lambda: sandbox.inject_fault("status", status=429, retry_after=2, times=3)),
        (
            2 * MAILS // 3,
            lambda: sandbox.inject_fault("status", status=429, retry_after=1, times=4),
        ),
    ]

    def make_trouble():
        left = sum(delivery_counts(sandbox, mails.values()).values())
        while troubles and left >= troubles[0][0]:
            troubles.pop(0)[1]()

    states = drive_queue(odoo, mails, timeout=480, also=make_trouble)

    assert not troubles, f"{len(troubles)} troubles never happened"
    counts = delivery_counts(sandbox, mails.values())
    wrong = {message_id: count for message_id, count in counts.items() if count != 1}
    assert not wrong, f"{len(wrong)} mails not delivered exactly once: {list(wrong.items())[:10]}"
    assert {row["state"] for row in states.values()} == {"sent"}
    assert_clean_log(odoo_server, log_mark)
