//! The sans-IO raft state machine: elections (PreVote, CheckQuorum),
//! replication with a bounded pipeline, commit, ReadIndex, snapshots,
//! single-step membership changes and leadership transfer.
//!
//! The node never touches sockets, files, clocks or OS randomness. The shell
//! feeds it `tick`/`step`/`propose` and drains [`Ready`] batches; see the
//! module README for the Ready/advance contract. In short, for each `Ready`,
//! in order: persist `snapshot`, `compaction`, `hard_state`, `conf_state` and
//! `entries` durably (**before** sending anything), then send `messages`, then
//! apply `committed_entries` (after restoring `snapshot` if any), then call
//! `advance`. Every message in a Ready may depend on the durable state in
//! that same Ready (a vote, a term, appended entries), which is why sending
//! before persisting is a safety bug.
//!
//! Safety invariants asserted here (kept in release builds):
//! - the leader only counts replicas to commit entries of its own term (§5.4.2);
//! - a node never truncates a committed entry;
//! - commit never decreases and never exceeds the last index;
//! - at most one membership change is pending at a time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use shoal_shared::rng::Rng;

use super::config::{Config, ConfigError, Timing};
use super::log::RaftLog;
use super::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Message, MessageKind, NodeId, RejectHint, Snapshot, SnapshotMeta,
    MAX_SNAPSHOT_CHUNK_BYTES,
};

/// Largest read-index context accepted from a peer.
pub const MAX_READ_CTX_BYTES: usize = 4096;

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state the shell may want to observe (not persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Known leader, `0` when none.
    pub leader: NodeId,
    pub role: Role,
}

/// A confirmed linearizable read: serve `ctx` once `applied >= index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub ctx: Vec<u8>,
}

/// A local log compaction to make durable: store `snapshot` and drop log
/// entries up to and including `prev_index` (whose term is `prev_term`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub snapshot: Snapshot,
    pub prev_index: u64,
    pub prev_term: u64,
}

/// One batch of output. Handle the fields in the order documented on the
/// module: persist, send, apply, `advance`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Leader or role changed (informational).
    pub soft_state: Option<SoftState>,
    /// Term/vote/commit changed: persist before sending `messages`.
    pub hard_state: Option<HardState>,
    /// Membership as of `hard_state.commit` changed: persist with it.
    pub conf_state: Option<ConfState>,
    /// A snapshot received from the leader: persist it (it replaces the
    /// whole log) and restore the state machine from it before applying.
    pub snapshot: Option<Snapshot>,
    /// A local compaction to persist (no state-machine restore).
    pub compaction: Option<Compaction>,
    /// Entries to append durably; they replace any stored entries at the
    /// same or higher indexes.
    pub entries: Vec<Entry>,
    /// Send only after everything above is durable.
    pub messages: Vec<Message>,
    /// Apply in order (after persisting).
    pub committed_entries: Vec<Entry>,
    /// Confirmed reads.
    pub read_states: Vec<ReadState>,
    /// Whether the writes must be fsynced before sending. `false` only when
    /// the sole change is the commit index (losing it in a crash is safe:
    /// it is re-learned), so storage may skip the fsync (etcd's MustSync).
    pub must_sync: bool,
}

impl Ready {
    /// Whether anything must be written to storage.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some()
            || self.conf_state.is_some()
            || self.snapshot.is_some()
            || self.compaction.is_some()
            || !self.entries.is_empty()
    }
}

/// Durable state read back at start-up (see `RaftStorage::load`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub snapshot: Snapshot,
    /// Index/term of the entry just before `entries[0]`.
    pub prev_index: u64,
    pub prev_term: u64,
    pub entries: Vec<Entry>,
}

impl Persisted {
    /// Whether this is a brand-new node's (empty) state.
    pub fn is_empty(&self) -> bool {
        *self == Persisted::default()
    }
}

/// Why a message was refused. A refused message changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("message for node {to} delivered to node {me}")]
    WrongRecipient { to: NodeId, me: NodeId },
    #[error("message from invalid sender {0}")]
    BadSender(NodeId),
    #[error("message with term 0")]
    ZeroTerm,
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Why a proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("proposal dropped during leadership transfer")]
    ProposalDropped,
    #[error("too many uncommitted entries ({uncommitted_entries})")]
    Backpressure { uncommitted_entries: u64 },
    #[error("proposal of {len_bytes} bytes exceeds {limit_bytes} bytes")]
    TooLarge { len_bytes: u64, limit_bytes: u64 },
    #[error("a membership change is already pending")]
    ConfChangePending,
    #[error("invalid membership change: {0}")]
    InvalidConfChange(&'static str),
    #[error("refusing to remove the last voter")]
    LastVoter,
}

/// Why a read or transfer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("leader has not committed an entry of its term yet")]
    NotReady,
    #[error("too many pending reads")]
    TooManyReads,
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

/// Why `compact` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("index {index} is not past the current snapshot at {snapshot_index}")]
    Stale { index: u64, snapshot_index: u64 },
    #[error("index {index} is beyond applied index {applied}")]
    NotApplied { index: u64, applied: u64 },
}

/// Why persisted state cannot start a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("inconsistent persisted state: {0}")]
    Inconsistent(&'static str),
}

/// How the leader is replicating to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// One probe at a time until the match point is found.
    Probe,
    /// Optimistic pipelining within the in-flight window.
    Replicate,
    /// Streaming snapshot chunks.
    Snapshot { index: u64, offset: u64 },
}

/// The leader's view of one peer (in `Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: NodeId,
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    pub recent_active: bool,
    pub inflight_msgs: u32,
}

/// A snapshot of the node's state for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: u64,
    pub vote: NodeId,
    pub role: Role,
    pub leader: NodeId,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Per-peer replication progress (leader only, else empty).
    pub progress: Vec<PeerProgress>,
}

#[derive(Clone, Debug)]
struct Progress {
    match_index: u64,
    next_index: u64,
    state: ProgressState,
    probe_sent: bool,
    /// Last index of each append in flight (Replicate), oldest first.
    inflight: VecDeque<u64>,
    recent_active: bool,
    /// A snapshot response arrived since the last heartbeat.
    snapshot_progressed: bool,
}

impl Progress {
    fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: true,
            snapshot_progressed: false,
        }
    }

    fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }
}

#[derive(Clone, Debug)]
struct PendingRead {
    seq: u64,
    index: u64,
    ctx: Vec<u8>,
    /// `0` for a local read, else the follower that forwarded it.
    from: NodeId,
    acks: BTreeSet<NodeId>,
}

#[derive(Clone, Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

/// One raft node.
#[derive(Clone, Debug)]
pub struct Raft {
    cfg: Config,
    id: NodeId,
    term: u64,
    vote: NodeId,
    leader: NodeId,
    role: Role,
    pub(crate) log: RaftLog,
    /// Membership as of the commit index.
    conf: ConfState,
    rng: Rng,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_timeout: u64,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    pending_conf_index: u64,
    /// Leader: the index of the empty entry that opened its term.
    term_start_index: u64,
    transferee: Option<NodeId>,
    read_seq: u64,
    pending_reads: VecDeque<PendingRead>,
    incoming_snapshot: Option<IncomingSnapshot>,
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    pending_install: Option<Snapshot>,
    pending_compaction: Option<Compaction>,
    prev_hard: HardState,
    prev_soft: SoftState,
    prev_conf: ConfState,
}

impl Raft {
    /// A brand-new member of a brand-new cluster: every initial voter calls
    /// this with the same `voters`. The membership becomes log entry 1 (term
    /// 1, committed), which the first `Ready` asks to persist.
    pub fn bootstrap(cfg: Config, voters: &[NodeId]) -> Result<Raft, RestoreError> {
        let conf = ConfState::with_voters(voters);
        if conf.voters.is_empty() || !conf.is_well_formed() {
            return Err(RestoreError::Inconsistent("bootstrap voters must be non-empty and non-zero"));
        }
        let mut raft = Raft::restore(cfg, Persisted::default())?;
        raft.term = 1;
        raft.log.push(Entry { term: 1, index: 1, kind: EntryKind::Conf { change: None, conf } });
        raft.commit_to(1);
        Ok(raft)
    }

    /// A node from its persisted state (or `Persisted::default()` for a node
    /// joining an existing cluster, which waits for the leader to contact
    /// it). The application is assumed to hold the state machine as of the
    /// snapshot: committed entries after it are handed out again.
    pub fn restore(cfg: Config, p: Persisted) -> Result<Raft, RestoreError> {
        cfg.validate()?;
        let hs = p.hard_state;
        let last = p.prev_index.checked_add(p.entries.len() as u64).ok_or(RestoreError::Inconsistent("log index overflow"))?;
        if p.snapshot.meta.index < p.prev_index || p.snapshot.meta.index > last {
            return Err(RestoreError::Inconsistent("snapshot outside the stored log"));
        }
        if hs.commit < p.snapshot.meta.index || hs.commit > last {
            return Err(RestoreError::Inconsistent("commit outside the stored log"));
        }
        let mut prev_term = p.prev_term;
        for (k, e) in p.entries.iter().enumerate() {
            if e.index != p.prev_index + 1 + k as u64 || e.term > hs.term || e.term < prev_term {
                return Err(RestoreError::Inconsistent("stored entries not contiguous"));
            }
            prev_term = e.term;
        }
        if !p.snapshot.meta.conf.is_well_formed() {
            return Err(RestoreError::Inconsistent("snapshot membership malformed"));
        }
        if !p.conf_state.is_well_formed() {
            return Err(RestoreError::Inconsistent("stored membership malformed"));
        }
        let vote = if cfg.bugs.forget_vote_on_restart() { 0 } else { hs.vote };
        let mut rng = Rng::from_seed(cfg.seed);
        let randomized_timeout = rng.range(cfg.election_ticks_min, cfg.election_ticks_max);
        let mut log = RaftLog::new(p.snapshot, p.prev_index, p.prev_term, p.entries);
        log.commit = hs.commit;
        log.check_full();
        Ok(Raft {
            id: cfg.id,
            cfg,
            term: hs.term,
            vote,
            leader: 0,
            role: Role::Follower,
            log,
            conf: p.conf_state.clone(),
            rng,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            pending_conf_index: 0,
            term_start_index: 0,
            transferee: None,
            read_seq: 0,
            pending_reads: VecDeque::new(),
            incoming_snapshot: None,
            msgs: Vec::new(),
            read_states: Vec::new(),
            pending_install: None,
            pending_compaction: None,
            prev_hard: hs,
            prev_soft: SoftState { leader: 0, role: Role::Follower },
            prev_conf: p.conf_state,
        })
    }

    /// Like [`Raft::restore`], for an application whose state machine is
    /// durable on its own (Shoal's store shares the redb file): committed
    /// entries up to `applied` are not handed out again.
    pub fn restore_applied(cfg: Config, p: Persisted, applied: u64) -> Result<Raft, RestoreError> {
        // The stored commit may lag what the application applied (commit-only
        // updates are not fsynced), but anything applied was committed.
        let last = p.prev_index.saturating_add(p.entries.len() as u64);
        if applied < p.snapshot.meta.index || applied > last {
            return Err(RestoreError::Inconsistent("applied index outside the stored log"));
        }
        let mut raft = Raft::restore(cfg, p)?;
        raft.log.commit = raft.log.commit.max(applied);
        raft.prev_hard.commit = raft.log.commit;
        raft.log.applied = applied;
        raft.log.applied_handed = applied;
        raft.log.check();
        Ok(raft)
    }

    // ----- inputs -------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed += 1;
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.election_elapsed >= self.cfg.election_ticks_min {
                self.election_elapsed = 0;
                // A transfer that did not finish within an election timeout is abandoned.
                self.transferee = None;
                if self.cfg.check_quorum && !self.quorum_active() {
                    self.become_follower(self.term, 0);
                    return;
                }
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
            }
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                self.bcast_heartbeat();
                self.retransmit_snapshots();
            }
        } else if self.conf.voters == [self.id] {
            // Sole voter: nobody to wait for, elect ourselves at once.
            self.election_elapsed = 0;
            self.start_campaign(self.cfg.pre_vote, false);
        } else if self.election_elapsed >= self.randomized_timeout && self.conf.is_voter(self.id) {
            self.election_elapsed = 0;
            self.start_campaign(self.cfg.pre_vote, false);
        }
        self.log.check();
    }

    /// Starts an election now (tests, or an operator forcing one).
    pub fn campaign(&mut self) -> Result<(), RequestError> {
        if !self.conf.is_voter(self.id) {
            return Err(RequestError::NotVoter(self.id));
        }
        if self.role != Role::Leader {
            self.start_campaign(self.cfg.pre_vote, false);
        }
        Ok(())
    }

    /// Proposes application data; returns the index it will have if
    /// committed. The proposal committed iff the entry applied at that index
    /// carries the term the leader had when proposing (`term()`); a leader
    /// change may replace it with another entry.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        self.check_can_propose(data.len() as u64)?;
        Ok(self.append_new(EntryKind::Normal(data)))
    }

    /// Proposes one membership change (refused while another is pending).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<u64, ProposeError> {
        self.check_can_propose(0)?;
        if self.pending_conf_index > self.log.commit {
            return Err(ProposeError::ConfChangePending);
        }
        let mut conf = self.conf.clone();
        match change {
            ConfChange::AddVoter(id) | ConfChange::PromoteLearner(id) => {
                if id == 0 || conf.is_voter(id) {
                    return Err(ProposeError::InvalidConfChange("already a voter"));
                }
                if matches!(change, ConfChange::PromoteLearner(_)) {
                    if !conf.is_learner(id) {
                        return Err(ProposeError::InvalidConfChange("not a learner"));
                    }
                    // A voter that cannot vote sensibly yet would only hurt
                    // availability: promote once it holds everything committed.
                    let caught_up = self.progress.get(&id).is_some_and(|p| p.match_index >= self.log.commit);
                    if !caught_up {
                        return Err(ProposeError::InvalidConfChange("learner has not caught up"));
                    }
                }
                conf.learners.retain(|l| *l != id);
                conf.voters.push(id);
            }
            ConfChange::AddLearner(id) => {
                if id == 0 || conf.contains(id) {
                    return Err(ProposeError::InvalidConfChange("already a member"));
                }
                conf.learners.push(id);
            }
            ConfChange::RemoveNode(id) => {
                if !conf.contains(id) {
                    return Err(ProposeError::InvalidConfChange("not a member"));
                }
                if conf.is_voter(id) && conf.voters.len() == 1 {
                    return Err(ProposeError::LastVoter);
                }
                conf.voters.retain(|v| *v != id);
                conf.learners.retain(|l| *l != id);
            }
        }
        conf.voters.sort_unstable();
        conf.learners.sort_unstable();
        assert!(conf.is_well_formed(), "conf change produced malformed membership");
        let index = self.append_new(EntryKind::Conf { change: Some(change), conf });
        self.pending_conf_index = index;
        Ok(index)
    }

    /// Starts a linearizable read; the result arrives as a `ReadState`
    /// carrying `ctx` (on a follower, via the leader).
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), RequestError> {
        match self.role {
            Role::Leader => self.leader_read(ctx, 0),
            _ if self.leader != 0 => {
                self.send(self.leader, MessageKind::ReadIndex { ctx });
                Ok(())
            }
            _ => Err(RequestError::NotLeader { leader: None }),
        }
    }

    /// Hands leadership to voter `to` (§3.10): proposals are refused until
    /// it completes or an election timeout passes.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RequestError> {
        if self.role != Role::Leader {
            return Err(RequestError::NotLeader { leader: self.known_leader() });
        }
        if to == self.id || !self.conf.is_voter(to) {
            return Err(RequestError::NotVoter(to));
        }
        self.transferee = Some(to);
        self.election_elapsed = 0;
        let last = self.log.last_index();
        if self.progress.get(&to).map(|p| p.match_index) == Some(last) {
            self.send(to, MessageKind::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Records a snapshot the application took at applied index `index`
    /// and compacts the log behind it (keeping `snapshot_keep_entries`).
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), CompactError> {
        let snapshot_index = self.log.snapshot.meta.index;
        if index <= snapshot_index {
            return Err(CompactError::Stale { index, snapshot_index });
        }
        if index > self.log.applied {
            return Err(CompactError::NotApplied { index, applied: self.log.applied });
        }
        // Invariant: prev_index <= snapshot_index < index <= applied <= last.
        let term = self.log.term(index).expect("applied index is inside the log");
        let conf = self.conf_at(index);
        self.log.snapshot = Snapshot { meta: SnapshotMeta { index, term, conf }, data };
        self.log.compact_to(index.saturating_sub(self.cfg.snapshot_keep_entries));
        self.pending_compaction =
            Some(Compaction { snapshot: self.log.snapshot.clone(), prev_index: self.log.prev_index, prev_term: self.log.prev_term });
        self.log.check();
        Ok(())
    }

    /// Whether enough entries were applied since the last snapshot that the
    /// application should take one and call `compact`.
    pub fn should_snapshot(&self) -> bool {
        self.log.applied - self.log.snapshot.meta.index >= self.cfg.snapshot_interval_entries
    }

    /// Feeds one message from a peer. On error nothing changed.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.validate(&m)?;
        self.step_valid(m);
        self.log.check();
        Ok(())
    }

    // ----- outputs ------------------------------------------------------

    /// Whether `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || self.conf != self.prev_conf
            || self.pending_install.is_some()
            || self.pending_compaction.is_some()
            || self.log.unstable_from <= self.log.last_index()
            || !self.msgs.is_empty()
            || self.log.applied_handed < self.log.commit
            || !self.read_states.is_empty()
    }

    /// Takes the next batch of work. Batches must be handled (persisted)
    /// in the order they were taken.
    pub fn ready(&mut self) -> Ready {
        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        let hard = self.hard_state();
        let term_or_vote_changed = hard.term != self.prev_hard.term || hard.vote != self.prev_hard.vote;
        if hard != self.prev_hard {
            rd.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        if self.conf != self.prev_conf {
            rd.conf_state = Some(self.conf.clone());
            self.prev_conf = self.conf.clone();
        }
        rd.snapshot = self.pending_install.take();
        rd.compaction = self.pending_compaction.take();
        let last = self.log.last_index();
        if self.log.unstable_from <= last {
            rd.entries = self.log.slice(self.log.unstable_from, last, u64::MAX);
            self.log.unstable_from = last + 1;
        }
        rd.messages = std::mem::take(&mut self.msgs);
        if self.log.applied_handed < self.log.commit {
            rd.committed_entries = self.log.slice(self.log.applied_handed + 1, self.log.commit, u64::MAX);
            self.log.applied_handed = self.log.commit;
        }
        rd.read_states = std::mem::take(&mut self.read_states);
        rd.must_sync =
            term_or_vote_changed || !rd.entries.is_empty() || rd.snapshot.is_some() || rd.compaction.is_some() || rd.conf_state.is_some();
        rd
    }

    /// Acknowledges that `rd` was persisted, sent and applied.
    pub fn advance(&mut self, rd: Ready) {
        if let Some(s) = &rd.snapshot {
            self.log.stable_last = self.log.stable_last.max(s.meta.index);
            self.log.applied = self.log.applied.max(s.meta.index);
        }
        if let Some(last) = rd.entries.last() {
            if self.log.matches(last.index, last.term) {
                self.log.stable_last = self.log.stable_last.max(last.index);
            }
        }
        if let Some(last) = rd.committed_entries.last() {
            self.log.applied = self.log.applied.max(last.index).min(self.log.applied_handed);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.log.check();
    }

    /// Current state for operators and tests.
    /// Switches heartbeat and election timeouts and the pipelining window
    /// (the swarm's link profile changed); the next election timeout is
    /// drawn from the new range at once. Refused, changing nothing, when the
    /// result is not a valid config.
    pub fn set_timing(&mut self, t: Timing) -> Result<(), ConfigError> {
        let next = self.cfg.with_timing(t);
        next.validate()?;
        self.cfg = next;
        self.randomized_timeout = self.rng.range(self.cfg.election_ticks_min, self.cfg.election_ticks_max);
        Ok(())
    }

    /// The timings in effect.
    pub fn timing(&self) -> Timing {
        Timing {
            heartbeat_ticks: self.cfg.heartbeat_ticks,
            election_ticks_min: self.cfg.election_ticks_min,
            election_ticks_max: self.cfg.election_ticks_max,
            max_inflight_msgs: self.cfg.max_inflight_msgs,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot.meta.index,
            voters: self.conf.voters.clone(),
            learners: self.conf.learners.clone(),
            progress: self
                .progress
                .iter()
                .map(|(id, p)| PeerProgress {
                    id: *id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    recent_active: p.recent_active,
                    inflight_msgs: p.inflight.len() as u32,
                })
                .collect(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Leader: the index of the empty entry that opened its term (0 otherwise).
    /// Every entry a previous leader committed is at or before it, so a
    /// state machine that applied it holds them all.
    pub fn term_start_index(&self) -> u64 {
        if self.role == Role::Leader {
            self.term_start_index
        } else {
            0
        }
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The known leader, if any.
    pub fn known_leader(&self) -> Option<NodeId> {
        (self.leader != 0).then_some(self.leader)
    }

    /// The latest snapshot (to serve operators or restore an application).
    pub fn snapshot(&self) -> &Snapshot {
        &self.log.snapshot
    }

    // ----- internals ----------------------------------------------------

    fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role }
    }

    fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.commit }
    }

    fn check_can_propose(&self, len_bytes: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.known_leader() });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::ProposalDropped);
        }
        let uncommitted_entries = self.log.last_index() - self.log.commit;
        if uncommitted_entries >= self.cfg.max_uncommitted_entries {
            return Err(ProposeError::Backpressure { uncommitted_entries });
        }
        if len_bytes > self.cfg.max_append_bytes {
            return Err(ProposeError::TooLarge { len_bytes, limit_bytes: self.cfg.max_append_bytes });
        }
        Ok(())
    }

    fn append_new(&mut self, kind: EntryKind) -> u64 {
        let index = self.log.last_index() + 1;
        self.log.push(Entry { term: self.term, index, kind });
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for p in peers {
            self.send_append(p, false);
        }
        index
    }

    /// Membership at `index` (≥ the snapshot index).
    fn conf_at(&self, index: u64) -> ConfState {
        let mut i = index;
        while i > self.log.prev_index {
            if let Some(Entry { kind: EntryKind::Conf { conf, .. }, .. }) = self.log.entry(i) {
                return conf.clone();
            }
            i -= 1;
        }
        self.log.snapshot.meta.conf.clone()
    }

    fn send(&mut self, to: NodeId, kind: MessageKind) {
        self.send_with_term(to, self.term, kind);
    }

    fn send_with_term(&mut self, to: NodeId, term: u64, kind: MessageKind) {
        assert_ne!(to, self.id, "sending to self");
        self.msgs.push(Message { from: self.id, to, term, kind });
    }

    fn reset(&mut self, term: u64) {
        if self.term != term {
            assert!(term > self.term, "term went backwards");
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_timeout = self.rng.range(self.cfg.election_ticks_min, self.cfg.election_ticks_max);
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.pending_reads.clear();
    }

    fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn start_campaign(&mut self, pre: bool, transfer: bool) {
        // A peer may have pushed the term to u64::MAX: no higher term exists
        // to campaign in (safety holds, this node just cannot lead).
        if !self.conf.is_voter(self.id) || self.term == u64::MAX {
            return;
        }
        let vote_term = if pre {
            // Pre-vote: probe with term+1 without changing term or vote.
            self.leader = 0;
            self.role = Role::PreCandidate;
            self.votes.clear();
            self.progress.clear();
            self.pending_reads.clear();
            self.transferee = None;
            self.election_elapsed = 0;
            self.randomized_timeout = self.rng.range(self.cfg.election_ticks_min, self.cfg.election_ticks_max);
            self.term + 1
        } else {
            self.reset(self.term + 1);
            self.role = Role::Candidate;
            self.vote = self.id;
            self.term
        };
        self.votes.insert(self.id, true);
        if self.tally() == Some(true) {
            self.won_election();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self.conf.voters.iter().copied().filter(|v| *v != self.id).collect();
        for v in voters {
            self.send_with_term(v, vote_term, MessageKind::VoteRequest { pre, last_index, last_term, transfer });
        }
    }

    /// `Some(true)` on a granted quorum, `Some(false)` on a rejecting one.
    fn tally(&self) -> Option<bool> {
        let q = self.conf.quorum();
        let granted = self.conf.voters.iter().filter(|v| self.votes.get(v) == Some(&true)).count();
        let rejected = self.conf.voters.iter().filter(|v| self.votes.get(v) == Some(&false)).count();
        if granted >= q {
            Some(true)
        } else if rejected >= q {
            Some(false)
        } else {
            None
        }
    }

    fn won_election(&mut self) {
        if self.role == Role::PreCandidate {
            self.start_campaign(false, false);
        } else {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.role = Role::Leader;
        self.leader = self.id;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let next = self.log.last_index() + 1;
        for id in self.conf.members() {
            if id != self.id {
                self.progress.insert(id, Progress::new(next));
            }
        }
        // No membership change until an entry of this term commits (the
        // fix for the single-server-change bug, thesis §4.1 errata).
        self.pending_conf_index = next;
        self.term_start_index = next;
        self.append_new(EntryKind::Normal(Vec::new()));
        self.maybe_commit();
    }

    fn quorum_active(&self) -> bool {
        let active = self.conf.voters.iter().filter(|v| **v == self.id || self.progress.get(v).is_some_and(|p| p.recent_active)).count();
        active >= self.conf.quorum()
    }

    /// Leader: advance commit to the highest index a quorum of voters holds,
    /// if it is of the current term (§5.4.2).
    fn maybe_commit(&mut self) {
        if self.conf.voters.is_empty() {
            return;
        }
        let mut matches: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| if *v == self.id { self.log.stable_last } else { self.progress.get(v).map_or(0, |p| p.match_index) })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let n = matches[self.conf.quorum() - 1];
        if n > self.log.commit && (self.log.term(n) == Some(self.term) || self.cfg.bugs.commit_old_term()) {
            self.commit_to(n);
            if self.role == Role::Leader {
                // Tell followers at once so they apply without waiting for
                // the next heartbeat.
                let peers: Vec<NodeId> = self.progress.keys().copied().collect();
                for p in peers {
                    self.send_append(p, true);
                }
            }
        }
    }

    /// Moves commit forward, applying membership entries as they commit.
    fn commit_to(&mut self, index: u64) {
        let index = index.min(self.log.last_index());
        if index <= self.log.commit {
            return;
        }
        let old = self.log.commit;
        self.log.commit = index;
        let mut new_conf = None;
        for i in old + 1..=index {
            if let Some(Entry { kind: EntryKind::Conf { conf, .. }, .. }) = self.log.entry(i) {
                new_conf = Some(conf.clone());
            }
        }
        if let Some(conf) = new_conf {
            self.apply_conf(conf);
        }
    }

    fn apply_conf(&mut self, conf: ConfState) {
        self.conf = conf;
        if self.role != Role::Leader {
            return;
        }
        if !self.conf.is_voter(self.id) {
            // Removed (or demoted) leader steps down; the rest elect anew. Its last act as
            // leader: the others learn the commit that removed it, or a survivor whose log
            // holds the removal uncommitted would still count this node, and the last voter
            // of a two-voter group could never win an election again (found by the
            // whole-node simulator).
            let peers: Vec<(NodeId, u64)> = self.progress.iter().map(|(id, p)| (*id, p.match_index)).collect();
            for (id, matched) in peers {
                let commit = matched.min(self.log.commit);
                self.send(id, MessageKind::Heartbeat { commit, read_seq: self.read_seq });
            }
            self.become_follower(self.term, 0);
            return;
        }
        let next = self.log.last_index() + 1;
        let members = self.conf.members();
        // A removed member is not replicated to any more, so it would never learn that its
        // removal committed (it waits out its own timeout). One last heartbeat carries the
        // commit index to it, as far as its log matches ours.
        let removed: Vec<(NodeId, u64)> =
            self.progress.iter().filter(|(id, _)| !members.contains(id)).map(|(id, p)| (*id, p.match_index)).collect();
        for (id, matched) in removed {
            let commit = matched.min(self.log.commit);
            self.send(id, MessageKind::Heartbeat { commit, read_seq: self.read_seq });
        }
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            if id != self.id && !self.progress.contains_key(&id) {
                self.progress.insert(id, Progress::new(next));
                self.send_append(id, true);
            }
        }
        // A smaller quorum may commit more right away.
        self.maybe_commit();
    }

    /// Sends an append (or snapshot chunk) to `to` if flow control allows.
    /// `force` sends an (possibly empty) append even when there is nothing
    /// new, to carry commit or probe.
    fn send_append(&mut self, to: NodeId, force: bool) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let last = self.log.last_index();
        match pr.state {
            ProgressState::Snapshot { .. } => return,
            ProgressState::Probe if pr.probe_sent => return,
            ProgressState::Replicate if pr.inflight.len() >= self.cfg.max_inflight_msgs as usize => return,
            _ => {}
        }
        if !force && pr.next_index > last && pr.state == ProgressState::Replicate {
            return;
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // Needed entries are compacted: stream the snapshot instead.
            let index = self.log.snapshot.meta.index;
            // Invariant: the progress entry exists (checked above).
            let pr = self.progress.get_mut(&to).expect("progress exists");
            pr.state = ProgressState::Snapshot { index, offset: 0 };
            pr.inflight.clear();
            self.send_snapshot_chunk(to);
            return;
        };
        let entries = self.log.slice(pr.next_index, last, self.cfg.max_append_bytes);
        let commit = self.log.commit;
        // Invariant: the progress entry exists (checked above).
        let pr = self.progress.get_mut(&to).expect("progress exists");
        match pr.state {
            ProgressState::Replicate => {
                if let Some(e) = entries.last() {
                    pr.next_index = e.index + 1;
                    pr.inflight.push_back(e.index);
                }
            }
            _ => pr.probe_sent = true,
        }
        self.send(to, MessageKind::Append { prev_index, prev_term, entries, commit });
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, offset } = pr.state else {
            return;
        };
        let snap = &self.log.snapshot;
        let offset = if snap.meta.index != index {
            // A newer snapshot replaced the one being streamed: restart.
            pr.state = ProgressState::Snapshot { index: snap.meta.index, offset: 0 };
            0
        } else {
            offset
        };
        let total = snap.data.len() as u64;
        let start = offset.min(total) as usize;
        let chunk = u64::from(self.cfg.max_snapshot_chunk_bytes.min(MAX_SNAPSHOT_CHUNK_BYTES));
        let end = offset.saturating_add(chunk).min(total) as usize;
        let kind = MessageKind::SnapshotChunk { meta: snap.meta.clone(), total_bytes: total, offset, data: snap.data[start..end].to_vec() };
        self.send(to, kind);
    }

    fn retransmit_snapshots(&mut self) {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in ids {
            // Invariant: ids were just read from the map.
            let pr = self.progress.get_mut(&id).expect("progress exists");
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                if !pr.snapshot_progressed {
                    self.send_snapshot_chunk(id);
                }
                if let Some(pr) = self.progress.get_mut(&id) {
                    pr.snapshot_progressed = false;
                }
            }
        }
    }

    fn bcast_heartbeat(&mut self) {
        let ids: Vec<(NodeId, u64)> = self.progress.iter().map(|(id, p)| (*id, p.match_index)).collect();
        for (id, m) in ids {
            let commit = m.min(self.log.commit);
            self.send(id, MessageKind::Heartbeat { commit, read_seq: self.read_seq });
        }
    }

    fn leader_read(&mut self, ctx: Vec<u8>, from: NodeId) -> Result<(), RequestError> {
        if self.log.term(self.log.commit) != Some(self.term) {
            return Err(RequestError::NotReady);
        }
        if self.conf.voters == [self.id] {
            self.deliver_read(from, self.log.commit, ctx);
            return Ok(());
        }
        if self.pending_reads.len() >= self.cfg.max_pending_reads as usize {
            return Err(RequestError::TooManyReads);
        }
        self.read_seq += 1;
        let mut acks = BTreeSet::new();
        acks.insert(self.id);
        self.pending_reads.push_back(PendingRead { seq: self.read_seq, index: self.log.commit, ctx, from, acks });
        self.bcast_heartbeat();
        Ok(())
    }

    fn deliver_read(&mut self, from: NodeId, index: u64, ctx: Vec<u8>) {
        if from == 0 {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(from, MessageKind::ReadIndexResponse { ctx, index: Some(index) });
        }
    }

    fn ack_reads(&mut self, from: NodeId, seq: u64) {
        if !self.conf.is_voter(from) {
            return;
        }
        let mut confirmed = None;
        for (k, r) in self.pending_reads.iter_mut().enumerate() {
            if r.seq > seq {
                break;
            }
            r.acks.insert(from);
            if r.acks.iter().filter(|a| self.conf.is_voter(**a)).count() >= self.conf.quorum() {
                confirmed = Some(k);
            }
        }
        if let Some(k) = confirmed {
            // Leadership confirmed at a later round also covers earlier reads.
            let done: Vec<PendingRead> = self.pending_reads.drain(..=k).collect();
            for r in done {
                self.deliver_read(r.from, r.index, r.ctx);
            }
        }
    }

    /// Rejects malformed messages before anything changes.
    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient { to: m.to, me: self.id });
        }
        if m.from == 0 || m.from == self.id {
            return Err(StepError::BadSender(m.from));
        }
        if m.term == 0 {
            return Err(StepError::ZeroTerm);
        }
        match &m.kind {
            MessageKind::Append { prev_index, prev_term, entries, .. } => {
                let mut expect = prev_index.checked_add(1).ok_or(StepError::Invalid("index overflow"))?;
                let mut term = *prev_term;
                for e in entries {
                    if e.index != expect || e.term < term || e.term > m.term {
                        return Err(StepError::Invalid("append entries not contiguous"));
                    }
                    if let EntryKind::Conf { conf, .. } = &e.kind {
                        if !conf.is_well_formed() {
                            return Err(StepError::Invalid("malformed membership entry"));
                        }
                    }
                    expect = expect.checked_add(1).ok_or(StepError::Invalid("index overflow"))?;
                    term = e.term;
                }
                if *prev_term > m.term {
                    return Err(StepError::Invalid("prev term beyond message term"));
                }
            }
            MessageKind::AppendResponse { index, reject } => {
                if *index > self.log.last_index() && m.term == self.term && self.role == Role::Leader {
                    return Err(StepError::Invalid("ack beyond leader log"));
                }
                if let Some(h) = reject {
                    if h.hint_index > h.rejected_index {
                        return Err(StepError::Invalid("reject hint beyond rejected index"));
                    }
                }
            }
            MessageKind::SnapshotChunk { meta, total_bytes, offset, data } => {
                if meta.term > m.term || (meta.index > 0 && meta.term == 0) || !meta.conf.is_well_formed() {
                    return Err(StepError::Invalid("malformed snapshot meta"));
                }
                if *total_bytes > self.cfg.max_snapshot_bytes || data.len() as u64 > u64::from(MAX_SNAPSHOT_CHUNK_BYTES) {
                    return Err(StepError::Invalid("snapshot too large"));
                }
                match offset.checked_add(data.len() as u64) {
                    Some(end) if end <= *total_bytes => {}
                    _ => return Err(StepError::Invalid("snapshot chunk beyond total")),
                }
            }
            MessageKind::ReadIndex { ctx } | MessageKind::ReadIndexResponse { ctx, .. } if ctx.len() > MAX_READ_CTX_BYTES => {
                return Err(StepError::Invalid("read context too large"));
            }
            _ => {}
        }
        Ok(())
    }

    fn step_valid(&mut self, m: Message) {
        if m.term > self.term {
            match &m.kind {
                MessageKind::VoteRequest { pre, transfer, .. } => {
                    let in_lease =
                        self.cfg.check_quorum && self.leader != 0 && self.election_elapsed < self.cfg.election_ticks_min && !transfer;
                    if in_lease {
                        // We heard from a live leader recently: ignore.
                        return;
                    }
                    if !pre {
                        self.become_follower(m.term, 0);
                    }
                }
                MessageKind::VoteResponse { pre: true, granted: true } => {}
                MessageKind::Append { .. } | MessageKind::Heartbeat { .. } | MessageKind::SnapshotChunk { .. } => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            match &m.kind {
                MessageKind::Append { .. } | MessageKind::Heartbeat { .. } | MessageKind::SnapshotChunk { .. } => {
                    // Tell a stale leader about the newer term so it steps down.
                    self.send(m.from, MessageKind::HeartbeatResponse { read_seq: 0 });
                }
                MessageKind::VoteRequest { pre: true, .. } => {
                    self.send(m.from, MessageKind::VoteResponse { pre: true, granted: false });
                }
                _ => {}
            }
            return;
        }

        match m.kind {
            MessageKind::VoteRequest { pre, last_index, last_term, .. } => {
                self.handle_vote_request(m.from, m.term, pre, last_index, last_term)
            }
            MessageKind::VoteResponse { pre, granted } => {
                let expected = if pre { Role::PreCandidate } else { Role::Candidate };
                let term_ok = if pre { Some(m.term) == self.term.checked_add(1) || !granted } else { m.term == self.term };
                if self.role == expected && term_ok && self.conf.is_voter(m.from) {
                    self.votes.insert(m.from, granted);
                    match self.tally() {
                        Some(true) => self.won_election(),
                        Some(false) => self.become_follower(self.term, 0),
                        None => {}
                    }
                }
            }
            MessageKind::Append { prev_index, prev_term, entries, commit } => {
                if self.role == Role::Leader {
                    return; // Two leaders in one term cannot happen; ignore.
                }
                self.follow(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            MessageKind::Heartbeat { commit, read_seq } => {
                if self.role == Role::Leader {
                    return;
                }
                self.follow(m.from);
                if commit <= self.log.last_index() {
                    self.commit_to(commit);
                }
                self.send(m.from, MessageKind::HeartbeatResponse { read_seq });
            }
            MessageKind::SnapshotChunk { meta, total_bytes, offset, data } => {
                if self.role == Role::Leader {
                    return;
                }
                self.follow(m.from);
                self.handle_snapshot_chunk(m.from, meta, total_bytes, offset, data);
            }
            MessageKind::AppendResponse { index, reject } => self.handle_append_response(m.from, index, reject),
            MessageKind::HeartbeatResponse { read_seq } => {
                if self.role != Role::Leader {
                    return;
                }
                let last = self.log.last_index();
                let Some(pr) = self.progress.get_mut(&m.from) else {
                    return;
                };
                pr.recent_active = true;
                pr.probe_sent = false;
                let lagging = pr.match_index < last;
                let full = pr.inflight.len() >= self.cfg.max_inflight_msgs as usize;
                let stuck = pr.state == ProgressState::Replicate && (pr.next_index > last || full);
                if lagging {
                    // A pipelined append may have been lost: resend from the
                    // match point (duplicates are idempotent at the follower).
                    if stuck {
                        pr.become_probe();
                    }
                    self.send_append(m.from, true);
                }
                self.ack_reads(m.from, read_seq);
            }
            MessageKind::SnapshotResponse { index, next_offset } => {
                if self.role != Role::Leader {
                    return;
                }
                let Some(pr) = self.progress.get_mut(&m.from) else {
                    return;
                };
                pr.recent_active = true;
                if let ProgressState::Snapshot { index: sending, .. } = pr.state {
                    if sending == index {
                        pr.state = ProgressState::Snapshot { index, offset: next_offset };
                        pr.snapshot_progressed = true;
                        if next_offset < self.log.snapshot.data.len() as u64 {
                            self.send_snapshot_chunk(m.from);
                        }
                    }
                }
            }
            MessageKind::TimeoutNow => {
                if self.role != Role::Leader && self.conf.is_voter(self.id) {
                    self.start_campaign(false, true);
                }
            }
            MessageKind::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    if self.leader_read(ctx.clone(), m.from).is_err() {
                        self.send(m.from, MessageKind::ReadIndexResponse { ctx, index: None });
                    }
                } else if self.leader != 0 && self.leader != m.from {
                    let leader = self.leader;
                    self.send(leader, MessageKind::ReadIndex { ctx });
                }
            }
            MessageKind::ReadIndexResponse { ctx, index } => {
                if let Some(index) = index {
                    self.read_states.push(ReadState { index, ctx });
                }
            }
        }
    }

    /// Recognise `leader` as this term's leader.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, leader);
        }
        self.leader = leader;
        self.election_elapsed = 0;
    }

    fn handle_vote_request(&mut self, from: NodeId, term: u64, pre: bool, last_index: u64, last_term: u64) {
        let can_vote = self.vote == from || (self.vote == 0 && self.leader == 0) || (pre && term > self.term) || self.cfg.bugs.vote_twice();
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            self.send_with_term(from, term, MessageKind::VoteResponse { pre, granted: true });
            if !pre {
                self.vote = from;
                self.election_elapsed = 0;
            }
        } else {
            self.send(from, MessageKind::VoteResponse { pre, granted: false });
        }
    }

    fn handle_append(&mut self, from: NodeId, prev_index: u64, prev_term: u64, entries: Vec<Entry>, commit: u64) {
        if prev_index < self.log.commit {
            // Everything up to our commit matches any current leader's log
            // (leader completeness), so take only what lies beyond it. The
            // message's entries are contiguous from prev_index + 1 <= commit,
            // so a non-empty suffix comes with the entry at `commit`: its term
            // must be ours, or the message is not from a log we can follow
            // (only a bogus or corrupted peer sends that; appending would
            // break the log's term order).
            let c = self.log.commit;
            let at_commit = entries.iter().find(|e| e.index == c).map(|e| e.term);
            if at_commit.is_some_and(|t| Some(t) != self.log.term(c)) {
                self.send(from, MessageKind::AppendResponse { index: c, reject: None });
                return;
            }
            let rest: Vec<Entry> = entries.into_iter().filter(|e| e.index > c).collect();
            let last_new = rest.last().map_or(c, |e| e.index);
            self.log.append_after_match(&rest);
            self.commit_to(commit.min(last_new));
            self.send(from, MessageKind::AppendResponse { index: last_new, reject: None });
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            // The last index known to match is the end of *this* message,
            // not our log end (we may hold a stale suffix beyond it).
            let last_new = prev_index + entries.len() as u64;
            self.log.append_after_match(&entries);
            self.commit_to(commit.min(last_new));
            self.send(from, MessageKind::AppendResponse { index: last_new, reject: None });
        } else {
            let mut hint_index = prev_index.min(self.log.last_index());
            while hint_index > self.log.prev_index && self.log.term(hint_index).is_some_and(|t| t > prev_term) {
                hint_index -= 1;
            }
            let hint_term = self.log.term(hint_index).unwrap_or(0);
            self.send(
                from,
                MessageKind::AppendResponse {
                    index: prev_index,
                    reject: Some(RejectHint { rejected_index: prev_index, hint_index, hint_term }),
                },
            );
        }
    }

    fn handle_append_response(&mut self, from: NodeId, index: u64, reject: Option<RejectHint>) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if let Some(h) = reject {
            match pr.state {
                ProgressState::Replicate if h.rejected_index <= pr.match_index => return,
                ProgressState::Replicate => pr.become_probe(),
                ProgressState::Probe if h.rejected_index != pr.next_index - 1 => return,
                ProgressState::Probe => {}
                ProgressState::Snapshot { .. } => return,
            }
            // Skip back past the follower's conflicting term in one step.
            let mut probe = h.hint_index.min(last);
            if h.hint_term > 0 {
                while probe > self.log.prev_index && self.log.term(probe).is_some_and(|t| t > h.hint_term) {
                    probe -= 1;
                }
            }
            // Invariant: the progress entry exists (looked up above).
            let pr = self.progress.get_mut(&from).expect("progress exists");
            pr.next_index = h.rejected_index.min(probe + 1).max(pr.match_index + 1);
            pr.probe_sent = false;
            self.send_append(from, true);
            return;
        }
        let index = index.min(last);
        if index > pr.match_index {
            pr.match_index = index;
            pr.next_index = pr.next_index.max(index + 1);
            while pr.inflight.front().is_some_and(|i| *i <= index) {
                pr.inflight.pop_front();
            }
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot { index: s, .. } if index >= s => pr.become_replicate(),
                _ => {}
            }
            self.maybe_commit();
        } else if let ProgressState::Snapshot { index: s, .. } = pr.state {
            if pr.match_index >= s {
                pr.become_replicate();
            }
        } else if pr.state == ProgressState::Probe {
            pr.probe_sent = false;
        }
        if self.role != Role::Leader {
            return;
        }
        // Pipeline more entries while the window allows.
        loop {
            let Some(pr) = self.progress.get(&from) else {
                return;
            };
            let before = (pr.next_index, pr.inflight.len(), pr.probe_sent);
            if pr.next_index > last && pr.state == ProgressState::Replicate {
                break;
            }
            if pr.state == ProgressState::Probe && pr.match_index >= last {
                break;
            }
            self.send_append(from, false);
            let Some(pr) = self.progress.get(&from) else {
                return;
            };
            if (pr.next_index, pr.inflight.len(), pr.probe_sent) == before {
                break;
            }
        }
        if self.transferee == Some(from) && self.progress.get(&from).map(|p| p.match_index) == Some(last) {
            self.send(from, MessageKind::TimeoutNow);
        }
    }

    fn handle_snapshot_chunk(&mut self, from: NodeId, meta: SnapshotMeta, total_bytes: u64, offset: u64, data: Vec<u8>) {
        if meta.index <= self.log.commit {
            self.incoming_snapshot = None;
            let c = self.log.commit;
            self.send(from, MessageKind::AppendResponse { index: c, reject: None });
            return;
        }
        let same = self.incoming_snapshot.as_ref().is_some_and(|s| s.meta == meta && s.total_bytes == total_bytes);
        if offset == 0 && !same {
            self.incoming_snapshot = Some(IncomingSnapshot { meta: meta.clone(), total_bytes, data: Vec::new() });
        }
        let have = match &mut self.incoming_snapshot {
            Some(s) if s.meta == meta && s.total_bytes == total_bytes => {
                if offset == s.data.len() as u64 {
                    s.data.extend_from_slice(&data);
                }
                s.data.len() as u64
            }
            _ => 0,
        };
        if have < total_bytes {
            self.send(from, MessageKind::SnapshotResponse { index: meta.index, next_offset: have });
            return;
        }
        let Some(snap) = self.incoming_snapshot.take() else {
            return;
        };
        if self.log.matches(snap.meta.index, snap.meta.term) {
            // We already hold the log up to the snapshot: just commit.
            self.commit_to(snap.meta.index);
        } else {
            let conf = snap.meta.conf.clone();
            let snapshot = Snapshot { meta: snap.meta, data: snap.data };
            self.log.restore(snapshot.clone());
            self.pending_install = Some(snapshot);
            self.pending_compaction = None;
            self.conf = conf;
        }
        self.send(from, MessageKind::SnapshotResponse { index: meta.index, next_offset: total_bytes });
        self.send(from, MessageKind::AppendResponse { index: meta.index, reject: None });
    }
}
