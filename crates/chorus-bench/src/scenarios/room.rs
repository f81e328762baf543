//! Room fan-out: fresh rooms (instant rooms, XEP-0045 §10.1.2), each joined
//! by its own occupants; every occupant sends stamped groupchat messages and
//! every occupant (the sender too, as the protocol reflects them) measures
//! their delivery.

use crate::ServerArgs;
use crate::client::Session;
use crate::outcome::Outcome;
use crate::stats::{Latency, Sampler, now_us};
use anyhow::bail;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// Options of the room scenario.
#[derive(clap::Args)]
pub struct Opts {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Rooms, each with its own occupants.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Occupants per room (accounts 0..ROOMS*OCCUPANTS).
    #[arg(long, default_value_t = 20)]
    pub occupants: usize,
    /// Messages each occupant sends.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
    /// Pause between one occupant's messages, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// The MUC service; default conference.<domain>.
    #[arg(long)]
    pub muc: Option<String>,
}

/// Joins `room` as `nick`, configuring it as an instant room if this join
/// created it.
async fn join(s: &mut Session, room: &str, nick: &str) -> anyhow::Result<()> {
    let me = format!("{room}/{nick}");
    s.send(format!("<presence to='{me}'><x xmlns='{NS_MUC}'/></presence>"))
        .await?;
    let created = loop {
        let el = s.recv(super::REPLY_WAIT).await?;
        if el.name() != "presence" || el.attr("from") != Some(me.as_str()) {
            continue;
        }
        if el.attr("type") == Some("error") {
            bail!("joining {room} failed: {}", String::from(&el));
        }
        let codes: Vec<String> = el
            .get_child("x", NS_MUC_USER)
            .map(|x| {
                x.children()
                    .filter_map(|c| c.attr("code").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if codes.iter().any(|c| c == "110") {
            break codes.iter().any(|c| c == "201");
        }
    };
    if created {
        let id = format!("cfg-{nick}");
        s.iq(
            &id,
            format!(
                "<iq type='set' id='{id}' to='{room}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
            ),
            super::REPLY_WAIT,
        )
        .await?;
    }
    Ok(())
}

/// Runs the scenario.
pub async fn run(opts: &Opts) -> anyhow::Result<Outcome> {
    let server = &opts.server;
    let (rooms, occupants) = (opts.rooms.max(1), opts.occupants.max(1));
    let muc = opts
        .muc
        .clone()
        .unwrap_or_else(|| format!("conference.{}", server.domain));
    let run_id = now_us() / 1_000_000;
    let mut sessions = super::login_all(server, 0..rooms * occupants, true).await?;
    // Owners first (they create the rooms), then everyone else.
    let room_of = |i: usize| format!("bench-{run_id}-{}@{muc}", i / occupants);
    let (owners, others): (Vec<_>, Vec<_>) = sessions
        .iter_mut()
        .enumerate()
        .partition(|(i, _)| i % occupants == 0);
    for batch in [owners, others] {
        let joins = batch.into_iter().map(|(i, s)| {
            let room = room_of(i);
            async move { join(s, &room, &format!("n{i}")).await }
        });
        for r in futures_util::future::join_all(joins).await {
            r?;
        }
    }
    let received = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Latency::default()));
    let mut handlers = Vec::new();
    for s in sessions.iter_mut() {
        let (mut rx, received, errors, latency) =
            (s.take_rx(), received.clone(), errors.clone(), latency.clone());
        handlers.push(tokio::spawn(async move {
            while let Some(el) = rx.recv().await {
                if el.name() != "message" {
                    continue;
                }
                if el.attr("type") == Some("error") {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let body = el.children().find(|c| c.name() == "body").map(|b| b.text());
                // History and subjects carry no stamp of ours.
                if let Some(ts) = body.and_then(|b| b.split(' ').next()?.parse::<u64>().ok()) {
                    received.fetch_add(1, Ordering::Relaxed);
                    latency
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(Duration::from_micros(now_us().saturating_sub(ts)));
                }
            }
        }));
    }
    let sampler = Sampler::start(server.pid);
    let started = Instant::now();
    let total = sessions.len();
    let mut senders = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let (tx, room, messages, interval) = (s.tx.clone(), room_of(i), opts.messages, opts.interval_ms);
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(interval * i as u64 / total as u64)).await;
            let mut tick = tokio::time::interval(Duration::from_millis(interval.max(1)));
            for n in 0..messages {
                tick.tick().await;
                let xml = format!(
                    "<message to='{room}' type='groupchat' id='g{i}-{n}'><body>{} room benchmark payload</body></message>",
                    now_us()
                );
                if tx.send(xml).await.is_err() {
                    return;
                }
            }
        }));
    }
    for t in senders {
        let _ = t.await;
    }
    let expected = (rooms * occupants * opts.messages * occupants) as u64;
    let drain = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let usage = sampler.stop();
    let got = received.load(Ordering::Relaxed);
    let mut o = Outcome::new(&format!("room_{occupants}"));
    o.set("deliveries_per_sec", got as f64 / wall);
    o.set("delivered_fraction", got as f64 / expected.max(1) as f64);
    o.latency(
        "latency",
        &latency.lock().unwrap_or_else(|e| e.into_inner()).summary(),
    );
    o.usage(&usage);
    o.errors = errors.load(Ordering::Relaxed) + expected.saturating_sub(got);
    for h in handlers {
        h.abort();
    }
    crate::client::close_all(sessions).await;
    Ok(o)
}
