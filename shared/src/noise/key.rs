//! Node identity: the x25519 static key pair each node keeps in its data dir,
//! the digest that join tokens pin, and the Swarm-style node id derived from
//! the public key.
//!
//! The pure part ([`NodeKey::encode`], [`NodeKey::decode`], [`digest`],
//! [`node_id_of`]) is separate from the file helpers ([`load`], [`save`],
//! [`load_or_create`]) so the format is testable without a disk. Key material
//! comes from the OS through snow's resolver, never from the seeded
//! [`crate::rng::Rng`].
//!
//! Key file layout, version 2 (sealed; 9 + 32 + 77 = 118 bytes, mode 0600):
//!
//! ```text
//! offset  0              8            9             41
//!         | magic        | version u8 | public [32] | private half sealed under the node's data key
//!         | "SHLKEY\n\0" | 2          |             | (crate::seal record, associated data
//!         |              |            |             |  "shoal key file v2\0" ++ file name)
//! ```
//!
//! The public half is in clear so that a locked node (autolock) still knows
//! its node id. Version 1 (73 bytes: magic, 1, private [32], public [32])
//! is read once and rewritten as version 2 by [`load`]. Loading recomputes
//! the public half from the private one and refuses a file where they
//! disagree, which catches corruption.

use crate::seal::SealKey;
use snow::params::{DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use std::fmt;
use std::path::{Path, PathBuf};

/// File name of the node key inside the data dir.
pub const NODE_KEY_FILE: &str = "node.key";
/// File name of the cluster identity key inside a manager's data dir.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// Magic bytes that open a key file.
pub const KEY_FILE_MAGIC: &[u8; 8] = b"SHLKEY\n\0";
/// Version of the key file layout written today.
pub const KEY_FILE_VERSION: u8 = 2;
/// The plaintext layout before sealing (read and rewritten).
pub const KEY_FILE_VERSION_PLAIN: u8 = 1;
/// Size of a version-1 key file in bytes.
pub const KEY_FILE_PLAIN_BYTES: usize = 8 + 1 + 32 + 32;
/// Size of a version-2 key file in bytes.
pub const KEY_FILE_BYTES: usize = 8 + 1 + 32 + 32 + crate::seal::RECORD_OVERHEAD_BYTES;
/// Length of a node id in base36 characters (Swarm's length).
pub const NODE_ID_CHARS: usize = 25;

/// Errors creating, encoding or loading a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("os randomness unavailable: {0}")]
    Random(String),
    #[error("key file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("key file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} does not open: {source}; restore the data dir from a backup, or leave the swarm and join again")]
    Sealed { path: PathBuf, source: crate::seal::SealError },
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A node's static x25519 key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKey {
    private: [u8; 32],
    public: [u8; 32],
}

impl NodeKey {
    /// Generates a fresh key pair from OS randomness.
    pub fn generate() -> Result<NodeKey, KeyError> {
        NodeKey::from_private(os_random::<32>()?)
    }

    /// The key pair whose private half is `private` (clamped by x25519 itself).
    pub fn from_private(private: [u8; 32]) -> Result<NodeKey, KeyError> {
        let mut dh = DefaultResolver.resolve_dh(&DHChoice::Curve25519).ok_or_else(|| KeyError::Random("no curve25519 in snow".into()))?;
        dh.set(&private);
        let public: [u8; 32] = dh.pubkey().try_into().map_err(|_| KeyError::Random("curve25519 public key is not 32 bytes".into()))?;
        Ok(NodeKey { private, public })
    }

    /// The public half, which peers see in the handshake.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The private half, handed to [`crate::noise::link::LinkConfig`].
    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }

    /// This node's id (see [`node_id_of`]).
    pub fn node_id(&self) -> String {
        node_id_of(&self.public)
    }

    /// The version-2 key file bytes for the file named `file_name`, the
    /// private half sealed under `seal` (see the module docs).
    pub fn encode(&self, seal: &SealKey, file_name: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_FILE_BYTES);
        out.extend_from_slice(KEY_FILE_MAGIC);
        out.push(KEY_FILE_VERSION);
        out.extend_from_slice(&self.public);
        out.extend(seal.seal(&key_file_aad(file_name), &self.private));
        out
    }

    /// The version-1 (plaintext) bytes, for tests of the upgrade path.
    pub fn encode_plain(&self) -> [u8; KEY_FILE_PLAIN_BYTES] {
        let mut out = [0u8; KEY_FILE_PLAIN_BYTES];
        out[..8].copy_from_slice(KEY_FILE_MAGIC);
        out[8] = KEY_FILE_VERSION_PLAIN;
        out[9..41].copy_from_slice(&self.private);
        out[41..].copy_from_slice(&self.public);
        out
    }

    /// Parses key file bytes of either version (`path` names the file in
    /// errors and, by its file name, binds the sealed private half). Returns
    /// the key and whether the file is the old plaintext version.
    pub fn decode(bytes: &[u8], path: &Path, seal: &SealKey) -> Result<(NodeKey, bool), KeyError> {
        let corrupt = |reason| KeyError::Corrupt { path: path.to_path_buf(), reason };
        let (private, public, plain) = match parse_head(bytes, path)? {
            KEY_FILE_VERSION_PLAIN if !seal.allows_plain_upgrade() => {
                return Err(corrupt(
                    "the private key is in clear (a key file from before sealing), but this node's data key is wrapped under an \
                     unlock key, so clear key files are refused (they could have been planted); restore the file from a backup, or \
                     leave the swarm with --force and join again",
                ));
            }
            KEY_FILE_VERSION_PLAIN => {
                let mut private = [0u8; 32];
                private.copy_from_slice(&bytes[9..41]);
                (private, &bytes[41..], true)
            }
            _ => {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let opened =
                    seal.open(&key_file_aad(name), &bytes[41..]).map_err(|e| KeyError::Sealed { path: path.to_path_buf(), source: e })?;
                let private: [u8; 32] = opened.try_into().map_err(|_| corrupt("sealed private key is not 32 bytes"))?;
                (private, &bytes[9..41], false)
            }
        };
        let key = NodeKey::from_private(private)?;
        if key.public[..] != *public {
            return Err(corrupt("public key does not match private key"));
        }
        Ok((key, plain))
    }
}

/// Checks magic, version and length; returns the version.
fn parse_head(bytes: &[u8], path: &Path) -> Result<u8, KeyError> {
    let corrupt = |reason| KeyError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < 9 || &bytes[..8] != KEY_FILE_MAGIC {
        return Err(corrupt("not a shoal key file (bad magic)"));
    }
    let want = match bytes[8] {
        KEY_FILE_VERSION_PLAIN => KEY_FILE_PLAIN_BYTES,
        KEY_FILE_VERSION => KEY_FILE_BYTES,
        _ => return Err(corrupt("unsupported key file version")),
    };
    if bytes.len() != want {
        return Err(corrupt("wrong length"));
    }
    Ok(bytes[8])
}

fn key_file_aad(file_name: &str) -> Vec<u8> {
    let mut aad = b"shoal key file v2\0".to_vec();
    aad.extend_from_slice(file_name.as_bytes());
    aad
}

/// The public half of a key file, readable without the data key (a locked
/// node's id).
pub fn public_of(path: &Path) -> Result<[u8; 32], KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    let range = if parse_head(&bytes, path)? == KEY_FILE_VERSION_PLAIN { 41..73 } else { 9..41 };
    let mut public = [0u8; 32];
    public.copy_from_slice(&bytes[range]);
    Ok(public)
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private half.
        f.debug_struct("NodeKey").field("node_id", &self.node_id()).finish_non_exhaustive()
    }
}

/// BLAKE2s-256 of a public key: what join tokens pin and node ids derive from.
pub fn digest(public: &[u8; 32]) -> [u8; 32] {
    // Blake2s is compiled in through the "default-resolver-crypto" feature.
    let mut h = DefaultResolver.resolve_hash(&HashChoice::Blake2s).expect("snow is built with blake2s");
    h.input(public);
    let mut out = [0u8; 32];
    h.result(&mut out);
    out
}

/// A node's id: the first 128 bits of [`digest`] as 25 lowercase base36
/// characters, the shape of Swarm's node ids.
pub fn node_id_of(public: &[u8; 32]) -> String {
    crate::noise::base36::encode(&digest(public)[..16], NODE_ID_CHARS)
}

/// `N` bytes from the operating system's random source.
pub fn os_random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut rng = DefaultResolver.resolve_rng().ok_or_else(|| KeyError::Random("no rng in snow".into()))?;
    let mut out = [0u8; N];
    rng.try_fill_bytes(&mut out).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(out)
}

/// Loads a key file, refusing files that group or others can read. A
/// version-1 (plaintext) file is rewritten sealed under `seal` first.
pub fn load(path: &Path, seal: &SealKey) -> Result<NodeKey, KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
        }
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let (key, plain) = NodeKey::decode(&bytes, path, seal)?;
    if plain {
        save(path, &key, seal)?;
    }
    Ok(key)
}

/// Writes a key file sealed under `seal`, with mode 0600, atomically
/// (temporary file, fsync, rename; see [`crate::seal::write_private_file`]).
pub fn save(path: &Path, key: &NodeKey, seal: &SealKey) -> Result<(), KeyError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    crate::seal::write_private_file(path, &key.encode(seal, name)).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })
}

/// Loads `path`, or creates and saves a fresh key when it does not exist.
/// Returns the key and whether it was created.
pub fn load_or_create(path: &Path, seal: &SealKey) -> Result<(NodeKey, bool), KeyError> {
    match load(path, seal) {
        Ok(key) => Ok((key, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate()?;
            save(path, &key, seal)?;
            Ok((key, true))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-key-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn encode_decode_round_trip_and_corruption() {
        let seal = SealKey::new(1, [3; 32], [0; 16]);
        let key = NodeKey::generate().unwrap();
        let p = Path::new("/x/node.key");
        let bytes = key.encode(&seal, "node.key");
        assert_eq!(bytes.len(), KEY_FILE_BYTES);
        assert_eq!(NodeKey::decode(&bytes, p, &seal).unwrap(), (key.clone(), false));
        assert!(!bytes.windows(32).any(|w| w == key.private()), "the private key is in clear");
        // The plaintext version still loads, and says so.
        let upgrading = SealKey::new(1, [3; 32], [1; 16]).allowing_plain_upgrade();
        assert_eq!(NodeKey::decode(&key.encode_plain(), p, &upgrading).unwrap(), (key.clone(), true));
        let mut bad = key.encode_plain();
        bad[50] ^= 1;
        assert!(matches!(
            NodeKey::decode(&bad, p, &upgrading),
            Err(KeyError::Corrupt { reason: "public key does not match private key", .. })
        ));
        // Under a wrapped data key (no plain upgrade) a clear file is refused.
        match NodeKey::decode(&key.encode_plain(), p, &seal) {
            Err(KeyError::Corrupt { reason, .. }) => assert!(reason.contains("in clear"), "{reason}"),
            other => panic!("clear key file accepted under a wrapped key: {other:?}"),
        }
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(matches!(NodeKey::decode(&bad, p, &seal), Err(KeyError::Corrupt { reason: "public key does not match private key", .. })));
        // A flipped sealed byte, another data key, another file name.
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        assert!(matches!(NodeKey::decode(&bad, p, &seal), Err(KeyError::Sealed { .. })));
        assert!(matches!(NodeKey::decode(&bytes, p, &SealKey::new(1, [4; 32], [0; 16])), Err(KeyError::Sealed { .. })));
        assert!(matches!(NodeKey::decode(&bytes, Path::new("cluster.key"), &seal), Err(KeyError::Sealed { .. })));
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(matches!(NodeKey::decode(&bad, p, &seal), Err(KeyError::Corrupt { reason: "unsupported key file version", .. })));
        assert!(matches!(NodeKey::decode(&bytes[..40], p, &seal), Err(KeyError::Corrupt { reason: "wrong length", .. })));
        assert!(matches!(NodeKey::decode(b"hello", p, &seal), Err(KeyError::Corrupt { .. })));
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.private())));
    }

    #[test]
    fn node_id_is_stable_base36() {
        // Pinned so that a change of hash or encoding is noticed: node ids are
        // stored in the replicated state.
        let public = [7u8; 32];
        let id = node_id_of(&public);
        assert_eq!(id.len(), 25);
        assert!(id.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(id, node_id_of(&public));
        assert_ne!(id, node_id_of(&[8u8; 32]));
        // RFC 7748 test vector: the public key of this private key is known.
        let private: [u8; 32] = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let key = NodeKey::from_private(private).unwrap();
        assert_eq!(key.public(), &hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn file_create_load_and_permissions() {
        let seal = SealKey::new(1, [3; 32], [0; 16]);
        let dir = tempdir("file");
        let path = dir.join(NODE_KEY_FILE);
        let (key, created) = load_or_create(&path, &seal).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&path, &seal).unwrap();
        assert!(!created);
        assert_eq!(key, again);
        assert_eq!(&public_of(&path).unwrap(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load(&path, &seal).unwrap_err();
            assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A plaintext file from before sealing is rewritten sealed on load.
        crate::seal::write_private_file(&path, &key.encode_plain()).unwrap();
        assert_eq!(&public_of(&path).unwrap(), key.public());
        assert!(matches!(load(&path, &seal), Err(KeyError::Corrupt { .. })), "a clear file loaded under a wrapped key");
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_FILE_PLAIN_BYTES, "a refused file is left as it was");
        let upgrading = SealKey::new(seal.id(), *seal.key_bytes(), [5; 16]).allowing_plain_upgrade();
        assert_eq!(load(&path, &upgrading).unwrap(), key);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_FILE_BYTES);
        assert_eq!(load(&path, &seal).unwrap(), key);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load_or_create(&path, &seal), Err(KeyError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
