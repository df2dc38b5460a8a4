"""Graph details where the sandbox follows Microsoft's documentation to the letter: the
attachments an upload session added are listed, a $batch step's non-JSON body travels
base64-encoded, and messages delta refuses $search. Each test names its source."""

import base64

import pytest

from sandbox.defaults import ADMIN, ALICE
from sandbox.limits import MB

SCOPES = ("Mail.ReadWrite", "Mail.Send", "User.Read")
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


@pytest.fixture
def graph(sandbox, graph_session):
    def call(method, path, scopes=SCOPES, login=ADMIN, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        token = sandbox.issue_token(login, list(scopes))["access_token"]
        headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("https://") else f"{sandbox.graph_url}{path}"
        return graph_session.request(method, url, headers=headers, **kwargs)

    return call


def mime(to="bob@example.test", subject="Quote", message_id="<d1@contoso.test>"):
    return (
        f"Message-ID: {message_id}\r\nFrom: Admin <{ADMIN}>\r\nTo: {to}\r\n"
        f"Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
    ).encode()


def draft(graph):
    answer = graph(
        "POST",
        "/me/messages",
        data=base64.b64encode(mime()),
        headers={"Content-Type": "text/plain", **IMMUTABLE},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


# attachments ------------------------------------------------------------------------------


@pytest.mark.unguarded_loggers("urllib3")  # the upload URL carries its credential
def test_attachments_of_a_draft_list_what_an_upload_session_added(sandbox, graph, graph_session):
    """ "List attachments" (https://learn.microsoft.com/graph/api/message-list-attachments):
    GET /me/messages/{id}/attachments lists a message's attachments; "Attach large files to
    Outlook messages as attachments" (https://learn.microsoft.com/graph/outlook-large-attachments)
    adds them through an upload session, and the last fragment's Location names the
    attachment."""
    message_id = draft(graph)
    small = graph(
        "POST",
        f"/me/messages/{message_id}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "note.txt",
            "contentType": "text/plain",
            "contentBytes": base64.b64encode(b"a note").decode(),
        },
    )
    assert small.status_code == 201, small.text
    content = bytes(range(256)) * (int(3.5 * MB) // 256)
    session = graph(
        "POST",
        f"/me/messages/{message_id}/attachments/createUploadSession",
        json={
            "AttachmentItem": {
                "attachmentType": "file",
                "name": "big.pdf",
                "size": len(content),
                "contentType": "application/pdf",
            }
        },
    ).json()
    done = graph_session.put(
        session["uploadUrl"],
        data=content,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes 0-{len(content) - 1}/{len(content)}",
        },
    )
    assert done.status_code == 201, done.text
    listed = graph("GET", f"/me/messages/{message_id}/attachments", headers=IMMUTABLE)
    assert listed.status_code == 200, listed.text
    value = listed.json()["value"]
    assert [(a["name"], a["size"], a["contentType"]) for a in value] == [
        ("note.txt", 6, "text/plain"),
        ("big.pdf", len(content), "application/pdf"),
    ]
    assert all(a["@odata.type"] == "#microsoft.graph.fileAttachment" for a in value)
    assert base64.b64decode(value[1]["contentBytes"]) == content
    assert small.json()["id"] == value[0]["id"]
    assert done.headers["Location"].endswith(f"/Attachments('{value[1]['id']}')")
    # Another user's mailbox needs Full Access, as every read of it does.
    refused = graph(
        "GET",
        f"/users/{ADMIN}/messages/{message_id}/attachments",
        scopes=("Mail.Read.Shared", "User.Read"),
        login=ALICE,
    )
    assert refused.status_code == 403


# $batch ------------------------------------------------------------------------------------


def test_a_batch_step_body_that_is_not_json_is_base64(sandbox, graph):
    """ "Combine multiple HTTP requests using JSON batching"
    (https://learn.microsoft.com/graph/json-batching): a step's body "might be a JSON object
    or a base64 URL-encoded value for example, when the body is an image". sendMail's MIME
    form is text/plain (itself base64 of the MIME): inside a batch it is base64 once more."""

    def step(step_id, body, message_id):
        return {
            "id": step_id,
            "method": "POST",
            "url": "/me/sendMail",
            "headers": {"Content-Type": "text/plain"},
            "body": body(base64.b64encode(mime(message_id=message_id))),
        }

    steps = [
        step("encoded", lambda b64: base64.b64encode(b64).decode(), "<b1@contoso.test>"),
        step(
            "urlsafe",
            lambda b64: base64.urlsafe_b64encode(b64).decode().rstrip("="),
            "<b2@contoso.test>",
        ),
        # The sendMail text as it would go outside a batch: decoded once, it is raw MIME.
        step("as-text", lambda b64: b64.decode(), "<b3@contoso.test>"),
        step("not-base64", lambda b64: "Hello, world!", "<b4@contoso.test>"),
    ]
    answer = graph("POST", "/$batch", json={"requests": steps})
    assert answer.status_code == 200, answer.text
    status = {r["id"]: r for r in answer.json()["responses"]}
    assert status["encoded"]["status"] == 202 and status["urlsafe"]["status"] == 202
    assert status["as-text"]["status"] == 400
    assert status["as-text"]["body"]["error"]["code"] == "ErrorMimeContentInvalidBase64String"
    assert status["not-base64"]["status"] == 400
    assert status["not-base64"]["body"]["error"]["code"] == "BadRequest"
    sent = sorted(d.internet_message_id for d in sandbox.outbox())
    assert sent == ["<b1@contoso.test>", "<b2@contoso.test>"]


# delta ------------------------------------------------------------------------------------


def test_messages_delta_refuses_search(sandbox, graph):
    """ "message: delta" (https://learn.microsoft.com/graph/api/message-delta), OData query
    parameters: "There is no support for $search." The answer's form is undocumented: the
    sandbox's choice is 400 BadRequest (sandbox/README.md)."""
    path = "/me/mailFolders/inbox/messages/delta"
    refused = graph("GET", path, params={"$search": '"quote"'})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "BadRequest"
    assert "$search" in refused.json()["error"]["message"]
    assert graph("GET", path).status_code == 200
