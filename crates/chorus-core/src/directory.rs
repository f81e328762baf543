//! The seam to an enterprise directory (LDAP or Active Directory): its
//! people, how a directory person's password is checked (by the directory,
//! never here), and the people finder's search. `chorus-directory`
//! implements [`People`]; the XMPP layer uses it for logins and for
//! XEP-0055 searches.
//!
//! A directory person is also a local account (so everything that asks
//! whether an account exists works unchanged) whose stored SCRAM keys are
//! random: no password matches them, so such an account logs in only with
//! PLAIN over TLS, checked by the directory. The account carries
//! [`DIRECTORY_DN_SETTING`]; a person the directory disables or removes
//! gets [`DIRECTORY_DISABLED_SETTING`].

use serde::{Deserialize, Serialize};

/// The per-user setting naming the directory entry (DN) behind an account.
pub const DIRECTORY_DN_SETTING: &str = "account.directory_dn";

/// The namespace of the element a directory account's vCard carries to
/// list the fields the directory owns (`<read-only><field>FN</field>…`):
/// a client's vCard update keeps the directory's values of those.
pub const VCARD_READ_ONLY_NS: &str = "urn:chorus:directory:0";

/// The per-user setting the directory sync sets to `"1"` for a person the
/// directory disabled or no longer lists (apart from an admin's own
/// [`crate::store::DISABLED_SETTING`], so either can disable).
pub const DIRECTORY_DISABLED_SETTING: &str = "account.directory_disabled";

/// Whether `s` is an account name as it is stored: a valid localpart,
/// already in its normalized (nodeprep) form.
pub fn is_account_name(s: &str) -> bool {
    jid::NodePart::new(s).is_ok_and(|n| n.as_str() == s)
}

/// One person of the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The account name (localpart).
    pub uid: String,
    /// The entry's DN.
    pub dn: String,
    /// Display name.
    pub name: String,
    /// E-mail.
    pub mail: String,
    /// Job title.
    pub title: String,
    /// Department.
    pub department: String,
    /// Office or site.
    pub office: String,
    /// The manager's name (resolved from the manager's DN when known).
    pub manager: String,
    /// Telephone.
    pub phone: String,
    /// Skills.
    pub skills: Vec<String>,
    /// Whether the directory disables the person.
    pub disabled: bool,
    /// The photo (JPEG or PNG bytes; empty without `attr_photo`). Only the
    /// synchronization holds it: the index drops it.
    #[serde(skip)]
    pub photo: Vec<u8>,
    /// DNs of the groups the entry says it belongs to (`attr_member_of`;
    /// only the synchronization holds them).
    #[serde(skip)]
    pub member_of: Vec<String>,
}

/// A people-finder search: every field given must match (case-insensitive
/// substring; skills: any skill).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeopleQuery {
    /// Name.
    pub name: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Office.
    pub office: Option<String>,
    /// A skill.
    pub skill: Option<String>,
    /// Manager's name.
    pub manager: Option<String>,
}

impl PeopleQuery {
    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        [
            &self.name,
            &self.department,
            &self.title,
            &self.office,
            &self.skill,
            &self.manager,
        ]
        .iter()
        .all(|f| f.as_deref().is_none_or(|s| s.trim().is_empty()))
    }

    /// The query trimmed and lower-cased, empty fields dropped (once per
    /// search, for [`PeopleQuery::matches_lowered`]).
    pub fn lowercased(&self) -> PeopleQuery {
        let l = |f: &Option<String>| {
            f.as_deref()
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
        };
        PeopleQuery {
            name: l(&self.name),
            department: l(&self.department),
            title: l(&self.title),
            office: l(&self.office),
            skill: l(&self.skill),
            manager: l(&self.manager),
        }
    }

    /// Whether `p` matches.
    pub fn matches(&self, p: &Person) -> bool {
        self.lowercased().matches_lowered(&p.lowercased())
    }

    /// Whether `p` matches, both already lower-cased (no allocation: the
    /// index compares a hundred thousand people per search this way).
    pub fn matches_lowered(&self, p: &Person) -> bool {
        let has = |field: &str, want: &Option<String>| want.as_deref().is_none_or(|w| field.contains(w));
        let skill = self
            .skill
            .as_deref()
            .is_none_or(|w| p.skills.iter().any(|s| s.contains(w)));
        !p.disabled
            && has(&p.name, &self.name)
            && has(&p.department, &self.department)
            && has(&p.title, &self.title)
            && has(&p.office, &self.office)
            && has(&p.manager, &self.manager)
            && skill
    }
}

impl Person {
    /// The person with every searchable field lower-cased.
    pub fn lowercased(&self) -> Person {
        Person {
            uid: self.uid.clone(),
            dn: String::new(),
            name: self.name.to_lowercase(),
            mail: self.mail.to_lowercase(),
            title: self.title.to_lowercase(),
            department: self.department.to_lowercase(),
            office: self.office.to_lowercase(),
            manager: self.manager.to_lowercase(),
            phone: String::new(),
            skills: self.skills.iter().map(|s| s.to_lowercase()).collect(),
            disabled: self.disabled,
            photo: Vec::new(),
            member_of: Vec::new(),
        }
    }
}

/// An enterprise directory.
pub trait People: Send + Sync + 'static {
    /// Checks a directory person's password by asking the directory; may
    /// block on the network (the caller runs it off the async workers).
    /// `None`: `user` is not a person of the directory.
    fn check_password(&self, user: &str, password: &str) -> Option<bool>;
    /// People matching `q`, at most `max`, by name.
    fn search(&self, q: &PeopleQuery, max: usize) -> Vec<Person>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_matches_substrings_any_skill_and_never_the_disabled() {
        let p = Person {
            uid: "ada".into(),
            name: "Ada Lovelace".into(),
            department: "Research".into(),
            skills: vec!["Rust".into(), "Analytical engines".into()],
            ..Person::default()
        };
        let q = |f: fn(&mut PeopleQuery)| {
            let mut q = PeopleQuery::default();
            f(&mut q);
            q
        };
        assert!(q(|q| q.name = Some("love".into())).matches(&p));
        assert!(q(|q| q.skill = Some("engine".into())).matches(&p));
        assert!(!q(|q| q.department = Some("sales".into())).matches(&p));
        assert!(PeopleQuery::default().is_empty());
        let gone = Person { disabled: true, ..p };
        assert!(!q(|q| q.name = Some("ada".into())).matches(&gone));
    }
}
