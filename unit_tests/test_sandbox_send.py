"""Sandbox sending endpoints: sendMail, drafts and /send, attachments, upload sessions."""

import base64
import email
import email.policy
import json

import pytest
import requests

from sandbox import SECRET_MARKER
from sandbox.defaults import ADMIN, ALICE, SALES
from sandbox.limits import MB

SEND = ("Mail.Send", "Mail.ReadWrite", "User.Read")
SHARED = (*SEND, "Mail.Send.Shared", "Mail.ReadWrite.Shared")
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def mime(sender=ADMIN, subject="Hello", message_id="<m1@contoso.test>", bcc=None, extra=b""):
    lines = [
        f"From: Someone <{sender}>",
        "To: Bob <bob@example.test>, alice@contoso.test",
        "Cc: carol@example.test",
        f"Subject: {subject}",
        "Reply-To: replies@contoso.test",
        "X-Odoo-Objects: res.partner-7",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if message_id:
        lines.insert(0, f"Message-ID: {message_id}")
    if bcc:
        lines.append(f"Bcc: {bcc}")
    return ("\r\n".join(lines) + "\r\n").encode() + extra + b"\r\nBody text.\r\n"


def b64(raw):
    return base64.b64encode(raw)


@pytest.fixture
def graph(sandbox, graph_session):
    """call(method, path, scopes=..., login=..., **requests kwargs) against Graph."""

    def call(method, path, scopes=SEND, login=ADMIN, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if scopes is not None:
            token = sandbox.issue_token(login, scopes)["access_token"]
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("https://") else f"{sandbox.graph_url}{path}"
        return graph_session.request(method, url, headers=headers, **kwargs)

    return call


def mime_post(graph, path, raw, **kwargs):
    headers = {"Content-Type": "text/plain", **kwargs.pop("headers", {})}
    return graph("POST", path, data=b64(raw), headers=headers, **kwargs)


def assert_error(answer, status, code):
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


def parsed(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


# sendMail ------------------------------------------------------------------------------


def test_send_mail_mime_keeps_headers_and_bcc_only_in_sent_items(sandbox, graph):
    answer = mime_post(graph, "/me/sendMail", mime(bcc="hidden@example.test"))
    assert answer.status_code == 202 and answer.content == b""
    (copy,) = sandbox.sent(ADMIN)
    assert copy.internet_message_id == "<m1@contoso.test>"
    assert copy.from_ == copy.sender == ADMIN
    assert "hidden@example.test" in copy.recipients
    headers = parsed(copy.raw)
    assert headers["X-Odoo-Objects"] == "res.partner-7"
    assert headers["Reply-To"] == "replies@contoso.test"
    (left,) = sandbox.outbox()
    assert left.id == copy.id and left.internet_message_id == "<m1@contoso.test>"
    assert left.recipients == [
        "bob@example.test",
        ALICE,
        "carol@example.test",
        "hidden@example.test",
    ]
    assert b"Bcc:" not in left.raw and b"hidden@" not in left.raw
    # A recipient of the tenant gets it in the inbox.
    (received,) = sandbox.messages(ALICE)
    assert received.internet_message_id == "<m1@contoso.test>"


def test_send_mail_json_and_save_to_sent_items(sandbox, graph):
    message = {
        "subject": "JSON",
        "body": {"contentType": "Text", "content": "Hi"},
        "toRecipients": [{"emailAddress": {"address": "bob@example.test"}}],
        "internetMessageHeaders": [{"name": "X-Trace", "value": "42"}],
        "attachments": [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "a.txt",
                "contentType": "text/plain",
                "contentBytes": base64.b64encode(b"attached").decode(),
            }
        ],
    }
    answer = graph("POST", "/me/sendMail", json={"message": message, "saveToSentItems": False})
    assert answer.status_code == 202
    assert sandbox.sent(ADMIN) == []
    (left,) = sandbox.outbox()
    assert left.id is None and parsed(left.raw)["X-Trace"] == "42"
    attachment = next(parsed(left.raw).iter_attachments())
    assert attachment.get_payload(decode=True) == b"attached"
    assert graph("POST", "/me/sendMail", json={"message": message}).status_code == 202
    assert len(sandbox.sent(ADMIN)) == 1
    message["internetMessageHeaders"] = [{"name": "Organization", "value": "x"}]
    assert_error(
        graph("POST", "/me/sendMail", json={"message": message}),
        400,
        "InvalidInternetMessageHeader",
    )


def test_send_mail_refuses_bad_base64_and_no_recipient(sandbox, graph):
    answer = graph(
        "POST", "/me/sendMail", data=b"not base64 !!", headers={"Content-Type": "text/plain"}
    )
    assert_error(answer, 400, "ErrorMimeContentInvalidBase64String")
    lonely = b"From: admin@contoso.test\r\nSubject: nobody\r\n\r\nx\r\n"
    assert_error(mime_post(graph, "/me/sendMail", lonely), 400, "ErrorInvalidRecipients")
    assert sandbox.outbox() == []


def test_accept_then_drop_on_send_mail_sends_once(sandbox, graph):
    sandbox.inject_fault("accept_then_drop", path=r"/sendMail$")
    with pytest.raises(requests.ConnectionError):
        mime_post(graph, "/me/sendMail", mime())
    assert len(sandbox.outbox()) == 1


# drafts --------------------------------------------------------------------------------


def test_mime_draft_with_immutable_id_keeps_its_id_in_sent_items(sandbox, graph):
    answer = mime_post(graph, "/me/messages", mime(), headers=IMMUTABLE)
    assert answer.status_code == 201, answer.text
    assert answer.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    draft = answer.json()
    assert draft["isDraft"] is True
    # The sandbox keeps a submitted Message-ID (Microsoft's docs are silent on it).
    assert draft["internetMessageId"] == "<m1@contoso.test>"
    assert sandbox.outbox() == []
    assert graph("POST", f"/me/messages/{draft['id']}/send").status_code == 202
    (copy,) = sandbox.sent(ADMIN)
    assert copy.id == draft["id"]
    moved = graph("GET", f"/me/messages/{draft['id']}").json()
    assert moved["isDraft"] is False
    assert moved["parentFolderId"] == sandbox.mailbox(ADMIN).folder("sentitems").id
    assert sandbox.messages(ADMIN, "drafts") == []
    assert [d.id for d in sandbox.outbox()] == [draft["id"]]


def test_draft_without_immutable_id_changes_id_on_send(sandbox, graph):
    draft = mime_post(graph, "/me/messages", mime(message_id=None)).json()
    assert draft["internetMessageId"].endswith("@contoso.test>")
    assert "Preference-Applied" not in draft
    assert graph("POST", f"/me/messages/{draft['id']}/send").status_code == 202
    (copy,) = sandbox.sent(ADMIN)
    assert copy.id != draft["id"]
    assert copy.internet_message_id == draft["internetMessageId"]
    assert parsed(copy.raw)["Message-ID"] == draft["internetMessageId"]
    assert_error(graph("GET", f"/me/messages/{draft['id']}"), 404, "ErrorItemNotFound")
    assert_error(graph("POST", f"/me/messages/{copy.id}/send"), 400, "ErrorInvalidOperation")


def test_json_draft_attachment_filter_and_delete(sandbox, graph):
    answer = graph(
        "POST",
        "/me/messages",
        json={"subject": "J", "toRecipients": [{"emailAddress": {"address": "b@example.test"}}]},
    )
    assert answer.status_code == 201
    draft = answer.json()
    content = bytes(range(256)) * 10
    attached = graph(
        "POST",
        f"/me/messages/{draft['id']}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "data.bin",
            "contentType": "application/octet-stream",
            "contentBytes": base64.b64encode(content).decode(),
        },
    )
    assert attached.status_code == 201 and attached.json()["size"] == len(content)
    found = graph(
        "GET",
        "/me/mailFolders/drafts/messages",
        params={
            "$filter": f"internetMessageId eq '{draft['internetMessageId']}'",
            "$select": "id,isDraft",
        },
    ).json()["value"]
    assert [m["id"] for m in found] == [draft["id"]] and found[0].keys() == {
        "@odata.etag",
        "id",
        "isDraft",
    }
    (stored,) = sandbox.messages(ADMIN, "drafts")
    assert next(stored.parsed.iter_attachments()).get_content() == content
    assert graph("DELETE", f"/me/messages/{draft['id']}").status_code == 204
    assert sandbox.messages(ADMIN, "drafts") == []


def test_accept_then_drop_on_send_sends_once(sandbox, graph):
    draft = mime_post(graph, "/me/messages", mime(), headers=IMMUTABLE).json()
    sandbox.inject_fault("accept_then_drop", path=r"/send$")
    with pytest.raises(requests.ConnectionError):
        graph("POST", f"/me/messages/{draft['id']}/send")
    assert len(sandbox.outbox()) == 1
    assert sandbox.sent(ADMIN)[0].id == draft["id"]


# rights --------------------------------------------------------------------------------


def test_send_as_a_shared_mailbox(sandbox, graph):
    assert (
        mime_post(graph, f"/users/{SALES}/sendMail", mime(SALES), scopes=SHARED).status_code == 202
    )
    (left,) = sandbox.outbox()
    assert (left.from_, left.sender, left.mailbox) == (SALES, SALES, SALES)
    assert sandbox.sent(SALES)[0].sender == SALES


def test_send_on_behalf_names_the_user_as_sender(sandbox, graph):
    sandbox.grant(SALES, ALICE, "SendOnBehalf")
    answer = mime_post(graph, "/me/sendMail", mime(SALES), scopes=SHARED, login=ALICE)
    assert answer.status_code == 202, answer.text
    (left,) = sandbox.outbox()
    assert (left.from_, left.sender) == (SALES, ALICE)
    assert parsed(left.raw)["Sender"].addresses[0].addr_spec == ALICE
    assert sandbox.sent(ALICE)[0].sender == ALICE


def test_sending_as_another_mailbox_needs_the_right_and_the_scope(sandbox, graph):
    answer = mime_post(graph, "/me/sendMail", mime(SALES), scopes=SHARED, login=ALICE)
    assert_error(answer, 403, "ErrorSendAsDenied")
    answer = mime_post(graph, f"/users/{SALES}/sendMail", mime(SALES), scopes=SEND)
    assert_error(answer, 403, "ErrorAccessDenied")
    answer = mime_post(graph, "/me/sendMail", mime(SALES), scopes=SEND)
    assert_error(answer, 403, "ErrorAccessDenied")
    assert sandbox.outbox() == []


def test_draft_in_a_shared_mailbox_needs_full_access(sandbox, graph):
    sandbox.grant(SALES, ALICE, "SendAs")
    answer = mime_post(graph, f"/users/{SALES}/messages", mime(SALES), scopes=SHARED, login=ALICE)
    assert_error(answer, 403, "ErrorAccessDenied")
    draft = mime_post(graph, f"/users/{SALES}/messages", mime(SALES), scopes=SHARED).json()
    assert graph("POST", f"/users/{SALES}/messages/{draft['id']}/send", scopes=SHARED).ok
    assert len(sandbox.sent(SALES)) == 1


def test_sending_through_the_shared_mailbox_needs_full_access_besides_send_as(sandbox, graph):
    """ "Send Outlook messages from another user", Sent Items behavior
    (https://learn.microsoft.com/graph/outlook-send-mail-from-other-user): sending through
    /users/{shared}/... puts the copy in the shared mailbox's Sent Items, and "the sending
    user must have the Full Access mailbox permission in addition to either the Send on
    Behalf or Send As permission". Through /me with from set to the shared address, Send As
    alone is enough and the copy lands in the signed-in user's Sent Items. Microsoft does not
    show the refusal: the sandbox answers as any read of a mailbox without access does (403
    ErrorAccessDenied, sandbox/README.md)."""
    sandbox.grant(SALES, ALICE, "SendAs")  # Send As without Full Access
    for path in ("/sendMail", "/messages"):
        answer = mime_post(graph, f"/users/{SALES}{path}", mime(SALES), scopes=SHARED, login=ALICE)
        assert_error(answer, 403, "ErrorAccessDenied")
    assert sandbox.outbox() == []
    # The route Microsoft allows: /me, From the shared address.
    answer = mime_post(graph, "/me/sendMail", mime(SALES), scopes=SHARED, login=ALICE)
    assert answer.status_code == 202, answer.text
    draft = mime_post(
        graph,
        "/me/messages",
        mime(SALES, message_id="<m2@contoso.test>"),
        scopes=SHARED,
        login=ALICE,
    ).json()
    sent = graph("POST", f"/me/messages/{draft['id']}/send", scopes=SHARED, login=ALICE)
    assert sent.status_code == 202, sent.text
    assert [(d.from_, d.sender, d.mailbox) for d in sandbox.outbox()] == [(SALES, SALES, ALICE)] * 2
    assert len(sandbox.sent(ALICE)) == 2 and sandbox.sent(SALES) == []
    # Full Access alone is not the right to send: Send As or Send on Behalf is still needed.
    sandbox.grant(SALES, ALICE, "FullAccess")
    sandbox.mailbox(SALES).grants[sandbox.user(ALICE).id].discard("SendAs")
    answer = mime_post(graph, f"/users/{SALES}/sendMail", mime(SALES), scopes=SHARED, login=ALICE)
    assert_error(answer, 403, "ErrorSendAsDenied")
    # Full Access and Send As: the shared mailbox's route, its Sent Items.
    sandbox.grant(SALES, ALICE, "SendAs")
    answer = mime_post(graph, f"/users/{SALES}/sendMail", mime(SALES), scopes=SHARED, login=ALICE)
    assert answer.status_code == 202, answer.text
    assert len(sandbox.sent(SALES)) == 1


# upload sessions -----------------------------------------------------------------------

# urllib3 logs request lines at DEBUG, and an upload URL carries its credential in the query.
UPLOAD_URL_LOGGED = pytest.mark.unguarded_loggers("urllib3")


def open_session(graph, message_id, size, name="big.bin", path="/me", **kwargs):
    return graph(
        "POST",
        f"{path}/messages/{message_id}/attachments/createUploadSession",
        json={
            "AttachmentItem": {
                "attachmentType": "file",
                "name": name,
                "size": size,
                "contentType": "application/pdf",
            }
        },
        **kwargs,
    )


def put(graph_session, url, data, start, total, **headers):
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
        **headers,
    }
    return graph_session.put(url, data=data, headers=headers)


@pytest.fixture
def draft(graph):
    return mime_post(graph, "/me/messages", mime(), headers=IMMUTABLE).json()


@UPLOAD_URL_LOGGED
def test_upload_session_shape_and_chunks(sandbox, graph, graph_session, draft):
    content = bytes(range(256)) * (5 * MB // 256)
    answer = open_session(graph, draft["id"], len(content))
    assert answer.status_code == 201, answer.text
    session = answer.json()
    assert session["nextExpectedRanges"] == ["0-"] and session["expirationDateTime"]
    url = session["uploadUrl"]
    assert url.startswith(sandbox.base_url) and SECRET_MARKER in url
    total = len(content)
    first = put(graph_session, url, content[: 2 * MB], 0, total)
    assert first.status_code == 200
    assert first.json()["nextExpectedRanges"] == [str(2 * MB)]
    # A gap, an overlap, a wrong total and a bearer token are refused; nothing is kept.
    assert_error(
        put(graph_session, url, content[3 * MB : 4 * MB], 3 * MB, total), 416, "InvalidRange"
    )
    assert_error(put(graph_session, url, content[MB : 3 * MB], MB, total), 416, "InvalidRange")
    assert_error(
        put(graph_session, url, content[2 * MB :], 2 * MB, total + 1), 400, "InvalidContentRange"
    )
    bearer = {"Authorization": "Bearer x"}
    assert put(graph_session, url, content[2 * MB :], 2 * MB, total, **bearer).status_code == 401
    last = put(graph_session, url, content[2 * MB :], 2 * MB, total)
    assert last.status_code == 201 and last.content == b""
    assert "/Attachments('" in last.headers["Location"]
    assert_error(put(graph_session, url, content[:10], 0, total), 404, "ErrorItemNotFound")
    (stored,) = sandbox.messages(ADMIN, "drafts")
    attachment = next(stored.parsed.iter_attachments())
    assert attachment.get_filename() == "big.bin"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == content
    puts = [e for e in sandbox.requests if e.method == "PUT"]
    # Logged under the draft's mailbox and the app while the session lives.
    live = [e for e in puts if e.status in (200, 201, 416)]
    assert {e.mailbox for e in live} == {ADMIN} and all(e.app_id for e in live)


@UPLOAD_URL_LOGGED
def test_upload_chunk_over_4_mb_is_refused(graph, graph_session, draft):
    url = open_session(graph, draft["id"], 6 * MB).json()["uploadUrl"]
    assert put(graph_session, url, b"x" * (4 * MB + 1), 0, 6 * MB).status_code == 413


def test_upload_session_limits_and_rights(sandbox, graph, draft):
    small = open_session(graph, draft["id"], 3 * MB - 1)
    assert_error(small, 400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
    huge = open_session(graph, draft["id"], 150 * MB + 1)
    assert_error(huge, 400, "ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize")
    shared = mime_post(graph, f"/users/{SALES}/messages", mime(SALES), scopes=SHARED).json()
    # Microsoft's known issue: no upload session on a shared or delegated mailbox.
    refused = open_session(graph, shared["id"], 4 * MB, path=f"/users/{SALES}", scopes=SHARED)
    assert_error(refused, 403, "ErrorAccessDenied")


@UPLOAD_URL_LOGGED
def test_upload_session_expiry_cancel_and_budget(sandbox, graph, graph_session, draft):
    url = open_session(graph, draft["id"], 4 * MB).json()["uploadUrl"]
    sandbox.advance(3601)
    assert_error(put(graph_session, url, b"x" * MB, 0, 4 * MB), 404, "ErrorItemNotFound")
    url = open_session(graph, draft["id"], 4 * MB).json()["uploadUrl"]
    assert graph_session.delete(url).status_code == 204
    assert graph_session.delete(url).status_code == 404
    sandbox.configure_limits(upload_budget=5 * MB)
    url = open_session(graph, draft["id"], 6 * MB).json()["uploadUrl"]
    assert put(graph_session, url, b"x" * 4 * MB, 0, 6 * MB).status_code == 200
    throttled = put(graph_session, url, b"x" * 2 * MB, 4 * MB, 6 * MB)
    assert_error(throttled, 429, "TooManyRequests")
    assert int(throttled.headers["Retry-After"]) > 0


@UPLOAD_URL_LOGGED
def test_message_over_35_mb_is_refused_on_send(sandbox, graph, graph_session, draft):
    size = 36 * MB
    url = open_session(graph, draft["id"], size).json()["uploadUrl"]
    chunk = b"y" * (4 * MB)
    for start in range(0, size, 4 * MB):
        answer = put(graph_session, url, chunk[: min(4 * MB, size - start)], start, size)
        assert answer.ok, answer.text
    assert_error(graph("POST", f"/me/messages/{draft['id']}/send"), 413, "ErrorMessageSizeExceeded")
    assert sandbox.outbox() == []


def test_request_body_json_shapes(graph, draft):
    answer = graph(
        "POST",
        f"/me/messages/{draft['id']}/attachments",
        data=json.dumps({"name": "x"}),
        headers={"Content-Type": "application/json"},
    )
    assert_error(answer, 400, "ErrorInvalidRequest")
    assert_error(
        graph("POST", "/me/sendMail", data=b"x", headers={"Content-Type": "image/png"}),
        415,
        "UnsupportedMediaType",
    )
