//! Administration while the server runs: the admin socket (`socket`), bulk user import
//! (`import`) and session revocation (`revoke`).
//!
//! RocksDB allows one writer, so an admin command cannot open the database while the
//! server runs. The CLI therefore sends the parsed command to the server over
//! `<data_dir>/admin.sock`; the server runs the same function the CLI would
//! ([`crate::cli::execute`]) against its open store and sends back the output and the
//! outcome. Only when no server answers does the CLI open the database itself.

pub mod import;
pub mod revoke;
pub mod socket;

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use understudy_storage::Store;

use crate::cli::{Command, UserCommand};
use crate::config::Config;

/// What an admin command runs against.
pub struct AdminContext<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub events: &'a dyn AdminEvents,
}

/// Side effects of admin commands that depend on where they run (in the server or in
/// the CLI with no server).
pub trait AdminEvents {
    /// The user's open sessions must end now.
    fn revoked(&self, user_id: u64);
    /// A long command's progress (bulk import).
    fn progress(&self, done: u64, total: u64);
    /// A generated password line, shown once to the admin (or written to a file).
    fn secret(&self, line: &str);
    /// A domain's outage state was changed (and persisted): the outage monitor, if one
    /// runs here, adopts it now instead of at its next tick.
    fn outage_changed(&self);
}

/// How an admin command ended, wherever it ran.
#[derive(Debug, Default)]
pub struct Outcome {
    pub output: String,
    pub secrets: String,
    /// The error, with its causes, when the command failed.
    pub error: Option<String>,
}

pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join("admin.sock")
}

/// Runs a prepared admin command through the server if one runs, else on the database,
/// and prints its output; an error return makes the CLI exit non-zero.
pub fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    let passwords_out = match &command {
        Command::User(UserCommand::Import { passwords_out, .. }) => passwords_out.clone(),
        _ => None,
    };
    let progress = ProgressDisplay::default();
    let outcome = match socket::connect(&socket_path(config))? {
        Some(stream) => socket::request(stream, &command, &progress)?,
        None => run_local(config, command, &progress)?,
    };
    progress.finish();
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

/// No server runs: open the database here.
fn run_local(config: &Config, command: Command, progress: &ProgressDisplay) -> anyhow::Result<Outcome> {
    let store = crate::cli::open_store(config)?;
    let events = LocalEvents {
        progress,
        secrets: RefCell::new(String::new()),
    };
    let ctx = AdminContext {
        store: &store,
        config,
        events: &events,
    };
    let mut output = Vec::new();
    let result = crate::cli::execute(&ctx, command, &mut output);
    Ok(Outcome {
        output: String::from_utf8_lossy(&output).into_owned(),
        secrets: events.secrets.into_inner(),
        error: result.err().map(|e| format!("{e:#}")),
    })
}

struct LocalEvents<'a> {
    progress: &'a ProgressDisplay,
    secrets: RefCell<String>,
}

impl AdminEvents for LocalEvents<'_> {
    /// No server runs, so no session is open.
    fn revoked(&self, _user_id: u64) {}
    fn progress(&self, done: u64, total: u64) {
        self.progress.update(done, total);
    }
    fn secret(&self, line: &str) {
        let mut s = self.secrets.borrow_mut();
        s.push_str(line);
        s.push('\n');
    }
    /// No monitor runs here; a server started later reads the state from the store.
    fn outage_changed(&self) {}
}

/// Progress of a long command on the admin's terminal: an `indicatif` bar on a terminal,
/// a plain line every tenth otherwise (logs, CI), both on stderr so stdout stays the
/// command's report.
#[derive(Default)]
pub struct ProgressDisplay {
    bar: RefCell<Option<ProgressBar>>,
    last_tenth: Cell<u64>,
}

impl ProgressDisplay {
    pub fn update(&self, done: u64, total: u64) {
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

    pub fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}
