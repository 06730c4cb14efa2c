//! Fuzz target: arbitrary frames decoded and stepped into raft nodes in
//! every role. Input layout: byte 0 picks the role, then frames as
//! `[len: u8][bytes; len]`, with a trailing tick/propose after each frame.
//! Invariants: nothing panics; a refused step leaves the node unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_manager::raft::{decode, Config, Persisted, Raft};

fn node(role: u8) -> Raft {
    let cfg = Config::lan(1, 1);
    match role % 4 {
        // Follower of a 3-voter cluster.
        0 => Raft::bootstrap(cfg, &[1, 2, 3]).expect("valid bootstrap"),
        // (Pre-)candidate.
        1 => {
            let mut r = Raft::bootstrap(cfg, &[1, 2, 3]).expect("valid bootstrap");
            r.campaign().expect("voter may campaign");
            r
        }
        // Single-voter leader.
        2 => {
            let mut r = Raft::bootstrap(cfg, &[1]).expect("valid bootstrap");
            r.tick();
            while r.has_ready() {
                let rd = r.ready();
                r.advance(rd);
            }
            r
        }
        // Empty joining node.
        _ => Raft::restore(cfg, Persisted::default()).expect("empty state restores"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&role, mut rest)) = data.split_first() else { return };
    let mut raft = node(role);
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        if let Ok(msg) = decode(frame) {
            let before = format!("{raft:?}");
            if raft.step(msg).is_err() {
                assert_eq!(before, format!("{raft:?}"), "failed step mutated state");
            }
        }
        raft.tick();
        let _ = raft.propose(frame.to_vec());
        while raft.has_ready() {
            let rd = raft.ready();
            raft.advance(rd);
        }
    }
});
