//! The real [`NetDriver`]: carries out [`plan`]'s actions with `shoal-netlink`
//! in the daemon's own network namespace, builds task namespaces, and loads
//! the nftables ruleset with `nft -f -`.
//!
//! Layout: a task's namespace is bound at `DATA_DIR/netns/TASK_ID`. The
//! runtime is given `/proc/DAEMON_PID/root/DATA_DIR/netns/TASK_ID`: the
//! daemon may run in a mount namespace of its own (a systemd unit with
//! private mounts, `ip netns exec` in the cluster tests), where its bind
//! mounts are invisible to containerd; through `/proc/PID/root` they are
//! not. After a daemon restart in such a namespace the bind is gone (an
//! empty file is left); the task's namespace lives on in its container and
//! is adopted through the container's process (`adopt_from`). A task on the
//! node's bridge network keeps its address in `DATA_DIR/netns/TASK_ID.bridge`
//! (one line, the address) until its namespace goes.

use super::bridge;
use super::driver::{DnsSocket, NetDriver, NetError, Probe, SyncOrder, SyncReport, TaskNetns};
use super::plan::{self, LinkKind, NetAction, NodeView, Observed, ObservedLink, TaskAttachment, TaskStep};
use super::Ipv4Net;
use shoal_netlink::{netns, ok_if_exists, Netlink};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one step inside a task's namespace may take.
const IN_NETNS_TIMEOUT_MS: u64 = 5_000;
/// How long `nft -f -` may take.
const NFT_TIMEOUT_MS: u64 = 10_000;
/// Backends whose tracked connections one sync deletes, at most (each is
/// one bounded `conntrack` run; the rest wait for their own timeouts).
const FORGET_FLOWS_MAX: usize = 64;
/// Time one sync spends deleting tracked connections, at most (the rest
/// time out on their own).
const FORGET_FLOWS_TOTAL_MS: u64 = 2_000;
/// `NUD_PERMANENT`: the entries Shoal writes.
const NUD_PERMANENT: u16 = 0x80;
/// Suffix of a task's lease file on the node's bridge network.
const LEASE_SUFFIX: &str = ".bridge";
/// Bytes of a lease file read, at most.
const LEASE_BYTES_MAX: u64 = 64;

/// The Linux data path of one daemon.
pub struct Linux {
    netns_dir: PathBuf,
    /// The ruleset this process last loaded (none after a start: loaded
    /// again) and the newest plan tried; held across a whole sync, so syncs
    /// never interleave and an older plan never follows a newer one.
    synced: Mutex<(Option<String>, SyncOrder)>,
    /// The generation of the plan each task's namespace was last built for
    /// (by this process); held across a build, a teardown or a prune, so a
    /// prune planned before a task started never removes its new namespace.
    tasks: Mutex<BTreeMap<String, u64>>,
}

impl Linux {
    /// Task namespaces go under `DATA_DIR/netns`.
    pub fn new(data_dir: &Path) -> Linux {
        Linux { netns_dir: data_dir.join("netns"), synced: Mutex::new((None, SyncOrder::default())), tasks: Mutex::new(BTreeMap::new()) }
    }

    fn netns_path(&self, task_id: &str) -> Result<PathBuf, NetError> {
        if task_id.is_empty() || !task_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(NetError::new("name a task's network namespace", format!("task id {task_id:?} is not alphanumeric")));
        }
        Ok(self.netns_dir.join(task_id))
    }

    fn lease_path(&self, task_id: &str) -> Result<PathBuf, NetError> {
        let mut p = self.netns_path(task_id)?.into_os_string();
        p.push(LEASE_SUFFIX);
        Ok(PathBuf::from(p))
    }

    /// The path the runtime (in another mount namespace, maybe) joins.
    fn runtime_path(path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", std::process::id(), path.display()))
    }

    /// Whether the namespace at `path` already has what `attachments` want
    /// (its `eth0` with the first address).
    fn has(path: &Path, attachments: &[TaskAttachment]) -> bool {
        let Some(first) = attachments.first().cloned() else { return false };
        netns::run_in(path, IN_NETNS_TIMEOUT_MS, move || -> Result<bool, shoal_netlink::Error> {
            let mut nl = Netlink::open()?;
            let Some(i) = nl.link_index("eth0")? else { return Ok(false) };
            Ok(nl.addrs(i)?.iter().any(|a| a.addr == first.addr.addr && a.prefix_len == first.addr.prefix))
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
    }

    fn build(&self, task_id: &str, path: &Path, attachments: &[TaskAttachment]) -> Result<(), NetError> {
        let what = || format!("build the network namespace of task {task_id}");
        let steps = plan::task_steps(task_id, attachments).map_err(|e| NetError::new(what(), e))?;
        let mut nl = Netlink::open().map_err(|e| NetError::new(what(), e))?;
        let index = |nl: &mut Netlink, name: &str| -> Result<u32, NetError> {
            nl.link_index(name).map_err(|e| NetError::new(what(), e))?.ok_or_else(|| NetError::new(what(), format!("no device {name}")))
        };
        for step in steps {
            match step {
                TaskStep::CreateNetns => netns::create(path).map_err(|e| NetError::new(what(), e))?,
                TaskStep::LoopbackUp => in_netns(path, what(), |nl| {
                    let lo = nl.link_index("lo")?.unwrap_or(1);
                    nl.set_up(lo)
                })?,
                TaskStep::AddVeth { host, peer, mtu } => {
                    // A leftover of an attempt that failed half-way goes first.
                    if let Some(i) = nl.link_index(&host).map_err(|e| NetError::new(what(), e))? {
                        nl.del_link(i).map_err(|e| NetError::new(what(), e))?;
                    }
                    nl.add_veth(&host, &peer, mtu).map_err(|e| NetError::new(what(), e))?;
                }
                TaskStep::SetMaster { link, bridge } => {
                    let l = index(&mut nl, &link)?;
                    let b = nl
                        .link_index(&bridge)
                        .map_err(|e| NetError::new(what(), e))?
                        .ok_or_else(|| NetError::new(what(), format!("the network's bridge {bridge} is not set up on this node yet")))?;
                    nl.set_master(l, b).map_err(|e| NetError::new(what(), e))?;
                }
                TaskStep::SetUp { link } => {
                    let l = index(&mut nl, &link)?;
                    nl.set_up(l).map_err(|e| NetError::new(what(), e))?;
                }
                TaskStep::MoveToNetns { link } => {
                    let l = index(&mut nl, &link)?;
                    let fd = netns::open(path).map_err(|e| NetError::new(what(), e))?;
                    nl.set_netns_fd(l, fd.as_fd()).map_err(|e| NetError::new(what(), e))?;
                }
                TaskStep::ConfigureInside { from, name, mac, addr } => in_netns(path, what(), move |nl| {
                    let i = nl.link_index(&from)?.or(nl.link_index(&name)?).ok_or_else(|| shoal_netlink::Error::NotFound {
                        op: format!("find {from} in the task's namespace"),
                        message: "no such device".into(),
                    })?;
                    nl.set_down(i)?;
                    nl.set_name(i, &name)?;
                    nl.set_mac(i, mac)?;
                    nl.ensure_addr(i, addr.addr, addr.prefix)?;
                    nl.set_up(i)
                })?,
                TaskStep::DefaultRoute { gateway } => in_netns(path, what(), move |nl| ok_if_exists(nl.add_default_route(gateway)))?,
            }
        }
        Ok(())
    }

    fn observe(nl: &mut Netlink) -> Result<(Observed, Vec<(String, u32)>), shoal_netlink::Error> {
        let links = nl.links()?;
        let name_of: std::collections::BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        let mut o = Observed::default();
        let mut ours = Vec::new();
        for l in links.into_iter().filter(|l| plan::is_ours(&l.name)) {
            let kind = match (l.kind.as_deref(), l.vxlan) {
                (Some("bridge"), _) => LinkKind::Bridge,
                (Some("vxlan"), Some(v)) => {
                    LinkKind::Vxlan { vni: v.vni, local: v.local.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), port: v.port }
                }
                (Some("veth"), _) => LinkKind::Veth,
                _ => LinkKind::Other,
            };
            if kind == LinkKind::Bridge {
                let addrs = nl.addrs(l.index)?.into_iter().map(|a| Ipv4Net { addr: a.addr, prefix: a.prefix_len }).collect();
                o.addrs.insert(l.name.clone(), addrs);
            }
            if matches!(kind, LinkKind::Vxlan { .. }) {
                let fdb =
                    nl.fdb(l.index)?.into_iter().filter(|n| n.state & NUD_PERMANENT != 0).filter_map(|n| Some((n.mac?, n.dst?))).collect();
                let neigh = nl
                    .neighs(l.index)?
                    .into_iter()
                    .filter(|n| n.state & NUD_PERMANENT != 0)
                    .filter_map(|n| Some((n.dst?, n.mac?)))
                    .collect();
                o.fdb.insert(l.name.clone(), fdb);
                o.neigh.insert(l.name.clone(), neigh);
            }
            ours.push((l.name.clone(), l.index));
            o.links.push(ObservedLink {
                name: l.name,
                kind,
                master: l.master.and_then(|m| name_of.get(&m).cloned()),
                up: l.up,
                mtu: l.mtu,
            });
        }
        Ok((o, ours))
    }

    /// Whether some device is a port of bridge `name`.
    fn has_ports(nl: &mut Netlink, name: &str) -> Result<bool, shoal_netlink::Error> {
        let Some(b) = nl.link_index(name)? else { return Ok(false) };
        Ok(nl.links()?.iter().any(|l| l.master == Some(b)))
    }

    /// Refuses a bridge subnet that overlaps an address of a device Shoal
    /// does not own (the host's LAN, Docker's `docker0`...).
    fn check_bridge_subnet(nl: &mut Netlink, subnet: Ipv4Net) -> Result<(), String> {
        let e = |e: shoal_netlink::Error| e.to_string();
        for l in nl.links().map_err(e)?.into_iter().filter(|l| !plan::is_ours(&l.name)) {
            if let Some(a) =
                nl.addrs(l.index).map_err(e)?.into_iter().find(|a| subnet.overlaps(Ipv4Net { addr: a.addr, prefix: a.prefix_len }))
            {
                return Err(format!(
                    "the bridge subnet {subnet} overlaps {}/{} on {}; choose another with `shoal daemon --bridge-subnet CIDR`",
                    a.addr, a.prefix_len, l.name
                ));
            }
        }
        Ok(())
    }

    fn apply(nl: &mut Netlink, actions: &[NetAction]) -> Result<(), shoal_netlink::Error> {
        let index = |nl: &mut Netlink, name: &str| -> Result<u32, shoal_netlink::Error> {
            nl.link_index(name)?
                .ok_or_else(|| shoal_netlink::Error::NotFound { op: format!("find {name}"), message: "no such device".into() })
        };
        for a in actions {
            match a {
                NetAction::DelLink { name } => {
                    if let Some(i) = nl.link_index(name)? {
                        nl.del_link(i)?;
                    }
                }
                NetAction::AddBridge { name, mtu, mac } => {
                    nl.add_bridge(name, *mtu)?;
                    let i = index(nl, name)?;
                    nl.set_mac(i, *mac)?;
                }
                NetAction::AddVxlan { name, vni, local, port, mtu } => nl.add_vxlan(name, *vni, *local, *port, *mtu)?,
                NetAction::SetMaster { link, bridge } => {
                    let (l, b) = (index(nl, link)?, index(nl, bridge)?);
                    nl.set_master(l, b)?;
                }
                NetAction::SetMtu { link, mtu } => {
                    let l = index(nl, link)?;
                    nl.set_mtu(l, *mtu)?;
                }
                NetAction::AddAddr { link, addr } => {
                    let l = index(nl, link)?;
                    nl.ensure_addr(l, addr.addr, addr.prefix)?;
                }
                NetAction::DelAddr { link, addr } => {
                    let l = index(nl, link)?;
                    nl.del_addr(l, addr.addr, addr.prefix)?;
                }
                NetAction::SetUp { link } => {
                    let l = index(nl, link)?;
                    nl.set_up(l)?;
                }
                NetAction::ReplaceFdb { vxlan, mac, dst } => {
                    let v = index(nl, vxlan)?;
                    nl.replace_fdb(v, *mac, *dst)?;
                }
                NetAction::DelFdb { vxlan, mac, dst } => {
                    let v = index(nl, vxlan)?;
                    nl.del_fdb(v, *mac, *dst)?;
                }
                NetAction::ReplaceNeigh { vxlan, ip, mac } => {
                    let v = index(nl, vxlan)?;
                    nl.replace_neigh(v, *ip, *mac)?;
                }
                NetAction::DelNeigh { vxlan, ip, .. } => {
                    let v = index(nl, vxlan)?;
                    nl.del_neigh(v, *ip)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `f` with a netlink socket inside the namespace at `path`.
fn in_netns<F>(path: &Path, what: String, f: F) -> Result<(), NetError>
where
    F: FnOnce(&mut Netlink) -> Result<(), shoal_netlink::Error> + Send + 'static,
{
    let r = netns::run_in(path, IN_NETNS_TIMEOUT_MS, move || Netlink::open().and_then(|mut nl| f(&mut nl)));
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) | Err(e) => Err(NetError::new(what, e)),
    }
}

/// Loads a ruleset with `nft -f -`, bounded by [`NFT_TIMEOUT_MS`].
pub fn nft_load(ruleset: &str) -> Result<(), NetError> {
    let what = "load the nftables ruleset (table ip shoal)";
    match run_bounded("nft", &["-f", "-"], ruleset.as_bytes(), what, "nftables")? {
        (true, _) => Ok(()),
        (false, err) => Err(NetError::new(what, format!("nft failed: {}", err.trim()))),
    }
}

/// Deletes the connection-tracking entries whose replies come from
/// `backend` (connections to it, translated through a VIP or a published
/// port or not): once it left the rules, its flows must not linger, UDP ones
/// above all (they would stick to a dead task while traffic keeps them
/// alive). Returns the entries deleted.
pub fn conntrack_forget(backend: Ipv4Addr) -> Result<usize, NetError> {
    let what = format!("delete the tracked connections of {backend}");
    let (ok, err) = run_bounded("conntrack", &["-D", "-r", &backend.to_string()], b"", &what, "conntrack")?;
    // "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted." (exit 1 when 0).
    let deleted = err.split_whitespace().rev().nth(5).and_then(|n| n.parse().ok());
    match (ok, deleted) {
        (_, Some(n)) => Ok(n),
        (false, None) => Err(NetError::new(&what, format!("conntrack failed: {}", err.trim()))),
        (true, None) => Ok(0),
    }
}

/// Runs `program args` with `input` on its stdin, bounded by
/// [`NFT_TIMEOUT_MS`]: (exit status was success, its stderr).
fn run_bounded(program: &str, args: &[&str], input: &[u8], what: &str, package: &str) -> Result<(bool, String), NetError> {
    let mut child =
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| {
            NetError::new(what, format!("cannot run {program} ({e}); install {package} (Debian: apt-get install {package})"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| NetError::new(what, format!("writing to {program}: {e}")))?;
    }
    let deadline = Instant::now() + Duration::from_millis(NFT_TIMEOUT_MS);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Ok((status.success(), err));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetError::new(what, format!("{program} did not finish within {NFT_TIMEOUT_MS} ms")));
            }
            Err(e) => return Err(NetError::new(what, e)),
        }
    }
}

/// The probe's device names (at most 15 bytes) and VXLAN VNI (24 bits,
/// never 0) for process `pid`: bridge, veth, veth peer, VXLAN.
fn probe_names(pid: u32) -> (String, String, String, String, u32) {
    let n = pid % 1_000_000_000;
    (format!("sb{n}"), format!("sv{n}"), format!("st{n}"), format!("sx{n}"), 1 + pid % 0x00ff_fffe)
}

impl Linux {
    /// [`NetDriver::setup_task`]'s work (the caller holds `tasks`).
    fn build_task(&self, task_id: &str, attachments: &[TaskAttachment]) -> Result<TaskNetns, NetError> {
        let path = self.netns_path(task_id)?;
        std::fs::create_dir_all(&self.netns_dir).map_err(|e| NetError::io(format!("create {}", self.netns_dir.display()), &e))?;
        if netns::exists(&path) && Self::has(&path, attachments) {
            return Ok(TaskNetns { runtime_path: Self::runtime_path(&path), adopted: true });
        }
        // Anything half-built goes, then it is built whole.
        self.remove_task(task_id)?;
        // The lease first: a namespace never holds a bridge address the next start does not read back.
        if let Some(a) = attachments.iter().find(|a| a.network_id == bridge::NETWORK_ID) {
            let p = self.lease_path(task_id)?;
            std::fs::write(&p, format!("{}\n", a.addr.addr)).map_err(|e| NetError::io(format!("write {}", p.display()), &e))?;
        }
        if let Err(e) = self.build(task_id, &path, attachments) {
            // Not `teardown_task`: the caller holds `tasks` (a second lock would never return).
            let _ = self.remove_task(task_id);
            return Err(e);
        }
        Ok(TaskNetns { runtime_path: Self::runtime_path(&path), adopted: false })
    }

    /// [`NetDriver::teardown_task`]'s work (the caller holds `tasks`).
    fn remove_task(&self, task_id: &str) -> Result<(), NetError> {
        let path = self.netns_path(task_id)?;
        let what = || format!("remove the network namespace of task {task_id}");
        let mut nl = Netlink::open().map_err(|e| NetError::new(what(), e))?;
        for i in 0..plan::TASK_NETWORKS_MAX {
            // Deleting the host end of a veth deletes both ends.
            if let Some(idx) = nl.link_index(&plan::veth_name(task_id, i)).map_err(|e| NetError::new(what(), e))? {
                // Gone meanwhile (another teardown of the same task): as good as deleted.
                match nl.del_link(idx) {
                    Err(e) if !e.is_not_found() => return Err(NetError::new(what(), e)),
                    _ => {}
                }
            }
        }
        if netns::exists(&path) || path.exists() {
            match netns::remove(&path) {
                Err(e) if !e.is_not_found() => return Err(NetError::new(what(), e)),
                _ => {}
            }
        }
        // The lease goes last: its address is free once nothing holds it.
        match std::fs::remove_file(self.lease_path(task_id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::new(what(), e)),
            _ => Ok(()),
        }
    }
}

impl NetDriver for Linux {
    fn probe(&self) -> Probe {
        let mut p = Probe::default();
        match Netlink::open() {
            Ok(mut nl) => {
                let mut try_make = |name: &str, make: &dyn Fn(&mut Netlink) -> shoal_netlink::Result<()>, what: &str| -> bool {
                    if let Ok(Some(i)) = nl.link_index(name) {
                        let _ = nl.del_link(i);
                    }
                    match make(&mut nl) {
                        Ok(()) => {
                            if let Ok(Some(i)) = nl.link_index(name) {
                                let _ = nl.del_link(i);
                            }
                            true
                        }
                        Err(e) => {
                            p.problems.push(format!("{what} devices cannot be made: {e}"));
                            false
                        }
                    }
                };
                // Names and VNI unique to this process: daemons that start at once in one
                // namespace (parallel tests) probed with the same names, and a second VXLAN
                // device with the same VNI and port is refused ("file exists"), so overlays
                // were reported impossible (found in CI).
                let (bridge, veth, peer, vxlan, vni) = probe_names(std::process::id());
                p.bridge = try_make(&bridge, &|nl| nl.add_bridge(&bridge, 1500), "bridge");
                p.veth = try_make(&veth, &|nl| nl.add_veth(&veth, &peer, 1500), "veth");
                p.vxlan = try_make(
                    &vxlan,
                    &|nl| nl.add_vxlan(&vxlan, vni, std::net::Ipv4Addr::LOCALHOST, 47_890, 1450),
                    "VXLAN (kernel option CONFIG_VXLAN)",
                );
            }
            Err(e) => p.problems.push(format!("no netlink socket: {e}")),
        }
        match Command::new("nft").args(["list", "tables"]).stdout(Stdio::null()).stderr(Stdio::piped()).output() {
            Ok(o) if o.status.success() => p.nftables = true,
            Ok(o) => p.problems.push(format!("nft cannot list tables: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => p.problems.push(format!("nft is not available ({e}); install nftables")),
        }
        match std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun") {
            Ok(_) => p.tun = true,
            Err(e) => p.problems.push(format!(
                "TUN devices cannot be made (/dev/net/tun: {e}; kernel option CONFIG_TUN): encrypted overlay networks carry nothing between nodes here"
            )),
        }
        p
    }

    fn sync_node(&self, generation: u64, view: &NodeView, ruleset: &str) -> Result<SyncReport, NetError> {
        let what = "set up this node's overlay networks";
        let mut synced = self.synced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, order) = &mut *synced;
        if !order.admit(generation) {
            return Ok(SyncReport { stale: true, ..SyncReport::default() });
        }
        if !view.networks.is_empty() || view.bridge.is_some() {
            netns::set_sysctl("net/ipv4/ip_forward", "1").map_err(|e| NetError::new(what, e))?;
        }
        let mut nl = Netlink::open().map_err(|e| NetError::new(what, e))?;
        let (observed, _) = Self::observe(&mut nl).map_err(|e| NetError::new(what, e))?;
        let mut actions = plan::diff(view, &observed);
        let adds_bridge = actions.iter().any(|a| matches!(a, NetAction::AddBridge { name, .. } if name == bridge::DEVICE));
        if let (Some(b), true) = (&view.bridge, adds_bridge) {
            Self::check_bridge_subnet(&mut nl, b.subnet).map_err(|e| NetError::new(what, e))?;
        }
        // The node's bridge stays while tasks are on it (of another daemon sharing this namespace, or
        // ours not yet pruned): deleting it would cut them off.
        if Self::has_ports(&mut nl, bridge::DEVICE).map_err(|e| NetError::new(what, e))? {
            actions.retain(|a| !matches!(a, NetAction::DelLink { name } if name == bridge::DEVICE));
        }
        Self::apply(&mut nl, &actions).map_err(|e| NetError::new(what, e))?;
        if view.bridge.is_some() {
            // Published ports reached from the node itself (127.0.0.1) are translated onto the bridge
            // (every sync: a sync that failed after making the bridge must not leave it unset).
            netns::set_sysctl(&format!("net/ipv4/conf/{}/route_localnet", bridge::DEVICE), "1").map_err(|e| NetError::new(what, e))?;
        }
        let write = last.as_deref() != Some(ruleset);
        if write {
            nft_load(ruleset)?;
            *last = Some(ruleset.to_string());
        }
        Ok(SyncReport { changes: actions.len(), ruleset_written: write, stale: false })
    }

    fn leases(&self) -> BTreeMap<String, Ipv4Addr> {
        let Ok(entries) = std::fs::read_dir(&self.netns_dir) else { return BTreeMap::new() };
        let mut out = BTreeMap::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(task) = name.strip_suffix(LEASE_SUFFIX).filter(|t| self.netns_path(t).is_ok()) else { continue };
            let mut text = String::new();
            let read = std::fs::File::open(e.path())
                .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, LEASE_BYTES_MAX), &mut text));
            match read.ok().and_then(|_| text.trim().parse::<Ipv4Addr>().ok()) {
                Some(ip) => {
                    out.insert(task.to_string(), ip);
                }
                None => crate::log!("WARN", "networking: ignoring the unreadable lease {}", e.path().display()),
            }
        }
        out
    }

    fn adopt(&self, task_id: &str, pid: u32) -> Result<bool, NetError> {
        let path = self.netns_path(task_id)?;
        // Only a task that had a namespace (its file is there) and lost the bind.
        if !path.exists() || netns::exists(&path) {
            return Ok(false);
        }
        netns::bind_existing(Path::new(&format!("/proc/{pid}/ns/net")), &path)
            .map_err(|e| NetError::new(format!("adopt the network namespace of task {task_id}"), e))?;
        Ok(true)
    }

    fn bridge_clash(&self, subnet: Ipv4Net) -> Option<String> {
        let mut nl = Netlink::open().ok()?;
        Self::check_bridge_subnet(&mut nl, subnet).err()
    }

    fn forget_flows(&self, backends: &[Ipv4Addr]) -> Result<usize, NetError> {
        // Bounded in all: the sync holds the node's next syncs meanwhile.
        let deadline = Instant::now() + Duration::from_millis(FORGET_FLOWS_TOTAL_MS);
        let mut deleted = 0;
        for b in backends.iter().take(FORGET_FLOWS_MAX) {
            if Instant::now() >= deadline {
                break;
            }
            deleted += conntrack_forget(*b)?;
        }
        Ok(deleted)
    }

    fn tunnel(&self, addr: Ipv4Net, mtu: u32, open: bool) -> Result<Option<std::fs::File>, NetError> {
        let r = if open {
            super::tun::open(plan::TUN_DEVICE, addr, mtu).map(Some)
        } else {
            super::tun::configure(plan::TUN_DEVICE, addr, mtu).map(|()| None)
        };
        r.map_err(|e| NetError::new("set up the tunnel device", e))
    }

    fn open_dns(&self, task_id: &str) -> Result<DnsSocket, NetError> {
        let path = self.netns_path(task_id)?;
        let what = || format!("open the embedded resolver's socket in task {task_id}");
        let r = netns::run_in(&path, IN_NETNS_TIMEOUT_MS, || std::net::UdpSocket::bind((super::files::EMBEDDED_DNS, 53)));
        match r {
            Ok(Ok(s)) => Ok(DnsSocket::New(s)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(DnsSocket::Busy),
            Ok(Err(e)) => Err(NetError::new(what(), e)),
            Err(e) => Err(NetError::new(what(), e)),
        }
    }

    fn setup_task(&self, generation: u64, task_id: &str, attachments: &[TaskAttachment]) -> Result<TaskNetns, NetError> {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.insert(task_id.to_string(), generation);
        self.build_task(task_id, attachments)
    }

    fn teardown_task(&self, task_id: &str) -> Result<(), NetError> {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.remove_task(task_id)?;
        tasks.remove(task_id);
        Ok(())
    }

    fn prune_tasks(&self, generation: u64, keep: &std::collections::BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = match std::fs::read_dir(&self.netns_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetError::new(format!("list {}", self.netns_dir.display()), e)),
        };
        let mut gone = Vec::new();
        let names: BTreeSet<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .map(|n| n.strip_suffix(LEASE_SUFFIX).map_or(n.clone(), str::to_string))
            .collect();
        for name in names {
            // A namespace built for a plan newer than `keep`'s (a task that started meanwhile) stays.
            let newer = tasks.get(&name).is_some_and(|g| *g > generation);
            if !keep.contains(&name) && !newer && self.netns_path(&name).is_ok() {
                self.remove_task(&name)?;
                tasks.remove(&name);
                gone.push(name);
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    //! Against this machine's kernel, inside a throwaway namespace standing
    //! in for the node (root only; `SHOAL_REQUIRE_NETNS=1` makes a skip a
    //! failure). The daemon's own namespace is never touched.
    use super::*;
    use crate::network::nft;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    #[test]
    fn probe_names_fit_the_kernel_and_differ_between_processes() {
        for pid in [1, 4_194_304, u32::MAX] {
            let (b, v, p, x, vni) = probe_names(pid);
            for name in [&b, &v, &p, &x] {
                assert!(name.len() <= 15, "{name}");
            }
            assert!((1..0x0100_0000).contains(&vni), "{vni}");
        }
        assert_ne!(probe_names(100).3, probe_names(101).3);
        assert_ne!(probe_names(100).4, probe_names(101).4);
    }

    fn skip() -> bool {
        if std::env::var("SHOAL_UNDER_QEMU").is_ok() {
            return true;
        }
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            assert!(std::env::var("SHOAL_REQUIRE_NETNS").is_err(), "SHOAL_REQUIRE_NETNS=1 but not root");
            eprintln!("skipped: not root");
        }
        !root
    }

    /// This machine's kernel has what the data path needs, TUN included; the
    /// probe, run in a fresh namespace, leaves no device behind there.
    #[test]
    fn the_probe_finds_this_kernels_pieces_and_cleans_up() {
        if skip() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("shoal-linux-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let node = dir.join("node");
        netns::create(&node).unwrap();
        let d = Linux::new(&dir);
        let result = netns::run_in(&node, 30_000, move || {
            let p = d.probe();
            let links = Netlink::open().and_then(|mut nl| nl.links()).map(|l| l.into_iter().map(|l| l.name).collect::<Vec<_>>());
            (p, links)
        });
        let _ = netns::remove(&node);
        let _ = std::fs::remove_dir_all(&dir);
        let (p, links) = result.unwrap();
        assert!(p.overlay() && p.tun, "{p:?}");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(links.unwrap(), ["lo"], "the probe's devices are gone");
    }

    /// Two tasks on one overlay network on a node: each in its own namespace,
    /// both serving the same port, reaching each other; a second sync
    /// changes nothing; teardown leaves nothing behind.
    #[test]
    fn tasks_get_namespaces_on_a_bridge_and_reach_each_other() {
        if skip() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("shoal-linux-net-{}", std::process::id()));
        let node = dir.join("node");
        std::fs::create_dir_all(&dir).unwrap();
        netns::create(&node).unwrap();
        let d = std::sync::Arc::new(Linux::new(&dir));
        let node2 = node.clone();
        let d2 = d.clone();
        let result = netns::run_in(&node, 30_000, move || -> Result<(), String> {
            let mut nl = Netlink::open().map_err(|e| e.to_string())?;
            let lo = nl.link_index("lo").map_err(|e| e.to_string())?.unwrap();
            nl.set_up(lo).map_err(|e| e.to_string())?;
            nl.add_addr(lo, Ipv4Addr::new(192, 168, 77, 1), 32).map_err(|e| e.to_string())?;
            let net = plan::NetView {
                id: "nettestnettest1".into(),
                vni: 4100,
                subnet: Ipv4Net::parse("10.77.0.0/24").unwrap(),
                gateway: Ipv4Addr::new(10, 77, 0, 1),
                node_addr: Ipv4Addr::new(10, 77, 0, 2),
                mtu: 1450,
                internal: false,
                remote: vec![(Ipv4Addr::new(10, 77, 0, 9), Ipv4Addr::new(192, 168, 77, 2))],
                vxlan_local: None,
                vips: vec![Ipv4Addr::new(10, 77, 0, 3)],
            };
            let view = NodeView { underlay: Ipv4Addr::new(192, 168, 77, 1), vxlan_port: 4789, networks: vec![net], bridge: None };
            let first =
                d2.sync_node(1, &view, "table ip shoal\ndelete table ip shoal\ntable ip shoal {\n}\n").map_err(|e| e.to_string())?;
            if first.changes == 0 || !first.ruleset_written {
                return Err(format!("first sync did nothing: {first:?}"));
            }
            let again =
                d2.sync_node(2, &view, "table ip shoal\ndelete table ip shoal\ntable ip shoal {\n}\n").map_err(|e| e.to_string())?;
            if again != SyncReport::default() {
                return Err(format!("a second sync changed things: {again:?}"));
            }
            // An older plan (a task's start job planned before the network came) is skipped: the
            // bridge it lacks stays.
            let empty = NodeView { underlay: Ipv4Addr::new(192, 168, 77, 1), vxlan_port: 4789, networks: vec![], bridge: None };
            let stale = d2.sync_node(1, &empty, "table ip shoal\ndelete table ip shoal\n").map_err(|e| e.to_string())?;
            if !stale.stale || stale.changes != 0 {
                return Err(format!("an older plan was synced after a newer one: {stale:?}"));
            }
            if Netlink::open().and_then(|mut nl| nl.link_index(&plan::bridge_name("nettestnettest1"))).map_err(|e| e.to_string())?.is_none()
            {
                return Err("an older plan deleted the newer one's bridge".into());
            }
            let att = |ip: [u8; 4]| TaskAttachment {
                network_id: "nettestnettest1".into(),
                addr: Ipv4Net { addr: Ipv4Addr::from(ip), prefix: 24 },
                gateway: Ipv4Addr::new(10, 77, 0, 1),
                mtu: 1450,
                internal: false,
            };
            let a = d2.setup_task(1, "taska", &[att([10, 77, 0, 5])]).map_err(|e| e.to_string())?;
            let b = d2.setup_task(1, "taskb", &[att([10, 77, 0, 6])]).map_err(|e| e.to_string())?;
            if a.adopted || b.adopted {
                return Err("fresh namespaces reported as adopted".into());
            }
            if !d2.setup_task(1, "taska", &[att([10, 77, 0, 5])]).map_err(|e| e.to_string())?.adopted {
                return Err("an existing namespace was rebuilt, not adopted".into());
            }
            // Both tasks listen on port 80; each reaches the other through the bridge.
            let pa = d2.netns_path("taska").unwrap();
            let pb = d2.netns_path("taskb").unwrap();
            let listener =
                netns::run_in(&pb, 5_000, || TcpListener::bind("0.0.0.0:80").map_err(|e| e.to_string())).map_err(|e| e.to_string())??;
            let listener_a =
                netns::run_in(&pa, 5_000, || TcpListener::bind("0.0.0.0:80").map_err(|e| e.to_string())).map_err(|e| e.to_string())??;
            drop(listener_a);
            netns::run_in(&pa, 5_000, || {
                TcpStream::connect_timeout(&"10.77.0.6:80".parse().unwrap(), Duration::from_secs(3)).map(|_| ()).map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string())??;
            listener.accept().map_err(|e| e.to_string())?;
            // The node is reached through the default route (an address outside the subnet).
            let node_listener = TcpListener::bind("192.168.77.1:91").map_err(|e| e.to_string())?;
            netns::run_in(&pa, 5_000, || {
                TcpStream::connect_timeout(&"192.168.77.1:91".parse().unwrap(), Duration::from_secs(3))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string())??;
            node_listener.accept().map_err(|e| e.to_string())?;
            // Through the VIP: the node translates it to task b (the rules of `nft::ruleset`).
            let rules = nft::Rules {
                networks: vec![nft::NetRules {
                    bridge: plan::bridge_name("nettestnettest1"),
                    subnet: Ipv4Net::parse("10.77.0.0/24").unwrap(),
                    node_addr: Ipv4Addr::new(10, 77, 0, 2),
                    internal: false,
                }],
                encrypted_vnis: Vec::new(),
                vips: vec![nft::Vip {
                    bridge: plan::bridge_name("nettestnettest1"),
                    vip: Ipv4Addr::new(10, 77, 0, 3),
                    backends: vec![Ipv4Addr::new(10, 77, 0, 6)],
                }],
                published: vec![],
                vxlan_port: 4789,
                vxlan_peers: vec![],
                bridge: None,
            };
            d2.sync_node(3, &view, &nft::ruleset(&rules)).map_err(|e| e.to_string())?;
            netns::run_in(&pa, 5_000, || {
                TcpStream::connect_timeout(&"10.77.0.3:80".parse().unwrap(), Duration::from_secs(3))
                    .map(|_| ())
                    .map_err(|e| format!("via the VIP: {e}"))
            })
            .map_err(|e| e.to_string())??;
            listener.accept().map_err(|e| e.to_string())?;
            d2.teardown_task("taska").map_err(|e| e.to_string())?;
            d2.teardown_task("taskb").map_err(|e| e.to_string())?;
            let mut nl = Netlink::open().map_err(|e| e.to_string())?;
            if nl.links().map_err(|e| e.to_string())?.iter().any(|l| l.name.starts_with(plan::VETH_PREFIX)) {
                return Err("veths left after teardown".into());
            }
            // Nothing wanted any more: bridge and VXLAN device go.
            d2.sync_node(4, &empty, "table ip shoal\ndelete table ip shoal\n").map_err(|e| e.to_string())?;
            if nl.links().map_err(|e| e.to_string())?.iter().any(|l| plan::is_ours(&l.name)) {
                return Err("devices left after the last network went".into());
            }
            Ok(())
        });
        let _ = netns::remove(&node2);
        let _ = std::fs::remove_dir_all(&dir);
        result.expect("ran in the node namespace").expect("the data path works");
        assert!(!d.netns_path("taska").unwrap().exists());
    }

    /// Connects from inside namespace `ns` (or the node's, when `None`) to `to`.
    fn connect_from(ns: Option<&Path>, to: &str) -> Result<(), String> {
        let to: std::net::SocketAddr = to.parse().map_err(|e| format!("{e}"))?;
        let go = move || TcpStream::connect_timeout(&to, Duration::from_secs(3)).map(|_| ()).map_err(|e| format!("connect to {to}: {e}"));
        match ns {
            Some(p) => netns::run_in(p, 5_000, go).map_err(|e| e.to_string())?,
            None => go(),
        }
    }

    /// Tasks on the node's bridge network: each in its own namespace on
    /// `shoal0`, both on port 80, reaching each other and the node; a
    /// host-mode port translated to one of them from outside and from the
    /// node itself; leases read back by a restarted driver; the bridge kept
    /// while a task is on it and gone after.
    #[test]
    fn bridge_tasks_get_namespaces_leases_and_host_ports() {
        if skip() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("shoal-linux-bridge-{}", std::process::id()));
        let node = dir.join("node");
        std::fs::create_dir_all(&dir).unwrap();
        netns::create(&node).unwrap();
        let dir2 = dir.clone();
        let result = netns::run_in(&node, 30_000, move || -> Result<(), String> {
            let e = |e: NetError| e.to_string();
            let d = Linux::new(&dir2);
            let mut nl = Netlink::open().map_err(|e| e.to_string())?;
            let lo = nl.link_index("lo").map_err(|e| e.to_string())?.unwrap();
            nl.set_up(lo).map_err(|e| e.to_string())?;
            nl.add_addr(lo, Ipv4Addr::new(192, 168, 78, 1), 32).map_err(|e| e.to_string())?;
            let b = bridge::Bridge::new(Ipv4Net::parse("172.29.0.0/16").unwrap()).unwrap();
            let view = NodeView { underlay: Ipv4Addr::new(192, 168, 78, 1), vxlan_port: 4789, networks: vec![], bridge: Some(b) };
            let att = |last: u8| TaskAttachment {
                network_id: bridge::NETWORK_ID.into(),
                addr: b.subnet.with_addr(Ipv4Addr::new(172, 29, 0, last)),
                gateway: b.gateway,
                mtu: bridge::MTU,
                internal: false,
            };
            let rules = |backend: u8| nft::Rules {
                published: vec![nft::Published {
                    proto: nft::Proto::Tcp,
                    port: 8080,
                    backends: vec![(Ipv4Addr::new(172, 29, 0, backend), 80)],
                }],
                vxlan_port: 4789,
                bridge: Some(nft::NetRules { bridge: bridge::DEVICE.into(), subnet: b.subnet, node_addr: b.gateway, internal: false }),
                ..nft::Rules::default()
            };
            d.sync_node(1, &view, &nft::ruleset(&rules(5))).map_err(e)?;
            d.setup_task(1, "taska", &[att(5)]).map_err(e)?;
            d.setup_task(1, "taskb", &[att(6)]).map_err(e)?;
            let (pa, pb) = (d.netns_path("taska").unwrap(), d.netns_path("taskb").unwrap());
            let listen = |p: &Path| {
                netns::run_in(p, 5_000, || TcpListener::bind("0.0.0.0:80").map_err(|e| e.to_string())).map_err(|e| e.to_string())
            };
            let (la, lb) = (listen(&pa)??, listen(&pb)??);
            // Each reaches the other on its own address, and the node through the gateway.
            connect_from(Some(&pa), "172.29.0.6:80")?;
            lb.accept().map_err(|e| e.to_string())?;
            let node_listener = TcpListener::bind("192.168.78.1:91").map_err(|e| e.to_string())?;
            connect_from(Some(&pb), "192.168.78.1:91")?;
            node_listener.accept().map_err(|e| e.to_string())?;
            // The host-mode port: from the node's address and from the node's loopback.
            connect_from(None, "192.168.78.1:8080")?;
            la.accept().map_err(|e| e.to_string())?;
            connect_from(None, "127.0.0.1:8080")?;
            la.accept().map_err(|e| e.to_string())?;
            // From the other task on the bridge (hairpin through the node).
            connect_from(Some(&pb), "192.168.78.1:8080")?;
            la.accept().map_err(|e| e.to_string())?;
            // A restarted daemon reads the leases back and adopts the namespaces as they are.
            let again = Linux::new(&dir2);
            let leases = again.leases();
            let want: BTreeMap<String, Ipv4Addr> =
                [("taska".to_string(), Ipv4Addr::new(172, 29, 0, 5)), ("taskb".to_string(), Ipv4Addr::new(172, 29, 0, 6))].into();
            if leases != want {
                return Err(format!("leases read back: {leases:?}"));
            }
            if !again.setup_task(1, "taska", &[att(5)]).map_err(e)?.adopted {
                return Err("a live bridge task's namespace was rebuilt".into());
            }
            let r = again.sync_node(1, &view, &nft::ruleset(&rules(5))).map_err(e)?;
            if r.changes != 0 {
                return Err(format!("a restarted daemon changed the bridge: {r:?}"));
            }
            // Task a stops: its namespace and lease go; while b is on the bridge it stays even if unwanted.
            // A prune planned before task a's start (generation 0) leaves its namespace alone.
            let early = again.prune_tasks(0, &["taskb".to_string()].into()).map_err(e)?;
            if !early.is_empty() {
                return Err(format!("a prune older than a task's start removed {early:?}"));
            }
            let pruned = again.prune_tasks(1, &["taskb".to_string()].into()).map_err(e)?;
            if pruned != ["taska"] || again.leases().len() != 1 {
                return Err(format!("pruned {pruned:?}, leases left {:?}", again.leases()));
            }
            let empty = NodeView { bridge: None, ..view.clone() };
            again.sync_node(2, &empty, "table ip shoal\ndelete table ip shoal\n").map_err(e)?;
            if nl.link_index(bridge::DEVICE).map_err(|e| e.to_string())?.is_none() {
                return Err("the bridge went while a task was on it".into());
            }
            again.teardown_task("taskb").map_err(e)?;
            again.sync_node(3, &empty, "table ip shoal\ndelete table ip shoal\n").map_err(e)?;
            if nl.link_index(bridge::DEVICE).map_err(|e| e.to_string())?.is_some() {
                return Err("the bridge stayed with nothing on it".into());
            }
            if !again.leases().is_empty() {
                return Err("a lease outlived its namespace".into());
            }
            Ok(())
        });
        let _ = netns::remove(&node);
        let _ = std::fs::remove_dir_all(&dir);
        result.expect("ran in the node namespace").expect("the bridge data path works");
    }
}
