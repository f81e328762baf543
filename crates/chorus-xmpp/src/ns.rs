//! XML namespaces used by the c2s protocol and the XEPs Chorus implements.

/// RFC 6120 client namespace.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 stream namespace.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// Stream error conditions.
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921), answered for old clients.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 7395 WebSocket framing.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// Roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// Roster versioning stream feature.
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// Subscription pre-approval stream feature.
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0030.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0202.
pub const TIME: &str = "urn:xmpp:time";
/// XEP-0054.
pub const VCARD: &str = "vcard-temp";
/// XEP-0191.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191 error payload.
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0280.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0198.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352.
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0203.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0077.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077 stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0004 data forms.
pub const DATA: &str = "jabber:x:data";
/// Chorus-internal signals between nodes (never sent to clients).
pub const CHORUS_CLUSTER: &str = "urn:xmpp:chorus:cluster:0";
/// XEP-0359 unique and stable stanza ids.
pub const SID: &str = "urn:xmpp:sid:0";
