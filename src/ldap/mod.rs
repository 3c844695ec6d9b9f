//! LDAP and Active Directory: per-domain directory settings (`config`), the `ldap3`
//! client (`directory`), the user and alias sync (`sync`) run periodically by the
//! server ([`spawn`]) and by `understudy ldap sync` (`crate::admin::ldap`), and logins
//! checked by binding to the directory with an argon2id cache for when it is down
//! (`login`, used by `crate::auth`).

pub mod config;
pub mod directory;
pub mod login;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use understudy_storage::Store;

use self::config::LdapConfig;
use crate::revoke::Revocations;

struct ServerSyncEvents<'a>(&'a Revocations);

impl sync::SyncEvents for ServerSyncEvents<'_> {
    fn revoked(&self, user_id: u64) {
        // No receiver means no connection is open: nothing to end.
        let _ = self.0.send(user_id);
    }
    fn progress(&self, _done: u64, _total: u64) {}
}

/// Starts, into `tasks`, the periodic sync of every `[[ldap]]` section with
/// `sync_interval_secs` > 0: once at start-up, then at each interval, until `stop`. The
/// sections follow the configuration: when a reload changes them, the syncs are
/// restarted with the new ones (a sync in progress finishes first).
pub fn spawn(
    tasks: &mut JoinSet<()>,
    store: Store,
    sections: watch::Receiver<Arc<Vec<LdapConfig>>>,
    revocations: Revocations,
    stop: watch::Receiver<bool>,
) {
    tasks.spawn(supervise(store, sections, revocations, stop));
}

async fn supervise(
    store: Store,
    mut reloads: watch::Receiver<Arc<Vec<LdapConfig>>>,
    revocations: Revocations,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let sections = reloads.borrow_and_update().clone();
        let (end_tx, end_rx) = watch::channel(false);
        let mut syncs = JoinSet::new();
        for section in sections.iter().filter(|s| s.sync_interval_secs > 0) {
            syncs.spawn(sync_loop(
                store.clone(),
                section.clone(),
                revocations.clone(),
                end_rx.clone(),
            ));
        }
        // Until the server stops or a reload changes the sections.
        let stopping = loop {
            tokio::select! {
                _ = stop.changed() => break true,
                changed = reloads.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                    // Published only when the sections changed.
                    tracing::info!(sections = reloads.borrow().len(), "[[ldap]] changed: restarting the directory syncs");
                    break false;
                }
                Some(_) = syncs.join_next(), if !syncs.is_empty() => {}
            }
        };
        let _ = end_tx.send(true);
        while syncs.join_next().await.is_some() {}
        if stopping {
            return;
        }
    }
}

async fn sync_loop(
    store: Store,
    section: LdapConfig,
    revocations: Revocations,
    mut end: watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(section.sync_interval_secs);
    loop {
        if !store.leads() {
            // Another node of a shared store syncs; look again shortly, in case it goes.
            tokio::select! {
                _ = tokio::time::sleep(interval.min(Duration::from_secs(10))) => continue,
                _ = end.changed() => return,
            }
        }
        let (store, section_run, revocations) = (store.clone(), section.clone(), revocations.clone());
        let run = tokio::task::spawn_blocking(move || {
            match sync::sync_domain(
                &store,
                &section_run,
                false,
                &ServerSyncEvents(&revocations),
                &mut std::io::sink(),
            ) {
                Ok(r) => tracing::info!(
                    domain = %r.domain,
                    created = r.created,
                    updated = r.updated,
                    deactivated = r.deactivated,
                    unchanged = r.unchanged,
                    skipped = r.skipped.len(),
                    "ldap sync"
                ),
                Err(e) => {
                    tracing::warn!(domain = %section_run.domain, error = %format!("{e:#}"), "ldap sync failed")
                }
            }
        });
        if let Err(e) = run.await {
            tracing::error!(error = %e, "ldap sync task failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = end.changed() => return,
        }
    }
}
