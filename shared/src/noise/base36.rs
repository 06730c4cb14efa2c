//! Fixed-width lowercase base36 of big-endian byte strings, as Swarm prints
//! ids and join tokens.
//!
//! Encoding treats the bytes as one unsigned big-endian integer and pads with
//! leading zeros to the requested width; decoding refuses characters outside
//! `0-9a-z` and values that do not fit the requested number of bytes.

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Encodes `bytes` (a big-endian integer) as exactly `width` base36 digits.
///
/// Panics if the value needs more than `width` digits: callers pass widths
/// that fit their byte lengths (25 digits for 16 bytes, 50 for 32).
pub fn encode(bytes: &[u8], width: usize) -> String {
    let mut n = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while n.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    assert!(digits.len() <= width, "{} bytes do not fit {width} base36 digits", bytes.len());
    digits.resize(width, b'0');
    digits.reverse();
    // Every byte comes from ALPHABET, which is ASCII.
    String::from_utf8(digits).expect("base36 digits are ascii")
}

/// Decodes base36 digits into exactly `len` big-endian bytes; `None` when a
/// character is not a lowercase base36 digit or the value overflows `len` bytes.
pub fn decode(s: &str, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    for c in s.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            _ => return None,
        };
        let mut carry = u32::from(d);
        for b in out.iter_mut().rev() {
            let cur = u32::from(*b) * 36 + carry;
            *b = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_widths() {
        assert_eq!(encode(&[0; 16], 25), "0".repeat(25));
        assert_eq!(encode(&[0xff; 16], 25).len(), 25);
        assert_eq!(encode(&[0xff; 32], 50).len(), 50);
        assert_eq!(encode(&[0, 0, 0, 36], 3), "010");
        for bytes in [vec![0xffu8; 32], (0..32).collect::<Vec<u8>>(), vec![1; 32]] {
            assert_eq!(decode(&encode(&bytes, 50), 32).unwrap(), bytes);
        }
    }

    #[test]
    fn decode_refuses_bad_input() {
        assert_eq!(decode("A", 1), None);
        assert_eq!(decode("-", 1), None);
        // 36^2 = 1296 does not fit one byte.
        assert_eq!(decode("100", 1), None);
        assert_eq!(decode("73", 1), Some(vec![255]));
        assert_eq!(decode("74", 1), None);
        assert_eq!(decode("zzzzzzzzzzzzzzzzzzzzzzzzz", 16), None);
    }
}
