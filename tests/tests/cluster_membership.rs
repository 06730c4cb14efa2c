//! Membership changes in quick succession (issue #11: found replaying the
//! seed notes' commands on five nodes). Each test failed before the fix it
//! names:
//! - `node demote <leader>` then at once `node rm --force <leader>` on two
//!   managers left the removed node leading outside the swarm;
//! - `node promote` right after a join never completed (the node stayed
//!   Unreachable);
//! - a demoted manager acted as a manager for 4-5 s (`swarm leave` right
//!   after the demotion failed), and a manager's `swarm join` returned before
//!   it was a raft voter (Unreachable for about 2 s).

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for, wait_for_seen};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `(ID, ManagerStatus)` of every node in node `on`'s `node ls`.
fn statuses(c: &Cluster, on: usize) -> Vec<(String, String)> {
    let r = c.nodes[on].shoal(&["node", "ls", "--format", "json"]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (v["ID"].as_str().unwrap_or_default().to_string(), v["ManagerStatus"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn status_of(c: &Cluster, on: usize, id: &str) -> String {
    statuses(c, on).into_iter().find(|(i, _)| i == id).map(|(_, s)| s).unwrap_or_default()
}

#[test]
fn demoting_then_removing_the_leader_of_two_managers_leaves_one_leader() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(2, 0);
    wait_for("2 voters", WAIT, || (statuses(&c, 0).iter().filter(|(_, s)| s == "Leader" || s == "Reachable").count() == 2).then_some(()));
    let l = c.wait_for_leader(WAIT);
    let s = 1 - l;
    let lid = c.node_id(l).expect("leader id");
    c.nodes[l].shoal(&["node", "demote", &lid]).ok();
    let r = c.nodes[l].shoal(&["node", "rm", "--force", &lid]);
    if r.code != 0 {
        // Refused while still in raft, or while leadership is moving to the survivor (the
        // demoted leader hands it over; a write in that window is refused, never misapplied).
        let in_raft = r.stderr.contains("is a member of the raft cluster. It must be demoted");
        let handover = r.stderr.contains("the swarm does not have a leader");
        assert!(in_raft || handover, "refused for another reason: {}", r.stderr);
    }
    // The survivor leads, and the old leader knows it is no manager.
    wait_for_seen("the survivor to lead", WAIT, || {
        let st = statuses(&c, s);
        st.iter().any(|(id, m)| m == "Leader" && Some(id) == c.node_id(s).as_ref()).then_some(()).ok_or(format!("{st:?}"))
    });
    wait_for_seen("the old leader to say it is no manager", WAIT, || {
        let info = c.nodes[l].shoal(&["info"]).stdout;
        info.contains("Is Manager: false").then_some(()).ok_or(info)
    });
    // Now it can be removed, and only the survivor decides.
    wait_for_seen("node rm of the demoted node", WAIT, || {
        let r = c.nodes[s].shoal(&["node", "rm", "--force", &lid]);
        (r.code == 0).then_some(()).ok_or(r.stderr)
    });
    let st = statuses(&c, s);
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].1, "Leader", "{st:?}");
    c.nodes[s].shoal(&["service", "create", "-d", "--name", "after", "shoal.test/busybox:latest", "sleep", "60"]).ok();
    let r = c.nodes[l].shoal(&["service", "create", "-d", "--name", "sneak", "shoal.test/busybox:latest", "sleep", "60"]);
    assert_ne!(r.code, 0, "the removed node takes no writes: {}", r.stdout);
    assert!(!c.nodes[s].shoal(&["service", "ls"]).ok().stdout.contains("sneak"));
}

#[test]
fn promote_right_after_join_completes() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.form(1, 0);
    c.nodes[1].start();
    // Promote as soon as the join returns (before the worker opened its session).
    let token = c.nodes[0].shoal(&["swarm", "join-token", "-q", "worker"]).ok().stdout.trim().to_string();
    let n1 = &c.nodes[1];
    n1.shoal(&["swarm", "join", "--token", &token, "--advertise-addr", &n1.ip, &c.nodes[0].addr()]).ok();
    let id = c.nodes[1].node_id().expect("id");
    c.nodes[0].shoal(&["node", "promote", &id]).ok();
    wait_for_seen("the promoted node to be a reachable manager", WAIT, || {
        let s = status_of(&c, 0, &id);
        (s == "Reachable").then_some(()).ok_or(s)
    });
    let info = c.nodes[1].shoal(&["info"]).ok().stdout;
    assert!(info.contains("Is Manager: true"), "{info}");
}

#[test]
fn a_joined_manager_votes_at_once_and_a_demoted_one_leaves_at_once() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 0);
    c.nodes[1].start();
    c.join(1, true);
    let id = c.node_id(1).expect("id");
    // `swarm join` returned once the new manager was a voter: reachable now, not in 2 s.
    assert_eq!(status_of(&c, 0, &id), "Reachable", "{:?}", statuses(&c, 0));
    // Demoted, it is a worker for `swarm leave` at once.
    c.nodes[0].shoal(&["node", "demote", &id]).ok();
    let r = c.nodes[1].shoal(&["swarm", "leave"]);
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert_eq!(r.stdout.trim(), "Node left the swarm.");
    let st = statuses(&c, 0);
    assert_eq!(st.iter().filter(|(_, m)| m == "Leader").count(), 1, "{st:?}");
    c.nodes[0].shoal(&["service", "create", "-d", "--name", "still", "shoal.test/busybox:latest", "sleep", "60"]).ok();
}

/// A promoted worker keeps its containers: it plans from the assignments its
/// leader sent until its own replica has caught up (found by review: a
/// partial replica made its running tasks look like strays).
#[test]
fn a_promoted_worker_keeps_its_containers() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    let create = ["service", "create", "-d", "--name", "keep", "--replicas", "2", "--replicas-max-per-node", "1"];
    c.nodes[0].shoal(&[&create[..], &["shoal.test/busybox:latest", "sleep", "3600"]].concat()).ok();
    let before = wait_for_seen("a task running on the worker", WAIT, || {
        let t = c.nodes[1].tasks_pids();
        (t.len() == 1).then_some(t.clone()).ok_or(format!("{t:?}"))
    });
    let id = c.node_id(1).expect("id");
    c.nodes[0].shoal(&["node", "promote", &id]).ok();
    wait_for_seen("the promoted node to be a reachable manager", WAIT, || {
        let s = status_of(&c, 0, &id);
        (s == "Reachable").then_some(()).ok_or(s)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.nodes[1].tasks_pids(), before, "the same container, the same pid");
    let ps = c.nodes[0].shoal(&["service", "ps", "keep"]).ok().stdout;
    assert!(!ps.contains("Failed") && !ps.contains("Shutdown"), "{ps}");
}

/// `swarm leave` then `join` (or `init`) makes a new node with a new id, as
/// Swarm's (issue #18); the swarm keeps the old entry, Down, until `node rm`.
#[test]
fn a_node_that_left_comes_back_with_a_new_id() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    let old = c.nodes[1].node_id().expect("id");
    let r = c.nodes[1].shoal(&["swarm", "leave"]).ok();
    assert_eq!(r.stdout.trim(), "Node left the swarm.");
    let new = c.nodes[1].node_id().expect("id after leave");
    assert_ne!(new, old, "a new id at leave");
    let row = |id: &str| -> Option<(String, String)> {
        let r = c.nodes[0].shoal(&["node", "ls", "--format", "json"]);
        r.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["ID"] == id)
            .map(|v| (v["Status"].as_str().unwrap_or_default().to_string(), v["Availability"].as_str().unwrap_or_default().to_string()))
    };
    wait_for_seen("the old entry down", WAIT, || match row(&old) {
        Some((s, _)) if s == "Down" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    c.join(1, false);
    assert_eq!(c.nodes[1].node_id().as_deref(), Some(new.as_str()), "joined under the id it got at leave");
    wait_for_seen("the new entry ready", WAIT, || match row(&new) {
        Some((s, _)) if s == "Ready" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(row(&old).map(|r| r.0).as_deref(), Some("Down"), "the old entry stays until removed");
    c.nodes[0].shoal(&["node", "rm", &old]).ok();
    assert_eq!(row(&old), None);
    // The new id is the node's for good: a restart keeps it.
    c.nodes[1].kill();
    c.nodes[1].start();
    wait_for_seen("the worker back", WAIT, || c.nodes[1].node_id().filter(|id| *id == new).ok_or("not yet".to_string()));
    // A manager's leave and init: a new single-node swarm of a new node.
    let manager_old = c.nodes[0].node_id().expect("manager id");
    c.nodes[0].shoal(&["swarm", "leave", "--force"]).ok();
    c.nodes[0].shoal(&["swarm", "init", "--advertise-addr", &c.nodes[0].ip.clone()]).ok();
    let manager_new = c.nodes[0].node_id().expect("manager id after init");
    assert_ne!(manager_new, manager_old);
    let ls = c.nodes[0].shoal(&["node", "ls", "-q"]).ok().stdout;
    assert_eq!(ls.trim(), manager_new, "only the new node in the new swarm");
}
