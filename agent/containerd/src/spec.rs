//! The OCI runtime spec (config.json) for a container, built from typed
//! inputs. Mirrors containerd 1.6's default Unix spec (`oci.populateDefaultUnixSpec`)
//! except for the network namespace: the container joins the one its caller
//! made (`ContainerSpec::netns`), or shares the host's.

use serde_json::{json, Value};

use crate::{ContainerSpec, MountKind};

/// Capabilities granted by default (containerd's / Docker's default set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths masked inside the container.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths mounted read-only inside the container.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `PATH` set when the caller's env has none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shim-group annotation read by the runc v2 shim.
pub const SHIM_GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// CFS period used to turn `nano_cpus` into a quota.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Builds the runtime spec for `spec` in containerd namespace `namespace`.
/// `host_files` lists host files (e.g. /etc/resolv.conf) to bind read-only
/// at the same path, needed because the container uses the host network.
pub fn build(spec: &ContainerSpec, namespace: &str, host_files: &[&str]) -> Value {
    let (uid, gid) = spec.user.unwrap_or((0, 0));
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    for f in host_files {
        mounts.push(json!({"destination": f, "type": "bind", "source": f,
                           "options": ["rbind", "rprivate", "ro"]}));
    }
    for m in &spec.mounts {
        let rw = if m.read_only { "ro" } else { "rw" };
        mounts.push(match m.kind {
            MountKind::Bind => json!({"destination": m.destination, "type": "bind",
                "source": m.source, "options": ["rbind", "rprivate", rw]}),
            MountKind::Tmpfs => json!({"destination": m.destination, "type": "tmpfs",
                "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", rw]}),
        });
    }

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = spec.memory_limit_bytes {
        resources["memory"] = json!({ "limit": limit });
    }
    if let Some(nano) = spec.nano_cpus {
        let quota = nano.saturating_mul(CPU_PERIOD_US as i64) / 1_000_000_000;
        resources["cpu"] = json!({ "quota": quota.max(1000), "period": CPU_PERIOD_US });
    }

    let mut annotations = serde_json::Map::new();
    if let Some(g) = &spec.shim_group {
        annotations.insert(SHIM_GROUP_ANNOTATION.into(), Value::String(g.clone()));
    }

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    // Without a "network" entry the container shares the host's network namespace.
    if let Some(path) = &spec.netns {
        namespaces.push(json!({"type": "network", "path": path.display().to_string()}));
    }

    json!({
        "ociVersion": "1.0.2-dev",
        "root": {"path": "rootfs"},
        "hostname": spec.hostname,
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": spec.args,
            "env": env,
            "cwd": if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() },
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "mounts": mounts,
        "annotations": annotations,
        "linux": {
            "cgroupsPath": format!("/{namespace}/{}", spec.id),
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MountSpec;

    fn sample() -> ContainerSpec {
        let mut s = ContainerSpec::new("c1", "img", "sha256:abc", vec!["sh".into()], "/tmp/l");
        s.memory_limit_bytes = Some(64 << 20);
        s.nano_cpus = Some(500_000_000);
        s.shim_group = Some("g".into());
        s.mounts.push(MountSpec { source: "/data".into(), destination: "/data".into(), kind: MountKind::Bind, read_only: true });
        s
    }

    #[test]
    fn spec_has_limits_namespaces_and_defaults() {
        let v = build(&sample(), "ns1", &["/etc/hosts"]);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["cgroupsPath"], "/ns1/c1");
        assert_eq!(v["annotations"][SHIM_GROUP_ANNOTATION], "g");
        assert_eq!(v["process"]["env"][0], DEFAULT_PATH);
        assert_eq!(v["process"]["cwd"], "/");
        let ns: Vec<&str> = v["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(!ns.contains(&"network"));
        let mounts = v["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts"));
        assert!(mounts.iter().any(|m| m["destination"] == "/data" && m["options"][2] == "ro"));
    }

    #[test]
    fn a_container_joins_the_network_namespace_it_is_given() {
        let mut s = sample();
        s.netns = Some("/run/shoal/netns/t1".into());
        let v = build(&s, "ns1", &[]);
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        let net: Vec<&serde_json::Value> = ns.iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0]["path"], "/run/shoal/netns/t1");
        assert!(!v["mounts"].as_array().unwrap().iter().any(|m| m["destination"] == "/etc/hosts"));
    }
}
