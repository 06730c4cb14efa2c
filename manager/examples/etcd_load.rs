//! Load generator for etcd v3 through its JSON gRPC gateway, the etcd side
//! of `targets/raft-bench.sh` (the Shoal side is the `raft_bench` example).
//!
//! ```text
//! cargo run --release -p shoal-manager --example etcd_load -- \
//!     --endpoints 127.0.0.1:23790,127.0.0.1:23792,127.0.0.1:23794 [--secs 3] [--bytes 128]
//! ```
//! Asks every endpoint for its status (`POST /v3/maintenance/status`), picks
//! the leader and sends every put there (no follower forwarding hop, like the
//! Shoal bench, which proposes at the leader). Detects whether the gateway is
//! served under `/v3/` or `/v3beta/`. Then runs 1 client and 64 clients,
//! each client a thread with one HTTP/1.1 keep-alive connection and one put
//! outstanding (`POST <prefix>/kv/put`, base64 key and a `--bytes` value), for
//! `--secs` seconds, and prints commits/s with p50/p99 of the request round
//! trip, in the same line shape as `raft_bench`. Plain `std::net`, no deps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive HTTP/1.1 connection to one endpoint.
struct Conn {
    host: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(host: &str) -> Result<Conn, String> {
        let addr = host.parse().map_err(|e| format!("{host}: {e}"))?;
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect {host}: {e}"))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
        stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn { host: host.to_string(), reader: BufReader::new(stream), writer })
    }

    /// POSTs `body` to `path`; returns (status code, response body).
    fn post(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.writer.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(|e| format!("read status: {e}"))?;
        // "HTTP/1.1 200 OK"
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(|e| format!("read header: {e}"))?;
            if n == 0 {
                return Err("connection closed in headers".into());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "content-length" {
                    length = value.parse::<usize>().ok();
                } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if let Some(len) = length {
            body.resize(len, 0);
            self.reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
        } else if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).map_err(|e| format!("read chunk: {e}"))?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0u8; size + 2]; // data + CRLF
                self.reader.read_exact(&mut chunk).map_err(|e| format!("read chunk: {e}"))?;
                if size == 0 {
                    break; // (no trailers from the gateway)
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            return Err("response without Content-Length or chunked encoding".into());
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The string value of `"field":"..."` in a flat-enough JSON text (the
/// gateway encodes uint64 as strings).
fn json_str<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let pat = format!("\"{field}\":\"");
    let start = json.find(&pat)? + pat.len();
    let end = json[start..].find('"')?;
    Some(&json[start..start + end])
}

/// (gateway prefix, leader endpoint).
fn discover(endpoints: &[String]) -> Result<(String, String), String> {
    let mut prefix = None;
    let mut conn = Conn::open(&endpoints[0])?;
    for p in ["/v3", "/v3beta"] {
        let (status, _) = conn.post(&format!("{p}/maintenance/status"), "{}")?;
        if status == 200 {
            prefix = Some(p.to_string());
            break;
        }
        conn = Conn::open(&endpoints[0])?; // a 404 may close the connection
    }
    let prefix = prefix.ok_or("neither /v3 nor /v3beta gateway answers maintenance/status")?;
    for ep in endpoints {
        let (status, body) = Conn::open(ep)?.post(&format!("{prefix}/maintenance/status"), "{}")?;
        if status != 200 {
            return Err(format!("{ep}: status {status}: {body}"));
        }
        if let (Some(me), Some(leader)) = (json_str(&body, "member_id"), json_str(&body, "leader")) {
            if me == leader {
                return Ok((prefix, ep.clone()));
            }
        }
    }
    Err("no endpoint reports itself as leader".into())
}

struct Outcome {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
}

fn run(leader: &str, put_path: &str, clients: usize, secs: u64, bytes: usize) -> Result<Outcome, String> {
    let value = base64(&vec![b'x'; bytes]);
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::open(leader)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(clients + 1));
    let mut handles = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let (stop, go, value, path) = (stop.clone(), go.clone(), value.clone(), put_path.to_string());
        handles.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            go.wait();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let body = format!("{{\"key\":\"{}\",\"value\":\"{value}\"}}", base64(format!("bench/{clients}/{c}/{seq}").as_bytes()));
                let t = Instant::now();
                match conn.post(&path, &body) {
                    Ok((200, _)) => lat.push(t.elapsed().as_micros() as u64),
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert(format!("status {status}: {body}"));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        match Conn::open(&conn.host) {
                            Ok(c) => conn = c,
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    go.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome { latencies_us: Vec::new(), errors: 0, first_error: None, secs: 0.0 };
    for h in handles {
        let (lat, errors, first_error) = h.join().map_err(|_| "client thread panicked")?;
        out.latencies_us.extend(lat);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    // Requests outstanding at the stop finish after it and are counted:
    // measure up to the last one's completion, as raft_bench does.
    out.secs = start.elapsed().as_secs_f64();
    Ok(out)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|k| args.get(k + 1)).cloned();
    let arg = |name: &str, default: u64| -> u64 { opt(name).and_then(|v| v.parse().ok()).unwrap_or(default) };
    let secs = arg("--secs", 3);
    let bytes = arg("--bytes", 128) as usize;
    let Some(endpoints) = opt("--endpoints") else {
        eprintln!("usage: etcd_load --endpoints HOST:PORT[,HOST:PORT...] [--secs 3] [--bytes 128]");
        std::process::exit(2);
    };
    let endpoints: Vec<String> = endpoints.split(',').map(|s| s.trim().trim_start_matches("http://").to_string()).collect();
    let (prefix, leader) = match discover(&endpoints) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("etcd_load: {e}");
            std::process::exit(1);
        }
    };
    let put_path = format!("{prefix}/kv/put");
    println!("etcd 3-member cluster, puts to the leader {leader} via POST {put_path}, {bytes}-byte values, {secs} s per run");
    let mut failed = false;
    for clients in [1usize, 64] {
        match run(&leader, &put_path, clients, secs, bytes) {
            Ok(mut o) => {
                o.latencies_us.sort_unstable();
                let commits = o.latencies_us.len();
                println!(
                    "clients={clients:>2}: {:>8.0} commits/s, p50 {:>6.2} ms, p99 {:>6.2} ms ({} commits)",
                    commits as f64 / o.secs.max(1e-9),
                    percentile(&o.latencies_us, 0.50) as f64 / 1000.0,
                    percentile(&o.latencies_us, 0.99) as f64 / 1000.0,
                    commits
                );
                if o.errors > 0 {
                    println!("  ({} failed requests; first: {})", o.errors, o.first_error.unwrap_or_default());
                    failed = failed || commits == 0;
                }
            }
            Err(e) => {
                println!("clients={clients}: run failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
