//! `shoal inspect [--type T] NAME|ID...`: Docker's low-level inspect of any
//! swarm object. Each name is looked up as a service, node, network, task,
//! secret and config, in that order (or only as `--type`); the first kind
//! that has it wins. Objects found are printed as one JSON array; each name
//! found nowhere prints `Error: No such object: NAME` and the exit code is 1.

use super::{inspect, output};
use crate::client::{Client, REPLY_MS_DEFAULT};
use anyhow::bail;
use serde_json::{json, Value};
use shoal_shared::api::{ErrorKind, Reply, Request};
use shoal_shared::types::{FileKind, Task};

/// The kinds `--type` takes, in lookup order.
pub(crate) const KINDS: [&str; 6] = ["service", "node", "network", "task", "secret", "config"];

/// One request; `Ok(None)` when the daemon says the object does not exist.
fn ask(host: &str, req: Request) -> anyhow::Result<Option<Reply>> {
    match Client::connect(host)?.call(&req, REPLY_MS_DEFAULT)? {
        Reply::Error { kind: ErrorKind::NotFound, .. } => Ok(None),
        Reply::Error { message, .. } => bail!("{message}"),
        r => Ok(Some(r)),
    }
}

/// A task as `docker inspect` shows one (the fields Shoal has).
pub(crate) fn task_json(t: &Task) -> Value {
    json!({
        "ID": t.id,
        "Version": {"Index": t.meta.version},
        "CreatedAt": output::rfc3339(t.meta.created_at),
        "UpdatedAt": output::rfc3339(t.meta.updated_at),
        "Labels": {},
        "Spec": {"ContainerSpec": {"Image": t.spec.container.image, "Args": t.spec.container.args, "Env": t.spec.container.env}},
        "ServiceID": t.service_id,
        "Slot": t.slot,
        "NodeID": t.node_id,
        "Status": {
            "Timestamp": output::rfc3339(t.status.timestamp),
            "State": t.status.state.as_lower(),
            "Message": t.status.message,
            "Err": t.status.err,
        },
        "DesiredState": t.desired_state.as_lower(),
    })
}

/// A task whose id starts with `key` (at least 3 characters), from every
/// service's tasks.
fn find_task(host: &str, key: &str) -> anyhow::Result<Option<Value>> {
    if key.len() < 3 {
        return Ok(None);
    }
    let Some(Reply::Services(list)) = ask(host, Request::ServiceList)? else { bail!("unexpected reply") };
    for s in list {
        if let Some(Reply::Tasks { tasks, .. }) = ask(host, Request::TaskList { service: s.service.id })? {
            if let Some(t) = tasks.iter().find(|t| t.id.starts_with(key)) {
                return Ok(Some(task_json(t)));
            }
        }
    }
    Ok(None)
}

/// `key` looked up as `kind`.
fn lookup(host: &str, kind: &str, key: &str) -> anyhow::Result<Option<Value>> {
    Ok(match kind {
        "service" => match ask(host, Request::ServiceInspect { service: key.into() })? {
            Some(Reply::Service(s)) => Some(inspect::service_json(&s)),
            _ => None,
        },
        "node" => match ask(host, Request::NodeInspect { node: key.into() })? {
            Some(Reply::Node(n)) => {
                let leader = match ask(host, Request::NodeList)? {
                    Some(Reply::Nodes { leader_id, .. }) => !leader_id.is_empty() && leader_id == n.id,
                    _ => false,
                };
                Some(inspect::node_json(&n, leader))
            }
            _ => None,
        },
        "network" => super::network::inspect_value(host, key)?,
        "task" => find_task(host, key)?,
        "secret" | "config" => {
            let kind = if kind == "secret" { FileKind::Secret } else { FileKind::Config };
            match ask(host, Request::FileInspect { kind, key: key.into() })? {
                Some(Reply::Files(f)) => f.first().map(|f| super::files::inspect_json(kind, f)),
                _ => None,
            }
        }
        _ => bail!("unknown --type {kind:?}: use {}", KINDS.join(", ")),
    })
}

/// Runs `shoal inspect`.
pub(crate) fn run(host: &str, kind: Option<String>, format: &str, names: Vec<String>) -> anyhow::Result<()> {
    let kinds: Vec<&str> = match kind.as_deref() {
        Some(k) if KINDS.contains(&k) => vec![k],
        Some(k) => bail!("unknown --type {k:?}: use {}", KINDS.join(", ")),
        None => KINDS.to_vec(),
    };
    // Checked before anything is asked.
    output::Format::parse(format)?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    'names: for name in &names {
        for k in &kinds {
            if let Some(v) = lookup(host, k, name)? {
                found.push(v);
                continue 'names;
            }
        }
        missing.push(name);
    }
    output::Format::inspect(format, &found)?;
    for name in &missing {
        eprintln!("Error: No such object: {name}");
    }
    if !missing.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
