//! Autolock on one node (issue #13), with real containerd: a restarted
//! manager stays locked until it is given the unlock key, keeps its
//! containers running untouched meanwhile, and leaves no plaintext of the
//! swarm's data in its data dir.

use shoal_tests::{shoal_bin, skip_reason, wait_for, Node, Run};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);
const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal swarm unlock\" to unlock it.";
const INVALID: &str = "swarm could not be unlocked: invalid key provided";

/// `shoal ARGS` with `input` on stdin (not a terminal).
fn shoal_stdin(n: &Node, args: &[&str], input: &str) -> Run {
    shoal_tests::shoal_stdin_at(&n.socket(), args, input)
}

/// The `SHLKEY-1-...` line of a command's output.
fn key_in(out: &str) -> String {
    out.lines().map(str::trim).find(|l| l.starts_with("SHLKEY-1-")).unwrap_or_else(|| panic!("no unlock key in:\n{out}")).to_string()
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        found.push(p.display().to_string());
                    }
                }
            }
        }
    }
    found
}

/// (container id, pid) of every running task in containerd.
fn running_pids(n: &Node) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = n.tasks().into_iter().filter(|(_, _, st)| st == "RUNNING").map(|(id, pid, _)| (id, pid)).collect();
    v.sort();
    v
}

fn assert_locked(n: &Node) {
    let r = n.shoal(&["service", "ls"]);
    assert_eq!(r.code, 1, "a locked manager answered service ls: {} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(LOCKED), "{}", r.stderr);
}

#[test]
fn a_restarted_manager_stays_locked_until_unlocked_and_its_containers_keep_running() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let marker = format!("autolock-marker-{:x}", std::process::id() as u64 * 0x9e37_79b9 + 0x5eed);
    let env = format!("SECRET_MARKER={marker}");
    n.shoal(&["service", "create", "-d", "--name", "web", "--replicas", "2", "--env", &env, "shoal.test/busybox", "sleep", "1000"]).ok();
    wait_for("2 running tasks", WAIT, || (n.running() == 2).then_some(()));

    // Off by default; the key commands say so in Docker's words.
    let r = n.shoal(&["swarm", "unlock-key"]);
    assert!(r.code == 1 && r.stderr.contains("no unlock key is set"), "{r:?}");
    let r = n.shoal(&["swarm", "unlock-key", "--rotate"]);
    assert!(r.code == 1 && r.stderr.contains("cannot rotate because autolock is not turned on"), "{r:?}");
    let r = n.shoal(&["swarm", "unlock"]);
    assert!(r.code == 1, "{r:?}");
    let r = shoal_stdin(&n, &["swarm", "unlock"], "SHLKEY-1-x\n");
    assert!(r.code == 1 && r.stderr.contains("swarm is not locked"), "{r:?}");

    let clear_ring = std::fs::read(n.data_dir().join("seal.key")).unwrap();
    let r = n.shoal(&["swarm", "update", "--autolock=true"]).ok();
    assert!(
        r.stdout.starts_with("Swarm updated.\nTo unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(
        "Please remember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    ));
    let key = key_in(&r.stdout);
    assert_eq!(key.len(), "SHLKEY-1-".len() + 43, "{key}");
    assert_eq!(n.shoal(&["swarm", "unlock-key", "-q"]).ok().stdout.trim(), key);
    assert!(n.shoal(&["info"]).ok().stdout.contains(" Autolock Managers: true\n"));

    let pids = running_pids(&n);
    assert_eq!(pids.len(), 2);
    let tasks_before: Vec<String> = n.ps_json("web").iter().map(|t| t["ID"].as_str().unwrap_or_default().to_string()).collect();

    // Turning autolock on replaced the data key: the clear one from before
    // (as in a copy of the data dir taken then) opens nothing any more.
    wait_for("the data key to be replaced", WAIT, || n.daemon_log().contains("replaced the data key with key 2").then_some(()));
    n.kill_daemon();
    let wrapped_ring = std::fs::read(n.data_dir().join("seal.key")).unwrap();
    assert_ne!(wrapped_ring, clear_ring);
    std::fs::write(n.data_dir().join("seal.key"), &clear_ring).unwrap();
    let r = daemon_exits(&n);
    assert_eq!(r.code, 1, "the old clear data key still opens the node: {r:?}");
    assert!(r.stderr.contains("sealed under data key 2, but this node holds data key 1"), "{}", r.stderr);
    std::fs::write(n.data_dir().join("seal.key"), &wrapped_ring).unwrap();

    // Restarted: locked, and only version/info/unlock/leave --force answer.
    n.start_daemon();
    assert_locked(&n);
    assert!(n.shoal(&["info"]).ok().stdout.contains("Swarm: locked\n"));
    let r = n.shoal(&["swarm", "leave"]);
    assert!(
        r.code == 1 && r.stderr.contains("Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message."),
        "{r:?}"
    );
    // A wrong key of the right shape, a malformed one.
    let wrong = format!("SHLKEY-1-{}", "A".repeat(43));
    for bad in [wrong.as_str(), "SHLKEY-1-abc", "not a key"] {
        let r = shoal_stdin(&n, &["swarm", "unlock"], &format!("{bad}\n"));
        assert_eq!(r.code, 1, "{bad}: {r:?}");
        assert!(r.stderr.contains(INVALID), "{bad}: {}", r.stderr);
        assert_locked(&n);
    }
    // While locked nothing touched the containers.
    assert_eq!(running_pids(&n), pids, "containers changed while locked");
    // The data dir holds no plaintext of the service's env, nor the unlock key.
    let leaks = files_containing(&n.data_dir(), marker.as_bytes());
    assert!(leaks.is_empty(), "the env marker is in {leaks:?}");
    let leaks = files_containing(&n.data_dir(), &key.as_bytes()[9..]);
    assert!(leaks.is_empty(), "the unlock key is in {leaks:?}");

    // Typed at a terminal (a pty from util-linux `script`): prompted, and not echoed.
    let cmd = format!("{} -H unix://{} swarm unlock", shoal_bin().display(), n.socket().display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    // Typed once the prompt is up (echo is off from then on); a slow start only delays the test.
    std::thread::sleep(Duration::from_millis(2_000));
    child.stdin.take().expect("stdin").write_all(format!("{key}\n").as_bytes()).expect("type the key");
    let r = Run::from(child.wait_with_output().expect("script output"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Enter unlock key: "), "{r:?}");
    assert!(!r.stdout.contains(&key[9..]), "the key was echoed: {r:?}");
    wait_for("the unlocked manager to answer", WAIT, || (n.shoal(&["service", "ls"]).code == 0).then_some(()));
    wait_for("2 running tasks after unlock", WAIT, || (n.running() == 2).then_some(()));
    assert_eq!(running_pids(&n), pids, "containers were restarted through lock and unlock");
    let tasks_after: Vec<String> = n.ps_json("web").iter().map(|t| t["ID"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(tasks_after, tasks_before);
    let r = shoal_stdin(&n, &["swarm", "unlock"], &format!("{key}\n"));
    assert!(r.code == 1 && r.stderr.contains("swarm is not locked"), "{r:?}");

    // Rotation: the old key stops working, the new one unlocks.
    let r = n.shoal(&["swarm", "unlock-key", "--rotate"]).ok();
    assert!(r.stdout.starts_with("Successfully rotated manager unlock key.\n\nTo unlock a swarm manager"), "{}", r.stdout);
    let new_key = key_in(&r.stdout);
    assert_ne!(new_key, key);
    wait_for("the rotation to reach the keyring", WAIT, || n.daemon_log().contains("generation 2").then_some(()));
    n.kill_daemon();
    n.start_daemon();
    assert_locked(&n);
    let r = shoal_stdin(&n, &["swarm", "unlock"], &format!("{key}\n"));
    assert!(r.code == 1 && r.stderr.contains(INVALID), "the previous key still unlocks: {r:?}");
    shoal_stdin(&n, &["swarm", "unlock"], &format!("{new_key}\n")).ok();
    wait_for("the unlocked manager to answer", WAIT, || (n.shoal(&["service", "ls"]).code == 0).then_some(()));

    // Autolock off: a restart needs no key.
    let r = n.shoal(&["swarm", "update", "--autolock=false"]).ok();
    assert_eq!(r.stdout, "Swarm updated.\n");
    wait_for("the keyring to be clear", WAIT, || n.daemon_log().contains("autolock off on this node").then_some(()));
    n.kill_daemon();
    n.start_daemon();
    n.shoal(&["service", "ls"]).ok();
    assert!(n.shoal(&["info"]).ok().stdout.contains(" Autolock Managers: false\n"));
    assert_eq!(running_pids(&n), pids);
}

#[test]
fn init_with_autolock_prints_the_key_and_leave_force_works_while_locked() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.start_daemon();
    let r = n.shoal(&["swarm", "init", "--autolock", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    assert!(r.stdout.starts_with("Swarm initialized: current node"), "{}", r.stdout);
    assert!(r.stdout.contains("\nTo unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    SHLKEY-1-"));
    let key = key_in(&r.stdout);
    let node_id = n.shoal(&["info"]).ok().stdout.lines().find_map(|l| l.trim().strip_prefix("NodeID: ").map(str::to_string)).unwrap();
    wait_for("the keyring to be wrapped", WAIT, || n.daemon_log().contains("generation 1").then_some(()));
    n.kill_daemon();
    n.start_daemon();
    assert_locked(&n);
    // A locked node still knows its id.
    assert!(n.shoal(&["info"]).ok().stdout.contains(&format!("NodeID: {node_id}")));
    let r = n.shoal(&["swarm", "leave", "--force"]).ok();
    assert_eq!(r.stdout, "Node left the swarm.\n");
    wait_for("the daemon to start outside any swarm", WAIT, || {
        let r = n.shoal(&["info"]);
        (r.code == 0 && r.stdout.contains("Swarm: inactive")).then_some(())
    });
    // The old key means nothing now, and a new swarm can be made.
    let r = shoal_stdin(&n, &["swarm", "unlock"], &format!("{key}\n"));
    assert!(r.code == 1 && r.stderr.contains("This node is not part of a swarm"), "{r:?}");
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    n.shoal(&["node", "ls"]).ok();
}

/// Runs `shoal daemon` on `n`'s data dir and waits (bounded) for it to exit.
fn daemon_exits(n: &Node) -> Run {
    let mut child = n.daemon_command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn shoal daemon");
    let done = wait_for("the daemon to refuse its data dir and exit", WAIT, || child.try_wait().ok().flatten());
    let _ = done;
    Run::from(child.wait_with_output().expect("daemon output"))
}

#[test]
fn a_damaged_database_or_keyring_is_refused_at_start_with_how_to_recover() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    n.shoal(&["service", "create", "-d", "--name", "web", "shoal.test/busybox", "sleep", "1000"]).ok();
    wait_for("1 running task", WAIT, || (n.running() == 1).then_some(()));
    n.terminate_daemon();
    let data = n.data_dir();
    // The state files (the data dir also holds namespace mounts, which are not copied).
    let files = ["shoal.redb", "seal.key", "node.key", "cluster.key"];
    let keep: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(data.join(f)).unwrap()).collect();
    let restore = || {
        for (f, b) in files.iter().zip(&keep) {
            std::fs::write(data.join(f), b).unwrap();
        }
    };

    // One flipped byte in every page after the header: refused, no panic.
    let db = data.join("shoal.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    for page in (4096..bytes.len()).step_by(4096) {
        bytes[page + 100] ^= 0x40;
    }
    std::fs::write(&db, &bytes).unwrap();
    let r = daemon_exits(&n);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is damaged") && r.stderr.contains("restore a backup"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    // A flipped bit in the data key: the sealed key files and records no longer open.
    restore();
    let ring = data.join("seal.key");
    let mut bytes = std::fs::read(&ring).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&ring, &bytes).unwrap();
    let r = daemon_exits(&n);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("does not open") && r.stderr.contains("authentication failed"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    // A truncated keyring.
    std::fs::write(&ring, &bytes[..20]).unwrap();
    let r = daemon_exits(&n);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("keyring") && r.stderr.contains("is corrupt"), "{}", r.stderr);

    // The intact copy still starts, with its task.
    restore();
    n.start_daemon();
    n.shoal(&["service", "ls"]).ok();
    wait_for("1 running task", WAIT, || (n.running() == 1).then_some(()));
}

#[test]
fn a_data_key_replacement_cut_short_is_finished_after_unlock() {
    use shoal_shared::seal::{load_keyring, save_keyring, Keyring, UnlockKey};
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_sleepers("web", 2);
    let key = key_in(&n.shoal(&["swarm", "update", "--autolock=true"]).ok().stdout);
    wait_for("the data key to be replaced", WAIT, || n.daemon_log().contains("replaced the data key with key 2").then_some(()));
    n.kill_daemon();
    // The state a crash right after step 1 of the next replacement leaves:
    // the keyring holds a new key 3 and the current key 2, every record and
    // key file is still sealed under key 2.
    let path = n.data_dir().join("seal.key");
    let unlock = UnlockKey::parse(&key).unwrap();
    let ring = load_keyring(&path).unwrap().unwrap();
    let current = ring.data_key(Some(&unlock)).unwrap();
    let epoch = ring.wrapped_epoch().unwrap();
    let rotating = Keyring::wrapped_rotating((3, &[0x33; 32]), (2, &current), &unlock, epoch, [[1; 24], [2; 24]]);
    save_keyring(&path, &rotating).unwrap();
    n.start_daemon();
    assert_locked(&n);
    shoal_stdin(&n, &["swarm", "unlock"], &format!("{key}\n")).ok();
    wait_for("the replacement to finish", WAIT, || n.daemon_log().contains("replaced the data key with key 3").then_some(()));
    n.shoal(&["service", "ls"]).ok();
    let ring = load_keyring(&path).unwrap().unwrap();
    assert!(!ring.is_rotating() && ring.key_id() == 3, "{ring:?}");
    assert_eq!(ring.data_key(Some(&unlock)).unwrap(), [0x33; 32]);
    // Everything opens under key 3 alone after a restart, with the tasks untouched.
    let pids = running_pids(&n);
    n.kill_daemon();
    n.start_daemon();
    shoal_stdin(&n, &["swarm", "unlock"], &format!("{key}\n")).ok();
    wait_for("the unlocked manager to answer", WAIT, || (n.shoal(&["service", "ls"]).code == 0).then_some(()));
    assert!(n.shoal(&["service", "ls"]).ok().stdout.contains("2/2"));
    assert_eq!(running_pids(&n), pids);
}
