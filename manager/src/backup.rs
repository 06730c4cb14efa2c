//! Point-in-time copies of a node's database file, for `shoal swarm backup`.
//!
//! Owns the list of the tables a node's database holds ([`copy_tables`]: the
//! one place a new table is added) and the copy itself. A copy is made from
//! ONE read transaction ([`Snapshot`], begun by `Store::backup` on the
//! daemon's loop), so it is the database as of one commit while raft keeps
//! writing; the copying runs wherever the caller likes (the daemon does it
//! off its loop). Rows are copied as stored: values stay the bytes on disk
//! (raft's records and whatever sealing they carry), nothing is decoded.
//!
//! The copy is a new redb file created with mode 0600, written in one
//! transaction and fsynced; it opens as a `Store` with the same state. A
//! table the copy does not know is an error at test time, never a silent
//! gap: `every_table_of_a_store_is_copied` compares [`copy_tables`] with
//! redb's own list of the tables in a populated store.

use crate::raft::storage::{LOG as RAFT_LOG, META as RAFT_META, SNAPSHOT_DATA as RAFT_SNAPSHOT_DATA};
use crate::schema::{BLOBS, LOCAL, META};
use redb::backends::FileBackend;
use redb::{
    Durability, Key, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};
use std::path::Path;

/// Why a backup copy failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the state database for a backup: {0}")]
    Read(String),
    #[error("cannot write the database copy {path}: {message}")]
    Write { path: String, message: String },
}

/// What a copy holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The tables copied (those the source has), in [`copy_tables`]' order.
    pub tables: Vec<String>,
    /// Rows copied, all tables together.
    pub rows: u64,
    /// The raft index of the newest record in the copy: its last log entry,
    /// or its snapshot's index when the log is empty (0: no raft state).
    pub raft_index: u64,
}

/// The database as of one commit: a read transaction that raft's later
/// writes do not change. Holding it keeps the pages it reads from being
/// reused, so drop it once copied.
pub struct Snapshot {
    tx: ReadTransaction,
}

impl Snapshot {
    /// Wraps a read transaction of the node's database (see `Store::backup`).
    pub(crate) fn new(tx: ReadTransaction) -> Snapshot {
        Snapshot { tx }
    }

    /// The raft index of the newest record this snapshot holds (see [`Copied::raft_index`]).
    /// Read from the tables' keys only, so it does not depend on how values are encoded.
    pub fn raft_index(&self) -> Result<u64, BackupError> {
        let last = |def: TableDefinition<u64, &[u8]>| -> Result<u64, BackupError> {
            let Some(t) = open_source(&self.tx, def)? else { return Ok(0) };
            let last = t.last().map_err(read)?.map(|(k, _)| k.value()).unwrap_or(0);
            Ok(last)
        };
        Ok(last(RAFT_LOG)?.max(last(RAFT_SNAPSHOT_DATA)?))
    }

    /// Writes every table into a new database file at `dst` (which must not
    /// exist; created with mode 0600), in one transaction, fsynced. On error
    /// the partial file is removed.
    pub fn write_to(&self, dst: &Path) -> Result<Copied, BackupError> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(dst).map_err(|e| BackupError::Write { path: dst.display().to_string(), message: e.to_string() })?;
        // From here on the file is ours: a failure removes it.
        let written = self.fill(file, dst);
        if written.is_err() {
            let _ = std::fs::remove_file(dst);
        }
        written
    }

    /// Copies the tables into the new, empty `file` (at `dst`).
    fn fill(&self, file: std::fs::File, dst: &Path) -> Result<Copied, BackupError> {
        let fail = |e: &dyn std::fmt::Display| BackupError::Write { path: dst.display().to_string(), message: e.to_string() };
        let backend = FileBackend::new(file).map_err(|e| fail(&e))?;
        let db = redb::Builder::new().create_with_backend(backend).map_err(|e| fail(&e))?;
        let mut wx = db.begin_write().map_err(|e| fail(&e))?;
        wx.set_durability(Durability::Immediate).map_err(|e| fail(&e))?;
        let mut copied = Copied { tables: Vec::new(), rows: 0, raft_index: self.raft_index()? };
        copy_tables(&self.tx, &wx, &mut copied)?;
        wx.commit().map_err(|e| fail(&e))?;
        drop(db);
        // redb fsyncs its commits; this also covers what it writes when it closes.
        std::fs::File::open(dst).and_then(|f| f.sync_all()).map_err(|e| fail(&e))?;
        Ok(copied)
    }
}

/// Copies every table of a node's database from `src` into `dst`. THE list
/// of tables: a table added anywhere in the manager is added here (the test
/// `every_table_of_a_store_is_copied` fails until it is).
fn copy_tables(src: &ReadTransaction, dst: &WriteTransaction, copied: &mut Copied) -> Result<(), BackupError> {
    copy_table(src, dst, META, copied)?;
    copy_table(src, dst, LOCAL, copied)?;
    copy_table(src, dst, BLOBS, copied)?;
    copy_table(src, dst, RAFT_META, copied)?;
    copy_table(src, dst, RAFT_LOG, copied)?;
    copy_table(src, dst, RAFT_SNAPSHOT_DATA, copied)?;
    Ok(())
}

/// Copies one table's rows as stored; a table the source lacks is skipped.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
    copied: &mut Copied,
) -> Result<(), BackupError> {
    let Some(from) = open_source(src, def)? else { return Ok(()) };
    let name = def.name();
    let fail = |e: redb::Error| BackupError::Write { path: format!("table {name}"), message: e.to_string() };
    let mut to = dst.open_table(def).map_err(|e| fail(e.into()))?;
    for row in from.iter().map_err(read)? {
        let (k, v) = row.map_err(read)?;
        to.insert(k.value(), v.value()).map_err(|e| fail(e.into()))?;
        copied.rows += 1;
    }
    copied.tables.push(name.to_string());
    Ok(())
}

/// Opens a table of the source, `None` when the database has no such table.
fn open_source<K: Key + 'static, V: Value + 'static>(
    tx: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, BackupError> {
    match tx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(read(e)),
    }
}

fn read<E: Into<redb::Error>>(e: E) -> BackupError {
    BackupError::Read(e.into().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft;
    use crate::state::tests::service;
    use crate::store::Store;
    use shoal_shared::ops::{Entry, Op};

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("shoal-backup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A store with a snapshot, log entries after it and a local value.
    fn populated(path: &Path) -> Store {
        let tune = |c: &mut raft::Config| {
            c.snapshot_interval_entries = 20;
            c.snapshot_keep_entries = 5;
        };
        let (mut s, _) = Store::open_tuned(path, 1, || "node-a".into(), tune).unwrap();
        for i in 0..30u64 {
            s.propose(&Entry { at: i, ops: vec![Op::PutService(service(&format!("s{i}"), &format!("web{i}")))] }).unwrap();
        }
        s.set_local("swarm_mode", "manager").unwrap();
        s
    }

    #[test]
    fn every_table_of_a_store_is_copied() {
        let d = dir("tables");
        let store = populated(&d.join("shoal.redb"));
        let snap = store.backup().unwrap();
        let copied = snap.write_to(&d.join("copy.redb")).unwrap();
        let mut present: Vec<String> = snap.tx.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_string()).collect();
        present.sort();
        let mut tables = copied.tables.clone();
        tables.sort();
        assert_eq!(tables, present, "a table of the store is missing from backup::copy_tables (add it there)");
        assert_eq!(snap.tx.list_multimap_tables().unwrap().count(), 0, "multimap tables are not copied");
        for t in ["meta", "local", "raft_meta", "raft_log", "raft_snapshot_data"] {
            assert!(copied.tables.iter().any(|c| c == t), "{t} copied: {copied:?}");
        }
        assert!(copied.rows > 10, "{copied:?}");
    }

    #[test]
    fn a_copy_is_the_store_as_of_its_snapshot_and_opens_as_a_store() {
        let d = dir("open");
        let mut store = populated(&d.join("shoal.redb"));
        let index = store.raft_status().last_index;
        let before = store.state().clone();
        let snap = store.backup().unwrap();
        // Raft keeps writing while the snapshot is held: the copy does not see it.
        store.propose(&Entry { at: 99, ops: vec![Op::PutService(service("late", "late"))] }).unwrap();
        let copied = snap.write_to(&d.join("copy.redb")).unwrap();
        drop(snap);
        assert_eq!(copied.raft_index, index);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d.join("copy.redb")).unwrap().permissions().mode() & 0o777, 0o600);
        let (copy, id) = Store::open(&d.join("copy.redb"), 2, || panic!("the copy keeps the node id")).unwrap();
        assert_eq!(id, "node-a");
        assert_eq!(copy.state(), &before);
        assert!(!copy.state().services.contains_key("late"));
        assert!(copy.raft_status().last_index >= index, "a reopened sole voter may append its term's entry");
        assert_eq!(copy.local("swarm_mode").unwrap().as_deref(), Some("manager"));
        assert!(store.state().services.contains_key("late"), "the source went on");
    }

    #[test]
    fn a_copy_never_overwrites_and_leaves_nothing_on_failure() {
        let d = dir("exists");
        let store = populated(&d.join("shoal.redb"));
        std::fs::write(d.join("taken.redb"), b"precious").unwrap();
        let e = store.backup().unwrap().write_to(&d.join("taken.redb")).unwrap_err();
        assert!(matches!(e, BackupError::Write { .. }), "{e}");
        assert_eq!(std::fs::read(d.join("taken.redb")).unwrap(), b"precious");
        let e = store.backup().unwrap().write_to(&d.join("no/such/dir/copy.redb")).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/copy.redb"), "{e}");
    }

    #[test]
    fn snapshots_can_be_copied_on_another_thread() {
        fn send<T: Send + 'static>(_: &T) {}
        let d = dir("send");
        let store = populated(&d.join("shoal.redb"));
        let snap = store.backup().unwrap();
        send(&snap);
        let dst = d.join("copy.redb");
        let copied = std::thread::spawn(move || snap.write_to(&dst).unwrap()).join().unwrap();
        assert!(copied.raft_index > 0);
    }
}
