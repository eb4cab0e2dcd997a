#!/usr/bin/env bash
# The bridge's figures, with the release build, against baselines measured
# in the same run on loopback:
#   1. a slicer-style upload (curl with PrusaSlicer's form) of a real plate
#      (default: the 25 MB one) through `fileagent bridge` -> agent ->
#      OctoPrint, vs the same curl straight to OctoPrint; each timed until
#      OctoPrint has the file. Once over plain loopback, once with the hop
#      between workstation and Pi (curl -> OctoPrint, bridge -> agent) going
#      through scripts/slow-link.py at 20 Mbit/s; the hops that stay on one
#      machine (curl -> bridge, agent -> OctoPrint) are not shaped.
#   2. the bridge's peak RSS (VmHWM) while it carries a 1 GiB G-code upload.
#
# usage: benches/bridge.sh [PLATE_GCODE] [RATE_BYTES_PER_SEC]
#        (default: ../shared/data/gcode/plate-large.gcode, 2500000 = 20 Mbit/s)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
plate=$(realpath "${1:-../shared/data/gcode/plate-large.gcode}")
rate=${2:-2500000}
cargo build --release --quiet
scripts/octoprint-dev.sh install > /dev/null
bin=$PWD/target/release/fileagent
work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-bridge.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_octoprint "$work"
pids+=("$octo_pid")
start_agent "$bin" "$work" "max_file_size = \"4 GiB\"
[octoprint]
url = \"$octo\"
api_key = \"$key\"
auto_print = \"never\"
poll_interval = \"200ms\""
pids+=("$agent_pid")

# The links between the "workstation" and the "Pi", shaped.
link_octo=$(free_port)
link_agent=$(free_port)
python3 scripts/slow-link.py "$link_octo" "${octo##*:}" "$rate" 2> /dev/null &
pids+=($!)
python3 scripts/slow-link.py "$link_agent" "${addr##*:}" "$rate" 2> /dev/null &
pids+=($!)

# bridge NAME ADDRESS: a bridge whose agent "pi" is at ADDRESS; sets
# $bridge_url and $bridge_pid (its config in WORK/NAME).
bridge() {
  local home=$work/$1
  mkdir -p "$home/fileagent"
  printf 'default_agent = "pi"\n[agents.pi]\naddress = "%s"\nidentity = "%s"\n' "$2" "$work/bench.pem" \
    > "$home/fileagent/client.toml"
  XDG_CONFIG_HOME=$home "$bin" bridge --listen 127.0.0.1:0 > "$home/out" 2> "$home/log" &
  bridge_pid=$!
  pids+=("$bridge_pid")
  until grep -q '^fileagent bridge on' "$home/out" 2> /dev/null; do sleep 0.05; done
  bridge_url=$(sed -n 's/^fileagent bridge on \(http:[^:]*:[0-9]*\):.*/\1/p' "$home/out")
  bridge_key=$(XDG_CONFIG_HOME=$home "$bin" bridge --show-key)
}

# quiet: waits until the machine is idle again (OctoPrint analyses every
# G-code file it gets, for seconds of CPU after the upload), so that no run
# competes with the work the one before it left: under 10 % of the CPUs
# busy for half a second.
quiet() {
  local a b
  while :; do
    a=$(busy_ticks)
    sleep 0.5
    b=$(busy_ticks)
    [ "$(calc "(${b% *} - ${a% *}) < 0.1 * (${b#* } - ${a#* })" 0)" = 1 ] && return 0
  done
}

# busy_ticks: "BUSY TOTAL" ticks of all CPUs since boot (/proc/stat).
busy_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }

# in_octoprint NAME: waits until OctoPrint lists the file.
in_octoprint() { until api "$octo/api/files/local/$1" > /dev/null 2>&1; do sleep 0.02; done; }

# direct URL NAME: seconds for curl to upload the plate to OctoPrint at URL.
direct() {
  local start
  start=$(now)
  curl -fsS -H "X-Api-Key: $key" -F print=false -F path= -F "file=@$plate;filename=$2" "$1/api/files/local" > /dev/null
  in_octoprint "$2"
  calc "$(now) - $start" 3
}

# bridged URL KEY NAME: "ANSWERED IN_OCTOPRINT", the seconds until curl had
# the bridge's answer (the agent stored the file: what the slicer waits for)
# and until OctoPrint has it, for an upload through the bridge at URL.
bridged() {
  local start answered
  start=$(now)
  curl -fsS -H "X-Api-Key: $2" -F print=false -F path= -F "file=@$plate;filename=$3" "$1/a/pi/api/files/local" > /dev/null
  answered=$(calc "$(now) - $start" 3)
  in_octoprint "$3"
  echo "$answered $(calc "$(now) - $start" 3)"
}

cat "$plate" > /dev/null
bytes=$(stat -c %s "$plate")
bridge loopback "$addr"
fast_url=$bridge_url fast_key=$bridge_key
bridge shaped "127.0.0.1:$link_agent"
slow_url=$bridge_url slow_key=$bridge_key

echo "== 1. slicer-style upload of $(basename "$plate") ($((bytes / 1048576)) MiB), best of 3" >&2
best() { printf '%s\n' "$@" | sort -n | head -1; }
d=() b=() ba=() ds=() bs=() bsa=()
for i in 1 2 3; do
  quiet
  d+=("$(direct "$octo" "direct-$i.gcode")")
  quiet
  read -r answered done < <(bridged "$fast_url" "$fast_key" "bridged-$i.gcode")
  ba+=("$answered") b+=("$done")
  echo "  loopback run $i: direct ${d[-1]} s, bridge answered $answered s, in OctoPrint $done s" >&2
done
for i in 1 2 3; do
  quiet
  ds+=("$(direct "http://127.0.0.1:$link_octo" "direct-slow-$i.gcode")")
  quiet
  read -r answered done < <(bridged "$slow_url" "$slow_key" "bridged-slow-$i.gcode")
  bsa+=("$answered") bs+=("$done")
  echo "  20 Mbit/s run $i: direct ${ds[-1]} s, bridge answered $answered s, in OctoPrint $done s" >&2
done
t_d=$(best "${d[@]}") t_b=$(best "${b[@]}") t_ds=$(best "${ds[@]}") t_bs=$(best "${bs[@]}")
t_ba=$(best "${ba[@]}") t_bsa=$(best "${bsa[@]}")

echo "== 2. the bridge's peak RSS during a 1 GiB upload" >&2
big=$work/big.gcode
while [ "$(stat -c %s "$big" 2> /dev/null || echo 0)" -lt $((1 << 30)) ]; do cat "$plate" >> "$big"; done
truncate -s $((1 << 30)) "$big"
bridge memory "$addr"
idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$bridge_pid/status")
curl -fsS -H "X-Api-Key: $bridge_key" -F print=false -F "file=@$big;filename=big.gcode" "$bridge_url/a/pi/api/files/local" > /dev/null
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$bridge_pid/status")
cmp -s "$big" "$work/spool/ready/big.gcode" || cmp -s "$big" "$work/spool/done/big.gcode" \
  || { echo "the agent's big.gcode differs" >&2; exit 1; }

printf '%-62s %10s  %s\n' "what" "figure" "against the baseline"
printf '%-62s %10s  %s\n' "loopback: curl -> OctoPrint (baseline)" "$t_d s" ""
printf '%-62s %10s  %s\n' "loopback: curl -> bridge -> agent -> OctoPrint" "$t_b s" \
  "$(calc "$t_b / $t_d" 2)x the baseline's time (target <= 1.3x)"
printf '%-62s %10s  %s\n' "  of which until the bridge answered (stored on the agent)" "$t_ba s" \
  "$(calc "$t_ba / $t_d" 2)x"
printf '%-62s %10s  %s\n' "20 Mbit/s: curl -> OctoPrint (baseline)" "$t_ds s" ""
printf '%-62s %10s  %s\n' "20 Mbit/s: curl -> bridge -> agent -> OctoPrint" "$t_bs s" \
  "$(calc "$t_ds / $t_bs" 2)x faster (target >= 3x)"
printf '%-62s %10s  %s\n' "  of which until the bridge answered (stored on the agent)" "$t_bsa s" \
  "$(calc "$t_ds / $t_bsa" 2)x faster"
printf '%-62s %10s  %s\n' "bridge peak RSS, 1 GiB G-code upload" "$(calc "$peak_kb / 1024" 1) MiB" \
  "idle $(calc "$idle_kb / 1024" 1) MiB (target <= 20 MiB)"
