"""Scenario 1: the access token expires between two runs, on both sides.

- Graph answers 401 for a token the addon still thinks valid (``sb.expire_access_tokens``);
- the token is inside the addon's refresh margin (fewer than 300 s left: the sandbox issues
  tokens of 200 s), so the addon refreshes before the request.

Each time the previous send is more than a minute old (``microsoft_graph_last_sent_at`` set two
minutes back over RPC), so the send writes the server's row after a refresh committed on a
cursor of its own: the race that only real transactions show.
"""

from harness import (
    assert_clean_log,
    deliver_incoming,
    delivery_counts,
    drive_import,
    drive_queue,
    queue_mails,
    utc_ago,
)

SHORT_LIFETIME = 200  # seconds: inside the addon's 300 s refresh margin from the start


def graph_401s(sandbox, since):
    return sum(
        1 for entry in sandbox.requests[since:] if entry.status == 401 and "/v1.0/" in entry.path
    )


def token_requests(sandbox, since):
    return sum(1 for entry in sandbox.requests[since:] if entry.path.endswith("/oauth2/v2.0/token"))


def send_after_a_pause(odoo, sandbox, server_id, address, tag):
    odoo.call(
        "ir.mail_server", "write", [server_id], {"microsoft_graph_last_sent_at": utc_ago(120)}
    )
    mails = queue_mails(odoo, server_id, address, count=2, subject=tag)
    states = drive_queue(odoo, mails, timeout=180)
    assert {row["state"] for row in states.values()} == {"sent"}, states
    return mails


def test_send_after_graph_answers_401(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    sent = send_after_a_pause(odoo, sandbox, server_id, address, "before expiry")

    mark = len(sandbox.requests)
    sandbox.expire_access_tokens(address)
    sent |= send_after_a_pause(odoo, sandbox, server_id, address, "after expiry")

    assert graph_401s(sandbox, mark), "Graph never answered 401"
    counts = delivery_counts(sandbox, sent.values())
    assert counts == dict.fromkeys(sent.values(), 1), counts
    assert_clean_log(odoo_server, log_mark)


def test_send_inside_the_refresh_margin(odoo, odoo_server, sandbox, mailboxes, log_mark):
    sandbox.access_token_lifetime = SHORT_LIFETIME
    address = mailboxes.new_user("sender")
    server_id = mailboxes.connect_outgoing(address)
    sent = {}
    mark = len(sandbox.requests)
    for round_ in range(3):  # every send refreshes first
        sent |= send_after_a_pause(odoo, sandbox, server_id, address, f"margin {round_}")

    assert token_requests(sandbox, mark) >= 3, "the addon did not refresh before each run"
    counts = delivery_counts(sandbox, sent.values())
    assert counts == dict.fromkeys(sent.values(), 1), counts
    assert_clean_log(odoo_server, log_mark)


def test_import_after_expiry(odoo, odoo_server, sandbox, mailboxes, log_mark):
    address = mailboxes.new_user("inbox")
    mailboxes.connect_incoming(address)
    delivered = deliver_incoming(sandbox, address, 3, "before expiry")
    drive_import(odoo, delivered, timeout=120)

    mark = len(sandbox.requests)
    sandbox.expire_access_tokens(address)  # Graph answers 401
    delivered += deliver_incoming(sandbox, address, 3, "after a 401")
    drive_import(odoo, delivered, timeout=120)
    assert graph_401s(sandbox, mark), "Graph never answered 401"

    sandbox.access_token_lifetime = SHORT_LIFETIME
    sandbox.expire_access_tokens(address)  # the next refresh gives a token inside the margin
    delivered += deliver_incoming(sandbox, address, 3, "refresh margin 1")
    drive_import(odoo, delivered, timeout=120)
    mark = len(sandbox.requests)
    delivered += deliver_incoming(sandbox, address, 3, "refresh margin 2")
    counts = drive_import(odoo, delivered, timeout=120)
    assert token_requests(sandbox, mark), "the addon did not refresh inside the margin"

    assert counts == dict.fromkeys(delivered, 1), counts
    assert_clean_log(odoo_server, log_mark)
