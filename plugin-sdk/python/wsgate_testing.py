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

Channel history follows the server's rules when the host is given the
sidecar's ``[history]`` table (``FakeHost(history=HistoryConfig(...))`` or
``HistoryConfig.from_sidecar(path)``): sizes, TTLs on the virtual clock,
epochs (:meth:`FakeHost.new_epoch` plays a lost history), ``recovered``.

Bursts (WIT 0.1.3): ``conn.send_burst([...])`` sends messages that arrive
together, and does what the server does with them: ``on_messages`` calls
(every ``wsgate.Listener`` has it), each with the messages the last did not
handle, writing to the inbox what the server writes, in its order; a burst
of one, or the rest after a call that handled only its first message, gets
``on_message`` per message. ``conn.on_messages([...])`` is one such call.

Not modelled: other plugins, a cluster (the ``node_*`` calls answer as
their cluster-wide twins), send queues filling up
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
import collections
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
    "Broadcast", "Close", "Connection", "FakeHost", "HistoryConfig", "HostError",
    "HttpFailure", "HttpReply", "HttpRequest", "Limits", "Log", "Publish",
    "ServeError", "Server",
    "TagSend", "Timer", "Upstream", "WebSocket", "WebSocketClosed",
    "WebSocketRefused", "load_app", "load_listener", "serve",
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


class StateError(enum.Enum):
    LIMIT_REACHED = 0
    INVALID_ARGUMENT = 1
    NOT_A_NUMBER = 2
    UNAVAILABLE = 3


class UpstreamError(enum.Enum):
    INVALID_URL = 0
    DENIED = 1
    LIMIT_REACHED = 2
    UNKNOWN_UPSTREAM = 3
    CLOSED = 4
    QUEUE_FULL = 5
    INVALID_ARGUMENT = 6


@dataclasses.dataclass
class Position:
    epoch: str
    offset: int


@dataclasses.dataclass
class PositionedText:
    before: str
    after: str


@dataclasses.dataclass
class Publication_Plain:
    value: Message


@dataclasses.dataclass
class Publication_Positioned:
    value: PositionedText


Publication = Union[Publication_Plain, Publication_Positioned]


@dataclasses.dataclass
class Published:
    delivered: int
    position: Position


@dataclasses.dataclass
class HistoryEntry:
    position: Position
    msg: Message


@dataclasses.dataclass
class HistoryPage:
    entries: List[HistoryEntry]
    latest: Position
    recovered: bool


class HistoryError(enum.Enum):
    NOT_RECORDED = 0
    INVALID_ARGUMENT = 1
    LIMIT_REACHED = 2
    UNAVAILABLE = 3


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


class UpstreamListenerProtocol(Protocol):
    """The generated ``wit_world.exports.UpstreamListener``."""

    @abstractmethod
    def on_upstream_open(self, id: int) -> None:
        raise NotImplementedError

    @abstractmethod
    def on_upstream_message(self, id: int, msg: Message) -> None:
        raise NotImplementedError

    @abstractmethod
    def on_upstream_close(self, id: int, code: int, reason: str) -> None:
        raise NotImplementedError


class ErrorListenerProtocol(Protocol):
    """The generated ``wit_world.exports.ErrorListener``."""

    @abstractmethod
    def on_error(self, conn: int, detail: str) -> None:
        raise NotImplementedError


class BatchListenerProtocol(Protocol):
    """The generated ``wit_world.exports.BatchListener``."""

    @abstractmethod
    def on_messages(self, conn: int, msgs: List[Message]) -> List[Optional[Message]]:
        raise NotImplementedError


# The host interface's functions in WIT order, snake-cased as generated.
HOST_FUNCTIONS = (
    "send", "broadcast", "close", "subscribe", "unsubscribe", "publish",
    "channels", "subscribers", "connections", "connection_count",
    "node_channels", "node_subscribers", "node_tagged", "node_connection_count",
    "publish_recorded", "history",
    "get_attribute", "set_attribute", "tag", "untag", "tagged",
    "send_to_tag",
    "state_get", "state_set", "state_increment", "state_compare_and_swap",
    "state_set_expiring", "state_keys", "upstream_connect", "upstream_send",
    "upstream_close", "upstreams", "set_timer", "cancel_timer", "log",
)

# The FakeHost that host calls go to: the one that last ran a hook (or was
# created last), since the generated functions are module-level.
_active: Optional["FakeHost"] = None


# --- Stand-ins for wasi:http and wasi:io ----------------------------------
#
# What ``wsgate.http_request`` calls, shaped like componentize-py's
# bindings of the plugin-http world (wit/deps/http.wit, io.wit), with the
# rules that make a real component trap or fail: a resource used after it
# was dropped or handed over, a parent finished while its child stream
# lives, a body that disagrees with its content-length, forbidden headers.
# A trap is a RuntimeError here. Requests are answered by the active
# FakeHost (see FakeHost.http), in memory: no network.

class _Resource:
    """A WIT resource handle: usable until dropped (``__exit__``) or moved
    into a call that takes ownership."""

    _gone: Optional[str] = None
    _children: int = 0

    def _live(self):
        if self._gone:
            raise RuntimeError(f"trap: {type(self).__name__} used after it was {self._gone}")
        return self

    def _take(self, how: str = "handed over"):
        self._live()
        self._gone = how
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._live()
        if self._children:
            raise RuntimeError(f"trap: {type(self).__name__} dropped while its child resource lives")
        self._gone = "dropped"
        self._on_drop()
        return None

    def _on_drop(self):
        pass


class _Child(_Resource):
    """A child resource: must be dropped before its parent."""

    def __init__(self, parent: _Resource):
        self._parent = parent
        parent._children += 1

    def _on_drop(self):
        self._parent._children -= 1


class Pollable(_Resource):
    """The fake's answers are in memory: every pollable is ready."""

    def ready(self) -> bool:
        self._live()
        return True

    def block(self) -> None:
        self._live()


class IoError(_Resource):
    def __init__(self, debug: str, code=None):
        self._debug = debug
        self._code = code

    def to_debug_string(self) -> str:
        return self._live()._debug


@dataclasses.dataclass
class StreamError_LastOperationFailed:
    value: IoError


@dataclasses.dataclass
class StreamError_Closed:
    pass


_MAX_BLOCKING_WRITE = 4096


class InputStream(_Child):
    def __init__(self, parent, data: bytes):
        super().__init__(parent)
        self._data = data

    def read(self, len: int) -> bytes:
        self._live()
        if not self._data:
            raise Err(StreamError_Closed())
        out, self._data = self._data[:len], self._data[len:]
        return out

    blocking_read = read

    def subscribe(self) -> Pollable:
        self._live()
        return Pollable()


class OutputStream(_Child):
    def __init__(self, parent):
        super().__init__(parent)
        self._written = bytearray()

    def check_write(self) -> int:
        self._live()
        return _MAX_BLOCKING_WRITE

    def write(self, contents: bytes) -> None:
        self._live()
        if len(contents) > _MAX_BLOCKING_WRITE:
            raise RuntimeError("trap: write of more than check-write permits")
        self._written += contents

    def blocking_write_and_flush(self, contents: bytes) -> None:
        self._live()
        if len(contents) > _MAX_BLOCKING_WRITE:
            raise RuntimeError("trap: blocking-write-and-flush of more than 4096 bytes")
        self._written += contents

    def flush(self) -> None:
        self._live()

    blocking_flush = flush

    def subscribe(self) -> Pollable:
        self._live()
        return Pollable()

    def _on_drop(self):
        self._parent._body += self._written
        super()._on_drop()


def _variant(name: str, *fields):
    return dataclasses.make_dataclass(name, [(f, object) for f in fields])


Method_Get, Method_Head, Method_Post, Method_Put, Method_Delete = (
    _variant(f"Method_{m}") for m in ("Get", "Head", "Post", "Put", "Delete"))
Method_Connect, Method_Options, Method_Trace, Method_Patch = (
    _variant(f"Method_{m}") for m in ("Connect", "Options", "Trace", "Patch"))
Method_Other = _variant("Method_Other", "value")
Scheme_Http, Scheme_Https = _variant("Scheme_Http"), _variant("Scheme_Https")
Scheme_Other = _variant("Scheme_Other", "value")
HeaderError_InvalidSyntax = _variant("HeaderError_InvalidSyntax")
HeaderError_Forbidden = _variant("HeaderError_Forbidden")
HeaderError_Immutable = _variant("HeaderError_Immutable")


@dataclasses.dataclass
class DnsErrorPayload:
    rcode: Optional[str]
    info_code: Optional[int]


@dataclasses.dataclass
class TlsAlertReceivedPayload:
    alert_id: Optional[int]
    alert_message: Optional[str]


@dataclasses.dataclass
class FieldSizePayload:
    field_name: Optional[str]
    field_size: Optional[int]


# wasi:http's error-code cases, and the payload each carries when the
# fake makes one from HttpFailure(code, detail).
_ERROR_CODES = {
    "DNS-timeout": None, "DNS-error": lambda d: DnsErrorPayload(d, None),
    "destination-not-found": None, "destination-unavailable": None,
    "destination-IP-prohibited": None, "destination-IP-unroutable": None,
    "connection-refused": None, "connection-terminated": None,
    "connection-timeout": None, "connection-read-timeout": None,
    "connection-write-timeout": None, "connection-limit-reached": None,
    "TLS-protocol-error": None, "TLS-certificate-error": None,
    "TLS-alert-received": lambda d: TlsAlertReceivedPayload(None, d),
    "HTTP-request-denied": None, "HTTP-request-length-required": None,
    "HTTP-request-body-size": lambda d: None, "HTTP-request-method-invalid": None,
    "HTTP-request-URI-invalid": None, "HTTP-request-URI-too-long": None,
    "HTTP-request-header-section-size": lambda d: None,
    "HTTP-request-header-size": lambda d: None,
    "HTTP-request-trailer-section-size": lambda d: None,
    "HTTP-request-trailer-size": lambda d: FieldSizePayload(None, None),
    "HTTP-response-incomplete": None,
    "HTTP-response-header-section-size": lambda d: None,
    "HTTP-response-header-size": lambda d: FieldSizePayload(None, None),
    "HTTP-response-body-size": lambda d: None,
    "HTTP-response-trailer-section-size": lambda d: None,
    "HTTP-response-trailer-size": lambda d: FieldSizePayload(None, None),
    "HTTP-response-transfer-coding": lambda d: d,
    "HTTP-response-content-coding": lambda d: d, "HTTP-response-timeout": None,
    "HTTP-upgrade-failed": None, "HTTP-protocol-error": None, "loop-detected": None,
    "configuration-error": None, "internal-error": lambda d: d,
}


def _camel(wit_name: str) -> str:
    return "".join(part.capitalize() for part in wit_name.split("-"))


_ERROR_CLASSES = {
    name.lower(): _variant(f"ErrorCode_{_camel(name)}", *(("value",) if payload else ()))
    for name, payload in _ERROR_CODES.items()
}
globals().update({cls.__name__: cls for cls in _ERROR_CLASSES.values()})


def _error_code(code: str, detail: Optional[str] = None):
    """The error-code value for ``code`` (a case name, any case)."""
    cls = _ERROR_CLASSES.get(code.lower())
    if cls is None:
        raise ValueError(f"{code!r} is not a wasi:http error-code; one of {sorted(_ERROR_CLASSES)}")
    payload = _ERROR_CODES[next(n for n in _ERROR_CODES if n.lower() == code.lower())]
    return cls(payload(detail)) if payload else cls()


# What wasmtime-wasi-http refuses in a request by default.
_FORBIDDEN_HEADERS = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings"))
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Fields(_Resource):
    def __init__(self, entries=(), mutable: bool = True):
        self._entries = [(k.lower(), bytes(v)) for k, v in entries]
        self._mutable = mutable

    @classmethod
    def from_list(cls, entries: List[Tuple[str, bytes]]) -> "Fields":
        for name, value in entries:
            _str(name, "field name")
            value = _bytes(value, "field value")
            if not _TOKEN.fullmatch(name) or any(b in value for b in b"\r\n\0"):
                raise Err(HeaderError_InvalidSyntax())
            if name.lower() in _FORBIDDEN_HEADERS:
                raise Err(HeaderError_Forbidden())
        return cls(entries)

    def get(self, name: str) -> List[bytes]:
        return [v for k, v in self._live()._entries if k == name.lower()]

    def has(self, name: str) -> bool:
        return bool(self.get(name))

    def entries(self) -> List[Tuple[str, bytes]]:
        return list(self._live()._entries)

    def clone(self) -> "Fields":
        return Fields(self.entries())

    def append(self, name: str, value: bytes) -> None:
        if not self._live()._mutable:
            raise Err(HeaderError_Immutable())
        Fields.from_list([(name, value)])
        self._entries.append((name.lower(), bytes(value)))


class _ChildFields(_Child, Fields):
    """Headers a response hands out: immutable, a child of the response."""

    def __init__(self, parent: _Resource, entries):
        _Child.__init__(self, parent)
        Fields.__init__(self, entries, mutable=False)


class RequestOptions(_Resource):
    def __init__(self):
        self._timeouts = {}

    def _set(self, which, duration):
        self._live()._timeouts[which] = _optional(duration, _int, 64, "duration")

    def set_connect_timeout(self, duration: Optional[int]) -> None:
        self._set("connect", duration)

    def set_first_byte_timeout(self, duration: Optional[int]) -> None:
        self._set("first_byte", duration)

    def set_between_bytes_timeout(self, duration: Optional[int]) -> None:
        self._set("between_bytes", duration)

    def connect_timeout(self) -> Optional[int]:
        return self._live()._timeouts.get("connect")

    def first_byte_timeout(self) -> Optional[int]:
        return self._live()._timeouts.get("first_byte")

    def between_bytes_timeout(self) -> Optional[int]:
        return self._live()._timeouts.get("between_bytes")


class OutgoingBody(_Resource):
    def __init__(self, request: "OutgoingRequest"):
        self._request = request
        self._body = bytearray()
        self._stream_taken = False
        self._finished = False

    def write(self) -> OutputStream:
        self._live()
        if self._stream_taken:
            raise Err(None)
        self._stream_taken = True
        return OutputStream(self)

    @classmethod
    def finish(cls, this: "OutgoingBody", trailers: Optional[Fields]) -> None:
        if this._children:
            raise RuntimeError("trap: outgoing-body finished while its child output-stream lives")
        this._take("finished")
        if trailers is not None:
            trailers._take()
        declared = [v for k, v in this._request._headers if k == "content-length"]
        if declared and int(declared[0]) != len(this._body):
            raise Err(ErrorCode_HttpRequestBodySize(len(this._body)))
        this._finished = True


class OutgoingRequest(_Resource):
    def __init__(self, headers: Fields):
        self._headers = headers._live()._entries
        headers._take()
        self._method = Method_Get()
        self._scheme = None
        self._authority = None
        self._path_with_query = None
        self._body = None

    def body(self) -> OutgoingBody:
        self._live()
        if self._body is not None:
            raise Err(None)
        self._body = OutgoingBody(self)
        return self._body

    def method(self):
        return self._live()._method

    def set_method(self, method) -> None:
        self._live()
        if isinstance(method, Method_Other) and not _TOKEN.fullmatch(method.value or ""):
            raise Err(None)
        self._method = method

    def scheme(self):
        return self._live()._scheme

    def set_scheme(self, scheme) -> None:
        self._live()._scheme = scheme

    def authority(self) -> Optional[str]:
        return self._live()._authority

    def set_authority(self, authority: Optional[str]) -> None:
        self._live()._authority = _optional(authority, _str, "authority")

    def path_with_query(self) -> Optional[str]:
        return self._live()._path_with_query

    def set_path_with_query(self, path_with_query: Optional[str]) -> None:
        self._live()._path_with_query = _optional(path_with_query, _str, "path_with_query")

    def headers(self) -> Fields:
        return Fields(self._live()._headers, mutable=False)


class FutureTrailers(_Resource):
    def subscribe(self) -> Pollable:
        self._live()
        return Pollable()

    def get(self):
        self._live()
        return Ok(Ok(None))


class IncomingBody(_Resource):
    def __init__(self, data: bytes):
        self._data = data
        self._stream_taken = False

    def stream(self) -> InputStream:
        self._live()
        if self._stream_taken:
            raise Err(None)
        self._stream_taken = True
        return InputStream(self, self._data)

    @classmethod
    def finish(cls, this: "IncomingBody") -> FutureTrailers:
        if this._children:
            raise RuntimeError("trap: incoming-body finished while its child input-stream lives")
        this._take("finished")
        return FutureTrailers()


class IncomingResponse(_Resource):
    def __init__(self, status: int, headers, body: bytes):
        self._status = status
        self._headers = headers
        self._body = body
        self._consumed = False

    def status(self) -> int:
        return self._live()._status

    def headers(self) -> Fields:
        return _ChildFields(self._live(), self._headers)

    def consume(self) -> IncomingBody:
        self._live()
        if self._consumed:
            raise Err(None)
        self._consumed = True
        return IncomingBody(self._body)


class FutureIncomingResponse(_Resource):
    def __init__(self, host: "FakeHost", request: OutgoingRequest):
        self._host = host
        self._request = request
        self._result = None  # computed once the plugin waits: its body is written by then
        self._taken = False

    def subscribe(self) -> Pollable:
        self._live()
        return Pollable()

    def get(self):
        self._live()
        if self._taken:
            return Err(None)
        self._taken = True
        try:
            return Ok(Ok(self._host._answer_http(self._request)))
        except Err as e:
            return Ok(Err(e.value))


def _outgoing_handle(request: OutgoingRequest, options: Optional[RequestOptions]) -> FutureIncomingResponse:
    """``wasi:http/outgoing-handler.handle``: the request goes to the active
    FakeHost. A host the FakeHost has no answer for is denied here, as the
    server denies one the plugin's sidecar does not grant."""
    if not isinstance(request, OutgoingRequest):
        raise TypeError(f"request must be an OutgoingRequest, not {type(request).__name__}")
    request._take()
    if options is not None:
        options._take()
    if request._scheme is None or not request._authority:
        raise Err(ErrorCode_HttpRequestUriInvalid())
    host = _require_active("wasi:http/outgoing-handler.handle")
    host._check_http_grant(request)
    return FutureIncomingResponse(host, request)


def _http_error_code(err: IoError):
    return err._live()._code


def _require_active(what: str) -> "FakeHost":
    if _active is None:
        raise RuntimeError(
            f"{what} called with no FakeHost: create one "
            "(wsgate_testing.FakeHost()) before calling host functions")
    return _active


def _host_function(name: str):
    """A module-level host function that forwards to the active FakeHost,
    with the generated function's name and parameters."""
    method = getattr(FakeHost, name)

    def call(*args, **kwargs):
        return getattr(_require_active(f"wsgate.host.{name}"), name)(*args, **kwargs)

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
        for value in attrs.values():
            if isinstance(value, type) and value.__module__ == __name__:
                value.__module__ = name
        return m

    generated_types = module(
        "wit_world.imports.wsgate_plugin_types", Message_Text=Message_Text,
        Message_Binary=Message_Binary, Message=Message, Request=Request,
        Rejection=Rejection, OpenDecision_Accept=OpenDecision_Accept,
        OpenDecision_Greet=OpenDecision_Greet, OpenDecision_Reject=OpenDecision_Reject,
        OpenDecision=OpenDecision, Error=Error, StateError=StateError,
        UpstreamError=UpstreamError, LogLevel=LogLevel, Position=Position,
        PositionedText=PositionedText, Publication_Plain=Publication_Plain,
        Publication_Positioned=Publication_Positioned, Publication=Publication,
        Published=Published, HistoryEntry=HistoryEntry, HistoryPage=HistoryPage,
        HistoryError=HistoryError)
    host = module("wit_world.imports.host", wsgate_plugin_types=generated_types,
                  **{name: _host_function(name) for name in HOST_FUNCTIONS})
    poll = module("wit_world.imports.poll", Pollable=Pollable)
    error = module("wit_world.imports.error", Error=IoError)
    streams = module("wit_world.imports.streams", InputStream=InputStream,
                     OutputStream=OutputStream, StreamError_Closed=StreamError_Closed,
                     StreamError_LastOperationFailed=StreamError_LastOperationFailed,
                     StreamError=Union[StreamError_LastOperationFailed, StreamError_Closed])
    http_names = ("Fields", "RequestOptions", "OutgoingBody", "OutgoingRequest",
                  "FutureTrailers", "IncomingBody", "IncomingResponse",
                  "FutureIncomingResponse", "DnsErrorPayload", "TlsAlertReceivedPayload",
                  "FieldSizePayload")
    variants = {name: value for name, value in globals().items()
                if re.match(r"(Method|Scheme|HeaderError|ErrorCode)_", name)}
    http_types = module("wit_world.imports.wasi_http_types",
                        http_error_code=_http_error_code,
                        **{name: globals()[name] for name in http_names}, **variants)
    outgoing_handler = module("wit_world.imports.outgoing_handler", handle=_outgoing_handle)
    imports = module("wit_world.imports", package=True, wsgate_plugin_types=generated_types,
                     host=host, poll=poll, error=error, streams=streams,
                     wasi_http_types=http_types, outgoing_handler=outgoing_handler)
    exports_protocols = {"Listener": ListenerProtocol,
                         "UpstreamListener": UpstreamListenerProtocol,
                         "ErrorListener": ErrorListenerProtocol,
                         "BatchListener": BatchListenerProtocol}
    for name, protocol in exports_protocols.items():
        protocol.__name__ = protocol.__qualname__ = name
        protocol.__module__ = "wit_world.exports"
    export_modules = [module(f"wit_world.exports.{name}")
                      for name in ("listener", "upstream_listener", "error_listener",
                                   "batch_listener")]
    exports = module("wit_world.exports", package=True, **exports_protocols,
                     **{m.__name__.rsplit(".", 1)[1]: m for m in export_modules},
                     wsgate_plugin_types=generated_types)
    world = module("wit_world", package=True, WitWorld=WitWorld, imports=imports,
                   exports=exports)
    runtime_types = module("componentize_py_types", Some=Some, Ok=Ok, Err=Err, Result=Result)
    for m in (runtime_types, world, imports, generated_types, host, poll, error, streams,
              http_types, outgoing_handler, exports, *export_modules):
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


def _client_message(msg):
    """What a test's client sends: a message, or a str (text) or bytes (binary)."""
    if isinstance(msg, str):
        return Message_Text(msg)
    if isinstance(msg, (bytes, bytearray)):
        return Message_Binary(bytes(msg))
    return _message(msg, "msg")


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
    state_keys_listed: int = 1000
    upstreams_per_plugin: int = 16


# humantime's units, as the server reads `ttl = "5m"`, in milliseconds.
_DURATION_UNITS = {
    **dict.fromkeys(("nsec", "ns"), 1e-6), **dict.fromkeys(("usec", "us"), 1e-3),
    **dict.fromkeys(("msec", "ms"), 1),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), 1000),
    **dict.fromkeys(("minutes", "minute", "mins", "min", "m"), 60_000),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), 3_600_000),
    **dict.fromkeys(("days", "day", "d"), 86_400_000),
    **dict.fromkeys(("weeks", "week", "w"), 604_800_000),
    **dict.fromkeys(("months", "month", "M"), 2_630_016_000),
    **dict.fromkeys(("years", "year", "y"), 31_557_600_000),
}
_DURATION_PART = re.compile(r"\s*([0-9]+)\s*([A-Za-z]+)")


def _duration_ms(text: str) -> int:
    """A humantime duration (``"5m"``, ``"1h 30m"``, ``"90s"``) in ms."""
    total, at = 0.0, 0
    text = text.strip()
    while at < len(text):
        m = _DURATION_PART.match(text, at)
        if m is None or m.group(2) not in _DURATION_UNITS:
            raise ValueError(f"not a duration: {text!r} (e.g. \"5m\", \"90s\", \"1h 30m\")")
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        at = m.end()
    if not text:
        raise ValueError("an empty duration")
    return int(total)


@dataclasses.dataclass(frozen=True)
class HistoryConfig:
    """A plugin sidecar's ``[history]`` table: which channels are recorded
    (``channels``, patterns where ``*`` matches any run of characters,
    otherwise exact), how many messages each keeps (``size``, at most
    10000) and for how long (``ttl``: humantime text such as ``"5m"``, or
    milliseconds). The defaults are the server's."""

    channels: Tuple[str, ...] = ()
    size: int = 100
    ttl: Union[str, int] = "5m"

    MAX_SIZE = 10_000

    def __post_init__(self):
        if isinstance(self.channels, str):
            raise TypeError('channels is a list of patterns, e.g. ["*"]')
        object.__setattr__(self, "channels", tuple(_str(c, "channel pattern") for c in self.channels))
        if not isinstance(self.size, int) or not 1 <= self.size <= self.MAX_SIZE:
            raise ValueError(f"history size must be 1-{self.MAX_SIZE}, not {self.size!r}")
        if self.ttl_ms <= 0:
            raise ValueError(f"history ttl must be positive, not {self.ttl!r}")

    @property
    def ttl_ms(self) -> int:
        return _duration_ms(self.ttl) if isinstance(self.ttl, str) else _int(self.ttl, 64, "ttl")

    def records(self, channel: str) -> bool:
        """Whether a pattern matches ``channel``."""
        return any(re.fullmatch(".*".join(map(re.escape, p.split("*"))), channel, re.S)
                   for p in self.channels)

    @classmethod
    def from_sidecar(cls, path) -> Optional["HistoryConfig"]:
        """The ``[history]`` table of a sidecar (``NAME.toml``), or ``None``
        if it has none (then nothing is recorded). Needs Python 3.11+
        (tomllib)."""
        import tomllib
        with open(path, "rb") as f:
            table = tomllib.load(f).get("history")
        if table is None:
            return None
        unknown = set(table) - {"channels", "size", "ttl"}
        if unknown:
            raise ValueError(f"unknown [history] keys: {sorted(unknown)}")
        return cls(**table)


class _ChannelHistory:
    """One recorded channel, as the server's memory backend keeps it."""

    def __init__(self):
        self.epoch = secrets.token_hex(8)  # 16 lowercase hex chars, as the host makes
        self.last = 0  # offsets given out in this epoch
        self.dropped_through = 0  # the newest offset dropped by size or age
        self.entries = collections.deque()  # (offset, msg, recorded at ms)

    def expire(self, now_ms: int, ttl_ms: int) -> None:
        while self.entries and self.entries[0][2] + ttl_ms <= now_ms:
            self.dropped_through = self.entries.popleft()[0]

    def record(self, msg, now_ms: int, size: int) -> Position:
        self.last += 1
        self.entries.append((self.last, msg, now_ms))
        while len(self.entries) > size:
            self.dropped_through = self.entries.popleft()[0]
        return Position(self.epoch, self.last)

    def page(self, since: Optional[Position], limit: int) -> HistoryPage:
        if since is None:
            recovered, after = self.dropped_through == 0, 0
        else:
            recovered = (since.epoch == self.epoch and self.dropped_through <= since.offset
                         <= self.last)
            after = since.offset if recovered else 0
        entries = [HistoryEntry(Position(self.epoch, o), m)
                   for o, m, _ in self.entries if o > after][:limit]
        return HistoryPage(entries, Position(self.epoch, self.last), recovered)


# What the host was asked to do, in order, for assertions that care about
# the call rather than who received it.
class Publish(NamedTuple):
    """A ``publish`` or ``publish_recorded``; ``msg`` as delivered (a
    positioned text with its position filled in), ``position`` where the
    channel's history recorded it (``None``: not recorded)."""
    channel: str
    msg: Message
    except_: Optional[int]
    reached: int
    position: Optional[Position] = None


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


class HttpRequest(NamedTuple):
    """An outbound HTTP request as the fake host received it: the method
    upper-cased, header names lower-cased, the body read to its end."""
    method: str
    url: str
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return _lookup(self.headers, name.lower())


class HttpReply(NamedTuple):
    """A response for :attr:`FakeHost.http` to give; ``headers`` a dict or
    pairs, ``body`` bytes or a str (sent as UTF-8)."""
    status: int = 200
    headers: Union[Dict[str, str], List[Tuple[str, str]]] = ()
    body: Union[bytes, str] = b""


class HttpFailure(Exception):
    """No response: the request fails with a wasi:http ``error-code`` case,
    e.g. ``HttpFailure("connection-refused")``, ``HttpFailure("DNS-timeout")``
    or ``HttpFailure("internal-error", "detail")``. Put one in
    :attr:`FakeHost.http`, or return or raise it from a handler."""

    def __init__(self, code: str, detail: Optional[str] = None):
        _error_code(code, detail)  # a known case, or ValueError now
        super().__init__(code if detail is None else f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Upstream:
    """One outbound WebSocket the plugin opened with ``upstream_connect``,
    and the test's end of it.

    ``sent`` is everything the plugin sent it, in order (messages sent
    before the handshake included); ``close_sent`` the ``(code, reason)`` the
    plugin closed it with. The test plays the other side: :meth:`open`
    (the handshake succeeded), :meth:`send` (a message from the upstream),
    :meth:`close` (the upstream closed) and :meth:`fail` (it could not be
    reached, or vanished: 1006). Each runs the hook into the listener that
    opened the upstream, unless given another.
    """

    def __init__(self, host: "FakeHost", id: int, url: str, protocols: List[str],
                 headers: List[Tuple[str, str]], listener):
        self.host = host
        self.id = id
        self.url = url
        self.protocols = protocols
        self.headers = headers
        self.listener = listener
        #: ``connecting``, ``open``, ``closing`` (the plugin closed it) or ``closed``.
        self.state = "connecting"
        self.sent: List[Message] = []
        self.close_sent: Optional[Tuple[int, str]] = None
        #: The ``(code, reason)`` that ``on_upstream_close`` was told.
        self.closed: Optional[Tuple[int, str]] = None

    def __repr__(self):
        return f"<Upstream {self.id} {self.url} {self.state}>"

    @property
    def texts(self) -> List[str]:
        """The text messages the plugin sent it, in order."""
        return [m.value for m in self.sent if isinstance(m, Message_Text)]

    def json(self) -> list:
        """The text messages the plugin sent it, parsed as JSON."""
        return [json.loads(t) for t in self.texts]

    def open(self, listener=None) -> None:
        """The handshake succeeded: ``on_upstream_open``."""
        if self.state != "connecting":
            raise RuntimeError(f"upstream {self.id} is {self.state}, not connecting")
        self.state = "open"
        self.host._upstream_hook(self, listener, "on_upstream_open", self.id)

    def send(self, msg, listener=None) -> None:
        """The upstream sends ``msg`` (a str is text, bytes binary):
        ``on_upstream_message``."""
        if isinstance(msg, str):
            msg = Message_Text(msg)
        elif isinstance(msg, (bytes, bytearray)):
            msg = Message_Binary(bytes(msg))
        if self.state != "open":
            raise RuntimeError(f"upstream {self.id} is {self.state}: only an open upstream sends")
        self.host._upstream_hook(self, listener, "on_upstream_message", self.id,
                                 _message(msg, "msg"))

    def close(self, code: int = 1000, reason: str = "", listener=None) -> None:
        """The upstream closes: ``on_upstream_close`` with its code."""
        if self.state == "closed":
            raise RuntimeError(f"upstream {self.id} is closed")
        self.host._upstream_ended(self, (_int(code, 16, "code"), _str(reason, "reason")), listener)

    def fail(self, reason: str = "connection refused", listener=None) -> None:
        """The upstream could not be reached, or vanished:
        ``on_upstream_close`` with 1006."""
        self.close(1006, reason, listener)


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
        # While on_open runs: fan-out deliveries that wait for it to return.
        self._deferred: Optional[List[Message]] = None
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
        connection was closed meanwhile). A message that arrives alone is
        what the server gives ``on_message`` even where the plugin exports
        ``on_messages``; :meth:`send_burst` sends several at once."""
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

    def on_messages(self, msgs) -> List[Optional[Message]]:
        """One ``on_messages`` call with ``msgs`` (messages; a str is text,
        bytes binary), as the server makes for a burst that arrived
        together: returns the call's results, one per message it handled
        (it may stop early: :meth:`send_burst` hands on the rest).

        The inbox gets what the server writes: the replies of all but the
        last handled message, then what the call queued for this
        connection, then the last reply (unless the connection was closed
        meanwhile). A result list that is empty or longer than ``msgs``
        raises here; the server fails the call as it does a trap (1011)."""
        self._check_usable()
        msgs = [_client_message(m) for m in msgs]
        if not msgs:
            raise ValueError("the server calls on_messages with at least one message")
        if not self._batches():
            raise TypeError(f"{self.listener!r} has no on_messages: subclass wsgate.Listener")
        if self.closing:
            return []  # the server discards data after it started closing
        return self._batch(msgs)

    def send_burst(self, msgs) -> List[Optional[Message]]:
        """The client sends ``msgs`` at once, and the server does what it
        does with a burst: ``on_messages`` with all of them, then with the
        ones it did not handle, until none is left or the connection is
        closing (the server discards the rest). A burst of one, a listener
        without ``on_messages``, and the rest of a burst whose call handled
        only its first message (a plugin that delivers on every message)
        get one ``on_message`` call per message instead. Returns the
        replies, one per message handled, in order; the inbox reads as it
        would after one :meth:`send` per message."""
        rest = [_client_message(m) for m in msgs]
        replies: List[Optional[Message]] = []
        while rest and not self.closing:
            if len(rest) == 1 or not self._batches():
                return replies + self._one_by_one(rest)
            handled = self.on_messages(rest)
            replies += handled
            rest = rest[len(handled):]
            if len(handled) == 1 and rest:
                return replies + self._one_by_one(rest)
        return replies

    def _one_by_one(self, msgs) -> List[Optional[Message]]:
        replies = []
        for msg in msgs:
            if self.closing:
                break
            replies.append(self.send(msg))
        return replies

    def _batches(self) -> bool:
        listener = self.listener
        if isinstance(listener, types.ModuleType):
            listener = listener.Listener
        return callable(getattr(listener, "on_messages", None))

    def _batch(self, msgs: List[Message]) -> List[Optional[Message]]:
        """Runs ``on_messages`` and writes what the server writes, in its order."""
        mark = len(self.inbox)
        results = self.host._call(self.listener, "on_messages", self.id, msgs)
        if not isinstance(results, list) or not 1 <= len(results) <= len(msgs):
            got = f"{len(results)} results" if isinstance(results, list) else repr(results)
            raise RuntimeError(f"on_messages returned {got} for {len(msgs)} messages: a list of "
                               "1 to len(msgs) replies is due (the server would close the "
                               "connection with 1011)")
        replies = [None if r is None else _message(r, "on_messages' reply") for r in results]
        queued = self.inbox[mark:]
        del self.inbox[mark:]
        written = True  # nothing failed the connection yet
        for reply in replies[:-1]:
            if reply is not None and _size(reply) > self.host.limits.max_message_size:
                self.host._server_closes(self, 1011, "internal error")
                written = False
                break
            if reply is not None:
                self.inbox.append(reply)
        last = replies[-1]
        if written:
            self.inbox.extend(queued)
            if last is not None and _size(last) > self.host.limits.max_message_size:
                self.host._server_closes(self, 1011, "internal error")
            elif last is not None and not self.closing:
                self.inbox.append(last)
        self.host._settle()
        return replies

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
    ``on_last_close`` for the route's last connection. The same goes for
    ``upstream_close``: ``on_upstream_close`` follows the hook.

    State keys set with ``state_set_expiring`` expire on the virtual clock
    (:meth:`advance`). Upstreams the plugin opens are :class:`Upstream`
    handles in :attr:`upstreams_opened`; the test plays their far end.

    Outbound HTTP (``wsgate.http_request``) is answered from :attr:`http`,
    a dict from URL (or ``"METHOD URL"``, which wins) to a reply: an
    :class:`HttpReply`, a str or bytes (200 with that body), a dict or list
    (200, JSON), an :class:`HttpFailure`, or a function of the
    :class:`HttpRequest` returning one of these. :attr:`http_handler`, if
    set, answers what the dict does not. A request nothing answers is
    denied (``http-request-denied``), as the server denies a host the
    plugin's sidecar does not grant. Every request is recorded in
    :attr:`http_requests`. ``allowed_hosts``, if given, is the sidecar's
    grant: other hosts are denied to HTTP and upstreams alike.

    ``history`` is the sidecar's ``[history]`` (a :class:`HistoryConfig`;
    ``None``: no channel is recorded). Recorded channels keep their messages
    in memory, each channel in an epoch of its own until :meth:`new_epoch`;
    entries expire on the virtual clock. As in the server, what is
    published to a connection's channels and tags while its ``on_open``
    runs reaches it after everything ``on_open`` sent it.
    """

    def __init__(self, limits: Limits = Limits(), *, http=None, http_handler=None,
                 allowed_hosts=None, history: Optional[HistoryConfig] = None):
        global _active
        self.limits = limits
        if history is not None and not isinstance(history, HistoryConfig):
            raise TypeError("history must be a wsgate_testing.HistoryConfig")
        #: The sidecar's ``[history]``, or None: nothing recorded.
        self.history_config = history
        #: Set to a HistoryError (e.g. ``UNAVAILABLE``: Redis is down) to make
        #: ``publish_recorded`` and ``history`` fail with it.
        self.history_error: Optional[HistoryError] = None
        self._histories: Dict[str, _ChannelHistory] = {}
        #: URL (or "METHOD URL") -> reply, for outbound HTTP.
        self.http: Dict[str, object] = dict(http or {})
        #: Answers the HTTP requests that :attr:`http` does not (returns a reply or None).
        self.http_handler = http_handler
        #: Every outbound HTTP request, in order.
        self.http_requests: List[HttpRequest] = []
        #: Hosts the plugin may reach (None: any).
        self.allowed_hosts = None if allowed_hosts is None else set(allowed_hosts)
        #: Every upstream the plugin opened, by id (closed ones too).
        self.upstreams_opened: Dict[int, Upstream] = {}
        self._next_upstream = 1
        self._expiry: Dict[str, int] = {}  # state key -> virtual ms it expires at
        self._listeners: List[object] = []  # the listeners whose hooks are running
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
            conn._deferred = []
            decision = _decision(self._call(listener, "on_open", conn.id, request))
        except BaseException:
            conn._deferred = None
            self._end(conn, None)
            raise
        deferred, conn._deferred = conn._deferred, None
        conn.inbox.extend(deferred)  # fan-out during on_open follows what it sent
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
        self._expire_state()
        return fired

    @property
    def timers(self) -> Dict[int, Timer]:
        """Pending timers by id."""
        return {i: Timer(i, *t) for i, t in self._timers.items()}

    def connection(self, id: int) -> Connection:
        """The handle of a connection this host opened, by id."""
        return self._all[id]

    def upstream(self, id: int) -> Upstream:
        """The handle of an upstream the plugin opened, by id."""
        return self.upstreams_opened[id]

    def new_epoch(self, channel: Optional[str] = None) -> None:
        """History is lost, as when the server restarts with in-memory history
        or a Redis stream is deleted: ``channel`` (every channel if None)
        starts a new epoch, empty, its offsets from 1 again."""
        if channel is None:
            self._histories.clear()
        else:
            self._histories.pop(_str(channel, "channel"), None)

    def hook_failed(self, conn, detail: str = "on_message trapped", listener=None) -> None:
        """What the server does after a hook for ``conn`` (an id or a
        :class:`Connection`) trapped or overran its deadline: ``on_error`` on
        a fresh instance, into the connection's listener by default. Only
        the hook runs here; the server also closes the connection (1011)."""
        conn = conn.id if isinstance(conn, Connection) else _int(conn, 64, "conn")
        target = self._all.get(conn)
        listener = listener or (target.listener if target else self._latest_listener)
        if listener is None:
            raise RuntimeError("no listener to report the error to: pass listener=")
        self._call(listener, "on_error", conn, _str(detail, "detail"))
        self._settle()

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
        self._spend_check(msg)
        position = None
        if self._recorded(channel):  # the old call records too, as plain
            position = self._record(channel, msg)
        reached = self._deliver(sorted(self._channels.get(channel, ())), msg, except_)
        self.publishes.append(Publish(channel, msg, except_, reached, position))
        return reached

    def publish_recorded(self, channel, msg, except_) -> Published:
        channel = _str(channel, "channel")
        except_ = _optional(except_, _int, 64, "except_")
        publication = msg
        if isinstance(publication, Publication_Plain):
            msg = _message(publication.value, "publication")
            positioned = None
        elif isinstance(publication, Publication_Positioned) and isinstance(
                publication.value, PositionedText):
            positioned = (_str(publication.value.before, "before"),
                          _str(publication.value.after, "after"))
            msg = None
        else:
            raise TypeError("publication must be a Publication_Plain or Publication_Positioned, "
                            f"not {publication!r}")
        if not channel or _utf8_len(channel) > self.limits.max_name_len:
            raise Err(HistoryError.INVALID_ARGUMENT)
        if not self._recorded(channel):
            raise Err(HistoryError.NOT_RECORDED)
        if self.history_error is not None:
            raise Err(self.history_error)
        history = self._history(channel)
        if positioned is not None:
            before, after = positioned
            msg = Message_Text(f"{before}{history.epoch}:{history.last + 1}{after}")
        try:
            self._spend_check(msg)
        except Err as e:
            # Too big (invalid-argument), or past the hook's delivery budget
            # (limit-reached), as the host says: nothing recorded.
            budget = e.value == Error.LIMIT_REACHED
            raise Err(HistoryError.LIMIT_REACHED if budget else HistoryError.INVALID_ARGUMENT) from None
        position = self._record(channel, msg)
        reached = self._deliver(sorted(self._channels.get(channel, ())), msg, except_)
        self.publishes.append(Publish(channel, msg, except_, reached, position))
        return Published(reached, position)

    def history(self, channel, since, limit) -> HistoryPage:
        channel = _str(channel, "channel")
        limit = _int(limit, 32, "limit")
        if since is not None:
            if not isinstance(since, Position):
                raise TypeError(f"since must be a Position or None, not {since!r}")
            since = Position(_str(since.epoch, "since.epoch"), _int(since.offset, 64, "since.offset"))
        if not channel or _utf8_len(channel) > self.limits.max_name_len or limit == 0:
            raise Err(HistoryError.INVALID_ARGUMENT)
        if not self._recorded(channel):
            raise Err(HistoryError.NOT_RECORDED)
        if self.history_error is not None:
            raise Err(self.history_error)
        return self._history(channel).page(since, min(limit, self.history_config.size))

    def channels(self) -> List[str]:
        return sorted(self._channels)

    def subscribers(self, channel) -> List[int]:
        return sorted(self._channels.get(_str(channel, "channel"), ()))

    def node_channels(self) -> List[str]:
        return self.channels()  # one node: the whole cluster

    def node_subscribers(self, channel) -> List[int]:
        return self.subscribers(channel)

    def connections(self) -> List[int]:
        return sorted(self._conns)

    def connection_count(self) -> int:
        return len(self._conns)

    def node_connection_count(self) -> int:
        return self.connection_count()

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

    def node_tagged(self, tag) -> List[int]:
        return self.tagged(tag)

    def send_to_tag(self, tag, msg, except_) -> int:
        tag = _str(tag, "tag")
        msg = _message(msg, "msg")
        except_ = _optional(except_, _int, 64, "except_")
        self._check_name(tag)
        reached = self._deliver(sorted(self._tags.get(tag, ())), msg, except_)
        self.tag_sends.append(TagSend(tag, msg, except_, reached))
        return reached

    def state_get(self, key) -> Optional[bytes]:
        key = _str(key, "key")
        self._expire_state()
        return self.state.get(key)

    def state_set(self, key, value) -> None:
        key = _str(key, "key")
        value = _optional(value, _bytes, "value")
        self._check_name(key)
        self._expire_state()
        self._store(key, value, Error.LIMIT_REACHED)
        self._expiry.pop(key, None)

    def state_increment(self, key, delta) -> int:
        key = _str(key, "key")
        if not isinstance(delta, int) or isinstance(delta, bool):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        if not _S64_MIN <= delta <= _S64_MAX:
            raise ValueError(f"delta {delta} is out of range for an s64")
        self._check_state_key(key)
        self._expire_state()
        current = self.state.get(key, b"0")
        if not _DECIMAL.fullmatch(current):
            raise Err(StateError.NOT_A_NUMBER)
        value, result = int(current), int(current) + delta
        if not (_S64_MIN <= value <= _S64_MAX and _S64_MIN <= result <= _S64_MAX):
            raise Err(StateError.NOT_A_NUMBER)
        self._store(key, str(result).encode(), StateError.LIMIT_REACHED)
        return result

    def state_compare_and_swap(self, key, expected, new) -> bool:
        key = _str(key, "key")
        expected = _optional(expected, _bytes, "expected")
        new = _optional(new, _bytes, "new")
        self._check_state_key(key)
        self._expire_state()
        if self.state.get(key) != expected:
            return False
        self._store(key, new, StateError.LIMIT_REACHED)
        self._expiry.pop(key, None)
        return True

    def state_set_expiring(self, key, value, ttl_ms) -> None:
        key = _str(key, "key")
        value = _bytes(value, "value")
        ttl_ms = _int(ttl_ms, 64, "ttl_ms")
        self._check_state_key(key)
        if ttl_ms == 0:
            raise Err(StateError.INVALID_ARGUMENT)
        self._expire_state()
        self._store(key, value, StateError.LIMIT_REACHED)
        self._expiry[key] = self.now_ms + ttl_ms

    def state_keys(self, prefix, limit) -> List[str]:
        prefix = _str(prefix, "prefix")
        limit = min(_int(limit, 32, "limit"), self.limits.state_keys_listed)
        self._expire_state()
        keys = sorted((k for k in self.state if k.startswith(prefix)),
                      key=lambda k: k.encode("utf-8", "surrogatepass"))
        return keys[:limit]

    def upstream_connect(self, url, protocols, headers) -> int:
        from urllib.parse import urlsplit
        url = _str(url, "url")
        if not isinstance(protocols, (list, tuple)):
            raise TypeError(f"protocols must be a list, not {type(protocols).__name__}")
        protocols = [_str(p, "protocol") for p in protocols]
        headers = _pairs(headers, "header")
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise Err(UpstreamError.INVALID_URL) from None
        if parts.scheme not in ("ws", "wss") or not host:
            raise Err(UpstreamError.INVALID_URL)
        if not self._granted(host):
            raise Err(UpstreamError.DENIED)
        if any(not _TOKEN.fullmatch(k) or any(c in v for c in "\r\n\0") for k, v in headers) \
                or any(not p or _utf8_len(p) > self.limits.max_name_len for p in protocols):
            raise Err(UpstreamError.INVALID_ARGUMENT)
        if len(self.upstreams()) >= self.limits.upstreams_per_plugin:
            raise Err(UpstreamError.LIMIT_REACHED)
        id = self._next_upstream
        self._next_upstream += 1
        listener = self._listeners[-1] if self._listeners else self._latest_listener
        self.upstreams_opened[id] = Upstream(self, id, url, protocols, headers, listener)
        return id

    def upstream_send(self, id, msg) -> None:
        upstream = self._upstream(_int(id, 64, "id"))
        msg = _message(msg, "msg")
        if upstream.state == "closing":
            raise Err(UpstreamError.CLOSED)
        if _size(msg) > self.limits.max_message_size:
            raise Err(UpstreamError.INVALID_ARGUMENT)
        upstream.sent.append(msg)

    def upstream_close(self, id, code, reason) -> None:
        id = _int(id, 64, "id")
        code = _int(code, 16, "code")
        reason = _str(reason, "reason")
        if not _sendable_close_code(code) or _utf8_len(reason) > 123:
            raise Err(UpstreamError.INVALID_ARGUMENT)
        upstream = self._upstream(id)
        if upstream.state == "closing":
            raise Err(UpstreamError.CLOSED)
        upstream.state = "closing"
        upstream.close_sent = (code, reason)
        if self._depth == 0:
            self._settle()

    def upstreams(self) -> List[int]:
        return sorted(i for i, u in self.upstreams_opened.items()
                      if u.state in ("connecting", "open"))

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
        self._listeners.append(listener)
        outer_budget, self._budget = self._budget, self.limits.deliveries_per_hook
        try:
            return getattr(instance, hook)(*args)
        finally:
            self._depth -= 1
            self._listeners.pop()
            self._budget = outer_budget

    def _store(self, key: str, value: Optional[bytes], limit_error) -> None:
        """Sets or (``None``) deletes a state entry within ``state_bytes``."""
        def cost(v):
            return 0 if v is None else _utf8_len(key) + len(v) + _STATE_ENTRY_OVERHEAD

        used = self._state_bytes - cost(self.state.get(key)) + cost(value)
        if used > self.limits.state_bytes:
            raise Err(limit_error)
        self._state_bytes = used
        if value is None:
            self.state.pop(key, None)
            self._expiry.pop(key, None)
        else:
            self.state[key] = value

    def _check_state_key(self, key: str) -> None:
        if not key or _utf8_len(key) > self.limits.max_name_len:
            raise Err(StateError.INVALID_ARGUMENT)

    def _expire_state(self) -> None:
        """Drops the keys whose time is up on the virtual clock."""
        for key in [k for k, at in self._expiry.items() if at <= self.now_ms]:
            self._store(key, None, Error.LIMIT_REACHED)

    def _upstream(self, id: int) -> Upstream:
        upstream = self.upstreams_opened.get(id)
        if upstream is None or upstream.state == "closed":
            raise Err(UpstreamError.UNKNOWN_UPSTREAM)
        return upstream

    def _upstream_hook(self, upstream: Upstream, listener, hook: str, *args) -> None:
        listener = listener or upstream.listener or self._latest_listener
        if listener is None:
            raise RuntimeError("no listener for the upstream's events: pass listener=")
        self._call(listener, hook, *args)
        self._settle()

    def _upstream_ended(self, upstream: Upstream, close: Tuple[int, str], listener=None) -> None:
        upstream.state = "closed"
        upstream.closed = upstream.close_sent or close
        self._upstream_hook(upstream, listener, "on_upstream_close", upstream.id, *upstream.closed)

    def _granted(self, host: str) -> bool:
        return self.allowed_hosts is None or host in self.allowed_hosts

    def _check_http_grant(self, request: "OutgoingRequest") -> None:
        """Denies at ``handle`` what nothing will answer, as the server does."""
        method, url = _http_method(request._method), _http_url(request)
        from urllib.parse import urlsplit
        if not self._granted(urlsplit(url).hostname or "") or (
                self.http_handler is None and f"{method} {url}" not in self.http
                and url not in self.http):
            self.http_requests.append(HttpRequest(method, url, _http_headers(request), b""))
            raise Err(ErrorCode_HttpRequestDenied())

    def _answer_http(self, request: "OutgoingRequest") -> "IncomingResponse":
        body = request._body
        seen = HttpRequest(_http_method(request._method), _http_url(request),
                           _http_headers(request),
                           bytes(body._body) if body is not None and body._finished else b"")
        self.http_requests.append(seen)
        reply = self.http.get(f"{seen.method} {seen.url}", self.http.get(seen.url))
        if reply is None and self.http_handler is not None:
            try:
                reply = self.http_handler(seen)
            except HttpFailure as failure:
                reply = failure
        if callable(reply) and not isinstance(reply, type):
            try:
                reply = reply(seen)
            except HttpFailure as failure:
                reply = failure
        if reply is None:
            raise Err(ErrorCode_HttpRequestDenied())
        if isinstance(reply, HttpFailure):
            raise Err(_error_code(reply.code, reply.detail))
        if isinstance(reply, (str, bytes, bytearray)):
            kind = "text/plain; charset=utf-8" if isinstance(reply, str) else "application/octet-stream"
            reply = HttpReply(200, [("content-type", kind)], reply)
        elif isinstance(reply, (dict, list)):
            reply = HttpReply(200, [("content-type", "application/json")], json.dumps(reply))
        if not isinstance(reply, HttpReply):
            raise TypeError(f"an HTTP reply must be an HttpReply, str, bytes, dict, list or "
                            f"HttpFailure, not {reply!r}")
        data = reply.body.encode("utf-8") if isinstance(reply.body, str) else bytes(reply.body)
        headers = [(k.lower(), v.encode("utf-8")) for k, v in _pairs(reply.headers, "header")]
        return IncomingResponse(_int(reply.status, 16, "status"), headers, data)

    def _recorded(self, channel: str) -> bool:
        return self.history_config is not None and self.history_config.records(channel)

    def _history(self, channel: str) -> _ChannelHistory:
        """The channel's history, its expired entries dropped."""
        history = self._histories.get(channel)
        if history is None:
            history = self._histories[channel] = _ChannelHistory()
        history.expire(self.now_ms, self.history_config.ttl_ms)
        return history

    def _record(self, channel: str, msg) -> Position:
        return self._history(channel).record(msg, self.now_ms, self.history_config.size)

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
                (target.inbox if target._deferred is None else target._deferred).append(msg)
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
            upstreams = [u for u in self.upstreams_opened.values() if u.state == "closing"]
            if not pending and not upstreams:
                return
            for conn in pending:
                if not conn._ended:
                    self._end(conn, conn.server_close)
            for upstream in upstreams:
                if upstream.state == "closing":
                    self._upstream_ended(upstream, upstream.close_sent)

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


_S64_MIN, _S64_MAX = -(1 << 63), (1 << 63) - 1
_DECIMAL = re.compile(rb"[+-]?[0-9]+")


def _http_method(method) -> str:
    name = type(method).__name__.split("_", 1)[1]
    return method.value if name == "Other" else name.upper()


def _http_url(request) -> str:
    scheme = request._scheme
    scheme = {"Scheme_Http": "http", "Scheme_Https": "https"}.get(
        type(scheme).__name__, getattr(scheme, "value", None))
    return f"{scheme}://{request._authority}{request._path_with_query or '/'}"


def _http_headers(request) -> List[Tuple[str, str]]:
    return [(k, v.decode("utf-8", "replace")) for k, v in request._headers]


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
