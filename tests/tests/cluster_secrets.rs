//! Secrets across a swarm (issue #17): two managers and a worker in their
//! own network namespaces, on the edge link profile (32 KiB raft appends).
//! A 400 KiB secret is replicated in parts to both managers and reaches
//! the worker whose task uses it, over the Noise links; it is on that
//! worker's tmpfs only (not any data dir, not any log, not the other
//! manager's tmpfs) while the task runs, and gone with the task.

use shoal_tests::cluster::Cluster;
use shoal_tests::{found_in_files, task_files_root, wait_for};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(90);
/// A marker inside the secret (searched for in files and logs).
const VALUE: &str = "fl33t-br0ker-pw";
/// The secret's size: many raft entries' worth.
const SECRET_BYTES: usize = 400 * 1024;

#[test]
fn a_secret_reaches_only_the_worker_whose_task_uses_it() {
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(2, 1);
    let m = &c.nodes[0];
    m.shoal(&["swarm", "update", "--link-profile", "edge"]).ok();
    let secret: String = VALUE.chars().cycle().take(SECRET_BYTES).collect();
    m.shoal_stdin(&["secret", "create", "broker_pw", "-"], &secret).ok();
    // The other manager has it whole in its replica.
    let js: serde_json::Value =
        serde_json::from_str(&c.nodes[1].shoal(&["secret", "inspect", "broker_pw"]).ok().stdout).expect("inspect json");
    assert_eq!(js[0]["Spec"]["Name"], "broker_pw");
    let on = format!("node.id=={}", c.node_id(2).expect("node 2's id"));
    m.shoal(&[
        "service",
        "create",
        "--name",
        "agent",
        "--constraint",
        &on,
        "--secret",
        "broker_pw",
        "shoal.test/busybox",
        "sh",
        "-c",
        "echo len=$(wc -c < /run/secrets/broker_pw); exec sleep 1000",
    ])
    .ok();
    let logs = wait_for("the task's output", CONVERGE, || {
        let out = m.shoal(&["service", "logs", "agent"]).ok().stdout;
        out.contains("len=").then_some(out)
    });
    assert!(logs.contains(&format!("len={SECRET_BYTES}")), "the task read the whole secret: {logs}");
    assert_eq!(c.nodes[2].running_tasks(), 1);

    // Where the value is, and is not.
    let worker = task_files_root(&c.nodes[2].data_dir());
    assert!(found_in_files(&worker, VALUE.as_bytes()).is_some(), "on the worker's tmpfs");
    for i in 0..3 {
        let n = &c.nodes[i];
        assert_eq!(found_in_files(&n.data_dir(), VALUE.as_bytes()), None, "node {i}'s data dir (raft records are sealed)");
        assert!(!n.log().contains(VALUE), "node {i}'s log");
    }
    for i in 0..2 {
        assert_eq!(found_in_files(&task_files_root(&c.nodes[i].data_dir()), VALUE.as_bytes()), None, "manager {i} runs no task with it");
    }
    assert!(!m.shoal(&["service", "inspect", "agent"]).ok().stdout.contains(VALUE));

    // A worker daemon restart: the task keeps running with its file, and a new one is written for a restart.
    c.nodes[2].kill();
    c.nodes[2].start();
    wait_for("the worker back with its task", CONVERGE, || (c.nodes[2].running_tasks() == 1).then_some(()));

    // Gone with the task.
    c.nodes[0].shoal(&["service", "rm", "agent"]).ok();
    wait_for("the secret's file gone from the worker", CONVERGE, || found_in_files(&worker, VALUE.as_bytes()).is_none().then_some(()));
    c.nodes[0].shoal(&["secret", "rm", "broker_pw"]).ok();
}
