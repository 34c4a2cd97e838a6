#!/usr/bin/env bash
# A fan-out through bench/fanout-plugin on two wsgate builds, in one run: A
# and B take turns (A B A B ...) so that whatever else the shared machine
# does falls on both, and the report gives B's server CPU per round and
# all-delivered times as ratios to A's. For judging a change to the
# delivery path (registry, queue, corked flush); bench/ab.sh does the same
# for echo.
#
#   bench/fan-ab.sh OLD_WSGATE NEW_WSGATE [ROUNDS]     (default 4 runs each)
#
# Each run: FAN_SUBS subscribers (default 10000) held by one load generator,
# FAN_ROUNDS publishes (default 30), the server pinned to CPU 0 and the load
# generator to CPU 1. Needs a release loadgen (cargo build --release -p
# wsgate-bench); builds the plugin into a temporary directory unless
# FAN_PLUGINS names a directory holding fanout.wasm.
set -euo pipefail
A=${1:?usage: bench/fan-ab.sh OLD_WSGATE NEW_WSGATE [ROUNDS]}
B=${2:?usage: bench/fan-ab.sh OLD_WSGATE NEW_WSGATE [ROUNDS]}
RUNS=${3:-4}
SUBS=${FAN_SUBS:-10000} PUBLISHES=${FAN_ROUNDS:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/ab.sh
. "$ROOT/bench/lib/ab.sh"
ab_setup
PLUGINS=${FAN_PLUGINS:-}
if [ -z "$PLUGINS" ]; then
  PLUGINS=$WORK/plugins
  mkdir -p "$PLUGINS"
  CARGO_TARGET_DIR=$TARGET/bench-fanout cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$ROOT/bench/fanout-plugin/Cargo.toml"
  cp "$TARGET/bench-fanout/wasm32-wasip2/release/fanout.wasm" "$PLUGINS/"
fi
[ -f "$PLUGINS/fanout.wasm" ] || { echo "no fanout.wasm in $PLUGINS" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((SUBS + 500)) ] || { echo "open-files limit $(ulimit -n) is too low for $SUBS" >&2; exit 1; }

run() { # BIN LABEL -> one JSON line
  local port pid line
  port=$("$LOADGEN" free-port)
  WSGATE_LIMITS__MAX_CONNECTIONS_PER_IP=1000000 WSGATE_LIMITS__MAX_CONNECTIONS=1000000 \
    "${PIN_SERVER[@]}" "$1" --listen "127.0.0.1:$port" --plugins "$PLUGINS" \
    --no-admin --no-watch --cache-dir "$WORK/cache" >"$WORK/$2.log" 2>&1 &
  pid=$!
  "$LOADGEN" wait "ws://127.0.0.1:$port/ws/fanout" --timeout 60 2>/dev/null
  line=$("${PIN_LOAD[@]}" "$LOADGEN" broadcast "ws://127.0.0.1:$port/ws/fanout?u={i}" \
    -m "$SUBS" -r "$PUBLISHES" --sources $((SUBS / 20000 + 1)) --settle-max 400 --max-time 600 \
    --label "$2" --server-pid "$pid" --json 2>/dev/null)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$line"
}

for i in $(seq "$RUNS"); do
  run "$A" A >>"$WORK/runs.jsonl"
  run "$B" B >>"$WORK/runs.jsonl"
  echo "run $i of $RUNS done" >&2
done
python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [("server_cpu_ms_per_round", "server CPU ms per round"),
        ("complete_p50_ms", "all-delivered p50 ms"),
        ("complete_p99_ms", "all-delivered p99 ms")]
print("| build | " + " | ".join(name + ", median" for _, name in keys) + " |")
print("| --- |" + " ---: |" * len(keys))
med = {}
for label in ("A", "B"):
    med[label] = [statistics.median(r[k] for r in runs if r.get("label") == label) for k, _ in keys]
    print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in med[label]) + " |")
print("| B / A | " + " | ".join(f"{b / a:.3f}" for a, b in zip(med["A"], med["B"])) + " |")
print("runs (server CPU ms per round):",
      ", ".join(f"{r['label']} {r['server_cpu_ms_per_round']:.1f}" for r in runs))
PY
