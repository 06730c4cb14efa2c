//! Prints the resolver core's throughput (printed, not asserted): local
//! answers per second for a VIP name and a 10-task dnsrr name, forwards per
//! second, and the decode rate of a typical answer.
//! Run: `cargo run --release -p shoal-dns --example dns_bench`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use shoal_dns::message::{Message, Name, Type};
use shoal_dns::resolver::{Effect, ListenerId, Resolver};
use shoal_dns::view::{EndpointMode, ServiceEntry, TaskEntry, View};

fn query(id: u16, name: &str) -> Vec<u8> {
    Message::query(id, Name::from_dotted(name).unwrap(), Type::A).encode(true).unwrap()
}

fn rate(label: &str, rounds: u32, mut f: impl FnMut(u32)) {
    let start = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{label:<40} {:>12.0} /s  ({:.2} us each)", f64::from(rounds) / secs, secs * 1e6 / f64::from(rounds));
}

fn main() {
    let mut view = View::new();
    for s in 0..200u32 {
        let tasks = (0..10).map(|t| TaskEntry { names: vec![format!("svc{s}.{t}.x")], ip: [10, 1, s as u8, t].into() }).collect();
        let endpoint = if s % 2 == 0 { EndpointMode::Vip(vec![[10, 0, s as u8, 2].into()]) } else { EndpointMode::Dnsrr };
        view.add_service("net", &ServiceEntry { name: format!("svc{s}"), aliases: vec![], endpoint, tasks });
    }
    let mut r = Resolver::new(1);
    r.set_view(view);
    r.set_listener(ListenerId(1), vec!["net".into()]);
    r.set_upstreams(vec!["192.0.2.1:53".parse().unwrap()]);
    let from: SocketAddr = "10.1.0.5:40000".parse().unwrap();
    let rounds = 300_000;

    let vip = query(1, "svc0");
    rate("local answer, VIP (1 A record)", rounds, |_| {
        r.handle_query(ListenerId(1), &vip, from, 0);
        black_box(r.poll_effect());
    });
    let rr = query(2, "svc1");
    rate("local answer, dnsrr (10 A records)", rounds, |_| {
        r.handle_query(ListenerId(1), &rr, from, 0);
        black_box(r.poll_effect());
    });
    let outside = query(3, "example.com");
    let mut answer = Vec::new();
    rate("forward + relay (example.com)", rounds, |i| {
        r.handle_query(ListenerId(1), &outside, from, u64::from(i));
        if let Some(Effect::Forward { upstream, mut bytes, .. }) = r.poll_effect() {
            bytes[2] |= 0x80;
            answer = bytes;
            r.handle_upstream_reply(upstream, &answer, u64::from(i));
            black_box(r.poll_effect());
        }
    });
    r.handle_query(ListenerId(1), &rr, from, 0);
    let Some(Effect::Reply { bytes: reply, .. }) = r.poll_effect() else { unreachable!("svc1 is local") };
    rate(&format!("decode a {}-byte answer", reply.len()), rounds, |_| {
        black_box(Message::decode(black_box(&reply)).unwrap());
    });
    let mb = reply.len() as f64 * f64::from(rounds) / 1e6;
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(Message::decode(black_box(&reply)).unwrap());
    }
    println!("{:<40} {:>12.1} MB/s", "decode throughput", mb / start.elapsed().as_secs_f64());
    println!("stats: {:?}", r.stats());
}
