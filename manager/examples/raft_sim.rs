//! Command-line driver for the deterministic raft simulator: runs a range of
//! seeds (or one seed with a trace) and prints `seeds: N, violations: V`.
//!
//! ```text
//! cargo run --release -p shoal-manager --features sim --example raft_sim -- --seeds 1000 --first-seed 0
//! cargo run --release -p shoal-manager --features sim --example raft_sim -- --seed 42 --trace
//! ```
//! `--bug vote-twice|commit-old-term|forget-vote` turns on a known bug to
//! show the checker failing. Exits non-zero when any seed violates a check.

use std::process::ExitCode;
use std::time::Instant;

use shoal_manager::raft::sim::{default_options, run_seed};
use shoal_manager::raft::BugFlags;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds = 100u64;
    let mut first = 0u64;
    let mut trace = false;
    let mut bugs = BugFlags::default();
    let mut bug_args = String::new();
    let mut k = 0;
    let num = |v: Option<&String>, name: &str| -> u64 {
        match v.and_then(|s| s.parse().ok()) {
            Some(n) => n,
            None => {
                eprintln!("{name} needs a number");
                std::process::exit(2);
            }
        }
    };
    while k < args.len() {
        match args[k].as_str() {
            "--seeds" => {
                seeds = num(args.get(k + 1), "--seeds");
                k += 1;
            }
            "--first-seed" => {
                first = num(args.get(k + 1), "--first-seed");
                k += 1;
            }
            "--seed" => {
                first = num(args.get(k + 1), "--seed");
                seeds = 1;
                k += 1;
            }
            "--trace" => trace = true,
            "--bug" => {
                let name = args.get(k + 1).map(String::as_str);
                bug_args.push_str(&format!(" --bug {}", name.unwrap_or("")));
                match name {
                    Some("vote-twice") => bugs.vote_twice = true,
                    Some("commit-old-term") => bugs.commit_old_term = true,
                    Some("forget-vote") => bugs.forget_vote_on_restart = true,
                    _ => {
                        eprintln!("--bug needs vote-twice, commit-old-term or forget-vote");
                        return ExitCode::from(2);
                    }
                }
                k += 1;
            }
            other => {
                eprintln!("unknown argument {other}");
                return ExitCode::from(2);
            }
        }
        k += 1;
    }
    let start = Instant::now();
    let mut violations = 0u64;
    let mut acked = 0u64;
    let mut messages = 0u64;
    let (mut elections, mut crashes, mut installs) = (0u64, 0u64, 0u64);
    for seed in first..first.saturating_add(seeds) {
        let mut opts = default_options(seed);
        opts.bugs = bugs;
        opts.trace = trace;
        let report = run_seed(seed, &opts);
        acked += report.acked_ops;
        messages += report.messages;
        elections += report.elections;
        crashes += report.crashes;
        installs += report.snapshots_installed;
        if trace {
            for line in &report.trace {
                println!("{line}");
            }
        }
        if !report.violations.is_empty() {
            violations += 1;
            eprintln!("seed {seed} ({} nodes) violated: {}", opts.nodes, report.violations.join("; "));
            eprintln!("replay: cargo run --release -p shoal-manager --features sim --example raft_sim -- --seed {seed} --trace{bug_args}");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{:.0} seeds/s, {acked} acknowledged ops, {messages} messages, {elections} elections, \
         {crashes} crashes, {installs} snapshot installs, {secs:.2} s",
        seeds as f64 / secs.max(1e-9)
    );
    println!("seeds: {seeds}, violations: {violations}");
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
