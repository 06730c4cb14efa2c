//! Image archives on disk: OCI archives (`oci-layout` + `index.json` +
//! `blobs/`) and docker-archives (`manifest.json`, from `docker save` or
//! `skopeo copy … docker-archive:`), served through [`ImageSource`].
//!
//! The tar is indexed once (path → data offset and size) and blobs are read
//! by positional reads, never loaded whole. A gzip-compressed archive is
//! decompressed once into an unlinked temporary file. For docker-archives an
//! OCI manifest is synthesised in memory (layer digest = sha256 of the layer
//! file, media type tar or tar+gzip by its magic) so both kinds look alike.
//!
//! Names: `io.containerd.image.name` is a full reference; so is
//! `org.opencontainers.image.ref.name` when it contains `/` or `:`;
//! otherwise that annotation is a bare tag (what `skopeo copy … oci-archive:X:tag`
//! writes) and the image has no name until the caller supplies a repository
//! ([`Archive::images_in`]). docker-archive names come from `RepoTags`.

use crate::digest::{self, Hasher};
use crate::manifest::{self, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST};
use crate::{Descriptor, Error, ImageSource, Reference};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most tar members indexed.
pub const ENTRIES_MAX: usize = 100_000;
/// Largest small metadata file (`index.json`, `manifest.json`, `oci-layout`).
pub const METADATA_BYTES_MAX: u64 = 4 << 20;
/// Largest decompressed size of a gzip-compressed archive.
pub const DECOMPRESSED_BYTES_MAX: u64 = 16 << 30;
/// Deepest chain of symlinks followed inside the tar.
const LINKS_MAX: usize = 16;

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Clone, Debug)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink (target relative to the member's directory) or a hard link
    /// (target relative to the archive root), already made absolute.
    Link(String),
}

#[derive(Clone, Debug)]
enum Blob {
    Tar { offset: u64, size: u64 },
    Memory(Arc<[u8]>),
}

/// Which layout an archive uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    Oci,
    Docker,
}

/// An opened image archive.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    file: File,
    kind: ArchiveKind,
    blobs: HashMap<String, Blob>,
    images: Vec<(Option<String>, Descriptor)>,
    bare_tags: Vec<(String, Descriptor)>,
}

impl Archive {
    /// Opens and indexes an archive, detecting its kind.
    pub fn open(path: impl AsRef<Path>) -> Result<Archive, Error> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let mut file = File::open(&path).map_err(|e| Error::io(format!("opening archive {shown}"), e))?;
        let mut magic = [0u8; 2];
        let n = read_full_at(&file, &mut magic, 0).map_err(|e| Error::io(format!("reading archive {shown}"), e))?;
        if n == 2 && magic == [0x1f, 0x8b] {
            file = decompress_to_temp(&file, &shown)?;
        }
        let members = index_tar(&file, &shown)?;
        let mut a = Archive { path, file, kind: ArchiveKind::Oci, blobs: HashMap::new(), images: Vec::new(), bare_tags: Vec::new() };
        if members.contains_key("oci-layout") && members.contains_key("index.json") {
            a.load_oci(&members)?;
        } else if members.contains_key("manifest.json") {
            a.kind = ArchiveKind::Docker;
            a.load_docker(&members)?;
        } else {
            return Err(Error::NotAnArchive {
                path: shown,
                reason: "neither oci-layout/index.json (OCI archive) nor manifest.json (docker-archive) found".into(),
            });
        }
        Ok(a)
    }

    pub fn kind(&self) -> ArchiveKind {
        self.kind
    }

    /// The images in the archive: canonical name (when the archive names it)
    /// and root descriptor (index or manifest). An image with several names
    /// appears once per name.
    pub fn images(&self) -> Vec<(Option<String>, Descriptor)> {
        self.images.clone()
    }

    /// Like [`Archive::images`], with bare-tag names (`ref.name` = `latest`)
    /// completed with `repository` (e.g. `docker.io/library/busybox`).
    pub fn images_in(&self, repository: &str) -> Result<Vec<(Option<String>, Descriptor)>, Error> {
        let repo = Reference::parse(repository)?;
        let mut out: Vec<_> = self.images.iter().filter(|(n, _)| n.is_some()).cloned().collect();
        for (tag, d) in &self.bare_tags {
            out.push((Some(repo.with_tag(tag)?.to_string()), d.clone()));
        }
        Ok(out)
    }

    /// The root descriptor recorded under `name` (any spelling Docker
    /// accepts, e.g. `busybox` or `docker.io/library/busybox:latest`).
    pub fn find(&self, name: &str) -> Option<Descriptor> {
        let want = Reference::parse(name).ok()?.to_string();
        self.images.iter().find(|(n, _)| n.as_deref() == Some(want.as_str())).map(|(_, d)| d.clone())
    }

    /// Canonical name from an archive's metadata, with context on error.
    fn name_from(&self, n: &str, field: &str) -> Result<String, Error> {
        Reference::parse(n)
            .map(|r| r.to_string())
            .map_err(|e| Error::NotAnArchive { path: self.shown(), reason: format!("{field} {n:?}: {e}") })
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn read_member(&self, members: &HashMap<String, Member>, name: &str) -> Result<Vec<u8>, Error> {
        let (offset, size) = resolve(members, name)
            .ok_or_else(|| Error::NotAnArchive { path: self.shown(), reason: format!("{name} is missing or not a regular file") })?;
        if size > METADATA_BYTES_MAX {
            return Err(Error::TooLarge { what: format!("{name} in {}", self.shown()), size, limit: METADATA_BYTES_MAX });
        }
        let mut buf = vec![0u8; size as usize];
        let n = read_full_at(&self.file, &mut buf, offset).map_err(|e| Error::io(format!("reading {}", self.shown()), e))?;
        if n as u64 != size {
            return Err(Error::NotAnArchive { path: self.shown(), reason: format!("{name} is truncated") });
        }
        Ok(buf)
    }

    fn load_oci(&mut self, members: &HashMap<String, Member>) -> Result<(), Error> {
        for name in members.keys() {
            let Some(rest) = name.strip_prefix("blobs/") else {
                continue;
            };
            let Some((alg, hex)) = rest.split_once('/') else {
                continue;
            };
            let d = format!("{alg}:{hex}");
            if digest::validate(&d).is_ok() {
                if let Some((offset, size)) = resolve(members, name) {
                    self.blobs.insert(d, Blob::Tar { offset, size });
                }
            }
        }
        let bytes = self.read_member(members, "index.json")?;
        let idx = manifest::parse_index(&bytes)?;
        for e in &idx.manifests {
            let d = e.to_descriptor()?;
            if let Some(n) = e.annotations.get(CONTAINERD_NAME) {
                self.images.push((Some(self.name_from(n, "index.json annotation")?), d));
            } else if let Some(n) = e.annotations.get(OCI_REF_NAME) {
                if n.contains(['/', ':', '@']) {
                    self.images.push((Some(self.name_from(n, "index.json annotation")?), d));
                } else {
                    self.bare_tags.push((n.clone(), d.clone()));
                    self.images.push((None, d));
                }
            } else {
                self.images.push((None, d));
            }
        }
        Ok(())
    }

    fn load_docker(&mut self, members: &HashMap<String, Member>) -> Result<(), Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let bytes = self.read_member(members, "manifest.json")?;
        let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| Error::malformed("docker-archive manifest.json", e))?;
        for e in entries {
            if e.layers.len() > manifest::ENTRIES_MAX {
                return Err(Error::malformed("docker-archive manifest.json", "too many layers"));
            }
            let config_bytes = self.read_member(members, &e.config)?;
            if config_bytes.len() as u64 > manifest::CONFIG_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: "image config".into(),
                    size: config_bytes.len() as u64,
                    limit: manifest::CONFIG_BYTES_MAX,
                });
            }
            let config = manifest::parse_config(&config_bytes)?;
            let config_desc = self.put_memory(OCI_CONFIG, config_bytes);
            let mut layers = Vec::with_capacity(e.layers.len());
            for l in &e.layers {
                let (offset, size) = resolve(members, l).ok_or_else(|| Error::NotAnArchive {
                    path: self.shown(),
                    reason: format!("layer {l} is missing or not a regular file"),
                })?;
                let (digest, gzip) = self.hash_section(offset, size)?;
                let media_type = if gzip { OCI_LAYER_GZIP } else { OCI_LAYER };
                self.blobs.insert(digest.clone(), Blob::Tar { offset, size });
                layers.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
            }
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
                "layers": layers,
            });
            let m = serde_json::to_vec(&m).map_err(|e| Error::Other(format!("encoding manifest: {e}")))?;
            let mut root = self.put_memory(OCI_MANIFEST, m);
            root.platform = Some(config.platform());
            match e.repo_tags.unwrap_or_default() {
                tags if tags.is_empty() => self.images.push((None, root)),
                tags => {
                    for t in tags {
                        self.images.push((Some(self.name_from(&t, "manifest.json RepoTags")?), root.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    fn put_memory(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let d = Descriptor { media_type: media_type.into(), digest: digest::sha256(&bytes), size: bytes.len() as u64, platform: None };
        self.blobs.insert(d.digest.clone(), Blob::Memory(bytes.into()));
        d
    }

    /// sha256 of a member's bytes, and whether they start with gzip magic.
    fn hash_section(&self, offset: u64, size: u64) -> Result<(String, bool), Error> {
        let mut r = Section { file: &self.file, pos: offset, end: offset + size };
        let mut h = Hasher::default();
        let mut buf = vec![0u8; 64 << 10];
        let mut first = true;
        let mut gzip = false;
        loop {
            let n = r.read(&mut buf).map_err(|e| Error::io(format!("reading {}", self.shown()), e))?;
            if n == 0 {
                break;
            }
            if first {
                gzip = n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b;
                first = false;
            }
            h.update(&buf[..n]);
        }
        if r.pos != r.end {
            return Err(Error::NotAnArchive { path: self.shown(), reason: "layer is truncated".into() });
        }
        Ok((h.finish(), gzip))
    }
}

impl ImageSource for Archive {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error> {
        digest::validate(&desc.digest)?;
        let blob =
            self.blobs.get(&desc.digest).ok_or_else(|| Error::BlobNotFound { digest: desc.digest.clone(), source_name: self.shown() })?;
        match blob {
            Blob::Tar { offset, size } => {
                if *size != desc.size {
                    return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: *size });
                }
                Ok(Box::new(Section { file: &self.file, pos: *offset, end: offset + size }))
            }
            Blob::Memory(bytes) => {
                if bytes.len() as u64 != desc.size {
                    return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: bytes.len() as u64 });
                }
                Ok(Box::new(io::Cursor::new(bytes.clone())))
            }
        }
    }
}

/// A byte range of the archive, read with positional reads (shares the file
/// handle with concurrent readers).
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "archive member is truncated"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Decompresses a gzip archive into an anonymous (already unlinked)
/// temporary file.
fn decompress_to_temp(file: &File, shown: &str) -> Result<File, Error> {
    let dir = std::env::temp_dir();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp_path = dir.join(format!(".shoal-archive-{}-{nanos}", std::process::id()));
    let mut tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .map_err(|e| Error::io(format!("creating temporary file in {}", dir.display()), e))?;
    let _ = std::fs::remove_file(&tmp_path);
    let len = file.metadata().map_err(|e| Error::io(format!("reading archive {shown}"), e))?.len();
    let mut gz = flate2::read::GzDecoder::new(Section { file, pos: 0, end: len }).take(DECOMPRESSED_BYTES_MAX + 1);
    let n = io::copy(&mut gz, &mut tmp).map_err(|e| Error::io(format!("decompressing archive {shown}"), e))?;
    if n > DECOMPRESSED_BYTES_MAX {
        return Err(Error::TooLarge { what: format!("decompressed archive {shown}"), size: n, limit: DECOMPRESSED_BYTES_MAX });
    }
    tmp.seek(SeekFrom::Start(0)).map_err(|e| Error::io("rewinding temporary file", e))?;
    Ok(tmp)
}

/// Normalises a member path: no leading `./` or `/`, no `.` components;
/// `..` is resolved against `base` components and cannot escape the root.
fn normalise(base: &[&str], p: &str) -> Option<String> {
    let mut parts: Vec<&str> = if p.starts_with('/') { Vec::new() } else { base.to_vec() };
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn index_tar(file: &File, shown: &str) -> Result<HashMap<String, Member>, Error> {
    let bad = |e: io::Error| Error::NotAnArchive { path: shown.to_string(), reason: format!("reading tar: {e}") };
    let mut members = HashMap::new();
    let len = file.metadata().map_err(bad)?.len();
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(bad)?;
    let mut ar = tar::Archive::new(reader);
    for (i, entry) in ar.entries_with_seek().map_err(bad)?.enumerate() {
        let entry = entry.map_err(bad)?;
        if i >= ENTRIES_MAX {
            return Err(Error::NotAnArchive { path: shown.to_string(), reason: format!("more than {ENTRIES_MAX} members") });
        }
        let raw = entry.path_bytes();
        let Ok(raw) = std::str::from_utf8(&raw) else {
            continue;
        };
        let Some(name) = normalise(&[], raw) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let member = if kind.is_file() || kind == tar::EntryType::Continuous {
            let (offset, size) = (entry.raw_file_position(), entry.size());
            // Every later `offset + size` relies on this check.
            if !matches!(offset.checked_add(size), Some(end) if end <= len) {
                return Err(Error::NotAnArchive { path: shown.to_string(), reason: format!("member {name} is truncated") });
            }
            Member::File { offset, size }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name_bytes() else {
                continue;
            };
            let Ok(target) = std::str::from_utf8(&target) else {
                continue;
            };
            let dir: Vec<&str> = name.split('/').collect();
            let base = if kind.is_symlink() { &dir[..dir.len().saturating_sub(1)] } else { &[][..] };
            let Some(t) = normalise(base, target) else {
                continue;
            };
            Member::Link(t)
        } else {
            continue;
        };
        members.insert(name, member);
    }
    Ok(members)
}

/// Follows links to a regular file: (offset, size).
fn resolve(members: &HashMap<String, Member>, name: &str) -> Option<(u64, u64)> {
    let mut name = normalise(&[], name)?;
    for _ in 0..LINKS_MAX {
        match members.get(&name)? {
            Member::File { offset, size } => return Some((*offset, *size)),
            Member::Link(t) => name = t.clone(),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths() {
        assert_eq!(normalise(&[], "./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalise(&[], "/a//b/.").as_deref(), Some("a/b"));
        assert_eq!(normalise(&["x", "y"], "../z/layer.tar").as_deref(), Some("x/z/layer.tar"));
        assert_eq!(normalise(&[], "../etc"), None);
    }
}
