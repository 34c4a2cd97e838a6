# Shared by ab.sh and fan-ab.sh, which run two server builds taking turns.
# Sourced; expects ROOT.

# ab_setup: TARGET, LOADGEN (the release load generator, which must exist),
# WORK (a scratch directory, removed on exit with every background job
# stopped) and the CPU pinning: servers on CPU 0 (PIN_SERVER), the load
# generator on CPU 1 (PIN_LOAD), where taskset and 2+ CPUs are there.
ab_setup() {
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  LOADGEN=$TARGET/release/loadgen
  [ -x "$LOADGEN" ] || { echo "missing $LOADGEN: cargo build --release -p wsgate-bench" >&2; exit 1; }
  WORK=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
  PIN_SERVER=() PIN_LOAD=()
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1)
  fi
}
