#!/usr/bin/env bash
# Builds wsgate and the example plugins, then serves them on 127.0.0.1:8080
# (override with LISTEN=ADDR). Extra arguments go to wsgate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh"
cargo build --release -p wsgate
PLUGINS="$ROOT/target/plugins"
"$ROOT/scripts/build-plugins.sh" "$PLUGINS"
exec "$ROOT/target/release/wsgate" --listen "${LISTEN:-127.0.0.1:8080}" --plugins "$PLUGINS" "$@"
