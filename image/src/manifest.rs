//! Manifest formats (OCI index / Docker manifest list, OCI manifest / Docker
//! schema2 manifest, image config) and platform selection over them.
//!
//! This is where "which blobs make up this image on this node" is decided:
//! [`plan_import`] walks root → index → manifest → config strictly by
//! platform (variant included), and [`platforms_of`] lists what an image
//! supports for placement. All parsing is fallible and bounded: manifests
//! come from archives and registries and are hostile.

use crate::digest::{self, read_blob};
use crate::{Descriptor, Error, ImageSource, ImportPlan, Reference};
use serde::{Deserialize, Deserializer};
use shoal_shared::platform::Platform;
use std::collections::BTreeMap;

/// Largest manifest or index accepted (Docker Hub's own limit is 4 MiB).
pub const MANIFEST_BYTES_MAX: u64 = 4 << 20;
/// Largest image config accepted (long histories make configs large).
pub const CONFIG_BYTES_MAX: u64 = 8 << 20;
/// Most entries in an index, layers in a manifest, diff_ids in a config.
pub const ENTRIES_MAX: usize = 4096;
/// Deepest nesting of indexes below the root.
pub const INDEX_DEPTH_MAX: usize = 4;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDIST_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Media types accepted for manifests when talking to a registry, best first.
pub const MANIFEST_ACCEPT: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

const LAYER_TYPES: [&str; 8] = [
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_LAYER_NONDIST,
    OCI_LAYER_NONDIST_GZIP,
    OCI_LAYER_NONDIST_ZSTD,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_FOREIGN_GZIP,
];

/// Whether a media type names an index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Whether a media type names a single-image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// A descriptor as written in JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorJson {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

/// A platform as written in an index entry.
#[derive(Clone, Debug, Deserialize)]
pub struct PlatformJson {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl PlatformJson {
    pub fn normalised(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref().unwrap_or(""))
    }
}

impl DescriptorJson {
    /// Validates the digest and converts, normalising the platform.
    pub fn to_descriptor(&self) -> Result<Descriptor, Error> {
        digest::validate(&self.digest)?;
        Ok(Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            platform: self.platform.as_ref().map(PlatformJson::normalised),
        })
    }
}

/// An OCI image index or a Docker manifest list.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub schema_version: Option<u32>,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<DescriptorJson>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest or a Docker schema2 manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: Option<u32>,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: DescriptorJson,
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<DescriptorJson>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

/// An image config (OCI and Docker share the fields used here).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    #[serde(default, deserialize_with = "null_default")]
    pub variant: String,
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    #[serde(default, deserialize_with = "null_default")]
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// The normalised platform this config was built for.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, &self.variant)
    }
}

/// The process defaults an image carries (`config` in the image config).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub working_dir: String,
    #[serde(default, deserialize_with = "null_default")]
    pub user: String,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub stop_signal: String,
    /// Keys of `ExposedPorts`, e.g. `80/tcp`.
    #[serde(default, deserialize_with = "map_keys")]
    pub exposed_ports: Vec<String>,
    /// The image's `HEALTHCHECK`, as built.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
}

/// `Healthcheck` in an image config (Docker's `HEALTHCHECK`): durations in
/// nanoseconds, 0 (or absent) for the default. Signed as Docker writes
/// them, so an odd value never makes the whole config unreadable; the
/// caller decides what a negative one means.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, deserialize_with = "null_default")]
    pub test: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub interval: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub timeout: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub start_period: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub retries: i64,
}

/// `rootfs` in the image config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RootFs {
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn map_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let m: Option<BTreeMap<String, serde::de::IgnoredAny>> = Option::deserialize(d)?;
    Ok(m.map(|m| m.into_keys().collect()).unwrap_or_default())
}

fn check_len(what: &str, bytes: &[u8], limit: u64) -> Result<(), Error> {
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge { what: what.to_string(), size: bytes.len() as u64, limit });
    }
    Ok(())
}

/// Parses an index or manifest list (bounded, digests validated).
pub fn parse_index(bytes: &[u8]) -> Result<Index, Error> {
    check_len("image index", bytes, MANIFEST_BYTES_MAX)?;
    let idx: Index = serde_json::from_slice(bytes).map_err(|e| Error::malformed("image index", e))?;
    if idx.manifests.len() > ENTRIES_MAX {
        return Err(Error::malformed("image index", format!("more than {ENTRIES_MAX} entries")));
    }
    for m in &idx.manifests {
        digest::validate(&m.digest)?;
    }
    Ok(idx)
}

/// Parses an image manifest (bounded, digests validated).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, Error> {
    check_len("image manifest", bytes, MANIFEST_BYTES_MAX)?;
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::malformed("image manifest", e))?;
    if m.layers.len() > ENTRIES_MAX {
        return Err(Error::malformed("image manifest", format!("more than {ENTRIES_MAX} layers")));
    }
    digest::validate(&m.config.digest)?;
    for l in &m.layers {
        digest::validate(&l.digest)?;
    }
    Ok(m)
}

/// Parses an image config (bounded, diff_ids validated).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, Error> {
    check_len("image config", bytes, CONFIG_BYTES_MAX)?;
    let c: ImageConfig = serde_json::from_slice(bytes).map_err(|e| Error::malformed("image config", e))?;
    if c.rootfs.diff_ids.len() > ENTRIES_MAX {
        return Err(Error::malformed("image config", format!("more than {ENTRIES_MAX} diff_ids")));
    }
    for d in &c.rootfs.diff_ids {
        digest::validate(d)?;
    }
    Ok(c)
}

/// What a manifest-ish blob turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Index(Index),
    Manifest(Manifest),
}

/// Parses a root/manifest blob, deciding by `media_type` when it is known and
/// by the JSON's own `mediaType` or shape otherwise (OCI layouts and some
/// registries leave it out).
pub fn parse_any(media_type: &str, bytes: &[u8]) -> Result<Parsed, Error> {
    if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
        return Err(Error::UnsupportedMediaType {
            what: "manifest (docker schema1 images are not supported; re-push the image)".into(),
            media_type: media_type.into(),
        });
    }
    if is_index(media_type) {
        return parse_index(bytes).map(Parsed::Index);
    }
    if is_manifest(media_type) {
        return parse_manifest(bytes).map(Parsed::Manifest);
    }
    check_len("image manifest", bytes, MANIFEST_BYTES_MAX)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        layers: Option<serde::de::IgnoredAny>,
    }
    let s: Sniff = serde_json::from_slice(bytes).map_err(|e| Error::malformed("image manifest", e))?;
    match s.media_type.as_deref() {
        Some(t) if is_index(t) => return parse_index(bytes).map(Parsed::Index),
        Some(t) if is_manifest(t) => return parse_manifest(bytes).map(Parsed::Manifest),
        _ => {}
    }
    if !media_type.is_empty() && media_type != "application/json" {
        return Err(Error::UnsupportedMediaType { what: "manifest".into(), media_type: media_type.into() });
    }
    match (s.manifests.is_some(), s.layers.is_some()) {
        (true, false) => parse_index(bytes).map(Parsed::Index),
        (false, true) => parse_manifest(bytes).map(Parsed::Manifest),
        _ => Err(Error::malformed("image manifest", "neither an index nor a manifest")),
    }
}

/// Reads and parses an image config.
pub fn read_config(src: &dyn ImageSource, desc: &Descriptor) -> Result<ImageConfig, Error> {
    let bytes = read_blob(src, desc, "image config", CONFIG_BYTES_MAX)?;
    parse_config(&bytes)
}

fn read_parsed(src: &dyn ImageSource, desc: &Descriptor) -> Result<Parsed, Error> {
    let bytes = read_blob(src, desc, "manifest", MANIFEST_BYTES_MAX)?;
    parse_any(&desc.media_type, &bytes)
}

/// Whether an index entry is an attestation / unknown-platform artefact
/// (BuildKit writes provenance as `unknown/unknown` entries).
fn is_attestation(e: &DescriptorJson) -> bool {
    if e.annotations.get("vnd.docker.reference.type").is_some_and(|t| t == "attestation-manifest") {
        return true;
    }
    e.platform.as_ref().is_some_and(|p| p.os == "unknown" || p.architecture == "unknown")
}

/// The platforms an image supports: its index's entries (attestations
/// skipped, nested indexes and entries without a platform looked into), or
/// the single manifest's config. Order of first appearance, no duplicates.
pub fn platforms_of(src: &dyn ImageSource, root: &Descriptor) -> Result<Vec<Platform>, Error> {
    let mut out = Vec::new();
    collect_platforms(src, root, 0, &mut out)?;
    Ok(out)
}

fn collect_platforms(src: &dyn ImageSource, desc: &Descriptor, depth: usize, out: &mut Vec<Platform>) -> Result<(), Error> {
    let push = |p: Platform, out: &mut Vec<Platform>| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    match read_parsed(src, desc)? {
        Parsed::Manifest(m) => {
            let cfg = read_config(src, &m.config.to_descriptor()?)?;
            push(cfg.platform(), out);
        }
        Parsed::Index(idx) => {
            if depth >= INDEX_DEPTH_MAX {
                return Err(Error::malformed("image index", "indexes nested too deeply"));
            }
            for e in idx.manifests.iter().filter(|e| !is_attestation(e)) {
                match (&e.platform, is_index(&e.media_type)) {
                    (Some(p), false) => push(p.normalised(), out),
                    _ => collect_platforms(src, &e.to_descriptor()?, depth + 1, out)?,
                }
            }
        }
    }
    Ok(())
}

/// Plans the import of `root` under `name` (any reference spelling; recorded
/// in canonical form when it parses, as given otherwise) for `platform`: selects the manifest strictly (os, architecture and variant must match after
/// normalisation; arm64 entries without variant are v8), reads the config,
/// and checks that layers and diff_ids agree.
pub fn plan_import(src: &dyn ImageSource, name: &str, root: &Descriptor, platform: &Platform) -> Result<ImportPlan, Error> {
    let wanted = Platform::new(&platform.os, &platform.architecture, &platform.variant);
    // Record the canonical spelling (`busybox` → `docker.io/library/busybox:latest`);
    // a name that is no reference (recorded by another tool) is kept as it is.
    let name = Reference::parse(name).map(|r| r.to_string()).unwrap_or_else(|_| name.to_string());
    let name = name.as_str();
    let mut indexes = Vec::new();
    let mut available = Vec::new();
    let Some((manifest_desc, manifest)) = select(src, root, &wanted, 0, &mut indexes, &mut available)? else {
        let image = Reference::parse(name).map(|r| r.familiar()).unwrap_or_else(|_| name.to_string());
        return Err(Error::NoMatchingPlatform { image, wanted, available });
    };
    let config_desc = manifest.config.to_descriptor()?;
    let config = read_config(src, &config_desc)?;
    let layers = manifest.layers.iter().map(DescriptorJson::to_descriptor).collect::<Result<Vec<_>, _>>()?;
    for l in &layers {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(Error::UnsupportedMediaType { what: format!("layer {}", l.digest), media_type: l.media_type.clone() });
        }
    }
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(Error::LayerCountMismatch {
            manifest: manifest_desc.digest.clone(),
            layers: layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    let platform = manifest_desc.platform.clone().unwrap_or_else(|| config.platform());
    Ok(ImportPlan {
        name: name.to_string(),
        root: root.clone(),
        indexes,
        manifest: manifest_desc,
        config: config_desc,
        layers,
        diff_ids: config.rootfs.diff_ids.clone(),
        platform,
    })
}

type Selected = Option<(Descriptor, Manifest)>;

/// Strict match; an entry without an architecture is never selected.
fn selectable(p: &Platform, wanted: &Platform) -> bool {
    !p.architecture.is_empty() && p.runs_on(wanted)
}

fn select(
    src: &dyn ImageSource,
    desc: &Descriptor,
    wanted: &Platform,
    depth: usize,
    indexes: &mut Vec<Descriptor>,
    available: &mut Vec<Platform>,
) -> Result<Selected, Error> {
    fn note(available: &mut Vec<Platform>, p: Platform) {
        if !available.contains(&p) {
            available.push(p);
        }
    }
    match read_parsed(src, desc)? {
        Parsed::Manifest(m) => {
            // An index entry's platform already matched (the index is what
            // Docker and containerd trust, even when the config omits the
            // variant).
            if depth > 0 && desc.platform.is_some() {
                return Ok(Some((desc.clone(), m)));
            }
            // A single manifest (or an index entry without a platform):
            // its config says what it is.
            let cfg = read_config(src, &m.config.to_descriptor()?)?;
            let p = cfg.platform();
            if selectable(&p, wanted) {
                let mut d = desc.clone();
                d.platform.get_or_insert(p);
                return Ok(Some((d, m)));
            }
            note(available, p);
            Ok(None)
        }
        Parsed::Index(idx) => {
            if depth >= INDEX_DEPTH_MAX {
                return Err(Error::malformed("image index", "indexes nested too deeply"));
            }
            indexes.push(desc.clone());
            for e in idx.manifests.iter().filter(|e| !is_attestation(e)) {
                let d = e.to_descriptor()?;
                if let (Some(p), false) = (&d.platform, is_index(&e.media_type)) {
                    if !selectable(p, wanted) {
                        note(available, p.clone());
                        continue;
                    }
                }
                let depth_before = indexes.len();
                if let Some(found) = select(src, &d, wanted, depth + 1, indexes, available)? {
                    return Ok(Some(found));
                }
                indexes.truncate(depth_before);
            }
            indexes.pop();
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    /// Blobs in memory, by digest.
    #[derive(Default)]
    pub(crate) struct Mem(HashMap<String, Vec<u8>>);

    impl Mem {
        fn put(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
            let d = Descriptor { media_type: media_type.into(), digest: digest::sha256(&bytes), size: bytes.len() as u64, platform: None };
            self.0.insert(d.digest.clone(), bytes);
            d
        }
    }

    impl ImageSource for Mem {
        fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error> {
            match self.0.get(&desc.digest) {
                Some(b) => Ok(Box::new(&b[..])),
                None => Err(Error::BlobNotFound { digest: desc.digest.clone(), source_name: "memory".into() }),
            }
        }
    }

    type PlatformSpec<'a> = (&'a str, &'a str, Option<&'a str>);

    fn image(mem: &mut Mem, os: &str, arch: &str, variant: &str, docker: bool) -> Descriptor {
        let layer = mem.put(OCI_LAYER, format!("layer-{arch}{variant}").into_bytes());
        let cfg = serde_json::json!({
            "architecture": arch, "os": os, "variant": variant,
            "config": {"Entrypoint": null, "Cmd": ["sh"], "Env": ["PATH=/bin"], "Labels": null,
                       "ExposedPorts": {"80/tcp": {}}, "WorkingDir": "/w", "User": "1000", "StopSignal": "SIGINT"},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]}
        });
        let cfg = mem.put(if docker { DOCKER_CONFIG } else { OCI_CONFIG }, serde_json::to_vec(&cfg).unwrap());
        let mt = if docker { DOCKER_MANIFEST } else { OCI_MANIFEST };
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cfg.media_type, "digest": cfg.digest, "size": cfg.size},
            "layers": [{"mediaType": if docker { DOCKER_LAYER_GZIP } else { OCI_LAYER }, "digest": layer.digest, "size": layer.size}]
        });
        mem.put(mt, serde_json::to_vec(&m).unwrap())
    }

    fn index(mem: &mut Mem, entries: &[(&Descriptor, Option<PlatformSpec<'_>>)], docker: bool) -> Descriptor {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(d, p)| {
                let mut e = serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
                if let Some((os, arch, v)) = p {
                    e["platform"] = serde_json::json!({"os": os, "architecture": arch});
                    if let Some(v) = v {
                        e["platform"]["variant"] = serde_json::json!(v);
                    }
                }
                e
            })
            .collect();
        let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
        mem.put(mt, serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests})).unwrap())
    }

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn selects_strictly_from_an_index() {
        let mut mem = Mem::default();
        let amd = image(&mut mem, "linux", "amd64", "", false);
        let arm64 = image(&mut mem, "linux", "arm64", "", false);
        let att = mem.put(OCI_MANIFEST, b"{}".to_vec());
        let root = index(
            &mut mem,
            &[(&amd, Some(("linux", "amd64", None))), (&arm64, Some(("linux", "arm64", None))), (&att, Some(("unknown", "unknown", None)))],
            false,
        );
        assert_eq!(platforms_of(&mem, &root).unwrap(), vec![p("linux/amd64"), p("linux/arm64/v8")]);
        let plan = plan_import(&mem, "docker.io/library/busybox:latest", &root, &p("linux/arm64/v8")).unwrap();
        assert_eq!(plan.manifest.digest, arm64.digest);
        assert_eq!(plan.indexes, vec![root.clone()]);
        assert_eq!(plan.layers.len(), 1);
        assert_eq!(plan.diff_ids, vec![plan.layers[0].digest.clone()]);
        assert_eq!(plan.platform, p("linux/arm64"));
        let plan = plan_import(&mem, "docker.io/library/busybox:latest", &root, &p("linux/amd64")).unwrap();
        assert_eq!(plan.manifest.digest, amd.digest);
        let err = plan_import(&mem, "docker.io/library/busybox:latest", &root, &p("linux/arm/v7")).unwrap_err();
        assert_eq!(err.to_string(), "image busybox:latest has no variant for linux/arm/v7 (available: linux/amd64, linux/arm64/v8)");
        assert!(matches!(err, Error::NoMatchingPlatform { .. }));
    }

    #[test]
    fn index_platform_wins_over_a_config_without_variant() {
        let mut mem = Mem::default();
        // The config says plain "arm" (normalised to v7); the index says v6.
        let m = image(&mut mem, "linux", "arm", "", false);
        let root = index(&mut mem, &[(&m, Some(("linux", "arm", Some("v6"))))], false);
        let plan = plan_import(&mem, "x", &root, &p("linux/arm/v6")).unwrap();
        assert_eq!(plan.platform, p("linux/arm/v6"));
        assert_eq!(plan.manifest.platform, Some(p("linux/arm/v6")));
        assert!(plan_import(&mem, "x", &root, &p("linux/arm/v7")).is_err());
        assert_eq!(platforms_of(&mem, &root).unwrap(), vec![p("linux/arm/v6")]);
    }

    #[test]
    fn variants_are_strict_in_docker_lists() {
        let mut mem = Mem::default();
        let v6 = image(&mut mem, "linux", "arm", "v6", true);
        let root = index(&mut mem, &[(&v6, Some(("linux", "arm", Some("v6"))))], true);
        assert!(plan_import(&mem, "x", &root, &p("linux/arm/v7")).is_err());
        assert!(plan_import(&mem, "x", &root, &p("linux/arm/v6")).is_ok());
    }

    #[test]
    fn single_manifest_uses_its_config() {
        let mut mem = Mem::default();
        let m = image(&mut mem, "linux", "aarch64", "", true);
        assert_eq!(platforms_of(&mem, &m).unwrap(), vec![p("linux/arm64/v8")]);
        let plan = plan_import(&mem, "n", &m, &p("linux/arm64")).unwrap();
        assert_eq!(plan.name, "docker.io/library/n:latest");
        assert_eq!(plan_import(&mem, "Not A Ref", &m, &p("linux/arm64")).unwrap().name, "Not A Ref");
        assert_eq!(plan.manifest, {
            let mut d = m.clone();
            d.platform = Some(p("linux/arm64"));
            d
        });
        assert!(plan.indexes.is_empty());
        let cfg = read_config(&mem, &plan.config).unwrap();
        assert_eq!(cfg.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(cfg.config.entrypoint, None);
        assert_eq!(cfg.config.exposed_ports, vec!["80/tcp".to_string()]);
        assert_eq!(cfg.config.working_dir, "/w");
        assert_eq!(cfg.config.stop_signal, "SIGINT");
        assert!(cfg.config.labels.is_empty());
        let err = plan_import(&mem, "n", &m, &p("linux/amd64")).unwrap_err();
        assert!(err.to_string().contains("(available: linux/arm64/v8)"), "{err}");
    }

    /// Docker's `HEALTHCHECK` in the config: read as written, absent or
    /// null as none, odd values kept for the caller (never a config that
    /// cannot be read).
    #[test]
    fn healthcheck_in_the_config() {
        let cfg = |hc: &str| parse_config(format!(r#"{{"config": {{"Cmd": ["sh"]{hc}}}}}"#).as_bytes()).unwrap().config.healthcheck;
        assert_eq!(cfg(""), None);
        assert_eq!(cfg(r#", "Healthcheck": null"#), None);
        assert_eq!(
            cfg(
                r#", "Healthcheck": {"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 1000000000, "StartPeriod": 0, "Retries": 2, "StartInterval": 5}"#
            ),
            Some(Healthcheck {
                test: vec!["CMD-SHELL".into(), "test -f /ok".into()],
                interval: 1_000_000_000,
                retries: 2,
                ..Default::default()
            })
        );
        assert_eq!(cfg(r#", "Healthcheck": {"Test": null, "Timeout": -5}"#), Some(Healthcheck { timeout: -5, ..Default::default() }));
    }

    #[test]
    fn untyped_and_nested_entries() {
        let mut mem = Mem::default();
        let amd = image(&mut mem, "linux", "amd64", "", false);
        let arm = image(&mut mem, "linux", "arm", "v7", false);
        let inner = index(&mut mem, &[(&arm, Some(("linux", "arm", Some("v7"))))], false);
        let root = index(&mut mem, &[(&amd, None), (&inner, None)], false);
        assert_eq!(platforms_of(&mem, &root).unwrap(), vec![p("linux/amd64"), p("linux/arm/v7")]);
        let plan = plan_import(&mem, "n", &root, &p("linux/arm/v7")).unwrap();
        assert_eq!(plan.indexes, vec![root.clone(), inner.clone()]);
        assert_eq!(plan.manifest.digest, arm.digest);
        let plan = plan_import(&mem, "n", &root, &p("linux/amd64")).unwrap();
        assert_eq!(plan.indexes, vec![root]);
    }

    #[test]
    fn layer_count_must_match_diff_ids() {
        let mut mem = Mem::default();
        let cfg = mem.put(OCI_CONFIG, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec());
        let layer = mem.put(OCI_LAYER, b"x".to_vec());
        let m = serde_json::json!({"schemaVersion":2,"config":{"mediaType":OCI_CONFIG,"digest":cfg.digest,"size":cfg.size},
            "layers":[{"mediaType":OCI_LAYER,"digest":layer.digest,"size":1}]});
        let m = mem.put(OCI_MANIFEST, serde_json::to_vec(&m).unwrap());
        let err = plan_import(&mem, "n", &m, &p("linux/amd64")).unwrap_err();
        assert!(matches!(err, Error::LayerCountMismatch { layers: 1, diff_ids: 0, .. }), "{err}");
    }

    #[test]
    fn tampered_blobs_are_refused() {
        let mut mem = Mem::default();
        let m = image(&mut mem, "linux", "amd64", "", false);
        let mut lying = m.clone();
        lying.digest = digest::sha256(b"other");
        mem.0.insert(lying.digest.clone(), mem.0[&m.digest].clone());
        assert!(matches!(plan_import(&mem, "n", &lying, &p("linux/amd64")), Err(Error::DigestMismatch { .. })));
        let mut big = m.clone();
        big.size = MANIFEST_BYTES_MAX + 1;
        assert!(matches!(plan_import(&mem, "n", &big, &p("linux/amd64")), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn parsers_reject_garbage() {
        assert!(parse_index(b"").is_err());
        assert!(parse_index(br#"{"manifests":[{"digest":"sha256:x","size":1}]}"#).is_err());
        assert!(parse_manifest(br#"{"config":{"digest":"sha256:00","size":-1}}"#).is_err());
        assert!(parse_config(b"\"x\"").is_err());
        assert!(parse_config(br#"{"rootfs":{"diff_ids":["nope"]}}"#).is_err());
        assert!(parse_any("", br#"{"manifests":[],"layers":[]}"#).is_err());
        assert!(matches!(parse_any(DOCKER_SCHEMA1_SIGNED, b"{}"), Err(Error::UnsupportedMediaType { .. })));
        assert!(matches!(parse_any("", br#"{"manifests":[]}"#), Ok(Parsed::Index(_))));
        let cfg = parse_config(br#"{"config":null,"rootfs":null,"os":null}"#).unwrap();
        assert_eq!(cfg, ImageConfig::default());
    }
}
