//! `shoal network ...`: create, ls, inspect, rm, with Docker's flags and
//! output shapes. `host` and `none` are the node-local predefined networks
//! (shown everywhere, never stored); everything else is a swarm-scoped
//! overlay network from the manager. Docker's `bridge` does not exist in
//! Shoal and is not shown.

use super::filter::Filters;
use super::output::{rfc3339, Table};
use super::{call, parse};
use crate::client::REPLY_MS_DEFAULT;
use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use shoal_shared::api::{NetworkDetail, Reply, Request};
use shoal_shared::types::{Ipv4Net, NetworkSpec, HOST_NETWORK_ID, NONE_NETWORK_ID, OPT_VXLANID_LIST};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Subcommand, Debug)]
pub(crate) enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect {
        /// Verbose output: the services on the network, with their VIPs and tasks.
        #[arg(short, long)]
        verbose: bool,
        /// Output format: json (the default) or a Go template (`{{.Spec.Name}}`).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// Driver to manage the network (only overlay for swarm networks).
    #[arg(short, long, default_value = "overlay")]
    driver: String,
    /// Subnet in CIDR format (10.15.0.0/16).
    #[arg(long, value_parser = parse::cidr)]
    subnet: Option<Ipv4Net>,
    /// Gateway for the subnet.
    #[arg(long, value_parser = parse::ipv4)]
    gateway: Option<Ipv4Addr>,
    /// Allocate addresses from a sub-range of the subnet.
    #[arg(long, value_parser = parse::cidr)]
    ip_range: Option<Ipv4Net>,
    /// Driver options: encrypted, com.docker.network.driver.mtu=N.
    #[arg(short = 'o', long = "opt", value_parser = parse::key_value)]
    opt: Vec<(String, String)>,
    /// Enable manual container attachment (stored).
    #[arg(long)]
    attachable: bool,
    /// Restrict external access to the network.
    #[arg(long)]
    internal: bool,
    /// Create the swarm routing-mesh network.
    #[arg(long)]
    ingress: bool,
    /// Set metadata on a network (KEY=VALUE).
    #[arg(long, value_parser = parse::key_value)]
    label: Vec<(String, String)>,
    /// Network name.
    name: String,
}

#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// Only display network IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: name=, driver=, scope=, label=KEY[=VALUE], id=.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Output format: table, json, or a Go template (`{{.Name}}`, `table {{.ID}}\t{{.Name}}`).
    #[arg(long, default_value = "table")]
    format: String,
}

/// Runs a `network` command.
pub(crate) fn run(host: &str, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let Reply::NetworkCreated { id } = call(host, Request::NetworkCreate { spec: Box::new(spec_from(a)) }, REPLY_MS_DEFAULT)?
            else {
                bail!("unexpected reply")
            };
            println!("{id}");
            Ok(())
        }
        NetworkCmd::Ls(a) => ls(host, a),
        NetworkCmd::Inspect { verbose, format, networks } => {
            super::output::Format::parse(&format)?;
            let mut out = Vec::new();
            for key in networks {
                match predefined(&key) {
                    Some(row) => out.push(predefined_json(&row)),
                    None => {
                        let Reply::Networks(found) = call(host, Request::NetworkInspect { network: key }, REPLY_MS_DEFAULT)? else {
                            bail!("unexpected reply")
                        };
                        out.extend(found.iter().map(|d| network_json(d, verbose)));
                    }
                }
            }
            super::output::Format::inspect(&format, &out)
        }
        NetworkCmd::Rm { networks } => super::remove_each(host, networks, |network| Request::NetworkRemove { network }),
    }
}

/// The spec `network create` sends; the manager checks it.
fn spec_from(a: CreateArgs) -> NetworkSpec {
    let mut spec = NetworkSpec {
        name: a.name,
        labels: a.label.into_iter().collect(),
        driver: a.driver,
        internal: a.internal,
        attachable: a.attachable,
        options: a.opt.into_iter().collect(),
        ingress: a.ingress,
        ..Default::default()
    };
    spec.ipam.subnet = a.subnet;
    spec.ipam.gateway = a.gateway;
    spec.ipam.ip_range = a.ip_range;
    spec
}

/// One row of `network ls`.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    id: String,
    name: String,
    driver: String,
    scope: &'static str,
    internal: bool,
    labels: BTreeMap<String, String>,
    created_at: u64,
}

/// `host` (driver host) and `none` (driver null), local to every node.
fn predefined_rows() -> Vec<Row> {
    [(HOST_NETWORK_ID, "host"), (NONE_NETWORK_ID, "null")]
        .into_iter()
        .map(|(name, driver)| Row {
            id: name.to_string(),
            name: name.to_string(),
            driver: driver.to_string(),
            scope: "local",
            internal: false,
            labels: BTreeMap::new(),
            created_at: 0,
        })
        .collect()
}

fn predefined(key: &str) -> Option<Row> {
    predefined_rows().into_iter().find(|r| r.name == key)
}

fn row_of(d: &NetworkDetail) -> Row {
    let n = &d.network;
    Row {
        id: n.id.clone(),
        name: n.spec.name.clone(),
        driver: n.spec.driver.clone(),
        scope: "swarm",
        internal: n.spec.internal,
        labels: n.spec.labels.clone(),
        created_at: n.meta.created_at,
    }
}

/// Docker's `network ls` filters: `name=` (substring), `id=` (prefix),
/// `driver=`, `scope=`, `type=builtin|custom`, `label=KEY` or
/// `label=KEY=VALUE`; filters of one key are ORed, different keys ANDed.
fn matches(r: &Row, filters: &Filters) -> bool {
    filters.matches(|k, v| match k {
        "name" => r.name.contains(v),
        "id" => r.id.starts_with(v),
        "driver" => r.driver == v,
        "scope" => r.scope == v,
        // Docker's predefined networks (moby's IsPreDefinedNetwork).
        "type" => (v == "builtin") == ["bridge", "host", "none", "ingress"].contains(&r.name.as_str()),
        "label" => super::filter::label_matches(&r.labels, v),
        _ => false,
    })
}

fn ls(host: &str, a: LsArgs) -> anyhow::Result<()> {
    let mut fmt = super::output::Format::parse(&a.format)?;
    let filters = Filters::parse(&a.filter, &["name", "id", "driver", "scope", "type", "label"])?;
    super::filter::check_values(&filters, "type", &["builtin", "custom"])?;
    let Reply::Networks(swarm) = call(host, Request::NetworkList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let mut rows: Vec<Row> = swarm.iter().map(row_of).chain(predefined_rows()).collect();
    rows.sort_by(|x, y| x.name.cmp(&y.name).then(x.id.cmp(&y.id)));
    let mut t = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    for r in rows {
        if !matches(&r, &filters) {
            continue;
        }
        let id = if a.no_trunc { r.id.clone() } else { r.id.chars().take(12).collect() };
        if a.quiet {
            println!("{id}");
        } else if !fmt.is_table() {
            let labels = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let created = if r.created_at > 0 { rfc3339(r.created_at) } else { String::new() };
            fmt.row(&json!({"CreatedAt": created, "Driver": r.driver, "ID": id, "IPv6": "false", "Internal": r.internal.to_string(), "Labels": labels, "Name": r.name, "Scope": r.scope}))?;
        } else {
            t.row(vec![id, r.name, r.driver, r.scope.into()]);
        }
    }
    if !a.quiet && fmt.is_table() {
        print!("{}", t.render());
    } else if !a.quiet {
        fmt.finish(&["ID", "Name", "Driver", "Scope", "IPv6", "Internal", "Labels", "CreatedAt"]);
    }
    Ok(())
}

/// `network inspect` of `host` or `none`, as Docker prints them.
fn predefined_json(r: &Row) -> Value {
    json!({
        "Name": r.name, "Id": r.id, "Created": rfc3339(0), "Scope": "local", "Driver": r.driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false, "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {},
    })
}

/// `network inspect` of a swarm network: Docker's JSON, plus
/// `ShoalWarnings` for what is stored but not in effect.
/// `key` as `shoal inspect` shows a network; `None` when there is none.
pub(crate) fn inspect_value(host: &str, key: &str) -> anyhow::Result<Option<Value>> {
    if let Some(row) = predefined(key) {
        return Ok(Some(predefined_json(&row)));
    }
    let client = crate::client::Client::connect(host)?.call(&Request::NetworkInspect { network: key.into() }, REPLY_MS_DEFAULT)?;
    match client {
        Reply::Networks(found) => Ok(found.first().map(|d| network_json(d, false))),
        Reply::Error { kind: shoal_shared::api::ErrorKind::NotFound, .. } => Ok(None),
        Reply::Error { message, .. } => bail!("{message}"),
        r => bail!("unexpected reply: {r:?}"),
    }
}

fn network_json(d: &NetworkDetail, verbose: bool) -> Value {
    let n = &d.network;
    let mut options: BTreeMap<String, String> = n.spec.options.clone();
    options.insert(OPT_VXLANID_LIST.into(), n.vni.to_string());
    let mut config = json!({"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()});
    if let Some(r) = n.spec.ipam.ip_range {
        config["IPRange"] = json!(r.to_string());
    }
    let peers: Vec<Value> = d.peers.iter().map(|(name, ip)| json!({"Name": name, "IP": ip})).collect();
    let mut v = json!({
        "Name": n.spec.name, "Id": n.id, "Created": rfc3339(n.meta.created_at), "Scope": "swarm", "Driver": n.spec.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": [config]},
        "Internal": n.spec.internal, "Attachable": n.spec.attachable, "Ingress": n.ingress(),
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {},
        "Options": options, "Labels": n.spec.labels, "Peers": peers,
    });
    if verbose {
        let mut services = serde_json::Map::new();
        for s in &d.services {
            let tasks: Vec<Value> = s
                .tasks
                .iter()
                .map(|(name, addr, node)| json!({"Name": name, "EndpointIP": addr.addr.to_string(), "Info": {"Host IP": node}}))
                .collect();
            let vip = s.vip.map(|a| a.addr.to_string()).unwrap_or_default();
            services.insert(s.name.clone(), json!({"VIP": vip, "Ports": s.ports, "LocalLBIndex": 0, "Tasks": tasks}));
        }
        v["Services"] = Value::Object(services);
    }
    // What the data path does with it (not in Docker's output): the MTU tasks get, and how traffic
    // between nodes is protected.
    let mtu = crate::network::view::effective_mtu(n.spec.mtu, n.spec.encrypted);
    let encryption = if n.spec.encrypted {
        json!(format!(
            "ChaCha20-Poly1305 between nodes, in each node's tunnel relay (UDP port {}; keys over the swarm's Noise links, replaced every 12 hours)",
            crate::daemon::TUNNEL_PORT
        ))
    } else {
        json!("none")
    };
    v["ShoalDataPath"] = json!({"MTU": mtu, "Encryption": encryption});
    let warnings = crate::daemon::service::network_notes(n);
    if !warnings.is_empty() {
        v["ShoalWarnings"] = json!(warnings);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: NetworkCmd,
    }

    fn parse(args: &[&str]) -> NetworkCmd {
        T::try_parse_from(std::iter::once("network").chain(args.iter().copied())).unwrap().cmd
    }

    #[test]
    fn create_flags_make_the_spec() {
        let NetworkCmd::Create(a) = parse(&[
            "create",
            "--driver",
            "overlay",
            "--subnet=10.15.0.0/16",
            "--gateway=10.15.0.2",
            "--opt",
            "encrypted",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "--attachable",
            "--label",
            "env=edge",
            "my-swarm-net",
        ]) else {
            panic!("not create")
        };
        let spec = spec_from(a);
        assert_eq!(spec.name, "my-swarm-net");
        assert_eq!(spec.ipam.subnet.map(|s| s.to_string()).as_deref(), Some("10.15.0.0/16"));
        assert_eq!(spec.ipam.gateway.map(|g| g.to_string()).as_deref(), Some("10.15.0.2"));
        assert_eq!(spec.options.get("encrypted").map(String::as_str), Some(""));
        assert_eq!(spec.options.get("com.docker.network.driver.mtu").map(String::as_str), Some("1400"));
        assert!(spec.attachable && !spec.internal && !spec.ingress);
        assert_eq!(spec.labels.get("env").map(String::as_str), Some("edge"));
        assert!(T::try_parse_from(["network", "create", "--subnet", "10.15.0.0", "x"]).is_err());
        let NetworkCmd::Ls(a) = parse(&["ls", "-q", "--no-trunc", "-f", "driver=overlay"]) else { panic!("not ls") };
        assert!(a.quiet && a.no_trunc);
        assert_eq!(a.filter, ["driver=overlay"]);
    }

    #[test]
    fn filters_match_like_docker() {
        let row = Row {
            id: "abc123".into(),
            name: "my-swarm-net".into(),
            driver: "overlay".into(),
            scope: "swarm",
            internal: false,
            labels: [("env".to_string(), "edge".to_string())].into_iter().collect(),
            created_at: 1,
        };
        let f = |pairs: &[(&str, &str)]| {
            let args: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Filters::parse(&args, &["name", "id", "driver", "scope", "type", "label"])
        };
        assert!(matches(&row, &f(&[("name", "swarm")]).unwrap()));
        assert!(matches(&row, &f(&[("name", "nope"), ("name", "my")]).unwrap()), "one key ORs");
        assert!(!matches(&row, &f(&[("name", "my"), ("driver", "host")]).unwrap()), "keys AND");
        assert!(matches(&row, &f(&[("label", "env"), ("scope", "swarm"), ("id", "abc"), ("type", "custom")]).unwrap()));
        assert!(!matches(&row, &f(&[("label", "env=cloud")]).unwrap()));
        assert!(!matches(&row, &f(&[("type", "builtin")]).unwrap()));
        assert!(f(&[("colour", "x")]).is_err());
        assert_eq!(
            predefined_rows().iter().map(|r| (r.name.as_str(), r.driver.as_str())).collect::<Vec<_>>(),
            [("host", "host"), ("none", "null")]
        );
    }
}
