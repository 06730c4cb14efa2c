//! Service plumbing for the daemon: read-only queries, image resolution at
//! creation, and turning a task into a container start spec.

use super::log_gather::LogsRead;
use crate::runtime::{HostMount, ImageFacts, Runtime, RuntimeError, StartSpec};
use shoal_manager::control::ControlError;
use shoal_manager::state::State;
use shoal_shared::api::{ErrorKind, LogChunk, LogCursor, Reply, Request, ServiceSummary};
use shoal_shared::task::TaskState;
use shoal_shared::types::{MountKind, ServiceMode, ServiceSpec, Task};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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

pub(crate) fn not_in_swarm() -> Reply {
    let e = ControlError::NotInSwarm;
    Reply::error(e.kind(), e.to_string())
}

pub(crate) fn no_such_service(key: &str) -> Reply {
    let e = ControlError::NoSuchService(key.to_string());
    Reply::error(e.kind(), e.to_string())
}

/// Answers read-only requests from the state.
pub(crate) fn query(state: &State, node_id: &str, req: Request) -> Reply {
    if state.cluster.is_none() {
        return not_in_swarm();
    }
    match req {
        Request::NodeList => Reply::Nodes {
            nodes: state.nodes.values().cloned().collect(),
            self_id: node_id.to_string(),
            leader_id: node_id.to_string(),
            reachable: vec![node_id.to_string()],
        },
        Request::NodeInspect { node } => {
            let key = if node == "self" { node_id } else { node.as_str() };
            match state.find_node(key) {
                Some(n) => Reply::Node(n.clone()),
                None => {
                    let e = ControlError::NoSuchNode(node);
                    Reply::error(e.kind(), e.to_string())
                }
            }
        }
        Request::ServiceList => Reply::Services(state.services.values().map(|s| summary(state, s)).collect()),
        Request::ServiceInspect { service } => match state.find_service(&service) {
            Some(s) => Reply::Service(Box::new(s.clone())),
            None => no_such_service(&service),
        },
        Request::TaskList { service } => match state.find_service(&service) {
            Some(s) => Reply::Tasks {
                service: Box::new(s.clone()),
                tasks: state.tasks_of(&s.id).into_iter().cloned().collect(),
                nodes: state.nodes.values().cloned().collect(),
            },
            None => no_such_service(&service),
        },
        other => Reply::error(ErrorKind::Internal, format!("request {other:?} is not a query")),
    }
}

/// `service ls` counts: running tasks over desired ones.
fn summary(state: &State, s: &shoal_shared::types::Service) -> ServiceSummary {
    let tasks = state.tasks_of(&s.id);
    let running = tasks.iter().filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running).count() as u64;
    let desired = match s.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => tasks.iter().filter(|t| t.desired_state <= TaskState::Running).count() as u64,
    };
    ServiceSummary { service: s.clone(), running, desired }
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
///
/// Blocking (file reads): the daemon runs it off its event loop.
pub(crate) fn read_logs(dir: &Path, task_ids: &[String], tail_lines: Option<u64>, cursor: &[LogCursor], bytes_max: u64) -> LogsRead {
    let offsets: BTreeMap<&str, u64> = cursor.iter().map(|c| (c.task_id.as_str(), c.offset)).collect();
    let mut out = LogsRead::default();
    let mut left = bytes_max;
    for id in task_ids {
        if !is_task_id(id) {
            continue;
        }
        if left == 0 {
            out.more = true;
            break;
        }
        let Ok(mut f) = std::fs::File::open(dir.join(format!("{id}.log"))) else {
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

/// Whether `id` looks like a task id (object ids: lowercase base36), so it
/// is safe as a file name.
fn is_task_id(id: &str) -> bool {
    (1..=TASK_ID_BYTES_MAX).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Tidies task logs: deletes those of tasks the state no longer has
/// (`<id>.log` and `<id>.log.1`), and rotates every log over `max_bytes`:
/// the file is copied to `<id>.log.1` (replacing the previous one) and
/// truncated in place, because the runtime's shim keeps writing with
/// `O_APPEND` to the path it opened. Returns how many logs were rotated.
pub(crate) fn rotate_logs(dir: &Path, known: &std::collections::BTreeSet<String>, max_bytes: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut rotated = 0;
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.strip_suffix(".log.1").or_else(|| name.strip_suffix(".log"));
        match id {
            Some(id) if !known.contains(id) => {
                // `known` may be older than a task that just started: only
                // files untouched for a while are orphans.
                let idle = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if idle.is_some_and(|d| d >= std::time::Duration::from_millis(ORPHAN_LOG_IDLE_MS)) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            Some(_) if name.ends_with(".log") => {}
            _ => continue,
        }
        if e.metadata().map(|m| m.len()).unwrap_or(0) <= max_bytes {
            continue;
        }
        let old = path.with_extension("log.1");
        if std::fs::copy(&path, &old).is_ok() && std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(0)).is_ok() {
            rotated += 1;
        }
    }
    rotated
}

/// The slot part of a task name: the slot number, or the node id for global services.
pub(crate) fn slot_name(t: &Task) -> String {
    if t.slot > 0 {
        t.slot.to_string()
    } else {
        t.node_id.clone()
    }
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

/// Adds `:latest` when a reference has neither tag nor digest.
pub(crate) fn with_default_tag(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let name = if last.contains(':') || digest.is_some() { name.to_string() } else { format!("{name}:latest") };
    match digest {
        Some(d) => format!("{name}@{d}"),
        None => name,
    }
}

/// Pins the image digest and fills `Placement.Platforms` before creation.
///
/// Local image: pinned from the local store. Otherwise the registry is asked.
/// "No such image" from a registry is an error; an unreachable registry is an
/// error on a one-node swarm (nothing could ever run the task) and a warning
/// on larger ones (each node then resolves the image at pull time).
pub(crate) fn resolve_image(
    rt: &dyn Runtime,
    mut spec: Box<ServiceSpec>,
    only_node: bool,
) -> Result<(Box<ServiceSpec>, Vec<String>), Box<Reply>> {
    let image = spec.task.container.image.clone();
    let shown = with_default_tag(image.split('@').next().unwrap_or(&image));
    let facts = match rt.local_image(&image) {
        Ok(Some(f)) => f,
        Ok(None) => match rt.remote_image(&image) {
            Ok(f) => f,
            Err(RuntimeError::ImageNotFound(m)) => {
                return Err(Box::new(Reply::error(ErrorKind::InvalidArgument, format!("no such image: {shown}: {m}"))));
            }
            Err(e) if only_node => {
                let m = format!("image {shown} is not on this node and cannot be pulled: {e}");
                return Err(Box::new(Reply::error(ErrorKind::InvalidArgument, m)));
            }
            Err(e) => {
                let w = format!("image {shown} could not be accessed on a registry to record its digest ({e}); each node will access {shown} independently, possibly leading to different nodes running different versions of the image");
                return Ok((spec, vec![w]));
            }
        },
        Err(e) => return Err(Box::new(Reply::error(ErrorKind::Unavailable, e.to_string()))),
    };
    if !facts.digest.is_empty() {
        spec.task.container.image = format!("{shown}@{}", facts.digest);
    }
    if spec.task.placement.platforms.is_empty() {
        spec.task.placement.platforms = facts.platforms;
    }
    Ok((spec, Vec::new()))
}

/// Builds the container start spec for a task from its spec and image.
pub(crate) fn start_spec(
    t: &Task,
    service_name: &str,
    node_id: &str,
    image: ImageFacts,
    data_dir: &Path,
) -> Result<StartSpec, RuntimeError> {
    let c = &t.spec.container;
    // Docker's rule: overriding the entrypoint drops the image's cmd.
    let entry = if c.command.is_empty() { image.entrypoint.clone() } else { c.command.clone() };
    let cmd = if !c.args.is_empty() {
        c.args.clone()
    } else if c.command.is_empty() {
        image.cmd.clone()
    } else {
        Vec::new()
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(RuntimeError::Image(format!(
            "no command specified: image {} has no entrypoint or cmd and the service gives none",
            c.image
        )));
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    for kv in image.env.iter().chain(c.env.iter()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if env.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    }
    let env = order.iter().map(|k| format!("{k}={}", env[k])).collect();
    let mut mounts = Vec::new();
    for m in &c.mounts {
        let source = match m.kind {
            MountKind::Volume => {
                let dir = data_dir.join("volumes").join(&m.source).join("_data");
                std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Start(format!("cannot create volume {}: {e}", m.source)))?;
                dir
            }
            MountKind::Bind => {
                let p = std::path::PathBuf::from(&m.source);
                if !p.exists() {
                    return Err(RuntimeError::Image(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {}",
                        m.source
                    )));
                }
                p
            }
            MountKind::Tmpfs => std::path::PathBuf::new(),
        };
        mounts.push(HostMount { source, target: m.target.clone(), tmpfs: m.kind == MountKind::Tmpfs, read_only: m.read_only });
    }
    let mut labels = c.labels.clone();
    labels.insert("io.shoal.service.id".into(), t.service_id.clone());
    labels.insert("io.shoal.service.name".into(), service_name.to_string());
    labels.insert("io.shoal.task.id".into(), t.id.clone());
    labels.insert("io.shoal.task.name".into(), format!("{service_name}.{}.{}", slot_name(t), t.id));
    labels.insert("io.shoal.node.id".into(), node_id.to_string());
    let stop_signal = if c.stop_signal.is_empty() { image.stop_signal.clone() } else { c.stop_signal.clone() };
    Ok(StartSpec {
        id: t.id.clone(),
        args,
        env,
        cwd: if c.dir.is_empty() { image.workdir.clone() } else { c.dir.clone() },
        user: if c.user.is_empty() { image.user.clone() } else { c.user.clone() },
        hostname: if c.hostname.is_empty() { t.id[..t.id.len().min(12)].to_string() } else { c.hostname.clone() },
        labels,
        log_path: data_dir.join("logs").join(format!("{}.log", t.id)),
        memory_limit_bytes: t.spec.resources.limits.memory_bytes,
        nano_cpus: t.spec.resources.limits.nano_cpus,
        mounts,
        stop_signal,
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_logs_rotate_and_small_ones_stay() {
        let dir = std::env::temp_dir().join(format!("shoal-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.log"), vec![b'x'; 100]).unwrap();
        std::fs::write(dir.join("b.log"), b"small").unwrap();
        std::fs::write(dir.join("c.txt"), vec![b'x'; 100]).unwrap();
        let known: std::collections::BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for f in ["gone.log", "gone.log.1"] {
            std::fs::write(dir.join(f), b"old task").unwrap();
            std::fs::File::options().write(true).open(dir.join(f)).unwrap().set_modified(old).unwrap();
        }
        std::fs::write(dir.join("fresh.log"), b"a task that started after `known` was taken").unwrap();
        assert_eq!(rotate_logs(&dir, &known, 50), 1);
        assert!(!dir.join("gone.log").exists() && !dir.join("gone.log.1").exists(), "logs of deleted tasks go");
        assert!(dir.join("fresh.log").exists(), "a fresh unknown log stays");
        assert_eq!(std::fs::metadata(dir.join("a.log")).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(dir.join("a.log.1")).unwrap().len(), 100);
        assert_eq!(std::fs::read(dir.join("b.log")).unwrap(), b"small");
        assert_eq!(std::fs::metadata(dir.join("c.txt")).unwrap().len(), 100, "only task logs");
        assert_eq!(rotate_logs(&dir, &known, 50), 0);
        assert!(dir.join("a.log.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn default_tags() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1"), "busybox:1");
        assert_eq!(with_default_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/app:v2"), "127.0.0.1:5000/app:v2");
        assert_eq!(with_default_tag("app@sha256:ab"), "app@sha256:ab");
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
        let dir = std::env::temp_dir().join(format!("shoal-read-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.log"), "a1\na2\na3\n").unwrap();
        std::fs::write(dir.join("b.log"), "b1\nb2\n").unwrap();
        std::fs::write(dir.join("secret"), "not a log").unwrap();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cur = |v: &[(&str, u64)]| v.iter().map(|(t, o)| LogCursor { task_id: t.to_string(), offset: *o }).collect::<Vec<_>>();
        let text =
            |r: &LogsRead| r.chunks.iter().map(|c| format!("{}:{}", c.task_id, String::from_utf8_lossy(&c.data))).collect::<Vec<_>>();
        // Everything, then only what follows the cursor; a missing log gets no cursor.
        let r = read_logs(&dir, &ids(&["a", "b", "none"]), None, &[], LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["a:a1\na2\na3\n", "b:b1\nb2\n"]);
        assert_eq!(r.cursor, cur(&[("a", 9), ("b", 6)]));
        assert!(!r.more && r.chunks.iter().all(|c| c.source.is_empty()));
        let r = read_logs(&dir, &ids(&["a", "b"]), Some(1), &cur(&[("a", 6), ("b", 6)]), LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["a:a3\n"], "cursors win over the tail");
        assert_eq!(r.cursor, cur(&[("a", 9), ("b", 6)]));
        // A cursor past the end means the log was rotated (truncated): its new lines are read from the start.
        let r = read_logs(&dir, &ids(&["b"]), None, &cur(&[("b", 99)]), LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["b:b1\nb2\n"]);
        // The tail applies to tasks without a cursor.
        let r = read_logs(&dir, &ids(&["a"]), Some(2), &[], LOG_CHUNK_BYTES_MAX);
        assert_eq!(text(&r), ["a:a2\na3\n"]);
        // A budget cut ends on a line, leaves the rest for the next read and says so.
        let r = read_logs(&dir, &ids(&["a", "b"]), None, &[], 5);
        assert_eq!(text(&r), ["a:a1\n"]);
        assert_eq!(r.cursor, cur(&[("a", 3), ("b", 0)]));
        assert!(r.more);
        let r = read_logs(&dir, &ids(&["a", "b"]), None, &cur(&[("a", 3)]), 6);
        assert_eq!(text(&r), ["a:a2\na3\n"]);
        assert!(r.more, "b was not read");
        // Ids from the network never escape the logs dir.
        let r = read_logs(&dir, &ids(&["../secret", "secret", "A", "", &"a".repeat(65)]), None, &[], LOG_CHUNK_BYTES_MAX);
        assert_eq!(r, LogsRead::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_line_longer_than_the_budget_is_cut_anyway() {
        let dir = std::env::temp_dir().join(format!("shoal-read-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("l.log"), "x".repeat(100)).unwrap();
        let r = read_logs(&dir, &["l".to_string()], None, &[], 40);
        assert_eq!((r.chunks[0].data.len(), r.cursor[0].offset, r.more), (40, 40, true), "progress even without a newline");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entrypoint_cmd_and_env_merge_like_docker() {
        let spec = ServiceSpec::new("web", "busybox");
        let mut t = Task {
            id: "abcdefabcdefabcdef".into(),
            meta: Default::default(),
            service_id: "s".into(),
            slot: 1,
            node_id: "n".into(),
            spec: spec.task,
            service_version: 1,
            desired_state: TaskState::Running,
            status: shoal_shared::types::TaskStatus::new(TaskState::Assigned, 0, ""),
            not_before: 0,
            attempt: 0,
        };
        let img = ImageFacts {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["A=1".into(), "PATH=/bin".into()],
            ..Default::default()
        };
        let dir = std::env::temp_dir();
        let s = start_spec(&t, "web", "n", img.clone(), &dir).unwrap();
        assert_eq!(s.args, vec!["/entry", "serve"]);
        t.spec.container.args = vec!["other".into()];
        t.spec.container.env = vec!["A=2".into(), "B=3".into()];
        let s = start_spec(&t, "web", "n", img.clone(), &dir).unwrap();
        assert_eq!(s.args, vec!["/entry", "other"]);
        assert_eq!(s.env, vec!["A=2", "PATH=/bin", "B=3"]);
        t.spec.container.command = vec!["/bin/sh".into()];
        t.spec.container.args = vec![];
        let s = start_spec(&t, "web", "n", img, &dir).unwrap();
        assert_eq!(s.args, vec!["/bin/sh"], "a new entrypoint drops the image cmd");
        assert_eq!(s.hostname, "abcdefabcdef");
        assert_eq!(s.labels["io.shoal.task.name"], "web.1.abcdefabcdefabcdef");
    }
}
