//! What the node knows about swarm names, per network: the daemon builds a
//! whole [`View`] from its state and hands it to the resolver, which replaces
//! the previous one (no incremental updates to get wrong).
//!
//! On each network, as Swarm registers them:
//! - a service's name and aliases resolve to its VIPs, or with
//!   `--endpoint-mode dnsrr` to its running tasks' IPs;
//! - `tasks.NAME` and `tasks.ALIAS` resolve to the running tasks' IPs;
//! - a task's names (its container name `NAME.SLOT.TASKID`, its hostname)
//!   resolve to its IP, and its IP back to its first name (PTR), as a VIP
//!   does to its service's name.
//!
//! Keys are lowercase without a trailing dot. A name with no address is not
//! registered: the resolver forwards it, as Docker does for a service whose
//! tasks all stopped.

use std::collections::HashMap;
use std::net::IpAddr;

/// How a service's own name resolves (`--endpoint-mode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointMode {
    /// The name resolves to these virtual IPs (one per network, usually).
    Vip(Vec<IpAddr>),
    /// The name resolves to the running tasks' IPs (DNS round robin).
    Dnsrr,
}

/// One running task on a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEntry {
    /// Names that resolve to this task alone (container name, hostname);
    /// the first is its PTR name. May be empty.
    pub names: Vec<String>,
    pub ip: IpAddr,
}

/// One service as seen on one network: pass only its running tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: String,
    /// Network-scoped aliases (`--network name=N,alias=A`).
    pub aliases: Vec<String>,
    pub endpoint: EndpointMode,
    pub tasks: Vec<TaskEntry>,
}

/// Names to addresses, per network id.
#[derive(Clone, Debug, Default)]
pub struct View {
    networks: HashMap<String, Network>,
}

#[derive(Clone, Debug, Default)]
struct Network {
    /// The network's name, for `NAME.NETWORK` lookups; may be empty.
    name: String,
    names: HashMap<String, Vec<IpAddr>>,
    ptrs: HashMap<IpAddr, String>,
}

impl View {
    pub fn new() -> View {
        View::default()
    }

    /// Declares a network and its name (so `web.NETWORK` resolves); adding
    /// services to an undeclared network declares it without a name.
    pub fn add_network(&mut self, network_id: &str, network_name: &str) {
        self.networks.entry(network_id.to_string()).or_default().name = normalize(network_name);
    }

    /// Registers a service's names on a network (see the module header).
    pub fn add_service(&mut self, network_id: &str, service: &ServiceEntry) {
        let task_ips: Vec<IpAddr> = service.tasks.iter().map(|t| t.ip).collect();
        let own_ips = match &service.endpoint {
            EndpointMode::Vip(vips) => vips.clone(),
            EndpointMode::Dnsrr => task_ips.clone(),
        };
        let network = self.networks.entry(network_id.to_string()).or_default();
        for name in std::iter::once(&service.name).chain(&service.aliases) {
            network.add_name(name, &own_ips);
            network.add_name(&format!("tasks.{name}"), &task_ips);
        }
        if let EndpointMode::Vip(vips) = &service.endpoint {
            for vip in vips {
                network.add_ptr(*vip, &service.name);
            }
        }
        for task in &service.tasks {
            for name in &task.names {
                network.add_name(name, &[task.ip]);
            }
            if let Some(first) = task.names.first() {
                network.add_ptr(task.ip, first);
            }
        }
    }

    /// Registers one name on a network (adds to the addresses it has).
    pub fn add_name(&mut self, network_id: &str, name: &str, ips: &[IpAddr]) {
        self.networks.entry(network_id.to_string()).or_default().add_name(name, ips);
    }

    /// The addresses of `key` (lowercase, no trailing dot) as seen from the
    /// given networks: the first network that has the name wins; then, as
    /// Docker does, `a.b.c` is tried as `a.b` on a network named `c` and as
    /// `a` on a network named `b.c`, among the given networks only.
    pub fn lookup(&self, network_ids: &[String], key: &str) -> Option<&[IpAddr]> {
        let attached = || network_ids.iter().filter_map(|id| self.networks.get(id));
        if let Some(ips) = attached().find_map(|n| n.names.get(key)) {
            return Some(ips);
        }
        let mut split = key.len();
        while let Some(dot) = key[..split].rfind('.') {
            let (prefix, network_name) = (&key[..dot], &key[dot + 1..]);
            let found = attached().filter(|n| n.name == network_name).find_map(|n| n.names.get(prefix));
            if found.is_some() {
                return found.map(Vec::as_slice);
            }
            split = dot;
        }
        None
    }

    /// The name of `ip` as seen from the given networks, `NAME.NETWORK` when
    /// the network has a name (Docker's PTR answer).
    pub fn lookup_ptr(&self, network_ids: &[String], ip: IpAddr) -> Option<String> {
        network_ids.iter().filter_map(|id| self.networks.get(id)).find_map(|n| {
            let name = n.ptrs.get(&ip)?;
            Some(if n.name.is_empty() { name.clone() } else { format!("{name}.{}", n.name) })
        })
    }
}

impl Network {
    fn add_name(&mut self, name: &str, ips: &[IpAddr]) {
        let key = normalize(name);
        if key.is_empty() || ips.is_empty() {
            return;
        }
        let known = self.names.entry(key).or_default();
        for ip in ips {
            if !known.contains(ip) {
                known.push(*ip);
            }
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, name: &str) {
        let name = normalize(name);
        if !name.is_empty() {
            self.ptrs.entry(ip).or_insert(name);
        }
    }
}

/// The lookup key of a name: lowercase, without a trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn network_name_suffix_resolves_only_on_attached_networks() {
        let mut view = View::new();
        view.add_network("n1", "Front");
        view.add_name("n1", "Web", &[ip("10.0.0.2")]);
        assert_eq!(view.lookup(&nets(&["n1"]), "web.front"), Some(&[ip("10.0.0.2")][..]));
        assert_eq!(view.lookup(&nets(&["n2"]), "web.front"), None);
        assert_eq!(view.lookup(&nets(&["n1"]), "web.back"), None);
    }

    #[test]
    fn empty_names_and_address_lists_are_not_registered() {
        let mut view = View::new();
        view.add_name("n1", "web", &[]);
        view.add_name("n1", ".", &[ip("10.0.0.2")]);
        assert_eq!(view.lookup(&nets(&["n1"]), "web"), None);
        assert_eq!(view.lookup(&nets(&["n1"]), ""), None);
    }

    #[test]
    fn ptr_names_carry_the_network_name() {
        let mut view = View::new();
        view.add_network("n1", "front");
        let service = ServiceEntry {
            name: "web".into(),
            aliases: vec![],
            endpoint: EndpointMode::Vip(vec![ip("10.0.0.2")]),
            tasks: vec![TaskEntry { names: vec!["web.1.abc".into()], ip: ip("10.0.0.3") }],
        };
        view.add_service("n1", &service);
        assert_eq!(view.lookup_ptr(&nets(&["n1"]), ip("10.0.0.2")).as_deref(), Some("web.front"));
        assert_eq!(view.lookup_ptr(&nets(&["n1"]), ip("10.0.0.3")).as_deref(), Some("web.1.abc.front"));
        assert_eq!(view.lookup_ptr(&nets(&["n2"]), ip("10.0.0.3")), None);
    }
}
