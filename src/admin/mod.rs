//! Administration: the one home of the admin operations, whichever door they come
//! through (the CLI, the admin socket, later the web console).
//!
//! - [`command`]: the command set ([`Command`]) and [`execute`], which runs one;
//! - a file per subject: [`domains`], [`users`], [`aliases`], [`queue`], [`outage`],
//!   [`tracking`], [`ldap`], [`import`], [`admins`] (console administrators, API tokens). Each operation is a function of an
//!   [`AdminContext`] and typed arguments returning a serialisable value; the subject's
//!   `execute` runs the parsed subcommand and writes the CLI's text report;
//! - [`socket`]: the admin socket, server side and client side;
//! - [`audit`]: the audit log of admin actions, whichever door they came through.
//!
//! Sessions of users an admin changed end through `crate::revoke`.
//!
//! RocksDB allows one writer, so an admin command cannot open the database while the
//! server runs. The CLI therefore sends the parsed command to the server over
//! `<data_dir>/admin.sock`; the server runs [`execute`] against its open store and sends
//! back the output and the outcome. Only when no server answers does the CLI open the
//! database itself ([`run_local`]).

pub mod admins;
pub mod aliases;
pub mod audit;
pub mod backup;
pub mod command;
pub mod domains;
pub mod format;
pub mod import;
pub mod ldap;
pub mod outage;
pub mod queue;
pub mod readiness;
pub mod socket;
pub mod tracking;
pub mod users;

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::Context;
use understudy_storage::{Store, StoreError};

pub use self::command::{execute, Command};
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
    /// A domain's outage state was changed (and persisted), and its notice queued: the
    /// outage monitor, if one runs here, adopts it now instead of at its next tick, and
    /// the queue runner sends the notice at once.
    fn outage_changed(&self);
    /// Queue entries became due (retry, release, redeliver): the queue runner, if one
    /// runs here, looks now instead of at its next poll.
    fn queue_changed(&self);
}

/// How an admin command ended, wherever it ran.
#[derive(Debug, Default)]
pub struct Outcome {
    pub output: String,
    pub secrets: String,
    /// The error, with its causes, when the command failed.
    pub error: Option<String>,
}

/// `domain` if given (as given), else every protected domain: what a listing covers.
fn domain_names(ctx: &AdminContext, domain: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(match domain {
        Some(d) => vec![d.to_string()],
        None => ctx.store.domains()?.into_iter().map(|d| d.name).collect(),
    })
}

pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join("admin.sock")
}

/// Opens the store named by the configuration: the RocksDB database under `data_dir`,
/// or the shared PostgreSQL store (`[store] backend = "postgres"`). The server opens
/// it this way, and so does an admin command when no server is running.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let options = understudy_storage::StoreOptions {
        bodies: config.body_options()?,
        ..Default::default()
    };
    let clock = std::sync::Arc::new(understudy_storage::SystemClock);
    if let Some(pg) = config.postgres()? {
        let store = Store::open_postgres(&pg, options, clock)
            .context("cannot open the PostgreSQL store ([store] url)")?;
        return Ok(store);
    }
    Store::open_with(&config.db_dir(), options, clock).map_err(|e| match e {
        StoreError::Locked { pid, .. } => anyhow::anyhow!(
            "the database in {} is in use by another process{}, but no server answers on its admin socket {}",
            config.db_dir().display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            socket_path(config).display()
        ),
        e => e.into(),
    })
}

/// No server runs: opens the database here and runs `command` on it. `progress` gets a
/// long command's progress.
pub fn run_local(config: &Config, command: Command, progress: &dyn Fn(u64, u64)) -> anyhow::Result<Outcome> {
    let store = open_store(config)?;
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
    let mut result = execute(&ctx, command, &mut output);
    drop(store);
    // Root working on the service user's database (before the first start, or with the
    // service stopped): the files RocksDB and the command just made must stay the
    // service's, or the server cannot open its own database afterwards.
    if let Err(e) = backup::give_back_to_owner(&config.data_dir) {
        result = result.and(Err(e));
    }
    Ok(Outcome {
        output: String::from_utf8_lossy(&output).into_owned(),
        secrets: events.secrets.into_inner(),
        error: result.err().map(|e| format!("{e:#}")),
    })
}

struct LocalEvents<'a> {
    progress: &'a dyn Fn(u64, u64),
    secrets: RefCell<String>,
}

impl AdminEvents for LocalEvents<'_> {
    /// No server runs, so no session is open.
    fn revoked(&self, _user_id: u64) {}
    fn progress(&self, done: u64, total: u64) {
        (self.progress)(done, total);
    }
    fn secret(&self, line: &str) {
        let mut s = self.secrets.borrow_mut();
        s.push_str(line);
        s.push('\n');
    }
    /// No monitor runs here; a server started later reads the state from the store.
    fn outage_changed(&self) {}
    /// No queue runner runs here; a server started later looks at once.
    fn queue_changed(&self) {}
}
