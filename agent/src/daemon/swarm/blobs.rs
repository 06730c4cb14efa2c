//! Layers shared inside the swarm (issue #16): managers are a pull-through
//! blob cache for the nodes of their swarm, over the Noise links.
//!
//! Two sides, both here:
//! - **asking** (every node): a pull runs in a runtime job and asks through
//!   [`LoopPeer`] (the `shoal_image::BlobPeer` the runtime holds), which
//!   hands each ask to the loop as [`Event::BlobAsk`]. The loop answers it
//!   from this node's own cache on a manager, or sends `Wire::BlobGet` to
//!   the leader (any manager it has a link to otherwise) and routes the
//!   `Wire::BlobPart` back. A part is at most `BLOB_PART_BYTES_MAX`; the
//!   reader asks for the next one as it is consumed.
//! - **serving** (managers): a manifest is fetched from the registry each
//!   time it is asked (the registry client keeps manifests in memory); a
//!   blob is downloaded once into `DATA_DIR/blob-cache/` (one download per
//!   digest, at most `BLOB_DOWNLOADS_MAX` at once, answered `Fetching`
//!   meanwhile) and parts are read from the file. A blob whose download
//!   failed is refused for `BLOB_FAILED_MS`, so askers go to the registry.
//!   The cache holds at most `BLOB_CACHE_BYTES_MAX`; the oldest files go
//!   first.
//!
//! `swarm init|update --layer-sharing=false` turns it off for the swarm:
//! managers refuse (`LAYER_SHARING_OFF`) and every node pulls from its
//! registry.
//!
//! Nothing a manager sends is trusted: `shoal_image::SwarmFirst` verifies
//! digests, and falls back to the registry when a manager refuses.
//!
//! On-disk layout (`DATA_DIR/blob-cache/`): `<hex>` is a complete blob
//! whose sha256 is `<hex>` (verified while downloading); `<hex>.partial`
//! a download in progress (deleted at start: a restarted manager begins
//! again). Nothing else is written there.
//!
//! Limits: `BLOB_ASKS_MAX` asks routed at once per node, each answered or
//! failed within `BLOB_ASK_TIMEOUT_MS`; a blob the manager is fetching is
//! waited for while it makes progress (`BLOB_STALL_TIMEOUT_MS`).

use super::Mode;
use crate::daemon::{Daemon, Event};
use async_channel::Sender;
use shoal_image::{BlobPeer, Descriptor, Reference};
use shoal_shared::wire::{BlobPart, Wire, BLOB_PART_BYTES_MAX};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Asks routed to managers at once from one node.
pub const BLOB_ASKS_MAX: usize = 256;
/// How long one ask may wait for its part.
pub const BLOB_ASK_TIMEOUT_MS: u64 = 30_000;
/// How long a blob the manager is fetching may show no progress.
pub const BLOB_STALL_TIMEOUT_MS: u64 = 60_000;
/// How often an asker asks again while the manager fetches.
const BLOB_FETCHING_POLL_MS: u64 = 200;
/// Manifest fetches a manager runs at once (more are answered `Fetching`).
pub const BLOB_MANIFEST_FETCHES_MAX: usize = 16;
/// Blob downloads a manager runs at once.
pub const BLOB_DOWNLOADS_MAX: usize = 2;
/// How long a blob whose download failed is refused (askers use the registry).
pub const BLOB_FAILED_MS: u64 = 30_000;
/// Bytes the cache holds at most (the oldest blobs go first).
pub const BLOB_CACHE_BYTES_MAX: u64 = 2 << 30;
/// A manager's answer while the swarm's layer sharing is off.
pub const LAYER_SHARING_OFF: &str = "layer sharing is off in this swarm (`shoal swarm update --layer-sharing=true` turns it on)";
/// The cache's directory under the data dir.
pub const BLOB_CACHE_DIR: &str = "blob-cache";

/// One ask of a blob part (what a `Wire::BlobGet` carries but the id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlobAsk {
    pub(crate) reference: String,
    pub(crate) digest: String,
    /// 0: a manifest or index.
    pub(crate) size: u64,
    pub(crate) offset: u64,
    pub(crate) len_bytes: u32,
}

/// Where a served part goes.
pub(crate) enum BlobDest {
    /// A pull on this node.
    Local(Sender<BlobPart>),
    /// The node that sent `Wire::BlobGet` `id` on link `conn`.
    Peer { conn: u64, id: u64 },
}

/// The loop's memory of blob sharing (part of [`super::Swarm`]).
pub(crate) struct Blobs {
    /// Whether pulls on this node ask the swarm (read by [`LoopPeer`]).
    pub(crate) enabled: Arc<AtomicBool>,
    next_id: u64,
    /// Asks out on links: id -> (reply, link, deadline in mono ms).
    asks: BTreeMap<u64, (Sender<BlobPart>, u64, u64)>,
    /// Manager: complete blobs in the cache, by digest, with their sizes.
    cached: BTreeMap<String, u64>,
    /// Manager: downloads in flight, by digest, with their progress.
    downloading: BTreeMap<String, Arc<AtomicU64>>,
    /// Manager: blobs whose download failed, by digest and whether it had
    /// credentials (one without may fail where one with would not): why,
    /// and until when (mono ms).
    failed: BTreeMap<(String, bool), (String, u64)>,
    /// Manager: whether the cache directory was read (at the first ask).
    scanned: bool,
    /// Manager: manifest fetches running.
    manifest_fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Blobs {
    fn default() -> Self {
        Blobs {
            enabled: Arc::new(AtomicBool::new(false)),
            next_id: 0,
            asks: BTreeMap::new(),
            cached: BTreeMap::new(),
            downloading: BTreeMap::new(),
            failed: BTreeMap::new(),
            scanned: false,
            manifest_fetches: Arc::default(),
        }
    }
}

impl Daemon {
    /// Whether this node's pulls ask the swarm: a manager of a swarm of
    /// more than one node (its cache then serves the others too), or a
    /// worker with a link to a manager.
    pub(crate) fn sync_blob_sharing(&mut self) {
        let on = match self.swarm.mode {
            Mode::Manager => self.store.state().nodes.len() > 1 && !self.store.state().layer_sharing_off,
            Mode::Worker => self.leader_conn().is_some() || self.any_manager_link().is_some(),
            Mode::Solo => false,
        };
        self.swarm.blobs.enabled.store(on, Ordering::Relaxed);
    }

    fn any_manager_link(&self) -> Option<u64> {
        let managers: Vec<String> =
            self.store.state().nodes.values().filter(|n| n.role == shoal_shared::types::NodeRole::Manager).map(|n| n.id.clone()).collect();
        managers.iter().chain(self.swarm.hints.iter().map(|h| &h.node_id)).find_map(|m| self.swarm.established(m))
    }

    /// A pull on this node asks for a part: served here on a manager, else
    /// asked of a manager.
    pub(crate) fn on_blob_ask(&mut self, ask: BlobAsk, reply: Sender<BlobPart>) {
        if self.swarm.mode == Mode::Manager {
            let me = self.node_id.clone();
            self.serve_blob(BlobDest::Local(reply), ask, &me);
            return;
        }
        let refuse = |why: &str| {
            let _ = reply.try_send(BlobPart::Refused { why: why.to_string() });
        };
        if self.swarm.mode != Mode::Worker {
            return refuse("this node is in no swarm");
        }
        if self.swarm.blobs.asks.len() >= BLOB_ASKS_MAX {
            return refuse("too many blob asks in flight");
        }
        let Some(conn) = self.leader_conn().or_else(|| self.any_manager_link()) else {
            return refuse("no manager in reach");
        };
        self.swarm.blobs.next_id += 1;
        let id = self.swarm.blobs.next_id;
        let msg = Wire::BlobGet {
            id,
            reference: ask.reference,
            digest: ask.digest,
            size: ask.size,
            offset: ask.offset,
            len_bytes: ask.len_bytes.min(BLOB_PART_BYTES_MAX),
        };
        if !self.swarm.send(conn, &msg) {
            return refuse("the link to the manager would not take the ask");
        }
        let deadline = self.mono_ms() + BLOB_ASK_TIMEOUT_MS;
        self.swarm.blobs.asks.insert(id, (reply, conn, deadline));
    }

    /// `Wire::BlobGet` or `Wire::BlobPart` from `peer` on `conn`.
    pub(super) fn on_blob_message(&mut self, conn: u64, peer: &str, msg: Wire) {
        match msg {
            Wire::BlobGet { id, reference, digest, size, offset, len_bytes } => {
                if !self.store.state().nodes.contains_key(peer) {
                    self.swarm.send(conn, &Wire::BlobPart { id, part: BlobPart::Refused { why: "not a node of this swarm".into() } });
                    return;
                }
                self.serve_blob(BlobDest::Peer { conn, id }, BlobAsk { reference, digest, size, offset, len_bytes }, peer);
            }
            // Only from the link the ask went on (a late answer finds nothing).
            Wire::BlobPart { id, part } if self.swarm.blobs.asks.get(&id).is_some_and(|(_, c, _)| *c == conn) => {
                if let Some((reply, _, _)) = self.swarm.blobs.asks.remove(&id) {
                    let _ = reply.try_send(part);
                }
            }
            _ => {}
        }
    }

    /// A link closed: its asks fail (the askers go to the registry).
    pub(super) fn blobs_link_gone(&mut self, conn: u64) {
        let gone: Vec<u64> = self.swarm.blobs.asks.iter().filter(|(_, (_, c, _))| *c == conn).map(|(id, _)| *id).collect();
        for id in gone {
            if let Some((reply, _, _)) = self.swarm.blobs.asks.remove(&id) {
                let _ = reply.try_send(BlobPart::Refused { why: "the link to the manager closed".into() });
            }
        }
    }

    /// Asks past their deadline fail; failed downloads are retried after a while.
    pub(super) fn blobs_tick(&mut self, now_ms: u64) {
        let late: Vec<u64> = self.swarm.blobs.asks.iter().filter(|(_, (_, _, d))| now_ms >= *d).map(|(id, _)| *id).collect();
        for id in late {
            if let Some((reply, _, _)) = self.swarm.blobs.asks.remove(&id) {
                let _ = reply.try_send(BlobPart::Refused { why: format!("no answer from the manager within {BLOB_ASK_TIMEOUT_MS} ms") });
            }
        }
        self.swarm.blobs.failed.retain(|_, (_, until)| now_ms < *until);
    }

    fn cache_dir(&self) -> PathBuf {
        self.cfg.data_dir.join(BLOB_CACHE_DIR)
    }

    /// The credentials for `reference`'s repository when node `asker` may
    /// use them: those of a service whose image is in it
    /// (`--with-registry-auth`) and that has a task on that node (the
    /// nodes the credentials would go to anyway), if any.
    fn blob_auth(&self, reference: &str, asker: &str) -> Option<shoal_image::Credentials> {
        let repo = Reference::parse(reference).ok()?.name();
        let state = self.store.state();
        let service = state.services.values().find(|s| {
            state.registry_auths.contains_key(&s.id)
                && Reference::parse(&s.spec.task.container.image).is_ok_and(|r| r.name() == repo)
                && state.tasks.values().any(|t| t.service_id == s.id && t.node_id == asker && !t.status.state.is_terminal())
        })?;
        let a = state.registry_auths.get(&service.id)?;
        Some(a.into())
    }

    /// A manager serves one ask: a manifest from the registry, a blob part
    /// from the cache (starting its download if needed).
    fn serve_blob(&mut self, dest: BlobDest, ask: BlobAsk, asker: &str) {
        let refuse = |why: String| BlobPart::Refused { why };
        if self.swarm.mode != Mode::Manager {
            return self.blob_served(dest, refuse("this node is not a manager".into()));
        }
        if self.store.state().layer_sharing_off {
            return self.blob_served(dest, refuse(LAYER_SHARING_OFF.into()));
        }
        if Reference::parse(&ask.reference).is_err() || shoal_image::digest::validate(&ask.digest).is_err() {
            return self.blob_served(dest, refuse(format!("{:?} of {:?} is not a valid blob", ask.digest, ask.reference)));
        }
        let auth = self.blob_auth(&ask.reference, asker);
        let len = u64::from(ask.len_bytes.min(BLOB_PART_BYTES_MAX));
        if ask.size == 0 {
            // Off the loop and off the runtime's slots (pulls waiting on this loop hold those).
            if self.swarm.blobs.manifest_fetches.load(Ordering::Relaxed) >= BLOB_MANIFEST_FETCHES_MAX {
                return self.blob_served(dest, BlobPart::Fetching { done_bytes: 0 });
            }
            self.swarm.blobs.manifest_fetches.fetch_add(1, Ordering::Relaxed);
            let fetches = self.swarm.blobs.manifest_fetches.clone();
            let rt = self.runtime.clone();
            let (reference, digest, offset) = (ask.reference, ask.digest, ask.offset);
            self.io.read(Box::new(move || {
                let part = match rt.registry_manifest(&reference, &digest, auth.as_ref()) {
                    Ok((media_type, bytes)) => {
                        let size = bytes.len() as u64;
                        let from = offset.min(size) as usize;
                        let to = (offset.saturating_add(len)).min(size) as usize;
                        BlobPart::Bytes { size, media_type, bytes: bytes[from..to].to_vec() }
                    }
                    Err(e) => BlobPart::Refused { why: e.to_string() },
                };
                fetches.fetch_sub(1, Ordering::Relaxed);
                Event::BlobServed { dest, part }
            }));
            return;
        }
        if !self.swarm.blobs.scanned {
            self.swarm.blobs.scanned = true;
            self.swarm.blobs.cached = scan_cache(&self.cache_dir());
        }
        let Some(hex) = ask.digest.strip_prefix("sha256:").map(str::to_string) else {
            return self.blob_served(dest, refuse(format!("{} is not a sha256 digest", ask.digest)));
        };
        if let Some(&size) = self.swarm.blobs.cached.get(&ask.digest) {
            if size != ask.size {
                return self.blob_served(dest, refuse(format!("blob {} has {size} bytes, not {}", ask.digest, ask.size)));
            }
            let path = self.cache_dir().join(&hex);
            let offset = ask.offset;
            self.io.read(Box::new(move || Event::BlobServed { dest, part: read_part(&path, size, offset, len) }));
            return;
        }
        if let Some(done) = self.swarm.blobs.downloading.get(&ask.digest) {
            let done_bytes = done.load(Ordering::Relaxed);
            return self.blob_served(dest, BlobPart::Fetching { done_bytes });
        }
        if let Some((why, _)) = self.swarm.blobs.failed.get(&(ask.digest.clone(), auth.is_some())) {
            let why = why.clone();
            return self.blob_served(dest, refuse(why));
        }
        if self.swarm.blobs.downloading.len() >= BLOB_DOWNLOADS_MAX {
            // Asked again shortly: started once a download ends.
            return self.blob_served(dest, BlobPart::Fetching { done_bytes: 0 });
        }
        let done = Arc::new(AtomicU64::new(0));
        self.swarm.blobs.downloading.insert(ask.digest.clone(), done.clone());
        let dir = self.cache_dir();
        let (reference, digest, size) = (ask.reference, ask.digest, ask.size);
        crate::log!("INFO", "blob cache: fetching {digest} ({size} bytes) of {reference} for the swarm");
        let rt = self.runtime.clone();
        self.io.read(Box::new(move || {
            let started = Instant::now();
            let result = download(rt.as_ref(), &dir, &reference, &digest, size, auth.as_ref(), &done);
            let with_auth = auth.is_some();
            Event::BlobCached { digest, size, with_auth, result: result.map(|evicted| (evicted, started.elapsed())) }
        }));
        self.blob_served(dest, BlobPart::Fetching { done_bytes: 0 })
    }

    /// A download into the cache ended.
    pub(crate) fn on_blob_cached(&mut self, digest: String, size: u64, with_auth: bool, result: Result<(Vec<String>, Duration), String>) {
        self.swarm.blobs.downloading.remove(&digest);
        match result {
            Ok((evicted, took)) => {
                crate::log!("INFO", "blob cache: {digest} ({size} bytes) fetched in {} ms", took.as_millis());
                for e in evicted {
                    self.swarm.blobs.cached.remove(&e);
                }
                self.swarm.blobs.cached.insert(digest, size);
            }
            Err(why) => {
                crate::log!("WARN", "blob cache: cannot fetch {digest}: {why}; nodes pull it from the registry themselves");
                let until = self.mono_ms() + BLOB_FAILED_MS;
                self.swarm.blobs.failed.insert((digest, with_auth), (why, until));
            }
        }
    }

    /// A served part goes where it was asked.
    pub(crate) fn blob_served(&mut self, dest: BlobDest, part: BlobPart) {
        match dest {
            BlobDest::Local(reply) => {
                let _ = reply.try_send(part);
            }
            BlobDest::Peer { conn, id } => {
                self.swarm.send(conn, &Wire::BlobPart { id, part });
            }
        }
    }
}

/// The complete blobs in the cache directory (partial downloads deleted).
fn scan_cache(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".partial") {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let digest = format!("sha256:{name}");
        if shoal_image::digest::validate(&digest).is_ok() {
            if let Ok(m) = e.metadata() {
                out.insert(digest, m.len());
            }
        }
    }
    out
}

/// Reads `len` bytes from `offset` of the cached blob at `path` (`size` bytes).
fn read_part(path: &Path, size: u64, offset: u64, len: u64) -> BlobPart {
    use std::io::{Seek, SeekFrom};
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset.min(size)))?;
        let mut out = Vec::new();
        f.take(len.min(size.saturating_sub(offset))).read_to_end(&mut out)?;
        Ok(out)
    };
    match read() {
        Ok(bytes) => BlobPart::Bytes { size, media_type: String::new(), bytes },
        Err(e) => BlobPart::Refused { why: format!("cannot read the cached blob {}: {e}", path.display()) },
    }
}

/// Downloads a blob into the cache (verified by the registry client while
/// it is read), then trims the cache to its bound; returns the digests of
/// the blobs that went.
fn download(
    rt: &dyn crate::runtime::Runtime,
    dir: &Path,
    reference: &str,
    digest: &str,
    size: u64,
    auth: Option<&shoal_image::Credentials>,
    done: &AtomicU64,
) -> Result<Vec<String>, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("{digest} is not a sha256 digest"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let partial = dir.join(format!("{hex}.partial"));
    let result = rt.registry_blob_to(reference, digest, size, auth, &partial, done).map_err(|e| e.to_string());
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let path = dir.join(hex);
    std::fs::rename(&partial, &path).map_err(|e| format!("cannot move {} into place: {e}", partial.display()))?;
    Ok(trim_cache(dir, BLOB_CACHE_BYTES_MAX, hex))
}

/// Deletes the oldest complete blobs until the cache holds at most
/// `bytes_max` (`keep`, the blob just added, stays); returns their digests.
fn trim_cache(dir: &Path, bytes_max: u64, keep: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(std::time::SystemTime, String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let m = e.metadata().ok()?;
            (!name.ends_with(".partial")).then(|| (m.modified().unwrap_or(std::time::UNIX_EPOCH), name, m.len()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    files.sort();
    let mut gone = Vec::new();
    for (_, name, len) in files {
        if total <= bytes_max {
            break;
        }
        if name == keep {
            continue;
        }
        if std::fs::remove_file(dir.join(&name)).is_ok() {
            total = total.saturating_sub(len);
            gone.push(format!("sha256:{name}"));
        }
    }
    gone
}

/// The runtime's way to the swarm's blobs: hands asks to the daemon's loop
/// and waits for their parts (in the pull's job thread, never on the loop).
pub(crate) struct LoopPeer {
    tx: Sender<Event>,
    enabled: Arc<AtomicBool>,
}

impl LoopPeer {
    pub(crate) fn new(tx: Sender<Event>, enabled: Arc<AtomicBool>) -> LoopPeer {
        LoopPeer { tx, enabled }
    }

    /// One part, waiting while the manager fetches (as long as it makes progress).
    fn part(&self, ask: &BlobAsk) -> Result<(u64, String, Vec<u8>), String> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Err("layer sharing is not in effect on this node (no swarm, or no manager in reach)".into());
        }
        let mut last_progress = (Instant::now(), u64::MAX);
        loop {
            let (reply, rx) = async_channel::bounded(1);
            self.tx.send_blocking(Event::BlobAsk { ask: ask.clone(), reply }).map_err(|_| "the daemon is stopping".to_string())?;
            let wait = async {
                let timeout = async {
                    async_io::Timer::after(Duration::from_millis(BLOB_ASK_TIMEOUT_MS + 1_000)).await;
                    Err(async_channel::RecvError)
                };
                futures_lite::future::or(rx.recv(), timeout).await
            };
            match futures_lite::future::block_on(wait) {
                Ok(BlobPart::Bytes { size, media_type, bytes }) => return Ok((size, media_type, bytes)),
                Ok(BlobPart::Refused { why }) => return Err(why),
                Ok(BlobPart::Fetching { done_bytes }) => {
                    if done_bytes != last_progress.1 {
                        last_progress = (Instant::now(), done_bytes);
                    } else if last_progress.0.elapsed() >= Duration::from_millis(BLOB_STALL_TIMEOUT_MS) {
                        return Err(format!(
                            "the manager's download of {} made no progress for {} s",
                            ask.digest,
                            BLOB_STALL_TIMEOUT_MS / 1000
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(BLOB_FETCHING_POLL_MS));
                }
                Err(_) => return Err(format!("no answer from the daemon's loop within {} ms", BLOB_ASK_TIMEOUT_MS + 1_000)),
            }
        }
    }
}

impl BlobPeer for LoopPeer {
    fn available(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn manifest(&self, reference: &Reference, digest: &str) -> Result<(String, Vec<u8>), String> {
        let mut out = Vec::new();
        loop {
            let ask = BlobAsk {
                reference: reference.to_string(),
                digest: digest.to_string(),
                size: 0,
                offset: out.len() as u64,
                len_bytes: BLOB_PART_BYTES_MAX,
            };
            let (size, media_type, bytes) = self.part(&ask)?;
            if size > shoal_image::manifest::MANIFEST_BYTES_MAX {
                return Err(format!("manifest {digest} of {size} bytes is over the limit"));
            }
            if bytes.is_empty() && (out.len() as u64) < size {
                return Err(format!("manifest {digest} ended at byte {} of {size}", out.len()));
            }
            out.extend(bytes);
            if out.len() as u64 >= size {
                return Ok((media_type, out));
            }
        }
    }

    fn blob(&self, reference: &Reference, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send>, String> {
        let mut r = PeerReader {
            peer: LoopPeer { tx: self.tx.clone(), enabled: self.enabled.clone() },
            ask: BlobAsk {
                reference: reference.to_string(),
                digest: desc.digest.clone(),
                size: desc.size,
                offset,
                len_bytes: BLOB_PART_BYTES_MAX,
            },
            buf: Vec::new(),
            pos: 0,
        };
        // The first part now: a manager that cannot serve is found here, and the pull asks the registry.
        if desc.size > offset {
            r.fill().map_err(|e| e.to_string())?;
        }
        Ok(Box::new(r))
    }
}

/// A blob read part by part from the swarm.
struct PeerReader {
    peer: LoopPeer,
    /// The next part's ask (`offset`: the first byte not yet asked).
    ask: BlobAsk,
    buf: Vec<u8>,
    pos: usize,
}

impl PeerReader {
    fn fill(&mut self) -> std::io::Result<()> {
        let (size, _, bytes) = self.peer.part(&self.ask).map_err(std::io::Error::other)?;
        if size != self.ask.size {
            return Err(std::io::Error::other(format!("the manager has {} with {size} bytes, not {}", self.ask.digest, self.ask.size)));
        }
        if bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the manager's {} ended at byte {}", self.ask.digest, self.ask.offset),
            ));
        }
        self.ask.offset += bytes.len() as u64;
        self.buf = bytes;
        self.pos = 0;
        Ok(())
    }
}

impl Read for PeerReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.buf.len() {
            if self.ask.offset >= self.ask.size {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_trims_its_oldest_blobs_and_keeps_the_new_one() {
        let dir = std::env::temp_dir().join(format!("shoal-blob-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("{i:064x}")).collect();
        for (i, n) in names.iter().enumerate() {
            std::fs::write(dir.join(n), vec![0u8; 100]).unwrap();
            let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000 + i as u64);
            std::fs::File::options().write(true).open(dir.join(n)).unwrap().set_modified(t).unwrap();
        }
        std::fs::write(dir.join(format!("{}.partial", names[0])), b"half").unwrap();
        // 400 bytes, bound 250: the two oldest go; the newest is kept even if it were oldest.
        let gone = trim_cache(&dir, 250, &names[0]);
        assert_eq!(gone, vec![format!("sha256:{}", names[1]), format!("sha256:{}", names[2])]);
        let left = scan_cache(&dir);
        assert_eq!(left.keys().cloned().collect::<Vec<_>>(), vec![format!("sha256:{}", names[0]), format!("sha256:{}", names[3])]);
        assert!(!dir.join(format!("{}.partial", names[0])).exists(), "a partial download is deleted at the scan");
        // Parts: bounded by the blob's end.
        let p = dir.join(&names[3]);
        std::fs::write(&p, (0..100u8).collect::<Vec<_>>()).unwrap();
        assert_eq!(read_part(&p, 100, 90, 50), BlobPart::Bytes { size: 100, media_type: String::new(), bytes: (90..100u8).collect() });
        assert!(matches!(read_part(&dir.join("missing"), 100, 0, 10), BlobPart::Refused { .. }));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
