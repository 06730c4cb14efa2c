//! Test helpers shared by the integration tests: building OCI layouts and
//! archives in memory, temporary directories, and the external-tool gate
//! (`SHOAL_REQUIRE_TOOLS=1` turns a missing tool into a failure).

#![allow(dead_code, unreachable_pub)]

use shoal_image::digest::sha256;
use shoal_image::manifest::{OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST};
use shoal_image::Descriptor;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!("shoal-image-test-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `name` is an executable file on PATH (no skip/require policy).
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file())).unwrap_or(false)
}

/// Whether an external tool is on PATH. Missing tools skip the test with a
/// printed reason, unless `SHOAL_REQUIRE_TOOLS=1`, where they fail it.
pub fn have_tool(name: &str) -> bool {
    let found = on_path(name);
    if !found {
        assert!(std::env::var("SHOAL_REQUIRE_TOOLS").as_deref() != Ok("1"), "{name} is required (SHOAL_REQUIRE_TOOLS=1) but not on PATH");
        eprintln!("skipping: {name} not found on PATH");
    }
    found
}

/// A tar with the given regular files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An OCI layout under construction, in memory.
#[derive(Default)]
pub struct Layout {
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl Layout {
    pub fn put(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let d = Descriptor { media_type: media_type.into(), digest: sha256(&bytes), size: bytes.len() as u64, platform: None };
        if !self.blobs.iter().any(|(k, _)| *k == d.digest) {
            self.blobs.push((d.digest.clone(), bytes));
        }
        d
    }

    pub fn blob(&self, digest: &str) -> &[u8] {
        &self.blobs.iter().find(|(d, _)| d == digest).unwrap().1
    }

    /// One image: a layer holding `files`, a config for the platform, a manifest.
    /// Returns (manifest, config, layer, diff_id).
    pub fn image(
        &mut self,
        os: &str,
        arch: &str,
        variant: &str,
        files: &[(&str, &[u8])],
        gz: bool,
    ) -> (Descriptor, Descriptor, Descriptor, String) {
        let tar = tar_of(files);
        let diff_id = sha256(&tar);
        let layer = if gz { self.put(OCI_LAYER_GZIP, gzip(&tar)) } else { self.put(OCI_LAYER, tar) };
        let mut cfg = serde_json::json!({
            "architecture": arch, "os": os,
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}
        });
        if !variant.is_empty() {
            cfg["variant"] = serde_json::json!(variant);
        }
        let config = self.put(OCI_CONFIG, serde_json::to_vec(&cfg).unwrap());
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}]
        });
        let manifest = self.put(OCI_MANIFEST, serde_json::to_vec(&m).unwrap());
        (manifest, config, layer, diff_id)
    }

    /// An index over `entries` (manifest, "os/arch[/variant]").
    pub fn index(&mut self, entries: &[(&Descriptor, &str)]) -> Descriptor {
        let manifests: Vec<_> = entries.iter().map(|(d, p)| entry(d, Some(p), &[])).collect();
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.put(OCI_INDEX, serde_json::to_vec(&idx).unwrap())
    }

    /// Writes the layout as an OCI archive whose `index.json` lists `roots`
    /// with the given annotations.
    pub fn write_oci_archive(&self, path: &Path, roots: &[(&Descriptor, &[(&str, &str)])]) {
        let manifests: Vec<_> = roots.iter().map(|(d, ann)| entry(d, None, ann)).collect();
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        let mut files: Vec<(String, Vec<u8>)> =
            vec![("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()), ("index.json".into(), index)];
        for (d, b) in &self.blobs {
            files.push((format!("blobs/{}", d.replace(':', "/")), b.clone()));
        }
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        std::fs::write(path, tar_of(&refs)).unwrap();
    }
}

fn entry(d: &Descriptor, platform: Option<&str>, ann: &[(&str, &str)]) -> serde_json::Value {
    let mut e = serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    if let Some(p) = platform {
        let parts: Vec<&str> = p.split('/').collect();
        e["platform"] = serde_json::json!({"os": parts[0], "architecture": parts[1]});
        if let Some(v) = parts.get(2) {
            e["platform"]["variant"] = serde_json::json!(v);
        }
    }
    if !ann.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = ann.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        e["annotations"] = serde_json::Value::Object(m);
    }
    e
}

pub fn read_all(r: &mut dyn std::io::Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}
