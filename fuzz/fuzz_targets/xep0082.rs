//! Fuzzes the XEP-0082 date-time parser with arbitrary UTF-8 (and with
//! bytes shaped like a date-time: digits and separators in place): it must
//! never panic, and whatever it accepts is within 1970..=9999 and prints
//! back to a date-time it parses to the same millisecond.
#![no_main]

use chorus_core::time::{XEP0082_MAX_MILLIS, parse_xep0082, xep0082};
use libfuzzer_sys::fuzz_target;

fn check(s: &str) {
    if let Some(ms) = parse_xep0082(s) {
        assert!(ms <= XEP0082_MAX_MILLIS, "{s:?} -> {ms}");
        let printed = xep0082(ms);
        assert_eq!(parse_xep0082(&printed), Some(ms), "{s:?} printed as {printed:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check(s);
    }
    // Shaped: "YYYY-MM-DDThh:mm:ss" with the fuzzer's bytes for the
    // digits, then the rest as fraction and offset.
    let mut shaped = String::from("0000-00-00T00:00:00");
    let template: Vec<char> = shaped.chars().collect();
    let mut out = String::new();
    let mut bytes = data.iter();
    for c in template {
        match (c, bytes.next()) {
            ('0', Some(b)) => out.push(char::from(b'0' + b % 10)),
            (c, _) => out.push(c),
        }
    }
    let tail: Vec<u8> = bytes.copied().collect();
    out.push_str(&String::from_utf8_lossy(&tail));
    shaped = out;
    check(&shaped);
});
