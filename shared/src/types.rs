//! Cluster objects: services, tasks, nodes, networks and the cluster itself.
//!
//! These are the replicated state's records and travel inside raft entries
//! and control-API replies, so they are serializable (postcard). Rules that
//! keep old data readable: fields are only appended at the end of a struct,
//! enum variants only appended, integers have explicit widths, durations are
//! `u64` nanoseconds (`_ns`), timestamps are [`UnixNanos`].

use crate::clock::UnixNanos;
use crate::platform::Platform;
use crate::task::TaskState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Swarm's default stop grace period: 10 s.
pub const STOP_GRACE_NS_DEFAULT: u64 = 10_000_000_000;
/// Swarm's default restart delay: 5 s.
pub const RESTART_DELAY_NS_DEFAULT: u64 = 5_000_000_000;
/// Swarm's default update/rollback monitor window: 5 s.
pub const MONITOR_NS_DEFAULT: u64 = 5_000_000_000;
/// Tasks kept per slot (current plus history), as Swarm's `TaskHistoryRetentionLimit`.
pub const TASK_HISTORY_PER_SLOT_MAX: usize = 5;

/// Version and timestamps of a stored object. `version` is the raft index of
/// the entry that last changed it (Swarm's `Version.Index`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u64,
    pub created_at: UnixNanos,
    pub updated_at: UnixNanos,
}

/// A service's desired state, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task: TaskSpec,
    pub mode: ServiceMode,
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    /// Ports named with `--publish` (Swarm's `EndpointSpec.Ports`), as the
    /// user wrote them: an ingress port without a published port gets one
    /// from [`PORT_AUTO_MIN`]..=[`PORT_AUTO_MAX`] in [`Service::endpoint`].
    /// Host-mode ones steer placement.
    pub ports: Vec<PortConfig>,
    /// `--endpoint-mode` (Swarm's `EndpointSpec.Mode`).
    pub endpoint_mode: EndpointMode,
}

/// What each task of a service runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub container: ContainerSpec,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub placement: Placement,
    pub force_update: u64,
    /// Networks the task attaches to (Swarm's `TaskTemplate.Networks`),
    /// `target` being a network id once control accepted the spec (the CLI
    /// sends names). Empty: no overlay network. [`HOST_NETWORK_ID`] or
    /// [`NONE_NETWORK_ID`] alone: the host's namespace, or loopback only.
    pub networks: Vec<NetworkAttachmentConfig>,
}

/// The container of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The reference as given, pinned with `@sha256:` once resolved.
    pub image: String,
    /// Overrides the image's entrypoint (`--entrypoint`).
    pub command: Vec<String>,
    /// Overrides the image's cmd (positional `COMMAND ARG...`).
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
    /// Secrets the task gets as files (`--secret`), `id` set once control
    /// accepted the spec (the CLI sends names).
    pub secrets: Vec<FileReference>,
    /// Configs the task gets as files (`--config`), likewise.
    pub configs: Vec<FileReference>,
    /// `--health-*` / `--no-healthcheck`; `None`: the image's `HEALTHCHECK`, if any.
    pub healthcheck: Option<HealthConfig>,
}

/// A secret or config a task's container gets as a file (Swarm's
/// `SecretReference` / `ConfigReference` with its `File`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// The secret's or config's id (empty in a spec the CLI sent).
    pub id: String,
    /// Its name, as the user gave it (`source=`).
    pub name: String,
    /// A secret: the file name under `/run/secrets/` (or an absolute path);
    /// a config: the absolute path in the container (default `/NAME`).
    pub target: String,
    /// Owner and group of the file, numeric as text (`"0"` by default).
    pub uid: String,
    pub gid: String,
    /// Permission bits (`0o444` by default).
    pub mode: u32,
}

/// Default permission bits of a secret or config file.
pub const FILE_REFERENCE_MODE_DEFAULT: u32 = 0o444;

/// Swarm's `HealthConfig` (the image's `HEALTHCHECK`, `--health-*`).
/// Durations of 0 mean "inherit" (from the image, else Docker's defaults:
/// 30 s interval, 30 s timeout, 0 start period, 3 retries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `[]`: inherit; `["NONE"]`: no check; `["CMD", args..]`; `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub start_period_ns: u64,
    /// Consecutive failures that make a task unhealthy; 0: inherit.
    pub retries: u64,
}

/// A mount into a task's container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// Docker's volume name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255
/// bytes: a volume is one directory under a node's `volumes/`, never a path
/// (`..` or `/` would reach outside it).
pub fn valid_volume_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Mount kinds, as Swarm's `--mount type=`. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

/// `PortConfig.publish_mode` of a port published on every node through the routing mesh.
pub const PUBLISH_MODE_INGRESS: &str = "ingress";
/// `PortConfig.publish_mode` of a port bound on the node that runs the task.
pub const PUBLISH_MODE_HOST: &str = "host";

/// A published port. Host-mode ports steer placement (two live tasks never
/// publish the same host port and protocol on one node); nothing binds
/// them yet, since tasks use the host network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub target_port: u32,
    /// 0 when not published.
    pub published_port: u32,
    /// [`PUBLISH_MODE_INGRESS`] or [`PUBLISH_MODE_HOST`].
    pub publish_mode: String,
}

/// CPU and memory figures: `nano_cpus` (1e9 = one CPU) and bytes. Zero means unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSet {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

/// Limits are enforced through cgroups; reservations steer placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub limits: ResourceSet,
    pub reservations: ResourceSet,
}

/// When a task whose container exited is replaced. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

impl RestartCondition {
    /// Swarm's spelling (`any`, `on-failure`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCondition::None => "none",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::Any => "any",
        }
    }
}

/// Swarm's restart policy. `max_attempts` 0 means unlimited; `window_ns` 0
/// means attempts count over the task slot's whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ns: u64,
    pub max_attempts: u64,
    pub window_ns: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy { condition: RestartCondition::Any, delay_ns: RESTART_DELAY_NS_DEFAULT, max_attempts: 0, window_ns: 0 }
    }
}

/// Where tasks may go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// Filled from the image's index or config; empty means any.
    pub platforms: Vec<Platform>,
    /// `--replicas-max-per-node`; 0 means unlimited.
    pub max_replicas_per_node: u64,
    /// Spread descriptors from `--placement-pref spread=DESCRIPTOR`
    /// (`node.labels.zone`), outermost first.
    pub preferences: Vec<String>,
}

/// Replicated (N tasks) or global (one per eligible node). Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// `--mode replicated-job`: `total_completions` tasks must exit 0, at
    /// most `max_concurrent` running at once.
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    /// `--mode global-job`: one task to completion on every eligible node,
    /// nodes that join later included.
    GlobalJob,
}

impl ServiceMode {
    /// A job (runs to completion) rather than a service.
    pub fn is_job(self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob)
    }

    /// Tasks go by slot (1..=N), not by node.
    pub fn is_replicated(self) -> bool {
        matches!(self, ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. })
    }

    /// Docker's spelling in `service ls`: `replicated`, `global`, `replicated job`, `global job`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated job",
            ServiceMode::GlobalJob => "global job",
        }
    }
}

/// What a rolling update does on failure. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

/// Which of old and new task goes first. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// Swarm's `UpdateConfig` / `RollbackConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    pub parallelism: u64,
    pub delay_ns: u64,
    pub failure_action: FailureAction,
    pub monitor_ns: u64,
    pub max_failure_ratio: f32,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ns: 0,
            failure_action: FailureAction::Pause,
            monitor_ns: MONITOR_NS_DEFAULT,
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

impl ServiceSpec {
    /// A spec with Swarm's defaults for everything but the name and image.
    pub fn new(name: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            labels: BTreeMap::new(),
            task: TaskSpec {
                container: ContainerSpec {
                    image: image.to_string(),
                    command: Vec::new(),
                    args: Vec::new(),
                    env: Vec::new(),
                    labels: BTreeMap::new(),
                    dir: String::new(),
                    user: String::new(),
                    hostname: String::new(),
                    stop_grace_ns: STOP_GRACE_NS_DEFAULT,
                    stop_signal: String::new(),
                    mounts: Vec::new(),
                    init: false,
                    secrets: Vec::new(),
                    configs: Vec::new(),
                    healthcheck: None,
                },
                resources: Resources::default(),
                restart: RestartPolicy::default(),
                placement: Placement::default(),
                force_update: 0,
                networks: Vec::new(),
            },
            mode: ServiceMode::Replicated { replicas: 1 },
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            ports: Vec::new(),
            endpoint_mode: EndpointMode::Vip,
        }
    }
}

/// A stored service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub meta: Meta,
    pub spec: ServiceSpec,
    pub previous_spec: Option<ServiceSpec>,
    /// Progress of the last rolling update or rollback; `None` before the first.
    pub update_status: Option<UpdateStatus>,
    /// What the leader allocated for the spec's endpoint: ports with their
    /// published port, and a VIP per attached network (mode vip only).
    pub endpoint: Endpoint,
}

/// Where a rolling update stands (Swarm's `UpdateStatus.State`). Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// Swarm's spelling (`updating`, `rollback_completed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// An update or rollback is replacing tasks.
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// A rollback (manual or automatic) is or was under way.
    pub fn is_rollback(self) -> bool {
        matches!(self, UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
    }
}

/// Swarm's `UpdateStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: UnixNanos,
    /// 0 until the update completes.
    pub completed_at: UnixNanos,
    pub message: String,
    /// Raft index of the entry that started this update or rollback, set by
    /// `apply`: tasks with `service_version >= started_index` were created
    /// during it (a clock-independent marker).
    pub started_index: u64,
}

impl UpdateStatus {
    /// A status for an update or rollback starting at `now`.
    pub fn started(state: UpdateState, now: UnixNanos, message: &str) -> UpdateStatus {
        UpdateStatus { state, started_at: now, completed_at: 0, message: message.to_string(), started_index: 0 }
    }
}

/// What the agent last observed of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub timestamp: UnixNanos,
    pub message: String,
    pub err: String,
    pub exit_code: Option<i32>,
}

impl TaskStatus {
    /// A status in `state` at `timestamp` with a message.
    pub fn new(state: TaskState, timestamp: UnixNanos, message: &str) -> TaskStatus {
        TaskStatus { state, timestamp, message: message.to_string(), err: String::new(), exit_code: None }
    }
}

/// One scheduled instance of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub meta: Meta,
    pub service_id: String,
    /// 1-based slot for replicated services; 0 for global ones (then `node_id` names the slot).
    pub slot: u64,
    /// Empty until the scheduler assigns a node.
    pub node_id: String,
    pub spec: TaskSpec,
    pub service_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// Earliest time the task may be started (restart delay); 0 means now.
    pub not_before: UnixNanos,
    /// Restarts of this slot before this task (0 for the slot's first task).
    pub attempt: u64,
    /// The task's address on each overlay network it attaches to (its
    /// spec's networks, plus `ingress` when its service publishes ingress
    /// ports), allocated by the leader before the task is placed. A task
    /// holds them until it is terminal (see `manager::network`).
    pub networks: Vec<NetworkAttachment>,
}

/// How many in-place restart times a report or the state keeps per task
/// (the newest): enough for any restart window that counts up to this many
/// attempts.
pub const IN_PLACE_TIMES_MAX: usize = 64;

/// A worker's account of the restarts it made of one task in place, the
/// same task, while no manager was in reach (issue #14), as it reports them
/// (`Wire::RestartsInPlace`) and as the leader proposes them
/// (`Op::SetRestartsInPlace`). Idempotent: said again until the task's
/// status shows it, and counted once per `session`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartsInPlace {
    pub task_id: String,
    /// The worker's daemon run that counted them (random at its start): a
    /// daemon that restarted counts from 0 again, in a new session.
    pub session: u64,
    /// Restarts made in this session, in all.
    pub count: u64,
    /// How long before the report each of the newest restarts was made, by
    /// the worker's monotonic clock (never its wall clock, which may be
    /// months off), oldest first, at most [`IN_PLACE_TIMES_MAX`].
    pub ago_ms: Vec<u64>,
}

/// What the replicated state holds of a task's in-place restarts
/// (`State::restarts_in_place`, by task id): the orchestrator counts them
/// as attempts of the task's slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceRestarts {
    /// Restarts counted, over every session.
    pub total: u64,
    /// The session of the latest account, and its count.
    pub session: u64,
    pub session_count: u64,
    /// When the newest restarts were made, on the clock of the leader that
    /// proposed them (the entry's time less each `ago_ms`), oldest first, at
    /// most [`IN_PLACE_TIMES_MAX`].
    pub at: Vec<UnixNanos>,
}

impl InPlaceRestarts {
    /// Takes a worker's account stamped `at` (the entry's time); false when
    /// it adds nothing (an account of this session already taken).
    pub fn take(&mut self, r: &RestartsInPlace, at: UnixNanos) -> bool {
        if r.session != self.session {
            self.session = r.session;
            self.session_count = 0;
        }
        if r.count <= self.session_count {
            return false;
        }
        let new = r.count - self.session_count;
        self.total = self.total.saturating_add(new);
        self.session_count = r.count;
        // The newest `new` restarts of the account are the ones not taken before.
        let fresh = r.ago_ms.len().min(usize::try_from(new).unwrap_or(usize::MAX));
        let times = r.ago_ms[r.ago_ms.len() - fresh..].iter().map(|ago| at.saturating_sub(ago.saturating_mul(1_000_000)));
        self.at.extend(times);
        if self.at.len() > IN_PLACE_TIMES_MAX {
            self.at.drain(..self.at.len() - IN_PLACE_TIMES_MAX);
        }
        true
    }
}

/// Node role. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    Worker,
    Manager,
}

impl NodeRole {
    /// Docker's lowercase name (`node inspect`'s `Spec.Role`, filters).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
}

/// Scheduling availability. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

impl Availability {
    /// Swarm's lowercase spelling for flags.
    pub fn parse(s: &str) -> Option<Availability> {
        match s {
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            _ => None,
        }
    }

    /// Swarm's capitalised form for tables.
    pub fn as_title(self) -> &'static str {
        match self {
            Availability::Active => "Active",
            Availability::Pause => "Pause",
            Availability::Drain => "Drain",
        }
    }
}

/// A node's liveness as the managers see it. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Unknown,
    Down,
    Ready,
    Disconnected,
}

impl NodeState {
    /// Swarm's capitalised form for tables.
    pub fn as_title(self) -> &'static str {
        match self {
            NodeState::Unknown => "Unknown",
            NodeState::Down => "Down",
            NodeState::Ready => "Ready",
            NodeState::Disconnected => "Disconnected",
        }
    }
}

/// What the node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub hostname: String,
    pub platform: Platform,
    pub resources: ResourceSet,
    pub engine_version: String,
    pub engine_labels: BTreeMap<String, String>,
    /// What the node's engine can drive (Swarm's `Engine.Plugins`): for
    /// networks, the drivers its kernel probe found working (`overlay`,
    /// `bridge`) and `host` and `null`, which always work. Empty: not
    /// reported (a node of an older version); placement assumes it capable.
    pub plugins: Vec<Plugin>,
    /// Why a piece of container networking is missing on this node, one
    /// line each, from the kernel probe at start (`node inspect`'s
    /// `Engine.Warnings`, `shoal info`'s warnings).
    pub warnings: Vec<String>,
}

/// [`Plugin::kind`] of network drivers ([`DRIVER_OVERLAY`] is that of swarm-scoped networks).
pub const PLUGIN_NETWORK: &str = "Network";
/// The network driver of a task with no network: a node-local bridge.
pub const DRIVER_BRIDGE: &str = "bridge";
/// The network driver of `--network host`.
pub const DRIVER_HOST: &str = "host";
/// The network driver of `--network none` (Docker's name).
pub const DRIVER_NULL: &str = "null";

/// Something a node's engine can drive (Swarm's `PluginDescription`), such
/// as a network driver: kind [`PLUGIN_NETWORK`], name [`DRIVER_OVERLAY`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Plugin {
    /// Docker's `Type`: `Network` (volume plugins would be `Volume`).
    pub kind: String,
    pub name: String,
}

impl Plugin {
    /// A network driver.
    pub fn network(name: &str) -> Plugin {
        Plugin { kind: PLUGIN_NETWORK.to_string(), name: name.to_string() }
    }
}

/// A member of the swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub meta: Meta,
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    pub description: NodeDescription,
    pub state: NodeState,
    pub addr: String,
    /// For managers: the raft address others dial.
    pub manager_addr: String,
    /// The node's own address on each overlay network it has live tasks on
    /// (and on `ingress` while any service publishes ingress ports): the
    /// address of its bridge on that network, for the data path.
    pub attachments: Vec<NetworkAttachment>,
}

/// Swarm-wide settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub meta: Meta,
    pub name: String,
    /// The cluster identity's public key: join tokens pin its digest, and
    /// managers answer joins with its private half (`cluster.key`).
    pub public_key: [u8; 32],
    /// The current join secrets; `swarm join-token --rotate` replaces one.
    pub worker_secret: [u8; 16],
    pub manager_secret: [u8; 16],
    /// `swarm init --default-addr-pool/--default-addr-pool-mask-length/--data-path-port`.
    pub network: NetworkDefaults,
}

/// Default of [`SwarmSettings::dispatcher_heartbeat_ms`]: on a LAN a node is
/// Down about a second after its link to the leader died.
pub const DISPATCHER_HEARTBEAT_MS_DEFAULT: u64 = 1_000;
/// Bounds of `--dispatcher-heartbeat`.
pub const DISPATCHER_HEARTBEAT_MS_MIN: u64 = 100;
pub const DISPATCHER_HEARTBEAT_MS_MAX: u64 = 24 * 3_600_000;

/// Swarm-wide settings that `swarm init` and `swarm update` change (the part
/// of Swarm's `ClusterSpec` Shoal has), replicated through
/// `Op::SetSwarmSettings`. Fields only grow at the end, with a state
/// snapshot version bump (see `manager::state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSettings {
    /// `--dispatcher-heartbeat`: how long a node may be without a link to the
    /// leader before the leader marks it Down and reschedules its replicated
    /// tasks. Links send keepalives every second and a silent peer's link dies
    /// after 3 s, so a node that vanishes (pulled cable) is Down after about
    /// 3 s + this; a killed daemon's link ends at once. Raise it on flaky
    /// links so a short outage does not move workloads.
    pub dispatcher_heartbeat_ms: u64,
}

impl SwarmSettings {
    /// Checks a `--dispatcher-heartbeat` value; the one rule for the CLI
    /// (before `swarm init`) and the manager (`swarm update`).
    pub fn check_dispatcher_heartbeat_ms(ms: u64) -> Result<(), String> {
        if (DISPATCHER_HEARTBEAT_MS_MIN..=DISPATCHER_HEARTBEAT_MS_MAX).contains(&ms) {
            Ok(())
        } else {
            Err(format!("invalid --dispatcher-heartbeat of {ms} ms: use a duration from {DISPATCHER_HEARTBEAT_MS_MIN}ms to 24h, e.g. 30s"))
        }
    }
}

/// Upper bound of `--node-lost-after` (0 turns it off).
pub const NODE_LOST_AFTER_MS_MAX: u64 = 365 * 24 * 3_600_000;

/// Checks a `--node-lost-after` value against the dispatcher heartbeat it
/// will run with: 0 (off: a silent node is Down after the heartbeat, as
/// before), or from the heartbeat to [`NODE_LOST_AFTER_MS_MAX`]. Between the
/// heartbeat and this a silent node is `Disconnected` and keeps its tasks.
pub fn check_node_lost_after_ms(ms: u64, dispatcher_heartbeat_ms: u64) -> Result<(), String> {
    if ms == 0 || (dispatcher_heartbeat_ms..=NODE_LOST_AFTER_MS_MAX).contains(&ms) {
        return Ok(());
    }
    if ms > NODE_LOST_AFTER_MS_MAX {
        return Err(format!("invalid --node-lost-after of {ms} ms: use 0 (off) or a duration up to 8760h (365 days)"));
    }
    Err(format!(
        "invalid --node-lost-after of {ms} ms: use 0 (off) or at least the dispatcher heartbeat of {dispatcher_heartbeat_ms} ms, e.g. 10m"
    ))
}

/// How a full-disk warning in a node's description (`warnings`) starts:
/// `node inspect` shows these as the node's status message.
pub const DISK_FULL_WARNING: &str = "disk full:";
/// The start of a node warning saying its data dir's filesystem is low on
/// space (the autopilot does not make such a node a manager).
pub const DISK_LOW_WARNING: &str = "disk low:";
/// The start of a node warning saying it is low on available memory (the
/// autopilot does not make such a node a manager).
pub const MEMORY_LOW_WARNING: &str = "memory low:";

/// The autopilot's settings (`swarm init|update --managers N
/// --manager-lost-after D --manager-spread-label L`; issue #20): the leader
/// keeps `managers` healthy managers, replacing one unreachable for
/// `manager_lost_after_ms`. `managers == 0` is off (the default: roles
/// change only by `node promote|demote`). Checked by the proposer
/// (`manager::control::update_autopilot`). Serialized: fields are positional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotSettings {
    /// Healthy managers to keep: 0 (off) or odd, at most 7.
    pub managers: u8,
    /// How long a manager is unreachable before it is replaced.
    pub manager_lost_after_ms: u64,
    /// A node label key whose values the managers spread over (empty: none).
    pub spread_label: String,
    /// A node unreachable more than this many times in the last hour is not promoted.
    pub flaps_per_hour_max: u32,
}

/// The swarm's link profile (`swarm init|update --link-profile`): the
/// timings of raft and of the node links. Serialized: append-only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkProfile {
    /// LAN: links keep alive every 1 s and are dead after 3 s of silence;
    /// raft heartbeats every 100 ms and elects after 1-2 s.
    #[default]
    Lan,
    /// Edge (lossy, slow, metered links): keepalives every 15 s, dead after
    /// 60 s of silence; raft heartbeats every 500 ms and elects after 5-10 s,
    /// so loss and delay do not flap leaders or mark nodes Down.
    Edge,
}

impl LinkProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkProfile::Lan => "lan",
            LinkProfile::Edge => "edge",
        }
    }

    /// Parses `lan` or `edge`.
    pub fn parse(s: &str) -> Result<LinkProfile, String> {
        match s {
            "lan" => Ok(LinkProfile::Lan),
            "edge" => Ok(LinkProfile::Edge),
            other => Err(format!("invalid --link-profile {other:?}: use lan or edge")),
        }
    }
}

impl std::fmt::Display for LinkProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for SwarmSettings {
    fn default() -> SwarmSettings {
        SwarmSettings { dispatcher_heartbeat_ms: DISPATCHER_HEARTBEAT_MS_DEFAULT }
    }
}

/// The swarm's autolock setting (`swarm init --autolock`, `swarm update
/// --autolock`, `swarm unlock-key --rotate`), replicated through
/// `Op::SetAutolock`. `epoch` counts unlock-key generations and only grows
/// (turning autolock off keeps it), so a manager knows whether its keyring
/// is wrapped under the current key. The key is never shown by `Debug`;
/// the raft records that carry it are sealed at rest.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autolock {
    /// The unlock key while autolock is on.
    pub key: Option<[u8; 32]>,
    pub epoch: u64,
}

impl std::fmt::Debug for Autolock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autolock").field("on", &self.key.is_some()).field("epoch", &self.epoch).finish()
    }
}

/// Lowest published port Swarm picks for `-p TARGET` (no published port).
pub const PORT_AUTO_MIN: u32 = 30_000;
/// Highest published port Swarm picks.
pub const PORT_AUTO_MAX: u32 = 32_767;
/// The first VXLAN id the leader hands out (Swarm's: `ingress` gets it).
pub const VNI_MIN: u32 = 4_096;
/// The last valid VXLAN id (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// Docker's default address pool for swarm networks.
pub const DEFAULT_ADDR_POOL: Ipv4Net = Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 0), prefix: 8 };
/// Docker's default size of a subnet carved from the pool.
pub const DEFAULT_SUBNET_PREFIX: u8 = 24;
/// Docker's default VXLAN UDP port (`--data-path-port`).
pub const DATA_PATH_PORT_DEFAULT: u16 = 4_789;
/// The pseudo-network id (and name) of `--network host`: the task shares the host's namespace.
pub const HOST_NETWORK_ID: &str = "host";
/// The pseudo-network id (and name) of `--network none`: loopback only.
pub const NONE_NETWORK_ID: &str = "none";
/// The only driver of swarm-scoped networks.
pub const DRIVER_OVERLAY: &str = "overlay";
/// Not a driver a network is created with but what a node reports (with
/// [`DRIVER_OVERLAY`]) when it can also carry encrypted overlay networks
/// (`--opt encrypted`: its kernel makes TUN devices for the tunnel relay);
/// tasks on an encrypted network are placed only on such nodes.
pub const DRIVER_OVERLAY_ENCRYPTED: &str = "overlay-encrypted";
/// `network create -o encrypted`: shown as Docker's option; the network's traffic
/// between nodes goes through the tunnel relays (issue #15).
pub const OPT_ENCRYPTED: &str = "encrypted";
/// `network create -o com.docker.network.driver.mtu=N`.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// The option Docker's `network inspect` shows the VXLAN id under.
pub const OPT_VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// An IPv4 address with its prefix length: a subnet (`10.0.0.0/24`) or an
/// interface address (`10.0.0.5/24`, Swarm's `VirtualIPs[].Addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    /// 0..=32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `A.B.C.D/N` (or `A.B.C.D`, a /32). The address may have host
    /// bits set; [`Ipv4Net::network`] clears them.
    pub fn parse(s: &str) -> Result<Ipv4Net, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("invalid address {a:?} in {s:?}: use A.B.C.D/N"))?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("invalid prefix length {p:?} in {s:?}: use 0-32"))?;
        Ok(Ipv4Net { addr, prefix })
    }

    /// The netmask as a number (`/24` is `0xffff_ff00`).
    pub fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits set).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The subnet itself, host bits cleared.
    pub fn trunc(self) -> Ipv4Net {
        Ipv4Net { addr: self.network(), prefix: self.prefix }
    }

    /// `ip` is inside this subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The two subnets share at least one address.
    pub fn overlaps(self, other: Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// `ip` with this subnet's prefix (a task's or VIP's interface address).
    pub fn with_addr(self, ip: Ipv4Addr) -> Ipv4Net {
        Ipv4Net { addr: ip, prefix: self.prefix }
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How a service is reached on its networks (Swarm's `EndpointSpec.Mode`). Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointMode {
    /// One virtual IP per network, balanced over the running tasks.
    Vip,
    /// DNS round robin: the service name resolves to the task addresses.
    Dnsrr,
}

impl EndpointMode {
    /// Swarm's spelling (`vip`, `dnsrr`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

/// One `--network` of a service (Swarm's `NetworkAttachmentConfig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachmentConfig {
    /// The network's id once accepted (the CLI sends the name or id it was given).
    pub target: String,
    /// Extra DNS names of the service's tasks on this network (`alias=`).
    pub aliases: Vec<String>,
}

/// An address on one network: a task's, or a node's own (its bridge on that network).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network_id: String,
    /// The address with the network's prefix (`10.0.0.7/24`).
    pub addr: Ipv4Net,
}

/// A service's virtual IP on one network (Swarm's `Endpoint.VirtualIPs[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    pub network_id: String,
    /// The VIP with the network's prefix (`10.0.0.5/24`).
    pub addr: Ipv4Net,
}

/// What the leader allocated for a service's endpoint (Swarm's `Endpoint`
/// minus the spec, which is the service spec's `ports`/`endpoint_mode`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The spec's ports with every ingress port's published port filled in
    /// (auto-assigned ones included). Empty until allocated.
    pub ports: Vec<PortConfig>,
    /// One per attached overlay network (ingress included) in `vip` mode.
    pub virtual_ips: Vec<VirtualIp>,
}

/// `network create --subnet/--gateway/--ip-range` (Swarm's `IPAMConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// Addresses are handed out only inside this range (within the subnet).
    pub ip_range: Option<Ipv4Net>,
}

/// A network as the user asked for it (`network create`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Always [`DRIVER_OVERLAY`] for swarm networks.
    pub driver: String,
    pub ipam: IpamConfig,
    /// `--internal`: no route out of the network.
    pub internal: bool,
    /// `--attachable`: stored (standalone containers do not exist in Shoal).
    pub attachable: bool,
    /// `-o encrypted`: stored; the data path does not encrypt yet and says so.
    pub encrypted: bool,
    /// `-o com.docker.network.driver.mtu=N`; 0: the data path's default.
    pub mtu: u32,
    /// Every `-o K=V` as given (`encrypted` and the MTU included), as Docker shows them.
    pub options: BTreeMap<String, String>,
    /// `--ingress`: the routing-mesh network (at most one).
    pub ingress: bool,
}

/// A stored swarm-scoped overlay network, with what the leader allocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub meta: Meta,
    pub spec: NetworkSpec,
    /// VXLAN id, unique, from [`VNI_MIN`].
    pub vni: u32,
    /// The subnet (given, or carved from the cluster's default pools), host bits clear.
    pub subnet: Ipv4Net,
    /// The given gateway, or the subnet's first address. Never handed to a task.
    pub gateway: Ipv4Addr,
    /// Next-fit cursor: the last address handed out on this network, kept
    /// by `apply` from the allocation ops, so a freed address is reused as
    /// late as possible.
    pub last_addr: Option<Ipv4Addr>,
}

impl Network {
    /// This is the routing-mesh network.
    pub fn ingress(&self) -> bool {
        self.spec.ingress
    }
}

/// Swarm-wide network defaults (`swarm init` flags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDefaults {
    /// Where networks without `--subnet` get theirs from, in order.
    pub default_addr_pools: Vec<Ipv4Net>,
    /// Prefix length of each carved subnet.
    pub subnet_size: u8,
    /// The VXLAN UDP port.
    pub data_path_port: u16,
}

impl Default for NetworkDefaults {
    fn default() -> NetworkDefaults {
        NetworkDefaults {
            default_addr_pools: vec![DEFAULT_ADDR_POOL],
            subnet_size: DEFAULT_SUBNET_PREFIX,
            data_path_port: DATA_PATH_PORT_DEFAULT,
        }
    }
}

/// How a task's namespace is set up, from its spec's networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// `--network host`: the host's namespace (Shoal's behaviour before networks).
    Host,
    /// `--network none`: its own namespace with loopback only.
    None,
    /// Its own namespace, attached to its overlay networks (possibly none).
    Overlay,
}

impl TaskSpec {
    /// The namespace this spec asks for.
    pub fn network_mode(&self) -> NetworkMode {
        match self.networks.first().map(|n| n.target.as_str()) {
            Some(HOST_NETWORK_ID) => NetworkMode::Host,
            Some(NONE_NETWORK_ID) => NetworkMode::None,
            _ => NetworkMode::Overlay,
        }
    }
}

impl PortConfig {
    /// Publishes through the routing mesh.
    pub fn is_ingress(&self) -> bool {
        self.publish_mode == PUBLISH_MODE_INGRESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_nets() {
        let n = Ipv4Net::parse("10.15.3.7/16").unwrap();
        assert_eq!(n.network(), Ipv4Addr::new(10, 15, 0, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 15, 255, 255));
        assert_eq!(n.trunc().to_string(), "10.15.0.0/16");
        assert!(n.contains(Ipv4Addr::new(10, 15, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 16, 0, 1)));
        assert!(n.overlaps(Ipv4Net::parse("10.0.0.0/8").unwrap()));
        assert!(!n.overlaps(Ipv4Net::parse("10.16.0.0/24").unwrap()));
        assert_eq!(Ipv4Net::parse("1.2.3.4").unwrap().prefix, 32);
        assert_eq!(Ipv4Net::parse("0.0.0.0/0").unwrap().mask(), 0);
        for bad in ["10.0.0/24", "10.0.0.0/33", "x/8", "10.0.0.0/"] {
            assert!(Ipv4Net::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Credentials for one registry (`shoal login`): sent with the request that
/// needs them; `--with-registry-auth` keeps them with the service in the
/// replicated state (sealed at rest with it) and workers hold them in
/// memory only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    /// The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Largest secret, as Swarm's (`secret create`).
pub const SECRET_BYTES_MAX: usize = 500 * 1024;
/// Largest config, as Swarm's (`config create`).
pub const CONFIG_BYTES_MAX: usize = 1000 * 1024;

/// What `secret create` and `config create` store: a name, labels and the
/// data (immutable: Swarm's secrets and configs change only by a new name).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for FileSpec {
    /// The data never reaches a log (a secret's value; a config's may be as private).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSpec").field("name", &self.name).field("labels", &self.labels).field("data_bytes", &self.data.len()).finish()
    }
}

/// Which of the two file objects a request is about. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    /// `secret` or `config`, as Docker's messages say.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    /// The largest data of this kind.
    pub fn bytes_max(self) -> usize {
        match self {
            FileKind::Secret => SECRET_BYTES_MAX,
            FileKind::Config => CONFIG_BYTES_MAX,
        }
    }
}

/// A secret's or config's data on its way to a node whose tasks use it
/// (`Wire::Files`). Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData {
    pub kind: FileKind,
    pub id: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for FileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileData").field("kind", &self.kind).field("id", &self.id).field("data_bytes", &self.data.len()).finish()
    }
}

/// A stored secret (`secret create`), or config (`config create`): the
/// same shape, kept in separate maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub id: String,
    pub meta: Meta,
    pub spec: FileSpec,
}
