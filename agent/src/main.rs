//! The `shoal` binary: one static executable for the CLI, the daemon, the
//! manager role and the worker role (all of it in the `shoal_agent` library).

fn main() {
    if let Err(e) = shoal_agent::cli::main() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
