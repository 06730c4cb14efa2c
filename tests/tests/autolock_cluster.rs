//! Autolock across several managers (issue #13), each in its own network
//! namespace with real containerd:
//! - a rotation while one manager is unreachable: the leader names it, the
//!   reachable managers re-wrap at once, the unreachable one still unlocks
//!   with the previous key until it has caught up, then only with the new
//!   (partitioned away, or restarted and left locked);
//! - quorum loss: the survivor, unlocked, forces a new cluster and stays in
//!   it, still autolocked under the same key (Docker's moby#36852 leaves
//!   such a node in no swarm);
//! - the backup of an autolocked running manager, restored at another
//!   address, starts locked and restores once unlocked.

use serde_json::Value;
use shoal_tests::cluster::{Cluster, ClusterNode, TcpProbe, SWARM_PORT};
use shoal_tests::{wait_for_seen, Run};
use std::time::Duration;

const IMAGE: &str = "shoal.test/busybox:latest";
const WAIT: Duration = Duration::from_secs(60);
const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal swarm unlock\" to unlock it.";
const INVALID: &str = "swarm could not be unlocked: invalid key provided";

/// The `SHLKEY-1-...` line of a command's output.
fn key_in(out: &str) -> String {
    out.lines().map(str::trim).find(|l| l.starts_with("SHLKEY-1-")).unwrap_or_else(|| panic!("no unlock key in:\n{out}")).to_string()
}

/// The daemon log line a manager writes when it wraps its keyring at `epoch`.
fn wrapped_at(epoch: u64) -> String {
    format!("(generation {epoch})")
}

fn unlock(n: &ClusterNode, key: &str) -> Run {
    n.shoal_stdin(&["swarm", "unlock"], &format!("{key}\n"))
}

fn assert_locked(n: &ClusterNode) {
    let r = n.shoal(&["service", "ls"]);
    assert_eq!(r.code, 1, "node {}: a locked manager answered service ls: {} {}", n.index(), r.stdout, r.stderr);
    assert!(r.stderr.contains(LOCKED), "{}", r.stderr);
    assert!(n.shoal(&["info"]).ok().stdout.contains("Swarm: locked\n"));
}

/// `key` is refused by the locked node `n`, which stays locked.
fn refuses(n: &ClusterNode, key: &str) {
    let r = unlock(n, key);
    assert!(r.code == 1 && r.stderr.contains(INVALID), "node {}: {key} unlocked it: {r:?}", n.index());
    assert_locked(n);
}

/// Unlocks `n` with `key` and waits until it runs as an unlocked daemon.
fn unlocks(n: &ClusterNode, key: &str) {
    let r = unlock(n, key);
    assert_eq!(r.code, 0, "node {}: the key did not unlock it: {r:?}", n.index());
    wait_for_seen("the unlocked manager to leave the locked mode", WAIT, || {
        let info = n.shoal(&["info"]);
        (info.code == 0 && info.stdout.contains("Swarm: active")).then_some(()).ok_or(format!("{info:?}"))
    });
}

/// SIGKILLs node `i` and starts it again: it must come up locked.
fn restart_locked(c: &mut Cluster, i: usize) {
    c.nodes[i].kill();
    c.nodes[i].start();
    assert_locked(&c.nodes[i]);
}

/// `swarm update --autolock=true` on node `on`; waits until every running
/// manager of `managers` has wrapped its keyring. Returns the key.
fn autolock_on(c: &Cluster, on: usize, managers: &[usize]) -> String {
    let r = c.nodes[on].shoal(&["swarm", "update", "--autolock=true"]).ok();
    let key = key_in(&r.stdout);
    for &i in managers {
        wait_for_seen("every manager to wrap its keyring", WAIT, || {
            c.nodes[i].log().contains(&wrapped_at(1)).then_some(()).ok_or(i.to_string())
        });
    }
    key
}

/// `(ID, Hostname, Status, ManagerStatus)` of every node in node `on`'s `node ls`.
fn nodes(c: &Cluster, on: usize) -> Vec<(String, String, String, String)> {
    let r = c.nodes[on].shoal(&["node", "ls", "--format", "json"]);
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (s(&v, "ID"), s(&v, "Hostname"), s(&v, "Status"), s(&v, "ManagerStatus")))
        .collect()
}

/// Waits until node `on` lists `n` managers, all Ready, one leading and the rest reachable.
fn wait_managers_ready(c: &Cluster, on: usize, n: usize) {
    wait_for_seen(&format!("{n} managers Ready and reachable in node {on}'s node ls"), WAIT, || {
        let ns = nodes(c, on);
        let ready = ns.iter().filter(|(_, _, st, _)| st == "Ready");
        let leaders = ns.iter().filter(|(_, _, _, m)| m == "Leader").count();
        let reachable = ns.iter().filter(|(_, _, _, m)| m == "Reachable").count();
        (ns.len() == n && ready.count() == n && leaders == 1 && reachable == n - 1).then_some(()).ok_or(format!("{ns:?}"))
    });
}

/// `service ps` rows of `service` in state Running (desired and current), on node `on`.
fn running_tasks(c: &Cluster, on: usize, service: &str) -> usize {
    let r = c.nodes[on].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")) && v["DesiredState"] == "Running")
        .count()
}

fn wait_running(c: &Cluster, on: usize, service: &str, n: usize) {
    wait_for_seen(&format!("{n} running tasks of {service} (asked node {on})"), WAIT, || {
        let k = running_tasks(c, on, service);
        (k == n).then_some(()).ok_or(format!("{k} running"))
    });
}

/// A swarm of `managers` managers on a cluster of `nodes` nodes, autolock
/// on (every manager wrapped), service `web` with `replicas` running tasks.
/// Returns the cluster, the leader and the unlock key.
fn autolocked_swarm(nodes: usize, managers: usize, replicas: usize) -> Option<(Cluster, usize, String)> {
    let mut c = Cluster::new(nodes)?;
    c.init(managers, 0);
    wait_managers_ready(&c, 0, managers);
    let l = c.wait_for_leader(WAIT);
    let all: Vec<usize> = (0..managers).collect();
    let key = autolock_on(&c, l, &all);
    let n = replicas.to_string();
    c.nodes[l].shoal(&["service", "create", "-d", "--name", "web", "--replicas", &n, IMAGE, "sleep", "3600"]).ok();
    wait_running(&c, l, "web", replicas);
    Some((c, l, key))
}

#[test]
fn a_rotation_reaches_an_unreachable_manager_once_it_catches_up() {
    let Some((mut c, l, key1)) = autolocked_swarm(3, 3, 3) else { return };

    // One follower (`p`) is cut off; the leader sees it unreachable.
    let (p, r) = ((l + 1) % 3, (l + 2) % 3);
    let pid = c.node_id(p).expect("node id");
    c.nodes[p].partition();
    let host = wait_for_seen("the leader to see the partitioned manager unreachable", WAIT, || {
        let ns = nodes(&c, l);
        ns.iter().find(|(id, _, _, m)| *id == pid && m == "Unreachable").map(|n| n.1.clone()).ok_or(format!("{ns:?}"))
    });

    // The rotation names it: it needs the previous key until it has caught up.
    let rot = c.nodes[l].shoal(&["swarm", "unlock-key", "--rotate"]).ok();
    assert!(rot.stdout.starts_with("Successfully rotated manager unlock key.\n\nTo unlock a swarm manager"), "{}", rot.stdout);
    let key2 = key_in(&rot.stdout);
    assert_ne!(key2, key1);
    assert_eq!(
        rot.stderr.trim(),
        format!("WARNING: managers {host} are unreachable: each still needs the previous unlock key to restart until it has caught up"),
        "only the partitioned manager is named"
    );
    assert_eq!(c.nodes[l].shoal(&["swarm", "unlock-key", "-q"]).ok().stdout.trim(), key2);
    // The reachable managers re-wrap at once.
    for i in [l, r] {
        wait_for_seen("the reachable managers to re-wrap", WAIT, || {
            c.nodes[i].log().contains(&wrapped_at(2)).then_some(()).ok_or(i.to_string())
        });
    }

    // The partitioned manager restarts while still cut off: locked, and only the previous key opens it.
    restart_locked(&mut c, p);
    refuses(&c.nodes[p], &key2);
    unlocks(&c.nodes[p], &key1);
    assert!(!c.nodes[p].log().contains(&wrapped_at(2)), "the partitioned manager cannot know the new key yet");

    // Healed, it catches up and re-wraps; after a restart only the new key opens it.
    c.nodes[p].heal();
    wait_for_seen("the healed manager to re-wrap at the new generation", WAIT, || {
        c.nodes[p].log().contains(&wrapped_at(2)).then_some(()).ok_or(c.nodes[p].log_tail(5))
    });
    wait_managers_ready(&c, l, 3);
    restart_locked(&mut c, p);
    refuses(&c.nodes[p], &key1);
    unlocks(&c.nodes[p], &key2);
    // So does a manager that was reachable all along.
    restart_locked(&mut c, r);
    refuses(&c.nodes[r], &key1);
    unlocks(&c.nodes[r], &key2);

    let l = c.wait_for_leader(WAIT);
    wait_managers_ready(&c, l, 3);

    // A manager left locked (its swarm port closed) during a rotation is named
    // too, unlocks with the previous key and catches up at once.
    let q = (l + 1) % 3;
    let qid = c.node_id(q).expect("node id");
    restart_locked(&mut c, q);
    let probe = c.nodes[l].tcp_probe(&c.nodes[q].ip, SWARM_PORT, 3);
    assert_eq!(probe, TcpProbe::Refused, "a locked manager accepts no links");
    wait_for_seen("the leader to see the locked manager unreachable", WAIT, || {
        let ns = nodes(&c, l);
        ns.iter().any(|(id, _, _, m)| *id == qid && m == "Unreachable").then_some(()).ok_or(format!("{ns:?}"))
    });
    let rot = c.nodes[l].shoal(&["swarm", "unlock-key", "--rotate"]).ok();
    let key3 = key_in(&rot.stdout);
    assert!(rot.stderr.starts_with(&format!("WARNING: managers {host} are unreachable")), "{}", rot.stderr);
    refuses(&c.nodes[q], &key3);
    unlocks(&c.nodes[q], &key2);
    wait_for_seen("the unlocked manager to re-wrap at the new generation", WAIT, || {
        c.nodes[q].log().contains(&wrapped_at(3)).then_some(()).ok_or(c.nodes[q].log_tail(5))
    });
    restart_locked(&mut c, q);
    refuses(&c.nodes[q], &key2);
    unlocks(&c.nodes[q], &key3);

    let l = c.wait_for_leader(WAIT);
    for i in 0..3 {
        wait_managers_ready(&c, i, 3);
    }
    wait_running(&c, l, "web", 3);
    wait_for_seen("3 containers of web", WAIT, || {
        let n: usize = c.nodes.iter().map(ClusterNode::running_tasks).sum();
        (n == 3).then_some(()).ok_or(n.to_string())
    });
}

#[test]
fn after_quorum_loss_the_unlocked_survivor_forces_a_new_cluster_and_stays_autolocked() {
    let Some((mut c, l, key)) = autolocked_swarm(3, 3, 2) else { return };
    let services = c.nodes[l].shoal(&["service", "ls"]).ok().stdout;

    // Two managers die for good; the survivor restarts locked and is unlocked without quorum.
    let s = 0;
    c.nodes[1].kill();
    c.nodes[2].kill();
    restart_locked(&mut c, s);
    refuses(&c.nodes[s], &format!("SHLKEY-1-{}", "A".repeat(43)));
    unlocks(&c.nodes[s], &key);

    let n = &c.nodes[s];
    let r = n.shoal(&["swarm", "init", "--force-new-cluster", "--advertise-addr", &n.ip]).ok();
    assert!(r.stdout.contains(&n.addr()), "{}", r.stdout);
    wait_for_seen("service ls as before and web's 2 tasks running on the survivor", WAIT, || {
        let ls = c.nodes[s].shoal(&["service", "ls"]).stdout;
        let (k, on) = (running_tasks(&c, s, "web"), c.nodes[s].running_tasks());
        (ls == services && k == 2 && on == 2).then_some(()).ok_or(format!("{ls}\n{k} running, {on} containers"))
    });
    let ns = nodes(&c, s);
    assert_eq!(ns.iter().filter(|(_, _, _, m)| !m.is_empty()).count(), 1, "one manager left: {ns:?}");
    let info = n.shoal(&["info"]).ok().stdout;
    assert!(info.contains("Swarm: active\n") && info.contains("Is Manager: true") && info.contains(" Autolock Managers: true\n"), "{info}");
    assert_eq!(n.shoal(&["swarm", "unlock-key", "-q"]).ok().stdout.trim(), key);

    // Still in its swarm, still autolocked under the same key.
    let pids = c.nodes[s].tasks_pids();
    restart_locked(&mut c, s);
    unlocks(&c.nodes[s], &key);
    wait_for_seen("the new cluster to answer again", WAIT, || {
        let ls = c.nodes[s].shoal(&["service", "ls"]).stdout;
        (ls == services && running_tasks(&c, s, "web") == 2).then_some(()).ok_or(ls)
    });
    assert_eq!(c.nodes[s].tasks_pids(), pids, "the same containers");
    assert_eq!(nodes(&c, s).iter().filter(|(_, _, _, m)| m == "Leader").count(), 1);
}

#[test]
fn an_autolocked_managers_backup_restores_elsewhere_locked_until_unlocked() {
    let Some((mut c, _, key)) = autolocked_swarm(2, 1, 2) else { return };
    let m = &c.nodes[0];
    m.shoal(&["network", "create", "-d", "overlay", "locknet"]).ok();
    let services = m.shoal(&["service", "ls"]).ok().stdout;
    let networks = m.shoal(&["network", "ls"]).ok().stdout;
    assert!(services.contains("web") && services.contains("2/2"), "{services}");

    let archive = c.dir().join("backup.tar");
    m.shoal(&["swarm", "backup", "-o", archive.to_str().expect("utf-8 path")]).ok();
    c.nodes[0].terminate();

    // Node 1 (another address) starts from the archive: locked, its keyring wrapped.
    c.nodes[1].restore_data_dir(&archive);
    c.nodes[1].start();
    let n = &c.nodes[1];
    assert_locked(n);
    refuses(n, &format!("SHLKEY-1-{}", "A".repeat(43)));
    unlocks(n, &key);
    c.load_test_image(1);
    let r = n.shoal(&["swarm", "init", "--force-new-cluster", "--advertise-addr", &n.ip]).ok();
    assert!(r.stdout.contains(&n.addr()), "the new address is advertised: {}", r.stdout);
    wait_for_seen("service ls as at the backup, web's tasks running on the restored node", WAIT, || {
        let ls = c.nodes[1].shoal(&["service", "ls"]).stdout;
        let on = c.nodes[1].running_tasks();
        (ls == services && on == 2).then_some(()).ok_or(format!("{ls}\n{on} containers"))
    });
    assert_eq!(n.shoal(&["network", "ls"]).ok().stdout, networks);
    let info = n.shoal(&["info"]).ok().stdout;
    assert!(info.contains(&n.ip) && info.contains(" Autolock Managers: true\n"), "{info}");
    assert_eq!(n.shoal(&["swarm", "unlock-key", "-q"]).ok().stdout.trim(), key);
}
