"""Multi-channel chat, the Python twin of example-plugins/chat.

Connect to ``/ws/chat-py/{channel}?username=NAME``. The host subscribes the
connection to ``{channel}``; every text message is published to the channel
as ``{"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS,"pos":POS}``,
and joins and leaves are announced by ``<server>`` the same way.

The channel's history is recorded (``[history]`` in chat-py.toml) and every
channel message carries its position ``POS`` (``EPOCH:OFFSET``). A client
that comes back with ``?since=POS`` (the last ``pos`` it saw) gets what it
missed, in order, before anything live, then
``{"type":"recovery","recovered":true,"latest":POS}``. When part of the gap
is gone (too old, or history was lost: ``recovered`` false), the notice
comes first and the messages after it are the ones still kept, from the
oldest: the client should start over from them; so it should when the
channel is not recorded at all (the notice says ``"latest":null``). When
the history is unavailable (its Redis is restarting), the open is refused
with 503: the gap may well still be kept, so the client comes back with
the same ``since`` rather than start over. A ``since`` that is not a
position is refused with 400. Without ``since`` there is no replay.

A whisper is a text message ``{"to":USER,"message":TEXT}``: it reaches every
connection of USER in the same channel and every connection of the sender
there, and nobody else, with ``"to":USER,"private":true`` added. Whispers
are not channel messages: no ``pos``, not recorded.
"""

import json

import wsgate
from wsgate import HistoryError, HostError, LogLevel, Message, OpenDecision, Position, host

SERVER = "<server>"
#: Entries asked for per history call while replaying.
REPLAY_PAGE = 100


def to_json(body):
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def body_of(sender, message, channel, to=None):
    body = {"from": sender, "message": message, "channel": channel, "timestamp": wsgate.now_ms()}
    if to is not None:
        body.update(to=to, private=True)
    return body


def render(sender, message, channel, to=None):
    return Message.text(to_json(body_of(sender, message, channel, to)))


def user_tag(name, channel):
    """The tag for one user's connections in one channel: ``user:NAME@CHANNEL``,
    with ``%`` and ``@`` escaped in both, so no other name and channel can
    make the same tag (user ``a`` in ``b@c`` and user ``a@b`` in ``c`` would)."""

    def escape(s):
        return s.replace("%", "%25").replace("@", "%40")

    return f"user:{escape(name)}@{escape(channel)}"


def parse_whisper(text):
    try:
        w = json.loads(text)
    except ValueError:
        return None
    if isinstance(w, dict) and isinstance(w.get("to"), str) and isinstance(w.get("message"), str):
        return w
    return None


def whisper(conn, name, channel, w):
    msg = render(name, w["message"], channel, w["to"])
    try:
        reached = host.send_to_tag(user_tag(w["to"], channel), msg, None)
    except HostError:
        reached = 0
    if reached == 0:
        try:
            host.send(conn, render(SERVER, f"{w['to']} is not in {channel}", channel))
        except HostError:
            pass
        return
    if w["to"] != name:
        try:
            host.send_to_tag(user_tag(name, channel), msg, None)
        except HostError:
            pass


def announce(channel, sender, message):
    """Publishes a channel message, recorded, with its position as "pos";
    returns whether it was published."""
    body = body_of(sender, message, channel)
    try:
        wsgate.publish_positioned(channel, lambda pos: to_json({**body, "pos": pos}))
        return True
    except HostError as e:
        wsgate.log(LogLevel.WARN, f"publish to {channel} failed: {e.value}")
        return False


# What a sender is told when its line could not be published (the history
# is unavailable).
NOT_DELIVERED = to_json({"type": "error", "error": "not delivered; try again"})


def recovery(recovered, latest):
    return Message.text(to_json({"type": "recovery", "recovered": recovered,
                                 "latest": None if latest is None else str(latest)}))


def replay(conn, channel, since):
    """Sends ``conn`` what ``channel`` recorded after ``since``, and the
    recovery notice: after the messages when the whole gap was kept, before
    them when it was not (they are then a fresh start). Sends nothing and
    returns False when the history is unavailable: the caller refuses the
    connection."""
    try:
        pages = list(wsgate.history_pages(channel, since, REPLAY_PAGE))
    except HostError as e:
        wsgate.log(LogLevel.WARN, f"history of {channel} failed: {e.value}")
        if e.value == HistoryError.UNAVAILABLE:
            return False
        # This history cannot serve ``since`` at all: a fresh start.
        host.send(conn, recovery(False, None))
        return True
    recovered, latest = pages[0].recovered, pages[-1].latest
    if not recovered:
        host.send(conn, recovery(False, latest))
    for page in pages:
        for entry in page.entries:
            host.send(conn, entry.msg)
    if recovered:
        host.send(conn, recovery(True, latest))
    return True


def identity(conn):
    """The username and channel remembered for a connection at open time."""
    try:
        name = host.get_attribute(conn, "username")
        channel = host.get_attribute(conn, "channel")
    except HostError:
        return None
    return (name, channel) if name is not None and channel is not None else None


class Listener(wsgate.Listener):
    def on_open(self, conn, req):
        name = (req.query_param("username") or "").strip()
        if not name:
            return OpenDecision.reject(403, "a username query parameter is required")
        if name == SERVER:
            return OpenDecision.reject(403, "that username is reserved")
        channel = req.param("channel")
        if channel is None:
            return OpenDecision.reject(404, "no channel in the path")
        since = req.query_param("since")
        if since is not None:
            try:
                since = Position.parse(since)
            except ValueError:
                return OpenDecision.reject(400, "since must be a position, EPOCH:OFFSET")
        try:
            host.set_attribute(conn, "username", name)
            host.set_attribute(conn, "channel", channel)
            host.tag(conn, user_tag(name, channel))
        except HostError:
            return OpenDecision.reject(400, "username or channel name too long")
        if since is not None:
            try:
                if not replay(conn, channel, since):
                    return OpenDecision.reject(503, "history unavailable; try again with the same since")
            except HostError as e:  # the connection is already closing
                wsgate.log(LogLevel.WARN, f"replay to {conn} stopped: {e.value}")
        announce(channel, SERVER, f"{name} connected")
        return OpenDecision.accept()

    def on_message(self, conn, msg):
        text = Message.as_text(msg)
        ident = identity(conn)
        if text is None or ident is None:
            return None
        w = parse_whisper(text)
        if w is not None:
            whisper(conn, ident[0], ident[1], w)
        elif not announce(ident[1], ident[0], text):
            try:
                host.send(conn, Message.text(NOT_DELIVERED))
            except HostError:
                pass
        return None

    def on_close(self, conn, code, reason):
        ident = identity(conn)
        if ident is not None:
            announce(ident[1], SERVER, f"{ident[0]} disconnected")
