//! The node's own state on a full disk (issue #14, "Full disks": "the
//! node's own state writes fail with clear errors and nothing acknowledged
//! is lost"). Here the whole DATA DIR is a small tmpfs that the test fills
//! (`full_disk.rs` fills only the task-log dir):
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

/// The daemon checks free space every 10 s (with the task-log rotation).
const REPORT_WAIT: Duration = Duration::from_secs(25);
/// Most services the fill loop creates before the disk refuses one.
const FILL_CREATES_MAX: usize = 400;
/// A refused write must be answered well within the CLI's own timeout.
const REFUSAL_MAX: Duration = Duration::from_secs(10);
/// Most replicas the worker's fill loop scales to.
const FILL_SCALES_MAX: usize = 40;

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
        let _ = Command::new("umount").arg("-l").arg(self.0.join("netns")).status();
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a filler file until the filesystem is full (ENOSPC).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => panic!("zero write"),
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
}

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
