#!/usr/bin/env bash
# Sends a real G-code file over a link shaped to 20 Mbit/s, plain and with
# zstd, and prints the compression ratio and the effective transfer times.
#
# The link is loopback inside a private network namespace made for this run
# (`unshare -n`, so only 127.0.0.1 is ever used): MTU 1500 and a tbf rate
# limit shared by both directions. Needs root (or run it under `unshare -rn`).
#
# usage: benches/compressed-link.sh [FILE] [RATE]
#        (default: ../shared/data/gcode/plate-large.gcode, 20mbit)
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-../shared/data/gcode/plate-large.gcode}
rate=${2:-20mbit}
[ -f "$file" ] || { echo "no such file: $file" >&2; exit 2; }
file=$(realpath "$file")

if [ -z "${FILEAGENT_BENCH_NETNS:-}" ]; then
  cargo build --release --quiet
  exec env FILEAGENT_BENCH_NETNS=1 unshare -n "$0" "$file" "$rate"
fi

. benches/lib.sh
bin=$PWD/target/release/fileagent
ip link set lo mtu 1500 up
# tbf only: netem is not in every kernel (this machine's has no modules).
tc qdisc add dev lo root tbf rate "$rate" burst 16kb latency 400ms

work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-bench.XXXXXX")
agent_pid=
cleanup() { [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
start_agent "$bin" "$work" 'max_file_size = "64 GiB"'

# send MODE NAME: seconds and wire bytes of one `fileagent send`.
send() {
  local start out
  start=$(date +%s.%N)
  out=$("$bin" send "$file" --as "$2" --compress "$1" --json --agent "$addr" --identity "$work/bench.pem")
  printf '%s %s\n' "$(calc "$(date +%s.%N) - $start")" \
    "$(printf '%s' "$out" | sed -n 's/.*"wire_bytes": *\([0-9]*\).*/\1/p')"
}
read -r plain plain_wire < <(send never plain.gcode)
read -r zstd zstd_wire < <(send always zstd.gcode)
bytes=$(stat -c %s "$file")
cmp -s "$file" "$work/spool/ready/zstd.gcode" || { echo "stored file differs" >&2; exit 1; }

printf 'file %s: %s bytes; link: loopback shaped to %s (tbf), MTU 1500\n' "$(basename "$file")" "$bytes" "$rate"
printf '%-26s %10s %14s %12s\n' "send" "seconds" "wire bytes" "eff. Mbit/s"
printf '%-26s %10.2f %14s %12.1f\n' "plain (--compress never)" "$plain" "$plain_wire" "$(calc "$bytes * 8 / $plain / 1000000")"
printf '%-26s %10.2f %14s %12.1f\n' "zstd (--compress always)" "$zstd" "$zstd_wire" "$(calc "$bytes * 8 / $zstd / 1000000")"
printf 'compression ratio %.2fx; zstd is %.2fx faster over this link (target: >= 3x)\n' \
  "$(calc "$bytes / $zstd_wire")" "$(calc "$plain / $zstd")"
