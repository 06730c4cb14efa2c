//! The replicated state machine: services, tasks, nodes and the cluster.
//!
//! [`State::apply`] is a pure function of `(state, index, entry)`: it reads no
//! clock or rng (timestamps come stamped in the [`Entry`]). Each op is applied
//! atomically: an op that is invalid against the current state (unknown id,
//! a task state moving backwards, a duplicate name) is skipped, leaves the
//! state untouched, and is reported in [`Applied::rejected`] so that every
//! replica skips exactly the same ops.
//!
//! Invariants (checked by tests and by `debug_check`):
//! - service names are unique; network names, VNIs and subnets are unique
//!   (subnets never overlap) and there is at most one ingress network;
//! - an address on a network has at most one holder among the gateway,
//!   service VIPs, live (non-terminal) tasks and node attachments, and an
//!   ingress port/protocol at most one service: an allocation op that would
//!   break this is skipped, so a stale allocation (two writers racing) never
//!   lands;
//! - a task's `status.state` and `desired_state` only move forward;
//! - every object's `meta.version` is the index of the entry that last changed it.

use serde::{Deserialize, Serialize};
use shoal_shared::assignments::{TUNNEL_NETWORK_ID, TUNNEL_SUBNET};
use shoal_shared::ops::{Entry, Op};
use shoal_shared::task::TaskState;
use shoal_shared::types::{
    Autolock, AutopilotSettings, Cluster, FileKind, InPlaceRestarts, LinkProfile, Network, NetworkAttachment, Node, RegistryAuth, Service,
    ServiceSpec, StoredFile, SwarmSettings, Task, UpdateStatus, PORT_AUTO_MAX, PORT_AUTO_MIN,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Version of the snapshot encoding: `[SNAPSHOT_VERSION] ++ postcard(State)`.
/// Version 1 lacked `settings` (it restores with the defaults); version 2
/// held the records before networks (`shoal_shared::legacy`); version 3
/// the nodes before plugins; version 4 had no `autolock`, version 5 no
/// `node_lost_after_ms`, version 6 no `link_profile`, version 7 no
/// `restarts_in_place`, version 8 no `autopilot`, version 9 no
/// `registry_auths`, version 10 no `layer_sharing_off`, version 11 no
/// `secrets` and `configs` and its services and tasks had containers before
/// secrets (`shoal_shared::legacy::ServiceV3`, `TaskV3`), version 12 no
/// `file_parts`; postcard structs are positional, so a new field means a
/// new version here.
const SNAPSHOT_VERSION: u8 = 13;

/// Secrets and configs being written in parts at once at most (a new one
/// beyond it drops the one started longest ago: a leader that failed
/// half-way leaves its parts behind).
pub const FILE_PARTS_PENDING_MAX: usize = 4;

/// The whole replicated state, materialised in memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Swarm-wide settings (`swarm init`/`swarm update`).
    pub settings: SwarmSettings,
    /// Swarm-scoped networks, by id.
    pub networks: BTreeMap<String, Network>,
    /// Next-fit cursor of automatically published ports: the last one an
    /// allocation op handed out.
    pub last_port: u32,
    /// Autolock and the unlock key (sealed at rest with the rest of the state).
    pub autolock: Autolock,
    /// `--node-lost-after` (0: off): how long a silent node is
    /// `Disconnected`, keeping its tasks, before it is Down.
    pub node_lost_after_ms: u64,
    /// `--link-profile`: raft and link timings.
    pub link_profile: LinkProfile,
    /// Restarts workers made of tasks in place while no manager was in
    /// reach, by task id (`Op::SetRestartsInPlace`; gone with the task).
    pub restarts_in_place: BTreeMap<String, InPlaceRestarts>,
    /// The autopilot's settings (`managers == 0`: off).
    pub autopilot: AutopilotSettings,
    /// Registry credentials of services created or updated with
    /// `--with-registry-auth`, by service id (`Op::SetRegistryAuth`; gone
    /// with the service). Never shown by any command.
    pub registry_auths: BTreeMap<String, RegistryAuth>,
    /// `--layer-sharing=false`: managers do not serve image blobs to the
    /// swarm's nodes (each pulls from its registry). Off by default.
    pub layer_sharing_off: bool,
    /// Secrets (`secret create`), by id. Their data is sealed at rest with
    /// the rest of the state and reaches only the nodes whose tasks use them.
    pub secrets: BTreeMap<String, StoredFile>,
    /// Configs (`config create`), by id.
    pub configs: BTreeMap<String, StoredFile>,
    /// Data of secrets and configs being written in parts
    /// (`Op::PutFilePart`), by kind and id, with the index of the entry
    /// that started it; completed (and dropped from here) by their
    /// `PutSecret` / `PutConfig`.
    pub file_parts: BTreeMap<(FileKind, String), (u64, Vec<u8>)>,
}

/// Why an op was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no such {kind} {id}")]
    Missing { kind: &'static str, id: String },
    #[error("service name {0} is already in use")]
    NameInUse(String),
    #[error("{kind} {id} already exists")]
    Exists { kind: &'static str, id: String },
    #[error("task {id}: {source}")]
    Backwards { id: String, source: shoal_shared::task::Backwards },
    #[error("network {0}: its name, VNI or subnet is taken, or a second ingress network")]
    NetworkTaken(String),
    #[error("address {addr} on network {network} is held by {holder}")]
    AddressHeld { network: String, addr: Ipv4Addr, holder: String },
    #[error("address {addr} is not on network {network} (or the network does not exist)")]
    AddressOutside { network: String, addr: Ipv4Addr },
    #[error("ingress port {port}/{protocol} is held by service {holder}")]
    PortHeld { port: u32, protocol: String, holder: String },
    #[error("autolock change of epoch {epoch} is not newer than epoch {current}")]
    StaleAutolock { epoch: u64, current: u64 },
    #[error("{kind} {name} is in use by service {service}")]
    InUse { kind: &'static str, name: String, service: String },
    #[error("{kind} name {name} is already in use")]
    FileNameInUse { kind: &'static str, name: String },
    #[error("{kind} {id}: a part at offset {offset} does not follow the {held} bytes held, or the data is over the limit")]
    FilePart { kind: &'static str, id: String, offset: u64, held: u64 },
}

/// The outcome of applying one entry.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// `(op position, reason)` of skipped ops.
    pub rejected: Vec<(usize, ApplyError)>,
}

#[cfg(feature = "legacy")]
mod legacy;

/// Errors restoring a snapshot.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot version {0} is not supported")]
    Version(u8),
    /// An older version this build does not read (the `legacy` feature is
    /// off: mips64le binaries, to fit 5 MiB).
    #[error("snapshot version {0} is from an earlier Shoal and this build does not read it (the mips64le and s390x binaries leave old formats out to stay under 5 MiB): open the data dir once with a build for another architecture, or start this node afresh")]
    Legacy(u8),
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
}

impl State {
    /// Applies a committed entry at `index`.
    pub fn apply(&mut self, index: u64, entry: &Entry) -> Applied {
        assert!(index > self.applied_index, "entries apply in order: {index} after {}", self.applied_index);
        let mut applied = Applied::default();
        for (pos, op) in entry.ops.iter().enumerate() {
            if let Err(e) = self.apply_op(index, entry.at, op) {
                applied.rejected.push((pos, e));
            }
        }
        self.applied_index = index;
        applied
    }

    fn apply_op(&mut self, index: u64, at: u64, op: &Op) -> Result<(), ApplyError> {
        match op {
            Op::PutCluster(c) => {
                let mut c = c.clone();
                c.meta.version = index;
                self.cluster = Some(c);
            }
            Op::PutNode(n) => {
                let mut n = n.clone();
                n.meta.version = index;
                n.meta.updated_at = at;
                if let Some(old) = self.nodes.get(&n.id) {
                    n.meta.created_at = old.meta.created_at;
                } else {
                    n.meta.created_at = at;
                }
                self.nodes.insert(n.id.clone(), n);
            }
            Op::DeleteNode { id } => {
                self.nodes.remove(id).ok_or_else(|| missing("node", id))?;
            }
            Op::SetNodeState { id, state } => {
                let n = self.nodes.get_mut(id).ok_or_else(|| missing("node", id))?;
                n.state = *state;
                touch(&mut n.meta, index, at);
            }
            Op::SetNodeAvailability { id, availability } => {
                let n = self.nodes.get_mut(id).ok_or_else(|| missing("node", id))?;
                n.availability = *availability;
                touch(&mut n.meta, index, at);
            }
            Op::PutService(s) => {
                if let Some(other) = self.services.values().find(|o| o.spec.name == s.spec.name && o.id != s.id) {
                    return Err(ApplyError::NameInUse(other.spec.name.clone()));
                }
                // A secret or config removed while this spec was written: the service would start nothing.
                let c = &s.spec.task.container;
                if let Some(r) = c.secrets.iter().find(|r| !self.secrets.contains_key(&r.id)) {
                    return Err(missing("secret", &r.id));
                }
                if let Some(r) = c.configs.iter().find(|r| !self.configs.contains_key(&r.id)) {
                    return Err(missing("config", &r.id));
                }
                let mut s = s.clone();
                match self.services.get(&s.id) {
                    // The endpoint changes only through `SetServiceEndpoint` (the allocator's).
                    Some(old) => {
                        s.meta.created_at = old.meta.created_at;
                        s.endpoint = old.endpoint.clone();
                    }
                    None => {
                        s.meta.created_at = at;
                        s.endpoint = Default::default();
                    }
                }
                mark_update_start(self.services.get(&s.id).and_then(|o| o.update_status.as_ref()), &mut s.update_status, index);
                touch(&mut s.meta, index, at);
                self.services.insert(s.id.clone(), s);
            }
            Op::DeleteService { id } => {
                self.services.remove(id).ok_or_else(|| missing("service", id))?;
                self.registry_auths.remove(id);
            }
            Op::CreateTask(t) => {
                if self.tasks.contains_key(&t.id) {
                    return Err(ApplyError::Exists { kind: "task", id: t.id.clone() });
                }
                self.check_addresses(&t.networks, &[], Holder::Task(&t.id))?;
                self.advance_cursors(&t.networks, &[]);
                let mut t = t.clone();
                t.meta.created_at = at;
                touch(&mut t.meta, index, at);
                self.tasks.insert(t.id.clone(), t);
            }
            Op::AssignTask { id, node_id, status } => {
                let t = self.tasks.get_mut(id).ok_or_else(|| missing("task", id))?;
                let state = forward(id, t.status.state, status.state)?;
                t.node_id = node_id.clone();
                t.status = status.clone();
                t.status.state = state;
                touch(&mut t.meta, index, at);
            }
            Op::SetTaskDesired { id, desired } => {
                let t = self.tasks.get_mut(id).ok_or_else(|| missing("task", id))?;
                t.desired_state = forward(id, t.desired_state, *desired)?;
                touch(&mut t.meta, index, at);
            }
            Op::SetTaskStatus { id, status } => {
                let t = self.tasks.get_mut(id).ok_or_else(|| missing("task", id))?;
                forward(id, t.status.state, status.state)?;
                t.status = status.clone();
                touch(&mut t.meta, index, at);
            }
            Op::DeleteTask { id } => {
                self.tasks.remove(id).ok_or_else(|| missing("task", id))?;
                self.restarts_in_place.remove(id);
            }
            Op::ReleaseTask { id } => {
                let t = self.tasks.get_mut(id).ok_or_else(|| missing("task", id))?;
                t.desired_state = forward(id, t.desired_state, TaskState::Running)?;
                t.not_before = 0;
                touch(&mut t.meta, index, at);
            }
            Op::SetUpdateStatus { id, status } => {
                let s = self.services.get_mut(id).ok_or_else(|| missing("service", id))?;
                let mut next = Some(status.clone());
                mark_update_start(s.update_status.as_ref(), &mut next, index);
                s.update_status = next;
                touch(&mut s.meta, index, at);
            }
            Op::RollbackService { id, status } => {
                let s = self.services.get_mut(id).ok_or_else(|| missing("service", id))?;
                let prev = s.previous_spec.take().ok_or_else(|| missing("previous spec of service", id))?;
                s.spec = prev;
                let mut next = Some(status.clone());
                mark_update_start(s.update_status.as_ref(), &mut next, index);
                s.update_status = next;
                touch(&mut s.meta, index, at);
            }
            Op::SetNodeLabels { id, labels } => {
                let n = self.nodes.get_mut(id).ok_or_else(|| missing("node", id))?;
                n.labels = labels.clone();
                touch(&mut n.meta, index, at);
            }
            Op::SetSwarmSettings(settings) => {
                self.settings = settings.clone();
            }
            Op::SetAutolock(a) => {
                if a.epoch <= self.autolock.epoch {
                    return Err(ApplyError::StaleAutolock { epoch: a.epoch, current: self.autolock.epoch });
                }
                self.autolock = a.clone();
            }
            Op::SetLinkProfile(p) => {
                self.link_profile = *p;
            }
            Op::SetLayerSharing { on } => {
                self.layer_sharing_off = !on;
            }
            Op::PutSecret(f) => {
                let f = self.with_parts(FileKind::Secret, f)?;
                put_file(&mut self.secrets, "secret", &f, index, at)?;
                self.file_parts.remove(&(FileKind::Secret, f.id));
            }
            Op::PutConfig(f) => {
                let f = self.with_parts(FileKind::Config, f)?;
                put_file(&mut self.configs, "config", &f, index, at)?;
                self.file_parts.remove(&(FileKind::Config, f.id));
            }
            Op::PutFilePart { kind, id, offset, bytes } => {
                let key = (*kind, id.clone());
                let held = self.file_parts.get(&key).map_or(0, |(_, b)| b.len() as u64);
                let total = held.saturating_add(bytes.len() as u64);
                if (*offset != 0 && *offset != held) || total > kind.bytes_max() as u64 {
                    return Err(ApplyError::FilePart { kind: kind.as_str(), id: id.clone(), offset: *offset, held });
                }
                if *offset == 0 {
                    self.file_parts.remove(&key);
                    // Bounded: a new one drops the one started longest ago.
                    while self.file_parts.len() >= FILE_PARTS_PENDING_MAX {
                        let Some(oldest) = self.file_parts.iter().min_by_key(|(k, (i, _))| (*i, (*k).clone())).map(|(k, _)| k.clone())
                        else {
                            break;
                        };
                        self.file_parts.remove(&oldest);
                    }
                }
                let entry = self.file_parts.entry(key).or_insert_with(|| (index, Vec::new()));
                entry.1.extend_from_slice(bytes);
            }
            Op::DeleteSecret { id } => {
                if let Some(service) = self.file_user(id, |c| &c.secrets) {
                    let name = self.secrets.get(id).map_or(id.clone(), |f| f.spec.name.clone());
                    return Err(ApplyError::InUse { kind: "secret", name, service });
                }
                self.secrets.remove(id).ok_or_else(|| missing("secret", id))?;
            }
            Op::DeleteConfig { id } => {
                if let Some(service) = self.file_user(id, |c| &c.configs) {
                    let name = self.configs.get(id).map_or(id.clone(), |f| f.spec.name.clone());
                    return Err(ApplyError::InUse { kind: "config", name, service });
                }
                self.configs.remove(id).ok_or_else(|| missing("config", id))?;
            }
            Op::SetRestartsInPlace(r) => {
                if !self.tasks.contains_key(&r.task_id) {
                    return Err(missing("task", &r.task_id));
                }
                self.restarts_in_place.entry(r.task_id.clone()).or_default().take(r, at);
            }
            Op::SetAutopilot(a) => {
                self.autopilot = a.clone();
            }
            Op::SetRegistryAuth { service_id, auth } => {
                if !self.services.contains_key(service_id) {
                    return Err(missing("service", service_id));
                }
                match auth {
                    Some(a) => self.registry_auths.insert(service_id.clone(), a.clone()),
                    None => self.registry_auths.remove(service_id),
                };
            }
            Op::SetNodeLostAfter { ms } => {
                self.node_lost_after_ms = *ms;
            }
            Op::PutNetwork(n) => {
                let taken = self.networks.values().any(|o| {
                    o.id != n.id
                        && (o.spec.name == n.spec.name || o.vni == n.vni || o.subnet.overlaps(n.subnet) || (o.ingress() && n.ingress()))
                });
                if taken {
                    return Err(ApplyError::NetworkTaken(n.spec.name.clone()));
                }
                let mut n = n.clone();
                n.meta.created_at = self.networks.get(&n.id).map_or(at, |o| o.meta.created_at);
                touch(&mut n.meta, index, at);
                self.networks.insert(n.id.clone(), n);
            }
            Op::DeleteNetwork { id } => {
                self.networks.remove(id).ok_or_else(|| missing("network", id))?;
            }
            Op::SetServiceEndpoint { id, endpoint } => {
                let s = self.services.get(id).ok_or_else(|| missing("service", id))?;
                let old: Vec<NetworkAttachment> = vips(&s.endpoint);
                let new = vips(endpoint);
                self.check_addresses(&new, &old, Holder::Service(id))?;
                for p in endpoint.ports.iter().filter(|p| p.is_ingress() && p.published_port != 0) {
                    let other = self.services.values().find(|o| {
                        o.id != *id
                            && o.endpoint.ports.iter().any(|q| {
                                q.is_ingress() && q.published_port == p.published_port && q.protocol.eq_ignore_ascii_case(&p.protocol)
                            })
                    });
                    if let Some(o) = other {
                        return Err(ApplyError::PortHeld {
                            port: p.published_port,
                            protocol: p.protocol.clone(),
                            holder: o.spec.name.clone(),
                        });
                    }
                }
                for p in &endpoint.ports {
                    let fresh = !s.endpoint.ports.iter().any(|q| q.published_port == p.published_port);
                    if fresh && (PORT_AUTO_MIN..=PORT_AUTO_MAX).contains(&p.published_port) {
                        self.last_port = p.published_port;
                    }
                }
                self.advance_cursors(&new, &old);
                let s = self.services.get_mut(id).ok_or_else(|| missing("service", id))?;
                s.endpoint = endpoint.clone();
                touch(&mut s.meta, index, at);
            }
            Op::SetTaskNetworks { id, networks } => {
                let t = self.tasks.get(id).ok_or_else(|| missing("task", id))?;
                let old = t.networks.clone();
                self.check_addresses(networks, &old, Holder::Task(id))?;
                self.advance_cursors(networks, &old);
                let t = self.tasks.get_mut(id).ok_or_else(|| missing("task", id))?;
                t.networks = networks.clone();
                touch(&mut t.meta, index, at);
            }
            Op::SetNodeAttachments { id, attachments } => {
                let n = self.nodes.get(id).ok_or_else(|| missing("node", id))?;
                let old = n.attachments.clone();
                self.check_addresses(attachments, &old, Holder::Node(id))?;
                self.advance_cursors(attachments, &old);
                let n = self.nodes.get_mut(id).ok_or_else(|| missing("node", id))?;
                n.attachments = attachments.clone();
                touch(&mut n.meta, index, at);
            }
        }
        Ok(())
    }

    /// Every address in `new` lies on its network and is held by nothing but `me`.
    fn check_addresses(&self, new: &[NetworkAttachment], _old: &[NetworkAttachment], me: Holder<'_>) -> Result<(), ApplyError> {
        for (i, a) in new.iter().enumerate() {
            let outside = || ApplyError::AddressOutside { network: a.network_id.clone(), addr: a.addr.addr };
            // The tunnel network (encrypted overlays' node addresses) is no network record.
            let subnet = match self.networks.get(&a.network_id) {
                Some(n) => n.subnet,
                None if a.network_id == TUNNEL_NETWORK_ID => TUNNEL_SUBNET,
                None => return Err(outside()),
            };
            if !subnet.contains(a.addr.addr) || a.addr.prefix != subnet.prefix {
                return Err(outside());
            }
            let twice = new[..i].iter().any(|b| b.network_id == a.network_id && b.addr.addr == a.addr.addr);
            let holder = if twice { Some(me.to_string()) } else { self.holder(&a.network_id, a.addr.addr, me) };
            if let Some(holder) = holder {
                return Err(ApplyError::AddressHeld { network: a.network_id.clone(), addr: a.addr.addr, holder });
            }
        }
        Ok(())
    }

    /// Who other than `me` holds `addr` on network `network_id`.
    pub fn holder(&self, network_id: &str, addr: Ipv4Addr, me: Holder<'_>) -> Option<String> {
        let on = |a: &NetworkAttachment| a.network_id == network_id && a.addr.addr == addr;
        if self.networks.get(network_id).is_some_and(|n| n.gateway == addr) {
            return Some("the gateway".into());
        }
        if let Some(s) = self.services.values().find(|s| me != Holder::Service(&s.id) && vips(&s.endpoint).iter().any(on)) {
            return Some(format!("service {}", s.spec.name));
        }
        let live = |t: &&Task| !t.status.state.is_terminal();
        if let Some(t) = self.tasks.values().filter(live).find(|t| me != Holder::Task(&t.id) && t.networks.iter().any(on)) {
            return Some(format!("task {}", t.id));
        }
        if let Some(n) = self.nodes.values().find(|n| me != Holder::Node(&n.id) && n.attachments.iter().any(on)) {
            return Some(format!("node {}", n.id));
        }
        None
    }

    /// Moves each network's next-fit cursor to the addresses newly handed out.
    fn advance_cursors(&mut self, new: &[NetworkAttachment], old: &[NetworkAttachment]) {
        for a in new.iter().filter(|a| !old.contains(a)) {
            if let Some(n) = self.networks.get_mut(&a.network_id) {
                n.last_addr = Some(a.addr.addr);
            }
        }
    }

    /// Encodes the whole state for a raft snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        // In-memory maps of owned strings always serialize.
        out.extend(postcard::to_allocvec(self).expect("state serialization is infallible"));
        out
    }

    /// Decodes a snapshot made by [`State::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<State, SnapshotError> {
        let (&v, body) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        let corrupt = |e: postcard::Error| SnapshotError::Corrupt(e.to_string());
        match v {
            #[cfg(feature = "legacy")]
            1..=12 => legacy::restore(v, body),
            #[cfg(not(feature = "legacy"))]
            1..=12 => Err(SnapshotError::Legacy(v)),
            SNAPSHOT_VERSION => postcard::from_bytes(body).map_err(corrupt),
            _ => Err(SnapshotError::Version(v)),
        }
    }

    /// The name of a service whose spec or previous spec (a rollback's
    /// target) uses the secret or config `id` (`refs` picks which), if any.
    pub fn file_user(
        &self,
        id: &str,
        refs: impl Fn(&shoal_shared::types::ContainerSpec) -> &Vec<shoal_shared::types::FileReference>,
    ) -> Option<String> {
        let uses = |spec: &ServiceSpec| refs(&spec.task.container).iter().any(|r| r.id == id);
        self.services.values().find(|s| uses(&s.spec) || s.previous_spec.as_ref().is_some_and(uses)).map(|s| s.spec.name.clone())
    }

    /// A `PutSecret`/`PutConfig`'s file with the parts written before it
    /// (`Op::PutFilePart`) in front of its own data; over the kind's limit
    /// is refused.
    fn with_parts(&self, kind: FileKind, f: &StoredFile) -> Result<StoredFile, ApplyError> {
        let mut f = f.clone();
        if let Some((_, parts)) = self.file_parts.get(&(kind, f.id.clone())) {
            let mut data = parts.clone();
            data.extend_from_slice(&f.spec.data);
            f.spec.data = data;
        }
        if f.spec.data.len() > kind.bytes_max() {
            let held = f.spec.data.len() as u64;
            return Err(ApplyError::FilePart { kind: kind.as_str(), id: f.id, offset: 0, held });
        }
        Ok(f)
    }

    /// Finds a secret by exact id, exact name, or unique id prefix.
    pub fn find_secret(&self, key: &str) -> Option<&StoredFile> {
        find(&self.secrets, key, |f| &f.spec.name)
    }

    /// Finds a config by exact id, exact name, or unique id prefix.
    pub fn find_config(&self, key: &str) -> Option<&StoredFile> {
        find(&self.configs, key, |f| &f.spec.name)
    }

    /// Finds a service by exact id, exact name, or unique id prefix.
    pub fn find_service(&self, key: &str) -> Option<&Service> {
        find(&self.services, key, |s| &s.spec.name)
    }

    /// Finds a network by exact id, exact name, or unique id prefix.
    pub fn find_network(&self, key: &str) -> Option<&Network> {
        find(&self.networks, key, |n| &n.spec.name)
    }

    /// The ingress network, if there is one.
    pub fn ingress_network(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.ingress())
    }

    /// Finds a node by id, hostname or unique id prefix.
    pub fn find_node(&self, key: &str) -> Option<&Node> {
        find(&self.nodes, key, |n| &n.description.hostname)
    }

    /// Tasks of a service, in creation order.
    ///
    /// Within a slot the newest task comes last: the orchestrator and the
    /// updater rely on it (a slot can hold two runnable tasks during a
    /// start-first update). `meta.version` (the creating entry's index) breaks
    /// ties between tasks created in the same millisecond.
    pub fn tasks_of(&self, service_id: &str) -> Vec<&Task> {
        let mut v: Vec<&Task> = self.tasks.values().filter(|t| t.service_id == service_id).collect();
        v.sort_by_key(|t| (t.slot, t.meta.created_at, t.meta.version, &t.id));
        v
    }
}

/// Who holds an address, to tell a holder from itself in [`State::holder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder<'a> {
    Service(&'a str),
    Task(&'a str),
    Node(&'a str),
    /// Nothing being set (a lookup).
    Nobody,
}

impl std::fmt::Display for Holder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Service(id) => write!(f, "service {id}"),
            Holder::Task(id) => write!(f, "task {id}"),
            Holder::Node(id) => write!(f, "node {id}"),
            Holder::Nobody => write!(f, "nobody"),
        }
    }
}

/// A service endpoint's VIPs as attachments (one shape for the holder checks).
pub fn vips(e: &shoal_shared::types::Endpoint) -> Vec<NetworkAttachment> {
    e.virtual_ips.iter().map(|v| NetworkAttachment { network_id: v.network_id.clone(), addr: v.addr }).collect()
}

/// Docker's lookup rule: exact id, then exact name, then a unique id prefix.
fn find<'a, T>(objects: &'a BTreeMap<String, T>, key: &str, name: impl Fn(&T) -> &str) -> Option<&'a T> {
    if let Some(o) = objects.get(key) {
        return Some(o);
    }
    if let Some(o) = objects.values().find(|o| name(o) == key) {
        return Some(o);
    }
    if key.is_empty() {
        return None;
    }
    let mut by_prefix = objects.iter().filter(|(id, _)| id.starts_with(key));
    match (by_prefix.next(), by_prefix.next()) {
        (Some((_, o)), None) => Some(o),
        _ => None,
    }
}

/// Stamps `started_index` on an update status that starts a new update or
/// rollback (in progress, and not the one already recorded); other statuses
/// keep the recorded one.
fn mark_update_start(old: Option<&UpdateStatus>, next: &mut Option<UpdateStatus>, index: u64) {
    let Some(n) = next else { return };
    // Starting (not-in-progress to in-progress) is always a new update, even within one clock tick.
    let same = old.is_some_and(|o| {
        o.started_at == n.started_at && o.state.is_rollback() == n.state.is_rollback() && (o.state.in_progress() || !n.state.in_progress())
    });
    match old {
        Some(o) if same => n.started_index = o.started_index,
        _ if n.state.in_progress() => n.started_index = index,
        _ => {}
    }
}

/// `PutSecret` / `PutConfig`: new ids only (immutable, as Swarm's), unique names.
fn put_file(files: &mut BTreeMap<String, StoredFile>, kind: &'static str, f: &StoredFile, index: u64, at: u64) -> Result<(), ApplyError> {
    if files.contains_key(&f.id) {
        return Err(ApplyError::Exists { kind, id: f.id.clone() });
    }
    if files.values().any(|o| o.spec.name == f.spec.name) {
        return Err(ApplyError::FileNameInUse { kind, name: f.spec.name.clone() });
    }
    let mut f = f.clone();
    f.meta.created_at = at;
    touch(&mut f.meta, index, at);
    files.insert(f.id.clone(), f);
    Ok(())
}

fn missing(kind: &'static str, id: &str) -> ApplyError {
    ApplyError::Missing { kind, id: id.to_string() }
}

fn forward(id: &str, from: TaskState, to: TaskState) -> Result<TaskState, ApplyError> {
    from.advance(to).map_err(|source| ApplyError::Backwards { id: id.to_string(), source })
}

fn touch(meta: &mut shoal_shared::types::Meta, index: u64, at: u64) {
    meta.version = index;
    meta.updated_at = at;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_shared::types::{RestartsInPlace, ServiceSpec, TaskStatus};

    pub(crate) fn service(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            meta: Default::default(),
            spec: ServiceSpec::new(name, "busybox"),
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        }
    }

    /// A ready, active worker node of `platform` (e.g. `linux/arm64`).
    pub(crate) fn node(id: &str, platform: &str) -> Node {
        use shoal_shared::types::{Availability, NodeDescription, NodeRole, NodeState};
        Node {
            id: id.into(),
            meta: Default::default(),
            role: NodeRole::Worker,
            availability: Availability::Active,
            labels: Default::default(),
            description: NodeDescription {
                hostname: format!("host-{id}"),
                platform: shoal_shared::platform::Platform::parse(platform).expect("valid test platform"),
                ..Default::default()
            },
            state: NodeState::Ready,
            addr: String::new(),
            manager_addr: String::new(),
            attachments: Vec::new(),
        }
    }

    pub(crate) fn task(id: &str, service_id: &str, slot: u64) -> Task {
        let spec = ServiceSpec::new("x", "busybox").task;
        Task {
            id: id.into(),
            meta: Default::default(),
            service_id: service_id.into(),
            slot,
            node_id: String::new(),
            spec,
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, 0, "created"),
            not_before: 0,
            attempt: 0,
            networks: Vec::new(),
        }
    }

    fn entry(ops: Vec<Op>) -> Entry {
        Entry { at: 1000, ops }
    }

    #[test]
    fn duplicate_names_are_rejected_without_change() {
        let mut s = State::default();
        let a = s.apply(1, &entry(vec![Op::PutService(service("a", "web"))]));
        assert!(a.rejected.is_empty());
        let before = s.clone();
        let b = s.apply(2, &entry(vec![Op::PutService(service("b", "web"))]));
        assert_eq!(b.rejected, vec![(0, ApplyError::NameInUse("web".into()))]);
        assert_eq!(s.services, before.services);
        assert_eq!(s.services["a"].meta.version, 1);
        assert_eq!(s.applied_index, 2);
    }

    #[test]
    fn task_states_only_move_forward_in_apply() {
        let mut s = State::default();
        s.apply(1, &entry(vec![Op::CreateTask(task("t", "a", 1))]));
        let running = TaskStatus::new(TaskState::Running, 5, "started");
        assert!(s.apply(2, &entry(vec![Op::SetTaskStatus { id: "t".into(), status: running.clone() }])).rejected.is_empty());
        let back = TaskStatus::new(TaskState::Starting, 6, "late report");
        let r = s.apply(3, &entry(vec![Op::SetTaskStatus { id: "t".into(), status: back }]));
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(s.tasks["t"].status, running);
        assert_eq!(s.tasks["t"].meta.version, 2);
        let r = s.apply(4, &entry(vec![Op::SetTaskDesired { id: "t".into(), desired: TaskState::Ready }]));
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(s.tasks["t"].desired_state, TaskState::Running);
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut s = State::default();
        let mut svc = service("a", "web");
        svc.previous_spec = Some(ServiceSpec::new("web", "busybox:1"));
        svc.update_status = Some(shoal_shared::types::UpdateStatus::started(shoal_shared::types::UpdateState::Paused, 7, "paused"));
        s.apply(1, &entry(vec![Op::PutService(svc), Op::CreateTask(task("t", "a", 1))]));
        let snap = s.snapshot();
        assert_eq!(State::restore(&snap).unwrap(), s);
        assert!(State::restore(&[]).is_err());
        assert!(State::restore(&[7]).is_err());
        assert!(State::restore(&snap[..snap.len() / 2]).is_err());
    }

    /// A version-2 snapshot written by Shoal before networks (main at
    /// 6d99343, generated once with its `State::snapshot`): a cluster, a
    /// manager node, service `web` (`--network my-net -p 8080:80`, with a
    /// previous spec) and its running task, then settings of 30 s.
    #[cfg(feature = "legacy")]
    const SNAPSHOT_V2_HEX: &str = include_str!("legacy_snapshot_v2.hex");

    #[cfg(feature = "legacy")]
    fn from_hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn settings_replicate_and_version_1_snapshots_restore_with_defaults() {
        let mut s = State::default();
        s.apply(1, &entry(vec![Op::PutService(service("a", "web"))]));
        let custom = SwarmSettings { dispatcher_heartbeat_ms: 30_000 };
        s.apply(2, &entry(vec![Op::SetSwarmSettings(custom.clone())]));
        assert_eq!(s.settings, custom);
        assert_eq!(State::restore(&s.snapshot()).unwrap().settings, custom);
        // A version-1 snapshot is a version-2 one without the trailing settings.
        let v2 = from_hex(SNAPSHOT_V2_HEX.trim());
        let mut v1 = v2.clone();
        v1[0] = 1;
        let settings_len = postcard::to_allocvec(&custom).unwrap().len();
        v1.truncate(v1.len() - settings_len);
        let old = State::restore(&v1).unwrap();
        assert_eq!(old.settings, SwarmSettings::default());
        assert_eq!(old.services, State::restore(&v2).unwrap().services);
        assert_eq!(old.applied_index, 2);
        assert_eq!(State::restore(&[SNAPSHOT_VERSION + 1, 0]), Err(SnapshotError::Version(SNAPSHOT_VERSION + 1)));
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn version_2_snapshots_restore_with_empty_network_fields() {
        let s = State::restore(&from_hex(SNAPSHOT_V2_HEX.trim())).unwrap();
        assert_eq!(s.applied_index, 2);
        assert_eq!(s.settings.dispatcher_heartbeat_ms, 30_000);
        assert_eq!(s.cluster.as_ref().map(|c| (c.id.as_str(), c.public_key[0])), Some(("c1", 7)));
        assert_eq!(s.cluster.as_ref().unwrap().network, shoal_shared::types::NetworkDefaults::default());
        assert_eq!(s.nodes["n1"].description.hostname, "box");
        assert!(s.nodes["n1"].attachments.is_empty());
        let web = s.find_service("web").unwrap();
        assert_eq!((web.spec.ports[0].published_port, web.spec.ports[0].target_port), (8080, 80));
        assert!(web.spec.task.networks.is_empty(), "the unchecked name is dropped");
        assert_eq!(web.previous_spec.as_ref().map(|p| p.name.as_str()), Some("web"));
        assert_eq!(s.tasks["t1"].status.state, TaskState::Running);
        assert_eq!(s.tasks["t1"].node_id, "n1");
        assert!(s.networks.is_empty());
        // Written again, it is today's snapshot that round-trips.
        assert_eq!(State::restore(&s.snapshot()).unwrap(), s);
    }

    /// A version-3 snapshot written by Shoal before node plugins (main at
    /// 9556691, generated once with its `State::snapshot`): cluster `c1`,
    /// node `n1` (`box`, 2 CPUs, 1 GiB, engine label k=v), service `web`
    /// and its task `t1` on `n1`, then settings of 30 s.
    #[cfg(feature = "legacy")]
    const SNAPSHOT_V3_HEX: &str = include_str!("legacy_snapshot_v3.hex");

    #[cfg(feature = "legacy")]
    #[test]
    fn version_3_snapshots_restore_with_no_plugins_reported() {
        let v3 = from_hex(SNAPSHOT_V3_HEX.trim());
        assert_eq!(v3[0], 3);
        let s = State::restore(&v3).unwrap();
        assert_eq!((s.applied_index, s.settings.dispatcher_heartbeat_ms), (2, 30_000));
        assert_eq!(s.cluster.as_ref().map(|c| (c.id.as_str(), c.public_key[0], c.manager_secret[0])), Some(("c1", 7, 9)));
        let d = &s.nodes["n1"].description;
        assert_eq!((d.hostname.as_str(), d.platform.to_string(), d.engine_version.as_str()), ("box", "linux/amd64".to_string(), "0.1.0"));
        assert_eq!((d.resources.nano_cpus, d.resources.memory_bytes), (2_000_000_000, 1 << 30));
        assert_eq!(d.engine_labels.get("k").map(String::as_str), Some("v"));
        assert!(d.plugins.is_empty() && d.warnings.is_empty(), "not reported: placement assumes the node capable");
        assert_eq!(s.nodes["n1"].addr, "10.1.0.1:2377");
        assert_eq!(s.find_service("web").map(|w| w.id.as_str()), Some("s1"));
        assert_eq!((s.tasks["t1"].node_id.as_str(), s.tasks["t1"].slot), ("n1", 1));
        assert_eq!(State::restore(&s.snapshot()).unwrap(), s);
    }

    /// A version-11 snapshot written by Shoal before secrets (main at
    /// f4d8bc0, generated once with its `State::snapshot`): the state after
    /// `shared/src/legacy_entry_v3.hex`'s entry (node `n1`, service `web`
    /// with a previous spec, its task `t1` in slot 2, autolock epoch 4, node
    /// lost after 10 min, edge links, an autopilot of 3, credentials of
    /// `s1`, layer sharing off).
    #[cfg(feature = "legacy")]
    const SNAPSHOT_V11_HEX: &str = include_str!("legacy_snapshot_v11.hex");

    #[cfg(feature = "legacy")]
    #[test]
    fn version_11_snapshots_restore_with_no_secrets_or_configs() {
        let v11 = from_hex(SNAPSHOT_V11_HEX.trim());
        assert_eq!(v11[0], 11);
        let s = State::restore(&v11).unwrap();
        assert_eq!(s.applied_index, 1);
        let web = s.find_service("web").unwrap();
        assert_eq!((web.id.as_str(), web.spec.task.container.args.len(), web.spec.task.container.init), ("s1", 2, true));
        assert!(web.spec.task.container.secrets.is_empty() && web.spec.task.container.healthcheck.is_none());
        assert_eq!(web.previous_spec.as_ref().map(|p| p.task.container.image.as_str()), Some("busybox:1"));
        assert_eq!((s.tasks["t1"].slot, s.tasks["t1"].node_id.as_str()), (2, "n1"));
        assert_eq!(s.tasks["t1"].spec, web.spec.task);
        assert_eq!(s.nodes["n1"].description.platform.to_string(), "linux/arm/v7");
        assert_eq!((s.autolock.key, s.autolock.epoch), (Some([5; 32]), 4));
        assert_eq!((s.node_lost_after_ms, s.link_profile, s.autopilot.managers), (600_000, LinkProfile::Edge, 3));
        assert_eq!(s.registry_auths["s1"].username, "u");
        assert!(s.layer_sharing_off);
        assert!(s.secrets.is_empty() && s.configs.is_empty());
        assert_eq!(State::restore(&s.snapshot()).unwrap(), s);
        assert!(matches!(State::restore(&v11[..v11.len() - 1]), Err(SnapshotError::Corrupt(_))));
    }

    #[test]
    fn files_in_parts_complete_in_order_and_stale_parts_are_bounded() {
        let part =
            |id: &str, offset: u64, bytes: &[u8]| Op::PutFilePart { kind: FileKind::Secret, id: id.into(), offset, bytes: bytes.to_vec() };
        let mut s = State::default();
        assert!(s.apply(1, &entry(vec![part("x", 0, b"ab"), part("x", 2, b"cd")])).rejected.is_empty());
        // Out of order: skipped, nothing changed.
        let r = s.apply(2, &entry(vec![part("x", 9, b"zz")]));
        assert_eq!(r.rejected.len(), 1);
        let mut f = file("x", "pw");
        f.spec.data = b"ef".to_vec();
        assert!(s.apply(3, &entry(vec![Op::PutSecret(f)])).rejected.is_empty());
        assert_eq!(s.secrets["x"].spec.data, b"abcdef");
        assert!(s.file_parts.is_empty());
        // Parts left by a leader that failed half-way: at most FILE_PARTS_PENDING_MAX, the oldest goes first.
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            s.apply(10 + i as u64, &entry(vec![part(id, 0, b"1")]));
        }
        assert_eq!(s.file_parts.len(), FILE_PARTS_PENDING_MAX);
        assert!(!s.file_parts.contains_key(&(FileKind::Secret, "a".to_string())));
        // Over the kind's limit: refused.
        let huge = vec![0u8; shoal_shared::types::SECRET_BYTES_MAX + 1];
        assert_eq!(s.apply(20, &entry(vec![part("h", 0, &huge)])).rejected.len(), 1);
        // Kept across a snapshot (version 13); version 12 restores with none.
        let snap = s.snapshot();
        assert_eq!(State::restore(&snap).unwrap(), s);
        let v12 = State { file_parts: BTreeMap::new(), ..s.clone() };
        let mut bytes = vec![12u8];
        let full = postcard::to_allocvec(&v12).unwrap();
        // Today's encoding minus the trailing empty map (one byte, its length 0) is version 12's.
        bytes.extend_from_slice(&full[..full.len() - 1]);
        #[cfg(feature = "legacy")]
        assert_eq!(State::restore(&bytes).unwrap(), v12);
        #[cfg(not(feature = "legacy"))]
        assert!(matches!(State::restore(&bytes), Err(SnapshotError::Legacy(12))), "refused with the reason");
    }

    fn file(id: &str, name: &str) -> StoredFile {
        StoredFile {
            id: id.into(),
            meta: Default::default(),
            spec: shoal_shared::types::FileSpec { name: name.into(), labels: Default::default(), data: b"pw".to_vec() },
        }
    }

    #[test]
    fn secrets_are_immutable_named_once_and_kept_while_a_service_uses_them() {
        use shoal_shared::types::FileReference;
        let mut s = State::default();
        assert!(s.apply(1, &entry(vec![Op::PutSecret(file("x1", "db"))])).rejected.is_empty());
        // Same name, another id: refused; same id again: refused (no edits).
        let r = s.apply(2, &entry(vec![Op::PutSecret(file("x2", "db")), Op::PutSecret(file("x1", "db2"))]));
        assert_eq!(r.rejected.len(), 2, "{r:?}");
        assert_eq!(s.secrets.len(), 1);
        // A config may share a secret's name (separate kinds).
        assert!(s.apply(3, &entry(vec![Op::PutConfig(file("c1", "db"))])).rejected.is_empty());
        let mut svc = service("a", "web");
        let reference = |id: &str| FileReference {
            id: id.into(),
            name: "db".into(),
            target: "db".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        };
        svc.spec.task.container.secrets = vec![reference("nope")];
        let r = s.apply(4, &entry(vec![Op::PutService(svc.clone())]));
        assert_eq!(r.rejected, vec![(0, ApplyError::Missing { kind: "secret", id: "nope".into() })]);
        svc.spec.task.container.secrets = vec![reference("x1")];
        svc.spec.task.container.configs = vec![reference("c1")];
        assert!(s.apply(5, &entry(vec![Op::PutService(svc.clone())])).rejected.is_empty());
        let r = s.apply(6, &entry(vec![Op::DeleteSecret { id: "x1".into() }, Op::DeleteConfig { id: "c1".into() }]));
        assert_eq!(
            r.rejected,
            vec![
                (0, ApplyError::InUse { kind: "secret", name: "db".into(), service: "web".into() }),
                (1, ApplyError::InUse { kind: "config", name: "db".into(), service: "web".into() })
            ]
        );
        // Still used by the previous spec (a rollback's target).
        let mut next = s.services["a"].clone();
        next.previous_spec = Some(std::mem::replace(&mut next.spec, ServiceSpec::new("web", "busybox")));
        s.apply(7, &entry(vec![Op::PutService(next)]));
        assert!(!s.apply(8, &entry(vec![Op::DeleteSecret { id: "x1".into() }])).rejected.is_empty());
        s.apply(9, &entry(vec![Op::DeleteService { id: "a".into() }]));
        assert!(s.apply(10, &entry(vec![Op::DeleteSecret { id: "x1".into() }, Op::DeleteConfig { id: "c1".into() }])).rejected.is_empty());
        assert!(s.secrets.is_empty() && s.configs.is_empty());
        // The data is in the snapshot (sealed at rest with it) and never in Debug.
        s.apply(11, &entry(vec![Op::PutSecret(file("x3", "tls"))]));
        assert_eq!(State::restore(&s.snapshot()).unwrap(), s);
        assert!(!format!("{s:?}").contains("[112, 119]"), "the data is not printed");
        assert_eq!(s.find_secret("tls").map(|f| f.id.as_str()), Some("x3"));
    }

    #[cfg(feature = "legacy")]
    /// A container as versions before secrets held it (test data has none).
    fn container_v3(c: &shoal_shared::types::ContainerSpec) -> shoal_shared::legacy::ContainerSpecV3 {
        assert!(c.secrets.is_empty() && c.configs.is_empty() && c.healthcheck.is_none());
        shoal_shared::legacy::ContainerSpecV3 {
            image: c.image.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c.env.clone(),
            labels: c.labels.clone(),
            dir: c.dir.clone(),
            user: c.user.clone(),
            hostname: c.hostname.clone(),
            stop_grace_ns: c.stop_grace_ns,
            stop_signal: c.stop_signal.clone(),
            mounts: c.mounts.clone(),
            init: c.init,
        }
    }

    #[cfg(feature = "legacy")]
    fn task_spec_v3(t: &shoal_shared::types::TaskSpec) -> shoal_shared::legacy::TaskSpecV3 {
        shoal_shared::legacy::TaskSpecV3 {
            container: container_v3(&t.container),
            resources: t.resources,
            restart: t.restart,
            placement: t.placement.clone(),
            force_update: t.force_update,
            networks: t.networks.clone(),
        }
    }

    #[cfg(feature = "legacy")]
    fn service_spec_v3(s: &ServiceSpec) -> shoal_shared::legacy::ServiceSpecV3 {
        shoal_shared::legacy::ServiceSpecV3 {
            name: s.name.clone(),
            labels: s.labels.clone(),
            task: task_spec_v3(&s.task),
            mode: s.mode,
            update: s.update,
            rollback: s.rollback,
            ports: s.ports.clone(),
            endpoint_mode: s.endpoint_mode,
        }
    }

    #[cfg(feature = "legacy")]
    fn service_v3(s: &Service) -> shoal_shared::legacy::ServiceV3 {
        shoal_shared::legacy::ServiceV3 {
            id: s.id.clone(),
            meta: s.meta.clone(),
            spec: service_spec_v3(&s.spec),
            previous_spec: s.previous_spec.as_ref().map(service_spec_v3),
            update_status: s.update_status.clone(),
            endpoint: s.endpoint.clone(),
        }
    }

    #[cfg(feature = "legacy")]
    fn task_v3(t: &Task) -> shoal_shared::legacy::TaskV3 {
        shoal_shared::legacy::TaskV3 {
            id: t.id.clone(),
            meta: t.meta.clone(),
            service_id: t.service_id.clone(),
            slot: t.slot,
            node_id: t.node_id.clone(),
            spec: task_spec_v3(&t.spec),
            service_version: t.service_version,
            desired_state: t.desired_state,
            status: t.status.clone(),
            not_before: t.not_before,
            attempt: t.attempt,
            networks: t.networks.clone(),
        }
    }

    /// A version-5 snapshot (before `--node-lost-after`) restores with it off
    /// and keeps its autolock; today's snapshot carries the setting.
    #[cfg(feature = "legacy")]
    #[test]
    fn version_5_snapshots_restore_with_node_lost_after_off() {
        let mut s = State::default();
        s.apply(1, &entry(vec![Op::PutService(service("a", "web")), Op::CreateTask(task("t", "a", 1))]));
        s.autolock = Autolock { key: Some([3; 32]), epoch: 2 };
        s.last_port = 30_001;
        // The records as version 5 wrote them (the head of `State`).
        #[derive(Serialize)]
        struct RecordsOut<'a> {
            cluster: Option<Cluster>,
            nodes: &'a BTreeMap<String, Node>,
            services: BTreeMap<String, shoal_shared::legacy::ServiceV3>,
            tasks: BTreeMap<String, shoal_shared::legacy::TaskV3>,
            #[serde(skip)]
            _at: std::marker::PhantomData<&'a ()>,
            applied_index: u64,
        }
        let head = RecordsOut {
            cluster: None,
            nodes: &s.nodes,
            services: s.services.iter().map(|(k, v)| (k.clone(), service_v3(v))).collect(),
            tasks: s.tasks.iter().map(|(k, v)| (k.clone(), task_v3(v))).collect(),
            applied_index: s.applied_index,
            _at: std::marker::PhantomData,
        };
        let mut v5 = vec![5u8];
        v5.extend(postcard::to_allocvec(&(head, &s.settings, &s.networks, s.last_port, &s.autolock)).unwrap());
        let old = State::restore(&v5).unwrap();
        assert_eq!(old, s, "everything but the new setting, which is off");
        assert_eq!(old.node_lost_after_ms, 0);
        s.apply(2, &entry(vec![Op::SetNodeLostAfter { ms: 600_000 }]));
        assert_eq!(s.node_lost_after_ms, 600_000);
        assert_eq!(State::restore(&s.snapshot()).unwrap().node_lost_after_ms, 600_000);
        assert!(matches!(State::restore(&v5[..v5.len() - 1]), Err(SnapshotError::Corrupt(_))));
        // Version 6 (before `--link-profile`) restores with lan and keeps node_lost_after.
        let head = RecordsOut {
            cluster: None,
            nodes: &s.nodes,
            services: s.services.iter().map(|(k, v)| (k.clone(), service_v3(v))).collect(),
            tasks: s.tasks.iter().map(|(k, v)| (k.clone(), task_v3(v))).collect(),
            applied_index: s.applied_index,
            _at: std::marker::PhantomData,
        };
        let mut v6 = vec![6u8];
        v6.extend(postcard::to_allocvec(&(head, &s.settings, &s.networks, s.last_port, &s.autolock, s.node_lost_after_ms)).unwrap());
        let old = State::restore(&v6).unwrap();
        assert_eq!(old, s);
        assert_eq!(old.link_profile, LinkProfile::Lan);
        s.apply(3, &entry(vec![Op::SetLinkProfile(LinkProfile::Edge)]));
        assert_eq!(State::restore(&s.snapshot()).unwrap().link_profile, LinkProfile::Edge);
        assert!(matches!(State::restore(&v6[..v6.len() - 1]), Err(SnapshotError::Corrupt(_))));
        // Version 7 (before in-place restarts were counted) restores with none and keeps the link profile.
        let head = RecordsOut {
            cluster: None,
            nodes: &s.nodes,
            services: s.services.iter().map(|(k, v)| (k.clone(), service_v3(v))).collect(),
            tasks: s.tasks.iter().map(|(k, v)| (k.clone(), task_v3(v))).collect(),
            applied_index: s.applied_index,
            _at: std::marker::PhantomData,
        };
        let mut v7 = vec![7u8];
        v7.extend(
            postcard::to_allocvec(&(head, &s.settings, &s.networks, s.last_port, &s.autolock, s.node_lost_after_ms, s.link_profile))
                .unwrap(),
        );
        let old = State::restore(&v7).unwrap();
        assert_eq!(old, s);
        assert!(old.restarts_in_place.is_empty());
        let r = RestartsInPlace { task_id: "t".into(), session: 1, count: 2, ago_ms: vec![5_000, 1_000] };
        s.apply(4, &Entry { at: 100_000_000_000, ops: vec![Op::SetRestartsInPlace(r)] });
        assert_eq!(State::restore(&s.snapshot()).unwrap(), s);
        assert_eq!(State::restore(&s.snapshot()).unwrap().restarts_in_place["t"].total, 2);
        assert!(matches!(State::restore(&v7[..v7.len() - 1]), Err(SnapshotError::Corrupt(_))));
        // Version 8 (before the autopilot) restores with it off and keeps the restarts.
        let head = RecordsOut {
            cluster: None,
            nodes: &s.nodes,
            services: s.services.iter().map(|(k, v)| (k.clone(), service_v3(v))).collect(),
            tasks: s.tasks.iter().map(|(k, v)| (k.clone(), task_v3(v))).collect(),
            applied_index: s.applied_index,
            _at: std::marker::PhantomData,
        };
        let mut v8 = vec![8u8];
        let fields = (&s.settings, &s.networks, s.last_port, &s.autolock, s.node_lost_after_ms, s.link_profile, &s.restarts_in_place);
        v8.extend(postcard::to_allocvec(&(head, fields.0, fields.1, fields.2, fields.3, fields.4, fields.5, fields.6)).unwrap());
        let old = State::restore(&v8).unwrap();
        assert_eq!(old, s);
        assert_eq!(old.autopilot.managers, 0, "off");
        let a = AutopilotSettings { managers: 3, manager_lost_after_ms: 60_000, spread_label: "site".into(), flaps_per_hour_max: 3 };
        s.apply(5, &entry(vec![Op::SetAutopilot(a.clone())]));
        assert_eq!(State::restore(&s.snapshot()).unwrap().autopilot, a);
        assert!(matches!(State::restore(&v8[..v8.len() - 1]), Err(SnapshotError::Corrupt(_))));
        // Version 9 (before registry credentials) restores with none and keeps the autopilot.
        let head = RecordsOut {
            cluster: None,
            nodes: &s.nodes,
            services: s.services.iter().map(|(k, v)| (k.clone(), service_v3(v))).collect(),
            tasks: s.tasks.iter().map(|(k, v)| (k.clone(), task_v3(v))).collect(),
            applied_index: s.applied_index,
            _at: std::marker::PhantomData,
        };
        let mut v9 = vec![9u8];
        let f =
            (&s.settings, &s.networks, s.last_port, &s.autolock, s.node_lost_after_ms, s.link_profile, &s.restarts_in_place, &s.autopilot);
        v9.extend(postcard::to_allocvec(&(head, f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7)).unwrap());
        let old = State::restore(&v9).unwrap();
        assert_eq!(old, s);
        assert!(old.registry_auths.is_empty());
        assert!(matches!(State::restore(&v9[..v9.len() - 1]), Err(SnapshotError::Corrupt(_))));
        // Version 10 (before --layer-sharing) restores with sharing on and keeps the credentials.
        let next = s.applied_index + 1;
        let r = s.apply(next, &entry(vec![Op::PutService(service("s", "shared-layers"))]));
        assert!(r.rejected.is_empty(), "{r:?}");
        let r = s.apply(
            next + 1,
            &entry(vec![Op::SetRegistryAuth {
                service_id: "s".into(),
                auth: Some(RegistryAuth { username: "u".into(), password: "p".into() }),
            }]),
        );
        assert!(r.rejected.is_empty(), "{r:?}");
        let head = RecordsOut {
            cluster: None,
            nodes: &s.nodes,
            services: s.services.iter().map(|(k, v)| (k.clone(), service_v3(v))).collect(),
            tasks: s.tasks.iter().map(|(k, v)| (k.clone(), task_v3(v))).collect(),
            applied_index: s.applied_index,
            _at: std::marker::PhantomData,
        };
        let mut v10 = vec![10u8];
        let f =
            (&s.settings, &s.networks, s.last_port, &s.autolock, s.node_lost_after_ms, s.link_profile, &s.restarts_in_place, &s.autopilot);
        v10.extend(postcard::to_allocvec(&(head, f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, &s.registry_auths)).unwrap());
        let old = State::restore(&v10).unwrap();
        assert_eq!(old, s);
        assert!(!old.layer_sharing_off && old.registry_auths.len() == 1);
        s.apply(next + 2, &entry(vec![Op::SetLayerSharing { on: false }]));
        assert!(State::restore(&s.snapshot()).unwrap().layer_sharing_off);
        assert!(matches!(State::restore(&v10[..v10.len() - 1]), Err(SnapshotError::Corrupt(_))));
    }

    #[test]
    fn registry_auths_need_their_service_and_go_with_it() {
        let mut s = State::default();
        let auth = RegistryAuth { username: "u".into(), password: "p".into() };
        let set = |auth: Option<RegistryAuth>| Op::SetRegistryAuth { service_id: "s".into(), auth };
        let r = s.apply(1, &entry(vec![set(Some(auth.clone()))]));
        assert_eq!(r.rejected.len(), 1, "no such service");
        assert!(s.registry_auths.is_empty());
        s.apply(2, &entry(vec![Op::PutService(service("s", "web")), set(Some(auth.clone()))]));
        assert_eq!(s.registry_auths["s"], auth);
        assert_eq!(State::restore(&s.snapshot()).unwrap().registry_auths["s"], auth);
        s.apply(3, &entry(vec![set(None)]));
        assert!(s.registry_auths.is_empty());
        s.apply(4, &entry(vec![set(Some(auth)), Op::DeleteService { id: "s".into() }]));
        assert!(s.registry_auths.is_empty(), "gone with the service");
    }

    #[test]
    fn in_place_restarts_count_once_per_session_on_the_proposer_clock_and_go_with_their_task() {
        const S: u64 = 1_000_000_000;
        let mut s = State::default();
        s.apply(1, &entry(vec![Op::CreateTask(task("t", "a", 1))]));
        let account = |session: u64, count: u64, ago_ms: Vec<u64>| {
            Op::SetRestartsInPlace(RestartsInPlace { task_id: "t".into(), session, count, ago_ms })
        };
        // Two restarts, 30 s and 10 s before the leader proposed them at 100 s.
        s.apply(2, &Entry { at: 100 * S, ops: vec![account(9, 2, vec![30_000, 10_000])] });
        let got = &s.restarts_in_place["t"];
        assert_eq!((got.total, got.at.clone()), (2, vec![70 * S, 90 * S]));
        // Said again (the report was repeated): nothing more, and not an error either.
        let r = s.apply(3, &Entry { at: 105 * S, ops: vec![account(9, 2, vec![35_000, 15_000])] });
        assert!(r.rejected.is_empty());
        assert_eq!(s.restarts_in_place["t"].total, 2);
        // A third in the same session: only the newest time is new.
        s.apply(4, &Entry { at: 110 * S, ops: vec![account(9, 3, vec![40_000, 20_000, 1_000])] });
        let got = &s.restarts_in_place["t"];
        assert_eq!((got.total, got.at.clone()), (3, vec![70 * S, 90 * S, 109 * S]));
        // The worker's daemon restarted: a new session counts from 0 again, on top.
        s.apply(5, &Entry { at: 120 * S, ops: vec![account(4, 1, vec![2_000])] });
        assert_eq!(s.restarts_in_place["t"].total, 4);
        // Ages beyond the clock (a leader in 1970) stop at 0; times stay bounded.
        s.apply(6, &Entry { at: 5, ops: vec![account(4, 200, vec![u64::MAX; 199])] });
        let got = &s.restarts_in_place["t"];
        assert_eq!(got.total, 203);
        assert_eq!(got.at.len(), shoal_shared::types::IN_PLACE_TIMES_MAX);
        assert!(got.at.iter().rev().take(60).all(|&at| at == 0));
        // An unknown task is rejected; a deleted task takes its count along.
        let r = s.apply(7, &entry(vec![Op::SetRestartsInPlace(RestartsInPlace { task_id: "x".into(), ..Default::default() })]));
        assert_eq!(r.rejected.len(), 1);
        s.apply(8, &entry(vec![Op::DeleteTask { id: "t".into() }]));
        assert!(s.restarts_in_place.is_empty());
    }

    #[test]
    fn update_starts_are_stamped_with_their_index() {
        use shoal_shared::types::{UpdateState, UpdateStatus};
        let mut s = State::default();
        let mut svc = service("a", "web");
        s.apply(1, &entry(vec![Op::PutService(svc.clone())]));
        svc.update_status = Some(UpdateStatus::started(UpdateState::Updating, 50, "update in progress"));
        s.apply(2, &entry(vec![Op::PutService(svc.clone())]));
        let started = |s: &State| s.services["a"].update_status.as_ref().map(|u| (u.state, u.started_index));
        assert_eq!(started(&s), Some((UpdateState::Updating, 2)));
        // Progress of the same update keeps its start, whatever the proposer sent.
        let done =
            UpdateStatus { state: UpdateState::Completed, completed_at: 60, ..UpdateStatus::started(UpdateState::Updating, 50, "x") };
        s.apply(3, &entry(vec![Op::SetUpdateStatus { id: "a".into(), status: done }]));
        assert_eq!(started(&s), Some((UpdateState::Completed, 2)));
        // A new update within the same clock tick is still a new start.
        s.apply(4, &entry(vec![Op::PutService(svc)]));
        assert_eq!(started(&s), Some((UpdateState::Updating, 4)));
        let rb = UpdateStatus::started(UpdateState::RollbackStarted, 50, "rolled back");
        let r = s.apply(5, &entry(vec![Op::RollbackService { id: "a".into(), status: rb.clone() }]));
        assert_eq!(r.rejected.len(), 1, "no previous spec");
        assert_eq!(started(&s), Some((UpdateState::Updating, 4)), "a rejected op changes nothing");
        s.services.get_mut("a").unwrap().previous_spec = Some(ServiceSpec::new("web", "busybox:1"));
        s.apply(6, &entry(vec![Op::RollbackService { id: "a".into(), status: rb }]));
        assert_eq!(started(&s), Some((UpdateState::RollbackStarted, 6)));
        assert_eq!(s.services["a"].spec.task.container.image, "busybox:1");
        assert_eq!(s.services["a"].previous_spec, None);
    }

    #[test]
    fn lookup_by_name_id_and_prefix() {
        let mut s = State::default();
        s.apply(1, &entry(vec![Op::PutService(service("abc123", "web")), Op::PutService(service("abd456", "db"))]));
        assert_eq!(s.find_service("web").unwrap().id, "abc123");
        assert_eq!(s.find_service("abd").unwrap().id, "abd456");
        assert!(s.find_service("ab").is_none(), "ambiguous prefix");
        assert!(s.find_service("").is_none());
        assert!(s.find_service("nope").is_none());
    }
}
