//! `swarm_sim --autopilot-bench N [--first-seed S]`: the time the autopilot
//! takes, in simulated time, from a manager's death to N healthy managers
//! again (the dead one out of raft, the leader's autopilot with nothing left
//! to do), over N seeds each for 3 and 5 managers; the victim is the leader
//! in a third of the seeds, a follower otherwise; `--manager-lost-after 5s`,
//! no other fault. Prints the distribution (issue #20's benchmark).

use super::world::World;
use super::{client, rng_seed, temp_root, Trace};
use shoal_shared::rng::Rng;
use std::cell::RefCell;
use std::rc::Rc;

/// `--manager-lost-after` in the benchmark.
const LOST_AFTER_MS: u64 = 5_000;
/// How long a seed may take to settle, before and after the death.
const SETTLE_MS_MAX: u64 = 120_000;

/// Runs the benchmark; the exit status is 1 when a seed never settled.
pub(crate) fn autopilot_bench(seeds: u64, first: u64) -> i32 {
    crate::log::sink::set(Some(Box::new(|_, _| {})));
    let mut failed = 0;
    for managers in [3usize, 5] {
        let mut took: Vec<u64> = Vec::new();
        for seed in first..first + seeds {
            match one(seed, managers) {
                Ok(ms) => took.push(ms),
                Err(e) => {
                    failed += 1;
                    println!("autopilot bench: {managers} managers, seed {seed}: {e}");
                }
            }
        }
        took.sort_unstable();
        let at = |q: f64| took.get(((took.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        println!(
            "autopilot bench (simulated): {managers} managers, lost-after {} s: death to {managers} healthy managers over {} seeds: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (min {} ms)",
            LOST_AFTER_MS / 1000,
            took.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            took.last().copied().unwrap_or(0),
            took.first().copied().unwrap_or(0),
        );
    }
    crate::log::sink::set(None);
    i32::from(failed > 0)
}

/// One seed: a swarm of `managers` managers and three workers, settled;
/// one manager dies for good; the simulated ms until it is replaced.
fn one(seed: u64, managers: usize) -> Result<u64, String> {
    let nodes = managers + 3;
    let dir = temp_root().join(format!("shoal-apbench-{}-{seed}-{managers}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let trace = Rc::new(RefCell::new(Trace { on: false, node: None, mono: None }));
    let mut w = World::new(rng_seed(seed), nodes, dir.clone(), trace).map_err(|e| e.to_string())?;
    let r = run(&mut w, seed, managers);
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run(w: &mut World, seed: u64, managers: usize) -> Result<u64, String> {
    w.boot_all().map_err(|e| e.to_string())?;
    client::setup(w, managers, None, Some((managers as u8, LOST_AFTER_MS))).map_err(|e| e.to_string())??;
    let until = w.now_ms() + SETTLE_MS_MAX;
    w.run_until(until, false, |w| settled(w, managers, None)).map_err(|e| e.to_string())?;
    if !settled(w, managers, None) {
        return Err("never settled before the death".into());
    }
    let leader = leader(w).ok_or("no leader")?;
    let mut rng = Rng::from_seed(seed);
    let victim = if rng.next_u64().is_multiple_of(3) {
        leader
    } else {
        let followers: Vec<usize> = (0..managers).filter(|i| *i != leader).collect();
        followers[(rng.next_u64() % followers.len() as u64) as usize]
    };
    let start = w.now_ms();
    w.crash(victim, false, 30 * 24 * 3_600_000);
    let until = start + SETTLE_MS_MAX;
    w.run_until(until, false, |w| settled(w, managers, Some(victim))).map_err(|e| e.to_string())?;
    if !settled(w, managers, Some(victim)) {
        return Err(format!("node-{victim} (leader: {}) not replaced within {SETTLE_MS_MAX} ms", victim == leader));
    }
    Ok(w.now_ms() - start)
}

fn leader(w: &World) -> Option<usize> {
    w.facts().iter().find(|f| f.view.as_ref().is_some_and(|v| v.leads && v.in_swarm)).map(|f| f.index)
}

/// The leader's autopilot has nothing to do with `managers` healthy, and `dead` is not among the voters.
fn settled(w: &mut World, managers: usize, dead: Option<usize>) -> bool {
    let facts = w.facts();
    let Some(f) = facts.iter().find(|f| f.view.as_ref().is_some_and(|v| v.leads && v.in_swarm)) else { return false };
    let Some(v) = &f.view else { return false };
    let Some(a) = &v.autopilot else { return false };
    let dead_voter = dead.is_some_and(|d| v.voters.contains(&shoal_manager::store::raft_id(facts[d].node_id)));
    a.state == "nothing to do" && a.healthy.len() == managers && !dead_voter
}
