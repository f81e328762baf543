//! [`FileBlobs`]: the content-addressed store of shared files' bytes
//! (XEP-0363), one file per blob under `<dir>/<first two hex>/<sha256>`.
//!
//! A blob is written to `<dir>/tmp/`, hashed as it arrives, synced, then
//! renamed to its hash and the directory synced, so a blob that exists
//! under a name is complete and its name is its content's SHA-256: a
//! crash leaves at most a temporary file, removed at the next start.

use chorus_core::files::{BlobWriter, Blobs, is_sha256_hex};
use chorus_core::store::StoreError;
use sha2::Digest;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The blob directory of one node.
pub struct FileBlobs {
    dir: PathBuf,
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

impl FileBlobs {
    /// Opens (creating if needed) the blob directory, removing what an
    /// interrupted write left behind.
    pub fn open(dir: &Path) -> Result<FileBlobs, StoreError> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io("clear the upload temporaries", e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| io("create the file store", e))?;
        Ok(FileBlobs {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the blob with this hash lives (the hash is checked first).
    fn path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256_hex(sha256).then(|| self.dir.join(&sha256[..2]).join(sha256))
    }
}

impl Blobs for FileBlobs {
    fn create(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        let name: [u8; 16] = rand_bytes();
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = self.dir.join("tmp").join(hex);
        let file = File::create(&tmp).map_err(|e| io("create an upload file", e))?;
        Ok(Box::new(Writer {
            root: self.dir.clone(),
            tmp,
            file: Some(file),
            hasher: sha2::Sha256::new(),
            len: 0,
        }))
    }

    fn open(&self, sha256: &str) -> Result<Option<(File, u64)>, StoreError> {
        let Some(p) = self.path(sha256) else {
            return Ok(None);
        };
        match File::open(&p) {
            Ok(f) => {
                let len = f.metadata().map_err(|e| io("read a file's size", e))?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("open a shared file", e)),
        }
    }

    fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_some_and(|p| p.exists())
    }
}

fn rand_bytes() -> [u8; 16] {
    // The temporary name only has to be unique among concurrent uploads.
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8..].copy_from_slice(&(t ^ u64::from(std::process::id())).to_be_bytes());
    out
}

struct Writer {
    root: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    hasher: sha2::Sha256,
    len: u64,
}

impl BlobWriter for Writer {
    fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Io("blob already finished".into()))?;
        f.write_all(chunk).map_err(|e| io("write an upload", e))?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn finish(mut self: Box<Self>, expected: Option<&str>) -> Result<String, StoreError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| StoreError::Io("blob already finished".into()))?;
        let sha: String = std::mem::take(&mut self.hasher)
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if expected.is_some_and(|e| e != sha) {
            return Err(StoreError::Corrupt(format!(
                "blob content hashes to {sha}, not {expected:?}"
            )));
        }
        file.sync_all().map_err(|e| io("sync an upload", e))?;
        drop(file);
        let shard = self.root.join(&sha[..2]);
        fs::create_dir_all(&shard).map_err(|e| io("create a file shard", e))?;
        let target = shard.join(&sha);
        if target.exists() {
            // The same bytes were shared before: keep one copy.
            return Ok(sha);
        }
        fs::rename(&self.tmp, &target).map_err(|e| io("store an upload", e))?;
        File::open(&shard)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the file shard", e))?;
        Ok(sha)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // An abandoned or finished write leaves no temporary behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_under_its_hash_and_a_wrong_hash_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = FileBlobs::open(dir.path()).expect("open");
        let mut w = blobs.create().expect("create");
        w.write(b"hello ").expect("write");
        w.write(b"world").expect("write");
        assert_eq!(w.len(), 11);
        let sha = w.finish(None).expect("finish");
        assert_eq!(
            sha,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let (mut f, len) = blobs.open(&sha).expect("open").expect("present");
        let mut back = String::new();
        std::io::Read::read_to_string(&mut f, &mut back).expect("read");
        assert_eq!((back.as_str(), len), ("hello world", 11));
        let mut w = blobs.create().expect("create");
        w.write(b"tampered").expect("write");
        assert!(matches!(w.finish(Some(&sha)), Err(StoreError::Corrupt(_))));
        assert!(blobs.open("../../etc/passwd").expect("no error").is_none());
        let leftovers = fs::read_dir(dir.path().join("tmp")).expect("tmp").count();
        assert_eq!(leftovers, 0, "no temporary survives");
    }

    #[test]
    fn an_interrupted_write_leaves_nothing_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = FileBlobs::open(dir.path()).expect("open");
        let mut w = blobs.create().expect("create");
        w.write(b"partial").expect("write");
        std::mem::forget(w);
        let blobs = FileBlobs::open(dir.path()).expect("reopen");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
        assert!(!blobs.contains(&"0".repeat(64)));
    }
}
