#!/usr/bin/env bash
# Sets up and runs every test: formatting and lints, unit tests, end-to-end
# tests against a spawned server with plugins built from source, the browser
# test and a small benchmark smoke run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# CI starts from a fresh clone: keep build output in a cache outside it.
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/wsgate/target"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
step() { printf '\n=== %s\n' "$*"; }

step "toolchain"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/setup-redis.sh"

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
# Host crates only: plugin crates are cdylibs for wasm32-wasip2 and do not
# link as native libraries (they are built by the plugin scripts below).
HOST_CRATES=(-p wsgate -p wsgate-tests -p wsgate-bench)
cargo build "${HOST_CRATES[@]}" --quiet
export WSGATE_BIN="$TARGET_DIR/debug/wsgate"
export WSGATE_TEST_PLUGINS="$TARGET_DIR/test-plugins/examples"
export WSGATE_TEST_FIXTURES="$TARGET_DIR/test-plugins/fixtures"
"$ROOT/scripts/build-plugins.sh" "$WSGATE_TEST_PLUGINS"
"$ROOT/scripts/build-fixtures.sh" "$WSGATE_TEST_FIXTURES"

step "unit and end-to-end tests"
cargo test "${HOST_CRATES[@]}" --quiet

if [ -x "$ROOT/../shared/autobahn/run.sh" ]; then
  step "protocol conformance (Autobahn|Testsuite)"
  "$ROOT/scripts/autobahn.sh" "$TARGET_DIR/autobahn"
fi

for extra in tests/browser/run.sh bench/run.sh bench/cluster.sh; do
  if [ -x "$ROOT/$extra" ]; then
    step "$extra"
    case $extra in
      bench/cluster.sh) "$ROOT/$extra" --quick --dev ;;
      bench/*) "$ROOT/$extra" --quick ;;
      *) "$ROOT/$extra" ;;
    esac
  fi
done
step "all tests passed"
