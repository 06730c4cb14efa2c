//! Power cuts and slow stops (issue #10), with real containerd.
//!
//! A power cut (`Node::power_cycle`) kills the daemon, containerd, its shims
//! and every container process, and removes what lives on tmpfs on a device
//! (containerd's state dir, runc's state, cgroups) while containerd's root
//! survives: after the boot containerd still lists every container, with no
//! task. Shoal must see those tasks as stopped, not Running, and let the
//! restart policy decide; while a containerd restart that keeps the shims
//! (and so the processes) must change nothing. Checks are made against
//! containerd itself (`ctr`).
//!
//! A stop's grace period must not hold up anything else: while 20 tasks
//! that ignore SIGTERM are in their 10 s grace, a crashed task of another
//! service is restarted at once.

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{skip_reason, wait_for, wait_for_seen, Node};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(40);
const GONE: &str = "task: container process is gone";

fn ids(rows: &[Value], pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    rows.iter().filter(|t| pred(t)).map(|t| t["ID"].as_str().unwrap_or_default().to_string()).collect()
}

fn is_running(t: &Value) -> bool {
    t["DesiredState"] == "Running" && t["CurrentState"].as_str().unwrap_or("").starts_with("Running")
}

fn failed_gone(t: &Value) -> bool {
    t["CurrentState"].as_str().unwrap_or("").starts_with("Failed") && t["Error"] == GONE
}

#[test]
fn a_power_cycle_fails_the_dead_tasks_and_the_restart_policy_decides() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    // Default restart policy (any, 5 s delay), and one that never restarts.
    n.shoal(&["service", "create", "-d", "--name", "web", "--replicas", "3", "shoal.test/busybox", "sleep", "1000"]).ok();
    let once = ["service", "create", "-d", "--name", "once", "--replicas", "2", "--restart-condition", "none"];
    n.shoal(&[&once[..], &["shoal.test/busybox", "sleep", "1000"]].concat()).ok();
    // Running in containerd and reported so (the report follows the start by a moment).
    let (web_before, once_before) = wait_for("5 running tasks, reported", WAIT, || {
        let web = ids(&n.ps_json("web"), is_running);
        let once = ids(&n.ps_json("once"), is_running);
        (n.running() == 5 && (web.len(), once.len()) == (3, 2)).then_some((web, once))
    });

    n.power_cycle();
    assert!(n.tasks().is_empty(), "no task survives the power cut: {:?}", n.tasks());
    assert_eq!(n.containers().len(), 5, "containerd's root keeps the containers");
    n.start_daemon();

    // The dead tasks are Failed with the reason, never Running again.
    let web = wait_for_seen("web's old tasks to fail and 3 new ones to run", WAIT, || {
        let rows = n.ps_json("web");
        let failed = ids(&rows, failed_gone);
        let running = ids(&rows, is_running);
        let in_ctrd: BTreeSet<String> = n.tasks().into_iter().filter(|t| t.2 == "RUNNING").map(|t| t.0).collect();
        if failed == web_before && running.len() == 3 && running.is_subset(&in_ctrd) {
            return Ok(running);
        }
        Err(format!("failed {failed:?}, running {running:?}, in containerd {in_ctrd:?}"))
    });
    assert!(web.is_disjoint(&web_before), "replaced by new tasks, as Swarm's restart supervisor does");
    let ps = n.shoal(&["service", "ps", "--no-trunc", "web"]).ok().stdout;
    assert!(ps.contains(GONE), "the reason shows in service ps:\n{ps}");
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" web ") && l.contains("3/3")), "{ls}");

    // --restart-condition none: they stay down and say why.
    wait_for_seen("once's tasks to fail", WAIT, || {
        let rows = n.ps_json("once");
        let failed = ids(&rows, failed_gone);
        (failed == once_before).then_some(()).ok_or(format!("{rows:?}"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let rows = n.ps_json("once");
    assert_eq!(rows.len(), 2, "no replacement under --restart-condition none: {rows:?}");
    assert!(ids(&rows, is_running).is_empty());
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" once ") && l.contains("0/2")), "{ls}");
    // The dead containers were removed; only web's three new ones are left.
    wait_for("the dead containers removed", WAIT, || (n.containers().into_iter().collect::<BTreeSet<_>>() == web).then_some(()));
}

#[test]
fn a_rebooted_worker_runs_its_tasks_again() {
    let Some(mut c) = Cluster::new(2) else {
        return;
    };
    c.init(1, 1);
    // Long enough that the manager does not mark the worker Down while it
    // reboots: the worker itself must notice its tasks died.
    c.nodes[0].shoal(&["swarm", "update", "--dispatcher-heartbeat", "60s"]).ok();
    let create = ["service", "create", "-d", "--name", "edge", "--replicas", "2", "--constraint", "node.role==worker"];
    c.nodes[0].shoal(&[&create[..], &["--restart-delay", "0s", "shoal.test/busybox:latest", "sleep", "1000"]].concat()).ok();
    let ps = |c: &Cluster| -> Vec<Value> {
        let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", "edge"]).ok();
        r.stdout.lines().map(|l| serde_json::from_str(l).expect("ps json line")).collect()
    };
    let before = wait_for_seen("2 tasks running on the worker", WAIT, || {
        let running = ids(&ps(&c), is_running);
        let on_worker: BTreeSet<String> = c.nodes[1].running_ids().into_iter().collect();
        (running.len() == 2 && running == on_worker).then_some(running.clone()).ok_or(format!("{running:?} vs {on_worker:?}"))
    });

    c.nodes[1].power_cycle();
    assert_eq!(c.nodes[1].running_tasks(), 0);
    c.nodes[1].start();

    wait_for_seen("the worker's old tasks to fail and 2 new ones to run there", WAIT, || {
        let rows = ps(&c);
        let failed = ids(&rows, failed_gone);
        let running = ids(&rows, is_running);
        let on_worker: BTreeSet<String> = c.nodes[1].running_ids().into_iter().collect();
        if failed == before && running.len() == 2 && running == on_worker && running.is_disjoint(&before) {
            return Ok(());
        }
        Err(format!("failed {failed:?}, running {running:?}, on the worker {on_worker:?}"))
    });
}

#[test]
fn a_restart_is_not_held_up_by_twenty_stops_in_their_grace() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    // `sleep` as PID 1 ignores SIGTERM: each stop lasts its whole grace.
    let slow = ["service", "create", "-d", "--name", "slow", "--replicas", "20", "--stop-grace-period", "10s"];
    n.shoal(&[&slow[..], &["shoal.test/busybox", "sleep", "1000"]].concat()).ok();
    let quick = ["service", "create", "-d", "--name", "quick", "--restart-delay", "0s", "shoal.test/busybox", "sleep", "1000"];
    n.shoal(&quick).ok();
    // Running in containerd and reported so (the report follows the start by a moment).
    let (slow_ids, quick_ids) = wait_for("21 running tasks, reported", WAIT, || {
        let slow = ids(&n.ps_json("slow"), is_running);
        let quick = ids(&n.ps_json("quick"), is_running);
        (n.running() == 21 && (slow.len(), quick.len()) == (20, 1)).then_some((slow, quick))
    });
    let quick_id = quick_ids.into_iter().next().expect("quick runs");
    let quick_pid = n.tasks().into_iter().find(|t| t.0 == quick_id).expect("quick's task in containerd").1;

    n.shoal(&["service", "rm", "slow"]).ok();
    // The stop signals are out (every slow task is told to stop) before the crash.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert!(std::process::Command::new("kill").arg("-9").arg(&quick_pid).status().expect("kill").success());
    let replacement = wait_for_seen("quick's replacement to run", WAIT, || {
        let rows = n.ps_json("quick");
        let running = ids(&rows, is_running);
        let new: Vec<String> = running.into_iter().filter(|id| *id != quick_id).collect();
        let in_ctrd = n.tasks();
        match new.first() {
            Some(id) if in_ctrd.iter().any(|t| t.0 == *id && t.2 == "RUNNING") => Ok(in_ctrd),
            _ => Err(format!("{rows:?}")),
        }
    });
    let took = t.elapsed();
    eprintln!("quick restarted {took:?} after its crash, during the slow tasks' 10 s grace");
    // Not held up: when the replacement ran, every slow task was still in its grace.
    let still: BTreeSet<String> = replacement.into_iter().filter(|t| t.2 == "RUNNING" && slow_ids.contains(&t.0)).map(|t| t.0).collect();
    assert_eq!(still, slow_ids, "the restart came while all 20 stops were still in their grace (took {took:?})");
    // And the grace ends in SIGKILL: nothing of slow is left.
    wait_for("slow's containers gone", WAIT, || n.containers().iter().all(|id| !slow_ids.contains(id)).then_some(()));
}

/// The other side of the same rule: a containerd restart (an upgrade, a
/// crash) keeps the shims and so the containers' processes; nothing stopped,
/// so nothing is failed or replaced.
#[test]
fn a_containerd_restart_that_keeps_the_processes_changes_nothing() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_sleepers("web", 2);
    let before: BTreeSet<(String, String, String)> = n.tasks().into_iter().collect();
    let ctrd = n.dir.join("ctrd");
    let pid = std::fs::read_to_string(ctrd.join("containerd.pid")).expect("containerd pid");
    assert!(std::process::Command::new("kill").arg("-9").arg(pid.trim()).status().expect("kill").success());
    let st =
        std::process::Command::new(shoal_tests::root().join("tests/lib/containerd.sh")).arg("start").arg(&ctrd).status().expect("start");
    assert!(st.success(), "containerd restarts");
    // Several listings later (one every 2 s), the same processes run and Shoal says so.
    std::thread::sleep(Duration::from_secs(6));
    let after: BTreeSet<(String, String, String)> = n.tasks().into_iter().collect();
    assert_eq!(after, before, "the same tasks with the same pids");
    let rows = n.ps_json("web");
    assert_eq!(rows.len(), 2, "nothing failed or replaced: {rows:?}");
    assert_eq!(ids(&rows, is_running).len(), 2, "{rows:?}");
}
