"""The chat for signed-in users, with its last lines kept: the Python twin of
example-plugins/auth-chat (its lib.rs says the whole protocol).

Connect to ``/ws/auth-chat-py/{channel}`` with a token (an ``Authorization:
Bearer`` header, a ``session`` cookie or ``?token=``). ``on_open`` asks the
application who that is, a GET of ``$AUTH_CHAT_URL`` with the token: 200 with
``{"user":NAME}`` opens the connection as NAME, 401 or 403 refuses it with
401, anything else with 503. Every line is published as
``{"from","message","channel","seq"}`` and kept in durable state; a new member
first gets the channel's last 20 lines.
"""

import json
import os

import wsgate
from wsgate import HostError, HttpError, LogLevel, Message, OpenDecision, host

KEPT = 20
MAX_USER = 64


def seq_key(channel):
    return f"seq:{channel}"


def line_key(channel, seq):
    """Line ``seq`` lives in one of KEPT slots; it says which seq it is, so a
    slot overwritten meanwhile is never shown as an older line."""
    return f"line:{seq % KEPT}:{channel}"


def encode(line):
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def token(req):
    """The token, from the first place that has one."""
    auth = req.header("authorization") or ""
    bearer = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
    for found in (bearer, req.cookie("session"), req.query_param("token")):
        if found and found.strip():
            return found.strip()
    return None


class Unavailable(Exception):
    """The application could not be asked; the reason is for the log only."""


def who(tok):
    """The user the application says ``tok`` belongs to; None if it does not
    know it."""
    url = os.environ.get("AUTH_CHAT_URL")
    if not url:
        raise Unavailable("AUTH_CHAT_URL is not granted")
    try:
        res = wsgate.http_get(url, {"authorization": f"Bearer {tok}"})
    except HttpError as e:
        raise Unavailable(str(e)) from None
    if res.status in (401, 403):
        return None
    if res.status != 200:
        raise Unavailable(f"GET {url}: status {res.status}")
    try:
        user = res.json().get("user")
    except (ValueError, AttributeError) as e:
        raise Unavailable(f"GET {url}: not {{\"user\":...}}: {e}") from None
    user = user.strip() if isinstance(user, str) else ""
    if not user or len(user.encode()) > MAX_USER:
        raise Unavailable(f"GET {url}: no usable user")
    return user


def replay(conn, channel):
    kept = host.state_get(seq_key(channel))
    last = int(kept) if kept and kept.isdigit() else 0
    for seq in range(max(1, last - KEPT + 1), last + 1):
        raw = host.state_get(line_key(channel, seq))
        if raw is None:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("seq") == seq:
            try:
                host.send(conn, Message.text(encode(line)))
            except HostError:
                return


def say(user, channel, message):
    try:
        seq = host.state_increment(seq_key(channel), 1)
    except HostError as e:
        wsgate.log(LogLevel.ERROR, f"cannot number a line in {channel}: {e.value}")
        return
    line = encode({"from": user, "message": message, "channel": channel, "seq": seq})
    try:
        host.state_set(line_key(channel, seq), line.encode())
    except HostError as e:
        wsgate.log(LogLevel.WARN, f"line {seq} of {channel} not kept: {e.value}")
    try:
        host.publish(channel, Message.text(line), None)
    except HostError as e:
        wsgate.log(LogLevel.WARN, f"publish to {channel} failed: {e.value}")


class Listener(wsgate.Listener):
    def on_open(self, conn, req):
        channel = req.param("channel")
        if channel is None:
            return OpenDecision.reject(404, "no channel in the path")
        tok = token(req)
        if tok is None:
            return OpenDecision.reject(401, "sign in first")
        try:
            user = who(tok)
        except Unavailable as e:
            wsgate.log(LogLevel.WARN, f"auth service unavailable: {e}")
            return OpenDecision.reject(503, "try again later")
        if user is None:
            return OpenDecision.reject(401, "sign in first")
        try:
            host.set_attribute(conn, "user", user)
            host.set_attribute(conn, "channel", channel)
        except HostError:
            return OpenDecision.reject(400, "channel name too long")
        replay(conn, channel)
        return OpenDecision.accept()

    def on_message(self, conn, msg):
        text = Message.as_text(msg)
        if text is None:
            return None
        try:
            user = host.get_attribute(conn, "user")
            channel = host.get_attribute(conn, "channel")
        except HostError:
            return None
        if user is not None and channel is not None:
            say(user, channel, text)
        return None
