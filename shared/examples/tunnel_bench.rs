//! The encrypted overlay's relay core on its own (issue #15): how many
//! VXLAN-sized packets per second one core seals and opens (the relay's
//! crypto and checks, no I/O), and the CPU time per GiB moved. Run natively
//! and under QEMU for a rough ARM figure (`targets/net-bench.sh` does both):
//!
//!   cargo run --release -p shoal-shared --example tunnel_bench [MiB]
//!   cargo run --release -p shoal-shared --example tunnel_bench --target aarch64-unknown-linux-musl [MiB]
//!
//! Prints figures, asserts only that every packet came through.

use shoal_shared::tunnel::relay::{Relay, TunnelPeer};
use std::net::Ipv4Addr;
use std::time::Instant;

/// A VXLAN packet of an encrypted network at its default MTU (1,393-byte
/// task packets): 1,443 bytes, as the TUN device hands them over.
const PACKET_BYTES: usize = 1_443;

fn packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; PACKET_BYTES];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PACKET_BYTES as u16).to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[22..24].copy_from_slice(&4789u16.to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn main() {
    let mib: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let (ta, tb) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    let (ua, ub) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let peers =
        vec![TunnelPeer { node_id: "a".into(), tunnel: ta, underlay: ua }, TunnelPeer { node_id: "b".into(), tunnel: tb, underlay: ub }];
    let mut a = Relay::new("a", ta, 4789, 1, [1; 32], 0);
    let mut b = Relay::new("b", tb, 4789, 2, [2; 32], 0);
    a.set_peers(&peers);
    b.set_peers(&peers);
    b.install(&a.announcement().clone());
    let p = packet(ta, tb);
    let count = mib * 1024 * 1024 / PACKET_BYTES as u64;
    let (mut seal_s, mut open_s) = (0f64, 0f64);
    let batch = 4_096u64;
    let mut frames = Vec::with_capacity(batch as usize);
    let mut done = 0u64;
    while done < count {
        let n = batch.min(count - done);
        let t = Instant::now();
        for _ in 0..n {
            frames.push(a.outgoing(&p).expect("sealed").1);
        }
        seal_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for f in frames.drain(..) {
            let got = b.incoming(ua, &f).expect("opened");
            assert_eq!(got.len(), PACKET_BYTES);
        }
        open_s += t.elapsed().as_secs_f64();
        done += n;
    }
    let bytes = (count * PACKET_BYTES as u64) as f64;
    let gib = bytes / (1u64 << 30) as f64;
    println!(
        "tunnel core ({}): {count} packets of {PACKET_BYTES} B; seal {:.0} MB/s ({:.2} CPU s/GiB), open {:.0} MB/s ({:.2} CPU s/GiB), {:.0} ns per packet both ways",
        std::env::consts::ARCH,
        bytes / seal_s / 1e6,
        seal_s / gib,
        bytes / open_s / 1e6,
        open_s / gib,
        (seal_s + open_s) / count as f64 * 1e9
    );
    assert_eq!(b.counts().opened.opened, count);
}
