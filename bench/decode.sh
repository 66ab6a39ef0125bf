#!/usr/bin/env bash
# Decode (issue 5, benchmark 6): dmix-play's input path (examples/decode.rs: decode, channel
# map, resampling, conversion to the mix scale) for a 60 s stereo FLAC, against `flac -d` and
# `sox` writing to nowhere. Best of RUNS, wall and CPU seconds; at 48 kHz (no resampling) and
# at 44.1 kHz (resampled to 48 kHz, as dmix-play does for a CD-rate file).
#   bench/decode.sh [RUNS] [SECONDS]   (defaults 5, 60)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
secs="${2:-60}"
for t in sox flac; do command -v "$t" >/dev/null || { echo "decode: needs $t" >&2; exit 2; }; done
cargo build --release --locked --quiet --example decode
bin="$PWD/target/release/examples/decode"
# shellcheck source=bench/common.sh
. bench/common.sh
for rate in 48000 44100; do
  sox -R -n -r "$rate" -c 2 -b 16 "$work/a.wav" synth "$secs" sine 440 pinknoise gain -12
  flac -s -f -o "$work/a.flac" "$work/a.wav"
  echo "${secs} s stereo FLAC at $rate Hz:"
  best_of "$runs" "dmix (decode to 48 kHz)" "$bin" "$work/a.flac" 48000 2
  d=$BEST_WALL
  best_of "$runs" "flac -d -c > /dev/null" flac -d -s -c "$work/a.flac"
  f=$BEST_WALL
  best_of "$runs" "sox -> null" sox "$work/a.flac" -t null -
  best_of "$runs" "sox -> null, rate 48k" sox "$work/a.flac" -t null - rate 48000
  awk -v d="$d" -v f="$f" 'BEGIN { printf "  dmix / flac -d: %.2fx\n", d / f }'
done
