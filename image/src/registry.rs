//! Registry v2 client (blocking): resolve a reference to a root descriptor
//! and serve manifests and blobs as an [`ImageSource`].
//!
//! Transport policy: plain HTTP for loopback registries (127.0.0.0/8,
//! `localhost`, `::1`) and for those listed in `insecure_registries`;
//! everything else needs HTTPS, which this build does not have, so it fails
//! with [`Error::TlsUnsupported`]. Anonymous or basic-credential bearer
//! tokens (`WWW-Authenticate: Bearer …`) and bounded redirects are handled;
//! `Authorization` is never forwarded to another host on redirect.

use crate::digest::{self, VerifyingReader};
use crate::http::{self, HttpError, Response, Timeouts, Url};
use crate::manifest::{self, Parsed, MANIFEST_ACCEPT, MANIFEST_BYTES_MAX};
use crate::{Descriptor, Error, ImageSource, Reference};
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest error or token response body read.
const SMALL_BODY_BYTES_MAX: u64 = 64 << 10;
/// Bearer tokens kept (one per registry/repository).
const TOKEN_CACHE_MAX: usize = 256;
/// Resolved manifests kept so the first `open_blob` does not refetch.
const MANIFEST_CACHE_MAX: usize = 64;

/// Credentials for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// How to talk to registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `host[:port]` (or bare host, any port) reachable over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub connect_timeout_ms: u64,
    /// Per read on the socket (a stalled transfer fails after this long).
    pub read_timeout_ms: u64,
    /// For a whole response head, and for whole manifest, token and error
    /// bodies (blob bodies stream with the per-read bound only).
    pub request_timeout_ms: u64,
    /// Redirects followed per request.
    pub redirects_max: u32,
    /// Credentials by registry `host[:port]` as written in references.
    pub credentials: Vec<(String, Credentials)>,
    /// PEM CA certificates trusted besides the built-in roots (only with
    /// the `tls` feature; ignored otherwise).
    pub ca_files: Vec<std::path::PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            connect_timeout_ms: 5_000,
            read_timeout_ms: 30_000,
            request_timeout_ms: 60_000,
            redirects_max: 5,
            credentials: Vec::new(),
            ca_files: Vec::new(),
        }
    }
}

/// A registry client; cheap to clone (shares its token and manifest caches).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    opts: RegistryOptions,
    /// Bearer tokens by `host/repository`.
    tokens: Mutex<HashMap<String, String>>,
    /// Manifest bytes by digest.
    manifests: Mutex<HashMap<String, Arc<[u8]>>>,
    #[cfg(feature = "tls")]
    tls: std::sync::OnceLock<Result<http::TlsConfig, String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("insecure_registries", &self.inner.opts.insecure_registries).finish()
    }
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                opts,
                tokens: Mutex::default(),
                manifests: Mutex::default(),
                #[cfg(feature = "tls")]
                tls: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Resolves a reference to its root descriptor (index or manifest):
    /// media type from `Content-Type` (or the body), digest = sha256 of the
    /// body, checked against the pinned digest and `Docker-Content-Digest`.
    pub fn resolve(&self, r: &Reference) -> Result<Descriptor, Error> {
        let (desc, bytes) = self.fetch_manifest(r, r.manifest_ref())?;
        if let Some(pinned) = r.digest() {
            if pinned != desc.digest {
                return Err(Error::DigestMismatch { expected: pinned.to_string(), actual: desc.digest });
            }
        }
        self.cache_manifest(&desc.digest, bytes);
        Ok(desc)
    }

    /// An [`ImageSource`] over the reference's repository.
    pub fn source(&self, r: &Reference) -> RegistrySource {
        RegistrySource { registry: self.clone(), reference: r.clone() }
    }

    fn cache_manifest(&self, digest: &str, bytes: Arc<[u8]>) {
        let mut m = self.inner.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MANIFEST_CACHE_MAX {
            m.clear();
        }
        m.insert(digest.to_string(), bytes);
    }

    fn cached_manifest(&self, digest: &str) -> Option<Arc<[u8]>> {
        self.inner.manifests.lock().unwrap_or_else(|e| e.into_inner()).get(digest).cloned()
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.inner.opts.connect_timeout_ms.max(1)),
            read: Duration::from_millis(self.inner.opts.read_timeout_ms.max(1)),
            total: Duration::from_millis(self.inner.opts.request_timeout_ms.max(1)),
        }
    }

    fn plain_http_allowed(&self, authority: &str) -> bool {
        let host = http::split_authority(authority).map(|(h, _)| h).unwrap_or_default();
        http::is_loopback(&host)
            || self.inner.opts.insecure_registries.iter().any(|i| {
                let i = i.trim_start_matches("http://").trim_end_matches('/');
                i == authority || i == host
            })
    }

    fn base_url(&self, r: &Reference) -> Result<Url, Error> {
        let authority = r.registry_host();
        let scheme = if self.plain_http_allowed(authority) { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{authority}/")).map_err(|e| Error::Http { registry: r.domain().to_string(), reason: e })
    }

    fn credentials(&self, r: &Reference) -> Option<&Credentials> {
        self.inner.opts.credentials.iter().find(|(h, _)| h == r.domain() || h == r.registry_host()).map(|(_, c)| c)
    }

    /// GETs `/v2/<repo>/<tail>` with auth and redirects; returns the final
    /// response whatever its status.
    fn get(&self, r: &Reference, tail: &str, accept: &[&str]) -> Result<Response, Error> {
        let registry = r.domain().to_string();
        let base = self.base_url(r)?;
        let mut url = base.clone();
        url.path = format!("/v2/{}/{tail}", r.path());
        let token_key = format!("{}/{}", r.registry_host(), r.path());
        let mut auth_tried = false;
        let mut redirects = 0u32;
        loop {
            let mut headers: Vec<(&str, String)> = Vec::new();
            if !accept.is_empty() {
                headers.push(("Accept", accept.join(", ")));
            }
            let same_host = url.host == base.host && url.port == base.port;
            if same_host {
                if let Some(t) = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&token_key) {
                    headers.push(("Authorization", t.clone()));
                }
            }
            let resp = self.send("GET", &url, &headers, &registry)?;
            match resp.status {
                401 if same_host && !auth_tried => {
                    auth_tried = true;
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    let value = self.authenticate(r, &challenge, &registry)?;
                    let mut tokens = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
                    if tokens.len() >= TOKEN_CACHE_MAX {
                        tokens.clear();
                    }
                    tokens.insert(token_key.clone(), value);
                }
                301 | 302 | 303 | 307 | 308 => {
                    redirects += 1;
                    if redirects > self.inner.opts.redirects_max {
                        return Err(Error::Http { registry, reason: format!("more than {} redirects", self.inner.opts.redirects_max) });
                    }
                    let loc = resp
                        .header("location")
                        .ok_or_else(|| Error::Http {
                            registry: registry.clone(),
                            reason: format!("redirect {} without location", resp.status),
                        })?
                        .to_string();
                    url = url.join(&loc).map_err(|e| Error::Http { registry: registry.clone(), reason: e })?;
                    if !url.https && !self.plain_http_allowed(&url.authority()) && !same_host_as(&url, &base) {
                        // Plain HTTP to a non-loopback host we were not told
                        // to trust: only follow when it is the registry itself.
                        return Err(Error::Http { registry, reason: format!("refusing plain-http redirect to {}", url.authority()) });
                    }
                }
                _ => return Ok(resp),
            }
        }
    }

    fn send(&self, method: &str, url: &Url, headers: &[(&str, String)], registry: &str) -> Result<Response, Error> {
        http::send(method, url, headers, &self.timeouts(), &|| self.tls_config()).map_err(|e| match e {
            HttpError::Connect(reason) => Error::Unreachable { registry: url_registry(url, registry), reason },
            HttpError::Tls => Error::TlsUnsupported { registry: url_registry(url, registry) },
            HttpError::Protocol(reason) => Error::Http { registry: url_registry(url, registry), reason },
            HttpError::Handshake(reason) => Error::Tls { registry: url_registry(url, registry), reason },
        })
    }

    #[cfg(not(feature = "tls"))]
    fn tls_config(&self) -> Result<http::TlsConfig, HttpError> {
        Err(HttpError::Tls)
    }

    /// The rustls client configuration, built once: Mozilla's roots
    /// (webpki-roots) plus `ca_files`.
    #[cfg(feature = "tls")]
    fn tls_config(&self) -> Result<http::TlsConfig, HttpError> {
        self.inner.tls.get_or_init(|| build_tls(&self.inner.opts.ca_files)).clone().map_err(HttpError::Handshake)
    }

    /// Answers a 401 challenge: a bearer token (anonymous or with basic
    /// credentials) or basic auth. Returns the `Authorization` value.
    fn authenticate(&self, r: &Reference, challenge: &str, registry: &str) -> Result<String, Error> {
        let unauthorized =
            |message: String| Error::Unauthorized { registry: registry.to_string(), repository: r.path().to_string(), message };
        let (scheme, params) = parse_challenge(challenge);
        let creds = self.credentials(r);
        if scheme.eq_ignore_ascii_case("basic") {
            return match creds {
                Some(c) => Ok(format!("Basic {}", base64(format!("{}:{}", c.username, c.password).as_bytes()))),
                None => Err(unauthorized("basic authentication required; no credentials configured".into())),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized(format!("unsupported authentication challenge {:?}", challenge.chars().take(80).collect::<String>())));
        }
        let realm = params.get("realm").ok_or_else(|| unauthorized("bearer challenge without realm".into()))?;
        let mut realm_url = Url::parse(realm).map_err(|e| unauthorized(format!("bad token realm: {e}")))?;
        let registry_host = http::split_authority(r.registry_host()).map(|(h, _)| h).unwrap_or_default();
        if !realm_url.https && !self.plain_http_allowed(&realm_url.authority()) && realm_url.host != registry_host {
            return Err(unauthorized(format!("refusing plain-http token realm {}", realm_url.authority())));
        }
        let scope = params.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", r.path()));
        let mut query = Vec::new();
        if let Some(s) = params.get("service") {
            query.push(format!("service={}", percent_encode(s)));
        }
        query.push(format!("scope={}", percent_encode(&scope)));
        let sep = if realm_url.path.contains('?') { '&' } else { '?' };
        realm_url.path = format!("{}{sep}{}", realm_url.path, query.join("&"));
        let mut headers = Vec::new();
        if let Some(c) = creds {
            headers.push(("Authorization", format!("Basic {}", base64(format!("{}:{}", c.username, c.password).as_bytes()))));
        }
        let mut resp = self.send("GET", &realm_url, &headers, registry)?;
        let body = resp
            .read_body(SMALL_BODY_BYTES_MAX)
            .map_err(|e| Error::Http { registry: registry.to_string(), reason: format!("reading token: {e}") })?;
        if resp.status != 200 {
            return Err(unauthorized(format!("token server answered {}: {}", resp.status, error_message(&body, &resp.reason))));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| unauthorized(format!("malformed token response: {e}")))?;
        let token =
            t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| unauthorized("token response without token".into()))?;
        if token.contains(['\r', '\n']) {
            return Err(unauthorized("malformed token".into()));
        }
        Ok(format!("Bearer {token}"))
    }

    /// GETs a manifest by tag or digest: (descriptor, bytes).
    fn fetch_manifest(&self, r: &Reference, reference: &str) -> Result<(Descriptor, Arc<[u8]>), Error> {
        let registry = r.domain().to_string();
        let mut resp = self.get(r, &format!("manifests/{reference}"), &MANIFEST_ACCEPT)?;
        if resp.status != 200 {
            return Err(self.status_error(r, &mut resp, Some(reference)));
        }
        if let Some(len) = resp.header("content-length").and_then(|l| l.parse::<u64>().ok()) {
            if len > MANIFEST_BYTES_MAX {
                return Err(Error::TooLarge { what: format!("manifest {}", r.familiar()), size: len, limit: MANIFEST_BYTES_MAX });
            }
        }
        let body = resp
            .read_body(MANIFEST_BYTES_MAX)
            .map_err(|e| Error::Http { registry: registry.clone(), reason: format!("reading manifest: {e}") })?;
        let digest = digest::sha256(&body);
        if let Some(h) = resp.header("docker-content-digest") {
            if h.starts_with("sha256:") && h != digest {
                return Err(Error::DigestMismatch { expected: h.to_string(), actual: digest });
            }
        }
        let content_type = resp.header("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let media_type = media_type_of(&content_type, &body)?;
        let desc = Descriptor { media_type, digest, size: body.len() as u64, platform: None };
        Ok((desc, body.into()))
    }

    /// Maps a non-success response to an error, using the registry's error
    /// JSON when there is one.
    fn status_error(&self, r: &Reference, resp: &mut Response, manifest: Option<&str>) -> Error {
        let body = resp.read_body(SMALL_BODY_BYTES_MAX).unwrap_or_default();
        let code = error_code(&body);
        let registry = r.domain().to_string();
        match resp.status {
            404 if manifest.is_some() || code.as_deref() == Some("MANIFEST_UNKNOWN") || code.as_deref() == Some("NAME_UNKNOWN") => {
                let shown = match manifest {
                    Some(m) if m.starts_with("sha256:") => format!("{}@{m}", r.name()),
                    Some(m) => format!("{}:{m}", r.name()),
                    None => r.familiar(),
                };
                let shown = Reference::parse(&shown).map(|x| x.familiar()).unwrap_or(shown);
                Error::ManifestUnknown { reference: shown }
            }
            401 | 403 => Error::Unauthorized { registry, repository: r.path().to_string(), message: error_message(&body, &resp.reason) },
            status => Error::Registry { registry, status, message: error_message(&body, &resp.reason) },
        }
    }
}

fn same_host_as(a: &Url, b: &Url) -> bool {
    a.host == b.host && a.port == b.port
}

fn url_registry(url: &Url, registry: &str) -> String {
    let a = url.authority();
    if registry == a || (registry == "docker.io" && a == "registry-1.docker.io") {
        registry.to_string()
    } else if url.https {
        a
    } else {
        format!("{registry} (via {a})")
    }
}

/// The media type of a fetched manifest: the `Content-Type` when it names a
/// manifest type, else the body's `mediaType`, else its shape.
fn media_type_of(content_type: &str, body: &[u8]) -> Result<String, Error> {
    if MANIFEST_ACCEPT.contains(&content_type) {
        manifest::parse_any(content_type, body)?;
        return Ok(content_type.to_string());
    }
    if content_type == manifest::DOCKER_SCHEMA1 || content_type == manifest::DOCKER_SCHEMA1_SIGNED {
        return Err(manifest::parse_any(content_type, body).err().unwrap_or_else(|| Error::Other("schema1".into())));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        #[serde(default)]
        media_type: Option<String>,
    }
    if let Ok(Sniff { media_type: Some(t) }) = serde_json::from_slice::<Sniff>(body) {
        if MANIFEST_ACCEPT.contains(&t.as_str()) {
            manifest::parse_any(&t, body)?;
            return Ok(t);
        }
    }
    Ok(match manifest::parse_any("", body)? {
        Parsed::Index(_) => manifest::OCI_INDEX.to_string(),
        Parsed::Manifest(_) => manifest::OCI_MANIFEST.to_string(),
    })
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body).ok()?.errors.into_iter().next().map(|e| e.code)
}

/// `CODE: message` from the registry's error JSON, else the reason phrase.
fn error_message(body: &[u8], reason: &str) -> String {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        if let Some(e) = b.errors.into_iter().next() {
            let msg = match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code.to_lowercase(), e.message),
                (false, true) => e.code.to_lowercase(),
                _ => e.message,
            };
            return msg.chars().take(300).collect();
        }
    }
    let reason = reason.trim().to_lowercase();
    if reason.is_empty() {
        "no details".into()
    } else {
        reason
    }
}

/// Parses `Scheme k="v", k2=v2`.
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = rest[start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch_len = rest[i..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&rest[i..i + ch_len]);
                i += ch_len;
            }
            i += 1;
        } else {
            let s = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            value = rest[s..i].trim().to_string();
        }
        if !key.is_empty() {
            params.insert(key, value);
        }
    }
    (scheme.to_string(), params)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Largest CA file read.
#[cfg(feature = "tls")]
const CA_FILE_BYTES_MAX: u64 = 4 << 20;

#[cfg(feature = "tls")]
fn build_tls(ca_files: &[std::path::PathBuf]) -> Result<http::TlsConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for f in ca_files {
        let shown = f.display();
        let mut bytes = Vec::new();
        std::fs::File::open(f)
            .and_then(|file| file.take(CA_FILE_BYTES_MAX + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("reading ca file {shown}: {e}"))?;
        if bytes.len() as u64 > CA_FILE_BYTES_MAX {
            return Err(format!("ca file {shown} is over {CA_FILE_BYTES_MAX} bytes"));
        }
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| format!("ca file {shown}: {e}"))?;
            roots.add(cert).map_err(|e| format!("ca file {shown}: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("ca file {shown} holds no pem certificates"));
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Blobs and manifests of one repository, over the registry API.
#[derive(Clone, Debug)]
pub struct RegistrySource {
    registry: Registry,
    reference: Reference,
}

impl RegistrySource {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

impl ImageSource for RegistrySource {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>, Error> {
        digest::validate(&desc.digest)?;
        let r = &self.reference;
        if manifest::is_index(&desc.media_type) || manifest::is_manifest(&desc.media_type) {
            let bytes = match self.registry.cached_manifest(&desc.digest) {
                Some(b) => b,
                None => {
                    let (got, bytes) = self.registry.fetch_manifest(r, &desc.digest)?;
                    if got.digest != desc.digest {
                        return Err(Error::DigestMismatch { expected: desc.digest.clone(), actual: got.digest });
                    }
                    bytes
                }
            };
            return Ok(Box::new(Cursor::new(bytes)));
        }
        let mut resp = self.registry.get(r, &format!("blobs/{}", desc.digest), &[])?;
        match resp.status {
            200 => {}
            404 => {
                return Err(Error::BlobNotFound { digest: desc.digest.clone(), source_name: format!("registry {}", r.name()) });
            }
            _ => return Err(self.registry.status_error(r, &mut resp, None)),
        }
        if let Some(len) = resp.header("content-length").and_then(|l| l.parse::<u64>().ok()) {
            if len != desc.size {
                return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: len });
            }
        }
        Ok(Box::new(VerifyingReader::new(resp.body, desc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="x \"y\"", charset=UTF-8"#);
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], r#"x "y""#);
        assert_eq!(p["charset"], "UTF-8");
        let (_, p) = parse_challenge("Bearer realm=\"unterminated");
        assert_eq!(p["realm"], "unterminated");
        let _ = parse_challenge("Bearer ===,,,\"é\"=\"");
    }

    #[test]
    fn encodes() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(percent_encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn transport_policy() {
        let reg =
            Registry::new(RegistryOptions { insecure_registries: vec!["10.0.0.5:5000".into(), "myreg.lan".into()], ..Default::default() });
        assert!(reg.plain_http_allowed("127.0.0.1:5000"));
        assert!(reg.plain_http_allowed("localhost"));
        assert!(reg.plain_http_allowed("[::1]:5000"));
        assert!(reg.plain_http_allowed("10.0.0.5:5000"));
        assert!(!reg.plain_http_allowed("10.0.0.5:6000"));
        assert!(reg.plain_http_allowed("myreg.lan:443"));
        assert!(!reg.plain_http_allowed("ghcr.io"));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_needs_the_tls_feature() {
        let reg = Registry::new(RegistryOptions::default());
        let err = reg.resolve(&Reference::parse("busybox").unwrap()).unwrap_err();
        assert!(matches!(err, Error::TlsUnsupported { .. }), "{err}");
        assert_eq!(err.to_string(), "this shoal build has no TLS support; use a registry on loopback or --insecure-registry docker.io");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#, "Not Found"),
            "manifest_unknown: manifest unknown"
        );
        assert_eq!(error_message(b"<html>", "Bad Gateway"), "bad gateway");
    }

    proptest::proptest! {
        #[test]
        fn challenges_never_panic(s in ".{0,120}") {
            let _ = parse_challenge(&s);
        }

        #[test]
        fn base64_length(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(base64(&b).len(), b.len().div_ceil(3) * 4);
        }
    }
}
