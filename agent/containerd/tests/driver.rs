//! Integration tests of the containerd driver against a private containerd
//! started by `tests/lib/containerd.sh` (one instance and one namespace per
//! test), with a busybox image from `tests/lib/mkimage.sh`.
//!
//! Skipped (with a printed reason) when not root or containerd is missing,
//! unless `SHOAL_REQUIRE_CONTAINERD=1`, which turns the skip into a failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use shoal_containerd::{
    chain_id, Config, ContainerSpec, ContainerStatus, Driver, Error, ImageRecord, Signalled, EXEC_DIR_PREFIX, EXEC_ID_PREFIX,
};
use shoal_image::{Descriptor, ImageSource, ImportPlan};

const NAME: &str = "shoal.test/busybox:latest";

fn libdir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/lib")
}

/// Why containerd tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // targets/qemu-test.sh runs foreign-architecture test binaries under QEMU
    // user-mode: no containerd, runc, namespaces or cgroups for that architecture.
    if let Ok(target) = std::env::var("SHOAL_UNDER_QEMU") {
        return Some(format!(
            "running under QEMU user-mode for {target}: needs root, containerd, runc and namespaces of that architecture"
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    for bin in ["containerd", "runc", "ctr"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().map(|o| o.status.success()).unwrap_or(false);
        if !found {
            return Some(format!("{bin} not found in PATH"));
        }
    }
    None
}

/// A private containerd plus a connected driver; stops everything on drop.
struct Env {
    dir: PathBuf,
    ns: String,
    driver: Option<Driver>,
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        if let Some(reason) = skip_reason() {
            if std::env::var("SHOAL_REQUIRE_CONTAINERD").as_deref() == Ok("1") {
                panic!("{test}: containerd required (SHOAL_REQUIRE_CONTAINERD=1) but {reason}");
            }
            // Straight to stderr: the harness captures eprintln! of passing tests.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason} (set SHOAL_REQUIRE_CONTAINERD=1 to fail instead)");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/scd-{}-{n}", std::process::id()));
        let ns = format!("shoal-t{}-{n}-{}", std::process::id(), test.replace('_', "-"));
        let ns: String = ns.chars().take(70).collect::<String>().trim_end_matches('-').to_string();
        let st = Command::new("bash").arg(libdir().join("containerd.sh")).arg("start").arg(&dir).status().expect("run containerd.sh");
        assert!(st.success(), "containerd.sh start {} failed", dir.display());
        let mut env = Env { dir, ns, driver: None };
        env.driver =
            Some(Driver::connect(Config { socket: env.socket(), namespace: env.ns.clone(), call_timeout_ms: 10_000 }).expect("connect"));
        Some(env)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn d(&self) -> &Driver {
        self.driver.as_ref().expect("driver")
    }

    /// `ctr` in this instance and namespace; stdout.
    fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr").arg("--address").arg(self.socket()).args(["-n", &self.ns]).args(args).output().expect("run ctr");
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn import(&self) -> (ImageRecord, ImportPlan) {
        let img = image();
        let rec = self.d().import(&img.plan, &img.layout).expect("import");
        (rec, img.plan.clone())
    }

    fn log(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{id}.log"))
    }

    fn spec(&self, id: &str, plan: &ImportPlan, script: &str) -> ContainerSpec {
        ContainerSpec::new(id, NAME, &chain_id(&plan.diff_ids), vec!["sh".into(), "-c".into(), script.into()], self.log(id))
    }

    /// Exec processes the shim still holds for container `id`: their pid
    /// files (`<exec id>.pid`) in the task's bundle, removed by `Tasks.DeleteProcess`.
    fn exec_pid_files(&self, id: &str) -> Vec<String> {
        let bundle = self.dir.join("state/io.containerd.runtime.v2.task").join(&self.ns).join(id);
        std::fs::read_dir(&bundle)
            .unwrap_or_else(|e| panic!("bundle {}: {e}", bundle.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(EXEC_ID_PREFIX))
            .collect()
    }

    /// Processes in container `id` (`ctr tasks ps`), without the header.
    fn pids(&self, id: &str) -> Vec<String> {
        self.ctr(&["tasks", "ps", id]).lines().skip(1).filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    }

    /// Asserts nothing of container `id` is left: container, task, snapshot.
    fn assert_no_debris(&self, id: &str) {
        assert!(self.d().list().unwrap().iter().all(|c| c.id != id), "container {id} still listed");
        let tasks = self.ctr(&["tasks", "ls", "-q"]);
        assert!(!tasks.lines().any(|l| l == id), "task {id} left: {tasks}");
        let snaps = self.ctr(&["snapshots", "ls"]);
        assert!(!snaps.lines().any(|l| l.split_whitespace().next() == Some(id)), "snapshot {id} left: {snaps}");
        let cs = self.ctr(&["containers", "ls", "-q"]);
        assert!(!cs.lines().any(|l| l == id), "container {id} left: {cs}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.driver = None;
        let _ = Command::new("bash").arg(libdir().join("containerd.sh")).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Test-only reader of an extracted OCI layout (the real archive reader
/// lives in shoal-image).
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    fn json(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.blob_path(digest)).unwrap()).unwrap()
    }
}

impl ImageSource for Layout {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, shoal_image::Error> {
        let f = std::fs::File::open(self.blob_path(&desc.digest))
            .map_err(|e| shoal_image::Error::Other(format!("blob {}: {e}", desc.digest)))?;
        Ok(Box::new(f))
    }
}

fn desc(v: &serde_json::Value) -> Descriptor {
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap().to_string(),
        digest: v["digest"].as_str().unwrap().to_string(),
        size: v["size"].as_u64().unwrap(),
        platform: None,
    }
}

struct TestImage {
    layout: Layout,
    plan: ImportPlan,
}

/// Builds the busybox archive once per test process and plans its import.
fn image() -> &'static TestImage {
    static IMG: OnceLock<TestImage> = OnceLock::new();
    IMG.get_or_init(|| {
        // The archive is deterministic: every test process may reuse the
        // copy another one built (built aside, then renamed into place).
        let dir = std::env::temp_dir().join("shoal-containerd-test-image");
        if !dir.join("oci/index.json").is_file() {
            let tmp = std::env::temp_dir().join(format!("scd-img-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(tmp.join("oci")).unwrap();
            let tar = tmp.join("busybox.tar");
            let st = Command::new("bash").arg(libdir().join("mkimage.sh")).arg(&tar).arg(NAME).status().unwrap();
            assert!(st.success(), "mkimage.sh failed");
            let st = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(tmp.join("oci")).status().unwrap();
            assert!(st.success());
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        let layout = Layout { dir: dir.join("oci") };
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], NAME);
        let manifest = desc(m);
        let mj = layout.json(&manifest.digest);
        let config = desc(&mj["config"]);
        let layers: Vec<Descriptor> = mj["layers"].as_array().unwrap().iter().map(desc).collect();
        let cj = layout.json(&config.digest);
        let diff_ids = cj["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
        TestImage {
            plan: ImportPlan {
                name: NAME.into(),
                root: manifest.clone(),
                indexes: vec![],
                manifest,
                config,
                layers,
                diff_ids,
                platform: shoal_shared::platform::Platform::host(),
            },
            layout,
        }
    })
}

fn wait_for<T>(what: &str, ms: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_millis(ms);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {ms} ms waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(d: &Driver, id: &str) -> Option<ContainerStatus> {
    d.list().unwrap().into_iter().find(|c| c.id == id).map(|c| c.status)
}

#[test]
fn connect_to_missing_socket_fails_fast_and_clearly() {
    let t = Instant::now();
    let err =
        Driver::connect(Config { socket: "/run/shoal-missing/x.sock".into(), namespace: "t".into(), call_timeout_ms: 10_000 }).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, Error::Unavailable { .. }));
    assert_eq!(err.to_string(), "cannot connect to containerd at /run/shoal-missing/x.sock: no such file (is containerd running?)");
    // A socket that is not containerd: a plain unix listener that never answers.
    let dir = std::env::temp_dir().join(format!("scd-notcd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("x.sock");
    let _ = std::fs::remove_file(&sock);
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let t = Instant::now();
    let err = Driver::connect(Config { socket: sock.clone(), namespace: "t".into(), call_timeout_ms: 10_000 }).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_then_get_list_and_read() {
    let Some(env) = Env::new("import_then_get_list_and_read") else {
        return;
    };
    assert!(env.d().version().unwrap().starts_with("1."));
    assert_eq!(env.d().image_get(NAME).unwrap(), None);
    let (rec, plan) = env.import();
    assert_eq!(rec.name, NAME);
    assert_eq!(rec.target.digest, plan.manifest.digest);
    let got = env.d().image_get(NAME).unwrap().expect("image recorded");
    assert_eq!(got.target, rec.target);
    assert!(got.created_unix_nanos.unwrap() > 0);
    assert_eq!(got.size_bytes, rec.size_bytes);
    let list = env.d().image_list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, NAME);
    // Blobs are there, GC labels set, snapshot unpacked.
    let config = env.d().read_blob(&plan.config.digest, 1 << 20).unwrap();
    assert_eq!(config, std::fs::read(image().layout.blob_path(&plan.config.digest)).unwrap());
    let err = env.d().read_blob(&plan.layers[0].digest, 1000).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let content = env.ctr(&["content", "ls"]);
    let chain = chain_id(&plan.diff_ids);
    assert!(content.contains(&format!("containerd.io/gc.ref.snapshot.overlayfs={chain}")), "{content}");
    assert!(content.contains("containerd.io/gc.ref.content.l.0="), "{content}");
    let snaps = env.ctr(&["snapshots", "ls"]);
    assert!(snaps.contains(&chain), "{snaps}");
    // No lease left behind.
    assert_eq!(env.ctr(&["leases", "ls", "-q"]).trim(), "");
    // Missing image / blob.
    let err = env.d().read_blob(&format!("sha256:{}", "0".repeat(64)), 10).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    env.d().image_remove(NAME).unwrap();
    assert_eq!(env.d().image_get(NAME).unwrap(), None);
    assert!(env.d().image_remove(NAME).unwrap_err().is_not_found());
}

#[test]
fn import_twice_is_idempotent_and_cheap() {
    let Some(env) = Env::new("import_twice_is_idempotent") else {
        return;
    };
    let t = Instant::now();
    let (a, _) = env.import();
    let first = t.elapsed();
    let content = env.ctr(&["content", "ls", "-q"]);
    let snaps = env.ctr(&["snapshots", "ls"]);
    let t = Instant::now();
    let (b, _) = env.import();
    let second = t.elapsed();
    eprintln!("import: first {first:?}, again {second:?}");
    assert_eq!(a.target, b.target);
    assert_eq!(a.size_bytes, b.size_bytes);
    assert_eq!(content, env.ctr(&["content", "ls", "-q"]));
    assert_eq!(snaps, env.ctr(&["snapshots", "ls"]));
    assert_eq!(env.d().image_list().unwrap().len(), 1);
}

#[test]
fn run_log_stop_with_grace_then_remove() {
    let Some(env) = Env::new("run_log_stop_remove") else {
        return;
    };
    let (_, plan) = env.import();
    let mut s = env.spec("web1", &plan, "echo hello; echo oops >&2; sleep 1000");
    s.labels = BTreeMap::from([("shoal.service".to_string(), "web".to_string())]);
    let t = Instant::now();
    env.d().run(&s).unwrap();
    eprintln!("run: {:?}", t.elapsed());
    let list = env.d().list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].labels.get("shoal.service").map(String::as_str), Some("web"));
    assert!(matches!(list[0].status, ContainerStatus::Running { pid } if pid > 0), "{:?}", list[0].status);
    wait_for("hello in the log", 5_000, || {
        let log = std::fs::read_to_string(env.log("web1")).unwrap_or_default();
        (log.contains("hello") && log.contains("oops")).then_some(())
    });
    // Same id again: refused, the running one untouched.
    let err = env.d().run(&s).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(matches!(status(env.d(), "web1"), Some(ContainerStatus::Running { .. })));
    // sh as PID 1 ignores SIGTERM: SIGKILL after the grace period.
    let t = Instant::now();
    let code = env.d().stop("web1", 500).unwrap();
    let took = t.elapsed();
    assert_eq!(code, Some(137));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        matches!(status(env.d(), "web1"), Some(ContainerStatus::Stopped { exit_code: 137, exited_unix_nanos }) if exited_unix_nanos > 0)
    );
    // Stop again: already stopped.
    assert_eq!(env.d().stop("web1", 100).unwrap(), Some(137));
    env.d().remove("web1").unwrap();
    env.assert_no_debris("web1");
    // Idempotent.
    env.d().remove("web1").unwrap();
    assert_eq!(env.d().stop("web1", 100).unwrap(), None);
}

/// `signal` returns at once: the grace period is the caller's timer.
#[test]
fn signal_returns_at_once_and_kill_ends_it() {
    let Some(env) = Env::new("signal_returns_at_once") else {
        return;
    };
    let (_, plan) = env.import();
    // sleep as PID 1 ignores SIGTERM.
    env.d().run(&env.spec("sig1", &plan, "exec sleep 1000")).unwrap();
    let t = Instant::now();
    assert_eq!(env.d().signal("sig1", false).unwrap(), Signalled::Sent);
    assert!(t.elapsed() < Duration::from_secs(2), "no wait for the exit: {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(status(env.d(), "sig1"), Some(ContainerStatus::Running { .. })), "SIGTERM ignored");
    assert_eq!(env.d().signal("sig1", true).unwrap(), Signalled::Sent);
    wait_for("the kill", 5_000, || matches!(status(env.d(), "sig1"), Some(ContainerStatus::Stopped { exit_code: 137, .. })).then_some(()));
    assert_eq!(env.d().signal("sig1", true).unwrap(), Signalled::NoProcess { exit_code: Some(137) });
    env.d().remove("sig1").unwrap();
    assert_eq!(env.d().signal("sig1", false).unwrap(), Signalled::NoProcess { exit_code: None });
    env.assert_no_debris("sig1");
}

#[test]
fn sigterm_within_grace_and_remove_running() {
    let Some(env) = Env::new("sigterm_within_grace") else {
        return;
    };
    let (_, plan) = env.import();
    let s = env.spec("t1", &plan, "trap 'exit 7' TERM; while true; do sleep 0.1; done");
    env.d().run(&s).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.d().stop("t1", 5_000).unwrap(), Some(7));
    env.d().remove("t1").unwrap();
    // remove of a running container kills it.
    let s = env.spec("t2", &plan, "sleep 1000");
    env.d().run(&s).unwrap();
    env.d().remove("t2").unwrap();
    env.assert_no_debris("t2");
    env.assert_no_debris("t1");
}

#[test]
fn exits_delivers_self_exit() {
    let Some(env) = Env::new("exits_delivers_self_exit") else {
        return;
    };
    let (_, plan) = env.import();
    let exits = env.d().exits();
    let s = env.spec("ex1", &plan, "exit 3");
    env.d().run(&s).unwrap();
    let ev = wait_for("the exit event", 10_000, || exits.try_recv().ok());
    assert_eq!(ev.id, "ex1");
    assert_eq!(ev.exit_code, 3);
    assert!(ev.exited_unix_nanos > 0);
    assert!(matches!(status(env.d(), "ex1"), Some(ContainerStatus::Stopped { exit_code: 3, .. })));
    assert_eq!(env.d().stop("ex1", 1_000).unwrap(), Some(3));
    env.d().remove("ex1").unwrap();
    env.assert_no_debris("ex1");
}

#[test]
fn failed_runs_leave_no_debris() {
    let Some(env) = Env::new("failed_runs_leave_no_debris") else {
        return;
    };
    let (_, plan) = env.import();
    // Unknown chain id (image not imported).
    let mut s = env.spec("bad1", &plan, "true");
    s.chain_id = format!("sha256:{}", "1".repeat(64));
    let err = env.d().run(&s).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("import the image first"), "{err}");
    env.assert_no_debris("bad1");
    // Executable missing in the image: fails at task create/start.
    let mut s = env.spec("bad2", &plan, "true");
    s.args = vec!["/no/such/binary".into()];
    let err = env.d().run(&s).unwrap_err();
    eprintln!("bad2: {err}");
    assert!(matches!(err, Error::Rpc { .. }), "{err}");
    env.assert_no_debris("bad2");
    // Invalid input never reaches containerd.
    let mut s = env.spec("bad3", &plan, "true");
    s.args.clear();
    assert!(matches!(env.d().run(&s).unwrap_err(), Error::InvalidInput(_)));
    env.assert_no_debris("bad3");
    assert!(env.d().list().unwrap().is_empty());
    assert_eq!(env.ctr(&["leases", "ls", "-q"]).trim(), "");
}

#[test]
fn memory_limit_reaches_spec_and_cgroup() {
    let Some(env) = Env::new("memory_limit") else {
        return;
    };
    let (_, plan) = env.import();
    let mut s = env.spec("mem1", &plan, "sleep 1000");
    s.memory_limit_bytes = Some(64 << 20);
    s.nano_cpus = Some(500_000_000);
    s.env = vec!["FOO=bar".into()];
    env.d().run(&s).unwrap();
    let info: serde_json::Value = serde_json::from_str(&env.ctr(&["containers", "info", "mem1"])).unwrap();
    let spec = &info["Spec"];
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
    assert_eq!(spec["linux"]["cgroupsPath"], format!("/{}/mem1", env.ns));
    assert!(spec["process"]["env"].as_array().unwrap().iter().any(|e| e == "FOO=bar"));
    let cg = format!("/sys/fs/cgroup/memory/{}/mem1/memory.limit_in_bytes", env.ns);
    if let Ok(v) = std::fs::read_to_string(&cg) {
        assert_eq!(v.trim(), (64u64 << 20).to_string());
    } else {
        eprintln!("no cgroup v1 memory file at {cg}; checked the spec only");
    }
    env.d().remove("mem1").unwrap();
    env.assert_no_debris("mem1");
}

#[test]
fn latency_sequential_and_parallel() {
    let Some(env) = Env::new("latency") else {
        return;
    };
    let (_, plan) = env.import();
    let n = 10;
    let mut seq = Vec::new();
    for i in 0..n {
        let s = env.spec(&format!("seq{i}"), &plan, "sleep 1000");
        let t = Instant::now();
        env.d().run(&s).unwrap();
        seq.push(t.elapsed());
    }
    let t = Instant::now();
    let par: Vec<Duration> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let s = env.spec(&format!("par{i}"), &plan, "sleep 1000");
                let d = env.d().clone();
                sc.spawn(move || {
                    let t = Instant::now();
                    d.run(&s).unwrap();
                    t.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t.elapsed();
    let ms = |v: &[Duration]| -> String {
        let mut v: Vec<u128> = v.iter().map(|d| d.as_millis()).collect();
        v.sort();
        format!("min {} ms, median {} ms, max {} ms", v[0], v[v.len() / 2], v[v.len() - 1])
    };
    eprintln!("create->running sequential x{n}: {}", ms(&seq));
    eprintln!("create->running 10 parallel threads: {} (wall {} ms)", ms(&par), wall.as_millis());
    let running = env.d().list().unwrap().iter().filter(|c| matches!(c.status, ContainerStatus::Running { .. })).count();
    assert_eq!(running, 2 * n);
    let t = Instant::now();
    for c in env.d().list().unwrap() {
        env.d().remove(&c.id).unwrap();
    }
    eprintln!("remove x{}: {} ms", 2 * n, t.elapsed().as_millis());
    assert!(env.d().list().unwrap().is_empty());
}

#[test]
fn exits_survive_a_containerd_restart() {
    let Some(env) = Env::new("exits_survive_restart") else {
        return;
    };
    let (_, plan) = env.import();
    assert!(env.d().exits_live());
    env.d().run(&env.spec("long1", &plan, "sleep 1000")).unwrap();
    // Restart containerd only: tasks and shims survive.
    let pid: i32 = std::fs::read_to_string(env.dir.join("containerd.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: plain kill(2) of the containerd this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for("containerd to exit", 10_000, || {
        // SAFETY: signal 0 only checks the pid.
        (unsafe { libc::kill(pid, 0) } != 0).then_some(())
    });
    wait_for("the subscription to notice", 10_000, || (!env.d().exits_live()).then_some(()));
    assert!(matches!(env.d().list(), Err(Error::Unavailable { .. })));
    let st = Command::new("bash").arg(libdir().join("containerd.sh")).arg("start").arg(&env.dir).status().unwrap();
    assert!(st.success());
    let t = Instant::now();
    wait_for("the subscription to come back", 15_000, || env.d().exits_live().then_some(()));
    eprintln!("resubscribed {:?} after restart", t.elapsed());
    // Unary calls reconnect by themselves; the old task still runs.
    assert!(matches!(status(env.d(), "long1"), Some(ContainerStatus::Running { .. })));
    let exits = env.d().exits();
    env.d().run(&env.spec("ex4", &plan, "exit 4")).unwrap();
    let ev = wait_for("the exit event", 10_000, || exits.try_recv().ok());
    assert_eq!((ev.id.as_str(), ev.exit_code), ("ex4", 4));
    env.d().remove("ex4").unwrap();
    env.d().remove("long1").unwrap();
    env.assert_no_debris("long1");
}

#[test]
fn shim_group_shares_one_shim() {
    let Some(env) = Env::new("shim_group") else {
        return;
    };
    let (_, plan) = env.import();
    let shims = || {
        let needle = format!("-address {} ", env.socket().display());
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("containerd-shim-runc-v2") && c.contains(&needle))
            .count()
    };
    for i in 0..3 {
        let mut s = env.spec(&format!("g{i}"), &plan, "sleep 1000");
        s.shim_group = Some("grp".into());
        env.d().run(&s).unwrap();
    }
    env.d().run(&env.spec("solo", &plan, "sleep 1000")).unwrap();
    assert_eq!(shims(), 2);
    for id in ["g0", "g1", "g2", "solo"] {
        env.d().remove(id).unwrap();
        env.assert_no_debris(id);
    }
}

/// Serves one extra in-memory blob on top of the test layout.
struct WithBlob<'a> {
    base: &'a Layout,
    digest: String,
    bytes: Vec<u8>,
}

impl ImageSource for WithBlob<'_> {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, shoal_image::Error> {
        if desc.digest == self.digest {
            return Ok(Box::new(std::io::Cursor::new(self.bytes.clone())));
        }
        self.base.open_blob(desc)
    }
}

#[test]
fn index_root_and_gc_labels_keep_the_image_alive() {
    let Some(env) = Env::new("index_root_gc") else {
        return;
    };
    let img = image();
    let m = &img.plan.manifest;
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{{\"mediaType\":\"{}\",\"digest\":\"{}\",\"size\":{},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}}]}}",
        m.media_type, m.digest, m.size
    )
    .into_bytes();
    use sha2::Digest as _;
    let idx = Descriptor {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&index))),
        size: index.len() as u64,
        platform: None,
    };
    let src = WithBlob { base: &img.layout, digest: idx.digest.clone(), bytes: index };
    let mut plan = img.plan.clone();
    plan.root = idx.clone();
    plan.indexes = vec![idx.clone()];
    let rec = env.d().import(&plan, &src).unwrap();
    assert_eq!(rec.target, idx);
    let content = env.ctr(&["content", "ls"]);
    assert!(content.contains(&format!("containerd.io/gc.ref.content.m.0={}", m.digest)), "{content}");
    // A synchronous GC keeps everything the image references...
    let gc = || {
        env.ctr(&["leases", "create", "--id", "gc-trigger"]);
        env.ctr(&["leases", "delete", "--sync", "gc-trigger"]);
    };
    gc();
    let blobs = env.ctr(&["content", "ls", "-q"]);
    assert_eq!(blobs.lines().count(), 4, "{blobs}");
    let chain = chain_id(&plan.diff_ids);
    assert!(env.ctr(&["snapshots", "ls"]).contains(&chain));
    // ...and a running container keeps its snapshot after the image goes.
    env.d().run(&env.spec("keep1", &plan, "sleep 1000")).unwrap();
    env.d().image_remove(NAME).unwrap();
    gc();
    assert!(env.ctr(&["snapshots", "ls"]).contains(&chain));
    assert!(matches!(status(env.d(), "keep1"), Some(ContainerStatus::Running { .. })));
    env.d().remove("keep1").unwrap();
    gc();
    assert_eq!(env.ctr(&["content", "ls", "-q"]).trim(), "");
    assert!(!env.ctr(&["snapshots", "ls"]).contains(&chain));
}

#[test]
fn concurrent_imports_of_one_image_both_succeed() {
    let Some(env) = Env::new("concurrent_imports") else {
        return;
    };
    let img = image();
    let recs: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let d = env.d().clone();
                sc.spawn(move || d.import(&img.plan, &img.layout))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &recs {
        assert_eq!(r.as_ref().unwrap().target.digest, img.plan.manifest.digest);
    }
    assert_eq!(env.ctr(&["leases", "ls", "-q"]).trim(), "");
    env.d().run(&env.spec("after1", &img.plan, "exit 0")).unwrap();
    env.d().remove("after1").unwrap();
}

#[test]
fn stop_script_cleans_up_after_a_crash() {
    let Some(env) = Env::new("stop_script_after_crash") else {
        return;
    };
    let (_, plan) = env.import();
    let marker = format!("sleep {}", 40_000 + std::process::id() % 20_000);
    env.d().run(&env.spec("crash1", &plan, &format!("exec {marker}"))).unwrap();
    let procs = |needle: &str| -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let c = std::fs::read(e.path().join("cmdline")).ok()?;
                String::from_utf8_lossy(&c).replace('\0', " ").contains(needle).then_some(pid)
            })
            .collect()
    };
    assert_eq!(procs(&marker).len(), 1);
    // Crash containerd and the shim: the container process stays behind.
    let cd: i32 = std::fs::read_to_string(env.dir.join("containerd.pid")).unwrap().trim().parse().unwrap();
    let mut victims = procs(&format!("-address {} ", env.socket().display()));
    victims.push(cd);
    for pid in victims {
        // SAFETY: plain kill(2) of processes this test's containerd started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(200));
    // Usually the container process survives its shim; whether it does or
    // not, the stop script must leave nothing behind.
    eprintln!("after the crash: {} container process(es)", procs(&marker).len());
    let st = Command::new("bash").arg(libdir().join("containerd.sh")).arg("stop").arg(&env.dir).status().unwrap();
    assert!(st.success());
    wait_for("the container process to die", 5_000, || procs(&marker).is_empty().then_some(()));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(env.dir.to_str().unwrap()), "{mounts}");
    assert!(!Path::new("/run/containerd/runc").join(&env.ns).exists());
}

/// Exec tests take turns: each checks that no output directory of this test
/// process is left in the temp dir.
static EXEC_LOCK: Mutex<()> = Mutex::new(());

fn exec_lock() -> std::sync::MutexGuard<'static, ()> {
    EXEC_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `shoal-exec-<pid>-...` directories of this test process in the temp dir.
fn exec_dirs_left() -> Vec<String> {
    let prefix = format!("{EXEC_DIR_PREFIX}{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn exec_reports_exit_code_output_env_and_namespaces() {
    let _g = exec_lock();
    let Some(env) = Env::new("exec_reports_exit_code") else {
        return;
    };
    let (_, plan) = env.import();
    let mut s = env.spec("hc1", &plan, "exec sleep 1000");
    s.env = vec!["FOO=bar-from-spec".into()];
    s.hostname = "probe-host".into();
    s.cwd = "/tmp".into();
    env.d().run(&s).unwrap();
    let exits = env.d().exits();

    let t = Instant::now();
    let out = env.d().exec("hc1", &sh("echo hello; echo oops >&2; exit 3"), 5_000, 4096).unwrap();
    eprintln!("exec: {:?}", t.elapsed());
    assert_eq!(out.exit_code, Some(3), "{out:?}");
    let o = text(&out.output);
    assert!(o.contains("hello\n") && o.contains("oops\n"), "{o:?}");
    assert!(!out.truncated);
    // The container's env, cwd and user.
    let out = env.d().exec("hc1", &sh("echo $FOO; pwd; id -u"), 5_000, 4096).unwrap();
    assert_eq!((out.exit_code, text(&out.output).as_str()), (Some(0), "bar-from-spec\n/tmp\n0\n"));
    // The container's namespaces: UTS (hostname) and PID (its init is pid 1).
    let out = env.d().exec("hc1", &["hostname".to_string()], 5_000, 4096).unwrap();
    assert_eq!(text(&out.output), "probe-host\n");
    let out = env.d().exec("hc1", &sh("tr '\\0' ' ' </proc/1/cmdline"), 5_000, 4096).unwrap();
    assert_eq!(text(&out.output).trim(), "sleep 1000");

    // Latency of a trivial probe.
    let mut took: Vec<u128> = (0..10)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(env.d().exec("hc1", &["true".to_string()], 5_000, 4096).unwrap().exit_code, Some(0));
            t.elapsed().as_millis()
        })
        .collect();
    took.sort_unstable();
    eprintln!("exec true x10: min {} / median {} / max {} ms", took[0], took[5], took[9]);

    // Exec exits are not the container's exit.
    std::thread::sleep(Duration::from_millis(300));
    assert!(exits.try_recv().is_err(), "an exec's exit reached exits()");
    assert!(matches!(status(env.d(), "hc1"), Some(ContainerStatus::Running { .. })));
    assert_eq!(env.exec_pid_files("hc1"), Vec::<String>::new());
    assert_eq!(exec_dirs_left(), Vec::<String>::new());
    env.d().remove("hc1").unwrap();
    env.assert_no_debris("hc1");
}

#[test]
fn exec_timeout_kills_the_process_and_leaves_nothing() {
    let _g = exec_lock();
    let Some(env) = Env::new("exec_timeout") else {
        return;
    };
    let (_, plan) = env.import();
    env.d().run(&env.spec("hc2", &plan, "exec sleep 1000")).unwrap();
    let exits = env.d().exits();
    let t = Instant::now();
    let out = env.d().exec("hc2", &sh("echo started; sleep 30"), 500, 4096).unwrap();
    let took = t.elapsed();
    eprintln!("timed-out exec: {took:?}");
    assert_eq!(out.exit_code, None, "{out:?}");
    assert_eq!(text(&out.output), "started\n");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "{took:?}");
    // Nothing left: no exec in the shim, no process in the container but its init.
    assert_eq!(env.exec_pid_files("hc2"), Vec::<String>::new());
    assert_eq!(env.pids("hc2").len(), 1, "{:?}", env.pids("hc2"));
    assert!(matches!(status(env.d(), "hc2"), Some(ContainerStatus::Running { .. })));

    // A shell waiting for a child: the whole process group dies at the timeout.
    let t = Instant::now();
    let out = env.d().exec("hc2", &sh("sleep 30; echo never"), 500, 4096).unwrap();
    eprintln!("timed-out exec with a child: {:?}", t.elapsed());
    assert_eq!(out.exit_code, None, "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(env.pids("hc2").len(), 1, "the child survived: {:?}", env.pids("hc2"));
    assert_eq!(env.exec_pid_files("hc2"), Vec::<String>::new());

    // While one runs, the shim holds it (the check above can see a leak).
    let d = env.d().clone();
    let probe = std::thread::spawn(move || d.exec("hc2", &sh("sleep 30"), 1_500, 4096));
    let held = wait_for("the exec's pid file", 5_000, || Some(env.exec_pid_files("hc2")).filter(|f| !f.is_empty()));
    eprintln!("held by the shim while running: {held:?}");
    assert_eq!(probe.join().unwrap().unwrap().exit_code, None);
    assert_eq!(env.exec_pid_files("hc2"), Vec::<String>::new());

    // The container still runs and takes more execs.
    let out = env.d().exec("hc2", &sh("echo again"), 5_000, 4096).unwrap();
    assert_eq!((out.exit_code, text(&out.output).as_str()), (Some(0), "again\n"));
    assert!(matches!(status(env.d(), "hc2"), Some(ContainerStatus::Running { .. })));
    assert!(exits.try_recv().is_err(), "an exec's exit reached exits()");
    assert_eq!(env.exec_pid_files("hc2"), Vec::<String>::new());
    assert_eq!(exec_dirs_left(), Vec::<String>::new());
    env.d().remove("hc2").unwrap();
    env.assert_no_debris("hc2");
}

#[test]
fn exec_output_is_bounded() {
    let _g = exec_lock();
    let Some(env) = Env::new("exec_output_is_bounded") else {
        return;
    };
    let (_, plan) = env.import();
    env.d().run(&env.spec("hc3", &plan, "exec sleep 1000")).unwrap();
    // Printing forever: the first 4096 bytes, killed at the timeout.
    let t = Instant::now();
    // (`yes` is not linked in the image's /bin; busybox's sh runs its applets.)
    let out = env.d().exec("hc3", &sh("yes"), 1_000, 4096).unwrap();
    eprintln!("yes for 1 s: {:?}", t.elapsed());
    assert_eq!(out.exit_code, None);
    assert_eq!(out.output.len(), 4096);
    assert!(out.truncated);
    assert!(out.output.chunks(2).all(|c| c == b"y\n"));
    // 100 KB then exit: the rest is drained, so it finishes in time.
    let line = "0123456789".repeat(5);
    let script = format!("i=0; while [ $i -lt 2000 ]; do echo {line}; i=$((i+1)); done; echo done >&2; exit 0");
    let out = env.d().exec("hc3", &sh(&script), 10_000, 4096).unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.output.len(), 4096);
    assert!(out.truncated);
    assert!(text(&out.output).starts_with(&format!("{line}\n{line}\n")));
    // No room at all.
    let out = env.d().exec("hc3", &sh("echo x"), 5_000, 0).unwrap();
    assert_eq!((out.exit_code, out.output.len(), out.truncated), (Some(0), 0, true));
    assert!(matches!(status(env.d(), "hc3"), Some(ContainerStatus::Running { .. })));
    assert_eq!(env.exec_pid_files("hc3"), Vec::<String>::new());
    assert_eq!(exec_dirs_left(), Vec::<String>::new());
    env.d().remove("hc3").unwrap();
    env.assert_no_debris("hc3");
}

#[test]
fn exec_errors_are_typed_and_leave_nothing() {
    let _g = exec_lock();
    let Some(env) = Env::new("exec_errors") else {
        return;
    };
    let (_, plan) = env.import();
    env.d().run(&env.spec("hc4", &plan, "exec sleep 1000")).unwrap();
    // No such executable: containerd refuses the start.
    let err = env.d().exec("hc4", &["/no/such/probe".to_string()], 5_000, 4096).unwrap_err();
    eprintln!("missing executable: {err}");
    assert!(matches!(err, Error::Rpc { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/probe"), "{err}");
    assert_eq!(env.exec_pid_files("hc4"), Vec::<String>::new());
    assert!(matches!(status(env.d(), "hc4"), Some(ContainerStatus::Running { .. })));
    // No container.
    let err = env.d().exec("nope1", &sh("true"), 5_000, 4096).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.to_string(), "container nope1 not found");
    // A container whose task exited.
    env.d().run(&env.spec("hc5", &plan, "exit 5")).unwrap();
    wait_for("hc5 to exit", 5_000, || matches!(status(env.d(), "hc5"), Some(ContainerStatus::Stopped { .. })).then_some(()));
    let err = env.d().exec("hc5", &sh("true"), 5_000, 4096).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("exited with code 5"), "{err}");
    // Bad input never reaches containerd.
    for (id, args, timeout, max) in
        [("hc4", vec![], 5_000, 4096), ("hc4", sh("true"), 0, 4096), ("hc4", sh("true"), 5_000, 64 << 20), ("a/b", sh("true"), 5_000, 4096)]
    {
        let err = env.d().exec(id, &args, timeout, max).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
    assert_eq!(exec_dirs_left(), Vec::<String>::new());
    env.d().remove("hc4").unwrap();
    env.d().remove("hc5").unwrap();
    env.assert_no_debris("hc4");
}
