//! Tests of the link core through an in-memory [`Pair`] (after quinn-proto's
//! `tests/util.rs`): two links pumped into each other with seeded arbitrary
//! splits, optional corruption, and a controlled clock; plus the join flow,
//! hostile inputs, property tests and printed benchmarks.

use crate::noise::key::{digest, NodeKey};
use crate::noise::link::*;
use crate::noise::token::{check_join_hello, encode_join_hello, JoinError, JoinSecrets, JoinToken, Role, Secret};
use crate::rng::Rng;
use proptest::prelude::*;

/// Two links connected in memory: `a` is the initiator, `b` the responder.
struct Pair {
    a: Link,
    b: Link,
    a_key: NodeKey,
    b_key: NodeKey,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    rng: Rng,
    /// Deliver bytes in random splits instead of whole frames.
    split: bool,
    /// Bytes moved a to b and b to a.
    wire_bytes: [u64; 2],
    now_ms: u64,
}

impl Pair {
    fn new(seed: u64) -> Pair {
        Pair::with(seed, |_| {}, |_| {})
    }

    fn with(seed: u64, a_config: impl FnOnce(&mut LinkConfig), b_config: impl FnOnce(&mut LinkConfig)) -> Pair {
        let (a_key, b_key) = (key(seed.wrapping_mul(2).wrapping_add(1)), key(seed.wrapping_mul(2).wrapping_add(2)));
        let mut ac = LinkConfig::lan(*a_key.private());
        let mut bc = LinkConfig::lan(*b_key.private());
        a_config(&mut ac);
        b_config(&mut bc);
        Pair {
            a: Link::initiator(ac, 0).unwrap(),
            b: Link::responder(bc, 0).unwrap(),
            a_key,
            b_key,
            a_events: Vec::new(),
            b_events: Vec::new(),
            rng: Rng::from_seed(seed),
            split: true,
            wire_bytes: [0, 0],
            now_ms: 0,
        }
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        self.pump_with(|_| {});
    }

    /// Like [`Pair::pump`], with `mangle` applied to every a-to-b buffer.
    fn pump_with(&mut self, mut mangle: impl FnMut(&mut Vec<u8>)) {
        loop {
            self.a.tick(self.now_ms);
            self.b.tick(self.now_ms);
            let mut moved = false;
            let mut ab = drain(&mut self.a);
            mangle(&mut ab);
            moved |= !ab.is_empty();
            self.wire_bytes[0] += ab.len() as u64;
            deliver(&mut self.b, &ab, self.split, &mut self.rng);
            let ba = drain(&mut self.b);
            moved |= !ba.is_empty();
            self.wire_bytes[1] += ba.len() as u64;
            deliver(&mut self.a, &ba, self.split, &mut self.rng);
            self.a.tick(self.now_ms);
            self.b.tick(self.now_ms);
            self.a_events.extend(std::iter::from_fn(|| self.a.poll_event()));
            self.b_events.extend(std::iter::from_fn(|| self.b.poll_event()));
            if !moved {
                break;
            }
        }
    }

    fn established(seed: u64) -> Pair {
        let mut p = Pair::new(seed);
        p.pump();
        assert!(p.a.is_established() && p.b.is_established());
        p.a_events.clear();
        p.b_events.clear();
        p
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.pump();
    }
}

fn key(seed: u64) -> NodeKey {
    let mut rng = Rng::from_seed(seed);
    let mut private = [0u8; 32];
    for chunk in private.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    NodeKey::from_private(private).unwrap()
}

fn drain(link: &mut Link) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(frame) = link.poll_transmit() {
        out.extend_from_slice(&frame);
    }
    out
}

fn deliver(link: &mut Link, mut bytes: &[u8], split: bool, rng: &mut Rng) {
    while !bytes.is_empty() {
        let n = if split { rng.range(1, bytes.len() as u64 + 1) as usize } else { bytes.len() };
        link.handle_bytes(&bytes[..n]);
        bytes = &bytes[n..];
    }
}

fn messages(events: &[Event]) -> Vec<Vec<u8>> {
    events.iter().filter_map(|e| if let Event::Message(m) = e { Some(m.clone()) } else { None }).collect()
}

fn closed(events: &[Event]) -> Option<LinkError> {
    events.iter().find_map(|e| if let Event::Closed(err) = e { Some(err.clone()) } else { None })
}

#[test]
fn handshake_exchanges_keys_and_payloads() {
    for seed in 0..20 {
        let mut p = Pair::with(seed, |c| c.handshake_payload = b"hello from a".to_vec(), |c| c.handshake_payload = b"from b".to_vec());
        p.pump();
        assert_eq!(
            p.a_events,
            vec![Event::Established { peer_static: *p.b_key.public(), peer_payload: b"from b".to_vec() }],
            "seed {seed}"
        );
        assert_eq!(p.b_events, vec![Event::Established { peer_static: *p.a_key.public(), peer_payload: b"hello from a".to_vec() }]);
        assert_eq!(p.b.peer_static(), Some(*p.a_key.public()));
        assert_eq!(p.a.peer_static(), Some(*p.b_key.public()));
    }
}

#[test]
fn messages_both_ways_with_chunking() {
    for seed in 0..8 {
        let mut p = Pair::established(seed);
        let big: Vec<u8> = (0..1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let exact: Vec<u8> = vec![0xab; CHUNK_BYTES_MAX];
        p.a.send(b"one").unwrap();
        p.a.send(&[]).unwrap();
        p.a.send(&big).unwrap();
        p.a.send(&exact).unwrap();
        p.b.send(b"reply").unwrap();
        p.b.send(&big).unwrap();
        p.pump();
        assert_eq!(messages(&p.b_events), vec![b"one".to_vec(), vec![], big.clone(), exact.clone()], "seed {seed}");
        assert_eq!(messages(&p.a_events), vec![b"reply".to_vec(), big.clone()]);
    }
}

#[test]
fn chunk_count_and_overhead() {
    let mut p = Pair::established(1);
    let big = vec![1u8; 1024 * 1024];
    p.a.send(&big).unwrap();
    let mut frames = 0;
    let mut bytes = 0;
    while let Some(f) = p.a.poll_transmit() {
        assert!(f.len() <= LENGTH_PREFIX_BYTES + NOISE_MESSAGE_BYTES_MAX);
        frames += 1;
        bytes += f.len();
    }
    assert_eq!(frames, big.len().div_ceil(CHUNK_BYTES_MAX));
    assert_eq!(bytes, big.len() + frames * RECORD_OVERHEAD_BYTES);
}

#[test]
fn pin_match_and_mismatch() {
    let responder = key(2 * 7 + 2);
    let mut ok = Pair::with(7, |c| c.peer_digest_pin = Some(digest(responder.public())), |_| {});
    ok.pump();
    assert!(ok.a.is_established() && ok.b.is_established());

    // The initiator pins another key: it stops after message 2, so its
    // handshake payload (the join token) never leaves.
    let token = b"SHLTKN-1-secret-in-handshake".to_vec();
    let mut bad = Pair::with(
        7,
        |c| {
            c.peer_digest_pin = Some(digest(&[1; 32]));
            c.handshake_payload = token.clone();
        },
        |_| {},
    );
    let mut a_to_b = Vec::new();
    bad.pump_with(|bytes| a_to_b.extend_from_slice(bytes));
    let err = closed(&bad.a_events).unwrap();
    assert_eq!(err, LinkError::PinMismatch);
    assert_eq!(
        err.to_string(),
        "manager key does not match the join token: possible man-in-the-middle, or the token belongs to another swarm"
    );
    assert!(a_to_b.len() < 100, "only message 1 went out: {} bytes", a_to_b.len());
    assert!(!bad.b.is_established());
    bad.b.handle_eof();
    assert_eq!(bad.b.poll_event(), Some(Event::Closed(LinkError::EofDuringHandshake)));
}

/// The join flow the manager will run: the joiner's token rides in the
/// handshake, the manager checks it with the pure `check_join_hello` and closes
/// with the reason, and the joiner sees a clear error.
#[test]
fn join_flow_accepts_valid_and_refuses_rotated_tokens() {
    let cluster = key(100);
    let mut secrets = JoinSecrets { worker: Secret::from_bytes([1; 16]), manager: Secret::from_bytes([2; 16]) };
    let worker_token = secrets.token(cluster.public(), Role::Worker);
    let join = |token: &JoinToken, secrets: &JoinSecrets| {
        let joiner = key(101);
        let mut a = LinkConfig::lan(*joiner.private());
        a.peer_digest_pin = Some(worker_token.cluster_key_digest);
        a.handshake_payload = encode_join_hello(token);
        let mut p = Pair::with(3, |_| {}, |_| {});
        p.a = Link::initiator(a, 0).unwrap();
        p.b = Link::responder(LinkConfig::lan(*cluster.private()), 0).unwrap();
        p.pump();
        let Some(Event::Established { peer_payload, .. }) = p.b_events.first().cloned() else { panic!("{:?}", p.b_events) };
        let verdict = check_join_hello(&peer_payload, cluster.public(), secrets);
        if let Err(e) = &verdict {
            p.b.close(&e.to_string());
        }
        p.pump();
        (verdict, closed(&p.a_events))
    };
    assert_eq!(join(&worker_token, &secrets), (Ok(Role::Worker), None));
    secrets.rotate(Role::Worker, Secret::from_bytes([3; 16]));
    let (verdict, joiner_error) = join(&worker_token, &secrets);
    assert_eq!(verdict, Err(JoinError::Secret));
    let joiner_error = joiner_error.unwrap().to_string();
    assert_eq!(joiner_error, "closed by the peer: join token secret is not valid: the token was rotated or mistyped");
}

#[test]
fn keepalives_and_idle_timeout() {
    let mut p = Pair::established(2);
    // Idle but connected: keepalives flow and nobody times out.
    let before = p.wire_bytes;
    for _ in 0..10 {
        p.advance(1_000);
    }
    assert!(p.a_events.is_empty() && p.b_events.is_empty(), "{:?} {:?}", p.a_events, p.b_events);
    let per_keepalive = (p.wire_bytes[0] - before[0]) / 10;
    assert_eq!(per_keepalive, RECORD_OVERHEAD_BYTES as u64, "one keepalive per second of {RECORD_OVERHEAD_BYTES} bytes");

    // The peer goes silent: a keepalive at 1 s, a timeout at 3 s.
    let t = p.now_ms;
    p.a.tick(t + 1_000);
    assert!(p.a.poll_transmit().is_some());
    p.a.tick(t + 2_999);
    assert_eq!(p.a.poll_event(), None);
    // Another keepalive went out at 2999, so the idle timeout is next.
    assert_eq!(p.a.deadline_ms(), Some(t + 3_000));
    p.a.tick(t + 3_000);
    assert_eq!(p.a.poll_event(), Some(Event::TimedOut));
    assert!(p.a.is_closed());
    assert_eq!(p.a.send(b"x"), Err(LinkError::Closed));
}

#[test]
fn edge_timing_on_a_running_link_keeps_it_up_through_long_silences() {
    let mut p = Pair::established(2);
    let (keepalive_ms, idle_ms) = profile_timing(crate::types::LinkProfile::Edge);
    assert_eq!((keepalive_ms, idle_ms), (LinkConfig::edge([0; 32]).keepalive_interval_ms, LinkConfig::edge([0; 32]).idle_timeout_ms));
    assert!(p.a.set_timing(0, 10).is_err() && p.a.set_timing(10, 10).is_err(), "invalid timings are refused");
    p.a.set_timing(keepalive_ms, idle_ms).unwrap();
    p.b.set_timing(keepalive_ms, idle_ms).unwrap();
    // Idle for a minute: one keepalive each per 15 s, no timeout (lan would time out after 3 s).
    let before = p.wire_bytes;
    for _ in 0..60 {
        p.advance(1_000);
    }
    assert!(p.a_events.is_empty() && p.b_events.is_empty(), "{:?} {:?}", p.a_events, p.b_events);
    assert_eq!((p.wire_bytes[0] - before[0]) / RECORD_OVERHEAD_BYTES as u64, 4, "4 keepalives in 60 s");
    // Silent for the edge idle timeout: dead.
    let t = p.now_ms;
    p.a.tick(t + idle_ms - 1);
    assert_eq!(p.a.poll_event(), None);
    p.a.tick(t + idle_ms);
    assert_eq!(p.a.poll_event(), Some(Event::TimedOut));
}

#[test]
fn handshake_times_out_without_answer() {
    let mut a = Link::initiator(LinkConfig::lan(*key(1).private()), 500).unwrap();
    assert!(a.poll_transmit().is_some());
    assert_eq!(a.send(b"early"), Err(LinkError::NotEstablished));
    a.tick(3_499);
    assert_eq!(a.poll_event(), None);
    a.tick(3_500);
    assert_eq!(a.poll_event(), Some(Event::TimedOut));
}

#[test]
fn trickling_peer_fails_the_handshake_deadline() {
    // A peer that sends one byte of a maximal first handshake message every
    // second is never silent for `idle_timeout_ms`, yet must not hold the
    // responder past `handshake_timeout_ms` from its creation.
    let config = LinkConfig::lan(*key(1).private());
    let (idle_ms, handshake_ms) = (config.idle_timeout_ms, config.handshake_timeout_ms);
    assert!(handshake_ms > idle_ms, "the case needs trickling to outlive the idle timeout");
    let mut b = Link::responder(config, 200).unwrap();
    assert_eq!(b.deadline_ms(), Some(200 + idle_ms));
    b.handle_bytes(&(HANDSHAKE_MESSAGE_BYTES_MAX as u16).to_be_bytes());
    let mut now = 200;
    while now + 1_000 < 200 + handshake_ms {
        now += 1_000;
        b.handle_bytes(&[0]);
        b.tick(now);
        assert_eq!(b.poll_event(), None, "at {now} ms");
    }
    assert_eq!(b.deadline_ms(), Some(200 + handshake_ms), "the handshake deadline is next");
    b.tick(200 + handshake_ms - 1);
    assert_eq!(b.poll_event(), None);
    b.tick(200 + handshake_ms);
    assert_eq!(b.poll_event(), Some(Event::Closed(LinkError::HandshakeTimedOut { ms: handshake_ms })));
    assert!(b.is_closed());
    assert_eq!(b.deadline_ms(), None);
    assert_eq!(b.poll_transmit(), None);

    // An established link no longer has a handshake deadline.
    let mut p = Pair::established(12);
    for _ in 0..handshake_ms / 1_000 + 1 {
        p.advance(1_000);
    }
    assert!(p.a_events.is_empty() && p.b_events.is_empty(), "{:?} {:?}", p.a_events, p.b_events);
    assert!(p.a.is_established() && p.b.is_established());
}

#[test]
fn refused_sends_leave_the_link_unchanged() {
    let mut p = Pair::with(
        4,
        |c| {
            c.message_bytes_max = 100_000;
            c.send_queue_bytes_max = 200_000;
        },
        |_| {},
    );
    p.pump();
    let queued = p.a.send_queue_bytes();
    assert_eq!(p.a.send(&vec![0; 100_001]), Err(LinkError::MessageTooLarge { len: 100_001, max: 100_000 }));
    p.a.send(&vec![0; 100_000]).unwrap();
    let queued_one = p.a.send_queue_bytes();
    assert!(queued_one > queued);
    assert!(matches!(p.a.send(&vec![0; 100_000]), Err(LinkError::SendQueueFull { .. })));
    assert_eq!(p.a.send_queue_bytes(), queued_one);
    p.pump();
    assert_eq!(messages(&p.b_events), vec![vec![0; 100_000]]);
    p.a.send(b"still fine").unwrap();
    p.pump();
    assert_eq!(messages(&p.b_events).last().unwrap(), b"still fine");
}

#[test]
fn local_close_tells_the_peer() {
    let mut p = Pair::established(5);
    p.a.send(b"last words").unwrap();
    p.a.close(&"x".repeat(1000));
    assert!(p.a.is_closed());
    p.pump();
    assert_eq!(messages(&p.b_events), vec![b"last words".to_vec()]);
    assert_eq!(closed(&p.b_events), Some(LinkError::ClosedByPeer { reason: "x".repeat(CLOSE_REASON_BYTES_MAX) }));
}

#[test]
fn config_is_validated() {
    let mut c = LinkConfig::lan([1; 32]);
    c.handshake_payload = vec![0; HANDSHAKE_PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(Link::initiator(c, 0), Err(LinkError::HandshakePayloadTooLarge { .. })));
    let mut c = LinkConfig::lan([1; 32]);
    c.keepalive_interval_ms = c.idle_timeout_ms;
    assert!(matches!(Link::responder(c, 0), Err(LinkError::Config(_))));
    let mut c = LinkConfig::lan([1; 32]);
    c.handshake_timeout_ms = 0;
    assert_eq!(Link::initiator(c, 0).err(), Some(LinkError::Config("handshake_timeout_ms must be positive")));
    let mut c = LinkConfig::edge([1; 32]);
    c.send_queue_bytes_max = c.message_bytes_max;
    assert!(matches!(Link::responder(c, 0), Err(LinkError::Config(_))));
    let mut c = LinkConfig::lan([1; 32]);
    c.handshake_payload = vec![0; HANDSHAKE_PAYLOAD_BYTES_MAX];
    let mut p = Pair::new(9);
    p.a = Link::initiator(c.clone(), 0).unwrap();
    p.b = Link::responder(LinkConfig { handshake_payload: c.handshake_payload.clone(), ..LinkConfig::lan(*key(5).private()) }, 0).unwrap();
    p.pump();
    assert!(p.a.is_established() && p.b.is_established(), "largest handshake payloads fit");
}

// Hostile input: every case ends in `Closed(error)`, never a panic.

#[test]
fn hostile_frames_in_handshake() {
    let fresh = || Link::responder(LinkConfig::lan(*key(1).private()), 0).unwrap();
    let cases: Vec<(Vec<u8>, LinkError)> = vec![
        (vec![0xff, 0xff], LinkError::FrameTooLarge { len: 65535, max: HANDSHAKE_MESSAGE_BYTES_MAX }),
        (vec![0, 3, 1, 2, 3], LinkError::FrameTooShort { len: 3 }),
        ([vec![0, 40], vec![7; 32], vec![LINK_VERSION; 8]].concat(), LinkError::Malformed("first handshake message carries a payload")),
    ];
    for (bytes, want) in cases {
        let mut b = fresh();
        b.handle_bytes(&bytes);
        assert_eq!(b.poll_event(), Some(Event::Closed(want)));
        assert!(b.is_closed());
        b.handle_bytes(&bytes);
        assert_eq!(b.poll_event(), None, "a dead link ignores input");
    }
    // Truncated: half a frame, then EOF.
    let mut b = fresh();
    b.handle_bytes(&[0, 33, 1, 2]);
    b.handle_eof();
    assert_eq!(b.poll_event(), Some(Event::Closed(LinkError::Truncated { bytes: 4 })));
    // Garbage of the right size fails in snow, as a handshake error.
    let mut a = Link::initiator(LinkConfig::lan(*key(1).private()), 0).unwrap();
    a.handle_bytes(&[&[0u8, 200][..], &[9u8; 200][..]].concat());
    assert!(matches!(a.poll_event(), Some(Event::Closed(LinkError::Handshake(_)))));
}

#[test]
fn wrong_version_or_prologue_fails_the_handshake() {
    let mut p = Pair::new(11);
    p.a = Link::new(LinkConfig::lan(*key(1).private()), true, 0, 2).unwrap();
    p.pump();
    assert_eq!(closed(&p.b_events), Some(LinkError::Version { got: 2, want: LINK_VERSION }));
    p.a.handle_eof();
    assert_eq!(closed(&[p.a.poll_event().unwrap()]), Some(LinkError::EofDuringHandshake));

    let mut p = Pair::with(12, |c| c.prologue = b"raft".to_vec(), |c| c.prologue = b"join".to_vec());
    p.pump();
    assert!(matches!(closed(&p.a_events), Some(LinkError::Handshake(_))), "{:?}", p.a_events);
}

#[test]
fn hostile_records_after_handshake() {
    let cases: Vec<(u8, u8, Vec<u8>, LinkError)> = vec![
        (9, KIND_LAST_FOR_TESTS, vec![1], LinkError::Version { got: 9, want: LINK_VERSION }),
        (LINK_VERSION, 77, vec![], LinkError::UnknownKind(77)),
        (LINK_VERSION, 0, vec![], LinkError::Malformed("empty chunk")),
        (LINK_VERSION, 2, vec![1], LinkError::Malformed("keepalive with a body")),
    ];
    for (version, kind, body, want) in cases {
        let mut p = Pair::established(13);
        p.a.push_raw_record(version, kind, &body);
        p.pump();
        assert_eq!(closed(&p.b_events), Some(want));
        assert!(p.b.is_closed());
    }
}

const KIND_LAST_FOR_TESTS: u8 = 1;

#[test]
fn chunk_flood_beyond_message_limit_is_refused() {
    let mut p = Pair::with(
        14,
        |_| {},
        |c| {
            c.message_bytes_max = 200_000;
            c.send_queue_bytes_max = 400_000;
        },
    );
    p.pump();
    for _ in 0..10 {
        p.a.push_raw_record(LINK_VERSION, 0, &vec![0; CHUNK_BYTES_MAX]);
    }
    p.pump();
    assert_eq!(closed(&p.b_events), Some(LinkError::MessageTooLarge { len: 4 * CHUNK_BYTES_MAX as u64, max: 200_000 }));
}

#[test]
fn corrupted_reordered_or_oversized_transport_frames() {
    // One flipped bit anywhere in a record: authentication fails.
    for offset in [2usize, 10, 30] {
        let mut p = Pair::established(15);
        p.a.send(&[5; 100]).unwrap();
        p.pump_with(|bytes| {
            if bytes.len() > offset {
                bytes[offset] ^= 0x40;
            }
        });
        assert!(matches!(closed(&p.b_events), Some(LinkError::Decrypt) | Some(LinkError::FrameTooShort { .. })), "{:?}", p.b_events);
    }
    // Two records swapped: the nonce does not match.
    let mut p = Pair::established(16);
    p.a.send(b"first").unwrap();
    p.a.send(b"second").unwrap();
    let first = p.a.poll_transmit().unwrap();
    let second = p.a.poll_transmit().unwrap();
    p.b.handle_bytes(&second);
    p.b.handle_bytes(&first);
    assert_eq!(p.b.poll_event(), Some(Event::Closed(LinkError::Decrypt)));
    // A record replayed: also refused.
    let mut p = Pair::established(17);
    p.a.send(b"once").unwrap();
    let frame = p.a.poll_transmit().unwrap();
    p.b.handle_bytes(&frame);
    p.b.handle_bytes(&frame);
    assert_eq!(p.b.poll_event(), Some(Event::Message(b"once".to_vec())));
    assert_eq!(p.b.poll_event(), Some(Event::Closed(LinkError::Decrypt)));
    // Too short for a record.
    let mut p = Pair::established(18);
    p.b.handle_bytes(&[0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(p.b.poll_event(), Some(Event::Closed(LinkError::FrameTooShort { len: 5 })));
    // EOF mid-frame and clean EOF.
    let mut p = Pair::established(19);
    p.b.handle_bytes(&[0, 40]);
    p.b.handle_eof();
    assert_eq!(p.b.poll_event(), Some(Event::Closed(LinkError::Truncated { bytes: 2 })));
    let mut p = Pair::established(20);
    p.b.handle_eof();
    assert_eq!(p.b.poll_event(), Some(Event::Closed(LinkError::Eof)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_fresh_link(bytes in proptest::collection::vec(any::<u8>(), 0..4096), initiator: bool) {
        let config = LinkConfig::lan(*key(1).private());
        let mut link = if initiator { Link::initiator(config, 0).unwrap() } else { Link::responder(config, 0).unwrap() };
        link.handle_bytes(&bytes);
        link.handle_eof();
        link.tick(10_000);
        while link.poll_event().is_some() {}
    }

    #[test]
    fn arbitrary_bytes_never_panic_an_established_link(bytes in proptest::collection::vec(any::<u8>(), 0..4096), prefix in any::<u16>()) {
        let mut p = Pair::established(21);
        p.b.handle_bytes(&prefix.to_be_bytes());
        p.b.handle_bytes(&bytes);
        p.b.handle_eof();
        while p.b.poll_event().is_some() {}
    }

    #[test]
    fn random_corruption_never_panics_and_never_delivers_garbage(seed in any::<u64>(), flip_at in 0usize..2000, mask in 1u8..=255) {
        let mut p = Pair::new(seed);
        p.a.send(b"x").unwrap_err();
        let mut sent = 0usize;
        p.pump_with(|bytes| {
            if sent <= flip_at && flip_at < sent + bytes.len() {
                bytes[flip_at - sent] ^= mask;
            }
            sent += bytes.len();
        });
        if p.a.is_established() {
            let _ = p.a.send(b"payload");
            p.pump_with(|_| {});
        }
        for m in messages(&p.b_events) {
            prop_assert_eq!(m, b"payload".to_vec());
        }
    }
}

/// Prints figures for the README (run with `--release --nocapture`); asserts nothing about speed.
#[test]
fn bench_prints_figures() {
    let rounds = 20u32;
    let start = std::time::Instant::now();
    for seed in 0..rounds {
        let mut p = Pair::new(u64::from(seed));
        p.split = false;
        p.pump();
        assert!(p.b.is_established());
    }
    let handshake_us = start.elapsed().as_micros() / u128::from(rounds);

    let mut p = Pair::established(30);
    p.split = false;
    let msg = vec![7u8; 64 * 1024];
    let count = 256;
    let start = std::time::Instant::now();
    for _ in 0..count {
        p.a.send(&msg).unwrap();
        p.pump();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(messages(&p.b_events).len(), count);
    let mib_s = (count * msg.len()) as f64 / secs / (1024.0 * 1024.0);

    let mut p = Pair::established(31);
    let before = p.wire_bytes[0];
    p.advance(1_000);
    let keepalive = p.wire_bytes[0] - before;
    let handshake_bytes = Pair::new(32).measure_handshake_bytes();
    println!(
        "noise bench: handshake {handshake_us} us (both sides, in memory), {handshake_bytes} handshake bytes on the wire, \
         64 KiB messages {mib_s:.1} MiB/s, idle keepalive {keepalive} bytes per interval per direction (+ TCP/IP headers)"
    );
}

impl Pair {
    fn measure_handshake_bytes(&mut self) -> u64 {
        self.pump();
        self.wire_bytes[0] + self.wire_bytes[1]
    }
}
