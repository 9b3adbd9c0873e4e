//! The on-disk format of one entry, and reading one back with full validation.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "jlcache\0"
//!      8     4  format version, u32 little-endian (1)
//!     12     4  reserved, must be 0
//!     16    32  the entry's key, echoed (catches a file under the wrong name)
//!     48     8  payload length in bytes, u64 little-endian
//!     56    32  BLAKE3 of bytes 0..56 followed by the payload
//!     88     …  payload
//! ```
//!
//! The checksum covers the header too, so every byte of a file is checked; the length must
//! also match the file's size, so truncation is caught before reading the payload.

use std::fs::File;
use std::io::{self, Read};

use crate::CacheKey;

/// First bytes of every entry file.
pub const MAGIC: [u8; 8] = *b"jlcache\0";
/// Bump when the layout changes; old entries then read as invalid and are rebuilt.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 88;
const CHECKSUMMED_HEADER: usize = 56;

/// Why an entry was rejected (for the log; every reason means "remove and rebuild").
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    Truncated { size: u64 },
    BadMagic,
    BadVersion(u32),
    BadReserved,
    WrongKey,
    LengthMismatch { header: u64, file: u64 },
    BadChecksum,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated { size } => {
                write!(f, "truncated ({size} bytes, header is {HEADER_LEN})")
            }
            Invalid::BadMagic => f.write_str("not a jitload cache entry (bad magic)"),
            Invalid::BadVersion(v) => write!(f, "format version {v}, expected {FORMAT_VERSION}"),
            Invalid::BadReserved => f.write_str("reserved header field is not zero"),
            Invalid::WrongKey => f.write_str("entry belongs to a different key"),
            Invalid::LengthMismatch { header, file } => {
                write!(f, "header says {header} payload bytes, file holds {file}")
            }
            Invalid::BadChecksum => f.write_str("checksum mismatch"),
        }
    }
}

/// The header for `payload` stored under `key`.
pub fn header(key: &CacheKey, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // 12..16 reserved, zero.
    h[16..48].copy_from_slice(key.as_bytes());
    h[48..56].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = checksum(&h, payload);
    h[56..88].copy_from_slice(&sum);
    h
}

fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&header[..CHECKSUMMED_HEADER]);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

/// Checks everything in the header that can be checked without the payload.
/// `file_size` is the size of the whole file.
pub fn check_header(h: &[u8; HEADER_LEN], key: &CacheKey, file_size: u64) -> Result<u64, Invalid> {
    if h[0..8] != MAGIC {
        return Err(Invalid::BadMagic);
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Invalid::BadVersion(version));
    }
    if h[12..16] != [0; 4] {
        return Err(Invalid::BadReserved);
    }
    if h[16..48] != key.as_bytes()[..] {
        return Err(Invalid::WrongKey);
    }
    let len = u64::from_le_bytes(h[48..56].try_into().expect("8 bytes"));
    let file = file_size.checked_sub(HEADER_LEN as u64).ok_or(Invalid::Truncated { size: file_size })?;
    if len != file {
        return Err(Invalid::LengthMismatch { header: len, file });
    }
    Ok(len)
}

/// Outcome of reading an entry: I/O trouble is kept apart from a bad entry because only the
/// latter justifies deleting the file.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Invalid(Invalid),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<Invalid> for ReadError {
    fn from(e: Invalid) -> Self {
        ReadError::Invalid(e)
    }
}

/// Reads and validates the entry in `file` (positioned at 0, `file_size` bytes long).
///
/// The payload is read straight into the returned vector (no zero-filling, no copy after
/// the kernel's) and hashed once.
pub fn read(file: &File, file_size: u64, key: &CacheKey) -> Result<Vec<u8>, ReadError> {
    if file_size < HEADER_LEN as u64 {
        return Err(Invalid::Truncated { size: file_size }.into());
    }
    let mut h = [0u8; HEADER_LEN];
    let mut reader = file;
    reader.read_exact(&mut h)?;
    let len = check_header(&h, key, file_size)?;
    let len_usize = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let mut payload = Vec::new();
    // try_reserve: a huge entry is a miss, never an abort.
    payload.try_reserve_exact(len_usize).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    // `take` stops at exactly `len`, so read_to_end needs no extra probing read.
    reader.take(len).read_to_end(&mut payload)?;
    if payload.len() as u64 != len {
        // The file shrank under us (someone truncated it in place).
        return Err(Invalid::Truncated { size: HEADER_LEN as u64 + payload.len() as u64 }.into());
    }
    if checksum(&h, &payload) != h[56..88] {
        return Err(Invalid::BadChecksum.into());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyBuilder;

    fn key(n: &str) -> CacheKey {
        KeyBuilder::new("entry-test").field("n", n.as_bytes()).finish()
    }

    #[test]
    fn header_layout() {
        let k = key("a");
        let h = header(&k, b"xyz");
        assert_eq!(&h[0..8], b"jlcache\0");
        assert_eq!(&h[8..12], &1u32.to_le_bytes());
        assert_eq!(&h[12..16], &[0; 4]);
        assert_eq!(&h[16..48], k.as_bytes());
        assert_eq!(&h[48..56], &3u64.to_le_bytes());
        assert_eq!(check_header(&h, &k, HEADER_LEN as u64 + 3), Ok(3));
    }

    #[test]
    fn every_header_byte_is_checked() {
        // Flip each byte: the header check or the checksum must notice.
        let k = key("a");
        let payload = b"some payload";
        let good = header(&k, payload);
        for i in 0..HEADER_LEN {
            let mut h = good;
            h[i] ^= 0x40;
            let size = (HEADER_LEN + payload.len()) as u64;
            let caught = check_header(&h, &k, size).is_err() || checksum(&h, payload) != h[56..88];
            assert!(caught, "flipping header byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_key_and_length() {
        let h = header(&key("a"), b"xyz");
        assert_eq!(check_header(&h, &key("b"), HEADER_LEN as u64 + 3), Err(Invalid::WrongKey));
        assert_eq!(check_header(&h, &key("a"), HEADER_LEN as u64 + 4), Err(Invalid::LengthMismatch { header: 3, file: 4 }));
    }
}
