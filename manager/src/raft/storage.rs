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
//! transaction that seals a store written before sealing). Values are
//! postcard bytes stored as `&[u8]` and decoded here, fallibly: a truncated,
//! corrupt or tampered record is a [`StorageError::Corrupt`] naming it,
//! never a panic.
//!
//! Sealing at rest: log entries and snapshot data (the only records that
//! hold the swarm's data: service specs, env values, join secrets, the
//! unlock key) are sealed under the node's data key
//! ([`shoal_shared::seal::SealKey`]), bound to their table, index and term
//! so that a record cannot be moved to another place. Hard state,
//! membership and log bounds stay in clear (numbers only).

use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use shoal_shared::seal::SealKey;

use super::node::{Compaction, Persisted, Ready};
use super::types::{to_bytes, ConfState, Entry, HardState, Snapshot, SnapshotMeta};

/// Layout: key = record name (`META_*`), value = postcard of the record:
/// `hard_state` → [`HardState`], `conf_state` → [`ConfState`],
/// `log_start` → `(prev_index: u64, prev_term: u64)`,
/// `snapshot_meta` → [`SnapshotMeta`].
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Layout: key = log index (u64), value = the entry's term (u64 LE) ++ the
/// sealed postcard [`Entry`] (associated data [`log_aad`]); keys are
/// contiguous from `log_start.prev_index + 1`. Schema version 1 stored the
/// bare postcard entry.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Layout: key = snapshot index (u64, a single row), value = the
/// application's snapshot bytes, sealed (associated data [`snapshot_aad`],
/// with the term from `snapshot_meta`). Schema version 1 stored them bare.
pub(crate) const SNAPSHOT_DATA: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_snapshot_data");

const META_HARD_STATE: &str = "hard_state";
const META_CONF_STATE: &str = "conf_state";
const META_LOG_START: &str = "log_start";
const META_SNAPSHOT: &str = "snapshot_meta";

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record {key} in {table}: {reason}")]
    Corrupt { table: &'static str, key: String, reason: String },
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
fn log_aad(index: u64, term: u64) -> Vec<u8> {
    let mut aad = b"shoal raft_log v1\0".to_vec();
    aad.extend_from_slice(&index.to_le_bytes());
    aad.extend_from_slice(&term.to_le_bytes());
    aad
}

/// Associated data of sealed snapshot data.
fn snapshot_aad(index: u64, term: u64) -> Vec<u8> {
    let mut aad = b"shoal raft_snapshot_data v1\0".to_vec();
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
}

/// Raft's tables inside a shared redb database.
#[derive(Clone)]
pub struct RaftStorage {
    db: Arc<Database>,
    seal: Sealer,
}

impl RaftStorage {
    /// Wraps the shared database, creating the raft tables if missing.
    /// With `plain_records` (a store of schema version 1, from before
    /// sealing) every log entry and the snapshot are sealed in place, in one
    /// fsynced transaction that also raises the schema version.
    pub fn new(db: Arc<Database>, seal: Arc<SealKey>, plain_records: bool) -> Result<RaftStorage, StorageError> {
        RaftStorage::with_sealer(db, Sealer::Key(seal), plain_records)
    }

    /// Raft's tables with records in clear: only for `raft_bench`, which
    /// measures what sealing costs. Never in a shipped binary.
    #[cfg(feature = "sim")]
    pub fn new_clear_for_bench(db: Arc<Database>) -> Result<RaftStorage, StorageError> {
        RaftStorage::with_sealer(db, Sealer::Clear, false)
    }

    fn with_sealer(db: Arc<Database>, seal: Sealer, plain_records: bool) -> Result<RaftStorage, StorageError> {
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            if plain_records {
                let open_log = |index: u64, bytes: &[u8]| decode::<Entry>("raft_log", index.to_string(), bytes);
                rewrite_records(&meta, &mut log, &mut data, &seal, open_log, |_, _, bytes| Ok(bytes.to_vec()))?;
                let mut schema = txn.open_table(crate::schema::META).map_err(db_err)?;
                schema.insert("schema_version", crate::schema::SCHEMA_VERSION).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(RaftStorage { db, seal })
    }

    /// Seals every record under `seal` from now on, and re-seals every
    /// record on disk under it, in one fsynced transaction (a data key
    /// replaced: `seal` still opens records of the previous key). On error
    /// nothing changed on disk.
    pub fn reseal(&mut self, seal: Arc<SealKey>) -> Result<(), StorageError> {
        let next = Sealer::Key(seal);
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            let open_log = |index: u64, value: &[u8]| RaftStorage::open_entry_with(&next, index, value);
            let open_snapshot = |index: u64, term: u64, value: &[u8]| {
                next.open(&snapshot_aad(index, term), value).map_err(|e| StorageError::Corrupt {
                    table: "raft_snapshot_data",
                    key: index.to_string(),
                    reason: e.to_string(),
                })
            };
            rewrite_records(&meta, &mut log, &mut data, &next, open_log, open_snapshot)?;
        }
        txn.commit().map_err(db_err)?;
        self.seal = next;
        Ok(())
    }

    /// Opens one sealed log row.
    fn open_entry(&self, index: u64, value: &[u8]) -> Result<Entry, StorageError> {
        RaftStorage::open_entry_with(&self.seal, index, value)
    }

    fn open_entry_with(seal: &Sealer, index: u64, value: &[u8]) -> Result<Entry, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt { table: "raft_log", key: index.to_string(), reason };
        if value.len() < 8 {
            return Err(corrupt(format!("{} bytes, shorter than a sealed entry", value.len())));
        }
        let term = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
        let plain = seal.open(&log_aad(index, term), &value[8..]).map_err(|e| corrupt(e.to_string()))?;
        let e: Entry = decode("raft_log", index.to_string(), &plain)?;
        if e.term != term {
            return Err(corrupt(format!("sealed under term {term}, holds an entry of term {}", e.term)));
        }
        Ok(e)
    }

    /// Reads everything back to construct the core (`Raft::restore`).
    pub fn load(&self) -> Result<Persisted, StorageError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let mut p = Persisted::default();
        let get =
            |key: &'static str| -> Result<Option<Vec<u8>>, StorageError> { Ok(meta.get(key).map_err(db_err)?.map(|g| g.value().to_vec())) };
        if let Some(b) = get(META_HARD_STATE)? {
            p.hard_state = decode::<HardState>("raft_meta", META_HARD_STATE.into(), &b)?;
        }
        if let Some(b) = get(META_CONF_STATE)? {
            p.conf_state = decode::<ConfState>("raft_meta", META_CONF_STATE.into(), &b)?;
        }
        if let Some(b) = get(META_LOG_START)? {
            (p.prev_index, p.prev_term) = decode::<(u64, u64)>("raft_meta", META_LOG_START.into(), &b)?;
        }
        if let Some(b) = get(META_SNAPSHOT)? {
            p.snapshot.meta = decode::<SnapshotMeta>("raft_meta", META_SNAPSHOT.into(), &b)?;
            let data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            let row = data.get(p.snapshot.meta.index).map_err(db_err)?;
            let (index, term) = (p.snapshot.meta.index, p.snapshot.meta.term);
            p.snapshot.data = match row {
                Some(g) => self.seal.open(&snapshot_aad(index, term), g.value()).map_err(|e| StorageError::Corrupt {
                    table: "raft_snapshot_data",
                    key: index.to_string(),
                    reason: e.to_string(),
                })?,
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
            let e = self.open_entry(index, v.value())?;
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
        let mut txn = self.db.begin_write().map_err(db_err)?;
        // A commit-index-only update need not be fsynced: the next durable
        // commit carries it along, and losing it in a crash is safe.
        let durability = if rd.must_sync { Durability::Immediate } else { Durability::None };
        txn.set_durability(durability).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            if let Some(s) = &rd.snapshot {
                // An installed snapshot replaces the whole log.
                log.retain(|_, _| false).map_err(db_err)?;
                write_snapshot(&self.seal, &mut meta, &mut data, s)?;
                meta.insert(META_LOG_START, to_bytes(&(s.meta.index, s.meta.term)).as_slice()).map_err(db_err)?;
            }
            if let Some(c) = &rd.compaction {
                write_compaction(&self.seal, &mut meta, &mut log, &mut data, c)?;
            }
            if let Some(hs) = &rd.hard_state {
                meta.insert(META_HARD_STATE, to_bytes(hs).as_slice()).map_err(db_err)?;
            }
            if let Some(cs) = &rd.conf_state {
                meta.insert(META_CONF_STATE, to_bytes(cs).as_slice()).map_err(db_err)?;
            }
            if let Some(first) = rd.entries.first() {
                log.retain_in(first.index.., |_, _| false).map_err(db_err)?;
                for e in &rd.entries {
                    log.insert(e.index, seal_entry(&self.seal, e).as_slice()).map_err(db_err)?;
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
            write_compaction(&self.seal, &mut meta, &mut log, &mut data, c)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Deletes every raft record (hard state, membership, log, snapshot) in
    /// one durable transaction: afterwards `load` returns an empty
    /// `Persisted`, as for a brand-new node. Other tables are untouched.
    pub fn clear(&self) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            txn.open_table(META).map_err(db_err)?.retain(|_, _| false).map_err(db_err)?;
            txn.open_table(LOG).map_err(db_err)?.retain(|_, _| false).map_err(db_err)?;
            txn.open_table(SNAPSHOT_DATA).map_err(db_err)?.retain(|_, _| false).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Replaces every raft record with `p` in one durable transaction, so
    /// that `load` returns `p` (used to force a new cluster from a
    /// survivor's state). The caller ensures `p` is consistent
    /// (`Raft::restore` re-checks it).
    pub fn overwrite(&self, p: &Persisted) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut data = txn.open_table(SNAPSHOT_DATA).map_err(db_err)?;
            meta.retain(|_, _| false).map_err(db_err)?;
            log.retain(|_, _| false).map_err(db_err)?;
            data.retain(|_, _| false).map_err(db_err)?;
            meta.insert(META_HARD_STATE, to_bytes(&p.hard_state).as_slice()).map_err(db_err)?;
            meta.insert(META_CONF_STATE, to_bytes(&p.conf_state).as_slice()).map_err(db_err)?;
            meta.insert(META_LOG_START, to_bytes(&(p.prev_index, p.prev_term)).as_slice()).map_err(db_err)?;
            if p.snapshot != Snapshot::default() {
                write_snapshot(&self.seal, &mut meta, &mut data, &p.snapshot)?;
            }
            for e in &p.entries {
                log.insert(e.index, seal_entry(&self.seal, e).as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
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

/// Rewrites every log row and the snapshot row sealed under `next`: each
/// old row is read back through `open_log` (index, bytes) or
/// `open_snapshot` (index, the snapshot's term, bytes).
fn rewrite_records(
    meta: &Meta<'_>,
    log: &mut Log<'_>,
    data: &mut Log<'_>,
    next: &Sealer,
    open_log: impl Fn(u64, &[u8]) -> Result<Entry, StorageError>,
    open_snapshot: impl Fn(u64, u64, &[u8]) -> Result<Vec<u8>, StorageError>,
) -> Result<(), StorageError> {
    let rows = |t: &Log<'_>| -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        t.iter().map_err(db_err)?.map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())).map_err(db_err)).collect()
    };
    for (index, value) in rows(log)? {
        let e = open_log(index, &value)?;
        log.insert(index, seal_entry(next, &e).as_slice()).map_err(db_err)?;
    }
    let term = match meta.get(META_SNAPSHOT).map_err(db_err)? {
        Some(g) => decode::<SnapshotMeta>("raft_meta", META_SNAPSHOT.into(), g.value())?.term,
        None => 0,
    };
    for (index, value) in rows(data)? {
        let plain = open_snapshot(index, term, &value)?;
        data.insert(index, next.seal(&snapshot_aad(index, term), &plain).as_slice()).map_err(db_err)?;
    }
    Ok(())
}

/// A log row: the term in clear, then the sealed entry.
fn seal_entry(seal: &Sealer, e: &Entry) -> Vec<u8> {
    let mut out = e.term.to_le_bytes().to_vec();
    out.extend(seal.seal(&log_aad(e.index, e.term), &to_bytes(e)));
    out
}

fn write_snapshot(seal: &Sealer, meta: &mut Meta<'_>, data: &mut Log<'_>, s: &Snapshot) -> Result<(), StorageError> {
    data.retain(|_, _| false).map_err(db_err)?;
    let sealed = seal.seal(&snapshot_aad(s.meta.index, s.meta.term), &s.data);
    data.insert(s.meta.index, sealed.as_slice()).map_err(db_err)?;
    meta.insert(META_SNAPSHOT, to_bytes(&s.meta).as_slice()).map_err(db_err)?;
    Ok(())
}

fn write_compaction(seal: &Sealer, meta: &mut Meta<'_>, log: &mut Log<'_>, data: &mut Log<'_>, c: &Compaction) -> Result<(), StorageError> {
    write_snapshot(seal, meta, data, &c.snapshot)?;
    log.retain_in(..=c.prev_index, |_, _| false).map_err(db_err)?;
    meta.insert(META_LOG_START, to_bytes(&(c.prev_index, c.prev_term)).as_slice()).map_err(db_err)?;
    Ok(())
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
        let st = RaftStorage::new(db.clone(), test_seal(), false).unwrap();
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
        let st = RaftStorage::new(db, test_seal(), false).unwrap();
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
        let st = RaftStorage::new(db, test_seal(), false).unwrap();
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
            &seal_entry(&st.seal, &Entry { term: 2, index: 2, kind: crate::raft::EntryKind::Normal(vec![]) }),
        );
        st.corrupt_for_test("raft_meta", 0, &[1, 1, 1, 1, 1]);
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_meta", .. })));
        // An entry stored under the wrong index.
        st.corrupt_for_test("raft_meta", 0, &to_bytes(&HardState { term: 2, vote: 1, commit: 2 }));
        st.corrupt_for_test(
            "raft_log",
            2,
            &seal_entry(&st.seal, &Entry { term: 2, index: 3, kind: crate::raft::EntryKind::Normal(vec![]) }),
        );
        assert!(matches!(st.load(), Err(StorageError::Corrupt { table: "raft_log", .. })));
        // A sealed entry moved from another index, a flipped byte, a record
        // of the right shape under another term: each names the record.
        let good = seal_entry(&st.seal, &Entry { term: 2, index: 2, kind: crate::raft::EntryKind::Normal(vec![1]) });
        st.corrupt_for_test("raft_log", 2, &good);
        assert!(st.load().is_ok());
        let moved = seal_entry(&st.seal, &Entry { term: 2, index: 1, kind: crate::raft::EntryKind::Normal(vec![1]) });
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
        let st = RaftStorage::new(db.clone(), test_seal(), true).unwrap();
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
        let mut st = RaftStorage::new(db.clone(), old.clone(), false).unwrap();
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
        let only_new = RaftStorage::new(db.clone(), Arc::new(SealKey::new(2, [0x77; 32], [3; 16])), false).unwrap();
        assert_eq!(only_new.load().unwrap(), before);
        let only_old = RaftStorage::new(db, old, false).unwrap();
        assert!(matches!(only_old.load(), Err(StorageError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }
}
