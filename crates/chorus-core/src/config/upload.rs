//! `[upload]`: XEP-0363 HTTP File Upload, served by every node's HTTPS
//! listener. Uploaded bytes are kept content-addressed (SHA-256) and copied
//! to every site, so a file shared in one office downloads in another
//! while the first is down.

use super::Config;
use serde::{Deserialize, Serialize};

/// `[upload]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Offer file sharing at all.
    pub enabled: bool,
    /// The upload service's address; empty means `upload.<server.domain>`.
    pub domain: String,
    /// The HTTPS base URL clients reach this node's HTTP listener at, such
    /// as `https://chat.example.com`; empty means `https://<server.domain>:<http port>`.
    pub url_base: String,
    /// Largest file, in bytes.
    pub file_bytes_max: u64,
    /// All files one user has shared, in bytes.
    pub quota_bytes_per_user: u64,
    /// Time a slot stays open for its upload, in seconds.
    pub slot_ttl_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            domain: String::new(),
            url_base: String::new(),
            file_bytes_max: 100 * 1024 * 1024,
            quota_bytes_per_user: 1024 * 1024 * 1024,
            slot_ttl_secs: 300,
        }
    }
}

impl UploadConfig {
    /// Checks the section (the key in the error names what is wrong).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled && self.file_bytes_max == 0 {
            return Err(("upload.file_bytes_max", "must be positive".into()));
        }
        if self.enabled && self.slot_ttl_secs == 0 {
            return Err(("upload.slot_ttl_secs", "must be positive".into()));
        }
        let url = &self.url_base;
        if !url.is_empty() && !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(("upload.url_base", format!("{url:?} is not an http(s):// URL")));
        }
        Ok(())
    }
}

impl Config {
    /// The file-sharing service's domain (XEP-0363).
    pub fn upload_domain(&self) -> String {
        if self.upload.domain.is_empty() {
            format!("upload.{}", self.server.domain)
        } else {
            self.upload.domain.clone()
        }
    }

    /// The HTTPS base URL of this node's file sharing (no trailing slash).
    pub fn upload_url_base(&self) -> String {
        if !self.upload.url_base.is_empty() {
            return self.upload.url_base.trim_end_matches('/').to_owned();
        }
        let scheme = if self.http.tls { "https" } else { "http" };
        let port = self.http.listen.map(|a| a.port()).unwrap_or(8080);
        format!("{scheme}://{}:{port}", self.server.domain)
    }
}
