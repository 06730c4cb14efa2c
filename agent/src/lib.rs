//! The `shoal` binary's code as a library: the CLI, the daemon, the worker
//! and the runtime drivers. `main.rs` only calls [`cli::main`]; the library
//! form lets the whole-node simulator (`examples/swarm_sim.rs`, feature
//! `sim`) run real daemons, which the shipped binary never compiles in.

// Only `cli::main` (and, with `sim`, the simulator) is public API: `pub`
// elsewhere marks module boundaries only.
#![allow(unreachable_pub)]

pub mod cli;
mod client;
mod daemon;
mod host;
pub mod log;
mod logdriver;
mod net;
#[allow(dead_code)] // The data path is wired in by the next slice of issue #12.
mod network;
mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
mod worker;
