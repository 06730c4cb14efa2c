//! Registry v2 client (blocking): resolve a reference to a root descriptor
//! and serve manifests and blobs as an [`ImageSource`].
//!
//! Transport policy: HTTPS, verified against the roots of tls.rs. Loopback
//! registries (127.0.0.0/8, `localhost`, `::1`) and those listed in
//! `insecure_registries` are tried over HTTPS first, without verifying the
//! certificate, and spoken to over plain HTTP when that fails (as Docker
//! does; the answer is kept per registry for the client's life). Without
//! the `tls` feature, HTTPS fails with [`Error::TlsUnsupported`]. Anonymous or basic-credential bearer
//! tokens (`WWW-Authenticate: Bearer …`) and bounded redirects are handled;
//! `Authorization` is never forwarded to another host on redirect.

use crate::digest::{self, VerifyingReader};
use crate::http::{self, HttpError, Response, Timeouts, Url};
use crate::manifest::{self, Parsed, MANIFEST_ACCEPT, MANIFEST_BYTES_MAX};
use crate::{Descriptor, Error, ImageSource, Reference};
use std::collections::HashMap;
use std::io::{self, Cursor, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest error or token response body read.
const SMALL_BODY_BYTES_MAX: u64 = 64 << 10;
/// Bearer tokens kept (one per registry/repository).
const TOKEN_CACHE_MAX: usize = 256;
/// Resolved manifests kept so the first `open_blob` does not refetch.
const MANIFEST_CACHE_MAX: usize = 64;
/// Times a blob download that broke off is resumed (a `Range` request from
/// the bytes already read) before the pull fails.
pub const BLOB_RESUMES_MAX: u32 = 8;
/// Wait before the first resume; doubled each time up to [`RESUME_BACKOFF_MAX_MS`].
const RESUME_BACKOFF_MS: u64 = 250;
const RESUME_BACKOFF_MAX_MS: u64 = 8_000;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The swarm's form of the same credentials (replicated with a service,
/// sent over the links): one conversion, not one per caller.
impl From<&shoal_shared::types::RegistryAuth> for Credentials {
    fn from(a: &shoal_shared::types::RegistryAuth) -> Credentials {
        Credentials { username: a.username.clone(), password: a.password.clone() }
    }
}

impl std::fmt::Debug for Credentials {
    /// The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// A CA file given by the operator, for one registry or (`registry: None`) all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFile {
    /// `host[:port]` as written in image references; `None`: every registry.
    pub registry: Option<String>,
    pub path: PathBuf,
}

impl CaFile {
    /// Parses `[HOST[:PORT]=]FILE`.
    pub fn parse(s: &str) -> Result<CaFile, String> {
        let (registry, path) = match s.split_once('=') {
            Some((r, p)) => {
                let r = r.trim();
                if r.is_empty() || r.contains(['/', ' ']) {
                    return Err(format!("invalid registry {r:?} in {s:?}: expected HOST[:PORT]=FILE"));
                }
                (Some(r.to_string()), p)
            }
            None => (None, s),
        };
        if path.is_empty() {
            return Err(format!("no file in {s:?}: expected [HOST[:PORT]=]FILE"));
        }
        Ok(CaFile { registry, path: PathBuf::from(path) })
    }
}

/// A registry mirror (`--registry-mirror [HOST[:PORT]=]URL`): pull-through
/// caches or copies asked before the registry they serve, Docker Hub when
/// `registry` is `None` (Docker's own flag serves Docker Hub only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port]` as written in references; `None`: Docker Hub.
    pub registry: Option<String>,
    /// `http(s)://host[:port]` (no path).
    pub url: String,
}

impl Mirror {
    /// Parses `[HOST[:PORT]=]URL`.
    pub fn parse(s: &str) -> Result<Mirror, String> {
        let (registry, url) = match s.split_once('=') {
            Some((r, u)) if !r.contains("://") => {
                let r = r.trim();
                if r.is_empty() || r.contains(['/', ' ']) {
                    return Err(format!("invalid registry {r:?} in {s:?}: expected [HOST[:PORT]=]URL"));
                }
                (Some(r.to_string()), u.trim())
            }
            _ => (None, s.trim()),
        };
        let parsed = Url::parse(url).map_err(|e| format!("invalid mirror url {url:?}: {e}"))?;
        if parsed.path != "/" || url.contains('?') {
            return Err(format!("invalid mirror url {url:?}: give only http(s)://host[:port], without a path"));
        }
        Ok(Mirror { registry, url: format!("{}://{}", if parsed.https { "https" } else { "http" }, parsed.authority()) })
    }

    /// Whether it serves images of `domain` (a reference's registry).
    fn serves(&self, domain: &str) -> bool {
        match &self.registry {
            Some(r) => r == domain,
            None => domain == crate::reference::DEFAULT_DOMAIN,
        }
    }
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
    /// PEM CA certificates trusted besides the built-in and system roots,
    /// for every registry or one (only with the `tls` feature; see tls.rs).
    pub ca_files: Vec<CaFile>,
    /// Mirrors asked before the registries they serve (`--registry-mirror`).
    pub mirrors: Vec<Mirror>,
    /// Times a broken blob download is resumed within one pull (at most
    /// [`BLOB_RESUMES_MAX`]).
    pub blob_resumes_max: u32,
    /// Also trust the system's CA bundle (`SSL_CERT_FILE` or the
    /// distribution's file).
    pub system_ca: bool,
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
            mirrors: Vec::new(),
            blob_resumes_max: BLOB_RESUMES_MAX,
            system_ca: true,
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
    trust: std::sync::OnceLock<Result<crate::tls::Trust, String>>,
    /// Registries that may speak plain HTTP: does this one speak HTTPS?
    /// (`host[:port]` → answer; bounded by [`SCHEMES_MAX`]).
    schemes: Mutex<HashMap<String, bool>>,
}

/// Plain-capable registries whose scheme is remembered.
const SCHEMES_MAX: usize = 256;
/// Bound on the HTTPS probe of a plain-capable registry: a plain HTTP server
/// that waits for more of a TLS hello must not hold a pull for long.
const PROBE_READ_MS: u64 = 3_000;

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
                trust: std::sync::OnceLock::new(),
                schemes: Mutex::default(),
            }),
        }
    }

    /// Resolves a reference to its root descriptor (index or manifest):
    /// media type from `Content-Type` (or the body), digest = sha256 of the
    /// body, checked against the pinned digest and `Docker-Content-Digest`.
    pub fn resolve(&self, r: &Reference) -> Result<Descriptor, Error> {
        self.resolve_with(r, None)
    }

    /// [`Registry::resolve`] with these credentials for the reference's
    /// registry (a pull's own, e.g. from `shoal login`) instead of the
    /// configured ones.
    pub fn resolve_with(&self, r: &Reference, creds: Option<&Credentials>) -> Result<Descriptor, Error> {
        let (desc, bytes) = self.fetch_manifest(r, r.manifest_ref(), creds)?;
        if let Some(pinned) = r.digest() {
            if pinned != desc.digest {
                return Err(Error::DigestMismatch { expected: pinned.to_string(), actual: desc.digest });
            }
        }
        self.cache_manifest(&desc.digest, bytes);
        Ok(desc)
    }

    /// A manifest or index of `r`'s repository by `digest` (checked), with
    /// its media type: what a manager's blob cache serves the swarm
    /// (kept in memory like a resolved one).
    pub fn manifest_by_digest(&self, r: &Reference, digest: &str, creds: Option<&Credentials>) -> Result<(Descriptor, Arc<[u8]>), Error> {
        digest::validate(digest)?;
        let (desc, bytes) = self.fetch_manifest(r, digest, creds)?;
        if desc.digest != digest {
            return Err(Error::DigestMismatch { expected: digest.to_string(), actual: desc.digest });
        }
        self.cache_manifest(&desc.digest, bytes.clone());
        Ok((desc, bytes))
    }

    /// An [`ImageSource`] over the reference's repository.
    pub fn source(&self, r: &Reference) -> RegistrySource {
        self.source_with(r, None)
    }

    /// [`Registry::source`] with a pull's own credentials.
    pub fn source_with(&self, r: &Reference, creds: Option<&Credentials>) -> RegistrySource {
        RegistrySource { registry: self.clone(), reference: r.clone(), creds: creds.cloned() }
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
        let scheme = if self.plain_http_allowed(authority) && !self.speaks_https(authority) { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{authority}/")).map_err(|e| Error::Http { registry: r.domain().to_string(), reason: e })
    }

    /// For a registry that may speak plain HTTP: whether it answers over
    /// HTTPS (any HTTP status to `GET /v2/` counts). Remembered once known;
    /// an unreachable registry is not (the plain attempt then says why).
    fn speaks_https(&self, authority: &str) -> bool {
        if !cfg!(feature = "tls") {
            return false;
        }
        if let Some(&known) = self.inner.schemes.lock().unwrap_or_else(|e| e.into_inner()).get(authority) {
            return known;
        }
        let Ok(url) = Url::parse(&format!("https://{authority}/v2/")) else { return false };
        let mut t = self.timeouts();
        t.read = t.read.min(Duration::from_millis(PROBE_READ_MS));
        t.total = t.total.min(Duration::from_millis(PROBE_READ_MS * 2));
        let https = match http::send("GET", &url, &[], &t, &|u| self.tls_config(u)) {
            Ok(_) => true,
            Err(HttpError::Connect(_)) => return false,
            Err(_) => false,
        };
        let mut schemes = self.inner.schemes.lock().unwrap_or_else(|e| e.into_inner());
        if schemes.len() >= SCHEMES_MAX {
            schemes.clear();
        }
        schemes.insert(authority.to_string(), https);
        https
    }

    fn credentials<'a>(&'a self, r: &Reference, given: Option<&'a Credentials>) -> Option<&'a Credentials> {
        if given.is_some() {
            return given;
        }
        self.inner.opts.credentials.iter().find(|(h, _)| h == r.domain() || h == r.registry_host()).map(|(_, c)| c)
    }

    /// GETs `/v2/<repo>/<tail>` with auth and redirects; returns the final
    /// response whatever its status.
    fn get(&self, r: &Reference, tail: &str, accept: &[&str], creds: Option<&Credentials>) -> Result<Response, Error> {
        self.get_with(r, tail, accept, &[], creds)
    }

    /// [`Registry::get`] with extra request headers (a `Range`).
    /// The registry's mirrors (`--registry-mirror`) are asked first, without
    /// the registry's credentials; any failure or non-2xx answer of a mirror
    /// falls through to the next, and the registry's own answer is final.
    fn get_with(
        &self,
        r: &Reference,
        tail: &str,
        accept: &[&str],
        extra: &[(&str, String)],
        creds: Option<&Credentials>,
    ) -> Result<Response, Error> {
        for m in self.inner.opts.mirrors.iter().filter(|m| m.serves(r.domain())) {
            let Ok(base) = Url::parse(&format!("{}/", m.url.trim_end_matches('/'))) else { continue };
            if let Ok(resp) = self.get_at(r, &base, true, tail, accept, extra, None) {
                if resp.status / 100 == 2 {
                    return Ok(resp);
                }
            }
        }
        let base = self.base_url(r)?;
        self.get_at(r, &base, false, tail, accept, extra, creds)
    }

    /// One endpoint's answer (`base`: the registry, or a mirror of it when
    /// `mirror`, which never gets the registry's credentials), with auth
    /// challenges answered and redirects followed.
    #[allow(clippy::too_many_arguments)] // one request's whole context
    fn get_at(
        &self,
        r: &Reference,
        base: &Url,
        mirror: bool,
        tail: &str,
        accept: &[&str],
        extra: &[(&str, String)],
        creds: Option<&Credentials>,
    ) -> Result<Response, Error> {
        let registry = r.domain().to_string();
        let base = base.clone();
        let mut url = base.clone();
        url.path = format!("/v2/{}/{tail}", r.path());
        // Tokens got with other credentials (or from another endpoint) are not reused.
        let creds = if mirror { None } else { self.credentials(r, creds) };
        let token_key = match creds {
            Some(c) => format!("{}/{}#{}", base.authority(), r.path(), c.username),
            None => format!("{}/{}", base.authority(), r.path()),
        };
        let mut auth_tried = false;
        let mut redirects = 0u32;
        loop {
            let mut headers: Vec<(&str, String)> = extra.to_vec();
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
                    let value = self.authenticate(r, &base.authority(), &challenge, &registry, creds)?;
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
        http::send(method, url, headers, &self.timeouts(), &|u| self.tls_config(u)).map_err(|e| match e {
            HttpError::Connect(reason) => Error::Unreachable { registry: url_registry(url, registry), reason },
            HttpError::Tls => Error::TlsUnsupported { registry: url_registry(url, registry) },
            HttpError::Protocol(reason) => Error::Http { registry: url_registry(url, registry), reason },
            HttpError::Handshake(reason) => Error::Tls { registry: url_registry(url, registry), reason },
        })
    }

    #[cfg(not(feature = "tls"))]
    fn tls_config(&self, _: &Url) -> Result<http::TlsConfig, HttpError> {
        Err(HttpError::Tls)
    }

    /// The rustls configuration for `url`: unverified for registries that may
    /// speak plain HTTP, else the registry's own roots or the global ones.
    #[cfg(feature = "tls")]
    fn tls_config(&self, url: &Url) -> Result<http::TlsConfig, HttpError> {
        let trust = self.trust().map_err(HttpError::Handshake)?;
        Ok(trust.config_for(&url.host, url.port, !self.plain_http_allowed(&url.authority())))
    }

    #[cfg(feature = "tls")]
    fn trust(&self) -> Result<&crate::tls::Trust, String> {
        self.inner
            .trust
            .get_or_init(|| crate::tls::Trust::load(&self.inner.opts.ca_files, self.inner.opts.system_ca))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Loads the CA files now (they are otherwise loaded at the first HTTPS
    /// request), so that a bad one is reported at start. Returns the system
    /// bundle in use, if any.
    pub fn check_trust(&self) -> Result<Option<std::path::PathBuf>, Error> {
        #[cfg(feature = "tls")]
        {
            self.trust().map(|t| t.system_file.clone()).map_err(Error::Other)
        }
        #[cfg(not(feature = "tls"))]
        {
            Ok(None)
        }
    }

    /// Answers a 401 challenge: a bearer token (anonymous or with basic
    /// credentials) or basic auth. Returns the `Authorization` value.
    fn authenticate(
        &self,
        r: &Reference,
        endpoint: &str,
        challenge: &str,
        registry: &str,
        given: Option<&Credentials>,
    ) -> Result<String, Error> {
        let unauthorized =
            |message: String| Error::Unauthorized { registry: registry.to_string(), repository: r.path().to_string(), message };
        let (scheme, params) = parse_challenge(challenge);
        let creds = self.credentials(r, given);
        if scheme.eq_ignore_ascii_case("basic") {
            return match creds {
                Some(c) => Ok(basic(c)),
                None => Err(unauthorized(format!("no credentials for this registry: log in with `shoal login {}` (a service: create or update it with --with-registry-auth)", r.domain()))),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized(format!("unsupported authentication challenge {:?}", challenge.chars().take(80).collect::<String>())));
        }
        let scope = params.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", r.path()));
        self.bearer_token(endpoint, &params, Some(&scope), creds, registry, &unauthorized)
    }

    /// A token from a bearer challenge's realm, for `scope` (none: just
    /// proving the credentials, as a login does).
    fn bearer_token(
        &self,
        registry_authority: &str,
        params: &HashMap<String, String>,
        scope: Option<&str>,
        creds: Option<&Credentials>,
        registry: &str,
        unauthorized: &dyn Fn(String) -> Error,
    ) -> Result<String, Error> {
        let realm = params.get("realm").ok_or_else(|| unauthorized("bearer challenge without realm".into()))?;
        let mut realm_url = Url::parse(realm).map_err(|e| unauthorized(format!("bad token realm: {e}")))?;
        let registry_host = http::split_authority(registry_authority).map(|(h, _)| h).unwrap_or_default();
        if !realm_url.https && !self.plain_http_allowed(&realm_url.authority()) && realm_url.host != registry_host {
            return Err(unauthorized(format!("refusing plain-http token realm {}", realm_url.authority())));
        }
        let mut query = Vec::new();
        if let Some(s) = params.get("service") {
            query.push(format!("service={}", percent_encode(s)));
        }
        if let Some(scope) = scope {
            query.push(format!("scope={}", percent_encode(scope)));
        }
        if let Some(c) = creds {
            query.push(format!("account={}", percent_encode(&c.username)));
        }
        if !query.is_empty() {
            let sep = if realm_url.path.contains('?') { '&' } else { '?' };
            realm_url.path = format!("{}{sep}{}", realm_url.path, query.join("&"));
        }
        let mut headers = Vec::new();
        if let Some(c) = creds {
            headers.push(("Authorization", basic(c)));
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

    /// Checks credentials as `docker login` does: `GET /v2/`, and when the
    /// registry challenges, its answer with them (basic auth, or a bearer
    /// token for no scope). `registry` is `host[:port]` (`docker.io` for
    /// Docker Hub). A registry that asks for no credentials accepts any.
    pub fn login(&self, registry: &str, creds: &Credentials) -> Result<(), Error> {
        let r = Reference::parse(&format!("{registry}/shoal-login"))
            .map_err(|e| Error::Other(format!("invalid registry {registry:?}: {e}")))?;
        let name = r.domain().to_string();
        let mut url = self.base_url(&r)?;
        url.path = "/v2/".into();
        let unauthorized = |message: String| Error::LoginRefused { registry: name.clone(), message };
        let mut resp = self.send("GET", &url, &[], &name)?;
        if resp.status == 200 {
            return Ok(());
        }
        if resp.status != 401 {
            return Err(self.status_error(&r, &mut resp, None));
        }
        let (scheme, params) = parse_challenge(resp.header("www-authenticate").unwrap_or(""));
        if scheme.eq_ignore_ascii_case("basic") {
            let mut again = self.send("GET", &url, &[("Authorization", basic(creds))], &name)?;
            return match again.status {
                200 => Ok(()),
                401 => Err(unauthorized("incorrect username or password".into())),
                _ => Err(self.status_error(&r, &mut again, None)),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized(format!("unsupported authentication scheme {scheme:?}")));
        }
        self.bearer_token(r.registry_host(), &params, None, Some(creds), &name, &|m: String| {
            if m.starts_with("token server answered 401") {
                unauthorized("incorrect username or password".into())
            } else {
                unauthorized(m)
            }
        })
        .map(|_| ())
    }

    /// GETs a manifest by tag or digest: (descriptor, bytes).
    fn fetch_manifest(&self, r: &Reference, reference: &str, creds: Option<&Credentials>) -> Result<(Descriptor, Arc<[u8]>), Error> {
        let registry = r.domain().to_string();
        let mut resp = self.get(r, &format!("manifests/{reference}"), &MANIFEST_ACCEPT, creds)?;
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

/// An `Authorization` value for basic auth.
fn basic(c: &Credentials) -> String {
    format!("Basic {}", base64(format!("{}:{}", c.username, c.password).as_bytes()))
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

/// Blobs and manifests of one repository, over the registry API.
#[derive(Clone, Debug)]
pub struct RegistrySource {
    registry: Registry,
    reference: Reference,
    /// The pull's own credentials, if any.
    creds: Option<Credentials>,
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
                    let (got, bytes) = self.registry.fetch_manifest(r, &desc.digest, self.creds.as_ref())?;
                    if got.digest != desc.digest {
                        return Err(Error::DigestMismatch { expected: desc.digest.clone(), actual: got.digest });
                    }
                    bytes
                }
            };
            return Ok(Box::new(Cursor::new(bytes)));
        }
        Ok(Box::new(VerifyingReader::new(self.resuming(desc, 0)?, desc)))
    }

    /// A `Range` request from `offset`, resumed on breaks like `open_blob`'s;
    /// bounded to the blob's size, not verified (the writer that holds the
    /// first `offset` bytes does that).
    fn open_blob_at(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>, Error> {
        digest::validate(&desc.digest)?;
        if offset == 0 {
            return self.open_blob(desc);
        }
        if offset > desc.size || manifest::is_index(&desc.media_type) || manifest::is_manifest(&desc.media_type) {
            return Err(Error::Other(format!("cannot resume {} at byte {offset}", desc.digest)));
        }
        let left = desc.size - offset;
        Ok(Box::new(self.resuming(desc, offset)?.take(left)))
    }
}

impl RegistrySource {
    fn resuming(&self, desc: &Descriptor, offset: u64) -> Result<Resuming, Error> {
        Ok(Resuming {
            source: self.clone(),
            desc: desc.clone(),
            inner: self.blob_from(desc, offset)?,
            offset,
            resumes: 0,
            backoff_ms: RESUME_BACKOFF_MS,
            sleep: std::thread::sleep,
        })
    }

    /// The blob's bytes from `offset` on: a `Range` request past 0; a
    /// registry that ignores it (200) has the first `offset` bytes skipped.
    fn blob_from(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send>, Error> {
        let r = &self.reference;
        let range = [("Range", format!("bytes={offset}-"))];
        let extra: &[(&str, String)] = if offset > 0 { &range } else { &[] };
        let mut resp = self.registry.get_with(r, &format!("blobs/{}", desc.digest), &[], extra, self.creds.as_ref())?;
        let left = desc.size.saturating_sub(offset);
        match resp.status {
            200 => {
                if let Some(len) = resp.header("content-length").and_then(|l| l.parse::<u64>().ok()) {
                    if len != desc.size {
                        return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: len });
                    }
                }
                if offset > 0 {
                    let skipped = io::copy(&mut (&mut resp.body).take(offset), &mut io::sink())
                        .map_err(|e| Error::Http { registry: r.domain().to_string(), reason: format!("resuming {}: {e}", desc.digest) })?;
                    if skipped != offset {
                        return Err(Error::Http {
                            registry: r.domain().to_string(),
                            reason: format!("resuming {}: short body", desc.digest),
                        });
                    }
                }
            }
            206 if offset > 0 => {
                // `Content-Range: bytes FIRST-LAST/TOTAL` must start where we are.
                let first = resp
                    .header("content-range")
                    .and_then(|v| v.trim().strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if first != Some(offset) {
                    return Err(Error::Http {
                        registry: r.domain().to_string(),
                        reason: format!("resuming {} at byte {offset}: the registry answered another range", desc.digest),
                    });
                }
                if let Some(len) = resp.header("content-length").and_then(|l| l.parse::<u64>().ok()) {
                    if len != left {
                        return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: offset + len });
                    }
                }
            }
            404 => {
                return Err(Error::BlobNotFound { digest: desc.digest.clone(), source_name: format!("registry {}", r.name()) });
            }
            _ => return Err(self.registry.status_error(r, &mut resp, None)),
        }
        Ok(resp.body)
    }
}

/// A registry blob's body that survives a broken connection: a read error
/// or an early end is answered by asking again from the bytes already read
/// (`Range`), up to [`BLOB_RESUMES_MAX`] times with a doubling wait. What it
/// yields is one continuous stream, so the [`VerifyingReader`] around it
/// still checks the whole blob's size and digest.
struct Resuming {
    source: RegistrySource,
    desc: Descriptor,
    inner: Box<dyn Read + Send>,
    offset: u64,
    resumes: u32,
    backoff_ms: u64,
    sleep: fn(Duration),
}

impl Read for Resuming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let err = match self.inner.read(buf) {
                Ok(0) if self.offset < self.desc.size => {
                    io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed at byte {} of {}", self.offset, self.desc.size))
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            loop {
                if self.resumes >= self.source.registry.inner.opts.blob_resumes_max.min(BLOB_RESUMES_MAX) {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{err} (gave up after resuming {} times at byte {} of {})", self.resumes, self.offset, self.desc.size),
                    ));
                }
                self.resumes += 1;
                (self.sleep)(Duration::from_millis(self.backoff_ms));
                self.backoff_ms = (self.backoff_ms * 2).min(RESUME_BACKOFF_MAX_MS);
                match self.source.blob_from(&self.desc, self.offset) {
                    Ok(body) => {
                        self.inner = body;
                        break;
                    }
                    // A registry that answers but refuses is not a broken link.
                    Err(e @ (Error::BlobNotFound { .. } | Error::SizeMismatch { .. } | Error::Unauthorized { .. })) => {
                        return Err(io::Error::other(e.to_string()));
                    }
                    Err(_) => continue,
                }
            }
        }
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
    fn parses_ca_flags() {
        assert_eq!(CaFile::parse("/etc/ca.pem").unwrap(), CaFile { registry: None, path: "/etc/ca.pem".into() });
        assert_eq!(CaFile::parse("reg.lan:5000=ca.pem").unwrap(), CaFile { registry: Some("reg.lan:5000".into()), path: "ca.pem".into() });
        assert!(CaFile::parse("reg.lan=").is_err());
        assert!(CaFile::parse("=ca.pem").is_err());
        assert!(CaFile::parse("a/b=ca.pem").is_err());
    }

    #[test]
    fn parses_mirror_flags() {
        let m = Mirror::parse("http://127.0.0.1:5001").unwrap();
        assert_eq!(m, Mirror { registry: None, url: "http://127.0.0.1:5001".into() });
        assert!(m.serves("docker.io") && !m.serves("ghcr.io"));
        let m = Mirror::parse("ghcr.io=https://cache.lan/").unwrap();
        assert_eq!(m, Mirror { registry: Some("ghcr.io".into()), url: "https://cache.lan".into() });
        assert!(m.serves("ghcr.io") && !m.serves("docker.io"));
        assert!(Mirror::parse("https://cache.lan/v2/").is_err());
        assert!(Mirror::parse("cache.lan").is_err());
        assert!(Mirror::parse("=http://x").is_err());
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
