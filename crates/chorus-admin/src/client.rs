//! Who sent a request: the client's address and whether the request came
//! over TLS. A direct connection speaks for itself; a proxy listed in
//! `http.trusted_proxies` may say, with `X-Forwarded-For` and
//! `X-Forwarded-Proto`, who the client is and that it used HTTPS. Anyone
//! else's forwarding headers are ignored, so a client cannot claim TLS it
//! did not use or dodge the per-address limits by naming another address.

use axum::http::HeaderMap;
use chorus_core::config::Cidr;
use std::net::{IpAddr, SocketAddr};

/// The request's client, inserted into every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address (the connection's, unless a trusted proxy
    /// named another).
    pub ip: IpAddr,
    /// Whether the client's connection was encrypted: ours, or a trusted
    /// proxy's that says so.
    pub secure: bool,
}

/// Identifies the client of a request that arrived from `peer` on a
/// listener serving TLS (`tls`) or plain HTTP.
pub fn identify(peer: SocketAddr, tls: bool, proxies: &[Cidr], headers: &HeaderMap) -> Client {
    let trusted = |ip: IpAddr| proxies.iter().any(|c| c.contains(ip));
    if !trusted(peer.ip()) {
        return Client {
            ip: peer.ip(),
            secure: tls,
        };
    }
    // The right-most address that is not one of our proxies is the
    // client: entries to its left were written by the client itself.
    let mut ip = peer.ip();
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Ok(hop) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        ip = hop;
        if !trusted(hop) {
            break;
        }
    }
    // The nearest proxy's word: the last value (an appending proxy leaves
    // the client's own claims in front of it).
    let forwarded_tls = headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Client {
        ip,
        secure: tls || forwarded_tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().expect("ip"), 40000)
    }

    #[test]
    fn strangers_cannot_claim_tls_or_another_address() {
        let forged = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        let proxies = [Cidr::parse("10.0.0.0/8").expect("cidr")];
        let c = identify(peer("203.0.113.5"), false, &proxies, &forged);
        assert_eq!(
            c,
            Client {
                ip: "203.0.113.5".parse().expect("ip"),
                secure: false
            }
        );
        // Over our own TLS the request is secure whatever it says.
        assert!(identify(peer("203.0.113.5"), true, &[], &HeaderMap::new()).secure);
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_its_tls() {
        let proxies = [Cidr::parse("10.0.0.0/8").expect("cidr")];
        // The client wrote a fake first hop; the proxies appended the rest.
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.2.3.4, 198.51.100.9"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        let c = identify(peer("10.0.0.1"), false, &proxies, &h);
        assert_eq!(c.ip, "198.51.100.9".parse::<IpAddr>().expect("ip"));
        assert!(c.secure);
        let plain = headers(&[("x-forwarded-proto", "http"), ("x-forwarded-for", "198.51.100.9")]);
        assert!(!identify(peer("10.0.0.1"), false, &proxies, &plain).secure);
        // Garbage stops the walk at the last good hop.
        let junk = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(
            identify(peer("10.0.0.1"), false, &proxies, &junk).ip,
            peer("10.0.0.1").ip()
        );
    }
}
