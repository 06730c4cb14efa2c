//! Partition benchmark (issue #14, printed figures; `targets/edge-bench.sh`
//! runs it, CI does not: `tests/tests/node_lost.rs` asserts the behaviour).
//! A worker of a 1-manager, 2-worker swarm running one replica of a service
//! (two replicas, one per worker) is cut off for each duration in
//! `SHOAL_PARTITIONS_S` (default `5,60,600`), with `--node-lost-after` off
//! and at `SHOAL_NODE_LOST_AFTER` (default `15m`), heartbeat 5 s. Printed per
//! run: container restarts on the cut-off worker, replacement tasks, and the
//! time from the heal until the service is converged (two running tasks,
//! one per slot, every node Ready).

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::wait_for_seen;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn ps(c: &Cluster) -> Vec<Value> {
    let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", "web"]);
    r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var).unwrap_or_else(|_| default.to_string()).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

#[test]
#[ignore = "a benchmark: run by targets/edge-bench.sh"]
fn partitions_with_and_without_node_lost_after() {
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(1, 2);
    let create =
        ["service", "create", "-d", "--name", "web", "--replicas", "2", "--constraint", "node.role==worker", "--stop-grace-period", "1s"];
    c.nodes[0].shoal(&[&create[..], &["shoal.test/busybox:latest", "sleep", "100000"]].concat()).ok();
    let lost_after = std::env::var("SHOAL_NODE_LOST_AFTER").unwrap_or_else(|_| "15m".into());
    for setting in ["0", lost_after.as_str()] {
        c.nodes[0].shoal(&["swarm", "update", "--dispatcher-heartbeat", "5s", "--node-lost-after", setting]).ok();
        for secs in list("SHOAL_PARTITIONS_S", "5,60,600") {
            let secs: u64 = secs.parse().expect("SHOAL_PARTITIONS_S: seconds, comma-separated");
            let settled = |c: &Cluster| {
                let rows = ps(c);
                let running: Vec<&Value> =
                    rows.iter().filter(|t| t["CurrentState"].as_str().unwrap_or("").starts_with("Running")).collect();
                let (a, b) = (c.nodes[1].running_ids(), c.nodes[2].running_ids());
                let nodes = c.nodes[0].shoal(&["node", "ls", "--format", "json"]).stdout;
                let all_ready = nodes.lines().all(|l| l.contains("\"Ready\""));
                (running.len() == 2 && a.len() + b.len() == 2 && all_ready)
                    .then_some(())
                    .ok_or(format!("{} running, {a:?} {b:?}", running.len()))
            };
            // One task per worker before each run (a replaced task stays where it went).
            if c.nodes[1].running_ids().len() != 1 {
                c.nodes[0].shoal(&["service", "update", "--force", "-d", "web"]).ok();
            }
            wait_for_seen("one task on each worker before the partition", Duration::from_secs(120), || {
                settled(&c)?;
                let (a, b) = (c.nodes[1].running_ids().len(), c.nodes[2].running_ids().len());
                (a == 1 && b == 1).then_some(()).ok_or(format!("{a} and {b} tasks"))
            });
            // Stable: no task created for 5 s (a service's first rollout, e.g. its image pinned to a
            // digest, replaces tasks on its own).
            let ids = |c: &Cluster| -> BTreeSet<String> { ps(c).iter().filter_map(|t| t["ID"].as_str().map(str::to_string)).collect() };
            let tasks = wait_for_seen("no new task for 5 s", Duration::from_secs(120), || {
                let before = ids(&c);
                std::thread::sleep(Duration::from_secs(5));
                let now = ids(&c);
                (now == before && settled(&c).is_ok()).then_some(now).ok_or("tasks still changing".to_string())
            });
            let pids = c.nodes[1].tasks_pids();
            c.nodes[1].partition();
            std::thread::sleep(Duration::from_secs(secs));
            c.nodes[1].heal();
            let healed = Instant::now();
            wait_for_seen("the service converged after the heal", Duration::from_secs(300), || settled(&c));
            let converged = healed.elapsed();
            let after: BTreeSet<String> = ps(&c).iter().filter_map(|t| t["ID"].as_str().map(str::to_string)).collect();
            let new_tasks: Vec<&String> = after.difference(&tasks).collect();
            let replacements = new_tasks.len();
            if std::env::var_os("SHOAL_BENCH_DEBUG").is_some() {
                eprintln!("before {tasks:?}\nafter {after:?}\nps {:#?}", ps(&c));
                eprintln!("manager:\n{}\nworker:\n{}", c.nodes[0].log_tail(25), c.nodes[1].log_tail(25));
            }
            let now = c.nodes[1].tasks_pids();
            let restarts = pids.iter().filter(|p| !now.contains(p)).count();
            println!(
                "partition_bench: --node-lost-after {setting}, partition {secs} s: {restarts} container restart(s) on the cut-off worker, \
                 {replacements} replacement task(s), converged {:.1} s after the heal",
                converged.as_secs_f64()
            );
        }
    }
}
