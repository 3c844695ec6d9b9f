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

use crate::revoke::Revocations;

struct ServerSyncEvents<'a>(&'a Revocations);

impl sync::SyncEvents for ServerSyncEvents<'_> {
    fn revoked(&self, user_id: u64) {
        // No receiver means no connection is open: nothing to end.
        let _ = self.0.send(user_id);
    }
    fn progress(&self, _done: u64, _total: u64) {}
}

/// Starts, into `tasks`, the periodic sync of every domain with `sync_interval_secs` >
/// 0: once at start-up, then at each interval, until `stop`.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    store: Store,
    sections: Arc<Vec<config::LdapConfig>>,
    revocations: Revocations,
    stop: watch::Receiver<bool>,
) {
    for (index, section) in sections.iter().enumerate() {
        if section.sync_interval_secs == 0 {
            continue;
        }
        let interval = Duration::from_secs(section.sync_interval_secs);
        let (store, sections, revocations) = (store.clone(), sections.clone(), revocations.clone());
        let mut stop = stop.clone();
        tasks.spawn(async move {
            loop {
                let (store, sections, revocations) = (store.clone(), sections.clone(), revocations.clone());
                let run = tokio::task::spawn_blocking(move || {
                    let Some(section) = sections.get(index) else {
                        return;
                    };
                    match sync::sync_domain(
                        &store,
                        section,
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
                            tracing::warn!(domain = %section.domain, error = %format!("{e:#}"), "ldap sync failed")
                        }
                    }
                });
                if let Err(e) = run.await {
                    tracing::error!(error = %e, "ldap sync task failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}
