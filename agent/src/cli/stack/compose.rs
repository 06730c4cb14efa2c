//! Compose files (version 3.x, as `docker stack deploy` reads them) to the
//! specs a stack deploys: services, overlay networks, secrets and configs,
//! with Docker's naming (`STACK_NAME`) and the `com.docker.stack.namespace`
//! label on every object.
//!
//! Input is the tree of [`super::yaml::parse`] after [`super::interp`]
//! (plain scalars are strings: numbers are parsed here, where a number is
//! wanted). Several files merge in order ([`merge`]): maps key by key, the
//! later file's scalars and lists win, but `ports`, `volumes`, `secrets`
//! and `configs` of a service merge item by item (by target or source),
//! and `environment` and `labels` merge by key whichever form they use.
//!
//! Keys outside Compose 3.x's schema are refused, naming their path as
//! Docker's does (`services.web Additional property colour is not
//! allowed`). Keys of the schema that Swarm or Shoal does not act on (build,
//! links, restart, privileged, logging...) are listed in
//! [`Plan::ignored`], which `stack deploy` prints (`Ignoring unsupported
//! options: ...`), never dropped silently. `x-*` extension keys are free.
//!
//! Paths (`env_file`, secret and config `file`, relative bind sources) are
//! relative to the directory of the first compose file, as Docker's.

use serde_json::{Map, Value};
use shoal_shared::types::{
    EndpointMode, FailureAction, FileReference, HealthConfig, Mount, MountKind, NetworkAttachmentConfig, NetworkSpec, PortConfig,
    RestartCondition, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder, FILE_REFERENCE_MODE_DEFAULT, PUBLISH_MODE_HOST,
    PUBLISH_MODE_INGRESS,
};
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) use super::NAMESPACE_LABEL;
/// The service label naming the image as the file wrote it (Docker's).
pub(crate) const IMAGE_LABEL: &str = "com.docker.stack.image";
/// Largest `env_file`, secret or config file read.
const FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most ports one short-syntax range expands to.
const PORT_RANGE_MAX: u32 = 1024;

/// Conversion errors are one line for the user.
pub(crate) type R<T> = Result<T, String>;

/// What a stack deploys.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Overlay networks the services use (external ones must exist).
    pub networks: Vec<Declared<NetworkSpec>>,
    pub secrets: Vec<Declared<Vec<u8>>>,
    pub configs: Vec<Declared<Vec<u8>>>,
    pub services: Vec<ServiceSpec>,
    /// Paths of keys nothing acts on (`services.web.build`).
    pub ignored: Vec<String>,
}

/// A top-level network, secret or config: its swarm name, whether it is
/// external (never created or removed by the stack), and what to create.
#[derive(Debug)]
pub(crate) struct Declared<T> {
    pub name: String,
    pub external: bool,
    pub spec: T,
}

/// Merges the files given with `-c` in order (see the module header).
pub(crate) fn merge(base: &mut Value, over: Value) {
    merge_at(base, over, 0)
}

fn merge_at(base: &mut Value, over: Value, depth: usize) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                // depth 2 is a service's own keys (`services.NAME.KEY`).
                let keyed = depth == 2 && matches!(k.as_str(), "ports" | "volumes" | "secrets" | "configs");
                let by_key = matches!(k.as_str(), "environment" | "labels");
                match b.get_mut(&k) {
                    Some(slot) if keyed => merge_list(slot, v, &k),
                    Some(slot) if by_key => {
                        let (Ok(mut a), Ok(o)) = (kv_map(slot), kv_map(&v)) else {
                            *slot = v;
                            continue;
                        };
                        a.extend(o);
                        *slot = Value::Object(a.into_iter().map(|(k, v)| (k, v.map_or(Value::Null, Value::String))).collect());
                    }
                    Some(slot) => merge_at(slot, v, depth + 1),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Merges service lists item by item: later items replace earlier ones
/// with the same key (a port's published/target/protocol, a volume's
/// target, a secret's or config's source).
fn merge_list(base: &mut Value, over: Value, key: &str) {
    let id = |v: &Value| -> String {
        match (key, v) {
            ("volumes", Value::String(s)) => s.split(':').nth(1).unwrap_or(s).to_string(),
            ("volumes", Value::Object(m)) => m.get("target").map(|t| t.to_string()).unwrap_or_default(),
            ("ports", Value::Object(m)) => format!("{:?}/{:?}/{:?}", m.get("published"), m.get("target"), m.get("protocol")),
            ("secrets" | "configs", Value::Object(m)) => m.get("source").map(|t| t.to_string()).unwrap_or_default(),
            (_, v) => v.as_str().map_or_else(|| v.to_string(), str::to_string),
        }
    };
    match (base, over) {
        (Value::Array(b), Value::Array(o)) => {
            for item in o {
                let k = id(&item);
                match b.iter_mut().find(|x| id(x) == k) {
                    Some(slot) => *slot = item,
                    None => b.push(item),
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Converts a (merged, interpolated) compose tree for stack `stack`.
/// `env` looks up variables for `environment` entries given without a value.
pub(crate) fn convert(stack: &str, doc: &Value, dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> R<Plan> {
    let mut c = Conv { stack, dir, env, plan: Plan::default() };
    let top = obj(doc, "the compose file")?;
    c.keys(top, "", TOP_KEYS, &[])?;
    if let Some(v) = top.get("version") {
        let v = text(v, "version")?;
        if !v.starts_with('3') {
            return Err(format!(
                "unsupported Compose file version: {v}: stack deploy reads version 3.x files (write version: \"3.8\", or leave it out)"
            ));
        }
    }
    let services = match top.get("services") {
        Some(v) => obj(v, "services")?,
        None => return Err("the compose file names no services: add a top-level `services:` map".into()),
    };
    if services.is_empty() {
        return Err("the compose file names no services: add a top-level `services:` map".into());
    }
    let networks = c.networks(top.get("networks"), services)?;
    let volumes = c.volumes(top.get("volumes"))?;
    let secrets = c.files(top.get("secrets"), "secrets")?;
    let configs = c.files(top.get("configs"), "configs")?;
    for (name, v) in services {
        let spec = c.service(name, v, &networks, &volumes, &secrets, &configs)?;
        c.plan.services.push(spec);
    }
    // Only what the services use is created, as Docker's.
    let svcs = &c.plan.services;
    let net_used = |d: &Declared<NetworkSpec>| svcs.iter().any(|s| s.task.networks.iter().any(|n| n.target == d.name));
    c.plan.networks = networks.into_values().filter(net_used).collect();
    let secret_used = |d: &Declared<Vec<u8>>| svcs.iter().any(|s| s.task.container.secrets.iter().any(|f| f.name == d.name));
    c.plan.secrets = secrets.into_values().filter(secret_used).collect();
    let config_used = |d: &Declared<Vec<u8>>| svcs.iter().any(|s| s.task.container.configs.iter().any(|f| f.name == d.name));
    c.plan.configs = configs.into_values().filter(config_used).collect();
    Ok(c.plan)
}

const TOP_KEYS: &[&str] = &["version", "services", "networks", "volumes", "secrets", "configs"];
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "networks",
    "volumes",
    "secrets",
    "configs",
    "healthcheck",
    "user",
    "hostname",
    "stop_grace_period",
    "stop_signal",
    "working_dir",
    "init",
    "tmpfs",
    "deploy",
];
/// Compose 3.x service keys Swarm mode (or Shoal) does not act on.
const SERVICE_IGNORED: &[&str] = &[
    "build",
    "cap_add",
    "cap_drop",
    "cgroup_parent",
    "container_name",
    "credential_spec",
    "depends_on",
    "devices",
    "dns",
    "dns_search",
    "domainname",
    "expose",
    "external_links",
    "extra_hosts",
    "ipc",
    "isolation",
    "links",
    "logging",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "read_only",
    "restart",
    "security_opt",
    "shm_size",
    "stdin_open",
    "sysctls",
    "tty",
    "ulimits",
    "userns_mode",
];
const DEPLOY_KEYS: &[&str] =
    &["mode", "replicas", "labels", "placement", "resources", "restart_policy", "update_config", "rollback_config", "endpoint_mode"];

/// Top-level key -> its declaration.
type Decls<T> = BTreeMap<String, Declared<T>>;

struct Conv<'a> {
    stack: &'a str,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    plan: Plan,
}

impl Conv<'_> {
    /// Refuses keys outside `known` and `ignored`; lists the ignored ones.
    fn keys(&mut self, m: &Map<String, Value>, path: &str, known: &[&str], ignored: &[&str]) -> R<()> {
        for k in m.keys() {
            if known.contains(&k.as_str()) || k.starts_with("x-") {
                continue;
            }
            let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if ignored.contains(&k.as_str()) {
                self.plan.ignored.push(at);
            } else {
                let place = if path.is_empty() { "(root)" } else { path };
                return Err(format!("{place} Additional property {k} is not allowed"));
            }
        }
        Ok(())
    }

    fn scoped(&self, name: &str) -> String {
        format!("{}_{name}", self.stack)
    }

    /// Top-level `networks`, plus `default` unless declared.
    fn networks(&mut self, v: Option<&Value>, services: &Map<String, Value>) -> R<Decls<NetworkSpec>> {
        let mut out = Decls::new();
        let empty = Map::new();
        let m = match v {
            Some(Value::Null) | None => &empty,
            Some(v) => obj(v, "networks")?,
        };
        for (key, v) in m {
            let path = format!("networks.{key}");
            let mut spec = NetworkSpec { name: self.scoped(key), driver: "overlay".into(), ..Default::default() };
            let mut external = false;
            if let Some(n) = opt_obj(v, &path)? {
                self.keys(
                    n,
                    &path,
                    &["driver", "driver_opts", "ipam", "external", "name", "internal", "attachable", "labels"],
                    &["enable_ipv6"],
                )?;
                if let Some(d) = n.get("driver") {
                    spec.driver = text(d, &format!("{path}.driver"))?;
                    if spec.driver != "overlay" {
                        return Err(format!(
                            "{path}.driver: network driver {:?} is not supported: stacks use overlay networks (leave driver out)",
                            spec.driver
                        ));
                    }
                }
                for (k, v) in opt_obj(n.get("driver_opts").unwrap_or(&Value::Null), &format!("{path}.driver_opts"))?.into_iter().flatten() {
                    spec.options.insert(k.clone(), text(v, &format!("{path}.driver_opts.{k}"))?);
                }
                if let Some(ipam) = n.get("ipam") {
                    let ipath = format!("{path}.ipam");
                    let ipam = obj(ipam, &ipath)?;
                    self.keys(ipam, &ipath, &["driver", "config"], &[])?;
                    if let Some(d) = ipam.get("driver") {
                        if text(d, &ipath)? != "default" {
                            return Err(format!("{ipath}.driver: only the default IPAM driver exists"));
                        }
                    }
                    let configs = list(ipam.get("config").unwrap_or(&Value::Null), &format!("{ipath}.config"))?;
                    if configs.len() > 1 {
                        return Err(format!("{ipath}.config: one subnet per network (got {})", configs.len()));
                    }
                    for c in configs {
                        let cpath = format!("{ipath}.config");
                        let c = obj(c, &cpath)?;
                        self.keys(c, &cpath, &["subnet", "gateway", "ip_range"], &["aux_addresses"])?;
                        let net = |k: &str| -> R<Option<String>> { c.get(k).map(|v| text(v, &format!("{cpath}.{k}"))).transpose() };
                        if let Some(s) = net("subnet")? {
                            spec.ipam.subnet = Some(super::super::parse::cidr(&s).map_err(|e| format!("{cpath}.subnet: {e}"))?);
                        }
                        if let Some(s) = net("gateway")? {
                            spec.ipam.gateway = Some(super::super::parse::ipv4(&s).map_err(|e| format!("{cpath}.gateway: {e}"))?);
                        }
                        if let Some(s) = net("ip_range")? {
                            spec.ipam.ip_range = Some(super::super::parse::cidr(&s).map_err(|e| format!("{cpath}.ip_range: {e}"))?);
                        }
                    }
                }
                spec.internal = flag(n.get("internal"), &format!("{path}.internal"))?;
                spec.attachable = flag(n.get("attachable"), &format!("{path}.attachable"))?;
                spec.labels = labels(n.get("labels"), &format!("{path}.labels"))?;
                let (ext, name) = external_of(n, &path)?;
                external = ext;
                if let Some(name) = name {
                    spec.name = name;
                } else if external {
                    spec.name = key.clone();
                }
            }
            spec.labels.insert(NAMESPACE_LABEL.into(), self.stack.into());
            out.insert(key.clone(), Declared { name: spec.name.clone(), external, spec });
        }
        // A service that names no network is on `default`, as Docker's.
        let any_default = services.values().any(|s| s.as_object().is_none_or(|s| s.get("networks").is_none_or(Value::is_null)));
        if any_default && !out.contains_key("default") {
            let name = self.scoped("default");
            let mut spec = NetworkSpec { name: name.clone(), driver: "overlay".into(), ..Default::default() };
            spec.labels.insert(NAMESPACE_LABEL.into(), self.stack.into());
            out.insert("default".into(), Declared { name, external: false, spec });
        }
        Ok(out)
    }

    /// Top-level `volumes`: key -> the node-local volume name.
    fn volumes(&mut self, v: Option<&Value>) -> R<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(out) };
        for (key, v) in obj(v, "volumes")? {
            let path = format!("volumes.{key}");
            let mut name = self.scoped(key);
            if let Some(m) = opt_obj(v, &path)? {
                self.keys(m, &path, &["driver", "external", "name"], &["labels"])?;
                if let Some(d) = m.get("driver") {
                    if text(d, &path)? != "local" {
                        return Err(format!("{path}.driver: only local volumes exist (a directory on each node); leave driver out"));
                    }
                }
                if m.contains_key("driver_opts") {
                    return Err(format!("{path}.driver_opts: volume driver options are not supported"));
                }
                let (external, given) = external_of(m, &path)?;
                if let Some(n) = given {
                    name = n;
                } else if external {
                    name = key.clone();
                }
            }
            out.insert(key.clone(), name);
        }
        Ok(out)
    }

    /// Top-level `secrets` or `configs`: their data read from `file`.
    fn files(&mut self, v: Option<&Value>, kind: &str) -> R<Decls<Vec<u8>>> {
        let mut out = Decls::new();
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(out) };
        for (key, v) in obj(v, kind)? {
            let path = format!("{kind}.{key}");
            let m = obj(v, &path)?;
            self.keys(m, &path, &["file", "external", "name", "labels"], &["driver", "driver_opts", "template_driver"])?;
            let (external, given) = external_of(m, &path)?;
            let name = given.unwrap_or_else(|| if external { key.clone() } else { self.scoped(key) });
            let data = match (m.get("file"), external) {
                // external_of refused `file` beside `external`.
                (_, true) => Vec::new(),
                (Some(f), false) => read_file(&self.dir.join(text(f, &format!("{path}.file"))?), &path)?,
                (None, false) => {
                    return Err(format!(
                        "{path}: give `file: PATH` (or `external: true` for one created with `shoal {} create`)",
                        &kind[..kind.len() - 1]
                    ))
                }
            };
            out.insert(key.clone(), Declared { name, external, spec: data });
        }
        Ok(out)
    }

    fn service(
        &mut self,
        key: &str,
        v: &Value,
        networks: &Decls<NetworkSpec>,
        volumes: &BTreeMap<String, String>,
        secrets: &Decls<Vec<u8>>,
        configs: &Decls<Vec<u8>>,
    ) -> R<ServiceSpec> {
        let path = format!("services.{key}");
        let m = obj(v, &path)?;
        self.keys(m, &path, SERVICE_KEYS, SERVICE_IGNORED)?;
        let at = |k: &str| format!("{path}.{k}");
        let image = match m.get("image") {
            Some(i) => text(i, &at("image"))?,
            None => {
                return Err(format!(
                    "service {key} has neither an image nor a build context specified: add `image:` (stack deploy does not build)"
                ))
            }
        };
        let mut spec = ServiceSpec::new(&self.scoped(key), &image);
        spec.labels.insert(IMAGE_LABEL.into(), image.clone());
        spec.labels.insert(NAMESPACE_LABEL.into(), self.stack.into());
        let c = &mut spec.task.container;
        if let Some(v) = m.get("command") {
            c.args = command(v, &at("command"))?;
        }
        if let Some(v) = m.get("entrypoint") {
            c.command = command(v, &at("entrypoint"))?;
        }
        // env_file first, `environment` wins, as Docker's.
        let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
        if let Some(v) = m.get("env_file") {
            let files = match v {
                Value::String(s) => vec![s.clone()],
                v => list(v, &at("env_file"))?.iter().map(|f| text(f, &at("env_file"))).collect::<R<_>>()?,
            };
            for f in files {
                let bytes = read_file(&self.dir.join(&f), &at("env_file"))?;
                let body = String::from_utf8(bytes).map_err(|_| format!("{}: {f} is not UTF-8 text", at("env_file")))?;
                for line in body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                    let (k, v) = line.split_once('=').map_or((line, None), |(k, v)| (k, Some(v.to_string())));
                    env.insert(k.trim().to_string(), v);
                }
            }
        }
        if let Some(v) = m.get("environment") {
            env.extend(kv_map(v).map_err(|e| format!("{}: {e}", at("environment")))?);
        }
        for (k, v) in env {
            match v.or_else(|| (self.env)(&k)) {
                Some(v) => c.env.push(format!("{k}={v}")),
                None => continue,
            }
        }
        c.labels = labels(m.get("labels"), &at("labels"))?;
        c.labels.insert(NAMESPACE_LABEL.into(), self.stack.into());
        for (k, field) in
            [("user", &mut c.user), ("hostname", &mut c.hostname), ("working_dir", &mut c.dir), ("stop_signal", &mut c.stop_signal)]
        {
            if let Some(v) = m.get(k) {
                *field = text(v, &at(k))?;
            }
        }
        if let Some(v) = m.get("stop_grace_period") {
            c.stop_grace_ns = duration(v, &at("stop_grace_period"))?;
        }
        c.init = flag(m.get("init"), &at("init"))?;
        if let Some(v) = m.get("healthcheck") {
            c.healthcheck = Some(self.healthcheck(v, &at("healthcheck"))?);
        }
        // Volumes, then tmpfs.
        for (i, v) in list(m.get("volumes").unwrap_or(&Value::Null), &at("volumes"))?.iter().enumerate() {
            let mount = self.mount(v, &format!("{}.{i}", at("volumes")), volumes)?;
            c.mounts.push(mount);
        }
        let tmpfs = match m.get("tmpfs") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(v) => list(v, &at("tmpfs"))?.iter().map(|t| text(t, &at("tmpfs"))).collect::<R<_>>()?,
            None => Vec::new(),
        };
        for t in tmpfs {
            if !t.starts_with('/') || t.contains(':') {
                return Err(format!("{}: {t:?}: give an absolute path (tmpfs options are not supported)", at("tmpfs")));
            }
            c.mounts.push(Mount { kind: MountKind::Tmpfs, source: String::new(), target: t, read_only: false });
        }
        c.secrets = file_refs(m.get("secrets"), &at("secrets"), secrets, true)?;
        c.configs = file_refs(m.get("configs"), &at("configs"), configs, false)?;
        // Networks: each with the service's short name as an alias, as Docker's.
        let attach = match m.get("networks") {
            None | Some(Value::Null) => vec![("default".to_string(), Vec::new())],
            Some(Value::Array(a)) => a.iter().map(|n| Ok((text(n, &at("networks"))?, Vec::new()))).collect::<R<_>>()?,
            Some(Value::Object(o)) => {
                let mut out = Vec::new();
                for (n, v) in o {
                    let npath = format!("{}.{n}", at("networks"));
                    let mut aliases = Vec::new();
                    if let Some(a) = opt_obj(v, &npath)? {
                        self.keys(a, &npath, &["aliases"], &["ipv4_address", "ipv6_address"])?;
                        for x in list(a.get("aliases").unwrap_or(&Value::Null), &format!("{npath}.aliases"))? {
                            aliases.push(text(x, &format!("{npath}.aliases"))?);
                        }
                    }
                    out.push((n.clone(), aliases));
                }
                out
            }
            Some(_) => return Err(format!("{} must be a list or a map of network names", at("networks"))),
        };
        for (n, mut aliases) in attach {
            let Some(d) = networks.get(&n) else {
                return Err(format!("service {key:?} refers to undefined network {n}: declare it under the top-level `networks`"));
            };
            aliases.insert(0, key.to_string());
            spec.task.networks.push(NetworkAttachmentConfig { target: d.name.clone(), aliases });
        }
        if let Some(v) = m.get("ports") {
            for (i, p) in list(v, &at("ports"))?.iter().enumerate() {
                spec.ports.extend(ports(p, &format!("{}.{i}", at("ports")))?);
            }
        }
        if let Some(d) = m.get("deploy").filter(|d| !d.is_null()) {
            self.deploy(&mut spec, d, &at("deploy"))?;
        }
        Ok(spec)
    }

    fn healthcheck(&mut self, v: &Value, path: &str) -> R<HealthConfig> {
        let m = obj(v, path)?;
        self.keys(m, path, &["test", "interval", "timeout", "retries", "start_period", "disable"], &[])?;
        let mut h = HealthConfig::default();
        if flag(m.get("disable"), &format!("{path}.disable"))? {
            h.test = vec![shoal_shared::health::TEST_NONE.into()];
            return Ok(h);
        }
        match m.get("test") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => h.test = vec![shoal_shared::health::TEST_CMD_SHELL.into(), s.clone()],
            Some(v) => {
                h.test = list(v, &format!("{path}.test"))?.iter().map(|x| text(x, &format!("{path}.test"))).collect::<R<_>>()?;
                if !matches!(h.test.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
                    return Err(format!("{path}.test: a list starts with CMD, CMD-SHELL or NONE"));
                }
            }
        }
        for (k, field) in [("interval", &mut h.interval_ns), ("timeout", &mut h.timeout_ns), ("start_period", &mut h.start_period_ns)] {
            if let Some(v) = m.get(k) {
                *field = duration(v, &format!("{path}.{k}"))?;
            }
        }
        if let Some(v) = m.get("retries") {
            h.retries = number(v, &format!("{path}.retries"))?;
        }
        Ok(h)
    }

    /// A service volume: `SOURCE:TARGET[:ro|rw]`, `TARGET`, or the long form.
    fn mount(&mut self, v: &Value, path: &str, volumes: &BTreeMap<String, String>) -> R<Mount> {
        let (mut source, target, read_only, kind) = match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [t] => ("", *t, ""),
                    [s, t] => (*s, *t, ""),
                    [s, t, m] => (*s, *t, *m),
                    _ => return Err(format!("{path}: invalid volume {s:?}: use SOURCE:TARGET[:ro]")),
                };
                let read_only = match mode {
                    "" | "rw" => false,
                    "ro" => true,
                    m => return Err(format!("{path}: invalid volume mode {m:?} in {s:?}: use ro or rw")),
                };
                let bind = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
                (source.to_string(), target.to_string(), read_only, if bind { MountKind::Bind } else { MountKind::Volume })
            }
            v => {
                let m = obj(v, path)?;
                self.keys(m, path, &["type", "source", "target", "read_only"], &["volume", "bind", "tmpfs", "consistency"])?;
                let kind = match m.get("type").map(|t| text(t, path)).transpose()?.as_deref() {
                    Some("volume") | None => MountKind::Volume,
                    Some("bind") => MountKind::Bind,
                    Some("tmpfs") => MountKind::Tmpfs,
                    Some(t) => return Err(format!("{path}.type: {t:?}: use volume, bind or tmpfs")),
                };
                let get = |k: &str| m.get(k).map(|v| text(v, &format!("{path}.{k}"))).transpose().map(Option::unwrap_or_default);
                (get("source")?, get("target")?, flag(m.get("read_only"), &format!("{path}.read_only"))?, kind)
            }
        };
        if !target.starts_with('/') {
            return Err(format!("{path}: the target {target:?} must be an absolute path in the container"));
        }
        match kind {
            MountKind::Volume if source.is_empty() => {
                return Err(format!("{path}: anonymous volumes are not supported: name the volume (`data:{target}`) and declare it under the top-level `volumes`"));
            }
            MountKind::Volume => match volumes.get(&source) {
                Some(name) => source = name.clone(),
                None => {
                    return Err(format!("{path}: service refers to undefined volume {source}: declare it under the top-level `volumes`"))
                }
            },
            MountKind::Bind => {
                if let Some(rest) = source.strip_prefix('~') {
                    let home = (self.env)("HOME").ok_or_else(|| format!("{path}: {source:?} starts with ~ but HOME is not set"))?;
                    source = format!("{home}{rest}");
                } else if !source.starts_with('/') {
                    source = self.dir.join(source.trim_start_matches("./")).to_string_lossy().into_owned();
                }
            }
            MountKind::Tmpfs => {}
        }
        Ok(Mount { kind, source, target, read_only })
    }

    fn deploy(&mut self, spec: &mut ServiceSpec, v: &Value, path: &str) -> R<()> {
        let m = obj(v, path)?;
        self.keys(m, path, DEPLOY_KEYS, &[])?;
        let at = |k: &str| format!("{path}.{k}");
        let replicas = m.get("replicas").map(|v| number(v, &at("replicas"))).transpose()?;
        spec.mode = match m.get("mode").map(|v| text(v, &at("mode"))).transpose()?.as_deref() {
            None | Some("replicated") => ServiceMode::Replicated { replicas: replicas.unwrap_or(1) },
            Some("global") if replicas.is_some() => return Err(format!("{}: replicas cannot be used with mode global", at("replicas"))),
            Some("global") => ServiceMode::Global,
            Some("replicated-job") => {
                let n = replicas.unwrap_or(1);
                ServiceMode::ReplicatedJob { max_concurrent: n, total_completions: n }
            }
            Some("global-job") => ServiceMode::GlobalJob,
            Some(x) => return Err(format!("{}: invalid mode {x:?}: use replicated or global", at("mode"))),
        };
        if spec.mode.is_job() {
            spec.task.restart.condition = RestartCondition::OnFailure;
        }
        spec.labels.extend(labels(m.get("labels"), &at("labels"))?);
        // deploy.labels cannot take the stack's own label away.
        spec.labels.insert(NAMESPACE_LABEL.into(), self.stack.into());
        if let Some(e) = m.get("endpoint_mode") {
            spec.endpoint_mode = match text(e, &at("endpoint_mode"))?.as_str() {
                "vip" => EndpointMode::Vip,
                "dnsrr" => EndpointMode::Dnsrr,
                x => return Err(format!("{}: {x:?}: use vip or dnsrr", at("endpoint_mode"))),
            };
        }
        if let Some(p) = m.get("placement") {
            let ppath = at("placement");
            let p = obj(p, &ppath)?;
            self.keys(p, &ppath, &["constraints", "preferences", "max_replicas_per_node"], &[])?;
            for c in list(p.get("constraints").unwrap_or(&Value::Null), &format!("{ppath}.constraints"))? {
                spec.task.placement.constraints.push(text(c, &format!("{ppath}.constraints"))?);
            }
            for pref in list(p.get("preferences").unwrap_or(&Value::Null), &format!("{ppath}.preferences"))? {
                let pp = format!("{ppath}.preferences");
                let pref = obj(pref, &pp)?;
                self.keys(pref, &pp, &["spread"], &[])?;
                let s = text(pref.get("spread").unwrap_or(&Value::Null), &format!("{pp}.spread"))?;
                let d = super::super::parse::placement_pref(&format!("spread={s}")).map_err(|e| format!("{pp}: {e}"))?;
                spec.task.placement.preferences.push(d);
            }
            if let Some(n) = p.get("max_replicas_per_node") {
                spec.task.placement.max_replicas_per_node = number(n, &format!("{ppath}.max_replicas_per_node"))?;
            }
        }
        if let Some(r) = m.get("resources") {
            let rpath = at("resources");
            let r = obj(r, &rpath)?;
            self.keys(r, &rpath, &["limits", "reservations"], &[])?;
            for (k, set) in [("limits", &mut spec.task.resources.limits), ("reservations", &mut spec.task.resources.reservations)] {
                let Some(x) = r.get(k) else { continue };
                let xp = format!("{rpath}.{k}");
                let x = obj(x, &xp)?;
                self.keys(x, &xp, &["cpus", "memory"], &["pids", "generic_resources", "devices"])?;
                if let Some(c) = x.get("cpus") {
                    set.nano_cpus = super::super::parse::nano_cpus(&text(c, &xp)?).map_err(|e| format!("{xp}.cpus: {e}"))?;
                }
                if let Some(mem) = x.get("memory") {
                    set.memory_bytes = super::super::parse::memory_bytes(&text(mem, &xp)?).map_err(|e| format!("{xp}.memory: {e}"))?;
                }
            }
        }
        if let Some(r) = m.get("restart_policy") {
            let rp = at("restart_policy");
            let r = obj(r, &rp)?;
            self.keys(r, &rp, &["condition", "delay", "max_attempts", "window"], &[])?;
            let p = &mut spec.task.restart;
            if let Some(c) = r.get("condition") {
                p.condition = super::super::parse::restart_condition(&text(c, &rp)?).map_err(|e| format!("{rp}.condition: {e}"))?;
            }
            if let Some(d) = r.get("delay") {
                p.delay_ns = duration(d, &format!("{rp}.delay"))?;
            }
            if let Some(n) = r.get("max_attempts") {
                p.max_attempts = number(n, &format!("{rp}.max_attempts"))?;
            }
            if let Some(w) = r.get("window") {
                p.window_ns = duration(w, &format!("{rp}.window"))?;
            }
        }
        for (k, cfg) in [("update_config", &mut spec.update), ("rollback_config", &mut spec.rollback)] {
            if let Some(u) = m.get(k) {
                let up = at(k);
                *cfg = self.update_config(u, &up, k == "update_config")?;
            }
        }
        Ok(())
    }

    fn update_config(&mut self, v: &Value, path: &str, update: bool) -> R<UpdateConfig> {
        let m = obj(v, path)?;
        self.keys(m, path, &["parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"], &[])?;
        let mut u = UpdateConfig::default();
        if let Some(p) = m.get("parallelism") {
            u.parallelism = number(p, &format!("{path}.parallelism"))?;
        }
        if let Some(d) = m.get("delay") {
            u.delay_ns = duration(d, &format!("{path}.delay"))?;
        }
        if let Some(d) = m.get("monitor") {
            u.monitor_ns = duration(d, &format!("{path}.monitor"))?;
        }
        if let Some(a) = m.get("failure_action") {
            u.failure_action = match text(a, path)?.as_str() {
                "pause" => FailureAction::Pause,
                "continue" => FailureAction::Continue,
                "rollback" if update => FailureAction::Rollback,
                x => {
                    let allowed = if update { "pause, continue or rollback" } else { "pause or continue" };
                    return Err(format!("{path}.failure_action: {x:?}: use {allowed}"));
                }
            };
        }
        if let Some(r) = m.get("max_failure_ratio") {
            let s = text(r, path)?;
            u.max_failure_ratio = s
                .parse::<f32>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("{path}.max_failure_ratio: {s:?}: use a number from 0 to 1"))?;
        }
        if let Some(o) = m.get("order") {
            u.order = match text(o, path)?.as_str() {
                "stop-first" => UpdateOrder::StopFirst,
                "start-first" => UpdateOrder::StartFirst,
                x => return Err(format!("{path}.order: {x:?}: use stop-first or start-first")),
            };
        }
        Ok(u)
    }
}

/// `external: true`, `external: {name: X}` (Compose 3.0-3.3) and `name:`.
fn external_of(m: &Map<String, Value>, path: &str) -> R<(bool, Option<String>)> {
    let mut name = m.get("name").map(|n| text(n, &format!("{path}.name"))).transpose()?;
    let external = match m.get("external") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Object(e)) => {
            if let Some(n) = e.get("name") {
                name = Some(text(n, &format!("{path}.external.name"))?);
            }
            true
        }
        Some(_) => return Err(format!("{path}.external must be true, false or {{name: NAME}}")),
    };
    if external && m.keys().any(|k| !matches!(k.as_str(), "external" | "name") && !k.starts_with("x-")) {
        return Err(format!("{path}: an external object takes only `external` and `name`"));
    }
    Ok((external, name))
}

/// A service's `secrets` or `configs`: short names or long maps.
fn file_refs(v: Option<&Value>, path: &str, decls: &Decls<Vec<u8>>, secret: bool) -> R<Vec<FileReference>> {
    let mut out = Vec::new();
    for item in list(v.unwrap_or(&Value::Null), path)? {
        let (source, target, uid, gid, mode) = match item {
            Value::String(s) => (s.clone(), String::new(), "0".to_string(), "0".to_string(), FILE_REFERENCE_MODE_DEFAULT),
            v => {
                let m = obj(v, path)?;
                if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "source" | "target" | "uid" | "gid" | "mode")) {
                    return Err(format!("{path} Additional property {k} is not allowed"));
                }
                let get = |k: &str, d: &str| {
                    m.get(k).map(|v| text(v, &format!("{path}.{k}"))).transpose().map(|o| o.unwrap_or_else(|| d.to_string()))
                };
                let mode = match m.get("mode") {
                    None => FILE_REFERENCE_MODE_DEFAULT,
                    Some(v) => file_mode(&text(v, &format!("{path}.mode"))?)
                        .ok_or_else(|| format!("{path}.mode: use octal permission bits, e.g. 0440"))?,
                };
                (get("source", "")?, get("target", "")?, get("uid", "0")?, get("gid", "0")?, mode)
            }
        };
        let Some(d) = decls.get(&source) else {
            let kind = if secret { "secret" } else { "config" };
            return Err(format!("{path}: undefined {kind} {source:?}: declare it under the top-level `{kind}s`"));
        };
        // Docker's default target: the name in the file, not the stack's.
        let target = match (target.is_empty(), secret) {
            (false, _) => target,
            (true, true) => source.clone(),
            (true, false) => format!("/{source}"),
        };
        out.push(FileReference { id: String::new(), name: d.name.clone(), target, uid, gid, mode });
    }
    Ok(out)
}

/// File modes as Compose files write them: YAML 1.1's octal `0440` (what
/// Docker's parser reads), `0o440`, or decimal (`292`).
fn file_mode(s: &str) -> Option<u32> {
    let m = if let Some(o) = s.strip_prefix("0o") {
        u32::from_str_radix(o, 8).ok()?
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()?
    } else {
        s.parse().ok()?
    };
    (m <= 0o7777).then_some(m)
}

/// `ports`: `"8080:80"`, `"80"`, `"8080:80/udp"`, ranges `"9000-9001:80-81"`, or the long form.
fn ports(v: &Value, path: &str) -> R<Vec<PortConfig>> {
    if let Value::Object(m) = v {
        if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "target" | "published" | "protocol" | "mode")) {
            return Err(format!("{path} Additional property {k} is not allowed"));
        }
        let target = number(m.get("target").unwrap_or(&Value::Null), &format!("{path}.target"))?;
        let published = m.get("published").map(|p| number(p, &format!("{path}.published"))).transpose()?.unwrap_or(0);
        let protocol = m.get("protocol").map(|p| text(p, path)).transpose()?.unwrap_or_else(|| "tcp".into());
        let mode = m.get("mode").map(|p| text(p, path)).transpose()?.unwrap_or_else(|| PUBLISH_MODE_INGRESS.into());
        if mode != PUBLISH_MODE_INGRESS && mode != PUBLISH_MODE_HOST {
            return Err(format!("{path}.mode: {mode:?}: use ingress or host"));
        }
        let long = format!("mode={mode},target={target},published={published},protocol={protocol}");
        return super::super::parse::publish(&long).map(|p| vec![p]).map_err(|e| format!("{path}: {e}"));
    }
    let s = text(v, path)?;
    let (ports, proto) = s.split_once('/').map_or((s.as_str(), None), |(p, x)| (p, Some(x)));
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [t] => ("", *t),
        [p, t] => (*p, *t),
        _ => return Err(format!("{path}: {s:?}: a host IP is not supported by swarm mode's published ports; use PUBLISHED:TARGET")),
    };
    let range = |r: &str| -> R<(u32, u32)> {
        let bad = || format!("{path}: invalid port {r:?} in {s:?}");
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b > 65_535 || b - a >= PORT_RANGE_MAX {
            return Err(bad());
        }
        Ok((a, b))
    };
    let (t0, t1) = range(target)?;
    let pub_range = if published.is_empty() { None } else { Some(range(published)?) };
    if let Some((p0, p1)) = pub_range {
        if p1 - p0 != t1 - t0 {
            return Err(format!("{path}: {s:?}: the published and target ranges differ in length"));
        }
    }
    let mut out = Vec::new();
    for i in 0..=(t1 - t0) {
        let p = pub_range.map_or(0, |(p0, _)| p0 + i);
        let short = match proto {
            Some(x) => format!("{p}:{}/{x}", t0 + i),
            None => format!("{p}:{}", t0 + i),
        };
        out.push(super::super::parse::publish(&short).map_err(|e| format!("{path}: {e}"))?);
    }
    Ok(out)
}

fn read_file(path: &Path, at: &str) -> R<Vec<u8>> {
    let buf = super::super::files::read_at_most(path, FILE_BYTES_MAX).map_err(|e| format!("{at}: cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > FILE_BYTES_MAX {
        return Err(format!("{at}: {} is over {} KiB", path.display(), FILE_BYTES_MAX / 1024));
    }
    Ok(buf)
}

fn obj<'v>(v: &'v Value, path: &str) -> R<&'v Map<String, Value>> {
    v.as_object().ok_or_else(|| format!("{path} must be a mapping"))
}

/// A mapping, or nothing for `key:` with no value.
fn opt_obj<'v>(v: &'v Value, path: &str) -> R<Option<&'v Map<String, Value>>> {
    match v {
        Value::Null => Ok(None),
        v => obj(v, path).map(Some),
    }
}

fn list<'v>(v: &'v Value, path: &str) -> R<&'v [Value]> {
    match v {
        Value::Null => Ok(&[]),
        Value::Array(a) => Ok(a),
        _ => Err(format!("{path} must be a list")),
    }
}

/// A scalar as text (booleans as `true`/`false`).
fn text(v: &Value, path: &str) -> R<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("{path} must be a string")),
    }
}

fn number(v: &Value, path: &str) -> R<u64> {
    let s = text(v, path)?;
    s.parse().map_err(|_| format!("{path}: {s:?} is not a whole number"))
}

fn flag(v: Option<&Value>, path: &str) -> R<bool> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(_) => Err(format!("{path} must be true or false")),
    }
}

fn duration(v: &Value, path: &str) -> R<u64> {
    super::super::parse::duration_ns(&text(v, path)?).map_err(|e| format!("{path}: {e}"))
}

/// `command` / `entrypoint`: a list, or a string split as a shell would.
fn command(v: &Value, path: &str) -> R<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a.iter().map(|x| text(x, path)).collect(),
        v => super::super::parse::words(&text(v, path)?).map_err(|e| format!("{path}: {e}")),
    }
}

/// `environment` / `labels` in either form: `{K: V}` or `["K=V", "K"]`.
fn kv_map(v: &Value) -> R<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let v = match v {
                    Value::Null => None,
                    v => Some(text(v, k)?),
                };
                out.insert(k.clone(), v);
            }
        }
        Value::Array(a) => {
            for x in a {
                let s = text(x, "item")?;
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                    None => out.insert(s, None),
                };
            }
        }
        _ => return Err("must be a mapping or a list of KEY=VALUE".into()),
    }
    if out.keys().any(String::is_empty) {
        return Err("a key is empty".into());
    }
    Ok(out)
}

fn labels(v: Option<&Value>, path: &str) -> R<BTreeMap<String, String>> {
    let m = kv_map(v.unwrap_or(&Value::Null)).map_err(|e| format!("{path}: {e}"))?;
    Ok(m.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(doc: Value) -> R<Plan> {
        let env = |k: &str| (k == "FROM_ENV").then(|| "shell".to_string());
        convert("app", &doc, Path::new("/srv/app"), &env)
    }

    #[test]
    fn a_service_converts_with_docker_names_labels_and_defaults() {
        let p = conv(json!({
            "version": "3.8",
            "services": {"web": {
                "image": "nginx:1.25",
                "command": "nginx -g 'daemon off;'",
                "environment": ["A=1", "FROM_ENV", "MISSING"],
                "labels": {"c": "d"},
                "ports": ["8080:80", "53:53/udp", {"target": 443, "published": 8443, "mode": "host"}, "9000-9001:90-91"],
                "volumes": ["data:/var/lib/x:ro", "./conf:/etc/x", {"type": "tmpfs", "target": "/tmp"}],
                "healthcheck": {"test": "wget -q localhost", "interval": "5s", "retries": "2"},
                "stop_grace_period": "1m30s",
                "deploy": {
                    "mode": "replicated", "replicas": "3", "labels": {"tier": "front"},
                    "placement": {"constraints": ["node.role==worker"], "preferences": [{"spread": "node.labels.zone"}], "max_replicas_per_node": "2"},
                    "resources": {"limits": {"cpus": "0.5", "memory": "64M"}},
                    "restart_policy": {"condition": "on-failure", "delay": "2s", "max_attempts": "4"},
                    "update_config": {"parallelism": "2", "order": "start-first", "failure_action": "rollback", "max_failure_ratio": "0.2"},
                    "endpoint_mode": "dnsrr"
                }
            }},
            "volumes": {"data": null}
        }))
        .unwrap();
        assert!(p.ignored.is_empty());
        let s = &p.services[0];
        assert_eq!(s.name, "app_web");
        assert_eq!(s.labels.get(NAMESPACE_LABEL).map(String::as_str), Some("app"));
        assert_eq!(s.labels.get(IMAGE_LABEL).map(String::as_str), Some("nginx:1.25"));
        assert_eq!(s.labels.get("tier").map(String::as_str), Some("front"));
        let c = &s.task.container;
        assert_eq!(c.args, ["nginx", "-g", "daemon off;"]);
        assert_eq!(c.env, ["A=1", "FROM_ENV=shell"], "an unset name without a value is left out");
        assert_eq!(c.labels.get("c").map(String::as_str), Some("d"));
        assert_eq!(c.labels.get(NAMESPACE_LABEL).map(String::as_str), Some("app"));
        let ports: Vec<(u32, u32, &str, &str)> =
            s.ports.iter().map(|p| (p.published_port, p.target_port, p.protocol.as_str(), p.publish_mode.as_str())).collect();
        assert_eq!(
            ports,
            [
                (8080, 80, "tcp", "ingress"),
                (53, 53, "udp", "ingress"),
                (8443, 443, "tcp", "host"),
                (9000, 90, "tcp", "ingress"),
                (9001, 91, "tcp", "ingress")
            ]
        );
        assert_eq!(c.mounts[0], Mount { kind: MountKind::Volume, source: "app_data".into(), target: "/var/lib/x".into(), read_only: true });
        assert_eq!(c.mounts[1], Mount { kind: MountKind::Bind, source: "/srv/app/conf".into(), target: "/etc/x".into(), read_only: false });
        assert_eq!(c.mounts[2].kind, MountKind::Tmpfs);
        let h = c.healthcheck.as_ref().unwrap();
        assert_eq!(
            (h.test.clone(), h.interval_ns, h.retries),
            (vec!["CMD-SHELL".to_string(), "wget -q localhost".into()], 5_000_000_000, 2)
        );
        assert_eq!(c.stop_grace_ns, 90_000_000_000);
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(s.task.placement.constraints, ["node.role==worker"]);
        assert_eq!(s.task.placement.max_replicas_per_node, 2);
        assert_eq!(s.task.placement.preferences.len(), 1);
        assert_eq!((s.task.resources.limits.nano_cpus, s.task.resources.limits.memory_bytes), (500_000_000, 64 << 20));
        assert_eq!(
            (s.task.restart.condition, s.task.restart.delay_ns, s.task.restart.max_attempts),
            (RestartCondition::OnFailure, 2_000_000_000, 4)
        );
        assert_eq!((s.update.parallelism, s.update.order, s.update.failure_action), (2, UpdateOrder::StartFirst, FailureAction::Rollback));
        assert!((s.update.max_failure_ratio - 0.2).abs() < 1e-6);
        assert_eq!(s.endpoint_mode, EndpointMode::Dnsrr);
        // On `default`, created for it, with the short name as alias.
        assert_eq!(s.task.networks, [NetworkAttachmentConfig { target: "app_default".into(), aliases: vec!["web".into()] }]);
        assert_eq!(p.networks.len(), 1);
        assert_eq!((p.networks[0].name.as_str(), p.networks[0].spec.driver.as_str()), ("app_default", "overlay"));
        assert_eq!(p.networks[0].spec.labels.get(NAMESPACE_LABEL).map(String::as_str), Some("app"));
    }

    #[test]
    fn networks_secrets_and_configs_are_scoped_or_external_and_only_used_ones_kept() {
        let p = conv(json!({
            "services": {
                "api": {"image": "x", "networks": {"back": {"aliases": ["db-api"]}, "shared": null},
                        "secrets": ["pw", {"source": "cert", "target": "tls.pem", "uid": "10", "mode": "0400"}],
                        "configs": ["conf"]},
            },
            "networks": {"back": {"driver_opts": {"encrypted": ""}, "ipam": {"config": [{"subnet": "10.9.0.0/24"}]}},
                         "shared": {"external": true}, "unused": {}},
            "secrets": {"pw": {"external": true}, "cert": {"name": "tls-cert-v2", "external": true}, "spare": {"external": true}},
            "configs": {"conf": {"external": {"name": "base-conf"}}}
        }))
        .unwrap();
        let s = &p.services[0];
        let nets: Vec<(&str, Vec<String>)> = s.task.networks.iter().map(|n| (n.target.as_str(), n.aliases.clone())).collect();
        assert_eq!(nets, [("app_back", vec!["api".to_string(), "db-api".into()]), ("shared", vec!["api".to_string()])]);
        let declared: Vec<(&str, bool)> = p.networks.iter().map(|n| (n.name.as_str(), n.external)).collect();
        assert_eq!(declared, [("app_back", false), ("shared", true)], "unused and default are not created");
        assert_eq!(s.labels.get(NAMESPACE_LABEL).map(String::as_str), Some("app"), "labelled without a deploy key");
        assert_eq!(p.networks[0].spec.options.get("encrypted").map(String::as_str), Some(""));
        assert!(p.networks[0].spec.ipam.subnet.is_some());
        let secrets: Vec<(&str, &str, &str, u32)> =
            s.task.container.secrets.iter().map(|f| (f.name.as_str(), f.target.as_str(), f.uid.as_str(), f.mode)).collect();
        assert_eq!(secrets, [("pw", "pw", "0", 0o444), ("tls-cert-v2", "tls.pem", "10", 0o400)]);
        assert_eq!(p.secrets.len(), 2, "spare is not used");
        assert_eq!((s.task.container.configs[0].name.as_str(), s.task.container.configs[0].target.as_str()), ("base-conf", "/conf"));
    }

    #[test]
    fn bad_files_are_refused_naming_the_key() {
        let cases: &[(Value, &str)] = &[
            (json!({"services": {"web": {"image": "x", "colour": "blue"}}}), "services.web Additional property colour is not allowed"),
            (json!({"services": {"web": {"image": "x"}}, "extra": 1}), "(root) Additional property extra is not allowed"),
            (json!({"version": "2.4", "services": {"web": {"image": "x"}}}), "unsupported Compose file version: 2.4"),
            (json!({"services": {}}), "names no services"),
            (json!({"services": {"web": {"command": "x"}}}), "service web has neither an image nor a build context"),
            (json!({"services": {"web": {"image": "x", "networks": ["nope"]}}}), "refers to undefined network nope"),
            (json!({"services": {"web": {"image": "x", "volumes": ["nope:/x"]}}}), "undefined volume nope"),
            (json!({"services": {"web": {"image": "x", "volumes": ["/x"]}}}), "anonymous volumes are not supported"),
            (json!({"services": {"web": {"image": "x", "volumes": ["/a:x"]}}}), "must be an absolute path"),
            (json!({"services": {"web": {"image": "x", "secrets": ["nope"]}}}), "undefined secret \"nope\""),
            (json!({"services": {"web": {"image": "x", "ports": ["127.0.0.1:80:80"]}}}), "a host IP is not supported"),
            (json!({"services": {"web": {"image": "x", "ports": ["80-82:80-81"]}}}), "ranges differ in length"),
            (
                json!({"services": {"web": {"image": "x", "deploy": {"mode": "global", "replicas": 2}}}}),
                "replicas cannot be used with mode global",
            ),
            (
                json!({"services": {"web": {"image": "x", "deploy": {"replicas": "many"}}}}),
                "services.web.deploy.replicas: \"many\" is not a whole number",
            ),
            (
                json!({"services": {"web": {"image": "x", "deploy": {"restart_policy": {"condition": "always"}}}}}),
                "services.web.deploy.restart_policy.condition",
            ),
            (json!({"services": {"web": {"image": "x", "stop_grace_period": "soon"}}}), "services.web.stop_grace_period: invalid duration"),
            (
                json!({"services": {"web": {"image": "x"}}, "networks": {"n": {"driver": "bridge"}}}),
                "network driver \"bridge\" is not supported",
            ),
            (json!({"services": {"web": {"image": "x"}}, "secrets": {"s": {}}}), "secrets.s: give `file: PATH`"),
            (
                json!({"services": {"web": {"image": "x"}}, "secrets": {"s": {"external": true, "file": "x"}}}),
                "secrets.s: an external object takes only `external` and `name`",
            ),
            (json!({"services": {"web": {"image": "x", "healthcheck": {"test": ["wget"]}}}}), "a list starts with CMD"),
        ];
        for (doc, want) in cases {
            let e = conv(doc.clone()).unwrap_err();
            assert!(e.contains(want), "{doc}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn ignored_keys_are_listed_and_extensions_are_free() {
        let p = conv(json!({"x-meta": 1, "services": {"web": {"image": "x", "build": ".", "restart": "always", "x-note": "hi",
            "deploy": {"resources": {"limits": {"pids": 10}}}}}}))
        .unwrap();
        assert_eq!(p.ignored, ["services.web.build", "services.web.restart", "services.web.deploy.resources.limits.pids"]);
    }

    #[test]
    fn file_modes_read_as_docker_does() {
        assert_eq!(file_mode("0440"), Some(0o440));
        assert_eq!(file_mode("0o440"), Some(0o440));
        assert_eq!(file_mode("288"), Some(0o440));
        assert_eq!(file_mode("0999"), None);
        assert_eq!(file_mode("99999"), None);
    }

    #[test]
    fn files_merge_maps_and_service_lists_by_key() {
        let mut base = json!({"services": {"web": {"image": "a", "ports": ["80:80", "81:81"], "environment": ["A=1", "B=2"],
            "volumes": ["d:/data"], "command": ["x", "y"]}}});
        merge(
            &mut base,
            json!({"services": {"web": {"image": "b", "ports": ["82:82"], "environment": {"B": "3", "C": "4"},
            "volumes": ["e:/data"], "command": ["z"]}, "db": {"image": "pg"}}}),
        );
        let web = &base["services"]["web"];
        assert_eq!(web["image"], "b");
        assert_eq!(web["ports"], json!(["80:80", "81:81", "82:82"]));
        assert_eq!(web["environment"], json!({"A": "1", "B": "3", "C": "4"}));
        assert_eq!(web["volumes"], json!(["e:/data"]), "same target: replaced");
        assert_eq!(web["command"], json!(["z"]));
        assert_eq!(base["services"]["db"]["image"], "pg");
    }
}
