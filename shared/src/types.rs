//! Cluster objects: services, tasks, nodes and the cluster itself.
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
    /// Networks named with `--network`; stored, not yet implemented.
    pub networks: Vec<String>,
    /// Ports named with `--publish`: host-mode ones steer placement; none are bound yet.
    pub ports: Vec<PortConfig>,
}

/// What each task of a service runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub container: ContainerSpec,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub placement: Placement,
    pub force_update: u64,
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
}

/// A mount into a task's container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
    pub read_only: bool,
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
    Replicated { replicas: u64 },
    Global,
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
                },
                resources: Resources::default(),
                restart: RestartPolicy::default(),
                placement: Placement::default(),
                force_update: 0,
            },
            mode: ServiceMode::Replicated { replicas: 1 },
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            networks: Vec::new(),
            ports: Vec::new(),
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
}

/// Node role. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    Worker,
    Manager,
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

impl Default for SwarmSettings {
    fn default() -> SwarmSettings {
        SwarmSettings { dispatcher_heartbeat_ms: DISPATCHER_HEARTBEAT_MS_DEFAULT }
    }
}
