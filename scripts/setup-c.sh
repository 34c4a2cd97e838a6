#!/usr/bin/env bash
# Installs what C plugins are built with, from Debian packages, if missing:
# clang and lld 19 with the wasm32 compiler runtime, and wasi-libc (the C
# library for wasm32-wasi). Idempotent, and instant once done.
# scripts/build-c-plugins.sh installs its own generators (wit-bindgen,
# wasm-tools) into the tool cache on first use.
#
# apt allows one installer at a time: do not run this beside another
# script that installs packages.
set -euo pipefail
LLVM=19
PACKAGES=(clang-$LLVM lld-$LLVM wasi-libc libclang-rt-$LLVM-dev-wasm32)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
. "$(dirname "$0")/lib/apt.sh"
echo "== installing ${missing[*]} (apt)" >&2
apt_install "${missing[@]}"
