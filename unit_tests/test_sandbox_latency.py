"""configure_limits(latency=...): every answer, and every new connection, waits that long.

The waits are counted, not timed: how long a request takes depends on how busy the machine
is, how many times the sandbox waited and for how long does not.
"""

import pytest
from conftest import trusting_session

from sandbox import server

DISCOVERY = "/contoso.test/v2.0/.well-known/openid-configuration"


@pytest.fixture
def waits(monkeypatch):
    """The seconds of each latency wait the sandbox makes, in order."""
    seen = []
    wait = server._wait_latency

    def recording(sb):
        if sb.limits.latency > 0:
            seen.append(sb.limits.latency)
        wait(sb)

    monkeypatch.setattr(server, "_wait_latency", recording)
    return seen


def test_no_latency_by_default(sandbox, waits):
    assert sandbox.limits.latency == 0.0
    with trusting_session(sandbox.ca_file) as session:
        assert session.get(sandbox.base_url + DISCOVERY).status_code == 200
        assert session.get(sandbox.base_url + DISCOVERY).status_code == 200
    assert waits == []


def test_each_answer_and_each_handshake_wait(sandbox, waits):
    sandbox.configure_limits(latency=0.15)
    with trusting_session(sandbox.ca_file) as session:
        answer = session.get(sandbox.base_url + DISCOVERY)  # handshake + answer
        assert answer.status_code == 200
        assert waits == [0.15, 0.15]
        answer = session.get(sandbox.base_url + DISCOVERY)  # same connection: answer only
        assert answer.status_code == 200
    assert waits == [0.15, 0.15, 0.15]
    assert [entry.status for entry in sandbox.requests] == [200, 200]


def test_errors_wait_too_and_reset_clears_it(sandbox, waits):
    sandbox.configure_limits(latency=0.15)
    with trusting_session(sandbox.ca_file) as session:
        session.get(sandbox.base_url + DISCOVERY)
        del waits[:]
        answer = session.get(sandbox.graph_url + "/me")  # no token: 401
    assert answer.status_code == 401
    assert waits == [0.15]
    sandbox.reset()
    assert sandbox.limits.latency == 0.0
