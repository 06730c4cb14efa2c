//! Measures the resident memory of a process holding one driver connection
//! (runtime thread, channel, exit-event subscription).
//!
//!     cargo run --release -p shoal-containerd --example rss -- SOCKET [NAMESPACE]

use std::time::Duration;

fn status_kb(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(socket) = args.next() else {
        eprintln!("usage: rss SOCKET [NAMESPACE]");
        std::process::exit(2);
    };
    let namespace = args.next().unwrap_or_else(|| "shoal-rss".into());
    println!("before connect: VmRSS {} kB", status_kb("VmRSS:"));
    let driver =
        match shoal_containerd::Driver::connect(shoal_containerd::Config { socket: socket.into(), namespace, call_timeout_ms: 10_000 }) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
    let version = driver.version().unwrap_or_else(|e| e.to_string());
    let containers = driver.list().map(|l| l.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    println!("containerd {version}, {containers} containers, exits live: {}", driver.exits_live());
    println!("holding a connection: VmRSS {} kB, VmHWM {} kB, threads {}", status_kb("VmRSS:"), status_kb("VmHWM:"), status_kb("Threads:"));
}
