//! Whom the registry client trusts over HTTPS (only with the `tls` feature,
//! on in every shipped binary): rustls with the pure-Rust RustCrypto
//! provider, no C code.
//!
//! Roots, in this order and all at once: Mozilla's (`webpki-roots`, compiled
//! in: devices often have no CA store), the system's CA bundle (the file in
//! `SSL_CERT_FILE`, else the first of [`SYSTEM_CA_FILES`] that exists;
//! unparsable entries in it are skipped), then the operator's CA files
//! (`shoal daemon --registry-ca [HOST[:PORT]=]FILE`): one without a registry
//! is trusted for every registry, one with a registry only for it. Registries
//! that may speak plain HTTP (loopback, `--insecure-registry`) are spoken to
//! over HTTPS first without verifying their certificate, as Docker does
//! (registry.rs decides when); the handshake itself is still checked.
//!
//! Everything is loaded once, when the client is built ([`Trust::load`]), so
//! a bad CA file fails the daemon's start rather than its first pull.

use crate::http::TlsConfig;
use crate::registry::CaFile;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest CA file read (a system bundle is about 200 KB).
const CA_FILE_BYTES_MAX: u64 = 4 << 20;
/// Where distributions keep their CA bundle (Debian/Ubuntu/Alpine's
/// ca-certificates, Fedora/RHEL, openSUSE, Alpine/OpenWrt's cert.pem).
pub(crate) const SYSTEM_CA_FILES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem"];

/// The loaded client configurations.
pub(crate) struct Trust {
    /// Every registry: Mozilla's roots, the system's, and the global CA files.
    global: TlsConfig,
    /// Registries with CA files of their own (`host[:port]` as given).
    per_registry: Vec<(String, TlsConfig)>,
    /// Loopback and insecure registries: any certificate.
    unverified: TlsConfig,
    /// Where the system roots came from, if anywhere (for `shoal info`).
    pub(crate) system_file: Option<PathBuf>,
}

/// The key provider of a client that presents no certificate.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General("client certificates are not supported".into()))
    }
}

impl Trust {
    /// Loads every root. `system_ca`: also read the system's bundle.
    pub(crate) fn load(ca_files: &[CaFile], system_ca: bool) -> Result<Trust, String> {
        // A registry client never signs (no client certificates): without the provider's
        // key loader, the RSA, ECDSA and Ed25519 signing code is not linked in.
        let provider = Arc::new(rustls::crypto::CryptoProvider { key_provider: &NoClientKeys, ..rustls_rustcrypto::provider() });
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut system_file = None;
        if system_ca {
            if let Some(path) = system_bundle() {
                // A distribution's bundle may hold certificates rustls cannot
                // parse (old or odd ones): those are skipped, not fatal.
                if let Ok(bytes) = read_bounded(&path) {
                    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added > 0 {
                        system_file = Some(path);
                    }
                }
            }
        }
        for f in ca_files.iter().filter(|f| f.registry.is_none()) {
            add_file(&mut roots, &f.path)?;
        }
        let config = |roots: RootCertStore| -> Result<TlsConfig, String> {
            Ok(Arc::new(
                rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        };
        let mut per_registry: Vec<(String, RootCertStore)> = Vec::new();
        for f in ca_files {
            let Some(r) = &f.registry else { continue };
            let i = match per_registry.iter().position(|(x, _)| x == r) {
                Some(i) => i,
                None => {
                    per_registry.push((r.clone(), roots.clone()));
                    per_registry.len() - 1
                }
            };
            add_file(&mut per_registry[i].1, &f.path)?;
        }
        let per_registry = per_registry.into_iter().map(|(r, roots)| Ok((r, config(roots)?))).collect::<Result<Vec<_>, String>>()?;
        let unverified = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
                .with_no_client_auth(),
        );
        Ok(Trust { global: config(roots)?, per_registry, unverified, system_file })
    }

    /// The configuration for `host` (port `port`); `verify: false` for a
    /// registry that may speak plain HTTP.
    pub(crate) fn config_for(&self, host: &str, port: u16, verify: bool) -> TlsConfig {
        if !verify {
            return self.unverified.clone();
        }
        let with_port = format!("{host}:{port}");
        let bracketed = format!("[{host}]:{port}");
        self.per_registry
            .iter()
            .find(|(r, _)| *r == with_port || *r == bracketed || *r == host || r.trim_matches(['[', ']']) == host)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| self.global.clone())
    }
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first known file.
pub(crate) fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        // Set but missing: no system roots (not the distribution's instead).
        return Some(PathBuf::from(f)).filter(|p| p.is_file());
    }
    SYSTEM_CA_FILES.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(CA_FILE_BYTES_MAX + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("reading ca file {shown}: {e}"))?;
    if bytes.len() as u64 > CA_FILE_BYTES_MAX {
        return Err(format!("ca file {shown} is over {CA_FILE_BYTES_MAX} bytes"));
    }
    Ok(bytes)
}

/// Adds every certificate of an operator's PEM file; any bad one fails.
fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let bytes = read_bounded(path)?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("ca file {shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("ca file {shown}: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("ca file {shown} holds no pem certificates"));
    }
    Ok(())
}

/// Accepts any certificate chain (for registries that may speak plain HTTP:
/// their traffic could as well be unencrypted), still checking that the
/// handshake is signed by the certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake failure as the operator should read it: what rustls said,
/// and for the failures with a usual cause, what to do.
pub(crate) fn explain(e: &std::io::Error, now_unix_s: u64) -> String {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "handshake timed out".to_string(),
            _ => e.to_string(),
        };
    };
    let hint = match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            " (signed by an authority this node does not trust: give its CA with `shoal daemon --registry-ca REGISTRY=FILE`, or add it to the system's CA bundle)"
                .to_string()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. })
        | rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            format!(" (this node's clock reads {}: if that is wrong, set it, e.g. with NTP; a device without a real-time clock starts in 1970)", shoal_shared::clock::rfc3339(now_unix_s))
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion | rustls::AlertDescription::HandshakeFailure)
        | rustls::Error::PeerIncompatible(_)
            if !cfg!(feature = "tls12") =>
        {
            " (this binary speaks TLS 1.3 only: the mips64le build leaves TLS 1.2 out to stay under 5 MiB, and this registry may speak only 1.2; \
             reach it through a TLS 1.3 mirror (`shoal daemon --registry-mirror`) or a node of another architecture)"
                .to_string()
        }
        _ => String::new(),
    };
    format!("{err}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("shoal-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = Trust::load(&[CaFile { registry: None, path: junk.clone() }], false).err().unwrap();
        assert!(e.contains("holds no pem certificates"), "{e}");
        let e = Trust::load(&[CaFile { registry: Some("r:1".into()), path: dir.join("missing.pem") }], false).err().unwrap();
        assert!(e.starts_with("reading ca file") && e.contains("missing.pem"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn explains_clock_and_issuer_failures() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let s = explain(&io(rustls::Error::InvalidCertificate(CertificateError::NotValidYet)), 5);
        assert!(s.contains("clock reads 1970-01-01T00:00:05Z"), "{s}");
        let s = explain(&io(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)), 5);
        assert!(s.contains("--registry-ca"), "{s}");
        let s = explain(&std::io::Error::from(std::io::ErrorKind::TimedOut), 5);
        assert_eq!(s, "handshake timed out");
        // A registry that speaks only TLS 1.2, met by a 1.3-only build (mips64le).
        let s = explain(&io(rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)), 5);
        assert_eq!(s.contains("speaks TLS 1.3 only"), !cfg!(feature = "tls12"), "{s}");
    }
}
