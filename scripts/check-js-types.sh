#!/usr/bin/env bash
# Checks that the JavaScript SDK's committed TypeScript declarations
# (plugin-sdk/js/types) are what jco generates from wit/ now, so the types
# plugin authors see never drift from the contract.
# Usage: scripts/check-js-types.sh [--fix]
# Needs the SDK's npm packages (scripts/build-js-plugins.sh installs them).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SDK=$ROOT/plugin-sdk/js
JCO=$SDK/node_modules/.bin/jco
[ -x "$JCO" ] || (cd "$SDK" && npm ci --no-audit --no-fund --loglevel=error)
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$JCO" guest-types "$ROOT/wit" -n plugin -o "$fresh" >/dev/null
if [ "${1:-}" = --fix ]; then
  rm -rf "$SDK/types" && cp -r "$fresh" "$SDK/types"
  echo "plugin-sdk/js/types regenerated from wit/"
elif ! diff -ru "$SDK/types" "$fresh"; then
  echo "error: plugin-sdk/js/types is out of date with wit/: run scripts/check-js-types.sh --fix" >&2
  exit 1
fi
