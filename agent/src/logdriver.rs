//! The task-output log driver, `shoal log-driver LOG_PATH`: the process
//! containerd's runc shim starts for each task (containerd's `binary://`
//! logging, see `shoal_containerd::ContainerSpec::log_driver`) to copy the
//! task's stdout and stderr into its log file. It owns one guarantee: a
//! task never blocks on its output.
//!
//! The shim hands over the task's stdout and stderr pipes as fds 3 and 4
//! and waits for one byte (or EOF) on fd 5 before it starts the task. The
//! driver reads both pipes all the time and appends whole lines to
//! `LOG_PATH` (a line longer than [`LINE_BYTES_MAX`] is written in pieces).
//! When a write fails (no space left, quota, I/O error) it drops output and
//! counts it, tries the file again every [`RETRY_MS`], and once a write
//! succeeds appends one marker line ([`Drops::marker`]) before going on.
//!
//! It runs as a child of the shim, independent of the daemon (which may be
//! restarted or killed meanwhile). Memory stays bounded: one line buffer per
//! stream. The daemon's rotation (copy, then truncate in place) works with
//! the `O_APPEND` file it keeps open; a log file deleted or replaced under
//! it is reopened by path within [`REOPEN_CHECK_MS`]. At SIGTERM (the shim
//! sends it after the task is deleted and the pipes are closed) it copies
//! what is left, up to [`DRAIN_MS`], and exits.
//!
//! [`Drops`] and [`LineBuf`] are the sans-IO core (time is a parameter, the
//! file is any [`Write`]); [`run`] is the shell around `poll(2)`.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest line kept whole; a longer one is written in pieces this long.
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// How often a failing log file is tried again while output is dropped.
pub const RETRY_MS: u64 = 1_000;
/// How often the log path is checked for having been deleted or replaced.
const REOPEN_CHECK_MS: u64 = 1_000;
/// A partial line (no newline yet) is written once it is this old.
const PARTIAL_FLUSH_MS: u64 = 1_000;
/// How long output is still copied after SIGTERM.
const DRAIN_MS: u64 = 2_000;
/// The fds containerd's shim passes: the task's stdout, its stderr and the
/// pipe to say ready on.
const SHIM_FDS: [i32; 3] = [3, 4, 5];

/// Output dropped since the last successful write, and when to try again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drops {
    lines: u64,
    bytes: u64,
    /// Why the last write failed (lowercase, as the marker says it).
    reason: String,
    retry_at_ms: u64,
    /// The file ends in the middle of a line (a write that failed part way):
    /// the marker starts on a new line.
    cut: bool,
}

impl Drops {
    /// Whether nothing is dropped (no marker owed).
    pub fn is_clear(&self) -> bool {
        self.lines == 0 && self.bytes == 0 && !self.cut
    }

    /// Whether a write may be tried at `now_ms`: always, unless output is
    /// being dropped and the retry is not due.
    pub fn may_write(&self, now_ms: u64) -> bool {
        self.is_clear() || now_ms >= self.retry_at_ms
    }

    /// The line written before the next line once writes succeed again:
    /// `[shoal: N lines (B bytes) of output dropped: REASON]`.
    pub fn marker(&self) -> Option<String> {
        if self.is_clear() {
            return None;
        }
        let lines = if self.lines == 1 { "1 line".to_string() } else { format!("{} lines", self.lines) };
        let nl = if self.cut { "\n" } else { "" };
        Some(format!("{nl}[shoal: {lines} ({} bytes) of output dropped: {}]\n", self.bytes, self.reason))
    }

    /// Counts a line (or the unwritten rest of one) as dropped.
    fn count(&mut self, bytes: usize) {
        self.lines += 1;
        self.bytes += bytes as u64;
    }

    /// A write failed at `now_ms`: the next try waits [`RETRY_MS`].
    fn failed(&mut self, e: &std::io::Error, now_ms: u64) {
        self.reason = reason(e);
        self.retry_at_ms = now_ms.saturating_add(RETRY_MS);
    }

    /// Writes one line (with its newline; or a piece of a long line) to
    /// `out`, preceded by the marker when output was dropped; or, when the
    /// file fails or a retry is not due, counts it as dropped.
    pub fn emit(&mut self, line: &[u8], now_ms: u64, out: Option<&mut impl Write>) {
        let Some(out) = out.filter(|_| self.may_write(now_ms)) else {
            self.count(line.len());
            return;
        };
        if let Some(m) = self.marker() {
            if let Err((written, e)) = write_once(out, m.as_bytes()) {
                self.cut |= written > 0;
                self.failed(&e, now_ms);
                self.count(line.len());
                return;
            }
            *self = Drops::default();
        }
        if let Err((written, e)) = write_once(out, line) {
            self.cut = written > 0;
            self.failed(&e, now_ms);
            self.count(line.len() - written);
        }
    }

    /// Writes the marker alone when a retry is due (a task gone quiet still
    /// gets its marker once the file takes writes again).
    pub fn retry(&mut self, now_ms: u64, out: Option<&mut impl Write>) {
        let (Some(out), Some(m)) = (out, self.marker()) else { return };
        if !self.may_write(now_ms) {
            return;
        }
        match write_once(out, m.as_bytes()) {
            Ok(()) => *self = Drops::default(),
            Err((written, e)) => {
                self.cut |= written > 0;
                self.failed(&e, now_ms);
            }
        }
    }

    /// Records that the file could not be opened at `now_ms`.
    pub fn open_failed(&mut self, e: &std::io::Error, now_ms: u64) {
        self.failed(e, now_ms);
        // Nothing is owed yet when nothing was dropped: the marker comes with the first dropped line.
    }
}

/// Writes all of `data` with as many `write` calls as it takes; on failure
/// returns how much was written and the error.
fn write_once(out: &mut impl Write, data: &[u8]) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    while done < data.len() {
        match out.write(&data[done..]) {
            Ok(0) => return Err((done, std::io::Error::from(std::io::ErrorKind::WriteZero))),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

/// An I/O error as the marker says it: `no space left on device`.
fn reason(e: &std::io::Error) -> String {
    // The usual ones in fixed words: strerror differs between C libraries
    // (glibc "Disk quota exceeded", musl "Quota exceeded"), and the static
    // binaries of some architectures use each.
    match e.raw_os_error() {
        Some(libc::ENOSPC) => return "no space left on device".into(),
        Some(libc::EDQUOT) => return "disk quota exceeded".into(),
        Some(libc::EIO) => return "input/output error".into(),
        Some(libc::EROFS) => return "read-only file system".into(),
        _ => {}
    }
    let s = e.to_string();
    let s = match s.find(" (os error ") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => "write failed".to_string(),
    }
}

/// One stream's bytes split into lines, in a buffer of [`LINE_BYTES_MAX`].
pub struct LineBuf {
    buf: Box<[u8]>,
    len: usize,
    /// When the partial line now in the buffer started (mono ms), if any.
    partial_since_ms: Option<u64>,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf { buf: vec![0; LINE_BYTES_MAX].into_boxed_slice(), len: 0, partial_since_ms: None }
    }
}

impl LineBuf {
    /// The free part of the buffer, to read into (never empty after [`LineBuf::lines`]).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// `n` bytes were read into [`LineBuf::spare`] at `now_ms`: hands every
    /// complete line (with its newline) to `f`, and a full buffer without
    /// one as a piece; keeps the partial rest.
    pub fn lines(&mut self, n: usize, now_ms: u64, mut f: impl FnMut(&[u8])) {
        self.len = (self.len + n).min(self.buf.len());
        let mut start = 0;
        while let Some(i) = self.buf[start..self.len].iter().position(|&b| b == b'\n') {
            f(&self.buf[start..start + i + 1]);
            start += i + 1;
        }
        if start == 0 && self.len == self.buf.len() {
            f(&self.buf[..self.len]);
            start = self.len;
        }
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
        self.partial_since_ms = match (self.len, start) {
            (0, _) => None,
            (_, 0) => self.partial_since_ms.or(Some(now_ms)),
            _ => Some(now_ms),
        };
    }

    /// Hands the partial line to `f` when it waited [`PARTIAL_FLUSH_MS`]
    /// (or at once with `force`: end of stream).
    pub fn flush(&mut self, now_ms: u64, force: bool, f: impl FnOnce(&[u8])) {
        let due = self.partial_since_ms.is_some_and(|t| now_ms.saturating_sub(t) >= PARTIAL_FLUSH_MS);
        if self.len > 0 && (force || due) {
            f(&self.buf[..self.len]);
            self.len = 0;
            self.partial_since_ms = None;
        }
    }
}

/// Set by the SIGTERM handler.
static TERMINATING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATING.store(true, Ordering::Relaxed);
}

/// A failure to start: the driver was not run by containerd's shim.
#[derive(Debug, thiserror::Error)]
#[error("the log driver is run by containerd's shim, with the task's stdout and stderr on fds 3 and 4 and its ready pipe on fd 5 (fd {0} is not open)")]
pub struct NotFromShim(i32);

/// The log file and when it was last checked against its path.
struct LogFile {
    file: Option<std::fs::File>,
    checked_at_ms: u64,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path)
    }

    /// Reopens the file when the path names another file (or none: it was
    /// deleted) or when it is not open; at most every [`REOPEN_CHECK_MS`].
    fn check(&mut self, path: &Path, now_ms: u64, drops: &mut Drops) {
        if self.file.is_some() && now_ms.saturating_sub(self.checked_at_ms) < REOPEN_CHECK_MS {
            return;
        }
        if self.file.is_none() && !drops.may_write(now_ms) {
            return;
        }
        self.checked_at_ms = now_ms;
        let same = match (&self.file, std::fs::metadata(path)) {
            (Some(f), Ok(p)) => f.metadata().is_ok_and(|m| m.dev() == p.dev() && m.ino() == p.ino()),
            _ => false,
        };
        if !same {
            match LogFile::open(path) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.file = None;
                    drops.open_failed(&e, now_ms);
                }
            }
        }
    }
}

/// Monotonic milliseconds since the driver started.
fn mono_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs the driver until both streams end (or [`DRAIN_MS`] after SIGTERM).
pub fn run(path: &Path) -> Result<(), NotFromShim> {
    for fd in SHIM_FDS {
        // SAFETY: F_GETFD only queries a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(NotFromShim(fd));
        }
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: the shim passed these fds to this process for it alone; each is owned once here.
    let [stdout, stderr, ready] = SHIM_FDS.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    let start = std::time::Instant::now();
    let mut drops = Drops::default();
    let mut log = LogFile { file: None, checked_at_ms: 0 };
    log.check(path, 0, &mut drops);
    // Ready: the shim starts the task once it reads this byte (or EOF).
    let _ = (&ready).write_all(&[0]);
    drop(ready);

    let mut streams = [(stdout, LineBuf::default(), true), (stderr, LineBuf::default(), true)];
    let mut term_at_ms = None;
    loop {
        let now = mono_ms(start);
        if term_at_ms.is_none() && TERMINATING.load(Ordering::Relaxed) {
            term_at_ms = Some(now);
        }
        let open = streams.iter().filter(|s| s.2).count();
        if open == 0 || term_at_ms.is_some_and(|t| now.saturating_sub(t) >= DRAIN_MS) {
            break;
        }
        let mut fds: Vec<libc::pollfd> =
            streams.iter().map(|s| libc::pollfd { fd: if s.2 { s.0.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 }).collect();
        let timeout_ms = if term_at_ms.is_some() { 100 } else { 1_000 };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        let now = mono_ms(start);
        log.check(path, now, &mut drops);
        if rc > 0 {
            for (s, p) in streams.iter_mut().zip(&fds) {
                if !s.2 || p.revents == 0 {
                    continue;
                }
                match std::io::Read::read(&mut s.0, s.1.spare()) {
                    Ok(0) => {
                        s.1.flush(now, true, |l| drops.emit(l, now, log.file.as_mut()));
                        s.2 = false;
                    }
                    Ok(n) => s.1.lines(n, now, |l| drops.emit(l, now, log.file.as_mut())),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => {}
                    Err(_) => s.2 = false,
                }
            }
        }
        for s in streams.iter_mut() {
            s.1.flush(now, false, |l| drops.emit(l, now, log.file.as_mut()));
        }
        drops.retry(now, log.file.as_mut());
    }
    let now = mono_ms(start);
    for s in streams.iter_mut() {
        s.1.flush(now, true, |l| drops.emit(l, now, log.file.as_mut()));
    }
    drops.retry(now.saturating_add(RETRY_MS), log.file.as_mut());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// A file that takes `room` more bytes, then fails with ENOSPC.
    #[derive(Default)]
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(d: &Disk) -> String {
        String::from_utf8_lossy(&d.data).into_owned()
    }

    #[test]
    fn lines_are_split_kept_partial_and_cut_when_too_long() {
        let mut b = LineBuf::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let input = b"one\ntwo\nthr";
        b.spare()[..input.len()].copy_from_slice(input);
        b.lines(input.len(), 10, |l| got.push(l.to_vec()));
        assert_eq!(got, [b"one\n".to_vec(), b"two\n".to_vec()]);
        b.spare()[..3].copy_from_slice(b"ee\n");
        b.lines(3, 20, |l| got.push(l.to_vec()));
        assert_eq!(got[2], b"three\n");
        // A partial line waits for its newline, then goes out alone once old enough.
        b.spare()[..4].copy_from_slice(b"wait");
        b.lines(4, 100, |l| got.push(l.to_vec()));
        b.flush(100 + PARTIAL_FLUSH_MS - 1, false, |l| got.push(l.to_vec()));
        assert_eq!(got.len(), 3);
        b.flush(100 + PARTIAL_FLUSH_MS, false, |l| got.push(l.to_vec()));
        assert_eq!(got[3], b"wait");
        // A line longer than the buffer comes out in buffer-sized pieces.
        got.clear();
        let spare = b.spare().len();
        assert_eq!(spare, LINE_BYTES_MAX);
        b.spare().fill(b'x');
        b.lines(spare, 200, |l| got.push(l.to_vec()));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), LINE_BYTES_MAX);
        b.spare()[..2].copy_from_slice(b"y\n");
        b.lines(2, 200, |l| got.push(l.to_vec()));
        assert_eq!(got[1], b"y\n");
        b.flush(10_000, true, |_| panic!("nothing left"));
    }

    #[test]
    fn a_full_file_drops_and_counts_then_marks_the_gap() {
        let mut d = Drops::default();
        let mut disk = Disk { room: 8, ..Disk::default() };
        d.emit(b"aaaa\n", 0, Some(&mut disk));
        // Half of this line fits: the rest is dropped, the file ends mid-line.
        d.emit(b"bbbbbb\n", 1, Some(&mut disk));
        d.emit(b"cc\n", 2, Some(&mut disk));
        assert_eq!(text(&disk), "aaaa\nbbb");
        assert_eq!((d.lines, d.bytes, d.cut), (2, 7, true));
        assert_eq!(d.reason, "no space left on device");
        // Before the retry is due nothing is tried; after it, still full: counted.
        disk.room = 1000;
        d.emit(b"dd\n", 1 + RETRY_MS - 1, Some(&mut disk));
        assert_eq!(text(&disk), "aaaa\nbbb");
        disk.room = 0;
        d.emit(b"ee\n", 1 + RETRY_MS, Some(&mut disk));
        assert_eq!((d.lines, d.bytes), (4, 13));
        // Space again: one marker on its own line, then the output.
        disk.room = 1000;
        d.emit(b"ff\n", 1 + 2 * RETRY_MS, Some(&mut disk));
        assert_eq!(text(&disk), "aaaa\nbbb\n[shoal: 4 lines (13 bytes) of output dropped: no space left on device]\nff\n");
        assert!(d.is_clear());
        d.emit(b"gg\n", 1 + 2 * RETRY_MS, Some(&mut disk));
        assert!(text(&disk).ends_with("ff\ngg\n"));
    }

    #[test]
    fn no_file_drops_and_a_quiet_task_still_gets_its_marker() {
        let mut d = Drops::default();
        d.open_failed(&std::io::Error::from_raw_os_error(libc::EDQUOT), 0);
        assert!(d.is_clear(), "nothing owed before output is dropped");
        d.emit(b"x\n", 5, None::<&mut Disk>);
        assert_eq!(d.marker().unwrap(), "[shoal: 1 line (2 bytes) of output dropped: disk quota exceeded]\n");
        let mut disk = Disk { room: 1000, ..Disk::default() };
        d.retry(RETRY_MS - 1, Some(&mut disk));
        assert!(disk.data.is_empty(), "not due");
        d.retry(RETRY_MS, Some(&mut disk));
        assert_eq!(text(&disk), "[shoal: 1 line (2 bytes) of output dropped: disk quota exceeded]\n");
        assert!(d.is_clear());
        d.retry(10 * RETRY_MS, Some(&mut disk));
        assert_eq!(text(&disk).matches("[shoal:").count(), 1, "one marker only");
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(reason(&std::io::Error::from_raw_os_error(libc::EIO)), "input/output error");
        assert_eq!(reason(&std::io::Error::from_raw_os_error(libc::ENOSPC)), "no space left on device");
        assert_eq!(reason(&std::io::Error::from_raw_os_error(libc::EROFS)), "read-only file system");
        assert_eq!(reason(&std::io::Error::other("")), "write failed");
        assert_eq!(reason(&std::io::Error::from(ErrorKind::WriteZero)), "write zero");
    }

    #[test]
    fn outside_a_shim_it_refuses_to_run() {
        // Test harnesses may leave fds 3-5 open; only check the message shape.
        assert!(NotFromShim(3).to_string().contains("fd 3 is not open"));
    }
}
