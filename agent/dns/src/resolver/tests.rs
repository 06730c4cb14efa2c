//! Resolver core tests: local answers, isolation, forwarding with id
//! rewriting, deadlines, bounds and hostile queries.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::message::tests::mutations;
use crate::view::{EndpointMode, ServiceEntry, TaskEntry};

const L1: ListenerId = ListenerId(1);
const L2: ListenerId = ListenerId(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn client() -> SocketAddr {
    addr("127.0.0.1:40000")
}

fn up(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([192, 0, 2, i]), 53)
}

fn tasks(prefix: &str, ips: &[&str]) -> Vec<TaskEntry> {
    ips.iter().enumerate().map(|(i, s)| TaskEntry { names: vec![format!("{prefix}.{}.t{i}", i + 1)], ip: ip(s) }).collect()
}

/// n1 ("front"): web (VIP, alias www, two tasks), db (dnsrr, three tasks),
/// idle (dnsrr, no task). n2 ("back"): secret. L1 is on n1, L2 on n2.
fn resolver() -> Resolver {
    let mut view = View::new();
    view.add_network("n1", "front");
    view.add_network("n2", "back");
    view.add_service(
        "n1",
        &ServiceEntry {
            name: "web".into(),
            aliases: vec!["www".into()],
            endpoint: EndpointMode::Vip(vec![ip("10.0.0.2")]),
            tasks: tasks("web", &["10.0.1.1", "10.0.1.2"]),
        },
    );
    view.add_service(
        "n1",
        &ServiceEntry {
            name: "db".into(),
            aliases: vec![],
            endpoint: EndpointMode::Dnsrr,
            tasks: tasks("db", &["10.0.2.1", "10.0.2.2", "10.0.2.3"]),
        },
    );
    let idle = ServiceEntry { name: "idle".into(), aliases: vec![], endpoint: EndpointMode::Dnsrr, tasks: vec![] };
    view.add_service("n1", &idle);
    let secret = ServiceEntry { name: "secret".into(), aliases: vec![], endpoint: EndpointMode::Vip(vec![ip("10.9.0.2")]), tasks: vec![] };
    view.add_service("n2", &secret);
    let mut r = Resolver::new(42);
    r.set_view(view);
    r.set_listener(L1, vec!["n1".into()]);
    r.set_listener(L2, vec!["n2".into()]);
    r.set_upstreams(vec![up(1), up(2)]);
    r
}

fn query_message(id: u16, name: &str, qtype: Type) -> Message {
    Message::query(id, Name::from_dotted(name).unwrap(), qtype)
}

fn query(id: u16, name: &str, qtype: Type) -> Vec<u8> {
    query_message(id, name, qtype).encode(true).unwrap()
}

fn effects(r: &mut Resolver) -> Vec<Effect> {
    std::iter::from_fn(|| r.poll_effect()).collect()
}

/// The one reply effect left by the last input, decoded.
fn reply(r: &mut Resolver, listener: ListenerId, to: SocketAddr) -> Message {
    match &effects(r)[..] {
        [Effect::Reply { listener: l, to: t, bytes }] if *l == listener && *t == to => Message::decode(bytes).unwrap(),
        other => panic!("expected one reply, got {other:?}"),
    }
}

fn ask(r: &mut Resolver, listener: ListenerId, name: &str, qtype: Type) -> Message {
    r.handle_query(listener, &query(0xABCD, name, qtype), client(), 0);
    reply(r, listener, client())
}

fn addresses(m: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = m
        .answers
        .iter()
        .map(|a| match a.data {
            RData::A(v4) => IpAddr::V4(v4),
            RData::Aaaa(v6) => IpAddr::V6(v6),
            ref other => panic!("not an address: {other:?}"),
        })
        .collect();
    ips.sort();
    ips
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// The forward effect left by the last input.
fn forward(r: &mut Resolver) -> (u16, SocketAddr, Vec<u8>) {
    match effects(r).pop() {
        Some(Effect::Forward { id, upstream, bytes }) => (id, upstream, bytes),
        other => panic!("expected a forward, got {other:?}"),
    }
}

#[test]
fn service_name_resolves_to_its_vip_with_docker_ttl() {
    let mut r = resolver();
    let m = ask(&mut r, L1, "web", Type::A);
    assert_eq!(m.header.id, 0xABCD);
    assert!(m.header.response && m.header.recursion_available && m.header.recursion_desired);
    assert!(!m.header.authoritative && !m.header.truncated);
    assert_eq!(m.header.rcode, Rcode::NOERROR);
    assert_eq!(m.questions, query_message(0, "web", Type::A).questions);
    assert_eq!(addresses(&m), ips(&["10.0.0.2"]));
    assert_eq!(m.answers[0].ttl_secs, 600);
    assert_eq!(addresses(&ask(&mut r, L1, "www", Type::A)), ips(&["10.0.0.2"]), "alias");
    assert_eq!(addresses(&ask(&mut r, L1, "web.front", Type::A)), ips(&["10.0.0.2"]), "NAME.NETWORK");
    assert_eq!(addresses(&ask(&mut r, L1, "web.1.t0", Type::A)), ips(&["10.0.1.1"]), "task name");
    assert_eq!(r.stats().answered, 4);
    assert_eq!(r.forwards_in_flight(), 0);
}

#[test]
fn dnsrr_and_tasks_names_resolve_to_running_tasks_in_shuffled_order() {
    let mut r = resolver();
    let db = ips(&["10.0.2.1", "10.0.2.2", "10.0.2.3"]);
    assert_eq!(addresses(&ask(&mut r, L1, "db", Type::A)), db);
    assert_eq!(addresses(&ask(&mut r, L1, "tasks.db", Type::A)), db);
    assert_eq!(addresses(&ask(&mut r, L1, "tasks.web", Type::A)), ips(&["10.0.1.1", "10.0.1.2"]));
    assert_eq!(addresses(&ask(&mut r, L1, "tasks.www", Type::A)), ips(&["10.0.1.1", "10.0.1.2"]));
    let mut orders = std::collections::HashSet::new();
    for _ in 0..30 {
        let m = ask(&mut r, L1, "db", Type::A);
        orders.insert(m.answers.iter().map(|a| format!("{:?}", a.data)).collect::<Vec<_>>());
    }
    assert!(orders.len() >= 3, "orders vary: {orders:?}");
}

#[test]
fn lookups_ignore_case_and_trailing_dots_and_echo_the_question() {
    let mut r = resolver();
    for name in ["WEB", "Web.", "tasks.WEB.", "TASKS.Db"] {
        let m = ask(&mut r, L1, name, Type::A);
        assert!(!m.answers.is_empty(), "{name}");
        assert_eq!(m.questions[0].name, Name::from_dotted(name).unwrap(), "case kept");
        assert_eq!(m.answers[0].name, m.questions[0].name);
    }
}

#[test]
fn a_task_sees_only_the_names_of_its_networks() {
    let mut r = resolver();
    assert_eq!(addresses(&ask(&mut r, L2, "secret", Type::A)), ips(&["10.9.0.2"]));
    r.handle_query(L1, &query(1, "secret", Type::A), client(), 0);
    let (_, upstream, _) = forward(&mut r);
    assert_eq!(upstream, up(1));
    r.handle_query(L2, &query(2, "web", Type::A), client(), 0);
    forward(&mut r);
    r.handle_query(L2, &query(3, "web.front", Type::A), client(), 0);
    forward(&mut r);
    r.handle_query(ListenerId(9), &query(4, "web", Type::A), client(), 0);
    forward(&mut r);
    assert_eq!(r.forwards_in_flight(), 4);
}

#[test]
fn other_types_for_swarm_names_get_empty_noerror() {
    let mut r = resolver();
    for qtype in [Type::AAAA, Type::MX, Type::TXT] {
        let m = ask(&mut r, L1, "web", qtype);
        assert_eq!(m.header.rcode, Rcode::NOERROR);
        assert!(m.answers.is_empty(), "{qtype:?}");
    }
    let mut view = View::new();
    view.add_name("n1", "v6", &[ip("fd00::5"), ip("10.0.0.5")]);
    r.set_view(view);
    assert_eq!(addresses(&ask(&mut r, L1, "v6", Type::AAAA)), ips(&["fd00::5"]));
    assert_eq!(addresses(&ask(&mut r, L1, "v6", Type::A)), ips(&["10.0.0.5"]));
}

#[test]
fn ptr_answers_for_vips_and_tasks() {
    let mut r = resolver();
    let m = ask(&mut r, L1, "2.0.0.10.in-addr.arpa", Type::PTR);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::Ptr(Name::from_dotted("web.front").unwrap()));
    let m = ask(&mut r, L1, "2.1.0.10.IN-ADDR.ARPA.", Type::PTR);
    assert_eq!(m.answers[0].data, RData::Ptr(Name::from_dotted("web.2.t1.front").unwrap()));
    r.handle_query(L1, &query(1, "9.9.9.10.in-addr.arpa", Type::PTR), client(), 0);
    forward(&mut r);
    r.handle_query(L1, &query(1, "256.0.0.10.in-addr.arpa", Type::PTR), client(), 0);
    forward(&mut r);
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(reverse_ip(v6), Some(ip("fd00::1")));
    assert_eq!(reverse_ip("1.2.3.in-addr.arpa"), None);
    assert_eq!(reverse_ip("0.d.f.ip6.arpa"), None);
}

#[test]
fn names_not_in_the_swarm_are_forwarded_never_nxdomain() {
    let mut r = resolver();
    for name in ["example.com", "idle", "tasks.idle", "tasks.nothing", "web.back"] {
        r.handle_query(L1, &query(5, name, Type::A), client(), 0);
        let (_, upstream, bytes) = forward(&mut r);
        assert_eq!(upstream, up(1), "{name}");
        assert_eq!(Message::decode(&bytes).unwrap().questions[0].name, Name::from_dotted(name).unwrap());
    }
}

fn upstream_reply(id: u16, name: &str, rcode: Rcode, authoritative: bool) -> Vec<u8> {
    let mut m = query_message(id, name, Type::A);
    m.header.response = true;
    m.header.rcode = rcode;
    m.header.authoritative = authoritative;
    if rcode == Rcode::NOERROR {
        m.answers.push(Record {
            name: Name::from_dotted(name).unwrap(),
            class: CLASS_IN,
            ttl_secs: 30,
            data: RData::A("93.184.216.34".parse().unwrap()),
        });
    }
    m.encode(true).unwrap()
}

#[test]
fn forward_rewrites_ids_both_ways_and_relays_the_upstream_bytes() {
    let mut r = resolver();
    let sent = query(0x1111, "example.com", Type::A);
    r.handle_query(L1, &sent, client(), 100);
    let (id, upstream, bytes) = forward(&mut r);
    assert_eq!(upstream, up(1));
    assert_eq!(&bytes[..2], &id.to_be_bytes());
    assert_eq!(&bytes[2..], &sent[2..], "forwarded as sent, but for the id");
    assert_eq!(r.poll_timeout(), Some(100 + FORWARD_TIMEOUT_MS));
    let answer = upstream_reply(id, "EXAMPLE.com", Rcode::NOERROR, false);
    r.handle_upstream_reply(up(1), &answer, 150);
    let relayed = match &effects(&mut r)[..] {
        [Effect::Reply { listener, to, bytes }] if *listener == L1 && *to == client() => bytes.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(&relayed[..2], &[0x11, 0x11]);
    assert_eq!(&relayed[2..], &answer[2..]);
    assert_eq!(r.forwards_in_flight(), 0);
    assert_eq!(r.poll_timeout(), None);
    // The same reply again is a stray now.
    r.handle_upstream_reply(up(1), &answer, 160);
    assert!(effects(&mut r).is_empty());
    assert_eq!(r.stats().relayed, 1);
}

#[test]
fn upstream_replies_that_do_not_match_are_dropped() {
    let mut r = resolver();
    r.handle_query(L1, &query(7, "example.com", Type::A), client(), 0);
    let (id, _, _) = forward(&mut r);
    let good = upstream_reply(id, "example.com", Rcode::NOERROR, false);
    r.handle_upstream_reply(up(2), &good, 1); // an upstream not asked yet
    r.handle_upstream_reply(addr("198.51.100.1:53"), &good, 1);
    r.handle_upstream_reply(up(1), &upstream_reply(id, "example.org", Rcode::NOERROR, false), 1);
    r.handle_upstream_reply(up(1), &upstream_reply(id.wrapping_add(1), "example.com", Rcode::NOERROR, false), 1);
    r.handle_upstream_reply(up(1), &query(id, "example.com", Type::A), 1); // not a response
    r.handle_upstream_reply(up(1), &good[..11], 1);
    r.handle_upstream_reply(up(1), &good[..20], 1);
    assert!(effects(&mut r).is_empty());
    assert_eq!(r.stats().dropped, 7);
    assert_eq!(r.forwards_in_flight(), 1);
    r.handle_upstream_reply(up(1), &good, 1);
    assert_eq!(reply(&mut r, L1, client()).header.id, 7);
}

#[test]
fn silence_moves_to_the_next_upstream_then_servfail() {
    let mut r = resolver();
    r.handle_query(L1, &query(0x2222, "slow.example", Type::A), client(), 1_000);
    let (id, upstream, bytes) = forward(&mut r);
    assert_eq!(upstream, up(1));
    r.handle_timeout(2_999);
    assert!(effects(&mut r).is_empty());
    r.handle_timeout(3_000);
    let (id2, upstream2, bytes2) = forward(&mut r);
    assert_eq!((id2, upstream2, &bytes2), (id, up(2), &bytes));
    assert_eq!(r.poll_timeout(), Some(5_000));
    r.handle_timeout(5_000);
    let m = reply(&mut r, L1, client());
    assert_eq!(m.header.id, 0x2222);
    assert_eq!(m.header.rcode, Rcode::SERVFAIL);
    assert_eq!(m.questions[0].name, Name::from_dotted("slow.example").unwrap());
    assert_eq!((r.forwards_in_flight(), r.poll_timeout()), (0, None));
    // The first upstream waking up late changes nothing.
    r.handle_upstream_reply(up(1), &upstream_reply(id, "slow.example", Rcode::NOERROR, false), 5_001);
    assert!(effects(&mut r).is_empty());
}

#[test]
fn a_late_answer_from_an_earlier_upstream_is_still_relayed() {
    let mut r = resolver();
    r.handle_query(L1, &query(3, "slow.example", Type::A), client(), 0);
    let (id, _, _) = forward(&mut r);
    r.handle_timeout(FORWARD_TIMEOUT_MS);
    forward(&mut r);
    r.handle_upstream_reply(up(1), &upstream_reply(id, "slow.example", Rcode::SERVFAIL, false), 2_100);
    assert!(effects(&mut r).is_empty(), "an earlier upstream's failure waits for the current one");
    r.handle_upstream_reply(up(1), &upstream_reply(id, "slow.example", Rcode::NOERROR, false), 2_200);
    assert_eq!(reply(&mut r, L1, client()).answers.len(), 1);
}

#[test]
fn failures_move_on_and_the_last_answer_is_relayed() {
    let mut r = resolver();
    r.handle_query(L1, &query(4, "split.example", Type::A), client(), 0);
    let (id, _, _) = forward(&mut r);
    r.handle_upstream_reply(up(1), &upstream_reply(id, "split.example", Rcode::SERVFAIL, false), 10);
    let (_, upstream, _) = forward(&mut r);
    assert_eq!(upstream, up(2));
    r.handle_upstream_reply(up(2), &upstream_reply(id, "split.example", Rcode::NXDOMAIN, false), 20);
    let m = reply(&mut r, L1, client());
    assert_eq!((m.header.id, m.header.rcode), (4, Rcode::NXDOMAIN));

    // An authoritative NXDOMAIN is final (RFC 8020), as in Docker.
    r.handle_query(L1, &query(5, "gone.example", Type::A), client(), 0);
    let (id, _, _) = forward(&mut r);
    r.handle_upstream_reply(up(1), &upstream_reply(id, "gone.example", Rcode::NXDOMAIN, true), 10);
    assert_eq!(reply(&mut r, L1, client()).header.rcode, Rcode::NXDOMAIN);

    // A non-authoritative NXDOMAIN or REFUSED asks the next upstream.
    for rcode in [Rcode::NXDOMAIN, Rcode::REFUSED] {
        r.handle_query(L1, &query(6, "maybe.example", Type::A), client(), 0);
        let (id, _, _) = forward(&mut r);
        r.handle_upstream_reply(up(1), &upstream_reply(id, "maybe.example", rcode, false), 10);
        assert_eq!(forward(&mut r).1, up(2));
        r.handle_upstream_reply(up(2), &upstream_reply(id, "maybe.example", Rcode::NOERROR, false), 20);
        assert_eq!(reply(&mut r, L1, client()).answers.len(), 1);
    }
}

#[test]
fn forwards_in_flight_are_bounded_in_total_and_per_listener() {
    let mut r = resolver();
    let listeners = FORWARDS_IN_FLIGHT_MAX / FORWARDS_PER_LISTENER_MAX;
    for l in 0..listeners as u64 {
        r.set_listener(ListenerId(100 + l), vec!["n1".into()]);
        for i in 0..FORWARDS_PER_LISTENER_MAX {
            r.handle_query(ListenerId(100 + l), &query(i as u16, "example.com", Type::A), client(), 0);
        }
    }
    let forwards = effects(&mut r);
    assert_eq!(forwards.len(), FORWARDS_IN_FLIGHT_MAX);
    let mut ids: Vec<u16> = forwards.iter().map(|e| if let Effect::Forward { id, .. } = e { *id } else { panic!() }).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), FORWARDS_IN_FLIGHT_MAX, "forward ids are unique");
    r.handle_query(L1, &query(77, "example.com", Type::A), client(), 0);
    assert_eq!(reply(&mut r, L1, client()).header.rcode, Rcode::SERVFAIL, "total bound");
    assert_eq!(addresses(&ask(&mut r, L1, "web", Type::A)), ips(&["10.0.0.2"]), "local names still answered");

    r.remove_listener(ListenerId(100));
    assert_eq!(r.forwards_in_flight(), FORWARDS_IN_FLIGHT_MAX - FORWARDS_PER_LISTENER_MAX);
    r.handle_query(ListenerId(101), &query(78, "example.com", Type::A), client(), 0);
    assert_eq!(reply(&mut r, ListenerId(101), client()).header.rcode, Rcode::SERVFAIL, "per-listener bound");
    r.handle_query(L1, &query(79, "example.com", Type::A), client(), 0);
    forward(&mut r);
    let left = FORWARDS_IN_FLIGHT_MAX - FORWARDS_PER_LISTENER_MAX + 1;
    r.handle_timeout(FORWARD_TIMEOUT_MS);
    let retries = effects(&mut r);
    assert_eq!(retries.len(), left);
    assert!(retries.iter().all(|e| matches!(e, Effect::Forward { upstream, .. } if *upstream == up(2))));
    r.handle_timeout(FORWARD_TIMEOUT_MS * 2);
    let servfails = effects(&mut r);
    assert_eq!(servfails.len(), left);
    assert!(servfails.iter().all(|e| matches!(e, Effect::Reply { .. })));
    assert_eq!(r.forwards_in_flight(), 0);
}

#[test]
fn no_upstream_means_servfail_at_once() {
    let mut r = resolver();
    r.set_upstreams(vec![]);
    r.handle_query(L1, &query(8, "example.com", Type::A), client(), 0);
    assert_eq!(reply(&mut r, L1, client()).header.rcode, Rcode::SERVFAIL);
    r.set_upstreams((1..=5).map(up).collect());
    r.handle_query(L1, &query(9, "example.com", Type::A), client(), 0);
    forward(&mut r);
    for t in 1..=3 {
        r.handle_timeout(t * FORWARD_TIMEOUT_MS);
    }
    let all = effects(&mut r);
    assert_eq!(all.len(), 3, "two more upstreams, then SERVFAIL: at most three are used");
    assert!(matches!(all[2], Effect::Reply { .. }));
}

#[test]
fn big_answers_are_truncated_to_the_udp_size() {
    let mut r = resolver();
    let many: Vec<String> = (0..100).map(|i| format!("10.1.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let big = ServiceEntry { name: "big".into(), aliases: vec![], endpoint: EndpointMode::Dnsrr, tasks: tasks("big", &many) };
    let mut view = View::new();
    view.add_service("n1", &big);
    r.set_view(view);
    r.handle_query(L1, &query(1, "big", Type::A), client(), 0);
    let bytes = match effects(&mut r).pop() {
        Some(Effect::Reply { bytes, .. }) => bytes,
        other => panic!("{other:?}"),
    };
    assert!(bytes.len() <= 512);
    let m = Message::decode(&bytes).unwrap();
    assert!(m.header.truncated);
    assert_eq!(m.answers.len(), (512 - 21) / 16);
    let mut edns = query_message(2, "big", Type::A);
    edns.additionals.push(Record { name: Name::root(), class: 4096, ttl_secs: 0, data: RData::Other { rtype: Type::OPT, data: vec![] } });
    r.handle_query(L1, &edns.encode(true).unwrap(), client(), 0);
    let m = reply(&mut r, L1, client());
    assert!(!m.header.truncated);
    assert_eq!(m.answers.len(), 100);
}

#[test]
fn malformed_queries_get_formerr_and_responses_or_scraps_nothing() {
    let mut r = resolver();
    r.handle_query(L1, &[0x12, 0x34, 0x01], client(), 0);
    let mut response = query(1, "web", Type::A);
    response[2] |= 0x80;
    r.handle_query(L1, &response, client(), 0);
    assert!(effects(&mut r).is_empty());
    assert_eq!(r.stats().dropped, 2);

    let mut bad = query(0x3333, "web", Type::A);
    bad.truncate(15);
    r.handle_query(L1, &bad, client(), 0);
    let m = reply(&mut r, L1, client());
    assert_eq!((m.header.id, m.header.rcode, m.questions.len()), (0x3333, Rcode::FORMERR, 0));

    let mut two = query_message(4, "web", Type::A);
    two.questions.push(two.questions[0].clone());
    r.handle_query(L1, &two.encode(true).unwrap(), client(), 0);
    assert_eq!(reply(&mut r, L1, client()).header.rcode, Rcode::FORMERR);

    let mut huge = query_message(5, "web", Type::A);
    huge.additionals.push(Record {
        name: Name::root(),
        class: 4096,
        ttl_secs: 0,
        data: RData::Other { rtype: Type::OPT, data: vec![0; QUERY_BYTES_MAX] },
    });
    r.handle_query(L1, &huge.encode(true).unwrap(), client(), 0);
    assert_eq!(reply(&mut r, L1, client()).header.rcode, Rcode::FORMERR);

    let mut status = query_message(6, "web", Type::A);
    status.header.opcode = 2;
    r.handle_query(L1, &status.encode(true).unwrap(), client(), 0);
    let m = reply(&mut r, L1, client());
    assert_eq!((m.header.rcode, m.header.opcode), (Rcode::NOTIMP, 2));
    assert_eq!(r.stats().formerr, 3);
}

#[test]
fn ten_thousand_mutated_queries_get_one_answer_each_and_never_panic() {
    let mut r = resolver();
    let base = query(0x4444, "tasks.web", Type::A);
    for (i, bytes) in mutations(&base, 0xD15EA5E, 10_000).into_iter().enumerate() {
        r.handle_query(L1, &bytes, client(), i as u64);
        let out = effects(&mut r);
        match Header::decode(&bytes) {
            Some(h) if !h.response => {
                assert_eq!(out.len(), 1, "{bytes:02x?}");
                if let Effect::Reply { bytes: reply, .. } = &out[0] {
                    let m = Message::decode(reply).unwrap();
                    assert_eq!(m.header.id, h.id);
                    if Message::decode(&bytes).is_err() {
                        assert_eq!(m.header.rcode, Rcode::FORMERR);
                    }
                }
            }
            _ => assert!(out.is_empty()),
        }
        // Upstream junk is dropped without effects, whatever it holds.
        r.handle_upstream_reply(up(1), &bytes, i as u64);
        r.handle_timeout(i as u64);
        effects(&mut r);
    }
}
