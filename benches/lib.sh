# Helpers shared by the benchmark scripts (sourced, not run).

# glibc before 2.39 copies anything over 2 KiB with `rep movsb` on AMD Zen 3
# and 4, which is several times slower when source and destination alias at
# 4 KiB (glibc bug 30994). Which copies alias depends on where the heap put
# their buffers, so on such a machine (the development VM: Zen 4, glibc 2.36)
# any tool's run here was slow or not by luck: fileagent's agent took 0.3 s
# more CPU per GiB in a third of its uploads (docs/performance.md, run 18).
# glibc 2.39 fixed it by using vector copies below the L2 size on those CPUs;
# every tool the benchmarks run (fileagent, socat, sshd and scp, curl,
# OctoPrint) gets the same setting here. BENCH_GLIBC_TUNABLES= (empty) keeps
# the machine's default. Other CPUs and architectures ignore it.
export GLIBC_TUNABLES=${BENCH_GLIBC_TUNABLES-glibc.cpu.x86_rep_movsb_threshold=1048576}

# calc EXPR [DIGITS]: floating-point arithmetic with awk.
calc() { awk "BEGIN { printf \"%.${2:-6}f\", $1 }"; }

# start_agent BIN WORK [EXTRA_TOML]: writes WORK/agent.toml (loopback, port 0,
# state and spool under WORK, plus EXTRA_TOML), issues WORK/bench.pem, starts
# `BIN serve` logging to WORK/agent.log and waits until it listens. Sets
# $addr (HOST:PORT) and $agent_pid.
start_agent() {
  local bin=$1 work=$2 extra=${3:-}
  cat > "$work/agent.toml" <<TOML
listen = "127.0.0.1:0"
server_names = ["127.0.0.1"]
state_dir = "$work/state"
spool_dir = "$work/spool"
$extra
TOML
  # Only serve and init make keys: init first, as the package's postinst does.
  "$bin" init --config "$work/agent.toml" > /dev/null
  "$bin" client issue bench --out "$work/bench.pem" --config "$work/agent.toml" > /dev/null
  "$bin" serve --config "$work/agent.toml" 2> "$work/agent.log" &
  agent_pid=$!
  addr=
  for _ in $(seq 100); do
    addr=$(grep -o 'listening addr=[0-9.:]*' "$work/agent.log" | cut -d= -f2 || true)
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  cat "$work/agent.log" >&2
  return 1
}

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cpu_secs PID: CPU seconds (user + system) of PID and of its children it
# has waited for.
cpu_secs() {
  local ticks
  ticks=$(getconf CLK_TCK)
  sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$ticks" '{ printf "%.3f", ($12 + $13 + $14 + $15) / t }'
}

# now: seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# cpu_ticks: "STEAL TOTAL", the ticks of all CPUs since boot that the
# hypervisor took (steal) and all of them (user to steal, /proc/stat).
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit }' /proc/stat; }

# busy_secs: CPU seconds all CPUs have spent busy since boot (user, nice,
# system, irq, softirq; not idle, iowait or steal), for what a whole
# machine spent on one run, whichever processes did it.
busy_secs() { awk -v t="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / t; exit }' /proc/stat; }

# api CURL-ARGS...: curl against OctoPrint with the API key in $key.
api() { curl -fsS -H "X-Api-Key: $key" "$@"; }

# start_octoprint WORK: a dev OctoPrint with its Virtual Printer
# (scripts/octoprint-dev.sh) in WORK/octoprint on a free loopback port;
# returns once the printer is Operational. Sets $key, $octo (its URL) and
# $octo_pid.
start_octoprint() {
  local work=$1 port
  key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  port=$(free_port)
  scripts/octoprint-dev.sh prepare "$work/octoprint" "$key" > /dev/null
  scripts/octoprint-dev.sh serve "$work/octoprint" "$port" > "$work/octoprint.log" 2>&1 &
  octo_pid=$!
  octo=http://127.0.0.1:$port
  until api "$octo/api/connection" 2> /dev/null | grep -q '"Operational"'; do sleep 0.2; done
}
