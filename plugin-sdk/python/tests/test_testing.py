"""Tests of wsgate_testing itself: the stand-in bindings match the WIT, and
FakeHost keeps the server's rules, so a listener that passes against it
behaves the same in wsgate."""

import inspect
import re
from pathlib import Path

import pytest

import wsgate_testing
from wsgate_testing import Close, FakeHost, Limits, Log, load_app, load_listener

import wsgate  # noqa: E402  (after wsgate_testing, which provides its bindings)
from listeners import Recorder, hooks, host_error
from wsgate import (Error, HistoryError, HostError, LogLevel, Message, OpenDecision, StateError,
                    UpstreamError)

ROOT = Path(__file__).resolve().parents[3]
WIT = ROOT / "wit" / "wsgate.wit"


# --- The stand-ins have the generated shapes ------------------------------

def wit_block(kind, name):
    text = WIT.read_text()
    start = text.index(f"{kind} {name} {{")
    return text[start:text.index("\n    }" if kind == "enum" else "\n}", start)]


@pytest.mark.skipif(not WIT.exists(), reason="wit/wsgate.wit not found beside the SDK")
def test_every_host_function_of_the_wit_with_its_parameters_in_order():
    wit = {}
    for name, params in re.findall(r"^\s*([a-z-]+): func\(([^)]*)\)", wit_block("interface", "host"), re.M):
        names = re.findall(r"([a-z-]+)\s*:", params)  # not split on ",": list<tuple<a, b>>
        wit[name.replace("-", "_")] = [("except_" if n == "except" else n.replace("-", "_")) for n in names]
    assert list(wit) == list(wsgate_testing.HOST_FUNCTIONS)
    for name, params in wit.items():
        function = getattr(wsgate.host, name)
        assert list(inspect.signature(function).parameters) == params, name
        assert all(p.default is inspect.Parameter.empty
                   for p in inspect.signature(function).parameters.values()), \
            f"{name}: the generated functions have no defaults"


@pytest.mark.skipif(not WIT.exists(), reason="wit/wsgate.wit not found beside the SDK")
def test_enums_match_the_wit():
    for wit_name, enum in (("error", Error), ("state-error", StateError),
                           ("upstream-error", UpstreamError), ("history-error", HistoryError),
                           ("log-level", LogLevel)):
        cases = re.findall(r"^\s*([a-z-]+),", wit_block("enum", wit_name), re.M)
        assert [c.upper().replace("-", "_") for c in cases] == [e.name for e in enum]
        assert [e.value for e in enum] == list(range(len(cases)))


def test_wsgate_is_built_on_the_generated_names():
    import componentize_py_types
    from wit_world.imports import wsgate_plugin_types as types

    assert wsgate.HostError is componentize_py_types.Err
    assert wsgate.Text is types.Message_Text and wsgate.Binary is types.Message_Binary
    assert isinstance(OpenDecision.reject(403, "no"), types.OpenDecision_Reject)
    assert OpenDecision.greet("hi") == types.OpenDecision_Greet(types.Message_Text("hi"))
    assert HostError(Error.CLOSED).value is Error.CLOSED


# --- Host calls -----------------------------------------------------------

@pytest.fixture
def host():
    return FakeHost()


def test_send_and_broadcast(host):
    a, b = host.open(Recorder()), host.open(Recorder())
    wsgate.host.send(a.id, Message.text("1"))
    wsgate.host.send(a.id, Message.binary(b"2"))
    assert a.inbox == [Message.text("1"), Message.binary(b"2")] and b.inbox == []
    assert host_error(wsgate.host.send, 99, Message.text("x")) is Error.UNKNOWN_CONNECTION
    assert wsgate.host.broadcast(Message.text("all"), a.id) == 1
    assert b.texts == ["all"] and a.texts == ["1"]
    assert host.broadcasts[-1].reached == 1


def test_messages_over_the_size_limit():
    host = FakeHost(limits=Limits(max_message_size=4))
    a = host.open(Recorder())
    assert host_error(host.send, a.id, Message.text("12345")) is Error.INVALID_ARGUMENT
    assert host_error(host.publish, "c", Message.text("12345"), None) is Error.INVALID_ARGUMENT
    assert host.broadcast(Message.text("12345"), None) == 0  # no error to return
    assert host.send(a.id, Message.text("ééé"[:2])) is None  # 4 bytes fit
    assert a.texts == ["éé"]


def test_wrong_types_fail_as_the_bindings_would(host):
    a = host.open(Recorder())
    with pytest.raises(TypeError):
        wsgate.host.send(a.id, "not a message")
    with pytest.raises(TypeError):
        wsgate.host.publish("c", Message.text("x"))  # except_ is not optional
    with pytest.raises(TypeError):
        wsgate.host.state_set("k", "a str")
    with pytest.raises(TypeError):
        wsgate.host.set_timer(100, 1)
    with pytest.raises(ValueError):
        wsgate.host.send(-1, Message.text("x"))


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_close_accepts_the_codes_the_server_does(host, code):
    a = host.open(Recorder())
    host.close(a.id, code, "x" * 123)
    assert host.closes == [Close(a.id, code, "x" * 123)]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_close_refuses_other_codes(host, code):
    a = host.open(Recorder())
    assert host_error(host.close, a.id, code, "") is Error.INVALID_ARGUMENT
    assert a.is_open


def test_close_reason_is_at_most_123_bytes(host):
    a = host.open(Recorder())
    assert host_error(host.close, a.id, 1000, "é" * 62) is Error.INVALID_ARGUMENT  # 124 bytes
    assert host_error(host.close, 99, 1000, "") is Error.UNKNOWN_CONNECTION


def test_a_close_by_the_plugin_reaches_on_close_after_the_hook(host):
    def on_message(conn, msg):
        wsgate.host.send(conn, Message.text("before"))
        wsgate.host.close(conn, 4000, "bye")
        assert host_error(wsgate.host.close, conn, 1000, "") is Error.CLOSED
        assert host_error(wsgate.host.send, conn, Message.text("after")) is Error.CLOSED
        # Still registered until the close finishes: attributes can be read.
        assert wsgate.host.get_attribute(conn, "k") is None
        assert hooks(listener)[-1] == "on_message"
        return Message.text("reply")  # the connection is closing: not sent

    listener = Recorder(on_message=on_message)
    a = host.open(listener, "/ws/x")
    assert a.send_text("hi") == Message.text("reply")
    assert a.texts == ["before"]
    assert listener.events[-2:] == [("on_close", a.id, 4000, "bye"), ("on_last_close", "/ws/x")]
    assert a.closed == (4000, "bye") and a.server_close == (4000, "bye")
    assert not a.is_open and host.connections() == []
    with pytest.raises(RuntimeError):
        a.send_text("again")


def test_channels(host):
    a, b, c = (host.open(Recorder()) for _ in range(3))
    for conn in (a, b):
        host.subscribe(conn.id, "lobby")
    host.subscribe(a.id, "lobby")  # twice is once
    host.subscribe(c.id, "other")
    assert host.channels() == ["lobby", "other"]
    assert host.subscribers("lobby") == [a.id, b.id]
    assert host.publish("lobby", Message.text("hi"), b.id) == 1
    assert (a.texts, b.texts, c.texts) == (["hi"], [], [])
    assert host.publishes[-1].channel == "lobby" and host.publishes[-1].reached == 1
    host.unsubscribe(c.id, "other")
    assert host.channels() == ["lobby"], "a channel without subscribers is gone"
    host.unsubscribe(c.id, "never-joined")
    assert host.publish("nobody", Message.text("x"), None) == 0
    assert host_error(host.subscribe, 99, "lobby") is Error.UNKNOWN_CONNECTION
    assert host_error(host.unsubscribe, 99, "lobby") is Error.UNKNOWN_CONNECTION
    assert host_error(host.subscribe, a.id, "") is Error.INVALID_ARGUMENT
    assert host_error(host.subscribe, a.id, "x" * 257) is Error.INVALID_ARGUMENT
    assert host_error(host.publish, "", Message.text("x"), None) is Error.INVALID_ARGUMENT
    a.close()
    assert host.subscribers("lobby") == [b.id], "closing leaves every channel"


def test_channels_and_tags_per_connection_are_capped():
    host = FakeHost(limits=Limits(channels_per_connection=1, tags_per_connection=1))
    a = host.open(Recorder())
    host.subscribe(a.id, "one")
    host.subscribe(a.id, "one")  # already in it: no new slot
    assert host_error(host.subscribe, a.id, "two") is Error.LIMIT_REACHED
    host.tag(a.id, "t")
    assert host_error(host.tag, a.id, "u") is Error.LIMIT_REACHED


def test_tags(host):
    a, b, c = (host.open(Recorder()) for _ in range(3))
    host.tag(a.id, "user:1")
    host.tag(b.id, "user:1")
    assert host.tagged("user:1") == [a.id, b.id]
    assert host.send_to_tag("user:1", Message.text("psst"), a.id) == 1
    assert (a.texts, b.texts, c.texts) == ([], ["psst"], [])
    host.untag(b.id, "user:1")
    assert host.tagged("user:1") == [a.id]
    assert host.send_to_tag("user:2", Message.text("x"), None) == 0
    assert host.tag_sends[-1].reached == 0
    assert host_error(host.tag, 99, "t") is Error.UNKNOWN_CONNECTION
    assert host_error(host.untag, 99, "t") is Error.UNKNOWN_CONNECTION
    assert host_error(host.send_to_tag, "", Message.text("x"), None) is Error.INVALID_ARGUMENT


def test_a_closing_connection_takes_nothing_more(host):
    def on_close(conn, code, reason):
        assert host_error(wsgate.host.subscribe, conn, "c") is Error.CLOSED
        assert host_error(wsgate.host.tag, conn, "t") is Error.CLOSED
        assert host_error(wsgate.host.send, conn, Message.text("x")) is Error.CLOSED
        wsgate.host.unsubscribe(conn, "c")  # leaving is fine
        assert wsgate.host.broadcast(Message.text(f"{conn} left"), None) == 1

    listener = Recorder(on_close=on_close)
    a, b = host.open(listener), host.open(listener)
    a.close()
    assert a.texts == [] and b.texts == [f"{a.id} left"]


def test_attributes(host):
    a = host.open(Recorder())
    assert host.get_attribute(a.id, "name") is None
    host.set_attribute(a.id, "name", "ann")
    assert host.get_attribute(a.id, "name") == "ann" and a.attributes == {"name": "ann"}
    host.set_attribute(a.id, "name", None)
    assert host.get_attribute(a.id, "name") is None
    assert host_error(host.set_attribute, a.id, "", "x") is Error.INVALID_ARGUMENT
    assert host_error(host.get_attribute, 99, "name") is Error.UNKNOWN_CONNECTION
    a.close()
    assert host_error(host.get_attribute, a.id, "name") is Error.UNKNOWN_CONNECTION


def test_attributes_are_capped():
    host = FakeHost(limits=Limits(attributes_per_connection=2, attribute_bytes=10))
    a = host.open(Recorder())
    assert host_error(host.set_attribute, a.id, "k", "x" * 11) is Error.INVALID_ARGUMENT
    host.set_attribute(a.id, "a", "1234")
    host.set_attribute(a.id, "b", "1")
    assert host_error(host.set_attribute, a.id, "c", "1") is Error.LIMIT_REACHED
    assert host_error(host.set_attribute, a.id, "b", "12345") is Error.LIMIT_REACHED  # 5+6 > 10
    host.set_attribute(a.id, "b", "1234")  # replacing counts the new value only


def test_state(host):
    assert host.state_get("k") is None
    wsgate.host.state_set("k", b"v")
    assert wsgate.host.state_get("k") == b"v"
    wsgate.host.state_set("k", None)
    assert host.state_get("k") is None
    assert host_error(host.state_set, "", b"v") is Error.INVALID_ARGUMENT


def test_state_counts_bytes_and_entries():
    host = FakeHost(limits=Limits(state_bytes=2 * 64 + 10))
    host.state_set("k", bytes(9))
    assert host_error(host.state_set, "j", b"x") is Error.LIMIT_REACHED
    host.state_set("k", bytes(2))
    host.state_set("j", b"x")


def test_connections(host):
    a, b = host.open(Recorder()), host.open(Recorder())
    assert host.connections() == [a.id, b.id] and host.connection_count() == 2
    assert host.connection(a.id) is a
    a.close()
    assert host.connections() == [b.id] and host.connection_count() == 1


def test_log(host):
    wsgate.log(LogLevel.WARN, "careful")
    assert host.logs == [Log(LogLevel.WARN, "careful")]
    with pytest.raises(TypeError):
        wsgate.log("warn", "a str is not a level")


def test_deliveries_per_hook_are_capped():
    host = FakeHost(limits=Limits(deliveries_per_hook=2))
    outcomes = []

    def on_message(conn, msg):
        for _ in range(3):
            try:
                outcomes.append(wsgate.host.broadcast(Message.text("x"), None))
                outcomes.append(wsgate.host.publish("c", Message.text("x"), None))
            except HostError as e:
                outcomes.append(e.value)

    listener = Recorder(on_message=on_message)
    a, b = host.open(listener), host.open(listener)
    host.subscribe(b.id, "c")
    a.send_text("go")
    # The call that crosses the line is delivered in full; then nothing.
    assert outcomes == [2, Error.LIMIT_REACHED, 0, Error.LIMIT_REACHED, 0, Error.LIMIT_REACHED]
    a.send_text("again")  # a fresh budget per hook call
    assert outcomes[6] == 2


# --- Timers -----------------------------------------------------------------

def test_timers_fire_only_when_the_test_says(host):
    listener = Recorder()
    host.open(listener)
    assert host.set_timer(100, False) == 1
    assert host.set_timer(30, True) == 2
    assert "on_timer" not in hooks(listener)
    assert host.advance(99) == [2, 2, 2]  # due at 30, 60, 90
    assert host.advance(1) == [1]  # the one-shot at 100, then gone
    assert list(host.timers) == [2] and host.timers[2].due_ms == 120
    assert host.fire_timers() == [2]  # once each, clock unchanged
    assert host.now_ms == 100 and host.timers[2].due_ms == 150
    assert host.cancel_timer(2) is True and host.cancel_timer(2) is False
    assert host.fire_timers() == []
    assert [e for e in listener.events if e[0] == "on_timer"] == [("on_timer", i) for i in (2, 2, 2, 1, 2)]


def test_timer_limits():
    host = FakeHost(limits=Limits(timers_per_plugin=1))
    assert host_error(host.set_timer, 9, False) is Error.INVALID_ARGUMENT  # under min_timer_ms
    host.set_timer(10, False)
    assert host_error(host.set_timer, 10, False) is Error.LIMIT_REACHED


def test_a_timer_fires_into_the_latest_listener(host):
    old, new = Recorder(), Recorder()
    old_conn = host.open(old)
    id = host.set_timer(10, False)
    host.open(new)
    old_conn.close()  # the old version's hooks run, but it is not the newest
    host.fire_timer(id)
    assert ("on_timer", id) in new.events and ("on_timer", id) not in old.events
    with pytest.raises(KeyError):
        host.fire_timer(id)


def test_a_timer_set_while_advancing_fires_if_due(host):
    def on_timer(id):
        if id == 1:
            wsgate.host.set_timer(10, False)

    listener = Recorder(on_timer=on_timer)
    host.open(listener)
    host.set_timer(10, False)
    assert host.advance(25) == [1, 2]


# --- Opening and closing ----------------------------------------------------

def test_first_open_and_last_close_are_paired_per_route(host):
    listener = Recorder()
    a = host.open(listener, "/ws/a")
    b = host.open(listener, "/ws/a")
    c = host.open(listener, "/ws/b")
    assert hooks(listener) == ["on_first_open", "on_open", "on_open", "on_first_open", "on_open"]
    a.close()
    assert hooks(listener)[-1] == "on_close"
    b.close(1001, "gone")
    assert listener.events[-2:] == [("on_close", b.id, 1001, "gone"), ("on_last_close", "/ws/a")]
    c.close(1006)
    assert listener.events[-1] == ("on_last_close", "/ws/b")
    host.open(listener, "/ws/a")
    assert listener.events[-2][0] == "on_first_open", "re-armed after the route drained"


def test_a_rejection_leaves_nothing_registered(host):
    def on_open(conn, req):
        wsgate.host.tag(conn, "t")
        wsgate.host.set_attribute(conn, "k", "v")
        wsgate.host.send(conn, Message.text("never seen"))
        return OpenDecision.reject(403, "go away")

    listener = Recorder(on_open=on_open)
    r = host.open(listener, route="/ws/c/{channel}", params={"channel": "lobby"})
    assert r.status == 403 and r.rejection.reason == "go away" and not r.accepted
    assert r.inbox == [] and host.connections() == [] and host.channels() == []
    assert host.tagged("t") == []
    assert hooks(listener) == ["on_first_open", "on_open", "on_last_close"], "no on_close"
    with pytest.raises(RuntimeError):
        r.send_text("x")


def test_a_rejection_status_outside_400_599_is_500(host):
    r = host.open(Recorder(on_open=lambda conn, req: OpenDecision.reject(302, "elsewhere")))
    assert (r.status, r.rejection.reason) == (500, "connection refused")


def test_a_greeting_goes_before_what_on_open_queued(host):
    def on_open(conn, req):
        wsgate.host.publish("lobby", Message.text("joined"), None)
        return OpenDecision.greet("welcome")

    a = host.open(Recorder(on_open=on_open), route="/ws/c/{channel}", path="/ws/c/lobby")
    assert a.texts == ["welcome", "joined"], "subscribed to {channel} before on_open"
    assert a.status == 101 and a.accepted


def test_a_reply_follows_what_the_hook_queued(host):
    def on_message(conn, msg):
        wsgate.host.send(conn, Message.text("queued"))
        return msg

    a = host.open(Recorder(on_message=on_message))
    assert a.send_binary(b"\x00") == Message.binary(b"\x00")
    assert a.inbox == [Message.text("queued"), Message.binary(b"\x00")]


def test_a_listener_class_gets_a_new_instance_per_hook(host):
    class Forgetful(wsgate.Listener):
        def on_open(self, conn, req):
            self.name = "ann"  # lost: the next hook may run in another instance
            return OpenDecision.accept()

        def on_message(self, conn, msg):
            return Message.text(getattr(self, "name", "who?"))

    assert host.open(Forgetful).send_text("hi") == Message.text("who?")


def test_a_failing_hook_raises_in_the_test(host):
    def boom(*args):
        raise ZeroDivisionError

    listener = Recorder(on_open=boom)
    with pytest.raises(ZeroDivisionError):
        host.open(listener, "/ws/x")
    assert host.connections() == [] and hooks(listener)[-1] == "on_last_close"
    with pytest.raises(TypeError):
        host.open(Recorder(on_open=lambda conn, req: "yes"))  # not an OpenDecision


def test_push(host):
    listener = Recorder()
    host.push(listener, "hello")
    host.push(listener, b"\x01")
    assert listener.events == [("on_push", Message.text("hello")), ("on_push", Message.binary(b"\x01"))]


def test_the_request(host):
    seen = []
    listener = Recorder(on_open=lambda conn, req: seen.append(req))
    host.open(listener, "/ws/files/a/b?x=1&x=2&q=a+b%21", route="/ws/{kind}/{*rest}",
              headers={"Cookie": "s=1; t=\"2\"", "X-Y": "z"}, remote_addr="10.0.0.1:5")
    req = seen[0]
    assert (req.path, req.route) == ("/ws/files/a/b", "/ws/{kind}/{*rest}")
    assert req.params == [("kind", "files"), ("rest", "a/b")]
    assert req.query == [("x", "1"), ("x", "2"), ("q", "a b!")]
    assert req.query_param("x") == "1" and req.header("x-y") == "z"
    assert req.cookies == [("s", "1"), ("t", "2")] and req.cookie("t") == "2"
    assert req.remote_addr == "10.0.0.1:5"
    with pytest.raises(ValueError):
        host.open(listener, "/ws/other", route="/ws/{kind}/{*rest}")
    with pytest.raises(ValueError):
        host.open(listener, route="/ws/{kind}")  # no params to build the path


def test_load_app_keeps_plugins_apart():
    chat = load_app(ROOT / "example-plugins" / "chat-py")
    echo = load_listener(ROOT / "example-plugins" / "echo-py")
    assert chat.Listener is not echo and chat.SERVER == "<server>"
    assert load_app(ROOT / "example-plugins" / "chat-py") is chat
    host = FakeHost()
    assert host.open(echo).send_text("hi") == Message.text("hi")
