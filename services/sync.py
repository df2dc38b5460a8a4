"""Incoming mail through Microsoft Graph: delta queries on one folder, MIME through $batch.

:class:`DeltaSync` walks the delta query of a mail folder one page at a time and fetches
the MIME (``$value``) of that page's new messages in JSON batches of at most 20 steps.
Each message's size comes with the delta page (PidTagMessageSize through
``singleValueExtendedProperties``): small messages ride in batches cut by the bytes they
carry, a page holds at most ``page_bytes`` of MIME fetched ahead, larger messages are
downloaded alone, streamed, when the caller reaches them (:meth:`Page.contents`), and
messages over ``max_size`` are reported without being downloaded (docs/incoming.md).
It keeps no state: the caller stores ``page.checkpoint`` (the next link, or the delta link
after the last page) in the same transaction as the messages of that page, so a crash
replays the page and the caller's de-duplication makes the import exactly-once
(docs/incoming.md). Writes back to the mailbox (mark read, move) go through $batch too.
"""

import base64
import copy
import datetime
import io
import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass, field, replace

import requests
from requests.structures import CaseInsensitiveDict

from .errors import (
    GraphAuthError,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    _lt,
    error_from_graph_response,
)
from .graph import body_cut_short, quote_segment

_logger = logging.getLogger(__name__)

# What a delta page needs to say which messages are new; the MIME carries the rest.
DELTA_SELECT = ("id", "internetMessageId", "receivedDateTime", "isRead", "parentFolderId")
# Ids that survive moves, so an imported message can still be marked read or moved.
IMMUTABLE_IDS = 'IdType="ImmutableId"'
MAX_BATCH_STEPS = 20
# The baseline only wants the delta link at the end: as few pages as Graph will serve.
BASELINE_PAGE_SIZE = 1000
# After a 410 the new round starts this long before the last import: a message can reach
# the folder (delivery delay, a move) with a receivedDateTime older than ones already seen.
RESYNC_MARGIN = datetime.timedelta(hours=1)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# Graph v1.0 has no size property on messages: PidTagMessageSize ([MS-OXPROPS] 2.797,
# PtypInteger32) read as an extended property, asked for on the first delta call so that
# every page of every later round carries it (the options live in the tokens).
SIZE_PROPERTY = "Integer 0x0E08"
SIZE_EXPAND = f"singleValueExtendedProperties($filter=id eq '{SIZE_PROPERTY}')"
# The id as Graph may echo it: any case, with or without zero padding or the type half of
# the tag (PidTagMessageSizeExtended, Long, is the same property id).
_SIZE_ID = re.compile(r"\s*(integer|long)\s+0x0*e08(0003|0014)?\s*", re.IGNORECASE)
MB = 1024 * 1024
# Exchange Online's largest configurable message size: no download goes past it.
EXCHANGE_MAX_MESSAGE = 150 * MB
# Messages larger than this are fetched alone and streamed, never inside a $batch.
ALONE_FROM = 2 * MB
# The sizes of the messages one $batch asks for add up to at most this (plus one message):
# the answer carries them base64 in JSON, read, parsed and decoded, about 4 times over.
BATCH_BYTES = 4 * MB
# The MIME a page holds fetched ahead; the rest is downloaded when the caller reaches it.
PAGE_BYTES = 16 * MB
STREAM_CHUNK = 256 * 1024


class DeltaTokenExpired(GraphError):
    """Graph forgot the delta state (410 syncStateNotFound): start a new round.

    ``location`` is Graph's fresh initial delta URL when it sent one; it restarts the
    whole folder, so :meth:`DeltaSync.resync_link` from the last import is usually cheaper.
    """

    default_message = _lt(
        "Microsoft 365 no longer knows where the mailbox synchronisation stopped; "
        "it starts again from the last imported message."
    )


class MessageTooLarge(GraphPermanentError):
    """A message over the import's size limit: reported, not downloaded (or, when its
    reported size was under the limit, its download stopped at the limit)."""

    def __init__(self, size, limit):
        super().__init__(
            f"The message is larger than {limit / MB:.1f} MB ({size / MB:.1f} MB); "
            "it was not downloaded.",
            code="MessageTooLarge",
        )
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class IncomingMessage:
    """A new message of a delta page: its MIME in ``raw``, or why not in ``error``;
    neither while it waits to be downloaded alone (:meth:`Page.contents`).
    ``size`` is what Exchange reports (None when the delta link does not ask for it)."""

    id: str
    internet_message_id: str | None
    received: datetime.datetime | None
    raw: bytes | None = None
    error: GraphError | None = None
    size: int | None = None

    @property
    def waiting(self):
        return self.raw is None and self.error is None


@dataclass(frozen=True)
class Page:
    messages: list
    removed_ids: list
    next_link: str | None
    delta_link: str | None
    # New entries the caller's ``known`` callback already has: not fetched again.
    known_ids: list = field(default_factory=list)
    # Downloads a waiting message: DeltaSync.load.
    loader: object = field(default=None, repr=False, compare=False)

    @property
    def checkpoint(self):
        """What to store with this page's messages: where the next run starts."""
        return self.next_link or self.delta_link

    def contents(self):
        """The page's messages in order, each with its MIME or its error: the waiting
        ones are downloaded one at a time as the iteration reaches them, and the page
        keeps no reference to them (hold one, drop it, take the next)."""
        for message in self.messages:
            if message.waiting and self.loader is not None:
                yield self.loader(message)
            else:
                yield message


@dataclass(frozen=True)
class Outcome:
    """The result of one write (mark read, move) for one message."""

    id: str
    error: GraphError | None = None
    # The message's id after a move (the same one while ids are immutable).
    new_id: str | None = None

    @property
    def ok(self):
        return self.error is None


class _StepAnswer:
    """A $batch step's answer in the shape error_from_graph_response reads."""

    def __init__(self, step):
        self.status_code = step.get("status")
        self.headers = CaseInsensitiveDict(step.get("headers") or {})
        self._body = step.get("body")

    def json(self):
        if not isinstance(self._body, dict):
            raise ValueError("no JSON body")
        return self._body


def _utc(moment):
    """An aware UTC datetime from a datetime (UTC if naive) or ISO text; None stays None."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _utc_text(moment):
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def decode_value(body):
    """The MIME bytes of a $value step: Graph sends non-JSON bodies base64-encoded inside
    $batch, but a text body may also come as the text itself; a MIME message always has
    a ':' in its headers, which base64 never contains."""
    if not isinstance(body, str) or not body:
        raise GraphPermanentError(_lt("Microsoft Graph sent no MIME content for the message."))
    compact = "".join(body.split())
    if _BASE64.fullmatch(compact) and len(compact) % 4 == 0:
        return base64.b64decode(compact)
    return body.encode("utf-8")


def _size_of(entry):
    """The PidTagMessageSize a delta entry carries, or None."""
    for prop in entry.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and _SIZE_ID.fullmatch(str(prop.get("id") or "")):
            try:
                return int(prop.get("value"))
            except (TypeError, ValueError):
                return None
    return None


def _step_error(step):
    if step is None:
        return GraphTransientError(_lt("Microsoft Graph left a step of the batch unanswered."))
    return error_from_graph_response(_StepAnswer(step))


class DeltaSync:
    """Delta pages of one folder of the client's mailbox, with the MIME of new messages.

    ``client`` is a :class:`~.graph.GraphClient` (its mailbox, retries and sleep are used).
    ``retry_rounds`` bounds how often a throttled or failed batch step is sent again, and
    ``max_retry_wait`` how long one wait for it may be (Retry-After, else backoff).
    ``max_size`` (bytes, None: Exchange's 150 MB) is the largest message downloaded;
    ``alone_from``, ``batch_bytes`` and ``page_bytes`` bound the MIME held at once.
    """

    def __init__(
        self,
        client,
        folder="inbox",
        page_size=50,
        batch_size=MAX_BATCH_STEPS,
        retry_rounds=3,
        max_retry_wait=None,
        max_size=None,
        alone_from=None,
        batch_bytes=None,
        page_bytes=None,
    ):
        if not 1 <= batch_size <= MAX_BATCH_STEPS:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_STEPS}")
        self.client = client
        self.folder = folder
        self.page_size = page_size
        self.batch_size = batch_size
        self.retry_rounds = retry_rounds
        self.max_retry_wait = client.max_inline_wait if max_retry_wait is None else max_retry_wait
        self.max_size = max_size
        self.alone_from = ALONE_FROM if alone_from is None else alone_from
        self.batch_bytes = BATCH_BYTES if batch_bytes is None else batch_bytes
        self.page_bytes = PAGE_BYTES if page_bytes is None else page_bytes
        self._deferred_reads = []
        self.read_outcomes = {}
        self._ahead_client = None

    # -- links -----------------------------------------------------------------------

    def start_link(self, since=None):
        """The first delta call: new messages only, the minimal $select, and with ``since``
        (a datetime, UTC if naive, or ISO text) only those received from then on."""
        params = [("$select", ",".join(DELTA_SELECT)), ("changeType", "created")]
        if since is not None:
            params.append(("$filter", f"receivedDateTime ge {_utc_text(since)}"))
        params.append(("$expand", SIZE_EXPAND))
        path = self.client.mailbox_path(f"mailFolders/{quote_segment(self.folder)}/messages/delta")
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe="$,:()'=")
        return f"{self.client.endpoints.graph_url(path)}?{query}"

    def resync_link(self, since, margin=RESYNC_MARGIN, floor=None):
        """The first call of a new round after :class:`DeltaTokenExpired`.

        ``since`` is the latest ``received`` of the imported messages (Microsoft's clock);
        the round repeats what came after ``since - margin``, which the caller skips by
        Graph id or internetMessageId (the ``known`` callback of :meth:`pages`), but
        never what came before ``floor`` (when the synchronisation started). Without
        either (nothing imported, no start) the round replays the whole folder.
        Datetimes are UTC if naive, or ISO text.
        """
        since, floor = _utc(since), _utc(floor)
        start = since - margin if since is not None else None
        if floor is not None and (start is None or start < floor):
            start = floor
        return self.start_link(start)

    def baseline(self, since_link=None):
        """Walk a first round without importing anything; return its delta link.

        This is "from now": later rounds report only what arrives after it. The pages
        carry ids only and are as large as Graph serves, so a folder of N messages costs
        about N / 1000 requests.
        """
        link = since_link or self.start_link()
        while True:
            body = self._delta_page(link, BASELINE_PAGE_SIZE)
            link = body.get("@odata.nextLink")
            if not link:
                return self._require_link(body, "@odata.deltaLink")

    # -- pages -----------------------------------------------------------------------

    def pages(self, link, known=None, ahead=None):
        """Yield one :class:`Page` per delta page, following next links.

        ``known(messages)`` may return the ids, among a page's new
        :class:`IncomingMessage` values (without MIME yet), that the caller already has;
        their MIME is not fetched. Raises :class:`DeltaTokenExpired` on a stale link.

        Without ``ahead`` nothing is fetched ahead: the next delta page is asked for only
        when the caller asks for the next Page. ``ahead(page)`` is called with each page
        about to be yielded that has a next link; when it returns true, the next delta
        page is read (and ``known`` called on it) before the yield, and its MIME is
        fetched in a thread while the caller works on this page. Memory then holds two
        pages of MIME. Any failure of that work is raised when the caller asks for the
        next page, as without ``ahead``: a page is yielded whole or not at all. With
        ``ahead``, when no page is read ahead (the last page, or ``ahead`` declined), the
        mark-read steps queued then go out in a thread while the caller works on the
        page, as many as fill whole batches.
        """
        seen = set()
        upcoming = self._prepare(link, known, seen, background=False)
        reads = None
        try:
            while upcoming is not None:
                page = upcoming.result()
                upcoming = None
                if page.next_link and ahead is not None and ahead(page):
                    upcoming = self._prepare(page.next_link, known, seen, background=True)
                elif ahead is not None:
                    # No page ahead (the last one, or the caller will stop after this
                    # one): the queued reads go out while the caller works.
                    reads = self._reads_ahead()
                yield page
                if reads is not None:
                    reads.settle()
                    reads = None
                if page.next_link and upcoming is None:
                    upcoming = self._prepare(page.next_link, known, seen, background=False)
        finally:
            # What is still in flight (the look-ahead of a caller that stopped early, the
            # reads sent during the last page) ends before the generator does, so its
            # mark-read steps are accounted for: sent, or queued again.
            for work in (upcoming, reads):
                if work is not None:
                    work.settle()
        self.flush()

    def fetch(self, ids, limit=None):
        """The MIME of messages by id (a retry of ones that failed in a page), each
        downloaded alone and streamed, as their sizes are not known here."""
        return list(self.fetch_each(ids, limit))

    def fetch_each(self, ids, limit=None):
        """:meth:`fetch` one message at a time: only one is held by this generator."""
        for message_id in dict.fromkeys(ids):
            yield self.load(IncomingMessage(message_id, None, None), limit)

    def load(self, message, limit=None):
        """``message`` with its MIME, downloaded alone and streamed, or with the error:
        :class:`MessageTooLarge` past ``limit`` (default: ``max_size``, else Exchange's
        150 MB). A refused token raises, as for a page."""
        limit = limit or self.max_size or EXCHANGE_MAX_MESSAGE
        if message.size is not None and message.size > limit:
            return replace(message, error=MessageTooLarge(message.size, limit))
        try:
            raw = self._download(self.client, message.id, limit)
        except GraphAuthError:
            raise
        except GraphError as exc:
            return replace(message, error=exc)
        return replace(message, raw=raw)

    def close(self):
        """Close the session of the look-ahead thread, if one was opened."""
        if self._ahead_client is not None:
            self._ahead_client.session.close()
            self._ahead_client = None

    # -- writes ----------------------------------------------------------------------

    def mark_read(self, ids):
        """Mark messages read; returns {id: Outcome}, in the order given."""
        answers = self._batch([(i, self._read_step(i)) for i in dict.fromkeys(ids)])
        return {key: self._outcome(key, answer) for key, answer in answers.items()}

    def mark_read_later(self, ids):
        """Queue messages to mark read in the free steps of the next page's $batch requests.

        Call it once a page is committed; what is still queued when :meth:`pages` ends
        goes out then (or with :meth:`flush`). Results land in ``read_outcomes``.
        """
        self._deferred_reads.extend(i for i in ids if i not in self._deferred_reads)

    def flush(self):
        """Send the queued mark-read steps now; returns ``read_outcomes``."""
        if self._deferred_reads:
            self.read_outcomes.update(self.mark_read(self._deferred_reads))
            self._deferred_reads = []
        return self.read_outcomes

    def move(self, ids, destination):
        """Move messages to a folder (id or well-known name); returns {id: Outcome}
        whose ``new_id`` names the moved message."""
        steps = [
            (
                i,
                {
                    "method": "POST",
                    "url": self.client.mailbox_path(f"messages/{quote_segment(i)}/move"),
                    "headers": {"Content-Type": "application/json", "Prefer": IMMUTABLE_IDS},
                    "body": {"destinationId": destination},
                },
            )
            for i in dict.fromkeys(ids)
        ]
        return {key: self._outcome(key, answer) for key, answer in self._batch(steps).items()}

    # -- internals -------------------------------------------------------------------

    def _delta_page(self, link, page_size):
        headers = {"Prefer": f"odata.maxpagesize={page_size}, {IMMUTABLE_IDS}"}
        try:
            response = self.client.request("GET", link, headers=headers)
        except GraphError as exc:
            if exc.status != 410:
                raise
            raise DeltaTokenExpired(
                status=exc.status,
                code=exc.code,
                request_id=exc.request_id,
                detail=exc.detail,
                location=exc.location,
            ) from exc
        return self.client.json_of(response)

    @staticmethod
    def _require_link(body, name):
        link = body.get(name)
        if not link:
            raise GraphTransientError(
                _lt("Microsoft Graph sent a delta page without a next or delta link.")
            )
        return link

    def _read_step(self, message_id):
        return {
            "method": "PATCH",
            "url": self.client.mailbox_path(f"messages/{quote_segment(message_id)}"),
            "headers": {"Content-Type": "application/json"},
            "body": {"isRead": True},
        }

    def _fetch_steps(self, client, messages, reads):
        """({id: $value answer or error}, {id: read Outcome}) through ``client``."""
        steps = [
            (("value", m.id), {"method": "GET", "url": self._value_url(m.id)}) for m in messages
        ]
        steps += [(("read", i), self._read_step(i)) for i in reads]
        weights = {("value", m.id): m.size or 0 for m in messages}
        answers = self._batch(steps, client, weights) if steps else {}
        return (
            {m.id: answers[("value", m.id)] for m in messages},
            {i: self._outcome(i, answers[("read", i)]) for i in reads},
        )

    def _take_reads(self, count=None):
        count = len(self._deferred_reads) if count is None else count
        queued, self._deferred_reads = self._deferred_reads[:count], self._deferred_reads[count:]
        return queued

    def _reads_ahead(self):
        """Send the queued reads that fill whole batches in a thread, or None.

        The rest waits for the next batches, with the reads of the page being imported:
        splitting a batch's worth in two would cost one more request.
        """
        count = len(self._deferred_reads) // self.batch_size * self.batch_size
        if not count:
            return None
        try:
            client = self._ahead()
        except GraphError:  # no token now: they wait for the final flush
            return None
        upcoming = _Upcoming(self)
        upcoming.start(client, count)
        return upcoming

    def _requeue_reads(self, ids):
        """Reads whose batch failed wait for the next one."""
        self._deferred_reads = [*ids, *(i for i in self._deferred_reads if i not in ids)]

    def _prepare(self, link, known, seen, background):
        """The delta page at ``link`` read, ``known`` asked, and its MIME on the way:
        fetched now, or in a thread when ``background``. Returns a :class:`_Upcoming`."""
        try:
            body = self._delta_page(link, self.page_size)
        except GraphError as exc:
            return _Upcoming(self, error=exc)
        entries = body.get("value") or []
        fresh = {}
        for entry in entries:
            if "@removed" not in entry and entry["id"] not in fresh:
                fresh[entry["id"]] = IncomingMessage(
                    entry["id"],
                    entry.get("internetMessageId"),
                    _parse_time(entry.get("receivedDateTime")),
                    size=_size_of(entry),
                )
        # A page read ahead is asked about before the caller has imported the previous
        # one: an id Graph repeats across pages is recognised here instead.
        skip = {i for i in fresh if i in seen}
        rest = [m for m in fresh.values() if m.id not in skip]
        if known and rest:
            skip.update(known(rest))
        wanted = self._plan([m for m in fresh.values() if m.id not in skip])
        seen.update(fresh)
        upcoming = _Upcoming(self, body, fresh, wanted, skip)
        if not background:
            upcoming.run_here()
            return upcoming
        try:
            client = self._ahead()
        except GraphError as exc:  # no token: the caller hears it with this page
            upcoming.error = exc
            return upcoming
        upcoming.start(client)
        return upcoming

    def _plan(self, messages):
        """The page's new messages, those over ``max_size`` with their error; which of
        them to fetch with the page (in $batch) is :meth:`_batched`."""
        if not self.max_size:
            return messages
        return [
            replace(m, error=MessageTooLarge(m.size, self.max_size))
            if m.size is not None and m.size > self.max_size
            else m
            for m in messages
        ]

    def _batched(self, messages):
        """The messages to fetch in $batch with their page: sizes known, under
        ``alone_from``, and adding up to at most ``page_bytes``, in page order."""
        chosen, held = [], 0
        for message in messages:
            if message.error is not None or message.size is None:
                continue
            if message.size > self.alone_from or held + message.size > self.page_bytes:
                continue
            chosen.append(message)
            held += message.size
        return chosen

    def _download(self, client, message_id, limit):
        """The MIME of one message, streamed into one buffer; a cut body is tried again
        (``client``'s attempts and backoff), a body past ``limit`` stops the download."""
        url = self._value_url(message_id)
        attempt = 0
        while True:
            attempt += 1
            response = client.request("GET", url, stream=True)
            try:
                return _read_body(response, limit)
            except (requests.RequestException, _CutShort) as exc:
                error = GraphTransientError(
                    _lt("Microsoft Graph stopped sending the message; it will be fetched again."),
                    status=response.status_code,
                    code="IncompleteRead",
                    request_id=response.headers.get("request-id"),
                )
                wait = client._wait_before_retry(error, attempt)
                _logger.info(
                    "[Graph API] GET %s: message content cut (%s); %s",
                    urllib.parse.urlsplit(client.endpoints.graph_url(url)).path,
                    type(exc).__name__,
                    "giving up" if wait is None else f"retrying in {wait:.2f}s",
                )
                if wait is None:
                    raise error from None
                client.sleep(wait)
            finally:
                response.close()

    def _ahead(self):
        """A client for the look-ahead thread: its own session (a requests session is not
        shared between threads) and the token the caller's provider gives now, since the
        provider may need the caller's thread (Odoo reads it through the ORM)."""
        if self._ahead_client is None:
            self._ahead_client = copy.copy(self.client)
            self._ahead_client.session = self.client.endpoints.session()
        self._ahead_client.token_provider = _TokenOfTheMoment(
            self.client.token_provider(force_refresh=False)
        )
        return self._ahead_client

    def _make_page(self, upcoming):
        body, fresh, skip = upcoming.body, upcoming.fresh, upcoming.skip
        page = Page(
            messages=upcoming.messages,
            removed_ids=[e["id"] for e in body.get("value") or [] if "@removed" in e],
            next_link=body.get("@odata.nextLink"),
            delta_link=body.get("@odata.deltaLink"),
            known_ids=[i for i in fresh if i in skip],
            loader=self.load,
        )
        if not page.checkpoint:
            self._require_link(body, "@odata.deltaLink")
        _logger.debug(
            "[Incoming Mail] delta page: %d new, %d known, %d removed, %s",
            len(page.messages),
            len(page.known_ids),
            len(page.removed_ids),
            "more to come" if page.next_link else "end of round",
        )
        return page

    def _value_url(self, message_id):
        return self.client.mailbox_path(f"messages/{quote_segment(message_id)}/$value")

    @staticmethod
    def _with_content(message, answer):
        if isinstance(answer, GraphError):
            return replace(message, error=answer)
        try:
            return replace(message, raw=decode_value(answer.get("body")))
        except GraphError as exc:
            return replace(message, error=exc)

    @staticmethod
    def _outcome(key, answer):
        if isinstance(answer, GraphError):
            return Outcome(key, error=answer)
        body = answer.get("body")
        return Outcome(key, new_id=body.get("id") if isinstance(body, dict) else None)

    def _batch(self, steps, client=None, weights=None):
        """Run (key, step) pairs through $batch; returns {key: step answer or GraphError}.

        Throttled or failed steps (429, 5xx) go again in a later batch after their
        Retry-After, at most ``retry_rounds`` times; other errors are final for their
        step only. A step refused for the token fails the whole call: every other step
        would fail the same way. ``weights`` ({key: bytes}) cut a batch before the
        steps' bytes pass ``batch_bytes``, as ``batch_size`` cuts it by count.
        """
        results = {}
        pending = list(steps)
        for round_number in range(self.retry_rounds + 1):
            again = []
            for group in self._groups(pending, weights or {}):
                answers = self._post_batch(group, client or self.client)
                for key, step in group:
                    answer = answers.get(key)
                    status = answer.get("status") if answer else None
                    if isinstance(status, int) and 200 <= status < 300:
                        results[key] = answer
                        continue
                    error = _step_error(answer)
                    if isinstance(error, GraphAuthError):
                        raise error
                    if isinstance(error, GraphTransientError) and round_number < self.retry_rounds:
                        again.append((key, step, error))
                    else:
                        results[key] = error
            if not again:
                break
            wait = max(
                e.retry_after if e.retry_after is not None else 2.0**round_number
                for _, _, e in again
            )
            if wait > self.max_retry_wait:
                results.update((key, error) for key, _, error in again)
                break
            (client or self.client).sleep(wait)
            pending = [(key, step) for key, step, _ in again]
        return {key: results[key] for key, _ in steps}

    def _groups(self, pending, weights):
        group, load = [], 0
        for key, step in pending:
            weight = weights.get(key, 0)
            if group and (len(group) >= self.batch_size or load + weight > self.batch_bytes):
                yield group
                group, load = [], 0
            group.append((key, step))
            load += weight
        if group:
            yield group

    def _post_batch(self, group, client):
        """One $batch request; returns {key: step answer} for the steps Graph answered."""
        keys = {}
        requests = []
        for number, (key, step) in enumerate(group, 1):
            keys[str(number)] = key
            requests.append({"id": str(number), **step})
        response = client.request("POST", "/$batch", json={"requests": requests})
        body = client.json_of(response)
        answers = {}
        listed = body.get("responses") if isinstance(body, dict) else None
        for answer in listed if isinstance(listed, list) else []:
            key = keys.get(str(answer.get("id"))) if isinstance(answer, dict) else None
            if key is not None:
                answers[key] = answer
        return answers


class _CutShort(Exception):
    """A streamed body ended before its Content-Length (urllib3 1.26 says nothing)."""


def _read_body(response, limit):
    """The body of a streamed answer, read in chunks into one buffer: bytes once, not a
    list of chunks and their join. Past ``limit`` it stops with MessageTooLarge."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise MessageTooLarge(int(declared), limit)
    buffer = io.BytesIO()
    for chunk in response.iter_content(STREAM_CHUNK):
        buffer.write(chunk)
        if buffer.tell() > limit:
            raise MessageTooLarge(buffer.tell(), limit)
    if body_cut_short(response):
        raise _CutShort()
    # BytesIO hands its own buffer over when nothing else shares it: no copy here.
    return buffer.getvalue()


class _TokenNeeded(Exception):
    """The look-ahead thread's token was refused: the caller's thread must refresh it."""


class _TokenOfTheMoment:
    """The token provider of the look-ahead thread: one token, no refresh."""

    def __init__(self, token):
        self.token = token

    def __call__(self, force_refresh=False):
        if force_refresh:
            raise _TokenNeeded()
        return self.token


class _Upcoming:
    """A delta page read, whose MIME is being fetched (here, or in a thread), with the
    queued mark-read steps riding along; or those steps alone (no page)."""

    def __init__(self, sync, body=None, fresh=None, wanted=(), skip=(), error=None):
        self.sync = sync
        self.body = body
        self.fresh = fresh or {}
        self.wanted = wanted
        self.skip = skip
        self.error = error
        self.reads = []
        self.messages = None
        self.read_outcomes = None
        self.thread = None

    def run_here(self):
        self.reads = self.sync._take_reads()
        try:
            self._fetch(self.sync.client)
        except GraphError as exc:
            self.error = exc
        except BaseException:
            self.sync._requeue_reads(self.reads)
            self.reads = []
            raise

    def start(self, client, reads=None):
        self.reads = self.sync._take_reads(reads)
        self.thread = threading.Thread(
            target=self._work, args=(client,), name="graph-sync-ahead", daemon=True
        )
        self.thread.start()

    def _work(self, client):
        try:
            self._fetch(client)
        except Exception as exc:  # handed to the caller's thread by result()
            self.error = exc

    def _fetch(self, client):
        batched = self.sync._batched(self.wanted)
        contents, self.read_outcomes = self.sync._fetch_steps(client, batched, self.reads)
        # Decoded here, so that a thread does it while the caller imports; the others
        # wait for Page.contents.
        self.messages = [
            self.sync._with_content(m, contents[m.id]) if m.id in contents else m
            for m in self.wanted
        ]

    def settle(self):
        """Wait for the work; record its mark-read outcomes, or queue them again."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
            if isinstance(self.error, _TokenNeeded):
                # Refused token: fetch again from the caller's thread, which refreshes it.
                self.error = None
                self.sync._requeue_reads(self.reads)
                self.run_here()
        if self.read_outcomes is not None:
            self.sync.read_outcomes.update(self.read_outcomes)
            self.read_outcomes = None
        elif self.reads:
            self.sync._requeue_reads(self.reads)
        self.reads = []

    def result(self):
        """The :class:`Page`, or the error that stopped it."""
        self.settle()
        if self.error is not None:
            raise self.error
        return self.sync._make_page(self)
