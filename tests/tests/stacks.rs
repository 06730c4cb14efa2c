//! Stacks from Compose files (issue #18) on real nodes: a manager and a
//! worker, each in its own network namespace with its own containerd. A
//! two-service stack (a web server published through the routing mesh, a
//! worker reading a secret and a config) is deployed across both nodes from
//! a file with anchors, merge keys and variables, redeployed unchanged
//! (nothing restarts), redeployed edited (only the edited service's tasks
//! are replaced), refused when a secret's data changed or a key is unknown,
//! pruned and removed. Every wait is bounded.

use shoal_tests::cluster::{Cluster, ClusterNode};
use shoal_tests::wait_for_seen;
use std::collections::BTreeSet;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(90);

const COMPOSE: &str = r#"
version: "3.8"
x-common: &common
  image: shoal.test/busybox:latest
  stop_grace_period: 1s
services:
  web:
    <<: *common
    command: ["sh", "-c", "mkdir -p /www && echo hello-${GREETING:-none} > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports:
      - "8080:80"
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
      labels:
        tier: front
  worker:
    <<: *common
    build: .
    command: sh -c 'echo pw=$$(cat /run/secrets/db_pw) conf=$$(cat /etc/app.conf) role=$$ROLE; exec sleep 1000'
    environment:
      ROLE: batch
    secrets:
      - db_pw
    configs:
      - source: app_conf
        target: /etc/app.conf
secrets:
  db_pw:
    file: ./db_pw.txt
configs:
  app_conf:
    file: ./app.conf
"#;

/// Stack-labelled rows of `stack ps --format json`: (id, name, node, current state).
fn ps(m: &ClusterNode) -> Vec<(String, String, String, String)> {
    let r = m.shoal(&["stack", "ps", "--no-trunc", "--format", "json", "app"]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|t| t["DesiredState"] == "Running")
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (s("ID"), s("Name"), s("Node"), s("CurrentState"))
        })
        .collect()
}

/// Waits until the stack runs `web` web tasks and `worker` worker tasks; returns their ids by service.
fn wait_running(m: &ClusterNode, web: usize, worker: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    wait_for_seen(&format!("{web} web and {worker} worker tasks running"), CONVERGE, || {
        let rows = ps(m);
        let running = |prefix: &str| -> BTreeSet<String> {
            rows.iter().filter(|r| r.1.starts_with(prefix) && r.3.starts_with("Running")).map(|r| r.0.clone()).collect()
        };
        let (a, b) = (running("app_web."), running("app_worker."));
        if a.len() == web && b.len() == worker && rows.len() == web + worker {
            Ok((a, b))
        } else {
            let worker = m.shoal(&["service", "ps", "--no-trunc", "app_worker"]);
            Err(format!("{rows:?}\n{}{}", worker.stdout, worker.stderr))
        }
    })
}

/// `GET /` on port 8080 of `ip` from node `n`'s namespace: the body.
fn get(n: &ClusterNode, ip: &str) -> Result<String, String> {
    let r = n.exec(&["sh", "-c", &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {ip} 8080")]);
    if r.code == 0 && r.stdout.starts_with("HTTP/1.1 200") {
        Ok(r.stdout.lines().last().unwrap_or_default().trim().to_string())
    } else {
        Err(format!("exit {}: {}{}", r.code, r.stdout, r.stderr))
    }
}

#[test]
fn a_compose_stack_deploys_across_nodes_updates_what_changed_prunes_and_is_removed() {
    let Some(mut c) = Cluster::new(2) else { return };
    c.init(1, 1);
    let dir = c.dir().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("db_pw.txt"), "s3cr3t-pw").unwrap();
    std::fs::write(dir.join("app.conf"), "mode=prod").unwrap();
    let file = dir.join("compose.yml");
    std::fs::write(&file, COMPOSE).unwrap();
    let file = file.to_str().unwrap();
    let m = &c.nodes[0];

    // Deploy: Docker's lines, in Docker's order; the ignored key is named.
    let r = m.shoal_env(&["stack", "deploy", "-c", file, "app"], &[("GREETING", "v1")]).ok();
    assert_eq!(
        r.stdout,
        "Creating secret app_db_pw\nCreating config app_app_conf\nCreating network app_default\nCreating service app_web\nCreating service app_worker\n"
    );
    assert!(r.stderr.contains("Ignoring unsupported options: services.worker.build"), "{}", r.stderr);
    let (web, worker) = wait_running(m, 2, 1);
    // One web task per node (max_replicas_per_node: 1).
    for i in 0..2 {
        let here: BTreeSet<String> = c.nodes[i].running_ids().into_iter().collect();
        assert_eq!(here.intersection(&web).count(), 1, "node {i} runs one web task: {here:?} {web:?}");
    }
    let ls = m.shoal(&["stack", "ls"]).ok().stdout;
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["NAME      SERVICES   ORCHESTRATOR", "app       2          Swarm"], "{ls}");
    let svcs = m.shoal(&["stack", "services", "--format", "{{.Name}} {{.Replicas}}", "app"]).ok().stdout;
    assert_eq!(svcs, "app_web 2/2 (max 1 per node)\napp_worker 1/1\n");

    // The routing mesh serves the interpolated page on both nodes.
    for i in 0..2 {
        let ip = c.nodes[i].ip.clone();
        let body = wait_for_seen(&format!("GET {ip}:8080"), CONVERGE, || get(&c.nodes[i], &ip));
        assert_eq!(body, "hello-v1");
    }
    // The worker read its secret and config; `$$` reached the shell as `$`.
    let logs = wait_for_seen("the worker's output", CONVERGE, || {
        let out = m.shoal(&["service", "logs", "app_worker"]).stdout;
        if out.contains("pw=") {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert!(logs.contains("pw=s3cr3t-pw conf=mode=prod role=batch"), "{logs}");
    // Labels and aliases as Docker sets them.
    let js: serde_json::Value = serde_json::from_str(&m.shoal(&["service", "inspect", "app_web"]).ok().stdout).unwrap();
    let spec = &js[0]["Spec"];
    assert_eq!(spec["Labels"]["com.docker.stack.namespace"], "app");
    assert_eq!(spec["Labels"]["com.docker.stack.image"], "shoal.test/busybox:latest");
    assert_eq!(spec["Labels"]["tier"], "front");
    assert_eq!(spec["TaskTemplate"]["ContainerSpec"]["Labels"]["com.docker.stack.namespace"], "app");
    assert_eq!(spec["TaskTemplate"]["Networks"][0]["Aliases"][0], "web");
    let net: serde_json::Value = serde_json::from_str(&m.shoal(&["network", "inspect", "app_default"]).ok().stdout).unwrap();
    assert_eq!(net[0]["Labels"]["com.docker.stack.namespace"], "app");

    // Redeploy unchanged: every service updated, no task replaced.
    let r = m.shoal_env(&["stack", "deploy", "-c", file, "app"], &[("GREETING", "v1")]).ok();
    assert!(r.stdout.starts_with("Updating service app_web (id: "), "{}", r.stdout);
    assert!(!r.stdout.contains("Creating"), "{}", r.stdout);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wait_running(m, 2, 1), (web.clone(), worker.clone()), "an unchanged redeploy restarts nothing");

    // Edited (the variable changes web's command): only web's tasks are replaced.
    m.shoal_env(&["stack", "deploy", "-c", file, "app"], &[("GREETING", "v2")]).ok();
    let (web2, worker2) = wait_for_seen("web replaced", CONVERGE, || {
        let (a, b) = wait_running(m, 2, 1);
        if a.is_disjoint(&web) {
            Ok((a, b))
        } else {
            Err(format!("{a:?}"))
        }
    });
    assert_eq!(worker2, worker, "the unchanged worker kept its task");
    assert_eq!(web2.len(), 2);
    let ip = c.nodes[1].ip.clone();
    wait_for_seen("the new page", CONVERGE, || get(&c.nodes[1], &ip).and_then(|b| if b == "hello-v2" { Ok(()) } else { Err(b) }));

    // A secret's data cannot change under its name: refused, nothing touched.
    std::fs::write(dir.join("db_pw.txt"), "other-pw").unwrap();
    let r = m.shoal_env(&["stack", "deploy", "-c", file, "app"], &[("GREETING", "v2")]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("secret app_db_pw exists with other data, and secrets cannot change"), "{}", r.stderr);
    std::fs::write(dir.join("db_pw.txt"), "s3cr3t-pw").unwrap();
    // Unknown keys are refused with their path (Docker's words).
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "services:\n  web:\n    image: x\n    colour: blue\n").unwrap();
    let r = m.shoal(&["stack", "deploy", "-c", bad.to_str().unwrap(), "app"]);
    assert_eq!((r.code, r.stderr.trim()), (1, "Error: services.web Additional property colour is not allowed"));
    // An external network that does not exist.
    std::fs::write(&bad, "services:\n  web:\n    image: x\n    networks: [edge]\nnetworks:\n  edge:\n    external: true\n").unwrap();
    let r = m.shoal(&["stack", "deploy", "-c", bad.to_str().unwrap(), "app"]);
    assert!(r.code == 1 && r.stderr.contains("network \"edge\" is declared as external, but could not be found"), "{}", r.stderr);

    // Pruned: the worker is gone from the file, and from the swarm.
    let only_web = COMPOSE.split("  worker:").next().unwrap().to_string();
    std::fs::write(dir.join("compose.yml"), only_web).unwrap();
    let r = m.shoal_env(&["stack", "deploy", "--prune", "-c", file, "app"], &[("GREETING", "v2")]).ok();
    assert!(r.stdout.starts_with("Removing service app_worker\n"), "{}", r.stdout);
    assert_eq!(wait_running(m, 2, 0).0, web2, "web untouched by the prune");
    assert_eq!(m.shoal(&["stack", "services", "-q", "app"]).ok().stdout.lines().count(), 1);

    // Removed: everything labelled with the stack, the network once its tasks stopped.
    let r = m.shoal(&["stack", "rm", "app"]).ok();
    assert_eq!(
        r.stdout,
        "Removing service app_web\nRemoving secret app_db_pw\nRemoving config app_app_conf\nRemoving network app_default\n"
    );
    assert_eq!(m.shoal(&["stack", "ls"]).ok().stdout, "NAME      SERVICES   ORCHESTRATOR\n");
    assert!(!m.shoal(&["network", "ls"]).ok().stdout.contains("app_default"));
    assert!(!m.shoal(&["secret", "ls"]).ok().stdout.contains("app_db_pw"));
    let r = m.shoal(&["stack", "ps", "app"]);
    assert_eq!((r.code, r.stderr.trim()), (1, "Error: nothing found in stack: app"));
    let r = m.shoal(&["stack", "rm", "app"]).ok();
    assert_eq!(r.stderr.trim(), "Nothing found in stack: app");
    // A service of the same name outside the stack is not taken over.
    m.shoal(&["service", "create", "-d", "--name", "app_web", "shoal.test/busybox:latest", "sleep", "600"]).ok();
    let r = m.shoal_env(&["stack", "deploy", "-c", file, "app"], &[("GREETING", "v3")]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("app_web already exists"), "{}", r.stderr);
    let js: serde_json::Value = serde_json::from_str(&m.shoal(&["service", "inspect", "app_web"]).ok().stdout).unwrap();
    assert!(js[0]["Spec"]["Labels"].get("com.docker.stack.namespace").is_none(), "{js}");
}
