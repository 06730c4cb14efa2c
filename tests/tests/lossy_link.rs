//! Link profiles (issue #14, flaky links), with real processes in network
//! namespaces: `swarm update --link-profile edge` reaches every node (the
//! worker from its leader), and with it 30 % packet loss plus 250 ms added
//! delay in both directions of every link causes no leader change and no
//! Down node while writes still commit. Each packet crosses one INPUT: every
//! node's filter INPUT drops TCP with `iptables -m statistic --mode random
//! --probability 0.3`, and the survivors are held for the delay by an
//! NFQUEUE queue on its security INPUT (`shoal_tests::delayq`; this kernel
//! has no `netem`).
//!
//! CI runs `SHOAL_LOSSY_S` (default 40) seconds of loss and delay;
//! `targets/lossy-bench.sh` runs 30 minutes and prints the same figures.
//! `SHOAL_DELAY_MS` (default 250) sets the delay each way.
//! `delay_queue_delays_each_direction` proves the queue itself: TCP round
//! trips between two namespaces take at least twice the delay with it.

use shoal_tests::cluster::{Cluster, ClusterNode};
use shoal_tests::delayq::{self, DelayQueue};
use shoal_tests::{wait_for, wait_for_seen};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(60);
/// Packet loss in each direction, as iptables' `statistic` probability.
const LOSS_PROBABILITY: &str = "0.3";
/// Pause between two writes during the loss.
const WRITE_EVERY: Duration = Duration::from_secs(3);

fn loss_seconds() -> u64 {
    std::env::var("SHOAL_LOSSY_S").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
}

/// Added delay each way (`SHOAL_DELAY_MS`, default 250).
fn delay() -> Duration {
    Duration::from_millis(std::env::var("SHOAL_DELAY_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(250))
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

/// Milliseconds since the epoch of a daemon log line's leading RFC 3339 UTC
/// time (`2025-01-02T03:04:05.678Z ...`); `None` for any other line.
fn log_time_ms(line: &str) -> Option<i64> {
    let t = line.get(..24)?;
    let num = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    if t.as_bytes().get(23) != Some(&b'Z') {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 24 + num(11, 13)?) * 60 + num(14, 16)?) * 60_000 + num(17, 19)? * 1000 + num(20, 23)?)
}

/// The longest time, in ms, with no leader in the log lines `logs` (every
/// node's lines since `start_ms`): from a leader's "no longer the swarm
/// leader" to the next "now the swarm leader" of any node (or `end_ms`).
fn longest_leaderless_ms(logs: &[String], start_ms: i64, end_ms: i64) -> i64 {
    let mut events: Vec<(i64, bool)> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter_map(|l| {
            let gained = l.contains("this node is now the swarm leader");
            let lost = l.contains("this node is no longer the swarm leader");
            (gained || lost).then(|| log_time_ms(l).map(|t| (t, gained))).flatten()
        })
        .filter(|&(t, _)| t >= start_ms)
        .collect();
    events.sort_unstable();
    let (mut longest, mut lost_at) = (0, None);
    for (t, gained) in events {
        match (gained, lost_at) {
            (true, Some(l)) => {
                longest = longest.max(t - l);
                lost_at = None;
            }
            (false, None) => lost_at = Some(t),
            _ => {}
        }
    }
    lost_at.map_or(longest, |l| longest.max(end_ms - l))
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn percentile(sorted_ms: &[u128], p: usize) -> u128 {
    if sorted_ms.is_empty() {
        return 0;
    }
    sorted_ms[(sorted_ms.len() * p / 100).min(sorted_ms.len() - 1)]
}

#[test]
fn edge_profile_rides_out_loss_and_delay() {
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
    let start_ms = unix_ms();
    // The queue (security INPUT) sees only what the loss rule (filter INPUT) let through.
    let queues: Vec<DelayQueue> = c.nodes.iter().map(|n| DelayQueue::on_input(n, delay())).collect();
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
    let held: Vec<delayq::Stats> = queues.into_iter().map(DelayQueue::stop).collect();
    let end_ms = unix_ms();
    let leader_changes = count(&c, "this node is now the swarm leader") - leaders_before;
    let downs = count(&c, "is down: no link") - downs_before;
    let logs: Vec<String> = c.nodes.iter().map(ClusterNode::log).collect();
    let leaderless_ms = longest_leaderless_ms(&logs, start_ms, end_ms);
    commit_ms.sort_unstable();
    println!(
        "lossy_link: {} s of {LOSS_PROBABILITY} loss and {} ms delay each way, edge profile: {leader_changes} leader changes, \
         longest leaderless gap {leaderless_ms} ms, {downs} Down flaps, {} writes committed (p50 {} ms, p99 {} ms), {} writes failed; \
         idle worker's swarm traffic {lan_idle_bytes_per_s:.0} bytes/s on lan, {edge_idle_bytes_per_s:.0} on edge; \
         {} packets delayed, {} past the queue's cap",
        loss_seconds(),
        delay().as_millis(),
        commit_ms.len(),
        percentile(&commit_ms, 50),
        percentile(&commit_ms, 99),
        failed.len(),
        held.iter().map(|s| s.delayed).sum::<u64>(),
        held.iter().map(|s| s.overflowed).sum::<u64>(),
    );
    assert!(held.iter().all(|s| s.delayed > 0), "a node's queue delayed nothing: {held:?}");
    assert!(failed.is_empty(), "writes failed under loss and delay: {failed:#?}");
    assert_eq!(leader_changes, 0, "leader changes under loss and delay: {}", c.nodes[0].log_tail(30));
    assert_eq!(downs, 0, "a node was marked Down under loss and delay: {}", c.nodes[0].log_tail(30));
    // The last write is in the worker's record.
    let inspect = wait_for("the worker's record", WAIT, || {
        let r = c.nodes[0].shoal(&["node", "inspect", &worker]);
        (r.code == 0).then_some(r.stdout)
    });
    assert!(inspect.contains(&format!("\"tick\": \"{n}\"")), "{inspect}");
}

/// Port of the echo server in [`delay_queue_delays_each_direction`].
const ECHO_PORT: u16 = 7777;
/// Delay used to prove the queue.
const PROOF_DELAY: Duration = Duration::from_millis(200);
/// Timer granularity allowed below the delay (the queue holds by the monotonic clock).
const SLACK: Duration = Duration::from_millis(10);

/// Echoes every connection to `ip:ECHO_PORT` in namespace `netns`, on a
/// thread that stops after `conns` connections or `limit`.
fn echo_server(netns: &str, ip: &str, conns: usize, limit: Duration) -> std::thread::JoinHandle<()> {
    let addr: SocketAddr = format!("{ip}:{ECHO_PORT}").parse().expect("address");
    let path = PathBuf::from("/run/netns").join(netns);
    let l = shoal_netlink::netns::run_in(&path, 5_000, move || TcpListener::bind(addr)).expect("enter namespace").expect("listen");
    l.set_nonblocking(true).expect("nonblocking listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut served = 0;
        while served < conns && Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            s.set_nonblocking(false).ok();
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut b = [0u8; 4];
            if s.read_exact(&mut b).is_ok() {
                s.write_all(&b).ok();
            }
        }
    })
}

/// From namespace `netns`: connect to `ip:ECHO_PORT` and echo 4 bytes;
/// returns (connect time, echo round trip).
fn round_trip(netns: &str, ip: &str) -> (Duration, Duration) {
    let addr: SocketAddr = format!("{ip}:{ECHO_PORT}").parse().expect("address");
    let path = PathBuf::from("/run/netns").join(netns);
    shoal_netlink::netns::run_in(&path, 30_000, move || -> std::io::Result<(Duration, Duration)> {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        let connect = t.elapsed();
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let t = Instant::now();
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        assert_eq!(&b, b"ping");
        Ok((connect, t.elapsed()))
    })
    .expect("enter namespace")
    .expect("tcp round trip")
}

#[test]
fn delay_queue_delays_each_direction() {
    let Some(c) = Cluster::new(2) else { return };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let server = echo_server(&b.netns, &b.ip, 4, Duration::from_secs(60));
    let off = round_trip(&a.netns, &b.ip);
    // The rule with nothing bound to the queue: --queue-bypass lets packets through.
    let rule = delayq::input_rule();
    let mut add = vec!["iptables", "-t", "security", "-A", "INPUT"];
    add.extend(rule.iter().map(String::as_str));
    for n in [a, b] {
        n.exec(&add).ok();
    }
    let bypass = round_trip(&a.netns, &b.ip);
    let mut del = add.clone();
    del[3] = "-D";
    for n in [a, b] {
        n.exec(&del).ok();
    }
    let queues = [DelayQueue::on_input(a, PROOF_DELAY), DelayQueue::on_input(b, PROOF_DELAY)];
    let on = round_trip(&a.netns, &b.ip);
    let held: Vec<delayq::Stats> = queues.into_iter().map(DelayQueue::stop).collect();
    let after = round_trip(&a.netns, &b.ip);
    server.join().expect("echo server");
    println!(
        "delayq: {PROOF_DELAY:?} each way: connect {:?} / echo {:?} with the queue, {:?} / {:?} without, {:?} / {:?} bypassed, \
         {:?} / {:?} after; {held:?}",
        on.0, on.1, off.0, off.1, bypass.0, bypass.1, after.0, after.1
    );
    // SYN and SYN-ACK, then data and echo: each crosses one queue.
    assert!(on.0 >= 2 * PROOF_DELAY - SLACK, "connect took {:?} with {PROOF_DELAY:?} each way", on.0);
    assert!(on.1 >= 2 * PROOF_DELAY - SLACK, "echo took {:?} with {PROOF_DELAY:?} each way", on.1);
    assert!(held.iter().all(|s| s.delayed >= 2 && s.overflowed == 0 && s.malformed == 0 && s.errors == 0), "{held:?}");
    // Stopped, the queue lets traffic through again and its rule is gone.
    for n in [a, b] {
        let rules = n.exec(&["iptables", "-t", "security", "-S", "INPUT"]).ok().stdout;
        assert!(!rules.contains("NFQUEUE"), "{rules}");
    }
}
