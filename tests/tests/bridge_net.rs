//! The node-local bridge network on a real node (issue #12): a service on no
//! network and publishing no ingress port gets, per task, a namespace of its
//! own with `eth0` on the node's `shoal0` bridge (Docker's default bridge
//! for swarm tasks). Two replicas of one port side by side, each answering
//! on its own address; a `mode=host` published port translated to its task;
//! tasks reaching the node and, masqueraded, the outside; `--network none`
//! with loopback only; a kill -9 and restart of the daemon that keeps the
//! tasks, their addresses and a connection; removal and `swarm leave`
//! cleaning up. The node is a real `shoal daemon` in its own network
//! namespace with its own containerd (see `shoal_tests::cluster`). Every wait
//! is bounded.

use shoal_tests::cluster::{Cluster, ClusterNode, TcpProbe};
use shoal_tests::wait_for_seen;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The test image every node loads (`Cluster::init`).
const IMAGE: &str = "shoal.test/busybox:latest";
/// Bound on tasks starting or a rule showing up.
const CONVERGE: Duration = Duration::from_secs(60);

/// The ids of `service`'s running tasks once there are `n` of them.
fn wait_running(n: &ClusterNode, service: &str, want: usize) -> BTreeSet<String> {
    wait_for_seen(&format!("{want} running tasks of {service}"), CONVERGE, || {
        let r = n.shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
        let rows: Vec<serde_json::Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let running: BTreeSet<String> = rows
            .iter()
            .filter(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")))
            .map(|t| t["ID"].as_str().unwrap_or_default().to_string())
            .collect();
        if running.len() == want {
            Ok(running)
        } else {
            Err(format!("{} running; ps: {}", running.len(), r.stdout.lines().take(6).collect::<Vec<_>>().join(" | ")))
        }
    })
}

/// The main process of each running task, by task id.
fn pids(n: &ClusterNode, ids: &BTreeSet<String>) -> BTreeMap<String, String> {
    wait_for_seen("the tasks' processes", CONVERGE, || {
        let p: BTreeMap<String, String> = n.tasks_pids().into_iter().filter(|(id, _)| ids.contains(id)).collect();
        if p.len() == ids.len() {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
}

/// Runs `args` in task `pid`'s namespaces: `-m -n` (its own files and
/// busybox) or `-n` only (the node's tools in its network).
fn in_task(pid: &str, ns: &[&str], args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("timeout")
        .args(["10", "nsenter", "-t", pid])
        .args(ns)
        .arg("--")
        .args(args)
        .output()
        .expect("run nsenter");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The IPv4 addresses of a task's network namespace, by interface (`ip -o -4 addr`).
fn task_addrs(pid: &str) -> BTreeMap<String, String> {
    let (code, out) = in_task(pid, &["-n"], &["ip", "-o", "-4", "addr", "show"]);
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.to_string(), f.get(3)?.to_string()))
        })
        .collect()
}

/// `GET /` from the node's namespace; the reply's body.
fn get_from_node(n: &ClusterNode, host: &str, port: u16) -> Result<String, String> {
    let r = n.exec(&["sh", "-c", &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {port}")]);
    if r.code == 0 && r.stdout.starts_with("HTTP/1.1 200") {
        Ok(r.stdout.lines().last().unwrap_or_default().trim().to_string())
    } else {
        Err(format!("exit {}: {}{}", r.code, r.stdout, r.stderr))
    }
}

/// The data path's state on the node, for failure messages.
fn diag(n: &ClusterNode) -> String {
    let mut out = String::new();
    for cmd in [&["ip", "-o", "link", "show"][..], &["ip", "-o", "-4", "addr"], &["ip", "route"], &["nft", "list", "ruleset"]] {
        let r = n.exec(cmd);
        out.push_str(&format!("$ {}\n{}{}\n", cmd.join(" "), r.stdout, r.stderr));
    }
    out + &n.log_tail(20)
}

/// Waits for one connection on `l` (non-blocking) and returns the peer's address.
fn accept_within(l: &TcpListener, within: Duration) -> Option<std::net::SocketAddr> {
    l.set_nonblocking(true).unwrap();
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok((_, peer)) = l.accept() {
            return Some(peer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn tasks_on_no_network_get_their_own_namespace_on_the_node_bridge() {
    let Some(mut c) = Cluster::new(1) else { return };
    c.init(1, 0);
    let n = &c.nodes[0];

    // Two replicas of a web server on port 80, on no network, on one node.
    let r = n
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ])
        .ok();
    assert!(!r.stderr.contains("network"), "nothing to warn about: {}", r.stderr);
    let web = wait_running(n, "web", 2);
    // Still the same two a while later: neither crash-loops on the port.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wait_running(n, "web", 2), web, "the replicas were replaced (crash-looping?)");
    let web_pids = pids(n, &web);
    let mut addrs = BTreeMap::new();
    for (id, pid) in &web_pids {
        let a = task_addrs(pid);
        let eth0 = a.get("eth0").unwrap_or_else(|| panic!("task {id} has no eth0: {a:?}"));
        assert!(eth0.starts_with("172.18.") && eth0.ends_with("/16"), "{a:?}");
        assert_eq!(a.len(), 2, "lo and eth0 only: {a:?}");
        let ip = eth0.split('/').next().unwrap().to_string();
        // Its files: the node's nameservers (no embedded resolver on the bridge), its address in hosts.
        let (_, resolv) = in_task(pid, &["-m"], &["cat", "/etc/resolv.conf"]);
        assert!(!resolv.contains("127.0.0.11"), "{resolv}");
        let (_, hosts) = in_task(pid, &["-m"], &["cat", "/etc/hosts"]);
        assert!(hosts.contains(&format!("{ip}\t{}", &id[..12])), "{hosts}");
        addrs.insert(id.clone(), ip);
    }
    assert_eq!(addrs.values().collect::<BTreeSet<_>>().len(), 2, "two addresses: {addrs:?}");
    // Each answers on its own address with its own hostname, from the node.
    for (id, ip) in &addrs {
        let body = wait_for_seen(&format!("GET http://{ip}/ from the node"), CONVERGE, || {
            get_from_node(n, ip, 80).map_err(|e| format!("{e}\n{}", diag(n)))
        });
        assert_eq!(body, &id[..12]);
    }

    // A task reaches the node (the daemon's swarm port on the node's
    // address) and, masqueraded as the node, the outside (a listener on the
    // cluster's bridge in the test's namespace).
    let pid = web_pids.values().next().unwrap().clone();
    let connect = |ip: &str, port: &str| in_task(&pid, &["-n"], &["timeout", "3", "bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")]);
    let (code, out) = connect(&n.ip, "2377");
    assert_eq!(code, 0, "task -> node {}:2377: {out}\n{}", n.ip, diag(n));
    let outside_ip = format!("{}.254", n.ip.rsplit_once('.').unwrap().0);
    let outside = TcpListener::bind(format!("{outside_ip}:0")).expect("listen on the cluster's bridge");
    let port = outside.local_addr().unwrap().port().to_string();
    let (code, out) = connect(&outside_ip, &port);
    assert_eq!(code, 0, "task -> outside {outside_ip}:{port}: {out}\n{}", diag(n));
    let peer = accept_within(&outside, Duration::from_secs(5)).expect("the outside saw the connection");
    assert_eq!(peer.ip().to_string(), n.ip, "masqueraded as the node");

    // A host-mode published port: the node's 8080 reaches the task's 80, from
    // outside the node and from the node itself; no warning any more.
    let r = n
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "pub",
            "--publish",
            "mode=host,published=8080,target=80",
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && echo pub > /www/index.html && exec httpd -f -p 80 -h /www",
        ])
        .ok();
    assert!(!r.stderr.contains("host-mode ports"), "{}", r.stderr);
    let pub_id = wait_running(n, "pub", 1).into_iter().next().unwrap();
    let body = wait_for_seen("GET http://NODE:8080/ from the node", CONVERGE, || {
        get_from_node(n, &n.ip, 8080).map_err(|e| format!("{e}\n{}", diag(n)))
    });
    assert_eq!(body, "pub");
    assert_eq!(get_from_node(n, "127.0.0.1", 8080).as_deref(), Ok("pub"), "from the node's loopback");
    let target: std::net::SocketAddr = format!("{}:8080", n.ip).parse().unwrap();
    let get_outside = || -> String {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3)).expect("connect to NODE:8080 from outside");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    };
    assert!(get_outside().ends_with("pub\n"), "from outside the node");

    // `--network none`: a namespace with loopback only.
    n.shoal(&["service", "create", "-d", "--name", "iso", "--network", "none", IMAGE, "sleep", "3600"]).ok();
    let iso = wait_running(n, "iso", 1);
    let iso_pid = pids(n, &iso).into_values().next().unwrap();
    let (_, links) = in_task(&iso_pid, &["-n"], &["ip", "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "lo only: {links}");
    assert!(links.contains(": lo:"), "{links}");

    // A connection to the published port survives a kill -9 and restart of
    // the daemon: the tasks keep their namespaces and addresses (adopted, not
    // rebuilt), and a new task does not take a live task's address.
    let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3)).expect("connect to NODE:8080");
    c.nodes[0].kill();
    c.nodes[0].start();
    let n = &c.nodes[0];
    wait_for_seen("the daemon back", CONVERGE, || {
        let r = n.shoal(&["info"]);
        if r.code == 0 {
            Ok(())
        } else {
            Err(r.stderr)
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write on the old connection");
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("pub\n"), "the connection made before the restart still works: {reply:?}");
    assert_eq!(wait_running(n, "web", 2), web, "the tasks were not replaced");
    assert_eq!(wait_running(n, "pub", 1).into_iter().next(), Some(pub_id));
    for (id, pid) in pids(n, &web) {
        assert_eq!(task_addrs(&pid).get("eth0").map(|a| a.split('/').next().unwrap().to_string()).as_ref(), addrs.get(&id));
    }
    assert!(get_outside().ends_with("pub\n"), "new connections after the restart");
    n.shoal(&["service", "scale", "-d", "web=3"]).ok();
    let three = wait_running(n, "web", 3);
    let new_id = three.difference(&web).next().unwrap().clone();
    let new_pid = pids(n, &three).remove(&new_id).unwrap();
    let new_ip = task_addrs(&new_pid).remove("eth0").unwrap();
    assert!(!addrs.values().any(|ip| new_ip.starts_with(&format!("{ip}/"))), "{new_ip} was already held: {addrs:?}");

    // Removing the services takes the tasks' namespaces and leases; leaving
    // the swarm takes the bridge and the rules.
    n.shoal(&["service", "rm", "web", "pub", "iso"]).ok();
    let netns_dir = n.data_dir().join("netns");
    wait_for_seen("the tasks' namespaces and leases to go", CONVERGE, || {
        let left: Vec<String> = std::fs::read_dir(&netns_dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        let veths = n.exec(&["ip", "-o", "link", "show"]).stdout.lines().filter(|l| l.contains(": sv")).count();
        if left.is_empty() && veths == 0 {
            Ok(())
        } else {
            Err(format!("{left:?}, {veths} veths"))
        }
    });
    assert_eq!(n.tcp_probe(&n.ip, 8080, 2), TcpProbe::Refused, "the published port went with its task");
    n.shoal(&["swarm", "leave", "--force"]).ok();
    wait_for_seen("the bridge and the rules to go", CONVERGE, || {
        let link = n.exec(&["ip", "link", "show", "shoal0"]);
        let table = n.exec(&["nft", "list", "table", "ip", "shoal"]);
        if link.code != 0 && table.code != 0 {
            Ok(())
        } else {
            Err(format!("{}{}", link.stdout, table.stdout))
        }
    });
}
