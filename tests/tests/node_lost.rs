//! `--node-lost-after` (issue #14, no churn), with real processes in network
//! namespaces and real containerd: a worker cut off for less than the
//! setting is `Disconnected` and keeps its containers (same pids, no new
//! task anywhere); cut off for longer it is Down, its task is replaced on the
//! other worker, and once healed it stops its superseded copy within seconds.
//! A worker that leaves the swarm is Down after the heartbeat, and its tasks
//! move.

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for, wait_for_seen};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// How long a slot may run two copies after the heal (the old one's stop).
const TWO_COPIES_MS_MAX: u128 = 10_000;

/// `service ps` rows of `service` as the manager sees them.
fn ps(c: &Cluster, service: &str) -> Vec<Value> {
    let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]).ok();
    r.stdout.lines().map(|l| serde_json::from_str(l).expect("ps json line")).collect()
}

fn ids(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|t| t["ID"].as_str().unwrap_or_default().to_string()).collect();
    v.sort();
    v
}

/// The `node ls` status of node `i`, as the manager sees it.
fn status(c: &Cluster, i: usize) -> String {
    let id = c.node_id(i).expect("node id");
    let r = c.nodes[0].shoal(&["node", "ls", "--format", "json"]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["ID"].as_str().is_some_and(|s| id.starts_with(s) || s.starts_with(&id)))
        .map(|v| v["Status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Waits until the manager's `node ls` shows node `i` as `want`.
fn wait_status(c: &Cluster, i: usize, want: &str, timeout: Duration) {
    wait_for_seen(&format!("node {i} to show {want}"), timeout, || {
        let s = status(c, i);
        (s == want).then_some(()).ok_or(s)
    });
}

#[test]
fn a_short_partition_keeps_the_tasks_and_a_long_one_replaces_them() {
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(1, 2);
    c.nodes[0].shoal(&["swarm", "update", "--dispatcher-heartbeat", "2s", "--node-lost-after", "12s"]).ok();
    let info = c.nodes[0].shoal(&["info"]).ok().stdout;
    assert!(info.contains("  Heartbeat Period: 2 seconds\n  Node Lost After: 12s\n"), "{info}");
    // `sleep` as PID 1 ignores SIGTERM: a short grace keeps the old copy's stop to the link's return.
    let create =
        ["service", "create", "-d", "--name", "web", "--replicas", "2", "--constraint", "node.role==worker", "--stop-grace-period", "1s"];
    c.nodes[0].shoal(&[&create[..], &["shoal.test/busybox:latest", "sleep", "1000"]].concat()).ok();
    let before = wait_for_seen("one task running on each worker", WAIT, || {
        let (a, b) = (c.nodes[1].tasks_pids(), c.nodes[2].tasks_pids());
        (a.len() == 1 && b.len() == 1).then(|| (a.clone(), ids(&ps(&c, "web")))).ok_or(format!("{a:?} {b:?}"))
    });
    let (pids, tasks) = before;

    // Shorter than --node-lost-after: Disconnected, nothing replaced, same containers.
    c.nodes[1].partition();
    let t = Instant::now();
    wait_status(&c, 1, "Disconnected", Duration::from_secs(11));
    println!("node_lost: Disconnected {:?} after the partition", t.elapsed());
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t.elapsed()));
    assert_eq!(status(&c, 1), "Disconnected");
    assert_eq!(ids(&ps(&c, "web")), tasks, "no task created while Disconnected");
    c.nodes[1].heal();
    wait_status(&c, 1, "Ready", WAIT);
    assert_eq!(c.nodes[1].tasks_pids(), pids, "the same container, the same pid");
    assert_eq!(ids(&ps(&c, "web")), tasks, "the same task set");
    let log = c.nodes[0].log();
    assert!(log.contains("is disconnected: no link for"), "{}", c.nodes[0].log_tail(30));

    // Longer: Down, replaced on the other worker; healed, the old copy stops.
    let old = pids[0].0.clone();
    c.nodes[1].partition();
    let t = Instant::now();
    wait_status(&c, 1, "Down", Duration::from_secs(30));
    println!("node_lost: Down {:?} after the partition", t.elapsed());
    assert!(t.elapsed() >= Duration::from_secs(12), "Down before --node-lost-after: {:?}", t.elapsed());
    wait_for_seen("a replacement running on the other worker", WAIT, || {
        let there = c.nodes[2].running_ids();
        (there.len() == 2).then_some(()).ok_or(format!("{there:?}"))
    });
    assert_eq!(c.nodes[1].running_ids(), vec![old.clone()], "the cut-off worker still runs its copy");
    c.nodes[1].heal();
    let healed = Instant::now();
    wait_for("the returning worker to stop its superseded copy", WAIT, || c.nodes[1].running_ids().is_empty().then_some(()));
    let two_copies = healed.elapsed();
    println!("node_lost: the returning worker stopped its old copy {two_copies:?} after the heal");
    assert!(two_copies.as_millis() <= TWO_COPIES_MS_MAX, "two copies of a slot for {two_copies:?}");
    wait_status(&c, 1, "Ready", WAIT);
    let rows = ps(&c, "web");
    let running: Vec<&Value> = rows.iter().filter(|t| t["CurrentState"].as_str().unwrap_or("").starts_with("Running")).collect();
    assert_eq!(running.len(), 2, "{rows:?}");
    assert!(rows.iter().any(|t| t["ID"] == old.as_str() && t["DesiredState"] == "Shutdown"), "{rows:?}");

    // A worker that leaves the swarm is not coming back for its tasks: Down after the
    // heartbeat, not --node-lost-after, and its tasks move.
    let left = c.nodes[2].shoal(&["swarm", "leave"]);
    assert_eq!(left.code, 0, "{}", left.stderr);
    let t = Instant::now();
    wait_status(&c, 2, "Down", Duration::from_secs(10));
    println!("node_lost: a worker that left is Down {:?} after its leave", t.elapsed());
    assert!(c.nodes[0].log().contains("is down: it left the swarm"), "{}", c.nodes[0].log_tail(20));
    wait_for_seen("both tasks on the remaining worker", WAIT, || {
        let there = c.nodes[1].running_ids();
        (there.len() == 2).then_some(()).ok_or(format!("{there:?}"))
    });
}
