//! The data path's one seam: [`NetDriver`], blocking calls the daemon runs
//! off its loop (as runtime jobs), and [`Fake`], which records what it was
//! asked (unit tests, the whole-node simulator). The real driver is
//! [`super::linux::Linux`].

use super::plan::{NodeView, TaskAttachment};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// What this node's kernel and system can do for container networking.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub bridge: bool,
    pub veth: bool,
    pub vxlan: bool,
    /// `nft` runs and can make a table.
    pub nftables: bool,
    /// `/dev/net/tun` opens: what encrypted overlay networks need
    /// (not needed by anything that runs today).
    pub tun: bool,
    /// Why each missing piece is missing, one line each.
    pub problems: Vec<String>,
}

impl Probe {
    /// Overlay networks work here: tasks may get their own namespaces.
    pub fn overlay(&self) -> bool {
        self.bridge && self.veth && self.vxlan && self.nftables
    }
}

/// What a sync changed (for the log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Kernel changes made.
    pub changes: usize,
    /// The nftables ruleset was written again.
    pub ruleset_written: bool,
    /// Nothing was done: a newer plan was synced first (see [`SyncOrder`]).
    pub stale: bool,
}

/// Orders syncs of the node's networks. Plans are made on the daemon's loop,
/// each with the next generation, and synced off it: by the loop's sync job
/// and by every starting task's job, which may run in any order. A plan
/// older than one already tried is skipped, never applied: it could lack a
/// network a newer plan added, and applying it would delete that network's
/// bridge under the tasks just attached to it (their veths lose their
/// master and the task is cut off, the CI failure of 2026-12-07).
#[derive(Debug, Default)]
pub struct SyncOrder {
    newest: u64,
}

impl SyncOrder {
    /// Whether the plan of `generation` may be synced (none newer was tried);
    /// if so it becomes the newest.
    pub fn admit(&mut self, generation: u64) -> bool {
        if generation < self.newest {
            return false;
        }
        self.newest = generation;
        true
    }
}

/// A data-path failure: what was being done and why it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct NetError {
    pub what: String,
    pub why: String,
}

impl NetError {
    pub fn new(what: impl Into<String>, why: impl std::fmt::Display) -> NetError {
        NetError { what: what.into(), why: why.to_string() }
    }

    /// A file-system failure; a full disk in fixed words (the C library's
    /// text differs between builds), with what to do.
    pub fn io(what: impl Into<String>, e: &std::io::Error) -> NetError {
        let why = if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
            "no space left on device: the disk is full; free space there".to_string()
        } else {
            e.to_string()
        };
        NetError { what: what.into(), why }
    }
}

/// A task's namespace, ready for its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNetns {
    /// The path the runtime joins (as the runtime's mount namespace sees it).
    pub runtime_path: PathBuf,
    /// True when an existing namespace was adopted, not built.
    pub adopted: bool,
}

/// Builds and removes what the data path needs. Blocking; never called on
/// the daemon's loop.
pub trait NetDriver: Send + Sync {
    /// What this node can do (called once at start).
    fn probe(&self) -> Probe;
    /// Makes the node's bridges, VXLAN devices and entries match `view` and
    /// loads `ruleset` (the text of `nft::ruleset`) if it changed; does
    /// nothing (`stale`) when a plan of a later `generation` was synced
    /// first (see [`SyncOrder`]).
    fn sync_node(&self, generation: u64, view: &NodeView, ruleset: &str) -> Result<SyncReport, NetError>;
    /// Builds task `task_id`'s namespace with `attachments` (`eth0`...), or
    /// adopts the one it already has. An address on the node's bridge
    /// network is kept as the task's lease (see [`NetDriver::leases`]) until
    /// its namespace goes. `generation`: the plan the task's start job
    /// holds (see [`NetDriver::prune_tasks`]).
    fn setup_task(&self, generation: u64, task_id: &str, attachments: &[TaskAttachment]) -> Result<TaskNetns, NetError>;
    /// The addresses on the node's bridge network that tasks' namespaces were
    /// built with and still hold (read once at start: adoption after a restart).
    fn leases(&self) -> BTreeMap<String, Ipv4Addr>;
    /// Removes task `task_id`'s namespace, veths and lease (nothing if none).
    fn teardown_task(&self, task_id: &str) -> Result<(), NetError>;
    /// Removes the namespaces of every task not in `keep` (stopped tasks:
    /// their addresses are free for others), except those built for a plan
    /// newer than `generation` (`keep` was made with that plan: a task that
    /// started since is not in it); returns the tasks whose went.
    fn prune_tasks(&self, generation: u64, keep: &BTreeSet<String>) -> Result<Vec<String>, NetError>;
    /// Binds task `task_id`'s namespace again from its running process
    /// `pid` when its bind is gone (a daemon restarted in a mount namespace
    /// of its own loses them); `true` when it did.
    fn adopt(&self, task_id: &str, pid: u32) -> Result<bool, NetError>;
    /// A UDP socket bound to the embedded resolver's address (127.0.0.11:53)
    /// inside task `task_id`'s namespace.
    fn open_dns(&self, task_id: &str) -> Result<DnsSocket, NetError>;
    /// Why the node's bridge network cannot have `subnet` (it overlaps an
    /// address on a device Shoal does not own), if it cannot.
    fn bridge_clash(&self, subnet: super::Ipv4Net) -> Option<String>;
    /// Deletes the tracked connections to `backends`, which just left every
    /// VIP and published port of this node; returns how many went.
    fn forget_flows(&self, backends: &[Ipv4Addr]) -> Result<usize, NetError>;
    /// The tunnel relay's device ([`super::plan::TUN_DEVICE`]) with `addr`
    /// (the node's tunnel address, the tunnel network's prefix) and `mtu`,
    /// up: opened when `None` was there before, else given the address
    /// again (it changed). The file is the device: it goes when closed.
    fn tunnel(&self, addr: super::Ipv4Net, mtu: u32, open: bool) -> Result<Option<std::fs::File>, NetError>;
}

/// What [`NetDriver::open_dns`] found.
#[derive(Debug)]
pub enum DnsSocket {
    /// A fresh socket for the DNS loop.
    New(std::net::UdpSocket),
    /// Bound already: this process listens there.
    Busy,
    /// No socket can be made (the fake driver).
    Unavailable,
}

/// Records calls; every call succeeds unless `fail` names it.
#[derive(Default)]
pub struct Fake {
    pub state: Mutex<FakeState>,
}

/// What [`Fake`] holds.
#[derive(Default, Debug)]
pub struct FakeState {
    pub view: Option<NodeView>,
    pub order: SyncOrder,
    pub ruleset: String,
    pub tasks: BTreeMap<String, Vec<TaskAttachment>>,
    /// The plan generation each task's namespace was built for.
    pub built: BTreeMap<String, u64>,
    /// Leases on the node's bridge, as [`NetDriver::leases`] gives them.
    pub leases: BTreeMap<String, Ipv4Addr>,
    pub syncs: u64,
    /// Backends whose tracked connections were deleted, in order.
    pub forgotten: Vec<Ipv4Addr>,
    /// Calls (`sync_node`, `setup_task`, `teardown_task`) that fail.
    pub fail: Vec<&'static str>,
}

impl NetDriver for Fake {
    fn probe(&self) -> Probe {
        Probe { bridge: true, veth: true, vxlan: true, nftables: true, tun: true, problems: Vec::new() }
    }

    fn sync_node(&self, generation: u64, view: &NodeView, ruleset: &str) -> Result<SyncReport, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.order.admit(generation) {
            return Ok(SyncReport { stale: true, ..SyncReport::default() });
        }
        if s.fail.contains(&"sync_node") {
            return Err(NetError::new("sync the node's networks", "injected failure"));
        }
        s.syncs += 1;
        let written = s.ruleset != ruleset;
        s.view = Some(view.clone());
        s.ruleset = ruleset.to_string();
        Ok(SyncReport { changes: 0, ruleset_written: written, stale: false })
    }

    fn setup_task(&self, generation: u64, task_id: &str, attachments: &[TaskAttachment]) -> Result<TaskNetns, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.fail.contains(&"setup_task") {
            return Err(NetError::new(format!("build the network namespace of task {task_id}"), "injected failure"));
        }
        s.built.insert(task_id.to_string(), generation);
        if let Some(a) = attachments.iter().find(|a| a.network_id == super::bridge::NETWORK_ID) {
            s.leases.insert(task_id.to_string(), a.addr.addr);
        }
        let adopted = s.tasks.insert(task_id.to_string(), attachments.to_vec()).is_some();
        Ok(TaskNetns { runtime_path: PathBuf::from(format!("/fake/netns/{task_id}")), adopted })
    }

    fn teardown_task(&self, task_id: &str) -> Result<(), NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.fail.contains(&"teardown_task") {
            return Err(NetError::new(format!("remove the network namespace of task {task_id}"), "injected failure"));
        }
        s.tasks.remove(task_id);
        s.leases.remove(task_id);
        s.built.remove(task_id);
        Ok(())
    }

    fn leases(&self) -> BTreeMap<String, Ipv4Addr> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).leases.clone()
    }

    fn prune_tasks(&self, generation: u64, keep: &BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = |s: &FakeState, id: &str| s.built.get(id).is_some_and(|g| *g > generation);
        let gone: Vec<String> = s.tasks.keys().filter(|id| !keep.contains(*id) && !newer(&s, id)).cloned().collect();
        for id in &gone {
            s.tasks.remove(id);
            s.leases.remove(id);
            s.built.remove(id);
        }
        Ok(gone)
    }

    fn adopt(&self, _task_id: &str, _pid: u32) -> Result<bool, NetError> {
        Ok(false)
    }

    fn bridge_clash(&self, _subnet: super::Ipv4Net) -> Option<String> {
        None
    }

    fn forget_flows(&self, backends: &[Ipv4Addr]) -> Result<usize, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.forgotten.extend_from_slice(backends);
        Ok(0)
    }

    fn tunnel(&self, _addr: super::Ipv4Net, _mtu: u32, _open: bool) -> Result<Option<std::fs::File>, NetError> {
        Err(NetError::new("open the tunnel device", "the simulated data path has none"))
    }

    fn open_dns(&self, _task_id: &str) -> Result<DnsSocket, NetError> {
        Ok(DnsSocket::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::{Fake, NetDriver, NetError, SyncOrder};
    use crate::network::plan::NodeView;
    use std::net::Ipv4Addr;

    #[test]
    fn an_older_plan_is_never_synced_after_a_newer_one() {
        let mut o = SyncOrder::default();
        assert!(o.admit(2));
        assert!(!o.admit(1), "an older plan after a newer one");
        assert!(o.admit(2) && o.admit(5));
        assert!(!o.admit(4));
        // Through a driver: the older view is not taken, and the report says so.
        let d = Fake::default();
        let view = |n: u8| NodeView { underlay: Ipv4Addr::new(10, 0, 0, n), vxlan_port: 4789, networks: Vec::new(), bridge: None };
        assert!(!d.sync_node(7, &view(7), "new").unwrap().stale);
        let r = d.sync_node(6, &view(6), "old").unwrap();
        assert!(r.stale && r.changes == 0 && !r.ruleset_written, "{r:?}");
        let s = d.state.lock().unwrap();
        assert_eq!((s.view.as_ref().map(|v| v.underlay), s.ruleset.as_str()), (Some(Ipv4Addr::new(10, 0, 0, 7)), "new"));
    }

    #[test]
    fn a_prune_planned_before_a_task_started_keeps_its_namespace() {
        let d = Fake::default();
        d.setup_task(3, "old", &[]).unwrap();
        d.setup_task(5, "new", &[]).unwrap();
        // Planned at 4: "new" started after, so it is not in `keep`, and stays.
        assert_eq!(d.prune_tasks(4, &Default::default()).unwrap(), ["old"]);
        assert_eq!(d.prune_tasks(5, &Default::default()).unwrap(), ["new"]);
    }

    #[test]
    fn a_full_disk_is_said_in_fixed_words_with_what_to_do() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = NetError::io("write /d/netns/t.bridge", &std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.to_string(), "write /d/netns/t.bridge: no space left on device: the disk is full; free space there");
        }
        let other = NetError::io("write x", &std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(other.to_string().starts_with("write x: ") && !other.to_string().contains("disk is full"));
    }
}
