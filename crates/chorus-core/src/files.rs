//! Shared files (XEP-0363): an upload slot as the replicated table keeps
//! it, the URL path that names it, and the [`Blobs`] seam to the
//! content-addressed file store that `chorus-store` implements on disk.

use crate::store::StoreError;
use serde::{Deserialize, Serialize};

/// One upload slot, and once the upload is done, the file it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The file name the client gave.
    pub filename: String,
    /// The size the client announced, in bytes (the upload must match).
    pub size: u64,
    /// The MIME type the client announced, if any.
    pub content_type: Option<String>,
    /// When the slot was handed out, in milliseconds since the epoch.
    pub created_ms: u64,
    /// The SHA-256 of the bytes (lowercase hex), once uploaded.
    pub sha256: Option<String>,
}

/// Longest file name accepted, in bytes.
pub const FILENAME_BYTES_MAX: usize = 255;

/// Whether `s` is a lowercase hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a client's file name is acceptable: not empty, bounded, no
/// path separators or control characters.
pub fn valid_filename(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FILENAME_BYTES_MAX
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// Percent-encodes a URL path segment (RFC 3986 unreserved characters stay).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded URL path segment; `None` if malformed.
pub fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The (user, token, file name) of a slot URL, wherever it is hosted.
pub fn parse_slot_url(url: &str) -> Option<(String, String, String)> {
    let path = &url[url.find("/upload/")? + "/upload/".len()..];
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut parts = path.split('/');
    let (u, t, f) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((decode_segment(u)?, decode_segment(t)?, decode_segment(f)?))
}

/// The path under which a slot is uploaded and downloaded.
pub fn slot_path(user: &str, token: &str, filename: &str) -> String {
    format!(
        "/upload/{}/{}/{}",
        encode_segment(user),
        encode_segment(token),
        encode_segment(filename)
    )
}

/// A blob being written: bytes are hashed as they arrive.
pub trait BlobWriter: Send {
    /// Appends bytes.
    fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;
    /// Bytes written so far.
    fn len(&self) -> u64;
    /// Whether nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Syncs the bytes to disk and stores them under their SHA-256, which
    /// it returns (hex); with `expected`, refuses other content.
    fn finish(self: Box<Self>, expected: Option<&str>) -> Result<String, StoreError>;
}

/// The content-addressed store of shared files' bytes.
pub trait Blobs: Send + Sync + 'static {
    /// Starts a new blob.
    fn create(&self) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Opens a stored blob with its size; `None` if this node lacks it.
    fn open(&self, sha256: &str) -> Result<Option<(std::fs::File, u64)>, StoreError>;
    /// Whether this node holds the blob.
    fn contains(&self, sha256: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hashes_are_checked() {
        assert!(valid_filename("report 2026.pdf"));
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
            assert!(!valid_filename(bad), "{bad:?}");
        }
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("../../etc/passwd"));
    }

    #[test]
    fn slot_urls_round_trip() {
        let url = format!(
            "https://files.example.com{}",
            slot_path("alice", "t0k", "a b/ü.png")
        );
        assert_eq!(
            parse_slot_url(&url),
            Some(("alice".into(), "t0k".into(), "a b/ü.png".into()))
        );
        assert_eq!(parse_slot_url("https://x/upload/a/b"), None);
        assert_eq!(parse_slot_url("https://x/upload/a/b/c%ZZ"), None);
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(
            slot_path("alice", "t0k", "a b/ü.png"),
            "/upload/alice/t0k/a%20b%2F%C3%BC.png"
        );
    }
}
