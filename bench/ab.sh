#!/usr/bin/env bash
# Echo through the Rust echo plugin on two wsgate builds, in one run: A and
# B take turns (A B A B ...) so that whatever else the shared machine does
# falls on both, and the report gives B's throughput and server CPU per
# message as ratios to A's. For judging a change to the server's hot path.
#
#   bench/ab.sh OLD_WSGATE NEW_WSGATE [ROUNDS]     (default 4 rounds)
#
# Needs a release loadgen (cargo build --release -p wsgate-bench) and the
# Rust echo plugin (built here with scripts/build-rust-plugins.sh). Each
# round: 200 connections, 16 messages of 32 B in flight on each (AB_CONNS,
# AB_INFLIGHT to change them: many connections with one message in flight
# is the case where every message finds its connection idle), 5 s after a
# 1 s warm-up, the server pinned to CPU 0 and the load generator to CPU 1.
#
# To compare two builds of the plugin instead (an SDK change), give both
# runs the same server and each its own plugin directory holding echo.wasm:
#   AB_PLUGINS_A=DIR AB_PLUGINS_B=DIR bench/ab.sh WSGATE WSGATE [ROUNDS]
set -euo pipefail
A=${1:?usage: bench/ab.sh OLD_WSGATE NEW_WSGATE [ROUNDS]}
B=${2:?usage: bench/ab.sh OLD_WSGATE NEW_WSGATE [ROUNDS]}
ROUNDS=${3:-4}
CONNS=${AB_CONNS:-200} INFLIGHT=${AB_INFLIGHT:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/ab.sh
. "$ROOT/bench/lib/ab.sh"
ab_setup
PLUGINS_A=${AB_PLUGINS_A:-$WORK/plugins} PLUGINS_B=${AB_PLUGINS_B:-$WORK/plugins}
if [ -z "${AB_PLUGINS_A:-}" ] || [ -z "${AB_PLUGINS_B:-}" ]; then
  "$ROOT/scripts/build-rust-plugins.sh" "$WORK/plugins" echo >/dev/null
fi

round() { # BIN LABEL PLUGINS -> one JSON line
  local port pid line
  port=$("$LOADGEN" free-port)
  "${PIN_SERVER[@]}" "$1" --listen "127.0.0.1:$port" --plugins "$3" \
    --no-admin --no-watch --cache-dir "$WORK/cache" >"$WORK/$2.log" 2>&1 &
  pid=$!
  "$LOADGEN" wait "ws://127.0.0.1:$port/ws/echo" --timeout 60 2>/dev/null
  line=$("${PIN_LOAD[@]}" "$LOADGEN" echo "ws://127.0.0.1:$port/ws/echo" -c "$CONNS" -k "$INFLIGHT" -d 5 -w 1 -s 32 \
    --label "$2" --max-time 60 --server-pid "$pid" --json 2>/dev/null)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$line"
}

for i in $(seq "$ROUNDS"); do
  round "$A" A "$PLUGINS_A" >>"$WORK/runs.jsonl"
  round "$B" B "$PLUGINS_B" >>"$WORK/runs.jsonl"
  echo "round $i of $ROUNDS done" >&2
done
python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def pick(label, key):
    return [r[key] for r in runs if r.get("label") == label and r.get(key)]
def cpu_rates(label):
    return [r["msg_per_s"] / (r["server_cpu_pct"] / 100) for r in runs
            if r.get("label") == label and r.get("server_cpu_pct")]
print("| build | msg/s, median of rounds | msg per server CPU-s, median |")
print("| --- | ---: | ---: |")
med = {}
for label in ("A", "B"):
    rate, per_cpu = pick(label, "msg_per_s"), cpu_rates(label)
    med[label] = (statistics.median(rate), statistics.median(per_cpu) if per_cpu else float("nan"))
    print(f"| {label} | {med[label][0]:,.0f} | {med[label][1]:,.0f} |")
print(f"| B / A | {med['B'][0] / med['A'][0]:.3f} | {med['B'][1] / med['A'][1]:.3f} |")
print("rounds:", ", ".join(f"{r['label']} {r['msg_per_s']:,.0f}" for r in runs))
PY
