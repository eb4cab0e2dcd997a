#!/usr/bin/env bash
# The web page's figures, with the release build, against a baseline
# measured in the same run on loopback:
#   1. the 25 MB plate picked in the page (Debian's chromium, headless,
#      Selenium) until its row says "stored" on the agent, against
#      `fileagent send` of the same file; taking turns, median of 5.
#   2. the page's weight (every byte the browser fetched, all from the
#      local process) and the process's RSS with the page open and idle.
#
# usage: benches/ui.sh [PLATE_GCODE]   (default: ../shared/data/gcode/plate-large.gcode)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
plate=$(realpath "${1:-../shared/data/gcode/plate-large.gcode}")
cargo build --release --quiet
scripts/octoprint-dev.sh clients > /dev/null
python=target/octoprint/clients/bin/python
bin=$PWD/target/release/fileagent
work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-ui.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_agent "$bin" "$work" 'max_file_size = "4 GiB"'
pids+=("$agent_pid")
home=$work/home
mkdir -p "$home/fileagent"
printf 'default_agent = "pi"\n[agents.pi]\naddress = "%s"\nidentity = "%s"\n' "$addr" "$work/bench.pem" \
  > "$home/fileagent/client.toml"
port=$(free_port)
XDG_CONFIG_HOME=$home "$bin" ui --listen "127.0.0.1:$port" --no-open > "$work/ui.out" 2> "$work/ui.log" &
ui_pid=$!
pids+=("$ui_pid")
until grep -q '^open http' "$work/ui.out" 2> /dev/null; do sleep 0.05; done
link=$(sed -n 's/^open \(http[^ ]*\).*/\1/p' "$work/ui.out")

runs=5
files=()
for i in $(seq "$runs"); do
  ln "$plate" "$work/page-$i.gcode" 2> /dev/null || cp "$plate" "$work/page-$i.gcode"
  files+=("$work/page-$i.gcode")
done
cat "$plate" > /dev/null

# The page sends when told (a line on its stdin per file would couple the
# turns too tightly to the browser's start), so the CLI's runs go first,
# then the page's, each on a quiet machine: both see the same agent.
echo "== 1. the plate: fileagent send, then picked in the page, $runs each" >&2
agent_cpu=$(cpu_secs "$agent_pid")
sends=()
send_busy=()
for i in $(seq "$runs"); do
  busy=$(busy_secs)
  start=$(now)
  XDG_CONFIG_HOME=$home "$bin" send "$plate" --agent pi --as "send-$i.gcode" --no-print > /dev/null
  sends+=("$(calc "$(now) - $start" 3)")
  send_busy+=("$(calc "$(busy_secs) - $busy" 2)")
  echo "  fileagent send run $i: ${sends[-1]} s, the machine busy ${send_busy[-1]} CPU-s" >&2
done
agent_send=$(calc "($(cpu_secs "$agent_pid") - $agent_cpu) / $runs" 3)
agent_cpu=$(cpu_secs "$agent_pid")
ui_cpu=$(cpu_secs "$ui_pid")
coproc PAGE { "$python" benches/ui.py "$link" "${files[@]}"; }
page_times=()
page_busy=()
weight=
while read -r name value busy <&"${PAGE[0]}"; do
  case $name in
    weight) weight=$value ;;
    ready) break ;;
    *)
      page_times+=("$value")
      page_busy+=("$busy")
      echo "  page run ${#page_times[@]}: $value s, the machine busy $busy CPU-s" >&2
      ;;
  esac
done
agent_page=$(calc "($(cpu_secs "$agent_pid") - $agent_cpu) / $runs" 3)
ui_page=$(calc "($(cpu_secs "$ui_pid") - $ui_cpu) / $runs" 3)
sleep 5
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$ui_pid/status")
echo >&"${PAGE[1]}"
wait "$PAGE_PID" || true

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
t_send=$(median "${sends[@]}")
t_page=$(median "${page_times[@]}")
b_send=$(median "${send_busy[@]}")
b_page=$(median "${page_busy[@]}")
cores=$(nproc)
assets=$(cat src/workstation/bridge/ui/assets/* | wc -c)
printf '%-58s %10s  %s\n' "what" "figure" "against the baseline"
printf '%-58s %10s  %s\n' "fileagent send of the plate (baseline)" "$t_send s" ""
printf '%-58s %10s  %s\n' "the plate picked in the page until \"stored\"" "$t_page s" \
  "$(calc "$t_page / $t_send" 2)x the baseline's time (target <= 1.2x)"
printf '%-58s %10s  %s\n' "  CPU the machine spent: fileagent send" "$b_send s" \
  "the page $b_page s; on $cores cores the page needs >= $(calc "$b_page / $cores" 3) s ($(calc "$b_page / $cores / $t_send" 2)x)"
printf '%-58s %10s  %s\n' "  CPU per upload: the agent, for fileagent send" "$agent_send s" \
  "for the page $agent_page s"
printf '%-58s %10s  %s\n' "  CPU per upload: the local process (the page's)" "$ui_page s" \
  "fileagent send's client, the rest of the machine: $(calc "$b_send - $agent_send" 3) s"
printf '%-58s %10s  %s\n' "page weight (all the browser fetched)" "$(calc "$weight / 1024" 1) KiB" \
  "assets $(calc "$assets / 1024" 1) KiB (target <= 150 KB, no third-party request)"
printf '%-58s %10s  %s\n' "local process RSS, page open and idle" "$(calc "$rss_kb / 1024" 1) MiB" \
  "(target <= 25 MiB)"
