//! LDAP and Active Directory: per-domain directory settings (`config`), the `ldap3`
//! client (`directory`), the user and alias sync run by `understudy ldap sync` and
//! periodically by the server (`sync`), and logins checked by binding to the directory
//! with an argon2id cache for when it is down (`login`, used by `crate::auth`).

pub mod config;
pub mod directory;
pub mod login;
pub mod sync;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use understudy_storage::Store;

use crate::admin::revoke::Revocations;
use crate::admin::AdminContext;
use crate::config::Config;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum LdapCommand {
    /// Create, update and deactivate users and aliases to match the directory now.
    Sync {
        /// Only this domain (default: every domain with an [[ldap]] section).
        #[arg(long)]
        domain: Option<String>,
        /// Report what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

struct AdminSyncEvents<'a>(&'a AdminContext<'a>);

impl sync::SyncEvents for AdminSyncEvents<'_> {
    fn revoked(&self, user_id: u64) {
        self.0.events.revoked(user_id);
    }
    fn progress(&self, done: u64, total: u64) {
        self.0.events.progress(done, total);
    }
}

/// Runs an `ldap` admin command (in the server for the admin socket, or in the CLI).
pub fn command(ctx: &AdminContext, command: LdapCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        LdapCommand::Sync { domain, dry_run } => {
            let wanted = domain.map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
            let sections: Vec<_> = ctx
                .config
                .ldap
                .iter()
                .filter(|l| wanted.as_deref().is_none_or(|w| l.domain.eq_ignore_ascii_case(w)))
                .collect();
            if sections.is_empty() {
                match wanted {
                    Some(d) => anyhow::bail!("no [[ldap]] section for {d} in the configuration"),
                    None => anyhow::bail!("no [[ldap]] section in the configuration"),
                }
            }
            let mut failed = Vec::new();
            for section in sections {
                if let Err(e) = sync::sync_domain(ctx.store, section, dry_run, &AdminSyncEvents(ctx), out) {
                    writeln!(out, "ldap sync {}: failed: {e:#}", section.domain)?;
                    failed.push(section.domain.clone());
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("sync failed for {}", failed.join(", "));
            }
            Ok(())
        }
    }
}

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
    config: Arc<Config>,
    revocations: Revocations,
    stop: watch::Receiver<bool>,
) {
    for (index, section) in config.ldap.iter().enumerate() {
        if section.sync_interval_secs == 0 {
            continue;
        }
        let interval = Duration::from_secs(section.sync_interval_secs);
        let (store, config, revocations) = (store.clone(), config.clone(), revocations.clone());
        let mut stop = stop.clone();
        tasks.spawn(async move {
            loop {
                let (store, config, revocations) = (store.clone(), config.clone(), revocations.clone());
                let run = tokio::task::spawn_blocking(move || {
                    let Some(section) = config.ldap.get(index) else {
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
