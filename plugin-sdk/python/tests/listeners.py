"""Listeners and helpers the SDK's tests share."""

import pytest

import wsgate_testing  # noqa: F401  (first: it provides the bindings wsgate imports)

import wsgate  # noqa: E402
from wsgate import HostError, OpenDecision  # noqa: E402


def host_error(call, *args):
    """The error value (an Error, StateError or UpstreamError) a host call raised."""
    with pytest.raises(HostError) as e:
        call(*args)
    return e.value.value


class Recorder(wsgate.Listener):
    """Records every hook call, in order (an instance, so state on self is
    fine here); each hook can be given a behaviour."""

    def __init__(self, **behaviour):
        self.events = []
        self.behaviour = behaviour

    def _do(self, hook, *args):
        self.events.append((hook, *args))
        act = self.behaviour.get(hook)
        return act(*args) if act else None

    def on_open(self, conn, req):
        return self._do("on_open", conn, req) or OpenDecision.accept()

    def on_message(self, conn, msg):
        return self._do("on_message", conn, msg)

    def on_close(self, conn, code, reason):
        self._do("on_close", conn, code, reason)

    def on_first_open(self, route):
        self._do("on_first_open", route)

    def on_last_close(self, route):
        self._do("on_last_close", route)

    def on_push(self, payload):
        self._do("on_push", payload)

    def on_timer(self, id):
        self._do("on_timer", id)

    def on_error(self, conn, detail):
        self._do("on_error", conn, detail)

    def on_upstream_open(self, id):
        self._do("on_upstream_open", id)

    def on_upstream_message(self, id, msg):
        self._do("on_upstream_message", id, msg)

    def on_upstream_close(self, id, code, reason):
        self._do("on_upstream_close", id, code, reason)


def hooks(listener):
    return [e[0] for e in listener.events]
