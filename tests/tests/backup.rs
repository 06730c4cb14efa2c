//! `shoal swarm backup -o FILE` (issue #13): a running manager's archive
//! restores on a fresh node at another address (`swarm init
//! --force-new-cluster --advertise-addr NEW`), a worker rejoins with a new
//! token and the service's tasks run again, with `service ls` and `network
//! ls` as they were when the backup was taken; a cold copy (`cp -a`) of a
//! stopped manager's data dir starts too. Refusals: outside a swarm, on a
//! worker, to a directory that does not exist, to stdout.

use shoal_tests::cluster::Cluster;
use shoal_tests::{wait_for_seen, Run};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "shoal.test/busybox:latest";
const WAIT: Duration = Duration::from_secs(60);

/// `service ps` rows in state Running (desired and current) on node `on`.
fn running_tasks(c: &Cluster, on: usize, service: &str) -> usize {
    let r = c.nodes[on].shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")) && v["DesiredState"] == "Running")
        .count()
}

fn refused(r: Run, says: &str) {
    assert_eq!(r.code, 1, "refused with exit code 1; stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(says), "stderr says {says:?}: {}", r.stderr);
}

#[test]
fn a_running_managers_backup_restores_at_another_address_and_workers_rejoin() {
    let Some(mut c) = Cluster::new(3) else { return };
    c.init(1, 1);
    let archive = c.dir().join("backup.tar");
    let out = archive.to_str().expect("utf-8 path").to_string();

    // Refusals: outside a swarm, on a worker, to a missing directory, to stdout.
    c.nodes[2].start();
    refused(c.nodes[2].shoal(&["swarm", "backup", "-o", &out]), "This node is not part of a swarm");
    refused(c.nodes[1].shoal(&["swarm", "backup", "-o", &out]), "this node is not a swarm manager; run swarm backup on a manager");
    let missing = c.dir().join("no/such/dir/b.tar");
    refused(c.nodes[0].shoal(&["swarm", "backup", "-o", missing.to_str().expect("utf-8")]), "does not exist");
    refused(c.nodes[0].shoal(&["swarm", "backup", "-o", "-"]), "stdout is not supported");
    assert!(!archive.exists() && !c.dir().join("no").exists(), "nothing was written");

    // State: an overlay network and a service whose two tasks run on the manager and the worker.
    let m = &c.nodes[0];
    m.shoal(&["network", "create", "-d", "overlay", "backnet"]).ok();
    m.shoal(&["service", "create", "-d", "--name", "web", "--replicas", "2", IMAGE, "sleep", "3600"]).ok();
    wait_for_seen("2 running tasks of web", WAIT, || {
        let n = running_tasks(&c, 0, "web");
        (n == 2 && c.nodes[0].running_tasks() + c.nodes[1].running_tasks() == 2).then_some(()).ok_or(format!("{n} running"))
    });
    let services = m.shoal(&["service", "ls"]).ok().stdout;
    let networks = m.shoal(&["network", "ls"]).ok().stdout;
    assert!(services.contains("web") && services.contains("2/2"), "{services}");
    assert!(networks.contains("backnet") && networks.contains("ingress"), "{networks}");

    // The backup, on the running manager.
    let started = Instant::now();
    let r = m.shoal(&["swarm", "backup", "-o", &out]).ok();
    let took = started.elapsed();
    let size = std::fs::metadata(&archive).expect("archive written").len();
    eprintln!("swarm backup took {} ms; archive {size} bytes", took.as_millis());
    assert!(r.stdout.contains(&format!("Backup written to {out} ({size} bytes")), "{}", r.stdout);
    assert!(r.stdout.contains("raft index"), "{}", r.stdout);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&archive).expect("archive").permissions().mode() & 0o777, 0o600);
    let list = Command::new("tar").arg("-tvf").arg(&archive).output().expect("run tar");
    assert!(list.status.success() && list.stderr.is_empty(), "{}", String::from_utf8_lossy(&list.stderr));
    let listing = String::from_utf8_lossy(&list.stdout);
    let names: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    // The keyring (seal.key) holds the data key the database and key files are sealed under.
    assert_eq!(names, ["shoal.redb", "cluster.key", "node.key", "seal.key"], "{listing}");
    assert!(listing.lines().all(|l| l.starts_with("-rw------- ")), "{listing}");
    // A write after the backup is not in it.
    m.shoal(&["service", "create", "-d", "--name", "after", IMAGE, "sleep", "3600"]).ok();

    // Everything stops; node 2 (another address) starts from the archive.
    for i in 0..3 {
        c.nodes[i].terminate();
    }
    c.nodes[2].restore_data_dir(&archive);
    c.nodes[2].start();
    c.load_test_image(2);
    let n2 = &c.nodes[2];
    let r = n2.shoal(&["swarm", "init", "--force-new-cluster", "--advertise-addr", &n2.ip]).ok();
    assert!(r.stdout.contains(&n2.addr()), "the new address is advertised: {}", r.stdout);
    assert_eq!(n2.shoal(&["network", "ls"]).ok().stdout, networks, "network ls as at the backup");
    let info = n2.shoal(&["info"]).ok().stdout;
    assert!(info.contains("Is Manager: true") && info.contains(&n2.ip), "{info}");

    // The worker leaves its lost swarm and joins the restored one with a new token.
    let token = n2.shoal(&["swarm", "join-token", "--rotate", "-q", "worker"]).ok().stdout.trim().to_string();
    c.nodes[1].start();
    let w = &c.nodes[1];
    w.shoal(&["swarm", "leave", "--force"]).ok();
    w.shoal(&["swarm", "join", "--token", &token, "--advertise-addr", &w.ip, &c.nodes[2].addr()]).ok();
    wait_for_seen("web's tasks running again, service ls as at the backup", WAIT, || {
        let ls = c.nodes[2].shoal(&["service", "ls"]).stdout;
        let (on2, on1) = (c.nodes[2].running_tasks(), c.nodes[1].running_tasks());
        let ok = ls == services && running_tasks(&c, 2, "web") == 2 && on2 >= 1 && on1 + on2 == 2;
        ok.then_some(()).ok_or(format!("{ls}\ncontainers: node 2 {on2}, node 1 {on1}"))
    });
    assert_eq!(c.nodes[2].shoal(&["network", "ls"]).ok().stdout, networks);

    // The cold copy: node 2 stops, its data dir is copied as is into node 0's, which starts from it.
    c.nodes[2].terminate();
    let d0 = c.nodes[0].data_dir();
    std::fs::remove_dir_all(&d0).expect("wipe node 0's data dir");
    let cp = Command::new("cp").arg("-a").arg(c.nodes[2].data_dir()).arg(&d0).output().expect("run cp");
    assert!(cp.status.success(), "cp -a: {}", String::from_utf8_lossy(&cp.stderr));
    c.nodes[0].start();
    let ls = c.nodes[0].shoal(&["service", "ls"]).ok().stdout;
    let row = services.lines().find(|l| l.contains("web")).expect("web row");
    let id = row.split_whitespace().next().expect("id");
    assert!(ls.lines().any(|l| l.starts_with(id) && l.contains(" web ")), "the cold copy holds the state: {ls}");
}
