# Sourced by scripts/test.sh: runs its steps in the foreground or in the
# background, times each one, and prints a table of them all at exit (also
# when a step fails), so a slow step shows in every CI log.
# Needs LOGS (a directory for the background steps' output).

STEPS_T0=$(date +%s)
STEPS_FILE=$(mktemp)
declare -A STEP_PID=() STEP_LOG=() STEP_START=()

_step_done() { # NAME START RC
  printf '%s\t%s\t%s\t%s\n' "$1" "$(($2 - STEPS_T0))" "$(($(date +%s) - $2))" "$3" >>"$STEPS_FILE"
}

# run_step NAME CMD...: runs CMD now.
run_step() {
  local name=$1 start rc=0
  shift
  printf '\n=== %s\n' "$name"
  start=$(date +%s)
  "$@" || rc=$?
  _step_done "$name" "$start" "$rc"
  return "$rc"
}

# start_step NAME CMD...: runs CMD in the background; its output goes to
# LOGS/NAME.log and is shown by finish_step.
start_step() {
  local name=$1
  shift
  STEP_LOG[$name]=$LOGS/$name.log
  STEP_START[$name]=$(date +%s)
  printf '\n=== %s: started in the background\n' "$name"
  (
    start=$(date +%s) rc=0
    "$@" >"${STEP_LOG[$name]}" 2>&1 </dev/null || rc=$?
    _step_done "$name" "$start" "$rc"
    exit "$rc"
  ) &
  STEP_PID[$name]=$!
}

# finish_step NAME: waits for a background step and shows its output.
finish_step() {
  local name=$1 rc=0
  printf '\n=== %s: waiting for the background step\n' "$name"
  wait "${STEP_PID[$name]}" || rc=$?
  unset "STEP_PID[$name]"
  cat "${STEP_LOG[$name]}"
  [ "$rc" -eq 0 ] || printf '=== %s FAILED (exit %s)\n' "$name" "$rc"
  return "$rc"
}

_kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do _kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

# step_table: stops background steps still running, prints the table.
step_table() {
  local pid name
  for name in "${!STEP_PID[@]}"; do
    pid=${STEP_PID[$name]}
    _kill_tree "$pid"
    _step_done "$name" "${STEP_START[$name]}" -
  done
  printf '\n=== step times (wall clock; background steps overlap the others)\n'
  printf '%-22s %8s %8s  %s\n' step start duration result
  sort -t$'\t' -k2,2n "$STEPS_FILE" | while IFS=$'\t' read -r name at took rc; do
    case $rc in 0) rc=ok ;; -) rc=stopped ;; *) rc="FAILED ($rc)" ;; esac
    printf '%-22s %7ss %7ss  %s\n' "$name" "$at" "$took" "$rc"
  done
  printf '%-22s %8s %7ss\n' total '' "$(($(date +%s) - STEPS_T0))"
  rm -f "$STEPS_FILE"
}
