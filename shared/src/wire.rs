//! Messages between nodes inside established Noise links ([`crate::noise`]).
//!
//! Owns the node-to-node vocabulary: the cleartext preamble that picks a
//! link's purpose, the handshake hellos, and [`Wire`], the one message enum
//! every link carries (raft traffic between managers, the dispatcher session
//! between a worker and the leader, forwarded CLI requests, joins, and the
//! log requests a manager sends to gather `service logs`).
//!
//! Encoding: `[WIRE_VERSION] ++ postcard(Wire)`, decoded fallibly and bounded
//! by the link's reassembly limit (16 MiB). [`Wire`] is **append-only**:
//! postcard encodes the variant index.
//!
//! Connection shape (all TCP connections go to a node's one swarm port):
//!
//! ```text
//! dialer                                   listener (a manager)
//!   1 byte preamble: b'J' join | b'N' node
//!   Noise XX; prologue "join" or "node"; responder static key:
//!     join: the cluster key (the token pins its digest)
//!     node: the manager's node key (its node id is checked after the handshake)
//!   join: -> JoinRequest          <- JoinAccepted | Redirect | link closed with a reason
//!   node: -> Session (workers)    <- Assignments ... | Redirect
//!         -> Raft / Report / Request  <- Raft / Reply / Assignments
//!         -> RestartsInPlace (workers, before the Report that says so)
//!         <- LogsRequest              -> LogsReply   (either direction; asked by a manager)
//!         -> TunnelKeys (own key)     <- TunnelKeys (other nodes' keys)
//! ```
//!
//! The preamble is not authenticated by itself, but it selects the prologue,
//! which is: a tampered preamble fails the handshake.

use crate::api::{LogChunk, LogCursor, Reply, Request};
use crate::types::{Availability, Node, NodeDescription, NodeRole, Service, Task, TaskStatus};
use serde::{Deserialize, Serialize};

/// First byte of every encoded [`Wire`] message; bump on incompatible change
/// (2: records with networks, assignments with the node's network view;
/// 3: node descriptions with plugins and warnings; 4: containers with
/// secrets, configs and healthchecks).
pub const WIRE_VERSION: u8 = 4;
/// How many [`Wire`] variants this build knows. A message whose variant index
/// is at or past this comes from a newer node: it decodes to
/// [`WireError::Unknown`], which receivers ignore instead of dropping the
/// link, so a mixed-version swarm keeps its links during a rolling upgrade.
/// Bump it with every variant appended (a test checks).
pub const WIRE_VARIANTS: u32 = 20;
/// Largest encoded message accepted (the link's reassembly bound).
pub const WIRE_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Tasks one `LogsRequest` names at most (a node with more tasks of a
/// service gets several requests).
pub const LOGS_TASKS_PER_REQUEST_MAX: usize = 256;
/// Log bytes one `LogsReply` carries at most, so a reply never holds a link
/// (and the raft or dispatcher traffic behind it) for long.
pub const LOGS_REPLY_BYTES_MAX: u64 = 1024 * 1024;
// A full logs reply, with its task ids and cursors, fits in one message with room to spare.
const _: () = assert!(LOGS_REPLY_BYTES_MAX * 2 <= WIRE_MESSAGE_BYTES_MAX as u64);
/// Preamble of a join connection (responder uses the cluster key).
pub const PREAMBLE_JOIN: u8 = b'J';
/// Preamble of a node connection (responder uses its node key).
pub const PREAMBLE_NODE: u8 = b'N';
/// Noise prologue purpose of join links.
pub const PROLOGUE_JOIN: &[u8] = b"join";
/// Noise prologue purpose of node links.
pub const PROLOGUE_NODE: &[u8] = b"node";

/// The start of every reason a manager gives when it closes a link because
/// the peer's key is not a member of the swarm (removed, or never joined);
/// the peer recognises a refusal by it and backs off.
pub const NOT_A_MEMBER: &str = "this node is not a member of the swarm";
/// The reason a node gives when it closes its links on `swarm leave`: its
/// leader marks it Down after the heartbeat, without `--node-lost-after`'s
/// wait (its tasks have stopped).
pub const LEFT_THE_SWARM: &str = "left the swarm";

/// A manager as workers and other managers dial it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub node_id: String,
    /// `IP:PORT` of its swarm port.
    pub addr: String,
}

/// A node-to-node message. Append-only.
// Messages are built once and moved; boxing the big variants buys nothing on the wire.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Wire {
    /// Joiner -> manager, first message on a join link (the token travelled
    /// in the handshake).
    JoinRequest { advertise_addr: String, availability: Availability, description: NodeDescription },
    /// Manager -> joiner: the node is recorded in the swarm. `cluster_key`
    /// (the cluster identity's private key) is sent to managers only.
    JoinAccepted { node_id: String, role: NodeRole, cluster_id: String, managers: Vec<ManagerInfo>, cluster_key: Option<Vec<u8>> },
    /// "I am not the leader; the leader is there" (`leader_addr` empty: unknown).
    Redirect { leader_id: String, leader_addr: String },
    /// One encoded raft message (`shoal_manager::raft::encode`).
    Raft(Vec<u8>),
    /// Worker -> leader: opens (or re-opens) the dispatcher session.
    Session { advertise_addr: String, description: NodeDescription },
    /// Leader -> worker: everything the worker must run, in full (sent when
    /// it changes). `cluster_key` is set when the node is a manager.
    Assignments {
        node: Node,
        tasks: Vec<Task>,
        services: Vec<Service>,
        managers: Vec<ManagerInfo>,
        leader_id: String,
        cluster_key: Option<Vec<u8>>,
        /// What the node's data path programs its networks from.
        network: crate::assignments::NodeNetworkView,
    },
    /// Worker -> leader: observed task states (forward-only; the leader re-checks).
    Report { statuses: Vec<(String, TaskStatus)> },
    /// Follower manager -> leader: a CLI request to run on the leader.
    Request { id: u64, req: Request },
    /// Leader -> follower: the answer; `index` is the raft index the follower
    /// must have applied before it hands the reply to the CLI (0: none).
    Reply { id: u64, reply: Reply, index: u64 },
    /// Manager -> any node: the log bytes of some of the node's tasks (at
    /// most [`LOGS_TASKS_PER_REQUEST_MAX`]): after each task's `cursor`
    /// offset, else from the start of its last `tail_lines` lines, else from
    /// its start; at most `bytes_max` (capped at [`LOGS_REPLY_BYTES_MAX`]) in all.
    LogsRequest { id: u64, task_ids: Vec<String>, tail_lines: Option<u64>, cursor: Vec<LogCursor>, bytes_max: u64 },
    /// Node -> manager: the answer to `LogsRequest` `id`. Chunks carry no
    /// `source` (the manager names tasks from its state); `more` says a bound
    /// cut something; `error` says why the node read nothing.
    LogsReply { id: u64, chunks: Vec<LogChunk>, cursor: Vec<LogCursor>, more: bool, error: Option<String> },
    /// Leader -> a manager demoted and removed from raft while it could not
    /// hear it: the leader's configuration no longer counts it, so its vote
    /// is not needed for anything; it switches to a worker at once.
    Removed { leader_id: String },
    /// Leader -> worker: swarm settings a worker applies itself (at its
    /// session's start and when they change): the link profile's timings.
    Settings { link_profile: crate::types::LinkProfile },
    /// Worker -> leader, just before the `Report` that says so in words:
    /// the restarts it made of tasks in place while no manager was in reach
    /// (idempotent; the leader re-checks that the tasks are the worker's).
    /// An older leader ignores it and has the words only.
    RestartsInPlace { restarts: Vec<crate::types::RestartsInPlace> },
    /// Keys of encrypted overlay networks' tunnels (issue #15): node ->
    /// leader, the sender's own newest key (its `node_id` must be the
    /// link's peer); leader -> node, other nodes' keys (from managers only).
    /// Never persisted; a new leader hears them again as nodes reconnect.
    TunnelKeys { keys: Vec<crate::tunnel::relay::NodeKey> },
    /// Leader -> worker, just before its `Assignments`: the registry
    /// credentials (`--with-registry-auth`) of the assigned services that
    /// have some, by service id. Held in memory only and pruned to the
    /// assigned services; from managers only.
    RegistryAuths { auths: Vec<(String, crate::types::RegistryAuth)> },
    /// Node -> manager (issue #16, layers shared inside the swarm): up to
    /// `len_bytes` (at most [`BLOB_PART_BYTES_MAX`]) of blob `digest` of
    /// image `reference` from byte `offset`, out of the manager's blob cache
    /// (which fetches it from the registry once for the whole swarm). A
    /// manifest or index is asked with `size` 0 (its size is not known yet).
    BlobGet { id: u64, reference: String, digest: String, size: u64, offset: u64, len_bytes: u32 },
    /// Manager -> node: the answer to `BlobGet` `id`.
    BlobPart { id: u64, part: BlobPart },
    /// Node -> leader, about once a second while some of its tasks wait for
    /// their image: each such task's pull (at most [`TASK_PULLS_MAX`] tasks
    /// of [`PULL_LAYERS_MAX`] layers). Volatile: kept in the leader's memory
    /// for `service create|update`'s progress, never replicated.
    TaskPulls { pulls: Vec<(String, crate::api::PullProgress)> },
    /// Manager -> node (issue #17), just before `Assignments`: the data of
    /// the secrets and configs its unfinished tasks use (at most
    /// [`FILES_PER_NODE_MAX`]), the whole set each time it changes (an
    /// empty one makes the node forget them). Held in memory only; from
    /// managers only.
    Files { files: Vec<crate::types::FileData> },
}

/// Secrets and configs one [`Wire::Files`] carries at most.
pub const FILES_PER_NODE_MAX: usize = 256;
/// Bytes of data one [`Wire::Files`] carries at most (under
/// [`WIRE_MESSAGE_BYTES_MAX`]); a task whose files did not fit fails to
/// start with the reason.
pub const FILES_BYTES_PER_NODE_MAX: usize = 12 * 1024 * 1024;
const _: () = assert!(FILES_BYTES_PER_NODE_MAX + 1024 * 1024 <= WIRE_MESSAGE_BYTES_MAX);

/// Tasks one [`Wire::TaskPulls`] reports at most.
pub const TASK_PULLS_MAX: usize = 256;
/// Layers of one reported pull at most.
pub const PULL_LAYERS_MAX: usize = 256;

/// Bytes one [`Wire::BlobPart`] carries at most.
pub const BLOB_PART_BYTES_MAX: u32 = 1024 * 1024;
const _: () = assert!(BLOB_PART_BYTES_MAX as usize * 2 <= WIRE_MESSAGE_BYTES_MAX);

/// A manager's answer to a [`Wire::BlobGet`]. Append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobPart {
    /// The bytes from the asked offset (fewer than asked only at the blob's
    /// end); `size`: the whole blob's; `media_type`: a manifest's or
    /// index's own (empty for layers and configs). The asker verifies the
    /// digest over the whole blob: a manager is not trusted with bytes.
    Bytes { size: u64, media_type: String, bytes: Vec<u8> },
    /// The manager is fetching the blob from its registry (`done_bytes` so
    /// far): ask again shortly.
    Fetching { done_bytes: u64 },
    /// The manager cannot serve it (no registry in reach, refused, sharing
    /// off...): the asker goes to the registry itself.
    Refused { why: String },
}

/// Why bytes from a peer are not a [`Wire`] message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("message of {len_bytes} bytes exceeds the {max_bytes}-byte limit")]
    TooLarge { len_bytes: usize, max_bytes: usize },
    #[error("wire version {got} is not supported (expected {WIRE_VERSION}); is the peer a different shoal version?")]
    Version { got: u8 },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message type {variant} is unknown to this version (sent by a newer shoal?)")]
    Unknown { variant: u32 },
}

/// Encodes a message.
pub fn encode(msg: &Wire) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Invariant: serializing plain data into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_allocvec(msg).expect("postcard serialization into a vec is infallible"));
    out
}

/// Decodes a message; never panics on any input.
pub fn decode(bytes: &[u8]) -> Result<Wire, WireError> {
    if bytes.len() > WIRE_MESSAGE_BYTES_MAX {
        return Err(WireError::TooLarge { len_bytes: bytes.len(), max_bytes: WIRE_MESSAGE_BYTES_MAX });
    }
    let (&got, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if got != WIRE_VERSION {
        return Err(WireError::Version { got });
    }
    // postcard puts the variant index first, as a varint.
    if let Ok((variant, _)) = postcard::take_from_bytes::<u32>(body) {
        if variant >= WIRE_VARIANTS {
            return Err(WireError::Unknown { variant });
        }
    }
    match postcard::take_from_bytes::<Wire>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(WireError::Malformed(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(WireError::Malformed(e.to_string())),
    }
}

/// The hello a node link's dialer sends in its handshake payload: version
/// byte then its advertised address (UTF-8, at most 255 bytes).
pub fn encode_node_hello(advertise_addr: &str) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    out.extend(advertise_addr.as_bytes().iter().take(255));
    out
}

/// Parses a node hello; `None` when it is not one.
pub fn decode_node_hello(payload: &[u8]) -> Option<String> {
    match payload.split_first() {
        Some((&WIRE_VERSION, addr)) if addr.len() <= 255 => std::str::from_utf8(addr).ok().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let msgs = vec![
            Wire::Raft(vec![1, 2, 3]),
            Wire::Redirect { leader_id: "a".into(), leader_addr: "10.0.0.1:2377".into() },
            Wire::Report { statuses: vec![("t".into(), TaskStatus::new(TaskState::Running, 5, "started"))] },
            Wire::Request { id: 7, req: Request::Ping },
            Wire::Reply { id: 7, reply: Reply::Pong, index: 3 },
            logs_request(),
            logs_reply(),
            Wire::Removed { leader_id: "n1".into() },
            Wire::LogsReply { id: 9, chunks: vec![], cursor: vec![], more: false, error: Some("too many log reads".into()) },
            Wire::Reply {
                id: 8,
                reply: Reply::ServiceLogs {
                    chunks: vec![LogChunk { task_id: "t1".into(), source: "web.1.t1@h".into(), data: b"a\n".to_vec() }],
                    cursor: vec![LogCursor { task_id: "t1".into(), offset: 2 }],
                    warnings: vec!["no logs from node w2: the node is down".into()],
                    more: true,
                },
                index: 0,
            },
        ];
        for m in msgs {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 0]), Err(WireError::Version { got: 9 }));
        assert!(matches!(decode(&[WIRE_VERSION, 200, 200, 200]), Err(WireError::Malformed(_))));
        let mut trailing = encode(&Wire::Raft(vec![]));
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(WireError::Malformed(_))));
    }

    fn logs_request() -> Wire {
        Wire::LogsRequest {
            id: 3,
            task_ids: vec!["t1".into(), "t2".into()],
            tail_lines: Some(10),
            cursor: vec![LogCursor { task_id: "t1".into(), offset: 4096 }],
            bytes_max: LOGS_REPLY_BYTES_MAX,
        }
    }

    fn logs_reply() -> Wire {
        Wire::LogsReply {
            id: 3,
            chunks: vec![LogChunk { task_id: "t1".into(), source: String::new(), data: b"hello\nworld\n".to_vec() }],
            cursor: vec![LogCursor { task_id: "t1".into(), offset: 4108 }],
            more: false,
            error: None,
        }
    }

    /// Log messages cut short or with flipped bytes decode to an error or
    /// to some message, never a panic (lengths inside are hostile too).
    #[test]
    fn mangled_log_messages_never_panic() {
        let mut rng = crate::rng::Rng::from_seed(11);
        for msg in [logs_request(), logs_reply()] {
            let good = encode(&msg);
            for cut in 0..good.len() {
                assert!(decode(&good[..cut]).is_err(), "a message cut at {cut} bytes must not decode");
            }
            for _ in 0..5_000 {
                let mut b = good.clone();
                for _ in 0..rng.range(1, 4) {
                    let i = rng.range(1, b.len() as u64) as usize;
                    b[i] = rng.next_u64() as u8;
                }
                let _ = decode(&b);
            }
        }
    }

    #[test]
    fn messages_from_newer_versions_are_unknown_not_malformed() {
        let restarts = vec![crate::types::RestartsInPlace { task_id: "t".into(), session: 1, count: 3, ago_ms: vec![9, 5, 1] }];
        let m = encode(&Wire::RestartsInPlace { restarts: restarts.clone() });
        assert_eq!(decode(&m), Ok(Wire::RestartsInPlace { restarts }));
        let keys = vec![crate::tunnel::relay::NodeKey { node_id: "n1".into(), epoch: 7, key: [3; 32] }];
        let m = encode(&Wire::TunnelKeys { keys: keys.clone() });
        assert_eq!(decode(&m), Ok(Wire::TunnelKeys { keys }));
        let auths = vec![("s1".to_string(), crate::types::RegistryAuth { username: "u".into(), password: "p".into() })];
        let m = encode(&Wire::RegistryAuths { auths: auths.clone() });
        assert_eq!(decode(&m), Ok(Wire::RegistryAuths { auths }));
        let get = Wire::BlobGet { id: 1, reference: "r/a:1".into(), digest: "sha256:00".into(), size: 9, offset: 3, len_bytes: 6 };
        assert_eq!(decode(&encode(&get)), Ok(get));
        let part = BlobPart::Bytes { size: 9, media_type: String::new(), bytes: vec![1, 2, 3] };
        let m = encode(&Wire::BlobPart { id: 1, part: part.clone() });
        assert_eq!(decode(&m), Ok(Wire::BlobPart { id: 1, part }));
        let pulls = vec![("t".to_string(), crate::api::PullProgress { digest: "sha256:00".into(), layers: vec![] })];
        let m = encode(&Wire::TaskPulls { pulls: pulls.clone() });
        assert_eq!(decode(&m), Ok(Wire::TaskPulls { pulls }));
        let files = vec![crate::types::FileData { kind: crate::types::FileKind::Secret, id: "x".into(), data: b"pw".to_vec() }];
        assert!(!format!("{files:?}").contains("112, 119"), "data never printed");
        let last = encode(&Wire::Files { files: files.clone() });
        assert_eq!(decode(&last), Ok(Wire::Files { files }));
        assert_eq!(u32::from(last[1]) + 1, WIRE_VARIANTS, "WIRE_VARIANTS must count every variant");
        assert_eq!(decode(&[WIRE_VERSION, WIRE_VARIANTS as u8, 1, 2, 3]), Err(WireError::Unknown { variant: WIRE_VARIANTS }));
        assert_eq!(decode(&[WIRE_VERSION, 0x80, 0x01]), Err(WireError::Unknown { variant: 128 }));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::rng::Rng::from_seed(7);
        for _ in 0..20_000 {
            let len = rng.range(0, 64) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if !b.is_empty() {
                b[0] = WIRE_VERSION;
            }
            let _ = decode(&b);
            let _ = decode_node_hello(&b);
        }
    }

    #[test]
    fn node_hello_round_trips() {
        assert_eq!(decode_node_hello(&encode_node_hello("10.1.0.2:2377")).as_deref(), Some("10.1.0.2:2377"));
        assert_eq!(decode_node_hello(&[]), None);
        assert_eq!(decode_node_hello(&[9, b'a']), None);
    }
}
