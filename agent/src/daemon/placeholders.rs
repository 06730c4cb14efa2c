//! Swarm's service templates: `{{.Node.Hostname}}`, `{{.Service.Name}}`,
//! `{{.Task.Slot}}`... in a task's `--hostname`, `--env` values and
//! `--mount` sources, expanded by the worker when it starts the task (a
//! global logging agent tags its output by device).
//!
//! Owns the task's template context (Docker's names: `.Service.ID`,
//! `.Service.Name`, `.Node.ID`, `.Node.Hostname`, `.Node.Platform.OS`,
//! `.Node.Platform.Architecture`, `.Task.ID`, `.Task.Name`, `.Task.Slot`)
//! and the expansion: with the `templates` feature the full Go template
//! engine (functions too), else field paths only (`{{.Node.Hostname}}`),
//! which is what Swarm's documentation shows. Text without `{{` is
//! returned as is; a bad template fails the task with the reason.

use serde_json::{json, Value};
use shoal_shared::platform::Platform;
use shoal_shared::types::Task;

/// What a task's templates may read.
pub(crate) fn context(t: &Task, service_name: &str, node_id: &str, node_hostname: &str, platform: &Platform) -> Value {
    let slot = super::service::slot_name(t);
    json!({
        "Service": {"ID": t.service_id, "Name": service_name},
        "Node": {"ID": node_id, "Hostname": node_hostname, "Platform": {"OS": platform.os, "Architecture": platform.architecture}},
        "Task": {"ID": t.id, "Name": format!("{service_name}.{slot}.{}", t.id), "Slot": slot},
    })
}

/// `text` with its templates expanded against `ctx`.
pub(crate) fn expand(text: &str, ctx: &Value) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    expand_template(text, ctx).map_err(|e| format!("template {text:?}: {e}"))
}

#[cfg(feature = "templates")]
fn expand_template(text: &str, ctx: &Value) -> Result<String, String> {
    let t = crate::cli::template::Template::parse(text).map_err(|e| e.to_string())?;
    t.render(ctx).map_err(|e| e.to_string())
}

/// Field paths only: `{{.A.B}}` (spaces allowed inside the braces).
#[cfg(not(feature = "templates"))]
fn expand_template(text: &str, ctx: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed action")?;
        let path = after[..end].trim();
        let fields =
            path.strip_prefix('.').ok_or_else(|| format!("{{{{{path}}}}}: only field paths like {{{{.Node.Hostname}}}} in this build"))?;
        let mut v = ctx;
        for f in fields.split('.') {
            v = v.get(f).ok_or_else(|| format!("no field {f:?} in {{{{{path}}}}}"))?;
        }
        match v {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::task::TaskState;
    use shoal_shared::types::{ServiceSpec, TaskStatus};

    fn task(slot: u64) -> Task {
        Task {
            id: "t1abc".into(),
            meta: Default::default(),
            service_id: "s9".into(),
            slot,
            node_id: "n7".into(),
            spec: ServiceSpec::new("web", "busybox").task,
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 0, ""),
            not_before: 0,
            attempt: 0,
            networks: Vec::new(),
        }
    }

    #[test]
    fn swarm_placeholders_expand() {
        let p = Platform { os: "linux".into(), architecture: "arm64".into(), variant: String::new() };
        let ctx = context(&task(3), "web", "n7", "pi-kitchen", &p);
        let e = |s: &str| expand(s, &ctx);
        assert_eq!(e("{{.Node.Hostname}}-{{.Node.ID}}-{{.Service.Name}}"), Ok("pi-kitchen-n7-web".into()));
        assert_eq!(e("DEVICE={{ .Node.Hostname }}"), Ok("DEVICE=pi-kitchen".into()));
        assert_eq!(e("data-{{.Task.Slot}}"), Ok("data-3".into()));
        assert_eq!(e("{{.Task.Name}} {{.Service.ID}} {{.Node.Platform.Architecture}}"), Ok("web.3.t1abc s9 arm64".into()));
        assert_eq!(e("plain"), Ok("plain".into()));
        assert!(e("{{.Node.Nope}}").unwrap_err().contains("Nope"));
        assert!(e("{{.Node.Hostname").unwrap_err().contains("unclosed action"));
        // A global task's slot is its node.
        let g = context(&task(0), "agent", "n7", "pi", &p);
        assert_eq!(expand("{{.Task.Slot}}", &g), Ok("n7".into()));
    }
}
