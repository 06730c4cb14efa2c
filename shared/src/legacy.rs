//! Frozen copies of the records as they were before networks (entry
//! version 1, state snapshot versions 1 and 2) and before node plugins
//! (entry version 2, snapshot version 3), and their conversion to today's.
//!
//! postcard is positional and not self-describing: a record that grows a
//! field cannot read its old bytes. Data dirs written before networks hold
//! raft entries and snapshots of these shapes, so decoding them goes through
//! these structs and `From` conversions. Only the structs that changed are
//! frozen here; the ones they embed unchanged are today's. Nothing here may
//! change: these are bytes already on disks.
//!
//! Conversion rules: the new fields start empty (no endpoint allocated, no
//! task or node addresses, default network settings, endpoint mode `vip`).
//! Version 1's `ServiceSpec.networks` held names that were never checked
//! (no network existed then): they are dropped, so an old service keeps
//! running as it did, in the host's namespace (an empty network list means
//! the default data path once it exists; see the note in ARCHITECTURE.md).
//! A node from before plugins has none: "not reported", which placement
//! reads as capable until the node, upgraded, describes itself again.
//!
//! Entry version 3, snapshot versions 3 to 11 and the worker's assignments
//! record version 1 hold containers before secrets, configs and
//! healthchecks (issue #17): `ContainerSpecV3` and the records embedding it
//! (`TaskSpecV3`, `ServiceSpecV3`, `ServiceV3`, `TaskV3`); the new fields
//! start empty (no secrets or configs, the image's healthcheck).
//!
//! Additions that grew no record need no frozen copy here: the accounts of
//! a worker's in-place restarts (issue #14) came as an appended `Op`
//! variant (`SetRestartsInPlace`, entry version unchanged), an appended
//! `Wire` variant, and a `State` field appended at the snapshot's end
//! (snapshot version 8; `manager/src/state.rs` restores version 7 with
//! none).

use crate::clock::UnixNanos;
use crate::ops::{Entry, Op};
use crate::platform::Platform;
use crate::task::TaskState;
use crate::types::{
    Autolock, AutopilotSettings, Availability, Cluster, ContainerSpec, Endpoint, EndpointMode, LinkProfile, Meta, Mount, Network,
    NetworkAttachment, NetworkAttachmentConfig, NetworkDefaults, Node, NodeDescription, NodeRole, NodeState, Placement, PortConfig,
    RegistryAuth, ResourceSet, Resources, RestartPolicy, RestartsInPlace, Service, ServiceMode, ServiceSpec, SwarmSettings, Task, TaskSpec,
    TaskStatus, UpdateConfig, UpdateStatus, HOST_NETWORK_ID,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `ContainerSpec` before `secrets`, `configs` and `healthcheck`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpecV3 {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub dir: String,
    pub user: String,
    pub hostname: String,
    pub stop_grace_ns: u64,
    pub stop_signal: String,
    pub mounts: Vec<Mount>,
    pub init: bool,
}

/// `TaskSpec` with a container before secrets (entry version 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpecV3 {
    pub container: ContainerSpecV3,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub placement: Placement,
    pub force_update: u64,
    pub networks: Vec<NetworkAttachmentConfig>,
}

/// `ServiceSpec` with a container before secrets (entry version 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpecV3 {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task: TaskSpecV3,
    pub mode: ServiceMode,
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    pub ports: Vec<PortConfig>,
    pub endpoint_mode: EndpointMode,
}

/// `Service` with a container before secrets (entry version 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceV3 {
    pub id: String,
    pub meta: Meta,
    pub spec: ServiceSpecV3,
    pub previous_spec: Option<ServiceSpecV3>,
    pub update_status: Option<UpdateStatus>,
    pub endpoint: Endpoint,
}

/// `Task` with a container before secrets (entry version 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskV3 {
    pub id: String,
    pub meta: Meta,
    pub service_id: String,
    pub slot: u64,
    pub node_id: String,
    pub spec: TaskSpecV3,
    pub service_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    pub not_before: UnixNanos,
    pub attempt: u64,
    pub networks: Vec<NetworkAttachment>,
}

/// `TaskSpec` before `networks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpecV1 {
    pub container: ContainerSpecV3,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub placement: Placement,
    pub force_update: u64,
}

/// `ServiceSpec` with `networks` as unchecked names and no endpoint mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpecV1 {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task: TaskSpecV1,
    pub mode: ServiceMode,
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    pub networks: Vec<String>,
    pub ports: Vec<PortConfig>,
}

/// `Service` before `endpoint`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceV1 {
    pub id: String,
    pub meta: Meta,
    pub spec: ServiceSpecV1,
    pub previous_spec: Option<ServiceSpecV1>,
    pub update_status: Option<UpdateStatus>,
}

/// `Task` before `networks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskV1 {
    pub id: String,
    pub meta: Meta,
    pub service_id: String,
    pub slot: u64,
    pub node_id: String,
    pub spec: TaskSpecV1,
    pub service_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    pub not_before: UnixNanos,
    pub attempt: u64,
}

/// `NodeDescription` before `plugins` and `warnings` (entry versions 1 and 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescriptionV2 {
    pub hostname: String,
    pub platform: Platform,
    pub resources: ResourceSet,
    pub engine_version: String,
    pub engine_labels: BTreeMap<String, String>,
}

/// `Node` before `attachments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeV1 {
    pub id: String,
    pub meta: Meta,
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    pub description: NodeDescriptionV2,
    pub state: NodeState,
    pub addr: String,
    pub manager_addr: String,
}

/// `Node` of entry version 2 (its description before `plugins`): the
/// fields of a version-1 node, then `attachments` (postcard is positional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeV2(pub NodeV1, pub Vec<NetworkAttachment>);

/// `Cluster` before `network`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterV1 {
    pub id: String,
    pub meta: Meta,
    pub name: String,
    pub public_key: [u8; 32],
    pub worker_secret: [u8; 16],
    pub manager_secret: [u8; 16],
}

/// `Op` of an older entry version, over the records that changed since
/// (cluster, node, service, task): today's variants in today's order. An
/// old version's bytes use only the variants it had (version 1: up to
/// `SetSwarmSettings`), so one shape reads them all.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpOf<C, N, S, T> {
    PutCluster(C),
    PutNode(N),
    DeleteNode { id: String },
    SetNodeState { id: String, state: NodeState },
    SetNodeAvailability { id: String, availability: Availability },
    PutService(S),
    DeleteService { id: String },
    CreateTask(T),
    AssignTask { id: String, node_id: String, status: TaskStatus },
    SetTaskDesired { id: String, desired: TaskState },
    SetTaskStatus { id: String, status: TaskStatus },
    DeleteTask { id: String },
    ReleaseTask { id: String },
    SetUpdateStatus { id: String, status: UpdateStatus },
    RollbackService { id: String, status: UpdateStatus },
    SetNodeLabels { id: String, labels: BTreeMap<String, String> },
    SetSwarmSettings(SwarmSettings),
    PutNetwork(Network),
    DeleteNetwork { id: String },
    SetServiceEndpoint { id: String, endpoint: Endpoint },
    SetTaskNetworks { id: String, networks: Vec<NetworkAttachment> },
    SetNodeAttachments { id: String, attachments: Vec<NetworkAttachment> },
    SetAutolock(Autolock),
    SetNodeLostAfter { ms: u64 },
    SetLinkProfile(LinkProfile),
    SetRestartsInPlace(RestartsInPlace),
    SetAutopilot(AutopilotSettings),
    SetRegistryAuth { service_id: String, auth: Option<RegistryAuth> },
    SetLayerSharing { on: bool },
}

/// `Op` of entry version 1, with the v1 records.
pub type OpV1 = OpOf<ClusterV1, NodeV1, ServiceV1, TaskV1>;
/// `Op` of entry version 2: nodes before plugins.
pub type OpV2 = OpOf<Cluster, NodeV2, ServiceV3, TaskV3>;
/// `Op` of entry version 3: containers before secrets.
pub type OpV3 = OpOf<Cluster, Node, ServiceV3, TaskV3>;

/// `Entry` of an older version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryOf<O> {
    pub at: UnixNanos,
    pub ops: Vec<O>,
}

/// `Entry` of version 1.
pub type EntryV1 = EntryOf<OpV1>;
/// `Entry` of version 2.
pub type EntryV2 = EntryOf<OpV2>;
/// `Entry` of version 3.
pub type EntryV3 = EntryOf<OpV3>;

impl From<ContainerSpecV3> for ContainerSpec {
    fn from(c: ContainerSpecV3) -> ContainerSpec {
        let ContainerSpecV3 { image, command, args, env, labels, dir, user, hostname, stop_grace_ns, stop_signal, mounts, init } = c;
        ContainerSpec {
            image,
            command,
            args,
            env,
            labels,
            dir,
            user,
            hostname,
            stop_grace_ns,
            stop_signal,
            mounts,
            init,
            secrets: Vec::new(),
            configs: Vec::new(),
            healthcheck: None,
        }
    }
}

impl From<TaskSpecV3> for TaskSpec {
    fn from(t: TaskSpecV3) -> TaskSpec {
        let TaskSpecV3 { container, resources, restart, placement, force_update, networks } = t;
        TaskSpec { container: container.into(), resources, restart, placement, force_update, networks }
    }
}

impl From<ServiceSpecV3> for ServiceSpec {
    fn from(s: ServiceSpecV3) -> ServiceSpec {
        let ServiceSpecV3 { name, labels, task, mode, update, rollback, ports, endpoint_mode } = s;
        ServiceSpec { name, labels, task: task.into(), mode, update, rollback, ports, endpoint_mode }
    }
}

impl From<ServiceV3> for Service {
    fn from(s: ServiceV3) -> Service {
        let ServiceV3 { id, meta, spec, previous_spec, update_status, endpoint } = s;
        Service { id, meta, spec: spec.into(), previous_spec: previous_spec.map(Into::into), update_status, endpoint }
    }
}

impl From<TaskV3> for Task {
    fn from(t: TaskV3) -> Task {
        let TaskV3 { id, meta, service_id, slot, node_id, spec, service_version, desired_state, status, not_before, attempt, networks } = t;
        Task {
            id,
            meta,
            service_id,
            slot,
            node_id,
            spec: spec.into(),
            service_version,
            desired_state,
            status,
            not_before,
            attempt,
            networks,
        }
    }
}

impl From<NodeDescriptionV2> for NodeDescription {
    fn from(d: NodeDescriptionV2) -> NodeDescription {
        let NodeDescriptionV2 { hostname, platform, resources, engine_version, engine_labels } = d;
        NodeDescription { hostname, platform, resources, engine_version, engine_labels, plugins: Vec::new(), warnings: Vec::new() }
    }
}

impl From<NodeV2> for Node {
    fn from(n: NodeV2) -> Node {
        let NodeV2(old, attachments) = n;
        Node { attachments, ..old.into() }
    }
}

impl From<TaskSpecV1> for TaskSpec {
    fn from(t: TaskSpecV1) -> TaskSpec {
        let TaskSpecV1 { container, resources, restart, placement, force_update } = t;
        TaskSpec { container: container.into(), resources, restart, placement, force_update, networks: Vec::new() }
    }
}

impl From<ServiceSpecV1> for ServiceSpec {
    fn from(s: ServiceSpecV1) -> ServiceSpec {
        let ServiceSpecV1 { name, labels, task, mode, update, rollback, networks, ports } = s;
        let mut task = TaskSpec::from(task);
        // `--network host` was the only name that meant something then: keep it, it still does.
        if networks.iter().any(|n| n == HOST_NETWORK_ID) {
            task.networks = vec![NetworkAttachmentConfig { target: HOST_NETWORK_ID.to_string(), aliases: Vec::new() }];
        }
        ServiceSpec { name, labels, task, mode, update, rollback, ports, endpoint_mode: EndpointMode::Vip }
    }
}

impl From<ServiceV1> for Service {
    fn from(s: ServiceV1) -> Service {
        let ServiceV1 { id, meta, spec, previous_spec, update_status } = s;
        Service { id, meta, spec: spec.into(), previous_spec: previous_spec.map(Into::into), update_status, endpoint: Endpoint::default() }
    }
}

impl From<TaskV1> for Task {
    fn from(t: TaskV1) -> Task {
        let TaskV1 { id, meta, service_id, slot, node_id, spec, service_version, desired_state, status, not_before, attempt } = t;
        Task {
            id,
            meta,
            service_id,
            slot,
            node_id,
            spec: spec.into(),
            service_version,
            desired_state,
            status,
            not_before,
            attempt,
            networks: Vec::new(),
        }
    }
}

impl From<NodeV1> for Node {
    fn from(n: NodeV1) -> Node {
        let NodeV1 { id, meta, role, availability, labels, description, state, addr, manager_addr } = n;
        Node { id, meta, role, availability, labels, description: description.into(), state, addr, manager_addr, attachments: Vec::new() }
    }
}

impl From<ClusterV1> for Cluster {
    fn from(c: ClusterV1) -> Cluster {
        let ClusterV1 { id, meta, name, public_key, worker_secret, manager_secret } = c;
        Cluster { id, meta, name, public_key, worker_secret, manager_secret, network: NetworkDefaults::default() }
    }
}

impl<C: Into<Cluster>, N: Into<Node>, S: Into<Service>, T: Into<Task>> From<OpOf<C, N, S, T>> for Op {
    fn from(op: OpOf<C, N, S, T>) -> Op {
        match op {
            OpOf::PutCluster(c) => Op::PutCluster(c.into()),
            OpOf::PutNode(n) => Op::PutNode(n.into()),
            OpOf::DeleteNode { id } => Op::DeleteNode { id },
            OpOf::SetNodeState { id, state } => Op::SetNodeState { id, state },
            OpOf::SetNodeAvailability { id, availability } => Op::SetNodeAvailability { id, availability },
            OpOf::PutService(s) => Op::PutService(s.into()),
            OpOf::DeleteService { id } => Op::DeleteService { id },
            OpOf::CreateTask(t) => Op::CreateTask(t.into()),
            OpOf::AssignTask { id, node_id, status } => Op::AssignTask { id, node_id, status },
            OpOf::SetTaskDesired { id, desired } => Op::SetTaskDesired { id, desired },
            OpOf::SetTaskStatus { id, status } => Op::SetTaskStatus { id, status },
            OpOf::DeleteTask { id } => Op::DeleteTask { id },
            OpOf::ReleaseTask { id } => Op::ReleaseTask { id },
            OpOf::SetUpdateStatus { id, status } => Op::SetUpdateStatus { id, status },
            OpOf::RollbackService { id, status } => Op::RollbackService { id, status },
            OpOf::SetNodeLabels { id, labels } => Op::SetNodeLabels { id, labels },
            OpOf::SetSwarmSettings(s) => Op::SetSwarmSettings(s),
            OpOf::PutNetwork(n) => Op::PutNetwork(n),
            OpOf::DeleteNetwork { id } => Op::DeleteNetwork { id },
            OpOf::SetServiceEndpoint { id, endpoint } => Op::SetServiceEndpoint { id, endpoint },
            OpOf::SetTaskNetworks { id, networks } => Op::SetTaskNetworks { id, networks },
            OpOf::SetNodeAttachments { id, attachments } => Op::SetNodeAttachments { id, attachments },
            OpOf::SetAutolock(a) => Op::SetAutolock(a),
            OpOf::SetNodeLostAfter { ms } => Op::SetNodeLostAfter { ms },
            OpOf::SetLinkProfile(p) => Op::SetLinkProfile(p),
            OpOf::SetRestartsInPlace(r) => Op::SetRestartsInPlace(r),
            OpOf::SetAutopilot(a) => Op::SetAutopilot(a),
            OpOf::SetRegistryAuth { service_id, auth } => Op::SetRegistryAuth { service_id, auth },
            OpOf::SetLayerSharing { on } => Op::SetLayerSharing { on },
        }
    }
}

impl<O: Into<Op>> From<EntryOf<O>> for Entry {
    fn from(e: EntryOf<O>) -> Entry {
        Entry { at: e.at, ops: e.ops.into_iter().map(Into::into).collect() }
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::{Entry, Op};
    use crate::types::{NetworkMode, ServiceMode, HOST_NETWORK_ID};

    fn from_hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Decodes a stored entry fixture of `version`.
    fn fixture(hex: &str, version: u8) -> Entry {
        let bytes = from_hex(hex.trim());
        assert_eq!(bytes[0], version);
        Entry::decode(&bytes).unwrap()
    }

    /// An entry written by Shoal before networks (main at 6d99343, generated
    /// once with its `Entry::encode`): a cluster, a node, a service with
    /// `--network host --network other -p 8080:80` and one of its tasks.
    const ENTRY_V1_HEX: &str = include_str!("legacy_entry_v1.hex");

    #[test]
    fn version_1_entries_decode_into_todays_records() {
        let e = fixture(ENTRY_V1_HEX, 1);
        assert_eq!(e.at, 77);
        let [Op::PutCluster(c), Op::PutNode(n), Op::PutService(s), Op::CreateTask(t), Op::SetTaskDesired { id, .. }] = &e.ops[..] else {
            panic!("{:?}", e.ops)
        };
        assert_eq!((c.id.as_str(), c.name.as_str(), c.public_key[0], c.worker_secret[0]), ("c1", "default", 7, 8));
        assert_eq!(c.network, crate::types::NetworkDefaults::default());
        assert_eq!((n.id.as_str(), n.addr.as_str(), n.description.hostname.as_str()), ("n1", "10.1.0.1:2377", "box"));
        assert!(n.attachments.is_empty());
        assert_eq!((s.id.as_str(), s.spec.name.as_str(), s.spec.mode), ("s1", "web", ServiceMode::Replicated { replicas: 2 }));
        assert_eq!(s.spec.ports.len(), 1);
        assert_eq!((s.spec.ports[0].published_port, s.spec.ports[0].target_port), (8080, 80));
        // `host` keeps its meaning; the unchecked other name is dropped.
        assert_eq!(s.spec.task.networks.len(), 1);
        assert_eq!(s.spec.task.networks[0].target, HOST_NETWORK_ID);
        assert_eq!(s.spec.task.network_mode(), NetworkMode::Host);
        assert_eq!(s.spec.task.container.env, ["A=1"]);
        assert!(s.endpoint.virtual_ips.is_empty());
        assert_eq!((t.id.as_str(), t.slot, t.spec.container.image.as_str()), ("t1", 1, "busybox"));
        assert!(t.networks.is_empty());
        assert_eq!(id, "t1");
        assert!(n.description.plugins.is_empty() && n.description.warnings.is_empty());
        // Re-encoded, it is a today's entry that round-trips.
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    /// An entry written by Shoal before node plugins (main at 9556691,
    /// generated once with its `Entry::encode`): a node with resources,
    /// engine labels and an address on `ing`, then the late variants
    /// `SetNodeAttachments` and `DeleteNetwork`.
    const ENTRY_V2_HEX: &str = include_str!("legacy_entry_v2.hex");

    #[test]
    fn version_2_entries_decode_with_no_plugins_reported() {
        let e = fixture(ENTRY_V2_HEX, 2);
        assert_eq!(e.at, 88);
        let [Op::PutNode(n), Op::SetNodeAttachments { id, attachments }, Op::DeleteNetwork { id: net }] = &e.ops[..] else {
            panic!("{:?}", e.ops)
        };
        assert_eq!((n.id.as_str(), n.addr.as_str(), n.meta.version), ("n1", "10.1.0.1:2377", 3));
        let d = &n.description;
        assert_eq!((d.hostname.as_str(), d.platform.to_string(), d.engine_version.as_str()), ("box", "linux/amd64".to_string(), "0.1.0"));
        assert_eq!((d.resources.nano_cpus, d.resources.memory_bytes), (2_000_000_000, 1 << 30));
        assert_eq!(d.engine_labels.get("k").map(String::as_str), Some("v"));
        assert!(d.plugins.is_empty() && d.warnings.is_empty(), "not reported: placement assumes the node capable");
        assert_eq!(n.attachments.len(), 1);
        assert_eq!((n.attachments[0].network_id.as_str(), n.attachments[0].addr.to_string()), ("ing", "10.0.0.2/24".to_string()));
        assert_eq!((id.as_str(), attachments.as_slice()), ("n1", n.attachments.as_slice()));
        assert_eq!(net, "x");
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    /// An entry written by Shoal before secrets (main at f4d8bc0, generated
    /// once with its `Entry::encode`): node `n1` (linux/arm/v7), service
    /// `s1` `web` (3 replicas, env, args, a tmpfs mount, `--init`, network
    /// `net1` alias `w`, `-p 8080:80`, a previous spec, a paused update),
    /// its task `t1` in slot 2 on `n1`, then every op appended after
    /// `SetNodeAttachments` up to `SetLayerSharing`.
    const ENTRY_V3_HEX: &str = include_str!("legacy_entry_v3.hex");

    #[test]
    fn version_3_entries_decode_with_no_secrets_configs_or_healthcheck() {
        use crate::types::{LinkProfile, MountKind, RegistryAuth};
        let e = fixture(ENTRY_V3_HEX, 3);
        assert_eq!(e.at, 99);
        let [Op::PutNode(n), Op::PutService(s), Op::CreateTask(t), Op::SetAutolock(a), Op::SetNodeLostAfter { ms }, Op::SetLinkProfile(p), Op::SetAutopilot(ap), Op::SetRegistryAuth { service_id, auth }, Op::SetLayerSharing { on }] =
            &e.ops[..]
        else {
            panic!("{:?}", e.ops)
        };
        assert_eq!((n.id.as_str(), n.description.platform.to_string()), ("n1", "linux/arm/v7".to_string()));
        assert_eq!((s.id.as_str(), s.spec.name.as_str(), s.spec.mode), ("s1", "web", ServiceMode::Replicated { replicas: 3 }));
        let c = &s.spec.task.container;
        assert_eq!(
            (c.image.as_str(), c.env.as_slice(), c.args.as_slice()),
            ("busybox", &["A=1".to_string()][..], &["httpd".to_string(), "-f".to_string()][..])
        );
        assert_eq!((c.mounts.len(), c.mounts[0].kind, c.mounts[0].target.as_str(), c.init), (1, MountKind::Tmpfs, "/cache", true));
        assert!(c.secrets.is_empty() && c.configs.is_empty() && c.healthcheck.is_none());
        assert_eq!((s.spec.task.networks[0].target.as_str(), s.spec.task.networks[0].aliases.as_slice()), ("net1", &["w".to_string()][..]));
        assert_eq!((s.spec.ports[0].published_port, s.spec.ports[0].target_port), (8080, 80));
        assert_eq!(s.previous_spec.as_ref().map(|p| p.task.container.image.as_str()), Some("busybox:1"));
        assert_eq!(s.update_status.as_ref().map(|u| u.message.as_str()), Some("paused"));
        assert_eq!((t.id.as_str(), t.slot, t.node_id.as_str()), ("t1", 2, "n1"));
        assert_eq!(t.spec, s.spec.task);
        assert_eq!((a.key, a.epoch), (Some([5; 32]), 4));
        assert_eq!((*ms, *p), (600_000, LinkProfile::Edge));
        assert_eq!((ap.managers, ap.spread_label.as_str()), (3, "site"));
        assert_eq!((service_id.as_str(), auth), ("s1", &Some(RegistryAuth { username: "u".into(), password: "p".into() })));
        assert!(!on);
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }
}
