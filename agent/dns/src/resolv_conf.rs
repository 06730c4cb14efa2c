//! The node's upstream resolvers, from the `nameserver` lines of its
//! `/etc/resolv.conf` (the shell reads the file, at most
//! [`RESOLV_CONF_BYTES_MAX`] bytes; this module only parses text).
//!
//! Like glibc (MAXNS) and Docker (maxExtDNS), at most [`UPSTREAMS_MAX`]
//! nameservers are used, in file order. Loopback nameservers (systemd-resolved's
//! 127.0.0.53, a local dnsmasq) are kept: they are reachable because the
//! shell sends forwards from the host's network namespace, never from a
//! task's (see the crate header). Link-local IPv6 nameservers with a zone
//! (`fe80::1%eth0`) are skipped: the zone is an interface the pure parser
//! cannot resolve to an index.

use std::net::{IpAddr, SocketAddr};

/// Nameservers used, as glibc's MAXNS.
pub const UPSTREAMS_MAX: usize = 3;
/// The most of `/etc/resolv.conf` the shell should read.
pub const RESOLV_CONF_BYTES_MAX: usize = 64 * 1024;
/// The DNS port upstreams are asked on.
pub const DNS_PORT: u16 = 53;

/// What `/etc/resolv.conf` says about upstream resolvers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// At most [`UPSTREAMS_MAX`], in file order.
    pub nameservers: Vec<IpAddr>,
    /// `nameserver` lines not used (unparsable, zoned, or past the limit),
    /// for the daemon to log once.
    pub skipped: Vec<String>,
}

impl ResolvConf {
    /// Parses the text of a resolv.conf; never fails (unknown lines are
    /// ignored, as the C library does).
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            let value = words.next().unwrap_or("");
            match value.parse::<IpAddr>() {
                Ok(ip) if conf.nameservers.len() < UPSTREAMS_MAX => conf.nameservers.push(ip),
                _ => conf.skipped.push(line.trim().to_string()),
            }
        }
        conf
    }

    /// The upstream addresses to forward to (port 53).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers.iter().map(|ip| SocketAddr::new(*ip, DNS_PORT)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameservers_in_order_up_to_three() {
        let text = "# generated\n; comment\nsearch example.com\nnameserver 127.0.0.53\n  nameserver\t1.1.1.1 # x\n\
                    nameserver 2001:db8::1\nnameserver 9.9.9.9\nnameserver fe80::1%eth0\noptions edns0 trust-ad\n";
        let conf = ResolvConf::parse(text);
        let ips: Vec<IpAddr> = ["127.0.0.53", "1.1.1.1", "2001:db8::1"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(conf.nameservers, ips);
        assert_eq!(conf.skipped, vec!["nameserver 9.9.9.9".to_string(), "nameserver fe80::1%eth0".to_string()]);
        assert_eq!(conf.upstreams()[0], "127.0.0.53:53".parse().unwrap());
        assert_eq!(conf.upstreams()[2], "[2001:db8::1]:53".parse().unwrap());
    }

    #[test]
    fn garbage_and_empty_files_give_no_nameservers() {
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        let conf = ResolvConf::parse("nameserver\nnameserver not-an-ip\nnameservers 1.1.1.1\n\u{0}\u{ff}");
        assert!(conf.nameservers.is_empty());
        assert_eq!(conf.skipped.len(), 2);
    }
}
