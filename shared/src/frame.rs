//! Length-prefixed, versioned, bounded frames on a byte stream.
//!
//! Layout: `u32` big-endian payload length, then the payload: one version
//! byte followed by a postcard body. A frame larger than the reader's limit
//! is refused before anything is allocated, so a hostile peer cannot make us
//! allocate more than `frame_bytes_max`.

use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};

/// Limit for control-API frames (requests and replies, e.g. a service list).
pub const CONTROL_FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u32, max: u32 },
    #[error("frame version {got} is not supported (expected {want}); is the other side a different shoal version?")]
    Version { got: u8, want: u8 },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `msg` as a complete frame (header included).
pub fn encode<T: Serialize>(version: u8, msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_allocvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = u32::try_from(body.len() + 1).map_err(|_| FrameError::TooLarge { len: u32::MAX, max: u32::MAX })?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(version);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a payload (what follows the length header).
pub fn decode<T: DeserializeOwned>(version: u8, payload: &[u8]) -> Result<T, FrameError> {
    let (&got, body) = payload.split_first().ok_or_else(|| FrameError::Malformed("empty frame".into()))?;
    if got != version {
        return Err(FrameError::Version { got, want: version });
    }
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Parses a length header, enforcing `max`.
pub fn header_len(header: [u8; 4], max: u32) -> Result<u32, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Writes one frame to a blocking stream.
pub fn write_blocking<T: Serialize, W: Write>(w: &mut W, version: u8, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(version, msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame from a blocking stream.
pub fn read_blocking<T: DeserializeOwned, R: Read>(r: &mut R, version: u8, max: u32) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = header_len(header, max)?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    decode(version, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Reply, Request, API_VERSION};

    /// Frames cross machines of different byte order and word size: the
    /// header is big-endian u32 and the body postcard (varints of explicit
    /// widths), so the bytes are the same everywhere.
    #[test]
    fn frames_are_architecture_independent() {
        let msg: (u16, i32, u64, i64, String) = (0x0102, -2, u64::MAX, i64::MIN, "é".into());
        let bytes = encode(3, &msg).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0000001b03820203ffffffffffffffffff01ffffffffffffffffff0102c3a9");
        assert_eq!(header_len(bytes[..4].try_into().unwrap(), 64).unwrap() as usize, bytes.len() - 4);
        assert_eq!(decode::<(u16, i32, u64, i64, String)>(3, &bytes[4..]).unwrap(), msg);
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_blocking(&mut buf, API_VERSION, &Request::ServiceScale { service: "web".into(), replicas: 3 }).unwrap();
        let got: Request = read_blocking(&mut buf.as_slice(), API_VERSION, CONTROL_FRAME_BYTES_MAX).unwrap();
        assert_eq!(got, Request::ServiceScale { service: "web".into(), replicas: 3 });
    }

    #[test]
    fn hostile_frames_are_errors() {
        let huge = [0xff, 0xff, 0xff, 0xff];
        let r: Result<Reply, _> = read_blocking(&mut huge.as_slice(), API_VERSION, 1024);
        assert!(matches!(r, Err(FrameError::TooLarge { .. })));
        let wrong_version = [0, 0, 0, 2, 99, 0];
        let r: Result<Reply, _> = read_blocking(&mut wrong_version.as_slice(), API_VERSION, 1024);
        assert!(matches!(r, Err(FrameError::Version { got: 99, .. })));
        let garbage = [0, 0, 0, 3, API_VERSION, 0xff, 0xff];
        let r: Result<Reply, _> = read_blocking(&mut garbage.as_slice(), API_VERSION, 1024);
        assert!(matches!(r, Err(FrameError::Malformed(_))));
        let r: Result<Reply, _> = read_blocking(&mut [].as_slice(), API_VERSION, 1024);
        assert!(matches!(r, Err(FrameError::Closed)));
    }
}
