#!/usr/bin/env bash
# Installs the Rust pieces every other script needs: the wasm32-wasip2
# target for plugins, and rustfmt/clippy for the checks. Idempotent.
set -euo pipefail
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
installed=$(rustup target list --installed 2>/dev/null || true)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
