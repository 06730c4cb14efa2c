//! The advertised swarm address follows `--listen-addr` (issue #11): with
//! `swarm init --advertise-addr IP --listen-addr IP:PORT` the join command
//! and `shoal info` name PORT, as Docker's do, not the default 2377.

use shoal_tests::{skip_reason, Node};

#[test]
fn the_advertised_port_is_the_listen_port() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.start_daemon();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let init = n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", &listen]).ok().stdout;
    assert!(init.contains(&format!(" {listen}")), "the join command names the listen port:\n{init}");
    assert!(!init.contains("127.0.0.1:2377"), "{init}");
    let info = n.shoal(&["info"]).ok().stdout;
    assert!(info.contains(&format!("Node Address: {listen}")) || info.contains(&listen), "{info}");
    assert!(std::net::TcpStream::connect(&listen).is_ok(), "the daemon listens on {listen}");
    let token = n.shoal(&["swarm", "join-token", "worker"]).ok().stdout;
    assert!(token.contains(&listen), "{token}");
    // A restart listens on the same port and still advertises it.
    n.terminate_daemon();
    n.start_daemon();
    assert!(n.shoal(&["swarm", "join-token", "worker"]).ok().stdout.contains(&listen));
    assert!(std::net::TcpStream::connect(&listen).is_ok(), "the daemon listens on {listen} after a restart");
}
