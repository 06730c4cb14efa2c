//! The core behind real UDP sockets on loopback, through `shell::drain`: a
//! client asks a swarm name and an outside name; a fake upstream answers.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use shoal_dns::message::{Message, Name, RData, Record, Type, CLASS_IN};
use shoal_dns::resolver::{ListenerId, Resolver};
use shoal_dns::shell::{drain, Io};
use shoal_dns::view::View;

struct Sockets {
    listener: UdpSocket,
    forwarder: UdpSocket,
}

impl Io for Sockets {
    fn send_reply(&mut self, _listener: ListenerId, to: SocketAddr, bytes: &[u8]) {
        self.listener.send_to(bytes, to).unwrap();
    }
    fn send_forward(&mut self, upstream: SocketAddr, bytes: &[u8]) {
        self.forwarder.send_to(bytes, upstream).unwrap();
    }
}

fn bind() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket
}

fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 4096];
    let (n, from) = socket.recv_from(&mut buf).expect("a datagram within 5 s");
    (buf[..n].to_vec(), from)
}

fn query(id: u16, name: &str) -> Message {
    Message::query(id, Name::from_dotted(name).unwrap(), Type::A)
}

#[test]
fn swarm_and_outside_names_over_loopback_udp() {
    let (client, upstream) = (bind(), bind());
    let mut io = Sockets { listener: bind(), forwarder: bind() };
    let mut resolver = Resolver::new(7);
    let mut view = View::new();
    view.add_name("net", "web", &["10.0.0.2".parse().unwrap()]);
    resolver.set_view(view);
    resolver.set_listener(ListenerId(1), vec!["net".into()]);
    resolver.set_upstreams(vec![upstream.local_addr().unwrap()]);
    let listen_addr = io.listener.local_addr().unwrap();

    client.send_to(&query(1, "web").encode(true).unwrap(), listen_addr).unwrap();
    let (bytes, from) = recv(&io.listener);
    resolver.handle_query(ListenerId(1), &bytes, from, 0);
    assert_eq!(drain(&mut resolver, &mut io), 1);
    let answer = Message::decode(&recv(&client).0).unwrap();
    assert_eq!(answer.answers[0].data, RData::A("10.0.0.2".parse().unwrap()));

    client.send_to(&query(2, "example.com").encode(true).unwrap(), listen_addr).unwrap();
    let (bytes, from) = recv(&io.listener);
    resolver.handle_query(ListenerId(1), &bytes, from, 10);
    assert_eq!(drain(&mut resolver, &mut io), 1);
    let (forwarded, forwarder_addr) = recv(&upstream);
    let mut reply = Message::decode(&forwarded).unwrap();
    reply.header.response = true;
    reply.answers.push(Record {
        name: reply.questions[0].name.clone(),
        class: CLASS_IN,
        ttl_secs: 60,
        data: RData::A("93.184.216.34".parse().unwrap()),
    });
    upstream.send_to(&reply.encode(true).unwrap(), forwarder_addr).unwrap();
    let (bytes, from) = recv(&io.forwarder);
    resolver.handle_upstream_reply(from, &bytes, 20);
    assert_eq!(drain(&mut resolver, &mut io), 1);
    let relayed = Message::decode(&recv(&client).0).unwrap();
    assert_eq!(relayed.header.id, 2);
    assert_eq!(relayed.answers[0].data, RData::A("93.184.216.34".parse().unwrap()));
}
