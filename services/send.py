"""Send the MIME message Odoo built through Microsoft Graph, at most once.

:class:`GraphSender` sends the message as Odoo rendered it (Message-ID, References,
In-Reply-To, Reply-To, Return-Path and X- headers included), with the strategy, the request
costs and the reasoning about failures described in ``docs/sending.md``.
"""

import base64
import binascii
import copy
import email.policy
import email.utils
import itertools
import logging
import quopri
import smtplib
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser

import requests
import urllib3

from .errors import (
    GraphAuthError,
    GraphConfigError,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    _lt,
)
from .graph import quote_segment


class GraphSendDeferred(smtplib.SMTPServerDisconnected):
    """Not sent, not failed: the mail stays in Odoo's queue for a later run.

    Odoo's mail queue leaves a mail "outgoing" (and stops the batch) only on a
    disconnected SMTP session, hence the base class.
    """

    def __init__(self, reason, message_id=None):
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


_logger = logging.getLogger(__name__)

MB = 1024 * 1024
# Graph refuses request bodies over about 4 MB; the sandbox takes 4 MiB as the limit.
MAX_REQUEST_BODY = 4 * MB
# Exchange Online's default message size limit.
MAX_MESSAGE_SIZE = 35 * MB
# Attachments from 3 MB on must go through an upload session, in fragments of at most 4 MB.
UPLOAD_SESSION_MIN = 3 * MB
UPLOAD_CHUNK = 4 * MB
# Room for the JSON around contentBytes in POST .../attachments.
ATTACHMENT_JSON_OVERHEAD = 2048
# Exchange submits asynchronously: after an unanswered /send, a message still in Drafts is
# looked at again after this many seconds before it is declared unsent.
SEND_SETTLE_SECONDS = 5.0
IMMUTABLE_ID = {"Prefer": 'IdType="ImmutableId"'}
MIME_HEADERS = {"Content-Type": "text/plain"}

_HEADERS = BytesHeaderParser(policy=email.policy.default)
# Transport failures raised before any byte of the request left.
_NOT_SENT = (
    requests.exceptions.ConnectTimeout,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    ConnectionRefusedError,
)


class GraphAmbiguousSendError(GraphError):
    """The send request went out and no answer came back: the mail may have left.

    Not a :class:`GraphTransientError`, so that nothing retries it blindly. ``draft_id`` names
    the draft (immutable id) when one was involved, for a later look at Sent Items.
    """

    default_message = _lt(
        "Microsoft 365 may have sent this message: the connection broke after the request went "
        "out and before Microsoft answered. It is not sent again automatically, to avoid a "
        "duplicate; check the Sent Items folder before sending it again."
    )

    def __init__(self, user_message=None, *, draft_id=None, **fields):
        super().__init__(user_message, **fields)
        self.draft_id = draft_id


@dataclass(frozen=True)
class SentMessage:
    """A sent mail: ``id`` names its Sent Items copy (immutable id), None after sendMail.

    ``mailbox`` is the shared mailbox whose Sent Items hold that copy, None for the
    client's own mailbox.
    """

    id: str | None
    internet_message_id: str
    requests: int
    mailbox: str | None = None


def _b64_size(size):
    return 4 * ((size + 2) // 3)


def _split_head(raw, start=0, end=None):
    """(end of the header block, start of the body) of the MIME in raw[start:end]."""
    end = len(raw) if end is None else end
    found = [(raw.find(sep, start, end), len(sep)) for sep in (b"\r\n\r\n", b"\n\n")]
    found = [(at, size) for at, size in found if at >= 0]
    if not found:
        return end, end
    at, size = min(found)
    return at + size // 2, at + size


@dataclass(frozen=True)
class _Part:
    """A top-level attachment of a multipart/mixed message, by offsets into the raw bytes."""

    start: int  # the line break before its delimiter: cutting [start, end) removes the part
    end: int
    body_start: int
    name: str
    content_type: str
    encoding: str
    is_inline: bool
    content_id: str | None
    size: int  # decoded size


class _Mime:
    """The raw message, read without copying its body: headers, Message-ID, attachments."""

    def __init__(self, raw):
        self.raw = raw
        self.view = memoryview(raw)
        head_end, self.body_start = _split_head(raw)
        self.headers = _HEADERS.parsebytes(raw[:head_end])
        newline = b"\r\n" if b"\r\n" in raw[: head_end + 2] else b"\n"
        self.message_id = str(self.headers.get("Message-ID", "") or "").strip()
        # Prepended when Odoo gave no Message-ID: the id is what finds a draft again.
        self.prefix = b""
        if not self.message_id:
            self.message_id = email.utils.make_msgid(domain=self._domain())
            self.prefix = f"Message-ID: {self.message_id}".encode() + newline
        self.size = len(self.prefix) + len(raw)
        self.parts = self._attachments()

    def _domain(self):
        senders = email.utils.getaddresses([str(self.headers.get("From", "") or "")])
        address = senders[0][1] if senders else ""
        return address.rpartition("@")[2] or None

    @property
    def fits(self):
        return _b64_size(self.size) <= MAX_REQUEST_BODY

    def _attachments(self):
        boundary = self.headers.get_boundary()
        if self.headers.get_content_type() != "multipart/mixed" or not boundary:
            return []
        raw, dash = self.raw, b"--" + boundary.encode()
        delimiters = []  # (cut start, first byte after the delimiter line, closing)
        at = raw.find(dash, self.body_start)
        while at >= 0:
            after = raw[at + len(dash) : at + len(dash) + 2]
            at_line_start = at == self.body_start or raw[at - 1 : at] == b"\n"
            if at_line_start and (after == b"--" or after[:1] in (b"\r", b"\n", b" ", b"\t")):
                cut = (
                    at if at == self.body_start else at - (2 if raw[at - 2 : at] == b"\r\n" else 1)
                )
                line_end = raw.find(b"\n", at)
                delimiters.append((cut, len(raw) if line_end < 0 else line_end + 1, after == b"--"))
                if after == b"--":
                    break
            at = raw.find(dash, at + len(dash))
        parts = []
        for (cut, content, closing), (next_cut, _, _) in itertools.pairwise(delimiters):
            part = None if closing else self._part(cut, content, next_cut)
            if part is not None:
                parts.append(part)
        return parts

    def _part(self, cut, content, end):
        head_end, body_start = _split_head(self.raw, content, end)
        if body_start >= end:
            return None
        headers = _HEADERS.parsebytes(self.raw[content:head_end])
        disposition = headers.get_content_disposition()
        name = headers.get_filename()
        if headers.get_content_maintype() in ("multipart", "message"):
            return None
        if disposition != "attachment" and not (disposition == "inline" and name):
            return None
        encoding = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        return _Part(
            start=cut,
            end=end,
            body_start=body_start,
            name=name or "attachment",
            content_type=headers.get_content_type(),
            encoding=encoding,
            is_inline=disposition == "inline",
            content_id=(str(headers.get("Content-ID", "") or "").strip().strip("<>") or None),
            size=self._decoded_size(body_start, end, encoding),
        )

    def _decoded_size(self, start, end, encoding):
        if encoding != "base64":
            return end - start
        raw = self.raw
        spaces = sum(raw.count(c, start, end) for c in (b"\r", b"\n", b" ", b"\t"))
        tail = raw[max(start, end - 8) : end].rstrip()
        padding = len(tail) - len(tail.rstrip(b"="))
        return (end - start - spaces) * 3 // 4 - padding

    def decoded(self, part):
        """The attachment's bytes: one copy for base64, none for identity encodings."""
        region = self.view[part.body_start : part.end]
        if part.encoding == "base64":
            return binascii.a2b_base64(region)
        if part.encoding == "quoted-printable":
            return quopri.decodestring(bytes(region))
        return region

    def without(self, parts):
        """The MIME without these parts, every other byte kept, in one copy."""
        pieces, position = [self.prefix], 0
        for part in sorted(parts, key=lambda p: p.start):
            pieces.append(self.view[position : part.start])
            position = part.end
        pieces.append(self.view[position:])
        return b"".join(pieces)

    def plan(self):
        """The attachments to take out of the draft so that it fits one Graph request."""
        if self.fits:
            return []
        removed, remaining = [], self.size
        for part in sorted(self.parts, key=lambda p: p.end - p.start, reverse=True):
            if _b64_size(remaining) <= MAX_REQUEST_BODY and part.size < UPLOAD_SESSION_MIN:
                break
            removed.append(part)
            remaining -= part.end - part.start
        if _b64_size(remaining) > MAX_REQUEST_BODY:
            raise GraphPermanentError(
                _lt(
                    "The message's text and inline parts are larger than the 4 MB Microsoft "
                    "Graph accepts in one request; only attachments can be sent separately."
                )
            )
        for part in removed:
            json_size = _b64_size(part.size) + ATTACHMENT_JSON_OVERHEAD
            if part.size < UPLOAD_SESSION_MIN and json_size > MAX_REQUEST_BODY:
                raise GraphPermanentError(
                    _lt(
                        "The attachment %(name)r is just under 3 MB: too large for one Graph "
                        "request once encoded, too small for an upload session."
                    ),
                    params={"name": part.name},
                )
        return sorted(removed, key=lambda p: p.start)


@dataclass(frozen=True)
class _Detached:
    """A large top-level attachment of a message object, left out when it is flattened."""

    body: str  # the base64 text the part holds (the same object, not a copy)
    name: str
    content_type: str
    is_inline: bool
    content_id: str | None
    size: int  # decoded size
    mime_size: int  # what it would add to the flattened message

    def decoded(self):
        """The attachment's bytes, decoded straight from the part's text: one copy."""
        return binascii.a2b_base64(self.body)


def _detachable(part):
    """A _Detached for a base64 attachment of UPLOAD_SESSION_MIN or more, else None."""
    if part.is_multipart() or part.get_content_maintype() in ("multipart", "message"):
        return None
    disposition = part.get_content_disposition()
    name = part.get_filename()
    if disposition != "attachment" and not (disposition == "inline" and name):
        return None
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() != "base64":
        return None
    body = part.get_payload()
    if not isinstance(body, str) or not body.isascii():
        return None
    spaces = sum(body.count(c) for c in "\r\n \t")
    padding = len(body[-8:].rstrip()) - len(body[-8:].rstrip().rstrip("="))
    size = (len(body) - spaces) * 3 // 4 - padding
    if size < UPLOAD_SESSION_MIN:
        return None
    head = sum(len(key) + len(str(value)) + 4 for key, value in part.items())
    return _Detached(
        body=body,
        name=name or "attachment",
        content_type=part.get_content_type(),
        is_inline=disposition == "inline",
        content_id=(str(part.get("Content-ID", "") or "").strip().strip("<>") or None),
        size=size,
        # Lines end in CRLF once flattened; a boundary line comes with the part.
        mime_size=head + len(body) + body.count("\n") - body.count("\r") + 80,
    )


def _flatten(message):
    """(the MIME to draft from, the attachments left out of it) for bytes or a message.

    Bytes are used as they are. A message object (Odoo's ``EmailMessage``) is flattened
    without its top-level base64 attachments of UPLOAD_SESSION_MIN or more: those go
    through upload sessions anyway, and the stdlib's generator holds about twice a part
    while flattening it (each part is written to its own buffer, then joined). What is
    flattened is a shallow copy with those parts left out of its payload list: every
    header and every other part is the message's own, and the message is not changed.
    """
    if not isinstance(message, Message):
        return (message if isinstance(message, bytes) else bytes(message)), []
    detached, kept = [], []
    if message.get_content_type() == "multipart/mixed" and message.is_multipart():
        for part in message.get_payload():
            found = _detachable(part)
            (detached if found else kept).append(found or part)
    if not detached:
        return message.as_bytes(), []
    skeleton = copy.copy(message)
    skeleton.set_payload(kept)
    return skeleton.as_bytes(), detached


def _reworded(error, text, params=None):
    return type(error)(
        text,
        params=params,
        status=error.status,
        code=error.code,
        request_id=error.request_id,
        retry_after=error.retry_after,
        detail=error.detail,
    )


def _never_sent(error):
    """True when the transport failed before the request could reach Microsoft."""
    pending, seen = [error.__context__], []
    while pending:
        exc = pending.pop()
        if exc is None or any(exc is s for s in seen):
            continue
        seen.append(exc)
        if isinstance(exc, _NOT_SENT):
            return True
        pending += [exc.__cause__, exc.__context__, getattr(exc, "reason", None)]
        pending += [a for a in exc.args if isinstance(a, BaseException)]
    return False


def _maybe_carried_out(error):
    """Whether a failed request may still have been carried out by Microsoft."""
    if isinstance(error, (GraphAuthError, GraphConfigError)):
        return False
    if error.status is not None:
        # A success whose answer was unreadable, or a gateway that gave up waiting.
        return error.status < 300 or error.status == 504
    return isinstance(error, GraphTransientError) and not _never_sent(error)


class GraphSender:
    """Sends raw MIME messages through one :class:`~.graph.GraphClient`.

    ``save_to_sent_items=True`` sends through a draft and returns the immutable id of the
    Sent Items copy (2 requests); False sends with one ``sendMail`` request and returns no id
    (Exchange still keeps a Sent Items copy: Graph's MIME form of sendMail has no switch).

    ``shared_via_me=True`` sends mail from another address (``send(from_address=...)``)
    through the signed-in user's own mailbox, ``/me``, the message's From naming the shared
    address: the route of a delegate with Send As or Send on Behalf but without Full Access,
    which every ``/users/{shared}/...`` route needs ("Send Outlook messages from another
    user", Sent Items behavior). The copy then lands in the signed-in user's Sent Items
    (``SentMessage.mailbox`` None). False (the default) drafts small mail in the shared
    mailbox, so that its Sent Items keep the copy.
    """

    def __init__(self, client, save_to_sent_items=True, shared_via_me=False):
        self.client = client
        self.save_to_sent_items = save_to_sent_items
        self.shared_via_me = shared_via_me
        # Requests that must not be repeated go out once: GraphClient retries transient
        # failures, POSTs included.
        self.once = copy.copy(client)
        self.once.max_attempts = 1

    def send(self, message, from_address=None):
        """Send message as from_address (another mailbox) or as the account.

        ``message`` is an ``email.message.Message`` (Odoo's ``EmailMessage``: large
        attachments are then never flattened into the MIME) or the flattened bytes.
        Raises GraphTransientError (keep the mail queued, ``retry_after`` seconds),
        GraphAmbiguousSendError (never retry blindly), or another GraphError.
        """
        raw, detached = _flatten(message)
        size = len(raw) + sum(part.mime_size for part in detached)
        if size > MAX_MESSAGE_SIZE:
            raise GraphPermanentError(
                _lt(
                    "The message is %(size).1f MB, more than Exchange Online's 35 MB "
                    "message size limit: send smaller attachments, or links to them."
                ),
                params={"size": size / MB},
            )
        mime = _Mime(raw)
        run = _Run(self, mime, from_address, detached, via_me=self.shared_via_me)
        if mime.fits and not detached and not self.save_to_sent_items:
            result = run.send_mail()
        else:
            result = run.through_draft()
        _logger.info(
            "[Graph API] sent %s from %s as %s",
            result.internet_message_id,
            from_address or self.client.mailbox or "me",
            result.id or "-",
        )
        return result


class _Run:
    """One send: its requests, the mailbox path its draft lives under, its draft."""

    def __init__(self, sender, mime, from_address, detached=(), via_me=False):
        self.client = sender.client
        self.once = sender.once
        self.mime = mime
        self.from_address = from_address
        self.requests = 0
        # Attachments added to the draft: those cut out of the MIME, then those never in it.
        self.cut = mime.plan()
        self.parts = self.cut + list(detached)
        # A shared sender's draft lives in the shared mailbox, so that its Sent Items keep the
        # copy; upload sessions work only in the signed-in user's mailbox (a known issue).
        if from_address and not self.parts and not via_me:
            self.home, self.mailbox = f"/users/{quote_segment(from_address)}", from_address
        elif from_address:
            self.home, self.mailbox = "/me", None
        else:
            self.home, self.mailbox = self.client.mailbox_path(), self.client.mailbox

    def call(self, method, path, once=True, **kwargs):
        self.requests += 1
        return (self.once if once else self.client).request(method, path, **kwargs)

    def done(self, draft_id, internet_message_id):
        return SentMessage(draft_id, internet_message_id, self.requests, self.mailbox)

    # errors ------------------------------------------------------------------------------

    def explained(self, error):
        """The error in the words of sending: which right or permission is missing."""
        code = str(error.code or "").lower()
        sender = self.from_address or "this mailbox"
        if code == "errorsendasdenied":
            return _reworded(
                error,
                _lt(
                    "Microsoft 365 refused to send as %(sender)s: the connected account has "
                    "neither Send As nor Send on Behalf permission on that mailbox. Grant one of "
                    "them to the connected account in the Exchange admin center (Recipients > "
                    "Mailboxes > %(sender)s > Delegation)."
                ),
                {"sender": sender},
            )
        if code == "erroraccessdenied" and self.from_address and self.mailbox:
            # Through /users/{shared}/...: Full Access is needed besides Send As or Send on
            # Behalf ("Send Outlook messages from another user", Sent Items behavior).
            return _reworded(
                error,
                _lt(
                    "Microsoft 365 refused to send through the mailbox %(sender)s: sending "
                    "through a shared mailbox needs Full Access on it (besides Send As or Send on "
                    "Behalf) in the Exchange admin center, and the Mail.Send.Shared permission in "
                    "the Azure app. Without Full Access, mail can go through the connected "
                    "account's own mailbox instead (its copy then lands in that account's Sent "
                    "Items)."
                ),
                {"sender": sender},
            )
        if code == "erroraccessdenied" and self.from_address:
            return _reworded(
                error,
                _lt(
                    "Microsoft 365 refused to send from %(sender)s: the connection lacks the "
                    "Mail.Send.Shared permission. Add it to the Azure app's API permissions and "
                    "connect the Outlook account again."
                ),
                {"sender": sender},
            )
        if code == "errormessagesizeexceeded":
            return _reworded(
                error, _lt("The message is larger than Exchange Online's 35 MB message size limit.")
            )
        return error

    # sendMail ----------------------------------------------------------------------------

    def send_mail(self):
        body = base64.b64encode(self.mime.without(()))
        try:
            self.call("POST", f"{self.home}/sendMail", data=body, headers=MIME_HEADERS)
        except GraphError as error:
            if _maybe_carried_out(error):
                raise GraphAmbiguousSendError(
                    status=error.status, code=error.code, request_id=error.request_id
                ) from None
            raise self.explained(error) from None
        return self.done(None, self.mime.message_id)

    # draft, attachments, send ------------------------------------------------------------

    def through_draft(self):
        draft = self.create_draft()
        draft_id = draft["id"]
        try:
            for part in self.parts:
                self.attach(draft_id, part)
        except GraphError as error:
            self.discard(draft_id)
            raise self.explained(error) from None
        self.submit(draft_id)
        return self.done(draft_id, draft.get("internetMessageId") or self.mime.message_id)

    def post_draft(self, body):
        path = f"{self.home}/messages"
        response = self.call("POST", path, data=body, headers={**MIME_HEADERS, **IMMUTABLE_ID})
        try:
            draft = response.json()
        except ValueError:
            draft = None
        if not isinstance(draft, dict) or not draft.get("id"):
            raise GraphTransientError(
                _lt("Microsoft 365 created the draft but its answer was cut short."),
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            )
        return draft

    def create_draft(self):
        body = base64.b64encode(self.mime.without(self.cut))
        try:
            return self.post_draft(body)
        except GraphError as error:
            if (
                self.from_address
                and self.mailbox
                and str(error.code).lower() == "erroraccessdenied"
            ):
                # No Full Access on the shared mailbox: Send As still works from one's own.
                self.home, self.mailbox = "/me", None
                return self.create_draft()
            if not _maybe_carried_out(error):
                raise self.explained(error) from None
        # The draft may exist: take it if it is complete, else clear the way and try again.
        found = self.drafts_with_message_id()
        if len(found) == 1 and not self.parts:
            return found[0]
        for draft in found:
            self.discard(draft["id"])
        try:
            return self.post_draft(body)
        except GraphError as error:
            if _maybe_carried_out(error):
                raise GraphTransientError(
                    _lt("Microsoft 365 did not confirm the draft twice; the mail stays queued."),
                    status=error.status,
                    request_id=error.request_id,
                ) from None
            raise self.explained(error) from None

    def drafts_with_message_id(self):
        quoted = self.mime.message_id.replace("'", "''")
        params = {
            "$filter": f"internetMessageId eq '{quoted}'",
            "$select": "id,internetMessageId",
        }
        self.requests += 1
        return list(
            self.client.iter_pages(
                f"{self.home}/mailFolders/drafts/messages", params=params, headers=IMMUTABLE_ID
            )
        )

    def discard(self, draft_id):
        """Delete a draft that must not be sent, so that a later retry does not duplicate it."""
        try:
            self.call("DELETE", f"{self.home}/messages/{quote_segment(draft_id)}", once=False)
        except GraphError as error:
            _logger.warning(
                "[Graph API] could not delete an unsent draft of %s (%s); it stays in Drafts",
                self.mime.message_id,
                error.reference or error.user_message,
            )

    def attach(self, draft_id, part):
        data = part.decoded() if isinstance(part, _Detached) else self.mime.decoded(part)
        path = f"{self.home}/messages/{quote_segment(draft_id)}/attachments"
        if len(data) >= UPLOAD_SESSION_MIN:
            self.upload(path, part, data)
            return
        item = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": part.name,
            "contentType": part.content_type,
            "contentBytes": base64.b64encode(data).decode("ascii"),
            "isInline": part.is_inline,
        }
        if part.content_id:
            item["contentId"] = part.content_id
        self.call("POST", path, json=item)

    def upload(self, path, part, data):
        item = {
            "attachmentType": "file",
            "name": part.name,
            "size": len(data),
            "contentType": part.content_type,
            "isInline": part.is_inline,
        }
        if part.content_id:
            item["contentId"] = part.content_id
        # Another session is harmless, so this POST may be retried.
        answer = self.call(
            "POST", f"{path}/createUploadSession", once=False, json={"AttachmentItem": item}
        )
        url = self.client.json_of(answer)["uploadUrl"]
        view, total, start = memoryview(data), len(data), 0
        while start < total:
            chunk = view[start : start + UPLOAD_CHUNK]
            end = start + len(chunk) - 1
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{end}/{total}",
            }
            # The URL carries its own credential; a bearer token must not go there.
            answer = self.call("PUT", url, data=chunk, headers=headers, authorize=False)
            expected = _next_expected(answer)
            if expected is not None and expected != end + 1:
                raise GraphTransientError(
                    _lt("Microsoft 365 lost track of an attachment upload; the mail stays queued."),
                    status=answer.status_code,
                )
            start = end + 1

    def submit(self, draft_id):
        path = f"{self.home}/messages/{quote_segment(draft_id)}"
        try:
            self.call("POST", f"{path}/send")
            return
        except GraphError as error:
            failure = error
        status = failure.status
        if not (_maybe_carried_out(failure) or (status is not None and status >= 500)):
            self.discard(draft_id)
            raise self.explained(failure)
        # Microsoft may have taken it: the immutable id says where the message is now.
        state = self.state(path)
        if state == "draft":
            self.client.sleep(SEND_SETTLE_SECONDS)
            state = self.state(path)
        if state == "sent":
            return
        if state == "draft":
            self.discard(draft_id)
            raise GraphTransientError(
                status=status,
                code=failure.code,
                request_id=failure.request_id,
                retry_after=failure.retry_after,
            )
        raise GraphAmbiguousSendError(draft_id=draft_id, status=status, code=failure.code)

    def state(self, path):
        """ "sent", "draft", or None when Microsoft cannot be asked."""
        try:
            answer = self.call(
                "GET",
                path,
                once=False,
                params={"$select": "id,isDraft,parentFolderId"},
                headers=IMMUTABLE_ID,
                expected=(200, 404),
            )
        except GraphError:
            return None
        if answer.status_code == 404:
            return "sent"
        try:
            is_draft = answer.json().get("isDraft")
        except ValueError:
            return None
        return "draft" if is_draft else "sent"


def _next_expected(answer):
    """The next offset an upload answer expects, or None (finished, or not said)."""
    try:
        body = answer.json() if answer.content else {}
    except ValueError:
        return None
    ranges = next((v for k, v in body.items() if k.lower() == "nextexpectedranges"), None)
    if not ranges:
        return None
    first = str(ranges[0]).split("-")[0]
    return int(first) if first.isdigit() else None
