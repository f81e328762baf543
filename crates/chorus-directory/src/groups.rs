//! Directory groups as shared roster groups: every entry under
//! `group_base` matching `group_filter` is read with its members
//! (`attr_member`), following Active Directory's range retrieval (a group
//! over 1,500 members lists `member;range=0-1499` and the rest is asked
//! for range by range), then resolved: a member DN naming a person is that
//! person's account, one naming another group brings in that group's
//! members (nested groups, cycles cut), and a value that is no DN
//! (`memberUid`) is an account name. With `attr_member_of` (Active
//! Directory's `memberOf`), a person listing a group is one of its members
//! too.

use crate::ldap::{Client, LdapError};
use chorus_core::directory::Person;
use chorus_core::shared_groups::{Member, SharedGroup};
use ldap3::{Ldap, Scope, SearchEntry};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A group as the directory lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawGroup {
    /// Its DN.
    pub dn: String,
    /// Its name.
    pub name: String,
    /// Member values as listed (DNs or account names).
    pub members: Vec<String>,
}

/// Splits `member;range=1500-2999` into (`member`, 1500, Some(2999));
/// `member;range=3000-*` ends with `None`.
pub fn parse_range(attr: &str) -> Option<(&str, u64, Option<u64>)> {
    let (name, opts) = attr.split_once(';')?;
    let range = opts.split(';').find_map(|o| {
        o.get(..6)
            .filter(|p| p.eq_ignore_ascii_case("range="))
            .map(|_| &o[6..])
    })?;
    let (lo, hi) = range.split_once('-')?;
    let lo = lo.parse().ok()?;
    let hi = if hi == "*" { None } else { Some(hi.parse().ok()?) };
    Some((name, lo, hi))
}

/// The values of `attr` in an entry's attributes and, when the directory
/// sent only a range of them, the attribute to ask for next.
pub fn values_and_next(attrs: &HashMap<String, Vec<String>>, attr: &str) -> (Vec<String>, Option<String>) {
    for (key, values) in attrs {
        if key.eq_ignore_ascii_case(attr) {
            return (values.clone(), None);
        }
        if let Some((name, _, hi)) = parse_range(key)
            && name.eq_ignore_ascii_case(attr)
        {
            return (values.clone(), hi.map(|h| format!("{attr};range={}-*", h + 1)));
        }
    }
    (Vec::new(), None)
}

fn first(e: &SearchEntry, attr: &str) -> String {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .cloned()
        .unwrap_or_default()
}

impl Client {
    /// Every group under `group_base` with all its member values; empty
    /// when no `group_base` is configured.
    pub async fn groups(&self) -> Result<Vec<RawGroup>, LdapError> {
        let c = self.config().clone();
        if c.group_base.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut ldap = self.bound().await?;
        let attrs = vec![c.attr_group_name.clone(), c.attr_member.clone()];
        let entries = self
            .search_in(&mut ldap, &c.group_base, &c.group_filter, attrs)
            .await?;
        let mut out = Vec::with_capacity(entries.len());
        let mut total = 0usize;
        for e in entries {
            let (mut members, mut next) = values_and_next(&e.attrs, &c.attr_member);
            while let Some(attr) = next.take() {
                if total + members.len() > c.entries_max {
                    return Err(LdapError::TooMany(c.entries_max));
                }
                let (more, after) = more_members(&mut ldap, &e.dn, &attr, &c.attr_member).await?;
                members.extend(more);
                next = after;
            }
            total += members.len();
            if total > c.entries_max {
                return Err(LdapError::TooMany(c.entries_max));
            }
            out.push(RawGroup {
                name: first(&e, &c.attr_group_name),
                dn: e.dn,
                members,
            });
        }
        let _ = ldap.unbind().await;
        Ok(out)
    }
}

/// Asks for the next range of a group's members.
async fn more_members(
    ldap: &mut Ldap,
    dn: &str,
    attr: &str,
    member_attr: &str,
) -> Result<(Vec<String>, Option<String>), LdapError> {
    let (entries, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec![attr])
        .await?
        .success()?;
    let Some(e) = entries.into_iter().next().map(SearchEntry::construct) else {
        return Ok((Vec::new(), None));
    };
    Ok(values_and_next(&e.attrs, member_attr))
}

/// Resolves groups to shared groups keyed by DN (lower-cased): members
/// are the accounts of `people` (enabled ones only), nested groups
/// expanded.
pub fn resolve(groups: &[RawGroup], people: &[Person]) -> BTreeMap<String, SharedGroup> {
    let by_dn: HashMap<String, &Person> = people.iter().map(|p| (p.dn.to_lowercase(), p)).collect();
    let by_uid: HashMap<&str, &Person> = people.iter().map(|p| (p.uid.as_str(), p)).collect();
    let group_dns: HashMap<String, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.dn.to_lowercase(), i))
        .collect();
    // People who list a group themselves (memberOf), by group.
    let mut listed: HashMap<usize, Vec<&Person>> = HashMap::new();
    for p in people {
        for dn in &p.member_of {
            if let Some(&i) = group_dns.get(&dn.to_lowercase()) {
                listed.entry(i).or_default().push(p);
            }
        }
    }
    let mut out = BTreeMap::new();
    for g in groups {
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        let mut seen: HashSet<usize> = HashSet::new();
        let mut stack = vec![group_dns[&g.dn.to_lowercase()]];
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            for p in listed.get(&i).into_iter().flatten().filter(|p| !p.disabled) {
                members.insert(p.uid.clone(), p.name.clone());
            }
            for value in &groups[i].members {
                let key = value.to_lowercase();
                let person = if key.contains('=') {
                    if let Some(&nested) = group_dns.get(&key) {
                        stack.push(nested);
                        continue;
                    }
                    by_dn.get(&key).copied()
                } else {
                    by_uid.get(key.as_str()).copied()
                };
                if let Some(p) = person.filter(|p| !p.disabled) {
                    members.insert(p.uid.clone(), p.name.clone());
                }
            }
        }
        let group = SharedGroup {
            name: if g.name.is_empty() {
                g.dn.clone()
            } else {
                g.name.clone()
            },
            members: members
                .into_iter()
                .map(|(user, name)| Member { user, name })
                .collect(),
        };
        out.insert(format!("dir:{}", g.dn.to_lowercase()), group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_and_followed_to_the_end() {
        assert_eq!(
            parse_range("member;range=0-1499"),
            Some(("member", 0, Some(1499)))
        );
        assert_eq!(parse_range("member;Range=1500-*"), Some(("member", 1500, None)));
        assert_eq!(parse_range("member"), None);
        assert_eq!(parse_range("member;range=x-1"), None);
        let mut attrs = HashMap::new();
        attrs.insert("member;range=0-1499".to_string(), vec!["cn=a".to_string()]);
        let (v, next) = values_and_next(&attrs, "member");
        assert_eq!((v.len(), next.as_deref()), (1, Some("member;range=1500-*")));
        let mut last = HashMap::new();
        last.insert("member;range=1500-1700".to_string(), vec!["cn=b".to_string()]);
        // A server may answer the open range with a closed one: go on.
        assert_eq!(
            values_and_next(&last, "member").1.as_deref(),
            Some("member;range=1701-*")
        );
        let mut end = HashMap::new();
        end.insert("member;range=1701-*".to_string(), vec![]);
        assert_eq!(values_and_next(&end, "member").1, None);
        let mut plain = HashMap::new();
        plain.insert("Member".to_string(), vec!["cn=c".to_string()]);
        assert_eq!(
            values_and_next(&plain, "member"),
            (vec!["cn=c".to_string()], None)
        );
    }

    fn person(uid: &str, disabled: bool) -> Person {
        Person {
            uid: uid.into(),
            dn: format!("uid={uid},ou=People,dc=x"),
            name: uid.to_uppercase(),
            disabled,
            ..Person::default()
        }
    }

    #[test]
    fn nested_groups_are_expanded_cycles_cut_and_disabled_people_left_out() {
        let mut eve = person("eve", false);
        eve.member_of = vec!["CN=Leads,OU=Groups,DC=x".into(), "cn=unknown,dc=x".into()];
        let people = [
            person("ada", false),
            person("bob", false),
            person("cy", true),
            person("dee", false),
            eve,
        ];
        let groups = vec![
            RawGroup {
                dn: "cn=Eng,ou=Groups,dc=x".into(),
                name: "Engineering".into(),
                members: vec![
                    "UID=ada,ou=people,dc=x".into(),
                    "cn=leads,ou=groups,dc=x".into(),
                    "uid=ghost,dc=x".into(),
                ],
            },
            RawGroup {
                dn: "cn=Leads,ou=Groups,dc=x".into(),
                name: "Leads".into(),
                members: vec![
                    "uid=bob,ou=People,dc=x".into(),
                    "uid=cy,ou=People,dc=x".into(),
                    "cn=eng,ou=groups,dc=x".into(),
                ],
            },
            RawGroup {
                dn: "cn=posix,dc=x".into(),
                name: String::new(),
                members: vec!["dee".into(), "nobody".into()],
            },
        ];
        let r = resolve(&groups, &people);
        let users = |k: &str| r[k].members.iter().map(|m| m.user.as_str()).collect::<Vec<_>>();
        assert_eq!(
            users("dir:cn=eng,ou=groups,dc=x"),
            ["ada", "bob", "eve"],
            "eve lists leads (memberOf), which eng nests"
        );
        assert_eq!(
            users("dir:cn=leads,ou=groups,dc=x"),
            ["ada", "bob", "eve"],
            "the cycle brings eng in"
        );
        assert_eq!(users("dir:cn=posix,dc=x"), ["dee"]);
        assert_eq!(r["dir:cn=posix,dc=x"].name, "cn=posix,dc=x");
        assert_eq!(r["dir:cn=eng,ou=groups,dc=x"].members[0].name, "ADA");
    }
}
