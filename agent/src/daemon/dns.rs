//! The embedded DNS server's shell (issue #12): one small loop of its own,
//! apart from the daemon's, that owns the `shoal_dns` resolver core, one UDP
//! socket per task namespace (bound to 127.0.0.11:53 inside it by the task's
//! start job) and one forwarding socket in the daemon's own namespace (the
//! node's resolvers are often on its loopback, unreachable from a task).
//!
//! The daemon talks to it only through [`DnsHandle`] commands: the names
//! per network (`SetView`, whenever the node's assignments change), a task's
//! listener (`Listen`, from its start job) and its end (`Forget`). DNS
//! traffic never waits on the daemon's loop, and the daemon's loop never
//! waits on DNS: commands are `try_send`, bounded by [`COMMANDS_MAX`].

use async_channel::{Receiver, Sender};
use async_io::{Async, Timer};
use shoal_dns::resolver::{ListenerId, Resolver};
use shoal_dns::view::View;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commands queued to the DNS loop, at most.
pub(crate) const COMMANDS_MAX: usize = 256;
/// Datagrams queued from the sockets to the loop, at most (more are dropped;
/// clients retry).
const DATAGRAMS_MAX: usize = 1024;
/// How often the loop looks at the resolver's deadlines.
const TICK_MS: u64 = 100;
/// Largest datagram read.
const DATAGRAM_BYTES_MAX: usize = shoal_dns::resolver::QUERY_BYTES_MAX;

/// What the daemon tells the DNS loop.
pub(crate) enum DnsCommand {
    /// The names per network, whole.
    SetView(View),
    /// Task `task_id`'s listener socket, on these networks.
    Listen { task_id: String, socket: UdpSocket, networks: Vec<String> },
    /// Task `task_id` is gone.
    Forget { task_id: String },
}

/// The daemon's end: commands are dropped (and logged once in a while by
/// the caller) when the loop is behind.
#[derive(Clone)]
pub(crate) struct DnsHandle(Sender<DnsCommand>);

impl DnsHandle {
    pub(crate) fn send(&self, c: DnsCommand) -> bool {
        self.0.try_send(c).is_ok()
    }
}

enum Input {
    Command(DnsCommand),
    Query { listener: ListenerId, bytes: Vec<u8>, from: SocketAddr },
    Upstream { from: SocketAddr, bytes: Vec<u8> },
    Tick,
}

/// Starts the DNS loop on smol's executor; `upstreams` are the node's
/// resolvers (`/etc/resolv.conf`), `seed` its randomness (forward ids).
pub(crate) fn spawn(upstreams: Vec<SocketAddr>, seed: u64) -> DnsHandle {
    let (tx, rx) = async_channel::bounded(COMMANDS_MAX);
    smol::spawn(run(rx, upstreams, seed)).detach();
    DnsHandle(tx)
}

/// Reads datagrams from `sock` into the loop until it fails or the loop is gone.
async fn pump(sock: Arc<Async<UdpSocket>>, tx: Sender<Input>, wrap: impl Fn(Vec<u8>, SocketAddr) -> Input) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // A full queue drops the datagram: the client asks again.
                if tx.try_send(wrap(buf[..n].to_vec(), from)).is_err() && tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn run(commands: Receiver<DnsCommand>, upstreams: Vec<SocketAddr>, seed: u64) {
    let (tx, rx) = async_channel::bounded::<Input>(DATAGRAMS_MAX);
    let origin = Instant::now();
    let now_ms = || origin.elapsed().as_millis() as u64;
    let mut resolver = Resolver::new(seed);
    resolver.set_upstreams(upstreams);
    // The forwarding socket, in the daemon's namespace.
    let forward = match UdpSocket::bind("0.0.0.0:0").and_then(Async::new) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            crate::log!("WARN", "dns: no forwarding socket ({e}): names outside the swarm will not resolve in tasks");
            None
        }
    };
    if let Some(f) = &forward {
        smol::spawn(pump(f.clone(), tx.clone(), |bytes, from| Input::Upstream { from, bytes })).detach();
    }
    {
        let tx = tx.clone();
        smol::spawn(async move {
            while let Ok(c) = commands.recv().await {
                if tx.send(Input::Command(c)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    {
        let tx = tx.clone();
        smol::spawn(async move {
            loop {
                Timer::after(Duration::from_millis(TICK_MS)).await;
                if tx.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    let mut listeners: HashMap<ListenerId, (Arc<Async<UdpSocket>>, smol::Task<()>)> = HashMap::new();
    let mut by_task: HashMap<String, ListenerId> = HashMap::new();
    let mut next_id = 0u64;
    while let Ok(input) = rx.recv().await {
        match input {
            Input::Command(DnsCommand::SetView(v)) => resolver.set_view(v),
            Input::Command(DnsCommand::Listen { task_id, socket, networks }) => {
                let Ok(sock) = socket.set_nonblocking(true).and_then(|()| Async::new(socket)) else { continue };
                next_id += 1;
                let id = ListenerId(next_id);
                let sock = Arc::new(sock);
                let reader = smol::spawn(pump(sock.clone(), tx.clone(), move |bytes, from| Input::Query { listener: id, bytes, from }));
                if let Some(old) = by_task.insert(task_id, id) {
                    listeners.remove(&old);
                    resolver.remove_listener(old);
                }
                listeners.insert(id, (sock, reader));
                resolver.set_listener(id, networks);
            }
            Input::Command(DnsCommand::Forget { task_id }) => {
                if let Some(id) = by_task.remove(&task_id) {
                    // Dropping the reader task and the socket closes it.
                    listeners.remove(&id);
                    resolver.remove_listener(id);
                }
            }
            Input::Query { listener, bytes, from } => resolver.handle_query(listener, &bytes, from, now_ms()),
            Input::Upstream { from, bytes } => resolver.handle_upstream_reply(from, &bytes, now_ms()),
            Input::Tick => resolver.handle_timeout(now_ms()),
        }
        let mut io = Sockets { listeners: &listeners, forward: forward.as_deref() };
        shoal_dns::shell::drain(&mut resolver, &mut io);
    }
}

/// Sends through the loop's sockets without waiting (a datagram that would
/// block is lost, as DNS allows).
struct Sockets<'a> {
    listeners: &'a HashMap<ListenerId, (Arc<Async<UdpSocket>>, smol::Task<()>)>,
    forward: Option<&'a Async<UdpSocket>>,
}

impl shoal_dns::shell::Io for Sockets<'_> {
    fn send_reply(&mut self, listener: ListenerId, to: SocketAddr, bytes: &[u8]) {
        if let Some((s, _)) = self.listeners.get(&listener) {
            let _ = s.get_ref().send_to(bytes, to);
        }
    }

    fn send_forward(&mut self, upstream: SocketAddr, bytes: &[u8]) {
        if let Some(s) = self.forward {
            let _ = s.get_ref().send_to(bytes, upstream);
        }
    }
}
