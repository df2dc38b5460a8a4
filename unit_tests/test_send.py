"""GraphSender against the sandbox: what reaches Sent Items and the outbox, and how often."""

import email
import email.policy
import json
import os
import random
import subprocess
import sys
from email.message import EmailMessage

import pytest

from sandbox.defaults import ADMIN, ALICE, SALES
from services.endpoints import Endpoints
from services.errors import GraphPermanentError, GraphTransientError
from services.graph import GraphClient
from services.send import (
    SEND_SETTLE_SECONDS,
    UPLOAD_CHUNK,
    GraphAmbiguousSendError,
    GraphSender,
    SentMessage,
)

MB = 1024 * 1024
SCOPES = ("User.Read", "Mail.ReadWrite", "Mail.Send", "Mail.ReadWrite.Shared", "Mail.Send.Shared")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# urllib3 logs request lines at DEBUG and an upload URL carries its credential in the query:
# services/redact.py does not know the "authtoken" key yet.
UPLOAD_URL_LOGGED = pytest.mark.unguarded_loggers("urllib3")


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def odoo_mail(*args, **kwargs):
    """The flattened bytes of odoo_message(...)."""
    return odoo_message(*args, **kwargs).as_bytes()


def odoo_message(
    sender=ADMIN, attachments=(), message_id="<1.odoo.mail@contoso.test>", subject="Quote"
):
    """A message object shaped as Odoo's ir.mail_server.build_email makes it."""
    mail = EmailMessage(policy=email.policy.SMTP)
    if message_id:
        mail["Message-Id"] = message_id
    mail["References"] = "<root@contoso.test> <parent@example.test>"
    mail["In-Reply-To"] = "<parent@example.test>"
    mail["Reply-To"] = "Sales <catchall@contoso.test>"
    mail["Return-Path"] = "<bounce+42@contoso.test>"
    mail["Subject"] = subject
    mail["From"] = f"Someone <{sender}>"
    mail["To"] = "Bob <bob@example.test>"
    mail["Cc"] = "carol@example.test"
    mail["Bcc"] = "hidden@example.test"
    mail["X-Odoo-Objects"] = "sale.order-7"
    mail["X-Custom"] = "kept"
    mail.set_content("Hello Bob")
    mail.add_alternative("<p>Hello <b>Bob</b></p>", subtype="html")
    for name, data in attachments:
        mail.add_attachment(data, "application", "octet-stream", filename=name)
    return mail


def blob(size, seed=0):
    return random.Random(seed).randbytes(size)


@pytest.fixture
def make_sender(sandbox):
    sessions = []

    def make(login=ADMIN, scopes=SCOPES, graph_base=None, **options):
        endpoints = Endpoints.for_cloud(
            "custom", sandbox.base_url, graph_base or sandbox.base_url, sandbox.ca_file
        )
        session = endpoints.session()
        sessions.append(session)
        token = sandbox.issue_token(login, scopes, refresh=False)["access_token"]
        client = GraphClient(endpoints, session, lambda force_refresh=False: token, sleep=Sleeps())
        return GraphSender(client, **options)

    yield make
    for session in sessions:
        session.close()


def chunks_of(sender):
    """(start, end, total, body length) of each upload PUT, as the client sent them."""
    seen = []

    def record(response, *args, **kwargs):
        request = response.request
        if request.method == "PUT":
            span, _, total = request.headers["Content-Range"].removeprefix("bytes ").partition("/")
            start, _, end = span.partition("-")
            seen.append((int(start), int(end), int(total), len(request.body)))

    sender.client.session.hooks["response"].append(record)
    return seen


def draft_bodies(sender):
    """Sizes of the draft MIME bodies (base64) the client posted."""
    seen = []

    def record(response, *args, **kwargs):
        request = response.request
        if request.method == "POST" and request.path_url.endswith("/messages"):
            seen.append(len(request.body))

    sender.client.session.hooks["response"].append(record)
    return seen


def graph_calls(sandbox):
    return [(e.method, e.path.rsplit("/", 1)[-1], e.status) for e in sandbox.requests]


def assert_same_mail(stored_raw, raw):
    stored = email.message_from_bytes(stored_raw, policy=email.policy.default)
    original = email.message_from_bytes(raw, policy=email.policy.default)
    for name in ("Message-Id", "References", "In-Reply-To", "Reply-To", "Return-Path", "Subject"):
        assert stored[name] == original[name], name
    assert stored["X-Odoo-Objects"] == "sale.order-7" and stored["X-Custom"] == "kept"
    assert stored["Bcc"] == "hidden@example.test"  # kept in Sent Items only
    want = [(a.get_filename(), a.get_content()) for a in original.iter_attachments()]
    got = [(a.get_filename(), a.get_content()) for a in stored.iter_attachments()]
    assert sorted(got) == sorted(want)
    assert stored.get_body(("plain",)).get_content().strip() == "Hello Bob"


# the normal paths ----------------------------------------------------------------------


def test_draft_then_send_keeps_headers_and_names_the_sent_copy(sandbox, make_sender, caplog):
    raw = odoo_mail(attachments=[("quote.pdf", blob(200_000))])
    result = make_sender().send(raw)
    (copy,) = sandbox.sent(ADMIN)
    assert result == SentMessage(copy.id, "<1.odoo.mail@contoso.test>", 2, None)
    assert_same_mail(copy.raw, raw)
    assert graph_calls(sandbox) == [("POST", "messages", 201), ("POST", "send", 202)]
    (left,) = sandbox.outbox()
    assert b"hidden@" not in left.raw and "hidden@example.test" in left.recipients
    lines = [r.getMessage() for r in caplog.records if r.name == "services.send"]
    assert lines == [f"[Graph API] sent <1.odoo.mail@contoso.test> from me as {copy.id}"]


def test_send_mail_in_one_request_without_an_id(sandbox, make_sender):
    raw = odoo_mail(attachments=[("a.bin", blob(1000))])
    result = make_sender(save_to_sent_items=False).send(raw)
    assert result == SentMessage(None, "<1.odoo.mail@contoso.test>", 1, None)
    assert graph_calls(sandbox) == [("POST", "sendMail", 202)]
    (left,) = sandbox.outbox()
    assert left.internet_message_id == "<1.odoo.mail@contoso.test>"


def test_a_message_without_message_id_gets_one(sandbox, make_sender):
    raw = odoo_mail(message_id=None)
    assert b"Message-Id" not in raw
    result = make_sender().send(raw)
    assert result.internet_message_id.endswith("@contoso.test>")
    assert sandbox.sent(ADMIN)[0].internet_message_id == result.internet_message_id


@UPLOAD_URL_LOGGED
@pytest.mark.parametrize("megabytes", [10, 30])
def test_large_mail_goes_through_upload_sessions(sandbox, make_sender, megabytes):
    # base64 in 76-character lines makes a MIME part about 1.368 times the file.
    big = blob(int(megabytes * MB / 1.368) - MB, seed=megabytes)
    raw = odoo_mail(
        attachments=[("big.bin", big), ("small.txt", b"small one"), ("mid.bin", blob(MB))]
    )
    assert megabytes * MB * 0.97 < len(raw) < megabytes * MB * 1.03
    sender = make_sender()
    seen = chunks_of(sender)
    result = sender.send(raw)
    (copy,) = sandbox.sent(ADMIN)
    assert result.id == copy.id
    assert_same_mail(copy.raw, raw)
    # In order, contiguous, none over 4 MiB, all but the last exactly 4 MiB.
    assert [s for s, *_ in seen] == list(range(0, len(big), UPLOAD_CHUNK))
    assert all(end - start + 1 == size <= UPLOAD_CHUNK for start, end, _, size in seen)
    assert {total for *_, total, _ in seen} == {len(big)} and seen[-1][1] == len(big) - 1
    puts = [status for method, _, status in graph_calls(sandbox) if method == "PUT"]
    assert puts == [200] * (len(seen) - 1) + [201]
    assert result.requests == 2 + 1 + len(seen)
    assert len(sandbox.outbox()) == 1


def test_a_small_message_object_is_sent_whole_as_bytes_are(sandbox, make_sender):
    message = odoo_message(attachments=[("quote.pdf", blob(200_000))])
    sender = make_sender()
    drafts = draft_bodies(sender)
    result = sender.send(message)
    assert_same_mail(sandbox.sent(ADMIN)[0].raw, message.as_bytes())
    assert graph_calls(sandbox) == [("POST", "messages", 201), ("POST", "send", 202)]
    assert result.requests == 2 and drafts[0] > 200_000 * 4 // 3


@UPLOAD_URL_LOGGED
@pytest.mark.parametrize("megabytes", [10, 30])
def test_large_message_object_keeps_its_big_attachments_out_of_the_draft(
    sandbox, make_sender, megabytes
):
    big = blob(int(megabytes * MB / 1.368) - MB, seed=megabytes)
    parts = [("big.bin", big), ("small.txt", b"small one"), ("mid.bin", blob(MB))]
    message = odoo_message(attachments=parts)
    before = message.as_bytes()
    sender = make_sender()
    seen, drafts = chunks_of(sender), draft_bodies(sender)
    result = sender.send(message)
    (copy,) = sandbox.sent(ADMIN)
    assert result.id == copy.id
    assert_same_mail(copy.raw, before)
    # The draft carries the text and the small attachments only: big.bin never was in it.
    assert len(drafts) == 1 and drafts[0] < 2 * MB
    assert [s for s, *_ in seen] == list(range(0, len(big), UPLOAD_CHUNK))
    assert all(end - start + 1 == size <= UPLOAD_CHUNK for start, end, _, size in seen)
    assert {total for *_, total, _ in seen} == {len(big)}
    assert result.requests == 2 + 1 + len(seen)
    # Odoo's message is left as it was given.
    assert [p.get_filename() for p in message.iter_attachments()] == [n for n, _ in parts]
    assert len(sandbox.outbox()) == 1


@UPLOAD_URL_LOGGED
def test_message_object_with_big_and_cut_attachments(sandbox, make_sender):
    """Some attachments left out of the flattening, some cut from the flattened draft."""
    parts = [("cut.bin", blob(int(2.5 * MB))), ("kept.bin", blob(MB, seed=1))]
    message = odoo_message(attachments=[*parts, ("big.bin", blob(4 * MB, seed=9))])
    result = make_sender().send(message)
    assert_same_mail(sandbox.sent(ADMIN)[0].raw, message.as_bytes())
    calls = [c[:2] for c in graph_calls(sandbox)]
    assert calls.count(("POST", "attachments")) == 1
    assert calls.count(("POST", "createUploadSession")) == 1
    assert result.requests == len(calls)


def test_message_object_over_35_mb_is_refused_before_any_request(sandbox, make_sender):
    with pytest.raises(GraphPermanentError) as caught:
        make_sender().send(odoo_message(attachments=[("huge.bin", blob(27 * MB))]))
    assert "35 MB" in caught.value.user_message
    assert sandbox.requests == []


def test_attachments_under_3_mb_that_do_not_fit_are_posted(sandbox, make_sender):
    parts = [(f"part{n}.bin", blob(int(2.5 * MB), seed=n)) for n in range(3)]
    raw = odoo_mail(attachments=parts)
    result = make_sender().send(raw)
    assert_same_mail(sandbox.sent(ADMIN)[0].raw, raw)
    posted = [c for c in graph_calls(sandbox) if c[1] == "attachments"]
    assert posted == [("POST", "attachments", 201)] * 3
    assert result.requests == 5


def test_over_35_mb_is_refused_before_any_request(sandbox, make_sender):
    raw = odoo_mail(attachments=[("huge.bin", blob(27 * MB))])
    assert len(raw) > 35 * MB
    with pytest.raises(GraphPermanentError) as caught:
        make_sender().send(raw)
    assert "35 MB" in caught.value.user_message
    assert sandbox.requests == []


# shared mailboxes ----------------------------------------------------------------------


def test_send_as_a_shared_mailbox_keeps_the_copy_there(sandbox, make_sender):
    raw = odoo_mail(SALES)
    result = make_sender().send(raw, from_address=SALES)
    (copy,) = sandbox.sent(SALES)
    assert (result.id, result.mailbox) == (copy.id, SALES)
    (left,) = sandbox.outbox()
    assert (left.from_, left.sender) == (SALES, SALES)
    assert sandbox.requests[0].path == f"/v1.0/users/{SALES}/messages"


def test_send_on_behalf_names_the_user_as_sender(sandbox, make_sender):
    sandbox.grant(SALES, ALICE, "FullAccess")
    sandbox.grant(SALES, ALICE, "SendOnBehalf")
    make_sender(login=ALICE).send(odoo_mail(SALES), from_address=SALES)
    (left,) = sandbox.outbox()
    assert (left.from_, left.sender) == (SALES, ALICE)
    assert sandbox.sent(SALES)[0].sender == ALICE


def test_send_as_without_full_access_drafts_in_the_own_mailbox(sandbox, make_sender):
    sandbox.grant(SALES, ALICE, "SendAs")
    result = make_sender(login=ALICE).send(odoo_mail(SALES), from_address=SALES)
    assert result.mailbox is None and sandbox.sent(ALICE)[0].id == result.id
    assert sandbox.outbox()[0].from_ == SALES


# Send As without Full Access: "Send Outlook messages from another user", Sent Items
# behavior (https://learn.microsoft.com/graph/outlook-send-mail-from-other-user): the
# /users/{shared}/... routes need Full Access too; /me with from = the shared address does not.


def test_send_as_only_small_mail_through_me_in_one_request(sandbox, make_sender):
    sandbox.grant(SALES, ALICE, "SendAs")
    sender = make_sender(login=ALICE, save_to_sent_items=False, shared_via_me=True)
    result = sender.send(odoo_mail(SALES), from_address=SALES)
    assert [(e.method, e.path) for e in sandbox.requests] == [("POST", "/v1.0/me/sendMail")]
    assert (result.id, result.mailbox, result.requests) == (None, None, 1)
    (left,) = sandbox.outbox()
    assert (left.from_, left.sender, left.mailbox) == (SALES, SALES, ALICE)
    assert len(sandbox.sent(ALICE)) == 1 and sandbox.sent(SALES) == []


def test_send_as_only_draft_through_me_names_the_copy_in_the_own_sent_items(sandbox, make_sender):
    sandbox.grant(SALES, ALICE, "SendAs")
    raw = odoo_mail(SALES)
    result = make_sender(login=ALICE, shared_via_me=True).send(raw, from_address=SALES)
    assert sandbox.requests[0].path == "/v1.0/me/messages"
    assert all(not e.path.startswith(f"/v1.0/users/{SALES}") for e in sandbox.requests)
    (copy,) = sandbox.sent(ALICE)
    assert (result.id, result.mailbox) == (copy.id, None)
    assert_same_mail(copy.raw, raw)
    assert sandbox.outbox()[0].from_ == SALES and sandbox.sent(SALES) == []


@UPLOAD_URL_LOGGED
@pytest.mark.parametrize("full_access", [False, True])
def test_large_shared_mail_through_me_uses_upload_sessions(sandbox, make_sender, full_access):
    sandbox.grant(SALES, ALICE, "SendAs")
    if full_access:
        sandbox.grant(SALES, ALICE, "FullAccess")
    big = blob(5 * MB, seed=3)
    raw = odoo_mail(SALES, attachments=[("big.bin", big), ("small.txt", b"small")])
    sender = make_sender(login=ALICE, shared_via_me=True)
    seen = chunks_of(sender)
    result = sender.send(raw, from_address=SALES)
    assert [start for start, *_ in seen] == [0, UPLOAD_CHUNK]
    paths = [e.path for e in sandbox.requests if e.method == "POST"]
    assert paths[0] == "/v1.0/me/messages"
    assert any(p.endswith("/createUploadSession") and p.startswith("/v1.0/me/") for p in paths)
    (copy,) = sandbox.sent(ALICE)
    assert result.id == copy.id and result.mailbox is None
    assert_same_mail(copy.raw, raw)
    assert sandbox.outbox()[0].from_ == SALES


def test_the_default_still_sends_small_shared_mail_through_the_shared_mailbox(sandbox, make_sender):
    """Unchanged default (the route is the caller's to choose): sendMail under
    /users/{shared}, which a Send-As-only delegate is refused."""
    result = make_sender(save_to_sent_items=False).send(odoo_mail(SALES), from_address=SALES)
    assert sandbox.requests[0].path == f"/v1.0/users/{SALES}/sendMail"
    assert result.mailbox == SALES
    sandbox.grant(SALES, ALICE, "SendAs")
    with pytest.raises(GraphPermanentError) as caught:
        make_sender(login=ALICE, save_to_sent_items=False).send(
            odoo_mail(SALES, message_id="<2.odoo@contoso.test>"), from_address=SALES
        )
    assert caught.value.status == 403
    # The error names both rights that route needs: Full Access, and the permission.
    text = caught.value.user_message
    assert "Full Access" in text and "Mail.Send.Shared" in text, text


def test_without_send_as_or_on_behalf_the_error_names_the_rights(sandbox, make_sender):
    with pytest.raises(GraphPermanentError) as caught:
        make_sender(login=ALICE).send(odoo_mail(SALES), from_address=SALES)
    text = caught.value.user_message
    assert "Send As" in text and "Send on Behalf" in text and "Exchange admin center" in text
    assert caught.value.code == "ErrorSendAsDenied"
    assert sandbox.outbox() == [] and sandbox.messages(ALICE, "drafts") == []


def test_without_mail_send_shared_the_error_names_the_permission(sandbox, make_sender):
    scopes = ("User.Read", "Mail.ReadWrite", "Mail.Send", "Mail.ReadWrite.Shared")
    with pytest.raises(GraphPermanentError) as caught:
        make_sender(scopes=scopes).send(odoo_mail(SALES), from_address=SALES)
    assert "Mail.Send.Shared" in caught.value.user_message
    assert sandbox.outbox() == [] and sandbox.messages(SALES, "drafts") == []


# transient failures --------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [7, None])
def test_429_on_draft_creation_leaves_the_mail_queued(sandbox, make_sender, retry_after):
    sandbox.inject_fault("status", path=r"/messages$", status=429, retry_after=retry_after)
    with pytest.raises(GraphTransientError) as caught:
        make_sender().send(odoo_mail())
    if retry_after:
        assert caught.value.retry_after == retry_after
    else:
        assert caught.value.retry_after > 0
    assert graph_calls(sandbox) == [("POST", "messages", 429)]
    assert sandbox.messages(ADMIN, "drafts") == []


def test_429_on_send_discards_the_draft_then_a_retry_sends_once(sandbox, make_sender):
    sandbox.inject_fault("status", path=r"/send$", status=429, retry_after=3)
    sender = make_sender()
    with pytest.raises(GraphTransientError) as caught:
        sender.send(odoo_mail())
    assert caught.value.retry_after == 3
    assert sandbox.messages(ADMIN, "drafts") == [] and sandbox.outbox() == []
    sender.send(odoo_mail())
    assert len(sandbox.outbox()) == 1 and len(sandbox.sent(ADMIN)) == 1


def test_503_on_send_checks_the_draft_then_discards_it(sandbox, make_sender):
    sandbox.inject_fault("status", path=r"/send$", status=503)
    sender = make_sender()
    with pytest.raises(GraphTransientError):
        sender.send(odoo_mail())
    # It looked twice, SEND_SETTLE_SECONDS apart, before declaring the draft unsent.
    assert sender.client.sleep == [SEND_SETTLE_SECONDS]
    assert [c for c in graph_calls(sandbox) if c[0] in ("GET", "DELETE")] == [
        ("GET", sandbox.requests[2].path.rsplit("/", 1)[-1], 200),
        ("GET", sandbox.requests[2].path.rsplit("/", 1)[-1], 200),
        ("DELETE", sandbox.requests[2].path.rsplit("/", 1)[-1], 204),
    ]
    assert sandbox.outbox() == [] and sandbox.messages(ADMIN, "drafts") == []


def test_503_on_draft_creation_is_transient(sandbox, make_sender):
    sandbox.inject_fault("status", path=r"/messages$", status=503, retry_after=2)
    with pytest.raises(GraphTransientError) as caught:
        make_sender().send(odoo_mail())
    assert caught.value.retry_after == 2


def test_connection_refused_is_transient_even_for_send_mail(sandbox, make_sender):
    sender = make_sender(save_to_sent_items=False, graph_base="https://127.0.0.1:9")
    with pytest.raises(GraphTransientError):
        sender.send(odoo_mail())


@UPLOAD_URL_LOGGED
def test_failed_upload_discards_the_draft(sandbox, make_sender):
    sandbox.inject_fault("status", path=r"AttachmentSessions", method="PUT", status=503)
    raw = odoo_mail(attachments=[("big.bin", blob(5 * MB))])
    sender = make_sender()
    with pytest.raises(GraphTransientError):
        sender.send(raw)
    assert sandbox.messages(ADMIN, "drafts") == [] and sandbox.outbox() == []
    sender.send(raw)
    assert len(sandbox.outbox()) == 1


# ambiguous failures: exactly once -------------------------------------------------------


def test_dropped_answer_to_send_is_checked_not_resent(sandbox, make_sender):
    sandbox.inject_fault("accept_then_drop", path=r"/send$")
    result = make_sender().send(odoo_mail())
    assert len(sandbox.outbox()) == 1
    assert result.id == sandbox.sent(ADMIN)[0].id
    assert [c[0] for c in graph_calls(sandbox)] == ["POST", "POST", "GET"]


def test_reset_before_send_ran_discards_the_draft(sandbox, make_sender):
    sandbox.inject_fault("reset", path=r"/send$")
    with pytest.raises(GraphTransientError):
        make_sender().send(odoo_mail())
    assert sandbox.outbox() == [] and sandbox.messages(ADMIN, "drafts") == []


def test_dropped_answer_to_draft_creation_reuses_the_draft(sandbox, make_sender):
    sandbox.inject_fault("accept_then_drop", path=r"/messages$", method="POST")
    result = make_sender().send(odoo_mail())
    assert len(sandbox.outbox()) == 1 and sandbox.messages(ADMIN, "drafts") == []
    assert result.id == sandbox.sent(ADMIN)[0].id
    assert [c[:2] for c in graph_calls(sandbox)] == [
        ("POST", "messages"),
        ("GET", "messages"),
        ("POST", "send"),
    ]


@UPLOAD_URL_LOGGED
def test_dropped_answer_to_a_large_draft_starts_it_again(sandbox, make_sender):
    sandbox.inject_fault("accept_then_drop", path=r"/messages$", method="POST")
    raw = odoo_mail(attachments=[("big.bin", blob(5 * MB))])
    make_sender().send(raw)
    assert len(sandbox.outbox()) == 1 and sandbox.messages(ADMIN, "drafts") == []
    assert_same_mail(sandbox.sent(ADMIN)[0].raw, raw)


def test_dropped_answer_to_send_mail_is_ambiguous(sandbox, make_sender):
    sandbox.inject_fault("accept_then_drop", path=r"/sendMail$")
    with pytest.raises(GraphAmbiguousSendError) as caught:
        make_sender(save_to_sent_items=False).send(odoo_mail())
    assert not isinstance(caught.value, GraphTransientError)
    assert "not sent again" in caught.value.user_message
    assert len(sandbox.outbox()) == 1
    assert graph_calls(sandbox) == [("POST", "sendMail", 202)]


# memory --------------------------------------------------------------------------------

_MEASURE = """
import json, random, sys, tracemalloc
sys.path.insert(0, {root!r})
from services.endpoints import Endpoints
from services.graph import GraphClient
from services.send import GraphSender
from unit_tests.test_send import odoo_message
args = json.loads(sys.stdin.read())
endpoints = Endpoints.for_cloud("custom", args["base"], args["base"], args["ca"])
client = GraphClient(endpoints, endpoints.session(), lambda force_refresh=False: args["token"])
tracemalloc.start()
big = random.Random(1).randbytes(args["attachment"])
message = odoo_message(attachments=[("big.bin", big)])
del big
if args["form"] == "bytes":
    message = message.as_bytes()
# The message stays traced (1x of the peak); building it is not the sender's cost.
tracemalloc.reset_peak()
held = tracemalloc.get_traced_memory()[0]
GraphSender(client).send(message)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
size = len(message) if args["form"] == "bytes" else len(message.as_bytes())
print(json.dumps({{"size": size, "peak": peak, "rise": peak - held}}))
"""


@UPLOAD_URL_LOGGED
@pytest.mark.parametrize(
    ("form", "rise"),
    [
        # Given bytes: the one decoded copy of the attachment (0.75x), the draft cut out.
        ("bytes", 1.0),
        # Given Odoo's message object, whose big part is never flattened: the stdlib's
        # get_payload() encodes the part's text once to look for surrogates (a passing
        # 1x), then the decoded copy (0.75x) is all that is held.
        ("object", 1.25),
    ],
)
def test_peak_memory_of_a_30_mb_mail_stays_under_three_times_its_size(sandbox, form, rise):
    """Measured in a child process, so that the sandbox's own copies do not count."""
    token = sandbox.issue_token(ADMIN, SCOPES, refresh=False)["access_token"]
    stdin = json.dumps(
        {
            "base": sandbox.base_url,
            "ca": sandbox.ca_file,
            "token": token,
            "attachment": 22 * MB,
            "form": form,
        }
    )
    child = subprocess.run(  # noqa: S603 (this interpreter, a fixed script)
        [sys.executable, "-c", _MEASURE.format(root=ROOT)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    assert measured["size"] > 30 * MB
    # The message itself is traced too: 1x of it is the input.
    assert measured["peak"] < 3 * measured["size"], measured
    assert measured["rise"] < rise * measured["size"], measured
    assert len(sandbox.outbox()) == 1
