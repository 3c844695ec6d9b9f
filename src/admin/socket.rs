//! The admin socket: a Unix stream socket at `<data_dir>/admin.sock`, mode 0600, that
//! accepts connections only from processes running as the server's own user (checked
//! with SO_PEERCRED; others are logged and closed without a word).
//!
//! Protocol (one request per connection, JSON Lines, UTF-8):
//! - client → server: one line `{"command": <Command>}` (the CLI's parsed subcommand as
//!   serde writes it, e.g. `{"command":{"User":{"Deactivate":{"address":"a@b.c"}}}}`),
//!   at most `MAX_REQUEST` bytes, within `REQUEST_TIMEOUT`;
//! - server → client: zero or more `{"progress":{"done":N,"total":M}}` lines, then one
//!   `{"done":{"output":"…","secrets":"…","error":null|"…"}}` line, then it closes.
//!
//! New passwords are hashed by the CLI before they are sent (only the argon2id PHC
//! string crosses the socket); generated import passwords come back in `secrets`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};

use understudy_storage::Store;

use super::{AdminContext, AdminEvents, Command, Outcome};
use crate::live_config::LiveConfig;
use crate::outage::handles::MonitorWake;
use crate::revoke::Revocations;

/// Large enough for the CSV of a few hundred thousand users.
pub const MAX_REQUEST: u64 = 64 * 1024 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time-out for each reply line the server writes and the CLI waits for; a bulk import
/// sends progress lines, so this bounds the silence, not the whole command.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// Admin commands running at once; more wait for a slot.
const CONCURRENT_COMMANDS: usize = 4;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Progress {
        done: u64,
        total: u64,
    },
    Done {
        output: String,
        secrets: String,
        error: Option<String>,
    },
}

/// What admin commands run against inside the server, and the server's tasks they
/// reach: sessions to end, the outage monitor and the queue runner to wake.
pub struct InServer {
    pub store: Store,
    /// The configuration as last (re)loaded: a command sees the password policy a
    /// SIGHUP put in force.
    pub config: LiveConfig,
    pub revocations: Revocations,
    pub monitor: MonitorWake,
    pub queue_wakeup: crate::delivery::QueueWakeup,
}

/// A bound admin socket, not yet serving.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    owner_uid: u32,
}

impl AdminSocket {
    /// Binds `path`, replacing a stale socket a killed server left (the database lock,
    /// taken before this, guarantees no other server uses this data directory).
    pub fn bind(path: &Path) -> anyhow::Result<AdminSocket> {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale admin socket"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on admin socket {}", path.display()))?;
        // The data directory is 0700 already; the socket itself is owner-only too.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        // We just created the file, so its owner is this process's effective uid.
        let owner_uid = std::fs::metadata(path)?.uid();
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
            owner_uid,
        })
    }

    /// Serves admin requests until `stop` turns true, then removes the socket file and
    /// waits for the commands in progress (a command must not stop half-way).
    pub async fn serve(self, server: InServer, mut stop: watch::Receiver<bool>) {
        let server = Arc::new(server);
        let slots = Arc::new(Semaphore::new(CONCURRENT_COMMANDS));
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                // Only ever turns true (or its sender is gone): stop either way.
                _ = stop.changed() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let server = server.clone();
            let slots = slots.clone();
            let owner_uid = self.owner_uid;
            let stop = stop.clone();
            connections.spawn(async move {
                if let Err(e) = handle(stream, server, slots, owner_uid, stop).await {
                    tracing::warn!(error = %format!("{e:#}"), "admin connection failed");
                }
            });
        }
        let _ = std::fs::remove_file(&self.path);
        while connections.join_next().await.is_some() {}
    }
}

async fn handle(
    stream: UnixStream,
    server: Arc<InServer>,
    slots: Arc<Semaphore>,
    owner_uid: u32,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cred = stream.peer_cred().context("cannot read the peer's credentials")?;
    // The server's own user, or root (who can read the database anyway, and runs
    // `sudo understudy backup|restore` to write where the service user cannot).
    if cred.uid() != owner_uid && cred.uid() != 0 {
        tracing::warn!(
            peer_uid = cred.uid(),
            peer_pid = ?cred.pid(),
            "admin socket: refusing a process of another user"
        );
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = AsyncBufReader::new(read).take(MAX_REQUEST + 1);
    // A request not yet (fully) sent is dropped at shutdown; one that is runs to the end.
    tokio::select! {
        read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)) => {
            read.context("admin request timed out")??;
        }
        _ = stop.changed() => return Ok(()),
    }
    let request = if line.len() as u64 > MAX_REQUEST {
        Err(format!("request larger than {MAX_REQUEST} bytes"))
    } else {
        // A CLI of another version may send a command this server does not know.
        serde_json::from_slice::<Request>(&line).map_err(|e| format!("malformed admin request: {e}"))
    };
    let request = match request {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(%error, "admin socket: bad request");
            let done = Reply::Done {
                output: String::new(),
                secrets: String::new(),
                error: Some(error),
            };
            return send(&mut write, &done).await;
        }
    };
    let _slot = slots.acquire_owned().await?;
    let name = super::audit::command_name(&request.command);
    // Never the command's Debug form: it may hold an import file with passwords.
    let target = request.command.target().unwrap_or_default();
    tracing::info!(command = %name, %target, peer_uid = cred.uid(), "admin command");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let label = (name.clone(), target);
    let actor = format!("cli (uid {})", cred.uid());
    let task = tokio::task::spawn_blocking(move || execute(&server, request.command, &label, &actor, tx));
    while let Some(reply) = rx.recv().await {
        // The command goes on if the admin's CLI went away: it must not stop half-way.
        if let Err(e) = send(&mut write, &reply).await {
            tracing::warn!(command = %name, error = %format!("{e:#}"), "admin client went away");
            break;
        }
    }
    let _ = task.await;
    Ok(())
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec(reply)?;
    bytes.push(b'\n');
    tokio::time::timeout(REPLY_TIMEOUT, write.write_all(&bytes))
        .await
        .context("admin reply timed out")??;
    Ok(())
}

/// Runs one command on the blocking pool against the server's store.
/// `(name, target)` label the log lines; `actor` is who the audit log records.
fn execute(
    server: &InServer,
    command: Command,
    (name, target): &(String, String),
    actor: &str,
    tx: mpsc::UnboundedSender<Reply>,
) {
    let audited = super::audit::describe(&command);
    let events = ServerEvents {
        server,
        tx: tx.clone(),
        secrets: Mutex::new(String::new()),
    };
    let config = server.config.current();
    let ctx = AdminContext {
        store: &server.store,
        config: &config,
        events: &events,
    };
    let mut output = Vec::new();
    let result = super::execute(&ctx, command, &mut output);
    match &result {
        Ok(()) => tracing::info!(command = %name, %target, "admin command done"),
        Err(e) => tracing::info!(command = %name, %target, error = %format!("{e:#}"), "admin command failed"),
    }
    if let Some(action) = &audited {
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        super::audit::record(
            &server.store,
            actor,
            "admin socket",
            action,
            error.as_deref().map_or(Ok(()), Err),
        );
    }
    let _ = tx.send(Reply::Done {
        output: String::from_utf8_lossy(&output).into_owned(),
        secrets: events.secrets.into_inner(),
        error: result.err().map(|e| format!("{e:#}")),
    });
}

struct ServerEvents<'a> {
    server: &'a InServer,
    tx: mpsc::UnboundedSender<Reply>,
    secrets: Mutex<String>,
}

impl AdminEvents for ServerEvents<'_> {
    fn revoked(&self, user_id: u64) {
        match self.server.store.user(user_id) {
            Ok(Some(u)) => tracing::info!(user = %u.address, "ending the user's open sessions"),
            _ => tracing::info!(user_id, "ending the user's open sessions"),
        }
        // No receiver means no connection is open: nothing to end.
        let _ = self.server.revocations.send(user_id);
    }
    fn progress(&self, done: u64, total: u64) {
        let _ = self.tx.send(Reply::Progress { done, total });
    }
    fn secret(&self, line: &str) {
        let mut s = self.secrets.lock();
        s.push_str(line);
        s.push('\n');
    }
    fn outage_changed(&self) {
        self.server.monitor.wake();
        // The transition's notice is queued already: send it now, not at the next poll.
        self.server.queue_wakeup.notify_one();
    }
    fn queue_changed(&self) {
        self.server.queue_wakeup.notify_one();
    }
}

/// Connects to a running server's admin socket; `None` when no server runs (no socket
/// file, or a stale one nobody listens on).
pub fn connect(path: &Path) -> anyhow::Result<Option<StdUnixStream>> {
    match StdUnixStream::connect(path) {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot reach the server's admin socket {}", path.display()))
        }
    }
}

/// Sends one command and collects the server's replies.
pub fn request(
    stream: StdUnixStream,
    command: &Command,
    progress: &dyn Fn(u64, u64),
) -> anyhow::Result<Outcome> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut line = serde_json::to_vec(&serde_json::json!({ "command": command }))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .context("cannot send the admin request")?;
    let mut reader = BufReader::new(&stream);
    loop {
        let mut reply = String::new();
        // Replies are small except `done`, which holds the command's output.
        let n = reader
            .by_ref()
            .take(MAX_REQUEST)
            .read_line(&mut reply)
            .context("no answer from the server's admin socket")?;
        if n == 0 {
            anyhow::bail!("the server closed the admin connection without an answer (is this CLI running as the server's user?)");
        }
        match serde_json::from_str::<Reply>(&reply).context("malformed admin reply")? {
            Reply::Progress { done, total } => progress(done, total),
            Reply::Done {
                output,
                secrets,
                error,
            } => {
                return Ok(Outcome {
                    output,
                    secrets,
                    error,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::users::UserCommand;

    #[test]
    fn requests_round_trip_and_the_log_name_has_no_arguments() {
        let command = Command::User(UserCommand::Passwd {
            address: "anna@example.com".into(),
            stdin: true,
            force_reset: false,
            password_hash: Some("$argon2id$v=19$secret".into()),
            password_traits: None,
        });
        assert_eq!(super::super::audit::command_name(&command), "User Passwd");
        assert_eq!(command.target().as_deref(), Some("anna@example.com"));
        let line = serde_json::to_string(&serde_json::json!({ "command": &command })).unwrap();
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(
            back.command,
            Command::User(UserCommand::Passwd { password_hash: Some(h), .. }) if h.ends_with("secret")
        ));
        let done: Reply =
            serde_json::from_str(r#"{"done":{"output":"x","secrets":"","error":null}}"#).unwrap();
        assert!(matches!(done, Reply::Done { error: None, .. }));
    }
}
