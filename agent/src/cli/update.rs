//! `shoal service update` and `shoal service rollback`, and the
//! `--update-*`/`--rollback-*` flags that `service create` shares.
//!
//! The CLI reads the service, applies the flags to a copy of its spec (Swarm's
//! `--*-add`/`--*-rm` semantics) and sends the whole spec; the daemon
//! validates it, pins a changed image and starts the rolling update. Without
//! `-d`, progress is shown until the update completes (or pauses, or rolls
//! back), as Docker's.

use super::service::{progress, Watch, PROGRESS_MS_DEFAULT};
use super::{call, parse};
use crate::client::{REPLY_MS_DEFAULT, REPLY_MS_IMAGES};
use anyhow::bail;
use clap::Args;
use shoal_shared::api::{Reply, Request};
use shoal_shared::types::{
    EndpointMode, FailureAction, Mount, NetworkAttachmentConfig, PortConfig, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
};

/// `--update-*` and `--rollback-*`: Swarm's UpdateConfig and RollbackConfig.
#[derive(Args, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Maximum number of tasks updated simultaneously (0 to update all at once).
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h).
    #[arg(long, value_parser = parse::duration_ns)]
    update_delay: Option<u64>,
    /// Action on update failure: pause, continue or rollback.
    #[arg(long, value_parser = parse::failure_action)]
    update_failure_action: Option<FailureAction>,
    /// Duration after each task update to monitor for failure.
    #[arg(long, value_parser = parse::duration_ns)]
    update_monitor: Option<u64>,
    /// Failure rate to tolerate during an update (0 to 1).
    #[arg(long)]
    update_max_failure_ratio: Option<f32>,
    /// Update order: start-first or stop-first.
    #[arg(long, value_parser = parse::update_order)]
    update_order: Option<UpdateOrder>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once).
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks.
    #[arg(long, value_parser = parse::duration_ns)]
    rollback_delay: Option<u64>,
    /// Action on rollback failure: pause or continue.
    #[arg(long, value_parser = parse::failure_action)]
    rollback_failure_action: Option<FailureAction>,
    /// Duration after each task rollback to monitor for failure.
    #[arg(long, value_parser = parse::duration_ns)]
    rollback_monitor: Option<u64>,
    /// Failure rate to tolerate during a rollback (0 to 1).
    #[arg(long)]
    rollback_max_failure_ratio: Option<f32>,
    /// Rollback order: start-first or stop-first.
    #[arg(long, value_parser = parse::update_order)]
    rollback_order: Option<UpdateOrder>,
}

impl PolicyArgs {
    /// Applies the given flags to the spec's update and rollback configs.
    pub(crate) fn apply(&self, spec: &mut ServiceSpec) -> anyhow::Result<()> {
        fn set(
            c: &mut UpdateConfig,
            p: Option<u64>,
            d: Option<u64>,
            f: Option<FailureAction>,
            m: Option<u64>,
            r: Option<f32>,
            o: Option<UpdateOrder>,
        ) {
            if let Some(p) = p {
                c.parallelism = p;
            }
            if let Some(d) = d {
                c.delay_ns = d;
            }
            if let Some(f) = f {
                c.failure_action = f;
            }
            if let Some(m) = m {
                c.monitor_ns = m;
            }
            if let Some(r) = r {
                c.max_failure_ratio = r;
            }
            if let Some(o) = o {
                c.order = o;
            }
        }
        for r in [self.update_max_failure_ratio, self.rollback_max_failure_ratio].into_iter().flatten() {
            if !(0.0..=1.0).contains(&r) {
                bail!("invalid max failure ratio {r}: use a number between 0 and 1");
            }
        }
        if self.rollback_failure_action == Some(FailureAction::Rollback) {
            bail!("invalid --rollback-failure-action \"rollback\": use pause or continue");
        }
        set(
            &mut spec.update,
            self.update_parallelism,
            self.update_delay,
            self.update_failure_action,
            self.update_monitor,
            self.update_max_failure_ratio,
            self.update_order,
        );
        set(
            &mut spec.rollback,
            self.rollback_parallelism,
            self.rollback_delay,
            self.rollback_failure_action,
            self.rollback_monitor,
            self.rollback_max_failure_ratio,
            self.rollback_order,
        );
        Ok(())
    }
}

#[derive(Args, Debug)]
pub(crate) struct UpdateArgs {
    /// Service image tag.
    #[arg(long)]
    image: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Container hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Number of tasks (a replicated job: completions).
    #[arg(long)]
    replicas: Option<u64>,
    /// Number of job tasks to run at once (replicated-job).
    #[arg(long)]
    max_concurrent: Option<u64>,
    /// Add or update an environment variable.
    #[arg(long)]
    env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long)]
    env_rm: Vec<String>,
    /// Add or update a service label.
    #[arg(long, value_parser = parse::key_value)]
    label_add: Vec<(String, String)>,
    /// Remove a label by its key.
    #[arg(long)]
    label_rm: Vec<String>,
    /// Add or update a container label.
    #[arg(long, value_parser = parse::key_value)]
    container_label_add: Vec<(String, String)>,
    /// Remove a container label by its key.
    #[arg(long)]
    container_label_rm: Vec<String>,
    /// Add or update a placement constraint.
    #[arg(long)]
    constraint_add: Vec<String>,
    /// Remove a constraint.
    #[arg(long)]
    constraint_rm: Vec<String>,
    /// Add a placement preference (spread=node.labels.zone), innermost last.
    #[arg(long, value_parser = parse::placement_pref)]
    placement_pref_add: Vec<String>,
    /// Remove a placement preference (spread=node.labels.zone).
    #[arg(long, value_parser = parse::placement_pref)]
    placement_pref_rm: Vec<String>,
    /// Maximum number of tasks per node (0 = unlimited).
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    #[command(flatten)]
    restart: super::service::RestartArgs,
    #[command(flatten)]
    resources: super::service::ResourceArgs,
    #[command(flatten)]
    health: super::health::HealthArgs,
    /// Add or update a mount (type=volume|bind|tmpfs,source=,destination=).
    #[arg(long, value_parser = parse::mount)]
    mount_add: Vec<Mount>,
    /// Remove a mount by its target path.
    #[arg(long)]
    mount_rm: Vec<String>,
    /// Add or update a secret: NAME or source=NAME,target=,uid=,gid=,mode=.
    #[arg(long, value_parser = parse::file_ref)]
    secret_add: Vec<shoal_shared::types::FileReference>,
    /// Remove a secret by name.
    #[arg(long)]
    secret_rm: Vec<String>,
    /// Add or update a config: NAME or source=NAME,target=,uid=,gid=,mode=.
    #[arg(long, value_parser = parse::file_ref)]
    config_add: Vec<shoal_shared::types::FileReference>,
    /// Remove a config by name.
    #[arg(long)]
    config_rm: Vec<String>,
    /// Add a network: NAME, or name=NAME,alias=ALIAS.
    #[arg(long, value_parser = parse::network)]
    network_add: Vec<NetworkAttachmentConfig>,
    /// Remove a network by name or id.
    #[arg(long)]
    network_rm: Vec<String>,
    /// Add or update a published port ([PUBLISHED:]TARGET[/PROTOCOL] or the long form).
    #[arg(long, value_parser = parse::publish)]
    publish_add: Vec<PortConfig>,
    /// Remove a published port: PORT[/PROTOCOL] (published or target port), or PUBLISHED:TARGET.
    #[arg(long)]
    publish_rm: Vec<String>,
    /// Endpoint mode: vip or dnsrr.
    #[arg(long, value_parser = parse::endpoint_mode)]
    endpoint_mode: Option<EndpointMode>,
    /// Service command args.
    #[arg(long, allow_hyphen_values = true)]
    args: Option<String>,
    /// Force update even if no changes require it.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Rollback to previous specification.
    #[arg(long)]
    rollback: bool,
    /// Send this client's registry credentials (`shoal login`) with the
    /// service, replacing those it has: the nodes that run its tasks pull with them.
    #[arg(long)]
    with_registry_auth: bool,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short, long)]
    detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Longest time to wait for convergence without -d.
    #[arg(long, value_parser = parse::duration_ns)]
    timeout: Option<u64>,
    /// Service to update.
    service: String,
}

/// Docker's `--env-add`/`--label-add` replace an existing key.
fn env_key(kv: &str) -> &str {
    kv.split_once('=').map(|(k, _)| k).unwrap_or(kv)
}

/// Applies the flags to a copy of the current spec.
pub(crate) fn apply(a: &UpdateArgs, current: &ServiceSpec) -> anyhow::Result<ServiceSpec> {
    let mut spec = current.clone();
    if let Some(image) = &a.image {
        spec.task.container.image = image.clone();
    }
    let c = &mut spec.task.container;
    for (flag, field) in [(&a.user, &mut c.user), (&a.workdir, &mut c.dir), (&a.hostname, &mut c.hostname)] {
        if let Some(v) = flag {
            field.clone_from(v);
        }
    }
    if let Some(n) = a.replicas {
        match &mut spec.mode {
            ServiceMode::Replicated { replicas } => *replicas = n,
            ServiceMode::ReplicatedJob { total_completions, .. } => *total_completions = n,
            ServiceMode::Global | ServiceMode::GlobalJob => bail!("--replicas can only be used with replicated or replicated-job mode"),
        }
    }
    if let Some(n) = a.max_concurrent {
        match &mut spec.mode {
            ServiceMode::ReplicatedJob { max_concurrent, .. } => *max_concurrent = n,
            _ => bail!("--max-concurrent can only be used with replicated-job mode"),
        }
    }
    let c = &mut spec.task.container;
    c.env.retain(|e| !a.env_rm.iter().any(|k| env_key(e) == env_key(k)) && !a.env_add.iter().any(|n| env_key(n) == env_key(e)));
    c.env.extend(a.env_add.iter().cloned());
    for k in &a.container_label_rm {
        c.labels.remove(k);
    }
    c.labels.extend(a.container_label_add.iter().cloned());
    c.mounts.retain(|m| !a.mount_rm.contains(&m.target) && !a.mount_add.iter().any(|n| n.target == m.target));
    c.mounts.extend(a.mount_add.iter().cloned());
    // Docker's: `--secret-rm` by name, `--secret-add` replaces one of the same name.
    for (refs, add, rm) in [(&mut c.secrets, &a.secret_add, &a.secret_rm), (&mut c.configs, &a.config_add, &a.config_rm)] {
        refs.retain(|r| !rm.contains(&r.name) && !add.iter().any(|n| n.name == r.name));
        refs.extend(add.iter().cloned());
    }
    if let Some(args) = &a.args {
        c.args = parse::words(args)?;
    }
    a.health.apply(&mut c.healthcheck)?;
    for k in &a.label_rm {
        spec.labels.remove(k);
    }
    spec.labels.extend(a.label_add.iter().cloned());
    let p = &mut spec.task.placement;
    p.constraints.retain(|c| !a.constraint_rm.contains(c));
    for c in &a.constraint_add {
        if !p.constraints.contains(c) {
            p.constraints.push(c.clone());
        }
    }
    // Docker's order: removals first, then additions at the end (innermost).
    p.preferences.retain(|d| !a.placement_pref_rm.contains(d));
    for d in &a.placement_pref_add {
        if !p.preferences.contains(d) {
            p.preferences.push(d.clone());
        }
    }
    if let Some(m) = a.replicas_max_per_node {
        p.max_replicas_per_node = m;
    }
    a.restart.apply(&mut spec.task.restart);
    a.resources.apply(&mut spec.task.resources);
    // Networks: `--network-rm` names an id (resolved by `update`) or a target as stored.
    spec.task.networks.retain(|n| !a.network_rm.iter().any(|r| r == &n.target));
    for n in &a.network_add {
        spec.task.networks.retain(|m| m.target != n.target);
        spec.task.networks.push(n.clone());
    }
    for r in &a.publish_rm {
        let (port, proto) = r.split_once('/').map_or((r.as_str(), None), |(p, q)| (p, Some(q.to_ascii_lowercase())));
        let (published, target) = match port.split_once(':') {
            Some((p, t)) => (p.parse::<u32>().ok(), t.parse::<u32>().ok()),
            None => (None, port.parse::<u32>().ok()),
        };
        let Some(target) = target else { bail!("invalid --publish-rm {r:?}: use PORT[/PROTOCOL] or PUBLISHED:TARGET") };
        let before = spec.ports.len();
        spec.ports.retain(|p| {
            let port_hit = match published {
                Some(pub_port) => p.published_port == pub_port && p.target_port == target,
                None => p.published_port == target || p.target_port == target,
            };
            !(port_hit && proto.as_deref().is_none_or(|q| q == p.protocol))
        });
        if spec.ports.len() == before {
            bail!("no published port matches --publish-rm {r:?}");
        }
    }
    for p in &a.publish_add {
        // Docker's rule: a port with the same published port (or, unpublished, the same target) is replaced.
        spec.ports.retain(|q| {
            let same = if p.published_port != 0 { q.published_port == p.published_port } else { q.target_port == p.target_port };
            !(same && q.protocol == p.protocol)
        });
        spec.ports.push(p.clone());
    }
    if let Some(m) = a.endpoint_mode {
        spec.endpoint_mode = m;
    }
    if a.force {
        spec.task.force_update += 1;
    }
    a.policy.apply(&mut spec)?;
    Ok(spec)
}

/// `service update SERVICE`.
pub(crate) fn update(host: &str, mut a: UpdateArgs) -> anyhow::Result<()> {
    let Reply::Service(current) = call(host, Request::ServiceInspect { service: a.service.clone() }, REPLY_MS_DEFAULT)? else {
        bail!("unexpected reply")
    };
    // The spec holds network ids: `--network-rm NAME` is looked up (an id as stored is taken as is).
    for r in &mut a.network_rm {
        if current.spec.task.networks.iter().any(|n| &n.target == r) {
            continue;
        }
        match call(host, Request::NetworkInspect { network: r.clone() }, REPLY_MS_DEFAULT)? {
            Reply::Networks(found) if found.len() == 1 => *r = found[0].network.id.clone(),
            other => bail!("unexpected reply: {other:?}"),
        }
        if !current.spec.task.networks.iter().any(|n| &n.target == r) {
            bail!("service {} is not attached to network {r}", current.spec.name);
        }
    }
    let spec = apply(&a, &current.spec)?;
    if a.rollback && spec != current.spec {
        bail!("other flags may not be combined with --rollback");
    }
    let timeout_ms = a.timeout.map(|ns| ns / 1_000_000).unwrap_or(PROGRESS_MS_DEFAULT);
    let auth = if a.with_registry_auth { super::login::registry_auth_flag(&spec.task.container.image) } else { None };
    send(host, &a.service, spec, a.rollback, auth, current.update_status.clone(), a.detach || a.quiet, timeout_ms)
}

/// `service rollback SERVICE`.
pub(crate) fn rollback(host: &str, service: &str, detach: bool) -> anyhow::Result<()> {
    let Reply::Service(current) = call(host, Request::ServiceInspect { service: service.to_string() }, REPLY_MS_DEFAULT)? else {
        bail!("unexpected reply")
    };
    send(host, service, current.spec.clone(), true, None, current.update_status.clone(), detach, PROGRESS_MS_DEFAULT)
}

#[allow(clippy::too_many_arguments)] // one call shape for update and rollback
fn send(
    host: &str,
    service: &str,
    spec: ServiceSpec,
    rollback: bool,
    registry_auth: Option<shoal_shared::api::RegistryAuth>,
    before: Option<shoal_shared::types::UpdateStatus>,
    detach: bool,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    let req = Request::ServiceUpdate { service: service.to_string(), spec: Box::new(spec), rollback, registry_auth };
    let Reply::ServiceUpdated { warnings } = call(host, req, REPLY_MS_IMAGES)? else { bail!("unexpected reply") };
    for w in warnings {
        eprintln!("warning: {w}");
    }
    println!("{service}");
    if detach {
        return Ok(());
    }
    progress(host, service, timeout_ms, Watch { update: true, rollback, before })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: UpdateArgs,
    }

    fn parse(args: &[&str]) -> UpdateArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap().a
    }

    #[test]
    fn network_and_publish_flags() {
        let mut cur = ServiceSpec::new("web", "busybox");
        cur.task.networks = vec![NetworkAttachmentConfig { target: "netid1".into(), aliases: vec![] }];
        cur.ports = vec![
            PortConfig { protocol: "tcp".into(), target_port: 80, published_port: 8080, publish_mode: "ingress".into() },
            PortConfig { protocol: "udp".into(), target_port: 53, published_port: 5353, publish_mode: "ingress".into() },
        ];
        let a = parse(&[
            "--network-rm",
            "netid1",
            "--network-add",
            "name=backend,alias=db",
            "--publish-rm",
            "8080",
            "--publish-add",
            "9090:90",
            "--publish-add",
            "5353:54/udp",
            "--endpoint-mode",
            "dnsrr",
            "web",
        ]);
        let spec = apply(&a, &cur).unwrap();
        assert_eq!(spec.task.networks, vec![NetworkAttachmentConfig { target: "backend".into(), aliases: vec!["db".into()] }]);
        let ports: Vec<(u32, u32, &str)> = spec.ports.iter().map(|p| (p.published_port, p.target_port, p.protocol.as_str())).collect();
        assert_eq!(ports, [(9090, 90, "tcp"), (5353, 54, "udp")]);
        assert_eq!(spec.endpoint_mode, EndpointMode::Dnsrr);
        assert!(apply(&parse(&["--publish-rm", "1234", "web"]), &cur).unwrap_err().to_string().contains("no published port matches"));
        let spec = apply(&parse(&["--publish-rm", "53/udp", "web"]), &cur).unwrap();
        assert_eq!(spec.ports.len(), 1, "by target port and protocol");
    }

    #[test]
    fn flags_edit_a_copy_of_the_spec() {
        let mut cur = ServiceSpec::new("web", "busybox@sha256:aa");
        cur.task.container.env = vec!["A=1".into(), "B=2".into()];
        cur.task.placement.constraints = vec!["node.role==manager".into()];
        cur.labels.insert("x".into(), "1".into());
        let a = parse(&[
            "--env-add",
            "A=9",
            "--env-rm",
            "B",
            "--label-rm",
            "x",
            "--label-add",
            "y=2",
            "--constraint-rm",
            "node.role==manager",
            "--constraint-add",
            "node.labels.zone==edge",
            "--args",
            "sh -c 'echo hi; sleep 1'",
            "--update-parallelism",
            "2",
            "--update-order",
            "start-first",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
            "--rollback-parallelism",
            "0",
            "--replicas",
            "4",
            "--force",
            "web",
        ]);
        let s = apply(&a, &cur).unwrap();
        assert_eq!(s.task.container.env, vec!["A=9"]);
        assert_eq!(s.labels.get("y").map(String::as_str), Some("2"));
        assert!(!s.labels.contains_key("x"));
        assert_eq!(s.task.placement.constraints, vec!["node.labels.zone==edge"]);
        assert_eq!(s.task.container.args, vec!["sh", "-c", "echo hi; sleep 1"]);
        assert_eq!((s.update.parallelism, s.update.order, s.update.failure_action), (2, UpdateOrder::StartFirst, FailureAction::Rollback));
        assert_eq!(s.update.monitor_ns, 2_000_000_000);
        assert_eq!(s.rollback.parallelism, 0);
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 4 });
        assert_eq!(s.task.force_update, 1);
        assert_eq!(s.task.container.image, "busybox@sha256:aa", "image kept unless --image");
        // No flags: the same spec (so --rollback alone is accepted).
        assert_eq!(apply(&parse(&["web"]), &cur).unwrap(), cur);
        assert!(apply(&parse(&["--update-max-failure-ratio", "2", "web"]), &cur).is_err());
    }

    #[test]
    fn placement_prefs_add_and_rm() {
        let mut cur = ServiceSpec::new("web", "busybox");
        cur.task.placement.preferences = vec!["node.labels.zone".into(), "node.labels.rack".into()];
        for (args, expect) in [
            (&["web"][..], &["node.labels.zone", "node.labels.rack"][..]),
            (&["--placement-pref-rm", "spread=node.labels.zone", "web"], &["node.labels.rack"]),
            (
                &["--placement-pref-add", "spread=engine.labels.disk", "web"],
                &["node.labels.zone", "node.labels.rack", "engine.labels.disk"],
            ),
            // Adding one already there changes nothing; removing and re-adding moves it innermost.
            (&["--placement-pref-add", "spread=node.labels.zone", "web"], &["node.labels.zone", "node.labels.rack"]),
            (
                &["--placement-pref-rm", "spread=node.labels.zone", "--placement-pref-add", "spread=node.labels.zone", "web"],
                &["node.labels.rack", "node.labels.zone"],
            ),
            (&["--placement-pref-rm", "spread=node.labels.zone", "--placement-pref-rm", "spread=node.labels.rack", "web"], &[]),
        ] {
            let s = apply(&parse(args), &cur).unwrap();
            assert_eq!(s.task.placement.preferences, expect, "{args:?}");
        }
        assert!(T::try_parse_from(["t", "--placement-pref-add", "binpack=node.labels.zone", "web"]).is_err());
    }
}
