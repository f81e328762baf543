//! The scenarios, and what they share: account names and logging in many
//! sessions at once.

pub mod idle;
pub mod login;
pub mod mam;
pub mod one2one;
pub mod presence;
pub mod room;

use crate::ServerArgs;
use crate::client::{self, Session};
use crate::outcome::Outcome;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a scenario waits for something that should take well under a second.
pub const REPLY_WAIT: Duration = Duration::from_secs(30);

/// The name of bench account `i`.
pub fn user(server: &ServerArgs, i: usize) -> String {
    format!("{}{i}", server.prefix)
}

/// Runs `f(i)` for every `i` in `range`, at most `concurrency` at once;
/// returns the results in index order.
pub async fn for_each<T, F, Fut>(
    range: std::ops::Range<usize>,
    concurrency: usize,
    f: F,
) -> Vec<anyhow::Result<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let start = range.start;
    for i in range.clone() {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let fut = f(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<anyhow::Result<T>> = (0..range.len())
        .map(|_| Err(anyhow::anyhow!("the client task did not finish")))
        .collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i - start] = r;
        }
    }
    out
}

/// Logs in accounts `range` (resource "bench"), optionally sending initial
/// presence; fails on the first error, naming it.
pub async fn login_all(
    server: &ServerArgs,
    range: std::ops::Range<usize>,
    presence: bool,
) -> anyhow::Result<Vec<Session>> {
    let target = server.target();
    let results = for_each(range, server.concurrency, |i| {
        let (target, name, pw) = (target.clone(), user(server, i), server.password.clone());
        async move {
            let s = client::login(&target, &name, &pw, "bench").await?;
            if presence {
                s.send("<presence/>".into()).await?;
            }
            Ok(s)
        }
    })
    .await;
    results.into_iter().collect()
}

/// Creates the bench accounts with in-band registration.
pub async fn provision(server: &ServerArgs, users: usize) -> anyhow::Result<Outcome> {
    let target = server.target();
    let started = Instant::now();
    let results = for_each(0..users, server.concurrency.min(16), |i| {
        let (target, name, pw) = (target.clone(), user(server, i), server.password.clone());
        async move { client::register(&target, &name, &pw).await }
    })
    .await;
    let mut o = Outcome::new("provision");
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    o.errors = errors.len() as u64;
    if let Some(first) = errors.first() {
        o.notes.push(format!("first error: {first}"));
    }
    o.set("accounts", users as f64);
    o.set(
        "registrations_per_sec",
        users as f64 / started.elapsed().as_secs_f64(),
    );
    Ok(o)
}
