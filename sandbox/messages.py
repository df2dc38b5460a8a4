"""Messages stored as raw MIME and shown as Graph message resources."""

import base64
import datetime
import email.policy
import email.utils
import hashlib
import html
import re
from dataclasses import dataclass, field
from email.parser import BytesParser

# Properties a $select may name; internetMessageHeaders comes back only when selected.
MESSAGE_PROPERTIES = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
)
SELECT_ONLY = {"internetMessageHeaders"}


def iso_utc(moment):
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_moment(value):
    """A datetime from a datetime, an epoch number or an ISO 8601 string (UTC if naive)."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, (int, float)):
        moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
    else:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def recipient(name, address):
    return {"emailAddress": {"name": name or address, "address": address}}


def _addresses(parsed, header):
    try:
        value = parsed[header]
        if value is None:
            return []
        return [recipient(a.display_name, a.addr_spec) for a in value.addresses]
    except (AttributeError, IndexError, ValueError, TypeError):
        return []


def _text_of(parsed):
    """(plain text, html or None) of the message body, best effort."""
    try:
        html_part = parsed.get_body(preferencelist=("html",))
        plain_part = parsed.get_body(preferencelist=("plain",))
        html_text = html_part.get_content() if html_part is not None else None
        plain = plain_part.get_content() if plain_part is not None else None
    except (KeyError, LookupError, ValueError, AttributeError):
        return "", None
    if plain is None and html_text is not None:
        plain = html.unescape(re.sub(r"<[^>]*>", " ", html_text))
    return plain or "", html_text


def _has_attachments(parsed):
    return any(part.is_attachment() for part in parsed.walk() if not part.is_multipart())


@dataclass(eq=False)
class Message:
    id: str
    mailbox: object
    folder: object
    raw: bytes
    received: datetime.datetime
    internet_message_id: str
    conversation_id: str
    change_key: str
    is_read: bool = False
    # Delivery order, to break ties between equal receivedDateTime values.
    seq: int = 0
    created: datetime.datetime = None
    modified: datetime.datetime = None
    # Created with Prefer: IdType="ImmutableId": the id survives moves (sending).
    immutable: bool = False
    _parsed: object = field(default=None, repr=False)

    @property
    def parsed(self):
        if self._parsed is None:
            self._parsed = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        return self._parsed

    @property
    def size(self):
        """What Exchange reports as PidTagMessageSize (``Integer 0x0E08``): the sandbox
        stores MIME only, so it is the MIME's length (Exchange counts its own storage)."""
        return len(self.raw)

    @property
    def subject(self):
        return str(self.parsed.get("Subject", "") or "")

    def _header_addresses(self, *names):
        values = [str(v) for name in names for v in (self.parsed.get_all(name) or [])]
        return [a.lower() for _, a in email.utils.getaddresses(values) if a]

    @property
    def from_(self):
        found = self._header_addresses("From")
        return found[0] if found else None

    @property
    def sender(self):
        found = self._header_addresses("Sender")
        return found[0] if found else self.from_

    @property
    def recipients(self):
        """To, Cc and Bcc addresses (Bcc survives in the Sent Items copy only)."""
        return self._header_addresses("To", "Cc", "Bcc")

    def graph(self, select=None, prefer_text=False):
        """The Graph representation, restricted to select (id always included)."""
        parsed = self.parsed
        wanted = set(select) if select else set(MESSAGE_PROPERTIES) - SELECT_ONLY
        wanted.add("id")
        plain, html_text = _text_of(parsed)
        senders = _addresses(parsed, "From")
        sender = _addresses(parsed, "Sender") or senders
        try:
            sent = parse_moment(email.utils.parsedate_to_datetime(parsed["Date"]))
        except (TypeError, ValueError, IndexError):
            sent = self.received
        if prefer_text:
            body = {"contentType": "text", "content": plain}
        else:
            content = html_text or f"<html><body><pre>{html.escape(plain)}</pre></body></html>"
            body = {"contentType": "html", "content": content}
        values = {
            "id": self.id,
            "createdDateTime": iso_utc(self.created or self.received),
            "lastModifiedDateTime": iso_utc(self.modified or self.received),
            "changeKey": self.change_key,
            "categories": [],
            "receivedDateTime": iso_utc(self.received),
            "sentDateTime": iso_utc(sent),
            "hasAttachments": _has_attachments(parsed),
            "internetMessageId": self.internet_message_id,
            "subject": self.subject,
            "bodyPreview": " ".join(plain.split())[:255],
            "importance": "normal",
            "parentFolderId": self.folder.id,
            "conversationId": self.conversation_id,
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": self.is_read,
            "isDraft": self.folder.well_known == "drafts",
            "inferenceClassification": "focused",
            "body": body,
            "sender": sender[0] if sender else None,
            "from": senders[0] if senders else None,
            "toRecipients": _addresses(parsed, "To"),
            "ccRecipients": _addresses(parsed, "Cc"),
            "bccRecipients": _addresses(parsed, "Bcc"),
            "replyTo": _addresses(parsed, "Reply-To"),
            "flag": {"flagStatus": "notFlagged"},
            "internetMessageHeaders": [{"name": k, "value": str(v)} for k, v in parsed.items()],
        }
        result = {"@odata.etag": f'W/"{self.change_key}"'}
        result.update((name, values[name]) for name in MESSAGE_PROPERTIES if name in wanted)
        return result


def header_ids(raw):
    """(Message-ID, thread root id) read from raw MIME headers."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    own = str(parsed.get("Message-ID", "") or "").strip()
    references = str(parsed.get("References", "") or "").split()
    reply_to = str(parsed.get("In-Reply-To", "") or "").strip()
    root = references[0] if references else (reply_to or own)
    return own, root


def conversation_id(mailbox_id, root):
    digest = hashlib.sha256(f"{mailbox_id}|{root}".encode()).digest()[:30]
    return "AAQkAG" + base64.urlsafe_b64encode(digest).decode()
