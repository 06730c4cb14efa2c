//! The `shoal` binary: one static executable for the CLI, the daemon, the
//! manager role and the worker role.

fn main() {
    println!("shoal {}", env!("CARGO_PKG_VERSION"));
}
