"""services/sending_limits.py: the budget arithmetic, the forecast (against a brute force and
against the sandbox's own drain), NDR parsing and quota recognition."""

import base64
import datetime
import email
import json
import random
import sys

import pytest
import requests

from sandbox.defaults import ADMIN
from sandbox.exchange_limits import quota_ndr, tenant_ndr
from services import sending_limits
from services.errors import GraphPermanentError, GraphTransientError, error_from_graph_response
from services.sending_limits import (
    DAY,
    MESSAGES_PER_MINUTE,
    RECIPIENTS_PER_DAY,
    RECIPIENTS_PER_MESSAGE,
    Budget,
    Limits,
    count_recipients,
    forecast,
    generated_by_exchange,
    is_quota_refusal,
    parse_quota_ndr,
    too_many_recipients,
)

UTC = datetime.UTC
T0 = 1_800_000_000.0


# limits and single checks ---------------------------------------------------------------------


def test_defaults_are_exchange_onlines():
    limits = Limits()
    assert (limits.recipients_per_day, limits.recipients_per_message) == (10_000, 500)
    assert (limits.messages_per_minute, limits.window, limits.minute) == (30, 86_400, 60)
    scaled = Limits(recipients_per_day=7).scaled(0.01)
    assert (scaled.window, scaled.minute, scaled.recipients_per_day) == (864, 0.6, 7)


def test_count_recipients_counts_each_address_once_per_message():
    assert count_recipients("Bob <bob@x.test>, carol@y.test", "BOB@x.test", ["dan@z.test"]) == 3
    assert count_recipients("bob@x.test", None, "", []) == 1
    assert count_recipients() == 0


def test_too_many_recipients():
    assert not too_many_recipients(500)
    assert too_many_recipients(501)
    assert not too_many_recipients(1_000, Limits(recipients_per_message=1_000))
    # More than a whole day's worth can never go either.
    assert too_many_recipients(8, Limits(recipients_per_day=7))
    assert not too_many_recipients(
        10**6, Limits(recipients_per_message=None, recipients_per_day=None)
    )


# budget -----------------------------------------------------------------------------------------


def test_rolling_window_edges():
    budget = Budget([(T0, 4), (T0 + 100, 3)])
    assert budget.recipients_used(T0 + 100) == 7
    assert budget.recipients_used(T0) == 7  # an entry "from the future" counts already
    assert budget.recipients_used(T0 + DAY - 0.001) == 7
    assert budget.recipients_used(T0 + DAY) == 3  # gone exactly one window later
    assert budget.recipients_used(T0 + 100 + DAY) == 0
    assert budget.recipients_left(T0 + DAY) == 10_000 - 3
    assert budget.messages_last_minute(T0 + 59.9) == 2
    assert budget.messages_last_minute(T0 + 60) == 1
    assert budget.messages_last_minute(T0 + 160) == 0
    assert Budget([(T0, 1)], Limits(recipients_per_day=None)).recipients_left(T0) is None


def test_the_same_address_counts_again_in_every_message():
    limits = Limits(recipients_per_day=3)
    ledger = [(T0 + n, count_recipients("bob@x.test")) for n in range(3)]
    budget = Budget(ledger, limits)
    assert budget.recipients_used(T0 + 10) == 3
    assert budget.can_send(1, T0 + 10) == (False, T0 + DAY)


def test_can_send_and_next_slot_for_the_recipient_rate():
    limits = Limits(recipients_per_day=10)
    budget = Budget([(T0 + 200, 2), (T0, 4), (T0 + 100, 4)], limits)  # any order
    assert budget.can_send(0, T0 + 300) == (True, T0 + 300)
    assert budget.can_send(1, T0 + 300) == (False, T0 + DAY)
    # Five need the two oldest gone: 2 left, 2 + 5 <= 10.
    assert budget.next_slot(5, T0 + 300) == T0 + 100 + DAY
    assert budget.next_slot(10, T0 + 300) == T0 + 200 + DAY
    assert budget.next_slot(11, T0 + 300) is None
    assert budget.can_send(11, T0 + 300) == (False, None)
    assert budget.can_send(501, T0) == (False, None)  # over the 500 per message
    # Later than the earliest slot: now.
    assert budget.next_slot(1, T0 + 2 * DAY) == T0 + 2 * DAY


def test_can_send_for_the_message_rate():
    budget = Budget([(T0 + n, 1) for n in range(30)])
    assert budget.messages_last_minute(T0 + 30) == 30
    assert budget.can_send(1, T0 + 30) == (False, T0 + 60)
    assert budget.can_send(1, T0 + 60) == (True, T0 + 60)
    budget.record(T0 + 60, 1)
    assert budget.next_slot(1, T0 + 60) == T0 + 61
    assert Budget([(T0, 1)] * 30, Limits(messages_per_minute=None)).can_send(1, T0)[0]


def test_both_rates_together_take_the_later():
    limits = Limits(recipients_per_day=5, messages_per_minute=2)
    budget = Budget([(T0, 3), (T0 + 10, 1), (T0 + 20, 1)], limits)
    # Recipients: the first must leave (T0 + DAY); messages: T0 + 10 + 60, earlier.
    assert budget.next_slot(1, T0 + 30) == T0 + DAY
    budget = Budget([(T0 - DAY + 5, 3), (T0 + 10, 1), (T0 + 20, 1)], limits)
    assert budget.next_slot(1, T0 + 30) == T0 + 70


def test_record_keeps_the_ledger_sorted():
    budget = Budget([], Limits(recipients_per_day=4))
    budget.record(T0 + 50, 2)
    budget.record(T0, 2)  # late news of an older send
    assert budget.recipients_used(T0 + 60) == 4
    assert budget.next_slot(1, T0 + 60) == T0 + DAY
    budget.record(T0 + 70, 0)
    assert budget.messages_last_minute(T0 + 75) == 2


def test_times_come_back_in_the_kind_given():
    naive = datetime.datetime(2027, 1, 4, 9, 0)
    aware = naive.replace(tzinfo=UTC)
    limits = Limits(recipients_per_day=1)
    budget = Budget([(naive, 1)], limits)  # naive datetimes are UTC, as Odoo stores them
    assert budget.next_slot(1, naive) == naive + datetime.timedelta(days=1)
    assert budget.next_slot(1, aware) == aware + datetime.timedelta(days=1)
    assert budget.next_slot(1, aware.timestamp()) == aware.timestamp() + DAY
    assert budget.recipients_used(aware + datetime.timedelta(hours=23)) == 1
    with pytest.raises(TypeError):
        budget.next_slot(1, "2027-01-04")


# forecast ---------------------------------------------------------------------------------------


def test_forecast_thirty_a_minute_then_the_rest():
    queue = [(n, 1) for n in range(65)]
    result = forecast(queue, [], Limits(), T0)
    times = [at for _, at in result.slots]
    assert times == [T0] * 30 + [T0 + 60] * 30 + [T0 + 120] * 5
    assert result.empties_at == T0 + 120 and result.refused == ()
    assert result.time_of(64) == T0 + 120


def test_forecast_keeps_the_order_and_skips_what_can_never_go():
    limits = Limits(recipients_per_day=10, recipients_per_message=8)
    queue = [("a", 6), ("b", 9), ("c", 4), ("d", 1), ("e", 0)]
    result = forecast(queue, [(T0 - 100, 1)], limits, T0)
    # a + old = 7; c needs the old one gone (T0 - 100 + DAY); d needs a gone; e goes with d.
    assert result.slots == [
        ("a", T0),
        ("b", None),
        ("c", T0 - 100 + DAY),
        ("d", T0 + DAY),
        ("e", T0 + DAY),
    ]
    assert result.refused == ("b",) and result.empties_at == T0 + DAY
    assert forecast([], [(T0, 3)], limits, T0).empties_at == T0
    naive = datetime.datetime(2027, 1, 4, 9, 0)
    result = forecast([("x", 8), ("y", 3)], [], limits, naive)
    assert result.empties_at == naive + datetime.timedelta(days=1)


def brute_force(queue, ledger, limits, now):
    """The forecast one mail at a time through Budget: O(n log n) each, obviously right."""
    budget, at, out = Budget(ledger, limits), now, []
    for mail_id, count in queue:
        slot = budget.next_slot(count, at)
        out.append((mail_id, slot))
        if slot is not None:
            budget.record(slot, count)
            at = slot
    return out


@pytest.mark.parametrize("seed", range(25))
def test_forecast_agrees_with_a_brute_force(seed):
    rng = random.Random(seed)
    limits = Limits(
        recipients_per_day=rng.choice([None, 20, 50, 200]),
        recipients_per_message=rng.choice([None, 15, 30]),
        messages_per_minute=rng.choice([None, 1, 3, 30]),
        window=rng.choice([DAY, 3_600, 100]),
        minute=rng.choice([60, 7.5]),
    )
    now = T0 + rng.randrange(0, 50_000)
    ledger = [(T0 + rng.uniform(-DAY, 60_000), rng.randrange(0, 12)) for _ in range(60)]
    queue = [(n, rng.choice([0, 1, 1, 1, 2, 5, 13, 40])) for n in range(120)]
    assert forecast(queue, ledger, limits, now).slots == brute_force(queue, ledger, limits, now)


def count_lines(function, *args):
    """(result, line events run inside services/sending_limits.py): operations, not seconds."""
    events = 0
    target = sending_limits.__file__

    def tracer(frame, event, arg):
        nonlocal events
        if frame.f_code.co_filename != target:
            return None
        if event == "line":
            events += 1
        return tracer

    sys.settrace(tracer)
    try:
        result = function(*args)
    finally:
        sys.settrace(None)
    return result, events


def mixed(size, seed=1):
    rng = random.Random(seed)
    return [(n, rng.choice([1, 1, 1, 1, 2, 3, 50, 400])) for n in range(size)]


def test_forecast_of_twelve_thousand_mails_is_linear():
    ledger = [(T0 - DAY + n * 8.6, 1) for n in range(10_000)]
    result, small = count_lines(forecast, mixed(12_000), ledger, Limits(), T0)
    assert len(result.slots) == 12_000 and result.empties_at > T0 + DAY
    # A few dozen Python lines per mail and ledger entry: no rescanning of the window.
    assert small < 40 * (12_000 + 10_000), small
    ledger = [(T0 - DAY + n * 4.3, 1) for n in range(20_000)]
    _, large = count_lines(forecast, mixed(24_000), ledger, Limits(), T0)
    assert large < 2.2 * small, (small, large)


# recognising refusals ---------------------------------------------------------------------------


def graph_response(status, body):
    response = requests.Response()
    response.status_code = status
    response._content = body.encode() if isinstance(body, str) else body
    response.headers["Content-Type"] = "application/json"
    return response


def test_is_quota_refusal_in_graph_errors_and_texts():
    body = {
        "error": {
            "code": "ErrorSubmissionQuotaExceeded",
            "message": "Cannot submit message. 554 5.2.0 STOREDRV.Submission.Exception:"
            "SubmissionQuotaExceededException",
        }
    }
    assert is_quota_refusal(body)
    error = error_from_graph_response(graph_response(403, json.dumps(body)))
    assert isinstance(error, GraphTransientError) and is_quota_refusal(error)
    # Only Microsoft's message says it: still recognised through the scrubbed detail.
    wrapped = {"error": {"code": "ErrorSubmissionFailed", "message": "SubmissionQuotaExceeded"}}
    error = error_from_graph_response(graph_response(400, json.dumps(wrapped)))
    assert isinstance(error, GraphPermanentError) and is_quota_refusal(error)
    assert is_quota_refusal(
        "Remote server returned '554 5.2.0 STOREDRV.Submission.Exception:"
        "SubmissionQuotaExceededException; Failed to process message'"
    )
    assert is_quota_refusal(b"Status: 5.1.90")
    assert is_quota_refusal(ValueError("submissionquotaexceeded"))
    # Not this family: the mailbox storage quota, throttling, the per-message limit, addresses.
    for other in (
        {"error": {"code": "ErrorQuotaExceeded", "message": "The mailbox is full."}},
        {"error": {"code": "ApplicationThrottled", "message": "MailboxConcurrency"}},
        "550 5.5.3 RESOLVER.ADR.RecipLimit; too many recipients",
        "Received: from 10.5.1.90 by host; Status: 5.1.9",
        None,
    ):
        assert not is_quota_refusal(other), other


# NDR parsing ------------------------------------------------------------------------------------


class _Box:
    address = ADMIN
    display_name = "Contoso Admin"


ORIGINAL = (
    b"Message-ID: <1700.42-openerp-7-sale.order@odoo.contoso.test>\r\n"
    b"From: Admin <admin@contoso.test>\r\nTo: bob@example.test\r\n"
    b"Subject: =?utf-8?q?Devis_n=C2=B07?=\r\n\r\nHello\r\n"
)
ORIGINAL_ID = "<1700.42-openerp-7-sale.order@odoo.contoso.test>"


def test_parse_quota_ndr_of_the_sandbox_report():
    ndr = quota_ndr(_Box, ORIGINAL, ["bob@example.test"], T0, 7)
    assert parse_quota_ndr(ndr) == ORIGINAL_ID
    assert parse_quota_ndr(ndr.decode()) == ORIGINAL_ID


def dsn(status_text, returned, head="", human="Delivery has failed."):
    return (
        "From: postmaster@contoso.test\r\nTo: admin@contoso.test\r\n"
        + head
        + "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        '--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        f"--b2\r\nContent-Type: text/plain\r\n\r\n{human}\r\n"
        f"--b2\r\nContent-Type: text/html\r\n\r\n<p>{human}</p>\r\n--b2--\r\n"
        f"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns;x\r\n\r\n"
        f"Final-Recipient: rfc822;bob@example.test\r\nAction: failed\r\n{status_text}\r\n\r\n"
        + returned
        + "--b1--\r\n"
    ).encode()


QUOTA_STATUS = (
    "Status: 5.2.0\r\nDiagnostic-Code: smtp;554 5.2.0 STOREDRV.Submission.Exception:"
    "SubmissionQuotaExceededException; Failed to process message"
)


def test_parse_quota_ndr_reads_a_returned_message_or_the_thread_headers():
    attached = "--b1\r\nContent-Type: message/rfc822\r\n\r\n" + ORIGINAL.decode() + "\r\n"
    assert parse_quota_ndr(dsn(QUOTA_STATUS, attached)) == ORIGINAL_ID
    # No returned part: In-Reply-To, else References.
    assert parse_quota_ndr(dsn(QUOTA_STATUS, "", f"In-Reply-To: {ORIGINAL_ID}\r\n")) == ORIGINAL_ID
    refs = f"References: <root@x> {ORIGINAL_ID}\r\n"
    assert parse_quota_ndr(dsn(QUOTA_STATUS, "", refs)) == "<root@x>"
    # The quota said only by the human-readable part (an Exchange NDR without a status code).
    human = "Your message couldn't be delivered: SubmissionQuotaExceededException."
    headers = f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {ORIGINAL_ID}\r\n"
    assert parse_quota_ndr(dsn("Status: 5.0.0", headers, human=human)) == ORIGINAL_ID
    # An Exchange NDR that is not multipart/report.
    plain = (
        "X-MS-Exchange-Message-Is-Ndr:\r\nIn-Reply-To: " + ORIGINAL_ID + "\r\n"
        "Content-Type: text/plain\r\n\r\nRemote server returned '554 5.2.0 "
        "STOREDRV.Submission.Exception:SubmissionQuotaExceededException'\r\n"
    )
    assert parse_quota_ndr(plain) == ORIGINAL_ID


def test_parse_quota_ndr_ignores_other_mail():
    headers = f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {ORIGINAL_ID}\r\n"
    # Another failure (a bad address): a real bounce, not a quota.
    assert parse_quota_ndr(dsn("Status: 5.1.1\r\nDiagnostic-Code: smtp;550 5.1.1", headers)) is None
    # A quota text inside the returned original (someone forwarding an NDR) does not count.
    quoted = (
        "--b1\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <fwd@x>\r\nSubject: Fw\r\n\r\n"
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException\r\n"
    )
    assert parse_quota_ndr(dsn("Status: 5.1.1", quoted)) is None
    # An ordinary mail that talks about the quota.
    talk = (
        "Message-ID: <talk@x>\r\nIn-Reply-To: <a@x>\r\nContent-Type: text/plain\r\n\r\n"
        "We hit SubmissionQuotaExceededException yesterday.\r\n"
    )
    assert parse_quota_ndr(talk) is None
    assert parse_quota_ndr(b"") is None
    # A quota report with no way to tell which mail it was about.
    assert parse_quota_ndr(dsn(QUOTA_STATUS, "")) is None


def test_base64_human_part_is_decoded():
    human = base64.b64encode(b"Diagnostic: SubmissionQuotaExceededException").decode()
    raw = dsn("Status: 5.0.0", "", f"In-Reply-To: {ORIGINAL_ID}\r\n", human="x").replace(
        b"Content-Type: text/plain\r\n\r\nx",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + human.encode(),
    )
    assert parse_quota_ndr(raw) == ORIGINAL_ID


def test_admit_refuses_past_the_recipient_rate_at_submission():
    limits = Limits(recipients_per_day=10, messages_per_minute=None)
    budget = Budget([(T0, 6), (T0 + 100, 3)], limits)
    assert budget.admit(1, T0 + 200).slot == T0 + 200
    waiting = budget.admit(2, T0 + 200)
    assert (waiting.admitted, waiting.limit) == (False, RECIPIENTS_PER_DAY)
    assert waiting.retry_at == T0 + DAY  # the 6 must leave for 2 more to fit
    assert budget.admit(2, T0 + DAY).admitted


def test_admit_lets_exchange_hold_at_most_hold_seconds():
    limits = Limits(recipients_per_day=None, messages_per_minute=2)
    budget = Budget([(T0, 1), (T0 + 10, 1)], limits)
    assert not budget.admit(1, T0 + 20).admitted
    held = budget.admit(1, T0 + 20, hold=45)
    assert held.slot == T0 + 60  # Exchange releases it a minute after the first
    budget.record(held.slot, 1)
    later = budget.admit(1, T0 + 20, hold=45)  # would leave at T0 + 70
    assert (later.admitted, later.limit, later.retry_at) == (False, MESSAGES_PER_MINUTE, T0 + 25)


def test_admit_never_places_before_the_newest_entry_and_names_the_per_message_limit():
    budget = Budget([(T0 + 30, 1)], Limits())
    assert budget.admit(1, T0, hold=60).slot == T0 + 30
    assert not budget.admit(1, T0, hold=10).admitted
    too_many = budget.admit(501, T0)
    assert (too_many.retry_at, too_many.limit) == (None, RECIPIENTS_PER_MESSAGE)
    assert budget.admit(10_001, T0, hold=60).limit == RECIPIENTS_PER_MESSAGE
    assert Budget([], Limits(recipients_per_message=None)).admit(10_001, T0).limit == (
        RECIPIENTS_PER_DAY
    )


def test_admit_times_come_back_in_the_kind_given():
    now = datetime.datetime(2026, 11, 25, 9, 0)
    budget = Budget([(now, 10_000)], Limits())
    waiting = budget.admit(1, now)
    assert waiting.retry_at == now + datetime.timedelta(days=1)


# the forecast against the sandbox's own drain ---------------------------------------------------

SEND = ("Mail.Send", "User.Read")
RECIPIENTS = [1, 5, 1, 1, 12, 2, 1, 8, 1, 1, 1, 3]
MINUTE_RATE, DAY_RATE = 3, 40


def drain_setup(sandbox):
    sandbox.configure_sending_limits(
        recipients_per_day=DAY_RATE, messages_per_minute=MINUTE_RATE, refusal="error"
    )
    return Limits(recipients_per_day=DAY_RATE, messages_per_minute=MINUTE_RATE)


def send_to(sandbox, session, mail_id, count):
    """sendMail of one message to count recipients; the answer."""
    to = ", ".join(f"p{n}@example.test" for n in range(count))
    raw = f"Message-ID: <{mail_id}@q>\r\nFrom: <{ADMIN}>\r\nTo: {to}\r\nSubject: q\r\n\r\nx\r\n"
    token = sandbox.issue_token(ADMIN, SEND, refresh=False)["access_token"]
    return session.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=base64.b64encode(raw.encode()),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )


def history(sandbox, session):
    """Some mail already sent over the last hours, and the ledger made of the outbox."""
    for n, count in enumerate([6, 1, 9]):
        assert send_to(sandbox, session, f"old{n}", count).status_code == 202
        sandbox.advance(3_600)
    return [(d.time, len(set(d.recipients))) for d in sandbox.outbox()]


def drain_start(sandbox, session):
    """The limits, some history, a queue of mails and its forecast."""
    sandbox.clock.freeze()  # the client's and Exchange's times: only advance() moves them
    limits = drain_setup(sandbox)
    ledger = history(sandbox, session)
    queue = [(n, count) for n, count in enumerate(RECIPIENTS * 3)]
    return limits, ledger, queue, forecast(queue, ledger, limits, sandbox.clock.now())


def test_sending_at_the_forecast_times_is_never_refused_nor_held(sandbox, graph_session):
    limits, ledger, queue, plan = drain_start(sandbox, graph_session)
    budget = Budget(ledger, limits)
    for mail_id, count in queue:
        now = sandbox.clock.now()
        ready, earliest = budget.can_send(count, now)
        if not ready:
            sandbox.advance(earliest - now + 0.001)
        answer = send_to(sandbox, graph_session, mail_id, count)
        assert answer.status_code == 202, answer.text
        budget.record(sandbox.clock.now(), count)
    out = sandbox.outbox()[len(ledger) :]
    assert all(d.delivered_at == d.time for d in out)  # never carried over
    # Each mail left within a minute of its forecast; so did the last one.
    for (mail_id, expected), delivery in zip(plan.slots, out, strict=True):
        assert abs(delivery.delivered_at - expected) < 60, mail_id
    assert abs(out[-1].delivered_at - plan.empties_at) < 60
    assert plan.empties_at - plan.slots[0][1] > 2 * DAY  # the day rate did bind


def test_a_client_that_leaves_the_message_rate_to_exchange_drains_within_a_minute(
    sandbox, graph_session
):
    _limits, ledger, queue, plan = drain_start(sandbox, graph_session)
    # It waits for the recipient rate only and submits in bursts: Exchange holds the excess.
    budget = Budget(ledger, Limits(recipients_per_day=DAY_RATE, messages_per_minute=None))
    for mail_id, count in queue:
        now = sandbox.clock.now()
        ready, earliest = budget.can_send(count, now)
        if not ready:
            sandbox.advance(earliest - now + 0.001)
        assert send_to(sandbox, graph_session, mail_id, count).status_code == 202
        budget.record(sandbox.clock.now(), count)
    out = sandbox.outbox()[len(ledger) :]
    assert any(d.delivered_at > d.time + 59 for d in out)  # some were carried over
    drained = max(d.delivered_at for d in out)
    assert abs(drained - plan.empties_at) < 60, drained - plan.empties_at


def test_a_client_admitting_with_a_minute_of_hold_is_never_refused(sandbox, graph_session):
    limits, ledger, queue, plan = drain_start(sandbox, graph_session)
    budget = Budget(ledger, limits)
    for mail_id, count in queue:
        admission = budget.admit(count, sandbox.clock.now(), hold=limits.minute)
        if not admission.admitted:
            sandbox.advance(admission.retry_at - sandbox.clock.now() + 0.001)
            admission = budget.admit(count, sandbox.clock.now(), hold=limits.minute)
        assert send_to(sandbox, graph_session, mail_id, count).status_code == 202
        # Exchange counts it from its acceptance, a moment after the admission.
        budget.record(max(admission.slot, sandbox.clock.now()), count)
    out = sandbox.outbox()[len(ledger) :]
    assert all(d.delivered_at <= d.time + 60 for d in out)  # held a minute at most
    drained = max(d.delivered_at for d in out)
    assert abs(drained - plan.empties_at) < 60, drained - plan.empties_at


def test_a_report_generated_by_exchange_carries_its_marks():
    """The sandbox's report (generated inside the organization) has them; the same report
    without AuthAs Internal, or from another sender, does not."""
    ndr = email.message_from_bytes(quota_ndr(_Box, ORIGINAL, ["bob@example.test"], T0, 7))
    assert generated_by_exchange(ndr)
    del ndr["X-MS-Exchange-Organization-AuthAs"]
    assert not generated_by_exchange(ndr)
    forged = email.message_from_bytes(dsn(QUOTA_STATUS, ""))
    forged["X-MS-Exchange-Organization-AuthAs"] = "Internal"
    assert generated_by_exchange(forged)  # postmaster: the header is what outsiders lose
    forged.replace_header("From", "Exchange <postmaster.fake@attacker.test>")
    assert not generated_by_exchange(forged)


# the tenant's external recipient rate (TERRL) ---------------------------------------------------
# Exchange Team blog, "Introducing Exchange Online Tenant Outbound Email Limits" (Feb 24 2025):
# 500 x (purchased email licences ^ 0.7) + 9,500 external recipients in a sliding 24 hours,
# trial tenants 5,000; Microsoft's examples: 1 licence 10,000, 100 about 22,059, 1,000 72,446.
# NDR table ("Email non-delivery report (NDR) and SMTP errors in Exchange Online"): 5.7.232
# (trial tenant) and 5.7.233 "... your tenant exceeded its daily limit for sending email to
# external recipients (tenant external recipient rate limit)".


def test_tenant_limit_follows_microsofts_formula_and_examples():
    assert sending_limits.tenant_external_limit(1) == 10_000
    assert sending_limits.tenant_external_limit(100) == 22_059
    assert sending_limits.tenant_external_limit(1_000) == 72_446
    # Microsoft's 10,000-licence example says 324,979 (rounded); Odoo stays one below.
    assert sending_limits.tenant_external_limit(10_000) == 324_978
    assert sending_limits.tenant_external_limit(500, trial=True) == 5_000
    # No licence known: one (the formula's floor).
    assert sending_limits.tenant_external_limit(0) == 10_000


def test_external_recipients_are_those_outside_the_accepted_domains():
    accepted = sending_limits.accepted_domains(["Contoso.test", " fabrikam.test ", "*.corp.test"])
    count = sending_limits.count_external
    assert count(accepted, "a@contoso.test, b@CONTOSO.TEST", "x@gmail.test") == 1
    # A subdomain is external unless accepted itself or through a wildcard entry.
    assert count(accepted, "a@eu.contoso.test", "b@eu.corp.test", "c@corp.test") == 2
    # Each distinct address once per message, as the recipient rate counts.
    assert count(accepted, "x@gmail.test", "X@Gmail.test", ["y@gmail.test"]) == 2
    assert count(accepted) == 0


def test_room_at_is_when_the_rolling_day_has_room():
    limits = Limits(recipients_per_day=10, recipients_per_message=None, messages_per_minute=None)
    budget = Budget([(T0, 6), (T0 + 100, 4)], limits)
    assert budget.room_at(0, T0 + 200) == T0 + 200
    assert budget.room_at(1, T0 + 200) == T0 + DAY
    assert budget.room_at(6, T0 + 200) == T0 + DAY
    assert budget.room_at(7, T0 + 200) == T0 + DAY + 100
    assert budget.room_at(11, T0 + 200) is None
    # Room at once, even before a newer (held) entry of another mailbox.
    assert Budget([(T0 + 50, 2)], limits).room_at(3, T0) == T0


def test_tenant_ndr_is_recognised_with_its_code():
    box = _Box()
    raw = sending_limits_sandbox_tenant_ndr(box)
    assert parse_quota_ndr(raw) == "<terrl-1@contoso.test>"
    assert sending_limits.quota_ndr_limit(raw) == sending_limits.TENANT_EXTERNAL
    assert sending_limits.is_tenant_refusal("550 5.7.233 tenant external recipient rate limit")
    assert sending_limits.is_tenant_refusal("550 5.7.232 trial tenant")
    assert not sending_limits.is_tenant_refusal("550 5.7.2330 something")
    assert not is_quota_refusal("550 5.7.233 tenant external recipient rate limit")
    mailbox_raw = quota_ndr(box, b"Message-ID: <m@contoso.test>\r\n\r\nx", ["a@b.test"], T0, 7)
    assert sending_limits.quota_ndr_limit(mailbox_raw) == RECIPIENTS_PER_DAY
    assert sending_limits.quota_ndr_limit(b"Subject: hello\r\n\r\n5.7.233") is None


def sending_limits_sandbox_tenant_ndr(box):
    original = b"Message-ID: <terrl-1@contoso.test>\r\nSubject: Offer\r\n\r\nbody"
    return tenant_ndr(box, original, ["x@gmail.test"], T0, 11, trial=False)


def test_forecast_shared_waits_for_the_tenant_and_keeps_each_mailbox_pace():
    box = Limits(recipients_per_day=100, recipients_per_message=None, messages_per_minute=None)
    tenant = Limits(recipients_per_day=3, recipients_per_message=None, messages_per_minute=None)
    queue = [(1, "a", 1, 1), (2, "b", 1, 1), (3, "b", 1, 0), (4, "a", 2, 2), (5, "b", 1, 1)]
    plan = sending_limits.forecast_shared(
        queue, {"a": [], "b": []}, {"a": box, "b": box}, [(T0 - 100, 1)], tenant, T0
    )
    assert plan.time_of(1) == T0 and plan.time_of(2) == T0 and plan.time_of(3) == T0
    # Mail 4 needs 2 external: the ledger's entry and mail 1 must leave the window.
    assert plan.time_of(4) == T0 + DAY
    # Mail 5 waits for the tenant too (mail 2 leaves at T0 + DAY).
    assert plan.time_of(5) == T0 + DAY
    assert plan.empties_at == T0 + DAY
    assert plan.empties_by_key == {"a": T0 + DAY, "b": T0 + DAY}
    # Without the tenant's limit, each mailbox alone.
    free = Limits(recipients_per_day=None, recipients_per_message=None, messages_per_minute=None)
    plan = sending_limits.forecast_shared(
        queue, {"a": [], "b": []}, {"a": box, "b": box}, [], free, T0
    )
    assert {at for _, at in plan.slots} == {T0}


@pytest.mark.parametrize("seed", range(20))
def test_forecast_shared_never_goes_past_either_limit(seed):
    rng = random.Random(seed)
    box = Limits(
        recipients_per_day=rng.randint(3, 12),
        recipients_per_message=None,
        messages_per_minute=rng.choice([None, 2, 3]),
        window=1000,
        minute=10,
    )
    tenant = Limits(
        recipients_per_day=rng.randint(4, 15),
        recipients_per_message=None,
        messages_per_minute=None,
        window=1000,
    )
    keys = ["a", "b", "c"]
    queue = []
    for mail_id in range(rng.randint(1, 40)):
        count = rng.randint(1, 3)
        queue.append((mail_id, rng.choice(keys), count, rng.randint(0, count)))
    tenant_ledger = [(T0 - rng.randint(0, 999), rng.randint(0, 1)) for _ in range(3)]
    ledgers = {key: [] for key in keys}
    plan = sending_limits.forecast_shared(
        queue, ledgers, dict.fromkeys(keys, box), tenant_ledger, tenant, T0
    )
    sends = {key: [] for key in keys}
    external = list(tenant_ledger)
    for mail_id, key, count, ext in queue:
        at = plan.time_of(mail_id)
        if at is None:
            continue
        assert at >= T0
        sends[key].append((at, count))
        external.append((at, ext))
    for entries in sends.values():
        for start, _ in entries:
            assert sum(c for t, c in entries if start <= t < start + 1000) <= box.recipients_per_day
            if box.messages_per_minute:
                assert (
                    sum(1 for t, _ in entries if start <= t < start + 10) <= box.messages_per_minute
                )
    for start, _ in external:
        assert sum(c for t, c in external if start <= t < start + 1000) <= tenant.recipients_per_day


# admission with the tenant, rounding, back-off (the ledger model's arithmetic) -----------------


def test_admit_with_tenant_checks_the_mailbox_then_the_tenant():
    box = Limits(recipients_per_day=10, messages_per_minute=None)
    tenant = Limits(recipients_per_day=5, recipients_per_message=None, messages_per_minute=None)
    budget = Budget([], box)
    shared = Budget([(T0 - 100, 4)], tenant)
    # Internal recipients never meet the tenant's limit.
    assert sending_limits.admit_with_tenant(budget, shared, 3, 0, T0).admitted
    held = sending_limits.admit_with_tenant(budget, shared, 3, 2, T0)
    assert (held.slot, held.retry_at, held.limit) == (
        None,
        T0 - 100 + DAY,
        "tenant_external_recipients",
    )
    never = sending_limits.admit_with_tenant(budget, shared, 6, 6, T0)
    assert (never.retry_at, never.limit) == (None, "tenant_external_recipients")
    paused = sending_limits.admit_with_tenant(budget, shared, 1, 1, T0, tenant_paused_until=T0 + 60)
    assert (paused.retry_at, paused.limit) == (T0 + 60, "tenant_external_recipients")
    # The mailbox's own limits are asked first: too many for it, whatever the tenant.
    refused = sending_limits.admit_with_tenant(budget, shared, 11, 0, T0)
    assert (refused.retry_at, refused.limit) == (None, RECIPIENTS_PER_DAY)


def test_round_up_to_the_limits_minute_never_before_the_moment():
    moment = datetime.datetime(2026, 1, 1, 10, 0, 1, 500_000)
    assert sending_limits.round_up(moment, 60) == datetime.datetime(2026, 1, 1, 10, 1)
    exact = datetime.datetime(2026, 1, 1, 10, 1)
    assert sending_limits.round_up(exact, 60) == exact
    # A time-scaled minute of less than a second rounds to the next whole second.
    assert sending_limits.round_up(moment, 0.06) == datetime.datetime(2026, 1, 1, 10, 0, 2)


def test_quota_backoff_doubles_up_to_its_cap():
    waits = [sending_limits.next_backoff(0)]
    for _ in range(4):
        waits.append(sending_limits.next_backoff(waits[-1]))
    assert waits == [30, 60, 120, 240, 240]


@pytest.mark.parametrize(
    "value",
    [
        "customer1@example.com",
        "First.Last+tag@Mail.Example.co.uk",
        "Bob <bob@example.com>, carol@example.org",
        '"Doe, Jane" <jane@example.com>',
        "a..b@example.com",
        ".a@example.com",
        "undisclosed-recipients:;",
        "bob@localhost",
        "bob@example.com (Bob)",
    ],
)
def test_addresses_are_those_email_utils_parses(value):
    """The shortcut for bare addresses (the forecast reads thousands) changes no count."""
    parsed = {a.lower() for _, a in email.utils.getaddresses([value]) if a}
    assert set(sending_limits._addresses(value)) == parsed
    assert count_recipients(value, value.upper()) == len(parsed)


def test_mass_mail_is_a_mailings_or_says_its_precedence():
    assert sending_limits.is_bulk(None, from_mailing=True)
    assert sending_limits.is_bulk("{'Precedence': ' Bulk '}")
    assert sending_limits.is_bulk("{'Precedence': 'list', 'X-Other': '1'}")
    assert not sending_limits.is_bulk("{'Precedence': 'first-class'}")
    assert not sending_limits.is_bulk("not a dict {")
    assert not sending_limits.is_bulk("['Precedence', 'bulk']")
    assert not sending_limits.is_bulk(False)


def test_each_message_of_a_mail_and_its_external_recipients():
    domains = sending_limits.accepted_domains(["contoso.test"])
    to, cc = "a@example.com, b@contoso.test", "A@example.com"
    partners = ["p@example.com", False, "q@contoso.test"]
    assert sending_limits.message_recipients(to, cc, partners) == [2, 1, 1, 1]
    assert sending_limits.message_external(domains, to, cc, partners) == [1, 1, 0, 0]
    # A mail with no address at all is still one message to one recipient, internal.
    assert sending_limits.message_recipients(False, False, []) == [1]
    assert sending_limits.message_external(domains, False, False, []) == [0]
