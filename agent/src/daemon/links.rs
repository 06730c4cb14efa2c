//! Connection tasks on the swarm port: accepting, dialing, and pumping one
//! Noise [`Link`] per TCP connection between the socket and the event loop.
//!
//! Owns nothing the loop decides: every connection gets a number (`conn`),
//! announces itself with [`Event::LinkUp`] (carrying the command sender the
//! loop uses to send on it), forwards each link event as [`Event::Link`] and
//! ends with exactly one [`Event::LinkGone`] (or [`Event::DialFailed`] when
//! it never connected). Whether a peer is welcome is the loop's decision,
//! made on `Established`.
//!
//! Limits: the cleartext preamble must arrive within `PREAMBLE_TIMEOUT_MS`,
//! dials give up after `DIAL_TIMEOUT_MS`, each link queues at most
//! `LINK_COMMANDS_MAX` outgoing messages (the loop closes a link that cannot
//! keep up), and at most `INBOUND_CONNECTIONS_MAX` inbound connections are
//! served at once (a flood cannot make the node do unbounded work).

use super::Event;
use crate::net;
use async_channel::Sender;
use async_io::{Async, Timer};
use futures_lite::future::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use shoal_shared::noise::link::{Link, LinkConfig};
use shoal_shared::wire::{PREAMBLE_JOIN, PREAMBLE_NODE, PROLOGUE_JOIN, PROLOGUE_NODE};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an accepted connection may take to send its preamble byte.
pub const PREAMBLE_TIMEOUT_MS: u64 = 3_000;
/// How long a dial may take to connect.
pub const DIAL_TIMEOUT_MS: u64 = 2_000;
/// Outgoing messages queued per link before the loop gives up on it.
pub const LINK_COMMANDS_MAX: usize = 4_096;
/// Inbound connections served at once (a fleet of workers plus managers).
pub const INBOUND_CONNECTIONS_MAX: usize = 4_096;

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
}

/// Connection numbers, shared by the listener and the loop's dials.
pub(crate) type ConnIds = Arc<AtomicU64>;

/// Accepts connections on `listener` until the task is dropped.
pub(crate) async fn listen(listener: Async<TcpListener>, keys: Arc<Mutex<ListenKeys>>, ids: ConnIds, tx: Sender<Event>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                crate::log!("WARN", "swarm port accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= INBOUND_CONNECTIONS_MAX {
            crate::log!("WARN", "refused connection from {remote}: {INBOUND_CONNECTIONS_MAX} connections already open");
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let conn = ids.fetch_add(1, Ordering::SeqCst);
        let (keys, tx, open) = (keys.clone(), tx.clone(), open.clone());
        smol::spawn(async move {
            let r = inbound(stream, remote, conn, keys, tx).await;
            open.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = r {
                crate::log!("WARN", "dropped connection from {remote}: {e}");
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
) -> Result<(), String> {
    let _ = stream.get_ref().set_nodelay(true);
    let mut preamble = [0u8; 1];
    stream
        .read_exact(&mut preamble)
        .or(async {
            Timer::after(Duration::from_millis(PREAMBLE_TIMEOUT_MS)).await;
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no preamble"))
        })
        .await
        .map_err(|e| format!("no preamble within {PREAMBLE_TIMEOUT_MS} ms: {e}"))?;
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
    let mut cfg = LinkConfig::lan(key);
    cfg.prologue = prologue.to_vec();
    let origin = Instant::now();
    let link = Link::responder(cfg, 0).map_err(|e| e.to_string())?;
    run(stream, link, origin, LinkUp { conn, commands: async_channel::bounded(1).0, purpose, outbound: false, remote }, tx).await;
    Ok(())
}

/// Dials `addr` for `purpose` with `key` as our static key; `payload` is
/// the handshake payload and `pin` the digest the responder's key must have.
pub(crate) async fn dial(
    conn: u64,
    addr: SocketAddr,
    purpose: Purpose,
    key: [u8; 32],
    payload: Vec<u8>,
    pin: Option<[u8; 32]>,
    tx: Sender<Event>,
) {
    let mut stream = match net::connect(addr, Duration::from_millis(DIAL_TIMEOUT_MS)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Event::DialFailed { conn, error: format!("cannot connect to {addr}: {e}") }).await;
            return;
        }
    };
    let preamble = match purpose {
        Purpose::Join => PREAMBLE_JOIN,
        Purpose::Node => PREAMBLE_NODE,
    };
    if let Err(e) = stream.write_all(&[preamble]).await {
        let _ = tx.send(Event::DialFailed { conn, error: format!("cannot write to {addr}: {e}") }).await;
        return;
    }
    let mut cfg = LinkConfig::lan(key);
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
