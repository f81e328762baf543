//! `[directory]`: an LDAP server (OpenLDAP or Active Directory) whose
//! people are accounts of the domain. Off unless `url` is set.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[directory]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldaps://host:636` or `ldap://host:389` (then `starttls` is
    /// required); unset, there is no directory.
    pub url: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// CA certificates (PEM) that sign the directory server's certificate;
    /// unset, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The DN the node binds as to read the directory.
    pub bind_dn: String,
    /// A file holding that DN's password (one line).
    pub bind_password_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    pub bind_password_env: Option<String>,
    /// Where people are.
    pub user_base: String,
    /// Which entries are people.
    pub user_filter: String,
    /// Entries matching this filter (within `user_filter`) are disabled:
    /// they cannot log in and their sessions end. For Active Directory:
    /// `(userAccountControl:1.2.840.113556.1.4.803:=2)`.
    pub disabled_filter: Option<String>,
    /// The attribute holding the account name (`uid`; `sAMAccountName` or
    /// `userPrincipalName` for Active Directory: a value with `@` gives the
    /// part before it).
    pub attr_uid: String,
    /// Display name.
    pub attr_name: String,
    /// E-mail.
    pub attr_mail: String,
    /// Job title.
    pub attr_title: String,
    /// Department.
    pub attr_department: String,
    /// Office or site.
    pub attr_office: String,
    /// Manager (a DN).
    pub attr_manager: String,
    /// Telephone.
    pub attr_phone: String,
    /// Skills (multi-valued).
    pub attr_skills: String,
    /// The photo (`jpegPhoto`; `thumbnailPhoto` for Active Directory),
    /// shown as the vCard avatar. Empty: no photos (a synchronization
    /// holds every photo in memory while it runs).
    pub attr_photo: String,
    /// Where groups are; each one found becomes a shared roster group
    /// (empty: no directory groups).
    pub group_base: String,
    /// Which entries are groups.
    pub group_filter: String,
    /// The attribute holding a group's name (the roster group members see).
    pub attr_group_name: String,
    /// The attribute listing a group's members: DNs of people or of nested
    /// groups (`member`, `uniqueMember`), or account names (`memberUid`).
    /// Active Directory's range retrieval (over 1,500 members) is followed.
    pub attr_member: String,
    /// An attribute of people listing the groups they belong to (Active
    /// Directory's `memberOf`), added to what groups list; empty: off.
    pub attr_member_of: String,
    /// Seconds between synchronizations.
    pub sync_interval_secs: u64,
    /// Seconds a search or bind may take.
    pub timeout_secs: u64,
    /// Entries read at most (a bound on memory).
    pub entries_max: usize,
    /// Hours a person who logged in keeps logging in with the same password
    /// while the directory cannot be reached (0: never without it).
    pub login_grace_hours: u64,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            url: None,
            starttls: false,
            ca_file: None,
            bind_dn: String::new(),
            bind_password_file: None,
            bind_password_env: None,
            user_base: String::new(),
            user_filter: "(objectClass=inetOrgPerson)".into(),
            disabled_filter: None,
            attr_uid: "uid".into(),
            attr_name: "cn".into(),
            attr_mail: "mail".into(),
            attr_title: "title".into(),
            attr_department: "departmentNumber".into(),
            attr_office: "physicalDeliveryOfficeName".into(),
            attr_manager: "manager".into(),
            attr_phone: "telephoneNumber".into(),
            attr_skills: "description".into(),
            attr_photo: String::new(),
            group_base: String::new(),
            group_filter: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group)(objectClass=posixGroup))".into(),
            attr_group_name: "cn".into(),
            attr_member: "member".into(),
            attr_member_of: String::new(),
            sync_interval_secs: 300,
            timeout_secs: 10,
            entries_max: 500_000,
            login_grace_hours: 24,
        }
    }
}

impl DirectoryConfig {
    /// Checks the values (the caller names the key in its error).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let Some(url) = &self.url else { return Ok(()) };
        if !(url.starts_with("ldaps://") || url.starts_with("ldap://")) {
            return Err((
                "directory.url",
                format!("{url:?} is not an ldaps:// or ldap:// URL"),
            ));
        }
        if url.starts_with("ldap://") && !self.starttls {
            return Err((
                "directory.starttls",
                "an ldap:// directory needs starttls = true: passwords never cross the network in the clear"
                    .into(),
            ));
        }
        if self.user_base.trim().is_empty() {
            return Err(("directory.user_base", "say where people are".into()));
        }
        if self.bind_password_file.is_none() && self.bind_password_env.is_none() && !self.bind_dn.is_empty() {
            return Err((
                "directory.bind_password_file",
                "give bind_password_file or bind_password_env for bind_dn".into(),
            ));
        }
        for (key, v) in [
            ("directory.sync_interval_secs", self.sync_interval_secs),
            ("directory.timeout_secs", self.timeout_secs),
            ("directory.entries_max", self.entries_max as u64),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// `[[shared_groups]]`: a shared roster group defined in the configuration
/// (every node's configuration should list the same ones).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedGroupConfig {
    /// The roster group name members see.
    pub name: String,
    /// Its members' account names.
    pub members: Vec<String>,
}

/// Members one configured group may list.
const CONFIG_GROUP_MEMBERS_MAX: usize = 100_000;

/// Checks `[[shared_groups]]`.
pub(super) fn validate_groups(groups: &[SharedGroupConfig]) -> Result<(), (&'static str, String)> {
    for g in groups {
        if g.name.trim().is_empty() || g.name.len() > 1024 {
            return Err((
                "shared_groups.name",
                format!("{:?} is not a group name (1 to 1,024 bytes)", g.name),
            ));
        }
        if g.members.len() > CONFIG_GROUP_MEMBERS_MAX {
            return Err((
                "shared_groups.members",
                format!("{:?} lists over {CONFIG_GROUP_MEMBERS_MAX} members", g.name),
            ));
        }
        if let Some(m) = g.members.iter().find(|m| jid::NodePart::new(m).is_err()) {
            return Err((
                "shared_groups.members",
                format!("{m:?} (in {:?}) is not an account name", g.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> DirectoryConfig {
        DirectoryConfig {
            url: Some(url.into()),
            user_base: "ou=people,dc=example,dc=com".into(),
            ..DirectoryConfig::default()
        }
    }

    #[test]
    fn plain_ldap_without_starttls_and_missing_pieces_are_refused() {
        assert!(DirectoryConfig::default().validate().is_ok(), "off by default");
        assert!(with_url("ldaps://ldap.example.com").validate().is_ok());
        let clear = with_url("ldap://ldap.example.com")
            .validate()
            .expect_err("clear text");
        assert_eq!(clear.0, "directory.starttls");
        let ok = DirectoryConfig {
            starttls: true,
            ..with_url("ldap://ldap.example.com")
        };
        assert!(ok.validate().is_ok());
        assert_eq!(
            with_url("http://x").validate().expect_err("scheme").0,
            "directory.url"
        );
        let no_pw = DirectoryConfig {
            bind_dn: "cn=chorus".into(),
            ..with_url("ldaps://x")
        };
        assert_eq!(
            no_pw.validate().expect_err("password").0,
            "directory.bind_password_file"
        );
    }
}
