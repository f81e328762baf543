//! The synchronization loop: every `sync_interval_secs`, read the
//! directory's people and bring the local accounts in line.
//!
//! * A new person gets an account with random SCRAM keys (no password
//!   opens it; the person logs in with PLAIN, checked by a bind), the
//!   entry's DN in [`DIRECTORY_DN_SETTING`] and a vCard from the entry,
//!   1,000 per synced write.
//! * A person whose entry changed gets the new vCard fields
//!   ([`crate::vcard`]; the person's own fields stay).
//! * A person the directory disables or no longer lists is marked with
//!   [`DIRECTORY_DISABLED_SETTING`] (logins are refused and every node's
//!   sweeper ends the sessions); one enabled again is unmarked.
//! * An account of the same name that is not a directory account is left
//!   alone (local accounts and directory accounts coexist).
//! * With `group_base`, the groups ([`crate::groups`]) are written as the
//!   replicated shared roster groups, and the node's sessions are told.
//!
//! When the directory cannot be reached nothing changes: the index of the
//! last good synchronization keeps serving, and the status says so.

use crate::Directory;
use chorus_core::credentials::Credentials;
use chorus_core::directory::{DIRECTORY_DISABLED_SETTING, DIRECTORY_DN_SETTING, Person};
use chorus_core::store::{NewAccount, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Accounts created per synced write.
const BATCH: usize = 1000;

/// Group memberships (nested groups expanded) allowed per `entries_max`.
const MEMBERSHIPS_PER_ENTRY: usize = 4;

/// What one synchronization changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Accounts created.
    pub created: usize,
    /// vCards rewritten.
    pub updated: usize,
    /// Accounts disabled.
    pub disabled: usize,
    /// Accounts enabled again.
    pub enabled: usize,
    /// Shared groups written or removed.
    pub groups: usize,
}

/// Brings the store in line with `people` (see the module documentation).
pub fn apply(store: &dyn Store, people: &[Person], iterations: u32) -> Result<Changes, StoreError> {
    let mut changes = Changes::default();
    let by_uid: HashMap<&str, &Person> = people.iter().map(|p| (p.uid.as_str(), p)).collect();
    let accounts = store.list_accounts()?;
    let mut known = std::collections::HashSet::new();
    for user in &accounts {
        known.insert(user.as_str());
        if store.setting(user, DIRECTORY_DN_SETTING)?.is_none() {
            continue; // a local account
        }
        let person = by_uid.get(user.as_str());
        let should_disable = person.is_none_or(|p| p.disabled);
        let flagged = store.setting(user, DIRECTORY_DISABLED_SETTING)?.as_deref() == Some("1");
        if should_disable != flagged {
            store.set_setting(
                user,
                DIRECTORY_DISABLED_SETTING,
                if should_disable { "1" } else { "" },
            )?;
            if should_disable {
                changes.disabled += 1;
            } else {
                changes.enabled += 1;
            }
        }
        if let Some(p) = person {
            let stored = store.vcard(user)?;
            let card = crate::vcard::merge(stored.as_deref(), p);
            if stored.as_deref() != Some(card.as_str()) {
                store.set_vcard(user, &card)?;
                changes.updated += 1;
            }
        }
    }
    let new: Vec<NewAccount> = people
        .iter()
        .filter(|p| !known.contains(p.uid.as_str()) && !p.disabled)
        .map(|p| NewAccount {
            user: p.uid.clone(),
            creds: Credentials::unusable(iterations),
            vcard: Some(crate::vcard::merge(None, p)),
            settings: vec![(DIRECTORY_DN_SETTING.to_owned(), p.dn.clone())],
        })
        .collect();
    for batch in new.chunks(BATCH) {
        let existed = store.create_accounts(batch)?;
        changes.created += batch.len() - existed.len();
    }
    Ok(changes)
}

/// Synchronizes once: reads the directory, applies it, replaces the index.
pub async fn once(dir: &Directory, store: Arc<dyn Store>, iterations: u32) -> Result<Changes, String> {
    let started = std::time::Instant::now();
    let read =
        async { Ok::<_, crate::ldap::LdapError>((dir.client.people().await?, dir.client.groups().await?)) };
    let (people, raw_groups) = match read.await {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!("chorus_directory_errors_total", "op" => "sync").increment(1);
            dir.failed(e.to_string());
            return Err(e.to_string());
        }
    };
    let with_groups = !dir.client.config().group_base.trim().is_empty();
    let memberships_max = dir
        .client
        .config()
        .entries_max
        .saturating_mul(MEMBERSHIPS_PER_ENTRY);
    let (store2, people2) = (store.clone(), people.clone());
    let changes = tokio::task::spawn_blocking(move || {
        let mut changes = apply(&*store2, &people2, iterations)?;
        if with_groups {
            let groups = crate::groups::resolve(&raw_groups, &people2, memberships_max)
                .map_err(|e| StoreError::Io(e.to_string()))?;
            changes.groups = chorus_core::shared_groups::store(&*store2, &groups)?;
        }
        Ok::<_, StoreError>(changes)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| {
        dir.failed(e.to_string());
        e.to_string()
    })?;
    dir.replace(people);
    if changes.groups > 0 {
        dir.groups_changed();
    }
    metrics::gauge!("chorus_directory_people").set(dir.status().people as f64);
    tracing::info!(
        ?changes,
        secs = started.elapsed().as_secs_f64(),
        "directory synchronized"
    );
    Ok(changes)
}

/// Synchronizes every `every` until `stop` turns true.
pub async fn run(
    dir: Arc<Directory>,
    store: Arc<dyn Store>,
    iterations: u32,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = once(&dir, store.clone(), iterations).await {
            tracing::warn!(error = %e, "directory synchronization failed; the last one keeps serving");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::mem_store::MemStore;

    fn person(uid: &str, disabled: bool) -> Person {
        Person {
            uid: uid.into(),
            dn: format!("uid={uid},ou=people,dc=example,dc=com"),
            name: format!("{uid} <Example>"),
            department: "Research".into(),
            disabled,
            ..Person::default()
        }
    }

    #[test]
    fn people_become_accounts_and_leaving_or_disabled_ones_are_disabled() {
        let store = MemStore::new();
        store
            .create_account(
                "local",
                &Credentials::from_password_with("pw", 4096).expect("creds"),
            )
            .expect("local");
        let people = vec![person("ada", false), person("bob", false), person("local", false)];
        let c = apply(&store, &people, 4096).expect("apply");
        assert_eq!((c.created, c.disabled), (2, 0));
        assert!(
            store
                .vcard("ada")
                .expect("read")
                .expect("card")
                .contains("ada &lt;Example&gt;")
        );
        assert!(
            store
                .setting("local", DIRECTORY_DN_SETTING)
                .expect("read")
                .is_none(),
            "left local"
        );
        let creds = store.credentials("ada").expect("read").expect("account");
        assert!(
            !creds
                .sha256
                .verify_password(chorus_core::credentials::ScramHash::Sha256, "")
        );

        let people = vec![person("ada", true)];
        let c = apply(&store, &people, 4096).expect("apply");
        assert_eq!((c.created, c.disabled), (0, 2), "ada disabled, bob gone");
        assert!(chorus_core::store::is_disabled(&store, "bob"));
        assert!(!chorus_core::store::is_disabled(&store, "local"));
        let c = apply(&store, &[person("ada", false), person("bob", false)], 4096).expect("apply");
        assert_eq!(c.enabled, 2);
        assert!(!chorus_core::store::is_disabled(&store, "ada"));
    }
}
