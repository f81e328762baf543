//! XEP-0156 connection discovery for web clients: `/.well-known/host-meta`
//! (XRD) and `/.well-known/host-meta.json` (JRD) name the WebSocket
//! endpoint (RFC 7395). The URL is `http.websocket_url` when configured,
//! else `wss://` and the request's `Host` header (checked to be a host
//! name or address with an optional port, so nothing else is reflected).
//! Nothing is announced when WebSocket is off.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_core::config::HttpConfig;

/// The link relation of an XMPP-over-WebSocket endpoint.
pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";

/// The WebSocket URL to announce for this request, if any.
pub fn websocket_url(http: &HttpConfig, headers: &HeaderMap) -> Option<String> {
    if !http.websocket {
        return None;
    }
    if let Some(u) = &http.websocket_url {
        return Some(u.clone());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plausible = !host.is_empty()
        && host.len() <= 261
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plausible.then(|| format!("wss://{host}/xmpp-websocket"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The XRD document (`host-meta`).
pub fn xrd(url: Option<&str>) -> String {
    let link = url
        .map(|u| format!("  <Link rel=\"{REL_WEBSOCKET}\" href=\"{}\"/>\n", escape(u)))
        .unwrap_or_default();
    format!(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n{link}</XRD>\n"
    )
}

/// The JRD document (`host-meta.json`).
pub fn jrd(url: Option<&str>) -> serde_json::Value {
    let links: Vec<serde_json::Value> = url
        .map(|u| serde_json::json!({ "rel": REL_WEBSOCKET, "href": u }))
        .into_iter()
        .collect();
    serde_json::json!({ "links": links })
}

/// A discovery document with the headers browsers need to read it from a
/// web client served elsewhere (XEP-0156 recommends CORS).
pub fn respond(body: String, content_type: &'static str, derived: bool) -> Response {
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    if derived {
        h.insert(header::VARY, header::HeaderValue::from_static("Host"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, h.parse().expect("header"));
        m
    }

    #[test]
    fn the_url_comes_from_the_config_or_a_plausible_host() {
        let mut http = HttpConfig::default();
        assert_eq!(
            websocket_url(&http, &with_host("chat.example.com:8443")).as_deref(),
            Some("wss://chat.example.com:8443/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(&http, &with_host("[::1]:15202")).as_deref(),
            Some("wss://[::1]:15202/xmpp-websocket")
        );
        for bad in ["evil.com/phish?", "a b", "x\"><script>"] {
            if let Ok(v) = bad.parse() {
                let mut m = HeaderMap::new();
                m.insert(header::HOST, v);
                assert_eq!(websocket_url(&http, &m), None, "{bad}");
            }
        }
        assert_eq!(websocket_url(&http, &HeaderMap::new()), None);
        http.websocket_url = Some("wss://xmpp.example.com/ws".into());
        assert_eq!(
            websocket_url(&http, &with_host("other")).as_deref(),
            Some("wss://xmpp.example.com/ws")
        );
        http.websocket = false;
        assert_eq!(websocket_url(&http, &with_host("other")), None);
    }

    #[test]
    fn both_documents_carry_the_link_escaped() {
        let x = xrd(Some("wss://h/ws?a=1&b='2'"));
        assert!(x.contains("href=\"wss://h/ws?a=1&amp;b=&apos;2&apos;\""), "{x}");
        assert!(x.contains(REL_WEBSOCKET));
        assert!(!xrd(None).contains("<Link"));
        assert_eq!(jrd(Some("wss://h/ws"))["links"][0]["href"], "wss://h/ws");
        assert_eq!(jrd(None)["links"].as_array().map(Vec::len), Some(0));
    }
}
