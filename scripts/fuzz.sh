#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on stable Rust
# (no sanitizer: libFuzzer's coverage flags are stable -C options), starting
# from the seeds in fuzz/seeds/ and the corpus of earlier runs in
# target/fuzz-corpus/. Prints the executions each target reached. A crash is
# kept in fuzz/artifacts/TARGET/ and fails the run: copy it into
# fuzz/regressions/TARGET/, where `cargo test` replays it for good.
#
# usage: scripts/fuzz.sh [SECONDS] [--dev]
#   --dev builds without optimisations (much quicker to build, slower to
#   run): what CI uses for its short run. Figures are taken without it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
profile=(-O)
[ "${2:-}" = --dev ] && profile=(--dev)
if ! command -v cargo-fuzz > /dev/null; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
targets=(frames config zstd_body)
cd fuzz
for t in "${targets[@]}"; do
  cargo fuzz build --sanitizer none "${profile[@]}" "$t" 2>&1 | grep -v '^\s*Compiling' >&2 || true
done
summary=()
status=0
for t in "${targets[@]}"; do
  corpus=../target/fuzz-corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  log=$(mktemp)
  if cargo fuzz run --sanitizer none "${profile[@]}" "$t" "$corpus" "seeds/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1 > "$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$t/)"
    status=1
    tail -40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  summary+=("$(printf '%-10s %8ss %14s %12s %8s  %s' "$t" "$seconds" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$result")")
  rm -f "$log"
done
printf '%-10s %9s %14s %12s %8s  %s\n' target time executions "execs/s" edges result
printf '%s\n' "${summary[@]}"
exit $status
