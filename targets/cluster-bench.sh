#!/usr/bin/env bash
# Multi-node benchmark (issues 4 and 5): leader failover (5 runs), worker
# death to Down and to tasks running elsewhere, idle bytes per second on the
# wire; a rolling update of 50 tasks with --update-parallelism 10 on a
# manager and two workers.
# Real `shoal daemon` processes in network namespaces with private
# containerds (tests/src/cluster.rs). Needs root; prints figures, asserts none.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p shoal-agent
cargo test -q -p shoal-tests --test cluster -- --ignored --nocapture bench_failover_down_and_idle_bytes 2>&1 | grep -E "run [0-9]|idle worker|SUMMARY"
cargo test -q -p shoal-tests --test cluster_sched -- --ignored --nocapture bench_rolling_update_50_tasks_parallelism_10 2>&1 |
    grep -E "created:|rolling update|SUMMARY"
