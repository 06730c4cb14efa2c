//! Shoal's manager role: the replicated log, the state it feeds, and the
//! pure cores that decide what should run where.
//!
//! Module map: [`state`] is the replicated state machine (apply, snapshot);
//! [`orchestrator`] turns service specs into tasks; [`scheduler`] binds tasks
//! to nodes; [`placement`] parses placement constraints and preferences;
//! [`store`] drives raft, its redb storage and the state; [`raft`] is the replicated log's consensus core and simulator;
//! [`updater`] rolls service updates and rollbacks out in batches;
//! [`control`] validates control-API requests into ops; [`ipam`] is the pure
//! address/port/VNI allocation core and [`network`] the leader's allocation
//! pass over the state and each node's network view.
//!
//! The simulators (`sim_cluster`, `sim_disk`, `raft::sim`) and raft's fault-injection
//! flags are built only for tests and with the `sim` feature (the examples
//! that drive them need `--features sim`), never into the shipped binary.

pub mod autopilot;
pub mod backup;
pub mod control;
pub mod dispatcher;
pub mod ipam;
pub mod membership;
pub mod network;
pub mod orchestrator;
pub mod placement;
pub mod raft;
pub mod scheduler;
pub mod schema;
#[cfg(any(test, feature = "sim"))]
pub mod sim_bugs;
#[cfg(any(test, feature = "sim"))]
pub mod sim_cluster;
#[cfg(any(test, feature = "sim"))]
pub mod sim_disk;
pub mod state;
pub mod store;
pub mod updater;
