//! Shoal's shared vocabulary, used by the manager, the agent and the CLI.
//!
//! Owns: cluster object types (services, tasks, nodes, networks; frozen
//! pre-network copies in [`legacy`]) and the task state
//! machine, the control-API and raft-entry messages, bounded frame encoding,
//! platforms, and the clock and rng traits that keep the cores deterministic;
//! the sans-IO Noise link core, node keys and join tokens ([`noise`]) and the
//! reconnect [`backoff`]. It performs no I/O beyond what [`frame`] reads and
//! writes on a stream the caller hands it and the key-file helpers in
//! [`noise::key`], and the keyring file helpers in [`seal`] (which also
//! seals records at rest under a node's data key).

pub mod api;
pub mod assignments;
pub mod backoff;
pub mod clock;
pub mod frame;
pub mod health;
#[cfg(feature = "legacy")]
pub mod legacy;
pub mod noise;
pub mod ops;
pub mod platform;
pub mod rng;
pub mod seal;
pub mod task;
pub mod tunnel;
pub mod types;
pub mod wire;

/// FNV-1a 64 over `bytes`: a stable, non-cryptographic fingerprint (raft ids
/// from node ids, per-data-dir directory names, simulator checksums). Never
/// used where an adversary picks the input and a collision matters.
pub fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a".
        assert_eq!(super::fnv1a64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a64(*b"foobar"), 0x85944171f73967e8);
    }
}
