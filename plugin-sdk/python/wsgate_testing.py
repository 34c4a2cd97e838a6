"""Test wsgate listeners in plain CPython: unit tests against an in-memory
host, integration tests against a real server.

A Python listener normally runs only inside a WebAssembly component that
componentize-py builds (10-15 s) and wsgate serves, which makes every check
of a hook cost a build and a server. ``wsgate.py`` imports modules that
componentize-py generates at build time; importing this module first puts
stand-ins for them in ``sys.modules``, shaped like the generated ones, so
``wsgate`` and an ``app.py`` import in plain Python and their host calls land
in a :class:`FakeHost` that keeps wsgate's rules (typed errors, close codes,
channels, tags, timers, limits)::

    import wsgate_testing  # first: installs the stand-ins
    from wsgate import Message

    Listener = wsgate_testing.load_listener(Path(__file__).parent)

    def test_shouts():
        host = wsgate_testing.FakeHost()
        conn = host.open(Listener, "/ws/shout?name=ann")
        assert conn.texts == ["hello ann"]
        assert conn.send_text("hi") == Message.text("ann: HI")

Not modelled: other plugins, a cluster, send queues filling up
(``QUEUE_FULL``), client message size and rate limits, hook deadlines, the
log rate limit. A hook that raises propagates to the test, so the traceback
points at the bug (the server would log it and close the connection with
1011).

:func:`serve` runs the real thing: a built ``.wasm`` in a ``wsgate``
process on loopback ports, and ``server.connect(path)`` is a WebSocket
client for it. Standard library only, so it runs wherever the
SDK does.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import hashlib
import http.client
import importlib.util
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import types
from abc import abstractmethod
from typing import (Dict, Generic, Iterator, List, NamedTuple, Optional,
                    Protocol, Tuple, TypeVar, Union)

__all__ = [
    "Broadcast", "Close", "Connection", "FakeHost", "HostError", "Limits",
    "Log", "Publish", "ServeError", "Server", "TagSend", "Timer", "WebSocket",
    "WebSocketClosed", "WebSocketRefused", "load_app", "load_listener", "serve",
]


# --- Stand-ins for the generated bindings --------------------------------
#
# Copied in shape from `componentize-py -d wit -w plugin bindings` (0.25.1):
# the same class names, fields and enum values, so code that passes these
# tests sees the same objects inside the component. Keep them in step with
# wit/wsgate.wit; tests/test_testing.py checks the host functions against it.

S = TypeVar("S")
T = TypeVar("T")
E = TypeVar("E")


@dataclasses.dataclass
class Some(Generic[S]):
    value: S


@dataclasses.dataclass
class Ok(Generic[T]):
    value: T


@dataclasses.dataclass(frozen=True)
class Err(Generic[E], Exception):
    """What a failed host call raises; ``value`` is an :class:`Error`."""
    value: E


Result = Union[Ok[T], Err[E]]
HostError = Err


@dataclasses.dataclass
class Message_Text:
    value: str


@dataclasses.dataclass
class Message_Binary:
    value: bytes


Message = Union[Message_Text, Message_Binary]


@dataclasses.dataclass
class Request:
    path: str
    route: str
    params: List[Tuple[str, str]]
    query: List[Tuple[str, str]]
    headers: List[Tuple[str, str]]
    cookies: List[Tuple[str, str]]
    remote_addr: str
    subprotocols: List[str]
    protocol: Optional[str]


@dataclasses.dataclass
class Rejection:
    status: int
    reason: str


@dataclasses.dataclass
class OpenDecision_Accept:
    pass


@dataclasses.dataclass
class OpenDecision_Greet:
    value: Message


@dataclasses.dataclass
class OpenDecision_Reject:
    value: Rejection


OpenDecision = Union[OpenDecision_Accept, OpenDecision_Greet, OpenDecision_Reject]


class Error(enum.Enum):
    UNKNOWN_CONNECTION = 0
    CLOSED = 1
    QUEUE_FULL = 2
    INVALID_ARGUMENT = 3
    LIMIT_REACHED = 4


class LogLevel(enum.Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


class WitWorld(Protocol):
    pass


class ListenerProtocol(Protocol):
    """The generated ``wit_world.exports.Listener``: every hook abstract."""

    @abstractmethod
    def on_open(self, conn: int, req: Request) -> OpenDecision:
        raise NotImplementedError

    @abstractmethod
    def on_message(self, conn: int, msg: Message) -> Optional[Message]:
        raise NotImplementedError

    @abstractmethod
    def on_close(self, conn: int, code: int, reason: str) -> None:
        raise NotImplementedError

    @abstractmethod
    def on_first_open(self, route: str) -> None:
        raise NotImplementedError

    @abstractmethod
    def on_last_close(self, route: str) -> None:
        raise NotImplementedError

    @abstractmethod
    def on_push(self, payload: Message) -> None:
        raise NotImplementedError

    @abstractmethod
    def on_timer(self, id: int) -> None:
        raise NotImplementedError


# The host interface's functions in WIT order, snake-cased as generated.
HOST_FUNCTIONS = (
    "send", "broadcast", "close", "subscribe", "unsubscribe", "publish",
    "channels", "subscribers", "connections", "connection_count",
    "get_attribute", "set_attribute", "tag", "untag", "tagged", "send_to_tag",
    "state_get", "state_set", "set_timer", "cancel_timer", "log",
)

# The FakeHost that host calls go to: the one that last ran a hook (or was
# created last), since the generated functions are module-level.
_active: Optional["FakeHost"] = None


def _host_function(name: str):
    """A module-level host function that forwards to the active FakeHost,
    with the generated function's name and parameters."""
    method = getattr(FakeHost, name)

    def call(*args, **kwargs):
        if _active is None:
            raise RuntimeError(
                f"wsgate.host.{name} called with no FakeHost: create one "
                "(wsgate_testing.FakeHost()) before calling host functions")
        return getattr(_active, name)(*args, **kwargs)

    signature = inspect.signature(method)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    call.__module__ = "wit_world.imports.host"
    call.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return call


def _install_bindings() -> None:
    """Registers the stand-in modules under the generated names, so that
    ``import wsgate`` (and a plugin's own ``from wit_world... import``)
    resolves to them. Idempotent."""
    if getattr(sys.modules.get("componentize_py_types"), "_wsgate_testing", False):
        return

    def module(name, package=False, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m._wsgate_testing = True
        if package:
            m.__path__ = []
        return m

    generated_types = module(
        "wit_world.imports.types", Message_Text=Message_Text,
        Message_Binary=Message_Binary, Message=Message, Request=Request,
        Rejection=Rejection, OpenDecision_Accept=OpenDecision_Accept,
        OpenDecision_Greet=OpenDecision_Greet, OpenDecision_Reject=OpenDecision_Reject,
        OpenDecision=OpenDecision, Error=Error, LogLevel=LogLevel)
    for cls in (Message_Text, Message_Binary, Request, Rejection, OpenDecision_Accept,
                OpenDecision_Greet, OpenDecision_Reject, Error, LogLevel):
        cls.__module__ = generated_types.__name__
    host = module("wit_world.imports.host", types=generated_types,
                  **{name: _host_function(name) for name in HOST_FUNCTIONS})
    imports = module("wit_world.imports", package=True, types=generated_types, host=host)
    listener_module = module("wit_world.exports.listener")
    ListenerProtocol.__name__ = ListenerProtocol.__qualname__ = "Listener"
    ListenerProtocol.__module__ = "wit_world.exports"
    exports = module("wit_world.exports", package=True, Listener=ListenerProtocol,
                     listener=listener_module, types=generated_types)
    world = module("wit_world", package=True, WitWorld=WitWorld, imports=imports,
                   exports=exports)
    for cls in (Some, Ok, Err):
        cls.__module__ = "componentize_py_types"
    runtime_types = module("componentize_py_types", Some=Some, Ok=Ok, Err=Err, Result=Result)
    for m in (runtime_types, world, imports, generated_types, host, exports, listener_module):
        sys.modules[m.__name__] = m


# --- Argument checks ------------------------------------------------------
#
# The real bindings cannot lower a wrong type (a str where a message goes, a
# missing `except_`): the hook traps and the server closes the connection.
# Failing loudly here catches that in a unit test instead of in production.

def _int(value, bits: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{what} {value} is out of range for a u{bits}")
    return value


def _str(value, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _bytes(value, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _optional(value, check, *args):
    return None if value is None else check(value, *args)


def _message(value, what: str):
    if isinstance(value, Message_Text) and isinstance(value.value, str):
        return value
    if isinstance(value, Message_Binary) and isinstance(value.value, (bytes, bytearray)):
        return value
    raise TypeError(f"{what} must be a message (wsgate.Message.text(...) or "
                    f".binary(...)), not {value!r}")


def _size(msg) -> int:
    if isinstance(msg, Message_Text):
        return len(msg.value.encode("utf-8", "surrogatepass"))
    return len(msg.value)


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _sendable_close_code(code: int) -> bool:
    """The codes the server lets a plugin put on the wire (RFC 6455 §7.4, the
    registered 1012-1014 and the application range)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# --- The fake host --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Limits:
    """The server's limits that host calls enforce, with its defaults
    (``[limits]`` in wsgate.toml). Shrink one to test how a listener copes
    with hitting it, e.g. ``FakeHost(limits=Limits(timers_per_plugin=1))``."""

    max_message_size: int = 1 << 20
    max_name_len: int = 256
    attributes_per_connection: int = 64
    attribute_bytes: int = 64 << 10
    channels_per_connection: int = 64
    tags_per_connection: int = 32
    deliveries_per_hook: int = 100_000
    timers_per_plugin: int = 64
    min_timer_ms: int = 10
    state_bytes: int = 16 << 20


# What the host was asked to do, in order, for assertions that care about
# the call rather than who received it.
class Publish(NamedTuple):
    channel: str
    msg: Message
    except_: Optional[int]
    reached: int


class Broadcast(NamedTuple):
    msg: Message
    except_: Optional[int]
    reached: int


class TagSend(NamedTuple):
    tag: str
    msg: Message
    except_: Optional[int]
    reached: int


class Close(NamedTuple):
    conn: int
    code: int
    reason: str


class Log(NamedTuple):
    level: LogLevel
    msg: str


class Timer(NamedTuple):
    id: int
    delay_ms: int
    repeat: bool
    due_ms: int


# What one state entry costs against `state_bytes` beyond its key and value,
# as the server counts it (so a million tiny entries are not free).
_STATE_ENTRY_OVERHEAD = 64


class Connection:
    """One client connection, as a test drives it and sees it.

    ``inbox`` is everything the client would receive, in order: the
    greeting, deliveries from any host call, replies. ``closed`` is the
    ``(code, reason)`` that ``on_close`` was told once the connection ended;
    ``server_close`` the one the plugin closed it with, if it did.
    """

    def __init__(self, host: "FakeHost", conn_id: int, listener, request: Request):
        self.host = host
        self.id = conn_id
        self.listener = listener
        self.request = request
        self.route = request.route
        self.decision = None
        #: The refusal the client saw (status 400-599 and reason), else None.
        self.rejection: Optional[Rejection] = None
        self.inbox: List[Message] = []
        self.attributes: Dict[str, str] = {}
        self.channels: set = set()
        self.tags: set = set()
        self.closing = False
        self.server_close: Optional[Tuple[int, str]] = None
        self.closed: Optional[Tuple[int, str]] = None
        self._opened = False  # on_open accepted: on_close is owed
        self._counted = False  # counted onto its route: must be counted off
        self._ended = False

    def __repr__(self):
        state = ("rejected %d" % self.rejection.status if self.rejection
                 else "closed" if self._ended else "open")
        return f"<Connection {self.id} {self.request.path} {state}>"

    @property
    def accepted(self) -> bool:
        """on_open let the connection through (it may have closed since)."""
        return self._opened and self.rejection is None

    @property
    def status(self) -> int:
        """The handshake's HTTP status as the client saw it: 101 or the refusal's."""
        return self.rejection.status if self.rejection else 101

    @property
    def is_open(self) -> bool:
        return self.accepted and not self._ended and not self.closing

    @property
    def texts(self) -> List[str]:
        """The text messages in the inbox, in order."""
        return [m.value for m in self.inbox if isinstance(m, Message_Text)]

    def json(self) -> list:
        """The text messages in the inbox parsed as JSON, for JSON protocols."""
        return [json.loads(t) for t in self.texts]

    def clear(self) -> None:
        """Forgets what was received, to assert on what comes next."""
        self.inbox.clear()

    def send(self, msg):
        """The client sends ``msg``: runs ``on_message`` and returns its reply
        (also put in the inbox, after what the hook queued, unless the
        connection was closed meanwhile)."""
        self._check_usable()
        msg = _message(msg, "msg")
        if self.closing:
            return None  # the server discards data after it started closing
        reply = self.host._call(self.listener, "on_message", self.id, msg)
        if reply is not None:
            reply = _message(reply, "on_message's reply")
            if _size(reply) > self.host.limits.max_message_size:
                self.host._server_closes(self, 1011, "internal error")
            elif not self.closing:
                self.inbox.append(reply)
        self.host._settle()
        return reply

    def send_text(self, text: str):
        return self.send(Message_Text(text))

    def send_binary(self, data: bytes):
        return self.send(Message_Binary(bytes(data)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """The client closes (1006: the peer vanished): ``on_close`` with that
        code, then ``on_last_close`` if it was the route's last connection."""
        self._check_usable()
        self.host._end(self, (_int(code, 16, "code"), _str(reason, "reason")))
        self.host._settle()

    def _check_usable(self):
        if self.rejection is not None:
            raise RuntimeError(f"connection {self.id} was refused: {self.rejection}")
        if self._ended:
            raise RuntimeError(f"connection {self.id} is closed ({self.closed})")


class FakeHost:
    """wsgate's host for one plugin, in memory: what the listener's host calls
    reach, and the driver of its hooks.

    The host calls (``send``, ``publish``, ``tag``, ``set_timer``, ...) are
    methods with the WIT's names and parameters; ``wsgate.host.*`` forwards
    to the FakeHost that last ran a hook or was created last. Tests can call
    them too, e.g. ``host.subscribers("lobby")``.

    A listener is given to :meth:`open` and :meth:`push` as a class or an
    instance. A class gets a new instance for every hook call, as the
    server's pool of instances may serve any event with any of them, so a
    listener that keeps state on ``self`` fails here as it would there.

    Closes the plugin starts with ``close`` finish once the hook that asked
    returns: ``on_close`` with the plugin's code and reason, then
    ``on_last_close`` for the route's last connection.
    """

    def __init__(self, limits: Limits = Limits()):
        global _active
        self.limits = limits
        #: Virtual milliseconds: timers fire only by :meth:`advance` and :meth:`fire_timers`.
        self.now_ms = 0
        self.publishes: List[Publish] = []
        self.broadcasts: List[Broadcast] = []
        self.tag_sends: List[TagSend] = []
        self.closes: List[Close] = []
        self.logs: List[Log] = []
        self.state: Dict[str, bytes] = {}
        self._state_bytes = 0
        self._next_id = 1
        self._next_timer = 1
        self._all: Dict[int, Connection] = {}
        self._conns: Dict[int, Connection] = {}  # registered: open or closing
        self._channels: Dict[str, set] = {}
        self._tags: Dict[str, set] = {}
        self._timers: Dict[int, list] = {}  # id -> [delay_ms, repeat, due_ms]
        self._routes: Dict[str, int] = {}  # open connections per route pattern
        self._latest_listener = None  # where timers fire: the "newest version"
        self._depth = 0  # hooks running (0: the test is in control)
        self._budget: Optional[int] = None
        _active = self

    # -- driving the listener ----------------------------------------------

    def open(self, listener, path: Optional[str] = None, *, route: Optional[str] = None,
             params=None, query=None, headers=None, cookies=None,
             remote_addr: str = "127.0.0.1:50000", subprotocols=(),
             protocol: Optional[str] = None) -> Connection:
        """A client connects, as the server handles it: the connection is
        registered (host calls from ``on_open`` find it), ``on_first_open``
        runs for the route's first connection, a ``channel`` route parameter
        subscribes it, then ``on_open`` decides. A refused connection is
        returned with ``rejection`` set and nothing left registered.

        ``path`` may carry a query (``/ws/chat/lobby?username=ann``). Given
        a ``route`` with ``{name}`` parameters, they are read from ``path``,
        or the path is built from ``params``. ``query``, ``headers``,
        ``params`` and ``cookies`` take a dict or a list of pairs; cookies
        default to those in a ``cookie`` header.
        """
        request = _build_request(path, route, params, query, headers, cookies,
                                 remote_addr, list(subprotocols), protocol)
        conn = Connection(self, self._next_id, listener, request)
        self._next_id += 1
        self._latest_listener = listener
        self._all[conn.id] = conn
        self._conns[conn.id] = conn
        try:
            self._enter_route(conn)
            channel = _lookup(request.params, "channel")
            if channel is not None and 0 < _utf8_len(channel) <= self.limits.max_name_len:
                self._join(self._channels, conn.channels, conn, channel)
            decision = _decision(self._call(listener, "on_open", conn.id, request))
        except BaseException:
            self._end(conn, None)
            raise
        conn.decision = decision
        if isinstance(decision, OpenDecision_Reject):
            status, reason = decision.value.status, decision.value.reason
            if not 400 <= status <= 599:  # a plugin bug; the server answers 500
                status, reason = 500, "connection refused"
            conn.rejection = Rejection(status, reason)
            conn.inbox.clear()  # never upgraded: nothing reaches the client
            self._end(conn, None)
        elif isinstance(decision, OpenDecision_Greet):
            conn._opened = True
            if _size(decision.value) > self.limits.max_message_size:
                conn.rejection = Rejection(500, "the listener failed to open the connection")
                conn.inbox.clear()
                self._end(conn, (1011, "internal error"))
            else:
                conn.inbox.insert(0, decision.value)  # the greeting goes first
        else:
            conn._opened = True
        self._settle()
        return conn

    def push(self, listener, payload) -> None:
        """A push from outside (the server's publish API): runs ``on_push``. A
        str is sent as text, bytes as binary."""
        if isinstance(payload, str):
            payload = Message_Text(payload)
        elif isinstance(payload, (bytes, bytearray)):
            payload = Message_Binary(bytes(payload))
        self._latest_listener = listener
        self._call(listener, "on_push", _message(payload, "payload"))
        self._settle()

    def fire_timer(self, id: int, listener=None) -> None:
        """Fires one pending timer now, into ``listener``: by default the one
        last given to :meth:`open` or :meth:`push`, as the server fires
        timers into the newest version of a plugin."""
        if id not in self._timers:
            raise KeyError(f"no pending timer {id}")
        self._fire(id, listener)
        self._settle()

    def fire_timers(self, listener=None) -> List[int]:
        """Fires every pending timer once, in the order they are due, without
        moving the clock; returns their ids. Timers set meanwhile wait."""
        fired = []
        for id in sorted(self._timers, key=lambda i: (self._timers[i][2], i)):
            if id in self._timers:  # not cancelled by an earlier one
                self._fire(id, listener)
                fired.append(id)
        self._settle()
        return fired

    def advance(self, ms: int, listener=None) -> List[int]:
        """Moves the clock on by ``ms``, firing every timer that comes due, in
        order (a repeating one each time it does); returns the ids fired."""
        end = self.now_ms + ms
        fired = []
        while True:
            due = [i for i, t in self._timers.items() if t[2] <= end]
            if not due:
                break
            id = min(due, key=lambda i: (self._timers[i][2], i))
            self.now_ms = max(self.now_ms, self._timers[id][2])
            self._fire(id, listener)
            fired.append(id)
            self._settle()
        self.now_ms = end
        return fired

    @property
    def timers(self) -> Dict[int, Timer]:
        """Pending timers by id."""
        return {i: Timer(i, *t) for i, t in self._timers.items()}

    def connection(self, id: int) -> Connection:
        """The handle of a connection this host opened, by id."""
        return self._all[id]

    # -- the host calls (interface host) -------------------------------------

    def send(self, conn, msg) -> None:
        conn = _int(conn, 64, "conn")
        msg = _message(msg, "msg")
        target = self._conns.get(conn)
        if target is None:
            raise Err(Error.UNKNOWN_CONNECTION)
        self._spend_check(msg)
        if target.closing:
            raise Err(Error.CLOSED)
        target.inbox.append(msg)
        self._spend(1)

    def broadcast(self, msg, except_) -> int:
        msg = _message(msg, "msg")
        except_ = _optional(except_, _int, 64, "except_")
        try:
            reached = self._deliver(list(self._conns), msg, except_)
        except Err:
            reached = 0  # broadcast has no error to return: it reaches nobody
        self.broadcasts.append(Broadcast(msg, except_, reached))
        return reached

    def close(self, conn, code, reason) -> None:
        conn = _int(conn, 64, "conn")
        code = _int(code, 16, "code")
        reason = _str(reason, "reason")
        if not _sendable_close_code(code) or _utf8_len(reason) > 123:
            raise Err(Error.INVALID_ARGUMENT)
        target = self._conns.get(conn)
        if target is None:
            raise Err(Error.UNKNOWN_CONNECTION)
        if target.closing:
            raise Err(Error.CLOSED)
        self._server_closes(target, code, reason)
        if self._depth == 0:
            self._settle()

    def subscribe(self, conn, channel) -> None:
        conn = _int(conn, 64, "conn")
        channel = _str(channel, "channel")
        self._join_checked(self._channels, "channels", self.limits.channels_per_connection,
                           conn, channel)

    def unsubscribe(self, conn, channel) -> None:
        target = self._registered(_int(conn, 64, "conn"))
        self._leave(self._channels, target.channels, target, _str(channel, "channel"))

    def publish(self, channel, msg, except_) -> int:
        channel = _str(channel, "channel")
        msg = _message(msg, "msg")
        except_ = _optional(except_, _int, 64, "except_")
        self._check_name(channel)
        reached = self._deliver(sorted(self._channels.get(channel, ())), msg, except_)
        self.publishes.append(Publish(channel, msg, except_, reached))
        return reached

    def channels(self) -> List[str]:
        return sorted(self._channels)

    def subscribers(self, channel) -> List[int]:
        return sorted(self._channels.get(_str(channel, "channel"), ()))

    def connections(self) -> List[int]:
        return sorted(self._conns)

    def connection_count(self) -> int:
        return len(self._conns)

    def get_attribute(self, conn, key) -> Optional[str]:
        target = self._registered(_int(conn, 64, "conn"))
        return target.attributes.get(_str(key, "key"))

    def set_attribute(self, conn, key, value) -> None:
        conn = _int(conn, 64, "conn")
        key = _str(key, "key")
        value = _optional(value, _str, "value")
        self._check_name(key)
        target = self._registered(conn)
        attrs = target.attributes
        if value is None:
            attrs.pop(key, None)
            return
        cap = self.limits.attribute_bytes
        if _utf8_len(value) > cap:
            raise Err(Error.INVALID_ARGUMENT)
        if len(attrs) >= self.limits.attributes_per_connection and key not in attrs:
            raise Err(Error.LIMIT_REACHED)
        held = sum(_utf8_len(k) + _utf8_len(v) for k, v in attrs.items() if k != key)
        if held + _utf8_len(key) + _utf8_len(value) > cap:
            raise Err(Error.LIMIT_REACHED)
        attrs[key] = value

    def tag(self, conn, tag) -> None:
        conn = _int(conn, 64, "conn")
        tag = _str(tag, "tag")
        self._join_checked(self._tags, "tags", self.limits.tags_per_connection, conn, tag)

    def untag(self, conn, tag) -> None:
        target = self._registered(_int(conn, 64, "conn"))
        self._leave(self._tags, target.tags, target, _str(tag, "tag"))

    def tagged(self, tag) -> List[int]:
        return sorted(self._tags.get(_str(tag, "tag"), ()))

    def send_to_tag(self, tag, msg, except_) -> int:
        tag = _str(tag, "tag")
        msg = _message(msg, "msg")
        except_ = _optional(except_, _int, 64, "except_")
        self._check_name(tag)
        reached = self._deliver(sorted(self._tags.get(tag, ())), msg, except_)
        self.tag_sends.append(TagSend(tag, msg, except_, reached))
        return reached

    def state_get(self, key) -> Optional[bytes]:
        return self.state.get(_str(key, "key"))

    def state_set(self, key, value) -> None:
        key = _str(key, "key")
        value = _optional(value, _bytes, "value")
        self._check_name(key)

        def cost(v):
            return 0 if v is None else _utf8_len(key) + len(v) + _STATE_ENTRY_OVERHEAD

        used = self._state_bytes - cost(self.state.get(key)) + cost(value)
        if used > self.limits.state_bytes:
            raise Err(Error.LIMIT_REACHED)
        self._state_bytes = used
        if value is None:
            self.state.pop(key, None)
        else:
            self.state[key] = value

    def set_timer(self, delay_ms, repeat) -> int:
        delay_ms = _int(delay_ms, 32, "delay_ms")
        if not isinstance(repeat, bool):
            raise TypeError(f"repeat must be a bool, not {type(repeat).__name__}")
        if delay_ms < self.limits.min_timer_ms:
            raise Err(Error.INVALID_ARGUMENT)
        if len(self._timers) >= self.limits.timers_per_plugin:
            raise Err(Error.LIMIT_REACHED)
        id = self._next_timer
        self._next_timer += 1
        self._timers[id] = [delay_ms, repeat, self.now_ms + delay_ms]
        return id

    def cancel_timer(self, id) -> bool:
        return self._timers.pop(_int(id, 64, "id"), None) is not None

    def log(self, level, msg) -> None:
        if not isinstance(level, LogLevel):
            raise TypeError(f"level must be a wsgate.LogLevel, not {level!r}")
        self.logs.append(Log(level, _str(msg, "msg")))

    # -- internals -----------------------------------------------------------

    def _call(self, listener, hook: str, *args):
        """Runs one hook with this host active and a fresh delivery budget."""
        global _active
        if isinstance(listener, types.ModuleType):
            listener = listener.Listener
        instance = listener() if isinstance(listener, type) else listener
        _active = self
        self._depth += 1
        outer_budget, self._budget = self._budget, self.limits.deliveries_per_hook
        try:
            return getattr(instance, hook)(*args)
        finally:
            self._depth -= 1
            self._budget = outer_budget

    def _registered(self, conn: int) -> Connection:
        target = self._conns.get(conn)
        if target is None:
            raise Err(Error.UNKNOWN_CONNECTION)
        return target

    def _check_name(self, name: str) -> None:
        if not name or _utf8_len(name) > self.limits.max_name_len:
            raise Err(Error.INVALID_ARGUMENT)

    def _spend_check(self, msg) -> None:
        """What the server checks before queueing: the size, then the budget."""
        if _size(msg) > self.limits.max_message_size:
            raise Err(Error.INVALID_ARGUMENT)
        if self._budget is not None and self._budget <= 0:
            raise Err(Error.LIMIT_REACHED)

    def _spend(self, n: int) -> None:
        if self._budget is not None:
            self._budget -= n

    def _deliver(self, ids, msg, except_) -> int:
        self._spend_check(msg)
        reached = 0
        for id in ids:
            target = self._conns.get(id)
            if target is not None and id != except_ and not target.closing:
                target.inbox.append(msg)
                reached += 1
        self._spend(reached)
        return reached

    def _join_checked(self, groups, kind, cap, conn, name) -> None:
        self._check_name(name)
        target = self._registered(conn)
        if target.closing:
            raise Err(Error.CLOSED)
        held = getattr(target, kind)
        if name not in held and len(held) >= cap:
            raise Err(Error.LIMIT_REACHED)
        self._join(groups, held, target, name)

    @staticmethod
    def _join(groups, held, conn, name) -> None:
        held.add(name)
        groups.setdefault(name, set()).add(conn.id)

    @staticmethod
    def _leave(groups, held, conn, name) -> None:
        held.discard(name)
        members = groups.get(name)
        if members is not None:
            members.discard(conn.id)
            if not members:
                del groups[name]

    def _server_closes(self, conn: Connection, code: int, reason: str) -> None:
        conn.closing = True
        conn.server_close = (code, reason)
        self.closes.append(Close(conn.id, code, reason))

    def _settle(self) -> None:
        """Finishes the closes the plugin started, once no hook is running:
        the server reports them to ``on_close`` after the close handshake."""
        if self._depth:
            return
        while True:
            pending = [c for c in self._conns.values() if c.server_close and not c._ended]
            if not pending:
                return
            for conn in pending:
                if not conn._ended:
                    self._end(conn, conn.server_close)

    def _enter_route(self, conn: Connection) -> None:
        count = self._routes.get(conn.route, 0)
        self._routes[conn.route] = count + 1
        conn._counted = True
        if count == 0:
            self._call(conn.listener, "on_first_open", conn.route)

    def _end(self, conn: Connection, close: Optional[Tuple[int, str]]) -> None:
        """The close half: ``on_close`` if on_open accepted (with the plugin's
        code if it closed first), unregistration, ``on_last_close`` for the
        route's last. ``close`` None: refused before it opened."""
        if conn._ended:
            return
        conn._ended = True
        conn.closing = True
        try:
            if conn._opened:
                code, reason = conn.server_close or close or (1006, "")
                conn.closed = (code, reason)
                self._call(conn.listener, "on_close", conn.id, code, reason)
        finally:
            self._conns.pop(conn.id, None)
            for channel in list(conn.channels):
                self._leave(self._channels, conn.channels, conn, channel)
            for tag in list(conn.tags):
                self._leave(self._tags, conn.tags, conn, tag)
            if conn._counted:
                conn._counted = False
                left = self._routes.get(conn.route, 1) - 1
                if left:
                    self._routes[conn.route] = left
                else:
                    self._routes.pop(conn.route, None)
                    self._call(conn.listener, "on_last_close", conn.route)

    def _fire(self, id: int, listener) -> None:
        listener = listener if listener is not None else self._latest_listener
        if listener is None:
            raise RuntimeError("no listener to fire the timer into: pass listener=")
        timer = self._timers[id]
        delay, repeat, _ = timer
        if repeat:
            timer[2] += max(delay, 1)  # a zero delay (min_timer_ms=0) must not loop forever
        else:
            del self._timers[id]
        self._call(listener, "on_timer", id)


def _lookup(pairs, key):
    return next((v for k, v in pairs if k == key), None)


def _pairs(value, what: str) -> List[Tuple[str, str]]:
    if value is None:
        return []
    items = value.items() if isinstance(value, dict) else value
    pairs = []
    for item in items:
        k, v = item
        pairs.append((_str(k, f"{what} name"), _str(v, f"{what} value")))
    return pairs


_PARAM = re.compile(r"\{(\*?)([^}]+)\}")


def _build_request(path, route, params, query, headers, cookies, remote_addr,
                   subprotocols, protocol) -> Request:
    """The request the server would build for a handshake to ``path``."""
    from urllib.parse import parse_qsl

    path, _, query_string = (path or "").partition("?")
    params = _pairs(params, "param")
    if route is not None and path:
        matched = _match_route(route, path)
        if matched is None:
            raise ValueError(f"path {path!r} does not match route {route!r}")
        params = params or matched
    elif route is not None:
        path = _fill_route(route, dict(params))
    elif not path:
        path = "/ws/test"
    route = route if route is not None else path
    query_pairs = parse_qsl(query_string, keep_blank_values=True) + _pairs(query, "query")
    header_pairs = [(k.lower(), v) for k, v in _pairs(headers, "header")]
    if cookies is None:
        cookie_pairs = []
        for name, value in header_pairs:
            if name == "cookie":
                for piece in value.split(";"):
                    k, eq, v = piece.partition("=")
                    if eq and k.strip():
                        cookie_pairs.append((k.strip(), v.strip().strip('"')))
    else:
        cookie_pairs = _pairs(cookies, "cookie")
    return Request(path=path, route=route, params=params, query=query_pairs,
                   headers=header_pairs, cookies=cookie_pairs, remote_addr=remote_addr,
                   subprotocols=subprotocols, protocol=protocol)


def _match_route(route: str, path: str) -> Optional[List[Tuple[str, str]]]:
    """Route parameters as the server's router reads them: ``{name}`` is one
    segment, ``{*name}`` the rest of the path."""
    pattern, pos = "", 0
    for m in _PARAM.finditer(route):
        pattern += re.escape(route[pos:m.start()]) + ("(.+)" if m.group(1) else "([^/]+)")
        pos = m.end()
    pattern += re.escape(route[pos:])
    found = re.fullmatch(pattern, path)
    if found is None:
        return None
    names = [m.group(2) for m in _PARAM.finditer(route)]
    return list(zip(names, found.groups()))


def _fill_route(route: str, params: Dict[str, str]) -> str:
    def value(m):
        if m.group(2) not in params:
            raise ValueError(f"route {route!r} needs params[{m.group(2)!r}] (or a path)")
        return params[m.group(2)]

    return _PARAM.sub(value, route)


def _decision(decision):
    """on_open's result, as the bindings would lower it."""
    if isinstance(decision, OpenDecision_Accept):
        return decision
    if isinstance(decision, OpenDecision_Greet):
        _message(decision.value, "the greeting")
        return decision
    if isinstance(decision, OpenDecision_Reject) and isinstance(decision.value, Rejection):
        _int(decision.value.status, 16, "rejection status")
        _str(decision.value.reason, "rejection reason")
        return decision
    raise TypeError("on_open must return wsgate.OpenDecision.accept(), .greet(...) or "
                    f".reject(...), not {decision!r}")


# Last, since the host functions take their signatures from FakeHost.
_install_bindings()


# --- Loading a plugin's app module ----------------------------------------

_apps: Dict[str, types.ModuleType] = {}


def load_app(path) -> types.ModuleType:
    """Imports a plugin's ``app.py`` (``path`` is its folder or the file)
    with the stand-ins in place, under a name of its own so several plugins'
    ``app`` modules can be tested in one session. The folder goes on
    ``sys.path``, as componentize-py's ``-p`` puts it, for the app's own
    modules."""
    path = os.path.abspath(os.fspath(path))
    file = path if path.endswith(".py") else os.path.join(path, "app.py")
    if file in _apps:
        return _apps[file]
    folder = os.path.dirname(file)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    base = "wsgate_app_" + re.sub(r"\W", "_", os.path.basename(folder))
    name, n = base, 1
    while name in sys.modules:
        n += 1
        name = f"{base}_{n}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or not os.path.isfile(file):
        raise FileNotFoundError(f"no app.py at {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _apps[file] = module
    return module


def load_listener(path) -> type:
    """The ``Listener`` class of a plugin's ``app.py`` (see :func:`load_app`)."""
    module = load_app(path)
    listener = getattr(module, "Listener", None)
    if not isinstance(listener, type):
        raise AttributeError(f"{module.__file__} has no class Listener "
                             "(componentize-py needs one, subclassing wsgate.Listener)")
    return listener


# --- A real server ----------------------------------------------------------

class ServeError(RuntimeError):
    """The server did not start, or the plugin did not load; the message
    carries the server's log."""


_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _wsgate_binary() -> str:
    configured = os.environ.get("WSGATE_BIN")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise FileNotFoundError(f"WSGATE_BIN={configured} is not an executable file")
        return configured
    found = shutil.which("wsgate")
    if found:
        return found
    raise FileNotFoundError(
        "no wsgate binary: set WSGATE_BIN (e.g. to target/release/wsgate after "
        "`cargo build --release -p wsgate`) or put wsgate on PATH")


def _free_ports(n: int) -> List[int]:
    """Ports the kernel picks, held together so they differ."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _http_get(port: int, path: str, headers=None) -> Tuple[Optional[int], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)
    finally:
        conn.close()


class WebSocketRefused(Exception):
    """The server answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, head: str):
        super().__init__(f"the upgrade was refused: {head.splitlines()[0] if head else status}")
        self.status = status


class WebSocketClosed(Exception):
    """The server closed the connection; ``code`` and ``reason`` from its close frame."""

    def __init__(self, code: Optional[int], reason: str):
        super().__init__(f"closed by the server: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class WebSocket:
    """A blocking WebSocket client for integration tests (see
    :meth:`Server.connect`): RFC 6455 without extensions, enough to talk to
    a listener. The standard library has no client, and a test should not
    need a package just for this.

    ``recv`` returns ``str`` for a text message and ``bytes`` for a binary
    one, answers pings on the way, and raises :class:`WebSocketClosed` when
    the server closes.
    """

    _TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, headers: Optional[Dict[str, str]] = None, timeout: float = 10.0):
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"{url}: only ws:// URLs")
        self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self._buf = b""
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._sock.sendall((
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        status = int(lines[0].split()[1])
        if status != 101:
            self._sock.close()
            raise WebSocketRefused(status, text)
        fields = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        expected = base64.b64encode(hashlib.sha1((key + self._GUID).encode()).digest()).decode()
        if fields.get("sec-websocket-accept") != expected:
            raise ConnectionError("the server's Sec-WebSocket-Accept is wrong")

    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError, WebSocketClosed):
            self.close()
        self._sock.close()

    def send_text(self, text: str) -> None:
        self._send(self._TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self._send(self._BINARY, bytes(data))

    def recv(self) -> Union[str, bytes]:
        """The next message, reassembled from its fragments."""
        kind, parts = None, []
        while True:
            fin, opcode, payload = self._frame()
            if opcode == self._PING:
                self._send(self._PONG, payload)
            elif opcode == self._PONG:
                continue
            elif opcode == self._CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                with contextlib.suppress(OSError):
                    self._send(self._CLOSE, payload[:2])
                self._sock.close()
                raise WebSocketClosed(code, payload[2:].decode("utf-8", "replace"))
            else:
                kind = kind if opcode == self._CONTINUATION else opcode
                parts.append(payload)
                if fin:
                    data = b"".join(parts)
                    return data.decode() if kind == self._TEXT else data

    def close(self, code: int = 1000, reason: str = "") -> Optional[int]:
        """The close handshake: ours, then the server's; returns its code."""
        self._send(self._CLOSE, struct.pack("!H", code) + reason.encode())
        try:
            while True:
                self.recv()
        except WebSocketClosed as closed:
            return closed.code
        except (ConnectionError, OSError):
            return None

    def _send(self, opcode: int, payload: bytes) -> None:
        # One final frame, masked as a client must.
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        self._sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _frame(self) -> Tuple[bool, int, bytes]:
        first, second = self._take(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        if second & 0x80:
            raise ConnectionError("the server masked a frame")
        return bool(first & 0x80), first & 0x0F, self._take(n)

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the socket")
        self._buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class Server:
    """A running ``wsgate`` serving one plugin (see :func:`serve`)."""

    def __init__(self, process, port, admin_port, admin_token, plugin, plugin_dir, log_path):
        self.process = process
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.admin_port = admin_port
        self.admin_token = admin_token
        self.plugin = plugin
        self.plugin_dir = plugin_dir
        self._log_path = log_path
        self._final_log: Optional[str] = None

    def ws_url(self, path: str) -> str:
        return self.url + path

    def connect(self, path: str, headers: Optional[Dict[str, str]] = None) -> WebSocket:
        """A :class:`WebSocket` client connected to ``path`` (with its query)."""
        return WebSocket(self.ws_url(path), headers)

    def logs(self) -> str:
        """Everything the server has logged so far."""
        if self._final_log is not None:
            return self._final_log
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def admin_get(self, path: str) -> Tuple[Optional[int], str]:
        """GET on the admin API with the token: status (None if unreachable) and body."""
        return _http_get(self.admin_port, path, {"Authorization": f"Bearer {self.admin_token}"})

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServeError(f"wsgate exited with status {code} before it was ready; "
                                 f"its log:\n{self.logs()}")
            if _http_get(self.port, "/readyz")[0] == 200:
                break
            if time.monotonic() > deadline:
                raise ServeError(f"wsgate was not ready (/readyz) within {timeout:g} s; "
                                 f"its log:\n{self.logs()}")
            time.sleep(0.05)
        # Ready means every plugin loaded or failed: say which.
        status, body = self.admin_get("/admin/info")
        if status != 200:
            return  # no admin API (--no-admin among the args): nothing to ask
        plugins = json.loads(body).get("plugins", [])
        plugin = next((p for p in plugins if p.get("name") == self.plugin), None)
        if plugin is None or plugin.get("status") != "loaded":
            why = plugin.get("error") or plugin.get("status") if plugin else "not found"
            raise ServeError(f"plugin {self.plugin} did not load: {why}; "
                             f"the server's log:\n{self.logs()}")

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._final_log = self.logs()


@contextlib.contextmanager
def serve(wasm_path, sidecar=None, *, args=(), env=None, timeout: float = 120.0) -> Iterator[Server]:
    """Runs a built plugin in a real ``wsgate`` for the ``with`` block.

    The plugin (and its sidecar: by default ``NAME.toml`` beside the
    ``.wasm``, if there is one; ``False`` for none) is copied into a
    temporary plugin directory, so the test never touches a live one, and
    served on free loopback ports with ``--no-watch`` and a random admin
    token. The binary is ``$WSGATE_BIN``, else ``wsgate`` on PATH.

    Returns once ``/readyz`` answers 200 and the plugin has loaded, which
    for a Python plugin includes its first compile (seconds, more in a
    debug build: hence the generous ``timeout``). The server's settings
    come only from here: inherited ``WSGATE_*`` variables are dropped
    (a stray ``WSGATE_LIMITS__...`` would change what is tested) and
    no ``wsgate.toml`` is read; pass flags in ``args`` and variables in
    ``env``.
    """
    binary = _wsgate_binary()
    wasm = os.path.abspath(os.fspath(wasm_path))
    name = os.path.basename(wasm)[:-len(".wasm")] if wasm.endswith(".wasm") else ""
    if not _PLUGIN_NAME.fullmatch(name):
        raise ValueError(f"{wasm}: a plugin is NAME.wasm, NAME of letters, digits, - and _")
    if not os.path.isfile(wasm):
        raise FileNotFoundError(f"no plugin at {wasm}")
    if sidecar is None:
        beside = wasm[:-len(".wasm")] + ".toml"
        sidecar = beside if os.path.isfile(beside) else None
    workdir = tempfile.mkdtemp(prefix="wsgate-serve-")
    try:
        plugins = os.path.join(workdir, "plugins")
        os.mkdir(plugins)
        shutil.copyfile(wasm, os.path.join(plugins, name + ".wasm"))
        if sidecar:
            shutil.copyfile(os.fspath(sidecar), os.path.join(plugins, name + ".toml"))
        port, admin_port = _free_ports(2)
        token = secrets.token_hex(16)
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
        child_env["WSGATE_ADMIN__TOKEN"] = token
        child_env.update(env or {})
        log_path = os.path.join(workdir, "wsgate.log")
        command = [binary, "--listen", f"127.0.0.1:{port}",
                   "--admin-listen", f"127.0.0.1:{admin_port}",
                   "--plugins", plugins, "--no-watch", *args]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=workdir, env=child_env,
                                       stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT)
        server = Server(process, port, admin_port, token, name, plugins, log_path)
        try:
            server._wait_ready(timeout)
            yield server
        finally:
            server._stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
