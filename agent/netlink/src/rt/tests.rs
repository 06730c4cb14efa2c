//! Byte-exact requests (derived by hand from the uapi headers), round trips
//! through the decoders, and hostile replies (truncations and a seeded
//! mutation loop) that must parse to an error, never a panic.

use super::*;
use crate::msg::{messages, reply, Reply};

fn ne16(v: u16) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn ne32(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// An `nlmsghdr` with pid 0.
fn hdr(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
    [ne32(len), ne16(ty), ne16(flags), ne32(seq), ne32(0)].concat()
}

/// An `rtattr` header.
fn rta(len: u16, ty: u16) -> Vec<u8> {
    [ne16(len), ne16(ty)].concat()
}

fn check(got: Vec<u8>, want: Vec<Vec<u8>>) {
    let want = want.concat();
    assert_eq!(got.len(), want.len(), "length");
    assert_eq!(got, want);
}

#[test]
fn veth_request_is_byte_exact() {
    let got = new_link("va", 1450, NewLink::Veth { peer: "vb" }).finish(7);
    check(
        got,
        vec![
            // RTM_NEWLINK, NLM_F_REQUEST|ACK|EXCL|CREATE
            hdr(104, 16, 0x0605, 7),
            vec![0; 16], // ifinfomsg
            rta(7, 3),   // IFLA_IFNAME "va\0" + 1 pad
            b"va\0\0".to_vec(),
            rta(8, 4), // IFLA_MTU
            ne32(1450),
            rta(56, 18), // IFLA_LINKINFO
            rta(9, 1),   // IFLA_INFO_KIND "veth\0" + 3 pad
            b"veth\0\0\0\0".to_vec(),
            rta(40, 2), // IFLA_INFO_DATA
            rta(36, 1), // VETH_INFO_PEER: ifinfomsg + attributes
            vec![0; 16],
            rta(7, 3),
            b"vb\0\0".to_vec(),
            rta(8, 4),
            ne32(1450),
        ],
    );
}

#[test]
fn vxlan_request_is_byte_exact() {
    let kind = NewLink::Vxlan { vni: 4097, local: Ipv4Addr::new(10, 1, 2, 3), dstport: 4789 };
    let got = new_link("vx", 1450, kind).finish(1);
    check(
        got,
        vec![
            hdr(108, 16, 0x0605, 1),
            vec![0; 16],
            rta(7, 3),
            b"vx\0\0".to_vec(),
            rta(8, 4),
            ne32(1450),
            rta(60, 18),
            rta(10, 1), // "vxlan\0" + 2 pad
            b"vxlan\0\0\0".to_vec(),
            rta(44, 2),
            rta(8, 1), // IFLA_VXLAN_ID, host order
            ne32(4097),
            rta(8, 4), // IFLA_VXLAN_LOCAL, network order
            vec![10, 1, 2, 3],
            rta(6, 15), // IFLA_VXLAN_PORT, big-endian on every host
            vec![0x12, 0xb5, 0, 0],
            rta(5, 7), // IFLA_VXLAN_LEARNING = 0
            vec![0, 0, 0, 0],
            rta(5, 11), // IFLA_VXLAN_PROXY = 1
            vec![1, 0, 0, 0],
        ],
    );
}

#[test]
fn set_up_master_and_fdb_requests_are_byte_exact() {
    let up = set_link(5, LinkChange::Up).finish(2);
    // RTM_SETLINK, REQUEST|ACK; ifi_flags = ifi_change = IFF_UP
    check(up, vec![hdr(32, 19, 0x0005, 2), vec![0, 0, 0, 0], ne32(5), ne32(1), ne32(1)]);
    let down = set_link(5, LinkChange::Down).finish(2);
    check(down, vec![hdr(32, 19, 0x0005, 2), vec![0, 0, 0, 0], ne32(5), ne32(0), ne32(1)]);
    let master = set_link(5, LinkChange::Master(3)).finish(3);
    check(master, vec![hdr(40, 19, 0x0005, 3), vec![0; 4], ne32(5), ne32(0), ne32(0), rta(8, 10), ne32(3)]);
    let mac = [0x02, 0x42, 0x0a, 0, 0, 2];
    let fdb = replace_fdb(9, mac, Ipv4Addr::new(192, 168, 0, 2)).finish(4);
    // RTM_NEWNEIGH, REQUEST|ACK|REPLACE|CREATE; ndmsg AF_BRIDGE, NUD_PERMANENT, NTF_SELF
    check(
        fdb,
        vec![
            hdr(48, 28, 0x0505, 4),
            vec![7, 0, 0, 0],
            ne32(9),
            ne16(0x80),
            vec![0x02, 0],
            rta(10, 2), // NDA_LLADDR
            mac.to_vec(),
            vec![0, 0],
            rta(8, 1), // NDA_DST
            vec![192, 168, 0, 2],
        ],
    );
}

#[test]
fn addr_and_route_requests_are_byte_exact() {
    let got = new_addr(4, Ipv4Addr::new(10, 0, 0, 1), 24).finish(5);
    // RTM_NEWADDR; ifaddrmsg AF_INET/24 scope universe; IFA_LOCAL, IFA_ADDRESS
    check(got, vec![hdr(40, 20, 0x0605, 5), vec![2, 24, 0, 0], ne32(4), rta(8, 2), vec![10, 0, 0, 1], rta(8, 1), vec![10, 0, 0, 1]]);
    let got = new_route(Ipv4Addr::UNSPECIFIED, 0, Via::Gateway(Ipv4Addr::new(10, 0, 0, 1)), false).finish(6);
    // RTM_NEWROUTE; rtmsg AF_INET, main table, RTPROT_BOOT, universe, unicast
    check(got, vec![hdr(36, 24, 0x0605, 6), vec![2, 0, 0, 0, 254, 3, 0, 1], ne32(0), rta(8, 5), vec![10, 0, 0, 1]]);
    let got = new_route(Ipv4Addr::new(10, 9, 0, 0), 16, Via::Dev(3), true).finish(7);
    check(got, vec![hdr(44, 24, 0x0505, 7), vec![2, 16, 0, 0, 254, 3, 253, 1], ne32(0), rta(8, 1), vec![10, 9, 0, 0], rta(8, 4), ne32(3)]);
}

#[test]
fn requests_round_trip_through_the_decoders() {
    // A NEWLINK request has the same layout as the kernel's NEWLINK reply.
    let buf = new_link("br-shoal", 1500, NewLink::Bridge).finish(1);
    let m = messages(&buf).next().unwrap().unwrap();
    let l = link(m.payload).unwrap();
    assert_eq!((l.name.as_str(), l.mtu, l.kind.as_deref(), l.up, l.master), ("br-shoal", 1500, Some("bridge"), false, None));
    let mut r = Request::new(libc::RTM_NEWLINK, 2);
    r.push(&ifinfomsg(0, 12, libc::IFF_UP as u32, 0));
    r.attr_str(libc::IFLA_IFNAME, "eth0");
    r.attr(libc::IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9]);
    r.attr_u32(libc::IFLA_MASTER, 4);
    let buf = r.finish(1);
    let l = link(messages(&buf).next().unwrap().unwrap().payload).unwrap();
    assert_eq!((l.index, l.up, l.master, l.mac), (12, true, Some(4), Some([2, 0, 0, 0, 0, 9])));

    let buf = new_addr(4, Ipv4Addr::new(10, 0, 0, 7), 24).finish(1);
    let a = addr(messages(&buf).next().unwrap().unwrap().payload).unwrap();
    assert_eq!(a, Some(Addr { index: 4, addr: Ipv4Addr::new(10, 0, 0, 7), prefix_len: 24 }));

    let buf = replace_neigh(6, Ipv4Addr::new(10, 0, 0, 9), [2, 1, 2, 3, 4, 5]).finish(1);
    let n = neigh(messages(&buf).next().unwrap().unwrap().payload).unwrap();
    let want =
        Neigh { index: 6, dst: Some(Ipv4Addr::new(10, 0, 0, 9)), mac: Some([2, 1, 2, 3, 4, 5]), state: libc::NUD_PERMANENT, flags: 0 };
    assert_eq!(n, want);
}

/// A datagram as a dump might return it: a link, an address, a neighbour,
/// an error and the end.
fn sample_datagram() -> Vec<u8> {
    let mut out = new_link("veth-x", 1400, NewLink::Veth { peer: "veth-y" }).finish(9);
    out.extend(new_addr(3, Ipv4Addr::new(10, 0, 0, 2), 24).finish(9));
    out.extend(replace_fdb(3, [2, 0, 0, 0, 0, 1], Ipv4Addr::new(1, 2, 3, 4)).finish(9));
    let mut err = Request::new(libc::NLMSG_ERROR as u16, (libc::NLM_F_CAPPED | libc::NLM_F_ACK_TLVS) as u16);
    let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
    body.extend(Request::new(16, 5).finish(9));
    err.push(&body);
    err.attr_str(crate::msg::NLMSGERR_ATTR_MSG, "bad");
    out.extend(err.finish(9));
    out.extend(Request::new(libc::NLMSG_DONE as u16, 2).finish(9));
    out
}

/// Everything the socket layer does with a datagram; returns how many
/// messages decoded.
fn parse_all(buf: &[u8]) -> Result<usize, ParseError> {
    let mut n = 0;
    for m in messages(buf) {
        if let Reply::Data(m) = reply(m?)? {
            // Every decoder on every payload must not panic; the one for
            // the message's type must succeed.
            let (l, a, n) = (link(m.payload), addr(m.payload), neigh(m.payload));
            match m.ty {
                libc::RTM_NEWLINK => drop(l?),
                libc::RTM_NEWADDR => drop(a?),
                libc::RTM_NEWNEIGH => drop(n?),
                _ => {}
            }
        }
        n += 1;
    }
    Ok(n)
}

#[test]
fn sample_parses_and_every_truncation_is_handled() {
    let buf = sample_datagram();
    assert_eq!(parse_all(&buf), Ok(5));
    for len in 0..buf.len() {
        // A truncated datagram is an error or a shorter valid prefix.
        let _ = parse_all(&buf[..len]);
    }
    assert_eq!(parse_all(&buf[..20]), Err(ParseError::MessageLength { len: 112, have: 20 }));
}

#[test]
fn ten_thousand_seeded_mutations_never_panic() {
    let base = sample_datagram();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ok, mut err) = (0, 0);
    for _ in 0..10_000 {
        let mut buf = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % buf.len() as u64) as usize;
            match next() % 4 {
                0 => buf[at] = next() as u8,
                // Lengths are the interesting bytes: make them huge or tiny.
                1 => buf[at] = 0xff,
                2 => buf[at] = 0,
                _ => buf.truncate(at.max(1)),
            }
        }
        match parse_all(&buf) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    // Both outcomes occur, so the loop exercises the error paths.
    assert!(ok > 100, "ok {ok}");
    assert!(err > 100, "err {err}");
}
