//! A minimal tar (POSIX ustar) writer, for `shoal swarm backup` archives.
//!
//! Owns the archive format and nothing else: regular files only, each a
//! 512-byte header (name, mode, owner, size, mtime, checksum) and its bytes
//! padded to 512, then two zero blocks. Names are single relative path
//! components of at most [`NAME_BYTES_MAX`] bytes (`shoal.redb`, `node.key`),
//! so no long-name extensions are needed; sizes are at most
//! [`FILE_BYTES_MAX`] (11 octal digits). GNU tar and busybox tar read it.
//! A file that yields fewer or more bytes than its header announced is an
//! error, never a silently malformed archive.

use std::io::{Read, Write};

/// Bytes per tar block.
pub const BLOCK_BYTES: usize = 512;
/// Longest member name (ustar's `name` field, without the `prefix` field).
pub const NAME_BYTES_MAX: usize = 100;
/// Largest member: 11 octal digits in the header's size field.
pub const FILE_BYTES_MAX: u64 = 0o777_7777_7777;

/// Why a member could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("cannot put {name:?} in a tar archive: a member name must be one relative path component of 1 to {NAME_BYTES_MAX} bytes")]
    BadName { name: String },
    #[error("cannot put {name:?} in a tar archive: {size} bytes is over the format's {FILE_BYTES_MAX}")]
    TooLarge { name: String, size: u64 },
    #[error("{name:?} changed while it was archived: expected {expected} bytes")]
    SizeChanged { name: String, expected: u64 },
    #[error("writing the tar archive: {0}")]
    Io(#[from] std::io::Error),
}

/// A member's header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: &'a str,
    /// Permission bits (e.g. `0o600`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime_s: u64,
}

/// Writes a tar archive to `out`, member by member; [`TarWriter::finish`]
/// writes the end marker.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out }
    }

    /// Appends one regular file: its header, exactly `member.size` bytes
    /// read from `data`, and the padding to the next block.
    pub fn append(&mut self, member: &Member<'_>, data: &mut dyn Read) -> Result<(), TarError> {
        let header = header(member)?;
        self.out.write_all(&header)?;
        let copied = std::io::copy(&mut data.take(member.size), &mut self.out)?;
        let mut probe = [0u8; 1];
        if copied != member.size || data.read(&mut probe)? != 0 {
            return Err(TarError::SizeChanged { name: member.name.to_string(), expected: member.size });
        }
        let pad = (BLOCK_BYTES - (member.size % BLOCK_BYTES as u64) as usize) % BLOCK_BYTES;
        self.out.write_all(&[0u8; BLOCK_BYTES][..pad])?;
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the output.
    pub fn finish(mut self) -> Result<W, TarError> {
        self.out.write_all(&[0u8; 2 * BLOCK_BYTES])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The ustar header block of `m`.
fn header(m: &Member<'_>) -> Result<[u8; BLOCK_BYTES], TarError> {
    let name = m.name.as_bytes();
    let bad =
        name.is_empty() || name.len() > NAME_BYTES_MAX || name.contains(&b'/') || name.contains(&0) || m.name == "." || m.name == "..";
    if bad {
        return Err(TarError::BadName { name: m.name.to_string() });
    }
    if m.size > FILE_BYTES_MAX {
        return Err(TarError::TooLarge { name: m.name.to_string(), size: m.size });
    }
    let mut h = [0u8; BLOCK_BYTES];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(m.mode & 0o7777));
    octal(&mut h[108..116], u64::from(m.uid).min(0o777_7777));
    octal(&mut h[116..124], u64::from(m.gid).min(0o777_7777));
    octal(&mut h[124..136], m.size);
    octal(&mut h[136..148], m.mtime_s.min(FILE_BYTES_MAX));
    h[156] = b'0'; // a regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is summed with its own field read as spaces.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    Ok(h)
}

/// `value` as zero-padded octal digits filling `field` but its last byte, which is NUL.
/// Callers keep `value` within the field's digits.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    debug_assert_eq!(text.len(), digits, "{value} does not fit {digits} octal digits");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn member(name: &str, size: u64) -> Member<'_> {
        Member { name, mode: 0o600, uid: 0, gid: 0, size, mtime_s: 1_700_000_000 }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("shoal-tar-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Files of awkward sizes: empty, one block, one byte past it, several blocks.
    fn files() -> Vec<(String, Vec<u8>)> {
        [0usize, 1, 511, 512, 513, 5000]
            .iter()
            .map(|&n| (format!("f{n}.key"), (0..n).map(|i| (i * 7 + n) as u8).collect()))
            .chain([("shoal.redb".to_string(), vec![0xAB; 70_000])])
            .collect()
    }

    fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (name, data) in files {
            w.append(&member(name, data.len() as u64), &mut data.as_slice()).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn gnu_tar_lists_and_extracts_it_byte_for_byte() {
        let d = dir("gnu");
        let files = files();
        let bytes = archive(&files);
        assert_eq!(bytes.len() % BLOCK_BYTES, 0);
        std::fs::write(d.join("a.tar"), &bytes).unwrap();
        let list = Command::new("tar").arg("-tvf").arg(d.join("a.tar")).output().expect("run tar");
        assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
        assert!(list.stderr.is_empty(), "tar warned: {}", String::from_utf8_lossy(&list.stderr));
        let listing = String::from_utf8_lossy(&list.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), files.len(), "{listing}");
        for ((name, data), line) in files.iter().zip(&lines) {
            assert!(line.starts_with("-rw------- "), "{line}");
            assert!(line.ends_with(&format!(" {name}")), "{line}");
            assert!(line.contains(&format!(" {} ", data.len())), "{line}");
        }
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let x = Command::new("tar").arg("-xf").arg(d.join("a.tar")).arg("-C").arg(&out).output().expect("run tar");
        assert!(x.status.success() && x.stderr.is_empty(), "{}", String::from_utf8_lossy(&x.stderr));
        for (name, data) in &files {
            assert_eq!(&std::fs::read(out.join(name)).unwrap(), data, "{name}");
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(out.join(name)).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn headers_carry_a_valid_checksum_and_the_ustar_magic() {
        let bytes = archive(&[("node.key".into(), b"k".to_vec())]);
        let h = &bytes[..BLOCK_BYTES];
        assert_eq!(&h[257..265], b"ustar\x0000");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let sum: u32 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        assert_eq!(stored, sum);
        assert_eq!(&h[124..136], b"00000000001\0");
        // One header, one data block, two zero blocks.
        assert_eq!(bytes.len(), 4 * BLOCK_BYTES);
        assert!(bytes[2 * BLOCK_BYTES..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_names_and_wrong_sizes_are_refused() {
        for name in ["", "a/b", "/abs", "..", ".", "nul\0", &"x".repeat(NAME_BYTES_MAX + 1)] {
            let mut w = TarWriter::new(Vec::new());
            let e = w.append(&member(name, 0), &mut &b""[..]).unwrap_err();
            assert!(matches!(e, TarError::BadName { .. }), "{name:?}: {e}");
        }
        let mut w = TarWriter::new(Vec::new());
        w.append(&member(&"x".repeat(NAME_BYTES_MAX), 1), &mut &b"y"[..]).unwrap();
        let e = w.append(&member("short", 10), &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(e, TarError::SizeChanged { expected: 10, .. }), "{e}");
        let e = w.append(&member("long", 2), &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(e, TarError::SizeChanged { expected: 2, .. }), "{e}");
        let e = w.append(&member("huge", FILE_BYTES_MAX + 1), &mut &b""[..]).unwrap_err();
        assert!(matches!(e, TarError::TooLarge { .. }), "{e}");
    }
}
