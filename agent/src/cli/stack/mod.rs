//! `shoal stack deploy|ls|services|ps|rm`: applications from Compose files,
//! as `docker stack` (Swarm mode) does it, entirely in the CLI: the files
//! are read, interpolated ([`interp`]) and converted ([`compose`]) here,
//! then deployed with the ordinary control requests. A stack is nothing
//! stored: it is the objects labelled `com.docker.stack.namespace=NAME`.
//!
//! `deploy` creates secrets and configs (kept when their data is the same:
//! [`Request::FileEnsure`]), then networks, then creates or updates each
//! service (`Updating service web_api (id: ...)`); the manager replaces
//! tasks only of services whose task spec changed, so a redeploy of an
//! edited file touches only what was edited. `--prune` first removes the
//! stack's services the files no longer name.
//!
//! `rm` removes services, secrets, configs, then networks; a network stays
//! in use until the removed services' tasks have stopped, so `rm` waits for
//! that up to [`RM_WAIT_MS`] (Docker 20.10 fails at once and leaves the
//! network behind).

#[cfg(feature = "stacks")]
mod compose;
#[cfg(feature = "stacks")]
mod interp;
#[cfg(feature = "stacks")]
mod yaml;

use super::output::{Format, Table};
use super::service::{self, TaskOutput};
use super::{call, ListArgs};
use crate::client::REPLY_MS_DEFAULT;
use anyhow::bail;
use clap::Subcommand;
use shoal_shared::api::{Reply, Request};
use shoal_shared::types::{FileKind, Service, Task};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The label Docker puts on every object of a stack.
pub(crate) const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// Largest compose file read (each `-c`).
#[cfg(feature = "stacks")]
const COMPOSE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Longest `stack rm` waits for the stack's tasks to stop before it removes
/// their networks.
const RM_WAIT_MS: u64 = 120_000;
const RM_POLL_MS: u64 = 250;
/// Longest stack name: a service name (`STACK_SERVICE`) has at most 63 bytes.
const STACK_NAME_BYTES_MAX: usize = 40;

#[derive(Subcommand, Debug)]
pub(crate) enum StackCmd {
    /// Deploy a new stack or update an existing stack.
    #[command(alias = "up")]
    Deploy {
        /// Path to a Compose file, or "-" to read from stdin (repeat to merge files).
        #[arg(short = 'c', long = "compose-file", required = true)]
        compose_file: Vec<String>,
        /// Prune services that are no longer referenced.
        #[arg(long)]
        prune: bool,
        /// Send registry authentication details to Swarm agents.
        #[arg(long)]
        with_registry_auth: bool,
        stack: String,
    },
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        /// Output format: table, json, or a Go template (`{{.Name}}`).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// List the services in the stack.
    Services {
        #[command(flatten)]
        list: ListArgs,
        stack: String,
    },
    /// List the tasks in the stack.
    Ps {
        #[command(flatten)]
        list: super::TaskListArgs,
        stack: String,
    },
    /// Remove one or more stacks.
    #[command(alias = "remove", alias = "down")]
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
}

pub(crate) fn run(host: &str, cmd: StackCmd) -> anyhow::Result<()> {
    match cmd {
        StackCmd::Deploy { compose_file, prune, with_registry_auth, stack } => {
            deploy(host, &compose_file, prune, with_registry_auth, &stack)
        }
        StackCmd::Ls { format } => ls(host, &format),
        StackCmd::Services { mut list, stack } => {
            if services_of(host, &stack)?.is_empty() {
                eprintln!("Nothing found in stack: {stack}");
                return Ok(());
            }
            list.filter.push(format!("label={NAMESPACE_LABEL}={stack}"));
            service::ls(host, &list)
        }
        StackCmd::Ps { list, stack } => ps(host, &stack, &list.filter, list.output()),
        StackCmd::Rm { stacks } => {
            let mut failed = false;
            for s in stacks {
                if let Err(e) = rm(host, &s) {
                    eprintln!("Error: {e:#}");
                    failed = true;
                }
            }
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn check_name(stack: &str) -> anyhow::Result<()> {
    let b = stack.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= STACK_NAME_BYTES_MAX
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        bail!("invalid stack name {stack:?}: use up to {STACK_NAME_BYTES_MAX} letters, digits, '-', '_' and '.', starting with a letter or digit");
    }
    Ok(())
}

/// Reads, parses and interpolates one `-c` file ("-": stdin).
#[cfg(feature = "stacks")]
fn load(path: &str, warnings: &mut Vec<String>) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let bytes = super::files::read_at_most(std::path::Path::new(path), COMPOSE_BYTES_MAX)
        .with_context(|| format!("cannot read compose file {path}"))?;
    if bytes.len() as u64 > COMPOSE_BYTES_MAX {
        bail!("compose file {path} is over {} MiB", COMPOSE_BYTES_MAX >> 20);
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("compose file {path} is not UTF-8 text"))?;
    let mut doc = yaml::parse(&text).map_err(|e| anyhow::anyhow!("compose file {path}: {e}"))?;
    let env = |k: &str| std::env::var(k).ok();
    interp::interpolate(&mut doc, &env, warnings).map_err(|e| anyhow::anyhow!("compose file {path}: {e}"))?;
    Ok(doc)
}

/// The stack's plan from its files.
#[cfg(feature = "stacks")]
fn plan(stack: &str, files: &[String]) -> anyhow::Result<compose::Plan> {
    let mut warnings = Vec::new();
    let mut merged: Option<serde_json::Value> = None;
    for f in files {
        let doc = load(f, &mut warnings)?;
        match merged.as_mut() {
            None => merged = Some(doc),
            Some(m) => compose::merge(m, doc),
        }
    }
    for w in &warnings {
        eprintln!("WARN: {w}");
    }
    use anyhow::Context;
    use std::path::{Path, PathBuf};
    let dir = match files.first().map(String::as_str) {
        Some("-") | None => std::env::current_dir().context("cannot read the current directory")?,
        Some(f) => {
            let parent = Path::new(f).parent().map(Path::to_path_buf).unwrap_or_default();
            let parent = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent };
            std::fs::canonicalize(&parent).with_context(|| format!("cannot resolve {}", parent.display()))?
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    compose::convert(stack, merged.as_ref().unwrap_or(&serde_json::Value::Null), &dir, &env).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(not(feature = "stacks"))]
fn deploy(_: &str, _: &[String], _: bool, _: bool, stack: &str) -> anyhow::Result<()> {
    check_name(stack)?;
    bail!("this shoal was built without Compose files (the `stacks` feature, left out on this architecture to fit its 5 MiB budget): run `shoal stack deploy` on a manager of another architecture (amd64, arm64, ppc64le, 386, arm/v7), or create its services with `shoal service create`")
}

#[cfg(feature = "stacks")]
fn deploy(host: &str, files: &[String], prune: bool, with_registry_auth: bool, stack: &str) -> anyhow::Result<()> {
    check_name(stack)?;
    let plan = plan(stack, files)?;
    // The manager's own checks first, so a bad service creates nothing.
    for spec in &plan.services {
        shoal_manager::control::validate_spec(spec).map_err(|e| anyhow::anyhow!("service {}: {e}", spec.name))?;
    }
    if !plan.ignored.is_empty() {
        eprintln!("Ignoring unsupported options: {}\n", plan.ignored.join(", "));
    }
    // External objects must exist before anything is created.
    let Reply::Networks(nets) = call(host, Request::NetworkList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let net_names: Vec<&str> = nets.iter().map(|d| d.network.spec.name.as_str()).collect();
    for n in plan.networks.iter().filter(|n| n.external) {
        if !net_names.contains(&n.name.as_str()) {
            bail!("network {:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed", n.name);
        }
    }
    for (kind, decls) in [(FileKind::Secret, &plan.secrets), (FileKind::Config, &plan.configs)] {
        if !decls.iter().any(|d| d.external) {
            continue;
        }
        let Reply::Files(have) = call(host, Request::FileList { kind }, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
        for d in decls.iter().filter(|d| d.external) {
            if !have.iter().any(|f| f.spec.name == d.name) {
                bail!(
                    "{} {:?} is declared as external, but could not be found: create it with `shoal {} create`",
                    kind.as_str(),
                    d.name,
                    kind.as_str()
                );
            }
        }
    }
    let Reply::Services(existing) = call(host, Request::ServiceList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    // The stack's own services only, as Docker's: a service of that name
    // outside the stack is not taken over (its create fails, naming it).
    let existing: BTreeMap<String, Service> = existing
        .into_iter()
        .filter(|s| in_stack(&s.service.spec.labels, stack))
        .map(|s| (s.service.spec.name.clone(), s.service))
        .collect();
    if prune {
        for s in existing.values() {
            if !plan.services.iter().any(|p| p.name == s.spec.name) {
                println!("Removing service {}", s.spec.name);
                call(host, Request::ServiceRemove { service: s.id.clone() }, REPLY_MS_DEFAULT)?;
            }
        }
    }
    for (kind, decls) in [(FileKind::Secret, &plan.secrets), (FileKind::Config, &plan.configs)] {
        for d in decls.iter().filter(|d| !d.external) {
            let mut labels = BTreeMap::new();
            labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
            let spec = shoal_shared::types::FileSpec { name: d.name.clone(), labels, data: d.spec.clone() };
            let Reply::FileEnsured { created, .. } = call(host, Request::FileEnsure { kind, spec: Box::new(spec) }, REPLY_MS_DEFAULT)?
            else {
                bail!("unexpected reply")
            };
            if created {
                println!("Creating {} {}", kind.as_str(), d.name);
            }
        }
    }
    for n in plan.networks.iter().filter(|n| !n.external) {
        if !net_names.contains(&n.name.as_str()) {
            println!("Creating network {}", n.name);
            call(host, Request::NetworkCreate { spec: Box::new(n.spec.clone()) }, REPLY_MS_DEFAULT)?;
        }
    }
    for mut spec in plan.services {
        let registry_auth = if with_registry_auth { super::login::registry_auth_flag(&spec.task.container.image) } else { None };
        let warnings = match existing.get(&spec.name) {
            Some(old) => {
                println!("Updating service {} (id: {})", spec.name, old.id);
                // As Docker's: a redeploy never forces tasks to restart.
                spec.task.force_update = old.spec.task.force_update;
                let req = Request::ServiceUpdate { service: old.id.clone(), spec: Box::new(spec), rollback: false, registry_auth };
                match call(host, req, crate::client::REPLY_MS_IMAGES)? {
                    Reply::ServiceUpdated { warnings } => warnings,
                    r => bail!("unexpected reply: {r:?}"),
                }
            }
            None => {
                println!("Creating service {}", spec.name);
                match call(host, Request::ServiceCreate { spec: Box::new(spec), registry_auth }, crate::client::REPLY_MS_IMAGES)? {
                    Reply::ServiceCreated { warnings, .. } => warnings,
                    r => bail!("unexpected reply: {r:?}"),
                }
            }
        };
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}

fn in_stack(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|s| s == stack)
}

/// The stack's services, by name.
fn services_of(host: &str, stack: &str) -> anyhow::Result<Vec<Service>> {
    let Reply::Services(list) = call(host, Request::ServiceList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let mut out: Vec<Service> = list.into_iter().map(|s| s.service).filter(|s| in_stack(&s.spec.labels, stack)).collect();
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(out)
}

/// Docker's `stack ls`: stacks are the namespaces of services.
fn ls(host: &str, format: &str) -> anyhow::Result<()> {
    let mut fmt = Format::parse(format)?;
    let Reply::Services(list) = call(host, Request::ServiceList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for s in &list {
        if let Some(ns) = s.service.spec.labels.get(NAMESPACE_LABEL) {
            *stacks.entry(ns.clone()).or_default() += 1;
        }
    }
    let mut t = Table::new(&["NAME", "SERVICES", "ORCHESTRATOR"]);
    for (name, n) in &stacks {
        if fmt.is_table() {
            t.row(vec![name.clone(), n.to_string(), "Swarm".into()]);
        } else {
            fmt.row(&serde_json::json!({"Name": name, "Namespace": "", "Orchestrator": "Swarm", "Services": n.to_string()}))?;
        }
    }
    if fmt.is_table() {
        print!("{}", t.render());
    } else {
        fmt.finish(&["Name", "Services", "Orchestrator"]);
    }
    Ok(())
}

fn ps(host: &str, stack: &str, filter: &[String], o: TaskOutput<'_>) -> anyhow::Result<()> {
    Format::parse(o.format)?;
    let filters = service::task_filters(filter)?;
    let services = services_of(host, stack)?;
    let Reply::Nodes { nodes, .. } = call(host, Request::NodeList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let hostnames: BTreeMap<&str, &str> = nodes.iter().map(|n| (n.id.as_str(), n.description.hostname.as_str())).collect();
    let mut fetched: Vec<(Service, Vec<Task>)> = Vec::new();
    for s in &services {
        // A service removed meanwhile is skipped.
        let Ok(Reply::Tasks { service, tasks, .. }) = call(host, Request::TaskList { service: s.id.clone() }, REPLY_MS_DEFAULT) else {
            continue;
        };
        let tasks = tasks.into_iter().filter(|t| service::task_matches(&filters, t, &service.spec.name, &hostnames)).collect();
        fetched.push((*service, tasks));
    }
    if fetched.iter().all(|(_, t)| t.is_empty()) {
        bail!("nothing found in stack: {stack}");
    }
    let refs: Vec<(&Service, Vec<&Task>)> = fetched.iter().map(|(s, ts)| (s, ts.iter().collect())).collect();
    service::print_tasks(&refs, &hostnames, o)
}

/// `stack rm`: services, secrets, configs, then networks once free.
fn rm(host: &str, stack: &str) -> anyhow::Result<()> {
    let services = services_of(host, stack)?;
    let mut files = Vec::new();
    for kind in [FileKind::Secret, FileKind::Config] {
        let Reply::Files(list) = call(host, Request::FileList { kind }, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
        files.extend(list.into_iter().filter(|f| in_stack(&f.spec.labels, stack)).map(|f| (kind, f)));
    }
    let Reply::Networks(nets) = call(host, Request::NetworkList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let nets: Vec<_> = nets.into_iter().filter(|d| in_stack(&d.network.spec.labels, stack)).map(|d| d.network).collect();
    if services.is_empty() && files.is_empty() && nets.is_empty() {
        eprintln!("Nothing found in stack: {stack}");
        return Ok(());
    }
    let mut errors = Vec::new();
    for s in &services {
        println!("Removing service {}", s.spec.name);
        if let Err(e) = call(host, Request::ServiceRemove { service: s.id.clone() }, REPLY_MS_DEFAULT) {
            errors.push(format!("failed to remove service {}: {e}", s.spec.name));
        }
    }
    for (kind, f) in &files {
        println!("Removing {} {}", kind.as_str(), f.spec.name);
        if let Err(e) = call(host, Request::FileRemove { kind: *kind, key: f.id.clone() }, REPLY_MS_DEFAULT) {
            errors.push(format!("failed to remove {} {}: {e}", kind.as_str(), f.spec.name));
        }
    }
    for n in &nets {
        println!("Removing network {}", n.spec.name);
        let deadline = Instant::now() + Duration::from_millis(RM_WAIT_MS);
        loop {
            match call(host, Request::NetworkRemove { network: n.id.clone() }, REPLY_MS_DEFAULT) {
                Ok(_) => break,
                // The removed services' tasks are still stopping.
                Err(e) if e.to_string().contains("in use by task") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(RM_POLL_MS))
                }
                Err(e) => {
                    errors.push(format!("failed to remove network {}: {e}", n.spec.name));
                    break;
                }
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

#[cfg(all(test, feature = "stacks"))]
mod tests {
    use super::*;

    /// Text to plan as `deploy` does it: YAML, interpolation, conversion.
    #[test]
    fn a_compose_text_becomes_a_plan() {
        let text = r#"
version: "3.8"
x-defaults: &defaults
  image: busybox:${TAG:-1.36}
  stop_grace_period: 2s
  deploy:
    replicas: ${REPLICAS}
services:
  api:
    <<: *defaults
    command: ["sh", "-c", "echo $$HOME ${GREETING}"]
    ports: ["8080:80"]
  cron:
    <<: *defaults
    deploy: {mode: global}
"#;
        let mut doc = yaml::parse(text).unwrap();
        let mut warnings = Vec::new();
        let env = |k: &str| (k == "REPLICAS").then(|| "3".to_string());
        interp::interpolate(&mut doc, &env, &mut warnings).unwrap();
        assert_eq!(warnings, ["The GREETING variable is not set. Defaulting to a blank string."]);
        let plan = compose::convert("shop", &doc, std::path::Path::new("/"), &env).unwrap();
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["shop_api", "shop_cron"]);
        let api = &plan.services[0];
        assert_eq!(api.task.container.image, "busybox:1.36");
        assert_eq!(api.task.container.args, ["sh", "-c", "echo $HOME "]);
        assert_eq!(api.mode, shoal_shared::types::ServiceMode::Replicated { replicas: 3 });
        assert_eq!(api.task.container.stop_grace_ns, 2_000_000_000);
        assert_eq!(plan.services[1].mode, shoal_shared::types::ServiceMode::Global, "the service's own deploy wins over the merged one");
        assert_eq!(plan.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["shop_default"]);
    }

    #[test]
    fn stack_names_are_checked() {
        assert!(check_name("shop-2.eu_x").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"a".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
