#!/usr/bin/env bash
# Builds every example plugin into OUT_DIR as NAME.wasm (+ NAME.toml sidecar).
# Usage: scripts/build-plugins.sh OUT_DIR
# Examples that need capabilities from the operator (a `[grants]` section in
# their sidecar: auth-chat's HTTP endpoint, relay's upstream feed) are built
# into OUT_DIR/needs-grants/ instead, outside the plugin directory, so the
# quick start serves only what runs without configuration; the README says
# how to serve them.
# Installs what it needs: the wasm32-wasip2 Rust target, clang and wasi-libc
# (scripts/setup-c.sh, Debian packages), and (through the per-language
# scripts beside this one) the Python, JavaScript and C toolchains.
set -euo pipefail
OUT=${1:?usage: scripts/build-plugins.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

"$ROOT/scripts/build-rust-plugins.sh" "$OUT" echo chat ticker auth-chat relay

for lang in python js; do
  script="$ROOT/scripts/build-$lang-plugins.sh"
  if [ -x "$script" ]; then "$script" "$OUT"; fi
done
"$ROOT/scripts/setup-c.sh"
"$ROOT/scripts/build-c-plugins.sh" "$OUT"
mkdir -p "$OUT/needs-grants"
for sidecar in "$OUT"/*.toml; do
  if grep -q '^\[grants\]' "$sidecar"; then
    name=$(basename "$sidecar" .toml)
    mv "$OUT/$name.wasm" "$OUT/$name.toml" "$OUT/needs-grants/"
  fi
done
echo "plugins in $OUT:" && ls "$OUT"
