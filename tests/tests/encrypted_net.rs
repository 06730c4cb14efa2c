//! Encrypted overlay networks on real nodes (issue #15): two `shoal daemon`s
//! in network namespaces of their own on one bridge; a task on one node
//! fetches a page by service name from a task on the other over an
//! `--opt encrypted` network, and again over a plain one, while `tcpdump`
//! captures the bridge that joins the nodes. The encrypted capture must hold
//! no VXLAN packet and none of the page's bytes; the plain one holds both
//! (the proof the check can fail). Frames captured from the tunnel and sent
//! again (as they were, or under a counter never used) are dropped and counted by
//! the receiving relay, and a slow stream keeps flowing across several key
//! rotations (`SHOAL_TEST_TUNNEL_ROTATE_MS`). Every wait is bounded.

use shoal_tests::cluster::Cluster;
use shoal_tests::wait_for_seen;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IMAGE: &str = "shoal.test/busybox:latest";
/// Bound on tasks starting, names resolving, a log line showing up.
const CONVERGE: Duration = Duration::from_secs(60);
/// Milliseconds between key rotations in this test (12 hours otherwise).
const ROTATE_MS: &str = "3000";

/// The main process of `service`'s running task on node `i`.
fn task_pid(c: &Cluster, i: usize, service: &str) -> String {
    wait_for_seen(&format!("a running task of {service} on node {i}"), CONVERGE, || {
        let r = c.nodes[0].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
        let id = r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")))
            .and_then(|t| t["ID"].as_str().map(str::to_string))
            .ok_or_else(|| format!("none running yet: {}", r.stdout))?;
        c.nodes[i]
            .tasks_pids()
            .into_iter()
            .find(|(t, _)| *t == id)
            .map(|(_, p)| p)
            .ok_or_else(|| format!("{id} has no process on node {i}"))
    })
}

/// Runs `args` in the task whose main process is `pid`, bounded by `secs`.
fn in_task(pid: &str, secs: u32, args: &[&str]) -> (i32, String) {
    let out =
        Command::new("timeout").args([&secs.to_string(), "nsenter", "-t", pid, "-m", "-n", "--"]).args(args).output().expect("run nsenter");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The host's end of node 0's link to the bridge that joins the cluster's
/// namespaces (the bridge holds `SUBNET.254`): every packet between node 0
/// and the others crosses it (a capture on the bridge itself sees only
/// what the host sends or receives, not what the bridge forwards).
fn wire_of_node0(c: &Cluster) -> String {
    let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let want = format!(" {}.254/24 ", c.subnet);
    let bridge =
        text.lines().find(|l| l.contains(&want)).and_then(|l| l.split_whitespace().nth(1)).expect("the cluster's bridge").to_string();
    // The port whose peer is node 0's eth0.
    let peer = c.nodes[0].exec(&["cat", "/sys/class/net/eth0/iflink"]).stdout.trim().to_string();
    let out = Command::new("ip").args(["-o", "link", "show", "master", &bridge]).output().expect("ip link");
    let ports = String::from_utf8_lossy(&out.stdout).to_string();
    ports
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(peer.as_str()))
        .and_then(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("node 0's port (ifindex {peer}) on {bridge}: {ports}"))
}

/// A running `tcpdump` writing what crosses `dev` to `file`.
struct Capture(Child);

impl Capture {
    fn start(dev: &str, file: &Path) -> Capture {
        let child = Command::new("tcpdump")
            .args(["-i", dev, "--immediate-mode", "-U", "-n", "-s", "0", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (targets/setup.sh installs it)");
        // tcpdump opens its socket before it writes the file header.
        wait_for_seen("tcpdump to start", Duration::from_secs(10), || {
            if std::fs::metadata(file).is_ok_and(|m| m.len() >= 24) {
                Ok(())
            } else {
                Err("no capture file yet".to_string())
            }
        });
        Capture(child)
    }

    fn stop(mut self) {
        // Whatever is still on its way is written before it stops.
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many packets of `file` match the tcpdump `filter`.
fn count(file: &Path, filter: &str) -> usize {
    let out = Command::new("tcpdump").args(["-n", "-r"]).arg(file).arg(filter).stderr(Stdio::null()).output().expect("tcpdump -r");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The UDP payloads of the packets of a pcap file (Ethernet, IPv4, UDP).
fn udp_payloads(file: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(file).expect("read capture");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        let p = &b[at + 16..(at + 16 + len).min(b.len())];
        at += 16 + len;
        if p.len() < 14 + 20 + 8 || p[12..14] != [0x08, 0x00] || p[14 + 9] != 17 {
            continue;
        }
        let ihl = usize::from(p[14] & 0x0f) * 4;
        out.push(p[14 + ihl + 8..].to_vec());
    }
    out
}

/// The relay frames node `i` sent in capture `pcap` (the UDP payloads to port 4790), via a filtered copy at `scratch`.
fn frames_from(c: &Cluster, i: usize, pcap: &Path, scratch: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(pcap)
        .arg("-w")
        .arg(scratch)
        .arg(format!("udp dst port 4790 and src host {}", c.nodes[i].ip))
        .output()
        .expect("tcpdump -r");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    udp_payloads(scratch)
}

/// Sends each of `frames` to node `to`'s relay port from node `from`'s namespace (its own address).
fn send_frames(c: &Cluster, from: usize, to: usize, frames: &[Vec<u8>], dir: &Path, tag: &str) {
    for (i, f) in frames.iter().enumerate() {
        let file = dir.join(format!("{tag}{i}"));
        std::fs::write(&file, f).unwrap();
        let r = c.nodes[from].exec(&["bash", "-c", &format!("cat {} > /dev/udp/{}/4790", file.display(), c.nodes[to].ip)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
}

/// Node `i`'s relay counts from `shoal info` (its `Encrypted Overlay:`
/// section), as (name, value) pairs: `sealed`, `opened`, `replayed`...
fn tunnel_counts(c: &Cluster, i: usize) -> Option<Vec<(String, u64)>> {
    let info = c.nodes[i].shoal(&["info"]).stdout;
    let mut out = Vec::new();
    for l in info.lines() {
        let Some(rest) = l.trim().strip_prefix("Packets: ").or_else(|| l.trim().strip_prefix("Dropped: ")) else { continue };
        for part in rest.split(',') {
            let (n, name) = part.trim().split_once(' ')?;
            out.push((name.to_string(), n.parse().ok()?));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The data path's state on node `i`, for failure messages.
fn diag(c: &Cluster, i: usize) -> String {
    let mut out = format!("--- node {i} ---\n");
    for cmd in [
        &["ip", "-d", "-o", "link", "show"][..],
        &["ip", "-o", "addr"],
        &["bridge", "fdb", "show"],
        &["ip", "route"],
        &["nft", "list", "ruleset"],
    ] {
        let r = c.nodes[i].exec(cmd);
        out.push_str(&format!("$ {}\n{}{}\n", cmd.join(" "), r.stdout, r.stderr));
    }
    out
}

fn counted(counts: &[(String, u64)], name: &str) -> u64 {
    counts.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {name:?} in {counts:?}"))
}

#[test]
fn encrypted_networks_carry_nothing_readable_between_nodes_and_plain_ones_do() {
    let Some(mut c) = Cluster::new(2) else { return };
    // Only the manager's key rotates quickly: the worker's frames replayed below stay under a key the
    // manager holds (else they would be dropped as under an unknown key, not as replays).
    c.nodes[0].start_env(&[("SHOAL_TEST_TUNNEL_ROTATE_MS", ROTATE_MS)]);
    c.init(1, 1);
    let m = &c.nodes[0];
    // Subnets with a third octet: the cluster's own underlay is a 10.X.0.0/24.
    m.shoal(&["network", "create", "-d", "overlay", "--opt", "encrypted", "--subnet", "10.31.1.0/24", "secret"]).ok();
    m.shoal(&["network", "create", "-d", "overlay", "--subnet", "10.31.2.0/24", "plain"]).ok();
    let net: serde_json::Value = serde_json::from_str(&m.shoal(&["network", "inspect", "secret"]).ok().stdout).unwrap();
    assert_eq!(net[0]["ShoalDataPath"]["MTU"], 1393, "{net}");
    let page = "shoal-page-7f3a9c1e5b2d4f6081a3c5e7b9d1f2a4c6e8";
    let (manager, worker) = (c.node_id(0).expect("node 0's id"), c.node_id(1).expect("node 1's id"));
    let serve = format!("mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 80 -h /www");
    for (name, network) in [("web-secret", "secret"), ("web-plain", "plain")] {
        let on = format!("node.id=={manager}");
        let r = m
            .shoal(&["service", "create", "-d", "--name", name, "--network", network, "--constraint", &on, IMAGE, "sh", "-c", &serve])
            .ok();
        assert!(!r.stderr.contains("not encrypted") && !r.stderr.contains("not in effect"), "{}", r.stderr);
    }
    // The client, on both networks, on the other node; it also streams slowly from the server for the rotation check.
    let on = format!("node.id=={worker}");
    m.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "client",
        "--network",
        "secret",
        "--network",
        "plain",
        "--constraint",
        &on,
        IMAGE,
        "sleep",
        "3600",
    ])
    .ok();
    let client = task_pid(&c, 1, "client");
    task_pid(&c, 0, "web-secret");
    task_pid(&c, 0, "web-plain");
    // The task's interface on the encrypted network has the encrypted MTU.
    let (_, mtu) = in_task(&client, 10, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1393");

    let fetch = |c: &Cluster, service: &str| -> String {
        wait_for_seen(&format!("the page from {service} by name"), CONVERGE, || {
            // busybox's static `wget` crashes in its resolver stub: the request goes through `nc`.
            let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc {service} 80");
            let (code, out) = in_task(&client, 10, &["sh", "-c", &get]);
            if code == 0 && out.contains(page) {
                Ok(out)
            } else {
                Err(format!("exit {code}: {out}; worker log: {}\n{}\n{}", c.nodes[1].log_tail(8), diag(c, 0), diag(c, 1)))
            }
        })
    };
    let dev = wire_of_node0(&c);
    let dir = c.dir().to_path_buf();
    // Warm both paths (keys exchanged, names resolvable), then capture one fetch on each.
    fetch(&c, "web-secret");
    fetch(&c, "web-plain");
    for i in 0..2 {
        // The relay listens on (and so sends from) the node's advertise address, as VXLAN does.
        let ss = c.nodes[i].exec(&["ss", "-Huln", "sport", "= :4790"]).stdout;
        assert!(ss.contains(&format!("{}:4790", c.nodes[i].ip)), "node {i}: {ss}");
        let info = c.nodes[i].shoal(&["info"]).ok().stdout;
        assert!(
            info.contains(" Encrypted Overlay:\n  Tunnel Address: 198.18.") && info.contains("  Peers: 1 (1 with a key)\n"),
            "node {i}: {info}"
        );
    }
    let secret_cap = dir.join("secret.pcap");
    let cap = Capture::start(&dev, &secret_cap);
    fetch(&c, "web-secret");
    cap.stop();
    let plain_cap = dir.join("plain.pcap");
    let cap = Capture::start(&dev, &plain_cap);
    fetch(&c, "web-plain");
    cap.stop();

    let raw_secret = std::fs::read(&secret_cap).unwrap();
    let raw_plain = std::fs::read(&plain_cap).unwrap();
    let holds_page = |raw: &[u8]| raw.windows(page.len()).any(|w| w == page.as_bytes());
    // The plain network shows its VXLAN and the page on the wire: the check can fail.
    assert!(count(&plain_cap, "udp port 4789") > 0, "plain VXLAN on the bridge");
    assert!(holds_page(&raw_plain), "the plain page on the bridge");
    // The encrypted one shows neither: only sealed frames between the relays.
    assert_eq!(count(&secret_cap, "udp port 4789"), 0, "no VXLAN on the bridge for the encrypted network");
    assert!(!holds_page(&raw_secret), "the page's bytes crossed the bridge in the clear");
    assert!(count(&secret_cap, "udp port 4790") >= 4, "the fetch went through the tunnel relays");

    // Frames from the worker's relay to the manager's, sent again from the worker's namespace as they
    // were (replays) and under a new counter (forgeries): the manager's relay drops both.
    let from_worker = frames_from(&c, 1, &secret_cap, &dir.join("from-worker.pcap"));
    let frames = from_worker;
    assert!(frames.len() >= 2, "{} frames from the worker", frames.len());
    let before = tunnel_counts(&c, 0).expect("shoal info shows the manager's relay");
    let replays: Vec<Vec<u8>> = frames.iter().take(3).cloned().collect();
    // Forgeries: the frames under counters never used (the header's bytes 5..13), so the replay window
    // lets them through to the authentication check, which fails (the header is authenticated).
    let forgeries: Vec<Vec<u8>> = replays
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut bad = f.clone();
            let counter = u64::from_le_bytes(bad[5..13].try_into().unwrap());
            bad[5..13].copy_from_slice(&(counter + 1_000_000 + i as u64).to_le_bytes());
            bad
        })
        .collect();
    send_frames(&c, 1, 0, &replays, &dir, "replay");
    send_frames(&c, 1, 0, &forgeries, &dir, "forged");
    let sent = frames.len().min(3) as u64;
    wait_for_seen("the manager's relay to count the replays and forgeries", CONVERGE, || {
        let now = tunnel_counts(&c, 0).ok_or("no counts")?;
        let (replayed, tampered) =
            (counted(&now, "replayed") - counted(&before, "replayed"), counted(&now, "tampered") - counted(&before, "tampered"));
        if replayed == sent && tampered == sent {
            Ok(())
        } else {
            Err(format!("{replayed} replayed and {tampered} tampered counted of {sent} each: {now:?}"))
        }
    });
    // Still fine for real traffic.
    fetch(&c, "web-secret");

    // A slow stream from the manager across several of its rotations (one every 3 s): every line
    // arrives on one connection, and the worker's relay never meets a frame under a key it does not hold.
    let rotations_before = c.nodes[0].log().matches("tunnel key replaced").count();
    let before = tunnel_counts(&c, 1).expect("shoal info shows the worker's relay");
    let server = task_pid(&c, 0, "web-secret");
    let mut listener = Command::new("timeout")
        .args(["60", "nsenter", "-t", &server, "-m", "-n", "--", "sh", "-c"])
        // The lines are written only once the client is connected (`-e`): piped into nc, they
        // queued while the client was still starting and then crossed in a few packets.
        .arg("busybox nc -l -p 9000 -e sh -c 'i=0; while [ $i -lt 30 ]; do echo line-$i; sleep 0.5; i=$((i+1)); done'")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, out) = wait_for_seen("the stream's listener", CONVERGE, || {
        // stdin stays open (nc closes the connection at its end); the pipeline ends after 20 s.
        let (code, out) = in_task(&client, 40, &["sh", "-c", "sleep 20 | busybox nc web-secret 9000"]);
        if out.contains("line-0") {
            Ok((code, out))
        } else {
            Err(format!("exit {code}: {out}"))
        }
    });
    let _ = listener.kill();
    let _ = listener.wait();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line-")).collect();
    assert_eq!(lines.len(), 30, "exit {code}: every line over one connection: {out}");
    let rotations = c.nodes[0].log().matches("tunnel key replaced").count() - rotations_before;
    assert!(rotations >= 3, "{rotations} rotations during a 15 s stream");
    let after = tunnel_counts(&c, 1).expect("counts");
    let opened_during_stream = counted(&after, "opened") - counted(&before, "opened");
    assert!(opened_during_stream > 30, "the stream went through the worker's relay: {before:?} -> {after:?}");
    assert_eq!(
        counted(&after, "with an unknown key"),
        counted(&before, "with an unknown key"),
        "frames under keys the worker did not hold: {before:?} -> {after:?}"
    );

    // Each daemon dies (kill -9) and comes back in turn, in the middle of a stream between the tasks: the
    // connection lives on and every line arrives (the relay comes back with a new key, announced and
    // passed on, and its TUN device made again), and new connections work again with no manual step.
    for (i, port) in [(1usize, "9001"), (0, "9002")] {
        let server = task_pid(&c, 0, "web-secret");
        let mut listener = Command::new("timeout")
            .args(["60", "nsenter", "-t", &server, "-m", "-n", "--", "sh", "-c"])
            .arg(format!("i=0; while [ $i -lt 24 ]; do echo line-$i; sleep 0.5; i=$((i+1)); done | busybox nc -l -p {port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_seen(&format!("the stream's listener on port {port}"), CONVERGE, || {
            // The host's `ss` in the task's network namespace (the task's own /proc is its pid namespace's).
            let out = Command::new("nsenter").args(["-t", &server, "-n", "--", "ss", "-ltn"]).output().map_err(|e| e.to_string())?;
            let out = String::from_utf8_lossy(&out.stdout).to_string();
            if out.contains(&format!(":{port} ")) {
                Ok(())
            } else {
                Err(out)
            }
        });
        let (pid, cmd) = (client.clone(), format!("sleep 16 | busybox nc web-secret {port}"));
        let reader = std::thread::spawn(move || in_task(&pid, 40, &["sh", "-c", &cmd]));
        std::thread::sleep(Duration::from_secs(3));
        c.nodes[i].kill();
        if i == 0 {
            c.nodes[0].start_env(&[("SHOAL_TEST_TUNNEL_ROTATE_MS", ROTATE_MS)]);
        } else {
            c.nodes[i].start();
        }
        let t = std::time::Instant::now();
        fetch(&c, "web-secret");
        println!("encrypted fetch works again {:.1} s after node {i}'s daemon restarted", t.elapsed().as_secs_f64());
        let (code, out) = reader.join().unwrap();
        let _ = listener.kill();
        let _ = listener.wait();
        let lines = out.lines().filter(|l| l.starts_with("line-")).count();
        assert_eq!(lines, 24, "node {i}'s daemon restarted mid-stream: every line on the one connection (exit {code}): {out}");
    }

    // The worker leaves and is removed from the swarm: the manager forgets its key and replaces its own
    // at once, and frames the worker sealed just before are dropped from then on.
    let last = dir.join("last.pcap");
    let cap = Capture::start(&dev, &last);
    fetch(&c, "web-secret");
    cap.stop();
    let frames = frames_from(&c, 1, &last, &dir.join("last-from-worker.pcap"));
    assert!(!frames.is_empty(), "frames from the worker");
    let rotations_before = c.nodes[0].log().matches("tunnel key replaced").count();
    c.nodes[1].shoal(&["swarm", "leave", "--force"]).ok();
    c.nodes[0].shoal(&["node", "rm", "--force", &worker]).ok();
    wait_for_seen("the manager to forget the removed worker's relay", CONVERGE, || {
        let info = c.nodes[0].shoal(&["info"]).stdout;
        if info.contains("  Peers: 0 (0 with a key)\n") {
            Ok(())
        } else {
            Err(info)
        }
    });
    assert!(c.nodes[0].log().contains(&format!("tunnel peer(s) {worker} left")), "{}", c.nodes[0].log_tail(20));
    assert!(c.nodes[0].log().matches("tunnel key replaced").count() > rotations_before, "the manager's key was replaced");
    let before = tunnel_counts(&c, 0).expect("counts");
    send_frames(&c, 1, 0, &frames, &dir, "removed");
    wait_for_seen("the removed worker's frames to be dropped and counted", CONVERGE, || {
        let now = tunnel_counts(&c, 0).ok_or("no counts")?;
        let dropped = counted(&now, "from unknown senders") - counted(&before, "from unknown senders");
        if dropped == frames.len() as u64 && counted(&now, "opened") == counted(&before, "opened") {
            Ok(())
        } else {
            Err(format!("{dropped} of {} dropped: {before:?} -> {now:?}", frames.len()))
        }
    });
}
