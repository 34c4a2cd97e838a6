"""Multi-channel chat, the Python twin of example-plugins/chat.

Connect to ``/ws/chat-py/{channel}?username=NAME``. The host subscribes the
connection to ``{channel}``; every text message is published to the channel
as ``{"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}``, and joins
and leaves are announced by ``<server>``.
"""

import json

import wsgate
from wsgate import HostError, LogLevel, Message, OpenDecision, host

SERVER = "<server>"


def announce(channel, sender, message):
    body = json.dumps(
        {"from": sender, "message": message, "channel": channel, "timestamp": wsgate.now_ms()},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    try:
        host.publish(channel, Message.text(body), None)
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
        channel = req.param("channel")
        if channel is None:
            return OpenDecision.reject(404, "no channel in the path")
        # Both only fail for a connection that is already gone.
        try:
            host.set_attribute(conn, "username", name)
            host.set_attribute(conn, "channel", channel)
        except HostError:
            pass
        announce(channel, SERVER, f"{name} connected")
        return OpenDecision.accept()

    def on_message(self, conn, msg):
        text = Message.as_text(msg)
        ident = identity(conn)
        if text is not None and ident is not None:
            announce(ident[1], ident[0], text)
        return None

    def on_close(self, conn, code, reason):
        ident = identity(conn)
        if ident is not None:
            announce(ident[1], SERVER, f"{ident[0]} disconnected")
