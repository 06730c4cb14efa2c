//! `inspect` output: Swarm's JSON field names and defaults, and `--pretty`.

use super::output::rfc3339;
use serde_json::{json, Map, Value};
use shoal_shared::types::{
    FailureAction, MountKind, Node, NodeRole, Plugin, Service, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder, PUBLISH_MODE_HOST,
};

/// Docker's `UpdateConfig`: `Delay` and `Monitor` are `omitempty`, the
/// ratio a Go float (`0`, not `0.0`).
fn update_json(u: &UpdateConfig) -> Value {
    let mut m = Map::new();
    m.insert("Parallelism".into(), json!(u.parallelism));
    if u.delay_ns > 0 {
        m.insert("Delay".into(), json!(u.delay_ns));
    }
    m.insert("FailureAction".into(), json!(failure_action(u.failure_action)));
    if u.monitor_ns > 0 {
        m.insert("Monitor".into(), json!(u.monitor_ns));
    }
    m.insert("MaxFailureRatio".into(), super::output::go_float(u.max_failure_ratio));
    m.insert("Order".into(), json!(order(u.order)));
    Value::Object(m)
}

fn failure_action(a: FailureAction) -> &'static str {
    match a {
        FailureAction::Pause => "pause",
        FailureAction::Continue => "continue",
        FailureAction::Rollback => "rollback",
    }
}

fn order(o: UpdateOrder) -> &'static str {
    match o {
        UpdateOrder::StopFirst => "stop-first",
        UpdateOrder::StartFirst => "start-first",
    }
}

/// `*:8080->80/tcp` style, for `service ls`: ingress ports only, as Docker's
/// (host-mode ports belong to tasks, not to the service's routing mesh).
pub(crate) fn ports_shown(spec: &ServiceSpec) -> String {
    shown(&spec.ports)
}

/// [`ports_shown`] of the allocated ports (automatic ones filled in) once
/// the leader allocated them, else of the spec.
pub(crate) fn endpoint_ports_shown(s: &Service) -> String {
    if s.endpoint.ports.is_empty() {
        ports_shown(&s.spec)
    } else {
        shown(&s.endpoint.ports)
    }
}

fn shown(ports: &[shoal_shared::types::PortConfig]) -> String {
    let ingress = ports.iter().filter(|p| p.publish_mode != PUBLISH_MODE_HOST);
    ingress.map(|p| format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol)).collect::<Vec<_>>().join(", ")
}

/// A list as Go prints a `[]string` (`[a b]`), for `--pretty`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

fn spec_json(spec: &ServiceSpec) -> Value {
    let c = &spec.task.container;
    let mut cs = Map::new();
    cs.insert("Image".into(), json!(c.image));
    if !c.labels.is_empty() {
        cs.insert("Labels".into(), json!(c.labels));
    }
    if !c.command.is_empty() {
        cs.insert("Command".into(), json!(c.command));
    }
    if !c.args.is_empty() {
        cs.insert("Args".into(), json!(c.args));
    }
    if !c.env.is_empty() {
        cs.insert("Env".into(), json!(c.env));
    }
    if !c.dir.is_empty() {
        cs.insert("Dir".into(), json!(c.dir));
    }
    if !c.user.is_empty() {
        cs.insert("User".into(), json!(c.user));
    }
    if !c.hostname.is_empty() {
        cs.insert("Hostname".into(), json!(c.hostname));
    }
    cs.insert("Init".into(), json!(c.init));
    if !c.mounts.is_empty() {
        let mounts: Vec<Value> = c
            .mounts
            .iter()
            .map(|m| {
                let kind = match m.kind {
                    MountKind::Volume => "volume",
                    MountKind::Bind => "bind",
                    MountKind::Tmpfs => "tmpfs",
                };
                // `ReadOnly` is `omitempty` in Docker's mount.
                let mut v = json!({"Type": kind, "Source": m.source, "Target": m.target});
                if m.read_only {
                    v["ReadOnly"] = json!(true);
                }
                v
            })
            .collect();
        cs.insert("Mounts".into(), json!(mounts));
    }
    // Docker's shapes: the file's name is the target, the mode a number.
    let file_refs = |refs: &[shoal_shared::types::FileReference], id: &str, name: &str| -> Value {
        Value::Array(
            refs.iter()
                .map(|r| json!({"File": {"Name": r.target, "UID": r.uid, "GID": r.gid, "Mode": r.mode}, id: r.id, name: r.name}))
                .collect(),
        )
    };
    if !c.secrets.is_empty() {
        cs.insert("Secrets".into(), file_refs(&c.secrets, "SecretID", "SecretName"));
    }
    if !c.configs.is_empty() {
        cs.insert("Configs".into(), file_refs(&c.configs, "ConfigID", "ConfigName"));
    }
    cs.insert("StopGracePeriod".into(), json!(c.stop_grace_ns));
    if !c.stop_signal.is_empty() {
        cs.insert("StopSignal".into(), json!(c.stop_signal));
    }
    if let Some(h) = &c.healthcheck {
        cs.insert("Healthcheck".into(), super::health::json(h));
    }
    cs.insert("DNSConfig".into(), json!({}));
    cs.insert("Isolation".into(), json!("default"));
    let res = &spec.task.resources;
    let set = |r: &shoal_shared::types::ResourceSet| {
        let mut m = Map::new();
        if r.nano_cpus != 0 {
            m.insert("NanoCPUs".into(), json!(r.nano_cpus));
        }
        if r.memory_bytes != 0 {
            m.insert("MemoryBytes".into(), json!(r.memory_bytes));
        }
        Value::Object(m)
    };
    let r = &spec.task.restart;
    let mut placement = Map::new();
    if !spec.task.placement.constraints.is_empty() {
        placement.insert("Constraints".into(), json!(spec.task.placement.constraints));
    }
    if !spec.task.placement.platforms.is_empty() {
        let platforms: Vec<Value> = spec
            .task
            .placement
            .platforms
            .iter()
            .map(|p| {
                let mut m = Map::new();
                if !p.architecture.is_empty() {
                    m.insert("Architecture".into(), json!(p.architecture));
                }
                m.insert("OS".into(), json!(p.os));
                if !p.variant.is_empty() {
                    m.insert("Variant".into(), json!(p.variant));
                }
                Value::Object(m)
            })
            .collect();
        placement.insert("Platforms".into(), json!(platforms));
    }
    if !spec.task.placement.preferences.is_empty() {
        let prefs: Vec<Value> = spec.task.placement.preferences.iter().map(|d| json!({"Spread": {"SpreadDescriptor": d}})).collect();
        placement.insert("Preferences".into(), json!(prefs));
    }
    if spec.task.placement.max_replicas_per_node > 0 {
        placement.insert("MaxReplicas".into(), json!(spec.task.placement.max_replicas_per_node));
    }
    let mut restart = Map::new();
    restart.insert("Condition".into(), json!(r.condition.as_str()));
    restart.insert("Delay".into(), json!(r.delay_ns));
    restart.insert("MaxAttempts".into(), json!(r.max_attempts));
    if r.window_ns > 0 {
        restart.insert("Window".into(), json!(r.window_ns));
    }
    let mode = match spec.mode {
        ServiceMode::Replicated { replicas } => json!({"Replicated": {"Replicas": replicas}}),
        ServiceMode::Global => json!({"Global": {}}),
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
            json!({"ReplicatedJob": {"MaxConcurrent": max_concurrent, "TotalCompletions": total_completions}})
        }
        ServiceMode::GlobalJob => json!({"GlobalJob": {}}),
    };
    let mut out = json!({
        "Name": spec.name,
        "Labels": spec.labels,
        "TaskTemplate": {
            "ContainerSpec": Value::Object(cs),
            "Resources": {"Limits": set(&res.limits), "Reservations": set(&res.reservations)},
            "RestartPolicy": Value::Object(restart),
            "Placement": Value::Object(placement),
            "ForceUpdate": spec.task.force_update,
            "Runtime": "container",
        },
        "Mode": mode,
        "UpdateConfig": update_json(&spec.update),
        "RollbackConfig": update_json(&spec.rollback),
        "EndpointSpec": {"Mode": spec.endpoint_mode.as_str()},
    });
    if !spec.task.networks.is_empty() {
        let nets: Vec<Value> = spec
            .task
            .networks
            .iter()
            .map(|n| if n.aliases.is_empty() { json!({"Target": n.target}) } else { json!({"Target": n.target, "Aliases": n.aliases}) })
            .collect();
        out["TaskTemplate"]["Networks"] = json!(nets);
    }
    if !spec.ports.is_empty() {
        out["EndpointSpec"]["Ports"] = ports_json(&spec.ports);
    }
    out
}

fn ports_json(ports: &[shoal_shared::types::PortConfig]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"Protocol": p.protocol, "TargetPort": p.target_port, "PublishedPort": p.published_port, "PublishMode": p.publish_mode}))
        .collect();
    json!(ports)
}

/// Swarm's `Endpoint`: the spec, the allocated ports and the VIPs.
fn endpoint_json(s: &Service) -> Value {
    let mut spec = json!({"Mode": s.spec.endpoint_mode.as_str()});
    if !s.spec.ports.is_empty() {
        spec["Ports"] = ports_json(&s.spec.ports);
    }
    let mut v = json!({"Spec": spec});
    if !s.endpoint.ports.is_empty() {
        v["Ports"] = ports_json(&s.endpoint.ports);
    }
    if !s.endpoint.virtual_ips.is_empty() {
        let vips: Vec<Value> =
            s.endpoint.virtual_ips.iter().map(|v| json!({"NetworkID": v.network_id, "Addr": v.addr.to_string()})).collect();
        v["VirtualIPs"] = json!(vips);
    }
    v
}

/// A service as `docker service inspect` prints it.
pub(crate) fn service_json(s: &Service) -> Value {
    let mut v = json!({
        "ID": s.id,
        "Version": {"Index": s.meta.version},
        "CreatedAt": rfc3339(s.meta.created_at),
        "UpdatedAt": rfc3339(s.meta.updated_at),
        "Spec": spec_json(&s.spec),
    });
    if let Some(p) = &s.previous_spec {
        v["PreviousSpec"] = spec_json(p);
    }
    v["Endpoint"] = endpoint_json(s);
    if let Some(u) = &s.update_status {
        let mut st = json!({"State": u.state.as_str(), "StartedAt": rfc3339(u.started_at), "Message": u.message});
        if u.completed_at > 0 {
            st["CompletedAt"] = json!(rfc3339(u.completed_at));
        }
        v["UpdateStatus"] = st;
    }
    v
}

/// `service inspect --pretty`.
pub(crate) fn service_pretty(s: &Service) -> String {
    let spec = &s.spec;
    let mut out = format!("\nID:\t\t{}\nName:\t\t{}\n", s.id, spec.name);
    if !spec.labels.is_empty() {
        out.push_str("Labels:\n");
        for (k, v) in &spec.labels {
            out.push_str(&format!(" {k}={v}\n"));
        }
    }
    match spec.mode {
        ServiceMode::Replicated { replicas } => out.push_str(&format!("Service Mode:\tReplicated\n Replicas:\t{replicas}\n")),
        ServiceMode::Global => out.push_str("Service Mode:\tGlobal\n"),
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => out.push_str(&format!(
            "Service Mode:\tReplicatedJob\n Max Concurrent:\t{max_concurrent}\n Total Completions:\t{total_completions}\n"
        )),
        ServiceMode::GlobalJob => out.push_str("Service Mode:\tGlobalJob\n"),
    }
    if let Some(u) = &s.update_status {
        out.push_str(&format!("UpdateStatus:\n State:\t\t{}\n Started:\t{}\n", u.state.as_str(), rfc3339(u.started_at)));
        if u.completed_at > 0 {
            out.push_str(&format!(" Completed:\t{}\n", rfc3339(u.completed_at)));
        }
        out.push_str(&format!(" Message:\t{}\n", u.message));
    }
    let p = &spec.task.placement;
    out.push_str("Placement:\n");
    if !p.constraints.is_empty() {
        out.push_str(&format!(" Constraints:\t{}\n", go_list(&p.constraints)));
    }
    if !p.preferences.is_empty() {
        let prefs: Vec<String> = p.preferences.iter().map(|d| format!("spread={d}")).collect();
        out.push_str(&format!(" Preferences:   {}\n", go_list(&prefs)));
    }
    if p.max_replicas_per_node > 0 {
        out.push_str(&format!(" Max Replicas Per Node:   {}\n", p.max_replicas_per_node));
    }
    for (title, u, word) in [("UpdateConfig", &spec.update, "Update"), ("RollbackConfig", &spec.rollback, "Rollback")] {
        let order_label = format!("{word} order:");
        out.push_str(&format!(
            "{title}:\n Parallelism:\t{}\n On failure:\t{}\n Monitoring Period: {}s\n Max failure ratio: {}\n {order_label:<18} {}\n",
            u.parallelism,
            failure_action(u.failure_action),
            u.monitor_ns / 1_000_000_000,
            u.max_failure_ratio,
            order(u.order)
        ));
    }
    let c = &spec.task.container;
    out.push_str(&format!("ContainerSpec:\n Image:\t\t{}\n", c.image));
    if !c.args.is_empty() {
        out.push_str(&format!(" Args:\t\t{}\n", c.args.join(" ")));
    }
    if !c.env.is_empty() {
        out.push_str(&format!(" Env:\t\t{}\n", c.env.join(" ")));
    }
    out.push_str(&format!(" Init:\t\t{}\n", c.init));
    out.push_str("Resources:\nEndpoint Mode:\tvip\n");
    if !spec.ports.is_empty() {
        out.push_str("Ports:\n");
        for p in &spec.ports {
            out.push_str(&format!(
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}\n",
                p.published_port, p.protocol, p.target_port, p.publish_mode
            ));
        }
    }
    if let Some(h) = &c.healthcheck {
        out.push_str(&super::health::pretty(h));
    }
    out
}

/// A node as `docker node inspect` prints it.
pub(crate) fn node_json(n: &Node, leader: bool) -> Value {
    let role = n.role.as_str();
    let mut v = json!({
        "ID": n.id,
        "Version": {"Index": n.meta.version},
        "CreatedAt": rfc3339(n.meta.created_at),
        "UpdatedAt": rfc3339(n.meta.updated_at),
        "Spec": {"Labels": n.labels, "Role": role, "Availability": n.availability.as_title().to_lowercase()},
        "Description": {
            "Hostname": n.description.hostname,
            "Platform": {"Architecture": n.description.platform.architecture, "OS": n.description.platform.os, "Variant": n.description.platform.variant},
            "Resources": {"NanoCPUs": n.description.resources.nano_cpus, "MemoryBytes": n.description.resources.memory_bytes},
            "Engine": {
                "EngineVersion": n.description.engine_version,
                "Labels": n.description.engine_labels,
                "Plugins": n.description.plugins.iter().map(|p| json!({"Type": p.kind, "Name": p.name})).collect::<Vec<_>>(),
            },
        },
        "Status": {"State": n.state.as_title().to_lowercase(), "Addr": n.addr.split(':').next().unwrap_or("")},
    });
    // Docker's status message: what is wrong with the node now (a full disk).
    let message = status_message(n);
    if !message.is_empty() {
        v["Status"]["Message"] = json!(message);
    }
    // Not Docker's: why the kernel probe found a piece of networking missing.
    if !n.description.warnings.is_empty() {
        v["Description"]["Engine"]["Warnings"] = json!(n.description.warnings);
    }
    if n.role == NodeRole::Manager {
        v["ManagerStatus"] = json!({"Leader": leader, "Reachability": "reachable", "Addr": n.manager_addr});
    }
    v
}

/// The node's status message: its full-disk warnings, joined.
fn status_message(n: &Node) -> String {
    let full: Vec<&str> =
        n.description.warnings.iter().filter(|w| w.starts_with(shoal_shared::types::DISK_FULL_WARNING)).map(String::as_str).collect();
    full.join("; ")
}

/// `node inspect --pretty`.
pub(crate) fn node_pretty(n: &Node, leader: bool) -> String {
    let mut out = format!(
        "ID:\t\t\t{}\nHostname:\t\t{}\nJoined at:\t\t{}\nStatus:\n State:\t\t\t{}\n Availability:\t\t{}\n Address:\t\t{}\n",
        n.id,
        n.description.hostname,
        rfc3339(n.meta.created_at),
        n.state.as_title(),
        n.availability.as_title(),
        n.addr.split(':').next().unwrap_or("")
    );
    let message = status_message(n);
    if !message.is_empty() {
        out.push_str(&format!(" Message:\t\t{message}\n"));
    }
    if n.role == NodeRole::Manager {
        out.push_str(&format!(
            "Manager Status:\n Address:\t\t{}\n Raft Status:\t\tReachable\n Leader:\t\t{}\n",
            n.manager_addr,
            if leader { "Yes" } else { "No" }
        ));
    }
    let p = &n.description.platform;
    out.push_str(&format!(
        "Platform:\n Operating System:\t{}\n Architecture:\t\t{}{}\nResources:\n CPUs:\t\t\t{}\n Memory:\t\t{:.1}GiB\n",
        p.os,
        p.architecture,
        if p.variant.is_empty() { String::new() } else { format!("/{}", p.variant) },
        n.description.resources.nano_cpus / 1_000_000_000,
        n.description.resources.memory_bytes as f64 / (1u64 << 30) as f64,
    ));
    let by_kind = plugins_by_kind(&n.description.plugins);
    if !by_kind.is_empty() {
        out.push_str("Plugins:\n");
        for (kind, names) in by_kind {
            out.push_str(&format!(" {kind}:\t\t{}\n", names.join(", ")));
        }
    }
    out.push_str(&format!("Engine Version:\t\t{}\n", n.description.engine_version));
    for w in &n.description.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    out
}

/// Plugin names by kind (`Network` -> `bridge`, `host`, ...), both sorted, as Docker lists them.
pub(crate) fn plugins_by_kind(plugins: &[Plugin]) -> std::collections::BTreeMap<&str, Vec<&str>> {
    let mut out: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for p in plugins {
        out.entry(p.kind.as_str()).or_default().push(p.name.as_str());
    }
    for names in out.values_mut() {
        names.sort_unstable();
        names.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::types::{Meta, PortConfig};

    fn service(edit: impl FnOnce(&mut ServiceSpec)) -> Service {
        let mut spec = ServiceSpec::new("web", "busybox");
        edit(&mut spec);
        Service { id: "s1".into(), meta: Meta::default(), spec, previous_spec: None, update_status: None, endpoint: Default::default() }
    }

    /// Checks the inspect JSON at `pointer` and that the `--pretty` output holds each of `pretty`.
    fn check(s: &Service, pointer: &str, json: Value, pretty: &[&str]) {
        assert_eq!(service_json(s).pointer(pointer), Some(&json), "{pointer}");
        let text = service_pretty(s);
        for line in pretty {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn omitempty_and_go_floats_as_docker_prints_them() {
        // Docker 20.10: `"UpdateConfig": {"Parallelism": 1, "FailureAction": "pause",
        // "Monitor": 5000000000, "MaxFailureRatio": 0, "Order": "stop-first"}`.
        let s = service(|s| {
            s.update.delay_ns = 0;
            s.rollback.delay_ns = 10_000_000_000;
            s.rollback.max_failure_ratio = 0.2;
            s.task.container.mounts = vec![
                shoal_shared::types::Mount { kind: MountKind::Volume, source: "v".into(), target: "/v".into(), read_only: false },
                shoal_shared::types::Mount { kind: MountKind::Bind, source: "/b".into(), target: "/b".into(), read_only: true },
            ];
        });
        let v = service_json(&s);
        let u = v.pointer("/Spec/UpdateConfig").unwrap();
        assert_eq!(u.get("Delay"), None, "{u}");
        assert_eq!(u["MaxFailureRatio"].to_string(), "0");
        let r = v.pointer("/Spec/RollbackConfig").unwrap();
        assert_eq!(r["Delay"], 10_000_000_000u64);
        assert_eq!(r["MaxFailureRatio"].to_string(), "0.2");
        let m = v.pointer("/Spec/TaskTemplate/ContainerSpec/Mounts").unwrap();
        assert_eq!(m[0].get("ReadOnly"), None);
        assert_eq!(m[1]["ReadOnly"], true);
        // Four-space indentation, as Docker's `inspect`.
        let text = super::super::output::pretty_json(&vec![json!({"A": [1]})]);
        assert_eq!(text, "[\n    {\n        \"A\": [\n            1\n        ]\n    }\n]");
    }

    #[test]
    fn nodes_show_their_plugins_and_probe_warnings() {
        let mut n = Node {
            id: "n1".into(),
            meta: Meta::default(),
            role: NodeRole::Worker,
            availability: shoal_shared::types::Availability::Active,
            labels: Default::default(),
            description: Default::default(),
            state: shoal_shared::types::NodeState::Ready,
            addr: "10.0.0.2:2377".into(),
            manager_addr: String::new(),
            attachments: Vec::new(),
        };
        n.description.plugins = ["overlay", "bridge", "host", "null"].map(Plugin::network).to_vec();
        let v = node_json(&n, false);
        let want = json!([
            {"Type": "Network", "Name": "overlay"},
            {"Type": "Network", "Name": "bridge"},
            {"Type": "Network", "Name": "host"},
            {"Type": "Network", "Name": "null"},
        ]);
        assert_eq!(v.pointer("/Description/Engine/Plugins"), Some(&want));
        assert_eq!(v.pointer("/Description/Engine/Warnings"), None, "only when the probe found something missing");
        assert!(
            node_pretty(&n, false).contains("Plugins:\n Network:\t\tbridge, host, null, overlay\nEngine Version:"),
            "{}",
            node_pretty(&n, false)
        );
        n.description.plugins.retain(|p| p.name != "overlay");
        n.description.warnings = vec!["VXLAN (kernel option CONFIG_VXLAN) devices cannot be made: not supported".into()];
        let v = node_json(&n, false);
        assert_eq!(v.pointer("/Description/Engine/Plugins").and_then(Value::as_array).map(Vec::len), Some(3));
        assert_eq!(v.pointer("/Description/Engine/Warnings/0").and_then(Value::as_str), Some(n.description.warnings[0].as_str()));
        assert!(node_pretty(&n, false).ends_with("WARNING: VXLAN (kernel option CONFIG_VXLAN) devices cannot be made: not supported\n"));
        assert_eq!(v.pointer("/Status/Message"), None, "no message while nothing is wrong");
        // A full disk is the node's status message.
        n.description.warnings.push(format!("{} data dir /d has under 1 MiB free", shoal_shared::types::DISK_FULL_WARNING));
        let v = node_json(&n, false);
        assert_eq!(v.pointer("/Status/Message").and_then(Value::as_str), Some("disk full: data dir /d has under 1 MiB free"));
        assert!(
            node_pretty(&n, false).contains(" Message:\t\tdisk full: data dir /d has under 1 MiB free\n"),
            "{}",
            node_pretty(&n, false)
        );
    }

    #[test]
    fn placement_shows_preferences_as_docker() {
        let s = service(|spec| {
            spec.task.placement.constraints = vec!["node.role==worker".into()];
            spec.task.placement.preferences = vec!["node.labels.zone".into(), "engine.labels.disk".into()];
            spec.task.placement.max_replicas_per_node = 2;
        });
        check(
            &s,
            "/Spec/TaskTemplate/Placement",
            json!({
                "Constraints": ["node.role==worker"],
                "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}, {"Spread": {"SpreadDescriptor": "engine.labels.disk"}}],
                "MaxReplicas": 2,
            }),
            &[
                "Placement:\n Constraints:\t[node.role==worker]\n Preferences:   [spread=node.labels.zone spread=engine.labels.disk]\n Max Replicas Per Node:   2\n",
            ],
        );
        // Empty placement fields are omitted, as Docker's.
        check(&service(|_| {}), "/Spec/TaskTemplate/Placement", json!({}), &["Placement:\nUpdateConfig:"]);
    }

    #[test]
    fn ports_show_their_mode() {
        let port =
            |mode: &str, published_port| PortConfig { protocol: "tcp".into(), target_port: 80, published_port, publish_mode: mode.into() };
        let s = service(|spec| spec.ports = vec![port("host", 8080), port("ingress", 9090)]);
        check(
            &s,
            "/Spec/EndpointSpec/Ports/0",
            json!({"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}),
            &["Ports:\n PublishedPort = 8080\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = host\n"],
        );
        assert_eq!(ports_shown(&s.spec), "*:9090->80/tcp", "service ls shows ingress ports only");
    }
}
