//! Raft membership following node roles: which single change the leader
//! makes next, and when a demoted manager stops being one.
//!
//! Pure: the daemon passes the raft status and the roles in the replicated
//! state (and a monotonic `now_ms`), and carries out the step returned.
//!
//! Invariants:
//! - one membership change at a time, in this order: a demoted leader hands
//!   leadership over before anything else (it never removes itself while
//!   leading); new managers join as learners; a learner is promoted only once
//!   it holds every committed entry; members without the manager role are
//!   removed last;
//! - a member is removed only while the voters left reach a majority
//!   (unreachable ones first); a demoted leader hands over only to a voter it
//!   reaches;
//! - a demoted manager keeps running raft until it knows its removal
//!   committed, or, [`DEMOTION_GRACE_MS`] after it saw its demotion, once no
//!   leader sends to it any more (a removed member is not told reliably: the
//!   leader's last heartbeat may be lost).

use crate::raft::{NodeId, Status};
use std::collections::BTreeSet;

/// A demoted manager leaves raft at the latest this long after its demotion applied.
pub const DEMOTION_GRACE_MS: u64 = 5_000;

/// The one membership change the leader makes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// This leader was demoted: hand leadership to this voter first.
    TransferLeader(NodeId),
    /// A manager that is not a raft member joins as a learner.
    AddLearner(NodeId),
    /// A learner that holds every committed entry becomes a voter.
    PromoteLearner(NodeId),
    /// A member whose node is no longer a manager leaves raft.
    Remove(NodeId),
}

/// The next change for leader `status.id`, given the raft ids of the nodes
/// whose role is Manager and which members the leader reaches now (`live`;
/// the leader itself always is). `None` when membership matches the roles,
/// when this node does not lead, or when the only change left would leave
/// the reachable voters short of a majority (it is held until it is safe).
pub fn next_step(status: &Status, managers: &BTreeSet<NodeId>, live: impl Fn(NodeId) -> bool) -> Option<Step> {
    if status.leader != status.id {
        return None;
    }
    let me = status.id;
    let live = |id: NodeId| id == me || live(id);
    let members: BTreeSet<NodeId> = status.voters.iter().chain(&status.learners).copied().collect();
    if !managers.contains(&me) {
        // Demoted (or its record gone): hand leadership to the most caught-up reachable
        // voter first; the next leader removes this one. A transfer to a voter that does
        // not answer would only stall writes for an election timeout, again and again.
        let best =
            status.progress.iter().filter(|p| p.id != me && status.voters.contains(&p.id) && live(p.id)).max_by_key(|p| p.match_index);
        return best.map(|p| Step::TransferLeader(p.id));
    }
    if let Some(id) = managers.iter().find(|r| !members.contains(r)) {
        return Some(Step::AddLearner(*id));
    }
    let caught_up = status
        .learners
        .iter()
        .filter(|l| managers.contains(l))
        .find(|l| status.progress.iter().any(|p| p.id == **l && p.match_index >= status.commit));
    if let Some(id) = caught_up {
        return Some(Step::PromoteLearner(*id));
    }
    // Unreachable members first (their removal is what makes the others' safe), then by id;
    // never one whose removal leaves the voters without a reachable majority (a voter died
    // after a demotion: found by the autopilot's property test, seed 1976).
    let mut leaving: Vec<NodeId> = members.iter().copied().filter(|r| *r != me && !managers.contains(r)).collect();
    leaving.sort_by_key(|r| (live(*r), *r));
    leaving.into_iter().find(|r| removal_keeps_quorum(&status.voters, *r, live)).map(Step::Remove)
}

/// Whether removing `member` leaves the remaining voters a reachable majority
/// (always, for a member that does not vote).
pub fn removal_keeps_quorum(voters: &[NodeId], member: NodeId, live: impl Fn(NodeId) -> bool) -> bool {
    let left: Vec<NodeId> = voters.iter().copied().filter(|v| *v != member).collect();
    let up = left.iter().filter(|v| live(**v)).count();
    !voters.contains(&member) || up > left.len() / 2
}

/// What a manager whose record says Worker does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demotion {
    /// Not demoted (or not a manager).
    None,
    /// Demoted, still a raft member: keep running raft for now.
    Wait,
    /// Leave raft and run as a worker.
    Switch,
}

/// `demoted`: the state says this manager is a worker; `member`: it is still
/// a raft member as far as it knows; `needed`: the other voters it knows
/// cannot commit its removal without its vote (then its removal cannot have
/// committed unseen, and leaving early would leave raft without a quorum);
/// `led`: another node leads it now (a leader that still sends to it has not
/// removed it: the leader holds a removal that is not safe yet, and leaving
/// anyway would take a vote the others need); `since_ms`: when it first saw
/// the demotion.
pub fn demotion(demoted: bool, member: bool, needed: bool, led: bool, since_ms: u64, now_ms: u64) -> Demotion {
    match (demoted, member) {
        (false, _) => Demotion::None,
        (true, false) => Demotion::Switch,
        (true, true) if !needed && !led && now_ms.saturating_sub(since_ms) >= DEMOTION_GRACE_MS => Demotion::Switch,
        (true, true) => Demotion::Wait,
    }
}

/// Whether voter `me` is needed for a quorum of `voters` (the others alone are fewer than a majority).
pub fn needed_for_quorum(voters: &[NodeId], me: NodeId) -> bool {
    let others = voters.iter().filter(|v| **v != me).count();
    voters.contains(&me) && others < voters.len() / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{PeerProgress, ProgressState, Role};

    fn status(me: NodeId, voters: &[NodeId], learners: &[NodeId], matches: &[(NodeId, u64)], commit: u64) -> Status {
        Status {
            id: me,
            term: 2,
            vote: me,
            role: Role::Leader,
            leader: me,
            commit,
            applied: commit,
            last_index: commit,
            snapshot_index: 0,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            progress: matches
                .iter()
                .map(|(id, m)| PeerProgress {
                    id: *id,
                    match_index: *m,
                    next_index: m + 1,
                    state: ProgressState::Replicate,
                    recent_active: true,
                    inflight_msgs: 0,
                })
                .collect(),
        }
    }

    fn all(_: NodeId) -> bool {
        true
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn one_change_at_a_time_in_order() {
        // Matching: nothing to do.
        let st = status(1, &[1, 2], &[], &[(1, 9), (2, 9)], 9);
        assert_eq!(next_step(&st, &set(&[1, 2]), all), None);
        // A new manager joins as a learner, before anything is removed.
        assert_eq!(next_step(&st, &set(&[1, 3]), all), Some(Step::AddLearner(3)));
        // A learner is promoted once caught up, not before.
        let st = status(1, &[1, 2], &[3], &[(1, 9), (2, 9), (3, 8)], 9);
        assert_eq!(next_step(&st, &set(&[1, 2, 3]), all), None);
        let st = status(1, &[1, 2], &[3], &[(1, 9), (2, 9), (3, 9)], 9);
        assert_eq!(next_step(&st, &set(&[1, 2, 3]), all), Some(Step::PromoteLearner(3)));
        // A member that is no longer a manager leaves last.
        let st = status(1, &[1, 2, 3], &[], &[(1, 9), (2, 9), (3, 9)], 9);
        assert_eq!(next_step(&st, &set(&[1, 3]), all), Some(Step::Remove(2)));
        // Only the leader decides.
        let mut follower = st.clone();
        follower.leader = 3;
        assert_eq!(next_step(&follower, &set(&[1, 3]), all), None);
    }

    #[test]
    fn a_demoted_leader_hands_over_to_the_most_caught_up_voter_and_never_removes_itself() {
        let st = status(1, &[1, 2, 3], &[4], &[(1, 9), (2, 7), (3, 9), (4, 9)], 9);
        assert_eq!(next_step(&st, &set(&[2, 3, 4]), all), Some(Step::TransferLeader(3)));
        // Alone, it has nobody to hand over to, and it does not remove itself.
        let alone = status(1, &[1], &[], &[(1, 9)], 9);
        assert_eq!(next_step(&alone, &set(&[]), all), None);
    }

    #[test]
    fn a_demoted_manager_switches_when_removed_or_after_its_grace() {
        assert_eq!(demotion(false, true, false, false, 0, 10_000), Demotion::None);
        assert_eq!(demotion(true, true, false, false, 1_000, 1_000 + DEMOTION_GRACE_MS - 1), Demotion::Wait);
        assert_eq!(demotion(true, false, false, false, 1_000, 1_001), Demotion::Switch, "told that its removal committed");
        assert_eq!(demotion(true, true, false, false, 1_000, 1_000 + DEMOTION_GRACE_MS), Demotion::Switch);
        // Found by the whole-node simulator: one of two voters, demoted, left by the grace while
        // the other was cut off; the removal needed its vote, and raft lost its quorum for good.
        assert_eq!(demotion(true, true, true, false, 1_000, 1_000 + 60 * DEMOTION_GRACE_MS), Demotion::Wait);
        assert!(needed_for_quorum(&[1, 2], 2), "two voters: each is needed");
        assert!(!needed_for_quorum(&[1, 2, 3], 3), "three voters: the other two commit");
        assert!(!needed_for_quorum(&[1, 2, 3, 4], 4), "four voters: the other three are a majority");
        assert!(!needed_for_quorum(&[1, 2], 3), "not a voter: never needed");
        // Still led after the grace: the leader has not removed it (it holds the removal).
        assert_eq!(demotion(true, true, false, true, 1_000, 1_000 + 60 * DEMOTION_GRACE_MS), Demotion::Wait);
    }

    #[test]
    fn removals_keep_a_reachable_majority_and_go_unreachable_first() {
        // 1 leads; 2 was demoted, then 3 died: removing 2 leaves 1 and a dead 3.
        let st = status(1, &[1, 2, 3], &[], &[(1, 9), (2, 9), (3, 8)], 9);
        let not3 = |id: NodeId| id != 3;
        assert_eq!(next_step(&st, &set(&[1, 3]), not3), None, "held");
        // Once 3 is demoted too, the dead one goes first, then 2.
        assert_eq!(next_step(&st, &set(&[1]), not3), Some(Step::Remove(3)));
        let st = status(1, &[1, 2], &[], &[(1, 9), (2, 9)], 9);
        assert_eq!(next_step(&st, &set(&[1]), not3), Some(Step::Remove(2)));
        // A learner's removal never changes the quorum, and a demoted learner is never made a voter.
        let st = status(1, &[1, 3], &[2], &[(1, 9), (2, 9), (3, 8)], 9);
        assert_eq!(next_step(&st, &set(&[1, 3]), not3), Some(Step::Remove(2)));
        // A demoted leader hands over to a voter it reaches, even a less caught-up one.
        let st = status(1, &[1, 2, 3], &[], &[(1, 9), (2, 7), (3, 9)], 9);
        assert_eq!(next_step(&st, &set(&[2, 3]), not3), Some(Step::TransferLeader(2)));
        assert_eq!(next_step(&st, &set(&[2, 3]), |_| false), None, "nobody to hand over to");
    }
}
