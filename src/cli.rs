//! The admin's command line: argument parsing (`serve`, `check-config` and the admin
//! subcommands of [`crate::admin::Command`]), and what only the CLI process does —
//! password prompts and hashing, reading the import file, showing progress, printing the
//! report and writing generated passwords. The commands themselves run in
//! `crate::admin`: through the running server's admin socket when there is one, else on
//! the database directly.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use understudy_protocol::Secret;

use crate::admin::admins::AdminCommand as AdminsCommand;
use crate::admin::socket;
use crate::admin::users::UserCommand;
use crate::admin::Command as AdminCommand;
use crate::auth;
use crate::config::Config;
use crate::password_policy::PasswordTraits;

#[derive(Debug, Parser)]
#[command(name = "understudy", version, about = "Email continuity server")]
pub struct Cli {
    /// Configuration file (e.g. /etc/understudy/understudy.toml); without it, and
    /// without UNDERSTUDY_CONFIG, the development defaults of config/dev.toml are used,
    /// which need a source checkout as the working directory.
    #[arg(long, short, global = true, env = "UNDERSTUDY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Check the configuration and report every problem at once (also what `serve`
    /// would fail on: unreadable certificates, a key that does not match, a port used
    /// twice), plus warnings (relay hosts that do not resolve).
    CheckConfig,
    /// A webmail on top of this server (Roundcube): its settings from this configuration.
    #[command(subcommand)]
    Webmail(crate::webmail::WebmailCommand),
    /// Write a backup into DIR (which must not exist): the database, a consistent copy
    /// taken while the server serves, and the domains' DKIM keys; readable only by its
    /// owner.
    Backup {
        /// The new backup directory.
        dir: PathBuf,
    },
    /// Replace the database (and the DKIM keys) with a backup. The server must be
    /// stopped; the replaced database is kept beside it.
    Restore {
        /// A directory written by `understudy backup`.
        dir: PathBuf,
    },
    /// Move the bodies kept in the store into the S3 bucket of `[store.s3]` (after
    /// setting `[store] bodies = "s3"`; new bodies already go there). Each body under
    /// its lock: safe beside running nodes on PostgreSQL; with RocksDB stop the server.
    MoveBodies,
    /// Whole-store operations that need no configuration.
    #[command(subcommand)]
    Store(StoreCommand),
    #[command(flatten)]
    Admin(crate::admin::Command),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a whole store into another, RocksDB to PostgreSQL or back, then verify both
    /// by record counts and checksums. Stop the server first; start it on the target
    /// after changing `[store]`. The target should be empty. A copy cut off (killed,
    /// a lost connection) resumes where it stopped when run again with the same
    /// arguments, as long as the source has not changed.
    Copy {
        /// `rocksdb:DIR` (the `db` directory under data_dir) or `postgres:URL`.
        #[arg(long)]
        from: String,
        /// `rocksdb:DIR` or `postgres:URL`.
        #[arg(long)]
        to: String,
        /// For a postgres: side, "require" (TLS, certificate verified against the
        /// system's roots) or "off".
        #[arg(long, default_value = "require")]
        tls: String,
        /// Records per synced batch written to the target (at most 8 MiB each); each
        /// batch also records how far the copy got, which is where a rerun resumes.
        #[arg(long, default_value_t = understudy_storage::copy::BATCH_RECORDS)]
        batch_records: usize,
    },
}

/// Opens `rocksdb:DIR` or `postgres:URL`.
fn open_store_spec(spec: &str, tls: &str) -> anyhow::Result<understudy_storage::Store> {
    use std::sync::Arc;
    use understudy_storage::{PgOptions, PgTls, Store, StoreOptions, SystemClock};
    if let Some(dir) = spec.strip_prefix("rocksdb:") {
        return Store::open(Path::new(dir)).with_context(|| format!("cannot open {dir}"));
    }
    if let Some(url) = spec.strip_prefix("postgres:") {
        PgOptions::check_url(url).map_err(|e| anyhow::anyhow!("postgres URL: {e}"))?;
        let tls = match tls {
            "off" => PgTls::Off,
            "require" => PgTls::Require { ca_file: None },
            other => bail!("--tls {other}: use require or off"),
        };
        let options = PgOptions {
            url: url.to_string(),
            password: None,
            pool_size: 4,
            tls,
        };
        return Store::open_postgres(&options, StoreOptions::default(), Arc::new(SystemClock))
            .context("cannot open the PostgreSQL store");
    }
    bail!("{spec}: name a store as rocksdb:DIR or postgres:URL")
}

/// `understudy store ...`: runs without a configuration file.
pub fn run_store(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy {
            from,
            to,
            tls,
            batch_records,
        } => {
            use understudy_storage::copy::{CopyEvent, CopyOptions};
            let source = open_store_spec(&from, &tls)?;
            let target = open_store_spec(&to, &tls)?;
            let display = ProgressDisplay::default();
            let options = CopyOptions { batch_records };
            let summary = source.copy_into(&target, options, &mut |event| match event {
                CopyEvent::Started { total, resumed } => {
                    if resumed > 0 {
                        display.note(&format!(
                            "resuming: {resumed} of {total} records were copied by an earlier run"
                        ));
                    }
                    display.update(resumed, total);
                }
                CopyEvent::Copied { done, total } => display.update(done, total),
                CopyEvent::Verifying => {
                    display.finish();
                    display.note("verifying: counting and checksumming both sides");
                }
            })?;
            display.finish();
            let mut out = std::io::stdout().lock();
            for family in &summary {
                writeln!(
                    out,
                    "{:<16} {:>10} records  sha256 {}",
                    family.family, family.records, family.sha256
                )?;
            }
            let total: u64 = summary.iter().map(|f| f.records).sum();
            writeln!(
                out,
                "copied {total} records from {} to {}; both sides verified",
                source.backend_name(),
                target.backend_name()
            )?;
            Ok(())
        }
    }
}

/// Loads the configuration named on the command line, or the dev defaults when run
/// from a source checkout.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let cwd = std::env::current_dir()?;
            if !cwd.join("config/dev.toml").is_file() || !cwd.join("certs-dev").is_dir() {
                bail!(
                    "no configuration given: pass --config FILE (e.g. --config /etc/understudy/understudy.toml) \
                     or set UNDERSTUDY_CONFIG; the built-in development defaults work only in a source checkout \
                     (none in {})",
                    cwd.display()
                );
            }
            Ok(Config::dev()?)
        }
    }
}

/// Runs an admin subcommand (everything but `serve`): through the running server's
/// admin socket when there is one, else directly on the database.
pub fn run_admin(config: &Config, command: Command) -> anyhow::Result<()> {
    let command = match command {
        Command::Serve => bail!("serve is not an admin command"),
        Command::CheckConfig => {
            let warnings = config.warnings().into_iter().map(|p| p.to_string());
            for warning in warnings.chain(host_warnings(config)) {
                eprintln!("warning: {warning}");
            }
            println!("configuration is valid");
            return Ok(());
        }
        Command::Webmail(command) => return crate::webmail::run(config, command),
        Command::Backup { dir } => return backup(config, &dir),
        Command::Restore { dir } => {
            let report = crate::admin::backup::restore(config, &absolute(&dir)?)?;
            crate::admin::backup::print_restore(&report, &mut std::io::stdout().lock())?;
            return Ok(());
        }
        Command::Store(command) => return run_store(command),
        Command::MoveBodies => {
            let store = crate::admin::open_store(config)?;
            let moved = store.move_bodies_to_objects(&mut |n| {
                if n % 1000 == 0 {
                    eprintln!("progress: {n} bodies moved");
                }
            })?;
            println!("moved {moved} bodies into the bucket");
            return Ok(());
        }
        Command::Admin(command) => command,
    };
    let (command, shown_password) = prepare(config, command)?;
    run(config, command)?;
    if let Some(pw) = shown_password {
        println!("password: {}", pw.expose());
    }
    Ok(())
}

/// Runs a prepared admin command through the server if one runs, else on the database,
/// and prints its output; an error return makes the CLI exit non-zero.
fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let (passwords_out, importing) = match &command {
        AdminCommand::User(UserCommand::Import { passwords_out, .. }) => (passwords_out.clone(), true),
        _ => (None, false),
    };
    let display = ProgressDisplay::default();
    let progress = |done, total| display.update(done, total);
    let outcome = match socket::connect(&crate::admin::socket_path(config))? {
        Some(stream) => socket::request(stream, &command, &progress)?,
        None => crate::admin::run_local(config, command, &progress)?,
    };
    display.finish();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(outcome.output.as_bytes())?;
    // Delivered even when the command failed: rows imported before an error keep their
    // generated passwords, and these are the only copy.
    if !outcome.secrets.is_empty() {
        match &passwords_out {
            Some(path) => {
                write_private(path, &outcome.secrets)?;
                writeln!(stdout, "generated passwords written to {}", path.display())?;
            }
            None => {
                if importing {
                    writeln!(stdout, "generated passwords (shown once):")?;
                } else {
                    writeln!(stdout, "shown once:")?;
                }
                stdout.write_all(outcome.secrets.as_bytes())?;
            }
        }
    }
    stdout.flush()?;
    match outcome.error {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(()),
    }
}

/// Hosts mail will be sent to that do not resolve now: the smarthost, the static
/// routes, and (when the database can be read) each domain's relay host. Warnings, not
/// problems: DNS may be down where the check runs, or the primary's name only resolve
/// inside the company's network.
fn host_warnings(config: &Config) -> Vec<String> {
    let mut hosts: Vec<(String, String)> = Vec::new();
    if let Some(h) = &config.delivery.smarthost {
        hosts.push(("delivery.smarthost".into(), h.clone()));
    }
    for (domain, target) in &config.delivery.routes {
        hosts.push((format!("delivery.routes.{domain}"), target.clone()));
    }
    match relay_hosts(config) {
        Ok(relays) => hosts.extend(relays),
        Err(why) => {
            return vec![format!("relay hosts of the domains not checked: {why}")]
                .into_iter()
                .chain(resolve_all(&hosts))
                .collect()
        }
    }
    resolve_all(&hosts)
}

fn resolve_all(hosts: &[(String, String)]) -> Vec<String> {
    use crate::delivery::config::split_host_port as split;
    let mut warnings = Vec::new();
    for (what, target) in hosts {
        let Some((host, port)) = split(target, 25) else {
            continue;
        };
        if let Err(why) = resolves(&host, port) {
            warnings.push(format!("{what}: {target} does not resolve ({why})"));
        }
    }
    warnings
}

/// Looks `host` up with the system resolver, within 5 seconds.
fn resolves(host: &str, port: u16) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let target = format!("{host}:{port}");
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(|a| a.count()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err("no address".into()),
        Ok(Err(e)) => Err(io_reason(&e)),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// Each domain's relay host, from the running server or the database; nothing when no
/// database exists yet (a fresh install), and the database is never created here.
fn relay_hosts(config: &Config) -> anyhow::Result<Vec<(String, String)>> {
    use crate::admin::domains::DomainCommand;
    use crate::admin::format::ListFormat;
    let command = AdminCommand::Domain(DomainCommand::List {
        format: ListFormat::Json,
    });
    let progress = |_, _| {};
    let outcome = match socket::connect(&crate::admin::socket_path(config))? {
        Some(stream) => socket::request(stream, &command, &progress)?,
        None if config.db_dir().join("CURRENT").exists() => {
            crate::admin::run_local(config, command, &progress)?
        }
        None => return Ok(Vec::new()),
    };
    if let Some(e) = outcome.error {
        bail!("{e}");
    }
    let listing: Vec<serde_json::Value> = serde_json::from_str(&outcome.output)?;
    Ok(listing
        .iter()
        .filter_map(|l| {
            let d = &l["domain"];
            Some((
                format!("domain {} relay host", d["name"].as_str()?),
                d["relay_host"].as_str()?.to_string(),
            ))
        })
        .collect())
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    })
}

/// `understudy backup DIR`: the server (or this process, with no server) writes a
/// checkpoint under the data directory, where the systemd unit lets it write; this
/// process moves it to DIR with private modes and adds the DKIM keys.
fn backup(config: &Config, dir: &Path) -> anyhow::Result<()> {
    let dir = absolute(dir)?;
    if dir.exists() {
        bail!(
            "{} already exists; a backup goes into a new directory",
            dir.display()
        );
    }
    let progress = |_, _| {};
    let outcome = match socket::connect(&crate::admin::socket_path(config))? {
        Some(stream) => socket::request(stream, &AdminCommand::Checkpoint, &progress)?,
        None => crate::admin::run_local(config, AdminCommand::Checkpoint, &progress)?,
    };
    if let Some(e) = outcome.error {
        bail!("{e}");
    }
    let checkpoint: crate::admin::backup::Checkpoint =
        serde_json::from_str(outcome.output.trim()).context("malformed checkpoint reply")?;
    let report = crate::admin::backup::finish(&checkpoint, &dir)?;
    crate::admin::backup::print_backup(&report, &mut std::io::stdout().lock())?;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Does in the CLI process what must not or cannot happen in the server: new passwords
/// are read and hashed here so that only the argon2id hash crosses the admin socket, and
/// the import file is read here with the admin's own permissions. Returns the command
/// to run and a generated password to print once it succeeded.
fn prepare(config: &Config, command: AdminCommand) -> anyhow::Result<(AdminCommand, Option<Secret>)> {
    Ok(match command {
        AdminCommand::User(UserCommand::Add {
            address,
            name,
            password_stdin,
            random_password,
            ..
        }) => {
            let (hashed, shown) = if random_password {
                let pw = Secret::new(auth::random_password());
                (Some(hashed(&pw)?), Some(pw))
            } else if password_stdin {
                (Some(hashed(&read_new_password(true)?)?), None)
            } else {
                (None, None)
            };
            let (password_hash, password_traits) = hashed.unzip();
            let command = UserCommand::Add {
                address,
                name,
                password_stdin,
                random_password,
                password_hash,
                password_traits,
            };
            (AdminCommand::User(command), shown)
        }
        AdminCommand::User(UserCommand::Passwd {
            address,
            stdin,
            force_reset,
            ..
        }) => {
            let (hash, traits) = hashed(&read_new_password(stdin)?)?;
            let command = UserCommand::Passwd {
                address,
                stdin,
                force_reset,
                password_hash: Some(hash),
                password_traits: Some(traits),
            };
            (AdminCommand::User(command), None)
        }
        AdminCommand::User(UserCommand::Import {
            file,
            dry_run,
            passwords_out,
            csv: _,
        }) => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the import file {}: {}",
                    file.display(),
                    io_reason(&e)
                )
            })?;
            let command = UserCommand::Import {
                file,
                dry_run,
                passwords_out,
                csv: Some(text),
            };
            (AdminCommand::User(command), None)
        }
        AdminCommand::Admin(AdminsCommand::Add {
            name,
            role,
            domains,
            password_stdin,
            totp,
            password_hash: _,
        }) => {
            let hash = checked_hash(config, &read_new_password(password_stdin)?)?;
            let command = AdminsCommand::Add {
                name,
                role,
                domains,
                password_stdin,
                totp,
                password_hash: Some(hash),
            };
            (AdminCommand::Admin(command), None)
        }
        AdminCommand::Admin(AdminsCommand::Passwd {
            name,
            stdin,
            password_hash: _,
        }) => {
            let hash = checked_hash(config, &read_new_password(stdin)?)?;
            let command = AdminsCommand::Passwd {
                name,
                stdin,
                password_hash: Some(hash),
            };
            (AdminCommand::Admin(command), None)
        }
        other => (other, None),
    })
}

pub use crate::config_types::io_reason;

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

/// An administrator's password: checked against this config's policy, then hashed.
fn checked_hash(config: &Config, password: &Secret) -> anyhow::Result<String> {
    auth::check_policy(&config.password_policy, password.expose()).map_err(|e| anyhow::anyhow!(e))?;
    auth::hash_password(password)
}

/// The password's argon2id hash and what the password policy checks. The policy
/// itself is applied where the command runs (the server's, when one runs).
fn hashed(password: &Secret) -> anyhow::Result<(String, PasswordTraits)> {
    Ok((
        auth::hash_password(password)?,
        PasswordTraits::of(password.expose()),
    ))
}

/// Progress of a long command on the admin's terminal: an `indicatif` bar on a terminal,
/// a plain line every tenth and at least every 10 seconds otherwise (logs, CI), both on
/// stderr so stdout stays the command's report.
#[derive(Default)]
struct ProgressDisplay {
    bar: RefCell<Option<ProgressBar>>,
    /// The tenth last reported in plain lines, plus one (0: nothing reported yet).
    last_tenth: Cell<u64>,
    last_line: Cell<Option<std::time::Instant>>,
}

impl ProgressDisplay {
    /// A line of its own (above the bar on a terminal).
    fn note(&self, text: &str) {
        match self.bar.borrow().as_ref() {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn update(&self, done: u64, total: u64) {
        if total == 0 {
            return;
        }
        if std::io::stderr().is_terminal() {
            let mut bar = self.bar.borrow_mut();
            let bar = bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} rows {eta}") {
                    bar.set_style(style);
                }
                bar
            });
            bar.set_position(done);
        } else {
            let tenth = done * 10 / total + 1;
            let due = self
                .last_line
                .get()
                .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10));
            if tenth > self.last_tenth.get() || due {
                self.last_tenth.set(tenth);
                self.last_line.set(Some(std::time::Instant::now()));
                eprintln!("progress: {done}/{total} rows");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every subcommand, argument and flag an admin can type says what it is for in
    /// `--help` (issue 18 item 12).
    #[test]
    fn every_subcommand_and_flag_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() && sub.get_name() != "help" {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "understudy", &mut missing);
        assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
    }
}
