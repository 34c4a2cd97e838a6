#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium (apt), Node.js 20+
# (apt, if there is none), redis-server (apt, for the resume test's private
# Redis) and the pinned npm packages (npm ci). Idempotent,
# and quick once done; scripts/test.sh runs it early, in the background.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
exec </dev/null

. "$HERE/../../scripts/lib/apt.sh"

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "== installing chromium (apt)" >&2
  apt_install chromium
fi
if [ -z "${WSGATE_REDIS_SERVER:-}" ]; then
  "$HERE/../../scripts/setup-redis.sh"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (apt)" >&2
  apt_install nodejs npm
fi
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "error: Node.js >= 20 is required (playwright-core); found $(node --version)" >&2
  exit 1
fi
# `npm ci` unless node_modules already holds exactly this lock file's tree.
stamp=$HERE/node_modules/.wsgate-lock
want=$(sha256sum "$HERE/package-lock.json" | cut -c1-32)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== npm ci" >&2
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
