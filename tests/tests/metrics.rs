//! `shoal daemon --metrics-addr` (issue #18): Prometheus' own Python
//! parser (Debian's python3-prometheus-client) reads the text, and the
//! counters move as the swarm works.

use shoal_tests::{skip_reason, wait_for, Node};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// One HTTP GET: (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP reply");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// Every sample as `name{labels}` -> value, as the reference parser reads it.
fn parse(text: &str) -> Option<BTreeMap<String, f64>> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
                  for f in p(sys.stdin.read()):\n    for s in f.samples:\n        \
                  l=','.join('%s=%s' % kv for kv in sorted(s.labels.items()))\n        print('%s{%s} %r' % (s.name, l, s.value))\n";
    let mut child = match Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("python3 is needed to check the metrics format: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'prometheus_client'") {
        assert_ne!(std::env::var("SHOAL_REQUIRE_TOOLS").as_deref(), Ok("1"), "python3-prometheus-client is required (targets/setup.sh)");
        eprintln!("SKIP: python3-prometheus-client is missing (targets/setup.sh)");
        return None;
    }
    assert!(out.status.success(), "the Prometheus parser refused the text: {err}\n{text}");
    let mut samples = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (k, v) = line.rsplit_once(' ').unwrap();
        samples.insert(k.to_string(), v.parse::<f64>().unwrap());
    }
    Some(samples)
}

#[test]
fn metrics_parse_and_move() {
    if skip_reason().is_some() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut n = Node::new();
    n.start_daemon_with(&["--metrics-addr", &addr], &[]);
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    n.shoal(&["image", "load", "-i", shoal_tests::test_image().to_str().unwrap()]).ok();

    let (status, body) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let Some(before) = parse(&body) else { return };
    assert_eq!(before.get("shoal_raft_is_leader{}"), Some(&1.0), "{before:?}");
    assert_eq!(before.get("shoal_nodes{availability=active,status=ready}"), Some(&1.0), "{before:?}");
    assert!(before.get("shoal_raft_leader_changes_total{}").is_some_and(|v| *v >= 1.0), "{before:?}");

    n.shoal(&["service", "create", "--name", "web", "--replicas", "2", "shoal.test/busybox", "sleep", "1000"]).ok();
    let after = wait_for("two running tasks in the metrics", WAIT, || {
        let m = parse(&get(&addr, "/metrics").1)?;
        (m.get("shoal_tasks{state=running}") == Some(&2.0) && m.get("shoal_node_containers{state=running}") == Some(&2.0)).then_some(m)
    });
    let grew = |k: &str| after.get(k).copied().unwrap_or(0.0) > before.get(k).copied().unwrap_or(0.0);
    for k in [
        "shoal_raft_applied_index{}",
        "shoal_raft_commit_index{}",
        "shoal_raft_proposal_seconds_count{}",
        "shoal_scheduler_pass_seconds_count{}",
    ] {
        assert!(grew(k), "{k} did not move: {:?} -> {:?}", before.get(k), after.get(k));
    }
    assert!(after["shoal_raft_proposal_seconds_bucket{le=+Inf}"] >= after["shoal_raft_proposal_seconds_bucket{le=0.001}"]);

    // Anything but GET /metrics is refused; a slow or silent client is dropped.
    assert_eq!(get(&addr, "/").0, "HTTP/1.1 404 Not Found");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"BREW /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request"), "{reply}");
    // The daemon answers its CLI all along.
    n.shoal(&["service", "ls"]).ok();

    // A port in use fails the start with the flag named.
    let other = Node::new();
    let mut cmd = other.daemon_command();
    let out = cmd.args(["--metrics-addr", &addr]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen for metrics on {addr}")) && err.contains("--metrics-addr"), "{err}");
}
