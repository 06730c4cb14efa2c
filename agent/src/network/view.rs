//! From this node's assignments to its data path's inputs: the plan of its
//! bridges and VXLAN devices ([`plan::NodeView`]), its nftables rules
//! ([`nft::Rules`]) and each task's interfaces ([`plan::TaskAttachment`]).
//! Pure.

use super::nft::{self, NetRules, Proto, Published, Vip};
use super::plan::{self, NetView, NodeView, TaskAttachment};
use super::Ipv4Net;
use shoal_shared::assignments::{Assignments, NetworkView};
use shoal_shared::types::{EndpointMode, NetworkMode, Task, PUBLISH_MODE_HOST};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// MTU of overlay networks that name none: Ethernet's 1500 minus VXLAN's overhead.
pub const MTU_DEFAULT: u32 = 1500 - plan::VXLAN_OVERHEAD_BYTES;

fn mtu(n: &NetworkView) -> u32 {
    if n.mtu == 0 {
        MTU_DEFAULT
    } else {
        n.mtu
    }
}

/// The networks this node programs: those whose own address the leader
/// has allocated (until then the network waits).
fn programmed(a: &Assignments) -> impl Iterator<Item = (&NetworkView, Ipv4Net)> {
    a.network.networks.values().filter_map(|n| n.local.map(|l| (n, l)))
}

/// The node's plan and rules from its assignments. `underlay`: this node's
/// address on the swarm's network (its advertise IP).
pub fn node_plan(a: &Assignments, underlay: Ipv4Addr) -> (NodeView, nft::Rules) {
    let port = if a.network.data_path_port == 0 { plan::VXLAN_PORT_DEFAULT } else { a.network.data_path_port };
    let mut view = NodeView { underlay, vxlan_port: port, networks: Vec::new() };
    let mut rules = nft::Rules { vxlan_port: port, ..nft::Rules::default() };
    let mut vxlan_peers = BTreeSet::new();
    for (n, local) in programmed(a) {
        let bridge = plan::bridge_name(&n.id);
        let underlay_of: BTreeMap<&str, Ipv4Addr> = n.peers.iter().map(|p| (p.node_id.as_str(), p.underlay)).collect();
        // Every endpoint on another node: the nodes' own addresses and their tasks'.
        let mut remote: BTreeSet<(Ipv4Addr, Ipv4Addr)> = n.peers.iter().map(|p| (p.addr.addr, p.underlay)).collect();
        for s in &n.services {
            for t in &s.tasks {
                if let Some(u) = underlay_of.get(t.node_id.as_str()) {
                    remote.insert((t.addr, *u));
                }
            }
        }
        vxlan_peers.extend(underlay_of.values().copied());
        view.networks.push(NetView {
            id: n.id.clone(),
            vni: n.vni,
            subnet: n.subnet.trunc(),
            gateway: n.gateway,
            node_addr: local.addr,
            mtu: mtu(n),
            internal: n.internal,
            remote: remote.into_iter().collect(),
            vips: n.services.iter().filter(|s| s.endpoint_mode == EndpointMode::Vip).filter_map(|s| s.vip).collect(),
        });
        rules.networks.push(NetRules { bridge: bridge.clone(), subnet: n.subnet.trunc(), node_addr: local.addr, internal: n.internal });
        for s in n.services.iter().filter(|s| s.endpoint_mode == EndpointMode::Vip) {
            if let Some(vip) = s.vip {
                let backends = s.tasks.iter().filter(|t| t.running).map(|t| t.addr).collect();
                rules.vips.push(Vip { bridge: bridge.clone(), vip, backends });
            }
        }
    }
    for p in &a.network.ingress_ports {
        let (Some(proto), Ok(port), Ok(target)) =
            (Proto::parse(&p.protocol), u16::try_from(p.published_port), u16::try_from(p.target_port))
        else {
            continue;
        };
        rules.published.push(Published { proto, port, backends: p.backends.iter().map(|b| (*b, target)).collect() });
    }
    // Host-mode ports: this node's own running tasks, on their first network's address.
    for t in a.tasks.values().filter(|t| t.desired_state == shoal_shared::task::TaskState::Running) {
        let Some(s) = a.services.get(&t.service_id) else { continue };
        let Some(addr) = t.networks.first().map(|n| n.addr.addr) else { continue };
        for p in s.spec.ports.iter().filter(|p| p.publish_mode == PUBLISH_MODE_HOST) {
            let (Some(proto), Ok(port), Ok(target)) =
                (Proto::parse(&p.protocol), u16::try_from(p.published_port), u16::try_from(p.target_port))
            else {
                continue;
            };
            rules.published.push(Published { proto, port, backends: vec![(addr, target)] });
        }
    }
    rules.vxlan_peers = vxlan_peers.into_iter().collect();
    (view, rules)
}

/// The names this node's embedded resolver answers, per network: each
/// service and its aliases (its VIP, or with dnsrr its running tasks),
/// `tasks.NAME` (the running tasks), and each running task's name.
pub fn dns_view(a: &Assignments) -> shoal_dns::view::View {
    use shoal_dns::view::{EndpointMode as Mode, ServiceEntry, TaskEntry, View};
    use std::net::IpAddr;
    let mut v = View::new();
    for n in a.network.networks.values() {
        v.add_network(&n.id, &n.name);
        for s in &n.services {
            let tasks: Vec<TaskEntry> =
                s.tasks.iter().filter(|t| t.running).map(|t| TaskEntry { names: vec![t.name.clone()], ip: IpAddr::V4(t.addr) }).collect();
            let endpoint = match (s.endpoint_mode, s.vip) {
                (EndpointMode::Vip, Some(vip)) => Mode::Vip(vec![IpAddr::V4(vip)]),
                _ => Mode::Dnsrr,
            };
            v.add_service(&n.id, &ServiceEntry { name: s.name.clone(), aliases: s.aliases.clone(), endpoint, tasks });
        }
    }
    v
}

/// A task's interfaces, in its spec's order: `None` for a task that shares
/// the host's namespace (`--network host`, and for now a task with no
/// network at all), an empty list for `--network none` (loopback only), an
/// error while one of its networks is not programmed on this node (the
/// worker does not start such a task, see `worker::networks_ready`).
pub fn task_attachments(a: &Assignments, t: &Task) -> Result<Option<Vec<TaskAttachment>>, String> {
    match t.spec.network_mode() {
        NetworkMode::Host => return Ok(None),
        NetworkMode::None => return Ok(Some(Vec::new())),
        NetworkMode::Overlay if t.networks.is_empty() => return Ok(None),
        NetworkMode::Overlay => {}
    }
    t.networks
        .iter()
        .map(|att| {
            let n = a
                .network
                .networks
                .get(&att.network_id)
                .filter(|n| n.local.is_some())
                .ok_or_else(|| format!("network {} is not set up on this node yet", att.network_id))?;
            Ok(TaskAttachment { network_id: n.id.clone(), addr: att.addr, gateway: n.gateway, mtu: mtu(n), internal: n.internal })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}
