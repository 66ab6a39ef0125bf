#!/usr/bin/env bash
# The time without sound when a sink comes back, and the time to move to a fallback and back.
#   bench/sink-loss.sh [ABSENT_SECONDS...]     (default: 0.5 2 5 10)
# No sound card is needed: the device is the dmixrs plugin pointing at an upstream dmix-serve
# (killed: the device is unplugged; started again: it is back). A player plays into the
# downstream server throughout. For each absence, prints how long after the upstream was back
# the downstream server played into it again (the time without sound once the device
# returned), by polling the upstream's dmix-stat every 10 ms. Then, with two upstreams as
# --sink upa --sink upb: how long after A was killed B played, and after A was back it played
# on A again. Uses the release build (cargo build --release --workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/release
plugin=$bin/libasound_module_pcm_dmixrs.so
[ -x "$bin/dmix-serve" ] && [ -f "$plugin" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
. bench/common.sh
export HOME="$work"
cat >"$work/asound.conf" <<EOF
pcm_type.dmixrs { lib "$plugin" }
pcm.up { type dmixrs server "up" }
pcm.upa { type dmixrs server "a" }
pcm.upb { type dmixrs server "b" }
EOF
export ALSA_CONFIG_PATH="/usr/share/alsa/alsa.conf:$work/asound.conf"
absences=("$@")
[ ${#absences[@]} -gt 0 ] || absences=(0.5 2 5 10)

now_ms() { date +%s%3N; }
# plays NAME: 0 when server NAME lists a player that has written (the downstream server).
plays() {
  "$bin/dmix-stat" -D "$1" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if any(c["role"] == "play" and c.get("started") for c in d["clients"]) else 1)' 2>/dev/null
}
idle() { ! plays "$1"; }
# until_ms COMMAND...: polls COMMAND every 10 ms (at most 30 s); prints the ms it took.
until_ms() {
  local t0 t
  t0=$(now_ms)
  for _ in $(seq 3000); do
    if "$@"; then t=$(now_ms); echo $((t - t0)); return 0; fi
    sleep 0.01
  done
  echo "timeout"; return 1
}
serve() { "$bin/dmix-serve" -q "$@" 2>>"$work/serve.log" & pids+=($!); }
sox -n -r 48000 -c 2 -b 16 "$work/tone.wav" synth 600 sine 440 vol 0.3 2>/dev/null

echo "device back after an absence: time until it plays again (ms)"
serve --name up --sink null
up=$!
"$bin/dmix-stat" -D up --wait 5
serve --sink alsa:up
"$bin/dmix-stat" --wait 5
"$bin/dmix-play" -q "$work/tone.wav" & pids+=($!)
until_ms plays up >/dev/null
for absent in "${absences[@]}"; do
  kill -KILL "$up"; wait "$up" 2>/dev/null || true
  sleep "$absent"
  serve --name up --sink null
  up=$!
  printf '  absent %5ss: %s\n' "$absent" "$(until_ms plays up)"
done

echo "fallback (--sink alsa:upa --sink alsa:upb)"
serve --name a --sink null
a=$!
serve --name b --sink null
"$bin/dmix-stat" -D a --wait 5 && "$bin/dmix-stat" -D b --wait 5
serve --name fb --sink alsa:upa --sink alsa:upb
"$bin/dmix-stat" -D fb --wait 5
DMIX_DEVICE=fb "$bin/dmix-play" -q "$work/tone.wav" & pids+=($!)
until_ms plays a >/dev/null
for run in 1 2 3; do
  kill -KILL "$a"; wait "$a" 2>/dev/null || true
  moved=$(until_ms plays b)
  serve --name a --sink null
  a=$!
  back=$(until_ms plays a)
  until_ms idle b >/dev/null
  printf '  run %d: on B %s ms after A was lost; back on A %s ms after it returned\n' "$run" "$moved" "$back"
done
