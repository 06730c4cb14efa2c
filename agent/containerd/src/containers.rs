//! Containers and tasks: `run` (snapshot, spec, container, task, start, with
//! rollback), `stop`, `signal`, `remove` and `list`. Exec processes (health
//! probes) are in `exec.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ListTasksRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status as TaskStatus};

use crate::rpc::{ts_nanos, Ctx};
use crate::{
    spec, valid_identifier, ContainerSpec, ContainerState, ContainerStatus, Driver, Error, Signalled, RUNTIME, SNAPSHOTTER,
    STOP_SIGNAL_LABEL,
};

/// Type URL containerd expects for an OCI runtime spec.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Host files bound read-only into every container that shares the host's network namespace.
pub const HOST_FILES: &[&str] = &["/etc/hosts", "/etc/resolv.conf"];

/// `file://` URI for an absolute path (percent-encoding what needs it).
fn file_uri(p: &Path) -> String {
    format!("file://{}", escape(p))
}

/// `binary://` URI that has the shim run `exe log-driver log`: the shim
/// passes each query key and its value as arguments (a single key, since
/// their order is a Go map's).
fn binary_uri(exe: &Path, log: &Path) -> String {
    format!("binary://{}?log-driver={}", escape(exe), escape(log))
}

/// A path percent-encoded for a URI's path or query.
fn escape(p: &Path) -> String {
    let mut out = String::new();
    for b in p.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(b) {
            out.push(*b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn validate(s: &ContainerSpec) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidInput(m));
    if !valid_identifier(&s.id) {
        return bad(format!("container id {:?} must be letters/digits separated by single '.', '_' or '-', at most 76 chars", s.id));
    }
    if s.args.is_empty() {
        return bad(format!("container {}: args must not be empty", s.id));
    }
    if s.chain_id.is_empty() {
        return bad(format!("container {}: chain_id is empty", s.id));
    }
    if !s.log_path.is_absolute() {
        return bad(format!("container {}: log_path {} must be absolute", s.id, s.log_path.display()));
    }
    if let Some(exe) = s.log_driver.as_ref().filter(|p| !p.is_absolute()) {
        return bad(format!("container {}: log driver {} must be absolute", s.id, exe.display()));
    }
    if !s.cwd.is_empty() && !s.cwd.starts_with('/') {
        return bad(format!("container {}: cwd {:?} must be absolute", s.id, s.cwd));
    }
    if !(1..=64).contains(&s.stop_signal) {
        return bad(format!("container {}: stop signal {} is not a signal", s.id, s.stop_signal));
    }
    for m in &s.mounts {
        if !m.destination.starts_with('/') {
            return bad(format!("container {}: mount destination {:?} must be absolute", s.id, m.destination));
        }
    }
    if s.labels.keys().any(|k| k == STOP_SIGNAL_LABEL) {
        return bad(format!("container {}: label {STOP_SIGNAL_LABEL} is reserved", s.id));
    }
    Ok(())
}

impl Ctx {
    pub(crate) fn tasks(&self) -> TasksClient<containerd_client::tonic::transport::Channel> {
        TasksClient::new(self.channel.clone())
    }

    fn containers(&self) -> ContainersClient<containerd_client::tonic::transport::Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub(crate) async fn task_get(&self, id: &str) -> Result<Option<Process>, Error> {
        let r = self
            .call("Tasks.Get", self.tasks().get(self.req(GetRequest { container_id: id.to_string(), exec_id: String::new() }, None)))
            .await;
        match r {
            Ok(r) => Ok(r.process),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `signal`; `Ok(false)` when there is no process to signal.
    async fn task_kill(&self, id: &str, signal: u32, all: bool) -> Result<bool, Error> {
        self.process_kill(id, "", signal, all).await
    }

    /// Sends `signal` to the init process (`exec_id` empty) or to exec
    /// process `exec_id`; `Ok(false)` when there is no process to signal
    /// (none, or it already exited).
    pub(crate) async fn process_kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<bool, Error> {
        let req = KillRequest { container_id: id.to_string(), exec_id: exec_id.to_string(), signal, all };
        match self.call("Tasks.Kill", self.tasks().kill(self.req(req, None))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `ms` for the task to exit; `Ok(None)` on timeout.
    async fn task_wait(&self, id: &str, ms: u64) -> Result<Option<i32>, Error> {
        Ok(self.process_wait(id, "", ms).await?.map(|s| s as i32))
    }

    /// Waits up to `ms` for the init process (`exec_id` empty) or exec
    /// process `exec_id` to exit; its exit status, or `Ok(None)` on timeout.
    pub(crate) async fn process_wait(&self, id: &str, exec_id: &str, ms: u64) -> Result<Option<u32>, Error> {
        let req = WaitRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        match self.call_ms("Tasks.Wait", ms, self.tasks().wait(self.req(req, None))).await {
            Ok(w) => Ok(Some(w.exit_status)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Tasks.Delete`; NotFound is fine. Returns the exit status if any.
    async fn task_delete(&self, id: &str) -> Result<Option<i32>, Error> {
        let r = self.call("Tasks.Delete", self.tasks().delete(self.req(DeleteTaskRequest { container_id: id.to_string() }, None))).await;
        match r {
            Ok(d) => Ok(Some(d.exit_status as i32)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn container_get(&self, id: &str) -> Result<Option<Container>, Error> {
        let r = self.call("Containers.Get", self.containers().get(self.req(GetContainerRequest { id: id.to_string() }, None))).await;
        match r {
            Ok(r) => Ok(r.container),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn container_delete(&self, id: &str) -> Result<(), Error> {
        let r =
            self.call("Containers.Delete", self.containers().delete(self.req(DeleteContainerRequest { id: id.to_string() }, None))).await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Kills (if needed) and deletes everything of container `id`.
    async fn remove_all(&self, id: &str, snapshot_key: &str) -> Result<(), Error> {
        if let Some(p) = self.task_get(id).await? {
            let st = TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown);
            if st != TaskStatus::Stopped {
                self.task_kill(id, libc::SIGKILL as u32, true).await?;
                if st != TaskStatus::Created {
                    let ms = self.call_ms;
                    if self.task_wait(id, ms).await?.is_none() {
                        return Err(Error::Timeout { op: format!("waiting for container {id} to die after SIGKILL"), ms });
                    }
                }
            }
            self.task_delete(id).await?;
        }
        self.snapshot_remove(snapshot_key).await?;
        self.container_delete(id).await
    }

    async fn run(&self, s: ContainerSpec, spec_json: Vec<u8>, stdio: String) -> Result<(), Error> {
        let lease = self.lease_create().await?;
        let r = self.run_in_lease(&s, spec_json, stdio, &lease).await;
        let _ = self.lease_delete(&lease).await;
        r
    }

    async fn run_in_lease(&self, s: &ContainerSpec, mut spec_json: Vec<u8>, stdio: String, lease: &str) -> Result<(), Error> {
        let id = s.id.as_str();
        // 1. The container's writable snapshot.
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        let r = self
            .call(
                "Snapshots.Prepare",
                snaps.prepare(self.req(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: id.to_string(),
                        parent: s.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                )),
            )
            .await;
        let mounts = match r {
            Ok(r) => r.mounts,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NotFound { what: format!("image snapshot {} for container {id} (import the image first)", s.chain_id) })
            }
            Err(Error::AlreadyExists { .. }) => return Err(Error::AlreadyExists { what: format!("container {id} (its snapshot)") }),
            Err(e) => return Err(e),
        };
        if let Some(user) = &s.user_name {
            match with_user(&spec_json, user, &mounts) {
                Ok(patched) => spec_json = patched,
                Err(e) => {
                    let _ = self.snapshot_remove(id).await;
                    return Err(e);
                }
            }
        }

        // 2. The container record.
        let mut labels: HashMap<String, String> = s.labels.clone().into_iter().collect();
        labels.insert(STOP_SIGNAL_LABEL.into(), s.stop_signal.to_string());
        let container = Container {
            id: id.to_string(),
            labels,
            image: s.image.clone(),
            runtime: Some(Runtime { name: RUNTIME.into(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: spec_json }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "Containers.Create",
                self.containers().create(self.req(CreateContainerRequest { container: Some(container) }, Some(lease))),
            )
            .await;
        if let Err(e) = r {
            let _ = self.snapshot_remove(id).await;
            return Err(match e {
                Error::AlreadyExists { .. } => Error::AlreadyExists { what: format!("container {id}") },
                e => e,
            });
        }

        // 3. The task (shim start + runc create), then start it.
        let r = async {
            self.call(
                "Tasks.Create",
                self.tasks().create(self.req(
                    CreateTaskRequest {
                        container_id: id.to_string(),
                        rootfs: mounts,
                        stdin: String::new(),
                        stdout: stdio.clone(),
                        stderr: stdio,
                        terminal: false,
                        ..Default::default()
                    },
                    None,
                )),
            )
            .await?;
            self.call(
                "Tasks.Start",
                self.tasks().start(self.req(StartRequest { container_id: id.to_string(), exec_id: String::new() }, None)),
            )
            .await
        }
        .await;
        if let Err(e) = r {
            let _ = self.remove_all(id, id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn stop(&self, id: &str, grace_ms: u64) -> Result<Option<i32>, Error> {
        let Some(c) = self.container_get(id).await? else {
            return Ok(None);
        };
        let signal = c.labels.get(STOP_SIGNAL_LABEL).and_then(|s| s.parse::<u32>().ok()).unwrap_or(libc::SIGTERM as u32);
        let Some(p) = self.task_get(id).await? else {
            return Ok(None);
        };
        if TaskStatus::try_from(p.status) == Ok(TaskStatus::Stopped) {
            return Ok(Some(p.exit_status as i32));
        }
        if self.task_kill(id, signal, false).await? && grace_ms > 0 {
            if let Some(code) = self.task_wait(id, grace_ms).await? {
                return Ok(Some(code));
            }
        }
        self.task_kill(id, libc::SIGKILL as u32, true).await?;
        let ms = self.call_ms;
        match self.task_wait(id, ms).await? {
            Some(code) => Ok(Some(code)),
            None => Err(Error::Timeout { op: format!("waiting for container {id} to die after SIGKILL"), ms }),
        }
    }

    async fn signal(&self, id: &str, kill: bool) -> Result<Signalled, Error> {
        let Some(c) = self.container_get(id).await? else {
            return Ok(Signalled::NoProcess { exit_code: None });
        };
        let Some(p) = self.task_get(id).await? else {
            return Ok(Signalled::NoProcess { exit_code: None });
        };
        if TaskStatus::try_from(p.status) == Ok(TaskStatus::Stopped) {
            return Ok(Signalled::NoProcess { exit_code: Some(p.exit_status as i32) });
        }
        let signal = if kill {
            libc::SIGKILL as u32
        } else {
            c.labels.get(STOP_SIGNAL_LABEL).and_then(|s| s.parse::<u32>().ok()).unwrap_or(libc::SIGTERM as u32)
        };
        // SIGKILL goes to every process of the container (as `stop` does), the stop signal to its init only.
        match self.task_kill(id, signal, kill).await? {
            true => Ok(Signalled::Sent),
            false => Ok(Signalled::NoProcess { exit_code: None }),
        }
    }

    async fn list(&self) -> Result<Vec<ContainerState>, Error> {
        let cs = self
            .call("Containers.List", self.containers().list(self.req(ListContainersRequest { filters: vec![] }, None)))
            .await?
            .containers;
        let ts = self.call("Tasks.List", self.tasks().list(self.req(ListTasksRequest { filter: String::new() }, None))).await?.tasks;
        // In 1.6 the container id is in `Process.id` (container_id is empty).
        let tasks: HashMap<&str, &Process> = ts
            .iter()
            .map(|p| {
                let k = if p.container_id.is_empty() { p.id.as_str() } else { p.container_id.as_str() };
                (k, p)
            })
            .collect();
        let mut out: Vec<ContainerState> = cs
            .into_iter()
            .map(|c| {
                let status = match tasks.get(c.id.as_str()) {
                    None => ContainerStatus::Created,
                    Some(p) => match TaskStatus::try_from(p.status) {
                        Ok(TaskStatus::Created) => ContainerStatus::Created,
                        Ok(TaskStatus::Running) => ContainerStatus::Running { pid: p.pid },
                        Ok(TaskStatus::Stopped) => ContainerStatus::Stopped {
                            exit_code: p.exit_status as i32,
                            exited_unix_nanos: ts_nanos(&p.exited_at).unwrap_or(0),
                        },
                        _ => ContainerStatus::Unknown,
                    },
                };
                ContainerState { labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(), id: c.id, status }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

impl Driver {
    /// Creates and starts a container; on any failure removes what it
    /// created (task, container, snapshot) and says which step failed.
    pub fn run(&self, s: &ContainerSpec) -> Result<(), Error> {
        validate(s)?;
        if let Some(dir) = s.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating log directory {}", dir.display()), e))?;
        }
        let created = std::fs::OpenOptions::new().create(true).append(true).open(&s.log_path);
        // A log driver opens the file itself, and keeps trying (a full disk must not stop a start).
        if s.log_driver.is_none() {
            created.map_err(|e| Error::io(format!("opening log file {}", s.log_path.display()), e))?;
        }
        // With its own network namespace a container gets its own hosts and resolv.conf (in `mounts`).
        let host_files: Vec<&str> =
            if s.netns.is_some() { Vec::new() } else { HOST_FILES.iter().copied().filter(|f| Path::new(f).is_file()).collect() };
        let json = spec::build(s, &self.ctx().ns, &host_files);
        let spec_json = serde_json::to_vec(&json).map_err(|e| Error::InvalidInput(format!("cannot encode the runtime spec: {e}")))?;
        let stdio = match &s.log_driver {
            Some(exe) => binary_uri(exe, &s.log_path),
            None => file_uri(&s.log_path),
        };
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms.saturating_mul(12);
        let s = s.clone();
        self.block("run", ms, async move { ctx.run(s, spec_json, stdio).await })
    }

    /// Sends the container's stop signal, waits up to `grace_ms`, then
    /// SIGKILLs it. Returns the exit code, or `None` when there is no
    /// container or no task (already gone).
    pub fn stop(&self, id: &str, grace_ms: u64) -> Result<Option<i32>, Error> {
        let ctx = self.ctx().clone();
        let id = id.to_string();
        let ms = grace_ms.saturating_add(ctx.call_ms.saturating_mul(6));
        self.block("stop", ms, async move { ctx.stop(&id, grace_ms).await })
    }

    /// Sends the container's stop signal (`kill`: SIGKILL to all its
    /// processes) and returns at once, without waiting for the exit: a
    /// caller that owns the grace period as a timer learns of the exit from
    /// [`Driver::exits`] or [`Driver::list`].
    pub fn signal(&self, id: &str, kill: bool) -> Result<Signalled, Error> {
        let ctx = self.ctx().clone();
        let id = id.to_string();
        let ms = ctx.call_ms.saturating_mul(3);
        self.block("signal", ms, async move { ctx.signal(&id, kill).await })
    }

    /// Idempotent: kills the task if still running, deletes it, removes the
    /// snapshot and deletes the container. Missing pieces are fine.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let ctx = self.ctx().clone();
        let id = id.to_string();
        let ms = ctx.call_ms.saturating_mul(7);
        self.block("remove", ms, async move {
            let key = match ctx.container_get(&id).await? {
                Some(c) if !c.snapshot_key.is_empty() => c.snapshot_key,
                _ => id.clone(),
            };
            ctx.remove_all(&id, &key).await
        })
    }

    /// Every container in the namespace with its task state, sorted by id.
    pub fn list(&self) -> Result<Vec<ContainerState>, Error> {
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms.saturating_mul(2);
        self.block("list", ms, async move { ctx.list().await })
    }
}

/// `spec_json` with its process user resolved from the snapshot's
/// passwd and group files (see [`crate::users`]).
fn with_user(spec_json: &[u8], user: &str, mounts: &[containerd_client::types::Mount]) -> Result<Vec<u8>, Error> {
    let passwd = crate::users::rootfs_file(mounts, "etc/passwd").map_err(Error::User)?;
    let group = crate::users::rootfs_file(mounts, "etc/group").map_err(Error::User)?;
    let u = crate::users::resolve(user, passwd.as_deref(), group.as_deref()).map_err(Error::User)?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(spec_json).map_err(|e| Error::InvalidInput(format!("runtime spec is not JSON: {e}")))?;
    let mut entry = serde_json::json!({"uid": u.uid, "gid": u.gid});
    if !u.additional_gids.is_empty() {
        entry["additionalGids"] = serde_json::json!(u.additional_gids);
    }
    spec["process"]["user"] = entry;
    serde_json::to_vec(&spec).map_err(|e| Error::InvalidInput(format!("cannot encode the runtime spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_are_escaped() {
        assert_eq!(file_uri(Path::new("/var/log/a-b_c.log")), "file:///var/log/a-b_c.log");
        assert_eq!(file_uri(Path::new("/x y/%")), "file:///x%20y/%25");
        assert_eq!(
            binary_uri(Path::new("/usr/bin/sh oal"), Path::new("/d/l&=?.log")),
            "binary:///usr/bin/sh%20oal?log-driver=/d/l%26%3D%3F.log"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let ok = ContainerSpec::new("c1", "i", "sha256:x", vec!["sh".into()], "/tmp/l");
        assert!(validate(&ok).is_ok());
        let mut s = ok.clone();
        s.args.clear();
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.log_path = "rel.log".into();
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.log_driver = Some("shoal".into());
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.id = "a/b".into();
        assert!(validate(&s).is_err());
    }
}
