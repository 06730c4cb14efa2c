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

#[test]
fn offline_a_crash_loop_is_restarted_in_place_exactly_max_attempts_times() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    c.nodes[0].shoal(&["swarm", "update", "--dispatcher-heartbeat", "10m"]).ok();
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        "crash",
        "--constraint",
        "node.role==worker",
        "--restart-max-attempts",
        "3",
        "--restart-delay",
        "1s",
        "shoal.test/busybox:latest",
        "sh",
        "-c",
        "sleep 8; exit 1",
    ];
    c.nodes[0].shoal(&create).ok();
    let first = wait_for_seen("the task to run on the worker", WAIT, || {
        let ids = c.nodes[1].running_ids();
        (ids.len() == 1).then(|| ids[0].clone()).ok_or(format!("{ids:?}"))
    });
    c.nodes[1].partition();
    // Three crashes restarted in place (the same task id), then no more.
    let restarts = |c: &Cluster| c.nodes[1].log().matches("no manager in reach: restarting a task in place").count();
    wait_for("3 in-place restarts", Duration::from_secs(90), || (restarts(&c) >= 3).then_some(()));
    assert_eq!(c.nodes[1].running_ids().iter().filter(|id| **id != first).count(), 0, "another task ran");
    // The third restart's run ends after 8 s; give a fourth every chance to happen.
    std::thread::sleep(Duration::from_secs(14));
    assert_eq!(restarts(&c), 3, "{}", c.nodes[1].log_tail(40));
    assert!(c.nodes[1].running_ids().is_empty(), "the task still runs after its last attempt");

    // Healed: the manager learns the task failed, and what was done meanwhile.
    c.nodes[1].heal();
    wait_for_seen("the failure and its in-place restarts to reach the manager", WAIT, || {
        let rows = ps(&c, "crash");
        let row = rows.iter().find(|t| t["ID"] == first.as_str());
        match row {
            Some(t) if t["Error"].as_str().is_some_and(|e| e.contains("restarted in place 3 times with no manager in reach")) => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    });
    // The manager counts the in-place restarts as attempts (3 of 3): it starts no new task for the
    // slot, and the container is not started again. A restart would come within its 1 s delay
    // and the orchestrator's next pass; give it many times that.
    std::thread::sleep(Duration::from_secs(12));
    let rows = ps(&c, "crash");
    assert_eq!(rows.len(), 1, "the manager restarted the slot again: {rows:?}");
    assert_eq!(rows[0]["ID"], first.as_str());
    assert!(rows[0]["CurrentState"].as_str().is_some_and(|s| s.starts_with("Failed")), "{rows:?}");
    assert!(c.nodes[1].running_ids().is_empty(), "a task runs again after its last attempt");
    assert_eq!(restarts(&c), 3, "{}", c.nodes[1].log_tail(40));
}
