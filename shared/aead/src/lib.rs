//! ChaCha20-Poly1305 for the encrypted overlay's relay (issue #15), behind
//! two non-generic functions.
//!
//! Why a crate of its own: the `chacha20poly1305` crate's code is generic,
//! so it is compiled in the crate that names the concrete cipher, at that
//! crate's opt-level. Named in `shoal-shared` (opt-level "z" in release, 0
//! in debug), sealing ran at 253 MB/s in the release build and 7 MB/s in a
//! debug daemon (the cluster tests' encrypted networks then moved 30
//! Mbit/s). Here it is compiled at opt-level 3 in every profile (the
//! workspace's `Cargo.toml`), and the rest of `shoal-shared` keeps its size.
//!
//! Nonce: 4 zero bytes and the 64-bit counter (little-endian); the caller
//! never uses a counter twice under one key.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key as AeadKey, Nonce};

/// Poly1305 tag bytes appended to a sealed message.
pub const TAG_LEN: usize = 16;

/// One ChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct Key(ChaCha20Poly1305);

/// The message did not authenticate (or would not fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed;

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

impl Key {
    pub fn new(key: &[u8; 32]) -> Key {
        Key(ChaCha20Poly1305::new(AeadKey::from_slice(key)))
    }

    /// Encrypts `buf[start..]` in place under `counter`, authenticating
    /// `aad` too, and appends the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], buf: &mut Vec<u8>, start: usize) -> Result<(), Failed> {
        let body = buf.get_mut(start..).ok_or(Failed)?;
        let tag = self.0.encrypt_in_place_detached(&nonce(counter), aad, body).map_err(|_| Failed)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Checks and decrypts `buf` (ciphertext and tag) in place under
    /// `counter` and `aad`; on success `buf` holds the plaintext.
    pub fn open(&self, counter: u64, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), Failed> {
        let n = buf.len().checked_sub(TAG_LEN).ok_or(Failed)?;
        let (body, tag) = buf.split_at_mut(n);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.0.decrypt_in_place_detached(&nonce(counter), aad, body, &tag).map_err(|_| Failed)?;
        buf.truncate(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_opens_once_and_only_unchanged() {
        let k = Key::new(&[5; 32]);
        let mut buf = b"hdr:secret payload".to_vec();
        k.seal(7, b"hdr:", &mut buf, 4).unwrap();
        assert_eq!(&buf[..4], b"hdr:");
        assert_eq!(buf.len(), 18 + TAG_LEN);
        assert!(!buf.windows(6).any(|w| w == b"secret"));
        let mut body = buf[4..].to_vec();
        let mut wrong_counter = body.clone();
        assert_eq!(k.open(8, b"hdr:", &mut wrong_counter), Err(Failed));
        let mut wrong_aad = body.clone();
        assert_eq!(k.open(7, b"hdx:", &mut wrong_aad), Err(Failed));
        k.open(7, b"hdr:", &mut body).unwrap();
        assert_eq!(body, b"secret payload");
        assert_eq!(k.open(7, b"hdr:", &mut vec![0; 3]), Err(Failed));
    }
}
