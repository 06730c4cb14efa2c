#!/usr/bin/env bash
# Lossy-link benchmark (issue 14). Figures printed, never asserted beyond
# what the test asserts. As root:  targets/lossy-bench.sh [SECONDS (1800)] [DELAY_MS (250)]
# Runs tests/tests/lossy_link.rs (3 managers + 1 worker in network
# namespaces, --link-profile edge) for SECONDS of 30 % loss plus DELAY_MS
# added delay on every link in both directions: iptables' statistic match
# drops on every node's INPUT, and the survivors are held DELAY_MS by an
# NFQUEUE queue with delayed verdicts (tests/src/delayq.rs; no netem here).
# Prints: leader changes, longest leaderless gap, Down flaps, writes
# committed with p50/p99 commit time, writes failed, an idle worker's
# swarm-port bytes per second, and the packets the queues delayed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-1800}
DELAY_MS=${2:-250}
./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build -q -p shoal-agent
SHOAL_REQUIRE_CONTAINERD=1 SHOAL_LOSSY_S="$SECS" SHOAL_DELAY_MS="$DELAY_MS" \
  cargo test -q -p shoal-tests --test lossy_link -- --nocapture edge_profile_rides_out_loss_and_delay 2>&1 |
  grep -E "^lossy_link:|test result|panicked"
