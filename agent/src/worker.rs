//! The worker's decision core: from assigned tasks and observed containers
//! to runtime actions and status reports.
//!
//! Sans-IO: [`Worker::plan`] reads this node's [`Assignments`] and what the runtime
//! last reported, and returns [`Action`]s; the daemon's shell runs them and
//! feeds results back through the `handle_*` methods. The worker never
//! blocks and never touches the runtime itself.
//!
//! Invariants:
//! - at most one runtime action is in flight per task;
//! - a report never moves a task's status backwards (asserted here before
//!   reporting, and again by the manager's `apply`: a pair assertion);
//! - nothing is concluded about a missing container until the first full
//!   listing after start-up (`synced`), and a listing never erases what a
//!   later event told us (epochs);
//! - a task whose start failed is never started again: its failure is
//!   reported (and re-derived from memory, like observations, until the
//!   state shows it), because the state a worker plans from may lag behind
//!   its own reports (a worker's assignments come back from the leader);
//! - a task reported Running has a process: a container without one (after
//!   a reboot, a containerd restart that lost its task, a killed shim, a
//!   task deleted by hand) is a task that stopped, reported Failed on the
//!   first plan after the listing that shows it, and the restart policy
//!   decides (the orchestrator replaces it in its slot, as Swarm does);
//! - resuming ([`Worker::set_resume`]: the daemon started with no manager in
//!   reach and plans from the assignments it persisted): a Running task
//!   whose container lost its process (a reboot) is started again in place,
//!   the same task, rather than reported Failed; tasks of global services
//!   are started first; nothing is resumed once fresh assignments arrive;
//! - offline ([`Worker::set_offline`]: a worker with no link to any manager):
//!   a Running task whose container exited or lost its process is restarted
//!   in place, the same task, as its restart policy says (condition, delay,
//!   max attempts within the window), instead of being reported; past the
//!   policy it is reported as before, and the count of in-place restarts is
//!   told to the manager with the task's next report (a Running one once a
//!   manager is back in reach, if nothing else is to be said): in words on
//!   the status, and as an account ([`Action::RestartsInPlace`], just before
//!   that report: the count of this worker's `session` and how long ago, on
//!   the monotonic clock, the newest restarts were made) that the
//!   orchestrator counts as attempts of the slot; without a restart window,
//!   the task's `attempt` (the slot's attempts before it) counts here too;
//! - a stop's grace period is a deadline held here (`stopping`, monotonic
//!   `now_ms`), never a blocked runtime call: `Stop` only sends the stop
//!   signal, and `Kill` follows once the deadline passes without an exit;
//! - healthchecks (Swarm's): a task whose container has one (the spec's
//!   merged with the image's, kept in a container label so an adopted
//!   container has it too) is reported `Starting` once started and
//!   `Running` at its first successful probe; probes run every interval
//!   ([`Action::Probe`], at most [`PROBES_INFLIGHT_MAX`] node-wide and one
//!   per task, never while a runtime action of the task is in flight or
//!   its container is being stopped; a result for an earlier start of the
//!   container, or once it is stopping, is ignored); failures within the
//!   start period of a task never healthy do not count; `retries`
//!   consecutive failures (a non-zero exit, a timeout, an exec the
//!   runtime refused; not a runtime out of reach) make it unhealthy: the
//!   container is stopped (its grace period) and the task reported Failed,
//!   `task: unhealthy container`, whatever its exit code (offline, a
//!   failure the restart policy restarts in place). A task the state already has Running
//!   (adopted after a daemon restart, or restarted in place) stays Running
//!   and is probed on.

use crate::runtime::{ContainerState, Exit, Observed, Probed, RuntimeError, Signalled};
use shoal_shared::assignments::{Assignments, NodeNetworkView};
use shoal_shared::clock::UnixNanos;
use shoal_shared::task::TaskState;
use shoal_shared::types::{HealthConfig, RestartCondition, RestartsInPlace, ServiceMode, Task, TaskStatus, IN_PLACE_TIMES_MAX};
use std::collections::{BTreeMap, BTreeSet};

/// What the shell should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Propose this observed status for a task.
    Report { task_id: String, status: TaskStatus },
    /// Prepare the image and start the task's container.
    Start { task: Box<Task> },
    /// Send a container its stop signal; `Kill` follows after `grace_ms`
    /// unless it exits first (the worker keeps the deadline).
    Stop { id: String, grace_ms: u64 },
    /// The grace period is over: SIGKILL every process of the container.
    Kill { id: String },
    /// Delete a container and its snapshot.
    Remove { id: String },
    /// Tell the manager the restarts made of a task in place while offline
    /// (planned just before the report that says so in words).
    RestartsInPlace(RestartsInPlace),
    /// Run a health probe in a running container, for at most `timeout_ms`;
    /// its result goes to [`Worker::handle_probed`] with `generation`.
    Probe { id: String, argv: Vec<String>, timeout_ms: u64, generation: u64 },
}

/// Health probes in flight at once on this node (each holds a blocking
/// call for up to its timeout; stops and starts never wait for them).
pub const PROBES_INFLIGHT_MAX: usize = 4;
/// What Swarm reports a task whose container turned unhealthy failed with.
pub const ERR_UNHEALTHY: &str = "task: unhealthy container";
/// Bytes of a failed probe's output kept for the task's status message.
const PROBE_NOTE_BYTES_MAX: usize = 128;

/// A container's healthcheck and its probes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Health {
    check: HealthConfig,
    argv: Vec<String>,
    /// This start of the container (results of earlier ones are ignored).
    generation: u64,
    /// Found running by a listing (a daemon restart), not started by us.
    adopted: bool,
    /// When probing began (mono ms): the start period runs from here. Set
    /// by the first plan after the start.
    since_ms: Option<u64>,
    /// When the next probe is due (mono ms).
    next_ms: u64,
    /// A probe succeeded since the start (or the state had it Running).
    healthy: bool,
    /// Consecutive failures counted.
    failures: u64,
    /// `retries` failures in a row: stopped, then reported Failed.
    unhealthy: bool,
    /// The last failed probe's output, for the status message.
    last_failure: String,
}

impl Health {
    /// `None` for a check no probe can run (not a CMD or CMD-SHELL test).
    fn new(check: HealthConfig, generation: u64, adopted: bool) -> Option<Health> {
        let argv = shoal_shared::health::argv(&check.test)?;
        Some(Health {
            check,
            argv,
            generation,
            adopted,
            since_ms: None,
            next_ms: 0,
            healthy: false,
            failures: 0,
            unhealthy: false,
            last_failure: String::new(),
        })
    }

    fn interval_ms(&self) -> u64 {
        (self.check.interval_ns / 1_000_000).max(1)
    }
}

/// Whether every overlay network `t` attaches to is programmed on this
/// node: the node's own address on it is allocated.
fn networks_ready(view: &NodeNetworkView, t: &Task) -> bool {
    t.networks.iter().all(|a| view.ready(&a.network_id))
}

/// How long after a SIGKILL with no exit seen the kill is sent again (the
/// exit normally arrives within milliseconds, as an event or in a listing).
pub const KILL_RETRY_MS: u64 = 5_000;

/// A container being stopped: its grace period as a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stopping {
    grace_ms: u64,
    /// When SIGKILL is due; `None` until the stop signal was sent.
    kill_at_ms: Option<u64>,
    /// When SIGKILL was last sent.
    killed_at_ms: Option<u64>,
}

/// The worker's memory of containers and in-flight actions.
#[derive(Debug, Default)]
pub struct Worker {
    node_id: String,
    containers: BTreeMap<String, ContainerState>,
    /// Epoch of the last change per container, to order listings and events.
    changed_at: BTreeMap<String, u64>,
    inflight: BTreeSet<String>,
    /// Tasks whose start failed, with the status that says so, until the
    /// state shows them terminal (or they leave it).
    start_failed: BTreeMap<String, TaskStatus>,
    /// Containers sent their stop signal, with their kill deadlines.
    stopping: BTreeMap<String, Stopping>,
    synced: bool,
    epoch: u64,
    /// Planning from persisted assignments with no manager in reach (see the module docs).
    resume: bool,
    /// No link to any manager (see the module docs).
    offline: bool,
    /// In-place restarts made while offline, per task.
    local: BTreeMap<String, LocalRestarts>,
    /// This daemon run, in the accounts of in-place restarts (random at start).
    session: u64,
    /// Tasks already started again by the resume: a later loss of their
    /// process is a failure for the restart policy, not another resume.
    resumed: BTreeSet<String>,
    /// Containers with a healthcheck, by id (see the module docs).
    health: BTreeMap<String, Health>,
    /// Containers with a probe in flight.
    probing: BTreeSet<String>,
    /// Counts container starts, for [`Health::generation`].
    generation: u64,
}

/// What a report says of `n` in-place restarts.
fn restarts_note(n: u64) -> String {
    format!("restarted in place {n} time{} with no manager in reach", if n == 1 { "" } else { "s" })
}

/// A task's in-place restarts while offline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LocalRestarts {
    /// Restarts made, in all.
    count: u64,
    /// Restarts already told to a manager.
    told: u64,
    /// When each recent restart was made (mono ms), at most `max_attempts` of them.
    recent_ms: Vec<u64>,
    /// When the exit (or the loss of the process) was first seen: the delay runs from here.
    stopped_seen_ms: Option<u64>,
    /// The old container is being removed; the start follows at once.
    restarting: bool,
}

impl Worker {
    /// A worker for the node `node_id`.
    pub fn new(node_id: &str) -> Worker {
        Worker { node_id: node_id.to_string(), ..Worker::default() }
    }

    /// The node's new id after `swarm leave` (its assignments are gone with the swarm).
    pub fn set_node_id(&mut self, node_id: &str) {
        self.node_id = node_id.to_string();
    }

    /// Whether the assignments planned from are this node's persisted ones,
    /// with no manager in reach (see the module docs).
    pub fn set_resume(&mut self, resume: bool) {
        self.resume = resume;
        if !resume {
            self.resumed.clear();
        }
    }

    /// Whether this worker has a link to any manager (see the module docs).
    pub fn set_offline(&mut self, offline: bool) {
        self.offline = offline;
    }

    /// Names this daemon run in the accounts of in-place restarts (a random
    /// number drawn at start: a restarted daemon counts from 0 again).
    pub fn set_session(&mut self, session: u64) {
        self.session = session;
    }

    /// In-place restarts made while offline that no manager was told of yet.
    pub fn untold_restarts(&self) -> u64 {
        self.local.values().map(|l| l.count - l.told).sum()
    }

    /// The epoch to tag a listing request with.
    pub fn list_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Containers known to exist.
    pub fn containers(&self) -> &BTreeMap<String, ContainerState> {
        &self.containers
    }

    fn set(&mut self, id: &str, state: ContainerState) {
        self.epoch += 1;
        self.containers.insert(id.to_string(), state);
        self.changed_at.insert(id.to_string(), self.epoch);
    }

    fn forget(&mut self, id: &str) {
        self.epoch += 1;
        self.containers.remove(id);
        self.health.remove(id);
        self.changed_at.insert(id.to_string(), self.epoch);
    }

    /// A full listing, requested at `epoch`, arrived.
    pub fn handle_list(&mut self, epoch: u64, observed: Vec<Observed>) {
        let mut checks = Vec::new();
        let mut listed: BTreeMap<String, ContainerState> = BTreeMap::new();
        for o in observed {
            if let Some(h) = o.health {
                checks.push((o.id.clone(), h));
            }
            listed.insert(o.id, o.state);
        }
        let ids: BTreeSet<String> = self.containers.keys().chain(listed.keys()).cloned().collect();
        for id in ids {
            if self.changed_at.get(&id).is_some_and(|&e| e > epoch) {
                continue; // an event after the listing was requested knows better
            }
            match listed.get(&id) {
                Some(s) => {
                    self.containers.insert(id.clone(), s.clone());
                    // Adopted (a daemon restart): probed as before, from its label.
                    let check = checks.iter().position(|(i, _)| *i == id).map(|at| checks.swap_remove(at).1);
                    if let (false, Some(check)) = (self.health.contains_key(&id), check) {
                        self.generation += 1;
                        if let Some(h) = Health::new(check, self.generation, true) {
                            self.health.insert(id, h);
                        }
                    }
                }
                None => {
                    self.containers.remove(&id);
                    self.health.remove(&id);
                }
            }
        }
        self.synced = true;
    }

    /// A container's process exited.
    pub fn handle_exit(&mut self, exit: &Exit) {
        self.set(&exit.id, ContainerState::Stopped { exit_code: exit.exit_code });
    }

    /// A start finished (with the container's healthcheck, if it has one);
    /// returns the status to report: `Starting` until a probe succeeds when
    /// it has a healthcheck (not reported if the state has it Running).
    pub fn handle_started(&mut self, task: &Task, result: Result<Option<HealthConfig>, RuntimeError>, now: UnixNanos) -> TaskStatus {
        self.inflight.remove(&task.id);
        match result {
            Ok(check) => {
                // An exit event may already have arrived for a container that died at once.
                if !matches!(self.containers.get(&task.id), Some(ContainerState::Stopped { .. })) {
                    self.set(&task.id, ContainerState::Running);
                }
                self.generation += 1;
                match check.and_then(|c| Health::new(c, self.generation, false)) {
                    Some(h) => {
                        self.health.insert(task.id.clone(), h);
                        TaskStatus::new(TaskState::Starting, now, "starting")
                    }
                    None => {
                        self.health.remove(&task.id);
                        TaskStatus::new(TaskState::Running, now, "started")
                    }
                }
            }
            Err(e) => {
                let state = match e {
                    RuntimeError::Start(_) | RuntimeError::Other(_) | RuntimeError::Unavailable(_) => TaskState::Failed,
                    _ => TaskState::Rejected,
                };
                let mut st = TaskStatus::new(state, now, "preparing or starting the container failed");
                st.err = e.to_string();
                self.start_failed.insert(task.id.clone(), st.clone());
                st
            }
        }
    }

    /// A stop signal (`kill`: SIGKILL) was sent at monotonic `now_ms`, or
    /// found nothing to signal. A failed call counts as sent: the deadline
    /// runs on and the kill (or its retry) tries again.
    pub fn handle_signalled(&mut self, id: &str, kill: bool, result: Result<Signalled, RuntimeError>, now_ms: u64) {
        self.inflight.remove(id);
        match result {
            Ok(Signalled::NoProcess { exit_code }) => {
                self.stopping.remove(id);
                match exit_code {
                    Some(code) => self.set(id, ContainerState::Stopped { exit_code: code }),
                    // No task (or no container: removing it then is a no-op).
                    None => self.set(id, ContainerState::Created),
                }
            }
            Ok(Signalled::Sent) | Err(_) => {
                let s = self.stopping.entry(id.to_string()).or_insert(Stopping { grace_ms: 0, kill_at_ms: None, killed_at_ms: None });
                if kill {
                    s.killed_at_ms = Some(now_ms);
                } else {
                    s.kill_at_ms = Some(now_ms.saturating_add(s.grace_ms));
                }
            }
        }
    }

    /// A health probe finished at monotonic `now_ms`; true when it made the
    /// container unhealthy (it is stopped and its task reported Failed next).
    /// Ignored when it was for an earlier start of the container, or the
    /// container is no longer running or is being stopped.
    pub fn handle_probed(&mut self, id: &str, generation: u64, result: Result<Probed, RuntimeError>, now_ms: u64) -> bool {
        self.probing.remove(id);
        let running = matches!(self.containers.get(id), Some(ContainerState::Running));
        let stopping = self.stopping.contains_key(id) || self.inflight.contains(id);
        let Some(h) = self.health.get_mut(id).filter(|h| h.generation == generation && !h.unhealthy) else {
            return false;
        };
        if !running || stopping {
            return false;
        }
        h.next_ms = now_ms.saturating_add(h.interval_ms());
        let output = match result {
            Ok(Probed { exit_code: Some(0), .. }) => {
                h.healthy = true;
                h.failures = 0;
                return false;
            }
            Ok(Probed { exit_code: Some(code), output }) => {
                let text = String::from_utf8_lossy(&output);
                let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if line.is_empty() {
                    format!("exit {code}")
                } else {
                    format!("exit {code}: {line}")
                }
            }
            Ok(Probed { exit_code: None, .. }) => format!("timed out after {} ms", h.check.timeout_ns / 1_000_000),
            // The runtime itself out of reach (containerd restarting) says nothing of the container.
            Err(RuntimeError::Unavailable(_)) => return false,
            Err(e) => e.to_string(),
        };
        h.last_failure = truncate_chars(&output, PROBE_NOTE_BYTES_MAX);
        // Docker's rule: failures in the start period count only once the container was healthy.
        let since = h.since_ms.unwrap_or(now_ms);
        let starting = !h.healthy && now_ms < since.saturating_add(h.check.start_period_ns / 1_000_000);
        if starting {
            return false;
        }
        h.failures += 1;
        h.unhealthy = h.failures >= h.check.retries.max(1);
        h.unhealthy
    }

    /// The last failed probe's output of a container (for the log).
    pub fn probe_failure(&self, id: &str) -> Option<&str> {
        self.health.get(id).map(|h| h.last_failure.as_str())
    }

    /// A removal finished (or failed; then the next listing retries it).
    pub fn handle_removed(&mut self, id: &str, ok: bool) {
        self.inflight.remove(id);
        if ok {
            self.forget(id);
        }
    }

    /// Decides what to do for every task on this node and every stray
    /// container. `now` stamps reports; `now_ms` (monotonic) times grace
    /// periods.
    pub fn plan(&mut self, assigned: &Assignments, now: UnixNanos, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.synced {
            return actions;
        }
        // A container that exited (or vanished) needs no kill any more.
        let containers = &self.containers;
        let inflight = &self.inflight;
        self.stopping
            .retain(|id, _| inflight.contains(id) || matches!(containers.get(id), Some(ContainerState::Running | ContainerState::Unknown)));
        // Paired with the dispatcher: these are this node's assignments
        // (a set for another id, as held across a `swarm leave`, plans nothing).
        if assigned.node_id != self.node_id {
            return actions;
        }
        let mut mine: Vec<&Task> = assigned.tasks.values().collect();
        // Global services first (a device's logging agent before its workloads).
        let global = |t: &Task| assigned.services.get(&t.service_id).is_some_and(|s| matches!(s.spec.mode, ServiceMode::Global));
        mine.sort_by_key(|t| !global(t));
        self.start_failed.retain(|id, _| assigned.tasks.get(id).is_some_and(|t| !t.status.state.is_terminal()));
        self.local.retain(|id, _| assigned.tasks.contains_key(id));
        // A manager was told of the in-place restarts once its state carries the note.
        for (id, l) in self.local.iter_mut().filter(|(_, l)| l.count > l.told) {
            let st = &assigned.tasks[id].status;
            let note = restarts_note(l.count);
            if st.err.contains(&note) || st.message.contains(&note) {
                l.told = l.count;
            }
        }
        for t in &mine {
            if self.inflight.contains(&t.id) {
                continue;
            }
            self.note_local_exit(t, now_ms);
            if let Some(st) = self.start_failed.get(&t.id) {
                // Not terminal in the assignments yet (retained above): say it again, never start it again.
                if t.status.state.advance(st.state).is_ok() {
                    actions.push(Action::Report { task_id: t.id.clone(), status: st.clone() });
                }
                continue;
            }
            let planned = match self.plan_local_restart(t, &assigned.network, now_ms) {
                // Offline, the restart policy restarts it in place (or waits out its delay).
                Some(decision) => decision.inspect(|a| self.book_local_restart(t, a, now_ms)),
                None => self.plan_task(t, &assigned.network, now, now_ms).or_else(|| self.tell_local_restarts(t, now)),
            };
            if let Some(mut a) = planned {
                if self.resume && t.status.state == TaskState::Running && matches!(a, Action::Start { .. }) {
                    self.resumed.insert(t.id.clone());
                }
                if let Some(account) = self.add_local_restarts(t, &mut a, now_ms) {
                    actions.push(Action::RestartsInPlace(account));
                }
                match &a {
                    Action::Report { .. } | Action::RestartsInPlace(_) => {}
                    Action::Stop { id, grace_ms } => {
                        self.stopping.insert(id.clone(), Stopping { grace_ms: *grace_ms, kill_at_ms: None, killed_at_ms: None });
                        self.inflight.insert(t.id.clone());
                    }
                    _ => {
                        self.inflight.insert(t.id.clone());
                    }
                }
                actions.push(a);
            }
        }
        self.plan_probes(&mine, now_ms, &mut actions);
        let known: BTreeSet<&str> = mine.iter().map(|t| t.id.as_str()).collect();
        let strays: Vec<String> =
            self.containers.keys().filter(|id| !known.contains(id.as_str()) && !self.inflight.contains(*id)).cloned().collect();
        for id in strays {
            self.inflight.insert(id.clone());
            actions.push(Action::Remove { id });
        }
        actions
    }

    /// The probes due: for running tasks' running containers with a
    /// healthcheck, nothing of theirs in flight and no stop under way, the
    /// most overdue first, up to [`PROBES_INFLIGHT_MAX`] in flight.
    fn plan_probes(&mut self, mine: &[&Task], now_ms: u64, actions: &mut Vec<Action>) {
        let mut due: Vec<(u64, String)> = Vec::new();
        for t in mine {
            let live = t.desired_state == TaskState::Running && !t.status.state.is_terminal();
            let running = matches!(self.containers.get(&t.id), Some(ContainerState::Running));
            let busy = self.inflight.contains(&t.id) || self.stopping.contains_key(&t.id) || self.probing.contains(&t.id);
            let Some(h) = self.health.get_mut(&t.id).filter(|h| live && running && !busy && !h.unhealthy) else { continue };
            if h.since_ms.is_none() {
                // Docker's first probe comes one interval after the start.
                h.since_ms = Some(now_ms);
                h.next_ms = now_ms.saturating_add(h.interval_ms());
                // Adopted while the state had it Running: it was healthy (its failures count at once).
                h.healthy |= h.adopted && t.status.state == TaskState::Running;
            }
            if now_ms >= h.next_ms {
                due.push((h.next_ms, t.id.clone()));
            }
        }
        // The most overdue first (a few picks by scanning: no sort code in the binary for it).
        while self.probing.len() < PROBES_INFLIGHT_MAX && !due.is_empty() {
            let first = (0..due.len()).min_by_key(|&i| &due[i]).unwrap_or(0);
            let (_, id) = due.swap_remove(first);
            let h = &self.health[&id];
            let (argv, timeout_ms, generation) = (h.argv.clone(), (h.check.timeout_ns / 1_000_000).max(1), h.generation);
            self.probing.insert(id.clone());
            actions.push(Action::Probe { id, argv, timeout_ms, generation });
        }
    }

    /// Stop or kill a container that still has a process, per its deadline.
    fn plan_stop(&self, id: &str, grace_ms: u64, now_ms: u64) -> Option<Action> {
        let Some(s) = self.stopping.get(id) else {
            return Some(Action::Stop { id: id.to_string(), grace_ms });
        };
        let due = match (s.killed_at_ms, s.kill_at_ms) {
            (Some(killed), _) => killed.saturating_add(KILL_RETRY_MS),
            (None, Some(at)) => at,
            (None, None) => return None, // the stop signal is still on its way
        };
        (now_ms >= due).then(|| Action::Kill { id: id.to_string() })
    }

    /// Offline: remembers when a Running task's container was first seen
    /// without a process (its restart delay runs from then).
    fn note_local_exit(&mut self, t: &Task, now_ms: u64) {
        if !self.offline || t.status.state != TaskState::Running || t.desired_state != TaskState::Running {
            return;
        }
        let stopped = !matches!(self.containers.get(&t.id), Some(ContainerState::Running | ContainerState::Unknown));
        let l = self.local.entry(t.id.clone()).or_default();
        if !stopped {
            l.stopped_seen_ms = None;
        } else if l.stopped_seen_ms.is_none() && !l.restarting {
            l.stopped_seen_ms = Some(now_ms);
        }
    }

    /// Offline, a Running task without a process: `Some(action or wait)`
    /// when the restart policy restarts it in place, `None` when it does
    /// not (then it is planned as usual: reported, or resumed after a
    /// reboot, which is not a failure and not counted).
    fn plan_local_restart(&self, t: &Task, networks: &NodeNetworkView, now_ms: u64) -> Option<Option<Action>> {
        if !self.offline || t.status.state != TaskState::Running || t.desired_state != TaskState::Running {
            return None;
        }
        let observed = self.containers.get(&t.id);
        let l = self.local.get(&t.id).cloned().unwrap_or_default();
        if l.restarting {
            // The old container is gone: start the same task again; still there (a removal
            // failed): remove it again.
            return Some(match observed {
                None if networks_ready(networks, t) => Some(Action::Start { task: Box::new(t.clone()) }),
                Some(ContainerState::Stopped { .. } | ContainerState::Created) => Some(Action::Remove { id: t.id.clone() }),
                _ => None,
            });
        }
        let unhealthy = self.health.get(&t.id).is_some_and(|h| h.unhealthy);
        let exit_code = match observed {
            // Stopped for being unhealthy: a failure, whatever it exited with.
            Some(ContainerState::Stopped { .. }) if unhealthy => None,
            Some(ContainerState::Stopped { exit_code }) => Some(*exit_code),
            // Lost with a reboot while resuming: the resume starts it again, uncounted.
            Some(ContainerState::Created) | None if self.resume && !self.resumed.contains(&t.id) => return None,
            Some(ContainerState::Created) | None => None,
            Some(ContainerState::Running | ContainerState::Unknown) => return None,
        };
        let p = &t.spec.restart;
        let wanted = match p.condition {
            RestartCondition::None => false,
            RestartCondition::OnFailure => exit_code != Some(0),
            RestartCondition::Any => true,
        };
        let window_ms = p.window_ns / 1_000_000;
        let used = if window_ms == 0 {
            // The slot's attempts before this task (the manager's restarts, and in-place ones it was told of).
            t.attempt.saturating_add(l.count)
        } else {
            l.recent_ms.iter().filter(|&&at| now_ms.saturating_sub(at) < window_ms).count() as u64
        };
        if !wanted || (p.max_attempts > 0 && used >= p.max_attempts) {
            return None;
        }
        let seen = l.stopped_seen_ms.unwrap_or(now_ms);
        if now_ms < seen.saturating_add(p.delay_ns / 1_000_000) {
            return Some(None);
        }
        Some(match observed {
            Some(_) => Some(Action::Remove { id: t.id.clone() }),
            None if networks_ready(networks, t) => Some(Action::Start { task: Box::new(t.clone()) }),
            None => None,
        })
    }

    /// Books the in-place restart that `a` (from [`Worker::plan_local_restart`]) begins or finishes.
    fn book_local_restart(&mut self, t: &Task, a: &Action, now_ms: u64) {
        let l = self.local.entry(t.id.clone()).or_default();
        if l.restarting {
            // The start after the removal (or a removal tried again): counted with the first.
            l.restarting = matches!(a, Action::Remove { .. });
            return;
        }
        l.count += 1;
        l.recent_ms.push(now_ms);
        let keep = usize::try_from(t.spec.restart.max_attempts).unwrap_or(usize::MAX).max(1);
        if l.recent_ms.len() > keep {
            l.recent_ms.remove(0);
        }
        l.stopped_seen_ms = None;
        l.restarting = matches!(a, Action::Remove { .. });
    }

    /// Adds the count of in-place restarts to a report that goes to a
    /// manager, and returns the account to send just before it.
    fn add_local_restarts(&self, t: &Task, a: &mut Action, now_ms: u64) -> Option<RestartsInPlace> {
        let (Action::Report { status, .. }, Some(l)) = (a, self.local.get(&t.id)) else { return None };
        if l.count == l.told {
            return None;
        }
        // On the error when there is one: `service ps` shows it. Told once the state shows it.
        let note = restarts_note(l.count);
        let field = if status.err.is_empty() { &mut status.message } else { &mut status.err };
        *field = format!("{field}; {note}");
        let newest = &l.recent_ms[l.recent_ms.len().saturating_sub(IN_PLACE_TIMES_MAX)..];
        let ago_ms = newest.iter().map(|&at| now_ms.saturating_sub(at)).collect();
        Some(RestartsInPlace { task_id: t.id.clone(), session: self.session, count: l.count, ago_ms })
    }

    /// Back in reach of a manager with nothing else to report: tells it of
    /// the in-place restarts made meanwhile.
    fn tell_local_restarts(&self, t: &Task, now: UnixNanos) -> Option<Action> {
        let l = self.local.get(&t.id)?;
        if self.offline || l.count == l.told || t.status.state != TaskState::Running {
            return None;
        }
        let status = TaskStatus::new(TaskState::Running, now, "started");
        Some(Action::Report { task_id: t.id.clone(), status })
    }

    fn plan_task(&self, t: &Task, networks: &NodeNetworkView, now: UnixNanos, now_ms: u64) -> Option<Action> {
        let observed = self.containers.get(&t.id);
        let current = t.status.state;
        let report = |state: TaskState, message: &str, err: String, exit_code: Option<i32>| -> Option<Action> {
            // Pair assertion with the manager's apply: never report backwards.
            current.advance(state).ok()?;
            let mut status = TaskStatus::new(state, now, message);
            status.err = err;
            status.exit_code = exit_code;
            Some(Action::Report { task_id: t.id.clone(), status })
        };
        let stop_wanted = t.desired_state > TaskState::Running;
        if current.is_terminal() {
            return observed.map(|_| Action::Remove { id: t.id.clone() });
        }
        if stop_wanted {
            if current < TaskState::Assigned {
                return None; // the scheduler's, not ours
            }
            // A reason the manager gave for the shutdown (the constraint enforcer's) stays on the task.
            let why = t.status.err.clone();
            return match observed {
                Some(ContainerState::Stopped { exit_code }) => report(TaskState::Shutdown, "shutdown", why, Some(*exit_code)),
                Some(ContainerState::Running | ContainerState::Unknown) => {
                    self.plan_stop(&t.id, t.spec.container.stop_grace_ns / 1_000_000, now_ms)
                }
                // No process to stop (never started, or gone with a reboot).
                Some(ContainerState::Created) | None => report(TaskState::Shutdown, "shutdown", why, None),
            };
        }
        if t.desired_state != TaskState::Running || current < TaskState::Assigned {
            return None;
        }
        if self.resume && current == TaskState::Running && !self.resumed.contains(&t.id) {
            match observed {
                // A reboot took its process: replace the container, then start the same task again.
                Some(ContainerState::Created) => return Some(Action::Remove { id: t.id.clone() }),
                None if networks_ready(networks, t) => return Some(Action::Start { task: Box::new(t.clone()) }),
                None => return None,
                _ => {}
            }
        }
        if let Some(h) = self.health.get(&t.id) {
            match observed {
                // Stopped (or gone) for being unhealthy: failed, whatever it exited with.
                Some(ContainerState::Stopped { exit_code }) if h.unhealthy => {
                    return report(TaskState::Failed, &unhealthy_note(h), ERR_UNHEALTHY.into(), Some(*exit_code));
                }
                Some(ContainerState::Created) if h.unhealthy => {
                    return report(TaskState::Failed, &unhealthy_note(h), ERR_UNHEALTHY.into(), None);
                }
                Some(ContainerState::Running | ContainerState::Unknown) if h.unhealthy => {
                    return self.plan_stop(&t.id, t.spec.container.stop_grace_ns / 1_000_000, now_ms);
                }
                // Running and healthy once: Running; not yet: Starting (never backwards).
                Some(ContainerState::Running) if current < TaskState::Running => {
                    return match h.healthy {
                        true => report(TaskState::Running, "started", String::new(), None),
                        false if current < TaskState::Starting => report(TaskState::Starting, "starting", String::new(), None),
                        false => None,
                    };
                }
                _ => {}
            }
        }
        match (current, observed) {
            (_, Some(ContainerState::Stopped { exit_code: 0 })) => report(TaskState::Complete, "finished", String::new(), Some(0)),
            (_, Some(ContainerState::Stopped { exit_code })) => {
                report(TaskState::Failed, "started", format!("task: non-zero exit ({exit_code})"), Some(*exit_code))
            }
            // A container without a process: a reboot, a containerd restart that lost the task, a killed
            // shim, or a task deleted by hand. It stopped; the restart policy decides what follows.
            (TaskState::Running, Some(ContainerState::Created)) => {
                report(TaskState::Failed, "container process gone", "task: container process is gone".into(), None)
            }
            (TaskState::Running, Some(_)) => None,
            (TaskState::Running, None) => {
                report(TaskState::Failed, "container vanished", "task: container is gone (was the runtime restarted?)".into(), None)
            }
            // Not yet running but a container exists: adopt it (the daemon died mid-start).
            (_, Some(ContainerState::Running)) => report(TaskState::Running, "started", String::new(), None),
            (_, Some(_)) => Some(Action::Remove { id: t.id.clone() }),
            // A task on an overlay network starts once the network is programmed here (this
            // node's own address on it allocated: one leader pass after the task landed).
            (_, None) if !networks_ready(networks, t) => None,
            (_, None) => Some(Action::Start { task: Box::new((*t).clone()) }),
        }
    }
}

/// The status message of a task failed for being unhealthy: its last probe's output.
fn unhealthy_note(h: &Health) -> String {
    format!("unhealthy after {} failed health checks: {}", h.failures, h.last_failure)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate_chars(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::types::{Service, ServiceSpec};

    fn state_with(desired: TaskState, status: TaskState) -> (Assignments, Task) {
        let spec = ServiceSpec::new("web", "busybox");
        let svc = Service {
            id: "s".into(),
            meta: Default::default(),
            spec: spec.clone(),
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        };
        let t = Task {
            id: "t1".into(),
            meta: Default::default(),
            service_id: "s".into(),
            slot: 1,
            node_id: "me".into(),
            spec: spec.task,
            service_version: 1,
            desired_state: desired,
            status: TaskStatus::new(status, 1, "x"),
            not_before: 0,
            attempt: 0,
            networks: Vec::new(),
        };
        (Assignments::new("me", [t.clone()], [svc]), t)
    }

    fn synced() -> Worker {
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, vec![]);
        w
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Report { status, .. } => format!("report {} {}", status.state, status.err),
                Action::Start { task } => format!("start {}", task.id),
                Action::Stop { id, grace_ms } => format!("stop {id} {grace_ms}"),
                Action::Kill { id } => format!("kill {id}"),
                Action::Remove { id } => format!("remove {id}"),
                Action::RestartsInPlace(r) => format!("restarts in place {} {} {:?}", r.task_id, r.count, r.ago_ms),
                Action::Probe { id, argv, timeout_ms, .. } => format!("probe {id} {} {timeout_ms}", argv.join(" ")),
            })
            .collect()
    }

    /// A CMD-SHELL check every second, 5 s timeout.
    fn check(retries: u64, start_period_ms: u64) -> HealthConfig {
        HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f /ok".into()],
            interval_ns: 1_000_000_000,
            timeout_ns: 5_000_000_000,
            start_period_ns: start_period_ms * 1_000_000,
            retries,
        }
    }

    fn probed(code: Option<i64>) -> Result<Probed, RuntimeError> {
        Ok(Probed { exit_code: code, output: b"no /ok\n".to_vec() })
    }

    /// The generation of the probe `actions` holds for `id`.
    fn probe_of(actions: &[Action], id: &str) -> u64 {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Probe { id: i, generation, .. } if i == id => Some(*generation),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no probe of {id} in {actions:?}"))
    }

    /// A started task with a healthcheck is Starting; probes begin one
    /// interval later, one at a time; the first success makes it Running.
    #[test]
    fn a_task_with_a_healthcheck_is_starting_until_a_probe_succeeds() {
        let (st, t) = state_with(TaskState::Running, TaskState::Assigned);
        let mut w = synced();
        assert_eq!(kinds(&w.plan(&st, 5, 0)), vec!["start t1"]);
        let status = w.handle_started(&t, Ok(Some(check(3, 0))), 6);
        assert_eq!((status.state, status.message.as_str()), (TaskState::Starting, "starting"));
        let (st, _) = state_with(TaskState::Running, TaskState::Starting);
        assert!(w.plan(&st, 7, 1_000).is_empty(), "the first probe comes one interval after the start");
        assert!(w.plan(&st, 7, 1_999).is_empty());
        let a = w.plan(&st, 7, 2_000);
        assert_eq!(kinds(&a), vec!["probe t1 /bin/sh -c test -f /ok 5000"]);
        assert!(w.plan(&st, 7, 9_000).is_empty(), "one probe per task in flight");
        // A failure within retries: still Starting, probed again an interval after the result.
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 2_100));
        assert!(w.plan(&st, 8, 3_099).is_empty());
        let a = w.plan(&st, 8, 3_100);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(0)), 3_200));
        let r = w.plan(&st, 9, 3_300);
        assert_eq!(kinds(&r), vec!["report Running "]);
        let Action::Report { status, .. } = &r[0] else { unreachable!() };
        assert_eq!(status.message, "started");
        // Running: probed on, nothing to report while healthy.
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        assert!(w.plan(&st, 9, 4_199).is_empty());
        assert_eq!(kinds(&w.plan(&st, 9, 4_200)).len(), 1);
        // No healthcheck: Running at once, never probed.
        let mut w = synced();
        w.plan(&st, 5, 0);
        assert_eq!(w.handle_started(&t, Ok(None), 6).state, TaskState::Running);
        assert!(w.plan(&st, 7, 100_000).is_empty());
    }

    /// `retries` failures in a row: the container is stopped with its grace
    /// period and the task reported Failed with Swarm's error, even when the
    /// process exits 0 on the stop signal; no probe meanwhile.
    #[test]
    fn an_unhealthy_container_is_stopped_and_its_task_failed() {
        let (st, t) = state_with(TaskState::Running, TaskState::Running);
        let mut w = synced();
        w.inflight.insert("t1".into());
        w.handle_started(&t, Ok(Some(check(2, 0))), 6);
        w.plan(&st, 7, 0);
        let a = w.plan(&st, 7, 1_000);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 1_010), "one failure of two");
        // containerd out of reach: no verdict on the container, not counted.
        let a = w.plan(&st, 7, 2_010);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), Err(RuntimeError::Unavailable("containerd is down".into())), 2_010));
        assert_eq!(w.health["t1"].failures, 1);
        let a = w.plan(&st, 7, 3_010);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(0)), 3_010));
        assert_eq!(w.health["t1"].failures, 0, "a success resets the count");
        // An exec the runtime refused counts, as Docker's; so does a timeout.
        let a = w.plan(&st, 7, 4_010);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), Err(RuntimeError::Other("exec: no such file".into())), 4_010));
        let a = w.plan(&st, 7, 5_010);
        assert!(w.handle_probed("t1", probe_of(&a, "t1"), probed(None), 5_020), "two in a row");
        assert_eq!(w.probe_failure("t1"), Some("timed out after 5000 ms"));
        assert_eq!(kinds(&w.plan(&st, 8, 5_030)), vec!["stop t1 10000"]);
        w.handle_signalled("t1", false, Ok(Signalled::Sent), 5_040);
        assert!(w.plan(&st, 8, 9_000).is_empty(), "no probe of a container being stopped");
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 0 });
        let r = w.plan(&st, 9, 9_100);
        let [Action::Report { status, .. }] = &r[..] else { panic!("{r:?}") };
        assert_eq!((status.state, status.err.as_str()), (TaskState::Failed, ERR_UNHEALTHY));
        assert_eq!(status.message, "unhealthy after 2 failed health checks: timed out after 5000 ms");
        assert_eq!(status.exit_code, Some(0));
        // Once the state shows it, the container goes (the orchestrator replaces the task).
        let (failed, _) = state_with(TaskState::Running, TaskState::Failed);
        assert_eq!(kinds(&w.plan(&failed, 10, 9_200)), vec!["remove t1"]);
        w.handle_removed("t1", true);
        assert!(w.health.is_empty(), "forgotten with its container");
    }

    /// Docker's start period: failures in it do not count while the task was
    /// never healthy; a success in it makes it Running; after it they count.
    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let (st, t) = state_with(TaskState::Running, TaskState::Starting);
        let mut w = synced();
        w.handle_started(&t, Ok(Some(check(1, 5_000))), 6);
        w.plan(&st, 7, 0);
        for at in [1_000, 2_000, 3_000, 4_000] {
            let a = w.plan(&st, 7, at);
            assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), at), "at {at} ms: in the start period");
        }
        let a = w.plan(&st, 7, 5_000);
        assert!(w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 5_000), "past it, retries 1");
        // A success in the start period: Running, and later failures count at once.
        let mut w = synced();
        w.handle_started(&t, Ok(Some(check(2, 60_000))), 6);
        w.plan(&st, 7, 0);
        let a = w.plan(&st, 7, 1_000);
        w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(0)), 1_000);
        assert_eq!(kinds(&w.plan(&st, 8, 1_001)), vec!["report Running "]);
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        let a = w.plan(&st, 8, 2_000);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 2_000));
        let a = w.plan(&st, 8, 3_000);
        assert!(w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 3_000), "healthy once: the start period is over");
    }

    /// Probes are bounded node-wide, the most overdue first; a result for
    /// an earlier start of the container, or for one being stopped, is
    /// ignored; a task with a runtime action in flight is not probed.
    #[test]
    fn probes_are_bounded_and_stale_results_ignored() {
        let (mut st, t) = state_with(TaskState::Running, TaskState::Running);
        let mut w = synced();
        for i in 0..6 {
            let mut x = t.clone();
            x.id = format!("t{i}");
            st.tasks.insert(x.id.clone(), x.clone());
            w.handle_started(&x, Ok(Some(check(1, 0))), 6);
        }
        w.plan(&st, 7, 0);
        let a = w.plan(&st, 7, 1_000);
        assert_eq!(kinds(&a).iter().map(|k| &k[..8]).collect::<Vec<_>>(), ["probe t0", "probe t1", "probe t2", "probe t3"]);
        assert_eq!(a.len(), PROBES_INFLIGHT_MAX);
        assert!(w.plan(&st, 7, 1_001).is_empty(), "every slot taken");
        // t0 restarted meanwhile: the old probe's result is ignored (it would make it unhealthy).
        let mut t0 = t.clone();
        t0.id = "t0".into();
        w.handle_started(&t0, Ok(Some(check(1, 0))), 6);
        assert!(!w.handle_probed("t0", probe_of(&a, "t0"), probed(Some(1)), 1_002), "an earlier start's probe");
        assert_eq!(w.health["t0"].failures, 0);
        // One slot free: the most overdue task not yet probed goes (t0's new start is not due).
        assert_eq!(kinds(&w.plan(&st, 7, 1_003)), vec!["probe t4 /bin/sh -c test -f /ok 5000"]);
        // A probe that finds its container being stopped is ignored; one that does not counts.
        w.stopping.insert("t1".into(), Stopping { grace_ms: 1, kill_at_ms: None, killed_at_ms: None });
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 1_004));
        assert_eq!(w.health["t1"].failures, 0);
        assert!(w.handle_probed("t2", probe_of(&a, "t2"), probed(Some(1)), 1_004), "retries 1");
        // A task with a runtime action in flight is not probed.
        w.stopping.clear();
        w.inflight.insert("t3".into());
        w.handle_probed("t3", probe_of(&a, "t3"), probed(Some(0)), 1_005);
        let later = w.plan(&st, 7, 10_000);
        assert!(later.iter().all(|a| !matches!(a, Action::Probe { id, .. } if id == "t3")), "{later:?}");
        assert!(later.iter().any(|a| matches!(a, Action::Probe { id, .. } if id == "t5")), "{later:?}");
    }

    /// After a daemon restart the check comes back from the container's
    /// label: a task the state has Running stays Running and its failures
    /// count at once; one the daemon died starting is Starting, not Running.
    #[test]
    fn adopted_containers_keep_their_checks_and_states_never_go_back() {
        let observed = || vec![Observed { id: "t1".into(), state: ContainerState::Running, pid: None, health: Some(check(1, 60_000)) }];
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, observed());
        assert!(w.plan(&st, 5, 0).is_empty(), "Running stays Running: nothing to report");
        let a = w.plan(&st, 5, 1_000);
        assert!(w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 1_000), "healthy before: no start period");
        assert_eq!(kinds(&w.plan(&st, 6, 1_001)), vec!["stop t1 10000"]);
        // Relisting keeps what the probes found.
        let e = w.list_epoch();
        w.handle_list(e, observed());
        assert!(w.health["t1"].unhealthy);
        // The daemon died while the task was preparing: Starting, then Running once healthy.
        let (st, _) = state_with(TaskState::Running, TaskState::Preparing);
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, observed());
        assert_eq!(kinds(&w.plan(&st, 5, 0)), vec!["report Starting "]);
        let (st, _) = state_with(TaskState::Running, TaskState::Starting);
        let a = w.plan(&st, 5, 1_000);
        assert!(!w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 1_000), "its start period, from the adoption");
        let a = w.plan(&st, 5, 2_000);
        w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(0)), 2_000);
        assert_eq!(kinds(&w.plan(&st, 6, 2_001)), vec!["report Running "]);
        // Restarted in place while the state has it Running: not reported Starting.
        let (st, t) = state_with(TaskState::Running, TaskState::Running);
        let mut w = synced();
        assert_eq!(w.handle_started(&t, Ok(Some(check(1, 0))), 6).state, TaskState::Starting, "the daemon drops it: backwards");
        assert!(w.plan(&st, 7, 0).is_empty());
    }

    /// Offline, an unhealthy task is a failure for the restart policy: the
    /// same task restarted in place (even when it exited 0 on the stop
    /// signal), and probed afresh.
    #[test]
    fn offline_an_unhealthy_task_is_restarted_in_place() {
        let (mut st, t) = state_with(TaskState::Running, TaskState::Running);
        st.tasks.get_mut("t1").unwrap().spec.restart.condition = RestartCondition::OnFailure;
        st.tasks.get_mut("t1").unwrap().spec.restart.delay_ns = 0;
        let mut w = synced();
        w.set_offline(true);
        w.handle_started(&t, Ok(Some(check(1, 0))), 6);
        w.plan(&st, 7, 0);
        let a = w.plan(&st, 7, 1_000);
        assert!(w.handle_probed("t1", probe_of(&a, "t1"), probed(Some(1)), 1_000));
        assert_eq!(kinds(&w.plan(&st, 7, 1_001)), vec!["stop t1 10000"]);
        w.handle_signalled("t1", false, Ok(Signalled::Sent), 1_002);
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 0 });
        assert_eq!(kinds(&w.plan(&st, 7, 1_100)), vec!["remove t1"]);
        w.handle_removed("t1", true);
        let started = w.plan(&st, 7, 1_101);
        let Action::Start { task } = &started[0] else { panic!("{started:?}") };
        w.handle_started(task, Ok(Some(check(1, 0))), 8);
        assert_eq!(w.untold_restarts(), 1);
        assert!(!w.health["t1"].unhealthy, "probed afresh");
    }

    #[test]
    fn nothing_before_the_first_listing() {
        let (st, _) = state_with(TaskState::Running, TaskState::Assigned);
        let mut w = Worker::new("me");
        assert!(w.plan(&st, 5, 5).is_empty());
    }

    #[test]
    fn a_task_on_an_overlay_network_starts_once_the_network_is_programmed_here() {
        use shoal_shared::assignments::NetworkView;
        use shoal_shared::types::{Ipv4Net, NetworkAttachment};
        let (mut st, _) = state_with(TaskState::Running, TaskState::Assigned);
        let addr = Ipv4Net::parse("10.0.1.5/24").unwrap();
        st.tasks.get_mut("t1").unwrap().networks = vec![NetworkAttachment { network_id: "n1".into(), addr }];
        let mut w = synced();
        // Not in the view at all, then in it without this node's own address: no start.
        assert!(w.plan(&st, 5, 5).is_empty());
        let view = NetworkView {
            id: "n1".into(),
            name: "web".into(),
            vni: 4097,
            subnet: Ipv4Net::parse("10.0.1.0/24").unwrap(),
            gateway: "10.0.1.1".parse().unwrap(),
            mtu: 0,
            internal: false,
            encrypted: false,
            ingress: false,
            local: None,
            peers: vec![],
            services: vec![],
        };
        st.network.networks.insert("n1".into(), view);
        assert!(w.plan(&st, 6, 6).is_empty());
        st.network.networks.get_mut("n1").unwrap().local = Some(Ipv4Net::parse("10.0.1.2/24").unwrap());
        assert_eq!(kinds(&w.plan(&st, 7, 7)), vec!["start t1"]);
    }

    #[test]
    fn start_run_exit_cycle() {
        let (st, t) = state_with(TaskState::Running, TaskState::Assigned);
        let mut w = synced();
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["start t1"]);
        assert!(w.plan(&st, 5, 5).is_empty(), "one action in flight per task");
        let status = w.handle_started(&t, Ok(None), 6);
        assert_eq!(status.state, TaskState::Running);
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        assert!(w.plan(&st, 7, 7).is_empty());
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 3 });
        assert_eq!(kinds(&w.plan(&st, 8, 8)), vec!["report Failed task: non-zero exit (3)"]);
        let (st, _) = state_with(TaskState::Running, TaskState::Failed);
        assert_eq!(kinds(&w.plan(&st, 9, 9)), vec!["remove t1"]);
        w.handle_removed("t1", true);
        assert!(w.plan(&st, 10, 10).is_empty());
    }

    #[test]
    fn stop_when_desired_shutdown() {
        let (st, _) = state_with(TaskState::Shutdown, TaskState::Running);
        let mut w = synced();
        w.handle_exit(&Exit { id: "other".into(), exit_code: 0 });
        w.containers.insert("t1".into(), ContainerState::Running);
        let a = kinds(&w.plan(&st, 5, 5));
        assert_eq!(a, vec!["stop t1 10000", "remove other"]);
        w.handle_signalled("t1", false, Ok(Signalled::Sent), 5);
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 137 });
        assert_eq!(kinds(&w.plan(&st, 6, 6)), vec!["report Shutdown "]);
    }

    #[test]
    fn shutdown_report_keeps_the_managers_reason() {
        // The constraint enforcer adds its reason to the running task's status.
        let (mut st, _) = state_with(TaskState::Shutdown, TaskState::Running);
        st.tasks.get_mut("t1").expect("t1 assigned").status.err = "assigned node no longer meets constraints".into();
        let mut w = synced();
        w.containers.insert("t1".into(), ContainerState::Running);
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["stop t1 10000"]);
        w.handle_signalled("t1", false, Ok(Signalled::NoProcess { exit_code: Some(137) }), 5);
        assert_eq!(kinds(&w.plan(&st, 6, 6)), vec!["report Shutdown assigned node no longer meets constraints"]);
    }

    #[test]
    fn listing_does_not_erase_newer_events() {
        let mut w = synced();
        let e = w.list_epoch();
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 1 });
        w.handle_list(e, vec![]);
        assert_eq!(w.containers().get("t1"), Some(&ContainerState::Stopped { exit_code: 1 }));
    }

    #[test]
    fn vanished_container_fails_the_task_and_start_errors_classify() {
        let (st, t) = state_with(TaskState::Running, TaskState::Running);
        let mut w = synced();
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["report Failed task: container is gone (was the runtime restarted?)"]);
        let s = w.handle_started(&t, Err(RuntimeError::Image("no such image: x".into())), 6);
        assert_eq!((s.state, s.err.as_str()), (TaskState::Rejected, "no such image: x"));
        let s = w.handle_started(&t, Err(RuntimeError::Start("runc failed".into())), 6);
        assert_eq!(s.state, TaskState::Failed);
    }

    /// A worker plans from assignments that show its own reports only once
    /// the leader has applied them: a failed start must not be retried
    /// meanwhile (it used to be, once per plan, until the report came back).
    #[test]
    fn a_failed_start_is_reported_not_retried_while_the_state_lags() {
        let (st, t) = state_with(TaskState::Running, TaskState::Assigned);
        let mut w = synced();
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["start t1"]);
        let s = w.handle_started(&t, Err(RuntimeError::Start("exec: \"sleep\": not found".into())), 6);
        assert_eq!(s.state, TaskState::Failed);
        let (stale, _) = state_with(TaskState::Running, TaskState::Preparing);
        assert_eq!(kinds(&w.plan(&stale, 7, 7)), vec!["report Failed exec: \"sleep\": not found"], "reported again, not started again");
        assert_eq!(kinds(&w.plan(&stale, 8, 8)), vec!["report Failed exec: \"sleep\": not found"], "until the state shows it");
        let (done, _) = state_with(TaskState::Running, TaskState::Failed);
        assert!(w.plan(&done, 9, 9).is_empty());
        assert!(w.start_failed.is_empty(), "forgotten once the state shows it");
    }

    #[test]
    fn never_reports_backwards() {
        // A stale container view must not drag a finished task back to Running.
        let (st, _) = state_with(TaskState::Running, TaskState::Complete);
        let mut w = synced();
        w.containers.insert("t1".into(), ContainerState::Running);
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["remove t1"]);
    }

    /// After a power cut containerd still has the container (its root
    /// survives) but no task: the task stopped, whatever the state says.
    #[test]
    fn resuming_starts_a_running_task_again_in_place_and_global_services_first() {
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        let mut w = Worker::new("me");
        w.set_resume(true);
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Created, pid: None, health: None }]);
        // The container lost its process with the reboot: replaced, then the same task started.
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["remove t1"]);
        assert!(w.plan(&st, 5, 5).is_empty(), "one action in flight per task");
        w.handle_removed("t1", true);
        let started = w.plan(&st, 6, 6);
        assert_eq!(kinds(&started), vec!["start t1"]);
        let Action::Start { task } = &started[0] else { unreachable!() };
        let status = w.handle_started(task, Ok(None), 7);
        assert_eq!(status.state, TaskState::Running);
        assert!(w.plan(&st, 8, 8).is_empty());
        // Lost again while resuming: not resumed a second time (offline, the policy decides).
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Created, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 8, 8)), vec!["report Failed task: container process is gone"]);
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Running, pid: None, health: None }]);
        // A task that exited is not resumed (the restart policy's, reported as before).
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Stopped { exit_code: 3 }, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 9, 9)), vec!["report Failed task: non-zero exit (3)"]);
        // Not resuming: a container without a process is a failed task, as before.
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Created, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["report Failed task: container process is gone"]);
        // Tasks of global services are planned first.
        let (mut st, t) = state_with(TaskState::Running, TaskState::Running);
        let mut agent = st.services["s"].clone();
        agent.id = "g".into();
        agent.spec.mode = ServiceMode::Global;
        st.services.insert("g".into(), agent);
        for (id, svc) in [("a1", "s"), ("z9", "g")] {
            let mut x = t.clone();
            x.id = id.into();
            x.service_id = svc.into();
            st.tasks.insert(id.into(), x);
        }
        let mut w = synced();
        w.set_resume(true);
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["start z9", "start a1", "start t1"]);
    }

    #[test]
    fn offline_the_restart_policy_restarts_a_task_in_place_and_the_count_is_told() {
        let (mut st, _) = state_with(TaskState::Running, TaskState::Running);
        let t = st.tasks.get_mut("t1").unwrap();
        t.spec.restart.max_attempts = 2;
        t.spec.restart.delay_ns = 1_000_000_000;
        let crash = |w: &mut Worker| w.handle_exit(&Exit { id: "t1".into(), exit_code: 1 });
        let mut w = synced();
        w.set_session(77);
        w.set_offline(true);
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Running, pid: None, health: None }]);
        assert!(w.plan(&st, 1, 0).is_empty());
        for (attempt, at) in [(1u64, 10_000u64), (2, 20_000)] {
            crash(&mut w);
            // The delay runs from the exit.
            assert!(w.plan(&st, 1, at).is_empty(), "attempt {attempt}: restarted before its delay");
            assert_eq!(kinds(&w.plan(&st, 1, at + 999)), Vec::<String>::new());
            assert_eq!(kinds(&w.plan(&st, 1, at + 1_000)), vec!["remove t1"]);
            w.handle_removed("t1", true);
            let started = w.plan(&st, 1, at + 1_001);
            assert_eq!(kinds(&started), vec!["start t1"], "attempt {attempt}: the same task, at once");
            let Action::Start { task } = &started[0] else { unreachable!() };
            w.handle_started(task, Ok(None), 2);
            assert_eq!(w.untold_restarts(), attempt);
        }
        // A removal that failed is tried again, and counted once.
        crash(&mut w);
        w.plan(&st, 1, 30_000);
        let st3 = {
            let mut x = st.clone();
            x.tasks.get_mut("t1").unwrap().spec.restart.max_attempts = 3;
            x
        };
        assert_eq!(kinds(&w.plan(&st3, 1, 31_000)), vec!["remove t1"]);
        w.handle_removed("t1", false);
        assert_eq!(kinds(&w.plan(&st3, 1, 31_001)), vec!["remove t1"]);
        w.handle_removed("t1", true);
        let started = w.plan(&st3, 1, 31_002);
        let Action::Start { task } = &started[0] else { panic!("{started:?}") };
        w.handle_started(task, Ok(None), 2);
        assert_eq!(w.untold_restarts(), 3);
        // Past max attempts: reported as before, with what was done meanwhile, in words and
        // as an account just before (the count and how long ago each restart was made).
        crash(&mut w);
        let r = w.plan(&st3, 3, 40_000);
        let [Action::RestartsInPlace(account), Action::Report { status, .. }] = &r[..] else { panic!("{r:?}") };
        assert_eq!(status.state, TaskState::Failed);
        assert_eq!(status.err, "task: non-zero exit (1); restarted in place 3 times with no manager in reach");
        assert_eq!(account, &RestartsInPlace { task_id: "t1".into(), session: 77, count: 3, ago_ms: vec![29_000, 19_000, 9_000] });
        // Said again until the state shows it (a report sent while offline is lost).
        assert_eq!(w.untold_restarts(), 3);
        assert_eq!(kinds(&w.plan(&st3, 3, 40_500))[0], "restarts in place t1 3 [29500, 19500, 9500]");
        let mut told = st.clone();
        told.tasks.get_mut("t1").unwrap().status = status.clone();
        w.plan(&told, 4, 41_000);
        assert_eq!(w.untold_restarts(), 0);
        // Condition none: never restarted in place.
        let (mut st, _) = state_with(TaskState::Running, TaskState::Running);
        st.tasks.get_mut("t1").unwrap().spec.restart.condition = RestartCondition::None;
        let mut w = synced();
        w.set_offline(true);
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Stopped { exit_code: 0 }, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 1, 0)), vec!["report Complete "]);
        // Back in reach with a task that kept running: one Running report carries the count.
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        let mut w = synced();
        w.set_offline(true);
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Stopped { exit_code: 2 }, pid: None, health: None }]);
        w.plan(&st, 1, 0);
        assert_eq!(kinds(&w.plan(&st, 1, 5_000)), vec!["remove t1"]);
        w.handle_removed("t1", true);
        let started = w.plan(&st, 1, 5_001);
        let Action::Start { task } = &started[0] else { panic!("{started:?}") };
        w.handle_started(task, Ok(None), 2);
        w.set_offline(false);
        let r = w.plan(&st, 9, 6_000);
        let [Action::RestartsInPlace(account), Action::Report { status, .. }] = &r[..] else { panic!("{r:?}") };
        assert_eq!((account.count, &account.ago_ms[..]), (1, &[1_000][..]));
        assert_eq!(status.state, TaskState::Running);
        assert_eq!(status.message, "started; restarted in place 1 time with no manager in reach");
        let mut told = st.clone();
        told.tasks.get_mut("t1").unwrap().status = status.clone();
        assert!(w.plan(&told, 9, 7_000).is_empty(), "told once the state shows it");
    }

    /// Without a restart window, the slot's attempts before the task (its
    /// `attempt`: the manager's restarts and in-place ones it was told of)
    /// count against max attempts offline too.
    #[test]
    fn offline_the_slots_earlier_attempts_count_against_max_attempts() {
        let (mut st, _) = state_with(TaskState::Running, TaskState::Running);
        let t = st.tasks.get_mut("t1").unwrap();
        t.spec.restart.max_attempts = 3;
        t.spec.restart.delay_ns = 0;
        t.attempt = 2;
        let mut w = synced();
        w.set_offline(true);
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Stopped { exit_code: 1 }, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 1, 0)), vec!["remove t1"], "the third attempt, in place");
        w.handle_removed("t1", true);
        let started = w.plan(&st, 1, 1);
        let Action::Start { task } = &started[0] else { panic!("{started:?}") };
        w.handle_started(task, Ok(None), 2);
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 1 });
        let r = kinds(&w.plan(&st, 3, 10));
        assert_eq!(
            r,
            vec![
                "restarts in place t1 1 [10]",
                "report Failed task: non-zero exit (1); restarted in place 1 time with no manager in reach"
            ]
        );
    }

    #[test]
    fn a_running_task_whose_container_has_no_process_failed() {
        let (st, _) = state_with(TaskState::Running, TaskState::Running);
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Created, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["report Failed task: container process is gone"]);
        // Once the state shows it, the container is removed (the orchestrator replaces the task).
        let (failed, _) = state_with(TaskState::Running, TaskState::Failed);
        assert_eq!(kinds(&w.plan(&failed, 6, 6)), vec!["remove t1"]);
        // The same container with a live process is left alone.
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Running, pid: None, health: None }]);
        assert!(w.plan(&st, 5, 5).is_empty());
    }

    /// A task to shut down whose container lost its process is reported
    /// Shutdown without a runtime call.
    #[test]
    fn a_shutdown_with_no_process_needs_no_signal() {
        let (st, _) = state_with(TaskState::Shutdown, TaskState::Running);
        let mut w = Worker::new("me");
        let e = w.list_epoch();
        w.handle_list(e, vec![Observed { id: "t1".into(), state: ContainerState::Created, pid: None, health: None }]);
        assert_eq!(kinds(&w.plan(&st, 5, 5)), vec!["report Shutdown "]);
    }

    /// The grace period is a deadline: the stop signal goes out at once,
    /// nothing is in flight while the container ignores it, and SIGKILL
    /// follows when the deadline passes (again after KILL_RETRY_MS if no
    /// exit is seen).
    #[test]
    fn grace_is_a_deadline_then_kill() {
        let (st, _) = state_with(TaskState::Shutdown, TaskState::Running);
        let mut w = synced();
        w.containers.insert("t1".into(), ContainerState::Running);
        assert_eq!(kinds(&w.plan(&st, 1, 1_000)), vec!["stop t1 10000"]);
        assert!(w.plan(&st, 1, 1_000).is_empty(), "signal in flight");
        w.handle_signalled("t1", false, Ok(Signalled::Sent), 1_050);
        assert!(w.inflight.is_empty(), "no runtime call is held during the grace");
        assert!(w.plan(&st, 1, 11_049).is_empty(), "still within the grace");
        assert_eq!(kinds(&w.plan(&st, 1, 11_050)), vec!["kill t1"]);
        w.handle_signalled("t1", true, Ok(Signalled::Sent), 11_060);
        assert!(w.plan(&st, 1, 11_070).is_empty());
        assert_eq!(kinds(&w.plan(&st, 1, 11_060 + KILL_RETRY_MS)), vec!["kill t1"], "kill again when no exit came");
        w.handle_signalled("t1", true, Err(RuntimeError::Unavailable("containerd is down".into())), 16_100);
        w.handle_exit(&Exit { id: "t1".into(), exit_code: 137 });
        assert_eq!(kinds(&w.plan(&st, 2, 16_200)), vec!["report Shutdown "]);
        assert!(w.stopping.is_empty(), "deadline dropped once the container exited");
    }
}
