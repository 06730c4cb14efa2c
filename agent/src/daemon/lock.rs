//! The data directory's exclusive lock, so two daemons never share state.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Holds `flock(LOCK_EX)` on `<data-dir>/lock` for the daemon's lifetime.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = dir.join("lock");
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            anyhow::bail!(
                "data dir {} is locked by another shoal daemon{who}: stop it, or use --data-dir for a second daemon",
                dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}
