//! The sans-IO Noise link core: one encrypted, authenticated, framed
//! connection between two nodes, as a plain struct.
//!
//! Inputs: [`Link::handle_bytes`] (bytes read from the socket, split
//! anywhere), [`Link::handle_eof`], [`Link::send`], [`Link::close`] and
//! [`Link::tick`] (time, in milliseconds from any fixed origin). Outputs are
//! pulled: [`Link::poll_transmit`] (bytes to write) and [`Link::poll_event`].
//! No sockets, clocks, threads or `async`: the shell in the agent moves bytes
//! and timers, and tests pump two links in memory.
//!
//! Wire layout (see `README.md` here for the diagram): every Noise message is
//! prefixed by its length as a `u16` big-endian. After the handshake each
//! Noise message carries one record: `version u8, kind u8, body`. Application
//! messages larger than one record are cut into `Chunk` records closed by a
//! `Last` record and reassembled up to `message_bytes_max`.
//!
//! Every failure caused by the peer's bytes ends the link with
//! [`Event::Closed`]; nothing the peer sends can panic it.

use crate::noise::key::digest;
use crate::noise::NOISE_PARAMS;
use std::collections::VecDeque;

/// Version of the link protocol, carried in every handshake payload and record.
pub const LINK_VERSION: u8 = 1;
/// Bytes of the length prefix before each Noise message.
pub const LENGTH_PREFIX_BYTES: usize = 2;
/// Largest Noise message, tag included (the Noise spec's limit).
pub const NOISE_MESSAGE_BYTES_MAX: usize = 65535;
/// Bytes of the ChaChaPoly authentication tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of the record header (version, kind).
pub const RECORD_HEADER_BYTES: usize = 2;
/// Largest application-data body in one record.
pub const CHUNK_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - TAG_BYTES - RECORD_HEADER_BYTES;
/// Wire bytes one record adds around its body.
pub const RECORD_OVERHEAD_BYTES: usize = LENGTH_PREFIX_BYTES + TAG_BYTES + RECORD_HEADER_BYTES;
/// Largest application payload carried in a handshake message.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 1024;
/// Largest handshake message: the responder's, `e` (32) + encrypted `s`
/// (32 + 16) + encrypted payload (version + application payload + 16).
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 32 + 48 + 1 + HANDSHAKE_PAYLOAD_BYTES_MAX + TAG_BYTES;
/// Largest reason text in a close record; longer reasons are truncated.
pub const CLOSE_REASON_BYTES_MAX: usize = 256;
/// Receive-buffer capacity kept while no partial frame is pending.
pub const RX_IDLE_CAPACITY_BYTES_MAX: usize = 16 * 1024;
/// Fixed start of the Noise prologue; the configured prologue follows it.
pub const PROLOGUE_PREFIX: &[u8] = b"shoal-link/1/";

const KIND_CHUNK: u8 = 0;
const KIND_LAST: u8 = 1;
const KIND_KEEPALIVE: u8 = 2;
const KIND_CLOSE: u8 = 3;

/// How a link behaves; build with [`LinkConfig::lan`] or [`LinkConfig::edge`]
/// and adjust fields.
#[derive(Clone)]
pub struct LinkConfig {
    /// This node's static private key (see [`crate::noise::key::NodeKey`]).
    pub local_private: [u8; 32],
    /// Purpose bytes both sides must agree on (e.g. `b"join"`, `b"raft"`);
    /// a mismatch fails the handshake.
    pub prologue: Vec<u8>,
    /// Application payload sent inside the handshake, at most
    /// [`HANDSHAKE_PAYLOAD_BYTES_MAX`]. The initiator's is sent encrypted in
    /// the third message, only after the responder's key passed the pin
    /// check, so it may carry the join token. The responder's travels in the
    /// second message before the initiator is authenticated: nothing secret.
    pub handshake_payload: Vec<u8>,
    /// For an initiator: the BLAKE2s digest the responder's static key must
    /// have (a join token's cluster-key digest, or a known manager's key).
    pub peer_digest_pin: Option<[u8; 32]>,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval_ms: u64,
    /// Declare the peer dead after this long without receiving anything,
    /// in the handshake too.
    pub idle_timeout_ms: u64,
    /// Largest reassembled application message, in either direction.
    pub message_bytes_max: u32,
    /// Largest amount of encrypted bytes waiting in [`Link::poll_transmit`];
    /// [`Link::send`] refuses beyond it.
    pub send_queue_bytes_max: u32,
    /// Close the link if the handshake has not finished this long after
    /// the link was created, however the peer trickles its bytes: what an
    /// unauthenticated peer holds is bounded in time, not only in silence.
    pub handshake_timeout_ms: u64,
}

impl LinkConfig {
    /// LAN defaults: keepalive every 1 s, dead after 3 s of silence, the
    /// handshake done within 5 s.
    pub fn lan(local_private: [u8; 32]) -> LinkConfig {
        LinkConfig {
            local_private,
            prologue: Vec::new(),
            handshake_payload: Vec::new(),
            peer_digest_pin: None,
            keepalive_interval_ms: 1_000,
            idle_timeout_ms: 3_000,
            message_bytes_max: 16 * 1024 * 1024,
            send_queue_bytes_max: 32 * 1024 * 1024,
            handshake_timeout_ms: 5_000,
        }
    }

    /// Edge defaults for lossy, metered or NATed links: keepalive every 15 s
    /// (inside common NAT binding timeouts), dead after 60 s of silence, the
    /// handshake done within 30 s.
    pub fn edge(local_private: [u8; 32]) -> LinkConfig {
        LinkConfig {
            keepalive_interval_ms: 15_000,
            idle_timeout_ms: 60_000,
            handshake_timeout_ms: 30_000,
            ..LinkConfig::lan(local_private)
        }
    }
}

/// Keepalive interval and idle timeout of a link profile, in ms.
pub fn profile_timing(profile: crate::types::LinkProfile) -> (u64, u64) {
    match profile {
        crate::types::LinkProfile::Lan => (1_000, 3_000),
        crate::types::LinkProfile::Edge => (15_000, 60_000),
    }
}

impl LinkConfig {
    /// The defaults of `profile` ([`LinkConfig::lan`] or [`LinkConfig::edge`]).
    pub fn for_profile(profile: crate::types::LinkProfile, local_private: [u8; 32]) -> LinkConfig {
        match profile {
            crate::types::LinkProfile::Lan => LinkConfig::lan(local_private),
            crate::types::LinkProfile::Edge => LinkConfig::edge(local_private),
        }
    }
}

/// What a link reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake finished. `peer_static` is the peer's static public key
    /// (its node id is [`crate::noise::key::node_id_of`]); `peer_payload` is
    /// its handshake payload. The application decides whether to keep the
    /// link (allow-list, join token) and calls [`Link::close`] if not.
    Established { peer_static: [u8; 32], peer_payload: Vec<u8> },
    /// One complete application message.
    Message(Vec<u8>),
    /// Nothing was received for `idle_timeout_ms`; the link is dead.
    TimedOut,
    /// The link ended because of the peer or its bytes; the link is dead.
    Closed(LinkError),
}

/// Why a link ended or an operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("invalid link configuration: {0}")]
    Config(&'static str),
    #[error("connection closed by the peer during the handshake (it may have refused our key or protocol version)")]
    EofDuringHandshake,
    #[error("connection closed by the peer")]
    Eof,
    #[error("connection closed in the middle of a frame ({bytes} bytes pending)")]
    Truncated { bytes: usize },
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is too short")]
    FrameTooShort { len: usize },
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    #[error("frame failed authentication (corrupted, replayed or reordered)")]
    Decrypt,
    #[error("link version {got} is not supported (expected {want}); is the other side a different shoal version?")]
    Version { got: u8, want: u8 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    MessageTooLarge { len: u64, max: u32 },
    #[error("handshake payload of {len} bytes exceeds the {max}-byte limit")]
    HandshakePayloadTooLarge { len: usize, max: usize },
    #[error("manager key does not match the join token: possible man-in-the-middle, or the token belongs to another swarm")]
    PinMismatch,
    #[error("closed by the peer: {reason}")]
    ClosedByPeer { reason: String },
    #[error("send queue full: {queued} bytes queued, {len} more would exceed the {max}-byte limit")]
    SendQueueFull { queued: usize, len: usize, max: u32 },
    #[error("link is not established yet")]
    NotEstablished,
    #[error("link is closed")]
    Closed,
    #[error("noise encryption failed: {0}")]
    Encrypt(String),
    #[error("noise handshake not finished within {ms} ms (a stalled or trickling peer)")]
    HandshakeTimedOut { ms: u64 },
}

enum Phase {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::TransportState>),
    Done,
}

/// One Noise link (see the module docs).
pub struct Link {
    config: LinkConfig,
    initiator: bool,
    phase: Phase,
    /// Received bytes not yet forming a whole frame (at most one frame plus
    /// the last input).
    rx: Vec<u8>,
    /// Chunks of the application message being received.
    reassembly: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    transmit_bytes: usize,
    events: VecDeque<Event>,
    last_rx_ms: u64,
    last_tx_ms: u64,
    /// When the handshake must have finished (creation + `handshake_timeout_ms`).
    handshake_deadline_ms: u64,
    rx_since_tick: bool,
    tx_since_tick: bool,
    peer_static: Option<[u8; 32]>,
}

impl Link {
    /// A link that starts the handshake (it queues the first message).
    pub fn initiator(config: LinkConfig, now_ms: u64) -> Result<Link, LinkError> {
        Link::new(config, true, now_ms, LINK_VERSION)
    }

    /// A link that answers a handshake.
    pub fn responder(config: LinkConfig, now_ms: u64) -> Result<Link, LinkError> {
        Link::new(config, false, now_ms, LINK_VERSION)
    }

    pub(crate) fn new(config: LinkConfig, initiator: bool, now_ms: u64, version: u8) -> Result<Link, LinkError> {
        validate(&config)?;
        // A constant that snow's own tests parse.
        let params: snow::params::NoiseParams = NOISE_PARAMS.parse().expect("valid noise params");
        let mut prologue = PROLOGUE_PREFIX.to_vec();
        prologue.extend_from_slice(&config.prologue);
        let builder = snow::Builder::new(params)
            .local_private_key(&config.local_private)
            .and_then(|b| b.prologue(&prologue))
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let hs = if initiator { builder.build_initiator() } else { builder.build_responder() };
        let hs = hs.map_err(|e| LinkError::Handshake(e.to_string()))?;
        let handshake_timeout_ms = config.handshake_timeout_ms;
        let mut link = Link {
            config,
            initiator,
            phase: Phase::Handshake(Box::new(hs)),
            rx: Vec::new(),
            reassembly: Vec::new(),
            transmit: VecDeque::new(),
            transmit_bytes: 0,
            events: VecDeque::new(),
            last_rx_ms: now_ms,
            last_tx_ms: now_ms,
            handshake_deadline_ms: now_ms.saturating_add(handshake_timeout_ms),
            rx_since_tick: false,
            tx_since_tick: false,
            peer_static: None,
        };
        if initiator {
            // Message 1 is cleartext (`-> e`): it carries only the version.
            let Phase::Handshake(hs) = &mut link.phase else { unreachable!("a new link is in the handshake") };
            push_handshake_message(hs, &[version], &mut link.transmit, &mut link.transmit_bytes)?;
        }
        Ok(link)
    }

    /// Feeds bytes read from the socket, split anywhere.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Done) || bytes.is_empty() {
            return;
        }
        self.rx_since_tick = true;
        self.rx.extend_from_slice(bytes);
        let rx = std::mem::take(&mut self.rx);
        let mut pos = 0;
        while !matches!(self.phase, Phase::Done) && rx.len() - pos >= LENGTH_PREFIX_BYTES {
            let len = usize::from(u16::from_be_bytes([rx[pos], rx[pos + 1]]));
            let (min, max) = match self.phase {
                Phase::Handshake(_) => (TAG_BYTES, HANDSHAKE_MESSAGE_BYTES_MAX),
                _ => (TAG_BYTES + RECORD_HEADER_BYTES, NOISE_MESSAGE_BYTES_MAX),
            };
            if len > max {
                self.fail(LinkError::FrameTooLarge { len, max });
                break;
            }
            if len < min {
                self.fail(LinkError::FrameTooShort { len });
                break;
            }
            if rx.len() - pos - LENGTH_PREFIX_BYTES < len {
                break;
            }
            let frame = &rx[pos + LENGTH_PREFIX_BYTES..pos + LENGTH_PREFIX_BYTES + len];
            pos += LENGTH_PREFIX_BYTES + len;
            if let Err(e) = self.handle_frame(frame) {
                self.fail(e);
            }
        }
        if !matches!(self.phase, Phase::Done) {
            self.rx = rx;
            self.rx.drain(..pos);
            // An idle link should not hold a frame-sized buffer: managers
            // keep one link per node.
            if self.rx.is_empty() && self.rx.capacity() > RX_IDLE_CAPACITY_BYTES_MAX {
                self.rx = Vec::new();
            }
        }
    }

    /// The peer closed its side of the connection.
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Done => {}
            _ if !self.rx.is_empty() => self.fail(LinkError::Truncated { bytes: self.rx.len() }),
            Phase::Handshake(_) => self.fail(LinkError::EofDuringHandshake),
            Phase::Transport(_) => self.fail(LinkError::Eof),
        }
    }

    /// Queues an application message; larger than one record, it is chunked.
    /// A refused message leaves the link unchanged.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), LinkError> {
        match self.phase {
            Phase::Transport(_) => {}
            Phase::Handshake(_) => return Err(LinkError::NotEstablished),
            Phase::Done => return Err(LinkError::Closed),
        }
        if payload.len() as u64 > u64::from(self.config.message_bytes_max) {
            return Err(LinkError::MessageTooLarge { len: payload.len() as u64, max: self.config.message_bytes_max });
        }
        let records = payload.len().div_ceil(CHUNK_BYTES_MAX).max(1);
        let len = payload.len() + records * RECORD_OVERHEAD_BYTES;
        if self.transmit_bytes + len > self.config.send_queue_bytes_max as usize {
            return Err(LinkError::SendQueueFull { queued: self.transmit_bytes, len, max: self.config.send_queue_bytes_max });
        }
        let mut chunks = payload.chunks(CHUNK_BYTES_MAX).peekable();
        if chunks.peek().is_none() {
            return self.push_record(KIND_LAST, &[]);
        }
        while let Some(chunk) = chunks.next() {
            let kind = if chunks.peek().is_some() { KIND_CHUNK } else { KIND_LAST };
            self.push_record(kind, chunk)?;
        }
        Ok(())
    }

    /// Ends the link, telling an established peer `reason` (truncated to
    /// [`CLOSE_REASON_BYTES_MAX`]). Events not yet polled are dropped; drain
    /// [`Link::poll_transmit`] before closing the socket.
    pub fn close(&mut self, reason: &str) {
        if matches!(self.phase, Phase::Transport(_)) {
            let mut end = reason.len().min(CLOSE_REASON_BYTES_MAX);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            // Best effort: an encryption failure here only loses the reason.
            let _ = self.push_record(KIND_CLOSE, &reason.as_bytes()[..end]);
        }
        self.phase = Phase::Done;
        self.events.clear();
        self.rx = Vec::new();
        self.reassembly = Vec::new();
    }

    /// Advances time: sends a keepalive after `keepalive_interval_ms` of not
    /// sending, times out after `idle_timeout_ms` of not receiving, and
    /// fails with [`LinkError::HandshakeTimedOut`] when the handshake is not
    /// done `handshake_timeout_ms` after creation. Call it after every input
    /// and at [`Link::deadline_ms`].
    pub fn tick(&mut self, now_ms: u64) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        if std::mem::take(&mut self.rx_since_tick) {
            self.last_rx_ms = now_ms;
        }
        if std::mem::take(&mut self.tx_since_tick) {
            self.last_tx_ms = now_ms;
        }
        if now_ms.saturating_sub(self.last_rx_ms) >= self.config.idle_timeout_ms {
            self.phase = Phase::Done;
            self.transmit.clear();
            self.transmit_bytes = 0;
            self.events.push_back(Event::TimedOut);
            return;
        }
        if matches!(self.phase, Phase::Handshake(_)) && now_ms >= self.handshake_deadline_ms {
            self.fail(LinkError::HandshakeTimedOut { ms: self.config.handshake_timeout_ms });
            return;
        }
        if matches!(self.phase, Phase::Transport(_)) && now_ms.saturating_sub(self.last_tx_ms) >= self.config.keepalive_interval_ms {
            if let Err(e) = self.push_record(KIND_KEEPALIVE, &[]) {
                self.fail(e);
                return;
            }
            self.tx_since_tick = false;
            self.last_tx_ms = now_ms;
        }
    }

    /// When [`Link::tick`] must next be called, if the link is alive.
    pub fn deadline_ms(&self) -> Option<u64> {
        let idle = self.last_rx_ms.saturating_add(self.config.idle_timeout_ms);
        match self.phase {
            Phase::Done => None,
            Phase::Handshake(_) => Some(idle.min(self.handshake_deadline_ms)),
            Phase::Transport(_) => Some(idle.min(self.last_tx_ms.saturating_add(self.config.keepalive_interval_ms))),
        }
    }

    /// The next bytes to write to the socket (one length-prefixed Noise message).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let out = self.transmit.pop_front()?;
        self.transmit_bytes -= out.len();
        Some(out)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the handshake finished and the link is not closed.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Transport(_))
    }

    /// Whether the link ended (closed, failed or timed out).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The peer's static public key, once the handshake revealed it.
    pub fn peer_static(&self) -> Option<[u8; 32]> {
        self.peer_static
    }

    /// Encrypted bytes waiting in [`Link::poll_transmit`].
    pub fn send_queue_bytes(&self) -> usize {
        self.transmit_bytes
    }

    /// Switches the keepalive interval and idle timeout of a running link
    /// (the swarm's link profile changed). Refused, changing nothing, unless
    /// `0 < keepalive_interval_ms < idle_timeout_ms`.
    pub fn set_timing(&mut self, keepalive_interval_ms: u64, idle_timeout_ms: u64) -> Result<(), LinkError> {
        if keepalive_interval_ms == 0 || keepalive_interval_ms >= idle_timeout_ms {
            return Err(LinkError::Config("keepalive_interval_ms must be positive and below idle_timeout_ms"));
        }
        self.config.keepalive_interval_ms = keepalive_interval_ms;
        self.config.idle_timeout_ms = idle_timeout_ms;
        Ok(())
    }

    /// The configured idle timeout; shells use it to bound stalled writes too.
    pub fn idle_timeout_ms(&self) -> u64 {
        self.config.idle_timeout_ms
    }

    fn fail(&mut self, error: LinkError) {
        self.phase = Phase::Done;
        self.transmit.clear();
        self.transmit_bytes = 0;
        self.rx = Vec::new();
        self.reassembly = Vec::new();
        self.events.push_back(Event::Closed(error));
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        // Taking the phase out means an early error return leaves it `Done`.
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Handshake(mut hs) => {
                let mut payload = vec![0u8; frame.len()];
                let n = hs.read_message(frame, &mut payload).map_err(|e| LinkError::Handshake(e.to_string()))?;
                payload.truncate(n);
                let version = *payload.first().ok_or(LinkError::Malformed("empty handshake payload"))?;
                if version != LINK_VERSION {
                    return Err(LinkError::Version { got: version, want: LINK_VERSION });
                }
                payload.remove(0);
                self.handshake_step(hs, payload)
            }
            Phase::Transport(mut ts) => {
                // Decrypt into the buffer that becomes the message body: one
                // allocation per record, no per-link scratch buffer.
                let mut body = vec![0u8; frame.len()];
                let n = ts.read_message(frame, &mut body).map_err(|_| LinkError::Decrypt)?;
                self.phase = Phase::Transport(ts);
                if n < RECORD_HEADER_BYTES {
                    return Err(LinkError::Malformed("record shorter than its header"));
                }
                let (version, kind) = (body[0], body[1]);
                if version != LINK_VERSION {
                    return Err(LinkError::Version { got: version, want: LINK_VERSION });
                }
                body.truncate(n);
                body.drain(..RECORD_HEADER_BYTES);
                self.handle_record(kind, body)
            }
            Phase::Done => Ok(()),
        }
    }

    /// Handles a handshake message already read into `hs` with `payload`.
    fn handshake_step(&mut self, mut hs: Box<snow::HandshakeState>, payload: Vec<u8>) -> Result<(), LinkError> {
        if !self.initiator && !hs.is_handshake_finished() {
            // Message 1 (`-> e`) read: answer with message 2 (`<- e, ee, s, es`).
            if !payload.is_empty() {
                return Err(LinkError::Malformed("first handshake message carries a payload"));
            }
            let mut p = vec![LINK_VERSION];
            p.extend_from_slice(&self.config.handshake_payload);
            push_handshake_message(&mut hs, &p, &mut self.transmit, &mut self.transmit_bytes)?;
            self.tx_since_tick = true;
            self.phase = Phase::Handshake(hs);
            return Ok(());
        }
        let peer: [u8; 32] =
            hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(LinkError::Handshake("peer sent no static key".into()))?;
        if self.initiator {
            // Message 2 read: check the pin before anything of ours (the join
            // token) leaves, then send message 3 (`-> s, se`).
            if let Some(pin) = self.config.peer_digest_pin {
                if digest(&peer) != pin {
                    return Err(LinkError::PinMismatch);
                }
            }
            let mut p = vec![LINK_VERSION];
            p.extend_from_slice(&self.config.handshake_payload);
            push_handshake_message(&mut hs, &p, &mut self.transmit, &mut self.transmit_bytes)?;
            self.tx_since_tick = true;
        }
        let ts = hs.into_transport_mode().map_err(|e| LinkError::Handshake(e.to_string()))?;
        self.phase = Phase::Transport(Box::new(ts));
        self.peer_static = Some(peer);
        self.events.push_back(Event::Established { peer_static: peer, peer_payload: payload });
        Ok(())
    }

    fn handle_record(&mut self, kind: u8, body: Vec<u8>) -> Result<(), LinkError> {
        match kind {
            KIND_CHUNK | KIND_LAST => {
                if kind == KIND_CHUNK && body.is_empty() {
                    return Err(LinkError::Malformed("empty chunk"));
                }
                let len = self.reassembly.len() as u64 + body.len() as u64;
                if len > u64::from(self.config.message_bytes_max) {
                    return Err(LinkError::MessageTooLarge { len, max: self.config.message_bytes_max });
                }
                if kind == KIND_LAST && self.reassembly.is_empty() {
                    self.events.push_back(Event::Message(body));
                } else {
                    self.reassembly.extend_from_slice(&body);
                    if kind == KIND_LAST {
                        self.events.push_back(Event::Message(std::mem::take(&mut self.reassembly)));
                    }
                }
                Ok(())
            }
            KIND_KEEPALIVE if body.is_empty() => Ok(()),
            KIND_KEEPALIVE => Err(LinkError::Malformed("keepalive with a body")),
            KIND_CLOSE => {
                let reason = String::from_utf8_lossy(&body[..body.len().min(CLOSE_REASON_BYTES_MAX)]).into_owned();
                Err(LinkError::ClosedByPeer { reason })
            }
            other => Err(LinkError::UnknownKind(other)),
        }
    }

    fn push_record(&mut self, kind: u8, body: &[u8]) -> Result<(), LinkError> {
        let Phase::Transport(ts) = &mut self.phase else {
            return Err(LinkError::NotEstablished);
        };
        debug_assert!(body.len() <= CHUNK_BYTES_MAX);
        let mut plain = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
        plain.extend_from_slice(&[LINK_VERSION, kind]);
        plain.extend_from_slice(body);
        let mut out = vec![0u8; LENGTH_PREFIX_BYTES + plain.len() + TAG_BYTES];
        let n = ts.write_message(&plain, &mut out[LENGTH_PREFIX_BYTES..]).map_err(|e| LinkError::Encrypt(e.to_string()))?;
        // n <= NOISE_MESSAGE_BYTES_MAX because body <= CHUNK_BYTES_MAX.
        out[..LENGTH_PREFIX_BYTES].copy_from_slice(&(n as u16).to_be_bytes());
        out.truncate(LENGTH_PREFIX_BYTES + n);
        self.transmit_bytes += out.len();
        self.transmit.push_back(out);
        self.tx_since_tick = true;
        Ok(())
    }

    /// Queues a raw record, bypassing the checks in `send`, to test how the
    /// peer handles hostile records.
    #[cfg(test)]
    pub(crate) fn push_raw_record(&mut self, version: u8, kind: u8, body: &[u8]) {
        let Phase::Transport(ts) = &mut self.phase else { panic!("not established") };
        let mut plain = vec![version, kind];
        plain.extend_from_slice(body);
        let mut out = vec![0u8; LENGTH_PREFIX_BYTES + plain.len() + TAG_BYTES];
        let n = ts.write_message(&plain, &mut out[LENGTH_PREFIX_BYTES..]).unwrap();
        out[..LENGTH_PREFIX_BYTES].copy_from_slice(&(n as u16).to_be_bytes());
        out.truncate(LENGTH_PREFIX_BYTES + n);
        self.transmit_bytes += out.len();
        self.transmit.push_back(out);
    }
}

fn validate(config: &LinkConfig) -> Result<(), LinkError> {
    if config.handshake_payload.len() > HANDSHAKE_PAYLOAD_BYTES_MAX {
        return Err(LinkError::HandshakePayloadTooLarge { len: config.handshake_payload.len(), max: HANDSHAKE_PAYLOAD_BYTES_MAX });
    }
    if config.keepalive_interval_ms == 0 || config.keepalive_interval_ms >= config.idle_timeout_ms {
        return Err(LinkError::Config("keepalive_interval_ms must be positive and below idle_timeout_ms"));
    }
    if config.handshake_timeout_ms == 0 {
        return Err(LinkError::Config("handshake_timeout_ms must be positive"));
    }
    let records = (config.message_bytes_max as usize).div_ceil(CHUNK_BYTES_MAX).max(1);
    if (config.send_queue_bytes_max as usize) < config.message_bytes_max as usize + records * RECORD_OVERHEAD_BYTES {
        return Err(LinkError::Config("send_queue_bytes_max must hold one message of message_bytes_max"));
    }
    Ok(())
}

fn push_handshake_message(
    hs: &mut snow::HandshakeState,
    payload: &[u8],
    transmit: &mut VecDeque<Vec<u8>>,
    transmit_bytes: &mut usize,
) -> Result<(), LinkError> {
    let mut out = vec![0u8; LENGTH_PREFIX_BYTES + HANDSHAKE_MESSAGE_BYTES_MAX];
    let n = hs.write_message(payload, &mut out[LENGTH_PREFIX_BYTES..]).map_err(|e| LinkError::Handshake(e.to_string()))?;
    // n <= HANDSHAKE_MESSAGE_BYTES_MAX < 65536, by the payload limit checked in `validate`.
    out[..LENGTH_PREFIX_BYTES].copy_from_slice(&(n as u16).to_be_bytes());
    out.truncate(LENGTH_PREFIX_BYTES + n);
    *transmit_bytes += out.len();
    transmit.push_back(out);
    Ok(())
}
