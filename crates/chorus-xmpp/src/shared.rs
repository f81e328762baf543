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

/// The current index, the groups it was built from, and the stored rows
/// they were read from (unchanged rows are not parsed again).
#[derive(Default)]
pub struct Shared {
    current: RwLock<(Vec<SharedGroup>, Arc<SharedRoster>)>,
    rows: std::sync::Mutex<Option<Vec<(String, String)>>>,
}

impl Shared {
    /// The current index.
    pub fn roster(&self) -> Arc<SharedRoster> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Installs `groups`; returns the previous index and the accounts whose
    /// fellows may have changed, or `None` when nothing changed.
    fn install(&self, groups: Vec<SharedGroup>) -> Option<(Arc<SharedRoster>, BTreeSet<String>)> {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.0 == groups {
            return None;
        }
        let touched = touched(&cur.0, &groups);
        let old = std::mem::replace(&mut *cur, (groups.clone(), Arc::new(SharedRoster::new(groups))));
        Some((old.1, touched))
    }
}

/// Members of every group that is not in both lists unchanged.
fn touched(old: &[SharedGroup], new: &[SharedGroup]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (a, b) in [(old, new), (new, old)] {
        for g in a.iter().filter(|g| !b.contains(g)) {
            out.extend(g.members.iter().map(|m| m.user.clone()));
        }
    }
    out
}

/// The groups of the configuration and of the store, normalized; `None`
/// when the stored rows are those of the last call, or cannot be read (a
/// read error must not take everyone's shared contacts away).
fn groups(ctx: &Context) -> Option<Vec<SharedGroup>> {
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
    let mut out: Vec<SharedGroup> = ctx
        .config
        .shared_groups
        .iter()
        .map(|g| SharedGroup {
            name: g.name.clone(),
            members: g
                .members
                .iter()
                .map(|u| Member {
                    user: u.to_lowercase(),
                    name: String::new(),
                })
                .collect(),
        })
        .collect();
    out.extend(shared_groups::parse(rows).into_values());
    Some(out.into_iter().map(SharedGroup::normalized).collect())
}

/// Re-reads the groups; when they changed, tells this node's online
/// members. Returns how many accounts were told.
pub fn refresh(ctx: &Context) -> usize {
    let Some((old, touched)) = groups(ctx).and_then(|g| ctx.shared.install(g)) else {
        return 0;
    };
    let new = ctx.shared.roster();
    let online: BTreeSet<String> = ctx.router.local_users().into_iter().collect();
    let mut told = 0;
    for user in touched.intersection(&online) {
        let (before, after) = (old.fellows(user), new.fellows(user));
        if before != after {
            tell(ctx, user, &before, &after);
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

/// Pushes the changed items to `user`'s interested resources here and
/// exchanges presence with the fellows gained or lost.
fn tell(ctx: &Context, user: &str, before: &BTreeMap<String, Fellow>, after: &BTreeMap<String, Fellow>) {
    let Ok(roster) = ctx.store.roster(user) else {
        return;
    };
    let ver = version(roster.version, &ctx.shared.roster(), user);
    let domain = &ctx.domain;
    let contacts: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for contact in contacts {
        let (b, a) = (before.get(contact), after.get(contact));
        if b == a {
            continue;
        }
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
        let _ = ctx.router.deliver(user, &r.resource, Routed::Stanza(iq));
    }
}

/// Sends `user`'s available resources here the presence of each of
/// `contact`'s resources (or unavailable from each, when `gone`).
fn presence_of(ctx: &Context, user: &str, contact: &str, gone: bool) {
    let from_bare = format!("{contact}@{}", ctx.domain);
    let mut stanzas = Vec::new();
    for r in ctx.router.resources(contact).into_iter().filter(|r| r.available) {
        let mut p = match (gone, r.presence) {
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
            let _ = ctx.router.deliver(user, &r.resource, Routed::Stanza(p));
        }
    }
}

/// Refreshes every [`REFRESH_EVERY`] until `stop` turns true.
pub async fn run(ctx: Arc<Context>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let c = ctx.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || refresh(&c)).await {
            tracing::error!(error = %e, "shared roster refresh failed");
        }
    }
}
