//! Harness for integration tests that drive the real `shoal` binary against
//! a real, private containerd (started by `tests/lib/containerd.sh` on its
//! own socket, never the system one).
//!
//! Every wait is bounded and says what it waited for. A [`Node`] cleans up
//! after itself on drop: it kills its daemon, removes every task container
//! and stops its containerd. Tests that need root and containerd skip with a
//! printed reason, unless `SHOAL_REQUIRE_CONTAINERD=1` (CI sets it), which
//! turns a missing prerequisite into a failure.
//!
//! Multi-node clusters (one network namespace per daemon) live in [`cluster`];
//! added link delay (an NFQUEUE queue with held verdicts) in [`delayq`].

pub mod cluster;
pub mod delayq;
pub mod token;
pub use token::TokenServer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").to_path_buf()
}

/// The `shoal` binary under test (built by `cargo build -p shoal-agent`).
pub fn shoal_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHOAL_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let bin = target.join("debug").join("shoal");
    assert!(bin.exists(), "{} is missing: build it first with `cargo build -p shoal-agent` (targets/test.sh does)", bin.display());
    bin
}

/// Returns a reason to skip, or panics when prerequisites are required.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let reason = if !root {
        Some("not root".to_string())
    } else if Command::new("containerd").arg("--version").output().is_err() {
        Some("containerd is not installed".to_string())
    } else {
        None
    };
    if let Some(r) = &reason {
        if std::env::var("SHOAL_REQUIRE_CONTAINERD").as_deref() == Ok("1") {
            panic!("integration test prerequisites missing ({r}) and SHOAL_REQUIRE_CONTAINERD=1");
        }
        eprintln!("SKIP: {r}; these tests need root and containerd (targets/setup.sh installs it)");
    }
    reason
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {:?} waiting for {what}", timeout);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] that also tells what it saw last: `f` returns `Err(seen)`
/// while the wait goes on, and the timeout message quotes the last `seen`.
pub fn wait_for_seen<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let seen = match f() {
            Ok(v) => return v,
            Err(s) => s,
        };
        assert!(start.elapsed() < timeout, "timed out after {:?} waiting for {what}; last seen: {seen}", timeout);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `shoal -H unix://SOCKET ARGS` with `input` written to its stdin (a pipe,
/// not a terminal: `swarm unlock` reads the key from it).
pub fn shoal_stdin_at(socket: &Path, args: &[&str], input: &str) -> Run {
    shoal_env_at(socket, args, &[], input)
}

/// [`shoal_stdin_at`] with extra environment variables for the CLI (e.g.
/// `SHOAL_CONFIG`, where `shoal login` keeps credentials).
pub fn shoal_env_at(socket: &Path, args: &[&str], env: &[(&str, &str)], input: &str) -> Run {
    use std::io::Write;
    let mut child = Command::new(shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    Run::from(child.wait_with_output().expect("shoal output"))
}

/// A throwaway CA (`DIR/NAME.pem`) and a server certificate for `ip` signed
/// by it (`DIR/NAME-srv.pem`, `DIR/NAME-srv.key`), made with openssl.
pub fn make_test_ca(dir: &Path, name: &str, ip: &str) {
    let script = format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} \
         && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}-srv.key -out {name}-srv.csr -subj /CN=shoal-test \
         && printf 'subjectAltName=IP:{ip}\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' > {name}.ext \
         && openssl x509 -req -in {name}-srv.csr -CA {name}.pem -CAkey {name}.key -CAcreateserial -out {name}-srv.pem -days 2 -extfile {name}.ext 2>/dev/null"
    );
    let out = Command::new("sh").arg("-c").arg(&script).current_dir(dir).output().expect("run openssl");
    assert!(
        out.status.success(),
        "making a test CA failed (is openssl installed? targets/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bcrypt htpasswd file at `path` with one user (Debian's apache2-utils).
pub fn make_htpasswd(path: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("run htpasswd (apache2-utils; targets/setup.sh)");
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(path, out.stdout).expect("write htpasswd");
}

/// A temporary archive path no other test thread or process uses: tests in
/// one binary run in parallel and may build the same image at once (each
/// builds its own copy, then renames it into place atomically).
fn private_tmp(prefix: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{prefix}-{}-{n}.tar", std::process::id()))
}

/// The busybox OCI archive built by `tests/lib/mkimage.sh` (cached per run).
pub fn test_image() -> PathBuf {
    let out = std::env::temp_dir().join("shoal-it-busybox.tar");
    if !out.exists() {
        let tmp = private_tmp("shoal-it-busybox");
        let st =
            Command::new(root().join("tests/lib/mkimage.sh")).arg(&tmp).arg("shoal.test/busybox:latest").status().expect("run mkimage.sh");
        assert!(st.success(), "mkimage.sh failed");
        std::fs::rename(&tmp, &out).expect("publish test image");
    }
    out
}

/// The busybox archive with a `HEALTHCHECK` in its config (Docker's JSON,
/// e.g. `{"Test":["CMD-SHELL","test -f /tmp/ok"],"Interval":1000000000}`),
/// named `name`; cached as [`test_image`] is, per name and healthcheck.
pub fn test_image_with_healthcheck(name: &str, healthcheck: &str) -> PathBuf {
    // FNV-1a of what goes in: another name or check is another file.
    let key = shoal_shared::fnv1a64(format!("{name} {healthcheck}").bytes());
    let out = std::env::temp_dir().join(format!("shoal-it-busybox-health-{key:016x}.tar"));
    if !out.exists() {
        let tmp = private_tmp(&format!("shoal-it-busybox-health-{key:016x}"));
        let st = Command::new(root().join("tests/lib/mkimage.sh"))
            .arg(&tmp)
            .arg(name)
            .env("MKIMAGE_HEALTHCHECK", healthcheck)
            .status()
            .expect("run mkimage.sh");
        assert!(st.success(), "mkimage.sh failed");
        std::fs::rename(&tmp, &out).expect("publish test image");
    }
    out
}

/// The result of one CLI call.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// One node: a private containerd and a shoal daemon with its own data dir.
pub struct Node {
    pub dir: PathBuf,
    pub namespace: String,
    daemon: Option<Child>,
}

impl Node {
    /// Starts containerd for a new node (the daemon is started separately).
    pub fn new() -> Node {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/shoal-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let st =
            Command::new(root().join("tests/lib/containerd.sh")).arg("start").arg(dir.join("ctrd")).status().expect("run containerd.sh");
        assert!(st.success(), "containerd did not start");
        Node { dir, namespace: format!("shoal-it-{}-{n}", std::process::id()), daemon: None }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("shoal.sock")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("ctrd/containerd.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The daemon command line (not started).
    pub fn daemon_command(&self) -> Command {
        self.daemon_command_with(&self.socket(), &self.containerd_socket())
    }

    /// The daemon command line with another control or containerd socket.
    pub fn daemon_command_with(&self, socket: &Path, containerd: &Path) -> Command {
        let mut c = Command::new(shoal_bin());
        c.arg("daemon")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--socket")
            .arg(socket)
            .arg("--containerd")
            .arg(containerd)
            .arg("--containerd-namespace")
            .arg(&self.namespace);
        c
    }

    /// Starts the daemon and waits until it answers.
    pub fn start_daemon(&mut self) {
        self.start_daemon_env(&[]);
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_daemon_env(&mut self, env: &[(&str, &str)]) {
        self.start_daemon_with(&[], env);
    }

    /// SIGTERMs the daemon and waits (bounded) for it to exit; returns its exit code.
    pub fn terminate_daemon(&mut self) -> Option<i32> {
        let mut c = self.daemon.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let status = wait_for("the daemon to exit after SIGTERM", Duration::from_secs(10), || c.try_wait().ok().flatten());
        status.code()
    }

    /// The daemon's process id, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// SIGKILLs the daemon (containers keep running).
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A power cut and the boot after it, up to containerd: the daemon is
    /// SIGKILLed; containerd, its shims and every container process die;
    /// what lives on tmpfs on a device (containerd's state dir, runc's state,
    /// the containers' cgroups and mounts) is gone while containerd's root
    /// (containers, snapshots, images) survives; then containerd starts
    /// again. The daemon is the caller's to start.
    pub fn power_cycle(&mut self) {
        self.kill_daemon();
        power_cycle_containerd(&self.dir.join("ctrd"));
    }

    /// Starts the daemon with extra flags and environment variables.
    pub fn start_daemon_with(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).expect("daemon log");
        let mut cmd = self.daemon_command();
        cmd.args(args).envs(env.iter().copied());
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn shoal daemon");
        self.daemon = Some(child);
        wait_for("the daemon to answer", Duration::from_secs(15), || (self.shoal(&["version"]).code == 0).then_some(()));
    }

    /// Runs `shoal ARGS` with extra environment variables and `input` on
    /// its stdin (a pipe).
    pub fn shoal_with(&self, args: &[&str], env: &[(&str, &str)], input: &str) -> Run {
        shoal_env_at(&self.socket(), args, env, input)
    }

    /// Runs `shoal ARGS` against this node's daemon.
    pub fn shoal(&self, args: &[&str]) -> Run {
        let out = Command::new(shoal_bin())
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal");
        Run::from(out)
    }

    /// Runs `ctr` against this node's containerd, in its namespace.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.containerd_socket())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .output()
            .expect("run ctr");
        assert!(out.status.success(), "ctr {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into()
    }

    /// Container ids in containerd (not Shoal's view).
    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"]).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// `(id, pid, status)` of every task in containerd.
    pub fn tasks(&self) -> Vec<(String, String, String)> {
        self.ctr(&["tasks", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
            })
            .collect()
    }

    /// Snapshot keys in containerd's overlay snapshotter.
    pub fn snapshots(&self) -> Vec<String> {
        self.ctr(&["snapshots", "ls"]).lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
    }

    /// Number of RUNNING tasks in containerd.
    pub fn running(&self) -> usize {
        self.tasks().iter().filter(|t| t.2 == "RUNNING").count()
    }

    /// The daemon's stderr so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Initialises a swarm and loads the test image.
    pub fn init_with_image(&mut self) {
        self.start_daemon();
        self.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
        let img = test_image();
        self.shoal(&["image", "load", "-i", img.to_str().expect("utf-8 path")]).ok();
    }

    /// [`Node::init_with_image`], then a service `name` of `replicas` tasks
    /// running `sleep 1000`, waited for (bounded) in containerd.
    pub fn init_with_sleepers(&mut self, name: &str, replicas: usize) {
        self.init_with_image();
        let n = replicas.to_string();
        self.shoal(&["service", "create", "-d", "--name", name, "--replicas", &n, "shoal.test/busybox", "sleep", "1000"]).ok();
        wait_for(&format!("{replicas} running tasks"), Duration::from_secs(40), || (self.running() == replicas).then_some(()));
    }

    /// `service ps` rows as JSON objects.
    pub fn ps_json(&self, service: &str) -> Vec<serde_json::Value> {
        let r = self.shoal(&["service", "ps", "--no-trunc", "--format", "json", service]).ok();
        r.stdout.lines().map(|l| serde_json::from_str(l).expect("ps json line")).collect()
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// Whether `needle` occurs in any file under `dir` (bounded: files up to
/// 64 MiB); the first such file. For "never on disk" checks.
pub fn found_in_files(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && m.len() <= 64 << 20 {
                if let Ok(b) = std::fs::read(&p) {
                    if b.windows(needle.len()).any(|w| w == needle) {
                        return Some(p);
                    }
                }
            }
        }
    }
    None
}

/// Where a daemon with data dir `data_dir` keeps its tasks' secrets and
/// configs (`agent/src/daemon/task_files.rs`: a tmpfs, never the disk).
pub fn task_files_root(data_dir: &Path) -> PathBuf {
    let h = shoal_shared::fnv1a64(data_dir.as_os_str().as_encoded_bytes().iter().copied());
    PathBuf::from("/dev/shm").join(format!("shoal-files-{h:016x}"))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_daemon();
        let _ = std::fs::remove_dir_all(task_files_root(&self.data_dir()));
        let _ = Command::new(root().join("tests/lib/containerd.sh")).arg("stop").arg(self.dir.join("ctrd")).status();
        // The tasks' network namespaces are bound under the data dir: unbound, they go with their
        // veths (the daemon ran in this machine's namespace, and was killed, not told to leave).
        for e in std::fs::read_dir(self.data_dir().join("netns")).into_iter().flatten().flatten() {
            let _ = shoal_netlink::netns::remove(&e.path());
        }
        let _ = Command::new("umount").arg("-l").arg(self.data_dir().join("netns")).status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {} for inspection; daemon log:\n{}", self.dir.display(), self.daemon_log());
        }
    }
}

/// `containerd.sh powercut DIR` then `containerd.sh start DIR` (see [`Node::power_cycle`]).
pub fn power_cycle_containerd(ctrd: &Path) {
    for step in ["powercut", "start"] {
        let st = Command::new(root().join("tests/lib/containerd.sh")).arg(step).arg(ctrd).status().expect("run containerd.sh");
        assert!(st.success(), "containerd.sh {step} {} failed", ctrd.display());
    }
}

/// A throwaway local registry (Debian's `docker-registry`, plain HTTP on a
/// free port of 127.0.0.1 or of a given local address), stopped on drop.
pub struct Registry {
    dir: PathBuf,
    /// The address it listens on (`127.0.0.1` unless [`Registry::start_on`] said otherwise).
    pub host: String,
    pub port: u16,
    /// `USER:PASSWORD` skopeo pushes with (a registry with basic auth).
    push_creds: Option<String>,
}

/// How [`Registry::start_with`] serves.
#[derive(Clone, Debug, Default)]
pub struct RegistryOpts {
    /// PEM certificate and key: HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A bcrypt htpasswd file: basic auth.
    pub htpasswd: Option<PathBuf>,
    /// `USER:PASSWORD` for pushing to it.
    pub push_creds: Option<String>,
    /// Token authentication: clients get their tokens from this server.
    pub token: Option<(String, PathBuf)>,
}

impl Registry {
    /// Starts one on 127.0.0.1 via `tests/lib/registry.sh` (bounded wait inside).
    pub fn start() -> Registry {
        Registry::start_on("127.0.0.1")
    }

    /// Starts one listening on `host`, an IPv4 address of this machine (for
    /// example a cluster bridge's address, which the nodes' namespaces reach).
    pub fn start_on(host: &str) -> Registry {
        Registry::start_with(host, &RegistryOpts::default())
    }

    /// Starts one listening on `host` with TLS and/or basic auth.
    pub fn start_with(host: &str, opts: &RegistryOpts) -> Registry {
        let port = std::net::TcpListener::bind((host, 0)).expect("free port").local_addr().expect("local addr").port();
        let dir = PathBuf::from(format!("/tmp/shoal-it-reg-{}-{port}", std::process::id()));
        let mut cmd = Command::new(root().join("tests/lib/registry.sh"));
        if let Some((cert, key)) = &opts.tls {
            cmd.env("REGISTRY_TLS_CERT", cert).env("REGISTRY_TLS_KEY", key);
        }
        if let Some(h) = &opts.htpasswd {
            cmd.env("REGISTRY_HTPASSWD", h);
        }
        if let Some((realm, cert)) = &opts.token {
            cmd.env("REGISTRY_TOKEN_REALM", realm)
                .env("REGISTRY_TOKEN_SERVICE", token::TOKEN_SERVICE)
                .env("REGISTRY_TOKEN_ISSUER", token::TOKEN_ISSUER)
                .env("REGISTRY_TOKEN_ROOTCERTS", cert);
        }
        let st = cmd.arg("start").arg(&dir).arg(port.to_string()).arg(host).status().expect("run registry.sh");
        assert!(st.success(), "registry on {host}:{port} did not start");
        Registry { dir, host: host.to_string(), port, push_creds: opts.push_creds.clone() }
    }

    /// The registry's own log (distribution's access lines: one per request
    /// with its method and URI).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many times it served `GET /v2/.../blobs/DIGEST` (status 200 or
    /// 206) for each digest, from its access lines (`"GET URI HTTP/1.1" STATUS`).
    pub fn blob_gets(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for l in self.log().lines() {
            let Some(i) = l.find("\"GET /v2/") else { continue };
            let rest = &l[i + 1..];
            let Some(b) = rest.find("/blobs/sha256:") else { continue };
            let digest: String = rest[b + "/blobs/".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == ':').collect();
            let status = rest.split('"').nth(1).and_then(|after| after.split_whitespace().next()).unwrap_or("");
            if status == "200" || status == "206" {
                *out.entry(digest).or_insert(0) += 1;
            }
        }
        out
    }

    /// `HOST:PORT`, the registry part of references to it.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Pushes an OCI archive as `HOST:PORT/NAME` (`all`: every platform of an index); returns that reference.
    pub fn push(&self, archive: &Path, name: &str, all: bool) -> String {
        let dest = format!("{}/{name}", self.addr());
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = &self.push_creds {
            c.arg("--dest-creds").arg(creds);
        }
        if all {
            c.arg("--all");
        }
        let out = c.arg(format!("oci-archive:{}", archive.display())).arg(format!("docker://{dest}")).output().expect("run skopeo");
        assert!(out.status.success(), "skopeo push failed: {}", String::from_utf8_lossy(&out.stderr));
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tests/lib/registry.sh")).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP relay in front of a server (a registry) that counts the bytes it
/// passes back to clients and closes a connection once that count reaches
/// each of `cuts_at`, in order: a link that breaks part way.
pub struct Relay {
    pub port: u16,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cuts_done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    /// Listens on `listen` (an IPv4 address of this machine), relaying to `upstream`.
    pub fn start(listen: &str, upstream: (&str, u16), cuts_at: Vec<u64>) -> Relay {
        Relay::start_limited(listen, upstream, cuts_at, None)
    }

    /// [`Relay::start`] that passes at most `bytes_per_s` back to all its
    /// clients together (a site's slow uplink), when given.
    pub fn start_limited(listen: &str, upstream: (&str, u16), cuts_at: Vec<u64>, bytes_per_s: Option<u64>) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        use std::sync::Arc;
        // When the uplink is free next (all connections share it; idle time earns no credit).
        let free_at = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
        let listener = std::net::TcpListener::bind((listen, 0)).expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let served = Arc::new(AtomicU64::new(0));
        let cuts_done = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(cuts_at);
        let (s, d) = (served.clone(), cuts_done.clone());
        let upstream = (upstream.0.to_string(), upstream.1);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(up) = std::net::TcpStream::connect((upstream.0.as_str(), upstream.1)) else { continue };
                let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), up.try_clone()) else { continue };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut u_write);
                    let _ = u_write.shutdown(std::net::Shutdown::Write);
                });
                let (s, d, cuts, free_at) = (s.clone(), d.clone(), cuts.clone(), free_at.clone());
                std::thread::spawn(move || {
                    let (mut up, mut client) = (up, client);
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Some(rate) = bytes_per_s.filter(|r| *r > 0) {
                            // These bytes take the uplink after what is already on it.
                            let done = {
                                let mut f = free_at.lock().unwrap_or_else(|e| e.into_inner());
                                *f = (*f).max(std::time::Instant::now()) + std::time::Duration::from_secs_f64(n as f64 / rate as f64);
                                *f
                            };
                            if let Some(wait) = done.checked_duration_since(std::time::Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let before = s.fetch_add(n as u64, Ordering::SeqCst);
                        let next = cuts.get(d.load(Ordering::SeqCst)).copied();
                        if let Some(cut) = next.filter(|&c| c > before && c <= before + n as u64) {
                            let keep = (cut - before) as usize;
                            let _ = client.write_all(&buf[..keep]);
                            s.fetch_sub((n - keep) as u64, Ordering::SeqCst);
                            d.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = up.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Relay { port, served, cuts_done }
    }

    /// Bytes passed back so far.
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts_done(&self) -> usize {
        self.cuts_done.load(std::sync::atomic::Ordering::SeqCst)
    }
}
