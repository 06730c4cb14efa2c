//! `shoal swarm backup -o FILE`: a tar archive of this manager's data dir,
//! written while the daemon runs.
//!
//! On the loop, [`Daemon::swarm_backup`] checks the node is a manager and
//! takes a point-in-time [`Snapshot`] of its database (one read transaction:
//! every commit so far, none after) and reads every `*.key` file of the data
//! dir (the keyring `seal.key`, `node.key`, `cluster.key`) into memory, in
//! the same turn of the loop: a data-key replacement also runs on the loop
//! (`rekey`), so the keyring always opens the copied records and key files
//! (read later, a keyring holding only a new key could be paired with
//! records sealed under the old one). The rest runs off the loop
//! ([`io::Io::read`](super::io::Io::read)) so raft keeps ticking: the
//! snapshot is copied into a new database file next to the archive, the
//! archive is written to a temporary file in the output's directory
//! (mode 0600) with that copy as [`DB_MEMBER`] and the key files as they
//! were read (sealed or not), fsynced, and renamed onto the output. A failure leaves no temporary file and the output untouched.
//!
//! The archive is a data dir: extracted into an empty one, a daemon starts
//! from it; `swarm init --force-new-cluster --advertise-addr NEW` then makes
//! it the only manager of its swarm at its new address.
//!
//! The archive is POSIX ustar, written with the `tar` crate: regular files
//! only, mode 0600, owner 0:0, named by one relative path component of at
//! most [`NAME_BYTES_MAX`] bytes (no long-name extensions), each at most
//! [`FILE_BYTES_MAX`] bytes (the octal size field). A file that yields fewer
//! or more bytes than its size when it was opened is an error, never a
//! silently malformed archive. GNU tar and busybox tar read it.
//!
//! At most [`BACKUPS_IN_FLIGHT_MAX`] backups are written at once per
//! process; more are refused.

use super::router::Outcome;
use super::swarm::Mode;
use super::{reply_later, Daemon};
use async_channel::Sender;
use shoal_manager::backup::{BackupError, Snapshot};
use shoal_shared::api::{ErrorKind, Reply};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The database's member name: the file a daemon opens in its data dir
/// (`daemon::open_store`).
pub(crate) const DB_MEMBER: &str = "shoal.redb";
/// Key files are the data dir's files with this suffix (`node.key`, `cluster.key`).
const KEY_SUFFIX: &str = ".key";
/// Longest member name: ustar's `name` field, without its `prefix` field.
const NAME_BYTES_MAX: usize = 100;
/// Largest member: 11 octal digits in a ustar header's size field.
const FILE_BYTES_MAX: u64 = 0o777_7777_7777;
/// Largest key file read into memory (they are a few hundred bytes).
const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Permission bits of every member.
const MEMBER_MODE: u32 = 0o600;
/// Backups being written at once in this process, at most.
const BACKUPS_IN_FLIGHT_MAX: usize = 1;
/// Backups being written now.
static BACKUPS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Tells temporary file names of this process apart.
static TEMP_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Why an archive was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    #[error("the backup path must be an absolute file path, not {0:?}")]
    BadPath(String),
    #[error("cannot write the backup to {path}: directory {dir} does not exist")]
    NoDir { path: String, dir: String },
    #[error("cannot write the backup to {0}: it is a directory")]
    IsDir(String),
    #[error("cannot write the backup to {0}: that is the data dir it copies; choose another directory")]
    InDataDir(String),
    #[error("{0}")]
    Copy(#[from] BackupError),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write the backup to {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot put {name:?} in a tar archive: a member name must be one relative path component of 1 to {NAME_BYTES_MAX} bytes")]
    BadName { name: String },
    #[error("cannot put {name:?} in a tar archive: {size} bytes is over the format's {FILE_BYTES_MAX}")]
    TooLarge { name: String, size: u64 },
    #[error("{name:?} changed while it was archived: expected {expected} bytes")]
    SizeChanged { name: String, expected: u64 },
}

impl ArchiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::BadPath(_) | ArchiveError::NoDir { .. } | ArchiveError::IsDir(_) | ArchiveError::InDataDir(_) => {
                ErrorKind::InvalidArgument
            }
            _ => ErrorKind::Internal,
        }
    }
}

/// What was written.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) size_bytes: u64,
    pub(crate) raft_index: u64,
    pub(crate) files: Vec<String>,
}

impl Daemon {
    /// `swarm backup`: refused outside a swarm and on workers; otherwise the
    /// archive is written off the loop and the reply sent when it is done.
    pub(crate) fn swarm_backup(&mut self, output: String, reply: &Sender<Reply>) -> Outcome {
        match self.swarm.mode {
            Mode::Solo => return Outcome::Now(Reply::error(ErrorKind::FailedPrecondition, "This node is not part of a swarm")),
            Mode::Worker => {
                return Outcome::Now(Reply::error(
                    ErrorKind::FailedPrecondition,
                    "this node is not a swarm manager; run swarm backup on a manager",
                ))
            }
            Mode::Manager => {}
        }
        let Some(in_flight) = InFlight::begin() else {
            return Outcome::Now(Reply::error(
                ErrorKind::Unavailable,
                "another backup is being written on this node; retry once it is done",
            ));
        };
        let snapshot = match self.store.backup() {
            Ok(s) => s,
            Err(e) => return Outcome::Now(Reply::error(ErrorKind::Internal, e.to_string())),
        };
        let data_dir = self.cfg.data_dir.clone();
        let keys = match read_key_files(&data_dir) {
            Ok(k) => k,
            Err(e) => return Outcome::Now(Reply::error(e.kind(), e.to_string())),
        };
        let mtime_s = self.now() / 1_000_000_000;
        let reply = reply.clone();
        self.io.read(Box::new(move || {
            let written = write_archive(snapshot, keys, &data_dir, &output, mtime_s);
            drop(in_flight);
            let r = match written {
                Ok(w) => {
                    crate::log!("INFO", "backup of raft index {} written to {} ({} bytes)", w.raft_index, output, w.size_bytes);
                    Reply::Backup { path: output, size_bytes: w.size_bytes, raft_index: w.raft_index, files: w.files }
                }
                Err(e) => Reply::error(e.kind(), e.to_string()),
            };
            reply_later(&reply, r)
        }));
        Outcome::Later
    }
}

/// One backup being written, counted in [`BACKUPS_IN_FLIGHT`] until dropped.
struct InFlight;

impl InFlight {
    /// `None` when [`BACKUPS_IN_FLIGHT_MAX`] backups are being written.
    fn begin() -> Option<InFlight> {
        let before = BACKUPS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight;
        (before < BACKUPS_IN_FLIGHT_MAX).then_some(guard)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        BACKUPS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes the archive of `snapshot` and `keys` (read from `data_dir` with
/// [`read_key_files`] when the snapshot was taken) to `output` (see the
/// module header). Blocking.
pub(crate) fn write_archive(
    snapshot: Snapshot,
    keys: Vec<(String, Vec<u8>)>,
    data_dir: &Path,
    output: &str,
    mtime_s: u64,
) -> Result<Written, ArchiveError> {
    let out = PathBuf::from(output);
    let (Some(name), Some(dir)) = (out.file_name(), out.parent()) else { return Err(ArchiveError::BadPath(output.into())) };
    if !out.is_absolute() {
        return Err(ArchiveError::BadPath(output.into()));
    }
    if !dir.is_dir() {
        return Err(ArchiveError::NoDir { path: output.into(), dir: dir.display().to_string() });
    }
    if out.is_dir() {
        return Err(ArchiveError::IsDir(output.into()));
    }
    // A rename into the data dir could replace the live database or a key.
    if std::fs::canonicalize(dir).ok() == std::fs::canonicalize(data_dir).ok() {
        return Err(ArchiveError::InDataDir(output.into()));
    }
    let temp = format!(".{}.{}-{}", name.to_string_lossy(), std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::SeqCst));
    let db_copy = dir.join(format!("{temp}.redb.tmp"));
    let tar_temp = dir.join(format!("{temp}.tmp"));
    let copied = snapshot.write_to(&db_copy);
    // The read transaction pins pages of the live database: let it go at once.
    drop(snapshot);
    let written = copied.map_err(ArchiveError::from).and_then(|copied| {
        let mut members = vec![(DB_MEMBER.to_string(), Source::File(db_copy.clone()))];
        members.extend(keys.into_iter().map(|(name, bytes)| (name, Source::Bytes(bytes))));
        let size_bytes = write_tar(&tar_temp, &members, mtime_s)?;
        std::fs::rename(&tar_temp, &out).map_err(|source| ArchiveError::Write { path: output.into(), source })?;
        // Make the rename durable.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|source| ArchiveError::Write { path: output.into(), source })?;
        Ok(Written { size_bytes, raft_index: copied.raft_index, files: members.into_iter().map(|(n, _)| n).collect() })
    });
    let _ = std::fs::remove_file(&db_copy);
    if written.is_err() {
        let _ = std::fs::remove_file(&tar_temp);
    }
    written
}

/// Every regular `*.key` file in `data_dir` with its bytes, by name.
pub(crate) fn read_key_files(data_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let read = |path: &Path| {
        let path = path.display().to_string();
        move |source| ArchiveError::Read { path, source }
    };
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(read(data_dir))? {
        let entry = entry.map_err(read(data_dir))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !name.ends_with(KEY_SUFFIX) || !entry.file_type().map_err(read(data_dir))?.is_file() {
            continue;
        }
        let path = entry.path();
        let mut bytes = Vec::new();
        File::open(&path).and_then(|f| f.take(KEY_FILE_BYTES_MAX + 1).read_to_end(&mut bytes)).map_err(read(&path))?;
        if bytes.len() as u64 > KEY_FILE_BYTES_MAX {
            return Err(ArchiveError::TooLarge { name, size: bytes.len() as u64 });
        }
        keys.push((name, bytes));
    }
    keys.sort();
    Ok(keys)
}

/// Where a member's bytes come from.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Writes `members` (name, source) as a new tar file at `path` with
/// mode 0600, fsynced; returns its size.
fn write_tar(path: &Path, members: &[(String, Source)], mtime_s: u64) -> Result<u64, ArchiveError> {
    let write = |source| ArchiveError::Write { path: path.display().to_string(), source };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(write)?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    for (name, src) in members {
        match src {
            Source::File(src) => {
                let read = |source| ArchiveError::Read { path: src.display().to_string(), source };
                let mut f = File::open(src).map_err(read)?;
                let size_bytes = f.metadata().map_err(read)?.len();
                append_member(&mut tar, path, &Member { name, size_bytes, src }, mtime_s, &mut f)?;
            }
            Source::Bytes(bytes) => {
                let member = Member { name, size_bytes: bytes.len() as u64, src: Path::new(name) };
                append_member(&mut tar, path, &member, mtime_s, &mut bytes.as_slice())?;
            }
        }
    }
    let out = tar.into_inner().map_err(write)?;
    let file = out.into_inner().map_err(|e| write(e.into_error()))?;
    file.sync_all().map_err(write)?;
    Ok(file.metadata().map_err(write)?.len())
}

/// The ustar header of regular file `name` of `size` bytes: mode 0600,
/// owner 0:0. Refuses names and sizes the format cannot hold as they are.
fn header(name: &str, size: u64, mtime_s: u64) -> Result<tar::Header, ArchiveError> {
    let bad_name = || ArchiveError::BadName { name: name.to_string() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > NAME_BYTES_MAX || bytes.contains(&b'/') || bytes.contains(&0) || name == "." || name == ".." {
        return Err(bad_name());
    }
    if size > FILE_BYTES_MAX {
        return Err(ArchiveError::TooLarge { name: name.to_string(), size });
    }
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|_| bad_name())?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(MEMBER_MODE);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(mtime_s.min(FILE_BYTES_MAX));
    h.set_cksum();
    Ok(h)
}

/// A member to append: its name, its size when opened, and the path it is
/// read from (for errors).
struct Member<'a> {
    name: &'a str,
    size_bytes: u64,
    src: &'a Path,
}

/// Appends `m` to the archive at `archive` (for errors): its header and
/// exactly `m.size_bytes` bytes read from `data`, which must then be at its end.
fn append_member<W: Write>(
    tar: &mut tar::Builder<W>,
    archive: &Path,
    m: &Member<'_>,
    mtime_s: u64,
    data: &mut dyn Read,
) -> Result<(), ArchiveError> {
    let read = |source| ArchiveError::Read { path: m.src.display().to_string(), source };
    let header = header(m.name, m.size_bytes, mtime_s)?;
    let mut source = Counted { inner: (&mut *data).take(m.size_bytes), read_bytes: 0, failed: None };
    let appended = tar.append(&header, &mut source);
    if let Some(e) = source.failed.take() {
        return Err(read(e));
    }
    appended.map_err(|source| ArchiveError::Write { path: archive.display().to_string(), source })?;
    let mut probe = [0u8; 1];
    if source.read_bytes != m.size_bytes || data.read(&mut probe).map_err(read)? != 0 {
        return Err(ArchiveError::SizeChanged { name: m.name.to_string(), expected: m.size_bytes });
    }
    Ok(())
}

/// A member's source as the archive reads it: counts the bytes and keeps the
/// first read error, so a short source or a failed read is told apart from a
/// failed write of the archive.
struct Counted<R> {
    inner: R,
    read_bytes: u64,
    failed: Option<std::io::Error>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.read_bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.failed = Some(e);
                Err(std::io::Error::new(kind, "reading a member's source failed"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_seal() -> std::sync::Arc<shoal_shared::seal::SealKey> {
        std::sync::Arc::new(shoal_shared::seal::SealKey::new(1, [4; 32], [0; 16]))
    }
    use shoal_manager::store::Store;
    use shoal_shared::ops::Entry;
    use std::process::Command;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shoal-daemon-backup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn store(data: &Path) -> Store {
        std::fs::create_dir_all(data).unwrap();
        let (mut s, _) =
            Store::open_with(&data.join(DB_MEMBER), test_seal(), 1, || "node-a".into(), shoal_manager::store::Bootstrap::Single, |_| {})
                .unwrap();
        s.propose(&Entry { at: 1, ops: vec![] }).unwrap();
        std::fs::write(data.join("node.key"), b"sealed-or-not").unwrap();
        std::fs::write(data.join("cluster.key"), b"cluster").unwrap();
        std::fs::write(data.join("node.key.tmp"), b"half-written").unwrap();
        std::fs::create_dir_all(data.join("dir.key")).unwrap();
        s
    }

    /// Archives the store `s` of `d/data` to `output`.
    fn archive(s: &Store, d: &Path, output: &Path) -> Result<Written, ArchiveError> {
        let keys = read_key_files(&d.join("data"))?;
        write_archive(s.backup().unwrap(), keys, &d.join("data"), output.to_str().unwrap(), 1_700_000_000)
    }

    #[test]
    fn the_archive_extracts_into_a_data_dir_a_store_opens() {
        let d = dir("roundtrip");
        let s = store(&d.join("data"));
        let out = d.join("b.tar");
        let w = archive(&s, &d, &out).unwrap();
        assert_eq!(w.files, ["shoal.redb", "cluster.key", "node.key"]);
        assert_eq!(w.size_bytes, std::fs::metadata(&out).unwrap().len());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
        let restored = d.join("restored");
        std::fs::create_dir_all(&restored).unwrap();
        let x = Command::new("tar").arg("-xf").arg(&out).arg("-C").arg(&restored).output().unwrap();
        assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
        assert_eq!(std::fs::read(restored.join("node.key")).unwrap(), b"sealed-or-not");
        let (copy, id) = Store::open_with(
            &restored.join(DB_MEMBER),
            test_seal(),
            2,
            || panic!("the node id comes back"),
            shoal_manager::store::Bootstrap::Single,
            |_| {},
        )
        .unwrap();
        assert_eq!(id, "node-a");
        assert_eq!(copy.state(), s.state());
        assert!(w.raft_index >= 2, "{w:?}");
    }

    #[test]
    fn bad_targets_and_a_second_backup_at_once_are_refused_and_leave_nothing() {
        let d = dir("refused");
        let s = store(&d.join("data"));
        let e = archive(&s, &d, &d.join("no/such/b.tar")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = archive(&s, &d, &d.join("data")).unwrap_err();
        assert!(matches!(e, ArchiveError::IsDir(_)), "{e}");
        let e = archive(&s, &d, Path::new("relative.tar")).unwrap_err();
        assert!(matches!(e, ArchiveError::BadPath(_)), "{e}");
        let e = archive(&s, &d, &d.join("data/shoal.redb")).unwrap_err();
        assert!(matches!(e, ArchiveError::InDataDir(_)), "{e}");
        let first = InFlight::begin().expect("one backup at a time");
        assert!(InFlight::begin().is_none(), "a second one is refused");
        drop(first);
        assert!(InFlight::begin().is_some(), "released when dropped");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["data"], "{left:?}");
    }

    /// Files of awkward sizes: empty, one block, one byte past it, several blocks.
    fn files() -> Vec<(String, Vec<u8>)> {
        [0usize, 1, 511, 512, 513, 5000]
            .iter()
            .map(|&n| (format!("f{n}.key"), (0..n).map(|i| (i * 7 + n) as u8).collect()))
            .chain([("x".repeat(NAME_BYTES_MAX), b"y".to_vec()), (DB_MEMBER.to_string(), vec![0xAB; 70_000])])
            .collect()
    }

    /// A member as the `tar` crate reads it back.
    #[derive(Debug)]
    struct ReadBack {
        name: String,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime_s: u64,
        size: u64,
        data: Vec<u8>,
    }

    /// Every member of the tar file at `path`, each checked to be a regular
    /// file with a ustar header.
    fn read_back(path: &Path) -> Vec<ReadBack> {
        let mut ar = tar::Archive::new(File::open(path).unwrap());
        let mut members = Vec::new();
        for entry in ar.entries().unwrap() {
            let mut e = entry.unwrap();
            let h = e.header().clone();
            assert!(h.as_ustar().is_some(), "a ustar header");
            assert_eq!(h.entry_type(), tar::EntryType::Regular);
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            members.push(ReadBack {
                name: e.path().unwrap().to_str().unwrap().to_string(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime_s: h.mtime().unwrap(),
                size: h.size().unwrap(),
                data,
            });
        }
        members
    }

    #[test]
    fn key_files_are_archived_as_read_with_the_snapshot() {
        let d = dir("keys-at-snapshot");
        let s = store(&d.join("data"));
        let (snapshot, keys) = (s.backup().unwrap(), read_key_files(&d.join("data")).unwrap());
        // A data-key replacement after the snapshot rewrites the key files.
        std::fs::write(d.join("data/node.key"), b"sealed under the next key").unwrap();
        std::fs::write(d.join("data/seal.key"), b"keyring of the next key").unwrap();
        let out = d.join("k.tar");
        let w = write_archive(snapshot, keys, &d.join("data"), out.to_str().unwrap(), 1_700_000_000).unwrap();
        assert_eq!(w.files, ["shoal.redb", "cluster.key", "node.key"]);
        let back = read_back(&out);
        let node = back.iter().find(|m| m.name == "node.key").unwrap();
        assert_eq!(node.data, b"sealed-or-not");
        // Too large a key file is refused, not read whole.
        std::fs::write(d.join("data/big.key"), vec![0u8; KEY_FILE_BYTES_MAX as usize + 1]).unwrap();
        let err = read_key_files(&d.join("data")).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { ref name, .. } if name == "big.key"), "{err}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_tar_crate_reads_back_every_member_byte_for_byte() {
        let d = dir("members");
        let files = files();
        let mut members = Vec::new();
        for (name, data) in &files {
            let src = d.join(format!("src-{}", members.len()));
            std::fs::write(&src, data).unwrap();
            members.push((name.clone(), Source::File(src)));
        }
        let out = d.join("a.tar");
        let size = write_tar(&out, &members, 1_700_000_000).unwrap();
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(size % 512, 0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        let back = read_back(&out);
        assert_eq!(back.len(), files.len());
        for ((name, data), m) in files.iter().zip(back) {
            assert_eq!(&m.name, name);
            assert_eq!((m.mode, m.uid, m.gid, m.mtime_s), (0o600, 0, 0, 1_700_000_000), "{name}");
            assert_eq!(m.size, data.len() as u64, "{name}");
            assert_eq!(&m.data, data, "{name}");
        }
        // GNU tar lists it without a warning.
        let list = Command::new("tar").arg("-tvf").arg(&out).output().expect("run tar");
        assert!(list.status.success() && list.stderr.is_empty(), "{}", String::from_utf8_lossy(&list.stderr));
        let listing = String::from_utf8_lossy(&list.stdout);
        assert_eq!(listing.lines().count(), files.len(), "{listing}");
        assert!(listing.lines().all(|l| l.starts_with("-rw------- ")), "{listing}");
    }

    #[test]
    fn bad_names_too_large_and_wrong_sizes_are_refused() {
        for name in ["", "a/b", "/abs", "..", ".", "nul\0", &"x".repeat(NAME_BYTES_MAX + 1)] {
            let e = header(name, 0, 0).unwrap_err();
            assert!(matches!(e, ArchiveError::BadName { .. }), "{name:?}: {e}");
            assert_eq!(e.kind(), ErrorKind::Internal);
        }
        let e = header("huge", FILE_BYTES_MAX + 1, 0).unwrap_err();
        assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("over the format's"), "{e}");
        let mut tar = tar::Builder::new(Vec::new());
        let out = Path::new("/out.tar");
        let member = |name, size_bytes| Member { name, size_bytes, src: Path::new("/data/k.key") };
        append_member(&mut tar, out, &member("ok", 1), 0, &mut &b"y"[..]).unwrap();
        let e = append_member(&mut tar, out, &member("short", 10), 0, &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(e, ArchiveError::SizeChanged { expected: 10, .. }), "{e}");
        let e = append_member(&mut tar, out, &member("long", 2), 0, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(e.to_string(), "\"long\" changed while it was archived: expected 2 bytes");
        let e = append_member(&mut tar, out, &member("a/b", 0), 0, &mut &b""[..]).unwrap_err();
        assert!(matches!(e, ArchiveError::BadName { .. }), "{e}");
    }

    #[test]
    fn a_failed_read_is_told_apart_from_a_failed_write() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let out = Path::new("/out.tar");
        let member = Member { name: "k.key", size_bytes: 4, src: Path::new("/data/k.key") };
        let mut tar = tar::Builder::new(Vec::new());
        let e = append_member(&mut tar, out, &member, 0, &mut Failing).unwrap_err();
        assert!(matches!(e, ArchiveError::Read { .. }), "{e}");
        assert_eq!(e.to_string(), "cannot read /data/k.key: disk on fire");
        // An archive with room for less than one header block.
        let mut small = [0u8; 100];
        let mut tar = tar::Builder::new(&mut small[..]);
        let e = append_member(&mut tar, out, &member, 0, &mut &b"abcd"[..]).unwrap_err();
        assert!(matches!(e, ArchiveError::Write { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot write the backup to /out.tar: "), "{e}");
    }
}
