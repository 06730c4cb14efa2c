//! The manager's replicated store: the raft core, its redb storage, and the
//! [`State`] that committed entries build.
//!
//! Ownership: the daemon's event loop owns one `Store` (and through it the
//! database file, the [`Raft`] core and the [`State`]); nothing else touches
//! them. Inputs are [`Store::propose`] / [`Store::propose_async`] (entries),
//! [`Store::tick`] (raft's clock), [`Store::step`] (a message from a peer
//! manager) and the membership calls. Each runs the internal drive loop,
//! which follows raft's `Ready` contract in order: persist (one fsynced redb
//! transaction), install a received snapshot, apply committed entries to the
//! state, `advance`.
//!
//! Outgoing messages: every message any drive produces is appended to one
//! **outbox**, after the batch it belongs to is durable. The outbox is
//! drained in exactly one way: [`Store::take_messages`], which
//! [`Store::tick`], [`Store::drive`] and [`Store::step`] also call to return
//! its content. So a message is returned exactly once, whichever call drains
//! it, and messages produced by calls that return none (`propose_async`,
//! `add_learner`, ...) wait in the outbox for the next drain. The outbox
//! holds at most [`OUTBOX_MESSAGES_MAX`] messages; beyond it the oldest are
//! dropped (counted in `dropped_messages`), which raft tolerates like any
//! network loss.
//!
//! Proposals: on a one-manager swarm raft has a single voter, so
//! [`Store::propose`] commits and applies before it returns. With several
//! voters, [`Store::propose_async`] returns a [`Proposal`] (index, term) and
//! the store watches it: when the entry at that index is applied, the
//! proposal committed iff the applied entry carries the proposal's term;
//! otherwise another leader's entry replaced it. A snapshot that jumps past
//! a watched index, a [`Store::reset`] and a [`Store::force_new_cluster`]
//! that drops it report it failed (it may in fact have committed: the caller
//! re-reads the state). Outcomes wait in [`Store::take_outcomes`]; watched
//! plus unread outcomes are bounded by [`PROPOSALS_WATCHED_MAX`]. The store
//! applies no timeouts; the daemon does.
//!
//! Bootstrap: a store with no raft state starts as [`Bootstrap::Single`] (a
//! one-voter group electing itself at once) or [`Bootstrap::Join`] (a blank
//! node that never campaigns and waits for a leader's append or snapshot).
//! A join is remembered in the `local` table (`raft_bootstrap = "join"`)
//! until raft state exists, so a restart during a join cannot turn the node
//! into a single-voter group of its own whose entry 1 would wrongly match
//! the swarm's.
//!
//! A drive that fails after taking a `Ready` (a storage error, or a
//! received snapshot whose data does not decode, which is then not
//! persisted) leaves the core ahead of the disk: the store halts and refuses
//! every input with [`StoreError::Halted`] until it is reopened (or reset).
//! A failed write of node-local values halts it too (redb refuses every
//! later operation after an I/O error until the file is opened again).
//!
//! Full disks: a write that fails because the filesystem is full (ENOSPC)
//! or the quota is used up (EDQUOT) is [`StoreError::DiskFull`], which
//! names the data dir, and the halted store refuses every input with it.
//! Nothing was changed: a batch that did not persist released no message
//! and applied nothing. [`Store::reload`] opens the file again in place
//! (the daemon does so once space is back), as a restart would: raft and
//! the state are rebuilt from what is on disk, every watched proposal fails.
//!
//! Damage: every node (manager or worker) keeps its state in this one file.
//! An open has redb verify the checksum of every page of the file before
//! anything reads it, so a damaged file is refused with
//! [`StoreError::Damaged`], which names the file and how to recover, instead
//! of a panic inside redb on a later read (a panic aborts the release
//! binary); damaged records of our own are refused the same way at open.
//! A file damaged while the daemon runs is not covered.
//!
//! The state machine is not stored separately: raft's snapshot data is
//! `State::snapshot()`, and a restart rebuilds the state from that snapshot
//! plus the committed entries after it.
//!
//! Invariants: `applied` is the raft index of the last committed entry
//! handed to the state (including conf and no-op entries, which the state
//! does not see); a committed entry whose bytes do not decode is skipped on
//! every replica alike and counted in `skipped_entries`. Every watched
//! proposal's index is greater than `applied`.

use crate::raft::storage::Layout;
use crate::raft::{self, ConfChange, EntryKind, Persisted, Raft, RaftStorage};
use crate::schema::{BLOBS, LOCAL, META, SCHEMA_VERSION, SCHEMA_VERSION_PLAIN, SCHEMA_VERSION_SEALED_NO_HISTORY};
use crate::state::{SnapshotError, State};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use shoal_shared::ops::Entry;
use shoal_shared::seal::SealKey;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Most proposals watched plus outcomes not yet taken; `propose_async`
/// refuses beyond it.
pub const PROPOSALS_WATCHED_MAX: usize = 10_000;

/// Most outgoing messages buffered between two drains; the oldest are
/// dropped beyond it.
pub const OUTBOX_MESSAGES_MAX: usize = 4096;

/// `local` key remembering a pending join (value [`LOCAL_BOOTSTRAP_JOIN`]).
const LOCAL_BOOTSTRAP: &str = "raft_bootstrap";
const LOCAL_BOOTSTRAP_JOIN: &str = "join";
/// `local` key, present while the records were re-sealed under a new data
/// key but the file has not been rewritten yet (see [`Store::reseal`]).
const LOCAL_REWRITE_PENDING: &str = "rewrite_pending";

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "state database {path} is damaged ({detail}); shoal cannot start from it. stop shoal, then restore a backup \
         of the data dir, or move the data dir aside and join the swarm again from an empty one (`shoal swarm join`)"
    )]
    Damaged { path: String, detail: String },
    #[error("state database is corrupted ({0}); restart shoal to check the file")]
    Corrupted(String),
    #[error("state database has layout version {found}, this build reads {SCHEMA_VERSION}; upgrade shoal")]
    Schema { found: u64 },
    #[error("state database i/o error: {0}")]
    Db(String),
    #[error("raft storage: {0}")]
    Storage(#[from] raft::StorageError),
    #[error("raft state on disk is inconsistent: {0}")]
    Restore(#[from] raft::RestoreError),
    #[error("state snapshot is unreadable: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{}", propose_text(.0))]
    Propose(#[from] raft::ProposeError),
    #[error("the change was accepted by raft but not committed yet (index {0})")]
    NotCommitted(u64),
    #[error("too many proposals awaiting an outcome (limit {limit}); take outcomes or wait before proposing more")]
    TooManyProposals { limit: usize },
    #[error("raft timings refused: {0}")]
    Timing(#[from] raft::ConfigError),
    #[error("ignored a raft message: {0}")]
    Step(#[from] raft::StepError),
    #[error("membership change refused: {0}")]
    Membership(raft::ProposeError),
    #[error("raft node {0:#x} is already a manager of this swarm")]
    AlreadyMember(u64),
    #[error("raft node {0:#x} is not a manager of this swarm")]
    NotMember(u64),
    #[error("leadership transfer refused: {0}")]
    Transfer(raft::RequestError),
    #[error("the store stopped after an error ({0}); restart the daemon to reload it from disk")]
    Halted(String),
    #[error("this node holds no replicated state to keep; reset it and join or initialize a swarm instead")]
    NothingToKeep,
    /// The filesystem of the data dir is full (ENOSPC) or its quota used up
    /// (EDQUOT); the OS's wording is not kept (it differs between libcs).
    #[error("the data dir {dir} is full (no space left on device): free space there; nothing was changed")]
    DiskFull { dir: String },
    /// An I/O error that redb reports as is (its text names the cause).
    #[error("state database i/o error: {0}")]
    Io(String),
}

/// Whether an I/O error means the disk is full: ENOSPC or EDQUOT (std maps
/// both to these kinds on every unix).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// The I/O error at the root of a redb error, if any.
fn redb_io(e: &redb::Error) -> Option<&std::io::Error> {
    match e {
        redb::Error::Io(io) => Some(io),
        _ => None,
    }
}

impl StoreError {
    /// The I/O error under this one, if it came from the disk.
    fn io(&self) -> Option<&std::io::Error> {
        match self {
            StoreError::Storage(raft::StorageError::Db(e)) => redb_io(e),
            _ => None,
        }
    }
}

/// A redb error: damage to the file (redb's `Corrupted`) is told apart
/// from other failures, so that an open can report it as [`StoreError::Damaged`].
fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(detail) => StoreError::Corrupted(detail),
        redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull { dir: String::new() },
        redb::Error::Io(io) => StoreError::Io(io.to_string()),
        other => StoreError::Db(other.to_string()),
    }
}

impl StoreError {
    /// An error met while opening the file at `path`: one that says the
    /// bytes on disk are damaged (redb's checksums or tree walk, or our own
    /// records failing to decode or to fit together) becomes
    /// [`StoreError::Damaged`] naming the file; others are returned as they are.
    fn at_open(self, path: &Path) -> StoreError {
        let detail = match self {
            StoreError::Corrupted(detail) | StoreError::Storage(raft::StorageError::Db(redb::Error::Corrupted(detail))) => detail,
            // Not a newer snapshot version nor a config error: those are no damage.
            StoreError::Storage(raft::StorageError::Corrupt { .. })
            | StoreError::Restore(raft::RestoreError::Inconsistent(_))
            | StoreError::Snapshot(SnapshotError::Empty | SnapshotError::Corrupt(_)) => self.to_string(),
            other => return other,
        };
        StoreError::Damaged { path: path.display().to_string(), detail: lowercase_first(&detail) }
    }
}

/// `s` with its first letter lowercased (redb's messages start with a capital).
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Whether [`Store::open_with`] has redb verify every page of the file (see
/// [`open_database_file`]).
const CHECK_INTEGRITY_ON_OPEN: bool = true;

/// Opens (or creates) the redb file at `path`. With `check_integrity`,
/// redb verifies the checksum of every page of the committed trees and
/// rebuilds its allocator state before the file is used, so a damaged file
/// is an error here (or is repaired from redb's previous commit) rather
/// than a panic inside redb on a later read: a plain open trusts the file.
fn open_database_file(path: &Path, check_integrity: bool) -> Result<Database, StoreError> {
    redb::Builder::new().set_check_integrity_on_open(check_integrity).create(path).map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Damaged { path: path.display().to_string(), detail: lowercase_first(&detail) }
        }
        // redb's "not a redb database" (a damaged or foreign header).
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Damaged { path: path.display().to_string(), detail: lowercase_first(&io.to_string()) }
        }
        other => StoreError::Open { path: path.display().to_string(), message: other.to_string() },
    })
}

/// How a store with no raft state starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A one-voter group of this node, which elects itself at once.
    Single,
    /// A blank node that waits for a leader to replicate to it; it never
    /// campaigns before it learns a membership that makes it a voter.
    Join,
}

/// A proposal accepted by raft whose outcome is watched (see the module
/// header): committed iff the entry applied at `index` has `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
}

/// Raft, its storage and the state machine, driven together.
pub struct Store {
    db: Arc<Database>,
    raft: Raft,
    storage: RaftStorage,
    state: State,
    applied: u64,
    /// Committed entries that did not decode (skipped deterministically).
    pub skipped_entries: u64,
    /// Outgoing messages dropped because the outbox was full.
    pub dropped_messages: u64,
    /// The index of the last snapshot a leader sent this replica (0: none
    /// since the store opened), for the daemon to say a far-behind replica
    /// caught up that way.
    pub installed_snapshot_index: u64,
    /// Raft's tick length, from the config the core was built with.
    tick_ms: u64,
    /// The clock durable writes are timed with (none: not timed). The shell
    /// sets it; the store keeps no clock of its own.
    pub sync_clock: Option<Arc<dyn shoal_shared::clock::MonoClock>>,
    /// The latest fsynced writes' latencies (with [`Store::sync_clock`]).
    pub sync_latency: crate::autopilot::SyncLatency,
    /// Test knob: added to every fsynced write (a slow disk), in ms.
    pub test_sync_delay_ms: u64,
    /// The (tuned) config, to rebuild the core on reset/force.
    cfg: raft::Config,
    outbox: Vec<raft::Message>,
    /// Watched proposals: index -> term when proposed.
    watched: BTreeMap<u64, u64>,
    outcomes: Vec<(Proposal, bool)>,
    /// Set when a drive failed after taking a `Ready` (the core and the
    /// disk may disagree) or a write failed (redb refuses every later
    /// operation): every further input is refused until [`Store::reload`].
    halted: Option<Halt>,
    /// This open upgraded the records of an older layout in place.
    sealed_in_place: bool,
    /// The database file (none on a simulated disk).
    path: Option<std::path::PathBuf>,
}

/// Why a store halted.
#[derive(Debug, Clone)]
enum Halt {
    /// The data dir's filesystem is full (see [`StoreError::DiskFull`]).
    DiskFull,
    /// Any other failure, as its message.
    Failed(String),
}

/// What a refused proposal means to the person who asked for the change.
fn propose_text(e: &raft::ProposeError) -> String {
    match e {
        raft::ProposeError::NotLeader { .. } | raft::ProposeError::ProposalDropped => {
            format!("the swarm does not have a leader right now ({e}); retry in a moment")
        }
        raft::ProposeError::TooLarge { len_bytes, limit_bytes } => {
            format!(
                "the change is too large: its raft entry would be {len_bytes} bytes, over the {limit_bytes}-byte limit; make it smaller"
            )
        }
        raft::ProposeError::Backpressure { .. } => format!("raft is busy ({e}); retry in a moment"),
        _ => format!("raft refused the change: {e}"),
    }
}

/// A stable, non-zero raft id for a node id string (FNV-1a 64).
pub fn raft_id(node_id: &str) -> u64 {
    shoal_shared::fnv1a64(node_id.bytes()).max(1)
}

impl Store {
    /// Opens (or creates) the database at `path` for the node whose id is
    /// stored in it, or `new_node_id()` for a new one. A new store becomes a
    /// single-voter raft group that elects itself at once.
    /// Sealed under a fixed test key; the daemon uses [`Store::open_with`].
    #[cfg(any(test, feature = "sim"))]
    pub fn open(path: &Path, seed: u64, new_node_id: impl FnOnce() -> String) -> Result<(Store, String), StoreError> {
        Store::open_tuned(path, seed, new_node_id, |_| {})
    }

    /// The fixed data key of [`Store::open`] and [`Store::open_tuned`] (tests only).
    #[cfg(any(test, feature = "sim"))]
    pub fn test_seal_key() -> Arc<SealKey> {
        Arc::new(SealKey::new(1, [0x7e; 32], [0; 16]))
    }

    /// [`Store::open`] with adjusted raft settings (tests use short snapshot intervals).
    #[cfg(any(test, feature = "sim"))]
    pub fn open_tuned(
        path: &Path,
        seed: u64,
        new_node_id: impl FnOnce() -> String,
        tune: impl FnOnce(&mut raft::Config),
    ) -> Result<(Store, String), StoreError> {
        Store::open_with(path, Store::test_seal_key(), seed, new_node_id, Bootstrap::Single, tune)
    }

    /// Opens (or creates) the database at `path`, its raft records sealed
    /// under `seal` (the node's data key). With no raft state on
    /// disk the node starts as `bootstrap` says (a remembered pending join
    /// wins over `Single`); with raft state, `bootstrap` is ignored.
    pub fn open_with(
        path: &Path,
        seal: Arc<SealKey>,
        seed: u64,
        new_node_id: impl FnOnce() -> String,
        bootstrap: Bootstrap,
        tune: impl FnOnce(&mut raft::Config),
    ) -> Result<(Store, String), StoreError> {
        let database = open_database_file(path, CHECK_INTEGRITY_ON_OPEN)?;
        let (mut store, node_id) = Store::open_database(database, seal, seed, new_node_id, bootstrap, tune).map_err(|e| e.at_open(path))?;
        store.path = Some(path.to_path_buf());
        // Records upgraded in place, or a re-seal whose file rewrite did not
        // finish: the old bytes are still in the file's free pages.
        if store.sealed_in_place || store.local(LOCAL_REWRITE_PENDING)?.is_some() {
            store.rewrite_file()?;
        }
        Ok((store, node_id))
    }

    /// Rewrites the database file from a copy of its live pages (fsynced)
    /// and replaces it atomically, so that nothing the store freed (records
    /// in clear, or sealed under a replaced data key) stays in the file.
    /// Clears [`LOCAL_REWRITE_PENDING`]. A store on a simulated disk has no
    /// file to rewrite.
    fn rewrite_file(&mut self) -> Result<(), StoreError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let rewrite = |e: String| StoreError::Open { path: path.display().to_string(), message: format!("cannot rewrite it: {e}") };
        let copy = path.with_extension("redb.rewrite");
        let _ = std::fs::remove_file(&copy);
        self.backup().and_then(|snap| snap.write_to(&copy)).map_err(|e| rewrite(e.to_string()))?;
        std::fs::rename(&copy, &path).map_err(|e| rewrite(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| rewrite(e.to_string()))?;
        }
        // The copy holds every commit so far and nothing is written in
        // between (`&mut self`): swap the handles to it.
        let db = Arc::new(open_database_file(&path, false)?);
        self.storage.set_database(db.clone());
        self.db = db;
        self.sealed_in_place = false;
        self.remove_local(LOCAL_REWRITE_PENDING)
    }

    /// [`Store::open_with`] on a simulated disk (see [`crate::sim_disk`]):
    /// the whole-cluster simulator opens many stores in one process and
    /// cuts their power.
    #[cfg(any(test, feature = "sim"))]
    pub fn open_on_disk(
        disk: crate::sim_disk::SimDisk,
        seal: Arc<SealKey>,
        seed: u64,
        new_node_id: impl FnOnce() -> String,
        bootstrap: Bootstrap,
        tune: impl FnOnce(&mut raft::Config),
    ) -> Result<(Store, String), StoreError> {
        let database = redb::Builder::new()
            .create_with_backend(disk.backend())
            .map_err(|e| StoreError::Open { path: "<sim disk>".into(), message: e.to_string() })?;
        Store::open_database(database, seal, seed, new_node_id, bootstrap, tune)
    }

    /// The body of [`Store::open_with`] once the database is open.
    fn open_database(
        database: Database,
        seal: Arc<SealKey>,
        seed: u64,
        new_node_id: impl FnOnce() -> String,
        bootstrap: Bootstrap,
        tune: impl FnOnce(&mut raft::Config),
    ) -> Result<(Store, String), StoreError> {
        let db = Arc::new(database);
        let (node_id, layout) = init_local(&db, new_node_id)?;
        let storage = RaftStorage::new(db.clone(), seal, layout)?;
        let persisted = storage.load()?;
        let mut cfg = raft::Config::lan(raft_id(&node_id), seed);
        tune(&mut cfg);
        let tick_ms = cfg.tick_ms;
        let fresh = persisted.is_empty();
        let (raft, state, applied) = if fresh {
            // A placeholder: `start_fresh` below builds the real core.
            (Raft::restore(cfg.clone(), Persisted::default())?, State::default(), 0)
        } else {
            let snap = &persisted.snapshot;
            let state = if snap.data.is_empty() { State::default() } else { State::restore(&snap.data)? };
            let applied = snap.meta.index;
            (Raft::restore(cfg.clone(), persisted)?, state, applied)
        };
        let mut store = Store {
            db,
            raft,
            storage,
            state,
            applied,
            skipped_entries: 0,
            installed_snapshot_index: 0,
            dropped_messages: 0,
            tick_ms,
            sync_clock: None,
            sync_latency: Default::default(),
            test_sync_delay_ms: 0,
            cfg,
            outbox: Vec::new(),
            watched: BTreeMap::new(),
            outcomes: Vec::new(),
            halted: None,
            sealed_in_place: layout != Layout::Current,
            path: None,
        };
        if fresh {
            let join_pending = store.local(LOCAL_BOOTSTRAP)?.as_deref() == Some(LOCAL_BOOTSTRAP_JOIN);
            let bootstrap = if join_pending { Bootstrap::Join } else { bootstrap };
            store.start_fresh(bootstrap)?;
        } else {
            store.run_ready()?;
            store.campaign_if_sole_voter()?;
        }
        Ok((store, node_id))
    }

    /// Wipes the raft state (log, snapshot, hard state, membership) and the
    /// in-memory state, then starts as [`Store::open_with`] does on an empty
    /// store. The node id in `local` is kept. Watched proposals fail and the
    /// outbox is emptied. Used by `swarm join` and `swarm leave`.
    pub fn reset(&mut self, bootstrap: Bootstrap) -> Result<(), StoreError> {
        self.storage.clear()?;
        self.halted = None;
        self.state = State::default();
        self.applied = 0;
        self.skipped_entries = 0;
        self.outbox.clear();
        self.fail_watched(|_| true);
        self.start_fresh(bootstrap)
    }

    /// [`Store::reset`] under a new node id (`swarm leave`: the node comes
    /// back to any swarm as a new node, as Swarm's). The id is stored
    /// before the raft state is erased, so a crash in between leaves the
    /// old swarm's state under the new id, which the next start
    /// settles the same way.
    pub fn reset_identity(&mut self, node_id: &str, bootstrap: Bootstrap) -> Result<(), StoreError> {
        self.set_local("node_id", node_id)?;
        self.cfg.id = raft_id(node_id);
        self.reset(bootstrap)
    }

    /// Rebuilds the core for a store whose raft tables are empty.
    fn start_fresh(&mut self, bootstrap: Bootstrap) -> Result<(), StoreError> {
        match bootstrap {
            Bootstrap::Single => {
                self.remove_local(LOCAL_BOOTSTRAP)?;
                self.raft = Raft::bootstrap(self.cfg.clone(), &[self.cfg.id])?;
            }
            Bootstrap::Join => {
                self.set_local(LOCAL_BOOTSTRAP, LOCAL_BOOTSTRAP_JOIN)?;
                self.raft = Raft::restore(self.cfg.clone(), Persisted::default())?;
            }
        }
        self.run_ready()?;
        self.campaign_if_sole_voter()
    }

    /// A lone voter need not wait out an election timeout.
    fn campaign_if_sole_voter(&mut self) -> Result<(), StoreError> {
        if self.raft.status().voters == [self.raft.id()] && !self.is_leader() {
            let _ = self.raft.campaign();
            self.run_ready()?;
        }
        Ok(())
    }

    /// Makes this surviving manager the only voter and leader of a new
    /// group, keeping the applied state and the index space: the durable
    /// raft state becomes a snapshot at the applied index (membership: this
    /// node only), an empty log after it (uncommitted entries are dropped,
    /// watched proposals past it fail) and a hard state one term ahead.
    /// The node then elects itself at once. For disaster recovery only: the
    /// old members must not come back with their old state.
    pub fn force_new_cluster(&mut self) -> Result<(), StoreError> {
        self.check_running()?;
        let applied = self.applied;
        if applied == 0 {
            return Err(StoreError::NothingToKeep);
        }
        let old = self.storage.load()?;
        let applied_term = if old.snapshot.meta.index == applied {
            Some(old.snapshot.meta.term)
        } else if old.prev_index == applied {
            Some(old.prev_term)
        } else {
            old.entries.iter().find(|e| e.index == applied).map(|e| e.term)
        };
        let term = self.raft.term();
        let applied_term = applied_term.unwrap_or(term).min(term);
        let me = self.raft.id();
        let conf = raft::ConfState::with_voters(&[me]);
        let p = Persisted {
            hard_state: raft::HardState { term: term.saturating_add(1), vote: me, commit: applied },
            conf_state: conf.clone(),
            snapshot: raft::Snapshot { meta: raft::SnapshotMeta { index: applied, term: applied_term, conf }, data: self.state.snapshot() },
            prev_index: applied,
            prev_term: applied_term,
            entries: Vec::new(),
        };
        // Check before writing: a refused state must not replace a good one.
        let raft = Raft::restore_applied(self.cfg.clone(), p.clone(), applied)?;
        self.storage.overwrite(&p)?;
        self.raft = raft;
        self.outbox.clear();
        self.fail_watched(|index| index > applied);
        self.run_ready()?;
        self.campaign_if_sole_voter()
    }

    /// Replaces the data key: every raft record is re-sealed under `seal`
    /// in one fsynced transaction (`seal` must still open records of the
    /// key it replaces), and new records are sealed under it.
    /// The database file is then rewritten, so that the records sealed
    /// under the replaced key are not left in its free pages (a crash before
    /// that is finished at the next open: [`LOCAL_REWRITE_PENDING`]).
    pub fn reseal(&mut self, seal: Arc<SealKey>) -> Result<(), StoreError> {
        self.check_running()?;
        self.set_local(LOCAL_REWRITE_PENDING, "1")?;
        self.storage.reseal(seal)?;
        self.rewrite_file()
    }

    /// Applies the raft timings of the swarm's link profile (see
    /// [`raft::Config::timing`]); nothing when they are in effect. Kept for
    /// a later reset or force-new-cluster too.
    pub fn set_link_profile(&mut self, profile: shoal_shared::types::LinkProfile) -> Result<(), StoreError> {
        let t = self.cfg.timing(profile);
        if self.raft.timing() == t {
            return Ok(());
        }
        self.raft.set_timing(t).map_err(StoreError::from)?;
        self.cfg = self.cfg.with_timing(t);
        Ok(())
    }

    /// The replicated state as of the last applied entry.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether this node leads the raft group (and may propose).
    pub fn is_leader(&self) -> bool {
        self.raft.role() == raft::Role::Leader
    }

    /// Whether this node leads and its state holds everything committed
    /// before its term (it applied its term's first entry). A new leader's
    /// log may hold entries of the previous term that are committed but not
    /// applied here yet: deciding on the state before that (orchestrating,
    /// scheduling) would redo what they did (found by the whole-node
    /// simulator: every slot of a service created just before a failover
    /// got a second task).
    pub fn is_leader_caught_up(&self) -> bool {
        #[cfg(any(test, feature = "sim"))]
        if crate::sim_bugs::on(crate::sim_bugs::Bug::DecideBeforeCaughtUp) {
            return self.is_leader();
        }
        self.is_leader() && self.applied >= self.raft.term_start_index()
    }

    /// Proposes an entry and drives raft; on a single voter the entry is
    /// applied before this returns, else [`StoreError::NotCommitted`] (the
    /// entry is in flight, unwatched: use [`Store::propose_async`] there).
    /// On any other error nothing was proposed.
    pub fn propose(&mut self, entry: &Entry) -> Result<u64, StoreError> {
        self.check_running()?;
        let index = self.raft.propose(entry.encode())?;
        self.run_ready()?;
        if self.applied < index {
            return Err(StoreError::NotCommitted(index));
        }
        Ok(index)
    }

    /// Proposes an entry, drives raft and watches the proposal; its outcome
    /// arrives in [`Store::take_outcomes`] (at once on a single voter).
    /// On error nothing was proposed.
    pub fn propose_async(&mut self, entry: &Entry) -> Result<Proposal, StoreError> {
        self.check_running()?;
        if self.watched.len() + self.outcomes.len() >= PROPOSALS_WATCHED_MAX {
            return Err(StoreError::TooManyProposals { limit: PROPOSALS_WATCHED_MAX });
        }
        let index = self.raft.propose(entry.encode())?;
        let proposal = Proposal { index, term: self.raft.term() };
        self.watched.insert(index, proposal.term);
        self.run_ready()?;
        Ok(proposal)
    }

    /// Outcomes of watched proposals since the last call, in the order they
    /// were decided: `(proposal, committed)`.
    pub fn take_outcomes(&mut self) -> Vec<(Proposal, bool)> {
        std::mem::take(&mut self.outcomes)
    }

    /// Advances raft's logical clock by one tick (`raft::Config::tick_ms`)
    /// and drives; returns (drains) the outbox.
    pub fn tick(&mut self) -> Result<Vec<raft::Message>, StoreError> {
        self.check_running()?;
        self.raft.tick();
        self.drive()
    }

    /// Feeds a message from a peer manager and drives; returns (drains) the
    /// outbox. A refused message ([`StoreError::Step`]) changed nothing and
    /// is not fatal: log it and carry on.
    pub fn step(&mut self, msg: raft::Message) -> Result<Vec<raft::Message>, StoreError> {
        self.check_running()?;
        self.raft.step(msg)?;
        self.drive()
    }

    /// Milliseconds per raft tick.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Follows the Ready contract until raft has nothing more to say;
    /// returns (drains) the outbox: every message that may be sent now.
    pub fn drive(&mut self) -> Result<Vec<raft::Message>, StoreError> {
        self.run_ready()?;
        Ok(self.take_messages())
    }

    /// Drains the outbox (see the module header).
    pub fn take_messages(&mut self) -> Vec<raft::Message> {
        std::mem::take(&mut self.outbox)
    }

    /// The Ready loop; messages go to the outbox.
    /// A failure halts the store (see [`StoreError::Halted`]).
    fn run_ready(&mut self) -> Result<(), StoreError> {
        self.check_running()?;
        self.run_ready_inner().map_err(|e| self.halt_on(e))
    }

    fn run_ready_inner(&mut self) -> Result<(), StoreError> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            // Decode a received snapshot before persisting it: unreadable
            // data must not replace good state on disk.
            let installed = match &rd.snapshot {
                Some(s) if !s.data.is_empty() => Some(State::restore(&s.data)?),
                Some(_) => Some(State::default()),
                None => None,
            };
            let started_ms = self.sync_clock.as_ref().filter(|_| rd.must_sync).map(|c| c.now_ms());
            if rd.must_sync && self.test_sync_delay_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(self.test_sync_delay_ms));
            }
            self.storage.persist(&rd)?;
            if let (Some(t0), Some(c)) = (started_ms, &self.sync_clock) {
                self.sync_latency.record(c.now_ms().saturating_sub(t0));
            }
            if let (Some(s), Some(state)) = (&rd.snapshot, installed) {
                self.state = state;
                self.applied = s.meta.index;
                let index = s.meta.index;
                self.installed_snapshot_index = index;
                self.fail_watched(|i| i <= index);
            }
            for e in &rd.committed_entries {
                if e.index <= self.applied {
                    continue;
                }
                if let EntryKind::Normal(data) = &e.kind {
                    if !data.is_empty() {
                        match Entry::decode(data) {
                            Ok(entry) => {
                                self.state.apply(e.index, &entry);
                            }
                            Err(_) => self.skipped_entries += 1,
                        }
                    }
                }
                self.applied = e.index;
                if let Some(term) = self.watched.remove(&e.index) {
                    self.outcomes.push((Proposal { index: e.index, term }, e.term == term));
                }
            }
            self.outbox.extend(rd.messages.iter().cloned());
            if self.outbox.len() > OUTBOX_MESSAGES_MAX {
                let excess = self.outbox.len() - OUTBOX_MESSAGES_MAX;
                self.outbox.drain(..excess);
                self.dropped_messages += excess as u64;
            }
            self.raft.advance(rd);
            if self.raft.should_snapshot() {
                // A compaction at the applied index can only fail if raft moved past it, which it cannot here.
                let _ = self.raft.compact(self.applied, self.state.snapshot());
            }
        }
        Ok(())
    }

    /// Refuses work once a drive failed half-way (see [`StoreError::Halted`]).
    fn check_running(&self) -> Result<(), StoreError> {
        match &self.halted {
            Some(Halt::DiskFull) => Err(StoreError::DiskFull { dir: self.data_dir() }),
            Some(Halt::Failed(reason)) => Err(StoreError::Halted(reason.clone())),
            None => Ok(()),
        }
    }

    /// The directory of the database file, as errors name it.
    fn data_dir(&self) -> String {
        match self.path.as_deref().and_then(Path::parent) {
            Some(d) => d.display().to_string(),
            None => "<sim disk>".to_string(),
        }
    }

    /// A failed write or drive: a full disk becomes [`StoreError::DiskFull`]
    /// naming the data dir, and the store halts (see the module header).
    fn halt_on(&mut self, e: StoreError) -> StoreError {
        let full = matches!(e, StoreError::DiskFull { .. }) || e.io().is_some_and(is_disk_full);
        if full {
            self.halted = Some(Halt::DiskFull);
            StoreError::DiskFull { dir: self.data_dir() }
        } else {
            self.halted = Some(Halt::Failed(e.to_string()));
            e
        }
    }

    /// Whether the store halted (see [`StoreError::Halted`]); `Some(true)`
    /// when because its disk is full.
    pub fn halted(&self) -> Option<bool> {
        self.halted.as_ref().map(|h| matches!(h, Halt::DiskFull))
    }

    /// Why the store halted, as the error every input gets meanwhile.
    pub fn halt_error(&self) -> Option<StoreError> {
        self.check_running().err()
    }

    /// Opens the database file again in place, as a restart would: raft and
    /// the state are rebuilt from the disk, watched proposals fail (their
    /// outcomes wait in [`Store::take_outcomes`]), the outbox is emptied.
    /// For a store that halted (a full disk, once space is back); on error
    /// it stays halted and may be reloaded again.
    pub fn reload(&mut self) -> Result<(), StoreError> {
        let Some(path) = self.path.clone() else {
            return Err(StoreError::Open { path: "<sim disk>".into(), message: "a simulated disk cannot be reopened".into() });
        };
        let Some(seal) = self.storage.seal_key() else {
            return Err(StoreError::Open { path: path.display().to_string(), message: "clear records cannot be reopened".into() });
        };
        if self.halted.is_none() {
            self.halted = Some(Halt::Failed("reloading from disk".into()));
        }
        // redb locks its file: the old handles go first (an empty database
        // in memory stands in, never read: the store is halted meanwhile).
        let placeholder = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map(Arc::new)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        self.storage.set_database(placeholder.clone());
        self.db = placeholder;
        let cfg = self.cfg.clone();
        let id = self.raft.id();
        let opened = open_database_file(&path, CHECK_INTEGRITY_ON_OPEN).and_then(|database| {
            Store::open_database(database, seal, cfg.seed, String::new, Bootstrap::Join, |c| *c = cfg.clone()).map_err(|e| e.at_open(&path))
        });
        let (mut fresh, _) = match opened {
            Ok(o) => o,
            Err(e) => return Err(self.halt_on(e)),
        };
        if fresh.raft.id() != id {
            return Err(StoreError::Open { path: path.display().to_string(), message: "it now holds another node's state".into() });
        }
        fresh.path = Some(path);
        self.fail_watched(|_| true);
        fresh.outcomes = std::mem::take(&mut self.outcomes);
        fresh.skipped_entries += self.skipped_entries;
        fresh.dropped_messages = self.dropped_messages;
        *self = fresh;
        Ok(())
    }

    /// Reports watched proposals whose index matches `dropped` as failed.
    fn fail_watched(&mut self, dropped: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self.watched.keys().copied().filter(|i| dropped(*i)).collect();
        for index in gone {
            if let Some(term) = self.watched.remove(&index) {
                self.outcomes.push((Proposal { index, term }, false));
            }
        }
    }

    // ----- membership -----------------------------------------------------

    /// Raft's view of itself (role, term, commit, membership, progress).
    pub fn raft_status(&self) -> raft::Status {
        self.raft.status()
    }

    /// The known leader's raft id, if any (this node's when it leads).
    pub fn leader(&self) -> Option<u64> {
        self.raft.known_leader()
    }

    /// This node's raft id (`raft_id(node_id)`).
    pub fn raft_id(&self) -> u64 {
        self.raft.id()
    }

    /// Whether `raft_id` is a voter or learner (membership as of commit).
    pub fn is_member(&self, raft_id: u64) -> bool {
        let s = self.raft.status();
        s.voters.contains(&raft_id) || s.learners.contains(&raft_id)
    }

    /// The voters' raft ids, sorted.
    pub fn voters(&self) -> Vec<u64> {
        self.raft.status().voters
    }

    /// Leader only: proposes `raft_id` as a learner (it replicates but does
    /// not vote until promoted); returns the change's log index.
    pub fn add_learner(&mut self, raft_id: u64) -> Result<u64, StoreError> {
        if self.is_member(raft_id) {
            return Err(StoreError::AlreadyMember(raft_id));
        }
        self.conf_change(ConfChange::AddLearner(raft_id))
    }

    /// Leader only: proposes removing voter or learner `raft_id`; returns
    /// the change's log index. A removed leader steps down once it commits.
    pub fn remove_member(&mut self, raft_id: u64) -> Result<u64, StoreError> {
        if !self.is_member(raft_id) {
            return Err(StoreError::NotMember(raft_id));
        }
        self.conf_change(ConfChange::RemoveNode(raft_id))
    }

    fn conf_change(&mut self, change: ConfChange) -> Result<u64, StoreError> {
        self.check_running()?;
        let index = self.raft.propose_conf_change(change).map_err(StoreError::Membership)?;
        self.run_ready()?;
        Ok(index)
    }

    /// Leader only: proposes promoting the first learner that holds every
    /// committed entry (one change at a time: none while another change is
    /// pending). Returns the learners proposed (at most one). The change is
    /// persisted and sent by the next drive (`tick`, `step`, `drive`).
    pub fn promote_caught_up_learners(&mut self) -> Vec<u64> {
        if !self.is_leader() || self.halted.is_some() {
            return Vec::new();
        }
        let s = self.raft.status();
        let caught_up = s.learners.iter().copied().find(|l| s.progress.iter().any(|p| p.id == *l && p.match_index >= s.commit));
        match caught_up {
            Some(l) if self.raft.propose_conf_change(ConfChange::PromoteLearner(l)).is_ok() => vec![l],
            _ => Vec::new(),
        }
    }

    /// Leader only: proposes promoting learner `raft_id` to voter (refused
    /// unless it holds every committed entry).
    pub fn promote_learner(&mut self, raft_id: u64) -> Result<u64, StoreError> {
        self.conf_change(ConfChange::PromoteLearner(raft_id))
    }

    /// Leader only: hands leadership to voter `raft_id`.
    pub fn transfer_leader(&mut self, raft_id: u64) -> Result<(), StoreError> {
        self.check_running()?;
        self.raft.transfer_leader(raft_id).map_err(StoreError::Transfer)?;
        self.run_ready()
    }

    /// The whole database as of now (every commit so far, none after), to
    /// copy with [`crate::backup::Snapshot::write_to`], off the caller's loop
    /// if it likes: later writes do not change it.
    pub fn backup(&self) -> Result<crate::backup::Snapshot, crate::backup::BackupError> {
        let tx = self.db.begin_read().map_err(|e| crate::backup::BackupError::Read(e.to_string()))?;
        Ok(crate::backup::Snapshot::new(tx))
    }

    // ----- node-local values ------------------------------------------------

    /// Reads a node-local (not replicated) value.
    pub fn local(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.check_running()?;
        let rx = self.db.begin_read().map_err(db)?;
        let t = rx.open_table(LOCAL).map_err(db)?;
        Ok(t.get(key).map_err(db)?.map(|v| v.value().to_string()))
    }

    /// Durably writes a node-local (not replicated) value.
    pub fn set_local(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write_local(|t| t.insert(key, value).map(|_| ()))
    }

    /// Durably stores a node-local record (see `schema::BLOBS`; the caller seals it).
    pub fn set_blob(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write_table(BLOBS, |t| t.insert(key, value).map(|_| ()))
    }

    /// Reads a node-local record.
    pub fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_running()?;
        let rx = self.db.begin_read().map_err(db)?;
        let t = match rx.open_table(BLOBS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db(e)),
        };
        Ok(t.get(key).map_err(db)?.map(|v| v.value().to_vec()))
    }

    /// Durably removes a node-local record (absent is fine).
    pub fn remove_blob(&mut self, key: &str) -> Result<(), StoreError> {
        self.write_table(BLOBS, |t| t.remove(key).map(|_| ()))
    }

    /// Durably removes a node-local value (absent is fine).
    pub fn remove_local(&mut self, key: &str) -> Result<(), StoreError> {
        self.write_local(|t| t.remove(key).map(|_| ()))
    }

    fn write_local(
        &mut self,
        f: impl FnOnce(&mut redb::Table<'_, &'static str, &'static str>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        self.write_table(LOCAL, f)
    }

    /// One fsynced write transaction on a node-local table; a failure
    /// halts the store (redb refuses everything after an I/O error).
    fn write_table<V: redb::Value + 'static>(
        &mut self,
        table: redb::TableDefinition<'static, &'static str, V>,
        f: impl FnOnce(&mut redb::Table<'_, &'static str, V>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        self.check_running()?;
        let write = || {
            let mut tx = self.db.begin_write().map_err(db)?;
            tx.set_durability(Durability::Immediate).map_err(db)?;
            {
                let mut t = tx.open_table(table).map_err(db)?;
                f(&mut t).map_err(db)?;
            }
            tx.commit().map_err(db)
        };
        write().map_err(|e| self.halt_on(e))
    }
}

/// Creates or checks the schema version and the node id. Returns the node
/// id and the layout the raft records are in (`RaftStorage::new` upgrades
/// an older one and raises the version).
fn init_local(database: &Database, new_node_id: impl FnOnce() -> String) -> Result<(String, Layout), StoreError> {
    let tx = database.begin_write().map_err(db)?;
    let mut layout = Layout::Current;
    let node_id = {
        let mut meta = tx.open_table(META).map_err(db)?;
        let found = meta.get("schema_version").map_err(db)?.map(|v| v.value());
        match found {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION).map_err(db)?;
            }
            Some(SCHEMA_VERSION_PLAIN) => layout = Layout::Plain,
            Some(SCHEMA_VERSION_SEALED_NO_HISTORY) => layout = Layout::SealedNoHistory,
            Some(v) if v != SCHEMA_VERSION => return Err(StoreError::Schema { found: v }),
            Some(_) => {}
        }
        let mut local = tx.open_table(LOCAL).map_err(db)?;
        let existing = local.get("node_id").map_err(db)?.map(|v| v.value().to_string());
        match existing {
            Some(id) => id,
            None => {
                let id = new_node_id();
                local.insert("node_id", id.as_str()).map_err(db)?;
                id
            }
        }
    };
    tx.commit().map_err(db)?;
    Ok((node_id, layout))
}

#[cfg(test)]
#[path = "store_damage_tests.rs"]
mod damage_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::service;
    use shoal_shared::ops::Op;

    /// A store file in the layout before sealing (schema 1): bare postcard
    /// raft records, one committed entry creating a service whose env holds
    /// `marker`.
    fn write_plain_store(path: &Path, marker: &str) {
        use crate::raft::storage::{LOG as RAFT_LOG, META as RAFT_META};
        const ENTRIES: u64 = 300;
        let db = Database::create(path).unwrap();
        let rid = raft_id("node-a");
        let mut svc = service("s1", "web");
        svc.spec.task.container.env = vec![format!("SECRET={marker}")];
        let entry = Entry { at: 1, ops: vec![Op::PutService(svc)] };
        let tx = db.begin_write().unwrap();
        {
            tx.open_table(META).unwrap().insert("schema_version", SCHEMA_VERSION_PLAIN).unwrap();
            tx.open_table(LOCAL).unwrap().insert("node_id", "node-a").unwrap();
            let mut meta = tx.open_table(RAFT_META).unwrap();
            let conf = raft::ConfState::with_voters(&[rid]);
            let hs = raft::HardState { term: 1, vote: rid, commit: ENTRIES };
            meta.insert("hard_state", postcard::to_allocvec(&hs).unwrap().as_slice()).unwrap();
            meta.insert("conf_state", postcard::to_allocvec(&conf).unwrap().as_slice()).unwrap();
            meta.insert("log_start", postcard::to_allocvec(&(0u64, 0u64)).unwrap().as_slice()).unwrap();
            let mut log = tx.open_table(RAFT_LOG).unwrap();
            // Enough entries that the sealed copies cannot reuse all the freed pages.
            for index in 1..=ENTRIES {
                let data = if index == 1 { Vec::new() } else { entry.encode() };
                let e = raft::Entry { term: 1, index, kind: EntryKind::Normal(data) };
                log.insert(index, postcard::to_allocvec(&e).unwrap().as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_store_from_before_sealing_is_sealed_and_leaves_no_plaintext_in_the_file() {
        let path = tmp("plain");
        let dir = path.parent().unwrap().to_path_buf();
        let marker = "plain-marker-41c7e2";
        write_plain_store(&path, marker);
        let raw = std::fs::read(&path).unwrap();
        assert!(raw.windows(marker.len()).any(|w| w == marker.as_bytes()), "the fixture holds the marker in clear");
        // Under a data key wrapped by an unlock key, clear records are
        // refused and the file is left as it was.
        let wrapped = Store::open_with(&path, Store::test_seal_key(), 1, || unreachable!(), Bootstrap::Single, |_| {});
        let err = wrapped.err().expect("clear records refused").to_string();
        assert!(err.contains("clear records are refused"), "{err}");
        let after = std::fs::read(&path).unwrap();
        assert!(after.windows(marker.len()).any(|w| w == marker.as_bytes()), "the refused open changed the records");
        let upgrading = Arc::new(SealKey::new(1, [0x7e; 32], [9; 16]).allowing_plain_upgrade());
        let (s, id) = Store::open_with(&path, upgrading, 1, || unreachable!(), Bootstrap::Single, |_| {}).unwrap();
        assert_eq!(id, "node-a");
        let svc = s.state().find_service("web").expect("the plaintext entry was applied");
        assert_eq!(svc.spec.task.container.env, vec![format!("SECRET={marker}")]);
        drop(s);
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(marker.len()).any(|w| w == marker.as_bytes()), "plaintext left in the database file");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("shoal.redb")]);
        // Reopened: sealed, same state, nothing to rewrite.
        let (s, _) = Store::open(&path, 2, || unreachable!()).unwrap();
        assert!(!s.sealed_in_place);
        assert!(s.state().find_service("web").is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reseal_leaves_no_record_of_the_replaced_key_in_the_file() {
        let path = tmp("reseal-file");
        let dir = path.parent().unwrap().to_path_buf();
        let (mut s, _) = Store::open(&path, 1, || "node-a".into()).unwrap();
        for i in 0..50 {
            s.propose(&Entry { at: i, ops: vec![Op::PutService(service(&format!("s{i}"), &format!("web{i}")))] }).unwrap();
        }
        // The sealed bytes of a few log rows under the first key.
        let rows: Vec<Vec<u8>> = {
            let rx = s.db.begin_read().unwrap();
            let log = rx.open_table(crate::raft::storage::LOG).unwrap();
            [2u64, 20, 40].iter().map(|i| log.get(*i).unwrap().unwrap().value()[8..].to_vec()).collect()
        };
        let raw = std::fs::read(&path).unwrap();
        assert!(rows.iter().all(|r| raw.windows(r.len()).any(|w| w == r.as_slice())), "the fixture's rows are in the file");
        let old = Store::test_seal_key();
        let new = Arc::new(SealKey::new(2, [0x42; 32], [3; 16]).with_previous(Some((1, *old.key_bytes()))));
        s.reseal(new).unwrap();
        let raw = std::fs::read(&path).unwrap();
        for r in &rows {
            assert!(!raw.windows(r.len()).any(|w| w == r.as_slice()), "a record sealed under the replaced key is left in the file");
        }
        // The store keeps working on the rewritten file, and reopens under the new key alone.
        s.propose(&Entry { at: 99, ops: vec![Op::PutService(service("after", "after"))] }).unwrap();
        assert_eq!(s.local(LOCAL_REWRITE_PENDING).unwrap(), None);
        drop(s);
        let only_new = Arc::new(SealKey::new(2, [0x42; 32], [4; 16]));
        let (mut s, _) = Store::open_with(&path, only_new.clone(), 2, || unreachable!(), Bootstrap::Single, |_| {}).unwrap();
        assert_eq!(s.state().services.len(), 51);
        // A rewrite interrupted by a crash is done at the next open.
        s.set_local(LOCAL_REWRITE_PENDING, "1").unwrap();
        drop(s);
        let (s, _) = Store::open_with(&path, only_new, 3, || unreachable!(), Bootstrap::Single, |_| {}).unwrap();
        assert_eq!(s.local(LOCAL_REWRITE_PENDING).unwrap(), None);
        assert_eq!(s.state().services.len(), 51);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("shoal.redb")]);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("shoal.redb")
    }

    #[test]
    fn single_voter_commits_at_once_and_survives_reopen() {
        let path = tmp("reopen");
        {
            let (mut s, id) = Store::open(&path, 1, || "node-a".into()).unwrap();
            assert_eq!(id, "node-a");
            assert!(s.is_leader());
            let i = s.propose(&Entry { at: 1, ops: vec![Op::PutService(service("a", "web"))] }).unwrap();
            assert_eq!(s.state().services["a"].meta.version, i);
            s.propose(&Entry { at: 2, ops: vec![Op::PutService(service("b", "db"))] }).unwrap();
        }
        let (s, id) = Store::open(&path, 2, || panic!("node id must be read back")).unwrap();
        assert_eq!(id, "node-a");
        assert!(s.is_leader());
        assert_eq!(s.state().services.len(), 2);
        assert_eq!(s.local("node_id").unwrap().as_deref(), Some("node-a"));
    }

    #[test]
    fn snapshots_compact_and_restore() {
        let path = tmp("snap");
        let n = 130u64;
        let tune = |c: &mut raft::Config| {
            c.snapshot_interval_entries = 50;
            c.snapshot_keep_entries = 10;
        };
        {
            let (mut s, _) = Store::open_tuned(&path, 1, || "node-b".into(), tune).unwrap();
            for i in 0..n {
                let op = if i % 2 == 0 { Op::PutService(service("a", "web")) } else { Op::DeleteService { id: "a".into() } };
                s.propose(&Entry { at: i, ops: vec![op] }).unwrap();
            }
            assert!(s.raft.snapshot().meta.index > 0, "a snapshot was taken");
        }
        let (s, _) = Store::open_tuned(&path, 2, || unreachable!(), tune).unwrap();
        assert!(s.raft.snapshot().meta.index > 0, "restored from the snapshot");
        // n is even: the last op was a delete.
        assert!(s.state().services.is_empty());
        assert!(s.applied >= n);
    }

    fn open_node(name: &str, bootstrap: Bootstrap) -> (Store, std::path::PathBuf) {
        let path = tmp(name);
        let seed = raft_id(name);
        let (s, id) = Store::open_with(&path, Store::test_seal_key(), seed, || name.into(), bootstrap, |_| {}).unwrap();
        assert_eq!(id, name);
        (s, path)
    }

    /// Routes messages between `stores` (dropping any to or from a store in
    /// `cut`, which is not ticked either) and ticks every round, until
    /// `done` holds; returns whether it did within `max_rounds`.
    fn pump_until(stores: &mut [Store], cut: &[usize], max_rounds: usize, done: impl Fn(&[Store]) -> bool) -> bool {
        let ids: Vec<u64> = stores.iter().map(|s| s.raft_id()).collect();
        let mut net: Vec<raft::Message> = Vec::new();
        for _ in 0..max_rounds {
            if done(stores) {
                return true;
            }
            for (i, s) in stores.iter_mut().enumerate() {
                if cut.contains(&i) {
                    s.take_messages();
                } else {
                    net.extend(s.tick().unwrap());
                }
            }
            for _hop in 0..4 {
                for m in std::mem::take(&mut net) {
                    let Some(d) = ids.iter().position(|id| *id == m.to) else { continue };
                    let from = ids.iter().position(|id| *id == m.from);
                    if cut.contains(&d) || from.is_some_and(|f| cut.contains(&f)) {
                        continue;
                    }
                    if let Ok(out) = stores[d].step(m) {
                        net.extend(out);
                    }
                }
                for (i, s) in stores.iter_mut().enumerate() {
                    let out = s.take_messages();
                    if !cut.contains(&i) {
                        net.extend(out);
                    }
                }
            }
        }
        done(stores)
    }

    /// Three managers: `name-1` initialized the swarm, 2 and 3 joined as
    /// learners and were promoted; `name-1` leads.
    fn three_voters(name: &str) -> (Vec<Store>, Vec<std::path::PathBuf>) {
        let (s1, p1) = open_node(&format!("{name}-1"), Bootstrap::Single);
        let (s2, p2) = open_node(&format!("{name}-2"), Bootstrap::Join);
        let (s3, p3) = open_node(&format!("{name}-3"), Bootstrap::Join);
        assert!(s1.is_leader());
        assert!(!s2.is_leader() && s2.leader().is_none());
        let mut st = vec![s1, s2, s3];
        let ids: Vec<u64> = st.iter().map(|s| s.raft_id()).collect();
        for &id in &ids[1..] {
            st[0].add_learner(id).unwrap();
            assert!(matches!(st[0].add_learner(id), Err(StoreError::AlreadyMember(_)) | Err(StoreError::Membership(_))));
            let caught_up = |st: &[Store]| {
                let s = st[0].raft_status();
                s.learners.contains(&id) && s.progress.iter().any(|p| p.id == id && p.match_index >= s.commit)
            };
            assert!(pump_until(&mut st, &[], 200, caught_up), "learner {id:#x} catches up");
        }
        assert_eq!(st[1].leader(), Some(ids[0]));
        let all_voters = |st: &[Store]| st.iter().all(|s| s.voters().len() == 3);
        for _ in 0..20 {
            st[0].promote_caught_up_learners();
            if pump_until(&mut st, &[], 20, all_voters) {
                break;
            }
        }
        assert!(all_voters(&st), "both learners promoted: {:?}", st[0].raft_status());
        assert!(st.iter().all(|s| ids.iter().all(|id| s.is_member(*id))));
        assert!(st[0].promote_caught_up_learners().is_empty());
        (st, vec![p1, p2, p3])
    }

    fn put(id: &str) -> Entry {
        Entry { at: 1, ops: vec![Op::PutService(service(id, id))] }
    }

    #[test]
    fn a_full_disk_halts_the_store_naming_the_data_dir_and_a_reload_takes_writes_again() {
        let path = tmp("full");
        let (mut s, _) = Store::open(&path, 1, || "node-a".into()).unwrap();
        s.propose(&put("a")).unwrap();
        // What redb returns when a write meets ENOSPC (no OS text is compared).
        let enospc = StoreError::Storage(raft::StorageError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(28))));
        let e = s.halt_on(enospc);
        let dir = path.parent().unwrap().display().to_string();
        assert_eq!(e.to_string(), format!("the data dir {dir} is full (no space left on device): free space there; nothing was changed"));
        assert_eq!(s.halted(), Some(true));
        assert!(matches!(s.propose_async(&put("b")), Err(StoreError::DiskFull { .. })));
        assert!(matches!(s.set_local("k", "v"), Err(StoreError::DiskFull { .. })));
        assert!(matches!(s.set_blob("k", b"v"), Err(StoreError::DiskFull { .. })));
        assert!(matches!(s.tick(), Err(StoreError::DiskFull { .. })));
        assert_eq!(s.state().services.len(), 1, "nothing changed");
        s.reload().unwrap();
        assert_eq!(s.halted(), None);
        assert!(s.is_leader(), "a lone voter leads again at once");
        assert_eq!(s.state().services.len(), 1);
        s.propose(&put("b")).unwrap();
        s.set_local("k", "v").unwrap();
        drop(s);
        let (s, _) = Store::open(&path, 2, || panic!("node id must be read back")).unwrap();
        assert_eq!(s.state().services.len(), 2);
        assert_eq!(s.local("k").unwrap().as_deref(), Some("v"));
        // EDQUOT is a full disk too; other I/O errors halt with their own text.
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(122)));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(5)));
    }

    #[test]
    fn three_managers_join_promote_elect_and_replicate() {
        let (mut st, _) = three_voters("trio");
        // Hand leadership to a joined node, then replicate through it.
        let id2 = st[1].raft_id();
        st[0].transfer_leader(id2).unwrap();
        assert!(pump_until(&mut st, &[], 200, |st| st[1].is_leader()), "transfer completes");
        assert!(matches!(st[0].propose_async(&put("x")), Err(StoreError::Propose(_))));
        let p = st[1].propose_async(&put("a")).unwrap();
        assert!(pump_until(&mut st, &[], 200, |st| st.iter().all(|s| s.state().services.contains_key("a"))));
        assert_eq!(st[1].take_outcomes(), vec![(p, true)]);
        assert!(st[0].take_outcomes().is_empty(), "only the proposer watches");
        assert_eq!(st[0].state(), st[1].state());
        assert_eq!(st[1].state(), st[2].state());
        assert!(st.iter().all(|s| s.leader() == Some(id2)));
    }

    #[test]
    fn a_proposal_replaced_by_a_new_leader_fails() {
        let (mut st, _) = three_voters("deposed");
        let p = st[0].propose_async(&put("lost")).unwrap();
        assert!(st[0].take_outcomes().is_empty());
        // The leader is cut off before its append leaves; the others elect.
        assert!(pump_until(&mut st, &[0], 500, |st| st[1].is_leader() || st[2].is_leader()), "the others elect a leader");
        let q = st[1..].iter_mut().find(|s| s.is_leader()).unwrap().propose_async(&put("won")).unwrap();
        assert!(q.term > p.term);
        // Healed: the old leader's entry at p.index is replaced.
        let settled = |st: &[Store]| st.iter().all(|s| s.state().services.contains_key("won"));
        assert!(pump_until(&mut st, &[], 500, settled));
        assert_eq!(st[0].take_outcomes(), vec![(p, false)]);
        assert!(!st[0].state().services.contains_key("lost"));
        assert!(!st[0].is_leader());
        assert_eq!(st[0].state(), st[1].state());
    }

    #[test]
    fn watched_proposals_are_bounded_and_single_voter_outcomes_are_immediate() {
        let (mut s, _) = open_node("watch", Bootstrap::Single);
        let p = s.propose_async(&put("a")).unwrap();
        assert_eq!(s.take_outcomes(), vec![(p, true)]);
        for i in 0..PROPOSALS_WATCHED_MAX as u64 {
            s.watched.insert(1_000_000 + i, 1);
        }
        assert!(matches!(s.propose_async(&put("b")), Err(StoreError::TooManyProposals { .. })));
        s.reset(Bootstrap::Single).unwrap();
        assert_eq!(s.take_outcomes().len(), PROPOSALS_WATCHED_MAX);
        assert!(s.take_outcomes().is_empty());
        s.propose_async(&put("b")).unwrap();
    }

    #[test]
    fn reset_identity_gives_a_new_raft_id_that_survives_a_restart() {
        let (mut s, path) = open_node("old-id", Bootstrap::Single);
        s.propose(&put("a")).unwrap();
        let old_raft = s.raft_id();
        s.reset_identity("new-id", Bootstrap::Single).unwrap();
        assert!(s.state().services.is_empty());
        assert_eq!(s.local("node_id").unwrap().as_deref(), Some("new-id"));
        assert_eq!(s.raft_id(), raft_id("new-id"));
        assert_ne!(s.raft_id(), old_raft);
        assert!(s.is_leader() && s.voters() == [raft_id("new-id")]);
        s.propose(&put("b")).unwrap();
        drop(s);
        let (s, id) = Store::open(&path, 5, || unreachable!()).unwrap();
        assert_eq!((id.as_str(), s.raft_id()), ("new-id", raft_id("new-id")));
        assert!(s.is_leader());
        assert_eq!(s.state().services.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn reset_wipes_state_and_a_joining_node_stays_leaderless() {
        let (mut s, path) = open_node("reset", Bootstrap::Single);
        s.propose(&put("a")).unwrap();
        s.set_local("listen_addr", "10.0.0.1:4242").unwrap();
        s.reset(Bootstrap::Join).unwrap();
        assert!(s.state().services.is_empty());
        assert_eq!(s.local("node_id").unwrap().as_deref(), Some("reset"));
        assert_eq!(s.local("listen_addr").unwrap().as_deref(), Some("10.0.0.1:4242"));
        for _ in 0..300 {
            assert!(s.tick().unwrap().is_empty(), "a blank node sends nothing");
        }
        assert!(!s.is_leader() && s.leader().is_none() && s.voters().is_empty());
        assert!(matches!(s.propose_async(&put("b")), Err(StoreError::Propose(_))));
        assert!(matches!(s.force_new_cluster(), Err(StoreError::NothingToKeep)));
        drop(s);
        // A restart during a join does not turn the node into its own swarm.
        let (mut s, _) = Store::open(&path, 3, || unreachable!()).unwrap();
        for _ in 0..100 {
            s.tick().unwrap();
        }
        assert!(!s.is_leader() && s.voters().is_empty());
        s.remove_local("listen_addr").unwrap();
        assert_eq!(s.local("listen_addr").unwrap(), None);
        // Leaving: a fresh single-voter group again.
        s.reset(Bootstrap::Single).unwrap();
        assert!(s.is_leader());
        s.propose(&put("c")).unwrap();
        drop(s);
        let (s, _) = Store::open(&path, 4, || unreachable!()).unwrap();
        assert!(s.is_leader());
        assert_eq!(s.state().services.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn force_new_cluster_keeps_the_state_on_a_lone_survivor() {
        use crate::state::tests::{node, task};
        let (mut st, paths) = three_voters("force");
        let entries = [
            Entry { at: 1, ops: vec![Op::PutNode(node("n1", "linux/amd64"))] },
            put("a"),
            Entry { at: 2, ops: vec![Op::CreateTask(task("t1", "a", 1))] },
        ];
        let props: Vec<Proposal> = entries.iter().map(|e| st[0].propose_async(e).unwrap()).collect();
        assert!(pump_until(&mut st, &[], 200, |st| st[1].state() == st[0].state() && st[1].state().tasks.contains_key("t1")));
        assert_eq!(st[0].take_outcomes(), props.iter().map(|p| (*p, true)).collect::<Vec<_>>());
        let mut survivor = st.remove(1);
        drop(st);
        assert!(!survivor.is_leader());
        let before = survivor.state().clone();
        for _ in 0..100 {
            survivor.tick().unwrap();
        }
        assert!(!survivor.is_leader(), "no quorum without the others");
        survivor.force_new_cluster().unwrap();
        let me = survivor.raft_id();
        assert!(survivor.is_leader());
        assert_eq!(survivor.voters(), vec![me]);
        assert!(survivor.raft_status().learners.is_empty());
        assert_eq!(survivor.state(), &before);
        assert!(survivor.state().nodes.contains_key("n1") && survivor.state().tasks.contains_key("t1"));
        survivor.propose(&put("b")).unwrap();
        let p = survivor.propose_async(&put("c")).unwrap();
        assert_eq!(survivor.take_outcomes(), vec![(p, true)]);
        let after = survivor.state().clone();
        drop(survivor);
        let (s, id) = Store::open(&paths[1], 9, || unreachable!()).unwrap();
        assert_eq!(id, "force-2");
        assert!(s.is_leader());
        assert_eq!(s.voters(), vec![me]);
        assert_eq!(s.state(), &after);
        assert_eq!(s.state().services.len(), 3);
    }

    #[test]
    fn garbage_messages_are_refused_without_panics() {
        use raft::{Message, MessageKind};
        let (mut single, _) = open_node("garbage-1", Bootstrap::Single);
        let (mut blank, _) = open_node("garbage-2", Bootstrap::Join);
        single.propose(&put("a")).unwrap();
        for s in [&mut single, &mut blank] {
            let me = s.raft_id();
            let kinds = [
                MessageKind::VoteRequest { pre: false, last_index: u64::MAX, last_term: u64::MAX, transfer: true },
                MessageKind::VoteResponse { pre: false, granted: true },
                MessageKind::Append { prev_index: u64::MAX, prev_term: 1, entries: vec![], commit: u64::MAX },
                MessageKind::Append {
                    prev_index: 0,
                    prev_term: 0,
                    entries: vec![raft::Entry { term: 1, index: 5, kind: EntryKind::Normal(vec![0xff; 8]) }],
                    commit: 9,
                },
                MessageKind::AppendResponse { index: u64::MAX, reject: None },
                MessageKind::Heartbeat { commit: u64::MAX, read_seq: 7 },
                MessageKind::HeartbeatResponse { read_seq: u64::MAX },
                MessageKind::SnapshotChunk {
                    meta: raft::SnapshotMeta { index: 3, term: 1, conf: raft::ConfState::with_voters(&[7]) },
                    total_bytes: 4,
                    offset: 0,
                    data: vec![0xde, 0xad, 0xbe, 0xef],
                },
                MessageKind::SnapshotChunk { meta: raft::SnapshotMeta::default(), total_bytes: u64::MAX, offset: u64::MAX, data: vec![1] },
                MessageKind::SnapshotResponse { index: u64::MAX, next_offset: u64::MAX },
                MessageKind::TimeoutNow,
                MessageKind::ReadIndex { ctx: vec![1; 10] },
                MessageKind::ReadIndexResponse { ctx: vec![], index: Some(u64::MAX) },
            ];
            for kind in kinds {
                for (from, to, term) in
                    [(0, me, 1), (me, me, 1), (7, me + 1, 1), (7, me, 0), (7, me, 3), (7, me, 1 << 40), (7, me, u64::MAX)]
                {
                    let _ = s.step(Message { from, to, term, kind: kind.clone() });
                }
            }
            for _ in 0..30 {
                let _ = s.tick();
            }
        }
        // The refused ones are reported as step errors.
        let me = single.raft_id();
        let bad = Message { from: 0, to: me, term: 1, kind: MessageKind::TimeoutNow };
        assert!(matches!(single.step(bad), Err(StoreError::Step(_))));
        // Garbage never reached the state machine; the undecodable snapshot
        // halted the blank node instead of being persisted or applied.
        assert!(blank.state().services.is_empty());
        assert!(matches!(blank.tick(), Err(StoreError::Halted(_))));
        assert!(blank.storage.load().unwrap().snapshot.data.is_empty());
        blank.reset(Bootstrap::Join).unwrap();
        assert!(blank.tick().unwrap().is_empty());
        assert!(single.state().services.contains_key("a"));
        assert!(single.tick().is_ok());
    }

    #[test]
    fn raft_ids_are_stable_and_nonzero() {
        assert_eq!(raft_id("abc"), raft_id("abc"));
        assert_ne!(raft_id("abc"), raft_id("abd"));
        assert_ne!(raft_id(""), 0);
    }
}
