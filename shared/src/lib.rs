//! Shoal's shared vocabulary, used by the manager, the agent and the CLI.
//!
//! Owns: cluster object types (services, tasks, nodes, networks; frozen
//! pre-network copies in [`legacy`]) and the task state
//! machine, the control-API and raft-entry messages, bounded frame encoding,
//! platforms, and the clock and rng traits that keep the cores deterministic;
//! the sans-IO Noise link core, node keys and join tokens ([`noise`]) and the
//! reconnect [`backoff`]. It performs no I/O beyond what [`frame`] reads and
//! writes on a stream the caller hands it and the key-file helpers in
//! [`noise::key`], and the keyring file helpers in [`seal`] (which also
//! seals records at rest under a node's data key).

pub mod api;
pub mod assignments;
pub mod backoff;
pub mod clock;
pub mod frame;
pub mod health;
pub mod legacy;
pub mod noise;
pub mod ops;
pub mod platform;
pub mod rng;
pub mod seal;
pub mod task;
pub mod tunnel;
pub mod types;
pub mod wire;
