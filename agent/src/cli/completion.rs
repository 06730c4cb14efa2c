//! `shoal completion bash|zsh|fish`: shell completion scripts generated from
//! the CLI's own command tree (clap's builder, already linked: no
//! generator crate), so every subcommand and flag is offered as it exists.
//!
//! bash: one function that walks the words typed so far down the tree and
//! offers that level's subcommands and flags. zsh loads the same function
//! through `bashcompinit`. fish: one `complete` line per subcommand and flag,
//! conditioned on the path typed.

use clap::Command;

/// Every command path with its subcommand names and long/short flags.
struct Level {
    path: Vec<String>,
    subcommands: Vec<(String, String)>,
    flags: Vec<(String, String)>,
}

fn about(c: &Command) -> String {
    c.get_about().map(|s| s.to_string()).unwrap_or_default().lines().next().unwrap_or_default().replace('\'', "")
}

fn walk(c: &Command, path: Vec<String>, out: &mut Vec<Level>) {
    let subs: Vec<&Command> = c.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let mut flags = Vec::new();
    for a in c.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()) {
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default().lines().next().unwrap_or_default().replace('\'', "");
        if let Some(l) = a.get_long() {
            flags.push((format!("--{l}"), help.clone()));
        }
        if let Some(s) = a.get_short() {
            flags.push((format!("-{s}"), help));
        }
    }
    flags.push(("--help".into(), "Print help".into()));
    out.push(Level { path: path.clone(), subcommands: subs.iter().map(|s| (s.get_name().to_string(), about(s))).collect(), flags });
    for s in subs {
        let mut p = path.clone();
        p.push(s.get_name().to_string());
        walk(s, p, out);
    }
}

/// The script for `shell`.
pub(crate) fn script(root: &Command, shell: &str) -> anyhow::Result<String> {
    let mut levels = Vec::new();
    walk(root, vec!["shoal".into()], &mut levels);
    match shell {
        "bash" => Ok(bash(&levels)),
        "zsh" => Ok(format!("#compdef shoal\nautoload -U +X bashcompinit && bashcompinit\n{}", bash(&levels))),
        "fish" => Ok(fish(&levels)),
        _ => anyhow::bail!("unsupported shell {shell:?}: use bash, zsh or fish"),
    }
}

fn bash(levels: &[Level]) -> String {
    let mut s = String::from(
        "# shoal completion (bash): source <(shoal completion bash)\n_shoal() {\n  local cur=\"${COMP_WORDS[COMP_CWORD]}\" path=shoal i w opts\n  for ((i = 1; i < COMP_CWORD; i++)); do\n    w=\"${COMP_WORDS[i]}\"\n    case \"$w\" in -*) continue ;; esac\n    case \"$path $w\" in\n",
    );
    let deeper: Vec<String> = levels.iter().filter(|l| l.path.len() > 1).map(|l| l.path.join(" ")).collect();
    s.push_str(&format!("      {}) path=\"$path $w\" ;;\n", deeper.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join("|")));
    s.push_str("    esac\n  done\n  case \"$path\" in\n");
    for l in levels {
        let words: Vec<&str> = l.subcommands.iter().map(|(n, _)| n.as_str()).chain(l.flags.iter().map(|(f, _)| f.as_str())).collect();
        s.push_str(&format!("    \"{}\") opts='{}' ;;\n", l.path.join(" "), words.join(" ")));
    }
    s.push_str("  esac\n  mapfile -t COMPREPLY < <(compgen -W \"$opts\" -- \"$cur\")\n}\ncomplete -o default -F _shoal shoal\n");
    s
}

fn fish(levels: &[Level]) -> String {
    let mut s = String::from("# shoal completion (fish): shoal completion fish | source\n");
    for l in levels {
        // The words typed after `shoal` must be exactly this level's path.
        let cond = match &l.path[1..] {
            [] => "__fish_use_subcommand".to_string(),
            rest => {
                let seen: Vec<String> = rest.iter().map(|w| format!("__fish_seen_subcommand_from {w}")).collect();
                let below: Vec<&str> = l.subcommands.iter().map(|(n, _)| n.as_str()).collect();
                let mut c = seen.join("; and ");
                if !below.is_empty() {
                    c.push_str(&format!("; and not __fish_seen_subcommand_from {}", below.join(" ")));
                }
                c
            }
        };
        for (name, help) in &l.subcommands {
            s.push_str(&format!("complete -c shoal -f -n '{cond}' -a '{name}' -d '{help}'\n"));
        }
        for (flag, help) in &l.flags {
            let opt = match flag.strip_prefix("--") {
                Some(long) => format!("-l {long}"),
                None => format!("-s {}", flag.trim_start_matches('-')),
            };
            s.push_str(&format!("complete -c shoal -n '{cond}' {opt} -d '{help}'\n"));
        }
    }
    s
}
