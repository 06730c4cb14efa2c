//! Shoal's encrypted node-to-node transport, node identity and join tokens.
//!
//! Owns: the sans-IO Noise link core ([`link`]), the static key pair every
//! node keeps in its data dir and the node id derived from it ([`key`]), and
//! Swarm-shaped join tokens that pin the cluster's identity key ([`token`]).
//! Nothing here opens sockets or reads clocks; the only I/O is the key file
//! helpers in [`key`], kept apart from the pure encoding. See `README.md` in
//! this directory for the wire layout, limits and threat model.

pub mod base36;
pub mod key;
pub mod link;
pub mod token;

#[cfg(test)]
mod tests;

/// The Noise protocol name every Shoal link speaks.
///
/// XX rather than IK: a joining node knows only a digest of the cluster key
/// (from its token), not the key itself, and IK needs the responder's static
/// key before the first message. XX also never sends the initiator's
/// identity before the responder has proven its own.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
