//! Multi-node clusters for integration tests: several real `shoal daemon`
//! processes on this machine, each in its own network namespace (made by
//! `tests/lib/netns.sh`: one private bridge, node `i` of the cluster is
//! namespace `PREFIX-(i+1)` with address `10.X.0.(i+1)`), each with its own
//! private containerd (started like [`crate::Node`]'s, in the root network
//! namespace: only the shoal daemon runs inside the node's namespace).
//!
//! This module owns the cluster's lifetime: [`Cluster`]'s drop SIGKILLs every
//! daemon, stops every containerd and removes the namespaces and the bridge,
//! even when the test panicked midway; on panic it keeps the scratch dirs and
//! prints the tail of every node's daemon log.
//!
//! Node indices in this API are 0-based (`cluster.nodes[0]`); the namespaces
//! and addresses are numbered from 1, as `netns.sh` numbers them.
//!
//! Partitions are iptables DROP rules inside a node's namespace (see
//! `netns.sh`): packets vanish silently, as with a pulled cable, so TCP peers
//! see timeouts rather than resets.

use crate::{root, shoal_bin, skip_reason, test_image, wait_for, Run};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer `shoal version` after being spawned.
pub const DAEMON_START_TIMEOUT_S: u64 = 15;
/// How long a daemon may take to exit after SIGTERM.
pub const DAEMON_STOP_TIMEOUT_S: u64 = 10;
/// How long a daemon may take to be reaped after SIGKILL.
pub const DAEMON_KILL_TIMEOUT_S: u64 = 5;
/// Bound on one command run inside a node's namespace ([`ClusterNode::exec`]).
pub const NETNS_EXEC_TIMEOUT_S: u64 = 10;
/// How long every joined node may take to show up in the first manager's `node ls`.
pub const CLUSTER_JOIN_TIMEOUT_S: u64 = 30;
/// Lines of each daemon log printed when a test panics.
pub const LOG_TAIL_LINES: usize = 60;
/// Most nodes one cluster may have (`netns.sh` numbers addresses 1..=99).
pub const MAX_NODES: usize = 99;
/// The swarm (raft and dispatcher) port every daemon advertises.
pub const SWARM_PORT: u16 = 2377;

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

fn netns_sh() -> PathBuf {
    root().join("tests/lib/netns.sh")
}

/// Runs `netns.sh ARGS`; panics with its stderr on failure, returns its stdout.
fn netns(args: &[&str]) -> String {
    let out = Command::new(netns_sh()).args(args).stdin(Stdio::null()).output().expect("run tests/lib/netns.sh");
    assert!(out.status.success(), "netns.sh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// A reason to skip when network namespaces cannot be used here (after
/// [`skip_reason`]); panics instead under `SHOAL_REQUIRE_CONTAINERD=1`.
pub fn netns_skip_reason() -> Option<String> {
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    };
    let reason = if !works("ip", &["netns", "list"]) {
        Some("`ip netns` is unavailable".to_string())
    } else if !works("iptables", &["-V"]) {
        Some("iptables is not installed".to_string())
    } else {
        None
    };
    if let Some(r) = &reason {
        if std::env::var("SHOAL_REQUIRE_CONTAINERD").as_deref() == Ok("1") {
            panic!("cluster test prerequisites missing ({r}) and SHOAL_REQUIRE_CONTAINERD=1");
        }
        eprintln!("SKIP: {r}; cluster tests need iproute2 network namespaces and iptables");
    }
    reason
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a TCP connect from inside a namespace saw ([`ClusterNode::tcp_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpProbe {
    /// The connection was accepted.
    Connected,
    /// The peer answered with a reset (reachable, nothing listening) or the
    /// connect failed at once for another reason.
    Refused,
    /// No answer within the bound: packets are being dropped.
    TimedOut,
}

/// One node of a [`Cluster`]: a network namespace, a private containerd and
/// (once [`ClusterNode::start`]ed) a shoal daemon running inside the namespace.
pub struct ClusterNode {
    /// This node's address on the cluster's bridge (`10.X.0.N`).
    pub ip: String,
    /// The network namespace the daemon runs in (`PREFIX-N`).
    pub netns: String,
    /// Scratch dir: `ctrd/` (containerd), `data/`, `shoal.sock`, `daemon.log`.
    pub dir: PathBuf,
    /// containerd namespace for this node's containers (unique per node).
    pub namespace: String,
    prefix: String,
    /// 1-based, as `netns.sh` numbers nodes.
    number: usize,
    daemon: Option<Child>,
}

impl ClusterNode {
    /// This node's 0-based index in [`Cluster::nodes`].
    pub fn index(&self) -> usize {
        self.number - 1
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("shoal.sock")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("ctrd/containerd.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `IP:2377`, the address other nodes join.
    pub fn addr(&self) -> String {
        format!("{}:{SWARM_PORT}", self.ip)
    }

    /// The daemon's pid while it runs (with `ip netns exec`, ip execs the
    /// daemon, so this is the daemon itself, not a wrapper).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Whether a daemon was started and has not been reaped (it may have died).
    pub fn is_started(&self) -> bool {
        self.daemon.is_some()
    }

    /// Spawns `ip netns exec NS shoal daemon ...` (stderr appended to
    /// `DIR/daemon.log`) and waits until it answers `shoal version`.
    pub fn start(&mut self) {
        self.start_env(&[]);
    }

    /// [`ClusterNode::start`] with extra environment variables for the daemon.
    pub fn start_env(&mut self, env: &[(&str, &str)]) {
        self.start_with(env, &[]);
    }

    /// [`ClusterNode::start`] with extra environment variables and extra
    /// `shoal daemon` arguments (e.g. `--insecure-registry HOST:PORT`).
    pub fn start_with(&mut self, env: &[(&str, &str)], args: &[&str]) {
        self.start_wrapped(&[], env, args);
    }

    /// [`ClusterNode::start_with`] with the daemon run under `wrapper`
    /// (e.g. `unshare --time --kill-child --monotonic S --boottime S`, which
    /// must make the daemon die with it: [`ClusterNode::kill`] kills the wrapper).
    pub fn start_wrapped(&mut self, wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) {
        assert!(self.daemon.is_none(), "node {} ({}): daemon already started", self.index(), self.netns);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(wrapper)
            .arg(shoal_bin())
            .arg("daemon")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--socket")
            .arg(self.socket())
            .arg("--containerd")
            .arg(self.containerd_socket())
            .arg("--containerd-namespace")
            .arg(&self.namespace)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ip netns exec shoal daemon");
        self.daemon = Some(child);
        let what = format!("node {}'s daemon (in {}) to answer `shoal version`", self.index(), self.netns);
        wait_for(&what, Duration::from_secs(DAEMON_START_TIMEOUT_S), || {
            if let Some(status) = self.daemon.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("node {}'s daemon exited during start ({status}); log tail:\n{}", self.index(), self.log_tail(LOG_TAIL_LINES));
            }
            (self.shoal(&["version"]).code == 0).then_some(())
        });
    }

    /// SIGKILLs the daemon and reaps it (its containers keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let what = format!("node {}'s daemon to be reaped after SIGKILL", self.index());
            wait_for(&what, Duration::from_secs(DAEMON_KILL_TIMEOUT_S), || c.try_wait().ok().flatten());
        }
    }

    /// A power cut of this node and its boot up to containerd, as
    /// [`crate::Node::power_cycle`]: the daemon is SIGKILLed, every process
    /// of the node's containerd dies, its tmpfs state is gone, its root
    /// survives, containerd starts again. The daemon is the caller's to start.
    pub fn power_cycle(&mut self) {
        self.kill();
        crate::power_cycle_containerd(&self.dir.join("ctrd"));
    }

    /// SIGTERMs the daemon and waits (bounded) for it to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.daemon.take()?;
        let st = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -TERM {} failed", c.id());
        let what = format!("node {}'s daemon to exit after SIGTERM", self.index());
        let status = wait_for(&what, Duration::from_secs(DAEMON_STOP_TIMEOUT_S), || c.try_wait().ok().flatten());
        status.code()
    }

    /// Runs `shoal ARGS` against this node's daemon over its unix socket
    /// (the CLI runs in the root namespace; the socket is a file).
    pub fn shoal(&self, args: &[&str]) -> Run {
        let out = Command::new(shoal_bin())
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal");
        Run::from(out)
    }

    /// [`ClusterNode::shoal`] with `input` written to the CLI's stdin (a
    /// pipe, not a terminal: `swarm unlock` reads the key from it).
    pub fn shoal_stdin(&self, args: &[&str], input: &str) -> Run {
        crate::shoal_stdin_at(&self.socket(), args, input)
    }

    /// [`ClusterNode::shoal`] with extra environment variables for the CLI.
    pub fn shoal_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        crate::shoal_env_at(&self.socket(), args, env, "")
    }

    /// Replaces this node's data dir (its daemon stopped) with the contents
    /// of the tar `archive` (`shoal swarm backup`), extracted by GNU tar.
    pub fn restore_data_dir(&self, archive: &Path) {
        let dir = self.data_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let x = Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&dir).output().expect("run tar");
        assert!(x.status.success(), "tar -xf: {}", String::from_utf8_lossy(&x.stderr));
    }

    /// Runs `ARGS` inside this node's network namespace, bounded by
    /// [`NETNS_EXEC_TIMEOUT_S`] (exit code 124 when the bound hit).
    pub fn exec(&self, args: &[&str]) -> Run {
        let out = Command::new("timeout")
            .arg(NETNS_EXEC_TIMEOUT_S.to_string())
            .args(["ip", "netns", "exec", &self.netns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec");
        Run::from(out)
    }

    /// One ICMP echo from this node's namespace to `ip`, waiting at most 1 s
    /// (busybox ping, so it works without iputils).
    pub fn ping(&self, ip: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "1", ip]).code == 0
    }

    /// A TCP connect from this node's namespace to `ip:port`, bounded by
    /// `timeout_s` seconds (bash's `/dev/tcp`).
    pub fn tcp_probe(&self, ip: &str, port: u16, timeout_s: u64) -> TcpProbe {
        let script = format!("exec 3<>/dev/tcp/{ip}/{port}");
        let r = self.exec(&["timeout", &timeout_s.to_string(), "bash", "-c", &script]);
        match r.code {
            0 => TcpProbe::Connected,
            124 => TcpProbe::TimedOut,
            _ => TcpProbe::Refused,
        }
    }

    /// Isolates this node from every other (`netns.sh partition`).
    pub fn partition(&self) {
        netns(&["partition", &self.prefix, &self.number.to_string()]);
    }

    /// Undoes [`ClusterNode::partition`] (`netns.sh heal`).
    pub fn heal(&self) {
        netns(&["heal", &self.prefix, &self.number.to_string()]);
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The last `n` lines of the daemon's stderr.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// `(container id, pid)` of RUNNING tasks in this node's containerd, sorted.
    pub fn tasks_pids(&self) -> Vec<(String, String)> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.containerd_socket())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(["tasks", "ls"])
            .output()
            .expect("run ctr");
        let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[2] == "RUNNING").then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect();
        v.sort();
        v
    }

    /// RUNNING tasks in this node's containerd (its own namespace), as `ctr` sees them.
    pub fn running_tasks(&self) -> usize {
        self.tasks_pids().len()
    }

    /// Container ids (= task ids) of RUNNING tasks in this node's containerd, sorted.
    pub fn running_ids(&self) -> Vec<String> {
        self.tasks_pids().into_iter().map(|(id, _)| id).collect()
    }

    /// This node's node ID, from `shoal version`; `None` when the daemon
    /// does not answer.
    pub fn node_id(&self) -> Option<String> {
        // `shoal version` answers on workers too (they refuse `node inspect`).
        let r = self.shoal(&["version"]);
        if r.code != 0 {
            return None;
        }
        r.stdout.lines().find_map(|l| l.trim().strip_prefix("Node ID:")).map(|id| id.trim().to_string())
    }
}

/// A cluster of [`ClusterNode`]s on one private bridge; everything is torn
/// down on drop.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    /// The namespaces' common prefix (`PREFIX-1..N`).
    pub prefix: String,
    /// The cluster's /24 as its first three octets (`10.X.0`); the bridge is `.254`.
    pub subnet: String,
    dir: PathBuf,
    /// Node IDs learnt so far (index = node index), for [`Cluster::leader`].
    ids: RefCell<Vec<Option<String>>>,
}

impl Cluster {
    /// Creates `n` namespaces and starts `n` private containerds (daemons are
    /// started separately: [`Cluster::start_all`] or [`ClusterNode::start`]).
    /// `None` (with a printed reason) when root, containerd or network
    /// namespaces are missing, unless `SHOAL_REQUIRE_CONTAINERD=1`.
    pub fn new(n: usize) -> Option<Cluster> {
        assert!((1..=MAX_NODES).contains(&n), "a cluster has 1..={MAX_NODES} nodes, not {n}");
        if skip_reason().is_some() || netns_skip_reason().is_some() {
            return None;
        }
        let k = NEXT_CLUSTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("shc{pid}-{k}");
        let dir = PathBuf::from(format!("/tmp/shc-{pid}-{k}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster scratch dir");
        // From here on, drop cleans up whatever was made, even on panic.
        let mut cluster = Cluster {
            nodes: Vec::new(),
            prefix: prefix.clone(),
            subnet: String::new(),
            dir: dir.clone(),
            ids: RefCell::new(vec![None; n]),
        };
        let out = Command::new(netns_sh()).args(["setup", &prefix, &n.to_string()]).stdin(Stdio::null()).output().expect("run netns.sh");
        if !out.status.success() {
            let _ = Command::new(netns_sh()).args(["teardown", &prefix, &n.to_string()]).status();
            panic!("netns.sh setup {prefix} {n} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        cluster.subnet = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(cluster.subnet.starts_with("10.") && cluster.subnet.split('.').count() == 3, "netns.sh setup printed {:?}", cluster.subnet);
        for number in 1..=n {
            let node_dir = dir.join(format!("n{number}"));
            std::fs::create_dir_all(&node_dir).expect("node scratch dir");
            let sock = node_dir.join("shoal.sock");
            assert!(sock.as_os_str().len() < 100, "socket path {} is too long", sock.display());
            let node = ClusterNode {
                ip: format!("{}.{number}", cluster.subnet),
                netns: format!("{prefix}-{number}"),
                dir: node_dir,
                namespace: format!("shc-{pid}-{k}-{number}"),
                prefix: prefix.clone(),
                number,
                daemon: None,
            };
            // Pushed before containerd starts, so drop stops a half-started one.
            cluster.nodes.push(node);
            let node = cluster.nodes.last().expect("just pushed");
            let st = Command::new(root().join("tests/lib/containerd.sh"))
                .arg("start")
                .arg(node.dir.join("ctrd"))
                .status()
                .expect("run containerd.sh");
            assert!(st.success(), "containerd for node {} did not start", number - 1);
        }
        Some(cluster)
    }

    /// The cluster's scratch dir (`/tmp/shc-<pid>-<k>`, one `n<N>/` per node).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts every node's daemon (each waits until it answers).
    pub fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
    }

    /// Drops all traffic between nodes `i` and `j` only (0-based).
    pub fn block(&self, i: usize, j: usize) {
        netns(&["block", &self.prefix, &(i + 1).to_string(), &(j + 1).to_string()]);
    }

    /// Undoes [`Cluster::block`].
    pub fn unblock(&self, i: usize, j: usize) {
        netns(&["unblock", &self.prefix, &(i + 1).to_string(), &(j + 1).to_string()]);
    }

    /// Forms a swarm ([`Cluster::form`]) and loads the test image on every
    /// node of it ([`Cluster::load_test_image`]).
    pub fn init(&mut self, managers: usize, workers: usize) {
        self.form(managers, workers);
        for i in 0..managers + workers {
            self.load_test_image(i);
        }
    }

    /// Forms a swarm without loading images: node 0 runs `swarm init
    /// --advertise-addr <its ip>`, nodes `1..managers` join as managers and
    /// the next `workers` as workers ([`Cluster::join`]); waits (bounded)
    /// until node 0's `node ls` lists them all. Starts daemons that are not
    /// running.
    pub fn form(&mut self, managers: usize, workers: usize) {
        assert!(managers >= 1, "a swarm needs at least one manager");
        let total = managers + workers;
        assert!(total <= self.nodes.len(), "{managers} managers + {workers} workers > {} nodes", self.nodes.len());
        for node in self.nodes[..total].iter_mut().filter(|n| !n.is_started()) {
            node.start();
        }
        let first = &self.nodes[0];
        first.shoal(&["swarm", "init", "--advertise-addr", &first.ip]).ok();
        for i in 1..total {
            self.join_only(i, i < managers);
        }
        self.wait_listed(total);
        self.learn_ids();
    }

    /// Joins node `i` (its daemon running) to node 0's swarm as a manager or
    /// worker and waits (bounded) until node 0's `node ls` lists it; for nodes
    /// that come after [`Cluster::form`] (no image is loaded).
    pub fn join(&self, i: usize, manager: bool) {
        let before = self.listed_nodes();
        self.join_only(i, manager);
        self.wait_listed(before + 1);
        self.learn_ids();
    }

    /// `swarm join-token -q ROLE` on node 0, then `swarm join --token T
    /// --advertise-addr <ip> <node 0's ip>:2377` on node `i`.
    fn join_only(&self, i: usize, manager: bool) {
        let role = if manager { "manager" } else { "worker" };
        let token = self.nodes[0].shoal(&["swarm", "join-token", "-q", role]).ok().stdout.trim().to_string();
        let node = &self.nodes[i];
        node.shoal(&["swarm", "join", "--token", &token, "--advertise-addr", &node.ip, &self.nodes[0].addr()]).ok();
    }

    /// How many nodes node 0's `node ls` lists (0 when it does not answer).
    fn listed_nodes(&self) -> usize {
        let r = self.nodes[0].shoal(&["node", "ls", "-q"]);
        if r.code != 0 {
            return 0;
        }
        r.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    }

    fn wait_listed(&self, total: usize) {
        let what = format!("node 0's `node ls` to list all {total} nodes");
        wait_for(&what, Duration::from_secs(CLUSTER_JOIN_TIMEOUT_S), || (self.listed_nodes() == total).then_some(()));
    }

    /// Loads the test busybox image (`shoal.test/busybox:latest`, built for
    /// this machine's platform) into node `i` with `shoal image load`.
    pub fn load_test_image(&self, i: usize) {
        let img = test_image();
        self.nodes[i].shoal(&["image", "load", "-i", img.to_str().expect("utf-8 path")]).ok();
    }

    /// Asks every running daemon for its own node ID and remembers the answers.
    pub fn learn_ids(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_started() {
                if let Some(id) = node.node_id() {
                    self.ids.borrow_mut()[i] = Some(id);
                }
            }
        }
    }

    /// The node ID of node `i`, as last learnt (asks it when not known yet).
    pub fn node_id(&self, i: usize) -> Option<String> {
        if self.ids.borrow()[i].is_none() {
            let id = self.nodes[i].node_id();
            self.ids.borrow_mut()[i] = id;
        }
        self.ids.borrow()[i].clone()
    }

    /// The index of the leader as seen by the first running node that names
    /// one: its `node ls --format json` row with `"ManagerStatus": "Leader"`
    /// (the `"Self": true` row teaches the asked node's own ID). Rows are
    /// matched to nodes by node ID, not hostname: every namespace shares the
    /// host's UTS namespace, so all hostnames are equal. `None` when no node
    /// answers with a leader, or the leader's ID belongs to no known node.
    pub fn leader(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_started() {
                continue;
            }
            let r = node.shoal(&["node", "ls", "--format", "json"]);
            if r.code != 0 {
                continue;
            }
            let rows: Vec<serde_json::Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            let id_of = |row: &serde_json::Value| row.get("ID").and_then(|v| v.as_str()).map(str::to_string);
            if let Some(me) = rows.iter().find(|row| row.get("Self").and_then(|v| v.as_bool()) == Some(true)).and_then(id_of) {
                self.ids.borrow_mut()[i] = Some(me);
            }
            let Some(leader) = rows.iter().find(|row| row.get("ManagerStatus").and_then(|v| v.as_str()) == Some("Leader")).and_then(id_of)
            else {
                continue;
            };
            if let Some(k) = (0..self.nodes.len()).find(|&k| self.ids.borrow()[k].as_deref() == Some(leader.as_str())) {
                return Some(k);
            }
            // The leader is a node whose ID we have not learnt: ask them all.
            self.learn_ids();
            return (0..self.nodes.len()).find(|&k| self.ids.borrow()[k].as_deref() == Some(leader.as_str()));
        }
        None
    }

    /// Waits (bounded) until some node names a leader; returns its index.
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        wait_for("a node to name a swarm leader", timeout, || self.leader())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let started = Instant::now();
        for node in &mut self.nodes {
            if let Some(mut c) = node.daemon.take() {
                let _ = c.kill();
                // Bounded reap: never hang a drop (a panic here would abort).
                let deadline = Instant::now() + Duration::from_secs(DAEMON_KILL_TIMEOUT_S);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        for node in &self.nodes {
            let _ = Command::new(root().join("tests/lib/containerd.sh")).arg("stop").arg(node.dir.join("ctrd")).status();
            let _ = std::fs::remove_dir_all(crate::task_files_root(&node.data_dir()));
        }
        let n = self.ids.borrow().len().to_string();
        match Command::new(netns_sh()).args(["teardown", &self.prefix, &n]).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("cluster {}: netns.sh teardown failed ({other:?}); namespaces may remain", self.prefix),
        }
        if panicking {
            for node in &self.nodes {
                eprintln!(
                    "---- cluster {} node {} ({}, {}): last {LOG_TAIL_LINES} lines of {}/daemon.log ----\n{}",
                    self.prefix,
                    node.number - 1,
                    node.netns,
                    node.ip,
                    node.dir.display(),
                    node.log_tail(LOG_TAIL_LINES)
                );
            }
            eprintln!("kept {} for inspection", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let took = started.elapsed();
        if took > Duration::from_secs(30) {
            eprintln!("cluster {}: teardown took {took:?}", self.prefix);
        }
    }
}
