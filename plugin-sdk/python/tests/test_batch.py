"""``on_messages`` (WIT 0.1.3, ``batch-listener``): the SDK's loop over
``on_message``, driven through FakeHost as the server drives it. The rules
are the WIT's doc comment: one call handles a burst, but stops right after
a message whose handling delivered to connections or closed one, so the
sender sees what one ``on_message`` per message would have shown it."""

from pathlib import Path

import pytest

import wsgate_testing
from wsgate_testing import FakeHost, HistoryConfig, Limits, load_app

import wsgate  # noqa: E402  (after wsgate_testing, which provides its bindings)
from listeners import Recorder
from wsgate import Error, HostError, Message, host

ROOT = Path(__file__).resolve().parents[3]


class Counting(Recorder):
    """A Recorder that also counts the batches it was given: their sizes."""

    def __init__(self, **behaviour):
        super().__init__(**behaviour)
        self.batches = []

    def on_messages(self, conn, msgs):
        self.batches.append(len(msgs))
        return super().on_messages(conn, msgs)


def echo(conn, msg):
    return msg


def texts(msgs):
    return [Message.as_text(m) for m in msgs]


# --- One call for a burst ---------------------------------------------------

def test_an_echo_handles_a_whole_burst_in_one_call():
    listener = Counting(on_message=echo)
    conn = FakeHost().open(listener)
    burst = ["a", "b", b"\x01", "d"]
    assert conn.send_burst(burst) == [Message.text("a"), Message.text("b"),
                                      Message.binary(b"\x01"), Message.text("d")]
    assert listener.batches == [4], "one call for the whole burst"
    assert [e[0] for e in listener.events].count("on_message") == 4
    assert conn.inbox == [Message.text("a"), Message.text("b"), Message.binary(b"\x01"),
                          Message.text("d")]


def test_on_messages_returns_one_result_per_message_in_order_with_none_for_no_reply():
    def odd_only(conn, msg):
        return msg if int(msg.value) % 2 else None

    conn = FakeHost().open(Counting(on_message=odd_only))
    assert conn.on_messages(["1", "2", "3"]) == [Message.text("1"), None, Message.text("3")]
    assert conn.texts == ["1", "3"]


def test_a_message_that_arrives_alone_goes_to_on_message():
    listener = Counting(on_message=echo)
    conn = FakeHost().open(listener)
    assert conn.send_text("hi") == Message.text("hi")
    assert conn.send_burst(["alone"]) == [Message.text("alone")]
    assert listener.batches == [], "the server calls on-message for a burst of one"
    assert conn.texts == ["hi", "alone"]


# --- Delivering ends the batch -----------------------------------------------

def replier(delivering):
    """Replies ``re-X`` to X, and for an X starting with ``!`` first makes
    the delivering call ``delivering(conn, text)``."""
    def on_message(conn, msg):
        if msg.value.startswith("!"):
            delivering(conn, msg.value)
        return Message.text(f"re-{msg.value}")
    return on_message


def publish_to_own_channel(conn, text):
    host.publish("room", Message.text(f"pub{text}"), None)


def test_a_batch_stops_right_after_a_message_that_published():
    listener = Counting(on_message=replier(publish_to_own_channel))
    host_ = FakeHost()
    conn = host_.open(listener, route="/ws/{channel}", path="/ws/room")
    assert conn.on_messages(["a", "!1", "b"]) == [Message.text("re-a"), Message.text("re-!1")]
    assert [e[2].value for e in listener.events if e[0] == "on_message"] == ["a", "!1"], \
        "b is left to the next call"
    assert conn.texts == ["re-a", "pub!1", "re-!1"], \
        "the earlier replies, then what was queued, then the last reply"


def test_the_hosts_loop_gives_the_sender_what_one_on_message_per_message_gives():
    burst = ["a", "!1", "b", "c", "!2", "d", "!3"]

    batched = Counting(on_message=replier(publish_to_own_channel))
    conn = FakeHost().open(batched, route="/ws/{channel}", path="/ws/room")
    replies = conn.send_burst(burst)

    one_by_one = Recorder(on_message=replier(publish_to_own_channel))
    single = FakeHost().open(one_by_one, route="/ws/{channel}", path="/ws/room")
    for text in burst:
        single.send_text(text)

    assert batched.batches == [7, 5, 2], "a call per delivering message, the rest handed on"
    assert texts(replies) == [f"re-{t}" for t in burst]
    assert conn.texts == single.texts == [
        "re-a", "pub!1", "re-!1", "re-b", "re-c", "pub!2", "re-!2", "re-d", "pub!3", "re-!3"]
    assert batched.events == one_by_one.events, "the same hooks with the same arguments"


def test_others_see_the_same_as_with_one_on_message_per_message():
    burst = ["a", "!1", "b"]
    host_ = FakeHost()
    listener = Counting(on_message=replier(publish_to_own_channel))
    sender = host_.open(listener, route="/ws/{channel}", path="/ws/room")
    other = host_.open(listener, route="/ws/{channel}", path="/ws/room")
    sender.send_burst(burst)
    assert other.texts == ["pub!1"] and listener.batches == [3], "b alone: on-message"


def send_to_sender(conn, text):
    host.send(conn, Message.text(f"sent{text}"))


def broadcast(conn, text):
    host.broadcast(Message.text(f"all{text}"), None)


def send_to_tag(conn, text):
    host.tag(conn, "t")
    host.send_to_tag("t", Message.text(f"tag{text}"), None)


def publish_recorded(conn, text):
    wsgate.publish_recorded("room", f"rec{text}")


def publish_positioned(conn, text):
    wsgate.publish_positioned("room", lambda pos: f"pos{text}@{pos}")


def raw_publish_recorded(conn, text):
    from wit_world.imports import host as generated  # around wsgate.host: still noted
    from wit_world.imports.wsgate_plugin_types import Publication_Plain
    generated.publish_recorded("room", Publication_Plain(Message.text(f"raw{text}")), None)


def close_other(conn, text):
    host.close(next(c for c in host.connections() if c != conn), 4000, "kicked")


@pytest.mark.parametrize("delivering", [
    send_to_sender, broadcast, send_to_tag, publish_to_own_channel, publish_recorded,
    publish_positioned, raw_publish_recorded, close_other,
], ids=lambda f: f.__name__)
def test_each_delivering_call_ends_the_batch(delivering):
    listener = Counting(on_message=replier(delivering))
    host_ = FakeHost(history=HistoryConfig(channels=["room"]))
    conn = host_.open(listener, route="/ws/{channel}", path="/ws/room")
    for _ in range(2):  # the ones close_other closes
        host_.open(Recorder(), route="/ws/{channel}", path="/ws/room")
    assert len(conn.on_messages(["a", "!x", "b", "c"])) == 2
    assert conn.send_burst(["d", "!y", "e", "f"]) == [Message.text(t) for t in ("re-d", "re-!y", "re-e", "re-f")]
    assert listener.batches == [4, 4, 2]


@pytest.mark.parametrize("call", [
    lambda conn: host.subscribe(conn, "news"),
    lambda conn: host.tag(conn, "t"),
    lambda conn: host.set_attribute(conn, "k", "v"),
    lambda conn: host.state_set("k", b"v"),
    lambda conn: host.state_increment("n", 1),
    lambda conn: host.set_timer(1000, False),
    lambda conn: wsgate.log(wsgate.LogLevel.INFO, "hi"),
    lambda conn: host.subscribers("room"),
], ids=["subscribe", "tag", "set_attribute", "state_set", "state_increment", "set_timer",
        "log", "subscribers"])
def test_calls_that_deliver_nothing_do_not_end_the_batch(call):
    def on_message(conn, msg):
        call(conn)
        return msg

    listener = Counting(on_message=on_message)
    conn = FakeHost().open(listener, route="/ws/{channel}", path="/ws/room")
    assert len(conn.on_messages(["a", "b", "c"])) == 3


def test_a_delivering_call_that_fails_still_ends_the_batch():
    def on_message(conn, msg):
        if msg.value == "!":
            with pytest.raises(HostError) as e:
                host.send(999, Message.text("nobody"))
            assert e.value.value == Error.UNKNOWN_CONNECTION
        return msg

    conn = FakeHost().open(Counting(on_message=on_message))
    assert len(conn.on_messages(["a", "!", "b"])) == 2, "stopping early costs a call, never order"


def test_a_batch_that_starts_with_a_delivering_message_handles_only_it():
    listener = Counting(on_message=replier(send_to_sender))
    conn = FakeHost().open(listener)
    assert conn.on_messages(["!1", "a"]) == [Message.text("re-!1")]
    assert conn.texts == ["sent!1", "re-!1"]


def test_after_a_call_that_handled_only_its_first_message_the_rest_go_one_by_one():
    listener = Counting(on_message=replier(send_to_sender))
    conn = FakeHost().open(listener)
    replies = conn.send_burst(["!1", "a", "!2", "b"])
    assert texts(replies) == ["re-!1", "re-a", "re-!2", "re-b"]
    assert listener.batches == [4], "a plugin that delivers at once: on-message for the rest"
    assert [e[2].value for e in listener.events if e[0] == "on_message"] == ["!1", "a", "!2", "b"]
    assert conn.texts == ["sent!1", "re-!1", "re-a", "sent!2", "re-!2", "re-b"]


def test_the_flag_is_cleared_for_every_message():
    listener = Counting(on_message=replier(send_to_sender))
    conn = FakeHost().open(listener)
    assert len(conn.on_messages(["a", "!1"])) == 2  # the batch ends on a delivery
    assert len(conn.on_messages(["a", "b", "c"])) == 3, "the last batch's delivery is not carried over"


# --- Closing -----------------------------------------------------------------

def test_closing_its_own_connection_ends_the_batch_and_the_burst():
    def on_message(conn, msg):
        if msg.value == "bye":
            host.close(conn, 1000, "bye")
        return Message.text(f"re-{msg.value}")

    listener = Counting(on_message=on_message)
    conn = FakeHost().open(listener)
    replies = conn.send_burst(["a", "bye", "b", "c"])
    assert texts(replies) == ["re-a", "re-bye"], "b and c are discarded, as after a close"
    assert listener.batches == [4]
    assert [e[2].value for e in listener.events if e[0] == "on_message"] == ["a", "bye"]
    assert conn.texts == ["re-a"], "the earlier reply went out before the close; the last did not"
    assert conn.closed == (1000, "bye") and not conn.is_open

    single = FakeHost().open(Recorder(on_message=on_message))
    single.send_text("a")
    single.send_text("bye")
    assert single.texts == conn.texts and single.closed == conn.closed


# --- Failures ----------------------------------------------------------------

def test_an_exception_propagates_and_nothing_of_the_call_is_written():
    def on_message(conn, msg):
        if msg.value == "boom":
            raise ZeroDivisionError
        return msg

    listener = Counting(on_message=on_message)
    conn = FakeHost().open(listener)
    with pytest.raises(ZeroDivisionError):
        conn.on_messages(["a", "boom", "b"])
    assert conn.inbox == [], "a trap: the server closes with 1011 and writes none of the replies"
    with pytest.raises(ZeroDivisionError):
        conn.send_burst(["c", "boom"])
    with pytest.raises(ZeroDivisionError):
        conn.send_burst(["boom"])


@pytest.mark.parametrize("results", [[], [None, None, None, None], None, "ab"])
def test_a_result_list_empty_or_too_long_fails_the_call(results):
    class Wrong(wsgate.Listener):
        def on_messages(self, conn, msgs):
            return results

    conn = FakeHost().open(Wrong)
    with pytest.raises(RuntimeError, match="on_messages returned"):
        conn.on_messages(["a", "b", "c"])


def test_a_burst_is_at_least_one_message():
    conn = FakeHost().open(Counting())
    with pytest.raises(ValueError):
        conn.on_messages([])
    assert conn.send_burst([]) == []


def test_an_earlier_reply_over_the_size_limit_fails_the_connection():
    def on_message(conn, msg):
        return Message.text("x" * 100) if msg.value == "big" else msg

    conn = FakeHost(limits=Limits(max_message_size=64)).open(Counting(on_message=on_message))
    conn.on_messages(["a", "big", "c"])
    assert conn.texts == ["a"] and conn.closed == (1011, "internal error")


def test_a_listener_without_on_messages_gets_on_message():
    class Bare:  # the 0.1.0 listener interface only, as a plugin built before 0.1.3
        def on_open(self, conn, req):
            return wsgate.OpenDecision.accept()

        def on_message(self, conn, msg):
            return msg

        def on_close(self, conn, code, reason):
            pass

        on_first_open = on_last_close = lambda self, route: None

    conn = FakeHost().open(Bare)
    assert conn.send_burst(["a", "b"]) == [Message.text("a"), Message.text("b")]
    with pytest.raises(TypeError, match="no on_messages"):
        conn.on_messages(["a"])


# --- The export ----------------------------------------------------------------

def test_a_listener_module_exports_batch_listener():
    app = load_app(ROOT / "example-plugins" / "echo-py")
    assert app.BatchListener is app.Listener
    assert wsgate_testing.BatchListenerProtocol in app.Listener.__mro__
    conn = FakeHost().open(app.Listener)
    assert conn.send_burst(["a", "b"]) == [Message.text("a"), Message.text("b")]


def test_the_delivering_host_calls_are_wrapped_where_they_are_defined():
    from wit_world.imports import host as generated
    assert generated is host
    for name in ("send", "broadcast", "send_to_tag", "publish", "publish_recorded", "close"):
        call = getattr(generated, name)
        assert call.__name__ == name and callable(call._wsgate_unwrapped), name
    assert not hasattr(generated.subscribe, "_wsgate_unwrapped")
