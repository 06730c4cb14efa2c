//! Durable raft state in redb: hard state, membership, log entries and the
//! latest snapshot, written by [`RaftStorage::persist`] from a [`Ready`] in
//! one immediate-durability (fsynced) write transaction. [`RaftStorage::clear`]
//! (leave/join: back to a brand-new node) and [`RaftStorage::overwrite`]
//! (force a new cluster) replace every raft record, also in one fsynced
//! transaction each.
//!
//! The daemon shares one database file between raft and the state machine,
//! so every table here is named `raft_*` and nothing else is touched (but
//! for the schema version, which [`RaftStorage::new`] raises in the same
//! transaction that upgrades the records of an older layout). Values are
//! postcard bytes stored as `&[u8]` and decoded here, fallibly: a truncated,
//! corrupt or tampered record is a [`StorageError::Corrupt`] naming it,
//! never a panic.
//!
//! Sealing at rest: every record (log entries, snapshot data, hard state,
//! membership, log bounds) is sealed under the node's data key
//! ([`shoal_shared::seal::SealKey`]), bound by its associated data to its
//! table, its place (index and term, or record name) and the store's
//! *history id*: 24 unique bytes drawn whenever the raft state starts over
//! (a new store, leave, join, force-new-cluster). So a record cannot be
//! moved, altered, or brought back from another history of the same node
//! (a copy of the file from before a leave). What it cannot detect is the
//! whole file replaced by an older copy of the same history: that needs a
//! counter kept outside the data dir.
//!
//! Layout versions (`meta["schema_version"]`, see `crate::schema`): 1 kept
//! every record in clear; 2 sealed log entries and snapshot data without a
//! history id, with hard state, membership and bounds in clear; 3 is the
//! above. Opening an older store upgrades it in place, in one fsynced
//! transaction; a store in clear (version 1) only when the data key allows
//! it ([`SealKey::allows_plain_upgrade`]: the key is kept in clear), so that
//! nobody can plant clear records in an autolocked node by rewriting its
//! schema version.

use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_shared::seal::{SealKey, NONCE_BYTES};

use super::node::{Compaction, Persisted, Ready};
use super::types::{to_bytes, ConfState, Entry, HardState, Snapshot, SnapshotMeta};

/// Layout: key = record name (`META_*`), value = the sealed postcard of the
/// record (associated data [`meta_aad`]): `hard_state` → [`HardState`],
/// `conf_state` → [`ConfState`], `log_start` → `(prev_index: u64,
/// prev_term: u64)`, `snapshot_meta` → [`SnapshotMeta`]; and `history`
/// → the history id itself, 24 bytes in clear (every other record's
/// associated data holds it, so changing it fails them all).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Layout: key = log index (u64), value = the entry's term (u64 LE) ++ the
/// sealed postcard [`Entry`] (associated data [`log_aad`]); keys are
/// contiguous from `log_start.prev_index + 1`.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Layout: key = snapshot index (u64, a single row), value = the
/// application's snapshot bytes, sealed (associated data [`snapshot_aad`],
/// with the term from `snapshot_meta`).
pub(crate) const SNAPSHOT_DATA: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_snapshot_data");

const META_HARD_STATE: &str = "hard_state";
const META_CONF_STATE: &str = "conf_state";
const META_LOG_START: &str = "log_start";
const META_SNAPSHOT: &str = "snapshot_meta";
const META_HISTORY: &str = "history";
/// The sealed rows of `raft_meta`.
const META_RECORDS: [&str; 4] = [META_HARD_STATE, META_CONF_STATE, META_LOG_START, META_SNAPSHOT];

/// A store's history id (see the module docs).
pub type HistoryId = [u8; NONCE_BYTES];

/// The layout a store's raft records were found in at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Schema version 1: every record in clear.
    Plain,
    /// Schema version 2: entries and snapshot sealed with no history id;
    /// hard state, membership and bounds in clear.
    SealedNoHistory,
    /// Schema version 3, the current one.
    Current,
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record {key} in {table}: {reason}")]
    Corrupt { table: &'static str, key: String, reason: String },
    #[error(
        "the store says its raft records are in clear (a layout from before sealing), but this node's data key is wrapped under \
         an unlock key, so clear records are refused (they could have been planted); restore the data dir from a backup, or leave \
         the swarm with --force and join again"
    )]
    ClearRefused,
}

fn db_err<E: Into<redb::Error>>(e: E) -> StorageError {
    StorageError::Db(e.into())
}

fn decode<T: DeserializeOwned>(table: &'static str, key: String, bytes: &[u8]) -> Result<T, StorageError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(StorageError::Corrupt { table, key, reason: format!("{} trailing bytes", rest.len()) }),
        Err(e) => Err(StorageError::Corrupt { table, key, reason: e.to_string() }),
    }
}

/// Associated data of a sealed log entry.
fn log_aad(history: &HistoryId, index: u64, term: u64) -> Vec<u8> {
    place_aad(b"shoal raft_log v2\0", history, index, term)
}

/// Associated data of sealed snapshot data.
fn snapshot_aad(history: &HistoryId, index: u64, term: u64) -> Vec<u8> {
    place_aad(b"shoal raft_snapshot_data v2\0", history, index, term)
}

fn place_aad(label: &[u8], history: &HistoryId, index: u64, term: u64) -> Vec<u8> {
    let mut aad = label.to_vec();
    aad.extend_from_slice(history);
    aad.extend_from_slice(&index.to_le_bytes());
    aad.extend_from_slice(&term.to_le_bytes());
    aad
}

/// Associated data of a sealed `raft_meta` record.
fn meta_aad(history: &HistoryId, name: &str) -> Vec<u8> {
    let mut aad = b"shoal raft_meta v2\0".to_vec();
    aad.extend_from_slice(history);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Associated data of schema version 2 (no history id): upgrades only.
fn v2_aad(label: &[u8], index: u64, term: u64) -> Vec<u8> {
    let mut aad = label.to_vec();
    aad.extend_from_slice(&index.to_le_bytes());
    aad.extend_from_slice(&term.to_le_bytes());
    aad
}

/// What seals the records: the node's data key, or (benchmarks only, to
/// measure what sealing costs) nothing.
#[derive(Clone)]
enum Sealer {
    Key(Arc<SealKey>),
    #[cfg(feature = "sim")]
    Clear,
}

impl Sealer {
    fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        match self {
            Sealer::Key(k) => k.seal(aad, plain),
            #[cfg(feature = "sim")]
            Sealer::Clear => plain.to_vec(),
        }
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, shoal_shared::seal::SealError> {
        match self {
            Sealer::Key(k) => k.open(aad, sealed),
            #[cfg(feature = "sim")]
            Sealer::Clear => Ok(sealed.to_vec()),
        }
    }

    fn new_history(&self) -> HistoryId {
        match self {
            Sealer::Key(k) => k.unique_id(),
            #[cfg(feature = "sim")]
            Sealer::Clear => [1; NONCE_BYTES],
        }
    }

    fn allows_plain_upgrade(&self) -> bool {
        match self {
            Sealer::Key(k) => k.allows_plain_upgrade(),
            #[cfg(feature = "sim")]
            Sealer::Clear => true,
        }
    }
}

/// How the records of one table row are sealed: the key and the history.
#[derive(Clone)]
struct Sealing {
    seal: Sealer,
    history: HistoryId,
}

impl Sealing {
    /// A log row: the term in clear, then the sealed entry.
    fn seal_entry(&self, e: &Entry) -> Vec<u8> {
        let mut out = e.term.to_le_bytes().to_vec();
        out.extend(self.seal.seal(&log_aad(&self.history, e.index, e.term), &to_bytes(e)));
        out
    }

    /// Opens one log row sealed with associated data `aad(index, term)`.
    fn open_entry_by(&self, index: u64, value: &[u8], aad: impl Fn(u64, u64) -> Vec<u8>) -> Result<Entry, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt { table: "raft_log", key: index.to_string(), reason };
        if value.len() < 8 {
            return Err(corrupt(format!("{} bytes, shorter than a sealed entry", value.len())));
        }
        let term = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
        let plain = self.seal.open(&aad(index, term), &value[8..]).map_err(|e| corrupt(e.to_string()))?;
        let e: Entry = decode("raft_log", index.to_string(), &plain)?;
        if e.term != term {
            return Err(corrupt(format!("sealed under term {term}, holds an entry of term {}", e.term)));
        }
        Ok(e)
    }

    fn open_entry(&self, index: u64, value: &[u8]) -> Result<Entry, StorageError> {
        self.open_entry_by(index, value, |i, t| log_aad(&self.history, i, t))
    }

    fn seal_snapshot(&self, index: u64, term: u64, data: &[u8]) -> Vec<u8> {
        self.seal.seal(&snapshot_aad(&self.history, index, term), data)
    }

    fn open_snapshot_by(&self, index: u64, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, StorageError> {
        self.seal.open(aad, sealed).map_err(|e| StorageError::Corrupt {
            table: "raft_snapshot_data",
            key: index.to_string(),
            reason: e.to_string(),
        })
    }

    fn put_meta<T: Serialize>(&self, meta: &mut Meta<'_>, name: &str, value: &T) -> Result<(), StorageError> {
        let sealed = self.seal.seal(&meta_aad(&self.history, name), &to_bytes(value));
        meta.insert(name, sealed.as_slice()).map_err(db_err)?;
        Ok(())
    }

    fn open_meta(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, StorageError> {
        self.seal.open(&meta_aad(&self.history, name), sealed).map_err(|e| StorageError::Corrupt {
            table: "raft_meta",
            key: name.into(),
            reason: e.to_string(),
        })
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        name: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match meta.get(name).map_err(db_err)? {
            Some(g) => {
                let plain = self.open_meta(name, g.value())?;
                decode("raft_meta", name.into(), &plain).map(Some)
            }
            None => Ok(None),
        }
    }
}

/// Raft's tables inside a shared redb database.
#[derive(Clone)]
pub struct RaftStorage {
    db: Arc<Database>,
    sealing: Sealing,
}

impl RaftStorage {
    /// Wraps the shared database, creating the raft tables if missing and
    /// upgrading the records of an older `layout` in place, in one fsynced
    /// transaction that also raises the schema version.
    pub fn new(db: Arc<Database>, seal: Arc<SealKey>, layout: Layout) -> Result<RaftStorage, StorageError> {
        RaftStorage::with_sealer(db, Sealer::Key(seal), layout)
    }

    /// Raft's tables with records in clear: only for `raft_bench`, which
    /// measures what sealing costs. Never in a shipped binary.
    #[cfg(feature = "sim")]
    pub fn new_clear_for_bench(db: Arc<Database>) -> Result<RaftStorage, StorageError> {
        RaftStorage::with_sealer(db, Sealer::Clear, Layout::Current)
    }

    fn with_sealer(db: Arc<Database>, seal: Sealer, layout: Layout) -> Result<RaftStorage, StorageError> {
        if layout == Layout::Plain && !seal.allows_plain_upgrade() {
            return Err(StorageError::ClearRefused);
        }
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let history = {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            let found = match meta.get(META_HISTORY).map_err(db_err)? {
                Some(g) => Some(HistoryId::try_from(g.value()).map_err(|_| StorageError::Corrupt {
                    table: "raft_meta",
                    key: META_HISTORY.into(),
                    reason: format!("{} bytes, not {NONCE_BYTES}", g.value().len()),
                })?),
                None => None,
            };
            match (layout, found) {
                (Layout::Current, Some(h)) => h,
                (Layout::Current, None) => {
                    if !(meta.is_empty().map_err(db_err)? && log.is_empty().map_err(db_err)? && data.is_empty().map_err(db_err)?) {
                        return Err(StorageError::Corrupt {
                            table: "raft_meta",
                            key: META_HISTORY.into(),
                            reason: "the history id is missing while raft records exist".into(),
                        });
                    }
                    let h = seal.new_history();
                    meta.insert(META_HISTORY, h.as_slice()).map_err(db_err)?;
                    h
                }
                (old, _) => {
                    let next = Sealing { seal: seal.clone(), history: seal.new_history() };
                    upgrade(old, &next, &mut meta, &mut log, &mut data)?;
                    let mut schema = txn.open_table(crate::schema::META).map_err(db_err)?;
                    schema.insert("schema_version", crate::schema::SCHEMA_VERSION).map_err(db_err)?;
                    next.history
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(RaftStorage { db, sealing: Sealing { seal, history } })
    }

    /// Seals every record under `seal` from now on, and re-seals every
    /// record on disk under it, in one fsynced transaction (a data key
    /// replaced: `seal` still opens records of the previous key). On error
    /// nothing changed on disk. The ciphertexts under the previous key stay
    /// in the file's free pages until the file is rewritten (the store
    /// does that: `Store::reseal`).
    pub fn reseal(&mut self, seal: Arc<SealKey>) -> Result<(), StorageError> {
        let next = Sealing { seal: Sealer::Key(seal), history: self.sealing.history };
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            // `next` opens what the previous key sealed.
            let mut records = Vec::new();
            for name in META_RECORDS {
                if let Some(g) = meta.get(name).map_err(db_err)? {
                    records.push((name, next.open_meta(name, g.value())?));
                }
            }
            let snapshot_term = match records.iter().find(|(n, _)| *n == META_SNAPSHOT) {
                Some((_, plain)) => decode::<SnapshotMeta>("raft_meta", META_SNAPSHOT.into(), plain)?.term,
                None => 0,
            };
            for (name, plain) in records {
                meta.insert(name, next.seal.seal(&meta_aad(&next.history, name), &plain).as_slice()).map_err(db_err)?;
            }
            let open_log = |index: u64, value: &[u8]| next.open_entry(index, value);
            let open_snapshot =
                |index: u64, value: &[u8]| next.open_snapshot_by(index, value, &snapshot_aad(&next.history, index, snapshot_term));
            rewrite_records(&mut log, &mut data, &next, snapshot_term, open_log, open_snapshot)?;
        }
        txn.commit().map_err(db_err)?;
        self.sealing = next;
        Ok(())
    }

    /// Uses `db` from now on: the same records in a rewritten file.
    pub(crate) fn set_database(&mut self, db: Arc<Database>) {
        self.db = db;
    }

    /// The data key the records are sealed under (`None` for the clear
    /// records of benchmarks), to open the same file again.
    pub(crate) fn seal_key(&self) -> Option<Arc<SealKey>> {
        match &self.sealing.seal {
            Sealer::Key(k) => Some(k.clone()),
            #[cfg(feature = "sim")]
            Sealer::Clear => None,
        }
    }

    /// Reads everything back to construct the core (`Raft::restore`).
    pub fn load(&self) -> Result<Persisted, StorageError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let s = &self.sealing;
        let mut p = Persisted::default();
        if let Some(hs) = s.get_meta::<HardState>(&meta, META_HARD_STATE)? {
            p.hard_state = hs;
        }
        if let Some(cs) = s.get_meta::<ConfState>(&meta, META_CONF_STATE)? {
            p.conf_state = cs;
        }
        if let Some(start) = s.get_meta::<(u64, u64)>(&meta, META_LOG_START)? {
            (p.prev_index, p.prev_term) = start;
        }
        if let Some(sm) = s.get_meta::<SnapshotMeta>(&meta, META_SNAPSHOT)? {
            p.snapshot.meta = sm;
            let data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            let row = data.get(p.snapshot.meta.index).map_err(db_err)?;
            let (index, term) = (p.snapshot.meta.index, p.snapshot.meta.term);
            p.snapshot.data = match row {
                Some(g) => s.open_snapshot_by(index, g.value(), &snapshot_aad(&s.history, index, term))?,
                None => {
                    return Err(StorageError::Corrupt {
                        table: "raft_snapshot_data",
                        key: p.snapshot.meta.index.to_string(),
                        reason: "snapshot data missing".into(),
                    })
                }
            };
        }
        let log = txn.open_table(LOG).map_err(db_err)?;
        let first = p.prev_index.checked_add(1).ok_or_else(|| StorageError::Corrupt {
            table: "raft_meta",
            key: META_LOG_START.into(),
            reason: "log start at u64::MAX".into(),
        })?;
        for (expect, row) in (first..).zip(log.range(first..).map_err(db_err)?) {
            let (k, v) = row.map_err(db_err)?;
            let index = k.value();
            let e = s.open_entry(index, v.value())?;
            if index != expect || e.index != index {
                return Err(StorageError::Corrupt {
                    table: "raft_log",
                    key: index.to_string(),
                    reason: format!("expected entry {expect}, found {}", e.index),
                });
            }
            p.entries.push(e);
        }
        Ok(p)
    }

    /// Makes a `Ready`'s durable parts durable (fsync unless `!rd.must_sync`)
    /// in one transaction:
    /// an installed snapshot (replacing the log), a compaction, hard state,
    /// membership, and entries (replacing any conflicting suffix).
    pub fn persist(&self, rd: &Ready) -> Result<(), StorageError> {
        if !rd.must_persist() {
            return Ok(());
        }
        let s = &self.sealing;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        // A commit-index-only update need not be fsynced: the next durable
        // commit carries it along, and losing it in a crash is safe.
        let durability = if rd.must_sync { Durability::Immediate } else { Durability::None };
        txn.set_durability(durability).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            if let Some(snap) = &rd.snapshot {
                // An installed snapshot replaces the whole log.
                log.retain(|_, _| false).map_err(db_err)?;
                write_snapshot(s, &mut meta, &mut data, snap)?;
                s.put_meta(&mut meta, META_LOG_START, &(snap.meta.index, snap.meta.term))?;
            }
            if let Some(c) = &rd.compaction {
                write_compaction(s, &mut meta, &mut log, &mut data, c)?;
            }
            if let Some(hs) = &rd.hard_state {
                s.put_meta(&mut meta, META_HARD_STATE, hs)?;
            }
            if let Some(cs) = &rd.conf_state {
                s.put_meta(&mut meta, META_CONF_STATE, cs)?;
            }
            if let Some(first) = rd.entries.first() {
                log.retain_in(first.index.., |_, _| false).map_err(db_err)?;
                for e in &rd.entries {
                    log.insert(e.index, s.seal_entry(e).as_slice()).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Stores a local compaction on its own (the same write `persist` does
    /// for `Ready::compaction`).
    pub fn compact(&self, c: &Compaction) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            write_compaction(&self.sealing, &mut meta, &mut log, &mut data, c)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Deletes every raft record (hard state, membership, log, snapshot) in
    /// one durable transaction: afterwards `load` returns an empty
    /// `Persisted`, as for a brand-new node. Other tables are untouched. A
    /// new history starts: no record of the old one opens any more.
    pub fn clear(&mut self) -> Result<(), StorageError> {
        let history = self.sealing.seal.new_history();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.retain(|_, _| false).map_err(db_err)?;
            meta.insert(META_HISTORY, history.as_slice()).map_err(db_err)?;
            txn.open_table(LOG).map_err(db_err)?.retain(|_, _| false).map_err(db_err)?;
            txn.open_table(SNAPSHOT_DATA).map_err(db_err)?.retain(|_, _| false).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.sealing.history = history;
        Ok(())
    }

    /// Replaces every raft record with `p` in one durable transaction, so
    /// that `load` returns `p` (used to force a new cluster from a
    /// survivor's state), under a new history. The caller ensures `p` is
    /// consistent (`Raft::restore` re-checks it).
    pub fn overwrite(&mut self, p: &Persisted) -> Result<(), StorageError> {
        let next = Sealing { seal: self.sealing.seal.clone(), history: self.sealing.seal.new_history() };
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            meta.retain(|_, _| false).map_err(db_err)?;
            log.retain(|_, _| false).map_err(db_err)?;
            data.retain(|_, _| false).map_err(db_err)?;
            meta.insert(META_HISTORY, next.history.as_slice()).map_err(db_err)?;
            next.put_meta(&mut meta, META_HARD_STATE, &p.hard_state)?;
            next.put_meta(&mut meta, META_CONF_STATE, &p.conf_state)?;
            next.put_meta(&mut meta, META_LOG_START, &(p.prev_index, p.prev_term))?;
            if p.snapshot != Snapshot::default() {
                write_snapshot(&next, &mut meta, &mut data, &p.snapshot)?;
            }
            for e in &p.entries {
                log.insert(e.index, next.seal_entry(e).as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        self.sealing = next;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn corrupt_for_test(&self, table: &str, key: u64, bytes: &[u8]) {
        let txn = self.db.begin_write().unwrap();
        {
            if table == "raft_log" {
                txn.open_table(LOG).unwrap().insert(key, bytes).unwrap();
            } else {
                txn.open_table(META).unwrap().insert(META_HARD_STATE, bytes).unwrap();
            }
        }
        txn.commit().unwrap();
    }
}

type Meta<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type Log<'t> = redb::Table<'t, u64, &'static [u8]>;

/// Upgrades the records of an `old` layout to the current one under `next`
/// (a new history): meta records read in clear and sealed, entries and
/// snapshot opened as `old` kept them and sealed again.
fn upgrade(old: Layout, next: &Sealing, meta: &mut Meta<'_>, log: &mut Log<'_>, data: &mut Log<'_>) -> Result<(), StorageError> {
    let mut records = Vec::new();
    for name in META_RECORDS {
        if let Some(g) = meta.get(name).map_err(db_err)? {
            records.push((name, g.value().to_vec()));
        }
    }
    let snapshot_term = match records.iter().find(|(n, _)| *n == META_SNAPSHOT) {
        Some((_, bytes)) => decode::<SnapshotMeta>("raft_meta", META_SNAPSHOT.into(), bytes)?.term,
        None => 0,
    };
    // Check each clear record decodes before sealing it.
    for (name, bytes) in &records {
        let ok = match *name {
            META_HARD_STATE => decode::<HardState>("raft_meta", (*name).into(), bytes).map(drop),
            META_CONF_STATE => decode::<ConfState>("raft_meta", (*name).into(), bytes).map(drop),
            META_LOG_START => decode::<(u64, u64)>("raft_meta", (*name).into(), bytes).map(drop),
            _ => decode::<SnapshotMeta>("raft_meta", (*name).into(), bytes).map(drop),
        };
        ok?;
        meta.insert(*name, next.seal.seal(&meta_aad(&next.history, name), bytes).as_slice()).map_err(db_err)?;
    }
    meta.insert(META_HISTORY, next.history.as_slice()).map_err(db_err)?;
    match old {
        Layout::Plain => rewrite_records(
            log,
            data,
            next,
            snapshot_term,
            |index, bytes| decode::<Entry>("raft_log", index.to_string(), bytes),
            |_, bytes| Ok(bytes.to_vec()),
        ),
        Layout::SealedNoHistory => rewrite_records(
            log,
            data,
            next,
            snapshot_term,
            |index, value| next.open_entry_by(index, value, |i, t| v2_aad(b"shoal raft_log v1\0", i, t)),
            |index, value| next.open_snapshot_by(index, value, &v2_aad(b"shoal raft_snapshot_data v1\0", index, snapshot_term)),
        ),
        Layout::Current => Ok(()),
    }
}

/// Rewrites every log row and the snapshot row sealed under `next`: each
/// old row is read back through `open_log` (index, bytes) or
/// `open_snapshot` (index, bytes; the snapshot's term is `snapshot_term`).
fn rewrite_records(
    log: &mut Log<'_>,
    data: &mut Log<'_>,
    next: &Sealing,
    snapshot_term: u64,
    open_log: impl Fn(u64, &[u8]) -> Result<Entry, StorageError>,
    open_snapshot: impl Fn(u64, &[u8]) -> Result<Vec<u8>, StorageError>,
) -> Result<(), StorageError> {
    let rows = |t: &Log<'_>| -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        t.iter().map_err(db_err)?.map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())).map_err(db_err)).collect()
    };
    for (index, value) in rows(log)? {
        let e = open_log(index, &value)?;
        log.insert(index, next.seal_entry(&e).as_slice()).map_err(db_err)?;
    }
    for (index, value) in rows(data)? {
        let plain = open_snapshot(index, &value)?;
        data.insert(index, next.seal_snapshot(index, snapshot_term, &plain).as_slice()).map_err(db_err)?;
    }
    Ok(())
}

fn write_snapshot(s: &Sealing, meta: &mut Meta<'_>, data: &mut Log<'_>, snap: &Snapshot) -> Result<(), StorageError> {
    data.retain(|_, _| false).map_err(db_err)?;
    let sealed = s.seal_snapshot(snap.meta.index, snap.meta.term, &snap.data);
    data.insert(snap.meta.index, sealed.as_slice()).map_err(db_err)?;
    s.put_meta(meta, META_SNAPSHOT, &snap.meta)
}

fn write_compaction(s: &Sealing, meta: &mut Meta<'_>, log: &mut Log<'_>, data: &mut Log<'_>, c: &Compaction) -> Result<(), StorageError> {
    write_snapshot(s, meta, data, &c.snapshot)?;
    log.retain_in(..=c.prev_index, |_, _| false).map_err(db_err)?;
    s.put_meta(meta, META_LOG_START, &(c.prev_index, c.prev_term))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Config, Raft};

    pub(crate) fn test_seal() -> Arc<SealKey> {
        Arc::new(SealKey::new(1, [0x5e; 32], [1; 16]))
    }

    pub(crate) fn temp_db(name: &str) -> (Arc<Database>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("shoal-raft-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Database::create(dir.join("db.redb")).unwrap();
        (Arc::new(db), dir)
    }

    fn drive(raft: &mut Raft, st: &RaftStorage) {
        while raft.has_ready() {
            let rd = raft.ready();
            st.persist(&rd).unwrap();
            raft.advance(rd);
        }
    }

    #[test]
    fn single_voter_persists_restarts_and_compacts() {
        let (db, dir) = temp_db("single");
        let st = RaftStorage::new(db.clone(), test_seal(), Layout::Current).unwrap();
        assert!(st.load().unwrap().is_empty());
        let mut raft = Raft::bootstrap(Config::lan(1, 7), &[1]).unwrap();
        raft.tick();
        drive(&mut raft, &st);
        for i in 0..10u8 {
            raft.propose(vec![i]).unwrap();
            drive(&mut raft, &st);
        }
        let s = raft.status();
        assert_eq!(s.commit, s.last_index);
        assert_eq!(s.commit, 12);
        raft.compact(8, b"state@8".to_vec()).unwrap();
        drive(&mut raft, &st);
        let p = st.load().unwrap();
        assert_eq!(p.snapshot.meta.index, 8);
        assert_eq!(p.snapshot.data, b"state@8");
        assert_eq!(p.hard_state.commit, 12);
        assert_eq!(p.conf_state.voters, vec![1]);
        let mut again = Raft::restore(Config::lan(1, 8), p).unwrap();
        assert_eq!(again.status().commit, 12);
        assert_eq!(again.status().last_index, 12);
        // Committed entries after the snapshot are handed out again ...
        let rd = again.ready();
        assert_eq!(rd.committed_entries.first().map(|e| e.index), Some(9));
        // ... unless the application says it already applied them.
        let p = st.load().unwrap();
        let mut durable_app = Raft::restore_applied(Config::lan(1, 9), p.clone(), 11).unwrap();
        let rd = durable_app.ready();
        assert_eq!(rd.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![12]);
        assert!(Raft::restore_applied(Config::lan(1, 9), p, 13).is_err());
        drop(again);
        drop(durable_app);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn overwrite_then_load_round_trips_and_clear_empties() {
        let (db, dir) = temp_db("overwrite");
        let mut st = RaftStorage::new(db, test_seal(), Layout::Current).unwrap();
        let mut raft = Raft::bootstrap(Config::lan(1, 7), &[1]).unwrap();
        raft.tick();
        drive(&mut raft, &st);
        assert!(!st.load().unwrap().is_empty());
        let conf = ConfState::with_voters(&[2]);
        let p = Persisted {
            hard_state: HardState { term: 9, vote: 2, commit: 5 },
            conf_state: conf.clone(),
            snapshot: Snapshot { meta: SnapshotMeta { index: 5, term: 4, conf }, data: b"state@5".to_vec() },
            prev_index: 5,
            prev_term: 4,
            entries: vec![Entry { term: 9, index: 6, kind: crate::raft::EntryKind::Normal(vec![1]) }],
        };
        st.overwrite(&p).unwrap();
        assert_eq!(st.load().unwrap(), p);
        assert!(Raft::restore(Config::lan(2, 7), st.load().unwrap()).is_ok());
        st.clear().unwrap();
        assert!(st.load().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let (db, dir) = temp_db("corrupt");
        let st = RaftStorage::new(db, test_seal(), Layout::Current).unwrap();
        let mut raft = Raft::bootstrap(Config::lan(1, 7), &[1]).unwrap();
        raft.tick();
        drive(&mut raft, &st);
        assert!(st.load().is_ok());
        // A truncated entry.
        st.corrupt_for_test("raft_log", 2, &[0x05]);
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_log", .. })));
        // A garbage hard state (trailing bytes).
        st.corrupt_for_test(
            "raft_log",
            2,
            &st.sealing.seal_entry(&Entry { term: 2, index: 2, kind: crate::raft::EntryKind::Normal(vec![]) }),
        );
        st.corrupt_for_test("raft_meta", 0, &[1, 1, 1, 1, 1]);
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_meta", .. })));
        // An entry stored under the wrong index.
        let hs = to_bytes(&HardState { term: 2, vote: 1, commit: 2 });
        // In clear it is refused (not sealed); sealed, it loads.
        st.corrupt_for_test("raft_meta", 0, &hs);
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_meta", .. })));
        st.corrupt_for_test("raft_meta", 0, &st.sealing.seal.seal(&meta_aad(&st.sealing.history, META_HARD_STATE), &hs));
        st.corrupt_for_test(
            "raft_log",
            2,
            &st.sealing.seal_entry(&Entry { term: 2, index: 3, kind: crate::raft::EntryKind::Normal(vec![]) }),
        );
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_log", .. })));
        // A sealed entry moved from another index, a flipped byte, a record
        // of the right shape under another term: each names the record.
        let good = st.sealing.seal_entry(&Entry { term: 2, index: 2, kind: crate::raft::EntryKind::Normal(vec![1]) });
        st.corrupt_for_test("raft_log", 2, &good);
        assert!(st.load().is_ok());
        let moved = st.sealing.seal_entry(&Entry { term: 2, index: 1, kind: crate::raft::EntryKind::Normal(vec![1]) });
        st.corrupt_for_test("raft_log", 2, &moved);
        let err = st.load().unwrap_err();
        assert!(err.to_string().contains("corrupt record 2 in raft_log: authentication failed"), "{err}");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            st.corrupt_for_test("raft_log", 2, &bad);
            assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_log", .. })), "byte {i}");
        }
        let mut other_term = good.clone();
        other_term[..8].copy_from_slice(&3u64.to_le_bytes());
        st.corrupt_for_test("raft_log", 2, &other_term);
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_log", .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn plain_records_are_sealed_in_place_and_hold_no_plaintext() {
        let (db, dir) = temp_db("migrate");
        let marker = b"env-marker-8d1f3c".to_vec();
        // Write the schema-1 layout by hand: bare postcard entries and snapshot.
        {
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                let mut log = txn.open_table(LOG).unwrap();
                let mut data = txn.open_table(SNAPSHOT_DATA).unwrap();
                let conf = ConfState::with_voters(&[1]);
                meta.insert(META_HARD_STATE, to_bytes(&HardState { term: 1, vote: 1, commit: 3 }).as_slice()).unwrap();
                meta.insert(META_CONF_STATE, to_bytes(&conf).as_slice()).unwrap();
                meta.insert(META_LOG_START, to_bytes(&(2u64, 1u64)).as_slice()).unwrap();
                meta.insert(META_SNAPSHOT, to_bytes(&SnapshotMeta { index: 2, term: 1, conf }).as_slice()).unwrap();
                data.insert(2, marker.as_slice()).unwrap();
                log.insert(3, to_bytes(&Entry { term: 1, index: 3, kind: crate::raft::EntryKind::Normal(marker.clone()) }).as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let st =
            RaftStorage::new(db.clone(), Arc::new(SealKey::new(1, [0x5e; 32], [1; 16]).allowing_plain_upgrade()), Layout::Plain).unwrap();
        let p = st.load().unwrap();
        assert_eq!(p.snapshot.data, marker);
        assert_eq!(p.entries[0].kind, crate::raft::EntryKind::Normal(marker.clone()));
        let txn = db.begin_read().unwrap();
        let schema = txn.open_table(crate::schema::META).unwrap();
        assert_eq!(schema.get("schema_version").unwrap().unwrap().value(), crate::schema::SCHEMA_VERSION);
        for table in [LOG, SNAPSHOT_DATA] {
            for row in txn.open_table(table).unwrap().iter().unwrap() {
                let (_, v) = row.unwrap();
                assert!(!v.value().windows(marker.len()).any(|w| w == marker), "plaintext left in a record");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reseal_moves_every_record_to_the_new_key() {
        let (db, dir) = temp_db("reseal");
        let old = test_seal();
        let mut st = RaftStorage::new(db.clone(), old.clone(), Layout::Current).unwrap();
        let mut raft = Raft::bootstrap(Config::lan(1, 7), &[1]).unwrap();
        raft.tick();
        drive(&mut raft, &st);
        for i in 0..5u8 {
            raft.propose(vec![i]).unwrap();
            drive(&mut raft, &st);
        }
        raft.compact(4, b"state@4".to_vec()).unwrap();
        drive(&mut raft, &st);
        let before = st.load().unwrap();
        let new = Arc::new(SealKey::new(2, [0x77; 32], [2; 16]).with_previous(Some((1, *old.key_bytes()))));
        st.reseal(new).unwrap();
        assert_eq!(st.load().unwrap(), before);
        // Only the new key is needed now: the previous one opens nothing.
        let only_new = RaftStorage::new(db.clone(), Arc::new(SealKey::new(2, [0x77; 32], [3; 16])), Layout::Current).unwrap();
        assert_eq!(only_new.load().unwrap(), before);
        let only_old = RaftStorage::new(db, old, Layout::Current).unwrap();
        assert!(matches!(only_old.load(), Err(StorageError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Schema-1 rows (every record in clear) for the upgrade tests.
    fn write_clear_meta(db: &Database, snapshot: Option<&[u8]>) {
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            let conf = ConfState::with_voters(&[1]);
            meta.insert(META_HARD_STATE, to_bytes(&HardState { term: 1, vote: 1, commit: 3 }).as_slice()).unwrap();
            meta.insert(META_CONF_STATE, to_bytes(&conf).as_slice()).unwrap();
            meta.insert(META_LOG_START, to_bytes(&(2u64, 1u64)).as_slice()).unwrap();
            meta.insert(META_SNAPSHOT, to_bytes(&SnapshotMeta { index: 2, term: 1, conf }).as_slice()).unwrap();
            if let Some(data) = snapshot {
                txn.open_table(SNAPSHOT_DATA).unwrap().insert(2, data).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn clear_records_are_refused_under_a_wrapped_key_and_nothing_changes() {
        let (db, dir) = temp_db("refuse-clear");
        write_clear_meta(&db, Some(b"planted"));
        let err = RaftStorage::new(db.clone(), test_seal(), Layout::Plain).err().expect("refused");
        assert!(matches!(err, StorageError::ClearRefused), "{err}");
        assert!(err.to_string().contains("clear records are refused"), "{err}");
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(SNAPSHOT_DATA).unwrap().get(2).unwrap().unwrap().value(), b"planted");
        assert!(txn.open_table(META).unwrap().get(META_HISTORY).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn schema_2_records_are_upgraded_to_sealed_meta_with_a_history() {
        let (db, dir) = temp_db("upgrade-v2");
        let seal = test_seal();
        let e = Entry { term: 1, index: 3, kind: crate::raft::EntryKind::Normal(b"x".to_vec()) };
        let hs = HardState { term: 1, vote: 1, commit: 3 };
        {
            write_clear_meta(&db, None);
            let txn = db.begin_write().unwrap();
            {
                let mut row = 1u64.to_le_bytes().to_vec();
                row.extend(seal.seal(&v2_aad(b"shoal raft_log v1\0", 3, 1), &to_bytes(&e)));
                txn.open_table(LOG).unwrap().insert(3, row.as_slice()).unwrap();
                let data = seal.seal(&v2_aad(b"shoal raft_snapshot_data v1\0", 2, 1), b"state@2");
                txn.open_table(SNAPSHOT_DATA).unwrap().insert(2, data.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let st = RaftStorage::new(db.clone(), seal.clone(), Layout::SealedNoHistory).unwrap();
        let p = st.load().unwrap();
        assert_eq!((p.hard_state, p.entries.clone(), p.snapshot.data.clone()), (hs, vec![e], b"state@2".to_vec()));
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_ne!(meta.get(META_HARD_STATE).unwrap().unwrap().value(), to_bytes(&hs).as_slice(), "hard state still in clear");
        assert_eq!(meta.get(META_HISTORY).unwrap().unwrap().value().len(), NONCE_BYTES);
        assert_eq!(
            txn.open_table(crate::schema::META).unwrap().get("schema_version").unwrap().unwrap().value(),
            crate::schema::SCHEMA_VERSION
        );
        // Opened again as the current layout, it loads the same.
        drop((meta, txn));
        assert_eq!(RaftStorage::new(db, seal, Layout::Current).unwrap().load().unwrap(), p);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_record_of_another_history_does_not_open() {
        let (db, dir) = temp_db("history");
        let mut st = RaftStorage::new(db.clone(), test_seal(), Layout::Current).unwrap();
        let mut raft = Raft::bootstrap(Config::lan(1, 7), &[1]).unwrap();
        raft.tick();
        drive(&mut raft, &st);
        let row =
            |db: &Database, index: u64| db.begin_read().unwrap().open_table(LOG).unwrap().get(index).unwrap().unwrap().value().to_vec();
        let hard =
            |db: &Database| db.begin_read().unwrap().open_table(META).unwrap().get(META_HARD_STATE).unwrap().unwrap().value().to_vec();
        let (old_entry, old_hard) = (row(&db, 1), hard(&db));
        // The same node starts over (leave, join): same data key, same
        // indexes and terms, a new history.
        st.clear().unwrap();
        let mut raft = Raft::bootstrap(Config::lan(1, 7), &[1]).unwrap();
        raft.tick();
        drive(&mut raft, &st);
        let before = st.load().unwrap();
        assert_eq!(before.entries[0].index, 1);
        st.corrupt_for_test("raft_log", 1, &old_entry);
        let err = st.load().unwrap_err();
        assert!(err.to_string().contains("corrupt record 1 in raft_log: authentication failed"), "{err}");
        st.corrupt_for_test("raft_log", 1, &st.sealing.seal_entry(&before.entries[0]));
        st.corrupt_for_test("raft_meta", 0, &old_hard);
        let err = st.load().unwrap_err();
        assert!(err.to_string().contains("corrupt record hard_state in raft_meta: authentication failed"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
