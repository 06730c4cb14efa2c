//! Platform-aware placement on real nodes: `Placement.Platforms` comes from
//! the image's index (variants included), and a task only runs on a node
//! whose platform the image supports. One machine stands in for other
//! architectures through the documented test-only `SHOAL_TEST_PLATFORM`.
//! The multi-arch image is a real OCI index pushed to a local registry; its
//! entries all hold the host's busybox, so whichever entry a node selects runs.

use shoal_tests::{root, skip_reason, test_image, wait_for, Node, Registry};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn multi_arch_archive() -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("shoal-it-multi-{}.tar", std::process::id()));
    let st =
        Command::new(root().join("tests/lib/mkindex.sh")).arg(&out).args(["linux/amd64", "linux/arm64", "linux/arm/v7"]).status().unwrap();
    assert!(st.success(), "mkindex.sh failed");
    out
}

fn state_of(n: &Node, svc: &str) -> (String, String) {
    let rows = n.ps_json(svc);
    let row = rows.first().expect("a task");
    (row["CurrentState"].as_str().unwrap().to_string(), row["Error"].as_str().unwrap().to_string())
}

#[test]
fn tasks_only_run_where_the_image_has_the_platform() {
    if skip_reason().is_some() {
        return;
    }
    let reg = Registry::start();
    let multi = reg.push(&multi_arch_archive(), "multi:1", true);
    let amd64_only = reg.push(&test_image(), "amd64only:1", false);

    // A node that says it is an arm64 machine.
    let mut n = Node::new();
    n.start_daemon_env(&[("SHOAL_TEST_PLATFORM", "linux/arm64")]);
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    let node: serde_json::Value = serde_json::from_str(&n.shoal(&["node", "inspect", "self"]).ok().stdout).unwrap();
    assert_eq!(node[0]["Description"]["Platform"]["Architecture"], "arm64");
    assert_eq!(node[0]["Description"]["Platform"]["Variant"], "v8");

    // The index's platforms, variants included, fill Placement.Platforms.
    n.shoal(&["service", "create", "--name", "multi", &multi, "busybox", "sleep", "1000"]).ok();
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["service", "inspect", "multi"]).ok().stdout).unwrap();
    let platforms: Vec<String> = js[0]["Spec"]["TaskTemplate"]["Placement"]["Platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}/{}", p["OS"].as_str().unwrap(), p["Architecture"].as_str().unwrap(), p["Variant"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(platforms, vec!["linux/amd64/", "linux/arm64/v8", "linux/arm/v7"]);
    assert!(state_of(&n, "multi").0.starts_with("Running"), "the arm64 entry runs on the arm64 node");

    // An amd64-only image never lands on it, and says why.
    n.shoal(&["service", "create", "-d", "--name", "amd", &amd64_only, "sleep", "1000"]).ok();
    let (state, err) = wait_for("the amd64-only task to be pending", WAIT, || {
        let (s, e) = state_of(&n, "amd");
        (s.starts_with("Pending") && !e.is_empty()).then_some((s, e))
    });
    assert!(state.starts_with("Pending"), "{state}");
    assert_eq!(err, "no suitable node (unsupported platform on 1 node)");
    assert_eq!(n.running(), 1, "only the multi-arch task runs");
    drop(n);

    // Variants are strict: an arm/v6 node does not take the arm/v7 entry.
    let mut v6 = Node::new();
    v6.start_daemon_env(&[("SHOAL_TEST_PLATFORM", "linux/arm/v6")]);
    v6.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    v6.shoal(&["service", "create", "-d", "--name", "multi", &multi, "busybox", "sleep", "1000"]).ok();
    let (_, err) = wait_for("the task to be pending on arm/v6", WAIT, || {
        let (s, e) = state_of(&v6, "multi");
        (s.starts_with("Pending") && !e.is_empty()).then_some((s, e))
    });
    assert_eq!(err, "no suitable node (unsupported platform on 1 node)");
    assert_eq!(v6.running(), 0);
}
