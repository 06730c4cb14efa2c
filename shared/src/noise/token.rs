//! Join tokens: Swarm's `SWMTKN-1-<digest>-<secret>` shape with Shoal's own
//! prefix, and the pure check a manager runs on a joiner's token.
//!
//! `SHLTKN-1-<digest>-<secret>`: `<digest>` is the BLAKE2s-256 digest of the
//! cluster identity public key as 50 lowercase base36 characters, `<secret>`
//! is 128 random bits as 25 base36 characters. As in Swarm, the role is not
//! written in the token: the manager keeps one current secret per role and
//! the secret that matches decides the role, so a joiner cannot promote
//! itself by editing its token. Rotating a role's secret replaces it, which
//! invalidates the old token for new joins only (nodes already admitted are
//! identified by their keys, not their tokens).

use crate::noise::base36;
use crate::noise::key::digest;
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

/// The token prefix (Swarm's is `SWMTKN`).
pub const TOKEN_PREFIX: &str = "SHLTKN";
/// The token format version written after the prefix.
pub const TOKEN_VERSION: u8 = 1;
/// Base36 characters of the digest part.
pub const DIGEST_CHARS: usize = 50;
/// Base36 characters of the secret part.
pub const SECRET_CHARS: usize = 25;
/// Bytes of randomness in a secret.
pub const SECRET_BYTES: usize = 16;

/// Errors parsing a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid join token: expected SHLTKN-1-<digest>-<secret>")]
    Shape,
    #[error("invalid join token: prefix must be SHLTKN")]
    Prefix,
    #[error("invalid join token: version {0} is not supported (expected 1)")]
    Version(String),
    #[error("invalid join token: the digest must be {DIGEST_CHARS} lowercase base36 characters")]
    Digest,
    #[error("invalid join token: the secret must be {SECRET_CHARS} lowercase base36 characters")]
    Secret,
}

/// Why a manager refuses a join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("join token belongs to another swarm (its digest does not match this swarm's identity key)")]
    OtherSwarm,
    #[error("join token secret is not valid: the token was rotated or mistyped")]
    Secret,
    #[error("join request version {0} is not supported (expected 1); is the joining node a different shoal version?")]
    HelloVersion(u8),
    #[error("no join token was sent: use `shoal swarm join --token ...`")]
    NoHello,
}

/// The role a token admits a node as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Worker,
    Manager,
}

/// A join secret: 128 bits, compared in constant time, never printed.
#[derive(Clone)]
pub struct Secret([u8; SECRET_BYTES]);

impl Secret {
    /// A secret from random bytes (from [`crate::noise::key::os_random`]).
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Secret {
        Secret(bytes)
    }

    /// The raw bytes, for persisting the current secrets in the replicated
    /// cluster state (they never go anywhere else).
    pub fn to_bytes(&self) -> [u8; SECRET_BYTES] {
        self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A parsed join token.
#[derive(Clone, Debug)]
pub struct JoinToken {
    pub version: u8,
    pub cluster_key_digest: [u8; 32],
    pub secret: Secret,
}

impl JoinToken {
    /// The token for the cluster whose identity public key is `cluster_public_key`.
    pub fn generate(cluster_public_key: &[u8; 32], secret: Secret) -> JoinToken {
        JoinToken { version: TOKEN_VERSION, cluster_key_digest: digest(cluster_public_key), secret }
    }

    /// Parses `SHLTKN-1-<digest>-<secret>`, ignoring surrounding whitespace.
    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, version, digest_part, secret_part] = parts[..] else {
            return Err(TokenError::Shape);
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenError::Prefix);
        }
        if version != "1" {
            return Err(TokenError::Version(version.chars().take(8).collect()));
        }
        if digest_part.len() != DIGEST_CHARS {
            return Err(TokenError::Digest);
        }
        let digest_bytes = base36::decode(digest_part, 32).ok_or(TokenError::Digest)?;
        if secret_part.len() != SECRET_CHARS {
            return Err(TokenError::Secret);
        }
        let secret_bytes = base36::decode(secret_part, SECRET_BYTES).ok_or(TokenError::Secret)?;
        let mut cluster_key_digest = [0u8; 32];
        cluster_key_digest.copy_from_slice(&digest_bytes);
        let mut secret = [0u8; SECRET_BYTES];
        secret.copy_from_slice(&secret_bytes);
        Ok(JoinToken { version: TOKEN_VERSION, cluster_key_digest, secret: Secret(secret) })
    }

    /// Whether `peer_static` is the cluster key this token pins.
    pub fn pins(&self, peer_static: &[u8; 32]) -> bool {
        digest(peer_static) == self.cluster_key_digest
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{}-{}-{}",
            self.version,
            base36::encode(&self.cluster_key_digest, DIGEST_CHARS),
            base36::encode(&self.secret.0, SECRET_CHARS)
        )
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        JoinToken::parse(s)
    }
}

/// The current secrets a manager admits joins with (part of the cluster
/// state; rotation replaces one).
#[derive(Clone, Debug)]
pub struct JoinSecrets {
    pub worker: Secret,
    pub manager: Secret,
}

impl JoinSecrets {
    /// Replaces the secret for `role`; tokens with the old secret stop working.
    pub fn rotate(&mut self, role: Role, secret: Secret) {
        match role {
            Role::Worker => self.worker = secret,
            Role::Manager => self.manager = secret,
        }
    }

    /// The token that admits `role` into the cluster keyed by `cluster_public_key`.
    pub fn token(&self, cluster_public_key: &[u8; 32], role: Role) -> JoinToken {
        let secret = match role {
            Role::Worker => self.worker.clone(),
            Role::Manager => self.manager.clone(),
        };
        JoinToken::generate(cluster_public_key, secret)
    }
}

/// Version of the join hello, the joiner's handshake payload on the join
/// listener.
pub const JOIN_HELLO_VERSION: u8 = 1;

/// The joiner's handshake payload: `version u8 = 1`, then the token text
/// (ASCII, 85 bytes today). The link sends it only after the manager's key
/// matched the token's digest. Later versions may append fields after the
/// token behind a new version byte.
pub fn encode_join_hello(token: &JoinToken) -> Vec<u8> {
    let mut out = vec![JOIN_HELLO_VERSION];
    out.extend_from_slice(token.to_string().as_bytes());
    out
}

/// The manager's check of a join hello (see [`encode_join_hello`]).
pub fn check_join_hello(hello: &[u8], cluster_public_key: &[u8; 32], secrets: &JoinSecrets) -> Result<Role, JoinError> {
    match hello.split_first() {
        Some((&JOIN_HELLO_VERSION, token)) => {
            let token = std::str::from_utf8(token).map_err(|_| TokenError::Shape)?;
            check_join(token, cluster_public_key, secrets)
        }
        Some((&version, _)) => Err(JoinError::HelloVersion(version)),
        None => Err(JoinError::NoHello),
    }
}

/// The manager's check of a joiner's token: the role it admits, or why not.
pub fn check_join(token: &str, cluster_public_key: &[u8; 32], secrets: &JoinSecrets) -> Result<Role, JoinError> {
    let token = JoinToken::parse(token)?;
    if !token.pins(cluster_public_key) {
        return Err(JoinError::OtherSwarm);
    }
    // Compare against both secrets so timing does not reveal which matched.
    let is_worker = token.secret.ct_eq(&secrets.worker);
    let is_manager = token.secret.ct_eq(&secrets.manager);
    match (is_manager, is_worker) {
        (true, _) => Ok(Role::Manager),
        (false, true) => Ok(Role::Worker),
        (false, false) => Err(JoinError::Secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> JoinSecrets {
        JoinSecrets { worker: Secret::from_bytes([1; 16]), manager: Secret::from_bytes([2; 16]) }
    }

    #[test]
    fn shape_matches_swarm() {
        let cluster = [9u8; 32];
        let token = secrets().token(&cluster, Role::Worker).to_string();
        // Swarm: SWMTKN-1-155y66ret23x1kda5fviypiavbq9cdk4t9egy5w20f02bkn8wk-ehld0px63rm5cmon5te6h6hel
        let swarm = "SWMTKN-1-155y66ret23x1kda5fviypiavbq9cdk4t9egy5w20f02bkn8wk-ehld0px63rm5cmon5te6h6hel";
        assert_eq!(token.len(), swarm.len());
        assert!(token.starts_with("SHLTKN-1-"));
        let parsed = JoinToken::parse(&token).unwrap();
        assert_eq!(parsed.to_string(), token);
        assert!(parsed.pins(&cluster));
        assert!(!parsed.pins(&[8u8; 32]));
        // Swarm's own token parses except for the prefix.
        assert_eq!(JoinToken::parse(swarm).unwrap_err(), TokenError::Prefix);
        assert!(JoinToken::parse(&swarm.replace("SWMTKN", "SHLTKN")).is_ok());
    }

    #[test]
    fn parse_errors_are_clear() {
        let good = secrets().token(&[9; 32], Role::Worker).to_string();
        let cases = [
            ("", TokenError::Shape),
            ("SHLTKN-1-abc", TokenError::Shape),
            (&good.replace("SHLTKN-1", "SHLTKN-2"), TokenError::Version("2".into())),
            (&good.replace("SHLTKN", "XXXTKN"), TokenError::Prefix),
            (&good[..good.len() - 1], TokenError::Secret),
            (&good.to_uppercase(), TokenError::Digest),
            (&format!("SHLTKN-1-{}-{}", "z".repeat(50), "0".repeat(25)), TokenError::Digest),
            (&format!("SHLTKN-1-{}-{}", "0".repeat(50), "z".repeat(25)), TokenError::Secret),
        ];
        for (input, want) in cases {
            let got = JoinToken::parse(input).unwrap_err();
            assert_eq!(got, want, "{input}");
            assert!(got.to_string().starts_with("invalid join token: "));
        }
        assert!(JoinToken::parse(&format!("  {good}\n")).is_ok());
    }

    #[test]
    fn check_join_roles_rotation_and_other_swarms() {
        let cluster = [9u8; 32];
        let mut s = secrets();
        let worker = s.token(&cluster, Role::Worker).to_string();
        let manager = s.token(&cluster, Role::Manager).to_string();
        assert_eq!(check_join(&worker, &cluster, &s), Ok(Role::Worker));
        assert_eq!(check_join(&manager, &cluster, &s), Ok(Role::Manager));
        assert_eq!(check_join(&worker, &[3; 32], &s), Err(JoinError::OtherSwarm));
        assert_eq!(check_join("nope", &cluster, &s), Err(JoinError::Token(TokenError::Shape)));
        s.rotate(Role::Worker, Secret::from_bytes([5; 16]));
        assert_eq!(check_join(&worker, &cluster, &s), Err(JoinError::Secret));
        assert_eq!(check_join(&manager, &cluster, &s), Ok(Role::Manager), "rotating one role keeps the other");
        assert_eq!(check_join(&s.token(&cluster, Role::Worker).to_string(), &cluster, &s), Ok(Role::Worker));
        assert!(JoinError::Secret.to_string().contains("rotated"));
    }

    #[test]
    fn join_hello_round_trip_and_errors() {
        let cluster = [9u8; 32];
        let s = secrets();
        let hello = encode_join_hello(&s.token(&cluster, Role::Manager));
        assert_eq!(hello.len(), 86);
        assert_eq!(check_join_hello(&hello, &cluster, &s), Ok(Role::Manager));
        assert_eq!(check_join_hello(&[], &cluster, &s), Err(JoinError::NoHello));
        assert_eq!(check_join_hello(&[2, b'x'], &cluster, &s), Err(JoinError::HelloVersion(2)));
        assert_eq!(check_join_hello(&[1, 0xff], &cluster, &s), Err(JoinError::Token(TokenError::Shape)));
    }
}
