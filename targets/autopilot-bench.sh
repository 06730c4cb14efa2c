#!/usr/bin/env bash
# The autopilot's benchmark (issue #20), printed, never asserted:
# - real processes in network namespaces: a follower's and then the
#   leader's death, for 3 and 5 managers: seconds to N healthy managers
#   again and writes per second meanwhile (`--manager-lost-after 4s`);
# - the whole-node simulator: the same time over many seeds (distribution).
#   targets/autopilot-bench.sh [SIM_SEEDS]   (default 500 per manager count)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-500}"
cargo build -q -p shoal-agent
for n in 3 5; do
  SHOAL_AUTOPILOT_MANAGERS=$n cargo test -q -p shoal-tests --test autopilot_cluster -- --ignored --nocapture bench_manager_replacement 2>&1 \
    | grep '^autopilot bench' || { echo "autopilot-bench: the $n-manager run failed" >&2; exit 1; }
done
cargo run -q --release -p shoal-agent --features sim --example swarm_sim -- --autopilot-bench "$SEEDS"
