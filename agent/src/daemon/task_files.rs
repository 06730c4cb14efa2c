//! Secrets and configs as files in a task's container (issue #17).
//!
//! The data comes from the managers (`Wire::Files`, memory only on a
//! worker; a manager reads its replica) and is written, when the task
//! starts, to a **tmpfs** directory of this node, never to its disk:
//! `/dev/shm/shoal-files-<hash of the data dir>/<task id>/{s,c}<n>` (0700
//! directories; each file with the reference's uid, gid and mode). Each file
//! is bind-mounted read-only into the container: a secret at
//! `/run/secrets/<target>` (or its absolute target), a config at its target
//! (default `/<name>`). `/dev/shm` is a tmpfs shared by every mount
//! namespace of the host, so containerd sees the files even when the daemon
//! runs in a namespace of its own (`ip netns exec`). If it is not a tmpfs
//! the task does not start, with the reason. The directory goes with the
//! container (`Action::Remove`); a reboot clears it.

use crate::runtime::{HostMount, RuntimeError};
use shoal_shared::assignments::Assignments;
use shoal_shared::task::TaskState;
use shoal_shared::types::{FileKind, FileReference, Task};
use std::collections::BTreeSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The tmpfs the files live on.
pub(crate) const FILES_PARENT: &str = "/dev/shm";
/// Where a secret with a relative target goes in the container.
pub(crate) const SECRETS_DIR: &str = "/run/secrets";
/// `statfs` magic of a tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The secrets and configs (kind, id) the unfinished tasks of `a` use.
pub(crate) fn used(a: &Assignments) -> BTreeSet<(FileKind, String)> {
    let mut out = BTreeSet::new();
    for t in a.tasks.values().filter(|t| !t.status.state.is_terminal() && t.desired_state <= TaskState::Running) {
        out.extend(t.spec.container.secrets.iter().map(|r| (FileKind::Secret, r.id.clone())));
        out.extend(t.spec.container.configs.iter().map(|r| (FileKind::Config, r.id.clone())));
    }
    out
}

/// One file a task gets.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TaskFile {
    pub kind: FileKind,
    pub name: String,
    /// Absolute path in the container.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFile").field("kind", &self.kind).field("name", &self.name).field("target", &self.target).finish()
    }
}

/// This node's directory of task files (one per data dir, so that several
/// daemons on one host never share it).
pub(crate) fn root(data_dir: &Path) -> PathBuf {
    let h = shoal_shared::fnv1a64(data_dir.as_os_str().as_encoded_bytes().iter().copied());
    PathBuf::from(FILES_PARENT).join(format!("shoal-files-{h:016x}"))
}

/// The container path of a reference: a secret's relative target under
/// `/run/secrets`, a config's under `/`.
pub(crate) fn container_path(kind: FileKind, r: &FileReference) -> String {
    let target = if r.target.is_empty() { r.name.as_str() } else { r.target.as_str() };
    if target.starts_with('/') {
        target.to_string()
    } else {
        match kind {
            FileKind::Secret => format!("{SECRETS_DIR}/{target}"),
            FileKind::Config => format!("/{target}"),
        }
    }
}

/// The files task `t` gets, with their data from `data` (by kind and id).
/// A missing one is an error naming it (its data has not reached this node).
pub(crate) fn gather(t: &Task, data: impl Fn(FileKind, &str) -> Option<Vec<u8>>) -> Result<Vec<TaskFile>, RuntimeError> {
    let c = &t.spec.container;
    let refs = c.secrets.iter().map(|r| (FileKind::Secret, r)).chain(c.configs.iter().map(|r| (FileKind::Config, r)));
    let mut out = Vec::new();
    for (kind, r) in refs {
        let Some(bytes) = data(kind, &r.id) else {
            return Err(RuntimeError::Start(format!(
                "{} {} has not reached this node: it comes from a manager with the task's assignment; the task is retried",
                kind.as_str(),
                r.name
            )));
        };
        let id_of = |v: &str, what: &str| {
            if v.is_empty() {
                Ok(0)
            } else {
                v.parse::<u32>().map_err(|_| RuntimeError::Start(format!("{} {}: {what} {v:?} is not a number", kind.as_str(), r.name)))
            }
        };
        out.push(TaskFile {
            kind,
            name: r.name.clone(),
            target: container_path(kind, r),
            uid: id_of(&r.uid, "uid")?,
            gid: id_of(&r.gid, "gid")?,
            mode: r.mode & 0o7777,
            data: bytes,
        });
    }
    Ok(out)
}

/// Whether `path` is on a tmpfs.
fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    magic == TMPFS_MAGIC
}

/// Writes task `task_id`'s files under `root` (on a tmpfs, or not at all)
/// and returns their read-only bind mounts.
pub(crate) fn write(root: &Path, task_id: &str, files: &[TaskFile]) -> Result<Vec<HostMount>, RuntimeError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let err = |what: String, e: std::io::Error| RuntimeError::Start(format!("secrets and configs: cannot {what}: {e}"));
    let parent = root.parent().unwrap_or(Path::new(FILES_PARENT));
    if !is_tmpfs(parent) {
        return Err(RuntimeError::Start(format!(
            "secrets and configs: {} is not a tmpfs, and they are never written to disk: mount one there",
            parent.display()
        )));
    }
    let dir = root.join(task_id);
    // Written afresh on every start (an in-place restart too).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| err(format!("create {}", dir.display()), e))?;
    let mut mounts = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let p = dir.join(format!("{}{i}", if f.kind == FileKind::Secret { 's' } else { 'c' }));
        std::fs::write(&p, &f.data).map_err(|e| err(format!("write {} {}", f.kind.as_str(), f.name), e))?;
        std::os::unix::fs::chown(&p, Some(f.uid), Some(f.gid)).map_err(|e| err(format!("chown {} {}", f.kind.as_str(), f.name), e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| err(format!("chmod {} {}", f.kind.as_str(), f.name), e))?;
        mounts.push(HostMount { source: p, target: f.target.clone(), tmpfs: false, read_only: true });
    }
    Ok(mounts)
}

/// Removes task `task_id`'s files (nothing there is fine).
pub(crate) fn remove(root: &Path, task_id: &str) {
    let dir = root.join(task_id);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            crate::log!("WARN", "cannot remove the secrets and configs of task {task_id} in {}: {e}", dir.display());
        }
    }
}

/// Removes every task's files under `root` (at daemon start: what an
/// earlier run left; the containers still running keep theirs, since a
/// bind mount pins its file, and a start writes them again).
pub(crate) fn clear(root: &Path) {
    if let Err(e) = std::fs::remove_dir_all(root) {
        if e.kind() != std::io::ErrorKind::NotFound {
            crate::log!("WARN", "cannot clear {}: {e}", root.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::types::{ServiceSpec, TaskStatus};

    fn reference(name: &str, target: &str) -> FileReference {
        FileReference {
            id: format!("id-{name}"),
            name: name.into(),
            target: target.into(),
            uid: "1000".into(),
            gid: "".into(),
            mode: 0o400,
        }
    }

    fn task() -> Task {
        let mut spec = ServiceSpec::new("web", "busybox").task;
        spec.container.secrets = vec![reference("db", ""), reference("tls", "/etc/tls/key.pem")];
        spec.container.configs = vec![reference("app.conf", "")];
        Task {
            id: "t1".into(),
            meta: Default::default(),
            service_id: "s".into(),
            slot: 1,
            node_id: "n".into(),
            spec,
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 0, "assigned"),
            not_before: 0,
            attempt: 0,
            networks: Vec::new(),
        }
    }

    #[test]
    fn files_go_to_docker_paths_with_their_owner_and_mode_on_a_tmpfs_only() {
        let t = task();
        let missing = gather(&t, |_, id| (id != "id-tls").then(|| b"x".to_vec())).unwrap_err();
        assert!(missing.to_string().contains("secret tls has not reached this node"), "{missing}");
        let files = gather(&t, |kind, id| Some(format!("{kind:?}:{id}").into_bytes())).unwrap();
        let targets: Vec<&str> = files.iter().map(|f| f.target.as_str()).collect();
        assert_eq!(targets, ["/run/secrets/db", "/etc/tls/key.pem", "/app.conf"]);
        assert_eq!((files[0].uid, files[0].gid, files[0].mode), (1000, 0, 0o400));
        assert!(!format!("{files:?}").contains("Secret:id-db"), "no data in Debug");
        let mut bad = t.clone();
        bad.spec.container.secrets[0].uid = "root".into();
        assert!(gather(&bad, |_, _| Some(Vec::new())).unwrap_err().to_string().contains("uid \"root\" is not a number"));

        // Written on /dev/shm (a tmpfs here), read back, removed.
        let root = root(Path::new(&format!("/tmp/task-files-test-{}", std::process::id())));
        if !is_tmpfs(Path::new(FILES_PARENT)) {
            assert!(write(&root, "t1", &files).is_err(), "never on disk");
            return;
        }
        let mounts = write(&root, "t1", &files).unwrap();
        assert_eq!(mounts.len(), 3);
        assert!(mounts.iter().all(|m| m.read_only && !m.tmpfs && m.source.starts_with(&root)));
        assert_eq!(std::fs::read(&mounts[0].source).unwrap(), b"Secret:id-db");
        let meta = std::fs::metadata(&mounts[0].source).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (1000, 0o400));
        assert_eq!(std::fs::metadata(root.join("t1")).unwrap().mode() & 0o777, 0o700);
        remove(&root, "t1");
        assert!(!root.join("t1").exists());
        let _ = std::fs::remove_dir(&root);
        // Not on a tmpfs: refused, nothing written.
        let e = write(Path::new("/proc/self/no-such/root"), "t1", &files).unwrap_err();
        assert!(e.to_string().contains("is not a tmpfs"), "{e}");
    }
}
