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

app = wsgate_testing.load_app(Path(__file__).parent)

ROUTE = "/ws/chat-py/{channel}"  # as in chat-py.toml


@pytest.fixture
def host():
    return wsgate_testing.FakeHost()


def join(host, username, channel="lobby"):
    return host.open(app.Listener, route=ROUTE, params={"channel": channel},
                     query={"username": username})


def heard(conn):
    """What a connection received, without timestamps, and forgets it."""
    said = []
    for body in conn.json():
        assert isinstance(body.pop("timestamp"), int)
        said.append(body)
    conn.clear()
    return said


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
