//! Image pull benchmark (issue #16), run by `targets/pull-bench.sh`: N real
//! nodes (network namespaces, private containerds, real `shoal daemon`s)
//! start a global service whose image none of them has, from a registry on
//! the cluster bridge reached through a counting relay. Prints the wall
//! time until every node runs it and the bytes the registry sent, against
//! the image's size: without layer sharing between nodes (not built yet)
//! every node downloads every layer, so this is the baseline that sharing
//! must bring to about one image's worth. Asserts nothing but that the
//! service runs.

use shoal_tests::cluster::Cluster;
use shoal_tests::{test_image, wait_for, Registry, Relay};
use std::time::{Duration, Instant};

/// Nodes pulling (one manager, the rest workers).
const NODES: usize = 5;

#[test]
#[ignore = "benchmark: run by targets/pull-bench.sh"]
fn pull_bench() {
    let Some(mut c) = Cluster::new(NODES) else { return };
    let reg = Registry::start();
    let image_ref = reg.push(&test_image(), "bench/app:1", false);
    let counter = Relay::start(&format!("{}.254", c.subnet), ("127.0.0.1", reg.port), vec![]);
    let relay = format!("{}.254:{}", c.subnet, counter.port);
    let image = image_ref.replacen(&reg.addr(), &relay, 1);
    let insecure = ["--insecure-registry", &relay];
    for n in &mut c.nodes {
        n.start_with(&[], &insecure);
    }
    c.form(1, NODES - 1);
    let image_bytes = std::fs::metadata(test_image()).map(|m| m.len()).unwrap_or(0);

    let t0 = Instant::now();
    c.nodes[0].shoal(&["service", "create", "-d", "--name", "bench", "--mode", "global", &image, "sleep", "3600"]).ok();
    wait_for("the service on every node", Duration::from_secs(180), || c.nodes.iter().all(|n| n.running_tasks() == 1).then_some(()));
    let wall = t0.elapsed();
    let bytes = counter.served();
    println!(
        "pull: {NODES} nodes, one image ({:.2} MB as an OCI archive): all running in {:.2} s; registry sent {:.2} MB = {:.1}x the image (no layer sharing)",
        image_bytes as f64 / 1e6,
        wall.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / image_bytes.max(1) as f64
    );
    c.nodes[0].shoal(&["service", "rm", "bench"]).ok();
}
