#!/usr/bin/env bash
# Offline render (issue 5, benchmark 5): 8 stereo 60 s FLAC files mixed into one WAV by
# dmix-serve --freewheel with 8 dmix-play, against `sox -m` on the same files. Wall and CPU
# seconds (user + system of every process, from bash's `time`), best of RUNS.
#   bench/offline-render.sh [RUNS] [FILES] [SECONDS]   (defaults 3, 8, 60)
# sox -m scales each input by 1/FILES; dmix adds them unscaled (the inputs are quiet enough
# not to clip): the work is the same, the output levels differ.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
files="${2:-8}"
secs="${3:-60}"
for t in sox flac; do command -v "$t" >/dev/null || { echo "offline-render: needs $t" >&2; exit 2; }; done
cargo build --release --locked --quiet --bins
bin="$PWD/target/release"
# shellcheck source=bench/common.sh
. bench/common.sh
inputs=()
for i in $(seq 1 "$files"); do
  sox -R -n -r 48000 -c 2 -b 16 "$work/in$i.wav" synth "$secs" sine $((200 + 50 * i)) pinknoise gain -24
  flac -s -f -o "$work/in$i.flac" "$work/in$i.wav" && rm "$work/in$i.wav"
  inputs+=("$work/in$i.flac")
done

dmix_render() {
  "$bin/dmix-serve" --sink "wav:$work/dmix.wav" --freewheel --wait-clients "$files" --exit-when-idle -q ${DMIX_BUFFER:+--buffer "$DMIX_BUFFER"} &
  local server=$!
  "$bin/dmix-stat" --wait 10
  local c=()
  for f in "${inputs[@]}"; do "$bin/dmix-play" -q "$f" & c+=($!); done
  wait "${c[@]}" "$server"
}
sox_render() { sox -m "${inputs[@]}" "$work/sox.wav"; }

echo "$files stereo ${secs} s FLAC files at 48 kHz, best of $runs"
best_of "$runs" "dmix" dmix_render
dmix_wall=$BEST_WALL
best_of "$runs" "sox -m" sox_render
sox_wall=$BEST_WALL
frames=$(soxi -s "$work/dmix.wav")
[ "$frames" -ge $((secs * 48000)) ] || { echo "offline-render: the dmix render is short ($frames frames)" >&2; exit 1; }
awk -v d="$dmix_wall" -v s="$sox_wall" 'BEGIN { printf "sox -m / dmix wall: %.2fx\n", s / d }'
