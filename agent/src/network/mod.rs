//! The node's container networking data path (issue #12): what a node must
//! build in the kernel so its tasks reach each other, their services' VIPs
//! and the outside, and so published ports answer on every node.
//!
//! Pure parts (no syscalls, unit-tested):
//! - [`plan`]: from this node's view of its networks (bridges, VXLAN
//!   devices, forwarding and neighbour entries to peers) and what the kernel
//!   has, the actions that make them agree ([`plan::diff`]); names of every
//!   device Shoal owns;
//! - [`nft`]: the whole `table ip shoal` ruleset (VIP and ingress DNAT with
//!   `numgen`, SNAT towards the overlay, masquerade out, `--internal`
//!   isolation), replaced atomically;
//! - [`files`]: a task's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`.
//!
//! The model (see ARCHITECTURE.md, "Container networking"):
//! - per network and node, one bridge holding the network's gateway address
//!   (the same on every node: a distributed gateway, never announced across
//!   VXLAN because flooding is off) and this node's own attachment address
//!   (unique; what VIP and ingress traffic is SNATed to, so replies come back
//!   through the node that translated them);
//! - one VXLAN device per network and node, enslaved to the bridge, with
//!   learning off and ARP proxying on: every remote endpoint (task or node
//!   attachment) gets a permanent forwarding entry (its MAC to its node's
//!   underlay address) and a neighbour entry (its IP to its MAC). All of it
//!   comes from the replicated state; nothing is gossiped or learned;
//! - a MAC is derived from its IPv4 address (`02:42:a.b.c.d`, as Docker
//!   does), so a peer's entries need no MAC in the state;
//! - per task, its own network namespace with one veth per attached network
//!   (`eth0`, `eth1`, ...), the default route through the first attached
//!   network that is not `--internal`.

pub mod driver;
pub mod files;
pub mod linux;
pub mod nft;
pub mod plan;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with its prefix length (`10.0.1.5/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr {
    /// `addr/prefix_len`; `None` when the prefix is over 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Cidr> {
        (prefix_len <= 32).then_some(Cidr { addr, prefix_len })
    }

    /// The network's first address (`10.0.1.0` for `10.0.1.5/24`).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The same prefix with the network address (`10.0.1.0/24`).
    pub fn subnet(&self) -> Cidr {
        Cidr { addr: self.network(), prefix_len: self.prefix_len }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not `A.B.C.D/N`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {0:?}: use A.B.C.D/N, e.g. 10.0.1.5/24")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = p.parse().map_err(|_| bad())?;
        Cidr::new(addr, prefix_len).ok_or_else(bad)
    }
}

/// The MAC an endpoint with address `ip` uses: `02:42` and the four bytes of
/// the address (locally administered, as Docker derives them).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_print_and_contain() {
        let c: Cidr = "10.0.1.5/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.1.5/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(c.subnet().to_string(), "10.0.1.0/24");
        assert!(c.contains(Ipv4Addr::new(10, 0, 1, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 2, 1)));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 168, 1, 1)));
        let host: Cidr = "10.0.1.5/32".parse().unwrap();
        assert!(host.contains(Ipv4Addr::new(10, 0, 1, 5)) && !host.contains(Ipv4Addr::new(10, 0, 1, 6)));
        for bad in ["10.0.1.5", "10.0.1.5/33", "10.0.1/24", "x/24", "10.0.1.5/-1", ""] {
            assert_eq!(bad.parse::<Cidr>(), Err(CidrError(bad.into())), "{bad}");
        }
    }

    #[test]
    fn macs_are_derived_from_addresses() {
        assert_eq!(mac_of(Ipv4Addr::new(10, 0, 1, 5)), [2, 0x42, 10, 0, 1, 5]);
        assert_eq!(mac_string(mac_of(Ipv4Addr::new(10, 255, 0, 16))), "02:42:0a:ff:00:10");
    }
}
