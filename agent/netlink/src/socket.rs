//! The one place that does netlink syscalls: a blocking `NETLINK_ROUTE`
//! socket with sequence numbers, requests answered by an ACK, single
//! replies and multipart dumps, each bounded by [`REQUEST_TIMEOUT_MS`].
//!
//! Replies to an earlier request that timed out carry an older sequence
//! number and are skipped; datagrams not from the kernel are dropped.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::msg::{self, Message, ParseError, Reply, Request};

/// Longest wait for the whole answer to one request (a dump included).
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Receive buffer: the kernel's dump datagrams are at most 32 KiB.
pub(crate) const RECV_BYTES_MAX: usize = 64 * 1024;
/// A dump that the kernel flags inconsistent (`NLM_F_DUMP_INTR`: the table
/// changed meanwhile) is retried this many times in all.
pub(crate) const DUMP_ATTEMPTS_MAX: u32 = 3;

/// How a request failed, before the caller names the operation.
#[derive(Debug)]
pub(crate) enum Failure {
    Errno {
        errno: i32,
        text: Option<String>,
    },
    Timeout,
    Malformed(ParseError),
    /// A dump stayed inconsistent for [`DUMP_ATTEMPTS_MAX`] attempts.
    Interrupted,
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Self {
        Failure::Malformed(e)
    }
}

pub(crate) type Result<T> = std::result::Result<T, Failure>;

/// A `NETLINK_ROUTE` socket bound in the network namespace of the thread
/// that opened it.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub(crate) fn open() -> Result<Socket> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(last_errno());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid (port id chosen by the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) } < 0 {
            return Err(last_errno());
        }
        // Extended acks give the kernel's reason in words; capped acks stop
        // it from echoing our request back. Both are optional (old kernels).
        let one: libc::c_int = 1;
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            // SAFETY: `one` is a c_int of the size passed.
            let _ = unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_NETLINK, opt, &one as *const _ as *const libc::c_void, 4) };
        }
        Ok(Socket { fd, seq: 0, buf: vec![0; RECV_BYTES_MAX] })
    }

    /// Sends a request that has `NLM_F_ACK` and waits for its ACK.
    pub(crate) fn ack(&mut self, request: Request) -> Result<()> {
        debug_assert!(request.flags() & libc::NLM_F_ACK as u16 != 0);
        self.exchange(request, |reply| Ok(matches!(reply, Reply::Ack)))
    }

    /// Sends a request answered by exactly one data message, decoded by `decode`.
    pub(crate) fn one<T>(&mut self, request: Request, decode: fn(&[u8]) -> std::result::Result<T, ParseError>) -> Result<T> {
        let mut out = None;
        self.exchange(request, |reply| match reply {
            Reply::Data(m) => {
                out = Some(decode(m.payload)?);
                Ok(true)
            }
            _ => Ok(false),
        })?;
        // `exchange` returns Ok only after the closure said it was done,
        // which it says only with `out` set; a bare ACK is no answer.
        out.ok_or(Failure::Malformed(ParseError::Truncated { what: "reply", have: 0, need: 1 }))
    }

    /// Sends a dump request and decodes every data message of type
    /// `ty`; `decode` returning `None` skips a message.
    pub(crate) fn dump<T>(
        &mut self,
        request: impl Fn() -> Request,
        ty: u16,
        decode: fn(&[u8]) -> std::result::Result<Option<T>, ParseError>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_ATTEMPTS_MAX {
            let mut out = Vec::new();
            let mut interrupted = false;
            self.exchange(request(), |reply| match reply {
                Reply::Done => Ok(true),
                Reply::Data(m) => {
                    interrupted |= m.flags as i32 & libc::NLM_F_DUMP_INTR != 0;
                    if m.ty == ty {
                        out.extend(decode(m.payload)?);
                    }
                    Ok(false)
                }
                _ => Ok(false),
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Failure::Interrupted)
    }

    /// Sends `request` and feeds the replies carrying its sequence number to
    /// `on_reply` until it returns true; an error reply ends the exchange.
    fn exchange(&mut self, request: Request, mut on_reply: impl FnMut(Reply<'_>) -> Result<bool>) -> Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = request.finish(seq);
        let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
        self.send(&bytes)?;
        loop {
            let len = self.recv(deadline)?;
            for m in msg::messages(&self.buf[..len]) {
                let m: Message<'_> = m?;
                if m.seq != seq {
                    continue;
                }
                match msg::reply(m)? {
                    Reply::Error { errno, text } => return Err(Failure::Errno { errno, text: text.map(str::to_owned) }),
                    reply => {
                        if on_reply(reply)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel (port 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        loop {
            // SAFETY: `bytes` and `to` are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0, &to as *const _ as *const libc::sockaddr, len)
            };
            if n >= 0 {
                return Ok(());
            }
            let e = last_errno();
            if !matches!(e, Failure::Errno { errno: libc::EINTR, .. }) {
                return Err(e);
            }
        }
    }

    /// Receives one datagram from the kernel into `buf` before `deadline`.
    fn recv(&mut self, deadline: Instant) -> Result<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Timeout);
            }
            // SO_RCVTIMEO bounds this recv by what is left of the deadline
            // (at least 1 ms: a zero timeval would mean "wait forever").
            // The field types differ between targets (and libc deprecates
            // their names on musl), hence `as _`.
            let tv = libc::timeval { tv_sec: left.as_secs() as _, tv_usec: left.subsec_micros().max(1000) as _ };
            let size = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            // SAFETY: `tv` is a valid timeval of `size` bytes.
            if unsafe {
                libc::setsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const libc::c_void, size)
            } < 0
            {
                return Err(last_errno());
            }
            // SAFETY: all-zero is a valid sockaddr_nl to be overwritten.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is writable for its length; MSG_TRUNC makes the
            // result the datagram's real length, checked against it below.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n < 0 {
                match last_errno() {
                    Failure::Errno { errno: libc::EINTR, .. } => continue,
                    Failure::Errno { errno, .. } if errno == libc::EAGAIN || errno == libc::EWOULDBLOCK => return Err(Failure::Timeout),
                    e => return Err(e),
                }
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(Failure::Malformed(ParseError::Truncated { what: "datagram", have: self.buf.len(), need: n }));
            }
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            return Ok(n);
        }
    }
}

fn last_errno() -> Failure {
    Failure::Errno { errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0), text: None }
}
