"""Exchange Online's sending limits per mailbox.

From docs/microsoft-facts.md, "Sending and Exchange Online's limits":

- Recipient rate: at most ``recipients_per_day`` (10,000) recipients in a rolling window of a day,
  counting the To, Cc and Bcc of every accepted message (an address met again in another message
  counts again; within one message each address counts once, as in an SMTP envelope). A message
  that would go past it is refused as a whole and counts nothing; sending works again as soon as
  enough of the window has rolled on. Refused in one of two forms (``refusal``):
  ``"ndr"`` (the default): Graph accepts (202), the Sent Items copy is kept, nothing leaves, and a
  non-delivery report (a ``multipart/report`` DSN with ``554 5.2.0
  STOREDRV.Submission.Exception:SubmissionQuotaExceededException``) lands in the submitting
  mailbox's Inbox; ``"error"``: the request fails at once with ``error_status`` (403)
  ``ErrorSubmissionQuotaExceeded`` and nothing is kept.
- Recipients per message: more than ``recipients_per_message`` (500; Exchange allows 1 to 1,000):
  400 ``ErrorTooManyRecipients`` at once.
- Message rate: ``messages_per_minute`` (30) per rolling minute. The excess is accepted and carried
  over: each message leaves at the first moment when fewer than that many left in the minute
  before, in submission order, recorded as ``Delivery.delivered_at``; mail to a sandbox mailbox
  reaches its Inbox then (``release_due``).

- The tenant's external recipient rate (TERRL; Exchange Team blog, "Introducing Exchange Online
  Tenant Outbound Email Limits", Feb 24 2025): every mailbox of a tenant together may send to at
  most 500 x (licences ^ 0.7) + 9,500 external recipients in a sliding day (5,000 for a trial
  tenant); licences default to the tenant's user mailboxes. External: a domain that is not an
  accepted domain (the tenant's domain, the domains of its mailboxes, and any configured with
  ``configure_tenant_limit(accepted_domains=...)``; ``*.domain`` accepts its subdomains). A
  message whose external recipients do not all fit is refused for all of them (202, then an NDR
  ``550 5.7.233``, ``5.7.232`` for a trial tenant, in the submitting mailbox's Inbox); its
  internal recipients still get it. Refused recipients count for nothing, neither against the
  tenant nor against the mailbox's recipient rate (Microsoft does not say; the choice that
  never lets the sandbox refuse what Exchange would let go is not known either way).

Exchange counts a send through Send As or Send on Behalf against the delegate (the signed-in
user), not against the mailbox sent from: budgets are kept per signed-in user's mailbox. The day
and the minute are multiplied by ``time_scale`` (None: the one of ``configure_limits``). Every
setting can be overridden per mailbox; the state lives in the Directory, so ``Sandbox.reset()``
clears it.
"""

import collections
import email.utils
import heapq
import itertools
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

from .errors import GraphError
from .messages import parse_moment

DAY = 86_400.0
MINUTE = 60.0
# Exchange Online lets a tenant raise the recipients of one message up to this many.
MAX_RECIPIENTS_PER_MESSAGE = 1_000
REFUSALS = ("ndr", "error")

DEFAULTS = {
    "recipients_per_day": 10_000,
    "recipients_per_message": 500,
    "messages_per_minute": 30,
    # How a message past the recipient rate is refused: "ndr" (202 then a report) or "error".
    "refusal": "ndr",
    # Status of the immediate refusal (Microsoft documents none; see README.md).
    "error_status": 403,
    # None: follow Sandbox.configure_limits(time_scale=...).
    "time_scale": None,
}

QUOTA_CODE = "ErrorSubmissionQuotaExceeded"
QUOTA_SMTP = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
QUOTA_DIAGNOSTIC = (
    QUOTA_SMTP + "; Failed to process message due to a permanent exception with message "
    "[BeginDiagnosticData]Cannot submit message. The sender's submission quota was exceeded."
    "[EndDiagnosticData]"
)
TOO_MANY_CODE = "ErrorTooManyRecipients"
# Exchange's own name for the address its reports come from.
NDR_LOCAL_PART = "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"


@dataclass
class _Budget:
    """One mailbox's accepted submissions: (time, recipients) in the day, departure times."""

    sent: collections.deque = field(default_factory=collections.deque)
    used: int = 0
    departures: collections.deque = field(default_factory=collections.deque)


TENANT_DEFAULTS = {
    # None: 500 x licences^0.7 + 9,500 (5,000 for a trial tenant).
    "external_recipients_per_day": None,
    # None: the tenant's user mailboxes.
    "licences": None,
    "trial": False,
    # Accepted domains besides the tenant's domain and its mailboxes' domains.
    "accepted_domains": (),
    # None: follow Sandbox.configure_limits(time_scale=...).
    "time_scale": None,
}
TERRL_STATUS = "550 5.7.233"
TERRL_TRIAL_STATUS = "550 5.7.232"
TERRL_TEXT = (
    "Your message can't be sent because your tenant exceeded its daily limit for sending "
    "email to external recipients (tenant external recipient rate limit)"
)
TERRL_TRIAL_TEXT = (
    "Your message can't be sent because your trial tenant has exceeded its daily limit for "
    "sending email to external recipients (tenant external recipient rate limit)"
)


@dataclass
class _State:
    defaults: dict = field(default_factory=lambda: dict(DEFAULTS))
    overrides: dict = field(default_factory=dict)  # mailbox id -> settings
    budgets: dict = field(default_factory=lambda: collections.defaultdict(_Budget))
    tenant_settings: dict = field(default_factory=dict)  # tenant id -> settings
    tenant_budgets: dict = field(default_factory=lambda: collections.defaultdict(_Budget))
    held: list = field(default_factory=list)  # heap of (delivered_at, seq, address, raw)
    seq: itertools.count = field(default_factory=itertools.count)


@dataclass(frozen=True)
class Admission:
    """What Exchange does with an accepted submission: when it leaves, or that it bounces."""

    delivered_at: float
    bounced: bool = False
    # External recipients refused for the tenant's limit (an NDR goes back for them).
    refused: tuple = ()
    trial: bool = False


def _state(sb):
    directory = sb.directory
    state = getattr(directory, "exchange_limits", None)
    if state is None:
        state = directory.exchange_limits = _State()
    return state


def _check(settings):
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown sending limit settings: {sorted(unknown)}")
    for name in ("recipients_per_day", "recipients_per_message", "messages_per_minute"):
        value = settings.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None")
    per_message = settings.get("recipients_per_message")
    if per_message is not None and per_message > MAX_RECIPIENTS_PER_MESSAGE:
        raise ValueError(
            f"Exchange Online allows at most {MAX_RECIPIENTS_PER_MESSAGE} recipients per message"
        )
    if "refusal" in settings and settings["refusal"] not in REFUSALS:
        raise ValueError(f"refusal must be one of {REFUSALS}")
    scale = settings.get("time_scale")
    if scale is not None and not scale > 0:
        raise ValueError("time_scale must be positive")


def configure(sb, mailbox=None, **settings):
    """Set the limits of every mailbox (mailbox=None) or override them for one mailbox."""
    _check(settings)
    with sb.lock:
        state = _state(sb)
        if mailbox is None:
            state.defaults.update(settings)
        else:
            box = sb.directory.require_mailbox(mailbox)
            state.overrides.setdefault(box.id, {}).update(settings)


def _settings(sb, box):
    state = _state(sb)
    settings = dict(state.defaults)
    settings.update(state.overrides.get(box.id, {}))
    if settings["time_scale"] is None:
        settings["time_scale"] = sb.limits.time_scale
    return settings


def configure_tenant(sb, tenant, **settings):
    """Set the tenant's external recipient rate: external_recipients_per_day (None: from the
    formula), licences, trial, accepted_domains, time_scale."""
    unknown = set(settings) - set(TENANT_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown tenant limit settings: {sorted(unknown)}")
    for name in ("external_recipients_per_day", "licences"):
        value = settings.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None")
    if "accepted_domains" in settings:
        settings["accepted_domains"] = tuple(
            str(domain).strip().lower() for domain in settings["accepted_domains"] or ()
        )
    with sb.lock:
        key = sb.directory.require_tenant(tenant).id
        _state(sb).tenant_settings.setdefault(key, {}).update(settings)


def _tenant_settings(sb, tenant):
    settings = dict(TENANT_DEFAULTS)
    settings.update(_state(sb).tenant_settings.get(tenant.id, {}))
    if settings["licences"] is None:
        settings["licences"] = max(1, len(sb.directory.tenant_users(tenant)))
    if settings["external_recipients_per_day"] is None:
        settings["external_recipients_per_day"] = (
            5_000 if settings["trial"] else int(500 * settings["licences"] ** 0.7 + 9_500)
        )
    if settings["time_scale"] is None:
        settings["time_scale"] = sb.limits.time_scale
    domains = {tenant.domain.lower(), *settings["accepted_domains"]}
    domains.update(
        box.address.rpartition("@")[2].lower()
        for box in sb.directory.mailboxes.values()
        if box.tenant is tenant
    )
    settings["accepted_domains"] = tuple(sorted(domains))
    return settings


def tenant_effective(sb, tenant):
    """The tenant's limit settings, formula, accepted domains and time_scale resolved."""
    with sb.lock:
        return _tenant_settings(sb, sb.directory.require_tenant(tenant))


def tenant_external_used(sb, tenant):
    """External recipients of the whole tenant in the current sliding day (sandbox clock)."""
    with sb.lock:
        tenant = sb.directory.require_tenant(tenant)
        settings = _tenant_settings(sb, tenant)
        budget = _state(sb).tenant_budgets[tenant.id]
        _trim(budget, sb.clock.now(), DAY * settings["time_scale"])
        return budget.used


def _external(recipients, domains):
    accepted = set(domains)

    def internal(address):
        domain = address.rpartition("@")[2].lower()
        parts = domain.split(".")
        return domain in accepted or any(
            "*." + ".".join(parts[i:]) in accepted for i in range(1, len(parts))
        )

    return [address for address in dict.fromkeys(recipients) if not internal(address)]


def effective(sb, mailbox):
    """The settings that apply to a mailbox, time_scale resolved."""
    with sb.lock:
        return _settings(sb, sb.directory.require_mailbox(mailbox))


def _trim(budget, now, window):
    sent = budget.sent
    # Written as time + window <= now, as services/sending_limits.py does: equal at the edge.
    while sent and sent[0][0] + window <= now:
        budget.used -= sent.popleft()[1]


def recipients_used(sb, mailbox):
    """Recipients the mailbox sent in the current rolling day (sandbox clock)."""
    with sb.lock:
        box = sb.directory.require_mailbox(mailbox)
        settings = _settings(sb, box)
        budget = _state(sb).budgets[box.id]
        _trim(budget, sb.clock.now(), DAY * settings["time_scale"])
        return budget.used


def submit(sb, charged, recipients, now):
    """Apply the limits to a message ``charged`` (a Mailbox: the signed-in user's) submits.

    Raises GraphError for an immediate refusal; else returns an Admission and counts the message.
    """
    settings = _settings(sb, charged)
    count = len(dict.fromkeys(recipients))
    per_message = settings["recipients_per_message"]
    if per_message is not None and count > per_message:
        raise GraphError(
            400,
            TOO_MANY_CODE,
            f"The message has {count} recipients; this mailbox may send to at most {per_message} "
            "recipients per message. 550 5.5.3 RESOLVER.ADR.RecipLimit; too many recipients",
        )
    scale = settings["time_scale"]
    budget = _state(sb).budgets[charged.id]
    _trim(budget, now, DAY * scale)
    per_day = settings["recipients_per_day"]
    # The tenant's external recipients: all of the message's or none (refused ones count
    # for nothing, for the tenant nor for the mailbox).
    tenant = _tenant_settings(sb, charged.tenant)
    external = _external(recipients, tenant["accepted_domains"])
    tenant_budget = _state(sb).tenant_budgets[charged.tenant.id]
    _trim(tenant_budget, now, DAY * tenant["time_scale"])
    refused = ()
    if external and tenant_budget.used + len(external) > tenant["external_recipients_per_day"]:
        refused = tuple(external)
        count -= len(external)
    if per_day is not None and budget.used + count > per_day:
        if settings["refusal"] == "error":
            raise GraphError(
                settings["error_status"],
                QUOTA_CODE,
                "Cannot submit message: the mailbox has reached its limit of recipients in a "
                f"24-hour period. {QUOTA_SMTP}",
            )
        return Admission(delivered_at=now, bounced=True)
    if not refused and external:
        tenant_budget.sent.append((now, len(external)))
        tenant_budget.used += len(external)
    if count == 0:
        return Admission(delivered_at=now, refused=refused, trial=tenant["trial"])
    budget.sent.append((now, count))
    budget.used += count
    return Admission(
        delivered_at=_departure(budget, now, settings, MINUTE * scale),
        refused=refused,
        trial=tenant["trial"],
    )


def _departure(budget, now, settings, minute):
    """When the message leaves: carried over while the last rate messages left within a minute."""
    rate = settings["messages_per_minute"]
    departures = budget.departures
    leaves = max(now, departures[-1]) if departures else now
    if rate is not None:
        while len(departures) > rate:
            departures.popleft()
        if len(departures) == rate:
            leaves = max(leaves, departures[0] + minute)
    departures.append(leaves)
    return leaves


def deliver(sb, address, raw, delivered_at):
    """Put raw into the Inbox of a sandbox mailbox at delivered_at (now, or held until then)."""
    if delivered_at <= sb.clock.now():
        sb.directory.deliver(address, raw, "inbox", parse_moment(delivered_at))
        return
    state = _state(sb)
    heapq.heappush(state.held, (delivered_at, next(state.seq), address, raw))


def release_due(sb):
    """Deliver every held message whose time has come; how many were delivered."""
    with sb.lock:
        held = _state(sb).held
        now = sb.clock.now()
        released = 0
        while held and held[0][0] <= now:
            delivered_at, _, address, raw = heapq.heappop(held)
            if sb.directory.mailbox(address) is not None:
                sb.directory.deliver(address, raw, "inbox", parse_moment(delivered_at))
            released += 1
        return released


def bounce(sb, mailbox, transmitted, recipients, now):
    """Deliver the recipient-rate NDR of a message into the Inbox of the mailbox it left from."""
    raw = quota_ndr(mailbox, transmitted, recipients, now, sb.rng.getrandbits(64))
    sb.directory.deliver(mailbox.address, raw, "inbox", parse_moment(now))


def report_refused(sb, mailbox, transmitted, recipients, admission, now):
    """Send back the NDR of what admission refused; the recipients Exchange still delivers to
    (none for a message refused by the recipient rate; the internal ones for the tenant's)."""
    if admission.bounced:
        bounce(sb, mailbox, transmitted, recipients, now)
        return []
    if admission.refused:
        bounce_tenant(sb, mailbox, transmitted, admission.refused, now, trial=admission.trial)
        return [address for address in recipients if address not in admission.refused]
    return recipients


def bounce_tenant(sb, mailbox, transmitted, refused, now, trial=False):
    """Deliver the tenant limit NDR (5.7.233, 5.7.232 for a trial tenant) for the external
    recipients refused into the Inbox of the mailbox the message left from."""
    raw = tenant_ndr(mailbox, transmitted, refused, now, sb.rng.getrandbits(64), trial=trial)
    sb.directory.deliver(mailbox.address, raw, "inbox", parse_moment(now))


def tenant_ndr(mailbox, transmitted, recipients, now, nonce, trial=False):
    """The DSN Exchange sends back for external recipients refused by the tenant's limit."""
    status, text = (TERRL_TRIAL_STATUS, TERRL_TRIAL_TEXT) if trial else (TERRL_STATUS, TERRL_TEXT)
    readable = [
        text + ".",
        "",
        "Your message wasn't delivered to these recipients:",
        *(f"  {address}" for address in dict.fromkeys(recipients)),
    ]
    return _report(mailbox, transmitted, recipients, now, nonce, readable, status, text)


def quota_ndr(mailbox, transmitted, recipients, now, nonce):
    """The DSN (RFC 3464) Exchange sends back for a message refused by the recipient rate."""
    readable = [
        "Your message couldn't be delivered because you've exceeded your sending quota: the",
        "mailbox has sent to too many recipients in the last 24 hours. Try again later.",
        "",
        "The message was not sent to:",
        *(f"  {address}" for address in dict.fromkeys(recipients)),
    ]
    return _report(
        mailbox, transmitted, recipients, now, nonce, readable, "554 5.2.0", QUOTA_DIAGNOSTIC
    )


def _report(mailbox, transmitted, recipients, now, nonce, readable, status_line, diagnostic):
    """A DSN (RFC 3464) as Exchange writes it, from inside the organization."""
    domain = mailbox.address.rpartition("@")[2]
    # compat32 keeps encoded words as they are, so the report stays ASCII like the original.
    original = BytesHeaderParser().parsebytes(transmitted[: _header_end(transmitted)])
    original_id = " ".join(str(original.get("Message-ID", "") or "").split())
    subject = " ".join(str(original.get("Subject", "") or "").split())
    date = email.utils.formatdate(now, usegmt=True)
    boundary = f"=_ndr_{nonce:016x}"
    reporter = f"{nonce % 1000:03d}SBX.prod.outlook.test"
    head = [
        f"From: Microsoft Outlook <{NDR_LOCAL_PART}@{domain}>",
        f"To: {email.utils.formataddr((mailbox.display_name, mailbox.address))}",
        f"Date: {date}",
        f"Subject: Undeliverable: {subject}",
        f"Message-ID: <{nonce:016x}@{reporter}>",
    ]
    if original_id:
        head += [f"In-Reply-To: {original_id}", f"References: {original_id}"]
    head += [
        "Auto-Submitted: auto-replied",
        "X-MS-Exchange-Message-Is-Ndr:",
        # Generated inside the organization: Exchange marks it so (header_firewall.py).
        "X-MS-Exchange-Organization-AuthAs: Internal",
        "X-MS-Exchange-Organization-AuthSource: " + reporter,
        "X-MS-Exchange-Organization-SCL: -1",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    code = status_line.split()[1]
    readable = [
        "Content-Type: text/plain; charset=us-ascii",
        "",
        *readable,
        "",
        "Diagnostic information for administrators:",
        f"Generating server: {reporter}",
        f"Remote server returned '{status_line} {diagnostic}'"
        if not diagnostic.startswith(status_line)
        else f"Remote server returned '{diagnostic}'",
    ]
    status = [
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns;{reporter}",
        f"Arrival-Date: {date}",
    ]
    for address in dict.fromkeys(recipients):
        status += [
            "",
            f"Final-Recipient: rfc822;{address}",
            "Action: failed",
            f"Status: {code}",
            "Diagnostic-Code: smtp;"
            + (diagnostic if diagnostic.startswith(status_line) else f"{status_line} {diagnostic}"),
        ]
    # The returned headers name the original Message-ID, for whoever matches reports to mail.
    returned = transmitted[: _header_end(transmitted)].decode("utf-8", "replace").splitlines()
    parts = (readable, [*status, ""], ["Content-Type: text/rfc822-headers", "", *returned])
    body = "".join(f"--{boundary}\r\n" + "\r\n".join(part) + "\r\n" for part in parts)
    return ("\r\n".join(head) + "\r\n\r\n" + body + f"--{boundary}--\r\n").encode()


def _header_end(raw):
    found = [at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at >= 0]
    return min(found) if found else len(raw)
