#!/usr/bin/env bash
# Runs the browser end-to-end tests of the chat demo (headless Chromium + the real wsgate).
#
#   tests/browser/run.sh [extra node --test args]
#
# Installs what it needs first (setup.sh: Debian's chromium, the pinned npm
# packages). Builds wsgate (cargo build -p wsgate) and the example plugins
# (scripts/build-plugins.sh) unless WSGATE_BIN / WSGATE_TEST_PLUGINS point at them.
# Non-interactive: works with CI=true and without a terminal.
# Screenshots: target/browser-screenshots/. WSGATE_DOCS_SCREENSHOT=1 refreshes docs/demo.png.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive CI=${CI:-true}
exec </dev/null

"$HERE/setup.sh"
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

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
