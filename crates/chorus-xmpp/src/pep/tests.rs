//! The PEP model: defaults, forms, publish-options preconditions.

use super::*;

fn form(fields: &[(&str, &str)]) -> Element {
    let mut x = xml::new("x", ns::DATA).with_attr("type", "submit");
    for (var, val) in fields {
        x.append_child(
            xml::new("field", ns::DATA)
                .with_attr("var", *var)
                .with_child(xml::new("value", ns::DATA).with_text(*val)),
        );
    }
    x
}

#[test]
fn plain_publish_defaults_and_e2e_nodes() {
    let avatar = NodeConfig::default_for(ns::AVATAR_METADATA, 1000);
    assert_eq!(avatar.access_model, AccessModel::Presence);
    assert_eq!(avatar.max_items, 1);
    assert_eq!(
        NodeConfig::default_for("eu.siacs.conversations.axolotl.devicelist", 1000).access_model,
        AccessModel::Open
    );
    assert!(is_e2e_node("eu.siacs.conversations.axolotl.bundles:1234"));
    assert!(is_e2e_node("urn:xmpp:omemo:2:bundles"));
    assert!(!is_e2e_node(ns::BOOKMARKS2));
}

#[test]
fn bookmarks_options_apply_and_are_then_satisfied() {
    let x = form(&[
        ("FORM_TYPE", ns::PUBSUB_PUBLISH_OPTIONS),
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ]);
    assert!(
        satisfies(&NodeConfig::default_for(ns::BOOKMARKS2, 1000), &x, 1000),
        "bookmarks are private by default"
    );
    let mut cfg = NodeConfig::default_for("urn:x", 1000);
    assert!(!satisfies(&cfg, &x, 1000));
    apply_form(&mut cfg, &x, 1000).expect("valid form");
    assert_eq!(cfg.max_items, 1000);
    assert_eq!(cfg.access_model, AccessModel::Whitelist);
    assert_eq!(cfg.send_last_published_item, SendLast::Never);
    assert!(satisfies(&cfg, &x, 1000));
}

#[test]
fn bad_values_are_refused() {
    let mut cfg = NodeConfig::default_for("urn:x", 1000);
    for (var, val) in [
        ("pubsub#access_model", "authorize"),
        ("pubsub#max_items", "0"),
        ("pubsub#max_items", "1001"),
        ("pubsub#max_items", "-1"),
        ("pubsub#persist_items", "maybe"),
    ] {
        assert_eq!(
            apply_form(&mut cfg, &form(&[(var, val)]), 1000),
            Err(FormError::BadValue(var.into())),
            "{var}={val}"
        );
    }
}

#[test]
fn the_config_form_round_trips() {
    let mut cfg = NodeConfig::default_for("urn:x", 1000);
    cfg.access_model = AccessModel::Open;
    cfg.max_items = 7;
    let shown = config_form(&cfg, "form");
    let mut back = NodeConfig::default_for("urn:x", 1000);
    apply_form(&mut back, &shown, 1000).expect("own form applies");
    assert_eq!(back, cfg);
}

#[test]
fn items_order_by_time_then_id_and_skip_garbage() {
    let item = |t: u64| {
        serde_json::to_string(&StoredItem {
            stamp_ms: t,
            xml: String::new(),
        })
        .expect("json")
    };
    let got = ordered(vec![
        ("b".into(), item(5)),
        ("a".into(), item(5)),
        ("c".into(), item(1)),
        ("bad".into(), "{".into()),
    ]);
    let ids: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids, ["c", "a", "b"]);
}

#[test]
fn encrypted_payloads_are_recognized() {
    for (name, n) in [
        ("encrypted", ns::OMEMO_LEGACY),
        ("encrypted", ns::OMEMO),
        ("openpgp", ns::OPENPGP),
        ("x", ns::OPENPGP_LEGACY),
    ] {
        let m = xml::new("message", ns::CLIENT).with_child(xml::new(name, n));
        assert!(is_encrypted_message(&m), "{n}");
    }
    let plain = xml::new("message", ns::CLIENT).with_child(xml::new("body", ns::CLIENT));
    assert!(!is_encrypted_message(&plain));
}
