//! A full disk with a chatty task (issue #14, "Full disks"): the node's
//! task-log dir is a small tmpfs that the test fills. The task keeps
//! running, with or without the daemon (its output goes to `shoal log-driver`, which drops and counts
//! what it cannot write instead of leaving the task blocked in a full
//! pipe), the daemon log reports the full disk once and the space coming
//! back once, and the task's log resumes with a marker counting the gap.
//!
//! The node's own state on a full disk ("the node's own state writes fail
//! with clear errors and nothing acknowledged is lost"): there the whole
//! DATA DIR is a small tmpfs that the test fills:
//!
//! - a single manager: raft cannot persist, so writes are refused at once
//!   with an error that says the data dir is full (not a hang, not "no
//!   leader"); the daemon stays up and says so (log, `node inspect`); once
//!   space is freed writes work again without a restart, and a restart
//!   shows every acknowledged service;
//! - a worker: its status message reaches the manager (the session re-send
//!   path); it cannot persist a new assignment set, so it does not act on
//!   it (persist before acting) and says why; once space is freed it
//!   catches up by itself.

use shoal_tests::cluster::{netns_skip_reason, Cluster};
use shoal_tests::{skip_reason, wait_for, Node, Run};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Bytes per output line of the chatty task (a pipe holds 64 KiB: ~160 lines).
const LINE_BYTES: usize = 400;
/// The daemon checks free space every 10 s (with the task-log rotation).
const REPORT_WAIT: Duration = Duration::from_secs(25);

/// Lazily unmounts the tmpfs at drop (before the node's scratch dir goes).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status().unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A data dir holds the tasks' network namespaces' mount point.
        let _ = Command::new("umount").arg("-l").arg(self.0.join("netns")).status();
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The chatty task's line counter (read again while the task rewrites it).
fn count(n: &Node) -> u64 {
    wait_for("the task's counter", Duration::from_secs(5), || counter(n))
}

/// The chatty task's line counter, read from its root filesystem.
fn counter(n: &Node) -> Option<u64> {
    let tasks = n.tasks();
    let (_, pid, _) = tasks.iter().find(|t| t.2 == "RUNNING")?;
    std::fs::read_to_string(format!("/proc/{pid}/root/tmp/n")).ok()?.trim().parse().ok()
}

/// Writes a filler file until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => panic!("zero write"),
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc_enospc()), "filling: {e}");
                break;
            }
        }
    }
}

fn libc_enospc() -> i32 {
    28
}

#[test]
fn a_full_log_disk_drops_output_without_blocking_the_task_and_logging_resumes() {
    if skip_reason().is_some() {
        return;
    }
    let started = Instant::now();
    let mut n = Node::new();
    let logs = n.data_dir().join("logs");
    let _tmpfs = Tmpfs::mount(&logs, "8m");
    n.init_with_image();
    let script = format!(
        "trap 'exit 0' TERM; pad=$(printf '%0{}d' 0); i=0; while true; do echo \"line $i $pad\"; echo $i > /tmp/n; i=$((i+1)); usleep 2000; done",
        LINE_BYTES - 12
    );
    n.shoal(&["service", "create", "-d", "--name", "chatty", "shoal.test/busybox", "sh", "-c", &script]).ok();
    wait_for("the task's lines in service logs", Duration::from_secs(30), || {
        n.shoal(&["service", "logs", "--tail", "1", "chatty"]).ok().stdout.contains("| line ").then_some(())
    });

    // Full, with the daemon killed meanwhile (the driver does not need it):
    // the task goes on writing well past what its pipe holds.
    n.kill_daemon();
    let filler = logs.join("filler");
    fill(&filler);
    let at_fill = count(&n);
    let pipe_lines = (64 * 1024 / LINE_BYTES) as u64;
    wait_for("the task to write past two pipes' worth without a daemon", Duration::from_secs(20), || {
        (counter(&n)? > at_fill + 2 * pipe_lines).then_some(())
    });
    n.start_daemon();
    let warn = wait_for("the full disk in the daemon log", REPORT_WAIT, || {
        n.daemon_log().lines().find(|l| l.contains(" WARN ") && l.contains("is full")).map(str::to_string)
    });
    assert!(warn.contains(&format!("task log dir {}", logs.display())), "{warn}");
    assert!(warn.contains("task output is dropped"), "{warn}");
    let before = count(&n);
    std::thread::sleep(Duration::from_secs(2));
    let after = count(&n);
    assert!(after > before, "the task still runs on a full disk: {before} -> {after}");
    let ps = n.ps_json("chatty");
    assert_eq!(ps.len(), 1, "no restart: {ps:?}");
    assert!(ps[0]["CurrentState"].as_str().unwrap().starts_with("Running"), "{ps:?}");
    assert_eq!(n.daemon_log().matches("is full").count(), 1, "reported once");
    // `node inspect` says so as the node's status message.
    let message = |n: &Node| {
        let out = n.shoal(&["node", "inspect", "self"]).ok().stdout;
        let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let node = if v.is_array() { v.get(0)?.clone() } else { v };
        node.pointer("/Status/Message")?.as_str().map(str::to_string)
    };
    let m = wait_for("the full disk in node inspect", REPORT_WAIT, || message(&n));
    assert!(m.starts_with("disk full: task log dir ") && m.contains("task output is dropped"), "{m}");

    // Space again: the daemon says so, and the log resumes after a marker.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = count(&n);
    wait_for("space again in the daemon log", REPORT_WAIT, || {
        n.daemon_log().lines().any(|l| l.contains(" INFO ") && l.contains("has space again")).then_some(())
    });
    wait_for("no status message in node inspect", REPORT_WAIT, || message(&n).is_none().then_some(()));
    let out = wait_for("the dropped marker and new lines in service logs", Duration::from_secs(20), || {
        let out = n.shoal(&["service", "logs", "chatty"]).ok().stdout;
        let at = out.find("of output dropped: no space left on device]")?;
        out[at..].lines().skip(1).any(|l| l.contains("| line ")).then_some(out)
    });
    let texts: Vec<&str> = out.lines().map(|l| l.split_once(" | ").map_or(l, |p| p.1)).collect();
    let m = texts.iter().position(|t| t.starts_with("[shoal: ")).expect("marker line");
    let number = |t: &str| t.strip_prefix("line ")?.split(' ').next()?.parse::<u64>().ok();
    let last_before = texts[..m].iter().rev().find_map(|t| number(t)).expect("a line before the marker");
    let first_after = texts[m + 1..].iter().find_map(|t| number(t)).expect("a line after the marker");
    let dropped: u64 = texts[m].strip_prefix("[shoal: ").unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(dropped >= 2 * pipe_lines, "{}", texts[m]);
    // Every line is either in the log or counted (a line cut by the full disk is both, once).
    let gap = first_after - last_before;
    assert!(gap == dropped + 1 || gap == dropped, "lines {last_before}..{first_after} around {}", texts[m]);
    assert!(first_after >= freed_at.saturating_sub(pipe_lines), "new output after the space came back: {first_after} vs {freed_at}");
    assert!(last_before < at_fill + pipe_lines, "output stopped at the fill: {last_before} vs {at_fill}");
    assert_eq!(texts.iter().filter(|t| t.starts_with("[shoal: ")).count(), 1, "one marker per gap");

    // Removal is not held up by the driver (it drains and exits at the shim's SIGTERM).
    let t = Instant::now();
    n.shoal(&["service", "rm", "chatty"]).ok();
    wait_for("the container gone", Duration::from_secs(20), || n.containers().is_empty().then_some(()));
    assert!(t.elapsed() < Duration::from_secs(10), "removal took {:?}", t.elapsed());
    eprintln!("full_disk: {:?}, removal {:?}, whole test {:?}", texts[m], t.elapsed(), started.elapsed());
}

/// Most services the fill loop creates before the disk refuses one.
const FILL_CREATES_MAX: usize = 400;
/// A refused write must be answered well within the CLI's own timeout.
const REFUSAL_MAX: Duration = Duration::from_secs(10);
/// Most replicas the worker's fill loop scales to.
const FILL_SCALES_MAX: usize = 40;

/// `node inspect ID`'s status message (`None` when it has none).
fn status_message(run: Run) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).ok()?;
    let node = if v.is_array() { v.get(0)?.clone() } else { v };
    node.pointer("/Status/Message")?.as_str().filter(|m| !m.is_empty()).map(str::to_string)
}

/// A refusal as the data dir being full: lowercase, says so, says what to do.
fn assert_full_refusal(what: &str, r: &Run, took: Duration) {
    assert_ne!(r.code, 0, "{what} succeeded on a full disk: {}", r.stdout);
    let e = r.stderr.trim();
    assert!(e.contains("is full (no space left on device)"), "{what}: {e}");
    assert!(e.contains("free space"), "{what}: {e}");
    assert!(!e.contains("leader"), "{what}: {e}");
    assert!(took < REFUSAL_MAX, "{what} took {took:?}: {e}");
}

fn service_names(n: &Node) -> Vec<String> {
    let out = n.shoal(&["service", "ls", "--format", "json"]).ok().stdout;
    out.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["Name"].as_str().map(str::to_string)).collect()
}

#[test]
fn a_full_data_dir_refuses_manager_writes_clearly_and_loses_nothing_acknowledged() {
    if skip_reason().is_some() {
        return;
    }
    let started = Instant::now();
    let mut n = Node::new();
    let _tmpfs = Tmpfs::mount(&n.data_dir(), "16m");
    n.init_with_image();
    let mut acked: Vec<String> = Vec::new();
    for i in 0..3 {
        let name = format!("before{i}");
        n.shoal(&["service", "create", "-d", "--name", &name, "--replicas", "0", "shoal.test/busybox", "sleep", "1000"]).ok();
        acked.push(name);
    }

    let filler = n.data_dir().join("filler");
    fill(&filler);
    // Raft's file has some room of its own: services go in until it needs more.
    let mut refused = None;
    for i in 0..FILL_CREATES_MAX {
        let name = format!("full{i}");
        let t = Instant::now();
        let r = n.shoal(&["service", "create", "-d", "--name", &name, "--replicas", "0", "shoal.test/busybox", "sleep", "1000"]);
        if r.code == 0 {
            acked.push(name);
        } else {
            refused = Some((r, t.elapsed()));
            break;
        }
    }
    let (r, took) = refused.unwrap_or_else(|| panic!("{FILL_CREATES_MAX} services created on a full disk"));
    assert_full_refusal("service create", &r, took);
    eprintln!("full_disk_state: {} services acknowledged, then: {}", acked.len(), r.stderr.trim());
    assert!(r.stderr.contains(&n.data_dir().display().to_string()), "names the data dir: {}", r.stderr);

    // The store stays refused (not a hang, not a generic error) for every write.
    for args in [
        &["service", "create", "-d", "--name", "refused", "--replicas", "0", "shoal.test/busybox", "sleep", "1"][..],
        &["service", "scale", "-d", "before0=2"][..],
        &["service", "update", "-d", "--env-add", "A=1", "before1"][..],
    ] {
        let t = Instant::now();
        let r = n.shoal(args);
        assert_full_refusal(&args[..2].join(" "), &r, t.elapsed());
    }
    // The daemon is up, reads work, and it says the disk is full.
    let names = service_names(&n);
    for a in &acked {
        assert!(names.contains(a), "{a} missing from service ls: {names:?}");
    }
    let warn = wait_for("the full data dir in the daemon log", REPORT_WAIT, || {
        n.daemon_log().lines().find(|l| l.contains(" WARN ") && l.contains("is full")).map(str::to_string)
    });
    assert!(warn.contains(&format!("data dir {}", n.data_dir().display())), "{warn}");
    let m = wait_for("the full disk in node inspect", REPORT_WAIT, || status_message(n.shoal(&["node", "inspect", "self"])));
    assert!(m.starts_with("disk full: data dir "), "{m}");

    // Space again: writes work without a restart.
    std::fs::remove_file(&filler).unwrap();
    let t = Instant::now();
    wait_for("writes to work again once space is freed", Duration::from_secs(40), || {
        (n.shoal(&["service", "create", "-d", "--name", "after", "--replicas", "0", "shoal.test/busybox", "sleep", "1"]).code == 0)
            .then_some(())
    });
    let recovered = t.elapsed();
    acked.push("after".into());
    n.shoal(&["service", "scale", "-d", "before0=0"]).ok();
    n.shoal(&["service", "update", "-d", "--env-add", "A=1", "before1"]).ok();
    wait_for("no status message in node inspect", REPORT_WAIT, || {
        status_message(n.shoal(&["node", "inspect", "self"])).is_none().then_some(())
    });

    // A restart: every acknowledged service is there.
    assert_eq!(n.terminate_daemon(), Some(0));
    n.start_daemon();
    let names = wait_for("service ls after the restart", Duration::from_secs(20), || {
        let names = service_names(&n);
        (!names.is_empty()).then_some(names)
    });
    for a in &acked {
        assert!(names.contains(a), "acknowledged {a} lost: {names:?}");
    }
    assert!(!names.iter().any(|s| s == "refused"), "{names:?}");
    let inspect = n.shoal(&["service", "inspect", "before1"]).ok().stdout;
    assert!(inspect.contains("A=1"), "{inspect}");
    eprintln!("full_disk_state: writes again {recovered:?} after freeing; whole test {:?}", started.elapsed());
}

#[test]
fn a_worker_with_a_full_data_dir_tells_its_manager_and_does_not_act_on_what_it_cannot_persist() {
    if skip_reason().is_some() || netns_skip_reason().is_some() {
        return;
    }
    let Some(mut c) = Cluster::new(2) else { return };
    let data = c.nodes[1].data_dir();
    let _tmpfs = Tmpfs::mount(&data, "16m");
    // Tasks in the node's namespace: no per-task files in the data dir (a
    // bridge lease there fails on the full disk before the task runs).
    c.nodes[1].start_with(&[], &["--bridge-subnet", "none"]);
    c.init(1, 1);
    let worker = c.node_id(1).expect("worker id");
    let m = &c.nodes[0];
    // Only the worker runs it.
    m.shoal(&["node", "update", "--availability", "drain", "self"]).ok();
    m.shoal(&["service", "create", "-d", "--name", "s", "--replicas", "1", "shoal.test/busybox", "sleep", "1000"]).ok();
    wait_for("one task on the worker", Duration::from_secs(40), || (c.nodes[1].running_tasks() == 1).then_some(()));

    let filler = data.join("filler");
    fill(&filler);
    let msg = wait_for("the worker's full disk in the manager's node inspect", REPORT_WAIT, || {
        status_message(m.shoal(&["node", "inspect", &worker]))
    });
    assert!(msg.starts_with("disk full: data dir "), "{msg}");

    // New assignment sets until one cannot be persisted (the store's file
    // has some room of its own): that one is not acted on, and it says so.
    let mut refused_at = None;
    for k in 2..=FILL_SCALES_MAX {
        m.shoal(&["service", "scale", "-d", &format!("s={k}")]).ok();
        let line = wait_for("the worker to run or refuse the new set", Duration::from_secs(30), || {
            let log = c.nodes[1].log();
            if let Some(l) = log.lines().find(|l| l.contains("cannot persist this node's assignments")) {
                return Some(Some(l.to_string()));
            }
            (c.nodes[1].running_tasks() == k).then_some(None)
        });
        if let Some(line) = line {
            assert!(line.contains("is full (no space left on device)"), "{line}");
            assert!(line.contains("not acted on"), "{line}");
            refused_at = Some(k);
            break;
        }
    }
    let k = refused_at.unwrap_or_else(|| panic!("{FILL_SCALES_MAX} assignment sets persisted on a full disk"));
    eprintln!("full_disk_state: the worker refused the set of {k} tasks");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.nodes[1].running_tasks(), k - 1, "acted on assignments it could not persist");

    // Space again: it persists and catches up by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for("the worker to catch up after space is freed", Duration::from_secs(60), || (c.nodes[1].running_tasks() == k).then_some(()));
    wait_for("no status message in the manager's node inspect", REPORT_WAIT, || {
        status_message(m.shoal(&["node", "inspect", &worker])).is_none().then_some(())
    });
    assert!(c.nodes[1].log().contains("persisted this node's assignments again"), "{}", c.nodes[1].log_tail(30));
}

#[test]
fn a_follower_managers_full_data_dir_reaches_the_leaders_node_inspect() {
    if skip_reason().is_some() || netns_skip_reason().is_some() {
        return;
    }
    let Some(mut c) = Cluster::new(3) else { return };
    let data = c.nodes[2].data_dir();
    let _tmpfs = Tmpfs::mount(&data, "16m");
    c.nodes[2].start();
    c.form(3, 0);
    assert_eq!(c.wait_for_leader(Duration::from_secs(30)), 0, "node 0 made the swarm and leads it");
    let follower = c.node_id(2).expect("follower id");
    let m = &c.nodes[0];
    assert_eq!(status_message(m.shoal(&["node", "inspect", &follower])), None);

    let filler = data.join("filler");
    fill(&filler);
    // Told without a restart: the follower opens its session to the leader again.
    let msg = wait_for("the follower's full disk in the leader's node inspect", REPORT_WAIT, || {
        status_message(m.shoal(&["node", "inspect", &follower]))
    });
    assert!(msg.starts_with("disk full: data dir "), "{msg}");
    // The other two are a quorum: writes still commit.
    let r = m.shoal(&["node", "update", "--label-add", "still=writable", "self"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    std::fs::remove_file(&filler).unwrap();
    // Told once space is back, even though its store reopens later (then it learns the leader again).
    wait_for("no status message in the leader's node inspect", REPORT_WAIT, || {
        status_message(m.shoal(&["node", "inspect", &follower])).is_none().then_some(())
    });
    // The halt is said once, not once per raft message refused meanwhile (found in CI: ten a second).
    let log = c.nodes[2].log();
    assert_eq!(log.matches("raft message from").count(), 0, "{}", c.nodes[2].log_tail(20));
}
