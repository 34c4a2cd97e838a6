"""Multi-channel chat, the Python twin of example-plugins/chat.

Connect to ``/ws/chat-py/{channel}?username=NAME``. The host subscribes the
connection to ``{channel}``; every text message is published to the channel
as ``{"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}``, and joins
and leaves are announced by ``<server>``.

A whisper is a text message ``{"to":USER,"message":TEXT}``: it reaches every
connection of USER in the same channel and every connection of the sender
there, and nobody else, with ``"to":USER,"private":true`` added.
"""

import json

import wsgate
from wsgate import HostError, LogLevel, Message, OpenDecision, host

SERVER = "<server>"


def render(sender, message, channel, to=None):
    body = {"from": sender, "message": message, "channel": channel, "timestamp": wsgate.now_ms()}
    if to is not None:
        body.update(to=to, private=True)
    return Message.text(json.dumps(body, separators=(",", ":"), ensure_ascii=False))


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
    try:
        host.publish(channel, render(sender, message, channel), None)
    except HostError as e:
        wsgate.log(LogLevel.WARN, f"publish to {channel} failed: {e.value}")


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
        try:
            host.set_attribute(conn, "username", name)
            host.set_attribute(conn, "channel", channel)
            host.tag(conn, user_tag(name, channel))
        except HostError:
            return OpenDecision.reject(400, "username or channel name too long")
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
        else:
            announce(ident[1], ident[0], text)
        return None

    def on_close(self, conn, code, reason):
        ident = identity(conn)
        if ident is not None:
            announce(ident[1], SERVER, f"{ident[0]} disconnected")
