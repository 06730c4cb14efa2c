//! The netlink wire format, pure: building requests (`nlmsghdr` plus a
//! family header plus route attributes, nested ones included) and parsing
//! replies (messages, attributes, `NLMSG_ERROR`/`NLMSG_DONE`). No syscalls.
//!
//! Netlink integers are host-endian (`to_ne_bytes`), except where an
//! attribute says otherwise (ports and addresses are network order).
//! Replies come from the kernel, but every length inside them is treated as
//! hostile: parsing returns a [`ParseError`] and never panics.

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDR_LEN: usize = 16;
/// `sizeof(struct rtattr)` (also `struct nlattr`).
pub const ATTR_HDR_LEN: usize = 4;
/// Largest attribute payload: `rta_len` is a `u16` that counts the header.
pub const ATTR_DATA_BYTES_MAX: usize = u16::MAX as usize - ATTR_HDR_LEN;
/// `NLMSGERR_ATTR_MSG` (uapi `linux/netlink.h`): the extended ack's text.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// `NLMSG_ALIGN`/`RTA_ALIGN`: both round up to 4 bytes.
/// Saturates instead of overflowing on hostile lengths (32-bit targets).
pub const fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// Why a reply did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message header truncated: {have} of {NLMSG_HDR_LEN} bytes")]
    HeaderTruncated { have: usize },
    #[error("message length {len} out of bounds ({NLMSG_HDR_LEN}..={have})")]
    MessageLength { len: u32, have: usize },
    #[error("attribute length {len} out of bounds ({ATTR_HDR_LEN}..={have})")]
    AttrLength { len: u16, have: usize },
    #[error("{what} truncated: {have} of {need} bytes")]
    Truncated { what: &'static str, have: usize, need: usize },
}

/// A request under construction: the header, then one family header, then
/// attributes. Lengths are patched in as parts are appended.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A message of type `ty` (`RTM_*`) with `flags` (`NLM_F_*`); sequence
    /// number and port id are set by [`Request::finish`] and the kernel.
    pub fn new(ty: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&(NLMSG_HDR_LEN as u32).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid
        Request { buf }
    }

    /// The message type given to [`Request::new`].
    pub fn ty(&self) -> u16 {
        u16::from_ne_bytes([self.buf[4], self.buf[5]])
    }

    /// The flags given to [`Request::new`].
    pub fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }

    /// Appends raw bytes (a family header such as `ifinfomsg`), padded to 4.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    /// Appends one attribute (`rtattr`) with `data`, padded to 4.
    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        // Invariant: callers pass names, addresses and small integers; the
        // operations layer checks names against IFNAMSIZ first.
        assert!(data.len() <= ATTR_DATA_BYTES_MAX, "netlink attribute too long");
        self.buf.extend_from_slice(&((ATTR_HDR_LEN + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn attr_u8(&mut self, ty: u16, value: u8) {
        self.attr(ty, &[value]);
    }

    pub fn attr_u32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    /// A NUL-terminated string attribute (`IFLA_IFNAME`, `IFLA_INFO_KIND`).
    pub fn attr_str(&mut self, ty: u16, value: &str) {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.attr(ty, &data);
    }

    /// Opens a nested attribute; close it with [`Request::nest_end`]. The
    /// `NLA_F_NESTED` bit is not set, as iproute2 does for link attributes.
    pub fn nest_start(&mut self, ty: u16) -> Nest {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        Nest { at }
    }

    /// Closes a nest: its length covers everything appended since it opened.
    pub fn nest_end(&mut self, nest: Nest) {
        let len = self.buf.len() - nest.at;
        // Invariant: nests hold a few short attributes, far below 64 KiB.
        assert!(len <= u16::MAX as usize, "netlink nest too long");
        self.buf[nest.at..nest.at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }

    /// The finished message with `seq` and the total length filled in.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }
}

/// An open nested attribute (see [`Request::nest_start`]).
#[derive(Debug)]
#[must_use = "close the nest with Request::nest_end"]
pub struct Nest {
    at: usize,
}

/// One message of a reply; `payload` is what follows `nlmsghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    pub payload: &'a [u8],
}

/// The messages in one datagram, in order. After an error it yields nothing.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

/// Iterator returned by [`messages`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        if buf.len() < NLMSG_HDR_LEN {
            return Some(Err(ParseError::HeaderTruncated { have: buf.len() }));
        }
        let len = u32_at(buf, 0);
        if (len as usize) < NLMSG_HDR_LEN || len as usize > buf.len() {
            return Some(Err(ParseError::MessageLength { len, have: buf.len() }));
        }
        let message = Message {
            ty: u16_at(buf, 4),
            flags: u16_at(buf, 6),
            seq: u32_at(buf, 8),
            pid: u32_at(buf, 12),
            payload: &buf[NLMSG_HDR_LEN..len as usize],
        };
        self.rest = buf.get(align4(len as usize)..).unwrap_or(&[]);
        Some(Ok(message))
    }
}

/// What a reply message means to the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `NLMSG_ERROR` with error 0: the request succeeded.
    Ack,
    /// `NLMSG_ERROR` (or `NLMSG_DONE`) with a negative errno, plus the
    /// kernel's extended-ack text when it sent one.
    Error { errno: i32, text: Option<&'a str> },
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// Anything else: a data message (`RTM_NEWLINK` in a dump, ...).
    Data(Message<'a>),
}

/// Classifies one reply message (`NLMSG_NOOP`/`NLMSG_OVERRUN` are data to the
/// caller, which ignores types it does not expect).
pub fn reply(message: Message<'_>) -> Result<Reply<'_>, ParseError> {
    let ty = message.ty as i32;
    if ty == libc::NLMSG_DONE {
        // A dump that failed midway ends with DONE carrying the errno.
        return Ok(match message.payload.get(..4) {
            Some(b) if i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) < 0 => {
                Reply::Error { errno: errno_of(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])), text: None }
            }
            _ => Reply::Done,
        });
    }
    if ty != libc::NLMSG_ERROR {
        return Ok(Reply::Data(message));
    }
    let p = message.payload;
    let need = 4 + NLMSG_HDR_LEN;
    if p.len() < need {
        return Err(ParseError::Truncated { what: "nlmsgerr", have: p.len(), need });
    }
    let error = i32_at(p, 0);
    if error == 0 {
        return Ok(Reply::Ack);
    }
    // The original request follows: its header always, its payload unless
    // the socket asked for capped acks; the extended-ack attributes last.
    let mut at = need;
    if message.flags as i32 & libc::NLM_F_CAPPED == 0 {
        at = 4 + align4(u32_at(p, 4) as usize);
    }
    // The text is a bonus: attributes that do not parse leave the errno
    // without it rather than turning a known error into a parse error.
    let mut text = None;
    if message.flags as i32 & libc::NLM_F_ACK_TLVS != 0 {
        for attr in attrs(p.get(at..).unwrap_or(&[])).map_while(Result::ok) {
            if attr.ty == NLMSGERR_ATTR_MSG {
                text = Some(attr.str_lossless());
            }
        }
    }
    Ok(Reply::Error { errno: errno_of(error), text: text.flatten() })
}

fn errno_of(error: i32) -> i32 {
    error.checked_neg().unwrap_or(i32::MAX)
}

/// One attribute: its type without the `NLA_F_NESTED`/byte-order bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub ty: u16,
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Result<u8, ParseError> {
        Ok(self.fixed::<1>("u8 attribute")?[0])
    }

    pub fn u32(&self) -> Result<u32, ParseError> {
        Ok(u32::from_ne_bytes(self.fixed::<4>("u32 attribute")?))
    }

    /// A network-order `u16` (`IFLA_VXLAN_PORT`).
    pub fn be16(&self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.fixed::<2>("be16 attribute")?))
    }

    /// A string up to its first NUL; bytes that are not UTF-8 are replaced
    /// (interface names are bytes to the kernel).
    pub fn str(&self) -> String {
        let end = self.data.iter().position(|&b| b == 0).unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }

    /// Exactly `N` bytes (an address, a MAC), or a truncation error.
    pub fn fixed<const N: usize>(&self, what: &'static str) -> Result<[u8; N], ParseError> {
        self.data.get(..N).and_then(|b| <[u8; N]>::try_from(b).ok()).ok_or(ParseError::Truncated { what, have: self.data.len(), need: N })
    }

    /// The attributes nested inside this one.
    pub fn nested(&self) -> Attrs<'a> {
        attrs(self.data)
    }

    fn str_lossless(&self) -> Option<&'a str> {
        let end = self.data.iter().position(|&b| b == 0).unwrap_or(self.data.len());
        std::str::from_utf8(&self.data[..end]).ok()
    }
}

/// The attributes in `buf`, in order. After an error it yields nothing.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

/// Iterator returned by [`attrs`].
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing bytes shorter than a header are padding, as in the
        // kernel's `nla_ok`.
        if self.rest.len() < ATTR_HDR_LEN {
            self.rest = &[];
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        let len = u16_at(buf, 0);
        if (len as usize) < ATTR_HDR_LEN || len as usize > buf.len() {
            return Some(Err(ParseError::AttrLength { len, have: buf.len() }));
        }
        let ty = u16_at(buf, 2) & libc::NLA_TYPE_MASK as u16;
        self.rest = buf.get(align4(len as usize)..).unwrap_or(&[]);
        Some(Ok(Attr { ty, data: &buf[ATTR_HDR_LEN..len as usize] }))
    }
}

/// The first `need` bytes of a payload (a family header), or an error.
pub fn header<'a>(payload: &'a [u8], what: &'static str, need: usize) -> Result<&'a [u8], ParseError> {
    payload.get(..need).ok_or(ParseError::Truncated { what, have: payload.len(), need })
}

/// The attributes after a family header of `header_len` bytes.
pub fn attrs_after(payload: &[u8], header_len: usize) -> Attrs<'_> {
    attrs(payload.get(align4(header_len)..).unwrap_or(&[]))
}

// Readers for offsets the caller has bounds-checked.
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    fn ne32(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    #[test]
    fn request_lays_out_header_attrs_and_nests() {
        let mut r = Request::new(16, 0x0605);
        r.push(&[7, 0, 0]);
        let nest = r.nest_start(18);
        r.attr_str(1, "veth");
        r.nest_end(nest);
        r.attr_u8(9, 1);
        assert_eq!(r.ty(), 16);
        assert_eq!(r.flags(), 0x0605);
        let got = r.finish(42);
        let mut want = [ne32(44), ne16(16), ne16(0x0605), ne32(42), ne32(0)].concat();
        want.extend_from_slice(&[7, 0, 0, 0]); // family header padded to 4
        want.extend([ne16(16), ne16(18)].concat()); // nest: 4 + 12
        want.extend([ne16(9), ne16(1)].concat()); // "veth\0" = 4 + 5
        want.extend_from_slice(b"veth\0\0\0\0");
        want.extend([ne16(5), ne16(9)].concat());
        want.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(got, want);
    }

    #[test]
    fn messages_walk_a_multipart_datagram() {
        let a = Request::new(16, 2).finish(1);
        let mut b = Request::new(16, 2);
        b.push(&[1, 2, 3, 4, 5]);
        let b = b.finish(1);
        let done = Request::new(libc::NLMSG_DONE as u16, 2).finish(1);
        let buf = [a, b, done].concat();
        let all: Vec<_> = messages(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].payload, &[] as &[u8]);
        // The family header's padding counts in nlmsg_len, as NLMSG_ALIGN wants.
        assert_eq!(all[1].payload, &[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(reply(all[2]).unwrap(), Reply::Done);
    }

    #[test]
    fn error_reply_carries_errno_and_extended_ack_text() {
        // nlmsgerr: error, then the capped request header, then TLVs.
        let flags = (libc::NLM_F_CAPPED | libc::NLM_F_ACK_TLVS) as u16;
        let mut r = Request::new(libc::NLMSG_ERROR as u16, flags);
        let mut body = (-libc::EEXIST).to_ne_bytes().to_vec();
        body.extend(Request::new(16, 0x605).finish(9));
        r.push(&body);
        r.attr_str(NLMSGERR_ATTR_MSG, "File exists here");
        let buf = r.finish(9);
        let m = messages(&buf).next().unwrap().unwrap();
        assert_eq!(reply(m).unwrap(), Reply::Error { errno: libc::EEXIST, text: Some("File exists here") });
    }

    #[test]
    fn uncapped_error_skips_the_echoed_request() {
        let mut echoed = Request::new(16, 0x605);
        echoed.attr_str(3, "eth0");
        let echoed = echoed.finish(3);
        let mut r = Request::new(libc::NLMSG_ERROR as u16, 0);
        let mut body = (-libc::ENODEV).to_ne_bytes().to_vec();
        body.extend(echoed);
        r.push(&body);
        let buf = r.finish(3);
        let m = messages(&buf).next().unwrap().unwrap();
        assert_eq!(reply(m).unwrap(), Reply::Error { errno: libc::ENODEV, text: None });
        let mut ack = Request::new(libc::NLMSG_ERROR as u16, 0);
        ack.push(&[0u8; 4 + NLMSG_HDR_LEN]);
        let buf = ack.finish(3);
        assert_eq!(reply(messages(&buf).next().unwrap().unwrap()).unwrap(), Reply::Ack);
    }

    #[test]
    fn broken_extended_ack_keeps_the_errno() {
        let flags = (libc::NLM_F_CAPPED | libc::NLM_F_ACK_TLVS) as u16;
        let mut r = Request::new(libc::NLMSG_ERROR as u16, flags);
        let mut body = (-libc::EBUSY).to_ne_bytes().to_vec();
        body.extend(Request::new(16, 5).finish(2));
        body.extend([ne16(0x400), ne16(NLMSGERR_ATTR_MSG)].concat()); // length past the end
        r.push(&body);
        let buf = r.finish(2);
        let m = messages(&buf).next().unwrap().unwrap();
        assert_eq!(reply(m).unwrap(), Reply::Error { errno: libc::EBUSY, text: None });
    }

    #[test]
    fn done_with_an_errno_is_an_error() {
        let mut r = Request::new(libc::NLMSG_DONE as u16, 2);
        r.push(&(-libc::EINTR).to_ne_bytes());
        let buf = r.finish(1);
        let m = messages(&buf).next().unwrap().unwrap();
        assert_eq!(reply(m).unwrap(), Reply::Error { errno: libc::EINTR, text: None });
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let mut buf = Request::new(16, 0).finish(1);
        buf[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(messages(&buf).next(), Some(Err(ParseError::MessageLength { len: 1000, have: 16 })));
        buf[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(messages(&buf).next(), Some(Err(ParseError::MessageLength { len: 3, have: 16 })));
        assert_eq!(messages(&buf[..5]).next(), Some(Err(ParseError::HeaderTruncated { have: 5 })));
        let attr = [ne16(2), ne16(1)].concat();
        assert_eq!(attrs(&attr).next(), Some(Err(ParseError::AttrLength { len: 2, have: 4 })));
        let attr = [ne16(9), ne16(1), vec![0]].concat();
        assert_eq!(attrs(&attr).next(), Some(Err(ParseError::AttrLength { len: 9, have: 5 })));
        let a = Attr { ty: 1, data: &[1, 2] };
        assert_eq!(a.u32(), Err(ParseError::Truncated { what: "u32 attribute", have: 2, need: 4 }));
        assert_eq!(a.str(), "\u{1}\u{2}");
    }
}
