//! Control-API writes, validated against the state and turned into ops.
//!
//! Pure functions: the daemon's shell supplies ids and timestamps. A request
//! that fails validation returns a [`ControlError`] and proposes nothing, so
//! bad input never changes state. Messages follow Swarm's where it has one,
//! lowercased, and say what to do next.

use crate::placement::ValidPlacement;
use crate::state::State;
use crate::updater::{MSG_ROLLBACK_MANUAL, MSG_UPDATING};
use shoal_shared::api::ErrorKind;
use shoal_shared::clock::UnixNanos;
use shoal_shared::ops::{Op, FILE_PART_BYTES};
use shoal_shared::types::{
    Autolock, AutopilotSettings, EndpointMode, FileKind, FileSpec, Ipv4Net, Meta, Network, NetworkDefaults, NetworkSpec, NodeRole,
    NodeState, PortConfig, RestartCondition, Service, ServiceMode, ServiceSpec, StoredFile, SwarmSettings, UpdateState, UpdateStatus,
    DRIVER_OVERLAY, HOST_NETWORK_ID, NONE_NETWORK_ID, OPT_ENCRYPTED, OPT_MTU, PUBLISH_MODE_HOST, PUBLISH_MODE_INGRESS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Longest service name, as Docker's DNS-label rule.
pub const SERVICE_NAME_BYTES_MAX: usize = 63;
/// Most replicas one service may ask for.
pub const REPLICAS_MAX: u64 = 100_000;
/// Highest TCP/UDP/SCTP port number.
pub const PORT_MAX: u32 = 65_535;
/// Longest network name.
pub const NETWORK_NAME_BYTES_MAX: usize = 128;
/// Networks one swarm may hold.
pub const NETWORKS_MAX: usize = 1_024;
/// Bounds of `-o com.docker.network.driver.mtu` (IPv4's minimum to a jumbo frame).
pub const MTU_MIN: u32 = 68;
pub const MTU_MAX: u32 = 65_535;
/// Bounds of `--data-path-port` (Docker's).
pub const DATA_PATH_PORT_MIN: u16 = 1_024;
pub const DATA_PATH_PORT_MAX: u16 = 49_151;

/// A refused control request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(
        "this node is not a swarm manager: use `shoal swarm init` or `shoal swarm join` to connect this node to a swarm and try again"
    )]
    NotInSwarm,
    #[error("this node is already part of a swarm: use `shoal swarm leave` to leave this swarm and join another one")]
    AlreadyInSwarm,
    #[error("no such service: {0}")]
    NoSuchService(String),
    #[error("no such node: {0}")]
    NoSuchNode(String),
    #[error("service {0} already exists (name conflicts with an existing object)")]
    NameInUse(String),
    #[error("invalid service name {0:?}: use 1-63 letters, digits, dashes and underscores, starting and ending with a letter or digit")]
    BadName(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} {1} already exists")]
    FileNameInUse(&'static str, String),
    #[error("no such {0}: {1}")]
    NoSuchFile(&'static str, String),
    #[error("{0} {1} is in use by the following service: {2}")]
    FileInUse(&'static str, String, String),
    #[error("scale can only be used with replicated or replicated-job mode: service {0} is not replicated")]
    ScaleGlobal(String),
    #[error("service {0} does not have a previous spec: there is nothing to roll back to")]
    NoPreviousSpec(String),
    /// Docker's wording.
    #[error("cannot rotate because autolock is not turned on")]
    AutolockOff,
    /// Docker's wording.
    #[error("no unlock key is set")]
    NoUnlockKey,
    #[error("attempting to demote the last manager of the swarm")]
    LastManager,
    #[error("attempting to demote {0}, the only manager that votes in raft yet: a promoted manager votes once it has caught up; wait until `shoal node ls` shows it Reachable")]
    LastVoter(String),
    /// swarmkit's wording, with what to do about it.
    #[error("can't remove member from the raft: this would result in a loss of quorum ({0}); bring the unreachable managers back, or demote an unreachable one first")]
    LossOfQuorum(String),
    #[error("node {0} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal")]
    RemoveManager(String),
    #[error("node {0} is not down and can't be removed")]
    NotDown(String),
    /// Docker's wording, as the CLI prints it (`Error: No such network: NAME`).
    #[error("No such network: {0}")]
    NoSuchNetwork(String),
    #[error("network with name {0} already exists")]
    NetworkNameInUse(String),
    /// `host` and `none` (Docker's wording).
    #[error("{0} is a pre-defined network and cannot be removed")]
    PredefinedNetwork(String),
    /// swarmkit's wording: network id, service id.
    #[error("network {0} is in use by service {1}")]
    NetworkInUseByService(String, String),
    #[error("network {0} is in use by task {1}")]
    NetworkInUseByTask(String, String),
    #[error("ingress network cannot be removed because service {0} depends on it")]
    IngressInUse(String),
    #[error("service needs ingress network, but no ingress network is present")]
    NoIngress,
}

impl ControlError {
    /// The API error class for this refusal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControlError::NotInSwarm
            | ControlError::AutolockOff
            | ControlError::NoUnlockKey
            | ControlError::AlreadyInSwarm
            | ControlError::ScaleGlobal(_)
            | ControlError::NoPreviousSpec(_)
            | ControlError::LastManager
            | ControlError::LastVoter(_)
            | ControlError::LossOfQuorum(_)
            | ControlError::RemoveManager(_)
            | ControlError::NotDown(_)
            | ControlError::PredefinedNetwork(_)
            | ControlError::NetworkInUseByService(..)
            | ControlError::NetworkInUseByTask(..)
            | ControlError::IngressInUse(_)
            | ControlError::FileInUse(..)
            | ControlError::NoIngress => ErrorKind::FailedPrecondition,
            ControlError::NoSuchFile(..) => ErrorKind::NotFound,
            ControlError::FileNameInUse(..) => ErrorKind::AlreadyExists,
            ControlError::NoSuchService(_) | ControlError::NoSuchNode(_) | ControlError::NoSuchNetwork(_) => ErrorKind::NotFound,
            ControlError::NameInUse(_) | ControlError::NetworkNameInUse(_) => ErrorKind::AlreadyExists,
            ControlError::BadName(_) | ControlError::Invalid(_) => ErrorKind::InvalidArgument,
        }
    }
}

/// Checks a spec on its own (not against the state).
pub fn validate_spec(spec: &ServiceSpec) -> Result<(), ControlError> {
    let name = &spec.name;
    // Swarm's rule (swarmkit's DNS-name check): `_` as in stacks' `app_web`.
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let ok_ends =
        name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > SERVICE_NAME_BYTES_MAX || !ok_chars || !ok_ends {
        return Err(ControlError::BadName(name.clone()));
    }
    if spec.task.container.image.trim().is_empty() {
        return Err(ControlError::Invalid("a service needs an image".into()));
    }
    if let ServiceMode::Replicated { replicas: n } | ServiceMode::ReplicatedJob { total_completions: n, .. } = spec.mode {
        if n > REPLICAS_MAX {
            return Err(ControlError::Invalid(format!("replicas {n} is above the limit of {REPLICAS_MAX}")));
        }
    }
    let c = &spec.task.container;
    if let Some(h) = &c.healthcheck {
        shoal_shared::health::validate(h).map_err(|e| ControlError::Invalid(e.to_string()))?;
    }
    if spec.mode.is_job() && spec.task.restart.condition == RestartCondition::Any {
        // Docker's rule: a job whose tasks restart after success never completes.
        return Err(ControlError::Invalid("jobs may not have restart condition \"any\": use on-failure or none".into()));
    }
    // The one placement parser: what passes here is what the scheduler can read.
    ValidPlacement::parse(&spec.task.placement).map_err(|e| ControlError::Invalid(e.to_string()))?;
    validate_ports(spec)?;
    for m in &c.mounts {
        match m.kind {
            // A source with service templates (`data-{{.Task.Slot}}`) is checked by the worker once expanded.
            shoal_shared::types::MountKind::Volume if !m.source.contains("{{") && !shoal_shared::types::valid_volume_name(&m.source) => {
                return Err(ControlError::Invalid(format!(
                    "invalid mount config for type \"volume\": invalid volume name {:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit",
                    m.source
                )));
            }
            shoal_shared::types::MountKind::Bind if !m.source.starts_with('/') => {
                return Err(ControlError::Invalid(format!(
                    "invalid mount config for type \"bind\": invalid mount path: {:?} mount path must be absolute",
                    m.source
                )));
            }
            _ => {}
        }
        if !m.target.starts_with('/') {
            return Err(ControlError::Invalid(format!("invalid mount target {:?}: must be an absolute path", m.target)));
        }
    }
    for e in &spec.task.container.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(ControlError::Invalid(format!("invalid environment variable {e:?}: use KEY=VALUE")));
        }
    }
    let u = &spec.update;
    if !(0.0..=1.0).contains(&u.max_failure_ratio) || !(0.0..=1.0).contains(&spec.rollback.max_failure_ratio) {
        return Err(ControlError::Invalid("max failure ratio must be between 0 and 1".into()));
    }
    Ok(())
}

/// Published ports: known protocol and mode, ports in range, a published
/// port for host mode (Shoal does not pick one), and each published port and
/// protocol at most once (swarmkit's rule).
fn validate_ports(spec: &ServiceSpec) -> Result<(), ControlError> {
    let mut seen = BTreeSet::new();
    for p in &spec.ports {
        let proto = p.protocol.to_ascii_lowercase();
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(ControlError::Invalid(format!(
                "invalid protocol {:?} for port {}: use tcp, udp or sctp",
                p.protocol, p.target_port
            )));
        }
        if p.publish_mode != PUBLISH_MODE_HOST && p.publish_mode != PUBLISH_MODE_INGRESS {
            return Err(ControlError::Invalid(format!("invalid publish mode {:?}: use ingress or host", p.publish_mode)));
        }
        if p.target_port == 0 || p.target_port > PORT_MAX || p.published_port > PORT_MAX {
            return Err(ControlError::Invalid(format!(
                "invalid port {}:{}: ports are 1-{PORT_MAX} (published 0 means none)",
                p.published_port, p.target_port
            )));
        }
        if p.publish_mode == PUBLISH_MODE_HOST && p.published_port == 0 {
            return Err(ControlError::Invalid(format!(
                "host-mode port {}/{proto} needs a published port: shoal does not pick one; use mode=host,published=PORT,target={}",
                p.target_port, p.target_port
            )));
        }
        if p.published_port != 0 && !seen.insert((p.published_port, proto.clone())) {
            return Err(ControlError::Invalid(format!(
                "duplicate published port {}/{proto}: each published port and protocol may appear once",
                p.published_port
            )));
        }
    }
    Ok(())
}

fn in_swarm(state: &State) -> Result<(), ControlError> {
    state.cluster.as_ref().map(|_| ()).ok_or(ControlError::NotInSwarm)
}

/// Ops creating a service with the given (shell-chosen) id.
/// The spec's networks are resolved to ids (the CLI sends names) and its
/// ports checked against the swarm's ([`check_endpoint`]).
pub fn create_service(state: &State, mut spec: ServiceSpec, id: String) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    validate_spec(&spec)?;
    if state.services.values().any(|s| s.spec.name == spec.name) {
        return Err(ControlError::NameInUse(spec.name));
    }
    resolve_networks(state, &mut spec)?;
    resolve_files(state, &mut spec)?;
    check_endpoint(state, &spec, "")?;
    Ok(vec![Op::PutService(Service {
        id,
        meta: Meta::default(),
        spec,
        previous_spec: None,
        update_status: None,
        endpoint: Default::default(),
    })])
}

/// Resolves each `--network` target (name, id or id prefix) to the
/// network's id. Refused: unknown networks (`No such network: NAME`),
/// `ingress` named explicitly, a network named twice, and `host` or `none`
/// beside any other network.
pub fn resolve_networks(state: &State, spec: &mut ServiceSpec) -> Result<(), ControlError> {
    let nets = &mut spec.task.networks;
    let predefined = |t: &str| t == HOST_NETWORK_ID || t == NONE_NETWORK_ID;
    if nets.len() > 1 && nets.iter().any(|n| predefined(&n.target)) {
        return Err(ControlError::Invalid(
            "networks host and none cannot be combined with other networks: give --network host or --network none alone".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for n in nets.iter_mut() {
        if predefined(&n.target) {
            if !n.aliases.is_empty() {
                return Err(ControlError::Invalid(format!("network {} does not take aliases", n.target)));
            }
            continue;
        }
        let found = state.find_network(&n.target).ok_or_else(|| ControlError::NoSuchNetwork(n.target.clone()))?;
        if found.ingress() {
            return Err(ControlError::Invalid(format!(
                "service cannot be explicitly attached to the ingress network {:?}: publish ports with --publish instead",
                found.spec.name
            )));
        }
        if !seen.insert(found.id.clone()) {
            return Err(ControlError::Invalid(format!("network {} is given twice: attach a service to a network once", found.spec.name)));
        }
        if let Some(a) = n.aliases.iter().find(|a| a.is_empty() || a.len() > SERVICE_NAME_BYTES_MAX || a.contains(char::is_whitespace)) {
            return Err(ControlError::Invalid(format!("invalid alias {a:?}: use a DNS name of 1-63 characters")));
        }
        n.target = found.id.clone();
    }
    Ok(())
}

/// Secrets, and configs, one service may use at most (each kind).
pub const FILE_REFERENCES_MAX: usize = 64;

/// A spec's secret and config references, by name (or a known id) to ids;
/// their targets checked: no `..`, numeric uid and gid, permission bits
/// only, and no container path used twice (Docker: "duplicate secret
/// target").
pub fn resolve_files(state: &State, spec: &mut ServiceSpec) -> Result<(), ControlError> {
    let c = &mut spec.task.container;
    let mut paths = BTreeSet::new();
    for (kind, refs) in [(FileKind::Secret, &mut c.secrets), (FileKind::Config, &mut c.configs)] {
        if refs.len() > FILE_REFERENCES_MAX {
            return Err(ControlError::Invalid(format!("a service may use at most {FILE_REFERENCES_MAX} {}s", kind.as_str())));
        }
        for r in refs.iter_mut() {
            let by_id = match kind {
                FileKind::Secret => state.secrets.get(&r.id),
                FileKind::Config => state.configs.get(&r.id),
            };
            let found = match by_id.filter(|f| f.spec.name == r.name) {
                Some(f) => f,
                None => match kind {
                    FileKind::Secret => state.secrets.values().find(|f| f.spec.name == r.name),
                    FileKind::Config => state.configs.values().find(|f| f.spec.name == r.name),
                }
                .ok_or_else(|| ControlError::NoSuchFile(kind.as_str(), r.name.clone()))?,
            };
            r.id = found.id.clone();
            if r.target.is_empty() {
                r.target = r.name.clone();
            }
            let bad_target = r.target.contains('\0') || r.target.split('/').any(|p| p == "..") || r.target == "/";
            if bad_target {
                return Err(ControlError::Invalid(format!("invalid {} target {:?}: a file path without \"..\"", kind.as_str(), r.target)));
            }
            for (what, v) in [("uid", &r.uid), ("gid", &r.gid)] {
                if !v.is_empty() && v.parse::<u32>().is_err() {
                    return Err(ControlError::Invalid(format!("invalid {what} {v:?} for {} {}: use a number", kind.as_str(), r.name)));
                }
            }
            if r.mode > 0o777 {
                return Err(ControlError::Invalid(format!(
                    "invalid mode {:o} for {} {}: use permission bits (0444)",
                    r.mode,
                    kind.as_str(),
                    r.name
                )));
            }
            let path = if r.target.starts_with('/') {
                r.target.clone()
            } else if kind == FileKind::Secret {
                format!("/run/secrets/{}", r.target)
            } else {
                format!("/{}", r.target)
            };
            if !paths.insert(path.clone()) {
                return Err(ControlError::Invalid(format!(
                    "duplicate {} target for {} not allowed: {path} is used twice",
                    kind.as_str(),
                    r.name
                )));
            }
        }
    }
    Ok(())
}

/// swarmkit's endpoint checks: no ingress port in mode dnsrr or without an
/// ingress network, and no published port another service (not `self_id`)
/// holds: an ingress port conflicts with any publication of the same port
/// and protocol, a host-mode port only with an ingress one.
pub fn check_endpoint(state: &State, spec: &ServiceSpec, self_id: &str) -> Result<(), ControlError> {
    let ingress_ports = spec.ports.iter().any(|p| p.is_ingress());
    if ingress_ports && spec.endpoint_mode == EndpointMode::Dnsrr {
        return Err(ControlError::Invalid("EndpointSpec: port published with ingress mode can't be used with dnsrr mode".into()));
    }
    if ingress_ports && state.ingress_network().is_none() {
        return Err(ControlError::NoIngress);
    }
    for other in state.services.values().filter(|o| o.id != self_id) {
        // Allocated ports (auto ones included) and those not allocated yet.
        for theirs in other.endpoint.ports.iter().chain(other.spec.ports.iter()).filter(|p| p.published_port != 0) {
            for mine in spec.ports.iter().filter(|p| p.published_port == theirs.published_port) {
                if !mine.protocol.eq_ignore_ascii_case(&theirs.protocol) {
                    continue;
                }
                let how = match (theirs.is_ingress(), mine.is_ingress()) {
                    (true, _) => "an ingress port",
                    (false, true) => "a host-published port",
                    (false, false) => continue,
                };
                return Err(ControlError::Invalid(format!(
                    "port '{}' is already in use by service '{}' ({}) as {how}",
                    mine.published_port, other.spec.name, other.id
                )));
            }
        }
    }
    Ok(())
}

/// Checks `swarm init`'s network flags.
pub fn check_network_defaults(d: &NetworkDefaults) -> Result<(), ControlError> {
    if d.default_addr_pools.is_empty() {
        return Err(ControlError::Invalid("at least one default address pool is needed".into()));
    }
    for p in &d.default_addr_pools {
        if p.addr != p.network() {
            return Err(ControlError::Invalid(format!("invalid default address pool {p}: host bits are set, use {}", p.trunc())));
        }
        if d.subnet_size < p.prefix || d.subnet_size > crate::ipam::SUBNET_PREFIX_MAX {
            return Err(ControlError::Invalid(format!(
                "invalid default address pool mask length {}: it must be between the pool's prefix length ({}) and {}",
                d.subnet_size,
                p.prefix,
                crate::ipam::SUBNET_PREFIX_MAX
            )));
        }
    }
    if !(DATA_PATH_PORT_MIN..=DATA_PATH_PORT_MAX).contains(&d.data_path_port) {
        return Err(ControlError::Invalid(format!(
            "data path port {} is out of range: it must be within range {DATA_PATH_PORT_MIN} to {DATA_PATH_PORT_MAX}",
            d.data_path_port
        )));
    }
    Ok(())
}

/// The `ingress` network `swarm init` creates, as Docker's: the first
/// subnet of the default pools (10.0.0.0/24), its first address as
/// gateway, VNI 4096.
pub fn ingress_network(d: &NetworkDefaults, id: String) -> Network {
    let subnet = crate::ipam::carve_subnet(&d.default_addr_pools, d.subnet_size, &[])
        .unwrap_or(shoal_shared::types::Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 0), prefix: 24 });
    let spec = NetworkSpec { name: "ingress".into(), driver: DRIVER_OVERLAY.into(), ingress: true, ..Default::default() };
    Network { id, meta: Meta::default(), spec, vni: shoal_shared::types::VNI_MIN, subnet, gateway: first_address(subnet), last_addr: None }
}

fn first_address(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Ops for `network create` with the (shell-chosen) id: the spec checked
/// as swarmkit's (`ipam configuration: ...`), its subnet given or carved
/// from the swarm's default pools, a free VNI.
pub fn create_network(state: &State, mut spec: NetworkSpec, id: String) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let name = &spec.name;
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.is_empty() || name.len() > NETWORK_NAME_BYTES_MAX || !ok_chars || !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(ControlError::Invalid(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )));
    }
    if spec.driver.is_empty() {
        spec.driver = DRIVER_OVERLAY.into();
    }
    if spec.driver != DRIVER_OVERLAY {
        return Err(ControlError::Invalid(format!(
            "driver {:?} is not supported for swarm networks: shoal networks use the overlay driver (-d overlay)",
            spec.driver
        )));
    }
    if name == HOST_NETWORK_ID || name == NONE_NETWORK_ID || state.networks.values().any(|n| &n.spec.name == name) {
        return Err(ControlError::NetworkNameInUse(name.clone()));
    }
    if state.networks.len() >= NETWORKS_MAX {
        return Err(ControlError::Invalid(format!("the swarm already has {NETWORKS_MAX} networks: remove one first")));
    }
    if spec.ingress {
        if spec.attachable {
            return Err(ControlError::Invalid("ingress network cannot be attachable".into()));
        }
        if let Some(n) = state.ingress_network() {
            return Err(ControlError::Invalid(format!("ingress network ({}) is already present", n.id)));
        }
    }
    apply_options(&mut spec)?;
    let taken: Vec<Ipv4Net> = state.networks.values().map(|n| n.subnet).collect();
    let (subnet, gateway) = ipam_of(&spec, &taken, state.cluster.as_ref().map(|c| c.network.clone()).unwrap_or_default())?;
    let vnis: BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
    let vni = crate::ipam::next_vni(&vnis).ok_or_else(|| ControlError::Invalid("no VXLAN id left for a new network".into()))?;
    Ok(vec![Op::PutNetwork(Network { id, meta: Meta::default(), spec, vni, subnet, gateway, last_addr: None })])
}

/// `-o encrypted` and `-o com.docker.network.driver.mtu=N` into the spec's fields.
fn apply_options(spec: &mut NetworkSpec) -> Result<(), ControlError> {
    spec.encrypted = spec.options.contains_key(OPT_ENCRYPTED);
    spec.mtu = match spec.options.get(OPT_MTU) {
        None => 0,
        Some(v) => v.parse::<u32>().ok().filter(|m| (MTU_MIN..=MTU_MAX).contains(m)).ok_or_else(|| {
            ControlError::Invalid(format!("invalid value {v:?} for option {OPT_MTU}: use an MTU from {MTU_MIN} to {MTU_MAX}"))
        })?,
    };
    Ok(())
}

/// The subnet and gateway of a new network (swarmkit's IPAM checks, with its wording).
fn ipam_of(spec: &NetworkSpec, taken: &[Ipv4Net], defaults: NetworkDefaults) -> Result<(Ipv4Net, Ipv4Addr), ControlError> {
    let ipam = &spec.ipam;
    let bad = |m: String| ControlError::Invalid(format!("ipam configuration: {m}"));
    let Some(subnet) = ipam.subnet else {
        if ipam.gateway.is_some() || ipam.ip_range.is_some() {
            return Err(bad("a gateway or an ip range needs a subnet: add --subnet".into()));
        }
        let subnet = crate::ipam::carve_subnet(&defaults.default_addr_pools, defaults.subnet_size, taken).ok_or_else(|| {
            ControlError::Invalid(
                "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
            )
        })?;
        return Ok((subnet, first_address(subnet)));
    };
    if subnet.addr != subnet.network() {
        return Err(bad(format!("invalid subnet {subnet}: host bits are set, use {}", subnet.trunc())));
    }
    if subnet.prefix > crate::ipam::SUBNET_PREFIX_MAX {
        return Err(bad(format!("invalid subnet {subnet}: use a prefix of at most /{}", crate::ipam::SUBNET_PREFIX_MAX)));
    }
    if let Some(r) = ipam.ip_range {
        if !subnet.contains(r.network()) || r.prefix < subnet.prefix {
            return Err(bad(format!("subnet {subnet} does not contain range {r}")));
        }
    }
    let gateway = match ipam.gateway {
        Some(g) if !subnet.contains(g) => return Err(bad(format!("subnet {subnet} does not contain gateway {g}"))),
        Some(g) if g == subnet.network() || g == subnet.broadcast() => {
            return Err(bad(format!("invalid gateway {g}: it is the network or broadcast address of {subnet}")))
        }
        Some(g) => g,
        None => first_address(subnet),
    };
    if let Some(t) = taken.iter().find(|t| t.overlaps(subnet)) {
        return Err(ControlError::Invalid(format!(
            "invalid pool request: Pool overlaps with other one on this address space ({subnet} overlaps {t})"
        )));
    }
    Ok((subnet, gateway))
}

/// Ops removing a network (`network rm`); returns its name. Refused for
/// `host`/`none`, for a network a service or a live task uses, and for
/// `ingress` while a service publishes ingress ports (swarmkit's errors).
pub fn remove_network(state: &State, key: &str) -> Result<(Vec<Op>, String), ControlError> {
    if key == HOST_NETWORK_ID || key == NONE_NETWORK_ID {
        return Err(ControlError::PredefinedNetwork(key.to_string()));
    }
    in_swarm(state)?;
    let n = state.find_network(key).ok_or_else(|| ControlError::NoSuchNetwork(key.to_string()))?;
    if n.ingress() {
        if let Some(s) = state.services.values().find(|s| s.spec.ports.iter().any(|p| p.is_ingress())) {
            return Err(ControlError::IngressInUse(s.id.clone()));
        }
    } else if let Some(s) = state.services.values().find(|s| s.spec.task.networks.iter().any(|a| a.target == n.id)) {
        return Err(ControlError::NetworkInUseByService(n.id.clone(), s.id.clone()));
    }
    let live = state.tasks.values().filter(|t| !t.status.state.is_terminal());
    if let Some(t) = live.into_iter().find(|t| t.networks.iter().any(|a| a.network_id == n.id)) {
        return Err(ControlError::NetworkInUseByTask(n.id.clone(), t.id.clone()));
    }
    Ok((vec![Op::DeleteNetwork { id: n.id.clone() }], n.spec.name.clone()))
}

/// Longest secret or config name (Docker's).
pub const FILE_NAME_BYTES_MAX: usize = 64;
/// Secrets, and configs, a swarm keeps at most (each kind).
pub const FILES_MAX: usize = 1000;

/// Ops for `secret create` / `config create`: a valid, unused name (Docker's
/// rule: letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit, at most 64 bytes), data of 1 byte up to the kind's limit.
pub fn create_file(state: &State, kind: FileKind, spec: FileSpec, id: String) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let name = &spec.name;
    let inner_ok = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok =
        name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > FILE_NAME_BYTES_MAX || !inner_ok || !ends_ok {
        return Err(ControlError::Invalid(format!(
            "invalid {} name {name:?}: use up to {FILE_NAME_BYTES_MAX} letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            kind.as_str()
        )));
    }
    // Docker's limits: 500 KiB (secrets), 1000 KiB (configs).
    let max = kind.bytes_max();
    if spec.data.is_empty() || spec.data.len() > max {
        return Err(ControlError::Invalid(format!(
            "{} data must be larger than 0 and less than {} KiB (got {} bytes)",
            kind.as_str(),
            max / 1024,
            spec.data.len()
        )));
    }
    let files = match kind {
        FileKind::Secret => &state.secrets,
        FileKind::Config => &state.configs,
    };
    if files.values().any(|f| &f.spec.name == name) {
        return Err(ControlError::FileNameInUse(kind.as_str(), name.clone()));
    }
    if files.len() >= FILES_MAX {
        return Err(ControlError::Invalid(format!("the swarm already has {FILES_MAX} {}s: remove one first", kind.as_str())));
    }
    // More than one entry carries: parts first, each in its own entry (the
    // shell proposes file ops alone), the last part in the object itself.
    let mut spec = spec;
    let mut ops = Vec::new();
    if spec.data.len() > FILE_PART_BYTES {
        let last_len = match spec.data.len() % FILE_PART_BYTES {
            0 => FILE_PART_BYTES,
            r => r,
        };
        let last = spec.data.split_off(spec.data.len() - last_len);
        for (i, part) in spec.data.chunks(FILE_PART_BYTES).enumerate() {
            let offset = (i * FILE_PART_BYTES) as u64;
            ops.push(Op::PutFilePart { kind, id: id.clone(), offset, bytes: part.to_vec() });
        }
        spec.data = last;
    }
    let file = StoredFile { id, meta: Meta::default(), spec };
    ops.push(match kind {
        FileKind::Secret => Op::PutSecret(file),
        FileKind::Config => Op::PutConfig(file),
    });
    Ok(ops)
}

/// Ops for `stack deploy`'s secrets and configs: [`create_file`] unless
/// one of that name exists. One holding the same data is kept (no ops, its
/// id returned, `false`); other data is refused, as they never change.
pub fn ensure_file(state: &State, kind: FileKind, spec: FileSpec, id: String) -> Result<(Vec<Op>, String, bool), ControlError> {
    in_swarm(state)?;
    let files = match kind {
        FileKind::Secret => &state.secrets,
        FileKind::Config => &state.configs,
    };
    match files.values().find(|f| f.spec.name == spec.name) {
        Some(f) if f.spec.data == spec.data => Ok((Vec::new(), f.id.clone(), false)),
        Some(f) => Err(ControlError::Invalid(format!(
            "{kind} {name} exists with other data, and {kind}s cannot change: give the new data a new name (`name: {name}_v2` under the top-level `{kind}s` of the compose file) and deploy again",
            kind = kind.as_str(),
            name = f.spec.name
        ))),
        None => create_file(state, kind, spec, id.clone()).map(|ops| (ops, id, true)),
    }
}

/// Ops for `secret rm` / `config rm`; refused while a service's spec (or
/// previous spec, a rollback's target) uses it. Returns the name removed.
pub fn remove_file(state: &State, kind: FileKind, key: &str) -> Result<(Vec<Op>, String), ControlError> {
    in_swarm(state)?;
    let (found, refs): (_, fn(&shoal_shared::types::ContainerSpec) -> &Vec<shoal_shared::types::FileReference>) = match kind {
        FileKind::Secret => (state.find_secret(key), |c| &c.secrets),
        FileKind::Config => (state.find_config(key), |c| &c.configs),
    };
    let f = found.ok_or_else(|| ControlError::NoSuchFile(kind.as_str(), key.to_string()))?;
    if let Some(service) = state.file_user(&f.id, refs) {
        return Err(ControlError::FileInUse(kind.as_str(), f.spec.name.clone(), service));
    }
    let op = match kind {
        FileKind::Secret => Op::DeleteSecret { id: f.id.clone() },
        FileKind::Config => Op::DeleteConfig { id: f.id.clone() },
    };
    Ok((vec![op], f.spec.name.clone()))
}

/// Ops setting a replicated service's replica count.
pub fn scale_service(state: &State, key: &str, replicas: u64) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    if replicas > REPLICAS_MAX {
        return Err(ControlError::Invalid(format!("replicas {replicas} is above the limit of {REPLICAS_MAX}")));
    }
    let mode = match s.spec.mode {
        ServiceMode::Replicated { .. } => ServiceMode::Replicated { replicas },
        // Docker's: a replicated job's scale is its total completions.
        ServiceMode::ReplicatedJob { max_concurrent, .. } => ServiceMode::ReplicatedJob { max_concurrent, total_completions: replicas },
        ServiceMode::Global | ServiceMode::GlobalJob => return Err(ControlError::ScaleGlobal(s.spec.name.clone())),
    };
    let mut next = s.clone();
    next.previous_spec = Some(s.spec.clone());
    next.spec.mode = mode;
    Ok(vec![Op::PutService(next)])
}

/// Ops replacing a service's spec (`service update`). The old spec becomes
/// the previous one; a changed task spec starts a rolling update at `now`, as
/// do a first ingress port (the tasks need an `ingress` address) and any
/// update of a paused one (Swarm resumes paused updates this way).
/// Renames and mode changes are refused, as Swarm's.
pub fn update_service(state: &State, key: &str, mut spec: ServiceSpec, now: UnixNanos) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    validate_spec(&spec)?;
    resolve_networks(state, &mut spec)?;
    resolve_files(state, &mut spec)?;
    check_endpoint(state, &spec, &s.id)?;
    if spec.name != s.spec.name {
        return Err(ControlError::Invalid(format!(
            "renaming services is not supported: service {} cannot become {}",
            s.spec.name, spec.name
        )));
    }
    if std::mem::discriminant(&spec.mode) != std::mem::discriminant(&s.spec.mode) {
        return Err(ControlError::Invalid(format!("service mode change is not allowed: remove and recreate service {}", s.spec.name)));
    }
    let mut next = s.clone();
    let paused = s.update_status.as_ref().is_some_and(|u| matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused));
    // Tasks placed before the first ingress port have no address on `ingress`:
    // they are replaced like a task spec change (the updater's dirty check).
    let needs_ingress = |spec: &ServiceSpec| spec.ports.iter().any(PortConfig::is_ingress);
    let ingress_added = needs_ingress(&spec) && !needs_ingress(&s.spec);
    // A job has no rolling update: a changed spec is a new iteration (the orchestrator's).
    if (spec.task != s.spec.task || ingress_added || paused) && !spec.mode.is_job() {
        next.update_status = Some(UpdateStatus::started(UpdateState::Updating, now, MSG_UPDATING));
    }
    next.previous_spec = Some(std::mem::replace(&mut next.spec, spec));
    Ok(vec![Op::PutService(next)])
}

/// Ops rolling a service back to its previous spec (`service rollback`):
/// the specs swap, as Swarm's, and tasks are replaced with the rollback config.
pub fn rollback_service(state: &State, key: &str, now: UnixNanos) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    if s.spec.mode.is_job() {
        return Err(ControlError::Invalid(format!(
            "service {} is a job: jobs have no rolling update to roll back (update its spec to run it again)",
            s.spec.name
        )));
    }
    let Some(prev) = s.previous_spec.clone() else {
        return Err(ControlError::NoPreviousSpec(s.spec.name.clone()));
    };
    let mut next = s.clone();
    next.previous_spec = Some(std::mem::replace(&mut next.spec, prev));
    next.update_status = Some(UpdateStatus::started(UpdateState::RollbackStarted, now, MSG_ROLLBACK_MANUAL));
    Ok(vec![Op::PutService(next)])
}

/// Ops for `node update`: availability and user labels (`self` is `self_id`).
pub fn update_node(
    state: &State,
    self_id: &str,
    key: &str,
    availability: Option<shoal_shared::types::Availability>,
    label_add: &[(String, String)],
    label_rm: &[String],
) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let lookup = if key == "self" { self_id } else { key };
    let n = state.find_node(lookup).ok_or_else(|| ControlError::NoSuchNode(key.to_string()))?;
    let mut ops = Vec::new();
    if let Some(a) = availability {
        if a != n.availability {
            ops.push(Op::SetNodeAvailability { id: n.id.clone(), availability: a });
        }
    }
    if !label_add.is_empty() || !label_rm.is_empty() {
        let mut labels: BTreeMap<String, String> = n.labels.clone();
        for k in label_rm {
            if labels.remove(k).is_none() {
                return Err(ControlError::Invalid(format!("key {k} doesn't exist in node's labels")));
            }
        }
        for (k, v) in label_add {
            if k.is_empty() {
                return Err(ControlError::Invalid("invalid label: the key is empty; use KEY=VALUE".into()));
            }
            labels.insert(k.clone(), v.clone());
        }
        if labels != n.labels {
            ops.push(Op::SetNodeLabels { id: n.id.clone(), labels });
        }
    }
    Ok(ops)
}

/// Ops for `node promote` / `node demote` (`self` names this node). Raft
/// membership follows the roles: the leader reconciles it afterwards.
/// `is_voter` says whether a node votes in raft now: the last voter is
/// never demoted, even while a promoted manager is still a learner (found
/// by the whole-node simulator: demoting the only voter of a swarm whose
/// other manager had not caught up left the swarm without a leader).
pub fn set_node_role(
    state: &State,
    self_id: &str,
    key: &str,
    role: NodeRole,
    is_voter: impl Fn(&str) -> bool,
    reachable: impl Fn(&str) -> bool,
) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let lookup = if key == "self" { self_id } else { key };
    let n = state.find_node(lookup).ok_or_else(|| ControlError::NoSuchNode(key.to_string()))?;
    if n.role == role {
        return Ok(Vec::new());
    }
    if role == NodeRole::Worker && state.nodes.values().filter(|m| m.role == NodeRole::Manager).count() <= 1 {
        return Err(ControlError::LastManager);
    }
    // Another voter that stays a manager (a voter already demoted is on its way out).
    let other_voter = state.nodes.values().any(|m| m.id != n.id && m.role == NodeRole::Manager && is_voter(&m.id));
    if role == NodeRole::Worker && is_voter(&n.id) && !other_voter {
        return Err(ControlError::LastVoter(n.id.clone()));
    }
    if role == NodeRole::Worker && is_voter(&n.id) {
        // Raft removes it after the demotion: the voters left must still reach a majority.
        let left: Vec<&str> = state.nodes.keys().map(String::as_str).filter(|m| *m != n.id && is_voter(m)).collect();
        let up = left.iter().filter(|m| **m == self_id || reachable(m)).count();
        if up < left.len() / 2 + 1 {
            return Err(ControlError::LossOfQuorum(format!("{up} of the {} managers left would be reachable", left.len())));
        }
    }
    let mut node = n.clone();
    node.role = role;
    node.manager_addr = if role == NodeRole::Manager { node.addr.clone() } else { String::new() };
    Ok(vec![Op::PutNode(node)])
}

/// Ops for `node rm [--force]`; returns the node's id. `in_raft` says
/// whether a node is still a raft member: a demoted manager stays one until
/// the leader has removed it from raft, and removing its record before that
/// would leave it running raft outside the swarm (a removed node leading).
pub fn remove_node(
    state: &State,
    self_id: &str,
    key: &str,
    force: bool,
    in_raft: impl Fn(&str) -> bool,
) -> Result<(Vec<Op>, String), ControlError> {
    in_swarm(state)?;
    let lookup = if key == "self" { self_id } else { key };
    let n = state.find_node(lookup).ok_or_else(|| ControlError::NoSuchNode(key.to_string()))?;
    if n.role == NodeRole::Manager || in_raft(&n.id) {
        return Err(ControlError::RemoveManager(n.id.clone()));
    }
    if n.state != NodeState::Down && !force {
        return Err(ControlError::NotDown(n.id.clone()));
    }
    Ok((vec![Op::DeleteNode { id: n.id.clone() }], n.id.clone()))
}

/// Ops removing a service (its tasks are stopped by the orchestrator).
pub fn remove_service(state: &State, key: &str) -> Result<(Vec<Op>, String), ControlError> {
    in_swarm(state)?;
    let s = state.find_service(key).ok_or_else(|| ControlError::NoSuchService(key.to_string()))?;
    Ok((vec![Op::DeleteService { id: s.id.clone() }], s.spec.name.clone()))
}

/// Ops for `swarm update`: each `Some` setting replaces the current one.
pub fn update_swarm(state: &State, dispatcher_heartbeat_ms: Option<u64>, node_lost_after_ms: Option<u64>) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    let mut next = state.settings.clone();
    if let Some(ms) = dispatcher_heartbeat_ms {
        SwarmSettings::check_dispatcher_heartbeat_ms(ms).map_err(ControlError::Invalid)?;
        next.dispatcher_heartbeat_ms = ms;
    }
    // Checked against the heartbeat it will run with, whichever of the two changes.
    let lost_ms = node_lost_after_ms.unwrap_or(state.node_lost_after_ms);
    if let Err(e) = shoal_shared::types::check_node_lost_after_ms(lost_ms, next.dispatcher_heartbeat_ms) {
        let e = match node_lost_after_ms {
            Some(_) => e,
            None => format!(
                "invalid --dispatcher-heartbeat of {} ms: it exceeds the swarm's --node-lost-after of {lost_ms} ms; raise that too, or set it to 0",
                next.dispatcher_heartbeat_ms
            ),
        };
        return Err(ControlError::Invalid(e));
    }
    let mut ops = Vec::new();
    if next != state.settings {
        ops.push(Op::SetSwarmSettings(next));
    }
    if lost_ms != state.node_lost_after_ms {
        ops.push(Op::SetNodeLostAfter { ms: lost_ms });
    }
    Ok(ops)
}

/// Ops for `swarm init|update --managers N --manager-lost-after D
/// --manager-spread-label L`: each `Some` replaces the swarm's setting
/// (`managers` 0 turns the autopilot off, an empty label drops the spread);
/// none when nothing changes.
pub fn update_autopilot(
    state: &State,
    managers: Option<u8>,
    manager_lost_after_ms: Option<u64>,
    spread_label: Option<String>,
) -> Result<Vec<Op>, ControlError> {
    use crate::autopilot::{Settings, FLAPS_PER_HOUR_DEFAULT, MANAGER_LOST_AFTER_MS_DEFAULT};
    in_swarm(state)?;
    let mut next = state.autopilot.clone();
    if next.manager_lost_after_ms == 0 {
        next.manager_lost_after_ms = MANAGER_LOST_AFTER_MS_DEFAULT;
    }
    if next.flaps_per_hour_max == 0 {
        next.flaps_per_hour_max = FLAPS_PER_HOUR_DEFAULT;
    }
    if let Some(m) = managers {
        next.managers = m;
    }
    if let Some(ms) = manager_lost_after_ms {
        next.manager_lost_after_ms = ms;
    }
    if let Some(l) = spread_label {
        next.spread_label = l.trim().to_string();
    }
    // Checked as if it were on (0 is allowed: off).
    let on = AutopilotSettings { managers: next.managers.max(1), ..next.clone() };
    if let Some(Err(e)) = Settings::from_state(&on).map(|s| s.validate()) {
        let e = match e {
            crate::autopilot::SettingsError::Managers(_) => format!("{e}, or 0 to turn the autopilot off"),
            e => e.to_string(),
        };
        return Err(ControlError::Invalid(e));
    }
    Ok(if next == state.autopilot { Vec::new() } else { vec![Op::SetAutopilot(next)] })
}

/// Ops for `swarm init|update --layer-sharing`: none when it is in effect.
pub fn set_layer_sharing(state: &State, on: bool) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    Ok(if state.layer_sharing_off != on { Vec::new() } else { vec![Op::SetLayerSharing { on }] })
}

/// Ops for `swarm init|update --link-profile`: none when it is in effect.
pub fn set_link_profile(state: &State, profile: shoal_shared::types::LinkProfile) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    Ok(if state.link_profile == profile { Vec::new() } else { vec![Op::SetLinkProfile(profile)] })
}

/// Ops for `swarm update --autolock=ON` (and `swarm init --autolock`):
/// turning it on installs `new_key` as the unlock key in a new epoch;
/// turning it off drops the key; asking for the current setting changes
/// nothing. Returns the ops and the unlock key in effect afterwards.
pub fn set_autolock(state: &State, on: bool, new_key: [u8; 32]) -> Result<(Vec<Op>, Option<[u8; 32]>), ControlError> {
    in_swarm(state)?;
    let current = &state.autolock;
    match (on, current.key) {
        (true, Some(k)) => Ok((Vec::new(), Some(k))),
        (false, None) => Ok((Vec::new(), None)),
        (true, None) => Ok((vec![Op::SetAutolock(Autolock { key: Some(new_key), epoch: current.epoch + 1 })], Some(new_key))),
        (false, Some(_)) => Ok((vec![Op::SetAutolock(Autolock { key: None, epoch: current.epoch + 1 })], None)),
    }
}

/// Ops for `swarm unlock-key --rotate`: `new_key` replaces the unlock key.
pub fn rotate_unlock_key(state: &State, new_key: [u8; 32]) -> Result<Vec<Op>, ControlError> {
    in_swarm(state)?;
    if state.autolock.key.is_none() {
        return Err(ControlError::AutolockOff);
    }
    Ok(vec![Op::SetAutolock(Autolock { key: Some(new_key), epoch: state.autolock.epoch + 1 })])
}

/// The unlock key for `swarm unlock-key`.
pub fn unlock_key(state: &State) -> Result<[u8; 32], ControlError> {
    in_swarm(state)?;
    state.autolock.key.ok_or(ControlError::NoUnlockKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::ops::Entry;
    use shoal_shared::types::{Cluster, PortConfig};

    /// A swarm as `swarm init` leaves it: the cluster and the `ingress` network.
    fn swarm() -> State {
        let mut s = State::default();
        let ingress = Op::PutNetwork(ingress_network(&NetworkDefaults::default(), "ingressid".into()));
        s.apply(1, &Entry { at: 1, ops: vec![Op::PutCluster(Cluster { id: "c".into(), ..Default::default() }), ingress] });
        s
    }

    fn net_spec(name: &str, subnet: Option<&str>, gateway: Option<&str>, range: Option<&str>) -> NetworkSpec {
        let mut spec = NetworkSpec { name: name.into(), driver: "overlay".into(), ..Default::default() };
        spec.ipam.subnet = subnet.map(|s| Ipv4Net::parse(s).unwrap());
        spec.ipam.gateway = gateway.map(|g| g.parse().unwrap());
        spec.ipam.ip_range = range.map(|s| Ipv4Net::parse(s).unwrap());
        spec
    }

    /// Applies ops at the next index, asserting none was skipped.
    fn commit(s: &mut State, ops: Vec<Op>) {
        let r = s.apply(s.applied_index + 1, &Entry { at: 9, ops });
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    }

    #[test]
    fn ensure_file_creates_keeps_same_data_and_refuses_other_data() {
        let mut s = swarm();
        let spec = |data: &[u8]| FileSpec { name: "app_db".into(), labels: Default::default(), data: data.to_vec() };
        let (ops, id, created) = ensure_file(&s, FileKind::Secret, spec(b"pw1"), "x1".into()).unwrap();
        assert_eq!((id.as_str(), created, ops.len()), ("x1", true, 1));
        commit(&mut s, ops);
        let (ops, id, created) = ensure_file(&s, FileKind::Secret, spec(b"pw1"), "x2".into()).unwrap();
        assert_eq!((id.as_str(), created, ops.len()), ("x1", false, 0));
        let e = ensure_file(&s, FileKind::Secret, spec(b"pw2"), "x3".into()).unwrap_err();
        assert!(e.to_string().starts_with("secret app_db exists with other data, and secrets cannot change"), "{e}");
        // A config of that name is another object.
        let (_, id, created) = ensure_file(&s, FileKind::Config, spec(b"pw2"), "c1".into()).unwrap();
        assert_eq!((id.as_str(), created), ("c1", true));
        // create_file's checks still apply to a new one.
        assert!(ensure_file(
            &s,
            FileKind::Config,
            FileSpec { name: "bad name".into(), labels: Default::default(), data: b"x".to_vec() },
            "c2".into()
        )
        .is_err());
    }

    #[test]
    fn secrets_are_checked_named_once_and_not_removed_while_in_use() {
        let mut s = swarm();
        let spec = |name: &str, len: usize| FileSpec { name: name.into(), labels: Default::default(), data: vec![b'x'; len] };
        let ops = create_file(&s, FileKind::Secret, spec("db.pw", 10), "x1".into()).unwrap();
        commit(&mut s, ops);
        let e = create_file(&s, FileKind::Secret, spec("db.pw", 10), "x2".into()).unwrap_err();
        assert_eq!((e.to_string(), e.kind()), ("secret db.pw already exists".to_string(), ErrorKind::AlreadyExists));
        for bad in ["", "-a", "a-", "a b", "a/b", &"a".repeat(65)] {
            assert!(create_file(&s, FileKind::Secret, spec(bad, 1), "x3".into()).is_err(), "{bad:?}");
        }
        assert!(create_file(&s, FileKind::Config, spec("c", 0), "c1".into()).is_err(), "empty data");
        assert!(create_file(&s, FileKind::Secret, spec("c", 500 * 1024 + 1), "c1".into()).is_err());
        assert!(create_file(&s, FileKind::Config, spec("c", 1000 * 1024 + 1), "c1".into()).is_err());
        // A large one goes in parts, one entry each, the last in the object: applied in order, it is whole.
        let mut big = spec("c", 1000 * 1024);
        big.data = (0..big.data.len()).map(|i| (i % 251) as u8).collect();
        let ops = create_file(&s, FileKind::Config, big.clone(), "c1".into()).unwrap();
        assert_eq!(ops.len(), 1000 * 1024 / FILE_PART_BYTES + 1);
        assert!(ops.iter().all(|op| postcard::to_allocvec(op).unwrap().len() < FILE_PART_BYTES + 512));
        for op in ops {
            commit(&mut s, vec![op]);
        }
        assert_eq!(s.configs["c1"].spec.data, big.data);
        assert!(s.file_parts.is_empty());
        // In use by a service.
        let mut svc = crate::state::tests::service("s1", "web");
        svc.spec.task.container.secrets = vec![shoal_shared::types::FileReference {
            id: "x1".into(),
            name: "db.pw".into(),
            target: "db.pw".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        }];
        commit(&mut s, vec![Op::PutService(svc.clone())]);
        let e = remove_file(&s, FileKind::Secret, "db.pw").unwrap_err();
        assert_eq!(e.to_string(), "secret db.pw is in use by the following service: web");
        // References resolve by name, get their default target, and are checked.
        let mut spec = ServiceSpec::new("api", "busybox");
        let by_name = |name: &str, target: &str| shoal_shared::types::FileReference {
            id: String::new(),
            name: name.into(),
            target: target.into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        };
        spec.task.container.secrets = vec![by_name("db.pw", "")];
        resolve_files(&s, &mut spec).unwrap();
        assert_eq!((spec.task.container.secrets[0].id.as_str(), spec.task.container.secrets[0].target.as_str()), ("x1", "db.pw"));
        spec.task.container.secrets = vec![by_name("nope", "")];
        assert_eq!(resolve_files(&s, &mut spec).unwrap_err().to_string(), "no such secret: nope");
        spec.task.container.secrets = vec![by_name("db.pw", "a"), by_name("db.pw", "/run/secrets/a")];
        assert!(resolve_files(&s, &mut spec).unwrap_err().to_string().contains("duplicate secret target"));
        spec.task.container.secrets = vec![by_name("db.pw", "../etc/passwd")];
        assert!(resolve_files(&s, &mut spec).unwrap_err().to_string().contains("invalid secret target"));
        spec.task.container.secrets = vec![shoal_shared::types::FileReference { uid: "root".into(), ..by_name("db.pw", "") }];
        assert!(resolve_files(&s, &mut spec).unwrap_err().to_string().contains("invalid uid"));
        // A stale id (the secret was removed and made again) resolves by name.
        spec.task.container.secrets = vec![shoal_shared::types::FileReference { id: "gone".into(), ..by_name("db.pw", "") }];
        resolve_files(&s, &mut spec).unwrap();
        assert_eq!(spec.task.container.secrets[0].id, "x1");
        let (ops, name) = remove_file(&s, FileKind::Config, "c").unwrap();
        assert_eq!(name, "c");
        commit(&mut s, ops);
        assert_eq!(remove_file(&s, FileKind::Config, "c").unwrap_err().to_string(), "no such config: c");
    }

    #[test]
    fn network_create_allocates_and_refuses_with_swarmkits_words() {
        let mut s = swarm();
        let ingress = s.ingress_network().unwrap().clone();
        assert_eq!((ingress.subnet.to_string(), ingress.gateway.to_string(), ingress.vni), ("10.0.0.0/24".into(), "10.0.0.1".into(), 4096));
        let ops = create_network(&s, net_spec("auto", None, None, None), "n1".into()).unwrap();
        commit(&mut s, ops);
        let auto = &s.networks["n1"];
        assert_eq!((auto.subnet.to_string(), auto.gateway.to_string(), auto.vni), ("10.0.1.0/24".into(), "10.0.1.1".into(), 4097));
        let mut seed = net_spec("my-swarm-net", Some("10.15.0.0/16"), Some("10.15.0.2"), None);
        seed.options.insert("encrypted".into(), String::new());
        seed.options.insert(OPT_MTU.into(), "1400".into());
        seed.attachable = true;
        let ops = create_network(&s, seed, "n2".into()).unwrap();
        commit(&mut s, ops);
        let n = &s.networks["n2"];
        assert_eq!((n.gateway.to_string(), n.vni, n.spec.encrypted, n.spec.mtu), ("10.15.0.2".into(), 4098, true, 1400));
        let err = |spec: NetworkSpec| create_network(&s, spec, "x".into()).unwrap_err().to_string();
        assert_eq!(err(net_spec("auto", None, None, None)), "network with name auto already exists");
        assert_eq!(err(net_spec("host", None, None, None)), "network with name host already exists");
        assert_eq!(
            err(net_spec("b", Some("10.15.3.0/24"), None, None)),
            "invalid pool request: Pool overlaps with other one on this address space (10.15.3.0/24 overlaps 10.15.0.0/16)"
        );
        assert_eq!(
            err(net_spec("b", Some("10.20.0.0/24"), Some("10.21.0.1"), None)),
            "ipam configuration: subnet 10.20.0.0/24 does not contain gateway 10.21.0.1"
        );
        assert_eq!(
            err(net_spec("b", Some("10.20.0.0/24"), None, Some("10.21.0.0/28"))),
            "ipam configuration: subnet 10.20.0.0/24 does not contain range 10.21.0.0/28"
        );
        assert_eq!(
            err(net_spec("b", Some("10.20.0.1/24"), None, None)),
            "ipam configuration: invalid subnet 10.20.0.1/24: host bits are set, use 10.20.0.0/24"
        );
        assert_eq!(
            err(net_spec("b", None, Some("10.20.0.1"), None)),
            "ipam configuration: a gateway or an ip range needs a subnet: add --subnet"
        );
        assert_eq!(
            err(net_spec("bad name", None, None, None)),
            "invalid network name \"bad name\": use letters, digits, '_', '.' and '-', starting with a letter or digit"
        );
        let mut bridge = net_spec("b", None, None, None);
        bridge.driver = "bridge".into();
        assert_eq!(
            err(bridge),
            "driver \"bridge\" is not supported for swarm networks: shoal networks use the overlay driver (-d overlay)"
        );
        let mut mtu = net_spec("b", None, None, None);
        mtu.options.insert(OPT_MTU.into(), "9".into());
        assert!(err(mtu).starts_with("invalid value \"9\" for option com.docker.network.driver.mtu"));
        let mut second = net_spec("ing2", None, None, None);
        second.ingress = true;
        assert_eq!(err(second), "ingress network (ingressid) is already present");
        assert_eq!(create_network(&State::default(), net_spec("x", None, None, None), "x".into()), Err(ControlError::NotInSwarm));
    }

    #[test]
    fn services_resolve_networks_and_unknown_ones_are_refused() {
        let mut s = swarm();
        let ops = create_network(&s, net_spec("my-swarm-net", Some("10.15.0.0/16"), None, None), "netid".into()).unwrap();
        commit(&mut s, ops);
        let with_nets = |nets: &[&str]| {
            let mut spec = ServiceSpec::new("web", "busybox");
            spec.task.networks =
                nets.iter().map(|n| shoal_shared::types::NetworkAttachmentConfig { target: n.to_string(), aliases: vec![] }).collect();
            spec
        };
        let e = create_service(&s, with_nets(&["nope"]), "i".into()).unwrap_err();
        assert_eq!((e.to_string(), e.kind()), ("No such network: nope".to_string(), ErrorKind::NotFound));
        assert!(create_service(&s, with_nets(&["host", "my-swarm-net"]), "i".into())
            .unwrap_err()
            .to_string()
            .contains("cannot be combined"));
        assert!(create_service(&s, with_nets(&["none", "host"]), "i".into()).is_err());
        assert_eq!(
            create_service(&s, with_nets(&["ingress"]), "i".into()).unwrap_err().to_string(),
            "service cannot be explicitly attached to the ingress network \"ingress\": publish ports with --publish instead"
        );
        assert!(create_service(&s, with_nets(&["my-swarm-net", "netid"]), "i".into()).unwrap_err().to_string().contains("given twice"));
        assert!(create_service(&s, with_nets(&["host"]), "i".into()).is_ok());
        let ops = create_service(&s, with_nets(&["my-swarm-net"]), "i".into()).unwrap();
        let [Op::PutService(svc)] = &ops[..] else { panic!("{ops:?}") };
        assert_eq!(svc.spec.task.networks[0].target, "netid", "names become ids");
        commit(&mut s, ops);
        // Updates resolve and refuse the same way.
        let mut spec = s.find_service("web").unwrap().spec.clone();
        spec.task.networks.push(shoal_shared::types::NetworkAttachmentConfig { target: "other".into(), aliases: vec![] });
        assert_eq!(update_service(&s, "web", spec, 5).unwrap_err().to_string(), "No such network: other");
        // Removal: predefined, in use, unknown; then free.
        assert_eq!(remove_network(&s, "host").unwrap_err().to_string(), "host is a pre-defined network and cannot be removed");
        assert_eq!(remove_network(&s, "none").unwrap_err().to_string(), "none is a pre-defined network and cannot be removed");
        assert_eq!(remove_network(&s, "my-swarm-net").unwrap_err().to_string(), "network netid is in use by service i");
        assert_eq!(remove_network(&s, "nope").unwrap_err().to_string(), "No such network: nope");
        let (ops, name) = remove_service(&s, "web").unwrap();
        assert_eq!(name, "web");
        commit(&mut s, ops);
        assert_eq!(
            remove_network(&s, "my-swarm-net").unwrap(),
            (vec![Op::DeleteNetwork { id: "netid".into() }], "my-swarm-net".to_string())
        );
    }

    #[test]
    fn published_ports_are_unique_swarm_wide() {
        let mut s = swarm();
        let port = |mode: &str, published_port: u32, target_port: u32| PortConfig {
            protocol: "tcp".into(),
            target_port,
            published_port,
            publish_mode: mode.into(),
        };
        let mut web = ServiceSpec::new("web", "busybox");
        web.ports = vec![port("ingress", 8080, 80)];
        let ops = create_service(&s, web, "webid".into()).unwrap();
        commit(&mut s, ops);
        let mut api = ServiceSpec::new("api", "busybox");
        api.ports = vec![port("ingress", 8080, 81)];
        assert_eq!(
            create_service(&s, api.clone(), "apiid".into()).unwrap_err().to_string(),
            "port '8080' is already in use by service 'web' (webid) as an ingress port"
        );
        api.ports = vec![port("host", 8080, 81)];
        assert_eq!(
            create_service(&s, api.clone(), "apiid".into()).unwrap_err().to_string(),
            "port '8080' is already in use by service 'web' (webid) as an ingress port"
        );
        // The service itself may keep its port on update.
        let spec = s.find_service("web").unwrap().spec.clone();
        assert!(update_service(&s, "web", spec, 3).is_ok());
        let mut dnsrr = ServiceSpec::new("dns", "busybox");
        dnsrr.endpoint_mode = EndpointMode::Dnsrr;
        dnsrr.ports = vec![port("ingress", 9000, 80)];
        assert_eq!(
            create_service(&s, dnsrr.clone(), "d".into()).unwrap_err().to_string(),
            "EndpointSpec: port published with ingress mode can't be used with dnsrr mode"
        );
        dnsrr.ports = vec![port("host", 9000, 80)];
        assert!(create_service(&s, dnsrr, "d".into()).is_ok(), "host-mode ports are fine with dnsrr");
        // Without an ingress network, ingress ports are refused (swarmkit's words).
        let (ops, _) = remove_service(&s, "web").unwrap();
        commit(&mut s, ops);
        let (ops, _) = remove_network(&s, "ingress").unwrap();
        commit(&mut s, ops);
        let mut web = ServiceSpec::new("web", "busybox");
        web.ports = vec![port("ingress", 8080, 80)];
        assert_eq!(create_service(&s, web, "w".into()), Err(ControlError::NoIngress));
    }

    #[test]
    fn ingress_cannot_go_while_ports_are_published_and_defaults_are_checked() {
        let mut s = swarm();
        let mut web = ServiceSpec::new("web", "busybox");
        web.ports = vec![PortConfig { protocol: "tcp".into(), target_port: 80, published_port: 0, publish_mode: "ingress".into() }];
        let ops = create_service(&s, web, "webid".into()).unwrap();
        commit(&mut s, ops);
        assert_eq!(
            remove_network(&s, "ingress").unwrap_err().to_string(),
            "ingress network cannot be removed because service webid depends on it"
        );
        let mut d = NetworkDefaults::default();
        assert!(check_network_defaults(&d).is_ok());
        d.data_path_port = 80;
        assert_eq!(
            check_network_defaults(&d).unwrap_err().to_string(),
            "data path port 80 is out of range: it must be within range 1024 to 49151"
        );
        let d = NetworkDefaults { subnet_size: 4, ..Default::default() };
        assert!(check_network_defaults(&d).unwrap_err().to_string().starts_with("invalid default address pool mask length 4"));
        let d =
            NetworkDefaults { default_addr_pools: vec![Ipv4Net::parse("10.20.0.0/16").unwrap()], subnet_size: 26, ..Default::default() };
        assert_eq!(ingress_network(&d, "i".into()).subnet.to_string(), "10.20.0.0/26");
    }

    #[test]
    fn swarm_settings_are_validated() {
        assert_eq!(update_swarm(&State::default(), Some(5_000), None), Err(ControlError::NotInSwarm));
        let s = swarm();
        let ops = update_swarm(&s, Some(30_000), None).unwrap();
        assert_eq!(ops, vec![Op::SetSwarmSettings(shoal_shared::types::SwarmSettings { dispatcher_heartbeat_ms: 30_000 })]);
        assert!(update_swarm(&s, None, None).unwrap().is_empty(), "nothing to change, nothing proposed");
        assert!(update_swarm(&s, Some(s.settings.dispatcher_heartbeat_ms), None).unwrap().is_empty());
        for bad in [0, 99, shoal_shared::types::DISPATCHER_HEARTBEAT_MS_MAX + 1] {
            let e = update_swarm(&s, Some(bad), None).unwrap_err();
            assert!(e.to_string().contains("--dispatcher-heartbeat"), "{e}");
        }
    }

    #[test]
    fn node_lost_after_is_validated_against_the_heartbeat() {
        use shoal_shared::types::NODE_LOST_AFTER_MS_MAX;
        assert_eq!(update_swarm(&State::default(), None, Some(60_000)), Err(ControlError::NotInSwarm));
        let mut s = swarm();
        let hb = s.settings.dispatcher_heartbeat_ms;
        assert_eq!(update_swarm(&s, None, Some(600_000)).unwrap(), vec![Op::SetNodeLostAfter { ms: 600_000 }]);
        assert_eq!(update_swarm(&s, None, Some(hb)).unwrap(), vec![Op::SetNodeLostAfter { ms: hb }], "the heartbeat itself is fine");
        assert!(update_swarm(&s, None, Some(0)).unwrap().is_empty(), "already off");
        for bad in [1, hb - 1, NODE_LOST_AFTER_MS_MAX + 1] {
            let e = update_swarm(&s, None, Some(bad)).unwrap_err();
            assert!(e.to_string().starts_with("invalid --node-lost-after"), "{e}");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
        // Both in one request: checked against the new heartbeat, proposed together.
        let ops = update_swarm(&s, Some(5_000), Some(10_000)).unwrap();
        assert_eq!(ops.len(), 2);
        assert!(update_swarm(&s, Some(20_000), Some(10_000)).unwrap_err().to_string().contains("at least the dispatcher heartbeat"));
        // A heartbeat raised past the setting in force is refused, naming it.
        s.node_lost_after_ms = 10_000;
        let e = update_swarm(&s, Some(20_000), None).unwrap_err().to_string();
        assert!(e.contains("exceeds the swarm's --node-lost-after of 10000 ms"), "{e}");
        assert_eq!(update_swarm(&s, None, Some(0)).unwrap(), vec![Op::SetNodeLostAfter { ms: 0 }], "turned off");
        assert!(update_swarm(&s, Some(10_000), None).unwrap().len() == 1, "a heartbeat equal to it is fine");
    }

    #[test]
    fn refuses_bad_input_without_ops() {
        let s = swarm();
        assert_eq!(create_service(&State::default(), ServiceSpec::new("web", "busybox"), "i".into()), Err(ControlError::NotInSwarm));
        assert!(matches!(create_service(&s, ServiceSpec::new("bad.name", "busybox"), "i".into()), Err(ControlError::BadName(_))));
        assert!(matches!(create_service(&s, ServiceSpec::new("x_", "busybox"), "i".into()), Err(ControlError::BadName(_))));
        assert!(create_service(&s, ServiceSpec::new("app_web", "busybox"), "i".into()).is_ok());
        assert!(matches!(create_service(&s, ServiceSpec::new("-x", "busybox"), "i".into()), Err(ControlError::BadName(_))));
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.task.placement.constraints = vec!["node.role=manager".into()];
        assert!(matches!(create_service(&s, spec, "i".into()), Err(ControlError::Invalid(_))));
        assert_eq!(scale_service(&s, "nope", 3), Err(ControlError::NoSuchService("nope".into())));
    }

    /// A healthcheck is taken when well formed and refused with its reason
    /// (at create and update) otherwise.
    #[test]
    fn healthchecks_are_validated() {
        use shoal_shared::types::HealthConfig;
        let mut s = swarm();
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.task.container.healthcheck =
            Some(HealthConfig { test: vec!["CMD-SHELL".into(), "exit 0".into()], interval_ns: 1_000_000_000, ..Default::default() });
        let ops = create_service(&s, spec, "i".into()).unwrap();
        s.apply(2, &Entry { at: 2, ops });
        let mut spec = s.find_service("web").unwrap().spec.clone();
        spec.task.container.healthcheck = Some(HealthConfig { test: vec!["CMD".into()], ..Default::default() });
        let why = "invalid healthcheck test [\"CMD\"]: use [\"CMD\", ARG...], [\"CMD-SHELL\", COMMAND] or [\"NONE\"]";
        assert_eq!(update_service(&s, "web", spec.clone(), 3), Err(ControlError::Invalid(why.into())));
        spec.name = "api".into();
        spec.task.container.healthcheck = Some(HealthConfig { interval_ns: 5, ..Default::default() });
        assert!(matches!(create_service(&s, spec, "j".into()), Err(ControlError::Invalid(m)) if m.contains("below the minimum of 1ms")));
    }

    /// An unparsable constraint is refused at create and at update, with the parser's text,
    /// and nothing is proposed: the scheduler never sees it.
    #[test]
    fn unparsable_constraints_are_refused_at_create_and_update() {
        let mut s = swarm();
        let ops = create_service(&s, ServiceSpec::new("web", "busybox"), "i".into()).unwrap();
        s.apply(2, &Entry { at: 2, ops });
        let why = "invalid constraint \"node.role=manager\": expected KEY==VALUE or KEY!=VALUE";
        for bad in [vec!["node.role=manager".to_string()], vec!["node.role==worker".to_string(), "node.role=manager".to_string()]] {
            let mut spec = ServiceSpec::new("api", "busybox");
            spec.task.placement.constraints = bad.clone();
            assert_eq!(create_service(&s, spec, "j".into()), Err(ControlError::Invalid(why.into())));
            let mut spec = s.find_service("web").unwrap().spec.clone();
            spec.task.placement.constraints = bad;
            assert_eq!(update_service(&s, "web", spec, 3), Err(ControlError::Invalid(why.into())));
        }
        assert_eq!(s.services.len(), 1);
        assert!(s.find_service("web").unwrap().spec.task.placement.constraints.is_empty());
    }

    #[test]
    fn volume_names_never_leave_the_volumes_dir() {
        use shoal_shared::types::{Mount, MountKind};
        let spec = |kind, source: &str, target: &str| {
            let mut s = ServiceSpec::new("web", "busybox");
            s.task.container.mounts = vec![Mount { kind, source: source.into(), target: target.into(), read_only: false }];
            validate_spec(&s).map_err(|e| e.to_string())
        };
        assert_eq!(spec(MountKind::Volume, "data-1.v_2", "/d"), Ok(()));
        assert_eq!(spec(MountKind::Bind, "/srv", "/d"), Ok(()));
        for bad in ["../../etc", "a/b", ".hidden", "", "x\0y"] {
            let e = spec(MountKind::Volume, bad, "/d").unwrap_err();
            assert!(e.contains("invalid volume name"), "{bad:?}: {e}");
        }
        assert!(spec(MountKind::Bind, "srv", "/d").unwrap_err().contains("mount path must be absolute"));
        assert!(spec(MountKind::Volume, "v", "d").unwrap_err().contains("must be an absolute path"));
    }

    #[test]
    fn validates_preferences_and_ports() {
        let port = |mode: &str, protocol: &str, published_port: u32, target_port: u32| PortConfig {
            protocol: protocol.into(),
            target_port,
            published_port,
            publish_mode: mode.into(),
        };
        let cases: Vec<(&str, Vec<&str>, Vec<PortConfig>, &str)> = vec![
            ("none", vec![], vec![], ""),
            ("label spread", vec!["node.labels.zone", "engine.labels.disk"], vec![], ""),
            ("attribute spread", vec!["node.platform.arch"], vec![], ""),
            ("bad descriptor", vec!["zone"], vec![], "invalid spread descriptor \"zone\": use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"),
            ("empty label", vec!["node.labels."], vec![], "invalid spread descriptor \"node.labels.\": use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"),
            ("host port", vec![], vec![port("host", "tcp", 8080, 80), port("host", "udp", 8080, 80)], ""),
            ("ingress port, old upper case", vec![], vec![port("ingress", "TCP", 8080, 80), port("ingress", "tcp", 0, 81)], ""),
            ("host without published", vec![], vec![port("host", "tcp", 0, 80)], "host-mode port 80/tcp needs a published port: shoal does not pick one; use mode=host,published=PORT,target=80"),
            ("duplicate", vec![], vec![port("host", "tcp", 8080, 80), port("ingress", "tcp", 8080, 81)], "duplicate published port 8080/tcp: each published port and protocol may appear once"),
            ("protocol", vec![], vec![port("host", "icmp", 8080, 80)], "invalid protocol \"icmp\" for port 80: use tcp, udp or sctp"),
            ("mode", vec![], vec![port("bridge", "tcp", 8080, 80)], "invalid publish mode \"bridge\": use ingress or host"),
            ("range", vec![], vec![port("host", "tcp", 70000, 80)], "invalid port 70000:80: ports are 1-65535 (published 0 means none)"),
            ("no target", vec![], vec![port("ingress", "tcp", 8080, 0)], "invalid port 8080:0: ports are 1-65535 (published 0 means none)"),
        ];
        let s = swarm();
        for (case, prefs, ports, expect) in cases {
            let mut spec = ServiceSpec::new("web", "busybox");
            spec.task.placement.preferences = prefs.into_iter().map(String::from).collect();
            spec.ports = ports;
            let got = create_service(&s, spec, "i".into()).map(|_| ()).map_err(|e| e.to_string());
            let want = if expect.is_empty() { Ok(()) } else { Err(expect.to_string()) };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn duplicate_names_and_global_scale() {
        let mut s = swarm();
        let ops = create_service(&s, ServiceSpec::new("web", "busybox"), "id1".into()).unwrap();
        s.apply(2, &Entry { at: 2, ops });
        assert_eq!(create_service(&s, ServiceSpec::new("web", "busybox"), "id2".into()), Err(ControlError::NameInUse("web".into())));
        let mut g = ServiceSpec::new("agent", "busybox");
        g.mode = ServiceMode::Global;
        let ops = create_service(&s, g, "id3".into()).unwrap();
        s.apply(3, &Entry { at: 3, ops });
        assert_eq!(scale_service(&s, "agent", 2), Err(ControlError::ScaleGlobal("agent".into())));
        let ops = scale_service(&s, "web", 4).unwrap();
        s.apply(4, &Entry { at: 4, ops });
        assert_eq!(s.find_service("web").unwrap().spec.mode, ServiceMode::Replicated { replicas: 4 });
    }
}

#[cfg(test)]
mod membership_tests {
    use super::*;
    use crate::state::tests::node;
    use shoal_shared::ops::Entry;
    use shoal_shared::types::{Cluster, Node};

    fn swarm_of(nodes: Vec<Node>) -> State {
        let mut ops = vec![Op::PutCluster(Cluster { id: "c".into(), ..Default::default() })];
        ops.extend(nodes.into_iter().map(Op::PutNode));
        let mut s = State::default();
        s.apply(1, &Entry { at: 1, ops });
        s
    }

    fn manager(id: &str) -> Node {
        let mut n = node(id, "linux/amd64");
        n.role = NodeRole::Manager;
        n
    }

    fn all_vote(_: &str) -> bool {
        true
    }

    #[test]
    fn the_last_voter_is_not_demoted_while_a_promoted_manager_catches_up() {
        let two = swarm_of(vec![manager("m1"), manager("m2")]);
        let only_m1 = |n: &str| n == "m1";
        assert_eq!(set_node_role(&two, "m1", "m1", NodeRole::Worker, only_m1, all_vote), Err(ControlError::LastVoter("m1".into())));
        assert!(set_node_role(&two, "m1", "m2", NodeRole::Worker, only_m1, all_vote).is_ok(), "the learner may be demoted");
        assert!(set_node_role(&two, "m1", "m1", NodeRole::Worker, all_vote, all_vote).is_ok(), "once m2 votes, m1 may go");
        // A voter already demoted (still in raft until the leader removes it) does not count:
        // demoting both voters of m1, m2, m3 (m3 a learner) would leave no leader at all.
        let mut three = swarm_of(vec![manager("m1"), node("m2", "linux/amd64"), manager("m3")]);
        three.nodes.get_mut("m2").expect("m2").role = NodeRole::Worker;
        let m1_m2 = |n: &str| n == "m1" || n == "m2";
        assert_eq!(set_node_role(&three, "m1", "m1", NodeRole::Worker, m1_m2, all_vote), Err(ControlError::LastVoter("m1".into())));
    }

    #[test]
    fn autopilot_settings_are_checked_and_replace_only_what_is_given() {
        let s = swarm_of(vec![manager("m1")]);
        let ops = update_autopilot(&s, Some(3), None, Some("site".into())).unwrap();
        let [Op::SetAutopilot(a)] = &ops[..] else { panic!("{ops:?}") };
        assert_eq!((a.managers, a.manager_lost_after_ms, a.spread_label.as_str(), a.flaps_per_hour_max), (3, 300_000, "site", 3));
        let mut on = s.clone();
        on.apply(9, &shoal_shared::ops::Entry { at: 9, ops: ops.clone() });
        assert_eq!(update_autopilot(&on, Some(3), None, None).unwrap(), vec![], "in effect already");
        let ops = update_autopilot(&on, None, Some(60_000), None).unwrap();
        assert!(
            matches!(&ops[..], [Op::SetAutopilot(b)] if b.managers == 3 && b.manager_lost_after_ms == 60_000 && b.spread_label == "site")
        );
        let ops = update_autopilot(&on, Some(0), None, Some(String::new())).unwrap();
        assert!(matches!(&ops[..], [Op::SetAutopilot(b)] if b.managers == 0 && b.spread_label.is_empty()), "turned off");
        for bad in [2, 8, 9] {
            let e = update_autopilot(&s, Some(bad), None, None).unwrap_err();
            assert_eq!(e.to_string(), format!("--managers must be odd and between 1 and 7 (got {bad}), or 0 to turn the autopilot off"));
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
        let e = update_autopilot(&s, Some(3), Some(10), None).unwrap_err();
        assert!(e.to_string().starts_with("--manager-lost-after must be between 1s and 7 days"), "{e}");
        let e = update_autopilot(&s, Some(3), None, Some("node.labels.".into())).unwrap_err();
        assert!(e.to_string().contains("needs a label name"), "{e}");
    }

    #[test]
    fn a_demotion_that_would_leave_the_reachable_managers_short_of_a_quorum_is_refused() {
        let three = swarm_of(vec![manager("m1"), manager("m2"), manager("m3")]);
        let m3_down = |n: &str| n != "m3";
        // m1 leads, m3 is unreachable: demoting m2 leaves m1 alone of m1, m3.
        let e = set_node_role(&three, "m1", "m2", NodeRole::Worker, all_vote, m3_down).unwrap_err();
        assert_eq!(e, ControlError::LossOfQuorum("1 of the 2 managers left would be reachable".into()));
        assert!(e.to_string().starts_with("can't remove member from the raft: this would result in a loss of quorum"), "{e}");
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        // Demoting the unreachable one is what the operator should do, and is allowed.
        assert!(set_node_role(&three, "m1", "m3", NodeRole::Worker, all_vote, m3_down).is_ok());
        // Everyone reachable: any one may go.
        assert!(set_node_role(&three, "m1", "m2", NodeRole::Worker, all_vote, all_vote).is_ok());
    }

    #[test]
    fn promote_and_demote_follow_swarm_rules() {
        let s = swarm_of(vec![manager("m1"), node("w1", "linux/amd64")]);
        let ops = set_node_role(&s, "m1", "w1", NodeRole::Manager, all_vote, all_vote).unwrap();
        let [Op::PutNode(n)] = &ops[..] else { panic!("one PutNode: {ops:?}") };
        assert_eq!((n.role, n.manager_addr.as_str()), (NodeRole::Manager, n.addr.as_str()));
        assert_eq!(set_node_role(&s, "m1", "m1", NodeRole::Manager, all_vote, all_vote).unwrap(), vec![], "promoting a manager is a no-op");
        assert_eq!(set_node_role(&s, "m1", "self", NodeRole::Worker, all_vote, all_vote), Err(ControlError::LastManager));
        assert_eq!(ControlError::LastManager.to_string(), "attempting to demote the last manager of the swarm");
        let two = swarm_of(vec![manager("m1"), manager("m2")]);
        let ops = set_node_role(&two, "m1", "m2", NodeRole::Worker, all_vote, all_vote).unwrap();
        let [Op::PutNode(n)] = &ops[..] else { panic!("one PutNode") };
        assert_eq!((n.role, n.manager_addr.as_str()), (NodeRole::Worker, ""));
        assert_eq!(set_node_role(&s, "m1", "nope", NodeRole::Worker, all_vote, all_vote), Err(ControlError::NoSuchNode("nope".into())));
    }

    #[test]
    fn node_rm_refuses_managers_and_live_nodes() {
        let mut down = node("w2", "linux/amd64");
        down.state = NodeState::Down;
        let s = swarm_of(vec![manager("m1"), node("w1", "linux/amd64"), down]);
        let none = |_: &str| false;
        assert_eq!(
            remove_node(&s, "m1", "m1", true, none).unwrap_err().to_string(),
            "node m1 is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        );
        assert_eq!(remove_node(&s, "m1", "w1", false, none).unwrap_err().to_string(), "node w1 is not down and can't be removed");
        assert_eq!(remove_node(&s, "m1", "w1", true, none).unwrap(), (vec![Op::DeleteNode { id: "w1".into() }], "w1".to_string()));
        assert_eq!(remove_node(&s, "m1", "w2", false, none).unwrap().1, "w2");
        // Demoted (a worker in the state) but not yet out of raft: still refused.
        assert_eq!(
            remove_node(&s, "m1", "w1", true, |n| n == "w1").unwrap_err().to_string(),
            "node w1 is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        );
    }
}
