//! The admin command set as one enum ([`Command`], parsed by clap in the CLI and sent as
//! JSON over the admin socket) and [`execute`], which runs one against an
//! [`AdminContext`] wherever it is: in the server for the socket, or in the CLI when no
//! server runs. A new subcommand is a variant here, a line in `execute`, and its
//! operation in the subject's file.

use std::io::Write;

use anyhow::bail;
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
    /// Print the mail settings a user needs during an outage.
    ClientSetup {
        /// The user's address.
        address: String,
    },
    /// Users from an LDAP directory or Active Directory.
    #[command(subcommand)]
    Ldap(LdapCommand),
    /// Web console administrators and API tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The server's half of `understudy backup`: a checkpoint under the data
    /// directory, described as JSON for the CLI that asked (see `admin::backup`).
    #[command(skip)]
    Checkpoint,
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
        Command::Checkpoint => {
            let checkpoint = super::backup::checkpoint(ctx)?;
            serde_json::to_writer(&mut *out, &checkpoint)?;
            Ok(writeln!(out)?)
        }
    }
}

impl Command {
    /// What the command acts on, for the audit line the server logs (`user passwd
    /// anna@example.com`): an address, a domain, a queue or tracking id. Never a
    /// password, a hash or the contents of an import file.
    pub fn target(&self) -> Option<String> {
        use super::aliases::AliasCommand as A;
        use super::domains::DomainCommand as D;
        use super::outage::OutageCommand as O;
        use super::queue::QueueCommand as Q;
        use super::users::UserCommand as U;
        match self {
            Command::Domain(c) => match c {
                D::Add { name, .. }
                | D::Show { name }
                | D::Set { name, .. }
                | D::Remove { name }
                | D::DkimKeygen { name, .. } => Some(name.clone()),
                D::List { .. } => None,
            },
            Command::User(c) => match c {
                U::Add { address, .. }
                | U::Show { address }
                | U::Passwd { address, .. }
                | U::Set { address, .. }
                | U::Activate { address }
                | U::Deactivate { address }
                | U::Remove { address, .. } => Some(address.clone()),
                U::List { domain, .. } => domain.clone(),
                U::Import { file, .. } => Some(file.display().to_string()),
            },
            Command::Alias(c) => match c {
                A::Add { alias, user } => Some(format!("{alias} -> {user}")),
                A::Remove { alias } => Some(alias.clone()),
                A::List { domain, .. } => domain.clone(),
            },
            Command::Outage(c) => match c {
                O::Start { domain, .. } | O::Stop { domain, .. } => Some(domain.clone()),
                O::Status { domain, .. } => domain.clone(),
            },
            Command::Queue(c) => match c {
                Q::List { domain, .. } => domain.clone(),
                Q::Show { id } | Q::Purge { id, .. } | Q::Bounce { id, .. } => Some(id.to_string()),
                Q::Retry { target } => target.clone(),
                Q::Hold { domain } | Q::Release { domain } => Some(domain.clone()),
                Q::Redeliver { tracking_id } => Some(tracking_id.clone()),
            },
            Command::Track(a) => {
                a.id.clone()
                    .or_else(|| a.message_id.clone())
                    .or_else(|| a.address.clone())
            }
            Command::ClientSetup { address } => Some(address.clone()),
            Command::Ldap(super::ldap::LdapCommand::Sync { domain, .. }) => domain.clone(),
            Command::Checkpoint => None,
            Command::Admin(c) => match c {
                super::admins::AdminCommand::Add { name, .. }
                | super::admins::AdminCommand::Passwd { name, .. }
                | super::admins::AdminCommand::Remove { name } => Some(name.clone()),
                super::admins::AdminCommand::List => None,
                super::admins::AdminCommand::Token(t) => match t {
                    super::admins::TokenCommand::Add { admin, .. } => Some(admin.clone()),
                    super::admins::TokenCommand::Revoke { id } => Some(id.clone()),
                    super::admins::TokenCommand::List => None,
                },
            },
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
