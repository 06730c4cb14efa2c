//! Who may link, and as what: the decision made when a Noise handshake on
//! the swarm port finishes. Pure: the shell passes what the handshake
//! proved and what this node knows, and carries out the [`Admit`].
//!
//! Invariants:
//! - an outbound member link is kept only if the key that answered is the
//!   node that was dialed;
//! - an inbound member link is kept only on a manager, and only from a node
//!   this manager knows (the state, or the managers it was told of when it
//!   joined); everyone else is told [`NOT_A_MEMBER`], which a removed node
//!   recognises and backs off from, and by the leader (whose state is
//!   authoritative) that it was removed, with what to do
//!   ([`shoal_manager::dispatcher::removed_reason`]);
//! - a worker dialed as a manager only redirects to the leader it knows;
//! - an inbound join is kept only if its hello carries a valid token for
//!   this swarm (checked by the caller's `check_token`), which decides the
//!   role it may join as.

use super::Mode;
use crate::daemon::links::Purpose;
use shoal_shared::types::NodeRole;
use shoal_shared::wire::NOT_A_MEMBER;

/// What the handshake proved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handshake<'a> {
    pub(crate) purpose: Purpose,
    pub(crate) outbound: bool,
    /// Outbound: the node id that was dialed.
    pub(crate) expect: Option<&'a str>,
    /// The node id of the key that answered (or dialed in).
    pub(crate) peer: &'a str,
    /// This node leads the swarm on a caught-up state (authoritative).
    pub(crate) leads: bool,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Our dial reached the node we wanted: open a dispatcher session on it.
    Session,
    /// A member dialed in: keep the link.
    Member,
    /// A node joining with a token for `role`: wait for its join request.
    Joiner(NodeRole),
    /// Our join dial reached the manager the token pins: send the join request.
    JoinDial,
    /// A node dialed a worker as a manager (a demoted one it still knows):
    /// tell it the leader this worker knows, then close.
    Redirect,
    /// Close the link and tell the peer `reason`; `warn` goes to the log.
    Refuse { reason: String, warn: Option<String> },
}

/// Decides on a finished handshake. `known`: whether this node knows the
/// peer as a member; `check_token`: the joiner's hello checked against this
/// swarm's secrets (only called for inbound joins).
pub(crate) fn admit(h: Handshake<'_>, mode: Mode, known: bool, check_token: impl FnOnce() -> Result<NodeRole, String>) -> Admit {
    let peer = h.peer;
    match (h.purpose, h.outbound) {
        (Purpose::Node, true) => match h.expect {
            Some(e) if e == peer => Admit::Session,
            Some(e) => Admit::Refuse {
                reason: "unexpected node key".into(),
                warn: Some(format!("the node dialed as {e} answered with node key {peer}; closing")),
            },
            // Every member dial names the node it wants; one that does not is not trusted.
            None => Admit::Refuse {
                reason: "unexpected node key".into(),
                warn: Some(format!("a dial without an expected key reached {peer}; closing")),
            },
        },
        // A worker's dialer holds a stale manager list (this node was demoted since, or the
        // managers it knew are gone): pointing it at the leader is all a worker can do.
        (Purpose::Node, false) if mode == Mode::Worker => Admit::Redirect,
        (Purpose::Node, false) if mode != Mode::Manager => Admit::Refuse { reason: "this node is not a manager".into(), warn: None },
        (Purpose::Node, false) if !known && h.leads => Admit::Refuse {
            reason: shoal_manager::dispatcher::removed_reason(),
            warn: Some(format!("refused node {peer}: not a member of this swarm (removed)")),
        },
        (Purpose::Node, false) if !known => Admit::Refuse {
            reason: format!("{NOT_A_MEMBER} (it was removed, or never joined): join it again with a token"),
            warn: Some(format!("refused node {peer}: not a member of this swarm (removed, or never joined)")),
        },
        (Purpose::Node, false) => Admit::Member,
        (Purpose::Join, false) => match check_token() {
            Ok(role) => Admit::Joiner(role),
            Err(e) => Admit::Refuse { warn: Some(format!("refused join of node {peer}: {e}")), reason: e },
        },
        (Purpose::Join, true) => Admit::JoinDial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs<'a>(purpose: Purpose, outbound: bool, expect: Option<&'a str>, peer: &'a str) -> Handshake<'a> {
        Handshake { purpose, outbound, expect, peer, leads: false }
    }

    fn no_token() -> Result<NodeRole, String> {
        panic!("the token is checked only for inbound joins")
    }

    #[test]
    fn outbound_links_must_reach_the_node_dialed() {
        assert_eq!(admit(hs(Purpose::Node, true, Some("m1"), "m1"), Mode::Worker, false, no_token), Admit::Session);
        let a = admit(hs(Purpose::Node, true, Some("m1"), "evil"), Mode::Worker, false, no_token);
        assert!(matches!(a, Admit::Refuse { ref reason, .. } if reason == "unexpected node key"), "{a:?}");
        assert_eq!(admit(hs(Purpose::Join, true, None, "m1"), Mode::Solo, false, no_token), Admit::JoinDial);
    }

    #[test]
    fn only_managers_take_links_and_only_from_members() {
        // A worker still takes no link: it redirects the dialer to its leader and closes
        // (found by the whole-node simulator: a worker whose known managers were all demoted
        // or gone never found the leader again).
        let a = admit(hs(Purpose::Node, false, None, "w1"), Mode::Worker, true, no_token);
        assert_eq!(a, Admit::Redirect);
        let a = admit(hs(Purpose::Node, false, None, "w1"), Mode::Solo, true, no_token);
        assert_eq!(a, Admit::Refuse { reason: "this node is not a manager".into(), warn: None });
        let a = admit(hs(Purpose::Node, false, None, "gone"), Mode::Manager, false, no_token);
        assert!(matches!(a, Admit::Refuse { ref reason, warn: Some(_) } if reason.starts_with(NOT_A_MEMBER)), "{a:?}");
        assert_eq!(admit(hs(Purpose::Node, false, None, "w1"), Mode::Manager, true, no_token), Admit::Member);
        // Only the leader's state says a node was removed: it tells it what to do.
        let a = admit(Handshake { leads: true, ..hs(Purpose::Node, false, None, "gone") }, Mode::Manager, false, no_token);
        let removed = "this node was removed from the swarm: run 'shoal swarm leave --force' and join again";
        assert!(matches!(a, Admit::Refuse { ref reason, .. } if reason.starts_with(NOT_A_MEMBER) && reason.ends_with(removed)), "{a:?}");
        assert_eq!(admit(Handshake { leads: true, ..hs(Purpose::Node, false, None, "w1") }, Mode::Manager, true, no_token), Admit::Member);
    }

    #[test]
    fn joins_are_decided_by_their_token() {
        let a = admit(hs(Purpose::Join, false, None, "new"), Mode::Manager, false, || Ok(NodeRole::Manager));
        assert_eq!(a, Admit::Joiner(NodeRole::Manager));
        let a = admit(hs(Purpose::Join, false, None, "new"), Mode::Manager, false, || Err("invalid join token".into()));
        assert!(matches!(a, Admit::Refuse { ref reason, warn: Some(_) } if reason == "invalid join token"), "{a:?}");
    }
}
