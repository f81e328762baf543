//! Login storm: every account connects, negotiates TLS, authenticates with
//! SCRAM and binds a resource, as many at once as `--concurrency` allows.
//! A first, untimed pass fills the client's SCRAM key cache, so the timed
//! pass measures the server rather than the client's PBKDF2.

use super::user;
use crate::ServerArgs;
use crate::client;
use crate::outcome::Outcome;
use crate::stats::{Latency, Sampler};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Runs the storm for accounts `0..users`.
pub async fn run(server: &ServerArgs, users: usize) -> anyhow::Result<Outcome> {
    let warm = super::login_all(server, 0..users, false).await?;
    crate::client::close_all(warm).await;
    let target = server.target();
    let latency = Arc::new(Mutex::new(Latency::default()));
    let sampler = Sampler::start(server.pid);
    let started = Instant::now();
    let results = super::for_each(0..users, server.concurrency, |i| {
        let (target, name, pw, latency) = (
            target.clone(),
            user(server, i),
            server.password.clone(),
            latency.clone(),
        );
        async move {
            let t0 = Instant::now();
            let s = client::login(&target, &name, &pw, "storm").await?;
            latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(t0.elapsed());
            Ok(s)
        }
    })
    .await;
    let wall = started.elapsed().as_secs_f64();
    let usage = sampler.stop();
    let mut o = Outcome::new("login");
    let mut sessions = Vec::new();
    for r in results {
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => {
                if o.errors == 0 {
                    o.notes.push(format!("first error: {e:#}"));
                }
                o.errors += 1;
            }
        }
    }
    o.set("logins_per_sec", sessions.len() as f64 / wall);
    o.latency(
        "login",
        &latency.lock().unwrap_or_else(|e| e.into_inner()).summary(),
    );
    o.usage(&usage);
    crate::client::close_all(sessions).await;
    Ok(o)
}
