#!/usr/bin/env bash
# Runs the JavaScript SDK's tests with Node's test runner: the test
# harness's own (plugin-sdk/js/test) and the JavaScript example plugins'
# (example-plugins/*/*.test.mjs). Needs Node.js 20+ and nothing from npm.
# Usage: scripts/test-js-sdk.sh [NODE_TEST_ARGS ...]
#
# The integration test runs when WSGATE_BIN (a wsgate binary) and
# WSGATE_TEST_PLUGINS (a directory with echo.wasm) are set; otherwise it is
# reported skipped, with the reason.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v node >/dev/null || { echo "error: the JavaScript SDK tests need Node.js 20+" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "error: the JavaScript SDK tests need Node.js 20+, this is $(node --version)" >&2
  exit 1
fi
# Files, not folders: given a folder, Node 20 also runs every .js file under
# a test/ directory as a test.
mapfile -t tests < <(find "$ROOT/plugin-sdk/js/test" "$ROOT/example-plugins" -name node_modules -prune -o -name '*.test.mjs' -print | sort)
cd "$ROOT"
# The spec reporter reads the same with or without a terminal (CI).
exec node --test --test-reporter=spec "$@" "${tests[@]}"
