#!/usr/bin/env bash
# Sets up and runs every test: formatting and lints, unit tests, end-to-end
# tests against a spawned server with plugins built from source, protocol
# conformance (Autobahn|Testsuite), the browser test and benchmark smoke runs.
#
# A run on a fresh machine is mostly compiling, so the steps are arranged
# around the one big build:
# - dependencies compile once: clippy runs as the workspace's compiler
#   wrapper during the build (RUSTC_WORKSPACE_WRAPPER), where a separate
#   `cargo clippy` would check every dependency a second time;
# - what does not need the host build runs beside it in the background:
#   installing redis-server, chromium and Autobahn's wstest, and building
#   the Python, JavaScript and C plugins;
# - Autobahn runs beside the cargo tests.
# A table of every step's time is printed at the end, pass or fail.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# CI starts from a fresh clone: keep build output in a cache outside it.
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/wsgate/target"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOGS=$TARGET_DIR/test-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
. "$ROOT/scripts/lib/steps.sh"
trap step_table EXIT

export WSGATE_BIN="$TARGET_DIR/debug/wsgate"
export WSGATE_TEST_PLUGINS="$TARGET_DIR/test-plugins/examples"
export WSGATE_TEST_FIXTURES="$TARGET_DIR/test-plugins/fixtures"
AUTOBAHN=$ROOT/../shared/autobahn
# Host crates only: plugin crates are cdylibs for wasm32-wasip2 and do not
# link as native libraries (they are built, and linted, for wasm32 below).
HOST_CRATES=(-p wsgate -p wsgate-tests -p wsgate-bench)

# Test dependencies that need no build: one after another, since apt
# allows one installer at a time.
# The steps below that run several commands chain them with &&: run_step
# calls a step as `step || rc=$?`, and bash ignores `set -e` inside anything
# left of `||`, so without the chain a failure in the middle of a step would
# go unnoticed unless its last command failed too.
services() {
  "$ROOT/scripts/setup-redis.sh" &&
    "$ROOT/tests/browser/setup.sh" &&
    if [ -x "$AUTOBAHN/setup.sh" ]; then "$AUTOBAHN/setup.sh"; fi
}

guest_plugins() {
  "$ROOT/scripts/build-python-plugins.sh" "$WSGATE_TEST_PLUGINS" &&
    "$ROOT/scripts/build-js-plugins.sh" "$WSGATE_TEST_PLUGINS" &&
    # clang and wasi-libc from apt (after the services' packages: apt.sh
    # takes turns), then wit-bindgen, compiled once into the tool cache.
    "$ROOT/scripts/setup-c.sh" &&
    "$ROOT/scripts/build-c-plugins.sh" "$WSGATE_TEST_PLUGINS" &&
    # The JavaScript SDK's TypeScript types must be what the WIT says now.
    "$ROOT/scripts/check-js-types.sh"
}

# clippy-driver as the workspace members' compiler: every later cargo
# command lints what it compiles, with warnings as errors, and the cargo
# test run reuses what the build compiled (the wrapper is part of each
# member's fingerprint). A probe first makes sure the wrapper really fails
# on a lint, so a change in clippy cannot turn this step into a no-op.
lint_while_building() {
  local driver probe
  driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
  export RUSTC_WORKSPACE_WRAPPER=$driver
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  probe=$(mktemp -d)
  echo 'fn main() { let v = vec![1u8]; println!("{}", v.len() == 0); }' >"$probe/probe.rs"
  if "$driver" "$(rustup which rustc 2>/dev/null || command -v rustc)" --edition 2024 \
    --crate-type bin --emit=metadata --out-dir "$probe" "$probe/probe.rs" >/dev/null 2>&1; then
    echo "error: clippy-driver with CLIPPY_ARGS did not fail on a lint" >&2
    return 1
  fi
  rm -rf "$probe"
}

# The SDKs' own tests and the examples' unit tests, in their languages'
# test runners; their integration tests serve the plugins built above.
sdk_tests() {
  # Rust listeners' unit tests run natively, on the SDK's in-memory host.
  cargo test --quiet -p chat -p relay -p auth-chat -p wsgate-sdk --features wsgate-sdk/testing &&
    "$ROOT/scripts/test-python-sdk.sh" -q &&
    "$ROOT/scripts/test-js-sdk.sh"
}

rust_plugins() {
  "$ROOT/scripts/build-rust-plugins.sh" "$WSGATE_TEST_PLUGINS" echo chat ticker auth-chat relay &&
    "$ROOT/scripts/build-fixtures.sh" "$WSGATE_TEST_FIXTURES" &&
    # The benchmarks' fan-out plugin (its own workspace).
    CARGO_TARGET_DIR=$TARGET_DIR/bench-fanout cargo build --quiet --release \
      --target wasm32-wasip2 --manifest-path "$ROOT/bench/fanout-plugin/Cargo.toml"
}

run_step toolchain "$ROOT/scripts/setup.sh"
start_step services services
start_step guest-plugins guest_plugins
run_step format cargo fmt --all --check
run_step lint-probe lint_while_building
run_step build+lint cargo build "${HOST_CRATES[@]}" --all-targets --quiet
run_step rust-plugins rust_plugins
finish_step services
finish_step guest-plugins
if [ -x "$AUTOBAHN/run.sh" ]; then
  # Every case, permessage-deflate on; wstest (Python 2) is the slow side,
  # so it runs beside the tests below.
  start_step autobahn "$ROOT/scripts/autobahn.sh" "$TARGET_DIR/autobahn"
fi
run_step cargo-test cargo test "${HOST_CRATES[@]}" --quiet
run_step sdk-tests sdk_tests
run_step browser "$ROOT/tests/browser/run.sh"
run_step bench "$ROOT/bench/run.sh" --quick --no-build
run_step cluster-bench "$ROOT/bench/cluster.sh" --quick --dev --no-build
run_step scale-bench "$ROOT/bench/scale.sh" --quick --dev --no-build
run_step hold-bench "$ROOT/bench/hold.sh" --quick --dev --no-build --plugins="$WSGATE_TEST_PLUGINS"
if [ -n "${STEP_PID[autobahn]:-}" ]; then finish_step autobahn; fi
printf '\n=== all tests passed\n'
