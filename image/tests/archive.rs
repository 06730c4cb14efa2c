//! Archive tests: OCI and docker archives built in memory, gzip-compressed
//! archives, and a docker-archive produced by the real `skopeo`.

mod common;

use common::*;
use shoal_image::archive::ArchiveKind;
use shoal_image::digest::sha256;
use shoal_image::manifest::{OCI_LAYER, OCI_LAYER_GZIP};
use shoal_image::{plan_import, platforms_of, read_config, Archive, Error, ImageSource};
use shoal_shared::platform::Platform;

fn p(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

#[test]
fn oci_archive_names_and_plan() {
    let dir = TempDir::new("oci");
    let mut l = Layout::default();
    let (amd, _, amd_layer, amd_diff) = l.image("linux", "amd64", "", &[("bin/hello", b"amd64 hello")], false);
    let (arm, _, _, _) = l.image("linux", "arm64", "", &[("bin/hello", b"arm64 hello")], true);
    let idx = l.index(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
    let path = dir.path().join("img.tar");
    l.write_oci_archive(
        &path,
        &[
            (&idx, &[("io.containerd.image.name", "docker.io/library/hello:1")]),
            (&idx, &[("org.opencontainers.image.ref.name", "127.0.0.1:5000/hello:2")]),
            (&amd, &[("org.opencontainers.image.ref.name", "latest")]),
            (&arm, &[]),
        ],
    );
    let a = Archive::open(&path).unwrap();
    assert_eq!(a.kind(), ArchiveKind::Oci);
    let imgs = a.images();
    let names: Vec<_> = imgs.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, vec![Some("docker.io/library/hello:1".to_string()), Some("127.0.0.1:5000/hello:2".to_string()), None, None]);
    let named = a.images_in("busybox").unwrap();
    assert!(named.iter().any(|(n, d)| n.as_deref() == Some("docker.io/library/busybox:latest") && d.digest == amd.digest));
    assert_eq!(a.find("hello:1").unwrap().digest, idx.digest);

    let root = &imgs[0].1;
    assert_eq!(platforms_of(&a, root).unwrap(), vec![p("linux/amd64"), p("linux/arm64/v8")]);
    let plan = plan_import(&a, "docker.io/library/hello:1", root, &p("linux/amd64")).unwrap();
    assert_eq!(plan.manifest.digest, amd.digest);
    assert_eq!(plan.indexes.len(), 1);
    assert_eq!(plan.layers[0].media_type, OCI_LAYER);
    assert_eq!(plan.diff_ids, vec![amd_diff.clone()]);
    assert_eq!(plan.layers[0].digest, amd_layer.digest);
    let bytes = read_all(&mut a.open_blob(&plan.layers[0]).unwrap());
    assert_eq!(sha256(&bytes), amd_diff);
    assert_eq!(read_config(&a, &plan.config).unwrap().config.cmd, Some(vec!["/bin/sh".to_string()]));

    let plan = plan_import(&a, "docker.io/library/hello:1", root, &p("linux/arm64")).unwrap();
    assert_eq!(plan.layers[0].media_type, OCI_LAYER_GZIP);
    assert_ne!(plan.layers[0].digest, plan.diff_ids[0]);
    let err = plan_import(&a, "docker.io/library/hello:1", root, &p("linux/arm/v7")).unwrap_err();
    assert_eq!(err.to_string(), "image hello:1 has no variant for linux/arm/v7 (available: linux/amd64, linux/arm64/v8)");

    // A descriptor lying about its size is refused.
    let mut lying = plan.layers[0].clone();
    lying.size += 1;
    assert!(matches!(a.open_blob(&lying), Err(Error::SizeMismatch { .. })));
    let mut missing = lying;
    missing.digest = sha256(b"nothing");
    assert!(matches!(a.open_blob(&missing), Err(Error::BlobNotFound { .. })));
}

#[test]
fn gzip_compressed_archive_is_decompressed() {
    let dir = TempDir::new("ocigz");
    let mut l = Layout::default();
    let (m, _, _, _) = l.image("linux", "arm", "v7", &[("f", b"x")], false);
    let tar = dir.path().join("img.tar");
    l.write_oci_archive(&tar, &[(&m, &[("io.containerd.image.name", "localhost/x:1")])]);
    let gz = dir.path().join("img.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&tar).unwrap())).unwrap();
    let a = Archive::open(&gz).unwrap();
    let (name, root) = a.images().remove(0);
    assert_eq!(name.as_deref(), Some("localhost/x:1"));
    let plan = plan_import(&a, "localhost/x:1", &root, &p("linux/arm/v7")).unwrap();
    assert_eq!(plan.platform, p("linux/arm/v7"));
    assert!(plan_import(&a, "localhost/x:1", &root, &p("linux/arm/v6")).is_err());
}

#[test]
fn docker_archive_with_symlinked_and_gzipped_layers() {
    let dir = TempDir::new("docker");
    let layer1 = tar_of(&[("bin/a", b"one")]);
    let layer2 = tar_of(&[("bin/b", b"two")]);
    let layer2_gz = gzip(&layer2);
    let cfg = serde_json::json!({
        "architecture": "arm64", "os": "linux",
        "config": {"Entrypoint": ["/bin/a"], "Env": ["A=1"], "Labels": {"k": "v"}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer1), sha256(&layer2), sha256(&layer1)]}
    });
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let manifest = serde_json::json!([{
        "Config": "cfg.json",
        "RepoTags": ["busybox:latest", "127.0.0.1:5000/bb:1"],
        "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"]
    }]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    // l3/layer.tar is a symlink to ../l1/layer.tar, as older `docker save` writes.
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in
        [("manifest.json", &manifest[..]), ("cfg.json", &cfg[..]), ("l1/layer.tar", &layer1[..]), ("l2/layer.tar", &layer2_gz[..])]
    {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "l3/layer.tar", "../l1/layer.tar").unwrap();
    let path = dir.path().join("docker.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();

    let a = Archive::open(&path).unwrap();
    assert_eq!(a.kind(), ArchiveKind::Docker);
    let imgs = a.images();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0].0.as_deref(), Some("docker.io/library/busybox:latest"));
    assert_eq!(imgs[1].0.as_deref(), Some("127.0.0.1:5000/bb:1"));
    let root = &imgs[0].1;
    assert_eq!(root.platform, Some(p("linux/arm64")));
    assert_eq!(platforms_of(&a, root).unwrap(), vec![p("linux/arm64/v8")]);
    let plan = plan_import(&a, "docker.io/library/busybox:latest", root, &p("linux/arm64")).unwrap();
    assert_eq!(plan.manifest, *root);
    assert_eq!(plan.layers.len(), 3);
    assert_eq!(plan.layers[0].media_type, OCI_LAYER);
    assert_eq!(plan.layers[0].digest, plan.diff_ids[0]);
    assert_eq!(plan.layers[1].media_type, OCI_LAYER_GZIP);
    assert_eq!(plan.layers[1].digest, sha256(&layer2_gz));
    assert_eq!(plan.layers[2].digest, plan.layers[0].digest);
    assert_eq!(read_all(&mut a.open_blob(&plan.layers[1]).unwrap()), layer2_gz);
    let cfg = read_config(&a, &plan.config).unwrap();
    assert_eq!(cfg.config.entrypoint, Some(vec!["/bin/a".to_string()]));
    assert_eq!(cfg.config.labels.get("k").map(String::as_str), Some("v"));
    let err = plan_import(&a, "docker.io/library/busybox:latest", root, &p("linux/amd64")).unwrap_err();
    assert_eq!(err.to_string(), "image busybox:latest has no variant for linux/amd64 (available: linux/arm64/v8)");
}

#[test]
fn not_an_archive() {
    let dir = TempDir::new("bad");
    let path = dir.path().join("x.tar");
    std::fs::write(&path, tar_of(&[("hello", b"world")])).unwrap();
    let err = Archive::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAnArchive { .. }), "{err}");
    std::fs::write(&path, b"garbage that is not a tar at all").unwrap();
    assert!(Archive::open(&path).is_err());
    let err = Archive::open(dir.path().join("missing.tar")).unwrap_err();
    assert!(err.to_string().starts_with("opening archive"), "{err}");
    // A member whose data runs past the end of the file.
    let mut cut = tar_of(&[("manifest.json", &[b' '; 4000])]);
    cut.truncate(2000);
    std::fs::write(&path, &cut).unwrap();
    let err = Archive::open(&path).unwrap_err();
    assert!(err.to_string().contains("member manifest.json is truncated"), "{err}");
    // A gzip stream that is not a tar.
    std::fs::write(&path, gzip(b"not a tar")).unwrap();
    assert!(Archive::open(&path).is_err());
}

#[test]
fn skopeo_docker_archive_from_oci_archive() {
    if !have_tool("skopeo") {
        return;
    }
    let dir = TempDir::new("skopeo");
    let host = Platform::host();
    let mut l = Layout::default();
    let (m, _, _, diff) = l.image(&host.os, &host.architecture, &host.variant, &[("bin/hello", b"hello from skopeo")], true);
    let oci = dir.path().join("oci.tar");
    l.write_oci_archive(&oci, &[(&m, &[("org.opencontainers.image.ref.name", "latest")])]);
    let docker = dir.path().join("docker.tar");
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci-archive:{}", oci.display()))
        .arg(format!("docker-archive:{}:hello:tag1", docker.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo failed: {}", String::from_utf8_lossy(&out.stderr));
    let a = Archive::open(&docker).unwrap();
    assert_eq!(a.kind(), ArchiveKind::Docker);
    let (name, root) = a.images().remove(0);
    assert_eq!(name.as_deref(), Some("docker.io/library/hello:tag1"));
    let plan = plan_import(&a, "docker.io/library/hello:tag1", &root, &host).unwrap();
    assert_eq!(plan.diff_ids, vec![diff.clone()]);
    // skopeo stores docker-archive layers uncompressed.
    let bytes = read_all(&mut a.open_blob(&plan.layers[0]).unwrap());
    let unpacked = if plan.layers[0].media_type == OCI_LAYER_GZIP {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut v).unwrap();
        v
    } else {
        bytes
    };
    assert_eq!(sha256(&unpacked), diff);
    let mut ar = tar::Archive::new(&unpacked[..]);
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.path().unwrap().to_str(), Some("bin/hello"));
    assert_eq!(read_all(&mut e), b"hello from skopeo");
}
