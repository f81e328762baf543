//! The incremental XML stream parser.
//!
//! Bytes arrive in arbitrary chunks; [`StreamParser::feed`] turns them into
//! [`StreamEvent`]s: the opening stream header, each complete top-level
//! element (stanza or nonza), and the closing tag. It is built on `rxml`,
//! which by construction rejects DTDs, entity declarations, processing
//! instructions and comments, and on `minidom`'s tree builder. The parser
//! enforces the stanza size and nesting depth limits itself, so a peer can
//! never make it buffer more than one stanza's worth of memory.

use minidom::Element;
use minidom::tree_builder::TreeBuilder;
use rxml::{Parse, RawEvent, RawParser};
use std::collections::HashMap;

/// Something the parser recognized.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `<stream:stream ...>`, with its attributes (names without prefix,
    /// except `xml:lang` which is reported as `lang`).
    Header(HashMap<String, String>),
    /// A complete child of the stream element.
    Element(Element),
    /// `</stream:stream>`.
    Close,
}

/// Why the stream must end; each maps to an RFC 6120 stream error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not well-formed or restricted XML (`<not-well-formed/>`).
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// A stanza exceeded the size limit (`<policy-violation/>`).
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    /// Elements nested deeper than the limit (`<policy-violation/>`).
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    /// An element name or attribute value longer than [`TOKEN_BYTES_MAX`]
    /// (`<policy-violation/>`).
    #[error("a name or attribute value longer than {0} bytes")]
    TokenTooLong(usize),
    /// The root element is not a stream header (`<invalid-namespace/>`).
    #[error("the root element is not <stream:stream>")]
    BadRoot,
}

/// Longest element name or attribute value accepted, in bytes (JIDs are at
/// most 3,071). rxml reserves this much scratch space twice per stream up
/// front, so it sets the parser's memory floor per connection; longer text
/// content is fine (it is handed over in chunks and bounded by the stanza
/// size limit).
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;

impl ParseError {
    /// The RFC 6120 stream error condition for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            ParseError::NotWellFormed(_) => "not-well-formed",
            ParseError::TooLarge(_) | ParseError::TooDeep(_) | ParseError::TokenTooLong(_) => {
                "policy-violation"
            }
            ParseError::BadRoot => "invalid-namespace",
        }
    }
}

/// Incremental parser for one XML stream. Call [`StreamParser::reset`] at
/// each stream restart (after STARTTLS and SASL success).
pub struct StreamParser {
    raw: RawParser,
    tree: TreeBuilder,
    stanza_bytes_max: usize,
    depth_max: usize,
    /// Bytes of the current top-level element seen so far.
    current_bytes: usize,
    /// Unparsed tail of the previous `feed`.
    pending: Vec<u8>,
    header_seen: bool,
    failed: bool,
}

impl StreamParser {
    /// A parser enforcing the given limits.
    pub fn new(stanza_bytes_max: usize, depth_max: usize) -> StreamParser {
        StreamParser {
            raw: Self::raw_parser(stanza_bytes_max),
            tree: TreeBuilder::new(),
            stanza_bytes_max,
            depth_max,
            current_bytes: 0,
            pending: Vec::new(),
            header_seen: false,
            failed: false,
        }
    }

    fn raw_parser(stanza_bytes_max: usize) -> RawParser {
        use rxml::parser::WithOptions;
        RawParser::with_options(rxml::parser::Options {
            max_token_length: TOKEN_BYTES_MAX.min(stanza_bytes_max),
            ..Default::default()
        })
    }

    /// Forgets everything and expects a new stream header.
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.stanza_bytes_max, self.depth_max);
    }

    /// Parses `data`, returning every complete event. After an error the
    /// parser stays failed and the stream must be closed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<StreamEvent>, ParseError> {
        if self.failed {
            return Err(ParseError::NotWellFormed("stream already failed".into()));
        }
        let mut events = Vec::new();
        let result = self.feed_inner(data, &mut events);
        if let Err(e) = result {
            self.failed = true;
            return Err(e);
        }
        Ok(events)
    }

    fn feed_inner(&mut self, data: &[u8], events: &mut Vec<StreamEvent>) -> Result<(), ParseError> {
        let mut owned;
        let mut buf: &[u8] = if self.pending.is_empty() {
            data
        } else {
            owned = std::mem::take(&mut self.pending);
            owned.extend_from_slice(data);
            &owned[..]
        };
        loop {
            let before = buf.len();
            let ev = self.raw.parse(&mut buf, false);
            let consumed = before - buf.len();
            if self.tree.depth() >= 1 {
                self.current_bytes += consumed;
                if self.current_bytes > self.stanza_bytes_max {
                    return Err(ParseError::TooLarge(self.stanza_bytes_max));
                }
            }
            match ev {
                Ok(Some(ev)) => self.on_event(ev, events)?,
                Ok(None) => return Ok(()),
                Err(rxml::error::EndOrError::NeedMoreData) => {
                    // rxml buffers partial tokens internally; anything left
                    // unconsumed is kept for the next call.
                    if !buf.is_empty() {
                        self.pending = buf.to_vec();
                    }
                    return Ok(());
                }
                Err(rxml::error::EndOrError::Error(e)) => return Err(from_rxml(e)),
            }
        }
    }

    fn on_event(&mut self, ev: RawEvent, events: &mut Vec<StreamEvent>) -> Result<(), ParseError> {
        let is_head_close = matches!(ev, RawEvent::ElementHeadClose(_));
        let is_foot = matches!(ev, RawEvent::ElementFoot(_));
        let depth_before = self.tree.depth();
        if is_foot && depth_before == 1 {
            events.push(StreamEvent::Close);
            return Ok(());
        }
        self.tree
            .process_event(ev)
            .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        if is_head_close {
            let depth = self.tree.depth();
            if depth > self.depth_max + 1 {
                return Err(ParseError::TooDeep(self.depth_max));
            }
            if depth == 1 && !self.header_seen {
                self.header_seen = true;
                let root = self.tree.top().ok_or(ParseError::BadRoot)?;
                if root.name() != "stream" || root.ns() != crate::ns::STREAM {
                    return Err(ParseError::BadRoot);
                }
                let mut attrs = HashMap::new();
                for ((ns, name), value) in root.attrs() {
                    let key = if ns.is_empty() {
                        name.to_string()
                    } else {
                        format!("{}", name)
                    };
                    attrs.insert(key, value.clone());
                }
                events.push(StreamEvent::Header(attrs));
            }
        }
        if is_foot && depth_before == 2 {
            self.current_bytes = 0;
            if let Some(el) = self.tree.unshift_child() {
                events.push(StreamEvent::Element(el));
            }
        }
        Ok(())
    }
}

/// What an rxml error means for the stream.
fn from_rxml(e: rxml::Error) -> ParseError {
    match e {
        rxml::Error::RestrictedXml(why) if why.starts_with("long ") => {
            ParseError::TokenTooLong(TOKEN_BYTES_MAX)
        }
        e => ParseError::NotWellFormed(e.to_string()),
    }
}

/// Parses one complete element from a WebSocket frame (RFC 7395), where
/// every message holds exactly one element and there is no stream root.
pub fn parse_frame(data: &[u8], stanza_bytes_max: usize, depth_max: usize) -> Result<Element, ParseError> {
    if data.len() > stanza_bytes_max {
        return Err(ParseError::TooLarge(stanza_bytes_max));
    }
    let mut raw = StreamParser::raw_parser(stanza_bytes_max);
    let mut tree = TreeBuilder::new();
    let mut buf = data;
    loop {
        match raw.parse(&mut buf, true) {
            Ok(Some(ev)) => {
                let head_close = matches!(ev, RawEvent::ElementHeadClose(_));
                tree.process_event(ev)
                    .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
                if head_close && tree.depth() > depth_max + 1 {
                    return Err(ParseError::TooDeep(depth_max));
                }
            }
            Ok(None) => break,
            Err(rxml::error::EndOrError::NeedMoreData) => {
                return Err(ParseError::NotWellFormed("incomplete frame".into()));
            }
            Err(rxml::error::EndOrError::Error(e)) => return Err(from_rxml(e)),
        }
    }
    tree.root
        .take()
        .ok_or_else(|| ParseError::NotWellFormed("empty frame".into()))
}

#[cfg(test)]
mod tests {
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
}
