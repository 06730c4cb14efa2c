//! The daemon's multi-node half: membership (init, join, leave, promote,
//! demote, rm), links to other nodes, raft transport, the leader's
//! dispatcher, worker sessions and request forwarding.
//!
//! Owns [`Swarm`], the loop's memory of connections, dials, sessions and
//! requests in flight. Connection tasks live in [`super::links`]; the
//! decisions are made on the event loop, by sans-IO cores where they have
//! been carved out ([`peers`] for wanted links and backoff,
//! `shoal_manager::dispatcher` for sessions, assignments and Down) and by
//! this module's children otherwise: [`connections`] (handshakes, admission,
//! message routing), [`requests`] (forwarding, parked writes, reports),
//! [`dispatch`] (the dispatcher's shell), [`membership`] (init, join, leave,
//! promotion, demotion, raft membership) and [`logs`].
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

mod admit;
pub(crate) mod autopilot;
pub(crate) mod blobs;
mod connections;
mod dispatch;
mod join;
pub(crate) mod logs;
mod membership;
mod peers;
mod pending;
pub(crate) mod pulls;
mod requests;
pub(crate) mod tunnel_keys;

use super::links::{ConnIds, LinkUp, ListenKeys, Purpose};
use super::router::{Origin, Outcome};
use super::Daemon;
use crate::net::Command;
use async_channel::Sender;
use join::{port_of, with_port_or};
use peers::{PeerEffect, Peers};
use pending::{Pending, PendingEffect};
use shoal_manager::control;
use shoal_manager::dispatcher::{self, Dispatcher, Effect as DispatchEffect, Leadership};
use shoal_manager::raft;
use shoal_manager::store::{raft_id, Bootstrap, Proposal};
use shoal_shared::api::{ErrorKind, Reply, Request};
use shoal_shared::assignments::Assignments;
use shoal_shared::noise::key::{self, NodeKey};
use shoal_shared::noise::link::{Event as LinkEvent, LinkError};
use shoal_shared::noise::token::{self, JoinSecrets, JoinToken, Role as TokenRole, Secret};
use shoal_shared::ops::{Entry, Op};
use shoal_shared::task::TaskState;
use shoal_shared::types::{Availability, Cluster, LinkProfile, Meta, Node, NodeRole, NodeState};
use shoal_shared::wire::{self, ManagerInfo, Wire};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

/// A join gives up after this long (dial, redirects, commit).
pub const JOIN_TIMEOUT_MS: u64 = 20_000;
/// A manager's join then waits at most this long to become a raft voter
/// (within the CLI's 30 s: `JOIN_TIMEOUT_MS` plus this).
pub const JOIN_VOTER_WAIT_MS: u64 = 8_000;
/// Redirects a join or a worker follows before giving up on a round.
pub const JOIN_REDIRECTS_MAX: u32 = 3;
/// How often the leader tells a linked manager that missed its demotion
/// (see `Daemon::tell_stale_managers`).
pub const STALE_MANAGER_TELL_MS: u64 = 2_000;
/// A worker whose session got no assignments this long after it opened
/// closes it and tries another manager (a manager that is not the leader
/// and does not redirect, or a node that stopped being a manager).
pub const SESSION_ANSWER_MS: u64 = 5_000;
/// A task state reported and not seen applied within this long is reported again.
pub const REPORT_RETRY_MS: u64 = 5_000;
/// A write waits this long for its commit before failing with the quorum message.
pub const WRITE_TIMEOUT_MS: u64 = 5_000;
/// A write forwarded to the leader waits this long for its answer.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// A read forwarded to the leader waits this long before this manager answers it itself.
pub const FORWARD_READ_TIMEOUT_MS: u64 = 2_000;
pub(crate) use pending::FORWARDS_MAX;

/// Local (not replicated) keys in the store's `local` table.
const LOCAL_MODE: &str = "swarm_mode";
const LOCAL_LISTEN: &str = "listen_addr";
const LOCAL_ADVERTISE: &str = "advertise_addr";
const LOCAL_MANAGERS: &str = "managers";
/// `local` key: every manager address this node was told of, newest first
/// (at most [`KNOWN_MANAGERS_MAX`]). A worker back after months tries them
/// after the last list it was sent: a manager of an older list may still be
/// one, or a worker now, which points it at the leader.
const LOCAL_MANAGERS_KNOWN: &str = "managers_known";
/// Most manager addresses remembered in [`LOCAL_MANAGERS_KNOWN`].
pub(crate) const KNOWN_MANAGERS_MAX: usize = 32;
/// The version (raft index) of the latest record of this node this node has
/// acted on (its promotion, a demotion the leader told): replica records
/// older than it are stale (a learner replays its log from the start).
const LOCAL_ROLE_VERSION: &str = "role_version";
/// `local` key: the swarm's link profile as last applied here (`lan`, `edge`),
/// so a node restarted with no manager in reach dials with the right timings.
pub(crate) const LOCAL_LINK_PROFILE: &str = "link_profile";

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
    deadline_ms: u64,
}

/// A manager's join, accepted, answered once this node is a raft voter (as Swarm's).
struct VoterWait {
    reply: Sender<Reply>,
    node_id: String,
    deadline_ms: u64,
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
    /// The swarm's link profile as this node applies it (links, raft):
    /// a manager's from its replica, a worker's from its leader
    /// (`Wire::Settings`); kept in the local table across restarts.
    pub(crate) link_profile: LinkProfile,
    pub(crate) node_key: NodeKey,
    pub(crate) cluster_key: Option<NodeKey>,
    keys: Arc<Mutex<ListenKeys>>,
    ids: ConnIds,
    listen_addr: String,
    advertise_addr: String,
    listener: Option<super::io::Listening>,
    conns: BTreeMap<u64, Conn>,
    /// The links this node wants, their dials and backoff.
    peers: Peers,
    /// Managers this node knows of without the replicated state (workers, new managers).
    hints: Vec<ManagerInfo>,
    /// Every manager (id and address) this node was told of, newest first, bounded.
    known: Vec<ManagerInfo>,
    /// Worker: which manager to dial next when the leader is unknown.
    hint_next: usize,
    /// Worker: the leader as last told.
    leader_hint: Option<ManagerInfo>,
    /// Worker: the leader said this node was removed from the swarm (until a
    /// manager takes it again): `shoal info` and refused requests say so.
    pub(crate) removed: bool,
    /// What this node's worker plans from. A worker's are the last the
    /// leader sent (None until the first since start or role change); a
    /// manager's are built from its replica (`Daemon::sync_assignments`).
    pub(crate) assigned: Option<Assignments>,
    /// Worker: registry credentials of assigned services (`Wire::RegistryAuths`
    /// from the leader), by service id; memory only, pruned to `assigned`.
    pub(crate) registry_auths: BTreeMap<String, shoal_shared::types::RegistryAuth>,
    /// Worker: the data of the secrets and configs its unfinished tasks use
    /// (`Wire::Files`, from managers only), by kind and id. Memory only,
    /// pruned with every assignment set.
    pub(crate) files: BTreeMap<(shoal_shared::types::FileKind, String), Vec<u8>>,
    /// The applied index a manager's `assigned` was built at (None: sent by a leader, or not built).
    assigned_at: Option<u64>,
    /// The leader's dispatcher: worker sessions, assignments sent, Down marking.
    dispatcher: Dispatcher,
    /// Parked writes, internal proposals in flight and forwarded requests.
    pub(crate) pending: Pending<Sender<Reply>>,
    /// Task states reported and not yet seen applied, with when (mono ms):
    /// no duplicate reports for `REPORT_RETRY_MS`, then sent again (a report
    /// whose proposal or link was lost would otherwise never arrive).
    reported: BTreeMap<String, (TaskState, u64)>,
    joining: Option<Joining>,
    voter_wait: Option<VoterWait>,
    /// A `swarm leave` asked while this manager was being demoted: run once it is a worker
    /// (at the latest `membership::DEMOTION_GRACE_MS` after the demotion).
    leave_after_demotion: Option<(bool, Sender<Reply>)>,
    pending_joins: Vec<PendingJoin>,
    /// When this manager saw its demotion (mono ms).
    demoted_at_ms: Option<u64>,
    /// A leader told this manager it was demoted (its replica may have
    /// stopped before the demotion): the applied index then. Forgotten once
    /// the replica moved past it and still names this node a manager.
    demotion_told: Option<u64>,
    /// The leader said this manager is out of its raft configuration
    /// (`Wire::Removed`): it switches without waiting for its replica.
    removal_told: bool,
    /// See [`LOCAL_ROLE_VERSION`].
    role_version: u64,
    /// Leader: stale managers told they are out, and when (mono ms).
    told_stale: BTreeMap<String, u64>,
    /// Leader: the autopilot's clocks, flap history and status.
    pub(crate) autopilot: autopilot::Shell,
    /// Leader: the role change (`node promote`/`demote`) being committed, and when proposed (mono ms).
    pub(crate) role_change: Option<(Proposal, u64)>,
    /// Worker: the session opened and not answered yet (link, mono ms sent).
    session_wait: Option<(u64, u64)>,
    /// A leader a fellow raft member named, whose raft messages this manager
    /// takes although its own replica does not know it as a member yet.
    vouched_leader: Option<String>,
    /// Requests a new leader holds until it caught up (`router::Route::Hold`),
    /// with their deadlines.
    pub(crate) held: std::collections::VecDeque<(shoal_shared::api::Request, super::router::Origin, u64)>,
    /// Last raft leader, term and membership logged.
    raft_seen: Option<(u64, u64, Vec<u64>, Vec<u64>)>,
    /// The last installed snapshot's index this node logged.
    snapshot_told: u64,
    /// `service logs` gathers, requests and reads in flight.
    logs: logs::Gathers,
    /// Encrypted networks' relay keys: this node's announcements, the leader's table.
    pub(crate) tunnel_keys: tunnel_keys::Keys,
    /// Layers shared inside the swarm: asks out, and on a manager its blob cache.
    pub(crate) blobs: blobs::Blobs,
    /// Tasks' image pulls: this node's reads, the leader's reports.
    pub(crate) pulls: pulls::TaskPulls,
}

/// The error every leader-bound request gets while no leader is reachable,
/// naming the managers this one still reaches (itself included).
pub(crate) fn no_leader(reachable: &[String], managers: usize, autopilot_on: bool) -> Reply {
    let names = reachable.join(", ");
    let autopilot = if autopilot_on { "; the autopilot changes nothing without a quorum" } else { "" };
    Reply::error(
        ErrorKind::Unavailable,
        format!(
            "the swarm does not have a leader: {} of {managers} managers reachable ({names}){autopilot}; restore quorum or run `shoal swarm init --force-new-cluster` on a surviving manager",
            reachable.len()
        ),
    )
}

pub(super) fn worker_refusal(removed: bool) -> Reply {
    if removed {
        return Reply::error(ErrorKind::FailedPrecondition, shoal_manager::dispatcher::REMOVED);
    }
    Reply::error(
        ErrorKind::FailedPrecondition,
        "this node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.",
    )
}

/// `IP` or `IP:PORT` with the swarm port as default.
fn with_port(addr: &str) -> String {
    with_port_or(addr, super::SWARM_PORT)
}

/// A 16-byte join secret from the loop's randomness.
fn secret_bytes(io: &dyn super::io::Io) -> Result<[u8; 16], String> {
    let r = io.random32()?;
    let mut s = [0u8; 16];
    s.copy_from_slice(&r[..16]);
    Ok(s)
}

fn encode_hints(h: &[ManagerInfo]) -> String {
    h.iter().map(|m| format!("{}@{}", m.node_id, m.addr)).collect::<Vec<_>>().join(",")
}

fn decode_hints(s: &str) -> Vec<ManagerInfo> {
    s.split(',')
        .filter_map(|p| p.split_once('@').map(|(id, addr)| ManagerInfo { node_id: id.to_string(), addr: addr.to_string() }))
        .collect()
}

/// Puts `seen` first in `known` (newest first, no repeats, at most
/// [`KNOWN_MANAGERS_MAX`]); whether `known` changed.
fn remember_managers(known: &mut Vec<ManagerInfo>, seen: &[ManagerInfo]) -> bool {
    let mut next: Vec<ManagerInfo> = Vec::with_capacity(KNOWN_MANAGERS_MAX);
    for m in seen.iter().chain(known.iter()) {
        if !m.addr.is_empty() && !next.contains(m) && next.len() < KNOWN_MANAGERS_MAX {
            next.push(m.clone());
        }
    }
    let changed = next != *known;
    *known = next;
    changed
}

/// The managers a worker without a leader tries, in order: the last list it
/// was sent, then every other address it has known (not itself).
fn dial_candidates(hints: &[ManagerInfo], known: &[ManagerInfo], self_id: &str) -> Vec<ManagerInfo> {
    let mut out: Vec<ManagerInfo> = Vec::new();
    for m in hints.iter().chain(known) {
        if m.node_id != self_id && !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

impl Swarm {
    /// Worker sessions on this node's dispatcher (only the leader has any).
    pub(crate) fn session_count(&self) -> usize {
        self.dispatcher.session_nodes().count()
    }

    /// The swarm memory for a node with `node_key`, restored from the store's local table.
    pub(crate) fn new(node_key: NodeKey, cluster_key: Option<NodeKey>, local: impl Fn(&str) -> Option<String>) -> Swarm {
        let mode = match local(LOCAL_MODE).as_deref() {
            Some("manager") => Mode::Manager,
            Some("worker") => Mode::Worker,
            _ => Mode::Solo,
        };
        let link_profile = local(LOCAL_LINK_PROFILE).and_then(|p| LinkProfile::parse(&p).ok()).unwrap_or_default();
        let keys = ListenKeys { node: *node_key.private(), cluster: cluster_key.as_ref().map(|k| *k.private()), profile: link_profile };
        Swarm {
            mode,
            link_profile,
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
            known: {
                let mut k = local(LOCAL_MANAGERS_KNOWN).map(|s| decode_hints(&s)).unwrap_or_default();
                // A node from before this key knew its last list.
                remember_managers(&mut k, &local(LOCAL_MANAGERS).map(|s| decode_hints(&s)).unwrap_or_default());
                k
            },
            role_version: local(LOCAL_ROLE_VERSION).and_then(|s| s.parse().ok()).unwrap_or(0),
            told_stale: BTreeMap::new(),
            autopilot: Default::default(),
            hint_next: 0,
            leader_hint: None,
            removed: false,
            assigned: None,
            assigned_at: None,
            dispatcher: Dispatcher::default(),
            pending: {
                let mut p = Pending::default();
                p.set_edge(link_profile == LinkProfile::Edge);
                p
            },
            reported: BTreeMap::new(),
            joining: None,
            voter_wait: None,
            leave_after_demotion: None,
            pending_joins: Vec::new(),
            demoted_at_ms: None,
            demotion_told: None,
            removal_told: false,
            vouched_leader: None,
            held: std::collections::VecDeque::new(),
            session_wait: None,
            role_change: None,
            raft_seen: None,
            snapshot_told: 0,
            logs: logs::Gathers::default(),
            tunnel_keys: tunnel_keys::Keys::default(),
            blobs: blobs::Blobs::default(),
            pulls: pulls::TaskPulls::default(),
            registry_auths: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// This node's advertised swarm address (`IP:PORT`; empty outside a swarm).
    pub(crate) fn advertise_addr(&self) -> &str {
        &self.advertise_addr
    }

    /// Whether any link is up (a worker's links all go to managers).
    pub(crate) fn has_manager_link(&self) -> bool {
        self.conns.values().any(|c| c.commands.is_some() && c.peer.is_some())
    }

    /// Whether a session to a manager is open and waiting for its first assignments.
    pub(crate) fn session_waiting(&self) -> bool {
        self.session_wait.is_some()
    }

    /// This node's assignments, when it has any.
    pub(crate) fn assigned_ref(&self) -> Option<&Assignments> {
        self.assigned.as_ref()
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

    /// Applies link profile `p` to the links accepted and dialed from now
    /// on and to every open link (keepalive, idle timeout, socket user
    /// timeout). A peer that has not switched yet may time a link out once
    /// in between; it is redialed with the new timings.
    pub(crate) fn set_link_profile(&mut self, p: LinkProfile) {
        self.link_profile = p;
        self.pending.set_edge(p == LinkProfile::Edge);
        if let Ok(mut k) = self.keys.lock() {
            k.profile = p;
        }
        let (keepalive_interval_ms, idle_timeout_ms) = shoal_shared::noise::link::profile_timing(p);
        for c in self.conns.values() {
            if let Some(tx) = &c.commands {
                let _ = tx.try_send(Command::SetTiming { keepalive_interval_ms, idle_timeout_ms, lossy: p == LinkProfile::Edge });
            }
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

    /// The managers and leader this node was told of, and its links (for the simulator's reports).
    #[cfg(feature = "sim")]
    pub(crate) fn describe_hints(&self) -> String {
        let links: Vec<String> = self.conns.values().filter(|c| c.commands.is_some()).filter_map(|c| c.peer.clone()).collect();
        format!(
            "mode {:?}, hints [{}], leader {:?}, links {links:?}",
            self.mode,
            encode_hints(&self.hints),
            self.leader_hint.as_ref().map(|l| &l.node_id)
        )
    }

    /// The nodes with a dispatcher session here.
    #[cfg(feature = "sim")]
    pub(crate) fn dispatcher_sessions(&self) -> Vec<String> {
        self.dispatcher.session_nodes().map(str::to_string).collect()
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
        // Promoted from worker: its replica starts empty and fills as raft catches it up, and
        // planning from a partial replica would remove its running tasks as strays. It keeps
        // the assignments its leader sent until it votes (a learner votes once caught up).
        let leader_sent = self.swarm.assigned.is_some() && self.swarm.assigned_at.is_none();
        if leader_sent && !self.store.voters().contains(&self.store.raft_id()) {
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

    /// Whether this node leads on a state that holds every earlier
    /// leader's commits: the gate for decisions made from the state
    /// (orchestration, scheduling, Down marking, raft membership).
    pub(crate) fn leads_caught_up(&self) -> bool {
        self.swarm.mode != Mode::Worker && self.store.is_leader_caught_up()
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
        let (bound, listening) = self.io.listen(sock, self.swarm.keys.clone(), self.swarm.ids.clone())?;
        self.swarm.listener = Some(listening);
        crate::log!("INFO", "swarm port listening on {bound}");
        Ok(bound)
    }

    /// Sets the managers this node knows of (and persists them), adding them
    /// to every manager it has known.
    fn set_hints(&mut self, managers: Vec<ManagerInfo>) {
        self.set_local(LOCAL_MANAGERS, &encode_hints(&managers));
        if remember_managers(&mut self.swarm.known, &managers) {
            let k = encode_hints(&self.swarm.known);
            self.set_local(LOCAL_MANAGERS_KNOWN, &k);
        }
        self.swarm.hints = managers;
    }

    /// Worker: the managers to try, in order, while no leader is known.
    fn dial_candidates(&self) -> Vec<ManagerInfo> {
        dial_candidates(&self.swarm.hints, &self.swarm.known, &self.node_id)
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
        let host = self.describe();
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
            plugins: host.plugins,
            warnings: host.warnings,
            autolock: false,
            node_lost_after_ms: 0,
            // As applied on this node (a worker's from its leader).
            link_profile: self.swarm.link_profile,
            autopilot: None,
            tunnel: self.tunnel_status(),
            registries: self.registry_settings(),
            layer_sharing: None,
        };
        if self.swarm.removed {
            info.warnings.push(shoal_manager::dispatcher::REMOVED.to_string());
        }
        if knows_state {
            info.cluster_id = state.cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default();
            info.managers = state.nodes.values().filter(|n| n.role == NodeRole::Manager).count() as u64;
            info.nodes = state.nodes.len() as u64;
            info.settings = Some(state.settings.clone());
            info.autolock = state.autolock.key.is_some();
            info.node_lost_after_ms = state.node_lost_after_ms;
            info.leader_id = self.leader_node_id().unwrap_or_default();
            info.autopilot = self.autopilot_status();
            info.layer_sharing = Some(!state.layer_sharing_off);
        }
        Reply::Info(Box::new(info))
    }

    pub(super) fn no_leader_reply(&self) -> Reply {
        let (reachable, total) = self.reachability();
        let names: Vec<String> = reachable.iter().map(|id| self.node_name(id)).collect();
        no_leader(&names, total, self.store.state().autopilot.managers != 0)
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

    /// Periodic swarm work, every loop tick.
    pub(crate) fn swarm_tick(&mut self) {
        let now_ms = self.mono_ms();
        if self.swarm.mode == Mode::Manager {
            let installed = self.store.installed_snapshot_index;
            if installed != 0 && installed != self.swarm.snapshot_told {
                crate::log!(
                    "INFO",
                    "raft: caught up from the leader's snapshot at index {installed} (its log was compacted past this replica's)"
                );
                self.swarm.snapshot_told = installed;
            }
            let st = self.store.raft_status();
            let seen = (st.leader, st.term, st.voters.clone(), st.learners.clone());
            if self.swarm.raft_seen.as_ref() != Some(&seen) {
                crate::log!("INFO", "raft: term {} leader {:x} voters {:x?} learners {:x?}", st.term, st.leader, st.voters, st.learners);
                let leader_changed = self.swarm.raft_seen.as_ref().is_none_or(|s| s.0 != st.leader);
                self.metrics.leader_changes += u64::from(leader_changed);
                self.swarm.raft_seen = Some(seen);
                // A leader this replica knows (or this node) replaces a vouched one: kept, a
                // stale vouch let a demoted ex-leader's raft messages in and nobody told it
                // (found by the whole-node simulator, seed 5203).
                if st.leader != 0 && self.swarm.vouched_leader.as_ref().is_some_and(|v| raft_id(v) != st.leader) {
                    self.swarm.vouched_leader = None;
                }
                if leader_changed && st.leader != 0 && !self.store.is_leader() {
                    self.name_leader_to_members();
                }
            }
        }
        // Deadlines of parked writes, internal proposals and forwards. A
        // leader whose write did not commit in time says so, not "no leader".
        let no_leader = if self.store.is_leader() {
            let (reachable, total) = self.reachability();
            Reply::error(
                ErrorKind::Unavailable,
                format!(
                    "the change was not committed within {} ms: {} of {total} managers reachable (slow or lossy links?); it may still be applied: check with `shoal service ls` / `shoal node ls` and retry",
                    self.swarm.pending.write_timeout_ms(),
                    reachable.len()
                ),
            )
        } else {
            self.no_leader_reply()
        };
        let leader = self.leader_node();
        let conns = &self.swarm.conns;
        self.swarm.pending.tick(now_ms, &no_leader, leader.as_deref(), |c| conns.contains_key(&c));
        self.drain_pending();
        self.logs_tick(now_ms);
        self.blobs_tick(now_ms);
        self.pulls_tick(now_ms);
        self.check_voter_wait(now_ms);
        if let Some(j) = &self.swarm.joining {
            if now_ms >= j.deadline_ms {
                let remote = j.remote.clone();
                self.fail_join(&format!("no answer from {remote} within {} s", JOIN_TIMEOUT_MS / 1000));
            }
        }
        if let Some((conn, at)) = self.swarm.session_wait {
            if self.swarm.mode == Mode::Worker && now_ms.saturating_sub(at) >= SESSION_ANSWER_MS {
                let peer = self.swarm.conns.get(&conn).and_then(|c| c.peer.clone()).unwrap_or_else(|| "the manager".into());
                crate::log!(
                    "INFO",
                    "no assignments from {peer} {} s after opening a session; trying another manager",
                    SESSION_ANSWER_MS / 1000
                );
                self.swarm.session_wait = None;
                self.swarm.close(conn, "no assignments");
                self.swarm.leader_hint = None;
                self.swarm.hint_next += 1;
            }
        }
        self.sync_leadership();
        if self.leads_caught_up() {
            self.reconcile_membership();
            self.tell_stale_managers(now_ms);
            self.mark_down();
        }
        if self.swarm.mode == Mode::Manager {
            self.autopilot_pass(now_ms);
        }
        self.tunnel_keys_pass();
        self.drain_dispatcher();
        self.maintain_links();
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

    fn m(id: &str, addr: &str) -> ManagerInfo {
        ManagerInfo { node_id: id.into(), addr: addr.into() }
    }

    #[test]
    fn every_manager_address_is_remembered_newest_first_and_bounded() {
        let mut known = Vec::new();
        assert!(remember_managers(&mut known, &[m("a", "10.0.0.1:2377"), m("b", "10.0.0.2:2377")]));
        assert!(!remember_managers(&mut known, &[m("a", "10.0.0.1:2377")]), "nothing new: unchanged order kept");
        assert_eq!(known, vec![m("a", "10.0.0.1:2377"), m("b", "10.0.0.2:2377")]);
        // A manager that moved (a new DHCP lease) is kept at both addresses, the new one first.
        assert!(remember_managers(&mut known, &[m("c", "10.0.0.3:2377"), m("b", "10.0.0.9:2377")]));
        assert_eq!(known, vec![m("c", "10.0.0.3:2377"), m("b", "10.0.0.9:2377"), m("a", "10.0.0.1:2377"), m("b", "10.0.0.2:2377")]);
        // Empty addresses are not dialable: never kept.
        remember_managers(&mut known, &[m("d", "")]);
        assert!(!known.iter().any(|x| x.node_id == "d"));
        for i in 0..100 {
            remember_managers(&mut known, &[m(&format!("n{i}"), &format!("10.1.0.{i}:2377"))]);
        }
        assert_eq!(known.len(), KNOWN_MANAGERS_MAX);
        assert_eq!(known[0], m("n99", "10.1.0.99:2377"), "the newest stays");
        assert_eq!(decode_hints(&encode_hints(&known)), known);
    }

    #[test]
    fn a_worker_tries_its_last_list_then_every_manager_it_has_known() {
        let hints = vec![m("a", "10.0.0.1:2377"), m("me", "10.0.0.5:2377")];
        let known = vec![m("a", "10.0.0.1:2377"), m("me", "10.0.0.5:2377"), m("b", "10.0.0.2:2377"), m("a", "10.0.0.7:2377")];
        let got = dial_candidates(&hints, &known, "me");
        assert_eq!(got, vec![m("a", "10.0.0.1:2377"), m("b", "10.0.0.2:2377"), m("a", "10.0.0.7:2377")]);
        assert_eq!(dial_candidates(&[], &[], "me"), vec![]);
    }

    #[test]
    fn quorum_message_says_what_to_do() {
        let Reply::Error { message, .. } = no_leader(&["m1 (abc)".to_string()], 3, false) else { panic!() };
        assert_eq!(
            message,
            "the swarm does not have a leader: 1 of 3 managers reachable (m1 (abc)); restore quorum or run `shoal swarm init --force-new-cluster` on a surviving manager"
        );
        let Reply::Error { message, .. } = no_leader(&["m1 (abc)".to_string()], 3, true) else { panic!() };
        assert!(message.contains("(m1 (abc)); the autopilot changes nothing without a quorum; restore quorum"), "{message}");
    }
}
