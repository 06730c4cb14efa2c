//! `shoal completion bash|zsh|fish` (issue #18): the bash script loads in
//! bash and completes subcommands and flags from the real command tree.

use shoal_tests::shoal_bin;
use std::process::Command;

/// What the bash completion offers for the words typed (the last one is
/// being completed).
fn complete(words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "set -e; source <('{}' completion bash); COMP_WORDS=({}); COMP_CWORD={}; _shoal; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        shoal_bin().display(),
        quoted.join(" "),
        words.len() - 1
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().expect("run bash");
    assert!(out.status.success(), "the script failed in bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(complete(&["shoal", "serv"]), ["service"]);
    assert_eq!(complete(&["shoal", "service", "sc"]), ["scale"]);
    let flags = complete(&["shoal", "service", "create", "--replicas"]);
    assert_eq!(flags, ["--replicas", "--replicas-max-per-node"]);
    // Flags before the subcommand do not lose the path.
    assert_eq!(complete(&["shoal", "-H", "unix:///x", "node", "p"]), ["ps", "promote"]);
    assert!(complete(&["shoal", "node", "ls", "--"]).contains(&"--filter".to_string()));
    // The hidden log driver is never offered.
    assert!(!complete(&["shoal", ""]).iter().any(|w| w == "log-driver"));
}

#[test]
fn zsh_and_fish_scripts_are_generated_and_unknown_shells_refused() {
    let run = |shell: &str| Command::new(shoal_bin()).args(["completion", shell]).output().unwrap();
    let zsh = String::from_utf8(run("zsh").stdout).unwrap();
    assert!(zsh.starts_with("#compdef shoal\n") && zsh.contains("bashcompinit") && zsh.contains("complete -o default -F _shoal shoal"));
    let fish = String::from_utf8(run("fish").stdout).unwrap();
    assert!(fish.contains("complete -c shoal -f -n '__fish_use_subcommand' -a 'service'"), "{fish}");
    assert!(fish.contains("-n '__fish_seen_subcommand_from service; and not __fish_seen_subcommand_from create"), "{fish}");
    let bad = run("tcsh");
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unsupported shell \"tcsh\": use bash, zsh or fish"));
}
