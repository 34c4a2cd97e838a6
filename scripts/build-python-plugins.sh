#!/usr/bin/env bash
# Builds the Python example plugins (example-plugins/*/app.py) into OUT_DIR
# as NAME.wasm (+ NAME.toml sidecar), NAME being the plugin's folder name.
# Usage: scripts/build-python-plugins.sh OUT_DIR [PLUGIN_DIR ...]
#
# componentize-py (pinned in plugin-sdk/python/requirements.txt) is installed
# into ${WSGATE_TOOL_CACHE:-~/.cache/wsgate}. It takes 10-15 s per plugin, so each
# build is cached under a hash of everything that goes into it.
set -euo pipefail
OUT=${1:?usage: scripts/build-python-plugins.sh OUT_DIR [PLUGIN_DIR ...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SDK=$ROOT/plugin-sdk/python
mkdir -p "$OUT"
. "$ROOT/scripts/lib/plugin-cache.sh"
plugin_cache_init python
if [ $# -eq 0 ]; then
  set -- $(find "$ROOT/example-plugins" -mindepth 2 -maxdepth 2 -name app.py -printf '%h\n' | sort)
fi

# Installs componentize-py with `pip --target`, not a venv: works without
# Debian's python3-venv and is not blocked by PEP 668 on a system Python.
tools() {
  local dir=$CACHE/tools-$(inputs_hash "$SDK/requirements.txt")
  if [ ! -f "$dir/.complete" ]; then
    python3 -m pip --version >/dev/null 2>&1 \
      || { echo "error: building Python plugins needs python3 with pip" >&2; exit 1; }
    rm -rf "$dir"
    echo "installing componentize-py into $dir" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore --only-binary :all: \
      --target "$dir" -r "$SDK/requirements.txt" >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}

TOOLS=
for plugin in "$@"; do
  plugin=$(cd "$plugin" && pwd)
  name=$(basename "$plugin")
  key=$(inputs_hash "$plugin" "$SDK/wsgate.py" "$SDK/requirements.txt" "$ROOT/wit" "$ROOT/scripts/$(basename "$0")" "$ROOT/scripts/lib/plugin-cache.sh")
  cached=$CACHE/wasm/$name-$key.wasm
  if [ ! -f "$cached" ]; then
    TOOLS=${TOOLS:-$(tools)}
    echo "componentize-py: $name" >&2
    start=$(date +%s%N)
    # Run from an empty directory: componentize-py also searches the cwd.
    # The plugin-http world: componentize-py binds only what the world
    # names, and the SDK's http_request needs wasi:http.
    work=$(mktemp -d)
    (cd "$work" && PYTHONPATH=$TOOLS python3 -c \
      'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' \
      -d "$ROOT/wit" -w plugin-http componentize app -p "$plugin" -p "$SDK" -o "$work/out.wasm" >&2)
    mv "$work/out.wasm" "$cached.tmp" && mv "$cached.tmp" "$cached"
    rm -rf "$work"
    echo "componentize-py: $name took $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
  fi
  install_plugin "$cached" "$name" "$plugin" "$OUT"
done
