//! Size probe: a binary that calls the main operations, to compare with
//! `size_empty` (`cargo build --release -p shoal-netlink --examples`).
//! Running it needs root and changes nothing outside a namespace it creates
//! at argv[1] and removes.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use shoal_netlink::rt::{NewLink, Via};
use shoal_netlink::{netns, Netlink};

fn main() -> Result<(), shoal_netlink::Error> {
    let path = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/run/shoal-size/ns".into()));
    netns::create(&path)?;
    let fd = netns::open(&path)?;
    let result = netns::run_in(&path, 5_000, move || -> Result<usize, shoal_netlink::Error> {
        let mut nl = Netlink::open()?;
        let br = nl.ensure_link("br0", 1450, NewLink::Bridge)?;
        nl.add_veth("v0", "v1", 1450)?;
        let v0 = nl.link_index("v0")?.unwrap_or(0);
        nl.set_master(v0, br)?;
        nl.set_up(v0)?;
        nl.set_mac(br, [2, 0, 0, 0, 0, 1])?;
        nl.set_mtu(br, 1400)?;
        let vx = nl.ensure_link("vx0", 1450, NewLink::Vxlan { vni: 4096, local: Ipv4Addr::LOCALHOST, dstport: 4789 })?;
        nl.replace_fdb(vx, [2, 0, 0, 0, 0, 2], Ipv4Addr::new(10, 0, 0, 2))?;
        nl.replace_neigh(vx, Ipv4Addr::new(10, 1, 0, 2), [2, 0, 0, 0, 0, 2])?;
        nl.ensure_addr(br, Ipv4Addr::new(10, 1, 0, 1), 24)?;
        nl.set_up(br)?;
        nl.add_default_route(Ipv4Addr::new(10, 1, 0, 2))?;
        nl.replace_route(Ipv4Addr::new(10, 2, 0, 0), 16, Via::Dev(br))?;
        let v1 = nl.link_index("v1")?.unwrap_or(0);
        nl.set_name(v1, "eth0")?;
        nl.set_netns_fd(v1, fd.as_fd())?;
        netns::set_sysctl("net/ipv4/ip_forward", "1")?;
        let n = nl.links()?.len() + nl.addrs(br)?.len() + nl.fdb(vx)?.len() + nl.neighs(vx)?.len();
        nl.del_fdb(vx, [2, 0, 0, 0, 0, 2], Ipv4Addr::new(10, 0, 0, 2))?;
        nl.del_neigh(vx, Ipv4Addr::new(10, 1, 0, 2))?;
        nl.set_down(v0)?;
        nl.del_link(v0)?;
        Ok(n)
    });
    netns::remove(&path)?;
    println!("{} entries", result??);
    Ok(())
}
