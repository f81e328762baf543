//! MAM (XEP-0313) query latency. Account 0 sends `--messages` chat messages
//! to account 1 (on top of whatever the archive already holds from earlier
//! scenarios), then pages through its archive: the last page, and the last
//! page of the conversation with account 1 (a `with` filter). A query counts
//! only when the server returned a full page and its `<fin/>`.

use crate::ServerArgs;
use crate::outcome::Outcome;
use crate::stats::{Latency, Sampler};
use anyhow::{bail, ensure};
use std::time::{Duration, Instant};

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// Options of the MAM scenario.
#[derive(clap::Args)]
pub struct Opts {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Messages added to the queried user's archive first.
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Queries of each kind.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    pub page: usize,
}

/// Messages in flight while the archive is filled.
const FILL_WINDOW: usize = 100;

/// Runs the scenario.
pub async fn run(opts: &Opts) -> anyhow::Result<Outcome> {
    let server = &opts.server;
    let mut sessions = super::login_all(server, 0..2, true).await?;
    let mut b = sessions.pop().expect("two sessions");
    let mut a = sessions.pop().expect("two sessions");
    let b_bare = b.jid.split('/').next().unwrap_or_default().to_owned();
    let filled = Instant::now();
    let mut sent = 0;
    while sent < opts.messages {
        let window = FILL_WINDOW.min(opts.messages - sent);
        for n in sent..sent + window {
            a.send(format!(
                "<message to='{}' type='chat' id='fill-{n}'><body>archive filler {n} quarterly report draft</body></message>",
                b.jid
            ))
            .await?;
        }
        let mut got = 0;
        while got < window {
            let el = b.recv(super::REPLY_WAIT).await?;
            if el.name() == "message" && el.attr("id").is_some_and(|i| i.starts_with("fill-")) {
                got += 1;
            }
        }
        sent += window;
    }
    let fill_secs = filled.elapsed().as_secs_f64();
    let mut last_page = Latency::default();
    let mut with_page = Latency::default();
    let mut errors = 0u64;
    let mut first_error = None;
    let sampler = Sampler::start(server.pid);
    for q in 0..opts.queries * 2 {
        let with = (q % 2 == 1).then_some(b_bare.as_str());
        let t0 = Instant::now();
        match query(&mut a, q, with, opts.page).await {
            Ok(n) if n >= opts.page.min(opts.messages) => {
                let h = if with.is_some() {
                    &mut with_page
                } else {
                    &mut last_page
                };
                h.record(t0.elapsed());
            }
            Ok(n) => {
                errors += 1;
                first_error.get_or_insert(format!("a page held {n} messages"));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let usage = sampler.stop();
    let mut o = Outcome::new("mam");
    o.set("fill_msgs_per_sec", opts.messages as f64 / fill_secs.max(1e-9));
    o.latency("last_page", &last_page.summary());
    o.latency("with_page", &with_page.summary());
    o.usage(&usage);
    o.errors = errors;
    o.notes.extend(first_error);
    a.close().await;
    b.close().await;
    Ok(o)
}

/// One query for the last page; returns the number of archived messages
/// received before the final `<iq type='result'>` with `<fin/>`.
async fn query(
    s: &mut crate::client::Session,
    q: usize,
    with: Option<&str>,
    page: usize,
) -> anyhow::Result<usize> {
    let id = format!("mam-{q}");
    let form = match with {
        Some(w) => format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field><field var='with'><value>{w}</value></field></x>"
        ),
        None => String::new(),
    };
    s.send(format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='{id}'>{form}<set xmlns='{NS_RSM}'><max>{page}</max><before/></set></query></iq>"
    ))
    .await?;
    let mut results = 0;
    loop {
        let el = s.recv(Duration::from_secs(30)).await?;
        match el.name() {
            "message"
                if el
                    .get_child("result", NS_MAM)
                    .is_some_and(|r| r.attr("queryid") == Some(id.as_str())) =>
            {
                results += 1
            }
            "iq" if el.attr("id") == Some(id.as_str()) => {
                if el.attr("type") != Some("result") {
                    bail!("query failed: {}", String::from(&el));
                }
                ensure!(el.get_child("fin", NS_MAM).is_some(), "result without <fin/>");
                return Ok(results);
            }
            _ => {}
        }
    }
}
