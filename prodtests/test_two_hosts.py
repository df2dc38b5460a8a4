"""Issue 17: two Odoo hosts on one database.

A second ``odoo-bin`` (its own HTTP workers and cron worker) runs on the suite's database,
standing in for a second host. Both hosts' queue and fetchmail crons are woken again and again
while several mailboxes send and receive, with the sandbox answering slowly so that any overlap
would show. The sandbox counts the requests in flight per mailbox: no mailbox is ever served by
two workers at once. Every mail leaves once, every message is imported once, and neither log has
a traceback, a serialization failure or a deadlock.
"""

import collections
import threading

import pytest
from harness import (
    FETCH_CRON,
    QUEUE_CRON,
    VAR,
    Odoo,
    OdooServer,
    assert_clean_log,
    deliver_incoming,
    delivery_counts,
    imports,
    mail_states,
    queue_mails,
    wait_for,
)

SENDERS = 4
MAILS_EACH = 6
RECEIVERS = 2
MESSAGES_EACH = 8


class SecondHost(OdooServer):
    """odoo-bin on the database of another OdooServer, with a log of its own."""

    def __init__(self, first):
        super().__init__(first.src, first.python, first.database)
        self.addons_path = first.addons_path
        self.log_path = VAR / f"{first.database}-host2.log"


@pytest.fixture
def second_host(odoo_server):
    """Not started: the test starts it once its mailboxes are connected (the connect
    helpers wait for a cron run in the first host's log)."""
    host = SecondHost(odoo_server)
    host.trigger_action = odoo_server.trigger_action
    yield host
    host.stop()


@pytest.fixture
def peaks(sandbox):
    """{sandbox mailbox id: most Graph requests in flight at once} while the test runs."""
    limits = sandbox.limits
    original = limits.enter
    seen = collections.Counter()
    lock = threading.Lock()

    def enter(app_id, mailbox_id):
        leave = original(app_id, mailbox_id)
        if leave is not None and mailbox_id:
            with lock:
                seen[mailbox_id] = max(seen[mailbox_id], limits.in_flight(app_id, mailbox_id))
        return leave

    limits.enter = enter
    yield seen
    limits.enter = original


def race(clients, incoming_ids, refused_fetches):
    """Both hosts' HTTP workers run the queue and fetch every mailbox at once (as two
    admins pressing the buttons while the cron workers run), twice each."""
    calls = [
        (clients[0], "mail.mail", "process_email_queue", ([],)),
        (clients[1], "mail.mail", "process_email_queue", ([],)),
        *(
            (clients[2 + n % 2], "fetchmail.server", "fetch_mail", ([server_id],))
            for n, server_id in enumerate(incoming_ids * 2)
        ),
    ]
    errors = []

    def run(client, model, method, args):
        try:
            client.call(model, method, *args)
        except Exception as exc:  # reported below
            if "an import is running" in str(exc):
                # Fetch Now while another worker imports that mailbox: refused, as meant.
                refused_fetches.append(method)
            else:
                errors.append(f"{model}.{method}: {exc}")

    threads = [threading.Thread(target=run, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors


def test_two_hosts_on_one_database(
    odoo, odoo_server, second_host, sandbox, mailboxes, log_mark, peaks
):
    senders = [mailboxes.new_user(f"send{n}") for n in range(SENDERS)]
    receivers = [mailboxes.new_user(f"recv{n}") for n in range(RECEIVERS)]
    servers = {address: mailboxes.connect_outgoing(address) for address in senders}
    for address in receivers:
        mailboxes.connect_incoming(address)
    second_host.start()
    other = Odoo(second_host).login()
    other_mark = 0
    # A network round trip on every answer: overlapping requests would be seen in flight.
    sandbox.configure_limits(latency=0.15)
    mails = {}
    for address, server_id in servers.items():
        mails.update(queue_mails(odoo, server_id, address, count=MAILS_EACH, subject="two hosts"))
    incoming = []
    for address in receivers:
        incoming += deliver_incoming(sandbox, address, MESSAGES_EACH, f"two hosts {address}")

    clients = [odoo.clone(), other, odoo.clone(), other.clone()]
    refused_fetches = []

    def done():
        states = mail_states(odoo, mails)
        sent = all(row["state"] == "sent" for row in states.values())
        imported = all(imports(odoo, incoming).values())
        if not sent or not imported:
            for host in (odoo, other):
                host.nudge(QUEUE_CRON, every=1.0)
                host.nudge(FETCH_CRON, every=1.0)
            race(clients, list(mailboxes.incoming), refused_fetches)
        return sent and imported

    wait_for(done, 300, "every mail sent and every message imported by the two hosts", step=0.5)
    sandbox.configure_limits(latency=0.0)

    assert set(delivery_counts(sandbox, mails.values()).values()) == {1}
    assert set(imports(odoo, incoming).values()) == {1}
    boxes = {sandbox.mailbox(address).id: address for address in senders + receivers}
    served = {boxes[box]: peak for box, peak in peaks.items() if box in boxes}
    assert set(served) == set(boxes.values()), served
    assert set(served.values()) == {1}, served
    # Both hosts took part: each log has Graph sends or imports of this test.
    for host, mark in ((odoo_server, log_mark), (second_host, other_mark)):
        log = host.log_since(mark)
        assert "[Graph API] mail" in log or "[Incoming Mail]" in log, host.log_path
    assert_clean_log(odoo_server, log_mark)
    assert_clean_log(second_host, other_mark)
