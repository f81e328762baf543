//! A message whose archive record is not durable yet: it is not delivered,
//! later input waits behind it in order, and a failed write refuses it.

use super::tests_support::*;
use super::*;
use chorus_core::archive::{Accepted, Archive, ArchiveError, ArchiveRecord, MemArchive};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Poll;

type Gate = Arc<Mutex<Option<Result<(), ArchiveError>>>>;

/// Accepts records at once and makes each durable only when the test
/// says so, oldest first.
#[derive(Default)]
struct GatedArchive {
    inner: MemArchive,
    gates: Mutex<VecDeque<Gate>>,
}

impl GatedArchive {
    /// Resolves the oldest pending record's wait.
    fn resolve(&self, result: Result<(), ArchiveError>) {
        let gate = self
            .gates
            .lock()
            .expect("gates")
            .pop_front()
            .expect("a pending record");
        *gate.lock().expect("gate") = Some(result);
    }
}

impl Archive for GatedArchive {
    fn enabled(&self) -> bool {
        true
    }

    fn append(&self, record: ArchiveRecord) -> Result<Option<String>, ArchiveError> {
        self.inner.append(record)
    }

    fn append_deferred(&self, record: ArchiveRecord) -> Result<Accepted, ArchiveError> {
        let id = self.inner.append(record)?;
        let gate: Gate = Arc::default();
        self.gates.lock().expect("gates").push_back(gate.clone());
        let wait = std::future::poll_fn(move |_| match gate.lock().expect("gate").take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        });
        Ok(Accepted {
            id,
            durable: Some(Box::pin(wait)),
        })
    }
}

/// Awaits a session's durability wait the way the driver does (the gate
/// has been resolved, so one poll finishes it).
fn finish(s: &mut Session) {
    let mut wait = s.take_durable_wait().expect("a pending record");
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match wait.as_mut().poll(&mut cx) {
        Poll::Ready(r) => s.on_durable(r),
        Poll::Pending => panic!("the wait did not resolve"),
    }
}

type Queue = crate::queue::Receiver<Routed>;

/// A gated archive, with alice (at "desk") and bob (at "phone") logged in.
fn two_users() -> (Arc<GatedArchive>, Session, Queue, Session, Queue) {
    let archive = Arc::new(GatedArchive::default());
    let ctx = context_with_archive(|_| {}, archive.clone());
    let (alice, arx) = login(&ctx, "alice", "apw", "desk");
    let (bob, brx) = login(&ctx, "bob", "bpw", "phone");
    (archive, alice, arx, bob, brx)
}

fn chat(id: &str) -> Element {
    parse(&format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}/phone' type='chat' id='{id}'><body>{id}</body></message>"
    ))
}

fn bodies(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter(|e| e.name() == "message")
        .filter_map(|e| e.get_child("body", ns::CLIENT).map(|b| b.text()))
        .collect()
}

#[test]
fn a_message_waits_for_its_record_and_later_input_keeps_its_order() {
    let (archive, mut alice, _arx, mut bob, mut brx) = two_users();
    alice.on_element(parse(&format!("<enable xmlns='{}'/>", ns::SM)));
    alice.take_outputs();
    alice.on_element(chat("m1"));
    alice.on_element(chat("m2"));
    alice.on_element(parse(&format!("<r xmlns='{}'/>", ns::SM)));
    assert!(
        drain(&mut bob, &mut brx).is_empty(),
        "delivered before its record is durable"
    );
    assert!(
        elements(alice.take_outputs()).is_empty(),
        "an ack before the record is durable"
    );
    assert_eq!(
        archive.inner.records().len(),
        1,
        "later input is held, not handled"
    );

    archive.resolve(Ok(()));
    finish(&mut alice);
    let got = drain(&mut bob, &mut brx);
    assert_eq!(bodies(&got), ["m1"], "only the durable message");
    let sid = got[0].get_child("stanza-id", ns::SID).and_then(|s| s.attr("id"));
    assert_eq!(sid, Some("mem-1"), "delivered with its archive id");
    assert!(
        elements(alice.take_outputs()).is_empty(),
        "m2 is pending now: no ack yet"
    );

    archive.resolve(Ok(()));
    finish(&mut alice);
    assert_eq!(bodies(&drain(&mut bob, &mut brx)), ["m2"]);
    let out = elements(alice.take_outputs());
    let ack = out
        .iter()
        .find(|e| e.is("a", ns::SM))
        .expect("the held ack request answered");
    assert_eq!(ack.attr("h"), Some("2"), "both messages counted once durable");
    assert!(alice.take_durable_wait().is_none(), "nothing left pending");
}

#[test]
fn a_record_that_does_not_reach_the_disk_refuses_its_message() {
    let (archive, mut alice, _arx, mut bob, mut brx) = two_users();
    alice.on_element(chat("lost"));
    archive.resolve(Err(ArchiveError::Unavailable("fsync failed".into())));
    finish(&mut alice);
    assert!(
        drain(&mut bob, &mut brx).is_empty(),
        "a message not archived was delivered"
    );
    let out = elements(alice.take_outputs());
    let err = out
        .iter()
        .find(|e| e.attr("type") == Some("error") && e.attr("id") == Some("lost"))
        .expect("the sender is told");
    assert!(err.to_xml().contains("resource-constraint"), "{}", err.to_xml());
}

#[test]
fn a_stream_closed_behind_a_pending_message_closes_after_it() {
    let (archive, mut alice, _arx, mut bob, mut brx) = two_users();
    alice.on_element(chat("last"));
    alice.on_close();
    assert!(!alice.is_closed(), "closed before the pending message");
    archive.resolve(Ok(()));
    finish(&mut alice);
    assert_eq!(bodies(&drain(&mut bob, &mut brx)), ["last"]);
    assert!(alice.is_closed());
}

#[test]
fn a_room_message_reaches_no_occupant_before_its_record_is_durable() {
    const ROOM: &str = "team@conference.chorus.test";
    let (archive, mut alice, mut arx, mut bob, mut brx) = two_users();
    let join = |nick: &str| {
        parse(&format!(
            "<presence xmlns='jabber:client' to='{ROOM}/{nick}'><x xmlns='{}'/></presence>",
            ns::MUC
        ))
    };
    alice.on_element(join("Alice"));
    alice.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='c' to='{ROOM}'><query xmlns='{}'><x xmlns='jabber:x:data' type='submit'/></query></iq>",
        ns::MUC_OWNER
    )));
    bob.on_element(join("Bob"));
    drain(&mut alice, &mut arx);
    drain(&mut bob, &mut brx);
    alice.on_element(parse(&format!(
        "<message xmlns='jabber:client' to='{ROOM}' type='groupchat' id='g1'><body>hello room</body></message>"
    )));
    assert!(
        bodies(&drain(&mut bob, &mut brx)).is_empty(),
        "an occupant got it first"
    );
    assert!(bodies(&drain(&mut alice, &mut arx)).is_empty(), "reflected first");
    archive.resolve(Ok(()));
    finish(&mut alice);
    let got = drain(&mut bob, &mut brx);
    assert_eq!(bodies(&got), ["hello room"]);
    let sid = got[0].get_child("stanza-id", ns::SID).and_then(|s| s.attr("by"));
    assert_eq!(sid, Some(ROOM), "stamped with the room's archive id");
    assert_eq!(
        bodies(&drain(&mut alice, &mut arx)),
        ["hello room"],
        "reflected once durable"
    );
}
