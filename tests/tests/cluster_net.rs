//! Container networking on real nodes (issue #12): tasks in namespaces of
//! their own on an overlay network (bridge + VXLAN per node, entries from the
//! replicated state), two replicas of one port side by side, traffic between
//! tasks across nodes, and a published port answering on every node (the
//! routing mesh, nftables DNAT, no IPVS). Each node is a real `shoal daemon`
//! in its own network namespace with its own containerd (see
//! `shoal_tests::cluster`); probes are TCP connects made from inside a
//! node's namespace. Every wait is bounded.

use shoal_tests::cluster::{Cluster, TcpProbe};
use shoal_tests::wait_for_seen;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The test image every node loads (`Cluster::init`).
const IMAGE: &str = "shoal.test/busybox:latest";
/// Bound on tasks starting or a rule showing up.
const CONVERGE: Duration = Duration::from_secs(60);

/// `(task id, node id, address on NETWORK)` of the service's running tasks,
/// from `network inspect -v`.
fn task_addrs(c: &Cluster, network: &str, service: &str) -> Vec<(String, String)> {
    let r = c.nodes[0].shoal(&["network", "inspect", "-v", network]);
    if r.code != 0 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    let Some(svc) = v[0]["Services"].get(service) else { return Vec::new() };
    svc["Tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    let ip = t["EndpointIP"].as_str()?.split('/').next()?.to_string();
                    Some((t["Name"].as_str().unwrap_or_default().to_string(), ip))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `service` has `n` running tasks per `service ps` and returns their ids.
fn wait_running(c: &Cluster, service: &str, n: usize) -> BTreeSet<String> {
    wait_for_seen(&format!("{n} running tasks of {service}"), CONVERGE, || {
        let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
        let rows: Vec<serde_json::Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let running: BTreeSet<String> = rows
            .iter()
            .filter(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")))
            .map(|t| t["ID"].as_str().unwrap_or_default().to_string())
            .collect();
        if running.len() == n {
            Ok(running)
        } else {
            Err(format!("{} running; ps: {}", running.len(), r.stdout.lines().take(6).collect::<Vec<_>>().join(" | ")))
        }
    })
}

/// The data path's state on node `i`, for failure messages.
fn diag(c: &Cluster, i: usize) -> String {
    let n = &c.nodes[i];
    let mut out = format!("--- node {i} ---\n");
    for cmd in [
        &["ip", "-d", "-o", "link", "show"][..],
        &["ip", "-o", "addr"],
        &["bridge", "fdb", "show"],
        &["ip", "neigh", "show"],
        &["ip", "route"],
        &["nft", "list", "ruleset"],
    ] {
        let r = n.exec(cmd);
        out.push_str(&format!("$ {}\n{}{}\n", cmd.join(" "), r.stdout, r.stderr));
    }
    out
}

#[test]
fn overlay_tasks_share_a_port_reach_each_other_across_nodes_and_published_ports_answer_everywhere() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    let m = &c.nodes[0];
    // The seed's network.
    m.shoal(&["network", "create", "--driver", "overlay", "--subnet=10.15.0.0/16", "--gateway=10.15.0.2", "--attachable", "my-swarm-net"])
        .ok();

    // Two replicas of a web server on port 80, on one node: each in its own namespace.
    let r = m
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--network",
            "my-swarm-net",
            "--replicas",
            "2",
            "--constraint",
            "node.role==manager",
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ])
        .ok();
    assert!(!r.stdout.contains("not in effect"), "no warning once the data path works: {}", r.stdout);
    let first = wait_running(&c, "web", 2);
    // Still the same two a while later: neither crash-loops on the port.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wait_running(&c, "web", 2), first, "the replicas were replaced (crash-looping?)");
    let addrs = wait_for_seen("the web tasks' addresses", CONVERGE, || {
        let a = task_addrs(&c, "my-swarm-net", "web");
        if a.len() == 2 {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    });
    for (_, ip) in &addrs {
        assert!(ip.starts_with("10.15."), "{addrs:?}");
        // From the node that runs them (its bridge is on the network).
        assert_eq!(c.nodes[0].tcp_probe(ip, 80, 3), TcpProbe::Connected, "node 0 -> {ip}:80; log: {}", c.nodes[0].log_tail(20));
    }

    // A task of another service on the worker puts the network there; the
    // worker then reaches the manager's tasks over VXLAN.
    c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "side",
            "--network",
            "my-swarm-net",
            "--constraint",
            "node.role==worker",
            IMAGE,
            "sleep",
            "3600",
        ])
        .ok();
    wait_running(&c, "side", 1);
    for (_, ip) in &addrs {
        let started = Instant::now();
        wait_for_seen(&format!("worker -> {ip}:80 over the overlay"), CONVERGE, || match c.nodes[1].tcp_probe(ip, 80, 2) {
            TcpProbe::Connected => Ok(()),
            other => Err(format!(
                "{other:?} after {:?}; worker log: {}\n{}\n{}",
                started.elapsed(),
                c.nodes[1].log_tail(10),
                diag(&c, 0),
                diag(&c, 1)
            )),
        });
    }

    // Service discovery from inside a task on the worker: the embedded
    // resolver at 127.0.0.11 answers the service's name with its VIP and
    // `tasks.web` with both tasks; a request to the name reaches a task.
    let side_id = wait_running(&c, "side", 1).into_iter().next().unwrap();
    let pid = wait_for_seen("the side task's process", CONVERGE, || {
        c.nodes[1].tasks_pids().into_iter().find(|(id, _)| *id == side_id).map(|(_, pid)| pid).ok_or("not running yet".to_string())
    });
    let in_task = |args: &[&str]| -> (i32, String) {
        let out = std::process::Command::new("timeout")
            .args(["10", "nsenter", "-t", &pid, "-m", "-n", "--"])
            .args(args)
            .output()
            .expect("run nsenter");
        (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let inspect: serde_json::Value = serde_json::from_str(&c.nodes[0].shoal(&["service", "inspect", "web"]).ok().stdout).unwrap();
    let vip = inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"].as_str().unwrap().split('/').next().unwrap().to_string();
    let (_, resolv) = in_task(&["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    wait_for_seen("web to resolve to its VIP in a task", CONVERGE, || {
        let (code, out) = in_task(&["busybox", "nslookup", "web", "127.0.0.11"]);
        if code == 0 && out.contains(&vip) {
            Ok(())
        } else {
            Err(format!("exit {code}: {out}"))
        }
    });
    let (code, out) = in_task(&["busybox", "nslookup", "tasks.web", "127.0.0.11"]);
    assert_eq!(code, 0, "{out}");
    for (_, ip) in &addrs {
        assert!(out.contains(ip.as_str()), "tasks.web lists {ip}: {out}");
    }
    let (code, out) = in_task(&["busybox", "nslookup", "nosuchservice", "127.0.0.11"]);
    assert_ne!(code, 0, "an unknown name does not resolve: {out}");
    // HTTP through the VIP, by address and by name, from the worker's task
    // to the manager's (busybox's static `wget` crashes in its resolver
    // stub, so the request goes through `nc`).
    let get = |host: &str| in_task(&["sh", "-c", &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc {host} 80")]);
    let names: BTreeSet<String> = addrs.iter().map(|(n, _)| n.clone()).collect();
    for host in [vip.as_str(), "web"] {
        wait_for_seen(&format!("GET http://{host}/ from a task on the worker"), CONVERGE, || {
            let (code, out) = get(host);
            if code == 0 && out.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                Err(format!("exit {code}: {out}; {}", diag(&c, 1)))
            }
        });
    }
    // The VIP balances: both tasks answer within a few tries (each serves its hostname).
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let (_, out) = get("web");
        if let Some(body) = out.lines().last() {
            seen.insert(body.trim().to_string());
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "the VIP reached only {seen:?} of the tasks {names:?}");

    // A connection through the VIP survives a kill -9 and restart of the
    // daemon of the node that translates it (the worker): what it built is
    // adopted, not rebuilt, and its task keeps running.
    let netns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let target: std::net::SocketAddr = format!("{vip}:80").parse().unwrap();
    let mut conn =
        shoal_netlink::netns::run_in(&netns, 5_000, move || std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)))
            .expect("enter the task's namespace")
            .expect("connect through the VIP");
    c.nodes[1].kill();
    c.nodes[1].start();
    wait_for_seen("the worker's daemon back", CONVERGE, || {
        let r = c.nodes[1].shoal(&["info"]);
        if r.code == 0 {
            Ok(())
        } else {
            Err(r.stderr)
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    {
        use std::io::{Read, Write};
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write on the old connection");
        let mut reply = String::new();
        let _ = conn.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "the connection made before the restart still works: {reply:?}");
    }
    assert_eq!(wait_running(&c, "side", 1).into_iter().next(), Some(side_id.clone()), "the worker's task was not replaced");
    let (code, out) = get("web");
    assert!(code == 0 && out.starts_with("HTTP/1.1 200"), "new connections after the restart: {out}");

    // Published through the routing mesh: port 8080 answers on both nodes,
    // including the worker, which runs none of the service's tasks.
    c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "pub",
            "--network",
            "my-swarm-net",
            "--publish",
            "8080:80",
            "--constraint",
            "node.role==manager",
            IMAGE,
            "httpd",
            "-f",
            "-p",
            "80",
        ])
        .ok();
    wait_running(&c, "pub", 1);
    for i in 0..2 {
        for target in [c.nodes[0].ip.clone(), c.nodes[1].ip.clone()] {
            wait_for_seen(&format!("node {i} -> {target}:8080 (routing mesh)"), CONVERGE, || {
                match c.nodes[i].tcp_probe(&target, 8080, 2) {
                    TcpProbe::Connected => Ok(()),
                    other => Err(format!("{other:?}; log: {}", c.nodes[i].log_tail(10))),
                }
            });
        }
    }
    let ls = c.nodes[0].shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.contains("*:8080->80/tcp"), "{ls}");

    // Removing the services takes the tasks' namespaces and, with the last
    // task, the network's devices on the worker.
    c.nodes[0].shoal(&["service", "rm", "web", "side", "pub"]).ok();
    wait_for_seen("the worker's overlay devices to go", CONVERGE, || {
        let links = c.nodes[1].exec(&["ip", "-o", "link", "show"]).stdout;
        let ours: Vec<&str> = links.lines().filter(|l| l.contains(": sb-") || l.contains(": sx-") || l.contains(": sv")).collect();
        if ours.is_empty() {
            Ok(())
        } else {
            Err(ours.join("\n"))
        }
    });
}
