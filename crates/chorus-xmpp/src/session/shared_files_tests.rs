//! Shared files in the record: what a client writes cannot name a file,
//! at any depth of its stanza; a real link does.

use super::tests_support::*;
use super::*;
use chorus_core::files::{Upload, slot_path};

#[test]
fn a_client_cannot_plant_a_file_reference_at_any_depth() {
    let (ctx, archive) = context(|_| {});
    let sha = "ab".repeat(32);
    let up = Upload {
        filename: "a.pdf".into(),
        size: 3,
        content_type: None,
        created_ms: 0,
        sha256: Some(sha.clone()),
    };
    ctx.store
        .set_upload("alice", "tok", Some(&serde_json::to_string(&up).expect("json")))
        .expect("slot");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut b, &mut brx);
    let forged = format!(
        "<file xmlns='{}' sha256='{}'/>",
        shared_files::NS_SHARED_FILE,
        "cd".repeat(32)
    );
    a.on_element(parse(&format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='m1'><body>see https://x{}</body>\
         {forged}<x xmlns='urn:other'>{forged}</x></message>",
        slot_path("alice", "tok", "a.pdf")
    )));
    drain(&mut a, &mut arx);
    let records = archive.records();
    let xml = &records.last().expect("archived").xml;
    assert!(
        !xml.contains(&"cd".repeat(32)),
        "a planted reference survived: {xml}"
    );
    assert!(xml.contains(&sha), "the real link is recorded: {xml}");
}
