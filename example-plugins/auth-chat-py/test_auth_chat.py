"""Unit tests of the auth-chat listener against wsgate_testing's fake host,
its HTTP answered in memory: no build, no server, no network. Run:
scripts/test-python-sdk.sh, or pytest on this file with plugin-sdk/python on
PYTHONPATH."""

import sys
from pathlib import Path

try:
    import wsgate_testing
except ImportError:  # run from a checkout without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugin-sdk" / "python"))
    import wsgate_testing

import pytest
from wsgate_testing import HttpFailure, HttpReply

app = wsgate_testing.load_app(Path(__file__).parent)

ROUTE = "/ws/auth-chat-py/{channel}"  # as in auth-chat-py.toml
AUTH = "http://127.0.0.1:8000/auth"


def backend(request):
    """The application: knows one token."""
    if ("authorization", "Bearer good") in request.headers:
        return {"user": "ann"}
    return HttpReply(401, {}, b"")


@pytest.fixture
def host(monkeypatch):
    monkeypatch.setenv("AUTH_CHAT_URL", AUTH)
    return wsgate_testing.FakeHost(http={AUTH: backend})


def join(host, token, channel="lobby"):
    return host.open(app.Listener, route=ROUTE, params={"channel": channel},
                     headers={"authorization": f"Bearer {token}"})


def test_a_known_token_joins_as_its_user_and_lines_carry_it(host):
    conn = join(host, "good")
    assert conn.rejection is None
    conn.send_text("hello")
    assert conn.json() == [{"from": "ann", "message": "hello", "channel": "lobby", "seq": 1}]


def test_an_unknown_or_missing_token_is_401(host):
    assert join(host, "bad").rejection.status == 401
    refused = host.open(app.Listener, route=ROUTE, params={"channel": "lobby"})
    assert refused.rejection.status == 401


def test_a_backend_that_fails_is_503_and_says_nothing_of_why(monkeypatch):
    monkeypatch.setenv("AUTH_CHAT_URL", AUTH)
    for answer in (HttpFailure("connection-refused"), HttpReply(500, {}, b"boom"), "not json"):
        host = wsgate_testing.FakeHost(http={AUTH: answer})
        refused = join(host, "good")
        assert refused.rejection.status == 503
        assert refused.rejection.reason == "try again later"


def test_a_new_member_gets_the_last_lines_oldest_first(host):
    talker = join(host, "good")
    for i in range(app.KEPT + 5):
        talker.send_text(f"line {i}")
    late = join(host, "good")
    got = [line["message"] for line in late.json()]
    assert got == [f"line {i}" for i in range(5, app.KEPT + 5)]
