//! The daemon loop's only doors to the world: runtime calls, file reads,
//! the swarm port (listen, dial), reply timers, randomness and host facts.
//!
//! Owns the [`Io`] seam. The loop never spawns a task, opens a socket or
//! reads the OS's randomness itself: it asks its `Io`, and every result
//! comes back as an [`Event`] on the loop's queue. [`RealIo`] does it with
//! smol tasks, TCP and the OS; the whole-node simulator (`crate::sim`,
//! feature `sim`) does it with a simulated network and runtime, in one
//! thread, from a seed.

use super::links::{self, ConnIds, ListenKeys, Purpose};
use super::Event;
use crate::host;
use crate::network::driver::{NetDriver, Probe};
use crate::runtime::Runtime;
use async_channel::{Receiver, Sender};
use shoal_shared::api::Reply;
use shoal_shared::types::{NodeDescription, Plugin, DRIVER_BRIDGE, DRIVER_HOST, DRIVER_NULL, DRIVER_OVERLAY, DRIVER_OVERLAY_ENCRYPTED};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A blocking runtime call and the event its result becomes.
pub(crate) type RuntimeJob = Box<dyn FnOnce(&dyn Runtime) -> Event + Send>;
/// A blocking file read (task logs) and the event its result becomes.
pub(crate) type ReadJob = Box<dyn FnOnce() -> Event + Send>;
/// Turns a reply (None: none within the timeout) into the loop's event.
pub(crate) type ReplyDone = Box<dyn FnOnce(Option<Reply>) -> Event + Send>;

/// An open swarm port; dropping it stops accepting.
pub(crate) struct Listening(#[allow(dead_code)] Box<dyn std::any::Any>);

impl Listening {
    pub(crate) fn new(guard: impl std::any::Any) -> Listening {
        Listening(Box::new(guard))
    }
}

/// An outbound connection to open (see [`links::dial`]).
pub(crate) struct Dial {
    pub conn: u64,
    pub addr: SocketAddr,
    pub purpose: Purpose,
    /// Our static key.
    pub key: [u8; 32],
    /// The handshake payload.
    pub payload: Vec<u8>,
    /// The digest the responder's key must have.
    pub pin: Option<[u8; 32]>,
    /// The swarm's link profile: the link's timings.
    pub profile: shoal_shared::types::LinkProfile,
}

/// What the loop asks of the world. Every method returns at once; results
/// arrive later as events.
pub(crate) trait Io {
    /// Runs a blocking runtime call off the loop (at most `RUNTIME_CALLS_MAX` at once).
    fn runtime(&self, job: RuntimeJob);
    /// Runs a health probe off the loop, on slots of its own (at most
    /// `worker::PROBES_INFLIGHT_MAX` at once): never in a runtime call's slot.
    fn probe(&self, job: RuntimeJob);
    /// Runs a blocking read of this node's files off the loop.
    fn read(&self, job: ReadJob);
    /// Opens the swarm port on `addr`; connections arrive as `LinkUp` events.
    fn listen(&self, addr: SocketAddr, keys: Arc<Mutex<ListenKeys>>, ids: ConnIds) -> Result<(SocketAddr, Listening), String>;
    /// Opens a connection; it arrives as `LinkUp`, or `DialFailed`.
    fn dial(&self, dial: Dial);
    /// Waits up to `timeout_ms` for one reply on `rx`, then queues `done`'s event.
    fn await_reply(&self, rx: Receiver<Reply>, timeout_ms: u64, done: ReplyDone);
    /// 32 bytes of key-grade randomness (keys, join secrets).
    fn random32(&self) -> Result<[u8; 32], String>;
    /// This host's description (hostname, platform, resources, and the
    /// network drivers and warnings of `probe`, the kernel probe made at start).
    fn host(&self, probe: &Probe) -> NodeDescription;
    /// The address this host is reached at when none is given (its default route's).
    fn default_addr(&self) -> String;
    /// The container-networking data path (blocking: used inside runtime jobs).
    fn net(&self) -> Arc<dyn NetDriver>;
    /// The embedded DNS server's loop, when there is one.
    fn dns(&self) -> Option<super::dns::DnsHandle>;
}

/// The network drivers a node whose kernel probe found `probe` can run
/// (Docker's `Engine.Plugins`, sorted by name): `overlay` with VXLAN,
/// bridges, veths and nftables; `overlay-encrypted` with all that and TUN
/// devices (the tunnel relay); `bridge` with all but VXLAN; `host` and
/// `null` always.
pub(crate) fn network_plugins(probe: &Probe) -> Vec<Plugin> {
    let bridge = probe.bridge && probe.veth && probe.nftables;
    let overlay = bridge && probe.vxlan;
    let drivers = [
        (DRIVER_BRIDGE, bridge),
        (DRIVER_HOST, true),
        (DRIVER_NULL, true),
        (DRIVER_OVERLAY, overlay),
        (DRIVER_OVERLAY_ENCRYPTED, overlay && probe.tun),
    ];
    drivers.iter().filter(|(_, works)| *works).map(|(name, _)| Plugin::network(name)).collect()
}

/// The shipped [`Io`]: smol tasks, blocking threads, TCP and the OS.
pub(crate) struct RealIo {
    tx: Sender<Event>,
    runtime: Arc<dyn Runtime>,
    net: Arc<dyn NetDriver>,
    slots: Arc<async_lock::Semaphore>,
    probe_slots: Arc<async_lock::Semaphore>,
}

impl RealIo {
    /// Events go to `tx`; runtime calls run at most `RUNTIME_CALLS_MAX` at once.
    pub(crate) fn new(tx: Sender<Event>, runtime: Arc<dyn Runtime>, net: Arc<dyn NetDriver>) -> RealIo {
        RealIo {
            tx,
            runtime,
            net,
            slots: Arc::new(async_lock::Semaphore::new(super::RUNTIME_CALLS_MAX)),
            probe_slots: Arc::new(async_lock::Semaphore::new(crate::worker::PROBES_INFLIGHT_MAX)),
        }
    }

    /// Runs `job` off the loop once one of `slots` is free.
    fn run_in(&self, slots: &Arc<async_lock::Semaphore>, job: RuntimeJob) {
        let rt = self.runtime.clone();
        let tx = self.tx.clone();
        let slots = slots.clone();
        smol::spawn(async move {
            let _permit = slots.acquire_arc().await;
            let ev = smol::unblock(move || job(&*rt)).await;
            let _ = tx.send(ev).await;
        })
        .detach();
    }
}

impl Io for RealIo {
    fn runtime(&self, job: RuntimeJob) {
        self.run_in(&self.slots, job);
    }

    fn probe(&self, job: RuntimeJob) {
        self.run_in(&self.probe_slots, job);
    }

    fn read(&self, job: ReadJob) {
        let tx = self.tx.clone();
        smol::spawn(async move {
            let ev = smol::unblock(job).await;
            let _ = tx.send(ev).await;
        })
        .detach();
    }

    fn listen(&self, sock: SocketAddr, keys: Arc<Mutex<ListenKeys>>, ids: ConnIds) -> Result<(SocketAddr, Listening), String> {
        let l = TcpListener::bind(sock).map_err(|e| format!("cannot listen on {sock}: {e}"))?;
        let bound = l.local_addr().map_err(|e| format!("cannot listen on {sock}: {e}"))?;
        let l = async_io::Async::new(l).map_err(|e| format!("cannot listen on {sock}: {e}"))?;
        let task = smol::spawn(links::listen(l, keys, ids, self.tx.clone()));
        Ok((bound, Listening::new(task)))
    }

    fn dial(&self, d: Dial) {
        smol::spawn(links::dial(d, self.tx.clone())).detach();
    }

    fn await_reply(&self, rx: Receiver<Reply>, timeout_ms: u64, done: ReplyDone) {
        let events = self.tx.clone();
        smol::spawn(async move {
            let reply = futures_lite::future::or(async { rx.recv().await.ok() }, async {
                async_io::Timer::after(Duration::from_millis(timeout_ms)).await;
                None
            })
            .await;
            let _ = events.send(done(reply)).await;
        })
        .detach();
    }

    fn random32(&self) -> Result<[u8; 32], String> {
        shoal_shared::noise::key::os_random::<32>().map_err(|e| format!("cannot read OS randomness: {e}"))
    }

    fn host(&self, probe: &Probe) -> NodeDescription {
        NodeDescription {
            hostname: host::hostname(),
            platform: host::platform(),
            resources: host::resources(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            engine_labels: Default::default(),
            plugins: network_plugins(probe),
            warnings: probe.problems.clone(),
        }
    }

    fn default_addr(&self) -> String {
        host::default_addr().to_string()
    }

    fn net(&self) -> Arc<dyn NetDriver> {
        self.net.clone()
    }

    fn dns(&self) -> Option<super::dns::DnsHandle> {
        let conf = shoal_dns::resolv_conf::ResolvConf::parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let seed = shoal_shared::noise::key::os_random::<8>().map(u64::from_le_bytes).unwrap_or(0x5eed);
        Some(super::dns::spawn(conf.upstreams(), seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Probe) -> Vec<String> {
        network_plugins(p).into_iter().map(|p| format!("{}/{}", p.kind, p.name)).collect()
    }

    #[test]
    fn the_probe_says_which_network_drivers_work() {
        let full = Probe { bridge: true, veth: true, vxlan: true, nftables: true, tun: true, problems: Vec::new() };
        assert_eq!(names(&full), ["Network/bridge", "Network/host", "Network/null", "Network/overlay", "Network/overlay-encrypted"]);
        let no_tun = Probe { tun: false, ..full.clone() };
        assert_eq!(
            names(&no_tun),
            ["Network/bridge", "Network/host", "Network/null", "Network/overlay"],
            "no relay, no encrypted networks"
        );
        assert_eq!(names(&Probe { vxlan: false, ..full.clone() }), ["Network/bridge", "Network/host", "Network/null"]);
        for lacking in [Probe { nftables: false, ..full.clone() }, Probe { veth: false, ..full.clone() }, Probe::default()] {
            assert_eq!(names(&lacking), ["Network/host", "Network/null"], "{lacking:?}");
        }
    }
}
