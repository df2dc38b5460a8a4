"""Graph mail sending: sendMail, drafts and /send, attachments, upload sessions, Sent Items.

What left the tenant is kept in ``Directory.outbox`` (``sb.outbox()``); what Exchange keeps is the
Sent Items copy (``sb.sent(mailbox)``). README.md ("Sending") lists the choices made where
Microsoft's documents are silent.
"""

import base64
import binascii
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser
from functools import partial

from . import exchange_limits, graph_mail
from .errors import GraphError
from .graph_common import FOLDER, add_route, metadata, paged, selection
from .graph_mail import MESSAGE, PREFER_TEXT, folder_of, message_of
from .limits import MAX_ATTACHMENT_SIZE, MIN_UPLOAD_SESSION, message_too_large
from .messages import MESSAGE_PROPERTIES, iso_utc, parse_moment
from .tokens import new_secret
from .web import Response, json_response

# Unconfirmed: Microsoft's one example shows about an hour and a half; the expiry stays fixed
# (the Outlook walkthrough says so; the uploadSession page says fragments extend it).
UPLOAD_SESSION_LIFETIME = 3600
UPLOAD_PATH = (
    r"/api/v2\.0/Users\('(?P<owner>[^']+)'\)/Messages\('(?P<message>[^']+)'\)"
    r"/AttachmentSessions\('(?P<session>[^']+)'\)"
)
IMMUTABLE_ID = 'IdType="ImmutableId"'
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_MESSAGE_ID_FILTER = re.compile(r"\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_HEADER_PARSER = BytesHeaderParser(policy=email.policy.default)


@dataclass(eq=False)
class Delivery:
    """One mail as it left Exchange: the transmitted MIME (no Bcc) and its envelope."""

    raw: bytes
    internet_message_id: str
    from_: str
    sender: str
    recipients: list
    mailbox: str  # where it was submitted (whose Sent Items keep the copy)
    id: str | None  # the Sent Items copy, if one was kept
    time: float
    # When it left Exchange: later than time when the message rate carried it over.
    delivered_at: float | None = None


@dataclass(eq=False)
class UploadSession:
    id: str
    token: str
    message: object
    app_id: str
    name: str
    size: int
    content_type: str
    is_inline: bool
    content_id: str | None
    expires: float
    chunks: list = field(default_factory=list)
    received: int = 0

    @property
    def mailbox(self):
        return self.message.mailbox


def register(router, sb):
    add_route(router, sb, "POST", r"/sendMail", send_mail, need="mail.send")
    add_route(router, sb, "POST", r"/messages", create_draft, need="mail.write")
    add_route(router, sb, "POST", MESSAGE + r"/send", send_draft, need="mail.send")
    add_route(router, sb, "POST", MESSAGE + r"/attachments", add_attachment, need="mail.write")
    add_route(router, sb, "GET", MESSAGE + r"/attachments", list_attachments, need="mail.read")
    add_route(
        router,
        sb,
        "POST",
        MESSAGE + r"/attachments/(?:microsoft\.graph\.)?createUploadSession",
        create_upload_session,
        need="mail.write",
    )
    # Listed before graph_mail so that this route sees folder listings first: it answers
    # $filter=internetMessageId eq '...' and hands every other listing to graph_mail.
    add_route(router, sb, "GET", FOLDER + r"/messages", list_folder_messages, need="mail.read")
    peek = partial(_upload_peek, sb)
    router.add("PUT", UPLOAD_PATH, partial(upload_chunk, sb), "graph", peek=peek)
    router.add("DELETE", UPLOAD_PATH, partial(cancel_upload, sb), "graph", peek=peek)


# test API -----------------------------------------------------------------------------


def sent(sb, mailbox_address):
    """The Sent Items copies of a mailbox, oldest first (Message objects)."""
    return sb.messages(mailbox_address, "sentitems")


def outbox(sb):
    """Every mail Exchange took to deliver, in order (Delivery objects; see delivered_at)."""
    exchange_limits.release_due(sb)
    with sb.lock:
        return list(sb.directory.outbox)


# raw MIME helpers ---------------------------------------------------------------------


def split_head(raw):
    """(end of the header block, start of the body); a message without body is all header."""
    found = [(raw.find(sep), len(sep)) for sep in (b"\r\n\r\n", b"\n\n")]
    found = [(at, size) for at, size in found if at >= 0]
    if not found:
        return len(raw), len(raw)
    at, size = min(found)
    return at + size // 2, at + size


def _newline(raw):
    return b"\r\n" if b"\r\n" in raw[: split_head(raw)[0] + 2] else b"\n"


def headers_of(raw):
    return _HEADER_PARSER.parsebytes(raw[: split_head(raw)[0]])


def without_header(raw, name):
    """raw with every field called name (and its folded lines) removed."""
    end, _ = split_head(raw)
    lines = raw[:end].splitlines(keepends=True)
    kept, dropping = [], False
    prefix = name.lower().encode() + b":"
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(prefix)
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]


def with_header(raw, name, value):
    return f"{name}: {value}".encode() + _newline(raw) + raw


def _addresses(headers, *names):
    values = [str(v) for name in names for v in (headers.get_all(name) or [])]
    return [address.lower() for _, address in email.utils.getaddresses(values) if address]


def _part_bytes(name, content_type, data, is_inline, content_id, newline):
    part = MIMEPart()
    maintype, _, subtype = (content_type or "application/octet-stream").partition("/")
    part.set_content(
        data,
        maintype=maintype,
        subtype=subtype or "octet-stream",
        disposition="inline" if is_inline else "attachment",
        filename=name,
        cid=f"<{content_id.strip('<>')}>" if content_id else None,
    )
    policy = email.policy.SMTP if newline == b"\r\n" else email.policy.default
    return part.as_bytes(policy=policy)


def attach(raw, name, content_type, data, is_inline=False, content_id=None):
    """raw with one more attachment; every other byte of the message is kept as it was."""
    newline = _newline(raw)
    part = _part_bytes(name, content_type, data, is_inline, content_id, newline)
    headers = headers_of(raw)
    boundary = headers.get_boundary()
    if headers.get_content_type() == "multipart/mixed" and boundary:
        close = newline + b"--" + boundary.encode() + b"--"
        at = raw.rfind(close)
        if at >= 0:
            opening = newline + b"--" + boundary.encode() + newline
            return raw[:at] + opening + part.rstrip(b"\r\n") + raw[at:]
    # Not multipart/mixed: wrap the original content as the first part of a new one.
    end, body_start = split_head(raw)
    boundary = "=_sandbox_" + hashlib.sha256(raw[:4096] + data[:4096]).hexdigest()[:24]
    outer = without_header(without_header(raw[:end], "Content-Type"), "Content-Transfer-Encoding")
    outer += f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode() + newline
    inner = (
        b"".join(
            line
            for line in raw[:end].splitlines(keepends=True)
            if line.lower().startswith((b"content-type:", b"content-transfer-encoding:"))
        )
        or b"Content-Type: text/plain" + newline
    )
    dash = b"--" + boundary.encode()
    return (
        outer
        + newline
        + dash
        + newline
        + inner
        + newline
        + raw[body_start:].rstrip(b"\r\n")
        + newline
        + dash
        + newline
        + part.rstrip(b"\r\n")
        + newline
        + dash
        + b"--"
        + newline
    )


def mime_from_json(message, mailbox, message_id):
    """The MIME Exchange would make of a Graph JSON message."""
    if not isinstance(message, dict):
        raise GraphError(400, "ErrorInvalidRequest", "The message is missing or not an object.")
    mime = EmailMessage()

    def rendered(key):
        items = message.get(key) or []
        if isinstance(items, dict):
            items = [items]
        out = []
        for item in items:
            address = (item.get("emailAddress") or {}) if isinstance(item, dict) else {}
            if not address.get("address"):
                raise GraphError(400, "ErrorInvalidRecipients", "A recipient has no address.")
            out.append(email.utils.formataddr((address.get("name") or "", address["address"])))
        return ", ".join(out)

    mime["From"] = rendered("from") or email.utils.formataddr(
        (mailbox.display_name, mailbox.address)
    )
    for key, header in (
        ("sender", "Sender"),
        ("toRecipients", "To"),
        ("ccRecipients", "Cc"),
        ("bccRecipients", "Bcc"),
        ("replyTo", "Reply-To"),
    ):
        value = rendered(key)
        if value:
            mime[header] = value
    mime["Subject"] = message.get("subject") or ""
    mime["Message-ID"] = message_id
    for header in message.get("internetMessageHeaders") or []:
        name = str(header.get("name", ""))
        if not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
        mime[name] = str(header.get("value", ""))
    body = message.get("body") or {}
    subtype = "html" if str(body.get("contentType", "text")).lower() == "html" else "plain"
    mime.set_content(str(body.get("content", "")), subtype=subtype)
    for item in message.get("attachments") or []:
        name, content_type, data, inline, cid = _file_attachment(item)
        maintype, _, sub = content_type.partition("/")
        mime.add_attachment(
            data,
            maintype=maintype,
            subtype=sub or "octet-stream",
            filename=name,
            disposition="inline" if inline else "attachment",
            cid=f"<{cid}>" if cid else None,
        )
    return mime.as_bytes(policy=email.policy.SMTP)


def _file_attachment(item):
    if not isinstance(item, dict) or item.get("@odata.type") != "#microsoft.graph.fileAttachment":
        raise GraphError(
            400, "ErrorInvalidRequest", "Only #microsoft.graph.fileAttachment is supported."
        )
    try:
        data = base64.b64decode(item.get("contentBytes") or "", validate=True)
    except (binascii.Error, ValueError):
        raise GraphError(400, "ErrorInvalidRequest", "contentBytes is not base64.") from None
    name = str(item.get("name") or "attachment")
    content_type = str(item.get("contentType") or "application/octet-stream")
    return name, content_type, data, bool(item.get("isInline")), item.get("contentId")


# request bodies -----------------------------------------------------------------------


def _media_type(request):
    return (request.header("Content-Type") or "").split(";")[0].strip().lower()


def _json_body(request):
    try:
        data = request.json()
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(data, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return data


def _mime_body(request):
    compact = re.sub(rb"\s+", b"", request.body)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise GraphError(
            400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        )
    return raw


def _submitted(sb, request, wrapped):
    """(raw MIME, saveToSentItems) of a sendMail or draft body, JSON or base64 MIME."""
    media = _media_type(request)
    if media == "text/plain":
        return _mime_body(request), True
    if media == "application/json":
        data = _json_body(request)
        message = data.get("message") if wrapped else data
        save = data.get("saveToSentItems", True) if wrapped else True
        if isinstance(save, str):
            save = save.lower() != "false"
        mailbox = request.target_mailbox
        return mime_from_json(message, mailbox, _new_message_id(sb, mailbox)), bool(save)
    raise GraphError(
        415, "UnsupportedMediaType", "Use application/json, or text/plain for MIME content."
    )


# sending ------------------------------------------------------------------------------


def _send_rights(sb, token, from_address):
    """(From mailbox, Sender mailbox) for a message the token's user submits."""
    user = token.user
    box = sb.directory.mailbox(from_address, user.tenant) if from_address else None
    if box is user.mailbox:
        return box, box
    if "Mail.Send.Shared" not in token.scopes:
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )
    rights = box.rights_of(user) if box is not None else set()
    if "SendAs" in rights:
        return box, box
    if "SendOnBehalf" in rights:
        return box, user.mailbox
    raise GraphError(
        403,
        "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to "
        "send mail on behalf of the specified sending account., Cannot submit message.",
    )


def _submit(sb, request, mailbox, raw, save, draft=None):
    """Send raw from mailbox: rights, size, the outbox, internal delivery, Sent Items."""
    if message_too_large(len(raw)):
        raise GraphError(
            413,
            "ErrorMessageSizeExceeded",
            "The message exceeds the maximum supported size.",
        )
    headers = headers_of(raw)
    if not str(headers.get("Message-ID", "") or "").strip():
        raw = with_header(raw, "Message-ID", _new_message_id(sb, mailbox))
    froms = _addresses(headers, "From")
    from_box, sender_box = _send_rights(sb, request.token, froms[0] if froms else mailbox.address)
    if not froms:
        raw = with_header(
            raw, "From", email.utils.formataddr((from_box.display_name, from_box.address))
        )
    if sender_box is not from_box and not headers.get("Sender"):
        # Send on Behalf: Exchange names the signed-in user as Sender.
        raw = with_header(
            raw, "Sender", email.utils.formataddr((sender_box.display_name, sender_box.address))
        )
    recipients = _addresses(headers, "To", "Cc", "Bcc")
    if not recipients:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is required, but none were found.",
        )
    now = request.now
    # Exchange Online's sending limits, counted against the signed-in user (exchange_limits.py):
    # an immediate refusal raises; a bounce or a carried-over departure is applied below.
    admission = exchange_limits.submit(sb, request.token.user.mailbox, recipients, now)
    moment = parse_moment(now)
    if draft is not None:
        draft.raw = raw
        _move(sb, draft, mailbox.folder("sentitems"), moment)
        kept = draft
    elif save:
        kept = sb.directory.deliver(mailbox.address, raw, "sentitems", moment)
    else:
        kept = None
    transmitted = without_header(raw, "Bcc")
    # What Exchange refused goes back as an NDR; the recipients still to deliver to.
    recipients = exchange_limits.report_refused(
        sb, mailbox, transmitted, recipients, admission, now
    )
    if not recipients:
        return
    own_id = str(headers_of(transmitted).get("Message-ID", "")).strip()
    sb.directory.outbox.append(
        Delivery(
            raw=transmitted,
            internet_message_id=own_id,
            from_=from_box.address.lower(),
            sender=sender_box.address.lower(),
            recipients=recipients,
            mailbox=mailbox.address,
            id=kept.id if kept else None,
            time=now,
            delivered_at=admission.delivered_at,
        )
    )
    for address in dict.fromkeys(recipients):
        if sb.directory.mailbox(address) is not None:
            exchange_limits.deliver(sb, address, transmitted, admission.delivered_at)


def _new_message_id(sb, mailbox):
    return f"<{sb.rng.getrandbits(64):016x}@{mailbox.address.split('@')[-1]}>"


def _touch(sb, message, moment):
    """A change delta queries see: a new changeKey and lastModifiedDateTime."""
    message._parsed = None
    message.change_key = base64.b64encode(sb.rng.randbytes(12)).decode()
    message.modified = moment


def _move(sb, message, folder, moment):
    _touch(sb, message, moment)
    del message.folder.messages[message.id]
    if not message.immutable:
        message.id = sb.directory.new_item_id(2, message.mailbox.id)
    message.folder = folder
    message.received = moment
    folder.messages[message.id] = message


def send_mail(sb, request):
    exchange_limits.release_due(sb)
    raw, save = _submitted(sb, request, wrapped=True)
    _submit(sb, request, request.target_mailbox, raw, save)
    return Response(202)


def send_draft(sb, request):
    exchange_limits.release_due(sb)
    message = message_of(request)
    if message.folder.well_known != "drafts":
        raise GraphError(400, "ErrorInvalidOperation", "Only a draft message can be sent.")
    _submit(sb, request, request.target_mailbox, message.raw, True, draft=message)
    return Response(202)


# drafts -------------------------------------------------------------------------------


def _wants_immutable(request):
    return IMMUTABLE_ID.lower() in (request.header("Prefer") or "").lower()


def _message_answer(request, message, status):
    body = {"@odata.context": metadata(request, request.target_mailbox, "/messages/$entity")}
    body.update(message.graph())
    headers = {"Preference-Applied": IMMUTABLE_ID} if message.immutable else {}
    return json_response(status, body, headers)


def create_draft(sb, request):
    raw, _ = _submitted(sb, request, wrapped=False)
    mailbox = request.target_mailbox
    if not str(headers_of(raw).get("Message-ID", "") or "").strip():
        raw = with_header(raw, "Message-ID", _new_message_id(sb, mailbox))
    moment = parse_moment(request.now)
    message = sb.directory.deliver(mailbox.address, raw, "drafts", moment)
    message.is_read = True
    message.created = message.modified = moment
    message.immutable = _wants_immutable(request)
    if message.immutable:
        # The immutable id is given at creation, so it must not look like a moved item's.
        folder = message.folder
        del folder.messages[message.id]
        message.id = sb.directory.new_item_id(2, mailbox.id)
        folder.messages[message.id] = message
    return _message_answer(request, message, 201)


def add_attachment(sb, request):
    message = message_of(request)
    name, content_type, data, inline, cid = _file_attachment(_json_body(request))
    message.raw = attach(message.raw, name, content_type, data, inline, cid)
    _touch(sb, message, parse_moment(request.now))
    body = {
        "@odata.context": metadata(
            request, request.target_mailbox, f"/messages('{message.id}')/attachments/$entity"
        ),
    }
    body.update(_attachments_of(message)[-1])
    return json_response(201, body)


def _attachment_id(message, index):
    """A stable id for the index-th attachment of a message (the sandbox keeps attachments
    in the MIME only, so the id is derived, not stored)."""
    digest = hashlib.sha256(f"{message.mailbox.id}|{message.id}|{index}".encode()).digest()
    return "AAMkAG" + base64.urlsafe_b64encode(bytes([0, 0, 0, 3]) + digest[:30]).decode()


def _attachments_of(message):
    """The fileAttachments of a message's MIME, in order, as Graph renders them."""
    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    found = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        name = part.get_filename()
        if disposition != "attachment" and not (disposition == "inline" and name):
            continue
        data = part.get_payload(decode=True) or b""
        cid = str(part.get("Content-ID", "") or "").strip().strip("<>") or None
        found.append(
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": _attachment_id(message, len(found)),
                "lastModifiedDateTime": iso_utc(message.modified or message.received),
                "name": name or "attachment",
                "contentType": part.get_content_type(),
                "size": len(data),
                "isInline": disposition == "inline",
                "contentId": cid,
                "contentBytes": base64.b64encode(data).decode(),
            }
        )
    return found


def list_attachments(sb, request):
    """GET .../messages/{id}/attachments: every attachment, those an upload session added
    included ("List attachments", https://learn.microsoft.com/graph/api/message-list-attachments)."""
    message = message_of(request)
    body = {
        "@odata.context": metadata(
            request, request.target_mailbox, f"/messages('{message.id}')/attachments"
        ),
        "value": _attachments_of(message),
    }
    return json_response(200, body)


def list_folder_messages(sb, request):
    exchange_limits.release_due(sb)
    found = _MESSAGE_ID_FILTER.fullmatch(request.query.get("$filter") or "")
    if found is None:
        return graph_mail.list_messages(sb, request)
    wanted = found.group(1).replace("''", "'")
    folder = folder_of(request)
    matches = sorted(
        (m for m in folder.messages.values() if m.internet_message_id == wanted),
        key=lambda m: (m.received, m.seq),
    )
    chosen = selection(request, MESSAGE_PROPERTIES, "message")
    prefer_text = PREFER_TEXT in (request.header("Prefer") or "")
    body = paged(
        request,
        matches,
        lambda m: m.graph(chosen, prefer_text),
        metadata(request, request.target_mailbox, "/messages"),
    )
    return json_response(200, body)


# upload sessions ----------------------------------------------------------------------


def create_upload_session(sb, request):
    token = request.token
    if request.target_mailbox is not token.user.mailbox:
        # Microsoft's known issue: with delegated permissions an upload session works only
        # on the signed-in user's own mailbox.
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )
    message = message_of(request)
    data = _json_body(request)
    item = next((v for k, v in data.items() if k.lower() == "attachmentitem"), None)
    if not isinstance(item, dict) or str(item.get("attachmentType", "")).lower() != "file":
        raise GraphError(400, "ErrorInvalidRequest", "AttachmentItem of type file is required.")
    size = item.get("size")
    if not isinstance(size, int) or size < 0 or not item.get("name"):
        raise GraphError(400, "ErrorInvalidRequest", "AttachmentItem needs a name and a size.")
    if size < MIN_UPLOAD_SESSION:
        raise GraphError(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
        )
    if size > MAX_ATTACHMENT_SIZE:
        raise GraphError(
            400,
            "ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize",
            "Attachment size must be less than the maximum size.",
        )
    session = UploadSession(
        id=sb.directory.new_item_id(4, message.mailbox.id),
        token=new_secret("upload"),
        message=message,
        app_id=token.app.client_id,
        name=str(item["name"]),
        size=size,
        content_type=str(item.get("contentType") or "application/octet-stream"),
        is_inline=bool(item.get("isInline")),
        content_id=item.get("contentId"),
        expires=request.now + UPLOAD_SESSION_LIFETIME,
    )
    sb.directory.upload_sessions[session.id] = session
    mailbox = message.mailbox
    url = (
        f"{request.base_url}/api/v2.0/Users('{mailbox.id}@{mailbox.tenant.id}')"
        f"/Messages('{message.id}')/AttachmentSessions('{session.id}')?authtoken={session.token}"
    )
    body = {
        "@odata.context": f"{request.base_url}/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": url,
        "expirationDateTime": iso_utc(parse_moment(session.expires)),
        "nextExpectedRanges": ["0-"],
    }
    return json_response(201, body)


def _upload_peek(sb, request):
    session = sb.directory.upload_sessions.get(request.params.get("session"))
    return session.mailbox.address if session else None


def _session_of(sb, request):
    if request.header("Authorization"):
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "The upload URL is pre-authenticated: send no Authorization header.",
        )
    session = sb.directory.upload_sessions.get(request.params["session"])
    if session is None or request.now >= session.expires:
        raise GraphError(404, "ErrorItemNotFound", "The upload session was not found or expired.")
    if request.query.get("authtoken") != session.token:
        raise GraphError(401, "InvalidAuthenticationToken", "The upload token is not valid.")
    request.app_id = session.app_id
    return session


def upload_chunk(sb, request):
    session = _session_of(sb, request)
    found = _CONTENT_RANGE.fullmatch((request.header("Content-Range") or "").strip())
    if found is None:
        raise GraphError(400, "InvalidContentRange", "Content-Range: bytes start-end/total.")
    start, end, total = (int(n) for n in found.groups())
    if total != session.size or end < start or end >= total or end - start + 1 != len(request.body):
        raise GraphError(
            400,
            "InvalidContentRange",
            "The Content-Range does not match the session's size or the body's length.",
        )
    if start != session.received:
        raise GraphError(
            416,
            "InvalidRange",
            f"The fragment must start at the next expected byte, {session.received}.",
        )
    wait = sb.limits.account_upload(session.app_id, session.mailbox.id, len(request.body))
    if wait is not None:
        raise GraphError(
            429,
            "TooManyRequests",
            "Application is over its upload limit for this mailbox. Please retry later.",
            retry_after=sb.limits.retry_after(wait),
        )
    message = session.message
    if message.folder.messages.get(message.id) is not message:
        del sb.directory.upload_sessions[session.id]
        raise GraphError(404, "ErrorItemNotFound", "The message of this upload was deleted.")
    session.chunks.append(request.body)
    session.received = end + 1
    expires = iso_utc(parse_moment(session.expires))
    if session.received < session.size:
        body = {
            "@odata.context": f"{request.base_url}/api/v2.0/$metadata#AttachmentSessions/$entity",
            # Outlook's answer spells this one in Pascal case (the walkthrough's example).
            "ExpirationDateTime": expires,
            "nextExpectedRanges": [str(session.received)],
        }
        return json_response(200, body)
    del sb.directory.upload_sessions[session.id]
    data = b"".join(session.chunks)
    session.chunks.clear()
    message.raw = attach(
        message.raw, session.name, session.content_type, data, session.is_inline, session.content_id
    )
    _touch(sb, message, parse_moment(request.now))
    mailbox = message.mailbox
    attachment_id = _attachments_of(message)[-1]["id"]
    location = (
        f"{request.base_url}/api/v2.0/Users('{mailbox.id}@{mailbox.tenant.id}')"
        f"/Messages('{message.id}')/Attachments('{attachment_id}')"
    )
    return Response(201, headers={"Location": location})


def cancel_upload(sb, request):
    session = _session_of(sb, request)
    del sb.directory.upload_sessions[session.id]
    return Response(204)
