//! Fuzzes the Noise link's decoders: arbitrary bytes into a fresh initiator,
//! a fresh responder, or a responder that finished a real handshake (so the
//! transport-record path is reached). Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_shared::noise::link::{Link, LinkConfig};

fn established() -> (Link, Link) {
    let mut a = Link::initiator(LinkConfig::lan([1; 32]), 0).expect("valid config");
    let mut b = Link::responder(LinkConfig::lan([2; 32]), 0).expect("valid config");
    for _ in 0..4 {
        while let Some(f) = a.poll_transmit() {
            b.handle_bytes(&f);
        }
        while let Some(f) = b.poll_transmit() {
            a.handle_bytes(&f);
        }
    }
    assert!(a.is_established() && b.is_established());
    (a, b)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut link = match mode % 3 {
        0 => Link::initiator(LinkConfig::lan([1; 32]), 0).expect("valid config"),
        1 => Link::responder(LinkConfig::lan([2; 32]), 0).expect("valid config"),
        _ => established().1,
    };
    // Feed in two pieces to exercise partial frames.
    let cut = rest.len() / 2;
    link.handle_bytes(&rest[..cut]);
    link.handle_bytes(&rest[cut..]);
    link.handle_eof();
    link.tick(u64::from(mode) * 1_000);
    while link.poll_event().is_some() {}
    while link.poll_transmit().is_some() {}
});
