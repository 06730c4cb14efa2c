//! Healthcheck benchmark (issue #17), run by `targets/health-bench.sh`: one
//! real node (private containerd, real `shoal daemon`) running 50 tasks,
//! first with no healthcheck, then (another service, the first removed)
//! each probed every 5 s. Over a window of each (`SHOAL_BENCH_WINDOW_S`,
//! default 60) it prints the daemon's CPU (utime + stime from
//! `/proc/PID/stat`) and RSS, containerd's and the shims' CPU (their own
//! and their reaped children's: the `runc exec` and probe processes), and
//! the probes that ran. Asserts nothing but that the tasks run.

use shoal_tests::{skip_reason, wait_for, Node};
use std::path::Path;
use std::time::{Duration, Instant};

const TASKS: usize = 50;
const INTERVAL: &str = "5s";

fn window() -> Duration {
    Duration::from_secs(std::env::var("SHOAL_BENCH_WINDOW_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60))
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn clk_tck() -> f64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// (utime + stime, cutime + cstime) of a process, in ticks; `None` once it is gone.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// The containerd of node `n` and its shims (their command lines name its socket).
fn runtime_pids(n: &Node) -> Vec<u32> {
    let ctrd = n.dir.join("ctrd");
    let sock = ctrd.join("containerd.sock").display().to_string();
    let mut pids: Vec<u32> =
        std::fs::read_to_string(ctrd.join("containerd.pid")).ok().and_then(|p| p.trim().parse().ok()).into_iter().collect();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("containerd-shim") && cmd.contains(&sock) {
            pids.push(pid);
        }
    }
    pids
}

/// Ticks of `pids` (own, and children reaped), summed.
fn total(pids: &[u32]) -> (u64, u64) {
    pids.iter().filter_map(|p| cpu_ticks(*p)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// What one window measured.
struct Window {
    /// CPU in % of one core: the daemon, containerd, the shims (with what they reaped).
    daemon_pct: f64,
    containerd_pct: f64,
    shims_pct: f64,
    daemon_rss_mib: f64,
    probes: usize,
    secs: f64,
}

impl Window {
    fn line(&self) -> String {
        format!(
            "daemon CPU {:.2} % of a core, RSS {:.1} MiB; containerd CPU {:.2} %, shims (with runc and probes) {:.2} %",
            self.daemon_pct, self.daemon_rss_mib, self.containerd_pct, self.shims_pct
        )
    }
}

fn measure(n: &Node, probes: &Path) -> Window {
    let daemon = n.daemon_pid().expect("daemon runs");
    let rt = runtime_pids(n);
    let (ctrd, shims) = rt.split_at(1.min(rt.len()));
    let count = || std::fs::read_to_string(probes).map(|s| s.lines().count()).unwrap_or(0);
    let both = |(a, b): (u64, u64)| a + b;
    let (d0, c0, s0, p0, t0) = (cpu_ticks(daemon).expect("daemon stat"), both(total(ctrd)), both(total(shims)), count(), Instant::now());
    std::thread::sleep(window());
    let (d1, c1, s1, p1) = (cpu_ticks(daemon).expect("daemon stat"), both(total(ctrd)), both(total(shims)), count());
    let secs = t0.elapsed().as_secs_f64();
    let pct = |ticks: u64| ticks as f64 / clk_tck() / secs * 100.0;
    Window {
        daemon_pct: pct(d1.0.saturating_sub(d0.0)),
        containerd_pct: pct(c1.saturating_sub(c0)),
        shims_pct: pct(s1.saturating_sub(s0)),
        daemon_rss_mib: rss_kib(daemon) as f64 / 1024.0,
        probes: p1.saturating_sub(p0),
        secs,
    }
}

fn run_service(n: &Node, name: &str, extra: &[&str]) {
    let replicas = TASKS.to_string();
    let mut args = vec!["service", "create", "-d", "--name", name, "--replicas", &replicas, "--stop-signal", "SIGKILL"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["shoal.test/busybox", "sleep", "100000"]);
    n.shoal(&args).ok();
    wait_for(&format!("{TASKS} tasks of {name} running"), Duration::from_secs(300), || {
        let rows = n.ps_json(name);
        let up = rows.iter().filter(|t| t["CurrentState"].as_str().unwrap_or("").starts_with("Running")).count();
        (up == TASKS && n.running() == TASKS).then_some(())
    });
}

#[test]
#[ignore = "benchmark: run by targets/health-bench.sh"]
fn health_bench() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let shared = n.dir.join("shared");
    std::fs::create_dir_all(&shared).expect("shared dir");
    let probes = shared.join("probes");
    let mount = format!("type=bind,source={},destination=/shared", shared.display());

    run_service(&n, "idle", &[]);
    let w = measure(&n, &probes);
    println!("health: {TASKS} tasks, no healthcheck, {:.0} s: {}", w.secs, w.line());
    n.shoal(&["service", "rm", "idle"]).ok();
    wait_for("the idle tasks to go", Duration::from_secs(120), || (n.containers().is_empty()).then_some(()));

    let probe = ["--mount", &mount, "--health-cmd", "echo x >> /shared/probes", "--health-interval", INTERVAL];
    run_service(&n, "probed", &probe);
    let w = measure(&n, &probes);
    println!(
        "health: {TASKS} tasks, each probed every {INTERVAL}, {:.0} s: {}; {} probes ran ({:.1}/s, {:.1}/s wanted)",
        w.secs,
        w.line(),
        w.probes,
        w.probes as f64 / w.secs,
        TASKS as f64 / 5.0
    );
    let unhealthy = n.daemon_log().matches("is unhealthy").count();
    println!("health: probes that failed a task: {unhealthy}");
}
