# Shared by the benchmark drivers that start servers of their own
# (cluster.sh, scale.sh, hold.sh, history.sh): where the binaries are, CPU pinning, a
# time limit on the whole run, every started process stopped on exit, and a
# private redis-server. Sourced; expects ROOT, OUT, PROFILE, PIN, RUN_LIMIT,
# NAME and `log`/`die` to be set by the driver.

# bench_paths: TARGET, REL (the profile's binaries), LOADGEN, T_START,
# LOAD_BEFORE; OUT made absolute, with its logs/.
bench_paths() {
  mkdir -p "$OUT/logs"
  OUT=$(cd "$OUT" && pwd)
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  REL=$TARGET/release; [ "$PROFILE" = release ] || REL=$TARGET/debug
  LOADGEN=$REL/loadgen
  T_START=$(date +%s)
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
}

# bench_pinning SERVERS_TEXT: servers on CPU 0 (SERVER_PIN), load generators
# on CPU 1 (LOAD_PIN), when taskset and 2+ CPUs are there and PIN=1;
# PINNING says which, for the report.
bench_pinning() {
  NCPU=$(nproc)
  if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$NCPU" -ge 2 ]; then
    SERVER_PIN=(taskset -c 0); LOAD_PIN=(taskset -c 1)
    PINNING="$1 on CPU 0, load generators on CPU 1"
  else
    SERVER_PIN=(); LOAD_PIN=(); PINNING="none"
  fi
}

# stop PID...: TERM, then KILL after 3 s.
stop() {
  local pid
  for pid; do kill "$pid" 2>/dev/null || true; done
  for pid; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# bench_processes: PIDS (append every process started), a watchdog that
# stops the run past RUN_LIMIT seconds, and everything stopped on exit.
bench_processes() {
  PIDS=()
  (
    trap 'kill $nap 2>/dev/null; exit 0' TERM
    sleep "$RUN_LIMIT" & nap=$!; wait $nap
    echo "[$NAME] time limit of $RUN_LIMIT s reached" >&2; kill -TERM $$
  ) &
  PIDS+=($!)
  trap 'stop "${PIDS[@]}"' EXIT
  trap 'exit 130' INT TERM
}

port() { "$LOADGEN" free-port; }

# start_redis: a private redis-server on a free loopback port, pinned with
# the servers, no persistence: REDIS_PORT, REDIS_PID, REDIS_URL.
start_redis() {
  REDIS_PORT=$(port)
  "${SERVER_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    > "$OUT/logs/redis.log" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || { cat "$OUT/logs/redis.log" >&2; die "redis-server"; }
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT
  log "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
}

# build_fanout_bench: with BUILD=1, wsgate and the load generator in PROFILE
# and bench/fanout-plugin; then WASM (the plugin), and every binary checked.
build_fanout_bench() {
  command -v redis-server >/dev/null || die "redis-server not found"
  if [ "$BUILD" = 1 ]; then
    log "cargo build --profile $PROFILE -p wsgate -p wsgate-bench; bench/fanout-plugin"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p wsgate -p wsgate-bench)
    CARGO_TARGET_DIR=$TARGET/bench-fanout cargo build --quiet --release --target wasm32-wasip2 \
      --manifest-path "$ROOT/bench/fanout-plugin/Cargo.toml" > "$OUT/logs/build-plugin.log" 2>&1 \
      || { cat "$OUT/logs/build-plugin.log" >&2; die "fanout plugin build"; }
  fi
  WASM=$TARGET/bench-fanout/wasm32-wasip2/release/fanout.wasm
  for f in "$REL/wsgate" "$LOADGEN" "$WASM"; do [ -f "$f" ] || die "missing $f (build first)"; done
}
