//! The admin command set as one enum ([`Command`], parsed by clap in the CLI and sent as
//! JSON over the admin socket) and [`execute`], which runs one against an
//! [`AdminContext`] wherever it is: in the server for the socket, or in the CLI when no
//! server runs. A new subcommand is a variant here, a line in `execute`, and its
//! operation in the subject's file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::admins::AdminCommand;
use super::aliases::AliasCommand;
use super::domains::DomainCommand;
use super::ldap::LdapCommand;
use super::outage::OutageCommand;
use super::queue::QueueCommand;
use super::tracking::TrackArgs;
use super::users::UserCommand;
use super::AdminContext;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum Command {
    /// Protected domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Users (mailboxes).
    #[command(subcommand)]
    User(UserCommand),
    /// Aliases delivering to a user.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Outages: start, stop, status.
    #[command(subcommand)]
    Outage(OutageCommand),
    /// The relay, outbound and notification queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A message's life: received, stored, queued, attempts, delivered...
    Track(TrackArgs),
    /// Write a consistent copy of the database (a RocksDB checkpoint) into DIR, which must
    /// not exist; safe while the server runs. Restore: stop the server, replace
    /// `<data_dir>/db` with the copy, start it.
    Backup { dir: PathBuf },
    /// Print the mail settings a user needs during an outage.
    ClientSetup { address: String },
    /// Users from an LDAP directory or Active Directory.
    #[command(subcommand)]
    Ldap(LdapCommand),
    /// Web console administrators and API tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Runs one admin command against the store, writing its report to `out`. The server
/// runs this for requests on its admin socket; the CLI runs it when no server runs.
pub fn execute(ctx: &AdminContext, command: Command, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Domain(c) => super::domains::execute(ctx, c, out),
        Command::User(c) => super::users::execute(ctx, c, out),
        Command::Alias(c) => super::aliases::execute(ctx, c, out),
        Command::Outage(c) => super::outage::execute(ctx, c, out),
        Command::Queue(c) => super::queue::execute(ctx, c, out),
        Command::Track(a) => super::tracking::execute(ctx, a, out),
        Command::Ldap(c) => super::ldap::execute(ctx, c, out),
        Command::Admin(c) => super::admins::execute(ctx, c, out),
        Command::ClientSetup { address } => {
            let s = client_setup(ctx, &address)?;
            Ok(write!(out, "{}", crate::autoconfig::describe(&s))?)
        }
        Command::Backup { dir } => {
            backup(ctx, &dir)?;
            Ok(writeln!(out, "backup written to {}", dir.display())?)
        }
    }
}

/// The mail settings a user of a protected domain needs during an outage.
pub fn client_setup(ctx: &AdminContext, address: &str) -> anyhow::Result<crate::autoconfig::Settings> {
    match crate::autoconfig::settings(ctx.config, ctx.store, address) {
        Some(s) => Ok(s),
        None => bail!("{address} is not an address of a protected domain"),
    }
}

/// Writes a consistent copy of the database into `dir` (which must not exist).
pub fn backup(ctx: &AdminContext, dir: &Path) -> anyhow::Result<()> {
    ctx.store
        .checkpoint(dir)
        .with_context(|| format!("backup into {}", dir.display()))
}
