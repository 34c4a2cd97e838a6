#!/usr/bin/env bash
# Profiles wsgate (Rust echo plugin) under pipelined echo load with perf
# (software cpu-clock event: hardware counters are often unavailable in VMs).
#
#   bench/profile.sh [SECONDS] [CONNECTIONS]      (default 8 s, 200 connections)
#
# Needs target/release/{wsgate,loadgen} and the plugins that bench/run.sh
# built (target/bench-plugins/rust). Writes bench/results/perf-*.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-8}
CONNS=${2:-200}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$TARGET/release
OUT=$ROOT/bench/results
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
PLUGINS=$TARGET/bench-plugins/rust
[ -f "$PLUGINS/echo.wasm" ] || PLUGINS=$TARGET/bench-plugins-quick/rust
[ -f "$PLUGINS/echo.wasm" ] || { echo "run bench/run.sh first (builds the plugins)" >&2; exit 1; }

PORT=$("$REL/loadgen" free-port)
RUST_LOG=warn taskset -c 0 "$REL/wsgate" --listen 127.0.0.1:$PORT --plugins "$PLUGINS" \
  > "$OUT/perf-wsgate.log" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null || true; wait $SPID 2>/dev/null || true' EXIT
"$REL/loadgen" wait "ws://127.0.0.1:$PORT/ws/echo" --timeout 60

# Load for SECS + 2 s; record SECS s in the middle of it.
taskset -c 1 "$REL/loadgen" echo "ws://127.0.0.1:$PORT/ws/echo" -c "$CONNS" -k 16 -w 1 -d $((SECS + 1)) \
  --server-pid $SPID --max-time 120 &
LPID=$!
sleep 1.5
perf record -e cpu-clock -F 1999 -g -p $SPID -o "$OUT/perf.data" -- sleep "$SECS" 2> "$OUT/perf-record.log"
wait $LPID || true

perf report -i "$OUT/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20 \
  > "$OUT/perf-dso.txt"
perf report -i "$OUT/perf.data" --stdio --no-children --sort sym -g none --percent-limit 0.7 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -60 > "$OUT/perf-symbols.txt"
perf report -i "$OUT/perf.data" --stdio --children --sort sym -g none --percent-limit 3 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -60 > "$OUT/perf-children.txt"
echo "== by DSO";                   cat "$OUT/perf-dso.txt"
echo "== self time by symbol";      cat "$OUT/perf-symbols.txt"
echo "== inclusive (children)";     cat "$OUT/perf-children.txt"
