//! Every redb table of the manager's database file (`<data-dir>/shoal.redb`).
//!
//! Values are postcard bytes (`&[u8]`) decoded fallibly by the code that reads
//! them, never inside a redb `Value` impl. The raft module defines its own
//! `raft_*` tables in the same file (`manager/src/raft/storage.rs`): the log,
//! hard state, membership, and the snapshot whose data is `State::snapshot()`.

use redb::TableDefinition;

/// Current layout version, stored under `meta["schema_version"]`: raft's
/// records all sealed, bound to the store's history id. Version 1 kept
/// them in clear, version 2 sealed entries and snapshot only; opening an
/// older store upgrades it in place and raises the version (see
/// `raft::storage`).
pub const SCHEMA_VERSION: u64 = 3;
/// The layout before sealing at rest.
pub const SCHEMA_VERSION_PLAIN: u64 = 1;
/// The first sealed layout: no history id, raft's meta records in clear.
pub const SCHEMA_VERSION_SEALED_NO_HISTORY: u64 = 2;

/// Layout: key = a name, value = a u64 (`schema_version`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Layout: key = a name (`node_id`), value = UTF-8 string. Node-local facts
/// that are not replicated.
pub const LOCAL: TableDefinition<&str, &str> = TableDefinition::new("local");

/// Layout: key = a name, value = bytes the daemon sealed under the node's
/// data key (associated data names the key). Node-local records that are
/// not replicated and may hold the swarm's data: `assignments` is the last
/// assignment set a worker acted on (a version byte, then postcard
/// `Assignments`), so it runs its tasks after a reboot with no manager in
/// reach.
pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("local_blobs");
