//! Image pull benchmark (issue #16), run by `targets/pull-bench.sh`: N real
//! nodes (network namespaces, private containerds, real `shoal daemon`s)
//! start a global service whose image none of them has, from a registry on
//! the cluster bridge reached through a counting relay, once with layer
//! sharing (the default: the manager's blob cache serves the swarm) and
//! once with `--layer-sharing=false` (every node downloads every layer).
//! Prints the wall time until every node runs it and the bytes the
//! registry sent, against the image's size. Asserts nothing but that the
//! service runs.

use shoal_tests::cluster::Cluster;
use shoal_tests::{test_image, wait_for, Registry, Relay};
use std::time::{Duration, Instant};

/// Nodes pulling (one manager, the rest workers); `SHOAL_BENCH_NODES` overrides.
fn nodes() -> usize {
    std::env::var("SHOAL_BENCH_NODES").ok().and_then(|n| n.parse().ok()).filter(|n| *n >= 2).unwrap_or(5)
}
/// The slow round's uplink to the registry (all nodes together).
const UPLINK_BYTES_PER_S: u64 = 1_000_000;

/// One round: (wall time until every node runs the service, bytes the registry sent).
fn round(sharing: bool, uplink_bytes_per_s: Option<u64>) -> Option<(Duration, u64)> {
    let nodes = nodes();
    let mut c = Cluster::new(nodes)?;
    let reg = Registry::start();
    let image_ref = reg.push(&test_image(), "bench/app:1", false);
    let counter = Relay::start_limited(&format!("{}.254", c.subnet), ("127.0.0.1", reg.port), vec![], uplink_bytes_per_s);
    let relay = format!("{}.254:{}", c.subnet, counter.port);
    let image = image_ref.replacen(&reg.addr(), &relay, 1);
    let insecure = ["--insecure-registry", &relay];
    for n in &mut c.nodes {
        n.start_with(&[], &insecure);
    }
    c.form(1, nodes - 1);
    if !sharing {
        c.nodes[0].shoal(&["swarm", "update", "--layer-sharing=false"]).ok();
    }
    let t0 = Instant::now();
    c.nodes[0].shoal(&["service", "create", "-d", "--name", "bench", "--mode", "global", &image, "sleep", "3600"]).ok();
    wait_for("the service on every node", Duration::from_secs(180), || c.nodes.iter().all(|n| n.running_tasks() == 1).then_some(()));
    let wall = t0.elapsed();
    let bytes = counter.served();
    c.nodes[0].shoal(&["service", "rm", "bench"]).ok();
    Some((wall, bytes))
}

#[test]
#[ignore = "benchmark: run by targets/pull-bench.sh"]
fn pull_bench() {
    let image_bytes = std::fs::metadata(test_image()).map(|m| m.len()).unwrap_or(0);
    for uplink in [None, Some(UPLINK_BYTES_PER_S)] {
        for sharing in [true, false] {
            let Some((wall, bytes)) = round(sharing, uplink) else { return };
            let link = match uplink {
                Some(r) => format!("a {:.1} MB/s uplink", r as f64 / 1e6),
                None => "the bridge".to_string(),
            };
            println!(
            "pull: {} nodes, one image ({:.2} MB as an OCI archive) over {link}, layer sharing {}: all running in {:.2} s; registry sent {:.2} MB = {:.1}x the image",
            nodes(),
            image_bytes as f64 / 1e6,
            if sharing { "on " } else { "off" },
            wall.as_secs_f64(),
            bytes as f64 / 1e6,
            bytes as f64 / image_bytes.max(1) as f64
        );
        }
    }
}
