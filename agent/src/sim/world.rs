//! One simulated cluster run from one seed: the discrete-event loop, the
//! setup (init and joins), the chaos phase (client operations and faults),
//! healing, and the final convergence check.
//!
//! Owns [`World`]. Time moves only here: the loop jumps to the earliest
//! due thing (a frame, a runtime job, a tick, a client operation, a fault),
//! delivers what is due to the nodes' loops, runs each loop's batch (the
//! real `Daemon::handle_batch`), and asks the checkers after every round in
//! which a daemon ran.

use super::check::{Checker, NodeFacts};
use super::client::Client;
use super::node::{Shared, SimNode};
use crate::daemon::io::network_plugins;
use crate::daemon::Event;
use crate::network::driver::Probe;
use crate::runtime::Runtime;
use shoal_shared::api::Reply;
use shoal_shared::clock::SimClock;
use shoal_shared::platform::Platform;
use shoal_shared::rng::Rng;
use shoal_shared::types::{NodeDescription, ResourceSet};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// How long the chaos phase runs (simulated).
pub(crate) const CHAOS_MS: u64 = 30_000;
/// How long a healed cluster gets to converge before the final check.
pub(crate) const HEAL_MS: u64 = 45_000;
/// Rounds at one instant before time is pushed on by 1 ms (a guard against a
/// component that keeps asking to run now).
const ROUNDS_PER_INSTANT_MAX: u32 = 64;

/// What one seed's run found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub violations: Vec<String>,
    pub ops: u64,
    pub faults: u64,
}

/// A simulated cluster.
pub(crate) struct World {
    pub(crate) shared: Rc<RefCell<Shared>>,
    pub(crate) nodes: Vec<SimNode>,
    inboxes: Vec<VecDeque<Event>>,
    mono: Arc<SimClock>,
    /// Fault and client decisions.
    pub(crate) rng: Rng,
    pub(crate) trace: Rc<RefCell<super::Trace>>,
    pub(crate) checker: Checker,
    pub(crate) client: Client,
    faults: u64,
    next_fault_ms: u64,
    base_dir: PathBuf,
}

/// The platforms simulated machines have (a Pi fleet with a few amd64 boxes).
fn platform_of(i: usize) -> Platform {
    let p = ["linux/amd64", "linux/arm64", "linux/arm/v7"][i % 3];
    Platform::parse(p).expect("a valid platform")
}

impl World {
    pub(crate) fn new(seed: u64, nodes: usize, base_dir: PathBuf, trace: Rc<RefCell<super::Trace>>) -> anyhow::Result<World> {
        let mono = Arc::new(SimClock::new(0));
        let mut rng = Rng::from_seed(seed);
        let shared = Rc::new(RefCell::new(Shared::new(rng.next_u64())));
        let mut sim_nodes = Vec::new();
        for i in 0..nodes {
            let host = NodeDescription {
                hostname: format!("node-{i}"),
                platform: platform_of(i),
                resources: ResourceSet { nano_cpus: 4_000_000_000, memory_bytes: 4 << 30 },
                engine_version: env!("CARGO_PKG_VERSION").to_string(),
                engine_labels: Default::default(),
                // Every simulated kernel has what container networking needs.
                plugins: network_plugins(&Probe { bridge: true, veth: true, vxlan: true, nftables: true, tun: true, problems: Vec::new() }),
                warnings: Vec::new(),
            };
            let n = SimNode::new(i, base_dir.join(format!("node-{i}")), host, mono.clone(), rng.next_u64())?;
            shared.borrow_mut().net.ips.push(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)));
            shared.borrow_mut().runtimes.push(n.fake.clone());
            sim_nodes.push(n);
        }
        let client = Client::new(rng.next_u64());
        Ok(World {
            shared,
            nodes: sim_nodes,
            inboxes: (0..nodes).map(|_| VecDeque::new()).collect(),
            mono,
            rng,
            trace,
            checker: Checker::default(),
            client,
            faults: 0,
            next_fault_ms: 0,
            base_dir,
        })
    }

    pub(crate) fn mono(&self) -> Arc<SimClock> {
        self.mono.clone()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.borrow().now_ms
    }

    /// A line in the trace (with `--trace`).
    pub(crate) fn note(&self, what: std::fmt::Arguments<'_>) {
        let now = self.now_ms();
        self.trace.borrow_mut().line(now, None, what);
    }

    /// Boots every node's daemon.
    pub(crate) fn boot_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.boot(i)?;
        }
        Ok(())
    }

    pub(crate) fn boot(&mut self, i: usize) -> anyhow::Result<()> {
        self.trace.borrow_mut().node = Some(i);
        let r = self.nodes[i].boot(&self.shared, &self.mono);
        self.trace.borrow_mut().node = None;
        self.inboxes[i].clear();
        r
    }

    /// Kills node `i`'s daemon (a power cut if `power_cut`); it restarts after `down_ms`.
    pub(crate) fn crash(&mut self, i: usize, power_cut: bool, down_ms: u64) {
        if !self.nodes[i].is_up() {
            return;
        }
        let what = if power_cut { "power cut" } else { "daemon killed" };
        self.note(format_args!("fault: node-{i} {what}, back in {down_ms} ms"));
        self.nodes[i].crash(&self.shared, power_cut);
        self.inboxes[i].clear();
        self.nodes[i].restart_at_ms = Some(self.now_ms() + down_ms);
        self.client.node_died(i);
    }

    /// Sends `req` to node `i`'s control socket; the reply comes on the returned receiver.
    pub(crate) fn request(&mut self, i: usize, req: shoal_shared::api::Request) -> Option<async_channel::Receiver<Reply>> {
        if !self.nodes[i].is_up() {
            return None;
        }
        let (tx, rx) = async_channel::bounded(1);
        self.inboxes[i].push_back(Event::Control { req, reply: tx });
        Some(rx)
    }

    /// Runs until `until_ms`, or until `stop` says so (checked after every round).
    pub(crate) fn run_until(&mut self, until_ms: u64, chaos: bool, mut stop: impl FnMut(&mut World) -> bool) -> anyhow::Result<()> {
        let mut rounds_here = 0u32;
        let mut last_now = u64::MAX;
        loop {
            let now = self.now_ms();
            if now >= until_ms || !self.checker.violations.is_empty() {
                return Ok(());
            }
            // The next instant something is due.
            let mut next = self.shared.borrow().next_due_ms().unwrap_or(until_ms);
            for (i, n) in self.nodes.iter().enumerate() {
                if n.is_up() {
                    next = next.min(n.next_tick_ms);
                    if !self.inboxes[i].is_empty() || !n.fake.exits().is_empty() {
                        next = now;
                    }
                }
                if let Some(t) = n.restart_at_ms {
                    next = next.min(t);
                }
            }
            if chaos {
                next = next.min(self.next_fault_ms).min(self.client.next_op_ms);
            }
            next = next.min(until_ms).max(now);
            if next == now && last_now == now {
                rounds_here += 1;
                if rounds_here > ROUNDS_PER_INSTANT_MAX {
                    next = now + 1;
                    rounds_here = 0;
                }
            } else {
                rounds_here = 0;
            }
            last_now = now;
            if next > now {
                self.mono.advance((next - now) * 1_000_000);
                self.shared.borrow_mut().now_ms = next;
            }
            let now = next;
            // Restarts, ticks, runtime exits.
            for i in 0..self.nodes.len() {
                if self.nodes[i].restart_at_ms.is_some_and(|t| t <= now) {
                    self.note(format_args!("node-{i} restarts"));
                    self.boot(i)?;
                }
                let n = &mut self.nodes[i];
                if !n.is_up() {
                    continue;
                }
                if n.next_tick_ms <= now {
                    let tick = n.daemon.as_ref().map_or(100, |d| d.tick_ms());
                    n.next_tick_ms = now + tick;
                    self.inboxes[i].push_back(Event::Tick);
                }
                while let Ok(e) = n.fake.exits().try_recv() {
                    self.inboxes[i].push_back(Event::Exit(e));
                }
            }
            if chaos {
                if now >= self.next_fault_ms {
                    self.fault();
                    self.next_fault_ms = now + 500 + self.rng.next_u64() % 3_000;
                }
                if now >= self.client.next_op_ms {
                    super::client::step(self);
                }
            }
            // The world's due work, then every loop with events.
            self.shared.borrow_mut().advance();
            self.deliver();
            let mut ran = false;
            for i in 0..self.nodes.len() {
                if self.inboxes[i].is_empty() {
                    continue;
                }
                ran = true;
                let mut events = std::mem::take(&mut self.inboxes[i]);
                self.trace.borrow_mut().node = Some(i);
                self.nodes[i].handle(&mut events);
                self.trace.borrow_mut().node = None;
            }
            // What the loops just sent leaves now (frames arrive after their latency).
            self.shared.borrow_mut().advance();
            self.deliver();
            super::client::poll(self);
            if ran {
                let now = self.now_ms();
                let facts = facts_of(&self.shared.borrow(), &self.nodes);
                self.checker.step(now, &facts, &self.client);
            }
            if stop(self) {
                return Ok(());
            }
        }
    }

    fn deliver(&mut self) {
        let out = std::mem::take(&mut self.shared.borrow_mut().out);
        for d in out {
            if self.nodes[d.node].is_up() && self.nodes[d.node].inc == d.inc {
                self.inboxes[d.node].push_back(d.event);
            }
        }
    }

    /// What the checkers see of every node.
    pub(crate) fn facts(&self) -> Vec<NodeFacts<'_>> {
        facts_of(&self.shared.borrow(), &self.nodes)
    }

    /// One random fault.
    fn fault(&mut self) {
        self.faults += 1;
        let n = self.nodes.len();
        let i = (self.rng.next_u64() % n as u64) as usize;
        let j = (i + 1 + (self.rng.next_u64() % (n as u64 - 1)) as usize) % n;
        // With a lying disk injected, power cuts are what shows it: half the faults are one.
        let lying = shoal_manager::sim_bugs::on(shoal_manager::sim_bugs::Bug::LyingDisk);
        let roll = if lying && self.rng.next_u64().is_multiple_of(2) { 63 } else { self.rng.next_u64() % 100 };
        match roll {
            0..=14 => {
                self.note(format_args!("fault: node-{i} isolated"));
                let mut s = self.shared.borrow_mut();
                for k in 0..n {
                    if k != i {
                        s.net.block(i, k);
                        s.net.block(k, i);
                    }
                }
            }
            15..=24 => {
                self.note(format_args!("fault: frames from node-{i} to node-{j} stall (asymmetric)"));
                self.shared.borrow_mut().net.block(i, j);
            }
            25..=34 => {
                let mask = self.rng.next_u64();
                let side: Vec<usize> = (0..n).filter(|k| mask >> k & 1 == 1).collect();
                self.note(format_args!("fault: partition {side:?} from the rest"));
                let mut s = self.shared.borrow_mut();
                for a in 0..n {
                    for b in 0..n {
                        if side.contains(&a) != side.contains(&b) {
                            s.net.block(a, b);
                        }
                    }
                }
            }
            35..=54 => {
                self.note(format_args!("fault: network healed"));
                self.shared.borrow_mut().net.heal();
            }
            55..=62 => {
                let down = 300 + self.rng.next_u64() % 5_000;
                self.crash(i, false, down);
            }
            63..=68 => {
                let down = 1_000 + self.rng.next_u64() % 8_000;
                self.crash(i, true, down);
            }
            69..=72 => {
                let jump_ms = (self.rng.next_u64() % 7_200_000) as i64 - 3_600_000;
                self.note(format_args!("fault: node-{i} wall clock jumps {jump_ms} ms"));
                self.nodes[i].clock.offset_ms.fetch_add(jump_ms, std::sync::atomic::Ordering::SeqCst);
            }
            73..=84 => {
                let mut rng = std::mem::replace(&mut self.rng, Rng::from_seed(0));
                let reset = self.shared.borrow_mut().net.reset_one(&mut rng);
                self.rng = rng;
                if reset {
                    self.note(format_args!("fault: a connection was reset"));
                }
            }
            _ => {
                let running = self.nodes[i].fake.running();
                if !running.is_empty() {
                    let id = &running[(self.rng.next_u64() % running.len() as u64) as usize];
                    self.note(format_args!("fault: container {id} on node-{i} exits 1"));
                    self.nodes[i].fake.exit(id, 1);
                }
            }
        }
    }

    /// Ends every fault: the network heals and dead nodes come back now.
    pub(crate) fn heal(&mut self) -> anyhow::Result<()> {
        self.note(format_args!("healing: network whole, every node up"));
        self.shared.borrow_mut().net.heal();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() {
                self.boot(i)?;
            }
        }
        Ok(())
    }

    pub(crate) fn outcome(&self) -> Outcome {
        Outcome { violations: self.checker.violations.clone(), ops: self.client.ops, faults: self.faults }
    }
}

/// What the checkers see of every node.
fn facts_of<'n>(shared: &Shared, nodes: &'n [SimNode]) -> Vec<NodeFacts<'n>> {
    let mut facts = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let linked: Vec<bool> = (0..nodes.len()).map(|j| j != i && shared.net.linked(i, j)).collect();
        facts.push(NodeFacts {
            index: i,
            // The daemon's own: a `swarm leave` renews it.
            node_id: n.daemon.as_ref().map_or(n.node_id.as_str(), |d| d.node_id.as_str()),
            view: n.daemon.as_ref().map(|d| d.view()),
            linked,
            running: n.fake.running(),
        });
    }
    facts
}

impl Drop for World {
    fn drop(&mut self) {
        // Daemons first: their listener guards reach into `shared`.
        for n in &mut self.nodes {
            n.daemon = None;
        }
        let _ = std::fs::remove_dir_all(&self.base_dir);
    }
}
