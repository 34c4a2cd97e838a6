#!/usr/bin/env bash
# Cross-node delivery through the Redis backplane (wsgate --cluster).
#
#   bench/cluster.sh           full run (about two minutes): results in bench/results/cluster/
#   bench/cluster.sh --quick   tiny sizes (smoke check, well under a minute):
#                              results in bench/results/cluster/quick/
#
# Starts a private redis-server and two release wsgate nodes, A and B, on
# free loopback ports, both `--cluster redis://...` with the same plugin
# directory (bench/fanout-plugin and its fanout.toml), waits until each
# node's /admin/info lists both nodes, then measures in the same run (plus a
# third node C without --cluster, the standalone reference):
#
#   broadcast  M subscribers on B; the publisher on A (cross-node: the
#              delivery goes A -> Redis -> B) or on B (same node, the
#              baseline); time until all M have the message, p50/p99.
#   relay      N sender/receiver pairs, pair i on channel i
#              (/ws/fanout/{channel}: publish to the channel, sender
#              excepted); senders on A or on B, receivers on B; K messages in
#              flight per pair, closed loop; msg/s and sender-to-receiver
#              latency p50/p99.
#   latency    relay with one pair and one message in flight: the unloaded
#              one-way latency.
#
# Options: --quick, --no-build (use the binaries already built), --no-pin,
#          --dev (the dev profile's binaries, e.g. what CI's `cargo build`
#          left; for a smoke check only), --out=DIR.
#
# wsgate, Redis and the load generator share the machine: the servers
# (the three nodes and Redis) are pinned to CPU 0, the load generator to CPU 1
# (when taskset and 2+ CPUs are there; --no-pin: no pinning). Every process
# started here is stopped on exit; every step is bounded in time. Exits
# non-zero when any step fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
QUICK=0 BUILD=1 PIN=1 OUT= PROFILE=release
for arg; do
  case $arg in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-pin) PIN=0 ;;
    --dev) PROFILE=dev ;;
    --out=*) OUT=${arg#--out=} ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { OUT=$BENCH/results/cluster; [ $QUICK = 0 ] || OUT=$OUT/quick; }
NAME=cluster
. "$BENCH/lib/processes.sh"
bench_paths

# ------------------------------------------------------------------ parameters
if [ $QUICK = 1 ]; then
  REPS=1 SUBS="50" ROUNDS=5 PAIRS=10 INFLIGHT=4 DUR=1 WARM=0.3 LAT_DUR=1
else
  REPS=3 SUBS="1000 5000" ROUNDS=50 PAIRS=50 INFLIGHT=8 DUR=5 WARM=1 LAT_DUR=3
fi
SIZE=32
READY_TIMEOUT=60  # per node: compiling the plugin (cached after the first run)
RUN_LIMIT=600; [ $QUICK = 0 ] || RUN_LIMIT=90  # the whole run after the build, seconds

bench_pinning "nodes A, B (cluster) and C (standalone) and Redis"

log() { printf '[cluster %3ss] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ------------------------------------------------------------------ build
build_fanout_bench
PLUGINS=$TARGET/bench-cluster-plugins
rm -rf "$PLUGINS"; mkdir -p "$PLUGINS"
cp "$WASM" "$BENCH/fanout-plugin/fanout.toml" "$PLUGINS/"

# ------------------------------------------------------------------ processes
# The whole run is bounded: past RUN_LIMIT seconds the script stops itself.
bench_processes
start_redis

# Loopback clients all come from 127.0.0.1: lift the per-IP connection cap.
# A short heartbeat, so that the nodes see each other within a second.
CONFIG=$OUT/logs/wsgate.toml
cat > "$CONFIG" <<EOF
[limits]
max_connections_per_ip = 100000

[cluster]
heartbeat = "500ms"
node_ttl = "3s"
EOF
export WSGATE_ADMIN__TOKEN=bench-$RANDOM$RANDOM

declare -A PORT ADMIN PID
start_node() { # NAME [WSGATE-ARGS...]
  local name=$1; shift
  PORT[$name]=$(port); ADMIN[$name]=$(port)
  RUST_LOG=${BENCH_RUST_LOG:-warn} "${SERVER_PIN[@]}" "$REL/wsgate" --config "$CONFIG" \
    --listen "127.0.0.1:${PORT[$name]}" --admin-listen "127.0.0.1:${ADMIN[$name]}" \
    --plugins "$PLUGINS" --no-watch "$@" > "$OUT/logs/node-$name.log" 2>&1 &
  PID[$name]=$!; PIDS+=("${PID[$name]}")
}
nodes_seen() { # NAME: how many nodes its /admin/info lists
  curl -sf --max-time 2 -H "Authorization: Bearer $WSGATE_ADMIN__TOKEN" \
    "http://127.0.0.1:${ADMIN[$1]}/admin/info" | jq -r '.cluster.nodes | length' 2>/dev/null || echo 0
}
start_node A --cluster "$REDIS_URL"
start_node B --cluster "$REDIS_URL"
start_node C  # standalone: no cluster, the single-node reference
for n in A B C; do
  "$LOADGEN" wait "ws://127.0.0.1:${PORT[$n]}/ws/fanout" --timeout $READY_TIMEOUT 2>>"$OUT/logs/node-$n.log" \
    || { tail -n 20 "$OUT/logs/node-$n.log" >&2; die "node $n not ready"; }
done
seen_by_both=0
for _ in $(seq 100); do
  if [ "$(nodes_seen A)" = 2 ] && [ "$(nodes_seen B)" = 2 ]; then seen_by_both=1; break; fi
  sleep 0.1
done
[ $seen_by_both = 1 ] || die "the nodes do not see each other (A: $(nodes_seen A), B: $(nodes_seen B) nodes)"
A=ws://127.0.0.1:${PORT[A]} B=ws://127.0.0.1:${PORT[B]} C=ws://127.0.0.1:${PORT[C]}
log "node A on ${PORT[A]} (pid ${PID[A]}), node B on ${PORT[B]} (pid ${PID[B]}): both list 2 nodes;" \
  "standalone node C on ${PORT[C]} (pid ${PID[C]})"

# ------------------------------------------------------------------ measurements
rm -f "$OUT"/broadcast.jsonl "$OUT"/relay.jsonl "$OUT"/latency.jsonl
: > "$OUT/logs/loadgen.log"
lg() { # FILE LOADGEN-ARGS...: one JSON line appended to FILE
  local file=$1; shift
  local line
  line=$("${LOAD_PIN[@]}" "$LOADGEN" "$@" --json 2>>"$OUT/logs/loadgen.log") \
    || { tail -n 3 "$OUT/logs/loadgen.log" >&2; die "loadgen $*"; }
  echo "$line" >> "$file"; tail -n 1 "$OUT/logs/loadgen.log" >&2
  for n in A B C; do kill -0 "${PID[$n]}" 2>/dev/null || die "node $n exited (log: $OUT/logs/node-$n.log)"; done
}

# broadcast: subscribers on B; the publisher on A (cross) or on B (same);
# standalone: both on C. relay and latency: receivers on B, senders on A
# (cross) or on B (same); standalone: both on C; a channel per pair and run.
# Repetitions alternate the order, so that drift (other work on the
# machine) does not favour one side.
measure() { # WHERE REP
  local where=$1 rep=$2 from to m cpu
  case $where in
    cross) from=$A to=$B ;;
    same) from=$B to=$B ;;
    standalone) from=$C to=$C ;;
  esac
  if [ "$where" = standalone ]; then cpu=(--server-pid "${PID[C]}")
  else cpu=(--server-pid "${PID[A]}" --server-pid "${PID[B]}" --server-pid "$REDIS_PID"); fi
  local label=$where-node; [ "$where" = standalone ] && label=standalone
  for m in $SUBS; do
    lg "$OUT/broadcast.jsonl" broadcast "$to/ws/fanout?sub={i}" --publisher-url "$from/ws/fanout?pub=1" \
      -m "$m" -r $ROUNDS -s $SIZE --label "$label" --settle-max 30 --max-time 120
  done
  lg "$OUT/relay.jsonl" relay "$from/ws/fanout/$where-$rep-{i}" --receiver-url "$to/ws/fanout/$where-$rep-{i}" \
    -c $PAIRS -k $INFLIGHT -d $DUR -w $WARM -s $SIZE --label "$label" --max-time 60 "${cpu[@]}"
  lg "$OUT/latency.jsonl" relay "$from/ws/fanout/lat-$where-$rep-{i}" --receiver-url "$to/ws/fanout/lat-$where-$rep-{i}" \
    -c 1 -k 1 -d $LAT_DUR -w $WARM -s $SIZE --label "$label" --max-time 60 "${cpu[@]}"
}
for rep in $(seq "$REPS"); do
  log "repetition $rep of $REPS"
  order="standalone same cross"; [ $((rep % 2)) = 1 ] || order="cross same standalone"
  for where in $order; do measure "$where" "$rep"; done
done
# A node that dropped relay frames (a full outbox) says so in its metrics.
DROPPED=$(for n in A B; do
  curl -sf --max-time 2 -H "Authorization: Bearer $WSGATE_ADMIN__TOKEN" "http://127.0.0.1:${ADMIN[$n]}/metrics" \
    | awk -v n=$n '/^wsgate_cluster_frames/ && /dropped|undecodable/ && $NF > 0 {print n": "$0}'
done)

# ------------------------------------------------------------------ report
export QUICK PINNING LOAD_BEFORE DROPPED
PARAMS="{\"repetitions\": $REPS, \"subscribers\": [${SUBS// /, }], \"rounds\": $ROUNDS, \"pairs\": $PAIRS, \"inflight\": $INFLIGHT, \"duration_s\": $DUR, \"warmup_s\": $WARM, \"latency_duration_s\": $LAT_DUR, \"size\": $SIZE}" \
  python3 "$BENCH/cluster-report.py" "$OUT"
[ -z "$DROPPED" ] || die "relay frames dropped or undecodable: $DROPPED"
log "done in $(( $(date +%s) - T_START )) s; results in $OUT"
