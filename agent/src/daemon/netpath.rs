//! The daemon's shell of the container-networking data path (issue #12):
//! keeps this node's bridges, VXLAN devices and nftables rules in line with
//! its assignments (a sync job whenever the plan changes, one at a time),
//! builds a starting task's namespace and files inside its start job, and
//! removes it with the container. Decisions are in `crate::network`
//! (`view`, `plan`, `nft`); the kernel work is the [`NetDriver`]'s, off the
//! loop.

use super::dns::{DnsCommand, DnsHandle};
use super::{Daemon, Event};
use crate::network::bridge::{Bridge, Leases};
use crate::network::driver::{DnsSocket, NetDriver, Probe};
use crate::network::plan::{NodeView, TaskAttachment};
use crate::network::{files, nft, view};
use crate::runtime::{HostMount, RuntimeError};
use shoal_shared::types::Task;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The data path's state in the daemon.
pub(crate) struct NetPath {
    pub(crate) driver: Arc<dyn NetDriver>,
    /// The embedded DNS server's loop (none in the simulator).
    pub(crate) dns: Option<DnsHandle>,
    /// What the node can do (probed once at start).
    pub(crate) probe: Probe,
    /// Running containers' main processes, from the last listing.
    pub(crate) pids: std::collections::BTreeMap<String, u32>,
    /// The node's bridge network (none where tasks cannot get namespaces:
    /// tasks on no network share the host's there).
    bridge: Option<Bridge>,
    /// Addresses of this node's tasks on its bridge network.
    leases: Leases,
    /// The plan, ruleset and live tasks of the last sync started.
    synced: Option<Plan>,
    /// The generation of the last plan handed to a sync (the loop's or a
    /// starting task's): the driver skips one older than a plan it synced
    /// (`driver::SyncOrder`).
    generation: u64,
    in_flight: bool,
    /// Tasks whose start job has their network (from `task_net` to their
    /// `Started` event): their lease and namespace stay, live or not.
    starting: BTreeSet<String>,
    /// Backends that left the rules and whose tracked connections are not
    /// deleted yet (a failed sync keeps them for the next).
    forget: BTreeSet<Ipv4Addr>,
}

impl NetPath {
    /// Tasks on no network get namespaces on the node's bridge here (else
    /// they share the host's).
    pub(crate) fn has_bridge(&self) -> bool {
        self.bridge.is_some()
    }

    /// `bridge`: the node's bridge network (`--bridge-subnet`); its leases
    /// are read back from the driver (tasks that outlived a daemon keep theirs).
    pub(crate) fn new(driver: Arc<dyn NetDriver>, dns: Option<DnsHandle>, bridge: Option<Bridge>) -> NetPath {
        let mut probe = driver.probe();
        // A bridge subnet that overlaps the host's own networks (another
        // engine's bridge, say) would fail every sync: no bridge then, said once.
        let bridge = match bridge.map(|b| (driver.bridge_clash(b.subnet), b)) {
            Some((Some(clash), _)) => {
                crate::log!("WARN", "networking: {clash}; tasks on no network share the host's namespace until then");
                probe.problems.push(clash);
                None
            }
            Some((None, b)) => Some(b),
            None => None,
        };
        let bridge = if probe.overlay() {
            crate::log!("INFO", "networking: bridge, veth, VXLAN and nftables available: tasks get their own namespaces");
            if bridge.is_none() {
                crate::log!("INFO", "networking: no bridge network (--bridge-subnet none): tasks on no network share the host's");
            }
            bridge
        } else {
            for p in &probe.problems {
                crate::log!("WARN", "networking: {p}");
            }
            crate::log!("WARN", "networking: overlay networks cannot work on this node; tasks that need one fail here, tasks on no network share the host's");
            None
        };
        let leases = bridge.as_ref().map(|b| Leases::adopt(b, driver.leases())).unwrap_or_default();
        if !leases.is_empty() {
            crate::log!("INFO", "networking: {} address(es) on the node's bridge network adopted", leases.len());
        }
        NetPath {
            driver,
            dns,
            probe,
            pids: Default::default(),
            bridge,
            leases,
            synced: None,
            generation: 0,
            in_flight: false,
            starting: BTreeSet::new(),
            forget: BTreeSet::new(),
        }
    }
}

/// What a sync makes true: the node's networks, its ruleset, the tasks
/// whose namespaces stay (the others' go: stopped tasks free their
/// addresses), and the live tasks' processes (a new one, after a restart or
/// a restart of the daemon, gets its resolver socket then).
/// (the node's devices, its ruleset text, its live tasks, their pids, the
/// addresses its rules translate to).
type Plan = (NodeView, String, BTreeSet<String>, std::collections::BTreeMap<String, u32>, BTreeSet<Ipv4Addr>);

/// What a starting task's job needs to give it its network.
pub(crate) struct TaskNet {
    driver: Arc<dyn NetDriver>,
    dns: Option<DnsHandle>,
    /// The plan's generation (see `NetPath::generation`).
    generation: u64,
    view: NodeView,
    ruleset: String,
    attachments: Vec<TaskAttachment>,
    hostname: String,
}

impl TaskNet {
    /// In the start job: the node's networks synced, the task's namespace
    /// built (or adopted), its resolv.conf/hosts/hostname written; returns
    /// the namespace path for the runtime and the files' mounts.
    pub(crate) fn prepare(self, task_id: &str, data_dir: &Path) -> Result<(PathBuf, Vec<HostMount>), RuntimeError> {
        let err = |e: crate::network::driver::NetError| RuntimeError::Start(format!("network: {e}"));
        // Skipped when a newer plan was synced first: that one has this task's networks (or the
        // task is no longer to run here, and its namespace cannot be built below).
        self.driver.sync_node(self.generation, &self.view, &self.ruleset).map_err(err)?;
        let ns = self.driver.setup_task(self.generation, task_id, &self.attachments).map_err(err)?;
        // The embedded resolver answers in the task when its socket could be made there.
        let mut embedded = false;
        if let Some(dns) = &self.dns {
            match self.driver.open_dns(task_id) {
                Ok(DnsSocket::New(socket)) => {
                    let networks = self.attachments.iter().map(|a| a.network_id.clone()).collect();
                    embedded = dns.send(DnsCommand::Listen { task_id: task_id.to_string(), socket, networks });
                }
                // A sync made it first.
                Ok(DnsSocket::Busy) => embedded = true,
                Ok(DnsSocket::Unavailable) => {}
                Err(e) => crate::log!("WARN", "dns: {e}; the task asks the node's resolvers instead"),
            }
        }
        let dir = data_dir.join("tasks").join(task_id);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Start(format!("cannot create {}: {e}", dir.display())))?;
        let host = files::parse_resolv(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let addrs: Vec<Ipv4Addr> = self.attachments.iter().map(|a| a.addr.addr).collect();
        let contents = [
            ("resolv.conf", files::resolv_conf(&host, embedded), "/etc/resolv.conf"),
            ("hosts", files::hosts(&self.hostname, &addrs), "/etc/hosts"),
            ("hostname", files::hostname(&self.hostname), "/etc/hostname"),
        ];
        let mut mounts = Vec::new();
        for (name, text, target) in contents {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| RuntimeError::Start(format!("cannot write {}: {e}", p.display())))?;
            mounts.push(HostMount { source: p, target: target.to_string(), tmpfs: false, read_only: true });
        }
        Ok((ns.runtime_path, mounts))
    }
}

impl Daemon {
    /// This node's underlay address: its advertise address's IP.
    pub(crate) fn underlay(&self) -> Option<Ipv4Addr> {
        let a = self.swarm.advertise_addr();
        a.rsplit_once(':').map_or(a, |(h, _)| h).parse().ok()
    }

    /// The node's plan and ruleset from its assignments (none outside a swarm).
    fn net_plan(&self) -> Option<Plan> {
        // A node in no swarm has no networks (after `swarm leave` its own assignments remain).
        let in_swarm = self.swarm.mode == super::swarm::Mode::Worker || self.store.state().cluster.is_some();
        if !in_swarm {
            return None;
        }
        let underlay = self.underlay()?;
        let a = self.swarm.assigned_ref()?;
        let (v, rules) = view::node_plan(a, underlay, self.net.bridge.as_ref().map(|b| (b, &self.net.leases)));
        // Tasks that may still run keep their namespaces; terminal ones give them up.
        let live: BTreeSet<String> = a.tasks.values().filter(|t| !t.status.state.is_terminal()).map(|t| t.id.clone()).collect();
        let pids = self.net.pids.iter().filter(|(t, _)| live.contains(*t)).map(|(t, p)| (t.clone(), *p)).collect();
        Some((v, nft::ruleset(&rules), live, pids, rules.backends()))
    }

    /// The next plan's generation: plans are made here, on the loop, in order.
    fn next_net_generation(&mut self) -> u64 {
        self.net.generation += 1;
        self.net.generation
    }

    /// Starts a sync job when the plan changed since the last one (one at a time).
    pub(crate) fn sync_network(&mut self) {
        if self.net.in_flight || !self.net.probe.overlay() {
            return;
        }
        let Some(plan) = self.net_plan() else { return };
        if self.net.synced.as_ref() == Some(&plan) {
            return;
        }
        self.net.in_flight = true;
        let generation = self.next_net_generation();
        // Backends that left every VIP and port: their tracked connections go
        // once the new rules stop sending new ones there.
        // (kept until a sync succeeds; one that came back is not forgotten).
        if let Some(old) = &self.net.synced {
            self.net.forget.extend(old.4.difference(&plan.4));
        }
        self.net.forget.retain(|b| !plan.4.contains(b));
        let gone: Vec<Ipv4Addr> = self.net.forget.iter().copied().collect();
        // Tasks whose start job has their network keep their namespaces too.
        let keep: BTreeSet<String> = plan.2.union(&self.net.starting).cloned().collect();
        self.net.synced = Some(plan.clone());
        let driver = self.net.driver.clone();
        let dns = self.net.dns.clone();
        let mut listeners = Vec::new();
        if let (Some(d), Some(a)) = (&dns, self.swarm.assigned_ref()) {
            d.send(DnsCommand::SetView(view::dns_view(a)));
            // Each live task's networks, for listeners made again (after a daemon restart).
            listeners = a
                .tasks
                .values()
                .filter(|t| plan.2.contains(&t.id))
                .map(|t| (t.id.clone(), t.networks.iter().map(|n| n.network_id.clone()).collect(), self.net.pids.get(&t.id).copied()))
                .collect();
        }
        self.spawn_runtime(
            move |_| {
                let r = driver.sync_node(generation, &plan.0, &plan.1)?;
                if !gone.is_empty() {
                    match driver.forget_flows(&gone) {
                        Ok(n) if n > 0 => crate::log!(
                            "INFO",
                            "networking: {n} tracked connection(s) to {} task address(es) that left the rotation deleted",
                            gone.len()
                        ),
                        Ok(_) => {}
                        Err(e) => crate::log!("WARN", "networking: {e}; connections to tasks that stopped may linger until they time out"),
                    }
                }
                let pruned = driver.prune_tasks(generation, &keep)?;
                forget(dns.as_ref(), &pruned);
                if let Some(d) = &dns {
                    relisten(driver.as_ref(), d, &plan.2, &listeners);
                }
                Ok(crate::network::driver::SyncReport { changes: r.changes + pruned.len(), ..r })
            },
            |result| Event::NetSynced { result },
        );
    }

    /// A sync finished: on failure the next converge tries again.
    pub(crate) fn on_net_synced(&mut self, result: Result<crate::network::driver::SyncReport, crate::network::driver::NetError>) {
        self.net.in_flight = false;
        // Every namespace of a task that was not live is gone now: its bridge address is free
        // (a task that became live meanwhile keeps the one its start took).
        if let (Ok(_), Some(synced), Some(a)) = (&result, &self.net.synced, self.swarm.assigned_ref()) {
            let live = &synced.2;
            let starting = &self.net.starting;
            self.net
                .leases
                .retain(|t| live.contains(t) || starting.contains(t) || a.tasks.get(t).is_some_and(|t| !t.status.state.is_terminal()));
            self.net.forget.clear();
        }
        // A starting task's job synced a newer plan first: the next converge syncs the newest
        // (whatever the prune in the same job did).
        if result.as_ref().is_ok_and(|r| r.stale) {
            self.net.synced = None;
        }
        match result {
            Ok(r) if r.changes > 0 || r.ruleset_written => {
                crate::log!(
                    "INFO",
                    "networking: {} change(s) to this node's networks{}",
                    r.changes,
                    if r.ruleset_written { ", rules reloaded" } else { "" }
                )
            }
            Ok(_) => {}
            Err(e) => {
                crate::log!("WARN", "networking: {e}; retrying");
                self.net.synced = None;
            }
        }
    }

    /// A task's start job ended: its lease and namespace follow the plan
    /// again, and the node's rules are synced again from the newest plan
    /// (the job loaded the ruleset it was given, which may be older).
    pub(crate) fn on_task_started(&mut self, task_id: &str) {
        if self.net.starting.remove(task_id) {
            self.net.synced = None;
        }
    }

    /// `swarm leave`: this node's bridges, VXLAN devices and rules go (its
    /// tasks' namespaces go with their containers).
    pub(crate) fn teardown_networks(&mut self) {
        self.net.synced = None;
        // Every task's namespace goes below; a task after a new join leases afresh.
        self.net.leases = Leases::default();
        let Some(underlay) = self.underlay() else { return };
        let driver = self.net.driver.clone();
        let dns = self.net.dns.clone();
        let empty = NodeView { underlay, vxlan_port: crate::network::plan::VXLAN_PORT_DEFAULT, networks: Vec::new(), bridge: None };
        let none = format!("table ip {t}\ndelete table ip {t}\n", t = nft::TABLE);
        self.net.in_flight = true;
        let generation = self.next_net_generation();
        self.spawn_runtime(
            move |_| {
                // The tasks' namespaces first: the node's bridge goes only once nothing is on it.
                let pruned = driver.prune_tasks(generation, &BTreeSet::new())?;
                forget(dns.as_ref(), &pruned);
                let r = driver.sync_node(generation, &empty, &none)?;
                Ok(crate::network::driver::SyncReport { changes: r.changes + pruned.len(), ..r })
            },
            |result| Event::NetSynced { result },
        );
    }

    /// What a starting task needs for its network: `None` when it shares the
    /// host's (`--network host`, or no network on a node without a bridge
    /// network); an error when it needs what this node cannot give. A task
    /// on no network leases its address on the node's bridge here.
    pub(crate) fn task_net(&mut self, t: &Task, ctx: &serde_json::Value) -> Result<Option<TaskNet>, RuntimeError> {
        let Some(a) = self.swarm.assigned_ref() else { return Ok(None) };
        let on_bridge = match &self.net.bridge {
            Some(b) if view::uses_bridge(t) => {
                let ip = self.net.leases.lease(b, &t.id).map_err(|e| RuntimeError::Start(format!("network: {e}")))?;
                Some((b, ip))
            }
            _ => None,
        };
        let atts = match view::task_attachments(a, t, on_bridge) {
            Ok(Some(atts)) => atts,
            Ok(None) => return Ok(None),
            Err(e) => return Err(RuntimeError::Start(format!("network: {e}"))),
        };
        // Only tasks that get a namespace: their start job holds its lease and loads rules.
        self.net.starting.insert(t.id.clone());
        if !self.net.probe.overlay() {
            return Err(RuntimeError::Start(format!(
                "network: this node cannot run tasks on overlay networks: {}",
                self.net.probe.problems.join("; ")
            )));
        }
        let (view, ruleset, ..) = self.net_plan().ok_or_else(|| RuntimeError::Start("network: this node has no swarm address".into()))?;
        let generation = self.next_net_generation();
        let hostname = super::service::hostname(t, ctx)?;
        // The embedded resolver serves overlay networks only; a task on the node's bridge asks the
        // node's nameservers, as on Docker's default bridge.
        let dns = self.net.dns.clone().filter(|_| !t.networks.is_empty());
        Ok(Some(TaskNet { driver: self.net.driver.clone(), dns, generation, view, ruleset, attachments: atts, hostname }))
    }
}

/// A live task's id, networks and main process (if running).
type Listener = (String, Vec<String>, Option<u32>);

/// Makes the resolver's socket again in every live task that has a
/// namespace and none (a restarted daemon's tasks): binding fails where
/// this process already listens, which is how those are told apart.
fn relisten(driver: &dyn NetDriver, dns: &DnsHandle, live: &BTreeSet<String>, listeners: &[Listener]) {
    for (task_id, networks, pid) in listeners.iter().filter(|(t, _, _)| live.contains(t)) {
        // A bind lost with the previous daemon's mount namespace comes back from the task's process.
        if let Some(pid) = pid {
            if let Err(e) = driver.adopt(task_id, *pid) {
                crate::log!("WARN", "networking: {e}");
            }
        }
        if networks.is_empty() {
            continue;
        }
        if let Ok(DnsSocket::New(socket)) = driver.open_dns(task_id) {
            dns.send(DnsCommand::Listen { task_id: task_id.clone(), socket, networks: networks.clone() });
        }
    }
}

/// Tells the DNS loop that these tasks' listeners are gone.
fn forget(dns: Option<&DnsHandle>, tasks: &[String]) {
    if let Some(d) = dns {
        for t in tasks {
            d.send(DnsCommand::Forget { task_id: t.clone() });
        }
    }
}
