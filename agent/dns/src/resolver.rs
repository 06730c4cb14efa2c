//! The resolver core: answers swarm names from the [`View`] at once and
//! forwards every other query to the node's upstreams, sans IO.
//!
//! Inputs: [`Resolver::handle_query`] (bytes a task sent to 127.0.0.11),
//! [`Resolver::handle_upstream_reply`] (bytes an upstream sent back) and
//! [`Resolver::handle_timeout`] (the clock passed [`Resolver::poll_timeout`]).
//! Outputs: [`Effect`]s pulled with [`Resolver::poll_effect`] after each
//! input. Time is `now_ms` (monotonic), randomness a seed: the shell seeds
//! from the OS, because forwarded query ids must be unpredictable to resist
//! spoofed replies (the shell also sends forwards from a random source port).
//!
//! What a query gets, following Docker's embedded DNS:
//! - a hostile or malformed query with a readable header: FORMERR; a
//!   response, or fewer than 12 bytes: nothing (never answer a response, so
//!   two resolvers cannot loop);
//! - a swarm name visible on the listener's networks: A records (TTL
//!   [`TTL_SECS`], shuffled so clients spread over tasks), AAAA records or an
//!   empty NOERROR when it has none, PTR for VIPs and task IPs, and an empty
//!   NOERROR for any other type (the name exists; it is not leaked upstream);
//! - anything else: forwarded with a fresh id to the first upstream; after
//!   [`FORWARD_TIMEOUT_MS`] of silence, or a failure answer (SERVFAIL,
//!   REFUSED, a non-authoritative NXDOMAIN, any other error: Docker's rule,
//!   which lets split-horizon upstreams answer), to the next; the last
//!   upstream's answer is relayed as is, its silence becomes SERVFAIL. No
//!   upstream, or more than [`FORWARDS_IN_FLIGHT_MAX`] forwards in flight
//!   ([`FORWARDS_PER_LISTENER_MAX`] for one task): SERVFAIL at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::message::{first_question, Header, Message, Name, Question, RData, Rcode, Record, Type, CLASS_IN, RECORDS_PER_SECTION_MAX};
use crate::resolv_conf::UPSTREAMS_MAX;
use crate::view::View;

/// TTL of local answers (Docker's `respTTL`).
pub const TTL_SECS: u32 = 600;
/// Forwards waiting for an upstream, all listeners together.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 1024;
/// Forwards waiting for an upstream from one listener (one task), so a
/// noisy task cannot take every slot.
pub const FORWARDS_PER_LISTENER_MAX: usize = 256;
/// How long one upstream may take before the next is asked.
pub const FORWARD_TIMEOUT_MS: u64 = 2_000;
/// Queries longer than this get FORMERR (real ones are a few hundred bytes);
/// it bounds what forwards in flight hold.
pub const QUERY_BYTES_MAX: usize = 4_096;
/// The largest UDP answer written, whatever EDNS size a client offers.
pub const UDP_REPLY_BYTES_MAX: usize = 4_096;

/// Random tries for a free forward id before a scan (ids in use are at most
/// 1024 of 65536, so a try fails with probability under 1/64).
const ID_TRIES_MAX: usize = 16;

/// One socket the resolver answers on (one task's 127.0.0.11:53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u64);

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `bytes` to `to` from the listener's socket.
    Reply { listener: ListenerId, to: SocketAddr, bytes: Vec<u8> },
    /// Send `bytes` (a query whose id is `id`) to `upstream` from the host
    /// namespace's forwarding socket.
    Forward { id: u16, upstream: SocketAddr, bytes: Vec<u8> },
}

/// Counters for `shoal info`-style reporting and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Queries answered from the view.
    pub answered: u64,
    /// Queries sent upstream (each retry counts).
    pub forwarded: u64,
    /// Upstream answers relayed to a client.
    pub relayed: u64,
    pub servfail: u64,
    pub formerr: u64,
    /// Datagrams ignored: no header, a response, a stray upstream reply.
    pub dropped: u64,
}

/// A forwarded query waiting for an upstream.
struct Pending {
    listener: ListenerId,
    client: SocketAddr,
    client_id: u16,
    question: Question,
    /// The query as sent upstream (the forward id in its header).
    query: Vec<u8>,
    /// Upstreams asked so far, in order; the last is the one waited for.
    tried: Vec<SocketAddr>,
    deadline_ms: u64,
}

/// The embedded DNS server's state: the view, the listeners' networks, the
/// upstreams and the forwards in flight.
pub struct Resolver {
    view: View,
    listeners: HashMap<ListenerId, Vec<String>>,
    upstreams: Vec<SocketAddr>,
    pending: HashMap<u16, Pending>,
    /// (deadline, id) of every pending forward.
    deadlines: BTreeSet<(u64, u16)>,
    per_listener: HashMap<ListenerId, usize>,
    rng: XorShift,
    effects: VecDeque<Effect>,
    stats: Stats,
}

impl Resolver {
    /// An empty resolver: no names, no listeners, no upstreams.
    pub fn new(seed: u64) -> Resolver {
        Resolver {
            view: View::new(),
            listeners: HashMap::new(),
            upstreams: Vec::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            per_listener: HashMap::new(),
            rng: XorShift::new(seed),
            effects: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Replaces what the node knows (built whole by the daemon on change).
    pub fn set_view(&mut self, view: View) {
        self.view = view;
    }

    /// Registers (or updates) a listener and the network ids its task is
    /// attached to: the only networks whose names its queries see.
    pub fn set_listener(&mut self, listener: ListenerId, network_ids: Vec<String>) {
        self.listeners.insert(listener, network_ids);
    }

    /// Forgets a listener (its task stopped) and its forwards in flight.
    pub fn remove_listener(&mut self, listener: ListenerId) {
        self.listeners.remove(&listener);
        let ids: Vec<u16> = self.pending.iter().filter(|(_, p)| p.listener == listener).map(|(id, _)| *id).collect();
        for id in ids {
            self.take_pending(id);
        }
    }

    /// Sets the upstreams (from resolv.conf), at most [`UPSTREAMS_MAX`] used.
    /// Forwards in flight keep the upstream they wait for.
    pub fn set_upstreams(&mut self, mut upstreams: Vec<SocketAddr>) {
        upstreams.truncate(UPSTREAMS_MAX);
        self.upstreams = upstreams;
    }

    /// A datagram arrived on a listener from a task.
    pub fn handle_query(&mut self, listener: ListenerId, bytes: &[u8], from: SocketAddr, now_ms: u64) {
        let Some(header) = Header::decode(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        if header.response {
            self.stats.dropped += 1;
            return;
        }
        let query = match Message::decode(bytes) {
            Ok(query) if bytes.len() <= QUERY_BYTES_MAX && query.questions.len() == 1 => query,
            _ => return self.reply_error(listener, from, &header, None, Rcode::FORMERR),
        };
        let question = &query.questions[0];
        if header.opcode != 0 {
            return self.reply_error(listener, from, &header, Some(question), Rcode::NOTIMP);
        }
        match self.answer_local(listener, question) {
            Some(answers) => {
                let bytes_max = query.udp_payload_bytes().min(UDP_REPLY_BYTES_MAX);
                let reply = reply_message(&header, Some(question), Rcode::NOERROR, answers);
                match reply.encode_truncated(true, bytes_max) {
                    Ok(bytes) => {
                        self.stats.answered += 1;
                        self.effects.push_back(Effect::Reply { listener, to: from, bytes });
                    }
                    Err(_) => self.reply_error(listener, from, &header, Some(question), Rcode::SERVFAIL),
                }
            }
            None => self.forward(listener, from, &header, question, bytes, now_ms),
        }
    }

    /// A datagram arrived on the forwarding socket from `from`. Relayed only
    /// if it answers a forward in flight: same id, from an upstream that
    /// forward asked, with the same question.
    pub fn handle_upstream_reply(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) {
        let Some(header) = Header::decode(bytes).filter(|h| h.response) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(pending) = self.pending.get(&header.id) else {
            self.stats.dropped += 1;
            return;
        };
        let matches = match first_question(bytes) {
            Ok(Some(q)) => {
                q.name.eq_ignore_case(&pending.question.name) && q.qtype == pending.question.qtype && q.qclass == pending.question.qclass
            }
            // Error answers (FORMERR, NOTIMP) may leave the question out.
            Ok(None) => header.rcode != Rcode::NOERROR,
            Err(_) => false,
        };
        let current = pending.tried.last() == Some(&from);
        if !matches || !pending.tried.contains(&from) {
            self.stats.dropped += 1;
            return;
        }
        let failed = header.rcode != Rcode::NOERROR && !(header.rcode == Rcode::NXDOMAIN && header.authoritative);
        if failed {
            if !current {
                // An earlier upstream's failure: the current one may do better.
                self.stats.dropped += 1;
                return;
            }
            if self.forward_next(header.id, now_ms) {
                return;
            }
        }
        let Some(pending) = self.take_pending(header.id) else {
            return;
        };
        let mut reply = bytes.to_vec();
        reply[..2].copy_from_slice(&pending.client_id.to_be_bytes());
        self.stats.relayed += 1;
        self.effects.push_back(Effect::Reply { listener: pending.listener, to: pending.client, bytes: reply });
    }

    /// The clock reached `now_ms`: forwards past their deadline move to the
    /// next upstream, or get SERVFAIL after the last.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while self.deadlines.first().is_some_and(|&(deadline_ms, _)| deadline_ms <= now_ms) {
            let Some((_, id)) = self.deadlines.pop_first() else {
                break;
            };
            if self.forward_next(id, now_ms) {
                continue;
            }
            if let Some(pending) = self.take_pending(id) {
                let header = Header::decode(&pending.query).map(|h| Header { id: pending.client_id, ..h });
                if let Some(header) = header {
                    self.reply_error(pending.listener, pending.client, &header, Some(&pending.question), Rcode::SERVFAIL);
                }
            }
        }
    }

    /// The earliest deadline (`now_ms` scale) at which to call
    /// [`Resolver::handle_timeout`], if any forward is in flight.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// The next thing for the shell to do; drain after every input.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Forwards waiting for an upstream.
    pub fn forwards_in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The records answering `question` from the view, or `None` if the name
    /// is not a swarm name on the listener's networks (then it is forwarded).
    fn answer_local(&mut self, listener: ListenerId, question: &Question) -> Option<Vec<Record>> {
        if question.qclass != CLASS_IN {
            return None;
        }
        let networks = self.listeners.get(&listener)?;
        let key = question.name.lookup_key()?;
        let record = |data| Record { name: question.name.clone(), class: CLASS_IN, ttl_secs: TTL_SECS, data };
        if question.qtype == Type::PTR {
            let host = self.view.lookup_ptr(networks, reverse_ip(&key)?)?;
            return Some(vec![record(RData::Ptr(Name::from_dotted(&host).ok()?))]);
        }
        let ips = self.view.lookup(networks, &key)?;
        let mut data: Vec<RData> = match question.qtype {
            Type::A => ips.iter().filter_map(|ip| if let IpAddr::V4(v4) = ip { Some(RData::A(*v4)) } else { None }).collect(),
            Type::AAAA => ips.iter().filter_map(|ip| if let IpAddr::V6(v6) = ip { Some(RData::Aaaa(*v6)) } else { None }).collect(),
            _ => Vec::new(),
        };
        self.rng.shuffle(&mut data);
        data.truncate(RECORDS_PER_SECTION_MAX);
        Some(data.into_iter().map(record).collect())
    }

    fn forward(&mut self, listener: ListenerId, from: SocketAddr, header: &Header, question: &Question, bytes: &[u8], now_ms: u64) {
        let per_listener = self.per_listener.get(&listener).copied().unwrap_or(0);
        let Some(&upstream) = self.upstreams.first() else {
            return self.reply_error(listener, from, header, Some(question), Rcode::SERVFAIL);
        };
        if self.pending.len() >= FORWARDS_IN_FLIGHT_MAX || per_listener >= FORWARDS_PER_LISTENER_MAX {
            return self.reply_error(listener, from, header, Some(question), Rcode::SERVFAIL);
        }
        let id = self.fresh_id();
        let mut query = bytes.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let deadline_ms = now_ms.saturating_add(FORWARD_TIMEOUT_MS);
        self.effects.push_back(Effect::Forward { id, upstream, bytes: query.clone() });
        self.stats.forwarded += 1;
        let pending =
            Pending { listener, client: from, client_id: header.id, question: question.clone(), query, tried: vec![upstream], deadline_ms };
        self.pending.insert(id, pending);
        self.deadlines.insert((deadline_ms, id));
        *self.per_listener.entry(listener).or_default() += 1;
    }

    /// Sends forward `id` to its next upstream; false if it has none left
    /// (or is not in flight).
    fn forward_next(&mut self, id: u16, now_ms: u64) -> bool {
        let Some(pending) = self.pending.get_mut(&id) else {
            return false;
        };
        let Some(&upstream) = self.upstreams.get(pending.tried.len()) else {
            return false;
        };
        self.deadlines.remove(&(pending.deadline_ms, id));
        pending.deadline_ms = now_ms.saturating_add(FORWARD_TIMEOUT_MS);
        pending.tried.push(upstream);
        self.deadlines.insert((pending.deadline_ms, id));
        self.effects.push_back(Effect::Forward { id, upstream, bytes: pending.query.clone() });
        self.stats.forwarded += 1;
        true
    }

    fn take_pending(&mut self, id: u16) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        self.deadlines.remove(&(pending.deadline_ms, id));
        if let Some(count) = self.per_listener.get_mut(&pending.listener) {
            *count -= 1;
            if *count == 0 {
                self.per_listener.remove(&pending.listener);
            }
        }
        Some(pending)
    }

    /// A random id no forward in flight uses.
    fn fresh_id(&mut self) -> u16 {
        for _ in 0..ID_TRIES_MAX {
            let id = self.rng.next_u64() as u16;
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
        // At most FORWARDS_IN_FLIGHT_MAX of 65536 ids are taken, so the scan
        // finds a free one.
        let start = self.rng.next_u64() as u16;
        (0..=u16::MAX).map(|i| start.wrapping_add(i)).find(|id| !self.pending.contains_key(id)).unwrap_or(start)
    }

    fn reply_error(&mut self, listener: ListenerId, to: SocketAddr, header: &Header, question: Option<&Question>, rcode: Rcode) {
        match rcode {
            Rcode::SERVFAIL => self.stats.servfail += 1,
            Rcode::FORMERR => self.stats.formerr += 1,
            _ => {}
        }
        // An error reply is a header and at most one decoded question (a
        // valid name of at most 255 bytes), so encoding cannot fail; if it
        // ever did, the client would time out, as it does on a lost packet.
        if let Ok(bytes) = reply_message(header, question, rcode, Vec::new()).encode(true) {
            self.effects.push_back(Effect::Reply { listener, to, bytes });
        }
    }
}

/// A reply to `query`: same id, opcode and RD; RA set, as Docker does.
fn reply_message(query: &Header, question: Option<&Question>, rcode: Rcode, answers: Vec<Record>) -> Message {
    Message {
        header: Header {
            id: query.id,
            response: true,
            opcode: query.opcode,
            authoritative: false,
            truncated: false,
            recursion_desired: query.recursion_desired,
            recursion_available: true,
            rcode,
        },
        questions: question.cloned().into_iter().collect(),
        answers,
        authorities: Vec::new(),
        additionals: Vec::new(),
    }
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa` is
/// 1.2.3.4, `b.a.9.8...ip6.arpa` (32 nibbles) an IPv6 address.
fn reverse_ip(key: &str) -> Option<IpAddr> {
    if let Some(rest) = key.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut parts = rest.split('.');
        for octet in octets.iter_mut().rev() {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = part.parse().ok()?;
        }
        return parts.next().is_none().then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = key.strip_suffix(".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut nibbles = 0;
    for (i, part) in rest.split('.').enumerate() {
        let digit = if part.len() == 1 { char::from(part.as_bytes()[0]).to_digit(16)? } else { return None };
        if i >= 32 {
            return None;
        }
        value |= u128::from(digit) << (4 * i);
        nibbles += 1;
    }
    (nibbles == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

/// xorshift64*: the core's own small generator for answer order and forward
/// ids, seeded by the shell.
struct XorShift {
    state: u64,
}

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Zero is xorshift's one fixed point; any other state works.
        XorShift { state: if seed == 0 { 0x853C_49E6_748F_EA9B } else { seed } }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests;
