#!/usr/bin/env bash
# Server cost against client count (issue 5, benchmarks 2 and 3): dmix-serve, JACK2 (dummy
# driver) and PulseAudio (module-null-sink) side by side, in one run, on this machine.
#   bench/server-cost.sh [SECONDS] [PERIODS] [COUNTS] [SERVERS]
#   defaults: 20 "64 256" "1 8 32" "dmix jack pulse"; HOG=1 adds a busy loop on every core
# For each server, period and client count N: start the server paced at 48 kHz stereo, start
# N players, let them settle 2 s, then measure over SECONDS the CPU time of the server and of
# all clients (sum of every thread's /proc/PID/task/TID/schedstat, in ns), the server's xruns
# and peak RSS (VmHWM), and one client's peak RSS. Prints one row per run and, at the end,
# each peer's per-stream CPU as a ratio to dmix's from the same run.
#   dmix:  dmix-serve --sink null --period P, N x dmix-play of a 60 s WAV (looped as needed)
#   alsa:  the same server, N x aplay -D dmixrs of the same WAV through the ALSA plugin
#          (alsa-plugin/, built here), --buffer-time 200 ms as dmix-play's latency
#   jack:  jackd -d dummy -r 48000 -p P, N x jack_simple_client (a sine, computed)
#   pulse: pulseaudio with module-null-sink at 48 kHz, N x pacat of the same WAV's samples,
#          --latency-msec of 4 periods, --process-time-msec of one
# Installs jackd2, pulseaudio, pulseaudio-utils and sox with apt when missing. Needs root or
# sudo for that; runs the servers as the current user.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
periods="${2:-64 256}"
counts="${3:-1 8 32}"
servers="${4:-dmix jack pulse}"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
for p in jackd2 pulseaudio pulseaudio-utils sox; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "server-cost: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --locked --quiet --workspace
bin="$PWD/target/release"

# shellcheck source=bench/common.sh
. bench/common.sh
hogs=()
export HOME="$work"
sox -R -n -r 48000 -c 2 -b 16 "$work/a.wav" synth 60 sine 440 sine 554 gain -12
sox "$work/a.wav" -t raw "$work/a.raw"
printf 'pcm_type.dmixrs { lib "%s/libasound_module_pcm_dmixrs.so" }\npcm.dmixrs { type dmixrs }\n' "$bin" >"$work/asound.conf"

# CPU nanoseconds of every thread of the given processes.
cpu_ns() {
  local total=0 f v
  for p in "$@"; do
    for f in /proc/"$p"/task/*/schedstat; do
      { read -r v _ <"$f"; } 2>/dev/null || continue
      total=$((total + v))
    done
  done
  echo "$total"
}
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# Polls (bounded) until a command succeeds: a benchmark may, a test may not.
until_ok() {
  local i
  for i in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "server-cost: gave up waiting for: $*" >&2
  return 1
}

start_server() { # server period -> sets server_pid
  local s=$1 p=$2
  case $s in
    dmix | alsa)
      "$bin/dmix-serve" --sink null --period "$p" ${DMIX_SERVE_ARGS:-} -q 2>"$work/serve.log" &
      server_pid=$!
      "$bin/dmix-stat" --wait 10 >/dev/null
      ;;
    jack)
      JACK_NO_AUDIO_RESERVATION=1 jackd -n dmixbench -d dummy -r 48000 -p "$p" >"$work/jackd.log" 2>&1 &
      server_pid=$!
      until_ok env JACK_DEFAULT_SERVER=dmixbench jack_lsp
      ;;
    pulse)
      pulseaudio -n --daemonize=no --exit-idle-time=-1 --use-pid-file=no --log-target=stderr \
        -L "module-null-sink sink_name=null rate=48000 channels=2" \
        -L "module-native-protocol-unix socket=$work/pulse.sock auth-anonymous=1" >"$work/pulse.log" 2>&1 &
      server_pid=$!
      until_ok env PULSE_SERVER="unix:$work/pulse.sock" pactl info
      ;;
  esac
  pids+=("$server_pid")
}

start_client() { # server period -> appends to client_pids
  local s=$1 p=$2 pid
  case $s in
    dmix)
      # 60 s is longer than any run: no gaps between files.
      "$bin/dmix-play" ${DMIX_PLAY_ARGS:-} -q "$work/a.wav" "$work/a.wav" &
      pid=$!
      ;;
    alsa)
      ALSA_CONFIG_PATH="/usr/share/alsa/alsa.conf:$work/asound.conf" \
        aplay -q -D dmixrs --buffer-time=200000 "$work/a.wav" &
      pid=$!
      ;;
    jack)
      JACK_DEFAULT_SERVER=dmixbench jack_simple_client >/dev/null 2>&1 &
      pid=$!
      ;;
    pulse)
      local lat=$(((p * 4 * 1000 + 47999) / 48000)) proc=$(((p * 1000 + 47999) / 48000))
      PULSE_SERVER="unix:$work/pulse.sock" pacat --playback --raw --rate=48000 --channels=2 --format=s16le \
        --latency-msec="$lat" --process-time-msec="$proc" "$work/a.raw" &
      pid=$!
      ;;
  esac
  client_pids+=("$pid")
  pids+=("$pid")
}

xruns() { # server -> the server's own xrun count, or "-" where it has none to read
  case $1 in
    dmix | alsa) "$bin/dmix-stat" --json | sed -E 's/.*"xruns":([0-9]+).*"late_periods":([0-9]+).*/\1+\2/' ;;
    jack) grep -ci xrun "$work/jackd.log" || true ;;
    pulse) echo "-" ;;
  esac
}

# HOG=1: a busy loop on every core at ordinary priority throughout (the xrun target).
if [ "${HOG:-0}" = 1 ]; then
  for _ in $(seq 1 "$(nproc)"); do sh -c 'while :; do :; done' & pids+=($!); done
  hogs=("${pids[@]}")
  echo "with a busy loop on each of $(nproc) cores"
fi
printf '%-6s %6s %4s %10s %10s %12s %7s %10s %10s\n' server period N "server %" "clients %" "per stream %" xruns "srv KiB" "cli KiB"
results=()
for p in $periods; do
  for n in $counts; do
    for s in $servers; do
      client_pids=()
      start_server "$s" "$p"
      for _ in $(seq 1 "$n"); do start_client "$s" "$p"; done
      sleep 2
      s0=$(cpu_ns "$server_pid"); c0=$(cpu_ns "${client_pids[@]}"); t0=$(date +%s%N)
      sleep "$seconds"
      s1=$(cpu_ns "$server_pid"); c1=$(cpu_ns "${client_pids[@]}"); t1=$(date +%s%N)
      x=$(xruns "$s")
      srss=$(hwm_kib "$server_pid"); crss=$(hwm_kib "${client_pids[0]}")
      wall=$((t1 - t0))
      row=$(awk -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v w="$wall" -v n="$n" \
        'BEGIN { printf "%.3f %.3f %.4f", 100*s/w, 100*c/w, 100*(s+c)/w/n }')
      read -r sp cp ps <<<"$row"
      printf '%-6s %6s %4s %10s %10s %12s %7s %10s %10s\n' "$s" "$p" "$n" "$sp" "$cp" "$ps" "$x" "$srss" "$crss"
      results+=("$s $p $n $sp $ps")
      for c in "${client_pids[@]}"; do kill "$c" 2>/dev/null || true; done
      for c in "${client_pids[@]}"; do wait "$c" 2>/dev/null || true; done
      kill "$server_pid" 2>/dev/null || true
      wait "$server_pid" 2>/dev/null || true
      pids=("${hogs[@]}")
    done
  done
done

echo
echo "per-stream CPU (server + clients) of each peer over dmix's, same period and N:"
printf '%s\n' "${results[@]}" | awk '
  { ps[$1" "$2" "$3] = $5; srv[$1" "$2" "$3] = $4; keys[$2" "$3] = 1; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  END {
    for (key in keys) {
      split(key, a, " "); d = ps["dmix " key]
      line = sprintf("period %s, N %s:", a[1], a[2])
      for (i = 1; i <= k; i++) if (order[i] != "dmix" && (order[i] " " key) in ps && d > 0)
        line = line sprintf(" %s %.1fx", order[i], ps[order[i] " " key] / d)
      print line
    }
    for (key in keys) {}
  }' | sort -t, -k1,1 -k2,2n
echo
echo "dmix server CPU at the largest N over N = 1, per period:"
printf '%s\n' "${results[@]}" | awk '$1 == "dmix" { if (!($2 in lo) || $3 < lon[$2]) { lo[$2] = $4; lon[$2] = $3 } if ($3 > hin[$2]) { hi[$2] = $4; hin[$2] = $3 } }
  END { for (p in lo) printf "period %s: N=%d %.3f%%, N=%d %.3f%%: %.2fx\n", p, lon[p], lo[p], hin[p], hi[p], (lo[p] > 0 ? hi[p] / lo[p] : 0) }'
