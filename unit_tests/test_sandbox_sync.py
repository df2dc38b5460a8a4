"""Sandbox delta queries, PATCH / move / DELETE of messages and $batch, over real TLS."""

import base64
import json

import pytest

from sandbox.defaults import ADMIN, ALICE, SALES

READ = ("Mail.Read", "User.Read")
WRITE = ("Mail.ReadWrite", "User.Read")
SHARED = ("Mail.ReadWrite.Shared", "User.Read")
INBOX_DELTA = "/me/mailFolders/inbox/messages/delta"


def mime(number, domain="example.test"):
    return (
        f"From: x@{domain}\r\nTo: admin@contoso.test\r\nSubject: Message {number}\r\n"
        f"Message-ID: <m{number}@{domain}>\r\n\r\nBody {number}\r\n"
    ).encode()


def deliver(sandbox, count, mailbox=ADMIN, start=0, folder="inbox"):
    return [sandbox.deliver(mailbox, mime(n), folder) for n in range(start, start + count)]


@pytest.fixture
def graph(sandbox, graph_session):
    """call(method, path, scopes=..., login=..., **requests kwargs) against Graph."""

    def call(method, path, scopes=READ, login=ADMIN, **kwargs):
        token = sandbox.issue_token(login, scopes)["access_token"]
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        url = path if path.startswith("https://") else f"{sandbox.graph_url}{path}"
        return graph_session.request(method, url, headers=headers, **kwargs)

    return call


def walk(graph, link, **kwargs):
    """Every page of a delta round: (pages, deltaLink)."""
    pages = []
    while True:
        answer = graph("GET", link, **kwargs)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body)
        link = body.get("@odata.nextLink")
        if link is None:
            return pages, body["@odata.deltaLink"]


def ids_of(pages):
    return [entry["id"] for page in pages for entry in page["value"]]


# delta ---------------------------------------------------------------------------------


def test_first_round_pages_select_and_links(sandbox, graph):
    ids = deliver(sandbox, 25)
    pages, delta_link = walk(graph, INBOX_DELTA + "?$select=subject,isRead")
    assert [len(p["value"]) for p in pages] == [10, 10, 5]
    assert ids_of(pages) == ids
    assert all("@odata.deltaLink" not in p for p in pages[:-1])
    assert all("@odata.nextLink" not in p for p in pages[-1:])
    entry = pages[0]["value"][0]
    assert set(entry) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"}
    # Options live in the tokens: links carry nothing else.
    assert "$select" not in pages[0]["@odata.nextLink"]
    assert "$deltatoken=" in delta_link and "$select" not in delta_link
    # Nothing new: one request, no entries.
    answer = graph("GET", delta_link)
    assert answer.json()["value"] == [] and "@odata.deltaLink" in answer.json()


def test_page_size_preference_and_top(sandbox, graph):
    deliver(sandbox, 7)
    answer = graph("GET", INBOX_DELTA, headers={"Prefer": "odata.maxpagesize=3"})
    assert answer.headers["Preference-Applied"] == "odata.maxpagesize=3"
    assert len(answer.json()["value"]) == 3
    answer = graph("GET", INBOX_DELTA + "?$top=5")
    assert len(answer.json()["value"]) == 5
    answer = graph("GET", INBOX_DELTA, headers={"Prefer": "odata.maxpagesize=5000"})
    assert answer.headers["Preference-Applied"] == "odata.maxpagesize=1000"
    assert len(answer.json()["value"]) == 7


def test_later_rounds_report_created_updated_and_removed(sandbox, graph):
    first, second, third = deliver(sandbox, 3)
    _, link = walk(graph, INBOX_DELTA + "?$select=isRead")
    [fourth] = deliver(sandbox, 1, start=3)
    assert graph("PATCH", f"/me/messages/{first}", WRITE, json={"isRead": True}).status_code == 200
    assert graph("DELETE", f"/me/messages/{second}", WRITE).status_code == 204
    moved = graph("POST", f"/me/messages/{third}/move", WRITE, json={"destinationId": "archive"})
    assert moved.status_code == 201
    pages, link = walk(graph, link)
    entries = {e["id"]: e for p in pages for e in p["value"]}
    assert set(entries) == {first, second, third, fourth}
    assert entries[first]["isRead"] is True and "@removed" not in entries[first]
    assert entries[fourth]["isRead"] is False
    for gone in (second, third):
        assert entries[gone] == {
            "@odata.type": "#microsoft.graph.message",
            "id": gone,
            "@removed": {"reason": "deleted"},
        }
    # The archive's own delta sees the moved message, under its new id.
    pages, _ = walk(graph, "/me/mailFolders/archive/messages/delta")
    assert ids_of(pages) == [moved.json()["id"]]
    # The same delta link replays the same changes (a client that crashed mid-page).
    assert walk(graph, link)[0][0]["value"] == []


def test_change_type_narrows_later_rounds_only(sandbox, graph):
    first, second = deliver(sandbox, 2)
    pages, link = walk(graph, INBOX_DELTA + "?changeType=created")
    assert ids_of(pages) == [first, second]
    graph("PATCH", f"/me/messages/{first}", WRITE, json={"isRead": True})
    graph("DELETE", f"/me/messages/{second}", WRITE)
    [third] = deliver(sandbox, 1, start=2)
    pages, _ = walk(graph, link)
    assert ids_of(pages) == [third]


def test_filter_on_received(sandbox, graph):
    sandbox.deliver(ADMIN, mime(1), received="2026-01-01T00:00:00Z")
    new = sandbox.deliver(ADMIN, mime(2), received="2026-03-01T00:00:00Z")
    pages, link = walk(graph, INBOX_DELTA + "?$filter=receivedDateTime ge 2026-02-01T00:00:00Z")
    assert ids_of(pages) == [new]
    # The old message is part of the baseline: later rounds do not report it as new.
    assert walk(graph, link)[0][0]["value"] == []
    bad = graph("GET", INBOX_DELTA + "?$filter=isRead eq false")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadRequest"
    assert graph("GET", INBOX_DELTA + "?changeType=moved").status_code == 400


def test_delivery_during_a_round_lands_in_the_next(sandbox, graph):
    deliver(sandbox, 15)
    first = graph("GET", INBOX_DELTA).json()
    [late] = deliver(sandbox, 1, start=15)
    pages, link = walk(graph, first["@odata.nextLink"])
    assert late not in ids_of(pages) and len(ids_of([first, *pages])) == 15
    assert ids_of(walk(graph, link)[0]) == [late]


def test_stale_tokens_answer_410_with_a_fresh_location(sandbox, graph):
    deliver(sandbox, 12)
    first = graph("GET", INBOX_DELTA + "?$select=id,subject").json()
    sandbox.expire_delta_tokens(ADMIN)
    answer = graph("GET", first["@odata.nextLink"])
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "syncStateNotFound"
    location = answer.headers["Location"]
    assert location.endswith("$deltatoken=") and "$select=id,subject" in location
    pages, link = walk(graph, location)
    assert len(ids_of(pages)) == 12
    assert set(pages[0]["value"][0]) == {"@odata.type", "@odata.etag", "id", "subject"}
    # Lifetime on the sandbox clock.
    sandbox.set_delta_token_lifetime(3600)
    assert graph("GET", link).status_code == 200
    sandbox.advance(3601)
    assert graph("GET", link).status_code == 410
    # A token the sandbox never issued (or forgot on reset) is stale too.
    unknown = graph("GET", INBOX_DELTA + "?$deltatoken=nothing")
    assert unknown.status_code == 410
    assert unknown.headers["Location"].endswith("/me/mailFolders/inbox/messages/delta?$deltatoken=")


def test_shared_mailbox_delta_needs_full_access(sandbox, graph):
    [shared] = deliver(sandbox, 1, mailbox=SALES)
    path = f"/users/{SALES}/mailFolders('inbox')/messages/delta"
    pages, link = walk(graph, path, scopes=SHARED)
    assert ids_of(pages) == [shared]
    assert f"/users/{SALES}/" in link
    denied = graph("GET", path, scopes=SHARED, login=ALICE)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "ErrorAccessDenied"
    # A token of one folder on another folder's path.
    assert graph("GET", link.replace("inbox", "archive"), scopes=SHARED).status_code == 400


# PATCH, move, DELETE, $value -----------------------------------------------------------


SIZE = "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')"


def test_delta_expands_the_message_size_property(sandbox, graph):
    small = sandbox.deliver(ADMIN, mime(1))
    large = sandbox.deliver(ADMIN, mime(2) + b"x" * 300_000)
    params = {"$select": "id,receivedDateTime", "$expand": SIZE}
    pages, delta_link = walk(graph, INBOX_DELTA, params=params)
    sizes = {entry["id"]: entry["singleValueExtendedProperties"] for entry in pages[0]["value"]}
    assert sizes == {
        small: [{"id": "Integer 0xe08", "value": str(len(mime(1)))}],
        large: [{"id": "Integer 0xe08", "value": str(len(mime(2)) + 300_000)}],
    }
    # The option lives in the tokens: the next round carries it without asking again.
    newer = sandbox.deliver(ADMIN, mime(3))
    [page], _ = walk(graph, delta_link)
    assert page["value"][0]["id"] == newer
    assert page["value"][0]["singleValueExtendedProperties"][0]["value"] == str(len(mime(3)))


def test_delta_size_property_forms_and_refusals(sandbox, graph):
    sandbox.deliver(ADMIN, mime(1))
    expand = "singleValueExtendedProperties($filter=id eq 'Long 0x0E08')"
    [page], _ = walk(graph, INBOX_DELTA, params={"$select": "id", "$expand": expand})
    assert page["value"][0]["singleValueExtendedProperties"] == [
        {"id": "Long 0xe08", "value": str(len(mime(1)))}
    ]
    # A property the message does not have: the collection is left out.
    other = "singleValueExtendedProperties($filter=id eq 'String 0x0037001F')"
    [page], _ = walk(graph, INBOX_DELTA, params={"$select": "id", "$expand": other})
    assert "singleValueExtendedProperties" not in page["value"][0]
    # Without $expand, nothing extra.
    [page], _ = walk(graph, INBOX_DELTA, params={"$select": "id"})
    assert "singleValueExtendedProperties" not in page["value"][0]
    for bad in ("attachments", "singleValueExtendedProperties($filter=id eq 'Nonsense')"):
        answer = graph("GET", INBOX_DELTA, params={"$expand": bad})
        assert answer.status_code == 400, bad


def test_value_is_text_plain(sandbox, graph):
    [message] = deliver(sandbox, 1)
    answer = graph("GET", f"/me/messages/{message}/$value")
    assert answer.headers["Content-Type"] == "text/plain" and answer.content == mime(0)


def test_patch_and_move_with_and_without_immutable_ids(sandbox, graph):
    first, second = deliver(sandbox, 2)
    # Before any Mail.ReadWrite consent (consent accumulates per user and app).
    assert graph("PATCH", f"/me/messages/{first}", READ, json={"isRead": True}).status_code == 403
    answer = graph("PATCH", f"/me/messages/{first}", WRITE, json={"isRead": True})
    assert answer.status_code == 200 and answer.json()["isRead"] is True
    assert sandbox.messages(ADMIN)[0].is_read
    assert graph("PATCH", f"/me/messages/{first}", WRITE, json={"subject": "x"}).status_code == 400

    moved = graph("POST", f"/me/messages/{first}/move", WRITE, json={"destinationId": "archive"})
    assert moved.status_code == 201
    new_id = moved.json()["id"]
    assert (
        new_id != first
        and moved.json()["parentFolderId"] == sandbox.mailbox(ADMIN).folder("archive").id
    )
    assert graph("GET", f"/me/messages/{first}").status_code == 404
    assert graph("GET", f"/me/messages/{new_id}").status_code == 200

    immutable = {"Prefer": 'IdType="ImmutableId"'}
    kept = graph(
        "POST",
        f"/me/mailFolders/inbox/messages/{second}/move",
        WRITE,
        json={"destinationId": sandbox.mailbox(ADMIN).folder("deleteditems").id},
        headers=immutable,
    )
    assert kept.status_code == 201 and kept.json()["id"] == second
    assert [m.id for m in sandbox.messages(ADMIN, "deleteditems")] == [second]
    # Once named by an immutable id, the message keeps it, whoever moves it next.
    back = graph("POST", f"/me/messages/{second}/move", WRITE, json={"destinationId": "inbox"})
    assert back.json()["id"] == second
    missing = graph("POST", f"/me/messages/{second}/move", WRITE, json={"destinationId": "nope"})
    assert missing.status_code == 404


# $batch --------------------------------------------------------------------------------


def post_batch(graph, steps, scopes=WRITE, login=ADMIN):
    return graph("POST", "/$batch", scopes, login, json={"requests": steps})


def by_id(answer):
    assert answer.status_code == 200, answer.text
    return {r["id"]: r for r in answer.json()["responses"]}


def test_batch_value_json_and_errors(sandbox, graph):
    first, second = deliver(sandbox, 2)
    answer = by_id(
        post_batch(
            graph,
            [
                {"id": "a", "method": "GET", "url": f"/me/messages/{first}/$value"},
                {"id": "b", "method": "GET", "url": f"me/messages/{second}?$select=subject"},
                {"id": "c", "method": "GET", "url": "/me/messages/AAMkAGbm9uZQ=="},
                {
                    "id": "d",
                    "method": "PATCH",
                    "url": f"/me/messages/{second}",
                    "body": {"isRead": True},
                    "headers": {"Content-Type": "application/json"},
                },
                {"id": "e", "method": "PATCH", "url": f"/me/messages/{first}", "body": {}},
            ],
        )
    )
    assert answer["a"]["status"] == 200
    assert answer["a"]["headers"]["Content-Type"] == "text/plain"
    assert base64.b64decode(answer["a"]["body"]) == mime(0)
    assert answer["b"]["body"]["subject"] == "Message 1"
    assert answer["c"]["status"] == 404
    assert answer["c"]["body"]["error"]["code"] == "ErrorItemNotFound"
    assert answer["d"]["status"] == 200 and answer["d"]["body"]["isRead"] is True
    assert answer["e"]["status"] == 400  # a body without Content-Type


def test_batch_envelope_limits(sandbox, graph):
    [message] = deliver(sandbox, 1)
    step = {"method": "GET", "url": f"/me/messages/{message}/$value"}
    too_many = post_batch(graph, [{"id": str(n), **step} for n in range(21)])
    assert too_many.status_code == 400 and "maximum of 20" in too_many.json()["error"]["message"]
    twice = post_batch(graph, [{"id": "1", **step}, {"id": "1", **step}])
    assert twice.status_code == 400
    assert graph("POST", "/$batch", WRITE, data="not json").status_code == 400
    later = post_batch(graph, [{"id": "1", "dependsOn": ["2"], **step}, {"id": "2", **step}])
    assert later.status_code == 400
    answer = post_batch(graph, [{"id": str(n), **step} for n in range(20)])
    assert len(by_id(answer)) == 20


def test_batch_order_is_shuffled_but_complete(sandbox, graph):
    ids = deliver(sandbox, 20)
    steps = [
        {"id": str(n), "method": "GET", "url": f"/me/messages/{i}/$value"}
        for n, i in enumerate(ids)
    ]
    order = [r["id"] for r in post_batch(graph, steps).json()["responses"]]
    assert sorted(order, key=int) == [str(n) for n in range(20)]
    assert order != sorted(order, key=int)


def test_batch_dependencies_and_failed_dependency(sandbox, graph):
    [message] = deliver(sandbox, 1)
    answer = by_id(
        post_batch(
            graph,
            [
                {"id": "1", "method": "GET", "url": "/me/messages/AAMkAGbm9uZQ=="},
                {"id": "2", "method": "GET", "url": f"/me/messages/{message}", "dependsOn": ["1"]},
                {"id": "3", "method": "GET", "url": f"/me/messages/{message}"},
                {
                    "id": "4",
                    "method": "DELETE",
                    "url": f"/me/messages/{message}",
                    "dependsOn": ["3"],
                },
            ],
        )
    )
    assert [answer[k]["status"] for k in "1234"] == [404, 424, 200, 204]
    assert "body" not in answer["4"]
    assert sandbox.messages(ADMIN) == []


def test_batch_steps_meet_scopes_mailboxes_faults_and_throttling(sandbox, graph):
    [own] = deliver(sandbox, 1)
    [shared] = deliver(sandbox, 1, mailbox=SALES)
    steps = [
        {"id": "own", "method": "GET", "url": f"/me/messages/{own}/$value"},
        {"id": "shared", "method": "GET", "url": f"/users/{SALES}/messages/{shared}/$value"},
        {"id": "nobody", "method": "GET", "url": "/users/nobody@contoso.test/messages"},
    ]
    answer = by_id(post_batch(graph, steps, scopes=READ))
    assert answer["own"]["status"] == 200
    assert answer["shared"]["status"] == 403  # Mail.Read does not reach a shared mailbox
    assert answer["nobody"]["status"] == 404
    answer = by_id(post_batch(graph, steps[:2], scopes=SHARED, login=ALICE))
    assert answer["shared"]["status"] == 403  # no FullAccess on sales
    answer = by_id(post_batch(graph, steps[:2], scopes=SHARED))
    assert base64.b64decode(answer["shared"]["body"]).startswith(b"From: x@")

    sandbox.inject_fault("status", path=r"/\$value$", status=429, retry_after=2, mailbox=SALES)
    answer = by_id(post_batch(graph, steps[:2], scopes=SHARED))
    assert answer["own"]["status"] == 200
    assert answer["shared"]["status"] == 429 and answer["shared"]["headers"]["Retry-After"] == "2"

    # Each step counts against the mailbox's request budget (a fresh window holds one).
    [alices] = deliver(sandbox, 1, mailbox=ALICE)
    sandbox.configure_limits(request_budget=1)
    sandbox.advance(601)
    step = {"method": "GET", "url": f"/me/messages/{alices}/$value"}
    answer = by_id(post_batch(graph, [{"id": "1", **step}, {"id": "2", **step}], login=ALICE))
    assert sorted(r["status"] for r in answer.values()) == [200, 429]
    throttled = next(r for r in answer.values() if r["status"] == 429)
    assert throttled["body"]["error"]["code"] == "TooManyRequests"
    assert "Retry-After" in throttled["headers"]


def test_batch_needs_a_valid_token(sandbox, graph_session):
    answer = graph_session.post(
        f"{sandbox.graph_url}/$batch",
        data=json.dumps({"requests": []}),
        headers={"Content-Type": "application/json", "Authorization": "Bearer nope"},
    )
    assert answer.status_code == 401
