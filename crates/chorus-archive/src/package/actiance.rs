//! The Actiance-style XML export that archiving vendors (Smarsh, Global
//! Relay, Veritas) import: one `<Conversation>` per conversation and UTC
//! day with who entered, every message (login name, time in Unix seconds,
//! content, message id) and when it ended, inside one `<FileDump>`.
//! Written conversation by conversation, so memory holds one at a time.

use crate::types::{Record, RecordKind};
use chorus_core::archive::bare;
use std::io::{self, Write};

/// Text escaped for XML 1.0, characters XML cannot carry dropped.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    out
}

fn el(out: &mut impl Write, indent: &str, name: &str, text: &str) -> io::Result<()> {
    writeln!(out, "{indent}<{name}>{}</{name}>", escape(text))
}

/// Writes the whole file; `fetch` reads a group's records.
pub(crate) fn write<W: Write>(
    out: &mut W,
    groups: &super::Groups,
    fetch: impl Fn(&[u64]) -> io::Result<Vec<Record>>,
) -> io::Result<()> {
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(out, "<FileDump>")?;
    for ((day, key), (parties, positions)) in groups {
        let recs = fetch(positions)?;
        let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
            continue;
        };
        let (start, end) = (first.stamp_ms / 1000, last.stamp_ms / 1000);
        let conversation = format!("{day} {key}");
        writeln!(out, r#"  <Conversation Perspective="Chorus">"#)?;
        el(out, "    ", "RoomID", key)?;
        el(out, "    ", "StartTimeUTC", &start.to_string())?;
        for p in parties {
            writeln!(out, "    <ParticipantEntered>")?;
            el(out, "      ", "LoginName", p)?;
            el(out, "      ", "DateTimeUTC", &start.to_string())?;
            el(out, "      ", "InternalFlag", "TRUE")?;
            el(out, "      ", "ConversationID", &conversation)?;
            writeln!(out, "    </ParticipantEntered>")?;
        }
        for r in &recs {
            let content = match r.kind {
                RecordKind::Message => r.body.clone().unwrap_or_default(),
                RecordKind::Subscription => format!("[subscription] {}", r.xml),
                RecordKind::Blocking => format!("[blocking] {}", r.xml),
            };
            writeln!(out, "    <Message>")?;
            el(out, "      ", "LoginName", bare(&r.from))?;
            el(out, "      ", "UserName", &r.from)?;
            el(out, "      ", "DateTimeUTC", &(r.stamp_ms / 1000).to_string())?;
            el(out, "      ", "Content", &content)?;
            el(out, "      ", "MessageID", &r.id)?;
            writeln!(out, "    </Message>")?;
        }
        for p in parties {
            writeln!(out, "    <ParticipantLeft>")?;
            el(out, "      ", "LoginName", p)?;
            el(out, "      ", "DateTimeUTC", &end.to_string())?;
            el(out, "      ", "InternalFlag", "TRUE")?;
            el(out, "      ", "ConversationID", &conversation)?;
            writeln!(out, "    </ParticipantLeft>")?;
        }
        el(out, "    ", "EndTimeUTC", &end.to_string())?;
        writeln!(out, "  </Conversation>")?;
    }
    writeln!(out, "</FileDump>")
}
