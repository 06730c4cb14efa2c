//! Raft's data vocabulary and its wire encoding: log entries, hard state,
//! membership, snapshots and the messages managers exchange.
//!
//! Everything here crosses a trust boundary (the network or the disk), so the
//! encoding is explicit: postcard behind a one-byte [`WIRE_VERSION`], fixed
//! width integers (`u64`/`u32`, never `usize`) so s390x, i686 and arm32 peers
//! agree, and [`decode`] is fallible and bounded by [`MAX_FRAME_BYTES`].
//!
//! Serialized enums are **append-only**: postcard encodes the variant index,
//! so variants may be added at the end but never reordered or removed.

use serde::{Deserialize, Serialize};

/// First byte of every encoded raft frame; bump on incompatible change.
pub const WIRE_VERSION: u8 = 1;
/// Largest frame `decode` accepts (a Noise transport frame is ≤ 65535 bytes).
pub const MAX_FRAME_BYTES: usize = 65_535;
/// Largest snapshot chunk the leader sends (leaves room for the envelope).
pub const MAX_SNAPSHOT_CHUNK_BYTES: u32 = 60 * 1024;

/// A node id; `0` means "none" and is never a valid member.
pub type NodeId = u64;

/// The state Raft must make durable before it speaks (term and vote), plus
/// the commit index so a restart does not re-apply from scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: u64,
    /// Who this node voted for in `term`; `0` when it has not voted.
    pub vote: NodeId,
    pub commit: u64,
}

/// Cluster membership: voters decide, learners only replicate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// Sorted, unique.
    pub voters: Vec<NodeId>,
    /// Sorted, unique, disjoint from `voters`.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A membership of voters only.
    pub fn with_voters(voters: &[NodeId]) -> ConfState {
        let mut v = voters.to_vec();
        v.sort_unstable();
        v.dedup();
        ConfState { voters: v, learners: Vec::new() }
    }

    /// Whether `id` may vote.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Whether `id` is a member at all.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Voters and learners, sorted.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        all.sort_unstable();
        all
    }

    /// Whether the lists are sorted, unique, disjoint and free of id 0.
    pub fn is_well_formed(&self) -> bool {
        let sorted = |v: &[NodeId]| v.windows(2).all(|w| w[0] < w[1]);
        sorted(&self.voters)
            && sorted(&self.learners)
            && !self.voters.contains(&0)
            && !self.learners.contains(&0)
            && self.voters.iter().all(|v| !self.is_learner(*v))
    }
}

/// One membership change; Shoal applies them one at a time (no joint consensus).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    // Append-only: postcard encodes the variant index.
    AddVoter(NodeId),
    AddLearner(NodeId),
    RemoveNode(NodeId),
    PromoteLearner(NodeId),
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    // Append-only: postcard encodes the variant index.
    /// Application data (empty for the leader's no-op at the start of a term).
    Normal(Vec<u8>),
    /// A membership change and the membership it results in; takes effect
    /// when committed.
    Conf { change: Option<ConfChange>, conf: ConfState },
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
}

impl Entry {
    /// Approximate encoded size, for batching limits.
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.kind {
            EntryKind::Normal(d) => d.len(),
            EntryKind::Conf { conf, .. } => 8 * (conf.voters.len() + conf.learners.len()) + 16,
        };
        payload as u64 + 24
    }
}

/// Where a snapshot sits in the log and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf: ConfState,
}

/// A state-machine snapshot produced by the application.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Why a follower refused an append, with a hint to skip back fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The index the leader probed.
    pub rejected_index: u64,
    /// The follower's best guess of the last index that may match.
    pub hint_index: u64,
    /// The follower's term at `hint_index` (0 when unknown).
    pub hint_term: u64,
}

/// The payload of a raft message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    // Append-only: postcard encodes the variant index.
    VoteRequest {
        pre: bool,
        last_index: u64,
        last_term: u64,
        /// Set by a leadership-transfer campaign: voters skip the lease check.
        transfer: bool,
    },
    VoteResponse {
        pre: bool,
        granted: bool,
    },
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    AppendResponse {
        /// On success: the last index now known to match the leader.
        index: u64,
        reject: Option<RejectHint>,
    },
    Heartbeat {
        commit: u64,
        /// Leader's read-index round; echoed back.
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    SnapshotChunk {
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    },
    SnapshotResponse {
        index: u64,
        /// Bytes of this snapshot the follower holds (the next offset wanted).
        next_offset: u64,
    },
    TimeoutNow,
    ReadIndex {
        ctx: Vec<u8>,
    },
    ReadIndexResponse {
        ctx: Vec<u8>,
        /// `None` when the leader could not serve the read.
        index: Option<u64>,
    },
}

/// A raft message between managers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
    pub kind: MessageKind,
}

/// Why bytes from the network are not a raft message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len_bytes} bytes exceeds limit of {limit_bytes} bytes")]
    TooLarge { len_bytes: u64, limit_bytes: u64 },
    #[error("empty frame")]
    Empty,
    #[error("unsupported wire version {0}")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after message")]
    Trailing(u64),
}

/// Encodes a message as `[WIRE_VERSION] ++ postcard(message)`.
///
/// Callers keep messages under [`MAX_FRAME_BYTES`]: the core bounds appends
/// by `max_append_bytes` and snapshot chunks by [`MAX_SNAPSHOT_CHUNK_BYTES`].
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Invariant: serializing plain data into a Vec cannot fail.
    let body = postcard::to_allocvec(msg).expect("postcard serialization into a vec is infallible");
    out.extend_from_slice(&body);
    out
}

/// Decodes one frame; never panics on any input.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge { len_bytes: bytes.len() as u64, limit_bytes: MAX_FRAME_BYTES as u64 });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<Message>(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len() as u64));
    }
    Ok(msg)
}

/// Encodes a value for the disk (postcard, no envelope: tables are versioned
/// by name).
pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: serializing plain data into a Vec cannot fail.
    postcard::to_allocvec(value).expect("postcard serialization into a vec is infallible")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let m = Message {
            from: 1,
            to: 2,
            term: 3,
            kind: MessageKind::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![Entry { term: 3, index: 5, kind: EntryKind::Normal(b"x".to_vec()) }],
                commit: 4,
            },
        };
        let bytes = encode(&m);
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode(&bytes), Ok(m));
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Version(9)));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Trailing(1)));
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Malformed(_))));
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(decode(&vec![1u8; MAX_FRAME_BYTES + 1]), Err(DecodeError::TooLarge { .. })));
    }
}
