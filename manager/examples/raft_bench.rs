//! Throughput and commit-latency benchmark: a 3-node raft cluster in one
//! process, one thread per node, each persisting to its own redb file with
//! fsync (immediate durability) in a temp directory, messages over channels.
//!
//! ```text
//! cargo run --release -p shoal-manager --features sim --example raft_bench -- [--secs 3] [--bytes 128]
//! ```
//! Runs with 1 client (one proposal outstanding) and 64 clients (64
//! outstanding), each with raft's records sealed at rest (as shipped) and
//! in clear (the `sim` feature's bench-only storage), one after the other
//! in the same run, and prints commits/s with p50/p99 latency from
//! `propose` to the leader applying the entry. Then seal and open
//! throughput of the record sealing alone (XChaCha20-Poly1305) at two
//! record sizes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_manager::raft::{Config, EntryKind, Message, Raft, RaftStorage, Role};

struct Outcome {
    commits: u64,
    latencies_us: Vec<u64>,
    secs: f64,
}

fn node_loop(
    mut raft: Raft,
    storage: RaftStorage,
    inbox: Receiver<Message>,
    peers: Vec<(u64, Sender<Message>)>,
    stop: Arc<AtomicBool>,
    clients: usize,
    payload_bytes: usize,
) -> Option<Outcome> {
    let tick = Duration::from_millis(100);
    let mut next_tick = Instant::now() + tick;
    let mut started: std::collections::BTreeMap<u64, Instant> = std::collections::BTreeMap::new();
    let mut latencies_us = Vec::new();
    let mut seq = 0u64;
    let mut bench_start = None;
    let is_driver = raft.id() == 1;
    if is_driver {
        raft.campaign().ok();
    }
    while !stop.load(Ordering::Relaxed) {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(wait) {
            Ok(m) => {
                let _ = raft.step(m);
                while let Ok(m) = inbox.try_recv() {
                    let _ = raft.step(m);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                raft.tick();
                next_tick = Instant::now() + tick;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Top up proposals and drain Readies until neither has work: a
        // commit frees a client slot, whose next proposal needs a Ready.
        loop {
            if is_driver && raft.role() == Role::Leader {
                let st = raft.status();
                if st.commit == st.last_index {
                    bench_start.get_or_insert_with(Instant::now);
                }
            }
            if is_driver && bench_start.is_some() && raft.role() == Role::Leader {
                while started.len() < clients {
                    seq += 1;
                    let mut data = seq.to_be_bytes().to_vec();
                    data.resize(payload_bytes.max(8), 0);
                    if raft.propose(data).is_err() {
                        break;
                    }
                    started.insert(seq, Instant::now());
                }
            }
            if !raft.has_ready() {
                break;
            }
            let rd = raft.ready();
            // Persist (fsync) before sending: the Ready contract.
            if let Err(e) = storage.persist(&rd) {
                eprintln!("persist failed: {e}");
                return None;
            }
            for m in &rd.messages {
                if let Some((_, tx)) = peers.iter().find(|(id, _)| *id == m.to) {
                    let _ = tx.send(m.clone());
                }
            }
            for e in &rd.committed_entries {
                if let EntryKind::Normal(d) = &e.kind {
                    if d.len() >= 8 {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&d[..8]);
                        if let Some(t) = started.remove(&u64::from_be_bytes(b)) {
                            latencies_us.push(t.elapsed().as_micros() as u64);
                        }
                    }
                }
            }
            raft.advance(rd);
        }
    }
    let secs = bench_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    is_driver.then_some(Outcome { commits: latencies_us.len() as u64, latencies_us, secs })
}

fn run(clients: usize, secs: u64, payload_bytes: usize, sealed: bool) -> Option<Outcome> {
    let dir = std::env::temp_dir().join(format!("shoal-raft-bench-{}-{clients}-{sealed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = channel::<Message>();
        txs.push(tx);
        rxs.push(rx);
    }
    let mut handles = Vec::new();
    for (k, rx) in rxs.into_iter().enumerate() {
        let id = k as u64 + 1;
        let db = redb::Database::create(dir.join(format!("node{id}.redb"))).ok()?;
        let storage = if sealed {
            let seal = Arc::new(shoal_shared::seal::SealKey::new(1, [id as u8; 32], [0; 16]));
            RaftStorage::new(Arc::new(db), seal, shoal_manager::raft::Layout::Current).ok()?
        } else {
            RaftStorage::new_clear_for_bench(Arc::new(db)).ok()?
        };
        let raft = Raft::bootstrap(Config::lan(id, id), &[1, 2, 3]).ok()?;
        let peers: Vec<(u64, Sender<Message>)> = (1..=3u64).filter(|p| *p != id).map(|p| (p, txs[(p - 1) as usize].clone())).collect();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || node_loop(raft, storage, rx, peers, stop, clients, payload_bytes)));
    }
    drop(txs);
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut out = None;
    for h in handles {
        if let Ok(Some(o)) = h.join() {
            out = Some(o);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter().position(|a| a == name).and_then(|k| args.get(k + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let secs = arg("--secs", 3);
    let bytes = arg("--bytes", 128) as usize;
    println!("3-node raft, redb fsync per Ready, {bytes}-byte entries, {secs} s per run");
    for clients in [1usize, 64] {
        for sealed in [true, false] {
            let mode = if sealed { "sealed" } else { "clear " };
            match run(clients, secs, bytes, sealed) {
                Some(mut o) => {
                    o.latencies_us.sort_unstable();
                    println!(
                        "clients={clients:>2} {mode}: {:>8.0} commits/s, p50 {:>6.2} ms, p99 {:>6.2} ms ({} commits)",
                        o.commits as f64 / o.secs.max(1e-9),
                        percentile(&o.latencies_us, 0.50) as f64 / 1000.0,
                        percentile(&o.latencies_us, 0.99) as f64 / 1000.0,
                        o.commits
                    );
                }
                None => println!("clients={clients} {mode}: run failed"),
            }
        }
    }
    for size in [128usize, 64 * 1024] {
        let (seal_mib_s, open_mib_s) = seal_throughput(size);
        println!("sealing {size:>5}-byte records: seal {seal_mib_s:>7.1} MiB/s, open {open_mib_s:>7.1} MiB/s");
    }
}

/// MiB/s of sealing and of opening `size`-byte records (64 MiB of each).
fn seal_throughput(size: usize) -> (f64, f64) {
    let key = shoal_shared::seal::SealKey::new(1, [7; 32], [1; 16]);
    let plain = vec![0x5au8; size];
    let count = ((64 << 20) / size).clamp(1_000, 500_000);
    let t = Instant::now();
    let mut sealed = Vec::new();
    for i in 0..count {
        let s = key.seal(&0u64.to_le_bytes(), &plain);
        if i == 0 {
            sealed = s;
        } else {
            std::hint::black_box(s);
        }
    }
    let seal_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..count {
        std::hint::black_box(key.open(&0u64.to_le_bytes(), &sealed).expect("opens"));
    }
    let open_s = t.elapsed().as_secs_f64();
    let mib = (count * size) as f64 / (1 << 20) as f64;
    (mib / seal_s.max(1e-9), mib / open_s.max(1e-9))
}
