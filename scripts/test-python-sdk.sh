#!/usr/bin/env bash
# Runs the Python SDK's tests: the test harness's own (plugin-sdk/python/tests)
# and the Python example plugins' (example-plugins/*/test_*.py), with pytest
# (see scripts/pytest.sh).
# Usage: scripts/test-python-sdk.sh [PYTEST_ARGS ...]
#
# The integration test runs when WSGATE_BIN (a wsgate binary) and
# WSGATE_TEST_PLUGINS (a directory with echo.wasm) are set; otherwise pytest
# reports it skipped, with the reason.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mapfile -t tests < <(find "$ROOT/example-plugins" -mindepth 2 -maxdepth 2 -name 'test_*.py' | sort)
cd "$ROOT"
exec scripts/pytest.sh "$ROOT/plugin-sdk/python/tests" "${tests[@]}" "$@"
