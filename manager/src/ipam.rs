//! The pure IPAM core: address pools of networks, published-port space,
//! subnets carved from the default pools, and VXLAN ids.
//!
//! No clock, rng or I/O: the allocation pass (`crate::network`) builds these
//! from the replicated state, asks them for addresses and ports, and writes
//! the answers into ops. Allocation is next-fit (the search starts after the
//! last address or port handed out and wraps), so a freed address is reused
//! as late as possible: a stale neighbour or conntrack entry somewhere is
//! unlikely to meet a new owner of the address.
//!
//! A pool never hands out a subnet's network or broadcast address nor its
//! gateway; with an `--ip-range` it hands out only addresses inside it.

use shoal_shared::types::{Ipv4Net, PORT_AUTO_MAX, PORT_AUTO_MIN, VNI_MAX, VNI_MIN};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Longest prefix of a network subnet: a /30 has two usable addresses (a gateway and one more).
pub const SUBNET_PREFIX_MAX: u8 = 30;

/// The addresses of one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    subnet: Ipv4Net,
    /// The allocatable range (inclusive), as numbers.
    first: u32,
    last: u32,
    used: BTreeSet<u32>,
    /// The last address handed out (next-fit starts after it).
    cursor: u32,
}

impl Pool {
    /// A pool of `subnet` (prefix at most [`SUBNET_PREFIX_MAX`]) without its
    /// network, broadcast and `gateway` addresses, restricted to `ip_range`
    /// when given; next-fit resumes after `last` (the network's cursor).
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, ip_range: Option<Ipv4Net>, last: Option<Ipv4Addr>) -> Pool {
        assert!(subnet.prefix <= SUBNET_PREFIX_MAX, "subnet {subnet} was accepted with a prefix over /{SUBNET_PREFIX_MAX}");
        let mut first = u32::from(subnet.network()) + 1;
        let mut end = u32::from(subnet.broadcast()) - 1;
        if let Some(r) = ip_range {
            first = first.max(u32::from(r.network()));
            end = end.min(u32::from(r.broadcast()));
        }
        let mut used = BTreeSet::new();
        used.insert(u32::from(gateway));
        let cursor = last.map(u32::from).filter(|c| (first..=end).contains(c)).unwrap_or(end);
        Pool { subnet: subnet.trunc(), first, last: end, used, cursor }
    }

    /// The subnet this pool hands addresses of.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// Marks `ip` held (an existing allocation). False when it already was
    /// (two holders: the caller decides) or lies outside the subnet.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip) && self.used.insert(u32::from(ip))
    }

    /// Frees `ip`.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }

    /// `ip` is held.
    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.used.contains(&u32::from(ip))
    }

    /// The next free address after the cursor (wrapping), or `None` when
    /// the range is exhausted. The address is held and becomes the cursor.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        if self.first > self.last {
            return None;
        }
        let after = (self.cursor.max(self.first - 1).saturating_add(1)..=self.last).find(|a| !self.used.contains(a));
        let found = after.or_else(|| (self.first..=self.cursor.min(self.last)).find(|a| !self.used.contains(a)))?;
        self.used.insert(found);
        self.cursor = found;
        Some(Ipv4Addr::from(found))
    }
}

/// Published ingress ports swarm-wide, per protocol, and the automatic range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSpace {
    used: BTreeSet<(String, u32)>,
    /// The last automatically assigned port (next-fit starts after it).
    cursor: u32,
}

impl PortSpace {
    /// An empty space whose next automatic port follows `last`.
    pub fn new(last: u32) -> PortSpace {
        PortSpace { used: BTreeSet::new(), cursor: last }
    }

    /// Holds `port/protocol`; false when it already was held.
    pub fn reserve(&mut self, protocol: &str, port: u32) -> bool {
        self.used.insert((protocol.to_ascii_lowercase(), port))
    }

    /// Frees `port/protocol`.
    pub fn release(&mut self, protocol: &str, port: u32) {
        self.used.remove(&(protocol.to_ascii_lowercase(), port));
    }

    /// `port/protocol` is held.
    pub fn is_used(&self, protocol: &str, port: u32) -> bool {
        self.used.contains(&(protocol.to_ascii_lowercase(), port))
    }

    /// The next free port of [`PORT_AUTO_MIN`]..=[`PORT_AUTO_MAX`] for
    /// `protocol` after the cursor (wrapping), held; `None` when all are taken.
    pub fn allocate(&mut self, protocol: &str) -> Option<u32> {
        let start = if (PORT_AUTO_MIN..PORT_AUTO_MAX).contains(&self.cursor) { self.cursor + 1 } else { PORT_AUTO_MIN };
        let found = (start..=PORT_AUTO_MAX).chain(PORT_AUTO_MIN..start).find(|p| !self.is_used(protocol, *p))?;
        self.reserve(protocol, found);
        self.cursor = found;
        Some(found)
    }

    /// The last automatically assigned port.
    pub fn cursor(&self) -> u32 {
        self.cursor
    }
}

/// The first subnet of `/size` in `pools` (in order) that overlaps none of `taken`.
pub fn carve_subnet(pools: &[Ipv4Net], size: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    for pool in pools {
        if size < pool.prefix || size > SUBNET_PREFIX_MAX {
            continue;
        }
        let count: u64 = 1 << (size - pool.prefix);
        let step: u64 = 1 << (32 - u32::from(size));
        let base = u64::from(u32::from(pool.network()));
        let mut i = 0;
        while i < count {
            let candidate = Ipv4Net { addr: Ipv4Addr::from((base + i * step) as u32), prefix: size };
            match taken.iter().filter(|t| t.overlaps(candidate)).map(|t| u64::from(u32::from(t.broadcast()))).max() {
                None => return Some(candidate),
                // Skip past the overlapping subnet at once (a /16 taken skips 256 /24s).
                Some(end) => i = ((end + 1).saturating_sub(base)).div_ceil(step).max(i + 1),
            }
        }
    }
    None
}

/// The lowest VXLAN id from [`VNI_MIN`] not in `taken`.
pub fn next_vni(taken: &BTreeSet<u32>) -> Option<u32> {
    (VNI_MIN..=VNI_MAX).find(|v| !taken.contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::rng::Rng;

    fn net(s: &str) -> Ipv4Net {
        Ipv4Net::parse(s).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn never_network_gateway_or_broadcast() {
        let mut p = Pool::new(net("10.0.0.0/29"), ip("10.0.0.1"), None, None);
        let got: Vec<String> = std::iter::from_fn(|| p.allocate()).map(|a| a.to_string()).collect();
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(p.allocate(), None, "exhausted");
        // A gateway in the middle is skipped too.
        let mut p = Pool::new(net("10.15.0.0/29"), ip("10.15.0.2"), None, None);
        let got: Vec<String> = std::iter::from_fn(|| p.allocate()).map(|a| a.to_string()).collect();
        assert_eq!(got, ["10.15.0.1", "10.15.0.3", "10.15.0.4", "10.15.0.5", "10.15.0.6"]);
    }

    #[test]
    fn next_fit_wraps_and_reuses_freed_addresses_last() {
        let mut p = Pool::new(net("10.0.0.0/29"), ip("10.0.0.1"), None, None);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        p.release(a);
        assert_eq!(p.allocate(), Some(ip("10.0.0.4")), "not the freed one");
        p.release(b);
        assert_eq!(p.allocate(), Some(ip("10.0.0.5")));
        assert_eq!(p.allocate(), Some(ip("10.0.0.6")));
        assert_eq!(p.allocate(), Some(ip("10.0.0.2")), "wrapped to the oldest freed");
        assert_eq!(p.allocate(), Some(ip("10.0.0.3")));
        assert_eq!(p.allocate(), None);
        // The cursor survives through the network record.
        let mut p = Pool::new(net("10.0.0.0/29"), ip("10.0.0.1"), None, Some(ip("10.0.0.4")));
        assert_eq!(p.allocate(), Some(ip("10.0.0.5")));
    }

    #[test]
    fn ip_range_limits_allocation() {
        let mut p = Pool::new(net("10.15.0.0/16"), ip("10.15.0.2"), Some(net("10.15.3.0/30")), None);
        let got: Vec<String> = std::iter::from_fn(|| p.allocate()).map(|a| a.to_string()).collect();
        assert_eq!(got, ["10.15.3.0", "10.15.3.1", "10.15.3.2", "10.15.3.3"]);
        assert!(p.reserve(ip("10.15.9.9")), "held outside the range is still a holding");
        assert!(!p.reserve(ip("10.15.9.9")));
        assert!(!p.reserve(ip("10.16.0.1")), "outside the subnet");
        assert!(p.is_used(ip("10.15.0.2")), "the gateway");
    }

    /// Property: with random allocations and releases, an address is never
    /// handed out twice while held, and never outside the usable range.
    #[test]
    fn random_allocations_never_collide() {
        for seed in 0..50 {
            let mut rng = Rng::from_seed(seed);
            let subnet = net("10.1.2.0/27");
            let gw = ip("10.1.2.1");
            let mut p = Pool::new(subnet, gw, None, None);
            let mut held: BTreeSet<Ipv4Addr> = BTreeSet::new();
            for _ in 0..400 {
                if rng.range(0, 3) == 0 && !held.is_empty() {
                    let pick = *held.iter().nth(rng.range(0, held.len() as u64) as usize).unwrap();
                    held.remove(&pick);
                    p.release(pick);
                    continue;
                }
                match p.allocate() {
                    Some(a) => {
                        assert!(held.insert(a), "seed {seed}: {a} handed out twice");
                        assert!(a != gw && a != subnet.network() && a != subnet.broadcast() && subnet.contains(a), "seed {seed}: {a}");
                    }
                    None => assert_eq!(held.len(), 29, "seed {seed}: exhausted only when full"),
                }
            }
        }
    }

    #[test]
    fn ports_are_unique_per_protocol_and_auto_ports_next_fit() {
        let mut s = PortSpace::new(0);
        assert!(s.reserve("tcp", 8080));
        assert!(!s.reserve("TCP", 8080), "taken");
        assert!(s.reserve("udp", 8080), "another protocol");
        assert!(s.reserve("tcp", 30_000));
        assert_eq!(s.allocate("tcp"), Some(30_001));
        assert_eq!(s.allocate("udp"), Some(30_002), "next-fit across protocols");
        s.release("tcp", 30_001);
        assert_eq!(s.allocate("tcp"), Some(30_003));
        let mut s = PortSpace::new(PORT_AUTO_MAX);
        assert_eq!(s.allocate("tcp"), Some(PORT_AUTO_MIN), "wraps");
        let mut full = PortSpace::new(0);
        for p in PORT_AUTO_MIN..=PORT_AUTO_MAX {
            full.reserve("tcp", p);
        }
        assert_eq!(full.allocate("tcp"), None);
        assert_eq!(full.allocate("udp"), Some(PORT_AUTO_MIN));
    }

    #[test]
    fn subnets_are_carved_around_taken_ones() {
        let pool = [net("10.0.0.0/8")];
        assert_eq!(carve_subnet(&pool, 24, &[]), Some(net("10.0.0.0/24")));
        assert_eq!(carve_subnet(&pool, 24, &[net("10.0.0.0/24")]), Some(net("10.0.1.0/24")));
        assert_eq!(carve_subnet(&pool, 24, &[net("10.0.0.0/24"), net("10.0.0.0/16")]), Some(net("10.1.0.0/24")));
        assert_eq!(carve_subnet(&pool, 24, &[net("10.0.0.0/8")]), None);
        let pools = [net("10.9.0.0/30"), net("192.168.0.0/16")];
        assert_eq!(carve_subnet(&pools, 24, &[]), Some(net("192.168.0.0/24")), "a pool smaller than the size is skipped");
        assert_eq!(carve_subnet(&[net("10.0.0.0/23")], 24, &[net("10.0.0.128/25")]), Some(net("10.0.1.0/24")));
    }

    #[test]
    fn vnis_start_at_4096_and_fill_gaps() {
        assert_eq!(next_vni(&BTreeSet::new()), Some(4096));
        assert_eq!(next_vni(&BTreeSet::from([4096, 4097, 4099])), Some(4098));
    }
}
