#!/usr/bin/env bash
# Builds the JavaScript example plugins (example-plugins/*/index.js) into
# OUT_DIR as NAME.wasm (+ NAME.toml sidecar), NAME being the folder name.
# Usage: scripts/build-js-plugins.sh OUT_DIR [PLUGIN_DIR ...]
#
# The SDK's pinned tools (plugin-sdk/js/package-lock.json: componentize-js,
# esbuild) are installed with `npm ci` into plugin-sdk/js/node_modules.
# componentize-js takes 5-10 s per plugin, so each build is cached in
# ${WSGATE_TOOL_CACHE:-~/.cache/wsgate} under a hash of everything that goes in.
set -euo pipefail
OUT=${1:?usage: scripts/build-js-plugins.sh OUT_DIR [PLUGIN_DIR ...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SDK=$ROOT/plugin-sdk/js
mkdir -p "$OUT"
. "$ROOT/scripts/lib/plugin-cache.sh"
plugin_cache_init js
if [ $# -eq 0 ]; then
  set -- $(find "$ROOT/example-plugins" -mindepth 2 -maxdepth 2 -name index.js -printf '%h\n' | sort)
fi

# `npm ci`, unless node_modules already holds exactly this lock file's tree.
tools() {
  local want stamp=$SDK/node_modules/.wsgate-lock
  want=$(inputs_hash "$SDK/package-lock.json")
  command -v npm >/dev/null || { echo "error: building JavaScript plugins needs Node.js 20+ with npm" >&2; exit 1; }
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "npm ci in $SDK" >&2
    (cd "$SDK" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
  fi
}

have_tools=
for plugin in "$@"; do
  plugin=$(cd "$plugin" && pwd)
  name=$(basename "$plugin")
  key=$(inputs_hash "$plugin" "$SDK/index.js" "$SDK/build.mjs" "$SDK/package-lock.json" "$ROOT/wit" "$ROOT/scripts/$(basename "$0")" "$ROOT/scripts/lib/plugin-cache.sh")
  cached=$CACHE/wasm/$name-$key.wasm
  if [ ! -f "$cached" ]; then
    [ -n "$have_tools" ] || { tools; have_tools=1; }
    echo "componentize-js: $name" >&2
    start=$(date +%s%N)
    node "$SDK/build.mjs" "$plugin" "$cached.tmp" >&2
    mv "$cached.tmp" "$cached"
    echo "componentize-js: $name took $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
  fi
  install_plugin "$cached" "$name" "$plugin" "$OUT"
done
