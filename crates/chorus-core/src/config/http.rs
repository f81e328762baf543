//! `[http]`: the HTTPS listener (XMPP over WebSocket, the API, metrics and
//! probes) and its bounds: connections, timeouts, the rate of unauthenticated
//! status requests, and which proxies in front may vouch for TLS and for
//! the client's address.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// `[http]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listener for `/xmpp-websocket`, `/metrics`, `/healthz`, `/readyz`;
    /// empty to disable.
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS with the node's certificate (plain HTTP only when false,
    /// for a TLS proxy in front: see `trusted_proxies`).
    pub tls: bool,
    /// Serve XMPP over WebSocket (RFC 7395) at `/xmpp-websocket`.
    pub websocket: bool,
    /// Proxies (addresses or CIDR blocks, such as `10.0.0.0/8`) whose
    /// `X-Forwarded-Proto: https` makes a plain-HTTP request count as
    /// secure and whose `X-Forwarded-For` names the client. With
    /// `tls = false` and no trusted proxy, WebSocket logins are refused.
    pub trusted_proxies: Vec<String>,
    /// Open HTTP connections at most (WebSocket sessions count against
    /// `limits.connections_max` instead, once upgraded).
    pub connections_max: usize,
    /// Open HTTP connections from one address (IPv6: one /64).
    pub connections_per_ip_max: usize,
    /// Seconds a client has to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// Seconds from a request's headers to the start of its response
    /// (reading the body and the handler's work).
    pub request_timeout_secs: u64,
    /// Unauthenticated requests (probes, metrics, status) per second from
    /// one address; bursts of twice as many pass.
    pub status_requests_per_sec: u32,
    /// Milliseconds a computed `/cluster/status` or `/archive/status` is
    /// served from cache.
    pub status_cache_ms: u64,
    /// The WebSocket URL web clients are told about in
    /// `/.well-known/host-meta` (XEP-0156), e.g.
    /// `wss://chat.example.com/xmpp-websocket`; unset, it is built from the
    /// request's `Host` header.
    pub websocket_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            tls: true,
            websocket: true,
            trusted_proxies: Vec::new(),
            connections_max: 1024,
            connections_per_ip_max: 64,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            request_timeout_secs: 120,
            status_requests_per_sec: 100,
            status_cache_ms: 1000,
            websocket_url: None,
        }
    }
}

impl HttpConfig {
    /// Checks the values (the caller names the key in its error).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(u) = &self.websocket_url
            && !(u.starts_with("wss://") || u.starts_with("ws://"))
        {
            return Err((
                "http.websocket_url",
                format!("{u:?} is not a ws:// or wss:// URL"),
            ));
        }
        let positive: [(&'static str, u64); 6] = [
            ("http.connections_max", self.connections_max as u64),
            ("http.connections_per_ip_max", self.connections_per_ip_max as u64),
            ("http.header_read_timeout_secs", self.header_read_timeout_secs),
            ("http.idle_timeout_secs", self.idle_timeout_secs),
            ("http.request_timeout_secs", self.request_timeout_secs),
            (
                "http.status_requests_per_sec",
                u64::from(self.status_requests_per_sec),
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        for p in &self.trusted_proxies {
            if Cidr::parse(p).is_none() {
                return Err((
                    "http.trusted_proxies",
                    format!("{p:?} is not an address or a CIDR block such as 10.0.0.0/8"),
                ));
            }
        }
        Ok(())
    }

    /// The trusted proxies, parsed (validation has checked them).
    pub fn proxies(&self) -> Vec<Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| Cidr::parse(p))
            .collect()
    }
}

/// An address block: an address and how many leading bits must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(width);
        (bits <= width).then_some(Cidr { net: addr, bits })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.bits,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    if bits == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(bits));
    a & mask == b & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_their_addresses_only() {
        let c = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(c.contains("10.1.200.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")), "IPv4-mapped");
        let one = Cidr::parse("192.0.2.7").expect("valid");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6 = Cidr::parse("fd00::/8").expect("valid");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("fe80::1".parse().expect("ip")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("valid")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "ten", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_bad_proxy_or_a_zero_bound_is_refused() {
        let mut h = HttpConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "nonsense".into()],
            ..HttpConfig::default()
        };
        assert_eq!(h.validate().map_err(|e| e.0), Err("http.trusted_proxies"));
        h.trusted_proxies.pop();
        assert!(h.validate().is_ok());
        h.idle_timeout_secs = 0;
        assert_eq!(h.validate().map_err(|e| e.0), Err("http.idle_timeout_secs"));
    }
}
