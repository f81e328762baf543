//! Tests of the stream parser: chunking, limits, restricted XML, frames.

use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='chorus.test' version='1.0'>";

fn parser() -> StreamParser {
    StreamParser::new(4096, 8)
}

#[test]
fn header_stanza_and_close_in_one_chunk() {
    let mut p = parser();
    let input = format!("{HEADER}<message to='a@b'><body>hi</body></message></stream:stream>");
    let ev = p.feed(input.as_bytes()).expect("valid");
    assert_eq!(ev.len(), 3);
    match &ev[0] {
        StreamEvent::Header(a) => assert_eq!(a.get("to").map(String::as_str), Some("chorus.test")),
        other => panic!("expected header, got {other:?}"),
    }
    match &ev[1] {
        StreamEvent::Element(e) => {
            assert!(e.is("message", "jabber:client"));
            assert_eq!(
                e.get_child("body", "jabber:client").map(|b| b.text()),
                Some("hi".into())
            );
        }
        other => panic!("expected element, got {other:?}"),
    }
    assert_eq!(ev[2], StreamEvent::Close);
}

#[test]
fn byte_by_byte_gives_same_events() {
    let input = format!("{HEADER}<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq><presence/>");
    let mut whole = parser();
    let expected = whole.feed(input.as_bytes()).expect("valid");
    let mut p = parser();
    let mut got = Vec::new();
    for b in input.as_bytes() {
        got.extend(p.feed(std::slice::from_ref(b)).expect("valid"));
    }
    assert_eq!(got, expected);
    assert_eq!(got.len(), 3);
}

#[test]
fn utf8_split_across_chunks() {
    let input = format!("{HEADER}<message><body>h\u{e9}\u{1F600}</body></message>");
    let bytes = input.as_bytes();
    let mut p = parser();
    let mut got = Vec::new();
    for chunk in bytes.chunks(3) {
        got.extend(p.feed(chunk).expect("valid"));
    }
    let StreamEvent::Element(m) = &got[1] else {
        panic!("no element")
    };
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text()),
        Some("h\u{e9}\u{1F600}".into())
    );
}

#[test]
fn rejects_mismatched_tags() {
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    let e = p.feed(b"<message><unclosed></message>").expect_err("mismatch");
    assert_eq!(e.condition(), "not-well-formed");
    assert!(p.feed(b"<presence/>").is_err(), "a failed parser stays failed");
}

#[test]
fn rejects_doctype_and_entities() {
    let mut p = parser();
    let e = p
        .feed(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream/>")
        .expect_err("doctype");
    assert_eq!(e.condition(), "not-well-formed");
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    assert!(p.feed(b"<message><body>&xxe;</body></message>").is_err());
}

#[test]
fn enforces_stanza_size_even_without_closing_tag() {
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    p.feed(b"<message><body>").expect("start");
    let chunk = vec![b'a'; 1024];
    let mut err = None;
    for _ in 0..10 {
        if let Err(e) = p.feed(&chunk) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err, Some(ParseError::TooLarge(4096)));
}

#[test]
fn long_text_is_fine_but_a_long_attribute_is_a_policy_violation() {
    let mut p = StreamParser::new(262_144, 8);
    p.feed(HEADER.as_bytes()).expect("header");
    let body = "x".repeat(100_000);
    let ev = p
        .feed(format!("<message><body>{body}</body></message>").as_bytes())
        .expect("long text within the stanza limit");
    let [StreamEvent::Element(m)] = &ev[..] else {
        panic!("expected one element, got {ev:?}")
    };
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text().len()),
        Some(100_000)
    );
    let id = "y".repeat(TOKEN_BYTES_MAX + 1);
    let e = p
        .feed(format!("<message id='{id}'/>").as_bytes())
        .expect_err("attribute over the token limit");
    assert_eq!(e, ParseError::TokenTooLong(TOKEN_BYTES_MAX));
    assert_eq!(e.condition(), "policy-violation");
}

#[test]
fn a_websocket_frame_with_a_long_attribute_is_a_policy_violation() {
    let id = "y".repeat(TOKEN_BYTES_MAX + 1);
    let frame = format!("<message xmlns='jabber:client' id='{id}'/>");
    let e = parse_frame(frame.as_bytes(), 262_144, 8).expect_err("too long");
    assert_eq!(e, ParseError::TokenTooLong(TOKEN_BYTES_MAX));
}

#[test]
fn size_counter_resets_between_stanzas() {
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    let body = "x".repeat(3000);
    for _ in 0..5 {
        let ev = p
            .feed(format!("<message><body>{body}</body></message>").as_bytes())
            .expect("fits");
        assert_eq!(ev.len(), 1);
    }
}

#[test]
fn enforces_depth() {
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    let deep = "<a>".repeat(12);
    assert_eq!(p.feed(deep.as_bytes()).expect_err("deep"), ParseError::TooDeep(8));
}

#[test]
fn rejects_wrong_root() {
    let mut p = parser();
    assert_eq!(
        p.feed(b"<html xmlns='x'>").expect_err("root"),
        ParseError::BadRoot
    );
}

#[test]
fn reset_accepts_a_new_header() {
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    p.reset();
    let ev = p.feed(HEADER.as_bytes()).expect("second header");
    assert!(matches!(ev[0], StreamEvent::Header(_)));
}

#[test]
fn frame_parsing() {
    let el = parse_frame(
        b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x' version='1.0'/>",
        4096,
        8,
    )
    .expect("open frame");
    assert!(el.is("open", crate::ns::FRAMING));
    assert!(parse_frame(b"<message><a></message>", 4096, 8).is_err());
    assert!(parse_frame(&vec![b'a'; 5000], 4096, 8).is_err());
}

proptest::proptest! {
    #[test]
    fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(0usize..200, 0..8)) {
        let input = format!("{HEADER}<message to='a@b'><body>caf\u{e9} &amp; more</body></message><iq id='1' type='get'><query xmlns='jabber:iq:roster'/></iq></stream:stream>");
        let bytes = input.as_bytes();
        let expected = parser().feed(bytes).expect("valid");
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        points.sort_unstable();
        let mut p = parser();
        let mut got = Vec::new();
        let mut last = 0;
        for c in points.into_iter().chain(std::iter::once(bytes.len())) {
            got.extend(p.feed(&bytes[last..c]).expect("valid"));
            last = c;
        }
        proptest::prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let mut p = parser();
        let _ = p.feed(HEADER.as_bytes());
        let _ = p.feed(&data);
        let _ = parse_frame(&data, 4096, 8);
    }
}

#[test]
fn an_endless_stream_header_is_cut_at_the_bound() {
    let mut p = parser();
    let mut fed = p
        .feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'")
        .map(|_| 0);
    let mut i = 0;
    while fed.is_ok() && i < 100_000 {
        fed = p
            .feed(format!(" a{i}='{}'", "x".repeat(50)).as_bytes())
            .map(|_| i);
        i += 1;
    }
    assert_eq!(fed, Err(ParseError::HeaderTooLarge("attributes")));
    assert!(i <= HEADER_ATTRIBUTES_MAX, "cut after {i} attributes");
}

#[test]
fn a_stream_header_is_bounded_in_bytes_attributes_and_namespaces() {
    let long = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}'",
        "x".repeat(HEADER_BYTES_MAX)
    );
    let mut p = StreamParser::new(1 << 20, 8);
    assert_eq!(p.feed(long.as_bytes()), Err(ParseError::HeaderTooLarge("bytes")));
    let mut ws = parser();
    let spaces = format!("<?xml version='1.0'?>{}", " ".repeat(HEADER_BYTES_MAX));
    assert_eq!(
        ws.feed(spaces.as_bytes()),
        Err(ParseError::HeaderTooLarge("bytes"))
    );
    let decls: String = (0..HEADER_NAMESPACES_MAX)
        .map(|i| format!(" xmlns:p{i}='urn:x:{i}'"))
        .collect();
    let mut ns = parser();
    let r = ns.feed(format!("<stream:stream xmlns='jabber:client'{decls}>").as_bytes());
    assert_eq!(r, Err(ParseError::HeaderTooLarge("namespace declarations")));
    assert_eq!(
        ParseError::HeaderTooLarge("bytes").condition(),
        "policy-violation"
    );
    // A normal header, and a stanza far larger than the header bound, pass.
    let mut ok = StreamParser::new(1 << 20, 8);
    let big = format!(
        "{HEADER}<message><body>{}</body></message>",
        "y".repeat(4 * HEADER_BYTES_MAX)
    );
    assert_eq!(ok.feed(big.as_bytes()).expect("valid").len(), 2);
}

#[test]
fn bytes_that_are_not_a_stream_header_end_the_stream_at_once() {
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"<html>",
        b"<?xml version='1.0'?><html ",
        b"hello",
        b" <stream:stream>",
    ] {
        let mut p = parser();
        match p.feed(junk) {
            Err(e) => assert_ne!(e.condition(), "policy-violation", "{junk:?}"),
            Ok(ev) => panic!("{junk:?} was accepted: {ev:?}"),
        }
    }
}

#[test]
fn the_tree_builder_is_parked_between_stanzas_and_namespaces_still_resolve() {
    // The stream element under another prefix, and a prefix declared on it
    // that a stanza uses: both must survive the rebuild.
    let header = "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' \
                  xmlns:x='urn:example:x' to='chorus.test' version='1.0'>";
    let mut p = parser();
    p.feed(header.as_bytes()).expect("header");
    assert!(p.tree.is_none(), "idle after the header: nothing held");
    let stanza = "<message to='a@b'><x:tag/><body>hi</body></message>";
    let ev = p.feed(stanza.as_bytes()).expect("stanza");
    assert!(p.tree.is_none(), "idle again after the stanza");
    let StreamEvent::Element(e) = &ev[0] else {
        panic!("expected element, got {ev:?}")
    };
    assert!(e.is("message", "jabber:client"));
    assert!(e.get_child("tag", "urn:example:x").is_some(), "{e:?}");
    // The same bytes without a pause between them give the same element.
    let mut whole = parser();
    let all = whole.feed(format!("{header}{stanza}").as_bytes()).expect("valid");
    assert_eq!(all[1], ev[0]);
    assert_eq!(p.feed(b"</s:stream>").expect("close"), vec![StreamEvent::Close]);
}

#[test]
fn a_read_that_ends_inside_a_stanza_keeps_the_tree_builder() {
    let mut p = parser();
    p.feed(HEADER.as_bytes()).expect("header");
    p.feed(b"<message to='a@b' type='chat'").expect("part of a head");
    assert!(p.tree.is_some(), "the open head lives in the tree builder");
    p.feed(b"><body>h").expect("more");
    assert!(p.tree.is_some());
    let ev = p.feed(b"i</body></message>").expect("rest");
    let StreamEvent::Element(e) = &ev[0] else {
        panic!("expected element, got {ev:?}")
    };
    assert_eq!(e.attr("type"), Some("chat"));
    assert_eq!(
        e.get_child("body", "jabber:client").map(|b| b.text()),
        Some("hi".into())
    );
    assert!(p.tree.is_none());
}
