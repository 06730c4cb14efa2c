//! The orchestrator: from services' desired state to tasks' desired state.
//!
//! A pure function of `(state, now, rng)`: it reads the replicated state and
//! returns ops for the leader to propose; it never writes state itself.
//! Running it again before those ops are applied may propose duplicates, so
//! the shell runs it only when the log has caught up (nothing in flight).
//!
//! Rules (Swarm's, from swarmkit's replicated/global orchestrators and
//! restart supervisor):
//! - a *slot* is runnable while one of its tasks has `desired_state <= Running`;
//! - replicated: runnable slots are created up to `replicas`, and the
//!   highest-numbered ones are removed (`desired = Remove`) above it;
//! - global: one runnable task per eligible node (see [`crate::scheduler::eligible`]);
//! - a runnable task whose container ended is replaced per the restart
//!   policy: the old one goes to `desired = Shutdown` and a new task takes the
//!   slot, held in `Ready` until the restart delay passes; when the policy
//!   says no, the dead task keeps the slot (so the service shows 0/1);
//!   restarts its worker made in place while no manager was in reach
//!   (`State::restarts_in_place`) are attempts of the slot too: with a
//!   window, those made inside it; without, all of them (carried into the
//!   next task's `attempt`);
//! - replicated tasks on a drained, down or removed node are shut down and
//!   their slot gets a new unplaced task (which stays `Pending` while no node
//!   can take it); a down node's worker stops them when it comes back; a
//!   `Disconnected` node (`--node-lost-after`) keeps its tasks, global ones
//!   included, and gets no new ones until it is Ready;
//! - the constraint enforcer (swarmkit's `constraintenforcer`): on a node that
//!   is up and active, a live replicated task whose node no longer passes its
//!   own spec's constraints or platforms (a label removed, the role changed,
//!   another platform described; a changed spec is the updater's) is shut
//!   down and replaced the same way; so is, node by node, any task whose
//!   reservations no longer fit beside the older tasks there (the node
//!   described fewer resources): tasks keep their place oldest first, so a
//!   replacement with the same reservations cannot land back there. The shut
//!   down task's status keeps its state and gains the reason as `err`
//!   (`assigned node no longer meets constraints`), which the worker carries
//!   into its `Shutdown` report. Global tasks leave ineligible nodes through
//!   `place_global` as before; only the resource part applies to them (the
//!   node's next task then waits `Pending`). Paused nodes keep their tasks, as
//!   in swarmkit; drained, down and removed nodes follow the rule above. Being
//!   shut down here is no failure of the task: the slot gets its replacement
//!   whatever the restart policy says;
//! - placements are judged parsed ([`crate::placement::ValidPlacement`]);
//!   one that does not parse (only another version's data) is not judged:
//!   its running tasks stay, and a global service gets no new tasks;
//! - jobs (`replicated-job`, `global-job`, issue #17) run to completion: a
//!   task that exits 0 is `Complete` and keeps its slot (never restarted,
//!   whatever the condition); a failed one is replaced per the restart
//!   policy. The *iteration* is the spec: a task whose spec is not the
//!   service's (a changed spec, `--force`) is shut down and its slot runs
//!   again, there is no rolling update. A replicated job has slots
//!   `1..=total_completions` and starts tasks in the lowest open slots while
//!   fewer than `max_concurrent` (0: all) are live; a global job runs once
//!   on every eligible node, later ones included;
//! - once none of the above has anything to do for a service, the
//!   [`crate::updater`] moves its rolling update along (services only);
//! - tasks with `desired = Remove` are deleted once they are no longer running,
//!   and each slot keeps at most [`TASK_HISTORY_PER_SLOT_MAX`] tasks;
//! - last, [`crate::network::allocate`] adds the network allocations (new
//!   tasks' addresses inside their `CreateTask`).

use crate::network;
use crate::placement::{PlacementError, ValidPlacement};
use crate::scheduler;
use crate::scheduler::Filtered;
use crate::state::State;
use crate::updater;
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::Op;
use shoal_shared::rng::Rng;
use shoal_shared::task::TaskState;
use shoal_shared::types::{
    Availability, InPlaceRestarts, NodeState, ResourceSet, RestartCondition, Service, ServiceMode, Task, TaskStatus,
    TASK_HISTORY_PER_SLOT_MAX,
};
use std::collections::{BTreeMap, BTreeSet};

/// Computes the ops that move the state towards the services' specs.
pub fn reconcile(state: &State, now: UnixNanos, rng: &mut Rng) -> Vec<Op> {
    let mut ops = Vec::new();
    let misfits = misfits(state);
    let away = away_nodes(state);
    for service in state.services.values() {
        let tasks = state.tasks_of(&service.id);
        // Slot key: the slot number for replicated services, the node for global ones.
        let mut slots: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
        for t in &tasks {
            slots.entry(slot_key(t)).or_default().push(t);
        }
        let before = ops.len();
        restart_dead_tasks(service, &slots, &away, &state.restarts_in_place, now, rng, &mut ops);
        match service.spec.mode {
            ServiceMode::Replicated { replicas } => {
                evacuate(state, service, &slots, &misfits, rng, &mut ops);
                drop_superseded(service, &slots, &mut ops);
                scale_replicated(service, &slots, replicas, rng, &mut ops)
            }
            ServiceMode::Global => {
                // Before `place_global`, whose `Remove` may follow a `Shutdown` but never precede one.
                evacuate(state, service, &slots, &misfits, rng, &mut ops);
                place_global(state, service, &slots, rng, &mut ops);
                drop_superseded(service, &slots, &mut ops);
            }
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
                evacuate(state, service, &slots, &misfits, rng, &mut ops);
                let rerun = rerun_jobs(service, &slots, &mut ops);
                drop_superseded(service, &slots, &mut ops);
                scale_job(service, &slots, &rerun, max_concurrent, total_completions, rng, &mut ops);
            }
            ServiceMode::GlobalJob => {
                evacuate(state, service, &slots, &misfits, rng, &mut ops);
                // A slot re-run this round gets its task next round (`place_global` sees it held now).
                rerun_jobs(service, &slots, &mut ops);
                place_global(state, service, &slots, rng, &mut ops);
                drop_superseded(service, &slots, &mut ops);
            }
        }
        // The updater acts on a settled round, so it never races the others over a slot.
        if ops.len() == before && !service.spec.mode.is_job() {
            let current = |t: &Task| t.spec == service.spec.task && (t.status.state <= TaskState::Pending || network::attached(state, t));
            updater::update(service, &current, &slots, &away, now, rng, &mut ops);
        }
        prune_history(&slots, &mut ops);
    }
    // Tasks of deleted services: stop them, then forget them.
    for t in state.tasks.values() {
        if state.services.contains_key(&t.service_id) {
            continue;
        }
        if t.desired_state < TaskState::Remove {
            ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Remove });
        }
    }
    orphan(state, now, &mut ops);
    collect_removed(state, &mut ops);
    // Addresses, VIPs and ports last: new tasks carry theirs in their `CreateTask`.
    crate::network::allocate(state, &mut ops, now);
    // History pruning and removal can pick the same dead task; delete it once.
    // Evacuation and `drop_superseded` can both shut down one task; say it once.
    let mut deleted = BTreeSet::new();
    let mut desired = BTreeSet::new();
    ops.retain(|op| match op {
        Op::DeleteTask { id } => deleted.insert(id.clone()),
        Op::SetTaskDesired { id, desired: d } => desired.insert((id.clone(), *d)),
        _ => true,
    });
    ops
}

/// Why a live task must leave a node that is up and active (swarmkit's constraint enforcer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misfit {
    Constraints,
    Platform,
    Resources,
}

impl Misfit {
    /// The task's status `err` once it is shut down for this reason.
    fn err(self) -> &'static str {
        match self {
            Misfit::Constraints => "assigned node no longer meets constraints",
            Misfit::Platform => "assigned node's platform is no longer supported",
            Misfit::Resources => "assigned node no longer has the reserved resources",
        }
    }
}

/// The live tasks that no longer fit their node, by task id. Only nodes that
/// are ready and active count (the node-only filters say `NotReady`
/// otherwise): drained, down and removed nodes are [`evacuate`]'s, a paused
/// node keeps what it runs. There, a replicated task whose own spec's
/// constraints or platforms the node fails is a misfit (global ones leave
/// through [`place_global`]). Then the node's remaining tasks that hold
/// their reservations (assigned, as the scheduler counts them) are fitted
/// oldest first into the node's resources, swarmkit's enforcer's check made
/// deterministic: a task that does not fit beside the older ones is a misfit,
/// and a replacement with the same reservations cannot fit there either.
fn misfits(state: &State) -> BTreeMap<&str, Misfit> {
    let mut on_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        if !t.node_id.is_empty() && live(t) {
            on_node.entry(t.node_id.as_str()).or_default().push(t);
        }
    }
    // Placements parsed once per service version (checked equal before use).
    let mut parsed: BTreeMap<(&str, u64), Result<ValidPlacement, PlacementError>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (node_id, tasks) in on_node {
        let Some(node) = state.nodes.get(node_id) else { continue };
        let mut holding = Vec::new();
        for t in tasks {
            let cached =
                parsed.entry((t.service_id.as_str(), t.service_version)).or_insert_with(|| ValidPlacement::parse(&t.spec.placement));
            let verdict = match cached {
                Ok(p) if p.placement() == &t.spec.placement => scheduler::eligible(node, p),
                _ => match ValidPlacement::parse(&t.spec.placement) {
                    Ok(p) => scheduler::eligible(node, &p),
                    // A placement that does not parse is not judged (see `placement`).
                    Err(_) => scheduler::available(node),
                },
            };
            match verdict {
                Err(Filtered::Constraints) if t.slot > 0 => {
                    out.insert(t.id.as_str(), Misfit::Constraints);
                }
                Err(Filtered::Platform) if t.slot > 0 => {
                    out.insert(t.id.as_str(), Misfit::Platform);
                }
                // Not ready or active: not ours. A global misfit: `place_global`'s.
                Err(_) => {}
                // Bound but not assigned yet (a global or restarted task) is the scheduler's;
                // tasks of deleted services are leaving anyway.
                Ok(()) if t.status.state >= TaskState::Assigned && t.spec.resources.reservations != ResourceSet::default() => {
                    if state.services.contains_key(&t.service_id) {
                        holding.push(t)
                    }
                }
                Ok(()) => {}
            }
        }
        for t in overcommitted(node.description.resources, holding) {
            out.insert(t.id.as_str(), Misfit::Resources);
        }
    }
    out
}

/// The tasks among `holding` whose reservations do not fit `capacity`
/// beside the older ones.
fn overcommitted(capacity: ResourceSet, mut holding: Vec<&Task>) -> Vec<&Task> {
    // All fitting in one order means all fit in any: the usual case needs no sort.
    let mut free = capacity;
    if holding.iter().all(|t| reserve(&mut free, t.spec.resources.reservations)) {
        return Vec::new();
    }
    holding.sort_by_key(|t| (t.meta.created_at, t.id.as_str()));
    let mut free = capacity;
    holding.into_iter().filter(|t| !reserve(&mut free, t.spec.resources.reservations)).collect()
}

/// Takes `want` out of `free` if it fits, with the scheduler's rule (a zero
/// reservation always fits); returns whether it did.
fn reserve(free: &mut ResourceSet, want: ResourceSet) -> bool {
    let cpu_ok = want.nano_cpus == 0 || free.nano_cpus >= want.nano_cpus;
    let mem_ok = want.memory_bytes == 0 || free.memory_bytes >= want.memory_bytes;
    if !(cpu_ok && mem_ok) {
        return false;
    }
    free.nano_cpus = free.nano_cpus.saturating_sub(want.nano_cpus);
    free.memory_bytes = free.memory_bytes.saturating_sub(want.memory_bytes);
    true
}

/// A slot: its number for replicated services, its node for global ones.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotKey {
    Slot(u64),
    Node(String),
}

fn slot_key(t: &Task) -> SlotKey {
    if t.slot > 0 {
        SlotKey::Slot(t.slot)
    } else {
        SlotKey::Node(t.node_id.clone())
    }
}

fn runnable(t: &Task) -> bool {
    t.desired_state <= TaskState::Running
}

/// Wanted and not finished: the task runs or is on its way to.
fn live(t: &Task) -> bool {
    runnable(t) && !t.status.state.is_terminal()
}

/// The runnable task of a slot, if any (at most one by construction).
fn runnable_task<'a>(slot: &[&'a Task]) -> Option<&'a Task> {
    slot.iter().rev().copied().find(|t| runnable(t))
}

/// Nodes the leader has not heard from. Tasks of removed nodes end Orphaned.
#[derive(Debug, Default)]
pub struct Away<'a> {
    /// Down: their tasks cannot be stopped or heard from, and are replaced
    /// (see [`evacuate`]).
    pub down: BTreeSet<&'a str>,
    /// Disconnected (silent for less than `--node-lost-after`): their tasks
    /// stay, nothing new goes there, and a rolling update leaves their
    /// tasks for when they return.
    pub disconnected: BTreeSet<&'a str>,
}

pub(crate) fn away_nodes(state: &State) -> Away<'_> {
    let with = |s: NodeState| state.nodes.values().filter(move |n| n.state == s).map(|n| n.id.as_str()).collect();
    Away { down: with(NodeState::Down), disconnected: with(NodeState::Disconnected) }
}

/// Whether `t` (another task of a slot) keeps a stop-first replacement
/// waiting: it has a node, has not ended, and its node is not away (found by
/// the whole-node simulator: a replacement waited for ever on the old task
/// of a node that had left the swarm).
pub(crate) fn holds_slot(t: &Task, away: &Away<'_>) -> bool {
    !t.status.state.is_terminal()
        && !t.node_id.is_empty()
        && t.status.state >= TaskState::Assigned
        && !away.down.contains(t.node_id.as_str())
}

fn restart_dead_tasks(
    service: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    away: &Away<'_>,
    in_place: &BTreeMap<String, InPlaceRestarts>,
    now: UnixNanos,
    rng: &mut Rng,
    ops: &mut Vec<Op>,
) {
    let policy = service.spec.task.restart;
    for slot in slots.values() {
        let Some(t) = runnable_task(slot) else {
            continue;
        };
        if t.desired_state == TaskState::Ready && t.not_before == updater::HELD_BY_UPDATER {
            // A stop-first replacement starts once nothing else in its slot
            // runs, whether or not its update is still going (a paused
            // update must not leave the slot empty).
            let others_alive = slot.iter().any(|o| o.id != t.id && holds_slot(o, away));
            if !others_alive {
                ops.push(Op::ReleaseTask { id: t.id.clone() });
            }
            continue;
        }
        // Released once its restart delay passed; a hold longer than the policy's delay
        // means the clock stepped back since it was set (found by the whole-node
        // simulator: a leader whose clock went back held a restart for the skew).
        let held_too_long = t.not_before > now.saturating_add(policy.delay_ns);
        if t.desired_state == TaskState::Ready && (t.not_before <= now || held_too_long) {
            ops.push(Op::ReleaseTask { id: t.id.clone() });
            continue;
        }
        if !t.status.state.is_terminal() {
            continue;
        }
        let failed = t.status.state != TaskState::Complete;
        // A job's completed task is its slot's result, never restarted; an
        // old iteration's is `rerun_jobs`'.
        if service.spec.mode.is_job() && (!failed || t.spec != service.spec.task) {
            continue;
        }
        let wanted = match policy.condition {
            RestartCondition::Any => true,
            RestartCondition::OnFailure => failed,
            RestartCondition::None => false,
        };
        if !wanted || attempts_exhausted(slot, t, in_place, policy.max_attempts, policy.window_ns, now) {
            continue;
        }
        ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Shutdown });
        // Replicated restarts are placed afresh, as swarmkit's: bound to the
        // dead task's node they would wait forever once that node is paused
        // or full, and the scheduler ranks nodes with recent failures of the
        // service last anyway. Global restarts stay on their node (the slot).
        let node = if t.slot > 0 { "" } else { t.node_id.as_str() };
        let mut next = new_task(service, t.slot, node, rng, now);
        // The restarts its worker made in place count as attempts of the slot.
        next.attempt = t.attempt.saturating_add(1).saturating_add(in_place.get(&t.id).map_or(0, |r| r.total));
        if policy.delay_ns > 0 {
            next.desired_state = TaskState::Ready;
            next.not_before = now.saturating_add(policy.delay_ns);
        }
        ops.push(Op::CreateTask(next));
    }
}

/// Whether the slot used up its restarts: `max_attempts` 0 is unlimited;
/// with a window, only restarts started inside the window count. A restart
/// stamped after `now` (by an earlier leader whose clock ran ahead, or before
/// this clock stepped back) is not counted: counting it would keep the slot
/// dead for as long as the skew, months on a device without an RTC.
/// Restarts a worker made in place (`in_place`, by task id) count like the
/// orchestrator's own: all of them without a window (the dead task's, and
/// earlier tasks' through its `attempt`), those made inside it with one.
fn attempts_exhausted(
    slot: &[&Task],
    dead: &Task,
    in_place: &BTreeMap<String, InPlaceRestarts>,
    max_attempts: u64,
    window_ns: u64,
    now: UnixNanos,
) -> bool {
    if max_attempts == 0 {
        return false;
    }
    if window_ns == 0 {
        return dead.attempt.saturating_add(in_place.get(&dead.id).map_or(0, |r| r.total)) >= max_attempts;
    }
    let since = now.saturating_sub(window_ns);
    let inside = |at: &UnixNanos| (since..=now).contains(at);
    let recent = slot.iter().filter(|t| t.attempt > 0 && inside(&t.meta.created_at)).count() as u64;
    let local = slot.iter().filter_map(|t| in_place.get(&t.id)).map(|r| r.at.iter().filter(|at| inside(at)).count() as u64).sum::<u64>();
    recent.saturating_add(local) >= max_attempts
}

fn scale_replicated(service: &Service, slots: &BTreeMap<SlotKey, Vec<&Task>>, replicas: u64, rng: &mut Rng, ops: &mut Vec<Op>) {
    let live: BTreeSet<u64> = slots
        .iter()
        .filter_map(|(k, v)| match k {
            SlotKey::Slot(n) if runnable_task(v).is_some() => Some(*n),
            _ => None,
        })
        .collect();
    let count = live.len() as u64;
    if count < replicas {
        // Fill the lowest free slot numbers, reusing dead slots as Swarm does.
        let mut need = replicas - count;
        let mut n = 1u64;
        while need > 0 {
            if !live.contains(&n) {
                ops.push(Op::CreateTask(new_task(service, n, "", rng, 0)));
                need -= 1;
            }
            n += 1;
        }
    } else if count > replicas {
        for n in live.iter().rev().take((count - replicas) as usize) {
            let slot = &slots[&SlotKey::Slot(*n)];
            if let Some(t) = runnable_task(slot) {
                ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Remove });
            }
        }
    }
}

/// Jobs: a slot's runnable task of an older iteration (its spec is not the
/// service's) is shut down, running or finished, so the slot runs again.
/// Returns the slots freed this way.
fn rerun_jobs(service: &Service, slots: &BTreeMap<SlotKey, Vec<&Task>>, ops: &mut Vec<Op>) -> BTreeSet<u64> {
    let mut freed = BTreeSet::new();
    for slot in slots.values() {
        let Some(t) = runnable_task(slot) else { continue };
        if t.spec != service.spec.task && t.desired_state == TaskState::Running {
            ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Shutdown });
            freed.insert(t.slot);
        }
    }
    freed
}

/// A replicated job's slots `1..=total`: the lowest open ones (no runnable
/// task, or one `rerun_jobs` just freed) get a task while fewer than
/// `max_concurrent` (0: all) are live; slots above `total` are removed.
fn scale_job(
    service: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    freed: &BTreeSet<u64>,
    max_concurrent: u64,
    total: u64,
    rng: &mut Rng,
    ops: &mut Vec<Op>,
) {
    let limit = if max_concurrent == 0 { total } else { max_concurrent.min(total) };
    let mut live_now = 0u64;
    let mut held = BTreeSet::new();
    for (k, v) in slots {
        let SlotKey::Slot(n) = k else { continue };
        let Some(t) = runnable_task(v) else { continue };
        if *n > total {
            ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Remove });
            continue;
        }
        // Live tasks count against the limit until they end, a re-run's old one included.
        if live(t) {
            live_now += 1;
        }
        if !freed.contains(n) {
            held.insert(*n);
        }
    }
    // Restarts and evacuations made this round are live too (a failed task
    // still holds its slot in the state, so it was not counted above).
    let made = ops.iter().filter(|op| matches!(op, Op::CreateTask(t) if t.service_id == service.id)).count() as u64;
    // A freed slot's old task may still run: its slot waits for it to end.
    let mut room = limit.saturating_sub(live_now.saturating_add(made));
    for n in 1..=total {
        if room == 0 {
            break;
        }
        if held.contains(&n) || freed.contains(&n) {
            continue;
        }
        ops.push(Op::CreateTask(new_task(service, n, "", rng, 0)));
        room -= 1;
    }
}

/// Where a job stands: `running` live tasks of the current iteration,
/// `completed` slots done, `failed` slots whose task failed and will not be
/// restarted (the policy's attempts used up, or condition `none`), of
/// `total` (a replicated job's completions; a global job's slots so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub total: u64,
}

/// The progress of a job's current iteration (`None` for a service).
pub fn job_progress(state: &State, service: &Service) -> Option<JobProgress> {
    if !service.spec.mode.is_job() {
        return None;
    }
    let mut slots: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of(&service.id) {
        slots.entry(slot_key(t)).or_default().push(t);
    }
    let mut p = JobProgress::default();
    for slot in slots.values() {
        let Some(t) = runnable_task(slot) else { continue };
        if t.spec != service.spec.task {
            continue;
        }
        match t.status.state {
            TaskState::Complete => p.completed += 1,
            s if s.is_terminal() => p.failed += 1,
            _ => p.running += 1,
        }
    }
    p.total = match service.spec.mode {
        ServiceMode::ReplicatedJob { total_completions, .. } => total_completions,
        _ => slots.values().filter(|s| runnable_task(s).is_some()).count() as u64,
    };
    Some(p)
}

/// Tasks that must leave their node are shut down. Replicated ones leave
/// drained, down and removed nodes, and both kinds leave as [`misfits`]; a
/// misfit's status says why. A replicated slot left with no live task gets a
/// fresh, unplaced one whatever the restart policy says (this is no failure
/// of the task); a global slot gets its new task from [`place_global`].
fn evacuate(
    state: &State,
    service: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    misfits: &BTreeMap<&str, Misfit>,
    rng: &mut Rng,
    ops: &mut Vec<Op>,
) {
    let replicated = service.spec.mode.is_replicated();
    let drained = |t: &Task| {
        replicated && state.nodes.get(&t.node_id).is_none_or(|n| n.availability == Availability::Drain || n.state == NodeState::Down)
    };
    let leaving = |t: &Task| !t.node_id.is_empty() && (misfits.contains_key(t.id.as_str()) || drained(t));
    for slot in slots.values() {
        let alive = slot.iter().copied().filter(|t| live(t));
        let (gone, staying): (Vec<&Task>, Vec<&Task>) = alive.partition(|t| leaving(t));
        let Some(last) = gone.last() else {
            continue;
        };
        for t in &gone {
            ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Shutdown });
            if let Some(m) = misfits.get(t.id.as_str()) {
                // The state stays the worker's: only the reason is added.
                let status = TaskStatus { err: m.err().to_string(), ..t.status.clone() };
                ops.push(Op::SetTaskStatus { id: t.id.clone(), status });
            }
        }
        if replicated && staying.is_empty() {
            ops.push(Op::CreateTask(new_task(service, last.slot, "", rng, 0)));
        }
    }
}

/// A slot with more than one live task keeps only those that matter: a task
/// that never started and whose spec is no longer the service's is the
/// leftover replacement of a superseded update (start-first, or pending for
/// want of a node) and is removed, so successive updates cannot pile up
/// replacements in a slot.
///
/// And once a slot has a running task on the current spec, that task (the
/// newest such) is the slot's: every other live task that runs or is on the
/// current spec is shut down. This is how a start-first replacement takes
/// over, and it keeps a slot from ever running two tasks when updates,
/// rollbacks and restarts interleave.
fn drop_superseded(service: &Service, slots: &BTreeMap<SlotKey, Vec<&Task>>, ops: &mut Vec<Op>) {
    for slot in slots.values() {
        let live: Vec<&Task> = slot.iter().copied().filter(|t| live(t)).collect();
        if live.len() < 2 {
            continue;
        }
        let current = |t: &Task| t.spec == service.spec.task;
        // `slot` is ordered oldest first, so the last match is the newest.
        let keeper = live.iter().rev().find(|t| t.status.state == TaskState::Running && current(t)).map(|t| t.id.as_str());
        for t in live {
            if t.status.state < TaskState::Running && !current(t) {
                ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Remove });
            } else if keeper.is_some_and(|k| k != t.id) {
                ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Shutdown });
            }
        }
    }
}

fn place_global(state: &State, service: &Service, slots: &BTreeMap<SlotKey, Vec<&Task>>, rng: &mut Rng, ops: &mut Vec<Op>) {
    // A placement that does not parse neither places nor removes tasks (see `placement`).
    let Ok(placement) = ValidPlacement::parse(&service.spec.task.placement) else { return };
    let eligible: BTreeSet<&str> =
        state.nodes.values().filter(|n| scheduler::eligible(n, &placement).is_ok()).map(|n| n.id.as_str()).collect();
    for node in &eligible {
        let has = slots.get(&SlotKey::Node(node.to_string())).and_then(|s| runnable_task(s)).is_some();
        if !has {
            ops.push(Op::CreateTask(new_task(service, 0, node, rng, 0)));
        }
    }
    // Pause only stops new tasks: a paused node that is otherwise eligible keeps its task;
    // so does a Disconnected one (`--node-lost-after`), until it is Down.
    let kept_but_fit = |id: &str| {
        state.nodes.get(id).is_some_and(|n| {
            let mut active = n.clone();
            if n.availability == Availability::Pause {
                active.availability = Availability::Active;
            }
            if n.state == NodeState::Disconnected {
                active.state = NodeState::Ready;
            }
            active != *n && scheduler::eligible(&active, &placement).is_ok()
        })
    };
    for (key, slot) in slots {
        let SlotKey::Node(node) = key else { continue };
        if eligible.contains(node.as_str()) || kept_but_fit(node) {
            continue;
        }
        if let Some(t) = runnable_task(slot) {
            ops.push(Op::SetTaskDesired { id: t.id.clone(), desired: TaskState::Remove });
        }
    }
}

/// Keeps at most [`TASK_HISTORY_PER_SLOT_MAX`] tasks per slot, oldest dead first.
fn prune_history(slots: &BTreeMap<SlotKey, Vec<&Task>>, ops: &mut Vec<Op>) {
    for slot in slots.values() {
        let excess = slot.len().saturating_sub(TASK_HISTORY_PER_SLOT_MAX);
        let dead = slot.iter().filter(|t| !runnable(t) && t.status.state.is_terminal());
        for t in dead.take(excess) {
            ops.push(Op::DeleteTask { id: t.id.clone() });
        }
    }
}

/// Deletes tasks marked `Remove` once nothing runs them any more.
/// Tasks on a node no longer in the swarm (`node rm`) will never be
/// reported again: they end as `Orphaned` (swarmkit's word), so nothing
/// waits for them. Found by the whole-node simulator: a rolling update's
/// new task waited for ever on the old one of a removed node.
fn orphan(state: &State, now: UnixNanos, ops: &mut Vec<Op>) {
    for t in state.tasks.values() {
        if !t.node_id.is_empty() && !t.status.state.is_terminal() && !state.nodes.contains_key(&t.node_id) {
            let status = TaskStatus::new(TaskState::Orphaned, now, "orphaned: its node was removed from the swarm");
            ops.push(Op::SetTaskStatus { id: t.id.clone(), status });
        }
    }
}

fn collect_removed(state: &State, ops: &mut Vec<Op>) {
    for t in state.tasks.values() {
        let gone = t.status.state.is_terminal() || t.node_id.is_empty() || t.status.state < TaskState::Assigned;
        if t.desired_state == TaskState::Remove && gone {
            ops.push(Op::DeleteTask { id: t.id.clone() });
        }
    }
}

/// A fresh task for a slot (or, for global services, a node), desired running.
pub fn new_task(service: &Service, slot: u64, node_id: &str, rng: &mut Rng, not_before: UnixNanos) -> Task {
    Task {
        id: rng.object_id(),
        meta: Default::default(),
        service_id: service.id.clone(),
        slot,
        node_id: node_id.to_string(),
        spec: service.spec.task.clone(),
        service_version: service.meta.version,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, 0, "created"),
        not_before,
        attempt: 0,
        networks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::service;
    use shoal_shared::ops::Entry;
    use shoal_shared::types::RestartsInPlace;

    /// Runs reconcile and applies its ops until nothing changes; returns the rounds.
    fn settle(state: &mut State, now: UnixNanos, rng: &mut Rng) -> usize {
        for round in 0..20 {
            let ops = reconcile(state, now, rng);
            if ops.is_empty() {
                return round;
            }
            let idx = state.applied_index + 1;
            let applied = state.apply(idx, &Entry { at: now, ops });
            assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        }
        panic!("reconcile did not settle in 20 rounds");
    }

    fn with_service(replicas: u64) -> State {
        let mut s = State::default();
        let mut svc = service("svc", "web");
        svc.spec.mode = ServiceMode::Replicated { replicas };
        s.apply(1, &Entry { at: 1, ops: vec![Op::PutService(svc)] });
        s
    }

    fn set_status(s: &mut State, id: &str, state: TaskState) {
        let idx = s.applied_index + 1;
        let st = TaskStatus::new(state, 10, "test");
        let r = s.apply(idx, &Entry { at: 10, ops: vec![Op::SetTaskStatus { id: id.into(), status: st }] });
        assert!(r.rejected.is_empty());
    }

    fn runnable_slots(s: &State) -> Vec<u64> {
        let mut v: Vec<u64> = s.tasks.values().filter(|t| runnable(t)).map(|t| t.slot).collect();
        v.sort();
        v
    }

    #[test]
    fn creates_and_scales_slots() {
        let mut rng = Rng::from_seed(1);
        let mut s = with_service(3);
        settle(&mut s, 100, &mut rng);
        assert_eq!(runnable_slots(&s), vec![1, 2, 3]);
        let mut svc = s.services["svc"].clone();
        svc.spec.mode = ServiceMode::Replicated { replicas: 1 };
        s.apply(s.applied_index + 1, &Entry { at: 2, ops: vec![Op::PutService(svc)] });
        settle(&mut s, 100, &mut rng);
        assert_eq!(runnable_slots(&s), vec![1]);
        // Unassigned tasks marked Remove are deleted at once.
        assert_eq!(s.tasks.len(), 1);
    }

    #[test]
    fn restart_any_with_delay_then_release() {
        let mut rng = Rng::from_seed(2);
        let mut s = with_service(1);
        settle(&mut s, 100, &mut rng);
        let first = s.tasks.keys().next().unwrap().clone();
        set_status(&mut s, &first, TaskState::Failed);
        settle(&mut s, 1_000, &mut rng);
        assert_eq!(s.tasks[&first].desired_state, TaskState::Shutdown);
        let next = s.tasks.values().find(|t| t.id != first).unwrap().clone();
        assert_eq!(next.slot, 1);
        assert_eq!(next.attempt, 1);
        assert_eq!(next.desired_state, TaskState::Ready, "held for the restart delay");
        settle(&mut s, 1_000 + shoal_shared::types::RESTART_DELAY_NS_DEFAULT, &mut rng);
        assert_eq!(s.tasks[&next.id].desired_state, TaskState::Running);
    }

    #[test]
    fn a_restart_hold_ends_when_the_clock_steps_back() {
        let delay = shoal_shared::types::RESTART_DELAY_NS_DEFAULT;
        let mut rng = Rng::from_seed(2);
        let mut s = with_service(1);
        let t0 = 3_600 * 1_000_000_000;
        settle(&mut s, t0, &mut rng);
        let first = s.tasks.keys().next().unwrap().clone();
        set_status(&mut s, &first, TaskState::Failed);
        settle(&mut s, t0, &mut rng);
        let next = s.tasks.values().find(|t| t.id != first).unwrap().clone();
        assert_eq!(next.desired_state, TaskState::Ready, "held for the restart delay");
        // Still held within the delay, at the same clock.
        settle(&mut s, t0 + delay - 1, &mut rng);
        assert_eq!(s.tasks[&next.id].desired_state, TaskState::Ready);
        // The clock steps back half an hour: the hold now ends further away than any
        // delay the policy asks for, so it is released instead of waiting for the skew.
        settle(&mut s, t0 - 1_800 * 1_000_000_000, &mut rng);
        assert_eq!(s.tasks[&next.id].desired_state, TaskState::Running);
    }

    #[test]
    fn restart_conditions_and_max_attempts() {
        let mut rng = Rng::from_seed(3);
        let mut s = with_service(1);
        let mut svc = s.services["svc"].clone();
        svc.spec.task.restart.condition = RestartCondition::OnFailure;
        svc.spec.task.restart.delay_ns = 0;
        svc.spec.task.restart.max_attempts = 2;
        s.apply(2, &Entry { at: 2, ops: vec![Op::PutService(svc)] });
        settle(&mut s, 100, &mut rng);
        // A clean exit is not restarted under on-failure: the slot keeps its dead task.
        let t0 = s.tasks.keys().next().unwrap().clone();
        set_status(&mut s, &t0, TaskState::Complete);
        settle(&mut s, 200, &mut rng);
        assert_eq!(s.tasks.len(), 1);
        assert_eq!(s.tasks[&t0].desired_state, TaskState::Running);
    }

    #[test]
    fn max_attempts_stop_restarts() {
        let mut rng = Rng::from_seed(4);
        let mut s = with_service(1);
        let mut svc = s.services["svc"].clone();
        svc.spec.task.restart.delay_ns = 0;
        svc.spec.task.restart.max_attempts = 2;
        s.apply(2, &Entry { at: 2, ops: vec![Op::PutService(svc)] });
        settle(&mut s, 100, &mut rng);
        for _ in 0..5 {
            let live: Vec<String> =
                s.tasks.values().filter(|t| runnable(t) && !t.status.state.is_terminal()).map(|t| t.id.clone()).collect();
            for id in live {
                set_status(&mut s, &id, TaskState::Failed);
            }
            settle(&mut s, 200, &mut rng);
        }
        // First run plus two restarts, then the slot stays dead.
        assert_eq!(s.tasks.len(), 3);
        assert_eq!(s.tasks.values().map(|t| t.attempt).max(), Some(2));
    }

    #[test]
    fn restarts_stamped_ahead_of_the_clock_do_not_use_up_the_window() {
        const MIN: u64 = 60_000_000_000;
        let mut s = with_service(1);
        let mut rng = Rng::from_seed(9);
        settle(&mut s, 100, &mut rng);
        let first = s.tasks.values().next().unwrap().clone();
        let at = |attempt: u64, created_at: u64| {
            let mut t = first.clone();
            t.attempt = attempt;
            t.meta.created_at = created_at;
            t
        };
        let now = 1_000 * MIN;
        // Two restarts in the last 10 minutes of a 10-minute window: used up at 2.
        let recent = [at(1, now - 5 * MIN), at(2, now - MIN)];
        let slot: Vec<&Task> = recent.iter().collect();
        let none = BTreeMap::new();
        assert!(attempts_exhausted(&slot, &recent[1], &none, 2, 10 * MIN, now));
        assert!(!attempts_exhausted(&slot, &recent[1], &none, 2, 10 * MIN, now + 10 * MIN), "the window moved on");
        // Stamped by a leader six months ahead of this one: not counted.
        let ahead = [at(1, now + 180 * 1_440 * MIN), at(2, now + 180 * 1_440 * MIN + MIN)];
        let slot: Vec<&Task> = ahead.iter().collect();
        assert!(!attempts_exhausted(&slot, &ahead[1], &none, 2, 10 * MIN, now));
        // In-place restarts timed ahead of the clock are not counted either.
        let in_place =
            BTreeMap::from([(ahead[1].id.clone(), InPlaceRestarts { total: 2, at: vec![now + MIN, now + 2 * MIN], ..Default::default() })]);
        assert!(!attempts_exhausted(&slot, &ahead[1], &in_place, 2, 10 * MIN, now));
    }

    /// Issue #14: the restarts a worker made in place while no manager was in
    /// reach are attempts of the slot. With max 3 and 3 made offline, the
    /// manager does not restart the task once it hears of its failure.
    #[test]
    fn in_place_restarts_use_up_max_attempts() {
        let mut rng = Rng::from_seed(11);
        let mut s = with_service(1);
        let mut svc = s.services["svc"].clone();
        svc.spec.task.restart.delay_ns = 0;
        svc.spec.task.restart.max_attempts = 3;
        s.apply(2, &Entry { at: 2, ops: vec![Op::PutService(svc.clone())] });
        settle(&mut s, 100, &mut rng);
        let first = s.tasks.keys().next().unwrap().clone();
        let told = |id: &str, count: u64| {
            Op::SetRestartsInPlace(RestartsInPlace { task_id: id.into(), session: 1, count, ago_ms: vec![1_000; count as usize] })
        };
        let idx = s.applied_index + 1;
        s.apply(idx, &Entry { at: 5_000_000_000, ops: vec![told(&first, 3)] });
        set_status(&mut s, &first, TaskState::Failed);
        settle(&mut s, 6_000_000_000, &mut rng);
        assert_eq!(s.tasks.len(), 1, "no restart after 3 in place");
        assert_eq!(s.tasks[&first].desired_state, TaskState::Running, "the dead task keeps its slot");
        // One made in place of 3: two more by the manager, the first carrying the count.
        let mut s = with_service(1);
        s.apply(2, &Entry { at: 2, ops: vec![Op::PutService(svc)] });
        settle(&mut s, 100, &mut rng);
        let first = s.tasks.keys().next().unwrap().clone();
        let idx = s.applied_index + 1;
        s.apply(idx, &Entry { at: 5_000_000_000, ops: vec![told(&first, 1)] });
        for _ in 0..5 {
            let live: Vec<String> = s.tasks.values().filter(|t| live(t)).map(|t| t.id.clone()).collect();
            for id in live {
                set_status(&mut s, &id, TaskState::Failed);
            }
            settle(&mut s, 6_000_000_000, &mut rng);
        }
        let mut attempts: Vec<u64> = s.tasks.values().map(|t| t.attempt).collect();
        attempts.sort();
        assert_eq!(attempts, vec![0, 2, 3], "first run, one in place, then two by the manager");
    }

    /// With a window, only the in-place restarts made inside it count; the
    /// ones made before it (a crash loop long ago) leave the slot restartable.
    #[test]
    fn in_place_restarts_count_inside_the_window_only() {
        const MIN: u64 = 60_000_000_000;
        let mut rng = Rng::from_seed(12);
        let mut s = with_service(1);
        let mut svc = s.services["svc"].clone();
        svc.spec.task.restart.delay_ns = 0;
        svc.spec.task.restart.max_attempts = 2;
        svc.spec.task.restart.window_ns = 10 * MIN;
        s.apply(2, &Entry { at: 2, ops: vec![Op::PutService(svc)] });
        settle(&mut s, 100, &mut rng);
        let first = s.tasks.keys().next().unwrap().clone();
        let now = 1_000 * MIN;
        // Two in place: 30 and 20 minutes before the report reached the leader at `now`.
        let r = RestartsInPlace { task_id: first.clone(), session: 1, count: 2, ago_ms: vec![30 * 60_000, 20 * 60_000] };
        let idx = s.applied_index + 1;
        s.apply(idx, &Entry { at: now, ops: vec![Op::SetRestartsInPlace(r)] });
        set_status(&mut s, &first, TaskState::Failed);
        let slot: Vec<&Task> = s.tasks.values().collect();
        assert!(!attempts_exhausted(&slot, &s.tasks[&first], &s.restarts_in_place, 2, 10 * MIN, now), "both outside the window");
        // A third, a minute ago, and a fourth just now: inside the window, used up.
        let r = RestartsInPlace { task_id: first.clone(), session: 1, count: 4, ago_ms: vec![60_000, 0] };
        let idx = s.applied_index + 1;
        s.apply(idx, &Entry { at: now, ops: vec![Op::SetRestartsInPlace(r)] });
        let slot: Vec<&Task> = s.tasks.values().collect();
        assert!(attempts_exhausted(&slot, &s.tasks[&first], &s.restarts_in_place, 2, 10 * MIN, now));
        settle(&mut s, now, &mut rng);
        assert_eq!(s.tasks.len(), 1, "not restarted by the manager");
        // Once the window moved past them, the manager restarts the slot.
        settle(&mut s, now + 10 * MIN, &mut rng);
        assert_eq!(s.tasks.len(), 2);
    }

    #[test]
    fn history_is_capped_per_slot() {
        let mut rng = Rng::from_seed(5);
        let mut s = with_service(1);
        let mut svc = s.services["svc"].clone();
        svc.spec.task.restart.delay_ns = 0;
        s.apply(2, &Entry { at: 2, ops: vec![Op::PutService(svc)] });
        settle(&mut s, 100, &mut rng);
        for _ in 0..10 {
            let live: Vec<String> = s.tasks.values().filter(|t| runnable(t)).map(|t| t.id.clone()).collect();
            for id in live {
                set_status(&mut s, &id, TaskState::Failed);
            }
            settle(&mut s, 200, &mut rng);
        }
        assert_eq!(s.tasks.len(), TASK_HISTORY_PER_SLOT_MAX);
        assert_eq!(runnable_slots(&s), vec![1]);
    }

    #[test]
    fn removed_service_tasks_are_stopped_then_deleted() {
        let mut rng = Rng::from_seed(6);
        let mut s = with_service(2);
        // The node the tasks run on is in the swarm (tasks of a removed node are orphaned).
        let n1 = crate::state::tests::node("n1", "linux/amd64");
        s.apply(s.applied_index + 1, &Entry { at: 2, ops: vec![Op::PutNode(n1)] });
        settle(&mut s, 100, &mut rng);
        let ids: Vec<String> = s.tasks.keys().cloned().collect();
        for id in &ids {
            let idx = s.applied_index + 1;
            let st = TaskStatus::new(TaskState::Running, 5, "running");
            s.apply(idx, &Entry { at: 5, ops: vec![Op::AssignTask { id: id.clone(), node_id: "n1".into(), status: st }] });
        }
        s.apply(s.applied_index + 1, &Entry { at: 6, ops: vec![Op::DeleteService { id: "svc".into() }] });
        settle(&mut s, 100, &mut rng);
        assert!(s.tasks.values().all(|t| t.desired_state == TaskState::Remove), "running tasks are asked to stop");
        for id in &ids {
            set_status(&mut s, id, TaskState::Shutdown);
        }
        settle(&mut s, 100, &mut rng);
        assert!(s.tasks.is_empty());
    }
}

#[cfg(test)]
mod node_loss_tests {
    use super::*;
    use crate::state::tests::{node, service};
    use shoal_shared::ops::Entry;

    /// Applies ops as the next entry; every op must apply.
    pub(super) fn apply(s: &mut State, ops: Vec<Op>) {
        let idx = s.applied_index + 1;
        let r = s.apply(idx, &Entry { at: idx, ops });
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    }

    /// Runs the orchestrator until it has nothing to do.
    pub(super) fn settle(s: &mut State, rng: &mut Rng) {
        for _ in 0..20 {
            let ops = reconcile(s, 100, rng);
            if ops.is_empty() {
                return;
            }
            apply(s, ops);
        }
        panic!("reconcile did not settle");
    }

    /// Two replicas running on `n1`, `n2` standing by.
    fn running_on_n1(rng: &mut Rng) -> State {
        let mut s = State::default();
        let mut svc = service("svc", "web");
        svc.spec.mode = ServiceMode::Replicated { replicas: 2 };
        apply(&mut s, vec![Op::PutNode(node("n1", "linux/amd64")), Op::PutNode(node("n2", "linux/amd64")), Op::PutService(svc)]);
        settle(&mut s, rng);
        let ids: Vec<String> = s.tasks.keys().cloned().collect();
        let ops = ids
            .iter()
            .map(|id| Op::AssignTask { id: id.clone(), node_id: "n1".into(), status: TaskStatus::new(TaskState::Running, 5, "running") })
            .collect();
        apply(&mut s, ops);
        s
    }

    fn check_evacuated(s: &State, old: &[String]) {
        for id in old {
            assert_eq!(s.tasks[id].desired_state, TaskState::Shutdown, "old task {id} is shut down");
        }
        let fresh: Vec<&Task> = s.tasks.values().filter(|t| !old.contains(&t.id)).collect();
        let mut slots: Vec<u64> = fresh.iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2], "each slot gets a replacement");
        assert!(fresh.iter().all(|t| t.node_id.is_empty() && t.desired_state == TaskState::Running), "for the scheduler to place");
    }

    #[test]
    fn tasks_of_a_down_node_are_replaced() {
        let mut rng = Rng::from_seed(9);
        let mut s = running_on_n1(&mut rng);
        let old: Vec<String> = s.tasks.keys().cloned().collect();
        apply(&mut s, vec![Op::SetNodeState { id: "n1".into(), state: NodeState::Down }]);
        settle(&mut s, &mut rng);
        check_evacuated(&s, &old);
        // The scheduler then places them on the node that is up.
        let placed = scheduler::schedule(&s, 200);
        let on: Vec<&str> = placed
            .iter()
            .filter_map(|op| match op {
                Op::AssignTask { node_id, .. } => Some(node_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(on, vec!["n2", "n2"]);
    }

    #[test]
    fn a_held_replacement_does_not_wait_for_a_task_on_a_down_node() {
        let mut rng = Rng::from_seed(11);
        let mut s = running_on_n1(&mut rng);
        let old = s.tasks.values().find(|t| t.slot == 1).expect("slot 1").clone();
        let svc = s.services.values().next().expect("svc").clone();
        let mut held = new_task(&svc, 1, "", &mut rng, updater::HELD_BY_UPDATER);
        held.desired_state = TaskState::Ready;
        let held_id = held.id.clone();
        apply(&mut s, vec![Op::SetTaskDesired { id: old.id.clone(), desired: TaskState::Shutdown }, Op::CreateTask(held)]);
        let released = |ops: &[Op]| ops.iter().any(|op| matches!(op, Op::ReleaseTask { id } if *id == held_id));
        assert!(!released(&reconcile(&s, 100, &mut rng)), "waits while the old task may still run on n1");
        apply(&mut s, vec![Op::SetNodeState { id: "n1".into(), state: NodeState::Down }]);
        assert!(released(&reconcile(&s, 100, &mut rng)), "n1 is down: nothing to wait for");
    }

    #[test]
    fn tasks_of_a_removed_node_are_replaced() {
        let mut rng = Rng::from_seed(10);
        let mut s = running_on_n1(&mut rng);
        let old: Vec<String> = s.tasks.keys().cloned().collect();
        apply(&mut s, vec![Op::DeleteNode { id: "n1".into() }]);
        settle(&mut s, &mut rng);
        check_evacuated(&s, &old);
        for id in &old {
            assert_eq!(s.tasks[id].status.state, TaskState::Orphaned, "nobody will report {id} again: it ends");
        }
    }
}

#[cfg(test)]
mod enforcer_tests {
    use super::*;
    use crate::state::tests::{node, service};
    use shoal_shared::platform::Platform;
    use shoal_shared::types::{Node, NodeRole};

    const GIB: i64 = 1 << 30;

    /// One table row: a swarm running service `svc`, a change, what follows.
    struct Case {
        name: &'static str,
        nodes: Vec<Node>,
        service: fn(&mut Service),
        /// Replicated: one task per entry, created one at a time (slot 1 oldest) and running there.
        /// Global: the nodes its tasks run on (checked).
        on: &'static [&'static str],
        change: fn(&State) -> Vec<Op>,
        /// `slot node desired status err` per task, in slot (global: node) then creation order.
        expect: &'static str,
    }

    use super::node_loss_tests::{apply, settle};

    /// A ready, active linux/amd64 worker with user labels.
    fn worker(id: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = node(id, "linux/amd64");
        n.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        n.description.resources = ResourceSet { nano_cpus: 4_000_000_000, memory_bytes: 4 * GIB };
        n
    }

    /// `node` as it describes itself after `edit`.
    fn redescribe(s: &State, id: &str, edit: fn(&mut Node)) -> Vec<Op> {
        let mut n = s.nodes[id].clone();
        edit(&mut n);
        vec![Op::PutNode(n)]
    }

    fn labels(id: &str, labels: &[(&str, &str)]) -> Op {
        Op::SetNodeLabels { id: id.into(), labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    fn running(s: &mut State, id: &str, node: &str) {
        apply(s, vec![Op::AssignTask { id: id.into(), node_id: node.into(), status: TaskStatus::new(TaskState::Running, 5, "started") }]);
    }

    fn setup(case: &Case, rng: &mut Rng) -> State {
        let mut s = State::default();
        let mut svc = service("svc", "web");
        (case.service)(&mut svc);
        let mut ops: Vec<Op> = case.nodes.iter().cloned().map(Op::PutNode).collect();
        if let ServiceMode::Replicated { .. } = svc.spec.mode {
            svc.spec.mode = ServiceMode::Replicated { replicas: 0 };
        }
        ops.push(Op::PutService(svc.clone()));
        apply(&mut s, ops);
        if svc.spec.mode == ServiceMode::Global {
            settle(&mut s, rng);
            let placed = scheduler::schedule(&s, 50);
            apply(&mut s, placed);
            let mut placed: Vec<(String, String)> = s.tasks.values().map(|t| (t.node_id.clone(), t.id.clone())).collect();
            placed.sort();
            for (node, id) in &placed {
                running(&mut s, id, node);
            }
            assert_eq!(placed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), case.on, "{}", case.name);
            return s;
        }
        for (i, node) in case.on.iter().enumerate() {
            svc.spec.mode = ServiceMode::Replicated { replicas: i as u64 + 1 };
            apply(&mut s, vec![Op::PutService(svc.clone())]);
            settle(&mut s, rng);
            let fresh = s.tasks.values().find(|t| t.node_id.is_empty()).expect("the new slot's task").id.clone();
            running(&mut s, &fresh, node);
        }
        s
    }

    fn render(s: &State) -> String {
        let mut tasks = s.tasks_of("svc");
        // A global slot is its node.
        tasks.sort_by_key(|t| (t.slot, if t.slot == 0 { t.node_id.as_str() } else { "" }, t.meta.created_at));
        let mut out = String::new();
        for t in tasks {
            let node = if t.node_id.is_empty() { "-" } else { t.node_id.as_str() };
            let line = format!("{} {node} {} {} {}", t.slot, t.desired_state, t.status.state, t.status.err);
            out += line.trim_end();
            out += "\n";
        }
        out
    }

    /// Applies the case's change, runs the orchestrator until it settles and
    /// the scheduler once, then compares; nothing more happens after that.
    fn check(case: Case) {
        let mut rng = Rng::from_seed(11);
        let mut s = setup(&case, &mut rng);
        let change = (case.change)(&s);
        apply(&mut s, change);
        settle(&mut s, &mut rng);
        let placed = scheduler::schedule(&s, 200);
        apply(&mut s, placed);
        let want: String = case.expect.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
        assert_eq!(render(&s), want, "{}", case.name);
        assert_eq!(reconcile(&s, 300, &mut rng), vec![], "{}: the orchestrator is done", case.name);
    }

    fn zone_x(s: &mut Service) {
        s.spec.task.placement.constraints = vec!["node.labels.zone==x".into()];
    }

    fn zone_x_no_restarts(s: &mut Service) {
        zone_x(s);
        s.spec.task.restart.condition = RestartCondition::None;
        s.spec.task.restart.max_attempts = 1;
    }

    fn reserves_1_gib(s: &mut Service) {
        s.spec.task.resources.reservations.memory_bytes = GIB;
    }

    fn drop_zone_on_a(_: &State) -> Vec<Op> {
        vec![labels("a", &[])]
    }

    #[test]
    fn constraints_and_platforms_are_enforced_on_replicated_tasks() {
        let xs = || vec![worker("a", &[("zone", "x")]), worker("b", &[("zone", "x")]), worker("c", &[])];
        let cases = vec![
            Case {
                name: "label removed: shut down, replaced in its slot on a matching node",
                nodes: xs(),
                service: zone_x,
                on: &["a", "b"],
                change: drop_zone_on_a,
                expect: "
                    1 a Shutdown Running assigned node no longer meets constraints
                    1 b Running Assigned
                    2 b Running Running",
            },
            Case {
                name: "no matching node left: the replacement waits, saying why",
                nodes: vec![worker("a", &[("zone", "x")]), worker("b", &[]), worker("c", &[])],
                service: zone_x,
                on: &["a"],
                change: drop_zone_on_a,
                expect: "
                    1 a Shutdown Running assigned node no longer meets constraints
                    1 - Running Pending no suitable node (scheduling constraints not satisfied on 3 nodes)",
            },
            Case {
                name: "the node still matches: untouched",
                nodes: xs(),
                service: zone_x,
                on: &["a", "b"],
                change: |_| vec![labels("a", &[("zone", "x"), ("disk", "ssd")]), labels("c", &[])],
                expect: "
                    1 a Running Running
                    2 b Running Running",
            },
            Case {
                name: "restart policy none, attempts used up: still replaced",
                nodes: xs(),
                service: zone_x_no_restarts,
                on: &["a"],
                change: drop_zone_on_a,
                expect: "
                    1 a Shutdown Running assigned node no longer meets constraints
                    1 b Running Assigned",
            },
            Case {
                name: "role changed",
                nodes: vec![worker("a", &[]), worker("b", &[])],
                service: |s| s.spec.task.placement.constraints = vec!["node.role==worker".into()],
                on: &["a", "b"],
                change: |s| redescribe(s, "a", |n| n.role = NodeRole::Manager),
                expect: "
                    1 a Shutdown Running assigned node no longer meets constraints
                    1 b Running Assigned
                    2 b Running Running",
            },
            Case {
                name: "platform no longer supported",
                nodes: vec![worker("a", &[]), worker("b", &[])],
                service: |s| s.spec.task.placement.platforms = vec![Platform::parse("linux/amd64").unwrap()],
                on: &["a"],
                change: |s| redescribe(s, "a", |n| n.description.platform = Platform::parse("linux/arm64").unwrap()),
                expect: "
                    1 a Shutdown Running assigned node's platform is no longer supported
                    1 b Running Assigned",
            },
            Case {
                name: "a paused node keeps its tasks (swarmkit's rule)",
                nodes: xs(),
                service: zone_x,
                on: &["a"],
                change: |_| vec![Op::SetNodeAvailability { id: "a".into(), availability: Availability::Pause }, labels("a", &[])],
                expect: "
                    1 a Running Running",
            },
            Case {
                name: "a drained node is drained, not enforced",
                nodes: xs(),
                service: zone_x,
                on: &["a"],
                change: |_| vec![Op::SetNodeAvailability { id: "a".into(), availability: Availability::Drain }, labels("a", &[])],
                expect: "
                    1 a Shutdown Running
                    1 b Running Assigned",
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn reservations_that_no_longer_fit_shut_the_newest_tasks_down() {
        let cases = vec![
            Case {
                name: "node shrinks below three reservations: the newest leaves",
                nodes: vec![worker("a", &[]), worker("b", &[])],
                service: reserves_1_gib,
                on: &["a", "a", "a"],
                change: |s| redescribe(s, "a", |n| n.description.resources.memory_bytes = 5 * GIB / 2),
                expect: "
                    1 a Running Running
                    2 a Running Running
                    3 a Shutdown Running assigned node no longer has the reserved resources
                    3 b Running Assigned",
            },
            Case {
                name: "cpus count too",
                nodes: vec![worker("a", &[]), worker("b", &[])],
                service: |s| s.spec.task.resources.reservations.nano_cpus = 1_000_000_000,
                on: &["a", "a"],
                change: |s| redescribe(s, "a", |n| n.description.resources.nano_cpus = 1_000_000_000),
                expect: "
                    1 a Running Running
                    2 a Shutdown Running assigned node no longer has the reserved resources
                    2 b Running Assigned",
            },
            Case {
                name: "no reservations: nothing to enforce",
                nodes: vec![worker("a", &[])],
                service: |_| {},
                on: &["a", "a"],
                change: |s| redescribe(s, "a", |n| n.description.resources = ResourceSet::default()),
                expect: "
                    1 a Running Running
                    2 a Running Running",
            },
            Case {
                name: "nowhere to go: the replacement waits",
                nodes: vec![worker("a", &[])],
                service: reserves_1_gib,
                on: &["a", "a"],
                change: |s| redescribe(s, "a", |n| n.description.resources.memory_bytes = GIB),
                expect: "
                    1 a Running Running
                    2 a Shutdown Running assigned node no longer has the reserved resources
                    2 - Running Pending no suitable node (insufficient resources on 1 node)",
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn global_services_keep_their_own_rules() {
        let cases = vec![
            Case {
                name: "label removed: the global task is removed, nothing replaces it there",
                nodes: vec![worker("a", &[("zone", "x")]), worker("b", &[("zone", "x")])],
                service: |s| {
                    s.spec.mode = ServiceMode::Global;
                    zone_x(s);
                },
                on: &["a", "b"],
                change: drop_zone_on_a,
                expect: "
                    0 a Remove Running
                    0 b Running Running",
            },
            Case {
                name: "node shrinks: the global task leaves, its successor waits on the node",
                nodes: vec![worker("a", &[]), worker("b", &[])],
                service: |s| {
                    s.spec.mode = ServiceMode::Global;
                    reserves_1_gib(s);
                },
                on: &["a", "b"],
                change: |s| redescribe(s, "a", |n| n.description.resources.memory_bytes = GIB / 2),
                expect: "
                    0 a Shutdown Running assigned node no longer has the reserved resources
                    0 a Running Pending no suitable node (insufficient resources on 1 node)
                    0 b Running Running",
            },
        ];
        for case in cases {
            check(case);
        }
    }

    /// A restart is placed afresh, so it lands on a node that still matches
    /// (not on the dead task's node, which lost its label).
    #[test]
    fn a_restart_goes_to_a_node_that_still_matches() {
        check(Case {
            name: "restart on a node that lost its label",
            nodes: vec![worker("a", &[("zone", "x")]), worker("b", &[("zone", "x")])],
            service: |s| {
                zone_x(s);
                s.spec.task.restart.delay_ns = 0;
            },
            on: &["a"],
            change: |s| {
                let id = s.tasks.keys().next().expect("one task").clone();
                let mut failed = TaskStatus::new(TaskState::Failed, 90, "started");
                failed.err = "task: non-zero exit (1)".into();
                vec![labels("a", &[]), Op::SetTaskStatus { id, status: failed }]
            },
            expect: "
                1 a Shutdown Failed task: non-zero exit (1)
                1 b Running Assigned",
        });
    }

    #[test]
    fn a_restart_never_waits_on_a_paused_node() {
        // Restarts of replicated tasks are placed afresh: bound to a node that
        // was paused after the failure, the restart used to wait there forever.
        check(Case {
            name: "restart after the node was paused",
            nodes: vec![worker("a", &[]), worker("b", &[])],
            service: |s| s.spec.task.restart.delay_ns = 0,
            on: &["a"],
            change: |s| {
                let id = s.tasks.keys().next().expect("one task").clone();
                let mut failed = TaskStatus::new(TaskState::Failed, 90, "started");
                failed.err = "task: non-zero exit (1)".into();
                vec![
                    Op::SetNodeAvailability { id: "a".into(), availability: shoal_shared::types::Availability::Pause },
                    Op::SetTaskStatus { id, status: failed },
                ]
            },
            expect: "
                1 a Shutdown Failed task: non-zero exit (1)
                1 b Running Assigned",
        });
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;
    use crate::state::tests::service;
    use shoal_shared::ops::Entry;

    /// Runs the orchestrator until it has nothing to do.
    fn settle(s: &mut State, now: UnixNanos, rng: &mut Rng) {
        for _ in 0..20 {
            let ops = reconcile(s, now, rng);
            if ops.is_empty() {
                return;
            }
            let r = s.apply(s.applied_index + 1, &Entry { at: now, ops });
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        }
        panic!("reconcile did not settle in 20 rounds");
    }

    /// Runs a job to its end on nodes `n1..=n{nodes}`: orchestrator, then
    /// scheduler, then agents (assigned tasks run; running ones complete,
    /// or fail when `fails(task)`), `rounds` times, a second apart. Returns
    /// the most live tasks of the service seen at once.
    fn run_job(s: &mut State, nodes: usize, rounds: usize, fails: &dyn Fn(&Task) -> bool, rng: &mut Rng) -> usize {
        let mut ops: Vec<Op> = (1..=nodes).map(|i| Op::PutNode(crate::state::tests::node(&format!("n{i}"), "linux/amd64"))).collect();
        ops.retain(|op| matches!(op, Op::PutNode(n) if !s.nodes.contains_key(&n.id)));
        if !ops.is_empty() {
            s.apply(s.applied_index + 1, &Entry { at: 1, ops });
        }
        let mut most = 0;
        for round in 0..rounds {
            let now = 1_000_000_000 * (round as u64 + 2);
            settle(s, now, rng);
            let placed = crate::scheduler::schedule(s, now);
            s.apply(s.applied_index + 1, &Entry { at: now, ops: placed });
            let live = s.tasks.values().filter(|t| live(t)).count();
            most = most.max(live);
            let mut agent = Vec::new();
            for t in s.tasks.values().filter(|t| !t.node_id.is_empty() && !t.status.state.is_terminal()) {
                let st = match (t.desired_state, t.status.state) {
                    (d, _) if d > TaskState::Running => TaskStatus::new(TaskState::Shutdown, now, "shutdown"),
                    (TaskState::Running, TaskState::Running) if fails(t) => TaskStatus::new(TaskState::Failed, now, "exit 1"),
                    (TaskState::Running, TaskState::Running) => TaskStatus::new(TaskState::Complete, now, "finished"),
                    (TaskState::Running, st) if st >= TaskState::Assigned => TaskStatus::new(TaskState::Running, now, "started"),
                    _ => continue,
                };
                agent.push(Op::SetTaskStatus { id: t.id.clone(), status: st });
            }
            let r = s.apply(s.applied_index + 1, &Entry { at: now, ops: agent });
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        }
        most
    }

    fn job(mode: ServiceMode) -> State {
        let mut s = State::default();
        let mut svc = service("svc", "batch");
        svc.spec.mode = mode;
        svc.spec.task.restart.condition = RestartCondition::OnFailure;
        svc.spec.task.restart.delay_ns = 0;
        s.apply(1, &Entry { at: 1, ops: vec![Op::PutService(svc)] });
        s
    }

    fn progress(s: &State) -> JobProgress {
        job_progress(s, &s.services["svc"]).unwrap()
    }

    #[test]
    fn a_replicated_job_runs_its_completions_at_most_max_concurrent_at_once() {
        let mut rng = Rng::from_seed(3);
        let mut s = job(ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 5 });
        let most = run_job(&mut s, 3, 12, &|_| false, &mut rng);
        assert_eq!(most, 2, "never more than max_concurrent live, and it used them");
        assert_eq!(progress(&s), JobProgress { running: 0, completed: 5, failed: 0, total: 5 });
        // Done is done: more rounds start nothing, and each slot 1..=5 has exactly one (complete) task.
        let before = s.tasks.len();
        run_job(&mut s, 3, 3, &|_| false, &mut rng);
        assert_eq!(s.tasks.len(), before);
        let mut slots: Vec<u64> = s.tasks.values().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, [1, 2, 3, 4, 5]);
        // A job is no service: the updater never marked it.
        assert!(s.services["svc"].update_status.is_none());
    }

    #[test]
    fn failed_job_tasks_are_retried_per_policy_and_completed_ones_never() {
        let mut rng = Rng::from_seed(4);
        let mut s = job(ServiceMode::ReplicatedJob { max_concurrent: 0, total_completions: 3 });
        // Slot 2 fails twice, then succeeds.
        let failures = std::cell::Cell::new(0);
        let fails = |t: &Task| {
            let f = t.slot == 2 && failures.get() < 2;
            if f {
                failures.set(failures.get() + 1);
            }
            f
        };
        run_job(&mut s, 2, 10, &fails, &mut rng);
        assert_eq!(progress(&s).completed, 3);
        let slot2: Vec<TaskState> = s.tasks.values().filter(|t| t.slot == 2).map(|t| t.status.state).collect();
        assert_eq!(slot2.iter().filter(|st| **st == TaskState::Failed).count(), 2, "{slot2:?}");
        assert_eq!(s.tasks.values().filter(|t| t.slot != 2).count(), 2, "completed slots never ran again");
        // With no retries left, the job fails for good and says so.
        let mut s = job(ServiceMode::ReplicatedJob { max_concurrent: 1, total_completions: 2 });
        let mut svc = s.services["svc"].clone();
        svc.spec.task.restart.max_attempts = 1;
        s.apply(s.applied_index + 1, &Entry { at: 1, ops: vec![Op::PutService(svc)] });
        run_job(&mut s, 1, 10, &|t| t.slot == 1, &mut rng);
        let p = progress(&s);
        assert_eq!((p.failed, p.running), (1, 0), "{p:?}");
        assert_eq!(p.completed, 1, "the other slot still ran: {p:?}");
    }

    #[test]
    fn a_changed_spec_runs_the_job_again() {
        let mut rng = Rng::from_seed(5);
        let mut s = job(ServiceMode::ReplicatedJob { max_concurrent: 3, total_completions: 3 });
        run_job(&mut s, 2, 6, &|_| false, &mut rng);
        assert_eq!(progress(&s).completed, 3);
        let first: BTreeSet<String> = s.tasks.keys().cloned().collect();
        // `service update --force`.
        let mut svc = s.services["svc"].clone();
        svc.spec.task.force_update += 1;
        s.apply(s.applied_index + 1, &Entry { at: 1, ops: vec![Op::PutService(svc)] });
        assert_eq!(progress(&s).completed, 0, "the old iteration does not count");
        run_job(&mut s, 2, 8, &|_| false, &mut rng);
        assert_eq!(progress(&s), JobProgress { running: 0, completed: 3, failed: 0, total: 3 });
        let again = s.tasks.values().filter(|t| !first.contains(&t.id) && t.status.state == TaskState::Complete).count();
        assert_eq!(again, 3, "every slot ran again with new tasks");
        assert!(s.tasks.values().filter(|t| first.contains(&t.id)).all(|t| t.desired_state >= TaskState::Shutdown));
    }

    #[test]
    fn a_global_job_runs_once_per_node_including_nodes_that_join_later() {
        let mut rng = Rng::from_seed(6);
        let mut s = job(ServiceMode::GlobalJob);
        run_job(&mut s, 2, 5, &|_| false, &mut rng);
        assert_eq!(progress(&s), JobProgress { running: 0, completed: 2, failed: 0, total: 2 });
        assert_eq!(s.tasks.len(), 2);
        run_job(&mut s, 3, 5, &|_| false, &mut rng);
        assert_eq!(progress(&s), JobProgress { running: 0, completed: 3, failed: 0, total: 3 });
        let on: BTreeSet<&str> = s.tasks.values().map(|t| t.node_id.as_str()).collect();
        assert_eq!(on, BTreeSet::from(["n1", "n2", "n3"]));
        assert_eq!(s.tasks.len(), 3, "completed nodes ran nothing again");
    }
}
