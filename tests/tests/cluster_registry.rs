//! Private images across a swarm (issue #16): a registry with TLS (a CA
//! given with `--registry-ca`) and basic auth on the cluster bridge, a
//! manager and two workers in their own network namespaces.
//! - without `--with-registry-auth` the manager cannot record the digest
//!   (warned) and the workers' pulls are refused, visibly in `service ps`;
//! - with it, every node pulls with the logged-in user's credentials and a
//!   global service runs everywhere (the workers through the manager's blob
//!   cache, which uses the credentials only for nodes with the service's tasks);
//! - the password is in no `inspect`, no daemon log and no data dir as
//!   plaintext (the managers' raft records are sealed; workers hold it in
//!   memory only).

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{found_in_files, make_htpasswd, make_test_ca, test_image, wait_for, Registry, RegistryOpts};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(90);
const PASSWORD: &str = "pr1vate-Pass";

/// `service ps NAME` as JSON lines.
fn ps(c: &Cluster, name: &str) -> Vec<Value> {
    c.nodes[0]
        .shoal(&["service", "ps", name, "--format", "json"])
        .ok()
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn with_registry_auth_reaches_every_node_that_runs_the_service() {
    let Some(mut c) = Cluster::new(3) else { return };
    let ip = format!("{}.254", c.subnet);
    let dir = c.dir().join("registry-auth");
    std::fs::create_dir_all(&dir).unwrap();
    make_test_ca(&dir, "ca", &ip);
    make_htpasswd(&dir.join("htpasswd"), "fleet", PASSWORD);
    let reg = Registry::start_with(
        &ip,
        &RegistryOpts {
            tls: Some((dir.join("ca-srv.pem"), dir.join("ca-srv.key"))),
            htpasswd: Some(dir.join("htpasswd")),
            push_creds: Some(format!("fleet:{PASSWORD}")),
            ..Default::default()
        },
    );
    let image = reg.push(&test_image(), "private/agent:1", false);
    let other = reg.push(&test_image(), "private/other:1", false);
    let ca = format!("{}={}", reg.addr(), dir.join("ca.pem").display());
    for n in &mut c.nodes {
        n.start_with(&[], &["--registry-ca", &ca]);
    }
    c.form(1, 2);

    // Logged in on the CLI's side only.
    let cfg = dir.join("cli");
    let cfg_s = cfg.display().to_string();
    let env = [("SHOAL_CONFIG", cfg_s.as_str()), ("DOCKER_CONFIG", "/nonexistent")];
    let r = shoal_tests::shoal_env_at(&c.nodes[0].socket(), &["login", "-u", "fleet", "--password-stdin", &reg.addr()], &env, PASSWORD);
    assert_eq!(r.code, 0, "login: {}", r.stderr);

    // Without --with-registry-auth: the digest cannot be recorded (a warning),
    // and the workers' pulls are refused with the registry's reason.
    let r = c.nodes[0].shoal_env(&["service", "create", "-d", "--name", "noauth", "--mode", "global", &other, "sleep", "3600"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("could not be accessed on a registry"), "{}", r.stderr);
    wait_for("a pull refused for want of credentials", CONVERGE, || {
        ps(&c, "noauth")
            .iter()
            .find(|t| t["Error"].as_str().is_some_and(|e| e.contains("no credentials") || e.contains("unauthorized")))
            .cloned()
    });
    c.nodes[0].shoal(&["service", "rm", "noauth"]).ok();

    // With it: every node pulls and runs the global service.
    let r = c.nodes[0].shoal_env(
        &["service", "create", "-d", "--with-registry-auth", "--name", "agent", "--mode", "global", &image, "sleep", "3600"],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("warning"), "the digest is recorded with the credentials: {}", r.stderr);
    wait_for("the global service on all three nodes", CONVERGE, || (c.nodes.iter().all(|n| n.running_tasks() == 1)).then_some(()));
    let js: Value = serde_json::from_str(&c.nodes[0].shoal(&["service", "inspect", "agent"]).ok().stdout).unwrap();
    let pinned = js[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string();
    assert!(pinned.contains("@sha256:"), "pinned to the registry's digest: {pinned}");
    // The layer reached the workers through the manager's blob cache, fetched with the service's credentials.
    let m = c.nodes[0].log();
    assert!(m.lines().any(|l| l.contains("blob cache: fetching") && l.contains("private/agent")), "{m}");

    // The password shows nowhere: not in inspect, not in a log, not in a data dir.
    for args in [["service", "inspect", "agent"], ["service", "ps", "agent"]] {
        let out = c.nodes[0].shoal(&args).ok().stdout;
        assert!(!out.contains(PASSWORD), "{args:?} shows the password");
    }
    for (i, n) in c.nodes.iter().enumerate() {
        assert!(!n.log().contains(PASSWORD), "node {i}'s daemon log holds the password");
        assert_eq!(found_in_files(&n.data_dir(), PASSWORD.as_bytes()), None, "node {i}'s data dir holds the password in plaintext");
    }
    c.nodes[0].shoal(&["service", "rm", "agent"]).ok();
}
