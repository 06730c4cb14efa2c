//! Deterministic simulation of a raft cluster: N nodes in one thread, a
//! lossy reordering network, crash-restarts against simulated disks, and a
//! key-value workload, all driven by one `u64` seed.
//!
//! After every event the simulator checks Raft's safety properties:
//! election safety (≤ 1 leader per term), log matching (checked on every
//! persisted entry), leader completeness (checked when a node becomes
//! leader) and state-machine safety (checked on every applied entry). At the
//! end it checks linearizability of the acknowledged client history (a
//! Wing-Gong search per key) and liveness: once faults stop, a leader exists
//! and every node applied every acknowledged write within a bound of ticks.
//!
//! A crash loses exactly what the Ready contract says is volatile: the sim
//! processes each `Ready` as persist → send → apply → advance, and a node's
//! disk only holds what `persist` wrote.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use shoal_shared::rng::Rng;

use super::config::{BugFlags, Config};
use super::node::{Persisted, Raft, Ready, Role};
use super::types::{decode, encode, ConfChange, Entry, EntryKind, Message, MessageKind, NodeId, MAX_FRAME_BYTES};

/// Knobs for one simulated run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: u64,
    /// Ticks with faults (drops, duplicates, partitions, crashes).
    pub fault_ticks: u64,
    /// Fault-free ticks after which everything must have converged.
    pub settle_ticks: u64,
    pub clients: u32,
    pub keys: u8,
    pub bugs: BugFlags,
    /// Record a human-readable event trace.
    pub trace: bool,
    /// Use `Config::edge` timing instead of `Config::lan`.
    pub edge_profile: bool,
}

impl SimOptions {
    /// The default workload for `nodes` managers.
    pub fn new(nodes: u64) -> SimOptions {
        SimOptions {
            nodes,
            fault_ticks: 250,
            settle_ticks: 150,
            clients: 3,
            keys: 3,
            bugs: BugFlags::default(),
            trace: false,
            edge_profile: false,
        }
    }
}

/// Outcome of one seed.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub acked_ops: u64,
    pub messages: u64,
    pub elections: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
}

/// Sub-steps per tick (network delays are counted in sub-steps).
const SUBSTEPS_PER_TICK: u64 = 10;
/// A client re-submits an unacknowledged operation after this many ticks.
const CLIENT_RETRY_TICKS: u64 = 12;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cmd {
    client: u32,
    seq: u64,
    key: u8,
    value: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Kv {
    data: BTreeMap<u8, u64>,
    /// Highest sequence applied per client (exactly-once puts).
    dedup: BTreeMap<u32, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Put(u64),
    Get(Option<u64>),
}

#[derive(Clone, Debug)]
struct HistOp {
    key: u8,
    kind: OpKind,
    inv: u64,
    /// `u64::MAX` while pending (an unacknowledged put may or may not apply).
    resp: u64,
}

#[derive(Clone, Debug)]
struct ClientOp {
    seq: u64,
    key: u8,
    put: Option<u64>,
    hist: usize,
    target: NodeId,
    retry_at_tick: u64,
}

#[derive(Clone, Debug)]
struct Client {
    id: u32,
    seq: u64,
    leader_hint: NodeId,
    op: Option<ClientOp>,
}

/// An in-memory disk with the same persist semantics as `RaftStorage`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) p: Persisted,
    /// Hard state as of the last fsynced write (commit-only updates are
    /// written without fsync and may be lost in a crash).
    synced_hard: super::types::HardState,
}

impl Disk {
    /// A crash: unsynced writes are lost.
    pub(crate) fn crash(&mut self) {
        self.p.hard_state = self.synced_hard;
    }

    /// The same semantics as `RaftStorage::persist`.
    pub(crate) fn persist(&mut self, rd: &Ready) {
        let p = &mut self.p;
        if let Some(s) = &rd.snapshot {
            p.entries.clear();
            p.prev_index = s.meta.index;
            p.prev_term = s.meta.term;
            p.snapshot = s.clone();
        }
        if let Some(c) = &rd.compaction {
            p.snapshot = c.snapshot.clone();
            p.entries.retain(|e| e.index > c.prev_index);
            p.prev_index = c.prev_index;
            p.prev_term = c.prev_term;
        }
        if let Some(hs) = rd.hard_state {
            p.hard_state = hs;
        }
        if let Some(cs) = &rd.conf_state {
            p.conf_state = cs.clone();
        }
        if let Some(first) = rd.entries.first() {
            p.entries.retain(|e| e.index < first.index);
            p.entries.extend(rd.entries.iter().cloned());
        }
        if rd.must_sync {
            self.synced_hard = p.hard_state;
        }
    }
}

struct Node {
    id: NodeId,
    raft: Option<Raft>,
    disk: Disk,
    kv: Kv,
    applied: u64,
    /// Confirmed reads waiting for `applied >= index`: (index, client, seq).
    reads: Vec<(u64, u32, u64)>,
    restart_at_tick: u64,
}

struct InFlight {
    deliver_at: u64,
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
}

/// FNV-1a over bytes: a deterministic fingerprint of an entry.
fn fingerprint(e: &Entry) -> u64 {
    let bytes = match &e.kind {
        EntryKind::Normal(d) => d.clone(),
        EntryKind::Conf { conf, .. } => super::types::to_bytes(conf),
    };
    shoal_shared::fnv1a64(bytes.iter().copied().chain([matches!(e.kind, EntryKind::Normal(_)) as u8]))
}

fn brief(m: &Message) -> String {
    let k = match &m.kind {
        MessageKind::Append { prev_index, prev_term, entries, commit } => {
            format!("App(prev={prev_index}/{prev_term} n={} commit={commit})", entries.len())
        }
        MessageKind::SnapshotChunk { meta, offset, data, .. } => {
            format!("Snap(idx={} off={offset} len={})", meta.index, data.len())
        }
        other => format!("{other:?}"),
    };
    format!("{}->{} t{} {}", m.from, m.to, m.term, k)
}

/// The simulated world.
struct World {
    opts: SimOptions,
    rng: Rng,
    tick: u64,
    now: u64,
    clock: u64,
    nodes: Vec<Node>,
    net: Vec<InFlight>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    faults: bool,
    clients: Vec<Client>,
    history: Vec<HistOp>,
    /// Highest log index of an acknowledged put.
    acked_put_index: u64,
    leaders: BTreeMap<u64, NodeId>,
    /// (index, term) → (fingerprint, prev term): log matching.
    log_entries: BTreeMap<(u64, u64), (u64, u64)>,
    /// index → (term, fingerprint, max term when first applied).
    applied: BTreeMap<u64, (u64, u64, u64)>,
    /// Per-seed fault intensities (one in N messages / ticks).
    drop_one_in: u64,
    partition_one_in: u64,
    crash_one_in: u64,
    isolate_leader_one_in: u64,
    report: SimReport,
}

impl World {
    fn new(seed: u64, opts: SimOptions) -> World {
        let mut rng = Rng::from_seed(seed);
        let voters: Vec<NodeId> = (1..=opts.nodes).collect();
        let mut nodes = Vec::new();
        for id in 1..=opts.nodes {
            let raft = Raft::bootstrap(node_config(id, rng.next_u64(), &opts), &voters);
            // Invariant: the sim config is valid and voters non-empty.
            let raft = raft.expect("sim bootstrap config is valid");
            nodes.push(Node {
                id,
                raft: Some(raft),
                disk: Disk::default(),
                kv: Kv::default(),
                applied: 0,
                reads: Vec::new(),
                restart_at_tick: 0,
            });
        }
        let clients = (0..opts.clients).map(|id| Client { id, seq: 0, leader_hint: 0, op: None }).collect();
        let drop_one_in = rng.range(4, 60);
        let partition_one_in = rng.range(8, 80);
        let crash_one_in = rng.range(8, 80);
        let isolate_leader_one_in = rng.range(2, 10);
        World {
            isolate_leader_one_in,
            opts,
            drop_one_in,
            partition_one_in,
            crash_one_in,
            rng,
            tick: 0,
            now: 0,
            clock: 0,
            nodes,
            net: Vec::new(),
            blocked: BTreeSet::new(),
            faults: true,
            clients,
            history: Vec::new(),
            acked_put_index: 0,
            leaders: BTreeMap::new(),
            log_entries: BTreeMap::new(),
            applied: BTreeMap::new(),
            report: SimReport { seed, ..SimReport::default() },
        }
    }

    fn trace(&mut self, s: impl FnOnce() -> String) {
        if self.opts.trace {
            let line = format!("[t{} s{}] {}", self.tick, self.now, s());
            self.report.trace.push(line);
        }
    }

    fn violation(&mut self, s: String) {
        self.trace(|| format!("VIOLATION: {s}"));
        self.report.violations.push(s);
    }

    fn stamp(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn run(mut self) -> SimReport {
        let total = self.opts.fault_ticks + self.opts.settle_ticks;
        while self.tick < total && self.report.violations.is_empty() {
            if self.tick == self.opts.fault_ticks {
                self.stop_faults();
            }
            for _ in 0..SUBSTEPS_PER_TICK {
                self.now += 1;
                self.deliver_due();
                if !self.report.violations.is_empty() {
                    break;
                }
            }
            self.clients_act();
            self.tick_nodes();
            if self.faults {
                self.inject_faults();
            }
            self.check_election_safety();
            self.tick += 1;
        }
        if self.report.violations.is_empty() {
            self.check_liveness();
        }
        if self.report.violations.is_empty() {
            self.check_linearizable();
        }
        self.report
    }

    fn stop_faults(&mut self) {
        self.faults = false;
        self.blocked.clear();
        self.trace(|| "faults stop: heal, restart all".into());
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                self.restart(i);
            }
        }
    }

    fn send(&mut self, m: Message) {
        self.report.messages += 1;
        let bytes = encode(&m);
        if bytes.len() > MAX_FRAME_BYTES {
            self.violation(format!("frame of {} bytes exceeds limit: {}", bytes.len(), brief(&m)));
            return;
        }
        if self.faults && self.rng.chance(1, self.drop_one_in) {
            self.trace(|| format!("drop {}", brief(&m)));
            return;
        }
        let copies = if self.faults && self.rng.chance(1, 40) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if self.faults && self.rng.chance(1, 30) {
                self.rng.range(1, 10 * SUBSTEPS_PER_TICK)
            } else {
                self.rng.range(1, SUBSTEPS_PER_TICK)
            };
            self.net.push(InFlight { deliver_at: self.now + delay, from: m.from, to: m.to, bytes: bytes.clone() });
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut k = 0;
        while k < self.net.len() {
            if self.net[k].deliver_at <= now {
                due.push(self.net.swap_remove(k));
            } else {
                k += 1;
            }
        }
        // Random order among the due messages: reordering.
        while !due.is_empty() {
            let pick = self.rng.range(0, due.len() as u64) as usize;
            let f = due.swap_remove(pick);
            if self.blocked.contains(&(f.from, f.to)) {
                continue;
            }
            let i = (f.to - 1) as usize;
            let msg = match decode(&f.bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.violation(format!("own frame failed to decode: {e}"));
                    return;
                }
            };
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                continue;
            };
            let line = if self.opts.trace { brief(&msg) } else { String::new() };
            if let Err(e) = raft.step(msg) {
                self.violation(format!("step refused a message from a correct peer: {e} ({line})"));
                return;
            }
            self.trace(|| format!("deliver {line}"));
            self.process(i);
        }
    }

    fn tick_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                continue;
            }
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.tick();
            }
            self.process(i);
            // The application takes snapshots when the core asks.
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                continue;
            };
            if raft.should_snapshot() {
                let applied = self.nodes[i].applied;
                let data = super::types::to_bytes(&self.nodes[i].kv);
                if let Some(raft) = self.nodes[i].raft.as_mut() {
                    if raft.compact(applied, data).is_ok() {
                        self.trace(|| format!("node {} compacts at {applied}", i + 1));
                    }
                }
                self.process(i);
            }
        }
    }

    /// Drains and handles every Ready: persist, send, apply, advance.
    fn process(&mut self, i: usize) {
        loop {
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                break;
            }
            let rd = raft.ready();
            let term = raft.term();
            let id = self.nodes[i].id;
            if let Some(ss) = rd.soft_state {
                self.trace(|| format!("node {id} is {:?} (leader {}) term {term}", ss.role, ss.leader));
                if ss.role == Role::Leader {
                    self.report.elections += 1;
                    self.check_leader_completeness(i, term);
                    if self.faults && self.rng.chance(1, self.isolate_leader_one_in) {
                        // Adversarial timing: cut a fresh leader off before its
                        // first appends land (the Figure 8 family of histories).
                        self.isolate(id);
                    }
                }
            }
            let leader_committed = rd.hard_state.is_some_and(|h| h.commit > self.nodes[i].disk.p.hard_state.commit)
                && self.nodes[i].raft.as_ref().is_some_and(|r| r.role() == Role::Leader);
            if leader_committed && self.faults && self.rng.chance(1, self.isolate_leader_one_in) {
                // Adversarial timing: a leader cut off right after it commits,
                // before followers learn the new commit index.
                self.isolate(id);
            }
            // Adversarial timing: a node that just voted crashes right after
            // replying (its vote must have been made durable first).
            let voted = rd.hard_state.is_some_and(|h| h.vote != 0 && h.vote != self.nodes[i].disk.p.hard_state.vote);
            let crash_after = voted && self.faults && self.rng.chance(1, 2 * self.isolate_leader_one_in);
            if !rd.must_sync {
                let only_commit = rd.entries.is_empty()
                    && rd.snapshot.is_none()
                    && rd.compaction.is_none()
                    && rd.conf_state.is_none()
                    && rd.hard_state.is_none_or(|h| {
                        let d = self.nodes[i].disk.p.hard_state;
                        h.term == d.term && h.vote == d.vote
                    });
                if !only_commit {
                    self.violation(format!("node {id}: a Ready that needs fsync claims it does not"));
                }
            }
            // 1. persist
            self.nodes[i].disk.persist(&rd);
            self.check_log_matching(i, &rd.entries);
            // 2. send
            for m in rd.messages.iter().cloned() {
                self.send(m);
            }
            // 3. apply
            if let Some(s) = &rd.snapshot {
                self.report.snapshots_installed += 1;
                match postcard::from_bytes::<Kv>(&s.data) {
                    Ok(kv) => self.nodes[i].kv = kv,
                    Err(e) => self.violation(format!("snapshot data corrupt: {e}")),
                }
                self.nodes[i].applied = s.meta.index;
                self.trace(|| format!("node {id} installs snapshot at {}", s.meta.index));
            }
            for e in &rd.committed_entries {
                self.apply(i, e);
            }
            for r in &rd.read_states {
                match postcard::from_bytes::<(u32, u64)>(&r.ctx) {
                    Ok((c, s)) => self.nodes[i].reads.push((r.index, c, s)),
                    Err(e) => self.violation(format!("read ctx corrupt: {e}")),
                }
            }
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.advance(rd);
                raft.log.check_full();
            }
            self.serve_reads(i);
            if crash_after {
                self.crash(i);
                return;
            }
        }
    }

    fn apply(&mut self, i: usize, e: &Entry) {
        let id = self.nodes[i].id;
        if e.index != self.nodes[i].applied + 1 {
            self.violation(format!("node {id} applied {} after {}", e.index, self.nodes[i].applied));
            return;
        }
        self.nodes[i].applied = e.index;
        let fp = fingerprint(e);
        let max_term = self.nodes.iter().filter_map(|n| n.raft.as_ref().map(|r| r.term())).max().unwrap_or(0);
        match self.applied.get(&e.index) {
            Some(&(t, f, _)) if t != e.term || f != fp => {
                self.violation(format!(
                    "state machine safety: node {id} applied {}@t{} but another node applied it @t{t}",
                    e.index, e.term
                ));
                return;
            }
            Some(_) => {}
            None => {
                self.applied.insert(e.index, (e.term, fp, max_term));
            }
        }
        let EntryKind::Normal(data) = &e.kind else {
            return;
        };
        if data.is_empty() {
            return;
        }
        let Ok(cmd) = postcard::from_bytes::<Cmd>(data) else {
            self.violation(format!("node {id} applied an undecodable command at {}", e.index));
            return;
        };
        let kv = &mut self.nodes[i].kv;
        if kv.dedup.get(&cmd.client).is_none_or(|s| *s < cmd.seq) {
            kv.dedup.insert(cmd.client, cmd.seq);
            kv.data.insert(cmd.key, cmd.value);
        }
        // Acknowledge to the client waiting on this node.
        let c = cmd.client as usize;
        let ack = matches!(&self.clients[c].op, Some(op) if op.seq == cmd.seq && op.target == id);
        if ack {
            let resp = self.stamp();
            if let Some(op) = self.clients[c].op.take() {
                self.history[op.hist].resp = resp;
                self.acked_put_index = self.acked_put_index.max(e.index);
                self.report.acked_ops += 1;
                self.trace(|| format!("client {c} put ack seq {} at {}", op.seq, e.index));
            }
        }
    }

    fn serve_reads(&mut self, i: usize) {
        let applied = self.nodes[i].applied;
        let id = self.nodes[i].id;
        let reads = std::mem::take(&mut self.nodes[i].reads);
        for (index, c, seq) in reads {
            if index > applied {
                self.nodes[i].reads.push((index, c, seq));
                continue;
            }
            let ci = c as usize;
            let waiting = matches!(&self.clients[ci].op, Some(op) if op.seq == seq && op.put.is_none() && op.target == id);
            if !waiting {
                continue;
            }
            let resp = self.stamp();
            if let Some(op) = self.clients[ci].op.take() {
                let value = self.nodes[i].kv.data.get(&op.key).copied();
                self.history[op.hist].kind = OpKind::Get(value);
                self.history[op.hist].resp = resp;
                self.report.acked_ops += 1;
                self.trace(|| format!("client {c} get k{} = {value:?} (read index {index})", op.key));
            }
        }
    }

    fn clients_act(&mut self) {
        for c in 0..self.clients.len() {
            let issue = match &self.clients[c].op {
                None => self.faults && self.rng.chance(1, 3),
                Some(op) => op.retry_at_tick <= self.tick,
            };
            if !issue {
                continue;
            }
            if self.clients[c].op.is_none() {
                self.clients[c].seq += 1;
                let key = self.rng.range(0, u64::from(self.opts.keys)) as u8;
                let put = self.rng.chance(1, 2).then(|| (u64::from(self.clients[c].id) << 32) | self.clients[c].seq);
                let inv = self.stamp();
                self.history.push(HistOp {
                    key,
                    kind: match put {
                        Some(v) => OpKind::Put(v),
                        None => OpKind::Get(None),
                    },
                    inv,
                    resp: u64::MAX,
                });
                self.clients[c].op =
                    Some(ClientOp { seq: self.clients[c].seq, key, put, hist: self.history.len() - 1, target: 0, retry_at_tick: 0 });
            }
            self.submit(c);
        }
    }

    fn submit(&mut self, c: usize) {
        let hint = self.clients[c].leader_hint;
        let target = if hint != 0 && self.rng.chance(4, 5) { hint } else { self.rng.range(1, self.opts.nodes + 1) };
        let client_id = self.clients[c].id;
        let tick = self.tick;
        let Some(op) = self.clients[c].op.as_mut() else {
            return;
        };
        op.target = target;
        op.retry_at_tick = tick + CLIENT_RETRY_TICKS;
        let (seq, key, put) = (op.seq, op.key, op.put);
        let i = (target - 1) as usize;
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            self.clients[c].leader_hint = 0;
            if let Some(op) = self.clients[c].op.as_mut() {
                op.retry_at_tick = tick + 1;
            }
            return;
        };
        let result = match put {
            Some(value) => {
                let cmd = super::types::to_bytes(&Cmd { client: client_id, seq, key, value });
                raft.propose(cmd).map(|_| ()).map_err(|e| match e {
                    super::node::ProposeError::NotLeader { leader } => leader,
                    _ => None,
                })
            }
            None => raft.read_index(super::types::to_bytes(&(client_id, seq))).map_err(|e| match e {
                super::node::RequestError::NotLeader { leader } => leader,
                _ => None,
            }),
        };
        match result {
            Ok(()) => {
                self.clients[c].leader_hint = target;
                self.trace(|| format!("client {c} submits seq {seq} to {target}"));
                self.process(i);
            }
            Err(leader) => {
                self.clients[c].leader_hint = leader.unwrap_or(0);
                if let Some(op) = self.clients[c].op.as_mut() {
                    op.retry_at_tick = tick + 1;
                }
            }
        }
    }

    /// Membership churn through the leader: remove a voter, re-add it as a
    /// learner, promote it back (one change at a time).
    fn churn_membership(&mut self) {
        let n = self.opts.nodes;
        let Some(li) = self.nodes.iter().position(|x| x.raft.as_ref().is_some_and(|r| r.role() == Role::Leader)) else {
            return;
        };
        let pick = self.rng.range(0, n) as usize;
        let Some(raft) = self.nodes[li].raft.as_mut() else {
            return;
        };
        let st = raft.status();
        let change = if let Some(&l) = st.learners.first() {
            ConfChange::PromoteLearner(l)
        } else if let Some(out) = (1..=n).find(|id| !st.voters.contains(id)) {
            ConfChange::AddLearner(out)
        } else if st.voters.len() > 2 {
            ConfChange::RemoveNode(st.voters[pick % st.voters.len()])
        } else {
            return;
        };
        if raft.propose_conf_change(change).is_ok() {
            self.trace(|| format!("node {} proposes {change:?}", li + 1));
            self.process(li);
        }
    }

    /// Leadership transfer to a random voter.
    fn transfer_leadership(&mut self) {
        let Some(li) = self.nodes.iter().position(|x| x.raft.as_ref().is_some_and(|r| r.role() == Role::Leader)) else {
            return;
        };
        let to = self.rng.range(1, self.opts.nodes + 1);
        let Some(raft) = self.nodes[li].raft.as_mut() else {
            return;
        };
        if raft.transfer_leader(to).is_ok() {
            self.trace(|| format!("node {} transfers leadership to {to}", li + 1));
            self.process(li);
        }
    }

    fn inject_faults(&mut self) {
        let n = self.opts.nodes;
        if self.rng.chance(1, 40) {
            self.churn_membership();
        }
        if self.rng.chance(1, 60) {
            self.transfer_leadership();
        }
        if self.rng.chance(1, self.partition_one_in) {
            self.blocked.clear();
            let mut side = BTreeSet::new();
            for id in 1..=n {
                if self.rng.chance(1, 2) {
                    side.insert(id);
                }
            }
            let one_way = self.rng.chance(1, 5);
            for a in 1..=n {
                for b in 1..=n {
                    if side.contains(&a) && !side.contains(&b) {
                        self.blocked.insert((a, b));
                        if !one_way {
                            self.blocked.insert((b, a));
                        }
                    }
                }
            }
            self.trace(|| format!("partition {side:?} one_way={one_way}"));
        } else if self.rng.chance(1, self.partition_one_in / 2 + 1) {
            self.blocked.clear();
            self.trace(|| "heal".into());
        }
        if self.rng.chance(1, self.crash_one_in) {
            // Leaders crash more often than followers: that is where the
            // interesting interleavings (uncommitted tails) are.
            let leader = self.nodes.iter().position(|x| x.raft.as_ref().is_some_and(|r| r.role() == Role::Leader));
            let i = match leader {
                Some(l) if self.rng.chance(1, 2) => l,
                _ => self.rng.range(0, n) as usize,
            };
            if self.nodes[i].raft.is_some() {
                self.crash(i);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() && self.nodes[i].restart_at_tick <= self.tick {
                self.restart(i);
            }
        }
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].disk.crash();
        self.nodes[i].raft = None;
        self.nodes[i].reads.clear();
        self.nodes[i].restart_at_tick = self.tick + self.rng.range(2, 40);
        self.report.crashes += 1;
        self.trace(|| format!("crash node {}", i + 1));
    }

    fn isolate(&mut self, id: NodeId) {
        self.blocked.clear();
        for o in 1..=self.opts.nodes {
            if o != id {
                self.blocked.insert((id, o));
                self.blocked.insert((o, id));
            }
        }
        self.trace(|| format!("isolate node {id}"));
    }

    fn restart(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let cfg = node_config(id, self.rng.next_u64(), &self.opts);
        let p = self.nodes[i].disk.p.clone();
        let kv = if p.snapshot.meta.index > 0 {
            match postcard::from_bytes::<Kv>(&p.snapshot.data) {
                Ok(kv) => kv,
                Err(e) => {
                    self.violation(format!("stored snapshot corrupt: {e}"));
                    return;
                }
            }
        } else {
            Kv::default()
        };
        self.nodes[i].applied = p.snapshot.meta.index;
        self.nodes[i].kv = kv;
        match Raft::restore(cfg, p) {
            Ok(r) => self.nodes[i].raft = Some(r),
            Err(e) => {
                self.violation(format!("node {id} cannot restart from its disk: {e}"));
                return;
            }
        }
        self.trace(|| format!("restart node {id}"));
        self.process(i);
    }

    fn check_election_safety(&mut self) {
        for n in &self.nodes {
            let Some(r) = &n.raft else { continue };
            if r.role() != Role::Leader {
                continue;
            }
            match self.leaders.get(&r.term()) {
                Some(&other) if other != n.id => {
                    let msg = format!("election safety: nodes {other} and {} both lead term {}", n.id, r.term());
                    self.violation(msg);
                    return;
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(r.term(), n.id);
                }
            }
        }
    }

    fn check_log_matching(&mut self, i: usize, entries: &[Entry]) {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return;
        };
        let mut bad = None;
        for e in entries {
            let prev_term = raft.log.term(e.index - 1).unwrap_or(u64::MAX);
            let fp = fingerprint(e);
            match self.log_entries.get(&(e.index, e.term)) {
                Some(&(f, pt)) if f != fp || (pt != prev_term && pt != u64::MAX && prev_term != u64::MAX) => {
                    bad = Some(format!("log matching: entry {}@t{} differs between nodes (node {})", e.index, e.term, i + 1));
                    break;
                }
                Some(_) => {}
                None => {
                    self.log_entries.insert((e.index, e.term), (fp, prev_term));
                }
            }
        }
        if let Some(b) = bad {
            self.violation(b);
        }
    }

    fn check_leader_completeness(&mut self, i: usize, term: u64) {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return;
        };
        let mut bad = None;
        for (&index, &(t, fp, known_at)) in &self.applied {
            if known_at >= term || index <= raft.log.prev_index {
                continue;
            }
            let ok = raft.log.entry(index).is_some_and(|e| e.term == t && fingerprint(e) == fp);
            if !ok {
                bad = Some(format!("leader completeness: node {} leads term {term} without committed entry {index}@t{t}", i + 1));
                break;
            }
        }
        if let Some(b) = bad {
            self.violation(b);
        }
    }

    fn check_liveness(&mut self) {
        let leader = self.nodes.iter().filter_map(|n| n.raft.as_ref()).find(|r| r.role() == Role::Leader);
        let Some(leader) = leader else {
            self.violation(format!("liveness: no leader {} ticks after faults stopped", self.opts.settle_ticks));
            return;
        };
        // Only current members must converge; a removed node may lag forever.
        let st = leader.status();
        let members: Vec<usize> = st.voters.iter().chain(&st.learners).map(|id| (*id - 1) as usize).collect();
        for &k in &members {
            let (id, applied) = (self.nodes[k].id, self.nodes[k].applied);
            if applied < self.acked_put_index {
                let need = self.acked_put_index;
                self.violation(format!("liveness: node {id} applied only {applied} of acknowledged {need}"));
                return;
            }
        }
        let first = &self.nodes[members[0]].kv.data;
        if members.iter().any(|&k| &self.nodes[k].kv.data != first) {
            self.violation("liveness: replicas diverge after settling".into());
        }
    }

    fn check_linearizable(&mut self) {
        for key in 0..self.opts.keys {
            let ops: Vec<HistOp> = self
                .history
                .iter()
                .filter(|o| o.key == key && !(matches!(o.kind, OpKind::Get(_)) && o.resp == u64::MAX))
                .cloned()
                .collect();
            if let Err(e) = check_register(&ops) {
                self.violation(format!("linearizability: key {key}: {e}"));
                return;
            }
        }
    }
}

/// Wing-Gong search for a linearization of single-register operations.
/// Pending operations (`resp == u64::MAX`) may be linearized or left out.
fn check_register(ops: &[HistOp]) -> Result<(), String> {
    if ops.len() > 128 {
        return Err(format!("history of {} ops exceeds the checker bound of 128", ops.len()));
    }
    let complete: u128 = ops.iter().enumerate().filter(|(_, o)| o.resp != u64::MAX).fold(0, |acc, (k, _)| acc | (1u128 << k));
    let mut seen: HashSet<(u128, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(u128, Option<u64>)> = vec![(0, None)];
    while let Some((done, state)) = stack.pop() {
        if done & complete == complete {
            return Ok(());
        }
        if !seen.insert((done, state)) {
            continue;
        }
        // An op may go next if it was invoked before every pending op's response.
        let horizon = ops.iter().enumerate().filter(|(k, _)| done & (1 << k) == 0).map(|(_, o)| o.resp).min().unwrap_or(u64::MAX);
        for (k, o) in ops.iter().enumerate() {
            if done & (1 << k) != 0 || o.inv > horizon {
                continue;
            }
            match o.kind {
                OpKind::Put(v) => stack.push((done | (1 << k), Some(v))),
                OpKind::Get(v) if v == state => stack.push((done | (1 << k), state)),
                OpKind::Get(_) => {}
            }
        }
    }
    Err(format!("no linearization of {} operations", ops.len()))
}

fn node_config(id: NodeId, seed: u64, opts: &SimOptions) -> Config {
    let profile = if opts.edge_profile { Config::edge(id, seed) } else { Config::lan(id, seed) };
    Config {
        // Small limits so compaction, snapshot chunking, batching bounds and
        // the in-flight window are exercised within a few hundred ticks.
        snapshot_interval_entries: 30,
        snapshot_keep_entries: 5,
        max_inflight_msgs: 4,
        max_append_bytes: 64,
        max_snapshot_chunk_bytes: 48,
        bugs: opts.bugs,
        ..profile
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, opts: &SimOptions) -> SimReport {
    World::new(seed, opts.clone()).run()
}

/// The options the example and tests use for a seed: alternate 3 and 5 nodes.
/// Seeds `4k, 4k+1` use LAN timing, `4k+2, 4k+3` edge timing.
pub fn default_options(seed: u64) -> SimOptions {
    let mut o = SimOptions::new(if seed.is_multiple_of(2) { 3 } else { 5 });
    o.edge_profile = seed % 4 >= 2;
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first seed (from 0, at most `max_seeds`) whose run violates a check.
    fn first_violation(bugs: BugFlags, max_seeds: u64) -> Option<SimReport> {
        (0..max_seeds).find_map(|seed| {
            let mut o = default_options(seed);
            o.bugs = bugs;
            let r = run_seed(seed, &o);
            (!r.violations.is_empty()).then_some(r)
        })
    }

    #[test]
    fn sim_seeds_are_clean() {
        let bad = first_violation(BugFlags::default(), 300);
        assert!(bad.is_none(), "failure: {:?}", bad.map(|r| (r.seed, r.violations)));
    }

    #[test]
    fn sim_is_deterministic() {
        let mut o = default_options(11);
        o.trace = true;
        let a = run_seed(11, &o);
        let b = run_seed(11, &o);
        assert_eq!(a.trace, b.trace);
        assert!(a.acked_ops > 0);
        assert!(a.elections > 0);
    }

    #[test]
    fn checker_catches_double_vote() {
        let bugs = BugFlags { vote_twice: true, ..BugFlags::default() };
        let r = first_violation(bugs, 1500).expect("vote_twice went unnoticed");
        assert!(r.violations.iter().any(|v| v.contains("election safety")), "{:?}", r.violations);
    }

    #[test]
    fn checker_catches_commit_of_old_term() {
        let bugs = BugFlags { commit_old_term: true, ..BugFlags::default() };
        let r = first_violation(bugs, 1500).expect("commit_old_term went unnoticed");
        assert!(r.violations.iter().any(|v| v.contains("leader completeness") || v.contains("state machine")), "{:?}", r.violations);
    }

    #[test]
    fn checker_catches_vote_lost_on_restart() {
        let bugs = BugFlags { forget_vote_on_restart: true, ..BugFlags::default() };
        let r = first_violation(bugs, 1500).expect("forget_vote_on_restart went unnoticed");
        assert!(!r.violations.is_empty());
    }

    #[test]
    fn linearizability_checker_rejects_stale_read() {
        let put = |v, inv, resp| HistOp { key: 0, kind: OpKind::Put(v), inv, resp };
        let get = |v, inv, resp| HistOp { key: 0, kind: OpKind::Get(v), inv, resp };
        assert!(check_register(&[put(1, 1, 2), get(Some(1), 3, 4)]).is_ok());
        assert!(check_register(&[put(1, 1, 2), put(2, 3, 4), get(Some(1), 5, 6)]).is_err());
        assert!(check_register(&[put(1, 1, u64::MAX), get(Some(1), 5, 6)]).is_ok());
        assert!(check_register(&[put(1, 1, u64::MAX), get(None, 5, 6), get(Some(1), 7, 8)]).is_ok());
        assert!(check_register(&[put(1, 1, u64::MAX), get(Some(1), 5, 6), get(None, 7, 8)]).is_err());
    }
}
