//! The daemon's multi-node half: membership (init, join, leave, promote,
//! demote, rm), links to other nodes, raft transport, the leader's
//! dispatcher, worker sessions and request forwarding.
//!
//! Owns [`Swarm`], the loop's memory of connections, dials, sessions and
//! requests in flight. Connection tasks live in [`super::links`]; the
//! decisions are all made here, on the event loop.
//!
//! Roles ([`Mode`]): a node outside any swarm is `Solo`. A `Manager` runs a
//! raft member: its worker half plans from the replicated state, and it keeps
//! a node link to every other raft member. A `Worker` has no raft: it keeps
//! one link to the leader (found through the managers it knows, following
//! `Redirect`s), opens a dispatcher session on it, plans from the
//! `Assignments` the leader sends, and reports task states back.
//!
//! Invariants:
//! - a node link is kept only after the handshake proved a key whose node id
//!   is expected (outbound) or is a member of the swarm (inbound); a raft
//!   message is stepped only if its `from` is the raft id of that key's node;
//! - only the leader orchestrates, schedules, dispatches, marks nodes Down
//!   and changes raft membership; raft membership follows the node roles in
//!   the replicated state (reconciled one change at a time);
//! - a worker never plans before its first `Assignments` since it started or
//!   changed role, and keeps the last assignments while the leader is
//!   unreachable, so its containers keep running;
//! - every wait has a deadline: joins (`JOIN_TIMEOUT_MS`), writes waiting for
//!   a commit (`WRITE_TIMEOUT_MS`) and forwarded requests (`FORWARD_TIMEOUT_MS`)
//!   fail with a message that says why; `service logs` gathers
//!   (`LOGS_GATHER_TIMEOUT_MS`, in [`logs`]) answer with what arrived and
//!   name the nodes that did not answer.

pub(crate) mod logs;
mod peers;

use super::links::{self, ConnIds, LinkUp, ListenKeys, Purpose};
use super::log_gather::LOGS_GATHER_TIMEOUT_MS;
use super::router::{Origin, Outcome};
use super::Daemon;
use crate::net::Command;
use async_channel::Sender;
use peers::{PeerEffect, Peers};
use shoal_manager::control;
use shoal_manager::dispatcher::{self, Dispatcher, Effect as DispatchEffect, Leadership};
use shoal_manager::raft;
use shoal_manager::store::{raft_id, Bootstrap, Proposal};
use shoal_shared::api::{ErrorKind, Reply, Request, RequestClass};
use shoal_shared::assignments::Assignments;
use shoal_shared::noise::key::{self, NodeKey};
use shoal_shared::noise::link::{Event as LinkEvent, LinkError};
use shoal_shared::noise::token::{self, JoinSecrets, JoinToken, Role as TokenRole, Secret};
use shoal_shared::ops::{Entry, Op};
use shoal_shared::task::TaskState;
use shoal_shared::types::{Availability, Cluster, Meta, Node, NodeRole, NodeState};
use shoal_shared::wire::{self, ManagerInfo, Wire, NOT_A_MEMBER};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A join gives up after this long (dial, redirects, commit).
pub const JOIN_TIMEOUT_MS: u64 = 20_000;
/// A manager's join then waits at most this long to become a raft voter
/// (within the CLI's 30 s: `JOIN_TIMEOUT_MS` plus this).
pub const JOIN_VOTER_WAIT_MS: u64 = 8_000;
/// Redirects a join or a worker follows before giving up on a round.
pub const JOIN_REDIRECTS_MAX: u32 = 3;
/// A write waits this long for its commit before failing with the quorum message.
pub const WRITE_TIMEOUT_MS: u64 = 5_000;
/// A write forwarded to the leader waits this long for its answer.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// A read forwarded to the leader waits this long before this manager answers it itself.
pub const FORWARD_READ_TIMEOUT_MS: u64 = 2_000;
/// A demoted manager leaves raft at the latest this long after its demotion applied.
pub const DEMOTION_GRACE_MS: u64 = 5_000;
/// Forwarded requests in flight at once.
pub const FORWARDS_MAX: usize = 1_024;
/// Writes waiting for their commit at once.
pub const PARKED_WRITES_MAX: usize = 4_096;

/// Local (not replicated) keys in the store's `local` table.
const LOCAL_MODE: &str = "swarm_mode";
const LOCAL_LISTEN: &str = "listen_addr";
const LOCAL_ADVERTISE: &str = "advertise_addr";
const LOCAL_MANAGERS: &str = "managers";

/// This node's place in a swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Solo,
    Manager,
    Worker,
}

/// One connection the loop knows.
struct Conn {
    commands: Option<Sender<Command>>,
    purpose: Purpose,
    outbound: bool,
    remote: Option<SocketAddr>,
    /// Outbound: the node id we expect to answer.
    expect: Option<String>,
    /// The proven peer, once accepted.
    peer: Option<String>,
    /// Inbound join: the role its token admits.
    join_role: Option<NodeRole>,
    /// Why it ended, when known.
    error: Option<String>,
}

/// A write waiting for its commit.
struct Parked {
    proposal: Proposal,
    ok: Reply,
    reply: Sender<Reply>,
    deadline: Instant,
}

/// A request forwarded to the leader.
struct Forward {
    /// The link it went out on, and the leader it went to.
    conn: u64,
    leader: String,
    /// Kept for reads: answered locally if the leader goes away.
    read: Option<Request>,
    reply: Sender<Reply>,
    deadline: Instant,
    /// The leader's answer, held until this node applied `index`.
    answer: Option<(Reply, u64)>,
}

/// A `swarm join` in progress.
struct Joining {
    token: JoinToken,
    remote: String,
    advertise_addr: String,
    listen_addr: String,
    availability: Availability,
    reply: Sender<Reply>,
    conn: u64,
    redirects: u32,
    deadline: Instant,
}

/// A manager's join, accepted, answered once this node is a raft voter (as Swarm's).
struct VoterWait {
    reply: Sender<Reply>,
    node_id: String,
    deadline: Instant,
}

/// A join the leader accepted, waiting for the node's record to commit.
struct PendingJoin {
    proposal: Proposal,
    conn: u64,
    node_id: String,
    role: NodeRole,
}

/// The loop's multi-node memory.
pub(crate) struct Swarm {
    pub(crate) mode: Mode,
    node_key: NodeKey,
    cluster_key: Option<NodeKey>,
    keys: Arc<Mutex<ListenKeys>>,
    ids: ConnIds,
    listen_addr: String,
    advertise_addr: String,
    listener: Option<smol::Task<()>>,
    conns: BTreeMap<u64, Conn>,
    /// The links this node wants, their dials and backoff.
    peers: Peers,
    /// Managers this node knows of without the replicated state (workers, new managers).
    hints: Vec<ManagerInfo>,
    /// Worker: which manager to dial next when the leader is unknown.
    hint_next: usize,
    /// Worker: the leader as last told.
    leader_hint: Option<ManagerInfo>,
    /// What this node's worker plans from. A worker's are the last the
    /// leader sent (None until the first since start or role change); a
    /// manager's are built from its replica (`Daemon::sync_assignments`).
    pub(crate) assigned: Option<Assignments>,
    /// The applied index a manager's `assigned` was built at (None: sent by a leader, or not built).
    assigned_at: Option<u64>,
    /// The leader's dispatcher: worker sessions, assignments sent, Down marking.
    dispatcher: Dispatcher,
    parked: Vec<Parked>,
    /// Internal proposals (orchestrator, reports) not yet resolved.
    pub(crate) inflight: Vec<(Proposal, Instant)>,
    /// Task states reported and not yet seen applied (no duplicate reports).
    reported: BTreeMap<String, TaskState>,
    next_forward: u64,
    forwards: BTreeMap<u64, Forward>,
    joining: Option<Joining>,
    voter_wait: Option<VoterWait>,
    /// A `swarm leave` asked while this manager was being demoted: run once it is a worker
    /// (at the latest `DEMOTION_GRACE_MS` after the demotion).
    leave_after_demotion: Option<(bool, Sender<Reply>)>,
    pending_joins: Vec<PendingJoin>,
    demoted_at: Option<Instant>,
    /// Last raft leader, term and membership logged.
    raft_seen: Option<(u64, u64, Vec<u64>, Vec<u64>)>,
    /// `service logs` gathers, requests and reads in flight.
    logs: logs::Gathers,
}

/// The error every leader-bound request gets while no leader is reachable.
pub(crate) fn no_leader(reachable: usize, managers: usize) -> Reply {
    Reply::error(
        ErrorKind::Unavailable,
        format!(
            "the swarm does not have a leader: {reachable} of {managers} managers reachable; restore quorum or run `shoal swarm init --force-new-cluster` on a surviving manager"
        ),
    )
}

pub(super) fn worker_refusal() -> Reply {
    Reply::error(
        ErrorKind::FailedPrecondition,
        "this node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.",
    )
}

/// How long a forwarded request waits for the leader's answer.
fn forward_wait_ms(req: &Request) -> u64 {
    match (req, req.class()) {
        // The leader answers logs within its gather deadline, whatever the nodes do.
        (Request::ServiceLogs { .. }, _) => LOGS_GATHER_TIMEOUT_MS + FORWARD_READ_TIMEOUT_MS,
        (_, RequestClass::Read) => FORWARD_READ_TIMEOUT_MS,
        // Local requests are never forwarded.
        (_, RequestClass::Write | RequestClass::Local) => FORWARD_TIMEOUT_MS,
    }
}

/// `IP` or `IP:PORT` with the swarm port as default.
fn with_port(addr: &str) -> String {
    with_port_or(addr, super::SWARM_PORT)
}

/// `IP` or `IP:PORT` with `port` as default (an advertised address takes
/// the listen address's port, as Docker's does).
fn with_port_or(addr: &str, port: u16) -> String {
    if addr.parse::<SocketAddr>().is_ok() || (addr.contains(':') && !addr.contains("::")) {
        addr.to_string()
    } else {
        format!("{addr}:{port}")
    }
}

/// The port of an `IP:PORT` listen address.
fn port_of(listen: &str) -> Option<u16> {
    listen.rsplit(':').next()?.parse().ok()
}

fn secret_bytes() -> Result<[u8; 16], String> {
    key::os_random::<16>().map_err(|e| format!("cannot read OS randomness: {e}"))
}

fn encode_hints(h: &[ManagerInfo]) -> String {
    h.iter().map(|m| format!("{}@{}", m.node_id, m.addr)).collect::<Vec<_>>().join(",")
}

fn decode_hints(s: &str) -> Vec<ManagerInfo> {
    s.split(',')
        .filter_map(|p| p.split_once('@').map(|(id, addr)| ManagerInfo { node_id: id.to_string(), addr: addr.to_string() }))
        .collect()
}

impl Swarm {
    /// The swarm memory for a node with `node_key`, restored from the store's local table.
    pub(crate) fn new(node_key: NodeKey, data_dir: &std::path::Path, local: impl Fn(&str) -> Option<String>) -> Swarm {
        let mode = match local(LOCAL_MODE).as_deref() {
            Some("manager") => Mode::Manager,
            Some("worker") => Mode::Worker,
            _ => Mode::Solo,
        };
        let cluster_key = key::load(&data_dir.join(key::CLUSTER_KEY_FILE)).ok();
        let keys = ListenKeys { node: *node_key.private(), cluster: cluster_key.as_ref().map(|k| *k.private()) };
        Swarm {
            mode,
            node_key,
            cluster_key,
            keys: Arc::new(Mutex::new(keys)),
            ids: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            listen_addr: local(LOCAL_LISTEN).unwrap_or_default(),
            advertise_addr: local(LOCAL_ADVERTISE).unwrap_or_default(),
            listener: None,
            conns: BTreeMap::new(),
            peers: Peers::default(),
            hints: local(LOCAL_MANAGERS).map(|s| decode_hints(&s)).unwrap_or_default(),
            hint_next: 0,
            leader_hint: None,
            assigned: None,
            assigned_at: None,
            dispatcher: Dispatcher::default(),
            parked: Vec::new(),
            inflight: Vec::new(),
            reported: BTreeMap::new(),
            next_forward: 1,
            forwards: BTreeMap::new(),
            joining: None,
            voter_wait: None,
            leave_after_demotion: None,
            pending_joins: Vec::new(),
            demoted_at: None,
            raft_seen: None,
            logs: logs::Gathers::default(),
        }
    }

    fn established(&self, node_id: &str) -> Option<u64> {
        let mut best = None;
        for (id, c) in &self.conns {
            if c.peer.as_deref() == Some(node_id) && c.commands.is_some() {
                if c.outbound {
                    return Some(*id);
                }
                best = Some(*id);
            }
        }
        best
    }

    fn send(&mut self, conn: u64, msg: &Wire) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        let Some(tx) = &c.commands else { return false };
        match tx.try_send(Command::Send(wire::encode(msg))) {
            Ok(()) => true,
            Err(async_channel::TrySendError::Full(_)) => {
                // A peer that cannot keep up is dropped and resynchronised on reconnect.
                let _ = tx.try_send(Command::Close("send queue full".into()));
                c.commands = None;
                false
            }
            Err(_) => false,
        }
    }

    fn close(&mut self, conn: u64, reason: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(tx) = c.commands.take() {
                let _ = tx.try_send(Command::Close(reason.to_string()));
            }
        }
    }

    /// Tests: a node link to manager `peer` whose outgoing messages the test reads.
    #[cfg(test)]
    pub(super) fn test_link(&mut self, peer: &str) -> (u64, async_channel::Receiver<Command>) {
        let conn = self.ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = async_channel::bounded(16);
        let c = Conn {
            commands: Some(tx),
            purpose: Purpose::Node,
            outbound: false,
            remote: None,
            expect: None,
            peer: Some(peer.to_string()),
            join_role: None,
            error: None,
        };
        self.conns.insert(conn, c);
        self.hints.push(ManagerInfo { node_id: peer.to_string(), addr: "127.0.0.1:1".into() });
        (conn, rx)
    }

    fn close_all(&mut self, reason: &str) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, reason);
        }
        self.peers.clear();
        self.dispatcher.clear_sessions();
    }
}

impl Daemon {
    /// What this node's worker plans from (empty before the first
    /// assignments). On managers, call [`Daemon::sync_assignments`] first.
    pub(crate) fn assigned(&self) -> &Assignments {
        static EMPTY: std::sync::OnceLock<Assignments> = std::sync::OnceLock::new();
        self.swarm.assigned.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Assignments::default))
    }

    /// A manager's (or lone node's) own assignments, rebuilt from its
    /// replica with the dispatcher's function when the state moved. Workers
    /// keep what their leader sent.
    pub(crate) fn sync_assignments(&mut self) {
        if self.swarm.mode == Mode::Worker {
            return;
        }
        let index = self.store.state().applied_index;
        if self.swarm.assigned_at != Some(index) || self.swarm.assigned.is_none() {
            self.swarm.assigned = Some(dispatcher::assignments(self.store.state(), &self.node_id));
            self.swarm.assigned_at = Some(index);
        }
    }

    /// Whether the worker may plan now (see the module invariants).
    pub(crate) fn may_plan(&self) -> bool {
        match self.swarm.mode {
            Mode::Worker => self.swarm.assigned.is_some(),
            Mode::Manager => self.store.state().cluster.is_some(),
            Mode::Solo => true,
        }
    }

    /// Whether this node runs the leader's work (orchestration and the rest).
    pub(crate) fn leads(&self) -> bool {
        self.swarm.mode != Mode::Worker && self.store.is_leader()
    }

    /// Starts the swarm port if this node is in a swarm (at start-up).
    pub(crate) fn start_swarm(&mut self) {
        if self.swarm.mode == Mode::Solo && self.store.state().cluster.is_some() {
            // A swarm made before node links existed: a manager listening on the default port.
            self.swarm.mode = Mode::Manager;
        }
        if self.swarm.mode != Mode::Solo {
            let addr = self.swarm.listen_addr.clone();
            if let Err(e) = self.listen(&addr) {
                crate::log!("ERROR", "{e}; other nodes cannot reach this one until the daemon restarts");
            }
        }
    }

    /// Opens the swarm port; returns the address it is bound to (port 0 picks one).
    fn listen(&mut self, addr: &str) -> Result<SocketAddr, String> {
        let addr = if addr.is_empty() { format!("0.0.0.0:{}", super::SWARM_PORT) } else { with_port(addr) };
        let sock: SocketAddr = addr.parse().map_err(|_| format!("invalid listen address {addr:?}: use IP[:PORT]"))?;
        let l = TcpListener::bind(sock).map_err(|e| format!("cannot listen on {sock}: {e}"))?;
        let bound = l.local_addr().map_err(|e| format!("cannot listen on {sock}: {e}"))?;
        let l = async_io::Async::new(l).map_err(|e| format!("cannot listen on {sock}: {e}"))?;
        self.swarm.listener = Some(smol::spawn(links::listen(l, self.swarm.keys.clone(), self.swarm.ids.clone(), self.tx.clone())));
        crate::log!("INFO", "swarm port listening on {bound}");
        Ok(bound)
    }

    fn set_local(&mut self, k: &str, v: &str) {
        if let Err(e) = self.store.set_local(k, v) {
            crate::log!("ERROR", "cannot persist {k}: {e}");
        }
    }

    fn manager_infos(&self) -> Vec<ManagerInfo> {
        dispatcher::manager_infos(self.store.state())
    }

    /// Reachable managers (this one included) and all managers, for errors and `node ls`.
    pub(crate) fn reachability(&self) -> (Vec<String>, usize) {
        let managers: Vec<String> =
            self.store.state().nodes.values().filter(|n| n.role == NodeRole::Manager).map(|n| n.id.clone()).collect();
        let total = managers.len().max(self.store.voters().len()).max(1);
        let voters = self.store.voters();
        let mut reachable = vec![self.node_id.clone()];
        for m in managers {
            // Reachable as Swarm means it: a raft voter this manager has a link to.
            if m != self.node_id && self.swarm.established(&m).is_some() && voters.contains(&raft_id(&m)) {
                reachable.push(m);
            }
        }
        (reachable, total)
    }

    /// `shoal info`: this node's view of itself and its swarm (managers
    /// answer from their replicated state, workers from what they were told).
    pub(crate) fn info(&self) -> Reply {
        let state = self.store.state();
        // A manager, or a lone node that ran `swarm init`, holds the swarm's state.
        let knows_state = self.swarm.mode == Mode::Manager || (self.swarm.mode == Mode::Solo && state.cluster.is_some());
        let local_state = if self.swarm.joining.is_some() {
            "pending"
        } else if knows_state || self.swarm.mode == Mode::Worker {
            "active"
        } else {
            "inactive"
        };
        let manager_addrs: Vec<String> = if knows_state {
            let mut v: Vec<String> = self.manager_infos().into_iter().map(|m| m.addr).filter(|a| !a.is_empty()).collect();
            if v.is_empty() && !self.swarm.advertise_addr.is_empty() {
                v.push(with_port(&self.swarm.advertise_addr));
            }
            v
        } else {
            self.swarm.hints.iter().map(|m| m.addr.clone()).collect()
        };
        let mut info = shoal_shared::api::SwarmInfo {
            version: self.version_info(),
            local_state: local_state.to_string(),
            is_manager: knows_state,
            node_addr: self.swarm.advertise_addr.clone(),
            manager_addrs,
            cluster_id: String::new(),
            managers: 0,
            nodes: 0,
            settings: None,
            leader_id: String::new(),
        };
        if knows_state {
            info.cluster_id = state.cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default();
            info.managers = state.nodes.values().filter(|n| n.role == NodeRole::Manager).count() as u64;
            info.nodes = state.nodes.len() as u64;
            info.settings = Some(state.settings.clone());
            info.leader_id = self.leader_node_id().unwrap_or_default();
        }
        Reply::Info(Box::new(info))
    }

    pub(super) fn no_leader_reply(&self) -> Reply {
        let (reachable, total) = self.reachability();
        no_leader(reachable.len(), total)
    }

    pub(super) fn leader_node(&self) -> Option<String> {
        let rid = self.store.leader()?;
        self.node_of_raft(rid).map(|(id, _)| id)
    }

    /// The node id and swarm address of a raft member.
    fn node_of_raft(&self, rid: u64) -> Option<(String, String)> {
        if let Some(n) = self.store.state().nodes.values().find(|n| raft_id(&n.id) == rid) {
            let addr = if n.manager_addr.is_empty() { n.addr.clone() } else { n.manager_addr.clone() };
            return Some((n.id.clone(), addr));
        }
        self.swarm.hints.iter().find(|m| raft_id(&m.node_id) == rid).map(|m| (m.node_id.clone(), m.addr.clone()))
    }

    // ----- control requests --------------------------------------------

    /// The leader and the link to it, when this node can forward to it
    /// (see [`super::router`] for what is forwarded).
    pub(super) fn leader_link(&self) -> Option<(String, u64)> {
        let leader = self.leader_node()?;
        let conn = self.swarm.established(&leader)?;
        Some((leader, conn))
    }

    /// Forwarded requests waiting for the leader.
    pub(super) fn forwards_len(&self) -> usize {
        self.swarm.forwards.len()
    }

    /// Sends a request to `leader` on `conn`; its answer goes to `reply` once
    /// this manager has applied what the answer depends on. Gives the
    /// request back when the link would not take it.
    pub(super) fn forward(
        &mut self,
        req: Request,
        leader: String,
        conn: u64,
        reply: Sender<Reply>,
    ) -> Result<(), (Request, Sender<Reply>)> {
        let id = self.swarm.next_forward;
        self.swarm.next_forward += 1;
        if !self.swarm.send(conn, &Wire::Request { id, req: req.clone() }) {
            return Err((req, reply));
        }
        let deadline = Instant::now() + Duration::from_millis(forward_wait_ms(&req));
        let read = (req.class() == RequestClass::Read).then_some(req);
        self.swarm.forwards.insert(id, Forward { conn, leader, read, reply, deadline, answer: None });
        Ok(())
    }

    /// Proposes a control write. The outcome must go straight back to the
    /// router ([`Daemon::answer`]), which parks it before any outcome is
    /// taken from the store; at once on a lone manager.
    pub(crate) fn write(&mut self, result: Result<(Vec<Op>, Reply), control::ControlError>) -> Outcome {
        let (ops, ok) = match result {
            Ok(v) => v,
            Err(e) => return Outcome::Now(Reply::error(e.kind(), e.to_string())),
        };
        if ops.is_empty() {
            return Outcome::Now(ok);
        }
        if !self.store.is_leader() {
            return Outcome::Now(self.no_leader_reply());
        }
        if self.swarm.parked.len() >= PARKED_WRITES_MAX {
            return Outcome::Now(Reply::error(ErrorKind::Unavailable, "too many writes waiting for a commit; retry in a moment"));
        }
        match self.propose_ops(ops) {
            Ok(Some(proposal)) => Outcome::AfterCommit { proposal, ok },
            Ok(None) => Outcome::Now(ok),
            Err(e) => Outcome::Now(Reply::error(ErrorKind::Unavailable, format!("cannot persist the change: {e}"))),
        }
    }

    /// Holds a write's reply until its proposal commits (or fails, or `WRITE_TIMEOUT_MS` passes).
    pub(super) fn park(&mut self, proposal: Proposal, ok: Reply, reply: Sender<Reply>) {
        let deadline = Instant::now() + Duration::from_millis(WRITE_TIMEOUT_MS);
        self.swarm.parked.push(Parked { proposal, ok, reply, deadline });
        self.resolve_outcomes();
    }

    /// Proposes ops in bounded entries; returns the last proposal.
    pub(crate) fn propose_ops(&mut self, ops: Vec<Op>) -> Result<Option<Proposal>, shoal_manager::store::StoreError> {
        let mut last = None;
        for chunk in ops.chunks(super::OPS_PER_ENTRY_MAX) {
            let entry = Entry { at: self.now(), ops: chunk.to_vec() };
            last = Some(self.store.propose_async(&entry)?);
        }
        Ok(last)
    }

    /// Proposes internal ops (orchestrator, dispatcher); they are tracked so
    /// no pass runs on a state that misses them.
    pub(crate) fn commit_internal(&mut self, ops: Vec<Op>) {
        if ops.is_empty() || !self.store.is_leader() {
            return;
        }
        match self.propose_ops(ops) {
            Ok(Some(p)) => self.swarm.inflight.push((p, Instant::now())),
            Ok(None) => {}
            Err(e) => crate::log!("ERROR", "cannot persist state change: {e}"),
        }
        self.resolve_outcomes();
    }

    /// Status reports: committed here on the leader, sent to it otherwise;
    /// each state of each task is reported once until it shows up applied.
    pub(crate) fn submit_reports(&mut self, ops: Vec<Op>) {
        self.sync_assignments();
        let view = self.assigned();
        let mut fresh = Vec::new();
        for op in ops {
            let Op::SetTaskStatus { id, status } = &op else { continue };
            let Some(t) = view.tasks.get(id) else { continue };
            if t.status.state.advance(status.state).is_err() {
                continue;
            }
            if self.swarm.reported.get(id).is_some_and(|s| *s >= status.state) {
                continue;
            }
            fresh.push(op);
        }
        if fresh.is_empty() {
            return;
        }
        if self.leads() || self.swarm.mode == Mode::Solo {
            for op in &fresh {
                if let Op::SetTaskStatus { id, status } = op {
                    self.swarm.reported.insert(id.clone(), status.state);
                }
            }
            self.commit_internal(fresh);
            return;
        }
        let target = match self.swarm.mode {
            Mode::Worker => self.swarm.peers.any_conn().filter(|c| self.swarm.conns.get(c).is_some_and(|c| c.peer.is_some())),
            _ => self.leader_node().and_then(|l| self.swarm.established(&l)),
        };
        let Some(conn) = target else { return };
        let statuses: Vec<_> = fresh
            .into_iter()
            .filter_map(|op| match op {
                Op::SetTaskStatus { id, status } => Some((id, status)),
                _ => None,
            })
            .collect();
        if self.swarm.send(conn, &Wire::Report { statuses: statuses.clone() }) {
            for (id, s) in statuses {
                self.swarm.reported.insert(id, s.state);
            }
        }
    }

    /// Resolves committed or failed proposals: parked writes, joins, internal work.
    pub(crate) fn resolve_outcomes(&mut self) {
        let outcomes = self.store.take_outcomes();
        if outcomes.is_empty() {
            return;
        }
        for (p, ok) in outcomes {
            self.swarm.inflight.retain(|(q, _)| *q != p);
            if let Some(i) = self.swarm.parked.iter().position(|w| w.proposal == p) {
                let w = self.swarm.parked.swap_remove(i);
                let r = if ok {
                    w.ok
                } else {
                    Reply::error(ErrorKind::Unavailable, "the change was not committed: leadership changed while it was in flight; retry")
                };
                let _ = w.reply.try_send(r);
            }
            if let Some(i) = self.swarm.pending_joins.iter().position(|j| j.proposal == p) {
                let j = self.swarm.pending_joins.swap_remove(i);
                if ok {
                    self.accept_join(j);
                } else {
                    self.swarm.close(j.conn, "the join was not committed (leadership changed); retry");
                }
            }
        }
    }

    /// Periodic swarm work, every loop tick.
    pub(crate) fn swarm_tick(&mut self) {
        let now = Instant::now();
        if self.swarm.mode == Mode::Manager {
            let st = self.store.raft_status();
            let seen = (st.leader, st.term, st.voters.clone(), st.learners.clone());
            if self.swarm.raft_seen.as_ref() != Some(&seen) {
                crate::log!("INFO", "raft: term {} leader {:x} voters {:x?} learners {:x?}", st.term, st.leader, st.voters, st.learners);
                self.swarm.raft_seen = Some(seen);
            }
        }
        // Deadlines.
        let no_leader = self.no_leader_reply();
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.swarm.parked).into_iter().partition(|w| now >= w.deadline);
        self.swarm.parked = kept;
        for w in expired {
            let _ = w.reply.try_send(no_leader.clone());
        }
        self.swarm.inflight.retain(|(_, at)| now.duration_since(*at) < Duration::from_millis(WRITE_TIMEOUT_MS));
        // Forwards whose deadline passed, or whose leader or link went away.
        let leader = self.leader_node();
        let late: Vec<u64> = self
            .swarm
            .forwards
            .iter()
            .filter(|(_, f)| {
                let lost = f.answer.is_none() && (leader.as_deref() != Some(f.leader.as_str()) || !self.swarm.conns.contains_key(&f.conn));
                now >= f.deadline || lost
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(f) = self.swarm.forwards.remove(&id) else { continue };
            match (f.answer, f.read) {
                // Answered but this manager lags: the answer is still right.
                (Some((r, _)), _) => {
                    let _ = f.reply.try_send(r);
                }
                // A read the leader did not answer: this manager's own state answers it.
                (None, Some(req)) => self.run_request(req, Origin::Socket(f.reply)),
                (None, None) => {
                    let r = Reply::error(
                        ErrorKind::Unavailable,
                        format!("lost the leader ({}) while the change was in flight: check with `shoal service ls` / `shoal node ls` and retry", f.leader),
                    );
                    let _ = f.reply.try_send(r);
                }
            }
        }
        self.logs_tick(now);
        self.check_voter_wait(now);
        if let Some(j) = &self.swarm.joining {
            if now >= j.deadline {
                let remote = j.remote.clone();
                self.fail_join(&format!("no answer from {remote} within {} s", JOIN_TIMEOUT_MS / 1000));
            }
        }
        self.sync_leadership();
        if self.leads() {
            self.reconcile_membership();
            self.mark_down();
        }
        self.drain_dispatcher();
        self.maintain_links();
    }

    /// A manager's `swarm join` returns once this node votes in raft (or says why not).
    fn check_voter_wait(&mut self, now: Instant) {
        let Some(w) = &self.swarm.voter_wait else { return };
        let voter = self.swarm.mode == Mode::Manager && self.store.voters().contains(&self.store.raft_id());
        if !voter && now < w.deadline {
            return;
        }
        let Some(w) = self.swarm.voter_wait.take() else { return };
        let r = if voter {
            Reply::Joined { role: NodeRole::Manager, node_id: w.node_id }
        } else {
            Reply::error(
                ErrorKind::Unavailable,
                format!(
                    "this node joined the swarm as a manager but is not a raft voter after {} s (it is still catching up, or the leader cannot reach its --advertise-addr): check `shoal node ls` on a manager",
                    JOIN_VOTER_WAIT_MS / 1000
                ),
            )
        };
        let _ = w.reply.try_send(r);
    }

    /// Leader: raft membership follows node roles, one change at a time.
    fn reconcile_membership(&mut self) {
        let me = self.store.raft_id();
        let status = self.store.raft_status();
        let members: BTreeSet<u64> = status.voters.iter().chain(&status.learners).copied().collect();
        let managers: BTreeSet<u64> =
            self.store.state().nodes.values().filter(|n| n.role == NodeRole::Manager).map(|n| raft_id(&n.id)).collect();
        if !managers.contains(&me) && self.store.state().nodes.contains_key(&self.node_id) {
            // Demoted: hand leadership to the most caught-up other voter first.
            let best = status.progress.iter().filter(|p| p.id != me && status.voters.contains(&p.id)).max_by_key(|p| p.match_index);
            if let Some(p) = best {
                let _ = self.store.transfer_leader(p.id);
            }
            return;
        }
        if let Some(rid) = managers.iter().find(|r| !members.contains(r)) {
            let _ = self.store.add_learner(*rid);
            return;
        }
        if !self.store.promote_caught_up_learners().is_empty() {
            return;
        }
        if let Some(rid) = members.iter().find(|r| **r != me && !managers.contains(r)) {
            let _ = self.store.remove_member(*rid);
        }
    }

    /// Tells the dispatcher whether this node leads now (its sessions end when it stops).
    fn sync_leadership(&mut self) {
        let now_ms = self.mono_ms();
        match self.swarm.dispatcher.handle_leadership(self.leads(), now_ms) {
            Leadership::Gained => crate::log!("INFO", "this node is now the swarm leader"),
            Leadership::Lost => crate::log!("INFO", "this node is no longer the swarm leader; redirecting its workers"),
            Leadership::Unchanged => {}
        }
    }

    /// Leader: nodes without a link for the swarm's dispatcher heartbeat
    /// (`swarm update --dispatcher-heartbeat`; `DISPATCHER_HEARTBEAT_MS_DEFAULT`) are Down.
    fn mark_down(&mut self) {
        let linked: BTreeSet<String> = self.store.state().nodes.keys().filter(|n| self.swarm.established(n).is_some()).cloned().collect();
        let settled = self.swarm.inflight.is_empty();
        let now_ms = self.mono_ms();
        let ops = self.swarm.dispatcher.poll_down(self.store.state(), &self.node_id, now_ms, settled, |n| linked.contains(n));
        self.commit_internal(ops);
    }

    /// Carries out what the dispatcher decided.
    fn drain_dispatcher(&mut self) {
        while let Some(effect) = self.swarm.dispatcher.poll_effect() {
            match effect {
                DispatchEffect::Assign { conn, record, assignments, managers } => {
                    let cluster_key =
                        (record.role == NodeRole::Manager).then(|| self.swarm.cluster_key.as_ref().map(|k| k.private().to_vec())).flatten();
                    let msg = Wire::Assignments {
                        node: *record,
                        tasks: assignments.tasks.into_values().collect(),
                        services: assignments.services.into_values().collect(),
                        managers,
                        leader_id: self.node_id.clone(),
                        cluster_key,
                    };
                    // A failed send closes the link; the node's next session gets them again.
                    self.swarm.send(conn, &msg);
                }
                DispatchEffect::Redirect { conn } => self.redirect_to_leader(conn),
                DispatchEffect::Close { conn, reason } => self.swarm.close(conn, &reason),
                DispatchEffect::Propose(ops) => self.commit_internal(ops),
                DispatchEffect::Log { level, message } => crate::log!(level, "{message}"),
            }
        }
    }

    /// Keeps the links this node wants and drops the others.
    fn maintain_links(&mut self) {
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        match self.swarm.mode {
            Mode::Solo => {}
            Mode::Manager => {
                let status = self.store.raft_status();
                let mut rids: Vec<u64> = status.voters.iter().chain(&status.learners).copied().collect();
                if rids.is_empty() {
                    rids = self.swarm.hints.iter().map(|m| raft_id(&m.node_id)).collect();
                }
                for rid in rids {
                    if rid == self.store.raft_id() {
                        continue;
                    }
                    if let Some((id, addr)) = self.node_of_raft(rid) {
                        if !addr.is_empty() {
                            want.insert(id, addr);
                        }
                    }
                }
            }
            Mode::Worker => {
                let target = self.swarm.leader_hint.clone().or_else(|| {
                    let h = &self.swarm.hints;
                    (!h.is_empty()).then(|| h[self.swarm.hint_next % h.len()].clone())
                });
                if let Some(m) = target {
                    want.insert(m.node_id, m.addr);
                }
            }
        }
        let want: BTreeMap<String, String> = want.into_iter().map(|(id, addr)| (id, with_port(&addr))).collect();
        let ids = self.swarm.ids.clone();
        self.swarm.peers.want(&want, self.mono_ms(), || ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        self.drain_peers();
    }

    /// Carries out what the peers core decided: dials, closes, logs.
    fn drain_peers(&mut self) {
        while let Some(effect) = self.swarm.peers.poll_effect() {
            match effect {
                PeerEffect::Dial { conn, node_id, addr } => {
                    let c = Conn {
                        commands: None,
                        purpose: Purpose::Node,
                        outbound: true,
                        remote: Some(addr),
                        expect: Some(node_id),
                        peer: None,
                        join_role: None,
                        error: None,
                    };
                    self.swarm.conns.insert(conn, c);
                    let payload = wire::encode_node_hello(&self.swarm.advertise_addr);
                    let key = *self.swarm.node_key.private();
                    smol::spawn(links::dial(conn, addr, Purpose::Node, key, payload, None, self.tx.clone())).detach();
                }
                PeerEffect::Close { conn, reason } => self.swarm.close(conn, reason),
                PeerEffect::Log { level, message } => crate::log!(level, "{message}"),
            }
        }
    }

    // ----- link events --------------------------------------------------

    pub(crate) fn on_link_up(&mut self, up: LinkUp) {
        let c = self.swarm.conns.entry(up.conn).or_insert(Conn {
            commands: None,
            purpose: up.purpose,
            outbound: up.outbound,
            remote: None,
            expect: None,
            peer: None,
            join_role: None,
            error: None,
        });
        c.commands = Some(up.commands);
        c.remote = Some(up.remote);
    }

    pub(crate) fn on_link(&mut self, conn: u64, event: LinkEvent) {
        match event {
            LinkEvent::Established { peer_static, peer_payload } => self.on_established(conn, peer_static, &peer_payload),
            LinkEvent::Message(bytes) => match wire::decode(&bytes) {
                Ok(msg) => self.on_message(conn, msg),
                Err(e @ wire::WireError::Unknown { .. }) => {
                    // A newer node's message: ignore it and keep the link (rolling upgrades).
                    let remote = self.swarm.conns.get(&conn).and_then(|c| c.remote);
                    crate::log!("WARN", "ignoring a message from {remote:?}: {e}");
                }
                Err(e) => {
                    let remote = self.swarm.conns.get(&conn).and_then(|c| c.remote);
                    crate::log!("WARN", "closing link to {remote:?}: {e}");
                    self.swarm.close(conn, &format!("malformed message: {e}"));
                }
            },
            LinkEvent::TimedOut => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.error = Some("the peer stopped answering (link timed out)".into());
                }
            }
            LinkEvent::Closed(e) => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.error = Some(match e {
                        LinkError::ClosedByPeer { reason } => format!("refused by the manager: {reason}"),
                        other => other.to_string(),
                    });
                }
            }
        }
    }

    fn on_established(&mut self, conn: u64, peer_static: [u8; 32], payload: &[u8]) {
        let peer = key::node_id_of(&peer_static);
        let Some(c) = self.swarm.conns.get(&conn) else { return };
        let (purpose, outbound, expect, remote) = (c.purpose, c.outbound, c.expect.clone(), c.remote);
        match (purpose, outbound) {
            (Purpose::Node, true) => {
                if expect.as_deref().is_some_and(|e| e != peer) {
                    crate::log!("WARN", "{remote:?} answered with node key {peer}, expected {expect:?}; closing");
                    self.swarm.close(conn, "unexpected node key");
                    return;
                }
                self.accept_peer(conn, &peer);
                let description = self.describe();
                let advertise_addr = self.swarm.advertise_addr.clone();
                self.swarm.send(conn, &Wire::Session { advertise_addr, description });
                if self.swarm.mode == Mode::Worker {
                    self.swarm.reported.clear();
                }
            }
            (Purpose::Node, false) => {
                let known = self.store.state().nodes.contains_key(&peer) || self.swarm.hints.iter().any(|m| m.node_id == peer);
                if self.swarm.mode != Mode::Manager {
                    self.swarm.close(conn, "this node is not a manager");
                } else if !known {
                    crate::log!("WARN", "refused node {peer} from {remote:?}: not a member of this swarm (removed, or never joined)");
                    let reason = format!("{NOT_A_MEMBER} (it was removed, or never joined): join it again with a token");
                    self.swarm.close(conn, &reason);
                } else {
                    let _ = wire::decode_node_hello(payload);
                    self.accept_peer(conn, &peer);
                }
            }
            (Purpose::Join, false) => {
                let Some(cluster) = self.store.state().cluster.clone() else {
                    self.swarm.close(conn, "this manager has no swarm state yet; retry");
                    return;
                };
                let secrets =
                    JoinSecrets { worker: Secret::from_bytes(cluster.worker_secret), manager: Secret::from_bytes(cluster.manager_secret) };
                match token::check_join_hello(payload, &cluster.public_key, &secrets) {
                    Ok(role) => {
                        let role = match role {
                            TokenRole::Worker => NodeRole::Worker,
                            TokenRole::Manager => NodeRole::Manager,
                        };
                        if let Some(c) = self.swarm.conns.get_mut(&conn) {
                            c.peer = Some(peer);
                            c.join_role = Some(role);
                        }
                    }
                    Err(e) => {
                        crate::log!("WARN", "refused join of node {peer} from {remote:?}: {e}");
                        self.swarm.close(conn, &e.to_string());
                    }
                }
            }
            (Purpose::Join, true) => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.peer = Some(peer);
                }
                let Some(j) = &self.swarm.joining else { return };
                let advertise_addr = j.advertise_addr.clone();
                let availability = j.availability;
                let description = self.describe();
                self.swarm.send(conn, &Wire::JoinRequest { advertise_addr, availability, description });
            }
        }
    }

    /// Whether `peer` is a manager as far as this node knows (state, or the
    /// managers it was told about when it joined).
    fn is_manager_peer(&self, peer: &str) -> bool {
        match self.store.state().nodes.get(peer) {
            Some(n) => n.role == NodeRole::Manager,
            None => self.swarm.hints.iter().any(|m| m.node_id == peer),
        }
    }

    fn accept_peer(&mut self, conn: u64, peer: &str) {
        if let Some(c) = self.swarm.conns.get_mut(&conn) {
            c.peer = Some(peer.to_string());
        }
        self.swarm.dispatcher.handle_link_up(peer);
    }

    pub(crate) fn on_link_gone(&mut self, conn: u64, dial_error: Option<String>) {
        let Some(mut c) = self.swarm.conns.remove(&conn) else { return };
        if dial_error.is_some() {
            c.error = dial_error;
        }
        if let Some(peer) = &c.peer {
            let still_linked = self.swarm.established(peer).is_some();
            let now_ms = self.mono_ms();
            self.swarm.dispatcher.handle_link_down(peer, conn, still_linked, now_ms);
        }
        let now_ms = self.mono_ms();
        let lost = self.swarm.peers.handle_gone(conn, c.error.as_deref(), now_ms, &mut self.rng);
        self.drain_peers();
        if let (Some(id), Mode::Worker) = (lost, self.swarm.mode) {
            // Try the next manager next time unless a redirect named the leader.
            if self.swarm.leader_hint.as_ref().is_some_and(|l| l.node_id == id) {
                self.swarm.leader_hint = None;
            }
            self.swarm.hint_next += 1;
        }
        if self.swarm.joining.as_ref().is_some_and(|j| j.conn == conn) {
            let why = c.error.unwrap_or_else(|| "the manager closed the connection".into());
            self.fail_join(&why);
        }
        for j in self.swarm.pending_joins.iter().filter(|j| j.conn == conn) {
            crate::log!("INFO", "node {} left before its join was answered", j.node_id);
        }
        self.logs_link_gone(conn);
    }

    fn on_message(&mut self, conn: u64, msg: Wire) {
        let Some(c) = self.swarm.conns.get(&conn) else { return };
        let Some(peer) = c.peer.clone() else {
            self.swarm.close(conn, "message before the handshake was accepted");
            return;
        };
        // The peer answered: this link is useful (its loss starts the backoff over).
        self.swarm.peers.handle_useful(&peer);
        let purpose = c.purpose;
        let join_role = c.join_role;
        match (purpose, msg) {
            (Purpose::Node, Wire::Raft(bytes)) => {
                // Only managers take part in raft: a worker's key cannot disturb elections.
                // (A member being demoted still counts until raft has removed it.)
                if self.swarm.mode != Mode::Manager || !(self.is_manager_peer(&peer) || self.store.is_member(raft_id(&peer))) {
                    return;
                }
                match raft::decode(&bytes) {
                    Ok(m) if m.from == raft_id(&peer) => match self.store.step(m) {
                        Ok(msgs) => self.route_raft(msgs),
                        Err(e) => crate::log!("WARN", "raft message from {peer} refused: {e}"),
                    },
                    Ok(m) => {
                        crate::log!("WARN", "node {peer} sent a raft message as {}; closing", m.from);
                        self.swarm.close(conn, "raft sender does not match the link's key");
                    }
                    Err(e) => crate::log!("WARN", "undecodable raft message from {peer}: {e}"),
                }
            }
            (Purpose::Node, Wire::Session { advertise_addr, description }) => self.on_session(conn, &peer, advertise_addr, description),
            (Purpose::Node, Wire::Assignments { node, tasks, services, managers, leader_id, cluster_key }) => {
                self.on_assignments(node, tasks, services, managers, leader_id, cluster_key)
            }
            (Purpose::Node, Wire::Report { statuses }) => {
                if !self.leads() {
                    return;
                }
                let mut ops = Vec::new();
                for (id, status) in statuses {
                    let Some(t) = self.store.state().tasks.get(&id) else { continue };
                    if t.node_id == peer && t.status.state.advance(status.state).is_ok() {
                        ops.push(Op::SetTaskStatus { id, status });
                    }
                }
                self.commit_internal(ops);
            }
            (Purpose::Node, Wire::Request { id, req }) => {
                if !self.is_manager_peer(&peer) {
                    // Workers cannot view or change cluster state, not even by forwarding.
                    crate::log!("WARN", "node {peer} is not a manager but forwarded a request; closing");
                    self.swarm.close(conn, "only managers may forward requests");
                    return;
                }
                self.route(req, Origin::Peer { conn, id });
            }
            (Purpose::Node, Wire::Reply { id, mut reply, index }) => {
                // `node ls` marks the node the CLI asked (Docker's `*`), not the leader that answered.
                if let Reply::Nodes { self_id, .. } = &mut reply {
                    self_id.clone_from(&self.node_id);
                }
                if let Some(f) = self.swarm.forwards.get_mut(&id) {
                    f.answer = Some((reply, index));
                }
                self.release_forwards();
            }
            (Purpose::Node, msg @ (Wire::LogsRequest { .. } | Wire::LogsReply { .. })) => self.on_logs_message(conn, &peer, msg),
            (_, Wire::Redirect { leader_id, leader_addr }) => self.on_redirect(conn, leader_id, leader_addr),
            (Purpose::Join, Wire::JoinRequest { advertise_addr, availability, description }) => {
                let Some(role) = join_role else { return };
                self.on_join_request(conn, &peer, role, advertise_addr, availability, description);
            }
            (Purpose::Join, Wire::JoinAccepted { node_id, role, cluster_id, managers, cluster_key }) => {
                self.on_join_accepted(conn, node_id, role, cluster_id, managers, cluster_key)
            }
            (_, other) => {
                crate::log!("WARN", "unexpected {} message from {peer}; closing", variant_name(&other));
                self.swarm.close(conn, "unexpected message");
            }
        }
    }

    /// Hands forwarded answers to the CLI once this manager has caught up with them.
    pub(crate) fn release_forwards(&mut self) {
        let applied = self.store.state().applied_index;
        let ready: Vec<u64> =
            self.swarm.forwards.iter().filter(|(_, f)| f.answer.as_ref().is_some_and(|(_, i)| *i <= applied)).map(|(id, _)| *id).collect();
        for id in ready {
            if let Some(Forward { reply, answer: Some((r, _)), .. }) = self.swarm.forwards.remove(&id) {
                let _ = reply.try_send(r);
            }
        }
    }

    /// A forwarded request was answered: the reply carries the index this
    /// node had applied, so the follower relays it once it has caught up.
    pub(crate) fn on_forward_done(&mut self, conn: u64, id: u64, reply: Reply) {
        let index = self.store.state().applied_index;
        self.answer_peer(conn, id, reply, index);
    }

    /// Sends the answer to request `id` forwarded on link `conn`.
    pub(super) fn answer_peer(&mut self, conn: u64, id: u64, reply: Reply, index: u64) {
        self.swarm.send(conn, &Wire::Reply { id, reply, index });
    }

    fn on_redirect(&mut self, conn: u64, leader_id: String, leader_addr: String) {
        if self.swarm.joining.as_ref().is_some_and(|j| j.conn == conn) {
            let Some(j) = self.swarm.joining.as_mut() else { return };
            j.redirects += 1;
            if j.redirects > JOIN_REDIRECTS_MAX || leader_addr.is_empty() {
                self.fail_join("the swarm has no reachable leader to admit this node");
                return;
            }
            let (token, remote) = (j.token.clone(), leader_addr.clone());
            self.swarm.close(conn, "redirected");
            self.dial_join(token, &remote);
            return;
        }
        if self.swarm.mode == Mode::Worker {
            self.swarm.leader_hint = (!leader_addr.is_empty()).then_some(ManagerInfo { node_id: leader_id, addr: leader_addr });
            self.swarm.close(conn, "redirected to the leader");
            let now_ms = self.mono_ms();
            self.swarm.peers.retry_now(now_ms);
        }
    }

    // ----- dispatcher (leader) ------------------------------------------

    fn on_session(&mut self, conn: u64, peer: &str, advertise_addr: String, description: shoal_shared::types::NodeDescription) {
        self.sync_leadership();
        self.swarm.dispatcher.handle_session(self.store.state(), conn, peer, &advertise_addr, description);
        self.drain_dispatcher();
    }

    /// Tells the peer on `conn` where the leader is (empty when unknown).
    fn redirect_to_leader(&mut self, conn: u64) {
        let (leader_id, leader_addr) = self
            .leader_node()
            .and_then(|l| self.store.state().nodes.get(&l).map(|n| (n.id.clone(), n.manager_addr.clone())))
            .unwrap_or_default();
        self.swarm.send(conn, &Wire::Redirect { leader_id, leader_addr });
    }

    /// Leader: sends each worker session its assignments when they changed.
    pub(crate) fn dispatch(&mut self) {
        self.sync_leadership();
        if self.leads() {
            // A manager that runs raft (it has acknowledged entries) plans from its replica. One
            // promoted while still in worker mode is a raft member already but needs these
            // assignments (they carry the cluster key) to start raft at all.
            let status = self.store.raft_status();
            let running: BTreeSet<u64> = status.progress.iter().filter(|p| p.match_index > 0).map(|p| p.id).collect();
            self.swarm.dispatcher.dispatch(self.store.state(), |n| running.contains(&raft_id(n)));
        }
        self.drain_dispatcher();
    }

    fn on_assignments(
        &mut self,
        node: Node,
        tasks: Vec<shoal_shared::types::Task>,
        services: Vec<shoal_shared::types::Service>,
        managers: Vec<ManagerInfo>,
        leader_id: String,
        cluster_key: Option<Vec<u8>>,
    ) {
        if self.swarm.mode != Mode::Worker || node.id != self.node_id {
            return;
        }
        if !managers.is_empty() && managers != self.swarm.hints {
            self.swarm.hints = managers.clone();
            let h = encode_hints(&managers);
            self.set_local(LOCAL_MANAGERS, &h);
        }
        if let Some(l) = managers.iter().find(|m| m.node_id == leader_id) {
            self.swarm.leader_hint = Some(l.clone());
        }
        if node.role == NodeRole::Manager {
            if let Some(k) = cluster_key.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()) {
                self.become_manager(k);
                return;
            }
        }
        let assigned = Assignments::new(&self.node_id, tasks, services);
        for t in assigned.tasks.values() {
            if self.swarm.reported.get(&t.id).is_some_and(|r| t.status.state >= *r) {
                self.swarm.reported.remove(&t.id);
            }
        }
        self.swarm.assigned = Some(assigned);
        self.swarm.assigned_at = None;
    }

    /// Forgets reports the replicated state has caught up with (managers).
    pub(crate) fn prune_reported(&mut self) {
        if self.swarm.reported.is_empty() || self.swarm.mode == Mode::Worker {
            return;
        }
        let tasks = &self.store.state().tasks;
        self.swarm.reported.retain(|id, s| tasks.get(id).is_some_and(|t| t.status.state < *s));
    }

    // ----- role changes -------------------------------------------------

    /// Manager whose node record says Worker: leave raft and become a worker.
    pub(crate) fn check_demotion(&mut self) {
        if self.swarm.mode != Mode::Manager {
            return;
        }
        let demoted =
            self.store.state().cluster.is_some() && self.store.state().nodes.get(&self.node_id).is_some_and(|n| n.role == NodeRole::Worker);
        if !demoted {
            self.swarm.demoted_at = None;
            // Promoted again before the demotion took effect: a parked leave is answered as a manager's.
            if let Some((force, reply)) = self.swarm.leave_after_demotion.take() {
                let r = self.leave_now(force);
                let _ = reply.try_send(r);
            }
            return;
        }
        let at = *self.swarm.demoted_at.get_or_insert_with(Instant::now);
        let removed = !self.store.is_member(self.store.raft_id());
        if !removed && at.elapsed() < Duration::from_millis(DEMOTION_GRACE_MS) {
            return;
        }
        crate::log!("INFO", "this node was demoted: leaving raft and running as a worker");
        let hints: Vec<ManagerInfo> = self.manager_infos().into_iter().filter(|m| m.node_id != self.node_id).collect();
        self.swarm.close_all("demoted");
        self.swarm.hints = hints.clone();
        self.set_local(LOCAL_MANAGERS, &encode_hints(&hints));
        self.set_local(LOCAL_MODE, "worker");
        let _ = std::fs::remove_file(self.cfg.data_dir.join(key::CLUSTER_KEY_FILE));
        self.swarm.cluster_key = None;
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.cluster = None;
        }
        if let Err(e) = self.store.reset(Bootstrap::Join) {
            crate::log!("ERROR", "cannot reset raft state after demotion: {e}");
        }
        self.swarm.mode = Mode::Worker;
        self.swarm.assigned = None;
        self.swarm.demoted_at = None;
        if let Some((force, reply)) = self.swarm.leave_after_demotion.take() {
            let r = self.leave_now(force);
            let _ = reply.try_send(r);
        }
    }

    fn become_manager(&mut self, cluster_private: [u8; 32]) {
        let Ok(k) = NodeKey::from_private(cluster_private) else {
            crate::log!("ERROR", "the leader sent an invalid cluster key; staying a worker");
            return;
        };
        if let Err(e) = key::save(&self.cfg.data_dir.join(key::CLUSTER_KEY_FILE), &k) {
            crate::log!("ERROR", "cannot store the cluster key: {e}; staying a worker");
            return;
        }
        crate::log!("INFO", "this node was promoted: joining raft as a manager");
        if let Ok(mut keys) = self.swarm.keys.lock() {
            keys.cluster = Some(*k.private());
        }
        self.swarm.cluster_key = Some(k);
        if let Err(e) = self.store.reset(Bootstrap::Join) {
            crate::log!("ERROR", "cannot reset raft state for promotion: {e}");
            return;
        }
        self.set_local(LOCAL_MODE, "manager");
        self.swarm.close_all("promoted");
        self.swarm.mode = Mode::Manager;
    }

    // ----- init, join, leave --------------------------------------------

    pub(crate) fn swarm_init(&mut self, advertise_addr: String, listen_addr: String, availability: Availability, force: bool) -> Outcome {
        if self.swarm.mode == Mode::Manager && force {
            if let Err(e) = self.store.force_new_cluster() {
                return Outcome::Now(Reply::error(ErrorKind::Internal, format!("cannot force a new cluster: {e}")));
            }
            crate::log!("WARN", "forced a new cluster: this node is now the only manager");
            self.swarm.close_all("forced a new cluster");
            let mut ops = Vec::new();
            if let Some(mut me) = self.store.state().nodes.get(&self.node_id).cloned() {
                if !advertise_addr.is_empty() {
                    me.addr = with_port_or(&advertise_addr, port_of(&self.swarm.listen_addr).unwrap_or(super::SWARM_PORT));
                    me.manager_addr = me.addr.clone();
                    self.swarm.advertise_addr = me.addr.clone();
                    let a = me.addr.clone();
                    self.set_local(LOCAL_ADVERTISE, &a);
                }
                me.state = NodeState::Ready;
                ops.push(Op::PutNode(me));
            }
            // Other managers are gone from raft: record them as workers so
            // membership reconciliation does not wait for them.
            for n in self.store.state().nodes.values() {
                if n.role == NodeRole::Manager && n.id != self.node_id {
                    let mut w = n.clone();
                    w.role = NodeRole::Worker;
                    w.manager_addr.clear();
                    w.state = NodeState::Down;
                    ops.push(Op::PutNode(w));
                }
            }
            let ok = self.init_reply();
            return self.write(Ok((ops, ok)));
        }
        if self.swarm.mode != Mode::Solo || self.store.state().cluster.is_some() {
            let e = control::ControlError::AlreadyInSwarm;
            return Outcome::Now(Reply::error(e.kind(), e.to_string()));
        }
        let listen = if listen_addr.is_empty() { format!("0.0.0.0:{}", super::SWARM_PORT) } else { with_port(&listen_addr) };
        let made = (|| -> Result<(NodeKey, [u8; 16], [u8; 16]), String> {
            let k = NodeKey::generate().map_err(|e| e.to_string())?;
            key::save(&self.cfg.data_dir.join(key::CLUSTER_KEY_FILE), &k).map_err(|e| e.to_string())?;
            Ok((k, secret_bytes()?, secret_bytes()?))
        })();
        let (ck, ws, ms) = match made {
            Ok(v) => v,
            Err(e) => {
                return Outcome::Now(Reply::error(ErrorKind::Internal, format!("cannot create the cluster identity: {e}")));
            }
        };
        let bound = match self.listen(&listen) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Now(Reply::error(ErrorKind::InvalidArgument, e));
            }
        };
        // Advertised without a port: the port actually listened on (Docker advertises the listen port);
        // a port picked by the system (0) is kept, so a restart listens where the swarm was told to dial.
        let listen = bound.to_string();
        let port = bound.port();
        let addr =
            if advertise_addr.is_empty() { format!("{}:{port}", crate::host::default_addr()) } else { with_port_or(&advertise_addr, port) };
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.cluster = Some(*ck.private());
        }
        let cluster = Cluster {
            id: self.rng.object_id(),
            meta: Meta::default(),
            name: "default".into(),
            public_key: *ck.public(),
            worker_secret: ws,
            manager_secret: ms,
        };
        self.swarm.cluster_key = Some(ck);
        let node = Node {
            id: self.node_id.clone(),
            meta: Meta::default(),
            role: NodeRole::Manager,
            availability,
            labels: Default::default(),
            description: self.describe(),
            state: NodeState::Ready,
            addr: addr.clone(),
            manager_addr: addr.clone(),
        };
        self.swarm.mode = Mode::Manager;
        self.swarm.listen_addr = listen.clone();
        self.swarm.advertise_addr = addr.clone();
        self.set_local(LOCAL_MODE, "manager");
        self.set_local(LOCAL_LISTEN, &listen);
        self.set_local(LOCAL_ADVERTISE, &addr);
        let ops = vec![Op::PutCluster(cluster.clone()), Op::PutNode(node)];
        let token = JoinToken::generate(&cluster.public_key, Secret::from_bytes(ws)).to_string();
        self.write(Ok((ops, Reply::SwarmInit { node_id: self.node_id.clone(), advertise_addr: addr, worker_token: token })))
    }

    fn init_reply(&self) -> Reply {
        let token = self
            .store
            .state()
            .cluster
            .as_ref()
            .map(|c| JoinToken::generate(&c.public_key, Secret::from_bytes(c.worker_secret)).to_string())
            .unwrap_or_default();
        Reply::SwarmInit { node_id: self.node_id.clone(), advertise_addr: self.swarm.advertise_addr.clone(), worker_token: token }
    }

    /// `swarm join-token [--rotate]` (on the leader when rotating).
    pub(crate) fn join_token(&mut self, role: NodeRole, rotate: bool) -> Outcome {
        let Some(mut cluster) = self.store.state().cluster.clone() else {
            let e = control::ControlError::NotInSwarm;
            return Outcome::Now(Reply::error(e.kind(), e.to_string()));
        };
        let addr = self.store.state().nodes.get(&self.node_id).map(|n| n.manager_addr.clone()).unwrap_or_default();
        let mut ops = Vec::new();
        if rotate {
            let s = match secret_bytes() {
                Ok(s) => s,
                Err(e) => {
                    return Outcome::Now(Reply::error(ErrorKind::Internal, e));
                }
            };
            match role {
                NodeRole::Worker => cluster.worker_secret = s,
                NodeRole::Manager => cluster.manager_secret = s,
            }
            ops.push(Op::PutCluster(cluster.clone()));
        }
        let secret = match role {
            NodeRole::Worker => cluster.worker_secret,
            NodeRole::Manager => cluster.manager_secret,
        };
        let token = JoinToken::generate(&cluster.public_key, Secret::from_bytes(secret)).to_string();
        self.write(Ok((ops, Reply::JoinToken { role, token, manager_addr: addr })))
    }

    pub(crate) fn swarm_join(
        &mut self,
        token: String,
        remote: String,
        advertise_addr: String,
        listen_addr: String,
        availability: Availability,
        reply: &Sender<Reply>,
    ) -> Outcome {
        if self.swarm.mode != Mode::Solo || self.store.state().cluster.is_some() {
            let e = control::ControlError::AlreadyInSwarm;
            return Outcome::Now(Reply::error(e.kind(), e.to_string()));
        }
        if self.swarm.joining.is_some() {
            return Outcome::Now(Reply::error(ErrorKind::FailedPrecondition, "a join is already in progress on this node; wait for it"));
        }
        let token = match JoinToken::parse(&token) {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Now(Reply::error(ErrorKind::InvalidArgument, e.to_string()));
            }
        };
        let listen = if listen_addr.is_empty() { format!("0.0.0.0:{}", super::SWARM_PORT) } else { with_port(&listen_addr) };
        let port = match port_of(&listen) {
            Some(p) if p != 0 => p,
            _ => {
                let m = format!("invalid --listen-addr {listen:?}: a joining node needs a fixed swarm port (IP[:PORT], PORT not 0)");
                return Outcome::Now(Reply::error(ErrorKind::InvalidArgument, m));
            }
        };
        let advertise =
            if advertise_addr.is_empty() { format!("{}:{port}", crate::host::default_addr()) } else { with_port_or(&advertise_addr, port) };
        self.swarm.joining = Some(Joining {
            token: token.clone(),
            remote: remote.clone(),
            advertise_addr: advertise,
            listen_addr: listen,
            availability,
            reply: reply.clone(),
            conn: 0,
            redirects: 0,
            deadline: Instant::now() + Duration::from_millis(JOIN_TIMEOUT_MS),
        });
        self.dial_join(token, &remote);
        Outcome::Later
    }

    fn dial_join(&mut self, token: JoinToken, remote: &str) {
        let addr = with_port(remote);
        let sock = match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(s)) => s,
            _ => {
                self.fail_join(&format!("invalid manager address {remote:?}: use IP[:PORT]"));
                return;
            }
        };
        let conn = self.swarm.ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(j) = self.swarm.joining.as_mut() {
            j.conn = conn;
            j.remote = addr;
        }
        self.swarm.conns.insert(
            conn,
            Conn {
                commands: None,
                purpose: Purpose::Join,
                outbound: true,
                remote: Some(sock),
                expect: None,
                peer: None,
                join_role: None,
                error: None,
            },
        );
        let payload = token::encode_join_hello(&token);
        let pin = Some(token.cluster_key_digest);
        smol::spawn(links::dial(conn, sock, Purpose::Join, *self.swarm.node_key.private(), payload, pin, self.tx.clone())).detach();
    }

    fn fail_join(&mut self, why: &str) {
        if let Some(j) = self.swarm.joining.take() {
            crate::log!("WARN", "join of the swarm at {} failed: {why}", j.remote);
            let _ = j.reply.try_send(Reply::error(ErrorKind::Unavailable, format!("cannot join the swarm at {}: {why}", j.remote)));
            self.swarm.close(j.conn, "join failed");
        }
    }

    fn on_join_request(
        &mut self,
        conn: u64,
        peer: &str,
        role: NodeRole,
        advertise_addr: String,
        availability: Availability,
        description: shoal_shared::types::NodeDescription,
    ) {
        if !self.leads() {
            self.redirect_to_leader(conn);
            return;
        }
        let remote_ip = self.swarm.conns.get(&conn).and_then(|c| c.remote).map(|a| a.ip().to_string()).unwrap_or_default();
        let addr = if advertise_addr.is_empty() { format!("{remote_ip}:{}", super::SWARM_PORT) } else { with_port(&advertise_addr) };
        let existing = self.store.state().nodes.get(peer).cloned();
        let node = Node {
            id: peer.to_string(),
            meta: existing.as_ref().map(|n| n.meta.clone()).unwrap_or_default(),
            role,
            availability,
            labels: existing.map(|n| n.labels).unwrap_or_default(),
            description,
            state: NodeState::Ready,
            addr: addr.clone(),
            manager_addr: if role == NodeRole::Manager { addr.clone() } else { String::new() },
        };
        match self.propose_ops(vec![Op::PutNode(node)]) {
            Ok(Some(proposal)) => {
                crate::log!("INFO", "node {peer} at {addr} joins as a {}", if role == NodeRole::Manager { "manager" } else { "worker" });
                self.swarm.pending_joins.push(PendingJoin { proposal, conn, node_id: peer.to_string(), role });
                self.resolve_outcomes();
            }
            Ok(None) => {}
            Err(e) => self.swarm.close(conn, &format!("the manager cannot record the node: {e}")),
        }
    }

    fn accept_join(&mut self, j: PendingJoin) {
        let cluster_id = self.store.state().cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default();
        let cluster_key = (j.role == NodeRole::Manager).then(|| self.swarm.cluster_key.as_ref().map(|k| k.private().to_vec())).flatten();
        let msg = Wire::JoinAccepted { node_id: j.node_id, role: j.role, cluster_id, managers: self.manager_infos(), cluster_key };
        self.swarm.send(j.conn, &msg);
    }

    fn on_join_accepted(
        &mut self,
        conn: u64,
        node_id: String,
        role: NodeRole,
        _cluster_id: String,
        managers: Vec<ManagerInfo>,
        cluster_key: Option<Vec<u8>>,
    ) {
        let Some(j) = self.swarm.joining.take() else { return };
        self.swarm.close(conn, "joined");
        if node_id != self.node_id {
            let _ = j.reply.try_send(Reply::error(
                ErrorKind::Internal,
                format!("the manager recorded this node as {node_id}, expected {}", self.node_id),
            ));
            return;
        }
        if role == NodeRole::Manager {
            let Some(k) = cluster_key.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()).and_then(|k| NodeKey::from_private(k).ok())
            else {
                let _ = j.reply.try_send(Reply::error(ErrorKind::Internal, "the manager did not send a valid cluster key"));
                return;
            };
            if let Err(e) = key::save(&self.cfg.data_dir.join(key::CLUSTER_KEY_FILE), &k) {
                let _ = j.reply.try_send(Reply::error(ErrorKind::Internal, format!("cannot store the cluster key: {e}")));
                return;
            }
            if let Ok(mut keys) = self.swarm.keys.lock() {
                keys.cluster = Some(*k.private());
            }
            self.swarm.cluster_key = Some(k);
            if let Err(e) = self.store.reset(Bootstrap::Join) {
                let _ = j.reply.try_send(Reply::error(ErrorKind::Internal, format!("cannot prepare raft state: {e}")));
                return;
            }
        }
        if let Err(e) = self.listen(&j.listen_addr) {
            crate::log!("ERROR", "{e}");
        }
        self.swarm.mode = if role == NodeRole::Manager { Mode::Manager } else { Mode::Worker };
        self.swarm.hints = managers.clone();
        self.swarm.listen_addr = j.listen_addr.clone();
        self.swarm.advertise_addr = j.advertise_addr.clone();
        self.swarm.assigned = None;
        self.set_local(LOCAL_MANAGERS, &encode_hints(&managers));
        self.set_local(LOCAL_LISTEN, &j.listen_addr);
        self.set_local(LOCAL_ADVERTISE, &j.advertise_addr);
        self.set_local(LOCAL_MODE, if role == NodeRole::Manager { "manager" } else { "worker" });
        crate::log!("INFO", "joined the swarm as a {}", if role == NodeRole::Manager { "manager" } else { "worker" });
        if role == NodeRole::Manager {
            let deadline = Instant::now() + Duration::from_millis(JOIN_VOTER_WAIT_MS);
            self.swarm.voter_wait = Some(VoterWait { reply: j.reply, node_id, deadline });
            return;
        }
        let _ = j.reply.try_send(Reply::Joined { role, node_id });
    }

    /// `swarm leave`: at once, or, on a manager being demoted, once it is a worker.
    pub(crate) fn swarm_leave(&mut self, force: bool, reply: &Sender<Reply>) -> Outcome {
        let demoted = self.store.state().nodes.get(&self.node_id).is_some_and(|n| n.role == NodeRole::Worker);
        if self.swarm.mode == Mode::Manager && demoted {
            // Demoted, and leaving raft: leave as the worker it is about to be (leaving raft
            // first keeps a two-manager swarm's quorum), as Swarm switches at once.
            self.swarm.leave_after_demotion = Some((force, reply.clone()));
            self.check_demotion();
            return Outcome::Later;
        }
        Outcome::Now(self.leave_now(force))
    }

    fn leave_now(&mut self, force: bool) -> Reply {
        match self.swarm.mode {
            Mode::Solo if self.store.state().cluster.is_none() => {
                return Reply::error(ErrorKind::FailedPrecondition, "this node is not part of a swarm");
            }
            Mode::Manager | Mode::Solo if !force => {
                let managers = self.store.state().nodes.values().filter(|n| n.role == NodeRole::Manager).count().max(1);
                let msg = if managers <= 1 {
                    "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.".to_string()
                } else {
                    format!(
                        "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves {} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.",
                        managers - 1
                    )
                };
                return Reply::error(ErrorKind::FailedPrecondition, msg);
            }
            _ => {}
        }
        self.swarm.close_all("left the swarm");
        self.swarm.listener = None;
        for k in [LOCAL_MODE, LOCAL_MANAGERS, LOCAL_LISTEN, LOCAL_ADVERTISE] {
            if let Err(e) = self.store.remove_local(k) {
                crate::log!("ERROR", "cannot clear {k}: {e}");
            }
        }
        let _ = std::fs::remove_file(self.cfg.data_dir.join(key::CLUSTER_KEY_FILE));
        self.swarm.cluster_key = None;
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.cluster = None;
        }
        if let Err(e) = self.store.reset(Bootstrap::Single) {
            return Reply::error(ErrorKind::Internal, format!("cannot erase the swarm state: {e}"));
        }
        self.swarm.mode = Mode::Solo;
        self.swarm.hints.clear();
        self.swarm.leader_hint = None;
        self.swarm.assigned = None;
        self.swarm.reported.clear();
        crate::log!("INFO", "left the swarm; this node's tasks are stopped");
        Reply::Left
    }

    /// Sends raft's queued messages to their members.
    pub(crate) fn flush_raft(&mut self) {
        let msgs = self.store.take_messages();
        self.route_raft(msgs);
    }

    /// Sends raft messages to their members (dropped when no link is up: raft retries).
    pub(crate) fn route_raft(&mut self, msgs: Vec<raft::Message>) {
        if msgs.is_empty() || self.swarm.mode != Mode::Manager {
            return;
        }
        for m in msgs {
            let Some((node, _)) = self.node_of_raft(m.to) else { continue };
            if let Some(conn) = self.swarm.established(&node) {
                self.swarm.send(conn, &Wire::Raft(raft::encode(&m)));
            }
        }
    }
}

fn variant_name(w: &Wire) -> &'static str {
    match w {
        Wire::JoinRequest { .. } => "join request",
        Wire::JoinAccepted { .. } => "join accepted",
        Wire::Redirect { .. } => "redirect",
        Wire::Raft(_) => "raft",
        Wire::Session { .. } => "session",
        Wire::Assignments { .. } => "assignments",
        Wire::Report { .. } => "report",
        Wire::Request { .. } => "request",
        Wire::Reply { .. } => "reply",
        Wire::LogsRequest { .. } => "logs request",
        Wire::LogsReply { .. } => "logs reply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_address_takes_the_listen_port() {
        assert_eq!(with_port_or("127.0.0.1", 2477), "127.0.0.1:2477");
        assert_eq!(with_port_or("127.0.0.1:9", 2477), "127.0.0.1:9");
        assert_eq!(port_of("0.0.0.0:2477"), Some(2477));
        assert_eq!(port_of("0.0.0.0:x"), None);
    }

    #[test]
    fn addresses_get_the_swarm_port() {
        assert_eq!(with_port("10.0.0.1"), "10.0.0.1:2377");
        assert_eq!(with_port("10.0.0.1:4000"), "10.0.0.1:4000");
        assert_eq!(with_port("manager"), "manager:2377");
        assert_eq!(with_port("manager:7"), "manager:7");
    }

    #[test]
    fn hints_round_trip() {
        let h = vec![
            ManagerInfo { node_id: "a".into(), addr: "10.0.0.1:2377".into() },
            ManagerInfo { node_id: "b".into(), addr: "x:1".into() },
        ];
        assert_eq!(decode_hints(&encode_hints(&h)), h);
        assert!(decode_hints("").is_empty());
        assert!(decode_hints("garbage").is_empty());
    }

    #[test]
    fn quorum_message_says_what_to_do() {
        let Reply::Error { message, .. } = no_leader(1, 3) else { panic!() };
        assert_eq!(
            message,
            "the swarm does not have a leader: 1 of 3 managers reachable; restore quorum or run `shoal swarm init --force-new-cluster` on a surviving manager"
        );
    }
}
