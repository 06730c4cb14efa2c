//! Images and content: image records, blob reads, and `import` (write blobs
//! with GC labels, record the image, unpack its layers into snapshots).
//! A blob is written under its own write ref and lease (`shoal-blob-<hex>`,
//! 24 h): what a failed pull wrote stays, and the next pull resumes from
//! containerd's offset (`Content.Status`); a complete import deletes the
//! blobs' leases, since the image then holds them.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AbortRequest, ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, Info, InfoRequest, ListImagesRequest,
    ReadContentRequest, StatusRequest, UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as CdDescriptor;
use shoal_image::{Descriptor, ImageSource, ImportPlan};

use crate::rpc::{nonce, ts_nanos, Ctx};
use crate::{chain_id, Driver, Error, ImageRecord, IMAGE_SIZE_LABEL, LAYER_APPLY_TIMEOUT_FACTOR, SNAPSHOTTER};

/// Size of one `Content.Write` chunk.
pub const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// How long a partly downloaded blob is kept for the next pull to resume
/// (its lease, `shoal-blob-<digest>`, expires then; a complete import
/// deletes it at once).
pub(crate) const PARTIAL_BLOB_TTL_S: u64 = 24 * 3_600;
/// GC label: manifest -> config.
pub const GC_REF_CONFIG: &str = "containerd.io/gc.ref.content.config";
/// GC label prefix: manifest -> layer `i`.
pub const GC_REF_LAYER_PREFIX: &str = "containerd.io/gc.ref.content.l.";
/// GC label prefix: index -> manifest `i`.
pub const GC_REF_MANIFEST_PREFIX: &str = "containerd.io/gc.ref.content.m.";
/// GC label: config -> top snapshot of the unpacked image.
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.overlayfs";
/// Label on a layer blob with its uncompressed digest (as containerd sets it).
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// What happened to one blob during an import (`Driver::import_observed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobEvent {
    /// Already in the content store: nothing downloaded.
    Exists,
    /// This many of its bytes are in the content store.
    Written(u64),
    /// Written whole and committed.
    Committed,
}

/// Told of every blob's progress (digest, event); called from the import's thread.
pub type BlobObserver<'a> = &'a (dyn Fn(&str, BlobEvent) + Sync);

/// How a `Content.Write` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteOutcome {
    Written,
    /// Someone else committed the same blob first.
    AlreadyThere,
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn to_record(img: Image) -> ImageRecord {
    let t = img.target.unwrap_or_default();
    ImageRecord {
        size_bytes: img.labels.get(IMAGE_SIZE_LABEL).and_then(|s| s.parse().ok()),
        created_unix_nanos: ts_nanos(&img.created_at),
        name: img.name,
        target: Descriptor { media_type: t.media_type, digest: t.digest, size: u64::try_from(t.size).unwrap_or(0), platform: None },
    }
}

fn cd_desc(d: &Descriptor) -> CdDescriptor {
    CdDescriptor { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size as i64, annotations: HashMap::new() }
}

/// The write ref and lease of one blob's download: the same for every pull
/// of it, so that a later pull finds what an earlier one left.
fn blob_ref(digest: &str) -> String {
    format!("shoal-blob-{}", digest.trim_start_matches("sha256:"))
}

impl Ctx {
    /// How far an unfinished write `wref` got: `(offset, total, expected)`.
    async fn content_status(&self, wref: &str) -> Result<Option<(u64, u64, String)>, Error> {
        let mut c = ContentClient::new(self.channel.clone());
        match self.call("Content.Status", c.status(self.req(StatusRequest { r#ref: wref.to_string() }, None))).await {
            Ok(r) => Ok(r.status.map(|s| (u64::try_from(s.offset).unwrap_or(0), u64::try_from(s.total).unwrap_or(0), s.expected))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Drops an unfinished write.
    async fn content_abort(&self, wref: &str) -> Result<(), Error> {
        let mut c = ContentClient::new(self.channel.clone());
        match self.call("Content.Abort", c.abort(self.req(AbortRequest { r#ref: wref.to_string() }, None))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn content_info(&self, digest: &str) -> Result<Option<Info>, Error> {
        let mut c = ContentClient::new(self.channel.clone());
        let r = self.call("Content.Info", c.info(self.req(InfoRequest { digest: digest.to_string() }, None))).await;
        match r {
            Ok(r) => Ok(r.info),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn content_add_labels(&self, digest: &str, labels: &BTreeMap<String, String>, lease: Option<&str>) -> Result<(), Error> {
        let mut c = ContentClient::new(self.channel.clone());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info { digest: digest.to_string(), labels: labels.clone().into_iter().collect(), ..Default::default() };
        self.call(
            "Content.Update",
            c.update(self.req(UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) }, lease)),
        )
        .await?;
        Ok(())
    }

    async fn image_update(&self, image: Image, lease: &str) -> Result<Image, Error> {
        let mut c = ImagesClient::new(self.channel.clone());
        let r = self
            .call(
                "Images.Update",
                c.update(self.req(UpdateImageRequest { image: Some(image), update_mask: None, source_date_epoch: None }, Some(lease))),
            )
            .await?;
        Ok(r.image.unwrap_or_default())
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, Error> {
        let mut c = SnapshotsClient::new(self.channel.clone());
        let r = self
            .call("Snapshots.Stat", c.stat(self.req(StatSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_string() }, None)))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn snapshot_remove(&self, key: &str) -> Result<(), Error> {
        let mut c = SnapshotsClient::new(self.channel.clone());
        let r = self
            .call(
                "Snapshots.Remove",
                c.remove(self.req(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_string() }, None)),
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Unpacks one layer onto `parent` and commits it as `chain`.
    async fn unpack_layer(&self, lease: &str, layer: CdDescriptor, diff_id: String, parent: String, chain: String) -> Result<(), Error> {
        let key = format!("shoal-extract-{}-{}", nonce(), chain);
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        let mounts = self
            .call(
                "Snapshots.Prepare",
                snaps.prepare(self.req(
                    PrepareSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.clone(), parent, labels: HashMap::new() },
                    Some(lease),
                )),
            )
            .await?
            .mounts;
        let res = async {
            let mut diff = DiffClient::new(self.channel.clone());
            let ms = self.call_ms.saturating_mul(LAYER_APPLY_TIMEOUT_FACTOR);
            let layer_digest = layer.digest.clone();
            let applied = self
                .call_ms(
                    "Diff.Apply",
                    ms,
                    diff.apply(self.req(ApplyRequest { diff: Some(layer), mounts, payloads: HashMap::new(), sync_fs: false }, Some(lease))),
                )
                .await?
                .applied
                .unwrap_or_default();
            if applied.digest != diff_id {
                return Err(Error::Mismatch {
                    what: format!("layer {layer_digest} (uncompressed)"),
                    expected: diff_id,
                    actual: applied.digest,
                });
            }
            let r = self
                .call(
                    "Snapshots.Commit",
                    snaps.commit(self.req(
                        CommitSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                        Some(lease),
                    )),
                )
                .await;
            match r {
                Ok(_) => Ok(()),
                // Someone else unpacked the same layer concurrently.
                Err(Error::AlreadyExists { .. }) => Err(Error::AlreadyExists { what: chain }),
                Err(e) => Err(e),
            }
        }
        .await;
        match res {
            Ok(()) => Ok(()),
            Err(Error::AlreadyExists { .. }) => {
                let _ = self.snapshot_remove(&key).await;
                Ok(())
            }
            Err(e) => {
                let _ = self.snapshot_remove(&key).await;
                Err(e)
            }
        }
    }

    /// Streams `Content.Write` requests from `rx`.
    async fn write_stream(&self, lease: String, rx: async_channel::Receiver<WriteContentRequest>) -> Result<WriteOutcome, Error> {
        let mut c = ContentClient::new(self.channel.clone());
        let r = async {
            let mut s = c.write(self.req(rx, Some(&lease))).await?.into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        }
        .await;
        match r {
            Ok(()) => Ok(WriteOutcome::Written),
            Err(st) => match Error::from_status("Content.Write", self.socket(), st) {
                // Written concurrently by someone else: fine (its labels
                // are then checked by the caller).
                Error::AlreadyExists { .. } => Ok(WriteOutcome::AlreadyThere),
                e => Err(e),
            },
        }
    }
}

impl Driver {
    /// The image record `name`, or `None`.
    pub fn image_get(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        let ctx = self.ctx().clone();
        let name = name.to_string();
        let ms = ctx.call_ms;
        self.block("Images.Get", ms, async move {
            let mut c = ImagesClient::new(ctx.channel.clone());
            match ctx.call("Images.Get", c.get(ctx.req(GetImageRequest { name }, None))).await {
                Ok(r) => Ok(r.image.map(to_record)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Every image record in the namespace.
    pub fn image_list(&self) -> Result<Vec<ImageRecord>, Error> {
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms;
        self.block("Images.List", ms, async move {
            let mut c = ImagesClient::new(ctx.channel.clone());
            let r = ctx.call("Images.List", c.list(ctx.req(ListImagesRequest { filters: vec![] }, None))).await?;
            Ok(r.images.into_iter().map(to_record).collect())
        })
    }

    /// Deletes the image record (content and snapshots are then garbage
    /// collected by containerd unless still referenced). Missing = NotFound.
    pub fn image_remove(&self, name: &str) -> Result<(), Error> {
        let ctx = self.ctx().clone();
        let name = name.to_string();
        let ms = ctx.call_ms;
        self.block("Images.Delete", ms, async move {
            let mut c = ImagesClient::new(ctx.channel.clone());
            ctx.call("Images.Delete", c.delete(ctx.req(DeleteImageRequest { name, sync: false, target: None }, None))).await?;
            Ok(())
        })
    }

    /// Reads a whole blob from the content store; refuses blobs bigger than
    /// `max_bytes` ([`Error::TooLarge`]).
    pub fn read_blob(&self, digest: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        if !valid_digest(digest) {
            return Err(Error::InvalidInput(format!("{digest:?} is not a sha256 digest")));
        }
        let ctx = self.ctx().clone();
        let digest = digest.to_string();
        let ms = ctx.call_ms;
        self.block("Content.Read", ms.saturating_mul(2), async move {
            let info = ctx.content_info(&digest).await?.ok_or_else(|| Error::NotFound { what: format!("blob {digest}") })?;
            let size = u64::try_from(info.size).unwrap_or(0);
            if size > max_bytes {
                return Err(Error::TooLarge { digest, size_bytes: size, max_bytes });
            }
            let mut c = ContentClient::new(ctx.channel.clone());
            let fut = async {
                let mut s = c.read(ctx.req(ReadContentRequest { digest: digest.clone(), offset: 0, size: 0 }, None)).await?.into_inner();
                let mut out = Vec::with_capacity(size as usize);
                while let Some(m) = s.message().await? {
                    out.extend_from_slice(&m.data);
                    if out.len() as u64 > size {
                        break;
                    }
                }
                Ok(out)
            };
            let out = match tokio::time::timeout(Duration::from_millis(ms), fut).await {
                Ok(Ok(v)) => v,
                Ok(Err(st)) => return Err(Error::from_status("Content.Read", ctx.socket(), st)),
                Err(_) => return Err(Error::Timeout { op: "Content.Read".into(), ms }),
            };
            if out.len() as u64 != size {
                return Err(Error::Mismatch {
                    what: format!("blob {digest} size"),
                    expected: size.to_string(),
                    actual: out.len().to_string(),
                });
            }
            Ok(out)
        })
    }

    /// Imports an image: writes the missing blobs with GC labels, points
    /// `plan.name` at `plan.root`, unpacks the layers into snapshots and
    /// labels the config with the top snapshot. All inside one lease.
    /// Idempotent; re-importing a present image costs a few metadata calls.
    pub fn import(&self, plan: &ImportPlan, src: &dyn ImageSource) -> Result<ImageRecord, Error> {
        self.import_observed(plan, src, &|_, _| {})
    }

    /// [`Driver::import`], telling `observe` how each blob goes.
    pub fn import_observed(&self, plan: &ImportPlan, src: &dyn ImageSource, observe: BlobObserver<'_>) -> Result<ImageRecord, Error> {
        check_plan(plan)?;
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms;
        let lease = self.block("Leases.Create", ms, {
            let ctx = ctx.clone();
            async move { ctx.lease_create().await }
        })?;
        let mut written = Vec::new();
        let r = self.import_in_lease(plan, src, &lease, &mut written, observe);
        let _ = self.block("Leases.Delete", ms, {
            let ctx = ctx.clone();
            async move { ctx.lease_delete(&lease).await }
        });
        // Once the image holds its blobs, their own leases go; after a
        // failure they stay (until they expire) for the next pull to resume.
        if r.is_ok() {
            for id in written {
                let _ = self.block("Leases.Delete", ms, {
                    let ctx = ctx.clone();
                    async move { ctx.lease_delete(&id).await }
                });
            }
        }
        r
    }

    fn import_in_lease(
        &self,
        plan: &ImportPlan,
        src: &dyn ImageSource,
        lease: &str,
        written: &mut Vec<String>,
        observe: BlobObserver<'_>,
    ) -> Result<ImageRecord, Error> {
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms;

        // Blobs with the labels each must carry; children before parents.
        let mut blobs: Vec<(Descriptor, BTreeMap<String, String>)> = Vec::new();
        let mut add = |d: &Descriptor, labels: BTreeMap<String, String>| {
            if let Some((_, l)) = blobs.iter_mut().find(|(b, _)| b.digest == d.digest) {
                l.extend(labels);
            } else {
                blobs.push((d.clone(), labels));
            }
        };
        for (layer, diff_id) in plan.layers.iter().zip(&plan.diff_ids) {
            add(layer, BTreeMap::from([(UNCOMPRESSED_LABEL.to_string(), diff_id.clone())]));
        }
        add(&plan.config, BTreeMap::new());
        let mut ml = BTreeMap::from([(GC_REF_CONFIG.to_string(), plan.config.digest.clone())]);
        for (i, l) in plan.layers.iter().enumerate() {
            ml.insert(format!("{GC_REF_LAYER_PREFIX}{i}"), l.digest.clone());
        }
        add(&plan.manifest, ml);
        for (i, idx) in plan.indexes.iter().enumerate().rev() {
            let child = plan.indexes.get(i + 1).unwrap_or(&plan.manifest);
            add(idx, BTreeMap::from([(format!("{GC_REF_MANIFEST_PREFIX}0"), child.digest.clone())]));
        }
        if plan.root.digest != plan.manifest.digest && !plan.indexes.iter().any(|i| i.digest == plan.root.digest) {
            return Err(Error::InvalidInput(format!("plan root {} is neither the manifest nor one of the indexes", plan.root.digest)));
        }

        for (desc, labels) in &blobs {
            let get_info = || {
                self.block("Content.Info", ms, {
                    let ctx = ctx.clone();
                    let d = desc.digest.clone();
                    async move { ctx.content_info(&d).await }
                })
            };
            let mut info = get_info()?;
            if info.is_none() {
                written.push(blob_ref(&desc.digest));
                if self.write_blob(lease, desc, labels, src, observe)? == WriteOutcome::AlreadyThere {
                    info = get_info()?;
                }
                observe(&desc.digest, BlobEvent::Committed);
            } else {
                observe(&desc.digest, BlobEvent::Exists);
            }
            if let Some(info) = info {
                if info.size as u64 != desc.size {
                    return Err(Error::Mismatch {
                        what: format!("stored blob {} size", desc.digest),
                        expected: desc.size.to_string(),
                        actual: info.size.to_string(),
                    });
                }
                let missing = labels.iter().any(|(k, v)| info.labels.get(k) != Some(v));
                if missing {
                    self.block("Content.Update", ms, {
                        let ctx = ctx.clone();
                        let (d, l, lease) = (desc.digest.clone(), labels.clone(), lease.to_string());
                        async move { ctx.content_add_labels(&d, &l, Some(&lease)).await }
                    })?;
                }
            }
        }

        // The image record.
        let size: u64 = blobs.iter().map(|(d, _)| d.size).sum();
        let record = self.block("Images.Create", ms.saturating_mul(2), {
            let ctx = ctx.clone();
            let image = Image {
                name: plan.name.clone(),
                labels: HashMap::from([(IMAGE_SIZE_LABEL.to_string(), size.to_string())]),
                target: Some(cd_desc(&plan.root)),
                created_at: None,
                updated_at: None,
            };
            let lease = lease.to_string();
            async move {
                let mut c = ImagesClient::new(ctx.channel.clone());
                let cur = ctx.call("Images.Get", c.get(ctx.req(GetImageRequest { name: image.name.clone() }, None))).await;
                let cur = match cur {
                    Ok(r) => r.image,
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e),
                };
                match cur {
                    Some(cur) if cur.target == image.target && cur.labels == image.labels => Ok(cur),
                    Some(_) => ctx.image_update(image, &lease).await,
                    None => {
                        let r = ctx
                            .call(
                                "Images.Create",
                                c.create(ctx.req(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }, Some(&lease))),
                            )
                            .await;
                        match r {
                            Ok(r) => Ok(r.image.unwrap_or_default()),
                            // Created concurrently: make it ours.
                            Err(Error::AlreadyExists { .. }) => ctx.image_update(image, &lease).await,
                            Err(e) => Err(e),
                        }
                    }
                }
            }
        })?;

        // Unpack.
        let mut parent = String::new();
        for i in 0..plan.diff_ids.len() {
            let chain = chain_id(&plan.diff_ids[..=i]);
            let exists = self.block("Snapshots.Stat", ms, {
                let (ctx, c) = (ctx.clone(), chain.clone());
                async move { ctx.snapshot_exists(&c).await }
            })?;
            if !exists {
                let apply_ms = ms.saturating_mul(LAYER_APPLY_TIMEOUT_FACTOR + 3);
                self.block("unpack layer", apply_ms, {
                    let ctx = ctx.clone();
                    let (l, d, p, c) = (cd_desc(&plan.layers[i]), plan.diff_ids[i].clone(), parent.clone(), chain.clone());
                    let lease = lease.to_string();
                    async move { ctx.unpack_layer(&lease, l, d, p, c).await }
                })?;
            }
            parent = chain;
        }
        if !parent.is_empty() {
            let labels = BTreeMap::from([(GC_REF_SNAPSHOT.to_string(), parent)]);
            self.block("Content.Update", ms, {
                let ctx = ctx.clone();
                let (d, lease) = (plan.config.digest.clone(), lease.to_string());
                async move { ctx.content_add_labels(&d, &labels, Some(&lease)).await }
            })?;
        }
        let mut rec = to_record(record);
        rec.size_bytes = Some(size);
        Ok(rec)
    }

    /// Copies one blob from `src` into the content store. The write goes
    /// under the blob's own ref and lease ([`blob_ref`], kept
    /// [`PARTIAL_BLOB_TTL_S`]): a download that broke off is resumed by the
    /// next pull from where containerd's ingest got (the source asked from
    /// that byte on; containerd checks the whole blob's digest at commit).
    /// A ref locked by another pull of the same blob falls back to a fresh
    /// ref of its own.
    fn write_blob(
        &self,
        lease: &str,
        desc: &Descriptor,
        labels: &BTreeMap<String, String>,
        src: &dyn ImageSource,
        observe: BlobObserver<'_>,
    ) -> Result<WriteOutcome, Error> {
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms;
        let wref = blob_ref(&desc.digest);
        self.block("Leases.Create", ms, {
            let (ctx, id) = (ctx.clone(), wref.clone());
            async move { ctx.lease_ensure(&id, PARTIAL_BLOB_TTL_S).await }
        })?;
        let status = self.block("Content.Status", ms, {
            let (ctx, r) = (ctx.clone(), wref.clone());
            async move { ctx.content_status(&r).await }
        })?;
        let start = match status {
            // containerd keeps no `expected` for an ingest it reopened: the
            // ref names the digest, and the commit checks it.
            Some((offset, total, expected))
                if total == desc.size && (expected.is_empty() || expected == desc.digest) && offset < desc.size =>
            {
                offset
            }
            Some(_) => {
                self.block("Content.Abort", ms, {
                    let (ctx, r) = (ctx.clone(), wref.clone());
                    async move { ctx.content_abort(&r).await }
                })?;
                0
            }
            None => 0,
        };
        match self.write_blob_as(&wref, &wref, start, desc, labels, src, observe) {
            Err(e) if e.to_string().contains("locked") => {
                // Another pull writes this blob right now: one of our own.
                let own = format!("shoal-{}-{}", nonce(), desc.digest);
                self.write_blob_as(lease, &own, 0, desc, labels, src, observe)
            }
            Err(e) if start > 0 => {
                // The kept part may be what is wrong: the next pull starts over.
                let _ = self.block("Content.Abort", ms, {
                    let (ctx, r) = (ctx.clone(), wref.clone());
                    async move { ctx.content_abort(&r).await }
                });
                Err(e)
            }
            r => r,
        }
    }

    /// Writes `desc` from byte `start` under write ref `wref` and `lease`.
    #[allow(clippy::too_many_arguments)] // one blob write's whole context
    fn write_blob_as(
        &self,
        lease: &str,
        wref: &str,
        start: u64,
        desc: &Descriptor,
        labels: &BTreeMap<String, String>,
        src: &dyn ImageSource,
        observe: BlobObserver<'_>,
    ) -> Result<WriteOutcome, Error> {
        observe(&desc.digest, BlobEvent::Written(start));
        let ctx = self.ctx().clone();
        let ms = ctx.call_ms;
        let mut reader = if start > 0 { src.open_blob_at(desc, start)? } else { src.open_blob(desc)? };
        let (tx, rx) = async_channel::bounded::<WriteContentRequest>(2);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        {
            let ctx = ctx.clone();
            let lease = lease.to_string();
            self.inner_handle().spawn(async move {
                let _ = done_tx.send(ctx.write_stream(lease, rx).await);
            });
        }
        let total = desc.size as i64;
        let send = |req: WriteContentRequest| -> Result<bool, Error> {
            let tx = tx.clone();
            self.block("Content.Write", ms, async move { Ok(tx.send(req).await.is_ok()) })
        };
        let mut offset: u64 = start;
        let mut buf = vec![0u8; WRITE_CHUNK_BYTES];
        let mut stream_open = true;
        let mut read_error = None;
        loop {
            let mut n = 0;
            while n < buf.len() {
                match reader.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_error = Some(Error::io(format!("reading blob {} at byte {}", desc.digest, offset + n as u64), e));
                        break;
                    }
                }
            }
            if n == 0 && read_error.is_none() {
                break;
            }
            if offset + n as u64 > desc.size {
                return Err(Error::Mismatch {
                    what: format!("blob {} from the image source", desc.digest),
                    expected: format!("{} bytes", desc.size),
                    actual: format!("more than {} bytes", desc.size),
                });
            }
            stream_open = send(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: wref.to_string(),
                total,
                expected: desc.digest.clone(),
                offset: offset as i64,
                data: buf[..n].to_vec(),
                labels: HashMap::new(),
            })?;
            offset += n as u64;
            observe(&desc.digest, BlobEvent::Written(offset));
            if let Some(e) = read_error {
                // What reached containerd stays in the ingest (the blob's
                // own lease keeps it) for the next pull to resume.
                drop(tx);
                let _ = done_rx.recv_timeout(Duration::from_millis(ms));
                return Err(e);
            }
            if !stream_open {
                break;
            }
        }
        if stream_open {
            if offset != desc.size {
                return Err(Error::Mismatch {
                    what: format!("blob {} from the image source", desc.digest),
                    expected: format!("{} bytes", desc.size),
                    actual: format!("{offset} bytes"),
                });
            }
            send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: wref.to_string(),
                total,
                expected: desc.digest.clone(),
                offset: offset as i64,
                data: Vec::new(),
                labels: labels.clone().into_iter().collect(),
            })?;
        }
        drop(tx);
        match done_rx.recv_timeout(Duration::from_millis(ms)) {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout { op: format!("Content.Write commit of {}", desc.digest), ms }),
        }
    }
}

fn check_plan(plan: &ImportPlan) -> Result<(), Error> {
    if plan.name.is_empty() {
        return Err(Error::InvalidInput("image name is empty".into()));
    }
    if plan.layers.len() != plan.diff_ids.len() {
        return Err(Error::InvalidInput(format!("{} layers but {} diff ids", plan.layers.len(), plan.diff_ids.len())));
    }
    let all = plan.indexes.iter().chain([&plan.root, &plan.manifest, &plan.config]).chain(&plan.layers);
    for d in all {
        if !valid_digest(&d.digest) {
            return Err(Error::InvalidInput(format!("{:?} is not a sha256 digest", d.digest)));
        }
    }
    for d in &plan.diff_ids {
        if !valid_digest(d) {
            return Err(Error::InvalidInput(format!("diff id {d:?} is not a sha256 digest")));
        }
    }
    Ok(())
}
