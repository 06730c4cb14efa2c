//! Service plumbing for the daemon: read-only queries (networks included),
//! image resolution at creation, the warnings of what a spec asks for that
//! is not in effect (encryption, host-mode ports on no network), and
//! turning a task into a container start spec (its log path is [`TaskLogs`]'s).

use super::task_logs::TaskLogs;
use crate::runtime::{HostMount, ImageFacts, Runtime, RuntimeError, StartSpec};
use shoal_manager::control::ControlError;
use shoal_manager::state::State;
use shoal_shared::api::{ErrorKind, NetworkDetail, NetworkService, Reply, Request, ServiceSummary};
use shoal_shared::task::TaskState;
use shoal_shared::types::{MountKind, Network, NetworkMode, ServiceMode, ServiceSpec, Task};
use std::collections::BTreeMap;
use std::path::Path;

/// A task's hostname: its spec's, else the first 12 characters of its id
/// (Docker's short container id). Never slices bytes: ids come over the wire.
/// The task's hostname: `--hostname` with its templates expanded
/// ([`super::placeholders`]), else the short task id (Docker's container id).
pub(crate) fn hostname(t: &Task, ctx: &serde_json::Value) -> Result<String, RuntimeError> {
    let h = &t.spec.container.hostname;
    if h.is_empty() {
        Ok(t.id.chars().take(12).collect())
    } else {
        super::placeholders::expand(h, ctx).map_err(|e| RuntimeError::Start(format!("--hostname: {e}")))
    }
}

pub(crate) fn not_in_swarm() -> Reply {
    let e = ControlError::NotInSwarm;
    Reply::error(e.kind(), e.to_string())
}

pub(crate) fn no_such_service(key: &str) -> Reply {
    let e = ControlError::NoSuchService(key.to_string());
    Reply::error(e.kind(), e.to_string())
}

/// The warnings of a service spec that asks for what is not in effect:
/// host-mode ports of tasks that share the host's network, and encrypted
/// networks (never silently plaintext). Networks and published ports are in
/// effect (`crate::network`, `daemon::netpath`); a node whose kernel lacks
/// what they need says so in its log and fails such tasks with the reason.
pub(crate) fn network_warnings(spec: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    // A service on no network is on each node's bridge network: its host-mode ports are mapped there.
    let host_ports = spec.ports.iter().any(|p| !p.is_ingress());
    if host_ports && spec.task.network_mode() == NetworkMode::Host {
        out.push(
            "host-mode ports of a service on the host's network: its tasks listen on their target ports directly; published ports are not mapped".to_string(),
        );
    }
    out
}

/// `ShoalWarnings` of `network inspect`: what is stored but not in effect.
pub(crate) fn network_notes(n: &Network) -> Vec<String> {
    let mut out = Vec::new();
    let mtu = crate::network::view::effective_mtu(n.spec.mtu, n.spec.encrypted);
    if n.spec.encrypted && mtu > crate::network::view::MTU_ENCRYPTED_DEFAULT {
        out.push(format!(
            "MTU {mtu} is over {} bytes: on a 1500-byte underlay, this encrypted network's packets between nodes are fragmented",
            crate::network::view::MTU_ENCRYPTED_DEFAULT
        ));
    }
    out
}

/// A network with its peers and services, for `network ls`/`inspect`.
fn network_detail(state: &State, n: &Network) -> NetworkDetail {
    let peers = state
        .nodes
        .values()
        .filter(|node| node.attachments.iter().any(|a| a.network_id == n.id))
        .map(|node| (node.description.hostname.clone(), node.addr.rsplit_once(':').map_or(node.addr.as_str(), |(ip, _)| ip).to_string()))
        .collect();
    let mut services = Vec::new();
    for s in state.services.values() {
        let vip = s.endpoint.virtual_ips.iter().find(|v| v.network_id == n.id).map(|v| v.addr);
        let tasks: Vec<_> = state
            .tasks_of(&s.id)
            .into_iter()
            .filter(|t| !t.status.state.is_terminal())
            .filter_map(|t| {
                let a = t.networks.iter().find(|a| a.network_id == n.id)?;
                let host = state.nodes.get(&t.node_id).map(|h| h.description.hostname.clone()).unwrap_or_default();
                Some((shoal_manager::network::task_name(&s.spec.name, t), a.addr, host))
            })
            .collect();
        if vip.is_none() && tasks.is_empty() {
            continue;
        }
        let ports = s.endpoint.ports.iter().filter(|p| p.is_ingress()).map(|p| format!("{}/{}", p.published_port, p.protocol)).collect();
        services.push(NetworkService { name: s.spec.name.clone(), id: s.id.clone(), vip, ports, tasks });
    }
    NetworkDetail { network: n.clone(), peers, services }
}

/// A worker's `network ls`: the swarm networks its assignments carry (those
/// with tasks on this node, and `ingress` while ports are published), as
/// Swarm's workers list them; only what the view holds is filled in.
pub(crate) fn worker_networks(a: Option<&shoal_shared::assignments::Assignments>) -> Reply {
    let views = a.map(|a| a.network.overlays().collect::<Vec<_>>()).unwrap_or_default();
    let detail = |v: &shoal_shared::assignments::NetworkView| {
        let spec = shoal_shared::types::NetworkSpec {
            name: v.name.clone(),
            driver: shoal_shared::types::DRIVER_OVERLAY.to_string(),
            internal: v.internal,
            encrypted: v.encrypted,
            mtu: v.mtu,
            ingress: v.ingress,
            ..Default::default()
        };
        let network =
            Network { id: v.id.clone(), meta: Default::default(), spec, vni: v.vni, subnet: v.subnet, gateway: v.gateway, last_addr: None };
        NetworkDetail { network, peers: Vec::new(), services: Vec::new() }
    };
    Reply::Networks(views.into_iter().map(detail).collect())
}

/// Answers read-only requests from the state.
pub(crate) fn query(state: &State, node_id: &str, req: Request) -> Reply {
    if state.cluster.is_none() {
        // Outside a swarm there are no swarm networks (the CLI shows host and none).
        if matches!(req, Request::NetworkList) {
            return Reply::Networks(Vec::new());
        }
        return not_in_swarm();
    }
    match req {
        Request::NodeList => Reply::Nodes {
            nodes: state.nodes.values().cloned().collect(),
            self_id: node_id.to_string(),
            leader_id: node_id.to_string(),
            reachable: vec![node_id.to_string()],
            autopilot: None,
        },
        Request::NodeInspect { node } => {
            let key = if node == "self" { node_id } else { node.as_str() };
            match state.find_node(key) {
                Some(n) => Reply::Node(Box::new(n.clone())),
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
                pulls: Vec::new(),
            },
            None => no_such_service(&service),
        },
        Request::FileList { kind } => Reply::Files(files_of(state, kind).values().map(|f| shown(kind, f)).collect()),
        Request::FileInspect { kind, key } => {
            let found = match kind {
                shoal_shared::types::FileKind::Secret => state.find_secret(&key),
                shoal_shared::types::FileKind::Config => state.find_config(&key),
            };
            match found {
                Some(f) => Reply::Files(vec![shown(kind, f)]),
                None => {
                    let e = ControlError::NoSuchFile(kind.as_str(), key);
                    Reply::error(e.kind(), e.to_string())
                }
            }
        }
        Request::NetworkList => Reply::Networks(state.networks.values().map(|n| network_detail(state, n)).collect()),
        Request::NetworkInspect { network } => match state.find_network(&network) {
            Some(n) => Reply::Networks(vec![network_detail(state, n)]),
            None => {
                let e = ControlError::NoSuchNetwork(network);
                Reply::error(e.kind(), e.to_string())
            }
        },
        other => Reply::error(ErrorKind::Internal, format!("request {other:?} is not a query")),
    }
}

fn files_of(state: &State, kind: shoal_shared::types::FileKind) -> &std::collections::BTreeMap<String, shoal_shared::types::StoredFile> {
    match kind {
        shoal_shared::types::FileKind::Secret => &state.secrets,
        shoal_shared::types::FileKind::Config => &state.configs,
    }
}

/// A secret or config as replies carry it: a secret's data never leaves the managers this way.
fn shown(kind: shoal_shared::types::FileKind, f: &shoal_shared::types::StoredFile) -> shoal_shared::types::StoredFile {
    let mut f = f.clone();
    if kind == shoal_shared::types::FileKind::Secret {
        f.spec.data = Vec::new();
    }
    f
}

/// `service ls` counts: running tasks over desired ones.
fn summary(state: &State, s: &shoal_shared::types::Service) -> ServiceSummary {
    let tasks = state.tasks_of(&s.id);
    let running = tasks.iter().filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running).count() as u64;
    let progress = shoal_manager::orchestrator::job_progress(state, s);
    let desired = match s.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => tasks.iter().filter(|t| t.desired_state <= TaskState::Running).count() as u64,
        // Jobs (swarmkit's): the tasks that should be running now.
        ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {
            let p = progress.unwrap_or_default();
            let open = p.total.saturating_sub(p.completed);
            match s.spec.mode {
                ServiceMode::ReplicatedJob { max_concurrent, .. } if max_concurrent > 0 => open.min(max_concurrent),
                _ => open,
            }
        }
    };
    let completed = progress.map_or(0, |p| p.completed);
    ServiceSummary { service: s.clone(), running, desired, completed }
}

/// The slot part of a task name: the slot number, or the node id for global services.
pub(crate) fn slot_name(t: &Task) -> String {
    if t.slot > 0 {
        t.slot.to_string()
    } else {
        t.node_id.clone()
    }
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
    auth: Option<&shoal_image::Credentials>,
) -> Result<(Box<ServiceSpec>, Vec<String>), Box<Reply>> {
    let image = spec.task.container.image.clone();
    let shown = with_default_tag(image.split('@').next().unwrap_or(&image));
    let facts = match rt.local_image(&image) {
        Ok(Some(f)) => f,
        Ok(None) => match rt.remote_image(&image, auth) {
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
    ctx: &serde_json::Value,
) -> Result<StartSpec, RuntimeError> {
    let expand = |what: &str, text: &str| super::placeholders::expand(text, ctx).map_err(|e| RuntimeError::Start(format!("{what}: {e}")));
    let log_path = TaskLogs::new(data_dir).path(&t.id).map_err(|e| RuntimeError::Start(e.to_string()))?;
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
    // The service's values may hold templates; the image's are taken as they are.
    let service_env: Vec<String> = c.env.iter().map(|kv| expand("--env", kv)).collect::<Result<_, _>>()?;
    for kv in image.env.iter().chain(service_env.iter()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if env.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    }
    let env = order.iter().map(|k| format!("{k}={}", env[k])).collect();
    let mut mounts = Vec::new();
    for m in &c.mounts {
        let name = expand("--mount source", &m.source)?;
        let source = match m.kind {
            MountKind::Volume => {
                // Checked by the manager too (after expansion only here): never outside `volumes/`.
                if !shoal_shared::types::valid_volume_name(&name) {
                    return Err(RuntimeError::Start(format!("invalid volume name {name:?}")));
                }
                let dir = data_dir.join("volumes").join(&name).join("_data");
                std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Start(format!("cannot create volume {name}: {e}")))?;
                dir
            }
            MountKind::Bind => {
                let p = std::path::PathBuf::from(&name);
                if !p.is_absolute() || !p.exists() {
                    return Err(RuntimeError::Image(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {name}"
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
        hostname: hostname(t, ctx)?,
        labels,
        log_path,
        memory_limit_bytes: t.spec.resources.limits.memory_bytes,
        nano_cpus: t.spec.resources.limits.nano_cpus,
        mounts,
        stop_signal,
        image,
        netns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tags() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1"), "busybox:1");
        assert_eq!(with_default_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/app:v2"), "127.0.0.1:5000/app:v2");
        assert_eq!(with_default_tag("app@sha256:ab"), "app@sha256:ab");
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
            networks: Vec::new(),
        };
        let img = ImageFacts {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["A=1".into(), "PATH=/bin".into()],
            ..Default::default()
        };
        let dir = Path::new("/data");
        let s = start_spec(&t, "web", "n", img.clone(), dir, &serde_json::Value::Null).unwrap();
        assert_eq!(s.args, vec!["/entry", "serve"]);
        t.spec.container.args = vec!["other".into()];
        t.spec.container.env = vec!["A=2".into(), "B=3".into()];
        let s = start_spec(&t, "web", "n", img.clone(), dir, &serde_json::Value::Null).unwrap();
        assert_eq!(s.args, vec!["/entry", "other"]);
        assert_eq!(s.env, vec!["A=2", "PATH=/bin", "B=3"]);
        t.spec.container.command = vec!["/bin/sh".into()];
        t.spec.container.args = vec![];
        let s = start_spec(&t, "web", "n", img, dir, &serde_json::Value::Null).unwrap();
        assert_eq!(s.args, vec!["/bin/sh"], "a new entrypoint drops the image cmd");
        assert_eq!(s.hostname, "abcdefabcdef");
        assert_eq!(s.labels["io.shoal.task.name"], "web.1.abcdefabcdefabcdef");
        assert_eq!(s.log_path, Path::new("/data/logs/abcdefabcdefabcdef.log"));
    }
}
