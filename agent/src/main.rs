//! The `shoal` binary: one static executable for the CLI, the daemon, the
//! manager role and the worker role.

// A binary has no public API: `pub` here marks module boundaries only.
#![allow(unreachable_pub)]

mod cli;
mod client;
mod daemon;
mod host;
mod log;
mod net;
mod runtime;
mod worker;

fn main() {
    if let Err(e) = cli::main() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
