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

use crate::admin::socket;
use crate::admin::users::UserCommand;
use crate::admin::Command as AdminCommand;
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
    /// A webmail on top of this server (Roundcube): its settings from this configuration.
    #[command(subcommand)]
    Webmail(crate::webmail::WebmailCommand),
    #[command(flatten)]
    Admin(crate::admin::Command),
}

/// Loads the configuration named on the command line, or the dev defaults.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::dev()?,
    })
}

/// Runs an admin subcommand (everything but `serve`): through the running server's
/// admin socket when there is one, else directly on the database.
pub fn run_admin(config: &Config, command: Command) -> anyhow::Result<()> {
    let command = match command {
        Command::Serve => bail!("serve is not an admin command"),
        Command::CheckConfig => {
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            println!("configuration is valid");
            return Ok(());
        }
        Command::Webmail(command) => return crate::webmail::run(config, command),
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
    let passwords_out = match &command {
        AdminCommand::User(UserCommand::Import { passwords_out, .. }) => passwords_out.clone(),
        _ => None,
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
                writeln!(stdout, "generated passwords (shown once):")?;
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
            (AdminCommand::User(command), shown)
        }
        AdminCommand::User(UserCommand::Passwd {
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
            (AdminCommand::User(command), None)
        }
        AdminCommand::User(UserCommand::Import {
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
            (AdminCommand::User(command), None)
        }
        // The server may run in another directory: send an absolute path.
        AdminCommand::Backup { dir } => {
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
            (AdminCommand::Backup { dir }, None)
        }
        other => (other, None),
    })
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

/// Progress of a long command on the admin's terminal: an `indicatif` bar on a terminal,
/// a plain line every tenth otherwise (logs, CI), both on stderr so stdout stays the
/// command's report.
#[derive(Default)]
struct ProgressDisplay {
    bar: RefCell<Option<ProgressBar>>,
    last_tenth: Cell<u64>,
}

impl ProgressDisplay {
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
            let tenth = done * 10 / total;
            if tenth > self.last_tenth.get() || done == total {
                self.last_tenth.set(tenth);
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
