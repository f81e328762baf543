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
/// XEP-0440 SASL channel-binding type capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
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
/// XEP-0215 external service discovery.
pub const EXTDISCO: &str = "urn:xmpp:extdisco:2";
/// XEP-0410: the room answers an occupant's self-ping itself.
pub const MUC_SELF_PING_OPTIMIZATION: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
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
/// XEP-0055 Jabber Search.
pub const SEARCH: &str = "jabber:iq:search";
/// Chorus-internal signals between nodes (never sent to clients).
pub const CHORUS_CLUSTER: &str = "urn:xmpp:chorus:cluster:0";
/// XEP-0359 unique and stable stanza ids.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0313 message archive management.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0313 extended queries (ids, before-id, after-id).
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0059 result set management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0431 full-text search in MAM.
pub const FULLTEXT: &str = "urn:xmpp:fulltext:0";
/// XEP-0045 multi-user chat (join).
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 occupant data.
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0045 moderator and admin use cases.
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0045 owner use cases.
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0045 room configuration form type.
pub const MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// XEP-0045 room information form type.
pub const MUC_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0249 direct invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
/// XEP-0122 data forms validation.
pub const XDATA_VALIDATE: &str = "http://jabber.org/protocol/xdata-validate";
/// XEP-0308: Last Message Correction.
pub const MESSAGE_CORRECT: &str = "urn:xmpp:message-correct:0";
/// XEP-0424: Message Retraction (1.0).
pub const MESSAGE_RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0424 before 0.4, as a XEP-0422 fastening.
pub const MESSAGE_RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// XEP-0422: Message Fastening.
pub const FASTEN: &str = "urn:xmpp:fasten:0";
/// XEP-0060 publish-subscribe (the subset PEP needs).
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 owner use cases (configure, delete).
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 event notifications.
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 errors.
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0060 node configuration form type.
pub const PUBSUB_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// XEP-0060 publish-options form type.
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// XEP-0115 entity capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0049 private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0048 bookmarks (as kept in private XML storage).
pub const BOOKMARKS_LEGACY: &str = "storage:bookmarks";
/// XEP-0402 PEP native bookmarks.
pub const BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";
/// XEP-0402: the server keeps XEP-0049 bookmarks in step.
pub const BOOKMARKS2_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0402: the server keeps XEP-0048 bookmarks in PEP in step.
pub const BOOKMARKS2_COMPAT_PEP: &str = "urn:xmpp:bookmarks:1#compat-pep";
/// XEP-0084 avatar data.
pub const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
/// XEP-0084 avatar metadata.
pub const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0153 vCard-based avatar hash in presence.
pub const VCARD_UPDATE: &str = "vcard-temp:x:update";
/// XEP-0398 PEP avatar to vCard conversion.
pub const PEP_VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
/// XEP-0172 user nickname.
pub const NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0012 last activity.
pub const LAST: &str = "jabber:iq:last";
/// XEP-0384 OMEMO (legacy Conversations namespace, 0.3).
pub const OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
/// XEP-0384 OMEMO 2.
pub const OMEMO: &str = "urn:xmpp:omemo:2";
/// XEP-0373 OpenPGP for XMPP.
pub const OPENPGP: &str = "urn:xmpp:openpgp:0";
/// XEP-0027 legacy OpenPGP.
pub const OPENPGP_LEGACY: &str = "jabber:x:encrypted";
/// Chorus's application error conditions for compliance policy refusals.
pub const CHORUS_POLICY: &str = "urn:xmpp:chorus:policy:0";
/// XEP-0380 explicit message encryption.
pub const EME: &str = "urn:xmpp:eme:0";
