"""Exchange Online's sending limits of one mailbox: the budget left, and when queued mail can go.

Pure arithmetic, no I/O and no Odoo: the caller passes plain values (``docs/sending-limits.md``).

- A *ledger* is an iterable of ``(sent_at, recipient_count)``, one entry per message Microsoft
  accepted from the mailbox (the signed-in account: Exchange counts Send As and Send on Behalf
  against the delegate). ``recipient_count`` is the To, Cc and Bcc of that message
  (:func:`count_recipients`); an address met again in another message counts again.
- Times are epoch seconds (int or float) or datetimes (naive ones are UTC, as Odoo stores them).
  Answers come back in the kind of the ``now`` given: seconds, naive or aware UTC datetimes.
- An entry counts against the recipient rate from its time until ``window`` later, and against
  the message rate until ``minute`` later. The ledger is history: no mail is placed before its
  newest entry, and an entry "from the future" (clock skew between workers) counts already.
"""

import ast
import bisect
import collections
import datetime
import email.parser
import email.policy
import email.utils
import functools
import itertools
import re
from dataclasses import dataclass, field, replace

UTC = datetime.UTC
DAY = 86_400
MINUTE = 60


@dataclass(frozen=True)
class Limits:
    """Exchange Online's defaults; None switches a limit off."""

    recipients_per_day: int | None = 10_000
    recipients_per_message: int | None = 500
    messages_per_minute: int | None = 30
    window: float = DAY
    minute: float = MINUTE

    def scaled(self, time_scale):
        """The same limits with the day and the minute multiplied (the sandbox's time_scale)."""
        return replace(self, window=DAY * time_scale, minute=MINUTE * time_scale)


DEFAULT_LIMITS = Limits()
NO_LIMITS = Limits(recipients_per_day=None, recipients_per_message=None, messages_per_minute=None)


# times ------------------------------------------------------------------------------------


def _seconds(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"a time must be epoch seconds or a datetime, not {type(value).__name__}")


def _like(reference, seconds):
    """seconds in the kind of reference (float, naive or aware UTC datetime); None stays."""
    if seconds is None or not isinstance(reference, datetime.datetime):
        return seconds
    moment = datetime.datetime.fromtimestamp(seconds, UTC)
    return moment if reference.tzinfo is not None else moment.replace(tzinfo=None)


def _entries(ledger):
    """The ledger as (seconds, count) sorted by time; entries of no recipient are kept."""
    entries = [(_seconds(when), int(count)) for when, count in ledger]
    entries.sort(key=lambda entry: entry[0])
    return entries


# single checks ------------------------------------------------------------------------------


def count_recipients(*fields):
    """Recipients of one message as Exchange counts them: every distinct address of the fields.

    Each field is a header value ("Bob <bob@x>, carol@y") or a list of them: pass To, Cc, Bcc.
    """
    return len(_distinct_addresses(fields))


# A bare address that email.utils parses as itself: most recipients of a queue are written so,
# and the forecast reads every waiting mail's at each read of a server form.
_BARE_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)


@functools.lru_cache(maxsize=16_384)
def _addresses(value):
    """The addresses of one header value, lower case (a partner's address recurs in many
    mails, and the forecast asks for a mail's recipients and its external ones)."""
    if _BARE_ADDRESS.fullmatch(value):
        return (value.lower(),)
    return tuple(address.lower() for _, address in email.utils.getaddresses([value]) if address)


def _distinct_addresses(fields):
    """The distinct addresses of fields (header values or lists of them)."""
    found = set()
    for item in fields:
        if not item:
            continue
        for value in [item] if isinstance(item, str) else [str(v) for v in item if v]:
            found.update(_addresses(value))
    return found


# Precedence header values of mass mail (RFC 2076 and what mailing tools send).
BULK_PRECEDENCE = ("bulk", "list", "junk")


def is_bulk(headers, from_mailing=False):
    """Mass mail, which goes after transactional mail (a password reset, an invoice): a
    mailing's, or one whose headers (Odoo keeps them as the text of a dict) say Precedence
    bulk, list or junk."""
    if from_mailing:
        return True
    try:
        parsed = ast.literal_eval(headers) if headers else {}
    except (ValueError, SyntaxError):
        return False
    precedence = parsed.get("Precedence", "") if isinstance(parsed, dict) else ""
    return str(precedence).strip().lower() in BULK_PRECEDENCE


def message_recipients(email_to, email_cc, partner_emails):
    """Recipients of each message Odoo makes of one mail, as Exchange counts them: one
    message to the To and Cc addresses, and one per recipient partner (as Odoo's
    ``_prepare_outgoing_list`` builds them)."""
    counts = []
    if email_to or email_cc:
        counts.append(count_recipients(email_to, email_cc) or 1)
    counts.extend(count_recipients(partner_email) or 1 for partner_email in partner_emails)
    return counts or [1]


def message_external(domains, email_to, email_cc, partner_emails):
    """External recipients of each message of :func:`message_recipients`, in its order:
    those outside the tenant's accepted domains."""
    counts = []
    if email_to or email_cc:
        counts.append(count_external(domains, email_to, email_cc))
    counts.extend(count_external(domains, partner_email) for partner_email in partner_emails)
    return counts or [0]


def too_many_recipients(count, limits=DEFAULT_LIMITS):
    """True when a message of count recipients can never be sent as it is (split it)."""
    per_message, per_day = limits.recipients_per_message, limits.recipients_per_day
    return (per_message is not None and count > per_message) or (
        per_day is not None and count > per_day
    )


RECIPIENTS_PER_DAY = "recipients_per_day"
RECIPIENTS_PER_MESSAGE = "recipients_per_message"
MESSAGES_PER_MINUTE = "messages_per_minute"
TENANT_EXTERNAL = "tenant_external_recipients"

# The tenant external recipient rate limit (TERRL) of Exchange Online: the external recipients
# of every mailbox of a tenant together, in a sliding 24 hours (docs/sending-limits.md).
TRIAL_TENANT_LIMIT = 5_000


def tenant_external_limit(licences, trial=False):
    """Microsoft's formula: 500 x (purchased email licences ^ 0.7) + 9,500; 5,000 for a
    trial tenant. Rounded down (Microsoft's own examples round to the nearest): never above
    Exchange's. Fewer than one licence counts as one."""
    if trial:
        return TRIAL_TENANT_LIMIT
    return int(500 * max(1, int(licences or 0)) ** 0.7 + 9_500)


def accepted_domains(domains):
    """The tenant's accepted domains as a frozenset, lower case; an entry "*.example.com"
    accepts every subdomain of example.com (Exchange's internal relay domain that accepts
    mail for all subdomains)."""
    found = set()
    for value in domains or ():
        domain = str(value or "").strip().strip(".").lower().lstrip("@")
        if domain:
            found.add(domain)
    return frozenset(found)


def is_internal(address, domains):
    domain = str(address or "").rpartition("@")[2].strip().lower().rstrip(".")
    if not domain:
        return True
    if domain in domains:
        return True
    parts = domain.split(".")
    return any("*." + ".".join(parts[i:]) in domains for i in range(1, len(parts)))


def count_external(domains, *fields):
    """External recipients of one message: its distinct addresses (To, Cc, Bcc: header
    values or lists) whose domain is not one of ``domains`` (``accepted_domains``)."""
    return sum(1 for address in _distinct_addresses(fields) if not is_internal(address, domains))


def _too_many_reason(count, limits):
    per_message = limits.recipients_per_message
    return (
        RECIPIENTS_PER_MESSAGE
        if per_message is not None and count > per_message
        else RECIPIENTS_PER_DAY
    )


@dataclass(frozen=True)
class Admission:
    """The answer of ``Budget.admit``.

    ``slot``: when Exchange lets the message leave if it is submitted now (None: do not submit
    it now); ``retry_at``: when to ask again (None: never, the message is too large for the
    limits as they are); ``limit``: the limit that holds it back (RECIPIENTS_PER_DAY,
    MESSAGES_PER_MINUTE, RECIPIENTS_PER_MESSAGE) or None.
    """

    slot: object
    retry_at: object
    limit: str | None

    @property
    def admitted(self):
        return self.slot is not None


class Budget:
    """The sending budget of a mailbox from its ledger: what is used, when the next mail may go.

    Queries cost O(log n) after an O(n log n) start; ``record`` keeps it up to date.
    """

    def __init__(self, ledger=(), limits=DEFAULT_LIMITS):
        self.limits = limits
        self._load(_entries(ledger))

    def _load(self, entries):
        self._entries = entries
        self._times = [when for when, _ in entries]
        # The moments each entry stops counting, in the same (sorted) order.
        self._day_ends = [when + self.limits.window for when in self._times]
        self._minute_ends = [when + self.limits.minute for when in self._times]
        self._before = [0, *itertools.accumulate(count for _, count in entries)]

    def record(self, sent_at, recipient_count):
        """Add one accepted message to the ledger."""
        entry = (_seconds(sent_at), int(recipient_count))
        entries = self._entries
        if not entries or entry[0] >= entries[-1][0]:
            entries.append(entry)
            self._times.append(entry[0])
            self._day_ends.append(entry[0] + self.limits.window)
            self._minute_ends.append(entry[0] + self.limits.minute)
            self._before.append(self._before[-1] + entry[1])
        else:
            bisect.insort(entries, entry, key=lambda e: e[0])
            self._load(entries)

    def recipients_used(self, now):
        """Recipients counted in the rolling window at now."""
        gone = bisect.bisect_right(self._day_ends, _seconds(now))
        return self._before[-1] - self._before[gone]

    def recipients_left(self, now):
        """Recipients that may still go at now (None: no recipient rate)."""
        per_day = self.limits.recipients_per_day
        return None if per_day is None else max(0, per_day - self.recipients_used(now))

    def messages_last_minute(self, now):
        """Messages counted in the rolling minute at now."""
        return len(self._minute_ends) - bisect.bisect_right(self._minute_ends, _seconds(now))

    def _earliest(self, count, now):
        if too_many_recipients(count, self.limits):
            return None
        limits = self.limits
        # The ledger is history: nothing goes before its newest entry.
        at = max(now, self._times[-1]) if self._times else now
        if limits.recipients_per_day is not None:
            # The fewest oldest entries whose leaving brings the window down to per_day - count.
            total, allowed = self._before[-1], limits.recipients_per_day - count
            must_leave = bisect.bisect_left(self._before, total - allowed)
            if must_leave > 0:
                at = max(at, self._day_ends[must_leave - 1])
        rate = limits.messages_per_minute
        if rate is not None and len(self._minute_ends) >= rate:
            at = max(at, self._minute_ends[-rate])
        return at

    def next_slot(self, recipient_count, now):
        """The earliest time from now when a message of recipient_count may go without being
        refused or held back; None if it never can (too many recipients)."""
        return _like(now, self._earliest(recipient_count, _seconds(now)))

    def can_send(self, recipient_count, now):
        """(whether a message of recipient_count may go at now, the earliest time it may)."""
        earliest = self._earliest(recipient_count, _seconds(now))
        return earliest is not None and earliest <= _seconds(now), _like(now, earliest)

    def forecast(self, queue, now):
        return _forecast(queue, self._entries, self.limits, now)

    def room_at(self, recipient_count, now):
        """The earliest time from now when the rolling day has room for recipient_count more
        recipients (None: never, more than a whole day allows), the message rate and the
        order of the entries aside: the tenant's budget, which every mailbox of the tenant
        spends side by side."""
        seconds = _seconds(now)
        per_day = self.limits.recipients_per_day
        if per_day is None:
            return now
        if recipient_count > per_day:
            return None
        if self.recipients_used(seconds) + recipient_count <= per_day:
            return now
        total, allowed = self._before[-1], per_day - recipient_count
        must_leave = bisect.bisect_left(self._before, total - allowed)
        return _like(now, max(seconds, self._day_ends[must_leave - 1]))

    def admit(self, recipient_count, now, hold=0.0):
        """Whether a message of recipient_count may be handed to Exchange at now (see Admission).

        The recipient rate must allow it at now: Exchange refuses past it. The message rate may
        hold it back, as Exchange does, but by hold seconds at most: a client keeps at most that
        much of its mail waiting at Microsoft. Exchange lets messages leave in the order they
        were submitted, so the slot is never before the ledger's newest entry.
        """
        limits = self.limits
        seconds = _seconds(now)
        if too_many_recipients(recipient_count, limits):
            return Admission(None, None, _too_many_reason(recipient_count, limits))
        per_day = limits.recipients_per_day
        if per_day is not None and self.recipients_used(seconds) + recipient_count > per_day:
            # The fewest oldest entries whose leaving makes room for this message.
            total, allowed = self._before[-1], per_day - recipient_count
            must_leave = bisect.bisect_left(self._before, total - allowed)
            wait = max(seconds, self._day_ends[must_leave - 1])
            return Admission(None, _like(now, wait), RECIPIENTS_PER_DAY)
        slot = max(seconds, self._times[-1]) if self._times else seconds
        rate = limits.messages_per_minute
        if rate is not None and len(self._minute_ends) >= rate:
            slot = max(slot, self._minute_ends[-rate])
        if slot > seconds + hold:
            return Admission(None, _like(now, slot - hold), MESSAGES_PER_MINUTE)
        return Admission(_like(now, slot), _like(now, slot), None)


def admit_with_tenant(budget, shared, count, external, now, tenant_paused_until=None):
    """Admission of a message of count recipients, external of them outside the tenant: the
    account's Budget first (its message rate may hold it a minute), then the tenant's external
    Budget shared (None: no tenant) and the tenant's pause after a refusal Odoo did not expect."""
    admission = budget.admit(count, now, hold=budget.limits.minute)
    if not admission.admitted or not external or shared is None:
        return admission
    if tenant_paused_until and tenant_paused_until > now:
        return Admission(None, tenant_paused_until, TENANT_EXTERNAL)
    room = shared.room_at(external, now)
    if room is None or room > now:
        return Admission(None, room, TENANT_EXTERNAL)
    return admission


def round_up(moment, step):
    """A naive UTC datetime rounded up to a multiple of step seconds (never before moment):
    the time a waiting mail is said to go, in whole minutes (or time-scaled ones)."""
    step = max(step, 1)
    seconds = moment.replace(tzinfo=UTC).timestamp()
    rounded = -(-seconds // step) * step
    result = datetime.datetime.fromtimestamp(rounded, UTC).replace(tzinfo=None, microsecond=0)
    if result < moment:
        result += datetime.timedelta(seconds=1)
    return result


# After Exchange refused mail for a rate that Odoo's ledger allowed (mail sent outside Odoo
# counts too), sending waits this long, doubling on each refusal up to the cap.
QUOTA_BACKOFF_MINUTES = 30
QUOTA_BACKOFF_CAP_MINUTES = 240


def next_backoff(previous_minutes):
    """Minutes to wait after an unexpected quota refusal, given the previous wait (0: none)."""
    return min(max(QUOTA_BACKOFF_MINUTES, 2 * (previous_minutes or 0)), QUOTA_BACKOFF_CAP_MINUTES)


# forecast -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """When each queued mail can go, in queue order, and when the queue is empty.

    ``slots``: [(id, time or None)], None for a mail that can never go as it is (``refused``);
    ``empties_at``: the time of the last mail that can go (``now`` for nothing to send).
    """

    slots: list
    empties_at: object
    refused: tuple = ()
    times: dict = field(default_factory=dict, repr=False)

    def time_of(self, mail_id):
        return self.times[mail_id]


class _Pacer:
    """The ledger as two sliding windows that only move forward in time."""

    def __init__(self, entries, limits, start):
        self.limits = limits
        self.at = start
        # Entries still in the day at start (and every later one), with their sum.
        first = bisect.bisect_right([when + limits.window for when, _ in entries], start)
        self.day = collections.deque(entries[first:])
        self.used = sum(count for _, count in self.day)
        rate = limits.messages_per_minute
        self.recent = collections.deque(
            (when for when, _ in entries[-rate:]) if rate else (), maxlen=rate
        )

    def place(self, count):
        """The time the next mail of count recipients goes (recorded), or None: never."""
        at = self.earliest(count)
        if at is not None:
            self.commit(at, count)
        return at

    def earliest(self, count, at=None):
        """The earliest time from at (or the last placement) when count may go; None: never.

        Entries that left the day by then are dropped: every later placement is later."""
        limits = self.limits
        if too_many_recipients(count, limits):
            return None
        at, day, window = max(self.at, at or self.at), self.day, limits.window
        per_day = limits.recipients_per_day
        if per_day is not None:
            while day and (day[0][0] + window <= at or self.used + count > per_day):
                when, gone = day.popleft()
                at = max(at, when + window)
                self.used -= gone
        rate = limits.messages_per_minute
        if rate is not None and len(self.recent) == rate:
            at = max(at, self.recent[0] + limits.minute)
        return at

    def commit(self, at, count):
        if self.limits.recipients_per_day is not None:
            self.day.append((at, count))
            self.used += count
        if self.limits.messages_per_minute is not None:
            self.recent.append(at)
        self.at = at


class _SharedPacer:
    """A day's budget that many mailboxes spend side by side (the tenant's external
    recipients): a mail may go before another mailbox's later one, so placements are not
    in time order. Conservative: an entry counts until it is dropped to make room, and no
    mail is then placed before the moment it left (``floor``); never over the limit."""

    def __init__(self, entries, limits, start):
        self.limits = limits
        first = bisect.bisect_right([when + limits.window for when, _ in entries], start)
        self.day = sorted(entries[first:])
        self.gone = 0  # self.day[:gone] left the window
        self.used = sum(count for _, count in self.day)
        self.floor = start

    def earliest(self, count, at):
        per_day = self.limits.recipients_per_day
        if not count or per_day is None:
            return at
        if count > per_day:
            return None
        day = self.day
        while self.used + count > per_day:
            when, gone = day[self.gone]
            self.gone += 1
            self.used -= gone
            self.floor = max(self.floor, when + self.limits.window)
        return max(at, self.floor)

    def commit(self, at, count):
        if count and self.limits.recipients_per_day is not None:
            # Placements are at or after the floor, and the floor only rises: bisect keeps
            # the day sorted for what is still to be dropped.
            bisect.insort(self.day, (at, count), lo=self.gone)
            self.used += count


def _forecast(queue, entries, limits, now):
    start = _seconds(now)
    if entries:
        start = max(start, entries[-1][0])
    pacer = _Pacer(entries, limits, start)
    slots, refused, times, last = [], [], {}, start
    for mail_id, count in queue:
        at = pacer.place(count)
        if at is None:
            refused.append(mail_id)
        else:
            last = at
        when = _like(now, at)
        slots.append((mail_id, when))
        times[mail_id] = when
    return Forecast(slots, _like(now, last), tuple(refused), times)


@dataclass(frozen=True)
class SharedForecast(Forecast):
    """A Forecast of several mailboxes that share the tenant's budget; ``empties_by_key``:
    {mailbox key: when its last mail that can go goes}."""

    empties_by_key: dict = field(default_factory=dict)


def forecast_shared(queue, ledgers, limits, shared_ledger, shared_limits, now):
    """When each queued mail of several mailboxes of one tenant can go.

    queue: [(mail_id, key, recipient_count, external_count)] in sending order across the
    mailboxes (transactional first, then oldest); ledgers and limits: {key: ledger} and
    {key: Limits} of each mailbox; shared_ledger: [(sent_at, external_count)] of the whole
    tenant; shared_limits: its Limits (only recipients_per_day and window count). Each mail
    goes at the earliest time its mailbox's limits and the tenant's budget both allow; a mail
    of one mailbox never waits for another mailbox's. O(len(queue) log + len(ledgers)).
    """
    start = _seconds(now)
    shared = _SharedPacer(_entries(shared_ledger), shared_limits, start)
    pacers = {}
    slots, refused, times, by_key, last = [], [], {}, {}, start
    for mail_id, key, count, external in queue:
        pacer = pacers.get(key)
        if pacer is None:
            entries = _entries(ledgers.get(key, ()))
            pacer = pacers[key] = _Pacer(
                entries, limits[key], max(start, entries[-1][0]) if entries else start
            )
        at = pacer.earliest(count)
        if at is not None:
            shared_at = shared.earliest(external, at)
            # The mailbox's own limits again at the tenant's time (they only get looser).
            at = None if shared_at is None else pacer.earliest(count, shared_at)
        if at is None:
            refused.append(mail_id)
        else:
            pacer.commit(at, count)
            shared.commit(at, external)
            last = max(last, at)
            by_key[key] = max(by_key.get(key, at), at)
        when = _like(now, at)
        slots.append((mail_id, when))
        times[mail_id] = when
    return SharedForecast(
        slots,
        _like(now, last),
        tuple(refused),
        times,
        {key: _like(now, at) for key, at in by_key.items()},
    )


def forecast(queue, ledger=(), limits=DEFAULT_LIMITS, now=None):
    """When each queued mail, given in sending order as (id, recipient_count), can go.

    Oldest first and one after the other, each as early as both rates allow: no mail goes before
    the one ahead of it, so the caller decides the order (transactional mail before mass mail).
    O(len(queue) + len(ledger)) after sorting the ledger.
    """
    if now is None:
        raise TypeError("forecast() needs now")
    return _forecast(queue, _entries(ledger), limits, now)


# recognising refusals -----------------------------------------------------------------------

# The recipient rate refusal: Exchange's SubmissionQuotaExceededException (SMTP 554 5.2.0), the
# sandbox's Graph code ErrorSubmissionQuotaExceeded, and the enhanced status 5.1.90 ("you've
# reached your daily limit for message recipients") of Exchange Online's NDR table.
_QUOTA = re.compile(r"SubmissionQuotaExceeded|(?<![\d.])5\.1\.90(?![\d.])", re.IGNORECASE)


def _texts(value, depth=0):
    if depth > 6 or value is None:
        return
    if isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value).decode("latin-1")
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item, depth + 1)
    elif isinstance(value, BaseException):
        # services.errors.GraphError keeps Microsoft's code and scrubbed message.
        for name in ("code", "detail", "user_message"):
            yield from _texts(getattr(value, name, None), depth + 1)
        yield from _texts(list(value.args), depth + 1)
    else:
        yield str(value)


# The tenant's external recipient rate: enhanced status 5.7.233 (5.7.232 for a trial tenant) of
# Exchange Online's NDR table, "... exceeded its daily limit for sending email to external
# recipients (tenant external recipient rate limit)".
_TENANT = re.compile(
    r"(?<![\d.])5\.7\.23[23](?![\d.])|tenant external recipient rate limit", re.IGNORECASE
)


def is_tenant_refusal(value):
    """True for Exchange's refusal of external mail past the tenant's limit (TERRL)."""
    return any(_TENANT.search(text) for text in _texts(value))


def is_quota_refusal(value):
    """True for Exchange's recipient rate refusal, in a Graph error (exception, error body or
    its text) or in the text of a delivery status notification."""
    return any(_QUOTA.search(text) for text in _texts(value))


_HEADERS = email.parser.HeaderParser(policy=email.policy.default)
_RETURNED = ("text/rfc822-headers", "message/rfc822-headers", "message/rfc822")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def _first_id(value):
    found = _MESSAGE_ID.search(str(value or ""))
    return found.group(0) if found else None


def _part_text(part):
    payload = part.get_payload(decode=True) if not part.is_multipart() else None
    if payload is None:  # message/delivery-status: a list of header blocks
        payload = part.as_bytes(policy=email.policy.compat32)
    return payload.decode("latin-1")


def _leaves(message):
    """The parts of a message that are its own text, returned messages or headers left out."""
    for part in message.iter_parts():
        kind = part.get_content_type()
        if kind in _RETURNED:
            continue
        if part.is_multipart() and kind != "message/delivery-status":
            yield from _leaves(part)
        else:
            yield part


def _returned_id(message):
    for part in message.walk():
        if part.get_content_type() not in _RETURNED:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):  # message/rfc822, parsed as a message
            found = _first_id(payload[0].get("Message-ID")) if payload else None
        else:
            found = _first_id(_HEADERS.parsestr(_part_text(part).lstrip()).get("Message-ID"))
        if found:
            return found
    return None


def parse_quota_ndr(raw_mime):
    """The original Message-ID of a recipient rate NDR, or None for any other message.

    A report (``multipart/report``, or a message Exchange marks X-MS-Exchange-Message-Is-Ndr)
    whose own text or status says SubmissionQuotaExceeded, or 5.7.233 / 5.7.232 (the
    tenant's external recipient rate: ``quota_ndr_limit`` tells which; a returned original
    is not looked into); the Message-ID comes from its returned headers or message, else
    from In-Reply-To or References.
    """
    if isinstance(raw_mime, str):
        raw_mime = raw_mime.encode("utf-8", "surrogateescape")
    message = email.message_from_bytes(bytes(raw_mime), policy=email.policy.default)
    if _report_limit(message) is None:
        return None
    return (
        _returned_id(message)
        or _first_id(message.get("In-Reply-To"))
        or _first_id(message.get("References"))
    )


def _report_limit(message):
    if (
        message.get_content_type() != "multipart/report"
        and message.get("X-MS-Exchange-Message-Is-Ndr") is None
    ):
        return None
    leaves = list(_leaves(message)) if message.is_multipart() else [message]
    texts = [
        _part_text(part)
        for part in leaves
        if part.get_content_maintype() == "text"
        or part.get_content_type() == "message/delivery-status"
    ]
    if any(_QUOTA.search(text) for text in texts):
        return RECIPIENTS_PER_DAY
    if any(_TENANT.search(text) for text in texts):
        return TENANT_EXTERNAL
    return None


def quota_ndr_limit(raw_mime):
    """Which limit a report says Exchange refused for: RECIPIENTS_PER_DAY (the mailbox's
    recipient rate), TENANT_EXTERNAL (the tenant's external recipient rate), or None."""
    if isinstance(raw_mime, str):
        raw_mime = raw_mime.encode("utf-8", "surrogateescape")
    if not isinstance(raw_mime, bytes | bytearray | memoryview):
        raw_mime = raw_mime.as_bytes()
    return _report_limit(email.message_from_bytes(bytes(raw_mime), policy=email.policy.default))


# Who Exchange Online names as the sender of the reports it generates itself.
EXCHANGE_REPORTERS = frozenset({"microsoftexchange329e71ec88ae4615bbc36ab6ce41109e", "postmaster"})


def generated_by_exchange(message):
    """Whether a message carries the marks of a report that Exchange generated inside the
    organization: Exchange's reporting sender and ``X-MS-Exchange-Organization-AuthAs:
    Internal``.

    Exchange's header firewall removes every ``X-MS-Exchange-Organization-*`` header from mail
    that enters the organization from outside (Microsoft, "Header firewall"), so read from the
    mailbox through Graph, that header cannot come from an outside sender. Anywhere else (a
    mail gateway, another IMAP server) it proves nothing: the caller decides where it was read.
    """
    auth_as = str(message.get("X-MS-Exchange-Organization-AuthAs") or "").strip().lower()
    sender = email.utils.parseaddr(str(message.get("From") or ""))[1].lower()
    return auth_as == "internal" and sender.partition("@")[0] in EXCHANGE_REPORTERS
