//! The task-log directory, the one owner of its layout: `DATA_DIR/logs/`
//! holds `TASKID.log` (what the task's log driver, `shoal log-driver` run
//! by the runtime's shim, appends the task's output to; see
//! [`crate::logdriver`]) and `TASKID.log.1` (the previous one, kept by
//! rotation).
//!
//! [`TaskLogs`] turns a task id into a path only after checking that it is
//! an id (ids come from the network and from other nodes' assignments), and
//! is the only code that names these files: the start spec's log path, the
//! reads behind `service logs` (local and for other managers), rotation,
//! the sweep of logs whose task is gone, and removal with the container.
//!
//! Everything here does blocking file I/O: the daemon runs it off its event
//! loop (runtime slots or `smol::unblock`), except creating the directory
//! at start.

use super::log_gather::LogsRead;
use shoal_shared::api::{LogChunk, LogCursor};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A task log grows to this size before it is rotated (one old file kept).
pub(crate) const LOG_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// A log of an unknown task is deleted once untouched this long.
const ORPHAN_LOG_IDLE_MS: u64 = 60_000;
/// Log bytes returned per task per request.
const LOG_CHUNK_BYTES_MAX: u64 = 256 * 1024;
/// How far back `--tail` looks for line starts.
const LOG_TAIL_SCAN_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Longest task id accepted in a log request (ids are 25 characters).
const TASK_ID_BYTES_MAX: usize = 64;
/// The directory under the data dir.
const LOGS_DIR: &str = "logs";
/// The suffix of a task's current log, and of its rotated one.
const LOG_SUFFIX: &str = ".log";
const ROTATED_SUFFIX: &str = ".log.1";

/// A string that is not a task id where a task's log path was wanted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task id {0:?}: task ids are 1 to {TASK_ID_BYTES_MAX} lowercase letters and digits")]
pub(crate) struct BadTaskId(String);

/// The task-log directory of one data dir.
#[derive(Clone, Debug)]
pub(crate) struct TaskLogs {
    dir: PathBuf,
}

impl TaskLogs {
    pub(crate) fn new(data_dir: &Path) -> TaskLogs {
        TaskLogs { dir: data_dir.join(LOGS_DIR) }
    }

    /// The directory itself (`DATA_DIR/logs`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (at daemon start).
    pub(crate) fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)
    }

    /// The log a task's output is appended to, `logs/TASKID.log`.
    pub(crate) fn path(&self, task_id: &str) -> Result<PathBuf, BadTaskId> {
        self.file(task_id, LOG_SUFFIX)
    }

    /// The previous log, kept by rotation, `logs/TASKID.log.1`.
    fn rotated_path(&self, task_id: &str) -> Result<PathBuf, BadTaskId> {
        self.file(task_id, ROTATED_SUFFIX)
    }

    fn file(&self, task_id: &str, suffix: &str) -> Result<PathBuf, BadTaskId> {
        if !is_task_id(task_id) {
            return Err(BadTaskId(task_id.to_string()));
        }
        Ok(self.dir.join(format!("{task_id}{suffix}")))
    }

    /// Deletes a task's logs (with its container, once the state no longer has the task).
    pub(crate) fn remove(&self, task_id: &str) {
        for p in [self.path(task_id), self.rotated_path(task_id)].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Reads this node's task logs for `service logs`, the one reader behind
    /// both a manager's own tasks and a [`shoal_shared::wire::Wire::LogsRequest`]:
    /// for each task, the bytes after its `cursor` offset, else from the start of
    /// its last `tail_lines` lines, else from its start (also when the cursor
    /// is past the end: the log was rotated); at most `LOG_CHUNK_BYTES_MAX` per
    /// task and `bytes_max` in all. A chunk cut by a
    /// bound ends after its last newline when it has one (the next read starts
    /// on a line), and `more` is set. Tasks without a log file get no cursor;
    /// ids that are not task ids are skipped (they come from the network and
    /// become paths). Chunks carry no source: the manager names tasks.
    pub(crate) fn read(&self, task_ids: &[String], tail_lines: Option<u64>, cursor: &[LogCursor], bytes_max: u64) -> LogsRead {
        let offsets: BTreeMap<&str, u64> = cursor.iter().map(|c| (c.task_id.as_str(), c.offset)).collect();
        let mut out = LogsRead::default();
        let mut left = bytes_max;
        for id in task_ids {
            let Ok(path) = self.path(id) else { continue };
            if left == 0 {
                out.more = true;
                break;
            }
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let start = match (offsets.get(id.as_str()), tail_lines) {
                // A cursor past the end: the log was rotated since, read its new start.
                (Some(&o), _) if o > len => 0,
                (Some(&o), _) => o,
                (None, Some(n)) => tail_start(&mut f, len, n),
                (None, None) => 0,
            };
            let want = (len - start).min(LOG_CHUNK_BYTES_MAX).min(left);
            let mut data = Vec::new();
            if f.seek(SeekFrom::Start(start)).is_ok() {
                let _ = (&mut f).take(want).read_to_end(&mut data);
            }
            if start + (data.len() as u64) < len {
                out.more = true;
                match data.iter().rposition(|&b| b == b'\n') {
                    Some(end) => data.truncate(end + 1),
                    // A partial line in what is left of the budget waits for a
                    // fresh budget; only a line longer than a whole one is cut.
                    None if (data.len() as u64) < LOG_CHUNK_BYTES_MAX.min(bytes_max) => data.clear(),
                    None => {}
                }
            }
            left -= data.len() as u64;
            out.cursor.push(LogCursor { task_id: id.clone(), offset: start + data.len() as u64 });
            if !data.is_empty() {
                out.chunks.push(LogChunk { task_id: id.clone(), source: String::new(), data });
            }
        }
        out
    }

    /// Tidies task logs: deletes those of tasks the state no longer has
    /// (`TASKID.log` and `TASKID.log.1`), and rotates every log over `bytes_max`:
    /// the file is copied to `TASKID.log.1` (replacing the previous one) and
    /// truncated in place, because the runtime's shim keeps writing with
    /// `O_APPEND` to the path it opened. Returns how many logs were rotated.
    pub(crate) fn rotate(&self, known: &BTreeSet<String>, bytes_max: u64) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut rotated = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let (id, current) = match (name.strip_suffix(ROTATED_SUFFIX), name.strip_suffix(LOG_SUFFIX)) {
                (Some(id), _) => (id, false),
                (None, Some(id)) => (id, true),
                (None, None) => continue,
            };
            let Ok(path) = self.file(id, if current { LOG_SUFFIX } else { ROTATED_SUFFIX }) else { continue };
            if !known.contains(id) {
                // `known` may be older than a task that just started: only
                // files untouched for a while are orphans. A time ahead of the
                // clock is as far from now (the clock stepped back: a device
                // without an RTC that booted in 1970 and set its time since,
                // then rebooted) and would otherwise keep the file for months.
                let modified = e.metadata().and_then(|m| m.modified()).ok();
                let idle = modified.map(|t| t.elapsed().unwrap_or_else(|ahead| ahead.duration()));
                if idle.is_some_and(|d| d >= std::time::Duration::from_millis(ORPHAN_LOG_IDLE_MS)) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if !current || e.metadata().map(|m| m.len()).unwrap_or(0) <= bytes_max {
                continue;
            }
            let Ok(old) = self.rotated_path(id) else { continue };
            if std::fs::copy(&path, &old).is_ok() && std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(0)).is_ok()
            {
                rotated += 1;
            }
        }
        rotated
    }
}

/// Whether `id` looks like a task id (object ids: lowercase base36), so it
/// is safe as a file name.
fn is_task_id(id: &str) -> bool {
    (1..=TASK_ID_BYTES_MAX).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}
/// Offset where the last `lines` lines of a file begin.
fn tail_start(f: &mut std::fs::File, len: u64, lines: u64) -> u64 {
    let scan = len.min(LOG_TAIL_SCAN_BYTES_MAX);
    let from = len - scan;
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.take(scan).read_to_end(&mut buf).is_err() {
        return 0;
    }
    if lines == 0 {
        return len;
    }
    // Skip a trailing newline so it does not count as an empty last line.
    let body = if buf.last() == Some(&b'\n') { &buf[..buf.len() - 1] } else { &buf[..] };
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == lines {
                return from + i as u64 + 1;
            }
        }
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh data dir with its task-log directory.
    fn scratch(name: &str) -> (PathBuf, TaskLogs) {
        let data = std::env::temp_dir().join(format!("shoal-task-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let logs = TaskLogs::new(&data);
        logs.create().unwrap();
        (data, logs)
    }

    #[test]
    fn paths_are_for_task_ids_only() {
        let logs = TaskLogs::new(Path::new("/data"));
        assert_eq!(logs.path("abc123"), Ok(PathBuf::from("/data/logs/abc123.log")));
        assert_eq!(logs.rotated_path("abc123"), Ok(PathBuf::from("/data/logs/abc123.log.1")));
        for bad in ["../etc/passwd", "a/b", "", "ABC", "a.log", &"a".repeat(TASK_ID_BYTES_MAX + 1)] {
            assert_eq!(logs.path(bad), Err(BadTaskId(bad.to_string())), "{bad:?}");
        }
        assert!(logs.path(&"a".repeat(TASK_ID_BYTES_MAX)).is_ok());
    }

    #[test]
    fn remove_deletes_both_files_of_one_task() {
        let (data, logs) = scratch("remove");
        for f in ["a.log", "a.log.1", "b.log"] {
            std::fs::write(logs.dir.join(f), b"x").unwrap();
        }
        logs.remove("a");
        logs.remove("../b");
        assert!(!logs.dir.join("a.log").exists() && !logs.dir.join("a.log.1").exists());
        assert!(logs.dir.join("b.log").exists());
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn big_logs_rotate_and_small_ones_stay() {
        let (data, logs) = scratch("rotate");
        let dir = logs.dir.clone();
        std::fs::write(dir.join("a.log"), vec![b'x'; 100]).unwrap();
        std::fs::write(dir.join("b.log"), b"small").unwrap();
        std::fs::write(dir.join("c.txt"), vec![b'x'; 100]).unwrap();
        let known: std::collections::BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for f in ["gone.log", "gone.log.1"] {
            std::fs::write(dir.join(f), b"old task").unwrap();
            std::fs::File::options().write(true).open(dir.join(f)).unwrap().set_modified(old).unwrap();
        }
        // Written before the clock stepped back a month.
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(30 * 86_400);
        std::fs::write(dir.join("ahead.log"), b"old task").unwrap();
        std::fs::File::options().write(true).open(dir.join("ahead.log")).unwrap().set_modified(ahead).unwrap();
        std::fs::write(dir.join("fresh.log"), b"a task that started after `known` was taken").unwrap();
        assert_eq!(logs.rotate(&known, 50), 1);
        assert!(!dir.join("gone.log").exists() && !dir.join("gone.log.1").exists(), "logs of deleted tasks go");
        assert!(!dir.join("ahead.log").exists(), "a log stamped ahead of a clock that stepped back goes too");
        assert!(dir.join("fresh.log").exists(), "a fresh unknown log stays");
        assert_eq!(std::fs::metadata(dir.join("a.log")).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(dir.join("a.log.1")).unwrap().len(), 100);
        assert_eq!(std::fs::read(dir.join("b.log")).unwrap(), b"small");
        assert_eq!(std::fs::metadata(dir.join("c.txt")).unwrap().len(), 100, "only task logs");
        assert_eq!(logs.rotate(&known, 50), 0);
        assert!(dir.join("a.log.1").exists());
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn tail_finds_line_starts() {
        let dir = std::env::temp_dir().join(format!("shoal-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        assert_eq!(tail_start(&mut f, 6, 1), 4);
        assert_eq!(tail_start(&mut f, 6, 2), 2);
        assert_eq!(tail_start(&mut f, 6, 9), 0);
        assert_eq!(tail_start(&mut f, 6, 0), 6);
    }

    #[test]
    fn log_reads_follow_cursors_tails_and_bounds() {
        let (data, logs) = scratch("read-logs");
        let dir = logs.dir.clone();
        std::fs::write(dir.join("a.log"), "a1\na2\na3\n").unwrap();
        std::fs::write(dir.join("b.log"), "b1\nb2\n").unwrap();
        std::fs::write(dir.join("secret"), "not a log").unwrap();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cur = |v: &[(&str, u64)]| v.iter().map(|(t, o)| LogCursor { task_id: t.to_string(), offset: *o }).collect::<Vec<_>>();
        let text =
            |r: &LogsRead| r.chunks.iter().map(|c| format!("{}:{}", c.task_id, String::from_utf8_lossy(&c.data))).collect::<Vec<_>>();
        // Everything, then only what follows the cursor; a missing log gets no cursor.
        let r = logs.read(&ids(&["a", "b", "none"]), None, &[], LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["a:a1\na2\na3\n", "b:b1\nb2\n"]);
        assert_eq!(r.cursor, cur(&[("a", 9), ("b", 6)]));
        assert!(!r.more && r.chunks.iter().all(|c| c.source.is_empty()));
        let r = logs.read(&ids(&["a", "b"]), Some(1), &cur(&[("a", 6), ("b", 6)]), LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["a:a3\n"], "cursors win over the tail");
        assert_eq!(r.cursor, cur(&[("a", 9), ("b", 6)]));
        // A cursor past the end means the log was rotated (truncated): its new lines are read from the start.
        let r = logs.read(&ids(&["b"]), None, &cur(&[("b", 99)]), LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["b:b1\nb2\n"]);
        // The tail applies to tasks without a cursor.
        let r = logs.read(&ids(&["a"]), Some(2), &[], LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["a:a2\na3\n"]);
        // A budget cut ends on a line, leaves the rest for the next read and says so.
        let r = logs.read(&ids(&["a", "b"]), None, &[], 5);
        assert_eq!(text(&r), ["a:a1\n"]);
        assert_eq!(r.cursor, cur(&[("a", 3), ("b", 0)]));
        assert!(r.more);
        let r = logs.read(&ids(&["a", "b"]), None, &cur(&[("a", 3)]), 6);
        assert_eq!(text(&r), ["a:a2\na3\n"]);
        assert!(r.more, "b was not read");
        // Ids from the network never escape the logs dir.
        let r = logs.read(&ids(&["../secret", "secret", "A", "", &"a".repeat(65)]), None, &[], LOG_CHUNK_BYTES_MAX);
        assert_eq!(r, LogsRead::default());
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn a_line_longer_than_the_budget_is_cut_anyway() {
        let (data, logs) = scratch("read-long");
        let dir = logs.dir.clone();
        std::fs::write(dir.join("l.log"), "x".repeat(100)).unwrap();
        let r = logs.read(&["l".to_string()], None, &[], 40);
        assert_eq!((r.chunks[0].data.len(), r.cursor[0].offset, r.more), (40, 40, true), "progress even without a newline");
        let _ = std::fs::remove_dir_all(&data);
    }
}
