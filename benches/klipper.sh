#!/usr/bin/env bash
# Forwarding to a Klipper printer (real Moonraker and klippy over the MCU
# stand-in, scripts/moonraker-dev.sh) on loopback, with the release build:
# from `fileagent send` of a small G-code file to Klipper reporting
# `printing` (print_stats), both from the send's start and from its return,
# against curl uploading the same file to Moonraker with print=true (the
# baseline: what a slicer's own upload would take), in the same run; the
# median of 5 each, taking turns.
#
# The agent runs with queue = true (a printer that clears its own bed):
# each run's print is cancelled at once, and the bed rule would otherwise
# hold the next file for a person, which is not what this measures.
#
# usage: benches/klipper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
cargo build --release --quiet
scripts/moonraker-dev.sh install
bin=$PWD/target/release/fileagent
work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-klipper.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(free_port)
data=$work/moonraker
scripts/moonraker-dev.sh prepare "$data" "$port" > /dev/null
scripts/moonraker-dev.sh klipper "$data" > "$work/klipper.out" 2>&1 &
pids+=($!)
scripts/moonraker-dev.sh moonraker "$data" > "$work/moonraker.out" 2>&1 &
pids+=($!)
moon=http://127.0.0.1:$port
until key=$(scripts/moonraker-dev.sh key "$data" 2> /dev/null); do sleep 0.2; done
query() { curl -fsS -H "X-Api-Key: $key" "$moon/printer/objects/query?$1" 2> /dev/null; }
until query webhooks | grep -q '"ready"'; do sleep 0.2; done
# print_stats' state and file, as one line: "printing lat-1.gcode".
job() {
  query print_stats | python3 -c 'import json,sys
s = json.load(sys.stdin)["result"]["status"]["print_stats"]
print(s["state"], s["filename"])'
}
idle() { until ! job | grep -q '^printing'; do sleep 0.05; done; }

start_agent "$bin" "$work" "[moonraker]
url = \"$moon\"
api_key = \"$key\"
queue = true
poll_interval = \"200ms\""
pids+=("$agent_pid")

file=$work/dwell.gcode
printf 'M117 bench\n%sM117 done\n' "$(printf 'G4 P1000\n%.0s' $(seq 10))" > "$file"
from_start=()
from_return=()
baseline=()
for i in 1 2 3 4 5; do
  idle
  start=$(now)
  "$bin" send "$file" --as "lat-$i.gcode" --agent "$addr" --identity "$work/bench.pem" > /dev/null
  returned=$(now)
  until [ "$(job)" = "printing lat-$i.gcode" ]; do sleep 0.01; done
  printing=$(now)
  from_start+=("$(calc "$printing - $start" 3)")
  from_return+=("$(calc "$printing - $returned" 3)")
  curl -fsS -X POST -H "X-Api-Key: $key" "$moon/printer/print/cancel" > /dev/null

  idle
  start=$(now)
  curl -fsS -H "X-Api-Key: $key" -F "file=@$file;filename=curl-$i.gcode" -F root=gcodes \
    -F print=true "$moon/server/files/upload" > /dev/null
  until [ "$(job)" = "printing curl-$i.gcode" ]; do sleep 0.01; done
  baseline+=("$(calc "$(now) - $start" 3)")
  curl -fsS -X POST -H "X-Api-Key: $key" "$moon/printer/print/cancel" > /dev/null
  echo "  run $i: fileagent ${from_start[-1]} s (${from_return[-1]} s after send returned), curl ${baseline[-1]} s" >&2
done

median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
m_start=$(median "${from_start[@]}")
m_return=$(median "${from_return[@]}")
m_base=$(median "${baseline[@]}")
printf '%-58s %10s  %s\n' "curl -> Moonraker, print=true -> Klipper printing (baseline)" "$m_base s" "median of 5"
printf '%-58s %10s  %s\n' "fileagent send -> agent -> Moonraker -> Klipper printing" "$m_start s" \
  "$(calc "$m_start / $m_base" 2)x the baseline's time; median of 5 (target <= 1 s)"
printf '%-58s %10s  %s\n' "  of which after send returned (stored on the agent)" "$m_return s" "runs: ${from_return[*]}"
