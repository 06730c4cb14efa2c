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

/// Runs `args` inside the task whose main process is `pid` (its mount and
/// network namespaces), bounded by 10 s: (exit code, stdout + stderr).
fn in_task(pid: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("timeout")
        .args(["10", "nsenter", "-t", pid, "-m", "-n", "--"])
        .args(args)
        .output()
        .expect("run nsenter");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The main process of the running task `task` on node `i`.
fn task_pid(c: &Cluster, i: usize, task: &str) -> String {
    wait_for_seen(&format!("task {task}'s process on node {i}"), CONVERGE, || {
        c.nodes[i].tasks_pids().into_iter().find(|(id, _)| id == task).map(|(_, pid)| pid).ok_or("not running yet".to_string())
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
    // The seed's commands across 3 nodes: a manager and two workers.
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(1, 2);
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
            &format!("node.id=={}", c.node_id(1).expect("node 1's id")),
            IMAGE,
            "sleep",
            "3600",
        ])
        .ok();
    wait_running(&c, "side", 1);
    // The worker lists the networks that have tasks on it, as Swarm's workers do.
    let ls = c.nodes[1].shoal(&["network", "ls"]).ok().stdout;
    let names: Vec<&str> = ls.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(names, ["host", "my-swarm-net", "none"], "{ls}");
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
    let pid = task_pid(&c, 1, &side_id);
    let in_task = |args: &[&str]| in_task(&pid, args);
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

    // Published through the routing mesh: port 8080 answers on every node,
    // including the workers, which run none of the service's tasks.
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
    // Port 8080 on all three nodes, from each: two of them run none of its tasks.
    for i in 0..3 {
        for target in c.nodes.iter().map(|n| n.ip.clone()) {
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

/// The hostnames (a task's default hostname is its id's first 12
/// characters) that requests to `http://NAME/` from the task `pid` reach,
/// once `2 * expected.len()` requests in a row all succeed, all reach one of
/// `expected` and between them reach every one. Returns how long that took.
fn wait_rotation(c: &Cluster, pid: &str, name: &str, expected: &BTreeSet<String>, bound: Duration) -> Duration {
    let start = Instant::now();
    let (mut seen, mut in_a_row) = (BTreeSet::new(), 0);
    wait_for_seen(&format!("the VIP of {name} to balance over exactly {expected:?}"), bound, || {
        let (code, out) = in_task(pid, &["sh", "-c", &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc {name} 80")]);
        let body = out.lines().last().unwrap_or_default().trim().to_string();
        if code != 0 || !out.starts_with("HTTP/1.1 200") || !expected.contains(&body) {
            (seen, in_a_row) = (BTreeSet::new(), 0);
            return Err(format!("exit {code}: {out:?}; {}", c.nodes[0].log_tail(5)));
        }
        seen.insert(body);
        in_a_row += 1;
        if in_a_row >= 2 * expected.len() && seen == *expected {
            Ok(start.elapsed())
        } else {
            Err(format!("{in_a_row} in a row, reached {seen:?}"))
        }
    })
}

fn hostnames(ids: &BTreeSet<String>) -> BTreeSet<String> {
    ids.iter().map(|id| id.chars().take(12).collect()).collect()
}

/// The issue's remaining cluster cases: an `--internal` network has no way
/// out while an ordinary one does, and a VIP's rotation follows its service
/// when it is scaled down and up and when a node running one of its tasks
/// dies (power cut, its tasks gone with it): only running tasks answer.
/// How long each change took to show in the rotation is printed.
#[test]
fn internal_networks_have_no_way_out_and_vips_follow_scaling_and_node_death() {
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(1, 2);
    let m = &c.nodes[0];
    m.shoal(&["network", "create", "-d", "overlay", "back"]).ok();
    m.shoal(&["network", "create", "-d", "overlay", "--internal", "inner"]).ok();
    // A client on each network, on the manager (which stays up throughout).
    for (name, net) in [("cli", "back"), ("shut", "inner")] {
        m.shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "--constraint",
            "node.role==manager",
            IMAGE,
            "sleep",
            "3600",
        ])
        .ok();
    }
    let cli = task_pid(&c, 0, &wait_running(&c, "cli", 1).into_iter().next().unwrap());
    let shut = task_pid(&c, 0, &wait_running(&c, "shut", 1).into_iter().next().unwrap());

    // A way out: the task on `back` reaches another node (masqueraded); the
    // one on `inner` has no default route and reaches nothing off its network.
    let outside = c.nodes[2].ip.clone();
    wait_for_seen(&format!("a task on an ordinary network to reach {outside}"), CONVERGE, || {
        let (code, out) = in_task(&cli, &["busybox", "ping", "-c", "1", "-W", "1", &outside]);
        if code == 0 {
            Ok(())
        } else {
            Err(format!("exit {code}: {out}; {}", diag(&c, 0)))
        }
    });
    let (_, routes) = in_task(&shut, &["busybox", "ip", "route"]);
    assert!(!routes.contains("default") && routes.contains("eth0"), "an --internal task has its network and no default route: {routes}");
    let (_, routes) = in_task(&cli, &["busybox", "ip", "route"]);
    assert!(routes.contains("default"), "an ordinary task has a default route: {routes}");
    for target in [outside.as_str(), c.nodes[0].ip.as_str()] {
        let (code, out) = in_task(&shut, &["busybox", "ping", "-c", "1", "-W", "2", target]);
        assert_ne!(code, 0, "a task on an --internal network reached {target}: {out}");
    }

    // A VIP over three replicas (spread over the three nodes).
    let web = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
    m.shoal(&["service", "create", "-d", "--name", "rot", "--network", "back", "--replicas", "3", IMAGE, "sh", "-c", web]).ok();
    let three = wait_running(&c, "rot", 3);
    let took = wait_rotation(&c, &cli, "rot", &hostnames(&three), CONVERGE);
    println!("rotation: 3 replicas answer through the VIP {took:?} after they run");

    // Scaled down to one: the two stopped tasks leave the rotation, and the
    // client's node forgets their tracked connections (closed ones would
    // otherwise sit in TIME_WAIT for 2 minutes, UDP ones stick for ever).
    let before = task_addrs(&c, "back", "rot");
    assert_eq!(before.len(), 3, "{before:?}");
    m.shoal(&["service", "scale", "-d", "rot=1"]).ok();
    let one = wait_running(&c, "rot", 1);
    assert!(one.is_subset(&three), "scaling down keeps one of the running tasks: {one:?} of {three:?}");
    let took = wait_rotation(&c, &cli, "rot", &hostnames(&one), CONVERGE);
    println!("rotation: scaled 3 -> 1, only the remaining task answers {took:?} after `service ps` shows it alone");
    let gone: Vec<&String> =
        before.iter().filter(|(name, _)| !one.iter().any(|id| name.ends_with(id.as_str()))).map(|(_, ip)| ip).collect();
    assert_eq!(gone.len(), 2, "{before:?} {one:?}");
    for ip in gone {
        wait_for_seen(&format!("node 0 to forget the connections to {ip}"), CONVERGE, || {
            let r = c.nodes[0].exec(&["conntrack", "-L", "-r", ip]);
            if r.stdout.trim().is_empty() {
                Ok(())
            } else {
                Err(r.stdout)
            }
        });
    }

    // Scaled up again: the new tasks join it.
    m.shoal(&["service", "scale", "-d", "rot=3"]).ok();
    let three = wait_running(&c, "rot", 3);
    let took = wait_rotation(&c, &cli, "rot", &hostnames(&three), CONVERGE);
    println!("rotation: scaled 1 -> 3, all answer {took:?} after they run");

    // A worker dies with its tasks (its daemon stays down): once the
    // managers mark it down and replace its task elsewhere, the rotation is
    // the three live tasks only.
    let victim = (1..3).find(|&i| c.nodes[i].running_ids().iter().any(|id| three.contains(id))).expect("a worker runs a replica");
    let dead: BTreeSet<String> = c.nodes[victim].running_ids().into_iter().filter(|id| three.contains(id)).collect();
    let cut = Instant::now();
    c.nodes[victim].power_cycle();
    let live = wait_for_seen("the dead node's replicas to be replaced", Duration::from_secs(120), || {
        let ids = wait_running(&c, "rot", 3);
        if ids.is_disjoint(&dead) {
            Ok(ids)
        } else {
            Err(format!("still listed as running: {:?}", ids.intersection(&dead).collect::<Vec<_>>()))
        }
    });
    println!("rotation: node {victim} died; its replicas were replaced {:?} after the power cut", cut.elapsed());
    let took = wait_rotation(&c, &cli, "rot", &hostnames(&live), CONVERGE);
    println!("rotation: the live replicas answer {took:?} after that");
}
