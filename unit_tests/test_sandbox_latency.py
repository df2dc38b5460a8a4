"""configure_limits(latency=...): every answer, and every new connection, waits that long."""

import time

from conftest import trusting_session

DISCOVERY = "/contoso.test/v2.0/.well-known/openid-configuration"


def timed_get(session, url):
    started = time.monotonic()
    answer = session.get(url)
    return answer, time.monotonic() - started


def test_no_latency_by_default(sandbox):
    assert sandbox.limits.latency == 0.0
    with trusting_session(sandbox.ca_file) as session:
        timed_get(session, sandbox.base_url + DISCOVERY)
        answer, seconds = timed_get(session, sandbox.base_url + DISCOVERY)
    assert answer.status_code == 200
    assert seconds < 0.1


def test_each_answer_and_each_handshake_wait(sandbox):
    sandbox.configure_limits(latency=0.15)
    with trusting_session(sandbox.ca_file) as session:
        answer, first = timed_get(session, sandbox.base_url + DISCOVERY)  # handshake + answer
        assert answer.status_code == 200
        answer, again = timed_get(session, sandbox.base_url + DISCOVERY)  # same connection
        assert answer.status_code == 200
    assert first >= 0.3
    assert 0.15 <= again < 0.3
    assert [entry.status for entry in sandbox.requests] == [200, 200]


def test_errors_wait_too_and_reset_clears_it(sandbox):
    sandbox.configure_limits(latency=0.15)
    with trusting_session(sandbox.ca_file) as session:
        timed_get(session, sandbox.base_url + DISCOVERY)
        answer, seconds = timed_get(session, sandbox.graph_url + "/me")  # no token: 401
    assert answer.status_code == 401
    assert seconds >= 0.15
    sandbox.reset()
    assert sandbox.limits.latency == 0.0
