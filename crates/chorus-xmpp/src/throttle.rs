//! Brute-force throttling of logins and token-bucket rate limits.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runtime::address_key;

/// Keys tracked at most by one [`AuthThrottle`] map; the oldest are dropped.
pub const THROTTLE_KEYS_MAX: usize = 100_000;

/// How long a successful login makes its address "usual" for the account.
pub const USUAL_ADDRESS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Usual addresses kept per account (the oldest goes): one account that
/// logs in from many networks cannot push everyone else's out.
pub const USUAL_ADDRESSES_PER_ACCOUNT: usize = 16;

/// An account at one address (IPv4 address or IPv6 /64).
type Pair = (String, IpAddr);

/// Counts failed logins per account and per address in a sliding window.
///
/// An account locked by failures from strangers stays open from the
/// addresses it recently logged in from (its "usual" addresses): a script
/// guessing a colleague's password locks the script out, not the colleague
/// at their desk. Failures from a usual address count on their own, so a
/// guesser who shares that address (an office NAT) is still locked out by
/// its own failures and by the per-address limit.
pub struct AuthThrottle {
    window: Duration,
    per_account_max: u32,
    per_address_max: u32,
    accounts: Mutex<HashMap<String, VecDeque<Instant>>>,
    addresses: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    pairs: Mutex<HashMap<Pair, VecDeque<Instant>>>,
    usual: Mutex<HashMap<String, Vec<(IpAddr, Instant)>>>,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

fn count<K: std::hash::Hash + Eq>(
    m: &Mutex<HashMap<K, VecDeque<Instant>>>,
    k: &K,
    now: Instant,
    w: Duration,
) -> u32 {
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    match m.get_mut(k) {
        Some(q) => {
            prune(q, now, w);
            q.len() as u32
        }
        None => 0,
    }
}

fn record<K: std::hash::Hash + Eq + Clone>(
    m: &Mutex<HashMap<K, VecDeque<Instant>>>,
    k: &K,
    now: Instant,
    w: Duration,
) {
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= THROTTLE_KEYS_MAX && !m.contains_key(k) {
        make_room(&mut m, now, w);
    }
    let q = m.entry(k.clone()).or_default();
    prune(q, now, w);
    q.push_back(now);
}

/// A full map drops expired keys, then, if still full, the half whose
/// latest failure is oldest: throttling is never switched off by filling
/// the map, and the cost is amortized over the half-map of inserts that
/// the next eviction is away.
fn make_room<K: std::hash::Hash + Eq + Clone>(
    m: &mut HashMap<K, VecDeque<Instant>>,
    now: Instant,
    w: Duration,
) {
    m.retain(|_, q| {
        prune(q, now, w);
        !q.is_empty()
    });
    if m.len() < THROTTLE_KEYS_MAX {
        return;
    }
    let mut latest: Vec<Instant> = m.values().filter_map(|q| q.back().copied()).collect();
    latest.sort_unstable();
    let cutoff = latest[latest.len() / 2];
    m.retain(|_, q| q.back().is_some_and(|t| *t > cutoff));
    metrics::counter!("chorus_auth_throttle_evictions_total").increment(1);
}

impl AuthThrottle {
    /// A throttle with the configured window and thresholds.
    pub fn new(window: Duration, per_account_max: u32, per_address_max: u32) -> AuthThrottle {
        AuthThrottle {
            window,
            per_account_max,
            per_address_max,
            accounts: Mutex::default(),
            addresses: Mutex::default(),
            pairs: Mutex::default(),
            usual: Mutex::default(),
        }
    }

    /// Whether an attempt from this address is refused right now.
    /// Addresses count per IPv4 address and per IPv6 /64.
    pub fn address_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        count(&self.addresses, &address_key(ip), now, self.window) >= self.per_address_max
    }

    /// Whether an attempt for this account from this address is refused
    /// right now: from a usual address, after as many failures from that
    /// address; from anywhere else, after as many failures in all.
    pub fn account_blocked(&self, account: &str, ip: IpAddr, now: Instant) -> bool {
        let pair = (account.to_owned(), address_key(ip));
        if self.is_usual(&pair, now) {
            return count(&self.pairs, &pair, now, self.window) >= self.per_account_max;
        }
        count(&self.accounts, &pair.0, now, self.window) >= self.per_account_max
    }

    /// Records a failed attempt.
    pub fn failed(&self, account: Option<&str>, ip: IpAddr, now: Instant) {
        let key = address_key(ip);
        record(&self.addresses, &key, now, self.window);
        if let Some(a) = account {
            record(&self.accounts, &a.to_owned(), now, self.window);
            record(&self.pairs, &(a.to_owned(), key), now, self.window);
        }
    }

    /// Records a successful login: the address becomes usual for the
    /// account for [`USUAL_ADDRESS_TTL`].
    pub fn succeeded(&self, account: &str, ip: IpAddr, now: Instant) {
        let mut m = self.usual.lock().unwrap_or_else(|e| e.into_inner());
        let key = address_key(ip);
        if m.len() >= THROTTLE_KEYS_MAX && !m.contains_key(account) {
            let fresh = |t: &Instant| now.saturating_duration_since(*t) < USUAL_ADDRESS_TTL;
            m.retain(|_, v| {
                v.retain(|(_, t)| fresh(t));
                !v.is_empty()
            });
            if m.len() >= THROTTLE_KEYS_MAX {
                let latest = |v: &Vec<(IpAddr, Instant)>| v.iter().map(|(_, t)| *t).max();
                let mut seen: Vec<Instant> = m.values().filter_map(latest).collect();
                seen.sort_unstable();
                let cutoff = seen[seen.len() / 2];
                m.retain(|_, v| latest(v).is_some_and(|t| t > cutoff));
            }
        }
        let v = m.entry(account.to_owned()).or_default();
        v.retain(|(a, _)| *a != key);
        if v.len() >= USUAL_ADDRESSES_PER_ACCOUNT {
            v.remove(0);
        }
        v.reserve_exact(1); // one or two addresses is usual: no room for four
        v.push((key, now));
    }

    fn is_usual(&self, pair: &Pair, now: Instant) -> bool {
        let m = self.usual.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&pair.0).is_some_and(|v| {
            v.iter()
                .any(|(a, t)| *a == pair.1 && now.saturating_duration_since(*t) < USUAL_ADDRESS_TTL)
        })
    }
}

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if available.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt; returns how long to wait until the
    /// debt is repaid (zero if none).
    pub fn take_debt(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Per-user stanza rate limits shared by all of a user's sessions.
pub struct UserRateLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl UserRateLimits {
    /// Limits of `rate` stanzas per second with a `burst` allowance.
    pub fn new(rate: u32, burst: u32) -> UserRateLimits {
        UserRateLimits {
            rate: rate as f64,
            burst: (rate + burst) as f64,
            buckets: Mutex::default(),
        }
    }

    /// Whether the user may send one more stanza now.
    pub fn allow(&self, user: &str, now: Instant) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= THROTTLE_KEYS_MAX && !b.contains_key(user) {
            b.retain(|_, t| {
                t.refill(now);
                t.tokens < t.burst
            });
        }
        b.entry(user.to_owned())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(1.0, now)
    }

    /// Forgets a user's bucket (when their last session ends).
    pub fn forget(&self, user: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_threshold_and_recovers() {
        let t = AuthThrottle::new(Duration::from_secs(60), 3, 10);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!t.account_blocked("a", ip, t0));
            t.failed(Some("a"), ip, t0);
        }
        assert!(t.account_blocked("a", ip, t0));
        assert!(!t.account_blocked("b", ip, t0));
        assert!(!t.address_blocked(ip, t0));
        assert!(!t.account_blocked("a", ip, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn an_ipv6_host_is_throttled_as_its_64() {
        let t = AuthThrottle::new(Duration::from_secs(60), 100, 3);
        let t0 = Instant::now();
        for i in 1..=3 {
            let ip: IpAddr = format!("2001:db8:7:7::{i:x}").parse().expect("ip");
            t.failed(None, ip, t0);
        }
        assert!(t.address_blocked("2001:db8:7:7:dead:beef::1".parse().expect("ip"), t0));
        assert!(!t.address_blocked("2001:db8:7:8::1".parse().expect("ip"), t0));
    }

    #[test]
    fn a_full_throttle_still_throttles_the_newest_attacker() {
        let t = AuthThrottle::new(Duration::from_secs(600), 2, 1_000);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        // Fill the account map with failures for other accounts first.
        for i in 0..THROTTLE_KEYS_MAX {
            t.failed(Some(&format!("filler{i}")), ip, t0);
        }
        let later = t0 + Duration::from_secs(1);
        for _ in 0..2 {
            t.failed(Some("victim"), ip, later);
        }
        assert!(
            t.account_blocked("victim", ip, later),
            "a full map switched the throttle off"
        );
        let len = t.accounts.lock().expect("lock").len();
        assert!(len <= THROTTLE_KEYS_MAX, "{len} keys");
    }

    #[test]
    fn a_locked_account_stays_open_from_its_usual_address() {
        let t = AuthThrottle::new(Duration::from_secs(600), 3, 1_000);
        let desk: IpAddr = "198.51.100.7".parse().expect("ip");
        let script: IpAddr = "203.0.113.9".parse().expect("ip");
        let t0 = Instant::now();
        t.succeeded("alice", desk, t0);
        for _ in 0..10 {
            t.failed(Some("alice"), script, t0);
        }
        assert!(t.account_blocked("alice", script, t0));
        assert!(
            !t.account_blocked("alice", desk, t0),
            "the real user was locked out"
        );
        // A guesser sharing the desk's address is stopped by its own failures.
        for _ in 0..3 {
            t.failed(Some("alice"), desk, t0);
        }
        assert!(t.account_blocked("alice", desk, t0));
    }

    #[test]
    fn a_usual_address_expires_and_is_per_account() {
        let t = AuthThrottle::new(Duration::from_secs(3600 * 24 * 60), 1, 1_000);
        let desk: IpAddr = "2001:db8:1:2::10".parse().expect("ip");
        let t0 = Instant::now();
        t.succeeded("alice", desk, t0);
        t.failed(Some("alice"), "203.0.113.9".parse().expect("ip"), t0);
        t.failed(Some("bob"), "203.0.113.9".parse().expect("ip"), t0);
        // Same /64, other host: still the usual network.
        assert!(!t.account_blocked("alice", "2001:db8:1:2::99".parse().expect("ip"), t0));
        assert!(t.account_blocked("bob", desk, t0), "alice's address is not bob's");
        let later = t0 + USUAL_ADDRESS_TTL + Duration::from_secs(1);
        t.failed(Some("alice"), "203.0.113.9".parse().expect("ip"), later);
        assert!(t.account_blocked("alice", desk, later), "usual never expired");
    }

    #[test]
    fn one_account_cannot_push_out_anothers_usual_address() {
        let t = AuthThrottle::new(Duration::from_secs(60), 1, 1_000);
        let t0 = Instant::now();
        let desk: IpAddr = "198.51.100.7".parse().expect("ip");
        t.succeeded("alice", desk, t0);
        for i in 0..100_000u32 {
            let ip: IpAddr = format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff)
                .parse()
                .expect("ip");
            t.succeeded("mallory", ip, t0);
        }
        assert_eq!(
            t.usual.lock().expect("lock")["mallory"].len(),
            USUAL_ADDRESSES_PER_ACCOUNT
        );
        t.failed(Some("alice"), "203.0.113.9".parse().expect("ip"), t0);
        assert!(
            !t.account_blocked("alice", desk, t0),
            "alice's desk was pushed out"
        );
    }

    #[test]
    fn the_usual_address_table_is_bounded() {
        let t = AuthThrottle::new(Duration::from_secs(60), 3, 1_000);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..THROTTLE_KEYS_MAX + 10 {
            t.succeeded(&format!("u{i}"), ip, t0 + Duration::from_millis(i as u64));
        }
        let len = t.usual.lock().expect("lock").len();
        assert!(len <= THROTTLE_KEYS_MAX, "{len} entries");
        assert!(t.is_usual(
            &(format!("u{}", THROTTLE_KEYS_MAX + 9), ip),
            t0 + Duration::from_secs(1000)
        ));
    }

    #[test]
    fn bucket_limits_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        assert!(b.try_take(1.0, t0));
        assert!(b.try_take(1.0, t0));
        assert!(!b.try_take(1.0, t0));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(100)));
        let wait = b.take_debt(5.0, t0 + Duration::from_millis(100));
        assert_eq!(wait, Duration::from_millis(500));
    }
}
