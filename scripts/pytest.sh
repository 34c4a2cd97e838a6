#!/usr/bin/env bash
# Runs pytest (pinned) with the Python SDK (plugin-sdk/python) on the import
# path, in the current directory: scripts/test-python-sdk.sh runs it on the
# SDK and the examples, `wsgate test` on a project made by `wsgate new`.
# Usage: scripts/pytest.sh [PYTEST_ARGS ...]
#
# pytest is installed into ${WSGATE_TOOL_CACHE:-~/.cache/wsgate}/python with
# `pip --target`, like componentize-py, so the system Python is left alone.
set -euo pipefail
PYTEST_VERSION=9.2.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${WSGATE_TOOL_CACHE:-$HOME/.cache/wsgate}/python
TOOLS=$CACHE/pytest-$PYTEST_VERSION

mkdir -p "$CACHE"
(
  # One install at a time (CI may run this beside the plugin builds); a
  # half-made or stale directory (another Python's) is made again.
  flock 9
  if [ ! -f "$TOOLS/.complete" ] || ! PYTHONPATH=$TOOLS python3 -c 'import pytest' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 \
      || { echo "error: running Python tests needs python3 with pip" >&2; exit 1; }
    rm -rf "$TOOLS"
    echo "installing pytest $PYTEST_VERSION into $TOOLS" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
      --only-binary :all: --target "$TOOLS" "pytest==$PYTEST_VERSION" >&2
    touch "$TOOLS/.complete"
  fi
) 9>"$CACHE/.pytest.lock"

# No cache directory or bytecode in the work tree; -rs lists skips with
# their reasons.
PYTHONPATH="$TOOLS:$ROOT/plugin-sdk/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
  exec python3 -m pytest -p no:cacheprovider -rs "$@"
