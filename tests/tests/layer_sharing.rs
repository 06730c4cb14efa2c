//! Layers shared inside the swarm (issue #16): five real nodes (network
//! namespaces, private containerds, real daemons); only the manager can
//! reach the registry (the workers' namespaces reject its port). A global
//! service's image reaches every node through the manager's blob cache
//! over the Noise links, and the registry's own log shows each blob
//! served once for the whole swarm.

use shoal_tests::cluster::Cluster;
use shoal_tests::{test_image, wait_for, Registry};
use std::time::Duration;

const NODES: usize = 5;

#[test]
fn five_nodes_pull_through_the_manager_and_the_registry_serves_each_blob_once() {
    let Some(mut c) = Cluster::new(NODES) else { return };
    let host = format!("{}.254", c.subnet);
    let reg = Registry::start_on(&host);
    let image = reg.push(&test_image(), "fleet/agent:1", false);
    let insecure = ["--insecure-registry", &reg.addr()];
    for n in &mut c.nodes {
        n.start_with(&[], &insecure);
    }
    c.form(1, NODES - 1);
    // The workers cannot reach the registry at all.
    let port = reg.port.to_string();
    for n in &c.nodes[1..] {
        n.exec(&["iptables", "-I", "OUTPUT", "-d", &host, "-p", "tcp", "--dport", &port, "-j", "REJECT"]).ok();
        let r = n.exec(&["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")]);
        assert_ne!(r.code, 0, "a worker still reaches the registry");
    }
    let before = reg.blob_gets();
    let r = c.nodes[0].shoal(&["service", "create", "-d", "--name", "agent", "--mode", "global", &image, "sleep", "3600"]).ok();
    assert!(!r.stderr.contains("warning"), "the manager records the digest: {}", r.stderr);
    wait_for("the global service on all five nodes", Duration::from_secs(180), || {
        c.nodes.iter().all(|n| n.running_tasks() == 1).then_some(())
    });
    let after = reg.blob_gets();
    let served: Vec<(String, usize)> =
        after.iter().map(|(d, n)| (d.clone(), n - before.get(d).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    // The image's config and layer(s), each once, for five nodes.
    assert!(served.len() >= 2, "the registry served the image's blobs: {served:?}\n{}", reg.log());
    assert!(served.iter().all(|(_, n)| *n == 1), "each blob served once for the swarm: {served:?}");
    let m = c.nodes[0].log();
    assert!(m.contains("blob cache: fetching"), "the manager fetched for the swarm:\n{m}");
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        assert!(!n.log().contains("from the registry instead of the swarm"), "node {i} went to the registry:\n{}", n.log());
    }
    c.nodes[0].shoal(&["service", "rm", "agent"]).ok();
}
