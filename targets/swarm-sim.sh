#!/usr/bin/env bash
# The whole-node simulator: real daemons (router, swarm cores, dispatcher,
# orchestrator, scheduler, updater, worker, raft store, Noise links) on a
# simulated network, disk, clock and runtime, from seeds.
#   targets/swarm-sim.sh [SEEDS [FIRST]]   (CI: 200 seeds from 0)
# Seeds listed in targets/swarm-sim-known.txt (filed, not fixed) are skipped;
# those in targets/swarm-sim-regressions.txt (fixed) run after the range.
# Replay one: cargo run --release -p shoal-agent --features sim --example swarm_sim -- --seed S --trace
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-200}"
FIRST="${2:-0}"
SKIP=$( (grep -v '^#' targets/swarm-sim-known.txt || true) | (grep -v '^ *$' || true) | paste -sd, -)
REGRESS=$( (grep -v '^#' targets/swarm-sim-regressions.txt || true) | (grep -v '^ *$' || true) | paste -sd, -)
cargo run -q --release -p shoal-agent --features sim --example swarm_sim -- --seeds "$SEEDS" --first-seed "$FIRST" --skip "$SKIP"
# Seeds that once failed (fixed since), every run.
exec cargo run -q --release -p shoal-agent --features sim --example swarm_sim -- --list "$REGRESS"
