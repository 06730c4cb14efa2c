//! The scheduler: puts unassigned tasks on nodes.
//!
//! A pure function of the state and `now` (status timestamps and the failure
//! window). Filters run in swarmkit's order: ready and active, resources,
//! plugins, constraints, platform, host-mode ports, max replicas per node
//! (the node-only ones, ready, plugins, constraints and platform, run once
//! per group, before the per-task resources). Among the nodes that pass,
//! the ranking is swarmkit's:
//!
//! - placement preferences first: with `spread=DESCRIPTOR` preferences, the
//!   tasks of a group go to the value of the first descriptor (a node label,
//!   say `node.labels.zone`) that has the fewest tasks of the service, nodes
//!   lacking the label forming one more value; within it by the next
//!   descriptor, and so on ([`tree`]). Running tasks of the service count
//!   toward their node's values, eligible node or not;
//! - then nodes where tasks of the service failed (or were rejected) at
//!   least [`FAILURES_TO_RANK_LAST`] times within [`FAILURE_WINDOW_NS`] rank
//!   last, more failures later, but are still used when nothing else fits;
//! - then spread: fewest tasks of this service, then fewest tasks overall,
//!   then node id (so equal inputs give equal placements).
//!
//! The plugin filter (swarmkit's `PluginFilter`) keeps a task off a node
//! whose engine lacks a network driver the task needs ([`plugins_needed`]):
//! `overlay` for each overlay network it attaches to (its own, and `ingress`
//! when its service publishes ingress ports), and `overlay-encrypted` when
//! one of them is encrypted (the node can run the tunnel relay); a task with no network needs
//! nothing (a node puts it on its node-local bridge, or, lacking one, in
//! its own namespace: `bridge` in a node's list is for people to read), nor
//! do `--network host` and `none`. A node that reported no plugins
//! (an older version) is assumed to have them all.
//!
//! The host-port filter keeps a task that publishes a port in host mode off
//! a node where a live task (desired at most running, not finished) already
//! publishes the same port and protocol in host mode; a task's ports are its
//! service's current `EndpointSpec` ports.
//!
//! Cost: tasks are placed group by group (same service and spec version).
//! The node-only filters run once per group; the nodes that pass sit in
//! ordered sets keyed by rank (one per leaf of the preference tree, a single
//! one without preferences), so each placement is O(depth × log nodes). A
//! node dropped from a group for resources, host ports or max replicas stays
//! dropped for the rest of the pass, which is exact because loads only grow
//! in a pass. A task that fits nowhere goes to `Pending` with an explanation
//! naming each filter that failed, the filter that rejected the most nodes
//! first (ties in filter order, as swarmkit's `Pipeline::Explain`), e.g.
//! `no suitable node (max replicas per node limit exceed; scheduling
//! constraints not satisfied on 1 node)` for 3 full workers and a manager the
//! constraints exclude; it is retried on every pass. A pre-bound (global)
//! task whose node is full says so the same way. Placements are parsed once
//! per group into a [`ValidPlacement`]; a task whose stored placement does
//! not parse is never placed and waits `Pending` with the parse error
//! ([`crate::placement`]). A task that was never
//! assigned (placed or pre-bound) and is now desired `Shutdown` is closed
//! here (status `Shutdown`), since no agent will ever report on it.

mod tree;

use crate::placement::ValidPlacement;
use crate::state::State;
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::Op;
use shoal_shared::task::TaskState;
use shoal_shared::types::{Availability, NetworkMode, Node, NodeState, Plugin, ResourceSet, Task, TaskStatus, PUBLISH_MODE_HOST};
use std::collections::BTreeMap;
use tree::Tree;

/// Failures of a service on a node count for this long (swarmkit's `monitorFailures`, 5 minutes).
pub const FAILURE_WINDOW_NS: u64 = 5 * 60 * 1_000_000_000;
/// Recent failures of a service from which a node ranks last for it (swarmkit's `maxFailures`).
pub const FAILURES_TO_RANK_LAST: u64 = 5;

/// Why a node was filtered out, in filter order (the order of explanations
/// among filters that rejected equally many nodes). Not serialized: variants
/// may be inserted in filter order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filtered {
    NotReady,
    Resources,
    Plugins,
    Constraints,
    Platform,
    HostPort,
    MaxReplicas,
}

impl Filtered {
    fn explain(self, nodes: usize) -> String {
        let n = if nodes == 1 { "1 node".to_string() } else { format!("{nodes} nodes") };
        match self {
            Filtered::NotReady => format!("{n} not available for new tasks"),
            Filtered::Resources => format!("insufficient resources on {n}"),
            Filtered::Plugins => format!("missing plugin on {n}"),
            Filtered::Constraints => format!("scheduling constraints not satisfied on {n}"),
            Filtered::Platform => format!("unsupported platform on {n}"),
            Filtered::HostPort => format!("host-mode port already in use on {n}"),
            Filtered::MaxReplicas => "max replicas per node limit exceed".to_string(),
        }
    }
}

/// Node-only filters (no per-task counting): readiness, constraints, platform.
pub fn eligible(node: &Node, placement: &ValidPlacement) -> Result<(), Filtered> {
    available(node)?;
    #[cfg(any(test, feature = "sim"))]
    let ignore = crate::sim_bugs::on(crate::sim_bugs::Bug::IgnoreConstraints);
    #[cfg(not(any(test, feature = "sim")))]
    let ignore = false;
    if !placement.constraints_match(node) && !ignore {
        return Err(Filtered::Constraints);
    }
    let platforms = &placement.placement().platforms;
    if !platforms.is_empty() && !platforms.iter().any(|p| p.runs_on(&node.description.platform)) {
        return Err(Filtered::Platform);
    }
    Ok(())
}

/// The first filter alone: the node is ready and active.
pub fn available(node: &Node) -> Result<(), Filtered> {
    if node.state != NodeState::Ready || node.availability != Availability::Active {
        return Err(Filtered::NotReady);
    }
    Ok(())
}

/// The plugins a task needs on its node: the driver of each network it
/// attaches to (ids from `network::wanted_networks`); nothing without a
/// network (every node runs such tasks, on its bridge or in its own
/// namespace), with `--network host` or `none`.
pub fn plugins_needed(state: &State, t: &Task) -> Vec<Plugin> {
    if t.spec.network_mode() != NetworkMode::Overlay {
        return Vec::new();
    }
    let wanted = crate::network::wanted_networks(state, state.services.get(&t.service_id), t);
    let mut out: Vec<Plugin> = wanted.iter().filter_map(|id| state.networks.get(id)).map(|n| Plugin::network(&n.spec.driver)).collect();
    // An encrypted network also needs the node's tunnel relay (issue #15).
    if wanted.iter().filter_map(|id| state.networks.get(id)).any(|n| n.spec.encrypted) {
        out.push(Plugin::network(shoal_shared::types::DRIVER_OVERLAY_ENCRYPTED));
    }
    out.sort();
    out.dedup();
    out
}

/// The plugin filter: the node's engine has every plugin in `needs`, or
/// reported none (a node of an older version: assumed capable).
pub fn has_plugins(node: &Node, needs: &[Plugin]) -> Result<(), Filtered> {
    let have = &node.description.plugins;
    if have.is_empty() || needs.iter().all(|p| have.contains(p)) {
        return Ok(());
    }
    Err(Filtered::Plugins)
}

/// A host-mode published port: protocol and port number.
type Published<'a> = (&'a str, u32);

/// Per-node bookkeeping during one scheduling pass.
#[derive(Default)]
struct Load<'a> {
    total: u64,
    by_service: BTreeMap<&'a str, u64>,
    reserved: ResourceSet,
    /// Host-mode ports that live tasks on the node publish.
    host_ports: Vec<Published<'a>>,
    /// Recent failures (within [`FAILURE_WINDOW_NS`]) by service.
    failures: BTreeMap<&'a str, u64>,
}

impl Load<'_> {
    /// The first rank key: 0 for a healthy node, else its recent failures of the service.
    fn penalty(&self, service: &str) -> u64 {
        let failures = self.failures.get(service).copied().unwrap_or(0);
        if failures >= FAILURES_TO_RANK_LAST {
            failures
        } else {
            0
        }
    }

    fn ports_free(&self, want: &[Published<'_>]) -> bool {
        !want.iter().any(|(proto, port)| self.host_ports.iter().any(|(p, n)| n == port && p.eq_ignore_ascii_case(proto)))
    }
}

/// What one pass knows besides the state: each node's load, each service's host ports.
struct Pass<'a> {
    load: BTreeMap<&'a str, Load<'a>>,
    /// Host-mode published ports by service id (only services that have some).
    ports: BTreeMap<&'a str, Vec<Published<'a>>>,
}

impl<'a> Pass<'a> {
    fn new(state: &'a State, now: UnixNanos) -> Pass<'a> {
        let mut ports: BTreeMap<&str, Vec<Published<'_>>> = BTreeMap::new();
        for (id, s) in &state.services {
            let host = s.spec.ports.iter().filter(|p| p.publish_mode == PUBLISH_MODE_HOST && p.published_port != 0);
            let host: Vec<Published<'_>> = host.map(|p| (p.protocol.as_str(), p.published_port)).collect();
            if !host.is_empty() {
                ports.insert(id.as_str(), host);
            }
        }
        let mut pass = Pass { load: state.nodes.keys().map(|id| (id.as_str(), Load::default())).collect(), ports };
        let since = now.saturating_sub(FAILURE_WINDOW_NS);
        for t in state.tasks.values() {
            if t.node_id.is_empty() {
                continue;
            }
            let failed = matches!(t.status.state, TaskState::Failed | TaskState::Rejected);
            // A failure stamped after `now` (an earlier leader's clock ran ahead) is not
            // recent: counted, it would rank the node last for as long as the skew.
            if failed && (since..=now).contains(&t.status.timestamp) {
                if let Some(l) = pass.load.get_mut(t.node_id.as_str()) {
                    *l.failures.entry(t.service_id.as_str()).or_default() += 1;
                }
            }
            // A pre-bound task not assigned yet counts once it is, in `place_bound`.
            let unassigned = t.status.state <= TaskState::Pending;
            if unassigned || t.status.state.is_terminal() || t.desired_state > TaskState::Running {
                continue;
            }
            pass.count(&t.node_id, t);
        }
        pass
    }

    fn host_ports(&self, service: &str) -> &[Published<'a>] {
        self.ports.get(service).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Adds a live task to its node's load.
    fn count(&mut self, node_id: &str, t: &'a Task) {
        let ports = self.ports.get(t.service_id.as_str());
        let Some(l) = self.load.get_mut(node_id) else { return };
        l.total += 1;
        *l.by_service.entry(t.service_id.as_str()).or_default() += 1;
        l.reserved.nano_cpus = l.reserved.nano_cpus.saturating_add(t.spec.resources.reservations.nano_cpus);
        l.reserved.memory_bytes = l.reserved.memory_bytes.saturating_add(t.spec.resources.reservations.memory_bytes);
        if let Some(p) = ports {
            l.host_ports.extend_from_slice(p);
        }
    }

    /// The per-task filters for a node that passed the node-only ones, in filter order.
    fn fits(&self, node: &Node, t: &Task, max_replicas: u64) -> Result<(), Filtered> {
        let Some(l) = self.load.get(node.id.as_str()) else { return Err(Filtered::NotReady) };
        if !fits(node, t, l) {
            return Err(Filtered::Resources);
        }
        if !l.ports_free(self.host_ports(&t.service_id)) {
            return Err(Filtered::HostPort);
        }
        let mine = l.by_service.get(t.service_id.as_str()).copied().unwrap_or(0);
        if max_replicas > 0 && mine >= max_replicas {
            return Err(Filtered::MaxReplicas);
        }
        Ok(())
    }
}

/// Assigns every unassigned runnable task, or explains why it cannot be.
pub fn schedule(state: &State, now: UnixNanos) -> Vec<Op> {
    let mut pass = Pass::new(state, now);
    let mut ops = Vec::new();
    let mut unplaced: Vec<&Task> = Vec::new();
    for t in state.tasks.values() {
        if t.status.state <= TaskState::Pending && t.desired_state == TaskState::Shutdown {
            // Never placed (or bound to a node, as a restart is, but never assigned), now
            // unwanted (an update, a drain or the constraint enforcer replaced it): no agent
            // will ever report on it, so the scheduler closes it and it becomes history.
            ops.push(Op::SetTaskStatus {
                id: t.id.clone(),
                status: TaskStatus::new(TaskState::Shutdown, now, "task was shut down before it was scheduled"),
            });
            continue;
        }
        if t.status.state > TaskState::Pending || t.desired_state > TaskState::Running {
            continue;
        }
        // Its network addresses come first (the allocator says why they do not).
        if !crate::network::attached(state, t) {
            continue;
        }
        if t.node_id.is_empty() {
            unplaced.push(t);
            continue;
        }
        place_bound(state, t, &mut pass, now, &mut ops);
    }
    unplaced.sort_by(|a, b| (&a.service_id, a.service_version, &a.id).cmp(&(&b.service_id, b.service_version, &b.id)));
    for group in unplaced.chunk_by(|a, b| a.service_id == b.service_id && a.service_version == b.service_version) {
        place_group(state, group, &mut pass, now, &mut ops);
    }
    ops
}

/// A pre-bound (global) task: assigned if its node still passes every
/// filter. The orchestrator removes it when the node-only filters fail; when
/// the node is full (resources, host ports) it waits `Pending`, saying why.
fn place_bound<'a>(state: &'a State, t: &'a Task, pass: &mut Pass<'a>, now: UnixNanos, ops: &mut Vec<Op>) {
    let Some(n) = state.nodes.get(&t.node_id) else { return };
    let placement = match ValidPlacement::parse(&t.spec.placement) {
        Ok(p) => p,
        Err(e) => return pending_because(t, e.to_string(), now, ops),
    };
    if eligible(n, &placement).is_err() {
        return;
    }
    // A global task stays bound to a node that lacks a plugin: it waits there, saying why.
    if let Err(f) = has_plugins(n, &plugins_needed(state, t)) {
        return pending(t, &BTreeMap::from([(f, 1)]), now, ops);
    }
    // Max replicas is for replicated services: a global one has one task per node anyway.
    match pass.fits(n, t, 0) {
        Ok(()) => {
            pass.count(&n.id, t);
            ops.push(assign(t, &n.id, now));
        }
        Err(f) => pending(t, &BTreeMap::from([(f, 1)]), now, ops),
    }
}

/// Places one group of tasks sharing service and spec version.
fn place_group<'a>(state: &'a State, group: &[&'a Task], pass: &mut Pass<'a>, now: UnixNanos, ops: &mut Vec<Op>) {
    let Some(first) = group.first() else { return };
    let service = first.service_id.as_str();
    let placement = match ValidPlacement::parse(&first.spec.placement) {
        Ok(p) => p,
        Err(e) => {
            for t in group {
                pending_because(t, e.to_string(), now, ops);
            }
            return;
        }
    };
    let needs = plugins_needed(state, first);
    let mut rejected: BTreeMap<Filtered, usize> = BTreeMap::new();
    let mut tree = Tree::new(placement.spreads().len());
    let mut values: Vec<&'a str> = Vec::with_capacity(placement.spreads().len());
    for n in state.nodes.values() {
        let Some(l) = pass.load.get(n.id.as_str()) else { continue };
        let mine = l.by_service.get(service).copied().unwrap_or(0);
        let rank = match available(n).and_then(|()| has_plugins(n, &needs)).and_then(|()| eligible(n, &placement)) {
            Ok(()) => Some((l.penalty(service), mine, l.total, n.id.as_str())),
            Err(f) => {
                *rejected.entry(f).or_default() += 1;
                None
            }
        };
        values.clear();
        // Nodes lacking the attribute share the value "", as swarmkit's.
        values.extend(placement.spreads().iter().map(|s| s.value(n).unwrap_or("")));
        tree.insert(&values, mine, rank);
    }
    tree.seal();
    let max = first.spec.placement.max_replicas_per_node;
    for t in group {
        let placed = loop {
            let Some((penalty, mine, total, id)) = tree.pop() else { break None };
            // Node ids in the tree come from `state.nodes`.
            if let Err(f) = pass.fits(&state.nodes[id], t, max) {
                *rejected.entry(f).or_default() += 1;
                tree.rejected();
                continue;
            }
            pass.count(id, t);
            tree.placed((penalty, mine + 1, total + 1, id));
            break Some(id);
        };
        match placed {
            Some(id) => ops.push(assign(t, id, now)),
            None => pending(t, &rejected, now, ops),
        }
    }
}

/// Marks a task that fits nowhere `Pending` with the reasons, unless it already says so.
fn pending(t: &Task, rejected: &BTreeMap<Filtered, usize>, now: UnixNanos, ops: &mut Vec<Op>) {
    pending_because(t, explain(rejected), now, ops)
}

/// Marks a task `Pending` with `why`, unless it already says so.
fn pending_because(t: &Task, why: String, now: UnixNanos, ops: &mut Vec<Op>) {
    if t.status.state != TaskState::Pending || t.status.err != why {
        let mut st = TaskStatus::new(TaskState::Pending, now, "pending task scheduling");
        st.err = why;
        ops.push(Op::SetTaskStatus { id: t.id.clone(), status: st });
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

fn fits(node: &Node, t: &Task, l: &Load<'_>) -> bool {
    let want = t.spec.resources.reservations;
    let have = node.description.resources;
    // Saturating: a node that reconnects with fewer resources than its tasks already reserve has nothing free.
    let cpu_ok = want.nano_cpus == 0 || have.nano_cpus.saturating_sub(l.reserved.nano_cpus) >= want.nano_cpus;
    let mem_ok = want.memory_bytes == 0 || have.memory_bytes.saturating_sub(l.reserved.memory_bytes) >= want.memory_bytes;
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
    use shoal_shared::types::{
        Ipv4Net, Network, NetworkAttachment, NetworkAttachmentConfig, NetworkSpec, NodeRole, Placement, PortConfig, Service,
    };
    use std::net::Ipv4Addr;

    /// The `now` of every check: one hour in, so failure windows fit before it.
    const NOW: UnixNanos = 3_600_000_000_000;
    const MINUTE_NS: u64 = 60_000_000_000;

    /// Expected `(task, node or error)` pairs.
    type Expect = &'static [(&'static str, &'static str)];

    fn state(nodes: Vec<Node>, tasks: Vec<Task>) -> State {
        state_with(vec![service("svc", "web")], nodes, tasks)
    }

    fn state_with(services: Vec<Service>, nodes: Vec<Node>, tasks: Vec<Task>) -> State {
        let mut s = State::default();
        let mut ops: Vec<Op> = nodes.into_iter().map(Op::PutNode).collect();
        ops.extend(services.into_iter().map(Op::PutService));
        ops.extend(tasks.into_iter().map(Op::CreateTask));
        assert!(s.apply(1, &Entry { at: 1, ops }).rejected.is_empty());
        s
    }

    /// A node with user labels (`zone=a`).
    fn labelled(id: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = node(id, "linux/amd64");
        n.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        n
    }

    /// A task of `service` on `node` in `state` since `at`.
    fn on(id: &str, service: &str, node: &str, state: TaskState, at: UnixNanos) -> Task {
        let mut t = task(id, service, 0);
        t.node_id = node.into();
        t.status = TaskStatus::new(state, at, "observed");
        t
    }

    /// Unplaced tasks `ids` of service `svc` with `placement`.
    fn tasks(ids: &[&str], placement: &Placement) -> Vec<Task> {
        let mut out = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut t = task(id, "svc", i as u64 + 1);
            t.spec.placement = placement.clone();
            out.push(t);
        }
        out
    }

    fn spread(descriptors: &[&str]) -> Placement {
        Placement { preferences: descriptors.iter().map(|d| d.to_string()).collect(), ..Default::default() }
    }

    /// A service publishing `ports` (`(mode, protocol, published)`).
    fn publishing(id: &str, name: &str, ports: &[(&str, &str, u32)]) -> Service {
        let mut s = service(id, name);
        s.spec.ports = ports
            .iter()
            .map(|(mode, proto, port)| PortConfig {
                protocol: proto.to_string(),
                target_port: 80,
                published_port: *port,
                publish_mode: mode.to_string(),
            })
            .collect();
        s
    }

    /// Schedules and returns `task -> node or error`, for table checks.
    fn check(s: &State, expect: &[(&str, &str)]) {
        let ops = schedule(s, NOW);
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
    fn spread_preference_balances_label_values() {
        let nodes = || {
            vec![labelled("a1", &[("zone", "a")]), labelled("a2", &[("zone", "a")]), labelled("b1", &[("zone", "b")]), labelled("c", &[])]
        };
        let ids = ["t1", "t2", "t3", "t4", "t5", "t6"];
        // Zones a and b and the unlabelled node each get a third, whatever their node counts.
        let s = state(nodes(), tasks(&ids, &spread(&["node.labels.zone"])));
        check(&s, &[("t1", "c"), ("t2", "a1"), ("t3", "b1"), ("t4", "c"), ("t5", "a2"), ("t6", "b1")]);
        // Without the preference, nodes share evenly: zone a gets four.
        let s = state(nodes(), tasks(&ids, &Placement::default()));
        check(&s, &[("t1", "a1"), ("t2", "a2"), ("t3", "b1"), ("t4", "c"), ("t5", "a1"), ("t6", "a2")]);
        // A stored descriptor that does not parse (no control of this version accepted it) is
        // not skipped: its tasks wait, saying why (see `placement`).
        let s = state(nodes(), tasks(&ids, &spread(&["node.colour"])));
        let why = "invalid spread descriptor \"node.colour\": use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY";
        check(&s, &ids.map(|t| (t, why)));
    }

    /// The scheduler's input is a `ValidPlacement`, which cannot hold a constraint that
    /// did not parse: a task whose stored placement does not parse (control refuses such
    /// specs, so only another version's data can) is never placed, whether it waits for a
    /// node or is bound to one, and its status says why, once.
    #[test]
    fn an_unparsable_constraint_never_reaches_the_filters() {
        let bad = Placement { constraints: vec!["node.role=manager".into()], ..Default::default() };
        let why = "invalid constraint \"node.role=manager\": expected KEY==VALUE or KEY!=VALUE";
        let mut bound = task("g1", "svc", 0);
        bound.node_id = "a".into();
        bound.spec.placement = bad.clone();
        let mut all = tasks(&["t1", "t2"], &bad);
        all.push(bound);
        let mut s = state(vec![node("a", "linux/amd64")], all);
        check(&s, &[("g1", why), ("t1", why), ("t2", why)]);
        let ops = schedule(&s, NOW);
        s.apply(2, &Entry { at: 2, ops });
        assert!(s.tasks.values().all(|t| t.status.state == TaskState::Pending && t.status.err == why));
        assert_eq!(schedule(&s, NOW), vec![], "already says so");
    }

    #[test]
    fn spread_counts_running_tasks_of_the_service() {
        let nodes = vec![labelled("a1", &[("zone", "a")]), labelled("b1", &[("zone", "b")])];
        let mut all = tasks(&["t1", "t2", "t3"], &spread(&["node.labels.zone"]));
        // Zone a runs two tasks of the service; zone b runs three of another service, which do not count.
        all.push(on("r1", "svc", "a1", TaskState::Running, 1));
        all.push(on("r2", "svc", "a1", TaskState::Running, 1));
        for r in ["o1", "o2", "o3"] {
            all.push(on(r, "other", "b1", TaskState::Running, 1));
        }
        // A finished task of the service on b1 does not count either.
        all.push(on("f1", "svc", "b1", TaskState::Complete, 1));
        let s = state_with(vec![service("svc", "web"), service("other", "db")], nodes, all);
        check(&s, &[("t1", "b1"), ("t2", "b1"), ("t3", "a1")]);
    }

    #[test]
    fn spread_preferences_nest() {
        let nodes = vec![
            labelled("a-hdd", &[("zone", "a")]),
            labelled("a-ssd", &[("zone", "a")]),
            labelled("b-ssd", &[("zone", "b")]),
            node("z", "linux/amd64"),
        ];
        let mut nodes = nodes;
        for n in &mut nodes {
            let disk = if n.id.ends_with("hdd") { "hdd" } else { "ssd" };
            n.description.engine_labels.insert("disk".into(), disk.into());
        }
        // Node z (no zone label) is excluded: its branch never opens.
        let mut p = spread(&["node.labels.zone", "engine.labels.disk"]);
        p.constraints = vec!["node.id!=z".into()];
        let s = state(nodes, tasks(&["t1", "t2", "t3", "t4"], &p));
        check(&s, &[("t1", "a-hdd"), ("t2", "b-ssd"), ("t3", "a-ssd"), ("t4", "b-ssd")]);
    }

    #[test]
    fn spread_moves_on_when_a_value_is_full() {
        let nodes = vec![labelled("a1", &[("zone", "a")]), labelled("b1", &[("zone", "b")]), labelled("b2", &[("zone", "b")])];
        let mut p = spread(&["node.labels.zone"]);
        p.max_replicas_per_node = 1;
        let s = state(nodes, tasks(&["t1", "t2", "t3", "t4"], &p));
        check(&s, &[("t1", "a1"), ("t2", "b1"), ("t3", "b2"), ("t4", "no suitable node (max replicas per node limit exceed)")]);
    }

    #[test]
    fn recent_failures_rank_a_node_last() {
        let recent = NOW - MINUTE_NS;
        let old = NOW - FAILURE_WINDOW_NS - MINUTE_NS;
        let failures = |service: &str, n: u64, state: TaskState, at: UnixNanos| -> Vec<Task> {
            (0..n).map(|i| on(&format!("f{i}"), service, "a", state, at)).collect()
        };
        let cases: Vec<(&str, Vec<Task>, Expect)> = vec![
            ("healthy", vec![], &[("t1", "a"), ("t2", "b")]),
            ("recent failures", failures("svc", 5, TaskState::Failed, recent), &[("t1", "b"), ("t2", "b")]),
            ("recent rejections", failures("svc", 5, TaskState::Rejected, recent), &[("t1", "b"), ("t2", "b")]),
            ("below the threshold", failures("svc", 4, TaskState::Failed, recent), &[("t1", "a"), ("t2", "b")]),
            ("another service", failures("other", 5, TaskState::Failed, recent), &[("t1", "a"), ("t2", "b")]),
            ("old failures", failures("svc", 5, TaskState::Failed, old), &[("t1", "a"), ("t2", "b")]),
            ("stamped months ahead", failures("svc", 5, TaskState::Failed, NOW + 180 * 1_440 * MINUTE_NS), &[("t1", "a"), ("t2", "b")]),
            ("not failures", failures("svc", 5, TaskState::Complete, recent), &[("t1", "a"), ("t2", "b")]),
        ];
        for (case, history, expect) in cases {
            let mut all = tasks(&["t1", "t2"], &Placement::default());
            all.extend(history);
            let s = state_with(
                vec![service("svc", "web"), service("other", "db")],
                vec![node("a", "linux/amd64"), node("b", "linux/amd64")],
                all,
            );
            let ops = schedule(&s, NOW);
            let got: Vec<(&str, &str)> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::AssignTask { id, node_id, .. } => Some((id.as_str(), node_id.as_str())),
                    _ => None,
                })
                .collect();
            assert_eq!(got, expect, "{case}");
        }
        // The failing node still takes tasks when nothing else fits.
        let mut b = node("b", "linux/amd64");
        b.availability = Availability::Drain;
        let mut all = tasks(&["t1"], &Placement::default());
        all.extend(failures("svc", 6, TaskState::Failed, recent));
        let s = state(vec![node("a", "linux/amd64"), b], all);
        check(&s, &[("t1", "a")]);
        // More failures rank later: c (5) before a (6).
        let mut all = tasks(&["t1"], &Placement::default());
        all.extend(failures("svc", 6, TaskState::Failed, recent));
        all.extend((0..5).map(|i| on(&format!("g{i}"), "svc", "c", TaskState::Failed, recent)));
        let s = state(vec![node("a", "linux/amd64"), node("c", "linux/amd64")], all);
        check(&s, &[("t1", "c")]);
    }

    #[test]
    fn host_mode_ports_keep_tasks_apart() {
        let nodes = || vec![node("a", "linux/amd64"), node("b", "linux/amd64")];
        let svc = publishing("svc", "web", &[("host", "tcp", 8080)]);
        let cases: Vec<(&str, Service, TaskState, Expect)> = vec![
            (
                "same port and protocol",
                publishing("other", "db", &[("host", "tcp", 8080)]),
                TaskState::Running,
                &[("t1", "b"), ("t2", "no suitable node (host-mode port already in use on 2 nodes)")],
            ),
            ("other protocol", publishing("other", "db", &[("host", "udp", 8080)]), TaskState::Running, &[("t1", "b"), ("t2", "a")]),
            ("ingress mode", publishing("other", "db", &[("ingress", "tcp", 8080)]), TaskState::Running, &[("t1", "b"), ("t2", "a")]),
            ("other port", publishing("other", "db", &[("host", "tcp", 8081)]), TaskState::Running, &[("t1", "b"), ("t2", "a")]),
            ("finished task", publishing("other", "db", &[("host", "tcp", 8080)]), TaskState::Failed, &[("t1", "a"), ("t2", "b")]),
            (
                "assigned, not yet running",
                publishing("other", "db", &[("host", "TCP", 8080)]),
                TaskState::Assigned,
                &[("t1", "b"), ("t2", "no suitable node (host-mode port already in use on 2 nodes)")],
            ),
        ];
        for (case, other, observed, expect) in cases {
            let mut all = tasks(&["t1", "t2"], &Placement::default());
            all.push(on("o1", "other", "a", observed, 1));
            let s = state_with(vec![svc.clone(), other], nodes(), all);
            let ops = schedule(&s, NOW);
            let got: Vec<(&str, &str)> = ops
                .iter()
                .map(|op| match op {
                    Op::AssignTask { id, node_id, .. } => (id.as_str(), node_id.as_str()),
                    Op::SetTaskStatus { id, status } => (id.as_str(), status.err.as_str()),
                    other => panic!("unexpected op {other:?}"),
                })
                .collect();
            assert_eq!(got, expect, "{case}");
        }
        // A task being shut down frees its port.
        let mut o1 = on("o1", "other", "a", TaskState::Running, 1);
        o1.desired_state = TaskState::Shutdown;
        let mut all = tasks(&["t1"], &Placement::default());
        all.push(o1);
        let s = state_with(vec![svc.clone(), publishing("other", "db", &[("host", "tcp", 8080)])], nodes(), all);
        check(&s, &[("t1", "a")]);
    }

    #[test]
    fn host_port_filter_runs_before_max_replicas() {
        // Among filters that rejected equally many nodes, explanations keep swarmkit's filter order.
        let rejected = BTreeMap::from([(Filtered::MaxReplicas, 1), (Filtered::HostPort, 1), (Filtered::Resources, 1)]);
        assert_eq!(
            explain(&rejected),
            "no suitable node (insufficient resources on 1 node; host-mode port already in use on 1 node; max replicas per node limit exceed)"
        );
        // Otherwise the filter that rejected the most nodes comes first.
        let rejected = BTreeMap::from([(Filtered::MaxReplicas, 1), (Filtered::HostPort, 2), (Filtered::Resources, 1)]);
        assert_eq!(
            explain(&rejected),
            "no suitable node (host-mode port already in use on 2 nodes; insufficient resources on 1 node; max replicas per node limit exceed)"
        );
        // A node that fails both counts for the first: the service's own task holds the port and the one replica allowed.
        let p = Placement { max_replicas_per_node: 1, ..Default::default() };
        let mut all = tasks(&["t1"], &p);
        all.push(on("r1", "svc", "a", TaskState::Running, 1));
        let s = state_with(vec![publishing("svc", "web", &[("host", "tcp", 8080)])], vec![node("a", "linux/amd64")], all);
        check(&s, &[("t1", "no suitable node (host-mode port already in use on 1 node)")]);
    }

    /// A node whose engine reported these network drivers (none: an older node that reported nothing).
    fn with_drivers(id: &str, drivers: &[&str]) -> Node {
        let mut n = node(id, "linux/amd64");
        n.description.plugins = drivers.iter().map(|d| Plugin::network(d)).collect();
        n
    }

    /// Overlay network `id` on 10.`third`.0.0/24, ingress or not.
    fn overlay(id: &str, third: u8, ingress: bool) -> Network {
        let subnet = Ipv4Net::parse(&format!("10.{third}.0.0/24")).unwrap();
        Network {
            id: id.into(),
            meta: Default::default(),
            spec: NetworkSpec { name: id.into(), driver: "overlay".into(), ingress, ..Default::default() },
            vni: 4096 + u32::from(third),
            subnet,
            gateway: Ipv4Addr::new(10, third, 0, 1),
            last_addr: None,
        }
    }

    /// [`state_with`] on overlay networks `net` (10.1.0.0/24) and `ing`ress (10.2.0.0/24).
    fn on_networks(services: Vec<Service>, nodes: Vec<Node>, tasks: Vec<Task>) -> State {
        let mut s = State::default();
        let nets = vec![Op::PutNetwork(overlay("net", 1, false)), Op::PutNetwork(overlay("ing", 2, true))];
        assert!(s.apply(1, &Entry { at: 1, ops: nets }).rejected.is_empty());
        let mut ops: Vec<Op> = nodes.into_iter().map(Op::PutNode).collect();
        ops.extend(services.into_iter().map(Op::PutService));
        ops.extend(tasks.into_iter().map(Op::CreateTask));
        assert!(s.apply(2, &Entry { at: 1, ops }).rejected.is_empty());
        s
    }

    /// Unplaced tasks `ids` of `svc` asking for `spec_networks`, with an
    /// address on each of `attached` (network id, third octet).
    fn networked(ids: &[&str], spec_networks: &[&str], attached: &[(&str, u8)]) -> Vec<Task> {
        let mut out = tasks(ids, &Placement::default());
        for (i, t) in out.iter_mut().enumerate() {
            t.spec.networks =
                spec_networks.iter().map(|n| NetworkAttachmentConfig { target: n.to_string(), aliases: Vec::new() }).collect();
            t.networks = attached
                .iter()
                .map(|(id, third)| NetworkAttachment {
                    network_id: id.to_string(),
                    addr: Ipv4Net::parse(&format!("10.{third}.0.{}/24", i + 2)).unwrap(),
                })
                .collect();
        }
        out
    }

    #[test]
    fn tasks_go_where_their_network_drivers_are() {
        let full = ["bridge", "host", "null", "overlay"];
        // a: no VXLAN; b: nothing but the host's namespace; old: reported nothing (assumed capable).
        let nodes =
            || vec![with_drivers("a", &full[..3]), with_drivers("b", &full[1..3]), with_drivers("c", &full), with_drivers("old", &[])];
        let web = service("svc", "web");
        let ingress = publishing("svc", "web", &[("ingress", "tcp", 8080)]);
        let cases: Vec<(&str, Service, Vec<Task>, Expect)> = vec![
            ("own overlay network", web.clone(), networked(&["t1", "t2"], &["net"], &[("net", 1)]), &[("t1", "c"), ("t2", "old")]),
            ("ingress ports", ingress.clone(), networked(&["t1", "t2"], &[], &[("ing", 2)]), &[("t1", "c"), ("t2", "old")]),
            ("both", ingress, networked(&["t1", "t2"], &["net"], &[("net", 1), ("ing", 2)]), &[("t1", "c"), ("t2", "old")]),
            ("no network", web.clone(), networked(&["t1", "t2"], &[], &[]), &[("t1", "a"), ("t2", "b")]),
            ("--network host", web.clone(), networked(&["t1", "t2"], &["host"], &[]), &[("t1", "a"), ("t2", "b")]),
            ("--network none", web, networked(&["t1", "t2"], &["none"], &[]), &[("t1", "a"), ("t2", "b")]),
        ];
        for (case, svc, all, expect) in cases {
            let s = on_networks(vec![svc], nodes(), all);
            let mut got: Vec<(String, String)> = schedule(&s, NOW)
                .iter()
                .map(|op| match op {
                    Op::AssignTask { id, node_id, .. } => (id.clone(), node_id.clone()),
                    other => panic!("{case}: unexpected op {other:?}"),
                })
                .collect();
            got.sort();
            let want: Vec<(String, String)> = expect.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn tasks_on_encrypted_networks_go_only_where_the_tunnel_relay_runs() {
        let overlay_only = ["bridge", "host", "null", "overlay"];
        let with_relay = ["bridge", "host", "null", "overlay", "overlay-encrypted"];
        let mut s =
            on_networks(vec![service("svc", "web")], vec![with_drivers("a", &overlay_only), with_drivers("b", &with_relay)], vec![]);
        let mut secret = overlay("net", 1, false);
        secret.spec.encrypted = true;
        assert!(s.apply(3, &Entry { at: 1, ops: vec![Op::PutNetwork(secret)] }).rejected.is_empty());
        assert!(s
            .apply(4, &Entry { at: 1, ops: networked(&["t1", "t2"], &["net"], &[("net", 1)]).into_iter().map(Op::CreateTask).collect() })
            .rejected
            .is_empty());
        check(&s, &[("t1", "b"), ("t2", "b")]);
        // With no node able to encrypt, they wait and say why.
        let mut s = on_networks(vec![service("svc", "web")], vec![with_drivers("a", &overlay_only)], vec![]);
        let mut secret = overlay("net", 1, false);
        secret.spec.encrypted = true;
        assert!(s.apply(3, &Entry { at: 1, ops: vec![Op::PutNetwork(secret)] }).rejected.is_empty());
        assert!(s
            .apply(4, &Entry { at: 1, ops: networked(&["t1"], &["net"], &[("net", 1)]).into_iter().map(Op::CreateTask).collect() })
            .rejected
            .is_empty());
        check(&s, &[("t1", "no suitable node (missing plugin on 1 node)")]);
    }

    #[test]
    fn a_task_no_node_has_the_driver_for_waits_saying_so() {
        let full = ["bridge", "host", "null", "overlay"];
        let mut drained = with_drivers("c", &full);
        drained.availability = Availability::Drain;
        let nodes = vec![with_drivers("a", &full[..3]), with_drivers("b", &full[1..3]), drained];
        let mut all = networked(&["t1"], &["net"], &[("net", 1)]);
        // A global task bound to a node without VXLAN waits there.
        let mut g1 = networked(&["g1"], &["net"], &[("net", 1)]).remove(0);
        g1.id = "g1".into();
        g1.networks[0].addr = Ipv4Net::parse("10.1.0.9/24").unwrap();
        g1.node_id = "a".into();
        all.push(g1);
        let s = on_networks(vec![service("svc", "web")], nodes, all);
        check(
            &s,
            &[
                ("g1", "no suitable node (missing plugin on 1 node)"),
                ("t1", "no suitable node (missing plugin on 2 nodes; 1 node not available for new tasks)"),
            ],
        );
        // Without a network a task needs no driver: a node with no bridge runs it too.
        let s = state(vec![with_drivers("b", &full[1..3])], tasks(&["t1"], &Placement::default()));
        check(&s, &[("t1", "b")]);
        // Ties keep swarmkit's filter order: resources, plugins, constraints.
        let rejected = BTreeMap::from([(Filtered::Constraints, 1), (Filtered::Plugins, 1), (Filtered::Resources, 1)]);
        assert_eq!(
            explain(&rejected),
            "no suitable node (insufficient resources on 1 node; missing plugin on 1 node; scheduling constraints not satisfied on 1 node)"
        );
    }

    #[test]
    fn never_assigned_tasks_desired_shutdown_are_closed() {
        // Unplaced, and bound to a node but not assigned (a restart): no agent has them.
        let mut unplaced = task("t1", "svc", 1);
        unplaced.desired_state = TaskState::Shutdown;
        let mut bound = task("t2", "svc", 2);
        bound.node_id = "a".into();
        bound.desired_state = TaskState::Shutdown;
        let mut assigned = on("t3", "svc", "a", TaskState::Assigned, 1);
        assigned.desired_state = TaskState::Shutdown;
        let s = state(vec![node("a", "linux/amd64")], vec![unplaced, bound, assigned]);
        let closed = "task was shut down before it was scheduled";
        check(&s, &[("t1", ""), ("t2", "")]);
        assert!(schedule(&s, NOW).iter().all(|op| matches!(op, Op::SetTaskStatus { status, .. } if status.message == closed)));
    }

    #[test]
    fn pre_bound_tasks_wait_for_their_node() {
        let svc = publishing("svc", "web", &[("host", "tcp", 8080)]);
        let other = publishing("other", "db", &[("host", "tcp", 8080)]);
        let mut g1 = task("g1", "svc", 0);
        g1.node_id = "a".into();
        let mut g2 = task("g2", "svc", 0);
        g2.node_id = "b".into();
        let all = vec![g1, g2, on("o1", "other", "a", TaskState::Running, 1)];
        let s = state_with(vec![svc, other], vec![node("a", "linux/amd64"), node("b", "linux/amd64")], all);
        check(&s, &[("g1", "no suitable node (host-mode port already in use on 1 node)"), ("g2", "b")]);
        // Two pre-bound tasks on one node count against each other's resources.
        let mut a = node("a", "linux/amd64");
        a.description.resources = ResourceSet { nano_cpus: 1_000_000_000, memory_bytes: 1 << 30 };
        let mut g1 = task("g1", "svc", 0);
        g1.node_id = "a".into();
        g1.spec.resources.reservations.memory_bytes = 600 << 20;
        let mut g2 = g1.clone();
        g2.id = "g2".into();
        g2.service_id = "other".into();
        let s = state_with(vec![service("svc", "web"), service("other", "db")], vec![a], vec![g1, g2]);
        check(&s, &[("g1", "a"), ("g2", "no suitable node (insufficient resources on 1 node)")]);
    }
}
