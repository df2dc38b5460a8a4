"""Graph mail sync: delta queries on mail folders, PATCH / move / DELETE of messages, $batch.

Delta state: a round is the list of changes of one folder between two snapshots of it
(message id -> changeKey). The first round lists every message (subject to $filter); a later
round diffs the folder against the snapshot taken when the previous round began, so every way
a folder changes (delivery, PATCH, move, DELETE, another module's writes) shows up without
bookkeeping in the rest of the sandbox. Tokens are opaque keys into Directory.delta_tokens;
the query options of the first call live in the round, as Graph keeps them in its tokens.
"""

import base64
import email.message
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from functools import partial

from .errors import GraphError, HttpError
from .graph_common import FOLDER, add_route, authenticate, metadata, selection
from .graph_mail import MESSAGE, PREFER_TEXT, folder_of, message_of
from .messages import MESSAGE_PROPERTIES, iso_utc, parse_moment
from .tokens import b64url
from .web import Request, Response, json_response

DEFAULT_PAGE_SIZE = 10
# Microsoft documents no ceiling for odata.maxpagesize on messages; the sandbox applies
# at most this many and says so in Preference-Applied.
MAX_PAGE_SIZE = 1000
MAX_BATCH_STEPS = 20
CHANGE_TYPES = ("created", "updated", "deleted")
IMMUTABLE_ID = 'IdType="ImmutableId"'
_FILTER = re.compile(r"\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*", re.IGNORECASE)
_MAX_PAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# $expand=singleValueExtendedProperties($filter=id eq '{type} {proptag}'): the documented
# way to read a MAPI property Graph does not expose (api-reference
# singlevaluelegacyextendedproperty-get.md; resources/extended-properties-overview.md).
_EXPAND = re.compile(
    r"\s*singleValueExtendedProperties\(\s*\$filter\s*=\s*id\s+eq\s+'([^']*)'\s*\)\s*",
    re.IGNORECASE,
)
# A proptag names the property id (0x0E08) or the whole tag with its type (0x0E080003).
_PROPTAG_ID = re.compile(r"\s*([A-Za-z]+)\s+0x([0-9A-Fa-f]{1,8})\s*")
# PidTagMessageSize (PtypInteger32) and PidTagMessageSizeExtended (PtypInteger64) share the
# property id 0x0E08 ([MS-OXPROPS] 2.797, 2.798): Graph types Integer and Long.
MESSAGE_SIZE_TAG = 0x0E08
_SIZE_TYPES = {"integer": "Integer", "long": "Long"}
_PROPERTY_TYPES = (
    "binary",
    "boolean",
    "clsid",
    "currency",
    "double",
    "float",
    "integer",
    "long",
    "object",
    "short",
    "string",
    "systime",
    "apptime",
    "error",
    "null",
)


@dataclass(eq=False)
class DeltaRound:
    mailbox_id: str
    folder_id: str
    options: dict
    # (message id, removed) in page order
    entries: list
    # message id -> changeKey when the round began: the next round diffs against it
    snapshot: dict
    stale: bool = False


@dataclass(eq=False)
class DeltaToken:
    round: DeltaRound
    # position in round.entries for a $skiptoken; None for the $deltatoken ending the round
    offset: int | None
    issued_at: float


def register(router, sb):
    delta = FOLDER + r"/messages/delta"
    add_route(router, sb, "GET", delta, delta_page, need="mail.read")
    for prefix in (FOLDER, ""):
        add_route(router, sb, "PATCH", prefix + MESSAGE, patch_message, need="mail.write")
        add_route(router, sb, "DELETE", prefix + MESSAGE, delete_message, need="mail.write")
        add_route(router, sb, "POST", prefix + MESSAGE + r"/move", move_message, need="mail.write")
    router.add(
        "POST", r"/v1\.0/\$batch", partial(batch, sb), "graph", prelude=partial(_batch_prelude, sb)
    )
    # Test controls; their state lives in the Directory, so Sandbox.reset() clears it.


def expire_delta_tokens(sb, mailbox_address):
    """Every delta token issued so far for the mailbox answers 410 syncStateNotFound."""
    with sb.lock:
        mailbox = sb.directory.require_mailbox(mailbox_address)
        for token in sb.directory.delta_tokens.values():
            if token.round.mailbox_id == mailbox.id:
                token.round.stale = True


def set_delta_token_lifetime(sb, seconds):
    """Delta tokens older than this (sandbox clock) answer 410; None: they never expire."""
    with sb.lock:
        sb.directory.delta_token_lifetime = seconds


# helpers -------------------------------------------------------------------------------


def _new_token(sb, token):
    key = b64url(sb.rng.randbytes(24))
    sb.directory.delta_tokens[key] = token
    return key


def _touch(sb, message):
    """An update: a new changeKey (what delta diffs) and lastModifiedDateTime."""
    message.change_key = base64.b64encode(sb.rng.randbytes(12)).decode()
    message.modified = sb.clock.datetime()


def _json_body(request):
    try:
        body = request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.")
    return body


def _preferences(request):
    return request.header("Prefer") or ""


def _immutable(request):
    return IMMUTABLE_ID.lower() in _preferences(request).lower()


# Properties a sandbox message holds as fields. A $select of these only (what an import's
# delta query asks for) is answered without parsing the MIME: Graph serves them from its
# store, and parsing every message of a page cost the sandbox about 0.7 s per page of
# large mail, on the CPUs the client under test shares with it.
_STORED = {
    "id": lambda m: m.id,
    "createdDateTime": lambda m: iso_utc(m.created or m.received),
    "lastModifiedDateTime": lambda m: iso_utc(m.modified or m.received),
    "changeKey": lambda m: m.change_key,
    "receivedDateTime": lambda m: iso_utc(m.received),
    "internetMessageId": lambda m: m.internet_message_id,
    "parentFolderId": lambda m: m.folder.id,
    "conversationId": lambda m: m.conversation_id,
    "isRead": lambda m: m.is_read,
}


def _render(request, message, select=None, extended=None):
    if select and _STORED.keys() >= set(select):
        wanted = {*select, "id"}
        result = {"@odata.etag": f'W/"{message.change_key}"'}
        result.update(
            (name, _STORED[name](message)) for name in MESSAGE_PROPERTIES if name in wanted
        )
    else:
        result = message.graph(select, PREFER_TEXT in _preferences(request))
    values = [_extended_value(message, wanted) for wanted in extended or ()]
    values = [value for value in values if value is not None]
    # Graph leaves the collection out when the message has none of the asked properties.
    if values:
        result["singleValueExtendedProperties"] = values
    return result


def _extended_value(message, wanted):
    """{"id", "value"} of one expanded extended property, or None when the message has
    none: the sandbox stores one, the message size. Values are strings, as Graph sends
    them; the id comes back as ``{Type} 0x{tag}`` in lower-case hex (unconfirmed)."""
    type_name, tag = wanted
    if tag != MESSAGE_SIZE_TAG or type_name not in _SIZE_TYPES.values():
        return None
    return {"id": f"{type_name} 0x{tag:x}", "value": str(message.size)}


def _expand_option(request):
    """The extended properties a $expand asks for: [(Type, tag)], or 400 like Graph."""
    raw = request.query.get("$expand")
    if raw is None:
        return []
    wanted = []
    for part in _split_expand(raw):
        found = _EXPAND.fullmatch(part)
        if not found:
            raise GraphError(
                400,
                "BadRequest",
                "The sandbox expands singleValueExtendedProperties($filter=id eq '...') only.",
            )
        tag = _PROPTAG_ID.fullmatch(found.group(1))
        if not tag or tag.group(1).lower() not in _PROPERTY_TYPES:
            raise GraphError(
                400, "ErrorInvalidProperty", f"The property id '{found.group(1)}' is invalid."
            )
        kind = tag.group(1).lower()
        number = int(tag.group(2), 16)
        number = number >> 16 if number > 0xFFFF else number
        wanted.append((_SIZE_TYPES.get(kind, kind.capitalize()), number))
    return wanted


def _split_expand(raw):
    """The comma-separated items of $expand, commas inside parentheses kept."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(raw):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(raw[start:index])
            start = index + 1
    parts.append(raw[start:])
    return [part for part in parts if part.strip()]


def _link(request, items):
    path = urllib.parse.urlsplit(request.target).path
    query = urllib.parse.urlencode(items, quote_via=urllib.parse.quote, safe="$,'():")
    return f"{request.base_url}{path}?{query}"


# delta ---------------------------------------------------------------------------------


def _delta_options(request):
    """The options of a first delta call, validated as Graph does."""
    query = request.query
    options = {
        "select": selection(request, MESSAGE_PROPERTIES, "message"),
        "query": [(k, v) for k, v in query.items() if k not in ("$skiptoken", "$deltatoken")],
        "change_type": None,
        "filter": None,
        "top": None,
        "newest_first": False,
        "expand": _expand_option(request),
    }
    if "$search" in query:
        # "There is no support for $search" ("message: delta",
        # https://learn.microsoft.com/graph/api/message-delta). The answer is undocumented:
        # the sandbox refuses as for any query option Graph does not take (sandbox/README.md).
        raise GraphError(400, "BadRequest", "The query parameter '$search' is not supported.")
    change_type = query.get("changeType")
    if change_type is not None:
        if change_type.lower() not in CHANGE_TYPES:
            raise GraphError(400, "BadRequest", f"Invalid changeType '{change_type}'.")
        options["change_type"] = change_type.lower()
    raw_filter = query.get("$filter")
    if raw_filter:
        found = _FILTER.fullmatch(raw_filter)
        try:
            moment = parse_moment(found.group(2)) if found else None
        except ValueError:
            moment = None
        if moment is None:
            raise GraphError(
                400, "BadRequest", "Delta on messages filters on 'receivedDateTime ge|gt' only."
            )
        options["filter"] = (found.group(1).lower(), moment)
    top = query.get("$top")
    if top is not None:
        if not top.isdigit() or not 0 < int(top) <= MAX_PAGE_SIZE:
            raise GraphError(400, "BadRequest", f"Invalid value '{top}' for query option '$top'.")
        options["top"] = int(top)
    order = " ".join(query.get("$orderby", "").split()).lower()
    if order not in ("", "receiveddatetime desc"):
        raise GraphError(
            400, "BadRequest", "Delta on messages orders by receivedDateTime desc only."
        )
    options["newest_first"] = bool(order)
    return options


def _passes(options, message):
    if options["filter"] is None:
        return True
    op, moment = options["filter"]
    return message.received >= moment if op == "ge" else message.received > moment


def _start_round(mailbox, folder, options, base):
    """A round of changes since the base snapshot (None: the first round, every message)."""
    current = dict(folder.messages)
    present = [m for m in current.values() if _passes(options, m)]
    if base is None:
        changed = present
        removed = []
    else:
        wanted = options["change_type"]
        created = [m for m in present if m.id not in base]
        updated = [m for m in present if m.id in base and base[m.id] != m.change_key]
        changed = {"created": created, "updated": updated, "deleted": []}.get(
            wanted, created + updated
        )
        removed = [] if wanted in ("created", "updated") else [i for i in base if i not in current]
    changed = sorted(changed, key=lambda m: (m.received, m.seq), reverse=options["newest_first"])
    snapshot = {m.id: m.change_key for m in current.values()}
    return DeltaRound(
        mailbox_id=mailbox.id,
        folder_id=folder.id,
        options=options,
        entries=[(m.id, False) for m in changed] + [(i, True) for i in removed],
        # Rounds with nothing new share one snapshot: a poller does not grow the sandbox.
        snapshot=base if snapshot == base else snapshot,
    )


def _gone(request, options=None):
    """410 with a fresh initial delta URL (same options, empty $deltatoken) in Location."""
    query = list(options["query"]) if options else []
    location = _link(request, [*query, ("$deltatoken", "")])
    return GraphError(
        410,
        "syncStateNotFound",
        "The sync state generation is not found. Start a new sync with an empty delta token.",
        headers={"Location": location},
    )


def _token(sb, request, key, folder):
    token = sb.directory.delta_tokens.get(key)
    if token is None:
        raise _gone(request)
    lifetime = sb.directory.delta_token_lifetime
    expired = lifetime is not None and request.now - token.issued_at > lifetime
    if token.round.stale or expired:
        raise _gone(request, token.round.options)
    if (token.round.mailbox_id, token.round.folder_id) != (
        request.target_mailbox.id,
        folder.id,
    ):
        raise GraphError(400, "BadRequest", "The delta token belongs to another folder.")
    return token


def _page_size(request, options):
    """(page size, Preference-Applied value or None)."""
    found = _MAX_PAGE.search(_preferences(request))
    if found:
        size = min(max(int(found.group(1)), 1), MAX_PAGE_SIZE)
        return size, f"odata.maxpagesize={size}"
    return options["top"] or DEFAULT_PAGE_SIZE, None


def delta_page(sb, request):
    mailbox = request.target_mailbox
    folder = folder_of(request)
    key = request.query.get("$skiptoken") or request.query.get("$deltatoken")
    if key:
        token = _token(sb, request, key, folder)
        if token.offset is None:
            round_, offset = (
                _start_round(mailbox, folder, token.round.options, token.round.snapshot),
                0,
            )
        else:
            round_, offset = token.round, token.offset
    else:
        round_, offset = _start_round(mailbox, folder, _delta_options(request), None), 0
    size, applied = _page_size(request, round_.options)
    value = []
    for message_id, removed in round_.entries[offset : offset + size]:
        if removed:
            value.append(
                {
                    "@odata.type": "#microsoft.graph.message",
                    "id": message_id,
                    "@removed": {"reason": "deleted"},
                }
            )
            continue
        message = folder.messages.get(message_id)
        # Gone since the round began: the next round reports it as removed.
        if message is not None:
            entry = {"@odata.type": "#microsoft.graph.message"}
            entry.update(
                _render(request, message, round_.options["select"], round_.options.get("expand"))
            )
            value.append(entry)
    body = {"@odata.context": metadata(request, mailbox, "/messages(delta)"), "value": value}
    end = offset + size
    if end < len(round_.entries):
        key = _new_token(sb, DeltaToken(round_, end, request.now))
        body["@odata.nextLink"] = _link(request, [("$skiptoken", key)])
    else:
        key = _new_token(sb, DeltaToken(round_, None, request.now))
        body["@odata.deltaLink"] = _link(request, [("$deltatoken", key)])
    applied = [a for a in (applied, IMMUTABLE_ID if _immutable(request) else None) if a]
    headers = {"Preference-Applied": ", ".join(applied)} if applied else None
    return json_response(200, body, headers)


# writes --------------------------------------------------------------------------------


def _with_context(request, message):
    body = {"@odata.context": metadata(request, request.target_mailbox, "/messages/$entity")}
    body.update(_render(request, message))
    return body


def patch_message(sb, request):
    message = message_of(request)
    changes = _json_body(request)
    if set(changes) - {"isRead"} or not isinstance(changes.get("isRead"), bool):
        raise GraphError(400, "BadRequest", "The sandbox updates isRead (a boolean) only.")
    message.is_read = changes["isRead"]
    _touch(sb, message)
    return json_response(200, _with_context(request, message))


def move_message(sb, request):
    message = message_of(request)
    destination = _json_body(request).get("destinationId")
    if not isinstance(destination, str) or not destination:
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    target = request.target_mailbox.folder(destination)
    if target is None:
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )
    del message.folder.messages[message.id]
    # One id per message: once a client has seen it as an immutable id (at creation or on a
    # move asking for one), it must keep naming the message, as Graph's immutable ids do.
    message.immutable = message.immutable or _immutable(request)
    if not message.immutable:
        message.id = sb.directory.new_item_id(2, request.target_mailbox.id)
    message.folder = target
    _touch(sb, message)
    target.messages[message.id] = message
    return json_response(201, _with_context(request, message))


def delete_message(sb, request):
    # A soft delete into Recoverable Items: gone from every folder Graph lists.
    message = message_of(request)
    del message.folder.messages[message.id]
    return Response(204)


# $batch --------------------------------------------------------------------------------


def _batch_prelude(sb, request, route):
    request.token = authenticate(sb, request)


def _steps(request):
    """The validated steps of a batch; any fault in the envelope fails the whole batch."""
    try:
        steps = request.json().get("requests")
    except (ValueError, UnicodeDecodeError, AttributeError):
        steps = None
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(steps) > MAX_BATCH_STEPS:
        raise GraphError(
            400,
            "BadRequest",
            f"Number of batch request steps exceeds the maximum of {MAX_BATCH_STEPS}.",
        )
    seen = set()
    for step in steps:
        step_id, method, url = step.get("id"), step.get("method"), step.get("url")
        if not all(isinstance(v, str) and v for v in (step_id, method, url)):
            raise GraphError(
                400, "BadRequest", "Each batch request needs an id, a method and a url."
            )
        if step_id in seen:
            raise GraphError(400, "BadRequest", f"Batch request id '{step_id}' is not unique.")
        depends = step.get("dependsOn") or []
        if not isinstance(depends, list) or any(d not in seen for d in depends):
            raise GraphError(
                400, "BadRequest", f"dependsOn of '{step_id}' must name earlier request ids."
            )
        if not isinstance(step.get("headers") or {}, dict):
            raise GraphError(400, "BadRequest", f"Headers of '{step_id}' must be an object.")
        seen.add(step_id)
    return steps


def _is_json(media):
    return media == "application/json" or media.endswith("+json")


def _base64_body(text):
    """The bytes of a base64 (or base64url) step body, or None when it is not base64."""
    compact = re.sub(r"\s+", "", text)
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact.encode("ascii"))
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None


def _sub_request(sb, outer, step):
    """The step as a request of its own: the batch's token, the step's headers and body."""
    headers = email.message.Message()
    headers["Authorization"] = outer.header("Authorization") or ""
    for name, value in (step.get("headers") or {}).items():
        headers[name] = str(value)
    body = b""
    undecodable = False
    if "body" in step:
        media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not headers.get("Content-Type"):
            body = None
        elif isinstance(step["body"], str) and not _is_json(media):
            # "Might be a JSON object or a base64 URL-encoded value for example, when the body
            # is an image" ("Combine multiple HTTP requests using JSON batching",
            # https://learn.microsoft.com/graph/json-batching): a body that is not JSON
            # travels base64-encoded inside the batch.
            body = _base64_body(step["body"])
            undecodable = body is None
        elif isinstance(step["body"], str):
            body = step["body"].encode("utf-8")
        else:
            body = json.dumps(step["body"]).encode("utf-8")
    url = step["url"]
    target = "/v1.0/" + url.lstrip("/")
    sub = Request(step["method"], target, headers, body or b"", outer.base_url)
    sub.now = outer.now
    sub.epoch = outer.epoch
    sub.request_id = str(uuid.uuid4())
    sub.client_request_id = sub.client_request_id or sub.request_id
    refused = None
    if undecodable:
        refused = GraphError(
            400, "BadRequest", "A request body that is not JSON must be base64-encoded."
        )
    elif body is None:
        refused = GraphError(
            400, "BadRequest", "Content-Type header must be specified when a body is present."
        )
    elif "://" in url or step["method"].upper() not in _METHODS:
        refused = GraphError(400, "BadRequest", "Batch steps take a relative URL and a method.")
    return sub, refused


def _execute(sb, sub, refused):
    """Route, fault, prelude (token, scope, mailbox, limits) and handler, as for a request."""
    release = None
    try:
        if refused is not None:
            raise refused
        route, found = sb.router.match(sub.method, sub.path)
        if route is None or route.family != "graph" or route.prelude is None:
            segment = sub.path.rstrip("/").rsplit("/", 1)[-1]
            if found:
                raise GraphError(405)
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
        if sub.path == "/v1.0/$batch":
            raise GraphError(400, "BadRequest", "A batch step cannot be a batch.")
        sub.params = found
        if route.peek:
            sub.mailbox = route.peek(sub)
        fault = sb.faults.pick(sub)
        if fault and fault.kind == "status":
            return _fault_answer(fault, sub)
        release = route.prelude(sub, route)
        if fault and fault.kind == "reset":
            raise GraphError(504)
        response = route.handler(sub)
        # Other fault kinds cut the step after it ran: its effect stays, its answer is lost.
        return GraphError(504).render(sub) if fault else response
    except HttpError as exc:
        return exc.render(sub)
    finally:
        if release is not None:
            release()


def _fault_answer(fault, sub):
    if isinstance(fault.body, dict):
        response = json_response(fault.status, fault.body)
    elif fault.body is not None:
        text = fault.body.encode("utf-8") if isinstance(fault.body, str) else fault.body
        response = Response(fault.status, text, "text/html; charset=utf-8")
    else:
        return GraphError(fault.status, fault.code, retry_after=fault.retry_after).render(sub)
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    return response


def _answer(step_id, response):
    """A step's answer: JSON bodies as JSON, any other body base64 (as Graph does)."""
    headers = dict(response.headers)
    if response.content_type:
        headers["Content-Type"] = response.content_type
    answer = {"id": step_id, "status": response.status, "headers": headers}
    if response.body:
        if (response.content_type or "").startswith("application/json"):
            answer["body"] = json.loads(response.body)
        else:
            answer["body"] = base64.b64encode(response.body).decode("ascii")
    return answer


def batch(sb, request):
    steps = _steps(request)
    answers = {}
    # Steps run one after the other, so at most one per mailbox is in flight (Outlook
    # allows four); a dependency always runs first since it must come earlier.
    for step in steps:
        sub, refused = _sub_request(sb, request, step)
        failed = [d for d in step.get("dependsOn") or [] if answers[d]["status"] >= 400]
        if failed:
            refused = GraphError(
                424, "FailedDependency", f"Request '{failed[0]}' this one depends on failed."
            )
        answers[step["id"]] = _answer(step["id"], _execute(sb, sub, refused))
    responses = list(answers.values())
    sb.rng.shuffle(responses)
    return json_response(200, {"responses": responses})
