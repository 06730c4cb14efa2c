//! Scheduling across real nodes (issue #5): the seed's `nginx-swarm`
//! scenario (constraints, max replicas per node, a volume, scale past the
//! limit, manual rollback), drain/pause/active and node labels, global
//! services following nodes as they join, drain and leave, and multi-arch
//! placement. Each node is a real `shoal daemon` in its own network
//! namespace with its own containerd (see `shoal_tests::cluster`); where a
//! task runs is read from each node's containerd (container id = task id),
//! not only from the manager's view. Every wait is bounded.
//!
//! Two facts of this harness shape the commands: every namespace shares the
//! host's UTS namespace, so `service ps` shows the same hostname for every
//! node (tests match tasks to nodes by id instead); and containers use the
//! host network, which for every node's containerd is the root namespace of
//! this one machine, so several `httpd -p 80` tasks would fight over port 80.
//! Tasks therefore run `sleep` (after writing a file where a test needs to
//! see the container do something).

use serde_json::Value;
use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for, wait_for_seen, Registry};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The test image every node loads (`Cluster::init`).
const IMAGE: &str = "shoal.test/busybox:latest";
/// Bound on a placement change showing up in containerd (start, stop, move).
const CONVERGE: Duration = Duration::from_secs(40);

/// `service ps --no-trunc --format json` rows on node `on` (empty when it does not answer).
fn ps(c: &Cluster, on: usize, service: &str) -> Vec<Value> {
    let r = c.nodes[on].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
    if r.code != 0 {
        return Vec::new();
    }
    r.stdout.lines().map(|l| serde_json::from_str(l).expect("ps json line")).collect()
}

/// Ids of the service's tasks desired and observed running, per the manager.
fn running_ids(c: &Cluster, on: usize, service: &str) -> BTreeSet<String> {
    ps(c, on, service)
        .iter()
        .filter(|t| t["DesiredState"] == "Running" && t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")))
        .map(|t| t["ID"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// For each node, the service's tasks running in that node's containerd
/// (nodes without a daemon count as running nothing).
fn per_node(c: &Cluster, on: usize, service: &str) -> Vec<Vec<String>> {
    let mine: BTreeSet<String> = ps(c, on, service).iter().map(|t| t["ID"].as_str().unwrap_or_default().to_string()).collect();
    c.nodes
        .iter()
        .map(|n| if n.is_started() { n.running_ids().into_iter().filter(|id| mine.contains(id)).collect() } else { Vec::new() })
        .collect()
}

fn counts(p: &[Vec<String>]) -> Vec<usize> {
    p.iter().map(Vec::len).collect()
}

/// Waits until each node's containerd runs `expect[i]` of the service's
/// tasks and the manager's `service ps` agrees (same ids, all running);
/// returns the placement.
fn wait_counts(c: &Cluster, on: usize, service: &str, expect: &[usize]) -> Vec<Vec<String>> {
    let what = format!("service {service} to run {expect:?} tasks per node (containerd and `service ps` agreeing)");
    wait_for_seen(&what, CONVERGE, || {
        let p = per_node(c, on, service);
        let in_containerd: BTreeSet<String> = p.iter().flatten().cloned().collect();
        let in_ps = running_ids(c, on, service);
        if counts(&p) == expect && in_ps == in_containerd {
            return Ok(p);
        }
        Err(format!("per node {:?}, {} running in containerd, {} running per `service ps`", counts(&p), in_containerd.len(), in_ps.len()))
    })
}

fn inspect(c: &Cluster, on: usize, service: &str) -> Value {
    let v: Value = serde_json::from_str(&c.nodes[on].shoal(&["service", "inspect", service]).ok().stdout).expect("inspect json");
    v[0].clone()
}

/// The REPLICAS column of `service ls` for one service.
fn replicas(c: &Cluster, on: usize, service: &str) -> String {
    let out = c.nodes[on].shoal(&["service", "ls", "--format", "json"]).ok().stdout;
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("ls json line"))
        .find(|v| v["Name"] == service)
        .and_then(|v| v["Replicas"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Output lines with the trailing blanks of progress frames removed.
fn lines(out: &str) -> Vec<String> {
    out.lines().map(|l| l.trim_end().to_string()).collect()
}

/// One `N/TOTAL: running [====>]` progress line, as Swarm draws it.
fn running_line(n: usize, total: usize) -> String {
    format!("{n}/{total}: running   [{}>]", "=".repeat(50))
}

/// The seed's Swarm session, on a manager and three workers.
///
/// Topology: `--constraint node.role!=manager` keeps the manager out and
/// `--replicas-max-per-node 2` allows 2 tasks per worker, so Swarm's numbers
/// of the seed (6 tasks converge, the 7th stays pending for the max-replicas
/// limit) need exactly three workers. (The seed's own `service ps` shows
/// tasks on its manager despite the constraint, which Swarm would not do
/// with that spec; with the constraint, the pending task's explanation also
/// counts the manager: swarmkit lists the filter that rejected the most
/// nodes first, so `max replicas per node limit exceed; scheduling
/// constraints not satisfied on 1 node`.)
#[test]
fn nginx_swarm_from_the_seed_on_one_manager_and_three_workers() {
    let Some(mut c) = Cluster::new(4) else { return };
    c.init(1, 3);
    // The seed's network first: an unknown one is refused, as Docker's.
    let net_id = c.nodes[0]
        .shoal(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--subnet=10.15.0.0/16",
            "--gateway=10.15.0.2",
            "--attachable",
            "my-swarm-net",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let t0 = Instant::now();
    // `hostname` is the task id's first 12 characters: each task leaves a
    // file named after itself in the volume.
    let out = c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "--name",
            "nginx-swarm",
            "--constraint",
            "node.role!=manager",
            "--label",
            "testGroup=a1",
            "--mount",
            "type=volume,source=nginx-vol-swarm,destination=/etc/nginx",
            "--network",
            "my-swarm-net",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "2",
            "--restart-max-attempts",
            "3",
            "--publish",
            "8080:80",
            "--update-parallelism",
            "2",
            IMAGE,
            "sh",
            "-c",
            "hostname > /etc/nginx/$(hostname); exec sleep 3600",
        ])
        .ok()
        .stdout;
    let l = lines(&out);
    assert!(l.contains(&"overall progress: 3 out of 3 tasks".to_string()), "{out}");
    assert_eq!(l.last().map(String::as_str), Some("verify: Service converged"), "{out}");
    let placed = wait_counts(&c, 0, "nginx-swarm", &[0, 1, 1, 1]);
    eprintln!("created and converged in {} ms", t0.elapsed().as_millis());

    // The volume lives under each worker's data dir and the task wrote into it.
    for (i, ids) in placed.iter().enumerate() {
        let dir = c.nodes[i].data_dir().join("volumes/nginx-vol-swarm/_data");
        if i == 0 {
            assert!(!dir.exists(), "no task ran on the manager, so it has no volume");
            continue;
        }
        for id in ids {
            let short = &id[..12];
            let what = format!("task {short} to write into the volume on node {i}");
            let text = wait_for(&what, CONVERGE, || std::fs::read_to_string(dir.join(short)).ok());
            assert_eq!(text.trim(), short);
        }
    }

    // inspect: everything the seed's command set, and the note on networking.
    let s = inspect(&c, 0, "nginx-swarm");
    let spec = &s["Spec"];
    assert_eq!(spec["Labels"]["testGroup"], "a1", "{s}");
    let tt = &spec["TaskTemplate"];
    assert_eq!(tt["Placement"]["Constraints"], serde_json::json!(["node.role!=manager"]), "{s}");
    assert_eq!(tt["Placement"]["MaxReplicas"], 2, "{s}");
    assert_eq!(tt["RestartPolicy"]["MaxAttempts"], 3, "{s}");
    assert_eq!(spec["UpdateConfig"]["Parallelism"], 2, "{s}");
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 3, "{s}");
    assert_eq!(
        tt["ContainerSpec"]["Mounts"],
        serde_json::json!([{"Type": "volume", "Source": "nginx-vol-swarm", "Target": "/etc/nginx"}]),
        "{s}"
    );
    assert_eq!(tt["Networks"], serde_json::json!([{"Target": net_id}]), "{s}");
    assert_eq!(spec["EndpointSpec"]["Ports"][0]["PublishedPort"], 8080, "{s}");
    assert_eq!(spec["EndpointSpec"]["Ports"][0]["TargetPort"], 80, "{s}");
    // Networks and published ports are in effect: nothing to note.
    assert!(s["ShoalNotes"].is_null(), "{s}");

    // Scale to 6: two per worker, none on the manager.
    let out = c.nodes[0].shoal(&["service", "scale", "nginx-swarm=6"]).ok().stdout;
    let l = lines(&out);
    assert_eq!(l.first().map(String::as_str), Some("nginx-swarm scaled to 6"), "{out}");
    assert!(l.contains(&"overall progress: 6 out of 6 tasks".to_string()), "{out}");
    for n in 1..=6 {
        assert!(l.contains(&running_line(n, 6)), "{out}");
    }
    assert_eq!(l.last().map(String::as_str), Some("verify: Service converged"), "{out}");
    let six = wait_counts(&c, 0, "nginx-swarm", &[0, 2, 2, 2]);
    assert!(placed.iter().flatten().all(|id| six.iter().flatten().any(|x| x == id)), "scaling up keeps the first three tasks");

    // Scale to 7: no node may take the 7th; the CLI shows why and gives up at --timeout.
    let why = "no suitable node (max replicas per node limit exceed; scheduling constraints not satisfied on 1 node)";
    let t1 = Instant::now();
    let r = c.nodes[0].shoal(&["service", "scale", "--timeout", "5s", "nginx-swarm=7"]);
    let took = t1.elapsed();
    assert_eq!(r.code, 1, "a scale that cannot converge fails at its timeout:\n{}\n{}", r.stdout, r.stderr);
    assert!(took < Duration::from_secs(15), "`service scale --timeout 5s` took {took:?}");
    let l = lines(&r.stdout);
    assert_eq!(l.first().map(String::as_str), Some("nginx-swarm scaled to 7"), "{}", r.stdout);
    assert!(l.contains(&"overall progress: 6 out of 7 tasks".to_string()), "{}", r.stdout);
    // The progress line cuts the error at 75 characters, as Swarm's `truncError`.
    let shown = format!("{}…", why.chars().take(74).collect::<String>());
    assert!(l.contains(&format!("7/7: {shown}")), "{}", r.stdout);
    for n in 1..=6 {
        assert!(l.contains(&running_line(n, 7)), "{}", r.stdout);
    }
    assert!(r.stderr.contains("service nginx-swarm has not converged after 5 s; it keeps converging in the background"), "{}", r.stderr);
    let rows = ps(&c, 0, "nginx-swarm");
    let pending: Vec<&Value> = rows.iter().filter(|t| t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Pending"))).collect();
    assert_eq!(pending.len(), 1, "{rows:?}");
    assert_eq!(pending[0]["Name"], "nginx-swarm.7");
    assert_eq!(pending[0]["DesiredState"], "Running");
    assert_eq!(pending[0]["Node"], "");
    assert_eq!(pending[0]["Error"], why);
    let table = c.nodes[0].shoal(&["service", "ps", "nginx-swarm"]).ok().stdout;
    assert!(table.contains("\"no suitable node (max replica…\""), "the table truncates the error as Swarm's:\n{table}");
    assert_eq!(counts(&per_node(&c, 0, "nginx-swarm")), [0, 2, 2, 2], "the six keep running where they are");

    // Rollback: the previous spec had 6 replicas. No task spec changed, so
    // the same six containers run on and the pending seventh goes away.
    let out = c.nodes[0].shoal(&["service", "update", "--rollback", "nginx-swarm"]).ok().stdout;
    let mut want = vec![
        "nginx-swarm".to_string(),
        "rollback: manually requested rollback".to_string(),
        "overall progress: rolling back update: 6 out of 6 tasks".to_string(),
    ];
    want.extend((1..=6).map(|n| running_line(n, 6)));
    want.push("verify: Service converged".to_string());
    assert_eq!(lines(&out), want, "Swarm's rollback output:\n{out}");
    let after = wait_counts(&c, 0, "nginx-swarm", &[0, 2, 2, 2]);
    assert_eq!(after, six, "the rollback restarted nothing");
    wait_for("the pending 7th task to be gone from `service ps`", CONVERGE, || {
        ps(&c, 0, "nginx-swarm").iter().all(|t| t["Name"] != "nginx-swarm.7").then_some(())
    });
    let s = inspect(&c, 0, "nginx-swarm");
    assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 6, "{s}");
    assert_eq!(s["UpdateStatus"]["State"], "rollback_completed", "{s}");
    assert_eq!(replicas(&c, 0, "nginx-swarm"), "6/6 (max 2 per node)", "Docker names the per-node limit");
    eprintln!("whole scenario took {} ms after init", t0.elapsed().as_millis());
}

/// `node update ARGS NODE` on node 0 for node `i` (by its node id).
fn node_update(c: &Cluster, i: usize, args: &[&str]) {
    let id = c.node_id(i).expect("node id");
    let mut all = vec!["node", "update"];
    all.extend_from_slice(args);
    all.push(&id);
    let out = c.nodes[0].shoal(&all).ok().stdout;
    assert_eq!(out.trim(), id, "node update prints the node");
}

/// Drain moves a worker's tasks to the other workers (they really stop in
/// its containerd and start in theirs); pause keeps the running tasks but
/// takes no new ones; active takes new ones again. Node labels steer a
/// constrained service to the labelled node only, and when the label goes
/// its tasks stop there (the constraint enforcer) and wait until another
/// node has the label.
#[test]
fn drain_pause_active_and_node_labels_across_workers() {
    let Some(mut c) = Cluster::new(4) else { return };
    c.init(1, 3);
    // `sleep` as pid 1 ignores SIGTERM: a short grace keeps drains quick.
    let create = |name: &str, replicas: &str, constraint: &str| {
        let args = [
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            replicas,
            "--constraint",
            constraint,
            "--stop-grace-period",
            "300ms",
            IMAGE,
            "sleep",
            "3600",
        ];
        let out = c.nodes[0].shoal(&args).ok().stdout;
        assert!(out.contains("verify: Service converged"), "{out}");
    };
    create("web", "6", "node.role==worker");
    let first = wait_counts(&c, 0, "web", &[0, 2, 2, 2]);

    // Drain worker 1: its two tasks stop there and run on workers 2 and 3.
    let t0 = Instant::now();
    node_update(&c, 1, &["--availability", "drain"]);
    let drained = wait_counts(&c, 0, "web", &[0, 0, 3, 3]);
    eprintln!("drain moved 2 tasks in {} ms", t0.elapsed().as_millis());
    for id in &first[1] {
        assert!(!drained.iter().flatten().any(|x| x == id), "a drained task does not run anywhere: {id}");
    }
    assert_eq!(c.nodes[1].running_tasks(), 0, "nothing runs in the drained worker's containerd");
    for k in [2, 3] {
        assert!(first[k].iter().all(|id| drained[k].contains(id)), "the other workers keep their own tasks");
    }
    let rows = ps(&c, 0, "web");
    for id in &first[1] {
        let row = rows.iter().find(|t| t["ID"] == id.as_str()).expect("drained task stays in history");
        assert_eq!(row["DesiredState"], "Shutdown", "{row}");
        assert!(row["CurrentState"].as_str().is_some_and(|s| s.starts_with("Shutdown")), "{row}");
    }
    let ls = c.nodes[0].shoal(&["node", "ls"]).ok().stdout;
    assert_eq!(ls.matches("Drain").count(), 1, "{ls}");

    // Pause worker 2: it keeps its three; a scale-up lands on worker 3 only.
    node_update(&c, 2, &["--availability", "pause"]);
    c.nodes[0].shoal(&["service", "scale", "web=9"]).ok();
    let paused = wait_counts(&c, 0, "web", &[0, 0, 3, 6]);
    assert_eq!(paused[2], drained[2], "a paused node keeps running its tasks");

    // Both active again: the next scale-up goes to the emptiest (worker 1).
    node_update(&c, 1, &["--availability", "active"]);
    node_update(&c, 2, &["--availability", "active"]);
    c.nodes[0].shoal(&["service", "scale", "web=12"]).ok();
    let active = wait_counts(&c, 0, "web", &[0, 3, 3, 6]);
    assert_eq!(active[2], drained[2], "reactivating moves nothing");
    assert_eq!(active[3], paused[3]);

    // Labels: only worker 3 has zone=x, so a zone==x service runs only there.
    node_update(&c, 3, &["--label-add", "zone=x"]);
    let id3 = c.node_id(3).expect("node id");
    let n: Value = serde_json::from_str(&c.nodes[0].shoal(&["node", "inspect", &id3]).ok().stdout).expect("node inspect json");
    assert_eq!(n[0]["Spec"]["Labels"]["zone"], "x", "{n}");
    create("zoned", "3", "node.labels.zone==x");
    let zoned = wait_counts(&c, 0, "zoned", &[0, 0, 0, 3]);
    // A label nobody has leaves tasks pending, saying so.
    c.nodes[0].shoal(&["service", "create", "-d", "--name", "nowhere", "--constraint", "node.labels.zone==y", IMAGE, "sleep", "3600"]).ok();
    let err = wait_for("the unplaceable task to be pending with an explanation", CONVERGE, || {
        ps(&c, 0, "nowhere").first().and_then(|t| t["Error"].as_str().filter(|e| !e.is_empty()).map(str::to_string))
    });
    assert_eq!(err, "no suitable node (scheduling constraints not satisfied on 4 nodes)");

    // The label goes: the zoned tasks stop in worker 3's containerd, saying
    // why, and their replacements wait; web's tasks there still match and stay.
    let web = per_node(&c, 0, "web");
    let t0 = Instant::now();
    node_update(&c, 3, &["--label-rm", "zone"]);
    wait_counts(&c, 0, "zoned", &[0, 0, 0, 0]);
    eprintln!("removing the label stopped 3 tasks in {} ms", t0.elapsed().as_millis());
    let on3 = c.nodes[3].running_ids();
    assert!(zoned[3].iter().all(|id| !on3.contains(id)), "the zoned tasks stopped in worker 3's containerd: {on3:?}");
    assert_eq!(per_node(&c, 0, "web"), web, "tasks whose node still matches are untouched");
    let waiting = "no suitable node (scheduling constraints not satisfied on 4 nodes)";
    let rows = wait_for_seen("the zoned replacements to be pending with an explanation", CONVERGE, || {
        let rows = ps(&c, 0, "zoned");
        let pending = rows.iter().filter(|t| t["DesiredState"] == "Running" && t["Error"] == waiting).count();
        if pending == 3 {
            return Ok(rows);
        }
        Err(format!("{pending} of 3 pending: {rows:?}"))
    });
    for id in &zoned[3] {
        let row = rows.iter().find(|t| t["ID"] == id.as_str()).expect("the shut-down task stays in history");
        assert_eq!(row["DesiredState"], "Shutdown", "{row}");
        assert!(row["CurrentState"].as_str().is_some_and(|s| s.starts_with("Shutdown")), "{row}");
        assert_eq!(row["Error"], "assigned node no longer meets constraints", "{row}");
    }
    // The label on worker 1: the replacements run there.
    let t0 = Instant::now();
    node_update(&c, 1, &["--label-add", "zone=x"]);
    let moved = wait_counts(&c, 0, "zoned", &[0, 3, 0, 0]);
    eprintln!("labelling worker 1 ran the 3 replacements in {} ms", t0.elapsed().as_millis());
    assert!(moved[1].iter().all(|id| !zoned[3].contains(id)), "new tasks, in the same slots");
    let rows = ps(&c, 0, "zoned");
    let slot = |id: &String| rows.iter().find(|t| t["ID"] == id.as_str()).and_then(|t| t["Name"].as_str()).unwrap_or_default().to_string();
    let old: BTreeSet<String> = zoned[3].iter().map(slot).collect();
    let new: BTreeSet<String> = moved[1].iter().map(slot).collect();
    assert_eq!(new, old, "the replacements take the same slots");
    assert_eq!(new.len(), 3, "{new:?}");
}

/// A global service runs one task on every eligible node: it skips a node
/// its constraint excludes, reaches a worker that joins after it was
/// created, and leaves a node that is drained or leaves the swarm (the
/// task's container stops there). `service ls` counts one per such node.
#[test]
fn global_service_follows_nodes_that_join_drain_and_leave() {
    let Some(mut c) = Cluster::new(4) else { return };
    c.init(1, 2);
    node_update(&c, 2, &["--label-add", "agent=off"]);
    let out = c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "--name",
            "agent",
            "--mode",
            "global",
            "--constraint",
            "node.labels.agent!=off",
            "--stop-grace-period",
            "300ms",
            IMAGE,
            "sleep",
            "3600",
        ])
        .ok()
        .stdout;
    assert!(lines(&out).contains(&"overall progress: 2 out of 2 tasks".to_string()), "{out}");
    wait_counts(&c, 0, "agent", &[1, 1, 0, 0]);
    assert_eq!(replicas(&c, 0, "agent"), "2/2");
    let ls = c.nodes[0].shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" agent ") && l.contains(" global ") && l.contains(" 2/2 ")), "{ls}");

    // A worker that joins later gets its task (the image is loaded first, as
    // a real node would have it or pull it).
    c.nodes[3].start();
    c.load_test_image(3);
    let t0 = Instant::now();
    c.join(3, false);
    let placed = wait_counts(&c, 0, "agent", &[1, 1, 0, 1]);
    eprintln!("late joiner runs its global task {} ms after `swarm join` began", t0.elapsed().as_millis());
    wait_for("`service ls` to show 3/3", CONVERGE, || (replicas(&c, 0, "agent") == "3/3").then_some(()));
    let id3 = c.node_id(3).expect("node id");
    let row = ps(&c, 0, "agent").into_iter().find(|t| t["ID"] == placed[3][0].as_str()).expect("the joiner's task");
    assert_eq!(row["Name"], format!("agent.{id3}"), "a global task's slot is its node");

    // Drain worker 1: its task stops and nothing replaces it there.
    node_update(&c, 1, &["--availability", "drain"]);
    wait_counts(&c, 0, "agent", &[1, 0, 0, 1]);
    assert_eq!(c.nodes[1].running_tasks(), 0);
    wait_for("`service ls` to show 2/2", CONVERGE, || (replicas(&c, 0, "agent") == "2/2").then_some(()));

    // Worker 3 leaves: its own daemon stops the task; the manager sees it
    // Down and stops counting it.
    let out = c.nodes[3].shoal(&["swarm", "leave"]).ok().stdout;
    assert_eq!(out.trim(), "Node left the swarm.");
    wait_for("the leaver's containerd to run nothing", CONVERGE, || (c.nodes[3].running_tasks() == 0).then_some(()));
    wait_for("the leaver to be Down", CONVERGE, || {
        let ls = c.nodes[0].shoal(&["node", "ls", "--format", "json"]).ok().stdout;
        ls.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["ID"] == id3.as_str() && v["Status"] == "Down")
            .then_some(())
    });
    wait_for("`service ls` to show 1/1", CONVERGE, || (replicas(&c, 0, "agent") == "1/1").then_some(()));
    wait_counts(&c, 0, "agent", &[1, 0, 0, 0]);
    // A drained node that becomes active again gets its task back.
    node_update(&c, 1, &["--availability", "active"]);
    wait_counts(&c, 0, "agent", &[1, 1, 0, 0]);
    assert_eq!(replicas(&c, 0, "agent"), "2/2");
}

/// A multi-arch index (`tests/lib/mkindex.sh`) with linux/amd64 and
/// linux/arm64 entries; every entry holds the host's busybox (only
/// `busybox` and `sh` are on its PATH), so whichever entry a node selects
/// runs here.
fn amd64_arm64_index() -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("shoal-it-sched-multi-{}.tar", std::process::id()));
    let st = std::process::Command::new(shoal_tests::root().join("tests/lib/mkindex.sh"))
        .arg(&out)
        .args(["linux/amd64", "linux/arm64"])
        .status()
        .expect("run mkindex.sh");
    assert!(st.success(), "mkindex.sh failed");
    out
}

/// Multi-arch placement across nodes that report different platforms
/// (`SHOAL_TEST_PLATFORM`): the manager is this machine (amd64), worker 1
/// says linux/arm64, worker 2 linux/arm/v7. Images come from a registry on
/// the cluster bridge's address, which every namespace reaches; each node
/// pulls its own platform's entry when a task lands on it. An amd64+arm64
/// index with one replica per node runs on the manager and the arm64 worker
/// only; an amd64-only image never lands on either worker.
#[test]
fn multi_arch_tasks_run_only_on_nodes_of_the_index_platforms() {
    let Some(mut c) = Cluster::new(3) else { return };
    let reg = Registry::start_on(&format!("{}.254", c.subnet));
    let index = amd64_arm64_index();
    let multi = reg.push(&index, "multi:1", true);
    let _ = std::fs::remove_file(&index);
    let amd64_only = reg.push(&shoal_tests::test_image(), "amd64only:1", false);
    let insecure = ["--insecure-registry", &reg.addr()];
    c.nodes[0].start_with(&[], &insecure);
    c.nodes[1].start_with(&[("SHOAL_TEST_PLATFORM", "linux/arm64")], &insecure);
    c.nodes[2].start_with(&[("SHOAL_TEST_PLATFORM", "linux/arm/v7")], &insecure);
    c.form(1, 2);
    let platform = |i: usize| {
        let id = c.node_id(i).expect("node id");
        let n: Value = serde_json::from_str(&c.nodes[0].shoal(&["node", "inspect", &id]).ok().stdout).expect("node inspect json");
        let p = &n[0]["Description"]["Platform"];
        format!("{}/{}", p["Architecture"].as_str().unwrap_or_default(), p["Variant"].as_str().unwrap_or_default())
    };
    assert_eq!(platform(1), "arm64/v8");
    assert_eq!(platform(2), "arm/v7");

    // As many replicas as nodes, at most one per node: the arm/v7 worker
    // cannot take one, so the third stays pending and says why.
    c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "multi",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--stop-grace-period",
            "300ms",
            &multi,
            "busybox",
            "sleep",
            "3600",
        ])
        .ok();
    let s = inspect(&c, 0, "multi");
    let platforms: Vec<String> = s["Spec"]["TaskTemplate"]["Placement"]["Platforms"]
        .as_array()
        .expect("Placement.Platforms filled from the index")
        .iter()
        .map(|p| format!("{}/{}", p["Architecture"].as_str().unwrap_or_default(), p["Variant"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(platforms, ["amd64/", "arm64/v8"], "{s}");
    wait_counts(&c, 0, "multi", &[1, 1, 0]);
    let err = wait_for("the third task to be pending with an explanation", CONVERGE, || {
        let rows = ps(&c, 0, "multi");
        rows.iter().find(|t| t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Pending"))).map(|t| t["Error"].to_string())
    });
    assert_eq!(err, "\"no suitable node (max replicas per node limit exceed; unsupported platform on 1 node)\"");
    // Docker's REPLICAS column names the limit.
    let ls = c.nodes[0].shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.contains("2/3 (max 1 per node)"), "{ls}");
    let images = c.nodes[2].shoal(&["image", "ls"]).ok().stdout;
    assert!(!images.contains("multi"), "the arm/v7 worker never pulled the image:\n{images}");

    // Without the per-node limit (a placement change: a rolling update) the
    // third replica goes to a fitting node, whichever spread picks.
    c.nodes[0].shoal(&["service", "update", "-d", "--replicas-max-per-node", "0", "multi"]).ok();
    wait_for_seen("3 multi tasks on the amd64 manager and the arm64 worker only", CONVERGE, || {
        let n = counts(&per_node(&c, 0, "multi"));
        let ok = n[0] >= 1 && n[1] >= 1 && n[0] + n[1] == 3 && n[2] == 0 && running_ids(&c, 0, "multi").len() == 3;
        if ok {
            Ok(())
        } else {
            Err(format!("per node {n:?}"))
        }
    });

    // An amd64-only image: on the workers it fits neither, and without a
    // constraint it runs on the amd64 manager only.
    c.nodes[0].shoal(&["service", "create", "-d", "--name", "amd", "--constraint", "node.role==worker", &amd64_only, "sleep", "3600"]).ok();
    let err = wait_for("the amd64-only task to be pending with an explanation", CONVERGE, || {
        ps(&c, 0, "amd").first().and_then(|t| t["Error"].as_str().filter(|e| !e.is_empty()).map(str::to_string))
    });
    assert_eq!(err, "no suitable node (unsupported platform on 2 nodes; scheduling constraints not satisfied on 1 node)");
    c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "amd3",
            "--replicas",
            "3",
            "--stop-grace-period",
            "300ms",
            &amd64_only,
            "sleep",
            "3600",
        ])
        .ok();
    wait_counts(&c, 0, "amd3", &[3, 0, 0]);
}

/// Benchmark (run by `targets/cluster-bench.sh`, never in CI): a rolling
/// update (`service update --force`) of 50 tasks with `--update-parallelism
/// 10` on a manager and two workers, timed from the command's start to its
/// return with `verify: Service converged`; once with Swarm's default
/// 5 s update monitor (the update completes 5 s after its last batch runs)
/// and once with `--update-monitor 0s`. The tasks' shell traps SIGTERM, so a
/// stop is not a stop-grace timeout. Asserts nothing about speed.
#[test]
#[ignore = "benchmark: run targets/cluster-bench.sh"]
fn bench_rolling_update_50_tasks_parallelism_10() {
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(1, 2);
    let t0 = Instant::now();
    c.nodes[0]
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "50",
            "--update-parallelism",
            "10",
            IMAGE,
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 3600 & wait",
        ])
        .ok();
    wait_for("50 running tasks", Duration::from_secs(120), || (running_ids(&c, 0, "web").len() == 50).then_some(()));
    eprintln!("created: 50 tasks running on {:?} after {} ms", counts(&per_node(&c, 0, "web")), t0.elapsed().as_millis());
    let mut summary = Vec::new();
    for (label, extra) in [("default 5 s monitor", None), ("--update-monitor 0s", Some("0s"))] {
        let before = running_ids(&c, 0, "web");
        let mut args = vec!["service", "update", "--force"];
        if let Some(m) = extra {
            args.extend_from_slice(&["--update-monitor", m]);
        }
        args.extend_from_slice(&["--timeout", "300s", "web"]);
        let t = Instant::now();
        let out = c.nodes[0].shoal(&args).ok().stdout;
        let ms = t.elapsed().as_millis();
        assert!(out.contains("verify: Service converged"), "{out}");
        let after = running_ids(&c, 0, "web");
        assert_eq!(after.len(), 50, "50 tasks run after the update");
        assert!(after.is_disjoint(&before), "every task was replaced");
        eprintln!("rolling update ({label}): {ms} ms; tasks per node now {:?}", counts(&per_node(&c, 0, "web")));
        summary.push(format!("{label}: {ms} ms"));
    }
    eprintln!("SUMMARY rolling update of 50 tasks, parallelism 10, 1 manager + 2 workers: {}", summary.join("; "));
}
