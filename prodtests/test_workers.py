"""Scenario 3: several workers, and a worker killed in the middle of its work.

- two HTTP workers and the cron worker run the queue of one mailbox at once (two RPC calls
  of ``mail.mail.process_email_queue`` in parallel threads, plus the queue cron);
- the worker sending a mail is SIGKILLed while Graph holds its ``/send`` request (the sandbox
  runs the request after the hold: Microsoft accepted a mail whose sender died);
- the cron worker importing a page of mail is SIGKILLed while Graph holds the page's second
  ``$batch`` of MIME.

After the kill the queue, or the import, runs again until done: every mail delivered once,
every message imported once.
"""

import threading

from harness import (
    FETCH_CRON,
    QUEUE_CRON,
    assert_clean_log,
    deliver_incoming,
    delivery_counts,
    drive_import,
    drive_queue,
    hold_after,
    kill_cron_worker_in_request,
    queue_mails,
    wait_for,
)

# The sandbox holds the request until the test has killed its worker and releases it; this
# is only the bound for a stuck test, not a bet on how fast the kill comes.
HOLD = 600


def test_two_workers_and_the_cron_send_one_queue(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    mails = queue_mails(odoo, server_id, address, count=24, subject="parallel")
    start = threading.Barrier(3)
    errors = []

    def run_queue(client):
        start.wait()
        try:
            # With ids (none): the addon's override of this @api.model method is not one,
            # so an RPC call without ids fails (IndexError in call_kw).
            client.call("mail.mail", "process_email_queue", [])
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=run_queue, args=(odoo.clone(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    start.wait()
    odoo.trigger(QUEUE_CRON)
    for thread in threads:
        thread.join(300)

    states = drive_queue(odoo, mails, timeout=180)
    counts = delivery_counts(sandbox, mails.values())
    assert counts == dict.fromkeys(mails.values(), 1), {k: v for k, v in counts.items() if v != 1}
    assert {row["state"] for row in states.values()} == {"sent"}, states
    assert not errors, errors
    assert_clean_log(odoo_server, log_mark)


def test_worker_killed_while_graph_holds_its_send(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    mails = queue_mails(odoo, server_id, address, count=3, subject="killed sender")
    held = sandbox.inject_fault("timeout", path=r"/messages/[^/]+/send$", seconds=HOLD)

    odoo.trigger(QUEUE_CRON)
    killed = kill_cron_worker_in_request(odoo_server, sandbox, held)
    held.release()
    # Microsoft runs the held request after all: the first mail leaves, its sender is dead.
    wait_for(lambda: any(delivery_counts(sandbox, mails.values()).values()), 60, "the held send")
    wait_for(lambda: odoo_server.cron_worker_pid() not in (None, killed), 60, "a new cron worker")

    drive_queue(odoo, mails, timeout=180)
    counts = delivery_counts(sandbox, mails.values())
    assert counts == dict.fromkeys(mails.values(), 1), counts
    assert_clean_log(odoo_server, log_mark)


def test_worker_killed_in_the_middle_of_an_import_page(
    odoo, odoo_server, sandbox, mailboxes, log_mark
):
    address = mailboxes.new_user("inbox")
    mailboxes.connect_incoming(address)
    delivered = deliver_incoming(sandbox, address, 45, "killed import")
    held = hold_after(sandbox.inject_fault("timeout", path=r"/\$batch$", seconds=HOLD), 1)

    odoo.trigger(FETCH_CRON)
    killed = kill_cron_worker_in_request(odoo_server, sandbox, held)
    held.release()
    wait_for(lambda: odoo_server.cron_worker_pid() not in (None, killed), 60, "a new cron worker")

    counts = drive_import(odoo, delivered, timeout=180)
    assert counts == dict.fromkeys(delivered, 1), {k: v for k, v in counts.items() if v != 1}
    assert_clean_log(odoo_server, log_mark)
