//! The room configuration form (`muc#roomconfig`): rendered from a
//! room's configuration and applied from a submitted form.

use super::*;

/// The owner's configuration form, filled with the current values.
pub(super) fn config_form(cfg: &RoomConfig) -> Element {
    let field = |var: &str, typ: &str, label: &str, value: String| {
        xml::new("field", ns::DATA)
            .with_attr("var", var)
            .with_attr("type", typ)
            .with_attr("label", label)
            .with_child(xml::new("value", ns::DATA).with_text(value))
    };
    let b = |v: bool| if v { "1" } else { "0" }.to_owned();
    let whois = xml::new("field", ns::DATA)
        .with_attr("var", "muc#roomconfig_whois")
        .with_attr("type", "list-single")
        .with_attr("label", "Who may discover real JIDs")
        .with_child(xml::new("value", ns::DATA).with_text(if cfg.non_anonymous {
            "anyone"
        } else {
            "moderators"
        }))
        .with_child(
            xml::new("option", ns::DATA)
                .with_attr("label", "Anyone")
                .with_child(xml::new("value", ns::DATA).with_text("anyone")),
        )
        .with_child(
            xml::new("option", ns::DATA)
                .with_attr("label", "Moderators")
                .with_child(xml::new("value", ns::DATA).with_text("moderators")),
        );
    xml::new("x", ns::DATA)
        .with_attr("type", "form")
        .with_child(field("FORM_TYPE", "hidden", "", ns::MUC_ROOMCONFIG.to_owned()))
        .with_child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Name",
            cfg.name.clone(),
        ))
        .with_child(field(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            cfg.description.clone(),
        ))
        .with_child(field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent",
            b(cfg.persistent),
        ))
        .with_child(field(
            "muc#roomconfig_publicroom",
            "boolean",
            "Listed",
            b(cfg.public),
        ))
        .with_child(field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only",
            b(cfg.members_only),
        ))
        .with_child(field(
            "muc#roomconfig_moderatedroom",
            "boolean",
            "Moderated",
            b(cfg.moderated),
        ))
        .with_child(field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password protected",
            b(cfg.password.is_some()),
        ))
        .with_child(field(
            "muc#roomconfig_roomsecret",
            "text-private",
            "Password",
            cfg.password.clone().unwrap_or_default(),
        ))
        .with_child(field(
            "muc#roomconfig_maxusers",
            "text-single",
            "Maximum occupants",
            cfg.max_users.to_string(),
        ))
        .with_child(whois)
        .with_child(field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Occupants may change the subject",
            b(cfg.change_subject),
        ))
        .with_child(field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite",
            b(cfg.allow_invites),
        ))
        .with_child(field(
            "muc#roomconfig_enablelogging",
            "boolean",
            "Archived (always, for compliance)",
            "1".into(),
        ))
}

/// Applies a submitted configuration form; an unknown field or a bad value
/// is an error condition.
pub(super) fn apply_form(
    cfg: &mut RoomConfig,
    form: &Element,
    occupants_max: usize,
) -> Result<(), &'static str> {
    let mut password_on = cfg.password.is_some();
    let mut secret = cfg.password.clone();
    for f in form.children().filter(|c| c.is("field", ns::DATA)) {
        let v = f
            .get_child("value", ns::DATA)
            .map(|v| v.text())
            .unwrap_or_default();
        let flag = || match v.as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err("bad-request"),
        };
        match f.attr("var").unwrap_or_default() {
            "FORM_TYPE" => {}
            "muc#roomconfig_roomname" => cfg.name = v,
            "muc#roomconfig_roomdesc" => cfg.description = v,
            "muc#roomconfig_persistentroom" => cfg.persistent = flag()?,
            "muc#roomconfig_publicroom" => cfg.public = flag()?,
            "muc#roomconfig_membersonly" => cfg.members_only = flag()?,
            "muc#roomconfig_moderatedroom" => cfg.moderated = flag()?,
            "muc#roomconfig_passwordprotectedroom" => password_on = flag()?,
            "muc#roomconfig_roomsecret" => secret = Some(v).filter(|s| !s.is_empty()),
            "muc#roomconfig_maxusers" => {
                cfg.max_users = v
                    .parse::<usize>()
                    .map_err(|_| "bad-request")?
                    .clamp(1, occupants_max)
            }
            "muc#roomconfig_whois" => cfg.non_anonymous = v == "anyone",
            "muc#roomconfig_changesubject" => cfg.change_subject = flag()?,
            "muc#roomconfig_allowinvites" => cfg.allow_invites = flag()?,
            "muc#roomconfig_enablelogging" => {}
            _ => return Err("bad-request"),
        }
    }
    cfg.password = if password_on { secret } else { None };
    if password_on && cfg.password.is_none() {
        return Err("not-acceptable");
    }
    Ok(())
}
