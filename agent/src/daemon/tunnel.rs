//! The tunnel relay's shell (issue #15): owns the TUN device and the UDP
//! socket encrypted overlay networks travel through, the two threads that
//! move packets between them, the clock and the randomness of the relay's
//! keys. Decisions are `shoal_shared::tunnel::relay::Relay`'s; the key
//! exchange over the Noise links is in `swarm::tunnel_keys`.
//!
//! Lifecycle: the relay starts the first time this node's assignments give
//! it a tunnel address (it takes part in an encrypted network), listens on
//! its advertise address (frames leave from it, as VXLAN's do), and runs
//! until the daemon exits (the device goes with the process). Until it
//! runs, and if it cannot (no `/dev/net/tun`, the port taken), encrypted
//! networks' VXLAN packets have no route into it and the node's nftables
//! rules drop them: they never leave in plaintext.
//!
//! Threads (blocking I/O, off the loop): `tunnel-out` reads a packet from
//! the device, seals it and sends it to the peer's relay port; `tunnel-in`
//! receives a frame, opens and checks it and writes the packet into the
//! device. Both hold the relay's lock for one packet at a time.

use super::Daemon;
use crate::network::{plan, view, Ipv4Net};
use shoal_shared::assignments::TUNNEL_SUBNET;
use shoal_shared::tunnel::relay::{Drop, NodeKey, Relay, RelayCounts, TunnelPeer};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Arc, Mutex};

/// The UDP port relays send to and listen on (every node the same, as
/// VXLAN's 4789): open it between nodes that share encrypted networks.
pub(crate) const TUNNEL_PORT: u16 = 4790;
/// Tests set this to watch key rotations during a transfer (milliseconds
/// between rotations instead of 12 hours).
const ROTATE_ENV: &str = "SHOAL_TEST_TUNNEL_ROTATE_MS";
/// How often the relay's counts are logged at most when it dropped frames
/// since the last line (WARN), and otherwise when they changed (INFO).
const DROPS_LOG_MS: u64 = 10_000;
const COUNTS_LOG_MS: u64 = 600_000;
/// Pause between retries of a relay thread's failing read.
const IO_RETRY_MS: u64 = 100;
/// Largest datagram or packet read.
const BUF_BYTES: usize = 65_536;

/// The relay as the daemon holds it.
#[derive(Default)]
pub(crate) struct Tunnel {
    relay: Option<Arc<Mutex<Relay>>>,
    /// Why the device or socket could not be set up (set by the start thread; said once).
    failed: Arc<Mutex<Option<String>>>,
    failure_said: bool,
    /// The tunnel address the device has (or is being given).
    own: Option<Ipv4Addr>,
    peers: Vec<TunnelPeer>,
    /// Counts last logged, and when (mono ms).
    said: RelayCounts,
    said_at_ms: u64,
}

impl Tunnel {
    /// The running relay, if any.
    pub(crate) fn relay(&self) -> Option<Arc<Mutex<Relay>>> {
        self.relay.clone()
    }
}

/// Locks the relay; a panicked relay thread leaves it usable (its state is plain data).
pub(crate) fn lock(r: &Mutex<Relay>) -> std::sync::MutexGuard<'_, Relay> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    /// Starts the relay when this node first gets a tunnel address, follows
    /// its address and peers, rotates its key when due, and logs its counts.
    pub(crate) fn sync_tunnel(&mut self, now_ms: u64) {
        let Some(a) = self.swarm.assigned_ref() else { return };
        let Some(own) = a.network.tunnel_addr() else { return };
        let peers = view::tunnel_peers(a);
        let port = if a.network.data_path_port == 0 { plan::VXLAN_PORT_DEFAULT } else { a.network.data_path_port };
        if let Some(e) = lock_failed(&self.tunnel.failed).clone() {
            if !self.tunnel.failure_said {
                self.tunnel.failure_said = true;
                crate::log!("ERROR", "networking: encrypted overlay networks cannot carry traffic to or from this node: {e}");
            }
            return;
        }
        let relay = match self.tunnel.relay.clone() {
            Some(r) => r,
            None => {
                if !self.net.probe.tun {
                    *lock_failed(&self.tunnel.failed) = Some("TUN devices cannot be made here (kernel option CONFIG_TUN)".into());
                    return;
                }
                // Frames leave from the advertise address (as VXLAN does: peers know a node by it),
                // whichever interface the route to a peer would otherwise pick on a multi-homed device.
                let Some(underlay) = self.underlay() else {
                    *lock_failed(&self.tunnel.failed) = Some("this node's advertise address is not an IPv4 address".into());
                    return;
                };
                let (epoch, key) = match (self.io.random32(), self.io.random32()) {
                    (Ok(e), Ok(k)) => (u32::from_le_bytes([e[0], e[1], e[2], e[3]]), k),
                    (Err(e), _) | (_, Err(e)) => {
                        *lock_failed(&self.tunnel.failed) = Some(e);
                        return;
                    }
                };
                let mut relay = Relay::new(&self.node_id, own, port, epoch, key, now_ms);
                if let Some(ms) = std::env::var(ROTATE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
                    crate::log!("WARN", "networking: {ROTATE_ENV}={ms}: the tunnel key is replaced every {ms} ms (for tests)");
                    relay = relay.rotating_every(ms);
                }
                let r = Arc::new(Mutex::new(relay));
                {
                    let mut g = lock(&r);
                    for k in self.swarm.tunnel_keys.table() {
                        g.install(k);
                    }
                }
                start(self.net.driver.clone(), r.clone(), own, underlay, self.tunnel.failed.clone());
                crate::log!("INFO", "networking: tunnel relay for encrypted networks starting at {own} (UDP port {TUNNEL_PORT})");
                self.tunnel.relay = Some(r.clone());
                self.tunnel.own = Some(own);
                r
            }
        };
        if self.tunnel.own != Some(own) {
            // The leader gave this node another tunnel address (it left every encrypted network and came back).
            crate::log!("INFO", "networking: the tunnel relay moves to {own}");
            let driver = self.net.driver.clone();
            let failed = self.tunnel.failed.clone();
            std::thread::spawn(move || {
                if let Err(e) = driver.tunnel(TUNNEL_SUBNET.with_addr(own), view::TUN_MTU, false) {
                    *lock_failed(&failed) = Some(e.to_string());
                }
            });
            lock(&relay).set_own(own);
            self.tunnel.own = Some(own);
        }
        let mut g = lock(&relay);
        if peers != self.tunnel.peers {
            let gone = g.set_peers(&peers);
            if !gone.is_empty() {
                crate::log!(
                    "INFO",
                    "networking: tunnel peer(s) {} left: their keys are forgotten, this node's is replaced",
                    gone.join(", ")
                );
            }
            self.tunnel.peers = peers;
        }
        if g.wants_rotation(now_ms) {
            match (self.io.random32(), self.io.random32()) {
                (Ok(e), Ok(k)) => {
                    let mut epoch = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                    if epoch == g.announcement().epoch {
                        epoch = epoch.wrapping_add(1);
                    }
                    g.rotate(epoch, k, now_ms);
                    crate::log!("INFO", "networking: tunnel key replaced (epoch {epoch}); in use once peers have it");
                }
                (Err(e), _) | (_, Err(e)) => crate::log!("WARN", "networking: cannot replace the tunnel key: {e}"),
            }
        }
        g.tick(now_ms);
        let c = g.counts();
        drop(g);
        let dropped = |c: &RelayCounts| {
            c.opened.replayed + c.opened.tampered + c.opened.unknown_key + c.opened.malformed + c.unknown_sender + c.forbidden
        };
        let since = now_ms.saturating_sub(self.tunnel.said_at_ms);
        let drops = dropped(&c) > dropped(&self.tunnel.said);
        if c != self.tunnel.said && (since >= COUNTS_LOG_MS || (drops && since >= DROPS_LOG_MS)) {
            let level = if drops { "WARN" } else { "INFO" };
            crate::log!(
                level,
                "networking: tunnel since start: {} sealed, {} opened; dropped: {} replayed, {} tampered, {} with an unknown key, {} malformed, {} from unknown senders, {} not VXLAN between tunnel addresses, {} to no peer",
                c.sealed,
                c.opened.opened,
                c.opened.replayed,
                c.opened.tampered,
                c.opened.unknown_key,
                c.opened.malformed,
                c.unknown_sender,
                c.forbidden,
                c.no_peer
            );
            self.tunnel.said = c;
            self.tunnel.said_at_ms = now_ms;
        }
    }

    /// `shoal info`'s view of the relay (none before this node's first tunnel address).
    pub(crate) fn tunnel_status(&self) -> Option<shoal_shared::api::TunnelStatus> {
        let own = self.tunnel.own.or_else(|| self.swarm.assigned_ref().and_then(|a| a.network.tunnel_addr()))?;
        let mut st = shoal_shared::api::TunnelStatus {
            addr: own.to_string(),
            port: TUNNEL_PORT,
            peers: self.tunnel.peers.len() as u64,
            error: lock_failed(&self.tunnel.failed).clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(r) = &self.tunnel.relay {
            let g = lock(r);
            st.peers_with_keys = self.tunnel.peers.iter().filter(|p| g.has_key(&p.node_id)).count() as u64;
            let c = g.counts();
            st.sealed = c.sealed;
            st.opened = c.opened.opened;
            st.replayed = c.opened.replayed;
            st.tampered = c.opened.tampered;
            st.unknown_key = c.opened.unknown_key;
            st.malformed = c.opened.malformed;
            st.unknown_sender = c.unknown_sender;
            st.forbidden = c.forbidden;
            st.no_peer = c.no_peer;
        }
        Some(st)
    }

    /// A key heard for the relay (installed when it runs; kept meanwhile).
    pub(crate) fn install_tunnel_key(&mut self, k: &NodeKey) {
        if let Some(r) = &self.tunnel.relay {
            lock(r).install(k);
        }
    }
}

fn lock_failed(m: &Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets up the device and socket on a thread of its own, then runs the two
/// relay threads; a failure is left in `failed` for the loop to say.
fn start(
    driver: Arc<dyn crate::network::driver::NetDriver>,
    relay: Arc<Mutex<Relay>>,
    own: Ipv4Addr,
    underlay: Ipv4Addr,
    failed: Arc<Mutex<Option<String>>>,
) {
    let spawned = std::thread::Builder::new().name("tunnel-setup".into()).spawn(move || {
        let fail = |e: String| *lock_failed(&failed) = Some(e);
        let addr: Ipv4Net = TUNNEL_SUBNET.with_addr(own);
        let device = match driver.tunnel(addr, view::TUN_MTU, true) {
            Ok(Some(f)) => f,
            Ok(None) => return fail("the tunnel device was not opened".into()),
            Err(e) => return fail(e.to_string()),
        };
        let udp = match UdpSocket::bind(SocketAddrV4::new(underlay, TUNNEL_PORT)) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot listen on {underlay}:{TUNNEL_PORT} (UDP): {e}")),
        };
        let (dev_in, udp_out) = match (device.try_clone(), udp.try_clone()) {
            (Ok(d), Ok(u)) => (d, u),
            (Err(e), _) | (_, Err(e)) => return fail(format!("cannot share the tunnel device or socket between threads: {e}")),
        };
        let r_out = relay.clone();
        let out = std::thread::Builder::new().name("tunnel-out".into()).spawn(move || outbound(r_out, device, udp_out));
        let inn = std::thread::Builder::new().name("tunnel-in".into()).spawn(move || inbound(relay, dev_in, udp));
        if let Err(e) = out.and(inn) {
            fail(format!("cannot start the relay's threads: {e}"));
        }
    });
    if let Err(e) = spawned {
        crate::log!("ERROR", "networking: cannot start the tunnel relay: {e}");
    }
}

/// Device -> peers: each packet sealed for the peer its destination names.
fn outbound(relay: Arc<Mutex<Relay>>, mut device: std::fs::File, udp: UdpSocket) {
    let mut buf = vec![0u8; BUF_BYTES];
    let mut failing = false;
    loop {
        let n = match device.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                failed_io(&mut failing, "reading the tunnel device", &e);
                continue;
            }
        };
        failing = false;
        let sealed = lock(&relay).outgoing(&buf[..n]);
        if let Ok((to, frame)) = sealed {
            // A lost datagram is what the underlay does anyway; the tasks' own protocols resend.
            let _ = udp.send_to(&frame, SocketAddrV4::new(to, TUNNEL_PORT));
        }
    }
}

/// Peers -> device: each frame opened and checked, then handed to the kernel.
fn inbound(relay: Arc<Mutex<Relay>>, mut device: std::fs::File, udp: UdpSocket) {
    let mut buf = vec![0u8; BUF_BYTES];
    let mut failing = false;
    loop {
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                failed_io(&mut failing, "receiving on the tunnel socket", &e);
                continue;
            }
        };
        failing = false;
        let SocketAddr::V4(from) = from else { continue };
        let opened: Result<Vec<u8>, Drop> = lock(&relay).incoming(*from.ip(), &buf[..n]);
        if let Ok(packet) = opened {
            let _ = device.write(&packet);
        }
    }
}

/// A relay thread's read failed: said once per run of failures (a
/// transient error must not end the relay for good), then a pause so a
/// lasting one does not spin.
fn failed_io(failing: &mut bool, what: &str, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::Interrupted {
        return;
    }
    if !*failing {
        *failing = true;
        crate::log!(
            "ERROR",
            "networking: {what} failed ({e}); encrypted networks may carry nothing until it recovers (retrying every {IO_RETRY_MS} ms)"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(IO_RETRY_MS));
}
