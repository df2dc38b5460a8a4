"""services.sync.DeltaSync against the sandbox: delta pages, MIME through $batch, writes."""

import base64
import datetime
import re
import threading

import pytest
from conftest import wait_until

from sandbox.defaults import ADMIN, ALICE, SALES
from services.endpoints import Endpoints
from services.errors import GraphAuthError, GraphPermanentError, GraphTransientError
from services.graph import GraphClient
from services.sync import (
    DELTA_SELECT,
    RESYNC_MARGIN,
    SIZE_EXPAND,
    DeltaSync,
    DeltaTokenExpired,
    MessageTooLarge,
    decode_value,
)


class Tokens:
    def __init__(self, sandbox, address=ADMIN, scopes=("User.Read", "Mail.ReadWrite")):
        self.token = sandbox.issue_token(address, scopes, refresh=False)["access_token"]

    def __call__(self, force_refresh=False):
        return self.token


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def make_sync(sandbox):
    endpoints = Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)
    sessions = []

    def make(address=ADMIN, scopes=("User.Read", "Mail.ReadWrite"), mailbox=None, **options):
        session = endpoints.session()
        sessions.append(session)
        client = GraphClient(
            endpoints, session, Tokens(sandbox, address, scopes), mailbox=mailbox, sleep=Sleeps()
        )
        return DeltaSync(client, **options)

    yield make
    for session in sessions:
        session.close()


def mime(number):
    return (
        f"From: bob@fabrikam.example\r\nTo: admin@contoso.test\r\nSubject: Message {number}\r\n"
        f"Message-ID: <m{number}@fabrikam.example>\r\n\r\nHello {number}.\r\n"
    ).encode()


def deliver(sandbox, count, start=0, mailbox=ADMIN, **options):
    return [sandbox.deliver(mailbox, mime(n), **options) for n in range(start, start + count)]


def graph_log(sandbox):
    """Graph entries of the request log once no read-ahead thread of a sync still runs (the
    sandbox logs a request before its answer, so the caller's own requests are all there)."""
    wait_until(
        lambda: not any(t.name == "graph-sync-ahead" for t in threading.enumerate()),
        "the read-ahead threads to end",
    )
    return [e for e in sandbox.requests if e.path.startswith("/v1.0/")]


def kinds(entries):
    return ["batch" if e.path == "/v1.0/$batch" else "delta" for e in entries]


def run(sync, link, **options):
    """Every page of one round: (pages, the delta link ending it)."""
    pages = list(sync.pages(link, **options))
    assert all(p.next_link for p in pages[:-1]) and pages[-1].delta_link
    return pages, pages[-1].delta_link


def imported(pages):
    return [m for page in pages for m in page.messages]


# rounds and links ----------------------------------------------------------------------


def test_first_round_imports_the_folder_with_its_mime(sandbox, make_sync):
    ids = deliver(sandbox, 3)
    sync = make_sync()
    sandbox.clear_log()
    pages, delta_link = run(sync, sync.start_link())
    [page] = pages
    assert [m.id for m in page.messages] == ids
    assert [m.raw for m in page.messages] == [mime(n) for n in range(3)]
    assert page.messages[0].internet_message_id == "<m0@fabrikam.example>"
    assert page.messages[0].received.tzinfo is not None
    assert page.checkpoint == delta_link and page.removed_ids == []
    delta, batch = graph_log(sandbox)
    assert kinds([delta, batch]) == ["delta", "batch"]
    assert delta.path == "/v1.0/me/mailFolders/inbox/messages/delta"
    assert delta.query == {
        "$select": ",".join(DELTA_SELECT),
        "changeType": "created",
        "$expand": SIZE_EXPAND,
    }
    assert [m.size for m in page.messages] == [len(mime(n)) for n in range(3)]


def test_baseline_then_only_new_mail(sandbox, make_sync):
    deliver(sandbox, 25)
    sync = make_sync()
    sandbox.clear_log()
    link = sync.baseline()
    assert kinds(graph_log(sandbox)) == ["delta"]  # 25 ids fit in one large page
    sandbox.clear_log()
    new = deliver(sandbox, 2, start=25)
    pages, link = run(sync, link)
    assert [m.id for m in imported(pages)] == new
    assert kinds(graph_log(sandbox)) == ["delta", "batch"]
    assert imported(run(sync, link)[0]) == []


def test_start_link_since_filters_the_first_round(sandbox, make_sync):
    sandbox.deliver(ADMIN, mime(1), received="2026-10-01T08:00:00Z")
    recent = sandbox.deliver(ADMIN, mime(2), received="2026-11-02T08:00:00Z")
    sync = make_sync()
    link = sync.start_link(since="2026-11-01T00:00:00+01:00")
    assert "receivedDateTime%20ge%202026-10-31T23:00:00Z" in link
    assert [m.id for m in imported(run(sync, link)[0])] == [recent]


def test_the_sandbox_serves_stored_properties_as_the_full_rendering_does(sandbox, make_sync):
    deliver(sandbox, 2)
    sandbox.messages(ADMIN)[0].is_read = True
    sync = make_sync()
    body = sync.client.get_json(sync.start_link())
    # Served from the message's fields without parsing its MIME: the same entries.
    expected = [
        {
            "@odata.type": "#microsoft.graph.message",
            **m.graph(DELTA_SELECT),
            "singleValueExtendedProperties": [{"id": "Integer 0xe08", "value": str(m.size)}],
        }
        for m in sandbox.messages(ADMIN)
    ]
    assert body["value"] == expected


def test_pages_follow_links_one_at_a_time(sandbox, make_sync):
    ids = deliver(sandbox, 7)
    sync = make_sync(page_size=3)
    sandbox.clear_log()
    pages = sync.pages(sync.start_link())
    first = next(pages)
    assert [m.id for m in first.messages] == ids[:3]
    assert first.next_link and first.delta_link is None and first.checkpoint == first.next_link
    # Nothing fetched ahead of the page the caller holds.
    assert kinds(graph_log(sandbox)) == ["delta", "batch"]
    rest = list(pages)
    assert [len(p.messages) for p in rest] == [3, 1]
    assert rest[-1].next_link is None and rest[-1].delta_link
    # A stored next link replays its page (the caller crashed before committing it).
    assert [m.id for m in next(sync.pages(first.next_link)).messages] == ids[3:6]


def test_removed_entries_when_the_link_asks_for_every_change(sandbox, make_sync):
    first = deliver(sandbox, 2)[0]
    sync = make_sync()
    link = sync.baseline(sync.start_link().replace("&changeType=created", ""))
    outcome = sync.move([first], "archive")[first]
    assert outcome.ok and outcome.new_id == first
    [page] = run(sync, link)[0]
    assert page.removed_ids == [first] and page.messages == []


def test_delivery_during_a_round_comes_in_the_next(sandbox, make_sync):
    deliver(sandbox, 6)
    sync = make_sync(page_size=5)
    pages = sync.pages(sync.start_link())
    first = next(pages)
    [late] = deliver(sandbox, 1, start=6)
    rest = list(pages)
    assert late not in [m.id for m in imported([first, *rest])]
    assert len(imported([first, *rest])) == 6
    assert [m.id for m in imported(run(sync, rest[-1].delta_link)[0])] == [late]


# stale tokens --------------------------------------------------------------------------


def test_stale_token_and_resync_without_duplicates(sandbox, make_sync):
    deliver(sandbox, 4)
    sync = make_sync()
    pages, link = run(sync, sync.start_link())
    have = {m.id for m in imported(pages)}
    last = max(m.received for m in imported(pages))
    sandbox.expire_delta_tokens(ADMIN)
    new = deliver(sandbox, 2, start=4)
    with pytest.raises(DeltaTokenExpired) as expired:
        list(sync.pages(link))
    assert expired.value.status == 410 and expired.value.code == "syncStateNotFound"
    assert expired.value.location.endswith("$deltatoken=")
    resync = sync.resync_link(last)
    seen = []

    def known(messages):
        seen.extend(m.id for m in messages)
        return {m.id for m in messages if m.id in have}

    pages, _ = run(sync, resync, known=known)
    assert [m.id for m in imported(pages)] == new
    assert sorted(pages[0].known_ids) == sorted(have)
    assert set(seen) == have | set(new)


def test_resync_link_never_starts_before_the_synchronisation(make_sync):
    sync = make_sync()
    latest = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
    assert sync.resync_link(latest) == sync.start_link(latest - RESYNC_MARGIN)
    # Naive datetimes (Odoo's) are UTC; the floor wins when the margin passes it.
    floor = datetime.datetime(2026, 3, 1, 11, 59)
    assert sync.resync_link(latest.replace(tzinfo=None), floor=floor) == sync.start_link(floor)
    # Nothing imported yet: from the floor, or the whole folder without one.
    assert sync.resync_link(None, floor=floor) == sync.start_link(floor)
    assert sync.resync_link(None) == sync.start_link()


def test_expired_next_link_mid_round(sandbox, make_sync):
    deliver(sandbox, 4)
    sync = make_sync(page_size=2)
    pages = sync.pages(sync.start_link())
    next(pages)
    sandbox.set_delta_token_lifetime(60)
    sandbox.advance(61)
    with pytest.raises(DeltaTokenExpired):
        next(pages)


# $batch --------------------------------------------------------------------------------


def test_batches_hold_at_most_twenty_steps(sandbox, make_sync):
    deliver(sandbox, 45)
    with pytest.raises(ValueError):
        make_sync(batch_size=21)
    sync = make_sync()
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    assert len(page.messages) == 45 and all(m.raw for m in page.messages)
    assert kinds(graph_log(sandbox)) == ["delta", "batch", "batch", "batch"]


def test_value_bodies_in_either_form():
    raw = mime(1)
    assert decode_value(base64.b64encode(raw).decode()) == raw
    assert decode_value(raw.decode()) == raw
    wrapped = base64.encodebytes(raw).decode()
    assert decode_value(wrapped) == raw
    with pytest.raises(GraphPermanentError):
        decode_value("")


def test_throttled_steps_go_again_after_retry_after(sandbox, make_sync):
    ids = deliver(sandbox, 5)
    sandbox.inject_fault("status", path=r"/\$value$", status=429, retry_after=1, times=2)
    sync = make_sync()
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    assert [m.raw for m in page.messages] == [mime(n) for n in range(5)]
    assert [m.id for m in page.messages] == ids
    assert sync.client.sleep == [1.0]
    assert kinds(graph_log(sandbox)) == ["delta", "batch", "batch"]


def test_a_broken_message_is_reported_on_itself_only(sandbox, make_sync):
    good, broken, slow = deliver(sandbox, 3)
    sandbox.inject_fault(
        "status", path=re.escape(broken) + r"/\$value$", status=404, code="ErrorItemNotFound"
    )
    sandbox.inject_fault(
        "status", path=re.escape(slow) + r"/\$value$", status=503, retry_after=2, times=None
    )
    sync = make_sync(retry_rounds=2)
    [page] = run(sync, sync.start_link())[0]
    by_id = {m.id: m for m in page.messages}
    assert by_id[good].raw == mime(0) and by_id[good].error is None
    assert by_id[broken].raw is None
    assert isinstance(by_id[broken].error, GraphPermanentError)
    assert by_id[broken].error.code == "ErrorItemNotFound"
    assert isinstance(by_id[slow].error, GraphTransientError) and by_id[slow].raw is None
    assert sync.client.sleep == [2.0, 2.0]  # bounded: retry_rounds waits, then reported
    # The caller retries it later by id.
    sandbox.clear_faults()
    [again] = sync.fetch([slow])
    assert again.raw == mime(2)


def test_a_retry_after_beyond_the_bound_is_reported_not_waited(sandbox, make_sync):
    deliver(sandbox, 1)
    sandbox.inject_fault("status", path=r"/\$value$", status=429, retry_after=120)
    sync = make_sync()
    [page] = run(sync, sync.start_link())[0]
    assert page.messages[0].error.retry_after == 120 and sync.client.sleep == []


# shared mailboxes ----------------------------------------------------------------------


def test_shared_mailbox_with_and_without_full_access(sandbox, make_sync):
    [shared] = deliver(sandbox, 1, mailbox=SALES)
    scopes = ("User.Read", "Mail.ReadWrite.Shared")
    sync = make_sync(scopes=scopes, mailbox=SALES)
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    assert [m.id for m in page.messages] == [shared] and page.messages[0].raw == mime(0)
    assert graph_log(sandbox)[0].path == f"/v1.0/users/{SALES}/mailFolders/inbox/messages/delta"
    assert sync.mark_read([shared])[shared].ok
    assert sandbox.messages(SALES)[0].is_read
    denied = make_sync(address=ALICE, scopes=scopes, mailbox=SALES)
    with pytest.raises(GraphPermanentError) as error:
        list(denied.pages(denied.start_link()))
    assert error.value.status == 403 and error.value.code == "ErrorAccessDenied"


# writes --------------------------------------------------------------------------------


def test_mark_read_and_move(sandbox, make_sync):
    ids = deliver(sandbox, 25)
    sync = make_sync()
    sandbox.clear_log()
    outcomes = sync.mark_read(ids)
    assert list(outcomes) == ids and all(o.ok for o in outcomes.values())
    assert all(m.is_read for m in sandbox.messages(ADMIN))
    assert kinds(graph_log(sandbox)) == ["batch", "batch"]
    missing = "AAMkAGbm9uZQ=="
    assert sync.mark_read([missing])[missing].error.code == "ErrorItemNotFound"

    moved = sync.move(ids[:3], "archive")
    # Immutable ids: the moved messages keep the ids the import recorded.
    assert [o.new_id for o in moved.values()] == ids[:3]
    assert [m.id for m in sandbox.messages(ADMIN, "archive")] == ids[:3]
    assert sync.mark_read(ids[:1])[ids[0]].ok
    assert sync.move([missing], "archive")[missing].error.status == 404


def test_mark_read_later_rides_in_the_next_page_batches(sandbox, make_sync):
    deliver(sandbox, 30)
    sync = make_sync(page_size=10)
    sandbox.clear_log()
    for page in sync.pages(sync.start_link()):
        sync.mark_read_later(m.id for m in page.messages)
    assert all(m.is_read for m in sandbox.messages(ADMIN))
    assert len(sync.read_outcomes) == 30 and all(o.ok for o in sync.read_outcomes.values())
    # 3 pages: 3 delta + 3 batches ($value with the previous page's marks) + 1 final flush.
    assert kinds(graph_log(sandbox)).count("batch") == 4


# request counts ------------------------------------------------------------------------


def test_request_counts_for_a_backlog_and_an_empty_round(sandbox, make_sync):
    deliver(sandbox, 200)
    sync = make_sync(page_size=50)
    sandbox.clear_log()
    pages, link = run(sync, sync.start_link())
    assert len(imported(pages)) == 200 and all(m.raw for m in imported(pages))
    log = graph_log(sandbox)
    # 4 delta pages of 50, each with 3 batches (20 + 20 + 10): 0.08 requests per message.
    assert kinds(log).count("delta") == 4 and kinds(log).count("batch") == 12
    assert len(log) / 200 <= 0.1
    sandbox.clear_log()
    [page] = run(sync, link)[0]
    assert page.messages == [] and len(graph_log(sandbox)) == 1


# reading ahead -------------------------------------------------------------------------


def test_ahead_fetches_the_next_page_while_the_caller_works(sandbox, make_sync):
    ids = deliver(sandbox, 7)
    sync = make_sync(page_size=3)
    sandbox.clear_log()
    asked = []
    pages = sync.pages(sync.start_link(), ahead=lambda page: asked.append(page) or True)
    first = next(pages)
    assert [m.id for m in first.messages] == ids[:3] and asked == [first]
    # The second page is read and its MIME fetched before the caller asks for it.
    assert kinds(graph_log(sandbox)) == ["delta", "batch", "delta", "batch"]
    rest = list(pages)
    assert [[m.id for m in p.messages] for p in rest] == [ids[3:6], ids[6:]]
    assert all(m.raw == mime(n) for n, m in enumerate(imported([first, *rest])))
    # Only pages with a next link are offered; the request count is the same as without.
    assert asked == [first, rest[0]]
    assert kinds(graph_log(sandbox)) == ["delta", "batch"] * 3


def test_ahead_declined_fetches_nothing_ahead(sandbox, make_sync):
    deliver(sandbox, 7)
    sync = make_sync(page_size=3)
    sandbox.clear_log()
    pages = sync.pages(sync.start_link(), ahead=lambda page: False)
    next(pages)
    pages.close()
    assert kinds(graph_log(sandbox)) == ["delta", "batch"]


@pytest.mark.parametrize("failing", ["delta", "batch"])
def test_a_failure_ahead_comes_with_the_next_page(sandbox, make_sync, failing):
    ids = deliver(sandbox, 6)
    sync = make_sync(page_size=3)
    path = r"/delta$" if failing == "delta" else r"^/v1\.0/\$batch$"

    def fail_from_now_on(page):
        sandbox.inject_fault("status", path=path, status=503, times=None)
        return True

    pages = sync.pages(sync.start_link(), ahead=fail_from_now_on)
    first = next(pages)
    # The page in hand is whole; the failure of the next one comes when it is asked for.
    assert [m.id for m in first.messages] == ids[:3] and all(m.raw for m in first.messages)
    with pytest.raises(GraphTransientError):
        next(pages)
    sandbox.clear_faults()
    # The caller keeps the first page's checkpoint: the next run starts there.
    [second] = sync.pages(first.checkpoint)
    assert [m.id for m in second.messages] == ids[3:]


def test_ahead_without_a_token_fails_with_the_next_page(sandbox, make_sync):
    ids = deliver(sandbox, 6)
    sync = make_sync(page_size=3)

    def disconnected(force_refresh=False):
        raise GraphAuthError("Connect the mailbox again.")

    def disconnect(page):
        sync.client.token_provider = disconnected
        return True

    pages = sync.pages(sync.start_link(), ahead=disconnect)
    assert [m.id for m in next(pages).messages] == ids[:3]
    with pytest.raises(GraphAuthError):
        next(pages)


def test_ahead_with_a_refused_token_fetches_from_the_callers_thread(
    sandbox, make_sync, monkeypatch
):
    ids = deliver(sandbox, 6)
    sync = make_sync(page_size=3)
    original = sync._ahead

    def with_a_refused_token():
        client = original()
        client.token_provider.token = "refused.token.value"
        return client

    monkeypatch.setattr(sync, "_ahead", with_a_refused_token)
    pages = list(sync.pages(sync.start_link(), ahead=lambda page: True))
    assert [m.id for m in imported(pages)] == ids and all(m.raw for m in imported(pages))


def test_ahead_carries_the_queued_reads_and_settles_them_when_stopped(sandbox, make_sync):
    deliver(sandbox, 12)
    sync = make_sync(page_size=3)
    pages = sync.pages(sync.start_link(), ahead=lambda page: True)
    first = next(pages)
    sync.mark_read_later(m.id for m in first.messages)
    # The third page is fetched while the caller holds the second, with the first's reads.
    next(pages)
    pages.close()  # the caller stops (its budget): the third page's work is waited for
    assert set(sync.read_outcomes) == {m.id for m in first.messages}
    assert all(o.ok for o in sync.read_outcomes.values())
    read = {m.id for m in sandbox.messages(ADMIN) if m.is_read}
    assert read == {m.id for m in first.messages}
    graph_log(sandbox)
    sandbox.clear_log()
    # Nothing is left to send.
    assert sync.flush() == sync.read_outcomes and graph_log(sandbox) == []


def test_ahead_sends_whole_batches_of_reads_during_the_last_page(sandbox, make_sync):
    deliver(sandbox, 90)
    sync = make_sync(page_size=30)
    sandbox.clear_log()
    for page in sync.pages(sync.start_link(), ahead=lambda page: True):
        sync.mark_read_later(m.id for m in page.messages)
    assert all(m.is_read for m in sandbox.messages(ADMIN))
    assert len(sync.read_outcomes) == 90 and all(o.ok for o in sync.read_outcomes.values())
    # As without ahead, 10 batches: 2 + 2 for the first two pages' $value, 3 for the
    # third's with the first page's reads; of the second page's 30 reads, 20 went out
    # during the last page and 10 with the last page's 30 in 2 batches.
    log = kinds(graph_log(sandbox))
    assert log.count("delta") == 3 and log.count("batch") == 10


def test_ahead_declined_still_sends_whole_batches_of_queued_reads(sandbox, make_sync):
    deliver(sandbox, 75)
    sync = make_sync(page_size=25)
    decisions = iter([True, False])
    pages = sync.pages(sync.start_link(), ahead=lambda page: next(decisions))
    first = next(pages)
    sync.mark_read_later(m.id for m in first.messages)
    second = next(pages)  # declined: nothing read ahead, 20 of the 25 reads go out now
    sync.mark_read_later(m.id for m in second.messages)
    pages.close()  # the caller stops after the second page
    assert len(sync.read_outcomes) == 20
    assert set(sync.read_outcomes) < {m.id for m in first.messages}
    assert len(sync.flush()) == 50 and all(o.ok for o in sync.read_outcomes.values())
    assert sum(m.is_read for m in sandbox.messages(ADMIN)) == 50


# sizes: large messages alone and streamed, oversized ones not downloaded ----------------


def padded(number, size):
    """A message of exactly ``size`` bytes."""
    head = mime(number)
    return head + b"x" * (size - len(head))


def value_gets(entries):
    return [e for e in entries if e.method == "GET" and e.path.endswith("/$value")]


class StreamSpy:
    """Records the ``stream`` flag of every request a session sends."""

    def __init__(self, session):
        self.session = session
        self.streams = []
        self.request = session.request
        session.request = self

    def __call__(self, method, url, **kwargs):
        self.streams.append((method, url.rsplit("/", 1)[-1], kwargs.get("stream")))
        return self.request(method, url, **kwargs)


def test_large_messages_come_alone_and_streamed(sandbox, make_sync):
    small = [sandbox.deliver(ADMIN, padded(n, 2_000)) for n in range(2)]
    large = [sandbox.deliver(ADMIN, padded(n, 300_000)) for n in range(2, 4)]
    sync = make_sync(alone_from=100_000)
    spy = StreamSpy(sync.client.session)
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    # The page holds the small ones; the large ones wait for their turn.
    by_id = {m.id: m for m in page.messages}
    assert [by_id[i].raw for i in small] == [padded(0, 2_000), padded(1, 2_000)]
    assert [by_id[i].raw for i in large] == [None, None]
    assert [by_id[i].size for i in large] == [300_000, 300_000]
    assert kinds(graph_log(sandbox)) == ["delta", "batch"]
    contents = {m.id: m.raw for m in page.contents()}
    assert contents == {
        small[0]: padded(0, 2_000),
        small[1]: padded(1, 2_000),
        large[0]: padded(2, 300_000),
        large[1]: padded(3, 300_000),
    }
    gets = value_gets(graph_log(sandbox))
    assert [g.path.split("/")[-2] for g in gets] == large
    assert [s for s in spy.streams if s[1] == "$value"] == [("GET", "$value", True)] * 2


def test_batches_are_cut_by_the_bytes_they_carry(sandbox, make_sync):
    ids = [sandbox.deliver(ADMIN, padded(n, 1_000)) for n in range(6)]
    sync = make_sync(batch_bytes=2_500)
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    assert [m.id for m in page.messages] == ids and all(m.raw for m in page.messages)
    assert kinds(graph_log(sandbox)) == ["delta", "batch", "batch", "batch"]


def test_a_page_holds_at_most_page_bytes_of_mime(sandbox, make_sync):
    ids = [sandbox.deliver(ADMIN, padded(n, 1_000)) for n in range(6)]
    sync = make_sync(page_bytes=3_000)
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    assert [m.raw is not None for m in page.messages] == [True] * 3 + [False] * 3
    assert kinds(graph_log(sandbox)) == ["delta", "batch"]
    assert [m.raw for m in page.contents()] == [padded(n, 1_000) for n in range(6)]
    assert [g.path.split("/")[-2] for g in value_gets(graph_log(sandbox))] == ids[3:]


def test_an_oversized_message_is_reported_without_download(sandbox, make_sync):
    big = sandbox.deliver(ADMIN, padded(0, 300_000))
    small = sandbox.deliver(ADMIN, mime(1))
    sync = make_sync(max_size=100_000)
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    assert page.delta_link  # the position moves on past it
    message = next(m for m in page.contents() if m.id == big)
    assert isinstance(message.error, MessageTooLarge) and message.raw is None
    assert (message.error.size, message.error.limit) == (300_000, 100_000)
    assert next(m for m in page.contents() if m.id == small).raw == mime(1)
    assert value_gets(graph_log(sandbox)) == []
    assert kinds(graph_log(sandbox)) == ["delta", "batch"]


def test_a_cut_stream_is_tried_again(sandbox, make_sync):
    big = sandbox.deliver(ADMIN, padded(0, 300_000))
    sync = make_sync(alone_from=100_000)
    sandbox.inject_fault("cut", path=re.escape(big) + r"/\$value$")
    sandbox.clear_log()
    [page] = run(sync, sync.start_link())[0]
    [message] = page.contents()
    assert message.raw == padded(0, 300_000) and message.error is None
    assert [g.fault for g in value_gets(graph_log(sandbox))] == ["cut", None]


def test_a_download_longer_than_its_limit_stops(sandbox, make_sync):
    big = sandbox.deliver(ADMIN, padded(0, 300_000))
    sync = make_sync()
    [message] = sync.fetch([big], limit=100_000)
    assert isinstance(message.error, MessageTooLarge) and message.raw is None
    assert message.error.limit == 100_000 and message.error.size > 100_000
    [message] = sync.fetch([big])
    assert message.raw == padded(0, 300_000)


def test_a_link_without_sizes_fetches_each_message_alone(sandbox, make_sync):
    ids = deliver(sandbox, 3)
    sync = make_sync()
    link = sync.start_link().replace("&$expand=" + SIZE_EXPAND.replace(" ", "%20"), "")
    assert "expand" not in link
    sandbox.clear_log()
    [page] = run(sync, link)[0]
    assert [m.size for m in page.messages] == [None] * 3
    assert [m.raw for m in page.contents()] == [mime(n) for n in range(3)]
    assert [g.path.split("/")[-2] for g in value_gets(graph_log(sandbox))] == ids


def test_memory_of_a_page_of_large_messages_stays_bounded(sandbox, make_sync):
    import gc  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    size = 1_000_000
    for n in range(20):
        sandbox.deliver(ADMIN, padded(n, size))
    sync = make_sync(page_size=20, alone_from=250_000)
    link = sync.start_link()
    gc.collect()
    tracemalloc.start()
    try:
        seen = 0
        for page in sync.pages(link):
            for message in page.contents():
                assert message.raw == padded(seen, size)
                seen += 1
                del message  # the next one is read while this name holds the last
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == 20
    # One message at a time (read once into its buffer, plus the comparison's copy
    # above), never the page's 20 MB, nor a $batch answer's base64 of them.
    assert peak < 5 * size, peak
