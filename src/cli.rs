//! Command-line interface: `serve` and the admin subcommands (domains, users, aliases,
//! config check). Admin commands open the database directly; a later change routes them
//! through the running server's admin socket.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use understudy_protocol::Secret;
use understudy_storage::{
    AccessLevel, AccessWindow, DeliveryMode, Domain, Engagement, RelayTls, Store, UserStatus,
};

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

#[derive(Debug, Subcommand)]
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
}

#[derive(Debug, Subcommand)]
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Relay,
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TlsArg {
    Opportunistic,
    Required,
    Disabled,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngagementArg {
    Automatic,
    Manual,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccessArg {
    Full,
    ReadOnly,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WindowArg {
    Always,
    OutageOnly,
}

/// Domain settings (SPEC "Domains"); unset flags keep the current value.
#[derive(Debug, Clone, Default, Args)]
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

#[derive(Debug, Subcommand)]
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

#[derive(Debug, Subcommand)]
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

fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.db_dir()).map_err(|e| {
        if e.to_string().contains("lock") {
            anyhow::anyhow!(
                "the database in {} is in use by a running server; stop it first (admin commands reach a running server through its admin socket in a later release)",
                config.db_dir().display()
            )
        } else {
            e.into()
        }
    })
}

/// Runs an admin subcommand (everything but `serve`).
pub fn run_admin(config: &Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => bail!("serve is not an admin command"),
        Command::CheckConfig => {
            println!("configuration is valid");
            Ok(())
        }
        Command::Domain(c) => domain(config, c),
        Command::User(c) => user(config, c),
        Command::Alias(c) => alias(config, c),
        Command::Outage(c) => {
            crate::outage::cli::outage(&open_store(config)?, &config.hostname, c, &mut std::io::stdout())
        }
        Command::Queue(c) => crate::outage::cli::queue(&open_store(config)?, c, &mut std::io::stdout()),
        Command::Track(a) => crate::outage::cli::track(&open_store(config)?, a, &mut std::io::stdout()),
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

fn print_domain(d: &Domain) {
    let list = |v: &Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("domain:              {}", d.name);
    println!("delivery mode:       {:?}", d.delivery_mode);
    println!("relay host:          {}", opt(&d.relay_host));
    println!("relay TLS:           {:?}", d.relay_tls);
    println!("engagement:          {:?}", d.engagement);
    println!(
        "monitoring:          {} (every {} s, engage after {} failures, recover after {} successes)",
        d.monitoring, d.probe_interval_secs, d.failures_before_engage, d.successes_before_recover
    );
    println!("alert recipients:    {}", list(&d.alert_recipients));
    println!("access:              {:?}, {:?}", d.access, d.access_window);
    println!("retention:           {} days", d.retention_days);
    println!("queue lifetime:      {} days", d.queue_lifetime_days);
    println!(
        "DKIM:                selector {}, key {}",
        opt(&d.dkim_selector),
        opt(&d.dkim_key_path)
    );
}

fn domain(config: &Config, command: DomainCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        DomainCommand::Add { name, settings } => {
            let mut d = Domain::new(&name);
            apply_settings(&mut d, &settings);
            let d = store.add_domain(&d)?;
            println!("added domain {}", d.name);
        }
        DomainCommand::List => {
            for d in store.domains()? {
                let users = store.users(&d.name)?.len();
                println!(
                    "{}\t{:?}\t{}\t{} users",
                    d.name,
                    d.delivery_mode,
                    d.relay_host.as_deref().unwrap_or("-"),
                    users
                );
            }
        }
        DomainCommand::Show { name } => {
            let d = store
                .domain(&name)?
                .with_context(|| format!("no domain {name}"))?;
            print_domain(&d);
        }
        DomainCommand::Set { name, settings } => {
            let mut d = store
                .domain(&name)?
                .with_context(|| format!("no domain {name}"))?;
            apply_settings(&mut d, &settings);
            store.update_domain(&d)?;
            print_domain(&d);
        }
        DomainCommand::Remove { name } => {
            store.remove_domain(&name)?;
            println!("removed domain {name}");
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

fn checked_hash(config: &Config, password: &Secret) -> anyhow::Result<String> {
    auth::check_policy(&config.password_policy, password.expose()).map_err(|e| anyhow::anyhow!(e))?;
    auth::hash_password(password)
}

fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        UserCommand::Add {
            address,
            name,
            password_stdin,
            random_password,
        } => {
            let (hash, shown) = if random_password {
                let pw = Secret::new(auth::random_password());
                (Some(checked_hash(config, &pw)?), Some(pw))
            } else if password_stdin {
                (Some(checked_hash(config, &read_new_password(true)?)?), None)
            } else {
                (None, None)
            };
            let user = store.create_user(&address, &name, hash)?;
            println!("added user {}", user.address);
            if let Some(pw) = shown {
                println!("password: {}", pw.expose());
            } else if user.password_hash.is_none() {
                println!(
                    "no password set yet: run `understudy user passwd {}`",
                    user.address
                );
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
                    println!(
                        "{}\t{:?}\t{}\t{} messages\t{} bytes",
                        u.address, u.status, u.display_name, messages, bytes
                    );
                }
            }
        }
        UserCommand::Show { address } => {
            let u = store
                .user_by_address(&address)?
                .with_context(|| format!("no user {address}"))?;
            let (messages, bytes) = store.usage(u.id)?;
            println!("address:      {}", u.address);
            println!("name:         {}", u.display_name);
            println!("status:       {:?}", u.status);
            println!(
                "password:     {}",
                if u.password_hash.is_some() {
                    "set"
                } else {
                    "not set"
                }
            );
            println!(
                "access:       {}",
                u.access
                    .map(|a| format!("{a:?}"))
                    .unwrap_or_else(|| "domain default".into())
            );
            println!("aliases:      {}", store.aliases_of(u.id)?.join(", "));
            println!("mail:         {messages} messages, {bytes} bytes");
            for m in store.mailboxes(u.id)? {
                println!(
                    "  {:<20} {:>6} messages  uidvalidity {}  uidnext {}",
                    m.name, m.exists, m.uid_validity, m.uid_next
                );
            }
        }
        UserCommand::Passwd { address, stdin } => {
            let mut u = store
                .user_by_address(&address)?
                .with_context(|| format!("no user {address}"))?;
            u.password_hash = Some(checked_hash(config, &read_new_password(stdin)?)?);
            u.force_password_reset = false;
            store.update_user(&u)?;
            println!("password changed for {}", u.address);
        }
        UserCommand::Activate { address } => set_status(&store, &address, UserStatus::Active)?,
        UserCommand::Deactivate { address } => set_status(&store, &address, UserStatus::Inactive)?,
        UserCommand::Remove { address, yes } => {
            if !yes {
                bail!("removing {address} deletes all their mail; repeat with --yes to confirm");
            }
            store.remove_user(&address)?;
            println!("removed user {address}");
        }
    }
    Ok(())
}

fn set_status(store: &Store, address: &str, status: UserStatus) -> anyhow::Result<()> {
    let mut u = store
        .user_by_address(address)?
        .with_context(|| format!("no user {address}"))?;
    u.status = status;
    store.update_user(&u)?;
    println!("{} is now {:?}", u.address, status);
    Ok(())
}

fn alias(config: &Config, command: AliasCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        AliasCommand::Add { alias, user } => {
            store.add_alias(&alias, &user)?;
            println!("{alias} now delivers to {user}");
        }
        AliasCommand::Remove { alias } => {
            store.remove_alias(&alias)?;
            println!("removed alias {alias}");
        }
        AliasCommand::List { domain } => {
            let domains = match domain {
                Some(d) => vec![d],
                None => store.domains()?.into_iter().map(|d| d.name).collect(),
            };
            for d in domains {
                for (alias, target) in store.aliases(&d)? {
                    println!("{alias}\t-> {target}");
                }
            }
        }
    }
    Ok(())
}
