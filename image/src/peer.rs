//! Blobs from the swarm before the registry (issue #16: layers shared
//! inside the swarm).
//!
//! Owns the [`BlobPeer`] seam and [`SwarmFirst`], the [`ImageSource`] a
//! pull uses on a node of a swarm: each manifest and blob is asked of the
//! peer first (the daemon's implementation asks a manager's blob cache
//! over the Noise links, which fetches it from the registry once for the
//! whole swarm) and, when the peer cannot serve it, of the registry
//! itself. Nothing a peer sends is trusted: a manifest is checked against
//! its digest here, a whole blob by the [`VerifyingReader`], and a resumed
//! blob by the writer that holds its first bytes.
//!
//! Limits: manifests kept per source `MANIFESTS_MAX`, each at most
//! `MANIFEST_BYTES_MAX` (the registry client's).

use crate::digest::{self, VerifyingReader};
use crate::manifest;
use crate::reference::Reference;
use crate::{Descriptor, Error, ImageSource};
use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};

/// Manifests one [`SwarmFirst`] keeps (an image has an index, a manifest).
const MANIFESTS_MAX: usize = 16;

/// A manifest's media type and bytes.
type Manifest = (String, Arc<[u8]>);

/// Where a node's pull asks for blobs before the registry.
pub trait BlobPeer: Send + Sync {
    /// Whether asking it makes sense now (a node outside a swarm, or with
    /// sharing off, says no and its pulls go straight to the registry).
    fn available(&self) -> bool {
        true
    }
    /// A manifest or index of `reference`'s repository by digest: its media
    /// type and bytes (unverified).
    fn manifest(&self, reference: &Reference, digest: &str) -> Result<(String, Vec<u8>), String>;
    /// Blob `desc` of `reference`'s repository from byte `offset` on
    /// (unverified; the reader ends at the blob's end).
    fn blob(&self, reference: &Reference, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send>, String>;
}

/// An [`ImageSource`] that asks `peer` first and `fallback` (the registry)
/// when the peer cannot serve a blob. Records each fallback with its
/// reason ([`SwarmFirst::fallbacks`]) and the bytes each side served.
pub struct SwarmFirst<'a, S> {
    peer: &'a dyn BlobPeer,
    reference: Reference,
    fallback: S,
    manifests: Mutex<BTreeMap<String, Manifest>>,
    fallbacks: Mutex<Vec<String>>,
}

impl<'a, S: ImageSource> SwarmFirst<'a, S> {
    pub fn new(peer: &'a dyn BlobPeer, reference: Reference, fallback: S) -> Self {
        SwarmFirst { peer, reference, fallback, manifests: Mutex::new(BTreeMap::new()), fallbacks: Mutex::new(Vec::new()) }
    }

    /// The image's root (index or manifest) from the peer, for a reference
    /// pinned to a digest (a service's image is, once created); `None` when
    /// the reference has no digest or the peer cannot serve it (the caller
    /// resolves on the registry then).
    pub fn resolve(&self) -> Option<Descriptor> {
        let pinned = self.reference.digest()?.to_string();
        match self.manifest_from_peer(&pinned) {
            Ok((media_type, bytes)) => Some(Descriptor { media_type, digest: pinned, size: bytes.len() as u64, platform: None }),
            Err(why) => {
                self.note(format!("image {} from the swarm: {why}", self.reference.familiar()));
                None
            }
        }
    }

    /// Why blobs went to the registry instead of the swarm, in order.
    pub fn fallbacks(&self) -> Vec<String> {
        self.fallbacks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn note(&self, why: String) {
        let mut f = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 64 {
            f.push(why);
        }
    }

    /// A manifest from the peer, verified against `digest`, kept for `open_blob`.
    fn manifest_from_peer(&self, digest: &str) -> Result<(String, Arc<[u8]>), String> {
        if let Some(m) = self.manifests.lock().unwrap_or_else(|e| e.into_inner()).get(digest) {
            return Ok(m.clone());
        }
        let (media_type, bytes) = self.peer.manifest(&self.reference, digest)?;
        if bytes.len() as u64 > manifest::MANIFEST_BYTES_MAX {
            return Err(format!("manifest {digest} of {} bytes is over the limit", bytes.len()));
        }
        let actual = digest::sha256(&bytes);
        if actual != digest {
            return Err(format!("manifest digest mismatch: expected {digest}, got {actual}"));
        }
        if !manifest::is_index(&media_type) && !manifest::is_manifest(&media_type) {
            return Err(format!("{digest} is not a manifest or index (media type {media_type:?})"));
        }
        // The media type is the peer's word: the bytes must be what it says.
        manifest::parse_any(&media_type, &bytes).map_err(|e| format!("manifest {digest} is not a {media_type}: {e}"))?;
        let entry = (media_type, Arc::<[u8]>::from(bytes));
        let mut m = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MANIFESTS_MAX {
            m.clear();
        }
        m.insert(digest.to_string(), entry.clone());
        Ok(entry)
    }
}

impl<S: ImageSource> ImageSource for SwarmFirst<'_, S> {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error> {
        digest::validate(&desc.digest)?;
        if manifest::is_index(&desc.media_type) || manifest::is_manifest(&desc.media_type) {
            return match self.manifest_from_peer(&desc.digest) {
                Ok((_, bytes)) => Ok(Box::new(Cursor::new(bytes))),
                Err(why) => {
                    self.note(format!("manifest {}: {why}", desc.digest));
                    self.fallback.open_blob(desc)
                }
            };
        }
        match self.peer.blob(&self.reference, desc, 0) {
            Ok(r) => Ok(Box::new(VerifyingReader::new(r, desc))),
            Err(why) => {
                self.note(format!("blob {}: {why}", desc.digest));
                self.fallback.open_blob(desc)
            }
        }
    }

    fn open_blob_at(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>, Error> {
        if offset == 0 {
            return self.open_blob(desc);
        }
        digest::validate(&desc.digest)?;
        match self.peer.blob(&self.reference, desc, offset) {
            Ok(r) => Ok(Box::new(r.take(desc.size.saturating_sub(offset)))),
            Err(why) => {
                self.note(format!("blob {} from byte {offset}: {why}", desc.digest));
                self.fallback.open_blob_at(desc, offset)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer holding some blobs (possibly wrong ones), counting what it served.
    #[derive(Default)]
    struct Peer {
        blobs: BTreeMap<String, (String, Vec<u8>)>,
        served: Mutex<u64>,
    }

    impl BlobPeer for Peer {
        fn manifest(&self, _r: &Reference, digest: &str) -> Result<(String, Vec<u8>), String> {
            self.blobs.get(digest).cloned().ok_or_else(|| "not in the swarm".to_string())
        }
        fn blob(&self, _r: &Reference, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send>, String> {
            let (_, b) = self.blobs.get(&desc.digest).ok_or_else(|| "not in the swarm".to_string())?;
            *self.served.lock().unwrap() += b.len() as u64 - offset;
            Ok(Box::new(Cursor::new(b[offset as usize..].to_vec())))
        }
    }

    /// A registry stand-in: every blob it has, counting what it served.
    #[derive(Default)]
    struct Store {
        blobs: BTreeMap<String, Vec<u8>>,
        served: Mutex<u64>,
    }

    impl ImageSource for Store {
        fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error> {
            let b = self
                .blobs
                .get(&desc.digest)
                .ok_or_else(|| Error::BlobNotFound { digest: desc.digest.clone(), source_name: "store".into() })?;
            *self.served.lock().unwrap() += b.len() as u64;
            Ok(Box::new(Cursor::new(b.clone())))
        }
    }

    fn desc(bytes: &[u8], media_type: &str) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest: digest::sha256(bytes), size: bytes.len() as u64, platform: None }
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    /// A minimal valid OCI manifest.
    fn manifest_bytes() -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#,
            "0".repeat(64)
        )
        .into_bytes()
    }
    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    #[test]
    fn blobs_come_from_the_peer_and_the_registry_only_when_it_cannot() {
        let (m, layer, other) = (manifest_bytes(), vec![7u8; 5000], vec![9u8; 300]);
        let mut peer = Peer::default();
        peer.blobs.insert(digest::sha256(&m), (MANIFEST.into(), m.clone()));
        peer.blobs.insert(digest::sha256(&layer), (String::new(), layer.clone()));
        let mut store = Store::default();
        for b in [&m, &layer, &other] {
            store.blobs.insert(digest::sha256(b), b.clone());
        }
        let r = Reference::parse(&format!("reg.lan/app:1@{}", digest::sha256(&m))).unwrap();
        let src = SwarmFirst::new(&peer, r, &store);
        let root = src.resolve().expect("the root from the peer");
        assert_eq!((root.media_type.as_str(), root.size), (MANIFEST, m.len() as u64));
        let mut got = Vec::new();
        src.open_blob(&desc(&layer, LAYER)).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, layer);
        // Resumed from the peer: only the rest.
        let mut rest = Vec::new();
        src.open_blob_at(&desc(&layer, LAYER), 4000).unwrap().read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &layer[4000..]);
        assert_eq!(*store.served.lock().unwrap(), 0, "the registry served nothing the peer had");
        // A blob the peer lacks: from the registry, with the reason kept.
        let mut o = Vec::new();
        src.open_blob(&desc(&other, LAYER)).unwrap().read_to_end(&mut o).unwrap();
        assert_eq!((o, *store.served.lock().unwrap()), (other.clone(), 300));
        assert!(src.fallbacks().iter().any(|f| f.contains("not in the swarm")), "{:?}", src.fallbacks());
    }

    #[test]
    fn a_peer_that_lies_is_caught() {
        let (m, layer) = (manifest_bytes(), vec![7u8; 5000]);
        let mut peer = Peer::default();
        // Wrong bytes under both digests.
        peer.blobs.insert(digest::sha256(&m), (MANIFEST.into(), b"{\"schemaVersion\":3}".to_vec()));
        peer.blobs.insert(digest::sha256(&layer), (String::new(), vec![8u8; 5000]));
        let mut store = Store::default();
        store.blobs.insert(digest::sha256(&m), m.clone());
        let r = Reference::parse(&format!("reg.lan/app:1@{}", digest::sha256(&m))).unwrap();
        let src = SwarmFirst::new(&peer, r, &store);
        assert_eq!(src.resolve(), None, "a manifest that does not hash to its digest is refused");
        // Right bytes under a wrong media type (an index said to be a manifest, or the reverse) are refused too.
        let mut relabelled = Peer::default();
        relabelled.blobs.insert(digest::sha256(&m), ("application/vnd.oci.image.index.v1+json".into(), m.clone()));
        let r2 = Reference::parse(&format!("reg.lan/app:1@{}", digest::sha256(&m))).unwrap();
        let src2 = SwarmFirst::new(&relabelled, r2, &store);
        assert_eq!(src2.resolve(), None);
        assert!(src2.fallbacks()[0].contains("is not a application/vnd.oci.image.index.v1+json"), "{:?}", src2.fallbacks());
        assert!(src.fallbacks()[0].contains("digest mismatch"), "{:?}", src.fallbacks());
        // The manifest then comes from the registry.
        let mut got = Vec::new();
        src.open_blob(&desc(&m, MANIFEST)).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, m);
        // A layer with wrong bytes fails its read, never passes as the layer.
        let mut sink = Vec::new();
        let e = src.open_blob(&desc(&layer, LAYER)).unwrap().read_to_end(&mut sink).unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
    }
}
