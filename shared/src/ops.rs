//! The replicated log's payload: batches of small, targeted state changes.
//!
//! An [`Entry`] is what one proposal carries. Ops are deliberately narrow
//! (set a task's desired state, set its observed status, ...) so that
//! proposals from different writers (orchestrator, scheduler, agents) never
//! overwrite each other's fields. Everything an op needs (ids, timestamps)
//! is chosen by the proposer, so applying an entry never reads a clock or an
//! rng. The encoding is postcard inside a versioned envelope; variants are
//! append only.

use crate::task::TaskState;
use crate::types::{
    Autolock, Availability, Cluster, Endpoint, Network, NetworkAttachment, Node, NodeState, Service, SwarmSettings, Task, TaskStatus,
    UpdateStatus,
};
use serde::{Deserialize, Serialize};

/// Version of the entry encoding; bump on incompatible change. Version 1
/// (before networks: no `Service::endpoint`, `Task::networks`,
/// `Node::attachments`, `Cluster::network`, `TaskSpec::networks`,
/// `ServiceSpec::endpoint_mode`) and version 2 (before
/// `NodeDescription::plugins` and `warnings`) still decode, through
/// [`crate::legacy`], and so does version 3 (containers before `secrets`,
/// `configs` and `healthcheck`).
pub const ENTRY_VERSION: u8 = 4;
/// Upper bound on one encoded entry.
pub const ENTRY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One state change. Append only: the discriminant is on disk.
// Messages are built once and moved; boxing the big variants buys nothing on the wire.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    PutCluster(Cluster),
    PutNode(Node),
    DeleteNode {
        id: String,
    },
    SetNodeState {
        id: String,
        state: NodeState,
    },
    SetNodeAvailability {
        id: String,
        availability: Availability,
    },
    PutService(Service),
    DeleteService {
        id: String,
    },
    CreateTask(Task),
    /// Scheduler: bind to a node (empty = still unplaced) and move status.
    AssignTask {
        id: String,
        node_id: String,
        status: TaskStatus,
    },
    SetTaskDesired {
        id: String,
        desired: TaskState,
    },
    /// Agent (or the scheduler for pending tasks): observed status. The
    /// orchestrator also sends the current state back with an `err` to say
    /// why it shuts the task down (the constraint enforcer).
    SetTaskStatus {
        id: String,
        status: TaskStatus,
    },
    DeleteTask {
        id: String,
    },
    /// Release a restart-delayed task to run.
    ReleaseTask {
        id: String,
    },
    /// Updater: record a rolling update's progress.
    SetUpdateStatus {
        id: String,
        status: UpdateStatus,
    },
    /// Updater: automatic rollback. The previous spec becomes the spec and
    /// is cleared (swarmkit's `rollbackUpdate`); skipped when there is none.
    RollbackService {
        id: String,
        status: UpdateStatus,
    },
    /// Replace a node's user labels (`node update --label-add/--label-rm`).
    SetNodeLabels {
        id: String,
        labels: std::collections::BTreeMap<String, String>,
    },
    /// Replace the swarm-wide settings (`swarm init`/`swarm update`).
    SetSwarmSettings(SwarmSettings),
    /// Create a network (`network create`, `ingress` at `swarm init`); skipped
    /// when its name, VNI or subnet is taken.
    PutNetwork(Network),
    /// Remove a network (`network rm`).
    DeleteNetwork {
        id: String,
    },
    /// Allocator: a service's ports and VIPs; skipped when an address or
    /// ingress port is held by something else.
    SetServiceEndpoint {
        id: String,
        endpoint: Endpoint,
    },
    /// Allocator: a task's addresses; skipped when one is held by something else.
    SetTaskNetworks {
        id: String,
        networks: Vec<NetworkAttachment>,
    },
    /// Allocator: a node's own addresses; skipped when one is held by something else.
    SetNodeAttachments {
        id: String,
        attachments: Vec<NetworkAttachment>,
    },
    /// Turn autolock on or off or rotate its key; skipped unless its epoch
    /// is newer than the state's.
    SetAutolock(Autolock),
    /// `swarm init|update --node-lost-after`: how long a silent node may be
    /// `Disconnected` (tasks kept) before it is Down (tasks replaced); 0 is
    /// off. Checked by the proposer (`manager::control::update_swarm`).
    SetNodeLostAfter {
        ms: u64,
    },
    /// `swarm init|update --link-profile`: raft and link timings.
    SetLinkProfile(crate::types::LinkProfile),
    /// Leader, from a worker's report: the restarts it made of a task in
    /// place while no manager was in reach, counted as attempts of its slot;
    /// each `ago_ms` is taken back from the entry's time. Skipped (not
    /// rejected) when an account of the same session was already taken.
    SetRestartsInPlace(crate::types::RestartsInPlace),
    /// `swarm init|update --managers --manager-lost-after
    /// --manager-spread-label`: the autopilot's settings, replaced whole.
    SetAutopilot(crate::types::AutopilotSettings),
    /// `service create|update --with-registry-auth`: the credentials a
    /// service's image is pulled with (`None`: forget them). Skipped when
    /// the service does not exist; dropped with the service.
    SetRegistryAuth {
        service_id: String,
        auth: Option<crate::types::RegistryAuth>,
    },
    /// `swarm init|update --layer-sharing=BOOL`: whether managers serve the
    /// swarm's nodes image blobs from their cache (issue #16; on by default).
    SetLayerSharing {
        on: bool,
    },
    /// `secret create`: skipped when the id exists or the name is taken.
    PutSecret(crate::types::StoredFile),
    /// `secret rm`: checked by the proposer (not in use by any service).
    DeleteSecret {
        id: String,
    },
    /// `config create`, as `PutSecret`.
    PutConfig(crate::types::StoredFile),
    /// `config rm`, as `DeleteSecret`.
    DeleteConfig {
        id: String,
    },
    /// `secret|config create` of data larger than one entry carries: the
    /// data in parts of at most [`FILE_PART_BYTES`], one entry each (so
    /// heartbeats interleave on slow links), the last in the `PutSecret` /
    /// `PutConfig` that completes it. `offset` must be the bytes held so
    /// far for `id` (0 starts afresh); skipped otherwise.
    PutFilePart {
        kind: crate::types::FileKind,
        id: String,
        offset: u64,
        bytes: Vec<u8>,
    },
}

/// Bytes of secret or config data one [`Op::PutFilePart`] (or one
/// `PutSecret`/`PutConfig`) carries at most: its entry fits the edge link
/// profile's 32 KiB appends, envelope and seal included.
pub const FILE_PART_BYTES: usize = 24 * 1024;

/// A batch of ops proposed together, stamped by the proposer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: crate::clock::UnixNanos,
    pub ops: Vec<Op>,
}

/// Errors decoding an entry from disk or the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry is empty")]
    Empty,
    #[error("entry version {0} is not supported (this build reads version {ENTRY_VERSION})")]
    Version(u8),
    /// An older version this build does not read (the `legacy` feature is off).
    #[error("entry version {0} is from an earlier Shoal and this build does not read it (the mips64le and s390x binaries leave old formats out to stay under 5 MiB): open the data dir once with a build for another architecture, or start this node afresh")]
    Legacy(u8),
    #[error("entry of {0} bytes exceeds the {ENTRY_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("entry is corrupt: {0}")]
    Corrupt(String),
}

impl Entry {
    /// Encodes with the version envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_VERSION];
        // Serializing owned data into a Vec cannot fail for these types.
        let body = postcard::to_allocvec(self).expect("entry serialization is infallible");
        out.extend_from_slice(&body);
        out
    }

    /// Decodes fallibly; never panics on hostile bytes.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(EntryError::Empty)?;
        let corrupt = |e: postcard::Error| EntryError::Corrupt(e.to_string());
        match version {
            #[cfg(feature = "legacy")]
            1 => postcard::from_bytes::<crate::legacy::EntryV1>(body).map(Entry::from).map_err(corrupt),
            #[cfg(feature = "legacy")]
            2 => postcard::from_bytes::<crate::legacy::EntryV2>(body).map(Entry::from).map_err(corrupt),
            #[cfg(feature = "legacy")]
            3 => postcard::from_bytes::<crate::legacy::EntryV3>(body).map(Entry::from).map_err(corrupt),
            #[cfg(not(feature = "legacy"))]
            1..=3 => Err(EntryError::Legacy(version)),
            ENTRY_VERSION => postcard::from_bytes(body).map_err(corrupt),
            _ => Err(EntryError::Version(version)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes on every architecture (little- and big-endian, 32- and
    /// 64-bit): entries are on disk and on the wire. targets/qemu-test.sh runs
    /// this on s390x, i686, armv7, mips64el, ppc64le and aarch64.
    #[test]
    fn encoding_is_architecture_independent() {
        let e = Entry {
            at: 0x0102_0304_0506_0708,
            ops: vec![Op::SetTaskDesired { id: "t1".into(), desired: TaskState::Running }, Op::DeleteTask { id: "x".into() }],
        };
        let hex: String = e.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "04888e98a8c0e08081010209027431070b0178");
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn round_trip_and_hostile_bytes() {
        let e = Entry { at: 42, ops: vec![Op::DeleteTask { id: "t".into() }] };
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        let status = crate::types::UpdateStatus::started(crate::types::UpdateState::RollbackStarted, 9, "manually requested rollback");
        let labels = [("zone".to_string(), "edge".to_string())].into_iter().collect();
        let e = Entry {
            at: 43,
            ops: vec![
                Op::SetUpdateStatus { id: "s".into(), status: status.clone() },
                Op::RollbackService { id: "s".into(), status },
                Op::SetNodeLabels { id: "n".into(), labels },
                Op::SetSwarmSettings(crate::types::SwarmSettings { dispatcher_heartbeat_ms: 30_000 }),
                Op::SetNodeLostAfter { ms: 600_000 },
                Op::SetLinkProfile(crate::types::LinkProfile::Edge),
                Op::SetRestartsInPlace(crate::types::RestartsInPlace {
                    task_id: "t".into(),
                    session: 7,
                    count: 3,
                    ago_ms: vec![30_000, 20_000, 10_000],
                }),
                Op::SetAutopilot(crate::types::AutopilotSettings {
                    managers: 3,
                    manager_lost_after_ms: 300_000,
                    spread_label: "site".into(),
                    flaps_per_hour_max: 3,
                }),
                Op::SetRegistryAuth {
                    service_id: "s".into(),
                    auth: Some(crate::types::RegistryAuth { username: "u".into(), password: "p".into() }),
                },
                Op::SetLayerSharing { on: false },
                Op::PutSecret(crate::types::StoredFile {
                    id: "x".into(),
                    meta: Default::default(),
                    spec: crate::types::FileSpec { name: "pw".into(), labels: Default::default(), data: b"hunter2".to_vec() },
                }),
                Op::DeleteSecret { id: "x".into() },
                Op::PutConfig(crate::types::StoredFile {
                    id: "c".into(),
                    meta: Default::default(),
                    spec: crate::types::FileSpec { name: "conf".into(), labels: Default::default(), data: b"a=1".to_vec() },
                }),
                Op::DeleteConfig { id: "c".into() },
                Op::PutFilePart { kind: crate::types::FileKind::Config, id: "c".into(), offset: 0, bytes: vec![1, 2] },
            ],
        };
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert_eq!(Entry::decode(&[]), Err(EntryError::Empty));
        assert_eq!(Entry::decode(&[9, 1, 2]), Err(EntryError::Version(9)));
        assert!(matches!(Entry::decode(&[ENTRY_VERSION, 0xff, 0xff, 0xff]), Err(EntryError::Corrupt(_))));
        let mut x: u64 = 1;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            let _ = Entry::decode(&bytes);
        }
    }
}
