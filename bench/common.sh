# Sourced by the bench scripts: a private work directory with its own runtime directory,
# and every process recorded in `pids` killed and reaped on exit.
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -m 700 "$work/run"
export XDG_RUNTIME_DIR="$work/run"

# best_of RUNS LABEL COMMAND...: runs COMMAND (its output discarded) RUNS times, prints the
# best wall time and that run's CPU time (user + system, children included), and leaves the
# wall time in BEST_WALL.
best_of() {
  local runs=$1 label=$2 line wall user sys cpu=""
  shift 2
  BEST_WALL=""
  for _ in $(seq 1 "$runs"); do
    line=$({ TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&1; } 2>&1 | tail -1)
    read -r wall user sys <<<"$line"
    if [ -z "$BEST_WALL" ] || awk -v a="$wall" -v b="$BEST_WALL" 'BEGIN { exit !(a < b) }'; then
      BEST_WALL=$wall cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f", u + s }')
    fi
  done
  printf '  %-28s wall %6.3f s  cpu %6.3f s\n' "$label" "$BEST_WALL" "$cpu"
}
