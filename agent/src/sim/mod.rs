//! The whole-node simulator: clusters of 3 to 7 real daemons in one thread,
//! on a simulated network, runtime, disk and clock, driven from a seed.
//!
//! Owns the `swarm_sim` command line ([`main`]) and one seed's run
//! ([`run_seed`]). Each seed picks a cluster (nodes, managers, and for half
//! the seeds a `--node-lost-after` of 5, 10 or 20 s, short enough that a
//! node that left while cut off is Down, and its tasks replaced, within the
//! time a healed cluster gets), runs `swarm init` and the joins, then `CHAOS_MS` of client operations and faults
//! (partitions, asymmetric stalls, resets, daemon kills, power cuts, wall
//! clock jumps, container crashes), heals everything and gives the cluster
//! `HEAL_MS` to converge. The checkers ([`check`]) run after every round.
//! Everything real runs: `Daemon` (router, swarm cores, dispatcher,
//! orchestrator, scheduler, updater, worker), the `Store` over raft on a
//! redb file in memory that loses unsynced writes at a power cut, and the
//! Noise links byte for byte. Only the container runtime is the fake one.
//!
//! Compiled only with the `sim` feature; the shipped binary has none of it.

mod bench;
mod check;
mod client;
mod net;
mod node;
mod world;

use shoal_manager::sim_bugs::Bug;
use shoal_shared::clock::{MonoClock, SimClock};
use shoal_shared::platform::Platform;
use shoal_shared::rng::Rng;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use world::{World, CHAOS_MS, HEAL_MS};

/// What `--trace` prints: the world's notes and the daemons' log lines.
pub(crate) struct Trace {
    on: bool,
    /// The node whose daemon is running now (its log lines are its).
    pub(crate) node: Option<usize>,
    mono: Option<Arc<SimClock>>,
}

impl Trace {
    fn line(&mut self, now_ms: u64, node: Option<usize>, what: std::fmt::Arguments<'_>) {
        if !self.on {
            return;
        }
        let who = node.or(self.node).map_or_else(|| "world ".to_string(), |n| format!("node-{n}"));
        println!("{:>6}.{:03} {who} {what}", now_ms / 1000, now_ms % 1000);
    }
}

/// Images the simulated machines have: `busybox` for every platform (no
/// list: runs anywhere) and `edge`, built only for 64- and 32-bit ARM.
pub(crate) fn install_images(fake: &crate::runtime::fake::Fake) {
    let mut images = fake.images.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let edge = crate::runtime::ImageFacts {
        name: "docker.io/library/edge:latest".into(),
        digest: "sha256:ed".into(),
        platforms: ["linux/arm64", "linux/arm/v7"].iter().filter_map(|p| Platform::parse(p).ok()).collect(),
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    images.insert("edge".into(), edge);
}

/// One seed's result.
pub struct SeedResult {
    pub seed: u64,
    pub nodes: usize,
    pub managers: usize,
    pub ops: u64,
    pub faults: u64,
    pub violations: Vec<String>,
}

/// Where seeds keep their data directories (memory when there is some).
fn temp_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Runs one seed; `trace` prints every note and log line.
pub fn run_seed(seed: u64, trace: bool) -> anyhow::Result<SeedResult> {
    let mut rng = Rng::from_seed(seed ^ 0x5eed_5eed);
    let nodes = 3 + (rng.next_u64() % 5) as usize;
    let managers = [1usize, 3, 3, 5][(rng.next_u64() % 4) as usize].min(if nodes.is_multiple_of(2) { nodes - 1 } else { nodes });
    // Half the seeds keep a silent node's tasks for a while (`--node-lost-after`; Disconnected first).
    let node_lost_after_ms = [None, None, None, Some(5_000), Some(10_000), Some(20_000)][(rng.next_u64() % 6) as usize];
    // A third of the seeds keep their managers by the autopilot (`--managers N`), drawn from
    // their own generator so the other draws (and the regression seeds) stay as they were.
    let mut ap = Rng::from_seed(seed ^ 0xa070_9170);
    let autopilot = if ap.next_u64().is_multiple_of(3) {
        // At least the managers joined at setup (fewer would demote them while they join).
        let wanted = [3u8, 3, 5][(ap.next_u64() % 3) as usize].max(managers as u8);
        let wanted = if wanted as usize > nodes { 3 } else { wanted };
        Some((wanted, [5_000u64, 10_000, 20_000][(ap.next_u64() % 3) as usize]))
    } else {
        None
    };
    // Unique per run: tests run seeds in parallel threads of one process.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = temp_root().join(format!("shoal-sim-{}-{run}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let trace = Rc::new(RefCell::new(Trace { on: trace, node: None, mono: None }));
    let sink_trace = trace.clone();
    crate::log::sink::set(Some(Box::new(move |level, args| {
        let mut t = sink_trace.borrow_mut();
        if t.on {
            let now = t.mono.as_ref().map_or(0, |m| m.now_ms());
            t.line(now, None, format_args!("{level:5} {args}"));
        }
    })));
    let result = run_world(seed, (nodes, managers, node_lost_after_ms, autopilot), dir, trace);
    crate::log::sink::set(None);
    result
}

/// A seed's cluster: nodes, managers, `--node-lost-after` (None: off), and
/// the autopilot's `--managers` and `--manager-lost-after` (None: off).
type Shape = (usize, usize, Option<u64>, Option<(u8, u64)>);

fn run_world(
    seed: u64,
    (nodes, managers, node_lost_after_ms, autopilot): Shape,
    dir: PathBuf,
    trace: Rc<RefCell<Trace>>,
) -> anyhow::Result<SeedResult> {
    let mut w = World::new(rng_seed(seed), nodes, dir, trace.clone())?;
    trace.borrow_mut().mono = Some(w.mono());
    w.note(format_args!(
        "seed {seed}: {nodes} nodes, {managers} managers, node-lost-after {node_lost_after_ms:?} ms, autopilot (managers, lost after ms) {autopilot:?}"
    ));
    w.boot_all()?;
    if let Err(e) = client::setup(&mut w, managers, node_lost_after_ms, autopilot)? {
        w.checker.violations.push(e);
    }
    if w.checker.violations.is_empty() {
        let until = w.now_ms() + CHAOS_MS;
        w.run_until(until, true, |_| false)?;
    }
    if w.checker.violations.is_empty() {
        w.heal()?;
        let deadline = w.now_ms() + HEAL_MS;
        let mut next_check = w.now_ms() + 1_000;
        let mut verdict = Err("not checked".to_string());
        w.run_until(deadline, false, |w| {
            if w.now_ms() < next_check {
                return false;
            }
            next_check = w.now_ms() + 1_000;
            verdict = check::Checker::converged(&w.facts());
            verdict.is_ok()
        })?;
        if let Err(why) = verdict {
            if w.checker.violations.is_empty() {
                w.checker.violations.push(format!("not converged {} s after healing: {why}", HEAL_MS / 1000));
            }
        }
    }
    let o = w.outcome();
    Ok(SeedResult { seed, nodes, managers, ops: o.ops, faults: o.faults, violations: o.violations })
}

fn rng_seed(seed: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x51_u64
}

/// `swarm_sim [--seeds N] [--first-seed S] [--skip S,S..] | --seed S [--trace]
/// | --list S,S.. [--bug NAME] | --autopilot-bench N [--first-seed S]`: runs
/// seeds and prints `seeds: N, violations: V` last; the exit status is 1
/// when a seed found a violation (2 on bad arguments).
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds = 100u64;
    let mut first = 0u64;
    let mut trace = false;
    let mut skip: Vec<u64> = Vec::new();
    let mut list: Option<Vec<u64>> = None;
    let mut bugs: Vec<Bug> = Vec::new();
    let mut bench_seeds: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a number"))?;
            v.parse().map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        let r = match a.as_str() {
            "--seeds" => value("--seeds").map(|v| seeds = v),
            "--first-seed" => value("--first-seed").map(|v| first = v),
            "--seed" => value("--seed").map(|v| {
                first = v;
                seeds = 1;
            }),
            "--trace" => {
                trace = true;
                Ok(())
            }
            // An injected bug (`shoal_manager::sim_bugs`), to watch the checkers catch it.
            "--bug" => {
                let bug = match it.next().map(String::as_str) {
                    Some("ignore-constraints") => Ok(Bug::IgnoreConstraints),
                    Some("sessions-for-strangers") => Ok(Bug::SessionsForStrangers),
                    Some("decide-before-caught-up") => Ok(Bug::DecideBeforeCaughtUp),
                    Some("lying-disk") => Ok(Bug::LyingDisk),
                    other => Err(format!(
                        "--bug {other:?}: use ignore-constraints, sessions-for-strangers, decide-before-caught-up or lying-disk"
                    )),
                };
                bug.map(|b| bugs.push(b))
            }
            // The autopilot's benchmark (`bench`): N seeds each for 3 and 5 managers.
            "--autopilot-bench" => value("--autopilot-bench").map(|v| {
                bench_seeds = Some(v);
            }),
            // Seeds with a known, filed violation (`targets/swarm-sim-known.txt`): not run.
            "--skip" => seed_list("--skip", it.next()).map(|v| skip = v),
            // Exactly these seeds (`targets/swarm-sim-regressions.txt`: seeds that once failed).
            "--list" => seed_list("--list", it.next()).map(|v| list = Some(v)),
            other => Err(format!("unknown argument {other:?}; use --seeds N --first-seed S, or --seed S --trace")),
        };
        if let Err(e) = r {
            eprintln!("swarm_sim: {e}");
            return 2;
        }
    }
    shoal_manager::sim_bugs::set(&bugs);
    if let Some(n) = bench_seeds {
        return bench::autopilot_bench(n, first);
    }
    let started = std::time::Instant::now();
    let mut bad = 0u64;
    let mut sim_ops = 0u64;
    let mut ran = 0u64;
    let chosen: Vec<u64> = list.unwrap_or_else(|| (first..first.saturating_add(seeds)).collect());
    let seeds = chosen.len() as u64;
    for seed in chosen {
        if skip.contains(&seed) {
            continue;
        }
        ran += 1;
        match run_seed(seed, trace) {
            Ok(r) => {
                sim_ops += r.ops;
                if !r.violations.is_empty() {
                    bad += 1;
                    println!("seed {seed} ({} nodes, {} managers, {} ops, {} faults): VIOLATION", r.nodes, r.managers, r.ops, r.faults);
                    for v in &r.violations {
                        println!("  {v}");
                    }
                    println!("  replay: cargo run --release -p shoal-agent --features sim --example swarm_sim -- --seed {seed} --trace");
                } else if trace {
                    println!("seed {seed} ({} nodes, {} managers, {} ops, {} faults): ok", r.nodes, r.managers, r.ops, r.faults);
                }
            }
            Err(e) => {
                bad += 1;
                println!("seed {seed}: the simulator failed: {e:#}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let skipped = seeds - ran;
    println!(
        "{:.2} seeds/s ({ran} seeds in {secs:.1} s, {sim_ops} client operations, {skipped} known seeds skipped)",
        ran as f64 / secs.max(1e-9)
    );
    println!("seeds: {ran}, violations: {bad}");
    i32::from(bad > 0)
}

/// A comma-separated list of seeds (empty entries ignored).
fn seed_list(flag: &str, arg: Option<&String>) -> Result<Vec<u64>, String> {
    let Some(list) = arg else { return Err(format!("{flag} needs a comma-separated list of seeds")) };
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<u64>().map_err(|_| format!("{flag}: {s:?} is not a seed")))
        .collect()
}

#[cfg(test)]
mod tests {
    //! The checkers catch what they are for: each test switches one bug on
    //! (`shoal_manager::sim_bugs`) and looks for the first seed whose run
    //! reports the violation that bug causes. The bugs are per thread.
    use super::run_seed;
    use shoal_manager::sim_bugs::{self, Bug};

    /// The first seed below `seeds_max` whose run with `bug` on reports a
    /// violation containing `needle`.
    fn first_catch(bug: Bug, needle: &str, seeds_max: u64) -> u64 {
        sim_bugs::set(&[bug]);
        for seed in 0..seeds_max {
            let r = run_seed(seed, false).expect("the simulator runs");
            if r.violations.iter().any(|v| v.contains(needle)) {
                sim_bugs::set(&[]);
                return seed;
            }
        }
        sim_bugs::set(&[]);
        panic!("no seed below {seeds_max} caught {bug:?} ({needle:?})");
    }

    #[test]
    fn clean_runs_report_nothing() {
        for seed in 0..10 {
            let r = run_seed(seed, false).expect("the simulator runs");
            assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
            assert!(r.ops > 10 && r.faults > 5, "seed {seed} did something: {} ops, {} faults", r.ops, r.faults);
        }
    }

    #[test]
    fn catches_a_scheduler_that_ignores_constraints() {
        first_catch(Bug::IgnoreConstraints, "which fails its placement", 100);
    }

    #[test]
    fn catches_sessions_for_nodes_outside_the_swarm() {
        first_catch(Bug::SessionsForStrangers, "which is not in its state", 200);
    }

    #[test]
    fn catches_a_leader_deciding_before_it_caught_up() {
        // The bug shows only on a failover with commits the new leader has not applied: rare
        // (the first seed that catches it moved from 221 to 427 as the daemon changed).
        first_catch(Bug::DecideBeforeCaughtUp, "all want to run", 1_000);
    }

    #[test]
    fn catches_a_disk_that_lies_about_fsync() {
        first_catch(Bug::LyingDisk, "acknowledged write lost", 400);
    }

    #[test]
    fn a_seed_replays_the_same_run() {
        let a = run_seed(7, false).expect("runs");
        let b = run_seed(7, false).expect("runs");
        assert_eq!((a.ops, a.faults, a.violations), (b.ops, b.faults, b.violations));
    }
}
