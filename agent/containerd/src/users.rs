//! `--user NAME[:GROUP]`: names resolved from the image's own `/etc/passwd`
//! and `/etc/group`, read from the container's prepared snapshot without
//! mounting it (the overlay's upper directory, then its lower ones, top
//! first), as Docker resolves them (runc's rules).
//!
//! Rules: a numeric user is taken as is (its primary group comes from
//! passwd when listed there, else 0); a name must be in passwd. An explicit
//! group (number or name from the group file) is the primary group;
//! without one, a named user also gets every group that lists it as a
//! member (`additionalGids`). Files are read up to
//! [`USER_FILE_BYTES_MAX`]; a whiteout (deleted in an upper layer) counts
//! as missing.

use containerd_client::types::Mount;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// Largest passwd or group file read from an image.
pub const USER_FILE_BYTES_MAX: u64 = 1 << 20;

/// Who the container's process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `user` (`NAME|UID[:GROUP|GID]`) against the texts of the
/// image's passwd and group files (`None`: the file is absent).
pub fn resolve(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() {
        return Err(format!("invalid user {user:?}: use NAME|UID[:GROUP|GID]"));
    }
    // name:x:uid:gid:...
    let entries = passwd.unwrap_or("").lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4);
    let (uid, mut gid, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let found = entries.clone().find(|f| f[2].parse() == Ok(uid));
            (uid, found.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0), found.map(|f| f[0]))
        }
        Err(_) => {
            let f = entries
                .clone()
                .find(|f| f[0] == u)
                .ok_or_else(|| format!("unable to find user {u}: no matching entries in passwd file"))?;
            let uid = f[2].parse().map_err(|_| format!("user {u} has a bad uid {:?} in the image's passwd file", f[2]))?;
            let gid = f[3].parse().map_err(|_| format!("user {u} has a bad gid {:?} in the image's passwd file", f[3]))?;
            (uid, gid, Some(f[0]))
        }
    };
    // name:x:gid:member,member
    let groups = group.unwrap_or("").lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4);
    let mut additional_gids = Vec::new();
    match g {
        Some("") => return Err(format!("invalid user {user:?}: empty group")),
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .clone()
                    .find(|f| f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
            }
        }
        None if u.parse::<u32>().is_err() => {
            let name = name.unwrap_or(u);
            for f in groups {
                if f[3].split(',').any(|m| m.trim() == name) {
                    if let Ok(n) = f[2].parse::<u32>() {
                        if n != gid && !additional_gids.contains(&n) {
                            additional_gids.push(n);
                        }
                    }
                }
            }
        }
        None => {}
    }
    Ok(ExecUser { uid, gid, additional_gids })
}

/// The layer directories of a prepared snapshot, top first: an overlay's
/// `upperdir` then its `lowerdir`s, or a bind mount's source.
fn layer_dirs(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "bind" | "rbind" => dirs.push(PathBuf::from(&m.source)),
            "overlay" => {
                if let Some(up) = m.options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
                    dirs.push(PathBuf::from(up));
                }
                if let Some(low) = m.options.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
                    dirs.extend(low.split(':').map(PathBuf::from));
                }
            }
            _ => {}
        }
    }
    dirs
}

/// The text of `rel` (e.g. `etc/passwd`) in the snapshot, if it exists.
pub(crate) fn rootfs_file(mounts: &[Mount], rel: &str) -> Result<Option<String>, String> {
    for dir in layer_dirs(mounts) {
        let path = dir.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_char_device() {
            return Ok(None); // an overlay whiteout: deleted above the layers below
        }
        if !meta.is_file() {
            return Err(format!("/{rel} in the image is not a regular file"));
        }
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(USER_FILE_BYTES_MAX).read_to_string(&mut text))
            .map_err(|e| format!("cannot read /{rel} of the image: {e}"))?;
        return Ok(Some(text));
    }
    Ok(None)
}

/// Whether `user` needs the image's files (a name in either part).
pub fn needs_lookup(user: &str) -> bool {
    user.split(':').any(|p| !p.is_empty() && p.parse::<u32>().is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nweb:x:1000:1000::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nweb:x:1000:\nwww-data:x:33:web\naudio:x:29:nobody,web\n";

    fn r(u: &str) -> Result<ExecUser, String> {
        resolve(u, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_and_numbers_resolve_as_docker_does() {
        assert_eq!(r("nobody"), Ok(ExecUser { uid: 65534, gid: 65534, additional_gids: vec![29] }));
        assert_eq!(r("web"), Ok(ExecUser { uid: 1000, gid: 1000, additional_gids: vec![33, 29] }));
        // An explicit group replaces the primary one and drops the others.
        assert_eq!(r("web:audio"), Ok(ExecUser { uid: 1000, gid: 29, additional_gids: vec![] }));
        assert_eq!(r("web:7"), Ok(ExecUser { uid: 1000, gid: 7, additional_gids: vec![] }));
        assert_eq!(r("1000:www-data"), Ok(ExecUser { uid: 1000, gid: 33, additional_gids: vec![] }));
        // A numeric user not in passwd runs with group 0 (runc's default).
        assert_eq!(r("4242:nogroup"), Ok(ExecUser { uid: 4242, gid: 65534, additional_gids: vec![] }));
    }

    #[test]
    fn unknown_names_fail_with_dockers_message() {
        assert_eq!(r("nosuch"), Err("unable to find user nosuch: no matching entries in passwd file".into()));
        assert_eq!(r("web:nosuch"), Err("unable to find group nosuch: no matching entries in group file".into()));
        assert_eq!(
            resolve("nobody", None, None),
            Err("unable to find user nobody: no matching entries in passwd file".into()),
            "an image without /etc/passwd"
        );
        assert!(r("web:").is_err() && r(":web").is_err());
        // Garbage lines are skipped, never a panic.
        assert_eq!(
            resolve("a", Some("a:x\n::::\na:x:notnum:1\n"), None),
            Err("user a has a bad uid \"notnum\" in the image's passwd file".into())
        );
    }

    #[test]
    fn only_names_need_a_lookup() {
        assert!(needs_lookup("nobody") && needs_lookup("1000:staff") && needs_lookup("web:7"));
        assert!(!needs_lookup("1000") && !needs_lookup("1000:50") && !needs_lookup(""));
    }

    #[test]
    fn files_are_read_from_the_top_layer_down_and_whiteouts_hide_them() {
        let base = std::env::temp_dir().join(format!("shoal-users-test-{}", std::process::id()));
        let (upper, mid, low) = (base.join("upper"), base.join("mid"), base.join("low"));
        for d in [&upper, &mid, &low] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::write(low.join("etc/passwd"), "low").unwrap();
        std::fs::write(mid.join("etc/passwd"), "mid").unwrap();
        let overlay = |lower: String| Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![format!("upperdir={}", upper.display()), format!("lowerdir={lower}"), "workdir=/w".into()],
        };
        let m = [overlay(format!("{}:{}", mid.display(), low.display()))];
        assert_eq!(rootfs_file(&m, "etc/passwd"), Ok(Some("mid".into())));
        assert_eq!(rootfs_file(&m, "etc/group"), Ok(None));
        let bind = [Mount { r#type: "bind".into(), source: low.display().to_string(), target: String::new(), options: vec![] }];
        assert_eq!(rootfs_file(&bind, "etc/passwd"), Ok(Some("low".into())));
        // A whiteout in `mid` (needs CAP_MKNOD, so only when we have it).
        let wh = std::ffi::CString::new(mid.join("etc/group").display().to_string()).unwrap();
        std::fs::write(low.join("etc/group"), "g").unwrap();
        // SAFETY: a valid path; makes a 0/0 character device, an overlay whiteout.
        if unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) } == 0 {
            assert_eq!(rootfs_file(&m, "etc/group"), Ok(None));
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
