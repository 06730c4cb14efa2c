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
//! - [`files`]: a task's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`;
//! - [`bridge`]: the node-local bridge network (`shoal0`) of tasks on no
//!   network, and the node's own leases of its addresses.
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
//!   network that is not `--internal`; a task on no network gets `eth0` on
//!   the node's bridge network instead (see [`bridge`]).

pub mod bridge;
pub mod driver;
pub mod files;
pub mod linux;
pub mod nft;
pub mod plan;
pub mod tun;
pub mod view;

pub use shoal_shared::assignments::mac_of;
pub use shoal_shared::types::Ipv4Net;

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn macs_are_derived_from_addresses() {
        assert_eq!(mac_of(Ipv4Addr::new(10, 0, 1, 5)), [2, 0x42, 10, 0, 1, 5]);
        assert_eq!(mac_string(mac_of(Ipv4Addr::new(10, 255, 0, 16))), "02:42:0a:ff:00:10");
    }
}
