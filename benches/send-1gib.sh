#!/usr/bin/env bash
# Sends one large file to a local agent over loopback with the release build
# and prints the figures: wall time and rate of `fileagent send`, the agent's
# peak RSS, and, as baselines measured in the same run on the same file,
# `cp` + `sync` to the same file system and `sha256sum`.
#
# usage: benches/send-1gib.sh [FILE]   (default: a fresh 1 GiB random file)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
cargo build --release --quiet
bin=$PWD/target/release/fileagent
work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-bench.XXXXXX")
agent_pid=
cleanup() { [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

file=${1:-}
if [ -z "$file" ]; then
  file=$work/big.bin
  head -c 1073741824 /dev/urandom > "$file"
fi
bytes=$(stat -c %s "$file")

start_agent "$bin" "$work" 'max_file_size = "64 GiB"'

secs() { local s; s=$(date +%s.%N); "$@" > /dev/null; calc "$(date +%s.%N) - $s"; }
sync
send=$(secs "$bin" send "$file" --agent "$addr" --identity "$work/bench.pem")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
copy=$(secs sh -c "cp '$file' '$work/copy' && sync '$work/copy'")
hash=$(secs sha256sum "$file")

mib=$((bytes / 1048576))
printf '%-34s %10s %10s %8s\n' "what ($mib MiB)" "seconds" "MB/s" "ratio"
row() { printf '%-34s %10.2f %10.1f %8.2f\n' "$1" "$2" "$(calc "$bytes / $2 / 1000000")" "$(calc "$2 / $copy")"; }
row "fileagent send (TLS, hash, fsync)" "$send"
row "baseline: cp + sync" "$copy"
row "baseline: sha256sum" "$hash"
echo "agent peak RSS: $((rss_kb / 1024)) MiB ($rss_kb kB)"
