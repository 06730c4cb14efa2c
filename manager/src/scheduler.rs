//! The scheduler: puts unassigned tasks on nodes.
//!
//! A pure function of the state (plus `now` for status timestamps). Filters
//! run in swarmkit's order: ready and active, resources, constraints,
//! platform, max replicas per node. Among the nodes that pass, spread wins:
//! fewest tasks of this service, then fewest tasks overall, then node id (so
//! equal inputs give equal placements).
//!
//! Cost: tasks are placed group by group (same service and spec version).
//! The node-only filters run once per group; the nodes that pass sit in an
//! ordered set keyed by spread rank, so each placement is O(log nodes). A
//! node dropped from a group for resources or max replicas stays dropped for
//! the rest of the pass, which is exact because loads only grow in a pass. A task that fits nowhere goes to
//! `Pending` with an explanation naming each filter that failed, the filter
//! that rejected the most nodes first (ties in filter order, as swarmkit's
//! `Pipeline::Explain`), e.g. `no suitable node (max replicas per node limit
//! exceed; scheduling constraints not satisfied on 1 node)` for 3 full
//! workers and a manager the constraints exclude; it is retried on every pass.
//! A task that was never placed and is now desired `Shutdown` is closed here
//! (status `Shutdown`), since no agent will ever report on it.

use crate::state::State;
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::Op;
use shoal_shared::task::TaskState;
use shoal_shared::types::{Availability, Node, NodeRole, NodeState, Placement, ResourceSet, Task, TaskStatus};
use std::collections::{BTreeMap, BTreeSet};

/// Why a node was filtered out, in filter order (the order of explanations
/// among filters that rejected equally many nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filtered {
    NotReady,
    Resources,
    Constraints,
    Platform,
    MaxReplicas,
}

impl Filtered {
    fn explain(self, nodes: usize) -> String {
        let n = if nodes == 1 { "1 node".to_string() } else { format!("{nodes} nodes") };
        match self {
            Filtered::NotReady => format!("{n} not available for new tasks"),
            Filtered::Resources => format!("insufficient resources on {n}"),
            Filtered::Constraints => format!("scheduling constraints not satisfied on {n}"),
            Filtered::Platform => format!("unsupported platform on {n}"),
            Filtered::MaxReplicas => "max replicas per node limit exceed".to_string(),
        }
    }
}

/// A parsed placement constraint (`node.labels.zone==edge`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub equal: bool,
    pub value: String,
}

/// Errors in constraint expressions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("invalid constraint {0:?}: expected KEY==VALUE or KEY!=VALUE")]
    Syntax(String),
    #[error("invalid constraint key {0:?}: use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY")]
    Key(String),
}

impl Constraint {
    /// Parses one constraint expression.
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        let (key, equal, value) = if let Some((k, v)) = expr.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = expr.split_once("!=") {
            (k, false, v)
        } else {
            return Err(ConstraintError::Syntax(expr.to_string()));
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() || value.is_empty() {
            return Err(ConstraintError::Syntax(expr.to_string()));
        }
        let known = matches!(key, "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch")
            || key.strip_prefix("node.labels.").is_some_and(|l| !l.is_empty())
            || key.strip_prefix("engine.labels.").is_some_and(|l| !l.is_empty());
        if !known {
            return Err(ConstraintError::Key(key.to_string()));
        }
        Ok(Constraint { key: key.to_string(), equal, value: value.to_string() })
    }

    /// Whether `node` satisfies the constraint (values compare case-insensitively, as Swarm's).
    pub fn matches(&self, node: &Node) -> bool {
        let actual: Option<String> = match self.key.as_str() {
            "node.id" => Some(node.id.clone()),
            "node.hostname" => Some(node.description.hostname.clone()),
            "node.role" => Some(match node.role {
                NodeRole::Manager => "manager".into(),
                NodeRole::Worker => "worker".into(),
            }),
            "node.platform.os" => Some(node.description.platform.os.clone()),
            "node.platform.arch" => Some(node.description.platform.architecture.clone()),
            k => {
                if let Some(l) = k.strip_prefix("node.labels.") {
                    node.labels.get(l).cloned()
                } else if let Some(l) = k.strip_prefix("engine.labels.") {
                    node.description.engine_labels.get(l).cloned()
                } else {
                    None
                }
            }
        };
        let same = actual.is_some_and(|a| a.eq_ignore_ascii_case(&self.value));
        same == self.equal
    }
}

/// Node-only filters (no per-task counting): readiness, constraints, platform.
pub fn eligible(node: &Node, placement: &Placement) -> Result<(), Filtered> {
    Compiled::new(placement).check(node)
}

/// A placement with its constraints parsed once.
struct Compiled<'p> {
    placement: &'p Placement,
    /// `None` when a constraint does not parse: then it matches no node
    /// (constraints are validated at creation, so this is old or bad data).
    constraints: Option<Vec<Constraint>>,
}

impl<'p> Compiled<'p> {
    fn new(placement: &'p Placement) -> Compiled<'p> {
        let constraints = placement.constraints.iter().map(|c| Constraint::parse(c).ok()).collect();
        Compiled { placement, constraints }
    }

    fn check(&self, node: &Node) -> Result<(), Filtered> {
        if node.state != NodeState::Ready || node.availability != Availability::Active {
            return Err(Filtered::NotReady);
        }
        match &self.constraints {
            Some(cs) if cs.iter().all(|c| c.matches(node)) => {}
            _ => return Err(Filtered::Constraints),
        }
        let platforms = &self.placement.platforms;
        if !platforms.is_empty() && !platforms.iter().any(|p| p.runs_on(&node.description.platform)) {
            return Err(Filtered::Platform);
        }
        Ok(())
    }
}

/// Per-node bookkeeping during one scheduling pass.
#[derive(Default, Clone)]
struct Load {
    total: u64,
    by_service: BTreeMap<String, u64>,
    reserved: ResourceSet,
}

/// Assigns every unassigned runnable task, or explains why it cannot be.
pub fn schedule(state: &State, now: UnixNanos) -> Vec<Op> {
    let mut load: BTreeMap<&str, Load> = state.nodes.keys().map(|id| (id.as_str(), Load::default())).collect();
    for t in state.tasks.values() {
        if t.node_id.is_empty() || t.status.state.is_terminal() || t.desired_state > TaskState::Running {
            continue;
        }
        if let Some(l) = load.get_mut(t.node_id.as_str()) {
            count(l, t);
        }
    }
    let mut ops = Vec::new();
    let mut unplaced: Vec<&Task> = Vec::new();
    for t in state.tasks.values() {
        if t.node_id.is_empty() && t.status.state <= TaskState::Pending && t.desired_state == TaskState::Shutdown {
            // Never placed, now unwanted (an update or a drain replaced it): no agent will
            // ever report on it, so the scheduler closes it and it becomes history.
            ops.push(Op::SetTaskStatus {
                id: t.id.clone(),
                status: TaskStatus::new(TaskState::Shutdown, now, "task was shut down before it was scheduled"),
            });
            continue;
        }
        if t.status.state > TaskState::Pending || t.desired_state > TaskState::Running {
            continue;
        }
        if t.node_id.is_empty() {
            unplaced.push(t);
            continue;
        }
        // Pre-bound (global) tasks: assign if the node still fits; the
        // orchestrator removes them otherwise.
        if let Some(n) = state.nodes.get(&t.node_id) {
            if eligible(n, &t.spec.placement).is_ok() && fits(n, t, &load[n.id.as_str()]) {
                ops.push(assign(t, &n.id, now));
            }
        }
    }
    unplaced.sort_by(|a, b| (&a.service_id, a.service_version, &a.id).cmp(&(&b.service_id, b.service_version, &b.id)));
    for group in unplaced.chunk_by(|a, b| a.service_id == b.service_id && a.service_version == b.service_version) {
        place_group(state, group, &mut load, now, &mut ops);
    }
    ops
}

/// Places one group of tasks sharing service and spec version.
fn place_group<'a>(state: &'a State, group: &[&Task], load: &mut BTreeMap<&'a str, Load>, now: UnixNanos, ops: &mut Vec<Op>) {
    let Some(first) = group.first() else { return };
    let compiled = Compiled::new(&first.spec.placement);
    let mut rejected: BTreeMap<Filtered, usize> = BTreeMap::new();
    let mut candidates: BTreeSet<(u64, u64, &'a str)> = BTreeSet::new();
    for n in state.nodes.values() {
        match compiled.check(n) {
            Ok(()) => {
                let l = &load[n.id.as_str()];
                candidates.insert((l.by_service.get(&first.service_id).copied().unwrap_or(0), l.total, n.id.as_str()));
            }
            Err(f) => *rejected.entry(f).or_default() += 1,
        }
    }
    let max = first.spec.placement.max_replicas_per_node;
    for t in group {
        let placed = loop {
            let Some(&(mine, total, id)) = candidates.first() else { break None };
            candidates.pop_first();
            let l = &load[id];
            if !fits(&state.nodes[id], t, l) {
                *rejected.entry(Filtered::Resources).or_default() += 1;
                continue;
            }
            if max > 0 && mine >= max {
                *rejected.entry(Filtered::MaxReplicas).or_default() += 1;
                continue;
            }
            // Node ids in `candidates` come from `state.nodes`, whose keys are all in `load`.
            count(load.get_mut(id).expect("candidate node has load"), t);
            candidates.insert((mine + 1, total + 1, id));
            break Some(id);
        };
        match placed {
            Some(id) => ops.push(assign(t, id, now)),
            None => {
                let why = explain(&rejected);
                if t.status.state != TaskState::Pending || t.status.err != why {
                    let mut st = TaskStatus::new(TaskState::Pending, now, "pending task scheduling");
                    st.err = why;
                    ops.push(Op::SetTaskStatus { id: t.id.clone(), status: st });
                }
            }
        }
    }
}

/// Swarm's explanation: most rejections first; the sort is stable, so ties
/// keep filter order (swarmkit sorts its few filters by insertion sort).
fn explain(rejected: &BTreeMap<Filtered, usize>) -> String {
    if rejected.is_empty() {
        return "no suitable node".to_string();
    }
    let mut by_count: Vec<(Filtered, usize)> = rejected.iter().map(|(f, n)| (*f, *n)).collect();
    by_count.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let why: Vec<String> = by_count.iter().map(|(f, n)| f.explain(*n)).collect();
    format!("no suitable node ({})", why.join("; "))
}

fn count(l: &mut Load, t: &Task) {
    l.total += 1;
    *l.by_service.entry(t.service_id.clone()).or_default() += 1;
    l.reserved.nano_cpus += t.spec.resources.reservations.nano_cpus;
    l.reserved.memory_bytes += t.spec.resources.reservations.memory_bytes;
}

fn fits(node: &Node, t: &Task, l: &Load) -> bool {
    let want = t.spec.resources.reservations;
    let have = node.description.resources;
    let cpu_ok = want.nano_cpus == 0 || have.nano_cpus - l.reserved.nano_cpus >= want.nano_cpus;
    let mem_ok = want.memory_bytes == 0 || have.memory_bytes - l.reserved.memory_bytes >= want.memory_bytes;
    cpu_ok && mem_ok
}

fn assign(t: &Task, node_id: &str, now: UnixNanos) -> Op {
    Op::AssignTask {
        id: t.id.clone(),
        node_id: node_id.to_string(),
        status: TaskStatus::new(TaskState::Assigned, now, "scheduler assigned task to node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{node, service, task};
    use shoal_shared::ops::Entry;
    use shoal_shared::platform::Platform;

    fn state(nodes: Vec<Node>, tasks: Vec<Task>) -> State {
        let mut s = State::default();
        let mut ops: Vec<Op> = nodes.into_iter().map(Op::PutNode).collect();
        ops.push(Op::PutService(service("svc", "web")));
        ops.extend(tasks.into_iter().map(Op::CreateTask));
        assert!(s.apply(1, &Entry { at: 1, ops }).rejected.is_empty());
        s
    }

    /// Schedules and returns `task -> node or error`, for table checks.
    fn check(s: &State, expect: &[(&str, &str)]) {
        let ops = schedule(s, 5);
        let mut got: Vec<(String, String)> = ops
            .iter()
            .map(|op| match op {
                Op::AssignTask { id, node_id, .. } => (id.clone(), node_id.clone()),
                Op::SetTaskStatus { id, status } => (id.clone(), status.err.clone()),
                other => panic!("unexpected op {other:?}"),
            })
            .collect();
        got.sort();
        let want: Vec<(String, String)> = expect.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn spreads_over_nodes() {
        let s = state(
            vec![node("a", "linux/amd64"), node("b", "linux/amd64")],
            vec![task("t1", "svc", 1), task("t2", "svc", 2), task("t3", "svc", 3)],
        );
        check(&s, &[("t1", "a"), ("t2", "b"), ("t3", "a")]);
    }

    #[test]
    fn platforms_are_strict_about_variants() {
        let mut t = task("t1", "svc", 1);
        t.spec.placement.platforms = vec![Platform::parse("linux/arm64").unwrap()];
        let s = state(vec![node("a", "linux/amd64"), node("b", "linux/arm/v7"), node("c", "linux/arm64")], vec![t.clone()]);
        check(&s, &[("t1", "c")]);
        let s = state(vec![node("a", "linux/amd64"), node("b", "linux/arm/v7")], vec![t]);
        check(&s, &[("t1", "no suitable node (unsupported platform on 2 nodes)")]);
        let mut t = task("t2", "svc", 1);
        t.spec.placement.platforms = vec![Platform::parse("linux/amd64").unwrap()];
        let s = state(vec![node("x", "linux/386")], vec![t]);
        check(&s, &[("t2", "no suitable node (unsupported platform on 1 node)")]);
    }

    #[test]
    fn explanations_name_each_filter() {
        let mut drained = node("d", "linux/amd64");
        drained.availability = Availability::Drain;
        let mut t = task("t1", "svc", 1);
        t.spec.placement.constraints = vec!["node.labels.zone==edge".into()];
        t.spec.placement.max_replicas_per_node = 1;
        let mut running = task("r1", "svc", 2);
        running.node_id = "e".into();
        running.status = TaskStatus::new(TaskState::Running, 1, "running");
        let mut edge = node("e", "linux/amd64");
        edge.labels.insert("zone".into(), "edge".into());
        let s = state(vec![drained, node("a", "linux/amd64"), edge], vec![t, running]);
        check(&s, &[("t1", "no suitable node (1 node not available for new tasks; scheduling constraints not satisfied on 1 node; max replicas per node limit exceed)")]);
        let s = state(vec![], vec![task("t9", "svc", 1)]);
        check(&s, &[("t9", "no suitable node")]);
    }

    /// The seed's `nginx-swarm` scaled to 7 on a manager and 3 workers with
    /// `--constraint node.role!=manager --replicas-max-per-node 2`: the filter
    /// that rejected more nodes comes first, as in swarmkit.
    #[test]
    fn explanations_list_the_most_rejecting_filter_first() {
        let mut manager = node("m", "linux/amd64");
        manager.role = NodeRole::Manager;
        let mut nodes = vec![manager];
        let mut tasks = Vec::new();
        for (i, w) in ["w1", "w2", "w3"].iter().enumerate() {
            nodes.push(node(w, "linux/amd64"));
            for k in 0..2 {
                let slot = (2 * i + k + 1) as u64;
                let mut t = task(&format!("r{slot}"), "svc", slot);
                t.node_id = w.to_string();
                t.status = TaskStatus::new(TaskState::Running, 1, "running");
                tasks.push(t);
            }
        }
        let mut t7 = task("t7", "svc", 7);
        t7.spec.placement.constraints = vec!["node.role!=manager".into()];
        t7.spec.placement.max_replicas_per_node = 2;
        tasks.push(t7);
        let s = state(nodes, tasks);
        check(&s, &[("t7", "no suitable node (max replicas per node limit exceed; scheduling constraints not satisfied on 1 node)")]);
        // Two nodes on the wrong platform outrank one excluded by constraints.
        let mut t = task("t1", "svc", 1);
        t.spec.placement.constraints = vec!["node.role!=manager".into()];
        t.spec.placement.platforms = vec![shoal_shared::platform::Platform::parse("linux/amd64").unwrap()];
        let mut manager = node("m", "linux/amd64");
        manager.role = NodeRole::Manager;
        let s = state(vec![manager, node("a", "linux/arm64"), node("b", "linux/arm/v7")], vec![t]);
        check(&s, &[("t1", "no suitable node (unsupported platform on 2 nodes; scheduling constraints not satisfied on 1 node)")]);
    }

    #[test]
    fn reservations_count_against_node_resources() {
        let mut a = node("a", "linux/amd64");
        a.description.resources = ResourceSet { nano_cpus: 2_000_000_000, memory_bytes: 1 << 30 };
        let mut t1 = task("t1", "svc", 1);
        t1.spec.resources.reservations.memory_bytes = 700 << 20;
        let mut t2 = t1.clone();
        t2.id = "t2".into();
        t2.slot = 2;
        let s = state(vec![a], vec![t1, t2]);
        check(&s, &[("t1", "a"), ("t2", "no suitable node (insufficient resources on 1 node)")]);
    }

    #[test]
    fn constraints_parse_and_match() {
        assert!(Constraint::parse("node.role!=manager").is_ok());
        assert_eq!(Constraint::parse("node.role=manager"), Err(ConstraintError::Syntax("node.role=manager".into())));
        assert!(matches!(Constraint::parse("node.colour==red"), Err(ConstraintError::Key(_))));
        let n = node("a", "linux/arm64");
        assert!(Constraint::parse("node.platform.arch==arm64").unwrap().matches(&n));
        assert!(Constraint::parse("node.role!=manager").unwrap().matches(&n));
        assert!(!Constraint::parse("node.labels.zone==x").unwrap().matches(&n));
        assert!(Constraint::parse("node.labels.zone!=x").unwrap().matches(&n));
    }
}
