//! The production runtime: containers through `shoal-containerd`, image
//! formats, archives and registries through `shoal-image`.
//!
//! Image facts (platforms, entrypoint, env, chain id) are always derived
//! from the blobs in containerd's content store, read back through
//! [`ContentSource`], so a restarted daemon knows exactly what it knew
//! before. Images are imported for this node's platform only.

use super::*;
use shoal_containerd::{ContainerSpec, ContainerStatus, Driver, MountKind as CtrMount, MountSpec};
use shoal_image::manifest::{plan_import, platforms_of, read_config};
use shoal_image::reference::Reference;
use shoal_image::registry::{Registry, RegistryOptions};
use shoal_image::{Descriptor, Error as ImageError, ImageSource};
use shoal_shared::types::HealthConfig;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Timeout for each containerd call.
const CALL_TIMEOUT_MS: u64 = 10_000;
/// Largest manifest, index or config read back from the content store.
const METADATA_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Image facts kept in memory.
const FACTS_CACHED_MAX: usize = 256;
/// Exit events buffered between the driver and the daemon.
const EXITS_QUEUE_MAX: usize = 256;

/// containerd-backed runtime.
pub struct Containerd {
    driver: Driver,
    registry: Registry,
    platform: Platform,
    /// Chain ids known to be unpacked since this process started.
    unpacked: Mutex<BTreeSet<String>>,
    /// Facts by root digest: content is immutable, so they never go stale.
    facts: Mutex<std::collections::BTreeMap<String, ImageFacts>>,
    exits: async_channel::Receiver<Exit>,
    /// One pull per image at a time: tasks of one image starting together
    /// wait for the first one's pull instead of downloading it again.
    pulls: Mutex<std::collections::BTreeMap<String, Arc<Mutex<()>>>>,
    /// Pulls in flight by reference, for `image pull`'s progress.
    progress: Arc<Mutex<std::collections::BTreeMap<String, shoal_shared::api::PullProgress>>>,
    /// Asked before the registry (the swarm's blob cache), when set.
    peer: Mutex<Option<Arc<dyn shoal_image::BlobPeer>>>,
}

/// Connects the containerd-backed runtime; fails fast when containerd is not there.
pub fn connect(socket: &Path, namespace: &str, registry: RegistryOptions) -> Result<Arc<dyn Runtime>, RuntimeError> {
    let cfg = shoal_containerd::Config { socket: socket.to_path_buf(), namespace: namespace.to_string(), call_timeout_ms: CALL_TIMEOUT_MS };
    let driver =
        Driver::connect(cfg).map_err(|e| RuntimeError::Unavailable(format!("{e} (use --containerd PATH to point at its socket)")))?;
    // Health probe output directories left by a daemon killed mid-probe.
    let swept = shoal_containerd::sweep_stale_exec_dirs(&std::env::temp_dir());
    if swept > 0 {
        crate::log!("INFO", "health probes: removed {swept} output director(ies) left by a stopped daemon");
    }
    let (tx, rx) = async_channel::bounded(EXITS_QUEUE_MAX);
    let events = driver.exits();
    std::thread::Builder::new()
        .name("shoal-exits".into())
        .spawn(move || {
            while let Ok(e) = events.recv_blocking() {
                // A full queue drops the event; the periodic listing reconciles.
                let _ = tx.try_send(Exit { id: e.id, exit_code: e.exit_code });
            }
        })
        .map_err(|e| RuntimeError::Other(format!("cannot start the exit-event thread: {e}")))?;
    let registry = Registry::new(registry);
    // A bad --registry-ca file fails the start, not the first pull.
    match registry.check_trust() {
        Ok(Some(system)) => crate::log!("INFO", "registries: trusting Mozilla's roots and {}", system.display()),
        Ok(None) => crate::log!("INFO", "registries: trusting Mozilla's roots (no system CA bundle found)"),
        Err(e) => return Err(RuntimeError::Other(format!("--registry-ca: {e}"))),
    }
    Ok(Arc::new(Containerd {
        driver,
        registry,
        platform: crate::host::platform(),
        unpacked: Mutex::default(),
        facts: Mutex::default(),
        exits: rx,
        pulls: Mutex::default(),
        progress: Arc::default(),
        peer: Mutex::new(None),
    }))
}

/// Blobs already in containerd's content store, as an [`ImageSource`].
struct ContentSource<'a> {
    driver: &'a Driver,
}

impl ImageSource for ContentSource<'_> {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn std::io::Read + Send + '_>, ImageError> {
        let bytes = self.driver.read_blob(&desc.digest, METADATA_BYTES_MAX.max(desc.size)).map_err(|e| ImageError::BlobNotFound {
            digest: desc.digest.clone(),
            source_name: format!("containerd content store ({e})"),
        })?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }
}

fn parse_ref(reference: &str) -> Result<Reference, RuntimeError> {
    Reference::parse(reference).map_err(|e| RuntimeError::Image(e.to_string()))
}

fn image_err(e: ImageError) -> RuntimeError {
    match e {
        ImageError::ManifestUnknown { .. } => RuntimeError::ImageNotFound(e.to_string()),
        ImageError::Unreachable { .. } => RuntimeError::RegistryUnreachable(e.to_string()),
        other => RuntimeError::Image(other.to_string()),
    }
}

fn driver_err(e: shoal_containerd::Error) -> RuntimeError {
    match e {
        shoal_containerd::Error::Unavailable { .. } => RuntimeError::Unavailable(e.to_string()),
        other => RuntimeError::Other(other.to_string()),
    }
}

/// Docker's signal names (`SIGTERM`, `TERM`, `15`) to numbers.
fn signal_number(s: &str) -> Result<i32, RuntimeError> {
    if s.is_empty() {
        return Ok(libc::SIGTERM);
    }
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        _ => return Err(RuntimeError::Start(format!("unknown stop signal {s:?}: use e.g. SIGTERM, SIGINT or a number"))),
    };
    Ok(n)
}

/// `uid[:gid]`, numeric (names go to [`shoal_containerd::users`]).
fn parse_user(u: &str) -> Result<Option<(u32, u32)>, RuntimeError> {
    if u.is_empty() {
        return Ok(None);
    }
    let (uid, gid) = u.split_once(':').unwrap_or((u, u));
    match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(a), Ok(b)) => Ok(Some((a, b))),
        _ => Err(RuntimeError::Start(format!("invalid user {u:?}: use --user NAME|UID[:GROUP|GID]"))),
    }
}

impl Containerd {
    /// Runs `f` while no other pull of `reference` runs on this node
    /// (`image pull` and tasks starting alike): a second wants the image the
    /// first is downloading.
    fn one_pull_at_a_time<T>(&self, reference: &str, f: impl FnOnce() -> Result<T, RuntimeError>) -> Result<T, RuntimeError> {
        let lock = self.pulls.lock().unwrap_or_else(|e| e.into_inner()).entry(reference.to_string()).or_default().clone();
        let out = {
            let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
            f()
        };
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if pulls.get(reference).is_some_and(|l| Arc::strong_count(l) <= 2) {
            pulls.remove(reference);
        }
        out
    }

    /// Pulls `reference` (the caller holds its pull lock), keeping its
    /// layers' progress for `image pull` while it runs.
    fn pull_now(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<super::Pulled, RuntimeError> {
        let r = parse_ref(reference)?;
        let peer = self.peer.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|p| p.available());
        match peer {
            Some(peer) => {
                let src = shoal_image::SwarmFirst::new(peer.as_ref(), r.clone(), self.registry.source_with(&r, auth));
                let root = match src.resolve() {
                    Some(root) => root,
                    None => self.registry.resolve_with(&r, auth).map_err(image_err)?,
                };
                let pulled = self.import_from(reference, &r, &root, &src);
                let fallbacks = src.fallbacks();
                if !fallbacks.is_empty() {
                    crate::log!(
                        "INFO",
                        "pull {reference}: {} item(s) from the registry instead of the swarm ({})",
                        fallbacks.len(),
                        fallbacks[0]
                    );
                }
                pulled
            }
            None => {
                let root = self.registry.resolve_with(&r, auth).map_err(image_err)?;
                self.import_from(reference, &r, &root, &self.registry.source_with(&r, auth))
            }
        }
    }

    /// Imports image `r` (root `root`) from `src` for this node's platform,
    /// keeping `image pull`'s progress.
    fn import_from(&self, reference: &str, r: &Reference, root: &Descriptor, src: &dyn ImageSource) -> Result<super::Pulled, RuntimeError> {
        use shoal_containerd::BlobEvent;
        use shoal_shared::api::{PullLayer, PullLayerState, PullProgress};
        let plan = plan_import(src, &r.to_string(), root, &self.platform).map_err(image_err)?;
        let before = self.driver.image_get(&r.to_string()).ok().flatten().map(|rec| rec.target.digest);
        let layers = plan
            .layers
            .iter()
            .map(|l| PullLayer { digest: l.digest.clone(), size_bytes: l.size, done_bytes: 0, state: PullLayerState::Waiting })
            .collect();
        let key = reference.to_string();
        let progress = self.progress.clone();
        let update = |digest: &str, f: &dyn Fn(&mut PullLayer)| {
            if let Some(p) = progress.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&key) {
                p.layers.iter_mut().filter(|l| l.digest == digest).for_each(f);
            }
        };
        progress.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), PullProgress { digest: root.digest.clone(), layers });
        let observe = |digest: &str, ev: BlobEvent| match ev {
            BlobEvent::Exists => update(digest, &|l| {
                l.state = PullLayerState::AlreadyExists;
                l.done_bytes = l.size_bytes;
            }),
            BlobEvent::Written(n) => update(digest, &|l| {
                l.state = PullLayerState::Downloading;
                l.done_bytes = n.min(l.size_bytes);
            }),
            BlobEvent::Committed => update(digest, &|l| {
                l.state = PullLayerState::Complete;
                l.done_bytes = l.size_bytes;
            }),
        };
        let imported = self.driver.import_observed(&plan, src, &observe);
        let done = progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&key).unwrap_or_default();
        imported.map_err(|e| RuntimeError::Image(format!("cannot import {reference}: {e}")))?;
        // Docker's "newer image": a layer came down, or the name now points elsewhere.
        let downloaded = done.layers.iter().any(|l| l.state == PullLayerState::Complete) || before != Some(root.digest.clone());
        Ok(super::Pulled { name: r.familiar(), progress: done, downloaded })
    }

    /// The stored record for a reference: by its canonical name, or by
    /// name:tag when that record has the pinned digest.
    fn record(&self, r: &Reference) -> Result<Option<shoal_containerd::ImageRecord>, RuntimeError> {
        if let Some(rec) = self.driver.image_get(&r.to_string()).map_err(driver_err)? {
            return Ok(Some(rec));
        }
        let Some(digest) = r.digest() else { return Ok(None) };
        let tagged = Reference::parse(&r.name())
            .and_then(|n| n.with_tag(r.tag().unwrap_or("latest")))
            .map_err(|e| RuntimeError::Image(e.to_string()))?;
        Ok(self.driver.image_get(&tagged.to_string()).map_err(driver_err)?.filter(|rec| rec.target.digest == digest))
    }

    fn facts(&self, name: &str, root: &Descriptor) -> Result<ImageFacts, RuntimeError> {
        if let Some(f) = self.facts.lock().ok().and_then(|m| m.get(&root.digest).cloned()) {
            return Ok(ImageFacts { name: name.to_string(), ..f });
        }
        let f = self.read_facts(name, root)?;
        if let Ok(mut m) = self.facts.lock() {
            // Bounded: one entry per distinct image root ever seen, trimmed when large.
            if m.len() >= FACTS_CACHED_MAX {
                m.clear();
            }
            m.insert(root.digest.clone(), f.clone());
        }
        Ok(f)
    }

    fn read_facts(&self, name: &str, root: &Descriptor) -> Result<ImageFacts, RuntimeError> {
        let src = ContentSource { driver: &self.driver };
        let platforms = platforms_of(&src, root).map_err(image_err)?;
        let mut facts = ImageFacts { name: name.to_string(), digest: root.digest.clone(), platforms, ..Default::default() };
        // An image without a variant for this node still has facts (its
        // platforms); only starting it needs the config and chain id.
        if let Ok(plan) = plan_import(&src, name, root, &self.platform) {
            let cfg = read_config(&src, &plan.config).map_err(image_err)?;
            let c = cfg.config;
            facts.entrypoint = c.entrypoint.unwrap_or_default();
            facts.cmd = c.cmd.unwrap_or_default();
            facts.env = c.env;
            facts.workdir = c.working_dir;
            facts.user = c.user;
            facts.stop_signal = c.stop_signal;
            facts.healthcheck = c.healthcheck.map(|h| {
                let ns = |v: i64| u64::try_from(v).unwrap_or(0);
                HealthConfig {
                    test: h.test,
                    interval_ns: ns(h.interval),
                    timeout_ns: ns(h.timeout),
                    start_period_ns: ns(h.start_period),
                    retries: ns(h.retries),
                }
            });
            facts.chain_id = shoal_containerd::chain_id(&plan.diff_ids);
        }
        Ok(facts)
    }

    /// Re-imports from the content store to make sure layers are unpacked (cheap when they are).
    fn ensure_unpacked(&self, name: &str, root: &Descriptor, chain_id: &str) -> Result<(), RuntimeError> {
        if self.unpacked.lock().map(|u| u.contains(chain_id)).unwrap_or(false) {
            return Ok(());
        }
        let src = ContentSource { driver: &self.driver };
        let plan = plan_import(&src, name, root, &self.platform).map_err(image_err)?;
        self.driver.import(&plan, &src).map_err(|e| RuntimeError::Image(format!("cannot unpack image {name}: {e}")))?;
        if let Ok(mut u) = self.unpacked.lock() {
            u.insert(chain_id.to_string());
        }
        Ok(())
    }
}

impl Runtime for Containerd {
    fn version(&self) -> Result<String, RuntimeError> {
        self.driver.version().map(|v| format!("containerd {v}")).map_err(driver_err)
    }

    fn local_image(&self, reference: &str) -> Result<Option<ImageFacts>, RuntimeError> {
        let r = parse_ref(reference)?;
        match self.record(&r)? {
            Some(rec) => Ok(Some(self.facts(&rec.name, &rec.target)?)),
            None => Ok(None),
        }
    }

    fn remote_image(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<ImageFacts, RuntimeError> {
        let r = parse_ref(reference)?;
        let root = self.registry.resolve_with(&r, auth).map_err(image_err)?;
        let registry = self.registry.source_with(&r, auth);
        // A single-platform image's platform is in its config: read through the swarm's
        // cache when there is one, so the pulls that follow find it there.
        let peer = self.peer.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|p| p.available());
        let platforms = match &peer {
            Some(p) => platforms_of(&shoal_image::SwarmFirst::new(p.as_ref(), r.clone(), &registry), &root),
            None => platforms_of(&registry, &root),
        }
        .map_err(image_err)?;
        Ok(ImageFacts { name: r.to_string(), digest: root.digest, platforms, ..Default::default() })
    }

    fn ensure_image(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<ImageFacts, RuntimeError> {
        let facts = match self.local_image(reference)? {
            Some(f) => f,
            None => self.one_pull_at_a_time(reference, || {
                // Pulled meanwhile by the task we waited for: nothing to download.
                match self.local_image(reference)? {
                    Some(f) => Ok(f),
                    None => self.pull_now(reference, auth).and_then(|_| {
                        self.local_image(reference)?
                            .ok_or_else(|| RuntimeError::Image(format!("image {reference} vanished right after the pull")))
                    }),
                }
            })?,
        };
        if facts.chain_id.is_empty() {
            let available: Vec<String> = facts.platforms.iter().map(|p| p.to_string()).collect();
            return Err(RuntimeError::Image(format!(
                "image {reference} has no variant for {} (available: {})",
                self.platform,
                available.join(", ")
            )));
        }
        let r = parse_ref(reference)?;
        let rec = self.record(&r)?.ok_or_else(|| RuntimeError::Image(format!("no such image: {reference}")))?;
        self.ensure_unpacked(&rec.name, &rec.target, &facts.chain_id)?;
        Ok(facts)
    }

    fn start(&self, s: &StartSpec) -> Result<(), RuntimeError> {
        let mut spec = ContainerSpec::new(&s.id, &s.image.name, &s.image.chain_id, s.args.clone(), s.log_path.clone());
        spec.env = s.env.clone();
        spec.cwd = if s.cwd.is_empty() { "/".into() } else { s.cwd.clone() };
        // Names are resolved from the image's own files once its snapshot is
        // prepared (shoal_containerd::users), as Docker does.
        if shoal_containerd::users::needs_lookup(&s.user) {
            spec.user_name = Some(s.user.clone());
        } else {
            spec.user = parse_user(&s.user)?;
        }
        spec.hostname = s.hostname.clone();
        spec.labels = s.labels.clone();
        spec.memory_limit_bytes = (s.memory_limit_bytes > 0).then_some(s.memory_limit_bytes);
        spec.nano_cpus = (s.nano_cpus > 0).then_some(s.nano_cpus);
        spec.stop_signal = signal_number(&s.stop_signal)?;
        spec.netns = s.netns.clone();
        // This binary copies the task's output (`shoal log-driver`): output never blocks the task.
        spec.log_driver = std::env::current_exe().ok().filter(|p| p.is_file());
        spec.mounts = s
            .mounts
            .iter()
            .map(|m| MountSpec {
                source: m.source.display().to_string(),
                destination: m.target.clone(),
                kind: if m.tmpfs { CtrMount::Tmpfs } else { CtrMount::Bind },
                read_only: m.read_only,
            })
            .collect();
        self.driver.run(&spec).map_err(|e| match e {
            shoal_containerd::Error::Unavailable { .. } => RuntimeError::Unavailable(e.to_string()),
            other => RuntimeError::Start(other.to_string()),
        })
    }

    fn signal(&self, id: &str, kill: bool) -> Result<Signalled, RuntimeError> {
        match self.driver.signal(id, kill).map_err(driver_err)? {
            shoal_containerd::Signalled::Sent => Ok(Signalled::Sent),
            shoal_containerd::Signalled::NoProcess { exit_code } => Ok(Signalled::NoProcess { exit_code }),
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.driver.remove(id).map_err(driver_err)
    }

    fn list(&self) -> Result<Vec<Observed>, RuntimeError> {
        let list = self.driver.list().map_err(driver_err)?;
        Ok(list
            .into_iter()
            .map(|c| Observed {
                health: health_of(&c.labels),
                id: c.id,
                pid: match c.status {
                    ContainerStatus::Running { pid } => Some(pid),
                    _ => None,
                },
                state: match c.status {
                    ContainerStatus::Created => ContainerState::Created,
                    ContainerStatus::Running { .. } => ContainerState::Running,
                    ContainerStatus::Stopped { exit_code, .. } => ContainerState::Stopped { exit_code },
                    ContainerStatus::Unknown => ContainerState::Unknown,
                },
            })
            .collect())
    }

    #[cfg(feature = "probes")]
    fn probe(&self, id: &str, argv: &[String], timeout_ms: u64) -> Result<Probed, RuntimeError> {
        let out = self.driver.exec(id, argv, timeout_ms, PROBE_OUTPUT_BYTES_MAX).map_err(driver_err)?;
        Ok(Probed { exit_code: out.exit_code, output: out.output })
    }

    /// A build without containerd exec (the `probes` feature; mips64le, to
    /// fit 5 MiB): every probe fails with the reason, so a task with a
    /// healthcheck on this node ends unhealthy saying why, never Running
    /// unchecked.
    #[cfg(not(feature = "probes"))]
    fn probe(&self, _id: &str, _argv: &[String], _timeout_ms: u64) -> Result<Probed, RuntimeError> {
        Err(RuntimeError::Start(
            "healthchecks cannot run on this node: its build leaves containerd exec out (mips64le, to fit 5 MiB); run the service elsewhere"
                .into(),
        ))
    }

    fn exits(&self) -> async_channel::Receiver<Exit> {
        self.exits.clone()
    }

    fn load(&self, path: &Path) -> Result<Vec<String>, RuntimeError> {
        let archive = shoal_image::archive::Archive::open(path).map_err(image_err)?;
        let mut loaded = Vec::new();
        for (name, root) in archive.images() {
            let Some(name) = name else { continue };
            let plan = plan_import(&archive, &name, &root, &self.platform).map_err(image_err)?;
            self.driver.import(&plan, &archive).map_err(|e| RuntimeError::Image(format!("cannot import {name}: {e}")))?;
            loaded.push(Reference::parse(&name).map(|r| r.familiar()).unwrap_or(name));
        }
        if loaded.is_empty() {
            return Err(RuntimeError::Image(format!("{} contains no named image: tag the image when saving it", path.display())));
        }
        Ok(loaded)
    }

    fn pull(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<super::Pulled, RuntimeError> {
        self.one_pull_at_a_time(reference, || self.pull_now(reference, auth))
    }

    fn pull_progress(&self, reference: &str) -> Option<shoal_shared::api::PullProgress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).get(reference).cloned()
    }

    fn login(&self, registry: &str, auth: &shoal_image::Credentials) -> Result<(), RuntimeError> {
        self.registry.login(registry, auth).map_err(image_err)
    }

    fn set_blob_peer(&self, peer: Option<Arc<dyn shoal_image::BlobPeer>>) {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = peer;
    }

    fn registry_manifest(
        &self,
        reference: &str,
        digest: &str,
        auth: Option<&shoal_image::Credentials>,
    ) -> Result<(String, Vec<u8>), RuntimeError> {
        let r = parse_ref(reference)?;
        let (desc, bytes) = self.registry.manifest_by_digest(&r, digest, auth).map_err(image_err)?;
        Ok((desc.media_type, bytes.to_vec()))
    }

    fn registry_blob_to(
        &self,
        reference: &str,
        digest: &str,
        size: u64,
        auth: Option<&shoal_image::Credentials>,
        dest: &Path,
        done_bytes: &std::sync::atomic::AtomicU64,
    ) -> Result<(), RuntimeError> {
        use std::io::{Read, Write};
        let r = parse_ref(reference)?;
        let src = self.registry.source_with(&r, auth);
        // Not a manifest's media type: fetched as a blob, verified as it is read.
        let desc = Descriptor { media_type: "application/octet-stream".into(), digest: digest.to_string(), size, platform: None };
        let mut reader = src.open_blob(&desc).map_err(image_err)?;
        let io = |e: std::io::Error| RuntimeError::Image(format!("cannot download {digest} into {}: {e}", dest.display()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(dest).map_err(io)?);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| match shoal_image::digest::VerifyError::from_io(&e) {
                Some(v) => RuntimeError::Image(v.to_string()),
                None => io(e),
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io)?;
            done_bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        Ok(())
    }

    fn images(&self) -> Result<Vec<ImageSummary>, RuntimeError> {
        let src = ContentSource { driver: &self.driver };
        let records = self.driver.image_list().map_err(driver_err)?;
        Ok(records
            .into_iter()
            .map(|rec| {
                let platforms = platforms_of(&src, &rec.target).map(|ps| ps.iter().map(|p| p.to_string()).collect()).unwrap_or_default();
                ImageSummary {
                    name: Reference::parse(&rec.name).map(|r| r.familiar()).unwrap_or(rec.name.clone()),
                    digest: rec.target.digest.clone(),
                    size_bytes: rec.size_bytes.unwrap_or(rec.target.size),
                    platforms,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_signals() {
        assert_eq!(parse_user(""), Ok(None));
        assert_eq!(parse_user("1000"), Ok(Some((1000, 1000))));
        assert_eq!(parse_user("1000:50"), Ok(Some((1000, 50))));
        assert!(parse_user("nobody").is_err());
        assert_eq!(signal_number("SIGINT"), Ok(libc::SIGINT));
        assert_eq!(signal_number("TERM"), Ok(libc::SIGTERM));
        assert_eq!(signal_number("9"), Ok(9));
        assert!(signal_number("SIGFOO").is_err());
    }
}
