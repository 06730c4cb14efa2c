//! Content digests: validation of `sha256:<hex>` strings and readers that
//! verify size and digest as bytes stream through.
//!
//! Digests arrive from hostile input (archives, registries) and end up in
//! file paths and URLs, so every one is validated before use.

use crate::{Descriptor, Error, ImageSource};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read};

/// Checks that `d` is `sha256:` followed by 64 lowercase hex digits.
/// Other algorithms are refused: this crate verifies everything it reads.
pub fn validate(d: &str) -> Result<(), Error> {
    let bad = |reason| Err(Error::InvalidDigest { digest: truncate(d), reason });
    let Some((alg, hex)) = d.split_once(':') else {
        return bad("expected algorithm:hex");
    };
    if alg != "sha256" {
        return bad("only sha256 digests are supported");
    }
    if hex.len() != 64 {
        return bad("sha256 digest must have 64 hex digits");
    }
    if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return bad("digest must be lowercase hex");
    }
    Ok(())
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Incremental sha256.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// A reader that yields at most `size` bytes and, at end of stream, fails
/// with `InvalidData` unless exactly `size` bytes hashing to `digest` came by.
pub struct VerifyingReader<R> {
    inner: R,
    digest: String,
    size: u64,
    seen: u64,
    hasher: Option<Hasher>,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, desc: &Descriptor) -> Self {
        VerifyingReader { inner, digest: desc.digest.clone(), size: desc.size, seen: 0, hasher: Some(Hasher::default()) }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        // Read one byte past the expected size so an over-long blob is caught.
        let room = (self.size - self.seen).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.seen += n as u64;
        if self.seen > self.size {
            self.hasher = None;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {} is longer than its descriptor's {} bytes", self.digest, self.size),
            ));
        }
        hasher.update(&buf[..n]);
        if n == 0 {
            let actual = self.hasher.take().map(Hasher::finish).unwrap_or_default();
            if self.seen != self.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("blob {} ended after {} of {} bytes", self.digest, self.seen, self.size),
                ));
            }
            if actual != self.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("content digest mismatch: expected {}, got {actual}", self.digest),
                ));
            }
        }
        Ok(n)
    }
}

/// Reads a whole blob into memory, refusing anything over `limit` bytes and
/// verifying size and digest. For manifests, indexes and configs.
pub fn read_blob(src: &dyn ImageSource, desc: &Descriptor, what: &str, limit: u64) -> Result<Vec<u8>, Error> {
    validate(&desc.digest)?;
    if desc.size > limit {
        return Err(Error::TooLarge { what: format!("{what} {}", desc.digest), size: desc.size, limit });
    }
    let reader = src.open_blob(desc)?;
    let mut buf = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0).min(1 << 20));
    VerifyingReader::new(reader, desc).read_to_end(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
            let actual = sha256(&buf);
            if buf.len() as u64 != desc.size {
                Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: buf.len() as u64 }
            } else {
                Error::DigestMismatch { expected: desc.digest.clone(), actual }
            }
        }
        _ => Error::io(format!("reading {what} {}", desc.digest), e),
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_digests() {
        let good = sha256(b"x");
        assert!(validate(&good).is_ok());
        assert!(validate("sha256:abc").is_err());
        assert!(validate(&good.to_uppercase()).is_err());
        assert!(validate("sha512:00").is_err());
        assert!(validate("sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(validate("").is_err());
    }

    #[test]
    fn verifying_reader_catches_mismatch() {
        let desc = Descriptor { media_type: String::new(), digest: sha256(b"hello"), size: 5, platform: None };
        let mut out = Vec::new();
        VerifyingReader::new(&b"hello"[..], &desc).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(VerifyingReader::new(&b"hellO"[..], &desc).read_to_end(&mut Vec::new()).is_err());
        assert!(VerifyingReader::new(&b"hell"[..], &desc).read_to_end(&mut Vec::new()).is_err());
        assert!(VerifyingReader::new(&b"hello!"[..], &desc).read_to_end(&mut Vec::new()).is_err());
    }
}
