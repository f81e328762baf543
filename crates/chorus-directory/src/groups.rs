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
    hi.is_none_or(|h| h >= lo).then_some((name, lo, hi))
}

/// Some of a group's member values, as one answer gave them.
#[derive(Debug, PartialEq, Eq)]
pub struct Values {
    /// The values.
    pub values: Vec<String>,
    /// Where the range started, when the directory sent a range.
    pub from: Option<u64>,
    /// Where the next range starts, when there are more.
    pub next: Option<u64>,
}

/// The values of `attr` in an entry's attributes and, when the directory
/// sent only a range of them, where the next range starts.
pub fn values_and_next(attrs: &HashMap<String, Vec<String>>, attr: &str) -> Values {
    for (key, values) in attrs {
        if key.eq_ignore_ascii_case(attr) {
            return Values {
                values: values.clone(),
                from: None,
                next: None,
            };
        }
        if let Some((name, lo, hi)) = parse_range(key)
            && name.eq_ignore_ascii_case(attr)
        {
            return Values {
                values: values.clone(),
                from: Some(lo),
                next: hi.and_then(|h| h.checked_add(1)),
            };
        }
    }
    Values {
        values: Vec::new(),
        from: None,
        next: None,
    }
}

/// Checks that an answer to "the values from `asked` on" is that range and
/// moves on (a server answering another range, or an empty one that is not
/// the last, would otherwise keep the synchronization asking forever).
fn check_range(asked: u64, got: &Values) -> Result<(), LdapError> {
    let bad = got.from != Some(asked) || (got.next.is_some() && got.values.is_empty());
    if bad {
        return Err(LdapError::Protocol(format!(
            "asked for member values from {asked}, got {} from {:?}",
            got.values.len(),
            got.from
        )));
    }
    Ok(())
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
            let first_answer = values_and_next(&e.attrs, &c.attr_member);
            let (mut members, mut next) = (first_answer.values, first_answer.next);
            while let Some(lo) = next.take() {
                if total + members.len() > c.entries_max {
                    return Err(LdapError::TooMany(c.entries_max));
                }
                let more = more_members(&mut ldap, &e.dn, lo, &c.attr_member).await?;
                check_range(lo, &more)?;
                members.extend(more.values);
                next = more.next;
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

/// Asks for a group's member values from `lo` on.
async fn more_members(ldap: &mut Ldap, dn: &str, lo: u64, member_attr: &str) -> Result<Values, LdapError> {
    let attr = format!("{member_attr};range={lo}-*");
    let (entries, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
        .await?
        .success()?;
    let Some(e) = entries.into_iter().next().map(SearchEntry::construct) else {
        return Err(LdapError::Protocol(format!(
            "{dn} vanished while its members were read"
        )));
    };
    Ok(values_and_next(&e.attrs, member_attr))
}

/// Resolves groups to shared groups keyed by DN (lower-cased): members
/// are the accounts of `people` (enabled ones only), nested groups
/// expanded. Nesting multiplies members (a chain of nested groups repeats
/// every inner member in each outer group), so the memberships in all are
/// bounded by `max`.
pub fn resolve(
    groups: &[RawGroup],
    people: &[Person],
    max: usize,
) -> Result<BTreeMap<String, SharedGroup>, LdapError> {
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
    let mut total = 0usize;
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
        total += members.len();
        if total > max {
            return Err(LdapError::Protocol(format!(
                "the groups, nested ones expanded, hold over {max} memberships"
            )));
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
    Ok(out)
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
        assert_eq!(parse_range("member;range=9-3"), None, "backwards");
        let answer = |key: &str, n: usize| {
            let mut attrs = HashMap::new();
            attrs.insert(key.to_string(), (0..n).map(|i| format!("cn=m{i}")).collect());
            values_and_next(&attrs, "member")
        };
        let v = answer("member;range=0-1499", 1500);
        assert_eq!((v.values.len(), v.from, v.next), (1500, Some(0), Some(1500)));
        // A server may answer the open range with a closed one: go on.
        let v = answer("member;range=1500-1700", 201);
        assert!(check_range(1500, &v).is_ok());
        assert_eq!(v.next, Some(1701));
        let v = answer("member;range=1701-*", 0);
        assert!(
            check_range(1701, &v).is_ok() && v.next.is_none(),
            "an empty last range ends"
        );
        let v = answer("Member", 1);
        assert_eq!(
            (v.values, v.from, v.next),
            (vec!["cn=m0".to_string()], None, None)
        );
        // A misbehaving server cannot keep the synchronization asking.
        assert!(
            check_range(1500, &answer("member;range=0-1499", 1500)).is_err(),
            "same range again"
        );
        assert!(
            check_range(5, &answer("member;range=5-5", 0)).is_err(),
            "empty, not the last"
        );
        assert!(check_range(5, &answer("other", 3)).is_err(), "no range at all");
        let v = answer(&format!("member;range=1-{}", u64::MAX), 1);
        assert_eq!(v.next, None, "the end of the numbers ends it, no overflow");
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
        assert!(resolve(&groups, &people, 5).is_err(), "over the bound");
        let r = resolve(&groups, &people, 100).expect("within the bound");
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
