//! Image references (`[registry/]repo[:tag][@digest]`) with Docker's
//! normalisation, so names typed by users, found in archives and recorded in
//! containerd all agree on one canonical spelling.
//!
//! Rules (from `github.com/distribution/reference`): the first path component
//! is a registry host when it contains `.` or `:`, is `localhost`, or has an
//! uppercase letter; otherwise the registry is `docker.io`, and single-component
//! Docker Hub names get `library/`. Without tag or digest the tag is `latest`.

use crate::{digest, Error};
use std::fmt;

/// The registry images without a host come from.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Longest repository name (`domain/path`) Docker accepts.
pub const NAME_BYTES_MAX: usize = 255;
/// Longest reference string accepted at all.
pub const REFERENCE_BYTES_MAX: usize = 1024;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference, e.g. `busybox` →
    /// `docker.io/library/busybox:latest`.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let bad = |m: &str| Err(Error::InvalidReference(m.to_string()));
        if s.is_empty() {
            return bad("empty reference");
        }
        if s.len() > REFERENCE_BYTES_MAX {
            return bad("reference is too long");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if d.is_empty() {
                    return bad("empty digest after '@'");
                }
                digest::validate(d)?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() {
            return bad("empty repository name");
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(Error::InvalidReference(format!("invalid tag {t:?}")));
            }
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(Error::InvalidReference(format!("invalid registry host {domain:?}")));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return bad("repository name must be lowercase");
        }
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(Error::InvalidReference(format!("invalid repository name {path:?}")));
        }
        if domain.len() + 1 + path.len() > NAME_BYTES_MAX {
            return bad("repository name must not be more than 255 characters");
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { domain, path, tag, digest })
    }

    /// The registry host as written in names (`docker.io`, `127.0.0.1:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The host[:port] to talk to: Docker Hub's API lives at
    /// `registry-1.docker.io`.
    pub fn registry_host(&self) -> &str {
        if self.domain == DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            &self.domain
        }
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, Error> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }

    /// Docker's short form: `busybox:latest`, `127.0.0.1:5000/foo:1`.
    pub fn familiar(&self) -> String {
        let mut s = if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        };
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Reference::parse(s)
    }
}

fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) => {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" { DEFAULT_DOMAIN.to_string() } else { domain };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
    (domain, path)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// A hostname or IPv4 (`label(.label)*`) or a bracketed IPv6, then an
/// optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

    fn canon(s: &str) -> String {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    fn err(s: &str) -> String {
        Reference::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(canon("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("index.docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("user/app:v1"), "docker.io/user/app:v1");
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(Reference::parse("user/app:v1").unwrap().familiar(), "user/app:v1");
    }

    #[test]
    fn detects_registry_hosts() {
        let r = Reference::parse("127.0.0.1:5000/foo:1").unwrap();
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "foo");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/foo:1");
        assert_eq!(r.familiar(), "127.0.0.1:5000/foo:1");
        assert_eq!(canon("localhost/foo"), "localhost/foo:latest");
        assert_eq!(canon("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(canon("ghcr.io/org/app"), "ghcr.io/org/app:latest");
        assert_eq!(canon("[::1]:5000/foo"), "[::1]:5000/foo:latest");
        // Without '.', ':' or localhost the first component is a path.
        assert_eq!(canon("foo/bar"), "docker.io/foo/bar:latest");
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.familiar(), format!("busybox@{D}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/foo:1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/foo:1@{D}"));
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!(err(""), "invalid reference format: empty reference");
        assert_eq!(err("BusyBox"), "invalid reference format: repository name must be lowercase");
        assert_eq!(err("docker.io/Foo/bar"), "invalid reference format: repository name must be lowercase");
        assert!(err("busybox@sha256:abc").contains("invalid digest"), "{}", err("busybox@sha256:abc"));
        assert!(err("busybox@").contains("empty digest"));
        assert!(err("busybox:").contains("invalid tag"));
        assert!(err("busybox:-x").contains("invalid tag"));
        assert!(err(":tag").contains("empty repository"));
        assert!(err("foo//bar").contains("invalid repository name"));
        assert!(err("foo/bar/").contains("invalid repository name"));
        assert!(err("a..b/c").contains("invalid registry host"));
        assert!(err("host:abc/c").contains("invalid registry host") || err("host:abc/c").contains("invalid"));
        assert!(err("foo bar").contains("invalid"));
        assert!(err(&"a".repeat(300)).contains("255"));
    }

    #[test]
    fn with_tag_replaces_tag_and_digest() {
        let r = Reference::parse(&format!("127.0.0.1:5000/foo:1@{D}")).unwrap();
        assert_eq!(r.with_tag("2").unwrap().to_string(), "127.0.0.1:5000/foo:2");
    }
}
