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

use std::io::Read;

/// A content-addressed descriptor (OCI `application/vnd.oci.descriptor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
    /// Set for entries of an index / manifest list.
    pub platform: Option<shoal_shared::platform::Platform>,
}

/// Where an image's blobs come from. Implemented by archives and registries;
/// consumed by the containerd driver's import.
pub trait ImageSource: Send + Sync {
    /// Opens a blob; the reader yields exactly the blob's bytes (consumers
    /// verify size and digest: a source is not trusted).
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error>;
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
}

/// Errors from reading images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Other(String),
}
