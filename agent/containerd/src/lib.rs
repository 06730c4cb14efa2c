//! Shoal's containerd driver: images, snapshots, containers and tasks over
//! containerd's gRPC socket. The only crate that links tokio and tonic.
//!
//! The public API is blocking and runtime-free: a [`Driver`] owns one tokio
//! `current_thread` runtime on its own thread (`shoal-containerd`); every
//! method spawns its work there and waits on a std channel with a timeout.
//! The smol-based daemon calls these methods through `smol::unblock`.
//!
//! [`Driver::exec`] runs a command in a running container (health probes):
//! the container's own process spec with other args, its output read
//! (bounded) from a FIFO, killed at its timeout, always deleted from the
//! shim afterwards; see `exec.rs`.
//!
//! See `README.md` next to `Cargo.toml` for the call sequences, leases,
//! labels, GC labels and the OCI spec defaults.

mod containers;
mod error;
mod events;
mod exec;
mod images;
mod rpc;
pub mod spec;
pub mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use containers::{HOST_FILES, SPEC_TYPE_URL};
pub use error::Error;
pub use events::{EXIT_TOPIC, PROBE_TOPIC, RESUBSCRIBE_BACKOFF_MAX_MS, RESUBSCRIBE_BACKOFF_MIN_MS, SUBSCRIBE_LIVE_WAIT_MS};
pub use exec::{
    sweep_stale_exec_dirs, EXEC_DIR_PREFIX, EXEC_DRAIN_MS, EXEC_ID_PREFIX, EXEC_KILL_WAIT_MS, EXEC_OUTPUT_MAX_BYTES, PROCESS_TYPE_URL,
};
pub use images::{
    BlobEvent, BlobObserver, GC_REF_CONFIG, GC_REF_LAYER_PREFIX, GC_REF_MANIFEST_PREFIX, GC_REF_SNAPSHOT, UNCOMPRESSED_LABEL,
    WRITE_CHUNK_BYTES,
};

use rpc::Ctx;

/// The snapshotter every snapshot lives in.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The runtime every container runs under.
pub const RUNTIME: &str = "io.containerd.runc.v2";
/// Container label holding the stop signal (set by [`Driver::run`]).
pub const STOP_SIGNAL_LABEL: &str = "io.shoal.stop-signal";
/// Image label holding the sum of manifest, config and layer sizes.
pub const IMAGE_SIZE_LABEL: &str = "io.shoal.image.size";
/// Capacity of the [`Driver::exits`] channel; events beyond it are dropped.
pub const EXIT_CHANNEL_CAPACITY: usize = 1024;
/// How long [`Driver::connect`] may take before it reports containerd unavailable.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// `Diff.Apply` of one layer may take this many call timeouts.
pub const LAYER_APPLY_TIMEOUT_FACTOR: u64 = 30;

/// A sensible [`Config::call_timeout_ms`].
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 10_000;

/// How to reach containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// containerd's gRPC socket, e.g. `/run/containerd/containerd.sock`.
    pub socket: PathBuf,
    /// containerd namespace everything lives in (one per node).
    pub namespace: String,
    /// Timeout of each unary call, e.g. `10_000`.
    pub call_timeout_ms: u64,
}

impl Config {
    /// `socket` and `namespace` with [`DEFAULT_CALL_TIMEOUT_MS`].
    pub fn new(socket: impl Into<PathBuf>, namespace: &str) -> Config {
        Config { socket: socket.into(), namespace: namespace.to_string(), call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS }
    }
}

/// An image record in containerd's image store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    /// What the name points at (index or manifest); `platform` is `None`.
    pub target: shoal_image::Descriptor,
    pub created_unix_nanos: Option<i64>,
    /// Manifest + config + layer bytes, as recorded by [`Driver::import`]
    /// (`None` for images imported by other tools).
    pub size_bytes: Option<u64>,
}

/// A mount into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Host path for [`MountKind::Bind`]; ignored for tmpfs.
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    pub kind: MountKind,
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Tmpfs,
}

/// Everything [`Driver::run`] needs to start one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container id, containerd identifier rules (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 chars).
    pub id: String,
    /// Image record name (stored on the container, informational).
    pub image: String,
    /// Top snapshot of the image: [`chain_id`] of the config's diff ids.
    pub chain_id: String,
    /// Full argv, non-empty.
    pub args: Vec<String>,
    /// `K=V`; a default `PATH` is added when missing.
    pub env: Vec<String>,
    /// Absolute working directory; empty means `/`.
    pub cwd: String,
    /// `(uid, gid)`; `None` means root.
    pub user: Option<(u32, u32)>,
    /// `NAME|UID[:GROUP|GID]` with a name in it, resolved from the image's
    /// `/etc/passwd` and `/etc/group` once its snapshot is prepared
    /// ([`users`]); replaces `user`. An unknown name fails the run.
    pub user_name: Option<String>,
    pub hostname: String,
    /// Container labels (keys starting with `io.shoal.` are reserved).
    pub labels: BTreeMap<String, String>,
    /// Absolute host path; stdout and stderr are appended there.
    pub log_path: PathBuf,
    /// An absolute path to an executable that the shim runs for the
    /// container as `EXE log-driver LOG_PATH`, with the container's stdout
    /// and stderr on fds 3 and 4 (containerd's `binary://` logging); it
    /// writes `log_path`. `None`: the shim appends to `log_path` itself.
    pub log_driver: Option<PathBuf>,
    pub memory_limit_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU (Docker's `--cpus` * 1e9).
    pub nano_cpus: Option<i64>,
    pub mounts: Vec<MountSpec>,
    /// Signal sent first by [`Driver::stop`] (default `SIGTERM`).
    pub stop_signal: i32,
    /// Containers with the same group share one runc shim process.
    pub shim_group: Option<String>,
    /// The network namespace to join, bound at this path (made by the
    /// caller). `None`: the container shares the host's network namespace
    /// and sees the host's `/etc/hosts` and `/etc/resolv.conf`; with a
    /// namespace the caller mounts its own (in `mounts`).
    pub netns: Option<PathBuf>,
}

impl ContainerSpec {
    /// A spec with defaults: root user, cwd `/`, hostname = id, SIGTERM, no
    /// limits, no mounts.
    pub fn new(id: &str, image: &str, chain_id: &str, args: Vec<String>, log_path: impl Into<PathBuf>) -> ContainerSpec {
        ContainerSpec {
            id: id.to_string(),
            image: image.to_string(),
            chain_id: chain_id.to_string(),
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: None,
            user_name: None,
            hostname: id.to_string(),
            labels: BTreeMap::new(),
            log_path: log_path.into(),
            log_driver: None,
            memory_limit_bytes: None,
            nano_cpus: None,
            mounts: Vec::new(),
            stop_signal: libc::SIGTERM,
            shim_group: None,
            netns: None,
        }
    }
}

/// State of one container, from `Containers.List` joined with `Tasks.List`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub status: ContainerStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    /// The container exists but has no task, or its task is not started.
    Created,
    Running {
        pid: u32,
    },
    /// The task exited and was not deleted yet.
    Stopped {
        exit_code: i32,
        exited_unix_nanos: i64,
    },
    /// Paused, pausing or a status containerd did not report.
    Unknown,
}

/// What [`Driver::signal`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signalled {
    /// The signal was delivered to a live process.
    Sent,
    /// Nothing to signal: no container, no task (after a reboot or a
    /// containerd restart that lost it), or a task that already exited
    /// (with its exit code).
    NoProcess { exit_code: Option<i32> },
}

/// A container's init process exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub id: String,
    pub exit_code: i32,
    pub exited_unix_nanos: i64,
}

/// What one exec of a command in a running container did ([`Driver::exec`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The exit status; `None` when it timed out (and was killed).
    pub exit_code: Option<i64>,
    /// Its stdout and stderr, interleaved as written: the first
    /// `output_max_bytes` bytes only.
    pub output: Vec<u8>,
    /// True when it wrote more than `output_max_bytes` (the rest was discarded).
    pub truncated: bool,
}

/// The chain id of a stack of layers: `chain[0] = diff_id[0]`,
/// `chain[i] = sha256(chain[i-1] + " " + diff_id[i])`. Empty input gives "".
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut it = diff_ids.iter();
    let Some(first) = it.next() else {
        return String::new();
    };
    it.fold(first.clone(), |acc, d| {
        let h = Sha256::digest(format!("{acc} {d}").as_bytes());
        format!("sha256:{}", hex::encode(h))
    })
}

/// Handle to one containerd namespace. Cheap to clone; `Send + Sync`.
/// The runtime thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Ctx,
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    exits: async_channel::Receiver<ExitEvent>,
    exits_live: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut g) = self.stop.lock() {
            if let Some(tx) = g.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("socket", &self.inner.ctx.socket).field("namespace", &self.inner.ctx.ns).finish()
    }
}

/// containerd identifier rules (namespaces, container ids, lease ids).
pub(crate) fn valid_identifier(s: &str) -> bool {
    if s.is_empty() || s.len() > 76 {
        return false;
    }
    s.split(['.', '_', '-']).all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Driver {
    /// Connects to containerd and checks it answers `Version`. Fails within
    /// about [`CONNECT_TIMEOUT_MS`] with [`Error::Unavailable`] when the
    /// socket is missing or is not containerd. Also starts the exit-event
    /// subscription (see [`Driver::exits`]).
    pub fn connect(cfg: Config) -> Result<Driver, Error> {
        if !valid_identifier(&cfg.namespace) {
            return Err(Error::InvalidInput(format!(
                "namespace {:?} is not a containerd identifier (letters, digits, '.', '_', '-')",
                cfg.namespace
            )));
        }
        if cfg.call_timeout_ms == 0 {
            return Err(Error::InvalidInput("call_timeout_ms must be > 0".into()));
        }
        if !cfg.socket.exists() {
            return Err(Error::Unavailable { socket: cfg.socket, reason: "no such file".into() });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot build the driver runtime", e))?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("shoal-containerd".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| Error::io("cannot start the driver thread", e))?;

        let socket = cfg.socket.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = tx.send(rpc::connect(socket).await);
        });
        let channel = match rx.recv_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS + 500)) {
            Ok(r) => r?,
            Err(_) => {
                let _ = stop_tx.send(());
                return Err(Error::Unavailable { socket: cfg.socket, reason: format!("no answer within {CONNECT_TIMEOUT_MS} ms") });
            }
        };
        let ctx = Ctx::new(channel, &cfg);
        let (exit_tx, exit_rx) = async_channel::bounded(EXIT_CHANNEL_CAPACITY);
        let exits_live = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let driver = Driver {
            inner: Arc::new(Inner {
                ctx: ctx.clone(),
                handle,
                stop: Mutex::new(Some(stop_tx)),
                exits: exit_rx,
                exits_live: exits_live.clone(),
            }),
        };
        // Fails with Unavailable if the socket is not containerd.
        driver.block("Version", CONNECT_TIMEOUT_MS, {
            let ctx = ctx.clone();
            async move { ctx.version(CONNECT_TIMEOUT_MS).await }
        })?;
        events::start(&driver, exit_tx, exits_live);
        Ok(driver)
    }

    /// containerd's version string (e.g. `1.6.20~ds1`).
    pub fn version(&self) -> Result<String, Error> {
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms;
        self.block("Version", ms, async move { ctx.version(ms).await })
    }

    /// Every exit of a container's init process in this namespace, fed by
    /// one `Events.Subscribe` stream that resubscribes with backoff when
    /// containerd restarts. The channel is bounded
    /// ([`EXIT_CHANNEL_CAPACITY`]): when it is full, events are dropped, and
    /// exits during a resubscription are not seen at all; callers must
    /// reconcile with [`Driver::list`] periodically and after reconnects.
    /// All clones of the receiver share one queue (each event goes to one
    /// receiver).
    pub fn exits(&self) -> async_channel::Receiver<ExitEvent> {
        self.inner.exits.clone()
    }

    /// The containerd namespace this driver works in.
    pub fn namespace(&self) -> &str {
        &self.inner.ctx.ns
    }

    /// The socket this driver talks to.
    pub fn socket(&self) -> &std::path::Path {
        self.inner.ctx.socket()
    }

    /// True while the exit-event subscription is established and has seen
    /// its probe. When it goes false and true again (containerd restarted),
    /// exits in between were missed: reconcile with [`Driver::list`].
    pub fn exits_live(&self) -> bool {
        self.inner.exits_live.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn ctx(&self) -> &Ctx {
        &self.inner.ctx
    }

    pub(crate) fn inner_handle(&self) -> &tokio::runtime::Handle {
        &self.inner.handle
    }

    /// Runs `fut` on the driver's runtime and waits for it, at most
    /// `backstop_ms` (the future carries its own, finer timeouts).
    pub(crate) fn block<T, F>(&self, op: &str, backstop_ms: u64, fut: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv_timeout(Duration::from_millis(backstop_ms.saturating_add(1_000))) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout { op: op.to_string(), ms: backstop_ms }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::Internal(format!("{op} was dropped"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_matches_the_oci_definition() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        assert_eq!(chain_id(&[]), "");
        assert_eq!(chain_id(std::slice::from_ref(&a)), a);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb")));
        assert_eq!(chain_id(&[a, b]), want);
    }

    #[test]
    fn driver_is_send_sync_and_clone() {
        fn check<T: Send + Sync + 'static>() {}
        fn clone<T: Clone>() {}
        check::<Driver>();
        clone::<Driver>();
        check::<Error>();
    }

    #[test]
    fn identifiers() {
        assert!(valid_identifier("shoal-node1"));
        assert!(valid_identifier("a.b_c-d"));
        assert!(!valid_identifier(""));
        assert!(!valid_identifier("-a"));
        assert!(!valid_identifier("a--b"));
        assert!(!valid_identifier("a/b"));
        assert!(!valid_identifier(&"a".repeat(77)));
    }

    #[test]
    fn missing_socket_fails_fast_with_a_clear_error() {
        let t = std::time::Instant::now();
        let err = Driver::connect(Config { socket: "/nonexistent/shoal/x.sock".into(), namespace: "t".into(), call_timeout_ms: 1_000 })
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(err.to_string(), "cannot connect to containerd at /nonexistent/shoal/x.sock: no such file (is containerd running?)");
    }
}
