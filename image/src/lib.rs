//! OCI and Docker image formats, independent of any runtime.
//!
//! Owns: image references, manifests, indexes and configs (parsed fallibly),
//! platform selection from an index or manifest list, and the sources images
//! come from (OCI/docker archives on disk, registry v2 over HTTP). Everything
//! here is blocking std I/O; callers run it off their reactor.

use std::io::Read;

/// A content-addressed descriptor (OCI `application/vnd.oci.descriptor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<shoal_shared::platform::Platform>,
}

/// Where an image's blobs come from. Implemented by archives and registries;
/// consumed by the containerd driver's import.
pub trait ImageSource: Send + Sync {
    /// The root descriptor for the image (a manifest, an index or a Docker
    /// manifest list).
    fn root(&self) -> Result<Descriptor, Error>;
    /// Opens a blob by digest; the reader yields exactly the blob's bytes
    /// (the consumer verifies the digest).
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error>;
}

/// Errors from reading images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Other(String),
}
