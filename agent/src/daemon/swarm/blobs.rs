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
//!   meanwhile, only with `BLOB_DISK_RESERVE_BYTES` left free) and parts are
//!   read from the file. A blob whose download failed is refused for
//!   `BLOB_FAILED_MS`, so askers go to the registry. The cache holds at most
//!   `BLOB_CACHE_BYTES_MAX` (the blobs served longest ago go first, never
//!   one served in the last `BLOB_EVICT_IDLE_MS`); blobs over
//!   `BLOB_BYTES_MAX` are refused.
//! - **who may ask**: any node of the swarm, for the images of the swarm's
//!   services (a manager is no proxy to any registry); a manager's own
//!   pulls for any image. Credentials of a `--with-registry-auth` service
//!   fetch only for the nodes that run its tasks, and a blob they fetched
//!   is served only to those nodes.
//!
//! `swarm init|update --layer-sharing=false` turns it off for the swarm:
//! managers refuse (`LAYER_SHARING_OFF`) and every node pulls from its
//! registry.
//!
//! Nothing a manager sends is trusted: `shoal_image::SwarmFirst` verifies
//! digests, and falls back to the registry when a manager refuses.
//!
//! On-disk layout (`DATA_DIR/blob-cache/`): `<hex>` is a complete blob
//! whose sha256 is `<hex>` (verified while downloading, and hashed again
//! before a restarted manager first serves it: a damaged one is deleted);
//! `<hex>.private` the same, fetched with a service's credentials;
//! `<hex>.partial` a download in progress (deleted at start: a restarted
//! manager begins again). Nothing else is written there. The directory is
//! read off the loop at the first ask after a start (askers are answered
//! `Fetching` meanwhile).
//!
//! Limits: `BLOB_ASKS_MAX` asks routed at once per node, each answered or
//! failed within `BLOB_ASK_TIMEOUT_MS`; a blob the manager is fetching is
//! waited for while its downloads make progress (`BLOB_STALL_TIMEOUT_MS`),
//! at most `BLOB_WAIT_MAX_MS`, asking again every 0.2 s to 2 s.

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
/// How often an asker asks again while the manager fetches: first, and at
/// most (doubling in between).
const BLOB_FETCHING_POLL_MS: u64 = 200;
const BLOB_FETCHING_POLL_MAX_MS: u64 = 2_000;
/// How long an asker waits for a blob the manager fetches, however it
/// progresses (then it goes to the registry itself).
pub const BLOB_WAIT_MAX_MS: u64 = 30 * 60_000;
/// Manifest fetches a manager runs at once (more are answered `Fetching`).
pub const BLOB_MANIFEST_FETCHES_MAX: usize = 16;
/// Blob downloads a manager runs at once.
pub const BLOB_DOWNLOADS_MAX: usize = 2;
/// How long a blob whose download failed is refused (askers use the registry).
pub const BLOB_FAILED_MS: u64 = 30_000;
/// Bytes the cache holds at most (the blobs served longest ago go first).
pub const BLOB_CACHE_BYTES_MAX: u64 = 4 << 30;
/// The largest blob the cache takes (a larger one is pulled from the registry).
pub const BLOB_BYTES_MAX: u64 = BLOB_CACHE_BYTES_MAX / 2;
/// A blob served this recently is not evicted (nodes may be reading it).
pub const BLOB_EVICT_IDLE_MS: u64 = 60_000;
/// Free disk a download leaves at least (the node's raft store and containers share it).
pub const BLOB_DISK_RESERVE_BYTES: u64 = 1 << 30;
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
#[derive(Default)]
pub(crate) struct Blobs {
    /// Whether pulls on this node ask the swarm (read by [`LoopPeer`]).
    pub(crate) enabled: Arc<AtomicBool>,
    next_id: u64,
    /// Asks out on links: id -> (reply, link, deadline in mono ms).
    asks: BTreeMap<u64, (Sender<BlobPart>, u64, u64)>,
    /// Manager: complete blobs in the cache, by digest.
    cached: BTreeMap<String, Cached>,
    /// Manager: downloads in flight, by digest, with their progress.
    downloading: BTreeMap<String, Arc<AtomicU64>>,
    /// Manager: blobs whose download failed, by digest, size and whether it
    /// had credentials (an ask with another size, or one without credentials,
    /// must not refuse the right one): why, and until when (mono ms).
    failed: BTreeMap<(String, u64, bool), (String, u64)>,
    /// Manager: whether the cache directory was read (off the loop, at the
    /// first ask), and whether that read runs.
    scanned: bool,
    scanning: bool,
    /// Manager: manifest fetches running.
    manifest_fetches: Arc<std::sync::atomic::AtomicUsize>,
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
        let Ok(reference) = Reference::parse(&ask.reference) else {
            return self.blob_served(dest, refuse(format!("{:?} is not an image reference", ask.reference)));
        };
        let Some(hex) =
            ask.digest.strip_prefix("sha256:").filter(|_| shoal_image::digest::validate(&ask.digest).is_ok()).map(str::to_string)
        else {
            return self.blob_served(dest, refuse(format!("{:?} is not a sha256 digest", ask.digest)));
        };
        // Another node may ask only for the images of the swarm's services (a manager's
        // cache is no proxy to any registry); this node's own pulls may ask for any.
        let local = matches!(dest, BlobDest::Local(_));
        let repo = reference.name();
        let of_a_service =
            || self.store.state().services.values().any(|s| Reference::parse(&s.spec.task.container.image).is_ok_and(|r| r.name() == repo));
        if !local && !of_a_service() {
            return self.blob_served(dest, refuse(format!("{} is the image of no service of this swarm", reference.familiar())));
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
                        let to = offset.saturating_add(len).min(size) as usize;
                        BlobPart::Bytes { size, media_type, bytes: bytes[from..to].to_vec() }
                    }
                    Err(e) => BlobPart::Refused { why: e.to_string() },
                };
                fetches.fetch_sub(1, Ordering::Relaxed);
                Event::BlobServed { dest, part, note: None }
            }));
            return;
        }
        if ask.size > BLOB_BYTES_MAX {
            let why = format!("blob {} of {} bytes is larger than the swarm's cache takes ({BLOB_BYTES_MAX})", ask.digest, ask.size);
            return self.blob_served(dest, refuse(why));
        }
        if !self.swarm.blobs.scanned {
            // What a previous run left is read off the loop; askers ask again meanwhile.
            if !self.swarm.blobs.scanning {
                self.swarm.blobs.scanning = true;
                let dir = self.cache_dir();
                self.io.read(Box::new(move || Event::BlobCacheScanned { cached: scan_cache(&dir) }));
            }
            return self.blob_served(dest, BlobPart::Fetching { done_bytes: 0 });
        }
        let now_ms = self.mono_ms();
        if let Some(c) = self.swarm.blobs.cached.get(&ask.digest).cloned() {
            if c.size != ask.size {
                return self.blob_served(dest, refuse(format!("blob {} has {} bytes, not {}", ask.digest, c.size, ask.size)));
            }
            // Fetched with a service's credentials: only for the nodes those would go to.
            if c.private && auth.is_none() {
                return self.blob_served(dest, refuse(format!("blob {} needs credentials this node does not have", ask.digest)));
            }
            if let Some(e) = self.swarm.blobs.cached.get_mut(&ask.digest) {
                e.served_ms = now_ms;
                // One read hashes it; a damage it finds takes the entry out.
                e.verified = true;
            }
            let (size, verify, private) = (c.size, !c.verified, c.private);
            let path = self.cache_dir().join(cache_file(&hex, private));
            let (digest, offset) = (ask.digest, ask.offset);
            self.io.read(Box::new(move || {
                let (part, note) = read_part(&path, &digest, size, offset, len, verify);
                Event::BlobServed { dest, part, note }
            }));
            return;
        }
        if self.swarm.blobs.downloading.contains_key(&ask.digest) || self.swarm.blobs.downloading.len() >= BLOB_DOWNLOADS_MAX {
            // Started once a slot frees (asked again shortly): the askers see the downloads move.
            let done_bytes = self.swarm.blobs.downloading.values().map(|d| d.load(Ordering::Relaxed)).sum();
            return self.blob_served(dest, BlobPart::Fetching { done_bytes });
        }
        let key = (ask.digest.clone(), ask.size, auth.is_some());
        if let Some((why, _)) = self.swarm.blobs.failed.get(&key) {
            let why = why.clone();
            return self.blob_served(dest, refuse(why));
        }
        let done = Arc::new(AtomicU64::new(0));
        self.swarm.blobs.downloading.insert(ask.digest.clone(), done.clone());
        let dir = self.cache_dir();
        let (reference, digest, size) = (ask.reference, ask.digest, ask.size);
        crate::log!("INFO", "blob cache: fetching {digest} ({size} bytes) of {reference} for the swarm");
        let rt = self.runtime.clone();
        self.io.read(Box::new(move || {
            let started = Instant::now();
            let private = auth.is_some();
            let result = download(rt.as_ref(), &dir, &reference, &digest, size, auth.as_ref(), &done).map(|()| started.elapsed());
            Event::BlobCached { digest, size, private, result }
        }));
        self.blob_served(dest, BlobPart::Fetching { done_bytes: 0 })
    }

    /// The cache directory was read (at the first ask since start).
    pub(crate) fn on_blob_cache_scanned(&mut self, cached: BTreeMap<String, Cached>) {
        let blobs = &mut self.swarm.blobs;
        (blobs.scanned, blobs.scanning) = (true, false);
        for (digest, c) in cached {
            blobs.cached.entry(digest).or_insert(c);
        }
    }

    /// A download into the cache ended: the blob is served from now on, and
    /// the cache is trimmed to its bound.
    pub(crate) fn on_blob_cached(&mut self, digest: String, size: u64, private: bool, result: Result<Duration, String>) {
        self.swarm.blobs.downloading.remove(&digest);
        let now_ms = self.mono_ms();
        match result {
            Ok(took) => {
                crate::log!("INFO", "blob cache: {digest} ({size} bytes) fetched in {} ms", took.as_millis());
                self.swarm.blobs.cached.insert(digest.clone(), Cached { size, private, verified: true, served_ms: now_ms });
                self.trim_blob_cache(&digest, now_ms);
            }
            Err(why) => {
                crate::log!("WARN", "blob cache: cannot fetch {digest}: {why}; nodes pull it from the registry themselves");
                self.swarm.blobs.failed.insert((digest, size, private), (why, now_ms + BLOB_FAILED_MS));
            }
        }
    }

    /// Deletes the blobs served longest ago until the cache holds at most
    /// `BLOB_CACHE_BYTES_MAX`; never `keep` (just added) nor one served in
    /// the last `BLOB_EVICT_IDLE_MS` (nodes may be reading it part by part).
    fn trim_blob_cache(&mut self, keep: &str, now_ms: u64) {
        let (gone, total) = evict(&mut self.swarm.blobs.cached, keep, now_ms, BLOB_CACHE_BYTES_MAX);
        if total > BLOB_CACHE_BYTES_MAX {
            crate::log!(
                "WARN",
                "blob cache: {total} bytes, over its {BLOB_CACHE_BYTES_MAX}: every other blob was served in the last minute"
            );
        }
        if gone.is_empty() {
            return;
        }
        let dir = self.cache_dir();
        self.io.read(Box::new(move || {
            for f in gone {
                let _ = std::fs::remove_file(dir.join(f));
            }
            Event::Replied
        }));
    }

    /// A served part goes where it was asked; what the read learnt about the
    /// cache is kept.
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

    /// A cache read finished (see [`CacheNote`]).
    pub(crate) fn on_blob_served(&mut self, dest: BlobDest, part: BlobPart, note: Option<CacheNote>) {
        match note {
            Some(CacheNote::Verified(d)) => {
                if let Some(c) = self.swarm.blobs.cached.get_mut(&d) {
                    c.verified = true;
                }
            }
            Some(CacheNote::Gone(d)) => {
                crate::log!("WARN", "blob cache: {d} is gone or damaged; fetched again when asked");
                self.swarm.blobs.cached.remove(&d);
            }
            None => {}
        }
        self.blob_served(dest, part);
    }
}

/// What a cache read learnt about the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CacheNote {
    /// The blob hashes to its digest (checked once after a restart).
    Verified(String),
    /// The blob's file is missing or damaged (deleted): not cached any more.
    Gone(String),
}

/// One complete blob in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cached {
    size: u64,
    /// Fetched with a service's credentials (file `<hex>.private`).
    private: bool,
    /// Hashed since this process started (downloads are verified as they
    /// come; a file found at start is hashed before it is first served).
    verified: bool,
    /// When it was last served or added (mono ms): eviction goes by it.
    served_ms: u64,
}

/// Takes the blobs served longest ago out of `cached` until it holds at most
/// `bytes_max`, never `keep` nor one served in the last `BLOB_EVICT_IDLE_MS`;
/// returns their file names and the bytes left.
fn evict(cached: &mut BTreeMap<String, Cached>, keep: &str, now_ms: u64, bytes_max: u64) -> (Vec<String>, u64) {
    let mut total: u64 = cached.values().map(|c| c.size).sum();
    let mut gone = Vec::new();
    while total > bytes_max {
        let victim = cached
            .iter()
            .filter(|(d, c)| d.as_str() != keep && now_ms.saturating_sub(c.served_ms) >= BLOB_EVICT_IDLE_MS)
            .min_by_key(|(_, c)| c.served_ms)
            .map(|(d, _)| d.clone());
        let Some(d) = victim else { break };
        if let Some(c) = cached.remove(&d) {
            total = total.saturating_sub(c.size);
            gone.push(cache_file(d.trim_start_matches("sha256:"), c.private));
        }
    }
    (gone, total)
}

/// A blob's file name in the cache.
fn cache_file(hex: &str, private: bool) -> String {
    if private {
        format!("{hex}.private")
    } else {
        hex.to_string()
    }
}

/// The complete blobs in the cache directory (partial downloads deleted;
/// anything else left alone).
fn scan_cache(dir: &Path) -> BTreeMap<String, Cached> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".partial") {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let (hex, private) = match name.strip_suffix(".private") {
            Some(h) => (h.to_string(), true),
            None => (name.clone(), false),
        };
        let digest = format!("sha256:{hex}");
        if shoal_image::digest::validate(&digest).is_ok() {
            if let Ok(m) = e.metadata() {
                out.insert(digest, Cached { size: m.len(), private, verified: false, served_ms: 0 });
            }
        }
    }
    out
}

/// Reads `len` bytes from `offset` of the cached blob at `path` (`size`
/// bytes), hashing the whole file first when `verify` (a damaged one is
/// deleted and refused: the asker goes to the registry).
fn read_part(path: &Path, digest: &str, size: u64, offset: u64, len: u64, verify: bool) -> (BlobPart, Option<CacheNote>) {
    use std::io::{Seek, SeekFrom};
    let gone = |why: String| {
        let _ = std::fs::remove_file(path);
        (BlobPart::Refused { why }, Some(CacheNote::Gone(digest.to_string())))
    };
    let mut note = None;
    if verify {
        let whole = std::fs::File::open(path).and_then(|f| {
            let desc = shoal_image::Descriptor { media_type: String::new(), digest: digest.to_string(), size, platform: None };
            std::io::copy(&mut shoal_image::digest::VerifyingReader::new(f, &desc), &mut std::io::sink())
        });
        match whole {
            Ok(_) => note = Some(CacheNote::Verified(digest.to_string())),
            Err(e) => return gone(format!("the cached blob {} is damaged: {e}", path.display())),
        }
    }
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset.min(size)))?;
        let mut out = Vec::new();
        f.take(len.min(size.saturating_sub(offset))).read_to_end(&mut out)?;
        Ok(out)
    };
    match read() {
        Ok(bytes) => (BlobPart::Bytes { size, media_type: String::new(), bytes }, note),
        Err(e) => gone(format!("cannot read the cached blob {}: {e}", path.display())),
    }
}

/// Downloads a blob into the cache (verified by the registry client while
/// it is read), after checking the disk has room for it.
fn download(
    rt: &dyn crate::runtime::Runtime,
    dir: &Path,
    reference: &str,
    digest: &str,
    size: u64,
    auth: Option<&shoal_image::Credentials>,
    done: &AtomicU64,
) -> Result<(), String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("{digest} is not a sha256 digest"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Ok(space) = crate::daemon::disk::statvfs(dir) {
        let free = space.free_bytes;
        if free < size.saturating_add(BLOB_DISK_RESERVE_BYTES) {
            return Err(format!(
                "{} has {free} bytes free, too few for a blob of {size} bytes and the {BLOB_DISK_RESERVE_BYTES} kept free for the node",
                dir.display()
            ));
        }
    }
    let partial = dir.join(format!("{hex}.partial"));
    if let Err(e) = rt.registry_blob_to(reference, digest, size, auth, &partial, done).map_err(|e| e.to_string()) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let path = dir.join(cache_file(hex, auth.is_some()));
    std::fs::rename(&partial, &path).map_err(|e| format!("cannot move {} into place: {e}", partial.display()))
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
        let started = Instant::now();
        let mut last_progress = (Instant::now(), u64::MAX);
        let mut poll_ms = BLOB_FETCHING_POLL_MS;
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
                            "the manager's downloads made no progress for {} s while {} waited",
                            BLOB_STALL_TIMEOUT_MS / 1000,
                            ask.digest
                        ));
                    }
                    if started.elapsed() >= Duration::from_millis(BLOB_WAIT_MAX_MS) {
                        return Err(format!("the manager did not have {} after {} min", ask.digest, BLOB_WAIT_MAX_MS / 60_000));
                    }
                    std::thread::sleep(Duration::from_millis(poll_ms));
                    poll_ms = (poll_ms * 2).min(BLOB_FETCHING_POLL_MAX_MS);
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
    fn eviction_takes_the_blobs_served_longest_ago_never_a_busy_one() {
        let c = |size, served_ms| Cached { size, private: false, verified: true, served_ms };
        let d = |i: u8| format!("sha256:{}", format!("{i:x}").repeat(64).chars().take(64).collect::<String>());
        let mut cached: BTreeMap<String, Cached> =
            [(d(1), c(100, 1_000)), (d(2), c(100, 5_000)), (d(3), c(100, 200_000)), (d(4), c(100, 0))].into_iter().collect();
        // 400 bytes, bound 250, now 210 s: 4 is just added (kept), 3 was served 10 s ago (busy): 1 then 2 go.
        let (gone, left) = evict(&mut cached, &d(4), 210_000, 250);
        assert_eq!(gone, vec![cache_file(&d(1)[7..], false), cache_file(&d(2)[7..], false)]);
        assert_eq!(left, 200);
        assert_eq!(cached.keys().cloned().collect::<Vec<_>>(), vec![d(3), d(4)]);
        // Nothing idle enough: over the bound, and said so by the caller.
        let (gone, left) = evict(&mut cached, &d(4), 210_000, 100);
        assert!(gone.is_empty() && left == 200);
    }

    #[test]
    fn the_cache_is_read_back_checked_and_read_in_bounded_parts() {
        let dir = std::env::temp_dir().join(format!("shoal-blob-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let good: Vec<u8> = (0..100u8).collect();
        let digest = shoal_image::digest::sha256(&good);
        let hex = digest.trim_start_matches("sha256:").to_string();
        std::fs::write(dir.join(&hex), &good).unwrap();
        let other = shoal_image::digest::sha256(b"private");
        std::fs::write(dir.join(cache_file(other.trim_start_matches("sha256:"), true)), b"private").unwrap();
        std::fs::write(dir.join(format!("{hex}.partial")), b"half").unwrap();
        std::fs::write(dir.join("stray"), b"x").unwrap();
        let found = scan_cache(&dir);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(!found[&digest].private && !found[&digest].verified && found[&other].private);
        assert!(!dir.join(format!("{hex}.partial")).exists(), "a partial download is deleted at the scan");
        assert!(dir.join("stray").exists(), "what is not Shoal's is left alone");
        // A first read hashes it; parts end at the blob's end.
        let p = dir.join(&hex);
        let (part, note) = read_part(&p, &digest, 100, 90, 50, true);
        assert_eq!(part, BlobPart::Bytes { size: 100, media_type: String::new(), bytes: (90..100u8).collect() });
        assert_eq!(note, Some(CacheNote::Verified(digest.clone())));
        // A damaged file is deleted and refused (the asker goes to the registry).
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        let (part, note) = read_part(&p, &digest, 100, 0, 10, true);
        assert!(matches!(part, BlobPart::Refused { .. }) && note == Some(CacheNote::Gone(digest.clone())), "{part:?}");
        assert!(!p.exists());
        let (part, note) = read_part(&p, &digest, 100, 0, 10, false);
        assert!(matches!(part, BlobPart::Refused { .. }) && note == Some(CacheNote::Gone(digest)), "{part:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
