#!/usr/bin/env bash
# Forwarding figures against a real OctoPrint (scripts/octoprint-dev.sh) on
# loopback, with the release build:
#   1. time from `fileagent send` returning to OctoPrint reporting Printing
#      (the 20 mm cube from tests/data), and
#   2. the agent's RSS while it forwards a large file (default: the 25 MB plate
#      repeated 9 times, 218 MiB), against `curl` uploading the same file
#      straight to OctoPrint as the baseline, measured in the same run.
#
# usage: benches/forward.sh [PLATE_GCODE] [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
plate=${1:-../shared/data/gcode/plate-large.gcode}
repeat=${2:-9}
cargo build --release --quiet
scripts/octoprint-dev.sh install
bin=$PWD/target/release/fileagent
work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-forward.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
start_octoprint "$work"
pids+=("$octo_pid")

start_agent "$bin" "$work" "[octoprint]
url = \"$octo\"
api_key = \"$key\"
poll_interval = \"200ms\""
pids+=("$agent_pid")
send() { "$bin" send "$1" --agent "$addr" --identity "$work/bench.pem" > /dev/null; }

# 1. send -> Printing
cp tests/data/cube-20mm.gcode "$work/cube.gcode"
send "$work/cube.gcode"
sent=$(now)
until api "$octo/api/job" | grep -q '"state": "Printing"'; do sleep 0.02; done
latency=$(calc "$(now) - $sent" 3)
api -H 'Content-Type: application/json' -d '{"command":"cancel"}' "$octo/api/job" > /dev/null
until api "$octo/api/job" | grep -q '"state": "Operational"'; do sleep 0.2; done

# 2. a large file: RSS while forwarding, vs curl straight to OctoPrint
big=$work/big.gcode
for _ in $(seq "$repeat"); do cat "$plate"; done > "$big"
bytes=$(stat -c %s "$big")
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")
send "$big"
peak=0
until grep -q 'uploaded to OctoPrint.*big.gcode\|file_name=big.gcode.*uploaded to OctoPrint' "$work/agent.log"; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
  sleep 0.05
done
agent_secs=$(grep -o 'uploaded to OctoPrint.*' "$work/agent.log" | grep big.gcode | grep -o 'secs=[0-9.]*' | cut -d= -f2)
curl_start=$(now)
api -F "file=@$big;filename=curl-big.gcode" "$octo/api/files/local" > /dev/null
curl_secs=$(calc "$(now) - $curl_start" 3)

printf '%-52s %s\n' "send returned -> OctoPrint Printing (cube)" "${latency} s"
printf '%-52s %s\n' "large file" "$((bytes / 1048576)) MiB"
printf '%-52s %s\n' "agent upload to OctoPrint" "$(calc "$agent_secs" 3) s ($(calc "$bytes / $agent_secs / 1000000" 1) MB/s)"
printf '%-52s %s\n' "baseline: curl upload to OctoPrint" "$curl_secs s (ratio agent/curl $(calc "$agent_secs / $curl_secs" 2))"
printf '%-52s %s\n' "agent RSS before / peak while forwarding" "$((rss_before / 1024)) MiB / $((peak / 1024)) MiB"
