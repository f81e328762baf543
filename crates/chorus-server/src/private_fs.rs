//! Files only the node can read: the data directory is 0700 and private
//! keys 0600 from the moment they exist, whatever the umask, and existing
//! ones are tightened at start; the control socket admits only callers
//! running as the node's own user (or root), checked with SO_PEERCRED.

use anyhow::Context as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory.
pub const DATA_DIR_MODE: u32 = 0o700;
/// Mode of private keys and the control socket.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) as 0700 and makes an existing one 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)
        .with_context(|| format!("create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))
        .with_context(|| format!("make {} private (0700)", dir.display()))
}

/// Writes a private file: created 0600 (the umask can only take bits
/// away), and an existing file is set to 0600 before anything is written.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .with_context(|| format!("make {} private (0600)", path.display()))?;
    f.set_len(0)
        .with_context(|| format!("truncate {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("write {}", path.display()))?;
    f.sync_all().with_context(|| format!("sync {}", path.display()))
}

/// Whether a control-socket peer with this uid may talk to the node.
pub fn peer_allowed(peer_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_world_readable_key_is_made_private_before_it_is_written() {
        let dir = tempfile::tempdir().expect("test setup");
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "old").expect("test setup");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("test setup");
        write_private(&key, b"secret").expect("test setup");
        let mode = std::fs::metadata(&key).expect("test setup").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&key).expect("test setup"), b"secret");
    }

    #[test]
    fn the_data_directory_is_private_even_if_it_existed_open() {
        let dir = tempfile::tempdir().expect("test setup");
        let data = dir.path().join("a/b");
        std::fs::create_dir_all(&data).expect("test setup");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("test setup");
        private_dir(&data).expect("test setup");
        let mode = std::fs::metadata(&data).expect("test setup").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn only_the_nodes_own_user_and_root_pass_the_peer_check() {
        let me = nix::unistd::geteuid().as_raw();
        assert!(peer_allowed(me));
        assert!(peer_allowed(0));
        assert!(!peer_allowed(me.wrapping_add(12345).max(1)));
    }
}
