//! The daemon's event loop end to end over its real socket, with the fake
//! runtime: checks the shell's wiring (commit, converge, worker actions,
//! restart) quickly. Containers themselves are proven in `tests/` against
//! real containerd.

use super::*;
use crate::client::Client;
use crate::runtime::fake::Fake;
use shoal_shared::api::ErrorKind;
use shoal_shared::task::TaskState;
use shoal_shared::types::{Availability, ServiceSpec};

/// The settings of test daemon `name`, in a fresh data dir.
pub(super) fn config(name: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("shoal-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Config {
        data_dir: dir.clone(),
        socket: dir.join("s.sock"),
        containerd: dir.join("none"),
        namespace: "t".into(),
        insecure_registries: vec![],
        registry_cas: vec![],
        registry_mirrors: vec![],
        // These daemons run the real data path in the test's own namespace: tasks on no network stay there.
        bridge: None,
        metrics_addr: None,
    }
}

fn start(name: &str) -> (String, Arc<Fake>) {
    let cfg = config(name);
    let dir = cfg.data_dir.clone();
    let fake = Arc::new(Fake::new());
    let rt: Arc<dyn Runtime> = fake.clone();
    let rng = Rng::from_seed(7);
    let sealing = super::autolock::Sealing::fixed([7; 32], [1; 16]);
    let (store, node_id) = open_store(&dir, &sealing.key, 7).unwrap();
    let sock = cfg.socket.clone();
    std::thread::spawn(move || run_with(cfg, store, node_id, rt, rng, sealing).unwrap());
    let host = format!("unix://{}", sock.display());
    for _ in 0..100 {
        if Client::connect(&host).is_ok() {
            return (host, fake);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("daemon did not come up");
}

/// Bound on one call: emulated daemons (targets/qemu-test.sh) on a loaded
/// machine answered a first call in over 5 s.
fn call_timeout_ms() -> u64 {
    if std::env::var_os("SHOAL_UNDER_QEMU").is_some() {
        30_000
    } else {
        5_000
    }
}

fn call(host: &str, req: Request) -> Reply {
    Client::connect(host).unwrap().call(&req, call_timeout_ms()).unwrap()
}

fn tasks(host: &str, svc: &str) -> Vec<Task> {
    match call(host, Request::TaskList { service: svc.into() }) {
        Reply::Tasks { tasks, .. } => tasks,
        r => panic!("{r:?}"),
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

fn running(host: &str, svc: &str) -> usize {
    tasks(host, svc).iter().filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running).count()
}

#[test]
fn service_lifecycle_through_the_socket() {
    let (host, fake) = start("lifecycle");
    // Not a swarm yet: a clear refusal.
    match call(&host, Request::ServiceList) {
        Reply::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::FailedPrecondition);
            assert!(message.contains("shoal swarm init"), "{message}");
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        call(
            &host,
            Request::SwarmInit {
                advertise_addr: "127.0.0.1".into(),
                availability: Availability::Active,
                listen_addr: "127.0.0.1:0".into(),
                force_new_cluster: false,
                network: Default::default(),
                autolock: false,
            }
        ),
        Reply::SwarmInit { .. }
    ));
    assert!(matches!(
        call(
            &host,
            Request::SwarmInit {
                advertise_addr: String::new(),
                availability: Availability::Active,
                listen_addr: "127.0.0.1:0".into(),
                force_new_cluster: false,
                network: Default::default(),
                autolock: false,
            }
        ),
        Reply::Error { .. }
    ));

    let mut spec = ServiceSpec::new("web", "busybox");
    spec.mode = shoal_shared::types::ServiceMode::Replicated { replicas: 3 };
    spec.task.restart.delay_ns = 0;
    assert!(matches!(
        call(&host, Request::ServiceCreate { spec: Box::new(spec.clone()), registry_auth: None }),
        Reply::ServiceCreated { .. }
    ));
    wait_for("3 running", || running(&host, "web") == 3);
    assert_eq!(fake.containers.lock().unwrap().len(), 3);
    // Pinned to the local image's digest.
    let Reply::Service(s) = call(&host, Request::ServiceInspect { service: "web".into() }) else { panic!() };
    assert_eq!(s.spec.task.container.image, "busybox:latest@sha256:00");

    // Duplicate name and missing image are refused without state change.
    assert!(matches!(
        call(&host, Request::ServiceCreate { spec: Box::new(spec.clone()), registry_auth: None }),
        Reply::Error { kind: ErrorKind::AlreadyExists, .. }
    ));
    let missing = ServiceSpec::new("nope", "nosuchimage");
    match call(&host, Request::ServiceCreate { spec: Box::new(missing), registry_auth: None }) {
        Reply::Error { message, .. } => assert!(message.contains("nosuchimage"), "{message}"),
        r => panic!("{r:?}"),
    }
    let Reply::Services(list) = call(&host, Request::ServiceList) else { panic!() };
    assert_eq!(list.len(), 1);

    // A container dies: its task fails and the slot gets a new one.
    let victim = tasks(&host, "web").into_iter().find(|t| t.status.state == TaskState::Running).unwrap();
    fake.exit(&victim.id, 2);
    wait_for("replacement", || {
        let ts = tasks(&host, "web");
        let old = ts.iter().find(|t| t.id == victim.id).unwrap();
        old.status.state == TaskState::Failed && running(&host, "web") == 3
    });
    let old = tasks(&host, "web").into_iter().find(|t| t.id == victim.id).unwrap();
    assert_eq!(old.status.err, "task: non-zero exit (2)");

    // Scale down then remove: containers go away, tasks are deleted.
    assert_eq!(call(&host, Request::ServiceScale { service: "web".into(), replicas: 1 }), Reply::Ok);
    wait_for("scaled to 1", || running(&host, "web") == 1 && fake.containers.lock().unwrap().len() == 1);
    assert!(matches!(call(&host, Request::ServiceRemove { service: "web".into() }), Reply::Removed(_)));
    wait_for("all removed", || fake.containers.lock().unwrap().is_empty());
    assert!(matches!(call(&host, Request::TaskList { service: "web".into() }), Reply::Error { kind: ErrorKind::NotFound, .. }));
}

#[test]
fn garbage_on_the_socket_gets_an_error_not_a_crash() {
    use std::io::{Read, Write};
    let (host, _) = start("garbage");
    let path = host.strip_prefix("unix://").unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.write_all(&[0, 0, 0, 3, 1, 0xff, 0xff]).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    // The daemon still answers.
    assert_eq!(call(&host, Request::Ping), Reply::Pong);
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(call(&host, Request::Ping), Reply::Pong);
}

#[test]
fn service_update_pins_new_images_and_rolls_back() {
    use shoal_shared::types::{UpdateState, UpdateStatus};
    let (host, fake) = start("update");
    call(
        &host,
        Request::SwarmInit {
            advertise_addr: "127.0.0.1".into(),
            availability: Availability::Active,
            listen_addr: "127.0.0.1:0".into(),
            force_new_cluster: false,
            network: Default::default(),
            autolock: false,
        },
    );
    fake.images.lock().unwrap().insert(
        "alpine".into(),
        crate::runtime::ImageFacts {
            name: "docker.io/library/alpine:latest".into(),
            digest: "sha256:11".into(),
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    );
    let mut spec = ServiceSpec::new("web", "busybox");
    spec.mode = shoal_shared::types::ServiceMode::Replicated { replicas: 2 };
    spec.update.parallelism = 0;
    spec.update.monitor_ns = 100_000_000;
    spec.rollback.monitor_ns = 100_000_000;
    assert!(matches!(call(&host, Request::ServiceCreate { spec: Box::new(spec), registry_auth: None }), Reply::ServiceCreated { .. }));
    wait_for("2 running", || running(&host, "web") == 2);
    let inspect = |host: &str| match call(host, Request::ServiceInspect { service: "web".into() }) {
        Reply::Service(s) => *s,
        r => panic!("{r:?}"),
    };
    let v1 = inspect(&host);
    let state = |host: &str| inspect(host).update_status.map(|u: UpdateStatus| u.state);

    // A missing image is refused and changes nothing.
    let mut bad = v1.spec.clone();
    bad.task.container.image = "nosuchimage".into();
    let r = call(&host, Request::ServiceUpdate { service: "web".into(), spec: Box::new(bad), rollback: false, registry_auth: None });
    assert!(matches!(&r, Reply::Error { message, .. } if message.contains("nosuchimage")), "{r:?}");
    assert_eq!(inspect(&host), v1);

    // A new image is pinned like at creation and rolled out.
    let mut next = v1.spec.clone();
    next.task.container.image = "alpine".into();
    let r = call(&host, Request::ServiceUpdate { service: "web".into(), spec: Box::new(next), rollback: false, registry_auth: None });
    assert_eq!(r, Reply::ServiceUpdated { warnings: vec![] });
    let v2 = inspect(&host);
    assert_eq!(v2.spec.task.container.image, "alpine:latest@sha256:11");
    assert_eq!(v2.previous_spec.as_ref(), Some(&v1.spec));
    wait_for("update completed", || state(&host) == Some(UpdateState::Completed));
    let live: Vec<Task> = tasks(&host, "web").into_iter().filter(|t| t.desired_state == TaskState::Running).collect();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|t| t.spec.container.image == "alpine:latest@sha256:11" && t.status.state == TaskState::Running));
    wait_for("old containers gone", || fake.containers.lock().unwrap().len() == 2);

    // Rollback: specs swap and busybox runs again.
    let r =
        call(&host, Request::ServiceUpdate { service: "web".into(), spec: Box::new(v2.spec.clone()), rollback: true, registry_auth: None });
    assert_eq!(r, Reply::ServiceUpdated { warnings: vec![] });
    wait_for("rollback completed", || state(&host) == Some(UpdateState::RollbackCompleted));
    let v3 = inspect(&host);
    assert_eq!((v3.spec.clone(), v3.previous_spec.clone()), (v1.spec.clone(), Some(v2.spec.clone())));
    wait_for("busybox running", || {
        let ts = tasks(&host, "web");
        ts.iter()
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running && t.spec == v1.spec.task)
            .count()
            == 2
    });

    // Drain: nothing may run here; the slots wait, explained.
    let r = call(
        &host,
        Request::NodeUpdate { node: "self".into(), availability: Some(Availability::Drain), label_add: vec![], label_rm: vec![] },
    );
    assert_eq!(r, Reply::Ok);
    wait_for("drained", || {
        let ts = tasks(&host, "web");
        let pending = ts
            .iter()
            .filter(|t| t.desired_state == TaskState::Running)
            .all(|t| t.status.state == TaskState::Pending && t.status.err == "no suitable node (1 node not available for new tasks)");
        pending && fake.containers.lock().unwrap().is_empty()
    });
    let r = call(
        &host,
        Request::NodeUpdate { node: "ghost".into(), availability: Some(Availability::Active), label_add: vec![], label_rm: vec![] },
    );
    assert!(matches!(r, Reply::Error { kind: ErrorKind::NotFound, .. }), "{r:?}");
}

#[test]
fn a_failed_start_is_tried_once_and_reported() {
    use std::sync::atomic::Ordering;
    let (host, fake) = start("failstart");
    assert!(matches!(
        call(
            &host,
            Request::SwarmInit {
                advertise_addr: "127.0.0.1".into(),
                availability: Availability::Active,
                listen_addr: "127.0.0.1:0".into(),
                force_new_cluster: false,
                network: Default::default(),
                autolock: false,
            }
        ),
        Reply::SwarmInit { .. }
    ));
    fake.fail_starts.store(true, Ordering::SeqCst);
    let mut spec = ServiceSpec::new("bad", "busybox");
    spec.task.restart.condition = shoal_shared::types::RestartCondition::None;
    assert!(matches!(call(&host, Request::ServiceCreate { spec: Box::new(spec), registry_auth: None }), Reply::ServiceCreated { .. }));
    wait_for("the task to fail", || tasks(&host, "bad").iter().any(|t| t.status.state == TaskState::Failed));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.start_calls.load(Ordering::SeqCst), 1, "one start per task, not one per converge round");
    let t = &tasks(&host, "bad")[0];
    assert!(t.status.err.contains("executable file not found"), "{}", t.status.err);
}

#[test]
fn a_lone_managers_logs_come_through_the_gather() {
    let (host, _) = start("logs");
    let dir = std::env::temp_dir().join(format!("shoal-daemon-{}-logs", std::process::id()));
    let init = Request::SwarmInit {
        advertise_addr: "127.0.0.1".into(),
        availability: Availability::Active,
        listen_addr: "127.0.0.1:0".into(),
        force_new_cluster: false,
        network: Default::default(),
        autolock: false,
    };
    assert!(matches!(call(&host, init), Reply::SwarmInit { .. }));
    let mut spec = ServiceSpec::new("web", "busybox");
    spec.mode = shoal_shared::types::ServiceMode::Replicated { replicas: 2 };
    assert!(matches!(call(&host, Request::ServiceCreate { spec: Box::new(spec), registry_auth: None }), Reply::ServiceCreated { .. }));
    wait_for("2 running", || running(&host, "web") == 2);
    let ts = tasks(&host, "web");
    for t in &ts {
        std::fs::write(super::task_logs::TaskLogs::new(&dir).path(&t.id).unwrap(), format!("first {}\nlast {}\n", t.slot, t.slot)).unwrap();
    }
    let logs = |tail_lines, cursor| match call(&host, Request::ServiceLogs { service: "web".into(), tail_lines, cursor }) {
        Reply::ServiceLogs { chunks, cursor, warnings, more } => (chunks, cursor, warnings, more),
        r => panic!("{r:?}"),
    };
    let (chunks, cursor, warnings, more) = logs(None, vec![]);
    assert!(warnings.is_empty() && !more, "{warnings:?}");
    assert_eq!(chunks.len(), 2);
    for (c, t) in chunks.iter().zip(&ts) {
        assert_eq!(c.source, format!("web.{}.{}@{}", t.slot, &t.id[..12], host::hostname()));
        assert_eq!(c.data, format!("first {}\nlast {}\n", t.slot, t.slot).into_bytes());
    }
    let (again, same, _, _) = logs(None, cursor.clone());
    assert!(again.is_empty(), "nothing new after the cursor");
    assert_eq!(same, cursor);
    let (tail, _, _, _) = logs(Some(1), vec![]);
    assert!(tail.iter().all(|c| c.data.starts_with(b"last ")), "{tail:?}");
    match call(&host, Request::ServiceLogs { service: "nope".into(), tail_lines: None, cursor: vec![] }) {
        Reply::Error { kind, .. } => assert_eq!(kind, ErrorKind::NotFound),
        r => panic!("{r:?}"),
    }
}

#[test]
fn the_snapshot_interval_knob_takes_bounded_entry_counts_only() {
    assert_eq!(snapshot_interval("100"), Ok(100));
    assert_eq!(snapshot_interval(" 10000000 "), Ok(10_000_000));
    for bad in ["", "9", "0", "-5", "1e3", "10000001", "many"] {
        let e = snapshot_interval(bad).unwrap_err();
        assert!(e.contains("SHOAL_SNAPSHOT_INTERVAL_ENTRIES") && e.contains("from 10 to 10000000"), "{bad}: {e}");
    }
}

/// Healthchecks through the loop: a task is Starting until its first probe
/// (on the probe slots) succeeds, then Running; a task whose probes fail is
/// stopped, reported Failed with Swarm's error and replaced.
#[test]
fn healthchecks_gate_running_and_unhealthy_tasks_are_replaced() {
    use shoal_shared::types::HealthConfig;
    use std::sync::atomic::Ordering;
    let (host, fake) = start("health");
    let init = Request::SwarmInit {
        advertise_addr: "127.0.0.1".into(),
        availability: Availability::Active,
        listen_addr: "127.0.0.1:0".into(),
        force_new_cluster: false,
        network: Default::default(),
        autolock: false,
    };
    assert!(matches!(call(&host, init), Reply::SwarmInit { .. }));
    let mut spec = ServiceSpec::new("web", "busybox");
    spec.task.container.healthcheck =
        Some(HealthConfig { test: vec!["CMD-SHELL".into(), "true".into()], interval_ns: 1_000_000_000, ..Default::default() });
    assert!(matches!(call(&host, Request::ServiceCreate { spec: Box::new(spec), registry_auth: None }), Reply::ServiceCreated { .. }));
    wait_for("the task to start", || tasks(&host, "web").iter().any(|t| t.status.state == TaskState::Starting));
    assert_eq!(fake.probe_calls.load(Ordering::SeqCst), 0, "the first probe comes one interval after the start");
    wait_for("the task to be healthy", || running(&host, "web") == 1);
    assert!(fake.probe_calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(fake.health.lock().unwrap().values().next().map(|h| h.retries), Some(3), "the effective check in the label");

    let mut sick = ServiceSpec::new("sick", "busybox");
    sick.task.container.env = vec![crate::runtime::fake::UNHEALTHY_ENV.into()];
    sick.task.restart.delay_ns = 0;
    sick.task.container.healthcheck =
        Some(HealthConfig { test: vec!["CMD".into(), "false".into()], interval_ns: 50_000_000, retries: 2, ..Default::default() });
    assert!(matches!(call(&host, Request::ServiceCreate { spec: Box::new(sick), registry_auth: None }), Reply::ServiceCreated { .. }));
    wait_for("an unhealthy task and its replacement", || {
        let ts = tasks(&host, "sick");
        ts.iter().any(|t| t.status.state == TaskState::Failed && t.status.err == crate::worker::ERR_UNHEALTHY) && ts.len() >= 2
    });
    assert!(tasks(&host, "sick").iter().all(|t| t.status.state != TaskState::Running), "never healthy, never Running");
    assert_eq!(running(&host, "web"), 1, "the healthy service is untouched");
}
