//! The tunnel relay's TUN device (issue #15): made with `TUNSETIFF` on
//! `/dev/net/tun` (layer 3, no packet information header), given the node's
//! tunnel address with the tunnel network's prefix (so the kernel routes
//! every peer's tunnel address into it), its MTU, and brought up. The
//! device lives as long as the file is open: it goes with the daemon.

use super::Ipv4Net;
use shoal_netlink::Netlink;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Opens TUN device `name` with `addr` and `mtu`, up. Errors name the
/// step that failed.
pub fn open(name: &str, addr: Ipv4Net, mtu: u32) -> Result<File, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun ({e}; kernel option CONFIG_TUN)"))?;
    // struct ifreq: the name (16 bytes, NUL-terminated), then the flags (a short).
    let mut ifr = [0u8; 40];
    if name.is_empty() || name.len() >= 16 {
        return Err(format!("device name {name:?} does not fit an interface name"));
    }
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `ifr` is a buffer the size of `struct ifreq`, valid for the call; the fd is open.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF as _, ifr.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!("cannot make TUN device {name}: {}", std::io::Error::last_os_error()));
    }
    configure(name, addr, mtu)?;
    Ok(f)
}

/// Gives device `name` exactly address `addr` (others removed), `mtu`, up.
pub fn configure(name: &str, addr: Ipv4Net, mtu: u32) -> Result<(), String> {
    let err = |what: &str, e: shoal_netlink::Error| format!("cannot {what} of TUN device {name}: {e}");
    let mut nl = Netlink::open().map_err(|e| err("open netlink", e))?;
    let index = nl.link_index(name).map_err(|e| err("find the index", e))?.ok_or_else(|| format!("TUN device {name} vanished"))?;
    for a in nl.addrs(index).map_err(|e| err("list the addresses", e))? {
        if a.addr != addr.addr || a.prefix_len != addr.prefix {
            nl.del_addr(index, a.addr, a.prefix_len).map_err(|e| err("remove an old address", e))?;
        }
    }
    nl.ensure_addr(index, addr.addr, addr.prefix).map_err(|e| err("set the address", e))?;
    nl.set_mtu(index, mtu).map_err(|e| err("set the MTU", e))?;
    nl.set_up(index).map_err(|e| err("bring up", e))?;
    Ok(())
}
