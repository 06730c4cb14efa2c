#!/usr/bin/env bash
# Lossy-link benchmark (issue 14). Figures printed, never asserted beyond
# what the test asserts. As root:  targets/lossy-bench.sh [SECONDS (1800)]
# Runs tests/tests/lossy_link.rs (3 managers + 1 worker in network
# namespaces, --link-profile edge, 30 % loss on every link in both
# directions via iptables' statistic match) for SECONDS of loss and prints:
# leader changes, Down marks, writes committed with p50/p99 commit time,
# writes failed, and an idle worker's swarm-port bytes per second.
# Not emulated: added delay (this kernel has no netem).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-1800}
./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build -q -p shoal-agent
SHOAL_REQUIRE_CONTAINERD=1 SHOAL_LOSSY_S="$SECS" cargo test -q -p shoal-tests --test lossy_link -- --nocapture 2>&1 | grep -E "^lossy_link:|test result|panicked"
