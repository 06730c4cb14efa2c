//! Control-API writes, validated against the state and turned into ops.
//!
//! Pure functions: the daemon's shell supplies ids and timestamps. A request
//! that fails validation returns a [`ControlError`] and proposes nothing, so
//! bad input never changes state. Messages follow Swarm's where it has one,
//! lowercased, and say what to do next.

use crate::placement::ValidPlacement;
use crate::state::State;
use crate::updater::{MSG_ROLLBACK_MANUAL, MSG_UPDATING};
use shoal_shared::api::ErrorKind;
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::Op;
use shoal_shared::types::{
    Meta, NodeRole, NodeState, Service, ServiceMode, ServiceSpec, SwarmSettings, UpdateState, UpdateStatus, PUBLISH_MODE_HOST,
    PUBLISH_MODE_INGRESS,
};
use std::collections::{BTreeMap, BTreeSet};

/// Longest service name, as Docker's DNS-label rule.
pub const SERVICE_NAME_BYTES_MAX: usize = 63;
/// Most replicas one service may ask for.
pub const REPLICAS_MAX: u64 = 100_000;
/// Highest TCP/UDP/SCTP port number.
pub const PORT_MAX: u32 = 65_535;

/// A refused control request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(
        "this node is not a swarm manager: use `shoal swarm init` or `shoal swarm join` to connect this node to a swarm and try again"
    )]
    NotInSwarm,
    #[error("this node is already part of a swarm: use `shoal swarm leave` to leave this swarm and join another one")]
    AlreadyInSwarm,
    #[error("no such service: {0}")]
    NoSuchService(String),
    #[error("no such node: {0}")]
    NoSuchNode(String),
    #[error("service {0} already exists (name conflicts with an existing object)")]
    NameInUse(String),
    #[error("invalid service name {0:?}: use 1-63 letters, digits and dashes, starting and ending with a letter or digit")]
    BadName(String),
    #[error("{0}")]
    Invalid(String),
    #[error("scale can only be used with replicated mode: service {0} is global")]
    ScaleGlobal(String),
    #[error("service {0} does not have a previous spec: there is nothing to roll back to")]
    NoPreviousSpec(String),
    #[error("attempting to demote the last manager of the swarm")]
    LastManager,
    #[error("attempting to demote {0}, the only manager that votes in raft yet: a promoted manager votes once it has caught up; wait until `shoal node ls` shows it Reachable")]
    LastVoter(String),
    #[error("node {0} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal")]
    RemoveManager(String),
    #[error("node {0} is not down and can't be removed")]
    NotDown(String),
}

impl ControlError {
    /// The API error class for this refusal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControlError::NotInSwarm
            | ControlError::AlreadyInSwarm
            | ControlError::ScaleGlobal(_)
            | ControlError::NoPreviousSpec(_)
            | ControlError::LastManager
            | ControlError::LastVoter(_)
            | ControlError::RemoveManager(_)
            | ControlError::NotDown(_) => ErrorKind::FailedPrecondition,
            ControlError::NoSuchService(_) | ControlError::NoSuchNode(_) => ErrorKind::NotFound,
            ControlError::NameInUse(_) => ErrorKind::AlreadyExists,
            ControlError::BadName(_) | ControlError::Invalid(_) => ErrorKind::InvalidArgument,
        }
    }
}

/// Checks a spec on its own (not against the state).
pub fn validate_spec(spec: &ServiceSpec) -> Result<(), ControlError> {
    let name = &spec.name;
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ok_ends =
        name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > SERVICE_NAME_BYTES_MAX || !ok_chars || !ok_ends {
        return Err(ControlError::BadName(name.clone()));
    }
    if spec.task.container.image.trim().is_empty() {
        return Err(ControlError::Invalid("a service needs an image".into()));
    }
    if let ServiceMode::Replicated { replicas } = spec.mode {
        if replicas > REPLICAS_MAX {
            return Err(ControlError::Invalid(format!("replicas {replicas} is above the limit of {REPLICAS_MAX}")));
        }
    }
    // The one placement parser: what passes here is what the scheduler can read.
    ValidPlacement::parse(&spec.task.placement).map_err(|e| ControlError::Invalid(e.to_string()))?;
    validate_ports(spec)?;
    for e in &spec.task.container.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(ControlError::Invalid(format!("invalid environment variable {e:?}: use KEY=VALUE")));
        }
    }
    let u = &spec.update;
    if !(0.0..=1.0).contains(&u.max_failure_ratio) || !(0.0..=1.0).contains(&spec.rollback.max_failure_ratio) {
        return Err(ControlError::Invalid("max failure ratio must be between 0 and 1".into()));
    }
    Ok(())
}

/// Published ports: known protocol and mode, ports in range, a published
/// port for host mode (Shoal does not pick one), and each published port and
/// protocol at most once (swarmkit's rule).
fn validate_ports(spec: &ServiceSpec) -> Result<(), ControlError> {
    let mut seen = BTreeSet::new();
    for p in &spec.ports {
        let proto = p.protocol.to_ascii_lowercase();
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(ControlError::Invalid(format!(
                "invalid protocol {:?} for port {}: use tcp, udp or sctp",
                p.protocol, p.target_port
            )));
        }
        if p.publish_mode != PUBLISH_MODE_HOST && p.publish_mode != PUBLISH_MODE_INGRESS {
            return Err(ControlError::Invalid(format!("invalid publish mode {:?}: use ingress or host", p.publish_mode)));
        }
        if p.target_port == 0 || p.target_port > PORT_MAX || p.published_port > PORT_MAX {
            return Err(ControlError::Invalid(format!(
                "invalid port {}:{}: ports are 1-{PORT_MAX} (published 0 means none)",
                p.published_port, p.target_port
            )));
        }
        if p.publish_mode == PUBLISH_MODE_HOST && p.published_port == 0 {
            return Err(ControlError::Invalid(format!(
                "host-mode port {}/{proto} needs a published port: shoal does not pick one; use mode=host,published=PORT,target={}",
                p.target_port, p.target_port
            )));
        }
        if p.published_port != 0 && !seen.insert((p.published_port, proto.clone())) {
            return Err(ControlError::Invalid(format!(
                "duplicate published port {}/{proto}: each published port and protocol may appear once",
                p.published_port
            )));
        }
    }
    Ok(())
}

fn in_swarm(state: &State) -> Result<(), ControlError> {
    state.cluster.as_ref().map(|_| ()).ok_or(ControlError::NotInSwarm)
}

/// Ops creating a service with the given (shell-chosen) id.
pub fn create_service(state: &State, spec: ServiceSpec, id: String) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    validate_spec(&spec)?;
    if state.services.values().any(|s| s.spec.name == spec.name) {
        return Err(ControlError::NameInUse(spec.name));
    }
    Ok(vec![Op::PutService(Service { id, meta: Meta::default(), spec, previous_spec: None, update_status: None })])
}

/// Ops setting a replicated service's replica count.
pub fn scale_service(state: &State, key: &str, replicas: u64) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    if s.spec.mode == ServiceMode::Global {
        return Err(ControlError::ScaleGlobal(s.spec.name.clone()));
    }
    if replicas > REPLICAS_MAX {
        return Err(ControlError::Invalid(format!("replicas {replicas} is above the limit of {REPLICAS_MAX}")));
    }
    let mut next = s.clone();
    next.previous_spec = Some(s.spec.clone());
    next.spec.mode = ServiceMode::Replicated { replicas };
    Ok(vec![Op::PutService(next)])
}

/// Ops replacing a service's spec (`service update`). The old spec becomes
/// the previous one; a changed task spec starts a rolling update at `now`, as
/// does any update of a paused one (Swarm resumes paused updates this way).
/// Renames and mode changes are refused, as Swarm's.
pub fn update_service(state: &State, key: &str, spec: ServiceSpec, now: UnixNanos) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    validate_spec(&spec)?;
    if spec.name != s.spec.name {
        return Err(ControlError::Invalid(format!(
            "renaming services is not supported: service {} cannot become {}",
            s.spec.name, spec.name
        )));
    }
    if (spec.mode == ServiceMode::Global) != (s.spec.mode == ServiceMode::Global) {
        return Err(ControlError::Invalid(format!("service mode change is not allowed: remove and recreate service {}", s.spec.name)));
    }
    let mut next = s.clone();
    let paused = s.update_status.as_ref().is_some_and(|u| matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused));
    if spec.task != s.spec.task || paused {
        next.update_status = Some(UpdateStatus::started(UpdateState::Updating, now, MSG_UPDATING));
    }
    next.previous_spec = Some(std::mem::replace(&mut next.spec, spec));
    Ok(vec![Op::PutService(next)])
}

/// Ops rolling a service back to its previous spec (`service rollback`):
/// the specs swap, as Swarm's, and tasks are replaced with the rollback config.
pub fn rollback_service(state: &State, key: &str, now: UnixNanos) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    let Some(prev) = s.previous_spec.clone() else {
        return Err(ControlError::NoPreviousSpec(s.spec.name.clone()));
    };
    let mut next = s.clone();
    next.previous_spec = Some(std::mem::replace(&mut next.spec, prev));
    next.update_status = Some(UpdateStatus::started(UpdateState::RollbackStarted, now, MSG_ROLLBACK_MANUAL));
    Ok(vec![Op::PutService(next)])
}

/// Ops for `node update`: availability and user labels (`self` is `self_id`).
pub fn update_node(
    state: &State,
    self_id: &str,
    key: &str,
    availability: Option<shoal_shared::types::Availability>,
    label_add: &[(String, String)],
    label_rm: &[String],
) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let lookup = if key == "self" { self_id } else { key };
    let n = state.find_node(lookup).ok_or_else(|| ControlError::NoSuchNode(key.to_string()))?;
    let mut ops = Vec::new();
    if let Some(a) = availability {
        if a != n.availability {
            ops.push(Op::SetNodeAvailability { id: n.id.clone(), availability: a });
        }
    }
    if !label_add.is_empty() || !label_rm.is_empty() {
        let mut labels: BTreeMap<String, String> = n.labels.clone();
        for k in label_rm {
            if labels.remove(k).is_none() {
                return Err(ControlError::Invalid(format!("key {k} doesn't exist in node's labels")));
            }
        }
        for (k, v) in label_add {
            if k.is_empty() {
                return Err(ControlError::Invalid("invalid label: the key is empty; use KEY=VALUE".into()));
            }
            labels.insert(k.clone(), v.clone());
        }
        if labels != n.labels {
            ops.push(Op::SetNodeLabels { id: n.id.clone(), labels });
        }
    }
    Ok(ops)
}

/// Ops for `node promote` / `node demote` (`self` names this node). Raft
/// membership follows the roles: the leader reconciles it afterwards.
/// `is_voter` says whether a node votes in raft now: the last voter is
/// never demoted, even while a promoted manager is still a learner (found
/// by the whole-node simulator: demoting the only voter of a swarm whose
/// other manager had not caught up left the swarm without a leader).
pub fn set_node_role(
    state: &State,
    self_id: &str,
    key: &str,
    role: NodeRole,
    is_voter: impl Fn(&str) -> bool,
) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let lookup = if key == "self" { self_id } else { key };
    let n = state.find_node(lookup).ok_or_else(|| ControlError::NoSuchNode(key.to_string()))?;
    if n.role == role {
        return Ok(Vec::new());
    }
    if role == NodeRole::Worker && state.nodes.values().filter(|m| m.role == NodeRole::Manager).count() <= 1 {
        return Err(ControlError::LastManager);
    }
    // Another voter that stays a manager (a voter already demoted is on its way out).
    let other_voter = state.nodes.values().any(|m| m.id != n.id && m.role == NodeRole::Manager && is_voter(&m.id));
    if role == NodeRole::Worker && is_voter(&n.id) && !other_voter {
        return Err(ControlError::LastVoter(n.id.clone()));
    }
    let mut node = n.clone();
    node.role = role;
    node.manager_addr = if role == NodeRole::Manager { node.addr.clone() } else { String::new() };
    Ok(vec![Op::PutNode(node)])
}

/// Ops for `node rm [--force]`; returns the node's id. `in_raft` says
/// whether a node is still a raft member: a demoted manager stays one until
/// the leader has removed it from raft, and removing its record before that
/// would leave it running raft outside the swarm (a removed node leading).
pub fn remove_node(
    state: &State,
    self_id: &str,
    key: &str,
    force: bool,
    in_raft: impl Fn(&str) -> bool,
) -> Result<(Vec<Op>, String), ControlError> {
    in_swarm(state)?;
    let lookup = if key == "self" { self_id } else { key };
    let n = state.find_node(lookup).ok_or_else(|| ControlError::NoSuchNode(key.to_string()))?;
    if n.role == NodeRole::Manager || in_raft(&n.id) {
        return Err(ControlError::RemoveManager(n.id.clone()));
    }
    if n.state != NodeState::Down && !force {
        return Err(ControlError::NotDown(n.id.clone()));
    }
    Ok((vec![Op::DeleteNode { id: n.id.clone() }], n.id.clone()))
}

/// Ops removing a service (its tasks are stopped by the orchestrator).
pub fn remove_service(state: &State, key: &str) -> Result<(Vec<Op>, String), ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    Ok((vec![Op::DeleteService { id: s.id.clone() }], s.spec.name.clone()))
}

/// Ops for `swarm update`: each `Some` setting replaces the current one.
pub fn update_swarm(state: &State, dispatcher_heartbeat_ms: Option<u64>) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let mut next = state.settings.clone();
    if let Some(ms) = dispatcher_heartbeat_ms {
        SwarmSettings::check_dispatcher_heartbeat_ms(ms).map_err(ControlError::Invalid)?;
        next.dispatcher_heartbeat_ms = ms;
    }
    if next == state.settings {
        return Ok(Vec::new());
    }
    Ok(vec![Op::SetSwarmSettings(next)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::ops::Entry;
    use shoal_shared::types::{Cluster, PortConfig};

    fn swarm() -> State {
        let mut s = State::default();
        s.apply(1, &Entry { at: 1, ops: vec![Op::PutCluster(Cluster { id: "c".into(), ..Default::default() })] });
        s
    }

    #[test]
    fn swarm_settings_are_validated() {
        assert_eq!(update_swarm(&State::default(), Some(5_000)), Err(ControlError::NotInSwarm));
        let s = swarm();
        let ops = update_swarm(&s, Some(30_000)).unwrap();
        assert_eq!(ops, vec![Op::SetSwarmSettings(shoal_shared::types::SwarmSettings { dispatcher_heartbeat_ms: 30_000 })]);
        assert!(update_swarm(&s, None).unwrap().is_empty(), "nothing to change, nothing proposed");
        assert!(update_swarm(&s, Some(s.settings.dispatcher_heartbeat_ms)).unwrap().is_empty());
        for bad in [0, 99, shoal_shared::types::DISPATCHER_HEARTBEAT_MS_MAX + 1] {
            let e = update_swarm(&s, Some(bad)).unwrap_err();
            assert!(e.to_string().contains("--dispatcher-heartbeat"), "{e}");
        }
    }

    #[test]
    fn refuses_bad_input_without_ops() {
        let s = swarm();
        assert_eq!(create_service(&State::default(), ServiceSpec::new("web", "busybox"), "i".into()), Err(ControlError::NotInSwarm));
        assert!(matches!(create_service(&s, ServiceSpec::new("bad_name", "busybox"), "i".into()), Err(ControlError::BadName(_))));
        assert!(matches!(create_service(&s, ServiceSpec::new("-x", "busybox"), "i".into()), Err(ControlError::BadName(_))));
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.task.placement.constraints = vec!["node.role=manager".into()];
        assert!(matches!(create_service(&s, spec, "i".into()), Err(ControlError::Invalid(_))));
        assert_eq!(scale_service(&s, "nope", 3), Err(ControlError::NoSuchService("nope".into())));
    }

    /// An unparsable constraint is refused at create and at update, with the parser's text,
    /// and nothing is proposed: the scheduler never sees it.
    #[test]
    fn unparsable_constraints_are_refused_at_create_and_update() {
        let mut s = swarm();
        let ops = create_service(&s, ServiceSpec::new("web", "busybox"), "i".into()).unwrap();
        s.apply(2, &Entry { at: 2, ops });
        let why = "invalid constraint \"node.role=manager\": expected KEY==VALUE or KEY!=VALUE";
        for bad in [vec!["node.role=manager".to_string()], vec!["node.role==worker".to_string(), "node.role=manager".to_string()]] {
            let mut spec = ServiceSpec::new("api", "busybox");
            spec.task.placement.constraints = bad.clone();
            assert_eq!(create_service(&s, spec, "j".into()), Err(ControlError::Invalid(why.into())));
            let mut spec = s.find_service("web").unwrap().spec.clone();
            spec.task.placement.constraints = bad;
            assert_eq!(update_service(&s, "web", spec, 3), Err(ControlError::Invalid(why.into())));
        }
        assert_eq!(s.services.len(), 1);
        assert!(s.find_service("web").unwrap().spec.task.placement.constraints.is_empty());
    }

    #[test]
    fn validates_preferences_and_ports() {
        let port = |mode: &str, protocol: &str, published_port: u32, target_port: u32| PortConfig {
            protocol: protocol.into(),
            target_port,
            published_port,
            publish_mode: mode.into(),
        };
        let cases: Vec<(&str, Vec<&str>, Vec<PortConfig>, &str)> = vec![
            ("none", vec![], vec![], ""),
            ("label spread", vec!["node.labels.zone", "engine.labels.disk"], vec![], ""),
            ("attribute spread", vec!["node.platform.arch"], vec![], ""),
            ("bad descriptor", vec!["zone"], vec![], "invalid spread descriptor \"zone\": use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"),
            ("empty label", vec!["node.labels."], vec![], "invalid spread descriptor \"node.labels.\": use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"),
            ("host port", vec![], vec![port("host", "tcp", 8080, 80), port("host", "udp", 8080, 80)], ""),
            ("ingress port, old upper case", vec![], vec![port("ingress", "TCP", 8080, 80), port("ingress", "tcp", 0, 81)], ""),
            ("host without published", vec![], vec![port("host", "tcp", 0, 80)], "host-mode port 80/tcp needs a published port: shoal does not pick one; use mode=host,published=PORT,target=80"),
            ("duplicate", vec![], vec![port("host", "tcp", 8080, 80), port("ingress", "tcp", 8080, 81)], "duplicate published port 8080/tcp: each published port and protocol may appear once"),
            ("protocol", vec![], vec![port("host", "icmp", 8080, 80)], "invalid protocol \"icmp\" for port 80: use tcp, udp or sctp"),
            ("mode", vec![], vec![port("bridge", "tcp", 8080, 80)], "invalid publish mode \"bridge\": use ingress or host"),
            ("range", vec![], vec![port("host", "tcp", 70000, 80)], "invalid port 70000:80: ports are 1-65535 (published 0 means none)"),
            ("no target", vec![], vec![port("ingress", "tcp", 8080, 0)], "invalid port 8080:0: ports are 1-65535 (published 0 means none)"),
        ];
        let s = swarm();
        for (case, prefs, ports, expect) in cases {
            let mut spec = ServiceSpec::new("web", "busybox");
            spec.task.placement.preferences = prefs.into_iter().map(String::from).collect();
            spec.ports = ports;
            let got = create_service(&s, spec, "i".into()).map(|_| ()).map_err(|e| e.to_string());
            let want = if expect.is_empty() { Ok(()) } else { Err(expect.to_string()) };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn duplicate_names_and_global_scale() {
        let mut s = swarm();
        let ops = create_service(&s, ServiceSpec::new("web", "busybox"), "id1".into()).unwrap();
        s.apply(2, &Entry { at: 2, ops });
        assert_eq!(create_service(&s, ServiceSpec::new("web", "busybox"), "id2".into()), Err(ControlError::NameInUse("web".into())));
        let mut g = ServiceSpec::new("agent", "busybox");
        g.mode = ServiceMode::Global;
        let ops = create_service(&s, g, "id3".into()).unwrap();
        s.apply(3, &Entry { at: 3, ops });
        assert_eq!(scale_service(&s, "agent", 2), Err(ControlError::ScaleGlobal("agent".into())));
        let ops = scale_service(&s, "web", 4).unwrap();
        s.apply(4, &Entry { at: 4, ops });
        assert_eq!(s.find_service("web").unwrap().spec.mode, ServiceMode::Replicated { replicas: 4 });
    }
}

#[cfg(test)]
mod membership_tests {
    use super::*;
    use crate::state::tests::node;
    use shoal_shared::ops::Entry;
    use shoal_shared::types::{Cluster, Node};

    fn swarm_of(nodes: Vec<Node>) -> State {
        let mut ops = vec![Op::PutCluster(Cluster { id: "c".into(), ..Default::default() })];
        ops.extend(nodes.into_iter().map(Op::PutNode));
        let mut s = State::default();
        s.apply(1, &Entry { at: 1, ops });
        s
    }

    fn manager(id: &str) -> Node {
        let mut n = node(id, "linux/amd64");
        n.role = NodeRole::Manager;
        n
    }

    fn all_vote(_: &str) -> bool {
        true
    }

    #[test]
    fn the_last_voter_is_not_demoted_while_a_promoted_manager_catches_up() {
        let two = swarm_of(vec![manager("m1"), manager("m2")]);
        let only_m1 = |n: &str| n == "m1";
        assert_eq!(set_node_role(&two, "m1", "m1", NodeRole::Worker, only_m1), Err(ControlError::LastVoter("m1".into())));
        assert!(set_node_role(&two, "m1", "m2", NodeRole::Worker, only_m1).is_ok(), "the learner may be demoted");
        assert!(set_node_role(&two, "m1", "m1", NodeRole::Worker, all_vote).is_ok(), "once m2 votes, m1 may go");
        // A voter already demoted (still in raft until the leader removes it) does not count:
        // demoting both voters of m1, m2, m3 (m3 a learner) would leave no leader at all.
        let mut three = swarm_of(vec![manager("m1"), node("m2", "linux/amd64"), manager("m3")]);
        three.nodes.get_mut("m2").expect("m2").role = NodeRole::Worker;
        let m1_m2 = |n: &str| n == "m1" || n == "m2";
        assert_eq!(set_node_role(&three, "m1", "m1", NodeRole::Worker, m1_m2), Err(ControlError::LastVoter("m1".into())));
    }

    #[test]
    fn promote_and_demote_follow_swarm_rules() {
        let s = swarm_of(vec![manager("m1"), node("w1", "linux/amd64")]);
        let ops = set_node_role(&s, "m1", "w1", NodeRole::Manager, all_vote).unwrap();
        let [Op::PutNode(n)] = &ops[..] else { panic!("one PutNode: {ops:?}") };
        assert_eq!((n.role, n.manager_addr.as_str()), (NodeRole::Manager, n.addr.as_str()));
        assert_eq!(set_node_role(&s, "m1", "m1", NodeRole::Manager, all_vote).unwrap(), vec![], "promoting a manager is a no-op");
        assert_eq!(set_node_role(&s, "m1", "self", NodeRole::Worker, all_vote), Err(ControlError::LastManager));
        assert_eq!(ControlError::LastManager.to_string(), "attempting to demote the last manager of the swarm");
        let two = swarm_of(vec![manager("m1"), manager("m2")]);
        let ops = set_node_role(&two, "m1", "m2", NodeRole::Worker, all_vote).unwrap();
        let [Op::PutNode(n)] = &ops[..] else { panic!("one PutNode") };
        assert_eq!((n.role, n.manager_addr.as_str()), (NodeRole::Worker, ""));
        assert_eq!(set_node_role(&s, "m1", "nope", NodeRole::Worker, all_vote), Err(ControlError::NoSuchNode("nope".into())));
    }

    #[test]
    fn node_rm_refuses_managers_and_live_nodes() {
        let mut down = node("w2", "linux/amd64");
        down.state = NodeState::Down;
        let s = swarm_of(vec![manager("m1"), node("w1", "linux/amd64"), down]);
        let none = |_: &str| false;
        assert_eq!(
            remove_node(&s, "m1", "m1", true, none).unwrap_err().to_string(),
            "node m1 is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        );
        assert_eq!(remove_node(&s, "m1", "w1", false, none).unwrap_err().to_string(), "node w1 is not down and can't be removed");
        assert_eq!(remove_node(&s, "m1", "w1", true, none).unwrap(), (vec![Op::DeleteNode { id: "w1".into() }], "w1".to_string()));
        assert_eq!(remove_node(&s, "m1", "w2", false, none).unwrap().1, "w2");
        // Demoted (a worker in the state) but not yet out of raft: still refused.
        assert_eq!(
            remove_node(&s, "m1", "w1", true, |n| n == "w1").unwrap_err().to_string(),
            "node w1 is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        );
    }
}
