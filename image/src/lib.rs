//! OCI and Docker image formats, independent of any runtime.
//!
//! Owns: image references, manifests, indexes and configs (parsed fallibly),
//! platform selection from an index or manifest list, and the sources images
//! come from (OCI/docker archives on disk, registry v2 over HTTP). Everything
//! here is blocking std I/O; callers run it off their reactor.
//!
//! The contract with the containerd driver is [`ImageSource`] plus
//! [`ImportPlan`]: this crate decides *which* blobs make up an image for a
//! platform; the driver only copies them into containerd and unpacks them.

use shoal_shared::platform::Platform;
use std::io::Read;

pub mod archive;
pub mod digest;
mod http;
pub mod manifest;
pub mod peer;
pub mod reference;
pub mod registry;
#[cfg(feature = "tls")]
mod tls;

pub use archive::Archive;
pub use manifest::{plan_import, platforms_of, read_config, ContainerConfig, ImageConfig};
pub use peer::{BlobPeer, SwarmFirst};
pub use reference::Reference;
/// The system CA bundle the registry client reads (`SSL_CERT_FILE`, else the
/// distribution's), if there is one; `None` without the `tls` feature.
pub fn system_ca_bundle() -> Option<std::path::PathBuf> {
    #[cfg(feature = "tls")]
    {
        tls::system_bundle()
    }
    #[cfg(not(feature = "tls"))]
    {
        None
    }
}

pub use registry::{CaFile, Credentials, Mirror, Registry, RegistryOptions, RegistrySource};

/// A content-addressed descriptor (OCI `application/vnd.oci.descriptor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
    /// Set for entries of an index / manifest list.
    pub platform: Option<Platform>,
}

/// Where an image's blobs come from. Implemented by archives and registries;
/// consumed by the containerd driver's import.
pub trait ImageSource: Send + Sync {
    /// Opens a blob; the reader yields exactly the blob's bytes (consumers
    /// verify size and digest: a source is not trusted).
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error>;

    /// The blob's bytes from `offset` on (resuming a write that got that
    /// far; the writer verifies the whole blob's digest and size, since no
    /// reader here sees the first `offset` bytes). By default the blob is
    /// opened and its first `offset` bytes skipped.
    fn open_blob_at(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>, Error> {
        let mut r = self.open_blob(desc)?;
        let skipped = std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink())
            .map_err(|e| Error::Io { context: format!("skipping to byte {offset} of {}", desc.digest), source: e })?;
        if skipped != offset {
            return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: skipped });
        }
        Ok(r)
    }
}

impl<T: ImageSource + ?Sized> ImageSource for &T {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error> {
        (**self).open_blob(desc)
    }
    fn open_blob_at(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>, Error> {
        (**self).open_blob_at(desc, offset)
    }
}

/// Everything the driver needs to import one image for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPlan {
    /// The image name to record, fully qualified
    /// (e.g. `docker.io/library/busybox:latest`).
    pub name: String,
    /// What the name points at: an index / manifest list, or the manifest.
    pub root: Descriptor,
    /// Blobs between root and manifest (the index itself when root is one).
    /// The driver writes these, the manifest, the config and the layers.
    pub indexes: Vec<Descriptor>,
    /// The platform-selected manifest (equal to `root` for single manifests).
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// Layers in order, possibly compressed (gzip or zstd media types).
    pub layers: Vec<Descriptor>,
    /// Uncompressed digests of the layers, from the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// The platform the selected manifest was built for: its index entry's,
    /// or its config's when it has no index entry with a platform.
    pub platform: Platform,
}

/// Errors from reading images. Messages are lowercase and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: &'static str },
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("image {image} has no variant for {wanted} (available: {})", list_platforms(.available))]
    NoMatchingPlatform { image: String, wanted: Platform, available: Vec<Platform> },
    #[error("manifest {manifest} has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCountMismatch { manifest: String, layers: usize, diff_ids: usize },
    #[error("blob {digest} not found in {source_name}")]
    BlobNotFound { digest: String, source_name: String },
    #[error("blob {digest} has size {actual}, expected {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not an image archive: {path}: {reason}")]
    NotAnArchive { path: String, reason: String },
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("manifest unknown: {reference}")]
    ManifestUnknown { reference: String },
    #[error("registry {registry} refused access to {repository}: {message}")]
    Unauthorized { registry: String, repository: String, message: String },
    #[error("registry {registry} answered {status}: {message}")]
    Registry { registry: String, status: u16, message: String },
    #[error("bad http response from {registry}: {reason}")]
    Http { registry: String, reason: String },
    #[error("this shoal build has no TLS support; use a registry on loopback or --insecure-registry {registry}")]
    TlsUnsupported { registry: String },
    #[error("tls connection to {registry} failed: {reason}")]
    Tls { registry: String, reason: String },
    #[error("{0}")]
    Other(String),
    /// `Registry::login`: the registry refused the credentials.
    #[error("login to {registry} refused: {message}")]
    LoginRefused { registry: String, message: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl ToString) -> Error {
        Error::Malformed { what: what.into(), reason: reason.to_string() }
    }
}

fn list_platforms(ps: &[Platform]) -> String {
    if ps.is_empty() {
        return "none".to_string();
    }
    ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}
