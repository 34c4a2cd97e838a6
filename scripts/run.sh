#!/usr/bin/env bash
# Builds wsgate and the example plugins, then serves them on 127.0.0.1:8080
# (override with LISTEN=ADDR). Extra arguments go to wsgate.
#
# The first run on a fresh machine compiles the server, which takes most of
# the time (see the estimates it prints); later runs start in seconds. The
# server listens as soon as it starts and serves each plugin once it has
# compiled: the Rust ones at once, the Python and JavaScript ones a few
# seconds later (503 with Retry-After until then; /readyz says when all
# are ready). Compiled plugins are cached, so a restart serves all at once.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)
say() { printf '[run.sh %4ss] %s\n' $(($(date +%s) - T0)) "$*" >&2; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

say "toolchain: the wasm32-wasip2 target, rustfmt and clippy (rustup, once)"
"$ROOT/scripts/setup.sh"
if [ -x "$TARGET_DIR/release/wsgate" ]; then
  say "building the server (release): up to date or seconds"
else
  say "building the server (release): the first time about 15 minutes on 2 cores, mostly Wasmtime and Cranelift"
fi
cargo build --release --quiet -p wsgate
PLUGINS="$TARGET_DIR/plugins"
say "building the example plugins: Rust in seconds; Python and JavaScript about a minute the first time (componentize-py and ComponentizeJS are installed, and every build is cached); C a few minutes the first time (clang and wasi-libc from apt, wit-bindgen with cargo install), then a second"
"$ROOT/scripts/build-plugins.sh" "$PLUGINS" >/dev/null
LISTEN=${LISTEN:-127.0.0.1:8080}
say "serving http://$LISTEN/ (the chat demo) and ws://$LISTEN/ws/NAME for each plugin in $PLUGINS"
exec "$TARGET_DIR/release/wsgate" --listen "$LISTEN" --plugins "$PLUGINS" "$@"
