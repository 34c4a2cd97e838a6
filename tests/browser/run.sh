#!/usr/bin/env bash
# Runs the browser end-to-end tests of the chat demo (headless Chromium + the real wsgate).
#
#   tests/browser/run.sh [extra node --test args]
#
# Installs what it needs: Debian's chromium (apt) and the pinned npm packages
# (npm ci). Builds wsgate (cargo build -p wsgate) and the example plugins
# (scripts/build-plugins.sh) unless WSGATE_BIN / WSGATE_TEST_PLUGINS point at them.
# Non-interactive: works with CI=true and without a terminal.
# Screenshots: target/browser-screenshots/. WSGATE_DOCS_SCREENSHOT=1 refreshes docs/demo.png.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive CI=${CI:-true}
exec </dev/null

. "$(dirname "$0")/../../scripts/lib/apt.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "== installing chromium (apt)" >&2
  apt_install chromium
  CHROMIUM=/usr/bin/chromium
fi
export CHROMIUM

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (apt)" >&2
  apt_install nodejs npm
fi
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "error: Node.js >= 20 is required (playwright-core); found $(node --version)" >&2
  exit 1
fi

echo "== npm ci" >&2
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

if [ -z "${WSGATE_BIN:-}" ]; then
  echo "== cargo build -p wsgate" >&2
  (cd "$ROOT" && cargo build --quiet -p wsgate)
  export WSGATE_BIN="$ROOT/target/debug/wsgate"
fi
if [ -z "${WSGATE_TEST_PLUGINS:-}" ]; then
  echo "== building plugins" >&2
  "$ROOT/scripts/build-plugins.sh" "$ROOT/target/browser-plugins" >&2
  export WSGATE_TEST_PLUGINS="$ROOT/target/browser-plugins"
fi

echo "== node --test" >&2
cd "$HERE"
exec node --test --test-concurrency=1 --test-reporter=spec "$@" client.test.mjs chat.test.mjs
