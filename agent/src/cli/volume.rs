//! `shoal volume ls|inspect|rm|prune`: the named volumes of the node asked
//! (`-H`), with Docker's output (`DRIVER  VOLUME NAME`, inspect JSON with
//! `Driver: local`, `Scope: local`, prune's `Total reclaimed space`).

use super::filter::{self, Filters};
use super::output::{rfc3339, Format, Table};
use super::{call, pull};
use crate::client::REPLY_MS_DEFAULT;
use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};
use shoal_shared::api::{Reply, Request, VolumeInfo};
use std::io::BufRead;

#[derive(Subcommand, Debug)]
pub(crate) enum VolumeCmd {
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short, long)]
        quiet: bool,
        /// Filter output based on conditions provided (name, dangling=true|false, driver).
        #[arg(short, long)]
        filter: Vec<String>,
        /// Output format: table, json, or a Go template (`{{.Name}}`).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Display detailed information on one or more volumes.
    Inspect {
        /// Output format: json (the default) or a Go template (`{{.Mountpoint}}`).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true, value_name = "VOLUME")]
        names: Vec<String>,
    },
    /// Remove one or more volumes (not while a task of this node uses them).
    #[command(alias = "remove")]
    Rm {
        /// Remove even if a task of this node uses it.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "VOLUME")]
        names: Vec<String>,
    },
    /// Remove every volume no task of this node uses.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

fn inspect_json(v: &VolumeInfo) -> Value {
    json!({"CreatedAt": rfc3339(v.created_at), "Driver": "local", "Labels": null, "Mountpoint": v.mountpoint, "Name": v.name, "Options": null, "Scope": "local"})
}

fn list(host: &str, names: Vec<String>) -> anyhow::Result<Vec<VolumeInfo>> {
    match call(host, Request::VolumeList { names }, REPLY_MS_DEFAULT)? {
        Reply::Volumes(v) => Ok(v),
        r => bail!("unexpected reply: {r:?}"),
    }
}

pub(crate) fn run(host: &str, cmd: VolumeCmd) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Ls { quiet, filter, format } => {
            let mut fmt = Format::parse(&format)?;
            let filters = Filters::parse(&filter, &["name", "dangling", "driver"])?;
            filter::check_values(&filters, "dangling", &["true", "false", "1", "0"])?;
            let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
            for v in list(host, Vec::new())? {
                let dangling = v.used_by.is_empty();
                let hit = filters.matches(|k, val| match k {
                    "name" => v.name.contains(val),
                    "dangling" => dangling == matches!(val, "true" | "1"),
                    _ => val == "local",
                });
                if !hit {
                    continue;
                }
                if quiet {
                    println!("{}", v.name);
                } else if fmt.is_table() {
                    t.row(vec!["local".into(), v.name.clone()]);
                } else {
                    fmt.row(&json!({"Driver": "local", "Name": v.name, "Mountpoint": v.mountpoint, "Scope": "local", "Labels": ""}))?;
                }
            }
            if !quiet && fmt.is_table() {
                print!("{}", t.render());
            } else if !quiet {
                fmt.finish(&["Driver", "Name", "Mountpoint", "Scope", "Labels"]);
            }
            Ok(())
        }
        VolumeCmd::Inspect { format, names } => {
            Format::parse(&format)?;
            let mut found = Vec::new();
            let mut failed = false;
            for name in names {
                match list(host, vec![name]) {
                    Ok(v) => found.extend(v.iter().map(inspect_json)),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            Format::inspect(&format, &found)?;
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        VolumeCmd::Rm { force, names } => super::remove_each(host, names, |name| Request::VolumeRemove { name, force }),
        VolumeCmd::Prune { force } => {
            if !force {
                print!("WARNING! This will remove all local volumes not used by at least one task of this node.\nAre you sure you want to continue? [y/N] ");
                std::io::Write::flush(&mut std::io::stdout())?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(());
                }
            }
            let Reply::VolumesRemoved { names, reclaimed_bytes } =
                call(host, Request::VolumeRemove { name: String::new(), force: false }, REPLY_MS_DEFAULT)?
            else {
                bail!("unexpected reply")
            };
            if !names.is_empty() {
                println!("Deleted Volumes:");
                for n in &names {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", pull::human_size(reclaimed_bytes));
            Ok(())
        }
    }
}
