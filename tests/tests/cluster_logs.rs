//! `service logs` across nodes, with real processes: tasks run on a worker,
//! and the leader and a follower manager show their lines with Swarm's
//! `NAME.SLOT.TASKID@HOST` prefixes (see `agent/src/daemon/log_gather.rs`).
//! Nodes that cannot answer are named in a warning within the gather
//! deadline; the CLI never hangs and never shows a silently short answer.

use shoal_tests::cluster::Cluster;
use shoal_tests::{shoal_bin, wait_for};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each task prints two lines at once, and a third once the test creates
/// `go` in the directory bind-mounted at `/trigger`.
const SCRIPT: &str =
    "echo first-$HOSTNAME; echo hello-$HOSTNAME; while [ ! -e /trigger/go ]; do sleep 1; done; echo later-$HOSTNAME; exec sleep 3600";
/// The manager's gather deadline plus generous slack for a loaded machine
/// (`LOGS_GATHER_TIMEOUT_MS` is 2.5 s; a follower adds one forward).
const LOGS_ANSWER_S_MAX: u64 = 6;

/// One `service logs` output line: `(source, text)`.
fn parse(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|l| {
            let (src, text) = l.split_once(" | ").unwrap_or_else(|| panic!("no ` | ` in log line {l:?}"));
            (src.trim().to_string(), text.to_string())
        })
        .collect()
}

/// Checks that every line is `chat.SLOT.ID@host | KIND-ID` with the task's
/// own id (the container's hostname is its task id), and returns the texts.
fn check_prefixes(stdout: &str, host: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for (src, text) in parse(stdout) {
        let rest = src.strip_prefix("chat.").unwrap_or_else(|| panic!("source {src:?} is not the service's"));
        let (slot, rest) = rest.split_once('.').unwrap_or_else(|| panic!("no slot in {src:?}"));
        assert!(slot == "1" || slot == "2", "slot of {src:?}");
        let (id, at) = rest.split_once('@').unwrap_or_else(|| panic!("no @host in {src:?}"));
        assert_eq!(id.len(), 12, "short task id in {src:?}");
        assert_eq!(at, host, "the worker's hostname in {src:?}");
        let kind = text.strip_suffix(id).unwrap_or_else(|| panic!("line {text:?} under {src:?} is another task's"));
        assert!(["first-", "hello-", "later-"].contains(&kind), "{text:?}");
        texts.push(text);
    }
    texts
}

/// `shoal service logs -f` running in the background; killed on drop.
struct Follow {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Follow {
    fn start(socket: &std::path::Path, args: &[&str]) -> Follow {
        let mut child = Command::new(shoal_bin())
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["service", "logs", "-f"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal service logs -f");
        let pump = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(String::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            buf
        };
        let stdout = pump(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = pump(Box::new(child.stderr.take().expect("piped stderr")));
        Follow { child, stdout, stderr }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the command is still running (a follow never ends by itself).
    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn service_logs_show_every_nodes_tasks_and_name_the_silent_ones() {
    let Some(mut c) = Cluster::new(3) else { return };
    // Node 0 leads, node 1 is a follower manager, node 2 the only worker.
    c.init(2, 1);
    assert_eq!(c.wait_for_leader(Duration::from_secs(20)), 0);
    let worker_id = c.node_id(2).expect("worker id");
    let ls = c.nodes[0].shoal(&["node", "ls", "--format", "json"]).ok().stdout;
    let host = ls
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["ID"] == worker_id.as_str())
        .and_then(|v| v["Hostname"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("worker {worker_id} in node ls: {ls}"));
    let trigger = c.dir().join("trigger");
    std::fs::create_dir_all(&trigger).unwrap();
    let mount = format!("type=bind,source={},target=/trigger", trigger.display());
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        "chat",
        "--replicas",
        "2",
        "--constraint",
        "node.role==worker",
        "--mount",
        &mount,
        "shoal.test/busybox:latest",
        "sh",
        "-c",
        SCRIPT,
    ];
    c.nodes[0].shoal(&create).ok();
    wait_for("2 tasks running on the worker", Duration::from_secs(40), || (c.nodes[2].running_tasks() == 2).then_some(()));
    assert_eq!(c.nodes[0].running_tasks() + c.nodes[1].running_tasks(), 0, "the constraint keeps tasks off the managers");

    // The leader gathers the worker's lines; the follower forwards to it.
    for on in [0, 1] {
        let r = wait_for(&format!("node {on}'s service logs to show both tasks' lines"), Duration::from_secs(20), || {
            let r = c.nodes[on].shoal(&["service", "logs", "chat"]);
            (r.code == 0 && r.stdout.matches("hello-").count() == 2).then_some(r)
        });
        let texts = check_prefixes(&r.stdout, &host);
        assert_eq!(texts.len(), 4, "two lines per task, each once: {}", r.stdout);
        assert!(r.stderr.is_empty(), "no warning while every node answers: {}", r.stderr);
        let srcs: std::collections::BTreeSet<String> = parse(&r.stdout).into_iter().map(|(s, _)| s).collect();
        assert_eq!(srcs.len(), 2, "two tasks: {srcs:?}");
        let tail = c.nodes[on].shoal(&["service", "logs", "--tail", "1", "chat"]).ok();
        let texts = check_prefixes(&tail.stdout, &host);
        assert_eq!(texts.len(), 2, "--tail 1: one line per task: {}", tail.stdout);
        assert!(texts.iter().all(|t| t.starts_with("hello-")), "the last line of each: {texts:?}");
    }

    // -f on the follower picks up lines printed later on the worker, once each.
    let mut follow = Follow::start(&c.nodes[1].socket(), &["chat"]);
    wait_for("-f to show the first lines", Duration::from_secs(10), || (follow.stdout().matches("hello-").count() == 2).then_some(()));
    std::fs::write(trigger.join("go"), b"").unwrap();
    let t = Instant::now();
    wait_for("-f to show the lines printed after the trigger", Duration::from_secs(15), || {
        (follow.stdout().matches("later-").count() == 2).then_some(())
    });
    eprintln!("-f showed the later lines {} ms after the trigger", t.elapsed().as_millis());
    assert!(follow.running(), "-f keeps following");
    drop(follow);
    let full = c.nodes[0].shoal(&["service", "logs", "chat"]).ok().stdout;
    assert_eq!(check_prefixes(&full, &host).len(), 6, "{full}");

    // The worker is cut off (its packets vanish, its link looks alive for a
    // while): the leader answers by its deadline and names it.
    c.nodes[2].partition();
    let t = Instant::now();
    let r = c.nodes[0].shoal(&["service", "logs", "chat"]);
    let took = t.elapsed();
    eprintln!("service logs with the worker partitioned took {} ms: {}", took.as_millis(), r.stderr.trim());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.starts_with(&format!("warning: no logs from node {host}")), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one warning: {}", r.stderr);
    assert!(took < Duration::from_secs(LOGS_ANSWER_S_MAX), "took {took:?}");
    c.nodes[2].heal();
    wait_for("logs from the worker again after the partition healed", Duration::from_secs(40), || {
        let r = c.nodes[0].shoal(&["service", "logs", "chat"]);
        (r.code == 0 && r.stderr.is_empty() && r.stdout.contains("hello-")).then_some(())
    });

    // The worker dies: both managers answer within the deadline, naming it.
    c.nodes[2].kill();
    for on in [0, 1] {
        let t = Instant::now();
        let r = c.nodes[on].shoal(&["service", "logs", "chat"]);
        let took = t.elapsed();
        eprintln!("node {on}: service logs with the worker dead took {} ms: {}", took.as_millis(), r.stderr.trim());
        assert_eq!(r.code, 0, "what arrived is still an answer: {}", r.stderr);
        assert!(r.stdout.is_empty(), "every task ran on the dead worker: {}", r.stdout);
        // Hostnames may repeat (here every node shares the machine's), so the warning adds the node id.
        assert!(r.stderr.starts_with(&format!("warning: no logs from node {host}")), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "one warning: {}", r.stderr);
        assert!(took < Duration::from_secs(LOGS_ANSWER_S_MAX), "took {took:?}");
    }
    // Once it is marked Down, the leader says so without waiting for it.
    wait_for("the worker to be Down", Duration::from_secs(15), || {
        (c.nodes[0].shoal(&["node", "ls"]).stdout.matches("Down").count() == 1).then_some(())
    });
    let t = Instant::now();
    let r = c.nodes[0].shoal(&["service", "logs", "chat"]).ok();
    assert!(r.stderr.starts_with(&format!("warning: no logs from node {host}")), "{}", r.stderr);
    assert!(r.stderr.trim_end().ends_with(": the node is down"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_millis(2_000), "a Down node is not waited for ({:?})", t.elapsed());
    // A follow polls many times but warns once.
    let mut follow = Follow::start(&c.nodes[0].socket(), &["chat"]);
    std::thread::sleep(Duration::from_millis(2_000));
    assert!(follow.running(), "-f keeps following without the worker: {}", follow.stderr());
    assert_eq!(follow.stderr().matches("warning:").count(), 1, "{}", follow.stderr());
    drop(follow);

    // The leader dies too (quorum lost): the follower answers from its own
    // tasks and says it could not reach the leader.
    c.nodes[0].kill();
    let t = Instant::now();
    let r = c.nodes[1].shoal(&["service", "logs", "chat"]);
    let took = t.elapsed();
    eprintln!("follower without leader: service logs took {} ms: {}", took.as_millis(), r.stderr.trim());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("warning: cannot reach the swarm leader: showing only the logs of tasks on this node"), "{}", r.stderr);
    assert!(took < Duration::from_secs(LOGS_ANSWER_S_MAX), "took {took:?}");
}
