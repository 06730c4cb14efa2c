//! Images from a real local registry (Debian's `docker-registry`, plain HTTP
//! on 127.0.0.1): `image pull`, and a service whose image is not on the node
//! pulls it before starting, pinned to the registry's digest.

use shoal_tests::{skip_reason, test_image, wait_for, Node, Registry, Relay};
use std::time::Duration;

#[test]
fn services_pull_missing_images_from_a_registry() {
    if skip_reason().is_some() {
        return;
    }
    let reg = Registry::start();
    reg.push(&test_image(), "app:1", false);
    let image = format!("127.0.0.1:{}/app:1", reg.port);

    let mut n = Node::new();
    n.start_daemon();
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
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
    reg.push(&test_image(), "app:2", false);
    let r = n.shoal(&["image", "pull", &format!("127.0.0.1:{}/app:2", reg.port)]).ok();
    assert!(r.stdout.contains("app:2"), "{}", r.stdout);
    // Docker's lines: its layers are those of app:1, a new name all the same.
    assert!(r.stdout.starts_with("2: Pulling from app\n"), "{}", r.stdout);
    assert!(r.stdout.contains(": Already exists\n") && r.stdout.contains("\nDigest: sha256:"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("Status: Downloaded newer image for 127.0.0.1:{}/app:2\n", reg.port)), "{}", r.stdout);
    let again = n.shoal(&["image", "pull", &format!("127.0.0.1:{}/app:2", reg.port)]).ok();
    assert!(again.stdout.contains(&format!("Status: Image is up to date for 127.0.0.1:{}/app:2\n", reg.port)), "{}", again.stdout);
    n.shoal(&["service", "rm", "pulled"]).ok();
    wait_for("containers gone", Duration::from_secs(30), || n.containers().is_empty().then_some(()));
}

/// `shoal daemon --registry-mirror HOST=URL`: a node pulls an image of a
/// registry it cannot reach from the mirror that serves that registry.
#[test]
fn a_mirror_serves_a_registry_the_node_cannot_reach() {
    if skip_reason().is_some() {
        return;
    }
    let mirror = Registry::start();
    mirror.push(&test_image(), "app:1", false);
    // Nothing listens on the registry's own address.
    let gone = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let mut n = Node::new();
    let flag = format!("{gone}=http://{}", mirror.addr());
    n.start_daemon_with(&["--registry-mirror", &flag], &[]);
    let info = n.shoal(&["info"]).ok().stdout;
    assert!(info.contains(&format!(" Registry Mirrors:\n  {flag}\n")), "{info}");
    let r = n.shoal(&["image", "pull", &format!("{gone}/app:1")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(n.shoal(&["image", "ls"]).ok().stdout.contains(&format!("{gone}/app")));
    // Without the mirror, the same pull says the registry is unreachable.
    n.terminate_daemon();
    n.start_daemon();
    let r = n.shoal(&["image", "pull", &format!("{gone}/app:2")]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("refused") || r.stderr.contains("unreachable"), "{}", r.stderr);
}

/// A pull that fails part way (its link cut more often than one pull
/// resumes) leaves what it got in containerd, kept by the blob's own lease:
/// the next pull asks the registry only for the rest.
#[test]
fn a_failed_pull_is_resumed_by_the_next_one() {
    if skip_reason().is_some() {
        return;
    }
    let reg = Registry::start();
    reg.push(&test_image(), "app:1", false);
    // The image's one layer, as the registry holds it.
    let layer_bytes = std::fs::metadata(test_image()).map(|m| m.len()).unwrap_or(0);
    // Cut at 40 % and again at 55 %: with one resume allowed, the pull fails.
    let relay = Relay::start("127.0.0.1", ("127.0.0.1", reg.port), vec![layer_bytes * 2 / 5, layer_bytes * 11 / 20]);
    let image = format!("127.0.0.1:{}/app:1", relay.port);
    let mut n = Node::new();
    n.start_daemon_env(&[("SHOAL_TEST_BLOB_RESUMES", "1")]);
    let r = n.shoal(&["image", "pull", &image]);
    assert_ne!(r.code, 0, "two cuts, one resume: the pull fails");
    assert_eq!(relay.cuts_done(), 2);
    let first = relay.served();
    assert!(n.ctr(&["content", "active"]).contains("shoal-blob-"), "the partial layer is kept");
    // The next pull: only what is missing.
    let r = n.shoal(&["image", "pull", &image]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(": Pull complete\n"), "{}", r.stdout);
    let second = relay.served() - first;
    eprintln!("first pull {first} bytes (failed), second {second} bytes, image archive {layer_bytes} bytes");
    assert!(second < layer_bytes * 3 / 5, "the second pull started over: {second} bytes after {first}");
    assert!(n.shoal(&["image", "ls"]).ok().stdout.contains(&format!("127.0.0.1:{}/app", relay.port)));
    // The image holds its blobs now: their own leases and the ingest are gone.
    assert!(!n.ctr(&["leases", "ls"]).contains("shoal-blob-"), "{}", n.ctr(&["leases", "ls"]));
    assert!(!n.ctr(&["content", "active"]).contains("shoal-blob-"));
}

/// Three tasks of one image starting together on a node download it once:
/// the others wait for the first pull (a metered uplink pays for one).
#[test]
fn tasks_starting_together_pull_their_image_once() {
    if skip_reason().is_some() {
        return;
    }
    let reg = Registry::start();
    reg.push(&test_image(), "app:1", false);
    let image_bytes = std::fs::metadata(test_image()).map(|m| m.len()).unwrap_or(0);
    let relay = Relay::start("127.0.0.1", ("127.0.0.1", reg.port), vec![]);
    let mut n = Node::new();
    n.start_daemon();
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    let image = format!("127.0.0.1:{}/app:1", relay.port);
    let r = n.shoal(&["service", "create", "--name", "three", "--replicas", "3", &image, "sleep", "1000"]).ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    assert_eq!(n.running(), 3);
    let served = relay.served();
    eprintln!("3 tasks: the registry sent {served} bytes for a {image_bytes}-byte image");
    assert!(served < image_bytes * 3 / 2, "downloaded more than once: {served} bytes for a {image_bytes}-byte image");
    n.shoal(&["service", "rm", "three"]).ok();
    wait_for("containers gone", Duration::from_secs(30), || n.containers().is_empty().then_some(()));
}

/// `service create`'s progress shows a task's download while its image
/// comes (Docker's `Downloading [===>   ] 1.2MB/4.5MB` shape) on a terminal
/// (`script` gives the CLI one), over a registry link of 200 KB/s.
#[test]
fn service_create_shows_the_download_of_its_tasks_image() {
    if skip_reason().is_some() {
        return;
    }
    let reg = Registry::start();
    reg.push(&test_image(), "slow:1", false);
    let relay = Relay::start_limited("127.0.0.1", ("127.0.0.1", reg.port), vec![], Some(200_000));
    let mut n = Node::new();
    n.start_daemon();
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    let image = format!("127.0.0.1:{}/slow:1", relay.port);
    let cmd =
        format!("{} -H unix://{} service create --name slow {image} sleep 1000", shoal_tests::shoal_bin().display(), n.socket().display());
    let out = std::process::Command::new("script").args(["-qefc", &cmd, "/dev/null"]).output().expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify: Service converged"), "{text}");
    let line = text
        .split(['\n', '\r'])
        .find(|l| l.contains("1/1: preparing Downloading ["))
        .unwrap_or_else(|| panic!("no download line in the progress:\n{text}"));
    assert!(line.contains("B/") && line.contains("MB"), "{line}");
    n.shoal(&["service", "rm", "slow"]).ok();
    wait_for("containers gone", Duration::from_secs(30), || n.containers().is_empty().then_some(()));
}

/// Token authentication (Docker Hub's, GHCR's): the registry sends clients
/// to a token server, which hands out a signed token for the right user and
/// password. A pull without login is refused, a wrong password is refused
/// by `shoal login`, the right one pulls.
#[test]
fn bearer_tokens_from_a_token_server() {
    if skip_reason().is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-it-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = shoal_tests::TokenServer::start("127.0.0.1", &dir, "fleet", "t0ken-pass");
    let opts = shoal_tests::RegistryOpts {
        token: Some((tokens.realm(), tokens.cert.clone())),
        push_creds: Some("fleet:t0ken-pass".into()),
        ..Default::default()
    };
    let reg = Registry::start_with("127.0.0.1", &opts);
    let image = reg.push(&test_image(), "team/app:1", false);
    assert!(tokens.issued() > 0, "skopeo pushed with a token");
    let mut n = Node::new();
    n.start_daemon();
    let cfg = dir.join("cli");
    let cfg_s = cfg.display().to_string();
    let env = [("SHOAL_CONFIG", cfg_s.as_str()), ("DOCKER_CONFIG", "/nonexistent")];
    let r = n.shoal_with(&["image", "pull", &image], &env, "");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("unauthorized") || r.stderr.contains("no credentials"), "{}", r.stderr);
    let refused = tokens.refused();
    let r = n.shoal_with(&["login", "-u", "fleet", "--password-stdin", &reg.addr()], &env, "wrong\n");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("incorrect username or password"), "{}", r.stderr);
    assert!(tokens.refused() > refused, "the token server refused the wrong password");
    let r = n.shoal_with(&["login", "-u", "fleet", "--password-stdin", &reg.addr()], &env, "t0ken-pass\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let issued = tokens.issued();
    let r = n.shoal_with(&["image", "pull", &image], &env, "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Status: Downloaded newer image"), "{}", r.stdout);
    assert!(tokens.issued() > issued, "the pull got its token from the token server");
    let _ = std::fs::remove_dir_all(&dir);
}
