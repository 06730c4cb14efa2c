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

/// A reader that yields exactly `size` bytes and fails unless they hash to
/// `digest`: the check runs as soon as the last byte arrives (so a consumer
/// that stops at `size` bytes is still covered), a stream that ends early or
/// runs long fails, and once failed the reader keeps failing.
pub struct VerifyingReader<R> {
    inner: R,
    digest: String,
    size: u64,
    seen: u64,
    state: State,
}

enum State {
    Reading(Hasher),
    Verified,
    Failed(io::ErrorKind, VerifyError),
}

/// Why a [`VerifyingReader`] failed; carried inside the `io::Error` it
/// returns (`get_ref()` + `downcast_ref`), convertible into [`Error`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: String, actual: String },
    /// `actual` is the bytes seen: `expected + 1` when the blob ran long.
    #[error("blob {digest} has size {actual}, expected {expected}")]
    Size { digest: String, expected: u64, actual: u64 },
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Error {
        match e {
            VerifyError::Digest { expected, actual } => Error::DigestMismatch { expected, actual },
            VerifyError::Size { digest, expected, actual } => Error::SizeMismatch { digest, expected, actual },
        }
    }
}

impl VerifyError {
    /// The verification failure inside an `io::Error`, if that is what it is.
    pub fn from_io(e: &io::Error) -> Option<VerifyError> {
        e.get_ref()?.downcast_ref::<VerifyError>().cloned()
    }
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, desc: &Descriptor) -> Self {
        VerifyingReader { inner, digest: desc.digest.clone(), size: desc.size, seen: 0, state: State::Reading(Hasher::default()) }
    }

    fn fail(&mut self, kind: io::ErrorKind, e: VerifyError) -> io::Error {
        self.state = State::Failed(kind, e.clone());
        io::Error::new(kind, e)
    }

    /// Called when `seen == size`.
    fn finish(&mut self) -> io::Result<()> {
        let state = std::mem::replace(&mut self.state, State::Verified);
        if let State::Reading(h) = state {
            let actual = h.finish();
            if actual != self.digest {
                let e = VerifyError::Digest { expected: self.digest.clone(), actual };
                return Err(self.fail(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Failed(kind, e) = &self.state {
            return Err(io::Error::new(*kind, e.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.seen == self.size {
            self.finish()?;
            // Anything after the last byte means the blob is longer than described.
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra)? != 0 {
                let e = VerifyError::Size { digest: self.digest.clone(), expected: self.size, actual: self.size + 1 };
                return Err(self.fail(io::ErrorKind::InvalidData, e));
            }
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.size - self.seen).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            let e = VerifyError::Size { digest: self.digest.clone(), expected: self.size, actual: self.seen };
            return Err(self.fail(io::ErrorKind::UnexpectedEof, e));
        }
        if let State::Reading(h) = &mut self.state {
            h.update(&buf[..n]);
        }
        self.seen += n as u64;
        if self.seen == self.size {
            self.finish()?;
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
    // One byte past the size tells an over-long blob from a matching one.
    reader.take(desc.size + 1).read_to_end(&mut buf).map_err(|e| match VerifyError::from_io(&e) {
        Some(v) => v.into(),
        None => Error::io(format!("reading {what} {}", desc.digest), e),
    })?;
    if buf.len() as u64 != desc.size {
        return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: buf.len() as u64 });
    }
    let actual = sha256(&buf);
    if actual != desc.digest {
        return Err(Error::DigestMismatch { expected: desc.digest.clone(), actual });
    }
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
        // Verified at the last byte, even if the consumer stops there.
        let mut r = VerifyingReader::new(&b"hellO"[..], &desc);
        assert!(r.read_exact(&mut [0u8; 5]).is_err());
        // Once failed, always failed.
        assert!(r.read(&mut [0u8; 5]).is_err());
        let empty = Descriptor { media_type: String::new(), digest: sha256(b""), size: 0, platform: None };
        assert!(VerifyingReader::new(&b""[..], &empty).read_to_end(&mut Vec::new()).is_ok());
        assert!(VerifyingReader::new(&b"x"[..], &empty).read_to_end(&mut Vec::new()).is_err());
    }
}
