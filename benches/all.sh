#!/usr/bin/env bash
# `just bench`: every figure of docs/performance.md in one run, each against
# a baseline measured in the same run on the same machine, on loopback only.
#
#   1. throughput: `fileagent send` of a 1 GiB file vs raw TCP (socat), scp to
#      an sshd started here, and curl uploading straight to OctoPrint; every
#      candidate ends with its copy on disk and fsynced; best of 5 runs each,
#      fileagent, socat and scp taking turns; and against what the machine
#      allows (issue 27): the network, the disk and one core's SHA-256, each
#      with the strongest tool (socat -b 1 MiB, dd direct + fsync, openssl),
#      taking turns with them, median, and the bound of both ends' ideal CPU
#      on this machine's cores (both ends run here); each end's CPU against
#      SHA-256 + AEAD + one copy at this run's reference speeds; the same
#      send to an agent built as the Pi packages build it; and a Pi-shaped
#      row: ChaCha20-Poly1305 forced (FILEAGENT_TLS_PREFER on the agent),
#      each end's CPU, against scp with its default cipher;
#   2. memory, the agent as the Pi packages build it: idle RSS and wake-ups,
#      peak RSS during 1, 8 and 32 concurrent 256 MiB uploads;
#   3. latency: `fileagent send` of a small G-code returning -> OctoPrint Printing;
#   4. plain vs zstd over loopback shaped to 20 Mbit/s (benches/compressed-link.sh);
#   5. handshakes per second (cargo bench --bench handshakes);
#   6. the bridge: a slicer-style upload through it vs straight to OctoPrint,
#      on loopback and at 20 Mbit/s, and its peak RSS (benches/bridge.sh);
#   7. the web page: a plate picked in it until stored vs `fileagent send`,
#      its weight, the process's RSS with it open (benches/ui.sh; Debian's
#      chromium and chromium-driver);
#   8. a Klipper printer: `fileagent send` -> Klipper printing through the
#      real Moonraker, vs curl uploading to Moonraker (benches/klipper.sh).
#
# Needs: socat, openssh-server (sshd, scp), curl, iproute2 (tc), and root for
# sshd and the network namespace (apt-get install socat openssh-server curl iproute2).
# usage: benches/all.sh        BENCH_MIB=1024 BENCH_RSS_MIB=256 BENCH_RUNS=5 to change
#                              sizes and the runs of each throughput candidate;
#                              BENCH_SECTIONS="1 2" runs only those sections
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
mib=${BENCH_MIB:-1024}
runs=${BENCH_RUNS:-5}
sections=" ${BENCH_SECTIONS:-1 2 3 4 5 6 7 8} "
want() { [[ $sections == *" $1 "* ]]; }
rss_mib=${BENCH_RSS_MIB:-256}
for tool in socat scp curl tc; do
  command -v "$tool" > /dev/null || { echo "benches/all.sh needs $tool (see its header)" >&2; exit 2; }
done
[ -x /usr/sbin/sshd ] || { echo "benches/all.sh needs /usr/sbin/sshd (openssh-server)" >&2; exit 2; }
cargo build --release --quiet
# The agent as the Raspberry Pi packages build it (debian/rules): the
# memory figures are the board's, and section 1 shows what its size
# profile costs in speed.
cargo build --profile pi --no-default-features --quiet --bin fileagent
pi_bin=$PWD/target/pi/fileagent
scripts/octoprint-dev.sh install > /dev/null
bin=$PWD/target/release/fileagent
work=$(mktemp -d "${TMPDIR:-/tmp}/fileagent-bench.XXXXXX")
pids=()
agent_pid=
cleanup() {
  for p in "${pids[@]}" $agent_pid; do kill "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# timed CMD...: seconds CMD took.
timed() { local s; s=$(now); "$@" > /dev/null; calc "$(now) - $s" 3; }
stop_agent() { kill "$agent_pid"; wait "$agent_pid" 2> /dev/null || true; agent_pid=; }
results=()
row() { results+=("$(printf '%-58s %12s %10s  %s' "$1" "$2" "$3" "$4")"); }

if want 1; then
echo "== 1. throughput, ${mib} MiB of random data over loopback, best of $runs runs each" >&2
big=$work/big.bin
head -c $((mib << 20)) /dev/urandom > "$big"
sync "$big" # no writeback of it competes with the first candidate
cat "$big" > /dev/null # every candidate reads it from the page cache
bytes=$(stat -c %s "$big")

# once CMD: runs CMD, which prints "SECONDS CPU_SECONDS", shows and prints
# that line; fails if CMD did (a copy that differs). CPU seconds are those of
# both ends (the run's children and its server). Every caller takes its
# output in an assignment of its own, so that set -e sees a failure.
once() {
  local line
  line=$("$1") && [ -n "$line" ] || { echo "$1 failed" >&2; return 1; }
  echo "  $1: ${line% *} s, CPU ${line#* } s" >&2
  echo "$line"
}
# faster BEST LINE: the faster of the two lines (LINE if BEST is empty).
faster() {
  if [ -z "$1" ] || [ "$(calc "${2% *} < ${1% *}" 0)" = 1 ]; then echo "$2"; else echo "$1"; fi
}
# best_of CMD: of $runs runs of CMD, the line of the fastest, so that a
# moment of interference on a busy machine does not decide a figure; every
# candidate gets the same treatment.
best_of() {
  local best= line
  for _ in $(seq "$runs"); do
    line=$(once "$1") || return 1
    best=$(faster "$best" "$line")
  done
  echo "$best"
}
# took START CPU0 [SERVER_PID SERVER_CPU0]: "SECONDS CPU_SECONDS" since then.
# The run's own process is $BASHPID here, not inside a $(...).
took() {
  local me=$BASHPID cpu
  cpu=$(calc "$(cpu_secs "$me") - $2" 3)
  [ -n "${3:-}" ] && cpu=$(calc "$cpu + $(cpu_secs "$3") - $4" 3)
  echo "$(calc "$(now) - $1" 3) $cpu"
}

ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
sshport=$(free_port)
mkdir -p /run/sshd
cat > "$work/sshd_config" << EOF
Port $sshport
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
/usr/sbin/sshd -f "$work/sshd_config" -D -e 2> "$work/sshd.log" &
sshd_pid=$!
pids+=("$sshd_pid")
ssh_opts=(-q -P "$sshport" -i "$work/user_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes)
until scp "${ssh_opts[@]}" "$work/authorized_keys" "$(id -un)@127.0.0.1:$work/probe" 2> /dev/null; do sleep 0.1; done
scp_run() {
  local s c0 d0 me=$BASHPID
  s=$(now) c0=$(cpu_secs "$me") d0=$(cpu_secs "$sshd_pid")
  scp "${ssh_opts[@]}" "$big" "$(id -un)@127.0.0.1:$work/scp.out"
  sync "$work/scp.out"
  took "$s" "$c0" "$sshd_pid" "$d0"
  # The client's CPU and the server's, apart, for the Pi-shaped row.
  echo "$(calc "$(cpu_secs "$me") - $c0" 3) $(calc "$(cpu_secs "$sshd_pid") - $d0" 3)" > "$work/scp-split"
  cmp -s "$big" "$work/scp.out" || { echo "scp copy differs" >&2; exit 1; }
  rm -f "$work/scp.out"
}

mkdir -p "$work/fa"
start_agent "$bin" "$work/fa" 'max_file_size = "64 GiB"'
# another_agent BIN DIR: one more agent beside $agent_pid; sets $other_pid
# and $other_addr.
another_agent() {
  local a=$agent_pid ad=$addr
  start_agent "$1" "$2" 'max_file_size = "64 GiB"'
  other_pid=$agent_pid other_addr=$addr agent_pid=$a addr=$ad
  pids+=("$other_pid")
}
# The Pi-shaped row: an agent that prefers ChaCha20-Poly1305, as a board
# without AES instructions does (its order wins the negotiation).
mkdir -p "$work/pi" "$work/pibuild"
FILEAGENT_TLS_PREFER=chacha20 another_agent "$bin" "$work/pi"
pi_pid=$other_pid pi_addr=$other_addr
# The same send to an agent built as the Pi packages build it.
another_agent "$pi_bin" "$work/pibuild"
pb_pid=$other_pid pb_addr=$other_addr
# send_run PID ADDR DIR: `fileagent send` of the file to the agent PID at
# ADDR (state in DIR); prints "SECONDS CPU_SECONDS" (both ends) and writes
# the wall, the client's CPU and the agent's, apart, to DIR/split.
send_run() {
  local pid=$1 to=$2 dir=$3 s c0 a0 me=$BASHPID
  s=$(now) c0=$(cpu_secs "$me") a0=$(cpu_secs "$pid")
  "$bin" send "$big" --compress never --agent "$to" --identity "$dir/bench.pem" > /dev/null
  took "$s" "$c0" "$pid" "$a0"
  echo "$(calc "$(now) - $s" 3) $(calc "$(cpu_secs "$me") - $c0" 3) $(calc "$(cpu_secs "$pid") - $a0" 3)" \
    > "$dir/split"
  cmp -s "$big" "$dir/spool/ready/big.bin" || { echo "the copy in $dir differs" >&2; exit 1; }
  rm -f "$dir/spool/ready/big.bin"
}
fa_run() { send_run "$agent_pid" "$addr" "$work/fa"; }
pi_run() { send_run "$pi_pid" "$pi_addr" "$work/pi"; }
pibuild_run() { send_run "$pb_pid" "$pb_addr" "$work/pibuild"; }
raw_run() {
  local port recv s c0 me=$BASHPID
  port=$(free_port)
  socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "OPEN:$work/raw.out,creat,trunc" &
  recv=$!
  until ss -ltn "sport = :$port" | grep -q LISTEN; do sleep 0.05; done
  s=$(now) c0=$(cpu_secs "$me")
  socat -u "OPEN:$big" "TCP:127.0.0.1:$port"
  wait "$recv"
  sync "$work/raw.out"
  took "$s" "$c0"
  cmp -s "$big" "$work/raw.out" || { echo "raw TCP copy differs" >&2; exit 1; }
  rm -f "$work/raw.out"
}
# What this machine allows a verified, encrypted, durable transfer, each
# measured with the strongest tool at hand: the network (loopback TCP,
# socat with 1 MiB buffers, into /dev/null), the disk (dd, direct I/O in
# 64 MiB blocks, fsync), one core's SHA-256 (openssl, the file cached).
# Each end hashes on a core of its own and the stages overlap, so the
# slowest of the three bounds the transfer.
net_run() {
  local port recv s c0 me=$BASHPID
  port=$(free_port)
  socat -b 1048576 -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" OPEN:/dev/null &
  recv=$!
  until ss -ltn "sport = :$port" | grep -q LISTEN; do sleep 0.05; done
  s=$(now) c0=$(cpu_secs "$me")
  socat -b 1048576 -u "OPEN:$big" "TCP:127.0.0.1:$port"
  wait "$recv"
  took "$s" "$c0"
}
disk_run() {
  local s c0 me=$BASHPID
  s=$(now) c0=$(cpu_secs "$me")
  dd if="$big" of="$work/dd.out" bs=64M oflag=direct conv=fsync status=none
  took "$s" "$c0"
  rm -f "$work/dd.out"
}
sha_run() {
  local s c0 me=$BASHPID
  s=$(now) c0=$(cpu_secs "$me")
  openssl dgst -sha256 "$big" > /dev/null
  took "$s" "$c0"
}
# One copy of the file's bytes in memory: the cached file read into a
# buffer (the kernel copies each page once): the "one copy" of a send's
# ideal CPU.
copy_run() {
  local s c0 me=$BASHPID
  s=$(now) c0=$(cpu_secs "$me")
  dd if="$big" of=/dev/null bs=1M status=none
  took "$s" "$c0"
}
# fileagent, raw TCP, scp and the limits take turns, so that a drift of
# this machine's speed during the benchmark touches them alike.
best_fa= best_raw= best_scp=
fa_times=() fa_client=() fa_agent=() net_times=() disk_times=() sha_times=() copy_times=()
pi_times=() pi_client=() pi_agent=() scp_client=() scp_server=() pb_times=() pb_agent=()
read -r steal0 ticks0 <<< "$(cpu_ticks)"
for _ in $(seq "$runs"); do
  line=$(once fa_run)
  best_fa=$(faster "$best_fa" "$line")
  read -r t c a <<< "$(cat "$work/fa/split")"
  fa_times+=("$t") fa_client+=("$c") fa_agent+=("$a")
  line=$(once raw_run)
  best_raw=$(faster "$best_raw" "$line")
  line=$(once scp_run)
  best_scp=$(faster "$best_scp" "$line")
  read -r c a <<< "$(cat "$work/scp-split")"
  scp_client+=("$c") scp_server+=("$a")
  line=$(once pi_run)
  read -r t c a <<< "$(cat "$work/pi/split")"
  pi_times+=("$t") pi_client+=("$c") pi_agent+=("$a")
  line=$(once pibuild_run)
  read -r t c a <<< "$(cat "$work/pibuild/split")"
  pb_times+=("$t") pb_agent+=("$a")
  line=$(once net_run)
  net_times+=("${line% *}")
  line=$(once disk_run)
  disk_times+=("${line% *}")
  line=$(once sha_run)
  sha_times+=("${line% *}")
  line=$(once copy_run)
  copy_times+=("${line% *}")
done
read -r steal1 ticks1 <<< "$(cpu_ticks)"
# On a VM whose host is busy the hypervisor takes part of the cores, and a
# run that keeps both cores busy (fileagent) loses more than one that does
# not (socat): this figure says how disturbed those runs were.
steal=$(calc "100 * ($steal1 - $steal0) / ($ticks1 - $ticks0)" 0)
read -r t_fa cpu_fa <<< "$best_fa"
read -r t_raw cpu_raw <<< "$best_raw"
read -r t_scp cpu_scp <<< "$best_scp"
grep -q 'suite=TLS13_CHACHA20_POLY1305_SHA256' "$work/pi/agent.log" \
  || { echo "the Pi-shaped agent did not negotiate ChaCha20-Poly1305" >&2; exit 1; }
stop_agent
kill "$pi_pid" "$pb_pid"
rm -rf "$work/fa/spool" "$work/pi/spool" "$work/pibuild/spool"
fi

if want 1 || want 3; then
  start_octoprint "$work"
  pids+=("$octo_pid")
fi

if want 1; then
cp "$big" "$work/big.gcode"
curl_run() {
  local s c0 o0 me=$BASHPID
  s=$(now) c0=$(cpu_secs "$me") o0=$(cpu_secs "$octo_pid")
  api -F "file=@$work/big.gcode" "$octo/api/files/local" > /dev/null
  sync "$work/octoprint/uploads/big.gcode"
  took "$s" "$c0" "$octo_pid" "$o0"
  cmp -s "$big" "$work/octoprint/uploads/big.gcode" || { echo "OctoPrint's copy differs" >&2; exit 1; }
  api -X DELETE "$octo/api/files/local/big.gcode" > /dev/null || true
}
best=$(best_of curl_run)
read -r t_curl cpu_curl <<< "$best"
rm -f "$work/big.gcode"

rate() { calc "$bytes / $1 / 1000000" 0; }
row "fileagent send (TLS 1.3, SHA-256 both ends, fsync)" "$t_fa s" "$(rate "$t_fa") MB/s" \
  "CPU $cpu_fa s, both ends"
row "raw TCP: socat into a file, then fsync" "$t_raw s" "$(rate "$t_raw") MB/s" \
  "fileagent/raw $(calc "$t_raw / $t_fa" 2)x (target >= 0.9); CPU $cpu_raw s"
row "scp to a local sshd, then fsync" "$t_scp s" "$(rate "$t_scp") MB/s" \
  "fileagent/scp $(calc "$t_scp / $t_fa" 2)x (target >= 2); CPU $cpu_scp s"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
m_fa=$(median "${fa_times[@]}") m_net=$(median "${net_times[@]}")
m_disk=$(median "${disk_times[@]}") m_sha=$(median "${sha_times[@]}") m_copy=$(median "${copy_times[@]}")
slowest=$m_net limit="network"
[ "$(calc "($m_disk > $slowest)" 0)" = 1 ] && slowest=$m_disk limit="disk"
[ "$(calc "($m_sha > $slowest)" 0)" = 1 ] && slowest=$m_sha limit="SHA-256"
# Each end's CPU against its ideal: SHA-256 + AEAD + one copy of the
# bytes, at the reference speeds of this run (openssl's AES-128-GCM, as
# the suite negotiated here; ChaCha20-Poly1305 for a board without AES).
aead_rate() {
  openssl speed -evp "$1" -bytes 16384 -seconds 1 2> /dev/null | tail -n 1 | awk '{print $NF}' | sed 's/k$//'
}
gcm_kbs=$(aead_rate aes-128-gcm)
chacha_kbs=$(aead_rate chacha20-poly1305)
ideal=$(calc "$m_sha + $bytes / ($gcm_kbs * 1000) + $m_copy" 3)
ideal_chacha=$(calc "$m_sha + $bytes / ($chacha_kbs * 1000) + $m_copy" 3)
# Here both ends share this machine's cores: together they need at least
# twice the ideal CPU, which bounds the wall on $cores cores too. Between a
# workstation and a Pi each end has cores of its own and only the slowest
# single limit remains.
cores=$(nproc)
shared=$(calc "2 * $ideal / $cores" 3)
allows=$slowest allowed_by="$limit"
[ "$(calc "($shared > $allows)" 0)" = 1 ] && allows=$shared allowed_by="both ends' CPU on $cores cores"
row "limit: network, socat -b 1 MiB into /dev/null (median)" "$m_net s" "$(rate "$m_net") MB/s" ""
row "limit: disk, dd 64 MiB direct + fsync (median)" "$m_disk s" "$(rate "$m_disk") MB/s" ""
row "limit: one core's SHA-256, openssl dgst (median)" "$m_sha s" "$(rate "$m_sha") MB/s" ""
row "limit: both ends' ideal CPU shared by $cores cores" "$shared s" "$(rate "$shared") MB/s" \
  "2 x $ideal CPU-s / $cores (this machine runs both ends)"
row "fileagent send (median of $runs turns)" "$m_fa s" "$(rate "$m_fa") MB/s" \
  "$(calc "$slowest / $m_fa" 2)x of the slowest single limit ($limit) (target >= 0.75)"
row "  against what this machine allows both ends" "" "" \
  "$(calc "$allows / $m_fa" 2)x of $allows s ($allowed_by) (target >= 0.75)"
m_client=$(median "${fa_client[@]}") m_agent=$(median "${fa_agent[@]}")
row "  CPU: the client (median)" "$m_client s" "" \
  "$(calc "$m_client / $ideal" 2)x its ideal $ideal s (target <= 1.5)"
row "  CPU: the agent (median)" "$m_agent s" "" \
  "$(calc "$m_agent / $ideal" 2)x its ideal (target <= 1.5); AES-128-GCM $(calc "$gcm_kbs / 1000" 0) MB/s, one copy $m_copy s"
m_pb=$(median "${pb_times[@]}") m_pb_agent=$(median "${pb_agent[@]}")
row "  to the agent as the Pi packages build it (median)" "$m_pb s" "$(rate "$m_pb") MB/s" \
  "agent CPU $m_pb_agent s, $(calc "$m_pb_agent / $m_agent" 2)x the release build's (pi profile: opt-level z)"
# The Pi-shaped row: what a board without AES instructions spends.
m_pi=$(median "${pi_times[@]}") m_pi_client=$(median "${pi_client[@]}") m_pi_agent=$(median "${pi_agent[@]}")
m_scp_client=$(median "${scp_client[@]}") m_scp_server=$(median "${scp_server[@]}")
scp_cipher=$(ssh -G 127.0.0.1 2> /dev/null | sed -n 's/^ciphers \([^,]*\).*/\1/p')
row "Pi-shaped: fileagent send, ChaCha20-Poly1305 (median)" "$m_pi s" "$(rate "$m_pi") MB/s" \
  "ChaCha20-Poly1305 $(calc "$chacha_kbs / 1000" 0) MB/s; ideal per end $ideal_chacha s"
row "  CPU: the client (median)" "$m_pi_client s" "" \
  "$(calc "$m_pi_client / $ideal_chacha" 2)x its ideal (target <= 1.5)"
row "  CPU: the agent, the board's share (median)" "$m_pi_agent s" "" \
  "$(calc "$m_pi_agent / $ideal_chacha" 2)x its ideal (target <= 1.5); $(calc "$m_pi_agent / $m_scp_server" 2)x sshd's"
row "Pi-shaped: scp, its default cipher $scp_cipher (median)" "" "" \
  "CPU: client $m_scp_client s, sshd $m_scp_server s (no SHA-256 of the file: SSH's MAC only)"
row "CPU time the hypervisor took during those three (steal)" "$steal %" "" \
  "of both cores' time; 0 on a machine of its own"
row "curl straight to OctoPrint, then fsync" "$t_curl s" "$(rate "$t_curl") MB/s" \
  "fileagent/curl $(calc "$t_curl / $t_fa" 2)x; CPU $cpu_curl s"
fi
rm -f "$big"

if want 2; then
echo "== 2. agent idle, and its peak RSS with concurrent ${rss_mib} MiB uploads (the Pi's build)" >&2
head -c $((rss_mib << 20)) /dev/urandom > "$work/rss.bin"
for n in 1 8 32; do
  d=$work/rss-$n
  mkdir -p "$d"
  start_agent "$pi_bin" "$d" 'max_file_size = "64 GiB"
max_connections = 64'
  idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")
  if [ "$n" = 1 ]; then
    # Idle wake-ups: every thread's context switches over 10 s, nothing
    # forwarding (no systemd here: no watchdog either).
    switches() { cat /proc/"$agent_pid"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
    sw0=$(switches)
    sleep 10
    row "agent idle (the Pi's build): RSS, context switches in 10 s" "$(calc "$idle_kb / 1024" 1) MiB" \
      "$(($(switches) - sw0)) switches" "target <= 8 MiB; no periodic wake-ups"
  fi
  senders=()
  for i in $(seq "$n"); do
    "$bin" send "$work/rss.bin" --as "copy-$i.bin" --compress never --agent "$addr" \
      --identity "$d/bench.pem" > /dev/null &
    senders+=($!)
  done
  for p in "${senders[@]}"; do wait "$p"; done
  peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
  stored=$(find "$d/spool/ready" -type f | wc -l)
  [ "$stored" = "$n" ] || { echo "only $stored of $n uploads stored" >&2; exit 1; }
  stop_agent
  rm -rf "$d"
  target=""
  [ "$n" = 32 ] && target="target <= 16 MiB"
  row "agent peak RSS, $n concurrent ${rss_mib} MiB uploads (Pi build)" "$(calc "$peak_kb / 1024" 1) MiB" \
    "idle $(calc "$idle_kb / 1024" 1)" "$target"
done
rm -f "$work/rss.bin"
fi
if want 3; then
echo "== 3. latency: send -> OctoPrint Printing" >&2
mkdir -p "$work/lat"
# queue = true (a printer that clears its own bed): after the first print
# the bed rule would hold every next file for a person, and this loop would
# wait for a Printing that never comes; the latency is what is measured.
start_agent "$bin" "$work/lat" "[octoprint]
url = \"$octo\"
api_key = \"$key\"
queue = true
poll_interval = \"100ms\""
state() { api "$octo/api/job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
lat=()
for i in 1 2 3 4 5; do
  until [ "$(state)" = Operational ]; do sleep 0.1; done
  "$bin" send tests/data/tiny.gcode --as "lat-$i.gcode" --agent "$addr" --identity "$work/lat/bench.pem" > /dev/null
  sent=$(now)
  until state | grep -q Printing; do sleep 0.01; done
  lat+=("$(calc "$(now) - $sent" 3)")
done
stop_agent
median=$(printf '%s\n' "${lat[@]}" | sort -n | sed -n 3p)
row "send returned -> OctoPrint Printing (median of 5)" "$median s" "" "target <= 1 s; runs: ${lat[*]}"
fi
if want 4; then
echo "== 4. plain vs zstd over a 20 Mbit/s link" >&2
link=$(benches/compressed-link.sh)
echo "$link" >&2
ratio=$(echo "$link" | sed -n 's/^compression ratio \([0-9.]*\)x.*/\1/p')
faster=$(echo "$link" | sed -n 's/.*zstd is \([0-9.]*\)x faster.*/\1/p')
row "zstd vs plain over 20 Mbit/s (25 MB plate G-code)" "${faster}x faster" "ratio ${ratio}x" "target >= 3x"
fi
if want 5; then
echo "== 5. handshakes per second" >&2
hs=$(cargo bench --quiet --bench handshakes -- 5 4 2> /dev/null)
echo "$hs" >&2
per_s=$(echo "$hs" | sed -n 's/^fileagent: .* \([0-9]*\)$/\1/p')
tcp_s=$(echo "$hs" | sed -n 's/^baseline: .* \([0-9]*\)$/\1/p')
row "handshakes per second (TLS 1.3 mutual auth + ping)" "$per_s /s" "tcp $tcp_s" "$(calc "$per_s / $tcp_s" 2) of plain TCP"
fi
if want 6; then
echo "== 6. the bridge (benches/bridge.sh)" >&2
bridge_table=$(benches/bridge.sh)
fi
if want 7; then
echo "== 7. the web page (benches/ui.sh)" >&2
ui_table=$(benches/ui.sh)
fi
if want 8; then
echo "== 8. a Klipper printer: send -> printing (benches/klipper.sh)" >&2
klipper_table=$(benches/klipper.sh)
fi

echo
printf '%-58s %12s %10s  %s\n' "what" "figure" "" "against the baseline"
printf '%s\n' "${results[@]}"
for table in "${bridge_table:-}" "${ui_table:-}" "${klipper_table:-}"; do
  if [ -n "$table" ]; then printf '\n%s\n' "$table"; fi
done
