//! `shoal login` / `shoal logout` and the CLI's registry credentials.
//!
//! On disk: Docker's `config.json` format, `{"auths": {"REGISTRY": {"auth":
//! base64("USER:PASSWORD")}}}`, in `$SHOAL_CONFIG/config.json` (default
//! `~/.shoal/config.json`), written whole to a temporary file with mode 0600
//! in a 0700 directory and renamed over the old one; other keys of the file
//! are kept. Docker's own file (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`) is read too, after Shoal's, so that existing
//! logins work; it is never written. Docker Hub is stored under Docker's key
//! `https://index.docker.io/v1/`; other registries under `host[:port]`.
//! Credential helpers (`credsStore`, `credHelpers`) are not run.
//!
//! Credentials leave this file only inside a request that needs them
//! (`image pull`; `login` checks them through the daemon first).

use super::{call, REPLY_MS_IMAGES};
use anyhow::{bail, Context};
use clap::Args;
use shoal_shared::api::{RegistryAuth, Reply, Request};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Docker Hub's key in `config.json`, as Docker writes it.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// Largest credential file read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;
/// Longest password accepted on stdin.
const PASSWORD_BYTES_MAX: u64 = 64 << 10;

#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    /// Username.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Registry (`host[:port]`); Docker Hub when omitted.
    server: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct LogoutArgs {
    /// Registry (`host[:port]`); Docker Hub when omitted.
    server: Option<String>,
}

/// The registry a user names, as stored: Docker Hub's aliases become
/// Docker's key, anything else `host[:port]` without scheme or path.
pub(crate) fn registry_key(server: &str) -> String {
    let s = server.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB_KEY.to_string(),
        _ => host,
    }
}

/// The registry name the daemon is told (`docker.io` for Docker Hub).
fn daemon_registry(key: &str) -> &str {
    if key == DOCKER_HUB_KEY {
        "docker.io"
    } else {
        key
    }
}

/// Where Shoal keeps its credentials.
fn shoal_config() -> Option<PathBuf> {
    match std::env::var_os("SHOAL_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => home().map(|h| h.join(".shoal").join("config.json")),
    }
}

/// Docker's credential file (read only).
fn docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => home().map(|h| h.join(".docker").join("config.json")),
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// A credential file as JSON (an empty object when absent).
fn read_config(path: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            f.take(CONFIG_BYTES_MAX + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(serde_json::Map::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    if bytes.len() as u64 > CONFIG_BYTES_MAX {
        bail!("{} is over {CONFIG_BYTES_MAX} bytes", path.display());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => bail!("{} is not a JSON object", path.display()),
        Err(e) => bail!("{} is not valid JSON ({e}); fix or remove it", path.display()),
    }
}

/// The credentials stored for `key` in one file's `auths`.
fn lookup(config: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<RegistryAuth> {
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(k, _)| registry_key(k) == key).map(|(_, v)| v)?;
    let (username, password) = match entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        Some(a) => {
            let plain = String::from_utf8(base64_decode(a)?).ok()?;
            let (u, p) = plain.split_once(':')?;
            (u.to_string(), p.to_string())
        }
        None => (entry.get("username")?.as_str()?.to_string(), entry.get("password")?.as_str()?.to_string()),
    };
    (!username.is_empty()).then_some(RegistryAuth { username, password })
}

/// The stored credentials for the registry of an image reference (Shoal's
/// file first, then Docker's); unreadable files are passed over with a note.
pub(crate) fn credentials_for_image(reference: &str) -> Option<RegistryAuth> {
    let domain = shoal_image::Reference::parse(reference).ok()?.domain().to_string();
    credentials_for(&registry_key(&domain))
}

/// `--with-registry-auth`: the stored credentials for the image's registry,
/// or a warning that there are none (the request goes without).
pub(crate) fn registry_auth_flag(image: &str) -> Option<RegistryAuth> {
    let auth = credentials_for_image(image);
    if auth.is_none() {
        let registry = shoal_image::Reference::parse(image).map(|r| r.domain().to_string()).unwrap_or_else(|_| image.to_string());
        eprintln!("warning: --with-registry-auth: no credentials for {registry} (run `shoal login {registry}`); the service has none");
    }
    auth
}

fn credentials_for(key: &str) -> Option<RegistryAuth> {
    for path in [shoal_config(), docker_config()].into_iter().flatten() {
        match read_config(&path) {
            Ok(c) => {
                if let Some(a) = lookup(&c, key) {
                    return Some(a);
                }
            }
            Err(e) => eprintln!("WARNING: {e:#}; its credentials are not used"),
        }
    }
    None
}

/// Writes `config` to `path` (0600, its directory 0700), atomically.
fn write_config(path: &Path, config: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().context("credential file has no directory")?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let mut body = serde_json::to_vec_pretty(config)?;
    body.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

/// `shoal login`.
pub(crate) fn login(host: &str, a: LoginArgs) -> anyhow::Result<()> {
    let key = registry_key(a.server.as_deref().unwrap_or("docker.io"));
    let stdin = std::io::stdin();
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if a.password_stdin && a.username.is_none() {
        bail!("must provide --username with --password-stdin");
    }
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let interactive = stdin.is_terminal();
    let username = match a.username {
        Some(u) => u,
        None => {
            if !interactive {
                bail!("cannot perform an interactive login from a non TTY device: give --username and --password-stdin");
            }
            eprint!("Username: ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if username.is_empty() || username.contains(':') {
        bail!("invalid username {username:?}: it must be non-empty and hold no ':'");
    }
    let password = match a.password {
        Some(p) => p,
        None if a.password_stdin => {
            let mut p = String::new();
            stdin.lock().take(PASSWORD_BYTES_MAX).read_to_string(&mut p).context("cannot read the password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        None => {
            if !interactive {
                bail!("cannot perform an interactive login from a non TTY device: give --password-stdin");
            }
            eprint!("Password: ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            {
                let _echo_off = super::swarm::EchoOff::new(&stdin);
                stdin.lock().read_line(&mut line)?;
            }
            eprintln!();
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        bail!("password required");
    }
    let auth = RegistryAuth { username, password };
    match call(host, Request::RegistryLogin { registry: daemon_registry(&key).to_string(), auth: auth.clone() }, REPLY_MS_IMAGES)? {
        Reply::LoggedIn => {}
        r => return Err(super::unexpected(r)),
    }
    let path = shoal_config().context("no home directory: set HOME or SHOAL_CONFIG")?;
    let mut config = read_config(&path)?;
    let auths = config.entry("auths").or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !auths.is_object() {
        *auths = serde_json::Value::Object(Default::default());
    }
    let auths = auths.as_object_mut().expect("made an object above");
    auths.retain(|k, _| registry_key(k) != key);
    let encoded = base64_encode(format!("{}:{}", auth.username, auth.password).as_bytes());
    auths.insert(key, serde_json::json!({ "auth": encoded }));
    write_config(&path, &config)?;
    println!("Login Succeeded");
    Ok(())
}

/// `shoal logout`: forgets Shoal's stored credentials (Docker's file is
/// left alone, with a note when it still holds some).
pub(crate) fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let key = registry_key(a.server.as_deref().unwrap_or("docker.io"));
    let path = shoal_config().context("no home directory: set HOME or SHOAL_CONFIG")?;
    let mut config = read_config(&path)?;
    let removed = match config.get_mut("auths").and_then(|a| a.as_object_mut()) {
        Some(auths) => {
            let before = auths.len();
            auths.retain(|k, _| registry_key(k) != key);
            auths.len() != before
        }
        None => false,
    };
    if removed {
        println!("Removing login credentials for {key}");
        write_config(&path, &config)?;
    } else {
        println!("Not logged in to {key}");
    }
    if let Some(docker) = docker_config() {
        if read_config(&docker).ok().is_some_and(|c| lookup(&c, &key).is_some()) {
            eprintln!("NOTE: {} still holds credentials for {key} (Docker's; shoal only reads it)", docker.display());
        }
    }
    Ok(())
}

/// Padded standard base64.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not; `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let val = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = text.trim().trim_end_matches('=').as_bytes();
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for c in body.chunks(4) {
        let mut n = 0u32;
        for (i, &b) in c.iter().enumerate() {
            n |= val(b)? << (18 - 6 * i);
        }
        for i in 0..c.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "user:pass", "üñí:çødé/+"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(e.len() % 4, 0);
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{s}");
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("ab!c").is_none());
    }

    #[test]
    fn registry_keys() {
        assert_eq!(registry_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("https://index.docker.io/v1/"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("registry-1.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("Reg.Lan:5000"), "reg.lan:5000");
        assert_eq!(registry_key("https://ghcr.io"), "ghcr.io");
        assert_eq!(daemon_registry(DOCKER_HUB_KEY), "docker.io");
    }

    #[test]
    fn reads_docker_config_entries() {
        let c: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                          "reg.lan:5000": {"username": "u2", "password": "p:2"},
                          "empty.lan": {}},
                "credsStore": "desktop"}"#,
        )
        .unwrap();
        let hub = lookup(&c, &registry_key("docker.io")).unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("user", "pass"));
        let lan = lookup(&c, "reg.lan:5000").unwrap();
        assert_eq!((lan.username.as_str(), lan.password.as_str()), ("u2", "p:2"));
        assert!(lookup(&c, "empty.lan").is_none());
        assert!(lookup(&c, "other.lan").is_none());
        assert!(format!("{hub:?}").contains("<redacted>") && !format!("{hub:?}").contains("\"pass\""));
    }

    #[test]
    fn writes_private_files_and_keeps_other_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shoal-login-unit-{}", std::process::id()));
        let path = dir.join("sub").join("config.json");
        let mut c = serde_json::Map::new();
        c.insert("psFormat".into(), serde_json::json!("x"));
        c.insert("auths".into(), serde_json::json!({"a:1": {"auth": "dTpw"}}));
        write_config(&path, &c).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let back = read_config(&path).unwrap();
        assert_eq!(back, c);
        std::fs::write(&path, "{not json").unwrap();
        let e = read_config(&path).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
