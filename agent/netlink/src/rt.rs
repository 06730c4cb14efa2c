//! rtnetlink messages, pure: the route family's headers (`ifinfomsg`,
//! `ifaddrmsg`, `rtmsg`, `ndmsg`), the requests Shoal sends (links,
//! addresses, routes, FDB and neighbour entries) and decoders for the
//! replies it reads back (links, IPv4 addresses, neighbour/FDB entries).
//!
//! Layouts and numbers come from the kernel's uapi headers
//! (`linux/rtnetlink.h`, `if_link.h`, `if_addr.h`, `neighbour.h`, `veth.h`);
//! libc's constants are used where libc has them.

use std::net::Ipv4Addr;

use crate::msg::{self, ParseError, Request};

/// Longest interface name: `IFNAMSIZ` minus the NUL.
pub const IFNAME_BYTES_MAX: usize = libc::IFNAMSIZ - 1;
/// `sizeof(struct ifinfomsg)`.
pub const IFINFOMSG_LEN: usize = 16;
/// `sizeof(struct ifaddrmsg)`.
pub const IFADDRMSG_LEN: usize = 8;
/// `sizeof(struct rtmsg)`.
pub const RTMSG_LEN: usize = 12;
/// `sizeof(struct ndmsg)`.
pub const NDMSG_LEN: usize = 12;

/// `VETH_INFO_PEER` (uapi `linux/veth.h`): the peer's `ifinfomsg` + attributes.
pub const VETH_INFO_PEER: u16 = 1;
/// `IFLA_VXLAN_*` (uapi `linux/if_link.h`): VNI, `u32`.
pub const IFLA_VXLAN_ID: u16 = 1;
/// Local source address, `in_addr` (network order).
pub const IFLA_VXLAN_LOCAL: u16 = 4;
/// Learning of remote MACs from received packets, `u8`.
pub const IFLA_VXLAN_LEARNING: u16 = 7;
/// ARP proxy: answer ARP requests from the device's neighbour table, `u8`.
pub const IFLA_VXLAN_PROXY: u16 = 11;
/// UDP destination port, `__be16` (network order).
pub const IFLA_VXLAN_PORT: u16 = 15;

const REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const ACK: u16 = REQUEST | libc::NLM_F_ACK as u16;
const CREATE: u16 = ACK | libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16;
const REPLACE: u16 = ACK | libc::NLM_F_CREATE as u16 | libc::NLM_F_REPLACE as u16;
const DUMP: u16 = REQUEST | libc::NLM_F_DUMP as u16;

/// A MAC address.
pub type Mac = [u8; 6];

/// One network interface as a link dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `vxlan`), none for physical links.
    pub kind: Option<String>,
    /// The bridge this link is a port of (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub mtu: u32,
    /// `IFLA_ADDRESS` when it is a 6-byte MAC.
    pub mac: Option<Mac>,
    /// A VXLAN device's identity (`IFLA_INFO_DATA`): what a caller must
    /// compare before adopting it.
    pub vxlan: Option<VxlanInfo>,
}

/// A VXLAN device's VNI, local address and UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
}

/// One IPv4 address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// One neighbour (`AF_INET`) or FDB (`AF_BRIDGE`) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    pub index: u32,
    /// `NDA_DST` when it is IPv4: the neighbour's IP, or a VXLAN FDB
    /// entry's remote VTEP.
    pub dst: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
    /// `NUD_*` bits.
    pub state: u16,
    /// `NTF_*` bits.
    pub flags: u8,
}

/// What kind of link [`new_link`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewLink<'a> {
    Bridge,
    /// A veth pair; both ends get the same MTU.
    Veth {
        peer: &'a str,
    },
    /// A VXLAN device without learning, group or remote: every remote MAC
    /// comes from an FDB entry and ARP is answered from neighbour entries.
    Vxlan {
        vni: u32,
        local: Ipv4Addr,
        dstport: u16,
    },
}

impl NewLink<'_> {
    /// `IFLA_INFO_KIND`.
    pub fn kind(&self) -> &'static str {
        match self {
            NewLink::Bridge => "bridge",
            NewLink::Veth { .. } => "veth",
            NewLink::Vxlan { .. } => "vxlan",
        }
    }
}

/// One change [`set_link`] makes to an existing link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange<'a> {
    Up,
    Down,
    /// Enslave to a bridge (0 releases it).
    Master(u32),
    /// Move into the network namespace of this open file descriptor.
    NetnsFd(u32),
    Name(&'a str),
    Mtu(u32),
    Mac(Mac),
}

/// Where [`new_route`] sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through a gateway (scope universe).
    Gateway(Ipv4Addr),
    /// Directly out of this interface index (scope link).
    Dev(u32),
}

pub fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

pub fn ifaddrmsg(family: u8, prefix_len: u8, scope: u8, index: u32) -> [u8; IFADDRMSG_LEN] {
    let mut b = [0u8; IFADDRMSG_LEN];
    b[0] = family;
    b[1] = prefix_len;
    b[3] = scope;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// `rtmsg` for the main table: family, dst_len, src_len 0, tos 0, table,
/// protocol, scope, type, flags 0.
pub fn rtmsg(dst_len: u8, protocol: u8, scope: u8, ty: u8) -> [u8; RTMSG_LEN] {
    [libc::AF_INET as u8, dst_len, 0, 0, libc::RT_TABLE_MAIN, protocol, scope, ty, 0, 0, 0, 0]
}

pub fn ndmsg(family: u8, index: u32, state: u16, flags: u8) -> [u8; NDMSG_LEN] {
    let mut b = [0u8; NDMSG_LEN];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..10].copy_from_slice(&state.to_ne_bytes());
    b[10] = flags;
    b
}

/// `RTM_GETLINK` for one name (answered by one `RTM_NEWLINK` or `ENODEV`).
pub fn get_link(name: &str) -> Request {
    let mut r = Request::new(libc::RTM_GETLINK, REQUEST);
    r.push(&ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0));
    r.attr_str(libc::IFLA_IFNAME, name);
    r
}

/// `RTM_GETLINK` for one index.
pub fn get_link_by_index(index: u32) -> Request {
    let mut r = Request::new(libc::RTM_GETLINK, REQUEST);
    r.push(&ifinfomsg(libc::AF_UNSPEC as u8, index, 0, 0));
    r
}

pub fn dump_links() -> Request {
    let mut r = Request::new(libc::RTM_GETLINK, DUMP);
    r.push(&ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0));
    r
}

/// `RTM_NEWLINK` with `NLM_F_CREATE | NLM_F_EXCL`, created down.
pub fn new_link(name: &str, mtu: u32, kind: NewLink<'_>) -> Request {
    let mut r = Request::new(libc::RTM_NEWLINK, CREATE);
    r.push(&ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0));
    r.attr_str(libc::IFLA_IFNAME, name);
    r.attr_u32(libc::IFLA_MTU, mtu);
    let info = r.nest_start(libc::IFLA_LINKINFO);
    r.attr_str(libc::IFLA_INFO_KIND, kind.kind());
    match kind {
        NewLink::Bridge => {}
        NewLink::Veth { peer } => {
            let data = r.nest_start(libc::IFLA_INFO_DATA);
            let p = r.nest_start(VETH_INFO_PEER);
            r.push(&ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0));
            r.attr_str(libc::IFLA_IFNAME, peer);
            r.attr_u32(libc::IFLA_MTU, mtu);
            r.nest_end(p);
            r.nest_end(data);
        }
        NewLink::Vxlan { vni, local, dstport } => {
            let data = r.nest_start(libc::IFLA_INFO_DATA);
            r.attr_u32(IFLA_VXLAN_ID, vni);
            r.attr(IFLA_VXLAN_LOCAL, &local.octets());
            r.attr(IFLA_VXLAN_PORT, &dstport.to_be_bytes());
            r.attr_u8(IFLA_VXLAN_LEARNING, 0);
            r.attr_u8(IFLA_VXLAN_PROXY, 1);
            r.nest_end(data);
        }
    }
    r.nest_end(info);
    r
}

/// `RTM_SETLINK` on an index with one change.
pub fn set_link(index: u32, change: LinkChange<'_>) -> Request {
    let mut r = Request::new(libc::RTM_SETLINK, ACK);
    let up = libc::IFF_UP as u32;
    let (flags, mask) = match change {
        LinkChange::Up => (up, up),
        LinkChange::Down => (0, up),
        _ => (0, 0),
    };
    r.push(&ifinfomsg(libc::AF_UNSPEC as u8, index, flags, mask));
    match change {
        LinkChange::Up | LinkChange::Down => {}
        LinkChange::Master(master) => r.attr_u32(libc::IFLA_MASTER, master),
        LinkChange::NetnsFd(fd) => r.attr_u32(libc::IFLA_NET_NS_FD, fd),
        LinkChange::Name(name) => r.attr_str(libc::IFLA_IFNAME, name),
        LinkChange::Mtu(mtu) => r.attr_u32(libc::IFLA_MTU, mtu),
        LinkChange::Mac(mac) => r.attr(libc::IFLA_ADDRESS, &mac),
    }
    r
}

pub fn del_link(index: u32) -> Request {
    let mut r = Request::new(libc::RTM_DELLINK, ACK);
    r.push(&ifinfomsg(libc::AF_UNSPEC as u8, index, 0, 0));
    r
}

/// `RTM_NEWADDR` (exclusive) for an IPv4 address, as `ip addr add` sends it.
pub fn new_addr(index: u32, addr: Ipv4Addr, prefix_len: u8) -> Request {
    let mut r = Request::new(libc::RTM_NEWADDR, CREATE);
    r.push(&ifaddrmsg(libc::AF_INET as u8, prefix_len, libc::RT_SCOPE_UNIVERSE, index));
    r.attr(libc::IFA_LOCAL, &addr.octets());
    r.attr(libc::IFA_ADDRESS, &addr.octets());
    r
}

/// `RTM_DELADDR` of one IPv4 address of a link.
pub fn del_addr(index: u32, addr: Ipv4Addr, prefix_len: u8) -> Request {
    let mut r = Request::new(libc::RTM_DELADDR, ACK);
    r.push(&ifaddrmsg(libc::AF_INET as u8, prefix_len, libc::RT_SCOPE_UNIVERSE, index));
    r.attr(libc::IFA_LOCAL, &addr.octets());
    r.attr(libc::IFA_ADDRESS, &addr.octets());
    r
}

pub fn dump_addrs() -> Request {
    let mut r = Request::new(libc::RTM_GETADDR, DUMP);
    r.push(&ifaddrmsg(libc::AF_INET as u8, 0, 0, 0));
    r
}

/// `RTM_NEWROUTE` in the main table; `replace` converges an existing route
/// for the same destination instead of failing with `EEXIST`.
pub fn new_route(dst: Ipv4Addr, dst_len: u8, via: Via, replace: bool) -> Request {
    let mut r = Request::new(libc::RTM_NEWROUTE, if replace { REPLACE } else { CREATE });
    let scope = match via {
        Via::Gateway(_) => libc::RT_SCOPE_UNIVERSE,
        Via::Dev(_) => libc::RT_SCOPE_LINK,
    };
    r.push(&rtmsg(dst_len, libc::RTPROT_BOOT, scope, libc::RTN_UNICAST));
    if dst_len > 0 {
        r.attr(libc::RTA_DST, &dst.octets());
    }
    match via {
        Via::Gateway(gw) => r.attr(libc::RTA_GATEWAY, &gw.octets()),
        Via::Dev(index) => r.attr_u32(libc::RTA_OIF, index),
    }
    r
}

/// `RTM_NEWNEIGH` (replace) of a permanent VXLAN FDB entry on the device
/// itself (`NTF_SELF`): frames for `mac` go to the VTEP `dst`.
pub fn replace_fdb(index: u32, mac: Mac, dst: Ipv4Addr) -> Request {
    fdb(libc::RTM_NEWNEIGH, REPLACE, index, mac, dst)
}

pub fn del_fdb(index: u32, mac: Mac, dst: Ipv4Addr) -> Request {
    fdb(libc::RTM_DELNEIGH, ACK, index, mac, dst)
}

fn fdb(ty: u16, flags: u16, index: u32, mac: Mac, dst: Ipv4Addr) -> Request {
    let mut r = Request::new(ty, flags);
    r.push(&ndmsg(libc::AF_BRIDGE as u8, index, libc::NUD_PERMANENT, libc::NTF_SELF));
    r.attr(libc::NDA_LLADDR, &mac);
    r.attr(libc::NDA_DST, &dst.octets());
    r
}

/// `RTM_NEWNEIGH` (replace) of a permanent IPv4 neighbour entry.
pub fn replace_neigh(index: u32, ip: Ipv4Addr, mac: Mac) -> Request {
    let mut r = Request::new(libc::RTM_NEWNEIGH, REPLACE);
    r.push(&ndmsg(libc::AF_INET as u8, index, libc::NUD_PERMANENT, 0));
    r.attr(libc::NDA_DST, &ip.octets());
    r.attr(libc::NDA_LLADDR, &mac);
    r
}

pub fn del_neigh(index: u32, ip: Ipv4Addr) -> Request {
    let mut r = Request::new(libc::RTM_DELNEIGH, ACK);
    r.push(&ndmsg(libc::AF_INET as u8, index, 0, 0));
    r.attr(libc::NDA_DST, &ip.octets());
    r
}

/// A neighbour dump: `AF_INET` for ARP entries, `AF_BRIDGE` for FDB entries.
pub fn dump_neighs(family: u8) -> Request {
    let mut r = Request::new(libc::RTM_GETNEIGH, DUMP);
    r.push(&ndmsg(family, 0, 0, 0));
    r
}

/// Decodes an `RTM_NEWLINK` payload.
pub fn link(payload: &[u8]) -> Result<Link, ParseError> {
    let h = msg::header(payload, "ifinfomsg", IFINFOMSG_LEN)?;
    let mut link = Link {
        index: msg::u32_at(h, 4),
        name: String::new(),
        kind: None,
        master: None,
        up: msg::u32_at(h, 8) & libc::IFF_UP as u32 != 0,
        mtu: 0,
        mac: None,
        vxlan: None,
    };
    let mut data: Option<&[u8]> = None;
    for attr in msg::attrs_after(payload, IFINFOMSG_LEN) {
        let attr = attr?;
        match attr.ty {
            libc::IFLA_IFNAME => link.name = attr.str(),
            libc::IFLA_MTU => link.mtu = attr.u32()?,
            libc::IFLA_MASTER => link.master = Some(attr.u32()?).filter(|&m| m != 0),
            libc::IFLA_ADDRESS => link.mac = <Mac>::try_from(attr.data).ok(),
            libc::IFLA_LINKINFO => {
                for info in attr.nested() {
                    let info = info?;
                    if info.ty == libc::IFLA_INFO_KIND {
                        link.kind = Some(info.str());
                    } else if info.ty == libc::IFLA_INFO_DATA {
                        data = Some(info.data);
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some("vxlan"), Some(data)) = (link.kind.as_deref(), data) {
        let mut v = VxlanInfo { vni: 0, local: None, port: 0 };
        for a in msg::attrs(data) {
            let a = a?;
            match a.ty {
                IFLA_VXLAN_ID => v.vni = a.u32()?,
                IFLA_VXLAN_LOCAL => v.local = Some(Ipv4Addr::from(a.fixed::<4>("IFLA_VXLAN_LOCAL")?)),
                IFLA_VXLAN_PORT => v.port = a.be16()?,
                _ => {}
            }
        }
        link.vxlan = Some(v);
    }
    Ok(link)
}

/// Decodes an `RTM_NEWADDR` payload; `None` for other families.
pub fn addr(payload: &[u8]) -> Result<Option<Addr>, ParseError> {
    let h = msg::header(payload, "ifaddrmsg", IFADDRMSG_LEN)?;
    if h[0] != libc::AF_INET as u8 {
        return Ok(None);
    }
    let (mut local, mut address) = (None, None);
    for attr in msg::attrs_after(payload, IFADDRMSG_LEN) {
        let attr = attr?;
        match attr.ty {
            libc::IFA_LOCAL => local = Some(attr.fixed::<4>("IFA_LOCAL")?),
            libc::IFA_ADDRESS => address = Some(attr.fixed::<4>("IFA_ADDRESS")?),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links and equal to it otherwise.
    Ok(local.or(address).map(|a| Addr { index: msg::u32_at(h, 4), addr: Ipv4Addr::from(a), prefix_len: h[1] }))
}

/// Decodes an `RTM_NEWNEIGH` payload (either family).
pub fn neigh(payload: &[u8]) -> Result<Neigh, ParseError> {
    let h = msg::header(payload, "ndmsg", NDMSG_LEN)?;
    let mut n = Neigh { index: msg::u32_at(h, 4), dst: None, mac: None, state: msg::u16_at(h, 8), flags: h[10] };
    for attr in msg::attrs_after(payload, NDMSG_LEN) {
        let attr = attr?;
        match attr.ty {
            libc::NDA_DST => n.dst = <[u8; 4]>::try_from(attr.data).ok().map(Ipv4Addr::from),
            libc::NDA_LLADDR => n.mac = <Mac>::try_from(attr.data).ok(),
            _ => {}
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
