//! Worker sessions follow the leader (issue #11, found by fault injection):
//! when the leader is cut off from the other managers but not from a
//! worker, it steps down, and the worker must end up with a session at the
//! new leader: Ready there, given new assignments during the partition and
//! after it heals. Before the dispatcher redirected its sessions on losing
//! leadership, the worker kept its link to the old leader, never opened a
//! new session, and was Down for good.

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for, wait_for_seen};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

/// `(ID, Status, ManagerStatus)` of every node in node `on`'s `node ls`.
fn nodes(c: &Cluster, on: usize) -> Vec<(String, String, String)> {
    let r = c.nodes[on].shoal(&["node", "ls", "--format", "json"]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let f = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (f("ID"), f("Status"), f("ManagerStatus"))
        })
        .collect()
}

#[test]
fn a_worker_follows_the_leader_when_the_old_one_is_cut_off_from_the_managers() {
    let Some(mut c) = Cluster::new(4) else { return };
    c.init(3, 1);
    wait_for("3 voters", WAIT, || (nodes(&c, 0).iter().filter(|(_, _, m)| m == "Leader" || m == "Reachable").count() == 3).then_some(()));
    let old = c.wait_for_leader(WAIT);
    let worker_id = c.node_id(3).expect("worker id");
    let create = ["service", "create", "-d", "--name", "edge", "--constraint", "node.role==worker", "--restart-delay", "0s"];
    c.nodes[old].shoal(&[&create[..], &["shoal.test/busybox:latest", "sleep", "3600"]].concat()).ok();
    wait_for("edge running on the worker", WAIT, || (c.nodes[3].running_tasks() == 1).then_some(()));

    // The leader loses the other managers but keeps the worker.
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    for &m in &others {
        c.block(old, m);
    }
    let new = wait_for_seen("a new leader among the other managers", WAIT, || {
        for &m in &others {
            let leader = nodes(&c, m).into_iter().find(|(_, _, s)| s == "Leader").map(|(id, _, _)| id);
            if leader.is_some() && leader != c.node_id(old) {
                return Ok(m);
            }
        }
        Err(format!("{:?}", nodes(&c, others[0])))
    });
    // During the partition the new leader hands the worker new work.
    wait_for_seen("a write on the new leader", WAIT, || {
        let r = c.nodes[new].shoal(&["service", "scale", "-d", "edge=2"]);
        (r.code == 0).then_some(()).ok_or(r.stderr)
    });
    wait_for_seen("the worker Ready at the new leader, running 2 tasks", WAIT, || {
        let ls = nodes(&c, new);
        let ready = ls.iter().any(|(id, st, _)| *id == worker_id && st == "Ready");
        let running = c.nodes[3].running_tasks();
        (ready && running == 2).then_some(()).ok_or(format!("running {running}, node ls {ls:?}"))
    });

    // After healing, still: one leader, the worker Ready and served.
    for &m in &others {
        c.unblock(old, m);
    }
    let leader = c.wait_for_leader(WAIT);
    c.nodes[leader].shoal(&["service", "scale", "-d", "edge=3"]).ok();
    wait_for_seen("the worker Ready after healing, running 3 tasks", WAIT, || {
        let leader = c.leader().unwrap_or(leader);
        let ls = nodes(&c, leader);
        let ready = ls.iter().any(|(id, st, _)| *id == worker_id && st == "Ready");
        let running = c.nodes[3].running_tasks();
        (ready && running == 3).then_some(()).ok_or(format!("running {running}, node ls {ls:?}"))
    });
}
