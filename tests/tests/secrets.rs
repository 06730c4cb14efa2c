//! Secrets and configs as swarm objects (issue #17): `secret|config
//! create|ls|inspect|rm` against a real node, Docker's shapes and errors;
//! a secret's value never comes back out.

use shoal_tests::{skip_reason, wait_for, Node};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

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
    // Docker's limits; a large one is replicated in parts and comes back whole.
    let r = n.shoal_with(&["secret", "create", "big", "-"], &[], &"x".repeat(500 * 1024 + 1));
    assert!(r.stderr.contains("secret data must be larger than 0 and less than 500 KiB"), "{}", r.stderr);
    let big: String = (0..1000 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let r = n.shoal_with(&["config", "create", "big", "-"], &[], &big);
    assert_eq!(r.code, 0, "a config of 1000 KiB: {}", r.stderr);
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["config", "inspect", "big"]).ok().stdout).unwrap();
    let data = js[0]["Spec"]["Data"].as_str().unwrap();
    assert_eq!(data.len(), (1000 * 1024usize).div_ceil(3) * 4, "all of it, base64");
    assert!(data.starts_with("YWJjZGVm"), "abcdef...: {}", &data[..16]);
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

/// A task reads its secret at /run/secrets/NAME and its config at its
/// target, with the asked owner and mode; the value sits on a tmpfs of the
/// node (never under its data dir) and goes with the task; a secret in use
/// cannot be removed; `--secret-rm` is a rolling update, after which it can.
#[test]
fn tasks_get_their_secrets_and_configs_as_files_on_a_tmpfs() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    n.shoal_with(&["secret", "create", "db_password", "-"], &[], "s3cr3t-v4lue").ok();
    n.shoal_with(&["config", "create", "app.conf", "-"], &[], "listen=8080\n").ok();
    let r = n
        .shoal(&[
            "service",
            "create",
            "--name",
            "app",
            "--secret",
            "db_password",
            "--secret",
            "source=db_password,target=/etc/app/pw,uid=1000,gid=1001,mode=0400",
            "--config",
            "source=app.conf,target=/etc/app.conf",
            "shoal.test/busybox",
            "sh",
            "-c",
            "echo pw=$(md5sum < /run/secrets/db_password); echo conf=$(cat /etc/app.conf); stat -c 'owner=%u:%g mode=%a' /etc/app/pw; \
             stat -c 'default=%u:%g mode=%a' /run/secrets/db_password; echo x > /run/secrets/db_password || echo read-only; exec sleep 1000",
        ])
        .ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    let logs = wait_for("the task's output", WAIT, || {
        let out = n.shoal(&["service", "logs", "app"]).ok().stdout;
        out.contains("read-only").then_some(out)
    });
    // The task prints the value's hash, not the value (its log is on disk).
    let md5 = std::process::Command::new("sh").args(["-c", "printf s3cr3t-v4lue | md5sum"]).output().unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout).split_whitespace().next().unwrap().to_string();
    assert!(logs.contains(&format!("pw={md5}")), "{logs}");
    assert!(logs.contains("conf=listen=8080"), "{logs}");
    assert!(logs.contains("owner=1000:1001 mode=400"), "{logs}");
    assert!(logs.contains("default=0:0 mode=444"), "{logs}");

    // Inspect shows the references (Docker's shape), never the value.
    let out = n.shoal(&["service", "inspect", "app"]).ok().stdout;
    assert!(!out.contains("s3cr3t"), "{out}");
    let js: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secrets = &js[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"];
    assert_eq!(secrets[0]["SecretName"], "db_password");
    assert_eq!(secrets[0]["File"]["Name"], "db_password");
    assert_eq!(secrets[1]["File"]["Mode"], 0o400);
    assert_eq!(js[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"][0]["File"]["Name"], "/etc/app.conf");

    // Never on the node's disk: nothing under the data dir holds it; the tmpfs copy does.
    let grep = std::process::Command::new("grep").args(["-rl", "s3cr3t-v4lue"]).arg(n.data_dir()).output().unwrap();
    assert!(grep.stdout.is_empty(), "the value is on disk: {}", String::from_utf8_lossy(&grep.stdout));
    let files_root = shoal_tests::task_files_root(&n.data_dir());
    let shm = std::process::Command::new("grep").arg("-rl").arg("s3cr3t-v4lue").arg(&files_root).output().unwrap();
    let on_tmpfs = String::from_utf8_lossy(&shm.stdout).lines().count();
    assert_eq!(on_tmpfs, 2, "both secret files are on the tmpfs: {}", String::from_utf8_lossy(&shm.stdout));

    // In use: refused, with Docker's words.
    let r = n.shoal(&["secret", "rm", "db_password"]);
    assert!(r.stderr.contains("secret db_password is in use by the following service: app"), "{}", r.stderr);
    let r = n.shoal(&["service", "create", "--secret", "nope", "shoal.test/busybox", "true"]);
    assert!(r.stderr.contains("no such secret: nope"), "{}", r.stderr);

    // Dropping the secret is a rolling update; the old spec still names it (a rollback's target).
    let r = n.shoal(&["service", "update", "--secret-rm", "db_password", "app"]).ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["service", "inspect", "app"]).ok().stdout).unwrap();
    assert!(js[0]["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets").is_none(), "{js}");
    let r = n.shoal(&["secret", "rm", "db_password"]);
    assert!(r.stderr.contains("in use by the following service: app"), "the previous spec still uses it: {}", r.stderr);
    // Once the service is gone, so are its files, and the secret can go.
    n.shoal(&["service", "rm", "app"]).ok();
    wait_for("the task's files removed", WAIT, || {
        let shm = std::process::Command::new("grep").arg("-rl").arg("s3cr3t-v4lue").arg(&files_root).output().unwrap();
        shm.stdout.is_empty().then_some(())
    });
    n.shoal(&["secret", "rm", "db_password"]).ok();
}
