//! Presence fan-out. Account `i` is mutually subscribed with the
//! `CONTACTS` accounts around it on a ring (set up over XMPP the first time:
//! subscribe, subscribed, and the same back). Once every user sees all its
//! contacts online, each user broadcasts status updates stamped with the
//! send time; every contact measures how long each took to arrive.

use crate::ServerArgs;
use crate::outcome::Outcome;
use crate::stats::{Latency, Sampler, now_us};
use minidom::Element;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Options of the presence scenario.
#[derive(clap::Args)]
pub struct Opts {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Users taking part (accounts 0..USERS); must exceed CONTACTS.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Contacts in each roster (even).
    #[arg(long, default_value_t = 50)]
    pub contacts: usize,
    /// Status updates each user sends.
    #[arg(long, default_value_t = 10)]
    pub updates: usize,
    /// Pause between one user's updates, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Seconds allowed for the rosters to be set up and everyone seen online.
    #[arg(long, default_value_t = 300)]
    pub setup_secs: u64,
}

struct Shared {
    received: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<Latency>,
    /// Users that see every contact online.
    complete: AtomicU64,
    measuring: std::sync::atomic::AtomicBool,
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// Runs the scenario.
pub async fn run(opts: &Opts) -> anyhow::Result<Outcome> {
    let server = &opts.server;
    let (users, contacts) = (opts.users, opts.contacts & !1);
    anyhow::ensure!(
        users > contacts && contacts >= 2,
        "need more users than contacts, and at least 2 contacts"
    );
    let sessions = super::login_all(server, 0..users, false).await?;
    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency: Mutex::new(Latency::default()),
        complete: AtomicU64::new(0),
        measuring: std::sync::atomic::AtomicBool::new(false),
    });
    let jid = |i: usize| format!("{}@{}", super::user(server, i % users), server.domain);
    let mut handlers = Vec::new();
    let mut held = Vec::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let asked: HashSet<String> = (1..=contacts / 2).map(|d| jid(i + d)).collect();
        let ring: HashSet<String> = (1..=contacts / 2)
            .flat_map(|d| [jid(i + d), jid(i + users - d)])
            .collect();
        handlers.push(tokio::spawn(handle(
            s.take_rx(),
            s.tx.clone(),
            asked.clone(),
            ring,
            shared.clone(),
        )));
        // Subscribe to the next half of the ring (a no-op when already
        // subscribed), then come online.
        for to in &asked {
            s.send(format!("<presence type='subscribe' to='{to}'/>")).await?;
        }
        s.send("<presence/>".into()).await?;
        held.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(opts.setup_secs);
    while shared.complete.load(Ordering::Relaxed) < users as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {users} users saw all {contacts} contacts online within {} s",
            shared.complete.load(Ordering::Relaxed),
            opts.setup_secs
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared.measuring.store(true, Ordering::Relaxed);
    let sampler = Sampler::start(server.pid);
    let started = Instant::now();
    let mut senders = Vec::new();
    for (i, s) in held.iter().enumerate() {
        let (tx, updates, interval) = (s.tx.clone(), opts.updates, opts.interval_ms);
        senders.push(tokio::spawn(async move {
            // Spread users over the interval so updates do not come in waves.
            let offset = interval * i as u64 / users as u64;
            tokio::time::sleep(Duration::from_millis(offset)).await;
            let mut tick = tokio::time::interval(Duration::from_millis(interval.max(1)));
            for n in 0..updates {
                tick.tick().await;
                let xml = format!("<presence><status>{} update {n}</status></presence>", now_us());
                if tx.send(xml).await.is_err() {
                    return;
                }
            }
        }));
    }
    for t in senders {
        let _ = t.await;
    }
    let expected = (users * opts.updates * contacts) as u64;
    let drain = Instant::now() + Duration::from_secs(30);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let usage = sampler.stop();
    let got = shared.received.load(Ordering::Relaxed);
    let mut o = Outcome::new(&format!("presence_{contacts}"));
    o.set("deliveries_per_sec", got as f64 / wall);
    o.set("delivered_fraction", got as f64 / expected.max(1) as f64);
    o.latency(
        "latency",
        &shared.latency.lock().unwrap_or_else(|e| e.into_inner()).summary(),
    );
    o.usage(&usage);
    o.errors = shared.errors.load(Ordering::Relaxed) + expected.saturating_sub(got);
    for h in handlers {
        h.abort();
    }
    crate::client::close_all(held).await;
    Ok(o)
}

/// One user's incoming stanzas: answers subscription requests (and asks
/// back), tracks which contacts it sees online, and times status updates.
async fn handle(
    mut rx: mpsc::Receiver<Element>,
    tx: mpsc::Sender<String>,
    mut asked: HashSet<String>,
    ring: HashSet<String>,
    shared: Arc<Shared>,
) {
    let mut online: HashSet<String> = HashSet::new();
    let mut complete = false;
    while let Some(el) = rx.recv().await {
        if el.name() != "presence" {
            continue;
        }
        let from = bare(el.attr("from").unwrap_or_default()).to_owned();
        match el.attr("type") {
            Some("subscribe") => {
                let _ = tx
                    .send(format!("<presence type='subscribed' to='{from}'/>"))
                    .await;
                if asked.insert(from.clone()) {
                    let _ = tx.send(format!("<presence type='subscribe' to='{from}'/>")).await;
                }
            }
            Some("error") => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            // Only contacts count: servers may also reflect a user's own
            // presence to its session.
            None if ring.contains(&from) => {
                if shared.measuring.load(Ordering::Relaxed) {
                    let status = el.children().find(|c| c.name() == "status").map(|c| c.text());
                    if let Some(ts) = status.and_then(|s| s.split(' ').next()?.parse::<u64>().ok()) {
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        shared
                            .latency
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(Duration::from_micros(now_us().saturating_sub(ts)));
                    }
                } else if !complete {
                    online.insert(from);
                    if online.len() >= ring.len() {
                        complete = true;
                        shared.complete.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }
}
