//! Secrets and configs as swarm objects (issue #17): `secret|config
//! create|ls|inspect|rm` against a real node, Docker's shapes and errors;
//! a secret's value never comes back out.

use shoal_tests::{skip_reason, Node};

#[test]
fn secrets_and_configs_are_created_listed_inspected_and_removed() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let id = n.shoal_with(&["secret", "create", "-l", "site=pi", "db_password", "-"], &[], "hunter2-value").ok().stdout;
    let id = id.trim().to_string();
    assert_eq!(id.len(), 25, "a swarm object id: {id}");
    let file = n.data_dir().parent().unwrap().join("app.conf");
    std::fs::write(&file, "listen=8080\n").unwrap();
    n.shoal(&["config", "create", "app.conf", file.to_str().unwrap()]).ok();

    let ls = n.shoal(&["secret", "ls"]).ok().stdout;
    assert!(ls.starts_with("ID") && ls.contains("NAME") && ls.contains("DRIVER") && ls.contains("CREATED"), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with(&id[..12]) && l.contains("db_password")), "{ls}");
    assert_eq!(n.shoal(&["secret", "ls", "-q"]).ok().stdout.trim(), id);
    let cls = n.shoal(&["config", "ls"]).ok().stdout;
    assert!(cls.contains("app.conf") && !cls.contains("DRIVER"), "{cls}");

    // Inspect: Docker's shape; the secret's value is nowhere, the config's is there.
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["secret", "inspect", "db_password"]).ok().stdout).unwrap();
    assert_eq!(js[0]["ID"], id.as_str());
    assert_eq!(js[0]["Spec"]["Name"], "db_password");
    assert_eq!(js[0]["Spec"]["Labels"]["site"], "pi");
    assert!(js[0]["Version"]["Index"].as_u64().unwrap() > 0);
    let pretty = n.shoal(&["secret", "inspect", "--pretty", &id[..6]]).ok().stdout;
    assert!(pretty.contains("Name:            db_password"), "{pretty}");
    for out in [pretty, js.to_string(), n.shoal(&["secret", "ls", "--format", "json"]).ok().stdout] {
        assert!(!out.contains("hunter2"), "the value leaked: {out}");
    }
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["config", "inspect", "app.conf"]).ok().stdout).unwrap();
    assert_eq!(js[0]["Spec"]["Data"], "bGlzdGVuPTgwODAK", "base64 of the file");
    let pretty = n.shoal(&["config", "inspect", "--pretty", "app.conf"]).ok().stdout;
    assert!(pretty.contains("Data:\nlisten=8080"), "{pretty}");

    // Errors: one line, nothing changed.
    let r = n.shoal_with(&["secret", "create", "db_password", "-"], &[], "other");
    assert!(r.stderr.contains("secret db_password already exists"), "{}", r.stderr);
    // Replicated in one raft entry today: at most 30 KiB (Docker: 500 KiB).
    let r = n.shoal_with(&["secret", "create", "big", "-"], &[], &"x".repeat(500 * 1024 + 1));
    assert!(r.stderr.contains("secret data must be larger than 0 and at most 30 KiB"), "{}", r.stderr);
    let r = n.shoal_with(&["secret", "create", "big", "-"], &[], &"x".repeat(30 * 1024 + 1));
    assert!(r.stderr.contains("at most 30 KiB") && r.stderr.contains("got 30721 bytes"), "{}", r.stderr);
    let r = n.shoal_with(&["config", "create", "big", "-"], &[], &"x".repeat(30 * 1024));
    assert_eq!(r.code, 0, "30 KiB replicate: {}", r.stderr);
    let r = n.shoal_with(&["secret", "create", "-bad", "-"], &[], "x");
    assert_ne!(r.code, 0);
    let r = n.shoal_with(&["secret", "create", "bad name", "-"], &[], "x");
    assert!(r.stderr.contains("invalid secret name"), "{}", r.stderr);
    let r = n.shoal_with(&["secret", "create", "empty", "-"], &[], "");
    assert!(r.stderr.contains("must be larger than 0"), "{}", r.stderr);
    let r = n.shoal(&["secret", "inspect", "nope"]);
    assert!(r.stderr.contains("no such secret: nope"), "{}", r.stderr);
    assert_eq!(n.shoal(&["secret", "ls", "-q"]).ok().stdout.lines().count(), 1);

    // Remove.
    let r = n.shoal(&["secret", "rm", "db_password"]).ok();
    assert_eq!(r.stdout.trim(), "db_password");
    let r = n.shoal(&["config", "rm", "app.conf", "nope"]);
    assert_ne!(r.code, 0);
    assert!(r.stdout.contains("app.conf") && r.stderr.contains("no such config: nope"), "{} {}", r.stdout, r.stderr);
    assert!(n.shoal(&["secret", "ls", "-q"]).ok().stdout.trim().is_empty());
    assert_eq!(n.shoal(&["config", "ls", "-q"]).ok().stdout.lines().count(), 1, "big is left");
}
