//! How records read in an export (`package.rs` packs them): a record as a
//! JSON object (one JSON Lines line), and RFC 5322 transcripts, one `.eml`
//! per conversation and UTC day.

use chorus_core::archive::{Record, RecordKind, bare};
use chorus_core::time::{rfc5322, xep0082};

/// One record as a JSON Lines line (without the newline).
pub fn jsonl_line(r: &Record) -> String {
    jsonl_value(r, None).to_string()
}

/// One record as JSON; `edited` is the archive id of the record it
/// corrects or retracts, when that is still held.
pub fn jsonl_value(r: &Record, edited: Option<String>) -> serde_json::Value {
    let kind = match r.kind {
        RecordKind::Message => "message",
        RecordKind::Subscription => "subscription",
        RecordKind::Blocking => "blocking",
    };
    serde_json::json!({
        "id": r.id,
        "time": xep0082(r.stamp_ms),
        "stamp_ms": r.stamp_ms,
        "kind": kind,
        "from": r.from,
        "to": r.to,
        "site": r.site,
        "room": r.room,
        "thread": r.thread,
        "body": r.body,
        "stanza": r.xml,
        "files": shared_files(&r.xml),
        "msg_id": r.msg_id,
        "edit": r.edit.as_ref().map(|e| serde_json::json!({
            "kind": e.kind, "of": e.of, "record": edited,
        })),
    })
}

/// The conversation a record belongs to: its room, or the sorted pair of
/// the bare JIDs of sender and recipient.
pub(crate) fn conversation(r: &Record) -> (String, Vec<String>) {
    if let Some(room) = &r.room {
        return (room.clone(), vec![room.clone()]);
    }
    let mut pair = vec![bare(&r.from).to_owned(), bare(&r.to).to_owned()];
    pair.sort();
    pair.dedup();
    (pair.join(" "), pair)
}

/// One RFC 5322 message: the transcript as a base64 UTF-8 text part.
pub(crate) fn eml(parties: &[String], day: &str, recs: &[&Record], domain: &str) -> Vec<u8> {
    use base64::Engine as _;
    let first = recs.first().map_or(0, |r| r.stamp_ms);
    let mut text = String::new();
    for r in recs {
        let time = &xep0082(r.stamp_ms)[11..19];
        let what = match r.kind {
            RecordKind::Message => r.body.clone().unwrap_or_default(),
            RecordKind::Subscription => format!("[subscription] {}", r.xml),
            RecordKind::Blocking => format!("[blocking] {}", r.xml),
        };
        text.push_str(&format!(
            "[{time} UTC] {} -> {} ({}): {what}\r\n",
            r.from, r.to, r.id
        ));
    }
    let from = recs
        .first()
        .map_or_else(|| parties[0].clone(), |r| bare(&r.from).to_owned());
    let to = parties.join(", ");
    let hash = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(parties.join(" "));
        h.update(day);
        h.finalize()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut m = String::new();
    m.push_str(&format!("From: <{from}>\r\n"));
    m.push_str(&format!(
        "To: {}\r\n",
        parties
            .iter()
            .map(|p| format!("<{p}>"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    m.push_str(&format!("Date: {}\r\n", rfc5322(first)));
    m.push_str(&format!("Subject: Chorus conversation {to} on {day}\r\n"));
    m.push_str(&format!("Message-ID: <{day}.{hash}@archive.{domain}>\r\n"));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    m.push_str("Content-Transfer-Encoding: base64\r\n");
    m.push_str(&format!("X-Chorus-Records: {}\r\n\r\n", recs.len()));
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        m.push_str("\r\n");
    }
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, from: &str, to: &str, stamp_ms: u64, body: &str) -> Record {
        Record {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            site: "a".into(),
            stamp_ms,
            xml: format!("<message><body>{body}</body></message>"),
            body: Some(body.into()),
            ..Record::default()
        }
    }

    #[test]
    fn eml_transcripts_parse_as_mail() {
        let day = 86_400_000;
        let records = [
            rec("a-1", "alice@x/pc", "bob@x", 1_700_000_000_000, "hello bob"),
            rec(
                "b-1",
                "bob@x/phone",
                "alice@x/pc",
                1_700_000_001_000,
                "hi alice, ünïcode ✓",
            ),
            rec("a-2", "alice@x/pc", "carol@x", 1_700_000_002_000, "hello carol"),
            rec("a-3", "alice@x/pc", "bob@x", 1_700_000_000_000 + day, "next day"),
        ];
        let (key, parties) = conversation(&records[0]);
        assert_eq!(
            (key.as_str(), conversation(&records[1]).0.as_str()),
            ("alice@x bob@x", "alice@x bob@x")
        );
        assert_ne!(conversation(&records[2]).0, key);
        let refs: Vec<&Record> = records[..2].iter().collect();
        let bytes = &eml(&parties, "2023-11-14", &refs, "x");
        let mail = mail_parser::MessageParser::default()
            .parse(bytes.as_slice())
            .expect("an RFC 5322 message");
        assert_eq!(
            mail.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("alice@x")
        );
        assert_eq!(mail.to().map(|a| a.iter().count()), Some(2));
        assert_eq!(mail.date().map(|d| d.to_timestamp()), Some(1_700_000_000));
        let text = mail.body_text(0).expect("a text body");
        assert!(text.contains("hello bob"), "{text}");
        assert!(text.contains("hi alice, ünïcode ✓"), "{text}");
        assert!(!text.contains("carol"), "{text}");
    }

    #[test]
    fn jsonl_lines_parse_back() {
        let records = [rec("a-1", "alice@x/pc", "bob@x", 5, "line\nbreak \"quoted\"")];
        let text = jsonl_line(&records[0]);
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["body"], "line\nbreak \"quoted\"");
        assert_eq!(v["id"], "a-1");
        assert_eq!(v["time"], "1970-01-01T00:00:00.005Z");
    }
}

/// The namespace of the element the XMPP layer adds to an archived message
/// for each shared file it names (`<file sha256=… size=… name=… url=…/>`).
pub const SHARED_FILE_NS: &str = "urn:xmpp:chorus:file:0";

/// The SHA-256 hashes of the shared files an archived stanza names, read
/// from the attributes of its `urn:xmpp:chorus:file:0` elements (a scan of
/// the tags the XMPP layer wrote; no XML parsing here).
pub fn shared_files(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(SHARED_FILE_NS) {
        let start = rest[..i].rfind('<').unwrap_or(0);
        let end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[start..end];
        // Text cannot hold a literal '<', so only an element the XMPP
        // layer wrote starts like this.
        let element = tag.starts_with("<file ")
            && (tag.contains(&format!("xmlns=\"{SHARED_FILE_NS}\""))
                || tag.contains(&format!("xmlns='{SHARED_FILE_NS}'")));
        for quote in ['"', '\''].into_iter().filter(|_| element) {
            let key = format!("sha256={quote}");
            if let Some(p) = tag.find(&key) {
                let v: String = tag[p + key.len()..].chars().take_while(|c| *c != quote).collect();
                if chorus_core::files::is_sha256_hex(&v) && !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        rest = &rest[end.min(rest.len())..];
        if end <= i {
            break;
        }
    }
    out
}

#[cfg(test)]
mod shared_file_tests {
    use super::*;

    #[test]
    fn hashes_are_read_from_the_file_elements_only() {
        let a = "ab".repeat(32);
        let b = "cd".repeat(32);
        let xml = format!(
            "<message xmlns=\"jabber:client\"><body>sha256=\"{b}\"</body>\
             <file xmlns=\"urn:xmpp:chorus:file:0\" sha256=\"{a}\" size=\"3\"/>\
             <file sha256='{b}' xmlns='urn:xmpp:chorus:file:0'/></message>"
        );
        assert_eq!(shared_files(&xml), vec![a.clone(), b]);
        assert!(shared_files("<message><body>urn:xmpp:chorus:file:0</body></message>").is_empty());
        let forged =
            format!("<message><body>xmlns=\"urn:xmpp:chorus:file:0\" sha256=\"{a}\"</body></message>");
        assert!(shared_files(&forged).is_empty(), "text cannot name a file");
    }
}
