"""Graph v1.0 reading endpoints of the sandbox, over real TLS with requests."""

import pytest
import requests

from sandbox import SECRET_MARKER
from sandbox.defaults import ADMIN, ALICE, SALES
from sandbox.directory import WELL_KNOWN_FOLDERS
from sandbox.leak_guard import find_leaks

FIRST = (
    b"From: Bob Sender <bob@example.test>\r\n"
    b"To: Admin <admin@contoso.test>, alice@contoso.test\r\n"
    b"Cc: carol@example.test\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <first@example.test>\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Hello,\r\nthe   numbers are in.\r\n"
)
REPLY = (
    b"From: admin@contoso.test\r\nTo: bob@example.test\r\nSubject: Re: Quarterly numbers\r\n"
    b"Message-ID: <reply@contoso.test>\r\nIn-Reply-To: <first@example.test>\r\n"
    b"References: <first@example.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>Thanks &amp; regards</p>\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b'filename="q.pdf"\r\n\r\n%PDF\r\n--b--\r\n'
)


def simple(number):
    return (
        f"From: x@example.test\r\nTo: admin@contoso.test\r\nSubject: Message {number}\r\n"
        f"Message-ID: <m{number}@example.test>\r\n\r\nBody {number}\r\n"
    ).encode()


@pytest.fixture
def graph(sandbox, graph_session):
    """get(path, token_or_scopes, **kwargs) against the Graph base URL."""

    def get(path, token=("Mail.Read", "User.Read"), login=ADMIN, **kwargs):
        if isinstance(token, tuple):
            token = sandbox.issue_token(login, token)["access_token"]
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("https://") else f"{sandbox.graph_url}{path}"
        return graph_session.get(url, headers=headers, **kwargs)

    return get


def assert_graph_error(answer, status, code):
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["message"]
    inner = error["innerError"]
    assert inner["request-id"] == answer.headers["request-id"]
    assert inner["client-request-id"] == answer.headers["client-request-id"]
    assert inner["date"]


# users and tokens ----------------------------------------------------------------------


def test_me_and_users(sandbox, graph):
    admin = sandbox.user(ADMIN)
    me = graph("/me").json()
    assert {k: me[k] for k in ("id", "displayName", "mail", "userPrincipalName")} == {
        "id": admin.id,
        "displayName": "Contoso Admin",
        "mail": ADMIN,
        "userPrincipalName": ADMIN,
    }
    assert graph(f"/users/{ADMIN}").json()["id"] == admin.id
    assert graph(f"/users/{admin.id}").json()["mail"] == ADMIN
    # Like Graph for directory objects, $select returns only what it names.
    assert graph("/me", params={"$select": "displayName"}).json().keys() == {
        "@odata.context",
        "displayName",
    }


def test_reading_other_users_needs_a_directory_scope(sandbox, graph):
    # Consent accumulates per user and app, as in Entra: check the narrow token first.
    assert_graph_error(graph("/me", token=("Mail.Read",)), 403, "Authorization_RequestDenied")
    assert_graph_error(graph(f"/users/{ALICE}"), 403, "Authorization_RequestDenied")
    alice = graph(f"/users/{ALICE}", token=("User.ReadBasic.All",)).json()
    assert alice["id"] == sandbox.user(ALICE).id
    assert_graph_error(graph("/users/ghost@contoso.test"), 404, "Request_ResourceNotFound")


@pytest.mark.parametrize("token", [None, "garbage", "a.b.c"])
def test_missing_or_unknown_token_is_401(graph, token):
    answer = graph("/me", token=token)
    assert_graph_error(answer, 401, "InvalidAuthenticationToken")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")


def test_expired_token_is_401(sandbox, graph):
    token = sandbox.issue_token(ADMIN, ["User.Read"])["access_token"]
    assert graph("/me", token=token).status_code == 200
    sandbox.advance(3601)
    answer = graph("/me", token=token)
    assert_graph_error(answer, 401, "InvalidAuthenticationToken")
    assert "expired" in answer.json()["error"]["message"]
    token = sandbox.issue_token(ADMIN, ["User.Read"])["access_token"]
    sandbox.expire_access_tokens(ADMIN)
    assert graph("/me", token=token).status_code == 401


def test_revoked_token_with_and_without_cae(sandbox, graph):
    token = sandbox.issue_token(ADMIN, ["User.Read"])["access_token"]
    sandbox.revoke(ADMIN)
    answer = graph("/me", token=token)
    assert_graph_error(answer, 401, "InvalidAuthenticationToken")
    assert 'error="insufficient_claims"' in answer.headers["WWW-Authenticate"]
    sandbox.cae = False  # without continuous access evaluation it lives until it expires
    assert graph("/me", token=token).status_code == 200


def test_request_ids_are_echoed(graph):
    answer = graph("/me", headers={"client-request-id": "0f0e0d0c-aaaa-bbbb-cccc-000000000001"})
    assert answer.headers["client-request-id"] == "0f0e0d0c-aaaa-bbbb-cccc-000000000001"
    assert len(answer.headers["request-id"]) == 36


def test_unknown_paths_and_methods(sandbox, graph, graph_session):
    assert_graph_error(graph("/me/nothingHere"), 400, "BadRequest")
    token = sandbox.issue_token(ADMIN, ["User.Read"])["access_token"]
    answer = graph_session.delete(
        f"{sandbox.graph_url}/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert_graph_error(answer, 405, "Request_BadRequest")


# folders -------------------------------------------------------------------------------


def test_mail_folders(sandbox, graph):
    sandbox.deliver(ADMIN, simple(1))
    listing = graph("/me/mailFolders", params={"$top": 50}).json()
    names = [f["displayName"] for f in listing["value"]]
    assert names == [label for _, label in WELL_KNOWN_FOLDERS]
    inbox = graph("/me/mailFolders/inbox").json()
    assert inbox["displayName"] == "Inbox" and inbox["totalItemCount"] == 1
    assert inbox["unreadItemCount"] == 1
    assert graph(f"/me/mailFolders/{inbox['id']}").json()["id"] == inbox["id"]
    assert graph("/me/mailFolders('Inbox')").json()["id"] == inbox["id"]
    assert graph("/me/mailFolders/msgfolderroot").json()["id"] == inbox["parentFolderId"]
    assert_graph_error(graph("/me/mailFolders/nosuchfolder"), 400, "ErrorInvalidIdMalformed")
    assert_graph_error(graph("/me/mailFolders/AAMkAGAAAA"), 404, "ErrorItemNotFound")


# messages ------------------------------------------------------------------------------


def test_message_resource_from_mime(sandbox, graph):
    first = sandbox.deliver(ADMIN, FIRST, received="2026-11-02T10:00:05Z")
    reply = sandbox.deliver(ADMIN, REPLY, folder="sentitems", received="2026-11-02T11:00:00Z")
    message = graph(f"/me/messages/{first}").json()
    assert message["id"] == first
    assert message["subject"] == "Quarterly numbers"
    assert message["internetMessageId"] == "<first@example.test>"
    assert message["from"] == {
        "emailAddress": {"name": "Bob Sender", "address": "bob@example.test"}
    }
    assert message["sender"] == message["from"]
    assert [r["emailAddress"]["address"] for r in message["toRecipients"]] == [ADMIN, ALICE]
    assert message["ccRecipients"][0]["emailAddress"]["address"] == "carol@example.test"
    assert message["receivedDateTime"] == "2026-11-02T10:00:05Z"
    assert message["sentDateTime"] == "2026-11-02T10:00:00Z"
    assert message["isRead"] is False and message["hasAttachments"] is False
    assert message["bodyPreview"] == "Hello, the numbers are in."
    assert message["parentFolderId"] == graph("/me/mailFolders/inbox").json()["id"]
    assert message["body"]["contentType"] == "html"
    assert "internetMessageHeaders" not in message
    answer = graph(f"/me/messages/{reply}")
    other = answer.json()
    assert other["conversationId"] == message["conversationId"]
    assert other["hasAttachments"] is True
    assert other["body"]["content"] == "<p>Thanks &amp; regards</p>"
    text = graph(f"/me/messages/{reply}", headers={"Prefer": 'outlook.body-content-type="text"'})
    assert text.json()["body"]["contentType"] == "text"
    assert text.headers["Preference-Applied"] == 'outlook.body-content-type="text"'


def test_mime_value(sandbox, graph):
    first = sandbox.deliver(ADMIN, FIRST)
    for path in (f"/me/messages/{first}/$value", f"/me/mailFolders/inbox/messages/{first}/$value"):
        answer = graph(path)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "text/plain"
        assert answer.content == FIRST


def test_message_id_errors(sandbox, graph):
    assert_graph_error(graph("/me/messages/not-an-id"), 400, "ErrorInvalidIdMalformed")
    assert_graph_error(graph("/me/messages/AAMkAGAAAAAA"), 404, "ErrorItemNotFound")


def test_listing_pages_orders_selects(sandbox, graph):
    ids = [
        sandbox.deliver(ADMIN, simple(n), received=f"2026-11-0{n}T08:00:00Z") for n in range(1, 8)
    ]
    sandbox.deliver(ADMIN, simple(9), folder="junkemail", received="2026-11-09T08:00:00Z")
    page = graph("/me/mailFolders/inbox/messages", params={"$top": 3}).json()
    seen = [m["id"] for m in page["value"]]
    while "@odata.nextLink" in page:
        page = graph(page["@odata.nextLink"]).json()
        seen += [m["id"] for m in page["value"]]
    assert seen == list(reversed(ids))  # newest first by default
    asc = graph(
        "/me/mailFolders/inbox/messages", params={"$orderby": "receivedDateTime asc", "$top": 2}
    )
    assert [m["id"] for m in asc.json()["value"]] == ids[:2]
    everything = graph("/me/messages", params={"$top": 100, "$count": "true"}).json()
    assert everything["@odata.count"] == 8 and len(everything["value"]) == 8
    selected = graph("/me/messages", params={"$select": "subject,isRead", "$top": 1}).json()
    assert selected["value"][0].keys() == {"@odata.etag", "id", "subject", "isRead"}
    assert "@odata.nextLink" in selected
    since = graph(
        "/me/mailFolders/inbox/messages",
        params={"$filter": "receivedDateTime ge 2026-11-06T00:00:00Z"},
    ).json()
    assert [m["id"] for m in since["value"]] == [ids[6], ids[5]]


def test_listing_default_page_is_ten(sandbox, graph):
    for n in range(12):
        sandbox.deliver(ADMIN, simple(n))
    page = graph("/me/messages").json()
    assert len(page["value"]) == 10 and "%24skip=10" in page["@odata.nextLink"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"$select": "subject,nonsense"}, "RequestBroker--ParseUri"),
        ({"$top": "-1"}, "BadRequest"),
        ({"$filter": "subject eq 'x'"}, "BadRequest"),
        ({"$orderby": "subject"}, "BadRequest"),
    ],
)
def test_bad_query_options(graph, params, code):
    assert_graph_error(graph("/me/messages", params=params), 400, code)


# permissions ---------------------------------------------------------------------------


def test_own_mailbox_needs_a_mail_scope(graph):
    assert_graph_error(graph("/me/messages", token=("User.Read",)), 403, "ErrorAccessDenied")
    assert_graph_error(graph("/me/messages", token=("Mail.Send",)), 403, "ErrorAccessDenied")
    assert graph("/me/messages", token=("Mail.ReadWrite",)).status_code == 200


def test_shared_mailbox_needs_shared_scope_and_full_access(sandbox, graph):
    message = sandbox.deliver(SALES, simple(1))
    path = f"/users/{SALES}/mailFolders('inbox')/messages"
    assert_graph_error(graph(path, token=("Mail.Read",)), 403, "ErrorAccessDenied")
    answer = graph(path, token=("Mail.Read.Shared",))
    assert [m["id"] for m in answer.json()["value"]] == [message]
    # Alice has the scope but no FullAccess on the mailbox.
    assert_graph_error(
        graph(path, token=("Mail.Read.Shared",), login=ALICE), 403, "ErrorAccessDenied"
    )
    assert_graph_error(
        graph("/users/nobody@contoso.test/messages", token=("Mail.Read.Shared",)),
        404,
        "ErrorInvalidUser",
    )


def test_request_log(sandbox, graph):
    sandbox.clear_log()
    graph("/me/messages", params={"$top": 1}, headers={"client-request-id": "abc"})
    graph(f"/users/{SALES}/messages", token=("Mail.Read",))
    first, second = sandbox.requests
    assert (first.method, first.path, first.query, first.status) == (
        "GET",
        "/v1.0/me/messages",
        {"$top": "1"},
        200,
    )
    assert first.mailbox == ADMIN and first.client_request_id == "abc"
    assert first["app_id"] == "11111111-1111-1111-1111-111111111111"
    assert (second.status, second.mailbox) == (403, SALES)


def test_tls_is_real(sandbox):
    """Without the sandbox CA, certificate verification fails."""
    session = requests.Session()
    session.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"{sandbox.graph_url}/me")
    session.close()


def test_find_leaks():
    found = find_leaks(["clean", None, b"x 1.AR8A-SBXSECRET-abc y", 42, f"{SECRET_MARKER}"])
    assert [index for index, _ in found] == [2, 4]
    assert "SBXSECRET" in found[0][1]
