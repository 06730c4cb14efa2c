//! Registry client tests: against a real local `docker-registry` fed by
//! `skopeo` (single-arch and multi-arch pushes), and against a scripted fake
//! server for bearer auth, chunked bodies, redirects, tampering and timeouts.

mod common;

use common::*;
use shoal_image::digest::sha256;
use shoal_image::manifest::{DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
use shoal_image::{plan_import, platforms_of, read_config, Credentials, Error, ImageSource, Mirror, Reference, Registry, RegistryOptions};
use shoal_shared::platform::Platform;
use shoal_tests::Relay;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn p(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

fn lib_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lib").join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `docker-registry` started through tests/lib/registry.sh; stopped on drop.
struct LocalRegistry {
    dir: TempDir,
    port: u16,
}

impl LocalRegistry {
    fn start() -> Option<LocalRegistry> {
        if !have_tool("docker-registry") || !have_tool("skopeo") {
            return None;
        }
        let dir = TempDir::new("registry");
        // The free port can be taken between probe and bind: retry.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let out = Command::new("sh")
                .arg(lib_script("registry.sh"))
                .arg("start")
                .arg(dir.path().join("reg"))
                .arg(port.to_string())
                .output()
                .unwrap();
            if out.status.success() {
                return Some(LocalRegistry { dir, port });
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("registry.sh start failed: {last}");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn push(&self, archive: &Path, name: &str, all: bool) {
        self.push_with(archive, name, all, &[]);
    }

    fn push_with(&self, archive: &Path, name: &str, all: bool, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        cmd.args(extra);
        let out = cmd.arg(format!("oci-archive:{}", archive.display())).arg(format!("docker://{}/{name}", self.host())).output().unwrap();
        assert!(out.status.success(), "skopeo push failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg(lib_script("registry.sh")).arg("stop").arg(self.dir.path().join("reg")).status();
    }
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut v).unwrap();
    v
}

#[test]
fn single_arch_push_resolve_plan_download() {
    let Some(reg) = LocalRegistry::start() else {
        return;
    };
    let host = Platform::host();
    let mut l = Layout::default();
    let (_, _, _, diff) = l.image(&host.os, &host.architecture, &host.variant, &[("bin/hello", b"hello registry")], false);
    let (m, ..) = l.image(&host.os, &host.architecture, &host.variant, &[("bin/hello", b"hello registry")], false);
    let archive = reg.dir.path().join("single.tar");
    l.write_oci_archive(&archive, &[(&m, &[("org.opencontainers.image.ref.name", "latest")])]);
    reg.push(&archive, "single:1", false);

    let client = Registry::new(RegistryOptions::default());
    let r = Reference::parse(&format!("{}/single:1", reg.host())).unwrap();
    let root = client.resolve(&r).unwrap();
    assert_eq!(root.media_type, OCI_MANIFEST);
    let src = client.source(&r);
    assert_eq!(platforms_of(&src, &root).unwrap(), vec![host.clone()]);
    let plan = plan_import(&src, &r.to_string(), &root, &host).unwrap();
    assert_eq!(plan.manifest.digest, root.digest);
    assert!(plan.indexes.is_empty());
    assert_eq!(plan.diff_ids, vec![diff.clone()]);
    // skopeo gzips layers on push: the digest is the compressed one.
    assert_eq!(plan.layers[0].media_type, OCI_LAYER_GZIP);
    assert_ne!(plan.layers[0].digest, plan.diff_ids[0]);
    let compressed = read_all(&mut src.open_blob(&plan.layers[0]).unwrap());
    assert_eq!(sha256(&compressed), plan.layers[0].digest);
    assert_eq!(sha256(&gunzip(&compressed)), diff);
    assert_eq!(read_config(&src, &plan.config).unwrap().config.cmd, Some(vec!["/bin/sh".to_string()]));

    // Pinned by digest; by a digest the registry lacks.
    let pinned = Reference::parse(&format!("{}/single@{}", reg.host(), root.digest)).unwrap();
    assert_eq!(client.resolve(&pinned).unwrap(), root);
    let other = Reference::parse(&format!("{}/single@{}", reg.host(), sha256(b"nope"))).unwrap();
    assert!(matches!(client.resolve(&other), Err(Error::ManifestUnknown { .. })));

    // Unknown tag and repository.
    let err = client.resolve(&Reference::parse(&format!("{}/single:nope", reg.host())).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), format!("manifest unknown: {}/single:nope", reg.host()));
    let err = client.resolve(&Reference::parse(&format!("{}/nothere:1", reg.host())).unwrap()).unwrap_err();
    assert!(matches!(err, Error::ManifestUnknown { .. }), "{err}");

    // Blobs the registry lacks, and descriptors lying about size.
    let mut missing = plan.layers[0].clone();
    missing.digest = sha256(b"missing");
    assert!(matches!(src.open_blob(&missing), Err(Error::BlobNotFound { .. })));
    let mut lying = plan.layers[0].clone();
    lying.size -= 1;
    assert!(matches!(src.open_blob(&lying), Err(Error::SizeMismatch { .. })));
}

#[test]
fn multi_arch_index_push_and_strict_selection() {
    let Some(reg) = LocalRegistry::start() else {
        return;
    };
    let dir = reg.dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("sh").arg(lib_script("mkindex.sh")).args(args).output().unwrap();
        assert!(out.status.success(), "mkindex.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    let three = dir.join("three.tar");
    run(&[three.to_str().unwrap()]);
    let two = dir.join("two.tar");
    run(&[two.to_str().unwrap(), "--tag", "v2", "linux/amd64", "linux/arm64"]);
    reg.push(&three, "multi:3", true);
    reg.push(&two, "multi:2", true);

    let client = Registry::new(RegistryOptions { read_timeout_ms: 10_000, ..Default::default() });
    let r3 = Reference::parse(&format!("{}/multi:3", reg.host())).unwrap();
    let root = client.resolve(&r3).unwrap();
    assert_eq!(root.media_type, OCI_INDEX);
    let src = client.source(&r3);
    let platforms = platforms_of(&src, &root).unwrap();
    assert_eq!(platforms, vec![p("linux/amd64"), p("linux/arm64/v8"), p("linux/arm/v7")]);
    for want in &platforms {
        let plan = plan_import(&src, &r3.to_string(), &root, want).unwrap();
        assert_eq!(plan.indexes, vec![root.clone()]);
        assert_eq!(&plan.platform, want);
        assert_eq!(plan.manifest.platform.as_ref(), Some(want));
        let cfg = read_config(&src, &plan.config).unwrap();
        let label = cfg.config.labels.get("org.shoal.test.platform").cloned().unwrap();
        assert_eq!(&p(&label), want);
        assert_eq!(plan.layers.len(), 1);
        assert_ne!(plan.layers[0].digest, plan.diff_ids[0]);
    }
    assert!(plan_import(&src, &r3.to_string(), &root, &p("linux/arm/v6")).is_err());

    let r2 = Reference::parse(&format!("{}/multi:2", reg.host())).unwrap();
    let root2 = client.resolve(&r2).unwrap();
    let src2 = client.source(&r2);
    assert_eq!(platforms_of(&src2, &root2).unwrap(), vec![p("linux/amd64"), p("linux/arm64")]);
    let err = plan_import(&src2, &r2.to_string(), &root2, &p("linux/arm/v7")).unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }));
    assert_eq!(
        err.to_string(),
        format!("image {}/multi:2 has no variant for linux/arm/v7 (available: linux/amd64, linux/arm64/v8)", reg.host())
    );

    // The layer downloads and verifies (the host busybox, gzipped by skopeo).
    let plan = plan_import(&src2, &r2.to_string(), &root2, &p("linux/arm64")).unwrap();
    let bytes = read_all(&mut src2.open_blob(&plan.layers[0]).unwrap());
    assert_eq!(sha256(&gunzip(&bytes)), plan.diff_ids[0]);

    // Converted to Docker schema2 (manifest list + v2 manifests + gzip layers).
    reg.push_with(&two, "multi:2d", true, &["--format", "v2s2"]);
    let r2d = Reference::parse(&format!("{}/multi:2d", reg.host())).unwrap();
    let root2d = client.resolve(&r2d).unwrap();
    assert_eq!(root2d.media_type, DOCKER_LIST);
    let src2d = client.source(&r2d);
    assert_eq!(platforms_of(&src2d, &root2d).unwrap(), vec![p("linux/amd64"), p("linux/arm64")]);
    let plan = plan_import(&src2d, &r2d.to_string(), &root2d, &p("linux/arm64")).unwrap();
    assert_eq!(plan.manifest.media_type, DOCKER_MANIFEST);
    assert_eq!(plan.layers[0].media_type, DOCKER_LAYER_GZIP);
    let bytes = read_all(&mut src2d.open_blob(&plan.layers[0]).unwrap());
    assert_eq!(sha256(&gunzip(&bytes)), plan.diff_ids[0]);
    assert!(matches!(plan_import(&src2d, &r2d.to_string(), &root2d, &p("linux/arm/v7")), Err(Error::NoMatchingPlatform { .. })));

    // The same archive opens locally too (nested index behind index.json).
    let a = shoal_image::Archive::open(&three).unwrap();
    let named = a.images_in("example.com/multi").unwrap();
    assert_eq!(named[0].0.as_deref(), Some("example.com/multi:latest"));
    assert_eq!(platforms_of(&a, &named[0].1).unwrap(), platforms);
}

#[test]
fn unreachable_registry_is_reported() {
    let port = free_port();
    let client = Registry::new(RegistryOptions { connect_timeout_ms: 1000, ..Default::default() });
    let err = client.resolve(&Reference::parse(&format!("127.0.0.1:{port}/foo:1")).unwrap()).unwrap_err();
    let msg = err.to_string();
    // QEMU 7.2 user-mode hands getsockopt(SO_ERROR) through without
    // translating the host errno, and MIPS numbers errnos differently
    // (ECONNREFUSED is 146 there, 111 on the host): under qemu-mips64el the
    // refused non-blocking connect reads as "os error 111". Real MIPS kernels
    // return 146. Accepted only in that emulated case (targets/qemu-test.sh).
    let qemu_mips = cfg!(any(target_arch = "mips64", target_arch = "mips")) && std::env::var_os("SHOAL_UNDER_QEMU").is_some();
    if qemu_mips && msg.ends_with("(os error 111)") {
        eprintln!("NOTE: accepting untranslated errno 111 for ECONNREFUSED under QEMU user-mode for MIPS: {msg}");
    } else {
        assert_eq!(msg, format!("registry 127.0.0.1:{port} is unreachable: connection refused"));
    }
    let err = client.resolve(&Reference::parse(&format!("localhost:{port}/foo:1")).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
}

/// What the fake server saw and how it behaves.
struct Fake {
    port: u16,
    requests: Arc<Seen>,
}

/// (path, authorization) of each request.
type Seen = Mutex<Vec<(String, Option<String>)>>;

type Handler = dyn Fn(&str, Option<&str>, u16) -> Vec<u8> + Send + Sync;

/// Serves one request per connection with `handler(path, authorization, port)`.
fn fake_server(handler: Arc<Handler>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests: Arc<Seen> = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let handler = handler.clone();
            let seen = seen.clone();
            std::thread::spawn(move || serve_one(conn, &*handler, &seen, port));
        }
    });
    Fake { port, requests }
}

fn serve_one(conn: TcpStream, handler: &Handler, seen: &Seen, port: u16) {
    let mut r = BufReader::new(&conn);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("Authorization: ") {
            auth = Some(v.trim().to_string());
        }
    }
    seen.lock().unwrap().push((path.clone(), auth.clone()));
    let resp = handler(&path, auth.as_deref(), port);
    if resp == b"DRIP" {
        // A head that never ends, one byte every 100 ms (each read succeeds).
        let _ = (&conn).write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
        for _ in 0..40 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if (&conn).write_all(b"z").is_err() {
                return;
            }
        }
        return;
    }
    let _ = (&conn).write_all(&resp);
}

fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    let mut v = s.into_bytes();
    v.extend_from_slice(body);
    v
}

fn chunked(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    let mut v = s.into_bytes();
    for c in body.chunks(7) {
        v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        v.extend_from_slice(c);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

#[test]
fn bearer_auth_chunked_manifests_and_redirected_blobs() {
    let mut l = Layout::default();
    let (m, _, layer, _) = l.image("linux", "arm", "v7", &[("f", b"fake")], true);
    let blobs: Arc<Vec<(String, Vec<u8>)>> = Arc::new(l.blobs.clone());
    let manifest_digest = m.digest.clone();
    let layer_digest = layer.digest.clone();
    let handler: Arc<Handler> = Arc::new(move |path: &str, auth: Option<&str>, port: u16| {
        let blob = |d: &str| blobs.iter().find(|(k, _)| k == d).map(|(_, b)| b.clone());
        if let Some(q) = path.strip_prefix("/token?") {
            assert_eq!(q, "service=fake&scope=repository%3Aorg%2Fapp%3Apull&account=user");
            assert_eq!(auth, Some("Basic dXNlcjpwYXNz"));
            return http("200 OK", &[("Content-Type", "application/json")], br#"{"token":"tok123"}"#);
        }
        if auth != Some("Bearer tok123") {
            let realm = format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:org/app:pull\"");
            return http("401 Unauthorized", &[("WWW-Authenticate", &realm)], br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
        }
        if path == "/v2/org/app/manifests/1" || path == format!("/v2/org/app/manifests/{manifest_digest}") {
            let b = blob(&manifest_digest).unwrap();
            return chunked("200 OK", &[("Content-Type", OCI_MANIFEST), ("Docker-Content-Digest", &manifest_digest)], &b);
        }
        if let Some(d) = path.strip_prefix("/v2/org/app/blobs/") {
            if d == layer_digest {
                return http("307 Temporary Redirect", &[("Location", &format!("/storage/{d}"))], b"");
            }
            return match blob(d) {
                Some(b) => http("200 OK", &[], &b),
                None => http("404 Not Found", &[], br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#),
            };
        }
        if let Some(d) = path.strip_prefix("/storage/") {
            return chunked("200 OK", &[], &blob(d).unwrap());
        }
        http("404 Not Found", &[], b"")
    });
    let fake = fake_server(handler);
    let host = format!("localhost:{}", fake.port);
    let client = Registry::new(RegistryOptions {
        credentials: vec![(host.clone(), Credentials { username: "user".into(), password: "pass".into() })],
        ..Default::default()
    });
    let r = Reference::parse(&format!("{host}/org/app:1")).unwrap();
    let root = client.resolve(&r).unwrap();
    assert_eq!(root.digest, m.digest);
    assert_eq!(root.media_type, OCI_MANIFEST);
    let src = client.source(&r);
    let plan = plan_import(&src, &r.to_string(), &root, &p("linux/arm/v7")).unwrap();
    let bytes = read_all(&mut src.open_blob(&plan.layers[0]).unwrap());
    assert_eq!(sha256(&bytes), layer.digest);
    let reqs = fake.requests.lock().unwrap().clone();
    assert_eq!(reqs[0], ("/v2/org/app/manifests/1".to_string(), None));
    assert!(reqs.iter().any(|(p, a)| p.starts_with("/storage/") && a.as_deref() == Some("Bearer tok123")));
    // The token was fetched once and reused.
    assert_eq!(reqs.iter().filter(|(p, _)| p.starts_with("/token")).count(), 1);
}

#[test]
fn tampered_blobs_and_error_json() {
    let mut l = Layout::default();
    let (m, config, _, _) = l.image("linux", "amd64", "", &[("f", b"x")], false);
    let blobs = l.blobs.clone();
    let cfg_digest = config.digest.clone();
    let handler: Arc<Handler> = Arc::new(move |path: &str, _: Option<&str>, _| {
        if path.starts_with("/v2/app/manifests/denied") {
            return http("403 Forbidden", &[], br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#);
        }
        if path.starts_with("/v2/app/manifests/broken") {
            return http("500 Internal Server Error", &[], b"oops");
        }
        if path.starts_with("/v2/app/manifests/") {
            let body = blobs.iter().find(|(_, b)| sha256(b) == m.digest).unwrap().1.clone();
            // Claims a different digest than the body hashes to.
            return http("200 OK", &[("Content-Type", OCI_MANIFEST), ("Docker-Content-Digest", &sha256(b"lie"))], &body);
        }
        if path == format!("/v2/app/blobs/{cfg_digest}") {
            let mut body = blobs.iter().find(|(k, _)| *k == cfg_digest).unwrap().1.clone();
            body[0] ^= 1;
            return http("200 OK", &[], &body);
        }
        http("404 Not Found", &[], b"")
    });
    let fake = fake_server(handler);
    let host = format!("127.0.0.1:{}", fake.port);
    let client = Registry::new(RegistryOptions::default());
    let err = client.resolve(&Reference::parse(&format!("{host}/app:1")).unwrap()).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let err = client.resolve(&Reference::parse(&format!("{host}/app:denied")).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), format!("registry {host} refused access to app: denied: requested access to the resource is denied"));
    let err = client.resolve(&Reference::parse(&format!("{host}/app:broken")).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), format!("registry {host} answered 500: internal server error"));
    let src = client.source(&Reference::parse(&format!("{host}/app:1")).unwrap());
    let err = read_config(&src, &config).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[test]
fn stalled_and_oversized_responses_time_out_or_fail() {
    // Built up front: the server must answer within the client's 300 ms read
    // timeout even on a slow (emulated, debug-build) CPU.
    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10_000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
    }
    let handler: Arc<Handler> = Arc::new(move |path: &str, _: Option<&str>, _| {
        if path.contains("stall") {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            return Vec::new();
        }
        big.clone()
    });
    let fake = fake_server(handler);
    let host = format!("127.0.0.1:{}", fake.port);
    let client = Registry::new(RegistryOptions { read_timeout_ms: 300, ..Default::default() });
    let started = std::time::Instant::now();
    let err = client.resolve(&Reference::parse(&format!("{host}/stall:1")).unwrap()).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_millis(1400), "took {:?}", started.elapsed());
    assert_eq!(err.to_string(), format!("bad http response from {host}: no response within 300 ms"));
    let err = client.resolve(&Reference::parse(&format!("{host}/big:1")).unwrap()).unwrap_err();
    assert!(err.to_string().contains("too large") || err.to_string().contains("more than"), "{err}");
}

#[test]
fn dripping_responses_hit_the_request_deadline() {
    let handler: Arc<Handler> = Arc::new(|_: &str, _: Option<&str>, _| {
        // Served byte by byte below; the marker tells serve_one to drip.
        b"DRIP".to_vec()
    });
    let fake = fake_server(handler);
    let host = format!("127.0.0.1:{}", fake.port);
    let client = Registry::new(RegistryOptions { read_timeout_ms: 300, request_timeout_ms: 700, ..Default::default() });
    let started = std::time::Instant::now();
    let err = client.resolve(&Reference::parse(&format!("{host}/drip:1")).unwrap()).unwrap_err();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(1500), "took {took:?}");
    assert_eq!(err.to_string(), format!("bad http response from {host}: response not complete within 700 ms"));
}

#[test]
fn non_loopback_registries_need_tls_or_insecure() {
    #[cfg(not(feature = "tls"))]
    {
        let client = Registry::new(RegistryOptions::default());
        let err = client.resolve(&Reference::parse("ghcr.io/org/app:1").unwrap()).unwrap_err();
        assert!(matches!(err, Error::TlsUnsupported { ref registry } if registry == "ghcr.io"), "{err}");
    }
    // Listed as insecure: plain HTTP is attempted (and fails: nothing
    // listens on 192.0.2.1:5000, a TEST-NET-1 address).
    let client = Registry::new(RegistryOptions {
        insecure_registries: vec!["192.0.2.1:5000".into()],
        connect_timeout_ms: 300,
        ..Default::default()
    });
    let err = client.resolve(&Reference::parse("192.0.2.1:5000/app:1").unwrap()).unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
}

/// A layer download cut at about 50 % and 90 % resumes from where it broke
/// (HTTP range requests) instead of starting over: the pull succeeds, the
/// blob verifies, and the registry sent about one layer's worth of bytes.
#[test]
fn blob_downloads_resume_after_cuts() {
    let Some(reg) = LocalRegistry::start() else {
        return;
    };
    let host = Platform::host();
    // 6 MiB that gzip cannot shrink.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut l = Layout::default();
    let (m, _, layer, _) = l.image(&host.os, &host.architecture, &host.variant, &[("big.bin", &big)], false);
    let archive = reg.dir.path().join("big.tar");
    l.write_oci_archive(&archive, &[(&m, &[])]);
    reg.push(&archive, "big:1", false);

    let relay = Relay::start("127.0.0.1", ("127.0.0.1", reg.port), vec![layer.size / 2, layer.size * 9 / 10]);
    let client = Registry::new(RegistryOptions::default());
    let r = Reference::parse(&format!("127.0.0.1:{}/big:1", relay.port)).unwrap();
    let root = client.resolve(&r).unwrap();
    let src = client.source(&r);
    let plan = plan_import(&src, &r.to_string(), &root, &host).unwrap();
    // Uncut first, for the time it takes (through an uncut relay).
    let plain = Relay::start("127.0.0.1", ("127.0.0.1", reg.port), vec![]);
    let r0 = Reference::parse(&format!("127.0.0.1:{}/big:1", plain.port)).unwrap();
    let t0 = std::time::Instant::now();
    read_all(&mut client.source(&r0).open_blob(&plan.layers[0]).unwrap());
    let uncut = t0.elapsed();
    let before = relay.served();
    let t1 = std::time::Instant::now();
    let got = read_all(&mut src.open_blob(&plan.layers[0]).unwrap());
    let cut = t1.elapsed();
    assert_eq!(sha256(&got), plan.layers[0].digest, "the resumed stream is the blob");
    assert_eq!(got.len() as u64, plan.layers[0].size);
    assert_eq!(relay.cuts_done(), 2, "both cuts happened");
    let fetched = relay.served() - before;
    eprintln!(
        "resume: a {}-byte layer cut at 50 % and 90 %: fetched {fetched} bytes ({:.4}x) in {:.2} s, uncut {:.2} s (waits before the resumes: 0.25 + 0.5 s)",
        plan.layers[0].size,
        fetched as f64 / plan.layers[0].size as f64,
        cut.as_secs_f64(),
        uncut.as_secs_f64()
    );
    assert!(fetched >= layer.size, "{fetched} < {}", layer.size);
    assert!(fetched < layer.size + (64 << 10), "started over: {fetched} bytes for a {}-byte layer", layer.size);
}

/// `--registry-mirror`: a mirror is asked first and, when it has the image,
/// the registry sends nothing; an image the mirror lacks, or a mirror that
/// is down, falls back to the registry.
#[test]
fn mirrors_are_asked_first_and_fall_back() {
    let (Some(upstream), Some(mirror)) = (LocalRegistry::start(), LocalRegistry::start()) else {
        return;
    };
    let host = Platform::host();
    let mut l = Layout::default();
    let (m, ..) = l.image(&host.os, &host.architecture, &host.variant, &[("f", b"mirrored")], false);
    let archive = mirror.dir.path().join("m.tar");
    l.write_oci_archive(&archive, &[(&m, &[])]);
    mirror.push(&archive, "app:1", false);
    upstream.push(&archive, "only-upstream:1", false);
    // Every byte the registry sends is counted.
    let counted = Relay::start("127.0.0.1", ("127.0.0.1", upstream.port), vec![]);
    let registry = format!("127.0.0.1:{}", counted.port);
    let pull = |mirror_url: &str, name: &str| -> Result<(), Error> {
        let opts = RegistryOptions { mirrors: vec![Mirror::parse(&format!("{registry}={mirror_url}")).unwrap()], ..Default::default() };
        let client = Registry::new(opts);
        let r = Reference::parse(&format!("{registry}/{name}")).unwrap();
        let root = client.resolve(&r)?;
        let src = client.source(&r);
        let plan = plan_import(&src, &r.to_string(), &root, &host)?;
        for layer in &plan.layers {
            read_all(&mut src.open_blob(layer)?);
        }
        Ok(())
    };
    let mirror_url = format!("http://{}", mirror.host());
    pull(&mirror_url, "app:1").unwrap();
    assert_eq!(counted.served(), 0, "the mirror had it: the registry sent nothing");
    pull(&mirror_url, "only-upstream:1").unwrap();
    let after_fallback = counted.served();
    assert!(after_fallback > 0, "an image the mirror lacks comes from the registry");
    // A mirror that is down: the registry.
    let down = format!("http://127.0.0.1:{}", free_port());
    pull(&down, "only-upstream:1").unwrap();
    assert!(counted.served() > after_fallback);
    // Nowhere: the registry's own answer.
    let err = pull(&mirror_url, "nowhere:1").unwrap_err();
    assert!(err.to_string().contains("manifest unknown"), "{err}");
}
