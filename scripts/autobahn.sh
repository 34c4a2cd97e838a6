#!/usr/bin/env bash
# Runs Autobahn|Testsuite (every case: RFC 6455 conformance, and RFC 7692
# permessage-deflate in 12.* and 13.*, so the server runs with it on) against
# wsgate's /ws/echo and prints its closing "N passed, N failed" line. Fails
# on any failed case, and on any case passed only non-strictly.
# Usage: scripts/autobahn.sh [OUT_DIR]
# Needs ../shared/autobahn (beside this repository); its setup installs
# python2.7 and wstest on first use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
AUTOBAHN=${AUTOBAHN_DIR:-$ROOT/../shared/autobahn}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
[ -x "$AUTOBAHN/run.sh" ] || { echo "Autobahn runner not found at $AUTOBAHN" >&2; exit 1; }
cd "$ROOT"
# Autobahn's wstest needs python2.7. A pyenv shim can shadow a real one
# without working; then select pyenv's own 2.7 alongside the current python3.
if command -v pyenv >/dev/null && ! python2.7 --version >/dev/null 2>&1; then
  py27=$(pyenv versions --bare 2>/dev/null | grep '^2\.7' | tail -1 || true)
  if [ -n "$py27" ]; then export PYENV_VERSION="$py27:$(pyenv version-name)"; fi
fi
"$ROOT/scripts/setup.sh"
# WSGATE_BIN picks an already built server (the test script passes its own).
BIN=${WSGATE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet -p wsgate
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET_DIR/release/wsgate
fi
PLUGINS=$(mktemp -d)
# WSGATE_TEST_PLUGINS holds the example plugins already built (the test
# script passes its own); otherwise the echo plugin is built here.
if [ -f "${WSGATE_TEST_PLUGINS:-/nonexistent}/echo.wasm" ]; then
  cp "$WSGATE_TEST_PLUGINS/echo.wasm" "$PLUGINS/"
else
  "$ROOT/scripts/build-rust-plugins.sh" "$PLUGINS" echo >/dev/null
fi
# A port below the kernel's ephemeral range, which no outgoing connection
# (the tests and benchmarks CI runs beside this open thousands) can take
# before the server binds it.
PORT=$(python3 - <<'EOF'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(10000, low), 64) if low > 10064 else []:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        break
    except OSError:
        pass
else:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
print(port)
EOF
)
# Autobahn's 9.* cases send messages of up to 16 MiB (the queue and
# reassembly budgets must hold at least one message).
export WSGATE_LIMITS__SEND_QUEUE_BYTES=134217728 WSGATE_LIMITS__REASSEMBLY_BYTES=134217728
"$BIN" --listen "127.0.0.1:$PORT" --plugins "$PLUGINS" \
  --max-message-size 67108864 --permessage-deflate --no-admin --no-watch >"$OUT/wsgate.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
ready=
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && { ready=1; break; }
  kill -0 $SERVER 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || { echo "wsgate did not get ready:" >&2; cat "$OUT/wsgate.log" >&2; exit 1; }
"$AUTOBAHN/run.sh" "ws://127.0.0.1:$PORT/ws/echo" "$OUT" wsgate | tee "$OUT/summary.txt"
# Passing is not enough: every case must pass the way the RFC says
# (the runner lists the others on its `strict:` line).
if ! grep -q '^strict: 0 ' "$OUT/summary.txt"; then
  echo "Autobahn: some cases passed only non-strictly (see the strict: line above)" >&2
  exit 1
fi
if ! grep -q '^517 passed, 0 failed, 0 skipped$' "$OUT/summary.txt"; then
  echo "Autobahn: not every one of its 517 cases ran and passed (log: $OUT/wsgate.log)" >&2
  exit 1
fi
