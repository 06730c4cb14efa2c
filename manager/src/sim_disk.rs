//! A simulated disk for the store: the bytes of one redb file in memory,
//! with power cuts. Built for tests and with the crate's `sim` feature only.
//!
//! Ownership: a [`SimDisk`] is a cloneable handle to one file's bytes; the
//! whole-cluster simulator keeps one per manager and opens a [`Store`] on it
//! with [`Store::open_on_disk`], which hands redb a [`SimDiskBackend`] (a
//! clone of the handle implementing [`redb::StorageBackend`]).
//!
//! Model: `write` and `set_len` change the current bytes at once (the page
//! cache); `sync_data` makes the current bytes durable; [`SimDisk::power_cut`]
//! throws away everything written since the last sync, so the bytes revert
//! to the last synced image. Unsynced writes are lost all together: the
//! model has no torn writes and never keeps a subset of them.
//!
//! Cost: a sync copies nothing. Each unsynced write records the bytes it
//! overwrites (and each `set_len` the length, plus the tail a shrink cuts
//! off) in an undo log, cleared at sync and applied backwards at a power
//! cut. Bytes at or past the smallest length since the last sync need no
//! undo entry: reverting that length change cuts them away anyway.
//!
//! A cut can also be armed to strike inside a commit:
//! [`SimDisk::arm_power_cut`] lets a number of changes (writes, `set_len`s,
//! syncs) through and cuts the power instead of the next one, which fails.
//!
//! Crash protocol: cut the power while the database is still open, then
//! drop the [`Store`] (or [`redb::Database`]), then reopen. A power cut
//! fences every backend handed out before it: their I/O fails from then on,
//! so the dropped database's closing writes never reach the disk. Dropping
//! the database first is a clean shutdown: redb's close makes pending
//! non-durable commits durable, and a later power cut loses nothing. A
//! database whose disk lost power must not be used for anything but
//! dropping.
//!
//! [`Store`]: crate::store::Store
//! [`Store::open_on_disk`]: crate::store::Store::open_on_disk

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A cloneable handle to the bytes of one simulated redb file.
#[derive(Clone, Default)]
pub struct SimDisk {
    inner: Arc<Mutex<Bytes>>,
}

/// The file's bytes and what a power cut needs to revert them.
#[derive(Default)]
struct Bytes {
    current: Vec<u8>,
    /// What undoes each change since the last sync, oldest first.
    undo: Vec<Undo>,
    /// Syncs seen with `sim_bugs::Bug::LyingDisk` on (seven in eight are skipped).
    syncs_lied_about: u64,
    /// The smallest length since the last sync: a power cut cuts the bytes
    /// at or past it away, so writes there record nothing.
    floor_len: usize,
    /// Power cuts so far; a backend built in an older epoch is fenced.
    epoch: u64,
    /// Changes still let through before an armed power cut.
    armed_changes: Option<u64>,
}

/// One entry of the undo log.
enum Undo {
    /// `old` was at `offset` before a write (or before a shrink cut it off).
    Bytes { offset: usize, old: Vec<u8> },
    /// The length before a `set_len`.
    Len { before: usize },
}

impl Bytes {
    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len()).filter(|end| *end <= self.current.len()).ok_or_else(out_of_range)?;
        let kept_end = end.min(self.floor_len);
        if offset < kept_end {
            self.undo.push(Undo::Bytes { offset, old: self.current[offset..kept_end].to_vec() });
        }
        self.current[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&mut self, len: usize) {
        let before = self.current.len();
        if len == before {
            return;
        }
        // Pushed before the length entry so that a power cut, undoing
        // backwards, regrows the file before it copies the tail back.
        if len < self.floor_len {
            self.undo.push(Undo::Bytes { offset: len, old: self.current[len..self.floor_len].to_vec() });
        }
        self.undo.push(Undo::Len { before });
        self.floor_len = self.floor_len.min(len);
        self.current.resize(len, 0);
    }

    fn sync(&mut self) {
        self.undo.clear();
        self.floor_len = self.current.len();
    }

    fn power_cut(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Len { before } => self.current.resize(before, 0),
                Undo::Bytes { offset, old } => {
                    // Invariant: undoing backwards restores the length the
                    // file had when the entry was pushed, which covered it.
                    let target =
                        self.current.get_mut(offset..offset + old.len()).expect("an undo entry lies inside the file it was taken from");
                    target.copy_from_slice(&old);
                }
            }
        }
        self.floor_len = self.current.len();
        self.epoch += 1;
        self.armed_changes = None;
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "simulated disk access past the end of the file")
}

impl SimDisk {
    /// An empty disk (a file of length zero).
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// A redb backend on this disk, fenced by the next [`SimDisk::power_cut`].
    pub fn backend(&self) -> SimDiskBackend {
        let epoch = self.lock().epoch;
        SimDiskBackend { disk: self.clone(), epoch }
    }

    /// Loses everything written since the last sync: the bytes revert to
    /// the last synced image, and every backend handed out so far fails
    /// all its I/O from now on (see the module header for the protocol).
    pub fn power_cut(&self) {
        self.lock().power_cut();
    }

    /// Arms a power cut inside what the database does next: the next
    /// `changes` writes, `set_len`s and syncs go through, and the one after
    /// them cuts the power (as [`SimDisk::power_cut`]) and fails. Reads do
    /// not count. A manual cut disarms it.
    pub fn arm_power_cut(&self, changes: u64) {
        self.lock().armed_changes = Some(changes);
    }

    /// Power cuts so far, manual or armed.
    pub fn power_cuts(&self) -> u64 {
        self.lock().epoch
    }

    /// The current length of the file, in bytes.
    pub fn bytes_len(&self) -> u64 {
        self.lock().current.len() as u64
    }

    /// A panic elsewhere cannot leave the bytes half-changed (no method
    /// panics between its checks and its changes), so a poisoned lock is
    /// read through.
    fn lock(&self) -> MutexGuard<'_, Bytes> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn image(&self) -> Vec<u8> {
        self.lock().current.clone()
    }
}

// Hand-written, as redb's own in-memory backend: a derived impl would print
// every byte, and redb formats its backend into its debug log.
impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.lock();
        f.debug_struct("SimDisk").field("len", &bytes.current.len()).field("epoch", &bytes.epoch).finish()
    }
}

/// The [`redb::StorageBackend`] a database opened on a [`SimDisk`] holds.
#[derive(Debug)]
pub struct SimDiskBackend {
    disk: SimDisk,
    /// The disk's epoch when this backend was made.
    epoch: u64,
}

impl SimDiskBackend {
    /// The disk's bytes, unless the power was cut since this backend was made.
    fn bytes(&self) -> io::Result<MutexGuard<'_, Bytes>> {
        let bytes = self.disk.lock();
        if bytes.epoch != self.epoch {
            return Err(io::Error::other("the simulated disk lost power since this database opened it; drop the database and reopen it"));
        }
        Ok(bytes)
    }

    /// [`SimDiskBackend::bytes`] for a change, which an armed cut may
    /// replace by a power cut.
    fn bytes_to_change(&self) -> io::Result<MutexGuard<'_, Bytes>> {
        let mut bytes = self.bytes()?;
        match bytes.armed_changes {
            Some(0) => {
                bytes.power_cut();
                Err(io::Error::other("the simulated disk lost power (an armed power cut)"))
            }
            Some(n) => {
                bytes.armed_changes = Some(n - 1);
                Ok(bytes)
            }
            None => Ok(bytes),
        }
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| out_of_range())
}

impl redb::StorageBackend for SimDiskBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes()?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes()?;
        let offset = to_usize(offset)?;
        let end = offset.checked_add(out.len()).ok_or_else(out_of_range)?;
        out.copy_from_slice(bytes.current.get(offset..end).ok_or_else(out_of_range)?);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        self.bytes_to_change()?.set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut bytes = self.bytes_to_change()?;
        // The injected bug: only one sync in eight makes anything durable (a commit
        // takes more than one sync; the store stays whole, its newest commits vanish
        // at a power cut).
        if crate::sim_bugs::on(crate::sim_bugs::Bug::LyingDisk) {
            bytes.syncs_lied_about += 1;
            if !bytes.syncs_lied_about.is_multiple_of(8) {
                return Ok(());
            }
        }
        bytes.sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = to_usize(offset)?;
        self.bytes_to_change()?.write(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::service;
    use crate::store::{Bootstrap, Store};
    use redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
    use shoal_shared::ops::{Entry, Op};
    use shoal_shared::rng::Rng;
    use std::collections::BTreeSet;

    const KEYS: TableDefinition<u64, u64> = TableDefinition::new("keys");

    fn open(disk: &SimDisk) -> Database {
        Builder::new().create_with_backend(disk.backend()).unwrap()
    }

    fn try_commit(db: &Database, keys: &[u64], durability: Durability) -> Result<(), redb::Error> {
        let mut tx = db.begin_write()?;
        tx.set_durability(durability)?;
        {
            let mut table = tx.open_table(KEYS)?;
            for &k in keys {
                table.insert(k, k * 7)?;
            }
        }
        Ok(tx.commit()?)
    }

    fn commit(db: &Database, keys: &[u64], durability: Durability) {
        try_commit(db, keys, durability).unwrap();
    }

    fn keys(db: &Database) -> BTreeSet<u64> {
        let tx = db.begin_read().unwrap();
        let Ok(table) = tx.open_table(KEYS) else { return BTreeSet::new() };
        table
            .iter()
            .unwrap()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                assert_eq!(v.value(), k.value() * 7, "key {} holds its own value", k.value());
                k.value()
            })
            .collect()
    }

    /// The disk against a model that copies the whole synced image: after
    /// every step the bytes match, through writes, grows, shrinks, syncs
    /// and power cuts.
    #[test]
    fn power_cut_reverts_to_the_synced_image() {
        for seed in 0..200 {
            let mut rng = Rng::from_seed(seed);
            let disk = SimDisk::new();
            let mut backend = disk.backend();
            let (mut current, mut synced) = (Vec::<u8>::new(), Vec::<u8>::new());
            for step in 0..60 {
                match rng.range(0, 10) {
                    0..=4 if !current.is_empty() => {
                        let offset = rng.range(0, current.len() as u64) as usize;
                        let len = rng.range(1, (current.len() - offset) as u64 + 1) as usize;
                        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                        backend.write(offset as u64, &data).unwrap();
                        current[offset..offset + len].copy_from_slice(&data);
                    }
                    0..=6 => {
                        let len = rng.range(0, 64) as usize;
                        backend.set_len(len as u64).unwrap();
                        current.resize(len, 0);
                    }
                    7 => {
                        backend.sync_data().unwrap();
                        synced = current.clone();
                    }
                    _ => {
                        disk.power_cut();
                        current = synced.clone();
                        backend = disk.backend();
                    }
                }
                assert_eq!(disk.image(), current, "seed {seed} step {step}");
                assert_eq!(disk.bytes_len(), current.len() as u64);
            }
        }
    }

    #[test]
    fn a_power_cut_fences_older_backends() {
        let disk = SimDisk::new();
        let old = disk.backend();
        old.set_len(8).unwrap();
        old.sync_data().unwrap();
        disk.power_cut();
        assert!(old.write(0, &[1]).is_err());
        assert!(old.set_len(16).is_err());
        assert!(old.sync_data().is_err());
        assert!(old.len().is_err());
        let new = disk.backend();
        assert_eq!(new.len().unwrap(), 8);
        assert!(new.write(4, &[0; 5]).is_err(), "past the end");
        new.write(4, &[9; 4]).unwrap();
        let mut out = [0; 8];
        new.read(0, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 9, 9, 9, 9]);
    }

    /// (a) A proposal a single-voter store committed survives a power cut,
    /// whether the store crashed (cut, then dropped) or shut down first.
    #[test]
    fn a_committed_proposal_survives_a_power_cut() {
        let disk = SimDisk::new();
        let (mut s, id) =
            Store::open_on_disk(disk.clone(), Store::test_seal_key(), 1, || "node-a".into(), Bootstrap::Single, |_| {}).unwrap();
        assert_eq!(id, "node-a");
        assert!(s.is_leader());
        s.propose(&Entry { at: 1, ops: vec![Op::PutService(service("a", "web"))] }).unwrap();
        disk.power_cut();
        drop(s);
        let (mut s, id) =
            Store::open_on_disk(disk.clone(), Store::test_seal_key(), 2, || unreachable!(), Bootstrap::Single, |_| {}).unwrap();
        assert_eq!(id, "node-a");
        assert!(s.is_leader());
        assert_eq!(s.state().services.keys().collect::<Vec<_>>(), ["a"]);
        s.propose(&Entry { at: 2, ops: vec![Op::PutService(service("b", "db"))] }).unwrap();
        drop(s);
        disk.power_cut();
        let (s, _) = Store::open_on_disk(disk.clone(), Store::test_seal_key(), 3, || unreachable!(), Bootstrap::Single, |_| {}).unwrap();
        assert_eq!(s.state().services.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(disk.bytes_len() > 0);
    }

    /// (b) An unsynced commit is lost in a crash; a synced one is not. A
    /// clean close makes the unsynced one durable first.
    #[test]
    fn only_durable_commits_survive_a_crash() {
        let disk = SimDisk::new();
        let db = open(&disk);
        commit(&db, &[1], Durability::Immediate);
        commit(&db, &[2], Durability::None);
        assert_eq!(keys(&db), BTreeSet::from([1, 2]));
        disk.power_cut();
        drop(db);
        let db = open(&disk);
        assert_eq!(keys(&db), BTreeSet::from([1]));
        commit(&db, &[3], Durability::None);
        drop(db);
        disk.power_cut();
        assert_eq!(keys(&open(&disk)), BTreeSet::from([1, 3]), "redb's close made the pending commit durable");
    }

    /// (c) Many commits of mixed durability, cut at a random point: between
    /// commits, inside an open write transaction, or (armed) inside a
    /// commit. redb reopens cleanly and holds exactly the commits up to the
    /// last durable one; a commit the cut struck is all there or all gone.
    #[test]
    fn redb_recovers_from_power_cuts_between_and_inside_commits() {
        let disk = SimDisk::new();
        let mut rng = Rng::from_seed(7);
        let mut durable = BTreeSet::new();
        let mut struck_commits = 0;
        for round in 0..60u64 {
            let mut db = open(&disk);
            assert!(db.check_integrity().unwrap(), "round {round}");
            assert_eq!(keys(&db), durable, "round {round}");
            let armed = rng.chance(1, 2);
            if armed {
                disk.arm_power_cut(rng.range(0, 300));
            }
            let mut pending = BTreeSet::new();
            let mut struck = None;
            for c in 0..rng.range(1, 40) {
                let batch: Vec<u64> = (0..rng.range(1, 4)).map(|i| round * 10_000 + c * 10 + i).collect();
                let immediate = rng.chance(1, 3);
                let durability = if immediate { Durability::Immediate } else { Durability::None };
                if try_commit(&db, &batch, durability).is_err() {
                    struck = Some((immediate, batch));
                    break;
                }
                pending.extend(batch);
                if immediate {
                    durable.append(&mut pending);
                }
            }
            if struck.is_none() {
                if rng.chance(1, 2) {
                    let tx = db.begin_write().unwrap();
                    tx.open_table(KEYS).unwrap().insert(u64::MAX, 0).unwrap();
                    disk.power_cut();
                    drop(tx);
                } else {
                    disk.power_cut();
                }
            }
            drop(db);
            let Some((immediate, batch)) = struck else { continue };
            struck_commits += 1;
            let present = keys(&open(&disk));
            if present != durable {
                assert!(immediate, "round {round}: a struck non-durable commit left keys behind");
                durable.append(&mut pending);
                durable.extend(batch);
                assert_eq!(present, durable, "round {round}: the struck commit is all there");
            }
        }
        assert!(struck_commits > 10, "a cut struck {struck_commits} commits");
        assert!(durable.len() > 100, "the run made {} keys durable", durable.len());
        assert_eq!(keys(&open(&disk)), durable);
    }
}
