//! HTTPS registries from the daemon (issue #16), against real
//! `docker-registry` processes serving TLS on a non-loopback address of this
//! machine, with certificates from a throwaway CA:
//! - a CA given with `--registry-ca HOST:PORT=FILE` makes `service create`
//!   pull over HTTPS; a CA trusted through the system store (the
//!   `SSL_CERT_FILE` bundle, as OpenSSL and Go read it) works the same;
//! - without the CA, or with the wrong one, the user reads why (unknown
//!   authority, and what to do);
//! - with basic auth: a pull without login is refused, a wrong password is
//!   refused by `shoal login` (nothing stored), a right one is stored in a
//!   0600 file and used by `image pull`; `shoal logout` forgets it; Docker's
//!   own `config.json` is read too.

use shoal_tests::{make_htpasswd, make_test_ca, skip_reason, test_image, Node, Registry, RegistryOpts};
use std::net::{IpAddr, UdpSocket};
use std::process::Command;

/// A non-loopback IPv4 address of this machine (no packet is sent).
fn local_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").or_else(|_| s.connect("10.255.255.255:9")).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn https_registries_trust_and_login() {
    if skip_reason().is_some() {
        return;
    }
    for tool in ["openssl", "htpasswd"] {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| !o.status.success()).unwrap_or(true) {
            panic!("{tool} is missing: run targets/setup.sh");
        }
    }
    let Some(ip) = local_ip() else {
        eprintln!("skipping: no non-loopback address on this machine");
        return;
    };
    let ip = ip.to_string();
    let dir = std::env::temp_dir().join(format!("shoal-it-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    make_test_ca(d, "ca", &ip);
    make_test_ca(d, "other", &ip);
    make_htpasswd(&d.join("htpasswd"), "fleet", "s3cret:pass");
    let cert = (d.join("ca-srv.pem"), d.join("ca-srv.key"));

    // An open HTTPS registry and one with basic auth.
    let open = Registry::start_with(&ip, &RegistryOpts { tls: Some(cert.clone()), ..Default::default() });
    open.push(&test_image(), "web:1", false);
    let auth = Registry::start_with(
        &ip,
        &RegistryOpts {
            tls: Some(cert),
            htpasswd: Some(d.join("htpasswd")),
            push_creds: Some("fleet:s3cret:pass".into()),
            ..Default::default()
        },
    );
    auth.push(&test_image(), "private:1", false);

    // 1. The CA given for the registry: a service pulls over HTTPS.
    let mut n = Node::new();
    let ca_flag = format!("{}={}", open.addr(), d.join("ca.pem").display());
    let ca_flag_auth = format!("{}={}", auth.addr(), d.join("ca.pem").display());
    n.start_daemon_with(&["--registry-ca", &ca_flag, "--registry-ca", &ca_flag_auth], &[("SSL_CERT_FILE", "/nonexistent")]);
    n.shoal(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0"]).ok();
    let info = n.shoal(&["info"]).ok().stdout;
    assert!(info.contains(&format!(" CA Roots:\n  Mozilla's (built in)\n  {ca_flag}\n  {ca_flag_auth}\n")), "{info}");
    let image = format!("{}/web:1", open.addr());
    let r = n.shoal(&["service", "create", "--name", "web", &image, "sleep", "1000"]).ok();
    assert!(r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    assert_eq!(n.running(), 1);

    // 2. Basic auth: refused without credentials, a wrong password is not
    // stored, the right one is and works; logout forgets it.
    let cfg = d.join("shoal-cli");
    let cfg_s = cfg.display().to_string();
    let env = [("SHOAL_CONFIG", cfg_s.as_str()), ("DOCKER_CONFIG", "/nonexistent")];
    let private = format!("{}/private:1", auth.addr());
    let r = n.shoal_with(&["image", "pull", &private], &env, "");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no credentials") || r.stderr.contains("unauthorized"), "{}", r.stderr);
    let r = n.shoal_with(&["login", "-u", "fleet", "--password-stdin", &auth.addr()], &env, "wrong\n");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("incorrect username or password"), "{}", r.stderr);
    assert!(!cfg.join("config.json").exists(), "a refused login stores nothing");
    let r = n.shoal_with(&["login", "-u", "fleet", "--password-stdin", &auth.addr()], &env, "s3cret:pass\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Login Succeeded"), "{}", r.stdout);
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(cfg.join("config.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let js: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cfg.join("config.json")).unwrap()).unwrap();
        assert!(js["auths"][auth.addr()]["auth"].is_string(), "{js}");
    }
    let r = n.shoal_with(&["image", "pull", &private], &env, "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(n.shoal(&["image", "ls"]).ok().stdout.contains(&format!("{}/private", auth.addr())));
    let r = n.shoal_with(&["logout", &auth.addr()], &env, "");
    assert!(r.stdout.contains(&format!("Removing login credentials for {}", auth.addr())), "{}", r.stdout);
    let r = n.shoal_with(&["image", "pull", &private], &env, "");
    assert_ne!(r.code, 0, "logged out: {}", r.stdout);

    // Docker's own config.json is read (existing logins work).
    let docker = d.join("docker-cli");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths": {{"{}": {{"auth": "ZmxlZXQ6czNjcmV0OnBhc3M="}}}}}}"#, auth.addr()))
        .unwrap();
    let docker_s = docker.display().to_string();
    let r = n.shoal_with(&["image", "pull", &private], &[("SHOAL_CONFIG", cfg_s.as_str()), ("DOCKER_CONFIG", docker_s.as_str())], "");
    assert_eq!(r.code, 0, "{}", r.stderr);

    // 3. No CA for it: the pull fails and says why and what to do.
    n.terminate_daemon();
    n.start_daemon_with(&[], &[("SSL_CERT_FILE", "/nonexistent")]);
    let r = n.shoal(&["image", "pull", &image]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("UnknownIssuer") && r.stderr.contains("--registry-ca"), "{}", r.stderr);
    // The wrong CA: the same.
    n.terminate_daemon();
    let wrong = format!("{}={}", open.addr(), d.join("other.pem").display());
    n.start_daemon_with(&["--registry-ca", &wrong], &[("SSL_CERT_FILE", "/nonexistent")]);
    let r = n.shoal(&["image", "pull", &image]);
    assert!(r.code != 0 && r.stderr.contains("UnknownIssuer"), "{}", r.stderr);
    // A CA file that is not one: the daemon refuses to start, and says so.
    n.terminate_daemon();
    let out = n.daemon_command().arg("--registry-ca").arg(d.join("htpasswd")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--registry-ca") && err.contains("holds no pem certificates"), "{err}");

    // 4. The CA in the system store (SSL_CERT_FILE): trusted with no flag.
    n.start_daemon_with(&[], &[("SSL_CERT_FILE", d.join("ca.pem").to_str().unwrap())]);
    let r = n.shoal(&["image", "pull", &format!("{}/web:1", open.addr())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    n.shoal(&["service", "rm", "web"]).ok();
    let _ = std::fs::remove_dir_all(&dir);
}
