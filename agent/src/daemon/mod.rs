//! The daemon: the imperative shell around the manager and worker cores.
//!
//! One event loop ([`Daemon::handle`]) owns all mutable state: the
//! [`Store`] (raft, its storage and the replicated state), the worker's
//! memory and the rng. Everything else
//! (socket connections, runtime calls, the ticker, signals) runs in small
//! tasks that only send [`Event`]s to the loop and never touch that state.
//! After every event the loop converges: orchestrator, scheduler and worker
//! run until they propose nothing more.
//!
//! Durability: a write is acknowledged only after raft has persisted and
//! committed its entry ([`Store::propose`]; one voter on a one-manager swarm). Containers outlive the daemon: stopping the daemon
//! leaves them running, and on restart the worker adopts them from the
//! runtime's listing before it acts.

pub(crate) mod autolock;
mod backup;
mod disk;
pub(crate) mod dns;
pub(crate) mod io;
pub(crate) mod links;
mod lock;
mod log_gather;
mod metrics;
mod netpath;
pub(crate) mod placeholders;
mod profile;
mod rekey;
mod resume;
mod router;
mod server;
pub(crate) mod service;
mod swarm;
pub(crate) mod task_files;
mod task_logs;
mod tunnel;
mod volumes;
pub(crate) use tunnel::TUNNEL_PORT;
#[cfg(test)]
mod tests;
mod update;
mod wallclock;

use crate::host;
use crate::runtime::{Exit, Observed, Runtime, RuntimeError, Signalled};
use crate::worker::{Action, Worker};
use anyhow::Context;
use async_channel::{Receiver, Sender};
use shoal_manager::store::{Bootstrap, Store};
use shoal_manager::{control, orchestrator, scheduler};
use shoal_shared::api::{RegistryAuth, Reply, Request, VersionInfo};
use shoal_shared::clock::{Clock, MonoClock, SystemMonoClock};
use shoal_shared::noise::key;
use shoal_shared::noise::link::Event as LinkEvent;
use shoal_shared::ops::Op;
use shoal_shared::rng::Rng;
use shoal_shared::seal::SealKey;
use shoal_shared::task::TaskState;
use shoal_shared::types::{NodeDescription, NodeState, ServiceSpec, Task, TaskStatus};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use swarm::{Mode, Swarm};

/// Events queued for the loop at most; senders wait when it is full.
const EVENTS_QUEUE_MAX: usize = 1024;
/// Runtime calls (pull, start, stop, remove) in flight at once.
const RUNTIME_CALLS_MAX: usize = 8;
/// Full container listing to catch missed exit events.
const RELIST_MS: u64 = 2_000;
/// How often task logs are checked against their size limit.
const LOG_ROTATE_CHECK_MS: u64 = 10_000;
/// Ops per log entry; larger batches are split.
const OPS_PER_ENTRY_MAX: usize = 500;
/// Rounds of orchestrate/schedule/report per event before yielding.
const CONVERGE_ROUNDS_MAX: usize = 16;
/// Longest gap between full orchestrate/schedule passes while nothing changes
/// (restart delays are released by these passes).
const IDLE_PASS_MS: u64 = 1_000;
/// Events handled together before one converge (their reports share one fsync).
const EVENTS_PER_BATCH_MAX: usize = 256;
/// The swarm port, as Docker's.
pub const SWARM_PORT: u16 = 2377;

/// Daemon settings from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub containerd: PathBuf,
    pub namespace: String,
    pub insecure_registries: Vec<String>,
    /// `--registry-ca`: CA files for HTTPS registries.
    pub registry_cas: Vec<shoal_image::CaFile>,
    /// `--registry-mirror`: mirrors asked before their registries.
    pub registry_mirrors: Vec<shoal_image::Mirror>,
    /// The node-local bridge network for tasks on no network (`--bridge-subnet`);
    /// none: they share the host's namespace.
    pub bridge: Option<crate::network::bridge::Bridge>,
    /// `--metrics-addr`: where Prometheus scrapes `GET /metrics` (see [`metrics`]).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Something for the loop to handle.
pub(crate) enum Event {
    Control {
        req: Request,
        reply: Sender<Reply>,
    },
    Resolved {
        result: Result<(Box<ServiceSpec>, Vec<String>), Box<Reply>>,
        registry_auth: Option<RegistryAuth>,
        reply: Sender<Reply>,
    },
    ResolvedUpdate {
        service: String,
        result: Result<(Box<ServiceSpec>, Vec<String>), Box<Reply>>,
        registry_auth: Option<RegistryAuth>,
        reply: Sender<Reply>,
    },
    Tick,
    /// A scrape of `--metrics-addr` wants the metrics text.
    Metrics {
        reply: Sender<String>,
    },
    Exit(Exit),
    Listed {
        epoch: u64,
        result: Result<Vec<Observed>, RuntimeError>,
    },
    Started {
        task: Box<Task>,
        /// The container's healthcheck, when it has one.
        result: Result<Option<shoal_shared::types::HealthConfig>, RuntimeError>,
    },
    /// A health probe finished (see [`Worker::handle_probed`]).
    Probed {
        id: String,
        generation: u64,
        result: Result<crate::runtime::Probed, RuntimeError>,
    },
    /// A stop signal (`kill`: SIGKILL) was sent, or found no process.
    Signalled {
        id: String,
        kill: bool,
        result: Result<Signalled, RuntimeError>,
    },
    Removed {
        id: String,
        ok: bool,
    },
    /// The node's networks were synced (see [`netpath`]).
    NetSynced {
        result: Result<crate::network::driver::SyncReport, crate::network::driver::NetError>,
    },
    /// A reply was sent from outside the loop; nothing to do but converge.
    Replied,
    Signal,
    /// A swarm-port connection started (see [`links`]).
    LinkUp(Box<links::LinkUp>),
    /// Something happened on a connection.
    Link {
        conn: u64,
        event: LinkEvent,
    },
    /// A connection ended.
    LinkGone {
        conn: u64,
    },
    /// A dial never connected.
    DialFailed {
        conn: u64,
        error: String,
    },
    /// The leader finished a request another manager forwarded.
    ForwardDone {
        conn: u64,
        id: u64,
        reply: Reply,
    },
    /// A read of this node's task logs finished (see [`swarm::logs`]).
    LogsRead {
        dest: swarm::logs::LogsDest,
        read: log_gather::LogsRead,
    },
    /// This node's tasks' image pulls were read (see [`swarm::pulls`]).
    TaskPullsRead {
        pulls: Vec<(String, shoal_shared::api::PullProgress)>,
    },
    /// A pull on this node asks the swarm for a blob part (see [`swarm::blobs`]).
    BlobAsk {
        ask: swarm::blobs::BlobAsk,
        reply: Sender<shoal_shared::wire::BlobPart>,
    },
    /// A manager read or fetched a part it serves (and what the read
    /// learnt about its cache).
    BlobServed {
        dest: swarm::blobs::BlobDest,
        part: shoal_shared::wire::BlobPart,
        note: Option<swarm::blobs::CacheNote>,
    },
    /// A manager's blob cache directory was read (see [`swarm::blobs`]).
    BlobCacheScanned {
        cached: std::collections::BTreeMap<String, swarm::blobs::Cached>,
    },
    /// A manager's download into its blob cache ended (the time it took).
    BlobCached {
        digest: String,
        size: u64,
        /// Fetched with a service's credentials.
        private: bool,
        result: Result<std::time::Duration, String>,
    },
}

impl Daemon {
    /// `shoal info`'s registry section, from the daemon's flags.
    pub(crate) fn registry_settings(&self) -> shoal_shared::api::RegistrySettings {
        let cfg = &self.cfg;
        shoal_shared::api::RegistrySettings {
            insecure: cfg.insecure_registries.clone(),
            mirrors: cfg
                .registry_mirrors
                .iter()
                .map(|m| format!("{}={}", m.registry.as_deref().unwrap_or(shoal_image::reference::DEFAULT_DOMAIN), m.url))
                .collect(),
            ca_files: cfg
                .registry_cas
                .iter()
                .map(|c| match &c.registry {
                    Some(r) => format!("{r}={}", c.path.display()),
                    None => c.path.display().to_string(),
                })
                .collect(),
            system_ca_file: shoal_image::system_ca_bundle().map(|p| p.display().to_string()).unwrap_or_default(),
        }
    }
}

/// The registry client's settings from the daemon's flags.
fn registry_options(cfg: &Config) -> shoal_image::RegistryOptions {
    shoal_image::RegistryOptions {
        insecure_registries: cfg.insecure_registries.clone(),
        ca_files: cfg.registry_cas.clone(),
        mirrors: cfg.registry_mirrors.clone(),
        blob_resumes_max: blob_resumes_from_env(),
        ..shoal_image::RegistryOptions::default()
    }
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT. A manager
/// whose keyring is wrapped (autolock) serves the locked mode first.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let _lock = lock::DataDirLock::acquire(&cfg.data_dir)?;
    // Task files of an earlier run: running containers keep theirs (bind mounts pin them), a start writes them again.
    task_files::clear(&task_files::root(&cfg.data_dir));
    let runtime = crate::runtime::containerd::connect(&cfg.containerd, &cfg.namespace, registry_options(&cfg))?;
    let rng = Rng::from_seed(os_seed()?);
    let sealing = match autolock::open_keyring(&cfg.data_dir)? {
        autolock::Start::Unlocked(s) => s,
        autolock::Start::Locked(keyring) => {
            let version = runtime.version().unwrap_or_else(|e| format!("unavailable: {e}"));
            match autolock::serve_locked(&cfg, &keyring, version)? {
                autolock::Unlocked::Key(s) => s,
                autolock::Unlocked::Stopped => return Ok(()),
                autolock::Unlocked::Left => match autolock::open_keyring(&cfg.data_dir)? {
                    autolock::Start::Unlocked(s) => s,
                    autolock::Start::Locked(_) => anyhow::bail!("the keyring is still locked after leaving the swarm"),
                },
            }
        }
    };
    let (store, node_id) = open_store(&cfg.data_dir, &sealing.key, rng.clone().next_u64())?;
    run_with(cfg, store, node_id, runtime, rng, sealing)
}

/// The node's secrets: its identity key and the data key that seals its state.
pub(crate) struct Keys {
    pub(crate) node: key::NodeKey,
    pub(crate) sealing: autolock::Sealing,
}

/// Opens the node's store: a new node's id comes from its node key; a node
/// outside any swarm runs a single-voter group, a manager that joined waits
/// for its leader. Raft records are sealed under `seal`.
pub(crate) fn open_store(data_dir: &std::path::Path, seal: &Arc<SealKey>, seed: u64) -> anyhow::Result<(Store, String)> {
    let (node_key, _) = key::load_or_create(&data_dir.join(key::NODE_KEY_FILE), seal)?;
    let opened =
        Store::open_with(&data_dir.join("shoal.redb"), seal.clone(), seed, || node_key.node_id(), Bootstrap::Join, tune_snapshots)?;
    settle_store(opened, &node_key.node_id())
}

/// Test and diagnostic knob: raft entries between two snapshots of this
/// manager (default 10,000), read when the store opens. Tests set it low so
/// a manager away for a while must catch up through a snapshot.
pub(crate) const SNAPSHOT_INTERVAL_ENV: &str = "SHOAL_SNAPSHOT_INTERVAL_ENTRIES";
/// Bounds of [`SNAPSHOT_INTERVAL_ENV`].
const SNAPSHOT_INTERVAL_ENTRIES_MIN: u64 = 10;
const SNAPSHOT_INTERVAL_ENTRIES_MAX: u64 = 10_000_000;

/// Applies [`SNAPSHOT_INTERVAL_ENV`] to raft's settings (entries kept
/// behind a snapshot: at most half the interval).
fn tune_snapshots(c: &mut shoal_manager::raft::Config) {
    let Ok(v) = std::env::var(SNAPSHOT_INTERVAL_ENV) else { return };
    match snapshot_interval(&v) {
        Ok(n) => {
            c.snapshot_interval_entries = n;
            c.snapshot_keep_entries = c.snapshot_keep_entries.min(n / 2);
            crate::log!("INFO", "{SNAPSHOT_INTERVAL_ENV}: a snapshot every {n} raft entries, {} kept behind it", c.snapshot_keep_entries);
        }
        Err(e) => crate::log!("WARN", "{e}; using the default of {}", c.snapshot_interval_entries),
    }
}

/// Test knob: how often one pull resumes a broken blob download before it
/// fails (0 to 8, default 8), so a test can make a pull fail part way and
/// the next one resume from what containerd kept.
pub(crate) const BLOB_RESUMES_ENV: &str = "SHOAL_TEST_BLOB_RESUMES";

fn blob_resumes_from_env() -> u32 {
    let max = shoal_image::registry::BLOB_RESUMES_MAX;
    let Ok(v) = std::env::var(BLOB_RESUMES_ENV) else { return max };
    match v.trim().parse::<u32>() {
        Ok(n) if n <= max => {
            crate::log!("WARN", "{BLOB_RESUMES_ENV}: a pull resumes a broken download at most {n} times (for tests)");
            n
        }
        _ => {
            crate::log!("WARN", "{BLOB_RESUMES_ENV}={v:?} is not a number from 0 to {max}; ignored");
            max
        }
    }
}

/// Test knob: ms added to every fsynced raft write of this manager (a slow
/// disk, for the autopilot's leadership handover), 0 to 10,000.
pub(crate) const SYNC_DELAY_ENV: &str = "SHOAL_TEST_SYNC_DELAY_MS";

fn sync_delay_from_env() -> u64 {
    let Ok(v) = std::env::var(SYNC_DELAY_ENV) else { return 0 };
    match v.trim().parse::<u64>() {
        Ok(ms) if ms <= 10_000 => {
            crate::log!("WARN", "{SYNC_DELAY_ENV}: every fsynced raft write takes {ms} ms more (a slow disk, for tests)");
            ms
        }
        _ => {
            crate::log!("WARN", "{SYNC_DELAY_ENV}={v:?} is not a number of ms from 0 to 10000; ignored");
            0
        }
    }
}

fn snapshot_interval(v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (SNAPSHOT_INTERVAL_ENTRIES_MIN..=SNAPSHOT_INTERVAL_ENTRIES_MAX).contains(n))
        .ok_or_else(|| {
            format!(
                "{SNAPSHOT_INTERVAL_ENV}={v:?} is not a number of entries from {SNAPSHOT_INTERVAL_ENTRIES_MIN} to {SNAPSHOT_INTERVAL_ENTRIES_MAX}"
            )
        })
}

/// A store just opened with `Bootstrap::Join`: a node outside any swarm
/// (no swarm mode, no voters) becomes a single-voter group, under its key's
/// id (`key_node_id`) if the store names another: a `swarm leave` cut short
/// between its two steps (see `renew_identity`).
pub(crate) fn settle_store((mut store, mut node_id): (Store, String), key_node_id: &str) -> anyhow::Result<(Store, String)> {
    let in_swarm = store.local("swarm_mode")?.is_some();
    if !in_swarm && node_id != key_node_id {
        crate::log!(
            "WARN",
            "this node's store names it {node_id} but its key is {key_node_id}'s (a swarm leave was cut short): it is {key_node_id}"
        );
        store.reset_identity(key_node_id, Bootstrap::Single)?;
        node_id = key_node_id.to_string();
    }
    if !in_swarm && store.voters().is_empty() {
        store.reset(Bootstrap::Single)?;
    }
    Ok((store, node_id))
}

/// Runs the daemon with a given log and runtime (tests use a fake runtime).
/// 64 bits from the OS, to seed the daemon's rng.
pub(crate) fn os_seed() -> anyhow::Result<u64> {
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("cannot read OS randomness: {e}"))?;
    Ok(u64::from_le_bytes(seed))
}

pub(crate) fn run_with(
    cfg: Config,
    store: Store,
    node_id: String,
    runtime: Arc<dyn Runtime>,
    rng: Rng,
    sealing: autolock::Sealing,
) -> anyhow::Result<()> {
    let listener = server::bind(&cfg.socket)?;
    let metrics_listener = cfg.metrics_addr.map(metrics::bind).transpose()?;
    let (node_key, _) = key::load_or_create(&cfg.data_dir.join(key::NODE_KEY_FILE), &sealing.key)?;
    let (tx, rx) = async_channel::bounded(EVENTS_QUEUE_MAX);
    let socket = cfg.socket.clone();
    let net: Arc<dyn crate::network::driver::NetDriver> = Arc::new(crate::network::linux::Linux::new(&cfg.data_dir));
    let io = io::RealIo::new(tx.clone(), runtime.clone(), net);
    let mut daemon = Daemon::new(cfg, store, node_id, Keys { node: node_key, sealing }, runtime, Box::new(io), rng)?;
    // Pulls ask the swarm's blob cache first (issue #16), through this loop.
    let peer = swarm::blobs::LoopPeer::new(tx.clone(), daemon.swarm.blobs.enabled.clone());
    daemon.runtime.set_blob_peer(Some(Arc::new(peer)));
    crate::log!("INFO", "shoal {} node {} listening on unix://{}", env!("CARGO_PKG_VERSION"), daemon.node_id, daemon.cfg.socket.display());
    smol::block_on(async move {
        smol::spawn(server::accept_loop(listener, tx.clone())).detach();
        if let Some(l) = metrics_listener {
            if let Ok(addr) = l.get_ref().local_addr() {
                crate::log!("INFO", "metrics at http://{addr}/metrics");
            }
            smol::spawn(metrics::serve(l, tx.clone())).detach();
        }
        // The loop ticks at raft's pace: each tick advances raft once, and
        // restart delays and periodic checks resolve at the same grain.
        smol::spawn(ticker(tx.clone(), daemon.store.tick_ms())).detach();
        smol::spawn(forward_exits(daemon.runtime.exits(), tx.clone())).detach();
        smol::spawn(signals(tx.clone())).detach();
        daemon.start_swarm();
        daemon.relist();
        daemon.run(rx).await
    })?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn ticker(tx: Sender<Event>, tick_ms: u64) {
    loop {
        smol::Timer::after(Duration::from_millis(tick_ms)).await;
        if tx.send(Event::Tick).await.is_err() {
            return;
        }
    }
}

async fn forward_exits(exits: Receiver<Exit>, tx: Sender<Event>) {
    while let Ok(e) = exits.recv().await {
        if tx.send(Event::Exit(e)).await.is_err() {
            return;
        }
    }
}

async fn signals(tx: Sender<Event>) {
    use futures_lite::StreamExt;
    let Ok(mut sigs) = async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) else {
        crate::log!("WARN", "cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    if sigs.next().await.is_some() {
        let _ = tx.send(Event::Signal).await;
    }
}

pub(crate) struct Daemon {
    cfg: Config,
    store: Store,
    rng: Rng,
    /// Wall time, for timestamps in reports and proposals.
    clock: Arc<dyn Clock>,
    /// Monotonic time, for every deadline and period of the loop ([`Daemon::mono_ms`]).
    mono: Arc<dyn MonoClock>,
    pub(crate) node_id: String,
    runtime: Arc<dyn Runtime>,
    runtime_version: String,
    worker: Worker,
    /// Every effect outside the loop (see [`io`]).
    io: Box<dyn io::Io>,
    listing: bool,
    /// When the last full listing arrived (mono ms).
    last_list_ms: u64,
    stopping: bool,
    /// Status reports waiting for the next commit (batched per event burst).
    pending: Vec<Op>,
    /// State index and time of the last orchestrate/schedule pass.
    passed_index: u64,
    passed_at_ms: u64,
    logs_checked_at_ms: u64,
    /// Whether the data dir is full (see [`disk`]; checked with the task-log rotation).
    disk: Arc<std::sync::Mutex<disk::DiskWatch>>,
    /// Whether the node's description last told a full disk (it is told again when that changes).
    /// The disk and memory warnings last put in this node's description.
    resource_warnings_told: Vec<String>,
    /// A description change not told yet (see [`Daemon::redescribe_self`]).
    describe_pending: bool,
    /// A store halted on a full disk, told and reopened (see [`disk`]).
    store_recovery: disk::StoreRecovery,
    swarm: Swarm,
    /// The container-networking data path's state.
    net: netpath::NetPath,
    /// Encrypted networks' tunnel relay (see [`tunnel`]).
    tunnel: tunnel::Tunnel,
    /// The data key and keyring (see [`autolock`]).
    sealing: autolock::Sealing,
    /// A worker's persisted assignments (see [`resume`]).
    resume: resume::Resume,
    /// Counters and timings for `--metrics-addr`.
    metrics: metrics::Metrics,
}

impl Daemon {
    fn new(
        cfg: Config,
        store: Store,
        node_id: String,
        keys: Keys,
        runtime: Arc<dyn Runtime>,
        io: Box<dyn io::Io>,
        rng: Rng,
    ) -> anyhow::Result<Daemon> {
        let Keys { node: node_key, sealing } = keys;
        let cluster_path = cfg.data_dir.join(key::CLUSTER_KEY_FILE);
        let cluster_key = match key::load(&cluster_path, &sealing.key) {
            Ok(k) => Some(k),
            Err(key::KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                crate::log!("ERROR", "{e}; this manager cannot answer joins until it has a valid cluster key");
                None
            }
        };
        let swarm = Swarm::new(node_key, cluster_key, |k| store.local(k).ok().flatten());
        let runtime_version = runtime.version().unwrap_or_else(|e| format!("unavailable: {e}"));
        task_logs::TaskLogs::new(&cfg.data_dir).create()?;
        let mut worker = Worker::new(&node_id);
        // A number of its own for this run (drawn aside: the daemon's rng stream stays as it was).
        worker.set_session(Rng::from_seed(rng.clone().next_u64()).next_u64());
        let net = netpath::NetPath::new(io.net(), io.dns(), cfg.bridge);
        let mut d = Daemon {
            cfg,
            store,
            rng,
            clock: wallclock::from_env()?,
            mono: Arc::new(SystemMonoClock::new()),
            node_id,
            runtime,
            runtime_version,
            worker,
            io,
            listing: false,
            last_list_ms: 0,
            stopping: false,
            pending: Vec::new(),
            passed_index: u64::MAX,
            passed_at_ms: 0,
            logs_checked_at_ms: 0,
            disk: Arc::default(),
            store_recovery: disk::StoreRecovery::default(),
            resource_warnings_told: Vec::new(),
            describe_pending: false,
            swarm,
            net,
            tunnel: tunnel::Tunnel::default(),
            sealing,
            resume: resume::Resume::default(),
            metrics: metrics::Metrics::default(),
        };
        d.store.sync_clock = Some(d.mono.clone());
        d.store.test_sync_delay_ms = sync_delay_from_env();
        d.refresh_self_node()?;
        d.load_persisted_assignments();
        Ok(d)
    }

    fn now(&self) -> u64 {
        self.clock.now_unix_nanos()
    }

    /// The `--metrics-addr` text (see [`metrics`]).
    fn metrics_text(&self) -> String {
        let manager = self.swarm.mode != Mode::Worker;
        let mut s = metrics::Snapshot { node_id: self.node_id.clone(), version: env!("CARGO_PKG_VERSION"), manager, ..Default::default() };
        for c in self.worker.containers().values() {
            let state = match c {
                crate::runtime::ContainerState::Created => "created",
                crate::runtime::ContainerState::Running => "running",
                crate::runtime::ContainerState::Stopped { .. } => "stopped",
                crate::runtime::ContainerState::Unknown => "unknown",
            };
            *s.containers.entry(state.to_string()).or_default() += 1;
        }
        if manager {
            let st = self.store.raft_status();
            s.is_leader = self.store.is_leader();
            (s.term, s.commit_index, s.applied_index) = (st.term, st.commit, st.applied);
            let state = self.store.state();
            for n in state.nodes.values() {
                let key = (n.state.as_title().to_ascii_lowercase(), n.availability.as_title().to_ascii_lowercase());
                *s.nodes.entry(key).or_default() += 1;
            }
            for t in state.tasks.values() {
                *s.tasks.entry(t.status.state.as_lower().to_string()).or_default() += 1;
            }
            s.sessions = self.swarm.session_count() as u64;
        }
        metrics::render(&s, &self.metrics)
    }

    /// Monotonic milliseconds since the daemon started: every deadline and period of the loop.
    fn mono_ms(&self) -> u64 {
        self.mono.now_ms()
    }

    fn signal(&self, id: String, kill: bool) {
        let i = id.clone();
        self.spawn_runtime(move |rt| rt.signal(&i, kill), move |result| Event::Signalled { id, kill, result });
    }

    async fn run(&mut self, rx: Receiver<Event>) -> anyhow::Result<()> {
        while let Ok(ev) = rx.recv().await {
            if !self.handle_batch(ev, || rx.try_recv().ok()) {
                crate::log!("INFO", "shutting down; task containers keep running and are adopted on restart");
                return Ok(());
            }
        }
        Ok(())
    }

    /// One turn of the loop: handles `first` and the events queued behind it
    /// (`next`), then converges and sends raft's messages. Runtime results
    /// and exits queued together are handled as one batch (their reports
    /// share one commit); a client request ends the batch, as the next
    /// request must see its effect converged. False once the daemon stops.
    pub(crate) fn handle_batch(&mut self, first: Event, mut next: impl FnMut() -> Option<Event>) -> bool {
        let mut request = is_request(&first);
        self.handle(first);
        for _ in 0..EVENTS_PER_BATCH_MAX {
            if request {
                break;
            }
            let Some(ev) = next() else { break };
            request = is_request(&ev);
            self.handle(ev);
        }
        if self.stopping {
            return false;
        }
        self.release_held();
        self.converge();
        self.flush_raft();
        true
    }

    /// Tells the swarm this node's description changed (a full disk, or
    /// space again): the leader commits its own; a worker or a follower
    /// manager opens its session again on its link to the leader, which
    /// carries the description (the leader commits it and resends the
    /// assignments). Whether it was told: when not (no link to the leader
    /// yet, a halted store), the loop tries again every tick.
    fn redescribe_self(&mut self) -> bool {
        match self.swarm.mode {
            // A follower's description reaches the state through its leader, as a worker's.
            swarm::Mode::Worker => self.resend_session(),
            swarm::Mode::Manager if !self.store.is_leader() => self.resend_session(),
            // A leader whose store is halted cannot commit it (its own rows show it meanwhile).
            _ if self.store.halted().is_some() => false,
            _ => {
                if let Err(e) = self.refresh_self_node() {
                    crate::log!("WARN", "cannot update this node's description: {e:#}");
                }
                true
            }
        }
    }

    /// Re-describes this node after a restart (platform, resources, version may change).
    fn refresh_self_node(&mut self) -> anyhow::Result<()> {
        let Some(old) = self.store.state().nodes.get(&self.node_id) else {
            return Ok(());
        };
        let mut node = old.clone();
        node.description = self.describe();
        node.state = NodeState::Ready;
        if &node != old && self.store.is_leader() {
            self.commit_internal(vec![Op::PutNode(node)]);
        }
        Ok(())
    }

    fn describe(&self) -> NodeDescription {
        let mut d = self.io.host(&self.net.probe);
        d.warnings.extend(self.disk.lock().map(|w| w.warnings()).unwrap_or_default());
        // `bridge` is listed only where tasks on no network really get it
        // (not with --bridge-subnet none or a clashing subnet).
        if !self.net.has_bridge() {
            d.plugins.retain(|p| p.name != shoal_shared::types::DRIVER_BRIDGE);
        }
        d
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Control { req, reply } => self.route(req, router::Origin::Socket(reply)),
            Event::Metrics { reply } => {
                let _ = reply.try_send(self.metrics_text());
            }
            Event::Resolved { result, registry_auth, reply } => {
                let out = match result {
                    Ok((spec, warnings)) => self.create_service(*spec, warnings, registry_auth),
                    Err(r) => router::Outcome::Now(*r),
                };
                self.answer(&reply, out);
            }
            Event::ResolvedUpdate { service, result, registry_auth, reply } => {
                let out = self.finish_update(service, result, registry_auth);
                self.answer(&reply, out);
            }
            Event::LinkUp(up) => self.on_link_up(*up),
            Event::Link { conn, event } => self.on_link(conn, event),
            Event::LinkGone { conn } => self.on_link_gone(conn, None),
            Event::DialFailed { conn, error } => self.on_link_gone(conn, Some(error)),
            Event::ForwardDone { conn, id, reply } => self.on_forward_done(conn, id, reply),
            Event::LogsRead { dest, read } => self.on_logs_read(dest, read),
            Event::BlobAsk { ask, reply } => self.on_blob_ask(ask, reply),
            Event::TaskPullsRead { pulls } => self.on_task_pulls_read(pulls),
            Event::BlobServed { dest, part, note } => self.on_blob_served(dest, part, note),
            Event::BlobCacheScanned { cached } => self.on_blob_cache_scanned(cached),
            Event::BlobCached { digest, size, private, result } => self.on_blob_cached(digest, size, private, result),
            Event::Tick => {
                // One raft tick per loop tick (the ticker runs at raft's tick_ms); a lone manager has no peers to
                // message. A halted store is told once and reopened once its disk has room (see `disk`).
                if self.recover_store() {
                    match self.store.tick() {
                        Ok(msgs) => self.route_raft(msgs),
                        Err(e) => crate::log!("ERROR", "raft tick failed: {e}"),
                    }
                }
                self.swarm_tick();
                // Only once this node knows its tasks (a worker's are in its assignments, not in
                // its store): before that every log would look like a leftover and be deleted.
                let now_ms = self.mono_ms();
                if self.may_plan() && now_ms.saturating_sub(self.logs_checked_at_ms) >= LOG_ROTATE_CHECK_MS {
                    self.logs_checked_at_ms = now_ms;
                    let logs = task_logs::TaskLogs::new(&self.cfg.data_dir);
                    self.sync_assignments();
                    let known: std::collections::BTreeSet<String> = self.assigned().tasks.keys().cloned().collect();
                    let (data_dir, watch) = (self.cfg.data_dir.clone(), self.disk.clone());
                    self.spawn_runtime(
                        move |_| {
                            let space = disk::probe(&[("data dir", &data_dir), ("task log dir", logs.dir())]);
                            let memory = disk::mem_available();
                            let reports = watch
                                .lock()
                                .map(|mut w| {
                                    w.check_memory(memory);
                                    w.check(&space)
                                })
                                .unwrap_or_default();
                            (logs.rotate(&known, task_logs::LOG_BYTES_MAX), reports)
                        },
                        |(n, reports)| {
                            if n > 0 {
                                crate::log!("INFO", "rotated {n} task log(s) over {} MiB", task_logs::LOG_BYTES_MAX >> 20);
                            }
                            for r in reports {
                                crate::log!(r.level, "{}", r.message);
                            }
                            Event::Replied
                        },
                    );
                }
                // A full, low or low-memory node says so in its description (`node inspect`, the autopilot).
                let warnings = self.disk.lock().map(|w| w.warnings()).unwrap_or_default();
                if warnings != self.resource_warnings_told {
                    self.resource_warnings_told = warnings;
                    self.describe_pending = true;
                }
                if self.describe_pending && self.redescribe_self() {
                    self.describe_pending = false;
                }
                if !self.listing && now_ms.saturating_sub(self.last_list_ms) >= RELIST_MS {
                    self.relist();
                }
            }
            Event::Exit(e) => self.worker.handle_exit(&e),
            Event::Listed { epoch, result } => {
                self.listing = false;
                self.last_list_ms = self.mono_ms();
                match result {
                    Ok(list) => {
                        self.net.pids = list.iter().filter_map(|o| Some((o.id.clone(), o.pid?))).collect();
                        self.worker.handle_list(epoch, list)
                    }
                    Err(e) => crate::log!("WARN", "cannot list containers: {e}"),
                }
            }
            Event::Started { task, result } => {
                self.on_task_started(&task.id);
                if let Err(e) = &result {
                    crate::log!("WARN", "task {} failed to start: {e}", task.id);
                }
                let status = self.worker.handle_started(&task, result, self.now());
                self.report(&task.id, status);
            }
            Event::Probed { id, generation, result } => {
                let now_ms = self.mono_ms();
                if self.worker.handle_probed(&id, generation, result, now_ms) {
                    let why = self.worker.probe_failure(&id).unwrap_or_default();
                    crate::log!("WARN", "task {id} is unhealthy ({why}); stopping its container");
                }
            }
            Event::Signalled { id, kill, result } => {
                if let Err(e) = &result {
                    let what = if kill { "kill" } else { "stop" };
                    crate::log!("WARN", "cannot {what} container {id}: {e}");
                }
                let now_ms = self.mono_ms();
                self.worker.handle_signalled(&id, kill, result, now_ms);
            }
            Event::Removed { id, ok } => self.worker.handle_removed(&id, ok),
            Event::NetSynced { result } => self.on_net_synced(result),
            Event::Replied => {}
            Event::Signal => self.stopping = true,
        }
    }

    /// Queues a status report for the next commit (apply re-checks the order).
    fn report(&mut self, task_id: &str, status: shoal_shared::types::TaskStatus) {
        self.sync_assignments();
        if let Some(t) = self.assigned().tasks.get(task_id) {
            if t.status.state.advance(status.state).is_ok() {
                self.pending.push(Op::SetTaskStatus { id: task_id.to_string(), status });
            }
        }
    }

    fn relist(&mut self) {
        self.listing = true;
        let epoch = self.worker.list_epoch();
        self.spawn_runtime(|rt| rt.list(), move |result| Event::Listed { epoch, result });
    }

    /// Runs a blocking runtime call off the loop, bounded by `RUNTIME_CALLS_MAX`.
    fn spawn_runtime<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Runtime) -> T + Send + 'static,
        wrap: impl FnOnce(T) -> Event + Send + 'static,
    ) {
        self.io.runtime(Box::new(move |rt| wrap(call(rt))));
    }

    /// Orchestrates, schedules and runs the worker until nothing changes.
    ///
    /// Only the leader orchestrates and schedules, and only on a state that
    /// holds all its own earlier proposals (on several managers a proposal
    /// commits later, when the peers answer). Reports go through
    /// [`Daemon::submit_reports`], which commits them here on the leader and
    /// sends them to the leader otherwise.
    fn converge(&mut self) {
        self.resume_if_due();
        self.resolve_outcomes();
        self.release_forwards();
        self.prune_reported();
        self.check_demotion();
        self.sync_link_profile();
        for _ in 0..CONVERGE_ROUNDS_MAX {
            // Reports first: the worker must plan on state that includes them,
            // or it would act again on what it just reported.
            let reports = std::mem::take(&mut self.pending);
            if !reports.is_empty() {
                self.submit_reports(reports);
            }
            let now = self.now();
            let now_ms = self.mono_ms();
            let mut ops = Vec::new();
            // Orchestrate and schedule only when the state moved, or once per
            // IDLE_PASS_MS for time-based work (restart delays): a pass over a
            // large state is not free, and ticks come every raft tick.
            let index = self.store.state().applied_index;
            // A rolling update's delays and monitor windows are time-based too: tick-grained while one runs.
            let updating = self.store.state().services.values().any(|s| s.update_status.as_ref().is_some_and(|u| u.state.in_progress()));
            let due = index != self.passed_index || updating || now_ms.saturating_sub(self.passed_at_ms) >= IDLE_PASS_MS;
            if self.store.state().cluster.is_some() && due && self.leads_caught_up() && self.swarm.pending.settled() {
                let started = std::time::Instant::now();
                ops = orchestrator::reconcile(self.store.state(), now, &mut self.rng);
                if ops.is_empty() {
                    ops = scheduler::schedule(self.store.state(), now);
                }
                self.metrics.pass.observe(started.elapsed());
                if ops.is_empty() {
                    self.passed_index = index;
                    self.passed_at_ms = now_ms;
                }
            }
            let mut reports = Vec::new();
            self.sync_assignments();
            // A worker with no link to any manager restarts its tasks in place (see `worker`).
            self.worker.set_offline(self.swarm.mode == Mode::Worker && !self.swarm.has_manager_link());
            let untold = self.worker.untold_restarts();
            let actions = if self.may_plan() {
                // Invariant: may_plan holds only with assignments (a worker's first, or a manager's synced above).
                let view = self.swarm.assigned.as_ref().expect("may_plan: assignments present");
                self.worker.plan(view, now, now_ms)
            } else {
                Vec::new()
            };
            if self.worker.untold_restarts() > untold {
                crate::log!(
                    "WARN",
                    "no manager in reach: restarting a task in place as its restart policy says ({} in-place restarts not yet told to a manager)",
                    self.worker.untold_restarts()
                );
            }
            for action in actions {
                match action {
                    Action::Report { task_id, status } => reports.push(Op::SetTaskStatus { id: task_id, status }),
                    // Travels with the report that follows it (`submit_reports`).
                    Action::RestartsInPlace(r) => reports.push(Op::SetRestartsInPlace(r)),
                    Action::Start { task } => {
                        if task.status.state < TaskState::Preparing {
                            reports.push(Op::SetTaskStatus {
                                id: task.id.clone(),
                                status: TaskStatus::new(TaskState::Preparing, now, "preparing"),
                            });
                        }
                        self.start_task(task)
                    }
                    // Stops only signal: the grace period is the worker's deadline, not a held slot.
                    Action::Stop { id, .. } => self.signal(id, false),
                    Action::Kill { id } => self.signal(id, true),
                    // Probes have slots of their own: a slow one never holds up a stop or start.
                    Action::Probe { id, argv, timeout_ms, generation } => self.io.probe(Box::new(move |rt| {
                        let result = rt.probe(&id, &argv, timeout_ms);
                        Event::Probed { id, generation, result }
                    })),
                    Action::Remove { id } => {
                        let i = id.clone();
                        let logs = task_logs::TaskLogs::new(&self.cfg.data_dir);
                        let keep_log = self.assigned().tasks.contains_key(&id);
                        let net = self.net.driver.clone();
                        let dns = self.net.dns.clone();
                        let files_root = task_files::root(&self.cfg.data_dir);
                        self.spawn_runtime(
                            move |rt| {
                                let r = rt.remove(&i);
                                // Its secrets and configs go with it (kept if the removal failed).
                                if r.is_ok() {
                                    task_files::remove(&files_root, &i);
                                }
                                // Its namespace, veths and resolver socket go with the container.
                                if let Err(e) = net.teardown_task(&i) {
                                    crate::log!("WARN", "networking: {e}");
                                }
                                if let Some(d) = dns {
                                    d.send(dns::DnsCommand::Forget { task_id: i.clone() });
                                }
                                if !keep_log {
                                    logs.remove(&i);
                                }
                                r
                            },
                            move |r| {
                                if let Err(e) = &r {
                                    crate::log!("WARN", "cannot remove container {id}: {e}");
                                }
                                Event::Removed { id, ok: r.is_ok() }
                            },
                        );
                    }
                }
            }
            let before = self.store.state().applied_index;
            if !reports.is_empty() {
                self.submit_reports(reports);
            }
            if !ops.is_empty() {
                self.commit_internal(ops);
            }
            // Go round again only if something was applied (a lone manager commits at once).
            if self.store.state().applied_index == before || !self.swarm.pending.settled() {
                break;
            }
        }
        self.dispatch();
        self.sync_blob_sharing();
        self.sync_network();
        let now_ms = self.mono_ms();
        self.sync_tunnel(now_ms);
        self.sync_keyring();
    }

    fn start_task(&mut self, task: Box<Task>) {
        let data_dir = self.cfg.data_dir.clone();
        let node_id = self.node_id.clone();
        let service_name = self.assigned().service_name(&task.service_id).to_string();
        let t = task.clone();
        let me = self.describe();
        let ctx = placeholders::context(&task, &service_name, &node_id, &me.hostname, &me.platform);
        let net = self.task_net(&task, &ctx);
        let auth = self.registry_auth_of(&task.service_id);
        let files = task_files::gather(&task, |kind, id| self.file_data_of(kind, id));
        self.spawn_runtime(
            move |rt| {
                let facts = rt.ensure_image(&t.spec.container.image, auth.as_ref())?;
                let health = shoal_shared::health::effective(t.spec.container.healthcheck.as_ref(), facts.healthcheck.as_ref());
                let mut spec = service::start_spec(&t, &service_name, &node_id, facts, &data_dir, &ctx)?;
                spec.mounts.extend(task_files::write(&task_files::root(&data_dir), &t.id, &files?)?);
                if let Some(h) = &health {
                    spec.labels.insert(crate::runtime::HEALTH_LABEL.into(), crate::runtime::health_label(h)?);
                }
                if let Some(net) = net? {
                    let (netns, files) = net.prepare(&t.id, &data_dir)?;
                    spec.netns = Some(netns);
                    spec.mounts.extend(files);
                }
                rt.start(&spec).map(|()| health)
            },
            move |result| Event::Started { task, result },
        );
    }

    /// Commits a service whose image was resolved (re-validated: the state
    /// may have moved on), with its registry credentials if it has some.
    fn create_service(&mut self, spec: ServiceSpec, warnings: Vec<String>, registry_auth: Option<RegistryAuth>) -> router::Outcome {
        let id = self.rng.object_id();
        let mut warnings = warnings;
        warnings.extend(service::network_warnings(&spec));
        let r = control::create_service(self.store.state(), spec, id.clone()).map(|mut ops| {
            if let Some(auth) = registry_auth {
                ops.push(Op::SetRegistryAuth { service_id: id.clone(), auth: Some(auth) });
            }
            ops
        });
        self.write(r.map(|ops| (ops, Reply::ServiceCreated { id, warnings })))
    }

    /// The credentials a task of `service_id` pulls its image with: from
    /// the replicated state on a manager, from what the leader sent on a
    /// worker (memory only).
    /// The data of a secret or config for a task of this node: a worker's
    /// from the managers (`Wire::Files`), a manager's from its replica.
    fn file_data_of(&self, kind: shoal_shared::types::FileKind, id: &str) -> Option<Vec<u8>> {
        use shoal_shared::types::FileKind;
        match self.swarm.mode {
            Mode::Worker => self.swarm.files.get(&(kind, id.to_string())).cloned(),
            _ => {
                let state = self.store.state();
                let files = if kind == FileKind::Secret { &state.secrets } else { &state.configs };
                files.get(id).map(|f| f.spec.data.clone())
            }
        }
    }

    fn registry_auth_of(&self, service_id: &str) -> Option<shoal_image::Credentials> {
        let auth = match self.swarm.mode {
            Mode::Worker => self.swarm.registry_auths.get(service_id),
            _ => self.store.state().registry_auths.get(service_id),
        }?;
        Some(auth.into())
    }

    pub(crate) fn version_info(&self) -> VersionInfo {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            platform: host::platform().to_string(),
            containerd: self.runtime_version.clone(),
            node_id: self.node_id.clone(),
            swarm: self.swarm.mode != Mode::Solo || self.store.state().cluster.is_some(),
        }
    }

    /// The leader's node id, when one is known.
    pub(crate) fn leader_node_id(&self) -> Option<String> {
        if self.store.is_leader() {
            return Some(self.node_id.clone());
        }
        let rid = self.store.leader()?;
        self.store.state().nodes.keys().find(|id| shoal_manager::store::raft_id(id) == rid).cloned()
    }
}

/// Whether an event carries (or completes) a client request.
fn is_request(ev: &Event) -> bool {
    matches!(ev, Event::Control { .. } | Event::Resolved { .. } | Event::ResolvedUpdate { .. } | Event::Replied)
}

/// Answers a request from a task off the loop ([`router::Outcome::Later`]).
fn reply_later(reply: &Sender<Reply>, r: Reply) -> Event {
    let _ = reply.try_send(r);
    Event::Replied
}

#[cfg(feature = "sim")]
pub(crate) mod sim_hooks;
