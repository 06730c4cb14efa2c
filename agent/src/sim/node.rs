//! One simulated machine: its disk, container runtime, data directory,
//! key and (while it is up) its real [`Daemon`], plus the [`SimIo`] that
//! daemon sees the world through.
//!
//! Owns [`SimNode`] and [`Shared`], the world's state that every node's
//! `SimIo` reaches: the clock, the network, runtime jobs, reply waits and
//! the deliveries waiting for the loops. A node's process can die in two
//! ways: `kill` (the process ends, the kernel closes its sockets, the disk
//! keeps every write) and `power_cut` (unsynced writes are lost, containers
//! lose their processes, peers hear nothing). Either way the incarnation
//! number moves on, and nothing the dead process asked for reaches the next.

use super::net::{Delivery, Inc, Net};
use crate::daemon::io::{Dial, Io, Listening, ReadJob, ReplyDone, RuntimeJob};
use crate::daemon::links::{ConnIds, ListenKeys};
use crate::daemon::sim_hooks::{self, Parts};
use crate::daemon::{self, Config, Daemon, Event};
use crate::runtime::fake::Fake;
use crate::runtime::Runtime;
use async_channel::Receiver;
use shoal_manager::sim_disk::SimDisk;
use shoal_manager::store::{Bootstrap, Store};
use shoal_shared::api::Reply;
use shoal_shared::clock::{Clock, SimClock, UnixNanos};
use shoal_shared::noise::key::{self, NodeKey};
use shoal_shared::rng::Rng;
use shoal_shared::types::NodeDescription;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The wall clock's start: 2026-12-01T00:00:00Z.
const WALL_START_UNIX_NANOS: UnixNanos = 1_796_083_200 * 1_000_000_000;

/// A runtime call or file read in flight.
struct Job {
    due_ms: u64,
    node: usize,
    inc: Inc,
    kind: JobKind,
}

enum JobKind {
    Runtime(RuntimeJob),
    Read(ReadJob),
}

/// A reply some handler will send, with its deadline.
struct Wait {
    node: usize,
    inc: Inc,
    rx: Receiver<Reply>,
    deadline_ms: u64,
    done: ReplyDone,
}

/// What every node's `SimIo` shares with the world.
pub(crate) struct Shared {
    pub(crate) now_ms: u64,
    pub(crate) net: Net,
    /// The network's and the runtime's randomness (latencies).
    pub(crate) rng: Rng,
    jobs: Vec<Job>,
    waits: Vec<Wait>,
    dials: Vec<(usize, Inc, Dial)>,
    /// Events waiting for their loops.
    pub(crate) out: Vec<Delivery>,
    pub(crate) runtimes: Vec<Arc<Fake>>,
}

impl Shared {
    pub(crate) fn new(seed: u64) -> Shared {
        Shared {
            now_ms: 0,
            net: Net::default(),
            rng: Rng::from_seed(seed),
            jobs: Vec::new(),
            waits: Vec::new(),
            dials: Vec::new(),
            out: Vec::new(),
            runtimes: Vec::new(),
        }
    }

    /// The earliest time a job, a wait or the network needs the world.
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        let jobs = self.jobs.iter().map(|j| j.due_ms);
        let waits = self.waits.iter().map(|w| if w.rx.is_empty() { w.deadline_ms } else { self.now_ms });
        let dials = self.dials.iter().map(|_| self.now_ms);
        jobs.chain(waits).chain(dials).chain(self.net.next_due_ms()).min()
    }

    /// Runs what is due at `now_ms`: dials, jobs, reply waits, the network.
    pub(crate) fn advance(&mut self) {
        let now = self.now_ms;
        for (node, inc, d) in std::mem::take(&mut self.dials) {
            self.net.dial(now, node, inc, d, &mut self.out);
        }
        let jobs = std::mem::take(&mut self.jobs);
        for j in jobs {
            if j.due_ms > now {
                self.jobs.push(j);
                continue;
            }
            let event = match j.kind {
                JobKind::Runtime(f) => f(&*self.runtimes[j.node] as &dyn Runtime),
                JobKind::Read(f) => f(),
            };
            self.out.push(Delivery { node: j.node, inc: j.inc, event });
        }
        let waits = std::mem::take(&mut self.waits);
        for w in waits {
            match w.rx.try_recv() {
                Ok(reply) => self.out.push(Delivery { node: w.node, inc: w.inc, event: (w.done)(Some(reply)) }),
                Err(_) if now >= w.deadline_ms => self.out.push(Delivery { node: w.node, inc: w.inc, event: (w.done)(None) }),
                Err(_) => self.waits.push(w),
            }
        }
        let mut rng = std::mem::replace(&mut self.rng, Rng::from_seed(0));
        self.net.pump(now, &mut rng, &mut self.out);
        self.rng = rng;
    }

    /// A node's process died: its jobs (all of them at a power cut; a killed
    /// daemon's runtime calls still finish in containerd) and waits go.
    pub(crate) fn node_died(&mut self, node: usize, power_cut: bool) {
        self.jobs.retain(|j| j.node != node || (!power_cut && matches!(j.kind, JobKind::Runtime(_))));
        self.waits.retain(|w| w.node != node);
        self.dials.retain(|d| d.0 != node);
        self.net.node_died(node, power_cut);
    }

    fn job_latency_ms(&mut self) -> u64 {
        1 + self.rng.next_u64() % 30
    }
}

/// A node's wall clock: the world's time plus a jump the faults may set.
pub(crate) struct NodeClock {
    mono: Arc<SimClock>,
    pub(crate) offset_ms: AtomicI64,
}

impl Clock for NodeClock {
    fn now_unix_nanos(&self) -> UnixNanos {
        let base = WALL_START_UNIX_NANOS + self.mono.now_unix_nanos();
        base.saturating_add_signed(self.offset_ms.load(Ordering::SeqCst).saturating_mul(1_000_000))
    }
}

/// The daemon's doors to the simulated world.
struct SimIo {
    shared: Rc<RefCell<Shared>>,
    node: usize,
    inc: Inc,
    rng: RefCell<Rng>,
    host: NodeDescription,
}

/// Unbinds a simulated listener when the daemon drops its `Listening`.
struct ListenGuard {
    shared: std::rc::Weak<RefCell<Shared>>,
    node: usize,
    inc: Inc,
    addr: SocketAddr,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade() {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.net.unlisten(self.node, self.inc, self.addr);
            }
        }
    }
}

impl Io for SimIo {
    fn runtime(&self, job: RuntimeJob) {
        let mut s = self.shared.borrow_mut();
        let due_ms = s.now_ms + s.job_latency_ms();
        s.jobs.push(Job { due_ms, node: self.node, inc: self.inc, kind: JobKind::Runtime(job) });
    }

    fn probe(&self, job: RuntimeJob) {
        self.runtime(job);
    }

    fn read(&self, job: ReadJob) {
        let mut s = self.shared.borrow_mut();
        let due_ms = s.now_ms + s.job_latency_ms();
        s.jobs.push(Job { due_ms, node: self.node, inc: self.inc, kind: JobKind::Read(job) });
    }

    fn listen(&self, addr: SocketAddr, keys: Arc<Mutex<ListenKeys>>, ids: ConnIds) -> Result<(SocketAddr, Listening), String> {
        let bound = self.shared.borrow_mut().net.listen(self.node, self.inc, addr, keys, ids)?;
        let guard = ListenGuard { shared: Rc::downgrade(&self.shared), node: self.node, inc: self.inc, addr: bound };
        Ok((bound, Listening::new(guard)))
    }

    fn dial(&self, dial: Dial) {
        self.shared.borrow_mut().dials.push((self.node, self.inc, dial));
    }

    fn await_reply(&self, rx: Receiver<Reply>, timeout_ms: u64, done: ReplyDone) {
        let mut s = self.shared.borrow_mut();
        let deadline_ms = s.now_ms + timeout_ms;
        s.waits.push(Wait { node: self.node, inc: self.inc, rx, deadline_ms, done });
    }

    fn random32(&self) -> Result<[u8; 32], String> {
        Ok(random32(&mut self.rng.borrow_mut()))
    }

    fn host(&self, _probe: &crate::network::driver::Probe) -> NodeDescription {
        // The world decides what each simulated node can do.
        self.host.clone()
    }

    fn default_addr(&self) -> String {
        self.shared.borrow().net.ips[self.node].to_string()
    }

    fn dns(&self) -> Option<crate::daemon::dns::DnsHandle> {
        None
    }

    fn net(&self) -> std::sync::Arc<dyn crate::network::driver::NetDriver> {
        // Recorded, not built: the simulator checks the control plane, the data path has its own tests.
        std::sync::Arc::new(crate::network::driver::Fake::default())
    }
}

fn random32(rng: &mut Rng) -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}

/// One simulated machine.
pub(crate) struct SimNode {
    pub(crate) index: usize,
    pub(crate) dir: PathBuf,
    pub(crate) disk: SimDisk,
    pub(crate) fake: Arc<Fake>,
    pub(crate) host: NodeDescription,
    pub(crate) node_id: String,
    pub(crate) daemon: Option<Daemon>,
    pub(crate) inc: Inc,
    pub(crate) clock: Arc<NodeClock>,
    pub(crate) next_tick_ms: u64,
    /// When a dead node comes back.
    pub(crate) restart_at_ms: Option<u64>,
    rng: Rng,
    /// The data key its disk is sealed under (the keyring file's content).
    data_key: [u8; 32],
}

impl SimNode {
    /// A machine with a fresh data directory and key (from `seed`).
    pub(crate) fn new(index: usize, dir: PathBuf, host: NodeDescription, mono: Arc<SimClock>, seed: u64) -> anyhow::Result<SimNode> {
        std::fs::create_dir_all(&dir)?;
        let mut rng = Rng::from_seed(seed);
        let node_key = NodeKey::from_private(random32(&mut rng)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let data_key = random32(&mut rng);
        let prefix: [u8; 16] = random32(&mut rng)[..16].try_into()?;
        key::save(&dir.join(key::NODE_KEY_FILE), &node_key, &daemon::autolock::Sealing::fixed(data_key, prefix).key)?;
        let fake = Arc::new(Fake::new());
        super::install_images(&fake);
        Ok(SimNode {
            index,
            dir,
            disk: SimDisk::new(),
            fake,
            host,
            node_id: node_key.node_id(),
            daemon: None,
            inc: 0,
            clock: Arc::new(NodeClock { mono, offset_ms: AtomicI64::new(0) }),
            next_tick_ms: 0,
            restart_at_ms: None,
            rng,
            data_key,
        })
    }

    /// Starts the daemon as `shoal daemon` would, from what is on disk.
    pub(crate) fn boot(&mut self, shared: &Rc<RefCell<Shared>>, mono: &Arc<SimClock>) -> anyhow::Result<()> {
        self.inc += 1;
        self.restart_at_ms = None;
        let prefix: [u8; 16] = random32(&mut self.rng)[..16].try_into()?;
        let sealing = daemon::autolock::Sealing::fixed(self.data_key, prefix);
        let node_key = key::load(&self.dir.join(key::NODE_KEY_FILE), &sealing.key)?;
        let seed = self.rng.next_u64();
        let id = node_key.node_id();
        let opened = Store::open_on_disk(self.disk.clone(), sealing.key.clone(), seed, || id.clone(), Bootstrap::Join, |_| {})?;
        let (store, node_id) = daemon::settle_store(opened, &id)?;
        // A `swarm leave` gave the node a new id.
        self.node_id = node_id.clone();
        let cfg = Config {
            data_dir: self.dir.clone(),
            socket: self.dir.join("shoal.sock"),
            containerd: PathBuf::from("/nonexistent"),
            namespace: "sim".into(),
            insecure_registries: Vec::new(),
            registry_cas: Vec::new(),
            registry_mirrors: Vec::new(),
            bridge: Some(crate::network::bridge::Bridge::default_subnet()),
            metrics_addr: None,
        };
        let io = SimIo {
            shared: shared.clone(),
            node: self.index,
            inc: self.inc,
            rng: RefCell::new(Rng::from_seed(self.rng.next_u64())),
            host: self.host.clone(),
        };
        let daemon = sim_hooks::boot(Parts {
            cfg,
            store,
            node_id,
            keys: daemon::Keys { node: node_key, sealing },
            runtime: self.fake.clone(),
            io: Box::new(io),
            rng: Rng::from_seed(self.rng.next_u64()),
            clock: self.clock.clone(),
            mono: mono.clone(),
        })?;
        self.next_tick_ms = shared.borrow().now_ms + self.rng.next_u64() % daemon.tick_ms().max(1);
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Ends the daemon's process. A power cut also loses the disk's
    /// unsynced writes and every container's process; it is cut while the
    /// database is still open (closing it would sync).
    pub(crate) fn crash(&mut self, shared: &Rc<RefCell<Shared>>, power_cut: bool) {
        if power_cut {
            self.disk.power_cut();
            self.fake.power_cut();
        }
        // The daemon's listener guard borrows `shared` when dropped: no borrow may be held here.
        self.daemon = None;
        shared.borrow_mut().node_died(self.index, power_cut);
        // Exits queued before the crash are lost with the process.
        while self.fake.exits().try_recv().is_ok() {}
    }

    pub(crate) fn is_up(&self) -> bool {
        self.daemon.is_some()
    }

    pub(crate) fn handle(&mut self, events: &mut VecDeque<Event>) {
        let Some(d) = self.daemon.as_mut() else {
            events.clear();
            return;
        };
        while let Some(first) = events.pop_front() {
            if !d.handle_batch(first, || events.pop_front()) {
                // The daemon stops only on a signal, which the simulator never sends.
                break;
            }
        }
    }
}
