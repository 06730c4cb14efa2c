//! Images from a real local registry (Debian's `docker-registry`, plain HTTP
//! on 127.0.0.1): `image pull`, and a service whose image is not on the node
//! pulls it before starting, pinned to the registry's digest.

use shoal_tests::{root, skip_reason, test_image, wait_for, Node};
use std::process::Command;
use std::time::Duration;

struct Registry {
    dir: std::path::PathBuf,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::path::PathBuf::from(format!("/tmp/shoal-it-reg-{}-{port}", std::process::id()));
        let st = Command::new(root().join("tests/lib/registry.sh")).arg("start").arg(&dir).arg(port.to_string()).status().unwrap();
        assert!(st.success(), "registry did not start");
        Registry { dir, port }
    }

    fn push(&self, archive: &std::path::Path, name: &str) {
        let dest = format!("docker://127.0.0.1:{}/{name}", self.port);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&dest)
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo push failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tests/lib/registry.sh")).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn services_pull_missing_images_from_a_registry() {
    if skip_reason().is_some() {
        return;
    }
    let reg = Registry::start();
    reg.push(&test_image(), "app:1");
    let image = format!("127.0.0.1:{}/app:1", reg.port);

    let mut n = Node::new();
    n.start_daemon();
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).ok();
    assert!(!n.shoal(&["image", "ls"]).ok().stdout.contains("app"), "not on the node yet");

    // A tag the registry does not have: refused, nothing created.
    let missing = format!("127.0.0.1:{}/app:nope", reg.port);
    let r = n.shoal(&["service", "create", "-d", "--name", "nope", &missing]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("manifest unknown") || r.stderr.contains("no such image"), "{}", r.stderr);
    assert!(n.shoal(&["service", "ls", "-q"]).ok().stdout.trim().is_empty());

    // The service pulls its image before starting.
    let r = n.shoal(&["service", "create", "--name", "pulled", "--replicas", "2", &image, "sleep", "1000"]).ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    assert_eq!(n.running(), 2);
    let js: serde_json::Value = serde_json::from_str(&n.shoal(&["service", "inspect", "pulled"]).ok().stdout).unwrap();
    let pinned = js[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap().to_string();
    assert!(pinned.starts_with(&format!("{image}@sha256:")), "{pinned}");
    let ls = n.shoal(&["image", "ls"]).ok().stdout;
    assert!(ls.contains(&format!("127.0.0.1:{}/app", reg.port)), "{ls}");

    // Explicit pull of another tag.
    reg.push(&test_image(), "app:2");
    let r = n.shoal(&["image", "pull", &format!("127.0.0.1:{}/app:2", reg.port)]).ok();
    assert!(r.stdout.contains("app:2"), "{}", r.stdout);
    n.shoal(&["service", "rm", "pulled"]).ok();
    wait_for("containers gone", Duration::from_secs(30), || n.containers().is_empty().then_some(()));
}
