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

/// Parses an XEP-0082 DateTime (`2026-11-22T09:37:30Z`, optional
/// fraction, `Z` or a `+hh:mm`/`-hh:mm` offset) into milliseconds since
/// the epoch.
pub fn parse_xep0082(s: &str) -> Option<u64> {
    let s = s.trim();
    let (local, offset_ms): (&str, i64) = if let Some(l) = s.strip_suffix('Z') {
        (l, 0)
    } else if s.len() > 6 && matches!(&s[s.len() - 6..s.len() - 5], "+" | "-") {
        let (l, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let m: i64 = off.get(4..6)?.parse().ok()?;
        (l, sign * (h * 60 + m) * 60_000)
    } else {
        return None;
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64 - offset_ms;
    u64::try_from(ms).ok()
}

/// Formats milliseconds since the epoch as an RFC 5322 date in UTC, for
/// example `Sun, 22 Nov 2026 09:37:30 +0000`.
pub fn rfc5322(millis: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let iso = xep0082(millis);
    let weekday = DAYS[((millis / 86_400_000) % 7) as usize];
    let month = iso
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {} {month} {} {} +0000",
        iso.get(8..10).unwrap_or("01"),
        iso.get(0..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_clients_send() {
        assert_eq!(parse_xep0082("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_xep0082("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123));
        assert_eq!(
            parse_xep0082("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_xep0082("2023-11-14T21:13:20-01:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_xep0082("yesterday"), None);
        assert_eq!(parse_xep0082("2023-11-14T22:13:20"), None);
    }

    #[test]
    fn formats_mail_dates() {
        assert_eq!(rfc5322(1_700_000_000_123), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn formats_epoch_and_millis() {
        assert_eq!(xep0082(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep0082(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
