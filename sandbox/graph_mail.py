"""Graph mail reading: folders, message lists, one message, its MIME ($value)."""

import base64
import re

from .directory import ROOT_FOLDER
from .errors import GraphError
from .graph_common import FOLDER, add_route, metadata, paged, param, selection
from .messages import MESSAGE_PROPERTIES, parse_moment
from .web import Response, json_response

# "delta" names the delta query (a later module), never a message.
MESSAGE = r"/messages/(?P<message>(?!delta$)[^/]+)"
FOLDER_PROPERTIES = (
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "sizeInBytes",
    "isHidden",
)
_COMPARISONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}
_CLAUSE = re.compile(
    r"\s*(receivedDateTime|isRead)\s+(eq|ne|ge|gt|le|lt)\s+(\S+)\s*", re.IGNORECASE
)
PREFER_TEXT = 'outlook.body-content-type="text"'


def register(router, sb):
    add_route(router, sb, "GET", r"/mailFolders", list_folders, need="mail.read")
    add_route(router, sb, "GET", FOLDER, get_folder, need="mail.read")
    add_route(router, sb, "GET", FOLDER + r"/messages", list_messages, need="mail.read")
    add_route(router, sb, "GET", FOLDER + MESSAGE, get_message, need="mail.read")
    add_route(router, sb, "GET", FOLDER + MESSAGE + r"/\$value", get_mime, need="mail.read")
    add_route(router, sb, "GET", r"/messages", list_messages, need="mail.read")
    add_route(router, sb, "GET", MESSAGE, get_message, need="mail.read")
    add_route(router, sb, "GET", MESSAGE + r"/\$value", get_mime, need="mail.read")


def _looks_like_id(value):
    if not value.startswith("AAMkAG"):
        return False
    rest = value[6:]
    try:
        base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4))
    except ValueError:
        return False
    return True


def folder_of(request):
    """The folder the path names (id or well-known name), or 404/400 like Graph."""
    key = param(request, "folder")
    folder = request.target_mailbox.folder(key)
    if folder is None:
        if _looks_like_id(key):
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    return folder


def message_of(request):
    key = request.params["message"]
    if not _looks_like_id(key):
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    message = request.target_mailbox.find_message(key)
    if message is None:
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )
    return message


def folder_resource(folder):
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": 0,
        "unreadItemCount": sum(1 for m in folder.messages.values() if not m.is_read),
        "totalItemCount": len(folder.messages),
        "sizeInBytes": sum(len(m.raw) for m in folder.messages.values()),
        "isHidden": False,
    }


def _folder_view(request):
    chosen = selection(request, FOLDER_PROPERTIES, "mailFolder") or FOLDER_PROPERTIES

    def render(folder):
        values = folder_resource(folder)
        return {name: values[name] for name in FOLDER_PROPERTIES if name in chosen or name == "id"}

    return render


def list_folders(sb, request):
    mailbox = request.target_mailbox
    folders = [
        f
        for f in mailbox.folders.values()
        if f.well_known != ROOT_FOLDER and f.parent_id == mailbox.folder(ROOT_FOLDER).id
    ]
    return json_response(
        200,
        paged(request, folders, _folder_view(request), metadata(request, mailbox, "/mailFolders")),
    )


def get_folder(sb, request):
    mailbox = request.target_mailbox
    body = {"@odata.context": metadata(request, mailbox, "/mailFolders/$entity")}
    body.update(_folder_view(request)(folder_of(request)))
    return json_response(200, body)


def _filter(request, messages):
    raw = request.query.get("$filter")
    if not raw:
        return messages
    tests = []
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
        found = _CLAUSE.fullmatch(clause)
        if found is None:
            raise GraphError(400, "BadRequest", "Invalid filter clause")
        name, op, value = (
            found.group(1).lower(),
            _COMPARISONS[found.group(2).lower()],
            found.group(3),
        )
        try:
            if name == "isread":
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                wanted = value.lower() == "true"
                tests.append(lambda m, op=op, wanted=wanted: op(m.is_read, wanted))
            else:
                moment = parse_moment(value)
                tests.append(lambda m, op=op, moment=moment: op(m.received, moment))
        except ValueError:
            raise GraphError(400, "BadRequest", "Invalid filter clause") from None
    return [m for m in messages if all(test(m) for test in tests)]


def _order(request, messages):
    raw = " ".join(request.query.get("$orderby", "receivedDateTime desc").split())
    name, _, direction = raw.partition(" ")
    if name.lower() != "receiveddatetime" or direction.lower() not in ("", "asc", "desc"):
        raise GraphError(
            400, "BadRequest", f"The sandbox orders by receivedDateTime only, not '{raw}'."
        )
    return sorted(messages, key=lambda m: (m.received, m.seq), reverse=direction.lower() == "desc")


def _message_view(request):
    chosen = selection(request, MESSAGE_PROPERTIES, "message")
    prefer_text = PREFER_TEXT in (request.header("Prefer") or "")
    return (lambda message: message.graph(chosen, prefer_text)), prefer_text


def _with_preference(response, prefer_text):
    if prefer_text:
        response.headers["Preference-Applied"] = PREFER_TEXT
    return response


def list_messages(sb, request):
    mailbox = request.target_mailbox
    if param(request, "folder"):
        messages = list(folder_of(request).messages.values())
    else:
        messages = [m for m in mailbox.all_messages() if m.folder.well_known != "outbox"]
    messages = _order(request, _filter(request, messages))
    render, prefer_text = _message_view(request)
    body = paged(request, messages, render, metadata(request, mailbox, "/messages"))
    return _with_preference(json_response(200, body), prefer_text)


def get_message(sb, request):
    message = message_of(request)
    render, prefer_text = _message_view(request)
    body = {"@odata.context": metadata(request, request.target_mailbox, "/messages/$entity")}
    body.update(render(message))
    return _with_preference(json_response(200, body), prefer_text)


def get_mime(sb, request):
    # Graph documents text/plain for $value (api-reference message-get.md, example 4).
    return Response(200, message_of(request).raw, "text/plain")
