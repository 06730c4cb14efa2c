//! Shoal's replicated log: a compact, sans-IO Raft core ([`Raft`]), its
//! wire encoding, its redb-backed storage and a deterministic simulator that
//! checks it (built for tests and with the crate's `sim` feature only). See
//! `README.md` in this directory for the design.

mod config;
mod log;
mod node;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod storage;
mod types;

#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;

pub use config::{BugFlags, Config, ConfigError, Timing};
pub use node::{
    CompactError, Compaction, PeerProgress, Persisted, ProgressState, ProposeError, Raft, ReadState, Ready, RequestError, RestoreError,
    Role, SoftState, Status, StepError, MAX_READ_CTX_BYTES,
};
pub use storage::{Layout, RaftStorage, StorageError};
pub use types::{
    decode, encode, ConfChange, ConfState, DecodeError, Entry, EntryKind, HardState, Message, MessageKind, NodeId, RejectHint, Snapshot,
    SnapshotMeta, MAX_FRAME_BYTES, MAX_SNAPSHOT_CHUNK_BYTES, WIRE_VERSION,
};
