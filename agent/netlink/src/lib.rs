//! Shoal's network plumbing without the `ip` binary: a small, blocking
//! rtnetlink client ([`Netlink`]) and network-namespace helpers ([`netns`]).
//!
//! # What it owns
//!
//! - [`msg`]: the netlink wire format (headers, attributes, ACK/ERROR/DONE,
//!   multipart replies), pure and hostile-input safe;
//! - [`rt`]: the route family's messages Shoal needs (links: bridge, veth,
//!   VXLAN; IPv4 addresses, routes, neighbour and FDB entries), pure;
//! - `socket`: the only syscalls on netlink sockets, every call bounded by
//!   [`REQUEST_TIMEOUT_MS`];
//! - [`Netlink`]: the operations, each mapped to a typed [`Error`] that names
//!   the operation and the device;
//! - [`netns`]: persistent network namespaces bound at a path (as
//!   `ip netns add` does), running code inside one, and sysctls.
//!
//! # Limits
//!
//! - Linux only (Shoal supports nothing else); IPv4 only; main routing
//!   table only; no multicast groups (nothing listens for events).
//! - Blocking: run it off any async executor (a thread, or `unblock`). A
//!   [`Netlink`] talks to the network namespace of the thread that opened
//!   it, whatever thread uses it later.
//! - Every request waits at most [`REQUEST_TIMEOUT_MS`] for its whole answer;
//!   a late answer to a timed-out request is recognised by its sequence
//!   number and skipped.
//! - Kernel replies are decoded fallibly: a malformed reply is an
//!   [`Error::Malformed`], never a panic.

pub mod msg;
pub mod netns;
pub mod rt;
mod socket;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use msg::{ParseError, Request};
use rt::{Addr, Link, LinkChange, Mac, Neigh, NewLink, Via};
use socket::{Failure, Socket};

/// Longest wait for the kernel's whole answer to one request.
pub const REQUEST_TIMEOUT_MS: u64 = socket::REQUEST_TIMEOUT_MS;

/// A netlink or namespace operation that failed; `op` says what was being
/// done to which device or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `EEXIST`: the link, address, route or namespace is already there.
    #[error("{op}: {message}")]
    Exists { op: String, message: String },
    /// `ENODEV`, `ENOENT`, `ESRCH`: no such device, entry or path.
    #[error("{op}: {message}")]
    NotFound { op: String, message: String },
    /// `EPERM`, `EACCES`.
    #[error("{op}: {message} (needs root or CAP_NET_ADMIN/CAP_SYS_ADMIN)")]
    Permission { op: String, message: String },
    #[error("{op}: {message} (errno {errno})")]
    Other { op: String, errno: i32, message: String },
    #[error("{op}: timed out after {timeout_ms} ms")]
    Timeout { op: String, timeout_ms: u64 },
    #[error("{op}: malformed reply from the kernel: {source}")]
    Malformed { op: String, source: ParseError },
    /// An argument the kernel would refuse (a name longer than 15 bytes...).
    #[error("{op}: {why}")]
    Invalid { op: String, why: &'static str },
    /// A closure run in a namespace thread panicked.
    #[error("{op}: the thread panicked")]
    Panicked { op: String },
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Exists { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The error for a failed syscall or netlink request: `errno` by kind,
    /// with the kernel's extended-ack `text` when there is one.
    pub fn from_errno(op: String, errno: i32, text: Option<&str>) -> Error {
        let mut message = std::io::Error::from_raw_os_error(errno).to_string();
        if let Some(at) = message.find(" (os error") {
            message.truncate(at);
        }
        // strerror's texts are ASCII ("No such device"); ASCII lowering
        // also keeps Unicode case tables out of the binary.
        if let Some(first) = message.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            message = format!("{message}: {text}");
        }
        match errno {
            libc::EEXIST => Error::Exists { op, message },
            libc::ENODEV | libc::ENOENT | libc::ESRCH => Error::NotFound { op, message },
            libc::EPERM | libc::EACCES => Error::Permission { op, message },
            _ => Error::Other { op, errno, message },
        }
    }

    /// The error for the calling thread's last failed syscall.
    pub(crate) fn last_os(op: String) -> Error {
        Error::from_errno(op, std::io::Error::last_os_error().raw_os_error().unwrap_or(0), None)
    }

    fn from_failure(failure: Failure, op: String) -> Error {
        match failure {
            Failure::Errno { errno, text } => Error::from_errno(op, errno, text.as_deref()),
            Failure::Timeout => Error::Timeout { op, timeout_ms: REQUEST_TIMEOUT_MS },
            Failure::Malformed(source) => Error::Malformed { op, source },
            Failure::Interrupted => Error::Other { op, errno: libc::EINTR, message: "dump kept changing while read".into() },
        }
    }
}

/// An rtnetlink socket in the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network
    /// namespace (inside [`netns::run_in`] for another namespace).
    pub fn open() -> Result<Netlink> {
        let sock = Socket::open().map_err(|f| Error::from_failure(f, "open a netlink route socket".into()))?;
        Ok(Netlink { sock })
    }

    /// The index of the link named `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    /// The link named `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let op = || format!("look up link {name}");
        check_name(op, name)?;
        match self.sock.one(rt::get_link(name), rt::link) {
            Ok(link) => Ok(Some(link)),
            Err(f) => match Error::from_failure(f, op()) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Every link in this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        self.sock
            .dump(rt::dump_links, libc::RTM_NEWLINK, |p| rt::link(p).map(Some))
            .map_err(|f| Error::from_failure(f, "list links".into()))
    }

    /// Creates a bridge (down); `Exists` if the name is taken.
    pub fn add_bridge(&mut self, name: &str, mtu: u32) -> Result<()> {
        self.add_link(name, mtu, NewLink::Bridge)
    }

    /// Creates a veth pair `name`/`peer_name` (both down) in this namespace.
    pub fn add_veth(&mut self, name: &str, peer_name: &str, mtu: u32) -> Result<()> {
        check_name(|| format!("add veth {name} (peer {peer_name})"), peer_name)?;
        self.add_link(name, mtu, NewLink::Veth { peer: peer_name })
    }

    /// Creates a VXLAN device (down) with learning off, ARP answered from
    /// its neighbour entries (proxy), no group and no remote: remote MACs
    /// reach VTEPs only through [`Netlink::replace_fdb`] entries.
    pub fn add_vxlan(&mut self, name: &str, vni: u32, local: Ipv4Addr, dstport: u16, mtu: u32) -> Result<()> {
        self.add_link(name, mtu, NewLink::Vxlan { vni, local, dstport })
    }

    /// Creates a link unless one of the same name and kind exists; returns
    /// its index. An existing link's other settings (peer, VNI, MTU) are not
    /// compared.
    pub fn ensure_link(&mut self, name: &str, mtu: u32, kind: NewLink<'_>) -> Result<u32> {
        match self.add_link(name, mtu, kind) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e),
        }
        let op = || format!("ensure {} {name}", kind.kind());
        match self.link(name)? {
            Some(link) if link.kind.as_deref() == Some(kind.kind()) => Ok(link.index),
            Some(link) => {
                let message = format!("exists as a {} link", link.kind.as_deref().unwrap_or("physical"));
                Err(Error::Exists { op: op(), message })
            }
            None => Err(Error::NotFound { op: op(), message: "created, then gone".into() }),
        }
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.ack_on(rt::set_link(index, LinkChange::Up), index, "set up", "")
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.ack_on(rt::set_link(index, LinkChange::Down), index, "set down", "")
    }

    /// Makes `link` a port of `bridge` (0 releases it from its bridge).
    pub fn set_master(&mut self, link: u32, bridge: u32) -> Result<()> {
        self.ack_on(rt::set_link(link, LinkChange::Master(bridge)), link, "set master of", &format!(" to index {bridge}"))
    }

    /// Moves a link into the network namespace open at `fd` (see
    /// [`netns::open`]); the link leaves this namespace with its settings
    /// reset to down and no addresses.
    pub fn set_netns_fd(&mut self, link: u32, fd: BorrowedFd<'_>) -> Result<()> {
        let fd = fd.as_raw_fd() as u32;
        self.ack_on(rt::set_link(link, LinkChange::NetnsFd(fd)), link, "move", &format!(" to the network namespace at fd {fd}"))
    }

    /// Renames a link (it must be down).
    pub fn set_name(&mut self, link: u32, name: &str) -> Result<()> {
        check_name(|| format!("rename link index {link}"), name)?;
        self.ack_on(rt::set_link(link, LinkChange::Name(name)), link, "rename", &format!(" to {name}"))
    }

    pub fn set_mtu(&mut self, link: u32, mtu: u32) -> Result<()> {
        self.ack_on(rt::set_link(link, LinkChange::Mtu(mtu)), link, "set mtu of", &format!(" to {mtu}"))
    }

    pub fn set_mac(&mut self, link: u32, mac: Mac) -> Result<()> {
        self.ack_on(rt::set_link(link, LinkChange::Mac(mac)), link, "set mac of", &format!(" to {}", fmt_mac(mac)))
    }

    /// Deletes a link (a veth takes its peer with it); `NotFound` if gone.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        self.ack_on(rt::del_link(index), index, "delete", "")
    }

    /// Adds an IPv4 address; `Exists` if the link has it with this prefix.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.ack_on(rt::new_addr(index, addr, prefix_len), index, &format!("add address {addr}/{prefix_len} to"), "")
    }

    /// [`Netlink::add_addr`] where the address already being there is fine.
    pub fn ensure_addr(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        ok_if_exists(self.add_addr(index, addr, prefix_len))
    }

    /// Removes an IPv4 address from a link; `NotFound`-like errors when it has none.
    pub fn del_addr(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.ack_on(rt::del_addr(index, addr, prefix_len), index, &format!("delete address {addr}/{prefix_len} from"), "")
    }

    /// The IPv4 addresses of one link.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<Addr>> {
        let all =
            self.sock.dump(rt::dump_addrs, libc::RTM_NEWADDR, rt::addr).map_err(|f| Error::from_failure(f, "list addresses".into()))?;
        Ok(all.into_iter().filter(|a| a.index == index).collect())
    }

    /// Adds `default via gateway`; `Exists` if there is a default route.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        self.add_route(Ipv4Addr::UNSPECIFIED, 0, Via::Gateway(gateway))
    }

    /// Adds a route to `dst/prefix_len`; `Exists` if one is there.
    pub fn add_route(&mut self, dst: Ipv4Addr, prefix_len: u8, via: Via) -> Result<()> {
        self.route(dst, prefix_len, via, false)
    }

    /// Adds or replaces the route to `dst/prefix_len` (idempotent).
    pub fn replace_route(&mut self, dst: Ipv4Addr, prefix_len: u8, via: Via) -> Result<()> {
        self.route(dst, prefix_len, via, true)
    }

    /// Adds or replaces a permanent FDB entry on a VXLAN device: frames for
    /// `mac` are sent to the VTEP at `dst`.
    pub fn replace_fdb(&mut self, vxlan: u32, mac: Mac, dst: Ipv4Addr) -> Result<()> {
        let what = format!("set fdb entry {} dst {dst} on", fmt_mac(mac));
        self.ack_on(rt::replace_fdb(vxlan, mac, dst), vxlan, &what, "")
    }

    pub fn del_fdb(&mut self, vxlan: u32, mac: Mac, dst: Ipv4Addr) -> Result<()> {
        let what = format!("delete fdb entry {} dst {dst} on", fmt_mac(mac));
        self.ack_on(rt::del_fdb(vxlan, mac, dst), vxlan, &what, "")
    }

    /// The FDB entries of one link (bridge port or VXLAN device).
    pub fn fdb(&mut self, index: u32) -> Result<Vec<Neigh>> {
        self.neigh_dump(libc::AF_BRIDGE as u8, index, "list fdb entries")
    }

    /// Adds or replaces a permanent IPv4 neighbour (ARP) entry.
    pub fn replace_neigh(&mut self, index: u32, ip: Ipv4Addr, mac: Mac) -> Result<()> {
        let what = format!("set neighbour {ip} lladdr {} on", fmt_mac(mac));
        self.ack_on(rt::replace_neigh(index, ip, mac), index, &what, "")
    }

    pub fn del_neigh(&mut self, index: u32, ip: Ipv4Addr) -> Result<()> {
        self.ack_on(rt::del_neigh(index, ip), index, &format!("delete neighbour {ip} on"), "")
    }

    /// The IPv4 neighbour entries of one link.
    pub fn neighs(&mut self, index: u32) -> Result<Vec<Neigh>> {
        self.neigh_dump(libc::AF_INET as u8, index, "list neighbours")
    }

    fn add_link(&mut self, name: &str, mtu: u32, kind: NewLink<'_>) -> Result<()> {
        let op = || format!("add {} {name}", kind.kind());
        check_name(op, name)?;
        self.sock.ack(rt::new_link(name, mtu, kind)).map_err(|f| Error::from_failure(f, op()))
    }

    fn route(&mut self, dst: Ipv4Addr, prefix_len: u8, via: Via, replace: bool) -> Result<()> {
        let verb = if replace { "replace" } else { "add" };
        let op = || match via {
            Via::Gateway(gw) => format!("{verb} route {dst}/{prefix_len} via {gw}"),
            Via::Dev(index) => format!("{verb} route {dst}/{prefix_len} dev index {index}"),
        };
        if prefix_len > 32 {
            return Err(Error::Invalid { op: op(), why: "prefix length above 32" });
        }
        self.sock.ack(rt::new_route(dst, prefix_len, via, replace)).map_err(|f| Error::from_failure(f, op()))
    }

    fn neigh_dump(&mut self, family: u8, index: u32, what: &str) -> Result<Vec<Neigh>> {
        // The family header carries the family only: AF_INET and AF_BRIDGE
        // dumps are separate requests to the kernel.
        let request = move || rt::dump_neighs(family);
        let all = self
            .sock
            .dump(request, libc::RTM_NEWNEIGH, |p| rt::neigh(p).map(Some))
            .map_err(|f| Error::from_failure(f, what.to_string()))?;
        Ok(all.into_iter().filter(|n| n.index == index).collect())
    }

    /// Sends a request about link `index`; an error names the operation
    /// "`verb` link NAME (index N)`detail`" (the name looked up only then).
    fn ack_on(&mut self, request: Request, index: u32, verb: &str, detail: &str) -> Result<()> {
        match self.sock.ack(request) {
            Ok(()) => Ok(()),
            Err(f) => {
                let name = self.sock.one(rt::get_link_by_index(index), rt::link).map(|l| l.name).ok();
                let op = match name {
                    Some(name) => format!("{verb} link {name} (index {index}){detail}"),
                    None => format!("{verb} link index {index}{detail}"),
                };
                Err(Error::from_failure(f, op))
            }
        }
    }
}

/// `Ok` for an `Exists` error: the idempotent form of an add.
pub fn ok_if_exists(result: Result<()>) -> Result<()> {
    match result {
        Err(e) if e.is_exists() => Ok(()),
        other => other,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: Mac) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Interface names the kernel accepts: 1..=15 bytes, no NUL, `/` or space.
fn check_name(op: impl FnOnce() -> String, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "empty interface name"
    } else if name.len() > rt::IFNAME_BYTES_MAX {
        "interface name longer than 15 bytes"
    } else if name.bytes().any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace()) {
        "interface name with a NUL, '/' or whitespace"
    } else {
        return Ok(());
    };
    Err(Error::Invalid { op: op(), why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_kinds_with_lowercase_messages() {
        let e = Error::from_errno("add bridge br0".into(), libc::EEXIST, None);
        assert!(e.is_exists());
        assert_eq!(e.to_string(), "add bridge br0: file exists");
        let e = Error::from_errno("set up link index 9".into(), libc::ENODEV, None);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "set up link index 9: no such device");
        let e = Error::from_errno("add vxlan vx0".into(), libc::EINVAL, Some("Invalid VXLAN ID"));
        assert_eq!(e.to_string(), "add vxlan vx0: invalid argument: Invalid VXLAN ID (errno 22)");
        let e = Error::from_errno("add veth a".into(), libc::EPERM, None);
        assert!(matches!(e, Error::Permission { .. }));
    }

    #[test]
    fn names_are_checked_before_the_kernel_sees_them() {
        let op = || "add bridge".to_string();
        assert!(check_name(op, "shoal-br-12345").is_ok());
        let e = check_name(op, "sixteen-bytes-xx").unwrap_err();
        assert_eq!(e.to_string(), "add bridge: interface name longer than 15 bytes");
        assert!(check_name(op, "").is_err());
        assert!(check_name(op, "a/b").is_err());
        assert!(check_name(op, "a b").is_err());
        assert_eq!(fmt_mac([2, 0x42, 0xac, 0x11, 0, 0xff]), "02:42:ac:11:00:ff");
    }
}
