//! Sealing at rest: the swarm's unlock key, each node's data key, sealed
//! records, and the keyring file that holds the data key (clear, or wrapped
//! by the unlock key when the swarm is autolocked).
//!
//! Pure apart from [`load_keyring`] / [`save_keyring`]: nonces come from a
//! prefix the caller draws once (from the OS) plus a counter, so sealing is
//! deterministic given its inputs and a nonce never repeats under one key
//! (the prefix is 128 random bits per [`SealKey`], the counter 64 bits).
//!
//! Cipher: XChaCha20-Poly1305 (the `chacha20poly1305` crate `snow` already
//! links; no new crypto dependency). Keys are 256 random bits; the unlock
//! key is shown to people as `SHLKEY-1-` and 43 characters of unpadded
//! standard base64, as Swarm's `SWMKEY-1-`. No KDF: nothing is derived from
//! a password.
//!
//! Sealed record layout ([`SealKey::seal`], 45 bytes more than the plaintext):
//!
//! ```text
//! offset 0            1             5           29
//!        | version u8 | key id u32 | nonce [24] | ciphertext ++ tag [16] |
//!        | 1          | LE          |            |                        |
//! ```
//!
//! The associated data is the caller's: it names what the record is (table,
//! index, term, file name), so a record moved elsewhere fails to open.
//!
//! Keyring file layout (`DATA_DIR/seal.key`, mode 0600, [`Keyring::encode`]),
//! version 2:
//!
//! ```text
//! offset 0           8            9         10         11          19
//!        | magic     | version u8 | kind u8 | count u8 | epoch u64 | count slots, newest first:
//!        | "SHLSEAL\n" | 2        | 0 clear | 1 or 2   | LE (0 if  |   key id u32 LE, then
//!        |           |            | 1 wrapped |        |  clear)   |   clear: data key [32]
//!        |           |            |           |        |           |   wrapped: nonce [24], sealed key [48]
//! ```
//!
//! Version 1 (read, never written): magic, 1, kind, key id u32, then the
//! clear key or epoch u64, nonce, sealed key. A wrapped data key is sealed
//! under the unlock key with associated data `"shoal seal.key v1" ++ key id
//! ++ epoch`; `epoch` is the swarm's unlock-key generation (see
//! `types::Autolock`), so a manager knows whether its keyring follows the
//! swarm's current unlock key. Two slots exist only while the data key is
//! being replaced: records sealed under either open, and the rotation is
//! finished (everything re-sealed under the newest key, the old slot
//! dropped) at the next chance, so a crash in between loses nothing.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a human-readable unlock key starts with.
pub const UNLOCK_KEY_PREFIX: &str = "SHLKEY-1-";
/// Bytes of every key (unlock and data keys).
pub const KEY_BYTES: usize = 32;
/// Characters of a key after the prefix (unpadded base64 of 32 bytes).
pub const UNLOCK_KEY_CHARS: usize = 43;
/// Version byte of a sealed record.
pub const RECORD_VERSION: u8 = 1;
/// Bytes of a record's nonce (and of [`SealKey::unique_id`]).
pub const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const HEADER_BYTES: usize = 1 + 4 + NONCE_BYTES;
/// Bytes a sealed record adds to its plaintext.
pub const RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + TAG_BYTES;
/// File name of the keyring inside the data dir.
pub const KEYRING_FILE: &str = "seal.key";
/// Magic bytes that open a keyring file.
pub const KEYRING_MAGIC: &[u8; 8] = b"SHLSEAL\n";
/// Version of the keyring file layout written today.
pub const KEYRING_VERSION: u8 = 2;
/// The single-key layout (read, never written).
const KEYRING_VERSION_1: u8 = 1;

/// Why a record or key did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed record is {0} bytes, shorter than any sealed record")]
    Short(usize),
    #[error("sealed record version {0} is not supported")]
    Version(u8),
    #[error("sealed under data key {found}, but this node holds data key {held}")]
    UnknownKey { found: u32, held: u32 },
    #[error("authentication failed: the record was altered, moved, or sealed under another key")]
    Auth,
}

/// Why a keyring file or an unlock key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring {path} is corrupt: {reason}; restore the data dir from a backup, or leave the swarm and join again")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("invalid key provided")]
    InvalidKey,
    #[error("keyring {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("keyring {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The swarm's unlock key (a key-encryption key). Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; KEY_BYTES]);

impl UnlockKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> UnlockKey {
        UnlockKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Parses `SHLKEY-1-` and 43 base64 characters (surrounding whitespace
    /// ignored); anything else is [`KeyringError::InvalidKey`].
    pub fn parse(text: &str) -> Result<UnlockKey, KeyringError> {
        let body = text.trim().strip_prefix(UNLOCK_KEY_PREFIX).ok_or(KeyringError::InvalidKey)?;
        if body.len() != UNLOCK_KEY_CHARS {
            return Err(KeyringError::InvalidKey);
        }
        let bytes = base64_decode(body).ok_or(KeyringError::InvalidKey)?;
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| KeyringError::InvalidKey)?;
        Ok(UnlockKey(key))
    }
}

impl fmt::Display for UnlockKey {
    /// The human-readable form (`SHLKEY-1-...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNLOCK_KEY_PREFIX}{}", base64_encode(&self.0))
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

/// A node's data key with its id and nonce source: what seals raft records
/// and key files. Never printed by `Debug`.
pub struct SealKey {
    id: u32,
    key: [u8; KEY_BYTES],
    /// The data key being replaced: records sealed under it still open.
    previous: Option<(u32, [u8; KEY_BYTES])>,
    nonce_prefix: [u8; 16],
    counter: AtomicU64,
    /// Whether records and key files in clear (from before sealing) may be
    /// sealed under this key; see [`SealKey::allowing_plain_upgrade`].
    plain_upgrade: bool,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SealKey {
    /// A data key; `nonce_prefix` must be fresh randomness for every
    /// `SealKey` value made from the same key (the daemon draws it from the
    /// OS at each start).
    pub fn new(id: u32, key: [u8; KEY_BYTES], nonce_prefix: [u8; 16]) -> SealKey {
        SealKey { id, key, previous: None, nonce_prefix, counter: AtomicU64::new(0), plain_upgrade: false }
    }

    /// This key, still opening records sealed under `previous` (a data key
    /// being replaced); new records are always sealed under this key.
    pub fn with_previous(mut self, previous: Option<(u32, [u8; KEY_BYTES])>) -> SealKey {
        self.previous = previous;
        self
    }

    /// This key, allowing a store or key file written before sealing (in
    /// clear) to be sealed under it. Only for a data key kept in clear: its
    /// keyring gives no secrecy, so a clear record adds nothing an attacker
    /// could not forge anyway. A key wrapped under an unlock key refuses
    /// clear records: accepting them would let anyone who can write the
    /// data dir plant records by marking the store "from before sealing".
    pub fn allowing_plain_upgrade(mut self) -> SealKey {
        self.plain_upgrade = true;
        self
    }

    /// See [`SealKey::allowing_plain_upgrade`].
    pub fn allows_plain_upgrade(&self) -> bool {
        self.plain_upgrade
    }

    /// A value never returned twice by this key's nonce source: a unique id
    /// (a store's history id), not a secret.
    pub fn unique_id(&self) -> [u8; NONCE_BYTES] {
        self.next_nonce()
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn key_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.key
    }

    fn next_nonce(&self) -> [u8; NONCE_BYTES] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&n.to_le_bytes());
        nonce
    }

    /// Seals `plain`, bound to `aad` (see the module docs for the layout).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = self.next_nonce();
        let mut out = Vec::with_capacity(plain.len() + RECORD_OVERHEAD_BYTES);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend(aead_seal(&self.key, &nonce, aad, plain));
        out
    }

    /// Opens a record made by [`SealKey::seal`] under this key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < RECORD_OVERHEAD_BYTES {
            return Err(SealError::Short(sealed.len()));
        }
        if sealed[0] != RECORD_VERSION {
            return Err(SealError::Version(sealed[0]));
        }
        let found = u32::from_le_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let key = match self.previous {
            _ if found == self.id => &self.key,
            Some((id, ref k)) if id == found => k,
            _ => return Err(SealError::UnknownKey { found, held: self.id }),
        };
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&sealed[5..HEADER_BYTES]);
        aead_open(key, &nonce, aad, &sealed[HEADER_BYTES..]).ok_or(SealError::Auth)
    }
}

fn aead_seal(key: &[u8; KEY_BYTES], nonce: &[u8; NONCE_BYTES], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    // Encryption only fails for plaintexts beyond 256 GiB.
    cipher.encrypt(XNonce::from_slice(nonce), Payload { msg: plain, aad }).expect("xchacha20poly1305 seals any record under 256 GiB")
}

fn aead_open(key: &[u8; KEY_BYTES], nonce: &[u8; NONCE_BYTES], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad }).ok()
}

/// How a data key is kept in the keyring file.
#[derive(Clone, PartialEq, Eq)]
enum Body {
    Clear([u8; KEY_BYTES]),
    Wrapped { nonce: [u8; NONCE_BYTES], sealed: [u8; KEY_BYTES + TAG_BYTES] },
}

/// One data key in the keyring.
#[derive(Clone, PartialEq, Eq)]
struct Slot {
    key_id: u32,
    body: Body,
}

/// The keyring file's content: the data key (and, while it is being
/// replaced, the previous one), clear or wrapped at one epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    /// `Some(epoch)` when the keys are wrapped.
    epoch: Option<u64>,
    /// Newest first; one or two.
    slots: Vec<Slot>,
}

/// Most data keys a keyring holds (the current one and, while rotating, the previous).
const KEYRING_SLOTS_MAX: usize = 2;

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.slots.iter().map(|s| s.key_id).collect::<Vec<_>>())
            .field("wrapped_epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn wrap_aad(key_id: u32, epoch: u64) -> Vec<u8> {
    let mut aad = b"shoal seal.key v1".to_vec();
    aad.extend_from_slice(&key_id.to_le_bytes());
    aad.extend_from_slice(&epoch.to_le_bytes());
    aad
}

fn wrap(key_id: u32, key: &[u8; KEY_BYTES], unlock: &UnlockKey, epoch: u64, nonce: [u8; NONCE_BYTES]) -> Slot {
    let sealed = aead_seal(unlock.as_bytes(), &nonce, &wrap_aad(key_id, epoch), key);
    let sealed: [u8; KEY_BYTES + TAG_BYTES] = sealed.try_into().expect("a sealed 32-byte key is 48 bytes");
    Slot { key_id, body: Body::Wrapped { nonce, sealed } }
}

impl Keyring {
    /// A keyring holding `key` in clear (autolock off).
    pub fn clear(key_id: u32, key: [u8; KEY_BYTES]) -> Keyring {
        Keyring { epoch: None, slots: vec![Slot { key_id, body: Body::Clear(key) }] }
    }

    /// A keyring holding `key` wrapped by `unlock` at `epoch`; `nonce` must
    /// be fresh randomness.
    pub fn wrapped(key_id: u32, key: &[u8; KEY_BYTES], unlock: &UnlockKey, epoch: u64, nonce: [u8; NONCE_BYTES]) -> Keyring {
        Keyring { epoch: Some(epoch), slots: vec![wrap(key_id, key, unlock, epoch, nonce)] }
    }

    /// A keyring in the middle of replacing data key `old` by `new`, both
    /// wrapped by `unlock` at `epoch`; the nonces must be fresh randomness.
    pub fn wrapped_rotating(
        new: (u32, &[u8; KEY_BYTES]),
        old: (u32, &[u8; KEY_BYTES]),
        unlock: &UnlockKey,
        epoch: u64,
        nonces: [[u8; NONCE_BYTES]; 2],
    ) -> Keyring {
        let slots = vec![wrap(new.0, new.1, unlock, epoch, nonces[0]), wrap(old.0, old.1, unlock, epoch, nonces[1])];
        Keyring { epoch: Some(epoch), slots }
    }

    /// The id of the newest data key.
    pub fn key_id(&self) -> u32 {
        self.slots[0].key_id
    }

    /// Whether the data key needs the unlock key (the node is locked until given it).
    pub fn is_wrapped(&self) -> bool {
        self.epoch.is_some()
    }

    /// The unlock-key generation the data keys are wrapped under, if wrapped.
    pub fn wrapped_epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// Whether a previous data key is still held (a rotation to finish).
    pub fn is_rotating(&self) -> bool {
        self.slots.len() > 1
    }

    fn open_slot(&self, slot: &Slot, unlock: Option<&UnlockKey>) -> Result<[u8; KEY_BYTES], KeyringError> {
        match (&slot.body, unlock, self.epoch) {
            (Body::Clear(k), _, _) => Ok(*k),
            (Body::Wrapped { nonce, sealed }, Some(u), Some(epoch)) => {
                let plain = aead_open(u.as_bytes(), nonce, &wrap_aad(slot.key_id, epoch), sealed).ok_or(KeyringError::InvalidKey)?;
                plain.try_into().map_err(|_| KeyringError::InvalidKey)
            }
            _ => Err(KeyringError::InvalidKey),
        }
    }

    /// The newest data key: from a clear keyring without `unlock`, from a
    /// wrapped one only with the unlock key it was wrapped under.
    pub fn data_key(&self, unlock: Option<&UnlockKey>) -> Result<[u8; KEY_BYTES], KeyringError> {
        self.open_slot(&self.slots[0], unlock)
    }

    /// The previous data key while a rotation is unfinished.
    pub fn previous_key(&self, unlock: Option<&UnlockKey>) -> Result<Option<(u32, [u8; KEY_BYTES])>, KeyringError> {
        match self.slots.get(1) {
            None => Ok(None),
            Some(slot) => Ok(Some((slot.key_id, self.open_slot(slot, unlock)?))),
        }
    }

    /// The file bytes (version 2; see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = KEYRING_MAGIC.to_vec();
        out.push(KEYRING_VERSION);
        out.push(u8::from(self.epoch.is_some()));
        out.push(self.slots.len() as u8);
        out.extend_from_slice(&self.epoch.unwrap_or(0).to_le_bytes());
        for slot in &self.slots {
            out.extend_from_slice(&slot.key_id.to_le_bytes());
            match &slot.body {
                Body::Clear(k) => out.extend_from_slice(k),
                Body::Wrapped { nonce, sealed } => {
                    out.extend_from_slice(nonce);
                    out.extend_from_slice(sealed);
                }
            }
        }
        out
    }

    /// Parses keyring file bytes of version 1 or 2 (`path` is only used in errors).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Keyring, KeyringError> {
        let corrupt = |reason| KeyringError::Corrupt { path: path.to_path_buf(), reason };
        if bytes.len() < 10 || &bytes[..8] != KEYRING_MAGIC {
            return Err(corrupt("not a shoal keyring (bad magic)"));
        }
        let wrapped = match bytes[9] {
            0 => false,
            1 => true,
            _ => return Err(corrupt("unknown key kind")),
        };
        let slot_bytes = if wrapped { 4 + NONCE_BYTES + KEY_BYTES + TAG_BYTES } else { 4 + KEY_BYTES };
        let (epoch, count, slots_at) = match bytes[8] {
            KEYRING_VERSION_1 => {
                // magic, version, kind, key id, [epoch,] body
                let want = if wrapped { 14 + 8 + NONCE_BYTES + KEY_BYTES + TAG_BYTES } else { 14 + KEY_BYTES };
                if bytes.len() != want {
                    return Err(corrupt("wrong length"));
                }
                let key_id = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
                let (epoch, body) = if wrapped {
                    let epoch = u64::from_le_bytes(bytes[14..22].try_into().expect("8 bytes"));
                    (Some(epoch), wrapped_body(&bytes[22..]))
                } else {
                    (None, Body::Clear(bytes[14..].try_into().expect("32 bytes")))
                };
                return Ok(Keyring { epoch, slots: vec![Slot { key_id, body }] });
            }
            KEYRING_VERSION => {
                if bytes.len() < 19 {
                    return Err(corrupt("wrong length"));
                }
                let epoch = u64::from_le_bytes(bytes[11..19].try_into().expect("8 bytes"));
                (wrapped.then_some(epoch), bytes[10] as usize, 19)
            }
            _ => return Err(corrupt("unsupported keyring version")),
        };
        if count == 0 || count > KEYRING_SLOTS_MAX {
            return Err(corrupt("wrong number of keys"));
        }
        if bytes.len() != slots_at + count * slot_bytes {
            return Err(corrupt("wrong length"));
        }
        let slots = bytes[slots_at..]
            .chunks(slot_bytes)
            .map(|c| {
                let key_id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let body = if wrapped { wrapped_body(&c[4..]) } else { Body::Clear(c[4..].try_into().expect("32 bytes")) };
                Slot { key_id, body }
            })
            .collect();
        Ok(Keyring { epoch, slots })
    }
}

/// A wrapped key's nonce and sealed bytes (the caller checked the length).
fn wrapped_body(b: &[u8]) -> Body {
    let nonce: [u8; NONCE_BYTES] = b[..NONCE_BYTES].try_into().expect("24 bytes");
    let sealed: [u8; KEY_BYTES + TAG_BYTES] = b[NONCE_BYTES..].try_into().expect("48 bytes");
    Body::Wrapped { nonce, sealed }
}

/// Loads the keyring file; `Ok(None)` when there is none (a node from
/// before sealing, or a new one). Refuses files group or others can read.
pub fn load_keyring(path: &Path) -> Result<Option<Keyring>, KeyringError> {
    let io = |source| KeyringError::Io { path: path.to_path_buf(), source };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyringError::Permissions { path: path.to_path_buf(), mode });
        }
    }
    Keyring::decode(&bytes, path).map(Some)
}

/// Writes the keyring file atomically with mode 0600 (see [`write_private_file`]).
pub fn save_keyring(path: &Path, keyring: &Keyring) -> Result<(), KeyringError> {
    write_private_file(path, &keyring.encode()).map_err(|source| KeyringError::Io { path: path.to_path_buf(), source })
}

/// Replaces `path` with `bytes` atomically: a temporary file of mode 0600
/// in the same directory, fsynced, renamed over `path`, and the directory
/// fsynced. The old content is never overwritten in place, and no other
/// file in the directory keeps a copy.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename durable.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Unpadded standard base64.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// Decodes unpadded standard base64; `None` on any other character or a
/// non-canonical tail.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero and fewer than a byte.
    (acc == 0 && bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SealKey {
        SealKey::new(1, [n; 32], [9; 16])
    }

    #[test]
    fn unlock_key_text_round_trips_and_rejects_malformed() {
        for seed in 0..40u8 {
            let bytes: [u8; 32] = std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let k = UnlockKey::from_bytes(bytes);
            let text = k.to_string();
            assert!(text.starts_with("SHLKEY-1-"), "{text}");
            assert_eq!(text.len(), 9 + 43);
            assert_eq!(UnlockKey::parse(&format!("  {text}\n")).unwrap(), k);
        }
        let good = UnlockKey::from_bytes([0xab; 32]).to_string();
        for bad in ["", "SHLKEY-1-", "SWMKEY-1-abc", &good[..good.len() - 1], &format!("{good}A"), &good.replace("SHLKEY-1-", "SHLKEY-2-")]
        {
            assert!(matches!(UnlockKey::parse(bad), Err(KeyringError::InvalidKey)), "{bad:?}");
        }
        // A character outside the alphabet, and a non-canonical last character.
        let mut chars: Vec<char> = good.chars().collect();
        chars[12] = '!';
        assert!(UnlockKey::parse(&chars.iter().collect::<String>()).is_err());
        let mut chars: Vec<char> = UnlockKey::from_bytes([0; 32]).to_string().chars().collect();
        *chars.last_mut().unwrap() = 'B';
        assert!(UnlockKey::parse(&chars.iter().collect::<String>()).is_err());
        assert_eq!(format!("{:?}", UnlockKey::from_bytes([1; 32])), "UnlockKey(..)");
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE");
        assert_eq!(base64_encode(b"f"), "Zg");
        assert_eq!(base64_decode("Zm9vYmE").unwrap(), b"fooba");
        assert_eq!(base64_decode("Zg").unwrap(), b"f");
    }

    #[test]
    fn records_open_only_with_their_key_and_context() {
        let k = key(1);
        let a = k.seal(b"raft_log/7/2", b"hello");
        let b = k.seal(b"raft_log/7/2", b"hello");
        assert_ne!(a, b, "nonces repeat");
        assert_eq!(a.len(), 5 + RECORD_OVERHEAD_BYTES);
        assert_eq!(k.open(b"raft_log/7/2", &a).unwrap(), b"hello");
        // Moved to another index, or opened under another key of the same id.
        assert_eq!(k.open(b"raft_log/8/2", &a), Err(SealError::Auth));
        assert_eq!(key(2).open(b"raft_log/7/2", &a), Err(SealError::Auth));
        assert_eq!(SealKey::new(5, [1; 32], [0; 16]).open(b"raft_log/7/2", &a), Err(SealError::UnknownKey { found: 1, held: 5 }));
        // Every flipped bit and every truncation is refused, never a panic.
        for i in 0..a.len() {
            for bit in 0..8 {
                let mut t = a.clone();
                t[i] ^= 1 << bit;
                assert!(k.open(b"raft_log/7/2", &t).is_err(), "byte {i} bit {bit}");
            }
            assert!(k.open(b"raft_log/7/2", &a[..i]).is_err());
        }
        // The ciphertext does not contain the plaintext.
        let marker = b"marker-5f2c1e9a";
        let s = k.seal(b"x", marker);
        assert!(!s.windows(marker.len()).any(|w| w == marker));
    }

    #[test]
    fn keyring_wraps_and_round_trips() {
        let p = Path::new("seal.key");
        let data = [7u8; 32];
        let clear = Keyring::clear(3, data);
        assert_eq!(Keyring::decode(&clear.encode(), p).unwrap(), clear);
        assert_eq!(clear.data_key(None).unwrap(), data);
        assert!(!clear.is_wrapped());
        let unlock = UnlockKey::from_bytes([5; 32]);
        let wrapped = Keyring::wrapped(3, &data, &unlock, 4, [1; 24]);
        let bytes = wrapped.encode();
        assert!(!bytes.windows(32).any(|w| w == data), "the data key is in clear");
        let back = Keyring::decode(&bytes, p).unwrap();
        assert_eq!(back, wrapped);
        assert_eq!(back.wrapped_epoch(), Some(4));
        assert_eq!(back.data_key(Some(&unlock)).unwrap(), data);
        assert!(matches!(back.data_key(None), Err(KeyringError::InvalidKey)));
        assert!(matches!(back.data_key(Some(&UnlockKey::from_bytes([6; 32]))), Err(KeyringError::InvalidKey)));
        // A tampered epoch fails to unwrap.
        let mut t = bytes.clone();
        t[11] ^= 1;
        assert!(matches!(Keyring::decode(&t, p).unwrap().data_key(Some(&unlock)), Err(KeyringError::InvalidKey)));
        for (bad, reason) in [
            (b"nope".to_vec(), "not a shoal keyring (bad magic)"),
            (bytes[..bytes.len() - 1].to_vec(), "wrong length"),
            (
                {
                    let mut b = bytes.clone();
                    b[9] = 7;
                    b
                },
                "unknown key kind",
            ),
            (
                {
                    let mut b = bytes.clone();
                    b[8] = 3;
                    b
                },
                "unsupported keyring version",
            ),
            (
                {
                    let mut b = bytes.clone();
                    b[10] = 3;
                    b
                },
                "wrong number of keys",
            ),
        ] {
            assert!(matches!(Keyring::decode(&bad, p), Err(KeyringError::Corrupt { reason: r, .. }) if r == reason), "{reason}");
        }
    }

    #[test]
    fn a_rotating_keyring_holds_both_keys_and_version_1_still_reads() {
        let p = Path::new("seal.key");
        let unlock = UnlockKey::from_bytes([5; 32]);
        let ring = Keyring::wrapped_rotating((2, &[2; 32]), (1, &[1; 32]), &unlock, 7, [[3; 24], [4; 24]]);
        let back = Keyring::decode(&ring.encode(), p).unwrap();
        assert_eq!(back, ring);
        assert!(back.is_rotating());
        assert_eq!((back.key_id(), back.wrapped_epoch()), (2, Some(7)));
        assert_eq!(back.data_key(Some(&unlock)).unwrap(), [2; 32]);
        assert_eq!(back.previous_key(Some(&unlock)).unwrap(), Some((1, [1; 32])));
        assert!(back.previous_key(None).is_err());
        assert_eq!(Keyring::clear(1, [1; 32]).previous_key(None).unwrap(), None);
        // Records of the previous key open under the new one while it is held.
        let old = SealKey::new(1, [1; 32], [0; 16]);
        let rec = old.seal(b"a", b"x");
        let new = SealKey::new(2, [2; 32], [1; 16]);
        assert_eq!(new.open(b"a", &rec), Err(SealError::UnknownKey { found: 1, held: 2 }));
        let new = new.with_previous(Some((1, [1; 32])));
        assert_eq!(new.open(b"a", &rec).unwrap(), b"x");
        assert_eq!(new.seal(b"a", b"y")[1..5], 2u32.to_le_bytes());
        // The version-1 layouts (one key) still decode.
        let mut v1 = KEYRING_MAGIC.to_vec();
        v1.extend_from_slice(&[1, 0]);
        v1.extend_from_slice(&9u32.to_le_bytes());
        v1.extend_from_slice(&[8; 32]);
        let r = Keyring::decode(&v1, p).unwrap();
        assert_eq!((r.key_id(), r.data_key(None).unwrap()), (9, [8; 32]));
        let w = Keyring::wrapped(9, &[8; 32], &unlock, 3, [6; 24]).encode();
        let mut v1 = KEYRING_MAGIC.to_vec();
        v1.extend_from_slice(&[1, 1]);
        v1.extend_from_slice(&9u32.to_le_bytes());
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&w[23..]);
        let r = Keyring::decode(&v1, p).unwrap();
        assert_eq!((r.wrapped_epoch(), r.data_key(Some(&unlock)).unwrap()), (Some(3), [8; 32]));
    }

    #[test]
    fn keyring_file_is_private_and_replaced_atomically() {
        let dir = std::env::temp_dir().join(format!("shoal-aead-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(KEYRING_FILE);
        assert!(load_keyring(&path).unwrap().is_none());
        save_keyring(&path, &Keyring::clear(1, [1; 32])).unwrap();
        save_keyring(&path, &Keyring::clear(1, [2; 32])).unwrap();
        assert_eq!(load_keyring(&path).unwrap().unwrap().data_key(None).unwrap(), [2; 32]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "a temporary file was left");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_keyring(&path), Err(KeyringError::Permissions { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }
}
