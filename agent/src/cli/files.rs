//! `shoal secret ...` and `shoal config ...`: create, ls, inspect, rm, with
//! Docker's flags, tables, JSON and errors. Both kinds share this code
//! (`FileKind`); a secret's data is never printed (the managers never send
//! it back), a config's is (`config inspect --pretty`, `Spec.Data`).

use super::output::{rfc3339, Table};
use super::service::short_id;
use super::{call, parse};
use crate::client::REPLY_MS_DEFAULT;
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;
use shoal_shared::api::{Reply, Request};
use shoal_shared::types::{FileKind, FileSpec, StoredFile};
use std::io::Read;

#[derive(Subcommand, Debug)]
pub(crate) enum FileCmd {
    /// Create one from a file, or from stdin with `-`.
    Create {
        /// Labels (KEY=VALUE).
        #[arg(short, long, value_parser = parse::key_value)]
        label: Vec<(String, String)>,
        /// Its name.
        name: String,
        /// The file holding the data, or `-` for stdin.
        file: String,
    },
    /// List them.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Filter output based on conditions provided (id, name, label).
        #[arg(short, long)]
        filter: Vec<String>,
        /// Output format: table, json, or a Go template (`{{.Name}}`, `table {{.ID}}\t{{.Name}}`).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Display detailed information on one or more.
    Inspect {
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        /// Output format: json (the default) or a Go template (`{{.Spec.Name}}`).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Remove one or more.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Reads the data of `create`: a file, or stdin (`-`), at most one byte
/// over the kind's limit (the manager gives the error, with the limit).
fn read_data(kind: FileKind, file: &str) -> anyhow::Result<Vec<u8>> {
    let what = if file == "-" { "the data from stdin".to_string() } else { file.to_string() };
    read_at_most(std::path::Path::new(file), kind.bytes_max() as u64).with_context(|| format!("cannot read {what}"))
}

/// A file's bytes (`-`: stdin), at most `max_bytes` + 1 of them, so that a
/// caller sees a file over its limit without reading all of it.
pub(crate) fn read_at_most(path: &std::path::Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    if path == std::path::Path::new("-") {
        std::io::stdin().take(max_bytes + 1).read_to_end(&mut data)?;
    } else {
        std::fs::File::open(path)?.take(max_bytes + 1).read_to_end(&mut data)?;
    }
    Ok(data)
}

/// Runs a `secret` or `config` command.
pub(crate) fn run(host: &str, kind: FileKind, cmd: FileCmd) -> anyhow::Result<()> {
    match cmd {
        FileCmd::Create { label, name, file } => {
            let data = read_data(kind, &file)?;
            let spec = FileSpec { name, labels: label.into_iter().collect(), data };
            let Reply::FileCreated { id } = call(host, Request::FileCreate { kind, spec: Box::new(spec) }, REPLY_MS_DEFAULT)? else {
                bail!("unexpected reply")
            };
            println!("{id}");
            Ok(())
        }
        FileCmd::Ls { quiet, filter, format } => {
            let mut fmt = super::output::Format::parse(&format)?;
            let filters = super::filter::Filters::parse(&filter, &["id", "name", "label"])?;
            let Reply::Files(mut list) = call(host, Request::FileList { kind }, REPLY_MS_DEFAULT)? else { bail!("unexpected reply") };
            list.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            list.retain(|f| {
                filters.matches(|k, v| match k {
                    "id" => f.id.starts_with(v),
                    "name" => f.spec.name.starts_with(v),
                    "label" => super::filter::label_matches(&f.spec.labels, v),
                    _ => false,
                })
            });
            let mut t = match kind {
                FileKind::Secret => Table::new(&["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]),
                FileKind::Config => Table::new(&["ID", "NAME", "CREATED", "UPDATED"]),
            };
            for f in &list {
                if quiet {
                    println!("{}", f.id);
                } else if !fmt.is_table() {
                    fmt.row(&json!({"ID": f.id, "Name": f.spec.name, "CreatedAt": rfc3339(f.meta.created_at), "UpdatedAt": rfc3339(f.meta.updated_at), "Labels": f.spec.labels, "Driver": ""}))?;
                } else {
                    let mut row = vec![short_id(&f.id), f.spec.name.clone()];
                    if kind == FileKind::Secret {
                        row.push(String::new());
                    }
                    row.push(rfc3339(f.meta.created_at));
                    row.push(rfc3339(f.meta.updated_at));
                    t.row(row);
                }
            }
            if !quiet && fmt.is_table() {
                print!("{}", t.render());
            } else if !quiet {
                fmt.finish(&["ID", "Name", "Driver", "CreatedAt", "UpdatedAt", "Labels"]);
            }
            Ok(())
        }
        FileCmd::Inspect { pretty, format, names } => {
            super::output::Format::parse(&format)?;
            let mut found = Vec::new();
            let mut failed = false;
            for key in names {
                match call(host, Request::FileInspect { kind, key }, REPLY_MS_DEFAULT) {
                    Ok(Reply::Files(f)) => found.extend(f),
                    Ok(r) => bail!("unexpected reply: {r:?}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            if pretty {
                for f in &found {
                    print!("{}", pretty_text(kind, f));
                }
            } else {
                let out: Vec<serde_json::Value> = found.iter().map(|f| inspect_json(kind, f)).collect();
                super::output::Format::inspect(&format, &out)?;
            }
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        FileCmd::Rm { names } => super::remove_each(host, names, |key| Request::FileRemove { kind, key }),
    }
}

/// Docker's inspect JSON; a config's data in `Spec.Data` (base64), a secret's never.
pub(crate) fn inspect_json(kind: FileKind, f: &StoredFile) -> serde_json::Value {
    let mut spec = json!({"Name": f.spec.name, "Labels": f.spec.labels});
    if kind == FileKind::Config {
        spec["Data"] = json!(super::login::base64_encode(&f.spec.data));
    }
    json!({
        "ID": f.id,
        "Version": {"Index": f.meta.version},
        "CreatedAt": rfc3339(f.meta.created_at),
        "UpdatedAt": rfc3339(f.meta.updated_at),
        "Spec": spec,
    })
}

/// Docker's `--pretty` text; a config's data follows `Data:` as text.
fn pretty_text(kind: FileKind, f: &StoredFile) -> String {
    let mut out = format!("ID:              {}\nName:            {}\n", f.id, f.spec.name);
    if !f.spec.labels.is_empty() {
        out.push_str("Labels:\n");
        for (k, v) in &f.spec.labels {
            out.push_str(&format!(" - {k}={v}\n"));
        }
    }
    if kind == FileKind::Secret {
        out.push_str("Driver:\n");
    }
    out.push_str(&format!("Created at:      {}\nUpdated at:      {}\n", rfc3339(f.meta.created_at), rfc3339(f.meta.updated_at)));
    if kind == FileKind::Config {
        out.push_str(&format!("Data:\n{}\n", String::from_utf8_lossy(&f.spec.data)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &[u8]) -> StoredFile {
        StoredFile {
            id: "abc".into(),
            meta: Default::default(),
            spec: FileSpec { name: "app.conf".into(), labels: [("k".to_string(), "v".to_string())].into(), data: data.to_vec() },
        }
    }

    #[test]
    fn configs_show_their_data_and_secrets_never() {
        let js = inspect_json(FileKind::Config, &file(b"a=1\n"));
        assert_eq!(js["Spec"]["Data"], "YT0xCg==");
        assert_eq!(js["Spec"]["Labels"]["k"], "v");
        let js = inspect_json(FileKind::Secret, &file(b"hunter2"));
        assert!(js["Spec"].get("Data").is_none(), "{js}");
        let text = pretty_text(FileKind::Config, &file(b"a=1"));
        assert!(text.contains("Data:\na=1\n") && text.contains(" - k=v"), "{text}");
        let text = pretty_text(FileKind::Secret, &file(b"hunter2"));
        assert!(!text.contains("hunter2") && text.contains("Driver:"), "{text}");
    }
}
