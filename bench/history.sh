#!/usr/bin/env bash
# Channel history on vs off: publish throughput and fan-out latency.
#
#   bench/history.sh           full run (about 2 minutes once built):
#                              results in bench/results/history/
#   bench/history.sh --smoke   tiny sizes (a smoke check, about 12 s once
#                              built): results in bench/results/history/smoke/
#
# Starts four release wsgate nodes on free loopback ports, each with
# bench/fanout-plugin (/ws/fanout/{channel}: every message is published to
# the channel) in a plugin directory of its own:
#
#   standalone off   no --cluster; fanout.toml as it is
#   standalone on    no --cluster; fanout.toml plus `[history] channels = ["*"]`
#                    (history in memory)
#   cluster off      --cluster with a private redis-server of its own; no history
#   cluster on       --cluster with another private redis-server;
#                    `[history] channels = ["*"]` (history in Redis streams: every
#                    publish is one script that records it and puts it on the
#                    bus, and the node delivers it from the bus)
#
# (one node per cluster: what history adds to a node, not the cross-node hop,
# which bench/cluster.sh measures), then runs the same loads against each, in
# an order that alternates between repetitions:
#
#   publish     `loadgen pubsub`: P publishers (?self=1: each gets its own
#               messages back and keeps K in flight, closed loop) and S
#               subscribers on one channel; publishes/s, deliveries/s (to all
#               P + S members), deliveries per server CPU-second (the node,
#               plus its Redis when clustered), publish -> subscriber latency.
#               Fails on a lost, missing or reordered message.
#   fan-out     `loadgen broadcast`: M subscribers of one channel, one more
#               connection publishes; time until all M have the message,
#               p50/p99 over R rounds.
#   latency     `loadgen pubsub` with one publisher, one message in flight and
#               one subscriber: the unloaded publish -> delivery latency.
#
# Options: --smoke, --no-build (use the binaries already built), --no-pin,
#          --out=DIR.
#
# The nodes and the Redis servers are pinned to CPU 0, the load generator to
# CPU 1 (when taskset and 2+ CPUs are there; --no-pin: no pinning). Every
# process started here is stopped on exit; every step is bounded in time.
# Exits non-zero when any step fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
SMOKE=0 BUILD=1 PIN=1 OUT= PROFILE=release
for arg; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --no-build) BUILD=0 ;;
    --no-pin) PIN=0 ;;
    --out=*) OUT=${arg#--out=} ;;
    -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { OUT=$BENCH/results/history; [ $SMOKE = 0 ] || OUT=$OUT/smoke; }
NAME=history
. "$BENCH/lib/processes.sh"
bench_paths

# ------------------------------------------------------------------ parameters
if [ $SMOKE = 1 ]; then
  REPS=1 PUBS=2 SUBS=2 INFLIGHT=8 DUR=1 WARM=0.3 FANOUT=100 ROUNDS=5 LAT_DUR=0.5
else
  REPS=3 PUBS=4 SUBS=4 INFLIGHT=16 DUR=4 WARM=1 FANOUT=1000 ROUNDS=40 LAT_DUR=2
fi
SIZE=32
READY_TIMEOUT=60  # per node: compiling the plugin (cached after the first run)
RUN_LIMIT=420; [ $SMOKE = 0 ] || RUN_LIMIT=90  # the whole run after the build, seconds
CONFIGS="standalone-off standalone-on cluster-off cluster-on"

bench_pinning "the four nodes and the two Redis servers"

log() { printf '[history %3ss] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ------------------------------------------------------------------ build
build_fanout_bench
# A plugin directory per history setting: fanout.toml, with [history] or not.
PLUGINS=$TARGET/bench-history-plugins
rm -rf "$PLUGINS"; mkdir -p "$PLUGINS/off" "$PLUGINS/on"
cp "$WASM" "$BENCH/fanout-plugin/fanout.toml" "$PLUGINS/off/"
cp "$WASM" "$BENCH/fanout-plugin/fanout.toml" "$PLUGINS/on/"
cat >> "$PLUGINS/on/fanout.toml" <<'EOF'

# bench/history.sh: every channel recorded (size 100, ttl 5m: the defaults).
[history]
channels = ["*"]
EOF

# ------------------------------------------------------------------ processes
bench_processes

# Loopback clients all come from 127.0.0.1: lift the per-IP connection cap.
CONFIG=$OUT/logs/wsgate.toml
cat > "$CONFIG" <<EOF
[limits]
max_connections_per_ip = 100000
EOF

declare -A PORT NODE_PID SERVER_PIDS REDIS_OF
start_node() { # CONFIG PLUGIN-DIR [WSGATE-ARGS...]
  local name=$1 dir=$2; shift 2
  PORT[$name]=$(port)
  RUST_LOG=${BENCH_RUST_LOG:-warn} "${SERVER_PIN[@]}" "$REL/wsgate" --config "$CONFIG" \
    --listen "127.0.0.1:${PORT[$name]}" --admin-listen "127.0.0.1:$(port)" \
    --plugins "$dir" --no-watch "$@" > "$OUT/logs/node-$name.log" 2>&1 &
  NODE_PID[$name]=$!; PIDS+=("${NODE_PID[$name]}")
  SERVER_PIDS[$name]="--server-pid ${NODE_PID[$name]}"
}
start_node standalone-off "$PLUGINS/off"
start_node standalone-on "$PLUGINS/on"
for setting in off on; do
  start_redis  # a Redis per clustered node: no node sees the other's bus traffic
  REDIS_OF[cluster-$setting]=$REDIS_PORT
  start_node "cluster-$setting" "$PLUGINS/$setting" --cluster "$REDIS_URL"
  SERVER_PIDS[cluster-$setting]+=" --server-pid $REDIS_PID"
done
for c in $CONFIGS; do
  "$LOADGEN" wait "ws://127.0.0.1:${PORT[$c]}/ws/fanout" --timeout $READY_TIMEOUT 2>>"$OUT/logs/node-$c.log" \
    || { tail -n 20 "$OUT/logs/node-$c.log" >&2; die "node $c not ready"; }
  log "$c: node on ${PORT[$c]} (pid ${NODE_PID[$c]})${REDIS_OF[$c]:+, Redis on ${REDIS_OF[$c]}}"
done

# ------------------------------------------------------------------ measurements
rm -f "$OUT"/publish.jsonl "$OUT"/fanout.jsonl "$OUT"/latency.jsonl
: > "$OUT/logs/loadgen.log"
lg() { # FILE LOADGEN-ARGS...: one JSON line appended to FILE
  local file=$1; shift
  local line node
  line=$("${LOAD_PIN[@]}" "$LOADGEN" "$@" --json 2>>"$OUT/logs/loadgen.log") \
    || { tail -n 3 "$OUT/logs/loadgen.log" >&2; die "loadgen $*"; }
  echo "$line" >> "$file"; tail -n 1 "$OUT/logs/loadgen.log" >&2
  for node in $CONFIGS; do
    kill -0 "${NODE_PID[$node]}" 2>/dev/null || die "node $node exited (log: $OUT/logs/node-$node.log)"
  done
}

measure() { # CONFIG REP: a fresh channel per measurement
  local c=$1 rep=$2 url=ws://127.0.0.1:${PORT[$1]}/ws/fanout
  # shellcheck disable=SC2206
  local cpu=(${SERVER_PIDS[$c]})
  lg "$OUT/publish.jsonl" pubsub "$url/pub-$rep?self=1" --subscriber-url "$url/pub-$rep" \
    -p $PUBS -m $SUBS -k $INFLIGHT -d $DUR -w $WARM -s $SIZE --label "$c" --max-time 60 "${cpu[@]}"
  lg "$OUT/fanout.jsonl" broadcast "$url/fan-$rep?sub={i}" --publisher-url "$url/fan-$rep" \
    -m $FANOUT -r $ROUNDS -s $SIZE --label "$c" --settle-max 30 --max-time 90 "${cpu[@]}"
  lg "$OUT/latency.jsonl" pubsub "$url/lat-$rep?self=1" --subscriber-url "$url/lat-$rep" \
    -p 1 -m 1 -k 1 -d $LAT_DUR -w $WARM -s $SIZE --label "$c" --max-time 60 "${cpu[@]}"
}
for rep in $(seq "$REPS"); do
  order=$CONFIGS; [ $((rep % 2)) = 1 ] || order=$(echo "$CONFIGS" | tr ' ' '\n' | tac | tr '\n' ' ')
  log "repetition $rep of $REPS: $order"
  for c in $order; do measure "$c" "$rep"; done
done
# Where the clustered nodes' Redis time went (per command: calls, µs per call).
for setting in off on; do
  redis-cli -p "${REDIS_OF[cluster-$setting]}" info commandstats > "$OUT/logs/redis-cluster-$setting-commandstats.txt" 2>&1 || true
done

# ------------------------------------------------------------------ report
export SMOKE PINNING LOAD_BEFORE
PARAMS="{\"repetitions\": $REPS, \"publishers\": $PUBS, \"subscribers\": $SUBS, \"inflight\": $INFLIGHT, \"duration_s\": $DUR, \"warmup_s\": $WARM, \"fanout_subscribers\": $FANOUT, \"rounds\": $ROUNDS, \"latency_duration_s\": $LAT_DUR, \"size\": $SIZE}" \
  python3 "$BENCH/history-report.py" "$OUT"
log "done in $(( $(date +%s) - T_START )) s; results in $OUT"
