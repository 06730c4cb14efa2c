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
//! Key file layout (73 bytes, mode 0600):
//!
//! ```text
//! offset  0              8            9              41            73
//!         | magic        | version u8 | private [32] | public [32] |
//!         | "SHLKEY\n\0" | 1          |              |             |
//! ```
//!
//! The public half is redundant: loading recomputes it from the private half
//! and refuses the file when they disagree, which catches corruption.

use snow::params::{DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the node key inside the data dir.
pub const NODE_KEY_FILE: &str = "node.key";
/// File name of the cluster identity key inside a manager's data dir.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// Magic bytes that open a key file.
pub const KEY_FILE_MAGIC: &[u8; 8] = b"SHLKEY\n\0";
/// Version of the key file layout.
pub const KEY_FILE_VERSION: u8 = 1;
/// Size of a key file in bytes.
pub const KEY_FILE_BYTES: usize = 8 + 1 + 32 + 32;
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

    /// The key file bytes (see the module docs for the layout).
    pub fn encode(&self) -> [u8; KEY_FILE_BYTES] {
        let mut out = [0u8; KEY_FILE_BYTES];
        out[..8].copy_from_slice(KEY_FILE_MAGIC);
        out[8] = KEY_FILE_VERSION;
        out[9..41].copy_from_slice(&self.private);
        out[41..].copy_from_slice(&self.public);
        out
    }

    /// Parses key file bytes; the error names what is wrong (`path` is only
    /// used in the error).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<NodeKey, KeyError> {
        let corrupt = |reason| KeyError::Corrupt { path: path.to_path_buf(), reason };
        if bytes.len() < 9 || &bytes[..8] != KEY_FILE_MAGIC {
            return Err(corrupt("not a shoal key file (bad magic)"));
        }
        if bytes[8] != KEY_FILE_VERSION {
            return Err(corrupt("unsupported key file version"));
        }
        if bytes.len() != KEY_FILE_BYTES {
            return Err(corrupt("wrong length"));
        }
        let mut private = [0u8; 32];
        private.copy_from_slice(&bytes[9..41]);
        let key = NodeKey::from_private(private)?;
        if key.public[..] != bytes[41..] {
            return Err(corrupt("public key does not match private key"));
        }
        Ok(key)
    }
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

/// Loads a key file, refusing files that group or others can read.
pub fn load(path: &Path) -> Result<NodeKey, KeyError> {
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
    NodeKey::decode(&bytes, path)
}

/// Writes a key file with mode 0600, atomically (temporary file, fsync, rename).
pub fn save(path: &Path, key: &NodeKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(&key.encode()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; a failure here only risks losing a fresh key.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Loads `path`, or creates and saves a fresh key when it does not exist.
/// Returns the key and whether it was created.
pub fn load_or_create(path: &Path) -> Result<(NodeKey, bool), KeyError> {
    match load(path) {
        Ok(key) => Ok((key, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate()?;
            save(path, &key)?;
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
        let key = NodeKey::generate().unwrap();
        let p = Path::new("node.key");
        assert_eq!(NodeKey::decode(&key.encode(), p).unwrap(), key);
        let mut bad = key.encode();
        bad[50] ^= 1;
        assert!(matches!(NodeKey::decode(&bad, p), Err(KeyError::Corrupt { reason: "public key does not match private key", .. })));
        let mut bad = key.encode();
        bad[8] = 9;
        assert!(matches!(NodeKey::decode(&bad, p), Err(KeyError::Corrupt { reason: "unsupported key file version", .. })));
        assert!(matches!(NodeKey::decode(&key.encode()[..40], p), Err(KeyError::Corrupt { reason: "wrong length", .. })));
        assert!(matches!(NodeKey::decode(b"hello", p), Err(KeyError::Corrupt { .. })));
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
        let dir = tempdir("file");
        let path = dir.join(NODE_KEY_FILE);
        let (key, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
