"""Sandbox subscriptions: the validation handshake, change and lifecycle notifications.

Receivers are real HTTP(S) servers on 127.0.0.1 started by the tests; the sandbox POSTs to
them from its own threads.
"""

import datetime
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import trustme
from conftest import wait_until

from sandbox import defaults
from sandbox.defaults import ADMIN, ALICE, SALES

INBOX = "/me/mailFolders('inbox')/messages"
# How long a gated receiver holds its answer at most: a stuck test, not a slow machine.
GATE_BOUND = 120.0


# a webhook receiver --------------------------------------------------------------------


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        owner = self.server.owner
        split = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        token = query.get("validationToken", [None])[0]
        hit = {
            "path": split.path,
            "query": query,
            "token": token,
            "content_type": self.headers.get("Content-Type"),
            "body": body,
        }
        with owner.changed:
            owner.hits.append(hit)
            owner.changed.notify_all()
        if token is not None:
            self._handshake(owner, token)
        else:
            self._notification(owner)

    def _answer(self, status, content_type, body):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handshake(self, owner, token):
        if owner.on_handshake is not None:
            owner.on_handshake()
        mode = owner.handshake
        if mode == "silent":
            time.sleep(owner.delay)
        if mode == "wrong_body":
            self._answer(200, "text/plain", urllib.parse.quote(token).encode())
        elif mode == "wrong_type":
            self._answer(200, "application/json", json.dumps(token).encode())
        elif mode == "error":
            self._answer(500, "text/plain", b"no")
        else:
            self._answer(200, "text/plain; charset=utf-8", token.encode("utf-8"))

    def _notification(self, owner):
        if owner.gate is not None:
            owner.gate.wait(GATE_BOUND)
        if owner.delay and owner.handshake != "silent":
            time.sleep(owner.delay)
        self._answer(owner.status, None, b"")


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The sandbox hangs up on answers later than its timeouts: that is the point.
        pass


class Receiver:
    """A webhook on 127.0.0.1 that records every POST and answers the handshake."""

    def __init__(self, tls=False, port=0):
        self.tls = tls
        self.hits = []
        self.changed = threading.Condition()
        self.handshake = "echo"  # echo | wrong_body | wrong_type | error | silent
        self.status = 202  # the answer to notifications
        self.delay = 0.0  # seconds before answering (notifications, or a silent handshake)
        # Set to a threading.Event: notifications are recorded, then answered once it is set.
        self.gate = None
        self.on_handshake = None
        self.ca_file = None
        self._port = port
        self._server = None
        self._dir = tempfile.mkdtemp(prefix="receiver-")
        self._ca = trustme.CA() if tls else None
        if tls:
            self.ca_file = os.path.join(self._dir, "ca.pem")
            self._ca.cert_pem.write_to_path(self.ca_file)

    def start(self):
        server = _ReceiverServer(("127.0.0.1", self._port), _ReceiverHandler)
        server.owner = self
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert("127.0.0.1").configure_cert(context)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path="/notify"):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}{path}"

    @property
    def validations(self):
        with self.changed:
            return [h for h in self.hits if h["token"] is not None]

    @property
    def posts(self):
        """The JSON bodies of the notifications (not the handshakes), in order."""
        with self.changed:
            return [json.loads(h["body"]) for h in self.hits if h["token"] is None]

    def wait(self, predicate, timeout=GATE_BOUND):
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver waited in vain; hits: {self.hits}")
                self.changed.wait(left)


@pytest.fixture
def receiver():
    made = []

    def make(**options):
        made.append(Receiver(**options).start())
        return made[-1]

    yield make
    for one in made:
        one.stop()


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# helpers -------------------------------------------------------------------------------


@pytest.fixture
def notifications(sandbox):
    sandbox.configure_notifications(
        allow_http_notifications=True,
        retry_delay=0.05,
        retry_delay_max=0.2,
    )
    return sandbox


def bearer(sandbox, address=ADMIN, scopes=("Mail.Read",)):
    token = sandbox.issue_token(address, list(scopes), refresh=False)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def later(sandbox, minutes):
    moment = sandbox.clock.datetime() + datetime.timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def subscribe(sandbox, session, url, headers=None, **fields):
    body = {
        "changeType": "created",
        "notificationUrl": url,
        "resource": INBOX,
        "expirationDateTime": later(sandbox, 60),
        "clientState": "state-1",
    }
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    return session.post(
        f"{sandbox.graph_url}/subscriptions", json=body, headers=headers or bearer(sandbox)
    )


def error_of(response):
    error = response.json()["error"]
    return error["code"], error["message"]


def mime(number, to=ADMIN):
    return (
        f"From: bob@fabrikam.example\r\nTo: {to}\r\nSubject: Note {number}\r\n"
        f"Message-ID: <n{number}@fabrikam.example>\r\n\r\nHello.\r\n"
    ).encode()


def changes(posts):
    return [item for post in posts for item in post["value"]]


# creation ------------------------------------------------------------------------------


def test_create_validates_both_urls_then_answers_201(notifications, graph_session, receiver):
    sb = notifications
    hook = receiver()
    answer = subscribe(
        sb,
        graph_session,
        hook.url("/notify?tenant=contoso"),
        lifecycleNotificationUrl=hook.url("/lifecycle"),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["changeType"] == "created"
    assert body["resource"] == INBOX
    assert body["clientState"] == "state-1"
    assert body["notificationUrl"] == hook.url("/notify?tenant=contoso")
    assert body["lifecycleNotificationUrl"] == hook.url("/lifecycle")
    assert body["applicationId"] == "11111111-1111-1111-1111-111111111111"
    assert body["creatorId"] == sb.user(ADMIN).id
    assert body["expirationDateTime"].endswith("Z")
    assert [s.id for s in sb.subscriptions()] == [body["id"]]

    first, second = hook.validations
    assert first["path"] == "/notify" and first["query"]["tenant"] == ["contoso"]
    assert second["path"] == "/lifecycle"
    assert first["content_type"].startswith("text/plain") and first["body"] == b""
    # The token needs URL-decoding (spaces, colons), as Graph's does.
    assert " " in first["token"] and ":" in first["token"]
    assert [(e.kind, e.outcome) for e in sb.notification_log] == [("validation", "validated")] * 2


@pytest.mark.parametrize(
    "resource",
    [
        "/me/mailFolders('inbox')/messages",
        "me/mailFolders/inbox/messages",
        "/me/mailfolders('Inbox')/messages",
        f"/users/{ADMIN}/mailFolders('inbox')/messages",
        f"users('{ADMIN}')/mailFolders/inbox/messages",
    ],
)
def test_resource_forms(notifications, graph_session, receiver, resource):
    answer = subscribe(notifications, graph_session, receiver().url(), resource=resource)
    assert answer.status_code == 201, answer.text
    assert answer.json()["resource"] == resource


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"clientState": "x" * 129}, "BadRequest", "128"),
        ({"expirationDateTime": None}, "BadRequest", "expirationDateTime"),
        ({"expirationDateTime": "tomorrow"}, "BadRequest", "expirationDateTime"),
        ({"changeType": "created,renamed"}, "BadRequest", "changeType"),
        ({"changeType": "created,created"}, "BadRequest", "changeType"),
        ({"changeType": "renamed"}, "BadRequest", "changeType"),
        ({"resource": "/me/messages"}, "ExtensionError", "parameter 'Resource' is invalid"),
        (
            {"resource": "/me/mailFolders('nosuchfolder')/messages"},
            "ExtensionError",
            "parameter 'Resource' is invalid",
        ),
        ({"notificationUrl": "ftp://127.0.0.1/x"}, "InvalidRequest", "https"),
        ({"notificationUrl": "not a url"}, "InvalidRequest", "notificationUrl"),
        ({"lifecycleNotificationUrl": "http://example.com/x"}, "InvalidRequest", "https"),
    ],
)
def test_invalid_requests_answer_400_without_handshake(
    notifications, graph_session, receiver, fields, code, text
):
    hook = receiver()
    answer = subscribe(notifications, graph_session, hook.url(), **fields)
    assert answer.status_code == 400, answer.text
    found_code, message = error_of(answer)
    assert found_code == code and text in message
    assert hook.hits == [] and notifications.subscriptions() == []


def test_client_state_of_128_characters_is_accepted(notifications, graph_session, receiver):
    answer = subscribe(notifications, graph_session, receiver().url(), clientState="x" * 128)
    assert answer.status_code == 201


def test_expiration_limits(notifications, graph_session, receiver):
    sb, url = notifications, receiver().url()
    too_far = subscribe(sb, graph_session, url, expirationDateTime=later(sb, 10_081))
    assert too_far.status_code == 400
    assert error_of(too_far) == (
        "ExtensionError",
        "Subscription expiration can only be 10080 minutes in the future.",
    )
    past = subscribe(sb, graph_session, url, expirationDateTime=later(sb, -1))
    assert past.status_code == 400 and "in the future" in error_of(past)[1]
    assert subscribe(sb, graph_session, url, expirationDateTime=later(sb, 10_079)).ok
    # The older documented limit, for clients that must read it from the error.
    sb.configure_notifications(max_minutes=4230)
    older = subscribe(sb, graph_session, url, expirationDateTime=later(sb, 4300))
    assert "can only be 4230 minutes" in error_of(older)[1]


def test_http_needs_the_option_and_a_loopback_host(sandbox, graph_session, receiver):
    hook = receiver()
    refused = subscribe(sandbox, graph_session, hook.url())
    assert refused.status_code == 400 and "https" in error_of(refused)[1]
    sandbox.configure_notifications(allow_http_notifications=True)
    remote = subscribe(sandbox, graph_session, "http://example.com/notify")
    assert remote.status_code == 400
    assert subscribe(sandbox, graph_session, hook.url()).status_code == 201


def test_authentication_is_required(notifications, graph_session, receiver):
    answer = subscribe(notifications, graph_session, receiver().url(), headers={"X": "1"})
    assert answer.status_code == 401


# the handshake -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code", "text"),
    [
        ("wrong_body", "ValidationError", "must exactly match validationToken"),
        ("wrong_type", "ValidationError", "must exactly match validationToken"),
        ("error", "ValidationError", "must respond with 200 OK"),
        ("silent", "InvalidRequest", "timed out"),
    ],
)
def test_a_bad_handshake_answer_fails_the_creation(
    notifications, graph_session, receiver, mode, code, text
):
    sb = notifications
    sb.configure_notifications(handshake_timeout=0.3)
    hook = receiver()
    hook.handshake, hook.delay = mode, 1.0
    answer = subscribe(sb, graph_session, hook.url())
    assert answer.status_code == 400
    assert error_of(answer)[0] == code and text in error_of(answer)[1]
    assert sb.subscriptions() == []
    assert [(e.kind, e.outcome) for e in sb.notification_log] == [("validation", "failed")]


def test_nobody_listening_fails_the_creation(notifications, graph_session):
    answer = subscribe(notifications, graph_session, f"http://127.0.0.1:{closed_port()}/n")
    assert answer.status_code == 400
    assert error_of(answer)[0] == "ValidationError"
    assert notifications.notification_log[0].error == "ConnectionRefusedError"


def test_a_failing_lifecycle_url_fails_the_creation(notifications, graph_session, receiver):
    good, bad = receiver(), receiver()
    bad.handshake = "wrong_body"
    answer = subscribe(notifications, graph_session, good.url(), lifecycleNotificationUrl=bad.url())
    assert answer.status_code == 400 and notifications.subscriptions() == []
    assert len(good.validations) == 1 and len(bad.validations) == 1


def test_the_handshake_does_not_hold_the_sandbox(notifications, graph_session, receiver):
    """A receiver may call the sandbox while it validates (Odoo's test server does)."""
    sb = notifications
    hook = receiver()
    seen = []

    def call_back():
        with requests.Session() as other:
            other.trust_env = False
            other.verify = sb.ca_file
            me = other.get(
                f"{sb.graph_url}/me", headers=bearer(sb, ADMIN, ["User.Read"]), timeout=5
            )
            seen.append(me.status_code)

    hook.on_handshake = call_back
    assert subscribe(sb, graph_session, hook.url()).status_code == 201
    assert seen == [200]


def test_https_receivers_need_a_trusted_certificate(notifications, graph_session, receiver):
    sb = notifications
    hook = receiver(tls=True)
    untrusted = subscribe(sb, graph_session, hook.url())
    assert (
        untrusted.status_code == 400 and sb.notification_log[0].error == "SSLCertVerificationError"
    )
    sb.configure_notifications(ca_file=hook.ca_file)
    assert subscribe(sb, graph_session, hook.url()).status_code == 201
    sb.deliver(ADMIN, mime(1))
    hook.wait(lambda r: r.posts)
    assert changes(hook.posts)[0]["clientState"] == "state-1"


# access --------------------------------------------------------------------------------


def test_no_delegated_subscription_on_a_shared_or_delegated_mailbox(
    notifications, graph_session, receiver
):
    """Microsoft Graph docs, "Get Outlook messages in a shared or delegated folder"
    (https://learn.microsoft.com/graph/outlook-share-messages-folders): Mail.Read.Shared and
    Mail.ReadWrite.Shared "don't support subscribing to change notifications on items in
    shared or delegated folders"; only the application permission Mail.Read can. Also
    "Change notifications for Outlook resources in Microsoft Graph"
    (https://learn.microsoft.com/graph/outlook-change-notifications-overview): "Delegated
    permissions support subscribing to items in folders in only the signed-in user's
    mailbox." The answer itself is undocumented: the sandbox's choice (sandbox/README.md) is
    the subscription service's access refusal, 403 ExtensionError."""
    sb, url = notifications, receiver().url()
    shared = f"/users/{SALES}/mailFolders('inbox')/messages"
    full_access = bearer(sb, ADMIN, ("Mail.Read", "Mail.Read.Shared", "Mail.ReadWrite.Shared"))
    assert "FullAccess" in sb.mailbox(SALES).rights_of(sb.user(ADMIN))
    for headers in (bearer(sb), full_access):
        refused = subscribe(sb, graph_session, url, headers=headers, resource=shared)
        assert refused.status_code == 403
        assert error_of(refused) == (
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied. "
            "Check credentials and try again.]",
        )
    # A delegate's mailbox (FullAccess granted on a user's mailbox) is refused the same way.
    sb.grant(ALICE, ADMIN, "FullAccess")
    delegated = f"/users/{ALICE}/mailFolders('inbox')/messages"
    refused = subscribe(sb, graph_session, url, headers=full_access, resource=delegated)
    assert refused.status_code == 403
    # One's own mailbox named by address is still one's own.
    own = f"/users/{ADMIN}/mailFolders('inbox')/messages"
    assert subscribe(sb, graph_session, url, headers=full_access, resource=own).status_code == 201
    unknown = subscribe(
        sb, graph_session, url, resource="/users/nobody@contoso.test/mailFolders/inbox/messages"
    )
    assert unknown.status_code == 404
    assert not [e for e in sb.notification_log if e.url == url and e.outcome == "failed"]


def test_without_a_mail_scope_creation_is_denied(notifications, graph_session, receiver):
    sb = notifications
    answer = subscribe(
        sb, graph_session, receiver().url(), headers=bearer(sb, ADMIN, ["User.Read"])
    )
    assert answer.status_code == 403


# managing subscriptions ----------------------------------------------------------------


def test_get_list_update_delete(notifications, graph_session, receiver):
    sb = notifications
    created = subscribe(sb, graph_session, receiver().url()).json()
    url = f"{sb.graph_url}/subscriptions/{created['id']}"
    headers = bearer(sb)
    got = graph_session.get(url, headers=headers)
    assert got.status_code == 200 and got.json()["clientState"] == "state-1"
    listed = graph_session.get(f"{sb.graph_url}/subscriptions", headers=headers).json()["value"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert listed[0]["clientState"] is None  # by design at Microsoft

    new_expiry = later(sb, 3000)
    patched = graph_session.patch(url, json={"expirationDateTime": new_expiry}, headers=headers)
    assert patched.status_code == 200
    assert patched.json()["expirationDateTime"][:19] == new_expiry[:19]
    too_far = graph_session.patch(
        url, json={"expirationDateTime": later(sb, 20_000)}, headers=headers
    )
    assert too_far.status_code == 400
    other_field = graph_session.patch(url, json={"notificationUrl": "https://x"}, headers=headers)
    assert other_field.status_code == 400
    assert graph_session.post(url + "/reauthorize", headers=headers).status_code == 200

    assert graph_session.delete(url, headers=headers).status_code == 204
    for method in ("GET", "DELETE", "PATCH"):
        gone = graph_session.request(
            method, url, json={"expirationDateTime": new_expiry}, headers=headers
        )
        assert gone.status_code == 404 and error_of(gone)[0] == "ResourceNotFound"
    assert graph_session.post(url + "/reauthorize", headers=headers).status_code == 404
    assert sb.subscriptions() == []


def test_a_subscription_belongs_to_its_app_and_user(notifications, graph_session, receiver):
    sb = notifications
    created = subscribe(sb, graph_session, receiver().url()).json()
    url = f"{sb.graph_url}/subscriptions/{created['id']}"
    alice = bearer(sb, ALICE)
    assert graph_session.get(url, headers=alice).status_code == 404
    assert graph_session.delete(url, headers=alice).status_code == 404
    listed = graph_session.get(f"{sb.graph_url}/subscriptions", headers=alice).json()
    assert listed["value"] == []
    sb.add_app("contoso.test", "22222222-2222-2222-2222-222222222222", "x", ["https://x"])
    other_app = sb.issue_token(
        ADMIN, ["Mail.Read"], client_id="22222222-2222-2222-2222-222222222222", refresh=False
    )
    headers = {"Authorization": f"Bearer {other_app['access_token']}"}
    assert graph_session.get(url, headers=headers).status_code == 404
    assert graph_session.get(url, headers=bearer(sb)).status_code == 200


def test_renewal_checks_access_again(notifications, graph_session, receiver):
    sb = notifications
    created = subscribe(sb, graph_session, receiver().url())
    url = f"{sb.graph_url}/subscriptions/{created.json()['id']}"
    sb.tokens.consents.clear()  # the user withdrew Mail.Read; User.Read stays
    no_mail = bearer(sb, ADMIN, ("User.Read",))
    renewed = graph_session.patch(url, json={"expirationDateTime": later(sb, 90)}, headers=no_mail)
    assert renewed.status_code == 403
    assert graph_session.post(url + "/reauthorize", headers=no_mail).status_code == 403


def test_subscriptions_expire_on_the_sandbox_clock(notifications, graph_session, receiver):
    sb, hook = notifications, receiver()
    created = subscribe(sb, graph_session, hook.url(), expirationDateTime=later(sb, 10)).json()
    sb.advance(9 * 60)
    assert [s.id for s in sb.subscriptions()] == [created["id"]]
    sb.advance(61)
    assert sb.subscriptions() == []
    url = f"{sb.graph_url}/subscriptions/{created['id']}"
    assert graph_session.get(url, headers=bearer(sb)).status_code == 404
    sb.deliver(ADMIN, mime(1))
    assert sb.flush_notifications()
    assert hook.posts == []


def test_reset_forgets_subscriptions_and_settings(notifications, graph_session, receiver):
    sb = notifications
    assert subscribe(sb, graph_session, receiver().url()).status_code == 201
    sb.reset()
    assert sb.subscriptions() == [] and list(sb.notification_log) == []
    defaults.install(sb)
    assert subscribe(sb, graph_session, receiver().url()).status_code == 400  # http again


# change notifications ------------------------------------------------------------------


def test_a_delivered_message_is_notified(notifications, graph_session, receiver):
    sb, hook = notifications, receiver()
    created = subscribe(sb, graph_session, hook.url("/notify?x=1")).json()
    before = sb.deliver(ADMIN, mime(0), folder="junkemail")
    message_id = sb.deliver(ADMIN, mime(1))
    hook.wait(lambda r: r.posts)
    assert sb.flush_notifications()
    (post,) = [h for h in hook.hits if h["token"] is None]
    assert post["content_type"].startswith("application/json")
    assert post["query"] == {"x": ["1"]}
    (item,) = changes(hook.posts)
    admin_id = sb.user(ADMIN).id
    assert item == {
        "subscriptionId": created["id"],
        "subscriptionExpirationDateTime": created["expirationDateTime"],
        "clientState": "state-1",
        "changeType": "created",
        "resource": f"Users/{admin_id}/Messages/{message_id}",
        "tenantId": sb.user(ADMIN).tenant.id,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": f"Users/{admin_id}/Messages/{message_id}",
            "@odata.etag": item["resourceData"]["@odata.etag"],
            "id": message_id,
        },
    }
    assert before not in json.dumps(hook.posts)
    (entry,) = [e for e in sb.notification_log if e.kind == "change"]
    assert (entry.outcome, entry.status, entry.attempt) == ("delivered", 202, 1)
    assert entry.subscription_ids == (created["id"],)


def test_messages_present_before_the_subscription_are_not_notified(
    notifications, graph_session, receiver
):
    sb, hook = notifications, receiver()
    sb.deliver(ADMIN, mime(1))
    subscribe(sb, graph_session, hook.url())
    assert sb.flush_notifications()
    assert hook.posts == []


def test_a_move_into_the_folder_is_notified_after_the_request(
    notifications, graph_session, receiver
):
    sb, hook = notifications, receiver()
    message_id = sb.deliver(ADMIN, mime(1), folder="junkemail")
    subscribe(sb, graph_session, hook.url())
    # The receiver answers no notification until the move has returned: a move that sent
    # its notification inside the request would wait for the receiver and time out.
    hook.gate = threading.Event()
    moved = graph_session.post(
        f"{sb.graph_url}/me/messages/{message_id}/move",
        json={"destinationId": "inbox"},
        headers=bearer(sb, ADMIN, ["Mail.ReadWrite"]),
        timeout=30,
    )
    hook.gate.set()
    assert moved.status_code == 201
    hook.wait(lambda r: r.posts)
    assert changes(hook.posts)[0]["resourceData"]["id"] == moved.json()["id"]


def test_changes_are_batched(notifications, graph_session, receiver):
    sb, hook = notifications, receiver()
    subscribe(sb, graph_session, hook.url())
    subscribe(sb, graph_session, hook.url(), clientState="state-2")
    sb.pause_notifications()
    ids = [sb.deliver(ADMIN, mime(n)) for n in range(3)]
    time.sleep(0.2)
    assert hook.posts == []
    sb.resume_notifications()
    assert sb.flush_notifications()
    (post,) = hook.posts
    assert sorted(i["resourceData"]["id"] for i in post["value"]) == sorted(ids * 2)
    assert {i["clientState"] for i in post["value"]} == {"state-1", "state-2"}


def test_failed_deliveries_are_retried(notifications, graph_session, receiver):
    sb, hook = notifications, receiver()
    subscribe(sb, graph_session, hook.url())
    hook.status = 503
    message_id = sb.deliver(ADMIN, mime(1))
    hook.wait(lambda r: len(r.posts) >= 3)
    hook.status = 200
    assert sb.flush_notifications()
    attempts = [e for e in sb.notification_log if e.kind == "change"]
    assert [e.outcome for e in attempts[:2]] == ["retry", "retry"]
    assert attempts[0].status == 503 and attempts[-1].outcome == "delivered"
    assert [e.attempt for e in attempts] == list(range(1, len(attempts) + 1))
    assert {changes([p])[0]["resourceData"]["id"] for p in hook.posts} == {message_id}


def test_a_receiver_that_is_down_gets_the_notification_when_back(
    notifications, graph_session, receiver
):
    sb, hook = notifications, receiver()
    subscribe(sb, graph_session, hook.url())
    port = int(hook.url().split(":")[2].split("/")[0])
    hook.stop()
    sb.deliver(ADMIN, mime(1))
    wait_until(
        lambda: len([e for e in sb.notification_log if e.kind == "change"]) >= 2,
        "two refused deliveries",
    )
    assert sb.notification_log[-1].error == "ConnectionRefusedError"
    back = receiver(port=port)
    back.wait(lambda r: r.posts)
    assert sb.flush_notifications()
    assert sb.notification_log[-1].outcome == "delivered"


def test_a_slow_receiver_counts_as_failed(notifications, graph_session, receiver):
    sb, hook = notifications, receiver()
    sb.configure_notifications(delivery_timeout=0.2)
    subscribe(sb, graph_session, hook.url())
    hook.delay = 0.5
    sb.deliver(ADMIN, mime(1))
    hook.wait(lambda r: len(r.posts) >= 2)
    hook.delay = 0
    assert sb.flush_notifications()
    outcomes = [(e.outcome, e.error) for e in sb.notification_log if e.kind == "change"]
    assert outcomes[0] == ("retry", "timeout") and outcomes[-1] == ("delivered", None)


def test_delivery_is_given_up_after_four_hours_then_missed(notifications, graph_session, receiver):
    sb, hook, life = notifications, receiver(), receiver()
    subscribe(
        sb,
        graph_session,
        hook.url(),
        lifecycleNotificationUrl=life.url(),
        expirationDateTime=later(sb, 600),
    )
    hook.status = 500
    sb.deliver(ADMIN, mime(1))
    hook.wait(lambda r: len(r.posts) >= 1)
    sb.advance(4 * 3600)
    life.wait(lambda r: r.posts)
    assert sb.flush_notifications()
    attempts = [e for e in sb.notification_log if e.kind == "change"]
    assert attempts[-1].outcome == "dropped"
    (event,) = changes(life.posts)
    assert event["lifecycleEvent"] == "missed"


# lifecycle -----------------------------------------------------------------------------


def test_lifecycle_events(notifications, graph_session, receiver):
    sb, hook, life = notifications, receiver(), receiver()
    created = subscribe(sb, graph_session, hook.url(), lifecycleNotificationUrl=life.url()).json()
    sb.lifecycle(created["id"], "missed")
    life.wait(lambda r: r.posts)
    (event,) = changes(life.posts)
    assert event == {
        "subscriptionId": created["id"],
        "subscriptionExpirationDateTime": created["expirationDateTime"],
        "tenantId": sb.user(ADMIN).tenant.id,
        "clientState": "state-1",
        "lifecycleEvent": "missed",
    }
    with pytest.raises(ValueError):
        sb.lifecycle(created["id"], "nonsense")
    with pytest.raises(KeyError):
        sb.lifecycle("nope", "missed")


def test_reauthorization_required_pauses_until_reauthorized(notifications, graph_session, receiver):
    sb, hook, life = notifications, receiver(), receiver()
    created = subscribe(sb, graph_session, hook.url(), lifecycleNotificationUrl=life.url()).json()
    sb.lifecycle(created["id"], "reauthorizationRequired")
    life.wait(lambda r: r.posts)
    assert changes(life.posts)[0]["lifecycleEvent"] == "reauthorizationRequired"
    lost = sb.deliver(ADMIN, mime(1))
    assert sb.flush_notifications()
    assert hook.posts == []
    url = f"{sb.graph_url}/subscriptions/{created['id']}/reauthorize"
    assert graph_session.post(url, headers=bearer(sb)).status_code == 200
    kept = sb.deliver(ADMIN, mime(2))
    hook.wait(lambda r: r.posts)
    assert [i["resourceData"]["id"] for i in changes(hook.posts)] == [kept]
    assert lost != kept


def test_subscription_removed_event(notifications, graph_session, receiver):
    sb, hook, life = notifications, receiver(), receiver()
    created = subscribe(sb, graph_session, hook.url(), lifecycleNotificationUrl=life.url()).json()
    sb.lifecycle(created["id"], "subscriptionRemoved")
    life.wait(lambda r: r.posts)
    assert sb.subscriptions() == []
    sb.deliver(ADMIN, mime(1))
    assert sb.flush_notifications()
    assert hook.posts == []


def test_revoking_the_user_removes_the_subscription(notifications, graph_session, receiver):
    sb, hook, life = notifications, receiver(), receiver()
    created = subscribe(sb, graph_session, hook.url(), lifecycleNotificationUrl=life.url()).json()
    sb.revoke(ADMIN)
    life.wait(lambda r: r.posts)
    (event,) = changes(life.posts)
    assert (event["subscriptionId"], event["lifecycleEvent"]) == (
        created["id"],
        "subscriptionRemoved",
    )
    assert sb.subscriptions() == []
    sb.deliver(ADMIN, mime(1))
    assert sb.flush_notifications()
    assert hook.posts == []


def test_mail_sent_to_oneself_is_notified(notifications, graph_session, receiver):
    sb, hook = notifications, receiver()
    subscribe(sb, graph_session, hook.url())
    message = {
        "subject": "Note to self",
        "body": {"contentType": "text", "content": "Hi."},
        "toRecipients": [{"emailAddress": {"address": ADMIN}}],
    }
    sent = graph_session.post(
        f"{sb.graph_url}/me/sendMail",
        json={"message": message},
        headers=bearer(sb, ADMIN, ["Mail.Send"]),
    )
    assert sent.status_code == 202, sent.text
    hook.wait(lambda r: r.posts)
    (inbox_copy,) = sb.messages(ADMIN)
    assert [i["resourceData"]["id"] for i in changes(hook.posts)] == [inbox_copy.id]


def test_any_combination_of_created_updated_deleted(notifications, graph_session, receiver):
    """ "Change notifications for Outlook resources in Microsoft Graph"
    (https://learn.microsoft.com/graph/outlook-change-notifications-overview): a subscription
    names "the type of changes (creation, update, or deletion)" it wants, in any combination
    (changeType, "Subscription resource type", https://learn.microsoft.com/graph/api/resources/subscription)."""
    sb = notifications
    all_kinds, updates = receiver(), receiver()
    both = subscribe(sb, graph_session, all_kinds.url(), changeType="created,updated,deleted")
    assert both.status_code == 201, both.text
    assert both.json()["changeType"] == "created,updated,deleted"
    only = subscribe(sb, graph_session, updates.url(), changeType="updated")
    assert only.status_code == 201 and only.json()["changeType"] == "updated"
    message_id = sb.deliver(ADMIN, mime(1))
    all_kinds.wait(lambda r: r.posts)
    assert sb.flush_notifications()
    token = bearer(sb, ADMIN, ("Mail.ReadWrite",))
    url = f"{sb.graph_url}/me/messages/{message_id}"
    assert graph_session.patch(url, json={"isRead": True}, headers=token).status_code == 200
    updates.wait(lambda r: r.posts)
    assert sb.flush_notifications()
    assert graph_session.delete(url, headers=token).status_code == 204
    all_kinds.wait(lambda r: len(changes(r.posts)) == 3)
    assert sb.flush_notifications()
    seen = [(item["changeType"], item["resourceData"]["id"]) for item in changes(all_kinds.posts)]
    assert seen == [("created", message_id), ("updated", message_id), ("deleted", message_id)]
    assert [i["changeType"] for i in changes(updates.posts)] == ["updated"]
