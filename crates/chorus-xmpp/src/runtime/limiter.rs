//! Connection-count limits. A connection starts in the unauthenticated
//! pool (its own bound, and one per address), which it never waits for: a
//! connection over the bound is closed at once. Once it authenticates it
//! moves to the pool of logged-in connections, so however many strangers
//! connect, they cannot take the slots of users who have logged in.
//! Addresses are counted per IPv4 address and per IPv6 /64 (one host's
//! share of a network).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The key an address is counted under: an IPv4 address (an IPv4-mapped
/// IPv6 address is its IPv4 address), or an IPv6 address's /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let seg = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0,
                ))
            }
        },
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The unauthenticated pool is full and no address holds more of it
    /// than this one would.
    Unauthenticated,
    /// Its address has too many unauthenticated connections.
    UnauthenticatedFromAddress,
    /// Its address has too many connections.
    FromAddress,
    /// The pool of logged-in connections is full.
    Full,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated_pool_full",
            Refusal::UnauthenticatedFromAddress => "unauthenticated_per_address",
            Refusal::FromAddress => "per_address",
            Refusal::Full => "pool_full",
        }
    }
}

/// Set when a newer connection took an unauthenticated connection's place.
#[derive(Default)]
struct Eviction {
    evicted: AtomicBool,
    notify: Notify,
}

#[derive(Default)]
struct Counts {
    all: HashMap<IpAddr, usize>,
    /// Unauthenticated connections per address, oldest first.
    unauthenticated: HashMap<IpAddr, VecDeque<(u64, Arc<Eviction>)>>,
    unauthenticated_total: usize,
    next_id: u64,
}

impl Counts {
    fn forget_unauthenticated(&mut self, key: IpAddr, id: u64) {
        if let Some(q) = self.unauthenticated.get_mut(&key)
            && let Some(i) = q.iter().position(|(c, _)| *c == id)
        {
            q.remove(i);
            self.unauthenticated_total -= 1;
            metrics::gauge!("chorus_connections_unauthenticated").decrement(1.0);
            if q.is_empty() {
                self.unauthenticated.remove(&key);
            }
        }
    }

    /// Makes room in a full pool for a connection from `newcomer`: the
    /// oldest unauthenticated connection of the address holding the most
    /// is evicted, if that address holds more than the newcomer's would.
    /// A flood from many addresses so displaces itself, never a lone user.
    fn evict_for(&mut self, newcomer: IpAddr) -> bool {
        let mine = self.unauthenticated.get(&newcomer).map_or(0, VecDeque::len);
        let Some((key, n)) = self
            .unauthenticated
            .iter()
            .map(|(k, q)| (*k, q.len()))
            .max_by_key(|(_, n)| *n)
        else {
            return false;
        };
        if n <= mine + 1 {
            return false;
        }
        let Some((id, victim)) = self.unauthenticated.get(&key).and_then(|q| q.front().cloned()) else {
            return false;
        };
        self.forget_unauthenticated(key, id);
        victim.evicted.store(true, Ordering::SeqCst);
        victim.notify.notify_one();
        metrics::counter!("chorus_connections_evicted_total").increment(1);
        true
    }
}

fn decrement(m: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = m.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            m.remove(&key);
        }
    }
}

/// Limits open client connections across every listener.
pub struct ConnectionLimiter {
    authenticated: Arc<Semaphore>,
    unauthenticated_max: usize,
    per_ip_max: usize,
    unauthenticated_per_ip_max: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One connection's place; released on drop.
pub struct ConnectionGuard {
    /// Its logged-in slot, once it has one.
    permit: Option<OwnedSemaphorePermit>,
    /// Its place in the unauthenticated pool until then.
    unauthenticated: Option<(u64, Arc<Eviction>)>,
    key: IpAddr,
    counts: Arc<Mutex<Counts>>,
    pool: Arc<Semaphore>,
    /// When the connection was accepted: the handshake timeout runs from
    /// here, through the TLS handshake and a STARTTLS restart.
    opened: tokio::time::Instant,
}

impl ConnectionGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a connection accepted now must have logged in, given the
    /// handshake timeout.
    pub fn handshake_deadline(&self, timeout: std::time::Duration) -> tokio::time::Instant {
        self.opened + timeout
    }

    /// Whether this connection holds a logged-in slot.
    pub fn is_authenticated(&self) -> bool {
        self.permit.is_some()
    }

    /// Moves the connection from the unauthenticated pool to the
    /// logged-in pool; refused when that is full (the caller ends the
    /// stream with `<resource-constraint/>`). Idempotent.
    pub fn promote(&mut self) -> Result<(), Refusal> {
        if self.permit.is_some() {
            return Ok(());
        }
        let Ok(permit) = self.pool.clone().try_acquire_owned() else {
            metrics::counter!("chorus_connections_refused_total", "reason" => Refusal::Full.label())
                .increment(1);
            return Err(Refusal::Full);
        };
        self.permit = Some(permit);
        if let Some((id, _)) = self.unauthenticated.take() {
            let key = self.key;
            self.lock().forget_unauthenticated(key, id);
        }
        Ok(())
    }

    /// Resolves once a newer connection has taken this unauthenticated
    /// connection's place (the driver then ends the stream); never for a
    /// logged-in connection.
    pub async fn evicted(&self) {
        match &self.unauthenticated {
            Some((_, e)) => {
                while !e.evicted.load(Ordering::SeqCst) {
                    e.notify.notified().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        metrics::gauge!("chorus_connections").decrement(1.0);
        let key = self.key;
        let unauthenticated = self.unauthenticated.take();
        let mut c = self.lock();
        decrement(&mut c.all, key);
        if let Some((id, _)) = unauthenticated {
            c.forget_unauthenticated(key, id);
        }
    }
}

impl ConnectionLimiter {
    /// A limiter with the configured bounds.
    pub fn new(limits: &chorus_core::config::LimitsConfig) -> ConnectionLimiter {
        ConnectionLimiter {
            authenticated: Arc::new(Semaphore::new(limits.connections_max)),
            unauthenticated_max: limits.unauthenticated_connections_max,
            per_ip_max: limits.connections_per_ip_max,
            unauthenticated_per_ip_max: limits.unauthenticated_per_ip_max,
            counts: Arc::default(),
        }
    }

    /// Admits a new (unauthenticated) connection from `ip`, or says why
    /// not; never waits.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionGuard, Refusal> {
        let key = address_key(ip);
        let r = self.try_admit(key);
        match r.as_ref() {
            Ok(_) => metrics::counter!("chorus_connections_admitted_total").increment(1),
            Err(why) => {
                metrics::counter!("chorus_connections_refused_total", "reason" => why.label()).increment(1)
            }
        }
        r
    }

    fn try_admit(&self, key: IpAddr) -> Result<ConnectionGuard, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.all.get(&key).copied().unwrap_or(0) >= self.per_ip_max {
            return Err(Refusal::FromAddress);
        }
        let mine = c.unauthenticated.get(&key).map_or(0, VecDeque::len);
        if mine >= self.unauthenticated_per_ip_max {
            return Err(Refusal::UnauthenticatedFromAddress);
        }
        if c.unauthenticated_total >= self.unauthenticated_max && !c.evict_for(key) {
            return Err(Refusal::Unauthenticated);
        }
        c.next_id += 1;
        let (id, eviction) = (c.next_id, Arc::new(Eviction::default()));
        *c.all.entry(key).or_insert(0) += 1;
        c.unauthenticated
            .entry(key)
            .or_default()
            .push_back((id, eviction.clone()));
        c.unauthenticated_total += 1;
        metrics::gauge!("chorus_connections").increment(1.0);
        metrics::gauge!("chorus_connections_unauthenticated").increment(1.0);
        Ok(ConnectionGuard {
            permit: None,
            unauthenticated: Some((id, eviction)),
            key,
            counts: self.counts.clone(),
            pool: self.authenticated.clone(),
            opened: tokio::time::Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::config::LimitsConfig;

    fn limiter(total: usize, per_ip: usize, unauth: usize, unauth_per_ip: usize) -> ConnectionLimiter {
        ConnectionLimiter::new(&LimitsConfig {
            connections_max: total,
            connections_per_ip_max: per_ip,
            unauthenticated_connections_max: unauth,
            unauthenticated_per_ip_max: unauth_per_ip,
            ..LimitsConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_ip_limit_and_release() {
        let l = limiter(10, 1, 10, 10);
        let g = l.admit(ip("127.0.0.1")).expect("first");
        assert_eq!(l.admit(ip("127.0.0.1")).err(), Some(Refusal::FromAddress));
        assert!(l.admit(ip("127.0.0.2")).is_ok());
        drop(g);
        assert!(l.admit(ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn strangers_cannot_take_the_slots_of_logged_in_users() {
        let l = limiter(2, 100, 3, 3);
        let mut user = l.admit(ip("10.0.0.1")).expect("user connects");
        let flood: Vec<_> = ["10.0.0.2", "10.0.0.2"]
            .iter()
            .map(|a| l.admit(ip(a)).expect("within the unauthenticated pool"))
            .collect();
        // The pool is full and no address holds more than one more than
        // the newcomer's would: refused at once, not queued.
        assert_eq!(l.admit(ip("10.0.0.2")).err(), Some(Refusal::Unauthenticated));
        drop(flood);
        // Logging in moves the user to the other pool and frees a place.
        user.promote().expect("a logged-in slot");
        assert!(user.is_authenticated());
        let mut second = l.admit(ip("10.0.0.5")).expect("admitted");
        second.promote().expect("second slot");
        let mut third = l.admit(ip("10.0.0.6")).expect("admitted");
        assert_eq!(third.promote(), Err(Refusal::Full));
        drop(user);
        third.promote().expect("freed by the user leaving");
    }

    #[tokio::test]
    async fn a_full_pool_makes_room_for_a_lone_user_by_evicting_the_flood() {
        let l = limiter(10, 100, 4, 3);
        let flood: Vec<_> = ["10.0.0.2", "10.0.0.2", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| l.admit(ip(a)).expect("within the pool"))
            .collect();
        let user = l.admit(ip("10.0.0.1")).expect("room is made for a lone user");
        // The oldest connection of the address holding the most went.
        tokio::time::timeout(std::time::Duration::from_secs(1), flood[0].evicted())
            .await
            .expect("the oldest flood connection is told");
        let others = std::pin::pin!(flood[1].evicted());
        assert!(futures_poll_once(others).is_none(), "only one was evicted");
        // Only an address holding more than the newcomer's would loses one:
        // the user's second connection is refused, a new address is not.
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refusal::Unauthenticated));
        let other = l.admit(ip("10.0.0.7")).expect("evicts 10.0.0.2's next");
        assert_eq!(l.admit(ip("10.0.0.8")).err(), Some(Refusal::Unauthenticated));
        drop((user, other));
        assert!(l.admit(ip("10.0.0.9")).is_ok());
    }

    /// Polls a future once.
    fn futures_poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_mapped_ipv4_as_ipv4() {
        let l = limiter(10, 2, 10, 10);
        let _a = l.admit(ip("2001:db8:1:2::1")).expect("first");
        let _b = l.admit(ip("2001:db8:1:2:ffff::9")).expect("second");
        assert_eq!(
            l.admit(ip("2001:db8:1:2:abcd::1")).err(),
            Some(Refusal::FromAddress)
        );
        assert!(l.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}
