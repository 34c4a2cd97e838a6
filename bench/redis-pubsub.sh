#!/usr/bin/env bash
# What one Redis shard costs per PUBLISH, by the number of subscribers that
# receive it: the input for sizing Redis in docs/SCALING.md.
#
#   bench/redis-pubsub.sh           results in bench/results/scale/redis-pubsub.{json,md}
#   bench/redis-pubsub.sh --quick   fewer messages: bench/results/scale/quick/
#
# A private redis-server (pinned to CPU 0); K subscribers (`redis-cli
# SUBSCRIBE`, output to /dev/null, on CPU 1) on one channel; redis-benchmark
# (on CPU 1, 4 connections, 32 commands pipelined, like a node's batched
# publisher) sends M PUBLISHes of a 250-byte payload (about a wsgate bus frame
# carrying a 64-byte message). From INFO deltas: Redis CPU µs per PUBLISH,
# bytes in and out per PUBLISH, and PUBLISH/s the benchmark reached
# (bounded by the client on this 2-core machine, not only by Redis). K =
# 0, 1, 4, 16. Every subscriber must still be subscribed at the end (a slow
# one would be cut off by Redis's output-buffer limit): checked.
#
# Options: --quick, --out=DIR, --no-pin. Bounded: every step has a timeout;
# every process started here is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0 OUT= PIN=1
for arg; do
  case $arg in
    --quick) QUICK=1 ;;
    --out=*) OUT=${arg#--out=} ;;
    --no-pin) PIN=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { OUT=$ROOT/bench/results/scale; [ $QUICK = 0 ] || OUT=$OUT/quick; }
mkdir -p "$OUT/logs"; OUT=$(cd "$OUT" && pwd)
M=1000000; [ $QUICK = 0 ] || M=50000
KS="0 1 4 16"
SIZE=250
if [ $PIN = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SERVER_PIN=(taskset -c 0); LOAD_PIN=(taskset -c 1)
else
  SERVER_PIN=(); LOAD_PIN=()
fi
log() { echo "[redis-pubsub] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
command -v redis-benchmark >/dev/null || die "redis-benchmark not found"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${SERVER_PIN[@]}" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  > "$OUT/logs/redis-pubsub-server.log" 2>&1 &
RPID=$!; PIDS+=("$RPID")
for _ in $(seq 100); do redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$PORT" ping | grep -q PONG || die "redis-server"

info() { { redis-cli -p "$PORT" INFO stats; redis-cli -p "$PORT" INFO cpu; } | tr -d '\r' \
  | awk -F: '/^(total_net_input_bytes|total_net_output_bytes|used_cpu_sys|used_cpu_user|total_commands_processed):/ {printf "\"%s\": %s, ", $1, $2}'; }
: > "$OUT/redis-pubsub.jsonl"
for k in $KS; do
  SUBS=()
  for _ in $(seq "$k"); do
    "${LOAD_PIN[@]}" timeout 300 redis-cli -p "$PORT" SUBSCRIBE bench > /dev/null 2>&1 &
    SUBS+=($!); PIDS+=($!)
  done
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$PORT" PUBSUB NUMSUB bench | sed -n 2p)" = "$k" ] && break; sleep 0.1
  done
  a=$(info); t0=$(date +%s.%N)
  "${LOAD_PIN[@]}" timeout 300 redis-benchmark -p "$PORT" -c 4 -P 32 -n "$M" -q \
    PUBLISH bench "$(head -c $SIZE /dev/zero | tr '\0' x)" > "$OUT/logs/redis-pubsub-$k.log" 2>&1 \
    || die "redis-benchmark (k=$k)"
  t1=$(date +%s.%N); b=$(info)
  still=$(redis-cli -p "$PORT" PUBSUB NUMSUB bench | sed -n 2p)
  [ "$still" = "$k" ] || die "only $still of $k subscribers left (output buffer limit?)"
  echo "{\"subscribers\": $k, \"publishes\": $M, \"size\": $SIZE, \"seconds\": $(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}'), \"before\": {${a%, }}, \"after\": {${b%, }}}" >> "$OUT/redis-pubsub.jsonl"
  log "k=$k: $(tr '\r' '\n' < "$OUT/logs/redis-pubsub-$k.log" | grep -i 'requests per second' | tail -n 1)"
  for p in "${SUBS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
done

python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "redis-pubsub.jsonl"))]
md = ["| subscribers receiving each PUBLISH | PUBLISH/s reached | Redis CPU µs per PUBLISH | Redis CPU % | in B/PUBLISH | out B/PUBLISH |",
      "|--:|--:|--:|--:|--:|--:|"]
res = []
for r in rows:
    a, b, n = r["before"], r["after"], r["publishes"]
    cpu = (b["used_cpu_sys"] + b["used_cpu_user"]) - (a["used_cpu_sys"] + a["used_cpu_user"])
    x = {"subscribers": r["subscribers"], "publish_per_s": n / r["seconds"],
         "redis_cpu_us_per_publish": cpu * 1e6 / n, "redis_cpu_pct": 100 * cpu / r["seconds"],
         "in_bytes_per_publish": (b["total_net_input_bytes"] - a["total_net_input_bytes"]) / n,
         "out_bytes_per_publish": (b["total_net_output_bytes"] - a["total_net_output_bytes"]) / n,
         "size": r["size"]}
    res.append(x)
    md.append(f"| {x['subscribers']} | {x['publish_per_s']:,.0f} | {x['redis_cpu_us_per_publish']:.2f} | "
              f"{x['redis_cpu_pct']:.0f} | {x['in_bytes_per_publish']:.0f} | {x['out_bytes_per_publish']:.0f} |")
# Least squares: CPU µs per PUBLISH = base + per_subscriber * k.
ks = [x["subscribers"] for x in res]; ys = [x["redis_cpu_us_per_publish"] for x in res]
mk, my = sum(ks) / len(ks), sum(ys) / len(ys)
slope = sum((k - mk) * (y - my) for k, y in zip(ks, ys)) / sum((k - mk) ** 2 for k in ks)
fit = {"base_us": my - slope * mk, "per_subscriber_us": slope}
md.append("")
md.append(f"Fit: Redis CPU per PUBLISH ≈ {fit['base_us']:.2f} µs + {fit['per_subscriber_us']:.3f} µs per receiving subscriber "
          f"({len(ks)} points; pipelined, {rows[0]['size']}-byte payload).")
json.dump({"rows": res, "fit": fit}, open(os.path.join(out, "redis-pubsub.json"), "w"), indent=1)
open(os.path.join(out, "redis-pubsub.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
