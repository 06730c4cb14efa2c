//! The simulator's checkers: what must hold after every round, and what a
//! healed cluster must reach.
//!
//! Owns [`Checker`]. Every round in which a daemon ran:
//! - no acknowledged `service create` is lost: every manager whose replica
//!   applied past the index the write was seen at holds the service (unless
//!   a `service rm` was sent for it);
//! - at most one task wants to run per replicated slot and per global node,
//!   in every manager's replica;
//! - a task the leader assigns goes to a node that passes its constraints
//!   and platforms;
//! - a new dispatcher session is only ever for a node in the leader's state
//!   (a removed node's key never gets one);
//! - a fresh assignment goes to a node that is Ready (never to a Down or
//!   Disconnected one, `--node-lost-after`);
//! - no node stays Down while it has a live link to the leader for longer
//!   than `DOWN_WHILE_LINKED_MS`;
//! - no replicated slot runs on two machines linked to the leader (a node
//!   back from a partition stops its superseded copies) for longer than
//!   `DOUBLE_RUN_LINKED_MS`;
//! - every request is answered within `client::ANSWER_MS_MAX`.
//!
//! After healing ([`Checker::converged`]): one leader; every manager holds
//! the same state; every node in a swarm is Ready with a session; every
//! service has its tasks running where they may run; what runs on each
//! machine is exactly what the leader wants there; and with the autopilot
//! on, the voters are exactly the managers, N of them, or fewer with the
//! leader saying that no worker is eligible.

use super::client::Client;
use crate::daemon::sim_hooks::View;
use shoal_manager::placement::ValidPlacement;
use shoal_manager::state::State;
use shoal_shared::task::TaskState;
use shoal_shared::types::{Availability, Node, NodeState, Placement, ServiceMode, Task, UpdateState};
use std::collections::{BTreeMap, BTreeSet};

/// How long a node may stay Down while linked to the leader (the
/// dispatcher's grace plus a session's round trip, with room).
pub(crate) const DOWN_WHILE_LINKED_MS: u64 = 15_000;

/// How long one replicated slot may run on two machines that are both linked
/// to the leader: a returning node stops its superseded copies within
/// seconds (the bound); this leaves room for a session's round trip
/// and a stop.
pub(crate) const DOUBLE_RUN_LINKED_MS: u64 = 15_000;

/// What a checker sees of one simulated machine.
pub(crate) struct NodeFacts<'a> {
    pub index: usize,
    pub node_id: &'a str,
    /// The daemon's view (None while its process is down).
    pub view: Option<View<'a>>,
    /// Whether a live link joins it to each other machine.
    pub linked: Vec<bool>,
    /// Containers whose process runs on it.
    pub running: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) violations: Vec<String>,
    /// Sessions each leader had at the last round.
    sessions: BTreeMap<usize, BTreeSet<String>>,
    /// Tasks whose assignment was checked.
    assigned: BTreeSet<String>,
    /// Tasks first seen Assigned (checked against their node's state).
    scheduled: BTreeSet<String>,
    /// When each (leader, node) pair was first seen Down and linked.
    down_linked_since: BTreeMap<(usize, String), u64>,
    /// When each (leader, service id, slot) was first seen running on two linked machines.
    doubled_since: BTreeMap<(usize, String, u64), u64>,
}

/// Whether `task` wants to run and has not ended.
fn live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running && !t.status.state.is_terminal()
}

/// Whether `node` may run a task placed by `placement` (constraints and platforms).
fn fits(placement: &Placement, node: &Node) -> bool {
    let Ok(p) = ValidPlacement::parse(placement) else { return false };
    let platforms = &placement.platforms;
    p.constraints_match(node) && (platforms.is_empty() || platforms.iter().any(|x| x.runs_on(&node.description.platform)))
}

/// Whether `node` takes new tasks.
fn eligible(node: &Node) -> bool {
    node.state == NodeState::Ready && node.availability == Availability::Active
}

impl Checker {
    fn violation(&mut self, now_ms: u64, what: String) {
        if self.violations.len() < 8 {
            self.violations.push(format!("at {now_ms} ms: {what}"));
        }
    }

    /// The checks of one round.
    pub(crate) fn step(&mut self, now_ms: u64, facts: &[NodeFacts<'_>], client: &Client) {
        for h in &client.hung {
            let h = h.clone();
            self.violation(now_ms, h);
        }
        // Clocks of a leadership end with it (a node leading again starts afresh).
        let leading: BTreeSet<usize> =
            facts.iter().filter(|f| f.view.as_ref().is_some_and(|v| v.leads && v.in_swarm)).map(|f| f.index).collect();
        self.down_linked_since.retain(|(l, _), _| leading.contains(l));
        self.doubled_since.retain(|(l, _, _), _| leading.contains(l));
        self.sessions.retain(|l, _| leading.contains(l));
        for f in facts {
            let Some(v) = &f.view else { continue };
            if !v.manager || v.state.cluster.is_none() {
                continue;
            }
            self.acked_writes(now_ms, f.index, v.state, client);
            self.one_per_slot(now_ms, f.index, v.state);
            if v.leads && v.in_swarm {
                self.leader(now_ms, f, facts);
            }
        }
    }

    fn acked_writes(&mut self, now_ms: u64, i: usize, state: &State, client: &Client) {
        for (name, acked) in &client.acked {
            let Some(floor) = acked.floor else { continue };
            if client.removed.contains(name) || state.applied_index < floor {
                continue;
            }
            if !state.services.values().any(|s| &s.spec.name == name) {
                let what = format!(
                    "acknowledged write lost: service {name} (seen at index {floor}, acknowledged at {} ms) is missing on node-{i} at applied index {}",
                    acked.at_ms, state.applied_index
                );
                self.violation(now_ms, what);
            }
        }
    }

    fn one_per_slot(&mut self, now_ms: u64, i: usize, state: &State) {
        let mut slots: BTreeMap<(&str, u64, &str), Vec<&str>> = BTreeMap::new();
        for t in state.tasks.values().filter(|t| live(t)) {
            let key = if t.slot > 0 { (t.service_id.as_str(), t.slot, "") } else { (t.service_id.as_str(), 0, t.node_id.as_str()) };
            slots.entry(key).or_default().push(&t.id);
        }
        let doubled: Vec<String> = slots
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|((svc, slot, node), ids)| format!("service {svc} slot {slot}{node}: tasks {ids:?} all want to run"))
            .collect();
        for d in doubled {
            self.violation(now_ms, format!("node-{i}'s replica: {d}"));
        }
    }

    fn leader(&mut self, now_ms: u64, f: &NodeFacts<'_>, facts: &[NodeFacts<'_>]) {
        let Some(v) = &f.view else { return };
        let state = v.state;
        // Fresh assignments pass their placement.
        let mut bad = Vec::new();
        for t in state.tasks.values() {
            if t.node_id.is_empty() || self.assigned.contains(&t.id) {
                continue;
            }
            self.assigned.insert(t.id.clone());
            if t.status.state > TaskState::Assigned || !live(t) {
                continue;
            }
            match state.nodes.get(&t.node_id) {
                Some(n) if fits(&t.spec.placement, n) => {}
                // The node changed after the placement (a promotion in the same round, say):
                // the placement was checked against the record of its time; the constraint
                // enforcer deals with the change (seed 3892 of 10,000: a false alarm).
                Some(n) if n.meta.version > t.meta.version => {}
                Some(n) => bad.push(format!(
                    "task {} assigned to {} ({}, {}) which fails its placement {:?}",
                    t.id,
                    n.description.hostname,
                    n.description.platform,
                    format_labels(n),
                    t.spec.placement
                )),
                // Assigned while the node was there, then the node was removed (`node rm`): the
                // orchestrator ends such tasks (Orphaned).
                None => {}
            }
        }
        // The scheduler sends nothing new to a node that is not Ready (Down, or Disconnected and
        // keeping what it ran, `--node-lost-after`); a global task may wait there in New.
        for t in state.tasks.values().filter(|t| t.status.state == TaskState::Assigned && live(t)) {
            if !self.scheduled.insert(t.id.clone()) {
                continue;
            }
            if let Some(n) = state.nodes.get(&t.node_id).filter(|n| n.state != NodeState::Ready && n.meta.version <= t.meta.version) {
                bad.push(format!("task {} was assigned to {} ({}) while it is {:?}", t.id, n.description.hostname, n.id, n.state));
            }
        }
        for b in bad {
            self.violation(now_ms, b);
        }
        // Sessions only for nodes in the state: a new one never, an old one closed in the
        // round that removed its node.
        let now: BTreeSet<String> = v.sessions.iter().cloned().collect();
        let before = self.sessions.insert(f.index, now.clone()).unwrap_or_default();
        for n in &now {
            if !state.nodes.contains_key(n) {
                let what = if before.contains(n) { "kept" } else { "opened" };
                self.violation(now_ms, format!("node-{}'s dispatcher {what} a session for {n}, which is not in its state", f.index));
            }
        }
        // Down while linked.
        for node in state.nodes.values() {
            let key = (f.index, node.id.clone());
            let linked = facts.iter().find(|x| x.node_id == node.id).is_some_and(|x| f.linked.get(x.index).copied().unwrap_or(false));
            if node.state == NodeState::Down && linked {
                let since = *self.down_linked_since.entry(key).or_insert(now_ms);
                if now_ms - since > DOWN_WHILE_LINKED_MS {
                    let what = format!(
                        "node {} ({}) has been Down for {} ms on leader node-{} while linked to it",
                        node.id,
                        node.description.hostname,
                        now_ms - since,
                        f.index
                    );
                    self.violation(now_ms, what);
                    self.down_linked_since.remove(&(f.index, node.id.clone()));
                }
            } else {
                self.down_linked_since.remove(&key);
            }
        }
        self.doubled_runs(now_ms, f, facts);
    }

    /// A replicated slot running on two machines that are both up and linked
    /// to leader `f` (a partitioned node may keep its copy until it is back).
    fn doubled_runs(&mut self, now_ms: u64, f: &NodeFacts<'_>, facts: &[NodeFacts<'_>]) {
        let Some(v) = &f.view else { return };
        let state = v.state;
        let mut machines: BTreeMap<(&str, u64), BTreeSet<usize>> = BTreeMap::new();
        for x in facts {
            let linked = x.index == f.index || f.linked.get(x.index).copied().unwrap_or(false);
            if x.view.is_none() || !linked {
                continue;
            }
            for id in &x.running {
                if let Some(t) = state.tasks.get(id).filter(|t| t.slot > 0) {
                    machines.entry((t.service_id.as_str(), t.slot)).or_default().insert(x.index);
                }
            }
        }
        let mut doubled: BTreeSet<(usize, String, u64)> = BTreeSet::new();
        for ((svc, slot), on) in &machines {
            if on.len() < 2 {
                continue;
            }
            let key = (f.index, svc.to_string(), *slot);
            let since = *self.doubled_since.entry(key.clone()).or_insert(now_ms);
            if now_ms - since > DOUBLE_RUN_LINKED_MS {
                let what = format!(
                    "service {svc} slot {slot} has run on nodes {on:?} (all linked to leader node-{}) for {} ms",
                    f.index,
                    now_ms - since
                );
                self.violation(now_ms, what);
                self.doubled_since.remove(&key);
                continue;
            }
            doubled.insert(key);
        }
        let leader = f.index;
        self.doubled_since.retain(|k, _| k.0 != leader || doubled.contains(k));
    }

    /// Whether a healed cluster has converged; the reason if not.
    pub(crate) fn converged(facts: &[NodeFacts<'_>]) -> Result<(), String> {
        // A node that left leads its own one-node group: not the swarm's leader.
        let leaders: Vec<&NodeFacts<'_>> = facts.iter().filter(|f| f.view.as_ref().is_some_and(|v| v.leads && v.in_swarm)).collect();
        let [leader] = leaders.as_slice() else {
            return Err(format!("{} leaders", leaders.len()));
        };
        let lv = leader.view.as_ref().expect("a leader has a view");
        let state = lv.state;
        for f in facts {
            let Some(v) = &f.view else { return Err(format!("node-{} is down", f.index)) };
            // A node removed from the swarm (`node rm`) keeps its old replica until a user
            // runs `swarm leave --force` on it, as in Swarm: it is not in the swarm to agree.
            let member = state.nodes.contains_key(f.node_id);
            if v.manager && v.state.cluster.is_some() && member {
                let same = v.state.services == state.services && v.state.nodes == state.nodes && v.state.tasks == state.tasks;
                if !same {
                    return Err(format!(
                        "node-{} (applied {}) disagrees with leader node-{} (applied {}) ({})",
                        f.index, v.state.applied_index, leader.index, state.applied_index, v.hints
                    ));
                }
            }
            if !v.in_swarm {
                continue;
            }
            let Some(node) = state.nodes.get(f.node_id) else { continue };
            if node.state != NodeState::Ready {
                return Err(format!("node-{} is {:?} in the leader's state ({})", f.index, node.state, v.hints));
            }
            if !v.manager && !lv.sessions.iter().any(|s| s == f.node_id) {
                return Err(format!("worker node-{} has no session at leader node-{} ({})", f.index, leader.index, v.hints));
            }
            // What runs on the machine is what the leader wants there.
            let want: BTreeSet<&str> = state
                .tasks
                .values()
                .filter(|t| t.node_id == f.node_id && t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
                .map(|t| t.id.as_str())
                .collect();
            let running: BTreeSet<&str> = f.running.iter().map(String::as_str).collect();
            if want != running {
                let describe = |id: &str| match state.tasks.get(id) {
                    Some(t) => format!(
                        "{id}: on {} desired {:?} observed {:?} ({}) service {}",
                        short_id(&t.node_id),
                        t.desired_state,
                        t.status.state,
                        t.status.message,
                        short_id(&t.service_id)
                    ),
                    None => format!("{id}: not in the leader's state"),
                };
                let extra: Vec<String> = running.difference(&want).map(|id| describe(id)).collect();
                let missing: Vec<String> = want.difference(&running).map(|id| describe(id)).collect();
                return Err(format!("node-{} runs tasks the leader does not want there {extra:?}, and misses {missing:?}", f.index));
            }
        }
        if state.autopilot.managers > 0 {
            autopilot_converged(state, lv)?;
        }
        for s in state.services.values() {
            // A paused update waits for the user, as Swarm's does.
            if s.update_status.as_ref().is_some_and(|u| matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused)) {
                continue;
            }
            let tasks: Vec<&Task> =
                state.tasks.values().filter(|t| t.service_id == s.id && t.desired_state == TaskState::Running).collect();
            let places: Vec<&Node> = state.nodes.values().filter(|n| eligible(n)).collect();
            let fitting: Vec<&&Node> = places.iter().filter(|n| fits(&s.spec.task.placement, n)).collect();
            if fitting.is_empty() {
                continue;
            }
            let running_on = |n: &Node| tasks.iter().filter(|t| t.node_id == n.id && t.status.state == TaskState::Running).count();
            let (running, want) = match s.spec.mode {
                // Jobs: every slot of the current iteration completed, none running.
                ServiceMode::ReplicatedJob { total_completions, .. } => {
                    let p = shoal_manager::orchestrator::job_progress(state, s).unwrap_or_default();
                    (p.completed as usize + 1000 * p.running as usize, total_completions as usize)
                }
                ServiceMode::GlobalJob => {
                    let p = shoal_manager::orchestrator::job_progress(state, s).unwrap_or_default();
                    let done_on = |n: &Node| {
                        state.tasks.values().any(|t| {
                            t.service_id == s.id
                                && t.node_id == n.id
                                && t.status.state == TaskState::Complete
                                && t.desired_state == TaskState::Running
                                && t.spec == s.spec.task
                        })
                    };
                    (fitting.iter().filter(|n| done_on(n)).count() + 1000 * p.running as usize, fitting.len())
                }
                ServiceMode::Replicated { replicas } => {
                    (tasks.iter().filter(|t| t.status.state == TaskState::Running).count(), replicas as usize)
                }
                // One on every Active node that fits; a paused node keeps what it runs, a drained one runs none.
                ServiceMode::Global => {
                    let active_fitting = fitting.iter().filter(|n| running_on(n) == 1).count();
                    let drained = tasks.iter().any(|t| state.nodes.get(&t.node_id).is_some_and(|n| n.availability == Availability::Drain));
                    (active_fitting + usize::from(drained) * 1000, fitting.len())
                }
            };
            if running != want {
                let list: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == s.id && !t.status.state.is_terminal())
                    .map(|t| {
                        let node =
                            state.nodes.get(&t.node_id).map_or("gone".to_string(), |n| format!("{:?} {:?}", n.state, n.availability));
                        format!(
                            "slot {} on {} ({node}) v{} {:?}/{:?}",
                            t.slot,
                            short_id(&t.node_id),
                            t.service_version,
                            t.desired_state,
                            t.status.state
                        )
                    })
                    .collect();
                let pending: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == s.id && t.status.state < TaskState::Assigned && !t.status.state.is_terminal())
                    .map(|t| format!("{:?} {}: {}", t.spec.placement.constraints, t.status.message, t.status.err))
                    .collect();
                // What the orchestrator would do on this state now (an op that never applies shows here).
                let later = state.tasks.values().map(|t| t.status.timestamp).max().unwrap_or(0) + 3_600_000_000_000;
                let mut rng = shoal_shared::rng::Rng::from_seed(1);
                let next: Vec<String> = shoal_manager::orchestrator::reconcile(state, later, &mut rng)
                    .iter()
                    .take(4)
                    .map(|op| format!("{op:?}").chars().take(120).collect())
                    .collect();
                return Err(format!(
                    "service {} ({:?}, version {}, update {:?}) runs {running} of {want} tasks: {list:?}; pending: {pending:?}; orchestrator next: {next:?}",
                    s.spec.name,
                    s.spec.mode,
                    s.meta.version,
                    s.update_status.as_ref().map(|u| u.state)
                ));
            }
        }
        Ok(())
    }
}

fn format_labels(n: &Node) -> String {
    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(6)]
}

/// With `--managers N`: the raft voters are exactly the nodes whose role is
/// manager, and there are N, or fewer while the leader's autopilot says no
/// worker can be promoted (drained, flapping or full-disk nodes).
fn autopilot_converged(state: &State, lv: &View<'_>) -> Result<(), String> {
    let wanted = state.autopilot.managers as usize;
    let managers: BTreeSet<u64> = state
        .nodes
        .values()
        .filter(|n| n.role == shoal_shared::types::NodeRole::Manager)
        .map(|n| shoal_manager::store::raft_id(&n.id))
        .collect();
    let voters: BTreeSet<u64> = lv.voters.iter().copied().collect();
    let said = lv.autopilot.as_ref().map_or("no status".to_string(), |a| a.state.clone());
    if managers != voters {
        return Err(format!("autopilot: the managers {managers:x?} are not the raft voters {voters:x?} ({said})"));
    }
    let unable = said.contains("no worker is eligible") || said.contains("there is no worker to promote");
    if managers.len() == wanted || (managers.len() < wanted && unable) {
        return Ok(());
    }
    Err(format!("autopilot: {wanted} managers wanted, {} are ({said})", managers.len()))
}
