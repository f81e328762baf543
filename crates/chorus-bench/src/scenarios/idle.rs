//! Idle sessions: hold many authenticated TLS sessions (bound, initial
//! presence sent, empty rosters) and measure the server's resident memory
//! per session once it has settled. At the end every session answers a
//! ping round trip, so only live sessions are counted.

use crate::ServerArgs;
use crate::client::Session;
use crate::outcome::Outcome;
use crate::stats;
use std::time::Duration;

/// Holds `sessions` sessions of accounts `0..sessions`; the outcome is
/// named `name`.
pub async fn run(
    server: &ServerArgs,
    sessions: usize,
    settle_secs: u64,
    name: &str,
) -> anyhow::Result<Outcome> {
    let pid = server.pid;
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let before = pid.and_then(stats::rss_kib);
    let mut held = super::login_all(server, 0..sessions, true).await?;
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let after = pid.and_then(stats::rss_kib);
    let alive = ping_all(&mut held).await;
    let mut o = Outcome::new(name);
    o.set("sessions_alive", alive as f64);
    o.errors = (sessions - alive) as u64;
    if let (Some(b), Some(a)) = (before, after) {
        o.set("server_rss_mib", a as f64 / 1024.0);
        o.set(
            "kib_per_session",
            a.saturating_sub(b) as f64 / sessions.max(1) as f64,
        );
    }
    crate::client::close_all(held).await;
    Ok(o)
}

/// Sends a ping from every session and counts the answered ones.
async fn ping_all(sessions: &mut [Session]) -> usize {
    let mut alive = 0;
    for chunk in sessions.chunks_mut(256) {
        let pings = chunk.iter_mut().enumerate().map(|(i, s)| async move {
            let id = format!("idle-ping-{i}");
            let domain = s.jid.split(['@', '/']).nth(1).unwrap_or_default().to_owned();
            let iq = format!("<iq type='get' id='{id}' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>");
            s.iq(&id, iq, super::REPLY_WAIT).await.is_ok()
        });
        for ok in futures_util::future::join_all(pings).await {
            alive += usize::from(ok);
        }
    }
    alive
}
