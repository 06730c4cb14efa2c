//! Pure: this node's side of joining and leaving a swarm. The shell
//! (`membership.rs`) dials, persists keys and resets raft; what is decided
//! here is whether a `swarm join` or `swarm leave` may go ahead, with which
//! addresses, where a redirected join goes next, and whether a manager's
//! acceptance can be taken.
//!
//! Invariants:
//! - a join follows at most [`JOIN_REDIRECTS_MAX`] redirects and never one
//!   without an address (a swarm with no reachable leader fails the join
//!   instead of looping);
//! - a joining node listens on a fixed port (a port picked by the system
//!   could not be advertised before it is known);
//! - an acceptance is taken only for this node's id, and a manager's only
//!   with a well-formed cluster key;
//! - a manager leaves without `--force` only if that cannot cost the swarm
//!   its state (Docker's texts say what would be lost).

use super::{Mode, JOIN_REDIRECTS_MAX};
use crate::daemon::SWARM_PORT;
use shoal_shared::api::ErrorKind;
use shoal_shared::noise::token::JoinToken;
use shoal_shared::types::NodeRole;
use std::net::SocketAddr;

/// Where a joining node listens and what it advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinAddrs {
    pub(crate) listen: String,
    pub(crate) advertise: String,
}

/// A refusal: the error kind and Docker's (or Shoal's) text.
pub(crate) type Refusal = (ErrorKind, String);

/// `IP` or `IP:PORT` with `port` as default (an advertised address takes
/// the listen address's port, as Docker's does).
pub(crate) fn with_port_or(addr: &str, port: u16) -> String {
    if addr.parse::<SocketAddr>().is_ok() || (addr.contains(':') && !addr.contains("::")) {
        addr.to_string()
    } else {
        format!("{addr}:{port}")
    }
}

/// The port of an `IP:PORT` listen address.
pub(crate) fn port_of(listen: &str) -> Option<u16> {
    listen.rsplit(':').next()?.parse().ok()
}

/// Checks `swarm join`: this node is in no swarm and joins nothing else,
/// the token parses, the listen port is fixed; the advertised address
/// defaults to `default_addr` on the listen port.
pub(crate) fn plan_join(
    in_swarm: bool,
    joining: bool,
    token: &str,
    listen_addr: &str,
    advertise_addr: &str,
    default_addr: &str,
) -> Result<(JoinToken, JoinAddrs), Refusal> {
    if in_swarm {
        let e = shoal_manager::control::ControlError::AlreadyInSwarm;
        return Err((e.kind(), e.to_string()));
    }
    if joining {
        return Err((ErrorKind::FailedPrecondition, "a join is already in progress on this node; wait for it".into()));
    }
    let token = JoinToken::parse(token).map_err(|e| (ErrorKind::InvalidArgument, e.to_string()))?;
    let listen = if listen_addr.is_empty() { format!("0.0.0.0:{SWARM_PORT}") } else { with_port_or(listen_addr, SWARM_PORT) };
    let port = match port_of(&listen) {
        Some(p) if p != 0 => p,
        _ => {
            let m = format!("invalid --listen-addr {listen:?}: a joining node needs a fixed swarm port (IP[:PORT], PORT not 0)");
            return Err((ErrorKind::InvalidArgument, m));
        }
    };
    let advertise = if advertise_addr.is_empty() { format!("{default_addr}:{port}") } else { with_port_or(advertise_addr, port) };
    Ok((token, JoinAddrs { listen, advertise }))
}

/// Where a join goes after a manager redirected it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Redirected {
    /// Dial the leader there.
    Dial(String),
    /// Give up, with this reason.
    Fail(&'static str),
}

/// The `redirects`th redirect (counted here) names `leader_addr`.
pub(crate) fn on_redirect(redirects: &mut u32, leader_addr: &str) -> Redirected {
    *redirects += 1;
    if *redirects > JOIN_REDIRECTS_MAX || leader_addr.is_empty() {
        return Redirected::Fail("the swarm has no reachable leader to admit this node");
    }
    Redirected::Dial(leader_addr.to_string())
}

/// Checks a manager's acceptance: recorded under this node's id, and for a
/// manager with a 32-byte cluster key (returned).
pub(crate) fn check_accepted(
    this_node: &str,
    recorded_as: &str,
    role: NodeRole,
    cluster_key: Option<&[u8]>,
) -> Result<Option<[u8; 32]>, Refusal> {
    if recorded_as != this_node {
        return Err((ErrorKind::Internal, format!("the manager recorded this node as {recorded_as}, expected {this_node}")));
    }
    match role {
        NodeRole::Worker => Ok(None),
        NodeRole::Manager => match cluster_key.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
            Some(k) => Ok(Some(k)),
            None => Err((ErrorKind::Internal, "the manager did not send a valid cluster key".into())),
        },
    }
}

/// Why `swarm leave` (without `--force` unless `force`) must not go ahead,
/// Docker's texts; `None`: leave. `managers`: managers in the state.
pub(crate) fn leave_refusal(mode: Mode, in_cluster: bool, managers: usize, force: bool) -> Option<Refusal> {
    match mode {
        Mode::Solo if !in_cluster => Some((ErrorKind::FailedPrecondition, "this node is not part of a swarm".into())),
        Mode::Manager | Mode::Solo if !force => {
            let managers = managers.max(1);
            let msg = if managers <= 1 {
                "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.".to_string()
            } else {
                format!(
                    "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves {} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.",
                    managers - 1
                )
            };
            Some((ErrorKind::FailedPrecondition, msg))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> String {
        let key = shoal_shared::noise::key::NodeKey::generate().unwrap();
        JoinToken::generate(key.public(), shoal_shared::noise::token::Secret::from_bytes([7; 16])).to_string()
    }

    #[test]
    fn a_join_needs_a_free_node_a_token_and_a_fixed_port() {
        let t = token();
        let (_, a) = plan_join(false, false, &t, "", "", "192.168.1.5").unwrap();
        assert_eq!(a, JoinAddrs { listen: "0.0.0.0:2377".into(), advertise: "192.168.1.5:2377".into() });
        // The advertised port follows --listen-addr.
        let (_, a) = plan_join(false, false, &t, "10.0.0.2:2477", "", "192.168.1.5").unwrap();
        assert_eq!(a.advertise, "192.168.1.5:2477");
        let (_, a) = plan_join(false, false, &t, "10.0.0.2:2477", "10.0.0.2", "x").unwrap();
        assert_eq!(a.advertise, "10.0.0.2:2477");
        let (kind, m) = plan_join(false, false, &t, "10.0.0.2:0", "", "x").unwrap_err();
        assert_eq!(kind, ErrorKind::InvalidArgument);
        assert!(m.contains("fixed swarm port"), "{m}");
        assert_eq!(plan_join(false, false, "SHLTKN-1-bogus", "", "", "x").unwrap_err().0, ErrorKind::InvalidArgument);
        assert_eq!(plan_join(false, true, &t, "", "", "x").unwrap_err().0, ErrorKind::FailedPrecondition);
        let (_, m) = plan_join(true, false, &t, "", "", "x").unwrap_err();
        assert!(m.contains("already part of a swarm"), "{m}");
    }

    #[test]
    fn redirects_are_bounded_and_need_an_address() {
        let mut n = 0;
        for _ in 0..JOIN_REDIRECTS_MAX {
            assert_eq!(on_redirect(&mut n, "10.0.0.1:2377"), Redirected::Dial("10.0.0.1:2377".into()));
        }
        assert!(matches!(on_redirect(&mut n, "10.0.0.1:2377"), Redirected::Fail(_)));
        let mut n = 0;
        assert!(matches!(on_redirect(&mut n, ""), Redirected::Fail(_)));
    }

    #[test]
    fn only_this_nodes_acceptance_with_a_good_key_is_taken() {
        assert_eq!(check_accepted("n1", "n1", NodeRole::Worker, None), Ok(None));
        assert_eq!(check_accepted("n1", "n1", NodeRole::Manager, Some(&[9; 32])), Ok(Some([9; 32])));
        assert!(check_accepted("n1", "n2", NodeRole::Worker, None).unwrap_err().1.contains("recorded this node as n2"));
        assert!(check_accepted("n1", "n1", NodeRole::Manager, Some(&[9; 31])).is_err());
        assert!(check_accepted("n1", "n1", NodeRole::Manager, None).is_err());
    }

    #[test]
    fn managers_leave_only_with_force() {
        assert!(leave_refusal(Mode::Solo, false, 0, true).unwrap().1.contains("not part of a swarm"));
        assert!(leave_refusal(Mode::Manager, true, 1, false).unwrap().1.contains("Removing the last manager erases"));
        assert!(leave_refusal(Mode::Manager, true, 3, false).unwrap().1.contains("leaves 2 managers out of 3"));
        assert_eq!(leave_refusal(Mode::Manager, true, 3, true), None);
        assert_eq!(leave_refusal(Mode::Worker, true, 3, false), None);
    }
}
