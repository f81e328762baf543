"""XML names and stanza inspection for the e2e tests, without slixmpp: the
namespaces the tests use and pure helpers over ElementTree elements and JID
strings. ``xmpp.py`` re-exports all of them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

NS_CLIENT = "jabber:client"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_ROSTER = "jabber:iq:roster"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_VCARD = "vcard-temp"
NS_BLOCKING = "urn:xmpp:blocking"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_REGISTER = "jabber:iq:register"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def localname(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def condition_of(error_el: ET.Element | None, ns: str) -> str | None:
    """The defined-condition child name of an <error/> element, if any."""
    if error_el is None:
        return None
    for child in error_el:
        if namespace(child.tag) == ns and localname(child.tag) != "text":
            return localname(child.tag)
    return None


def stanza_error_condition(xml: ET.Element) -> str | None:
    """Condition of a stanza-level error (<message type='error'> etc.)."""
    return condition_of(xml.find(f"{{{NS_CLIENT}}}error"), NS_STANZAS)


def bare(jid: str) -> str:
    return str(jid).split("/", 1)[0]


def jid_matches(actual, wanted: str | None) -> bool:
    """Full-JID comparison if ``wanted`` has a resource, else bare."""
    if wanted is None:
        return True
    actual = str(actual)
    if "/" in wanted:
        return actual == wanted
    return bare(actual) == wanted


def parse_roster(iq_xml: ET.Element) -> dict[str, dict]:
    items: dict[str, dict] = {}
    q = iq_xml.find(f"{{{NS_ROSTER}}}query")
    if q is None:
        return items
    for it in q.findall(f"{{{NS_ROSTER}}}item"):
        items[it.get("jid")] = {
            "subscription": it.get("subscription", "none"),
            "ask": it.get("ask"),
            "name": it.get("name"),
            "groups": sorted((g.text or "") for g in it.findall(f"{{{NS_ROSTER}}}group")),
        }
    return items
