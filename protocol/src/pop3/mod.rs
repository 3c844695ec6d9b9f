//! POP3 server session (RFC 1939 with CAPA and RESP-CODES from RFC 2449, STLS from RFC
//! 2595, AUTH from RFC 5034, response codes from RFC 3206) as an I/O-free state machine.
//!
//! ```text
//!            greeting
//!               |
//!               v        STLS -> (driver: TLS handshake) -> tls_started()
//!        AUTHORIZATION <---------------------------------------------+
//!         |  USER/PASS, AUTH PLAIN|LOGIN   (RFC 1939 §4, RFC 5034 §4)
//!         |  + open_maildrop (takes the lock; [IN-USE] if held)
//!         v
//!        TRANSACTION   STAT LIST UIDL RETR TOP DELE RSET NOOP   (RFC 1939 §5)
//!         |  QUIT
//!         v
//!        UPDATE: delete(marked) once, then release; +OK only after delete succeeded
//!                (RFC 1939 §6). Any other end (drop, goodbye, too many errors)
//!                releases the lock and deletes nothing.
//! ```
//!
//! The session frames its own input: CRLF (or bare LF) command lines of at most
//! `Pop3Limits::max_line` octets, SASL responses of up to `sasl::MAX_SASL_LINE`, any number
//! of pipelined commands per chunk (RFC 2449 §6.6), and commands split across chunks.

mod backend;
mod command;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code may panic on a broken mock
mod tests;
mod transfer;

use std::sync::Arc;

use crate::auth::{AccessLevel, Account, AuthBackend, AuthError, Credentials, Secret};
use crate::sasl::{self, SaslError};
use crate::session::{Action, ConnectionInfo, Goodbye, Output, Session, READ_CHUNK};

pub use backend::{MaildropEntry, Pop3Backend, Pop3BackendError};

use command::{Command, MessageNumber, ParseError};

/// Bounds for one POP3 session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Limits {
    /// Longest command line, CRLF included. RFC 2449 §4 allows 255; clients with long
    /// passwords go past that, so the default is 512.
    pub max_line: usize,
    /// Unknown, malformed or misplaced commands (and over-long lines) before the session
    /// closes.
    pub max_bad_commands: u32,
    /// Failed logins before the session closes; the auth backend rate-limits across
    /// sessions, this only stops one connection from looping.
    pub max_auth_failures: u32,
    /// Once this much output is produced in one `receive`, remaining pipelined commands
    /// wait for the next call (see `Pop3Session::has_pending_commands`), so a chunk full of
    /// `RETR` does not build gigabytes of output in memory (and a client that stops
    /// reading holds at most this, plus one message).
    pub max_output_per_step: usize,
}

impl Default for Pop3Limits {
    fn default() -> Self {
        Pop3Limits {
            max_line: 512,
            max_bad_commands: 10,
            max_auth_failures: 3,
            max_output_per_step: 1024 * 1024,
        }
    }
}

/// Pipelined input kept waiting while output is throttled; past this the client is not
/// reading its replies and the session ends.
const MAX_BUFFERED_INPUT: usize = 4 * READ_CHUNK;

const SIGN_OFF: &str = "+OK Understudy POP3 server signing off\r\n";
const AUTH_FAILED: &str = "-ERR [AUTH] authentication failed\r\n";
const PLAINTEXT_REFUSED: &str =
    "-ERR [AUTH] plaintext authentication disallowed on non-secure connections; use STLS\r\n";
const WRONG_STATE: &str = "-ERR command not valid in this state\r\n";
const NO_SUCH_MESSAGE: &str = "-ERR no such message\r\n";
const READ_FAILED: &str = "-ERR [SYS/TEMP] cannot read message now, try again later\r\n";
/// Base64 of "Username:" and "Password:", the customary LOGIN challenges.
const LOGIN_USER_CHALLENGE: &str = "+ VXNlcm5hbWU6\r\n";
const LOGIN_PASSWORD_CHALLENGE: &str = "+ UGFzc3dvcmQ6\r\n";

/// One POP3 connection. See the module documentation for the states.
///
/// Dropping the session (or calling `close`) releases the maildrop lock without deleting
/// anything.
pub struct Pop3Session {
    info: ConnectionInfo,
    auth: Arc<dyn AuthBackend>,
    store: Arc<dyn Pop3Backend>,
    limits: Pop3Limits,
    state: State,
    /// Received octets not yet consumed as complete lines.
    input: Vec<u8>,
    /// An over-long line was answered; drop input up to its LF.
    discarding: bool,
    /// STLS was answered and the driver has not called `tls_started` yet; plaintext that
    /// arrives meanwhile is dropped (CVE-2011-0411).
    awaiting_tls: bool,
    bad_commands: u32,
    auth_failures: u32,
}

enum State {
    /// RFC 1939 §4; `user` is set by USER and consumed by PASS.
    Authorization { user: Option<String> },
    /// Waiting for the client's answer to a `+ ` challenge (RFC 5034 §4).
    Sasl(SaslStep),
    /// Logged in with the maildrop locked (RFC 1939 §5).
    Transaction { account: Account, maildrop: Maildrop },
    /// QUIT answered, session ended, or lock released; nothing more is processed.
    Closed,
}

enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword { user: String },
}

/// The messages as of login, numbered from 1, with the DELE marks of this session.
struct Maildrop {
    entries: Vec<MaildropEntry>,
    deleted: Vec<bool>,
}

impl Maildrop {
    fn new(entries: Vec<MaildropEntry>) -> Self {
        let deleted = vec![false; entries.len()];
        Maildrop { entries, deleted }
    }

    /// Numbered messages not marked deleted.
    fn live(&self) -> impl Iterator<Item = (usize, &MaildropEntry)> {
        self.entries
            .iter()
            .zip(&self.deleted)
            .enumerate()
            .filter(|(_, (_, deleted))| !**deleted)
            .map(|(i, (entry, _))| (i + 1, entry))
    }

    /// Message count and total octets, deleted messages excluded (RFC 1939 §5 STAT).
    fn totals(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(count, size), (_, e)| (count + 1, size + e.size))
    }

    /// Index of message `number`, or the reply for a missing or deleted one.
    fn index(&self, number: MessageNumber) -> Result<usize, String> {
        let index = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < self.entries.len())
            .ok_or_else(|| NO_SUCH_MESSAGE.to_string())?;
        if self.deleted.get(index).copied().unwrap_or(true) {
            return Err(format!("-ERR message {number} already deleted\r\n"));
        }
        Ok(index)
    }

    fn marked_keys(&self) -> Vec<u64> {
        self.entries
            .iter()
            .zip(&self.deleted)
            .filter(|(_, deleted)| **deleted)
            .map(|(e, _)| e.key)
            .collect()
    }
}

/// What `receive` does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    StartTls,
    Close,
}

impl Pop3Session {
    pub fn new(
        info: ConnectionInfo,
        auth: Arc<dyn AuthBackend>,
        store: Arc<dyn Pop3Backend>,
        limits: Pop3Limits,
    ) -> Self {
        Pop3Session {
            info,
            auth,
            store,
            limits,
            state: State::Authorization { user: None },
            input: Vec::new(),
            discarding: false,
            awaiting_tls: false,
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    /// The first line the server sends (RFC 1939 §4). No APOP timestamp: APOP needs
    /// plaintext passwords on the server, which we never store.
    pub fn greeting(&mut self) -> Output {
        let host: String = self
            .info
            .hostname
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        Output::reply(format!("+OK {host} Understudy POP3 ready\r\n"))
    }

    /// Feeds received octets; answers every complete command in them, in order.
    pub fn receive(&mut self, input: &[u8]) -> Output {
        if matches!(self.state, State::Closed) {
            return Output::close(Vec::new());
        }
        if self.awaiting_tls {
            return Output::reply(Vec::new());
        }
        let mut data = input;
        if self.discarding {
            match data.iter().position(|b| *b == b'\n') {
                Some(lf) => {
                    data = &data[lf + 1..];
                    self.discarding = false;
                }
                None => return Output::reply(Vec::new()),
            }
        }
        let mut buf = std::mem::take(&mut self.input);
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        let flow = loop {
            if out.len() >= self.limits.max_output_per_step {
                break Flow::Continue;
            }
            let pending = &buf[start..];
            let limit = self.line_limit();
            let Some(lf) = pending.iter().position(|b| *b == b'\n') else {
                if pending.len() >= limit {
                    start = buf.len();
                    self.discarding = true;
                    break self.bad_command(&mut out, "-ERR line too long\r\n");
                }
                break Flow::Continue;
            };
            start += lf + 1;
            if lf + 1 > limit {
                match self.bad_command(&mut out, "-ERR line too long\r\n") {
                    Flow::Continue => continue,
                    other => break other,
                }
            }
            let line = pending[..lf].strip_suffix(b"\r").unwrap_or(&pending[..lf]);
            match self.handle_line(line, &mut out) {
                Flow::Continue => {}
                other => break other,
            }
        };
        match flow {
            Flow::Continue => {
                buf.drain(..start);
                if buf.len() > MAX_BUFFERED_INPUT {
                    tracing::info!(peer = %self.info.peer, "pop3 client not reading replies");
                    out.extend_from_slice(b"-ERR too much pipelined input\r\n");
                    self.close();
                    return Output::close(out);
                }
                self.input = buf;
                Output::reply(out)
            }
            Flow::StartTls => {
                // Whatever followed STLS arrived in plaintext and must not be obeyed
                // once the connection is encrypted (CVE-2011-0411).
                self.awaiting_tls = true;
                Output::new(out, Action::StartTls)
            }
            Flow::Close => {
                self.close();
                Output::close(out)
            }
        }
    }

    /// True while complete commands are buffered because `max_output_per_step` was reached.
    /// The driver should then write the output and call `receive(&[])` again before
    /// reading more.
    pub fn has_pending_commands(&self) -> bool {
        !matches!(self.state, State::Closed)
            && !self.awaiting_tls
            && !self.discarding
            && self.input.contains(&b'\n')
    }

    /// The TLS handshake after STLS succeeded: the session restarts in AUTHORIZATION with
    /// an empty buffer (RFC 2595 §4).
    pub fn tls_started(&mut self) {
        self.info.tls = true;
        self.awaiting_tls = false;
        self.input.clear();
        self.discarding = false;
        if !matches!(self.state, State::Closed) {
            self.state = State::Authorization { user: None };
        }
    }

    /// The line to send when the driver ends the session itself; releases the maildrop
    /// lock without deleting anything.
    pub fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        self.close();
        let line = match why {
            Goodbye::Shutdown => "-ERR [SYS/TEMP] server shutting down, try again later\r\n",
            Goodbye::Timeout => "-ERR disconnected for inactivity\r\n",
            Goodbye::Revoked => "-ERR session ended by the administrator\r\n",
        };
        line.as_bytes().to_vec()
    }

    /// Ends the session: releases the maildrop lock if one is held, deleting nothing.
    /// Idempotent; `Drop` calls it too, so the driver only needs it to run the release on
    /// a thread of its choosing.
    pub fn close(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.input.clear();
        if let State::Transaction { account, maildrop } = state {
            tracing::info!(
                user = %account.address,
                marked = maildrop.marked_keys().len(),
                "pop3 session ended without QUIT; nothing deleted"
            );
            self.store.release(&account);
        }
    }

    fn line_limit(&self) -> usize {
        match self.state {
            // A SASL response carries base64 credentials, longer than a command line.
            State::Sasl(_) => self.limits.max_line.max(sasl::MAX_SASL_LINE + 2),
            _ => self.limits.max_line,
        }
    }

    fn plaintext_auth_allowed(&self) -> bool {
        self.info.tls || self.info.allow_plaintext_auth
    }

    fn bad_command(&mut self, out: &mut Vec<u8>, reply: &str) -> Flow {
        self.bad_commands += 1;
        if self.bad_commands >= self.limits.max_bad_commands {
            tracing::info!(peer = %self.info.peer, "pop3 session closed after too many bad commands");
            out.extend_from_slice(b"-ERR too many bad commands, closing connection\r\n");
            return Flow::Close;
        }
        out.extend_from_slice(reply.as_bytes());
        Flow::Continue
    }

    fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        if let State::Sasl(_) = self.state {
            return self.sasl_response(line, out);
        }
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(ParseError::Unknown) => return self.bad_command(out, "-ERR unknown command\r\n"),
            Err(ParseError::Syntax) => return self.bad_command(out, "-ERR invalid arguments\r\n"),
        };
        let plaintext_auth_allowed = self.plaintext_auth_allowed();
        match (&mut self.state, command) {
            (_, Command::Capa) => {
                self.capabilities(out);
                Flow::Continue
            }
            (_, Command::Noop) => {
                out.extend_from_slice(b"+OK\r\n");
                Flow::Continue
            }
            (_, Command::Quit) => self.quit(out),
            (State::Authorization { .. }, Command::Stls) => self.stls(out),
            (State::Authorization { .. }, Command::User(_) | Command::Pass(_) | Command::Auth { .. })
                if !plaintext_auth_allowed =>
            {
                self.bad_command(out, PLAINTEXT_REFUSED)
            }
            (State::Authorization { user }, Command::User(name)) => {
                *user = Some(name.to_string());
                out.extend_from_slice(b"+OK send PASS\r\n");
                Flow::Continue
            }
            (State::Authorization { user }, Command::Pass(password)) => match user.take() {
                Some(name) => self.login(name, Secret::new(password), out),
                None => self.bad_command(out, "-ERR send USER first\r\n"),
            },
            (State::Authorization { .. }, Command::Auth { mechanism, initial }) => {
                self.auth_command(mechanism, initial, out)
            }
            (State::Transaction { maildrop, .. }, Command::Stat) => {
                let (count, size) = maildrop.totals();
                out.extend_from_slice(format!("+OK {count} {size}\r\n").as_bytes());
                Flow::Continue
            }
            (State::Transaction { maildrop, .. }, Command::List(number)) => {
                let (count, size) = maildrop.totals();
                let status = format!("+OK {count} messages ({size} octets)\r\n");
                scan_listing(maildrop, number, out, &status, |e| e.size.to_string());
                Flow::Continue
            }
            (State::Transaction { maildrop, .. }, Command::Uidl(number)) => {
                scan_listing(maildrop, number, out, "+OK\r\n", |e| e.uidl.clone());
                Flow::Continue
            }
            (State::Transaction { account, maildrop }, Command::Retr(number)) => {
                let message = fetch(self.store.as_ref(), account, maildrop, number);
                match message {
                    Ok(message) => {
                        out.extend_from_slice(format!("+OK {} octets\r\n", message.len()).as_bytes());
                        transfer::append_multiline(out, &message);
                    }
                    Err(reply) => out.extend_from_slice(reply.as_bytes()),
                }
                Flow::Continue
            }
            (State::Transaction { account, maildrop }, Command::Top(number, lines)) => {
                match fetch(self.store.as_ref(), account, maildrop, number) {
                    Ok(message) => {
                        out.extend_from_slice(b"+OK top of message follows\r\n");
                        transfer::append_multiline(out, transfer::top_part(&message, lines));
                    }
                    Err(reply) => out.extend_from_slice(reply.as_bytes()),
                }
                Flow::Continue
            }
            // Read-only access (docs/operations.md): nothing is deleted (issue 19 item 8).
            (State::Transaction { account, .. }, Command::Dele(_))
                if account.access == AccessLevel::ReadOnly =>
            {
                out.extend_from_slice(
                    b"-ERR Your access to this server is read-only; nothing is deleted\r\n",
                );
                Flow::Continue
            }
            (State::Transaction { maildrop, .. }, Command::Dele(number)) => {
                match maildrop.index(number) {
                    Ok(index) => {
                        if let Some(mark) = maildrop.deleted.get_mut(index) {
                            *mark = true;
                        }
                        out.extend_from_slice(format!("+OK message {number} deleted\r\n").as_bytes());
                    }
                    Err(reply) => out.extend_from_slice(reply.as_bytes()),
                }
                Flow::Continue
            }
            (State::Transaction { maildrop, .. }, Command::Rset) => {
                maildrop.deleted.iter_mut().for_each(|mark| *mark = false);
                let (count, size) = maildrop.totals();
                out.extend_from_slice(
                    format!("+OK maildrop has {count} messages ({size} octets)\r\n").as_bytes(),
                );
                Flow::Continue
            }
            (_, _) => self.bad_command(out, WRONG_STATE),
        }
    }

    /// RFC 2449 §5. USER and SASL appear only where a login would be accepted, STLS only
    /// where it can be started.
    fn capabilities(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n",
        );
        if let State::Authorization { .. } = self.state {
            if self.plaintext_auth_allowed() {
                out.extend_from_slice(b"USER\r\nSASL PLAIN LOGIN\r\n");
            }
            if self.info.tls_available && !self.info.tls {
                out.extend_from_slice(b"STLS\r\n");
            }
        }
        out.extend_from_slice(b"IMPLEMENTATION Understudy\r\n.\r\n");
    }

    fn stls(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.info.tls {
            out.extend_from_slice(b"-ERR TLS already active\r\n");
            return Flow::Continue;
        }
        if !self.info.tls_available {
            out.extend_from_slice(b"-ERR TLS not available\r\n");
            return Flow::Continue;
        }
        self.state = State::Authorization { user: None };
        out.extend_from_slice(b"+OK begin TLS negotiation\r\n");
        Flow::StartTls
    }

    /// RFC 5034 §4: `AUTH` alone lists mechanisms; an initial response skips the first
    /// challenge.
    fn auth_command(&mut self, mechanism: Option<&str>, initial: Option<&str>, out: &mut Vec<u8>) -> Flow {
        let Some(mechanism) = mechanism else {
            out.extend_from_slice(b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
            return Flow::Continue;
        };
        self.state = State::Authorization { user: None };
        match (mechanism.to_ascii_uppercase().as_str(), initial) {
            ("PLAIN", None) => {
                self.state = State::Sasl(SaslStep::Plain);
                out.extend_from_slice(b"+ \r\n");
                Flow::Continue
            }
            ("PLAIN", Some(initial)) => self.sasl_plain(initial.as_bytes(), out),
            ("LOGIN", None) => {
                self.state = State::Sasl(SaslStep::LoginUser);
                out.extend_from_slice(LOGIN_USER_CHALLENGE.as_bytes());
                Flow::Continue
            }
            ("LOGIN", Some(initial)) => self.sasl_login_user(initial.as_bytes(), out),
            _ => self.bad_command(out, "-ERR unsupported authentication mechanism\r\n"),
        }
    }

    fn sasl_response(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let state = std::mem::replace(&mut self.state, State::Authorization { user: None });
        let State::Sasl(step) = state else {
            self.state = state;
            return self.bad_command(out, WRONG_STATE);
        };
        match step {
            SaslStep::Plain => self.sasl_plain(line, out),
            SaslStep::LoginUser => self.sasl_login_user(line, out),
            SaslStep::LoginPassword { user } => {
                match sasl::decode_response(line).and_then(|raw| sasl::parse_login_step(&raw)) {
                    Ok(password) => self.login(user, Secret::new(password), out),
                    Err(error) => self.sasl_failed(error, out),
                }
            }
        }
    }

    fn sasl_plain(&mut self, response: &[u8], out: &mut Vec<u8>) -> Flow {
        match sasl::decode_response(response).and_then(|raw| sasl::parse_plain(&raw)) {
            Ok((user, password)) => self.login(user, password, out),
            Err(error) => self.sasl_failed(error, out),
        }
    }

    fn sasl_login_user(&mut self, response: &[u8], out: &mut Vec<u8>) -> Flow {
        match sasl::decode_response(response).and_then(|raw| sasl::parse_login_step(&raw)) {
            Ok(user) => {
                self.state = State::Sasl(SaslStep::LoginPassword { user });
                out.extend_from_slice(LOGIN_PASSWORD_CHALLENGE.as_bytes());
                Flow::Continue
            }
            Err(error) => self.sasl_failed(error, out),
        }
    }

    fn sasl_failed(&mut self, error: SaslError, out: &mut Vec<u8>) -> Flow {
        self.state = State::Authorization { user: None };
        if error == SaslError::Cancelled {
            out.extend_from_slice(b"-ERR authentication cancelled\r\n");
            return Flow::Continue;
        }
        tracing::info!(peer = %self.info.peer, %error, "pop3 SASL response rejected");
        self.count_auth_failure(out, AUTH_FAILED)
    }

    /// Checks credentials and opens the maildrop; the state is AUTHORIZATION on every
    /// failure.
    fn login(&mut self, username: String, password: Secret, out: &mut Vec<u8>) -> Flow {
        self.state = State::Authorization { user: None };
        let credentials = Credentials {
            username,
            password,
            peer: self.info.peer,
            protocol: "pop3",
        };
        let account = match self.auth.authenticate(&credentials) {
            Ok(account) => account,
            Err(error) => {
                tracing::info!(peer = %self.info.peer, user = ?credentials.username, %error, "pop3 login failed");
                // One text for unknown user, wrong password and inactive account, so
                // addresses cannot be probed.
                return match error {
                    AuthError::Invalid => self.count_auth_failure(out, AUTH_FAILED),
                    AuthError::AccessDenied => self.count_auth_failure(out, "-ERR [AUTH] access denied\r\n"),
                    AuthError::PasswordChangeRequired => self.count_auth_failure(
                        out,
                        "-ERR [AUTH] your password must be changed; ask your administrator for a new one\r\n",
                    ),
                    AuthError::RateLimited => self.count_auth_failure(
                        out,
                        "-ERR [SYS/TEMP] too many failed logins, try again later\r\n",
                    ),
                    AuthError::OutsideOutage => self.count_auth_failure(
                        out,
                        "-ERR [SYS/TEMP] your own mail server is working; this server opens your mailbox only during an outage of it\r\n",
                    ),
                    // RFC 3206 IN-USE: the maildrop is busy, not the password wrong.
                    AuthError::TooManySessions => {
                        out.extend_from_slice(
                            b"-ERR [IN-USE] too many open connections for this account, close another mail app\r\n",
                        );
                        Flow::Continue
                    }
                    AuthError::Temporary(_) => {
                        out.extend_from_slice(
                            b"-ERR [SYS/TEMP] authentication unavailable, try again later\r\n",
                        );
                        Flow::Continue
                    }
                };
            }
        };
        match self.store.open_maildrop(&account) {
            Ok(entries) => {
                tracing::info!(
                    peer = %self.info.peer,
                    user = %account.address,
                    messages = entries.len(),
                    "pop3 login"
                );
                self.state = State::Transaction {
                    account,
                    maildrop: Maildrop::new(entries),
                };
                out.extend_from_slice(b"+OK maildrop locked and ready\r\n");
            }
            Err(Pop3BackendError::InUse) => {
                tracing::info!(user = %account.address, "pop3 maildrop in use");
                out.extend_from_slice(b"-ERR [IN-USE] maildrop is locked by another POP3 session\r\n");
            }
            Err(error) => {
                tracing::warn!(user = %account.address, %error, "pop3 cannot open maildrop");
                out.extend_from_slice(b"-ERR [SYS/TEMP] cannot open maildrop, try again later\r\n");
            }
        }
        Flow::Continue
    }

    fn count_auth_failure(&mut self, out: &mut Vec<u8>, reply: &str) -> Flow {
        out.extend_from_slice(reply.as_bytes());
        self.auth_failures += 1;
        if self.auth_failures >= self.limits.max_auth_failures {
            return Flow::Close;
        }
        Flow::Continue
    }

    /// RFC 1939 §6: in TRANSACTION, QUIT enters UPDATE and removes the marked messages.
    /// `+OK` only after the backend confirmed the deletion.
    fn quit(&mut self, out: &mut Vec<u8>) -> Flow {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let State::Transaction { account, maildrop } = state else {
            out.extend_from_slice(SIGN_OFF.as_bytes());
            return Flow::Close;
        };
        let keys = maildrop.marked_keys();
        if keys.is_empty() {
            out.extend_from_slice(SIGN_OFF.as_bytes());
        } else {
            match self.store.delete(&account, &keys) {
                Ok(()) => {
                    tracing::info!(user = %account.address, deleted = keys.len(), "pop3 update");
                    out.extend_from_slice(
                        format!(
                            "+OK Understudy POP3 server signing off ({} messages deleted)\r\n",
                            keys.len()
                        )
                        .as_bytes(),
                    );
                }
                Err(error) => {
                    tracing::error!(user = %account.address, %error, "pop3 update failed; nothing deleted");
                    out.extend_from_slice(
                        b"-ERR [SYS/TEMP] deleted messages not removed, try again later\r\n",
                    );
                }
            }
        }
        self.store.release(&account);
        Flow::Close
    }
}

impl Drop for Pop3Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// LIST or UIDL (RFC 1939 §5, §7): one message with a number, else all live messages
/// as a multi-line response.
fn scan_listing(
    maildrop: &Maildrop,
    number: Option<MessageNumber>,
    out: &mut Vec<u8>,
    status: &str,
    value: impl Fn(&MaildropEntry) -> String,
) {
    match number {
        Some(number) => match maildrop.index(number) {
            Ok(index) => {
                if let Some(entry) = maildrop.entries.get(index) {
                    out.extend_from_slice(format!("+OK {number} {}\r\n", value(entry)).as_bytes());
                }
            }
            Err(reply) => out.extend_from_slice(reply.as_bytes()),
        },
        None => {
            out.extend_from_slice(status.as_bytes());
            for (n, entry) in maildrop.live() {
                out.extend_from_slice(format!("{n} {}\r\n", value(entry)).as_bytes());
            }
            out.extend_from_slice(b".\r\n");
        }
    }
}

/// A message's text for RETR/TOP, or the `-ERR` line to send instead.
fn fetch(
    store: &dyn Pop3Backend,
    account: &Account,
    maildrop: &Maildrop,
    number: MessageNumber,
) -> Result<Vec<u8>, String> {
    let index = maildrop.index(number)?;
    let entry = maildrop
        .entries
        .get(index)
        .ok_or_else(|| NO_SUCH_MESSAGE.to_string())?;
    match store.retrieve(account, entry.key) {
        Ok(message) => {
            if message.len() as u64 != entry.size {
                tracing::warn!(
                    user = %account.address,
                    key = entry.key,
                    listed = entry.size,
                    actual = message.len(),
                    "pop3 message size differs from its maildrop listing"
                );
            }
            Ok(message)
        }
        Err(Pop3BackendError::Gone) => Err("-ERR message was removed by another session\r\n".to_string()),
        Err(error) => {
            tracing::warn!(user = %account.address, key = entry.key, %error, "pop3 retrieve failed");
            Err(READ_FAILED.to_string())
        }
    }
}

impl Session for Pop3Session {
    fn greeting(&mut self) -> Output {
        Pop3Session::greeting(self)
    }
    fn receive(&mut self, input: &[u8]) -> Output {
        Pop3Session::receive(self, input)
    }
    fn tls_started(&mut self) {
        Pop3Session::tls_started(self)
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        Pop3Session::goodbye(self, why)
    }
    fn has_pending(&self) -> bool {
        self.has_pending_commands()
    }
}
