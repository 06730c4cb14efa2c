#!/usr/bin/env bash
# Multi-node benchmark (issue 4): leader failover (5 runs), worker death to
# Down and to tasks running elsewhere, idle bytes per second on the wire.
# Real `shoal daemon` processes in network namespaces with private
# containerds (tests/src/cluster.rs). Needs root; prints figures, asserts none.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p shoal-agent
cargo test -q -p shoal-tests --test cluster -- --ignored --nocapture bench_failover_down_and_idle_bytes 2>&1 | grep -E "run [0-9]|idle worker|SUMMARY"
