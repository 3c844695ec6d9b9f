//! Users (mailboxes): `user add|list|show|passwd|set|activate|deactivate|remove`, and the
//! `import` subcommand's arguments (the import itself is in `import`). Each operation
//! takes typed arguments and returns a serialisable value (never a password hash);
//! [`execute`] runs a parsed [`UserCommand`] and writes the CLI's report.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use understudy_storage::{AccessLevel, AccessWindow, User, UserStatus};

use super::domains::{access_level, access_window, AccessArg, WindowArg};
use super::format::{or_dash, write_listing, ListFormat, Table};
use super::AdminContext;
use crate::outage::notify::format_time;
use crate::password_policy::PasswordTraits;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum UserCommand {
    /// Create a user with the default mailboxes.
    Add {
        /// The user's full address, in a protected domain.
        address: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long, conflicts_with = "random_password")]
        password_stdin: bool,
        /// Generate a random password and print it once.
        #[arg(long)]
        random_password: bool,
        /// Filled in by the CLI process (never a password: its argon2id hash).
        #[arg(skip)]
        password_hash: Option<String>,
        /// Filled in by the CLI process: what the server's password policy checks.
        #[arg(skip)]
        password_traits: Option<PasswordTraits>,
    },
    /// List users, of one domain or all: status, password, access, last logins.
    List {
        /// Only this domain.
        domain: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Everything about a user: policy and its source, aliases, mailboxes, last logins.
    Show {
        /// The user's address.
        address: String,
    },
    /// Set a password (prompted without echo, or read from stdin with --stdin).
    Passwd {
        /// The user's address.
        address: String,
        /// Read the new password from standard input (one line).
        #[arg(long)]
        stdin: bool,
        /// The user must choose a new password (the one set here is temporary).
        #[arg(long)]
        force_reset: bool,
        /// Filled in by the CLI process: the argon2id hash of the new password.
        #[arg(skip)]
        password_hash: Option<String>,
        /// Filled in by the CLI process: what the server's password policy checks.
        #[arg(skip)]
        password_traits: Option<PasswordTraits>,
    },
    /// Change a user's access policy, quota or name; unset flags keep the current value.
    Set {
        /// The user's address.
        address: String,
        /// Overrides the domain's access level.
        #[arg(long)]
        access: Option<AccessArg>,
        /// Overrides the domain's access window.
        #[arg(long)]
        access_window: Option<WindowArg>,
        /// Quota in bytes; 0 removes the limit.
        #[arg(long)]
        quota: Option<u64>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Drop the per-user access overrides: the domain's policy applies again.
        #[arg(long, conflicts_with_all = ["access", "access_window"])]
        domain_access: bool,
    },
    /// Create or update users from a CSV file: address, display name, password (empty:
    /// keep, or generate for a new user), aliases separated by `;`, status
    /// (active|inactive). A header row is optional. Running it twice changes nothing.
    Import {
        /// The CSV file (read by the CLI with your permissions).
        file: PathBuf,
        /// Report what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Write generated passwords to this file (mode 0600) instead of printing them.
        #[arg(long)]
        passwords_out: Option<PathBuf>,
        /// Filled in by the CLI process: the file's contents (the server may not be able
        /// to read the admin's file).
        #[arg(skip)]
        csv: Option<String>,
    },
    /// Let a deactivated user log in and receive mail again.
    Activate {
        /// The user's address.
        address: String,
    },
    /// Refuse the user's logins and mail (kept); open sessions end at once.
    Deactivate {
        /// The user's address.
        address: String,
    },
    /// Remove a user and all their mail.
    Remove {
        /// The user's address.
        address: String,
        /// Confirm that the user's mail is to be deleted.
        #[arg(long)]
        yes: bool,
    },
}

/// A change to a user's policy, quota or name (`user set`); `None` keeps the value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserSettings {
    pub access: Option<AccessArg>,
    pub access_window: Option<WindowArg>,
    /// Bytes; 0 removes the limit.
    pub quota: Option<u64>,
    pub name: Option<String>,
    /// Drop the per-user access overrides first.
    pub domain_access: bool,
}

/// One line of `user list`.
#[derive(Debug, Clone, Serialize)]
pub struct UserListing {
    pub address: String,
    pub status: UserStatus,
    pub display_name: String,
    pub password: PasswordState,
    /// The access level and window in force (the user's own or the domain's).
    pub access: AccessLevel,
    pub access_window: AccessWindow,
    /// Last successful login per protocol (`imap`, `pop3`, `submission`), Unix seconds.
    pub last_login: BTreeMap<String, i64>,
    pub messages: u64,
    pub bytes: u64,
}

/// Whether a user has a password (never the hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordState {
    NotSet,
    MustChange,
    Set,
}

/// A mailbox in a [`UserReport`].
#[derive(Debug, Clone, Serialize)]
pub struct MailboxSummary {
    pub name: String,
    pub messages: u32,
    pub uid_validity: u32,
    pub uid_next: u32,
}

/// Everything `user show` tells about a user.
#[derive(Debug, Clone, Serialize)]
pub struct UserReport {
    pub address: String,
    pub display_name: String,
    pub status: UserStatus,
    pub password: PasswordState,
    /// The access level in force, and whether it is the user's own (else the domain's).
    pub access: AccessLevel,
    pub access_own: bool,
    pub access_window: AccessWindow,
    pub access_window_own: bool,
    pub quota_bytes: Option<u64>,
    pub aliases: Vec<String>,
    pub messages: u64,
    pub bytes: u64,
    pub mailboxes: Vec<MailboxSummary>,
    /// Last successful login per protocol, Unix seconds.
    pub last_login: BTreeMap<String, i64>,
}

/// Runs a `user` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: UserCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            address,
            name,
            password_hash,
            password_traits,
            ..
        } => {
            let password = match password_hash {
                Some(hash) => Some(NewPassword::checked(ctx, hash, password_traits)?),
                None => None,
            };
            let user = add(ctx, &address, &name, password)?;
            writeln!(out, "added user {}", user.address)?;
            if user.password == PasswordState::NotSet {
                writeln!(
                    out,
                    "no password set yet: run `understudy user passwd {}`",
                    user.address
                )?;
            }
        }
        UserCommand::List { domain, format } => {
            let users = list(ctx, domain.as_deref())?;
            write_listing(format, &users, || list_table(&users), out)?;
        }
        UserCommand::Show { address } => print_user(&show(ctx, &address)?, out)?,
        UserCommand::Passwd {
            address,
            force_reset,
            password_hash,
            password_traits,
            ..
        } => {
            let Some(hash) = password_hash else {
                // The CLI always sends one; a hand-made request is told what is missing
                // once the user is known to exist.
                find(ctx, &address)?;
                bail!("no new password was given");
            };
            let password = NewPassword::checked(ctx, hash, password_traits)?;
            let address = passwd(ctx, &address, password, force_reset)?;
            writeln!(out, "password changed for {address}")?;
            if force_reset {
                writeln!(out, "{address} must choose a new password")?;
            }
        }
        UserCommand::Set {
            address,
            access,
            access_window,
            quota,
            name,
            domain_access,
        } => {
            let settings = UserSettings {
                access,
                access_window,
                quota,
                name,
                domain_access,
            };
            print_user(&set(ctx, &address, &settings)?, out)?;
        }
        UserCommand::Import {
            csv, dry_run, file, ..
        } => {
            let text = csv.with_context(|| format!("the contents of {} were not sent", file.display()))?;
            super::import::print(&super::import::run(ctx, &text, dry_run), out)?;
        }
        UserCommand::Activate { address } => {
            let address = set_status(ctx, &address, UserStatus::Active)?;
            writeln!(out, "{address} is now {:?}", UserStatus::Active)?;
        }
        UserCommand::Deactivate { address } => {
            let address = set_status(ctx, &address, UserStatus::Inactive)?;
            writeln!(out, "{address} is now {:?}", UserStatus::Inactive)?;
        }
        UserCommand::Remove { address, yes } => {
            remove(ctx, &address, yes)?;
            writeln!(out, "removed user {address}")?;
        }
    }
    Ok(())
}

/// A new password as an argon2id PHC string (hashed where it was typed, never here)
/// that the policy of the process running the command accepted.
#[derive(Debug, Clone)]
pub struct NewPassword(String);

impl NewPassword {
    /// Checks `traits` (sent by the CLI beside the hash) against this process's policy:
    /// in the server, the server's policy as last reloaded.
    pub fn checked(
        ctx: &AdminContext,
        hash: String,
        traits: Option<PasswordTraits>,
    ) -> anyhow::Result<NewPassword> {
        let traits = traits.context(
            "the request has no password traits to check against the password policy; use a CLI of the same release",
        )?;
        traits
            .check(&ctx.config.password_policy)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(NewPassword(hash))
    }
}

/// Creates a user with the default mailboxes.
pub fn add(
    ctx: &AdminContext,
    address: &str,
    name: &str,
    password: Option<NewPassword>,
) -> anyhow::Result<UserReport> {
    let user = ctx.store.create_user(address, name, password.map(|p| p.0))?;
    report(ctx, user)
}

/// Users of one domain, or of every domain.
pub fn list(ctx: &AdminContext, domain: Option<&str>) -> anyhow::Result<Vec<UserListing>> {
    let domains = super::domain_names(ctx, domain)?;
    let mut listing = Vec::new();
    for d in domains {
        let settings = ctx
            .store
            .domain(&d)?
            .with_context(|| format!("{d} is not a protected domain"))?;
        for u in ctx.store.users(&d)? {
            let (messages, bytes) = ctx.store.usage(u.id)?;
            listing.push(UserListing {
                password: password_state(&u),
                access: u.access.unwrap_or(settings.access),
                access_window: u.access_window.unwrap_or(settings.access_window),
                last_login: ctx.store.last_logins(u.id)?,
                address: u.address,
                status: u.status,
                display_name: u.display_name,
                messages,
                bytes,
            });
        }
    }
    Ok(listing)
}

fn list_table(users: &[UserListing]) -> Table {
    let mut t = Table::new(&[
        "ADDRESS",
        "STATUS",
        "PASSWORD",
        "ACCESS",
        "LAST IMAP",
        "LAST POP3",
        "LAST SUBMISSION",
        "MESSAGES",
        "NAME",
    ]);
    for u in users {
        let last = |proto: &str| {
            u.last_login
                .get(proto)
                .map(|at| format_time(*at))
                .unwrap_or_else(|| "never".into())
        };
        t.push(vec![
            u.address.clone(),
            format!("{:?}", u.status).to_lowercase(),
            password_text(u.password).into(),
            access_text(u.access, u.access_window),
            last("imap"),
            last("pop3"),
            last("submission"),
            u.messages.to_string(),
            or_dash(u.display_name.clone()),
        ]);
    }
    t
}

fn password_state(u: &User) -> PasswordState {
    match (&u.password_hash, u.force_password_reset) {
        (None, _) => PasswordState::NotSet,
        (Some(_), true) => PasswordState::MustChange,
        (Some(_), false) => PasswordState::Set,
    }
}

fn password_text(p: PasswordState) -> &'static str {
    match p {
        PasswordState::NotSet => "not set",
        PasswordState::MustChange => "must change",
        PasswordState::Set => "set",
    }
}

fn access_text(level: AccessLevel, window: AccessWindow) -> String {
    let level = match level {
        AccessLevel::Full => "full",
        AccessLevel::ReadOnly => "read-only",
        AccessLevel::None => "none",
    };
    match window {
        AccessWindow::Always => level.to_string(),
        AccessWindow::OutageOnly => format!("{level} (outage only)"),
    }
}

pub fn show(ctx: &AdminContext, address: &str) -> anyhow::Result<UserReport> {
    report(ctx, find(ctx, address)?)
}

/// Sets a new password hash; the user's open sessions end (the old password may be known
/// to someone else). Returns the user's address as stored.
pub fn passwd(
    ctx: &AdminContext,
    address: &str,
    password: NewPassword,
    force_reset: bool,
) -> anyhow::Result<String> {
    let mut u = find(ctx, address)?;
    u.password_hash = Some(password.0);
    u.force_password_reset = force_reset;
    ctx.store.update_user(&u)?;
    // A password is changed when it may be known to someone else: sessions opened with
    // the old one end.
    ctx.events.revoked(u.id);
    Ok(u.address)
}

pub fn set(ctx: &AdminContext, address: &str, settings: &UserSettings) -> anyhow::Result<UserReport> {
    let mut u = find(ctx, address)?;
    let policy_before = (u.access, u.access_window);
    if settings.domain_access {
        u.access = None;
        u.access_window = None;
    }
    if let Some(a) = settings.access {
        u.access = Some(access_level(a));
    }
    if let Some(w) = settings.access_window {
        u.access_window = Some(access_window(w));
    }
    if let Some(q) = settings.quota {
        u.quota_bytes = (q > 0).then_some(q);
    }
    if let Some(n) = &settings.name {
        u.display_name = n.clone();
    }
    ctx.store.update_user(&u)?;
    if (u.access, u.access_window) != policy_before {
        // Sessions opened under the old policy end now; clients reconnect under the new
        // one (or are refused).
        ctx.events.revoked(u.id);
    }
    show(ctx, &u.address)
}

/// Activates or deactivates a user (deactivated: open sessions end now). Returns the
/// user's address as stored.
pub fn set_status(ctx: &AdminContext, address: &str, status: UserStatus) -> anyhow::Result<String> {
    let mut u = find(ctx, address)?;
    u.status = status;
    ctx.store.update_user(&u)?;
    if status == UserStatus::Inactive {
        // Open sessions end now, not at their next login.
        ctx.events.revoked(u.id);
    }
    Ok(u.address)
}

/// Removes a user and all their mail; `confirmed` is the admin's `--yes`.
pub fn remove(ctx: &AdminContext, address: &str, confirmed: bool) -> anyhow::Result<()> {
    if !confirmed {
        bail!("removing {address} deletes all their mail; repeat with --yes to confirm");
    }
    let id = ctx.store.user_by_address(address)?.map(|u| u.id);
    ctx.store.remove_user(address)?;
    if let Some(id) = id {
        ctx.events.revoked(id);
    }
    Ok(())
}

fn find(ctx: &AdminContext, address: &str) -> anyhow::Result<User> {
    ctx.store
        .user_by_address(address)?
        .with_context(|| format!("there is no user {address}"))
}

fn report(ctx: &AdminContext, u: User) -> anyhow::Result<UserReport> {
    let store = ctx.store;
    let domain = store.domain(u.domain())?.unwrap_or_default();
    let (messages, bytes) = store.usage(u.id)?;
    let password = password_state(&u);
    let mailboxes = store
        .mailboxes(u.id)?
        .into_iter()
        .map(|m| MailboxSummary {
            name: m.name,
            messages: m.exists,
            uid_validity: m.uid_validity,
            uid_next: m.uid_next,
        })
        .collect();
    Ok(UserReport {
        last_login: store.last_logins(u.id)?,
        aliases: store.aliases_of(u.id)?,
        access: u.access.unwrap_or(domain.access),
        access_own: u.access.is_some(),
        access_window: u.access_window.unwrap_or(domain.access_window),
        access_window_own: u.access_window.is_some(),
        quota_bytes: u.quota_bytes,
        address: u.address,
        display_name: u.display_name,
        status: u.status,
        password,
        messages,
        bytes,
        mailboxes,
    })
}

fn print_user(u: &UserReport, out: &mut dyn Write) -> std::io::Result<()> {
    let password = match u.password {
        PasswordState::NotSet => "not set",
        PasswordState::MustChange => "set (must be changed)",
        PasswordState::Set => "set",
    };
    let source = |own: bool| if own { "user" } else { "domain default" };
    writeln!(out, "address:       {}", u.address)?;
    writeln!(out, "name:          {}", u.display_name)?;
    writeln!(out, "status:        {:?}", u.status)?;
    writeln!(out, "password:      {password}")?;
    writeln!(out, "access:        {:?} ({})", u.access, source(u.access_own))?;
    writeln!(
        out,
        "access window: {:?} ({})",
        u.access_window,
        source(u.access_window_own)
    )?;
    writeln!(
        out,
        "quota:         {}",
        u.quota_bytes
            .map(|q| format!("{q} bytes"))
            .unwrap_or_else(|| "unlimited".into())
    )?;
    writeln!(out, "aliases:       {}", u.aliases.join(", "))?;
    writeln!(out, "mail:          {} messages, {} bytes", u.messages, u.bytes)?;
    for proto in ["imap", "pop3", "submission"] {
        writeln!(
            out,
            "last {:<9} {}",
            format!("{proto}:"),
            u.last_login
                .get(proto)
                .map(|at| format_time(*at))
                .unwrap_or_else(|| "never".into())
        )?;
    }
    for m in &u.mailboxes {
        writeln!(
            out,
            "  {:<20} {:>6} messages  uidvalidity {}  uidnext {}",
            m.name, m.messages, m.uid_validity, m.uid_next
        )?;
    }
    Ok(())
}
