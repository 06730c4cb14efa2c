#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (run as root).
# Installs what is missing, then: format and lint checks, unit tests,
# integration tests against a private containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Prerequisites are installed above: a missing one is a failure, not a skip.
export SHOAL_REQUIRE_CONTAINERD=1 SHOAL_REQUIRE_TOOLS=1 SHOAL_REQUIRE_NETNS=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
# The simulators and their examples are behind shoal-manager's `sim` feature.
cargo clippy -p shoal-manager --all-targets --features sim -q -- -D warnings
cargo clippy -p shoal-agent --all-targets --features sim -q -- -D warnings
cargo build -q -p shoal-agent
cargo test --workspace
# The raft simulator: a few thousand seeded whole-cluster runs with faults
# (the same command scales to millions: raise --seeds).
cargo run -q --release -p shoal-manager --features sim --example raft_sim -- --seeds 3000 --first-seed 1
# The manager-core simulator: orchestrator, updater, scheduler and simulated
# agents under node faults, crashes, updates and rollbacks, from seeds.
cargo run -q --release -p shoal-manager --features sim --example cluster_sim -- --seeds 300 --first-seed 1
# The whole-node simulator: real daemons on a simulated network, disk and
# clock, from seeds (known, filed seeds are skipped: targets/swarm-sim-known.txt).
./targets/swarm-sim.sh 200 0
# Its checkers catch what they are for: each injected bug class is found.
cargo test --release -q -p shoal-agent --features sim --lib sim::
# Cross-architecture slice: arm64 and s390x static binaries, tests under QEMU.
./targets/ci-cross.sh
