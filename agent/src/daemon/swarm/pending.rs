//! Requests waiting on something else: writes parked until their proposal
//! commits, internal proposals in flight, and requests forwarded to the
//! leader until it answers and this manager has caught up with the answer.
//!
//! Sans-IO: `R` is the shell's handle for answering one request (a reply
//! channel); this core only holds it and hands it back in a
//! [`PendingEffect`]. Deadlines are data, checked against a monotonic
//! `now_ms` by [`Pending::tick`].
//!
//! Invariants:
//! - every request held here is answered exactly once: by its outcome, its
//!   answer, or its deadline (`WRITE_TIMEOUT_MS`, the forward's wait), and
//!   a forward also when its leader or its link goes away;
//! - a forwarded answer is released only once this manager has applied the
//!   index it depends on, so a CLI never reads its own write as missing;
//! - a forwarded read the leader did not answer is run on this manager (its
//!   own state answers it); a write is never run twice.

use super::{FORWARD_READ_TIMEOUT_MS, FORWARD_TIMEOUT_MS, WRITE_TIMEOUT_MS};
use crate::daemon::log_gather::LOGS_GATHER_TIMEOUT_MS;
use shoal_manager::store::Proposal;
use shoal_shared::api::{ErrorKind, Reply, Request, RequestClass};
use std::collections::{BTreeMap, VecDeque};

/// Forwarded requests in flight at once.
pub const FORWARDS_MAX: usize = 1_024;
/// Writes waiting for their commit at once.
pub const PARKED_WRITES_MAX: usize = 4_096;

/// How long a forwarded request waits for the leader's answer.
pub(crate) fn forward_wait_ms(req: &Request, edge: bool) -> u64 {
    // On the edge link profile a commit or an answer may take several TCP
    // retransmissions: waits are longer, still below the CLI's 30 s.
    let extra_ms = if edge { EDGE_EXTRA_WAIT_MS } else { 0 };
    match (req.class(), req) {
        // The leader answers logs within its gather deadline, whatever the nodes do.
        (_, Request::ServiceLogs { .. }) => LOGS_GATHER_TIMEOUT_MS + FORWARD_READ_TIMEOUT_MS + extra_ms / 3,
        (RequestClass::Read, _) => FORWARD_READ_TIMEOUT_MS + extra_ms / 3,
        (RequestClass::Write | RequestClass::Local, _) => FORWARD_TIMEOUT_MS + extra_ms,
    }
}

/// What the edge link profile adds to a write's wait for its commit (and a
/// third of it to a forwarded read's): 5 s becomes 20 s, a forwarded
/// write's 10 s 25 s.
const EDGE_EXTRA_WAIT_MS: u64 = 15_000;

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub(crate) enum PendingEffect<R> {
    /// Answer a request.
    Reply { to: R, reply: Reply },
    /// A read the leader did not answer: answer it from this node's state.
    RunLocally { to: R, req: Request },
}

/// A write waiting for its commit.
#[derive(Debug)]
struct Parked<R> {
    proposal: Proposal,
    ok: Reply,
    to: R,
    deadline_ms: u64,
}

/// A request forwarded to the leader.
#[derive(Debug)]
struct Forward<R> {
    /// The link it went out on, and the leader it went to.
    conn: u64,
    leader: String,
    /// Kept for reads: answered locally if the leader goes away.
    read: Option<Request>,
    to: R,
    deadline_ms: u64,
    /// The leader's answer, held until this node applied `index`.
    answer: Option<(Reply, u64)>,
}

/// Everything waiting.
#[derive(Debug)]
pub(crate) struct Pending<R> {
    parked: Vec<Parked<R>>,
    /// Internal proposals (orchestrator, dispatcher, reports) not yet resolved, with when.
    inflight: Vec<(Proposal, u64)>,
    next_forward: u64,
    forwards: BTreeMap<u64, Forward<R>>,
    effects: VecDeque<PendingEffect<R>>,
    /// The swarm runs the edge link profile: waits are longer ([`forward_wait_ms`]).
    edge: bool,
}

impl<R> Default for Pending<R> {
    fn default() -> Self {
        Pending {
            parked: Vec::new(),
            inflight: Vec::new(),
            next_forward: 1,
            forwards: BTreeMap::new(),
            effects: VecDeque::new(),
            edge: false,
        }
    }
}

impl<R> Pending<R> {
    /// Waits follow the swarm's link profile from now on.
    pub(crate) fn set_edge(&mut self, edge: bool) {
        self.edge = edge;
    }

    /// How long a parked write waits for its commit.
    pub(crate) fn write_timeout_ms(&self) -> u64 {
        WRITE_TIMEOUT_MS + if self.edge { EDGE_EXTRA_WAIT_MS } else { 0 }
    }

    /// Whether another write may be parked.
    pub(crate) fn may_park(&self) -> bool {
        self.parked.len() < PARKED_WRITES_MAX
    }

    /// Holds a write's answer until `proposal` commits (or fails, or times out).
    pub(crate) fn park(&mut self, proposal: Proposal, ok: Reply, to: R, now_ms: u64) {
        let deadline_ms = now_ms + self.write_timeout_ms();
        self.parked.push(Parked { proposal, ok, to, deadline_ms });
    }

    /// Tracks an internal proposal until it resolves (or `WRITE_TIMEOUT_MS` passes).
    pub(crate) fn track(&mut self, proposal: Proposal, now_ms: u64) {
        self.inflight.push((proposal, now_ms));
    }

    /// Whether internal proposals are still in flight (the leader's passes wait for them).
    pub(crate) fn settled(&self) -> bool {
        self.inflight.is_empty()
    }

    /// A proposal committed (`committed`) or was lost to a leadership change.
    pub(crate) fn handle_outcome(&mut self, proposal: Proposal, committed: bool) {
        self.inflight.retain(|(q, _)| *q != proposal);
        if let Some(i) = self.parked.iter().position(|w| w.proposal == proposal) {
            let w = self.parked.swap_remove(i);
            let reply = if committed {
                w.ok
            } else {
                Reply::error(ErrorKind::Unavailable, "the change was not committed: leadership changed while it was in flight; retry")
            };
            self.effects.push_back(PendingEffect::Reply { to: w.to, reply });
        }
    }

    /// Forwarded requests waiting for the leader.
    pub(crate) fn forwards_len(&self) -> usize {
        self.forwards.len()
    }

    /// The id the next forwarded request goes out with.
    pub(crate) fn next_forward_id(&mut self) -> u64 {
        let id = self.next_forward;
        self.next_forward += 1;
        id
    }

    /// Request `id` went to `leader` on `conn`; its answer goes to `to`.
    pub(crate) fn forwarded(&mut self, id: u64, req: Request, leader: String, conn: u64, to: R, now_ms: u64) {
        let deadline_ms = now_ms + forward_wait_ms(&req, self.edge);
        let read = (req.class() == RequestClass::Read).then_some(req);
        self.forwards.insert(id, Forward { conn, leader, read, to, deadline_ms, answer: None });
    }

    /// The leader answered request `id` on link `conn`; the answer depends on
    /// its state at `index`. An answer on another link than the request went
    /// out on is dropped (ids are sequential: any peer could guess one).
    pub(crate) fn handle_answer(&mut self, id: u64, conn: u64, reply: Reply, index: u64) {
        if let Some(f) = self.forwards.get_mut(&id).filter(|f| f.conn == conn) {
            f.answer = Some((reply, index));
        }
    }

    /// Releases the answers this node has caught up with (`applied` index).
    pub(crate) fn release(&mut self, applied: u64) {
        let ready: Vec<u64> =
            self.forwards.iter().filter(|(_, f)| f.answer.as_ref().is_some_and(|(_, i)| *i <= applied)).map(|(id, _)| *id).collect();
        for id in ready {
            if let Some(Forward { to, answer: Some((reply, _)), .. }) = self.forwards.remove(&id) {
                self.effects.push_back(PendingEffect::Reply { to, reply });
            }
        }
    }

    /// Deadlines: parked writes past theirs get `no_leader` (what this node
    /// can say about why the commit did not come); internal
    /// proposals are forgotten; forwards past theirs, or whose leader
    /// (`leader`: the one known now) or link (`link_up`) went away, are
    /// answered as well as this node can.
    pub(crate) fn tick(&mut self, now_ms: u64, no_leader: &Reply, leader: Option<&str>, link_up: impl Fn(u64) -> bool) {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked).into_iter().partition(|w| now_ms >= w.deadline_ms);
        self.parked = kept;
        for w in expired {
            self.effects.push_back(PendingEffect::Reply { to: w.to, reply: no_leader.clone() });
        }
        let write_timeout_ms = self.write_timeout_ms();
        self.inflight.retain(|(_, at)| now_ms.saturating_sub(*at) < write_timeout_ms);
        let late: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| {
                let lost = f.answer.is_none() && (leader != Some(f.leader.as_str()) || !link_up(f.conn));
                now_ms >= f.deadline_ms || lost
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(f) = self.forwards.remove(&id) else { continue };
            let effect = match (f.answer, f.read) {
                // Answered but this manager lags: the answer is still right.
                (Some((reply, _)), _) => PendingEffect::Reply { to: f.to, reply },
                // A read the leader did not answer: this manager's own state answers it.
                (None, Some(req)) => PendingEffect::RunLocally { to: f.to, req },
                (None, None) => {
                    let message = format!(
                        "lost the leader ({}) while the change was in flight: check with `shoal service ls` / `shoal node ls` and retry",
                        f.leader
                    );
                    PendingEffect::Reply { to: f.to, reply: Reply::error(ErrorKind::Unavailable, message) }
                }
            };
            self.effects.push_back(effect);
        }
    }

    /// The next thing the shell must do.
    pub(crate) fn poll_effect(&mut self) -> Option<PendingEffect<R>> {
        self.effects.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(term: u64, index: u64) -> Proposal {
        Proposal { term, index }
    }

    fn drain(pending: &mut Pending<u32>) -> Vec<String> {
        std::iter::from_fn(|| pending.poll_effect())
            .map(|e| match e {
                PendingEffect::Reply { to, reply: Reply::Error { message, .. } } => format!("{to}: error {message}"),
                PendingEffect::Reply { to, reply } => format!("{to}: {reply:?}"),
                PendingEffect::RunLocally { to, req } => format!("{to}: run {req:?}"),
            })
            .collect()
    }

    #[test]
    fn a_parked_write_is_answered_once_by_its_outcome_or_its_deadline() {
        let mut w = Pending::default();
        w.park(p(1, 5), Reply::Ok, 1, 0);
        w.park(p(1, 6), Reply::Ok, 2, 0);
        w.park(p(1, 7), Reply::Ok, 3, 0);
        w.handle_outcome(p(1, 5), true);
        w.handle_outcome(p(1, 6), false);
        let got = drain(&mut w);
        assert_eq!(got[0], "1: Ok");
        assert!(got[1].starts_with("2: error the change was not committed"), "{got:?}");
        let no_leader = Reply::error(ErrorKind::Unavailable, "no leader");
        w.tick(WRITE_TIMEOUT_MS - 1, &no_leader, None, |_| true);
        assert!(drain(&mut w).is_empty());
        w.tick(WRITE_TIMEOUT_MS, &no_leader, None, |_| true);
        assert_eq!(drain(&mut w), ["3: error no leader"]);
        w.handle_outcome(p(1, 7), true);
        assert!(drain(&mut w).is_empty(), "answered once");
    }

    #[test]
    fn internal_proposals_hold_passes_until_resolved_or_stale() {
        let mut w: Pending<u32> = Pending::default();
        w.track(p(2, 1), 100);
        assert!(!w.settled());
        w.handle_outcome(p(2, 1), true);
        assert!(w.settled());
        w.track(p(2, 2), 100);
        w.tick(100 + WRITE_TIMEOUT_MS, &Reply::Ok, None, |_| true);
        assert!(w.settled(), "a proposal lost without an outcome does not hold passes forever");
    }

    #[test]
    fn a_forwarded_answer_waits_until_this_manager_caught_up() {
        let mut w = Pending::default();
        let id = w.next_forward_id();
        w.forwarded(id, Request::ServiceList, "m1".into(), 7, 1, 0);
        w.handle_answer(id, 8, Reply::error(ErrorKind::Internal, "forged"), 0);
        w.release(99);
        assert!(drain(&mut w).is_empty(), "an answer from another link is dropped");
        w.handle_answer(id, 7, Reply::Ok, 42);
        w.release(41);
        assert!(drain(&mut w).is_empty());
        w.release(42);
        assert_eq!(drain(&mut w), ["1: Ok"]);
        assert_eq!(w.forwards_len(), 0);
    }

    #[test]
    fn a_lost_leader_runs_reads_here_and_fails_writes_with_what_to_do() {
        let mut w = Pending::default();
        let read = w.next_forward_id();
        w.forwarded(read, Request::ServiceList, "m1".into(), 7, 1, 0);
        let write = w.next_forward_id();
        w.forwarded(write, Request::ServiceRemove { service: "web".into() }, "m1".into(), 7, 2, 0);
        let answered = w.next_forward_id();
        w.forwarded(answered, Request::ServiceRemove { service: "db".into() }, "m1".into(), 7, 3, 0);
        w.handle_answer(answered, 7, Reply::Ok, 99);
        // The leader is still m1 and the link is up: nothing yet.
        w.tick(10, &Reply::Ok, Some("m1"), |_| true);
        assert!(drain(&mut w).is_empty());
        // The link went away.
        w.tick(20, &Reply::Ok, Some("m1"), |_| false);
        let got = drain(&mut w);
        assert_eq!(got[0], "1: run ServiceList");
        assert!(got[1].starts_with("2: error lost the leader (m1)"), "{got:?}");
        assert_eq!(got.len(), 2, "an answered forward waits for its index or its deadline: {got:?}");
        w.tick(FORWARD_TIMEOUT_MS, &Reply::Ok, Some("m1"), |_| false);
        assert_eq!(drain(&mut w), ["3: Ok"], "answered but lagging: the answer is still right");
    }

    #[test]
    fn reads_wait_less_than_writes_and_the_edge_profile_waits_longer_within_the_clis_wait() {
        let logs = Request::ServiceLogs { service: "x".into(), tail_lines: None, cursor: vec![] };
        let write = Request::ServiceRemove { service: "x".into() };
        for edge in [false, true] {
            assert!(forward_wait_ms(&Request::ServiceList, edge) < forward_wait_ms(&write, edge));
            assert!(forward_wait_ms(&logs, edge) > FORWARD_READ_TIMEOUT_MS);
            assert!(
                forward_wait_ms(&logs, edge) < crate::client::REPLY_MS_DEFAULT
                    && forward_wait_ms(&write, edge) < crate::client::REPLY_MS_DEFAULT
            );
        }
        assert_eq!((forward_wait_ms(&write, false), forward_wait_ms(&write, true)), (10_000, 25_000));
        let mut w: Pending<u32> = Pending::default();
        assert_eq!(w.write_timeout_ms(), WRITE_TIMEOUT_MS);
        w.set_edge(true);
        assert_eq!(w.write_timeout_ms(), 20_000);
        // A parked write waits the longer time.
        w.park(Proposal { index: 5, term: 1 }, Reply::Ok, 1, 0);
        let no_leader = Reply::error(ErrorKind::Unavailable, "no leader");
        w.tick(19_999, &no_leader, None, |_| true);
        assert!(drain(&mut w).is_empty());
        w.tick(20_000, &no_leader, None, |_| true);
        assert_eq!(drain(&mut w), ["1: error no leader"]);
    }
}
