//! Edge autonomy (issue #14), with real processes in network namespaces and
//! real containerd: a worker that reboots with no manager in reach runs its
//! last assigned tasks again from what it persisted, and the swarm sees no
//! replacement once the link heals.

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for, wait_for_seen};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// `service ps` rows of `service` as the manager sees them.
fn ps(c: &Cluster, service: &str) -> Vec<Value> {
    let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]).ok();
    r.stdout.lines().map(|l| serde_json::from_str(l).expect("ps json line")).collect()
}

fn running_ids(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .filter(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().unwrap_or("").starts_with("Running"))
        .map(|t| t["ID"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_worker_rebooted_with_no_manager_in_reach_runs_its_tasks_again() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    // Long enough that the partition below never marks the worker Down.
    c.nodes[0].shoal(&["swarm", "update", "--dispatcher-heartbeat", "10m"]).ok();
    let create = ["service", "create", "-d", "--name", "web", "--replicas", "2", "--constraint", "node.role==worker"];
    c.nodes[0].shoal(&[&create[..], &["shoal.test/busybox:latest", "sleep", "1000"]].concat()).ok();
    let before = wait_for_seen("2 tasks running on the worker", WAIT, || {
        let mut on_worker = c.nodes[1].running_ids();
        on_worker.sort();
        let listed = running_ids(&ps(&c, "web"));
        (on_worker.len() == 2 && on_worker == listed).then_some(on_worker.clone()).ok_or(format!("{on_worker:?} vs {listed:?}"))
    });

    // Cut off, then a power cut: the daemon, containerd, every process and
    // containerd's state dir are gone; containers and images stay on disk.
    c.nodes[1].partition();
    c.nodes[1].power_cycle();
    assert_eq!(c.nodes[1].running_tasks(), 0);
    let t = Instant::now();
    c.nodes[1].start();
    wait_for_seen("the same two tasks to run again on the cut-off worker", WAIT, || {
        let mut on_worker = c.nodes[1].running_ids();
        on_worker.sort();
        (on_worker == before).then_some(()).ok_or(format!("running {on_worker:?}, want {before:?}"))
    });
    println!("edge: the rebooted, cut-off worker ran its 2 tasks again {:?} after its daemon started", t.elapsed());
    assert!(c.nodes[1].log().contains("no manager answered within 3 s"), "{}", c.nodes[1].log_tail(30));

    // Healed: the manager sees the same tasks running, and nothing replaced them.
    c.nodes[1].heal();
    wait_for("the worker's link to come back", WAIT, || c.nodes[1].log().contains("a manager answered").then_some(()));
    wait_for_seen("the swarm to list the same two tasks, and only them", WAIT, || {
        let rows = ps(&c, "web");
        let running = running_ids(&rows);
        (rows.len() == 2 && running == before).then_some(()).ok_or(format!("{rows:?}"))
    });
    let mut on_worker = c.nodes[1].running_ids();
    on_worker.sort();
    assert_eq!(on_worker, before);
}
