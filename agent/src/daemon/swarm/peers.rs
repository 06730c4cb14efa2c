//! Wanted links: which peers this node keeps a link to, when it dials them
//! again, and what it tells the operator when they fail. Sans-IO: the shell
//! says which links it wants and what happened to them, with a monotonic
//! `now_ms` and the seeded rng, and pulls [`PeerEffect`]s (dial, close, log).
//!
//! Invariants:
//! - at most one connection per wanted peer is dialing or up at a time;
//! - a peer is redialed after a jittered, doubling delay (`DIAL_BACKOFF_*`),
//!   and the delay starts over only once a link proved useful (the peer sent
//!   a message), not merely because a handshake finished: a peer that
//!   accepts the handshake and then refuses this node is not hammered;
//! - a peer that refuses this node as a stranger (it was removed from the
//!   swarm, or never joined) is redialed after a delay doubling from
//!   `DIAL_BACKOFF_MAX_MS` up to [`REFUSED_REDIAL_MS`] (a lagging manager
//!   that has not applied a join yet costs seconds, a removal stops the
//!   hammering), and that is said once, with what to do (the leader's own
//!   words when it says this node was removed);
//! - a lost link is warned about once until a link to that peer is useful
//!   again;
//! - a peer's backoff outlives its being wanted: a worker that rotates
//!   through its managers (none leads, or none answers) waits out each one's
//!   delay instead of starting every rotation afresh (at most
//!   [`PEERS_REMEMBERED_MAX`] peers are remembered).

use shoal_manager::dispatcher::REMOVED;
use shoal_shared::backoff::Backoff;
use shoal_shared::rng::Rng;
use shoal_shared::wire::NOT_A_MEMBER;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Reconnect backoff between dials of one peer.
pub const DIAL_BACKOFF_BASE_MS: u64 = 100;
pub const DIAL_BACKOFF_MAX_MS: u64 = 2_000;
/// A peer that keeps refusing this node as not a member is dialed again at most this often.
pub const REFUSED_REDIAL_MS: u64 = 60_000;
/// Peers whose backoff is remembered while they are not wanted.
pub const PEERS_REMEMBERED_MAX: usize = 256;

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerEffect {
    /// Open connection `conn` to `node_id` at `addr`.
    Dial { conn: u64, node_id: String, addr: SocketAddr },
    /// Close `conn` (a link no longer wanted).
    Close { conn: u64, reason: &'static str },
    /// Tell the operator.
    Log { level: &'static str, message: String },
}

/// One wanted peer.
#[derive(Clone, Debug)]
struct Dial {
    addr: String,
    conn: Option<u64>,
    retry_at_ms: u64,
    backoff: Backoff,
    /// The backoff while the peer refuses this node as a stranger.
    refused_backoff: Backoff,
    warned: bool,
    /// The peer refused this node as a stranger on its last link.
    refused: bool,
    /// Wanted by the last [`Peers::want`] (unwanted ones keep their backoff).
    wanted: bool,
}

/// The links this node wants.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    dials: BTreeMap<String, Dial>,
    effects: VecDeque<PeerEffect>,
}

impl Peers {
    /// The links wanted now (node id -> `IP:PORT`): drops the others and
    /// dials those that are due. `next_conn` numbers new connections.
    pub(crate) fn want(&mut self, want: &BTreeMap<String, String>, now_ms: u64, mut next_conn: impl FnMut() -> u64) {
        for (id, d) in self.dials.iter_mut() {
            d.wanted = want.contains_key(id);
            if !d.wanted {
                if let Some(conn) = d.conn.take() {
                    self.effects.push_back(PeerEffect::Close { conn, reason: "no longer needed" });
                }
            }
        }
        if self.dials.len() > PEERS_REMEMBERED_MAX {
            self.dials.retain(|_, d| d.wanted);
        }
        for (id, addr) in want {
            let d = self.dials.entry(id.clone()).or_insert_with(|| Dial {
                addr: addr.clone(),
                conn: None,
                retry_at_ms: now_ms,
                backoff: Backoff::new(DIAL_BACKOFF_BASE_MS, DIAL_BACKOFF_MAX_MS),
                refused_backoff: Backoff::new(DIAL_BACKOFF_MAX_MS, REFUSED_REDIAL_MS),
                warned: false,
                refused: false,
                wanted: true,
            });
            d.addr.clone_from(addr);
            if d.conn.is_some() || now_ms < d.retry_at_ms {
                continue;
            }
            let Ok(sock) = addr.parse::<SocketAddr>() else {
                d.retry_at_ms = now_ms + DIAL_BACKOFF_MAX_MS;
                if !d.warned {
                    d.warned = true;
                    let message = format!("cannot dial node {id}: its address {addr:?} is not IP:PORT");
                    self.effects.push_back(PeerEffect::Log { level: "WARN", message });
                }
                continue;
            };
            let conn = next_conn();
            d.conn = Some(conn);
            self.effects.push_back(PeerEffect::Dial { conn, node_id: id.clone(), addr: sock });
        }
    }

    /// A message arrived from `node_id`: its link is useful, so the next
    /// loss starts the backoff over and is warned about again.
    pub(crate) fn handle_useful(&mut self, node_id: &str) {
        if let Some(d) = self.dials.get_mut(node_id) {
            d.backoff.reset();
            d.refused_backoff.reset();
            d.warned = false;
            d.refused = false;
        }
    }

    /// Connection `conn` ended (`error`: why, when known). Returns the peer
    /// it was a wanted link to, if it was one.
    pub(crate) fn handle_gone(&mut self, conn: u64, error: Option<&str>, now_ms: u64, rng: &mut Rng) -> Option<String> {
        let (id, d) = self.dials.iter_mut().find(|(_, d)| d.conn == Some(conn))?;
        d.conn = None;
        let why = error.unwrap_or("closed");
        let refused = why.contains(NOT_A_MEMBER);
        let delay_ms = if refused { d.refused_backoff.next_delay_ms(rng) } else { d.backoff.next_delay_ms(rng) };
        d.retry_at_ms = now_ms + delay_ms;
        if refused && !d.refused && why.contains(REMOVED) {
            let message =
                format!("{REMOVED} (node {id} at {} leads and said so; retrying at most every {} s)", d.addr, REFUSED_REDIAL_MS / 1000);
            self.effects.push_back(PeerEffect::Log { level: "ERROR", message });
            d.warned = true;
        } else if refused && !d.refused {
            let message = format!(
                "node {id} at {} refused this node: it is not a member of the swarm as that manager knows it (removed, \
                 or a join it has not seen yet); if this node was removed, run `shoal swarm leave --force` and join again \
                 with a token (retrying at most every {} s meanwhile)",
                d.addr,
                REFUSED_REDIAL_MS / 1000
            );
            self.effects.push_back(PeerEffect::Log { level: "ERROR", message });
            d.warned = true;
        } else if !d.warned {
            d.warned = true;
            let message = format!("link to {id} at {} lost: {why}; redialing", d.addr);
            self.effects.push_back(PeerEffect::Log { level: "WARN", message });
        }
        d.refused = refused;
        Some(id.clone())
    }

    /// Dial `node_id` at the next [`Peers::want`], with its backoff started
    /// over (a redirect named it the leader). Other peers keep theirs, so a
    /// stale redirect cannot make a worker cycle at network speed.
    pub(crate) fn retry_now(&mut self, node_id: &str, now_ms: u64) {
        if let Some(d) = self.dials.get_mut(node_id) {
            d.retry_at_ms = now_ms;
            d.backoff.reset();
        }
    }

    /// The connection of any wanted link (a worker has one: its leader).
    pub(crate) fn any_conn(&self) -> Option<u64> {
        self.dials.values().find_map(|d| d.conn)
    }

    /// Forgets every wanted link (the shell closes the connections).
    pub(crate) fn clear(&mut self) {
        self.dials.clear();
    }

    /// The next thing the shell must do.
    pub(crate) fn poll_effect(&mut self) -> Option<PeerEffect> {
        self.effects.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn drain(p: &mut Peers) -> Vec<String> {
        std::iter::from_fn(|| p.poll_effect())
            .map(|e| match e {
                PeerEffect::Dial { conn, node_id, .. } => format!("dial {conn} {node_id}"),
                PeerEffect::Close { conn, .. } => format!("close {conn}"),
                PeerEffect::Log { level, .. } => format!("log {level}"),
            })
            .collect()
    }

    /// Dials made over `ms` of simulated time, polling every `step_ms`, to
    /// `peers` in turn (the next one after each failed dial, as a worker
    /// rotates through its managers): each dial connects (and is `useful`
    /// when asked) then closes with `error` at once. Returns the dials and
    /// the log messages.
    fn dials_in(peers: &[(&str, &str)], ms: u64, step_ms: u64, error: &str, useful: bool) -> (usize, Vec<String>) {
        let mut p = Peers::default();
        let mut rng = Rng::from_seed(3);
        let (mut dials, mut logs, mut next, mut target, mut t) = (0, Vec::new(), 0, 0, 0);
        while t < ms {
            p.want(&want(&[peers[target % peers.len()]]), t, || {
                next += 1;
                next
            });
            while let Some(e) = p.poll_effect() {
                match e {
                    PeerEffect::Dial { conn, node_id, .. } => {
                        dials += 1;
                        if useful {
                            p.handle_useful(&node_id);
                        }
                        p.handle_gone(conn, Some(error), t, &mut rng);
                        target += 1;
                    }
                    PeerEffect::Log { message, .. } => logs.push(message),
                    PeerEffect::Close { .. } => {}
                }
            }
            t += step_ms;
        }
        (dials, logs)
    }

    const M1: (&str, &str) = ("m1", "10.0.0.1:2377");

    #[test]
    fn wanted_links_are_dialed_once_and_dropped_when_unwanted() {
        let mut p = Peers::default();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        p.want(&want(&[("m1", "10.0.0.1:2377"), ("m2", "10.0.0.2:2377")]), 0, &mut next);
        assert_eq!(drain(&mut p), ["dial 1 m1", "dial 2 m2"]);
        p.want(&want(&[("m1", "10.0.0.1:2377"), ("m2", "10.0.0.2:2377")]), 10, &mut next);
        assert!(drain(&mut p).is_empty(), "one connection per peer");
        p.want(&want(&[("m1", "10.0.0.1:2377")]), 20, &mut next);
        assert_eq!(drain(&mut p), ["close 2"]);
        p.want(&want(&[("m1", "bad address")]), 30, &mut next);
        assert!(drain(&mut p).is_empty(), "m1 is still connected");
    }

    /// Found replaying the seed: a node removed from the swarm redialed
    /// every manager about 3 times a second forever, warning each time,
    /// because a finished handshake reset the backoff before the refusal.
    #[test]
    fn a_refusing_peer_is_not_hammered() {
        let refusal = format!("refused by the manager: {NOT_A_MEMBER} (it was removed, or never joined): join it again with a token");
        let (dials, logs) = dials_in(&[M1], 300_000, 50, &refusal, false);
        assert!(dials <= 12, "{dials} dials in 5 minutes");
        assert_eq!(logs.len(), 1, "said once, with what to do: {logs:?}");
        assert!(logs[0].contains("swarm leave --force"), "{logs:?}");
        // The leader's word: the removal, said once in its own terms, at the same pace.
        let (dials, logs) =
            dials_in(&[M1], 60_000, 50, &format!("refused by the manager: {}", shoal_manager::dispatcher::removed_reason()), false);
        assert!(dials <= 7, "{dials} dials in the first minute (jittered 1-2 s, doubling)");
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].starts_with(REMOVED), "{logs:?}");
        // Any other failure backs off to DIAL_BACKOFF_MAX_MS, with one warning.
        let (dials, logs) = dials_in(&[M1], 60_000, 50, "the peer stopped answering", false);
        assert!(dials <= 60, "{dials} dials in 1 minute");
        assert_eq!(logs.len(), 1, "{logs:?}");
        // A link that was useful each time starts over each time (and warns again).
        let (dials, logs) = dials_in(&[M1], 10_000, 50, "closed", true);
        assert!(dials >= 50, "{dials}");
        assert_eq!(logs.len(), dials);
    }

    /// Found during quorum loss: a worker rotating through three managers
    /// (one without a leader, two down) dialed one every 100 ms, warning
    /// each time, because each rotation started from a fresh backoff.
    #[test]
    fn rotating_through_unreachable_peers_keeps_their_backoff() {
        let peers = [M1, ("m2", "10.0.0.2:2377"), ("m3", "10.0.0.3:2377")];
        let (dials, logs) = dials_in(&peers, 60_000, 100, "connection refused", false);
        assert!(dials <= 120, "{dials} dials in a minute");
        assert_eq!(logs.len(), 3, "one warning per peer: {logs:?}");
    }

    #[test]
    fn a_redirect_dials_again_at_once() {
        let mut p = Peers::default();
        let mut rng = Rng::from_seed(1);
        p.want(&want(&[("m1", "10.0.0.1:2377")]), 0, || 1);
        drain(&mut p);
        assert_eq!(p.handle_gone(1, Some("redirected"), 0, &mut rng).as_deref(), Some("m1"));
        assert_eq!(p.handle_gone(99, None, 0, &mut rng), None, "not a wanted link");
        p.retry_now("m1", 1);
        p.want(&want(&[("m1", "10.0.0.1:2377")]), 1, || 2);
        assert_eq!(drain(&mut p), ["log WARN", "dial 2 m1"]);
    }
}
