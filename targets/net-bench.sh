#!/usr/bin/env bash
# Container networking benchmark (issue 12): overlay throughput between tasks
# on two nodes against veth between the node namespaces, connections per
# second through a VIP and direct, DNS answers per second in a task, and the
# time from `service create --publish` to the port answering on every node.
# Real `shoal daemon`s in network namespaces with private containerds
# (tests/src/cluster.rs); iperf3 from Debian, entered into the tasks'
# namespaces. Needs root; prints figures, asserts none.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v iperf3 >/dev/null 2>&1; then
  echo "net-bench: installing iperf3" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iperf3 >/dev/null
fi
cargo build -q -p shoal-agent
SHOAL_REQUIRE_CONTAINERD=1 SHOAL_REQUIRE_NETNS=1 cargo test -q -p shoal-tests --test net_bench -- --ignored --nocapture 2>&1 |
  grep -E "^(throughput|connections|dns|publish|SUMMARY)|panicked|timed out"
