//! Facts about the machine this process runs on: hostname, platform,
//! resources and an address to advertise.

use shoal_shared::platform::Platform;
use shoal_shared::types::ResourceSet;
use std::net::Ipv4Addr;

/// Environment variable that makes the node report another platform.
/// Test-only: it lets one machine stand in for a mixed-architecture fleet
/// in placement tests. Never set it in production.
pub const TEST_PLATFORM_ENV: &str = "SHOAL_TEST_PLATFORM";

/// The node's hostname.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The platform this node reports (the build's, unless overridden for tests).
pub fn platform() -> Platform {
    match std::env::var(TEST_PLATFORM_ENV) {
        Ok(p) if !p.is_empty() => Platform::parse(&p).unwrap_or_else(|_| Platform::host()),
        _ => Platform::host(),
    }
}

/// CPUs (as nano-CPUs) and memory (bytes) of this machine.
pub fn resources() -> ResourceSet {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<i64>().ok()))
        })
        .unwrap_or(0);
    ResourceSet { nano_cpus: cpus * 1_000_000_000, memory_bytes: mem_kib * 1024 }
}

/// The first non-loopback IPv4 address of an interface that is up, or 127.0.0.1.
pub fn default_addr() -> Ipv4Addr {
    let mut found = Ipv4Addr::LOCALHOST;
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return found;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
            let lo = ifa.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0;
            if up && !lo && !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    found
}
