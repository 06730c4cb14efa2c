//! Layers shared inside the swarm (issue #16): five real nodes (network
//! namespaces, private containerds, real daemons); only the manager can
//! reach the registry, through a relay that passes 256 KB/s (a slow
//! uplink); the workers' namespaces reject it. A global service's image
//! reaches every node through the manager's blob cache over the Noise
//! links, and the registry's own access log shows each blob served once
//! for the whole swarm; `service create`'s progress shows the workers'
//! downloads. With `swarm update --layer-sharing=false` (and the registry
//! in reach again, at the bridge's speed) every node pulls a new image
//! itself.

use shoal_tests::cluster::Cluster;
use shoal_tests::{root, test_image, wait_for, Registry, Relay};
use std::collections::BTreeMap;
use std::time::Duration;

const NODES: usize = 5;
const UPLINK_BYTES_PER_S: u64 = 256 * 1024;

/// The registry's blob GETs since `before`, by digest.
fn served_since(reg: &Registry, before: &BTreeMap<String, usize>) -> Vec<(String, usize)> {
    reg.blob_gets()
        .into_iter()
        .map(|(d, n)| {
            let n = n - before.get(&d).copied().unwrap_or(0);
            (d, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn five_nodes_pull_through_the_manager_and_the_registry_serves_each_blob_once() {
    let Some(mut c) = Cluster::new(NODES) else { return };
    let host = format!("{}.254", c.subnet);
    let reg = Registry::start_on(&host);
    let relay = Relay::start_limited(&host, (&host, reg.port), vec![], Some(UPLINK_BYTES_PER_S));
    let via = format!("{host}:{}", relay.port);
    // The second part's way in: as fast as the bridge.
    let fast = Relay::start(&host, (&host, reg.port), vec![]);
    let via_fast = format!("{host}:{}", fast.port);
    let image = reg.push(&test_image(), "fleet/agent:1", false).replacen(&reg.addr(), &via, 1);
    let insecure = ["--insecure-registry", &via, "--insecure-registry", &via_fast];
    for n in &mut c.nodes {
        n.start_with(&[], &insecure);
    }
    c.form(1, NODES - 1);
    // The workers reach neither the relay nor the registry.
    let block = |n: &shoal_tests::cluster::ClusterNode, op: &str| {
        for port in [relay.port, fast.port, reg.port] {
            n.exec(&["iptables", op, "OUTPUT", "-d", &host, "-p", "tcp", "--dport", &port.to_string(), "-j", "REJECT"]).ok();
        }
    };
    for n in &c.nodes[1..] {
        block(n, "-I");
        let r = n.exec(&["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{}", relay.port)]);
        assert_ne!(r.code, 0, "a worker still reaches the registry");
    }
    let before = reg.blob_gets();
    // On a terminal (`script`), the progress shows the workers' tasks waiting for their download.
    let cmd = format!(
        "{} -H unix://{} service create --name agent --mode global {image} sleep 3600",
        shoal_tests::shoal_bin().display(),
        c.nodes[0].socket().display()
    );
    let out = std::process::Command::new("script").args(["-qefc", &cmd, "/dev/null"]).output().expect("run script");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("verify: Service converged"), "{text}");
    assert!(!text.contains("warning"), "the manager records the digest: {text}");
    let workers: Vec<String> = (1..NODES).filter_map(|i| c.node_id(i)).map(|id| id[..12].to_string()).collect();
    assert!(
        text.split(['\n', '\r']).any(|l| workers.iter().any(|w| l.contains(&format!("{w}: preparing Downloading [")))),
        "a worker's download in the progress (reported to the leader):\n{text}"
    );
    wait_for("the global service on all five nodes", Duration::from_secs(180), || {
        c.nodes.iter().all(|n| n.running_tasks() == 1).then_some(())
    });
    let served = served_since(&reg, &before);
    // The image's config and layer, each once, for five nodes.
    assert!(served.len() >= 2, "the registry served the image's blobs: {served:?}\n{}", reg.log());
    assert!(served.iter().all(|(_, n)| *n == 1), "each blob served once for the swarm: {served:?}");
    let m = c.nodes[0].log();
    assert!(m.contains("blob cache: fetching"), "the manager fetched for the swarm:\n{m}");
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        assert!(!n.log().contains("from the registry instead of the swarm"), "node {i} went to the registry:\n{}", n.log());
    }
    assert!(c.nodes[0].shoal(&["info"]).ok().stdout.contains(" Layer Sharing: true\n"));

    // Off for the swarm, the registry in reach again: every node pulls a new image itself.
    c.nodes[0].shoal(&["swarm", "update", "--layer-sharing=false"]).ok();
    assert!(c.nodes[0].shoal(&["info"]).ok().stdout.contains(" Layer Sharing: false\n"));
    for n in &c.nodes[1..] {
        block(n, "-D");
    }
    // Another image: the same files, its layer stored uncompressed (another digest).
    let other = c.dir().join("other.tar");
    let st = std::process::Command::new(root().join("tests/lib/mkimage.sh"))
        .arg(&other)
        .arg("shoal.test/other:latest")
        .env("MKIMAGE_GZIP", "0")
        .status()
        .expect("run mkimage.sh");
    assert!(st.success());
    let other_ref = reg.push(&other, "fleet/other:1", false).replacen(&reg.addr(), &via_fast, 1);
    let before = reg.blob_gets();
    c.nodes[0].shoal(&["service", "create", "-d", "--name", "other", "--mode", "global", &other_ref, "sleep", "3600"]).ok();
    wait_for("the second service on all five nodes", Duration::from_secs(180), || {
        c.nodes.iter().all(|n| n.running_tasks() == 2).then_some(())
    });
    let served = served_since(&reg, &before);
    assert!(served.iter().any(|(_, n)| *n == NODES), "with sharing off, each node fetched the new layer: {served:?}");
    let refusals = c.nodes[1..].iter().filter(|n| n.log().contains("layer sharing is off in this swarm")).count();
    assert_eq!(refusals, NODES - 1, "every worker was told why it goes to the registry");
    for name in ["agent", "other"] {
        c.nodes[0].shoal(&["service", "rm", name]).ok();
    }
}
