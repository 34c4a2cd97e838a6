#!/usr/bin/env bash
# One wsgate process holding 19,000 idle WebSocket connections.
#
#   bench/hold.sh            19,000 connections: results in bench/results/hold/
#   bench/hold.sh --quick    2,000 connections (smoke check): bench/results/hold/quick/
#   bench/hold.sh --n=50000  more than one process may hold: several (below)
#
# Raises the open-files limit as far as this shell may (`ulimit -n` up to
# `ulimit -Hn`). More connections than one process may hold (the limit
# minus 500) are held by as many wsgate processes as it takes, sharing the
# port (--reuse-port: the kernel spreads the connections), with one load
# generator each; RSS, descriptors, CPU and /admin/info's count are summed
# over the processes. Starts release wsgate with the Rust echo plugin
# (/ws/echo) and the connection limits lifted ([limits] max_connections,
# max_connections_per_ip) and a 2 s ping interval (so that the idle CPU
# measured below is mostly pings: the per-ping cost, hence what the default
# 30 s costs per connection), then:
#
#   1. an honest client's echo round trip (one connection, one message in
#      flight, `loadgen echo -c 1 -k 1`) with nothing else held: the baseline;
#   2. `loadgen idle -n N` (spread over 127.0.0.1 and 127.0.0.2, 256
#      handshakes at once) and, once all are up: the server's VmRSS (before
#      and while held, per connection), its open descriptors, /admin/info's
#      connection count, its CPU over 10 s of holding (pings only);
#   3. the honest client's echo round trip again, while the N are held;
#   4. RSS once more, then the idle connections are let go.
#
# Options: --quick, --n=N (connections), --ping=DURATION (timeouts.ping_interval, default 2s; with 30s,
# the default, the RSS is read before any connection was pinged), --no-build,
# --no-pin, --dev, --out=DIR, --plugins=DIR (a directory with echo.wasm, built
# already: with --no-build; default TARGET/bench-hold-plugins).
#
# wsgate is pinned to CPU 0 and the load generators to CPU 1 (when taskset
# and 2+ CPUs are there). Every process started here is stopped on exit;
# every step is bounded in time. Exits non-zero when a step fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
QUICK=0 BUILD=1 PIN=1 OUT= PROFILE=release N= PING=2s PLUGINS=
for arg; do
  case $arg in
    --quick) QUICK=1 ;;
    --n=*) N=${arg#--n=} ;;
    --ping=*) PING=${arg#--ping=} ;;
    --no-build) BUILD=0 ;;
    --no-pin) PIN=0 ;;
    --dev) PROFILE=dev ;;
    --plugins=*) PLUGINS=${arg#--plugins=} ;;
    --out=*) OUT=${arg#--out=} ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$N" ] || { N=19000; [ $QUICK = 0 ] || N=2000; }
[ -n "$OUT" ] || { OUT=$BENCH/results/hold; [ $QUICK = 0 ] || OUT=$OUT/quick; }
NAME=hold
. "$BENCH/lib/processes.sh"
bench_paths
RUN_LIMIT=300
IDLE_CPU_S=10

log() { printf '[hold %3ss] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ------------------------------------------------------------------ limits
HARD=$(ulimit -Hn)
ulimit -n "$HARD" 2>/dev/null || true
FDS=$(ulimit -n)
PROCS=1
if [ "$FDS" != unlimited ] && [ "$N" -gt $((FDS - 500)) ]; then
  PROCS=$(( (N + FDS - 501) / (FDS - 500) ))
  log "open-files limit $FDS: $N connections held by $PROCS wsgate processes on one port"
fi
# Source addresses, each with the ephemeral port range, shared by the load
# generators: one per 5,000 connections, as in run.sh (the kernel's search
# for a free port slows as an address's range fills).
SOURCES=$(( N / 5000 + 1 )); [ "$SOURCES" -ge 2 ] || SOURCES=2
log "ulimit -n $FDS (hard $HARD); $N connections; ip_local_port_range $(tr '\t' ' ' < /proc/sys/net/ipv4/ip_local_port_range)"

bench_pinning wsgate

# ------------------------------------------------------------------ build
[ -n "$PLUGINS" ] || PLUGINS=$TARGET/bench-hold-plugins
if [ $BUILD = 1 ]; then
  log "cargo build --profile $PROFILE -p wsgate -p wsgate-bench; the echo plugin"
  (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p wsgate -p wsgate-bench)
  rm -rf "$PLUGINS"
  "$ROOT/scripts/build-rust-plugins.sh" "$PLUGINS" echo > "$OUT/logs/build-plugin.log" 2>&1 \
    || { cat "$OUT/logs/build-plugin.log" >&2; die "echo plugin build"; }
fi
for f in "$REL/wsgate" "$LOADGEN" "$PLUGINS/echo.wasm"; do [ -f "$f" ] || die "missing $f (build first)"; done

# ------------------------------------------------------------------ processes
bench_processes

CONFIG=$OUT/logs/wsgate.toml
cat > "$CONFIG" <<EOF
[limits]
max_connections = 100000
max_connections_per_ip = 1000000

[timeouts]
ping_interval = "$PING"
EOF
export WSGATE_ADMIN__TOKEN=bench-$RANDOM$RANDOM
PORT=$(port)
SERVERS=() ADMINS=() REUSE=()
[ "$PROCS" = 1 ] || REUSE=(--reuse-port)
admin_info() { # ADMIN_PORT
  curl -sf --max-time 5 -H "Authorization: Bearer $WSGATE_ADMIN__TOKEN" "http://127.0.0.1:$1/admin/info"
}
for i in $(seq "$PROCS"); do
  ADMIN=$(port)
  RUST_LOG=${BENCH_RUST_LOG:-warn} "${SERVER_PIN[@]}" "$REL/wsgate" --config "$CONFIG" "${REUSE[@]}" \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --plugins "$PLUGINS" --no-watch \
    > "$OUT/logs/wsgate-$i.log" 2>&1 &
  PIDS+=("$!"); SERVERS+=("$!"); ADMINS+=("$ADMIN")
  # Each process has its plugin loaded before the next starts, so the
  # kernel never hands a connection to one that cannot route it yet.
  for _ in $(seq 1200); do
    admin_info "$ADMIN" 2>/dev/null | jq -e '.server.ready' >/dev/null 2>&1 && break
    kill -0 "${SERVERS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  admin_info "$ADMIN" | jq -e '.server.ready' >/dev/null 2>&1 || { tail -n 20 "$OUT/logs/wsgate-$i.log" >&2; die "wsgate $i not ready"; }
done
PID=${SERVERS[0]}
URL=ws://127.0.0.1:$PORT/ws/echo
"$LOADGEN" wait "$URL" --timeout 120 2>>"$OUT/logs/wsgate-1.log" || { tail -n 20 "$OUT/logs/wsgate-1.log" >&2; die "wsgate not ready"; }
SERVER_NOFILE=$(awk '/Max open files/ {print $4}' "/proc/$PID/limits")
log "wsgate on $PORT ($PROCS process(es): ${SERVERS[*]}, open-files limit $SERVER_NOFILE each)"

# Summed over the server processes.
sum() { local f=$1 p t=0; for p in "${SERVERS[@]}"; do t=$(( t + $($f "$p") )); done; echo "$t"; }
rss() { sum rss_of; }
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Kernel side (whole machine, so both ends of every loopback connection, and
# whatever else runs here): slab KiB, and TCP buffer pages from sockstat.
slab() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
conntrack() { cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo null; }
tcpmem() { awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
fds() { sum fds_of; }
fds_of() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
ticks() { sum ticks_of; }
ticks_of() { awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
admin_conns() {
  local a n t=0
  for a in "${ADMINS[@]}"; do
    n=$(admin_info "$a" | jq -r '.connections.total' 2>/dev/null) || { echo null; return; }
    t=$(( t + n ))
  done
  echo "$t"
}
honest() { # LABEL: one JSON line
  "${LOAD_PIN[@]}" "$LOADGEN" echo "$URL" -c 1 -k 1 -d 3 -w 0.5 -s 32 --label "$1" --max-time 30 --json \
    2>>"$OUT/logs/loadgen.log" || { tail -n 3 "$OUT/logs/loadgen.log" >&2; die "honest client ($1)"; }
  tail -n 1 "$OUT/logs/loadgen.log" >&2
}
: > "$OUT/logs/loadgen.log"

sleep 0.5
ECHO_ALONE=$(honest alone)
RSS0=$(rss) FDS0=$(fds) SLAB0=$(slab) TCPMEM0=$(tcpmem)
# One load generator per server process, each with its share (a process
# of its own has its own open-files limit).
READY=$OUT/logs/idle-ready IDLE_PIDS=()
for i in $(seq "$PROCS"); do
  share=$(( N / PROCS )); [ "$i" = 1 ] && share=$(( N - (PROCS - 1) * (N / PROCS) ))
  "${LOAD_PIN[@]}" "$LOADGEN" idle "ws://127.0.0.1:$PORT/ws/echo" -n "$share" --hold 60 --sources "$SOURCES" \
    --connect-concurrency 256 --max-time 200 --json > "$READY.$i" 2>>"$OUT/logs/loadgen.log" &
  IDLE_PIDS+=("$!"); PIDS+=("$!")
done
all_ready() { local i; for i in $(seq "$PROCS"); do grep -q READY "$READY.$i" || return 1; done; }
for _ in $(seq 1800); do
  all_ready && break
  for p in "${IDLE_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || break 2; done
  sleep 0.1
done
all_ready || { tail -n 3 "$OUT/logs/loadgen.log" >&2; die "loadgen idle did not get ready"; }
CONNECTED=0 FAILED=0
for i in $(seq "$PROCS"); do
  CONNECTED=$(( CONNECTED + $(sed -n 's/^READY connected=\([0-9]*\).*/\1/p' "$READY.$i") ))
  FAILED=$(( FAILED + $(sed -n 's/^READY .*failed=\([0-9]*\).*/\1/p' "$READY.$i") ))
done
CONNECT_S=$(grep -o 'in [0-9.]* s' "$OUT/logs/loadgen.log" | tail -n 1 | grep -o '[0-9.]*')
log "$CONNECTED connected, $FAILED failed (in ${CONNECT_S:-?} s)"
sleep 1
RSS1=$(rss) FDS1=$(fds) ADMIN_CONNS=$(admin_conns) SLAB1=$(slab) TCPMEM1=$(tcpmem) CONNTRACK1=$(conntrack)
T0=$(ticks); sleep $IDLE_CPU_S; T1=$(ticks)
ECHO_HELD=$(honest held)
RSS2=$(rss)
for p in "${IDLE_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "loadgen idle exited while holding"; done
STILL=$CONNECTED
log "RSS $RSS0 -> $RSS1 KiB ($(awk -v a=$RSS1 -v b=$RSS0 -v n=$CONNECTED 'BEGIN{printf "%.2f", (a-b)/n}') KiB per connection), $RSS2 KiB after the echo; fds $FDS0 -> $FDS1"
kill "${IDLE_PIDS[@]}" 2>/dev/null || true; wait "${IDLE_PIDS[@]}" 2>/dev/null || true

# ------------------------------------------------------------------ report
CLK_TCK=$(getconf CLK_TCK)
python3 - "$OUT" <<EOF
import json, os, subprocess, sys
out = sys.argv[1]
null = None
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
n, rss0, rss1, rss2 = $CONNECTED, $RSS0, $RSS1, $RSS2
alone, held = json.loads('''$ECHO_ALONE'''), json.loads('''$ECHO_HELD''')
idle_cpu_pct = 100.0 * ($T1 - $T0) / $CLK_TCK / $IDLE_CPU_S
ping_s = float("$PING".rstrip("s"))
pings_per_s = n / ping_s
r = {
    "connections": n, "failed": $FAILED, "requested": $N, "connect_s": ${CONNECT_S:-None},
    "processes": $PROCS,
    "ulimit_n": "$FDS", "ulimit_hn": "$HARD", "server_nofile": "$SERVER_NOFILE",
    "server_fds_before": $FDS0, "server_fds_held": $FDS1, "admin_connections": "$ADMIN_CONNS",
    "rss_before_kib": rss0, "rss_held_kib": rss1, "rss_after_echo_kib": rss2,
    "kib_per_conn": (rss1 - rss0) / n, "total_rss_mib": rss1 / 1024,
    "ping_interval": "$PING", "idle_cpu_pct": idle_cpu_pct,
    "slab_kib_before": $SLAB0, "slab_kib_held": $SLAB1,
    "slab_kib_per_socket": ($SLAB1 - $SLAB0) / (2 * n),
    "conntrack_entries_held": $CONNTRACK1,
    "conntrack_max": $(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo null),
    "tcp_mem_pages_before": $TCPMEM0, "tcp_mem_pages_held": $TCPMEM1,
    "cpu_us_per_ping": idle_cpu_pct * 1e4 / pings_per_s,
    "echo_alone": alone, "echo_held": held,
    "meta": {"date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"), "kernel": os.uname().release,
             "nproc": os.cpu_count(), "pinning": "$PINNING", "loadavg_before": "$LOAD_BEFORE",
             "loadavg_after": sh("cut -d' ' -f1-3 /proc/loadavg"),
             "commit": sh("git -C '$ROOT' rev-parse --short HEAD"),
             "ip_local_port_range": sh("cat /proc/sys/net/ipv4/ip_local_port_range")},
}
md = f"""| measurement | value |
|---|--:|
| idle connections held by {'one wsgate process' if r['processes'] == 1 else str(r['processes']) + ' wsgate processes (summed below)'} | {n:,} of {r['requested']:,} ({r['failed']} failed, connected in {r['connect_s']} s) |
| open-files limit (ulimit -n / -Hn; the server's) | {r['ulimit_n']} / {r['ulimit_hn']}; {r['server_nofile']} |
| server descriptors open, before / while held | {r['server_fds_before']:,} / {r['server_fds_held']:,} |
| /admin/info connections while held | {r['admin_connections']} |
| server RSS before / while held / after the echo check (MiB) | {rss0/1024:.1f} / {rss1/1024:.1f} / {rss2/1024:.1f} |
| **RSS per idle connection (KiB)** | **{r['kib_per_conn']:.2f}** |
| kernel slab growth per socket (KiB; 2 sockets per loopback connection, machine-wide, so approximate) | {r['slab_kib_per_socket']:.2f} |
| TCP buffer pages (sockstat mem), before / held | {r['tcp_mem_pages_before']} / {r['tcp_mem_pages_held']} |
| conntrack entries while held (nf_conntrack_max) | {r['conntrack_entries_held']} ({r['conntrack_max']}) |
| server CPU while holding, pings every $PING ({pings_per_s:,.0f} pings/s) | {idle_cpu_pct:.1f} % of a core = {r['cpu_us_per_ping']:.1f} µs per ping round trip |
| honest client echo p50 / p99 (µs), nothing held | {alone['p50_us']:.0f} / {alone['p99_us']:.0f} ({alone['msg_per_s']:,.0f} msg/s, 1 in flight) |
| honest client echo p50 / p99 (µs), {n:,} held | {held['p50_us']:.0f} / {held['p99_us']:.0f} ({held['msg_per_s']:,.0f} msg/s, 1 in flight) |
"""
json.dump(r, open(os.path.join(out, "results.json"), "w"), indent=1)
open(os.path.join(out, "summary.md"), "w").write(md)
print(md, end="")
EOF
log "done in $(( $(date +%s) - T_START )) s; results in $OUT"
