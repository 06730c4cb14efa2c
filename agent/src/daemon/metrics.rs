//! `shoal daemon --metrics-addr ADDR`: the node's metrics in Prometheus'
//! text format (version 0.0.4) at `GET /metrics`.
//!
//! Owns: the counters and histograms the loop keeps ([`Metrics`]), the text
//! rendering ([`render`], pure), and the HTTP listener ([`serve`]): one
//! request per connection, read within [`REQUEST_READ_MS`] and at most
//! [`REQUEST_BYTES_MAX`], answered from the loop within [`REPLY_WAIT_MS`].
//! Cluster gauges (nodes, tasks) and raft's indexes come from a manager's
//! replica of the state; a worker shows its own gauges only. Timings are
//! wall-clock measurements of the shell (never decisions).

use super::Event;
use async_channel::Sender;
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Longest request read (a scraper's GET is a few hundred bytes).
pub(crate) const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Time a scraper has to send its request.
pub(crate) const REQUEST_READ_MS: u64 = 5_000;
/// Time the loop has to render the text.
pub(crate) const REPLY_WAIT_MS: u64 = 5_000;
/// Proposals whose commit is still awaited, at most (older ones are dropped).
const PROPOSALS_TRACKED_MAX: usize = 4_096;
/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A Prometheus histogram over [`BUCKETS_S`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS_S.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum_s += s;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in BUCKETS_S.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum_s, self.count);
    }
}

/// What the loop measures as it runs.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Raft leader changes this node saw (including to "no leader").
    pub(crate) leader_changes: u64,
    /// Proposals awaiting their index's application: (index, when proposed).
    proposed: VecDeque<(u64, Instant)>,
    /// Proposal to application on this node.
    pub(crate) proposal: Histogram,
    /// One orchestrator + scheduler pass on the leader.
    pub(crate) pass: Histogram,
}

impl Metrics {
    pub(crate) fn proposed(&mut self, index: u64) {
        if self.proposed.len() == PROPOSALS_TRACKED_MAX {
            self.proposed.pop_front();
        }
        self.proposed.push_back((index, Instant::now()));
    }

    /// Every tracked proposal at or below `applied` is done.
    pub(crate) fn applied(&mut self, applied: u64) {
        while let Some((index, at)) = self.proposed.front().copied() {
            if index > applied {
                break;
            }
            self.proposed.pop_front();
            self.proposal.observe(at.elapsed());
        }
    }
}

/// A snapshot of what the text shows, gathered by the loop.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) node_id: String,
    pub(crate) version: &'static str,
    /// Whether this node holds the cluster state (a manager).
    pub(crate) manager: bool,
    pub(crate) is_leader: bool,
    pub(crate) term: u64,
    pub(crate) commit_index: u64,
    pub(crate) applied_index: u64,
    /// Nodes by (status, availability).
    pub(crate) nodes: BTreeMap<(String, String), u64>,
    /// Tasks by state (cluster-wide, on managers).
    pub(crate) tasks: BTreeMap<String, u64>,
    /// Worker sessions on this node's dispatcher (the leader's).
    pub(crate) sessions: u64,
    /// This node's task containers, by state.
    pub(crate) containers: BTreeMap<String, u64>,
}

/// A label value escaped as the format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics text.
pub(crate) fn render(s: &Snapshot, m: &Metrics) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, rows: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    gauge(
        &mut out,
        "shoal_build_info",
        "Shoal's version and this node's id.",
        "gauge",
        &[(format!("{{version=\"{}\",node_id=\"{}\"}}", label(s.version), label(&s.node_id)), 1)],
    );
    let link = crate::net::link_bytes();
    gauge(
        &mut out,
        "shoal_swarm_link_sent_bytes_total",
        "Bytes written to swarm links (Noise, encrypted).",
        "counter",
        &[(String::new(), link.0)],
    );
    gauge(&mut out, "shoal_swarm_link_received_bytes_total", "Bytes read from swarm links.", "counter", &[(String::new(), link.1)]);
    let local: Vec<(String, u64)> = s.containers.iter().map(|(k, v)| (format!("{{state=\"{}\"}}", label(k)), *v)).collect();
    gauge(&mut out, "shoal_node_containers", "This node's task containers in containerd, by state.", "gauge", &local);
    if !s.manager {
        return out;
    }
    gauge(&mut out, "shoal_raft_is_leader", "1 on the raft leader.", "gauge", &[(String::new(), u64::from(s.is_leader))]);
    gauge(&mut out, "shoal_raft_term", "This replica's raft term.", "gauge", &[(String::new(), s.term)]);
    gauge(&mut out, "shoal_raft_commit_index", "Highest log index known committed.", "gauge", &[(String::new(), s.commit_index)]);
    gauge(&mut out, "shoal_raft_applied_index", "Highest log index applied to the state.", "gauge", &[(String::new(), s.applied_index)]);
    gauge(
        &mut out,
        "shoal_raft_leader_changes_total",
        "Leader changes seen by this replica.",
        "counter",
        &[(String::new(), m.leader_changes)],
    );
    m.proposal.render(&mut out, "shoal_raft_proposal_seconds", "Time from a proposal on this node to its application here.");
    let nodes: Vec<(String, u64)> =
        s.nodes.iter().map(|((st, av), n)| (format!("{{status=\"{}\",availability=\"{}\"}}", label(st), label(av)), *n)).collect();
    gauge(&mut out, "shoal_nodes", "Nodes in the swarm by status and availability.", "gauge", &nodes);
    let tasks: Vec<(String, u64)> = s.tasks.iter().map(|(k, v)| (format!("{{state=\"{}\"}}", label(k)), *v)).collect();
    gauge(&mut out, "shoal_tasks", "Tasks in the swarm by observed state.", "gauge", &tasks);
    gauge(
        &mut out,
        "shoal_dispatcher_sessions",
        "Worker sessions on this node's dispatcher (the leader's).",
        "gauge",
        &[(String::new(), s.sessions)],
    );
    m.pass.render(&mut out, "shoal_scheduler_pass_seconds", "One orchestrator and scheduler pass on the leader.");
    out
}

/// Accepts scrapes until the loop is gone.
pub(crate) async fn serve(listener: Async<TcpListener>, tx: Sender<Event>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let tx = tx.clone();
        smol::spawn(async move {
            let _ = one(stream, tx).await;
        })
        .detach();
    }
}

async fn within<T>(ms: u64, f: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        Timer::after(Duration::from_millis(ms)).await;
        None
    })
    .await
}

/// One request: `GET /metrics` gets the text, anything else a 404 or 400.
async fn one(mut stream: Async<TcpStream>, tx: Sender<Event>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = within(REQUEST_READ_MS, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < REQUEST_BYTES_MAX {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    let (status, body) = match read {
        Some(true) => {
            let line = String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned();
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
                    let (reply, text) = async_channel::bounded(1);
                    if tx.send(Event::Metrics { reply }).await.is_err() {
                        return Ok(());
                    }
                    match within(REPLY_WAIT_MS, text.recv()).await {
                        Some(Ok(t)) => ("200 OK", t),
                        _ => ("503 Service Unavailable", format!("the daemon did not answer within {REPLY_WAIT_MS} ms\n")),
                    }
                }
                (Some("GET"), Some(_)) => ("404 Not Found", "metrics are at /metrics\n".to_string()),
                _ => ("400 Bad Request", "send GET /metrics\n".to_string()),
            }
        }
        _ => return Ok(()), // too slow, too long or closed: dropped
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = within(REQUEST_READ_MS, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.flush().await
    })
    .await;
    Ok(())
}

/// Binds the metrics listener.
pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<Async<TcpListener>> {
    Async::<TcpListener>::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e} (--metrics-addr)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_text_is_well_formed() {
        let mut m = Metrics::default();
        m.proposal.observe(Duration::from_micros(300));
        m.proposal.observe(Duration::from_millis(20));
        m.proposal.observe(Duration::from_secs(30));
        // Tracked proposals observe real elapsed time (slow under QEMU): only
        // their count is checked, on a histogram of their own.
        let mut tracked = Metrics::default();
        tracked.proposed(5);
        tracked.proposed(7);
        tracked.applied(6);
        assert_eq!(tracked.proposal.count, 1, "index 5 applied, 7 not yet");
        tracked.applied(7);
        assert_eq!(tracked.proposal.count, 2);
        m.leader_changes = 2;
        let mut s = Snapshot { node_id: "n\"1".into(), version: "0.1.0", manager: true, term: 3, ..Snapshot::default() };
        s.nodes.insert(("ready".into(), "active".into()), 2);
        s.tasks.insert("running".into(), 5);
        let t = render(&s, &m);
        assert!(t.contains("shoal_build_info{version=\"0.1.0\",node_id=\"n\\\"1\"} 1\n"), "{t}");
        assert!(t.contains("shoal_raft_proposal_seconds_bucket{le=\"0.0005\"} 1\n"), "{t}");
        assert!(t.contains("shoal_raft_proposal_seconds_bucket{le=\"0.025\"} 2\n"), "{t}");
        assert!(t.contains("shoal_raft_proposal_seconds_bucket{le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("shoal_nodes{status=\"ready\",availability=\"active\"} 2\n"), "{t}");
        assert!(t.contains("shoal_raft_leader_changes_total 2\n") && t.contains("shoal_raft_term 3\n"), "{t}");
        // Every sample line belongs to a family announced by # TYPE.
        let mut typed = std::collections::BTreeSet::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                assert!(typed.contains(family) || typed.contains(name), "{line}");
            }
        }
        let worker = render(&Snapshot { manager: false, ..s }, &m);
        assert!(!worker.contains("shoal_raft_term"), "a worker holds no raft state");
    }
}
