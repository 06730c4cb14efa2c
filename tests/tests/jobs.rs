//! Jobs end to end (issue #17): `--mode replicated-job` and `global-job`
//! on a real node, real containers run to completion.

use shoal_tests::{skip_reason, wait_for, Node};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `(complete, failed, running)` counts of a service's tasks per `service ps`.
fn states(n: &Node, svc: &str) -> (usize, usize, usize) {
    let rows = n.ps_json(svc);
    let count = |s: &str| rows.iter().filter(|t| t["CurrentState"].as_str().unwrap_or("").starts_with(s)).count();
    (count("Complete"), count("Failed"), count("Running"))
}

#[test]
fn replicated_and_global_jobs_run_to_completion_and_run_again_on_force() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    // Four completions, two at a time; each records when it ran.
    let r = n
        .shoal(&[
            "service",
            "create",
            "--name",
            "batch",
            "--mode",
            "replicated-job",
            "--replicas",
            "4",
            "--max-concurrent",
            "2",
            "shoal.test/busybox",
            "sh",
            "-c",
            "echo job-ran $HOSTNAME; sleep 1",
        ])
        .ok();
    assert!(r.stdout.contains("job progress: 4 out of 4 complete"), "{}", r.stdout);
    assert!(r.stdout.contains("verify: Job complete"), "{}", r.stdout);
    assert_eq!(states(&n, "batch"), (4, 0, 0), "four complete tasks, none running");
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    let row = ls.lines().find(|l| l.contains(" batch ")).expect("batch listed");
    assert!(row.contains("replicated job") && row.contains("0/0 (4/4 completed)"), "{ls}");
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["service", "inspect", "batch"]).ok().stdout).unwrap();
    assert_eq!(js[0]["Spec"]["Mode"]["ReplicatedJob"]["MaxConcurrent"], 2);
    assert_eq!(js[0]["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"], 4);
    assert_eq!(js[0]["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"], "on-failure", "Docker's default for jobs");
    let logs = n.shoal(&["service", "logs", "batch"]).ok().stdout;
    assert_eq!(logs.matches("job-ran").count(), 4, "{logs}");
    // Done stays done: nothing runs again by itself.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(states(&n, "batch"), (4, 0, 0));
    assert_eq!(n.running(), 0);

    // `--force` runs the job again: four more completions.
    let r = n.shoal(&["service", "update", "--force", "batch"]).ok();
    assert!(r.stdout.contains("job progress: 4 out of 4 complete"), "{}", r.stdout);
    wait_for("eight completions in the logs", WAIT, || {
        (n.shoal(&["service", "logs", "batch"]).ok().stdout.matches("job-ran").count() == 8).then_some(())
    });
    assert_eq!(states(&n, "batch").0, 8, "the first run's tasks stay in the history");

    // A global job: once on the node.
    let r = n.shoal(&["service", "create", "--name", "once", "--mode", "global-job", "shoal.test/busybox", "true"]).ok();
    assert!(r.stdout.contains("job progress: 1 out of 1 complete"), "{}", r.stdout);
    let ls = n.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.contains(" once ") && l.contains("global job") && l.contains("(1/1 completed)")), "{ls}");

    // Refused, with the reason.
    let r = n.shoal(&["service", "scale", "once=3"]);
    assert!(r.stderr.contains("scale can only be used with replicated or replicated-job mode"), "{}", r.stderr);
    let r = n.shoal(&["service", "create", "--max-concurrent", "2", "shoal.test/busybox", "true"]);
    assert!(r.stderr.contains("--max-concurrent can only be used with replicated-job mode"), "{}", r.stderr);
    let r = n.shoal(&["service", "create", "--mode", "replicated-job", "--restart-condition", "any", "shoal.test/busybox", "true"]);
    assert!(r.stderr.contains("jobs may not have restart condition \"any\""), "{}", r.stderr);
    let r = n.shoal(&["service", "rollback", "batch"]);
    assert!(r.stderr.contains("jobs have no rolling update"), "{}", r.stderr);
}

#[test]
fn a_job_that_fails_for_good_fails_its_create() {
    if skip_reason().is_some() {
        return;
    }
    let mut n = Node::new();
    n.init_with_image();
    let r = n.shoal(&[
        "service",
        "create",
        "--name",
        "broken",
        "--mode",
        "replicated-job",
        "--restart-max-attempts",
        "1",
        "--restart-delay",
        "100ms",
        "shoal.test/busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("job broken failed") && r.stderr.contains("will not run again"), "{}", r.stderr);
    assert!(r.stderr.contains("exit (3)") || r.stderr.contains("exit code 3"), "the task's error: {}", r.stderr);
    // Tried twice (the first run and one retry), then left failed.
    assert_eq!(states(&n, "broken"), (0, 2, 0));
}
