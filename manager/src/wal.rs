//! The durable log behind the manager's state for a single voter.
//!
//! Until the raft core drives every daemon, a one-manager swarm commits an
//! entry as soon as it is durable: [`Wal::append`] writes the entry and
//! commits the redb transaction with immediate durability (fsync) before it
//! returns, so an acknowledged change survives `kill -9`. Every
//! `snapshot_every_entries` entries the caller stores a [`State`] snapshot and
//! the log keeps only `keep_entries` behind it.
//!
//! Invariant: WAL keys are contiguous from `snapshot_index + 1` (or from the
//! first kept entry) to `last_index`.

use crate::schema::{LOCAL, META, SCHEMA_VERSION, SNAPSHOT, WAL};
use crate::state::{SnapshotError, State};
use redb::{Database, ReadableDatabase, ReadableTable};
use shoal_shared::ops::{Entry, EntryError};
use std::path::Path;

/// Entries between snapshots.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Entries kept behind a snapshot.
pub const KEEP_ENTRIES: u64 = 500;

/// Errors from the durable log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("cannot open state database {path}: {message}")]
    Open { path: String, message: String },
    #[error("state database i/o error: {0}")]
    Storage(String),
    #[error("state database has layout version {found}, this build reads {SCHEMA_VERSION}; upgrade shoal")]
    Schema { found: u64 },
    #[error("log entry {index} is unreadable: {source}")]
    Entry { index: u64, source: EntryError },
    #[error("state snapshot is unreadable: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("log has a gap: expected entry {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
}

fn storage<E: std::fmt::Display>(e: E) -> WalError {
    WalError::Storage(e.to_string())
}

/// The single-voter log and snapshot store.
pub struct Wal {
    db: Database,
    last_index: u64,
    snapshot_index: u64,
}

/// What a restart recovers: the state and the log's end.
pub struct Recovered {
    pub wal: Wal,
    pub state: State,
}

impl Wal {
    /// Opens (or creates) the database and replays snapshot plus log.
    pub fn open(path: &Path) -> Result<Recovered, WalError> {
        let db = Database::create(path).map_err(|e| WalError::Open { path: path.display().to_string(), message: e.to_string() })?;
        let tx = db.begin_write().map_err(storage)?;
        {
            let mut meta = tx.open_table(META).map_err(storage)?;
            let found = meta.get("schema_version").map_err(storage)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(storage)?;
                }
                Some(v) if v != SCHEMA_VERSION => return Err(WalError::Schema { found: v }),
                Some(_) => {}
            }
            tx.open_table(WAL).map_err(storage)?;
            tx.open_table(SNAPSHOT).map_err(storage)?;
            tx.open_table(LOCAL).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;

        let rx = db.begin_read().map_err(storage)?;
        let snaps = rx.open_table(SNAPSHOT).map_err(storage)?;
        let (mut state, snapshot_index) = match snaps.last().map_err(storage)? {
            Some((k, v)) => (State::restore(v.value())?, k.value()),
            None => (State::default(), 0),
        };
        let wal = rx.open_table(WAL).map_err(storage)?;
        let mut last_index = snapshot_index;
        for row in wal.range(snapshot_index + 1..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let index = k.value();
            if index != last_index + 1 {
                return Err(WalError::Gap { expected: last_index + 1, found: index });
            }
            let entry = Entry::decode(v.value()).map_err(|source| WalError::Entry { index, source })?;
            state.apply(index, &entry);
            last_index = index;
        }
        drop((wal, snaps, rx));
        Ok(Recovered { wal: Wal { db, last_index, snapshot_index }, state })
    }

    /// Index of the last durable entry.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Durably appends an entry; returns its index. On error nothing was written.
    pub fn append(&mut self, entry: &Entry) -> Result<u64, WalError> {
        let index = self.last_index + 1;
        let bytes = entry.encode();
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut wal = tx.open_table(WAL).map_err(storage)?;
            wal.insert(index, bytes.as_slice()).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        self.last_index = index;
        Ok(index)
    }

    /// Whether a snapshot is due.
    pub fn snapshot_due(&self) -> bool {
        self.last_index - self.snapshot_index >= SNAPSHOT_EVERY_ENTRIES
    }

    /// Stores a snapshot of `state` (at `state.applied_index`) and trims the log.
    pub fn snapshot(&mut self, state: &State) -> Result<(), WalError> {
        let index = state.applied_index;
        let bytes = state.snapshot();
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut snaps = tx.open_table(SNAPSHOT).map_err(storage)?;
            snaps.retain(|_, _| false).map_err(storage)?;
            snaps.insert(index, bytes.as_slice()).map_err(storage)?;
            let mut wal = tx.open_table(WAL).map_err(storage)?;
            let cut = index.saturating_sub(KEEP_ENTRIES);
            wal.retain(|k, _| k > cut).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        self.snapshot_index = index;
        Ok(())
    }

    /// Reads a node-local value.
    pub fn local(&self, key: &str) -> Result<Option<String>, WalError> {
        let rx = self.db.begin_read().map_err(storage)?;
        let t = rx.open_table(LOCAL).map_err(storage)?;
        Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_string()))
    }

    /// Durably writes a node-local value.
    pub fn set_local(&mut self, key: &str, value: &str) -> Result<(), WalError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(LOCAL).map_err(storage)?;
            t.insert(key, value).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::service;
    use shoal_shared::ops::Op;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("shoal.redb")
    }

    #[test]
    fn entries_survive_reopen() {
        let path = tmp("reopen");
        {
            let mut r = Wal::open(&path).unwrap();
            let e = Entry { at: 1, ops: vec![Op::PutService(service("a", "web"))] };
            let i = r.wal.append(&e).unwrap();
            r.state.apply(i, &e);
            r.wal.set_local("node_id", "n1").unwrap();
        }
        let r = Wal::open(&path).unwrap();
        assert_eq!(r.state.services["a"].spec.name, "web");
        assert_eq!(r.wal.last_index(), 1);
        assert_eq!(r.wal.local("node_id").unwrap().as_deref(), Some("n1"));
    }

    #[test]
    fn snapshot_then_replay_tail() {
        let path = tmp("snap");
        {
            let mut r = Wal::open(&path).unwrap();
            for i in 0..3 {
                let e = Entry { at: i, ops: vec![Op::PutService(service(&format!("s{i}"), &format!("n{i}")))] };
                let idx = r.wal.append(&e).unwrap();
                r.state.apply(idx, &e);
                if i == 1 {
                    r.wal.snapshot(&r.state).unwrap();
                }
            }
        }
        let r = Wal::open(&path).unwrap();
        assert_eq!(r.state.services.len(), 3);
        assert_eq!(r.state.applied_index, 3);
    }

    #[test]
    fn corrupt_entry_is_an_error_not_a_panic() {
        let path = tmp("corrupt");
        {
            let r = Wal::open(&path).unwrap();
            let tx = r.wal.db.begin_write().unwrap();
            tx.open_table(WAL).unwrap().insert(1u64, [1u8, 0xff, 0xff].as_slice()).unwrap();
            tx.commit().unwrap();
        }
        match Wal::open(&path) {
            Err(WalError::Entry { index: 1, .. }) => {}
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("corrupt entry accepted"),
        }
    }
}
