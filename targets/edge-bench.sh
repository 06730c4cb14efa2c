#!/usr/bin/env bash
# Edge-autonomy benchmark (issue 14). Figures printed, never asserted.
# As root:  targets/edge-bench.sh [PARTITIONS_S (5,60,600)] [NODE_LOST_AFTER (15m)] [LOSSY_S (1800)]
# Prints:
#  1. reboot offline: a cut-off worker, killed, its containerd state wiped,
#     restarted: time until its tasks run again (tests/tests/edge.rs);
#  2. partitions of each duration, with --node-lost-after off and set:
#     container restarts on the cut-off worker, replacement tasks, time from
#     heal to converged (tests/tests/partition_bench.rs);
#  3. the lossy-link run (30 % loss and 250 ms delay each way on every
#     link, edge profile): leader changes, longest leaderless gap, Down
#     flaps, write commit p50/p99, idle traffic (targets/lossy-bench.sh).
# Docker swarm mode, measured here: a partitioned node's tasks move after
# about 15 s and are restarted on heal.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:-5,60,600}
LOST=${2:-15m}
LOSSY=${3:-1800}
./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build -q -p shoal-agent
export SHOAL_REQUIRE_CONTAINERD=1
cargo test -q -p shoal-tests --test edge -- --nocapture 2>&1 | grep -E "^edge:|test result|panicked"
SHOAL_PARTITIONS_S="$PARTS" SHOAL_NODE_LOST_AFTER="$LOST" \
  cargo test -q -p shoal-tests --test partition_bench -- --ignored --nocapture 2>&1 | grep -E "^partition_bench:|test result|panicked"
./targets/lossy-bench.sh "$LOSSY"
