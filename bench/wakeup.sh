#!/usr/bin/env bash
# Wake-up latency (issue 5, benchmark 4): from the server's advance of hw_ptr to a client's
# resume, p50/p99/max, with 8 players on a paced null sink at period 64 (1.3 ms), without and
# with a CPU hog on every core (busy shell loops at ordinary priority).
#   bench/wakeup.sh [SECONDS] [PERIOD] [PLAYERS]   (defaults 60, 64, 8)
# The probe (examples/wakeup.rs) is an ordinary-priority client sleeping on the status futex
# exactly as dmix-play does; the server's period thread is SCHED_FIFO when allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
period="${2:-64}"
players="${3:-8}"
command -v sox >/dev/null || { echo "wakeup: needs sox (scripts/quickstart installs it)" >&2; exit 2; }
cargo build --release --locked --quiet --bins --example wakeup
bin="$PWD/target/release"
# shellcheck source=bench/common.sh
. bench/common.sh
sox -R -n -r 48000 -c 2 -b 16 "$work/a.wav" synth $((seconds + 30)) sine 440 gain -12

run() { # label
  "$bin/dmix-serve" --sink null --period "$period" --buffer $((period * 4)) -q &
  local server=$!
  pids+=("$server")
  "$bin/dmix-stat" --wait 10
  local c=()
  for _ in $(seq 1 "$players"); do "$bin/dmix-play" -q "$work/a.wav" & c+=($!); pids+=($!); done
  printf '%-12s ' "$1"
  "$bin/examples/wakeup" default "$seconds" | tr '\n' ' '
  "$bin/dmix-stat" --json | sed -E 's/.*"xruns":([0-9]+).*"late_periods":([0-9]+).*/xruns \1 late periods \2/'
  kill "${c[@]}" "$server" 2>/dev/null || true
  wait "${c[@]}" "$server" 2>/dev/null || true
}

echo "period $period frames, $players players, ${seconds} s each"
run "idle"
hogs=()
for _ in $(seq 1 "$(nproc)"); do sh -c 'while :; do :; done' & hogs+=($!); pids+=($!); done
run "CPU hog x$(nproc)"
kill "${hogs[@]}"
