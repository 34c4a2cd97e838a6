"""Upstreams (outbound WebSockets) and on_error against FakeHost: the plugin
connects, sends and closes through wsgate.host; the test plays the far end
through the Upstream handle and sees what the plugin sent."""

import pytest

from wsgate_testing import FakeHost, Limits, load_app

import wsgate  # noqa: E402
from listeners import Recorder, hooks, host_error
from wsgate import Message, UpstreamError, upstream_connect


@pytest.fixture
def host():
    return FakeHost()


def relay(**more):
    """Opens an upstream on the first message and forwards every message to it."""

    def on_message(conn, msg):
        ups = wsgate.host.upstreams()
        id = ups[0] if ups else upstream_connect("wss://feed.example/v1?x=1", ["v1"],
                                                 {"authorization": "Bearer t"})
        wsgate.host.upstream_send(id, msg)

    return Recorder(on_message=on_message, **more)


def test_connect_records_the_url_and_returns_an_id(host):
    listener = relay()
    conn = host.open(listener)
    conn.send_text("hello")
    conn.send_text("again")
    [id] = host.upstreams()
    up = host.upstream(id)
    assert (up.url, up.protocols, up.headers) == (
        "wss://feed.example/v1?x=1", ["v1"], [("authorization", "Bearer t")])
    assert up.state == "connecting"
    assert up.texts == ["hello", "again"]  # queued before the handshake
    assert not any(h.startswith("on_upstream") for h in hooks(listener))


def test_the_test_plays_the_far_end(host):
    listener = relay(on_upstream_message=lambda id, msg: wsgate.host.broadcast(msg, None))
    conn = host.open(listener)
    conn.send_text("sub")
    up = host.upstream(host.upstreams()[0])
    up.open()
    up.send("tick 1")
    up.send(b"\x01")
    assert listener.events[-3:] == [
        ("on_upstream_open", up.id),
        ("on_upstream_message", up.id, Message.text("tick 1")),
        ("on_upstream_message", up.id, Message.binary(b"\x01")),
    ]
    assert conn.inbox == [Message.text("tick 1"), Message.binary(b"\x01")]
    up.close(1001, "going away")
    assert listener.events[-1] == ("on_upstream_close", up.id, 1001, "going away")
    assert host.upstreams() == [] and up.state == "closed"
    assert host_error(wsgate.host.upstream_send, up.id, Message.text("x")) is UpstreamError.UNKNOWN_UPSTREAM
    with pytest.raises(RuntimeError):
        up.send("after the close")


def test_a_failed_connect_is_a_1006_close(host):
    listener = relay()
    host.open(listener).send_text("x")
    up = host.upstream(1)
    up.fail("connection refused")
    assert listener.events[-1] == ("on_upstream_close", 1, 1006, "connection refused")
    with pytest.raises(RuntimeError):
        up.open()


def test_a_close_by_the_plugin_reaches_on_upstream_close_after_the_hook(host):
    def on_message(conn, msg):
        id = upstream_connect("ws://feed.example/")
        wsgate.host.upstream_send(id, Message.text("bye"))
        wsgate.host.upstream_close(id, 4000, "done")
        assert host_error(wsgate.host.upstream_close, id, 1000, "") is UpstreamError.CLOSED
        assert host_error(wsgate.host.upstream_send, id, msg) is UpstreamError.CLOSED
        assert wsgate.host.upstreams() == []  # closing: neither connecting nor open
        assert listener.events[-1][0] == "on_message"

    listener = Recorder(on_message=on_message)
    host.open(listener).send_text("go")
    up = host.upstream(1)
    assert listener.events[-1] == ("on_upstream_close", 1, 4000, "done")
    assert (up.close_sent, up.closed, up.texts) == ((4000, "done"), (4000, "done"), ["bye"])


def test_bad_arguments(host):
    host.open(Recorder())
    for url in ("http://x/", "feed.example", "ws://", "wss:///path", ""):
        assert host_error(upstream_connect, url) is UpstreamError.INVALID_URL, url
    assert host_error(upstream_connect, "ws://x/", [""]) is UpstreamError.INVALID_ARGUMENT
    assert host_error(upstream_connect, "ws://x/", [], {"bad name": "v"}) is UpstreamError.INVALID_ARGUMENT
    assert host_error(upstream_connect, "ws://x/", [], {"x": "a\r\nb"}) is UpstreamError.INVALID_ARGUMENT
    id = upstream_connect("ws://x/")
    for code in (999, 1005, 1006, 2000, 5000):
        assert host_error(wsgate.host.upstream_close, id, code, "") is UpstreamError.INVALID_ARGUMENT
    assert host_error(wsgate.host.upstream_close, id, 1000, "r" * 124) is UpstreamError.INVALID_ARGUMENT
    big = Message.binary(bytes(host.limits.max_message_size + 1))
    assert host_error(wsgate.host.upstream_send, id, big) is UpstreamError.INVALID_ARGUMENT
    assert host_error(wsgate.host.upstream_send, 99, Message.text("x")) is UpstreamError.UNKNOWN_UPSTREAM
    assert host_error(wsgate.host.upstream_close, 99, 1000, "") is UpstreamError.UNKNOWN_UPSTREAM
    with pytest.raises(TypeError):
        wsgate.host.upstream_connect("ws://x/", "v1", [])  # a str is not a list


def test_the_sidecar_grant_and_the_limit():
    host = FakeHost(limits=Limits(upstreams_per_plugin=2), allowed_hosts=["feed.example"])
    host.open(Recorder())
    assert host_error(upstream_connect, "wss://elsewhere.example/") is UpstreamError.DENIED
    a = upstream_connect("wss://feed.example/a")
    upstream_connect("wss://feed.example/b")
    assert host_error(upstream_connect, "wss://feed.example/c") is UpstreamError.LIMIT_REACHED
    host.upstream(a).fail()
    upstream_connect("wss://feed.example/c")  # a closed one frees its place
    assert len(host.upstreams()) == 2 and len(host.upstreams_opened) == 3


def test_hook_failed_runs_on_error(host):
    listener = Recorder(on_error=lambda conn, detail: wsgate.host.state_set("last-error", detail.encode()))
    conn = host.open(listener)
    host.hook_failed(conn, "on_message ran past its deadline")
    assert listener.events[-1] == ("on_error", conn.id, "on_message ran past its deadline")
    assert host.state["last-error"] == b"on_message ran past its deadline"
    host.hook_failed(conn.id, "again")  # an id works too
    assert listener.events[-1] == ("on_error", conn.id, "again")


def test_new_hooks_default_to_doing_nothing(host):
    class Plain(wsgate.Listener):
        pass

    conn = host.open(Plain)
    host.hook_failed(conn, "x")
    conn.send_text("ignored")  # the default on_message replies with nothing
    id = host.upstream_connect("ws://x/", [], [])
    host.upstream(id).open(listener=Plain)
    host.upstream(id).send("m", listener=Plain)
    host.upstream(id).close(listener=Plain)


def test_a_listener_named_listener_is_every_export(tmp_path):
    (tmp_path / "app.py").write_text(
        "import wsgate\n\n"
        "class Listener(wsgate.Listener):\n"
        "    def on_upstream_message(self, id, msg):\n"
        "        wsgate.host.broadcast(msg, None)\n")
    app = load_app(tmp_path)
    assert app.UpstreamListener is app.Listener and app.ErrorListener is app.Listener

    own = tmp_path / "own"
    own.mkdir()
    (own / "app.py").write_text(
        "import wsgate\n\n"
        "class ErrorListener:\n"
        "    def on_error(self, conn, detail):\n"
        "        pass\n\n"
        "class Listener(wsgate.Listener):\n"
        "    pass\n")
    app = load_app(own)
    assert app.UpstreamListener is app.Listener and app.ErrorListener is not app.Listener
