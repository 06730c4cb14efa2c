//! Byte-exact encode/decode tests and hostile-input tests of the wire format.

use super::*;

fn name(s: &str) -> Name {
    Name::from_dotted(s).unwrap()
}

fn query(id: u16, qname: &str, qtype: Type) -> Message {
    Message::query(id, name(qname), qtype)
}

fn a(owner: &str, ip: [u8; 4]) -> Record {
    Record { name: name(owner), class: CLASS_IN, ttl_secs: 600, data: RData::A(Ipv4Addr::from(ip)) }
}

const QUERY_WEB_A: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header: id, RD, qd=1
    3, b'w', b'e', b'b', 0, 0x00, 0x01, 0x00, 0x01, // web. A IN
];

const ANSWER_WEB_TWO_A: &[u8] = &[
    0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // QR RD RA, qd=1 an=2
    3, b'w', b'e', b'b', 0, 0x00, 0x01, 0x00, 0x01, // question
    0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 10, 0, 0, 2, // web A 600 10.0.0.2
    0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 10, 0, 0, 3, // web A 600 10.0.0.3
];

fn answer_web() -> Message {
    let mut m = query(0x1234, "web", Type::A);
    m.header.response = true;
    m.header.recursion_available = true;
    m.answers = vec![a("web", [10, 0, 0, 2]), a("web", [10, 0, 0, 3])];
    m
}

#[test]
fn query_for_web_a_is_byte_exact() {
    let m = query(0x1234, "web", Type::A);
    assert_eq!(m.encode(true).unwrap(), QUERY_WEB_A);
    assert_eq!(m.encode(false).unwrap(), QUERY_WEB_A);
    assert_eq!(Message::decode(QUERY_WEB_A).unwrap(), m);
}

#[test]
fn answer_with_two_a_records_compresses_owner_names_to_the_question() {
    let m = answer_web();
    assert_eq!(m.encode(true).unwrap(), ANSWER_WEB_TWO_A);
    assert_eq!(Message::decode(ANSWER_WEB_TWO_A).unwrap(), m);
    let plain = m.encode(false).unwrap();
    assert_eq!(plain.len(), ANSWER_WEB_TWO_A.len() + 2 * 3);
    assert_eq!(&plain[21..26], &[3, b'w', b'e', b'b', 0]);
    assert_eq!(Message::decode(&plain).unwrap(), m);
}

#[test]
fn suffix_compression_and_pointers_inside_rdata() {
    // tasks.web. A at 12; answer owner "web." points into the question (18),
    // a PTR target "x.tasks.web." is "x" plus a pointer to 12.
    let mut m = query(7, "tasks.web", Type::A);
    m.header.response = true;
    m.answers = vec![
        a("web", [10, 0, 0, 9]),
        Record { name: name("tasks.web"), class: CLASS_IN, ttl_secs: 1, data: RData::Ptr(name("x.tasks.web")) },
    ];
    let bytes = m.encode(true).unwrap();
    let question_end = 12 + 11 + 4;
    assert_eq!(&bytes[question_end..question_end + 2], &[0xC0, 18]);
    let ptr_owner = question_end + 16;
    assert_eq!(&bytes[ptr_owner..ptr_owner + 2], &[0xC0, 12]);
    assert_eq!(&bytes[ptr_owner + 10..ptr_owner + 12], &[0x00, 4], "rdlength of x + pointer");
    assert_eq!(&bytes[ptr_owner + 12..], &[1, b'x', 0xC0, 12]);
    assert_eq!(Message::decode(&bytes).unwrap(), m);
}

#[test]
fn srv_and_aaaa_round_trip_and_srv_targets_stay_uncompressed() {
    let mut m = query(9, "_http._tcp.web", Type::SRV);
    m.answers = vec![
        Record {
            name: name("_http._tcp.web"),
            class: CLASS_IN,
            ttl_secs: 600,
            data: RData::Srv { priority: 1, weight: 2, port: 80, target: name("web") },
        },
        Record { name: name("web"), class: CLASS_IN, ttl_secs: 600, data: RData::Aaaa("2001:db8::1".parse().unwrap()) },
    ];
    let bytes = m.encode(true).unwrap();
    assert!(bytes.windows(5).any(|w| w == [3, b'w', b'e', b'b', 0]), "SRV target written whole");
    assert_eq!(Message::decode(&bytes).unwrap(), m);
}

#[test]
fn truncation_drops_whole_records_and_sets_tc() {
    let mut m = answer_web();
    m.answers = (0..100).map(|i| a("web", [10, 0, 1, i])).collect();
    let bytes = m.encode_truncated(true, 512).unwrap();
    assert!(bytes.len() <= 512);
    let back = Message::decode(&bytes).unwrap();
    assert!(back.header.truncated);
    assert_eq!(back.answers.len(), (512 - 21) / 16);
    assert_eq!(back.answers[..], m.answers[..back.answers.len()]);
    let whole = Message::decode(&m.encode_truncated(true, 4096).unwrap()).unwrap();
    assert!(!whole.header.truncated);
    assert_eq!(whole.answers.len(), 100);
}

#[test]
fn names_parse_and_print() {
    assert_eq!(name("Web.Front.").wire(), &[3, b'W', b'e', b'b', 5, b'F', b'r', b'o', b'n', b't', 0]);
    assert_eq!(name("Web.Front").lookup_key().as_deref(), Some("web.front"));
    assert_eq!(name(".").lookup_key(), None);
    assert_eq!(name("web").to_string(), "web.");
    assert!(name("WEB").eq_ignore_case(&name("web")));
    assert!(matches!(Name::from_dotted("a..b"), Err(EncodeError::EmptyLabel { .. })));
    assert!(matches!(Name::from_dotted(&"a".repeat(64)), Err(EncodeError::LabelTooLong { .. })));
    let long = vec!["a".repeat(63); 4].join(".");
    assert!(matches!(Name::from_dotted(&long), Err(EncodeError::NameTooLong { .. })));
    assert_eq!(Name::from_dotted(&long[2..]).unwrap().wire().len(), 255);
    let odd = Name { wire: vec![3, b'a', b'.', 0xFF, 0] };
    assert_eq!(odd.lookup_key(), None);
    assert_eq!(odd.to_string(), "a\\046\\255.");
}

#[test]
fn every_truncation_of_a_message_is_an_error() {
    for len in 0..ANSWER_WEB_TWO_A.len() {
        let err = Message::decode(&ANSWER_WEB_TWO_A[..len]).unwrap_err();
        if len < HEADER_BYTES {
            assert_eq!(err, DecodeError::ShortHeader { len });
        } else {
            assert!(matches!(err, DecodeError::Truncated { .. }), "{len}: {err}");
        }
    }
}

fn with_question_name(name_bytes: &[u8]) -> Vec<u8> {
    let mut m = QUERY_WEB_A[..12].to_vec();
    m.extend_from_slice(name_bytes);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

#[test]
fn pointer_loops_and_forward_pointers_are_refused() {
    let self_loop = with_question_name(&[0xC0, 12]);
    assert_eq!(Message::decode(&self_loop).unwrap_err(), DecodeError::PointerNotBackwards { target: 12, floor: 12 });
    let forward = with_question_name(&[1, b'a', 0xC0, 16, 0]);
    assert_eq!(Message::decode(&forward).unwrap_err(), DecodeError::PointerNotBackwards { target: 16, floor: 12 });
    // A pointer back into the name's own labels would loop: it must point
    // below everything read so far.
    let mut two = QUERY_WEB_A.to_vec();
    two[5] = 2;
    two.extend_from_slice(&[1, b'b', 0xC0, 12 + 9, 0, 1, 0, 1]);
    assert!(matches!(Message::decode(&two).unwrap_err(), DecodeError::PointerNotBackwards { .. }));
}

#[test]
fn pointer_chains_are_bounded() {
    // 12: root; then a chain where each pointer points to the previous one.
    let mut bytes = QUERY_WEB_A[..12].to_vec();
    bytes.push(0);
    let mut previous = 12u8;
    for _ in 0..POINTER_HOPS_MAX + 1 {
        let at = bytes.len() as u8;
        bytes.extend_from_slice(&[0xC0, previous]);
        previous = at;
    }
    let start = usize::from(previous);
    assert_eq!(read_name(&bytes, start).unwrap_err(), DecodeError::TooManyPointers);
    let one_less = start - 2;
    assert_eq!(read_name(&bytes, one_less).unwrap().0, Name::root());
}

#[test]
fn long_names_bad_labels_and_counts_are_refused() {
    let mut long = Vec::new();
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.push(0);
    assert_eq!(Message::decode(&with_question_name(&long)).unwrap_err(), DecodeError::NameTooLong);
    // Compression cannot make a name longer than 255 bytes either.
    let mut built = QUERY_WEB_A[..12].to_vec();
    built.extend_from_slice(&long[64 * 3..]);
    let mut at = 12u8;
    for _ in 0..2 {
        let next = built.len() as u8;
        built.push(63);
        built.extend_from_slice(&[b'b'; 63]);
        built.extend_from_slice(&[0xC0, at]);
        at = next;
    }
    assert_eq!(read_name(&built, usize::from(at)).unwrap_err(), DecodeError::NameTooLong);
    assert_eq!(Message::decode(&with_question_name(&[0x40, 0])).unwrap_err(), DecodeError::BadLabelType { byte: 0x40 });
    let mut counts = QUERY_WEB_A.to_vec();
    counts[4..6].copy_from_slice(&[0xFF, 0xFF]);
    assert_eq!(Message::decode(&counts).unwrap_err(), DecodeError::TooManyRecords { section: "question", count: 0xFFFF });
    let mut lying = QUERY_WEB_A.to_vec();
    lying[6..8].copy_from_slice(&[0x01, 0x00]);
    assert!(matches!(Message::decode(&lying).unwrap_err(), DecodeError::Truncated { .. }));
    let mut bad_a = ANSWER_WEB_TWO_A.to_vec();
    bad_a[7] = 1;
    bad_a[32] = 3;
    assert_eq!(Message::decode(&bad_a[..36]).unwrap_err(), DecodeError::BadRdata { rtype: 1, len: 3 });
    assert_eq!(Message::decode(&vec![0; MESSAGE_BYTES_MAX + 1]).unwrap_err(), DecodeError::TooLong { len: 65_536 });
}

#[test]
fn encode_refuses_oversized_sections() {
    let mut m = answer_web();
    m.answers = vec![a("web", [1, 2, 3, 4]); RECORDS_PER_SECTION_MAX + 1];
    assert_eq!(m.encode(true).unwrap_err(), EncodeError::TooManyRecords { section: "answer", count: 257 });
}

/// xorshift64 for the seeded mutation tests.
pub(crate) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `count` seeded mutations of `base`: flipped, replaced, inserted, removed
/// and truncated bytes, several per input.
pub(crate) fn mutations(base: &[u8], seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut s = seed.max(1);
    (0..count)
        .map(|_| {
            let mut m = base.to_vec();
            for _ in 0..1 + xorshift(&mut s) % 4 {
                let at = (xorshift(&mut s) as usize) % (m.len() + 1);
                match xorshift(&mut s) % 5 {
                    0 if at < m.len() => m[at] ^= 1 << (xorshift(&mut s) % 8),
                    1 if at < m.len() => m[at] = xorshift(&mut s) as u8,
                    2 => m.insert(at, xorshift(&mut s) as u8),
                    3 if at < m.len() => {
                        m.remove(at);
                    }
                    _ => m.truncate(at),
                }
            }
            m
        })
        .collect()
}

#[test]
fn ten_thousand_mutations_never_panic_and_decoded_ones_round_trip() {
    let mut base = ANSWER_WEB_TWO_A.to_vec();
    base[11] = 1; // an additional: an OPT record with a 4096-byte UDP size
    base.extend_from_slice(&[0, 0x00, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Message::decode(&base).unwrap().udp_payload_bytes(), 4096);
    let (mut ok, mut errors) = (0, 0);
    for bytes in mutations(&base, 0x5EED, 10_000) {
        match Message::decode(&bytes) {
            Ok(m) => {
                ok += 1;
                for compress in [true, false] {
                    let again = m.encode(compress).unwrap();
                    assert_eq!(Message::decode(&again).unwrap(), m, "{bytes:02x?}");
                }
            }
            Err(_) => errors += 1,
        }
        let _ = first_question(&bytes);
    }
    assert!(ok > 100 && errors > 1000, "mutations exercise both paths: {ok} ok, {errors} errors");
}
