//! Healthchecks end to end (issue #17): the real `shoal` binary, a private
//! containerd, probes exec'd in real containers. A task is Starting until
//! its check passes, an unhealthy one fails with Swarm's error and is
//! replaced, a rolling update to a failing check rolls back, the image's
//! `HEALTHCHECK` counts, and a restarted daemon keeps probing.

use shoal_tests::{shoal_bin, skip_reason, test_image_with_healthcheck, wait_for, wait_for_seen, Node};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const UNHEALTHY: &str = "task: unhealthy container";

/// `service ps` rows of a service: (id, current state's first word,
/// desired state, error); none while the service does not exist yet.
fn rows(n: &Node, svc: &str) -> Vec<(String, String, String, String)> {
    let r = n.shoal(&["service", "ps", "--no-trunc", "--format", "json", svc]);
    r.stdout
        .lines()
        .filter(|_| r.code == 0)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("ps json line"))
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
            (s("ID"), s("CurrentState").split_whitespace().next().unwrap_or("").to_string(), s("DesiredState"), s("Error"))
        })
        .collect()
}

fn inspect(n: &Node, svc: &str) -> serde_json::Value {
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["service", "inspect", svc]).ok().stdout).expect("inspect json");
    js[0].clone()
}

/// (a) Starting while the check fails, Running once it passes; `service
/// create` without -d converges only then.
#[test]
fn a_task_is_starting_until_its_check_passes_and_create_waits_for_it() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let started = Instant::now();
    let create = Command::new(shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", n.socket().display()))
        .args(["service", "create", "--name", "slow", "--health-cmd", "test -f /tmp/ok", "--health-interval", "1s"])
        // Its failures in the first 3 s must not count (3 retries of 1 s would race the touch).
        .args(["--health-start-period", "30s"])
        .args(["--timeout", "60s", "shoal.test/busybox", "sh", "-c", "sleep 3; touch /tmp/ok; exec sleep 1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal service create");
    // Seen Starting while create still waits.
    let id = wait_for_seen("the task Starting", WAIT, || match rows(&n, "slow").first() {
        Some((id, state, _, _)) if state == "Starting" => Ok(id.clone()),
        other => Err(format!("{other:?}")),
    });
    let out = create.wait_with_output().expect("create output");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("verify: Service converged") && stdout.contains("1/1: running"), "{stdout}");
    assert!(took >= Duration::from_secs(3), "converged after {took:?}: before the check could pass");
    // The same task, now Running: Starting came first, then Running, never another task.
    assert_eq!(rows(&n, "slow"), vec![(id, "Running".into(), "Running".into(), String::new())]);
    let js = inspect(&n, "slow");
    assert_eq!(
        js["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1_000_000_000u64, "StartPeriod": 30_000_000_000u64})
    );
}

/// (b) A check that always fails: the task fails with Swarm's error, its
/// container goes, and the orchestrator replaces it.
#[test]
fn an_unhealthy_task_fails_and_is_replaced() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    n.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "sick",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--restart-delay",
        "100ms",
        "--stop-grace-period",
        "1s",
        "shoal.test/busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let first = wait_for_seen("a task Failed as unhealthy and a replacement", WAIT, || {
        let r = rows(&n, "sick");
        let failed = r.iter().find(|(_, state, _, err)| state == "Failed" && err == UNHEALTHY).map(|t| t.0.clone());
        match failed {
            Some(id) if r.len() >= 2 => Ok(id),
            _ => Err(format!("{r:?}")),
        }
    });
    let r = rows(&n, "sick");
    assert!(r.iter().all(|(_, state, _, _)| state != "Running"), "never healthy, never Running: {r:?}");
    wait_for("the unhealthy task's container to go", WAIT, || (!n.containers().contains(&first)).then_some(()));
    assert!(n.daemon_log().contains(&format!("task {first} is unhealthy (exit 1)")), "{}", n.daemon_log());
}

/// (c) A rolling update to a check that fails does not complete: with
/// `--update-failure-action rollback` the service rolls back and the old
/// tasks (start-first: never stopped) keep running.
#[test]
fn an_update_to_a_failing_check_rolls_back_and_the_old_tasks_keep_running() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let r = n
        .shoal(&[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--health-cmd",
            "true",
            "--health-interval",
            "500ms",
            "--update-failure-action",
            "rollback",
            "--update-order",
            "start-first",
            "--update-monitor",
            "2s",
            "--stop-grace-period",
            "1s",
            "shoal.test/busybox",
            "sleep",
            "1000",
        ])
        .ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    let old: Vec<String> = rows(&n, "web").into_iter().map(|t| t.0).collect();
    assert_eq!(old.len(), 2);
    let r = n.shoal(&["service", "update", "--health-cmd", "exit 1", "--health-retries", "1", "--timeout", "60s", "web"]);
    assert_ne!(r.code, 0, "the update must not complete: {}", r.stdout);
    assert!(r.stderr.contains("service rolled back"), "{}\n{}", r.stdout, r.stderr);
    let js = inspect(&n, "web");
    assert_eq!(js["UpdateStatus"]["State"], "rollback_completed", "{js}");
    assert_eq!(js["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    let now = rows(&n, "web");
    for id in &old {
        assert!(now.iter().any(|(i, state, desired, _)| i == id && state == "Running" && desired == "Running"), "{id} still runs: {now:?}");
    }
    assert!(now.iter().any(|(_, state, _, err)| state == "Failed" && err == UNHEALTHY), "the new task failed unhealthy: {now:?}");
}

/// (d) and (e): an image's HEALTHCHECK is honoured with no flag, and
/// `--no-healthcheck` turns it off; the flags' errors and inspect's shapes.
#[test]
fn the_images_healthcheck_counts_and_no_healthcheck_turns_it_off() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let img = test_image_with_healthcheck(
        "shoal.test/busybox-health:latest",
        r#"{"Test":["CMD-SHELL","test -f /tmp/ok"],"Interval":1000000000,"StartPeriod":30000000000,"Retries":2}"#,
    );
    n.shoal(&["image", "load", "-i", img.to_str().expect("utf-8 path")]).ok();
    // The image's check: Starting until /tmp/ok exists, no flag needed.
    n.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "imgcheck",
        "shoal.test/busybox-health",
        "sh",
        "-c",
        "sleep 3; touch /tmp/ok; exec sleep 1000",
    ])
    .ok();
    wait_for_seen("the image's check to hold the task in Starting", WAIT, || match rows(&n, "imgcheck").first() {
        Some((_, s, _, _)) if s == "Starting" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    wait_for_seen("the image's check to pass", WAIT, || match rows(&n, "imgcheck").first() {
        Some((_, s, _, _)) if s == "Running" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(inspect(&n, "imgcheck")["Spec"]["TaskTemplate"]["ContainerSpec"].get("Healthcheck").is_none(), "none in the spec");
    // --no-healthcheck: the image's check never runs (it would fail: no /tmp/ok here).
    let r = n
        .shoal(&[
            "service",
            "create",
            "--name",
            "nocheck",
            "--no-healthcheck",
            "--stop-grace-period",
            "1s",
            "shoal.test/busybox-health",
            "sleep",
            "1000",
        ])
        .ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    let js = inspect(&n, "nocheck");
    assert_eq!(js["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"], serde_json::json!({"Test": ["NONE"]}));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(rows(&n, "nocheck").len(), 1, "still its first task: {:?}", rows(&n, "nocheck"));
    // A duration brings the image's check back (the NONE goes), with these values over the image's.
    let r = n.shoal(&["service", "update", "-d", "--health-retries", "1", "--health-start-period", "1ms", "nocheck"]).ok();
    assert!(r.stdout.contains("nocheck"), "{}", r.stdout);
    assert_eq!(
        inspect(&n, "nocheck")["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"],
        serde_json::json!({"StartPeriod": 1_000_000u64, "Retries": 1})
    );
    wait_for_seen("the image's check, back, to fail the new task", WAIT, || {
        let r = rows(&n, "nocheck");
        if r.iter().any(|(_, s, _, e)| s == "Failed" && e == UNHEALTHY) {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    // Refusals, with Docker's words or the bound.
    let r = n.shoal(&["service", "create", "--no-healthcheck", "--health-cmd", "true", "shoal.test/busybox", "true"]);
    assert!(r.code != 0 && r.stderr.contains("--no-healthcheck conflicts with --health-* options"), "{}", r.stderr);
    let r = n.shoal(&["service", "create", "--health-interval", "1us", "shoal.test/busybox", "true"]);
    assert!(r.code != 0 && r.stderr.contains("healthcheck interval 1000 ns is below the minimum of 1ms"), "{}", r.stderr);
    // --pretty: Docker's lines.
    n.shoal(&["service", "update", "-d", "--health-cmd", "exit 0", "--health-interval", "1m30s", "nocheck"]).ok();
    let pretty = n.shoal(&["service", "inspect", "--pretty", "nocheck"]).ok().stdout;
    assert!(
        pretty.contains(" Healthcheck:\n  Interval = 1m30s\n  Retries = 1\n  StartPeriod =\t1ms\n  Timeout =\t0s\n  Tests:\n\t Test = CMD-SHELL\n\t Test = exit 0\n"),
        "{pretty}"
    );
}

/// (f) A daemon restart while a healthy task runs: the task stays Running
/// (the same task), probes go on from the container's label, and a check
/// that starts failing after the restart still fails the task.
#[test]
fn a_restarted_daemon_keeps_probing_and_never_goes_back() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let shared = n.dir.join("shared");
    std::fs::create_dir_all(&shared).expect("shared dir");
    std::fs::write(shared.join("ok"), "").expect("ok file");
    let mount = format!("type=bind,source={},destination=/shared", shared.display());
    let r = n
        .shoal(&[
            "service",
            "create",
            "--name",
            "steady",
            "--mount",
            &mount,
            "--health-cmd",
            "echo x >> /shared/probes; test -f /shared/ok",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "--health-start-period",
            "30s",
            "--stop-grace-period",
            "1s",
            "shoal.test/busybox",
            "sleep",
            "1000",
        ])
        .ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    let before = rows(&n, "steady");
    assert_eq!(before.len(), 1);
    let probes = || std::fs::read_to_string(shared.join("probes")).unwrap_or_default().lines().count();
    n.kill_daemon();
    let at_kill = probes();
    n.start_daemon();
    // Probed again by the new daemon, from the label: the count goes on.
    wait_for("probes after the restart", WAIT, || (probes() >= at_kill + 3).then_some(()));
    assert_eq!(rows(&n, "steady"), before, "the same task, still Running");
    // Failing now: counted at once (it was healthy; the start period is over for it), failed, replaced.
    std::fs::remove_file(shared.join("ok")).expect("remove ok");
    wait_for_seen("the task to fail as unhealthy after the restart", WAIT, || {
        let r = rows(&n, "steady");
        if r.iter().any(|(id, s, _, e)| id == &before[0].0 && s == "Failed" && e == UNHEALTHY) {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
}
