//! [`Assignments`]: everything one node must run, and the only input the
//! worker plans from.
//!
//! The leader builds a node's assignments from the replicated state
//! (`shoal_manager::dispatcher::assignments`, one function for the local
//! worker and remote ones alike) and sends them to workers in
//! `Wire::Assignments`; a manager builds its own from its replica. The
//! worker never sees the manager's `State`.
//!
//! [`NodeNetworkView`] is the part the node's data path programs its
//! networks from (bridges, VXLAN forwarding and neighbour entries, DNS,
//! VIP and ingress rules): everything it needs, nothing from gossip. It is
//! built by `shoal_manager::network::node_view`.

use crate::types::{EndpointMode, Ipv4Net, Service, Task};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The tasks bound to one node (history included: a task's log and
/// container are kept while its record is) and the services they belong to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignments {
    /// The node these are for.
    pub node_id: String,
    /// Every task whose `node_id` is this node, by task id.
    pub tasks: BTreeMap<String, Task>,
    /// The services of those tasks, by service id.
    pub services: BTreeMap<String, Service>,
    /// What this node's data path needs about its networks.
    pub network: NodeNetworkView,
}

/// Version of [`Assignments::to_record`], a worker's persisted copy (a
/// version byte, then postcard). Bump when `Assignments` or a record in it
/// changes shape. Version 1 (containers before secrets, configs and
/// healthchecks) still decodes, so a worker upgraded while no manager is in
/// reach keeps running what it ran; an unknown version is ignored (the
/// worker waits for a manager).
pub const RECORD_VERSION: u8 = 2;

/// [`Assignments`] as record version 1 held it.
#[cfg(feature = "legacy")]
#[derive(Deserialize)]
struct AssignmentsV1 {
    node_id: String,
    tasks: BTreeMap<String, crate::legacy::TaskV3>,
    services: BTreeMap<String, crate::legacy::ServiceV3>,
    network: NodeNetworkView,
}

/// Decodes one whole record body (no trailing bytes).
fn decode_whole<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((a, [])) => Ok(a),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

impl Assignments {
    /// The bytes a worker persists (see [`RECORD_VERSION`]).
    pub fn to_record(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Owned maps of plain records always serialize.
        out.extend(postcard::to_allocvec(self).expect("assignments serialize"));
        out
    }

    /// Decodes [`Assignments::to_record`]'s bytes, fallibly.
    pub fn from_record(bytes: &[u8]) -> Result<Assignments, String> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, body)) => decode_whole::<Assignments>(body),
            #[cfg(feature = "legacy")]
            Some((1, body)) => decode_whole::<AssignmentsV1>(body).map(|a| Assignments {
                node_id: a.node_id,
                tasks: a.tasks.into_iter().map(|(k, t)| (k, t.into())).collect(),
                services: a.services.into_iter().map(|(k, s)| (k, s.into())).collect(),
                network: a.network,
            }),
            #[cfg(not(feature = "legacy"))]
            Some((1, _)) => Err(
                "record version 1 is from an earlier Shoal and this build does not read it (the mips64le and s390x binaries leave old formats out to stay under 5 MiB); the node waits for a manager's assignments".into()
            ),
            Some((v, _)) => Err(format!("record version {v} is not supported (this build reads {RECORD_VERSION})")),
            None => Err("empty record".into()),
        }
    }
}

/// The id under which a node's view carries the swarm's *tunnel* network
/// (issue #15): not a network users see or attach to, but the addresses the
/// nodes' encrypted overlay traffic travels between. Every node that takes
/// part in an encrypted network gets one address on it (allocated by the
/// leader, kept in the node's attachments under this id); its VXLAN devices
/// of encrypted networks send from it, and peers' forwarding entries point
/// at it. The view lists it like a network: `local` is this node's tunnel
/// address, `peers` the other nodes' (their `addr`) with their underlay
/// addresses. Not a valid network id (ids are alphanumeric), so it never
/// clashes with one.
pub const TUNNEL_NETWORK_ID: &str = "shoal:tunnel";

/// The tunnel network's addresses: 198.18.0.0/15 (RFC 2544's benchmarking
/// range, unused on real networks); routed to the daemon's TUN device.
pub const TUNNEL_SUBNET: Ipv4Net = Ipv4Net { addr: Ipv4Addr::new(198, 18, 0, 0), prefix: 15 };

/// One node's view of the swarm's networks: the overlay networks it takes
/// part in (it has tasks on them, or an address on them such as every
/// node's on `ingress` while ports are published), with everything needed to
/// program them, and the ingress ports it must answer on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeNetworkView {
    /// The VXLAN UDP port of the swarm (`swarm init --data-path-port`).
    pub data_path_port: u16,
    /// By network id.
    pub networks: BTreeMap<String, NetworkView>,
    /// Ports published through the routing mesh: every node answers on each
    /// (`PUBLISHED/PROTO` to one of `backends` on `TARGET`).
    pub ingress_ports: Vec<IngressPort>,
}

impl NodeNetworkView {
    /// The overlay networks (everything but the tunnel network).
    pub fn overlays(&self) -> impl Iterator<Item = &NetworkView> {
        self.networks.values().filter(|n| n.id != TUNNEL_NETWORK_ID)
    }

    /// The tunnel network, once this node takes part in an encrypted one.
    pub fn tunnel(&self) -> Option<&NetworkView> {
        self.networks.get(TUNNEL_NETWORK_ID)
    }

    /// This node's tunnel address, once the leader allocated it.
    pub fn tunnel_addr(&self) -> Option<Ipv4Addr> {
        self.tunnel().and_then(|t| t.local).map(|l| l.addr)
    }

    /// Whether network `id` can be programmed on this node: its own address
    /// there is allocated, and for an encrypted network its tunnel address too.
    pub fn ready(&self, id: &str) -> bool {
        self.networks
            .get(id)
            .is_some_and(|n| n.id != TUNNEL_NETWORK_ID && n.local.is_some() && (!n.encrypted || self.tunnel_addr().is_some()))
    }
}

/// One overlay network as a node programs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    /// The VXLAN id.
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// 0: the data path's default.
    pub mtu: u32,
    /// No route out of the network.
    pub internal: bool,
    /// Encrypted (`-o encrypted`): its VXLAN traffic between nodes goes
    /// through the tunnel network's relay, sealed (issue #15).
    pub encrypted: bool,
    /// The routing-mesh network.
    pub ingress: bool,
    /// This node's own address on the network (its bridge's), once the
    /// leader allocated it; the data path waits for it before it programs
    /// the network (`None` right after a first task landed here).
    pub local: Option<Ipv4Net>,
    /// Other nodes with an address on this network, by node id.
    pub peers: Vec<Peer>,
    /// Services attached to this network (DNS names, VIPs, task addresses).
    pub services: Vec<ServiceRecord>,
}

/// Another node on an overlay network: where to send its VXLAN traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub node_id: String,
    /// Its underlay address: the IP of its swarm advertise address.
    pub underlay: Ipv4Addr,
    /// Its own address on the network.
    pub addr: Ipv4Net,
    /// The MAC of that address ([`mac_of`]).
    pub mac: [u8; 6],
}

/// A service's names and addresses on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service_id: String,
    /// The DNS name (`web`); `tasks.web` resolves to the running tasks.
    pub name: String,
    /// The `alias=` names of this service on this network.
    pub aliases: Vec<String>,
    pub endpoint_mode: EndpointMode,
    /// The VIP on this network (mode vip, once allocated).
    pub vip: Option<Ipv4Addr>,
    /// Tasks on this network, running or not (`running` says).
    pub tasks: Vec<TaskRecord>,
}

/// A task's address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    /// Swarm's task name, `web.1.TASKID` (a DNS name in Swarm).
    pub name: String,
    pub node_id: String,
    pub addr: Ipv4Addr,
    /// Observed running and desired running: in DNS answers and VIP rotations.
    pub running: bool,
}

/// One port published through the routing mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub published_port: u32,
    pub target_port: u32,
    pub service_id: String,
    pub service_name: String,
    /// The service's VIP on `ingress` (mode vip, once allocated).
    pub vip: Option<Ipv4Addr>,
    /// The running tasks' addresses on `ingress`.
    pub backends: Vec<Ipv4Addr>,
}

/// Docker's MAC for an address: `02:42` then the four IPv4 bytes.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

impl Assignments {
    /// Assignments for `node_id` from its tasks and their services; tasks
    /// bound elsewhere and services without a task here are dropped, so the
    /// result never says more than the node must know.
    pub fn new(node_id: &str, tasks: impl IntoIterator<Item = Task>, services: impl IntoIterator<Item = Service>) -> Assignments {
        let tasks: BTreeMap<String, Task> = tasks.into_iter().filter(|t| t.node_id == node_id).map(|t| (t.id.clone(), t)).collect();
        let used: BTreeSet<&str> = tasks.values().map(|t| t.service_id.as_str()).collect();
        let services = services.into_iter().filter(|s| used.contains(s.id.as_str())).map(|s| (s.id.clone(), s)).collect();
        Assignments { node_id: node_id.to_string(), tasks, services, network: NodeNetworkView::default() }
    }

    /// The name of a service of these tasks ("" when unknown).
    pub fn service_name(&self, service_id: &str) -> &str {
        self.services.get(service_id).map(|s| s.spec.name.as_str()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;
    use crate::types::{ServiceSpec, TaskStatus};

    #[test]
    fn only_this_nodes_tasks_and_their_services() {
        let spec = ServiceSpec::new("web", "busybox");
        let svc = |id: &str| Service {
            id: id.into(),
            meta: Default::default(),
            spec: spec.clone(),
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        };
        let task = |id: &str, service: &str, node: &str| Task {
            id: id.into(),
            meta: Default::default(),
            service_id: service.into(),
            slot: 1,
            node_id: node.into(),
            spec: spec.task.clone(),
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1, "assigned"),
            not_before: 0,
            attempt: 0,
            networks: Vec::new(),
        };
        let a = Assignments::new("n1", [task("t1", "s1", "n1"), task("t2", "s2", "n2")], [svc("s1"), svc("s2")]);
        assert_eq!(a.tasks.keys().collect::<Vec<_>>(), ["t1"]);
        assert_eq!(a.services.keys().collect::<Vec<_>>(), ["s1"]);
        assert_eq!(a.service_name("s1"), "web");
        assert_eq!(a.service_name("s2"), "");
        // The persisted record round-trips; another version or damage is an error, never a panic.
        let rec = a.to_record();
        assert_eq!(Assignments::from_record(&rec).unwrap(), a);
        let mut other = rec.clone();
        other[0] = RECORD_VERSION + 1;
        assert!(Assignments::from_record(&other).unwrap_err().contains("not supported"));
        assert!(Assignments::from_record(&[]).is_err());
        for n in 1..rec.len() {
            assert!(Assignments::from_record(&rec[..n]).is_err(), "truncated to {n}");
        }
        let mut longer = rec.clone();
        longer.push(0);
        assert!(Assignments::from_record(&longer).unwrap_err().contains("trailing"));
    }

    /// A record written by Shoal before secrets (main at f4d8bc0, generated
    /// once with its `to_record`): task `t1` of service `s1` (`web`,
    /// busybox, env A=1, `--init`) running on `n1`.
    #[cfg(feature = "legacy")]
    const RECORD_V1_HEX: &str = include_str!("legacy_assignments_v1.hex");

    #[cfg(feature = "legacy")]
    #[test]
    fn version_1_records_still_decode_so_an_upgraded_worker_runs_its_tasks() {
        let hex = RECORD_V1_HEX.trim();
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        assert_eq!(bytes[0], 1);
        let a = Assignments::from_record(&bytes).unwrap();
        assert_eq!(a.node_id, "n1");
        let t = &a.tasks["t1"];
        assert_eq!((t.service_id.as_str(), t.slot, t.status.state), ("s1", 1, TaskState::Running));
        let c = &t.spec.container;
        assert_eq!((c.image.as_str(), c.env.as_slice(), c.init), ("busybox", &["A=1".to_string()][..], true));
        assert!(c.secrets.is_empty() && c.configs.is_empty() && c.healthcheck.is_none());
        assert_eq!(a.services["s1"].spec.name, "web");
        assert_eq!(a.services["s1"].spec.task, t.spec);
        // Written again, it is today's record.
        assert_eq!(a.to_record()[0], RECORD_VERSION);
        assert_eq!(Assignments::from_record(&a.to_record()).unwrap(), a);
        for n in 1..bytes.len() {
            assert!(Assignments::from_record(&bytes[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn macs_are_dockers() {
        assert_eq!(mac_of(Ipv4Addr::new(10, 0, 0, 3)), [0x02, 0x42, 10, 0, 0, 3]);
    }
}
