//! HTTPS against a real `docker-registry` serving TLS on a non-loopback
//! address of this machine (only built with the `tls` feature): trusted
//! through a CA file for every registry or for this one, refused without it
//! or with a CA scoped to another registry, and spoken to without
//! verification when listed as insecure (Docker's rule).

#![cfg(feature = "tls")]

mod common;

use common::*;
use shoal_image::digest::sha256;
use shoal_image::{plan_import, CaFile, Error, ImageSource, Reference, Registry, RegistryOptions};
use shoal_shared::platform::Platform;
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A non-loopback IPv4 address of this machine (no packet is sent).
fn local_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").or_else(|_| s.connect("10.255.255.255:9")).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_registry_with_private_ca() {
    if !have_tool("openssl") || !have_tool("docker-registry") || !have_tool("skopeo") {
        return;
    }
    let Some(ip) = local_ip() else {
        eprintln!("skipping: no non-loopback address on this machine");
        return;
    };
    let dir = TempDir::new("tls");
    let d = dir.path();
    sh(
        &format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=shoal-test-ca \
             && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr -subj /CN=shoal-test \
             && printf 'subjectAltName=IP:{ip}\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' > ext \
             && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext"
        ),
        d,
    );
    let port = TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
    std::fs::write(
        d.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {ip}:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
            d.join("storage").display(),
            d.join("srv.pem").display(),
            d.join("srv.key").display()
        ),
    )
    .unwrap();
    let _registry = Kill(
        Command::new("docker-registry").arg("serve").arg(d.join("config.yml")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "registry did not listen on {ip}:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let host = Platform::host();
    let mut l = Layout::default();
    let (m, _, _, diff) = l.image(&host.os, &host.architecture, &host.variant, &[("f", b"tls")], false);
    let archive = d.join("img.tar");
    l.write_oci_archive(&archive, &[(&m, &[])]);
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{ip}:{port}/secure:1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));

    let r = Reference::parse(&format!("{ip}:{port}/secure:1")).unwrap();
    let pull = |opts: RegistryOptions| -> Result<(), Error> {
        let reg = Registry::new(RegistryOptions { system_ca: false, ..opts });
        let root = reg.resolve(&r)?;
        let src = reg.source(&r);
        let plan = plan_import(&src, &r.to_string(), &root, &host)?;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(src.open_blob(&plan.layers[0])?).read_to_end_checked(&mut v);
        assert_eq!(sha256(&v), diff);
        Ok(())
    };
    let ca = |registry: Option<String>, file: &str| vec![CaFile { registry, path: d.join(file) }];
    // Trusted for every registry, and for this one only.
    pull(RegistryOptions { ca_files: ca(None, "ca.pem"), ..Default::default() }).unwrap();
    pull(RegistryOptions { ca_files: ca(Some(format!("{ip}:{port}")), "ca.pem"), ..Default::default() }).unwrap();
    pull(RegistryOptions { ca_files: ca(Some(ip.to_string()), "ca.pem"), ..Default::default() }).unwrap();
    // Listed as insecure: HTTPS without verification, as Docker does.
    pull(RegistryOptions { insecure_registries: vec![format!("{ip}:{port}")], ..Default::default() }).unwrap();

    // Not trusted: no CA, or a CA for another registry.
    for opts in
        [RegistryOptions::default(), RegistryOptions { ca_files: ca(Some("other.example:5000".into()), "ca.pem"), ..Default::default() }]
    {
        let err = pull(opts).unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err}");
        let s = err.to_string();
        assert!(s.contains("UnknownIssuer") && s.contains("--registry-ca"), "{s}");
    }

    let err = Registry::new(RegistryOptions { ca_files: ca(None, "ext"), ..Default::default() }).check_trust().unwrap_err();
    assert!(err.to_string().contains("holds no pem certificates"), "{err}");
}

trait ReadAll {
    fn read_to_end_checked(self, v: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadAll for R {
    fn read_to_end_checked(mut self, v: &mut Vec<u8>) {
        self.read_to_end(v).unwrap();
    }
}
