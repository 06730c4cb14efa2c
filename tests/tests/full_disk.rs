//! A full disk with a chatty task (issue #14, "Full disks"): the node's
//! task-log dir is a small tmpfs that the test fills. The task keeps
//! running, with or without the daemon (its output goes to `shoal log-driver`, which drops and counts
//! what it cannot write instead of leaving the task blocked in a full
//! pipe), the daemon log reports the full disk once and the space coming
//! back once, and the task's log resumes with a marker counting the gap.

use shoal_tests::{skip_reason, wait_for, Node};
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
