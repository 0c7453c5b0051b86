#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) one after another, each from the
# committed seeds (fuzz/corpus/<target>) into a scratch corpus, and prints per
# target the executions and what it found. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Crash inputs land in
# fuzz/artifacts/<target>/; once fixed, keep them in fuzz/regressions/<target>/
# (replayed by `cargo test --test fuzz_corpus`).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
targets="${TARGETS:-mysql_packets mysql_monitor mongo_op_msg mongo_replies redis_resp http_head der proxy_header}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O
for target in $targets; do
  mkdir -p "$work/$target" "artifacts/$target"
  log="$work/$target.log"
  set +e
  cargo +nightly fuzz run -O "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1
  status=$?
  set -e
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  found="$(find "artifacts/$target" -type f | wc -l)"
  echo "fuzz target=$target seconds=$seconds executions=$runs exit=$status artifacts=$found corpus=$(ls "$work/$target" | wc -l)"
  if [ "$found" -gt 0 ]; then
    tail -40 "$log"
  fi
done
