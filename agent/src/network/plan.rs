//! What the kernel of this node must hold for its overlay networks, and the
//! steps that get it there. Pure: the shell reads the kernel (netlink
//! dumps) into an [`Observed`], calls [`diff`] and carries out the
//! [`NetAction`]s in order; a task's namespace is built by [`task_steps`].
//!
//! Invariants:
//! - Shoal touches only devices whose names it made ([`BRIDGE_PREFIX`],
//!   [`VXLAN_PREFIX`], [`VETH_PREFIX`]); an unknown device is never changed;
//! - [`diff`] is idempotent: applied to an [`Observed`] that already matches,
//!   it returns nothing; so a restarted daemon adopts what it built (tasks
//!   keep their connections) instead of rebuilding it;
//! - a device whose identity changed (a VXLAN device with another VNI, local
//!   address or port) is deleted and made again, never patched;
//! - forwarding and neighbour entries are exactly the remote endpoints of
//!   the state: stale ones are removed, so a task that moved or stopped
//!   stops receiving traffic meant for its old address.

use super::bridge::{self, Bridge};
use super::{mac_of, Ipv4Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Name prefix of the bridge of a network on a node.
pub const BRIDGE_PREFIX: &str = "sb-";
/// Name prefix of the VXLAN device of a network on a node.
pub const VXLAN_PREFIX: &str = "sx-";
/// Name prefix of the host end of a task's veth.
pub const VETH_PREFIX: &str = "sv";
/// Name prefix of the task end of a veth before it moves into the task's namespace.
pub const VETH_PEER_PREFIX: &str = "st";
/// Longest interface name the kernel takes (IFNAMSIZ - 1).
pub const IFNAME_BYTES_MAX: usize = 15;
/// Characters of a network id in its devices' names.
const NET_ID_CHARS: usize = 12;
/// Characters of a task id in its veths' names.
const TASK_ID_CHARS: usize = 11;
/// Networks one task may attach to (`eth0`..`eth9`).
pub const TASK_NETWORKS_MAX: usize = 10;
/// The tunnel relay's TUN device (issue #15): encrypted networks' VXLAN
/// packets to other nodes are routed into it (the tunnel network's route)
/// and sealed by the daemon. Not one of the names [`is_ours`] prunes: the
/// daemon holds it open, and it goes with the daemon.
pub const TUN_DEVICE: &str = "shoal-tun";
/// Docker's default VXLAN port.
pub const VXLAN_PORT_DEFAULT: u16 = 4789;
/// VXLAN's own overhead on the underlay (outer IP, UDP, VXLAN, inner Ethernet).
pub const VXLAN_OVERHEAD_BYTES: u32 = 50;

const _: () = assert!(BRIDGE_PREFIX.len() + NET_ID_CHARS <= IFNAME_BYTES_MAX);
const _: () = assert!(VXLAN_PREFIX.len() + NET_ID_CHARS <= IFNAME_BYTES_MAX);
const _: () = assert!(VETH_PREFIX.len() + TASK_ID_CHARS < IFNAME_BYTES_MAX);
const _: () = assert!(VETH_PEER_PREFIX.len() + TASK_ID_CHARS < IFNAME_BYTES_MAX);

/// One overlay network as this node must have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetView {
    pub id: String,
    pub vni: u32,
    /// The network's subnet (`10.0.1.0/24`).
    pub subnet: Ipv4Net,
    /// The gateway address, held by this network's bridge on every node.
    pub gateway: Ipv4Addr,
    /// This node's own address on the network (unique in it).
    pub node_addr: Ipv4Addr,
    /// MTU of the bridge, the VXLAN device and the tasks' interfaces.
    pub mtu: u32,
    pub internal: bool,
    /// Endpoints on other nodes: (their address, where their node's VXLAN
    /// device receives: its underlay address, or for an encrypted network
    /// its tunnel address).
    pub remote: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The VXLAN device's source address when it is not the node's
    /// underlay address: the node's tunnel address on an encrypted network
    /// (so its traffic is routed into the relay's TUN device, issue #15).
    pub vxlan_local: Option<Ipv4Addr>,
    /// Service VIPs on the network: held by the bridge as /32 addresses on
    /// every node, so a task's ARP for one is answered locally and the node
    /// translates the connection (`nft`).
    pub vips: Vec<Ipv4Addr>,
}

/// Everything this node must have for its overlay networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// This node's address on the underlay (its advertise address).
    pub underlay: Ipv4Addr,
    pub vxlan_port: u16,
    pub networks: Vec<NetView>,
    /// The node-local bridge network ([`bridge::DEVICE`]), while in a swarm.
    pub bridge: Option<Bridge>,
}

/// A device's kind, as the kernel names it (`IFLA_INFO_KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Vxlan { vni: u32, local: Ipv4Addr, port: u16 },
    Veth,
    Other,
}

/// One device as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLink {
    pub name: String,
    pub kind: LinkKind,
    pub master: Option<String>,
    pub up: bool,
    pub mtu: u32,
}

/// What the kernel has, as far as Shoal's devices go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<ObservedLink>,
    /// Addresses by device name.
    pub addrs: BTreeMap<String, BTreeSet<Ipv4Net>>,
    /// Forwarding entries by VXLAN device: (MAC, remote underlay address).
    pub fdb: BTreeMap<String, BTreeSet<([u8; 6], Ipv4Addr)>>,
    /// Neighbour entries by VXLAN device: (address, MAC).
    pub neigh: BTreeMap<String, BTreeSet<(Ipv4Addr, [u8; 6])>>,
}

/// One change to the kernel, in the order [`diff`] gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetAction {
    DelLink { name: String },
    AddBridge { name: String, mtu: u32, mac: [u8; 6] },
    AddVxlan { name: String, vni: u32, local: Ipv4Addr, port: u16, mtu: u32 },
    SetMaster { link: String, bridge: String },
    SetMtu { link: String, mtu: u32 },
    AddAddr { link: String, addr: Ipv4Net },
    DelAddr { link: String, addr: Ipv4Net },
    SetUp { link: String },
    ReplaceFdb { vxlan: String, mac: [u8; 6], dst: Ipv4Addr },
    DelFdb { vxlan: String, mac: [u8; 6], dst: Ipv4Addr },
    ReplaceNeigh { vxlan: String, ip: Ipv4Addr, mac: [u8; 6] },
    DelNeigh { vxlan: String, ip: Ipv4Addr, mac: [u8; 6] },
}

/// The first characters of an id that fit in a device name (ids are
/// lowercase alphanumerics; anything else is dropped).
fn short(id: &str, n: usize) -> String {
    id.chars().filter(char::is_ascii_alphanumeric).take(n).collect()
}

/// The bridge of network `id`.
pub fn bridge_name(network_id: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", short(network_id, NET_ID_CHARS))
}

/// The VXLAN device of network `id`.
pub fn vxlan_name(network_id: &str) -> String {
    format!("{VXLAN_PREFIX}{}", short(network_id, NET_ID_CHARS))
}

/// The host end of task `task_id`'s veth on its `index`th network.
pub fn veth_name(task_id: &str, index: usize) -> String {
    format!("{VETH_PREFIX}{}{index}", short(task_id, TASK_ID_CHARS))
}

/// The task end of that veth, before it is moved and renamed `eth<index>`.
pub fn veth_peer_name(task_id: &str, index: usize) -> String {
    format!("{VETH_PEER_PREFIX}{}{index}", short(task_id, TASK_ID_CHARS))
}

/// Whether Shoal made a device of this name (and so may change or delete it).
pub fn is_ours(name: &str) -> bool {
    name.starts_with(BRIDGE_PREFIX) || name.starts_with(VXLAN_PREFIX) || name == bridge::DEVICE
}

/// The bridge a task's interface on network `network_id` is a port of.
pub fn attachment_bridge(network_id: &str) -> String {
    if network_id == bridge::NETWORK_ID {
        bridge::DEVICE.to_string()
    } else {
        bridge_name(network_id)
    }
}

/// The actions that make `have` hold exactly `want`'s bridges, VXLAN
/// devices, addresses and entries (veths are the tasks', see [`task_steps`]).
pub fn diff(want: &NodeView, have: &Observed) -> Vec<NetAction> {
    let mut out = Vec::new();
    let links: BTreeMap<&str, &ObservedLink> = have.links.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut wanted: BTreeSet<String> = want.networks.iter().flat_map(|n| [bridge_name(&n.id), vxlan_name(&n.id)]).collect();
    if want.bridge.is_some() {
        wanted.insert(bridge::DEVICE.to_string());
    }
    // Ours but not wanted, or the wrong kind: gone first (a VXLAN device's identity cannot change in place).
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for l in &have.links {
        if !is_ours(&l.name) {
            continue;
        }
        let keep = wanted.contains(&l.name)
            && match l.kind {
                LinkKind::Bridge => l.name.starts_with(BRIDGE_PREFIX) || l.name == bridge::DEVICE,
                LinkKind::Vxlan { vni, local, port } => want.networks.iter().any(|n| {
                    vxlan_name(&n.id) == l.name
                        && n.vni == vni
                        && local == n.vxlan_local.unwrap_or(want.underlay)
                        && port == want.vxlan_port
                }),
                LinkKind::Veth | LinkKind::Other => false,
            };
        if !keep {
            gone.insert(l.name.clone());
            out.push(NetAction::DelLink { name: l.name.clone() });
        }
    }
    let exists = |name: &str| links.contains_key(name) && !gone.contains(name);
    let kept = |name: &str| links.get(name).copied().filter(|_| !gone.contains(name));
    if let Some(b) = &want.bridge {
        let gateway = Ipv4Net { addr: b.gateway, prefix: b.subnet.prefix };
        let want = BridgeWant { mtu: bridge::MTU, mac: mac_of(b.gateway), addrs: [gateway].into(), first: gateway };
        ensure_bridge(&mut out, bridge::DEVICE, kept(bridge::DEVICE), have, want);
    }
    for n in &want.networks {
        let (br, vx) = (bridge_name(&n.id), vxlan_name(&n.id));
        // The gateway (shared by every node) and this node's own address.
        let mut want_addrs: BTreeSet<Ipv4Net> =
            [n.gateway, n.node_addr].into_iter().map(|a| Ipv4Net { addr: a, prefix: n.subnet.prefix }).collect();
        want_addrs.extend(n.vips.iter().map(|v| Ipv4Net { addr: *v, prefix: 32 }));
        // This node's own address goes on first: the first address in a subnet is the one the
        // kernel picks as source, and the gateway is held by every node (a reply to it would
        // end at whichever node the peer reached first).
        let own = Ipv4Net { addr: n.node_addr, prefix: n.subnet.prefix };
        ensure_bridge(&mut out, &br, kept(&br), have, BridgeWant { mtu: n.mtu, mac: mac_of(n.node_addr), addrs: want_addrs, first: own });
        let vx_mtu = n.mtu;
        let fresh_vx = !exists(&vx);
        if fresh_vx {
            out.push(NetAction::AddVxlan {
                name: vx.clone(),
                vni: n.vni,
                local: n.vxlan_local.unwrap_or(want.underlay),
                port: want.vxlan_port,
                mtu: vx_mtu,
            });
        } else if links[vx.as_str()].mtu != vx_mtu {
            out.push(NetAction::SetMtu { link: vx.clone(), mtu: vx_mtu });
        }
        if fresh_vx || links[vx.as_str()].master.as_deref() != Some(br.as_str()) {
            out.push(NetAction::SetMaster { link: vx.clone(), bridge: br.clone() });
        }
        if fresh_vx || !links[vx.as_str()].up {
            out.push(NetAction::SetUp { link: vx.clone() });
        }
        // Entries: exactly the remote endpoints.
        let want_fdb: BTreeSet<([u8; 6], Ipv4Addr)> = n.remote.iter().map(|(ip, node)| (mac_of(*ip), *node)).collect();
        let want_neigh: BTreeSet<(Ipv4Addr, [u8; 6])> = n.remote.iter().map(|(ip, _)| (*ip, mac_of(*ip))).collect();
        let (have_fdb, have_neigh) = if fresh_vx {
            (BTreeSet::new(), BTreeSet::new())
        } else {
            (have.fdb.get(&vx).cloned().unwrap_or_default(), have.neigh.get(&vx).cloned().unwrap_or_default())
        };
        for (mac, dst) in have_fdb.difference(&want_fdb) {
            out.push(NetAction::DelFdb { vxlan: vx.clone(), mac: *mac, dst: *dst });
        }
        for (ip, mac) in have_neigh.difference(&want_neigh) {
            out.push(NetAction::DelNeigh { vxlan: vx.clone(), ip: *ip, mac: *mac });
        }
        for (mac, dst) in want_fdb.difference(&have_fdb) {
            out.push(NetAction::ReplaceFdb { vxlan: vx.clone(), mac: *mac, dst: *dst });
        }
        for (ip, mac) in want_neigh.difference(&have_neigh) {
            out.push(NetAction::ReplaceNeigh { vxlan: vx.clone(), ip: *ip, mac: *mac });
        }
    }
    out
}

/// What one bridge must be: its MTU, MAC and exactly these addresses,
/// `first` added before the others.
struct BridgeWant {
    mtu: u32,
    mac: [u8; 6],
    addrs: BTreeSet<Ipv4Net>,
    first: Ipv4Net,
}

/// The actions that make bridge `name` (`link`: as the kernel has it, if it
/// does and stays) what `want` says.
fn ensure_bridge(out: &mut Vec<NetAction>, name: &str, link: Option<&ObservedLink>, have: &Observed, want: BridgeWant) {
    match link {
        None => out.push(NetAction::AddBridge { name: name.to_string(), mtu: want.mtu, mac: want.mac }),
        Some(l) if l.mtu != want.mtu => out.push(NetAction::SetMtu { link: name.to_string(), mtu: want.mtu }),
        Some(_) => {}
    }
    let have_addrs = if link.is_none() { BTreeSet::new() } else { have.addrs.get(name).cloned().unwrap_or_default() };
    for a in have_addrs.difference(&want.addrs) {
        out.push(NetAction::DelAddr { link: name.to_string(), addr: *a });
    }
    let mut adds: Vec<Ipv4Net> = want.addrs.difference(&have_addrs).copied().collect();
    adds.sort_by_key(|a| *a != want.first);
    for a in adds {
        out.push(NetAction::AddAddr { link: name.to_string(), addr: a });
    }
    if !link.is_some_and(|l| l.up) {
        out.push(NetAction::SetUp { link: name.to_string() });
    }
}

/// One network a task is attached to, as its namespace needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskAttachment {
    pub network_id: String,
    /// The task's address with the network's prefix length.
    pub addr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub internal: bool,
}

/// One step of building a task's namespace. Steps that name `netns` run
/// inside it; the others in the node's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskStep {
    /// Make the namespace (bound at the path the shell chose).
    CreateNetns,
    /// `lo` up, inside the namespace.
    LoopbackUp,
    AddVeth {
        host: String,
        peer: String,
        mtu: u32,
    },
    SetMaster {
        link: String,
        bridge: String,
    },
    SetUp {
        link: String,
    },
    /// Move the task end into the namespace.
    MoveToNetns {
        link: String,
    },
    /// Inside: rename the task end to `eth<index>`, set its MAC and address, bring it up.
    ConfigureInside {
        from: String,
        name: String,
        mac: [u8; 6],
        addr: Ipv4Net,
    },
    /// Inside: the default route.
    DefaultRoute {
        gateway: Ipv4Addr,
    },
}

/// Why a task's namespace cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskPlanError {
    #[error("a task may attach to at most {TASK_NETWORKS_MAX} networks, this one names {0}")]
    TooManyNetworks(usize),
    #[error("the task's address {addr} is not in the network's subnet (gateway {gateway})")]
    AddressOutsideSubnet { addr: Ipv4Net, gateway: Ipv4Addr },
}

/// The steps that build task `task_id`'s namespace with one interface per
/// attachment, in order (`eth0` is the first). The default route goes
/// through the first attachment that is not `--internal`; a task only on
/// internal networks has none (no way out).
pub fn task_steps(task_id: &str, attachments: &[TaskAttachment]) -> Result<Vec<TaskStep>, TaskPlanError> {
    if attachments.len() > TASK_NETWORKS_MAX {
        return Err(TaskPlanError::TooManyNetworks(attachments.len()));
    }
    let mut out = vec![TaskStep::CreateNetns, TaskStep::LoopbackUp];
    for (i, a) in attachments.iter().enumerate() {
        if !a.addr.contains(a.gateway) {
            return Err(TaskPlanError::AddressOutsideSubnet { addr: a.addr, gateway: a.gateway });
        }
        let (host, peer) = (veth_name(task_id, i), veth_peer_name(task_id, i));
        out.push(TaskStep::AddVeth { host: host.clone(), peer: peer.clone(), mtu: a.mtu });
        out.push(TaskStep::SetMaster { link: host.clone(), bridge: attachment_bridge(&a.network_id) });
        out.push(TaskStep::SetUp { link: host });
        out.push(TaskStep::MoveToNetns { link: peer.clone() });
        out.push(TaskStep::ConfigureInside { from: peer, name: format!("eth{i}"), mac: mac_of(a.addr.addr), addr: a.addr });
    }
    if let Some(a) = attachments.iter().find(|a| !a.internal) {
        out.push(TaskStep::DefaultRoute { gateway: a.gateway });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(id: &str, vni: u32, third: u8, remote: &[(&str, &str)]) -> NetView {
        NetView {
            id: id.into(),
            vni,
            subnet: Ipv4Net::parse(&format!("10.0.{third}.0/24")).unwrap(),
            gateway: Ipv4Addr::new(10, 0, third, 1),
            node_addr: Ipv4Addr::new(10, 0, third, 2),
            mtu: 1450,
            internal: false,
            remote: remote.iter().map(|(a, b)| (ip(a), ip(b))).collect(),
            vxlan_local: None,
            vips: vec![ip(&format!("10.0.{third}.3"))],
        }
    }

    fn view(networks: Vec<NetView>) -> NodeView {
        NodeView { underlay: ip("192.168.1.10"), vxlan_port: VXLAN_PORT_DEFAULT, networks, bridge: None }
    }

    /// What the kernel holds after `actions` ran on `have` (a model of the
    /// kernel, enough to check that `diff` converges).
    fn apply(have: &Observed, actions: &[NetAction]) -> Observed {
        let mut o = have.clone();
        let link = |o: &mut Observed, name: &str| -> usize { o.links.iter().position(|l| l.name == name).expect("link exists") };
        for a in actions {
            match a {
                NetAction::DelLink { name } => {
                    o.links.retain(|l| &l.name != name);
                    o.addrs.remove(name);
                    o.fdb.remove(name);
                    o.neigh.remove(name);
                    for l in &mut o.links {
                        if l.master.as_deref() == Some(name) {
                            l.master = None;
                        }
                    }
                }
                NetAction::AddBridge { name, mtu, .. } => {
                    assert!(!o.links.iter().any(|l| &l.name == name), "{name} added twice");
                    o.links.push(ObservedLink { name: name.clone(), kind: LinkKind::Bridge, master: None, up: false, mtu: *mtu });
                }
                NetAction::AddVxlan { name, vni, local, port, mtu } => {
                    assert!(!o.links.iter().any(|l| &l.name == name), "{name} added twice");
                    let kind = LinkKind::Vxlan { vni: *vni, local: *local, port: *port };
                    o.links.push(ObservedLink { name: name.clone(), kind, master: None, up: false, mtu: *mtu });
                }
                NetAction::SetMaster { link: l, bridge } => {
                    let i = link(&mut o, l);
                    o.links[i].master = Some(bridge.clone());
                }
                NetAction::SetMtu { link: l, mtu } => {
                    let i = link(&mut o, l);
                    o.links[i].mtu = *mtu;
                }
                NetAction::SetUp { link: l } => {
                    let i = link(&mut o, l);
                    o.links[i].up = true;
                }
                NetAction::AddAddr { link: l, addr } => {
                    assert!(o.addrs.entry(l.clone()).or_default().insert(*addr), "{addr} added twice");
                }
                NetAction::DelAddr { link: l, addr } => {
                    assert!(o.addrs.entry(l.clone()).or_default().remove(addr));
                }
                NetAction::ReplaceFdb { vxlan, mac, dst } => {
                    o.fdb.entry(vxlan.clone()).or_default().insert((*mac, *dst));
                }
                NetAction::DelFdb { vxlan, mac, dst } => {
                    assert!(o.fdb.entry(vxlan.clone()).or_default().remove(&(*mac, *dst)));
                }
                NetAction::ReplaceNeigh { vxlan, ip, mac } => {
                    o.neigh.entry(vxlan.clone()).or_default().insert((*ip, *mac));
                }
                NetAction::DelNeigh { vxlan, ip, mac } => {
                    assert!(o.neigh.entry(vxlan.clone()).or_default().remove(&(*ip, *mac)));
                }
            }
        }
        o
    }

    #[test]
    fn names_fit_the_kernel_and_are_recognised() {
        let id = "8zrtz8wqyypkfyiwgb3f4x8jk";
        for n in [bridge_name(id), vxlan_name(id), veth_name(id, 9), veth_peer_name(id, 9)] {
            assert!(n.len() <= IFNAME_BYTES_MAX, "{n}");
        }
        assert_eq!(bridge_name(id), "sb-8zrtz8wqyypk");
        assert!(is_ours(&bridge_name(id)) && is_ours(&vxlan_name(id)));
        assert!(!is_ours("eth0") && !is_ours("docker0") && !is_ours("shbr1234"));
        // Hostile characters never reach a device name.
        assert_eq!(bridge_name("../x y"), "sb-xy");
    }

    #[test]
    fn a_fresh_node_gets_bridge_vxlan_addresses_and_entries() {
        let want = view(vec![net("netaaaaaaaaaaaa", 4097, 1, &[("10.0.1.7", "192.168.1.11")])]);
        let acts = diff(&want, &Observed::default());
        let (br, vx) = (bridge_name("netaaaaaaaaaaaa"), vxlan_name("netaaaaaaaaaaaa"));
        assert_eq!(acts[0], NetAction::AddBridge { name: br.clone(), mtu: 1450, mac: [2, 0x42, 10, 0, 1, 2] });
        // This node's own address first (the source the kernel picks), then the shared gateway.
        let own = acts.iter().position(|a| a == &NetAction::AddAddr { link: br.clone(), addr: Ipv4Net::parse("10.0.1.2/24").unwrap() });
        let gw = acts.iter().position(|a| a == &NetAction::AddAddr { link: br.clone(), addr: Ipv4Net::parse("10.0.1.1/24").unwrap() });
        assert!(own.unwrap() < gw.unwrap());
        assert!(acts.contains(&NetAction::AddVxlan { name: vx.clone(), vni: 4097, local: ip("192.168.1.10"), port: 4789, mtu: 1450 }));
        assert!(acts.contains(&NetAction::ReplaceFdb { vxlan: vx.clone(), mac: mac_of(ip("10.0.1.7")), dst: ip("192.168.1.11") }));
        assert!(acts.contains(&NetAction::ReplaceNeigh { vxlan: vx.clone(), ip: ip("10.0.1.7"), mac: mac_of(ip("10.0.1.7")) }));
        // The VXLAN device joins its bridge before it comes up.
        let master = acts.iter().position(|a| matches!(a, NetAction::SetMaster { .. })).unwrap();
        let up = acts.iter().position(|a| matches!(a, NetAction::SetUp { link } if link == &vx)).unwrap();
        assert!(master < up);
        // Applied, nothing is left to do: adoption after a restart changes nothing.
        let after = apply(&Observed::default(), &acts);
        assert_eq!(diff(&want, &after), vec![]);
    }

    #[test]
    fn stale_entries_and_networks_go_and_foreign_devices_stay() {
        let a = net("netaaaaaaaaaaaa", 4097, 1, &[("10.0.1.7", "192.168.1.11"), ("10.0.1.8", "192.168.1.12")]);
        let b = net("netbbbbbbbbbbbb", 4098, 2, &[]);
        let mut have = apply(&Observed::default(), &diff(&view(vec![a.clone(), b]), &Observed::default()));
        have.links.push(ObservedLink { name: "eth0".into(), kind: LinkKind::Other, master: None, up: true, mtu: 1500 });
        // The task at .8 stopped, one at .9 started elsewhere; network b is gone from this node.
        let a2 = net("netaaaaaaaaaaaa", 4097, 1, &[("10.0.1.7", "192.168.1.11"), ("10.0.1.9", "192.168.1.13")]);
        let want = view(vec![a2]);
        let acts = diff(&want, &have);
        let vx = vxlan_name("netaaaaaaaaaaaa");
        assert!(acts.contains(&NetAction::DelFdb { vxlan: vx.clone(), mac: mac_of(ip("10.0.1.8")), dst: ip("192.168.1.12") }));
        assert!(acts.contains(&NetAction::DelNeigh { vxlan: vx.clone(), ip: ip("10.0.1.8"), mac: mac_of(ip("10.0.1.8")) }));
        assert!(acts.contains(&NetAction::ReplaceFdb { vxlan: vx, mac: mac_of(ip("10.0.1.9")), dst: ip("192.168.1.13") }));
        assert!(acts.contains(&NetAction::DelLink { name: bridge_name("netbbbbbbbbbbbb") }));
        assert!(acts.contains(&NetAction::DelLink { name: vxlan_name("netbbbbbbbbbbbb") }));
        assert!(!acts.iter().any(|a| matches!(a, NetAction::DelLink { name } if name == "eth0")));
        let after = apply(&have, &acts);
        assert_eq!(diff(&want, &after), vec![]);
        assert!(after.links.iter().any(|l| l.name == "eth0"));
    }

    #[test]
    fn the_node_bridge_is_made_kept_and_removed() {
        let b = Bridge::new(Ipv4Net::parse("172.18.0.0/16").unwrap()).unwrap();
        let want = NodeView { bridge: Some(b), ..view(vec![]) };
        let acts = diff(&want, &Observed::default());
        assert_eq!(
            acts,
            vec![
                NetAction::AddBridge { name: "shoal0".into(), mtu: 1500, mac: mac_of(ip("172.18.0.1")) },
                NetAction::AddAddr { link: "shoal0".into(), addr: Ipv4Net::parse("172.18.0.1/16").unwrap() },
                NetAction::SetUp { link: "shoal0".into() },
            ]
        );
        assert!(is_ours("shoal0") && !is_ours("shoal1"));
        assert_eq!(attachment_bridge(bridge::NETWORK_ID), "shoal0");
        let have = apply(&Observed::default(), &acts);
        assert_eq!(diff(&want, &have), vec![], "adopted as it is");
        // Another subnet: the address moves, the device stays.
        let moved = NodeView { bridge: Some(Bridge::new(Ipv4Net::parse("10.200.0.0/24").unwrap()).unwrap()), ..view(vec![]) };
        let acts = diff(&moved, &have);
        assert!(acts.contains(&NetAction::DelAddr { link: "shoal0".into(), addr: Ipv4Net::parse("172.18.0.1/16").unwrap() }));
        assert!(!acts.iter().any(|a| matches!(a, NetAction::AddBridge { .. } | NetAction::DelLink { .. })));
        // Out of the swarm: it goes.
        assert_eq!(diff(&view(vec![]), &have), vec![NetAction::DelLink { name: "shoal0".into() }]);
    }

    #[test]
    fn a_vxlan_device_with_another_identity_is_made_again() {
        let want = view(vec![net("netaaaaaaaaaaaa", 4097, 1, &[("10.0.1.7", "192.168.1.11")])]);
        let mut have = apply(&Observed::default(), &diff(&want, &Observed::default()));
        // The node's underlay address changed (another advertise address).
        let moved = NodeView { underlay: ip("192.168.1.99"), ..want.clone() };
        let acts = diff(&moved, &have);
        let vx = vxlan_name("netaaaaaaaaaaaa");
        assert_eq!(acts[0], NetAction::DelLink { name: vx.clone() });
        assert!(acts.contains(&NetAction::AddVxlan { name: vx.clone(), vni: 4097, local: ip("192.168.1.99"), port: 4789, mtu: 1450 }));
        // Entries are written again on the new device.
        assert!(acts.iter().any(|a| matches!(a, NetAction::ReplaceFdb { .. })));
        have = apply(&have, &acts);
        assert_eq!(diff(&moved, &have), vec![]);
    }

    /// Random views and random kernel states: `diff` always converges in
    /// one application and never touches a foreign device.
    #[test]
    fn diff_converges_from_any_state() {
        let mut rng = shoal_shared::rng::Rng::from_seed(12);
        let ids = ["netaaaaaaaaaaaa", "netbbbbbbbbbbbb", "netcccccccccccc"];
        for _ in 0..500 {
            let make = |rng: &mut shoal_shared::rng::Rng| {
                let mut nets = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    if rng.range(0, 2) == 0 {
                        continue;
                    }
                    let third = i as u8 + 1;
                    let remote: Vec<(Ipv4Addr, Ipv4Addr)> = (0..rng.range(0, 5))
                        .map(|_| (Ipv4Addr::new(10, 0, third, rng.range(3, 12) as u8), Ipv4Addr::new(192, 168, 1, rng.range(11, 14) as u8)))
                        .collect();
                    let mut n = net(id, 4097 + rng.range(0, 2) as u32, third, &[]);
                    n.remote = remote;
                    n.mtu = if rng.range(0, 2) == 0 { 1450 } else { 1400 };
                    // Encrypted: the VXLAN device sends from the node's tunnel address.
                    n.vxlan_local = (rng.range(0, 3) == 0).then(|| Ipv4Addr::new(198, 18, 0, rng.range(1, 3) as u8));
                    nets.push(n);
                }
                let bridge = (rng.range(0, 2) == 0).then(|| Bridge::new(Ipv4Net::parse("172.18.0.0/16").unwrap()).unwrap());
                NodeView { bridge, ..view(nets) }
            };
            let before = make(&mut rng);
            let mut have = apply(&Observed::default(), &diff(&before, &Observed::default()));
            have.links.push(ObservedLink { name: "eth0".into(), kind: LinkKind::Other, master: None, up: true, mtu: 1500 });
            if rng.range(0, 3) == 0 {
                // Something took a device down behind our back.
                for l in have.links.iter_mut().filter(|l| is_ours(&l.name)) {
                    l.up = false;
                }
            }
            let want = make(&mut rng);
            let acts = diff(&want, &have);
            assert!(!acts.iter().any(|a| matches!(a, NetAction::DelLink { name } if !is_ours(name))));
            let after = apply(&have, &acts);
            assert_eq!(diff(&want, &after), vec![], "not converged: {want:?}");
        }
    }

    #[test]
    fn task_namespaces_get_one_interface_per_network_and_a_way_out() {
        let att = |id: &str, a: &str, gateway: &str, internal: bool| TaskAttachment {
            network_id: id.into(),
            addr: Ipv4Net::parse(a).unwrap(),
            gateway: ip(gateway),
            mtu: 1450,
            internal,
        };
        let internal = att("netaaaaaaaaaaaa", "10.0.1.5/24", "10.0.1.1", true);
        let open = att("netbbbbbbbbbbbb", "10.0.2.5/24", "10.0.2.1", false);
        let steps = task_steps("taskidtaskidtaskid", &[internal.clone(), open.clone()]).unwrap();
        assert_eq!(steps[0], TaskStep::CreateNetns);
        assert!(steps.contains(&TaskStep::ConfigureInside {
            from: veth_peer_name("taskidtaskidtaskid", 0),
            name: "eth0".into(),
            mac: mac_of(ip("10.0.1.5")),
            addr: Ipv4Net::parse("10.0.1.5/24").unwrap()
        }));
        assert!(steps.contains(&TaskStep::SetMaster { link: veth_name("taskidtaskidtaskid", 1), bridge: bridge_name("netbbbbbbbbbbbb") }));
        // The way out is through the first network that is not internal.
        assert_eq!(steps.last(), Some(&TaskStep::DefaultRoute { gateway: ip("10.0.2.1") }));
        // Internal only: no default route at all.
        let steps = task_steps("t", std::slice::from_ref(&internal)).unwrap();
        assert!(!steps.iter().any(|s| matches!(s, TaskStep::DefaultRoute { .. })));
        // Every veth is moved before it is configured inside.
        let moved = steps.iter().position(|s| matches!(s, TaskStep::MoveToNetns { .. })).unwrap();
        let inside = steps.iter().position(|s| matches!(s, TaskStep::ConfigureInside { .. })).unwrap();
        assert!(moved < inside);
        let mut bad = open.clone();
        bad.gateway = ip("10.9.9.1");
        assert!(matches!(task_steps("t", &[bad]), Err(TaskPlanError::AddressOutsideSubnet { .. })));
        assert_eq!(task_steps("t", &vec![open; 11]), Err(TaskPlanError::TooManyNetworks(11)));
    }
}
