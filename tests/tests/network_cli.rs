//! Networks' control plane end to end on one node: `network create/ls/
//! inspect/rm` with Docker's shapes and swarmkit's errors, `service create
//! --network/--publish` refused for unknown networks and allocated
//! otherwise (VIPs, task addresses, auto ports), and the warnings that say
//! the data path is not there yet.

use shoal_tests::{skip_reason, wait_for, Node};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn inspect(n: &Node, args: &[&str]) -> serde_json::Value {
    let out = n.shoal(args).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0].clone()
}

#[test]
fn networks_outside_a_swarm_are_host_and_none() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.start_daemon();
    let ls = n.shoal(&["network", "ls"]).ok().stdout;
    let names: Vec<&str> = ls.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(names, ["host", "none"], "{ls}");
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    let r = n.shoal(&["network", "create", "x"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[test]
fn network_lifecycle_and_service_attachments() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();

    // ingress exists from `swarm init`, as Docker's.
    let ing = inspect(&n, &["network", "inspect", "ingress"]);
    assert_eq!(ing["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24", "{ing}");
    assert_eq!(ing["IPAM"]["Config"][0]["Gateway"], "10.0.0.1", "{ing}");
    assert_eq!(ing["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4096", "{ing}");
    assert_eq!((ing["Ingress"].as_bool(), ing["Scope"].as_str()), (Some(true), Some("swarm")), "{ing}");

    // The seed's network.
    let r = n
        .shoal(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--subnet=10.15.0.0/16",
            "--gateway=10.15.0.2",
            "--opt",
            "encrypted",
            "--attachable",
            "my-swarm-net",
        ])
        .ok();
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 25, "{}", r.stdout);
    let ls = n.shoal(&["network", "ls"]).ok().stdout;
    let rows: Vec<Vec<&str>> = ls.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(names, ["host", "ingress", "my-swarm-net", "none"], "sorted by name: {ls}");
    let mine = rows.iter().find(|r| r[1] == "my-swarm-net").unwrap();
    assert_eq!((mine[0], mine[2], mine[3]), (&id[..12], "overlay", "swarm"), "{ls}");
    assert_eq!(n.shoal(&["network", "ls", "-q", "--no-trunc", "-f", "name=my-swarm"]).ok().stdout.trim(), id);
    assert_eq!(n.shoal(&["network", "ls", "-q", "-f", "driver=null"]).ok().stdout.trim(), "none");
    let net = inspect(&n, &["network", "inspect", "my-swarm-net"]);
    assert_eq!(net["Id"], id.as_str());
    assert_eq!(net["IPAM"]["Config"][0]["Gateway"], "10.15.0.2", "{net}");
    assert_eq!(net["Options"]["encrypted"], "", "{net}");
    assert_eq!(net["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4097", "{net}");
    assert_eq!(net["Attachable"], true, "{net}");
    // Encrypted for real (issue #15): said with the MTU that keeps sealed packets whole on a 1500-byte underlay.
    assert!(net.get("ShoalWarnings").is_none(), "{net}");
    assert_eq!(net["ShoalDataPath"]["MTU"], 1393, "{net}");
    assert!(net["ShoalDataPath"]["Encryption"].as_str().unwrap().starts_with("ChaCha20-Poly1305 between nodes"), "{net}");
    let ing = inspect(&n, &["network", "inspect", "ingress"]);
    assert_eq!((ing["ShoalDataPath"]["MTU"].as_u64(), ing["ShoalDataPath"]["Encryption"].as_str()), (Some(1450), Some("none")), "{ing}");

    // swarmkit's and Docker's refusals.
    let refused = |args: &[&str], want: &str| {
        let r = n.shoal(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    };
    refused(&["network", "create", "my-swarm-net"], "Error: network with name my-swarm-net already exists");
    refused(&["network", "create", "--subnet", "10.15.1.0/24", "other"], "Pool overlaps with other one on this address space");
    refused(&["network", "create", "--subnet", "10.16.0.0/24", "--gateway", "10.17.0.1", "other"], "does not contain gateway 10.17.0.1");
    refused(&["network", "create", "-d", "bridge", "other"], "is not supported for swarm networks");
    refused(&["network", "rm", "host"], "Error: host is a pre-defined network and cannot be removed");
    refused(
        &["service", "create", "-d", "--name", "ghost", "--network", "no-such-net", "shoal.test/busybox", "sleep", "1000"],
        "Error: No such network: no-such-net",
    );
    assert!(n.shoal(&["service", "ls", "-q"]).ok().stdout.trim().is_empty(), "nothing was created");

    // A service on the network with an automatic published port.
    let r = n
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "name=my-swarm-net,alias=www",
            "-p",
            "80",
            "shoal.test/busybox",
            "sleep",
            "1000",
        ])
        .ok();
    // The data path and its encryption are in effect: nothing is said to be missing.
    assert!(!r.stderr.contains("not in effect"), "{}", r.stderr);
    assert!(!r.stderr.contains("not encrypted"), "{}", r.stderr);
    let s = wait_for("VIPs and the published port", WAIT, || {
        let s = inspect(&n, &["service", "inspect", "web"]);
        (s["Endpoint"]["VirtualIPs"].as_array().map(Vec::len) == Some(2)).then_some(s)
    });
    assert_eq!(s["Spec"]["TaskTemplate"]["Networks"], serde_json::json!([{"Target": id, "Aliases": ["www"]}]), "{s}");
    let published = s["Endpoint"]["Ports"][0]["PublishedPort"].as_u64().unwrap();
    assert!((30_000..=32_767).contains(&published), "{s}");
    assert_eq!(s["Endpoint"]["Spec"]["Ports"][0]["PublishedPort"], 0, "{s}");
    let vips = s["Endpoint"]["VirtualIPs"].to_string();
    assert!(vips.contains(&format!("\"NetworkID\":\"{id}\"")) && vips.contains("\"Addr\":\"10.15.0.1/16\""), "{s}");
    assert!(vips.contains("\"Addr\":\"10.0.0.2/24\""), "the ingress VIP: {s}");
    assert!(s["ShoalNotes"].is_null(), "{s}");
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.contains(&format!("*:{published}->80/tcp")), "{ls}");

    // Tasks got addresses; inspect -v shows them; the node is a peer.
    let net = wait_for("two task addresses", WAIT, || {
        let v = inspect(&n, &["network", "inspect", "-v", "my-swarm-net"]);
        (v["Services"]["web"]["Tasks"].as_array().map(Vec::len) == Some(2) && v["Peers"].as_array().map(Vec::len) == Some(1)).then_some(v)
    });
    assert_eq!(net["Services"]["web"]["VIP"], "10.15.0.1", "{net}");

    // Published ports are unique swarm-wide.
    let r = n.shoal(&["service", "create", "-d", "--name", "api", "-p", &format!("{published}:81"), "shoal.test/busybox", "sleep", "1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&format!("port '{published}' is already in use by service 'web'")), "{}", r.stderr);

    // In use: refused; free once the service is gone.
    refused(&["network", "rm", "my-swarm-net"], &format!("network {id} is in use by service"));
    n.shoal(&["service", "rm", "web"]).ok();
    wait_for("network removable", WAIT, || (n.shoal(&["network", "rm", "my-swarm-net"]).code == 0).then_some(()));
    let ls = n.shoal(&["network", "ls"]).ok().stdout;
    assert!(!ls.contains("my-swarm-net"), "{ls}");
    // Leaving the swarm takes what the node built (this daemon runs in the
    // host's own namespace here: nothing may be left behind).
    n.shoal(&["swarm", "leave", "--force"]).ok();
    wait_for("the node's overlay devices and rules to go", WAIT, || {
        let links = std::process::Command::new("ip").args(["-o", "link", "show"]).output().ok()?;
        let links = String::from_utf8_lossy(&links.stdout).to_string();
        let tables = std::process::Command::new("nft").args(["list", "tables"]).output().ok()?;
        let tables = String::from_utf8_lossy(&tables.stdout).to_string();
        let short: String = id.chars().take(12).collect();
        let ours = links.lines().any(|l| l.contains(&format!(": sb-{short}")) || l.contains(&format!(": sx-{short}")));
        (!ours && !tables.contains("table ip shoal")).then_some(())
    });
}
