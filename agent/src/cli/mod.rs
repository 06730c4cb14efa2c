//! The command line: Docker's swarm commands with `docker` spelled `shoal`.
//!
//! Every command except `daemon` is a client of a running daemon over its
//! control socket (`-H unix:///path`, or `SHOAL_HOST`). Errors print one line
//! to stderr and exit 1; usage errors exit 2 (clap's convention, as Docker's).

mod completion;
mod files;
mod filter;
mod health;
mod inspect;
mod login;
mod network;
mod object;
mod output;
mod parse;
mod pull;
mod service;
mod stack;
mod swarm;
#[cfg(feature = "templates")]
pub(crate) mod template;
mod update;
mod volume;

use crate::client::{Client, DEFAULT_HOST, REPLY_MS_DEFAULT, REPLY_MS_IMAGES};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use output::Table;
use shoal_shared::api::{Reply, Request};
use shoal_shared::types::{Availability, NodeRole};
use std::path::PathBuf;

/// Shoal: a tiny container orchestrator for edge fleets.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Daemon socket to connect to.
    #[arg(short = 'H', long, global = true, env = "SHOAL_HOST", default_value = DEFAULT_HOST)]
    host: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground (manager and worker roles).
    Daemon(DaemonArgs),
    /// Show version and platform of the client and daemon.
    Version,
    /// Display this node's swarm information (role, managers, settings).
    Info,
    /// Manage the swarm.
    #[command(subcommand)]
    Swarm(swarm::SwarmCmd),
    /// Manage swarm nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Manage swarm networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage swarm secrets.
    #[command(subcommand)]
    Secret(files::FileCmd),
    /// Manage swarm configs.
    #[command(subcommand)]
    Config(files::FileCmd),
    /// Manage images on this node.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Log in to a registry (credentials are checked by the daemon, then kept in ~/.shoal/config.json).
    Login(login::LoginArgs),
    /// Log out from a registry.
    Logout(login::LogoutArgs),
    /// Manage stacks (applications from Compose files).
    #[command(subcommand)]
    Stack(stack::StackCmd),
    /// Manage the named volumes of the node asked.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Generate a shell completion script (bash, zsh or fish).
    Completion {
        /// bash, zsh or fish.
        shell: String,
    },
    /// Return low-level information on swarm objects (services, nodes,
    /// networks, tasks, secrets, configs).
    Inspect {
        /// Only this kind: service, node, network, task, secret or config.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Output format: json (the default) or a Go template (`{{.Spec.Name}}`).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Copy a task's output to its log file (run by containerd's shim, see `logdriver`).
    #[command(name = "log-driver", hide = true)]
    LogDriver { log_path: PathBuf },
}

#[derive(Args, Debug)]
struct DaemonArgs {
    /// Where state, logs and volumes live.
    #[arg(long, default_value = "/var/lib/shoal")]
    data_dir: PathBuf,
    /// Control socket to listen on.
    #[arg(long, default_value = "/run/shoal/shoal.sock")]
    socket: PathBuf,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd: PathBuf,
    /// containerd namespace for this node's containers.
    #[arg(long, default_value = "shoal")]
    containerd_namespace: String,
    /// Registry (host[:port]) that may speak plain HTTP or present any
    /// certificate (HTTPS is tried first, unverified); loopback registries always may.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// CA certificate (PEM) to trust for HTTPS registries besides Mozilla's
    /// roots and the system's: `FILE` for every registry, `HOST[:PORT]=FILE`
    /// for one. Repeatable.
    #[arg(long = "registry-ca", value_name = "[HOST[:PORT]=]FILE", value_parser = shoal_image::CaFile::parse)]
    registry_cas: Vec<shoal_image::CaFile>,
    /// Mirror asked before the registry it serves: `URL` for Docker Hub (as
    /// Docker's), `HOST[:PORT]=URL` for another registry; a mirror that
    /// fails or lacks the image falls back to the registry. Repeatable.
    #[arg(long = "registry-mirror", value_name = "[HOST[:PORT]=]URL", value_parser = shoal_image::Mirror::parse)]
    registry_mirrors: Vec<shoal_image::Mirror>,
    /// Subnet of the node-local bridge network (device shoal0) that tasks on no
    /// network join; `none`: they share the host's network namespace.
    #[arg(long, default_value = crate::network::bridge::SUBNET_DEFAULT, value_parser = parse_bridge_subnet)]
    bridge_subnet: BridgeSubnet,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9323;
    /// nodes, tasks, raft, dispatcher sessions, link bytes, scheduler passes).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `--bridge-subnet CIDR|none` (a newtype: clap takes an `Option` field as an optional flag).
#[derive(Clone, Debug)]
struct BridgeSubnet(Option<crate::network::bridge::Bridge>);

fn parse_bridge_subnet(s: &str) -> Result<BridgeSubnet, String> {
    if s == "none" {
        return Ok(BridgeSubnet(None));
    }
    let net = crate::network::Ipv4Net::parse(s)?;
    crate::network::bridge::Bridge::new(net).map(|b| BridgeSubnet(Some(b))).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// List nodes in the swarm.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List tasks running on one or more nodes (default: this node).
    Ps {
        #[command(flatten)]
        list: TaskListArgs,
        /// Node ids, hostnames or `self`.
        nodes: Vec<String>,
    },
    /// Display detailed information on nodes (`self` is this node).
    Inspect {
        /// Print in a human-friendly format.
        #[arg(long)]
        pretty: bool,
        /// Output format: json (the default) or a Go template (`{{.Spec.Name}}`).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Update a node's availability or labels (`self` is this node).
    Update {
        /// Availability of the node: active, pause or drain.
        #[arg(long, value_parser = parse::availability)]
        availability: Option<Availability>,
        /// Add or update a node label (KEY=VALUE).
        #[arg(long, value_parser = parse::key_value)]
        label_add: Vec<(String, String)>,
        /// Remove a node label (an unknown key is an error, as Docker's).
        #[arg(long)]
        label_rm: Vec<String>,
        node: String,
    },
    /// Promote one or more nodes to manager in the swarm.
    Promote {
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Demote one or more nodes from manager in the swarm.
    Demote {
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm.
    #[command(alias = "remove")]
    Rm {
        /// Force remove a node from the swarm.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
}

/// Flags shared by the `ls` commands.
#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Filter output based on conditions provided (KEY=VALUE).
    #[arg(short, long)]
    pub(crate) filter: Vec<String>,
    /// Do not truncate output.
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Output format: table, json, or a Go template (`{{.Name}}`, `table {{.ID}}\t{{.Name}}`).
    #[arg(long, default_value = "table")]
    pub(crate) format: String,
}

/// The flags of every task list: `service ps`, `node ps`, `stack ps`.
#[derive(Args, Debug)]
pub(crate) struct TaskListArgs {
    /// Only display task IDs.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Filter output based on conditions provided (id, name, node,
    /// desired-state=running|shutdown|accepted).
    #[arg(short, long)]
    pub(crate) filter: Vec<String>,
    /// Output format: table, json, or a Go template (`{{.Name}}`, `table {{.ID}}\t{{.Name}}`).
    #[arg(long, default_value = "table")]
    pub(crate) format: String,
}

impl TaskListArgs {
    pub(crate) fn output(&self) -> service::TaskOutput<'_> {
        service::TaskOutput { quiet: self.quiet, no_trunc: self.no_trunc, format: &self.format }
    }
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Load images from an OCI or docker archive.
    Load {
        /// Archive to read.
        #[arg(short, long)]
        input: PathBuf,
    },
    /// List images on this node.
    #[command(alias = "list")]
    Ls,
    /// Pull an image from a registry.
    Pull { reference: String },
}

/// Parses the command line and runs it.
pub fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    match cli.command {
        Command::Daemon(a) => crate::daemon::run(crate::daemon::Config {
            data_dir: a.data_dir,
            socket: a.socket,
            containerd: a.containerd,
            namespace: a.containerd_namespace,
            insecure_registries: a.insecure_registries,
            registry_cas: a.registry_cas,
            registry_mirrors: a.registry_mirrors,
            bridge: a.bridge_subnet.0,
            metrics_addr: a.metrics_addr,
        }),
        Command::Version => version(&cli.host),
        Command::Info => swarm::info(&cli.host),
        Command::Swarm(cmd) => swarm::run(&cli.host, cmd),
        Command::Node(cmd) => node(&cli.host, cmd),
        Command::Service(cmd) => service::run(&cli.host, cmd),
        Command::Network(cmd) => network::run(&cli.host, cmd),
        Command::Secret(cmd) => files::run(&cli.host, shoal_shared::types::FileKind::Secret, cmd),
        Command::Config(cmd) => files::run(&cli.host, shoal_shared::types::FileKind::Config, cmd),
        Command::Image(cmd) => image(&cli.host, cmd),
        Command::Login(a) => login::login(&cli.host, a),
        Command::Logout(a) => login::logout(a),
        Command::Volume(cmd) => volume::run(&cli.host, cmd),
        Command::Stack(cmd) => stack::run(&cli.host, cmd),
        Command::Completion { shell } => {
            print!("{}", completion::script(&<Cli as clap::CommandFactory>::command(), &shell)?);
            Ok(())
        }
        Command::Inspect { kind, format, names } => object::run(&cli.host, kind, &format, names),
        Command::LogDriver { log_path } => Ok(crate::logdriver::run(&log_path)?),
    }
}

/// Prints a usage error as Docker does (one line naming the problem, one
/// pointing at help) and exits 2; help and version go to stdout, exit 0.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let msg = usage_message(&rendered);
    let cmd: Vec<String> = std::env::args().skip(1).take_while(|a| !a.starts_with('-')).take(2).collect();
    eprintln!("Error: {msg}");
    eprintln!("See 'shoal {}--help'.", cmd.iter().map(|c| format!("{c} ")).collect::<String>());
    std::process::exit(2);
}

/// The one-line message of a rendered clap error: its first line, with the
/// indented lines that continue it when it ends in a colon (the names of
/// missing required arguments).
fn usage_message(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if msg.ends_with(':') {
        for more in lines.take_while(|l| l.starts_with(' ')) {
            msg.push(' ');
            msg.push_str(more.trim());
        }
    }
    msg
}

/// One request to the daemon; error replies become errors.
pub(crate) fn call(host: &str, req: Request, timeout_ms: u64) -> anyhow::Result<Reply> {
    let mut c = Client::connect(host)?;
    match c.call(&req, timeout_ms)? {
        Reply::Error { message, .. } => bail!("{message}"),
        r => Ok(r),
    }
}

/// Docker's `rm` of several objects: each name printed once removed, each
/// failure printed as it comes, exit 1 at the end if any failed.
pub(crate) fn remove_each(host: &str, names: Vec<String>, request: impl Fn(String) -> Request) -> anyhow::Result<()> {
    let mut failed = false;
    for name in names {
        match call(host, request(name.clone()), REPLY_MS_DEFAULT) {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn unexpected(r: Reply) -> anyhow::Error {
    anyhow::anyhow!("unexpected reply from the daemon: {r:?}")
}

fn version(host: &str) -> anyhow::Result<()> {
    println!("Client:\n Version:    {}\n Platform:   {}", env!("CARGO_PKG_VERSION"), crate::host::platform());
    match call(host, Request::Version, REPLY_MS_DEFAULT) {
        Ok(Reply::Version(v)) => {
            println!(
                "\nServer:\n Version:    {}\n Platform:   {}\n Runtime:    {}\n Node ID:    {}\n Swarm:      {}",
                v.version,
                v.platform,
                v.containerd,
                v.node_id,
                if v.swarm { "active" } else { "inactive" }
            );
            Ok(())
        }
        Ok(r) => Err(unexpected(r)),
        Err(e) => Err(e),
    }
}

fn node(host: &str, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Ls(ListArgs { quiet, format, filter, no_trunc: _ }) => {
            let filters = filter::Filters::parse(&filter, &["id", "name", "role", "membership", "label", "node.label"])?;
            filter::check_values(&filters, "role", &["manager", "worker"])?;
            filter::check_values(&filters, "membership", &["accepted", "pending"])?;
            let Reply::Nodes { mut nodes, self_id, leader_id, reachable, autopilot } = call(host, Request::NodeList, REPLY_MS_DEFAULT)?
            else {
                bail!("unexpected reply")
            };
            // Docker's node filters; Shoal nodes have no engine labels, so
            // `label=` matches none (`node.label=` is the node's own labels).
            nodes.retain(|n| {
                filters.matches(|k, v| match k {
                    "id" => n.id.starts_with(v),
                    "name" => n.description.hostname.starts_with(v),
                    "role" => n.role.as_str() == v,
                    "membership" => v == "accepted",
                    "node.label" => filter::label_matches(&n.labels, v),
                    _ => false,
                })
            });
            nodes.sort_by(|a, b| a.description.hostname.cmp(&b.description.hostname).then(a.id.cmp(&b.id)));
            let mut fmt = output::Format::parse(&format)?;
            let mut t = Table::new(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"]);
            for n in &nodes {
                let manager = swarm::manager_status(n.role, &n.id, &leader_id, &reachable);
                if quiet {
                    println!("{}", n.id);
                } else if !fmt.is_table() {
                    fmt.row(&serde_json::json!({"ID": n.id, "Self": n.id == self_id, "Hostname": n.description.hostname, "Status": n.state.as_title(),
                            "Availability": n.availability.as_title(), "ManagerStatus": manager, "EngineVersion": n.description.engine_version}))?;
                } else {
                    let id = if n.id == self_id { format!("{} *", n.id) } else { n.id.clone() };
                    t.row(vec![
                        id,
                        n.description.hostname.clone(),
                        n.state.as_title().into(),
                        n.availability.as_title().into(),
                        manager.into(),
                        n.description.engine_version.clone(),
                    ]);
                }
            }
            if !quiet && fmt.is_table() {
                print!("{}", t.render());
                if let Some(a) = &autopilot {
                    print!("\n{}", swarm::autopilot_line(a));
                }
            } else if !quiet {
                fmt.finish(&["ID", "Hostname", "Status", "Availability", "ManagerStatus", "EngineVersion", "Self"]);
            }
            Ok(())
        }
        NodeCmd::Update { availability, label_add, label_rm, node } => {
            call(host, Request::NodeUpdate { node: node.clone(), availability, label_add, label_rm }, REPLY_MS_DEFAULT)?;
            println!("{node}");
            Ok(())
        }
        NodeCmd::Inspect { pretty, format, nodes } => {
            output::Format::parse(&format)?;
            let mut out = Vec::new();
            let Reply::Nodes { leader_id, autopilot, .. } = call(host, Request::NodeList, REPLY_MS_DEFAULT)? else {
                bail!("unexpected reply")
            };
            // The autopilot's verdict on each node, when it runs (the leader's view).
            let eligibility = |id: &str| -> Option<Option<String>> {
                let a = autopilot.as_ref().filter(|a| a.leader_view)?;
                a.eligibility.iter().find(|(n, _)| n == id).map(|(_, why)| why.clone())
            };
            for key in nodes {
                let Reply::Node(n) = call(host, Request::NodeInspect { node: key }, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
                // No known leader (empty `leader_id`): nobody is shown as the leader.
                let leader = !leader_id.is_empty() && n.id == leader_id;
                let verdict = eligibility(&n.id);
                if pretty {
                    print!("{}", inspect::node_pretty(&n, leader));
                    if let Some(why) = &verdict {
                        println!(
                            "Manager Eligibility:\t{}",
                            why.as_deref().map_or("eligible".to_string(), |w| format!("not eligible: {w}"))
                        );
                    }
                } else {
                    let mut v = inspect::node_json(&n, leader);
                    if let (Some(why), Some(o)) = (verdict, v.as_object_mut()) {
                        o.insert("Autopilot".into(), serde_json::json!({"Eligible": why.is_none(), "Reason": why.unwrap_or_default()}));
                    }
                    out.push(v);
                }
            }
            if !pretty {
                output::Format::inspect(&format, &out)?;
            }
            Ok(())
        }
        NodeCmd::Ps { list, nodes } => service::node_ps(host, &nodes, &list.filter, list.output()),
        NodeCmd::Promote { nodes } => swarm::set_role(host, nodes, NodeRole::Manager),
        NodeCmd::Demote { nodes } => swarm::set_role(host, nodes, NodeRole::Worker),
        NodeCmd::Rm { force, nodes } => swarm::remove(host, nodes, force),
    }
}

fn image(host: &str, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Load { input } => {
            let path = std::fs::canonicalize(&input).with_context(|| format!("cannot read {}", input.display()))?;
            let Reply::Loaded(names) = call(host, Request::ImageLoad { path: path.display().to_string() }, REPLY_MS_IMAGES)? else {
                bail!("unexpected reply")
            };
            for n in names {
                println!("Loaded image: {n}");
            }
            Ok(())
        }
        ImageCmd::Pull { reference } => pull::pull(host, reference),
        ImageCmd::Ls => {
            let Reply::Images(images) = call(host, Request::ImageList, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
            let mut t = Table::new(&["REPOSITORY", "TAG", "DIGEST", "PLATFORMS", "SIZE"]);
            for i in images {
                let (repo, tag) = match i.name.rsplit_once(':') {
                    Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                    _ => (i.name.clone(), "<none>".to_string()),
                };
                let short = i.digest.strip_prefix("sha256:").map(|d| &d[..d.len().min(12)]).unwrap_or(&i.digest).to_string();
                t.row(vec![repo, tag, short, i.platforms.join(","), format!("{:.2}MB", i.size_bytes as f64 / 1e6)]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_name_missing_arguments() {
        let e = Cli::try_parse_from(["shoal", "swarm", "join", "10.0.0.1"]).unwrap_err();
        assert_eq!(usage_message(&e.render().to_string()), "the following required arguments were not provided: --token <TOKEN>");
        let e = Cli::try_parse_from(["shoal", "swarm", "join-token", "admin"]).unwrap_err();
        assert_eq!(usage_message(&e.render().to_string()), "invalid value 'admin' for '<ROLE>': unknown role admin: use worker or manager");
        let e = Cli::try_parse_from(["shoal", "node", "rm"]).unwrap_err();
        assert_eq!(usage_message(&e.render().to_string()), "the following required arguments were not provided: <NODE>...");
    }

    #[test]
    fn membership_commands_parse() {
        let cli = Cli::try_parse_from(["shoal", "node", "remove", "-f", "a", "b"]).unwrap();
        assert!(matches!(cli.command, Command::Node(NodeCmd::Rm { force: true, ref nodes }) if nodes == &["a", "b"]));
        let cli = Cli::try_parse_from(["shoal", "swarm", "join-token", "-q", "--rotate", "manager"]).unwrap();
        assert!(matches!(cli.command, Command::Swarm(swarm::SwarmCmd::JoinToken { quiet: true, rotate: true, role: NodeRole::Manager })));
    }
}
