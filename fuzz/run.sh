#!/usr/bin/env bash
# Runs every fuzz target (tests/scenarios/fuzz.rs) for a fixed time each and prints the
# executions per target. Stable Rust: the targets are driven by proptest from fuzz/corpus/.
#   fuzz/run.sh [--seconds N] [--release] [TARGET-FILTER]
# A failure is shrunk, saved to fuzz/crashes/, and fails the run. CI runs the corpus plus
# 256 generated cases per target as part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
profile=()
filter="fuzz::"
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --release) profile=(--release); shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) filter="fuzz::$1"; shift ;;
  esac
done
ERRATUM_FUZZ_SECONDS="$seconds" cargo test --locked "${profile[@]}" --test scenarios "$filter" \
  -- --test-threads 1 --nocapture 2>&1 | grep -E '^fuzz |^test |panicked|test result'
