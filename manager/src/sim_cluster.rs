//! A seeded, single-threaded simulation of the manager's decision cores
//! (control, orchestrator, updater, scheduler) with simulated nodes and
//! agents, in the spirit of TigerBeetle's VOPR: one `u64` seed drives user
//! actions (create, scale, update, rollback, remove), node faults (down, up,
//! drain, pause, active), node changes (zone label set or removed, role
//! flipped, memory shrunk or restored) and task crashes, while time advances.
//!
//! After every step it checks global properties; at the end it heals every
//! fault and checks that each service converges. A violation names the seed
//! and the step, so `run(seed, ...)` replays it exactly. Built for tests and
//! with the crate's `sim` feature only (`examples/cluster_sim.rs`).
//!
//! Checked after every step:
//! - no op produced by the cores is rejected by `State::apply` (cores never
//!   propose backwards task states, unknown ids or duplicate names);
//! - every assignment targets a node that passes the node-only filters;
//! - a stop-first service never has two live tasks (wanted, not finished) in
//!   one slot, and no service has more than two;
//! - no runnable replicated task stays on a drained or down node;
//! - no live replicated task stays on a ready, active node that fails its
//!   constraints (the constraint enforcer), and the reservations of the live
//!   tasks on such a node fit its memory;
//! - no node runs more tasks of a service than `max_replicas_per_node`;
//! - no two live tasks on a node publish the same host-mode port.
//!
//! Services randomly get a `spread=node.labels.zone` preference (the nodes
//! start split over two zones plus one unlabelled node), a constraint on the
//! zone label or the role, a memory reservation and a host-mode port of
//! their own; crashing specs leave recent failures behind, so failure
//! ranking runs too.
//!
//! Checked at the end, after healing (nodes up, active, their memory back;
//! labels and roles stay as they are): no running replicated task sits on a
//! node that fails its constraints, and (liveness) every replicated service
//! whose spec does not crash runs `min(replicas, capacity)` tasks over the
//! nodes its constraints allow (a host-mode port allows one task per node),
//! every global one runs one task per such node.

use crate::placement::ValidPlacement;
use crate::scheduler::Filtered;
use crate::state::State;
use crate::{control, orchestrator, scheduler};
use shoal_shared::ops::{Entry, Op};
use shoal_shared::rng::Rng;
use shoal_shared::task::TaskState;
use shoal_shared::types::{
    Availability, Cluster, FailureAction, Meta, Node, NodeDescription, NodeRole, NodeState, Placement, PortConfig, ResourceSet,
    ServiceMode, ServiceSpec, TaskStatus, UpdateOrder, PUBLISH_MODE_HOST,
};
use std::collections::BTreeMap;

/// The environment variable that makes a simulated task crash on start.
const CRASH_ENV: &str = "CRASH=1";
/// Nanoseconds per simulated millisecond.
const MS: u64 = 1_000_000;
/// Rounds of core passes per step before the step must have settled.
const SETTLE_ROUNDS_MAX: usize = 64;
/// The first host-mode port handed out; each service that publishes one gets its own.
const HOST_PORT_FIRST: u32 = 20_000;
/// A node's memory when healthy: more than every service's reservations together,
/// so reservations never limit liveness after healing.
const NODE_MEMORY_BYTES: i64 = 1 << 40;
/// The memory reservation unit of a service that reserves some (1 to 3 units).
const RESERVATION_BYTES: i64 = 256 << 20;
/// The constraints a service may get (besides none).
const CONSTRAINTS: [&str; 3] = ["node.labels.zone==z0", "node.labels.zone!=z1", "node.role==worker"];

/// What a simulation run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub steps: u64,
    pub ops_applied: u64,
    pub violations: Vec<String>,
}

struct Sim {
    state: State,
    rng: Rng,
    now: u64,
    index: u64,
    ops_applied: u64,
    violations: Vec<String>,
    step: u64,
    /// The next host-mode port to hand out.
    next_port: u32,
}

/// Runs one seeded simulation of `steps` random steps over `nodes` nodes.
pub fn run(seed: u64, nodes: usize, steps: u64) -> Outcome {
    run_with_state(seed, nodes, steps).0
}

/// [`run`], also returning a readable dump of the final state (for replays).
pub fn replay(seed: u64, nodes: usize, steps: u64) -> (Outcome, String) {
    let (out, state) = run_with_state(seed, nodes, steps);
    let mut dump = String::new();
    for s in state.services.values() {
        let update = s.update_status.as_ref().map(|u| u.state.as_str()).unwrap_or("-");
        dump += &format!(
            "service {} {:?} max/node {} update {update}\n",
            s.spec.name, s.spec.mode, s.spec.task.placement.max_replicas_per_node
        );
        for t in state.tasks_of(&s.id) {
            let current = if t.spec == s.spec.task { "current" } else { "old" };
            dump += &format!(
                "  slot {} node {:6} desired {:8} status {:9} created {} v{} {current} env {:?}\n",
                t.slot,
                t.node_id,
                t.desired_state.as_str(),
                t.status.state.as_str(),
                t.meta.created_at / MS,
                t.service_version,
                t.spec.container.env
            );
        }
    }
    (out, dump)
}

fn run_with_state(seed: u64, nodes: usize, steps: u64) -> (Outcome, State) {
    let mut sim = Sim {
        state: State::default(),
        rng: Rng::from_seed(seed),
        now: 1_000 * MS,
        index: 0,
        ops_applied: 0,
        violations: Vec::new(),
        step: 0,
        next_port: HOST_PORT_FIRST,
    };
    let mut ops = vec![Op::PutCluster(Cluster { id: "c".into(), name: "sim".into(), ..Default::default() })];
    for i in 0..nodes {
        ops.push(Op::PutNode(node(i)));
    }
    sim.apply("setup", ops);
    for step in 0..steps {
        sim.step = step;
        sim.random_event();
        sim.now += sim.rng.range(100, 3_000) * MS;
        sim.settle();
        sim.check_safety();
        if sim.violations.len() > 8 {
            break;
        }
    }
    sim.heal_and_check_liveness();
    (Outcome { steps, ops_applied: sim.ops_applied, violations: sim.violations }, sim.state)
}

fn node(i: usize) -> Node {
    Node {
        id: format!("node{i}"),
        meta: Meta::default(),
        role: if i == 0 { NodeRole::Manager } else { NodeRole::Worker },
        availability: Availability::Active,
        // Node 0 has no zone: it forms the unlabelled group of spread preferences.
        labels: if i == 0 { Default::default() } else { [("zone".to_string(), format!("z{}", i % 2))].into() },
        description: NodeDescription {
            hostname: format!("host{i}"),
            resources: ResourceSet { nano_cpus: 0, memory_bytes: NODE_MEMORY_BYTES },
            ..Default::default()
        },
        state: NodeState::Ready,
        addr: String::new(),
        manager_addr: String::new(),
        attachments: Vec::new(),
    }
}

impl Sim {
    fn violation(&mut self, what: String) {
        self.violations.push(format!("step {}: {what}", self.step));
    }

    fn apply(&mut self, who: &str, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        self.index += 1;
        self.ops_applied += ops.len() as u64;
        let applied = self.state.apply(self.index, &Entry { at: self.now, ops });
        for (pos, why) in applied.rejected {
            self.violation(format!("{who} proposed a rejected op #{pos}: {why}"));
        }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.rng.range(0, items.len() as u64) as usize].clone())
    }

    fn random_event(&mut self) {
        let services: Vec<String> = self.state.services.keys().cloned().collect();
        let nodes: Vec<String> = self.state.nodes.keys().cloned().collect();
        match self.rng.range(0, 14) {
            0 | 1 => self.create_service(),
            2 => {
                if let Some(s) = self.pick(&services) {
                    let n = self.rng.range(0, 7);
                    if let Ok(ops) = control::scale_service(&self.state, &s, n) {
                        self.apply("scale", ops);
                    }
                }
            }
            3 | 4 => {
                if let Some(s) = self.pick(&services) {
                    let mut spec = self.state.services[&s].spec.clone();
                    let crash = self.rng.chance(1, 3);
                    spec.task.container.env = vec![format!("V={}", self.rng.next_u64() % 100)];
                    if crash {
                        spec.task.container.env.push(CRASH_ENV.into());
                    }
                    if let Ok(ops) = control::update_service(&self.state, &s, spec, self.now) {
                        self.apply("update", ops);
                    }
                }
            }
            5 => {
                if let Some(s) = self.pick(&services) {
                    if let Ok(ops) = control::rollback_service(&self.state, &s, self.now) {
                        self.apply("rollback", ops);
                    }
                }
            }
            6 => {
                if let Some(s) = self.pick(&services) {
                    if let Ok((ops, _)) = control::remove_service(&self.state, &s) {
                        self.apply("remove", ops);
                    }
                }
            }
            7 => {
                if let Some(n) = self.pick(&nodes) {
                    let state = if self.state.nodes[&n].state == NodeState::Ready { NodeState::Down } else { NodeState::Ready };
                    self.apply("node state", vec![Op::SetNodeState { id: n, state }]);
                }
            }
            8 => {
                if let Some(n) = self.pick(&nodes) {
                    let availability = [Availability::Active, Availability::Drain, Availability::Pause][self.rng.range(0, 3) as usize];
                    self.apply("availability", vec![Op::SetNodeAvailability { id: n, availability }]);
                }
            }
            9 => self.relabel_node(&nodes),
            10 => {
                // The node's agent describes itself again, with less memory or all of it.
                if let Some(n) = self.pick(&nodes) {
                    let mut node = self.state.nodes[&n].clone();
                    node.description.resources.memory_bytes =
                        [RESERVATION_BYTES, 3 * RESERVATION_BYTES, NODE_MEMORY_BYTES][self.rng.range(0, 3) as usize];
                    self.apply("describe", vec![Op::PutNode(node)]);
                }
            }
            _ => {
                // A running container dies.
                let running: Vec<String> = self
                    .state
                    .tasks
                    .values()
                    .filter(|t| t.status.state == TaskState::Running && self.node_up(&t.node_id))
                    .map(|t| t.id.clone())
                    .collect();
                if let Some(id) = self.pick(&running) {
                    let mut st = TaskStatus::new(TaskState::Failed, self.now, "crashed");
                    st.err = "task: non-zero exit (1)".into();
                    self.apply("agent", vec![Op::SetTaskStatus { id, status: st }]);
                }
            }
        }
    }

    fn create_service(&mut self) {
        let id = self.rng.object_id();
        let mut spec = ServiceSpec::new(&format!("svc{}", self.rng.next_u64() % 1000), "busybox");
        spec.mode = match self.rng.range(0, 12) {
            0..=2 => ServiceMode::Global,
            3 => ServiceMode::ReplicatedJob { max_concurrent: self.rng.range(0, 4), total_completions: self.rng.range(0, 7) },
            4 => ServiceMode::GlobalJob,
            _ => ServiceMode::Replicated { replicas: self.rng.range(0, 6) },
        };
        if spec.mode.is_job() {
            spec.task.restart.condition = shoal_shared::types::RestartCondition::OnFailure;
        }
        spec.task.placement.max_replicas_per_node = self.rng.range(0, 3);
        spec.task.restart.delay_ns = self.rng.range(0, 3) * 500 * MS;
        for cfg in [&mut spec.update, &mut spec.rollback] {
            cfg.parallelism = self.rng.range(0, 4);
            cfg.delay_ns = self.rng.range(0, 3) * 500 * MS;
            cfg.monitor_ns = self.rng.range(0, 3) * 1_000 * MS;
            cfg.order = if self.rng.chance(1, 2) { UpdateOrder::StopFirst } else { UpdateOrder::StartFirst };
            cfg.failure_action = [FailureAction::Pause, FailureAction::Continue, FailureAction::Rollback][self.rng.range(0, 3) as usize];
        }
        if self.rng.chance(1, 3) {
            spec.task.placement.preferences = vec!["node.labels.zone".into()];
        }
        if self.rng.chance(1, 3) {
            spec.task.placement.constraints = vec![CONSTRAINTS[self.rng.range(0, CONSTRAINTS.len() as u64) as usize].into()];
        }
        if self.rng.chance(1, 3) {
            spec.task.resources.reservations.memory_bytes = self.rng.range(1, 4) as i64 * RESERVATION_BYTES;
        }
        if self.rng.chance(1, 4) {
            // A port of its own, so services never compete for one and liveness stays exact.
            // Stop-first only: a start-first replacement could wait forever for a free node, as in Swarm.
            let port = PortConfig {
                protocol: "tcp".into(),
                target_port: 80,
                published_port: self.next_port,
                publish_mode: PUBLISH_MODE_HOST.into(),
            };
            self.next_port += 1;
            spec.ports = vec![port];
            spec.update.order = UpdateOrder::StopFirst;
            spec.rollback.order = UpdateOrder::StopFirst;
        }
        if let Ok(ops) = control::create_service(&self.state, spec, id) {
            self.apply("create", ops);
        }
    }

    /// `node update --label-add/--label-rm zone` or `--role`: the node's zone changes
    /// or goes, or (one time in four) its role flips.
    fn relabel_node(&mut self, nodes: &[String]) {
        let Some(n) = self.pick(nodes) else { return };
        if self.rng.chance(1, 4) {
            let mut node = self.state.nodes[&n].clone();
            node.role = if node.role == NodeRole::Worker { NodeRole::Manager } else { NodeRole::Worker };
            self.apply("role", vec![Op::PutNode(node)]);
            return;
        }
        let mut labels = self.state.nodes[&n].labels.clone();
        match self.rng.range(0, 3) {
            0 => labels.remove("zone"),
            z => labels.insert("zone".into(), format!("z{}", z - 1)),
        };
        self.apply("labels", vec![Op::SetNodeLabels { id: n, labels }]);
    }

    fn node_up(&self, id: &str) -> bool {
        self.state.nodes.get(id).is_some_and(|n| n.state == NodeState::Ready)
    }

    /// Agents on up nodes: start what they are given, stop what they are told.
    fn agents(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for t in self.state.tasks.values() {
            if t.node_id.is_empty() || !self.node_up(&t.node_id) || t.status.state.is_terminal() || t.status.state < TaskState::Assigned {
                continue;
            }
            let next = if t.desired_state > TaskState::Running {
                let mut st = TaskStatus::new(TaskState::Shutdown, self.now, "shutdown");
                st.exit_code = Some(0);
                Some(st)
            } else if t.desired_state == TaskState::Running
                && t.status.state == TaskState::Running
                && self.state.services.get(&t.service_id).is_some_and(|s| s.spec.mode.is_job())
            {
                // A job's task does its work and exits 0.
                let mut st = TaskStatus::new(TaskState::Complete, self.now, "finished");
                st.exit_code = Some(0);
                Some(st)
            } else if t.desired_state == TaskState::Running && t.status.state < TaskState::Running {
                if t.spec.container.env.iter().any(|e| e == CRASH_ENV) {
                    let mut st = TaskStatus::new(TaskState::Failed, self.now, "started");
                    st.err = "task: non-zero exit (1)".into();
                    Some(st)
                } else {
                    Some(TaskStatus::new(TaskState::Running, self.now, "started"))
                }
            } else {
                None
            };
            if let Some(status) = next {
                ops.push(Op::SetTaskStatus { id: t.id.clone(), status });
            }
        }
        ops
    }

    /// Runs the cores and the agents until nothing more happens (bounded).
    fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            let orch = orchestrator::reconcile(&self.state, self.now, &mut self.rng);
            let sched = if orch.is_empty() { scheduler::schedule(&self.state, self.now) } else { Vec::new() };
            for op in &sched {
                if let Op::AssignTask { id, node_id, .. } = op {
                    let t = &self.state.tasks[id];
                    if let Err(f) = eligible(&self.state.nodes[node_id], &t.spec.placement) {
                        self.violation(format!("task {id} assigned to node {node_id} that fails {f:?}"));
                    }
                }
            }
            let agents = if orch.is_empty() && sched.is_empty() { self.agents() } else { Vec::new() };
            let idle = orch.is_empty() && sched.is_empty() && agents.is_empty();
            self.apply("orchestrator", orch);
            self.apply("scheduler", sched);
            self.apply("agents", agents);
            if idle {
                return;
            }
        }
    }

    fn check_safety(&mut self) {
        let mut found = Vec::new();
        for s in self.state.services.values() {
            let tasks = self.state.tasks_of(&s.id);
            let mut per_slot: BTreeMap<(u64, &str), usize> = BTreeMap::new();
            let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
            // Live: wanted and not finished (a slot may keep its dead task).
            for t in tasks.iter().filter(|t| t.desired_state <= TaskState::Running && !t.status.state.is_terminal()) {
                let key = if t.slot > 0 { (t.slot, "") } else { (0, t.node_id.as_str()) };
                *per_slot.entry(key).or_default() += 1;
                if !t.node_id.is_empty() && !t.status.state.is_terminal() {
                    *per_node.entry(t.node_id.as_str()).or_default() += 1;
                }
                let node = self.state.nodes.get(&t.node_id);
                let evacuated = node.is_some_and(|n| n.availability == Availability::Drain || n.state == NodeState::Down);
                if t.slot > 0 && evacuated && !t.status.state.is_terminal() {
                    found.push(format!("service {} task {} still runnable on drained/down node {}", s.spec.name, t.id, t.node_id));
                }
            }
            // Jobs have no rolling update: one live task per slot.
            let start_first = !s.spec.mode.is_job()
                && (s.spec.update.order == UpdateOrder::StartFirst || s.spec.rollback.order == UpdateOrder::StartFirst);
            let limit = if start_first { 2 } else { 1 };
            if let ServiceMode::ReplicatedJob { max_concurrent, total_completions } = s.spec.mode {
                let live = tasks.iter().filter(|t| t.desired_state <= TaskState::Running && !t.status.state.is_terminal()).count() as u64;
                let most = if max_concurrent == 0 { total_completions } else { max_concurrent.min(total_completions) };
                if live > most {
                    found.push(format!("job {} has {live} live tasks, at most {most} may run at once", s.spec.name));
                }
            }
            if s.spec.mode.is_job() {
                // A slot whose current iteration completed never gets another task.
                let mut slots: BTreeMap<(u64, &str), Vec<&shoal_shared::types::Task>> = BTreeMap::new();
                for t in tasks.iter().filter(|t| t.desired_state <= TaskState::Running) {
                    slots.entry(if t.slot > 0 { (t.slot, "") } else { (0, t.node_id.as_str()) }).or_default().push(t);
                }
                for (key, v) in slots {
                    let done = v.iter().any(|t| t.status.state == TaskState::Complete && t.spec == s.spec.task);
                    if done && v.len() > 1 {
                        found.push(format!("job {} slot {key:?} completed but has {} runnable tasks", s.spec.name, v.len()));
                    }
                }
            }
            for (key, n) in per_slot {
                if n > limit {
                    found.push(format!("service {} slot {key:?} has {n} live tasks (limit {limit})", s.spec.name));
                }
            }
            let max = s.spec.task.placement.max_replicas_per_node;
            // A start-first replacement may briefly add one task on a node.
            let slack = u64::from(start_first);
            for (node, n) in per_node {
                if max > 0 && n > max + slack {
                    found.push(format!("service {} has {n} tasks on {node} (max {max})", s.spec.name));
                }
            }
        }
        self.check_host_ports(&mut found);
        self.check_enforced(&mut found);
        for f in found {
            self.violation(f);
        }
    }

    /// On every ready, active node (the ones the enforcer looks at): no live
    /// replicated task fails its constraints or platforms there, and the
    /// reservations of the live assigned tasks fit the node's memory.
    fn check_enforced(&self, found: &mut Vec<String>) {
        let mut reserved: BTreeMap<&str, i64> = BTreeMap::new();
        for t in self.state.tasks.values() {
            let live = t.desired_state <= TaskState::Running && !t.status.state.is_terminal();
            let Some(node) = self.state.nodes.get(&t.node_id).filter(|n| live && enforced(n)) else { continue };
            if t.slot > 0 {
                if let Err(f) = eligible(node, &t.spec.placement) {
                    found.push(format!("task {} stays on node {} that fails {f:?}", t.id, node.id));
                }
            }
            if t.status.state >= TaskState::Assigned {
                *reserved.entry(node.id.as_str()).or_default() += t.spec.resources.reservations.memory_bytes;
            }
        }
        for (id, sum) in reserved {
            let have = self.state.nodes[id].description.resources.memory_bytes;
            if sum > have {
                found.push(format!("node {id} has {sum} bytes reserved by live tasks, {have} bytes of memory"));
            }
        }
    }

    /// How many nodes pass `placement`'s node-only filters (once healed, all
    /// nodes are ready and active, so this counts the constraints).
    fn matching_nodes(&self, placement: &Placement) -> u64 {
        self.state.nodes.values().filter(|n| eligible(n, placement).is_ok()).count() as u64
    }

    /// No two live tasks (wanted, assigned, not finished) on a node publish the same host-mode port.
    fn check_host_ports(&self, found: &mut Vec<String>) {
        let mut used: BTreeMap<(&str, &str, u32), &str> = BTreeMap::new();
        for t in self.state.tasks.values() {
            let live = t.desired_state <= TaskState::Running && t.status.state >= TaskState::Assigned && !t.status.state.is_terminal();
            let Some(s) = self.state.services.get(&t.service_id).filter(|_| live && !t.node_id.is_empty()) else { continue };
            for p in s.spec.ports.iter().filter(|p| p.publish_mode == PUBLISH_MODE_HOST) {
                if let Some(other) = used.insert((t.node_id.as_str(), p.protocol.as_str(), p.published_port), t.id.as_str()) {
                    found.push(format!("tasks {other} and {} both publish host port {} on {}", t.id, p.published_port, t.node_id));
                }
            }
        }
    }

    fn heal_and_check_liveness(&mut self) {
        self.step = u64::MAX;
        let heal: Vec<Op> = self
            .state
            .nodes
            .keys()
            .flat_map(|id| {
                [
                    Op::SetNodeState { id: id.clone(), state: NodeState::Ready },
                    Op::SetNodeAvailability { id: id.clone(), availability: Availability::Active },
                ]
            })
            .collect();
        self.apply("heal", heal);
        let described: Vec<Op> = self
            .state
            .nodes
            .values()
            .map(|n| {
                let mut n = n.clone();
                n.description.resources.memory_bytes = NODE_MEMORY_BYTES;
                Op::PutNode(n)
            })
            .collect();
        self.apply("heal", described);
        // Let restart delays, update batches and monitors run out.
        for _ in 0..120 {
            self.now += 1_000 * MS;
            self.settle();
        }
        let mut found = Vec::new();
        self.check_enforced(&mut found);
        let running_misfits = self.state.tasks.values().filter(|t| {
            let node = self.state.nodes.get(&t.node_id);
            t.slot > 0 && t.status.state == TaskState::Running && node.is_some_and(|n| eligible(n, &t.spec.placement).is_err())
        });
        for t in running_misfits {
            found.push(format!("task {} still runs on node {} after healing, which fails its constraints", t.id, t.node_id));
        }
        for s in self.state.services.values() {
            let nodes = self.matching_nodes(&s.spec.task.placement);
            if s.spec.task.container.env.iter().any(|e| e == CRASH_ENV) {
                continue;
            }
            let running = self
                .state
                .tasks_of(&s.id)
                .iter()
                .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
                .count() as u64;
            let mut max = s.spec.task.placement.max_replicas_per_node;
            if s.spec.ports.iter().any(|p| p.publish_mode == PUBLISH_MODE_HOST) {
                max = 1;
            }
            if s.spec.mode.is_job() {
                let p = orchestrator::job_progress(&self.state, s).unwrap_or_default();
                let want = match s.spec.mode {
                    _ if nodes == 0 => 0,
                    ServiceMode::ReplicatedJob { total_completions, .. } => total_completions,
                    _ => nodes,
                };
                if p.completed != want || running != 0 {
                    found.push(format!(
                        "job {} completed {} of {want} after healing, {running} still running ({p:?})",
                        s.spec.name, p.completed
                    ));
                }
                continue;
            }
            let want = match s.spec.mode {
                ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => continue,
                ServiceMode::Replicated { .. } if nodes == 0 => 0,
                ServiceMode::Replicated { replicas } if max > 0 => replicas.min(nodes * max),
                ServiceMode::Replicated { replicas } => replicas,
                ServiceMode::Global => nodes,
            };
            if running != want {
                found.push(format!(
                    "service {} runs {running} tasks after healing, wants {want} (update {:?})",
                    s.spec.name, s.update_status
                ));
            }
        }
        for f in found {
            self.violation(f);
        }
    }
}

/// Whether the constraint enforcer looks at the node's tasks (it is up and active).
/// The scheduler's node-only filters for a stored placement. Every spec here
/// went through control, so a placement that does not parse is a violation
/// as well (reported as failing its constraints).
fn eligible(node: &Node, placement: &Placement) -> Result<(), Filtered> {
    let valid = ValidPlacement::parse(placement).map_err(|_| Filtered::Constraints)?;
    scheduler::eligible(node, &valid)
}

fn enforced(n: &Node) -> bool {
    n.state == NodeState::Ready && n.availability == Availability::Active
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_cluster_runs_keep_their_invariants() {
        let mut total_ops = 0;
        for seed in 1..=40 {
            let out = run(seed, 4, 60);
            assert!(out.violations.is_empty(), "seed {seed}: {:#?}", out.violations);
            total_ops += out.ops_applied;
        }
        assert!(total_ops > 5_000, "the runs did real work: {total_ops} ops");
    }

    #[test]
    fn same_seed_same_run() {
        let a = run(42, 3, 40);
        let b = run(42, 3, 40);
        assert_eq!(a.ops_applied, b.ops_applied);
    }
}
