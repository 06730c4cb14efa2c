//! Flag value parsers with Docker's syntax and clear errors.

use shoal_manager::placement::Spread;
use shoal_shared::types::{
    Availability, EndpointMode, FailureAction, FileReference, Ipv4Net, Mount, MountKind, NetworkAttachmentConfig, PortConfig,
    RestartCondition, UpdateOrder, PUBLISH_MODE_HOST, PUBLISH_MODE_INGRESS,
};

/// `active|pause|drain`.
pub(crate) fn availability(s: &str) -> Result<Availability, String> {
    Availability::parse(s).ok_or_else(|| format!("invalid availability {s:?}: use active, pause or drain"))
}

/// `any|on-failure|none`.
pub(crate) fn restart_condition(s: &str) -> Result<RestartCondition, String> {
    match s {
        "any" => Ok(RestartCondition::Any),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "none" => Ok(RestartCondition::None),
        _ => Err(format!("invalid restart condition {s:?}: use any, on-failure or none")),
    }
}

/// `pause|continue|rollback`.
pub(crate) fn failure_action(s: &str) -> Result<FailureAction, String> {
    match s {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" => Ok(FailureAction::Rollback),
        _ => Err(format!("invalid failure action {s:?}: use pause, continue or rollback")),
    }
}

/// `stop-first|start-first`.
pub(crate) fn update_order(s: &str) -> Result<UpdateOrder, String> {
    match s {
        "stop-first" => Ok(UpdateOrder::StopFirst),
        "start-first" => Ok(UpdateOrder::StartFirst),
        _ => Err(format!("invalid update order {s:?}: use stop-first or start-first")),
    }
}

/// Splits `--args` into words as a POSIX shell would: single and double
/// quotes and backslash escapes; no expansion.
pub(crate) fn words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    out.push(w);
                }
            }
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => anyhow::bail!("invalid --args {s:?}: unterminated single quote"),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => anyhow::bail!("invalid --args {s:?}: unterminated double quote"),
                        },
                        Some(c) => w.push(c),
                        None => anyhow::bail!("invalid --args {s:?}: unterminated double quote"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => cur.get_or_insert_with(String::new).push(c),
                None => anyhow::bail!("invalid --args {s:?}: trailing backslash"),
            },
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur);
    Ok(out)
}

/// Go-style durations (`5s`, `1m30s`, `100ms`, `0`) to nanoseconds.
pub(crate) fn duration_ns(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    humantime::parse_duration(s)
        .map(|d| d.as_nanos() as u64)
        .map_err(|e| format!("invalid duration {s:?} ({e}): use e.g. 5s, 1m30s, 250ms"))
}

/// `KEY=VALUE` pairs.
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(format!("invalid label {s:?}: use KEY=VALUE")),
    }
}

/// `SERVICE=REPLICAS` for `service scale`.
pub(crate) fn scale(s: &str) -> Result<(String, u64), String> {
    let bad = || format!("invalid scale specifier {s:?}: use SERVICE=REPLICAS, e.g. web=3");
    let (name, n) = s.split_once('=').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok((name.to_string(), n))
}

/// Memory sizes as Docker's `RAMInBytes`: `512m`, `1g`, `100k`, plain bytes.
pub(crate) fn memory_bytes(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid memory size {s:?}: use e.g. 64m, 1g, 512k");
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !(0.0..=9.0e18).contains(&v) {
        return Err(bad());
    }
    Ok((v * mult as f64) as i64)
}

/// Decimal CPUs (`0.5`, `2`) to nano-CPUs.
pub(crate) fn nano_cpus(s: &str) -> Result<i64, String> {
    let v: f64 = s.parse().map_err(|_| format!("invalid cpu count {s:?}: use e.g. 0.5 or 2"))?;
    if !(0.0..=1.0e6).contains(&v) {
        return Err(format!("invalid cpu count {s:?}: must be between 0 and 1000000"));
    }
    Ok((v * 1e9) as i64)
}

/// `--mount type=volume,source=S,destination=D[,readonly]`.
pub(crate) fn mount(s: &str) -> Result<Mount, String> {
    let mut kind = MountKind::Volume;
    let (mut source, mut target, mut read_only) = (String::new(), String::new(), false);
    for field in s.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, "true"));
        match k {
            "type" => {
                kind = match v {
                    "volume" => MountKind::Volume,
                    "bind" => MountKind::Bind,
                    "tmpfs" => MountKind::Tmpfs,
                    _ => return Err(format!("invalid mount type {v:?}: use volume, bind or tmpfs")),
                }
            }
            "source" | "src" => source = v.to_string(),
            "destination" | "dst" | "target" => target = v.to_string(),
            "readonly" | "ro" => read_only = v != "false" && v != "0",
            _ => return Err(format!("unknown mount option {k:?} in {s:?}")),
        }
    }
    if !target.starts_with('/') {
        return Err(format!("invalid mount {s:?}: destination must be an absolute path"));
    }
    if kind != MountKind::Tmpfs && source.is_empty() {
        return Err(format!("invalid mount {s:?}: source is required for type volume and bind"));
    }
    Ok(Mount { kind, source, target, read_only })
}

/// `--secret` / `--config`: Docker's `NAME` or
/// `source=NAME[,target=PATH][,uid=N][,gid=N][,mode=0444]` (mode in octal).
/// The id is filled in by the manager.
pub(crate) fn file_ref(s: &str) -> Result<FileReference, String> {
    let mut r = FileReference {
        id: String::new(),
        name: String::new(),
        target: String::new(),
        uid: "0".into(),
        gid: "0".into(),
        mode: shoal_shared::types::FILE_REFERENCE_MODE_DEFAULT,
    };
    if !s.contains('=') {
        r.name = s.to_string();
    } else {
        for field in s.split(',') {
            let Some((k, v)) = field.split_once('=') else { return Err(format!("invalid field {field:?} in {s:?}: use KEY=VALUE")) };
            match k {
                "source" | "src" => r.name = v.to_string(),
                "target" => r.target = v.to_string(),
                "uid" => r.uid = v.to_string(),
                "gid" => r.gid = v.to_string(),
                "mode" => {
                    r.mode =
                        u32::from_str_radix(v, 8).map_err(|_| format!("invalid mode {v:?} in {s:?}: use octal permission bits (0444)"))?
                }
                _ => return Err(format!("invalid field {k:?} in {s:?}: use source, target, uid, gid or mode")),
            }
        }
    }
    if r.name.is_empty() {
        return Err(format!("invalid {s:?}: source is required"));
    }
    Ok(r)
}

/// `--placement-pref spread=DESCRIPTOR`, to the descriptor `Placement.preferences` stores.
pub(crate) fn placement_pref(s: &str) -> Result<String, String> {
    Spread::parse_pref(s).map(|p| p.descriptor).map_err(|e| e.to_string())
}

/// `--publish`: Docker's short syntax `[PUBLISHED:]TARGET[/PROTOCOL]` (ingress
/// mode) or its long one, `mode=host,published=8080,target=80[,protocol=udp]`.
pub(crate) fn publish(s: &str) -> Result<PortConfig, String> {
    if s.contains('=') {
        publish_long(s)
    } else {
        publish_short(s)
    }
}

const PUBLISH_LONG: &str = "mode=ingress|host,published=PORT,target=PORT[,protocol=tcp|udp|sctp]";

fn publish_short(s: &str) -> Result<PortConfig, String> {
    let bad = || format!("invalid --publish {s:?}: use PUBLISHED:TARGET[/PROTOCOL], e.g. 8080:80, or {PUBLISH_LONG}");
    let (ports, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
    let (published, target) = ports.split_once(':').unwrap_or(("0", ports));
    let protocol = port_protocol(protocol).ok_or_else(bad)?;
    match (port_number(published), port_number(target)) {
        (Some(published_port), Some(target_port)) if target_port > 0 => {
            Ok(PortConfig { protocol, target_port, published_port, publish_mode: PUBLISH_MODE_INGRESS.into() })
        }
        _ => Err(bad()),
    }
}

fn publish_long(s: &str) -> Result<PortConfig, String> {
    let mut p = PortConfig { protocol: "tcp".into(), target_port: 0, published_port: 0, publish_mode: PUBLISH_MODE_INGRESS.into() };
    for field in s.split(',') {
        // Docker lowercases the fields.
        let field = field.trim().to_ascii_lowercase();
        let Some((k, v)) = field.split_once('=') else {
            return Err(format!("invalid --publish {s:?}: field {field:?} is not KEY=VALUE; use {PUBLISH_LONG}"));
        };
        let number = || port_number(v).ok_or_else(|| format!("invalid --publish {s:?}: {k} must be a port number, 0-65535"));
        match k {
            "mode" if v == PUBLISH_MODE_INGRESS || v == PUBLISH_MODE_HOST => p.publish_mode = v.to_string(),
            "mode" => return Err(format!("invalid --publish {s:?}: mode must be ingress or host")),
            "protocol" => {
                p.protocol = port_protocol(v).ok_or_else(|| format!("invalid --publish {s:?}: protocol must be tcp, udp or sctp"))?
            }
            "target" => p.target_port = number()?,
            "published" => p.published_port = number()?,
            _ => return Err(format!("invalid --publish {s:?}: unknown field {k:?}; use {PUBLISH_LONG}")),
        }
    }
    if p.target_port == 0 {
        return Err(format!("invalid --publish {s:?}: target is required, e.g. mode=host,published=8080,target=80"));
    }
    if p.publish_mode == PUBLISH_MODE_HOST && p.published_port == 0 {
        return Err(format!("invalid --publish {s:?}: host mode needs published=PORT (shoal does not pick one)"));
    }
    Ok(p)
}

fn port_number(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|n| *n <= 65_535)
}

fn port_protocol(s: &str) -> Option<String> {
    let p = s.to_ascii_lowercase();
    matches!(p.as_str(), "tcp" | "udp" | "sctp").then_some(p)
}

/// `--network NAME` or Docker's long form `name=NAME,alias=A[,alias=B]`
/// (`target=` is `name=`'s synonym). The manager resolves the name.
pub(crate) fn network(s: &str) -> Result<NetworkAttachmentConfig, String> {
    if !s.contains('=') {
        if s.is_empty() {
            return Err("invalid --network \"\": name a network".into());
        }
        return Ok(NetworkAttachmentConfig { target: s.to_string(), aliases: Vec::new() });
    }
    let mut n = NetworkAttachmentConfig { target: String::new(), aliases: Vec::new() };
    for field in s.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid --network {s:?}: field {field:?} is not KEY=VALUE; use name=NAME,alias=ALIAS"))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "name" | "target" => n.target = v.trim().to_string(),
            "alias" => n.aliases.push(v.trim().to_string()),
            other => return Err(format!("invalid --network {s:?}: unknown field {other:?}; use name=NAME,alias=ALIAS")),
        }
    }
    if n.target.is_empty() {
        return Err(format!("invalid --network {s:?}: name=NAME is required"));
    }
    if n.aliases.iter().any(String::is_empty) {
        return Err(format!("invalid --network {s:?}: an alias is empty"));
    }
    Ok(n)
}

/// `--endpoint-mode vip|dnsrr`.
pub(crate) fn endpoint_mode(s: &str) -> Result<EndpointMode, String> {
    match s {
        "vip" => Ok(EndpointMode::Vip),
        "dnsrr" => Ok(EndpointMode::Dnsrr),
        _ => Err(format!("invalid endpoint mode {s:?}: use vip or dnsrr")),
    }
}

/// A CIDR (`10.15.0.0/16`) for `--subnet`, `--ip-range`, `--default-addr-pool`.
pub(crate) fn cidr(s: &str) -> Result<Ipv4Net, String> {
    if !s.contains('/') {
        return Err(format!("invalid CIDR address {s:?}: use A.B.C.D/N, e.g. 10.15.0.0/16"));
    }
    Ipv4Net::parse(s).map_err(|e| format!("invalid CIDR address: {e}"))
}

/// An IPv4 address (`--gateway`).
pub(crate) fn ipv4(s: &str) -> Result<std::net::Ipv4Addr, String> {
    s.parse().map_err(|_| format!("invalid IPv4 address {s:?}: use A.B.C.D"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        assert_eq!(scale("web=4"), Ok(("web".into(), 4)));
        assert!(scale("web").is_err());
        assert!(scale("web=x").is_err());
        assert!(scale("=3").is_err());
        assert!(scale("web=-1").is_err());
        assert_eq!(duration_ns("5s"), Ok(5_000_000_000));
        assert_eq!(duration_ns("1m30s"), Ok(90_000_000_000));
        assert_eq!(duration_ns("0"), Ok(0));
        assert!(duration_ns("5 parsecs").is_err());
        assert_eq!(memory_bytes("64m"), Ok(64 << 20));
        assert_eq!(memory_bytes("1g"), Ok(1 << 30));
        assert!(memory_bytes("lots").is_err());
        assert_eq!(nano_cpus("0.5"), Ok(500_000_000));
        let m = mount("type=volume,source=v,destination=/etc/nginx").unwrap();
        assert_eq!((m.kind, m.source.as_str(), m.target.as_str()), (MountKind::Volume, "v", "/etc/nginx"));
        assert!(mount("type=volume,destination=/x").is_err());
        assert!(mount("type=nfs,source=a,destination=/x").is_err());
        assert_eq!(words("sh -c 'echo \"a b\"; x' \"q\\\"z\" e\\ f").unwrap(), vec!["sh", "-c", "echo \"a b\"; x", "q\"z", "e f"]);
        assert_eq!(words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(words("''").unwrap(), vec![""]);
        assert!(words("'open").is_err());
        assert_eq!(failure_action("rollback"), Ok(FailureAction::Rollback));
        assert!(failure_action("explode").is_err());
        assert_eq!(update_order("start-first"), Ok(UpdateOrder::StartFirst));
    }

    #[test]
    fn publish_syntax() {
        let long = "use mode=ingress|host,published=PORT,target=PORT[,protocol=tcp|udp|sctp]";
        let short = format!("use PUBLISHED:TARGET[/PROTOCOL], e.g. 8080:80, or {}", &long[4..]);
        let short = short.as_str();
        for (input, expect) in [
            ("8080:80", Ok(("ingress", "tcp", 8080, 80))),
            ("8080:80/udp", Ok(("ingress", "udp", 8080, 80))),
            ("80/TCP", Ok(("ingress", "tcp", 0, 80))),
            ("mode=host,published=8080,target=80", Ok(("host", "tcp", 8080, 80))),
            ("mode=host,published=8080,target=80,protocol=udp", Ok(("host", "udp", 8080, 80))),
            ("Target=80, Published=8080", Ok(("ingress", "tcp", 8080, 80))),
            ("target=80", Ok(("ingress", "tcp", 0, 80))),
            ("x:80", Err(short)),
            ("8080:99999", Err(short)),
            ("8080:80/icmp", Err(short)),
            ("8080:0", Err(short)),
            ("mode=host,target=80", Err("host mode needs published=PORT (shoal does not pick one)")),
            ("mode=host,published=8080", Err("target is required, e.g. mode=host,published=8080,target=80")),
            ("mode=bridge,target=80", Err("mode must be ingress or host")),
            ("protocol=icmp,target=80", Err("protocol must be tcp, udp or sctp")),
            ("target=http", Err("target must be a port number, 0-65535")),
            ("published=70000,target=80", Err("published must be a port number, 0-65535")),
            ("target=80,host_ip=1.2.3.4", Err(&format!("unknown field \"host_ip\"; {long}"))),
            ("target=80,ro", Err(&format!("field \"ro\" is not KEY=VALUE; {long}"))),
        ] {
            let got = publish(input).map(|p| (p.publish_mode, p.protocol, p.published_port, p.target_port));
            match (got, expect) {
                (Ok(p), Ok((mode, proto, published, target))) => {
                    assert_eq!(p, (mode.to_string(), proto.to_string(), published, target), "{input}")
                }
                (Err(e), Err(want)) => {
                    assert!(e.starts_with(&format!("invalid --publish {input:?}: ")) && e.ends_with(want), "{input}: {e}")
                }
                (got, _) => panic!("{input}: got {got:?}, want {expect:?}"),
            }
        }
    }

    #[test]
    fn network_syntax() {
        let n = network("my-swarm-net").unwrap();
        assert_eq!((n.target.as_str(), n.aliases.len()), ("my-swarm-net", 0));
        let n = network("name=backend,alias=db,alias=pg").unwrap();
        assert_eq!((n.target.as_str(), n.aliases.clone()), ("backend", vec!["db".to_string(), "pg".to_string()]));
        assert_eq!(network("target=backend").unwrap().target, "backend");
        assert!(network("alias=db").unwrap_err().ends_with("name=NAME is required"));
        assert!(network("name=x,driver=y").unwrap_err().contains("unknown field \"driver\""));
        assert!(network("name=x,alias=").is_err());
        assert!(network("").is_err());
        assert_eq!(endpoint_mode("dnsrr"), Ok(EndpointMode::Dnsrr));
        assert!(endpoint_mode("round-robin").is_err());
        assert_eq!(cidr("10.15.0.0/16").unwrap().to_string(), "10.15.0.0/16");
        assert!(cidr("10.15.0.0").is_err());
        assert!(cidr("10.15.0.0/40").is_err());
        assert!(ipv4("10.15.0.2").is_ok());
        assert!(ipv4("10.15.0").is_err());
    }

    #[test]
    fn placement_pref_syntax() {
        assert_eq!(placement_pref("spread=node.labels.zone"), Ok("node.labels.zone".to_string()));
        assert_eq!(placement_pref("spread=engine.labels.disk"), Ok("engine.labels.disk".to_string()));
        assert_eq!(
            placement_pref("binpack=node.labels.zone"),
            Err("unsupported placement preference \"binpack=node.labels.zone\": only spread is supported, e.g. spread=node.labels.zone"
                .into())
        );
        assert_eq!(
            placement_pref("node.labels.zone"),
            Err("invalid placement preference \"node.labels.zone\": use spread=node.labels.KEY (or spread=engine.labels.KEY)".into())
        );
        assert!(placement_pref("spread=labels.zone").unwrap_err().starts_with("invalid spread descriptor \"labels.zone\": use node.id"));
    }
}
