//! The simulated users: `swarm init` and joins at setup, then a seeded
//! stream of the seed notes' commands sent to random nodes, with their
//! answers recorded for the checkers.
//!
//! Owns [`Client`]: requests in flight (every one must be answered within
//! `ANSWER_MS_MAX` unless its node died), the services whose creation was
//! acknowledged (they must never be lost), and the join tokens.

use super::world::World;
use shoal_shared::api::{Reply, Request};
use shoal_shared::rng::Rng;
use shoal_shared::types::{Availability, LinkProfile, NodeRole, ServiceMode, ServiceSpec};
use std::collections::{BTreeMap, BTreeSet};

/// Longest a request may wait for its answer: a join (20 s plus 8 s as a
/// voter) is the longest wait Shoal has, the CLI gives up at 30 s.
pub(crate) const ANSWER_MS_MAX: u64 = 35_000;

/// What a request in flight was (its fields are read through `Debug`, in traces).
#[derive(Clone, Debug)]
#[allow(dead_code)]
enum Op {
    Create(String),
    Remove(String),
    Join(usize),
    Leave(usize),
    Other(&'static str),
}

struct InFlight {
    node: usize,
    rx: async_channel::Receiver<Reply>,
    op: Op,
    sent_ms: u64,
}

/// An acknowledged `service create`.
#[derive(Clone, Debug)]
pub(crate) struct Acked {
    /// An applied index at which the service was in the answering manager's
    /// state (every manager that applied this far must have it), when known.
    pub floor: Option<u64>,
    pub at_ms: u64,
}

pub(crate) struct Client {
    rng: Rng,
    pub(crate) next_op_ms: u64,
    pub(crate) ops: u64,
    in_flight: Vec<InFlight>,
    worker_token: String,
    manager_token: String,
    names: Vec<String>,
    pub(crate) acked: BTreeMap<String, Acked>,
    /// Services a `service rm` was sent for (answered or not: it may have committed).
    pub(crate) removed: BTreeSet<String>,
    /// Nodes that left the swarm (they may join again).
    left: BTreeSet<usize>,
    /// A request unanswered past `ANSWER_MS_MAX`.
    pub(crate) hung: Vec<String>,
}

impl Client {
    pub(crate) fn new(seed: u64) -> Client {
        Client {
            rng: Rng::from_seed(seed),
            next_op_ms: 0,
            ops: 0,
            in_flight: Vec::new(),
            worker_token: String::new(),
            manager_token: String::new(),
            names: Vec::new(),
            acked: BTreeMap::new(),
            removed: BTreeSet::new(),
            left: BTreeSet::new(),
            hung: Vec::new(),
        }
    }

    /// Node `i`'s process died: its requests will never be answered.
    pub(crate) fn node_died(&mut self, i: usize) {
        self.in_flight.retain(|f| f.node != i);
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[(self.rng.next_u64() % v.len() as u64) as usize])
        }
    }
}

fn addr(i: usize) -> String {
    format!("10.0.0.{}", i + 1)
}

/// Sends `req` to node `i` and runs the world until it is answered (at most `timeout_ms`).
pub(crate) fn call(w: &mut World, i: usize, req: Request, timeout_ms: u64) -> anyhow::Result<Option<Reply>> {
    let what = format!("{req:?}");
    let Some(rx) = w.request(i, req) else { return Ok(None) };
    let until = w.now_ms() + timeout_ms;
    w.run_until(until, false, |_| !rx.is_empty())?;
    let reply = rx.try_recv().ok();
    w.note(format_args!("setup: node-{i} {} -> {:?}", short(&what), reply.as_ref().map(short_reply)));
    Ok(reply)
}

/// `swarm init` on node 0 (and `swarm update --node-lost-after`,
/// `--managers --manager-lost-after` when given), then every other node joins (the first `managers - 1` of them as
/// managers). A failure here is a violation: the network is whole and
/// nothing has failed yet.
pub(crate) fn setup(
    w: &mut World,
    managers: usize,
    node_lost_after_ms: Option<u64>,
    autopilot: Option<(u8, u64)>,
) -> anyhow::Result<Result<(), String>> {
    let init = Request::SwarmInit {
        advertise_addr: addr(0),
        availability: Availability::Active,
        listen_addr: "0.0.0.0:2377".into(),
        force_new_cluster: false,
        network: Default::default(),
        autolock: false,
    };
    match call(w, 0, init, 10_000)? {
        Some(Reply::SwarmInit { .. }) => {}
        other => return Ok(Err(format!("setup: swarm init answered {other:?}"))),
    }
    if let Some(ms) = node_lost_after_ms {
        let req = Request::SwarmUpdate {
            dispatcher_heartbeat_ms: None,
            autolock: None,
            node_lost_after_ms: Some(ms),
            link_profile: None,
            autopilot: Default::default(),
            layer_sharing: None,
        };
        match call(w, 0, req, 10_000)? {
            Some(Reply::Ok) => {}
            other => return Ok(Err(format!("setup: swarm update --node-lost-after answered {other:?}"))),
        }
    }
    if let Some((wanted, lost_ms)) = autopilot {
        let req = Request::SwarmUpdate {
            dispatcher_heartbeat_ms: None,
            autolock: None,
            node_lost_after_ms: None,
            link_profile: None,
            autopilot: shoal_shared::api::AutopilotUpdate {
                managers: Some(wanted),
                manager_lost_after_ms: Some(lost_ms),
                spread_label: None,
            },
            layer_sharing: None,
        };
        match call(w, 0, req, 10_000)? {
            Some(Reply::Ok) => {}
            other => return Ok(Err(format!("setup: swarm update --managers answered {other:?}"))),
        }
    }
    for role in [NodeRole::Worker, NodeRole::Manager] {
        match call(w, 0, Request::SwarmJoinToken { role, rotate: false }, 10_000)? {
            Some(Reply::JoinToken { token, .. }) => match role {
                NodeRole::Worker => w.client.worker_token = token,
                NodeRole::Manager => w.client.manager_token = token,
            },
            other => return Ok(Err(format!("setup: join-token answered {other:?}"))),
        }
    }
    for i in 1..w.nodes.len() {
        let token = if i < managers { w.client.manager_token.clone() } else { w.client.worker_token.clone() };
        match call(w, i, join_request(token), 40_000)? {
            Some(Reply::Joined { .. }) => {}
            other => return Ok(Err(format!("setup: node-{i} join answered {other:?}"))),
        }
    }
    Ok(Ok(()))
}

fn join_request(token: String) -> Request {
    Request::SwarmJoin {
        token,
        remote_addr: format!("{}:2377", addr(0)),
        advertise_addr: String::new(),
        listen_addr: "0.0.0.0:2377".into(),
        availability: Availability::Active,
    }
}

/// Answers that arrived, and requests that waited too long.
pub(crate) fn poll(w: &mut World) {
    let now = w.now_ms();
    let in_flight = std::mem::take(&mut w.client.in_flight);
    for f in in_flight {
        let Ok(reply) = f.rx.try_recv() else {
            if now.saturating_sub(f.sent_ms) > ANSWER_MS_MAX {
                w.client.hung.push(format!("node-{} never answered {:?} (sent at {} ms)", f.node, f.op, f.sent_ms));
            } else {
                w.client.in_flight.push(f);
            }
            continue;
        };
        w.note(format_args!("client: node-{} {:?} -> {}", f.node, f.op, short_reply(&reply)));
        match (&f.op, &reply) {
            (Op::Create(name), Reply::ServiceCreated { .. }) => {
                let floor = w.nodes[f.node].daemon.as_ref().and_then(|d| {
                    let v = d.view();
                    (v.manager && v.state.services.values().any(|s| &s.spec.name == name)).then_some(v.state.applied_index)
                });
                w.client.acked.insert(name.clone(), super::client::Acked { floor, at_ms: now });
            }
            (Op::Leave(i), Reply::Left) => {
                w.client.left.insert(*i);
                // The node left under a new id (Swarm's); its old one stays in the client's picks.
                if let Some(id) = w.nodes[*i].daemon.as_ref().map(|d| d.node_id.clone()) {
                    w.nodes[*i].node_id = id;
                }
            }
            (Op::Join(i), Reply::Joined { .. }) => {
                w.client.left.remove(i);
            }
            // Joins use the newest token.
            (_, Reply::JoinToken { role: NodeRole::Worker, token, .. }) => w.client.worker_token = token.clone(),
            _ => {}
        }
    }
}

/// One client operation, sent to a random node that is up (managers most of the time).
pub(crate) fn step(w: &mut World) {
    let now = w.now_ms();
    w.client.next_op_ms = now + 200 + w.client.rng.next_u64() % 1_200;
    w.client.ops += 1;
    let up: Vec<usize> = (0..w.nodes.len()).filter(|i| w.nodes[*i].is_up()).collect();
    let managers: Vec<usize> = up.iter().copied().filter(|i| w.nodes[*i].daemon.as_ref().is_some_and(|d| d.view().manager)).collect();
    let target =
        if !w.client.rng.next_u64().is_multiple_of(5) && !managers.is_empty() { w.client.pick(&managers) } else { w.client.pick(&up) };
    let Some(&target) = target else { return };
    // Every node and every service name ever created: requests about ones that are gone are
    // part of the load (they must be refused cleanly).
    let node_ids: Vec<String> = w.nodes.iter().map(|n| n.node_id.clone()).collect();
    let services = w.client.names.clone();
    let c = &mut w.client;
    let roll = c.rng.next_u64() % 100;
    let (op, req) = match roll {
        0..=19 => {
            let name = format!("svc{}", c.names.len());
            c.names.push(name.clone());
            let image = if c.rng.next_u64().is_multiple_of(4) { "edge" } else { "busybox" };
            let mut spec = ServiceSpec::new(&name, image);
            spec.mode = match c.rng.next_u64() % 10 {
                0 | 1 => ServiceMode::Global,
                2 => ServiceMode::ReplicatedJob { max_concurrent: c.rng.next_u64() % 3, total_completions: 1 + c.rng.next_u64() % 4 },
                3 => ServiceMode::GlobalJob,
                _ => ServiceMode::Replicated { replicas: 1 + c.rng.next_u64() % 4 },
            };
            if spec.mode.is_job() {
                // The fake runtime's job: exits 0 once started.
                spec.task.container.env.push(crate::runtime::fake::EXIT_AT_ONCE_ENV.into());
                spec.task.restart.condition = shoal_shared::types::RestartCondition::OnFailure;
            } else if c.names.len().is_multiple_of(3) {
                // Every third: Starting until a (fake, passing) probe, across restarts and cuts.
                // Chosen by name, not drawn: the seeds' random streams stay as they were.
                spec.task.container.healthcheck = Some(shoal_shared::types::HealthConfig {
                    test: vec!["CMD".into(), "true".into()],
                    interval_ns: 500_000_000,
                    ..Default::default()
                });
            }
            match c.rng.next_u64() % 6 {
                0 => spec.task.placement.constraints.push("node.role==worker".into()),
                1 => spec.task.placement.constraints.push("node.labels.zone==a".into()),
                2 => spec.task.placement.constraints.push("node.hostname!=node-1".into()),
                _ => {}
            }
            (Op::Create(name), Request::ServiceCreate { spec: Box::new(spec), registry_auth: None })
        }
        20..=34 => {
            let Some(s) = c.pick(&services).cloned() else { return };
            let replicas = c.rng.next_u64() % 6;
            (Op::Other("scale"), Request::ServiceScale { service: s, replicas })
        }
        35..=44 => {
            let Some(s) = c.pick(&services).cloned() else { return };
            let mut spec = ServiceSpec::new(&s, "busybox");
            spec.task.container.env.push(format!("GEN={}", c.rng.next_u64() % 1000));
            spec.mode = ServiceMode::Replicated { replicas: 1 + c.rng.next_u64() % 3 };
            (Op::Other("update"), Request::ServiceUpdate { service: s, spec: Box::new(spec), rollback: false, registry_auth: None })
        }
        45..=48 => {
            let Some(s) = c.pick(&services).cloned() else { return };
            let spec = ServiceSpec::new(&s, "busybox");
            (Op::Other("rollback"), Request::ServiceUpdate { service: s, spec: Box::new(spec), rollback: true, registry_auth: None })
        }
        49..=55 => {
            let Some(s) = c.pick(&services).cloned() else { return };
            c.removed.insert(s.clone());
            (Op::Remove(s.clone()), Request::ServiceRemove { service: s })
        }
        56..=67 => {
            let Some(n) = c.pick(&node_ids).cloned() else { return };
            let (availability, label_add) = match c.rng.next_u64() % 5 {
                0 => (Some(Availability::Drain), vec![]),
                1 => (Some(Availability::Pause), vec![]),
                2 => (Some(Availability::Active), vec![]),
                3 => (None, vec![("zone".to_string(), "a".to_string())]),
                _ => (None, vec![("zone".to_string(), "b".to_string())]),
            };
            (Op::Other("node update"), Request::NodeUpdate { node: n, availability, label_add, label_rm: vec![] })
        }
        68..=74 => {
            let Some(n) = c.pick(&node_ids).cloned() else { return };
            (Op::Other("promote"), Request::NodeSetRole { node: n, role: NodeRole::Manager })
        }
        75..=80 => {
            let Some(n) = c.pick(&node_ids).cloned() else { return };
            (Op::Other("demote"), Request::NodeSetRole { node: n, role: NodeRole::Worker })
        }
        81..=83 => {
            let Some(n) = c.pick(&node_ids).cloned() else { return };
            (Op::Other("node rm --force"), Request::NodeRemove { node: n, force: true })
        }
        84..=87 => {
            // `swarm leave` on the node itself (a manager's is refused, as Swarm's).
            (Op::Leave(target), Request::SwarmLeave { force: false })
        }
        88..=93 => {
            // A node that left (or was removed) joins again.
            let left: Vec<usize> = c.left.iter().copied().collect();
            let Some(&i) = c.pick(&left) else { return };
            let token = c.worker_token.clone();
            w.note(format_args!("client: node-{i} joins again"));
            send(w, i, Op::Join(i), join_request(token));
            return;
        }
        94..=96 => (Op::Other("join-token --rotate"), Request::SwarmJoinToken { role: NodeRole::Worker, rotate: true }),
        97 => {
            // Links and raft switch timings while faults go on (a link may time out once in between).
            let link_profile = if c.rng.next_u64().is_multiple_of(2) { LinkProfile::Edge } else { LinkProfile::Lan };
            let req = Request::SwarmUpdate {
                dispatcher_heartbeat_ms: None,
                autolock: None,
                node_lost_after_ms: None,
                link_profile: Some(link_profile),
                autopilot: Default::default(),
                layer_sharing: None,
            };
            (Op::Other("swarm update --link-profile"), req)
        }
        _ => (Op::Other("node ls"), Request::NodeList),
    };
    send(w, target, op, req);
}

fn send(w: &mut World, node: usize, op: Op, req: Request) {
    w.note(format_args!("client: node-{node} <- {}", short(&format!("{req:?}"))));
    let now = w.now_ms();
    if let Some(rx) = w.request(node, req) {
        w.client.in_flight.push(InFlight { node, rx, op, sent_ms: now });
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(160).collect();
    s
}

fn short_reply(r: &Reply) -> String {
    match r {
        Reply::Error { message, .. } => format!("error: {message}"),
        other => short(&format!("{other:?}")),
    }
}
