//! Keeping the unauthenticated endpoints cheap: computed status documents
//! are cached (one computation at a time, off the async workers, at most
//! once per `http.status_cache_ms`), and each address may make
//! `http.status_requests_per_sec` unauthenticated requests a second (token
//! bucket, bursts of twice that), in a table of bounded size.

use chorus_xmpp::runtime::address_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Addresses the rate table remembers at most.
const TRACKED_MAX: usize = 65_536;

/// Per-address token buckets.
pub struct RateLimiter {
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    tracked_max: usize,
}

impl RateLimiter {
    /// `per_sec` requests a second per address, bursts of twice that.
    pub fn new(per_sec: u32) -> RateLimiter {
        RateLimiter::with_capacity(per_sec, TRACKED_MAX)
    }

    fn with_capacity(per_sec: u32, tracked_max: usize) -> RateLimiter {
        RateLimiter {
            per_sec: f64::from(per_sec.max(1)),
            buckets: Mutex::new(HashMap::new()),
            tracked_max,
        }
    }

    fn burst(&self) -> f64 {
        self.per_sec * 2.0
    }

    /// Whether `ip` may make a request now (and counts it).
    pub fn allow(&self, ip: IpAddr) -> bool {
        let key = address_key(ip);
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !b.contains_key(&key) && b.len() >= self.tracked_max {
            self.make_room(&mut b, now);
        }
        let (tokens, at) = b.entry(key).or_insert((self.burst(), now));
        let refill = now.duration_since(*at).as_secs_f64() * self.per_sec;
        *tokens = (*tokens + refill).min(self.burst());
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            metrics::counter!("chorus_http_rate_limited_total").increment(1);
            false
        }
    }

    /// Forgets addresses whose bucket has refilled (they lose nothing);
    /// if none has, the stalest half.
    fn make_room(&self, b: &mut HashMap<IpAddr, (f64, Instant)>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst() / self.per_sec);
        b.retain(|_, (_, at)| now.duration_since(*at) < full_after);
        if b.len() >= self.tracked_max {
            let mut ages: Vec<Instant> = b.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            b.retain(|_, (_, at)| *at > cut);
        }
    }
}

/// Produces a status document (it may block on storage).
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A status document computed at most once per `ttl`.
pub struct Cached {
    f: StatusFn,
    ttl: Duration,
    slot: Arc<tokio::sync::Mutex<Option<Computed>>>,
}

/// A document and when it was computed.
type Computed = (Instant, Arc<serde_json::Value>);

impl Cached {
    /// Caches `f`'s answers for `ttl`.
    pub fn new(f: StatusFn, ttl: Duration) -> Cached {
        Cached {
            f,
            ttl,
            slot: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The document, computed now only if the cached one is older than
    /// the ttl; callers arriving meanwhile wait for the same computation.
    ///
    /// The lookup and the computation run in a task of their own: a caller
    /// that gives up (its client left) does not free the slot while the
    /// computation still runs, so never more than one runs at a time.
    pub async fn get(&self) -> Arc<serde_json::Value> {
        let (slot, f, ttl) = (self.slot.clone(), self.f.clone(), self.ttl);
        let job = tokio::spawn(async move {
            let mut slot = slot.lock_owned().await;
            if let Some((at, v)) = slot.as_ref()
                && at.elapsed() < ttl
            {
                return v.clone();
            }
            let v = match tokio::task::spawn_blocking(move || f()).await {
                Ok(v) => Arc::new(v),
                Err(e) => Arc::new(serde_json::json!({ "error": format!("status failed: {e}") })),
            };
            *slot = Some((Instant::now(), v.clone()));
            v
        });
        job.await
            .unwrap_or_else(|e| Arc::new(serde_json::json!({ "error": format!("status failed: {e}") })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn an_address_gets_its_rate_and_bursts_and_no_more() {
        let r = RateLimiter::new(5);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let passed = (0..100).filter(|_| r.allow(ip)).count();
        assert_eq!(passed, 10, "a burst of twice the rate");
        assert!(
            r.allow("192.0.2.2".parse().expect("ip")),
            "others are not affected"
        );
        // The same /64 is one address.
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::ffff".parse().expect("ip");
        assert_eq!(
            (0..20)
                .filter(|i| r.allow(if i % 2 == 0 { a } else { b }))
                .count(),
            10
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            (0..100).filter(|_| r.allow(ip)).count(),
            5,
            "refilled at the rate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_keeps_working() {
        let r = RateLimiter::with_capacity(1, 100);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(r.allow(ip), "a new address is always admitted once");
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(r.buckets.lock().expect("lock").len() <= 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_status_is_computed_once_per_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let cached = Cached::new(
            Arc::new(move || serde_json::json!({ "n": c.fetch_add(1, Ordering::SeqCst) })),
            Duration::from_secs(1),
        );
        for _ in 0..50 {
            assert_eq!(cached.get().await["n"], 0);
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(cached.get().await["n"], 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_start_a_second_computation() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (c, release_rx) = (calls.clone(), Arc::new(std::sync::Mutex::new(release_rx)));
        let f: StatusFn = Arc::new(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let _ = started_tx.send(());
            let _ = release_rx.lock().expect("lock").recv();
            serde_json::json!({ "n": n })
        });
        let cached = Arc::new(Cached::new(f, Duration::from_secs(60)));
        let first = tokio::spawn({
            let cached = cached.clone();
            async move { cached.get().await }
        });
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .expect("join")
            .expect("started");
        first.abort(); // its client went away mid-computation
        let second = tokio::spawn({
            let cached = cached.clone();
            async move { cached.get().await }
        });
        release_tx.send(()).expect("release");
        assert_eq!(
            second.await.expect("second")["n"],
            0,
            "it waited for the running computation"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
