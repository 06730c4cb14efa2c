#!/usr/bin/env bash
# Container networking benchmark (issues 12, 15): overlay throughput (plain and
# encrypted, with the daemons' CPU per GiB and round trips) between tasks
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
# The release daemon: the encrypted overlay's relay runs in it (a debug
# build's relay is several times slower and would be what is measured).
cargo build -q --release -p shoal-agent
SHOAL_BIN="$PWD/target/release/shoal" SHOAL_REQUIRE_CONTAINERD=1 SHOAL_REQUIRE_NETNS=1 cargo test -q -p shoal-tests --test net_bench -- --ignored --nocapture 2>&1 |
  grep -E "^(throughput|encrypted|latency|tunnel core|connections|dns|publish|SUMMARY)|panicked|timed out"
# The encrypted overlay's relay core alone (seal + open, no I/O; issue 15):
# natively, and for a rough ARM figure on arm64 under QEMU user-mode.
cargo run -q --release -p shoal-shared --example tunnel_bench 256
if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-musl$' && command -v qemu-aarch64-static >/dev/null 2>&1; then
  cargo run -q --release -p shoal-shared --example tunnel_bench --target aarch64-unknown-linux-musl 32
else
  echo "tunnel core (aarch64): skipped: needs the aarch64-unknown-linux-musl target and qemu-aarch64-static (targets/build.sh arm64 installs them)"
fi
