//! A registry token server for tests (Docker's token authentication, as
//! Docker Hub, GHCR and Harbor use it): `GET /token?service=S&scope=...`
//! with HTTP basic credentials is answered with a JWT signed RS256 by a
//! throwaway key (its self-signed certificate in the `x5c` header, which
//! the registry trusts through `rootcertbundle`). Signing runs `openssl`;
//! the key is made by `openssl` at start. Counts the tokens it issued and
//! the requests it refused.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The token server's names (the registry's `auth.token` settings).
pub const TOKEN_SERVICE: &str = "shoal-test-registry";
pub const TOKEN_ISSUER: &str = "shoal-test-issuer";

/// A running token server (threads; nothing to stop).
pub struct TokenServer {
    pub port: u16,
    /// The host it listens on.
    pub host: String,
    /// The certificate the registry trusts its tokens by.
    pub cert: PathBuf,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl TokenServer {
    /// Starts one on `host` with key and certificate in `dir`, granting
    /// every asked scope to `user` with `password` (and to nobody else).
    pub fn start(host: &str, dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=shoal-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().expect("run openssl");
        assert!(der.status.success());
        let x5c = base64(&der.stdout, false);
        let listener = TcpListener::bind((host, 0)).expect("bind token server");
        let port = listener.local_addr().expect("token server address").port();
        let (issued, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (i, r) = (issued.clone(), refused.clone());
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes(), false));
        let user = user.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut authorization = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = v.trim().to_string();
                        }
                    }
                }
                let mut conn = conn;
                if authorization != expected {
                    r.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let scopes: Vec<String> = target
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
                    .collect();
                let token = sign(&key, &x5c, &user, &scopes);
                i.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { port, host: host.to_string(), cert, issued, refused }
    }

    /// The realm registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}:{}/token", self.host, self.port)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Requests refused (no or wrong credentials) so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// A JWT for `subject` granting each `scope` (`repository:NAME:ACTIONS`).
fn sign(key: &Path, x5c: &str, subject: &str, scopes: &[String]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let access: Vec<String> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
            Some(format!(r#"{{"type":"{kind}","name":"{name}","actions":[{}]}}"#, actions.join(",")))
        })
        .collect();
    let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{x5c}"]}}"#);
    let claims = format!(
        r#"{{"iss":"{TOKEN_ISSUER}","sub":"{subject}","aud":"{TOKEN_SERVICE}","exp":{},"nbf":{},"iat":{now},"jti":"{now}-{}","access":[{}]}}"#,
        now + 300,
        now.saturating_sub(10),
        std::process::id(),
        access.join(",")
    );
    let signing_input = format!("{}.{}", base64(header.as_bytes(), true), base64(claims.as_bytes(), true));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl");
    child.stdin.take().expect("stdin").write_all(signing_input.as_bytes()).expect("write to openssl");
    let out = child.wait_with_output().expect("openssl");
    format!("{signing_input}.{}", base64(&out.stdout, true))
}

/// Base64 (RFC 4648), URL-safe without padding when `url`.
pub fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc() {
        assert_eq!(super::base64(b"foobar", false), "Zm9vYmFy");
        assert_eq!(super::base64(b"fooba", false), "Zm9vYmE=");
        assert_eq!(super::base64(b"foob", false), "Zm9vYg==");
        assert_eq!(super::base64(&[0xfb, 0xff], true), "-_8");
    }
}
