//! Container networking benchmark (issues #12, #15), run by `targets/net-bench.sh`:
//! on two real nodes (network namespaces, real containerd, real `shoal
//! daemon`s), in one run:
//! - overlay throughput between tasks on the two nodes (iperf3 entered into
//!   the tasks' namespaces) against the plain veth path between the two
//!   node namespaces, on a plain and on an encrypted network (with both
//!   daemons' CPU time per GiB, since their relays seal every packet), and
//!   ping round trips on each;
//! - TCP connections per second through a service VIP (nftables DNAT)
//!   against the same to a task's own address;
//! - DNS answers per second from the resolver at 127.0.0.11 in a task;
//! - the time from `service create --publish` to the port answering on
//!   every node (routing mesh).
//!
//! Prints figures, asserts none (but that each path works at all). Docker
//! swarm mode cannot serve VIPs or the routing mesh on this machine's kernel
//! (no IPVS), so there is no Docker column here.

use shoal_tests::cluster::{Cluster, TcpProbe};
use shoal_tests::wait_for_seen;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "shoal.test/busybox:latest";
const CONVERGE: Duration = Duration::from_secs(60);
/// Length of each timed loop.
const RUN: Duration = Duration::from_secs(3);
/// iperf3 run length, seconds.
const IPERF_SECS: &str = "4";

fn running_task(c: &Cluster, i: usize, service: &str) -> (String, String) {
    wait_for_seen(&format!("a running task of {service} on node {i}"), CONVERGE, || {
        let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
        let ids: Vec<String> = r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|t| t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")))
            .filter_map(|t| t["ID"].as_str().map(str::to_string))
            .collect();
        c.nodes[i].tasks_pids().into_iter().find(|(id, _)| ids.contains(id)).ok_or(format!("ps: {}", r.stdout))
    })
}

/// `inspect`'s address of task `id` on `network` (`network inspect -v`).
fn task_ip(c: &Cluster, network: &str, service: &str, id: &str) -> String {
    wait_for_seen(&format!("task {id}'s address"), CONVERGE, || {
        let v: serde_json::Value =
            serde_json::from_str(&c.nodes[0].shoal(&["network", "inspect", "-v", network]).stdout).map_err(|e| e.to_string())?;
        let short: String = id.chars().take(12).collect();
        v[0]["Services"][service]["Tasks"]
            .as_array()
            .and_then(|ts| {
                ts.iter()
                    .find(|t| t["Name"].as_str().is_some_and(|n| n.contains(&short) || id.contains(n)))
                    .and_then(|t| t["EndpointIP"].as_str().map(|s| s.split('/').next().unwrap_or_default().to_string()))
            })
            .ok_or(format!("{v}"))
    })
}

/// iperf3 from namespace `client` (an `nsenter`/`ip netns exec` prefix) to
/// a server started in `server`: bits per second received.
fn iperf(server: &[&str], client: &[&str], ip: &str) -> f64 {
    iperf_bytes(server, client, ip).0
}

/// [`iperf`]'s bits per second and the bytes received.
fn iperf_bytes(server: &[&str], client: &[&str], ip: &str) -> (f64, f64) {
    let mut srv = Command::new(server[0])
        .args(&server[1..])
        .args(["iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start iperf3 -s");
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("timeout")
        .arg("30")
        .args(client)
        .args(["iperf3", "-c", ip, "-p", "5201", "-t", IPERF_SECS, "-J"])
        .output()
        .expect("run iperf3 -c");
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    assert!(bps > 0.0, "iperf3 to {ip} measured nothing: {}", String::from_utf8_lossy(&out.stderr));
    (bps, v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0))
}

/// Waits (bounded) until one ping from `from` (a namespace prefix) to `ip` is answered.
fn wait_pingable(what: &str, from: &[&str], ip: &str) {
    wait_for_seen(what, CONVERGE, || {
        match Command::new("timeout").args(["3"]).args(from).args(["busybox", "ping", "-c", "1", "-W", "1", ip]).status() {
            Ok(s) if s.success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// User + system CPU seconds process `pid` has used (`/proc/PID/stat`).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.get(10..12).map(|t| (t[0] + t[1]) as f64 / hz).unwrap_or(0.0)
}

/// Average round trip of 20 pings from `from` (a namespace prefix) to `ip`, in ms.
fn rtt_ms(from: &[&str], ip: &str) -> f64 {
    let out = Command::new("timeout").arg("20").args(from).args(["busybox", "ping", "-c", "20", "-i", "0.1", ip]).output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // busybox: "round-trip min/avg/max = 0.071/0.083/0.102 ms"
    text.lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.contains("min/avg/max")).and_then(|(_, v)| v.split('/').nth(1)?.parse().ok()))
        .unwrap_or_else(|| panic!("no round trip in: {text}"))
}

/// TCP connect + one HTTP request + reply, as many times as fit in [`RUN`],
/// from inside the namespace of process `pid`: connections per second.
fn conns_per_s(pid: &str, target: SocketAddr) -> f64 {
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    shoal_netlink::netns::run_in(&ns, 30_000, move || {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < RUN {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
    .expect("enter the task's namespace")
}

/// A DNS query for `name` (type A, class IN) with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers per second from 127.0.0.11 in the namespace of `pid`, with
/// `window` queries in flight.
fn dns_per_s(pid: &str, name: &'static str, window: u16) -> f64 {
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    shoal_netlink::netns::run_in(&ns, 30_000, move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect("127.0.0.11:53").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut next = 0u16;
        for _ in 0..window {
            sock.send(&query(next, name)).unwrap();
            next = next.wrapping_add(1);
        }
        let (start, mut answers, mut buf) = (Instant::now(), 0u64, [0u8; 512]);
        while start.elapsed() < RUN {
            let n = sock.recv(&mut buf).expect("an answer within 2 s");
            assert!(n > 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0, "not an answer: {:?}", &buf[..n]);
            answers += 1;
            sock.send(&query(next, name)).unwrap();
            next = next.wrapping_add(1);
        }
        answers as f64 / start.elapsed().as_secs_f64()
    })
    .expect("enter the task's namespace")
}

#[test]
#[ignore = "benchmark: run targets/net-bench.sh"]
fn bench_overlay_vip_dns_and_publish() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    let m = &c.nodes[0];
    m.shoal(&["network", "create", "-d", "overlay", "bench"]).ok();
    m.shoal(&["network", "create", "-d", "overlay", "--opt", "encrypted", "secure"]).ok();
    let web = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
    for (name, role, cmd, net) in [
        ("a", "manager", "sleep 3600", "bench"),
        ("b", "worker", "sleep 3600", "bench"),
        ("web", "worker", web, "bench"),
        ("sa", "manager", "sleep 3600", "secure"),
        ("sb", "worker", "sleep 3600", "secure"),
    ] {
        let constraint = format!("node.role=={role}");
        m.shoal(&["service", "create", "-d", "--name", name, "--network", net, "--constraint", &constraint, IMAGE, "sh", "-c", cmd]).ok();
    }
    let (_, a_pid) = running_task(&c, 0, "a");
    let (b_id, b_pid) = running_task(&c, 1, "b");
    let (web_id, _) = running_task(&c, 1, "web");
    let b_ip = task_ip(&c, "bench", "b", &b_id);
    let web_ip = task_ip(&c, "bench", "web", &web_id);

    // Throughput: task to task over VXLAN, then node to node over veth.
    let into = |pid: &str| vec!["nsenter".to_string(), "-t".into(), pid.to_string(), "-n".into(), "--".into()];
    let (a_ns, b_ns) = (into(&a_pid), into(&b_pid));
    let a_ref: Vec<&str> = a_ns.iter().map(String::as_str).collect();
    let b_ref: Vec<&str> = b_ns.iter().map(String::as_str).collect();
    wait_pingable("a -> b over the overlay", &a_ref, &b_ip);
    let overlay = iperf(&b_ref, &a_ref, &b_ip);
    let n0 = ["ip", "netns", "exec", c.nodes[0].netns.as_str()];
    let n1 = ["ip", "netns", "exec", c.nodes[1].netns.as_str()];
    let veth = iperf(&n1, &n0, &c.nodes[1].ip);
    println!(
        "throughput: overlay task->task {:.2} Gbit/s, node->node veth {:.2} Gbit/s ({:.0} % of veth)",
        overlay / 1e9,
        veth / 1e9,
        overlay / veth * 100.0
    );

    // The encrypted overlay (issue #15): throughput, the daemons' CPU time per GiB (their relays seal
    // and open every packet), and round trips against the plain overlay and veth.
    let (_, sa_pid) = running_task(&c, 0, "sa");
    let (sb_id, sb_pid) = running_task(&c, 1, "sb");
    let sb_ip = task_ip(&c, "secure", "sb", &sb_id);
    let (sa_ns, sb_ns) = (into(&sa_pid), into(&sb_pid));
    let sa_ref: Vec<&str> = sa_ns.iter().map(String::as_str).collect();
    let sb_ref: Vec<&str> = sb_ns.iter().map(String::as_str).collect();
    wait_pingable("sa -> sb over the encrypted overlay", &sa_ref, &sb_ip);
    let daemons: Vec<u32> = c.nodes.iter().filter_map(|n| n.pid()).collect();
    let cpu_before: f64 = daemons.iter().map(|p| cpu_s(*p)).sum();
    let (encrypted, bytes) = iperf_bytes(&sb_ref, &sa_ref, &sb_ip);
    let cpu = daemons.iter().map(|p| cpu_s(*p)).sum::<f64>() - cpu_before;
    let gib = bytes / (1u64 << 30) as f64;
    println!(
        "encrypted: overlay task->task {:.2} Gbit/s ({:.0} % of the plain overlay, {:.0} % of veth); both daemons' CPU {:.2} s per GiB moved ({:.2} GiB in {IPERF_SECS} s)",
        encrypted / 1e9,
        encrypted / overlay * 100.0,
        encrypted / veth * 100.0,
        cpu / gib.max(1e-9),
        gib
    );
    let (rtt_plain, rtt_enc, rtt_veth) = (rtt_ms(&a_ref, &b_ip), rtt_ms(&sa_ref, &sb_ip), rtt_ms(&n0, &c.nodes[1].ip));
    println!(
        "latency: ping round trip (avg of 20) plain overlay {rtt_plain:.3} ms, encrypted overlay {rtt_enc:.3} ms (+{:.3} ms), veth {rtt_veth:.3} ms",
        rtt_enc - rtt_plain
    );

    // Connections per second: through the VIP (DNAT) and to the task directly.
    let inspect: serde_json::Value = serde_json::from_str(&m.shoal(&["service", "inspect", "web"]).ok().stdout).unwrap();
    let vip = inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"].as_str().unwrap().split('/').next().unwrap().to_string();
    // Alternated, best of two rounds each, so that a busy moment of the
    // machine does not land on one side only.
    let (mut direct, mut through_vip) = (0f64, 0f64);
    for _ in 0..2 {
        direct = direct.max(conns_per_s(&a_pid, format!("{web_ip}:80").parse().unwrap()));
        through_vip = through_vip.max(conns_per_s(&a_pid, format!("{vip}:80").parse().unwrap()));
    }
    println!("connections: {through_vip:.0}/s through the VIP {vip}, {direct:.0}/s to the task {web_ip} directly (HTTP/1.0 GET each, one at a time, across nodes; best of 2)");

    // DNS from the task's resolver.
    let one = dns_per_s(&a_pid, "web", 1);
    let sixteen = dns_per_s(&a_pid, "web", 16);
    println!("dns: {one:.0} answers/s one at a time, {sixteen:.0} answers/s with 16 in flight (name `web`, from 127.0.0.11 in a task)");

    // Publish to answering on every node.
    let start = Instant::now();
    m.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "pub",
        "--publish",
        "8080:80",
        "--constraint",
        "node.role==worker",
        IMAGE,
        "sh",
        "-c",
        web,
    ])
    .ok();
    let mut answered = Vec::new();
    for i in 0..2 {
        let ip = c.nodes[i].ip.clone();
        wait_for_seen(&format!("port 8080 on node {i}"), CONVERGE, || match c.nodes[1 - i].tcp_probe(&ip, 8080, 1) {
            TcpProbe::Connected => Ok(()),
            other => Err(format!("{other:?}")),
        });
        answered.push(format!("node {i} ({}) {:.2} s", if i == 0 { "no task" } else { "runs the task" }, start.elapsed().as_secs_f64()));
    }
    println!("publish: `service create --publish 8080:80` to port 8080 answering: {}", answered.join(", "));
    println!("SUMMARY net-bench overlay_gbps={:.2} encrypted_gbps={:.2} veth_gbps={:.2} vip_conns_s={through_vip:.0} direct_conns_s={direct:.0} dns_s={one:.0} dns16_s={sixteen:.0} publish_s={:.2}", overlay / 1e9, encrypted / 1e9, veth / 1e9, start.elapsed().as_secs_f64());
}
