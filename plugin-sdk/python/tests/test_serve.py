"""wsgate_testing.serve against a real server: the built echo plugin, and
the harness's WebSocket client.

Needs WSGATE_BIN (a wsgate binary) and WSGATE_TEST_PLUGINS (a directory
with echo.wasm, as scripts/build-plugins.sh makes); skipped without them.
"""

import os
import shutil
from pathlib import Path

import pytest

from wsgate_testing import ServeError, WebSocketRefused, serve

BIN = os.environ.get("WSGATE_BIN")
PLUGINS = os.environ.get("WSGATE_TEST_PLUGINS")
ECHO = Path(PLUGINS, "echo.wasm") if PLUGINS else None

needs_bin = pytest.mark.skipif(not BIN, reason="set WSGATE_BIN to a wsgate binary")
needs_echo = pytest.mark.skipif(
    not BIN or ECHO is None or not ECHO.is_file(),
    reason="set WSGATE_BIN to a wsgate binary and WSGATE_TEST_PLUGINS to a directory with echo.wasm")

@needs_echo
def test_serve_runs_the_plugin_and_stops():
    with serve(ECHO) as server:
        assert server.url == f"ws://127.0.0.1:{server.port}"
        assert server.admin_port != server.port
        ws = server.connect("/ws/echo")
        ws.send_text("hello, é")
        assert ws.recv() == "hello, é"
        ws.send_binary(bytes(range(200)))  # a 16-bit length
        assert ws.recv() == bytes(range(200))
        assert ws.close() == 1000
        with pytest.raises(WebSocketRefused) as refused:
            server.connect("/ws/nowhere")
        assert refused.value.status == 404
        assert server.admin_get("/admin/info")[0] == 200
        assert "plugin=echo" in server.logs()
    assert server.process.poll() is not None, "stopped on leaving the block"
    assert not os.path.exists(server.plugin_dir), "the temporary plugin directory is gone"
    assert "plugin=echo" in server.logs(), "the log outlives the server"


@needs_bin
def test_a_plugin_that_does_not_load_is_an_error_with_the_log(tmp_path):
    bad = tmp_path / "broken.wasm"
    bad.write_bytes(b"\0asm not really")
    with pytest.raises(ServeError, match="plugin broken did not load") as e:
        with serve(bad, timeout=60):
            pass
    assert "wsgate listening" in str(e.value), "the server's log is in the error"


def test_without_a_binary_the_error_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("WSGATE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="WSGATE_BIN"):
        with serve(tmp_path / "echo.wasm"):
            pass
    monkeypatch.setenv("WSGATE_BIN", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="not an executable"):
        with serve(tmp_path / "echo.wasm"):
            pass


def test_a_plugin_file_must_be_named_like_a_plugin(monkeypatch, tmp_path):
    monkeypatch.setenv("WSGATE_BIN", shutil.which("true") or "/bin/true")
    with pytest.raises(ValueError, match="NAME.wasm"):
        with serve(tmp_path / "has space.wasm"):
            pass
