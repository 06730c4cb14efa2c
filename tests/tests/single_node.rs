//! Single-node Shoal end to end: the real `shoal` binary, a real private
//! containerd, real containers. Checks are made against containerd itself
//! (`ctr`), not only against Shoal's view.

use shoal_tests::{skip_reason, wait_for, Node};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn running_tasks(n: &Node, svc: &str) -> usize {
    n.ps_json(svc)
        .iter()
        .filter(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().unwrap_or("").starts_with("Running"))
        .count()
}

#[test]
fn create_scale_inspect_logs_and_remove() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();

    // Create without -d: Swarm's progress, ends converged.
    let r = n
        .shoal(&[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "shoal.test/busybox",
            "sh",
            "-c",
            "echo hello from $HOSTNAME; exec sleep 1000",
        ])
        .ok();
    assert!(r.stdout.contains("overall progress: 3 out of 3 tasks"), "{}", r.stdout);
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    assert!(r.stdout.contains("1/3: running"), "{}", r.stdout);
    assert_eq!(n.running(), 3, "containerd runs three tasks");

    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    let row = ls.lines().find(|l| l.contains(" web ")).expect("web listed");
    assert!(row.contains("replicated") && row.contains("3/3") && row.contains("shoal.test/busybox:latest"), "{ls}");
    assert!(ls.starts_with("ID             NAME"), "{ls}");

    // Inspect: Swarm's field names and defaults, pinned image and platforms.
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["service", "inspect", "web"]).ok().stdout).unwrap();
    let s = &js[0];
    assert_eq!(s["Spec"]["Name"], "web");
    assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
    assert!(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap().starts_with("shoal.test/busybox:latest@sha256:"));
    assert_eq!(s["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"], "any");
    assert_eq!(s["Spec"]["TaskTemplate"]["RestartPolicy"]["Delay"], 5_000_000_000u64);
    assert_eq!(s["Spec"]["UpdateConfig"]["Order"], "stop-first");
    assert_eq!(s["Spec"]["RollbackConfig"]["Monitor"], 5_000_000_000u64);
    assert_eq!(s["Spec"]["EndpointSpec"]["Mode"], "vip");
    assert_eq!(s["Spec"]["TaskTemplate"]["Placement"]["Platforms"][0]["OS"], "linux");
    assert!(s["Version"]["Index"].as_u64().unwrap() > 0);

    // Logs come from the containers themselves.
    let logs = wait_for("log lines", WAIT, || {
        let out = n.shoal(&["service", "logs", "web"]).ok().stdout;
        (out.matches("hello from").count() == 3).then_some(out)
    });
    assert!(logs.lines().all(|l| l.starts_with("web.") && l.contains("| hello from")), "{logs}");
    let tail = n.shoal(&["service", "logs", "--tail", "1", "web"]).ok().stdout;
    assert_eq!(tail.lines().count(), 3, "one line per task: {tail}");

    // Scale up and down (detached), checked in containerd.
    n.shoal(&["service", "scale", "-d", "web=5"]).ok();
    wait_for("5 running containers", WAIT, || (n.running() == 5 && running_tasks(&n, "web") == 5).then_some(()));
    let r = n.shoal(&["service", "scale", "web=2"]).ok();
    assert!(r.stdout.contains("web scaled to 2") && r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    wait_for("2 containers", WAIT, || (n.containers().len() == 2).then_some(()));

    // Remove: nothing of the service is left in containerd.
    let r = n.shoal(&["service", "rm", "web"]).ok();
    assert_eq!(r.stdout.trim(), "web");
    wait_for("containers gone", WAIT, || (n.containers().is_empty() && n.tasks().is_empty()).then_some(()));
    let snaps = n.snapshots();
    assert!(snaps.iter().all(|k| k.starts_with("sha256:")), "only image layers remain: {snaps:?}");
    assert!(n.shoal(&["service", "ls", "-q"]).ok().stdout.trim().is_empty());
}

#[test]
fn killed_containers_are_replaced_per_restart_policy() {
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
        "app",
        "--replicas",
        "2",
        "--restart-delay",
        "0s",
        "shoal.test/busybox",
        "sleep",
        "1000",
    ])
    .ok();
    wait_for("2 running", WAIT, || (running_tasks(&n, "app") == 2 && n.running() == 2).then_some(()));
    let (victim, pid, _) = n.tasks().into_iter().next().unwrap();
    let st = std::process::Command::new("kill").arg("-9").arg(&pid).status().unwrap();
    assert!(st.success());
    wait_for("the killed task failed and was replaced", WAIT, || {
        let rows = n.ps_json("app");
        let failed = rows.iter().any(|t| t["ID"] == victim.as_str() && t["CurrentState"].as_str().unwrap().starts_with("Failed"));
        (failed && running_tasks(&n, "app") == 2 && n.running() == 2).then_some(())
    });
    let ps = n.shoal(&["service", "ps", "app"]).ok().stdout;
    assert!(ps.contains(" \\_ app."), "history shown under its slot: {ps}");
    assert!(ps.contains("\"task: non-zero exit (137)\""), "{ps}");
    assert!(!n.containers().contains(&victim), "the dead container was removed");

    // restart-condition none: a dead task stays dead.
    n.shoal(&["service", "create", "-d", "--name", "once", "--restart-condition", "none", "shoal.test/busybox", "sh", "-c", "exit 3"]).ok();
    wait_for("once failed", WAIT, || {
        let rows = n.ps_json("once");
        (rows.len() == 1 && rows[0]["CurrentState"].as_str().unwrap().starts_with("Failed")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(n.ps_json("once").len(), 1, "no restart under condition none");
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" once ") && l.contains("0/1")), "{ls}");

    // max attempts: first run plus two restarts, then the slot stays dead.
    n.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "flaky",
        "--restart-max-attempts",
        "2",
        "--restart-delay",
        "0s",
        "shoal.test/busybox",
        "false",
    ])
    .ok();
    wait_for("three failed attempts", WAIT, || (n.ps_json("flaky").len() == 3).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(n.ps_json("flaky").len(), 3);
}

#[test]
fn daemon_kill_and_restart_adopts_containers() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    n.shoal(&["service", "create", "-d", "--name", "keep", "--replicas", "3", "shoal.test/busybox", "sleep", "1000"]).ok();
    wait_for("3 running", WAIT, || (running_tasks(&n, "keep") == 3).then_some(()));
    let mut before: Vec<(String, String, String)> = n.tasks();
    before.sort();
    let ps_before = n.shoal(&["service", "ps", "-q", "keep"]).ok().stdout;

    n.kill_daemon();
    // Workloads survive the daemon.
    assert_eq!(n.running(), 3);
    n.start_daemon();
    let ps_after = n.shoal(&["service", "ps", "-q", "keep"]).ok().stdout;
    assert_eq!(ps_before, ps_after, "same tasks after restart");
    std::thread::sleep(Duration::from_secs(3));
    let mut after = n.tasks();
    after.sort();
    assert_eq!(before, after, "containers adopted: same ids and pids, none added");
    assert_eq!(running_tasks(&n, "keep"), 3);
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.contains("3/3"), "{ls}");

    // SIGTERM: a clean exit that removes the socket and leaves workloads running.
    assert_eq!(n.terminate_daemon(), Some(0));
    assert!(!n.socket().exists(), "socket removed on shutdown");
    assert_eq!(n.running(), 3);
}

#[test]
fn bad_input_gets_one_line_errors_and_changes_nothing() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();

    // No daemon: fast, clear failure.
    let t = Instant::now();
    let r = n.shoal(&["service", "ls"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot connect to the shoal daemon at unix://") && r.stderr.contains("is it running?"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(2));

    // containerd socket missing: the daemon refuses to start.
    let out = n.daemon_command_with(&n.socket(), std::path::Path::new("/nonexistent/containerd.sock")).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/containerd.sock"), "{err}");

    n.init_with_image();
    // A second daemon on the same data dir is refused.
    let out = n.daemon_command_with(&n.dir.join("other.sock"), &n.containerd_socket()).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is locked by another shoal daemon"), "{}", String::from_utf8_lossy(&out.stderr));

    n.shoal(&["service", "create", "-d", "--name", "ok", "shoal.test/busybox", "sleep", "1000"]).ok();
    let state_before = n.shoal(&["service", "inspect", "ok"]).ok().stdout;

    let cases: &[(&[&str], &str)] = &[
        (&["service", "create", "--bogus", "x"], "--bogus"),
        (&["service", "scale", "ok=abc"], "invalid scale specifier"),
        (&["service", "scale", "ok"], "invalid scale specifier"),
        (&["service", "scale", "nosuch=2"], "no such service: nosuch"),
        (&["service", "rm", "nosuch"], "no such service: nosuch"),
        (&["service", "ps", "nosuch"], "no such service: nosuch"),
        (&["service", "create", "-d", "--name", "ok", "shoal.test/busybox"], "already exists"),
        (&["service", "create", "-d", "--name", "bad.name", "shoal.test/busybox"], "invalid service name"),
        (&["service", "create", "-d", "--name", "img", "Not/A:Valid:Ref"], "invalid reference"),
        (&["service", "create", "-d", "--name", "img", "127.0.0.1:1/missing:1"], "cannot be pulled"),
        (&["service", "create", "-d", "--name", "c", "--constraint", "node.role=manager", "shoal.test/busybox"], "invalid constraint"),
        (&["swarm", "init"], "already part of a swarm"),
    ];
    for (args, needle) in cases {
        let r = n.shoal(args);
        assert_ne!(r.code, 0, "{args:?} should fail");
        assert!(r.stderr.contains(needle), "{args:?}: stderr {:?} lacks {needle:?}", r.stderr);
        assert!(r.stderr.trim().lines().count() <= 3, "{args:?}: short error: {}", r.stderr);
    }
    let ls = n.shoal(&["service", "ls", "-q"]).ok().stdout;
    assert_eq!(ls.lines().count(), 1, "no service was added: {ls}");
    assert_eq!(n.shoal(&["service", "inspect", "ok"]).ok().stdout, state_before, "nothing changed");
    assert!(n.daemon_log().lines().all(|l| !l.contains("panicked")));
}

#[test]
fn global_services_run_one_task_per_node() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let r = n.shoal(&["service", "create", "--name", "agent", "--mode", "global", "shoal.test/busybox", "sleep", "1000"]).ok();
    assert!(r.stdout.contains("overall progress: 1 out of 1 tasks"), "{}", r.stdout);
    let node_id = n.shoal(&["node", "ls", "-q"]).ok().stdout.trim().to_string();
    assert!(r.stdout.contains(&format!("{}: running", &node_id[..12])), "progress is keyed by node: {}", r.stdout);
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" agent ") && l.contains("global") && l.contains("1/1")), "{ls}");
    let rows = n.ps_json("agent");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Name"], format!("agent.{node_id}"));
    assert_eq!(n.running(), 1);
    let r = n.shoal(&["service", "scale", "agent=3"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("scale can only be used with replicated or replicated-job mode"), "{}", r.stderr);
    let r = n.shoal(&["service", "create", "--mode", "global", "--replicas", "2", "shoal.test/busybox"]);
    assert!(r.stderr.contains("--replicas can only be used with replicated or replicated-job mode"), "{}", r.stderr);
}

/// Docker's `--filter` on the list commands, and `node ps`.
#[test]
fn filters_and_node_ps() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let img = "shoal.test/busybox";
    n.shoal(&["service", "create", "--name", "web", "--replicas", "2", "--label", "tier=front", img, "sleep", "1000"]).ok();
    n.shoal(&["service", "create", "--name", "agent", "--mode", "global", img, "sleep", "1000"]).ok();
    let lines = |args: &[&str]| -> Vec<String> { n.shoal(args).ok().stdout.lines().map(str::to_string).collect() };
    let names = |args: &[&str]| -> Vec<String> {
        lines(args).iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&["service", "ls", "--format", "json", "-f", "name=we"]), ["web"]);
    assert_eq!(names(&["service", "ls", "--format", "json", "--filter", "mode=global"]), ["agent"]);
    assert_eq!(names(&["service", "ls", "--format", "json", "-f", "label=tier=front"]), ["web"]);
    assert_eq!(names(&["service", "ls", "--format", "json", "-f", "label=tier", "-f", "name=agent"]), Vec::<String>::new(), "keys AND");
    assert_eq!(names(&["service", "ls", "--format", "json", "-f", "name=web", "-f", "name=agent"]), ["agent", "web"], "values OR");
    let id = n.shoal(&["service", "ls", "-q", "-f", "name=web"]).ok().stdout.trim().to_string();
    assert_eq!(lines(&["service", "ls", "-q", "-f", &format!("id={}", &id[..5])]), [id]);
    let r = n.shoal(&["service", "ls", "-f", "mode=globl"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("invalid filter 'mode=globl': use replicated, global, replicated-job or global-job"), "{}", r.stderr);
    let r = n.shoal(&["service", "ls", "-f", "color=red"]);
    assert!(r.stderr.contains("invalid filter 'color': use id, name, label or mode"), "{}", r.stderr);

    // Tasks: by name, and by desired state after a scale-down.
    let running = |args: &[&str]| lines(args).len();
    wait_for("3 tasks running", WAIT, || (running(&["node", "ps", "-q", "-f", "desired-state=running"]) == 3).then_some(()));
    assert_eq!(names(&["node", "ps", "--format", "json", "-f", "name=web"]), ["web.1", "web.2"]);
    assert_eq!(names(&["node", "ps", "self", "--format", "json", "-f", "name=agent"]).len(), 1);
    let hostname = n.shoal(&["node", "inspect", "self", "--format", "json"]).ok().stdout;
    let hostname =
        serde_json::from_str::<serde_json::Value>(&hostname).unwrap()[0]["Description"]["Hostname"].as_str().unwrap().to_string();
    assert_eq!(running(&["node", "ps", "-q", &hostname]), 3);
    assert_eq!(running(&["service", "ps", "-q", "-f", &format!("node={hostname}"), "web"]), 2);
    n.shoal(&["service", "scale", "-d", "web=1"]).ok();
    wait_for("web.2 to be desired shutdown", WAIT, || {
        (names(&["service", "ps", "--format", "json", "-f", "desired-state=shutdown", "web"]) == ["web.2"]).then_some(())
    });
    assert_eq!(names(&["service", "ps", "--format", "json", "-f", "desired-state=running", "web"]), ["web.1"]);
    let r = n.shoal(&["node", "ps", "nosuchnode"]);
    assert!(r.code != 0 && r.stderr.contains("node nosuchnode not found"), "{}", r.stderr);

    // Nodes and secrets.
    assert_eq!(running(&["node", "ls", "-q", "-f", "role=manager"]), 1);
    assert_eq!(running(&["node", "ls", "-q", "-f", "role=worker"]), 0);
    n.shoal_with(&["secret", "create", "-l", "env=prod", "db-pass", "-"], &[], "s3cret").ok();
    n.shoal_with(&["secret", "create", "api-key", "-"], &[], "k").ok();
    assert_eq!(running(&["secret", "ls", "-q", "-f", "label=env=prod"]), 1);
    assert_eq!(running(&["secret", "ls", "-q", "-f", "name=api"]), 1);

    // `shoal inspect` finds any kind of object by name or id.
    let inspect = |args: &[&str]| -> (i32, serde_json::Value, String) {
        let r = n.shoal(args);
        (r.code, serde_json::from_str(&r.stdout).unwrap_or_default(), r.stderr)
    };
    let (code, v, _) = inspect(&["inspect", "web", "self", "db-pass", "ingress"]);
    assert_eq!(code, 0);
    assert_eq!(v[0]["Spec"]["Name"], "web");
    assert_eq!(v[1]["Description"]["Hostname"], hostname.as_str());
    assert_eq!(v[2]["Spec"]["Name"], "db-pass");
    assert!(v[2]["Spec"].get("Data").is_none(), "secret data is never shown: {}", v[2]);
    let task_id = lines(&["service", "ps", "-q", "--no-trunc", "-f", "desired-state=running", "web"]).remove(0);
    let (_, v, _) = inspect(&["inspect", "--type", "task", &task_id[..8]]);
    assert_eq!((v[0]["ID"].as_str(), v[0]["DesiredState"].as_str()), (Some(task_id.as_str()), Some("running")));
    let (code, v, err) = inspect(&["inspect", "nosuch", "web"]);
    assert_eq!(code, 1);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "what was found is still printed");
    assert!(err.contains("Error: No such object: nosuch"), "{err}");
    // Go templates, as Docker's --format (issue #18).
    let out = |args: &[&str]| n.shoal(args).ok().stdout;
    assert_eq!(out(&["service", "ls", "--format", "{{.Name}}: {{.Mode}}"]), "agent: global\nweb: replicated\n");
    let table = out(&["service", "ls", "--format", "table {{.Name}}\\t{{.Replicas}}"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, [vec!["NAME", "REPLICAS"], vec!["agent", "1/1"], vec!["web", "1/1"]], "{table}");
    assert_eq!(out(&["service", "inspect", "-f", "{{.Spec.Name}} {{index .Spec.Labels \"tier\"}}", "web"]), "web front\n");
    assert_eq!(out(&["inspect", "--format", "{{json .Spec.Labels}}", "web"]), "{\"tier\":\"front\"}\n");
    assert_eq!(out(&["node", "inspect", "self", "--format", "{{.Status.State}}"]), "ready\n");
    assert_eq!(out(&["node", "ls", "--format", "{{.Hostname}} {{.Self}}"]), format!("{hostname} true\n"));
    assert_eq!(out(&["service", "ps", "web", "-f", "desired-state=running", "--format", "{{.Name}} {{.DesiredState}}"]), "web.1 Running\n");
    assert_eq!(out(&["network", "ls", "-f", "type=builtin", "--format", "{{.Name}}"]), "host\ningress\nnone\n");
    assert_eq!(
        out(&["secret", "ls", "--format", "{{.Name}}{{if .Labels}} {{json .Labels}}{{end}}"]),
        "api-key\ndb-pass {\"env\":\"prod\"}\n"
    );
    let r = n.shoal(&["service", "ls", "--format", "{{.Name"]);
    assert!(r.code != 0 && r.stderr.contains("template parsing error: template: :1: unclosed action"), "{}", r.stderr);
    let r = n.shoal(&["service", "ls", "--format", "{{.Nmae}}"]);
    assert!(r.code != 0 && r.stderr.contains("Nmae"), "{}", r.stderr);

    let (code, _, err) = inspect(&["inspect", "--type", "volume", "web"]);
    assert!(code != 0 && err.contains("unknown --type \"volume\": use service, node, network, task, secret, config"), "{err}");
}

/// Swarm's service templates in --hostname, --env and --mount sources,
/// expanded per task by the worker.
#[test]
fn service_templates_expand_per_task() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let args = [
        "service",
        "create",
        "--name",
        "tagged",
        "--replicas",
        "2",
        "--hostname",
        "{{.Node.Hostname}}-{{.Task.Slot}}",
        "--env",
        "DEVICE={{.Node.Hostname}}/{{.Service.Name}}",
        "--mount",
        "type=volume,source=data-{{.Task.Slot}},target=/data",
        "shoal.test/busybox",
        "sh",
        "-c",
        "echo host=$(hostname) device=$DEVICE; touch /data/mine; sleep 1000",
    ];
    n.shoal(&args).ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let logs = wait_for("both tasks' output", WAIT, || {
        let l = n.shoal(&["service", "logs", "tagged"]).stdout;
        (l.matches("host=").count() == 2).then_some(l)
    });
    for slot in [1, 2] {
        assert!(logs.contains(&format!("host={host}-{slot} device={host}/tagged")), "{logs}");
        assert!(n.data_dir().join(format!("volumes/data-{slot}/_data/mine")).exists(), "slot {slot}'s own volume");
    }
    // The volumes, as `volume` shows and removes them.
    let ls = n.shoal(&["volume", "ls"]).ok().stdout;
    assert_eq!(
        ls.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect::<Vec<_>>(),
        [vec!["DRIVER", "VOLUME", "NAME"], vec!["local", "data-1"], vec!["local", "data-2"]]
    );
    let v: serde_json::Value = serde_json::from_str(&n.shoal(&["volume", "inspect", "data-1"]).ok().stdout).unwrap();
    assert_eq!(v[0]["Mountpoint"], n.data_dir().join("volumes/data-1/_data").display().to_string());
    let r = n.shoal(&["volume", "rm", "data-1"]);
    assert!(r.code != 0 && r.stderr.contains("remove data-1: volume is in use - [tagged.1]"), "{}", r.stderr);
    assert_eq!(n.shoal(&["volume", "ls", "-q", "-f", "dangling=true"]).ok().stdout, "");
    n.shoal(&["service", "rm", "tagged"]).ok();
    wait_for("the tasks to be gone", WAIT, || {
        (n.shoal(&["volume", "ls", "-q", "-f", "dangling=true"]).ok().stdout.lines().count() == 2).then_some(())
    });
    let pruned = n.shoal(&["volume", "prune", "-f"]).ok().stdout;
    assert!(pruned.starts_with("Deleted Volumes:\ndata-1\ndata-2\n\nTotal reclaimed space: 0B"), "{pruned}");
    assert!(!n.data_dir().join("volumes/data-1").exists());
    let r = n.shoal(&["volume", "inspect", "data-1"]);
    assert!(r.code != 0 && r.stderr.contains("no such volume: data-1"), "{}", r.stderr);

    // A template naming no field fails the task with the reason, not silently.
    n.shoal(&["service", "create", "-d", "--name", "badtpl", "--hostname", "{{.Node.Nope}}", "shoal.test/busybox", "sleep", "9"]).ok();
    let err = wait_for("the task to fail", WAIT, || {
        n.ps_json("badtpl").iter().find_map(|t| t["Error"].as_str().filter(|e| !e.is_empty()).map(str::to_string))
    });
    assert!(err.contains("--hostname") && err.contains("Nope"), "{err}");
}

/// `--user NAME` is resolved from the image's own /etc/passwd and
/// /etc/group at task start, as Docker does; an unknown name fails the task
/// with Docker's error instead of starting it as root.
#[test]
fn user_names_resolve_from_the_image() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    n.shoal(&["service", "create", "--name", "who", "--user", "nobody", "shoal.test/busybox", "sh", "-c", "id; sleep 1000"]).ok();
    let logs = wait_for("the task's id output", WAIT, || {
        let l = n.shoal(&["service", "logs", "who"]).stdout;
        l.contains("uid=").then_some(l)
    });
    assert!(logs.contains("uid=65534(nobody) gid=65534(nogroup)"), "{logs}");
    n.shoal(&["service", "update", "-d", "--user", "root:nogroup", "who"]).ok();
    wait_for("the task to run as root:nogroup", WAIT, || {
        n.shoal(&["service", "logs", "who"]).stdout.contains("uid=0(root) gid=65534(nogroup)").then_some(())
    });

    n.shoal(&["service", "create", "-d", "--name", "nosuch", "--user", "nosuch", "shoal.test/busybox", "sleep", "1000"]).ok();
    let err = wait_for("the task to fail with the lookup error", WAIT, || {
        n.ps_json("nosuch").iter().find_map(|t| t["Error"].as_str().filter(|e| !e.is_empty()).map(str::to_string))
    });
    assert!(err.contains("unable to find user nosuch: no matching entries in passwd file"), "{err}");
    assert!(n.ps_json("nosuch").iter().all(|t| !t["CurrentState"].as_str().unwrap_or("").starts_with("Running")));
}

/// Ctrl-C during `service create`'s progress leaves the service to converge
/// in the background, says so as Docker does, and exits 0.
#[test]
fn ctrl_c_during_progress_keeps_the_operation_and_exits_zero() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    // A constraint no node meets: the task stays pending, progress never ends.
    let child = std::process::Command::new(shoal_tests::shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", n.socket().display()))
        .args(["service", "create", "--name", "waits", "--constraint", "node.labels.nowhere==1"])
        .args(["shoal.test/busybox", "sleep", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shoal");
    wait_for("the task to be pending", WAIT, || {
        let r = n.shoal(&["service", "ps", "--format", "json", "waits"]);
        (r.code == 0 && r.stdout.contains("\"CurrentState\":\"Pending")).then_some(())
    });
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let t = Instant::now();
    let out = child.wait_with_output().expect("wait for shoal");
    assert!(t.elapsed() < WAIT, "the CLI stopped watching");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("overall progress: 0 out of 1 tasks"), "{stdout}");
    assert!(stdout.ends_with("Operation continuing in background.\nUse `shoal service ps waits` to check progress.\n"), "{stdout}");
    // The service is still there and still wants its task.
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" waits ") && l.contains("0/1")), "{ls}");
}

/// The node probes its kernel at start and reports what it found: `node
/// inspect` lists its network drivers in Docker's `Engine.Plugins` shape,
/// `shoal info` lists them too, and a missing piece comes with the probe's
/// reason (`Engine.Warnings`, `WARNING:` lines) instead of silently.
#[test]
fn the_node_reports_its_network_drivers() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.start_daemon();
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    let id = n.shoal(&["node", "ls", "-q"]).ok().stdout.trim().to_string();
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["node", "inspect", &id]).ok().stdout).expect("node inspect json");
    let engine = &js[0]["Description"]["Engine"];
    let plugins = engine["Plugins"].as_array().expect("Engine.Plugins is a list");
    let networks: Vec<&str> = plugins.iter().filter(|p| p["Type"] == "Network").filter_map(|p| p["Name"].as_str()).collect();
    assert!(networks.contains(&"host") && networks.contains(&"null"), "{engine}");
    // Overlay works exactly when the probe found nothing missing; otherwise it says why.
    // Networking's warnings (a small disk or little memory add their own: `disk low:`, `memory low:`).
    let resource = |w: &serde_json::Value| w.as_str().is_some_and(|w| w.starts_with("disk ") || w.starts_with("memory low:"));
    let warnings = engine["Warnings"].as_array().map(|ws| ws.iter().filter(|w| !resource(w)).count()).unwrap_or(0);
    let resource_warnings = engine["Warnings"].as_array().map(|ws| ws.iter().filter(|w| resource(w)).count()).unwrap_or(0);
    assert_eq!(networks.contains(&"overlay"), warnings == 0, "{engine}");
    if networks.contains(&"overlay") {
        assert!(networks.contains(&"bridge"), "overlay needs what a bridge needs: {engine}");
    }
    let info = n.shoal(&["info"]).ok();
    assert!(info.stdout.contains(&format!("Plugins:\n Network: {}\n", networks.join(" "))), "{}", info.stdout);
    assert_eq!(info.stderr.matches("WARNING: ").count(), warnings + resource_warnings, "{}", info.stderr);
    // A restart probes again and reports the same.
    n.terminate_daemon();
    n.start_daemon();
    let again: serde_json::Value = serde_json::from_str(&n.shoal(&["node", "inspect", &id]).ok().stdout).expect("node inspect json");
    assert_eq!(again[0]["Description"]["Engine"]["Plugins"], engine["Plugins"]);
}
