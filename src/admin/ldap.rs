//! `ldap sync`: create, update and deactivate users and aliases to match the directory
//! now, for every `[[ldap]]` section or one domain's (`crate::ldap::sync` does the work,
//! the server also runs it periodically). [`sync`] returns each domain's counts and
//! writes the changes it makes, one line each, to `out`.

use std::io::Write;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::AdminContext;
use crate::ldap::sync::{self, SyncReport};

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

/// Runs an `ldap` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: LdapCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        LdapCommand::Sync { domain, dry_run } => sync(ctx, domain.as_deref(), dry_run, out).map(drop),
    }
}

/// Syncs every domain with an `[[ldap]]` section, or `domain`'s. A domain that fails is
/// reported in `out` and the others still run; the result is an error naming the
/// failed ones.
pub fn sync(
    ctx: &AdminContext,
    domain: Option<&str>,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<SyncReport>> {
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
    let mut reports = Vec::new();
    for section in sections {
        match sync::sync_domain(ctx.store, section, dry_run, &AdminSyncEvents(ctx), out) {
            Ok(report) => reports.push(report),
            Err(e) => {
                writeln!(out, "ldap sync {}: failed: {e:#}", section.domain)?;
                failed.push(section.domain.clone());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("sync failed for {}", failed.join(", "));
    }
    Ok(reports)
}
