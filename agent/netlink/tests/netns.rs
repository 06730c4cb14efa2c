//! Against the real kernel: namespaces, a veth pair, a bridge with two task
//! namespaces and a default route, and a VXLAN device with FDB and
//! neighbour entries, each proven by TCP traffic or by reading the kernel's
//! dumps back. Everything is built inside fresh namespaces (the host's
//! links are never touched), whose guard removes them even on a panic.
//!
//! Needs root (CAP_SYS_ADMIN for mounts, CAP_NET_ADMIN); otherwise each test
//! prints why it skips, and `SHOAL_REQUIRE_NETNS=1` turns a skip into a
//! failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_netlink::rt::{NewLink, Via};
use shoal_netlink::{netns, Netlink};

/// Where the test namespaces are bound (one shared mount point for all runs).
const NETNS_DIR: &str = "/run/shoal-netlink-test";
/// Bound on every closure run inside a namespace.
const RUN_TIMEOUT_MS: u64 = 10_000;
/// Bound on each TCP connect, read and write.
const IO_TIMEOUT_MS: u64 = 5_000;

fn skip(test: &str) -> bool {
    // qemu-user translates netlink messages imperfectly (nested attributes come back
    // garbled): these tests prove the kernel path on the host's own architecture only.
    if let Ok(arch) = std::env::var("SHOAL_UNDER_QEMU") {
        eprintln!("skipping {test}: running under qemu-user ({arch}), whose netlink translation garbles nested attributes");
        return true;
    }
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !has_caps() {
        Some("CAP_SYS_ADMIN and CAP_NET_ADMIN are not both effective")
    } else {
        None
    };
    let Some(reason) = reason else { return false };
    assert!(std::env::var("SHOAL_REQUIRE_NETNS").as_deref() != Ok("1"), "{test}: SHOAL_REQUIRE_NETNS=1 but {reason}");
    eprintln!("skipping {test}: {reason} (set SHOAL_REQUIRE_NETNS=1 to fail instead)");
    true
}

fn has_caps() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0);
    let need = (1u64 << 12) | (1u64 << 21); // CAP_NET_ADMIN, CAP_SYS_ADMIN
    eff & need == need
}

/// Namespaces made by one test, removed when it ends (panics included).
struct Namespaces {
    paths: Vec<PathBuf>,
    prefix: String,
}

impl Namespaces {
    fn new(test: &str) -> Namespaces {
        Namespaces { paths: Vec::new(), prefix: format!("{}-{test}", std::process::id()) }
    }

    fn create(&mut self, name: &str) -> PathBuf {
        let path = Path::new(NETNS_DIR).join(format!("{}-{name}", self.prefix));
        netns::create(&path).unwrap_or_else(|e| panic!("{e}"));
        self.paths.push(path.clone());
        assert!(netns::exists(&path), "{} is not a namespace mount", path.display());
        path
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for path in &self.paths {
            if let Err(e) = netns::remove(path) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Runs `f` with a fresh [`Netlink`] inside the namespace at `ns`.
fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce(&mut Netlink) -> T + Send + 'static) -> T {
    netns::run_in(ns, RUN_TIMEOUT_MS, move || {
        let mut nl = Netlink::open().unwrap_or_else(|e| panic!("{e}"));
        f(&mut nl)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn index(nl: &mut Netlink, name: &str) -> u32 {
    nl.link_index(name).unwrap().unwrap_or_else(|| panic!("no link {name}"))
}

/// Sends "ping" from a socket made in `from` to `to` (a listener made in
/// its own namespace) and expects "pong" back.
fn ping_pong(from: &Path, listener: TcpListener, to: SocketAddr) {
    let timeout = Duration::from_millis(IO_TIMEOUT_MS);
    // The socket is created inside `from` and stays there once returned.
    let mut client = netns::run_in(from, RUN_TIMEOUT_MS, move || TcpStream::connect_timeout(&to, timeout))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    // The connection is already queued, so accept does not block.
    let (mut server, peer) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(timeout)).unwrap();
        s.set_write_timeout(Some(timeout)).unwrap();
    }
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(client.local_addr().unwrap(), peer);
}

fn listen(ns: &Path, ip: Ipv4Addr) -> (TcpListener, SocketAddr) {
    let listener = netns::run_in(ns, RUN_TIMEOUT_MS, move || TcpListener::bind((ip, 0))).unwrap().unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[test]
fn namespaces_are_created_opened_and_removed() {
    if skip("namespaces_are_created_opened_and_removed") {
        return;
    }
    let mut nss = Namespaces::new("life");
    let a = nss.create("a");
    assert!(netns::create(&a).unwrap_err().is_exists());
    // A fresh namespace has only lo, down.
    let links = in_ns(&a, |nl| nl.links().unwrap());
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!((links[0].name.as_str(), links[0].up), ("lo", false));
    let plain = Path::new(NETNS_DIR).join(format!("{}-plain", nss.prefix));
    std::fs::write(&plain, b"").unwrap();
    nss.paths.push(plain.clone());
    assert!(!netns::exists(&plain));
    let e = netns::open(&plain).unwrap_err();
    assert!(e.to_string().contains("not a namespace mount"), "{e}");
    // A leftover file without a namespace (its mount namespace is gone) is
    // reused.
    netns::create(&plain).unwrap();
    assert!(netns::exists(&plain));
    let e = netns::run_in::<(), _>(&a, RUN_TIMEOUT_MS, || panic!("boom")).unwrap_err();
    assert!(matches!(e, shoal_netlink::Error::Panicked { .. }), "{e}");
    let e = netns::run_in(&a, 50, || std::thread::sleep(Duration::from_millis(500))).unwrap_err();
    assert!(matches!(e, shoal_netlink::Error::Timeout { timeout_ms: 50, .. }), "{e}");
    // A second path for the same namespace, bound from a process inside it
    // as a restarted daemon would bind a running container's.
    let mut child = netns::run_in(&a, RUN_TIMEOUT_MS, || Command::new("sleep").arg("30").spawn()).unwrap().unwrap();
    let again = Path::new(NETNS_DIR).join(format!("{}-again", nss.prefix));
    let bound = netns::bind_existing(Path::new(&format!("/proc/{}/ns/net", child.id())), &again);
    let _ = child.kill();
    let _ = child.wait();
    bound.unwrap_or_else(|e| panic!("{e}"));
    nss.paths.push(again.clone());
    assert!(netns::bind_existing(&a, &again).unwrap_err().is_exists());
    in_ns(&a, |nl| nl.add_bridge("br-same", 1500).unwrap());
    assert!(in_ns(&again, |nl| nl.link_index("br-same").unwrap()).is_some());
    netns::remove(&a).unwrap();
    nss.paths.retain(|p| *p != a);
    assert!(!netns::exists(&a));
    assert!(!a.exists());
    assert!(netns::remove(&a).unwrap_err().is_not_found());
}

#[test]
fn veth_pair_carries_tcp_between_two_namespaces() {
    if skip("veth_pair_carries_tcp_between_two_namespaces") {
        return;
    }
    let mut nss = Namespaces::new("veth");
    let (a, b) = (nss.create("a"), nss.create("b"));
    let b2 = b.clone();
    in_ns(&a, move |nl| {
        nl.add_veth("va", "vb", 1400).unwrap();
        assert!(nl.add_veth("va", "vb", 1400).unwrap_err().is_exists());
        let va = nl.ensure_link("va", 1400, NewLink::Veth { peer: "vb" }).unwrap();
        assert_eq!(va, index(nl, "va"));
        let e = nl.ensure_link("va", 1400, NewLink::Bridge).unwrap_err();
        assert!(e.to_string().contains("exists as a veth link"), "{e}");
        let vb = index(nl, "vb");
        nl.set_netns_fd(vb, netns::open(&b2).unwrap().as_fd()).unwrap();
        assert_eq!(nl.link_index("vb").unwrap(), None);
        nl.set_mac(va, [0x02, 0, 0, 0, 0x77, 1]).unwrap();
        nl.set_mtu(va, 1450).unwrap();
        nl.add_addr(va, Ipv4Addr::new(10, 77, 0, 1), 24).unwrap();
        assert!(nl.add_addr(va, Ipv4Addr::new(10, 77, 0, 1), 24).unwrap_err().is_exists());
        nl.ensure_addr(va, Ipv4Addr::new(10, 77, 0, 1), 24).unwrap();
        nl.set_up(va).unwrap();
        let link = nl.link("va").unwrap().unwrap();
        assert_eq!((link.up, link.mtu, link.mac, link.kind.as_deref()), (true, 1450, Some([2, 0, 0, 0, 0x77, 1]), Some("veth")));
        let addrs = nl.addrs(va).unwrap();
        assert_eq!(addrs.len(), 1);
        assert_eq!((addrs[0].addr, addrs[0].prefix_len), (Ipv4Addr::new(10, 77, 0, 1), 24));
        // Errors name the operation and the link.
        let e = nl.del_link(9999).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.to_string(), "delete link index 9999: no such device");
        let e = nl.set_master(va, 9999).unwrap_err();
        assert!(e.to_string().starts_with(&format!("set master of link va (index {va}) to index 9999: ")), "{e}");
    });
    in_ns(&b, |nl| {
        let vb = index(nl, "vb");
        nl.set_mtu(vb, 1450).unwrap();
        nl.add_addr(vb, Ipv4Addr::new(10, 77, 0, 2), 24).unwrap();
        nl.set_up(vb).unwrap();
        let link = nl.links().unwrap().into_iter().find(|l| l.name == "vb").unwrap();
        assert_eq!((link.up, link.kind.as_deref()), (true, Some("veth")));
    });
    let (listener, to) = listen(&b, Ipv4Addr::new(10, 77, 0, 2));
    ping_pong(&a, listener, to);
    // Deleting one end removes the pair.
    in_ns(&a, |nl| {
        let va = index(nl, "va");
        nl.set_down(va).unwrap();
        nl.del_link(va).unwrap();
        assert_eq!(nl.link_index("va").unwrap(), None);
    });
    assert_eq!(in_ns(&b, |nl| nl.link_index("vb").unwrap()), None);
}

#[test]
fn bridge_connects_two_tasks_with_a_default_route() {
    if skip("bridge_connects_two_tasks_with_a_default_route") {
        return;
    }
    let mut nss = Namespaces::new("bridge");
    let node = nss.create("node");
    let tasks = [nss.create("t1"), nss.create("t2")];
    let gateway = Ipv4Addr::new(10, 78, 0, 1);
    let beyond = Ipv4Addr::new(10, 79, 0, 1); // only reachable through the default route
    let task_fds: Vec<_> = tasks.iter().map(|t| netns::open(t).unwrap()).collect();
    let masters = in_ns(&node, move |nl| {
        let br = nl.ensure_link("br-shoal", 1500, NewLink::Bridge).unwrap();
        assert_eq!(nl.ensure_link("br-shoal", 1500, NewLink::Bridge).unwrap(), br);
        nl.add_addr(br, gateway, 24).unwrap();
        nl.set_up(br).unwrap();
        let lo = index(nl, "lo");
        nl.add_addr(lo, beyond, 32).unwrap();
        nl.set_up(lo).unwrap();
        for (i, fd) in task_fds.iter().enumerate() {
            let (host, peer) = (format!("vt{i}"), format!("p{i}"));
            nl.add_veth(&host, &peer, 1500).unwrap();
            let p = index(nl, &peer);
            nl.set_netns_fd(p, fd.as_fd()).unwrap();
            let h = index(nl, &host);
            nl.set_master(h, br).unwrap();
            nl.set_up(h).unwrap();
        }
        netns::set_sysctl("net/ipv4/ip_forward", "1").unwrap();
        assert_eq!(netns::sysctl("net/ipv4/ip_forward").unwrap(), "1");
        let links = nl.links().unwrap();
        let ports: Vec<_> = links.iter().filter(|l| l.master == Some(br)).map(|l| l.name.clone()).collect();
        (br, ports)
    });
    assert_eq!(masters.1, ["vt0", "vt1"]);
    for (i, task) in tasks.iter().enumerate() {
        let ip = Ipv4Addr::new(10, 78, 0, 11 + i as u8);
        in_ns(task, move |nl| {
            let p = index(nl, &format!("p{i}"));
            nl.set_name(p, "eth0").unwrap();
            assert_eq!(index(nl, "eth0"), p);
            nl.add_addr(p, ip, 24).unwrap();
            nl.set_up(p).unwrap();
            let lo = index(nl, "lo");
            nl.set_up(lo).unwrap();
            nl.add_default_route(gateway).unwrap();
            assert!(nl.add_default_route(gateway).unwrap_err().is_exists());
            nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, Via::Gateway(gateway)).unwrap();
            nl.replace_route(Ipv4Addr::new(10, 78, 5, 0), 24, Via::Dev(p)).unwrap();
        });
    }
    // Task to task across the bridge, and task to an address that only
    // the default route reaches.
    let (listener, to) = listen(&tasks[1], Ipv4Addr::new(10, 78, 0, 12));
    ping_pong(&tasks[0], listener, to);
    let (listener, to) = listen(&node, beyond);
    ping_pong(&tasks[1], listener, to);
}

#[test]
fn vxlan_fdb_and_neighbour_entries_read_back() {
    if skip("vxlan_fdb_and_neighbour_entries_read_back") {
        return;
    }
    let mut nss = Namespaces::new("vxlan");
    let node = nss.create("node");
    in_ns(&node, |nl| {
        let local = Ipv4Addr::new(10, 80, 0, 1);
        let lo = index(nl, "lo");
        nl.add_addr(lo, local, 32).unwrap();
        nl.set_up(lo).unwrap();
        nl.add_vxlan("vx-4097", 4097, local, 4789, 1450).unwrap();
        let kind = NewLink::Vxlan { vni: 4097, local, dstport: 4789 };
        let vx = nl.ensure_link("vx-4097", 1450, kind).unwrap();
        let br = nl.ensure_link("br-4097", 1450, NewLink::Bridge).unwrap();
        nl.set_master(vx, br).unwrap();
        nl.set_up(vx).unwrap();
        nl.set_up(br).unwrap();
        let link = nl.link("vx-4097").unwrap().unwrap();
        assert_eq!((link.kind.as_deref(), link.mtu, link.master, link.up), (Some("vxlan"), 1450, Some(br), true));
        // Its identity reads back, so a caller can tell whether to adopt it.
        assert_eq!(link.vxlan, Some(shoal_netlink::rt::VxlanInfo { vni: 4097, local: Some(local), port: 4789 }));

        let mac = [0x02, 0x42, 0x0a, 0, 9, 2];
        nl.replace_fdb(vx, mac, Ipv4Addr::new(10, 80, 0, 2)).unwrap();
        nl.replace_fdb(vx, mac, Ipv4Addr::new(10, 80, 0, 3)).unwrap();
        let fdb: Vec<_> = nl.fdb(vx).unwrap().into_iter().filter(|n| n.mac == Some(mac)).collect();
        assert_eq!(fdb.len(), 1, "{fdb:?}");
        assert_eq!(fdb[0].dst, Some(Ipv4Addr::new(10, 80, 0, 3)));
        assert_ne!(fdb[0].state & libc::NUD_PERMANENT, 0);
        assert_ne!(fdb[0].flags & libc::NTF_SELF, 0);

        let ip = Ipv4Addr::new(10, 0, 9, 2);
        nl.replace_neigh(vx, ip, mac).unwrap();
        nl.replace_neigh(vx, ip, mac).unwrap();
        let neighs = nl.neighs(vx).unwrap();
        assert_eq!(neighs.len(), 1, "{neighs:?}");
        assert_eq!((neighs[0].dst, neighs[0].mac, neighs[0].state), (Some(ip), Some(mac), libc::NUD_PERMANENT));

        nl.del_fdb(vx, mac, Ipv4Addr::new(10, 80, 0, 3)).unwrap();
        assert!(nl.fdb(vx).unwrap().iter().all(|n| n.mac != Some(mac)));
        assert!(nl.del_fdb(vx, mac, Ipv4Addr::new(10, 80, 0, 3)).unwrap_err().is_not_found());
        nl.del_neigh(vx, ip).unwrap();
        assert_eq!(nl.neighs(vx).unwrap(), []);
        let e = nl.del_neigh(vx, ip).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().starts_with(&format!("delete neighbour 10.0.9.2 on link vx-4097 (index {vx}): ")), "{e}");
    });
}
