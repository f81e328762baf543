//! Sessions an administrator revoked. Disabling an account
//! ([`chorus_core::store::DISABLED_SETTING`]) or ending its sessions
//! ([`SESSIONS_ENDED_SETTING`], the time of the request) is a replicated
//! setting, so every node learns of it; each node's sweeper ends its own
//! sessions that the settings revoke with `<policy-violation/>`, so an
//! account disabled at one site loses its sessions at every site within a
//! sweep of the setting's arrival.

use crate::context::Context;
use crate::router::Routed;
use chorus_core::store::DISABLED_SETTING;
use std::time::Duration;

/// The per-user setting holding when (ms since the epoch) an administrator
/// ended the account's sessions: sessions bound before then end.
pub const SESSIONS_ENDED_SETTING: &str = "account.sessions_ended_ms";

/// How often each node looks for revoked sessions.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why `user`'s session bound at `bound_ms` must end, if it must.
/// (A store that cannot be read revokes nothing here: a disk hiccup must
/// not end every session; logins stay refused by the fail-closed check.)
fn revoked(ctx: &Context, user: &str, bound_ms: u64) -> Option<&'static str> {
    let flag = |name| matches!(ctx.store.setting(user, name), Ok(Some(v)) if v == "1");
    if flag(DISABLED_SETTING) || flag(chorus_core::directory::DIRECTORY_DISABLED_SETTING) {
        return Some("this account is disabled");
    }
    let ended = ctx.store.setting(user, SESSIONS_ENDED_SETTING).ok().flatten()?;
    let ended: u64 = ended.parse().ok()?;
    (bound_ms <= ended).then_some("an administrator ended this account's sessions")
}

/// Ends this node's sessions that the settings revoke; returns how many.
pub fn sweep(ctx: &Context) -> usize {
    let mut ended = 0;
    for (user, info) in ctx.router.local_resources() {
        if let Some(why) = revoked(ctx, &user, info.bound_ms)
            && ctx
                .router
                .deliver(&user, &info.resource, Routed::Revoked(why.into()))
                .is_ok()
        {
            tracing::info!(user = %user, resource = %info.resource, why, "session revoked");
            metrics::counter!("chorus_sessions_revoked_total").increment(1);
            ended += 1;
        }
    }
    ended
}

/// Sweeps every [`SWEEP_EVERY`] until `stop` turns true (store reads for
/// every local session: off the async workers).
pub async fn run(ctx: std::sync::Arc<Context>, stop: tokio::sync::watch::Receiver<bool>) {
    crate::context::every(SWEEP_EVERY, ctx, stop, |c| {
        sweep(c);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{LocalRouter, Router};
    use std::sync::Arc;

    fn ctx() -> (Arc<Context>, Arc<LocalRouter>) {
        let router = Arc::new(LocalRouter::new());
        let store = Arc::new(chorus_core::mem_store::MemStore::new());
        let ctx = Context::new(
            chorus_core::config::Config::default(),
            store,
            router.clone(),
            Arc::new(chorus_core::archive::NoArchive),
        );
        (Arc::new(ctx), router)
    }

    #[test]
    fn disabled_accounts_and_sessions_ended_before_the_mark_are_revoked() {
        let (ctx, router) = ctx();
        let (tx_a, mut rx_a) = crate::queue::channel(4);
        let (tx_b, mut rx_b) = crate::queue::channel(4);
        router.bind("alice", "pc", 1, tx_a, 8).expect("bind");
        router.bind("bob", "pc", 2, tx_b, 8).expect("bind");
        assert_eq!(sweep(&ctx), 0, "nothing revoked yet");

        ctx.store
            .set_setting("alice", DISABLED_SETTING, "1")
            .expect("set");
        assert_eq!(sweep(&ctx), 1);
        assert!(matches!(rx_a.try_recv(), Ok(Routed::Revoked(w)) if w.contains("disabled")));
        assert!(rx_b.try_recv().is_err());

        // A mark before bob bound leaves him; one after ends him.
        let bound = router.resources("bob")[0].bound_ms;
        ctx.store
            .set_setting("bob", SESSIONS_ENDED_SETTING, &(bound - 1).to_string())
            .expect("set");
        ctx.store
            .set_setting("alice", DISABLED_SETTING, "")
            .expect("enable");
        assert_eq!(sweep(&ctx), 0);
        ctx.store
            .set_setting("bob", SESSIONS_ENDED_SETTING, &bound.to_string())
            .expect("set");
        assert_eq!(sweep(&ctx), 1);
        assert!(matches!(rx_b.try_recv(), Ok(Routed::Revoked(w)) if w.contains("ended")));
    }
}
