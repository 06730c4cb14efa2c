//! The control API between the `shoal` CLI and a daemon.
//!
//! Requests and replies are postcard inside [`crate::frame`]'s versioned,
//! length-bounded frames over the daemon's unix socket (and, for forwarded
//! commands, over Noise links). One request gets exactly one reply. Variants
//! are append only.

use crate::types::{Availability, Ipv4Net, Network, NetworkDefaults, NetworkSpec, Node, NodeRole, Service, ServiceSpec, Task};
use serde::{Deserialize, Serialize};

/// Version of the control API; replies to other versions are refused.
/// Version 5 added autolock (`SwarmInit::autolock`, `SwarmUpdate::autolock`,
/// `Reply::SwarmInit::unlock_key`), version 6 `--node-lost-after`
/// (`SwarmUpdate::node_lost_after_ms`, `SwarmInfo::node_lost_after_ms`),
/// version 7 `--link-profile` (`SwarmUpdate::link_profile`,
/// `SwarmInfo::link_profile`), version 8 the autopilot
/// (`SwarmUpdate::autopilot`, `SwarmInfo::autopilot`, `Reply::Nodes::autopilot`),
/// version 9 the encrypted overlay's relay (`SwarmInfo::tunnel`), version
/// 10 registry credentials (`ImagePull::auth`, `RegistryLogin`, `LoggedIn`,
/// `ServiceCreate::registry_auth`, `ServiceUpdate::registry_auth`) and
/// `SwarmInfo::registries`, image pull progress (`ImagePullStatus`,
/// `PullProgress`, `Pulled`), version 11 layer sharing
/// (`SwarmUpdate::layer_sharing`, `SwarmInfo::layer_sharing`) and the image
/// pulls of a service's preparing tasks (`Reply::Tasks::pulls`), version
/// 12 secrets, configs, healthchecks and jobs (issue #17), version 13
/// volumes (`VolumeList`, `VolumeRemove`, `Volumes`, `VolumesRemoved`),
/// version 14 stacks (`FileEnsure`, `FileEnsured`).
pub const API_VERSION: u8 = 14;

pub use crate::types::RegistryAuth;

/// A CLI request.
// Messages are built once and moved; boxing the big variants buys nothing on the wire.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Version,
    SwarmInit {
        advertise_addr: String,
        availability: Availability,
        /// Where the swarm port listens (`IP[:PORT]`, empty: `0.0.0.0:2377`).
        listen_addr: String,
        /// Restart this manager as the only manager of its swarm, keeping the state.
        force_new_cluster: bool,
        /// `--default-addr-pool`, `--default-addr-pool-mask-length`, `--data-path-port`.
        network: Box<NetworkDefaults>,
        /// `--autolock`: the reply carries the unlock key.
        autolock: bool,
    },
    NodeList,
    NodeInspect {
        node: String,
    },
    ServiceCreate {
        spec: Box<ServiceSpec>,
        /// `--with-registry-auth`: the CLI user's credentials for the image's
        /// registry, kept with the service and sent only to the nodes that
        /// run its tasks.
        registry_auth: Option<RegistryAuth>,
    },
    ServiceList,
    ServiceInspect {
        service: String,
    },
    ServiceScale {
        service: String,
        replicas: u64,
    },
    ServiceRemove {
        service: String,
    },
    /// Tasks of a service, oldest first.
    TaskList {
        service: String,
    },
    /// Log bytes of a service's tasks after the given per-task offsets.
    ServiceLogs {
        service: String,
        tail_lines: Option<u64>,
        cursor: Vec<LogCursor>,
    },
    ImageLoad {
        path: String,
    },
    ImageList,
    ImagePull {
        reference: String,
        /// The CLI user's credentials for the image's registry, if logged in.
        auth: Option<RegistryAuth>,
    },
    /// Replace a service's spec (`service update`), or roll back to its
    /// previous spec when `rollback` is set (then `spec` is ignored).
    ServiceUpdate {
        service: String,
        spec: Box<ServiceSpec>,
        rollback: bool,
        /// `--with-registry-auth`: replaces the service's credentials (none:
        /// they are kept).
        registry_auth: Option<RegistryAuth>,
    },
    /// `node update`: availability and label changes (`self` names this node).
    NodeUpdate {
        node: String,
        availability: Option<Availability>,
        label_add: Vec<(String, String)>,
        label_rm: Vec<String>,
    },
    /// `swarm join-token [--rotate] worker|manager`.
    SwarmJoinToken {
        role: NodeRole,
        rotate: bool,
    },
    /// `swarm join --token T [--advertise-addr A] [--listen-addr A] REMOTE`.
    SwarmJoin {
        token: String,
        remote_addr: String,
        advertise_addr: String,
        listen_addr: String,
        availability: Availability,
    },
    /// `swarm leave [--force]`.
    SwarmLeave {
        force: bool,
    },
    /// `node promote` (role Manager) / `node demote` (role Worker) of one node.
    NodeSetRole {
        node: String,
        role: NodeRole,
    },
    /// `node rm [--force]` of one node.
    NodeRemove {
        node: String,
        force: bool,
    },
    /// `swarm update`: each `Some` setting replaces the swarm's.
    SwarmUpdate {
        dispatcher_heartbeat_ms: Option<u64>,
        /// `--autolock=true|false`; turning it on is answered with [`Reply::UnlockKey`].
        autolock: Option<bool>,
        /// `--node-lost-after` in ms (0: off).
        node_lost_after_ms: Option<u64>,
        /// `--link-profile lan|edge`.
        link_profile: Option<crate::types::LinkProfile>,
        /// `--managers`, `--manager-lost-after`, `--manager-spread-label`.
        autopilot: AutopilotUpdate,
        /// `--layer-sharing=true|false`: managers serve image blobs to the swarm.
        layer_sharing: Option<bool>,
    },
    /// `shoal info`: this node and its swarm, as it sees them.
    Info,
    /// `network create`; answered with [`Reply::NetworkCreated`].
    NetworkCreate {
        spec: Box<NetworkSpec>,
    },
    /// `network ls`: swarm networks (none outside a swarm; the CLI adds `host` and `none`).
    NetworkList,
    /// `network inspect [-v]` of one network (name, id or id prefix).
    NetworkInspect {
        network: String,
    },
    /// `network rm` of one network.
    NetworkRemove {
        network: String,
    },
    /// `swarm unlock`: the key a person typed (checked by a locked manager;
    /// any other node says why there is nothing to unlock).
    SwarmUnlock {
        key: String,
    },
    /// `swarm unlock-key [--rotate]`; answered with [`Reply::UnlockKey`].
    SwarmUnlockKey {
        rotate: bool,
    },
    /// `swarm backup -o FILE`: this manager writes a tar archive of its data
    /// dir (a consistent copy of its database and its key files as on disk)
    /// to `output`, an absolute path on its host; answered with [`Reply::Backup`].
    SwarmBackup {
        output: String,
    },
    /// Where this node's pull of `reference` is; answered with
    /// [`Reply::PullProgress`] (none: no such pull in flight).
    ImagePullStatus {
        reference: String,
    },
    /// `shoal login`: checks credentials against a registry (`host[:port]`,
    /// `docker.io` for Docker Hub) from the asked node, with its trust
    /// settings; answered with [`Reply::LoggedIn`]. Nothing is kept.
    RegistryLogin {
        registry: String,
        auth: RegistryAuth,
    },
    /// `secret create` / `config create`; answered with [`Reply::FileCreated`].
    FileCreate {
        kind: crate::types::FileKind,
        spec: Box<crate::types::FileSpec>,
    },
    /// `secret ls` / `config ls`; answered with [`Reply::Files`] (a
    /// secret's data is never in a reply: it comes back empty).
    FileList {
        kind: crate::types::FileKind,
    },
    /// `secret inspect` / `config inspect` of one (id, name or id prefix).
    FileInspect {
        kind: crate::types::FileKind,
        key: String,
    },
    /// `secret rm` / `config rm` of one.
    FileRemove {
        kind: crate::types::FileKind,
        key: String,
    },
    /// `volume ls` / `volume inspect`: the named volumes on the asked node
    /// (all of them, or those named).
    VolumeList {
        names: Vec<String>,
    },
    /// `volume rm NAME` (refused while a task of this node uses it, unless
    /// `force`), or `volume prune` (`name` empty: every volume no task of
    /// this node uses).
    VolumeRemove {
        name: String,
        force: bool,
    },
    /// `stack deploy`: creates a secret or config unless one of that name
    /// holds the same data already (then kept as it is); one holding other
    /// data is refused (secrets and configs never change). Answered with
    /// [`Reply::FileEnsured`].
    FileEnsure {
        kind: crate::types::FileKind,
        spec: Box<crate::types::FileSpec>,
    },
}

/// Where a request may run, decided per variant in [`Request::class`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    /// About the node it is sent to (its runtime, its membership): run
    /// there, never forwarded, and refused when another manager forwards it.
    Local,
    /// Reads the swarm's state: forwarded to the leader, answered from this
    /// manager's own (possibly stale) state when the leader is unreachable.
    Read,
    /// Changes the swarm's state: only the leader proposes it.
    Write,
}

impl Request {
    /// Where this request may run. One exhaustive match, so a new variant
    /// cannot be added without deciding.
    pub fn class(&self) -> RequestClass {
        use RequestClass::{Local, Read, Write};
        match self {
            Request::Ping | Request::Version => Local,
            // `shoal info` describes the node asked, as Docker's does.
            Request::Info => Local,
            // Membership changes of the node asked: they act on its own store and links.
            Request::SwarmInit { .. } | Request::SwarmJoin { .. } | Request::SwarmLeave { .. } => Local,
            // Images live in the asked node's runtime (`image load` names a path on it).
            Request::ImageLoad { .. } | Request::ImageList | Request::ImagePull { .. } => Local,
            Request::NodeList | Request::NodeInspect { .. } => Read,
            Request::ServiceList | Request::ServiceInspect { .. } | Request::TaskList { .. } => Read,
            // Logs are gathered by the leader from every node; a lone manager reads its own.
            Request::ServiceLogs { .. } => Read,
            // Showing a token reads the cluster's secrets; rotating replaces one.
            Request::SwarmJoinToken { rotate: false, .. } => Read,
            Request::SwarmJoinToken { rotate: true, .. } => Write,
            Request::ServiceCreate { .. }
            | Request::ServiceScale { .. }
            | Request::ServiceRemove { .. }
            | Request::ServiceUpdate { .. } => Write,
            Request::NodeUpdate { .. } | Request::NodeSetRole { .. } | Request::NodeRemove { .. } => Write,
            Request::SwarmUpdate { .. } => Write,
            // A locked manager answers it before anything else runs; elsewhere it explains.
            Request::SwarmUnlock { .. } => Local,
            Request::SwarmUnlockKey { rotate: false } => Read,
            Request::SwarmUnlockKey { rotate: true } => Write,
            Request::NetworkList | Request::NetworkInspect { .. } => Read,
            Request::NetworkCreate { .. } | Request::NetworkRemove { .. } => Write,
            // A copy of the asked manager's own data dir, written on its host: no quorum needed.
            Request::SwarmBackup { .. } => Local,
            // The asked node's own registry client (its CAs, its network).
            Request::RegistryLogin { .. } => Local,
            Request::ImagePullStatus { .. } => Local,
            Request::FileList { .. } | Request::FileInspect { .. } => Read,
            Request::FileCreate { .. } | Request::FileRemove { .. } | Request::FileEnsure { .. } => Write,
            // Volumes live in the asked node's data dir.
            Request::VolumeList { .. } | Request::VolumeRemove { .. } => Local,
        }
    }

    /// The CLI command that sends this request, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Version => "version",
            Request::SwarmInit { .. } => "swarm init",
            Request::NodeList => "node ls",
            Request::NodeInspect { .. } => "node inspect",
            Request::ServiceCreate { .. } => "service create",
            Request::ServiceList => "service ls",
            Request::ServiceInspect { .. } => "service inspect",
            Request::ServiceScale { .. } => "service scale",
            Request::ServiceRemove { .. } => "service rm",
            Request::TaskList { .. } => "service ps",
            Request::ServiceLogs { .. } => "service logs",
            Request::ImageLoad { .. } => "image load",
            Request::ImageList => "image ls",
            Request::ImagePull { .. } => "image pull",
            Request::ServiceUpdate { rollback: false, .. } => "service update",
            Request::ServiceUpdate { rollback: true, .. } => "service rollback",
            Request::NodeUpdate { .. } => "node update",
            Request::SwarmJoinToken { .. } => "swarm join-token",
            Request::SwarmJoin { .. } => "swarm join",
            Request::SwarmLeave { .. } => "swarm leave",
            Request::NodeSetRole { role: NodeRole::Manager, .. } => "node promote",
            Request::NodeSetRole { role: NodeRole::Worker, .. } => "node demote",
            Request::NodeRemove { .. } => "node rm",
            Request::SwarmUpdate { .. } => "swarm update",
            Request::Info => "info",
            Request::NetworkCreate { .. } => "network create",
            Request::NetworkList => "network ls",
            Request::NetworkInspect { .. } => "network inspect",
            Request::NetworkRemove { .. } => "network rm",
            Request::SwarmUnlock { .. } => "swarm unlock",
            Request::SwarmUnlockKey { .. } => "swarm unlock-key",
            Request::SwarmBackup { .. } => "swarm backup",
            Request::RegistryLogin { .. } => "login",
            Request::ImagePullStatus { .. } => "image pull",
            Request::FileCreate { kind: crate::types::FileKind::Secret, .. } => "secret create",
            Request::FileCreate { kind: crate::types::FileKind::Config, .. } => "config create",
            Request::FileList { kind: crate::types::FileKind::Secret } => "secret ls",
            Request::FileList { kind: crate::types::FileKind::Config } => "config ls",
            Request::FileInspect { kind: crate::types::FileKind::Secret, .. } => "secret inspect",
            Request::FileInspect { kind: crate::types::FileKind::Config, .. } => "config inspect",
            Request::FileRemove { kind: crate::types::FileKind::Secret, .. } => "secret rm",
            Request::FileRemove { kind: crate::types::FileKind::Config, .. } => "config rm",
            Request::VolumeList { .. } => "volume ls",
            Request::VolumeRemove { name, .. } if name.is_empty() => "volume prune",
            Request::VolumeRemove { .. } => "volume rm",
            Request::FileEnsure { .. } => "stack deploy",
        }
    }
}

/// Where a log reader left off in one task's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub task_id: String,
    pub offset: u64,
}

/// A piece of one task's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub task_id: String,
    /// Swarm's prefix: `svc.1.taskid@node`.
    pub source: String,
    pub data: Vec<u8>,
}

/// A service with its task counts, for `service ls`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: Service,
    pub running: u64,
    pub desired: u64,
    /// Jobs: the slots of the current iteration that completed (0 for services).
    pub completed: u64,
}

/// Where one layer of an image pull is (Docker's per-layer lines). Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullLayerState {
    Waiting,
    Downloading,
    AlreadyExists,
    Complete,
}

/// One layer of an image pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullLayer {
    pub digest: String,
    pub size_bytes: u64,
    pub done_bytes: u64,
    pub state: PullLayerState,
}

/// An image pull in flight, or done: its layers for this node's platform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// The image's root digest (index or manifest), once resolved.
    pub digest: String,
    pub layers: Vec<PullLayer>,
}

/// An image known to the node's runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub name: String,
    pub digest: String,
    pub size_bytes: u64,
    pub platforms: Vec<String>,
}

/// What a daemon says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub platform: String,
    pub containerd: String,
    pub node_id: String,
    pub swarm: bool,
}

/// What `shoal info` shows (Docker's `docker info` Swarm section).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmInfo {
    pub version: VersionInfo,
    /// `inactive` (no swarm), `active`, or `pending` (joining).
    pub local_state: String,
    pub is_manager: bool,
    /// The address other nodes reach this node at (empty outside a swarm).
    pub node_addr: String,
    /// Managers' swarm addresses as this node knows them.
    pub manager_addrs: Vec<String>,
    /// The rest is known to managers only (empty / 0 on workers).
    pub cluster_id: String,
    pub managers: u64,
    pub nodes: u64,
    pub settings: Option<crate::types::SwarmSettings>,
    /// The raft leader's node id, when known.
    pub leader_id: String,
    /// This node's plugins and probe warnings (Docker's `Plugins` and
    /// `WARNING:` lines), as in its [`crate::types::NodeDescription`].
    pub plugins: Vec<crate::types::Plugin>,
    pub warnings: Vec<String>,
    /// Docker's `Autolock Managers`: the swarm's autolock setting (managers only).
    pub autolock: bool,
    /// `--node-lost-after` in ms, 0 when off (managers only).
    pub node_lost_after_ms: u64,
    /// `--link-profile` (managers only).
    pub link_profile: crate::types::LinkProfile,
    /// The autopilot's state, when it is on (managers only).
    pub autopilot: Option<AutopilotStatus>,
    /// This node's encrypted-overlay relay, once it takes part in an
    /// encrypted network (issue #15).
    pub tunnel: Option<TunnelStatus>,
    /// How this node reaches registries (its daemon's flags).
    pub registries: RegistrySettings,
    /// `--layer-sharing`: whether managers serve image blobs to the swarm's
    /// nodes (managers only).
    pub layer_sharing: Option<bool>,
}

/// `shoal info`'s `Registries:` section: the node's registry settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// `--insecure-registry` (loopback registries always are).
    pub insecure: Vec<String>,
    /// `--registry-mirror`, as `REGISTRY=URL` (`docker.io` for Docker Hub's).
    pub mirrors: Vec<String>,
    /// `--registry-ca`, as `[REGISTRY=]FILE`.
    pub ca_files: Vec<String>,
    /// The system CA bundle trusted besides Mozilla's roots, if one was found.
    pub system_ca_file: String,
}

/// `shoal info`'s `Encrypted Overlay:` section: this node's tunnel relay and
/// what it passed and dropped since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// The node's tunnel address.
    pub addr: String,
    /// The UDP port relays use.
    pub port: u16,
    /// Other nodes on the tunnel network, and how many of their keys this node holds.
    pub peers: u64,
    pub peers_with_keys: u64,
    /// Why the relay cannot run (empty when it runs).
    pub error: String,
    pub sealed: u64,
    pub opened: u64,
    pub replayed: u64,
    pub tampered: u64,
    pub unknown_key: u64,
    pub malformed: u64,
    pub unknown_sender: u64,
    pub forbidden: u64,
    pub no_peer: u64,
}

/// `swarm init|update --managers N --manager-lost-after D
/// --manager-spread-label L`: each `Some` replaces the swarm's setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotUpdate {
    /// 0 turns the autopilot off.
    pub managers: Option<u8>,
    pub manager_lost_after_ms: Option<u64>,
    /// Empty drops the spread label.
    pub spread_label: Option<String>,
}

impl AutopilotUpdate {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.managers.is_none() && self.manager_lost_after_ms.is_none() && self.spread_label.is_none()
    }
}

/// What the autopilot is doing, for `shoal info`, `node ls` and `node inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotStatus {
    pub settings: crate::types::AutopilotSettings,
    /// Whether this is the leader's view (the rest is only known there).
    pub leader_view: bool,
    /// Healthy managers (reachable raft voters) as `hostname (id)`.
    pub healthy: Vec<String>,
    /// What it does now: `nothing to do`, or the pending action and its
    /// reason, or why it waits (quorum lost: naming the surviving managers).
    pub state: String,
    /// Node id and, when it may not become a manager, why (leader's view only).
    pub eligibility: Vec<(String, Option<String>)>,
}

/// A network with what `network ls`/`inspect` show beside the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkDetail {
    pub network: Network,
    /// Nodes with an address on it: (hostname, underlay IP), Docker's `Peers`.
    pub peers: Vec<(String, String)>,
    /// Services attached to it, for `inspect -v`.
    pub services: Vec<NetworkService>,
}

/// A service on a network, for `network inspect -v` (Docker's `Services`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkService {
    pub name: String,
    pub id: String,
    /// The VIP on this network, if any.
    pub vip: Option<Ipv4Net>,
    pub ports: Vec<String>,
    /// (task name `web.1.ID`, its address, node hostname) of live tasks.
    pub tasks: Vec<(String, Ipv4Net, String)>,
}

/// Machine-readable error classes, so the CLI can pick exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    Internal,
}

/// A daemon reply.
// Messages are built once and moved; boxing the big variants buys nothing on the wire.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Error {
        kind: ErrorKind,
        message: String,
    },
    Pong,
    Version(VersionInfo),
    /// `worker_token` is the full worker join token.
    SwarmInit {
        node_id: String,
        advertise_addr: String,
        worker_token: String,
        /// The unlock key (`SHLKEY-1-...`) when the swarm was created with `--autolock`.
        unlock_key: String,
    },
    /// `leader_id` is empty when no leader is known; `reachable` lists the
    /// managers the answering manager can reach (Swarm's Reachable), itself included.
    Nodes {
        nodes: Vec<Node>,
        self_id: String,
        leader_id: String,
        reachable: Vec<String>,
        /// The autopilot's state, when it is on (as the leader sees it, or
        /// as this manager does while no leader is reachable).
        autopilot: Option<AutopilotStatus>,
    },
    Node(Box<Node>),
    ServiceCreated {
        id: String,
        warnings: Vec<String>,
    },
    Services(Vec<ServiceSummary>),
    Service(Box<Service>),
    Tasks {
        service: Box<Service>,
        tasks: Vec<Task>,
        nodes: Vec<Node>,
        /// The image pulls of tasks preparing on their nodes, by task id, as
        /// the leader last heard them (a few seconds old at most; none from a
        /// manager that is not the leader).
        pulls: Vec<(String, PullProgress)>,
    },
    Logs {
        chunks: Vec<LogChunk>,
        cursor: Vec<LogCursor>,
    },
    Images(Vec<ImageSummary>),
    Loaded(Vec<String>),
    Removed(Vec<String>),
    ServiceUpdated {
        warnings: Vec<String>,
    },
    /// The join token for `role` and the address of the answering manager.
    JoinToken {
        role: NodeRole,
        token: String,
        manager_addr: String,
    },
    /// This node joined a swarm as `role`.
    Joined {
        role: NodeRole,
        node_id: String,
    },
    /// This node left its swarm.
    Left,
    Info(Box<SwarmInfo>),
    /// `service logs`, gathered from every node that holds the service's
    /// tasks. `warnings` name the nodes whose logs are missing (the CLI
    /// prints each once); `more` says a size bound cut some log, so asking
    /// again at once with `cursor` returns more.
    ServiceLogs {
        chunks: Vec<LogChunk>,
        cursor: Vec<LogCursor>,
        warnings: Vec<String>,
        more: bool,
    },
    /// The id of a network just created.
    NetworkCreated {
        id: String,
    },
    Networks(Vec<NetworkDetail>),
    /// The swarm's unlock key (`SHLKEY-1-...`): `swarm unlock-key`, and
    /// `swarm update --autolock=true`. After a rotation, `previous_needed_by`
    /// names the managers the leader cannot reach: each still unlocks with
    /// the previous key until it has caught up.
    UnlockKey {
        key: String,
        rotated: bool,
        previous_needed_by: Vec<String>,
    },
    /// `swarm backup` wrote `path`: `size_bytes` in all, the database copy as
    /// of raft index `raft_index`, and `files` (archive member names).
    Backup {
        path: String,
        size_bytes: u64,
        raft_index: u64,
        files: Vec<String>,
    },
    /// The registry accepted the credentials of [`Request::RegistryLogin`].
    LoggedIn,
    PullProgress(Option<PullProgress>),
    /// `image pull` done: the image's name, its layers as pulled, and
    /// whether anything was downloaded.
    Pulled {
        name: String,
        progress: PullProgress,
        downloaded: bool,
    },
    /// The id of a secret or config just created.
    FileCreated {
        id: String,
    },
    /// Secrets (data always empty) or configs (data included).
    Files(Vec<crate::types::StoredFile>),
    /// Named volumes of a node.
    Volumes(Vec<VolumeInfo>),
    /// Volumes removed and the bytes they held.
    VolumesRemoved {
        names: Vec<String>,
        reclaimed_bytes: u64,
    },
    /// A secret or config created (`created`) or found holding the same data.
    FileEnsured {
        id: String,
        created: bool,
    },
}

/// One named volume on a node (`DATA_DIR/volumes/NAME/_data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: String,
    /// Creation time (the directory's), unix nanoseconds.
    pub created_at: u64,
    /// Tasks of this node whose spec mounts it (names as `service ps`).
    pub used_by: Vec<String>,
}

impl Reply {
    /// Shorthand for an error reply.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply::Error { kind, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_has_a_class() {
        let check = |req: Request, class: RequestClass| assert_eq!(req.class(), class, "{req:?}");
        check(Request::Ping, RequestClass::Local);
        check(Request::ImageLoad { path: "/tmp/a.tar".into() }, RequestClass::Local);
        check(Request::SwarmLeave { force: true }, RequestClass::Local);
        check(Request::Info, RequestClass::Local);
        check(Request::NodeList, RequestClass::Read);
        check(Request::ServiceLogs { service: "web".into(), tail_lines: None, cursor: vec![] }, RequestClass::Read);
        check(Request::SwarmJoinToken { role: NodeRole::Worker, rotate: false }, RequestClass::Read);
        check(Request::SwarmJoinToken { role: NodeRole::Worker, rotate: true }, RequestClass::Write);
        check(Request::ServiceScale { service: "web".into(), replicas: 2 }, RequestClass::Write);
        check(Request::NodeRemove { node: "n".into(), force: false }, RequestClass::Write);
        check(
            Request::SwarmUpdate {
                dispatcher_heartbeat_ms: Some(5_000),
                autolock: None,
                node_lost_after_ms: None,
                link_profile: None,
                autopilot: AutopilotUpdate::default(),
                layer_sharing: None,
            },
            RequestClass::Write,
        );
        check(Request::SwarmUnlock { key: String::new() }, RequestClass::Local);
        check(Request::SwarmUnlockKey { rotate: false }, RequestClass::Read);
        check(Request::SwarmUnlockKey { rotate: true }, RequestClass::Write);
        check(Request::SwarmBackup { output: "/tmp/b.tar".into() }, RequestClass::Local);
    }

    #[test]
    fn names_are_the_cli_commands() {
        assert_eq!(Request::ImageLoad { path: String::new() }.name(), "image load");
        assert_eq!(Request::NodeSetRole { node: "n".into(), role: NodeRole::Manager }.name(), "node promote");
        assert_eq!(Request::TaskList { service: "web".into() }.name(), "service ps");
    }
}
