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
use rxml::parser::{EventMetrics, RawQName};
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
    /// The stream header (with anything before it) exceeded
    /// [`HEADER_BYTES_MAX`], [`HEADER_ATTRIBUTES_MAX`] or
    /// [`HEADER_NAMESPACES_MAX`] (`<policy-violation/>`).
    #[error("stream header too large: {0}")]
    HeaderTooLarge(&'static str),
}

/// Bytes of the stream header, with the XML declaration and whitespace
/// before it. A real header is a few hundred bytes; an endless one is cut
/// here instead of growing a buffer.
pub const HEADER_BYTES_MAX: usize = 4096;
/// Attributes of the stream header, namespace declarations included (a
/// client sends five to seven).
pub const HEADER_ATTRIBUTES_MAX: usize = 16;
/// Namespace declarations on the stream header (`xmlns`, `xmlns:stream`,
/// perhaps one more).
pub const HEADER_NAMESPACES_MAX: usize = 4;

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
            ParseError::TooLarge(_)
            | ParseError::TooDeep(_)
            | ParseError::TokenTooLong(_)
            | ParseError::HeaderTooLarge(_) => "policy-violation",
            ParseError::BadRoot => "invalid-namespace",
        }
    }
}

/// Incremental parser for one XML stream. Call [`StreamParser::reset`] at
/// each stream restart (after STARTTLS and SASL success).
pub struct StreamParser {
    raw: RawParser,
    /// `None` while parked between stanzas (see [`StreamParser::park`]).
    tree: Option<TreeBuilder>,
    /// The stream element's name and namespace declarations: what the tree
    /// builder needs to resolve a stanza's namespaces once rebuilt.
    root: Root,
    /// Inside a stanza: its head was opened and its foot not yet read.
    in_stanza: bool,
    stanza_bytes_max: usize,
    depth_max: usize,
    /// Bytes of the current top-level element seen so far.
    current_bytes: usize,
    /// Unparsed tail of the previous `feed`.
    pending: Vec<u8>,
    /// Bytes, attributes and namespace declarations of the header so far.
    header_bytes: usize,
    header_attributes: usize,
    header_namespaces: usize,
    header_seen: bool,
    failed: bool,
}

impl StreamParser {
    /// A parser enforcing the given limits.
    pub fn new(stanza_bytes_max: usize, depth_max: usize) -> StreamParser {
        StreamParser {
            raw: Self::raw_parser(stanza_bytes_max),
            tree: Some(TreeBuilder::new()),
            root: Root::default(),
            in_stanza: false,
            stanza_bytes_max,
            depth_max,
            current_bytes: 0,
            pending: Vec::new(),
            header_bytes: 0,
            header_attributes: 0,
            header_namespaces: 0,
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
        if self.between_stanzas() {
            // rxml keeps its two token buffers at TOKEN_BYTES_MAX once
            // used; between stanzas they hold nothing, and an idle session
            // should not hold 16 KiB of them.
            self.raw.release_temporaries();
            self.park();
        }
        Ok(events)
    }

    /// Whether the stream is open and no stanza is partly read.
    fn between_stanzas(&self) -> bool {
        self.header_seen && !self.in_stanza && self.depth() == 1 && self.pending.is_empty()
    }

    /// Drops the tree builder between stanzas. It holds the stream element
    /// for the stream's whole life (its attributes, two copies of its
    /// namespace declarations and the list its children pass through):
    /// about 3 KiB of every idle connection. The next stanza rebuilds it
    /// from [`Root`] (a few small allocations per read that carries one).
    fn park(&mut self) {
        self.tree = None;
    }

    /// Elements open in the stream, the stream element included.
    fn depth(&self) -> usize {
        match &self.tree {
            Some(t) => t.depth(),
            None => 1,
        }
    }

    /// The tree builder, rebuilt with the stream element open if parked.
    fn tree(&mut self) -> Result<&mut TreeBuilder, ParseError> {
        if self.tree.is_none() {
            self.tree = Some(self.root.rebuild()?);
        }
        Ok(self.tree.as_mut().expect("set above"))
    }

    fn feed_inner(&mut self, data: &[u8], events: &mut Vec<StreamEvent>) -> Result<(), ParseError> {
        let at_start = !self.header_seen && self.header_bytes == 0 && self.pending.is_empty();
        if at_start && data.first().is_some_and(|b| *b != b'<') {
            // HTTP, TLS or SSH spoken to the XMPP port, or any other bytes
            // that cannot open an XML stream: rxml would wait for a '<'.
            return Err(ParseError::NotWellFormed("a stream must begin with '<'".into()));
        }
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
            if !self.header_seen {
                self.header_bytes += consumed;
                if self.header_bytes > HEADER_BYTES_MAX {
                    return Err(ParseError::HeaderTooLarge("bytes"));
                }
            } else if self.depth() >= 1 {
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
        let depth_before = self.depth();
        if !self.header_seen {
            self.check_header_event(&ev)?;
        } else if depth_before == 1 && matches!(ev, RawEvent::ElementHeadOpen(..)) {
            self.in_stanza = true;
        }
        if is_foot && depth_before == 1 {
            events.push(StreamEvent::Close);
            return Ok(());
        }
        self.tree()?
            .process_event(ev)
            .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        if is_head_close {
            let depth = self.depth();
            if depth > self.depth_max + 1 {
                return Err(ParseError::TooDeep(self.depth_max));
            }
            if depth == 1 && !self.header_seen {
                self.header_seen = true;
                self.root.namespaces.shrink_to_fit();
                let root = self.tree()?.top().ok_or(ParseError::BadRoot)?;
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
            self.in_stanza = false;
            if let Some(el) = self.tree()?.unshift_child() {
                events.push(StreamEvent::Element(el));
            }
        }
        Ok(())
    }
}

impl StreamParser {
    /// Bounds the stream header event by event, and refuses a root element
    /// that is not `stream` the moment its name is read (a client speaking
    /// HTTP or sending `<html` waits for no timeout).
    fn check_header_event(&mut self, ev: &RawEvent) -> Result<(), ParseError> {
        match ev {
            RawEvent::ElementHeadOpen(_, (_, local)) if local.as_str() != "stream" => {
                Err(ParseError::BadRoot)
            }
            RawEvent::ElementHeadOpen(_, qname) => {
                self.root.name = Some(qname.clone());
                Ok(())
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                self.header_attributes += 1;
                let is_ns = prefix.as_ref().map(|p| p.as_str()) == Some("xmlns")
                    || (prefix.is_none() && local.as_str() == "xmlns");
                if is_ns {
                    self.header_namespaces += 1;
                    if self.header_namespaces <= HEADER_NAMESPACES_MAX {
                        let qname = (prefix.clone(), local.clone());
                        self.root.namespaces.push((qname, value.clone()));
                    }
                }
                if self.header_attributes > HEADER_ATTRIBUTES_MAX {
                    Err(ParseError::HeaderTooLarge("attributes"))
                } else if self.header_namespaces > HEADER_NAMESPACES_MAX {
                    Err(ParseError::HeaderTooLarge("namespace declarations"))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// What rebuilds the stream element in a fresh tree builder: its name and
/// its namespace declarations (at most [`HEADER_NAMESPACES_MAX`]). Its
/// other attributes were reported with the header and are not needed.
#[derive(Default)]
struct Root {
    name: Option<RawQName>,
    namespaces: Vec<(RawQName, String)>,
}

impl Root {
    /// A tree builder with the stream element open, as after the header.
    fn rebuild(&self) -> Result<TreeBuilder, ParseError> {
        let name = self.name.clone().ok_or(ParseError::BadRoot)?;
        let mut tree = TreeBuilder::new();
        let none = EventMetrics::zero();
        let events = std::iter::once(RawEvent::ElementHeadOpen(none, name))
            .chain(
                self.namespaces
                    .iter()
                    .map(|(q, v)| RawEvent::Attribute(none, q.clone(), v.clone())),
            )
            .chain(std::iter::once(RawEvent::ElementHeadClose(none)));
        for ev in events {
            tree.process_event(ev)
                .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        }
        Ok(tree)
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
mod tests;
