//! Command-line interface: `serve` and the admin subcommands (domains, users, aliases,
//! config check). Each admin command is a function of an [`AdminContext`] (the store)
//! and its parsed arguments that writes its report to `out`; [`run_admin`] sends the
//! parsed command to a running server over its admin socket (see `crate::admin`) or,
//! when none runs, opens the database directly and runs the same function here.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use understudy_protocol::Secret;
use understudy_storage::{
    AccessLevel, AccessWindow, DeliveryMode, Domain, Engagement, RelayTls, Store, UserStatus,
};

use crate::admin::AdminContext;
use crate::auth;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "understudy", version, about = "Email continuity server")]
pub struct Cli {
    /// Configuration file; without it the built-in development defaults are used.
    #[arg(long, short, global = true, env = "UNDERSTUDY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Check the configuration and report every problem.
    CheckConfig,
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
    Outage(crate::outage::cli::OutageCommand),
    /// The relay, outbound and notification queue.
    #[command(subcommand)]
    Queue(crate::outage::cli::QueueCommand),
    /// A message's life: received, stored, queued, attempts, delivered...
    Track(crate::outage::cli::TrackArgs),
    /// Write a consistent copy of the database (a RocksDB checkpoint) into DIR, which must
    /// not exist; safe while the server runs. Restore: stop the server, replace
    /// `<data_dir>/db` with the copy, start it.
    Backup { dir: PathBuf },
    /// Print the mail settings a user needs during an outage.
    ClientSetup { address: String },
    /// Users from an LDAP directory or Active Directory.
    #[command(subcommand)]
    Ldap(crate::ldap::LdapCommand),
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum DomainCommand {
    /// Add a protected domain.
    Add {
        name: String,
        #[command(flatten)]
        settings: DomainSettings,
    },
    List,
    Show {
        name: String,
    },
    /// Change settings of a domain.
    Set {
        name: String,
        #[command(flatten)]
        settings: DomainSettings,
    },
    /// Remove a domain that has no users or aliases left.
    Remove {
        name: String,
    },
    /// Create a DKIM key for mail sent during outages, set it on the domain and print
    /// the DNS records to publish.
    DkimKeygen {
        name: String,
        #[arg(long, default_value = "understudy")]
        selector: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum ModeArg {
    Relay,
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum TlsArg {
    Opportunistic,
    Required,
    Disabled,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum EngagementArg {
    Automatic,
    Manual,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum AccessArg {
    Full,
    ReadOnly,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum WindowArg {
    Always,
    OutageOnly,
}

/// Domain settings (SPEC "Domains"); unset flags keep the current value.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct DomainSettings {
    /// relay: queue and redeliver only; both: also keep a shadow mailbox.
    #[arg(long)]
    pub mode: Option<ModeArg>,
    /// Primary server, host[:port].
    #[arg(long)]
    pub relay_host: Option<String>,
    #[arg(long)]
    pub relay_tls: Option<TlsArg>,
    #[arg(long)]
    pub engagement: Option<EngagementArg>,
    #[arg(long)]
    pub monitoring: Option<bool>,
    #[arg(long)]
    pub probe_interval: Option<u32>,
    /// Failed probes in a row before an outage is engaged.
    #[arg(long)]
    pub failures: Option<u32>,
    /// Successful probes in a row before it is recovered.
    #[arg(long)]
    pub successes: Option<u32>,
    /// Alert recipient (repeat up to four times; replaces the list).
    #[arg(long = "alert")]
    pub alerts: Vec<String>,
    #[arg(long)]
    pub access: Option<AccessArg>,
    #[arg(long)]
    pub access_window: Option<WindowArg>,
    #[arg(long)]
    pub retention_days: Option<u32>,
    #[arg(long)]
    pub queue_lifetime_days: Option<u32>,
    #[arg(long)]
    pub dkim_selector: Option<String>,
    #[arg(long)]
    pub dkim_key: Option<String>,
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum UserCommand {
    /// Create a user with the default mailboxes.
    Add {
        address: String,
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
    },
    /// List users, of one domain or all.
    List {
        domain: Option<String>,
    },
    Show {
        address: String,
    },
    /// Set a password (prompted without echo, or read from stdin with --stdin).
    Passwd {
        address: String,
        #[arg(long)]
        stdin: bool,
        /// The user must choose a new password (the one set here is temporary).
        #[arg(long)]
        force_reset: bool,
        /// Filled in by the CLI process: the argon2id hash of the new password.
        #[arg(skip)]
        password_hash: Option<String>,
    },
    /// Change a user's access policy, quota or name; unset flags keep the current value.
    Set {
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
    Activate {
        address: String,
    },
    Deactivate {
        address: String,
    },
    /// Remove a user and all their mail.
    Remove {
        address: String,
        /// Confirm that the user's mail is to be deleted.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AliasCommand {
    /// Deliver mail for ALIAS to USER.
    Add {
        alias: String,
        user: String,
    },
    Remove {
        alias: String,
    },
    List {
        domain: Option<String>,
    },
}

/// Loads the configuration named on the command line, or the dev defaults.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::dev()?,
    })
}

/// Opens the database for an admin command when no server is running.
pub(crate) fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.db_dir()).map_err(|e| {
        if e.to_string().contains("lock") {
            anyhow::anyhow!(
                "the database in {} is in use by another process, but no server answers on its admin socket {}",
                config.db_dir().display(),
                crate::admin::socket_path(config).display()
            )
        } else {
            e.into()
        }
    })
}

/// Runs an admin subcommand (everything but `serve`): through the running server's
/// admin socket when there is one, else directly on the database.
pub fn run_admin(config: &Config, command: Command) -> anyhow::Result<()> {
    if let Command::CheckConfig = command {
        for warning in config.warnings() {
            eprintln!("warning: {warning}");
        }
        println!("configuration is valid");
        return Ok(());
    }
    let (command, shown_password) = prepare(config, command)?;
    crate::admin::run(config, command)?;
    if let Some(pw) = shown_password {
        println!("password: {}", pw.expose());
    }
    Ok(())
}

/// Does in the CLI process what must not or cannot happen in the server: new passwords
/// are read and hashed here so that only the argon2id hash crosses the admin socket, and
/// the import file is read here with the admin's own permissions. Returns the command
/// to run and a generated password to print once it succeeded.
fn prepare(config: &Config, command: Command) -> anyhow::Result<(Command, Option<Secret>)> {
    Ok(match command {
        Command::User(UserCommand::Add {
            address,
            name,
            password_stdin,
            random_password,
            password_hash: _,
        }) => {
            let (hash, shown) = if random_password {
                let pw = Secret::new(auth::random_password());
                (Some(checked_hash(config, &pw)?), Some(pw))
            } else if password_stdin {
                (Some(checked_hash(config, &read_new_password(true)?)?), None)
            } else {
                (None, None)
            };
            let command = UserCommand::Add {
                address,
                name,
                password_stdin,
                random_password,
                password_hash: hash,
            };
            (Command::User(command), shown)
        }
        Command::User(UserCommand::Passwd {
            address,
            stdin,
            force_reset,
            password_hash: _,
        }) => {
            let hash = checked_hash(config, &read_new_password(stdin)?)?;
            let command = UserCommand::Passwd {
                address,
                stdin,
                force_reset,
                password_hash: Some(hash),
            };
            (Command::User(command), None)
        }
        Command::User(UserCommand::Import {
            file,
            dry_run,
            passwords_out,
            csv: _,
        }) => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let command = UserCommand::Import {
                file,
                dry_run,
                passwords_out,
                csv: Some(text),
            };
            (Command::User(command), None)
        }
        // The server may run in another directory: send an absolute path.
        Command::Backup { dir } => {
            let dir = if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()?.join(dir)
            };
            if dir.exists() {
                bail!(
                    "{} already exists; a backup goes into a new directory",
                    dir.display()
                );
            }
            (Command::Backup { dir }, None)
        }
        other => (other, None),
    })
}

/// Runs one admin command against the store, writing its report to `out`. The server
/// runs this for requests on its admin socket; the CLI runs it when no server runs. A
/// new subcommand needs one line here.
pub fn execute(ctx: &AdminContext, command: Command, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Serve => bail!("serve is not an admin command"),
        Command::CheckConfig => Ok(writeln!(out, "configuration is valid")?),
        Command::Domain(c) => domain(ctx, c, out),
        Command::User(c) => user(ctx, c, out),
        Command::Alias(c) => alias(ctx.store, c, out),
        Command::Outage(c) => crate::outage::cli::outage(ctx.store, &ctx.config.hostname, c, out),
        Command::Queue(c) => crate::outage::cli::queue(ctx.store, c, out),
        Command::Track(a) => crate::outage::cli::track(ctx.store, a, out),
        Command::Ldap(c) => crate::ldap::command(ctx, c, out),
        Command::ClientSetup { address } => {
            match crate::autoconfig::settings(ctx.config, ctx.store, &address) {
                Some(s) => Ok(write!(out, "{}", crate::autoconfig::describe(&s))?),
                None => bail!("{address} is not an address of a protected domain"),
            }
        }
        Command::Backup { dir } => {
            ctx.store
                .checkpoint(&dir)
                .with_context(|| format!("backup into {}", dir.display()))?;
            Ok(writeln!(out, "backup written to {}", dir.display())?)
        }
    }
}

fn apply_settings(domain: &mut Domain, s: &DomainSettings) {
    if let Some(m) = s.mode {
        domain.delivery_mode = match m {
            ModeArg::Relay => DeliveryMode::Relay,
            ModeArg::Both => DeliveryMode::Both,
        };
    }
    if let Some(h) = &s.relay_host {
        domain.relay_host = (!h.is_empty()).then(|| h.clone());
    }
    if let Some(t) = s.relay_tls {
        domain.relay_tls = match t {
            TlsArg::Opportunistic => RelayTls::Opportunistic,
            TlsArg::Required => RelayTls::Required,
            TlsArg::Disabled => RelayTls::Disabled,
        };
    }
    if let Some(e) = s.engagement {
        domain.engagement = match e {
            EngagementArg::Automatic => Engagement::Automatic,
            EngagementArg::Manual => Engagement::Manual,
        };
    }
    if let Some(v) = s.monitoring {
        domain.monitoring = v;
    }
    if let Some(v) = s.probe_interval {
        domain.probe_interval_secs = v;
    }
    if let Some(v) = s.failures {
        domain.failures_before_engage = v;
    }
    if let Some(v) = s.successes {
        domain.successes_before_recover = v;
    }
    if !s.alerts.is_empty() {
        domain.alert_recipients = s.alerts.iter().map(|a| a.trim().to_ascii_lowercase()).collect();
    }
    if let Some(a) = s.access {
        domain.access = access_level(a);
    }
    if let Some(w) = s.access_window {
        domain.access_window = access_window(w);
    }
    if let Some(v) = s.retention_days {
        domain.retention_days = v;
    }
    if let Some(v) = s.queue_lifetime_days {
        domain.queue_lifetime_days = v;
    }
    if let Some(v) = &s.dkim_selector {
        domain.dkim_selector = (!v.is_empty()).then(|| v.clone());
    }
    if let Some(v) = &s.dkim_key {
        domain.dkim_key_path = (!v.is_empty()).then(|| v.clone());
    }
}

fn access_level(a: AccessArg) -> AccessLevel {
    match a {
        AccessArg::Full => AccessLevel::Full,
        AccessArg::ReadOnly => AccessLevel::ReadOnly,
        AccessArg::None => AccessLevel::None,
    }
}

fn access_window(w: WindowArg) -> AccessWindow {
    match w {
        WindowArg::Always => AccessWindow::Always,
        WindowArg::OutageOnly => AccessWindow::OutageOnly,
    }
}

fn print_domain(d: &Domain, out: &mut dyn Write) -> std::io::Result<()> {
    let list = |v: &Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "domain:              {}", d.name)?;
    writeln!(out, "delivery mode:       {:?}", d.delivery_mode)?;
    writeln!(out, "relay host:          {}", opt(&d.relay_host))?;
    writeln!(out, "relay TLS:           {:?}", d.relay_tls)?;
    writeln!(out, "engagement:          {:?}", d.engagement)?;
    writeln!(
        out,
        "monitoring:          {} (every {} s, engage after {} failures, recover after {} successes)",
        d.monitoring, d.probe_interval_secs, d.failures_before_engage, d.successes_before_recover
    )?;
    writeln!(out, "alert recipients:    {}", list(&d.alert_recipients))?;
    writeln!(out, "access:              {:?}, {:?}", d.access, d.access_window)?;
    writeln!(out, "retention:           {} days", d.retention_days)?;
    writeln!(out, "queue lifetime:      {} days", d.queue_lifetime_days)?;
    writeln!(
        out,
        "DKIM:                selector {}, key {}",
        opt(&d.dkim_selector),
        opt(&d.dkim_key_path)
    )
}

fn domain(ctx: &AdminContext, command: DomainCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = ctx.store;
    match command {
        DomainCommand::DkimKeygen { name, selector } => {
            let mut d = store
                .domain(&name)?
                .with_context(|| format!("no domain {name}"))?;
            let record = crate::dkim::keygen(&ctx.config.data_dir, &d.name, &selector)?;
            d.dkim_selector = Some(selector.clone());
            d.dkim_key_path = Some(record.key_path.display().to_string());
            store.update_domain(&d)?;
            writeln!(
                out,
                "DKIM key for {} written to {} (mode 0600)",
                d.name,
                record.key_path.display()
            )?;
            writeln!(
                out,
                "Publish this TXT record, then mail sent during outages is signed:"
            )?;
            writeln!(
                out,
                "  {}._domainkey.{}. IN TXT \"{}\"",
                selector, d.name, record.txt
            )?;
            writeln!(
                out,
                "And let the server send for the domain in its SPF record, e.g. add \"a:{}\":",
                ctx.config.hostname
            )?;
            writeln!(
                out,
                "  {}. IN TXT \"v=spf1 mx a:{} ~all\"",
                d.name, ctx.config.hostname
            )?;
        }
        DomainCommand::Add { name, settings } => {
            let mut d = Domain::new(&name);
            apply_settings(&mut d, &settings);
            let d = store.add_domain(&d)?;
            writeln!(out, "added domain {}", d.name)?;
        }
        DomainCommand::List => {
            for d in store.domains()? {
                let users = store.users(&d.name)?.len();
                writeln!(
                    out,
                    "{}\t{:?}\t{}\t{} users",
                    d.name,
                    d.delivery_mode,
                    d.relay_host.as_deref().unwrap_or("-"),
                    users
                )?;
            }
        }
        DomainCommand::Show { name } => {
            let d = store
                .domain(&name)?
                .with_context(|| format!("no domain {name}"))?;
            print_domain(&d, out)?;
        }
        DomainCommand::Set { name, settings } => {
            let mut d = store
                .domain(&name)?
                .with_context(|| format!("no domain {name}"))?;
            let policy_before = (d.access, d.access_window);
            apply_settings(&mut d, &settings);
            store.update_domain(&d)?;
            if (d.access, d.access_window) != policy_before {
                // Users on the domain default get the new policy now, not at next login.
                for u in store.users(&d.name)? {
                    if u.access.is_none() || u.access_window.is_none() {
                        ctx.events.revoked(u.id);
                    }
                }
            }
            print_domain(&d, out)?;
        }
        DomainCommand::Remove { name } => {
            store.remove_domain(&name)?;
            writeln!(out, "removed domain {name}")?;
        }
    }
    Ok(())
}

/// Reads a new password: from stdin (one line) or prompted twice without echo.
fn read_new_password(from_stdin: bool) -> anyhow::Result<Secret> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(Secret::new(line.trim_end_matches(['\r', '\n'])));
    }
    let first = rpassword::prompt_password("New password: ")?;
    let second = rpassword::prompt_password("Repeat it: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(Secret::new(first))
}

pub(crate) fn checked_hash(config: &Config, password: &Secret) -> anyhow::Result<String> {
    auth::check_policy(&config.password_policy, password.expose()).map_err(|e| anyhow::anyhow!(e))?;
    auth::hash_password(password)
}

fn user(ctx: &AdminContext, command: UserCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = ctx.store;
    match command {
        UserCommand::Add {
            address,
            name,
            password_hash,
            ..
        } => {
            let user = store.create_user(&address, &name, password_hash)?;
            writeln!(out, "added user {}", user.address)?;
            if user.password_hash.is_none() {
                writeln!(
                    out,
                    "no password set yet: run `understudy user passwd {}`",
                    user.address
                )?;
            }
        }
        UserCommand::List { domain } => {
            let domains = match domain {
                Some(d) => vec![d],
                None => store.domains()?.into_iter().map(|d| d.name).collect(),
            };
            for d in domains {
                for u in store.users(&d)? {
                    let (messages, bytes) = store.usage(u.id)?;
                    writeln!(
                        out,
                        "{}\t{:?}\t{}\t{} messages\t{} bytes",
                        u.address, u.status, u.display_name, messages, bytes
                    )?;
                }
            }
        }
        UserCommand::Show { address } => show_user(store, &address, out)?,
        UserCommand::Passwd {
            address,
            force_reset,
            password_hash,
            ..
        } => {
            let mut u = store
                .user_by_address(&address)?
                .with_context(|| format!("no user {address}"))?;
            u.password_hash = Some(password_hash.context("no new password was given")?);
            u.force_password_reset = force_reset;
            store.update_user(&u)?;
            // A password is changed when it may be known to someone else: sessions
            // opened with the old one end.
            ctx.events.revoked(u.id);
            writeln!(out, "password changed for {}", u.address)?;
            if force_reset {
                writeln!(out, "{} must choose a new password", u.address)?;
            }
        }
        UserCommand::Set {
            address,
            access,
            access_window: window,
            quota,
            name,
            domain_access,
        } => {
            let mut u = store
                .user_by_address(&address)?
                .with_context(|| format!("no user {address}"))?;
            let policy_before = (u.access, u.access_window);
            if domain_access {
                u.access = None;
                u.access_window = None;
            }
            if let Some(a) = access {
                u.access = Some(access_level(a));
            }
            if let Some(w) = window {
                u.access_window = Some(access_window(w));
            }
            if let Some(q) = quota {
                u.quota_bytes = (q > 0).then_some(q);
            }
            if let Some(n) = name {
                u.display_name = n;
            }
            store.update_user(&u)?;
            if (u.access, u.access_window) != policy_before {
                // Sessions opened under the old policy end now; clients reconnect
                // under the new one (or are refused).
                ctx.events.revoked(u.id);
            }
            show_user(store, &u.address, out)?;
        }
        UserCommand::Import {
            csv, dry_run, file, ..
        } => {
            let text = csv.with_context(|| format!("the contents of {} were not sent", file.display()))?;
            crate::admin::import::run(ctx, &text, dry_run, out)?;
        }
        UserCommand::Activate { address } => set_status(ctx, &address, UserStatus::Active, out)?,
        UserCommand::Deactivate { address } => set_status(ctx, &address, UserStatus::Inactive, out)?,
        UserCommand::Remove { address, yes } => {
            if !yes {
                bail!("removing {address} deletes all their mail; repeat with --yes to confirm");
            }
            let id = store.user_by_address(&address)?.map(|u| u.id);
            store.remove_user(&address)?;
            if let Some(id) = id {
                ctx.events.revoked(id);
            }
            writeln!(out, "removed user {address}")?;
        }
    }
    Ok(())
}

fn show_user(store: &Store, address: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let u = store
        .user_by_address(address)?
        .with_context(|| format!("no user {address}"))?;
    let domain = store.domain(u.domain())?.unwrap_or_default();
    let (messages, bytes) = store.usage(u.id)?;
    let password = match (&u.password_hash, u.force_password_reset) {
        (None, _) => "not set",
        (Some(_), true) => "set (must be changed)",
        (Some(_), false) => "set",
    };
    let source = |own: bool| if own { "user" } else { "domain default" };
    writeln!(out, "address:       {}", u.address)?;
    writeln!(out, "name:          {}", u.display_name)?;
    writeln!(out, "status:        {:?}", u.status)?;
    writeln!(out, "password:      {password}")?;
    writeln!(
        out,
        "access:        {:?} ({})",
        u.access.unwrap_or(domain.access),
        source(u.access.is_some())
    )?;
    writeln!(
        out,
        "access window: {:?} ({})",
        u.access_window.unwrap_or(domain.access_window),
        source(u.access_window.is_some())
    )?;
    writeln!(
        out,
        "quota:         {}",
        u.quota_bytes
            .map(|q| format!("{q} bytes"))
            .unwrap_or_else(|| "unlimited".into())
    )?;
    writeln!(out, "aliases:       {}", store.aliases_of(u.id)?.join(", "))?;
    writeln!(out, "mail:          {messages} messages, {bytes} bytes")?;
    for m in store.mailboxes(u.id)? {
        writeln!(
            out,
            "  {:<20} {:>6} messages  uidvalidity {}  uidnext {}",
            m.name, m.exists, m.uid_validity, m.uid_next
        )?;
    }
    Ok(())
}

fn set_status(
    ctx: &AdminContext,
    address: &str,
    status: UserStatus,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut u = ctx
        .store
        .user_by_address(address)?
        .with_context(|| format!("no user {address}"))?;
    u.status = status;
    ctx.store.update_user(&u)?;
    if status == UserStatus::Inactive {
        // Open sessions end now, not at their next login.
        ctx.events.revoked(u.id);
    }
    writeln!(out, "{} is now {:?}", u.address, status)?;
    Ok(())
}

fn alias(store: &Store, command: AliasCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AliasCommand::Add { alias, user } => {
            store.add_alias(&alias, &user)?;
            writeln!(out, "{alias} now delivers to {user}")?;
        }
        AliasCommand::Remove { alias } => {
            store.remove_alias(&alias)?;
            writeln!(out, "removed alias {alias}")?;
        }
        AliasCommand::List { domain } => {
            let domains = match domain {
                Some(d) => vec![d],
                None => store.domains()?.into_iter().map(|d| d.name).collect(),
            };
            for d in domains {
                for (alias, target) in store.aliases(&d)? {
                    writeln!(out, "{alias}\t-> {target}")?;
                }
            }
        }
    }
    Ok(())
}
