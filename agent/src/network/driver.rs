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
    /// loads `ruleset` (the text of `nft::ruleset`) if it changed.
    fn sync_node(&self, view: &NodeView, ruleset: &str) -> Result<SyncReport, NetError>;
    /// Builds task `task_id`'s namespace with `attachments` (`eth0`...), or
    /// adopts the one it already has. An address on the node's bridge
    /// network is kept as the task's lease (see [`NetDriver::leases`]) until
    /// its namespace goes.
    fn setup_task(&self, task_id: &str, attachments: &[TaskAttachment]) -> Result<TaskNetns, NetError>;
    /// The addresses on the node's bridge network that tasks' namespaces were
    /// built with and still hold (read once at start: adoption after a restart).
    fn leases(&self) -> BTreeMap<String, Ipv4Addr>;
    /// Removes task `task_id`'s namespace, veths and lease (nothing if none).
    fn teardown_task(&self, task_id: &str) -> Result<(), NetError>;
    /// Removes the namespaces of every task not in `keep` (stopped tasks:
    /// their addresses are free for others); returns the tasks whose went.
    fn prune_tasks(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, NetError>;
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
    pub ruleset: String,
    pub tasks: BTreeMap<String, Vec<TaskAttachment>>,
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

    fn sync_node(&self, view: &NodeView, ruleset: &str) -> Result<SyncReport, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.fail.contains(&"sync_node") {
            return Err(NetError::new("sync the node's networks", "injected failure"));
        }
        s.syncs += 1;
        let written = s.ruleset != ruleset;
        s.view = Some(view.clone());
        s.ruleset = ruleset.to_string();
        Ok(SyncReport { changes: 0, ruleset_written: written })
    }

    fn setup_task(&self, task_id: &str, attachments: &[TaskAttachment]) -> Result<TaskNetns, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.fail.contains(&"setup_task") {
            return Err(NetError::new(format!("build the network namespace of task {task_id}"), "injected failure"));
        }
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
        Ok(())
    }

    fn leases(&self) -> BTreeMap<String, Ipv4Addr> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).leases.clone()
    }

    fn prune_tasks(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<String> = s.tasks.keys().filter(|id| !keep.contains(*id)).cloned().collect();
        s.tasks.retain(|id, _| keep.contains(id));
        s.leases.retain(|id, _| keep.contains(id));
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
    use super::NetError;

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
