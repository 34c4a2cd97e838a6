"""Tests of {{name}}: `wsgate test` runs them (it builds the plugin first).

The unit test drives the hooks against wsgate_testing's in-memory host; the
integration test serves the built plugin, dist/{{name}}.wasm, in a real
wsgate and talks to it over a socket."""

from pathlib import Path

import wsgate_testing  # first: it lets app.py import wsgate outside wasm

HERE = Path(__file__).parent
Listener = wsgate_testing.load_listener(HERE)


def test_greets_then_answers():
    host = wsgate_testing.FakeHost()
    conn = host.open(Listener, "/ws/{{name}}")
    assert conn.texts == ["welcome to {{name}}"]
    assert conn.send_text("hello").value == "echo: hello"


def test_serves_over_a_real_socket():
    wasm = HERE / "dist" / "{{name}}.wasm"
    assert wasm.is_file(), f"{wasm} is missing: run `wsgate build` first, or `wsgate test`, which builds"
    with wsgate_testing.serve(wasm) as server, server.connect("/ws/{{name}}") as ws:
        assert ws.recv() == "welcome to {{name}}"
        ws.send_text("hello")
        assert ws.recv() == "echo: hello"
