//! Exports for compliance officers: JSON Lines (one record per line) and
//! RFC 5322 messages, one `.eml` per conversation and UTC day, packed in a
//! POSIX tar archive so one download carries them all.

use chorus_core::archive::{Record, RecordKind, bare};
use chorus_core::time::{rfc5322, xep0082};
use std::collections::BTreeMap;

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
        "msg_id": r.msg_id,
        "edit": r.edit.as_ref().map(|e| serde_json::json!({
            "kind": e.kind, "of": e.of, "record": edited,
        })),
    })
}

/// Records as JSON Lines.
pub fn jsonl(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&jsonl_line(r));
        out.push('\n');
    }
    out
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

/// A file-name-safe version of a conversation key.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `.eml` files (name, content), one per conversation and UTC day, each a
/// transcript in time order.
pub fn eml_files(records: &[Record], domain: &str) -> Vec<(String, Vec<u8>)> {
    /// (conversation key, day) → (participants, records).
    type Groups<'a> = BTreeMap<(String, String), (Vec<String>, Vec<&'a Record>)>;
    let mut groups: Groups = BTreeMap::new();
    for r in records {
        let (key, parties) = conversation(r);
        let day = xep0082(r.stamp_ms)[..10].to_owned();
        groups
            .entry((key, day))
            .or_insert_with(|| (parties, Vec::new()))
            .1
            .push(r);
    }
    let mut out = Vec::new();
    for ((key, day), (parties, mut recs)) in groups {
        recs.sort_by(|a, b| (a.stamp_ms, &a.id).cmp(&(b.stamp_ms, &b.id)));
        let name = format!("{day}_{}.eml", safe(&key));
        out.push((name, eml(&parties, &day, &recs, domain)));
    }
    out
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

/// Packs files into a POSIX (ustar) tar archive.
pub fn tar(files: &[(String, Vec<u8>)], mtime_secs: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let name = name.as_bytes();
        let n = name.len().min(99);
        h[..n].copy_from_slice(&name[..n]);
        let put = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}\0", width = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        put(&mut h, 100, 8, 0o644);
        put(&mut h, 108, 8, 0);
        put(&mut h, 116, 8, 0);
        put(&mut h, 124, 12, data.len() as u64);
        put(&mut h, 136, 12, mtime_secs);
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
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
    fn eml_groups_by_conversation_and_day_and_parses_as_mail() {
        let day = 86_400_000;
        let records = vec![
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
        let files = eml_files(&records, "x");
        assert_eq!(
            files.len(),
            3,
            "{:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        let (name, bytes) = &files[0];
        assert_eq!(name, "2023-11-14_alice@x_bob@x.eml");
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
        let records = vec![rec("a-1", "alice@x/pc", "bob@x", 5, "line\nbreak \"quoted\"")];
        let text = jsonl(&records);
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect("json");
        assert_eq!(v["body"], "line\nbreak \"quoted\"");
        assert_eq!(v["id"], "a-1");
        assert_eq!(v["time"], "1970-01-01T00:00:00.005Z");
    }

    #[test]
    fn tar_headers_have_valid_checksums_and_sizes() {
        let t = tar(&[("a.eml".into(), b"abc".to_vec())], 0);
        assert_eq!(t.len(), 512 + 512 + 1024);
        assert_eq!(&t[..5], b"a.eml");
        assert_eq!(&t[124..135], b"00000000003");
        assert_eq!(&t[512..515], b"abc");
        let mut h = t[..512].to_vec();
        let stored =
            u64::from_str_radix(std::str::from_utf8(&h[148..154]).expect("octal"), 8).expect("octal");
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|b| u64::from(*b)).sum::<u64>());
    }
}
