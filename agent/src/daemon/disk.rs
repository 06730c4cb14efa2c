//! Free space of the node's data dir (and of its task-log dir, when that is
//! another filesystem), for the daemon log: a full disk is reported once
//! when it fills (`WARN`) and once when it has space again (`INFO`), not on
//! every check.
//!
//! [`DiskWatch`] is the sans-IO core (it takes measured [`Space`]s);
//! [`probe`] measures with `statvfs(2)` and is run off the event loop, with
//! the task-log rotation.
//!
//! The node's own state on a full disk: a store write that fails there
//! halts the store (`StoreError::DiskFull`: every write is refused with
//! the data dir's name, nothing acknowledged is lost). The loop says so
//! once, stops ticking raft, and reopens the store in place
//! ([`Daemon::recover_store`]) every [`STORE_RELOAD_MS`] once a disk check
//! taken after the halt finds room in the data dir, as a restart would; a
//! worker then persists and acts on the assignments it could not persist.
//! This node's own `node inspect` and `node ls` rows show its full disk
//! even when the leader could not commit its description
//! ([`Daemon::own_disk_warnings`]).

use super::Daemon;
use shoal_shared::api::Reply;
use shoal_shared::types::{DISK_FULL_WARNING, DISK_LOW_WARNING, MEMORY_LOW_WARNING};
use std::collections::BTreeMap;
use std::path::Path;

/// How often a store halted on a full disk is reopened (once the data dir
/// is not full).
pub(crate) const STORE_RELOAD_MS: u64 = 2_000;

/// What the loop told of a halted store, and when it may reopen it.
#[derive(Debug, Default)]
pub(crate) struct StoreRecovery {
    /// The halt was logged (once per episode).
    told: bool,
    /// A failed reopen was logged (once per episode).
    reopen_told: bool,
    /// No reopen before this (mono ms).
    next_ms: u64,
    /// The disk watch's check count when the halt was told: a reopen waits
    /// for a later check that finds room (the halt may come before the
    /// watch saw the disk full; reopening then would only halt again).
    checks_at_halt: u64,
}

impl Daemon {
    /// Whether the store runs. A halted one is reported once; one halted on
    /// a full disk is reopened every [`STORE_RELOAD_MS`] once a disk check
    /// taken since the halt finds room (then a worker persists what it
    /// could not).
    pub(crate) fn recover_store(&mut self) -> bool {
        let Some(full) = self.store.halted() else {
            self.retry_persist_assignments();
            return true;
        };
        let now_ms = self.mono_ms();
        let (checks, still_full) = self.disk.lock().map(|w| (w.checks(), w.is_full())).unwrap_or((0, false));
        if !self.store_recovery.told {
            self.store_recovery =
                StoreRecovery { told: true, reopen_told: false, next_ms: now_ms + STORE_RELOAD_MS, checks_at_halt: checks };
            let why = self.store.halt_error().map(|e| e.to_string()).unwrap_or_default();
            if full {
                crate::log!("ERROR", "{why}: this node's state writes are refused until space is freed there, then it reopens its state");
            } else {
                crate::log!("ERROR", "{why}");
            }
        }
        if !full || still_full || checks <= self.store_recovery.checks_at_halt || now_ms < self.store_recovery.next_ms {
            return false;
        }
        self.store_recovery.next_ms = now_ms + STORE_RELOAD_MS;
        match self.store.reload() {
            Ok(()) => {
                crate::log!(
                    "INFO",
                    "the data dir {} takes writes again: this node's state reopened from disk",
                    self.cfg.data_dir.display()
                );
                self.store_recovery = StoreRecovery::default();
                self.resolve_outcomes();
                self.retry_persist_assignments();
                true
            }
            Err(e) => {
                if !self.store_recovery.reopen_told {
                    self.store_recovery.reopen_told = true;
                    crate::log!("WARN", "cannot reopen this node's state yet ({e}); retrying every {} s", STORE_RELOAD_MS / 1000);
                }
                false
            }
        }
    }

    /// This node's own rows in a `node ls` or `node inspect` reply carry
    /// its current full-disk warnings: a leader whose disk is full cannot
    /// commit them, and another node's reach the state only once its
    /// session reaches the leader again.
    pub(crate) fn own_disk_warnings(&self, reply: &mut Reply) {
        let now = self.disk.lock().map(|w| w.warnings()).unwrap_or_default();
        let fix = |n: &mut shoal_shared::types::Node| {
            if n.id == self.node_id {
                n.description.warnings.retain(|w| !WARNING_PREFIXES.iter().any(|p| w.starts_with(p)));
                n.description.warnings.extend(now.iter().cloned());
            }
        };
        match reply {
            Reply::Node(n) => fix(n),
            Reply::Nodes { nodes, .. } => nodes.iter_mut().for_each(fix),
            _ => {}
        }
    }
}

/// A filesystem with less free space than this (for root) is full.
pub(crate) const FULL_BELOW_BYTES: u64 = 1 << 20;
/// A full filesystem has space again once this much is free (hysteresis:
/// a disk hovering at the limit is not reported on every check).
pub(crate) const SPACE_AGAIN_BYTES: u64 = 2 << 20;

/// A data dir with less free space than this is low: the node still works,
/// but the autopilot does not make it a manager (a manager's raft log and
/// snapshots need room).
pub(crate) const LOW_BELOW_BYTES: u64 = 256 << 20;
/// A low filesystem is fine again once this much is free (hysteresis).
pub(crate) const LOW_AGAIN_BYTES: u64 = 320 << 20;
/// Available memory (`MemAvailable`) under this is low: not made a manager.
pub(crate) const MEMORY_LOW_BELOW_BYTES: u64 = 64 << 20;
/// Low memory is fine again from this much available (hysteresis).
pub(crate) const MEMORY_AGAIN_BYTES: u64 = 96 << 20;

/// What the prefixes of the warnings this module makes start with (a node's
/// own rows are refreshed with the current ones).
pub(crate) const WARNING_PREFIXES: [&str; 3] = [DISK_FULL_WARNING, DISK_LOW_WARNING, MEMORY_LOW_WARNING];

/// What `statvfs` says of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Space {
    /// Bytes root may still write.
    pub(crate) free_bytes: u64,
    pub(crate) total_bytes: u64,
    /// Free inodes; `None` where the filesystem does not count them.
    pub(crate) free_inodes: Option<u64>,
}

impl Space {
    fn is_full(&self) -> bool {
        self.free_bytes < FULL_BELOW_BYTES || self.free_inodes == Some(0)
    }

    fn has_room(&self) -> bool {
        self.free_bytes >= SPACE_AGAIN_BYTES && self.free_inodes != Some(0)
    }
}

/// One line for the daemon log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) level: &'static str,
    pub(crate) message: String,
}

/// Which watched directories are full now.
#[derive(Debug, Default)]
pub(crate) struct DiskWatch {
    full: BTreeMap<String, bool>,
    /// Filesystems low on space (not full), with hysteresis.
    low: BTreeMap<String, bool>,
    /// Available memory was low at the last measure, with hysteresis.
    memory_low: bool,
    /// Checks taken so far (a verdict newer than an event is one with a higher count).
    checks: u64,
}

impl DiskWatch {
    /// Whether any watched directory was full at the last check.
    pub(crate) fn is_full(&self) -> bool {
        self.full.values().any(|&f| f)
    }

    /// How many checks were taken.
    pub(crate) fn checks(&self) -> u64 {
        self.checks
    }

    /// The node's warnings for what is full now (its description carries
    /// them to `node inspect`).
    pub(crate) fn warnings(&self) -> Vec<String> {
        let full = |dir: &String| self.full.get(dir).copied().unwrap_or(false);
        let mut out: Vec<String> = self
            .full
            .iter()
            .filter(|(_, &f)| f)
            .map(|(dir, _)| format!("{DISK_FULL_WARNING} {dir} has under 1 MiB free: task output is dropped and this node's own writes may fail; free space there"))
            .collect();
        out.extend(self.low.iter().filter(|(dir, &l)| l && !full(dir)).map(|(dir, _)| {
            format!("{DISK_LOW_WARNING} {dir} has under {} free: the autopilot does not make this node a manager", bytes(LOW_BELOW_BYTES))
        }));
        if self.memory_low {
            out.push(format!(
                "{MEMORY_LOW_WARNING} under {} of memory available: the autopilot does not make this node a manager",
                bytes(MEMORY_LOW_BELOW_BYTES)
            ));
        }
        out
    }

    /// Takes one measure of available memory (`MemAvailable`); a failed
    /// measure changes nothing.
    pub(crate) fn check_memory(&mut self, available: Result<u64, String>) {
        let Ok(bytes) = available else { return };
        self.memory_low = if self.memory_low { bytes < MEMORY_AGAIN_BYTES } else { bytes < MEMORY_LOW_BELOW_BYTES };
    }

    /// Takes one measure per directory (named as the log says it, e.g.
    /// `data dir /var/lib/shoal`); returns the changes to report. A failed
    /// measure changes nothing (it is not a verdict on the disk).
    pub(crate) fn check(&mut self, measured: &[(String, Result<Space, String>)]) -> Vec<Report> {
        self.checks += 1;
        let mut out = Vec::new();
        for (dir, space) in measured {
            let Ok(s) = space else { continue };
            let was = self.full.get(dir).copied().unwrap_or(false);
            let now = if was { !s.has_room() } else { s.is_full() };
            if now != was {
                out.push(if now {
                    let what =
                        if s.free_inodes == Some(0) { "no inodes left".to_string() } else { format!("{} free", bytes(s.free_bytes)) };
                    Report {
                        level: "WARN",
                        message: format!(
                            "{dir} is full ({what} of {}): task output is dropped (counted in the task logs) until space is freed",
                            bytes(s.total_bytes)
                        ),
                    }
                } else {
                    Report {
                        level: "INFO",
                        message: format!("{dir} has space again ({} free of {})", bytes(s.free_bytes), bytes(s.total_bytes)),
                    }
                });
            }
            self.full.insert(dir.clone(), now);
            let was_low = self.low.get(dir).copied().unwrap_or(false);
            let low = if was_low { s.free_bytes < LOW_AGAIN_BYTES } else { s.free_bytes < LOW_BELOW_BYTES };
            self.low.insert(dir.clone(), low);
        }
        out
    }
}

/// A byte count as people read it: `512 KiB`, `3.5 MiB`.
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match n {
        n if n >= GIB => format!("{:.1} GiB", n as f64 / GIB as f64),
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= KIB => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// Measures each directory's filesystem, once per filesystem (the first
/// directory named on it stands for it); `dirs` are `(what, path)`.
pub(crate) fn probe(dirs: &[(&str, &Path)]) -> Vec<(String, Result<Space, String>)> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (what, dir) in dirs {
        let dev = std::fs::metadata(dir).map(|m| m.dev()).ok();
        if dev.is_some() && seen.contains(&dev) {
            continue;
        }
        seen.push(dev);
        out.push((format!("{what} {}", dir.display()), statvfs(dir)));
    }
    out
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub(crate) fn mem_available() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    parse_mem_available(&text).ok_or_else(|| "no MemAvailable line in /proc/meminfo".to_string())
}

fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.trim_start_matches("MemAvailable:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

pub(crate) fn statvfs(dir: &Path) -> Result<Space, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| format!("{}: path has a NUL byte", dir.display()))?;
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!("statvfs {}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as u64;
    Ok(Space {
        free_bytes: (st.f_bfree as u64).saturating_mul(frsize),
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_inodes: (st.f_files > 0).then_some(st.f_ffree as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(free_bytes: u64) -> Space {
        Space { free_bytes, total_bytes: 8 << 20, free_inodes: Some(100) }
    }

    #[test]
    fn a_full_disk_is_reported_once_per_episode() {
        let dir = "data dir /data".to_string();
        let mut w = DiskWatch::default();
        let at = |s: Space| vec![(dir.clone(), Ok::<_, String>(s))];
        assert!(w.check(&at(space(5 << 20))).is_empty());
        let r = w.check(&at(space(0)));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].level, "WARN");
        assert_eq!(
            r[0].message,
            "data dir /data is full (0 bytes free of 8.0 MiB): task output is dropped (counted in the task logs) until space is freed"
        );
        assert!(w.is_full());
        assert!(w.check(&at(space(1000))).is_empty(), "still full: no new line");
        assert!(w.check(&at(space(FULL_BELOW_BYTES + 1))).is_empty(), "hysteresis: not yet room");
        assert!(w.check(&[(dir.clone(), Err("statvfs failed".into()))]).is_empty(), "a failed measure is no verdict");
        let r = w.check(&at(space(SPACE_AGAIN_BYTES)));
        assert_eq!(r, [Report { level: "INFO", message: "data dir /data has space again (2.0 MiB free of 8.0 MiB)".into() }]);
        assert!(!w.is_full());
        assert!(w.check(&at(space(SPACE_AGAIN_BYTES))).is_empty());
    }

    #[test]
    fn low_space_and_low_memory_are_warnings_with_hysteresis() {
        let mut w = DiskWatch::default();
        let dir = "data dir /d".to_string();
        let at = |free: u64| vec![(dir.clone(), Ok::<_, String>(Space { free_bytes: free, total_bytes: 1 << 40, free_inodes: None }))];
        assert!(w.check(&at(LOW_BELOW_BYTES)).is_empty());
        assert!(w.warnings().is_empty());
        assert!(w.check(&at(LOW_BELOW_BYTES - 1)).is_empty(), "low is a warning, not a log line");
        assert_eq!(w.warnings(), ["disk low: data dir /d has under 256.0 MiB free: the autopilot does not make this node a manager"]);
        w.check(&at(LOW_AGAIN_BYTES - 1));
        assert_eq!(w.warnings().len(), 1, "hysteresis");
        w.check(&at(0));
        assert!(w.warnings()[0].starts_with("disk full: data dir /d"), "full says it all: {:?}", w.warnings());
        assert_eq!(w.warnings().len(), 1);
        w.check(&at(LOW_AGAIN_BYTES));
        assert!(w.warnings().is_empty());
        w.check_memory(Ok(MEMORY_LOW_BELOW_BYTES - 1));
        assert_eq!(w.warnings(), ["memory low: under 64.0 MiB of memory available: the autopilot does not make this node a manager"]);
        w.check_memory(Err("no /proc".into()));
        w.check_memory(Ok(MEMORY_AGAIN_BYTES - 1));
        assert_eq!(w.warnings().len(), 1, "a failed measure and hysteresis keep it");
        w.check_memory(Ok(MEMORY_AGAIN_BYTES));
        assert!(w.warnings().is_empty());
        assert_eq!(parse_mem_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n"), Some(2 << 20));
        assert_eq!(parse_mem_available("MemTotal: 100 kB\n"), None);
        assert!(mem_available().is_ok_and(|b| b > 0), "this machine has a /proc/meminfo");
    }

    #[test]
    fn running_out_of_inodes_is_full_too() {
        let mut w = DiskWatch::default();
        let s = Space { free_bytes: 1 << 30, total_bytes: 2 << 30, free_inodes: Some(0) };
        let r = w.check(&[("data dir /d".to_string(), Ok(s))]);
        assert!(r[0].message.starts_with("data dir /d is full (no inodes left of 2.0 GiB)"), "{}", r[0].message);
        // Filesystems that count no inodes are judged by bytes alone.
        let mut w = DiskWatch::default();
        assert!(w.check(&[("data dir /d".to_string(), Ok(Space { free_inodes: None, ..s }))]).is_empty());
    }

    #[test]
    fn probe_measures_each_filesystem_once() {
        let tmp = std::env::temp_dir();
        let sub = tmp.join(format!("shoal-disk-probe-{}", std::process::id()));
        std::fs::create_dir_all(&sub).unwrap();
        let r = probe(&[("data dir", &tmp), ("task log dir", &sub)]);
        assert_eq!(r.len(), 1, "same filesystem");
        assert_eq!(r[0].0, format!("data dir {}", tmp.display()));
        let s = r[0].1.as_ref().unwrap();
        assert!(s.total_bytes > 0 && s.free_bytes <= s.total_bytes);
        let _ = std::fs::remove_dir(&sub);
    }
}
