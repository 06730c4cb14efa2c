//! A small blocking HTTP/1.1 client over `std::net::TcpStream`, just enough
//! for the registry v2 API: one request per connection (`Connection: close`),
//! `Content-Length`, `chunked` and read-to-close bodies, bounded response
//! heads, connect/read/write timeouts. Redirects and auth are the caller's
//! (registry.rs) business because they depend on registry policy.
//!
//! Host names: IP literals and `localhost` are handled without the system
//! resolver (static glibc binaries cannot use NSS reliably); other names go
//! through `ToSocketAddrs`, i.e. libc's `getaddrinfo`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response head (status line + headers).
pub(crate) const HEAD_BYTES_MAX: u64 = 64 << 10;
/// Most response headers.
const HEADERS_MAX: usize = 128;
/// Longest chunk-size line or trailer line.
const LINE_BYTES_MAX: u64 = 4096;

#[derive(Debug)]
pub(crate) enum HttpError {
    /// Could not resolve or connect.
    Connect(String),
    /// The URL is https and this build has no TLS.
    #[cfg_attr(feature = "tls", allow(dead_code))]
    Tls,
    /// The TLS handshake failed (certificate, protocol, timeout).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Handshake(String),
    /// Bad URL, malformed response, I/O error mid-exchange.
    Protocol(String),
}

/// A parsed `http(s)://authority/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    /// Host without brackets (`::1`, `127.0.0.1`, `example.com`).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
}

impl Url {
    pub(crate) fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("unsupported url {s:?}"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("urls with credentials are not supported".into());
        }
        let (host, port) = split_authority(authority).ok_or_else(|| format!("bad host in url {s:?}"))?;
        let port = port.unwrap_or(if https { 443 } else { 80 });
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("url path contains control characters or spaces".into());
        }
        Ok(Url { https, host, port, path })
    }

    /// `host[:port]` as sent in `Host:`, with brackets for IPv6 and the
    /// port left out when it is the scheme's default.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Resolves a `Location` header against this URL.
    pub(crate) fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            return Url::parse(&format!("{}:{location}", if self.https { "https" } else { "http" }));
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        let mut u = self.clone();
        u.path = path;
        Ok(u)
    }
}

/// Splits `host[:port]` / `[v6][:port]`.
pub(crate) fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((h.to_string(), port));
    }
    let (h, port) = match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (a, None),
    };
    if h.is_empty() || h.contains(':') {
        return None;
    }
    Some((h.to_string(), port))
}

/// Whether `host` (no brackets, no port) is a loopback name or address.
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A response whose body is still on the wire.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: String,
    /// Lowercased names.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Box<dyn Read + Send>,
    /// When [`Response::read_body`] gives up (request start + total timeout).
    deadline: Instant,
    total: Duration,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Reads the body into memory, failing past `limit` bytes.
    pub(crate) fn read_body(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let mut timed = Deadline { inner: &mut self.body, until: Some(self.deadline), total: self.total };
        (&mut timed).take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("response body over {limit} bytes")));
        }
        Ok(buf)
    }
}

pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    /// Per read (and write) on the socket.
    pub(crate) read: Duration,
    /// For the whole response head, and for bodies read with
    /// [`Response::read_body`]; streamed bodies only have the per-read bound.
    pub(crate) total: Duration,
}

fn addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port), SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)]);
    }
    let addrs: Vec<_> = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    if addrs.is_empty() {
        return Err(format!("cannot resolve {host}: no addresses"));
    }
    Ok(addrs)
}

fn connect(url: &Url, t: &Timeouts) -> Result<TcpStream, HttpError> {
    let mut last = String::from("no addresses");
    for addr in addresses(&url.host, url.port).map_err(HttpError::Connect)? {
        match TcpStream::connect_timeout(&addr, t.connect) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = match e.kind() {
                    io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                        format!("connection timed out after {} ms", t.connect.as_millis())
                    }
                    _ => e.to_string(),
                }
            }
        }
    }
    Err(HttpError::Connect(last))
}

/// Sends one request and reads the response head. `headers` must not
/// contain CR or LF (checked).
pub(crate) fn send(
    method: &str,
    url: &Url,
    headers: &[(&str, String)],
    t: &Timeouts,
    tls: &dyn Fn(&Url) -> Result<TlsConfig, HttpError>,
) -> Result<Response, HttpError> {
    // URLs can come from `Location` headers and token realms: keep them from
    // smuggling anything into the request head.
    let clean = |x: &str| !x.is_empty() && x.bytes().all(|b| b > b' ' && b != 0x7f);
    let host_ok = url.host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b));
    if !clean(&url.path) || !url.path.starts_with('/') || !host_ok || url.host.is_empty() {
        return Err(HttpError::Protocol("invalid url in request".into()));
    }
    let deadline = Instant::now() + t.total;
    let tls_config = if url.https { Some(tls(url)?) } else { None };
    let mut req = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shoal\r\nConnection: close\r\n", url.path, url.authority());
    for (k, v) in headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(HttpError::Protocol(format!("invalid request header {k}")));
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let stream = connect(url, t)?;
    let io_err = |e: io::Error| {
        HttpError::Protocol(match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                format!("no response within {} ms", t.read.as_millis())
            }
            _ => e.to_string(),
        })
    };
    stream.set_read_timeout(Some(t.read)).map_err(io_err)?;
    stream.set_write_timeout(Some(t.read)).map_err(io_err)?;
    let mut stream = match tls_config {
        Some(cfg) => wrap_tls(url, stream, cfg)?,
        None => Stream::Plain(stream),
    };
    stream.write_all(req.as_bytes()).map_err(io_err)?;
    stream.flush().map_err(io_err)?;
    let mut r = BufReader::new(Deadline { inner: stream, until: Some(deadline), total: t.total });
    let mut budget = HEAD_BYTES_MAX;
    let status_line = read_line(&mut r, &mut budget).map_err(io_err)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Protocol(format!("not an http/1 response: {:?}", status_line.chars().take(40).collect::<String>())));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| HttpError::Protocol("bad status line".into()))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut r, &mut budget).map_err(io_err)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= HEADERS_MAX {
            return Err(HttpError::Protocol(format!("more than {HEADERS_MAX} response headers")));
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(HttpError::Protocol("malformed response header".into()));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    // The body streams with the per-read bound only (read_body adds the deadline back).
    r.get_mut().until = None;
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body: Box<dyn Read + Send> = if method == "HEAD" || status / 100 == 1 || status == 204 || status == 304 {
        Box::new(io::empty())
    } else if find("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        Box::new(Chunked { inner: r, left: 0, done: false })
    } else if let Some(len) = find("content-length") {
        let len: u64 = len.parse().map_err(|_| HttpError::Protocol("bad content-length".into()))?;
        Box::new(Exact { inner: r, left: len })
    } else {
        Box::new(r)
    };
    Ok(Response { status, reason, headers, body, deadline, total: t.total })
}

/// TLS client configuration handed to [`send`] for https URLs.
#[cfg(feature = "tls")]
pub(crate) type TlsConfig = std::sync::Arc<rustls::ClientConfig>;
/// Without the `tls` feature there is no configuration to hand over.
#[cfg(not(feature = "tls"))]
pub(crate) type TlsConfig = std::convert::Infallible;

/// The connection: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(not(feature = "tls"))]
fn wrap_tls(_: &Url, _: TcpStream, cfg: TlsConfig) -> Result<Stream, HttpError> {
    match cfg {}
}

/// Runs the TLS handshake (bounded by the socket's read/write timeouts).
#[cfg(feature = "tls")]
fn wrap_tls(url: &Url, mut sock: TcpStream, cfg: TlsConfig) -> Result<Stream, HttpError> {
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| HttpError::Handshake(format!("bad server name {}: {e}", url.host)))?;
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| HttpError::Handshake(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| {
            let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            HttpError::Handshake(crate::tls::explain(&e, now_s))
        })?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock))))
}

/// A reader that fails once `until` has passed (checked before each read;
/// each read is itself bounded by the socket timeout).
struct Deadline<R> {
    inner: R,
    until: Option<Instant>,
    total: Duration,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.until.is_some_and(|u| Instant::now() >= u) {
            return Err(io::Error::other(format!("response not complete within {} ms", self.total.as_millis())));
        }
        self.inner.read(buf)
    }
}

/// Reads one CRLF- or LF-terminated line, charging it to `budget`.
fn read_line(r: &mut impl BufRead, budget: &mut u64) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.take(*budget).read_until(b'\n', &mut buf)?;
    *budget -= n as u64;
    if buf.last() != Some(&b'\n') {
        return Err(if *budget == 0 {
            io::Error::new(io::ErrorKind::InvalidData, "response head too large")
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response")
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not utf-8"))
}

/// A `Content-Length` body: exactly `left` bytes, EOF before that is an error.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed with {} body bytes missing", self.left)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A `Transfer-Encoding: chunked` body.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut budget = LINE_BYTES_MAX;
            let line = read_line(&mut self.inner, &mut budget)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                let mut budget = HEAD_BYTES_MAX;
                while !read_line(&mut self.inner, &mut budget)?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-chunk"));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut budget = 2;
            if !read_line(&mut self.inner, &mut budget)?.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "missing crlf after chunk"));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registry host names go through libc's resolver; in the static glibc
    /// builds (ppc64le, s390x, arm/v7, mips64le) that is glibc's NSS linked
    /// in statically. `localhost` through `getaddrinfo` exercises the `files`
    /// source (/etc/hosts); `SHOAL_TEST_RESOLVE_HOSTS` (comma-separated, set
    /// by targets/qemu-test.sh to registry names the build machine resolves)
    /// exercises `dns`.
    #[test]
    fn resolves_host_names_through_libc() {
        let local: Vec<SocketAddr> = ("localhost", 80).to_socket_addrs().expect("getaddrinfo(localhost)").collect();
        assert!(local.iter().any(|a| a.ip().is_loopback()), "localhost resolved to {local:?}");
        assert_eq!(addresses("127.0.0.1", 5000).unwrap(), vec![SocketAddr::from(([127, 0, 0, 1], 5000))]);
        let hosts = std::env::var("SHOAL_TEST_RESOLVE_HOSTS").unwrap_or_default();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let addrs = addresses(host, 443).unwrap_or_else(|e| panic!("{e}"));
            assert!(addrs.iter().all(|a| a.port() == 443), "{host}: {addrs:?}");
            println!("resolved {host}: {addrs:?}");
        }
    }

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:5000/v2/foo/manifests/1").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (false, "127.0.0.1", 5000, "/v2/foo/manifests/1"));
        assert_eq!(u.authority(), "127.0.0.1:5000");
        let u = Url::parse("https://auth.example.com?x=1").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.authority()), (443, "/?x=1", "auth.example.com".to_string()));
        let u = Url::parse("http://[::1]:80/a").unwrap();
        assert_eq!((u.host.as_str(), u.authority()), ("::1", "[::1]".to_string()));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://u:p@x/").is_err());
        assert!(Url::parse("http://x:99999/").is_err());
        assert!(Url::parse("http://x/a b").is_err());
        let base = Url::parse("http://h:1/v2/a/blobs/x").unwrap();
        assert_eq!(base.join("/other?q").unwrap().path, "/other?q");
        assert_eq!(base.join("y").unwrap().path, "/v2/a/blobs/y");
        assert_eq!(base.join("http://g/z").unwrap().host, "g");
    }

    #[test]
    fn refuses_urls_that_would_inject_headers() {
        let t = Timeouts { connect: Duration::from_millis(100), read: Duration::from_millis(100), total: Duration::from_millis(100) };
        let no_tls = |_: &Url| Err(HttpError::Tls);
        for path in ["/a\rInjected: x", "/a b", "a"] {
            let u = Url { https: false, host: "127.0.0.1".into(), port: 9, path: path.into() };
            assert!(matches!(send("GET", &u, &[], &t, &no_tls), Err(HttpError::Protocol(_))), "{path:?}");
        }
        let u = Url { https: false, host: "h\r\nx".into(), port: 9, path: "/".into() };
        assert!(matches!(send("GET", &u, &[], &t, &no_tls), Err(HttpError::Protocol(_))));
        let u = Url { https: false, host: "127.0.0.1".into(), port: 9, path: "/".into() };
        assert!(matches!(send("GET", &u, &[("X", "a\r\nb".into())], &t, &no_tls), Err(HttpError::Protocol(_))));
    }

    #[test]
    fn loopback_detection() {
        for h in ["localhost", "127.0.0.1", "127.9.9.9", "::1", "LOCALHOST"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "example.com", "localhost.example.com", "::2"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn chunked_bodies() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut out = String::new();
        Chunked { inner: &wire[..], left: 0, done: false }.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        let bad = b"zz\r\nhello\r\n";
        assert!(Chunked { inner: &bad[..], left: 0, done: false }.read_to_end(&mut Vec::new()).is_err());
        let cut = b"5\r\nhel";
        assert!(Chunked { inner: &cut[..], left: 0, done: false }.read_to_end(&mut Vec::new()).is_err());
        let huge = b"ffffffffffffffffffff\r\n";
        assert!(Chunked { inner: &huge[..], left: 0, done: false }.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn exact_bodies_detect_truncation() {
        let mut out = Vec::new();
        Exact { inner: &b"abc"[..], left: 3 }.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        assert!(Exact { inner: &b"ab"[..], left: 3 }.read_to_end(&mut Vec::new()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn chunked_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Chunked { inner: &b[..], left: 0, done: false }.read_to_end(&mut Vec::new());
        }

        #[test]
        fn urls_never_panic(s in ".{0,80}", loc in ".{0,40}") {
            if let Ok(u) = Url::parse(&s) {
                let _ = u.join(&loc);
                let _ = u.authority();
            }
            let _ = split_authority(&loc);
        }
    }
}
