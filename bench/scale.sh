#!/usr/bin/env bash
# Per-node cost as a cluster grows: 1, 2 and 4 wsgate nodes over one Redis.
#
#   bench/scale.sh            full run (about six minutes): results in bench/results/scale/
#   bench/scale.sh --quick    tiny sizes (smoke check, well under a minute):
#                             results in bench/results/scale/quick/
#
# Starts a private redis-server, then for each cluster size N (1, 2, 4; and a
# node without --cluster, the standalone reference) N release nodes, all
# `--cluster redis://...` with bench/fanout-plugin (plus fanout.toml), the
# same config as bench/cluster.sh. Every node gets the same fixed load, and
# all of it local: node k runs P sender/receiver pairs (`loadgen relay`, open
# loop at R msg/s per node), pair i on channel `SETUP-N-CASE-rREP-nk-i`
# (/ws/fanout/{channel}: the plugin publishes each message to its channel,
# sender excepted), sender and receiver both on node k. So a channel's
# members are all on one node (channel i of the cluster on node i mod N) and
# no delivery needs another node. Measured per node over a window of D
# seconds (after a warm-up), all N load generators at once (full run: 25
# pairs and 1000 msg/s per node, 10 s after 2 s, three repetitions; the rate
# is low enough that four nodes of the old routing and Redis stay well
# under one core, so the per-message figures are not those of a saturated,
# batching server):
#
#   - messages delivered and msg/s (the load generator's count),
#   - the node's CPU (utime + stime from /proc/PID/stat) and so
#     **CPU µs per delivered message on each node**,
#   - Redis: INFO deltas (total_commands_processed, total_net_input_bytes,
#     total_net_output_bytes, used_cpu_sys + used_cpu_user) per delivered
#     message of the whole cluster; PUBSUB CHANNELS / NUMSUB (what the nodes
#     subscribe to),
#   - CPU 0 and CPU 1 busy (from /proc/stat): whether the servers' core was
#     saturated.
#
# With a single bus channel that every node decodes (the routing before
# partitioned subscriptions), a node's CPU per message rises with N; with
# per-partition subscriptions it should stay flat.
#
# Bystander case (N >= 2): only node 0 has load (4000 msg/s, its own
# channels); nodes 1..N-1 have no member of any channel. Their CPU per
# message of node 0's is what a node pays for traffic it has no recipient
# for: before, every frame of the bus; after, nothing.
#
# Cross case (full runs, N >= 2): the same as local, but node k's senders'
# receivers are on node k+1 (mod N): every delivery crosses Redis.
#
# Options: --quick, --no-build (use the binaries already built), --no-pin,
#          --dev (the dev profile's binaries; smoke check only), --out=DIR,
#          --nodes="1 2 4" (cluster sizes), --rate=R (msg/s per node),
#          --bystander-rate=R (node 0's in the bystander case), --no-cross.
#
# The servers (nodes and Redis) are pinned to CPU 0, the load generators to
# CPU 1 (when taskset and 2+ CPUs are there). Every process started here is
# stopped on exit; every step is bounded in time. Exits non-zero when a step
# fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
QUICK=0 BUILD=1 PIN=1 OUT= PROFILE=release NODES= RATE= BY_RATE= CROSS=1
for arg; do
  case $arg in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-pin) PIN=0 ;;
    --dev) PROFILE=dev ;;
    --out=*) OUT=${arg#--out=} ;;
    --nodes=*) NODES=${arg#--nodes=} ;;
    --rate=*) RATE=${arg#--rate=} ;;
    --bystander-rate=*) BY_RATE=${arg#--bystander-rate=} ;;
    --no-cross) CROSS=0 ;;
    -h|--help) sed -n '2,54p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { OUT=$BENCH/results/scale; [ $QUICK = 0 ] || OUT=$OUT/quick; }
NAME=scale
. "$BENCH/lib/processes.sh"
bench_paths

# ------------------------------------------------------------------ parameters
if [ $QUICK = 1 ]; then
  REPS=1 PAIRS=4 DUR=2 WARM=1 CROSS=0
  : "${NODES:=1 2}" "${RATE:=500}" "${BY_RATE:=1000}"
else
  REPS=3 PAIRS=25 DUR=10 WARM=2
  : "${NODES:=1 2 4}" "${RATE:=1000}" "${BY_RATE:=4000}"
fi
INFLIGHT=32   # cap per pair: the load is paced by --rate, not by this
SIZE=32
READY_TIMEOUT=60
RUN_LIMIT=1200; [ $QUICK = 0 ] || RUN_LIMIT=120

bench_pinning "nodes and Redis"

log() { printf '[scale %3ss] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ------------------------------------------------------------------ build
command -v redis-server >/dev/null || die "redis-server not found"
command -v jq >/dev/null || die "jq not found"
if [ $BUILD = 1 ]; then
  log "cargo build --profile $PROFILE -p wsgate -p wsgate-bench; bench/fanout-plugin"
  (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p wsgate -p wsgate-bench)
  CARGO_TARGET_DIR=$TARGET/bench-fanout cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$BENCH/fanout-plugin/Cargo.toml" > "$OUT/logs/build-plugin.log" 2>&1 \
    || { cat "$OUT/logs/build-plugin.log" >&2; die "fanout plugin build"; }
fi
WASM=$TARGET/bench-fanout/wasm32-wasip2/release/fanout.wasm
for f in "$REL/wsgate" "$LOADGEN" "$WASM"; do [ -f "$f" ] || die "missing $f (build first)"; done
"$LOADGEN" relay --help | grep -q -- '--rate' || die "$LOADGEN has no --rate (rebuild wsgate-bench)"
PLUGINS=$TARGET/bench-scale-plugins
rm -rf "$PLUGINS"; mkdir -p "$PLUGINS"
cp "$WASM" "$BENCH/fanout-plugin/fanout.toml" "$PLUGINS/"

# ------------------------------------------------------------------ processes
bench_processes
start_redis
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

CONFIG=$OUT/logs/wsgate.toml
cat > "$CONFIG" <<EOF
[limits]
max_connections_per_ip = 100000

[cluster]
heartbeat = "500ms"
node_ttl = "3s"
EOF
export WSGATE_ADMIN__TOKEN=bench-$RANDOM$RANDOM

NODE_PID=() NODE_PORT=() NODE_ADMIN=()
start_nodes() { # N CLUSTER(0|1)
  local n=$1 cl=$2 k args
  NODE_PID=() NODE_PORT=() NODE_ADMIN=()
  for k in $(seq 0 $((n - 1))); do
    NODE_PORT[k]=$(port); NODE_ADMIN[k]=$(port)
    args=(); [ "$cl" = 1 ] && args=(--cluster "$REDIS_URL")
    RUST_LOG=${BENCH_RUST_LOG:-warn} "${SERVER_PIN[@]}" "$REL/wsgate" --config "$CONFIG" \
      --listen "127.0.0.1:${NODE_PORT[k]}" --admin-listen "127.0.0.1:${NODE_ADMIN[k]}" \
      --plugins "$PLUGINS" --no-watch "${args[@]}" > "$OUT/logs/node-$n-$k.log" 2>&1 &
    NODE_PID[k]=$!; PIDS+=("${NODE_PID[k]}")
  done
  for k in $(seq 0 $((n - 1))); do
    "$LOADGEN" wait "ws://127.0.0.1:${NODE_PORT[k]}/ws/fanout" --timeout $READY_TIMEOUT 2>>"$OUT/logs/node-$n-$k.log" \
      || { tail -n 20 "$OUT/logs/node-$n-$k.log" >&2; die "node $k of $n not ready"; }
  done
  [ "$cl" = 1 ] || return 0
  local all
  for _ in $(seq 100); do
    all=1
    for k in $(seq 0 $((n - 1))); do [ "$(nodes_seen "$k")" = "$n" ] || all=0; done
    [ $all = 1 ] && return 0
    sleep 0.1
  done
  die "the $n nodes do not all list $n nodes"
}
nodes_seen() { # K: how many nodes node K's /admin/info lists
  curl -sf --max-time 2 -H "Authorization: Bearer $WSGATE_ADMIN__TOKEN" \
    "http://127.0.0.1:${NODE_ADMIN[$1]}/admin/info" | jq -r '.cluster.nodes | length' 2>/dev/null || echo 0
}
stop_nodes() { stop "${NODE_PID[@]}"; }

# snap: one JSON object: the time, Redis INFO counters, CPU 0 and CPU 1
# jiffies (/proc/stat), each node's and Redis's utime+stime ticks.
ticks() { awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat" 2>/dev/null || echo null; }
cpuline() { awk -v c="$1" '$1 == c { printf "[%s,%s,%s,%s,%s,%s,%s,%s]", $2,$3,$4,$5,$6,$7,$8,$9 }' /proc/stat; }
snap() {
  local info k v out nodes=
  info=$( { rcli INFO stats; rcli INFO cpu; } 2>/dev/null | tr -d '\r')
  out="{\"t\": $(date +%s.%N)"
  for k in total_commands_processed total_net_input_bytes total_net_output_bytes used_cpu_sys used_cpu_user pubsub_channels; do
    v=$(sed -n "s/^$k://p" <<< "$info"); out+=", \"$k\": ${v:-null}"
  done
  out+=", \"cpu0\": $(cpuline cpu0), \"cpu1\": $(cpuline cpu1), \"redis_ticks\": $(ticks "$REDIS_PID")"
  for k in "${!NODE_PID[@]}"; do nodes+="${nodes:+, }$(ticks "${NODE_PID[k]}")"; done
  echo "$out, \"node_ticks\": [$nodes]}"
}
pubsub() { # JSON: the bus channels and their subscriber counts
  local chans n=0 subs=0 names=
  mapfile -t chans < <(rcli PUBSUB CHANNELS '*' 2>/dev/null | tr -d '\r' | sort)
  if [ ${#chans[@]} -gt 0 ]; then
    subs=$(rcli PUBSUB NUMSUB "${chans[@]}" 2>/dev/null | awk 'NR % 2 == 0 { s += $1 } END { print s + 0 }')
  fi
  n=${#chans[@]}
  names=$(printf '%s\n' "${chans[@]:0:8}" | jq -R . | jq -sc .)
  echo "{\"channels\": $n, \"subscriptions\": $subs, \"first_channels\": $names}"
}

# ------------------------------------------------------------------ measurements
RESULTS=$OUT/scale.jsonl
rm -f "$RESULTS"; : > "$OUT/logs/loadgen.log"
CLK_TCK=$(getconf CLK_TCK)
# measure SETUP N CASE REP: N load generators at once, one per node.
measure() {
  local setup=$1 n=$2 case=$3 rep=$4 k to lpids=() files=() s0 s1 ps rc=0
  local senders=$n rate=$RATE
  # bystander: only node 0 has load (BY_RATE); the others have no member
  # of any channel and should have nothing to do.
  [ "$case" = bystander ] && senders=1 rate=$BY_RATE
  for k in $(seq 0 $((senders - 1))); do
    to=$k; [ "$case" = cross ] && to=$(( (k + 1) % n ))
    local ch="$setup-$n-$case-r$rep-n$k-{i}"
    files[k]=$OUT/logs/lg-$setup-$n-$case-$rep-$k.json
    "${LOAD_PIN[@]}" "$LOADGEN" relay "ws://127.0.0.1:${NODE_PORT[k]}/ws/fanout/$ch" \
      --receiver-url "ws://127.0.0.1:${NODE_PORT[to]}/ws/fanout/$ch" \
      -c $PAIRS -k $INFLIGHT --rate "$rate" -d $DUR -w $WARM -s $SIZE \
      --label "$setup-$n-$case-n$k" --server-pid "${NODE_PID[k]}" --max-time 60 --json \
      > "${files[k]}" 2>>"$OUT/logs/loadgen.log" &
    lpids+=($!)
  done
  # The script's own window sits inside the load generators' (they start
  # measuring after connecting, 50 ms and the warm-up).
  sleep "$(awk -v w=$WARM 'BEGIN { print w + 0.5 }')"
  s0=$(snap); ps=$(pubsub)
  sleep "$(awk -v d=$DUR 'BEGIN { print d - 1.0 }')"
  s1=$(snap)
  for k in "${!lpids[@]}"; do wait "${lpids[k]}" || rc=1; done
  tail -n "$senders" "$OUT/logs/loadgen.log" >&2
  [ $rc = 0 ] || die "loadgen ($setup, $n nodes, $case, rep $rep)"
  for k in "${!NODE_PID[@]}"; do kill -0 "${NODE_PID[k]}" 2>/dev/null || die "node $k exited (log: $OUT/logs/node-$n-$k.log)"; done
  local lg; lg=$(cat "${files[@]}" | jq -sc .)
  printf '{"setup": "%s", "nodes": %s, "case": "%s", "rep": %s, "rate_per_node": %s, "pairs_per_node": %s, "clk_tck": %s, "s0": %s, "s1": %s, "pubsub": %s, "loadgen": %s}\n' \
    "$setup" "$n" "$case" "$rep" "$rate" "$PAIRS" "$CLK_TCK" "$s0" "$s1" "$ps" "$lg" >> "$RESULTS"
}
dropped() { # frames a node dropped or could not decode, from its metrics
  local k
  for k in "${!NODE_PID[@]}"; do
    curl -sf --max-time 2 -H "Authorization: Bearer $WSGATE_ADMIN__TOKEN" "http://127.0.0.1:${NODE_ADMIN[k]}/metrics" \
      | awk -v n="$1 node $k" '/^wsgate_cluster_frames/ && /dropped|undecodable/ && $NF > 0 {print n": "$0}'
  done
}

DROPPED=
run_setup() { # SETUP N
  local setup=$1 n=$2 cl=1 rep case cases=local
  [ "$setup" = standalone ] && cl=0
  if [ "$setup" = cluster ] && [ "$n" -ge 2 ]; then
    cases="local bystander"; [ "$CROSS" = 1 ] && cases+=" cross"
  fi
  start_nodes "$n" $cl
  log "$setup: $n node(s) up (pids ${NODE_PID[*]}); $PAIRS pairs x $RATE msg/s per node"
  for rep in $(seq "$REPS"); do
    for case in $cases; do measure "$setup" "$n" "$case" "$rep"; done
  done
  DROPPED+=$(dropped "$setup $n")
  stop_nodes
}
run_setup standalone 1
for n in $NODES; do run_setup cluster "$n"; done

# ------------------------------------------------------------------ report
export QUICK PINNING LOAD_BEFORE DROPPED
PARAMS="{\"repetitions\": $REPS, \"nodes\": [${NODES// /, }], \"pairs_per_node\": $PAIRS, \"rate_per_node\": $RATE, \"bystander_rate\": $BY_RATE, \"inflight_cap\": $INFLIGHT, \"duration_s\": $DUR, \"warmup_s\": $WARM, \"size\": $SIZE}" \
  python3 "$BENCH/scale-report.py" "$OUT"
[ -z "$DROPPED" ] || die "relay frames dropped or undecodable: $DROPPED"
log "done in $(( $(date +%s) - T_START )) s; results in $OUT"
