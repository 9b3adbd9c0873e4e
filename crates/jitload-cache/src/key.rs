//! Cache keys: a BLAKE3 digest over named, length-prefixed fields.

use std::fmt;

/// Builds a [`CacheKey`] from everything that can change the cached bytes.
///
/// Each field is hashed as `len(name) name len(value) value` with 64-bit little-endian
/// lengths, so no two different field lists hash the same input: `("ab","c")` and
/// `("a","bc")` differ, and so do a field split across two calls and one call. Field order
/// matters; callers must add fields in a fixed order.
///
/// Feeding a large input (the whole bitcode) as a value is fine: it is hashed once, in
/// streaming fashion, without being copied.
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

/// Separates our keys from any other use of BLAKE3 on the same bytes.
const KEY_CONTEXT: &str = "jitload-cache 2025 key v1";

impl KeyBuilder {
    /// Starts a key in `domain` (e.g. `"jitload-object-v1"`): keys from different domains
    /// never collide. Bump the domain when the meaning of the cached bytes changes.
    pub fn new(domain: &str) -> Self {
        let mut builder = KeyBuilder { hasher: blake3::Hasher::new_derive_key(KEY_CONTEXT) };
        builder.field("domain", domain.as_bytes());
        builder
    }

    /// Adds one named field.
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.put(name.as_bytes());
        self.put(value);
        self
    }

    fn put(&mut self, bytes: &[u8]) {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// The key of the fields added so far.
    pub fn finish(&self) -> CacheKey {
        CacheKey(*self.hasher.finalize().as_bytes())
    }
}

/// A 32-byte digest naming one cache entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Wraps raw digest bytes (e.g. read back from somewhere else).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CacheKey(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits (the entry's file name).
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(DIGITS[usize::from(byte >> 4)] as char);
            out.push(DIGITS[usize::from(byte & 0xf)] as char);
        }
        out
    }

    /// Parses 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(CacheKey(out))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fields: &[(&str, &[u8])]) -> CacheKey {
        let mut builder = KeyBuilder::new("test");
        for (name, value) in fields {
            builder.field(name, value);
        }
        builder.finish()
    }

    #[test]
    fn field_boundaries_matter() {
        assert_ne!(key(&[("ab", b"c")]), key(&[("a", b"bc")]));
        assert_ne!(key(&[("x", b"ab"), ("y", b"c")]), key(&[("x", b"a"), ("y", b"bc")]));
        assert_ne!(key(&[("x", b"")]), key(&[]));
        assert_ne!(key(&[("x", b"1"), ("y", b"2")]), key(&[("y", b"2"), ("x", b"1")]));
    }

    #[test]
    fn domain_separates() {
        let a = KeyBuilder::new("one").field("f", b"v").finish();
        let b = KeyBuilder::new("two").field("f", b"v").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn same_fields_same_key() {
        assert_eq!(key(&[("a", b"1"), ("b", b"2")]), key(&[("a", b"1"), ("b", b"2")]));
    }

    #[test]
    fn derivation_is_pinned() {
        // Changing how keys are derived silently orphans every user's cache; make it a
        // deliberate act (update this value and the domain together).
        let k = KeyBuilder::new("jitload-object-v1").field("input", b"hello").finish();
        assert_eq!(k.hex(), PINNED);
    }
    const PINNED: &str = "c5014345e906d75e6d2e383afb1119adbfd8dea6ae442f9240de6fcddd30ae45";

    #[test]
    fn hex_round_trip() {
        let k = key(&[("a", b"1")]);
        let hex = k.hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(CacheKey::from_hex(&hex), Some(k));
        assert_eq!(CacheKey::from_hex(&hex.to_uppercase()), Some(k));
        assert_eq!(CacheKey::from_hex(&hex[1..]), None);
        assert_eq!(CacheKey::from_hex(&format!("g{}", &hex[1..])), None);
    }
}
