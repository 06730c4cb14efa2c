//! The manager's replicated store: the raft core, its redb storage, and the
//! [`State`] that committed entries build.
//!
//! The daemon's event loop owns one `Store` and drives it: [`Store::propose`]
//! hands an [`Entry`] to raft, [`Store::tick`] advances raft's clock, and
//! both then run [`Store::drive`], which follows raft's `Ready` contract in
//! order: persist (one fsynced redb transaction), install a received
//! snapshot, apply committed entries to the state, `advance`, and return the
//! messages that may now be sent. On a one-manager swarm raft has a single
//! voter, so a proposal is committed and applied before `propose` returns.
//!
//! The state machine is not stored separately: raft's snapshot data is
//! `State::snapshot()`, and a restart rebuilds the state from that snapshot
//! plus the committed entries after it.
//!
//! Invariants: `applied` is the raft index of the last committed entry
//! handed to the state (including conf and no-op entries, which the state
//! does not see); a committed entry whose bytes do not decode is skipped on
//! every replica alike and counted in `skipped_entries`.

use crate::raft::{self, EntryKind, Raft, RaftStorage};
use crate::schema::{LOCAL, META, SCHEMA_VERSION};
use crate::state::{SnapshotError, State};
use redb::{Database, ReadableDatabase, ReadableTable};
use shoal_shared::ops::Entry;
use std::path::Path;
use std::sync::Arc;

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {message}")]
    Open { path: String, message: String },
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
    #[error("the swarm does not have a leader right now: {0}")]
    Propose(#[from] raft::ProposeError),
    #[error("the change was accepted by raft but not committed yet (index {0})")]
    NotCommitted(u64),
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
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
    /// Raft's tick length, from the config the core was built with.
    tick_ms: u64,
}

/// A stable, non-zero raft id for a node id string (FNV-1a 64).
pub fn raft_id(node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

impl Store {
    /// Opens (or creates) the database at `path` for the node whose id is
    /// stored in it, or `new_node_id()` for a new one. A new store becomes a
    /// single-voter raft group that elects itself at once.
    pub fn open(path: &Path, seed: u64, new_node_id: impl FnOnce() -> String) -> Result<(Store, String), StoreError> {
        Store::open_tuned(path, seed, new_node_id, |_| {})
    }

    /// [`Store::open`] with adjusted raft settings (tests use short snapshot intervals).
    pub fn open_tuned(
        path: &Path,
        seed: u64,
        new_node_id: impl FnOnce() -> String,
        tune: impl FnOnce(&mut raft::Config),
    ) -> Result<(Store, String), StoreError> {
        let database = Database::create(path).map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
        let db = Arc::new(database);
        let node_id = init_local(&db, new_node_id)?;
        let storage = RaftStorage::new(db.clone())?;
        let persisted = storage.load()?;
        let mut cfg = raft::Config::lan(raft_id(&node_id), seed);
        tune(&mut cfg);
        let tick_ms = cfg.tick_ms;
        let (raft, state, applied) = if persisted.is_empty() {
            (Raft::bootstrap(cfg, &[raft_id(&node_id)])?, State::default(), 0)
        } else {
            let snap = &persisted.snapshot;
            let state = if snap.data.is_empty() { State::default() } else { State::restore(&snap.data)? };
            let applied = snap.meta.index;
            (Raft::restore(cfg, persisted)?, state, applied)
        };
        let mut store = Store { db, raft, storage, state, applied, skipped_entries: 0, tick_ms };
        store.drive()?;
        // A lone voter need not wait out an election timeout.
        if store.raft.status().voters == vec![store.raft.id()] {
            let _ = store.raft.campaign();
            store.drive()?;
        }
        Ok((store, node_id))
    }

    /// The replicated state as of the last applied entry.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether this node leads the raft group (and may propose).
    pub fn is_leader(&self) -> bool {
        self.raft.role() == raft::Role::Leader
    }

    /// Proposes an entry and drives raft; on a single voter the entry is
    /// applied before this returns. On error nothing was proposed.
    pub fn propose(&mut self, entry: &Entry) -> Result<u64, StoreError> {
        let index = self.raft.propose(entry.encode())?;
        self.drive()?;
        if self.applied < index {
            return Err(StoreError::NotCommitted(index));
        }
        Ok(index)
    }

    /// Advances raft's logical clock by one tick (`raft::Config::tick_ms`).
    pub fn tick(&mut self) -> Result<Vec<raft::Message>, StoreError> {
        self.raft.tick();
        self.drive()
    }

    /// Milliseconds per raft tick.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Follows the Ready contract until raft has nothing more to say;
    /// returns messages that may be sent now.
    pub fn drive(&mut self) -> Result<Vec<raft::Message>, StoreError> {
        let mut out = Vec::new();
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            self.storage.persist(&rd)?;
            if let Some(s) = &rd.snapshot {
                self.state = if s.data.is_empty() { State::default() } else { State::restore(&s.data)? };
                self.applied = s.meta.index;
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
            }
            out.extend(rd.messages.iter().cloned());
            self.raft.advance(rd);
            if self.raft.should_snapshot() {
                // A compaction at the applied index can only fail if raft moved past it, which it cannot here.
                let _ = self.raft.compact(self.applied, self.state.snapshot());
            }
        }
        Ok(out)
    }

    /// Reads a node-local (not replicated) value.
    pub fn local(&self, key: &str) -> Result<Option<String>, StoreError> {
        let rx = self.db.begin_read().map_err(db)?;
        let t = rx.open_table(LOCAL).map_err(db)?;
        Ok(t.get(key).map_err(db)?.map(|v| v.value().to_string()))
    }
}

/// Checks the layout version and returns the node id, creating it if new.
fn init_local(database: &Database, new_node_id: impl FnOnce() -> String) -> Result<String, StoreError> {
    let tx = database.begin_write().map_err(db)?;
    let node_id = {
        let mut meta = tx.open_table(META).map_err(db)?;
        let found = meta.get("schema_version").map_err(db)?.map(|v| v.value());
        match found {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION).map_err(db)?;
            }
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
    Ok(node_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::service;
    use shoal_shared::ops::Op;

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

    #[test]
    fn raft_ids_are_stable_and_nonzero() {
        assert_eq!(raft_id("abc"), raft_id("abc"));
        assert_ne!(raft_id("abc"), raft_id("abd"));
        assert_ne!(raft_id(""), 0);
    }
}
