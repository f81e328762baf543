//! Fuzzes the compliance API's query strings: any bytes, as UTF-8 or
//! percent-encoded, through the parsing and checks every endpoint runs
//! (`chorus_core::api_query::exercise`). It must never panic.
#![no_main]

use chorus_core::api_query::exercise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        exercise(s);
    }
    // Every byte percent-encoded: decoding is exercised with any content.
    let encoded: String = data.iter().map(|b| format!("%{b:02X}")).collect();
    exercise(&format!("q={encoded}&start={encoded}"));
});
