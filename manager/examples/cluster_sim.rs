//! Runs the seeded manager-core simulator (`shoal_manager::sim_cluster`)
//! over many seeds: `cargo run --release -p shoal-manager --features sim --example
//! cluster_sim -- --seeds N --first-seed S [--nodes K] [--steps T]`.
//! Ends with `seeds: N, violations: V` and exits 1 when V > 0, printing
//! each failing seed's first violations (replay with `--first-seed S --seeds 1`;
//! `--dump` prints the final state of seed S).

use shoal_manager::sim_cluster;
use std::time::Instant;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => {
                eprintln!("{name} needs a number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds = arg(&args, "--seeds", 200);
    let first = arg(&args, "--first-seed", 1);
    let nodes = arg(&args, "--nodes", 4) as usize;
    let steps = arg(&args, "--steps", 80);
    if args.iter().any(|a| a == "--dump") {
        let (out, dump) = sim_cluster::replay(first, nodes, steps);
        print!("{dump}");
        println!("violations: {:#?}", out.violations);
        return;
    }
    let start = Instant::now();
    let mut violations = 0u64;
    let mut ops = 0u64;
    for seed in first..first.saturating_add(seeds) {
        let out = sim_cluster::run(seed, nodes, steps);
        ops += out.ops_applied;
        if !out.violations.is_empty() {
            violations += 1;
            eprintln!("seed {seed} failed (replay: --first-seed {seed} --seeds 1 --nodes {nodes} --steps {steps}):");
            for v in out.violations.iter().take(5) {
                eprintln!("  {v}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.0} seeds/s, {ops} ops applied, {secs:.2} s", seeds as f64 / secs);
    println!("seeds: {seeds}, violations: {violations}");
    if violations > 0 {
        std::process::exit(1);
    }
}
