#!/usr/bin/env bash
# wsgate benchmark driver.
#
#   bench/run.sh            full run (several minutes): echo sweep, latency,
#                           broadcast to 1k/5k/10k, connect rate, idle RSS at 1k/10k/50k,
#                           hook call cost and instantiation (cargo bench)
#   bench/run.sh --quick    the same at tiny sizes, seconds each (CI smoke check):
#                           Rust plugins only, the dev profile (so it reuses what
#                           `cargo build`/`cargo test` built), results in
#                           bench/results/quick/
#
# Peers: bare-echo (tokio-tungstenite, no Wasm), Node ws (bench/node-echo) and
# Bun, uWebSockets inside (bench/bun-echo), each installed with npm ci from its
# lock file on first use; in echo, latency, connect, broadcast and idle.
#
# Options: --no-build (use the binaries already built),
#          --release / --dev (the cargo profile; default: release, dev with --quick),
#          --no-wsgate (only the peers: bare-echo, Node ws and Bun),
#          --no-plots, --out DIR,
#          --only LIST (comma-separated sections to run: echo,broadcast,idle,calls;
#                       the other sections' results of an earlier run are kept).
#
# Every server runs on a free loopback port, pinned to CPU 0; the load
# generator is pinned to CPU 1 (when taskset and 2+ CPUs are there). The load
# generator only ever targets 127.0.0.0/8 and every run of it is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
QUICK=0 BUILD=1 WSGATE=1 PLOTS=1 OUT= PROFILE= ONLY=echo,broadcast,idle,calls
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --release) PROFILE=release ;;
    --dev) PROFILE=dev ;;
    --no-build) BUILD=0 ;;
    --no-wsgate) WSGATE=0 ;;
    --no-plots) PLOTS=0 ;;
    --out) OUT=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  if [ $QUICK = 1 ]; then OUT=$BENCH/results/quick; else OUT=$BENCH/results; fi
fi
mkdir -p "$OUT" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
CACHE=${WSGATE_TOOL_CACHE:-$HOME/.cache/wsgate}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "$PROFILE" ]; then
  if [ $QUICK = 1 ]; then PROFILE=dev; else PROFILE=release; fi
fi
if [ "$PROFILE" = dev ]; then REL=$TARGET/debug; else REL=$TARGET/$PROFILE; fi
LOADGEN=$REL/loadgen
T_START=$(date +%s)

# ------------------------------------------------------------------ parameters
if [ $QUICK = 1 ]; then
  ECHO_CONNS="10 100"; ECHO_K=16; ECHO_D=1; ECHO_W=0.3
  LAT_D=1
  BCAST_SUBS="50"; BCAST_ROUNDS=5; CHAT_MAX=50
  CONNECT_D=1
  IDLE_SIZES="200 1000"; IDLE_HOLD=1
  PLUGIN_WAIT=90
else
  ECHO_CONNS="10 100 200 1000"; ECHO_K=16; ECHO_D=5; ECHO_W=1
  LAT_D=3
  BCAST_SUBS="1000 5000 10000"; BCAST_ROUNDS=30; CHAT_MAX=2000
  CONNECT_D=3
  IDLE_SIZES="1000 10000 50000"; IDLE_HOLD=2
  PLUGIN_WAIT=180
fi
ECHO_SIZE=32

# ------------------------------------------------------------------ environment
# File descriptors: 50k connections need 50k+ on each side.
want_fds=$((200 * 1000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $want_fds ]; then
  ulimit -Hn $want_fds 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
# One process can hold at most FDS sockets. Idle sizes above that are run by
# wsgate as several processes sharing the port (--reuse-port, the kernel
# spreads the connections) with as many load generators; the baselines cannot
# share a port and are capped instead (both reported). E.g. a container
# without CAP_SYS_RESOURCE may be stuck at 20000 open files.
NOTES=()
IDLE_CAP=
if [ "$FDS" != unlimited ]; then
  IDLE_CAP=$((FDS - 500))
  for n in $IDLE_SIZES; do
    if [ "$n" -gt "$IDLE_CAP" ]; then
      NOTES+=("idle size $n: over the open-files limit of $FDS per process, so wsgate runs it as $(( (n + IDLE_CAP - 1) / IDLE_CAP )) processes sharing the port (--reuse-port) and the baselines are capped to $IDLE_CAP")
    fi
  done
fi

NCPU=$(nproc)
if command -v taskset >/dev/null && [ "$NCPU" -ge 2 ]; then
  SERVER_PIN=(taskset -c 0); LOAD_PIN=(taskset -c 1); PINNING="server on CPU 0, load generator on CPU 1"
else
  SERVER_PIN=(); LOAD_PIN=(); PINNING="none (taskset missing or 1 CPU)"
fi

want() { [[ ",$ONLY," == *",$1,"* ]]; }
log() { printf '[bench %3ss] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
FAILURES=()
fail() { log "FAILED: $*"; FAILURES+=("$*"); }

# ------------------------------------------------------------------ build
if [ $BUILD = 1 ]; then
  pkgs=(-p wsgate-bench)
  [ $WSGATE = 1 ] && pkgs+=(-p wsgate)
  log "cargo build --profile $PROFILE ${pkgs[*]}"
  (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet "${pkgs[@]}")
fi
[ -x "$LOADGEN" ] && [ -x "$REL/bare-echo" ] || { echo "missing $LOADGEN or bare-echo (build first)" >&2; exit 1; }
if [ $WSGATE = 1 ] && [ ! -x "$REL/wsgate" ]; then
  echo "missing $REL/wsgate (cargo build --release -p wsgate)" >&2; exit 1
fi

PLUGINS=$TARGET/bench-plugins; [ $QUICK = 1 ] && PLUGINS=$TARGET/bench-plugins-quick
if [ $WSGATE = 1 ]; then
  if [ $BUILD = 1 ] || [ ! -f "$PLUGINS/all/echo.wasm" ]; then
    rm -rf "$PLUGINS"; mkdir -p "$PLUGINS/all"
    if [ $QUICK = 1 ]; then
      log "building the Rust example plugins (echo, chat) into $PLUGINS/all"
      build=("$ROOT/scripts/build-rust-plugins.sh" "$PLUGINS/all" echo chat)
    else
      log "building the example plugins into $PLUGINS/all"
      build=("$ROOT/scripts/build-plugins.sh" "$PLUGINS/all")
    fi
    "${build[@]}" > "$OUT/logs/build-plugins.log" 2>&1 \
      || { cat "$OUT/logs/build-plugins.log" >&2; echo "plugin build failed" >&2; exit 1; }
  fi
  # The benchmark-only fan-out plugin (broadcast, no join notices): its own
  # small workspace, built with the same toolchain as the example plugins.
  # (Not in the quick check: it would be one more wasm32 build from scratch.)
  if [ $QUICK = 0 ] && [ ! -f "$PLUGINS/all/fanout.wasm" ]; then
    log "building bench/fanout-plugin"
    CARGO_TARGET_DIR=$TARGET/bench-fanout cargo build --quiet --release --target wasm32-wasip2 \
      --manifest-path "$BENCH/fanout-plugin/Cargo.toml" >> "$OUT/logs/build-plugins.log" 2>&1 \
      || { cat "$OUT/logs/build-plugins.log" >&2; echo "fanout plugin build failed" >&2; exit 1; }
    cp "$TARGET/bench-fanout/wasm32-wasip2/release/fanout.wasm" "$PLUGINS/all/fanout.wasm"
  fi
  # One plugin directory per measured server, so that the server under test
  # does not compile (or host) plugins that are not being measured.
  rm -rf "$PLUGINS/rust" "$PLUGINS/py" "$PLUGINS/js" "$PLUGINS/fanout"
  mkdir -p "$PLUGINS/rust" "$PLUGINS/py" "$PLUGINS/js" "$PLUGINS/fanout"
  [ -f "$PLUGINS/all/fanout.wasm" ] && cp "$PLUGINS/all/fanout.wasm" "$PLUGINS/fanout/"
  for f in "$PLUGINS"/all/echo.* "$PLUGINS"/all/chat.*; do [ -e "$f" ] && cp "$f" "$PLUGINS/rust/"; done
  for f in "$PLUGINS"/all/echo-py.*; do [ -e "$f" ] && cp "$f" "$PLUGINS/py/"; done
  for f in "$PLUGINS"/all/echo-js.*; do [ -e "$f" ] && cp "$f" "$PLUGINS/js/"; done
fi

NODE_OK=0
if command -v node >/dev/null && command -v npm >/dev/null; then
  if [ ! -d "$BENCH/node-echo/node_modules/ws" ]; then
    log "npm ci in bench/node-echo"
    (cd "$BENCH/node-echo" && npm ci --no-audit --no-fund --silent) > "$OUT/logs/npm.log" 2>&1 || true
  fi
  [ -d "$BENCH/node-echo/node_modules/ws" ] && NODE_OK=1
fi
[ $NODE_OK = 1 ] || log "node/npm or the ws package missing: skipping the Node ws baseline"

# Bun from npm (@oven/bun-linux-x64: the binary ships inside the package),
# the version pinned by bench/bun-echo/package-lock.json; installed again
# when the one in node_modules is not that version.
BUN_OK=0 BUN=$BENCH/bun-echo/node_modules/@oven/bun-linux-x64/bin/bun
BUN_WANT=$(sed -n '/"node_modules\/@oven\/bun-linux-x64"/,/}/s/.*"version": "\(.*\)".*/\1/p' "$BENCH/bun-echo/package-lock.json")
if command -v npm >/dev/null && [ "$(uname -sm)" = "Linux x86_64" ]; then
  if [ "$("$BUN" --version 2>/dev/null)" != "$BUN_WANT" ]; then
    log "npm ci in bench/bun-echo (Bun $BUN_WANT)"
    (cd "$BENCH/bun-echo" && npm ci --no-audit --no-fund --silent) >> "$OUT/logs/npm.log" 2>&1 || true
  fi
  [ "$("$BUN" --version 2>/dev/null)" = "$BUN_WANT" ] && BUN_OK=1
fi
[ $BUN_OK = 1 ] || log "npm, x86_64 Linux or a working bun $BUN_WANT missing: skipping the Bun peer (log: $OUT/logs/npm.log)"

# ------------------------------------------------------------------ servers
SERVER_PID=
SERVER_PORT=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# start_server NAME WAIT_PATH WAIT_TIMEOUT CMD... (PORT in CMD is replaced by the port)
start_server() {
  local name=$1 path=$2 wait_s=$3; shift 3
  SERVER_PORT=$("$LOADGEN" free-port)
  local args=() a
  for a in "$@"; do args+=("${a//PORT/$SERVER_PORT}"); done
  # Every load comes from loopback: lift wsgate's per-IP limit (default 1000).
  WSGATE_LIMITS__MAX_CONNECTIONS_PER_IP=1000000 \
  RUST_LOG=${BENCH_RUST_LOG:-warn} "${SERVER_PIN[@]}" "${args[@]}" > "$OUT/logs/$name.log" 2>&1 &
  SERVER_PID=$!
  if ! "$LOADGEN" wait "ws://127.0.0.1:$SERVER_PORT$path" --timeout "$wait_s" 2>>"$OUT/logs/$name.log"; then
    fail "$name did not become ready on $path (log: $OUT/logs/$name.log)"
    stop_server; return 1
  fi
  log "$name ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID)"
}
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# The servers: NAME|PATH|WAIT|COMMAND...
SERVERS=()
[ $WSGATE = 1 ] && SERVERS+=("wsgate-rust|/ws/echo|60|$REL/wsgate --listen 127.0.0.1:PORT --plugins $PLUGINS/rust")
SERVERS+=("bare-echo|/|10|$REL/bare-echo --listen 127.0.0.1:PORT")
[ $NODE_OK = 1 ] && SERVERS+=("node-ws|/|10|node $BENCH/node-echo/server.js PORT")
[ $BUN_OK = 1 ] && SERVERS+=("bun|/|10|$BUN $BENCH/bun-echo/server.js PORT")
PLUGIN_SERVERS=()
if [ $WSGATE = 1 ]; then
  [ -f "$PLUGINS/py/echo-py.wasm" ] && PLUGIN_SERVERS+=("wsgate-py|/ws/echo-py|$PLUGIN_WAIT|$REL/wsgate --listen 127.0.0.1:PORT --plugins $PLUGINS/py")
  [ -f "$PLUGINS/js/echo-js.wasm" ] && PLUGIN_SERVERS+=("wsgate-js|/ws/echo-js|$PLUGIN_WAIT|$REL/wsgate --listen 127.0.0.1:PORT --plugins $PLUGINS/js")
fi

lg() { # loadgen, pinned, one JSON line appended to FILE; FILE first
  local file=$1; shift
  local line
  if line=$("${LOAD_PIN[@]}" "$LOADGEN" "$@" --json 2>>"$OUT/logs/loadgen.log"); then
    echo "$line" >> "$file"; tail -n 1 "$OUT/logs/loadgen.log" >&2
  else
    [ -n "$line" ] && echo "$line" >> "$file"
    fail "loadgen $*"; tail -n 2 "$OUT/logs/loadgen.log" >&2
  fi
}

want echo && rm -f "$OUT"/echo.jsonl "$OUT"/latency.jsonl "$OUT"/connect.jsonl
want broadcast && rm -f "$OUT"/broadcast.jsonl
want idle && rm -f "$OUT"/idle.jsonl
: > "$OUT/logs/loadgen.log"

# ------------------------------------------------------------------ echo, latency, connect rate
want echo && for spec in "${SERVERS[@]}" "${PLUGIN_SERVERS[@]}"; do
  IFS='|' read -r name path wait_s cmd <<< "$spec"
  # shellcheck disable=SC2086
  start_server "$name" "$path" "$wait_s" $cmd || continue
  url="ws://127.0.0.1:$SERVER_PORT$path"
  for c in $ECHO_CONNS; do
    lg "$OUT/echo.jsonl" echo "$url" -c "$c" -k $ECHO_K -d $ECHO_D -w $ECHO_W -s $ECHO_SIZE --label "$name" --max-time 120 --server-pid "$SERVER_PID"
  done
  # Closed loop, one message in flight: the round-trip latency of one hook call.
  lg "$OUT/latency.jsonl" echo "$url" -c 1 -k 1 -d $LAT_D -w $ECHO_W -s $ECHO_SIZE --label "$name" --max-time 60 --server-pid "$SERVER_PID"
  case $name in wsgate-py|wsgate-js) ;; *)
    lg "$OUT/connect.jsonl" connect "$url" -d $CONNECT_D -c 32 --label "$name" --max-time 60 ;;
  esac
  stop_server
done

# ------------------------------------------------------------------ broadcast
# wsgate-chat: the chat example (every text message is published to the
# channel; every join is announced to the channel, so M subscribers first cost
# a join storm of M*M/2 messages: run at the smaller sizes only).
# wsgate-fanout: bench/fanout-plugin (host broadcast, no join notices).
# bare-broadcast: bare-echo --broadcast, the same fan-out without Wasm.
# node-broadcast: Node ws, a loop over the server's clients.
# bun-broadcast: Bun, every connection subscribed to one topic and
#   server.publish (uWebSockets' pub/sub).
# One load generator holds every subscriber (one thread reads them all from
# one epoll set, raw frames, in batches every 50 us) and the publisher: with
# 2 CPUs the server has CPU 0 and all the clients CPU 1, and more client
# processes would only take turns on that one CPU; so each delivery is made
# cheap for the client instead. Whether it was the limit is reported: the
# load generator's and the server's CPU per round (/proc, --server-pid) next
# to the time until all subscribers had it.
BCAST_TARGETS=()
if [ $WSGATE = 1 ]; then
  BCAST_TARGETS+=("wsgate-chat|/ws/chat/warmup?username=probe|60|$REL/wsgate --listen 127.0.0.1:PORT --plugins $PLUGINS/rust|/ws/chat/bench?username=u{i}")
  [ -f "$PLUGINS/fanout/fanout.wasm" ] && BCAST_TARGETS+=("wsgate-fanout|/ws/fanout|60|$REL/wsgate --listen 127.0.0.1:PORT --plugins $PLUGINS/fanout|/ws/fanout?u={i}")
fi
BCAST_TARGETS+=("bare-broadcast|/|10|$REL/bare-echo --broadcast --listen 127.0.0.1:PORT|/bench?username=u{i}")
[ $NODE_OK = 1 ] && BCAST_TARGETS+=("node-broadcast|/|10|node $BENCH/node-echo/server.js PORT --broadcast|/bench?username=u{i}")
[ $BUN_OK = 1 ] && BCAST_TARGETS+=("bun-broadcast|/|10|$BUN $BENCH/bun-echo/server.js PORT --broadcast|/bench?username=u{i}")
want broadcast && for m in $BCAST_SUBS; do
  for spec in "${BCAST_TARGETS[@]}"; do
    IFS='|' read -r name path wait_s cmd sub_path <<< "$spec"
    if [ "$name" = wsgate-chat ] && [ "$m" -gt "$CHAT_MAX" ]; then continue; fi
    # shellcheck disable=SC2086
    start_server "$name-$m" "$path" "$wait_s" $cmd || continue
    sources=$(( m / 20000 + 1 ))
    lg "$OUT/broadcast.jsonl" broadcast "ws://127.0.0.1:$SERVER_PORT$sub_path" \
      -m "$m" -r $BCAST_ROUNDS --sources $sources --label "$name" --settle-max 400 --max-time 600 \
      --server-pid "$SERVER_PID"
    stop_server
  done
done

# ------------------------------------------------------------------ idle RSS
# idle_record LABEL CONNECTED BEFORE_KIB AFTER_KIB [PROCESSES]
idle_record() {
  printf '{"mode":"idle","label":"%s","connections":%s,"rss_before_kib":%s,"rss_after_kib":%s,"kib_per_conn":%s,"processes":%s}\n' \
    "$1" "$2" "$3" "$4" "$(awk -v a="$4" -v b="$3" -v n="$2" 'BEGIN{printf "%.2f", (a-b)/n}')" "${5:-1}" >> "$OUT/idle.jsonl"
  log "idle $1: $2 connections in ${5:-1} process(es): RSS $3 -> $4 KiB"
}

# idle_loadgens URL N K READY_PREFIX: K load generators holding N connections
# in all; waits until every one is READY (returns 1 if one fails first).
idle_loadgens() {
  local url=$1 n=$2 k=$3 ready=$4 i share
  LPIDS=()
  for i in $(seq "$k"); do
    share=$(( n / k )); [ "$i" = 1 ] && share=$(( n - (k - 1) * (n / k) ))
    : > "$ready.$i"
    # The same source addresses for all K: the kernel picks ports per
    # connection, so they share each address's port range. One address per
    # 5,000 connections: the kernel's search for a free port slows as an
    # address's range fills, and at 16,000 per address (50,000 on three) it
    # took the load generators 15 s to connect, some connections waiting
    # past the server's 10 s handshake timeout for their request to be sent.
    "${LOAD_PIN[@]}" "$LOADGEN" idle "$url" -n "$share" --hold $IDLE_HOLD \
      --sources $(( n / 5000 + 1 )) --connect-concurrency 256 --max-time 180 \
      > "$ready.$i" 2>>"$OUT/logs/loadgen.log" &
    LPIDS+=($!)
  done
  for _ in $(seq 1800); do
    local all=1
    for i in $(seq "$k"); do grep -q READY "$ready.$i" || all=0; done
    [ $all = 1 ] && return 0
    for i in "${LPIDS[@]}"; do kill -0 "$i" 2>/dev/null || return 1; done
    sleep 0.1
  done
  return 1
}

# idle_measure NAME N URL PID...: N idle connections against the server
# processes PID... (one load generator each); records their summed RSS
# before and while the connections are held.
idle_measure() {
  local name=$1 n=$2 url=$3; shift 3
  local pids=("$@") k=$# ready=$OUT/logs/idle-ready before=0 after=0 connected=0 p i
  sleep 0.3
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { fail "idle $name $n: server process $p is not running"; return; }
    before=$(( before + $(rss_kib "$p") ))
  done
  if ! idle_loadgens "$url" "$n" "$k" "$ready"; then
    fail "idle $name $n ($k process(es))"; tail -n 2 "$OUT/logs/loadgen.log" >&2
    kill "${LPIDS[@]}" 2>/dev/null || true; wait "${LPIDS[@]}" 2>/dev/null || true
    return
  fi
  sleep 0.5
  for p in "${pids[@]}"; do after=$(( after + $(rss_kib "$p") )); done
  for i in $(seq "$k"); do
    connected=$(( connected + $(sed -n 's/^READY connected=\([0-9]*\).*/\1/p' "$ready.$i") ))
  done
  wait "${LPIDS[@]}" || true
  if [ "$connected" -gt 0 ]; then
    idle_record "$name" "$connected" "$before" "$after" "$k"
  else
    fail "idle $name $n: no connection held"
  fi
}

want idle && for spec in "${SERVERS[@]}"; do
  IFS='|' read -r name path wait_s cmd <<< "$spec"
  for n in $IDLE_SIZES; do
    if [ -n "$IDLE_CAP" ] && [ "$n" -gt "$IDLE_CAP" ] && [ "$name" != wsgate-rust ]; then
      n=$IDLE_CAP
    fi
    if [ -n "$IDLE_CAP" ] && [ "$n" -gt "$IDLE_CAP" ]; then
      # Several wsgate processes on one port (see the note above).
      k=$(( (n + IDLE_CAP - 1) / IDLE_CAP ))
      port=$("$LOADGEN" free-port) pids=()
      for i in $(seq $k); do
        WSGATE_LIMITS__MAX_CONNECTIONS_PER_IP=1000000 RUST_LOG=warn,wsgate::server=info "${SERVER_PIN[@]}" \
          "$REL/wsgate" --listen "127.0.0.1:$port" --plugins "$PLUGINS/rust" --reuse-port --no-admin --no-watch \
          > "$OUT/logs/$name-idle-$n-$i.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 600); do
          grep -q "wsgate listening" "$OUT/logs/$name-idle-$n-$i.log" && break
          kill -0 "${pids[-1]}" 2>/dev/null || break
          sleep 0.1
        done
      done
      idle_measure "$name" "$n" "ws://127.0.0.1:$port$path" "${pids[@]}"
      kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true
      continue
    fi
    # shellcheck disable=SC2086
    start_server "$name-idle-$n" "$path" "$wait_s" $cmd || continue
    idle_measure "$name" "$n" "ws://127.0.0.1:$SERVER_PORT$path" "$SERVER_PID"
    stop_server
  done
done

# ------------------------------------------------------------------ hook calls, instantiation
# In-process, no network: what one on-message call costs (direct, and
# through the Listener a session uses), and instantiation from PluginPre per
# plugin. cargo bench builds with the release settings; the quick check
# skips this (it would be a second optimized build of the server).
if want calls && [ $QUICK = 0 ] && [ $WSGATE = 1 ]; then
  rm -f "$OUT/calls.jsonl"
  log "cargo bench: hook_call and instantiate"
  bench_plugins=()
  for p in echo chat echo-py echo-js; do [ -f "$PLUGINS/all/$p.wasm" ] && bench_plugins+=("$PLUGINS/all/$p.wasm"); done
  (cd "$ROOT" && "${SERVER_PIN[@]}" cargo bench --quiet -p wsgate --bench hook_call -- "$PLUGINS/all/echo.wasm" --json \
     && "${SERVER_PIN[@]}" cargo bench --quiet -p wsgate --bench instantiate -- "${bench_plugins[@]}" --json) \
    2>> "$OUT/logs/cargo-bench.log" | grep '^{' >> "$OUT/calls.jsonl" || fail "cargo bench (log: $OUT/logs/cargo-bench.log)"
fi

# ------------------------------------------------------------------ report
META=$OUT/meta.json
python3 - "$META" <<EOF
import json, platform, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
json.dump({
  "quick": $QUICK == 1, "profile": "$PROFILE", "nproc": int(sh("nproc") or 0), "cpu": cpu,
  "kernel": platform.release(), "pinning": "$PINNING", "fd_limit": "$FDS",
  "rustc": sh("rustc --version"), "node": sh("node --version"),
  "bun": sh("'$BUN' --version") if $BUN_OK == 1 else "",
  "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
  "echo": {"connections": "$ECHO_CONNS", "inflight": $ECHO_K, "duration_s": $ECHO_D, "warmup_s": $ECHO_W, "size": $ECHO_SIZE},
  "broadcast": {"subscribers": "$BCAST_SUBS", "rounds": $BCAST_ROUNDS},
  "idle_sizes": "$IDLE_SIZES",
  "notes": [l for l in """$(printf '%s\n' "${NOTES[@]}")""".splitlines() if l],
}, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$BENCH/report.py" "$OUT" | tee "$OUT/summary.md"

if [ $PLOTS = 1 ]; then
  PY=$CACHE/venv/bin/python
  if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    if [ $QUICK = 1 ]; then
      PY=  # the quick check does not install anything for plots
    else
      log "installing matplotlib into $CACHE/venv"
      mkdir -p "$CACHE"
      { python3 -m venv "$CACHE/venv" && "$CACHE/venv/bin/pip" install -q matplotlib; } > "$OUT/logs/venv.log" 2>&1 || PY=
    fi
  fi
  if [ -n "$PY" ]; then
    "$PY" "$BENCH/plot.py" "$OUT" || fail "plots"
  elif command -v gnuplot >/dev/null; then
    python3 "$BENCH/report.py" "$OUT" --gnuplot | gnuplot || fail "plots (gnuplot)"
  else
    log "no matplotlib or gnuplot: no plots"
  fi
fi

for n in "${NOTES[@]}"; do log "note: $n"; done
log "done in $(( $(date +%s) - T_START )) s; results in $OUT"
if [ ${#FAILURES[@]} -gt 0 ]; then
  log "${#FAILURES[@]} failure(s):"; printf '  %s\n' "${FAILURES[@]}" >&2
  exit 1
fi
