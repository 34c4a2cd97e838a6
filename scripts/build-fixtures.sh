#!/usr/bin/env bash
# Builds the test fixture plugins (tests/fixtures) into OUT_DIR.
# Usage: scripts/build-fixtures.sh OUT_DIR
# The Rust fixtures are crates of this workspace; the C ones (folders
# ending in -c) build with the C SDK, after scripts/setup-c.sh; the Python
# and JavaScript ones (ending in -py, -js) with theirs.
set -euo pipefail
OUT=${1:?usage: scripts/build-fixtures.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/build-rust-plugins.sh" "$OUT" fixture-trap=trap fixture-spin=spin fixture-lifecycle=lifecycle fixture-inspect=inspect fixture-echo-v2=echo-v2 fixture-hostile=hostile fixture-future-wit=future-wit fixture-contract-0-1-0=contract-0-1-0 fixture-state=state fixture-fetch=fetch fixture-dialer=dialer fixture-bad-batch=bad-batch fixture-bad-packed=bad-packed
"$ROOT/scripts/setup-c.sh"
"$ROOT/scripts/build-c-plugins.sh" "$OUT" "$ROOT"/tests/fixtures/*-c
"$ROOT/scripts/build-python-plugins.sh" "$OUT" "$ROOT"/tests/fixtures/*-py
"$ROOT/scripts/build-js-plugins.sh" "$OUT" "$ROOT"/tests/fixtures/*-js
