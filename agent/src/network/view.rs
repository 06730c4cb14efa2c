//! From this node's assignments to its data path's inputs: the plan of its
//! bridges and VXLAN devices ([`plan::NodeView`]), its nftables rules
//! ([`nft::Rules`]) and each task's interfaces ([`plan::TaskAttachment`]).
//! Pure.

use super::bridge::{self, Bridge, Leases};
use super::nft::{self, NetRules, Proto, Published, Vip};
use super::plan::{self, NetView, NodeView, TaskAttachment};
use super::Ipv4Net;
use shoal_shared::assignments::{Assignments, NetworkView};
use shoal_shared::types::{EndpointMode, NetworkMode, Task, PUBLISH_MODE_HOST};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// MTU of overlay networks that name none: Ethernet's 1500 minus VXLAN's overhead.
pub const MTU_DEFAULT: u32 = 1500 - plan::VXLAN_OVERHEAD_BYTES;
/// What the tunnel adds around a VXLAN packet of an encrypted network on
/// the underlay: outer IPv4 and UDP headers and the sealed frame's header
/// and tag ([`shoal_shared::tunnel::FRAME_OVERHEAD`]).
pub const TUNNEL_OVERHEAD_BYTES: u32 = 20 + 8 + shoal_shared::tunnel::FRAME_OVERHEAD as u32;
/// MTU of encrypted networks that name none: nothing is fragmented on a
/// 1500-byte underlay (1,393 bytes).
pub const MTU_ENCRYPTED_DEFAULT: u32 = MTU_DEFAULT - TUNNEL_OVERHEAD_BYTES;
/// MTU of the relay's TUN device: an encrypted network's largest VXLAN
/// packet at the default MTU.
pub const TUN_MTU: u32 = 1500 - TUNNEL_OVERHEAD_BYTES;

/// The MTU a network's bridge, VXLAN device and tasks use.
pub fn mtu(n: &NetworkView) -> u32 {
    effective_mtu(n.mtu, n.encrypted)
}

/// The MTU of a network whose spec says `mtu` (0: none given).
pub fn effective_mtu(mtu: u32, encrypted: bool) -> u32 {
    match (mtu, encrypted) {
        (0, false) => MTU_DEFAULT,
        (0, true) => MTU_ENCRYPTED_DEFAULT,
        (m, _) => m,
    }
}

/// The networks this node programs: those whose own address the leader
/// has allocated (until then the network waits), and for encrypted ones
/// this node's tunnel address too.
fn programmed(a: &Assignments) -> impl Iterator<Item = (&NetworkView, Ipv4Net)> {
    a.network.overlays().filter(|n| a.network.ready(&n.id)).filter_map(|n| n.local.map(|l| (n, l)))
}

/// The tunnel network's peers (for the relay): every other node with a
/// tunnel address, by its tunnel address and underlay address.
pub fn tunnel_peers(a: &Assignments) -> Vec<shoal_shared::tunnel::relay::TunnelPeer> {
    let Some(t) = a.network.tunnel() else { return Vec::new() };
    t.peers
        .iter()
        .map(|p| shoal_shared::tunnel::relay::TunnelPeer { node_id: p.node_id.clone(), tunnel: p.addr.addr, underlay: p.underlay })
        .collect()
}

/// The node's plan and rules from its assignments. `underlay`: this node's
/// address on the swarm's network (its advertise IP); `local`: the node's
/// bridge network and its tasks' addresses on it (none where this node
/// cannot give tasks namespaces).
pub fn node_plan(a: &Assignments, underlay: Ipv4Addr, local: Option<(&Bridge, &Leases)>) -> (NodeView, nft::Rules) {
    let port = if a.network.data_path_port == 0 { plan::VXLAN_PORT_DEFAULT } else { a.network.data_path_port };
    let mut view = NodeView { underlay, vxlan_port: port, networks: Vec::new(), bridge: local.map(|(b, _)| *b) };
    let mut rules = nft::Rules { vxlan_port: port, ..nft::Rules::default() };
    rules.bridge =
        local.map(|(b, _)| NetRules { bridge: bridge::DEVICE.to_string(), subnet: b.subnet, node_addr: b.gateway, internal: false });
    let mut vxlan_peers = BTreeSet::new();
    for (n, local) in programmed(a) {
        let bridge = plan::bridge_name(&n.id);
        // Where each peer's VXLAN device receives: its underlay address, or on an encrypted
        // network its tunnel address (routed into the relay); a peer without one yet waits.
        let underlay_of: BTreeMap<&str, Ipv4Addr> = if n.encrypted {
            let tunnel = a.network.tunnel().map(|t| t.peers.as_slice()).unwrap_or_default();
            tunnel.iter().map(|p| (p.node_id.as_str(), p.addr.addr)).collect()
        } else {
            n.peers.iter().map(|p| (p.node_id.as_str(), p.underlay)).collect()
        };
        // Every endpoint on another node: the nodes' own addresses and their tasks'.
        let mut remote: BTreeSet<(Ipv4Addr, Ipv4Addr)> =
            n.peers.iter().filter_map(|p| underlay_of.get(p.node_id.as_str()).map(|u| (p.addr.addr, *u))).collect();
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
            vxlan_local: if n.encrypted { a.network.tunnel_addr() } else { None },
            vips: n.services.iter().filter(|s| s.endpoint_mode == EndpointMode::Vip).filter_map(|s| s.vip).collect(),
        });
        rules.networks.push(NetRules { bridge: bridge.clone(), subnet: n.subnet.trunc(), node_addr: local.addr, internal: n.internal });
        if n.encrypted {
            rules.encrypted_vnis.push(n.vni);
        }
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
    // Host-mode ports: this node's own running tasks, on their first network's address (or their bridge's).
    for t in a.tasks.values().filter(|t| t.desired_state == shoal_shared::task::TaskState::Running) {
        let Some(s) = a.services.get(&t.service_id) else { continue };
        let on_bridge = || local.filter(|_| uses_bridge(t)).and_then(|(_, l)| l.get(&t.id));
        let Some(addr) = t.networks.first().map(|n| n.addr.addr).or_else(on_bridge) else { continue };
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
    for n in a.network.overlays() {
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

/// Whether task `t` goes on the node's bridge network: it names no network
/// (not `host`, not `none`) and has no overlay attachment (no ingress port).
pub fn uses_bridge(t: &Task) -> bool {
    t.spec.network_mode() == NetworkMode::Overlay && t.networks.is_empty()
}

/// A task's interfaces, in its spec's order: `None` for a task that shares
/// the host's namespace (`--network host`, and a task on no network where
/// `bridge` is `None`: this node has no bridge network), an empty list for
/// `--network none` (loopback only), `eth0` on the node's bridge at the
/// address `bridge` gives for a task on no network, an error while one of
/// its networks is not programmed on this node (the worker does not start
/// such a task, see `worker::networks_ready`).
pub fn task_attachments(a: &Assignments, t: &Task, bridge: Option<(&Bridge, Ipv4Addr)>) -> Result<Option<Vec<TaskAttachment>>, String> {
    match t.spec.network_mode() {
        NetworkMode::Host => return Ok(None),
        NetworkMode::None => return Ok(Some(Vec::new())),
        NetworkMode::Overlay if t.networks.is_empty() => {
            return Ok(bridge.map(|(b, ip)| {
                let addr = b.subnet.with_addr(ip);
                vec![TaskAttachment { network_id: bridge::NETWORK_ID.into(), addr, gateway: b.gateway, mtu: bridge::MTU, internal: false }]
            }))
        }
        NetworkMode::Overlay => {}
    }
    t.networks
        .iter()
        .map(|att| {
            let n = a
                .network
                .networks
                .get(&att.network_id)
                .filter(|n| a.network.ready(&n.id))
                .ok_or_else(|| format!("network {} is not set up on this node yet", att.network_id))?;
            Ok(TaskAttachment { network_id: n.id.clone(), addr: att.addr, gateway: n.gateway, mtu: mtu(n), internal: n.internal })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::task::TaskState;
    use shoal_shared::types::{NetworkAttachmentConfig, PortConfig, Service, ServiceSpec, TaskStatus, HOST_NETWORK_ID, NONE_NETWORK_ID};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// One service `s` with one running task `t1` on this node, on `network` (none: no network).
    fn assigned(network: Option<&str>, ports: Vec<PortConfig>) -> (Assignments, Task) {
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.task.networks = network.map(|n| NetworkAttachmentConfig { target: n.into(), aliases: vec![] }).into_iter().collect();
        spec.ports = ports;
        let svc = Service {
            id: "s".into(),
            meta: Default::default(),
            spec: spec.clone(),
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        };
        let t = Task {
            id: "t1".into(),
            meta: Default::default(),
            service_id: "s".into(),
            slot: 1,
            node_id: "me".into(),
            spec: spec.task,
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Running, 1, "x"),
            not_before: 0,
            attempt: 0,
            networks: Vec::new(),
        };
        (Assignments::new("me", [t.clone()], [svc]), t)
    }

    fn host_port(published: u32, target: u32) -> PortConfig {
        PortConfig { protocol: "tcp".into(), target_port: target, published_port: published, publish_mode: PUBLISH_MODE_HOST.into() }
    }

    #[test]
    fn a_task_on_no_network_goes_on_the_node_bridge() {
        let b = Bridge::default_subnet();
        let (a, t) = assigned(None, vec![]);
        assert!(uses_bridge(&t));
        let atts = task_attachments(&a, &t, Some((&b, ip("172.18.0.7")))).unwrap().unwrap();
        assert_eq!(
            atts,
            vec![TaskAttachment {
                network_id: bridge::NETWORK_ID.into(),
                addr: Ipv4Net::parse("172.18.0.7/16").unwrap(),
                gateway: ip("172.18.0.1"),
                mtu: 1500,
                internal: false
            }]
        );
        let steps = plan::task_steps(&t.id, &atts).unwrap();
        assert!(steps.contains(&plan::TaskStep::SetMaster { link: plan::veth_name("t1", 0), bridge: bridge::DEVICE.into() }));
        assert_eq!(steps.last(), Some(&plan::TaskStep::DefaultRoute { gateway: ip("172.18.0.1") }));
        // A node without a bridge network: the host's namespace, as before.
        assert_eq!(task_attachments(&a, &t, None), Ok(None));
        // `--network host` shares the host's; `none` gets a namespace with only lo.
        let (a, t) = assigned(Some(HOST_NETWORK_ID), vec![]);
        assert!(!uses_bridge(&t));
        assert_eq!(task_attachments(&a, &t, Some((&b, ip("172.18.0.7")))), Ok(None));
        let (a, t) = assigned(Some(NONE_NETWORK_ID), vec![]);
        assert!(!uses_bridge(&t));
        let none = task_attachments(&a, &t, None).unwrap().unwrap();
        assert_eq!(none, vec![]);
        assert_eq!(plan::task_steps(&t.id, &none).unwrap(), vec![plan::TaskStep::CreateNetns, plan::TaskStep::LoopbackUp]);
    }

    #[test]
    fn host_mode_ports_of_bridge_tasks_are_translated_to_their_address() {
        let b = Bridge::default_subnet();
        let (a, t) = assigned(None, vec![host_port(8080, 80)]);
        let mut leases = Leases::default();
        let addr = leases.lease(&b, &t.id).unwrap();
        let (view, rules) = node_plan(&a, ip("192.0.2.2"), Some((&b, &leases)));
        assert_eq!(view.bridge, Some(b));
        assert_eq!(rules.published, vec![Published { proto: Proto::Tcp, port: 8080, backends: vec![(addr, 80)] }]);
        assert_eq!(rules.bridge.as_ref().map(|r| (r.bridge.as_str(), r.node_addr)), Some((bridge::DEVICE, b.gateway)));
        // Not yet leased (not started here): nothing to translate to.
        let (_, rules) = node_plan(&a, ip("192.0.2.2"), Some((&b, &Leases::default())));
        assert!(rules.published.is_empty());
        // No bridge network on this node: neither the device nor its rules.
        let (view, rules) = node_plan(&a, ip("192.0.2.2"), None);
        assert_eq!((view.bridge, rules.bridge, rules.published.len()), (None, None, 0));
    }
}
