//! Timestamps in the XEP-0082 profile used by XEP-0202 and XEP-0203.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as stored with offline messages.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The last millisecond XEP-0082 can write (9999-12-31T23:59:59.999Z): the
/// profile's year has four digits. Later instants are written as this one.
pub const XEP0082_MAX_MILLIS: u64 = 253_402_300_799_999;

/// Days since 1970-01-01 of a proleptic Gregorian date (any year).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            era * 400 + yoe + 1
        } else {
            era * 400 + yoe
        },
        m,
        d,
    )
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats milliseconds since the epoch as an XEP-0082 DateTime in UTC,
/// for example `2026-11-22T09:37:30.123Z`. Instants after year 9999 (which
/// no clock reads, but a forged record may carry) are written as
/// [`XEP0082_MAX_MILLIS`].
pub fn xep0082(millis: u64) -> String {
    let millis = millis.min(XEP0082_MAX_MILLIS);
    let days = (millis / 86_400_000) as i64;
    let ms_of_day = millis % 86_400_000;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Reads exactly `n` ASCII digits at the start of `s`.
fn digits(s: &[u8], n: usize) -> Option<u32> {
    let part = s.get(..n)?;
    part.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Parses an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss`, an optional
/// fraction of any length, then `Z` or a `+hh:mm`/`-hh:mm` offset) into
/// milliseconds since the epoch. Anything else (another shape, a field out
/// of range, a time before 1970 or after 9999) is `None`; no input panics.
pub fn parse_xep0082(s: &str) -> Option<u64> {
    let b = s.trim().as_bytes();
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let year = i64::from(digits(b, 4)?);
    let (month, day) = (digits(&b[5..], 2)?, digits(&b[8..], 2)?);
    let (hour, minute, second) = (digits(&b[11..], 2)?, digits(&b[14..], 2)?, digits(&b[17..], 2)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut millis = 0u64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, c) in frac[..n.min(3)].iter().enumerate() {
            millis += u64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[n..];
    }
    let offset_min: i64 = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2], 2)?, digits(&[*m1, *m2], 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = i64::from(h * 60 + m);
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second)
        - offset_min * 60;
    let ms = u64::try_from(secs).ok()?.checked_mul(1000)? + millis;
    (ms <= XEP0082_MAX_MILLIS).then_some(ms)
}

/// Formats milliseconds since the epoch as an RFC 5322 date in UTC, for
/// example `Sun, 22 Nov 2026 09:37:30 +0000`.
pub fn rfc5322(millis: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let millis = millis.min(XEP0082_MAX_MILLIS);
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
        assert_eq!(
            parse_xep0082("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_xep0082(" 2023-11-14T22:13:20Z\n"), Some(1_700_000_000_000));
    }

    #[test]
    fn refuses_what_is_not_a_date() {
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-01-32T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+01",
            "1969-12-31T23:59:59Z",
            "+2024-01-01T00:00:00Z",
            "2024-01-01t00:00:00z",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "2023-11-14T22:13:20\u{e9}00:00",
            "2023-11-14T22:13:2\u{e9}+00:00",
        ] {
            assert_eq!(parse_xep0082(bad), None, "{bad:?}");
        }
        assert_eq!(parse_xep0082("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse_xep0082("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_xep0082("9999-12-31T23:59:59.999Z"),
            Some(XEP0082_MAX_MILLIS)
        );
        assert_eq!(parse_xep0082("9999-12-31T23:59:59.999-00:01"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_without_panicking(s in "\\PC{0,40}") {
            let _ = parse_xep0082(&s);
        }

        #[test]
        fn any_instant_round_trips(ms in 0u64..=XEP0082_MAX_MILLIS) {
            proptest::prop_assert_eq!(parse_xep0082(&xep0082(ms)), Some(ms));
        }

        #[test]
        fn any_instant_formats_and_mails_without_panicking(ms in proptest::num::u64::ANY) {
            let _ = rfc5322(ms);
            proptest::prop_assert_eq!(xep0082(ms).len(), 24);
        }
    }

    #[test]
    fn formats_mail_dates() {
        assert_eq!(rfc5322(1_700_000_000_123), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn formats_epoch_and_millis() {
        assert_eq!(xep0082(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep0082(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(xep0082(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(xep0082(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
