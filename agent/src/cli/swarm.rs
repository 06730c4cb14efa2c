//! `shoal swarm ...` (init, join, join-token, leave, update, unlock, unlock-key) and the node membership
//! commands `shoal node promote|demote|rm`, with Docker's wording.
//!
//! The commands that act on several nodes send one request per node, carry
//! on after an error, print each error as it happens and exit 1 at the end
//! (as `service rm`).

use super::{call, parse, unexpected};
use crate::client::REPLY_MS_DEFAULT;
use clap::Subcommand;
use shoal_shared::api::{AutopilotStatus, AutopilotUpdate, Reply, Request};
use shoal_shared::types::{Availability, NodeRole};

/// Reply deadline for `swarm join`: the daemon dials a remote manager and
/// waits to be admitted before it answers.
const REPLY_MS_JOIN: u64 = 30_000;
/// Reply deadline for `swarm backup`: the daemon copies its database and
/// writes the archive before it answers.
const REPLY_MS_BACKUP: u64 = 300_000;
/// Swarm's port, added to a `swarm join` address given without one.
const SWARM_PORT_DEFAULT: u16 = 2377;

/// The autopilot's flags of `swarm init` and `swarm update`.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct AutopilotArgs {
    /// Keep this many healthy managers (odd, at most 7; 0 = off, the
    /// default): the leader promotes an eligible worker in place of a
    /// manager unreachable for --manager-lost-after, then demotes that one.
    #[arg(long, value_name = "N")]
    managers: Option<u8>,
    /// How long a manager is unreachable before the autopilot replaces it (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_ns)]
    manager_lost_after: Option<u64>,
    /// A node label (e.g. site or rack) whose values the managers are spread
    /// over, so one site's outage cannot take the majority ("" drops it).
    #[arg(long, value_name = "LABEL")]
    manager_spread_label: Option<String>,
}

impl AutopilotArgs {
    fn update(self) -> AutopilotUpdate {
        AutopilotUpdate {
            managers: self.managers,
            manager_lost_after_ms: self.manager_lost_after.map(ns_to_ms),
            spread_label: self.manager_spread_label,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum SwarmCmd {
    /// Initialize a swarm with this node as its manager.
    Init {
        /// Advertised address others use to reach this node (ip[:port]).
        #[arg(long, default_value = "", hide_default_value = true)]
        advertise_addr: String,
        /// Listen address of the swarm port (ip[:port], default 0.0.0.0:2377).
        #[arg(long, default_value = "", hide_default_value = true)]
        listen_addr: String,
        /// Availability of this node: active, pause or drain.
        #[arg(long, default_value = "active", value_parser = parse::availability)]
        availability: Availability,
        /// Force create a new cluster from the current state (this manager becomes the only one).
        #[arg(long)]
        force_new_cluster: bool,
        /// How long a node may be unreachable before it is marked Down and its
        /// tasks move (ns|us|ms|s|m|h; default 1s; raise it on flaky links).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration_ns)]
        dispatcher_heartbeat: Option<u64>,
        /// How long a silent node stays Disconnected, keeping its tasks, before
        /// it is marked Down and its tasks move (0 = off: Down after the
        /// dispatcher heartbeat; at least the heartbeat otherwise).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration_ns)]
        node_lost_after: Option<u64>,
        /// Raft and link timings: lan (fast failure detection) or edge (lossy,
        /// slow links: keepalives every 15 s, links dead after 60 s of silence,
        /// raft elections after 5-10 s), for every node of the swarm.
        #[arg(long, value_name = "PROFILE", value_parser = shoal_shared::types::LinkProfile::parse)]
        link_profile: Option<shoal_shared::types::LinkProfile>,
        #[command(flatten)]
        autopilot: AutopilotArgs,
        /// Managers serve image layers to the swarm's nodes from their cache,
        /// so the registry serves each layer about once (true|false; default true).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        layer_sharing: Option<bool>,
        /// Default address pool in CIDR format, repeatable (default 10.0.0.0/8).
        #[arg(long, value_parser = parse::cidr)]
        default_addr_pool: Vec<shoal_shared::types::Ipv4Net>,
        /// Subnet mask length of the networks carved from the default pools (default 24).
        #[arg(long)]
        default_addr_pool_mask_length: Option<u8>,
        /// Port of the data path (VXLAN) traffic (default 4789).
        #[arg(long)]
        data_path_port: Option<u16>,
        /// Enable manager autolocking (requiring an unlock key to start a stopped manager).
        #[arg(long)]
        autolock: bool,
    },
    /// Update the swarm's settings.
    Update {
        /// How long a node may be unreachable before it is marked Down and its
        /// tasks move (ns|us|ms|s|m|h; default 1s; raise it on flaky links).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration_ns)]
        dispatcher_heartbeat: Option<u64>,
        /// How long a silent node stays Disconnected, keeping its tasks, before
        /// it is marked Down and its tasks move (0 = off: Down after the
        /// dispatcher heartbeat; at least the heartbeat otherwise).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration_ns)]
        node_lost_after: Option<u64>,
        /// Raft and link timings: lan (fast failure detection) or edge (lossy,
        /// slow links: keepalives every 15 s, links dead after 60 s of silence,
        /// raft elections after 5-10 s), for every node of the swarm.
        #[arg(long, value_name = "PROFILE", value_parser = shoal_shared::types::LinkProfile::parse)]
        link_profile: Option<shoal_shared::types::LinkProfile>,
        #[command(flatten)]
        autopilot: AutopilotArgs,
        /// Managers serve image layers to the swarm's nodes from their cache,
        /// so the registry serves each layer about once (true|false; default true).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        layer_sharing: Option<bool>,
        /// Change manager autolocking setting (true|false).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        autolock: Option<bool>,
    },
    /// Unlock a locked manager (reads the key from the terminal, or one line from stdin).
    Unlock,
    /// Manage the unlock key.
    UnlockKey {
        /// Only display the key.
        #[arg(short, long)]
        quiet: bool,
        /// Rotate the unlock key.
        #[arg(long)]
        rotate: bool,
    },
    /// Join a swarm as a worker or a manager (the token decides).
    Join {
        /// Token for entry into the swarm.
        #[arg(long, required = true)]
        token: String,
        /// Advertised address others use to reach this node (ip[:port]).
        #[arg(long, default_value = "", hide_default_value = true)]
        advertise_addr: String,
        /// Listen address of the swarm port (ip[:port], default 0.0.0.0:2377).
        #[arg(long, default_value = "", hide_default_value = true)]
        listen_addr: String,
        /// Availability of this node: active, pause or drain.
        #[arg(long, default_value = "active", value_parser = parse::availability)]
        availability: Availability,
        /// Address of a manager of the swarm (port 2377 if omitted).
        #[arg(value_name = "HOST:PORT")]
        remote: String,
    },
    /// Manage join tokens: print the command that joins a worker or a manager.
    JoinToken {
        /// Only display the token.
        #[arg(short, long)]
        quiet: bool,
        /// Rotate the join token (the old one stops admitting nodes).
        #[arg(long)]
        rotate: bool,
        /// worker or manager.
        #[arg(value_name = "ROLE", value_parser = role)]
        role: NodeRole,
    },
    /// Leave the swarm.
    Leave {
        /// Force this node to leave the swarm, ignoring warnings.
        #[arg(short, long)]
        force: bool,
    },
    /// Write a consistent copy of this manager's state (its database and key
    /// files, as a data dir) to a tar archive, while it runs.
    Backup {
        /// The archive to write, a path on the daemon's host (`-`, stdout, is not supported).
        #[arg(short, long, required = true, value_name = "FILE")]
        output: String,
    },
}

/// Runs a `shoal swarm` command.
pub(crate) fn run(host: &str, cmd: SwarmCmd) -> anyhow::Result<()> {
    match cmd {
        SwarmCmd::Init {
            advertise_addr,
            listen_addr,
            availability,
            force_new_cluster,
            dispatcher_heartbeat,
            node_lost_after,
            link_profile,
            autopilot,
            layer_sharing,
            default_addr_pool,
            default_addr_pool_mask_length,
            data_path_port,
            autolock,
        } => {
            let mut network = shoal_shared::types::NetworkDefaults::default();
            if !default_addr_pool.is_empty() {
                network.default_addr_pools = default_addr_pool;
            }
            if let Some(m) = default_addr_pool_mask_length {
                network.subnet_size = m;
            }
            if let Some(p) = data_path_port {
                network.data_path_port = p;
            }
            let heartbeat_ms = dispatcher_heartbeat.map(ns_to_ms);
            let lost_ms = node_lost_after.map(ns_to_ms);
            // Checked before the init, so a bad value cannot leave an initialized swarm without its settings.
            if let Some(ms) = heartbeat_ms {
                shoal_shared::types::SwarmSettings::check_dispatcher_heartbeat_ms(ms).map_err(anyhow::Error::msg)?;
            }
            if let Some(ms) = lost_ms {
                let heartbeat_ms = heartbeat_ms.unwrap_or(shoal_shared::types::DISPATCHER_HEARTBEAT_MS_DEFAULT);
                shoal_shared::types::check_node_lost_after_ms(ms, heartbeat_ms).map_err(anyhow::Error::msg)?;
            }
            let autopilot = autopilot.update();
            check_autopilot(&autopilot)?;
            match call(
                host,
                Request::SwarmInit { advertise_addr, availability, listen_addr, force_new_cluster, network: Box::new(network), autolock },
                REPLY_MS_DEFAULT,
            )? {
                Reply::SwarmInit { node_id, advertise_addr, worker_token, unlock_key } => {
                    if heartbeat_ms.is_some()
                        || lost_ms.is_some()
                        || link_profile.is_some()
                        || !autopilot.is_empty()
                        || layer_sharing.is_some()
                    {
                        let update = Request::SwarmUpdate {
                            dispatcher_heartbeat_ms: heartbeat_ms,
                            autolock: None,
                            node_lost_after_ms: lost_ms,
                            link_profile,
                            autopilot,
                            layer_sharing,
                        };
                        call(host, update, REPLY_MS_DEFAULT).map_err(|e| {
                            e.context("the swarm was initialized, but its settings were not applied; run `shoal swarm update` again")
                        })?;
                    }
                    print!("{}", init_text(&node_id, &worker_token, &advertise_addr));
                    if !unlock_key.is_empty() {
                        print!("\n{}", unlock_key_text(&unlock_key));
                    }
                    Ok(())
                }
                r => Err(unexpected(r)),
            }
        }
        SwarmCmd::Update { dispatcher_heartbeat, node_lost_after, link_profile, autopilot, layer_sharing, autolock } => {
            let autopilot = autopilot.update();
            if dispatcher_heartbeat.is_none()
                && node_lost_after.is_none()
                && link_profile.is_none()
                && autolock.is_none()
                && autopilot.is_empty()
                && layer_sharing.is_none()
            {
                anyhow::bail!(
                    "nothing to update: give a setting, e.g. `shoal swarm update --dispatcher-heartbeat 30s` or `--autolock=true`"
                );
            }
            let reply = call(
                host,
                Request::SwarmUpdate {
                    dispatcher_heartbeat_ms: dispatcher_heartbeat.map(ns_to_ms),
                    autolock,
                    node_lost_after_ms: node_lost_after.map(ns_to_ms),
                    link_profile,
                    autopilot,
                    layer_sharing,
                },
                REPLY_MS_DEFAULT,
            )?;
            println!("Swarm updated.");
            if let Reply::UnlockKey { key, .. } = reply {
                print!("{}", unlock_key_text(&key));
            }
            Ok(())
        }
        SwarmCmd::Unlock => {
            let key = read_unlock_key()?;
            match call(host, Request::SwarmUnlock { key }, REPLY_MS_DEFAULT)? {
                Reply::Ok => Ok(()),
                r => Err(unexpected(r)),
            }
        }
        SwarmCmd::UnlockKey { quiet, rotate } => match call(host, Request::SwarmUnlockKey { rotate }, REPLY_MS_DEFAULT)? {
            Reply::UnlockKey { key, rotated, previous_needed_by } => {
                if quiet {
                    println!("{key}");
                } else {
                    if rotated {
                        println!("Successfully rotated manager unlock key.\n");
                    }
                    print!("{}", unlock_key_text(&key));
                }
                if !previous_needed_by.is_empty() {
                    eprintln!(
                        "WARNING: managers {} are unreachable: each still needs the previous unlock key to restart until it has caught up",
                        previous_needed_by.join(", ")
                    );
                }
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        SwarmCmd::Join { token, advertise_addr, listen_addr, availability, remote } => {
            let remote_addr = with_default_port(&remote);
            match call(host, Request::SwarmJoin { token, remote_addr, advertise_addr, listen_addr, availability }, REPLY_MS_JOIN)? {
                Reply::Joined { role, .. } => {
                    println!("This node joined a swarm as a {}.", role_name(role));
                    Ok(())
                }
                r => Err(unexpected(r)),
            }
        }
        SwarmCmd::JoinToken { quiet, rotate, role } => match call(host, Request::SwarmJoinToken { role, rotate }, REPLY_MS_DEFAULT)? {
            Reply::JoinToken { role, token, manager_addr } => {
                if quiet {
                    println!("{token}");
                } else {
                    if rotate {
                        println!("Successfully rotated {} join token.\n", role_name(role));
                    }
                    print!("{}", join_command_text(role, &token, &manager_addr));
                }
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        SwarmCmd::Leave { force } => match call(host, Request::SwarmLeave { force }, REPLY_MS_DEFAULT)? {
            Reply::Left => {
                println!("Node left the swarm.");
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        SwarmCmd::Backup { output } => backup(host, &output),
    }
}

/// Docker's text around an unlock key (`docker` spelled `shoal`).
pub(crate) fn unlock_key_text(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
         command and provide the following key:\n\
         \n    {key}\n\n\
         Please remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager.\n"
    )
}

/// The unlock key: typed at the terminal without echo (`Enter unlock key: `),
/// or one line of stdin when it is not a terminal.
fn read_unlock_key() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        eprint!("Enter unlock key: ");
        std::io::stderr().flush()?;
        let _echo_off = EchoOff::new(&stdin);
        stdin.lock().read_line(&mut line)?;
        eprintln!();
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let key = line.trim().to_string();
    if key.is_empty() {
        anyhow::bail!("no unlock key given: type it, or pipe it on stdin (`shoal swarm unlock < key.txt`)");
    }
    Ok(key)
}

/// Terminal echo turned off until dropped (termios `ECHO` cleared on the
/// terminal of `fd`; restored on drop, also after an error).
pub(crate) struct EchoOff {
    fd: i32,
    saved: Option<libc::termios>,
}

impl EchoOff {
    pub(crate) fn new(stdin: &std::io::Stdin) -> EchoOff {
        use std::os::fd::AsRawFd;
        let fd = stdin.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is stdin's, valid for the process; t is a valid termios.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return EchoOff { fd, saved: None };
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        // SAFETY: as above; a failure leaves echo on, which only shows the key.
        let ok = unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } == 0;
        EchoOff { fd, saved: ok.then_some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores the attributes read in `new` on the same fd.
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &t) };
        }
    }
}

/// `swarm backup -o FILE`: the daemon writes the archive; a relative path is
/// taken from this command's working directory.
fn backup(host: &str, output: &str) -> anyhow::Result<()> {
    if output == "-" {
        anyhow::bail!("writing the backup to stdout is not supported; give a file: shoal swarm backup -o FILE");
    }
    let path = std::path::absolute(output).map_err(|e| anyhow::anyhow!("invalid backup path {output:?}: {e}"))?;
    let Some(path) = path.to_str() else { anyhow::bail!("the backup path {output:?} is not valid UTF-8") };
    match call(host, Request::SwarmBackup { output: path.to_string() }, REPLY_MS_BACKUP)? {
        Reply::Backup { path, size_bytes, raft_index, files } => {
            print!("{}", backup_text(&path, size_bytes, raft_index, &files));
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

fn backup_text(path: &str, size_bytes: u64, raft_index: u64, files: &[String]) -> String {
    format!(
        "Backup written to {path} ({size_bytes} bytes; state as of raft index {raft_index}; files: {}).\n\
         To restore it: stop the daemon, extract the archive into its emptied data dir (tar -xf FILE -C DATA_DIR),\n\
         start the daemon, then run `shoal swarm init --force-new-cluster --advertise-addr ADDR`.\n",
        files.join(", ")
    )
}

/// The autopilot flags' bounds, checked before `swarm init` so a bad value
/// cannot leave an initialized swarm without its settings (the daemon checks
/// them again, against the swarm's current ones).
fn check_autopilot(a: &AutopilotUpdate) -> anyhow::Result<()> {
    use shoal_manager::autopilot::Settings;
    if let Some(m) = a.managers.filter(|m| *m != 0) {
        Settings::new(m).validate().map_err(|e| anyhow::anyhow!("{e}, or 0 to turn the autopilot off"))?;
    }
    let mut s = Settings::new(3);
    s.manager_lost_after_ms = a.manager_lost_after_ms.unwrap_or(s.manager_lost_after_ms);
    s.spread_label = a.spread_label.clone().filter(|l| !l.trim().is_empty());
    s.validate().map_err(anyhow::Error::msg)
}

/// The autopilot's lines of `shoal info` (nothing when it is off).
pub(crate) fn autopilot_text(a: &AutopilotStatus) -> String {
    let s = &a.settings;
    let mut out = format!(
        " Autopilot:
  Managers Wanted: {}
  Manager Lost After: {}
",
        s.managers,
        lost_after_text(s.manager_lost_after_ms)
    );
    if !s.spread_label.is_empty() {
        out += &format!(
            "  Spread Label: {}
",
            s.spread_label
        );
    }
    if a.leader_view {
        out += &format!("  Healthy Managers: {}", a.healthy.len());
        if !a.healthy.is_empty() {
            out += &format!(" ({})", a.healthy.join(", "));
        }
        out += "
";
    }
    out += &format!(
        "  State: {}
",
        a.state
    );
    out
}

/// The line `node ls` prints under its table while the autopilot is on.
pub(crate) fn autopilot_line(a: &AutopilotStatus) -> String {
    if a.leader_view {
        format!("Autopilot: {} managers wanted, {} healthy: {}\n", a.settings.managers, a.healthy.len(), a.state)
    } else {
        format!("Autopilot: {} managers wanted: {}\n", a.settings.managers, a.state)
    }
}

/// Nanoseconds to whole milliseconds, rounding up so a sub-millisecond
/// duration is refused by the daemon's bounds rather than read as 0.
fn ns_to_ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000)
}

/// `shoal info`: Docker's `docker info` Swarm section, from the daemon's view.
pub(crate) fn info(host: &str) -> anyhow::Result<()> {
    let Reply::Info(i) = call(host, Request::Info, REPLY_MS_DEFAULT)? else { anyhow::bail!("unexpected reply from the daemon") };
    print!("{}", info_text(&i));
    // As Docker's, on stderr after the rest.
    eprint!("{}", warnings_text(&i));
    Ok(())
}

/// Docker's human duration for whole seconds ("5 seconds"), milliseconds otherwise.
fn heartbeat_text(ms: u64) -> String {
    if ms / 1_000 * 1_000 == ms {
        super::output::human_duration(std::time::Duration::from_millis(ms))
    } else {
        format!("{ms} milliseconds")
    }
}

/// `--node-lost-after` as Go prints a duration (`10m0s`, `12s`, `1h0m0s`), `0s (off)` when off.
fn lost_after_text(ms: u64) -> String {
    if ms == 0 {
        return "0s (off)".into();
    }
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60, ms % 1_000);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = if milli == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{milli:03}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn info_text(i: &shoal_shared::api::SwarmInfo) -> String {
    let mut out = format!("Server Version: {}\nPlatform: {}\nRuntime: {}\n", i.version.version, i.version.platform, i.version.containerd);
    let by_kind = super::inspect::plugins_by_kind(&i.plugins);
    if !by_kind.is_empty() {
        out += "Plugins:\n";
        for (kind, names) in by_kind {
            out += &format!(" {kind}: {}\n", names.join(" "));
        }
    }
    out += &format!("Swarm: {}\n", i.local_state);
    if i.local_state == "inactive" {
        return out + &registries_text(&i.registries);
    }
    out += &format!(" NodeID: {}\n Is Manager: {}\n", i.version.node_id, i.is_manager);
    if i.local_state == "locked" {
        out += " Autolock Managers: true\n (locked: run `shoal swarm unlock` to start this manager)\n";
        return out + &registries_text(&i.registries);
    }
    if i.is_manager {
        out += &format!(" ClusterID: {}\n Managers: {}\n Nodes: {}\n", i.cluster_id, i.managers, i.nodes);
        if !i.leader_id.is_empty() {
            out += &format!(" Leader: {}\n", i.leader_id);
        }
        if let Some(s) = &i.settings {
            out += &format!(" Dispatcher:\n  Heartbeat Period: {}\n", heartbeat_text(s.dispatcher_heartbeat_ms));
            out += &format!("  Node Lost After: {}\n", lost_after_text(i.node_lost_after_ms));
            out += &format!(" Link Profile: {}\n", i.link_profile);
        }
        out += &format!(" Autolock Managers: {}\n", i.autolock);
        if let Some(on) = i.layer_sharing {
            out += &format!(" Layer Sharing: {on}\n");
        }
        if let Some(a) = &i.autopilot {
            out += &autopilot_text(a);
        }
    } else {
        out += &format!(" Link Profile: {}\n", i.link_profile);
    }
    if !i.node_addr.is_empty() {
        out += &format!(" Node Address: {}\n", i.node_addr);
    }
    if !i.manager_addrs.is_empty() {
        out += " Manager Addresses:\n";
        for a in &i.manager_addrs {
            out += &format!("  {a}\n");
        }
    }
    if let Some(t) = &i.tunnel {
        out += &tunnel_text(t);
    }
    out + &registries_text(&i.registries)
}

/// The `Registries:` section: Docker's `Insecure Registries` and `Registry
/// Mirrors`, with the CA files trusted (loopback is always insecure, as
/// Docker lists it).
fn registries_text(r: &shoal_shared::api::RegistrySettings) -> String {
    let mut out = String::from("Registries:\n Insecure Registries:\n  127.0.0.0/8\n");
    for i in &r.insecure {
        out += &format!("  {i}\n");
    }
    if !r.mirrors.is_empty() {
        out += " Registry Mirrors:\n";
        for m in &r.mirrors {
            out += &format!("  {m}\n");
        }
    }
    out += " CA Roots:\n  Mozilla's (built in)\n";
    if !r.system_ca_file.is_empty() {
        out += &format!("  {} (system)\n", r.system_ca_file);
    }
    for c in &r.ca_files {
        out += &format!("  {c}\n");
    }
    out
}

/// The `Encrypted Overlay:` section (not in Docker's output): the node's
/// tunnel relay and its counts since the daemon started.
fn tunnel_text(t: &shoal_shared::api::TunnelStatus) -> String {
    let mut out = format!(" Encrypted Overlay:\n  Tunnel Address: {} (UDP port {})\n", t.addr, t.port);
    if !t.error.is_empty() {
        out += &format!("  Error: {}\n", t.error);
    }
    out += &format!("  Peers: {} ({} with a key)\n  Packets: {} sealed, {} opened\n", t.peers, t.peers_with_keys, t.sealed, t.opened);
    out += &format!(
        "  Dropped: {} replayed, {} tampered, {} with an unknown key, {} malformed, {} from unknown senders, {} not VXLAN between tunnel addresses, {} to no peer\n",
        t.replayed, t.tampered, t.unknown_key, t.malformed, t.unknown_sender, t.forbidden, t.no_peer
    );
    out
}

/// One `WARNING:` line per piece of container networking the node's kernel probe found missing.
fn warnings_text(i: &shoal_shared::api::SwarmInfo) -> String {
    i.warnings.iter().map(|w| format!("WARNING: {w}\n")).collect()
}

/// `node promote` (role Manager) and `node demote` (role Worker).
pub(crate) fn set_role(host: &str, nodes: Vec<String>, role: NodeRole) -> anyhow::Result<()> {
    each_node(nodes, |node| {
        call(host, Request::NodeSetRole { node: node.to_string(), role }, REPLY_MS_DEFAULT)?;
        match role {
            NodeRole::Manager => println!("Node {node} promoted to a manager in the swarm."),
            NodeRole::Worker => println!("Manager {node} demoted in the swarm."),
        }
        Ok(())
    })
}

/// `node rm [--force]`: prints each removed node as it was named.
pub(crate) fn remove(host: &str, nodes: Vec<String>, force: bool) -> anyhow::Result<()> {
    each_node(nodes, |node| match call(host, Request::NodeRemove { node: node.to_string(), force }, REPLY_MS_DEFAULT)? {
        Reply::Removed(_) | Reply::Ok => {
            println!("{node}");
            Ok(())
        }
        r => Err(unexpected(r)),
    })
}

/// Runs `f` on every node, printing errors as they come; exits 1 if any failed.
fn each_node(nodes: Vec<String>, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut failed = false;
    for node in &nodes {
        if let Err(e) = f(node) {
            eprintln!("Error: {e:#}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// `worker|manager` for `swarm join-token`.
fn role(s: &str) -> Result<NodeRole, String> {
    match s {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => Err(format!("unknown role {s}: use worker or manager")),
    }
}

fn role_name(role: NodeRole) -> &'static str {
    role.as_str()
}

/// Docker's `swarm init` text.
fn init_text(node_id: &str, worker_token: &str, addr: &str) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n{}\
         To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n",
        join_command_text(NodeRole::Worker, worker_token, addr)
    )
}

/// Docker's `swarm join-token` text: how to add a node of `role`.
fn join_command_text(role: NodeRole, token: &str, addr: &str) -> String {
    format!("To add a {} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n", role_name(role))
}

/// `HOST[:PORT]` with Swarm's port when none is given (`[v6]` and bare IPv6 too).
fn with_default_port(addr: &str) -> String {
    if addr.starts_with('[') {
        if addr.ends_with(']') {
            return format!("{addr}:{SWARM_PORT_DEFAULT}");
        }
        return addr.to_string();
    }
    match addr.matches(':').count() {
        0 => format!("{addr}:{SWARM_PORT_DEFAULT}"),
        1 => addr.to_string(),
        _ => format!("[{addr}]:{SWARM_PORT_DEFAULT}"),
    }
}

/// The MANAGER STATUS column of `node ls`: Leader, Reachable, Unreachable,
/// or empty for a worker.
pub(crate) fn manager_status(role: NodeRole, id: &str, leader_id: &str, reachable: &[String]) -> &'static str {
    match role {
        NodeRole::Worker => "",
        NodeRole::Manager if !leader_id.is_empty() && id == leader_id => "Leader",
        NodeRole::Manager if reachable.iter().any(|r| r == id) => "Reachable",
        NodeRole::Manager => "Unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::api::{SwarmInfo, VersionInfo};
    use shoal_shared::types::SwarmSettings;

    #[test]
    fn info_reads_like_docker_info() {
        let version = VersionInfo {
            version: "0.1.0".into(),
            platform: "linux/arm64/v8".into(),
            containerd: "containerd 1.6.20".into(),
            node_id: "abc".into(),
            swarm: true,
        };
        let mut i = SwarmInfo {
            version,
            local_state: "active".into(),
            is_manager: true,
            node_addr: "10.0.0.5".into(),
            manager_addrs: vec!["10.0.0.5:2377".into()],
            cluster_id: "cid".into(),
            managers: 1,
            nodes: 3,
            settings: Some(SwarmSettings { dispatcher_heartbeat_ms: 30_000 }),
            leader_id: "abc".into(),
            plugins: ["null", "bridge", "host"].map(shoal_shared::types::Plugin::network).to_vec(),
            warnings: vec!["VXLAN (kernel option CONFIG_VXLAN) devices cannot be made: not supported".into()],
            autolock: false,
            node_lost_after_ms: 600_000,
            link_profile: shoal_shared::types::LinkProfile::Edge,
            autopilot: None,
            tunnel: None,
            registries: Default::default(),
            layer_sharing: Some(true),
        };
        let text = info_text(&i);
        let reg = "Registries:\n Insecure Registries:\n  127.0.0.0/8\n CA Roots:\n  Mozilla's (built in)\n";
        assert!(text.ends_with(reg), "{text}");
        let text = text.strip_suffix(reg).unwrap().to_string();
        assert!(!text.contains("Autopilot"), "nothing while it is off: {text}");
        assert!(text.contains("Runtime: containerd 1.6.20\nPlugins:\n Network: bridge host null\nSwarm: active\n"), "{text}");
        assert_eq!(warnings_text(&i), "WARNING: VXLAN (kernel option CONFIG_VXLAN) devices cannot be made: not supported\n");
        assert!(text.contains("Swarm: active\n NodeID: abc\n Is Manager: true\n ClusterID: cid\n Managers: 1\n Nodes: 3\n"), "{text}");
        assert!(text.contains(" Dispatcher:\n  Heartbeat Period: 30 seconds\n  Node Lost After: 10m0s\n Link Profile: edge\n"), "{text}");
        assert!(text.contains(" Autolock Managers: false\n Layer Sharing: true\n"), "{text}");
        assert!(text.ends_with(" Node Address: 10.0.0.5\n Manager Addresses:\n  10.0.0.5:2377\n"), "{text}");
        i.settings = Some(SwarmSettings { dispatcher_heartbeat_ms: 1_500 });
        assert!(info_text(&i).contains("Heartbeat Period: 1500 milliseconds"));
        i.tunnel = Some(shoal_shared::api::TunnelStatus {
            addr: "198.18.0.1".into(),
            port: 4790,
            peers: 2,
            peers_with_keys: 1,
            sealed: 10,
            opened: 9,
            replayed: 1,
            tampered: 2,
            ..Default::default()
        });
        let text = info_text(&i);
        let text = text.strip_suffix(reg).unwrap();
        assert!(
            text.ends_with(
                " Encrypted Overlay:\n  Tunnel Address: 198.18.0.1 (UDP port 4790)\n  Peers: 2 (1 with a key)\n  Packets: 10 sealed, 9 opened\n  Dropped: 1 replayed, 2 tampered, 0 with an unknown key, 0 malformed, 0 from unknown senders, 0 not VXLAN between tunnel addresses, 0 to no peer\n"
            ),
            "{text}"
        );
        i.tunnel.as_mut().unwrap().error = "TUN devices cannot be made here".into();
        assert!(info_text(&i).contains("  Error: TUN devices cannot be made here\n"));
        i.tunnel = None;
        i.local_state = "inactive".into();
        assert!(info_text(&i).ends_with(&format!("Swarm: inactive\n{reg}")));
        i.registries = shoal_shared::api::RegistrySettings {
            insecure: vec!["10.0.0.9:5000".into()],
            mirrors: vec!["docker.io=http://10.0.0.2:5000".into()],
            ca_files: vec!["reg.lan=/etc/shoal/ca.pem".into()],
            system_ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        };
        assert!(info_text(&i).ends_with(
            "Registries:\n Insecure Registries:\n  127.0.0.0/8\n  10.0.0.9:5000\n Registry Mirrors:\n  docker.io=http://10.0.0.2:5000\n \
             CA Roots:\n  Mozilla's (built in)\n  /etc/ssl/certs/ca-certificates.crt (system)\n  reg.lan=/etc/shoal/ca.pem\n"
        ));
        assert_eq!(ns_to_ms(1), 1, "sub-millisecond rounds up, so the daemon refuses it instead of reading 0");
        let check = SwarmSettings::check_dispatcher_heartbeat_ms;
        assert!(check(50).is_err() && check(1_000).is_ok() && check(25 * 3_600_000).is_err());
        assert_eq!(ns_to_ms(30_000_000_000), 30_000);
    }

    #[test]
    fn autopilot_flags_are_checked_before_init_and_its_state_is_shown() {
        use clap::Parser;
        let parse = |args: &[&str]| super::super::Cli::try_parse_from(["shoal", "swarm"].iter().chain(args).copied());
        let cmd = parse(&["init", "--managers", "3", "--manager-lost-after", "30s", "--manager-spread-label", "site"]).unwrap().command;
        let super::super::Command::Swarm(SwarmCmd::Init { autopilot, .. }) = cmd else { panic!("not swarm init") };
        assert_eq!(
            autopilot.update(),
            AutopilotUpdate { managers: Some(3), manager_lost_after_ms: Some(30_000), spread_label: Some("site".into()) }
        );
        let update = |managers, lost_ms, label: Option<&str>| AutopilotUpdate {
            managers,
            manager_lost_after_ms: lost_ms,
            spread_label: label.map(str::to_string),
        };
        assert!(check_autopilot(&update(Some(3), Some(30_000), Some("site"))).is_ok());
        assert!(check_autopilot(&update(Some(0), None, None)).is_ok(), "0 turns it off");
        let e = check_autopilot(&update(Some(4), None, None)).unwrap_err().to_string();
        assert_eq!(e, "--managers must be odd and between 1 and 7 (got 4), or 0 to turn the autopilot off");
        assert!(check_autopilot(&update(None, Some(5), None)).unwrap_err().to_string().contains("--manager-lost-after"));
        let a = AutopilotStatus {
            settings: shoal_shared::types::AutopilotSettings {
                managers: 3,
                manager_lost_after_ms: 300_000,
                spread_label: "site".into(),
                flaps_per_hour_max: 3,
            },
            leader_view: true,
            healthy: vec!["m1 (a)".into(), "m2 (b)".into()],
            state: "waiting: m3 (c) has been unreachable for 12s".into(),
            eligibility: Vec::new(),
        };
        assert_eq!(
            autopilot_text(&a),
            " Autopilot:\n  Managers Wanted: 3\n  Manager Lost After: 5m0s\n  Spread Label: site\n  Healthy Managers: 2 (m1 (a), m2 (b))\n  State: waiting: m3 (c) has been unreachable for 12s\n"
        );
        assert_eq!(autopilot_line(&a), "Autopilot: 3 managers wanted, 2 healthy: waiting: m3 (c) has been unreachable for 12s\n");
    }

    #[test]
    fn link_profile_parses_lan_and_edge_only() {
        use clap::Parser;
        use shoal_shared::types::LinkProfile;
        let parse = |args: &[&str]| super::super::Cli::try_parse_from(["shoal", "swarm"].iter().chain(args).copied());
        for (args, want) in [
            (&["update", "--link-profile", "edge"][..], Some(LinkProfile::Edge)),
            (&["init", "--link-profile", "lan"][..], Some(LinkProfile::Lan)),
            (&["update", "--autolock"][..], None),
        ] {
            let got = match parse(args).unwrap().command {
                super::super::Command::Swarm(SwarmCmd::Update { link_profile, .. }) => link_profile,
                super::super::Command::Swarm(SwarmCmd::Init { link_profile, .. }) => link_profile,
                other => panic!("not a swarm command: {other:?}"),
            };
            assert_eq!(got, want, "{args:?}");
        }
        let err = parse(&["update", "--link-profile", "wan"]).unwrap_err().to_string();
        assert!(err.contains("invalid --link-profile \"wan\": use lan or edge"), "{err}");
    }

    #[test]
    fn node_lost_after_parses_and_prints_like_go() {
        use clap::Parser;
        let parse = |args: &[&str]| super::super::Cli::try_parse_from(["shoal", "swarm"].iter().chain(args).copied());
        for (args, want) in [
            (&["update", "--node-lost-after", "10m"][..], Some(600_000_000_000)),
            (&["update", "--node-lost-after", "0"][..], Some(0)),
            (&["init", "--node-lost-after", "12s", "--dispatcher-heartbeat", "2s"][..], Some(12_000_000_000)),
            (&["update", "--dispatcher-heartbeat", "2s"][..], None),
        ] {
            let cli = parse(args).unwrap();
            let got = match cli.command {
                super::super::Command::Swarm(SwarmCmd::Update { node_lost_after, .. }) => node_lost_after,
                super::super::Command::Swarm(SwarmCmd::Init { node_lost_after, .. }) => node_lost_after,
                other => panic!("not a swarm command: {other:?}"),
            };
            assert_eq!(got, want, "{args:?}");
        }
        assert!(parse(&["update", "--node-lost-after", "soon"]).is_err());
        let check = shoal_shared::types::check_node_lost_after_ms;
        assert!(check(0, 1_000).is_ok() && check(12_000, 2_000).is_ok() && check(2_000, 2_000).is_ok());
        assert!(check(1_999, 2_000).unwrap_err().contains("at least the dispatcher heartbeat of 2000 ms"));
        assert!(check(366 * 86_400_000, 1_000).unwrap_err().contains("up to 8760h"));
        let texts: Vec<String> = [0, 500, 12_000, 1_500, 600_000, 90_000, 3_600_000, 5_430_250].map(lost_after_text).to_vec();
        assert_eq!(texts, ["0s (off)", "500ms", "12s", "1.5s", "10m0s", "1m30s", "1h0m0s", "1h30m30.25s"]);
    }

    #[test]
    fn texts_read_like_docker() {
        assert_eq!(
            join_command_text(NodeRole::Worker, "SHLTKN-1-abc-def", "10.0.0.1:2377"),
            "To add a worker to this swarm, run the following command:\n\n    shoal swarm join --token SHLTKN-1-abc-def 10.0.0.1:2377\n\n"
        );
        assert_eq!(
            join_command_text(NodeRole::Manager, "SHLTKN-1-abc-xyz", "10.0.0.1:2377"),
            "To add a manager to this swarm, run the following command:\n\n    shoal swarm join --token SHLTKN-1-abc-xyz 10.0.0.1:2377\n\n"
        );
        assert_eq!(
            init_text("t5ei1nquevrx71qw4r7i5thmz", "SHLTKN-1-abc-def", "34.125.91.97:2377"),
            "Swarm initialized: current node (t5ei1nquevrx71qw4r7i5thmz) is now a manager.\n\n\
             To add a worker to this swarm, run the following command:\n\n    \
             shoal swarm join --token SHLTKN-1-abc-def 34.125.91.97:2377\n\n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
        );
    }

    #[test]
    fn join_address_gets_swarm_port() {
        assert_eq!(with_default_port("10.0.0.1"), "10.0.0.1:2377");
        assert_eq!(with_default_port("10.0.0.1:4000"), "10.0.0.1:4000");
        assert_eq!(with_default_port("manager"), "manager:2377");
        assert_eq!(with_default_port("[fd00::1]"), "[fd00::1]:2377");
        assert_eq!(with_default_port("[fd00::1]:4000"), "[fd00::1]:4000");
        assert_eq!(with_default_port("fd00::1"), "[fd00::1]:2377");
    }

    #[test]
    fn manager_status_column() {
        let reachable = vec!["a".to_string(), "b".to_string()];
        assert_eq!(manager_status(NodeRole::Manager, "a", "a", &reachable), "Leader");
        assert_eq!(manager_status(NodeRole::Manager, "b", "a", &reachable), "Reachable");
        assert_eq!(manager_status(NodeRole::Manager, "c", "a", &reachable), "Unreachable");
        assert_eq!(manager_status(NodeRole::Worker, "d", "a", &reachable), "");
        // No known leader: nobody is Leader, not even a node with an empty id.
        assert_eq!(manager_status(NodeRole::Manager, "", "", &[]), "Unreachable");
        assert_eq!(manager_status(NodeRole::Manager, "a", "", &reachable), "Reachable");
    }

    #[test]
    fn join_token_roles() {
        assert_eq!(role("worker"), Ok(NodeRole::Worker));
        assert_eq!(role("manager"), Ok(NodeRole::Manager));
        assert!(role("admin").is_err());
    }
}
