"""The 0.1.2 channel history against FakeHost, through the SDK's wrappers:
positions as text, recording, history pages (size, TTL on the virtual
clock, epochs, `recovered`), positioned publishes, node-local presence,
and the order of deliveries to a connection whose on_open is running.
The semantics are the #16 spec's (wit/wsgate.wit, interface host)."""

import re

import pytest

import wsgate_testing
from wsgate_testing import FakeHost, HistoryConfig, Limits

import wsgate  # noqa: E402
from listeners import Recorder, host_error
from wsgate import HistoryError, Message, Position

ROUTE = "/ws/{channel}"


def recording(channels=("*",), size=100, ttl="5m", **kwargs):
    return FakeHost(history=HistoryConfig(channels=channels, size=size, ttl=ttl), **kwargs)


@pytest.fixture
def host():
    return recording()


def texts(page):
    return [e.msg.value for e in page.entries]


def offsets(page):
    return [e.position.offset for e in page.entries]


# --- Positions as text ----------------------------------------------------

def test_a_position_reads_and_writes_as_epoch_colon_offset():
    pos = Position.parse("0123456789abcdef:42")
    assert pos == Position("0123456789abcdef", 42)
    assert str(pos) == "0123456789abcdef:42"
    assert Position.parse(str(Position("e", 0))) == Position("e", 0)
    assert Position.parse(f"e:{2**64 - 1}").offset == 2**64 - 1


def test_a_position_splits_at_the_last_colon():
    assert Position.parse("a:b:7") == Position("a:b", 7)


@pytest.mark.parametrize("text", [
    "", "e", ":1", "e:", "e:-1", "e:+1", "e: 1", "e:1 ", "e:1.0", "e:0x1", "e:1_0",
    "e:٣", f"e:{2**64}", "e:" + "1" * 21,
])
def test_a_bad_position_is_refused(text):
    with pytest.raises(ValueError):
        Position.parse(text)


# --- Recording ------------------------------------------------------------

def test_recorded_messages_get_positions_from_1_in_a_16_hex_epoch(host):
    first = wsgate.publish_recorded("lobby", "one")
    second = wsgate.publish_recorded("lobby", Message.binary(b"two"))
    assert re.fullmatch(r"[0-9a-f]{16}", first.position.epoch)
    assert (first.position.offset, second.position.offset) == (1, 2)
    assert second.position.epoch == first.position.epoch
    other = wsgate.publish_recorded("kitchen", "x")
    assert other.position.offset == 1, "offsets count per channel"
    page = wsgate.history("lobby", None, 10)
    assert [e.msg for e in page.entries] == [Message.text("one"), Message.binary(b"two")]
    assert page.latest == second.position and page.recovered


def test_publish_recorded_delivers_as_publish_does(host):
    a = host.open(Recorder(), route=ROUTE, params={"channel": "lobby"})
    b = host.open(Recorder(), route=ROUTE, params={"channel": "lobby"})
    published = wsgate.publish_recorded("lobby", "hi", a.id)
    assert published.delivered == 1
    assert a.texts == [] and b.texts == ["hi"]
    assert host.publishes[-1].position == published.position


def test_only_the_configured_patterns_are_recorded():
    host = recording(channels=["room-*", "lobby"])
    assert wsgate.publish_recorded("room-1", "x").position.offset == 1
    assert wsgate.publish_recorded("room-", "x").position.offset == 1
    assert wsgate.publish_recorded("lobby", "x").position.offset == 1
    for channel in ("lobby2", "the-room-1", "kitchen"):
        assert host_error(wsgate.publish_recorded, channel, "x") is HistoryError.NOT_RECORDED
        assert host_error(wsgate.history, channel) is HistoryError.NOT_RECORDED
        assert host_error(wsgate.publish_positioned, channel, lambda p: p) \
            is HistoryError.NOT_RECORDED
    # The old publish still works there, unrecorded.
    assert wsgate.host.publish("kitchen", Message.text("x"), None) == 0
    assert host.publishes[-1].position is None


def test_without_a_history_table_nothing_is_recorded():
    FakeHost()
    assert host_error(wsgate.publish_recorded, "lobby", "x") is HistoryError.NOT_RECORDED
    assert host_error(wsgate.history, "lobby") is HistoryError.NOT_RECORDED


def test_the_old_publish_records_on_a_recorded_channel(host):
    wsgate.host.publish("lobby", Message.text("plain"), None)
    published = wsgate.publish_recorded("lobby", "recorded")
    assert published.position.offset == 2
    assert texts(wsgate.history("lobby")) == ["plain", "recorded"]
    assert host.publishes[0].position.offset == 1


def test_bad_arguments(host):
    assert host_error(wsgate.publish_recorded, "", "x") is HistoryError.INVALID_ARGUMENT
    assert host_error(wsgate.history, "x" * 257) is HistoryError.INVALID_ARGUMENT
    assert host_error(wsgate.history, "lobby", None, 0) is HistoryError.INVALID_ARGUMENT
    small = recording(limits=Limits(max_message_size=8))
    assert host_error(wsgate.publish_recorded, "lobby", "123456789") is HistoryError.INVALID_ARGUMENT
    # The position counts towards the size: nothing is recorded.
    assert host_error(wsgate.publish_positioned, "lobby", lambda p: "x" + p) \
        is HistoryError.INVALID_ARGUMENT
    assert wsgate.history("lobby").latest.offset == 0
    assert small.publishes == []


# --- Positioned publishes -------------------------------------------------

def test_a_positioned_text_carries_its_own_position(host):
    conn = host.open(Recorder(), route=ROUTE, params={"channel": "lobby"})
    wsgate.publish_recorded("lobby", "first")
    published = wsgate.publish_positioned("lobby", lambda pos: '{"pos":"%s","n":2}' % pos)
    expected = '{"pos":"%s","n":2}' % published.position
    assert published.position.offset == 2 and published.delivered == 1
    assert conn.texts == ["first", expected]
    assert texts(wsgate.history("lobby"))[-1] == expected


def test_the_placeholder_is_random_hex_and_must_appear_once(host):
    seen = []
    wsgate.publish_positioned("lobby", lambda pos: seen.append(pos) or pos)
    wsgate.publish_positioned("lobby", lambda pos: seen.append(pos) or pos)
    assert all(re.fullmatch(r"[0-9a-f]{32}", p) for p in seen) and seen[0] != seen[1]
    with pytest.raises(ValueError):
        wsgate.publish_positioned("lobby", lambda pos: "no position")
    with pytest.raises(ValueError):
        wsgate.publish_positioned("lobby", lambda pos: pos + pos)
    with pytest.raises(TypeError):
        wsgate.publish_positioned("lobby", lambda pos: pos.encode())
    assert wsgate.history("lobby").latest.offset == 2, "a refused render records nothing"


# --- History pages --------------------------------------------------------

def test_an_unpublished_channel_is_at_offset_0_and_recovered(host):
    page = wsgate.history("lobby")
    assert page.entries == [] and page.latest.offset == 0 and page.recovered
    again = wsgate.history("lobby", page.latest)
    assert again.recovered and again.latest == page.latest


def test_since_gives_what_came_after_it(host):
    positions = [wsgate.publish_recorded("lobby", str(i)).position for i in range(1, 6)]
    page = wsgate.history("lobby", positions[1])
    assert texts(page) == ["3", "4", "5"] and page.recovered and page.latest == positions[-1]
    assert wsgate.history("lobby", str(positions[1])) == page, "since as text"
    latest = wsgate.history("lobby", positions[-1])
    assert latest.entries == [] and latest.recovered


def test_limit_caps_a_page_and_history_pages_goes_on_to_latest(host):
    for i in range(1, 8):
        wsgate.publish_recorded("lobby", str(i))
    first = wsgate.history("lobby", None, 3)
    assert texts(first) == ["1", "2", "3"] and first.latest.offset == 7
    pages = list(wsgate.history_pages("lobby", Position(first.latest.epoch, 1), 2))
    assert [texts(p) for p in pages] == [["2", "3"], ["4", "5"], ["6", "7"]]
    assert all(p.recovered for p in pages)


def test_size_drops_the_oldest_and_a_gap_into_them_is_not_recovered():
    recording(size=3)
    positions = [wsgate.publish_recorded("lobby", str(i)).position for i in range(1, 6)]
    whole = wsgate.history("lobby")
    assert texts(whole) == ["3", "4", "5"] and not whole.recovered, "1 and 2 were dropped"
    # A client at 1 missed 2: not recovered, and gets the kept ones from the oldest.
    gap = wsgate.history("lobby", positions[0])
    assert not gap.recovered and texts(gap) == ["3", "4", "5"]
    # A client at 2 missed nothing that was dropped.
    assert wsgate.history("lobby", positions[1]).recovered
    assert texts(wsgate.history("lobby", positions[1])) == ["3", "4", "5"]
    # limit never exceeds size.
    assert len(wsgate.history("lobby", None, 1000).entries) == 3


def test_a_since_ahead_of_latest_or_from_another_epoch_is_not_recovered(host):
    for i in range(1, 4):
        wsgate.publish_recorded("lobby", str(i))
    epoch = wsgate.history("lobby").latest.epoch
    ahead = wsgate.history("lobby", Position(epoch, 9))
    assert not ahead.recovered and texts(ahead) == ["1", "2", "3"]
    other = wsgate.history("lobby", Position("ffffffffffffffff", 1))
    assert not other.recovered and texts(other) == ["1", "2", "3"]


def test_entries_older_than_the_ttl_are_dropped_on_the_virtual_clock():
    host = recording(ttl="10s")
    at_1 = wsgate.publish_recorded("lobby", "old").position
    host.advance(6_000)
    at_2 = wsgate.publish_recorded("lobby", "newer").position
    host.advance(3_999)
    assert texts(wsgate.history("lobby")) == ["old", "newer"]
    host.advance(1)  # "old" is 10 s old
    page = wsgate.history("lobby", at_1)
    assert page.recovered, "nothing after 1 was dropped"
    assert wsgate.history("lobby", Position(at_1.epoch, 0)).recovered is False
    assert texts(wsgate.history("lobby")) == ["newer"] and not wsgate.history("lobby").recovered
    host.advance(10_000)
    gone = wsgate.history("lobby", at_1)
    assert gone.entries == [] and not gone.recovered
    assert gone.latest == at_2, "the offsets go on"
    assert wsgate.history("lobby", at_2).recovered
    assert wsgate.publish_recorded("lobby", "next").position == Position(at_2.epoch, 3)


def test_a_new_epoch_starts_over_and_an_old_since_is_not_recovered(host):
    old = [wsgate.publish_recorded("lobby", str(i)).position for i in range(1, 4)]
    wsgate.publish_recorded("kitchen", "k")
    host.new_epoch("lobby")
    fresh = wsgate.publish_recorded("lobby", "after")
    assert fresh.position.epoch != old[0].epoch and fresh.position.offset == 1
    page = wsgate.history("lobby", old[-1])
    assert not page.recovered and texts(page) == ["after"]
    assert texts(wsgate.history("kitchen")) == ["k"], "other channels keep theirs"
    host.new_epoch()
    assert wsgate.history("kitchen").latest.offset == 0


@pytest.mark.parametrize("ttl, ms", [("5m", 300_000), ("90s", 90_000), ("1h 30m", 5_400_000),
                                     ("250ms", 250), (1234, 1234)])
def test_history_config_reads_humantime(ttl, ms):
    assert HistoryConfig(channels=["*"], ttl=ttl).ttl_ms == ms


@pytest.mark.parametrize("bad", [dict(size=0), dict(size=10_001), dict(ttl="5 parsecs"),
                                 dict(ttl=0), dict(ttl="")])
def test_history_config_refuses_what_the_server_would(bad):
    with pytest.raises(ValueError):
        HistoryConfig(channels=["*"], **bad)


def test_history_config_from_a_sidecar(tmp_path):
    sidecar = tmp_path / "p.toml"
    sidecar.write_text('routes = ["/ws"]\n[history]\nchannels = ["*"]\nsize = 5\nttl = "1m"\n')
    assert HistoryConfig.from_sidecar(sidecar) == HistoryConfig(("*",), 5, "1m")
    sidecar.write_text('routes = ["/ws"]\n')
    assert HistoryConfig.from_sidecar(sidecar) is None


# --- Presence and on_open ordering ---------------------------------------

def test_node_presence_is_the_whole_cluster_on_one_node(host):
    a = host.open(Recorder(), route=ROUTE, params={"channel": "lobby"})
    wsgate.host.tag(a.id, "user:a")
    h = wsgate.host
    assert h.node_channels() == h.channels() == ["lobby"]
    assert h.node_subscribers("lobby") == h.subscribers("lobby") == [a.id]
    assert h.node_tagged("user:a") == h.tagged("user:a") == [a.id]
    assert h.node_connection_count() == h.connection_count() == 1


def test_what_is_published_during_on_open_follows_what_on_open_sends(host):
    def on_open(conn, req):
        wsgate.publish_recorded("lobby", "live")
        wsgate.host.send(conn, Message.text("replayed"))
        return wsgate.OpenDecision.greet("hello")

    other = host.open(Recorder(), route=ROUTE, params={"channel": "lobby"})
    conn = host.open(Recorder(on_open=on_open), route=ROUTE, params={"channel": "lobby"})
    assert conn.texts == ["hello", "replayed", "live"]
    assert other.texts == ["live"]
    refused = host.open(Recorder(on_open=lambda c, r: (wsgate.publish_recorded("lobby", "x"),
                                                       wsgate.OpenDecision.reject(400, "no"))[1]),
                        route=ROUTE, params={"channel": "lobby"})
    assert refused.inbox == []


def test_a_history_error_can_be_played(host):
    wsgate.publish_recorded("lobby", "x")
    host.history_error = HistoryError.UNAVAILABLE
    assert host_error(wsgate.history, "lobby") is HistoryError.UNAVAILABLE
    assert host_error(wsgate.publish_recorded, "lobby", "y") is HistoryError.UNAVAILABLE
    host.history_error = None
    assert texts(wsgate.history("lobby")) == ["x"]
