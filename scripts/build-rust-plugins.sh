#!/usr/bin/env bash
# Builds Rust plugin crates of this workspace for wasm32-wasip2 and copies
# each into OUT_DIR as NAME.wasm, with its sidecar NAME.toml when it has one.
# Usage: scripts/build-rust-plugins.sh OUT_DIR CRATE[=NAME] ...
set -euo pipefail
OUT=${1:?usage: scripts/build-rust-plugins.sh OUT_DIR CRATE[=NAME] ...}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2 >&2
fi

args=()
for spec in "$@"; do args+=(-p "${spec%%=*}"); done
(cd "$ROOT" && cargo build --quiet --target wasm32-wasip2 --profile plugin "${args[@]}")

TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
for spec in "$@"; do
  crate=${spec%%=*}
  name=${spec#*=}
  artifact="$TARGET_DIR/wasm32-wasip2/plugin/${crate//-/_}.wasm"
  dir=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c "import json,sys; print([p['manifest_path'] for p in json.load(sys.stdin)['packages'] if p['name']=='$crate'][0].rsplit('/',1)[0])")
  # The sidecar first, then the .wasm by copy and rename: a watching server
  # loads the plugin once the whole file is there, with its sidecar.
  if [ -f "$dir/$crate.toml" ]; then cp "$dir/$crate.toml" "$OUT/$name.toml"; fi
  cp "$artifact" "$OUT/.$name.wasm.tmp" && mv "$OUT/.$name.wasm.tmp" "$OUT/$name.wasm"
done
