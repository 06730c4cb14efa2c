//! Networks in the replicated state: the leader's allocation pass and each
//! node's view of its networks.
//!
//! [`allocate`] is pure (the [`crate::ipam`] core over the state) and runs at
//! the end of every orchestrator pass, on the leader only, on a state that
//! holds its earlier proposals. It writes every allocation as an op:
//! - services: a VIP per attached overlay network in mode `vip` (ingress
//!   included when the service publishes ingress ports) and the ingress
//!   ports' published ports (auto-assigned from 30000-32767, next-fit),
//!   through `SetServiceEndpoint`;
//! - tasks: an address per attached network, carried by the orchestrator's
//!   `CreateTask` itself (the same entry), or for a task still waiting to
//!   be placed through `SetTaskNetworks`. A task that cannot get an address
//!   (pool exhausted) is created, or set, `Pending` with
//!   `no IP address left on network NAME`, and the scheduler does not place
//!   a task until its addresses are all there ([`attached`]);
//! - nodes: an address per network that has live tasks on the node, and on
//!   `ingress` for every node while any service publishes ingress ports,
//!   through `SetNodeAttachments` (the node's bridge address for the data
//!   path; it follows the task's placement by one pass).
//!
//! Freeing: a task holds its addresses until it is terminal (observed
//! Complete, Failed, Shutdown, Rejected, Orphaned...: its container has
//! stopped and its namespace can go), not merely until desired down, so the
//! data path keeps a stable address while the container lives; the record
//! keeps them for `service ps`/inspect. A service's VIPs and ports go with
//! the service (or when the spec no longer asks for them), a node's
//! attachment when it has no live task left on that network (or the node
//! leaves). Addresses freed during a pass are not reused in the same pass,
//! so no op of the pass can meet a holder that a later op of it removes;
//! `State::apply` checks every allocation against the holders again and
//! skips one that collides (two writers racing), never applying a duplicate.
//!
//! [`node_view`] is the one builder of a node's [`NodeNetworkView`] (see
//! `shoal_shared::assignments`), called by the dispatcher's `assignments`.

use crate::ipam::{Pool, PortSpace};
use crate::state::{vips, State};
use shoal_shared::assignments::{
    mac_of, IngressPort, NetworkView, NodeNetworkView, Peer, ServiceRecord, TaskRecord, TUNNEL_NETWORK_ID, TUNNEL_SUBNET,
};
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::Op;
use shoal_shared::task::TaskState;
use shoal_shared::types::{Endpoint, EndpointMode, NetworkAttachment, NetworkMode, PortConfig, Service, Task, TaskStatus, VirtualIp};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

/// The pending reason of a task whose network has no address left.
pub fn no_address_left(network: &str) -> String {
    format!("no IP address left on network {network}")
}

/// The networks (ids) a task of `service` with `spec`'s networks attaches
/// to: its overlay networks that exist, plus `ingress` when the service
/// publishes ingress ports; none in host or none mode.
pub fn wanted_networks(state: &State, service: Option<&Service>, t: &Task) -> Vec<String> {
    if t.spec.network_mode() != NetworkMode::Overlay {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for n in &t.spec.networks {
        if state.networks.contains_key(&n.target) && !out.contains(&n.target) {
            out.push(n.target.clone());
        }
    }
    if let (Some(s), Some(ingress)) = (service, state.ingress_network()) {
        if s.spec.ports.iter().any(PortConfig::is_ingress) && !out.contains(&ingress.id) {
            out.push(ingress.id.clone());
        }
    }
    out
}

/// The task has an address on every network it attaches to: it may be placed.
pub fn attached(state: &State, t: &Task) -> bool {
    let service = state.services.get(&t.service_id);
    wanted_networks(state, service, t).iter().all(|id| t.networks.iter().any(|a| &a.network_id == id))
}

/// Appends the allocation ops for `state` after the orchestrator's `ops`,
/// and fills the addresses of the tasks those ops create.
pub fn allocate(state: &State, ops: &mut Vec<Op>, now: UnixNanos) {
    let mut a = Allocator::new(state);
    for s in state.services.values() {
        if let Some(endpoint) = a.endpoint(state, s) {
            ops.push(Op::SetServiceEndpoint { id: s.id.clone(), endpoint });
        }
    }
    // Tasks created by this pass carry their addresses.
    for op in ops.iter_mut() {
        let Op::CreateTask(t) = op else { continue };
        let wanted = wanted_networks(state, state.services.get(&t.service_id), t);
        match a.task_addresses(state, &[], &wanted) {
            Ok(networks) => t.networks = networks,
            Err(network) => {
                t.networks.clear();
                t.status = pending(network, now);
            }
        }
    }
    for t in state.tasks.values() {
        let waiting = t.status.state <= TaskState::Pending && t.desired_state <= TaskState::Running;
        if !waiting || attached(state, t) {
            continue;
        }
        let wanted = wanted_networks(state, state.services.get(&t.service_id), t);
        match a.task_addresses(state, &t.networks, &wanted) {
            Ok(networks) => ops.push(Op::SetTaskNetworks { id: t.id.clone(), networks }),
            Err(network) => {
                if t.status.state != TaskState::Pending || t.status.err != no_address_left(&network) {
                    ops.push(Op::SetTaskStatus { id: t.id.clone(), status: pending(network, now) });
                }
            }
        }
    }
    for n in state.nodes.values() {
        let wanted = node_networks(state, &n.id);
        if let Some(attachments) = a.node_addresses(&n.attachments, &wanted) {
            ops.push(Op::SetNodeAttachments { id: n.id.clone(), attachments });
        }
    }
}

fn pending(network: String, now: UnixNanos) -> TaskStatus {
    let mut st = TaskStatus::new(TaskState::Pending, now, "pending task scheduling");
    st.err = no_address_left(&network);
    st
}

/// The networks node `node_id` needs an address on: those of its live tasks,
/// and `ingress` while any service publishes ingress ports.
pub fn node_networks(state: &State, node_id: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = state
        .tasks
        .values()
        .filter(|t| t.node_id == node_id && !t.status.state.is_terminal())
        .flat_map(|t| t.networks.iter().map(|a| a.network_id.clone()))
        .filter(|id| state.networks.contains_key(id))
        .collect();
    if let Some(ingress) = state.ingress_network() {
        if state.services.values().any(|s| s.spec.ports.iter().any(PortConfig::is_ingress)) {
            out.insert(ingress.id.clone());
        }
    }
    // A node on an encrypted network needs its tunnel address (issue #15).
    if out.iter().any(|id| state.networks.get(id).is_some_and(|n| n.spec.encrypted)) {
        out.insert(TUNNEL_NETWORK_ID.to_string());
    }
    out
}

/// The pools and port space of one pass.
struct Allocator {
    pools: BTreeMap<String, Pool>,
    ports: PortSpace,
}

impl Allocator {
    /// Everything the state holds, held.
    fn new(state: &State) -> Allocator {
        let mut pools: BTreeMap<String, Pool> =
            state.networks.values().map(|n| (n.id.clone(), Pool::new(n.subnet, n.gateway, n.spec.ipam.ip_range, n.last_addr))).collect();
        pools.insert(TUNNEL_NETWORK_ID.to_string(), Pool::new(TUNNEL_SUBNET, TUNNEL_SUBNET.network(), None, None));
        let mut hold = |a: &NetworkAttachment| {
            if let Some(p) = pools.get_mut(&a.network_id) {
                p.reserve(a.addr.addr);
            }
        };
        for s in state.services.values() {
            vips(&s.endpoint).iter().for_each(&mut hold);
        }
        for t in state.tasks.values().filter(|t| !t.status.state.is_terminal()) {
            t.networks.iter().for_each(&mut hold);
        }
        for n in state.nodes.values() {
            n.attachments.iter().for_each(&mut hold);
        }
        let mut ports = PortSpace::new(state.last_port);
        for s in state.services.values() {
            for p in s.endpoint.ports.iter().filter(|p| p.is_ingress() && p.published_port != 0) {
                ports.reserve(&p.protocol, p.published_port);
            }
        }
        Allocator { pools, ports }
    }

    /// One address on `network_id`, or `None` when its pool is exhausted.
    fn address(&mut self, network_id: &str) -> Option<NetworkAttachment> {
        let pool = self.pools.get_mut(network_id)?;
        let ip = pool.allocate()?;
        Some(NetworkAttachment { network_id: network_id.to_string(), addr: pool.subnet().with_addr(ip) })
    }

    /// The endpoint `s` should have, when it differs from its current one.
    fn endpoint(&mut self, state: &State, s: &Service) -> Option<Endpoint> {
        let old = &s.endpoint;
        let mut wanted: Vec<String> = Vec::new();
        if s.spec.endpoint_mode == EndpointMode::Vip && s.spec.task.network_mode() == NetworkMode::Overlay {
            for n in &s.spec.task.networks {
                if state.networks.contains_key(&n.target) && !wanted.contains(&n.target) {
                    wanted.push(n.target.clone());
                }
            }
            if let Some(ingress) = state.ingress_network() {
                if s.spec.ports.iter().any(PortConfig::is_ingress) && !wanted.contains(&ingress.id) {
                    wanted.push(ingress.id.clone());
                }
            }
        }
        let mut virtual_ips = Vec::new();
        for id in &wanted {
            match old.virtual_ips.iter().find(|v| &v.network_id == id) {
                Some(v) => virtual_ips.push(v.clone()),
                None => {
                    if let Some(a) = self.address(id) {
                        virtual_ips.push(VirtualIp { network_id: a.network_id, addr: a.addr });
                    }
                }
            }
        }
        let mut ports = Vec::new();
        for p in &s.spec.ports {
            if !p.is_ingress() {
                ports.push(p.clone());
                continue;
            }
            let had = |port: u32| {
                old.ports.iter().any(|q| q.is_ingress() && q.published_port == port && q.protocol.eq_ignore_ascii_case(&p.protocol))
            };
            let published = if p.published_port != 0 {
                (had(p.published_port) || self.ports.reserve(&p.protocol, p.published_port)).then_some(p.published_port)
            } else {
                // An automatic port stays the service's while the spec asks for one on that target.
                let asked =
                    |port: u32| s.spec.ports.iter().any(|q| q.published_port == port && q.protocol.eq_ignore_ascii_case(&p.protocol));
                let kept = old.ports.iter().find(|q| {
                    q.is_ingress()
                        && q.target_port == p.target_port
                        && q.protocol.eq_ignore_ascii_case(&p.protocol)
                        && !asked(q.published_port)
                        && !ports.iter().any(|r: &PortConfig| r.published_port == q.published_port && r.protocol == q.protocol)
                });
                kept.map(|q| q.published_port).or_else(|| self.ports.allocate(&p.protocol))
            };
            // A port another service took meanwhile (two creates racing) is left out: control refuses such specs.
            if let Some(published_port) = published {
                ports.push(PortConfig { published_port, ..p.clone() });
            }
        }
        let next = Endpoint { ports, virtual_ips };
        (next != *old).then_some(next)
    }

    /// Addresses for a task on `wanted`, keeping those it `has`; on
    /// exhaustion, the network's name and nothing held.
    fn task_addresses(&mut self, state: &State, has: &[NetworkAttachment], wanted: &[String]) -> Result<Vec<NetworkAttachment>, String> {
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        for id in wanted {
            if let Some(a) = has.iter().find(|a| &a.network_id == id) {
                out.push(a.clone());
                continue;
            }
            match self.address(id) {
                Some(a) => {
                    fresh.push(a.clone());
                    out.push(a);
                }
                None => {
                    for a in fresh {
                        if let Some(p) = self.pools.get_mut(&a.network_id) {
                            p.release(a.addr.addr);
                        }
                    }
                    return Err(state.networks.get(id).map(|n| n.spec.name.clone()).unwrap_or_else(|| id.clone()));
                }
            }
        }
        Ok(out)
    }

    /// A node's attachments for `wanted`, when they differ from `has`.
    fn node_addresses(&mut self, has: &[NetworkAttachment], wanted: &BTreeSet<String>) -> Option<Vec<NetworkAttachment>> {
        let mut out: Vec<NetworkAttachment> = has.iter().filter(|a| wanted.contains(&a.network_id)).cloned().collect();
        for id in wanted {
            if !out.iter().any(|a| &a.network_id == id) {
                // An exhausted network leaves the node without an address there; the next pass tries again.
                out.extend(self.address(id));
            }
        }
        (out != has).then_some(out)
    }
}

/// Everything node `node_id`'s data path needs about its networks (see
/// [`NodeNetworkView`]): the networks it has an address or live tasks on.
pub fn node_view(state: &State, node_id: &str) -> NodeNetworkView {
    let mut view = NodeNetworkView {
        data_path_port: state.cluster.as_ref().map(|c| c.network.data_path_port).unwrap_or_default(),
        ..Default::default()
    };
    let Some(node) = state.nodes.get(node_id) else { return view };
    let mut ids: BTreeSet<&str> = node.attachments.iter().map(|a| a.network_id.as_str()).collect();
    for t in state.tasks.values().filter(|t| t.node_id == node_id && !t.status.state.is_terminal()) {
        ids.extend(t.networks.iter().map(|a| a.network_id.as_str()));
    }
    for id in ids {
        let local = node.attachments.iter().find(|a| a.network_id == id).map(|a| a.addr);
        let peers: Vec<Peer> = state
            .nodes
            .values()
            .filter(|o| o.id != node_id)
            .filter_map(|o| {
                let a = o.attachments.iter().find(|a| a.network_id == id)?;
                Some(Peer { node_id: o.id.clone(), underlay: underlay(&o.addr)?, addr: a.addr, mac: mac_of(a.addr.addr) })
            })
            .collect();
        if id == TUNNEL_NETWORK_ID {
            view.networks.insert(id.to_string(), tunnel_view(local, peers));
            continue;
        }
        let Some(n) = state.networks.get(id) else { continue };
        let services = service_records(state, id);
        view.networks.insert(
            id.to_string(),
            NetworkView {
                id: id.to_string(),
                name: n.spec.name.clone(),
                vni: n.vni,
                subnet: n.subnet,
                gateway: n.gateway,
                mtu: n.spec.mtu,
                internal: n.spec.internal,
                encrypted: n.spec.encrypted,
                ingress: n.ingress(),
                local,
                peers,
                services,
            },
        );
    }
    view.ingress_ports = ingress_ports(state);
    view
}

/// The tunnel network as a node's view lists it (see
/// [`TUNNEL_NETWORK_ID`]): no services, no VNI; `local` is the node's tunnel
/// address, `peers` the other nodes' with their underlay addresses.
fn tunnel_view(local: Option<shoal_shared::types::Ipv4Net>, peers: Vec<Peer>) -> NetworkView {
    NetworkView {
        id: TUNNEL_NETWORK_ID.to_string(),
        name: String::new(),
        vni: 0,
        subnet: TUNNEL_SUBNET,
        gateway: TUNNEL_SUBNET.network(),
        mtu: 0,
        internal: true,
        encrypted: true,
        ingress: false,
        local,
        peers,
        services: Vec::new(),
    }
}

/// The IP of a node's `IP:PORT` swarm address.
fn underlay(addr: &str) -> Option<Ipv4Addr> {
    match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Some(*a.ip()),
        Ok(SocketAddr::V6(_)) => None,
        Err(_) => addr.parse().ok(),
    }
}

/// Running as far as DNS and VIPs are concerned: observed and desired running.
fn running(t: &Task) -> bool {
    t.status.state == TaskState::Running && t.desired_state == TaskState::Running
}

/// The services with a VIP or live tasks on network `id`.
fn service_records(state: &State, id: &str) -> Vec<ServiceRecord> {
    let mut out = Vec::new();
    for s in state.services.values() {
        let vip = s.endpoint.virtual_ips.iter().find(|v| v.network_id == id).map(|v| v.addr.addr);
        let tasks: Vec<TaskRecord> = state
            .tasks_of(&s.id)
            .into_iter()
            .filter(|t| !t.status.state.is_terminal())
            .filter_map(|t| {
                let a = t.networks.iter().find(|a| a.network_id == id)?;
                Some(TaskRecord {
                    task_id: t.id.clone(),
                    name: task_name(&s.spec.name, t),
                    node_id: t.node_id.clone(),
                    addr: a.addr.addr,
                    running: running(t),
                })
            })
            .collect();
        if vip.is_none() && tasks.is_empty() {
            continue;
        }
        let aliases = s.spec.task.networks.iter().find(|n| n.target == id).map(|n| n.aliases.clone()).unwrap_or_default();
        out.push(ServiceRecord {
            service_id: s.id.clone(),
            name: s.spec.name.clone(),
            aliases,
            endpoint_mode: s.spec.endpoint_mode,
            vip,
            tasks,
        });
    }
    out
}

/// Swarm's task name: `web.1.TASKID`, or `web.NODEID.TASKID` for global services.
pub fn task_name(service: &str, t: &Task) -> String {
    let slot = if t.slot > 0 { t.slot.to_string() } else { t.node_id.clone() };
    format!("{service}.{slot}.{}", t.id)
}

/// Every published ingress port with its backends.
fn ingress_ports(state: &State) -> Vec<IngressPort> {
    let Some(ingress) = state.ingress_network() else { return Vec::new() };
    let mut out = Vec::new();
    for s in state.services.values() {
        let vip = s.endpoint.virtual_ips.iter().find(|v| v.network_id == ingress.id).map(|v| v.addr.addr);
        let backends: Vec<Ipv4Addr> = state
            .tasks_of(&s.id)
            .into_iter()
            .filter(|t| running(t))
            .filter_map(|t| t.networks.iter().find(|a| a.network_id == ingress.id).map(|a| a.addr.addr))
            .collect();
        for p in s.endpoint.ports.iter().filter(|p| p.is_ingress() && p.published_port != 0) {
            out.push(IngressPort {
                protocol: p.protocol.to_ascii_lowercase(),
                published_port: p.published_port,
                target_port: p.target_port,
                service_id: s.id.clone(),
                service_name: s.spec.name.clone(),
                vip,
                backends: backends.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{node, service, task};
    use shoal_shared::ops::Entry;
    use shoal_shared::types::{Cluster, Ipv4Net, Network, NetworkAttachmentConfig, NetworkSpec, PUBLISH_MODE_INGRESS};

    pub(crate) fn network(id: &str, name: &str, subnet: &str, vni: u32, ingress: bool) -> Network {
        let subnet = Ipv4Net::parse(subnet).unwrap();
        Network {
            id: id.into(),
            meta: Default::default(),
            spec: NetworkSpec { name: name.into(), driver: "overlay".into(), ingress, ..Default::default() },
            vni,
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            last_addr: None,
        }
    }

    struct Sim {
        s: State,
        index: u64,
    }

    impl Sim {
        fn new(subnet: &str) -> Sim {
            let mut sim = Sim { s: State::default(), index: 0 };
            sim.apply(vec![
                Op::PutCluster(Cluster { id: "c".into(), ..Default::default() }),
                Op::PutNetwork(network("ing", "ingress", "10.0.0.0/24", 4096, true)),
                Op::PutNetwork(network("net", "backend", subnet, 4097, false)),
                Op::PutNode(node("n1", "linux/amd64")),
                Op::PutNode(node("n2", "linux/amd64")),
            ]);
            sim
        }

        fn apply(&mut self, ops: Vec<Op>) {
            self.index += 1;
            let r = self.s.apply(self.index, &Entry { at: 5, ops });
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        }

        /// One allocation pass over the given (orchestrator) ops, applied.
        fn pass(&mut self, mut ops: Vec<Op>) -> Vec<Op> {
            allocate(&self.s, &mut ops, 9);
            self.apply(ops.clone());
            ops
        }

        fn service_on_net(&mut self, id: &str, name: &str, ports: &[(u32, u32)]) {
            let mut svc = service(id, name);
            svc.spec.task.networks = vec![NetworkAttachmentConfig { target: "net".into(), aliases: vec![format!("{name}-alias")] }];
            svc.spec.ports = ports
                .iter()
                .map(|(published, target)| PortConfig {
                    protocol: "tcp".into(),
                    target_port: *target,
                    published_port: *published,
                    publish_mode: PUBLISH_MODE_INGRESS.into(),
                })
                .collect();
            self.apply(vec![Op::PutService(svc)]);
        }

        fn new_task(&self, id: &str, service_id: &str) -> Op {
            let mut t = task(id, service_id, 1);
            t.spec = self.s.services[service_id].spec.task.clone();
            Op::CreateTask(t)
        }
    }

    fn addrs(t: &Task) -> Vec<String> {
        t.networks.iter().map(|a| format!("{}={}", a.network_id, a.addr)).collect()
    }

    #[test]
    fn services_get_vips_and_ports_tasks_addresses_nodes_attachments() {
        let mut sim = Sim::new("10.15.0.0/24");
        sim.service_on_net("s1", "web", &[(8080, 80), (0, 443)]);
        let create = sim.new_task("t1", "s1");
        sim.pass(vec![create]);
        let web = &sim.s.services["s1"];
        let vips: Vec<String> = web.endpoint.virtual_ips.iter().map(|v| format!("{}={}", v.network_id, v.addr)).collect();
        assert_eq!(vips, ["net=10.15.0.2/24", "ing=10.0.0.2/24"]);
        let published: Vec<u32> = web.endpoint.ports.iter().map(|p| p.published_port).collect();
        assert_eq!(published, [8080, 30_000]);
        assert_eq!(addrs(&sim.s.tasks["t1"]), ["net=10.15.0.3/24", "ing=10.0.0.3/24"]);
        // Every node gets an ingress address (ports are published); none on `backend` yet.
        assert_eq!(sim.s.nodes["n1"].attachments.len(), 1);
        assert_eq!(sim.s.nodes["n2"].attachments[0].addr.to_string(), "10.0.0.5/24");
        assert!(attached(&sim.s, &sim.s.tasks["t1"]));
        // Placed on n1: n1 gets a `backend` address on the next pass.
        let st = TaskStatus::new(TaskState::Running, 6, "running");
        sim.apply(vec![Op::AssignTask { id: "t1".into(), node_id: "n1".into(), status: st }]);
        sim.pass(vec![]);
        let n1: Vec<String> = sim.s.nodes["n1"].attachments.iter().map(|a| format!("{}={}", a.network_id, a.addr)).collect();
        assert_eq!(n1, ["ing=10.0.0.4/24", "net=10.15.0.4/24"]);
        // Settled: another pass changes nothing.
        assert!(sim.pass(vec![]).is_empty());
    }

    #[test]
    fn exhaustion_keeps_tasks_pending_and_terminal_tasks_free_their_address() {
        // A /29 has 5 addresses besides the gateway: 1 VIP + 4 tasks.
        let mut sim = Sim::new("10.9.0.0/29");
        sim.service_on_net("s1", "web", &[]);
        let creates: Vec<Op> = (1..=5).map(|i| sim.new_task(&format!("t{i}"), "s1")).collect();
        sim.pass(creates);
        assert_eq!(addrs(&sim.s.tasks["t4"]), ["net=10.9.0.6/29"]);
        let t5 = &sim.s.tasks["t5"];
        assert!(t5.networks.is_empty());
        assert_eq!((t5.status.state, t5.status.err.as_str()), (TaskState::Pending, "no IP address left on network backend"));
        assert!(!attached(&sim.s, t5));
        assert!(sim.pass(vec![]).is_empty(), "no repeated pending status");
        // t1 only desired down: still holds its address.
        sim.apply(vec![Op::SetTaskDesired { id: "t1".into(), desired: TaskState::Shutdown }]);
        assert!(sim.pass(vec![]).is_empty());
        // t1 stopped (terminal): its address goes to t5.
        sim.apply(vec![Op::SetTaskStatus { id: "t1".into(), status: TaskStatus::new(TaskState::Shutdown, 7, "shutdown") }]);
        let ops = sim.pass(vec![]);
        assert_eq!(ops, vec![Op::SetTaskNetworks { id: "t5".into(), networks: sim.s.tasks["t1"].networks.clone() }]);
        assert!(attached(&sim.s, &sim.s.tasks["t5"]));
    }

    #[test]
    fn apply_refuses_an_address_or_port_held_elsewhere() {
        let mut sim = Sim::new("10.15.0.0/24");
        sim.service_on_net("s1", "web", &[(8080, 80)]);
        sim.service_on_net("s2", "api", &[]);
        sim.pass(vec![]);
        let web = sim.s.services["s1"].endpoint.clone();
        let before = sim.s.clone();
        // The same VIP for another service, the same ingress port, an address off the subnet, the gateway.
        let bad = vec![
            Op::SetServiceEndpoint { id: "s2".into(), endpoint: Endpoint { ports: vec![], virtual_ips: web.virtual_ips.clone() } },
            Op::SetServiceEndpoint { id: "s2".into(), endpoint: Endpoint { ports: web.ports.clone(), virtual_ips: vec![] } },
            Op::SetTaskNetworks {
                id: "t".into(),
                networks: vec![NetworkAttachment { network_id: "net".into(), addr: Ipv4Net::parse("10.16.0.9/24").unwrap() }],
            },
            Op::SetNodeAttachments {
                id: "n1".into(),
                attachments: vec![NetworkAttachment { network_id: "net".into(), addr: Ipv4Net::parse("10.15.0.1/24").unwrap() }],
            },
        ];
        sim.index += 1;
        let r = sim.s.apply(sim.index, &Entry { at: 5, ops: bad });
        assert_eq!(r.rejected.len(), 4, "{:?}", r.rejected);
        assert_eq!(r.rejected[0].1.to_string(), "address 10.15.0.2 on network net is held by service web");
        assert_eq!(r.rejected[1].1.to_string(), "ingress port 8080/tcp is held by service web");
        assert_eq!(r.rejected[3].1.to_string(), "address 10.15.0.1 on network net is held by the gateway");
        assert_eq!(sim.s.services, before.services);
        assert_eq!(sim.s.nodes, before.nodes);
    }

    #[test]
    fn removing_ports_and_networks_frees_them() {
        let mut sim = Sim::new("10.15.0.0/24");
        sim.service_on_net("s1", "web", &[(0, 80)]);
        sim.pass(vec![]);
        assert_eq!(sim.s.services["s1"].endpoint.ports[0].published_port, 30_000);
        let mut svc = sim.s.services["s1"].clone();
        svc.spec.ports.clear();
        svc.spec.task.networks.clear();
        sim.apply(vec![Op::PutService(svc)]);
        sim.pass(vec![]);
        assert_eq!(sim.s.services["s1"].endpoint, Endpoint::default());
        assert!(sim.s.nodes.values().all(|n| n.attachments.is_empty()), "no ports published: no ingress addresses");
        // The next automatic port follows the last one handed out.
        sim.service_on_net("s2", "api", &[(0, 80)]);
        sim.pass(vec![]);
        assert_eq!(sim.s.services["s2"].endpoint.ports[0].published_port, 30_001);
    }

    #[test]
    fn node_view_has_peers_services_and_ingress_backends() {
        let mut sim = Sim::new("10.15.0.0/24");
        for (id, addr) in [("n1", "192.168.1.1:2377"), ("n2", "192.168.1.2:2377")] {
            let mut n = sim.s.nodes[id].clone();
            n.addr = addr.into();
            sim.apply(vec![Op::PutNode(n)]);
        }
        sim.service_on_net("s1", "web", &[(8080, 80)]);
        let creates = vec![sim.new_task("t1", "s1"), sim.new_task("t2", "s1")];
        sim.pass(creates);
        let run = |id: &str, node: &str| Op::AssignTask {
            id: id.into(),
            node_id: node.into(),
            status: TaskStatus::new(TaskState::Running, 6, "running"),
        };
        sim.apply(vec![run("t1", "n1"), run("t2", "n2")]);
        sim.pass(vec![]);
        let v = node_view(&sim.s, "n1");
        assert_eq!(v.data_path_port, 4789);
        assert_eq!(v.networks.keys().collect::<Vec<_>>(), ["ing", "net"]);
        let net = &v.networks["net"];
        assert_eq!(
            (net.name.as_str(), net.vni, net.subnet.to_string(), net.gateway.to_string()),
            ("backend", 4097, "10.15.0.0/24".into(), "10.15.0.1".into())
        );
        assert_eq!(net.local.map(|a| a.to_string()), Some(sim.s.nodes["n1"].attachments[1].addr.to_string()));
        assert_eq!(net.peers.len(), 1);
        let peer = &net.peers[0];
        assert_eq!((peer.node_id.as_str(), peer.underlay.to_string()), ("n2", "192.168.1.2".to_string()));
        assert_eq!(peer.mac, mac_of(peer.addr.addr));
        let web = &net.services[0];
        assert_eq!((web.name.as_str(), web.aliases.clone(), web.endpoint_mode), ("web", vec!["web-alias".to_string()], EndpointMode::Vip));
        assert_eq!(web.vip.map(|a| a.to_string()), Some("10.15.0.2".into()));
        let names: Vec<&str> = web.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["web.1.t1", "web.1.t2"]);
        assert!(web.tasks.iter().all(|t| t.running));
        assert_eq!(v.ingress_ports.len(), 1);
        let p = &v.ingress_ports[0];
        assert_eq!((p.published_port, p.target_port, p.protocol.as_str()), (8080, 80, "tcp"));
        assert_eq!(p.backends.len(), 2);
        assert!(p.vip.is_some());
        // A node outside the swarm's networks sees only the ingress ports.
        assert!(node_view(&sim.s, "nope").networks.is_empty());
        assert!(v.tunnel().is_none(), "no encrypted network, no tunnel address");
    }

    #[test]
    fn nodes_on_encrypted_networks_get_tunnel_addresses_and_lose_them_after() {
        let mut sim = Sim::new("10.15.0.0/24");
        let mut net = sim.s.networks["net"].clone();
        net.spec.encrypted = true;
        sim.apply(vec![Op::PutNetwork(net)]);
        for (id, addr) in [("n1", "192.168.1.1:2377"), ("n2", "192.168.1.2:2377")] {
            let mut n = sim.s.nodes[id].clone();
            n.addr = addr.into();
            sim.apply(vec![Op::PutNode(n)]);
        }
        sim.service_on_net("s1", "web", &[]);
        let creates = vec![sim.new_task("t1", "s1"), sim.new_task("t2", "s1")];
        sim.pass(creates);
        let run = |id: &str, node: &str, state: TaskState| Op::AssignTask {
            id: id.into(),
            node_id: node.into(),
            status: TaskStatus::new(state, 6, "running"),
        };
        sim.apply(vec![run("t1", "n1", TaskState::Running), run("t2", "n2", TaskState::Running)]);
        sim.pass(vec![]);
        let tunnel = |sim: &Sim, node: &str| {
            sim.s.nodes[node].attachments.iter().find(|a| a.network_id == TUNNEL_NETWORK_ID).map(|a| a.addr.to_string())
        };
        let (t1, t2) = (tunnel(&sim, "n1").unwrap(), tunnel(&sim, "n2").unwrap());
        assert!(t1.starts_with("198.18.") && t1.ends_with("/15") && t2.starts_with("198.1") && t1 != t2, "{t1} {t2}");
        let v = node_view(&sim.s, "n1");
        assert_eq!(v.overlays().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["net"], "the tunnel is no overlay to program");
        assert_eq!(v.tunnel_addr().map(|a| a.to_string()), t1.split('/').next().map(str::to_string));
        let peers = &v.tunnel().unwrap().peers;
        assert_eq!(peers.len(), 1);
        assert_eq!((peers[0].node_id.as_str(), peers[0].underlay.to_string(), peers[0].addr.to_string()), ("n2", "192.168.1.2".into(), t2));
        assert!(v.ready("net"));
        // The address passes the state's own checks (no network record holds it), and is held.
        let mut other = sim.s.nodes["n2"].attachments.clone();
        other.retain(|a| a.network_id == TUNNEL_NETWORK_ID);
        let taken = Op::SetNodeAttachments { id: "n1".into(), attachments: other };
        let mut s2 = sim.s.clone();
        let r = s2.apply(sim.index + 1, &Entry { at: 7, ops: vec![taken] });
        assert_eq!(r.rejected.len(), 1, "n2's tunnel address is n2's");
        // n2's task ends: n2 leaves the tunnel network; n1 sees no peer there any more.
        sim.apply(vec![run("t2", "n2", TaskState::Complete)]);
        sim.pass(vec![]);
        assert_eq!(tunnel(&sim, "n2"), None);
        assert!(node_view(&sim.s, "n1").tunnel().unwrap().peers.is_empty());
    }
}
