"""GraphClient against the local Microsoft 365 sandbox: real requests over real TLS."""

import logging
import threading

import pytest
from conftest import HELD, wait_until

from sandbox import SECRET_MARKER
from sandbox.defaults import ADMIN, ALICE, SALES
from services.endpoints import Endpoints
from services.errors import GraphAuthError, GraphPermanentError, GraphTransientError
from services.graph import GraphClient

GRAPH_LOGGER = GraphClient.__module__

READ_SCOPES = ("User.Read", "Mail.ReadWrite")


class Tokens:
    """A token provider as the models give one: the sandbox issues a new token on refresh."""

    def __init__(self, sandbox, address=ADMIN, scopes=READ_SCOPES):
        self.sandbox = sandbox
        self.address = address
        self.scopes = scopes
        self.calls = []
        self.token = self._issue()

    def _issue(self):
        return self.sandbox.issue_token(self.address, self.scopes, refresh=False)["access_token"]

    def __call__(self, force_refresh=False):
        self.calls.append(force_refresh)
        if force_refresh:
            self.token = self._issue()
        return self.token


class Sleeps(list):
    """The sleep callable: records what it was asked to wait, waits nothing."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def endpoints(sandbox):
    return Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)


@pytest.fixture
def make_client(sandbox, endpoints):
    sessions = []

    def make(tokens=None, **options):
        session = endpoints.session()
        sessions.append(session)
        options.setdefault("sleep", Sleeps())
        return GraphClient(endpoints, session, tokens or Tokens(sandbox), **options)

    yield make
    for session in sessions:
        session.close()


def graph_log(sandbox, path_part=""):
    return [
        entry for entry in sandbox.requests if "/v1.0/" in entry.path and path_part in entry.path
    ]


def deliver(sandbox, mailbox, count):
    for number in range(count):
        sandbox.deliver(
            mailbox,
            f"From: bob@fabrikam.example\r\nTo: {mailbox}\r\nSubject: Message {number}\r\n"
            f"Message-ID: <m{number}@fabrikam.example>\r\n\r\nHello {number}.\r\n",
        )


# success, paths, paging ----------------------------------------------------------------


def test_me_with_select(sandbox, make_client):
    client = make_client()
    me = client.me()
    admin = sandbox.user(ADMIN)
    assert me["id"] == admin.id and me["userPrincipalName"] == ADMIN
    assert set(me) - {"@odata.context"} == {"id", "displayName", "mail", "userPrincipalName"}
    [entry] = graph_log(sandbox)
    assert entry.path == "/v1.0/me" and entry.status == 200
    assert entry.query["$select"] == "id,displayName,mail,userPrincipalName"


def test_user_and_mailbox_paths(sandbox, make_client):
    client = make_client(Tokens(sandbox, scopes=("User.Read.All", "Mail.ReadWrite.Shared")))
    assert client.user(SALES, select=("id", "mail")) == {
        "@odata.context": f"{sandbox.graph_url}/$metadata#users/$entity",
        "id": sandbox.mailbox(SALES).id,
        "mail": SALES,
    }
    assert client.mailbox_path("mailFolders/inbox") == "/me/mailFolders/inbox"
    shared = make_client(mailbox="Sales@Contoso.test")
    assert shared.mailbox_path("/messages") == "/users/Sales@Contoso.test/messages"
    assert shared.mailbox_path() == "/users/Sales@Contoso.test"
    guest = make_client(mailbox="bob_fabrikam#EXT#@contoso.test")
    assert guest.mailbox_path("messages") == "/users/bob_fabrikam%23EXT%23@contoso.test/messages"


def test_iter_pages_follows_next_links_with_the_first_query_only(sandbox, make_client):
    deliver(sandbox, ADMIN, 25)
    client = make_client()
    items = list(
        client.iter_pages(
            client.mailbox_path("mailFolders/inbox/messages"),
            params={"$top": 10, "$select": "subject"},
        )
    )
    assert len(items) == 25
    assert {item["subject"] for item in items} == {f"Message {n}" for n in range(25)}
    assert all({k for k in item if not k.startswith("@")} == {"id", "subject"} for item in items)
    pages = graph_log(sandbox, "/messages")
    assert [entry.query.get("$skip") for entry in pages] == [None, "10", "20"]
    assert all(entry.query["$select"] == "subject" for entry in pages)


def test_each_attempt_has_its_own_client_request_id(sandbox, make_client):
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=503, retry_after=0)
    make_client().me()
    ids = [entry.client_request_id for entry in graph_log(sandbox)]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(ids)


def test_bearer_token_is_never_sent_to_another_host(sandbox, make_client):
    tokens = Tokens(sandbox)
    client = make_client(tokens)
    with pytest.raises(ValueError, match="another host"):
        client.request("GET", "https://upload.example.test/session?tempauth=x")
    assert tokens.calls == [] and sandbox.requests == []


# 401 and token refresh ------------------------------------------------------------------


def test_expired_token_is_refreshed_once_then_succeeds(sandbox, make_client):
    tokens = Tokens(sandbox)
    client = make_client(tokens)
    sandbox.expire_access_tokens(ADMIN)
    assert client.me()["userPrincipalName"] == ADMIN
    assert tokens.calls == [False, True]
    assert [entry.status for entry in graph_log(sandbox)] == [401, 200]
    assert client.sleep == []


def test_a_second_401_is_an_auth_error(sandbox, make_client):
    class Stale(Tokens):
        def __call__(self, force_refresh=False):
            self.calls.append(force_refresh)
            return self.token

    tokens = Stale(sandbox)
    client = make_client(tokens)
    sandbox.expire_access_tokens(ADMIN)
    with pytest.raises(GraphAuthError) as caught:
        client.me()
    assert caught.value.status == 401 and caught.value.code == "InvalidAuthenticationToken"
    assert tokens.calls == [False, True]
    assert len(graph_log(sandbox)) == 2


def test_revocation_challenge_then_failed_refresh_is_an_auth_error(sandbox, make_client):
    class Revoked(Tokens):
        def __call__(self, force_refresh=False):
            self.calls.append(force_refresh)
            if force_refresh:
                raise GraphAuthError(code="50173")
            return self.token

    tokens = Revoked(sandbox)
    client = make_client(tokens)
    sandbox.revoke(ADMIN)
    with pytest.raises(GraphAuthError) as caught:
        client.me()
    assert caught.value.code == "50173"
    assert tokens.calls == [False, True]
    [entry] = graph_log(sandbox)
    assert entry.status == 401


# throttling and transient faults ----------------------------------------------------------


@pytest.mark.parametrize("retry_after", [2, 0.5, 0.25])
def test_429_honours_retry_after(sandbox, make_client, retry_after):
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=429, retry_after=retry_after)
    client = make_client()
    assert client.me()["userPrincipalName"] == ADMIN
    assert client.sleep == [retry_after]
    assert [entry.status for entry in graph_log(sandbox)] == [429, 200]


def test_429_without_retry_after_backs_off_exponentially(sandbox, make_client):
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=429, times=2)
    client = make_client()
    client.me()
    first, second = client.sleep
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


def test_too_long_retry_after_is_left_to_the_caller(sandbox, make_client):
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=429, retry_after=120)
    client = make_client(max_inline_wait=10.0)
    with pytest.raises(GraphTransientError) as caught:
        client.me()
    assert caught.value.retry_after == 120 and caught.value.status == 429
    assert caught.value.code == "TooManyRequests"
    assert client.sleep == []
    assert len(graph_log(sandbox)) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(sandbox, make_client, status):
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=status, retry_after=1)
    client = make_client()
    assert client.me()["userPrincipalName"] == ADMIN
    assert client.sleep == [1.0]


def test_attempts_run_out_with_a_retry_after_hint(sandbox, make_client):
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=503, times=None)
    client = make_client(max_attempts=3)
    with pytest.raises(GraphTransientError) as caught:
        client.me()
    assert len(graph_log(sandbox)) == 3 and len(client.sleep) == 2
    assert caught.value.retry_after > 0
    assert caught.value.code == "ServiceNotAvailable"


def test_connection_reset_then_success(sandbox, make_client):
    sandbox.inject_fault("reset", path=r"^/v1\.0/me$")
    client = make_client()
    assert client.me()["userPrincipalName"] == ADMIN
    assert [entry.fault for entry in graph_log(sandbox)] == ["reset", None]
    assert len(client.sleep) == 1


def test_cut_body_is_retried(sandbox, make_client):
    sandbox.inject_fault("cut", path=r"^/v1\.0/me$")
    client = make_client()
    assert client.me()["userPrincipalName"] == ADMIN
    assert len(graph_log(sandbox)) == 2


def test_connection_reset_every_time_is_transient(sandbox, make_client):
    sandbox.inject_fault("reset", path=r"^/v1\.0/me$", times=None)
    with pytest.raises(GraphTransientError) as caught:
        make_client(max_attempts=2).me()
    assert caught.value.status is None and caught.value.code == "ConnectionError"


def test_read_timeout_is_transient(sandbox, make_client):
    sandbox.inject_fault("timeout", path=r"^/v1\.0/me$", seconds=HELD)
    with pytest.raises(GraphTransientError) as caught:
        make_client(max_attempts=1, timeout=0.2).me()
    assert caught.value.code == "ReadTimeout"


# permanent errors ----------------------------------------------------------------------


def test_shared_mailbox_without_full_access_is_permanent(sandbox, make_client):
    tokens = Tokens(sandbox, ALICE, ("User.Read", "Mail.ReadWrite.Shared"))
    client = make_client(tokens, mailbox=SALES)
    with pytest.raises(GraphPermanentError) as caught:
        client.get_json(client.mailbox_path("mailFolders"))
    error = caught.value
    assert error.status == 403 and error.code == "ErrorAccessDenied"
    [entry] = graph_log(sandbox)
    assert error.request_id == entry.request_id
    assert "Full Access" in error.user_message


def test_expected_statuses_are_returned_not_raised(sandbox, make_client):
    client = make_client(Tokens(sandbox, scopes=("User.Read.All",)))
    response = client.request("GET", "/users/nobody@contoso.test", expected=(200, 404))
    assert response.status_code == 404


# logging -------------------------------------------------------------------------------


def test_failure_log_line(sandbox, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger=GRAPH_LOGGER)
    tokens = Tokens(sandbox, ALICE, ("User.Read", "Mail.ReadWrite.Shared"))
    client = make_client(tokens, mailbox=SALES)
    with pytest.raises(GraphPermanentError):
        client.get_json(client.mailbox_path("mailFolders"), params={"$top": "5"})
    [entry] = graph_log(sandbox)
    [record] = [r for r in caplog.records if r.name == GRAPH_LOGGER]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"[Graph API] GET /v1.0/users/{SALES}/mailFolders -> 403 ErrorAccessDenied "
        f"request-id={entry.request_id} client-request-id={entry.client_request_id} "
        f"mailbox={SALES} (attempt 1/3, giving up)"
    )
    assert SECRET_MARKER not in record.getMessage() and tokens.token not in repr(record.args)


def test_retries_log_one_line_each_and_success_only_at_debug(sandbox, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger=GRAPH_LOGGER)
    sandbox.inject_fault("status", path=r"^/v1\.0/me$", status=429, retry_after=0.5)
    make_client(account=ADMIN).me()
    records = [r for r in caplog.records if r.name == GRAPH_LOGGER]
    assert [r.levelno for r in records] == [logging.INFO, logging.DEBUG]
    assert records[0].getMessage().startswith("[Graph API] GET /v1.0/me -> 429 TooManyRequests ")
    assert records[0].getMessage().endswith(f"mailbox={ADMIN} (attempt 1/3, retrying in 0.50s)")
    assert records[1].getMessage().startswith("[Graph API] GET /v1.0/me -> 200 request-id=")


# concurrency ----------------------------------------------------------------------------


def run_in_threads(count, work):
    errors, results = [], []
    start = threading.Barrier(count)

    def run():
        start.wait()
        try:
            results.append(work())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, errors


def test_at_most_four_requests_per_mailbox_across_clients(sandbox, make_client, endpoints):
    # Without the cap, Outlook refuses the fifth concurrent request of a mailbox: the eight
    # requests are held at the sandbox until all have arrived, however slow the machine.
    fault = sandbox.inject_fault("timeout", path=r"/mailFolders$", seconds=HELD, times=None)
    tokens = Tokens(sandbox, ADMIN, ("User.Read", "Mail.ReadWrite.Shared"))
    raw = endpoints.session()
    url = f"{sandbox.graph_url}/users/{SALES}/mailFolders"
    headers = {"Authorization": f"Bearer {tokens.token}"}
    threads = [threading.Thread(target=lambda: raw.get(url, headers=headers)) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: fault.hits == 8, "eight requests at the sandbox")
    fault.release()
    for thread in threads:
        thread.join()
    raw.close()
    statuses = [entry.status for entry in graph_log(sandbox, "/mailFolders")]
    assert sorted(statuses) == [200] * 4 + [429] * 4
    sandbox.remove_fault(fault)
    sandbox.clear_log()

    # Each request holds its mailbox slot at the sandbox for 0.3 s.
    sandbox.inject_fault("timeout", path=r"/mailFolders$", seconds=0.3, times=None)

    # Clients for the same mailbox, whatever the case of its address, share four slots.
    clients = [make_client(tokens, mailbox=m) for m in (SALES, SALES.upper(), SALES.title())]
    picks = iter(clients * 4)
    lock = threading.Lock()

    def work():
        with lock:
            client = next(picks)
        return client.get_json(client.mailbox_path("mailFolders"))

    results, errors = run_in_threads(12, work)
    assert errors == [] and len(results) == 12
    log = graph_log(sandbox, "/mailFolders")
    assert [entry.status for entry in log] == [200] * 12
    assert all(client.sleep == [] for client in clients)
