//! The simulated swarm network: listeners, dials and TCP-like connections
//! carrying the real Noise [`Link`] cores, with latency, stalls and resets.
//!
//! Owns [`Net`]. It plays the part of `daemon::links` and `net::drive` for
//! every node of a simulated cluster, byte for byte: a dial becomes a
//! `LinkUp` at once (as `links::dial` announces after connect), an inbound
//! connection is announced only after its handshake (as `links::inbound`),
//! every link event becomes `Event::Link` and a finished link exactly one
//! `LinkGone`. Connections behave as TCP does: each direction delivers in
//! order, so a fault never drops or duplicates a frame inside a connection;
//! faults are what TCP users see instead:
//! - latency with jitter, and rare slow frames (reordering across connections);
//! - stalls: a blocked direction (partition, asymmetric or not) holds its
//!   frames until healed, and links time out on their own idle timers;
//! - resets: both ends read EOF at once (a lost connection);
//! - dials to a node that is down are refused, dials across a partition time
//!   out after `DIAL_TIMEOUT_MS`;
//! - a killed process's ends send EOF; a power-cut node's ends go silent and
//!   answer later bytes with a reset.

use crate::daemon::io::Dial;
use crate::daemon::links::{ConnIds, LinkUp, ListenKeys, Purpose, DIAL_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS};
use crate::daemon::Event;
use crate::net::Command;
use async_channel::{Receiver, TryRecvError};
use shoal_shared::noise::link::{Link, LinkConfig};
use shoal_shared::rng::Rng;
use shoal_shared::wire::{PROLOGUE_JOIN, PROLOGUE_NODE};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Outgoing messages queued per simulated link (as `links::LINK_COMMANDS_MAX`).
const LINK_COMMANDS_MAX: usize = crate::daemon::links::LINK_COMMANDS_MAX;

/// A node's incarnation: bumped by every crash, so events of a dead
/// process never reach its successor.
pub(crate) type Inc = u64;

/// Something for a node's loop, tagged with the incarnation it is for.
pub(crate) struct Delivery {
    pub node: usize,
    pub inc: Inc,
    pub event: Event,
}

struct Listener {
    node: usize,
    inc: Inc,
    keys: Arc<Mutex<ListenKeys>>,
    ids: ConnIds,
}

enum Frame {
    Bytes(Vec<u8>),
    Eof,
}

/// One end of a connection.
struct End {
    node: usize,
    inc: Inc,
    /// The daemon's number for this connection.
    conn: u64,
    link: Link,
    /// The loop's commands, once announced.
    commands: Option<Receiver<Command>>,
    purpose: Purpose,
    outbound: bool,
    remote: SocketAddr,
    /// `LinkGone` sent (or, for an inbound end never announced, given up).
    gone: bool,
    /// Its process died: it sends nothing and answers bytes with a reset.
    dead: bool,
}

/// A connection: end 0 dialed, end 1 accepted. `flight[d]` holds frames
/// from end `d` to end `1 - d` with their delivery times.
struct Pipe {
    ends: [End; 2],
    flight: [VecDeque<(u64, Frame)>; 2],
}

/// A dial waiting to fail.
struct FailingDial {
    at_ms: u64,
    node: usize,
    inc: Inc,
    conn: u64,
    error: String,
}

/// The network of one simulated cluster.
#[derive(Default)]
pub(crate) struct Net {
    listeners: BTreeMap<SocketAddr, Listener>,
    pipes: BTreeMap<u64, Pipe>,
    next_pipe: u64,
    failing: Vec<FailingDial>,
    /// Directed blocks: frames from `.0` to `.1` wait.
    blocked: BTreeSet<(usize, usize)>,
    /// Node addresses (index = node).
    pub(crate) ips: Vec<std::net::IpAddr>,
}

impl Net {
    /// Binds `addr` (an unspecified IP means the node's own) for `node`.
    pub(crate) fn listen(
        &mut self,
        node: usize,
        inc: Inc,
        addr: SocketAddr,
        keys: Arc<Mutex<ListenKeys>>,
        ids: ConnIds,
    ) -> Result<SocketAddr, String> {
        let bound = if addr.ip().is_unspecified() { SocketAddr::new(self.ips[node], addr.port()) } else { addr };
        if bound.ip() != self.ips[node] {
            return Err(format!("cannot listen on {addr}: cannot assign requested address"));
        }
        if self.listeners.get(&bound).is_some_and(|l| l.node == node && l.inc == inc) {
            return Err(format!("cannot listen on {addr}: address already in use"));
        }
        self.listeners.insert(bound, Listener { node, inc, keys, ids });
        Ok(bound)
    }

    /// Stops the listener `node` (incarnation `inc`) has on `addr`.
    pub(crate) fn unlisten(&mut self, node: usize, inc: Inc, addr: SocketAddr) {
        if self.listeners.get(&addr).is_some_and(|l| l.node == node && l.inc == inc) {
            self.listeners.remove(&addr);
        }
    }

    /// A node's process died: its listeners go, its ends stop. A killed
    /// process's kernel closes its sockets (the peers read EOF); a power
    /// cut sends nothing.
    pub(crate) fn node_died(&mut self, node: usize, power_cut: bool) {
        self.listeners.retain(|_, l| l.node != node);
        self.failing.retain(|f| f.node != node);
        for pipe in self.pipes.values_mut() {
            for d in 0..2 {
                let end = &mut pipe.ends[d];
                if end.node == node && !end.dead {
                    end.dead = true;
                    end.gone = true;
                    end.commands = None;
                    if !power_cut {
                        pipe.flight[d].push_back((0, Frame::Eof));
                    }
                }
            }
        }
    }

    pub(crate) fn block(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
    }

    pub(crate) fn is_blocked(&self, a: usize, b: usize) -> bool {
        self.blocked.contains(&(a, b)) || self.blocked.contains(&(b, a))
    }

    /// Whether a live, announced link joins `a` and `b` (either direction).
    pub(crate) fn linked(&self, a: usize, b: usize) -> bool {
        self.pipes.values().any(|p| {
            let [x, y] = &p.ends;
            let pair = (x.node == a && y.node == b) || (x.node == b && y.node == a);
            pair && !x.gone && !y.gone && x.link.is_established() && y.link.is_established()
        })
    }

    /// Resets one random live connection: both ends read EOF now.
    pub(crate) fn reset_one(&mut self, rng: &mut Rng) -> bool {
        let live: Vec<u64> = self.pipes.iter().filter(|(_, p)| p.ends.iter().all(|e| !e.gone)).map(|(id, _)| *id).collect();
        if live.is_empty() {
            return false;
        }
        let id = live[(rng.next_u64() % live.len() as u64) as usize];
        if let Some(p) = self.pipes.get_mut(&id) {
            for e in &mut p.ends {
                e.link.handle_eof();
            }
        }
        true
    }

    /// Opens `d` for `node`: refused when nobody listens, timed out across a
    /// partition, connected otherwise (the dialer is announced at once).
    pub(crate) fn dial(&mut self, now_ms: u64, node: usize, inc: Inc, d: Dial, out: &mut Vec<Delivery>) {
        let Some(l) = self.listeners.get(&d.addr) else {
            let error = format!("cannot connect to {}: Connection refused (os error 111)", d.addr);
            self.failing.push(FailingDial { at_ms: now_ms + 1, node, inc, conn: d.conn, error });
            return;
        };
        let to = l.node;
        if self.is_blocked(node, to) {
            let error = format!("cannot connect to {}: connecting to {} timed out after {DIAL_TIMEOUT_MS} ms", d.addr, d.addr);
            self.failing.push(FailingDial { at_ms: now_ms + DIAL_TIMEOUT_MS, node, inc, conn: d.conn, error });
            return;
        }
        let prologue = match d.purpose {
            Purpose::Join => PROLOGUE_JOIN,
            Purpose::Node => PROLOGUE_NODE,
        };
        let mut cfg = LinkConfig::lan(d.key);
        cfg.prologue = prologue.to_vec();
        cfg.handshake_payload = d.payload;
        cfg.peer_digest_pin = d.pin;
        let dialer_link = match Link::initiator(cfg, now_ms) {
            Ok(l) => l,
            Err(e) => {
                out.push(Delivery { node, inc, event: Event::DialFailed { conn: d.conn, error: e.to_string() } });
                return;
            }
        };
        // The listener's side: the key its preamble asks for.
        let key = {
            let k = l.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match d.purpose {
                Purpose::Join => k.cluster,
                Purpose::Node => Some(k.node),
            }
        };
        let accepted = key.and_then(|key| {
            let mut cfg = LinkConfig::lan(key);
            cfg.prologue = prologue.to_vec();
            cfg.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
            Link::responder(cfg, now_ms).ok()
        });
        let (tx, rx) = async_channel::bounded(LINK_COMMANDS_MAX);
        out.push(Delivery {
            node,
            inc,
            event: Event::LinkUp(Box::new(LinkUp { conn: d.conn, commands: tx, purpose: d.purpose, outbound: true, remote: d.addr })),
        });
        let dialer = End {
            node,
            inc,
            conn: d.conn,
            link: dialer_link,
            commands: Some(rx),
            purpose: d.purpose,
            outbound: true,
            remote: d.addr,
            gone: false,
            dead: false,
        };
        let remote = SocketAddr::new(self.ips[node], 40_000 + (self.next_pipe % 20_000) as u16);
        let (accept_link, refused) = match accepted {
            Some(link) => (link, false),
            // A join on a node that is not a manager: the listener closes at once.
            None => (Link::responder(LinkConfig::lan([1; 32]), now_ms).expect("a fixed responder config is valid"), true),
        };
        let acceptor = End {
            node: to,
            inc: l.inc,
            conn: l.ids.fetch_add(1, Ordering::SeqCst),
            link: accept_link,
            commands: None,
            purpose: d.purpose,
            outbound: false,
            remote,
            gone: refused,
            dead: false,
        };
        let mut pipe = Pipe { ends: [dialer, acceptor], flight: [VecDeque::new(), VecDeque::new()] };
        if refused {
            pipe.flight[1].push_back((now_ms + 1, Frame::Eof));
        }
        self.pipes.insert(self.next_pipe, pipe);
        self.next_pipe += 1;
    }

    /// The earliest time something is due (a frame, a dial's failure, a link timer).
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        let mut due: Option<u64> = self.failing.iter().map(|f| f.at_ms).min();
        let mut take = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
        for p in self.pipes.values() {
            for d in 0..2 {
                let (from, to) = (p.ends[d].node, p.ends[1 - d].node);
                if let Some((at, _)) = p.flight[d].front() {
                    if !self.blocked.contains(&(from, to)) {
                        take(*at);
                    }
                }
                if !p.ends[d].gone {
                    if let Some(t) = p.ends[d].link.deadline_ms() {
                        take(t);
                    }
                }
            }
        }
        due
    }

    /// Moves everything due at `now_ms`: failed dials, frames, link timers,
    /// the loops' commands, link events. Events go to `out`.
    pub(crate) fn pump(&mut self, now_ms: u64, rng: &mut Rng, out: &mut Vec<Delivery>) {
        let failing = std::mem::take(&mut self.failing);
        for f in failing {
            if f.at_ms <= now_ms {
                out.push(Delivery { node: f.node, inc: f.inc, event: Event::DialFailed { conn: f.conn, error: f.error } });
            } else {
                self.failing.push(f);
            }
        }
        let blocked = &self.blocked;
        for pipe in self.pipes.values_mut() {
            // Deliveries first, then each end's own work.
            for d in 0..2 {
                let (from, to) = (pipe.ends[d].node, pipe.ends[1 - d].node);
                if blocked.contains(&(from, to)) {
                    continue;
                }
                while pipe.flight[d].front().is_some_and(|(at, _)| *at <= now_ms) {
                    let Some((_, frame)) = pipe.flight[d].pop_front() else { break };
                    let recv = &mut pipe.ends[1 - d];
                    if recv.dead {
                        // Bytes to a dead process: answered with a reset at once (as its
                        // kernel would after a kill or a reboot; a host still off stays silent
                        // in life, which the peer's idle timer covers just the same).
                        if matches!(frame, Frame::Bytes(_)) && !pipe.ends[d].gone {
                            pipe.flight[1 - d].push_back((now_ms + latency_ms(rng), Frame::Eof));
                        }
                        continue;
                    }
                    match frame {
                        Frame::Bytes(b) => recv.link.handle_bytes(&b),
                        Frame::Eof => recv.link.handle_eof(),
                    }
                }
            }
            for d in 0..2 {
                let end = &mut pipe.ends[d];
                if end.gone || end.dead {
                    continue;
                }
                if let Some(rx) = &end.commands {
                    // As `net::drive`: commands while the link is open; all senders gone closes it.
                    loop {
                        if end.link.is_closed() {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(Command::Send(b)) => {
                                if let Err(e) = end.link.send(&b) {
                                    end.link.close(&e.to_string());
                                    out.push(Delivery {
                                        node: end.node,
                                        inc: end.inc,
                                        event: Event::Link { conn: end.conn, event: shoal_shared::noise::link::Event::Closed(e) },
                                    });
                                }
                            }
                            Ok(Command::Close(reason)) => end.link.close(&reason),
                            Ok(Command::SetTiming { keepalive_interval_ms, idle_timeout_ms, .. }) => {
                                let _ = end.link.set_timing(keepalive_interval_ms, idle_timeout_ms);
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => {
                                end.link.close("shutting down");
                                break;
                            }
                        }
                    }
                }
                end.link.tick(now_ms);
                let last = pipe.flight[d].back().map_or(0, |(at, _)| *at);
                while let Some(frame) = end.link.poll_transmit() {
                    let at = (now_ms + latency_ms(rng)).max(last);
                    pipe.flight[d].push_back((at, Frame::Bytes(frame)));
                }
                if end.commands.is_none() && !end.outbound {
                    // Inbound: announced only once its handshake is done (a failed one is never seen).
                    if end.link.is_established() {
                        let (tx, rx) = async_channel::bounded(LINK_COMMANDS_MAX);
                        end.commands = Some(rx);
                        let up = LinkUp { conn: end.conn, commands: tx, purpose: end.purpose, outbound: false, remote: end.remote };
                        out.push(Delivery { node: end.node, inc: end.inc, event: Event::LinkUp(Box::new(up)) });
                    } else if end.link.is_closed() {
                        end.gone = true;
                        pipe.flight[d].push_back((now_ms + latency_ms(rng), Frame::Eof));
                        continue;
                    } else {
                        continue;
                    }
                }
                while let Some(event) = end.link.poll_event() {
                    out.push(Delivery { node: end.node, inc: end.inc, event: Event::Link { conn: end.conn, event } });
                }
                if end.link.is_closed() {
                    end.gone = true;
                    end.commands = None;
                    let last = pipe.flight[d].back().map_or(0, |(at, _)| *at);
                    pipe.flight[d].push_back(((now_ms + latency_ms(rng)).max(last), Frame::Eof));
                    out.push(Delivery { node: end.node, inc: end.inc, event: Event::LinkGone { conn: end.conn } });
                }
            }
        }
        self.pipes.retain(|_, p| !(p.ends.iter().all(|e| e.gone) && p.flight.iter().all(VecDeque::is_empty)));
    }
}

/// One frame's trip: 1-5 ms, one in a hundred 50-300 ms (a slow path:
/// frames on other connections overtake it).
fn latency_ms(rng: &mut Rng) -> u64 {
    let r = rng.next_u64();
    if r.is_multiple_of(100) {
        50 + (r >> 8) % 250
    } else {
        1 + (r >> 8) % 5
    }
}
