//! Added link delay for cluster tests, without `netem` (this kernel has
//! none): an NFQUEUE queue whose verdicts are held back.
//!
//! [`DelayQueue::on_input`] binds queue [`QUEUE_NUM`] in a node's network
//! namespace over raw netlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_QUEUE`: config `BIND`, copy mode meta only, a kernel queue
//! length, fail-open) and adds `iptables -t security -A INPUT -p tcp ! -i lo
//! -j NFQUEUE --queue-num N --queue-bypass` there. The security table's
//! INPUT hook runs after the filter table's, so whatever the filter table
//! drops (loss rules, partitions) never reaches the queue: the survivors are
//! delayed. A thread of the test process reads each queued packet's id
//! (`NFQNL_MSG_PACKET`), holds it for the delay on the monotonic clock, then
//! accepts it (`NFQNL_MSG_VERDICT_BATCH`: every id up to the newest expired
//! one, so a packet whose message was lost to a full socket buffer is
//! released too, never stuck). Applied on every node's INPUT, each direction
//! of every link gets the delay once.
//!
//! Bounded: at most [`HELD_MAX`] packets are held; beyond that a packet is
//! accepted at once and counted ([`Stats::overflowed`]). The kernel queue is
//! longer and fails open; `--queue-bypass` lets packets through while nothing
//! is bound. Every wait is bounded; bytes from the kernel are parsed without
//! panicking (malformed messages are counted and skipped). Drop deletes the
//! rule, then stops the thread, which accepts everything still held and
//! unbinds.
//!
//! The netlink socket is created inside the namespace (by
//! [`shoal_netlink::netns::run_in`]): it belongs to the namespace it was made
//! in, so the holding thread itself runs in the test's own namespace.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::{ClusterNode, NETNS_EXEC_TIMEOUT_S};

/// The queue number the rule and the binding use (queues are per namespace).
pub const QUEUE_NUM: u16 = 0;
/// Most packets held at once; beyond this they are accepted without delay.
pub const HELD_MAX: usize = 8192;
/// The kernel's queue length (packets awaiting a verdict); fails open past it.
pub const KERNEL_QUEUE_MAXLEN: u32 = HELD_MAX as u32 + 1024;
/// Receive buffer asked for the netlink socket (meta-only messages are ~100 bytes).
pub const RCVBUF_BYTES: i32 = 8 << 20;
/// Longest sleep of the holding thread between two looks at its stop flag.
pub const POLL_MS_MAX: u64 = 20;
/// Bound on binding the queue (socket, config, the kernel's acks).
pub const BIND_TIMEOUT_MS: u64 = 5_000;
/// Bound on the holding thread's exit after the stop flag is set.
pub const STOP_TIMEOUT_MS: u64 = 5_000;

// Netlink and nfnetlink_queue constants (linux/netlink.h, linux/netfilter/nfnetlink*.h).
const NETLINK_NETFILTER: i32 = 12;
const NLMSG_HDR_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NFQA_CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What a queue did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Packets held for the delay.
    pub delayed: u64,
    /// Packets accepted at once because [`HELD_MAX`] were held.
    pub overflowed: u64,
    /// Messages from the kernel that could not be parsed (skipped).
    pub malformed: u64,
    /// Times the socket buffer overflowed (`ENOBUFS`): packet messages were
    /// lost; their packets go with the next batch verdict.
    pub overruns: u64,
    /// Error answers from the kernel and failed sends of verdicts.
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    delayed: AtomicU64,
    overflowed: AtomicU64,
    malformed: AtomicU64,
    overruns: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        Stats {
            delayed: self.delayed.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A bound queue and its holding thread; see the module header.
pub struct DelayQueue {
    netns: String,
    /// The iptables arguments after `-t TABLE -A|-D CHAIN`, when this queue added its rule.
    rule: Option<Vec<String>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// The rule that queues a node's incoming TCP (not loopback) to [`QUEUE_NUM`],
/// as arguments after `-t security -A INPUT`.
pub fn input_rule() -> Vec<String> {
    let q = QUEUE_NUM.to_string();
    ["-p", "tcp", "!", "-i", "lo", "-j", "NFQUEUE", "--queue-num", &q, "--queue-bypass"].iter().map(|s| s.to_string()).collect()
}

/// `iptables -w 5 -t security OP INPUT RULE` in namespace `netns`, bounded.
fn iptables_input(netns: &str, op: &str, rule: &[String]) -> io::Result<()> {
    let out = Command::new("timeout")
        .arg(NETNS_EXEC_TIMEOUT_S.to_string())
        .args(["ip", "netns", "exec", netns, "iptables", "-w", "5", "-t", "security", op, "INPUT"])
        .args(rule)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "iptables -t security {op} INPUT {} in {netns}: {}",
        rule.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

impl DelayQueue {
    /// Delays every TCP packet `node` receives by `delay` (see the module
    /// header) until dropped. Panics when the queue or the rule cannot be set up.
    pub fn on_input(node: &ClusterNode, delay: Duration) -> DelayQueue {
        let mut q = DelayQueue::bind(&node.netns, QUEUE_NUM, delay)
            .unwrap_or_else(|e| panic!("node {}: cannot bind NFQUEUE {QUEUE_NUM}: {e}", node.index()));
        let rule = input_rule();
        iptables_input(&node.netns, "-A", &rule).unwrap_or_else(|e| panic!("node {}: {e}", node.index()));
        q.rule = Some(rule);
        q
    }

    /// Binds queue `queue_num` in the namespace named `netns` (`ip netns`'s
    /// name) and starts holding its packets for `delay`; adds no rule.
    pub fn bind(netns: &str, queue_num: u16, delay: Duration) -> io::Result<DelayQueue> {
        let path = PathBuf::from("/run/netns").join(netns);
        let fd = shoal_netlink::netns::run_in(&path, BIND_TIMEOUT_MS, move || open_queue(queue_num))
            .map_err(|e| io::Error::other(e.to_string()))??;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new().name(format!("delayq-{netns}")).spawn(move || hold(fd, queue_num, delay, &s, &c))?;
        Ok(DelayQueue { netns: netns.to_string(), rule: None, stop, counters, thread: Some(thread) })
    }

    /// What the queue did so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Deletes the rule, releases every held packet, unbinds; returns the figures.
    pub fn stop(mut self) -> Stats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        if let Some(rule) = self.rule.take() {
            if let Err(e) = iptables_input(&self.netns, "-D", &rule) {
                eprintln!("delayq: {e}");
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                eprintln!("delayq: the holding thread of {} did not stop within {STOP_TIMEOUT_MS} ms", self.netns);
            }
        }
    }
}

impl Drop for DelayQueue {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Appends a netlink attribute (4-byte aligned).
fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// One nfnetlink_queue message: header, `nfgenmsg` (AF_UNSPEC, version 0,
/// the queue number big-endian) and `attrs`.
fn queue_msg(msg: u16, flags: u16, seq: u32, queue_num: u16, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + NFGENMSG_LEN + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    b.extend_from_slice(&queue_num.to_be_bytes());
    b.extend_from_slice(attrs);
    b
}

fn config_cmd(cmd: u8) -> Vec<u8> {
    let mut a = Vec::new();
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; __be16 pf; }
    let pf = (libc::AF_INET as u16).to_be_bytes();
    put_attr(&mut a, NFQA_CFG_CMD, &[cmd, 0, pf[0], pf[1]]);
    a
}

fn verdict(queue_num: u16, id: u32, batch: bool) -> Vec<u8> {
    let mut a = Vec::new();
    // struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
    let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    put_attr(&mut a, NFQA_VERDICT_HDR, &hdr);
    queue_msg(if batch { NFQNL_MSG_VERDICT_BATCH } else { NFQNL_MSG_VERDICT }, 0, 0, queue_num, &a)
}

fn send(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: `msg` is a valid buffer of that length; an unconnected netlink
    // socket sends to the kernel.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `fd` to be readable; false on timeout.
fn readable(fd: RawFd, timeout_ms: u64) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms.min(i32::MAX as u64) as i32) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(n > 0)
}

/// A non-blocking receive; `None` when nothing is waiting.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is a valid writable buffer of that length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// What one netlink message from the kernel says.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    /// A queued packet and its id.
    Packet(u32),
    /// An error answer (`errno`, negative) or an ack (0) to message `seq`.
    Ack { seq: u32, errno: i32 },
    /// Anything else (skipped).
    Other,
    /// Could not be parsed.
    Malformed,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into its messages; never panics on any bytes.
fn parse(datagram: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDR_LEN <= datagram.len() {
        let (Some(len), Some(ty)) = (u32_at(datagram, at), u16_at(datagram, at + 4)) else { break };
        let len = len as usize;
        if len < NLMSG_HDR_LEN || at + len > datagram.len() {
            out.push(Msg::Malformed);
            break;
        }
        let body = &datagram[at + NLMSG_HDR_LEN..at + len];
        out.push(if ty == NLMSG_ERROR {
            match (u32_at(body, 0), u32_at(body, 4 + 8)) {
                (Some(errno), Some(seq)) => Msg::Ack { seq, errno: errno as i32 },
                _ => Msg::Malformed,
            }
        } else if ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            packet_id(body).map_or(Msg::Malformed, Msg::Packet)
        } else {
            Msg::Other
        });
        at += len.next_multiple_of(4);
    }
    out
}

/// The id in a packet message's `NFQA_PACKET_HDR` (after the `nfgenmsg`).
fn packet_id(body: &[u8]) -> Option<u32> {
    let mut at = NFGENMSG_LEN;
    while at + 4 <= body.len() {
        let len = u16_at(body, at)? as usize;
        let ty = u16_at(body, at + 2)? & NLA_TYPE_MASK;
        if len < 4 || at + len > body.len() {
            return None;
        }
        if ty == NFQA_PACKET_HDR {
            // struct nfqnl_msg_packet_hdr { __be32 packet_id; ... }
            return Some(u32::from_be_bytes(body.get(at + 4..at + 8)?.try_into().ok()?));
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// Sends `msg` with an ack asked and waits (bounded) for the kernel's answer.
fn request(fd: RawFd, msg: &[u8], seq: u32, what: &str) -> io::Result<()> {
    send(fd, msg).map_err(|e| io::Error::new(e.kind(), format!("send {what}: {e}")))?;
    let deadline = Instant::now() + Duration::from_millis(BIND_TIMEOUT_MS);
    let mut buf = vec![0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer to {what} within {BIND_TIMEOUT_MS} ms")));
        }
        if !readable(fd, left.as_millis() as u64 + 1)? {
            continue;
        }
        let Some(n) = recv(fd, &mut buf)? else { continue };
        for m in parse(&buf[..n]) {
            match m {
                Msg::Ack { seq: s, errno: 0 } if s == seq => return Ok(()),
                Msg::Ack { seq: s, errno } if s == seq => {
                    return Err(io::Error::other(format!("{what}: the kernel answered {}", io::Error::from_raw_os_error(-errno))))
                }
                _ => {}
            }
        }
    }
}

/// Opens a netfilter netlink socket in the calling thread's namespace and
/// binds queue `queue_num`: meta-only copies, a longer kernel queue that
/// fails open, GSO packets whole.
fn open_queue(queue_num: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = RCVBUF_BYTES;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `size` is a valid int for the option's length.
        let r = unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, opt, (&size as *const i32).cast(), 4) };
        if r == 0 {
            break;
        }
    }
    // SAFETY: all-zero is a valid sockaddr_nl; port id 0 lets the kernel pick one.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `addr` is a valid sockaddr_nl of that size.
    if unsafe { libc::bind(raw, (&addr as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32) } < 0 {
        return Err(io::Error::last_os_error());
    }
    request(fd.as_raw_fd(), &queue_msg(NFQNL_MSG_CONFIG, NLM_F_ACK, 1, queue_num, &config_cmd(NFQNL_CFG_CMD_BIND)), 1, "queue bind")?;
    let mut a = Vec::new();
    // struct nfqnl_msg_config_params { __be32 copy_range; u8 copy_mode; } (packed)
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    put_attr(&mut a, NFQA_CFG_PARAMS, &params);
    put_attr(&mut a, NFQA_CFG_QUEUE_MAXLEN, &KERNEL_QUEUE_MAXLEN.to_be_bytes());
    let flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
    put_attr(&mut a, NFQA_CFG_MASK, &flags.to_be_bytes());
    put_attr(&mut a, NFQA_CFG_FLAGS, &flags.to_be_bytes());
    request(fd.as_raw_fd(), &queue_msg(NFQNL_MSG_CONFIG, NLM_F_ACK, 2, queue_num, &a), 2, "queue parameters")?;
    Ok(fd)
}

/// The holding loop: reads packet ids, accepts each `delay` after it came,
/// until `stop`; then accepts everything still queued and unbinds.
fn hold(fd: OwnedFd, queue_num: u16, delay: Duration, stop: &AtomicBool, c: &Counters) {
    let raw = fd.as_raw_fd();
    let mut held: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut newest: Option<u32> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let count_err = |r: io::Result<()>| {
        if r.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // Read everything waiting.
        loop {
            match recv(raw, &mut buf) {
                Ok(Some(n)) => {
                    let now = Instant::now();
                    for m in parse(&buf[..n]) {
                        match m {
                            Msg::Packet(id) => {
                                newest = Some(id);
                                if held.len() >= HELD_MAX {
                                    c.overflowed.fetch_add(1, Ordering::Relaxed);
                                    count_err(send(raw, &verdict(queue_num, id, false)));
                                } else {
                                    c.delayed.fetch_add(1, Ordering::Relaxed);
                                    held.push_back((id, now + delay));
                                }
                            }
                            Msg::Ack { errno, .. } if errno != 0 => {
                                c.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Msg::Malformed => {
                                c.malformed.fetch_add(1, Ordering::Relaxed);
                            }
                            Msg::Ack { .. } | Msg::Other => {}
                        }
                    }
                }
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    c.overruns.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if stopping {
            // The rule is gone: accept everything queued up to the newest id seen.
            if let Some(id) = newest {
                count_err(send(raw, &verdict(queue_num, id, true)));
            }
            let _ = send(raw, &queue_msg(NFQNL_MSG_CONFIG, 0, 3, queue_num, &config_cmd(NFQNL_CFG_CMD_UNBIND)));
            return;
        }
        // Accept every packet whose delay is over (ids grow with arrival).
        let now = Instant::now();
        let mut expired = None;
        while let Some(&(id, due)) = held.front() {
            if due > now {
                break;
            }
            expired = Some(id);
            held.pop_front();
        }
        if let Some(id) = expired {
            count_err(send(raw, &verdict(queue_num, id, true)));
        }
        let wait_ms = held.front().map_or(POLL_MS_MAX, |&(_, due)| (due.saturating_duration_since(now).as_micros() as u64).div_ceil(1000));
        if readable(raw, wait_ms.min(POLL_MS_MAX)).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_never_panics_and_finds_packet_ids() {
        let mut a = Vec::new();
        put_attr(&mut a, NFQA_PACKET_HDR, &[0, 0, 1, 2, 8, 0, 1]);
        let mut pkt = queue_msg(NFQNL_MSG_PACKET, 0, 0, 0, &a);
        assert_eq!(parse(&pkt), vec![Msg::Packet(258)]);
        let ack = {
            let mut b = Vec::new();
            b.extend_from_slice(&36u32.to_ne_bytes());
            b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            b.extend_from_slice(&[0; 10]);
            b.extend_from_slice(&(-1i32).to_ne_bytes());
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&7u32.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            b
        };
        pkt.extend_from_slice(&ack);
        assert_eq!(parse(&pkt), vec![Msg::Packet(258), Msg::Ack { seq: 7, errno: -1 }]);
        for cut in 0..pkt.len() {
            let _ = parse(&pkt[..cut]);
            let mut bad = pkt.clone();
            bad[cut] = 0xff;
            let _ = parse(&bad);
        }
    }
}
