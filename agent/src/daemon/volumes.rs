//! `volume ls|inspect|rm|prune`: the named volumes tasks use on this node,
//! `DATA_DIR/volumes/NAME/_data` (created at a task's start, see
//! `service::start_spec`).
//!
//! Owns the listing and removal (off the loop: a volume may be large) and
//! the in-use rule: a volume is in use while a task assigned to this node
//! and not finished mounts it (its source expanded as at its start), so a
//! prune never takes the data of a task about to start or restart. At most
//! [`VOLUMES_MAX`] volumes are listed; sizes are counted up to
//! [`SIZE_WALK_ENTRIES_MAX`] entries each.

use shoal_shared::api::{ErrorKind, Reply, VolumeInfo};
use shoal_shared::types::{valid_volume_name, MountKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Volumes listed at most.
pub(crate) const VOLUMES_MAX: usize = 10_000;
/// Directory entries visited when a removed volume's size is counted.
const SIZE_WALK_ENTRIES_MAX: usize = 1_000_000;

impl super::Daemon {
    /// Volume name -> names of this node's unfinished tasks that mount it.
    fn volumes_in_use(&self) -> BTreeMap<String, Vec<String>> {
        let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Some(a) = self.swarm.assigned_ref() else { return used };
        let me = self.describe();
        for t in a.tasks.values().filter(|t| !t.status.state.is_terminal() || t.desired_state <= shoal_shared::task::TaskState::Running) {
            let service = a.service_name(&t.service_id).to_string();
            let ctx = super::placeholders::context(t, &service, &self.node_id, &me.hostname, &me.platform);
            for m in t.spec.container.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
                let name = super::placeholders::expand(&m.source, &ctx).unwrap_or_else(|_| m.source.clone());
                used.entry(name).or_default().push(format!("{service}.{}", super::service::slot_name(t)));
            }
        }
        used
    }

    pub(crate) fn volume_list(&mut self, names: Vec<String>, reply: &async_channel::Sender<Reply>) -> super::router::Outcome {
        let used = self.volumes_in_use();
        let dir = self.cfg.data_dir.join("volumes");
        let reply = reply.clone();
        self.io.read(Box::new(move || super::reply_later(&reply, list(&dir, &used, &names))));
        super::router::Outcome::Later
    }

    pub(crate) fn volume_remove(&mut self, name: String, force: bool, reply: &async_channel::Sender<Reply>) -> super::router::Outcome {
        let used = self.volumes_in_use();
        let dir = self.cfg.data_dir.join("volumes");
        let reply = reply.clone();
        self.io.read(Box::new(move || super::reply_later(&reply, remove(&dir, &name, force, &used))));
        super::router::Outcome::Later
    }
}

fn info(dir: &Path, name: &str, used: &BTreeMap<String, Vec<String>>) -> VolumeInfo {
    let path = dir.join(name);
    let created_at = std::fs::metadata(&path)
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    VolumeInfo {
        name: name.to_string(),
        mountpoint: path.join("_data").display().to_string(),
        created_at,
        used_by: used.get(name).cloned().unwrap_or_default(),
    }
}

/// The volumes under `dir` (their names checked), sorted by name.
fn names_in(dir: &Path) -> Result<Vec<String>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_volume_name(n))
        .take(VOLUMES_MAX)
        .collect();
    names.sort();
    Ok(names)
}

fn list(dir: &Path, used: &BTreeMap<String, Vec<String>>, wanted: &[String]) -> Reply {
    let names = match names_in(dir) {
        Ok(n) => n,
        Err(e) => return Reply::error(ErrorKind::Internal, e),
    };
    if wanted.is_empty() {
        return Reply::Volumes(names.iter().map(|n| info(dir, n, used)).collect());
    }
    let mut out = Vec::new();
    for w in wanted {
        if !names.contains(w) {
            return Reply::error(ErrorKind::NotFound, format!("no such volume: {w}"));
        }
        out.push(info(dir, w, used));
    }
    Reply::Volumes(out)
}

/// Bytes under `path`, counted up to [`SIZE_WALK_ENTRIES_MAX`] entries.
fn size_of(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else { continue };
        for e in entries.flatten() {
            seen += 1;
            if seen > SIZE_WALK_ENTRIES_MAX {
                return total;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `volume rm NAME` (`name` non-empty) or `volume prune` (every unused one).
fn remove(dir: &Path, name: &str, force: bool, used: &BTreeMap<String, Vec<String>>) -> Reply {
    let names = match names_in(dir) {
        Ok(n) => n,
        Err(e) => return Reply::error(ErrorKind::Internal, e),
    };
    let targets: Vec<&String> = if name.is_empty() {
        names.iter().filter(|n| !used.contains_key(*n)).collect()
    } else {
        if !valid_volume_name(name) || !names.iter().any(|n| n == name) {
            return Reply::error(ErrorKind::NotFound, format!("get {name}: no such volume"));
        }
        if let Some(tasks) = used.get(name).filter(|_| !force) {
            return Reply::error(
                ErrorKind::FailedPrecondition,
                format!("remove {name}: volume is in use - [{}] (remove or scale down those tasks first)", tasks.join(", ")),
            );
        }
        names.iter().filter(|n| *n == name).collect()
    };
    let mut removed = Vec::new();
    let mut reclaimed_bytes = 0;
    for n in targets {
        let path = dir.join(n);
        let bytes = size_of(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                reclaimed_bytes += bytes;
                removed.push(n.clone());
            }
            Err(e) => return Reply::error(ErrorKind::Internal, format!("remove {n}: {e}")),
        }
    }
    Reply::VolumesRemoved { names: removed, reclaimed_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_remove_and_prune_keep_volumes_in_use() {
        let dir = std::env::temp_dir().join(format!("shoal-volumes-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for n in ["a", "b", "c"] {
            std::fs::create_dir_all(dir.join(n).join("_data")).unwrap();
        }
        std::fs::write(dir.join("c/_data/f"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(dir.join("..bad")).unwrap();
        let used: BTreeMap<String, Vec<String>> = [("a".to_string(), vec!["web.1".to_string()])].into();
        let Reply::Volumes(all) = list(&dir, &used, &[]) else { panic!() };
        assert_eq!(all.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["a", "b", "c"], "bad names are not volumes");
        assert_eq!(all[0].used_by, ["web.1"]);
        assert!(matches!(list(&dir, &used, &["zz".into()]), Reply::Error { kind: ErrorKind::NotFound, .. }));
        let Reply::Error { message, .. } = remove(&dir, "a", false, &used) else { panic!() };
        assert_eq!(message, "remove a: volume is in use - [web.1] (remove or scale down those tasks first)");
        assert!(matches!(remove(&dir, "../x", false, &used), Reply::Error { kind: ErrorKind::NotFound, .. }));
        assert_eq!(remove(&dir, "", false, &used), Reply::VolumesRemoved { names: vec!["b".into(), "c".into()], reclaimed_bytes: 1000 });
        assert!(dir.join("a/_data").exists(), "prune keeps what a task uses");
        assert_eq!(remove(&dir, "a", true, &used), Reply::VolumesRemoved { names: vec!["a".into()], reclaimed_bytes: 0 });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
