//! Timestamps in the XEP-0082 profile used by XEP-0202 and XEP-0203.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as stored with offline messages.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats milliseconds since the epoch as an XEP-0082 DateTime in UTC,
/// for example `2026-11-22T09:37:30.123Z`.
pub fn xep0082(millis: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(millis);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_and_millis() {
        assert_eq!(xep0082(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep0082(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
