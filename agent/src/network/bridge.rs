//! The node-local bridge network, Shoal's `bridge` (Docker's default bridge
//! for swarm tasks): a task of a service on no network and publishing no
//! ingress port gets its own namespace with `eth0` on the node's
//! [`DEVICE`] bridge, an address from the node's own pool, a default route
//! through the bridge's gateway and masquerade out. Pure.
//!
//! Addresses are node-local: no leader allocates them. [`Leases`] is the
//! daemon's allocator (next-fit, so a freed address is not handed out again
//! at once while conntrack may remember it); each lease is also written by
//! the driver next to the task's namespace (`DATA_DIR/netns/TASK.bridge`),
//! read back when the daemon starts (a kill -9 and restart adopts the live
//! tasks' addresses instead of handing them out again) and removed with the
//! namespace. A lease is dropped from memory only once a sync pruned the
//! namespaces of every task that is not live (so an address is never held by
//! two namespaces).
//!
//! Tasks on the bridge are isolated from overlay networks (as Docker's bridge
//! is from its other networks); they ask the node's nameservers (the
//! embedded resolver does not serve them: nothing swarm-internal resolves on
//! Docker's default bridge either).

use super::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The network's id (and name) in task attachments and plans.
pub const NETWORK_ID: &str = "bridge";
/// The bridge device (Docker's is `docker0`).
pub const DEVICE: &str = "shoal0";
/// The default subnet (`--bridge-subnet`): Docker's `docker0` takes
/// 172.17.0.0/16, so a node running both does not clash by default.
pub const SUBNET_DEFAULT: &str = "172.18.0.0/16";
/// MTU of the bridge and its tasks' interfaces (Ethernet's).
pub const MTU: u32 = 1500;
/// The narrowest and widest subnets taken (a /30 holds two tasks at most).
pub const PREFIX_MIN: u8 = 8;
pub const PREFIX_MAX: u8 = 29;

/// The bridge network of this node: its subnet and gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bridge {
    /// Host bits cleared.
    pub subnet: Ipv4Net,
    /// The subnet's first address, held by [`DEVICE`].
    pub gateway: Ipv4Addr,
}

/// Why a bridge cannot be made or an address leased.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge subnet {0} must have a prefix length of {PREFIX_MIN} to {PREFIX_MAX} (--bridge-subnet)")]
    Prefix(Ipv4Net),
    #[error("no address left on the node's bridge network {0}")]
    Exhausted(Ipv4Net),
}

impl Bridge {
    /// The bridge on `subnet` (host bits ignored); its gateway is the first address.
    pub fn new(subnet: Ipv4Net) -> Result<Bridge, BridgeError> {
        if !(PREFIX_MIN..=PREFIX_MAX).contains(&subnet.prefix) {
            return Err(BridgeError::Prefix(subnet));
        }
        let subnet = subnet.trunc();
        let gateway = Ipv4Addr::from(u32::from(subnet.addr) + 1);
        Ok(Bridge { subnet, gateway })
    }

    /// The default bridge.
    pub fn default_subnet() -> Bridge {
        let net = Ipv4Net::parse(SUBNET_DEFAULT).expect("SUBNET_DEFAULT is a valid subnet");
        Bridge::new(net).expect("SUBNET_DEFAULT has a valid prefix length")
    }

    /// An address tasks may hold: in the subnet, not its network, gateway or broadcast address.
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip) && ip != self.subnet.network() && ip != self.gateway && ip != self.subnet.broadcast()
    }
}

/// The addresses this node leased to its tasks on the bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    by_task: BTreeMap<String, Ipv4Addr>,
    /// The last address handed out (next-fit starts after it).
    last: Option<Ipv4Addr>,
}

impl Leases {
    /// The leases read back at start (from the driver); ones outside `bridge`
    /// (another `--bridge-subnet` than before) or held twice are dropped.
    pub fn adopt(bridge: &Bridge, found: BTreeMap<String, Ipv4Addr>) -> Leases {
        let mut seen = BTreeSet::new();
        let by_task: BTreeMap<String, Ipv4Addr> = found.into_iter().filter(|(_, ip)| bridge.assignable(*ip) && seen.insert(*ip)).collect();
        let last = by_task.values().max().copied();
        Leases { by_task, last }
    }

    pub fn get(&self, task_id: &str) -> Option<Ipv4Addr> {
        self.by_task.get(task_id).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.by_task.iter().map(|(t, ip)| (t.as_str(), *ip))
    }

    pub fn len(&self) -> usize {
        self.by_task.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// Task `task_id`'s address: the one it holds, else the next free one
    /// after the last handed out (wrapping round once).
    pub fn lease(&mut self, bridge: &Bridge, task_id: &str) -> Result<Ipv4Addr, BridgeError> {
        if let Some(ip) = self.by_task.get(task_id) {
            return Ok(*ip);
        }
        let taken: BTreeSet<Ipv4Addr> = self.by_task.values().copied().collect();
        let (first, last) = (u32::from(bridge.gateway) + 1, u32::from(bridge.subnet.broadcast()) - 1);
        let start =
            self.last.map(u32::from).filter(|l| (first..=last).contains(l)).map_or(first, |l| if l == last { first } else { l + 1 });
        let candidates = (start..=last).chain(first..start).map(Ipv4Addr::from);
        let ip =
            candidates.filter(|ip| bridge.assignable(*ip)).find(|ip| !taken.contains(ip)).ok_or(BridgeError::Exhausted(bridge.subnet))?;
        self.by_task.insert(task_id.to_string(), ip);
        self.last = Some(ip);
        Ok(ip)
    }

    /// Keeps the leases of the tasks `keep` says (the others' namespaces are gone).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_task.retain(|t, _| keep(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn small() -> Bridge {
        Bridge::new(Ipv4Net::parse("192.168.50.0/29").unwrap()).unwrap()
    }

    #[test]
    fn the_bridge_takes_the_first_address_and_sane_prefixes() {
        let b = Bridge::default_subnet();
        assert_eq!((b.subnet.to_string(), b.gateway), ("172.18.0.0/16".into(), ip("172.18.0.1")));
        // Host bits are ignored.
        assert_eq!(Bridge::new(Ipv4Net::parse("10.9.3.7/24").unwrap()).unwrap().gateway, ip("10.9.3.1"));
        for bad in ["10.0.0.0/30", "10.0.0.0/32", "10.0.0.0/7"] {
            let n = Ipv4Net::parse(bad).unwrap();
            assert_eq!(Bridge::new(n), Err(BridgeError::Prefix(n)));
        }
        assert!(!b.assignable(ip("172.18.0.0")) && !b.assignable(ip("172.18.0.1")) && !b.assignable(ip("172.18.255.255")));
        assert!(b.assignable(ip("172.18.0.2")) && !b.assignable(ip("172.19.0.2")));
    }

    #[test]
    fn leases_are_next_fit_stable_and_bounded() {
        let b = small();
        let mut l = Leases::default();
        // .2 to .6: five addresses in a /29 besides network, gateway and broadcast.
        let got: Vec<Ipv4Addr> = ["a", "b", "c"].iter().map(|t| l.lease(&b, t).unwrap()).collect();
        assert_eq!(got, [ip("192.168.50.2"), ip("192.168.50.3"), ip("192.168.50.4")]);
        // A task asking again keeps its address.
        assert_eq!(l.lease(&b, "b"), Ok(ip("192.168.50.3")));
        // A freed address is not the next one handed out.
        l.retain(|t| t != "a");
        assert_eq!(l.lease(&b, "d"), Ok(ip("192.168.50.5")));
        assert_eq!(l.lease(&b, "e"), Ok(ip("192.168.50.6")));
        // Wraps round to the freed one, then runs out without changing anything.
        assert_eq!(l.lease(&b, "f"), Ok(ip("192.168.50.2")));
        let before = l.clone();
        assert_eq!(l.lease(&b, "g"), Err(BridgeError::Exhausted(b.subnet)));
        assert_eq!(l, before, "a failed lease leaves the leases unchanged");
        assert_eq!(l.len(), 5);
    }

    #[test]
    fn leases_read_back_at_start_are_adopted() {
        let b = small();
        let found: BTreeMap<String, Ipv4Addr> = [
            ("live1", "192.168.50.3"),
            ("live2", "192.168.50.5"),
            ("twice", "192.168.50.5"),
            ("other", "10.0.0.9"),
            ("gw", "192.168.50.1"),
        ]
        .iter()
        .map(|(t, a)| (t.to_string(), ip(a)))
        .collect();
        let mut l = Leases::adopt(&b, found);
        assert_eq!(l.iter().collect::<Vec<_>>(), [("live1", ip("192.168.50.3")), ("live2", ip("192.168.50.5"))]);
        assert_eq!(l.lease(&b, "live1"), Ok(ip("192.168.50.3")));
        // A new task never gets an adopted address; next-fit goes on after the highest.
        assert_eq!(l.lease(&b, "new"), Ok(ip("192.168.50.6")));
        assert_eq!(l.lease(&b, "new2"), Ok(ip("192.168.50.2")));
    }

    /// Random leases and frees never hand out an address twice or outside the pool.
    #[test]
    fn leases_never_collide() {
        let b = Bridge::new(Ipv4Net::parse("10.1.0.0/28").unwrap()).unwrap();
        let mut rng = shoal_shared::rng::Rng::from_seed(7);
        let mut l = Leases::default();
        for i in 0..2_000 {
            if rng.range(0, 3) == 0 {
                let drop = rng.range(0, 20);
                l.retain(|t| !t.ends_with(&format!("-{drop}")));
            } else {
                let _ = l.lease(&b, &format!("t{i}-{}", rng.range(0, 20)));
            }
            let ips: BTreeSet<Ipv4Addr> = l.iter().map(|(_, ip)| ip).collect();
            assert_eq!(ips.len(), l.len(), "an address held twice: {l:?}");
            assert!(ips.iter().all(|ip| b.assignable(*ip)));
        }
    }
}
