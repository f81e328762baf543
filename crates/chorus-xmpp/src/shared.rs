//! Shared roster groups ([`chorus_core::shared_groups`]) in sessions: the
//! index every session consults, refreshed every [`REFRESH_EVERY`] from
//! the replicated directory groups and `[[shared_groups]]`, and the roster
//! pushes and presence a change owes the online members on this node.
//!
//! A fellow member appears in the roster with `subscription='both'`, the
//! shared groups added to any the user gave them, and exchanges presence
//! like a mutual subscription: broadcasts, probes at login, and presence
//! changes from other nodes. When a refresh adds fellows, each node sends
//! its own online members a roster push and the new fellows' presence;
//! when it removes them, a push (removal, or the personal item left) and
//! their unavailable presence, unless a subscription still carries it.

use crate::context::Context;
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use chorus_core::roster::{RosterItem, Subscription};
use chorus_core::shared_groups::{self, Fellow, Member, SharedGroup, SharedRoster};
use minidom::Element;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often each node re-reads the groups.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Groups by key (`dir:<dn>`, `config:<n>:<name>`).
type Keyed = BTreeMap<String, SharedGroup>;

/// The current index, the groups it was built from, and the stored rows
/// they were read from (unchanged rows are not parsed again). Refreshes
/// run one at a time, so an older read never replaces a newer one.
#[derive(Default)]
pub struct Shared {
    current: RwLock<(Keyed, Arc<SharedRoster>)>,
    rows: std::sync::Mutex<Option<Vec<(String, String)>>>,
    refreshing: std::sync::Mutex<()>,
}

impl Shared {
    /// The current index.
    pub fn roster(&self) -> Arc<SharedRoster> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Installs `groups`; returns the previous index and groups, or `None`
    /// when nothing changed.
    fn install(&self, groups: Keyed) -> Option<(Arc<SharedRoster>, Keyed)> {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.0 == groups {
            return None;
        }
        let index = Arc::new(SharedRoster::new(groups.values().cloned()));
        let (old_groups, old) = std::mem::replace(&mut *cur, (groups, index));
        Some((old, old_groups))
    }
}

fn users(g: &SharedGroup) -> BTreeSet<&str> {
    g.members.iter().map(|m| m.user.as_str()).collect()
}

/// What changed in one group: all its members before and after, who joined
/// or left, and whether every member's view of every other changed (a
/// rename, or new display names).
struct GroupChange<'a> {
    all: BTreeSet<&'a str>,
    moved: BTreeSet<&'a str>,
    whole: bool,
}

/// The groups that differ between `old` and `new`.
fn group_changes<'a>(old: &'a Keyed, new: &'a Keyed) -> Vec<GroupChange<'a>> {
    static EMPTY: SharedGroup = SharedGroup {
        name: String::new(),
        members: Vec::new(),
    };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (o, n) = (old.get(key).unwrap_or(&EMPTY), new.get(key).unwrap_or(&EMPTY));
        if o == n {
            continue;
        }
        let (ou, nu) = (users(o), users(n));
        let moved: BTreeSet<&str> = ou.symmetric_difference(&nu).copied().collect();
        let whole = o.name != n.name || (o.members != n.members && moved.is_empty());
        out.push(GroupChange {
            all: ou.union(&nu).copied().collect(),
            moved,
            whole,
        });
    }
    out
}

/// The contacts whose shared standing with `user` may have changed: in a
/// group `user` joined or left (or that was renamed), every member; in a
/// group `user` stayed in, those who joined or left. Worked out only for
/// the members online here, so a new group of thousands costs each online
/// member one pass over it, and nothing for those offline.
fn candidates<'a>(changes: &[GroupChange<'a>], user: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for c in changes.iter().filter(|c| c.all.contains(user)) {
        if c.whole || c.moved.contains(user) {
            out.extend(c.all.iter().copied());
        } else {
            out.extend(c.moved.iter().copied());
        }
    }
    out.remove(user);
    out
}

/// The groups of the configuration and of the store, normalized; `None`
/// when the stored rows are those of the last call, or cannot be read (a
/// read error must not take everyone's shared contacts away).
fn groups(ctx: &Context) -> Option<Keyed> {
    let rows = match ctx.store.settings(shared_groups::GROUPS_OWNER) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the shared groups; keeping the last ones");
            return None;
        }
    };
    {
        let mut last = ctx.shared.rows.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(&rows) {
            return None;
        }
        *last = Some(rows.clone());
    }
    let mut out: Keyed = ctx
        .config
        .shared_groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let group = SharedGroup {
                name: g.name.clone(),
                members: g
                    .members
                    .iter()
                    .map(|u| Member {
                        user: u.to_lowercase(),
                        name: String::new(),
                    })
                    .collect(),
            };
            (format!("config:{i}:{}", g.name), group.normalized())
        })
        .collect();
    out.extend(shared_groups::parse(rows));
    Some(out)
}

/// Re-reads the groups; when they changed, tells this node's online
/// members. Returns how many accounts were told.
pub fn refresh(ctx: &Context) -> usize {
    let _one = ctx.shared.refreshing.lock().unwrap_or_else(|e| e.into_inner());
    let Some(groups) = groups(ctx) else {
        return 0;
    };
    let Some((old, old_groups)) = ctx.shared.install(groups) else {
        return 0;
    };
    let new = ctx.shared.roster();
    let cur = ctx
        .shared
        .current
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .clone();
    let groups_changed = group_changes(&old_groups, &cur);
    let mut told = 0;
    for user in ctx.router.local_users() {
        let changes: Vec<Change> = candidates(&groups_changed, &user)
            .into_iter()
            .filter_map(|c| {
                let (before, after) = (old.fellow(&user, c), new.fellow(&user, c));
                (before != after).then(|| (c.to_owned(), before, after))
            })
            .collect();
        if !changes.is_empty() {
            tell(ctx, &user, &changes);
            told += 1;
        }
    }
    metrics::counter!("chorus_shared_roster_refreshes_total").increment(1);
    tracing::info!(accounts = told, "shared roster groups changed");
    told
}

/// The roster item a user sees for `contact`: the personal one (if any)
/// with the shared groups and a mutual subscription when they are fellows.
pub fn view(personal: Option<&RosterItem>, fellow: Option<&Fellow>, contact_jid: &str) -> Option<RosterItem> {
    let Some(f) = fellow else {
        return personal.filter(|i| !i.hidden).cloned();
    };
    let mut item = personal.cloned().unwrap_or_else(|| RosterItem {
        jid: contact_jid.to_owned(),
        ..Default::default()
    });
    item.hidden = false;
    item.ask = false;
    item.subscription = Subscription::Both;
    if item.name.is_none() && !f.name.is_empty() {
        item.name = Some(f.name.clone());
    }
    item.groups.extend(f.groups.iter().cloned());
    item.groups.sort();
    item.groups.dedup();
    Some(item)
}

/// The roster version a user sees: the personal one, and the shared
/// groups' digest when the user has fellows.
pub fn version(personal: u64, shared: &SharedRoster, user: &str) -> String {
    if shared.fellow_users(user).is_empty() {
        personal.to_string()
    } else {
        format!("{personal}-{:x}", shared.digest_for(user))
    }
}

/// Whether `a` or `b` (local accounts) blocks the other (XEP-0191: no
/// presence crosses a block in either direction).
pub fn blocked_either(ctx: &Context, a: &str, b: &str) -> bool {
    let domain = &ctx.domain;
    let blocks = |owner: &str, other: &str| {
        let jid = format!("{other}@{domain}");
        ctx.store
            .blocklist(owner)
            .map(|l| {
                l.iter()
                    .any(|x| *x == jid || x == domain || x.starts_with(&format!("{jid}/")))
            })
            .unwrap_or(false)
    };
    blocks(a, b) || blocks(b, a)
}

/// A contact whose shared standing changed: before and after.
type Change = (String, Option<Fellow>, Option<Fellow>);

/// Pushes the changed items to `user`'s interested resources here and
/// exchanges presence with the fellows gained or lost.
fn tell(ctx: &Context, user: &str, changes: &[Change]) {
    let Ok(roster) = ctx.store.roster(user) else {
        return;
    };
    let ver = version(roster.version, &ctx.shared.roster(), user);
    let domain = &ctx.domain;
    for (contact, b, a) in changes {
        let (b, a) = (b.as_ref(), a.as_ref());
        let jid = format!("{contact}@{domain}");
        let personal = roster.items.iter().find(|i| i.jid == jid);
        let item = match view(personal, a, &jid) {
            Some(i) => crate::session::roster_item_element(&i),
            None => xml::new("item", ns::ROSTER)
                .with_attr("jid", jid.clone())
                .with_attr("subscription", "remove"),
        };
        push(ctx, user, &ver, item);
        let subscribed = personal.is_some_and(|i| i.subscription.has_to());
        match (b, a) {
            _ if blocked_either(ctx, user, contact) => {}
            (None, Some(_)) => presence_of(ctx, user, contact, false),
            (Some(_), None) if !subscribed => presence_of(ctx, user, contact, true),
            _ => {}
        }
    }
}

fn push(ctx: &Context, user: &str, ver: &str, item: Element) {
    let bare = format!("{user}@{}", ctx.domain);
    for r in ctx.router.resources(user) {
        if r.node.is_some() || !r.interested {
            continue;
        }
        let iq = xml::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push-{}", crate::session::random_id()))
            .with_attr("to", format!("{bare}/{}", r.resource))
            .with_child(
                xml::new("query", ns::ROSTER)
                    .with_attr("ver", ver)
                    .with_child(item.clone()),
            );
        let _ = ctx.router.deliver(user, &r.resource, Routed::stanza(iq));
    }
}

/// Sends `user`'s available resources here the presence of each of
/// `contact`'s resources (or unavailable from each, when `gone`).
fn presence_of(ctx: &Context, user: &str, contact: &str, gone: bool) {
    let from_bare = format!("{contact}@{}", ctx.domain);
    let mut stanzas = Vec::new();
    for r in ctx.router.resources(contact).into_iter().filter(|r| r.available) {
        let mut p = match (gone, r.presence_element()) {
            (false, Some(p)) => p,
            (false, None) => continue,
            (true, _) => xml::new("presence", ns::CLIENT).with_attr("type", "unavailable"),
        };
        p.put_attr("from", format!("{from_bare}/{}", r.resource));
        stanzas.push(p);
    }
    for r in ctx.router.resources(user) {
        if r.node.is_some() || !r.available {
            continue;
        }
        for p in &stanzas {
            let mut p = p.clone();
            p.put_attr("to", format!("{user}@{}/{}", ctx.domain, r.resource));
            let _ = ctx.router.deliver(user, &r.resource, Routed::stanza(p));
        }
    }
}

/// Refreshes every [`REFRESH_EVERY`] until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: tokio::sync::watch::Receiver<bool>) {
    crate::context::every(REFRESH_EVERY, ctx, stop, |c| {
        refresh(c);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, users: &[&str]) -> SharedGroup {
        SharedGroup {
            name: name.into(),
            members: users
                .iter()
                .map(|u| Member {
                    user: u.to_string(),
                    name: String::new(),
                })
                .collect(),
        }
        .normalized()
    }

    #[test]
    fn a_join_costs_each_member_one_comparison_and_the_newcomer_one_pass() {
        let crowd: Vec<String> = (0..1000).map(|i| format!("p{i:04}")).collect();
        let names: Vec<&str> = crowd.iter().map(String::as_str).collect();
        let old: Keyed = [("dir:all".to_string(), group("All", &names))].into();
        let mut joined = names.clone();
        joined.push("zed");
        let new: Keyed = [("dir:all".to_string(), group("All", &joined))].into();
        let changes = group_changes(&old, &new);
        assert_eq!(candidates(&changes, "zed").len(), 1000);
        assert_eq!(
            candidates(&changes, "p0001").into_iter().collect::<Vec<_>>(),
            ["zed"]
        );
        assert!(candidates(&changes, "outsider").is_empty());
        // A rename changes every member's view of every other.
        let before: Keyed = [("dir:all".to_string(), group("All", &["a", "b", "c"]))].into();
        let renamed: Keyed = [("dir:all".to_string(), group("Everyone", &["a", "b", "c"]))].into();
        let changes = group_changes(&before, &renamed);
        assert_eq!(
            candidates(&changes, "a").into_iter().collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(group_changes(&before, &before).is_empty());
    }
}
