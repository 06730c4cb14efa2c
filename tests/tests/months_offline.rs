//! Months offline (issue #14), with real processes in network namespaces
//! and real containerd. A worker cut off while the swarm rotates its join
//! token and updates its service comes back with its clocks six months
//! ahead (monotonic and boot clocks through a time namespace, the wall clock
//! through `SHOAL_CLOCK_OFFSET_S`): with no command it is Ready again with
//! the same node id and runs the new version of its task. A worker removed
//! (`node rm --force`) while cut off is told so, in its log, `shoal info` and
//! its CLI's errors, and redials only a few times a minute.
//!
//!
//! A manager cut off (daemon killed) while the others rotate the join token
//! and write well past their snapshot interval (`SHOAL_SNAPSHOT_INTERVAL_ENTRIES`
//! = 20, so its place in the log is compacted away) comes back six months
//! ahead with no command: it catches up through the leader's snapshot (said
//! in its log), is Reachable with the same node id, and its own replica,
//! read with the others cut off again, holds the rotated token and the
//! last write. (A worker catches up from its full assignment set, not from
//! the raft log: the first test.)

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for, wait_for_seen};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// Six months, in seconds.
const OFFSET_S: &str = "15552000";
const REMOVED: &str = "this node was removed from the swarm: run 'shoal swarm leave --force' and join again";

/// The `node ls` status of the node whose id is `id`, as the manager sees it.
fn status(c: &Cluster, id: &str) -> String {
    let r = c.nodes[0].shoal(&["node", "ls", "--format", "json"]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["ID"].as_str().is_some_and(|s| id.starts_with(s) || s.starts_with(id)))
        .map(|v| v["Status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The `GEN=` values of the running containers of node `i` (from their environment).
fn gens(c: &Cluster, i: usize) -> Vec<String> {
    let mut v: Vec<String> = c.nodes[i]
        .tasks_pids()
        .into_iter()
        .map(|(_, pid)| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            env.split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(b"GEN="))
                .map(|g| String::from_utf8_lossy(g).into_owned())
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

/// How many times the manager's log says it refused `id`'s links.
fn refusals(c: &Cluster, id: &str) -> usize {
    c.nodes[0].log().lines().filter(|l| l.contains(&format!("refused node {id}"))).count()
}

#[test]
fn a_worker_back_after_months_with_its_clock_ahead_catches_up_and_a_removed_one_is_told() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    c.nodes[0].shoal(&["swarm", "update", "--dispatcher-heartbeat", "2s"]).ok();
    let create =
        ["service", "create", "-d", "--name", "web", "--constraint", "node.role==worker", "--env", "GEN=1", "--stop-grace-period", "1s"];
    c.nodes[0].shoal(&[&create[..], &["shoal.test/busybox:latest", "sleep", "1000"]].concat()).ok();
    wait_for_seen("GEN=1 running on the worker", WAIT, || {
        let g = gens(&c, 1);
        (g == ["1"]).then_some(()).ok_or(format!("{g:?}"))
    });
    let id = c.node_id(1).expect("the worker's node id");
    let token_before = c.nodes[0].shoal(&["swarm", "join-token", "-q", "worker"]).ok().stdout;

    // Cut off, its daemon gone; meanwhile the swarm moves on.
    c.nodes[1].partition();
    c.nodes[1].kill();
    wait_for_seen("the worker to be Down", WAIT, || {
        let s = status(&c, &id);
        (s == "Down").then_some(()).ok_or(s)
    });
    c.nodes[0].shoal(&["swarm", "join-token", "--rotate", "worker"]).ok();
    let token_after = c.nodes[0].shoal(&["swarm", "join-token", "-q", "worker"]).ok().stdout;
    assert_ne!(token_before, token_after, "the worker token rotated");
    c.nodes[0].shoal(&["service", "update", "-d", "--env-add", "GEN=2", "web"]).ok();

    // Back six months later by every clock it has, still cut off, then healed.
    let unshare = ["unshare", "--time", "--kill-child", "--monotonic", OFFSET_S, "--boottime", OFFSET_S];
    c.nodes[1].start_wrapped(&unshare, &[("SHOAL_CLOCK_OFFSET_S", OFFSET_S)], &[]);
    assert!(c.nodes[1].log().contains("SHOAL_CLOCK_OFFSET_S=15552000"), "{}", c.nodes[1].log_tail(20));
    // The daemon is unshare's child, in the time namespace unshare made.
    let wrapper = c.nodes[1].pid().expect("the wrapper's pid");
    let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).unwrap_or_default();
    let daemon = children.split_whitespace().next().expect("the daemon under unshare");
    let offsets = std::fs::read_to_string(format!("/proc/{daemon}/timens_offsets")).unwrap_or_default();
    assert!(offsets.lines().all(|l| l.contains(OFFSET_S)) && offsets.lines().count() == 2, "{offsets}");
    c.nodes[1].heal();
    let healed = Instant::now();
    wait_for_seen("the worker to be Ready again with the same id", WAIT, || {
        let s = status(&c, &id);
        (s == "Ready").then_some(()).ok_or(s)
    });
    assert_eq!(c.nodes[1].node_id().as_deref(), Some(id.as_str()), "the same node id");
    wait_for_seen("the new version (GEN=2) running on the worker", WAIT, || {
        let g = gens(&c, 1);
        (g == ["2"]).then_some(()).ok_or(format!("{g:?}"))
    });
    println!("months_offline: Ready and running the updated task {:?} after the heal", healed.elapsed());
    let ps = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", "web"]).ok().stdout;
    let running: Vec<Value> = ps
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().unwrap_or("").starts_with("Running"))
        .collect();
    assert_eq!(running.len(), 1, "{ps}");
    assert!(!c.nodes[1].log().contains(REMOVED));

    // Removed while cut off: told so once it is back, and not hammering the manager.
    c.nodes[1].partition();
    c.nodes[0].shoal(&["node", "rm", "--force", &id]).ok();
    let before = refusals(&c, &id);
    c.nodes[1].heal();
    wait_for("the worker's log to say it was removed", WAIT, || c.nodes[1].log().contains(REMOVED).then_some(()));
    let told = Instant::now();
    let info = c.nodes[1].shoal(&["info"]);
    assert!(info.stderr.contains(REMOVED), "info: {}\n{}", info.stdout, info.stderr);
    let ls = c.nodes[1].shoal(&["node", "ls"]);
    assert!(ls.code != 0 && ls.stderr.contains(REMOVED), "node ls on the removed worker: {} {}", ls.stdout, ls.stderr);
    std::thread::sleep(Duration::from_secs(30).saturating_sub(told.elapsed()));
    let dials = refusals(&c, &id) - before;
    println!("months_offline: the removed worker dialed {dials} times in its first 30 s back");
    // Jittered backoff from 1-2 s doubling up to a minute: at most 5 in 30 s.
    assert!((1..=6).contains(&dials), "{dials} refused dials in 30 s\n{}", c.nodes[0].log_tail(30));
    assert_eq!(c.nodes[1].log().matches(REMOVED).count(), 1, "said once: {}", c.nodes[1].log_tail(30));
}

/// Raft entries between snapshots for the compaction test (the default is 10 000).
const SNAPSHOT_EVERY: &str = "20";
/// Label writes made while the manager is away: several snapshot intervals.
const WRITES_AWAY: usize = 60;

/// `node ls` rows as JSON, from node `i`.
fn nodes_json(c: &Cluster, i: usize) -> Vec<Value> {
    c.nodes[i]
        .shoal(&["node", "ls", "--format", "json"])
        .ok()
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

#[test]
fn a_manager_back_after_months_catches_up_through_a_snapshot_of_a_compacted_log() {
    let Some(mut c) = Cluster::new(3) else { return };
    let env = [("SHOAL_SNAPSHOT_INTERVAL_ENTRIES", SNAPSHOT_EVERY)];
    for n in &mut c.nodes {
        n.start_env(&env);
    }
    assert!(c.nodes[2].log().contains("a snapshot every 20 raft entries"), "{}", c.nodes[2].log_tail(20));
    c.form(3, 0);
    let leader = c.wait_for_leader(WAIT);
    assert_eq!(leader, 0, "node 0 made the swarm and leads it");
    let id = c.node_id(2).expect("the third manager's id");
    let first = c.node_id(0).expect("the first manager's id");
    let token_before = c.nodes[0].shoal(&["swarm", "join-token", "-q", "worker"]).ok().stdout;

    // Away: cut off, daemon gone; meanwhile the other two (a quorum) move on.
    c.nodes[2].partition();
    c.nodes[2].kill();
    c.nodes[0].shoal(&["swarm", "join-token", "--rotate", "worker"]).ok();
    let token_after = c.nodes[0].shoal(&["swarm", "join-token", "-q", "worker"]).ok().stdout;
    assert_ne!(token_before, token_after, "the worker token rotated");
    for k in 0..WRITES_AWAY {
        c.nodes[0].shoal(&["node", "update", "--label-add", &format!("gen={k}"), &first]).ok();
    }
    let last = format!("{}", WRITES_AWAY - 1);

    // Back six months later by every clock it has, then healed.
    let unshare = ["unshare", "--time", "--kill-child", "--monotonic", OFFSET_S, "--boottime", OFFSET_S];
    c.nodes[2].start_wrapped(&unshare, &[("SHOAL_CLOCK_OFFSET_S", OFFSET_S), env[0]], &[]);
    c.nodes[2].heal();
    let healed = Instant::now();
    let line = wait_for("the returning manager to install the leader's snapshot", WAIT, || {
        c.nodes[2].log().lines().find(|l| l.contains("caught up from the leader's snapshot")).map(str::to_string)
    });
    println!("months_offline: {line} ({:?} after the heal)", healed.elapsed());
    wait_for_seen("the returning manager Ready and Reachable with the same id", WAIT, || {
        let rows = nodes_json(&c, 0);
        let row = rows.iter().find(|v| v["ID"].as_str().is_some_and(|s| id.starts_with(s) || s.starts_with(id.as_str())));
        let got = row.map(|v| format!("{} {}", v["Status"].as_str().unwrap_or(""), v["ManagerStatus"].as_str().unwrap_or("")));
        got.as_deref().is_some_and(|g| g == "Ready Reachable").then_some(()).ok_or(format!("{got:?}"))
    });
    assert_eq!(c.nodes[2].node_id().as_deref(), Some(id.as_str()), "the same node id");

    // Its own replica: cut off again, it answers reads itself.
    c.nodes[2].partition();
    let label = wait_for_seen("the returning manager's replica to answer with the last write", WAIT, || {
        let r = c.nodes[2].shoal(&["node", "inspect", &first]);
        let v: Value = serde_json::from_str(r.stdout.trim()).unwrap_or(Value::Null);
        let gen = v[0]["Spec"]["Labels"]["gen"].as_str().map(str::to_string);
        gen.filter(|g| *g == last).ok_or(format!("{} {}", r.stdout.trim(), r.stderr.trim()))
    });
    assert_eq!(label, last);
    let token = c.nodes[2].shoal(&["swarm", "join-token", "-q", "worker"]);
    assert_eq!(token.stdout, token_after, "the rotated token in its replica: {}", token.stderr);
    c.nodes[2].heal();
}
