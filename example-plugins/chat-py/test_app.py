"""Unit tests of the chat listener against wsgate_testing's fake host: no
build, no server. Run: scripts/test-python-sdk.sh, or pytest on this file
with plugin-sdk/python on PYTHONPATH."""

import json
import sys
from pathlib import Path

try:
    import wsgate_testing
except ImportError:  # run from a checkout without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugin-sdk" / "python"))
    import wsgate_testing

import pytest

from wsgate_testing import HistoryConfig  # noqa: E402

from wsgate import HistoryError, Position  # noqa: E402

HERE = Path(__file__).parent
app = wsgate_testing.load_app(HERE)

ROUTE = "/ws/chat-py/{channel}"  # as in chat-py.toml
HISTORY = HistoryConfig.from_sidecar(HERE / "chat-py.toml")


@pytest.fixture
def host():
    return wsgate_testing.FakeHost(history=HISTORY)


def join(host, username, channel="lobby", since=None):
    query = {"username": username}
    if since is not None:
        query["since"] = str(since)
    return host.open(app.Listener, route=ROUTE, params={"channel": channel}, query=query)


def heard(conn, positions=None):
    """What a connection received, without timestamps and positions, and
    forgets it; a channel message's position goes to ``positions``."""
    said = []
    for body in conn.json():
        if body.get("type") != "recovery":
            assert isinstance(body.pop("timestamp"), int)
            if "private" in body or body["message"].endswith(" is not in " + body["channel"]):
                assert "pos" not in body, "whispers and notes to one are not channel messages"
            else:
                pos = Position.parse(body.pop("pos"))
                if positions is not None:
                    positions.append(pos)
        said.append(body)
    conn.clear()
    return said


def recovery(recovered, latest):
    return {"type": "recovery", "recovered": recovered,
            "latest": None if latest is None else str(latest)}


def say(conn, *lines):
    for text in lines:
        conn.send_text(text)


def line(sender, message, channel="lobby", to=None):
    body = {"from": sender, "message": message, "channel": channel}
    if to is not None:
        body.update(to=to, private=True)
    return body


def whisper(conn, to, message):
    return conn.send_text(json.dumps({"to": to, "message": message}))


def test_joins_are_announced_to_the_channel(host):
    ann = join(host, "ann")
    assert heard(ann) == [line("<server>", "ann connected")]
    bob = join(host, "bob")
    carol = join(host, "carol", "elsewhere")
    assert heard(ann) == [line("<server>", "bob connected")]
    assert heard(bob) == [line("<server>", "bob connected")]
    assert heard(carol) == [line("<server>", "carol connected", "elsewhere")]


def test_a_message_reaches_its_channel_only(host):
    ann, bob, carol = join(host, "ann"), join(host, "bob"), join(host, "carol", "elsewhere")
    for conn in (ann, bob, carol):
        conn.clear()
    assert ann.send_text("hi all") is None, "no reply: the sender hears it from the channel"
    assert heard(ann) == heard(bob) == [line("ann", "hi all")]
    assert heard(carol) == []


def test_a_whisper_reaches_the_addressee_and_the_senders_devices_only(host):
    ann_phone, ann_laptop = join(host, "ann"), join(host, "ann")
    bob_phone, bob_laptop = join(host, "bob"), join(host, "bob")
    carol = join(host, "carol")
    bob_elsewhere = join(host, "bob", "elsewhere")
    everyone = (ann_phone, ann_laptop, bob_phone, bob_laptop, carol, bob_elsewhere)
    for conn in everyone:
        conn.clear()
    whisper(ann_phone, "bob", "psst")
    private = [line("ann", "psst", to="bob")]
    for conn in (ann_phone, ann_laptop, bob_phone, bob_laptop):
        assert heard(conn) == private, conn
    assert heard(carol) == [] and heard(bob_elsewhere) == []


def test_a_whisper_to_oneself_arrives_once_per_device(host):
    phone, laptop = join(host, "ann"), join(host, "ann")
    phone.clear(), laptop.clear()
    whisper(phone, "ann", "note to self")
    assert heard(phone) == heard(laptop) == [line("ann", "note to self", to="ann")]


def test_a_whisper_to_someone_absent_tells_the_sender(host):
    phone, laptop = join(host, "ann"), join(host, "ann")
    dave_elsewhere = join(host, "dave", "elsewhere")
    for conn in (phone, laptop, dave_elsewhere):
        conn.clear()
    whisper(phone, "dave", "hello?")
    assert heard(phone) == [line("<server>", "dave is not in lobby")]
    assert heard(laptop) == [] and heard(dave_elsewhere) == []


@pytest.mark.parametrize("username", ["<server>", "", "   "])
def test_server_and_empty_usernames_are_refused(host, username):
    conn = join(host, username)
    assert conn.status == 403
    assert host.connections() == [] and host.publishes == []


def test_user_tags_cannot_collide(host):
    # Unescaped, both would be tagged user:a@b@c.
    assert app.user_tag("a", "b@c") != app.user_tag("a@b", "c")
    a = join(host, "a", "b@c")
    a_at_b = join(host, "a@b", "c")
    x = join(host, "x", "c")
    for conn in (a, a_at_b, x):
        conn.clear()
    whisper(x, "a@b", "for a@b")
    assert heard(a_at_b) == [line("x", "for a@b", "c", to="a@b")]
    assert heard(a) == []


def test_leaving_is_announced_to_those_who_stay(host):
    ann, bob = join(host, "ann"), join(host, "bob")
    ann.clear()
    bob.clear()
    bob.close()
    assert heard(ann) == [line("<server>", "bob disconnected")]
    assert heard(bob) == []
    assert host.connections() == [ann.id] and host.tagged(app.user_tag("bob", "lobby")) == []


# --- History and recovery -------------------------------------------------

def test_the_sidecar_records_every_channel():
    assert HISTORY == HistoryConfig(channels=("*",), size=100, ttl="5m")


def test_every_channel_message_carries_its_recorded_position(host):
    ann = join(host, "ann")
    say(ann, "one", "two")
    whisper(ann, "ann", "secret")
    positions = []
    assert heard(ann, positions) == [line("<server>", "ann connected"), line("ann", "one"),
                                     line("ann", "two"), line("ann", "secret", to="ann")]
    page = app.wsgate.history("lobby")
    assert [e.position for e in page.entries] == positions
    assert [p.offset for p in positions] == [1, 2, 3], "the whisper is not recorded"
    for entry, pos in zip(page.entries, positions):
        assert json.loads(entry.msg.value)["pos"] == str(pos)


def test_a_returning_client_gets_the_gap_in_order_then_the_notice_then_live(host):
    ann, bob = join(host, "ann"), join(host, "bob")
    positions = []
    heard(bob, positions)
    last_seen = positions[-1]  # "bob connected"
    bob.close(1006)
    say(ann, "one", "two", "three")
    ann.clear()
    back = join(host, "bob", since=last_seen)
    positions = []
    assert heard(back, positions) == [
        line("<server>", "bob disconnected"), line("ann", "one"), line("ann", "two"),
        line("ann", "three"), recovery(True, Position(last_seen.epoch, last_seen.offset + 4)),
        line("<server>", "bob connected")]
    assert [p.offset for p in positions] == list(range(last_seen.offset + 1, last_seen.offset + 6))
    assert heard(ann) == [line("<server>", "bob connected")], "no replay for the others"


def test_a_client_that_missed_nothing_gets_just_the_notice(host):
    ann = join(host, "ann")
    positions = []
    heard(ann, positions)
    again = join(host, "ann", since=positions[-1])
    assert heard(again) == [recovery(True, positions[-1]), line("<server>", "ann connected")]


def test_replay_goes_past_one_history_page():
    host = wsgate_testing.FakeHost(history=HistoryConfig(channels=["*"], size=1000))
    ann = join(host, "ann")
    start = []
    heard(ann, start)
    say(ann, *[str(i) for i in range(250)])
    back = join(host, "bob", since=start[0])
    said = heard(back)
    assert [m["message"] for m in said[:250]] == [str(i) for i in range(250)]
    assert said[250] == recovery(True, Position(start[0].epoch, 251))


def test_not_recovered_when_messages_were_dropped_the_notice_comes_first(host):
    ann, bob = join(host, "ann"), join(host, "bob")
    positions = []
    heard(bob, positions)
    bob.close(1006)
    say(ann, *[str(i) for i in range(150)])  # the sidecar keeps 100
    back = join(host, "bob", since=positions[-1])
    said = heard(back)
    latest = Position(positions[-1].epoch, positions[-1].offset + 151)
    assert said[0] == recovery(False, latest)
    assert [m["message"] for m in said[1:101]] == [str(i) for i in range(50, 150)], \
        "the kept ones, from the oldest"
    assert said[101:] == [line("<server>", "bob connected")]


def test_not_recovered_after_the_ttl(host):
    ann = join(host, "ann")
    positions = []
    heard(ann, positions)
    ann.close(1006)
    host.advance(5 * 60_000)
    back = join(host, "ann", since=positions[-1])
    assert heard(back) == [recovery(False, Position(positions[-1].epoch, 2)),
                           line("<server>", "ann connected")]


def test_not_recovered_when_history_was_lost(host):
    ann = join(host, "ann")
    positions = []
    heard(ann, positions)
    host.new_epoch()
    say(join(host, "bob"), "hello")
    again = join(host, "ann", since=positions[-1])
    said = heard(again, fresh := [])
    assert said == [recovery(False, Position(fresh[0].epoch, 2)),
                    line("<server>", "bob connected"), line("bob", "hello"),
                    line("<server>", "ann connected")]
    assert fresh[0].epoch != positions[0].epoch


@pytest.mark.parametrize("since", ["", "nope", ":4", "e:", "e:-1", "e:x", "e:99999999999999999999999"])
def test_a_since_that_is_not_a_position_is_refused(host, since):
    conn = join(host, "ann", since=since)
    assert conn.status == 400
    assert host.publishes == [] and host.connections() == []


def test_history_unavailable_refuses_a_returning_client_with_503(host):
    bob = join(host, "bob")
    bob.clear()
    host.history_error = HistoryError.UNAVAILABLE
    conn = join(host, "ann", since="0123456789abcdef:3")
    assert conn.status == 503
    assert bob.json() == [] and len(host.connections()) == 1
    assert any("history of lobby failed" in log.msg for log in host.logs)


def test_a_since_on_an_unrecorded_channel_is_a_fresh_start():
    host = wsgate_testing.FakeHost()
    conn = join(host, "ann", since="0123456789abcdef:3")
    assert conn.accepted
    assert conn.json()[0] == recovery(False, None)


def test_a_line_that_cannot_be_recorded_is_not_sent_and_its_sender_is_told(host):
    ann, bob = join(host, "ann"), join(host, "bob")
    ann.clear(), bob.clear()
    host.history_error = HistoryError.UNAVAILABLE
    ann.send_text("hello")
    assert ann.json() == [{"type": "error", "error": "not delivered; try again"}]
    assert bob.json() == []
