//! The DNS wire format (RFC 1035 §4): header, questions and resource records
//! (A, AAAA, PTR, CNAME and SRV typed; anything else kept as raw bytes).
//!
//! Bytes from the network are hostile. [`Message::decode`] never panics and
//! never allocates in proportion to a count it read: names are at most
//! [`NAME_BYTES_MAX`] bytes, a compression pointer must point strictly below
//! everything read so far for that name (so no loops) and a name follows at
//! most [`POINTER_HOPS_MAX`] pointers, each section holds at most
//! [`RECORDS_PER_SECTION_MAX`] entries. [`Message::encode`] writes names with
//! or without compression; [`Message::encode_truncated`] drops whole records
//! from the end and sets TC so the message fits a UDP size.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// The fixed header's size.
pub const HEADER_BYTES: usize = 12;
/// The largest DNS message (its length must fit TCP's u16 prefix).
pub const MESSAGE_BYTES_MAX: usize = 65_535;
/// The UDP payload every client accepts (RFC 1035 §4.2.1); more needs EDNS.
pub const UDP_PAYLOAD_BYTES_MIN: usize = 512;
/// The longest name on the wire, length bytes and root label included.
pub const NAME_BYTES_MAX: usize = 255;
/// The longest label.
pub const LABEL_BYTES_MAX: usize = 63;
/// Compression pointers followed while reading one name.
pub const POINTER_HOPS_MAX: usize = 16;
/// Entries per section accepted by the decoder (and written by the encoder).
pub const RECORDS_PER_SECTION_MAX: usize = 256;

/// The largest offset a compression pointer can carry (14 bits).
const POINTER_OFFSET_MAX: usize = 0x3FFF;

/// A record type (open: unknown values are kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Type(pub u16);

impl Type {
    pub const A: Type = Type(1);
    pub const NS: Type = Type(2);
    pub const CNAME: Type = Type(5);
    pub const PTR: Type = Type(12);
    pub const MX: Type = Type(15);
    pub const TXT: Type = Type(16);
    pub const AAAA: Type = Type(28);
    pub const SRV: Type = Type(33);
    /// EDNS(0) pseudo-record (RFC 6891); its class is the sender's UDP size.
    pub const OPT: Type = Type(41);
}

/// The Internet class, the only one answered locally.
pub const CLASS_IN: u16 = 1;

/// A response code (the header's low four bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rcode(pub u8);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
}

/// Why bytes are not a DNS message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message of {len} bytes is shorter than the 12-byte header")]
    ShortHeader { len: usize },
    #[error("message of {len} bytes is over the 65535-byte limit")]
    TooLong { len: usize },
    #[error("message ends inside {what}")]
    Truncated { what: &'static str },
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("label type {byte:#04x} is not a length nor a pointer")]
    BadLabelType { byte: u8 },
    #[error("compression pointer to {target} does not point below byte {floor}")]
    PointerNotBackwards { target: usize, floor: usize },
    #[error("name follows more than {POINTER_HOPS_MAX} compression pointers")]
    TooManyPointers,
    #[error("{section} count {count} is over the limit of {RECORDS_PER_SECTION_MAX}")]
    TooManyRecords { section: &'static str, count: u16 },
    #[error("record data of {len} bytes does not fit type {rtype}")]
    BadRdata { rtype: u16, len: usize },
}

/// Why a name or message cannot be written.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error("name {name:?} has an empty label")]
    EmptyLabel { name: String },
    #[error("name {name:?} has a label longer than 63 bytes")]
    LabelTooLong { name: String },
    #[error("name {name:?} is longer than 255 bytes on the wire")]
    NameTooLong { name: String },
    #[error("{section} holds {count} entries, over the limit of {RECORDS_PER_SECTION_MAX}")]
    TooManyRecords { section: &'static str, count: usize },
    #[error("message of {len} bytes is over the 65535-byte limit")]
    TooLong { len: usize },
    #[error("record data of {len} bytes is over the 65535-byte limit")]
    RdataTooLong { len: usize },
}

/// The fixed header; section counts live in [`Message`]'s vectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub response: bool,
    /// Four bits; 0 is a standard query.
    pub opcode: u8,
    pub authoritative: bool,
    pub truncated: bool,
    pub recursion_desired: bool,
    pub recursion_available: bool,
    pub rcode: Rcode,
}

impl Header {
    /// Reads the header alone, or `None` if there are fewer than 12 bytes.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let h = bytes.get(..HEADER_BYTES)?;
        let flags = u16::from_be_bytes([h[2], h[3]]);
        Some(Header {
            id: u16::from_be_bytes([h[0], h[1]]),
            response: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0xF) as u8,
            authoritative: flags & 0x0400 != 0,
            truncated: flags & 0x0200 != 0,
            recursion_desired: flags & 0x0100 != 0,
            recursion_available: flags & 0x0080 != 0,
            rcode: Rcode((flags & 0xF) as u8),
        })
    }

    fn flags(&self) -> u16 {
        (u16::from(self.response) << 15)
            | (u16::from(self.opcode & 0xF) << 11)
            | (u16::from(self.authoritative) << 10)
            | (u16::from(self.truncated) << 9)
            | (u16::from(self.recursion_desired) << 8)
            | (u16::from(self.recursion_available) << 7)
            | u16::from(self.rcode.0 & 0xF)
    }
}

/// A domain name in uncompressed wire form (length-prefixed labels ending
/// with the root's zero byte), case kept as received.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The root name (`.`).
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Parses presentation form (`web`, `tasks.web.`, `.` for the root). No
    /// escapes: a name is a list of dot-separated labels of 1 to 63 bytes.
    pub fn from_dotted(text: &str) -> Result<Name, EncodeError> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        let mut wire = Vec::with_capacity(trimmed.len() + 2);
        if !trimmed.is_empty() {
            for label in trimmed.split('.') {
                if label.is_empty() {
                    return Err(EncodeError::EmptyLabel { name: text.to_string() });
                }
                if label.len() > LABEL_BYTES_MAX {
                    return Err(EncodeError::LabelTooLong { name: text.to_string() });
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        if wire.len() > NAME_BYTES_MAX {
            return Err(EncodeError::NameTooLong { name: text.to_string() });
        }
        Ok(Name { wire })
    }

    /// The uncompressed wire form.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The labels, leftmost first, without the root.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let len = usize::from(*self.wire.get(pos)?);
            if len == 0 {
                return None;
            }
            let label = self.wire.get(pos + 1..pos + 1 + len)?;
            pos += 1 + len;
            Some(label)
        })
    }

    /// The lowercase dotted form without a trailing dot, the key names are
    /// looked up by; `None` if a label holds a byte no swarm name can hold
    /// (a dot, a space, a control or non-ASCII byte), and for the root.
    pub fn lookup_key(&self) -> Option<String> {
        let mut key = String::with_capacity(self.wire.len());
        for label in self.labels() {
            if !key.is_empty() {
                key.push('.');
            }
            for &b in label {
                if !b.is_ascii_graphic() || b == b'.' {
                    return None;
                }
                key.push(char::from(b.to_ascii_lowercase()));
            }
        }
        (!key.is_empty()).then_some(key)
    }

    /// Equal ignoring ASCII case (DNS names compare case-insensitively).
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wire.len() == 1 {
            return f.write_str(".");
        }
        for label in self.labels() {
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", char::from(b))?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// One question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: Type,
    pub qclass: u16,
}

/// A record's data, typed for the records this resolver writes or reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(Name),
    Cname(Name),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    /// Any other type, data kept as received (names inside stay compressed).
    Other {
        rtype: Type,
        data: Vec<u8>,
    },
}

impl RData {
    /// The record type this data belongs to.
    pub fn rtype(&self) -> Type {
        match self {
            RData::A(_) => Type::A,
            RData::Aaaa(_) => Type::AAAA,
            RData::Ptr(_) => Type::PTR,
            RData::Cname(_) => Type::CNAME,
            RData::Srv { .. } => Type::SRV,
            RData::Other { rtype, .. } => *rtype,
        }
    }
}

/// One resource record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    /// The class; for OPT, the sender's UDP payload size.
    pub class: u16,
    pub ttl_secs: u32,
    pub data: RData,
}

/// A whole message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Message {
    /// A standard query for one name and type (class IN) with RD set, as a
    /// stub resolver sends it.
    pub fn query(id: u16, name: Name, qtype: Type) -> Message {
        let header = Header {
            id,
            response: false,
            opcode: 0,
            authoritative: false,
            truncated: false,
            recursion_desired: true,
            recursion_available: false,
            rcode: Rcode::NOERROR,
        };
        Message {
            header,
            questions: vec![Question { name, qtype, qclass: CLASS_IN }],
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    /// Decodes a message; trailing bytes after the last record are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLong { len: bytes.len() });
        }
        let header = Header::decode(bytes).ok_or(DecodeError::ShortHeader { len: bytes.len() })?;
        let count = |i: usize, section: &'static str| {
            let count = u16::from_be_bytes([bytes[4 + 2 * i], bytes[5 + 2 * i]]);
            if usize::from(count) > RECORDS_PER_SECTION_MAX {
                return Err(DecodeError::TooManyRecords { section, count });
            }
            Ok(usize::from(count))
        };
        let counts = [count(0, "question")?, count(1, "answer")?, count(2, "authority")?, count(3, "additional")?];
        let mut reader = Reader { bytes, pos: HEADER_BYTES };
        // Capacity comes from the bytes left, not from the counts alone: every
        // entry takes at least 5 bytes, so a lying count cannot reserve much.
        let room = |count: usize| count.min(bytes.len() / 5);
        let mut questions = Vec::with_capacity(room(counts[0]));
        for _ in 0..counts[0] {
            questions.push(reader.question()?);
        }
        let mut sections: [Vec<Record>; 3] = Default::default();
        for (section, &count) in sections.iter_mut().zip(&counts[1..]) {
            section.reserve(room(count));
            for _ in 0..count {
                section.push(reader.record()?);
            }
        }
        let [answers, authorities, additionals] = sections;
        Ok(Message { header, questions, answers, authorities, additionals })
    }

    /// Encodes the whole message, with name compression if `compress`.
    pub fn encode(&self, compress: bool) -> Result<Vec<u8>, EncodeError> {
        self.encode_truncated(compress, MESSAGE_BYTES_MAX)
    }

    /// Encodes at most `bytes_max` bytes: records that do not fit are left
    /// out, from the end (additionals, then authorities, then answers), and
    /// TC is set. Header and questions are always written whole.
    pub fn encode_truncated(&self, compress: bool, bytes_max: usize) -> Result<Vec<u8>, EncodeError> {
        let sections: [(&'static str, usize); 4] = [
            ("question", self.questions.len()),
            ("answer", self.answers.len()),
            ("authority", self.authorities.len()),
            ("additional", self.additionals.len()),
        ];
        for (section, count) in sections {
            if count > RECORDS_PER_SECTION_MAX {
                return Err(EncodeError::TooManyRecords { section, count });
            }
        }
        let bytes_max = bytes_max.min(MESSAGE_BYTES_MAX);
        let mut enc = Encoder { out: Vec::with_capacity(bytes_max.min(UDP_PAYLOAD_BYTES_MIN)), compress, names: Vec::new() };
        enc.out.extend_from_slice(&self.header.id.to_be_bytes());
        enc.out.extend_from_slice(&[0; 10]);
        for q in &self.questions {
            enc.name(&q.name);
            enc.out.extend_from_slice(&q.qtype.0.to_be_bytes());
            enc.out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        let mut written = [self.questions.len(), 0, 0, 0];
        let mut truncated = self.header.truncated;
        'sections: for (i, records) in [&self.answers, &self.authorities, &self.additionals].into_iter().enumerate() {
            for record in records {
                let (len, names) = (enc.out.len(), enc.names.len());
                enc.record(record)?;
                if enc.out.len() > bytes_max {
                    enc.out.truncate(len);
                    enc.names.truncate(names);
                    truncated = true;
                    break 'sections;
                }
                written[i + 1] += 1;
            }
        }
        if enc.out.len() > MESSAGE_BYTES_MAX {
            return Err(EncodeError::TooLong { len: enc.out.len() });
        }
        let header = Header { truncated, ..self.header.clone() };
        enc.out[2..4].copy_from_slice(&header.flags().to_be_bytes());
        for (i, count) in written.into_iter().enumerate() {
            // Counts are at most RECORDS_PER_SECTION_MAX, checked above.
            enc.out[4 + 2 * i..6 + 2 * i].copy_from_slice(&(count as u16).to_be_bytes());
        }
        Ok(enc.out)
    }

    /// The UDP payload size the sender accepts: its EDNS(0) OPT record's
    /// class, or 512 without one (never less than 512).
    pub fn udp_payload_bytes(&self) -> usize {
        self.additionals
            .iter()
            .find(|r| r.data.rtype() == Type::OPT)
            .map_or(UDP_PAYLOAD_BYTES_MIN, |r| usize::from(r.class).max(UDP_PAYLOAD_BYTES_MIN))
    }
}

/// Reads the first question of a message without decoding the rest: enough
/// to check that an upstream's reply answers the query that was sent.
pub fn first_question(bytes: &[u8]) -> Result<Option<Question>, DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::ShortHeader { len: bytes.len() });
    }
    if u16::from_be_bytes([bytes[4], bytes[5]]) == 0 {
        return Ok(None);
    }
    Reader { bytes, pos: HEADER_BYTES }.question().map(Some)
}

/// A cursor over a message being decoded.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated { what })?;
        let slice = self.bytes.get(self.pos..end).ok_or(DecodeError::Truncated { what })?;
        self.pos = end;
        Ok(slice)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<Name, DecodeError> {
        let (name, end) = read_name(self.bytes, self.pos)?;
        self.pos = end;
        Ok(name)
    }

    fn question(&mut self) -> Result<Question, DecodeError> {
        let name = self.name()?;
        let qtype = Type(self.u16("a question")?);
        let qclass = self.u16("a question")?;
        Ok(Question { name, qtype, qclass })
    }

    fn record(&mut self) -> Result<Record, DecodeError> {
        let name = self.name()?;
        let rtype = Type(self.u16("a record header")?);
        let class = self.u16("a record header")?;
        let ttl_secs = self.u32("a record header")?;
        let len = usize::from(self.u16("a record header")?);
        let start = self.pos;
        let raw = self.take(len, "record data")?;
        let bad = DecodeError::BadRdata { rtype: rtype.0, len };
        let data = match rtype {
            Type::A => RData::A(Ipv4Addr::from(<[u8; 4]>::try_from(raw).map_err(|_| bad)?)),
            Type::AAAA => RData::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(raw).map_err(|_| bad)?)),
            Type::PTR | Type::CNAME => {
                let (target, end) = read_name(self.bytes, start)?;
                if end != start + len {
                    return Err(bad);
                }
                if rtype == Type::PTR {
                    RData::Ptr(target)
                } else {
                    RData::Cname(target)
                }
            }
            Type::SRV => {
                if len < 7 {
                    return Err(bad);
                }
                let (target, end) = read_name(self.bytes, start + 6)?;
                if end != start + len {
                    return Err(bad);
                }
                let field = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
                RData::Srv { priority: field(0), weight: field(2), port: field(4), target }
            }
            _ => RData::Other { rtype, data: raw.to_vec() },
        };
        Ok(Record { name, class, ttl_secs, data })
    }
}

/// Reads the name at `start`; returns it and the offset just after it (after
/// the first pointer if it was compressed).
fn read_name(bytes: &[u8], start: usize) -> Result<(Name, usize), DecodeError> {
    let truncated = DecodeError::Truncated { what: "a name" };
    let mut wire = Vec::with_capacity(32);
    let mut pos = start;
    // Every pointer must jump below everything this name has read so far, so
    // positions strictly decrease at each hop: no loop is possible.
    let mut floor = start;
    let mut end = None;
    let mut hops = 0;
    loop {
        let len = *bytes.get(pos).ok_or(truncated)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                wire.push(0);
                return Ok((Name { wire }, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                let label = bytes.get(pos + 1..pos + 1 + len).ok_or(truncated)?;
                // The label, its length byte and the root's byte still to come.
                if wire.len() + 1 + len + 1 > NAME_BYTES_MAX {
                    return Err(DecodeError::NameTooLong);
                }
                wire.push(len as u8);
                wire.extend_from_slice(label);
                pos += 1 + len;
            }
            0xC0 => {
                let low = *bytes.get(pos + 1).ok_or(truncated)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if target >= floor {
                    return Err(DecodeError::PointerNotBackwards { target, floor });
                }
                hops += 1;
                if hops > POINTER_HOPS_MAX {
                    return Err(DecodeError::TooManyPointers);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(DecodeError::BadLabelType { byte: len }),
        }
    }
}

/// A message being written, with the names written so far for compression.
struct Encoder {
    out: Vec<u8>,
    compress: bool,
    /// (offset, uncompressed suffix) of every name suffix written literally.
    names: Vec<(u16, Vec<u8>)>,
}

impl Encoder {
    fn name(&mut self, name: &Name) {
        self.name_with(name, self.compress);
    }

    fn name_with(&mut self, name: &Name, compress: bool) {
        let wire = name.wire();
        let mut pos = 0;
        while wire[pos] != 0 {
            if compress {
                if let Some(&(offset, _)) = self.names.iter().find(|(_, suffix)| suffix.as_slice() == &wire[pos..]) {
                    self.out.extend_from_slice(&(0xC000 | offset).to_be_bytes());
                    return;
                }
                if self.out.len() <= POINTER_OFFSET_MAX {
                    self.names.push((self.out.len() as u16, wire[pos..].to_vec()));
                }
            }
            let len = usize::from(wire[pos]);
            self.out.extend_from_slice(&wire[pos..pos + 1 + len]);
            pos += 1 + len;
        }
        self.out.push(0);
    }

    fn record(&mut self, record: &Record) -> Result<(), EncodeError> {
        self.name(&record.name);
        self.out.extend_from_slice(&record.data.rtype().0.to_be_bytes());
        self.out.extend_from_slice(&record.class.to_be_bytes());
        self.out.extend_from_slice(&record.ttl_secs.to_be_bytes());
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        match &record.data {
            RData::A(ip) => self.out.extend_from_slice(&ip.octets()),
            RData::Aaaa(ip) => self.out.extend_from_slice(&ip.octets()),
            RData::Ptr(target) | RData::Cname(target) => self.name(target),
            RData::Srv { priority, weight, port, target } => {
                for field in [priority, weight, port] {
                    self.out.extend_from_slice(&field.to_be_bytes());
                }
                // RFC 2782: the target of an SRV record is never compressed.
                self.name_with(target, false);
            }
            RData::Other { data, .. } => self.out.extend_from_slice(data),
        }
        let len = self.out.len() - len_at - 2;
        let len = u16::try_from(len).map_err(|_| EncodeError::RdataTooLong { len })?;
        self.out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
