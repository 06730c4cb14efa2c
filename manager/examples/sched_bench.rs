//! Scheduler benchmark (figures printed, never asserted): places 100,000
//! tasks on 1,000 nodes with constraints, platforms and spread, in one pure
//! `scheduler::schedule` pass, and times the orchestrator pass that creates
//! them and a steady one over them once placed (the constraint enforcer
//! checks each task against its node). Then the same with placement preferences: `spread=node.labels.zone`
//! over the nodes' 10 zones, zone then rack (10 racks per zone), and
//! `spread=node.hostname` (one value per node, the widest tree). Run: `cargo run --release -p shoal-manager
//! --example sched_bench`.

use shoal_manager::state::State;
use shoal_manager::{orchestrator, scheduler};
use shoal_shared::ops::{Entry, Op};
use shoal_shared::platform::Platform;
use shoal_shared::rng::Rng;
use shoal_shared::types::{Availability, Meta, Node, NodeDescription, NodeRole, NodeState, ResourceSet, Service, ServiceMode, ServiceSpec};
use std::time::Instant;

const NODES: usize = 1_000;
const SERVICES: usize = 100;
const TASKS_PER_SERVICE: u64 = 1_000;

fn main() {
    run("no preferences", &[]);
    run("spread=node.labels.zone (10 zones)", &["node.labels.zone"]);
    run("spread=node.labels.zone, then node.labels.rack (10 x 10)", &["node.labels.zone", "node.labels.rack"]);
    run("spread=node.hostname (1,000 values)", &["node.hostname"]);
}

/// Builds the cluster with `preferences` on every service, then times one orchestrator and one scheduler pass.
fn run(case: &str, preferences: &[&str]) {
    let mut state = State::default();
    let mut ops = Vec::new();
    let platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"];
    for i in 0..NODES {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("zone".to_string(), format!("z{}", i % 10));
        labels.insert("rack".to_string(), format!("r{}", i / 10 % 10));
        ops.push(Op::PutNode(Node {
            id: format!("node{i:05}"),
            meta: Meta::default(),
            role: if i < 3 { NodeRole::Manager } else { NodeRole::Worker },
            availability: Availability::Active,
            labels,
            description: NodeDescription {
                hostname: format!("host{i}"),
                platform: Platform::parse(platforms[i % 3]).expect("valid platform"),
                resources: ResourceSet { nano_cpus: 4_000_000_000, memory_bytes: 8 << 30 },
                ..Default::default()
            },
            state: NodeState::Ready,
            addr: String::new(),
            manager_addr: String::new(),
            attachments: Vec::new(),
        }));
    }
    for s in 0..SERVICES {
        let mut spec = ServiceSpec::new(&format!("svc{s}"), "busybox");
        spec.mode = ServiceMode::Replicated { replicas: TASKS_PER_SERVICE };
        spec.task.placement.constraints = vec!["node.role!=manager".into(), format!("node.labels.zone!=z{}", s % 10)];
        spec.task.placement.platforms = vec![Platform::parse("linux/amd64").unwrap(), Platform::parse("linux/arm64").unwrap()];
        spec.task.resources.reservations.memory_bytes = 1 << 20;
        spec.task.placement.preferences = preferences.iter().map(|p| p.to_string()).collect();
        ops.push(Op::PutService(Service {
            id: format!("s{s:03}"),
            meta: Meta::default(),
            spec,
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        }));
    }
    state.apply(1, &Entry { at: 1, ops });
    let mut rng = Rng::from_seed(1);

    let t = Instant::now();
    let created = orchestrator::reconcile(&state, 2, &mut rng);
    let orchestrate_ms = t.elapsed().as_secs_f64() * 1e3;
    let n_created = created.len();
    state.apply(2, &Entry { at: 2, ops: created });

    let t = Instant::now();
    let placed = scheduler::schedule(&state, 3);
    let schedule_s = t.elapsed().as_secs_f64();
    let assigned = placed.iter().filter(|op| matches!(op, Op::AssignTask { .. })).count();
    println!("{case}:");
    println!("  orchestrator: created {n_created} tasks in {orchestrate_ms:.1} ms");
    println!(
        "  scheduler: placed {assigned} of {} tasks on {NODES} nodes in {:.3} s ({:.0} tasks/s; Nomad's C1M: 3,750 containers/s)",
        state.tasks.len(),
        schedule_s,
        assigned as f64 / schedule_s
    ); // How evenly the first service's tasks sit over the zones it may use.
    let mut per_zone: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for op in &placed {
        if let Op::AssignTask { id, node_id, .. } = op {
            if state.tasks[id].service_id == "s000" {
                *per_zone.entry(state.nodes[node_id].labels["zone"].as_str()).or_default() += 1;
            }
        }
    }
    let (min, max) = (per_zone.values().min().copied().unwrap_or(0), per_zone.values().max().copied().unwrap_or(0));
    println!("  service s000: {} zones used, {min} to {max} tasks per zone", per_zone.len());

    // A steady pass over the placed tasks: the constraint enforcer checks every one against its node.
    state.apply(3, &Entry { at: 3, ops: placed });
    let t = Instant::now();
    let steady = orchestrator::reconcile(&state, 4, &mut rng);
    let steady_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("  orchestrator: steady pass over {assigned} placed tasks in {steady_ms:.1} ms ({} ops)", steady.len());
}
