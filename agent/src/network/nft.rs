//! The node's whole nftables ruleset for container networking, as the text
//! `nft -f -` takes: one table, `ip shoal`, replaced atomically (the table
//! is declared, deleted and declared again in one transaction, so no packet
//! ever sees half a ruleset, and a restarted daemon simply writes it again).
//!
//! What it does (no IPVS needed; measured on this machine's kernel, see
//! `../shared/notes/networking.md` in the design notes):
//! - **VIPs**: a connection from a task on network N to a service VIP on N
//!   is DNATed to one of the service's running tasks (`numgen random`),
//!   wherever it runs; the VIP is an address of N's bridge, so the node
//!   answers ARP for it and routes the translated packet;
//! - **ingress**: a connection to a published port on any local address is
//!   DNATed to a running task of the service (any node), `host`-mode ports
//!   to the local task;
//! - **SNAT towards a network**: translated traffic leaving through a
//!   network's bridge takes this node's own address on that network, so the
//!   reply comes back through this node, which un-translates it;
//! - **masquerade out**: task traffic leaving a non-internal network for
//!   anything but another Shoal bridge takes the node's address;
//! - **isolation**: no forwarding between two Shoal bridges unless it was
//!   translated (VIP or ingress); nothing in or out of an `--internal`
//!   network; VXLAN packets only from the swarm's nodes.
//!
//! Pure: the shell builds [`Rules`] from the node's view and pipes
//! [`ruleset`] into `nft -f -` when the text changed.

use super::Ipv4Net;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The table's name (family `ip`).
pub const TABLE: &str = "shoal";
/// Backends one VIP or published port balances over, at most (the rest
/// are left out and the count is reported by the shell).
pub const BACKENDS_MAX: usize = 256;

/// `tcp` or `udp` (`sctp` is published by Swarm too; nft matches it the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Docker's spelling, `tcp` when empty.
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "" | "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// A network's bridge on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// This node's own address on the network (SNAT target).
    pub node_addr: Ipv4Addr,
    pub internal: bool,
}

/// A service VIP on one network and the running tasks behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The network's bridge: only its tasks reach the VIP.
    pub bridge: String,
    pub vip: Ipv4Addr,
    pub backends: Vec<Ipv4Addr>,
}

/// A published port and the task addresses and ports behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub proto: Proto,
    pub port: u16,
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// Everything the ruleset is made from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub networks: Vec<NetRules>,
    pub vips: Vec<Vip>,
    /// Ingress (routing mesh) and host-mode ports alike: both answer on
    /// this node's local addresses; they differ in their backends.
    pub published: Vec<Published>,
    /// The VXLAN port and the nodes allowed to send to it.
    pub vxlan_port: u16,
    pub vxlan_peers: Vec<Ipv4Addr>,
    /// VNIs of encrypted networks: their VXLAN packets enter and leave only
    /// through the tunnel relay's device ([`super::plan::TUN_DEVICE`]), never
    /// the underlay in plaintext (and forged plaintext ones are dropped).
    pub encrypted_vnis: Vec<u32>,
    /// The node-local bridge network (`node_addr`: its gateway), while in a swarm.
    pub bridge: Option<NetRules>,
}

impl Rules {
    /// Every address a VIP or published port translates to.
    pub fn backends(&self) -> std::collections::BTreeSet<Ipv4Addr> {
        let vips = self.vips.iter().flat_map(|v| v.backends.iter().copied());
        vips.chain(self.published.iter().flat_map(|p| p.backends.iter().map(|(a, _)| *a))).collect()
    }
}

/// The ruleset text for `nft -f -`.
pub fn ruleset(r: &Rules) -> String {
    let mut s = String::new();
    // Declare, delete, declare: an atomic replace that also works when the table is absent.
    let _ = writeln!(s, "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{");
    // One chain per published port and per VIP (a jump per match keeps each rule small).
    let mut pre = Vec::new();
    for (i, p) in r.published.iter().enumerate() {
        let backends: Vec<String> = p.backends.iter().take(BACKENDS_MAX).map(|(ip, port)| format!("{ip} . {port}")).collect();
        let to = match p.backends.as_slice() {
            // Nothing runs: no translation, the connection finds nothing listening (reset).
            [] => continue,
            // One backend: nft spells a lone address and port `a:p` (`a . p` only inside a map).
            [(ip, port)] => format!("{ip}:{port}"),
            _ => balance(&backends),
        };
        let chain = format!("pub{i}");
        let _ = writeln!(s, "  chain {chain} {{\n    meta l4proto {} counter dnat ip to {to}\n  }}", p.proto.as_str());
        pre.push(format!("fib daddr type local {} dport {} jump {chain}", p.proto.as_str(), p.port));
    }
    let mut vip_rules = Vec::new();
    for (i, v) in r.vips.iter().enumerate() {
        let backends: Vec<String> = v.backends.iter().take(BACKENDS_MAX).map(Ipv4Addr::to_string).collect();
        if backends.is_empty() {
            continue;
        }
        let chain = format!("vip{i}");
        let _ = writeln!(s, "  chain {chain} {{\n    counter dnat to {}\n  }}", balance(&backends));
        vip_rules.push(format!("iifname \"{}\" ip daddr {} jump {chain}", v.bridge, v.vip));
    }
    let _ = writeln!(s, "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;");
    for rule in vip_rules.iter().chain(pre.iter()) {
        let _ = writeln!(s, "    {rule}");
    }
    let _ = writeln!(s, "  }}\n  chain output {{\n    type nat hook output priority -100; policy accept;");
    // Published ports also answer connections made on the node itself (`curl localhost:8080`).
    for rule in &pre {
        let _ = writeln!(s, "    {rule}");
    }
    let _ = writeln!(s, "  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;");
    for n in &r.networks {
        let _ = writeln!(s, "    oifname \"{}\" ct status dnat counter snat ip to {}", n.bridge, n.node_addr);
    }
    for n in r.networks.iter().filter(|n| !n.internal) {
        let _ = writeln!(s, "    ip saddr {} oifname != \"{}\" oifname != \"sb-*\" counter masquerade", n.subnet.trunc(), n.bridge);
    }
    if let Some(b) = &r.bridge {
        // A published port reached from the node itself (loopback) or from a task on the same
        // bridge (hairpin): the task must answer through the node, which un-translates it.
        let _ =
            writeln!(s, "    oifname \"{}\" ct status dnat ip saddr {{ 127.0.0.0/8, {} }} counter masquerade", b.bridge, b.subnet.trunc());
        let _ = writeln!(s, "    ip saddr {} oifname != \"{}\" counter masquerade", b.subnet.trunc(), b.bridge);
    }
    let _ = writeln!(s, "  }}\n  chain forward {{\n    type filter hook forward priority filter; policy accept;");
    for n in &r.networks {
        if n.internal {
            let _ = writeln!(s, "    iifname \"{b}\" oifname != \"{b}\" ct status != dnat drop", b = n.bridge);
            let _ = writeln!(s, "    oifname \"{b}\" iifname != \"{b}\" ct status != dnat drop", b = n.bridge);
        }
        // Networks are isolated from each other, translated traffic aside.
        let _ = writeln!(s, "    iifname \"{b}\" oifname \"sb-*\" oifname != \"{b}\" ct status != dnat counter drop", b = n.bridge);
    }
    if let Some(b) = &r.bridge {
        // The node's bridge and the overlay networks are isolated both ways, translated traffic aside.
        let _ = writeln!(s, "    iifname \"{}\" oifname \"sb-*\" ct status != dnat counter drop", b.bridge);
        let _ = writeln!(s, "    iifname \"sb-*\" oifname \"{}\" ct status != dnat counter drop", b.bridge);
    }
    let _ = writeln!(s, "  }}\n  chain input {{\n    type filter hook input priority filter; policy accept;");
    if let Some(b) = &r.bridge {
        // `route_localnet` on the node's bridge (for published ports reached
        // from 127.0.0.1) must not let a task reach the node's loopback-only
        // services with crafted frames: only translated traffic to 127/8.
        let _ = writeln!(
            s,
            "    iifname \"{}\" ip daddr 127.0.0.0/8 ct state != {{ established, related }} ct status != dnat counter drop",
            b.bridge
        );
    }
    if r.vxlan_peers.is_empty() {
        let _ = writeln!(s, "    udp dport {} drop", r.vxlan_port);
    } else {
        let peers: Vec<String> = r.vxlan_peers.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(s, "    udp dport {} ip saddr != {{ {} }} drop", r.vxlan_port, peers.join(", "));
    }
    let vnis = (!r.encrypted_vnis.is_empty()).then(|| {
        // The VNI: 24 bits at byte 4 of the VXLAN header, after UDP's 8.
        let v: Vec<String> = r.encrypted_vnis.iter().map(u32::to_string).collect();
        format!("udp dport {} @th,96,24 {{ {} }}", r.vxlan_port, v.join(", "))
    });
    if let Some(m) = &vnis {
        let _ = writeln!(s, "    {m} iifname != \"{}\" counter drop", super::plan::TUN_DEVICE);
    }
    let _ = writeln!(s, "  }}");
    if let Some(m) = &vnis {
        let _ = writeln!(s, "  chain tunnel_out {{\n    type filter hook output priority filter; policy accept;");
        let _ = writeln!(s, "    {m} oifname != \"{}\" counter drop\n  }}", super::plan::TUN_DEVICE);
    }
    let _ = writeln!(s, "}}");
    s
}

/// `numgen random mod N map { 0 : a, 1 : b }`, or just `a` for one backend.
fn balance(backends: &[String]) -> String {
    if backends.len() == 1 {
        return backends[0].clone();
    }
    let entries: Vec<String> = backends.iter().enumerate().map(|(i, b)| format!("{i} : {b}")).collect();
    format!("numgen random mod {} map {{ {} }}", backends.len(), entries.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn sample() -> Rules {
        Rules {
            networks: vec![
                NetRules {
                    bridge: "sb-web".into(),
                    subnet: Ipv4Net::parse("10.0.1.0/24").unwrap(),
                    node_addr: ip("10.0.1.2"),
                    internal: false,
                },
                NetRules {
                    bridge: "sb-db".into(),
                    subnet: Ipv4Net::parse("10.0.2.0/24").unwrap(),
                    node_addr: ip("10.0.2.2"),
                    internal: true,
                },
            ],
            encrypted_vnis: vec![4098, 4099],
            vips: vec![
                Vip { bridge: "sb-web".into(), vip: ip("10.0.1.3"), backends: vec![ip("10.0.1.5"), ip("10.0.1.6")] },
                Vip { bridge: "sb-web".into(), vip: ip("10.0.1.4"), backends: vec![] },
            ],
            published: vec![
                Published {
                    proto: Proto::Tcp,
                    port: 8080,
                    backends: vec![(ip("10.0.0.5"), 80), (ip("10.0.0.6"), 80), (ip("10.0.0.7"), 80)],
                },
                Published { proto: Proto::Udp, port: 5353, backends: vec![(ip("10.0.0.9"), 53)] },
                Published { proto: Proto::Tcp, port: 9000, backends: vec![] },
            ],
            vxlan_port: 4789,
            vxlan_peers: vec![ip("192.168.1.11"), ip("192.168.1.12")],
            bridge: Some(NetRules {
                bridge: "shoal0".into(),
                subnet: Ipv4Net::parse("172.18.0.0/16").unwrap(),
                node_addr: ip("172.18.0.1"),
                internal: false,
            }),
        }
    }

    #[test]
    fn the_ruleset_replaces_the_table_atomically() {
        let text = ruleset(&sample());
        assert!(text.starts_with("table ip shoal\ndelete table ip shoal\ntable ip shoal {\n"), "{text}");
        assert!(text.ends_with("}\n"));
        assert_eq!(text.matches('{').count(), text.matches('}').count(), "{text}");
    }

    #[test]
    fn encrypted_networks_vxlan_never_crosses_the_underlay_in_plaintext() {
        let text = ruleset(&sample());
        let m = "udp dport 4789 @th,96,24 { 4098, 4099 }";
        let input = &text[text.find("chain input").unwrap()..];
        assert!(input.contains(&format!("{m} iifname != \"shoal-tun\" counter drop")), "{text}");
        let out = &text[text.find("chain tunnel_out").unwrap()..];
        assert!(out.contains("type filter hook output priority filter;"), "{out}");
        assert!(out.contains(&format!("{m} oifname != \"shoal-tun\" counter drop")), "{out}");
        let plain = ruleset(&Rules { encrypted_vnis: Vec::new(), ..sample() });
        assert!(!plain.contains("tunnel_out") && !plain.contains("@th"), "{plain}");
    }

    #[test]
    fn vips_and_published_ports_balance_over_running_tasks() {
        let text = ruleset(&sample());
        assert!(text.contains("counter dnat to numgen random mod 2 map { 0 : 10.0.1.5, 1 : 10.0.1.6 }"), "{text}");
        assert!(text.contains("iifname \"sb-web\" ip daddr 10.0.1.3 jump vip0"), "{text}");
        // A VIP with no running task is not translated at all.
        assert!(!text.contains("10.0.1.4"), "{text}");
        assert!(text.contains(
            "meta l4proto tcp counter dnat ip to numgen random mod 3 map { 0 : 10.0.0.5 . 80, 1 : 10.0.0.6 . 80, 2 : 10.0.0.7 . 80 }"
        ));
        assert!(text.contains("meta l4proto udp counter dnat ip to 10.0.0.9:53"), "{text}");
        assert!(text.contains("fib daddr type local tcp dport 8080 jump pub0"));
        assert!(!text.contains("dport 9000"), "a port with no backend is left alone: {text}");
        // From the node itself too.
        let output = &text[text.find("chain output").unwrap()..text.find("chain postrouting").unwrap()];
        assert!(output.contains("dport 8080 jump pub0"), "{output}");
    }

    #[test]
    fn translated_traffic_is_snated_and_internal_networks_have_no_way_out() {
        let text = ruleset(&sample());
        assert!(text.contains("oifname \"sb-web\" ct status dnat counter snat ip to 10.0.1.2"));
        assert!(text.contains("ip saddr 10.0.1.0/24 oifname != \"sb-web\" oifname != \"sb-*\" counter masquerade"));
        assert!(!text.contains("ip saddr 10.0.2.0/24"), "an internal network is never masqueraded out: {text}");
        assert!(text.contains("iifname \"sb-db\" oifname != \"sb-db\" ct status != dnat drop"));
        assert!(text.contains("iifname \"sb-web\" oifname \"sb-*\" oifname != \"sb-web\" ct status != dnat counter drop"));
        assert!(text.contains("udp dport 4789 ip saddr != { 192.168.1.11, 192.168.1.12 } drop"));
        let alone = ruleset(&Rules { vxlan_port: 4789, ..Rules::default() });
        assert!(alone.contains("udp dport 4789 drop"), "{alone}");
        assert!(!alone.contains("shoal0"), "{alone}");
    }

    #[test]
    fn the_node_bridge_goes_out_masqueraded_and_is_isolated_from_overlays() {
        let text = ruleset(&sample());
        assert!(text.contains("ip saddr 172.18.0.0/16 oifname != \"shoal0\" counter masquerade"), "{text}");
        assert!(text.contains("oifname \"shoal0\" ct status dnat ip saddr { 127.0.0.0/8, 172.18.0.0/16 } counter masquerade"), "{text}");
        assert!(text.contains("iifname \"shoal0\" oifname \"sb-*\" ct status != dnat counter drop"), "{text}");
        assert!(text.contains("iifname \"sb-*\" oifname \"shoal0\" ct status != dnat counter drop"), "{text}");
        // route_localnet on shoal0 opens no way to the node's loopback-only services.
        assert!(
            text.contains("iifname \"shoal0\" ip daddr 127.0.0.0/8 ct state != { established, related } ct status != dnat counter drop"),
            "{text}"
        );
        assert!(!ruleset(&Rules { bridge: None, ..sample() }).contains("ip daddr 127.0.0.0/8 ct state"));
    }

    #[test]
    fn backends_are_every_vip_and_port_target() {
        let r = sample();
        let mut want: Vec<Ipv4Addr> = r.vips.iter().flat_map(|v| v.backends.clone()).collect();
        want.extend(r.published.iter().flat_map(|p| p.backends.iter().map(|(a, _)| *a)));
        want.sort();
        want.dedup();
        assert!(!want.is_empty());
        assert_eq!(r.backends().into_iter().collect::<Vec<_>>(), want);
        assert!(Rules::default().backends().is_empty());
    }

    #[test]
    fn backends_are_bounded() {
        let many: Vec<Ipv4Addr> = (0..1000u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect();
        let r = Rules { vips: vec![Vip { bridge: "sb-x".into(), vip: ip("10.9.0.1"), backends: many }], ..Rules::default() };
        let text = ruleset(&r);
        assert!(text.contains(&format!("numgen random mod {BACKENDS_MAX} map")));
    }

    /// The ruleset loads into the real nftables of this machine (in a
    /// throwaway namespace), twice: the atomic replace works with and
    /// without the table present. Skipped where `nft` or namespaces are
    /// unavailable (not root); `SHOAL_REQUIRE_NETNS=1` makes that a failure.
    #[test]
    fn the_ruleset_loads_into_nftables() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        if std::env::var("SHOAL_UNDER_QEMU").is_ok() {
            eprintln!("skipped under qemu-user: the host's nft is tested by the native run");
            return;
        }
        let ns = format!("shoal-nft-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success());
        if !ok {
            assert!(std::env::var("SHOAL_REQUIRE_NETNS").is_err(), "cannot make a network namespace (root and iproute2 needed)");
            eprintln!("skipped: cannot make a network namespace");
            return;
        }
        let text = ruleset(&sample());
        let load = || {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run nft");
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        };
        let first = load();
        let second = load();
        let listed = Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "table", "ip", TABLE]).output().unwrap();
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        assert!(first.status.success(), "nft refused the ruleset: {}\n{text}", String::from_utf8_lossy(&first.stderr));
        assert!(second.status.success(), "nft refused the replace: {}", String::from_utf8_lossy(&second.stderr));
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.contains("numgen random mod 3"), "{listed}");
        assert_eq!(listed.matches("chain prerouting").count(), 1, "replaced, not appended: {listed}");
    }
}
