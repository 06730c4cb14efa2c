//! Persistent network namespaces bound at a path, as `ip netns add` makes
//! them: create, remove, open, run code inside one, and sysctls.
//!
//! A namespace is created by a throwaway thread that `unshare`s a new
//! network namespace and bind-mounts its own `/proc/thread-self/ns/net`
//! onto an empty file at the path; the mount keeps the namespace alive
//! after the thread exits. The directory holding the path is made a shared
//! mount point first (bind-mounted onto itself if it is not a mount point),
//! as iproute2 does for `/run/netns`, so that mount namespaces copied from
//! this one later see new namespaces and, more important, see removals:
//! a copy of the mount elsewhere would otherwise keep a removed namespace
//! alive.
//!
//! Mounts belong to the caller's mount namespace. A process started by
//! `ip netns exec` runs in a private mount namespace (a slave of the one
//! `ip` ran in): the namespaces it binds are visible to it and its children
//! only, not to processes outside (a containerd started beside it), and they
//! vanish when the last process in that mount namespace exits. Such a
//! process can still hand the namespace to others by a path that goes
//! through its own root, `/proc/<its pid>/root/<path>`.
//!
//! A restarted daemon in such a mount namespace finds its paths empty; it
//! can bind a running task's namespace again from the task's process with
//! [`bind_existing`] (`/proc/<pid>/ns/net`).
//!
//! Code runs inside a namespace on a new thread ([`run_in`]) that joins it
//! with `setns`, so the caller's threads never change namespace.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::{Error, Result};

/// Longest wait for the helper thread of [`create`] (an `unshare` and a
/// mount; namespace setup in the kernel is usually well under 100 ms).
pub const CREATE_TIMEOUT_MS: u64 = 10_000;

/// Creates a new network namespace bound at `path` (its parent directory
/// is created if needed). `Exists` if a namespace is bound there already;
/// an empty leftover file at `path` is reused.
pub fn create(path: &Path) -> Result<()> {
    let op = || format!("create network namespace {}", path.display());
    prepare(path, op)?;
    let target = c_path(path, op)?;
    let bound = on_thread(op(), CREATE_TIMEOUT_MS, move || {
        // SAFETY: unshare affects only this thread (CLONE_NEWNET alone).
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(Error::last_os("unshare(CLONE_NEWNET)".into()));
        }
        bind(c"/proc/thread-self/ns/net", &target).map_err(|e| rename(e, "bind-mount the new namespace".into()))
    });
    if bound.is_err() {
        let _ = std::fs::remove_file(path);
    }
    bound
}

/// Binds the existing network namespace at `source` (another bound path,
/// or `/proc/<pid>/ns/net` of a process inside it, such as a container's
/// first process) at `path` too: how a restarted daemon whose mounts are
/// gone gets a running task's namespace back. `Exists` if a namespace is
/// bound at `path` already; an empty leftover file at `path` is reused.
pub fn bind_existing(source: &Path, path: &Path) -> Result<()> {
    let op = || format!("bind network namespace {} at {}", source.display(), path.display());
    let from = open(source).map_err(|e| rename(e, op()))?;
    prepare(path, op)?;
    // Binding the open descriptor pins exactly the namespace that `open`
    // checked, even if `source` changes meanwhile (a process exits).
    let fd_path = format!("/proc/self/fd/{}", from.as_raw_fd());
    let fd_path = c_path(Path::new(&fd_path), op)?;
    let target = c_path(path, op)?;
    let bound = bind(&fd_path, &target).map_err(|e| rename(e, op()));
    if bound.is_err() {
        let _ = std::fs::remove_file(path);
    }
    bound
}

/// Unmounts (lazily: users keep it until they close it) and deletes the
/// namespace at `path`; the namespace itself ends with its last user.
/// `NotFound` if nothing is at `path`.
pub fn remove(path: &Path) -> Result<()> {
    let op = || format!("remove network namespace {}", path.display());
    let target = c_path(path, op)?;
    // SAFETY: `target` is a valid C string; EINVAL means "not mounted",
    // which leaves just the file to remove (a half-made namespace).
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } < 0 {
        let e = Error::last_os(op());
        if !matches!(e, Error::Other { errno: libc::EINVAL, .. }) {
            return Err(e);
        }
    }
    std::fs::remove_file(path).map_err(|e| io_error(op(), &e))
}

/// Whether a network namespace (an nsfs mount) is bound at `path`.
pub fn exists(path: &Path) -> bool {
    let Ok(target) = c_path(path, String::new) else { return false };
    // SAFETY: all-zero is a valid statfs to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `target` is a valid C string, `st` a valid out-pointer.
    unsafe { libc::statfs(target.as_ptr(), &mut st) == 0 && is_nsfs(&st) }
}

/// Opens the namespace at `path` (for [`crate::Netlink::set_netns_fd`] or
/// `setns`); `Invalid` if `path` is not a namespace mount.
pub fn open(path: &Path) -> Result<OwnedFd> {
    let op = || format!("open network namespace {}", path.display());
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(path).map_err(|e| io_error(op(), &e))?;
    let fd = OwnedFd::from(file);
    // SAFETY: all-zero is a valid statfs; `fd` is open.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(Error::last_os(op()));
    }
    if !is_nsfs(&st) {
        return Err(Error::Invalid { op: op(), why: "not a namespace mount (no namespace bound there)" });
    }
    Ok(fd)
}

/// Runs `f` on a new thread inside the network namespace at `path` and
/// returns its result. Waits at most `timeout_ms`: past that the thread is
/// left to finish on its own (it cannot be stopped) and `Timeout` is
/// returned, so `f` itself should bound its waits.
pub fn run_in<T, F>(path: &Path, timeout_ms: u64, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let fd = open(path)?;
    let op = format!("run in network namespace {}", path.display());
    on_thread(op, timeout_ms, move || {
        // SAFETY: `fd` is an open nsfs file; only this thread changes namespace.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(Error::last_os("setns(CLONE_NEWNET)".into()));
        }
        drop(fd);
        Ok(f())
    })
}

/// Writes `value` to `/proc/sys/<key>` (e.g. `net/ipv4/ip_forward`).
/// `net/` keys belong to the calling thread's network namespace: call it
/// inside [`run_in`] for another namespace.
pub fn set_sysctl(key: &str, value: &str) -> Result<()> {
    let op = || format!("set sysctl {key} to {value}");
    let path = sysctl_path(key, op)?;
    std::fs::write(&path, value).map_err(|e| io_error(op(), &e))
}

/// Reads `/proc/sys/<key>` without its trailing newline.
pub fn sysctl(key: &str) -> Result<String> {
    let op = || format!("read sysctl {key}");
    let path = sysctl_path(key, op)?;
    let mut s = std::fs::read_to_string(&path).map_err(|e| io_error(op(), &e))?;
    s.truncate(s.trim_end().len());
    Ok(s)
}

fn sysctl_path(key: &str, op: impl FnOnce() -> String) -> Result<String> {
    let valid = !key.is_empty()
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b));
    if !valid {
        return Err(Error::Invalid { op: op(), why: "sysctl key must be a relative path like net/ipv4/ip_forward" });
    }
    Ok(format!("/proc/sys/{key}"))
}

/// The empty file a namespace is bound onto, in a shared mount point.
fn prepare(path: &Path, op: impl Fn() -> String) -> Result<()> {
    let dir =
        path.parent().filter(|d| !d.as_os_str().is_empty()).ok_or_else(|| Error::Invalid { op: op(), why: "path has no directory" })?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(format!("{}: create {}", op(), dir.display()), &e))?;
    make_shared(dir).map_err(|e| rename(e, op()))?;
    // A file that is there but holds no namespace is a leftover (a crash
    // between file and mount, or the mount namespace that held the mount
    // is gone): it is reused, so a restarted daemon can recreate its paths.
    if let Err(e) = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o0).open(path) {
        if e.kind() != std::io::ErrorKind::AlreadyExists || exists(path) {
            return Err(io_error(op(), &e));
        }
    }
    Ok(())
}

/// Makes `dir` a shared mount point, bind-mounting it onto itself first if
/// it is not a mount point (the kernel answers EINVAL then), as iproute2's
/// `netns add` does for `/run/netns`.
fn make_shared(dir: &Path) -> Result<()> {
    let op = || format!("make {} a shared mount point", dir.display());
    let target = c_path(dir, op)?;
    for attempt in 0..2 {
        // SAFETY: valid C strings; no data argument.
        if unsafe { libc::mount(c"none".as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_SHARED | libc::MS_REC, std::ptr::null()) }
            == 0
        {
            return Ok(());
        }
        let e = Error::last_os(op());
        if attempt > 0 || !matches!(e, Error::Other { errno: libc::EINVAL, .. }) {
            return Err(e);
        }
        bind(&target, &target).map_err(|e| rename(e, op()))?;
    }
    Ok(())
}

fn bind(source: &std::ffi::CStr, target: &std::ffi::CStr) -> Result<()> {
    // SAFETY: valid C strings; MS_BIND ignores the type and data arguments.
    if unsafe { libc::mount(source.as_ptr(), target.as_ptr(), c"none".as_ptr(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) } < 0 {
        return Err(Error::last_os(format!("bind-mount {source:?} on {target:?}")));
    }
    Ok(())
}

/// Runs `f` on a new thread and waits at most `timeout_ms` for its result.
fn on_thread<T: Send + 'static>(op: String, timeout_ms: u64, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new().name("shoal-netns".into()).spawn(move || {
        let _ = tx.send(f());
    });
    if let Err(e) = spawned {
        return Err(io_error(format!("{op}: spawn a thread"), &e));
    }
    match rx.recv_timeout(Duration::from_millis(timeout_ms)) {
        Ok(result) => result.map_err(|e| rename(e, op)),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout { op, timeout_ms }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Panicked { op }),
    }
}

// f_type's C type differs between targets (u64 on some, where the cast is
// a no-op); the magic fits all of them.
#[allow(clippy::unnecessary_cast)]
fn is_nsfs(st: &libc::statfs) -> bool {
    st.f_type as u64 == libc::NSFS_MAGIC as u64
}

fn c_path(path: &Path, op: impl FnOnce() -> String) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Invalid { op: op(), why: "path contains a NUL byte" })
}

fn io_error(op: String, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno) => Error::from_errno(op, errno, None),
        None => Error::Other { op, errno: 0, message: e.to_string() },
    }
}

/// Puts `outer` in front of an inner error's operation:
/// "create network namespace X: unshare(CLONE_NEWNET): ...".
fn rename(e: Error, outer: String) -> Error {
    let join = |inner: String| if inner.is_empty() { outer.clone() } else { format!("{outer}: {inner}") };
    match e {
        Error::Exists { op, message } => Error::Exists { op: join(op), message },
        Error::NotFound { op, message } => Error::NotFound { op: join(op), message },
        Error::Permission { op, message } => Error::Permission { op: join(op), message },
        Error::Other { op, errno, message } => Error::Other { op: join(op), errno, message },
        Error::Timeout { op, timeout_ms } => Error::Timeout { op: join(op), timeout_ms },
        Error::Malformed { op, source } => Error::Malformed { op: join(op), source },
        Error::Invalid { op, why } => Error::Invalid { op: join(op), why },
        Error::Panicked { op } => Error::Panicked { op: join(op) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_stay_under_proc_sys() {
        let op = String::new;
        assert_eq!(sysctl_path("net/ipv4/ip_forward", op).unwrap(), "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(sysctl_path("net/ipv4/conf/br-x1/forwarding", op).unwrap(), "/proc/sys/net/ipv4/conf/br-x1/forwarding");
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "net/ipv4/ip forward", "net/./x"] {
            assert!(sysctl_path(bad, op).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rename_prefixes_the_inner_operation() {
        let e = rename(Error::from_errno("unshare(CLONE_NEWNET)".into(), libc::EPERM, None), "create network namespace /x".into());
        let want =
            "create network namespace /x: unshare(CLONE_NEWNET): operation not permitted (needs root or CAP_NET_ADMIN/CAP_SYS_ADMIN)";
        assert_eq!(e.to_string(), want);
    }
}
