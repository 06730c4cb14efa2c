#!/usr/bin/env bash
# Healthcheck benchmark (issue #17): prints, asserts nothing. As root.
#   targets/health-bench.sh [WINDOW_S (60)]
# One real node (private containerd, real daemon) with 50 tasks, without
# healthchecks and then each probed every 5 s (tests/tests/health_bench.rs):
# the daemon's CPU (utime + stime over the window) and RSS, containerd's and
# its shims' CPU (with the runc exec and probe processes they reap), and
# the probes that ran. The daemon is the release build (as shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOAL_BENCH_WINDOW_S="${1:-60}"
cargo build -q --release -p shoal-agent
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SHOAL_BIN="$TARGET_DIR/release/shoal" SHOAL_REQUIRE_CONTAINERD=1 cargo test -q -p shoal-tests --test health_bench -- --ignored --nocapture 2>&1 |
  grep -E "^health:|panicked|timed out"
