//! The updater: rolling updates and rollbacks, one batch at a time.
//!
//! Pure, like the rest of the orchestrator: it reads one service and its
//! tasks (grouped by slot) plus `now`, and returns ops. Its only memory is
//! the service's replicated [`UpdateStatus`]; everything else is derived
//! from the tasks, so a restarted manager resumes where the last one was.
//!
//! Rules (after swarmkit's `orchestrator/update/updater.go`):
//! - updates start in control: `service update` with a changed task spec
//!   (or on a paused update) writes `updating`, `service rollback` writes
//!   `rollback_started`; the updater acts only while one of these holds;
//! - a slot is *dirty* when its runnable task (desired `<= Running`; a dead
//!   one the restart policy keeps counts too) is not *current*: it runs a
//!   `TaskSpec` other than the service's, or it was placed without an
//!   address on a network its service now needs (`ingress` after
//!   `--publish-add` of the first ingress port, as swarmkit's dirty check
//!   compares endpoints). A replica-count change dirties nothing,
//!   `--force` bumps `force_update` inside the task spec and so dirties
//!   every slot;
//! - the update's own tasks are those with the service's task spec created
//!   since the update started: `service_version >= UpdateStatus.started_index`
//!   (raft indexes, so clock steps on the leader cannot hide them);
//! - the config is `spec.update`, or `spec.rollback` while rolling back;
//! - slots are replaced in batches of `parallelism` (0 = all at once), in
//!   slot order. A batch is *in flight* while one of its new tasks has not
//!   reached `Running` (and has not failed) or, for start-first, while the
//!   old task still runs next to a live new one. The next batch starts
//!   `delay` after the last new task reached `Running` (or ended);
//! - stop-first: the old task gets `desired = Shutdown` and the new one is
//!   created in the same slot held in `Ready` ([`HELD_BY_UPDATER`]) until the
//!   old one has stopped; start-first: the new one is created desired
//!   `Running` and the old one is shut down once the new one runs (if the
//!   new one dies for good, the old one keeps running);
//! - a failure is one of the update's tasks ending (`Failed`, `Rejected`, or
//!   `Complete`: "failure or early termination") while the update is in
//!   progress, which lasts until `monitor` after its last task settled (so
//!   every task is watched for at least `monitor`; swarmkit watches each task
//!   for exactly `monitor` after it starts, which needs a start time the
//!   task status does not keep). When failed slots / updated slots exceeds
//!   `max_failure_ratio` the failure action applies: `pause` (state `paused`
//!   or, during a rollback, `rollback_paused`), `continue`, or `rollback`
//!   (the previous spec comes back and is cleared, rolled out with the
//!   rollback config; a rollback never rolls back, it pauses);
//! - with nothing dirty or in flight, the update completes `monitor` after
//!   its last task reached `Running` or ended (at once if it created no task);
//! - a dirty slot whose task is on a `Disconnected` node (`--node-lost-after`)
//!   is *deferred*: the update neither replaces it nor waits for it, and
//!   completes with a message naming how many tasks on which nodes will
//!   update when they return ([`MSG_DEFERRED`]). While a completed status
//!   says so, the updater goes on with the deferred slots whose node is back
//!   (same batches, order and delay; failures go to the restart policy, the
//!   update being over), and says `update completed` once none is left;
//! - the orchestrator calls the updater only in rounds where restarts,
//!   drains, the constraint enforcer and scaling had nothing to do, so no
//!   two of them race for a slot.

use crate::orchestrator::{new_task, SlotKey};
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::Op;
use shoal_shared::rng::Rng;
use shoal_shared::task::TaskState;
use shoal_shared::types::{FailureAction, Service, Task, UpdateOrder, UpdateState, UpdateStatus};
use std::collections::BTreeMap;

/// `not_before` of a stop-first replacement waiting for its old task to stop.
pub const HELD_BY_UPDATER: UnixNanos = UnixNanos::MAX;

/// Swarm's messages.
pub const MSG_UPDATING: &str = "update in progress";
pub const MSG_COMPLETED: &str = "update completed";
pub const MSG_ROLLBACK_MANUAL: &str = "manually requested rollback";
pub const MSG_ROLLBACK_COMPLETED: &str = "rollback completed";
/// Ends a completion message that left tasks for their nodes' return.
pub const MSG_DEFERRED: &str = "will update when they return";

/// What one slot looks like to the updater.
struct SlotView<'a> {
    /// The runnable task running another spec (dirty), if any.
    old: Option<&'a Task>,
    /// The newest runnable task with the service's spec, if any.
    new: Option<&'a Task>,
    /// Tasks this update created in the slot, oldest first.
    mine: Vec<&'a Task>,
    /// The first of `mine` that failed.
    failed: Option<&'a Task>,
}

fn runnable(t: &Task) -> bool {
    t.desired_state <= TaskState::Running
}

/// A task the scheduler could not place and said why (`no suitable node
/// (...)`): it waits for a node, not for the update, so it neither holds
/// the update up nor counts as a failure (Swarm completes such updates).
fn waits_for_node(t: &Task) -> bool {
    t.status.state == TaskState::Pending && !t.status.err.is_empty()
}

fn is_failure(t: &Task) -> bool {
    matches!(t.status.state, TaskState::Complete | TaskState::Failed | TaskState::Rejected)
}

/// Appends the ops that move `service`'s rolling update along.
pub fn update(
    service: &Service,
    current: &dyn Fn(&Task) -> bool,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    away: &crate::orchestrator::Away<'_>,
    now: UnixNanos,
    rng: &mut Rng,
    ops: &mut Vec<Op>,
) {
    // Updates start in control (`service update`/`rollback` write the status);
    // paused or never-updated services are left alone, and completed ones
    // unless they left tasks of disconnected nodes for later.
    let status = match &service.update_status {
        Some(s) if s.state.in_progress() => s,
        Some(s) if matches!(s.state, UpdateState::Completed | UpdateState::RollbackCompleted) && s.message.ends_with(MSG_DEFERRED) => s,
        _ => return,
    };
    let finishing = !status.state.in_progress();
    let rolling_back = matches!(status.state, UpdateState::RollbackStarted | UpdateState::RollbackCompleted);
    let cfg = if rolling_back { service.spec.rollback } else { service.spec.update };

    let views: Vec<SlotView> = slots
        .values()
        .map(|tasks| {
            let old = tasks.iter().copied().find(|t| runnable(t) && !current(t));
            let new = tasks.iter().rev().copied().find(|t| runnable(t) && current(t));
            let mine: Vec<&Task> = tasks.iter().copied().filter(|t| current(t) && t.service_version >= status.started_index).collect();
            let failed = mine.iter().copied().find(|t| is_failure(t));
            SlotView { old, new, mine, failed }
        })
        .collect();

    // Failures first: they may stop everything else.
    let updated = views.iter().filter(|v| !v.mine.is_empty()).count();
    let failed: Vec<&Task> = views.iter().filter_map(|v| v.failed).collect();
    if !finishing && !failed.is_empty() && failed.len() as f64 / updated as f64 > f64::from(cfg.max_failure_ratio) {
        let culprit = &failed[0].id;
        let paused = |state, what: &str| UpdateStatus {
            state,
            started_at: status.started_at,
            completed_at: 0,
            message: format!("{what} paused due to failure or early termination of task {culprit}"),
            started_index: status.started_index,
        };
        match (cfg.failure_action, rolling_back) {
            (FailureAction::Continue, _) => {}
            (_, true) => {
                ops.push(Op::SetUpdateStatus { id: service.id.clone(), status: paused(UpdateState::RollbackPaused, "rollback") });
                return;
            }
            (FailureAction::Rollback, false) if service.previous_spec.is_some() => {
                let message = format!("update rolled back due to failure or early termination of task {culprit}");
                let status = UpdateStatus::started(UpdateState::RollbackStarted, now, &message);
                ops.push(Op::RollbackService { id: service.id.clone(), status });
                return;
            }
            _ => {
                ops.push(Op::SetUpdateStatus { id: service.id.clone(), status: paused(UpdateState::Paused, "update") });
                return;
            }
        }
    }

    // Finish started slots: release stop-first replacements, stop start-first originals.
    let mut in_flight = 0usize;
    for (v, tasks) in views.iter().zip(slots.values()) {
        let Some(new) = v.new else {
            continue;
        };
        if let Some(old) = v.old {
            if new.status.state == TaskState::Running {
                ops.push(Op::SetTaskDesired { id: old.id.clone(), desired: TaskState::Shutdown });
            } else if !new.status.state.is_terminal() {
                in_flight += 1;
            }
            // A start-first replacement that died (and is not restarted) leaves the old task running.
            continue;
        }
        if new.desired_state == TaskState::Ready && new.not_before == HELD_BY_UPDATER {
            let others_alive = tasks.iter().any(|t| t.id != new.id && crate::orchestrator::holds_slot(t, away));
            if !others_alive {
                ops.push(Op::ReleaseTask { id: new.id.clone() });
            }
        }
        let ours = v.mine.last().is_some_and(|t| t.id == new.id);
        if ours && new.status.state < TaskState::Running && v.failed.is_none() && !waits_for_node(new) {
            in_flight += 1;
        }
    }
    if in_flight > 0 {
        return;
    }

    // When the update's tasks last settled (reached Running, or ended).
    let last_settled =
        views.iter().flat_map(|v| v.mine.iter()).filter(|t| t.status.state >= TaskState::Running).map(|t| t.status.timestamp).max();
    let any_mine = views.iter().any(|v| !v.mine.is_empty());
    let (deferred, dirty): (Vec<&Task>, Vec<&Task>) =
        views.iter().filter(|v| v.new.is_none()).filter_map(|v| v.old).partition(|t| away.disconnected.contains(t.node_id.as_str()));
    if finishing {
        if dirty.is_empty() && deferred.is_empty() {
            let message = if rolling_back { MSG_ROLLBACK_COMPLETED } else { MSG_COMPLETED };
            ops.push(Op::SetUpdateStatus {
                id: service.id.clone(),
                status: UpdateStatus { message: message.to_string(), ..status.clone() },
            });
        }
        if dirty.is_empty() {
            return;
        }
    }
    if dirty.is_empty() {
        // A settle time ahead of this leader's clock (its clock went back, or another
        // manager's ran ahead) does not hold the update up for the skew (found by the
        // whole-node simulator: a leader whose clock jumped back an hour stalled for an hour).
        let settled = match last_settled {
            Some(t) => t > now || now >= t.saturating_add(cfg.monitor_ns),
            None => !any_mine,
        };
        if settled {
            let (state, message) = if rolling_back {
                (UpdateState::RollbackCompleted, MSG_ROLLBACK_COMPLETED)
            } else {
                (UpdateState::Completed, MSG_COMPLETED)
            };
            let message = match deferred_text(service, &deferred) {
                Some(later) => format!("{message}; {later}"),
                None => message.to_string(),
            };
            let done = UpdateStatus { completed_at: now, message, state, ..status.clone() };
            ops.push(Op::SetUpdateStatus { id: service.id.clone(), status: done });
        }
        return;
    }
    if let Some(t) = last_settled {
        if t <= now && now < t.saturating_add(cfg.delay_ns) {
            return;
        }
    }
    let batch = if cfg.parallelism == 0 { dirty.len() } else { (cfg.parallelism as usize).min(dirty.len()) };
    for old in &dirty[..batch] {
        // Replicated tasks are placed afresh; global ones stay on their node.
        let node = if old.slot > 0 { "" } else { old.node_id.as_str() };
        let mut next = new_task(service, old.slot, node, rng, 0);
        match cfg.order {
            UpdateOrder::StopFirst => {
                ops.push(Op::SetTaskDesired { id: old.id.clone(), desired: TaskState::Shutdown });
                next.desired_state = TaskState::Ready;
                next.not_before = HELD_BY_UPDATER;
            }
            UpdateOrder::StartFirst => {}
        }
        ops.push(Op::CreateTask(next));
    }
}

/// What a completion says of `deferred` (tasks on disconnected nodes):
/// the tasks as `service.slot`, the nodes, and [`MSG_DEFERRED`].
fn deferred_text(service: &Service, deferred: &[&Task]) -> Option<String> {
    if deferred.is_empty() {
        return None;
    }
    let shown = |names: Vec<String>| {
        let more = names.len().saturating_sub(DEFERRED_SHOWN_MAX);
        let mut text = names.into_iter().take(DEFERRED_SHOWN_MAX).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text += &format!(" and {more} more");
        }
        text
    };
    let name = &service.spec.name;
    let tasks: Vec<String> =
        deferred.iter().map(|t| if t.slot > 0 { format!("{name}.{}", t.slot) } else { format!("{name}.{}", t.node_id) }).collect();
    let nodes: std::collections::BTreeSet<&str> = deferred.iter().map(|t| t.node_id.as_str()).collect();
    let word = if nodes.len() == 1 { "node" } else { "nodes" };
    let nodes = shown(nodes.into_iter().map(str::to_string).collect());
    Some(format!("{} on disconnected {word} {nodes} {MSG_DEFERRED}", shown(tasks)))
}

/// Tasks (and nodes) named in a completion message with deferred tasks (the status stays small).
const DEFERRED_SHOWN_MAX: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control;
    use crate::orchestrator::reconcile;
    use crate::scheduler;
    use crate::state::State;
    use shoal_shared::ops::Entry;
    use shoal_shared::types::{
        Availability, Cluster, Meta, Node, NodeDescription, NodeRole, NodeState, RestartCondition, ServiceMode, ServiceSpec, TaskStatus,
    };

    const S: u64 = 1_000_000_000;

    /// A one-node swarm with deterministic agents: assigned tasks desired
    /// `Running` start at once (or fail, for the first `fail_budget` tasks of
    /// image `bad`), tasks desired past `Running` stop at once. Every
    /// transition is logged so tests can check ordering.
    struct Sim {
        s: State,
        now: UnixNanos,
        rng: Rng,
        fail_budget: usize,
        log: Vec<String>,
    }

    impl Sim {
        fn new(replicas: u64, edit: impl FnOnce(&mut ServiceSpec)) -> Sim {
            let mut sim = Sim { s: State::default(), now: 1_000 * S, rng: Rng::from_seed(7), fail_budget: usize::MAX, log: Vec::new() };
            let node = Node {
                id: "n1".into(),
                meta: Meta::default(),
                role: NodeRole::Manager,
                availability: Availability::Active,
                labels: Default::default(),
                description: NodeDescription { hostname: "h1".into(), ..Default::default() },
                state: NodeState::Ready,
                addr: String::new(),
                manager_addr: String::new(),
                attachments: Vec::new(),
            };
            sim.apply(vec![Op::PutCluster(Cluster { id: "c".into(), ..Default::default() }), Op::PutNode(node)]);
            let mut spec = ServiceSpec::new("web", "good");
            spec.mode = ServiceMode::Replicated { replicas };
            spec.update.monitor_ns = S;
            spec.rollback.monitor_ns = S;
            spec.rollback.parallelism = 0;
            edit(&mut spec);
            let ops = control::create_service(&sim.s, spec, "svc".into()).unwrap();
            sim.apply(ops);
            sim.settle();
            sim.log.clear();
            sim
        }

        fn apply(&mut self, ops: Vec<Op>) {
            let idx = self.s.applied_index + 1;
            let r = self.s.apply(idx, &Entry { at: self.now, ops });
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        }

        fn agents(&self) -> Vec<(Op, String)> {
            let mut out = Vec::new();
            let mut budget = self.fail_budget;
            for t in self.s.tasks.values() {
                if t.node_id.is_empty() || t.status.state < TaskState::Assigned || t.status.state.is_terminal() {
                    continue;
                }
                // The agents of nodes the leader does not hear from are not heard.
                if self.s.nodes.get(&t.node_id).is_some_and(|n| matches!(n.state, NodeState::Disconnected | NodeState::Down)) {
                    continue;
                }
                let st = if t.desired_state > TaskState::Running {
                    TaskState::Shutdown
                } else if t.desired_state == TaskState::Running && t.status.state < TaskState::Running {
                    if t.spec.container.image == "bad" && budget > 0 {
                        budget -= 1;
                        TaskState::Failed
                    } else {
                        TaskState::Running
                    }
                } else {
                    continue;
                };
                let status = TaskStatus::new(st, self.now, "sim");
                out.push((Op::SetTaskStatus { id: t.id.clone(), status }, format!("{} {}", st, t.id)));
            }
            out
        }

        /// Orchestrator, scheduler and agents until nothing changes at this `now`.
        fn settle(&mut self) {
            for _ in 0..500 {
                let ops = reconcile(&self.s, self.now, &mut self.rng);
                if !ops.is_empty() {
                    self.apply(ops);
                    continue;
                }
                let ops = scheduler::schedule(&self.s, self.now);
                if !ops.is_empty() {
                    self.apply(ops);
                    continue;
                }
                let acted = self.agents();
                if acted.is_empty() {
                    return;
                }
                let failed = acted.iter().filter(|(_, l)| l.starts_with("Failed")).count();
                self.fail_budget = self.fail_budget.saturating_sub(failed);
                let (ops, lines): (Vec<Op>, Vec<String>) = acted.into_iter().unzip();
                self.log.extend(lines);
                self.apply(ops);
            }
            let ops = reconcile(&self.s, self.now, &mut self.rng);
            panic!("the simulation did not settle: {ops:?} {:?}", scheduler::schedule(&self.s, self.now));
        }

        /// Advances time in 100 ms ticks, settling after each.
        fn run_for(&mut self, ns: u64) {
            let end = self.now + ns;
            while self.now < end {
                self.now += S / 10;
                self.settle();
            }
        }

        /// Adds a second node `n2`, ready and active.
        fn add_n2(&mut self) {
            let mut n2 = self.s.nodes["n1"].clone();
            n2.id = "n2".into();
            n2.role = NodeRole::Worker;
            n2.description.hostname = "h2".into();
            self.apply(vec![Op::PutNode(n2)]);
        }

        fn set_n2(&mut self, state: NodeState) {
            self.apply(vec![Op::SetNodeState { id: "n2".into(), state }]);
        }

        /// Live tasks on `node`.
        fn on(&self, node: &str) -> Vec<String> {
            self.s.tasks.values().filter(|t| t.node_id == node && live(t)).map(|t| t.id.clone()).collect()
        }

        fn message(&self) -> String {
            self.service().update_status.as_ref().map(|u| u.message.clone()).unwrap_or_default()
        }

        fn service(&self) -> &Service {
            &self.s.services["svc"]
        }

        fn update(&mut self, edit: impl FnOnce(&mut ServiceSpec)) {
            let mut spec = self.service().spec.clone();
            edit(&mut spec);
            let ops = control::update_service(&self.s, "web", spec, self.now).unwrap();
            self.apply(ops);
        }

        /// Running tasks (desired and observed) with the service's current spec, and with another.
        fn running(&self) -> (usize, usize) {
            let live = self.s.tasks.values().filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running);
            let (new, old): (Vec<&Task>, Vec<&Task>) = live.partition(|t| t.spec == self.service().spec.task);
            (new.len(), old.len())
        }

        fn state(&self) -> Option<UpdateState> {
            self.service().update_status.as_ref().map(|u| u.state)
        }

        fn live_ids(&self) -> Vec<String> {
            self.s.tasks.values().filter(|t| t.desired_state == TaskState::Running).map(|t| t.id.clone()).collect()
        }
    }

    fn env(v: &str) -> impl FnOnce(&mut ServiceSpec) + '_ {
        move |s| s.task.container.env = vec![format!("V={v}")]
    }

    #[test]
    fn a_first_ingress_port_replaces_the_tasks_placed_without_an_ingress_address() {
        use shoal_shared::types::{Ipv4Net, Network, NetworkSpec, PortConfig, PUBLISH_MODE_INGRESS};
        let port = |published: u32, target: u32| PortConfig {
            protocol: "tcp".into(),
            target_port: target,
            published_port: published,
            publish_mode: PUBLISH_MODE_INGRESS.into(),
        };
        let mut sim = Sim::new(2, |_| {});
        let subnet = Ipv4Net::parse("10.0.0.0/24").unwrap();
        let spec = NetworkSpec { name: "ingress".into(), driver: "overlay".into(), ingress: true, ..Default::default() };
        let ingress = Network {
            id: "ing".into(),
            meta: Meta::default(),
            spec,
            vni: 4096,
            subnet,
            gateway: "10.0.0.1".parse().unwrap(),
            last_addr: None,
        };
        sim.apply(vec![Op::PutNetwork(ingress)]);
        sim.settle();
        let before = sim.live_ids();
        assert!(before.iter().all(|id| sim.s.tasks[id].networks.is_empty()), "no port, no ingress address");
        // `--publish-add 8080:80`: the task spec is unchanged, yet the running
        // tasks cannot serve the port (no ingress address): they are replaced.
        sim.update(|s| s.ports = vec![port(8080, 80)]);
        assert_eq!(sim.state(), Some(UpdateState::Updating));
        sim.run_for(10 * S);
        let after = sim.live_ids();
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|id| !before.contains(id)), "every task replaced: {before:?} -> {after:?}");
        for id in &after {
            let nets: Vec<&str> = sim.s.tasks[id].networks.iter().map(|a| a.network_id.as_str()).collect();
            assert_eq!(nets, ["ing"], "task {id}");
        }
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        // Another port on tasks that have their ingress address replaces nothing.
        sim.update(|s| s.ports.push(port(8081, 81)));
        sim.run_for(5 * S);
        assert_eq!(sim.live_ids(), after);
    }

    #[test]
    fn batches_respect_parallelism_and_delay() {
        // (parallelism, running new tasks after each delay period)
        for (parallelism, steps) in [(2u64, vec![2usize, 4]), (1, vec![1, 2, 3, 4]), (0, vec![4]), (3, vec![3, 4])] {
            let mut sim = Sim::new(4, |s| {
                s.update.parallelism = parallelism;
                s.update.delay_ns = 10 * S;
            });
            sim.update(env("2"));
            for (i, want) in steps.iter().enumerate() {
                if i > 0 {
                    sim.run_for(9 * S);
                    assert_eq!(sim.running().0, steps[i - 1], "parallelism {parallelism}: no batch before the delay");
                    sim.run_for(S);
                } else {
                    sim.settle();
                }
                assert_eq!(sim.running(), (*want, 4 - want), "parallelism {parallelism}, batch {i}");
                assert_eq!(sim.state(), Some(UpdateState::Updating));
            }
            sim.run_for(2 * S);
            let st = sim.service().update_status.clone().unwrap();
            assert_eq!((st.state, st.message.as_str()), (UpdateState::Completed, MSG_COMPLETED), "parallelism {parallelism}");
            assert!(st.completed_at > st.started_at);
            // Old tasks stay as history: shut down, one per slot.
            let old: Vec<&Task> = sim.s.tasks.values().filter(|t| t.spec != sim.service().spec.task).collect();
            assert_eq!(old.len(), 4);
            assert!(old.iter().all(|t| t.desired_state == TaskState::Shutdown && t.status.state == TaskState::Shutdown));
            assert_eq!(sim.service().previous_spec.as_ref().unwrap().task.container.env, Vec::<String>::new());
        }
    }

    #[test]
    fn a_clock_stepping_back_after_a_batch_does_not_stall_the_update() {
        let mut sim = Sim::new(3, |s| {
            s.update.parallelism = 1;
            s.update.delay_ns = 10 * S;
        });
        sim.update(env("2"));
        sim.settle();
        assert_eq!(sim.running(), (1, 2), "the first batch settled at the old time");
        // The leader's clock steps back 15 minutes (a Pi without an RTC meeting NTP, the other way):
        // the first batch's settle time is now in the future; the update goes on, not in 15 minutes.
        sim.now -= 900 * S;
        sim.run_for(25 * S);
        assert_eq!(sim.running(), (3, 0));
        assert_eq!(sim.state(), Some(UpdateState::Completed));
    }

    #[test]
    fn a_clock_stepping_back_mid_update_hides_nothing() {
        let mut sim = Sim::new(3, |s| s.update.failure_action = FailureAction::Rollback);
        sim.update(env("2"));
        sim.now -= 300 * S;
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        assert_eq!(sim.running(), (3, 0));
        let started = sim.service().update_status.clone().unwrap().started_index;
        assert!(started > 0 && sim.s.tasks.values().filter(|t| t.service_version >= started).count() == 3);
        // And failures are still seen: a bad update after the step rolls back.
        sim.update(|s| s.task.container.image = "bad".into());
        sim.now -= 300 * S;
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::RollbackCompleted));
        assert_eq!(sim.running(), (3, 0));
    }

    /// Seed replay (issue #18): three replicas, at most one per node, two
    /// nodes: one task always waits for a node. An update and then a manual
    /// rollback still complete once the placeable tasks run (Swarm reaches
    /// `rollback_completed`); the waiting one neither blocks nor counts.
    #[test]
    fn updates_and_rollbacks_complete_while_a_task_waits_for_a_node() {
        let mut sim = Sim::new(3, |s| s.task.placement.max_replicas_per_node = 1);
        sim.add_n2();
        sim.settle();
        assert_eq!(sim.running(), (2, 0));
        let waiting = |sim: &Sim| {
            sim.s.tasks.values().filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Pending).count()
        };
        assert_eq!(waiting(&sim), 1);
        sim.update(env("2"));
        sim.run_for(10 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed), "{}", sim.message());
        assert_eq!((sim.running(), waiting(&sim)), ((2, 0), 1));
        let ops = control::rollback_service(&sim.s, "web", sim.now).unwrap();
        sim.apply(ops);
        sim.run_for(10 * S);
        assert_eq!(sim.state(), Some(UpdateState::RollbackCompleted), "{}", sim.message());
        assert_eq!((sim.running(), waiting(&sim)), ((2, 0), 1));
        assert!(sim.s.tasks.values().all(|t| t.desired_state > TaskState::Running || !t.spec.container.env.contains(&"V=2".to_string())));
    }

    #[test]
    fn completion_waits_for_the_monitor_window() {
        let mut sim = Sim::new(2, |s| {
            s.update.parallelism = 0;
            s.update.monitor_ns = 3 * S;
        });
        sim.update(env("2"));
        sim.settle();
        assert_eq!(sim.running(), (2, 0));
        sim.run_for(2 * S);
        assert_eq!(sim.state(), Some(UpdateState::Updating));
        sim.run_for(S + S / 10);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
    }

    #[test]
    fn stop_first_and_start_first_order() {
        for (order, want) in
            [(UpdateOrder::StopFirst, ["Shutdown old", "Running new"]), (UpdateOrder::StartFirst, ["Running new", "Shutdown old"])]
        {
            let mut sim = Sim::new(1, |s| s.update.order = order);
            let old = sim.live_ids()[0].clone();
            sim.update(env("2"));
            // First round: what the updater does before any agent acts.
            let ops = reconcile(&sim.s, sim.now, &mut sim.rng);
            let created: Vec<&Task> = ops.iter().filter_map(|o| if let Op::CreateTask(t) = o { Some(t) } else { None }).collect();
            assert_eq!(created.len(), 1);
            assert_eq!(created[0].slot, 1, "the new task takes the old one's slot");
            let stops_old = ops.contains(&Op::SetTaskDesired { id: old.clone(), desired: TaskState::Shutdown });
            assert_eq!(stops_old, order == UpdateOrder::StopFirst, "{order:?}");
            let new = created[0].id.clone();
            sim.apply(ops);
            sim.settle();
            let log: Vec<String> =
                sim.log.iter().map(|l| l.replace(&old, "old").replace(&new, "new")).filter(|l| !l.contains("Assigned")).collect();
            assert_eq!(log, want, "{order:?}");
        }
    }

    #[test]
    fn failure_actions_and_ratio() {
        // (action, max ratio, failing tasks, parallelism, final state, tasks left on the old spec)
        let table = [
            (FailureAction::Pause, 0.0, usize::MAX, 1, UpdateState::Paused, 3),
            (FailureAction::Continue, 0.0, usize::MAX, 1, UpdateState::Completed, 0),
            (FailureAction::Rollback, 0.0, usize::MAX, 1, UpdateState::RollbackCompleted, 4),
            (FailureAction::Pause, 0.5, 1, 0, UpdateState::Completed, 0),
            (FailureAction::Pause, 0.5, 3, 0, UpdateState::Paused, 0),
            (FailureAction::Rollback, 0.5, 3, 0, UpdateState::RollbackCompleted, 4),
        ];
        for (action, ratio, failing, parallelism, want, old_left) in table {
            let case = format!("{action:?} ratio {ratio} failing {failing} parallelism {parallelism}");
            let mut sim = Sim::new(4, |s| {
                s.update.failure_action = action;
                s.update.max_failure_ratio = ratio;
                s.update.parallelism = parallelism;
                s.task.restart.condition = RestartCondition::None;
            });
            let original = sim.service().spec.clone();
            sim.fail_budget = failing;
            sim.update(|s| s.task.container.image = "bad".into());
            sim.run_for(5 * S);
            let st = sim.service().update_status.clone().unwrap();
            assert_eq!(st.state, want, "{case}: {st:?}");
            let on_old = sim
                .s
                .tasks
                .values()
                .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running && t.spec == original.task)
                .count();
            assert_eq!(on_old, old_left, "{case}");
            match want {
                UpdateState::Paused => {
                    assert!(st.message.starts_with("update paused due to failure or early termination of task "), "{case}: {}", st.message);
                    // Paused stays paused: no more batches however long we wait.
                    let before = sim.s.tasks.len();
                    sim.run_for(3 * S);
                    assert_eq!(sim.s.tasks.len(), before, "{case}");
                }
                UpdateState::RollbackCompleted => {
                    assert_eq!(st.message, MSG_ROLLBACK_COMPLETED);
                    assert_eq!(sim.service().spec, original, "{case}: the previous spec is back");
                    assert_eq!(sim.service().previous_spec, None, "{case}: an automatic rollback clears the previous spec");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn start_first_keeps_the_old_task_when_the_new_one_dies() {
        let mut sim = Sim::new(2, |s| {
            s.update.order = UpdateOrder::StartFirst;
            s.update.failure_action = FailureAction::Continue;
            s.task.restart.condition = RestartCondition::None;
        });
        sim.update(|s| s.task.container.image = "bad".into());
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        assert_eq!(sim.running(), (0, 2), "old tasks keep serving");
    }

    #[test]
    fn automatic_rollback_says_why() {
        let mut sim = Sim::new(2, |s| s.update.failure_action = FailureAction::Rollback);
        sim.update(|s| s.task.container.image = "bad".into());
        sim.settle();
        let st = sim.service().update_status.clone().unwrap();
        assert_eq!(st.state, UpdateState::RollbackStarted);
        assert!(st.message.starts_with("update rolled back due to failure or early termination of task "), "{}", st.message);
        sim.run_for(2 * S);
        assert_eq!(sim.state(), Some(UpdateState::RollbackCompleted));
        assert_eq!(sim.running(), (2, 0));
    }

    #[test]
    fn manual_rollback_swaps_specs_and_replaces_tasks() {
        let mut sim = Sim::new(3, |_| {});
        // Nothing to roll back to yet: refused, nothing changes.
        let before = sim.s.clone();
        assert_eq!(control::rollback_service(&sim.s, "web", sim.now), Err(control::ControlError::NoPreviousSpec("web".into())));
        assert_eq!(sim.s, before);
        let v1 = sim.service().spec.clone();
        sim.update(env("2"));
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        let v2 = sim.service().spec.clone();
        let ops = control::rollback_service(&sim.s, "web", sim.now).unwrap();
        sim.apply(ops);
        assert_eq!(sim.service().spec, v1);
        assert_eq!(sim.service().previous_spec.as_ref(), Some(&v2), "Swarm swaps spec and previous spec");
        let st = sim.service().update_status.clone().unwrap();
        assert_eq!((st.state, st.message.as_str()), (UpdateState::RollbackStarted, MSG_ROLLBACK_MANUAL));
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::RollbackCompleted));
        assert_eq!(sim.running(), (3, 0));
        // Rolling back again goes forward to v2.
        let ops = control::rollback_service(&sim.s, "web", sim.now).unwrap();
        sim.apply(ops);
        sim.run_for(3 * S);
        assert_eq!(sim.service().spec, v2);
        assert_eq!(sim.running(), (3, 0));
    }

    #[test]
    fn replica_changes_replace_nothing_and_force_replaces_all() {
        let mut sim = Sim::new(2, |s| s.update.parallelism = 0);
        let ids = sim.live_ids();
        sim.update(|s| s.mode = ServiceMode::Replicated { replicas: 3 });
        sim.run_for(2 * S);
        assert_eq!(sim.state(), None, "a scale is not a rolling update");
        let now_ids = sim.live_ids();
        assert_eq!(now_ids.len(), 3);
        assert!(ids.iter().all(|id| now_ids.contains(id)), "existing tasks kept");
        // `service scale` too.
        let ops = control::scale_service(&sim.s, "web", 2).unwrap();
        sim.apply(ops);
        sim.run_for(S);
        assert_eq!(sim.state(), None);
        let kept = sim.live_ids();
        assert_eq!(kept.len(), 2);
        // --force: same spec otherwise, every task replaced.
        sim.update(|s| s.task.force_update += 1);
        sim.run_for(2 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        let forced = sim.live_ids();
        assert_eq!(forced.len(), 2);
        assert!(forced.iter().all(|id| !kept.contains(id)), "all tasks replaced");
    }

    #[test]
    fn a_new_update_resumes_a_paused_one() {
        let mut sim = Sim::new(2, |s| s.task.restart.condition = RestartCondition::None);
        sim.update(|s| s.task.container.image = "bad".into());
        sim.run_for(S);
        assert_eq!(sim.state(), Some(UpdateState::Paused));
        sim.update(|s| s.task.container.image = "good2".into());
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        assert_eq!(sim.running(), (2, 0));
    }

    #[test]
    fn control_refuses_bad_updates_without_change() {
        let sim = Sim::new(1, |_| {});
        let spec = sim.service().spec.clone();
        let mut renamed = spec.clone();
        renamed.name = "other".into();
        assert!(
            matches!(control::update_service(&sim.s, "web", renamed, 1), Err(control::ControlError::Invalid(m)) if m.contains("renaming"))
        );
        let mut global = spec.clone();
        global.mode = ServiceMode::Global;
        assert!(matches!(control::update_service(&sim.s, "web", global, 1), Err(control::ControlError::Invalid(m)) if m.contains("mode")));
        let mut bad = spec.clone();
        bad.task.placement.constraints = vec!["node.role=manager".into()];
        assert!(control::update_service(&sim.s, "web", bad, 1).is_err());
        assert_eq!(control::update_service(&sim.s, "nope", spec, 1), Err(control::ControlError::NoSuchService("nope".into())));
    }

    #[test]
    fn drain_moves_tasks_off_and_active_brings_them_back() {
        let mut sim = Sim::new(2, |_| {});
        let ids = sim.live_ids();
        let ops = control::update_node(&sim.s, "n1", "self", Some(Availability::Drain), &[], &[]).unwrap();
        sim.apply(ops);
        sim.settle();
        for id in &ids {
            assert_eq!((sim.s.tasks[id].desired_state, sim.s.tasks[id].status.state), (TaskState::Shutdown, TaskState::Shutdown));
        }
        let pending: Vec<&Task> = sim.s.tasks.values().filter(|t| t.desired_state == TaskState::Running).collect();
        assert_eq!(pending.len(), 2);
        for t in &pending {
            assert_eq!(t.status.state, TaskState::Pending);
            assert_eq!(t.status.err, "no suitable node (1 node not available for new tasks)");
        }
        let ops = control::update_node(&sim.s, "n1", "h1", Some(Availability::Active), &[], &[]).unwrap();
        sim.apply(ops);
        sim.settle();
        assert_eq!(sim.running(), (2, 0));
        assert!(sim.live_ids().iter().all(|id| !ids.contains(id)));
    }

    #[test]
    fn updating_unplaced_tasks_closes_them() {
        let mut sim = Sim::new(2, |s| s.update.parallelism = 0);
        let ops = control::update_node(&sim.s, "n1", "self", Some(Availability::Drain), &[], &[]).unwrap();
        sim.apply(ops);
        sim.settle();
        let pending: Vec<String> = sim.live_ids();
        sim.update(env("2"));
        sim.run_for(S);
        for id in &pending {
            let t = &sim.s.tasks[id];
            assert_eq!((t.desired_state, t.status.state), (TaskState::Shutdown, TaskState::Shutdown), "{}", t.status.message);
        }
        let ops = control::update_node(&sim.s, "n1", "self", Some(Availability::Active), &[], &[]).unwrap();
        sim.apply(ops);
        sim.run_for(2 * S);
        assert_eq!(sim.running(), (2, 0));
        assert_eq!(sim.state(), Some(UpdateState::Completed));
    }

    #[test]
    fn pause_stops_new_placements_only() {
        let mut sim = Sim::new(1, |_| {});
        let ops = control::update_node(&sim.s, "n1", "n1", Some(Availability::Pause), &[], &[]).unwrap();
        sim.apply(ops);
        sim.settle();
        assert_eq!(sim.running(), (1, 0), "running tasks stay");
        let ops = control::scale_service(&sim.s, "web", 2).unwrap();
        sim.apply(ops);
        sim.settle();
        assert_eq!(sim.running(), (1, 0));
        let t = sim.s.tasks.values().find(|t| t.slot == 2).unwrap();
        assert_eq!(t.status.err, "no suitable node (1 node not available for new tasks)");
    }

    #[test]
    fn global_tasks_stay_on_paused_nodes_and_leave_drained_ones() {
        let mut sim = Sim::new(1, |s| s.mode = ServiceMode::Global);
        assert_eq!(sim.running(), (1, 0));
        let id = sim.live_ids()[0].clone();
        for (availability, live) in [(Availability::Pause, 1), (Availability::Drain, 0), (Availability::Active, 1)] {
            let ops = control::update_node(&sim.s, "n1", "self", Some(availability), &[], &[]).unwrap();
            sim.apply(ops);
            sim.settle();
            assert_eq!(sim.running(), (live, 0), "{availability:?}");
        }
        assert!(!sim.live_ids().contains(&id), "a new task after the drain");
        // Rolling updates work per node for global services too.
        sim.update(env("2"));
        sim.run_for(2 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        assert_eq!(sim.running(), (1, 0));
        assert_eq!(
            sim.s.tasks.values().filter(|t| t.desired_state == TaskState::Running).map(|t| t.node_id.as_str()).collect::<Vec<_>>(),
            vec!["n1"]
        );
    }

    fn live(t: &Task) -> bool {
        t.desired_state <= TaskState::Running && !t.status.state.is_terminal()
    }

    /// `--node-lost-after`: a Disconnected node keeps its replicated task
    /// (no replacement, nothing new placed there); a rolling update
    /// completes without it, naming it, and updates it once the node is
    /// back. Down, the task is replaced and the message settles.
    #[test]
    fn a_rolling_update_leaves_disconnected_nodes_for_their_return() {
        for back in [NodeState::Ready, NodeState::Down] {
            let mut sim = Sim::new(1, |s| s.update.parallelism = 1);
            sim.add_n2();
            sim.apply(control::scale_service(&sim.s, "web", 2).unwrap());
            sim.settle();
            let kept = sim.on("n2");
            assert_eq!(kept.len(), 1, "spread over both nodes");
            sim.set_n2(NodeState::Disconnected);
            sim.run_for(2 * S);
            assert_eq!(sim.on("n2"), kept, "not replaced while Disconnected");
            assert_eq!(sim.s.tasks.len(), 2, "no new task anywhere");
            sim.apply(control::scale_service(&sim.s, "web", 3).unwrap());
            sim.settle();
            assert_eq!((sim.on("n1").len(), sim.on("n2").len()), (2, 1), "nothing new on a Disconnected node");
            sim.update(env("2"));
            sim.run_for(3 * S);
            assert_eq!(sim.state(), Some(UpdateState::Completed), "{}", sim.message());
            assert_eq!(sim.message(), "update completed; web.2 on disconnected node n2 will update when they return");
            assert_eq!(sim.on("n2"), kept, "its task waits for it");
            assert_eq!(sim.running(), (2, 1), "n1's tasks are updated");
            sim.set_n2(back);
            sim.run_for(3 * S);
            assert_eq!(sim.message(), MSG_COMPLETED);
            assert_eq!(sim.running(), (3, 0), "{back:?}");
            let kept_task = &sim.s.tasks[&kept[0]];
            assert_eq!(kept_task.desired_state, TaskState::Shutdown, "{back:?}: replaced");
            if back == NodeState::Ready {
                assert_eq!(sim.on("n2").len(), 1, "updated in place of the returning node's task");
                assert_eq!(kept_task.status.state, TaskState::Shutdown);
            }
        }
    }

    #[test]
    fn global_tasks_stay_on_disconnected_nodes_and_update_when_they_return() {
        let mut sim = Sim::new(1, |s| s.mode = ServiceMode::Global);
        sim.add_n2();
        sim.settle();
        let kept = sim.on("n2");
        assert_eq!(kept.len(), 1);
        sim.set_n2(NodeState::Disconnected);
        sim.run_for(S);
        assert_eq!(sim.on("n2"), kept, "a Disconnected node keeps its global task");
        sim.update(env("2"));
        sim.run_for(3 * S);
        assert_eq!(sim.state(), Some(UpdateState::Completed));
        assert_eq!(sim.message(), "update completed; web.n2 on disconnected node n2 will update when they return");
        sim.set_n2(NodeState::Ready);
        sim.run_for(3 * S);
        assert_eq!(sim.message(), MSG_COMPLETED);
        assert_eq!(sim.running(), (2, 0));
        assert_eq!(sim.on("n2").len(), 1);
        // Down, as before `--node-lost-after`: the global task leaves the node.
        sim.set_n2(NodeState::Down);
        sim.settle();
        assert!(sim.on("n2").is_empty());
    }

    #[test]
    fn node_labels_add_and_remove() {
        let mut sim = Sim::new(0, |_| {});
        let add = [("zone".to_string(), "edge".to_string()), ("tier".to_string(), "a".to_string())];
        let ops = control::update_node(&sim.s, "n1", "self", None, &add, &[]).unwrap();
        sim.apply(ops);
        assert_eq!(sim.s.nodes["n1"].labels.len(), 2);
        let ops = control::update_node(&sim.s, "n1", "self", None, &[], &["tier".into()]).unwrap();
        sim.apply(ops);
        assert_eq!(sim.s.nodes["n1"].labels.keys().collect::<Vec<_>>(), vec!["zone"]);
        let before = sim.s.clone();
        let err = control::update_node(&sim.s, "n1", "self", None, &add, &["nope".into()]).unwrap_err();
        assert_eq!(err.to_string(), "key nope doesn't exist in node's labels");
        assert_eq!(sim.s, before);
        assert_eq!(control::update_node(&sim.s, "n1", "ghost", None, &[], &[]), Err(control::ControlError::NoSuchNode("ghost".into())));
    }

    #[test]
    fn rollback_op_without_previous_spec_changes_nothing() {
        let mut sim = Sim::new(1, |_| {});
        let before = sim.s.services.clone();
        let idx = sim.s.applied_index + 1;
        let status = UpdateStatus::started(UpdateState::RollbackStarted, 1, "x");
        let r = sim.s.apply(idx, &Entry { at: 1, ops: vec![Op::RollbackService { id: "svc".into(), status }] });
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(sim.s.services, before);
    }
}
