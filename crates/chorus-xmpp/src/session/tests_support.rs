//! Helpers shared by the session's unit tests: an in-memory context, SASL
//! PLAIN login with binding, and draining a session's output.

use super::*;
use crate::router::LocalRouter;
use base64::Engine;
use chorus_core::archive::MemArchive;
use chorus_core::config::Config;
use chorus_core::credentials::Credentials;
use chorus_core::mem_store::MemStore;
use chorus_core::store::Store;

pub(super) const DOMAIN: &str = "chorus.test";

pub(super) fn context(tweak: impl FnOnce(&mut Config)) -> (Arc<Context>, Arc<MemArchive>) {
    let archive = Arc::new(MemArchive::default());
    (context_with_archive(tweak, archive.clone()), archive)
}

/// Like [`context`], with the archive given.
pub(super) fn context_with_archive(
    tweak: impl FnOnce(&mut Config),
    archive: Arc<dyn chorus_core::archive::Archive>,
) -> Arc<Context> {
    let mut config = Config::default();
    config.server.domain = DOMAIN.into();
    config.limits.auth_failures_per_account_max = 3;
    tweak(&mut config);
    let store = Arc::new(MemStore::new());
    for (u, p) in [("alice", "apw"), ("bob", "bpw")] {
        store
            .create_account(u, &Credentials::from_password_with(p, 64).expect("valid"))
            .expect("create");
    }
    Arc::new(Context::new(config, store, Arc::new(LocalRouter::new()), archive))
}

pub(super) fn header() -> HashMap<String, String> {
    [("to", DOMAIN), ("version", "1.0")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn parse(s: &str) -> Element {
    crate::parser::parse_frame(s.as_bytes(), 1 << 20, 32).expect("valid test XML")
}

pub(super) fn elements(out: Vec<Output>) -> Vec<Element> {
    out.into_iter()
        .filter_map(|o| match o {
            Output::Element(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub(super) fn plain_auth(user: &str, pass: &str) -> Element {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    parse(&format!(
        "<auth xmlns='{}' mechanism='PLAIN'>{b}</auth>",
        ns::SASL
    ))
}

/// Logs in over an already-secure transport and binds `resource`.
pub(super) fn login(
    ctx: &Arc<Context>,
    user: &str,
    pass: &str,
    resource: &str,
) -> (Session, crate::queue::Receiver<Routed>) {
    let mut s = Session::new(
        ctx.clone(),
        Transport::DirectTls,
        "127.0.0.1".parse().expect("ip"),
    );
    s.on_header(&header());
    s.on_element(plain_auth(user, pass));
    assert!(s.take_restart(), "SASL success restarts the stream");
    s.on_header(&header());
    s.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{}'><resource>{resource}</resource></bind></iq>",
        ns::BIND
    )));
    let out = elements(s.take_outputs());
    let bound = out
        .iter()
        .any(|e| e.is("iq", ns::CLIENT) && e.attr("type") == Some("result"));
    assert!(bound, "bind failed: {out:?}");
    let rx = s.take_rx().expect("queue after bind");
    (s, rx)
}

pub(super) fn drain(s: &mut Session, rx: &mut crate::queue::Receiver<Routed>) -> Vec<Element> {
    while let Ok(r) = rx.try_recv() {
        s.on_routed(r);
    }
    elements(s.take_outputs())
}
