//! [`Context`]: everything sessions share on one node: configuration, the
//! store, router and archive seams, throttles and the parked sessions that
//! wait for XEP-0198 resumption.

use crate::router::{Routed, Router};
use crate::session::Session;
use crate::throttle::{AuthThrottle, UserRateLimits};
use chorus_core::archive::Archive;
use chorus_core::config::Config;
use chorus_core::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Shared state of one node's XMPP service.
pub struct Context {
    /// The validated configuration.
    pub config: Config,
    /// The domain served.
    pub domain: String,
    /// Durable per-user data.
    pub store: Arc<dyn Store>,
    /// Online sessions.
    pub router: Arc<dyn Router>,
    /// The compliance archive seam.
    pub archive: Arc<dyn Archive>,
    /// Failed-login throttling.
    pub auth_throttle: AuthThrottle,
    /// Per-user stanza rate limits.
    pub user_limits: UserRateLimits,
    /// Sessions detached from their connection, waiting to be resumed.
    pub parked: Parked,
    /// RFC 5929 `tls-server-end-point` channel binding: the hash of the
    /// certificate the c2s listeners present (set once TLS is loaded).
    pub tls_server_end_point: std::sync::OnceLock<Vec<u8>>,
    /// The shared secret of each `[[extdisco.services]]` entry that has one
    /// (read at start, so a request never touches the disk).
    pub turn_secrets: std::sync::OnceLock<Vec<Option<Vec<u8>>>>,
    /// Verified XEP-0115 capabilities, by `ver`.
    pub caps: crate::caps::CapsCache,
    /// When this node started (XEP-0012 uptime of the server).
    pub started_ms: u64,
    /// The enterprise directory, when `[directory]` is configured.
    pub people: std::sync::OnceLock<Arc<dyn chorus_core::directory::People>>,
    /// Shared roster groups (refreshed by [`crate::shared::run`]).
    pub shared: crate::shared::Shared,
    next_session_id: AtomicU64,
}

impl Context {
    /// Builds the shared context.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        router: Arc<dyn Router>,
        archive: Arc<dyn Archive>,
    ) -> Context {
        let l = &config.limits;
        let ctx = Context {
            domain: config.server.domain.clone(),
            auth_throttle: AuthThrottle::new(
                Duration::from_secs(l.auth_failure_window_secs),
                l.auth_failures_per_account_max,
                l.auth_failures_per_address_max,
            ),
            user_limits: UserRateLimits::new(l.user_stanzas_per_sec, l.user_stanzas_burst),
            config,
            store,
            router,
            archive,
            parked: Parked::default(),
            tls_server_end_point: std::sync::OnceLock::new(),
            turn_secrets: std::sync::OnceLock::new(),
            caps: crate::caps::CapsCache::default(),
            started_ms: chorus_core::time::now_millis(),
            people: std::sync::OnceLock::new(),
            shared: crate::shared::Shared::default(),
            next_session_id: AtomicU64::new(1),
        };
        crate::shared::refresh(&ctx);
        ctx
    }

    /// A fresh session id, unique on this node.
    pub fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs `work` off the async workers every `period` (the first time at
/// once) until `stop` turns true: the node's periodic sweeps over its
/// sessions and the store.
pub async fn every(
    period: Duration,
    ctx: Arc<Context>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    work: fn(&Context),
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let c = ctx.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || work(&c)).await {
            tracing::error!(error = %e, "a periodic task failed");
        }
    }
}

/// A session waiting for resumption, with the queue of stanzas routed to it.
pub struct ParkedSession {
    /// The session state.
    pub session: Box<Session>,
    /// Stanzas routed to it while detached.
    pub rx: crate::queue::Receiver<Routed>,
}

/// Parked sessions by resumption id.
#[derive(Default)]
pub struct Parked {
    map: Mutex<HashMap<String, ParkedSession>>,
    /// The session ids in `map` (a phone whose app sleeps: XEP-0357 push
    /// wakes it for what is queued to it).
    ids: Mutex<std::collections::HashSet<u64>>,
}

impl Parked {
    /// Parks a session under its resumption id.
    pub fn park(&self, id: String, p: ParkedSession) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.session.id);
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(id, p);
    }

    /// Whether the session with this id is parked.
    pub fn holds(&self, session_id: u64) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&session_id)
    }

    fn forget(&self, p: &Option<ParkedSession>) {
        if let Some(p) = p {
            self.ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p.session.id);
        }
    }

    /// Takes a parked session out, to resume or to end it.
    pub fn take(&self, id: &str) -> Option<ParkedSession> {
        let p = self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.forget(&p);
        p
    }

    /// Takes the parked session with this session id, if any.
    pub fn take_session(&self, session_id: u64) -> Option<ParkedSession> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = m
            .iter()
            .find(|(_, p)| p.session.id == session_id)
            .map(|(k, _)| k.clone())?;
        let p = m.remove(&key);
        drop(m);
        self.forget(&p);
        p
    }

    /// Takes every parked session (at shutdown).
    pub fn take_all(&self) -> Vec<ParkedSession> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect()
    }

    /// Number of parked sessions.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
