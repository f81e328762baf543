//! The PEP model (XEP-0163 on the XEP-0060 subset it needs): a node's
//! configuration, a stored item, who may read a node, and the data forms
//! that show and change a configuration (`publish-options`, `configure`).
//!
//! Nodes and items are replicated like rosters (one LWW register per node
//! and per item), so a user's avatar and bookmarks follow them to any
//! site. This module is pure: the session reads and writes the store.

use crate::ns;
use crate::xml::{self, ElementExt};
use minidom::Element;
use serde::{Deserialize, Serialize};

/// Who may read a node and receive its notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessModel {
    /// Contacts subscribed to the owner's presence (the PEP default).
    Presence,
    /// Any account of the domain.
    Open,
    /// Only the owner.
    Whitelist,
}

impl AccessModel {
    fn parse(s: &str) -> Option<AccessModel> {
        match s {
            "presence" => Some(AccessModel::Presence),
            "open" => Some(AccessModel::Open),
            "whitelist" => Some(AccessModel::Whitelist),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AccessModel::Presence => "presence",
            AccessModel::Open => "open",
            AccessModel::Whitelist => "whitelist",
        }
    }
}

/// When the last item goes to a contact who comes online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    /// Whenever the contact sends available presence (the PEP default).
    OnSubAndPresence,
    /// Never (bookmarks: clients fetch them).
    Never,
}

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Who may read it.
    pub access_model: AccessModel,
    /// Whether items are kept at all (false: notifications only).
    pub persist_items: bool,
    /// Items kept; the oldest go first.
    pub max_items: usize,
    /// Last-item delivery on presence.
    pub send_last_published_item: SendLast,
    /// Whether retractions are notified.
    pub notify_retract: bool,
}

impl NodeConfig {
    /// The configuration of a node created by a plain publish; `items_max`
    /// is the node bound.
    pub fn default_for(node: &str, items_max: usize) -> NodeConfig {
        if is_private_node(node) {
            // Bookmarks (room passwords among them) stay the owner's, and
            // keep every item, even when a client publishes without
            // options.
            return NodeConfig {
                access_model: AccessModel::Whitelist,
                persist_items: true,
                max_items: items_max,
                send_last_published_item: SendLast::Never,
                notify_retract: true,
            };
        }
        // Keys must be readable by anyone who wants to write to the user.
        NodeConfig {
            access_model: if is_e2e_node(node) {
                AccessModel::Open
            } else {
                AccessModel::Presence
            },
            persist_items: true,
            max_items: 1,
            send_last_published_item: SendLast::OnSubAndPresence,
            notify_retract: true,
        }
    }
}

/// One stored item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredItem {
    /// When it was published, in milliseconds since the epoch (ordering).
    pub stamp_ms: u64,
    /// The payload, serialized.
    pub xml: String,
}

/// Why a form could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// A field has a value Chorus does not accept (`not-acceptable`).
    BadValue(String),
}

/// The fields of a data form: (var, values).
pub fn form_fields(x: &Element) -> Vec<(String, Vec<String>)> {
    x.children()
        .filter(|f| f.is("field", ns::DATA))
        .filter_map(|f| {
            let vals = f
                .children()
                .filter(|v| v.is("value", ns::DATA))
                .map(|v| v.text())
                .collect();
            f.attr("var").map(|v| (v.to_owned(), vals))
        })
        .collect()
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Applies a `configure` or `publish-options` form to `cfg`; fields
/// Chorus does not know are left alone. `items_max` is the node bound
/// (`max` means it).
pub fn apply_form(cfg: &mut NodeConfig, x: &Element, items_max: usize) -> Result<(), FormError> {
    for (var, vals) in form_fields(x) {
        let v = vals.first().map(String::as_str).unwrap_or_default();
        let bad = || FormError::BadValue(var.clone());
        match var.as_str() {
            "pubsub#access_model" => cfg.access_model = AccessModel::parse(v).ok_or_else(bad)?,
            "pubsub#persist_items" => cfg.persist_items = boolean(v).ok_or_else(bad)?,
            "pubsub#notify_retract" => cfg.notify_retract = boolean(v).ok_or_else(bad)?,
            "pubsub#max_items" if v == "max" => cfg.max_items = items_max,
            "pubsub#max_items" => {
                let n: usize = v.parse().map_err(|_| bad())?;
                if n == 0 || n > items_max {
                    return Err(bad());
                }
                cfg.max_items = n;
            }
            "pubsub#send_last_published_item" => {
                cfg.send_last_published_item = match v {
                    "never" => SendLast::Never,
                    "on_sub" | "on_sub_and_presence" => SendLast::OnSubAndPresence,
                    _ => return Err(bad()),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether an existing node satisfies `publish-options` (XEP-0060
/// section 7.1.5): every option it states must equal the node's value.
pub fn satisfies(cfg: &NodeConfig, x: &Element, items_max: usize) -> bool {
    let mut wanted = cfg.clone();
    apply_form(&mut wanted, x, items_max).is_ok() && wanted == *cfg
}

/// The node configuration form (XEP-0060 section 8.2).
pub fn config_form(cfg: &NodeConfig, kind: &str) -> Element {
    let field = |var: &str, typ: &str, value: String| {
        xml::new("field", ns::DATA)
            .with_attr("var", var)
            .with_attr("type", typ)
            .with_child(xml::new("value", ns::DATA).with_text(value))
    };
    let mut access = field(
        "pubsub#access_model",
        "list-single",
        cfg.access_model.as_str().into(),
    );
    for m in ["presence", "open", "whitelist"] {
        access
            .append_child(xml::new("option", ns::DATA).with_child(xml::new("value", ns::DATA).with_text(m)));
    }
    let send_last = match cfg.send_last_published_item {
        SendLast::Never => "never",
        SendLast::OnSubAndPresence => "on_sub_and_presence",
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    xml::new("x", ns::DATA)
        .with_attr("type", kind)
        .with_child(field("FORM_TYPE", "hidden", ns::PUBSUB_NODE_CONFIG.into()))
        .with_child(access)
        .with_child(field("pubsub#persist_items", "boolean", flag(cfg.persist_items)))
        .with_child(field(
            "pubsub#max_items",
            "text-single",
            cfg.max_items.to_string(),
        ))
        .with_child(field(
            "pubsub#send_last_published_item",
            "list-single",
            send_last.into(),
        ))
        .with_child(field(
            "pubsub#notify_retract",
            "boolean",
            flag(cfg.notify_retract),
        ))
        .with_child(field("pubsub#deliver_payloads", "boolean", "1".into()))
}

/// Whether a node holds the owner's private data (XEP-0402 bookmarks and
/// the XEP-0048 ones kept in PEP).
pub fn is_private_node(node: &str) -> bool {
    node == ns::BOOKMARKS2 || node == ns::BOOKMARKS_LEGACY
}

/// Whether a node carries end-to-end encryption keys (XEP-0384 OMEMO,
/// XEP-0373 OpenPGP), refused under `policy.e2e = "deny"`.
pub fn is_e2e_node(node: &str) -> bool {
    node == "eu.siacs.conversations.axolotl.devicelist"
        || node.starts_with("eu.siacs.conversations.axolotl.bundles")
        || node.starts_with("urn:xmpp:omemo:")
        || node.starts_with("urn:xmpp:openpgp:")
}

/// Whether a message carries an end-to-end encrypted payload.
pub fn is_encrypted_message(msg: &Element) -> bool {
    msg.has_child("encrypted", ns::OMEMO_LEGACY)
        || msg.has_child("encrypted", ns::OMEMO)
        || msg.has_child("openpgp", ns::OPENPGP)
        || msg.has_child("x", ns::OPENPGP_LEGACY)
}

/// Items in publication order (oldest first), ties broken by id.
pub fn ordered(items: Vec<(String, String)>) -> Vec<(String, StoredItem)> {
    let mut out: Vec<(String, StoredItem)> = items
        .into_iter()
        .filter_map(|(id, json)| match serde_json::from_str(&json) {
            Ok(i) => Some((id, i)),
            Err(e) => {
                tracing::error!(item = %id, error = %e, "dropping undecodable PEP item");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| (a.1.stamp_ms, &a.0).cmp(&(b.1.stamp_ms, &b.0)));
    out
}

#[cfg(test)]
mod tests;
