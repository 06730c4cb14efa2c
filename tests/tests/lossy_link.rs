//! Link profiles (issue #14, flaky links), with real processes in network
//! namespaces: `swarm update --link-profile edge` reaches every node (the
//! worker from its leader), and with it 30 % packet loss in both directions
//! of every link (`iptables -m statistic --mode random --probability 0.3` on
//! every node's INPUT: each packet crosses one) causes no leader change and
//! no Down node while writes still commit.
//!
//! CI runs `SHOAL_LOSSY_S` (default 40) seconds of loss;
//! `targets/lossy-bench.sh` runs 30 minutes and prints the same figures.
//! Not emulated here: added delay (this kernel has no `netem`).

use shoal_tests::cluster::{Cluster, ClusterNode};
use shoal_tests::{wait_for, wait_for_seen};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// Packet loss in each direction, as iptables' `statistic` probability.
const LOSS_PROBABILITY: &str = "0.3";
/// Pause between two writes during the loss.
const WRITE_EVERY: Duration = Duration::from_secs(3);

fn loss_seconds() -> u64 {
    std::env::var("SHOAL_LOSSY_S").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
}

/// Adds (`-I`) or deletes (`-D`) the loss rule of `node`: TCP it receives
/// (every node has one, so each direction of a link loses that much).
fn loss(node: &ClusterNode, op: &str) {
    let args =
        ["iptables", op, "INPUT", "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", LOSS_PROBABILITY, "-j", "DROP"];
    node.exec(&args).ok();
}

/// Occurrences of `needle` in every node's daemon log.
fn count(c: &Cluster, needle: &str) -> usize {
    c.nodes.iter().map(|n| n.log().matches(needle).count()).sum()
}

/// Bytes node `node` sent to and received from swarm ports while counting
/// rules were in place (`iptables -L -v -x`).
fn swarm_port_bytes(node: &ClusterNode) -> u64 {
    let mut total = 0;
    for (chain, dir) in [("INPUT", "--sport"), ("OUTPUT", "--dport")] {
        let out = node.exec(&["iptables", "-L", chain, "-v", "-x", "-n"]).ok().stdout;
        let counted = out
            .lines()
            .filter(|l| l.contains("tcp") && l.contains(if dir == "--sport" { "spt:2377" } else { "dpt:2377" }) && !l.contains("DROP"))
            .filter_map(|l| l.split_whitespace().nth(1).and_then(|b| b.parse::<u64>().ok()))
            .sum::<u64>();
        total += counted;
    }
    total
}

fn percentile(sorted_ms: &[u128], p: usize) -> u128 {
    if sorted_ms.is_empty() {
        return 0;
    }
    sorted_ms[(sorted_ms.len() * p / 100).min(sorted_ms.len() - 1)]
}

#[test]
fn edge_profile_rides_out_thirty_percent_loss() {
    let Some(mut c) = Cluster::new(4) else { return };
    c.form(3, 1);
    let worker = c.node_id(3).expect("worker id");
    // Idle traffic of the worker (its links to the three managers), lan then edge.
    let w = &c.nodes[3];
    w.exec(&["iptables", "-I", "OUTPUT", "-p", "tcp", "--dport", "2377"]).ok();
    w.exec(&["iptables", "-I", "INPUT", "-p", "tcp", "--sport", "2377"]).ok();
    let idle = Duration::from_secs(15);
    let idle_bytes_per_s = || {
        w.exec(&["iptables", "-Z"]).ok();
        std::thread::sleep(idle);
        swarm_port_bytes(w) as f64 / idle.as_secs_f64()
    };
    let lan_idle_bytes_per_s = idle_bytes_per_s();
    c.nodes[0].shoal(&["swarm", "update", "--link-profile", "edge"]).ok();
    for (i, n) in c.nodes.iter().enumerate() {
        wait_for_seen(&format!("node {i} to apply the edge profile"), WAIT, || {
            let info = n.shoal(&["info"]).stdout;
            info.contains(" Link Profile: edge\n").then_some(()).ok_or(info)
        });
        assert!(n.log().contains("link profile is now edge"), "node {i}: {}", n.log_tail(20));
    }

    let edge_idle_bytes_per_s = idle_bytes_per_s();

    let leaders_before = count(&c, "this node is now the swarm leader");
    let downs_before = count(&c, "is down: no link");
    for n in &c.nodes {
        loss(n, "-I");
    }
    let start = Instant::now();
    let mut commit_ms = Vec::new();
    let mut failed = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(loss_seconds()) {
        n += 1;
        let t = Instant::now();
        let label = format!("tick={n}");
        let r = c.nodes[0].shoal(&["node", "update", "--label-add", &label, &worker]);
        if r.code == 0 {
            commit_ms.push(t.elapsed().as_millis());
        } else {
            failed.push(format!("write {n} after {:?}: {}", t.elapsed(), r.stderr.trim()));
        }
        std::thread::sleep(WRITE_EVERY.saturating_sub(t.elapsed()));
    }
    for n in &c.nodes {
        loss(n, "-D");
    }
    let leader_changes = count(&c, "this node is now the swarm leader") - leaders_before;
    let downs = count(&c, "is down: no link") - downs_before;
    commit_ms.sort_unstable();
    println!(
        "lossy_link: {} s of {LOSS_PROBABILITY} loss each way, edge profile: {leader_changes} leader changes, {downs} Down marks, \
         {} writes committed (p50 {} ms, p99 {} ms), {} failed; idle worker's swarm traffic {lan_idle_bytes_per_s:.0} bytes/s on lan, {edge_idle_bytes_per_s:.0} on edge",
        loss_seconds(),
        commit_ms.len(),
        percentile(&commit_ms, 50),
        percentile(&commit_ms, 99),
        failed.len()
    );
    assert!(failed.is_empty(), "writes failed under loss: {failed:#?}");
    assert_eq!(leader_changes, 0, "leader changes under loss: {}", c.nodes[0].log_tail(30));
    assert_eq!(downs, 0, "a node was marked Down under loss: {}", c.nodes[0].log_tail(30));
    // The last write is in the worker's record.
    let inspect = wait_for("the worker's record", WAIT, || {
        let r = c.nodes[0].shoal(&["node", "inspect", &worker]);
        (r.code == 0).then_some(r.stdout)
    });
    assert!(inspect.contains(&format!("\"tick\": \"{n}\"")), "{inspect}");
}
