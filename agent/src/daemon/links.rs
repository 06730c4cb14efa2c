//! Connection tasks on the swarm port: accepting, dialing, and pumping one
//! Noise [`Link`] per TCP connection between the socket and the event loop.
//!
//! Owns nothing the loop decides: every connection gets a number (`conn`),
//! announces itself with [`Event::LinkUp`] (carrying the command sender the
//! loop uses to send on it), forwards each link event as [`Event::Link`] and
//! ends with exactly one [`Event::LinkGone`] (or [`Event::DialFailed`] when
//! it never connected). Whether a peer is welcome is the loop's decision,
//! made on `Established`. An inbound connection reaches the loop only once
//! its handshake finished: until then it is a socket, a small read buffer
//! and a handshake state, and one that fails is never seen by the loop.
//!
//! Limits: the cleartext preamble must arrive within `PREAMBLE_TIMEOUT_MS`
//! and the Noise handshake must be done `HANDSHAKE_TIMEOUT_MS` after accept
//! (a peer that trickles bytes is closed then too); at most
//! `PREHANDSHAKE_PER_IP_MAX` inbound connections from one address (an IPv6
//! /64) and `PREHANDSHAKE_MAX` from all are in their handshake at once, and
//! at most `INBOUND_CONNECTIONS_MAX` inbound connections are served at once;
//! beyond a limit a connection is closed right after accept ([`Admission`],
//! refusals logged at most once per `REFUSAL_LOG_INTERVAL_MS`, counted).
//! Dials give up after `DIAL_TIMEOUT_MS`, and each link queues at most
//! `LINK_COMMANDS_MAX` outgoing messages (the loop closes a link that cannot
//! keep up).

use super::Event;
use crate::net;
use async_channel::Sender;
use async_io::{Async, Timer};
use futures_lite::future::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use shoal_shared::noise::link::{Link, LinkConfig};
use shoal_shared::types::LinkProfile;
use shoal_shared::wire::{PREAMBLE_JOIN, PREAMBLE_NODE, PROLOGUE_JOIN, PROLOGUE_NODE};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an accepted connection may take to send its preamble byte (lan).
pub const PREAMBLE_TIMEOUT_MS: u64 = 3_000;
/// How long a dial may take to connect (lan).
pub const DIAL_TIMEOUT_MS: u64 = 2_000;
/// Outgoing messages queued per link before the loop gives up on it.
pub const LINK_COMMANDS_MAX: usize = 4_096;
/// Inbound connections served at once (a fleet of workers plus managers).
pub const INBOUND_CONNECTIONS_MAX: usize = 4_096;
/// Inbound connections from one source address (an IPv6 /64) that may be
/// in their handshake at once. A node's handshake takes milliseconds, so
/// even many nodes behind one NAT rarely overlap; one refused retries with
/// its backoff.
pub const PREHANDSHAKE_PER_IP_MAX: usize = 8;
/// Inbound connections from all addresses that may be in their handshake
/// at once, far below `INBOUND_CONNECTIONS_MAX`: unauthenticated peers get
/// a small budget, authenticated links the large one.
pub const PREHANDSHAKE_MAX: usize = 64;
/// How long an inbound connection may take from accept to a finished Noise
/// handshake (preamble included), however it trickles its bytes (lan).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// The connection time limits of a link profile: (dial, preamble,
/// handshake) in ms. On the edge profile a lossy link may need several SYN
/// and handshake retransmissions (1 s, 3 s, 7 s ...), so each is longer.
pub(crate) fn connect_limits_ms(profile: LinkProfile) -> (u64, u64, u64) {
    match profile {
        LinkProfile::Lan => (DIAL_TIMEOUT_MS, PREAMBLE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS),
        LinkProfile::Edge => (15_000, 20_000, 30_000),
    }
}

/// A link config of `profile` for `key`, with the connection limits here.
fn link_config(profile: LinkProfile, key: [u8; 32]) -> LinkConfig {
    let mut cfg = LinkConfig::for_profile(profile, key);
    cfg.handshake_timeout_ms = connect_limits_ms(profile).2;
    cfg
}
/// Refused connections and failed handshakes are each logged at most once
/// per interval, with how many there were.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 10_000;
const _: () = assert!(PREAMBLE_TIMEOUT_MS < HANDSHAKE_TIMEOUT_MS);
const _: () = assert!(PREHANDSHAKE_PER_IP_MAX <= PREHANDSHAKE_MAX);
const _: () = assert!(PREHANDSHAKE_MAX < INBOUND_CONNECTIONS_MAX);

/// What a connection is for (chosen by the dialer's preamble).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A node joining with a token; the responder proves the cluster key.
    Join,
    /// A member node; the responder proves its node key.
    Node,
}

/// A new connection, before its handshake finished.
pub(crate) struct LinkUp {
    pub conn: u64,
    pub commands: Sender<net::Command>,
    pub purpose: Purpose,
    pub outbound: bool,
    pub remote: SocketAddr,
}

/// The private keys the listener answers with (the cluster key only on managers).
#[derive(Default)]
pub(crate) struct ListenKeys {
    pub node: [u8; 32],
    pub cluster: Option<[u8; 32]>,
    /// The swarm's link profile: the timings of links accepted from now on.
    pub profile: LinkProfile,
}

/// Connection numbers, shared by the listener and the loop's dials.
pub(crate) type ConnIds = Arc<AtomicU64>;

/// Accepts connections on `listener` until the task is dropped.
pub(crate) async fn listen(listener: Async<TcpListener>, keys: Arc<Mutex<ListenKeys>>, ids: ConnIds, tx: Sender<Event>) {
    let origin = Instant::now();
    let admission = Arc::new(Mutex::new(Admission::default()));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                crate::log!("WARN", "swarm port accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source_of(remote.ip());
        let admitted = {
            let mut a = admission.lock().unwrap_or_else(PoisonError::into_inner);
            let admitted = a.admit(source);
            if let Err(why) = admitted {
                if let Some(count) = a.refusals.note(net::now_ms(origin)) {
                    crate::log!(
                        "WARN",
                        "refused {count} connection(s) on the swarm port since the last report, the latest from {remote}: {}",
                        why.describe()
                    );
                }
            }
            admitted
        };
        if admitted.is_err() {
            // Closed at once: a refused peer costs no task and no buffer.
            drop(stream);
            continue;
        }
        let slot = Slot { admission: admission.clone(), source, handshaking: true };
        let conn = ids.fetch_add(1, Ordering::SeqCst);
        let (keys, tx, admission) = (keys.clone(), tx.clone(), admission.clone());
        smol::spawn(async move {
            let r = inbound(stream, remote, conn, keys, tx, slot).await;
            if let Err(e) = r {
                let mut a = admission.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(count) = a.failures.note(net::now_ms(origin)) {
                    drop(a);
                    crate::log!(
                        "WARN",
                        "dropped {count} connection(s) before their handshake since the last report, the latest from {remote}: {e}"
                    );
                }
            }
        })
        .detach();
    }
}

async fn inbound(
    mut stream: Async<TcpStream>,
    remote: SocketAddr,
    conn: u64,
    keys: Arc<Mutex<ListenKeys>>,
    tx: Sender<Event>,
    mut slot: Slot,
) -> Result<(), String> {
    // The link's time base starts at accept: the handshake deadline covers the preamble.
    let origin = Instant::now();
    let profile = keys.lock().map_err(|_| "key lock poisoned".to_string())?.profile;
    let (_, preamble_ms, handshake_ms) = connect_limits_ms(profile);
    let cfg = link_config(profile, [0; 32]);
    net::set_swarm_socket_options(stream.get_ref(), cfg.idle_timeout_ms).map_err(|e| format!("cannot set the socket's options: {e}"))?;
    if profile == LinkProfile::Edge {
        net::set_lossy_link_options_logged(stream.get_ref(), true);
    }
    let mut preamble = [0u8; 1];
    stream
        .read_exact(&mut preamble)
        .or(async {
            Timer::after(Duration::from_millis(preamble_ms)).await;
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no preamble"))
        })
        .await
        .map_err(|e| format!("no preamble within {preamble_ms} ms: {e}"))?;
    let (purpose, key, prologue) = {
        let k = keys.lock().map_err(|_| "key lock poisoned".to_string())?;
        match preamble[0] {
            PREAMBLE_JOIN => match k.cluster {
                Some(c) => (Purpose::Join, c, PROLOGUE_JOIN),
                None => return Err("join attempt on a node that is not a manager".into()),
            },
            PREAMBLE_NODE => (Purpose::Node, k.node, PROLOGUE_NODE),
            other => return Err(format!("unknown preamble byte {other:#04x} (not a shoal node?)")),
        }
    };
    let mut cfg = LinkConfig { local_private: key, ..cfg };
    cfg.prologue = prologue.to_vec();
    let now_ms = net::now_ms(origin);
    // Positive: the preamble came within its limit, below the handshake's (give or take a timer's lateness).
    cfg.handshake_timeout_ms = handshake_ms.saturating_sub(now_ms).max(1);
    let mut link = Link::responder(cfg, now_ms).map_err(|e| e.to_string())?;
    net::handshake(&stream, &mut link, origin).await.map_err(|e| format!("handshake failed: {e}"))?;
    slot.handshake_done();
    run(stream, link, origin, LinkUp { conn, commands: async_channel::bounded(1).0, purpose, outbound: false, remote }, tx).await;
    Ok(())
}

/// The key a source address is counted under: IPv4 addresses (mapped ones
/// included) as they are, IPv6 ones by their /64, the block one host gets.
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Why a connection was refused right after accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `PREHANDSHAKE_PER_IP_MAX` connections from its address are in their handshake.
    PerAddress,
    /// `PREHANDSHAKE_MAX` connections are in their handshake.
    Handshakes,
    /// `INBOUND_CONNECTIONS_MAX` inbound connections are open.
    Inbound,
}

impl Refusal {
    fn describe(self) -> String {
        match self {
            Refusal::PerAddress => {
                format!("{PREHANDSHAKE_PER_IP_MAX} connections from that address are still in their handshake")
            }
            Refusal::Handshakes => format!("{PREHANDSHAKE_MAX} connections are still in their handshake"),
            Refusal::Inbound => format!("{INBOUND_CONNECTIONS_MAX} connections already open"),
        }
    }
}

/// Counts what happens often under a flood and says when to log it: the
/// first time, then at most once per `REFUSAL_LOG_INTERVAL_MS`, with the
/// count since the last report.
#[derive(Default)]
pub(crate) struct LogEvery {
    count: u64,
    reported_ms: Option<u64>,
}

impl LogEvery {
    /// Counts one at `now_ms`; returns the count to report when a report is due.
    pub(crate) fn note(&mut self, now_ms: u64) -> Option<u64> {
        self.count += 1;
        if self.reported_ms.is_some_and(|at| now_ms.saturating_sub(at) < REFUSAL_LOG_INTERVAL_MS) {
            return None;
        }
        self.reported_ms = Some(now_ms);
        Some(std::mem::take(&mut self.count))
    }
}

/// Which inbound connections the listener takes (sans-IO: the listener
/// asks [`Admission::admit`] after each accept and a [`Slot`] gives the
/// connection back). Connections in their handshake are counted per source
/// (see [`source_of`]) and in total; every inbound connection, also after
/// its handshake, counts against `INBOUND_CONNECTIONS_MAX`.
#[derive(Default)]
pub(crate) struct Admission {
    handshaking: HashMap<IpAddr, usize>,
    handshaking_total: usize,
    open: usize,
    pub(crate) refusals: LogEvery,
    pub(crate) failures: LogEvery,
}

impl Admission {
    /// A connection from `source` was accepted: it is counted as in its
    /// handshake, or refused (and nothing changes).
    pub(crate) fn admit(&mut self, source: IpAddr) -> Result<(), Refusal> {
        if self.open >= INBOUND_CONNECTIONS_MAX {
            return Err(Refusal::Inbound);
        }
        if self.handshaking_total >= PREHANDSHAKE_MAX {
            return Err(Refusal::Handshakes);
        }
        let from_source = self.handshaking.entry(source).or_insert(0);
        if *from_source >= PREHANDSHAKE_PER_IP_MAX {
            return Err(Refusal::PerAddress);
        }
        *from_source += 1;
        self.handshaking_total += 1;
        self.open += 1;
        Ok(())
    }

    /// A connection from `source` finished its handshake: it leaves the
    /// handshake budget and keeps its place among the open connections.
    pub(crate) fn handshake_done(&mut self, source: IpAddr) {
        self.leave_handshake(source);
    }

    /// A connection from `source` ended; `handshaking` if it never finished
    /// its handshake.
    pub(crate) fn closed(&mut self, source: IpAddr, handshaking: bool) {
        if handshaking {
            self.leave_handshake(source);
        }
        assert!(self.open > 0, "a connection closed that was never admitted");
        self.open -= 1;
    }

    /// Connections in their handshake, in total and from `source`; open connections.
    #[cfg(test)]
    pub(crate) fn counts(&self, source: IpAddr) -> (usize, usize, usize) {
        (self.handshaking_total, self.handshaking.get(&source).copied().unwrap_or(0), self.open)
    }

    fn leave_handshake(&mut self, source: IpAddr) {
        let from_source = self.handshaking.get_mut(&source).expect("a handshaking connection is counted under its source");
        *from_source -= 1;
        if *from_source == 0 {
            // The map holds only sources with connections in their handshake.
            self.handshaking.remove(&source);
        }
        self.handshaking_total -= 1;
    }
}

/// One admitted inbound connection's place in the [`Admission`], given
/// back when dropped.
struct Slot {
    admission: Arc<Mutex<Admission>>,
    source: IpAddr,
    handshaking: bool,
}

impl Slot {
    fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.lock().unwrap_or_else(PoisonError::into_inner).handshake_done(self.source);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.lock().unwrap_or_else(PoisonError::into_inner).closed(self.source, self.handshaking);
    }
}

/// Dials `addr` for `purpose` with `key` as our static key; `payload` is
/// the handshake payload and `pin` the digest the responder's key must have.
pub(crate) async fn dial(d: crate::daemon::io::Dial, tx: Sender<Event>) {
    let crate::daemon::io::Dial { conn, addr, purpose, key, payload, pin, profile } = d;
    let mut cfg = link_config(profile, key);
    let dial_ms = connect_limits_ms(profile).0;
    let mut stream = match net::connect(addr, Duration::from_millis(dial_ms), cfg.idle_timeout_ms).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Event::DialFailed { conn, error: format!("cannot connect to {addr}: {e}") }).await;
            return;
        }
    };
    if profile == LinkProfile::Edge {
        net::set_lossy_link_options_logged(stream.get_ref(), true);
    }
    let preamble = match purpose {
        Purpose::Join => PREAMBLE_JOIN,
        Purpose::Node => PREAMBLE_NODE,
    };
    if let Err(e) = stream.write_all(&[preamble]).await {
        let _ = tx.send(Event::DialFailed { conn, error: format!("cannot write to {addr}: {e}") }).await;
        return;
    }
    cfg.prologue = match purpose {
        Purpose::Join => PROLOGUE_JOIN.to_vec(),
        Purpose::Node => PROLOGUE_NODE.to_vec(),
    };
    cfg.handshake_payload = payload;
    cfg.peer_digest_pin = pin;
    let origin = Instant::now();
    let link = match Link::initiator(cfg, 0) {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Event::DialFailed { conn, error: e.to_string() }).await;
            return;
        }
    };
    run(stream, link, origin, LinkUp { conn, commands: async_channel::bounded(1).0, purpose, outbound: true, remote: addr }, tx).await;
}

/// Announces the link, pumps it, and reports its end.
async fn run(stream: Async<TcpStream>, link: Link, origin: Instant, mut up: LinkUp, tx: Sender<Event>) {
    let conn = up.conn;
    let (handle, chans) = net::channels_with(LINK_COMMANDS_MAX);
    up.commands = handle.commands;
    if tx.send(Event::LinkUp(Box::new(up))).await.is_err() {
        return;
    }
    let driver = smol::spawn(net::drive(stream, link, origin, chans));
    while let Ok(event) = handle.events.recv().await {
        if tx.send(Event::Link { conn, event }).await.is_err() {
            break;
        }
    }
    let _ = driver.await;
    let _ = tx.send(Event::LinkGone { conn }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::bounded;
    use crate::net::{self, now_ms};
    use shoal_shared::noise::key::NodeKey;
    use shoal_shared::noise::link::{Event as LinkEvent, HANDSHAKE_MESSAGE_BYTES_MAX};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn admission_limits_handshakes_per_source_and_in_total() {
        let mut a = Admission::default();
        let (x, y) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        for _ in 0..PREHANDSHAKE_PER_IP_MAX {
            assert_eq!(a.admit(x), Ok(()));
        }
        assert_eq!(a.admit(x), Err(Refusal::PerAddress));
        assert_eq!(a.counts(x), (PREHANDSHAKE_PER_IP_MAX, PREHANDSHAKE_PER_IP_MAX, PREHANDSHAKE_PER_IP_MAX), "a refusal changes nothing");
        assert_eq!(a.admit(y), Ok(()), "another address has its own budget");
        // A finished handshake frees a handshake slot, not the open one.
        a.handshake_done(x);
        assert_eq!(a.counts(x), (PREHANDSHAKE_PER_IP_MAX, PREHANDSHAKE_PER_IP_MAX - 1, PREHANDSHAKE_PER_IP_MAX + 1));
        assert_eq!(a.admit(x), Ok(()));
        a.closed(x, false);
        a.closed(x, true);
        assert_eq!(a.counts(x), (PREHANDSHAKE_PER_IP_MAX, PREHANDSHAKE_PER_IP_MAX - 1, PREHANDSHAKE_PER_IP_MAX));

        // The total: many addresses fill PREHANDSHAKE_MAX.
        let mut a = Admission::default();
        let sources: Vec<IpAddr> = (0..PREHANDSHAKE_MAX).map(|i| v4(10, 1, (i / 250) as u8, (i % 250) as u8)).collect();
        for s in &sources {
            assert_eq!(a.admit(*s), Ok(()));
        }
        assert_eq!(a.admit(x), Err(Refusal::Handshakes));
        for s in &sources {
            a.handshake_done(*s);
        }
        assert_eq!(a.counts(x), (0, 0, PREHANDSHAKE_MAX), "authenticated links keep the larger budget");
        assert!(a.handshaking.is_empty(), "no source is kept once its handshakes are done");
        assert_eq!(a.admit(x), Ok(()));

        // And every open connection counts against INBOUND_CONNECTIONS_MAX.
        let mut a = Admission::default();
        for i in 0..INBOUND_CONNECTIONS_MAX {
            let s = v4(10, 2, (i / 250) as u8, (i % 250) as u8);
            assert_eq!(a.admit(s), Ok(()));
            a.handshake_done(s);
        }
        assert_eq!(a.admit(x), Err(Refusal::Inbound));
        a.closed(v4(10, 2, 0, 0), false);
        assert_eq!(a.admit(x), Ok(()));
    }

    #[test]
    fn sources_are_addresses_and_ipv6_blocks() {
        assert_eq!(source_of(v4(192, 0, 2, 7)), v4(192, 0, 2, 7));
        assert_eq!(source_of(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped())), v4(192, 0, 2, 7));
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xdead, 0xbeef, 0, last));
        assert_eq!(source_of(host(1)), source_of(host(2)), "one host's /64 is one source");
        assert_eq!(source_of(host(1)), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 0)));
        assert_ne!(source_of(host(1)), source_of(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1))));
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_a_count() {
        let mut l = LogEvery::default();
        assert_eq!(l.note(1_000), Some(1), "the first one at once");
        for ms in 1_001..1_500 {
            assert_eq!(l.note(ms), None);
        }
        assert_eq!(l.note(1_000 + REFUSAL_LOG_INTERVAL_MS - 1), None);
        assert_eq!(l.note(1_000 + REFUSAL_LOG_INTERVAL_MS), Some(501));
        assert_eq!(l.note(1_000 + 2 * REFUSAL_LOG_INTERVAL_MS), Some(1));
    }

    /// A connection from `source` (any 127/8 address is local): what peers
    /// on other hosts look like to the per-address limit.
    fn connect_from(source: Ipv4Addr, to: SocketAddr) -> Async<TcpStream> {
        use std::os::fd::FromRawFd;
        let SocketAddr::V4(to) = to else { panic!("tests listen on IPv4") };
        let sin = |a: &SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a fresh socket owned by the TcpStream at once; the
        // addresses live across the calls that read them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let stream = TcpStream::from_raw_fd(fd);
            let from = sin(&SocketAddrV4::new(source, 0));
            assert_eq!(libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len), 0, "bind: {}", std::io::Error::last_os_error());
            let dest = sin(&to);
            assert_eq!(
                libc::connect(fd, (&dest as *const libc::sockaddr_in).cast(), len),
                0,
                "connect: {}",
                std::io::Error::last_os_error()
            );
            Async::new(stream).unwrap()
        }
    }

    /// A listener with a fresh node key, its event receiver, and its task.
    fn start() -> (SocketAddr, async_channel::Receiver<Event>, smol::Task<()>) {
        let l = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = l.get_ref().local_addr().unwrap();
        let keys =
            Arc::new(Mutex::new(ListenKeys { node: *NodeKey::generate().unwrap().private(), cluster: None, profile: LinkProfile::Lan }));
        let (tx, rx) = async_channel::bounded(64);
        (addr, rx, smol::spawn(listen(l, keys, Arc::new(AtomicU64::new(1)), tx)))
    }

    /// Whether the peer closed `s` (EOF or reset), waiting for it.
    async fn closed(s: &Async<TcpStream>) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match (&*s).read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }

    #[test]
    fn stalled_handshakes_past_the_per_address_limit_are_closed_at_once() {
        smol::block_on(bounded(async {
            let (addr, events, _listener) = start();
            // Stalled peers from one address: the preamble and half a frame length.
            let from = Ipv4Addr::new(127, 0, 0, 1);
            let mut stalled = Vec::new();
            for _ in 0..PREHANDSHAKE_PER_IP_MAX + 3 {
                let s = connect_from(from, addr);
                (&s).write_all(&[PREAMBLE_NODE, 0]).await.unwrap();
                stalled.push(s);
            }
            // Those past the limit are closed at once...
            for s in &stalled[PREHANDSHAKE_PER_IP_MAX..] {
                assert!(closed(s).await);
            }
            // ...while the first ones still wait for their handshake.
            for (i, s) in stalled[..PREHANDSHAKE_PER_IP_MAX].iter().enumerate() {
                let mut buf = [0u8; 8];
                let r = s.get_ref().peek(&mut buf);
                assert_eq!(r.map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock), "stalled connection {i}");
            }
            // A node from another address is authenticated and reaches the loop.
            let client = NodeKey::generate().unwrap();
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr);
            (&s).write_all(&[PREAMBLE_NODE]).await.unwrap();
            let origin = Instant::now();
            let config = LinkConfig { prologue: PROLOGUE_NODE.to_vec(), ..LinkConfig::lan(*client.private()) };
            let mut link = Link::initiator(config, now_ms(origin)).unwrap();
            net::handshake(&s, &mut link, origin).await.unwrap();
            match events.recv().await.unwrap() {
                Event::LinkUp(up) => {
                    assert_eq!(up.remote.ip(), v4(127, 0, 0, 2), "no stalled connection reached the loop");
                    assert_eq!((up.purpose, up.outbound), (Purpose::Node, false));
                }
                _ => panic!("expected LinkUp first"),
            }
            match events.recv().await.unwrap() {
                Event::Link { event: LinkEvent::Established { peer_static, .. }, .. } => assert_eq!(peer_static, *client.public()),
                _ => panic!("expected Established"),
            }
        }));
    }

    #[test]
    fn a_peer_trickling_its_handshake_is_closed_at_the_deadline() {
        smol::block_on(bounded(async {
            let (addr, events, _listener) = start();
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr);
            // The largest handshake frame, one byte at a time: never silent
            // for the idle timeout, never done.
            let len = (HANDSHAKE_MESSAGE_BYTES_MAX as u16).to_be_bytes();
            (&s).write_all(&[PREAMBLE_NODE, len[0], len[1]]).await.unwrap();
            let mut trickled = 0;
            let closed_by_listener = loop {
                let tick = async {
                    Timer::after(Duration::from_millis(500)).await;
                    false
                };
                if closed(&s).or(tick).await || (&s).write_all(&[0]).await.is_err() {
                    break true;
                }
                trickled += 1;
                assert!(trickled < HANDSHAKE_MESSAGE_BYTES_MAX, "the frame completed before any deadline");
            };
            assert!(closed_by_listener);
            assert!(trickled >= 2, "closed while it kept sending, not for silence ({trickled} bytes)");
            assert!(events.is_empty(), "a connection that never finished its handshake never reaches the loop");
        }));
    }
}
