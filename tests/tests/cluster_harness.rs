//! Checks the multi-node harness itself (`shoal_tests::cluster`): daemons
//! really run in their own network namespaces, partitions and partial
//! blocks drop traffic silently and heal, daemons can be killed, and every
//! namespace, veth and bridge is gone after the cluster is dropped, also
//! when the test panicked midway.

use shoal_tests::cluster::{Cluster, TcpProbe, SWARM_PORT};
use std::process::Command;
use std::time::Duration;

/// Bound on a TCP connect expected to be silently dropped.
const PROBE_TIMEOUT_S: u64 = 2;
/// How long a partition, heal or block may take to show in probes.
const NET_CHANGE_TIMEOUT_S: u64 = 10;

/// What of a cluster must vanish on drop: its namespaces, bridge and veths.
struct Traces {
    prefix: String,
    bridge: String,
    veth_prefix: String,
}

impl Traces {
    fn of(c: &Cluster) -> Traces {
        let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr");
        let bridge_ip = format!(" {}.254/", c.subnet);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains(&bridge_ip)).unwrap_or_else(|| panic!("no interface holds {}.254:\n{text}", c.subnet));
        let bridge = line.split_whitespace().nth(1).expect("ifname").to_string();
        assert!(bridge.starts_with("shbr") && bridge.len() <= 15, "bridge {bridge:?}");
        let veth_prefix = format!("shv{}-", &bridge["shbr".len()..]);
        Traces { prefix: c.prefix.clone(), bridge, veth_prefix }
    }

    /// Namespaces and links of this cluster that exist now.
    fn present(&self) -> Vec<String> {
        let ns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
        let links = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link show");
        let mut found: Vec<String> = String::from_utf8_lossy(&ns.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .map(str::to_string)
            .collect();
        found.extend(
            String::from_utf8_lossy(&links.stdout)
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n))
                .filter(|n| *n == self.bridge || n.starts_with(&self.veth_prefix))
                .map(str::to_string),
        );
        found
    }
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}")).ino()
}

#[test]
fn cluster_harness() {
    let Some(mut c) = Cluster::new(3) else { return };
    let traces = Traces::of(&c);
    assert_eq!(traces.present().len(), 3 + 1 + 3, "3 namespaces, a bridge and 3 veths: {:?}", traces.present());

    c.start_all();
    for (i, node) in c.nodes.iter().enumerate() {
        let v = node.shoal(&["version"]).ok();
        assert!(!v.stdout.trim().is_empty(), "node {i}: empty `shoal version`");
        assert_eq!(node.addr(), format!("{}:{SWARM_PORT}", node.ip));
        // The spawned pid is the daemon itself (ip execs it), in the node's namespace.
        let pid = node.pid().expect("started");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("daemon exe");
        assert!(exe.ends_with("shoal"), "node {i}: pid {pid} is {}, not the daemon", exe.display());
        assert_eq!(
            inode(&format!("/proc/{pid}/ns/net")),
            inode(&format!("/run/netns/{}", node.netns)),
            "node {i}: daemon not in its netns"
        );
        assert_ne!(inode(&format!("/proc/{pid}/ns/net")), inode("/proc/self/ns/net"), "node {i}: daemon in the root netns");
    }

    // Connectivity: node 0 reaches node 1 (ICMP, and TCP gets an answer, not silence).
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    assert!(n0.ping(&n1.ip), "node 0 cannot ping node 1 before any partition");
    assert_ne!(n0.tcp_probe(&n1.ip, SWARM_PORT, PROBE_TIMEOUT_S), TcpProbe::TimedOut, "TCP 0 -> 1 silent before any partition");

    // Full partition of node 1: silent drops both ways; 0 <-> 2 unaffected.
    n1.partition();
    n1.partition(); // idempotent
    assert!(!n0.ping(&n1.ip), "node 0 still pings partitioned node 1");
    assert!(!n2.ping(&n1.ip), "node 2 still pings partitioned node 1");
    assert!(!n1.ping(&n0.ip), "partitioned node 1 still pings node 0");
    assert_eq!(n0.tcp_probe(&n1.ip, SWARM_PORT, PROBE_TIMEOUT_S), TcpProbe::TimedOut, "TCP to a partitioned node must time out, not reset");
    assert!(n0.ping(&n2.ip), "node 0 cannot ping node 2 while only node 1 is partitioned");
    // The daemon's unix socket still answers: a partition is about the network only.
    n1.shoal(&["version"]).ok();

    n1.heal();
    n1.heal(); // idempotent
    shoal_tests::wait_for("node 0 to ping node 1 after heal", Duration::from_secs(NET_CHANGE_TIMEOUT_S), || n0.ping(&n1.ip).then_some(()));
    assert!(n1.ping(&n2.ip), "healed node 1 cannot ping node 2");

    // Partial partition: only 0 <-> 2 is cut.
    c.block(0, 2);
    assert!(!n0.ping(&n2.ip), "node 0 still pings node 2 while blocked");
    assert!(!n2.ping(&n0.ip), "node 2 still pings node 0 while blocked");
    assert!(n0.ping(&n1.ip) && n1.ping(&n2.ip), "block 0-2 cut other links");
    c.unblock(0, 2);
    c.unblock(0, 2); // idempotent
    shoal_tests::wait_for("node 0 to ping node 2 after unblock", Duration::from_secs(NET_CHANGE_TIMEOUT_S), || {
        n0.ping(&n2.ip).then_some(())
    });

    // `swarm init` with the node's own address works inside its namespace.
    n0.shoal(&["swarm", "init", "--advertise-addr", &n0.ip]).ok();
    assert_eq!(c.leader(), Some(0), "node 0 leads its single-node swarm");
    assert!(c.node_id(0).is_some(), "node 0 knows its node ID");

    // SIGKILL node 2's daemon: the process is gone and its socket is dead.
    let pid = c.nodes[2].pid().expect("started");
    c.nodes[2].kill();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} still exists after kill");
    assert_ne!(c.nodes[2].shoal(&["version"]).code, 0, "killed daemon still answers");

    // SIGTERM node 1's daemon: it exits within the bound.
    assert!(c.nodes[1].terminate().is_some(), "node 1's daemon died by a signal after SIGTERM");

    drop(c);
    assert!(traces.present().is_empty(), "left behind after drop: {:?}", traces.present());
}

#[test]
fn cluster_cleans_up_after_a_panic() {
    let mut traces = None;
    let mut dir = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(mut c) = Cluster::new(2) else { return };
        traces = Some(Traces::of(&c));
        dir = Some(c.dir().to_path_buf());
        c.nodes[0].start();
        c.nodes[1].partition();
        panic!("deliberate panic with a running daemon and a partitioned node");
    }));
    let Some(traces) = traces else { return }; // skipped
    assert!(outcome.is_err(), "the closure should have panicked");
    assert!(traces.present().is_empty(), "left behind after a panic: {:?}", traces.present());
    // A panicking drop keeps the scratch dir for inspection; this panic was deliberate.
    let _ = std::fs::remove_dir_all(dir.expect("set with traces"));
}
