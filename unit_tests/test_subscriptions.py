"""services.subscriptions: SubscriptionClient against the sandbox, and the webhook helpers."""

import datetime
import json
import string

import pytest
from test_sandbox_subscriptions import Receiver, closed_port, mime

from sandbox.defaults import ADMIN, SALES
from services.endpoints import Endpoints
from services.errors import GraphPermanentError
from services.graph import GraphClient
from services.subscriptions import (
    DEFAULT_MINUTES,
    LIFECYCLE_PATH,
    LOCAL_NAME,
    MAX_CLIENT_STATE,
    NO_DOMAIN,
    NO_HOST,
    NOT_HTTPS,
    NOTIFICATION_PATH,
    PRIVATE_ADDRESS,
    UNREADABLE,
    NotificationRejected,
    SubscriptionClient,
    SubscriptionGone,
    client_state_matches,
    host_problem,
    is_validation_request,
    needs_renewal,
    new_client_state,
    notification_endpoint,
    parse_graph_datetime,
    parse_notifications,
    resource_for,
    subscribable,
    validation_response,
)


class Tokens:
    def __init__(self, sandbox, address, scopes):
        self.token = sandbox.issue_token(address, list(scopes), refresh=False)["access_token"]

    def __call__(self, force_refresh=False):
        return self.token


@pytest.fixture
def make_client(sandbox):
    sandbox.configure_notifications(
        allow_http_notifications=True, retry_delay=0.05, retry_delay_max=0.2
    )
    endpoints = Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)
    sessions = []

    def make(address=ADMIN, scopes=("User.Read", "Mail.Read"), mailbox=None):
        session = endpoints.session()
        sessions.append(session)
        client = GraphClient(
            endpoints,
            session,
            Tokens(sandbox, address, scopes),
            mailbox=mailbox,
            sleep=lambda seconds: None,
        )
        return SubscriptionClient(client, clock=sandbox.clock.datetime)

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def receiver():
    made = []

    def make(**options):
        made.append(Receiver(**options).start())
        return made[-1]

    yield make
    for one in made:
        one.stop()


def posts_to_subscriptions(sandbox):
    return [e for e in sandbox.requests if e.method == "POST" and e.path == "/v1.0/subscriptions"]


def minutes_left(sandbox, subscription):
    return (subscription.expires_at - sandbox.clock.datetime()).total_seconds() / 60


# SubscriptionClient --------------------------------------------------------------------


def test_create_with_the_default_lifetime(sandbox, make_client, receiver):
    hook = receiver()
    subs = make_client()
    state = new_client_state()
    created = subs.create(subs.resource(), hook.url(), hook.url("/life"), state)
    assert created.resource == "/me/mailFolders('inbox')/messages"
    assert created.lifecycle_url == hook.url("/life")
    assert DEFAULT_MINUTES - 1 < minutes_left(sandbox, created) <= DEFAULT_MINUTES
    assert [h["path"] for h in hook.validations] == ["/notify", "/life"]
    assert [s.id for s in sandbox.subscriptions()] == [created.id]
    assert sandbox.subscriptions()[0].client_state == state
    assert len(posts_to_subscriptions(sandbox)) == 1


def test_a_smaller_limit_is_read_from_the_error(sandbox, make_client, receiver):
    sandbox.configure_notifications(max_minutes=4230)
    subs = make_client()
    created = subs.create(subs.resource(), receiver().url(), None, "s", minutes=10_000)
    assert 4199 < minutes_left(sandbox, created) <= 4200
    assert [e.status for e in posts_to_subscriptions(sandbox)] == [400, 201]


def test_the_shorter_retry_happens_once(sandbox, make_client, receiver):
    sandbox.configure_notifications(max_minutes=60)
    subs = make_client()
    created = subs.create(subs.resource(), receiver().url(), None, "s")
    assert 29 < minutes_left(sandbox, created) <= 30
    sandbox.configure_notifications(max_minutes=0)
    with pytest.raises(GraphPermanentError) as caught:
        subs.create(subs.resource(), receiver().url(), None, "s")
    assert caught.value.status == 400 and caught.value.code == "ExtensionError"
    assert [e.status for e in posts_to_subscriptions(sandbox)] == [400, 201, 400, 400]


def test_client_state_is_checked_before_any_request(sandbox, make_client, receiver):
    subs = make_client()
    for bad in ("", "x" * (MAX_CLIENT_STATE + 1), None):
        with pytest.raises(ValueError):
            subs.create(subs.resource(), receiver().url(), None, bad)
    assert posts_to_subscriptions(sandbox) == []


@pytest.mark.parametrize("mode", ["wrong_body", "error", "silent"])
def test_a_failed_handshake_is_a_permanent_error(sandbox, make_client, receiver, mode):
    sandbox.configure_notifications(handshake_timeout=0.3)
    hook = receiver()
    hook.handshake, hook.delay = mode, 1.0
    subs = make_client()
    with pytest.raises(GraphPermanentError) as caught:
        subs.create(subs.resource(), hook.url(), None, "s")
    assert caught.value.status == 400
    assert caught.value.code in ("ValidationError", "InvalidRequest")
    assert "validation request" in caught.value.detail
    assert sandbox.subscriptions() == []


def test_nobody_listening(sandbox, make_client):
    subs = make_client()
    with pytest.raises(GraphPermanentError):
        subs.create(subs.resource(), f"http://127.0.0.1:{closed_port()}/x", None, "s")


def test_renew_get_list_reauthorize_delete(sandbox, make_client, receiver):
    subs = make_client()
    created = subs.create(subs.resource(), receiver().url(), None, "s", minutes=60)
    sandbox.advance(30 * 60)
    renewed = subs.renew(created.id, minutes=120)
    assert renewed.id == created.id and 119 < minutes_left(sandbox, renewed) <= 120
    assert subs.get(created.id).expires_at == renewed.expires_at
    assert [s.id for s in subs.list()] == [created.id]
    subs.reauthorize(created.id)
    # Longer than Graph's limit: read from the refusal, as on creation.
    assert 10_049 < minutes_left(sandbox, subs.renew(created.id, minutes=20_000)) <= 10_050
    assert subs.delete(created.id) is True
    assert subs.delete(created.id) is False
    assert subs.get(created.id) is None
    with pytest.raises(SubscriptionGone):
        subs.renew(created.id)
    with pytest.raises(SubscriptionGone):
        subs.reauthorize(created.id)


def test_an_expired_subscription_is_gone(sandbox, make_client, receiver):
    hook = receiver()
    subs = make_client()
    created = subs.create(subs.resource(), hook.url(), None, "s", minutes=30)
    sandbox.advance(31 * 60)
    assert subs.get(created.id) is None
    with pytest.raises(SubscriptionGone) as caught:
        subs.renew(created.id)
    assert caught.value.status == 404
    sandbox.deliver(ADMIN, mime(1))
    assert sandbox.flush_notifications()
    assert hook.posts == []


def test_a_shared_mailbox_cannot_be_subscribed_with_delegated_permissions(
    sandbox, make_client, receiver
):
    """ "Get Outlook messages in a shared or delegated folder"
    (https://learn.microsoft.com/graph/outlook-share-messages-folders): the .Shared delegated
    permissions "don't support subscribing to change notifications on items in shared or
    delegated folders"; only the application permission Mail.Read can."""
    url = receiver().url()
    shared = make_client(scopes=("Mail.Read", "Mail.Read.Shared"), mailbox=SALES)
    assert shared.resource() == f"/users/{SALES}/mailFolders('inbox')/messages"
    assert "FullAccess" in sandbox.mailbox(SALES).rights_of(sandbox.user(ADMIN))
    with pytest.raises(GraphPermanentError) as caught:
        shared.create(shared.resource(), url, None, "s")
    assert caught.value.status == 403
    # Which is why the addon never asks: the rule, as the addon applies it.
    assert not subscribable(shared=True)
    assert subscribable(shared=False)
    assert subscribable(shared=True, application_permissions=True)


# end to end: the helpers read what the sandbox sends ----------------------------------


def test_notifications_parse_and_match(sandbox, make_client, receiver):
    hook = receiver()
    subs = make_client()
    state = new_client_state()
    created = subs.create(subs.resource(), hook.url(), hook.url("/life"), state)
    message_id = sandbox.deliver(ADMIN, mime(1))
    hook.wait(lambda r: r.posts)
    (post,) = [h for h in hook.hits if h["token"] is None]
    (note,) = parse_notifications(post["body"], post["content_type"])
    assert (note.subscription_id, note.change_type, note.message_id) == (
        created.id,
        "created",
        message_id,
    )
    assert not note.is_lifecycle and note.tenant_id == sandbox.user(ADMIN).tenant.id
    assert note.subscription_expires_at == created.expires_at
    assert client_state_matches(state, note.client_state)
    assert not client_state_matches(new_client_state(), note.client_state)

    token_hit = hook.validations[0]
    status, body = validation_response(token_hit["query"])
    assert (status, body) == (200, token_hit["token"])

    sandbox.revoke(ADMIN)
    hook.wait(lambda r: len(r.posts) == 2)
    life = next(h for h in hook.hits if h["token"] is None and h["path"] == "/life")
    (event,) = parse_notifications(life["body"], life["content_type"])
    assert event.is_lifecycle and event.lifecycle_event == "subscriptionRemoved"
    assert event.change_type is None and event.message_id is None
    assert client_state_matches(state, event.client_state)


# pure helpers --------------------------------------------------------------------------


def test_new_client_state():
    values = {new_client_state() for _ in range(50)}
    assert len(values) == 50
    allowed = set(string.ascii_letters + string.digits + "-_")
    assert all(len(v) <= MAX_CLIENT_STATE and set(v) <= allowed for v in values)


@pytest.mark.parametrize(
    ("expected", "given", "result"),
    [
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("abc", "abcd", False),
        ("abc", None, False),
        (None, None, False),
        ("", "", False),
        ("été", "été", True),
        ("été", "ete", False),
        ("abc", 123, False),
    ],
)
def test_client_state_matches(expected, given, result):
    assert client_state_matches(expected, given) is result


TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 1"


@pytest.mark.parametrize(
    "params",
    [
        {"validationToken": TOKEN},
        {"validationToken": [TOKEN]},
        {"validationToken": TOKEN.encode()},
        "validationToken=Validation%3A+Testing+client+application+reachability+for+"
        "subscription+Request-Id%3A+1",
        b"?validationToken=Validation%3A%20Testing%20client%20application%20reachability%20for"
        b"%20subscription%20Request-Id%3A%201",
    ],
)
def test_validation_response_decodes(params):
    assert is_validation_request(params)
    assert validation_response(params) == (200, TOKEN)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"validationToken": ""},
        {"validationToken": []},
        {"validationToken": "x" * 1025},
        {"validationToken": "a\nb"},
        {"validationToken": "<script>alert(1)</script>"},
        {"validationToken": b"\xff\xfe"},
        "validationToken=%00",
        None,
    ],
)
def test_validation_response_refuses(params):
    status, body = validation_response(params)
    assert status == 400 and body


def test_is_validation_request_without_a_token():
    assert not is_validation_request({"other": "1"})
    assert not is_validation_request("")


def change(**overrides):
    item = {
        "subscriptionId": "sub-1",
        "subscriptionExpirationDateTime": "2030-01-02T03:04:05.1234567Z",
        "clientState": "state",
        "changeType": "created",
        "resource": "Users/u/Messages/AAMk1",
        "tenantId": "t",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk1"},
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


def body(*items):
    return json.dumps({"value": list(items)}).encode()


def test_parse_a_change_and_a_lifecycle_event_in_one_post():
    lifecycle = {"subscriptionId": "sub-2", "clientState": None, "lifecycleEvent": "missed"}
    first, second = parse_notifications(body(change(), lifecycle), "application/json")
    assert first.message_id == "AAMk1" and first.subscription_expires_at == datetime.datetime(
        2030, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC
    )
    assert second.lifecycle_event == "missed" and second.client_state is None


def test_parse_accepts_charset_bom_str_and_resource_fallback():
    raw = b"\xef\xbb\xbf" + body(change(resourceData=None))
    (note,) = parse_notifications(raw, 'Application/JSON; charset="UTF-8"')
    assert note.message_id == "AAMk1"
    assert parse_notifications(body(change()).decode(), "application/json")[0].client_state


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"x" * 1_000_001, "application/json", 413),
        (body(*[change()] * 1001), "application/json", 413),
        (body(change()), "text/plain", 415),
        (body(change()), None, 415),
        (body(change()), "application/jsonp", 415),
        (body(change()), "application/json; charset=latin-1", 415),
        (b'{"value": [\xff]}', "application/json", 400),
        (b"{not json", "application/json", 400),
        (b"", "application/json", 400),
        (b"[" * 200_000, "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"value": {}}', "application/json", 400),
        (b'{"value": []}', "application/json", 400),
        (b'{"value": ["x"]}', "application/json", 400),
        (body(change(subscriptionId=None)), "application/json", 400),
        (body(change(subscriptionId=7)), "application/json", 400),
        (body(change(changeType=None)), "application/json", 400),
        (body(change(resource=None)), "application/json", 400),
        (body(change(clientState=5)), "application/json", 400),
        (body(change(clientState="x" * 129)), "application/json", 400),
        (body(change(resourceData="id")), "application/json", 400),
        (body(change(resource="x" * 5000)), "application/json", 400),
        (body({"subscriptionId": "s", "lifecycleEvent": ""}), "application/json", 400),
    ],
)
def test_parse_rejects(raw, content_type, status):
    with pytest.raises(NotificationRejected) as caught:
        parse_notifications(raw, content_type)
    assert caught.value.status == status
    assert "x" * 20 not in caught.value.reason  # never quotes the body


def test_parse_honours_max_bytes():
    with pytest.raises(NotificationRejected) as caught:
        parse_notifications(body(change()), "application/json", max_bytes=10)
    assert caught.value.status == 413


def test_resource_for():
    assert resource_for(None) == "/me/mailFolders('inbox')/messages"
    assert (
        resource_for("a@b.test", "AAMkAG-x_y=")
        == "/users/a@b.test/mailFolders('AAMkAG-x_y=')/messages"
    )
    for bad in ("it's", "a/b", "", None):
        with pytest.raises(ValueError):
            resource_for(None, bad)


def test_graph_datetimes_and_renewal():
    assert parse_graph_datetime("2030-01-02T03:04:05Z") == datetime.datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC
    )
    assert parse_graph_datetime("2030-01-02T03:04:05.1234567+01:00").hour == 2
    assert parse_graph_datetime("soon") is None and parse_graph_datetime(None) is None
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert needs_renewal(now + datetime.timedelta(hours=11), now)
    assert not needs_renewal(now + datetime.timedelta(hours=13), now)


# -- where Microsoft calls Odoo ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        (None, NO_HOST),
        ("", NO_HOST),
        ("localhost", LOCAL_NAME),
        ("odoo.local", LOCAL_NAME),
        ("erp.corp.internal", LOCAL_NAME),
        ("odoo", NO_DOMAIN),
        ("10.1.2.3", PRIVATE_ADDRESS),
        ("[::1]", PRIVATE_ADDRESS),
        ("203.0.113.7", PRIVATE_ADDRESS),  # documentation range: not global
        ("8.8.8.8", None),
        ("odoo.example.com", None),
    ],
)
def test_host_problem_says_why_microsoft_cannot_reach_a_host(host, problem):
    assert host_problem(host) == problem


def test_endpoint_from_a_public_https_base_url():
    endpoint = notification_endpoint(None, " https://odoo.example.com/ ")
    assert endpoint.problem is None
    assert endpoint.notification_url == "https://odoo.example.com" + NOTIFICATION_PATH
    assert endpoint.lifecycle_url == "https://odoo.example.com" + LIFECYCLE_PATH


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("http://odoo.example.com", NOT_HTTPS),
        ("", NOT_HTTPS),
        ("https://192.168.0.10:8443", PRIVATE_ADDRESS),
        ("https://[::1", UNREADABLE),
    ],
)
def test_endpoint_refused_with_the_reason_and_the_url(base_url, problem):
    endpoint = notification_endpoint("", base_url)
    assert (endpoint.problem, endpoint.base_url) == (problem, base_url)
    assert endpoint.notification_url is endpoint.lifecycle_url is None


def test_public_url_set_by_the_admin_wins_as_it_is():
    endpoint = notification_endpoint(
        "http://proxy.test" + NOTIFICATION_PATH + "/", "https://odoo.example.com"
    )
    assert endpoint.problem is None
    assert endpoint.notification_url == "http://proxy.test" + NOTIFICATION_PATH
    assert endpoint.lifecycle_url == "http://proxy.test" + LIFECYCLE_PATH
