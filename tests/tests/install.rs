//! The device installer (`targets/install.sh`, issue #18): its systemd unit
//! passes systemd's own verifier, and install/uninstall put and remove the
//! binary and the unit (into a scratch root: nothing on this machine is
//! touched, nothing is started).

use shoal_tests::{root, shoal_bin};
use std::path::Path;
use std::process::Command;

fn install_sh(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(root().join("targets/install.sh")).args(args).output().expect("run install.sh");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `systemd-analyze verify` on a unit file: (exit code, everything printed).
fn verify(unit: &Path) -> Option<(i32, String)> {
    let out = match Command::new("systemd-analyze").arg("verify").arg(unit).output() {
        Ok(o) => o,
        Err(_) if std::env::var("SHOAL_REQUIRE_TOOLS").as_deref() != Ok("1") => {
            eprintln!("SKIP: systemd-analyze is missing (apt-get install systemd; targets/setup.sh)");
            return None;
        }
        Err(e) => panic!("systemd-analyze is required (SHOAL_REQUIRE_TOOLS=1): {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap_or(-1), text))
}

#[test]
fn the_unit_verifies_and_install_uninstall_round_trip() {
    let dir = std::env::temp_dir().join(format!("shoal-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = shoal_bin();

    // The unit, pointing at a binary that exists, verifies without a word
    // (systemd-analyze exits 0 even on some bad values, but prints them).
    let (code, unit, err) = install_sh(&["unit", "--exec", bin.to_str().unwrap(), "--daemon-args", "--data-dir /var/lib/shoal"]);
    assert_eq!(code, 0, "{err}");
    assert!(unit.contains("Restart=always") && unit.contains("After=network-online.target containerd.service"), "{unit}");
    assert!(unit.contains(&format!("ExecStart={} daemon --data-dir /var/lib/shoal", bin.display())), "{unit}");
    assert!(unit.contains("KillMode=process"), "tasks outlive a daemon restart: {unit}");
    let file = dir.join("shoal.service");
    std::fs::write(&file, &unit).unwrap();
    if let Some((code, text)) = verify(&file) {
        assert_eq!((code, text.trim()), (0, ""), "systemd-analyze verify");
        // The verifier is not a rubber stamp: a bad value is reported.
        let bad = dir.join("bad.service");
        std::fs::write(&bad, unit.replace("Restart=always", "Restart=alwayz")).unwrap();
        let (_, text) = verify(&bad).unwrap();
        assert!(text.contains("alwayz"), "{text}");
    }

    // install and uninstall into a scratch root.
    let r = dir.join("root");
    let rs = r.to_str().unwrap();
    let (code, out, err) = install_sh(&["install", "--binary", bin.to_str().unwrap(), "--root", rs]);
    assert_eq!(code, 0, "{out}{err}");
    let installed = r.join("usr/local/bin/shoal");
    let meta = std::fs::metadata(&installed).expect("binary installed");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o755);
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&bin).unwrap());
    let written = std::fs::read_to_string(r.join("etc/systemd/system/shoal.service")).expect("unit installed");
    assert!(written.contains("ExecStart=/usr/local/bin/shoal daemon\n"), "{written}");
    std::fs::create_dir_all(r.join("var/lib/shoal")).unwrap();
    let (code, out, err) = install_sh(&["uninstall", "--root", rs]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!installed.exists() && !r.join("etc/systemd/system/shoal.service").exists());
    assert!(r.join("var/lib/shoal").exists(), "data stays without --purge");
    let (code, _, _) = install_sh(&["uninstall", "--root", rs, "--purge"]);
    assert_eq!(code, 0);
    assert!(!r.join("var/lib/shoal").exists());

    // Bad input is refused with a reason.
    let (code, _, err) = install_sh(&["install", "--binary", "/nonexistent/shoal", "--root", rs]);
    assert!(code != 0 && err.contains("binary /nonexistent/shoal not found"), "{err}");
    let (code, _, err) = install_sh(&["install", "--bogus"]);
    assert!(code != 0 && err.contains("unknown option --bogus"), "{err}");
    let (code, _, err) = install_sh(&["install", "--binary", "/bin/sh", "--root", rs]);
    assert!(code != 0 && err.contains("does not run here"), "not a shoal binary: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
