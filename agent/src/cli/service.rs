//! `shoal service ...`: create, ls, ps, inspect, scale, rm, logs, and the
//! convergence progress display that create, scale, update and rollback
//! show unless `-d` (update and rollback live in [`super::update`]).
//!
//! Progress polls the task list every [`POLL_MS`] and ends when every slot
//! has a running task that has stayed up for the verify window, which is
//! the service's update monitor capped at [`VERIFY_MS_MAX`]: Swarm waits the
//! whole monitor period (5 s by default) on every create; most containers
//! that crash on start do so within a second, so Shoal checks one second of
//! stability, counted from each task's own start, and a service whose tasks
//! are already stable converges with no wait at all. The whole wait is
//! bounded by `--timeout` (default [`PROGRESS_MS_DEFAULT`]).
//!
//! Watching an update or rollback also follows the service's `UpdateStatus`,
//! as Docker's: only tasks on the new spec count, convergence waits for the
//! update to complete (the updater's own monitor window), a paused update is
//! an error, and an automatic rollback is announced (`rollback: ...`) and
//! ends in an error once it has completed.

use super::filter::{self, Filters};
use super::output::{ago, image_shown, trunc, Format, Table};
use super::{call, inspect, parse, update};
use crate::client::REPLY_MS_DEFAULT;
use anyhow::bail;
use clap::{Args, Subcommand};
use shoal_manager::updater::MSG_ROLLBACK_MANUAL;
use shoal_shared::api::{LogCursor, Reply, Request};
use shoal_shared::task::TaskState;
use shoal_shared::types::{Node, Service, ServiceMode, ServiceSpec, Task, UpdateState, UpdateStatus};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const POLL_MS: u64 = 100;
const VERIFY_MS_MAX: u64 = 1_000;
pub(crate) const PROGRESS_MS_DEFAULT: u64 = 120_000;
/// `service logs -f` asks for new lines this often.
const LOGS_FOLLOW_POLL_MS: u64 = 250;
/// Requests in a row `service logs` makes while the manager says a size
/// bound cut its answer (each brings up to 8 MiB) before it moves on.
const LOGS_CATCH_UP_ROUNDS_MAX: u32 = 64;

// Parsed once per process; size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub(crate) enum ServiceCmd {
    /// Create a new service.
    Create(CreateArgs),
    /// List services.
    #[command(alias = "list")]
    Ls(super::ListArgs),
    /// List the tasks of a service.
    Ps {
        #[command(flatten)]
        list: super::TaskListArgs,
        service: String,
    },
    /// Display detailed information on services.
    Inspect {
        #[arg(long)]
        pretty: bool,
        /// Output format: json (the default) or a Go template (`{{.Spec.Name}}`).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Scale one or more replicated services (SERVICE=REPLICAS).
    Scale {
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(short, long)]
        detach: bool,
        /// Longest time to wait for each service to converge without -d.
        #[arg(long, value_parser = parse::duration_ns)]
        timeout: Option<u64>,
        #[arg(required = true, value_parser = parse::scale)]
        scales: Vec<(String, u64)>,
    },
    /// Update a service.
    Update(update::UpdateArgs),
    /// Revert changes to a service's configuration.
    Rollback {
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(short, long)]
        detach: bool,
        /// Suppress progress output.
        #[arg(short, long)]
        quiet: bool,
        service: String,
    },
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Fetch the logs of a service's tasks.
    Logs {
        /// Follow log output.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines to show from the end of each task's log.
        #[arg(long, short = 'n')]
        tail: Option<String>,
        service: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// Service name.
    #[arg(long)]
    name: Option<String>,
    /// Number of tasks (a replicated job: completions).
    #[arg(long)]
    replicas: Option<u64>,
    /// Service mode: replicated, global, replicated-job or global-job.
    #[arg(long, default_value = "replicated")]
    mode: String,
    /// Give the tasks a secret (/run/secrets/NAME): NAME or source=NAME,target=,uid=,gid=,mode=.
    #[arg(long, value_parser = parse::file_ref)]
    secret: Vec<shoal_shared::types::FileReference>,
    /// Give the tasks a config (/NAME): NAME or source=NAME,target=,uid=,gid=,mode=.
    #[arg(long, value_parser = parse::file_ref)]
    config: Vec<shoal_shared::types::FileReference>,
    /// Number of job tasks to run at once (replicated-job; default: --replicas).
    #[arg(long)]
    max_concurrent: Option<u64>,
    #[command(flatten)]
    restart: RestartArgs,
    /// Set environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Service labels.
    #[arg(short, long = "label", value_parser = parse::key_value)]
    label: Vec<(String, String)>,
    /// Container labels.
    #[arg(long = "container-label", value_parser = parse::key_value)]
    container_label: Vec<(String, String)>,
    /// Placement constraints (node.role!=manager, node.labels.zone==edge).
    #[arg(long = "constraint")]
    constraint: Vec<String>,
    /// Placement preference, outermost first (spread=node.labels.zone).
    #[arg(long = "placement-pref", value_parser = parse::placement_pref)]
    placement_pref: Vec<String>,
    /// Maximum number of tasks per node (0 = unlimited).
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Container hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Time to wait before force-killing a container.
    #[arg(long, value_parser = parse::duration_ns)]
    stop_grace_period: Option<u64>,
    /// Signal to stop the container.
    #[arg(long)]
    stop_signal: Option<String>,
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    health: super::health::HealthArgs,
    /// Attach a filesystem mount (type=volume|bind|tmpfs,source=,destination=).
    #[arg(long = "mount", value_parser = parse::mount)]
    mount: Vec<shoal_shared::types::Mount>,
    /// Attach to a network: NAME, or name=NAME,alias=ALIAS (host and none alone).
    #[arg(long = "network", value_parser = parse::network)]
    network: Vec<shoal_shared::types::NetworkAttachmentConfig>,
    /// Publish a port: [PUBLISHED:]TARGET[/PROTOCOL] or mode=host,published=8080,target=80
    /// (without a published port, one from 30000-32767 is picked).
    #[arg(short, long = "publish", value_parser = parse::publish)]
    publish: Vec<shoal_shared::types::PortConfig>,
    /// Endpoint mode: vip or dnsrr.
    #[arg(long, value_parser = parse::endpoint_mode)]
    endpoint_mode: Option<shoal_shared::types::EndpointMode>,
    /// Send this client's registry credentials (`shoal login`) with the
    /// service: the nodes that run its tasks pull with them.
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
    #[command(flatten)]
    policy: update::PolicyArgs,
    /// Image to run.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The restart-policy flags shared by `service create` and `service update`.
#[derive(Args, Debug)]
pub(crate) struct RestartArgs {
    /// Restart when: any, on-failure or none.
    #[arg(long, value_parser = parse::restart_condition)]
    restart_condition: Option<shoal_shared::types::RestartCondition>,
    /// Delay between restart attempts (ns|us|ms|s|m|h).
    #[arg(long, value_parser = parse::duration_ns)]
    restart_delay: Option<u64>,
    /// Maximum number of restarts before giving up (0 = unlimited).
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy.
    #[arg(long, value_parser = parse::duration_ns)]
    restart_window: Option<u64>,
}

impl RestartArgs {
    /// Overwrites the policy's fields that were given on the command line.
    pub(crate) fn apply(&self, r: &mut shoal_shared::types::RestartPolicy) {
        if let Some(c) = self.restart_condition {
            r.condition = c;
        }
        if let Some(d) = self.restart_delay {
            r.delay_ns = d;
        }
        if let Some(m) = self.restart_max_attempts {
            r.max_attempts = m;
        }
        if let Some(w) = self.restart_window {
            r.window_ns = w;
        }
    }
}

/// The resource flags shared by `service create` and `service update`.
#[derive(Args, Debug)]
pub(crate) struct ResourceArgs {
    /// Limit CPUs.
    #[arg(long, value_parser = parse::nano_cpus)]
    limit_cpu: Option<i64>,
    /// Limit memory.
    #[arg(long, value_parser = parse::memory_bytes)]
    limit_memory: Option<i64>,
    /// Reserve CPUs.
    #[arg(long, value_parser = parse::nano_cpus)]
    reserve_cpu: Option<i64>,
    /// Reserve memory.
    #[arg(long, value_parser = parse::memory_bytes)]
    reserve_memory: Option<i64>,
}

impl ResourceArgs {
    /// Overwrites the figures that were given on the command line.
    pub(crate) fn apply(&self, res: &mut shoal_shared::types::Resources) {
        for (v, slot) in [
            (self.limit_cpu, &mut res.limits.nano_cpus),
            (self.limit_memory, &mut res.limits.memory_bytes),
            (self.reserve_cpu, &mut res.reservations.nano_cpus),
            (self.reserve_memory, &mut res.reservations.memory_bytes),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
    }
}

pub(crate) fn run(host: &str, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create(a) => create(host, a),
        ServiceCmd::Ls(a) => ls(host, &a),
        ServiceCmd::Ps { list, service } => ps(host, &service, &list),
        ServiceCmd::Inspect { pretty, format, services } => {
            // Checked before anything is asked (a bad template asks nothing).
            Format::parse(&format)?;
            let mut out = Vec::new();
            for s in services {
                let Reply::Service(svc) = call(host, Request::ServiceInspect { service: s }, REPLY_MS_DEFAULT)? else {
                    bail!("unexpected reply")
                };
                if pretty {
                    print!("{}", inspect::service_pretty(&svc));
                } else {
                    out.push(inspect::service_json(&svc));
                }
            }
            if !pretty {
                Format::inspect(&format, &out)?;
            }
            Ok(())
        }
        ServiceCmd::Scale { detach, timeout, scales } => {
            let timeout_ms = timeout.map(|ns| ns / 1_000_000).unwrap_or(PROGRESS_MS_DEFAULT);
            // Check every service first so a typo scales nothing.
            for (name, _) in &scales {
                call(host, Request::ServiceInspect { service: name.clone() }, REPLY_MS_DEFAULT)?;
            }
            for (name, replicas) in &scales {
                call(host, Request::ServiceScale { service: name.clone(), replicas: *replicas }, REPLY_MS_DEFAULT)?;
                println!("{name} scaled to {replicas}");
                if !detach {
                    progress(host, name, timeout_ms, Watch::converge())?;
                }
            }
            Ok(())
        }
        ServiceCmd::Rm { services } => super::remove_each(host, services, |service| Request::ServiceRemove { service }),
        ServiceCmd::Logs { follow, tail, service } => logs(host, &service, follow, tail),
        ServiceCmd::Update(a) => update::update(host, a),
        ServiceCmd::Rollback { detach, quiet, service } => update::rollback(host, &service, detach || quiet),
    }
}

fn spec_from(a: CreateArgs) -> anyhow::Result<ServiceSpec> {
    let name = a.name.clone().unwrap_or_else(|| generated_name(&a.image));
    let mut spec = ServiceSpec::new(&name, &a.image);
    spec.mode = match a.mode.as_str() {
        "replicated" => ServiceMode::Replicated { replicas: a.replicas.unwrap_or(1) },
        "global" | "global-job" if a.replicas.is_some() => bail!("--replicas can only be used with replicated or replicated-job mode"),
        "global" => ServiceMode::Global,
        "global-job" => ServiceMode::GlobalJob,
        "replicated-job" => {
            let total_completions = a.replicas.unwrap_or(1);
            ServiceMode::ReplicatedJob { max_concurrent: a.max_concurrent.unwrap_or(total_completions), total_completions }
        }
        m => bail!("invalid mode {m:?}: use replicated, global, replicated-job or global-job"),
    };
    if a.max_concurrent.is_some() && a.mode != "replicated-job" {
        bail!("--max-concurrent can only be used with replicated-job mode");
    }
    if spec.mode.is_job() {
        // Docker's default for jobs: a task that exits 0 is done, a failed one runs again.
        spec.task.restart.condition = shoal_shared::types::RestartCondition::OnFailure;
    }
    let c = &mut spec.task.container;
    c.args = a.args;
    if let Some(e) = a.entrypoint {
        c.command = e.split_whitespace().map(str::to_string).collect();
    }
    c.env = a.env;
    c.labels = a.container_label.into_iter().collect();
    c.dir = a.workdir.unwrap_or_default();
    c.user = a.user.unwrap_or_default();
    c.hostname = a.hostname.unwrap_or_default();
    c.mounts = a.mount;
    c.secrets = a.secret;
    c.configs = a.config;
    if let Some(g) = a.stop_grace_period {
        c.stop_grace_ns = g;
    }
    c.stop_signal = a.stop_signal.unwrap_or_default();
    a.health.apply(&mut c.healthcheck)?;
    spec.labels = a.label.into_iter().collect();
    a.restart.apply(&mut spec.task.restart);
    a.resources.apply(&mut spec.task.resources);
    spec.task.placement.constraints = a.constraint;
    spec.task.placement.preferences = a.placement_pref;
    spec.task.placement.max_replicas_per_node = a.replicas_max_per_node.unwrap_or(0);
    spec.task.networks = a.network;
    spec.ports = a.publish;
    if let Some(m) = a.endpoint_mode {
        spec.endpoint_mode = m;
    }
    a.policy.apply(&mut spec)?;
    Ok(spec)
}

/// Docker names unnamed services after adjective_noun; Shoal uses the image
/// name plus a short random suffix, which is easier to recognise.
fn generated_name(image: &str) -> String {
    let base = image.split('@').next().unwrap_or(image);
    let base = base.rsplit('/').next().unwrap_or(base);
    let base: String = base.split(':').next().unwrap_or(base).chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{:04x}", base.trim_matches('-'), nanos & 0xffff)
}

fn create(host: &str, a: CreateArgs) -> anyhow::Result<()> {
    let (detach, quiet) = (a.detach, a.quiet);
    let timeout_ms = a.timeout.map(|ns| ns / 1_000_000).unwrap_or(PROGRESS_MS_DEFAULT);
    let with_auth = a.with_registry_auth;
    let spec = spec_from(a)?;
    let name = spec.name.clone();
    let registry_auth = if with_auth { super::login::registry_auth_flag(&spec.task.container.image) } else { None };
    let Reply::ServiceCreated { id, warnings } =
        call(host, Request::ServiceCreate { spec: Box::new(spec), registry_auth }, crate::client::REPLY_MS_IMAGES)?
    else {
        bail!("unexpected reply")
    };
    for w in warnings {
        eprintln!("warning: {w}");
    }
    println!("{id}");
    if detach || quiet {
        return Ok(());
    }
    progress(host, &name, timeout_ms, Watch::converge())
}

/// A service's tasks, the nodes, and the image pulls of its preparing tasks by task id.
type Listed = (Service, Vec<Task>, Vec<Node>, BTreeMap<String, shoal_shared::api::PullProgress>);

/// Docker's task filters (`service ps`, `node ps`): `id` a prefix, `name`
/// a prefix of the task's name (`web.1`), `node` a node's id or hostname,
/// `desired-state` running (Docker counts Ready as running), shutdown
/// (everything past Running), or accepted.
pub(crate) fn task_matches(filters: &Filters, t: &Task, service_name: &str, hostnames: &BTreeMap<&str, &str>) -> bool {
    filters.matches(|k, v| match k {
        "id" => t.id.starts_with(v),
        "name" => format!("{service_name}.{}", crate::daemon::service::slot_name(t)).starts_with(v),
        "node" => t.node_id == v || hostnames.get(t.node_id.as_str()).is_some_and(|h| *h == v),
        "desired-state" => match v {
            "running" => matches!(t.desired_state, TaskState::Running | TaskState::Ready),
            "shutdown" => t.desired_state > TaskState::Running,
            _ => t.desired_state == TaskState::Accepted,
        },
        _ => false,
    })
}

fn fetch_tasks(host: &str, service: &str) -> anyhow::Result<Listed> {
    match call(host, Request::TaskList { service: service.to_string() }, REPLY_MS_DEFAULT)? {
        Reply::Tasks { service, tasks, nodes, pulls } => Ok((*service, tasks, nodes, pulls.into_iter().collect())),
        r => bail!("unexpected reply: {r:?}"),
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Position of a state on the progress bar (Swarm's numbered states).
fn bar(state: TaskState) -> String {
    let step = match state {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Ready => 7,
        TaskState::Starting => 8,
        _ => 9,
    };
    super::pull::bar(step, 9)
}

/// What a progress display waits for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watch {
    /// Watching an update or rollback (not a create or scale).
    pub update: bool,
    /// A rollback was asked for (so rolling back is no failure).
    pub rollback: bool,
    /// The service's update status before the request, to tell new news from old.
    pub before: Option<UpdateStatus>,
}

impl Watch {
    /// Create and scale: tasks running and stable.
    pub(crate) fn converge() -> Watch {
        Watch::default()
    }
}

/// Renders one frame; returns (lines, converged).
/// `status` is the update status news this display follows (none for create and scale).
/// `pulls`: the image pulls of tasks not started yet (a line's download).
fn frame(
    service: &Service,
    tasks: &[Task],
    pulls: &BTreeMap<String, shoal_shared::api::PullProgress>,
    verify_ms: u64,
    watch: &Watch,
    status: Option<&UpdateStatus>,
) -> (Vec<String>, bool) {
    // One line per slot (replicated) or node (global), showing its newest runnable task.
    let mut slots: BTreeMap<String, &Task> = BTreeMap::new();
    // The newest error of each slot, shown while its current task is not up yet.
    let mut errors: BTreeMap<String, &str> = BTreeMap::new();
    let mut by_age: Vec<&Task> = tasks.iter().collect();
    by_age.sort_by_key(|t| (t.meta.created_at, t.status.timestamp));
    for t in by_age {
        let key = slot_key(t);
        if !t.status.err.is_empty() {
            errors.insert(key.clone(), &t.status.err);
        }
        if t.desired_state <= TaskState::Running {
            slots.insert(key, t);
        }
    }
    let total = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas as usize,
        ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => return job_frame(service, &slots, &errors),
        ServiceMode::Global => slots.len(),
    };
    let now = now_ns();
    // During an update only tasks on the new spec count.
    let done = |t: &Task| t.status.state == TaskState::Running && (!watch.update || t.spec == service.spec.task);
    let running = slots.values().filter(|t| done(t)).count();
    let stable = slots.values().all(|t| done(t) && now.saturating_sub(t.status.timestamp) >= verify_ms * 1_000_000);
    let rolling_back = status.is_some_and(|u| u.state.is_rollback());
    let what = if rolling_back { "rolling back update: " } else { "" };
    let mut lines = vec![format!("overall progress: {what}{running} out of {total} tasks")];
    for (key, t) in &slots {
        let label = slot_label(t, total);
        let state = t.status.state;
        let pulling = pulls.get(&t.id).filter(|_| state < TaskState::Starting).and_then(super::pull::pull_summary);
        match (errors.get(key), pulling) {
            (Some(err), _) if state != TaskState::Running => lines.push(format!("{label}: {}", trunc_error(err))),
            (_, Some(pull)) => lines.push(format!("{label}: {:<9} {pull}", state.as_lower())),
            _ => lines.push(format!("{label}: {:<9} {}", state.as_lower(), bar(state))),
        }
    }
    let finished = status.is_none_or(|u| matches!(u.state, UpdateState::Completed | UpdateState::RollbackCompleted));
    let all_up = running == total && slots.len() == total;
    let converged = all_up && stable && finished;
    if converged {
        lines.push("verify: Service converged".into());
    } else if all_up {
        let monitor_ms = match status {
            Some(u) if u.state.is_rollback() => service.spec.rollback.monitor_ns / 1_000_000,
            Some(_) => service.spec.update.monitor_ns / 1_000_000,
            None => verify_ms,
        };
        lines.push(format!("verify: Waiting {} seconds to verify that tasks are stable...", monitor_ms.div_ceil(1000)));
    }
    (lines, converged)
}

/// A job's frame (Docker's): `job progress: C out of N complete [bar]`,
/// `active tasks: R out of M tasks`, a line per slot of the current
/// iteration; done once every slot completed. A slot whose task failed and
/// will not run again (still its slot's task) is reported as failed.
/// An error on one progress line, as Swarm's `truncError`: newlines made
/// spaces, at most 75 characters.
fn trunc_error(err: &str) -> String {
    let one_line = err.replace('\n', " ");
    if one_line.chars().count() > 75 {
        format!("{}…", one_line.chars().take(74).collect::<String>())
    } else {
        one_line
    }
}

/// A progress map's key for a task's slot: zero-padded slot numbers sort in
/// order; a global service's slot is its node.
fn slot_key(t: &Task) -> String {
    if t.slot > 0 {
        format!("{:020}", t.slot)
    } else {
        t.node_id.clone()
    }
}

/// A progress line's label: `3/5`, or a global task's short node id.
fn slot_label(t: &Task, total: impl std::fmt::Display) -> String {
    if t.slot > 0 {
        format!("{}/{}", t.slot, total)
    } else {
        t.node_id[..t.node_id.len().min(12)].to_string()
    }
}

fn job_frame(service: &Service, slots: &BTreeMap<String, &Task>, errors: &BTreeMap<String, &str>) -> (Vec<String>, bool) {
    // Only the current iteration: an older one's tasks are on their way out.
    let current: Vec<(&String, &&Task)> = slots.iter().filter(|(_, t)| t.spec == service.spec.task).collect();
    let (total, concurrent) = match service.spec.mode {
        ServiceMode::ReplicatedJob { total_completions, max_concurrent } => (total_completions as usize, max_concurrent as usize),
        _ => (current.len(), current.len()),
    };
    let completed = current.iter().filter(|(_, t)| t.status.state == TaskState::Complete).count();
    let active = current.iter().filter(|(_, t)| !t.status.state.is_terminal()).count();
    let mut lines = vec![
        format!("job progress: {completed} out of {total} complete {}", super::pull::bar(completed as u64, total as u64)),
        format!("active tasks: {active} out of {} tasks", concurrent.min(total.saturating_sub(completed)).max(active)),
    ];
    for (key, t) in &current {
        let label = slot_label(t, total);
        let state = t.status.state;
        match errors.get(*key) {
            Some(err) if state != TaskState::Complete && state != TaskState::Running => lines.push(format!("{label}: {err}")),
            _ => lines.push(format!("{label}: {:<9} {}", state.as_lower(), bar(state))),
        }
    }
    // A global job with no task yet has not started (its nodes are being found).
    let done = total > 0 && completed == total;
    if done {
        lines.push("verify: Job complete".into());
    }
    (lines, done)
}

/// The slot and error of a job task that failed for good: still its slot's
/// task (nothing replaced it), ended, not complete.
fn job_failure(service: &Service, tasks: &[Task]) -> Option<String> {
    if !service.spec.mode.is_job() {
        return None;
    }
    let mut slots: BTreeMap<String, &Task> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.desired_state <= TaskState::Running) {
        slots.insert(slot_key(t), t);
    }
    slots.values().find(|t| t.spec == service.spec.task && t.status.state.is_terminal() && t.status.state != TaskState::Complete).map(|t| {
        let why = if t.status.err.is_empty() { t.status.message.as_str() } else { t.status.err.as_str() };
        format!("task {} ({}) failed and will not run again: {why}", short_id(&t.id), t.status.state.as_lower())
    })
}

/// What the `rollback: ...` line says for update status news not announced
/// yet: the rollback's own message when it is seen starting. A rollback this
/// command asked for may be past its start at the first poll (one that
/// replaces no task, such as undoing a scale, completes in the same pass of
/// the manager that started it); its start said the manual rollback's
/// message, so that is the line, whatever the poll timing.
fn rollback_note(watch: &Watch, status: &UpdateStatus) -> Option<String> {
    match status.state {
        UpdateState::RollbackStarted => Some(status.message.clone()),
        UpdateState::RollbackPaused | UpdateState::RollbackCompleted if watch.rollback => Some(MSG_ROLLBACK_MANUAL.to_string()),
        _ => None,
    }
}

/// Set by SIGINT while a progress display runs (see [`progress`]).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ctrl-C stops watching, not the operation (Docker's behaviour): the
/// display notices within one poll.
fn catch_interrupt() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    // SAFETY: installs a handler that only stores to an atomic; the CLI
    // installs no other SIGINT handler.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

pub(crate) fn progress(host: &str, service: &str, timeout_ms: u64, watch: Watch) -> anyhow::Result<()> {
    catch_interrupt();
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut drawn = 0usize;
    let mut out = std::io::stdout();
    // Lines that stay above the frame (`rollback: ...`).
    let mut notes: Vec<String> = Vec::new();
    let mut rollback_reason: Option<String> = None;
    // A job task seen failed for good in two polls in a row (the first may
    // be the instant before the manager replaces it).
    let mut failing: Option<String> = None;
    loop {
        let (svc, tasks, _, pulls) = fetch_tasks(host, service)?;
        let verify_ms = svc.spec.update.monitor_ns / 1_000_000;
        let status = svc.update_status.clone().filter(|u| watch.update && Some(u) != watch.before.as_ref());
        if let Some(note) = status.as_ref().filter(|_| rollback_reason.is_none()).and_then(|u| rollback_note(&watch, u)) {
            notes.push(format!("rollback: {note}"));
            rollback_reason = Some(note);
        }
        let (frame_lines, converged) = frame(&svc, &tasks, &pulls, verify_ms.min(VERIFY_MS_MAX), &watch, status.as_ref());
        let lines: Vec<String> = notes.iter().cloned().chain(frame_lines).collect();
        if tty {
            if drawn > 0 {
                write!(out, "\x1b[{drawn}A")?;
            }
            for l in &lines {
                writeln!(out, "\x1b[2K{l} ")?;
            }
            out.flush()?;
            drawn = lines.len();
        }
        let print_final = |lines: &[String]| {
            if !tty {
                for l in lines {
                    println!("{l} ");
                }
            }
        };
        match status.as_ref().map(|u| u.state) {
            Some(UpdateState::Paused) => {
                print_final(&lines);
                bail!("service update paused: {}", status.map(|u| u.message).unwrap_or_default());
            }
            Some(UpdateState::RollbackPaused) => {
                print_final(&lines);
                bail!("service rollback paused: {}", status.map(|u| u.message).unwrap_or_default());
            }
            _ => {}
        }
        let failure = job_failure(&svc, &tasks);
        if let (Some(now), Some(before)) = (&failure, &failing) {
            if now == before {
                print_final(&lines);
                bail!("job {service} failed: {now}");
            }
        }
        failing = failure;
        if converged {
            print_final(&lines);
            let rolled_back = status.as_ref().is_some_and(|u| u.state == UpdateState::RollbackCompleted);
            if rolled_back && !watch.rollback {
                let why = rollback_reason.unwrap_or_else(|| status.map(|u| u.message).unwrap_or_default());
                bail!("service rolled back: {why}");
            }
            return Ok(());
        }
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            print_final(&lines);
            println!("Operation continuing in background.");
            println!("Use `shoal service ps {service}` to check progress.");
            return Ok(());
        }
        if start.elapsed() >= Duration::from_millis(timeout_ms) {
            print_final(&lines);
            bail!(
                "service {service} has not converged after {} s; it keeps converging in the background: see `shoal service ps {service}`",
                timeout_ms / 1000
            );
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

pub(crate) fn ls(host: &str, a: &super::ListArgs) -> anyhow::Result<()> {
    let quiet = a.quiet;
    let mut fmt = Format::parse(&a.format)?;
    let filters = Filters::parse(&a.filter, &["id", "name", "label", "mode"])?;
    filter::check_values(&filters, "mode", &["replicated", "global", "replicated-job", "global-job"])?;
    let Reply::Services(mut list) = call(host, Request::ServiceList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    list.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    // Docker's service filters: id and name are prefixes.
    list.retain(|s| {
        filters.matches(|k, v| match k {
            "id" => s.service.id.starts_with(v),
            "name" => s.service.spec.name.starts_with(v),
            "label" => filter::label_matches(&s.service.spec.labels, v),
            "mode" => s.service.spec.mode.as_str() == v.replace('-', " "),
            _ => false,
        })
    });
    let mut t = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    for s in &list {
        let spec = &s.service.spec;
        let mode = spec.mode.as_str();
        let ports = inspect::endpoint_ports_shown(&s.service);
        let image = image_shown(&spec.task.container.image);
        let replicas = match spec.mode {
            ServiceMode::ReplicatedJob { total_completions, .. } => {
                format!("{}/{} ({}/{total_completions} completed)", s.running, s.desired, s.completed)
            }
            ServiceMode::GlobalJob => format!("{}/{} ({}/{} completed)", s.running, s.desired, s.completed, s.desired + s.completed),
            ServiceMode::Replicated { .. } if spec.task.placement.max_replicas_per_node > 0 => {
                format!("{}/{} (max {} per node)", s.running, s.desired, spec.task.placement.max_replicas_per_node)
            }
            _ => format!("{}/{}", s.running, s.desired),
        };
        let id = if a.no_trunc { s.service.id.clone() } else { short_id(&s.service.id) };
        if quiet {
            println!("{}", s.service.id);
        } else if fmt.is_table() {
            t.row(vec![id, spec.name.clone(), mode.into(), replicas, image.into(), ports]);
        } else {
            fmt.row(&serde_json::json!({"ID": id, "Image": image, "Mode": mode, "Name": spec.name, "Ports": ports, "Replicas": replicas}))?;
        }
    }
    if !quiet && fmt.is_table() {
        print!("{}", t.render());
    } else if !quiet {
        fmt.finish(&["ID", "Name", "Mode", "Replicas", "Image", "Ports"]);
    }
    Ok(())
}

fn ps(host: &str, service: &str, list: &super::TaskListArgs) -> anyhow::Result<()> {
    let filters = task_filters(&list.filter)?;
    let (svc, mut tasks, nodes, _) = fetch_tasks(host, service)?;
    let hostnames: BTreeMap<&str, &str> = nodes.iter().map(|n| (n.id.as_str(), n.description.hostname.as_str())).collect();
    tasks.retain(|t| task_matches(&filters, t, &svc.spec.name, &hostnames));
    print_tasks(&[(&svc, tasks.iter().collect())], &hostnames, list.output())
}

/// `service ps` and `node ps` filters.
pub(crate) fn task_filters(filter: &[String]) -> anyhow::Result<Filters> {
    let filters = Filters::parse(filter, &["id", "name", "node", "desired-state"])?;
    filter::check_values(&filters, "desired-state", &["running", "shutdown", "accepted"])?;
    Ok(filters)
}

/// How `service ps` and `node ps` print.
#[derive(Clone, Copy)]
pub(crate) struct TaskOutput<'a> {
    pub(crate) quiet: bool,
    pub(crate) no_trunc: bool,
    pub(crate) format: &'a str,
}

/// Docker's task table: per service, per slot, newest first, history
/// indented under it (` \_ web.1`).
pub(crate) fn print_tasks(services: &[(&Service, Vec<&Task>)], hostnames: &BTreeMap<&str, &str>, o: TaskOutput<'_>) -> anyhow::Result<()> {
    let mut fmt = Format::parse(o.format)?;
    let mut t = Table::new(&["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"]);
    for (svc, tasks) in services {
        // Group by slot; newest first within a slot.
        let mut by_slot: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
        for t in tasks {
            by_slot.entry(slot_key(t)).or_default().push(t);
        }
        // Host-mode ports belong to the running tasks that publish them (Docker's PORTS column).
        let host_ports: Vec<String> = svc
            .spec
            .ports
            .iter()
            .filter(|p| !p.is_ingress())
            .map(|p| format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol))
            .collect();
        let host_ports = host_ports.join(",");
        for group in by_slot.values_mut() {
            group.sort_by(|a, b| b.meta.created_at.cmp(&a.meta.created_at).then(b.id.cmp(&a.id)));
            for (i, task) in group.iter().enumerate() {
                let id = if o.no_trunc { task.id.clone() } else { short_id(&task.id) };
                if o.quiet {
                    println!("{id}");
                    continue;
                }
                let name = format!("{}.{}", svc.spec.name, crate::daemon::service::slot_name(task));
                let name = if i == 0 { name } else { format!(" \\_ {name}") };
                let node = hostnames.get(task.node_id.as_str()).copied().unwrap_or("").to_string();
                let current = format!("{} {}", task.status.state, ago(task.status.timestamp));
                let err = match (&task.status.err, o.no_trunc) {
                    (e, _) if e.is_empty() => String::new(),
                    // Quoted either way, as Docker's task formatter.
                    (e, true) => format!("\"{e}\""),
                    (e, false) => format!("\"{}\"", trunc(e, 29)),
                };
                let image = image_shown(&task.spec.container.image).to_string();
                let ports = if task.status.state == TaskState::Running { host_ports.clone() } else { String::new() };
                if fmt.is_table() {
                    t.row(vec![id, name, image, node, task.desired_state.to_string(), current, err, ports]);
                } else {
                    fmt.row(&serde_json::json!({"CurrentState": current, "DesiredState": task.desired_state.as_str(), "Error": task.status.err, "ID": id, "Image": image, "Name": name.trim_start_matches(" \\_ "), "Node": node, "Ports": ports}))?;
                }
            }
        }
    }
    if !o.quiet && fmt.is_table() {
        print!("{}", t.render());
    } else if !o.quiet {
        fmt.finish(&["ID", "Name", "Image", "Node", "DesiredState", "CurrentState", "Error", "Ports"]);
    }
    Ok(())
}

/// `node ps [NODE...]`: the tasks on nodes (`self` by default), gathered
/// service by service (one `service ps` call each).
pub(crate) fn node_ps(host: &str, nodes: &[String], filter: &[String], o: TaskOutput<'_>) -> anyhow::Result<()> {
    Format::parse(o.format)?;
    let filters = task_filters(filter)?;
    let Reply::Nodes { nodes: all, self_id, .. } = call(host, Request::NodeList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    let wanted = if nodes.is_empty() { vec!["self".to_string()] } else { nodes.to_vec() };
    let mut ids = Vec::new();
    for w in &wanted {
        let id = if w == "self" {
            self_id.clone()
        } else {
            let hits: Vec<&Node> =
                all.iter().filter(|n| n.id == *w || n.description.hostname == *w || n.id.starts_with(w.as_str())).collect();
            match hits.as_slice() {
                [one] => one.id.clone(),
                [] => bail!("node {w} not found"),
                _ => match hits.iter().find(|n| n.id == *w || n.description.hostname == *w) {
                    Some(n) => n.id.clone(),
                    None => bail!("node {w} is ambiguous ({} matches)", hits.len()),
                },
            }
        };
        ids.push(id);
    }
    let hostnames: BTreeMap<&str, &str> = all.iter().map(|n| (n.id.as_str(), n.description.hostname.as_str())).collect();
    let Reply::Services(mut list) = call(host, Request::ServiceList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
    list.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    let mut fetched = Vec::new();
    for s in &list {
        // A service removed between the two calls is skipped.
        let Ok((svc, tasks, _, _)) = fetch_tasks(host, &s.service.id) else {
            continue;
        };
        let tasks: Vec<Task> =
            tasks.into_iter().filter(|t| ids.contains(&t.node_id) && task_matches(&filters, t, &svc.spec.name, &hostnames)).collect();
        fetched.push((svc, tasks));
    }
    let refs: Vec<(&Service, Vec<&Task>)> = fetched.iter().map(|(s, ts)| (s, ts.iter().collect())).collect();
    print_tasks(&refs, &hostnames, o)
}

/// `service logs`: asks the manager for the log bytes after `cursor` (all
/// nodes' tasks, gathered by the leader), prints them with Swarm's
/// `NAME.SLOT.TASKID@HOST | ` prefixes and each warning once on stderr. Asks
/// again at once while the manager says a size bound cut something, and
/// every `LOGS_FOLLOW_POLL_MS` with `-f`.
fn logs(host: &str, service: &str, follow: bool, tail: Option<String>) -> anyhow::Result<()> {
    let tail_lines = match tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<u64>().map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: use a number or all"))?),
    };
    let mut cursor: Vec<LogCursor> = Vec::new();
    let mut warned = std::collections::BTreeSet::new();
    let mut tail_lines = tail_lines;
    let mut catching_up = 0;
    let mut out = std::io::stdout();
    loop {
        // The tail applies to the first read only: tasks that start while
        // `-f` follows are shown from their first line, as Swarm attaches to
        // new tasks (a node that did not answer at first is read from the
        // start of its tasks' logs once it does).
        let req = Request::ServiceLogs { service: service.to_string(), tail_lines, cursor: cursor.clone() };
        let (chunks, next, warnings, more) = match call(host, req, REPLY_MS_DEFAULT)? {
            Reply::ServiceLogs { chunks, cursor, warnings, more } => (chunks, cursor, warnings, more),
            // A daemon from before logs were gathered across nodes.
            Reply::Logs { chunks, cursor } => (chunks, cursor, Vec::new(), false),
            _ => bail!("unexpected reply"),
        };
        let width = chunks.iter().map(|c| c.source.len()).max().unwrap_or(0);
        for c in &chunks {
            for line in String::from_utf8_lossy(&c.data).lines() {
                writeln!(out, "{:<width$}    | {line}", c.source)?;
            }
        }
        out.flush()?;
        for w in warnings {
            if !warned.contains(&w) {
                eprintln!("warning: {w}");
                warned.insert(w);
            }
        }
        // Keep offsets of tasks we already read; new tasks start at their tail.
        cursor = next;
        if more && catching_up < LOGS_CATCH_UP_ROUNDS_MAX {
            catching_up += 1;
            continue;
        }
        catching_up = 0;
        tail_lines = None;
        if !follow {
            if more {
                eprintln!("warning: the service logs faster than they can be read; output stops here (use -f to keep reading)");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(LOGS_FOLLOW_POLL_MS));
    }
}

/// An id's first 12 characters (Docker's short id). By characters, never
/// bytes: ids come from the daemon's reply.
pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_shows_its_newest_error_until_its_task_runs() {
        use shoal_shared::types::{Meta, TaskStatus};
        let svc = Service {
            id: "s".into(),
            meta: Meta::default(),
            spec: ServiceSpec::new("web", "busybox"),
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        };
        let task = |id: &str, created: u64, state: TaskState, desired: TaskState, err: &str| {
            let mut status = TaskStatus::new(state, created, "x");
            status.err = err.into();
            Task {
                id: id.into(),
                meta: Meta { created_at: created, ..Meta::default() },
                service_id: "s".into(),
                slot: 1,
                node_id: "n".into(),
                spec: svc.spec.task.clone(),
                service_version: 1,
                desired_state: desired,
                status,
                not_before: 0,
                attempt: 0,
                networks: Vec::new(),
            }
        };
        // Listed newest first: the newest error still wins.
        let tasks = [
            task("c", 30, TaskState::Pending, TaskState::Running, ""),
            task("a", 10, TaskState::Failed, TaskState::Shutdown, "task: non-zero exit (2)"),
            task("b", 20, TaskState::Failed, TaskState::Shutdown, &format!("task: non-zero exit (1)\n{}", "x".repeat(100))),
        ];
        let (lines, done) = frame(&svc, &tasks, &BTreeMap::new(), 0, &Watch::default(), None);
        assert!(!done);
        let want = format!("1/1: task: non-zero exit (1) {}…", "x".repeat(74 - 24));
        assert_eq!(lines, ["overall progress: 0 out of 1 tasks".to_string(), want]);
        assert_eq!(trunc_error("short"), "short");
    }

    #[test]
    fn bars_fill_with_state() {
        // Swarm 20.10's bars (seed notes): 50 `=` and `>` when running.
        assert_eq!(bar(TaskState::Running), format!("[{}>]", "=".repeat(50)));
        assert_eq!(bar(TaskState::Preparing), format!("[{}>{}]", "=".repeat(33), " ".repeat(17)));
        assert_eq!(bar(TaskState::New).len(), 53);
    }

    #[test]
    fn create_takes_update_and_rollback_flags() {
        use clap::Parser;
        use shoal_shared::types::{FailureAction, UpdateOrder};
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: CreateArgs,
        }
        let args = [
            "t",
            "--name",
            "web",
            "--update-parallelism",
            "3",
            "--update-delay",
            "10s",
            "--update-order",
            "start-first",
            "--update-max-failure-ratio",
            "0.25",
            "--rollback-failure-action",
            "continue",
            "--rollback-monitor",
            "2s",
            "busybox",
        ];
        let spec = spec_from(T::try_parse_from(args).unwrap().a).unwrap();
        assert_eq!((spec.update.parallelism, spec.update.delay_ns, spec.update.order), (3, 10_000_000_000, UpdateOrder::StartFirst));
        assert_eq!(spec.update.max_failure_ratio, 0.25);
        assert_eq!((spec.rollback.failure_action, spec.rollback.monitor_ns), (FailureAction::Continue, 2_000_000_000));
        assert_eq!(spec.rollback.parallelism, 1, "untouched fields keep Swarm's defaults");
        let bad = ["t", "--rollback-failure-action", "rollback", "busybox"];
        assert!(spec_from(T::try_parse_from(bad).unwrap().a).is_err());
        assert!(T::try_parse_from(["t", "--update-order", "sideways", "busybox"]).is_err());
    }

    #[test]
    fn a_requested_rollback_is_announced_even_when_seen_completed() {
        use shoal_shared::types::UpdateStatus;
        let requested = Watch { update: true, rollback: true, before: None };
        let update = Watch { update: true, rollback: false, before: None };
        let started = UpdateStatus::started(UpdateState::RollbackStarted, 1, "update paused: task abc failed");
        assert_eq!(rollback_note(&update, &started).as_deref(), Some("update paused: task abc failed"), "an automatic rollback says why");
        let mut done = UpdateStatus::started(UpdateState::RollbackCompleted, 1, "rollback completed");
        done.completed_at = 2;
        assert_eq!(rollback_note(&requested, &done).as_deref(), Some("manually requested rollback"));
        assert_eq!(rollback_note(&update, &done), None, "an automatic rollback first seen completed ends in its error instead");
        let updating = UpdateStatus::started(UpdateState::Updating, 1, "update in progress");
        assert_eq!(rollback_note(&requested, &updating), None);
    }

    #[test]
    fn scale_takes_a_timeout() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(subcommand)]
            c: ServiceCmd,
        }
        let ServiceCmd::Scale { detach, timeout, scales } = T::try_parse_from(["t", "scale", "--timeout", "5s", "web=7"]).unwrap().c else {
            panic!("not a scale")
        };
        assert_eq!((detach, timeout, scales), (false, Some(5_000_000_000), vec![("web".to_string(), 7)]));
        let ServiceCmd::Scale { timeout, .. } = T::try_parse_from(["t", "scale", "web=1"]).unwrap().c else { panic!("not a scale") };
        assert_eq!(timeout, None, "the default ({PROGRESS_MS_DEFAULT} ms) applies");
    }

    #[test]
    fn create_takes_placement_prefs_and_ports() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: CreateArgs,
        }
        let args = [
            "t",
            "--placement-pref",
            "spread=node.labels.zone",
            "--placement-pref",
            "spread=engine.labels.disk",
            "-p",
            "mode=host,published=8080,target=80,protocol=udp",
            "--publish",
            "9090:90",
            "busybox",
        ];
        let spec = spec_from(T::try_parse_from(args).unwrap().a).unwrap();
        assert_eq!(spec.task.placement.preferences, vec!["node.labels.zone", "engine.labels.disk"]);
        let ports: Vec<(&str, &str, u32, u32)> =
            spec.ports.iter().map(|p| (p.publish_mode.as_str(), p.protocol.as_str(), p.published_port, p.target_port)).collect();
        assert_eq!(ports, vec![("host", "udp", 8080, 80), ("ingress", "tcp", 9090, 90)]);
        let err = T::try_parse_from(["t", "--placement-pref", "spread=zone", "busybox"]).err().expect("bad descriptor refused");
        assert!(err.to_string().contains("invalid spread descriptor \"zone\""), "{err}");
        assert!(T::try_parse_from(["t", "-p", "mode=host,target=80", "busybox"]).is_err());
    }
}
