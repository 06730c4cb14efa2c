//! The whole-node simulator: `cargo run --release -p shoal-agent --features sim
//! --example swarm_sim -- --seeds N --first-seed S` (or `--seed S --trace`).
//! See `shoal_agent::sim`.

fn main() {
    std::process::exit(shoal_agent::sim::main());
}
