//! Snapshot versions 1 to 12 (before the secrets' parts), decoded through
//! frozen copies of their records (`shoal_shared::legacy`); built with the
//! `legacy` feature (on in every shipped binary but mips64le).

use super::*;
use shoal_shared::legacy::{ClusterV1, NodeV1, NodeV2, ServiceV1, ServiceV3, TaskV1, TaskV3};

/// The records at the head of every snapshot version, over the record
/// types of that version (postcard is positional: a version's bytes are
/// these fields, then the ones it added, in order).
#[derive(Deserialize)]
struct Records<C, N, S, T> {
    cluster: Option<C>,
    nodes: BTreeMap<String, N>,
    services: BTreeMap<String, S>,
    tasks: BTreeMap<String, T>,
    applied_index: u64,
}

/// Snapshot version 1: the pre-network records only (settings came in version 2).
type StateV1 = Records<ClusterV1, NodeV1, ServiceV1, TaskV1>;
/// Snapshot version 2: version 1 and the settings (networks came in version 3).
type StateV2 = (StateV1, SwarmSettings);
/// Snapshot version 3: today's fields, with the nodes before plugins.
type StateV3 = (Records<Cluster, NodeV2, ServiceV3, TaskV3>, SwarmSettings, BTreeMap<String, Network>, u32);
/// Snapshot version 4: version 5 without `autolock`.
type StateV4 = (Records<Cluster, Node, ServiceV3, TaskV3>, SwarmSettings, BTreeMap<String, Network>, u32);
/// Snapshot version 5: version 6 without `node_lost_after_ms`.
type StateV5 = (Records<Cluster, Node, ServiceV3, TaskV3>, SwarmSettings, BTreeMap<String, Network>, u32, Autolock);
/// Snapshot version 6: version 7 without `link_profile`.
type StateV6 = (Records<Cluster, Node, ServiceV3, TaskV3>, SwarmSettings, BTreeMap<String, Network>, u32, Autolock, u64);
/// Snapshot version 7: version 8 without `restarts_in_place`.
type StateV7 = (Records<Cluster, Node, ServiceV3, TaskV3>, SwarmSettings, BTreeMap<String, Network>, u32, Autolock, u64, LinkProfile);
/// Snapshot version 8: version 9 without `autopilot`.
type StateV8 = (
    Records<Cluster, Node, ServiceV3, TaskV3>,
    SwarmSettings,
    BTreeMap<String, Network>,
    u32,
    Autolock,
    u64,
    LinkProfile,
    BTreeMap<String, InPlaceRestarts>,
);
/// Snapshot version 9: version 10 without `registry_auths`.
type StateV9 = (
    Records<Cluster, Node, ServiceV3, TaskV3>,
    SwarmSettings,
    BTreeMap<String, Network>,
    u32,
    Autolock,
    u64,
    LinkProfile,
    BTreeMap<String, InPlaceRestarts>,
    AutopilotSettings,
);

/// Snapshot version 10: version 11 without `layer_sharing_off`.
type StateV10 = (
    Records<Cluster, Node, ServiceV3, TaskV3>,
    SwarmSettings,
    BTreeMap<String, Network>,
    u32,
    Autolock,
    u64,
    LinkProfile,
    BTreeMap<String, InPlaceRestarts>,
    AutopilotSettings,
    BTreeMap<String, RegistryAuth>,
);

/// Snapshot version 12: version 13 without `file_parts`.
type StateV12 = (
    Records<Cluster, Node, Service, Task>,
    SwarmSettings,
    BTreeMap<String, Network>,
    u32,
    Autolock,
    u64,
    LinkProfile,
    BTreeMap<String, InPlaceRestarts>,
    AutopilotSettings,
    BTreeMap<String, RegistryAuth>,
    bool,
    BTreeMap<String, StoredFile>,
    BTreeMap<String, StoredFile>,
);

/// Snapshot version 11: version 12 without `secrets` and `configs`, its
/// services and tasks before secrets.
type StateV11 = (
    Records<Cluster, Node, ServiceV3, TaskV3>,
    SwarmSettings,
    BTreeMap<String, Network>,
    u32,
    Autolock,
    u64,
    LinkProfile,
    BTreeMap<String, InPlaceRestarts>,
    AutopilotSettings,
    BTreeMap<String, RegistryAuth>,
    bool,
);

impl<C: Into<Cluster>, N: Into<Node>, S: Into<Service>, T: Into<Task>> Records<C, N, S, T> {
    /// Today's state from an older snapshot's records and the fields after them.
    fn into_state(self, settings: SwarmSettings, networks: BTreeMap<String, Network>, last_port: u32) -> State {
        let Records { cluster, nodes, services, tasks, applied_index } = self;
        State {
            cluster: cluster.map(Into::into),
            nodes: nodes.into_iter().map(|(k, v)| (k, v.into())).collect(),
            services: services.into_iter().map(|(k, v)| (k, v.into())).collect(),
            tasks: tasks.into_iter().map(|(k, v)| (k, v.into())).collect(),
            applied_index,
            settings,
            networks,
            last_port,
            autolock: Autolock::default(),
            node_lost_after_ms: 0,
            link_profile: LinkProfile::Lan,
            restarts_in_place: BTreeMap::new(),
            autopilot: AutopilotSettings::default(),
            registry_auths: BTreeMap::new(),
            layer_sharing_off: false,
            secrets: BTreeMap::new(),
            configs: BTreeMap::new(),
            file_parts: BTreeMap::new(),
        }
    }
}

/// Restores a snapshot of version `v` (1 to 12).
pub(super) fn restore(v: u8, body: &[u8]) -> Result<State, SnapshotError> {
    let corrupt = |e: postcard::Error| SnapshotError::Corrupt(e.to_string());
    match v {
        1 => postcard::from_bytes::<StateV1>(body).map(|r| r.into_state(SwarmSettings::default(), BTreeMap::new(), 0)).map_err(corrupt),
        2 => postcard::from_bytes::<StateV2>(body).map(|(r, settings)| r.into_state(settings, BTreeMap::new(), 0)).map_err(corrupt),
        3 => postcard::from_bytes::<StateV3>(body).map(|(r, settings, nets, port)| r.into_state(settings, nets, port)).map_err(corrupt),
        4 => postcard::from_bytes::<StateV4>(body).map(|(r, settings, nets, port)| r.into_state(settings, nets, port)).map_err(corrupt),
        5 => postcard::from_bytes::<StateV5>(body)
            .map(|(r, settings, nets, port, autolock)| State { autolock, ..r.into_state(settings, nets, port) })
            .map_err(corrupt),
        6 => postcard::from_bytes::<StateV6>(body)
            .map(|(r, settings, nets, port, autolock, node_lost_after_ms)| State {
                autolock,
                node_lost_after_ms,
                ..r.into_state(settings, nets, port)
            })
            .map_err(corrupt),
        7 => postcard::from_bytes::<StateV7>(body)
            .map(|(r, settings, nets, port, autolock, node_lost_after_ms, link_profile)| State {
                autolock,
                node_lost_after_ms,
                link_profile,
                ..r.into_state(settings, nets, port)
            })
            .map_err(corrupt),
        8 => postcard::from_bytes::<StateV8>(body)
            .map(|(r, settings, nets, port, autolock, node_lost_after_ms, link_profile, restarts_in_place)| State {
                autolock,
                node_lost_after_ms,
                link_profile,
                restarts_in_place,
                ..r.into_state(settings, nets, port)
            })
            .map_err(corrupt),
        9 => postcard::from_bytes::<StateV9>(body)
            .map(|(r, settings, nets, port, autolock, node_lost_after_ms, link_profile, restarts_in_place, autopilot)| State {
                autolock,
                node_lost_after_ms,
                link_profile,
                restarts_in_place,
                autopilot,
                ..r.into_state(settings, nets, port)
            })
            .map_err(corrupt),
        10 => postcard::from_bytes::<StateV10>(body)
            .map(|(r, settings, nets, port, autolock, node_lost_after_ms, link_profile, restarts_in_place, autopilot, registry_auths)| {
                State {
                    autolock,
                    node_lost_after_ms,
                    link_profile,
                    restarts_in_place,
                    autopilot,
                    registry_auths,
                    ..r.into_state(settings, nets, port)
                }
            })
            .map_err(corrupt),
        11 => postcard::from_bytes::<StateV11>(body)
            .map(
                |(
                    r,
                    settings,
                    nets,
                    port,
                    autolock,
                    node_lost_after_ms,
                    link_profile,
                    restarts_in_place,
                    autopilot,
                    registry_auths,
                    layer_sharing_off,
                )| {
                    State {
                        autolock,
                        node_lost_after_ms,
                        link_profile,
                        restarts_in_place,
                        autopilot,
                        registry_auths,
                        layer_sharing_off,
                        ..r.into_state(settings, nets, port)
                    }
                },
            )
            .map_err(corrupt),
        12 => postcard::from_bytes::<StateV12>(body)
            .map(
                |(
                    r,
                    settings,
                    nets,
                    port,
                    autolock,
                    node_lost_after_ms,
                    link_profile,
                    restarts_in_place,
                    autopilot,
                    registry_auths,
                    layer_sharing_off,
                    secrets,
                    configs,
                )| {
                    State {
                        autolock,
                        node_lost_after_ms,
                        link_profile,
                        restarts_in_place,
                        autopilot,
                        registry_auths,
                        layer_sharing_off,
                        secrets,
                        configs,
                        ..r.into_state(settings, nets, port)
                    }
                },
            )
            .map_err(corrupt),
        _ => Err(SnapshotError::Version(v)),
    }
}
