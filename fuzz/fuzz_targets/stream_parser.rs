//! Fuzzes the incremental stream parser: arbitrary bytes, split at an
//! arbitrary point, must never panic or exceed the stanza limit, and a
//! WebSocket frame parse of the same bytes must never panic either.
#![no_main]

use chorus_xmpp::parser::{StreamParser, parse_frame};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    for prefix in [&b""[..], HEADER] {
        let mut p = StreamParser::new(4096, 16);
        let _ = p.feed(prefix);
        if p.feed(&data[..split]).is_ok() {
            let _ = p.feed(&data[split..]);
        }
    }
    let _ = parse_frame(data, 4096, 16);
});
