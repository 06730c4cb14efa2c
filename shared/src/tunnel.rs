//! Sealed packets of encrypted overlay networks (issue #15's core; the
//! relay's decisions are in [`relay`], its shell in the agent).
//!
//! Pure: [`Sealer`] seals the IP packets a node's tunnel device hands it for
//! one peer, [`Opener`] opens what one peer sent, checking a sliding replay
//! window ([`ReplayWindow`]) only after the packet authenticated (a forged
//! packet never moves the window). No sockets, clocks or randomness: keys
//! come from the caller (a fresh random key per daemon start and per
//! rotation, so a counter nonce never repeats under one key, across restarts
//! too, without writing anything down).
//!
//! Cipher: ChaCha20-Poly1305, snow's own (`CipherChaChaPoly`, the very code
//! the Noise links run, whose nonce is ours: 4 zero bytes and the counter).
//! Taken through snow's resolver on purpose: the `chacha20poly1305` crate's
//! code is generic and is compiled where it is named, at that crate's
//! opt-level; named here it sealed 253 MB/s in the release build (this
//! crate is size-optimised) and 7 MB/s in a debug daemon, and added a
//! second copy of the cipher to the binary. snow is built at opt-level 3. Frame layout ([`Sealer::seal`], [`FRAME_OVERHEAD`] = 29 bytes more
//! than the packet):
//!
//! ```text
//! offset 0            1             5             13
//!        | version u8 | epoch u32 LE | counter u64 LE | ciphertext ++ tag [16] |
//! ```
//!
//! The 13-byte header is the associated data; the nonce is 4 zero bytes and
//! the counter (LE). The epoch names the sender's key (it changes at every
//! rotation); a receiver keeps the current and the previous key of each peer.

pub mod relay;

use snow::params::CipherChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::Cipher;

/// Version of the frame layout.
pub const FRAME_VERSION: u8 = 1;
/// Header bytes before the ciphertext.
pub const HEADER_LEN: usize = 13;
/// Poly1305 tag bytes.
pub const TAG_LEN: usize = 16;
/// Bytes a frame adds to its packet.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest packet sealed or opened (an IPv4 packet's limit).
pub const PACKET_BYTES_MAX: usize = 65_535;
/// Packets a receiver accepts out of order behind the newest one seen.
pub const REPLAY_WINDOW_PACKETS: u64 = 2_048;
/// Counters a key may seal before it must be replaced (far beyond 12 hours
/// at any line rate; a sealer refuses past it instead of wrapping).
pub const COUNTER_MAX: u64 = u64::MAX - 1;

/// Why a packet was not sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("packet of {0} bytes is larger than {PACKET_BYTES_MAX}")]
    TooLarge(usize),
    #[error("this key sealed its last packet: rotate it")]
    Exhausted,
}

/// Why a frame was dropped (each is counted in [`OpenCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("frame too short or too long, or of an unknown version")]
    Malformed,
    #[error("sealed with a key this node does not hold (a removed node, or a rotation not heard of yet)")]
    UnknownKey,
    #[error("failed authentication (tampered, or not sealed with this key)")]
    Tampered,
    #[error("a replay, or older than the replay window")]
    Replayed,
}

/// What an [`Opener`] dropped, by reason, and what it let through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    pub opened: u64,
    pub malformed: u64,
    pub unknown_key: u64,
    pub tampered: u64,
    pub replayed: u64,
}

/// Counters seen behind the newest one, as a bitmap of
/// [`REPLAY_WINDOW_PACKETS`] bits (RFC 6479's idea, one bit per packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The newest counter accepted, plus one (0: none yet).
    top: u64,
    bits: [u64; (REPLAY_WINDOW_PACKETS / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { top: 0, bits: [0; (REPLAY_WINDOW_PACKETS / 64) as usize] }
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted (new, and not too old).
    pub fn fresh(&self, counter: u64) -> bool {
        if counter >= self.top {
            return true;
        }
        let behind = self.top - 1 - counter;
        behind < REPLAY_WINDOW_PACKETS && !self.bit(counter)
    }

    /// Records `counter` (call only for an authenticated packet that was [`ReplayWindow::fresh`]).
    pub fn accept(&mut self, counter: u64) {
        if counter >= self.top {
            let advance = counter + 1 - self.top;
            if advance >= REPLAY_WINDOW_PACKETS {
                self.bits = [0; (REPLAY_WINDOW_PACKETS / 64) as usize];
            } else {
                for c in self.top..=counter {
                    self.set(c, false);
                }
            }
            self.top = counter + 1;
        }
        self.set(counter, true);
    }

    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % REPLAY_WINDOW_PACKETS;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn bit(&self, counter: u64) -> bool {
        let (w, m) = Self::slot(counter);
        self.bits[w] & m != 0
    }

    fn set(&mut self, counter: u64, on: bool) {
        let (w, m) = Self::slot(counter);
        if on {
            self.bits[w] |= m;
        } else {
            self.bits[w] &= !m;
        }
    }
}

/// A ChaCha20-Poly1305 key (snow's, see the module header).
fn cipher(key: &[u8; 32]) -> Box<dyn Cipher> {
    // The `use-chacha20poly1305` feature (the workspace's Cargo.toml) compiles it in: never None.
    let mut c = DefaultResolver.resolve_cipher(&CipherChoice::ChaChaPoly).expect("snow is built with ChaChaPoly");
    c.set(key);
    c
}

fn header(epoch: u32, counter: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = FRAME_VERSION;
    h[1..5].copy_from_slice(&epoch.to_le_bytes());
    h[5..].copy_from_slice(&counter.to_le_bytes());
    h
}

/// Seals the packets this node sends to one peer under its current key.
pub struct Sealer {
    epoch: u32,
    cipher: Box<dyn Cipher>,
    next: u64,
}

impl Sealer {
    /// A key that was never used before (fresh randomness per start and rotation).
    pub fn new(epoch: u32, key: &[u8; 32]) -> Sealer {
        Sealer { epoch, cipher: cipher(key), next: 0 }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Packets sealed under this key so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// The frame carrying `packet`.
    pub fn seal(&mut self, packet: &[u8]) -> Result<Vec<u8>, SealError> {
        if packet.len() > PACKET_BYTES_MAX {
            return Err(SealError::TooLarge(packet.len()));
        }
        if self.next > COUNTER_MAX {
            return Err(SealError::Exhausted);
        }
        let counter = self.next;
        self.next += 1;
        let h = header(self.epoch, counter);
        let mut frame = vec![0u8; FRAME_OVERHEAD + packet.len()];
        frame[..HEADER_LEN].copy_from_slice(&h);
        self.cipher.encrypt(counter, &h, packet, &mut frame[HEADER_LEN..]);
        Ok(frame)
    }
}

/// One key of a peer, with its replay window.
struct PeerKey {
    epoch: u32,
    cipher: Box<dyn Cipher>,
    window: ReplayWindow,
}

/// Opens what one peer sends: its current key and the one before (packets
/// in flight across a rotation still open), each with its replay window.
#[derive(Default)]
pub struct Opener {
    current: Option<PeerKey>,
    previous: Option<PeerKey>,
    counts: OpenCounts,
}

impl Opener {
    /// The peer's new key (heard over the Noise link); the current one
    /// becomes the previous one, the previous one is forgotten. The same
    /// epoch again changes nothing.
    pub fn install(&mut self, epoch: u32, key: &[u8; 32]) {
        if self.current.as_ref().is_some_and(|k| k.epoch == epoch) {
            return;
        }
        let next = PeerKey { epoch, cipher: cipher(key), window: ReplayWindow::default() };
        self.previous = self.current.replace(next);
    }

    /// Forgets every key of the peer (it was removed): its frames fail from now on.
    pub fn forget(&mut self) {
        self.current = None;
        self.previous = None;
    }

    pub fn counts(&self) -> OpenCounts {
        self.counts
    }

    /// Whether a key of the peer is held.
    pub fn has_key(&self) -> bool {
        self.current.is_some()
    }

    /// The packet a frame carries, or why it was dropped (counted).
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        let r = self.open_inner(frame);
        let c = &mut self.counts;
        match r {
            Ok(_) => c.opened += 1,
            Err(OpenError::Malformed) => c.malformed += 1,
            Err(OpenError::UnknownKey) => c.unknown_key += 1,
            Err(OpenError::Tampered) => c.tampered += 1,
            Err(OpenError::Replayed) => c.replayed += 1,
        }
        r
    }

    fn open_inner(&mut self, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        if frame.len() < FRAME_OVERHEAD || frame.len() > PACKET_BYTES_MAX + FRAME_OVERHEAD || frame[0] != FRAME_VERSION {
            return Err(OpenError::Malformed);
        }
        let (h, sealed) = frame.split_at(HEADER_LEN);
        let epoch = u32::from_le_bytes(h[1..5].try_into().map_err(|_| OpenError::Malformed)?);
        let counter = u64::from_le_bytes(h[5..].try_into().map_err(|_| OpenError::Malformed)?);
        let key = [self.current.as_mut(), self.previous.as_mut()].into_iter().flatten().find(|k| k.epoch == epoch);
        let Some(key) = key else { return Err(OpenError::UnknownKey) };
        if !key.window.fresh(counter) {
            return Err(OpenError::Replayed);
        }
        // At least a tag long (checked above: FRAME_OVERHEAD).
        let mut packet = vec![0u8; sealed.len() - TAG_LEN];
        key.cipher.decrypt(counter, h, sealed, &mut packet).map_err(|_| OpenError::Tampered)?;
        key.window.accept(counter);
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [7; 32];
    const K2: [u8; 32] = [9; 32];

    #[test]
    fn sealed_packets_open_once_and_their_bytes_are_not_on_the_wire() {
        let mut tx = Sealer::new(1, &K1);
        let mut rx = Opener::default();
        rx.install(1, &K1);
        let packet = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n".to_vec();
        let frame = tx.seal(&packet).unwrap();
        assert_eq!(frame.len(), packet.len() + FRAME_OVERHEAD);
        assert!(!frame.windows(8).any(|w| packet.windows(8).any(|p| p == w)), "plaintext leaked into the frame");
        assert_eq!(rx.open(&frame).unwrap(), packet);
        assert_eq!(rx.open(&frame), Err(OpenError::Replayed), "the same frame twice");
        let second = tx.seal(&packet).unwrap();
        assert_ne!(second[HEADER_LEN..], frame[HEADER_LEN..], "a new nonce for every packet");
        assert_eq!(rx.open(&second).unwrap(), packet);
        assert_eq!(rx.counts(), OpenCounts { opened: 2, replayed: 1, ..Default::default() });
    }

    #[test]
    fn tampered_frames_are_dropped_and_do_not_move_the_window() {
        let mut tx = Sealer::new(1, &K1);
        let mut rx = Opener::default();
        rx.install(1, &K1);
        let frame = tx.seal(b"payload").unwrap();
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x40;
            let e = rx.open(&bad).unwrap_err();
            assert!(matches!(e, OpenError::Tampered | OpenError::UnknownKey | OpenError::Malformed), "byte {i}: {e:?}");
        }
        // A forged counter far ahead failed authentication: the real frame still opens.
        assert_eq!(rx.open(&frame).unwrap(), b"payload");
        assert_eq!(rx.counts().opened, 1);
        assert!(rx.counts().tampered > 0);
        assert_eq!(rx.open(&frame[..FRAME_OVERHEAD - 1]), Err(OpenError::Malformed));
    }

    #[test]
    fn reordering_inside_the_window_is_fine_older_is_not() {
        let mut tx = Sealer::new(3, &K1);
        let mut rx = Opener::default();
        rx.install(3, &K1);
        let frames: Vec<Vec<u8>> = (0..REPLAY_WINDOW_PACKETS + 10).map(|i| tx.seal(&i.to_le_bytes()).unwrap()).collect();
        let last = frames.len() - 1;
        assert!(rx.open(&frames[last]).is_ok());
        assert!(rx.open(&frames[last - 5]).is_ok(), "late but inside the window");
        assert_eq!(rx.open(&frames[last - 5]), Err(OpenError::Replayed));
        assert!(rx.open(&frames[last + 1 - REPLAY_WINDOW_PACKETS as usize]).is_ok(), "the window's oldest slot");
        assert_eq!(rx.open(&frames[last - REPLAY_WINDOW_PACKETS as usize]), Err(OpenError::Replayed), "just behind it");
        assert_eq!(rx.open(&frames[0]), Err(OpenError::Replayed));
    }

    #[test]
    fn a_rotation_keeps_packets_in_flight_and_a_forgotten_peer_is_locked_out() {
        let (mut old, mut new) = (Sealer::new(1, &K1), Sealer::new(2, &K2));
        let mut rx = Opener::default();
        rx.install(1, &K1);
        let in_flight = old.seal(b"sent before the rotation").unwrap();
        let fresh = new.seal(b"after").unwrap();
        assert_eq!(rx.open(&fresh), Err(OpenError::UnknownKey), "the new key is not heard of yet");
        rx.install(2, &K2);
        rx.install(2, &K2);
        assert_eq!(rx.open(&fresh).unwrap(), b"after");
        assert_eq!(rx.open(&in_flight).unwrap(), b"sent before the rotation", "the previous key still opens");
        rx.install(3, &[1; 32]);
        assert_eq!(rx.open(&old.seal(b"x").unwrap()), Err(OpenError::UnknownKey), "two rotations later");
        rx.forget();
        assert_eq!(rx.open(&new.seal(b"y").unwrap()), Err(OpenError::UnknownKey), "a removed node's packets");
        // The same key and epoch from a node that restarted would reuse counters: keys are fresh per start.
        let mut other_key = Opener::default();
        other_key.install(2, &K1);
        assert_eq!(other_key.open(&new.seal(b"z").unwrap()), Err(OpenError::Tampered));
    }

    #[test]
    fn limits_and_hostile_bytes() {
        let mut tx = Sealer::new(1, &K1);
        assert_eq!(tx.seal(&vec![0; PACKET_BYTES_MAX + 1]), Err(SealError::TooLarge(PACKET_BYTES_MAX + 1)));
        assert_eq!(tx.seal(&vec![0; PACKET_BYTES_MAX]).map(|f| f.len()), Ok(PACKET_BYTES_MAX + FRAME_OVERHEAD));
        tx.next = COUNTER_MAX + 1;
        assert_eq!(tx.seal(b"x"), Err(SealError::Exhausted));
        let mut rx = Opener::default();
        rx.install(1, &K1);
        let mut x: u64 = 0x9e37_79b9;
        for len in 0..200 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            if let Some(b) = bytes.first_mut() {
                *b = FRAME_VERSION;
            }
            assert!(rx.open(&bytes).is_err());
        }
        assert_eq!(rx.counts().opened, 0);
    }
}
