//! Connection-count limits: all listeners together and per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits open client connections; acquire before `accept()` completes work.
pub struct ConnectionLimiter {
    total: Arc<Semaphore>,
    per_ip_max: usize,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one connection's place; released on drop.
pub struct ConnectionGuard {
    _permit: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        metrics::gauge!("chorus_connections").decrement(1.0);
        if let Some(ip) = self.ip {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl ConnectionLimiter {
    /// A limiter with the configured bounds.
    pub fn new(total_max: usize, per_ip_max: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            total: Arc::new(Semaphore::new(total_max)),
            per_ip_max,
            per_ip: Arc::default(),
        }
    }

    /// Waits for a free slot (backpressure on the accept loop).
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.total
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Admits a connection from `ip` with an acquired slot, unless that
    /// address already has too many.
    pub fn admit(&self, permit: OwnedSemaphorePermit, ip: IpAddr) -> Option<ConnectionGuard> {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return None;
        }
        *n += 1;
        metrics::gauge!("chorus_connections").increment(1.0);
        Some(ConnectionGuard {
            _permit: permit,
            ip: Some(ip),
            per_ip: self.per_ip.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_ip_limit_and_release() {
        let l = ConnectionLimiter::new(10, 1);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let g = l.admit(l.slot().await, ip).expect("first");
        assert!(l.admit(l.slot().await, ip).is_none());
        drop(g);
        assert!(l.admit(l.slot().await, ip).is_some());
    }
}
