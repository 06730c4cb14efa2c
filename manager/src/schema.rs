//! Every redb table of the manager's database file (`<data-dir>/shoal.redb`).
//!
//! Values are postcard bytes (`&[u8]`) decoded fallibly by the code that reads
//! them, never inside a redb `Value` impl. The raft module defines its own
//! `raft_*` tables in the same file.

use redb::TableDefinition;

/// Current layout version, stored under `meta["schema_version"]`.
pub const SCHEMA_VERSION: u64 = 1;

/// Layout: key = a name, value = a u64 (`schema_version`, `snapshot_index`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Layout: key = log index (1-based, contiguous above the snapshot index),
/// value = an encoded `shoal_shared::ops::Entry` (version byte + postcard).
pub const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");

/// Layout: key = index the snapshot covers, value = `State::snapshot()` bytes.
/// At most one row: the newest snapshot.
pub const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");

/// Layout: key = a name (`node_id`), value = UTF-8 string. Node-local facts
/// that are not replicated.
pub const LOCAL: TableDefinition<&str, &str> = TableDefinition::new("local");
