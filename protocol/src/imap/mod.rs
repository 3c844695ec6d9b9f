//! IMAP4rev1 server session (RFC 3501) with the extensions Outlook, iOS, Android and
//! Thunderbird rely on, as an I/O-free state machine. Commands are parsed with
//! imap-codec; message rendering (ENVELOPE, BODYSTRUCTURE, sections, content SEARCH)
//! lives in `message`.
//!
//! ```text
//!   greeting ──> NotAuthenticated ── LOGIN / AUTHENTICATE ──> Authenticated
//!                  │  STARTTLS -> (driver: TLS) -> tls_started()   │  ▲
//!                  │                                 SELECT/EXAMINE│  │CLOSE/UNSELECT/
//!                  │                                               ▼  │failed SELECT
//!                  │                                             Selected ── IDLE ⇄ DONE
//!                  └────────────── LOGOUT (any state) ──────────> Logout
//! ```
//! (RFC 3501 §3 and §6; IDLE RFC 2177; ENABLE RFC 5161; CONDSTORE RFC 7162 §3.1;
//! UIDPLUS RFC 4315; MOVE RFC 6851; SPECIAL-USE RFC 6154; LITERAL+ RFC 7888; ID RFC 2971;
//! NAMESPACE RFC 2342; UNSELECT RFC 3691; CHILDREN RFC 3348; APPENDLIMIT RFC 7889.)
//!
//! Framing is done here, before imap-codec sees a byte: lines of at most
//! `ImapLimits::max_line` octets, literals of at most `ImapLimits::max_literal`, refused
//! before they are read (`NO [TOOBIG]` for a synchronizing literal, `BAD` and close for a
//! non-synchronizing one, whose octets are already on the way). A synchronizing literal
//! is accepted with `+ ` only after the command so far parses (imap-codec says
//! `LiteralFound`). imap-next (not in this build's registry) and imap-codec's own
//! `Fragmentizer` were not used: the fragmentizer keeps unparsed input in a buffer whose
//! size it does not expose, so a line without LF grows unchecked, it decodes only
//! whole messages (we need the prefix decoded before `+ `), and this session also frames
//! SASL and IDLE lines itself; the framing here is short and tested.
//!
//! Untagged EXISTS/RECENT/FETCH FLAGS/EXPUNGE updates from other sessions are delivered
//! after each command in Selected state, but EXPUNGE is held back during FETCH, STORE,
//! SEARCH and COPY by sequence number (RFC 3501 §7.4.1), see `view`. During IDLE the
//! driver calls `mailbox_changed` and every change is pushed at once.
//!
//! Not offered (so not advertised): QRESYNC, BINARY, COMPRESS, QUOTA, METADATA, SORT,
//! THREAD, UTF8=ACCEPT, multi-APPEND, SEARCHRES (`RETURN (SAVE)`).

pub mod backend;
pub(crate) mod extended;
pub mod message;
mod selected;
mod session_trait;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
pub(crate) mod text;
mod view;

use std::sync::Arc;

use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::{
    auth::AuthMechanism,
    command::{Command, CommandBody},
    extensions::{binary::LiteralOrLiteral8, enable::CapabilityEnable},
    flag::Flag,
    mailbox::{ListMailbox, Mailbox},
    status::StatusDataItemName,
};
use imap_codec::CommandCodec;

use crate::auth::{Account, AuthBackend, AuthError, Credentials, Secret};
use crate::sasl::{self, SaslError};
use crate::session::{Action, ConnectionInfo, Goodbye, Output, READ_CHUNK};

pub use backend::{
    BackendError, Change, ChangeKind, Flags, ImapBackend, MailboxId, MailboxInfo, MessageMeta, SpecialUse,
    Spool, StoreOp,
};

use extended::{Extended, ListCommand};
use text::{canonical_inbox, list_matches, push_mailbox, MAX_LIST_PATTERN};
use view::MailboxView;

/// Bounds for one IMAP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapLimits {
    /// Largest literal (and so largest APPEND), advertised as APPENDLIMIT.
    pub max_literal: u32,
    /// Largest literal before login, and the longest whole command then (a user name
    /// or password needs little): 50 MiB literals before login let 20 unauthenticated
    /// connections take 1 GB (issue 19). Dovecot allows about as much.
    pub max_literal_before_login: u32,
    /// Longest command line outside literals, CRLF included.
    pub max_line: usize,
    /// Malformed or misplaced commands before the session closes.
    pub max_bad_commands: u32,
    /// Failed logins before the session closes; the auth backend rate-limits across
    /// sessions, this only stops one connection from looping.
    pub max_auth_failures: u32,
    /// Once one `receive` has produced this much output, a FETCH stops between messages
    /// and further pipelined commands wait: the driver writes what is ready and calls
    /// `receive(&[])` while `has_pending()` says so, so `FETCH 1:* BODY[]` on a big
    /// mailbox never sits in memory whole. A client that stops reading holds this much
    /// (plus one message) until the time-out: 40 such at 8 MiB took 455 MB (issue 19
    /// attack bench), so 1 MiB.
    pub max_output_per_step: usize,
}

impl Default for ImapLimits {
    fn default() -> Self {
        ImapLimits {
            max_literal: 50 * 1024 * 1024,
            max_literal_before_login: 8 * 1024,
            max_line: 64 * 1024,
            max_bad_commands: 20,
            max_auth_failures: 3,
            max_output_per_step: 1024 * 1024,
        }
    }
}

/// What a `read-only` user is told for anything that would change mail or mailboxes.
const READ_ONLY_ACCESS: &str = "[NOPERM] Your access to this server is read-only";

/// APPEND literals from this size on go to the backend's spool (`start_spool`).
const SPOOL_FROM: usize = 256 * 1024;

/// Most patterns one LIST-EXTENDED command may give (RFC 5258 §3 sets no bound).
const MAX_LIST_PATTERNS: usize = 32;

/// Pipelined input waiting past this many octets means the client is not reading.
const MAX_BUFFERED_INPUT: usize = 8 * READ_CHUNK;

enum State {
    NotAuthenticated,
    Authenticated {
        account: Account,
    },
    Selected {
        account: Account,
        view: Box<MailboxView>,
    },
    Logout,
}

/// Which state a command is dispatched in; `State` without its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    NotAuthenticated,
    Authenticated,
    Selected,
    Logout,
}

/// What the next input line is.
enum Mode {
    Command,
    /// AUTHENTICATE waiting for a client response line.
    Sasl {
        tag: String,
        step: SaslStep,
    },
    /// IDLE waiting for DONE.
    Idle {
        tag: String,
    },
    /// STARTTLS answered; input is ignored until `tls_started`.
    AwaitingTls,
}

enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword { user: String },
}

/// A FETCH cut short by `max_output_per_step`, resumed at the next `receive`.
struct PendingFetch {
    /// The whole FETCH command, parsed again on resumption.
    command: Vec<u8>,
    /// Position in the resolved message list to continue from.
    next: usize,
    expunged: bool,
    failed: bool,
}

enum Flow {
    Continue,
    StartTls,
    Close,
}

/// One IMAP connection's session.
pub struct ImapSession {
    info: ConnectionInfo,
    auth: Arc<dyn AuthBackend>,
    store: Arc<dyn ImapBackend>,
    limits: ImapLimits,
    state: State,
    mode: Mode,
    /// Received octets not yet framed.
    input: Vec<u8>,
    /// The command being assembled: its lines and literals so far.
    command: Vec<u8>,
    /// Octets of the current literal still to come.
    literal_left: usize,
    /// ENABLE CONDSTORE or SELECT (CONDSTORE) seen (RFC 7162 §3.1).
    condstore: bool,
    bad_commands: u32,
    auth_failures: u32,
    pending_fetch: Option<PendingFetch>,
    /// Complete commands handled, for the driver's per-connection rate limit.
    commands: u64,
    /// Where the message literal of the APPEND being received goes (`start_spool`);
    /// `spool_failed` if a write to it failed (the APPEND then fails, the framing goes on).
    spool: Option<Box<dyn backend::Spool>>,
    spool_failed: bool,
}

impl ImapSession {
    pub fn new(
        info: ConnectionInfo,
        auth: Arc<dyn AuthBackend>,
        store: Arc<dyn ImapBackend>,
        limits: ImapLimits,
    ) -> Self {
        ImapSession {
            info,
            auth,
            store,
            limits,
            state: State::NotAuthenticated,
            mode: Mode::Command,
            input: Vec::new(),
            command: Vec::new(),
            literal_left: 0,
            spool: None,
            spool_failed: false,
            condstore: false,
            bad_commands: 0,
            auth_failures: 0,
            pending_fetch: None,
            commands: 0,
        }
    }

    pub fn greeting(&mut self) -> Output {
        Output::reply(format!(
            "* OK [CAPABILITY {}] {} Understudy IMAP4rev1 ready\r\n",
            self.capabilities(),
            self.info.hostname
        ))
    }

    /// The TLS handshake after STARTTLS succeeded.
    pub fn tls_started(&mut self) {
        self.info.tls = true;
        self.input.clear();
        self.command.clear();
        self.literal_left = 0;
        self.spool = None;
        self.mode = Mode::Command;
    }

    /// The account of the authenticated user, for the driver's log span.
    pub fn account(&self) -> Option<&Account> {
        match &self.state {
            State::Authenticated { account } | State::Selected { account, .. } => Some(account),
            _ => None,
        }
    }

    /// Ends the session on the driver's initiative.
    pub fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        self.state = State::Logout;
        let text = match why {
            Goodbye::Shutdown => "* BYE Server shutting down\r\n",
            Goodbye::Timeout => "* BYE Autologout; idle for too long\r\n",
            Goodbye::Revoked => "* BYE Session ended by the administrator\r\n",
        };
        text.as_bytes().to_vec()
    }

    /// During IDLE: the store says the selected mailbox changed.
    pub fn mailbox_changed(&mut self) -> Output {
        let mut out = Vec::new();
        if matches!(self.mode, Mode::Idle { .. }) {
            self.catch_up(true, &mut out);
        }
        Output::new(out, self.idle_action())
    }

    fn idle_action(&self) -> Action {
        match (&self.mode, &self.state) {
            (Mode::Idle { .. }, State::Selected { view, .. }) => Action::Idle { mailbox_id: view.id },
            _ => Action::Continue,
        }
    }

    pub fn receive(&mut self, input: &[u8]) -> Output {
        if matches!(self.state, State::Logout) {
            return Output::close(Vec::new());
        }
        if matches!(self.mode, Mode::AwaitingTls) {
            return Output::reply(Vec::new());
        }
        self.input.extend_from_slice(input);
        let mut out = Vec::new();
        if let Some(pending) = self.pending_fetch.take() {
            self.resume_fetch(pending, &mut out);
        }
        let flow = if self.pending_fetch.is_some() {
            Flow::Continue
        } else {
            self.process_input(&mut out)
        };
        match flow {
            Flow::Continue => {
                if self.input.len() > MAX_BUFFERED_INPUT {
                    out.extend_from_slice(b"* BYE Too much pipelined input\r\n");
                    self.state = State::Logout;
                    return Output::close(out);
                }
                Output::new(out, self.idle_action())
            }
            Flow::StartTls => {
                // CVE-2011-0411: nothing sent before the handshake may count after it.
                self.input.clear();
                self.mode = Mode::AwaitingTls;
                Output::new(out, Action::StartTls)
            }
            Flow::Close => {
                self.state = State::Logout;
                Output::close(out)
            }
        }
    }

    /// Output was capped: a FETCH is unfinished or complete commands wait in the input.
    /// The driver then calls `receive(&[])` before reading more.
    /// Complete commands handled so far (the driver paces clients that go too fast).
    pub fn commands(&self) -> u64 {
        self.commands
    }

    pub fn has_pending(&self) -> bool {
        self.pending_fetch.is_some() || (matches!(self.mode, Mode::Command) && self.input.contains(&b'\n'))
    }

    fn resume_fetch(&mut self, pending: PendingFetch, out: &mut Vec<u8>) {
        let command = pending.command.clone();
        match CommandCodec::default().decode(&command) {
            Ok((
                _,
                Command {
                    tag,
                    body:
                        CommandBody::Fetch {
                            sequence_set,
                            macro_or_item_names,
                            uid,
                            modifiers,
                        },
                },
            )) => {
                let tag = tag.as_ref().to_string();
                self.fetch(
                    &tag,
                    &sequence_set,
                    macro_or_item_names,
                    uid,
                    &modifiers,
                    Some(pending),
                    out,
                );
                if let Some(p) = &mut self.pending_fetch {
                    p.command = command;
                }
            }
            // It parsed the first time; nothing to resume if it does not now.
            _ => tracing::error!("imap: a paused FETCH no longer parses"),
        }
    }

    fn process_input(&mut self, out: &mut Vec<u8>) -> Flow {
        let mut start = 0;
        let flow = loop {
            if self.literal_left > 0 {
                let take = self.literal_left.min(self.input.len() - start);
                if take == 0 {
                    break Flow::Continue;
                }
                let bytes = &self.input[start..start + take];
                match &mut self.spool {
                    Some(spool) => {
                        if !self.spool_failed && spool.write(bytes).is_err() {
                            self.spool_failed = true;
                        }
                    }
                    None => self.command.extend_from_slice(bytes),
                }
                start += take;
                self.literal_left -= take;
                continue;
            }
            if self.pending_fetch.is_some()
                || (out.len() >= self.limits.max_output_per_step
                    && matches!(self.mode, Mode::Command)
                    && self.command.is_empty())
            {
                // Output capped: the rest waits for `receive(&[])` (see `has_pending`).
                break Flow::Continue;
            }
            let pending = &self.input[start..];
            let Some(lf) = pending.iter().position(|b| *b == b'\n') else {
                if pending.len() > self.limits.max_line {
                    out.extend_from_slice(b"* BAD Line too long\r\n* BYE Closing\r\n");
                    break Flow::Close;
                }
                break Flow::Continue;
            };
            if lf + 1 > self.limits.max_line {
                out.extend_from_slice(b"* BAD Line too long\r\n* BYE Closing\r\n");
                break Flow::Close;
            }
            let line = pending[..=lf].to_vec();
            start += lf + 1;
            let flow = match std::mem::replace(&mut self.mode, Mode::Command) {
                Mode::Command => self.command_line(&line, out),
                Mode::Sasl { tag, step } => self.sasl_line(tag, step, &line, out),
                Mode::Idle { tag } => self.idle_line(tag, &line, out),
                Mode::AwaitingTls => {
                    self.mode = Mode::AwaitingTls;
                    Flow::Continue
                }
            };
            match flow {
                Flow::Continue => {}
                other => break other,
            }
            if matches!(self.mode, Mode::AwaitingTls) {
                break Flow::StartTls;
            }
        };
        self.input.drain(..start.min(self.input.len()));
        flow
    }

    /// One line in command mode: either the end of a command or a line announcing a
    /// literal.
    fn command_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        self.command.extend_from_slice(line);
        let (max_literal, max_command) = if matches!(self.state, State::NotAuthenticated) {
            let max = self.limits.max_literal_before_login.min(self.limits.max_literal);
            (max, max as usize + self.limits.max_line)
        } else {
            let max = self.limits.max_literal;
            (max, max as usize + 4 * self.limits.max_line)
        };
        if self.command.len() > max_command {
            out.extend_from_slice(b"* BAD Command too long\r\n* BYE Closing\r\n");
            return Flow::Close;
        }
        if let Some((length, non_sync)) = literal_announcement(line) {
            let tag = tag_of(&self.command);
            if length > u64::from(max_literal) {
                self.command.clear();
                if non_sync {
                    // The octets are already on their way; we cannot skip them safely.
                    out.extend_from_slice(
                        format!("{tag} BAD [TOOBIG] Literal too big\r\n* BYE Closing\r\n").as_bytes(),
                    );
                    return Flow::Close;
                }
                out.extend_from_slice(format!("{tag} NO [TOOBIG] Literal too big\r\n").as_bytes());
                return Flow::Continue;
            }
            if !non_sync {
                match CommandCodec::default().decode(&self.command) {
                    Err(CommandDecodeError::LiteralFound { .. } | CommandDecodeError::Incomplete) => {
                        out.extend_from_slice(b"+ OK\r\n");
                    }
                    _ if extended::is_extended_form(&self.command) => {
                        out.extend_from_slice(b"+ OK\r\n");
                    }
                    _ => {
                        self.command.clear();
                        return self.bad(out, &tag, "Invalid command");
                    }
                }
            }
            // `length` fits: it is at most max_literal, a u32.
            self.literal_left = length as usize;
            self.start_spool(length as usize);
            return Flow::Continue;
        }
        let command = std::mem::take(&mut self.command);
        self.commands += 1;
        let flow = match CommandCodec::default().decode(&command) {
            Ok((_, cmd)) => {
                let flow = self.dispatch(cmd, out);
                if let Some(p) = &mut self.pending_fetch {
                    p.command = command.clone();
                }
                flow
            }
            Err(_) => match extended::parse(&command) {
                Some(ext) => self.dispatch_extended(ext, out),
                None => {
                    let tag = tag_of(&command);
                    self.bad(out, &tag, "Invalid or unknown command")
                }
            },
        };
        // A spool the command did not use (it failed to parse) is not the next one's.
        self.spool = None;
        if self.command.capacity() < command.capacity() && command.capacity() <= 64 * 1024 {
            // Keep the buffer's allocation for the next command.
            let mut command = command;
            command.clear();
            self.command = command;
        }
        flow
    }

    /// A literal of `SPOOL_FROM` octets or more that is the message of an APPEND goes to
    /// the backend's spool as it arrives, and the command keeps an empty literal in its
    /// place: a slow upload of 50 MiB no longer sits in this session's memory (issue 19
    /// item 4). The command so far ends with the announcement (`{N}` or `{N+}`, CRLF).
    fn start_spool(&mut self, length: usize) {
        if length < SPOOL_FROM {
            return;
        }
        let Some(account) = self.account_clone() else {
            return;
        };
        let Some(open) = self.command.iter().rposition(|b| *b == b'{') else {
            return;
        };
        let mut probe = self.command[..open].to_vec();
        probe.extend_from_slice(b"{0}\r\n\r\n");
        let is_message = matches!(
            CommandCodec::default().decode(&probe),
            Ok((
                _,
                Command {
                    body: CommandBody::Append { .. },
                    ..
                }
            ))
        );
        if !is_message {
            return;
        }
        if let Some(spool) = self.store.spool(&account, length) {
            self.command.truncate(open);
            self.command.extend_from_slice(b"{0}\r\n");
            self.spool = Some(spool);
            self.spool_failed = false;
        }
    }

    fn bad(&mut self, out: &mut Vec<u8>, tag: &str, text: &str) -> Flow {
        self.bad_commands += 1;
        out.extend_from_slice(format!("{tag} BAD {text}\r\n").as_bytes());
        if self.bad_commands >= self.limits.max_bad_commands {
            out.extend_from_slice(b"* BYE Too many invalid commands\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 LITERAL+ SASL-IR");
        if matches!(self.state, State::NotAuthenticated) {
            if self.info.tls_available && !self.info.tls {
                caps.push_str(" STARTTLS");
            }
            if self.login_allowed() {
                caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
            } else {
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps.push_str(
            " ID ENABLE IDLE NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE SPECIAL-USE LIST-EXTENDED \
             LIST-STATUS ESEARCH CONDSTORE",
        );
        caps.push_str(&format!(" APPENDLIMIT={}", self.limits.max_literal));
        caps
    }

    /// The user's access is `read-only`: mailboxes open as with EXAMINE and nothing may
    /// change (issue 19 item 8).
    fn read_only_user(&self) -> bool {
        self.account()
            .is_some_and(|a| a.access == crate::auth::AccessLevel::ReadOnly)
    }

    fn login_allowed(&self) -> bool {
        self.info.tls || self.info.allow_plaintext_auth
    }

    fn phase(&self) -> Phase {
        match self.state {
            State::NotAuthenticated => Phase::NotAuthenticated,
            State::Authenticated { .. } => Phase::Authenticated,
            State::Selected { .. } => Phase::Selected,
            State::Logout => Phase::Logout,
        }
    }

    /// The one dispatch point: (state, command).
    fn dispatch(&mut self, cmd: Command<'_>, out: &mut Vec<u8>) -> Flow {
        let tag = cmd.tag.as_ref().to_string();
        let tag = tag.as_str();
        use CommandBody as C;
        use Phase as P;
        let phase = self.phase();
        // Commands after which other sessions' changes (EXPUNGE included) are reported
        // here; the selected-state commands and APPEND do it themselves.
        let reports_changes = matches!(
            cmd.body,
            C::Noop
                | C::Check
                | C::Capability
                | C::Id { .. }
                | C::Enable { .. }
                | C::Namespace
                | C::Create { .. }
                | C::Delete { .. }
                | C::Rename { .. }
                | C::Subscribe { .. }
                | C::Unsubscribe { .. }
                | C::List { .. }
                | C::Lsub { .. }
                | C::Status { .. }
        );
        let mark = out.len();
        let flow = match (phase, cmd.body) {
            (P::Logout, _) => return Flow::Close,
            (_, C::Capability) => {
                out.extend_from_slice(format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes());
                ok(out, tag, "CAPABILITY completed")
            }
            (_, C::Noop) => ok(out, tag, "NOOP completed"),
            (_, C::Logout) => {
                out.extend_from_slice(b"* BYE Logging out\r\n");
                ok(out, tag, "LOGOUT completed");
                return Flow::Close;
            }
            (_, C::Id { .. }) => {
                out.extend_from_slice(b"* ID (\"name\" \"Understudy\")\r\n");
                ok(out, tag, "ID completed")
            }
            (P::NotAuthenticated, C::StartTLS) => {
                if self.info.tls || !self.info.tls_available {
                    return self.bad(out, tag, "TLS not available");
                }
                ok(out, tag, "Begin TLS negotiation now");
                self.mode = Mode::AwaitingTls;
                return Flow::StartTls;
            }
            (P::NotAuthenticated, C::Login { username, password }) => {
                if !self.login_allowed() {
                    no(
                        out,
                        tag,
                        "[PRIVACYREQUIRED] Plaintext login disallowed; use STARTTLS",
                    );
                    return Flow::Continue;
                }
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let pass = Secret::new(String::from_utf8_lossy(password.declassify().as_ref()));
                return self.login(tag, user, pass, out);
            }
            (
                P::NotAuthenticated,
                C::Authenticate {
                    mechanism,
                    initial_response,
                },
            ) => {
                let ir = initial_response.map(|r| r.declassify().to_vec());
                return self.authenticate(tag, mechanism, ir, out);
            }
            (P::NotAuthenticated, _) => {
                return self.bad(out, tag, "Command not valid before login");
            }
            (_, C::StartTLS | C::Login { .. } | C::Authenticate { .. }) => {
                return self.bad(out, tag, "Already authenticated");
            }
            (_, C::Enable { capabilities }) => {
                let condstore = capabilities
                    .as_ref()
                    .iter()
                    .any(|c| matches!(c, CapabilityEnable::CondStore));
                if condstore && !self.condstore {
                    out.extend_from_slice(b"* ENABLED CONDSTORE\r\n");
                    self.enable_condstore(out);
                } else {
                    out.extend_from_slice(b"* ENABLED\r\n");
                }
                ok(out, tag, "ENABLE completed")
            }
            (_, C::Namespace) => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                ok(out, tag, "NAMESPACE completed")
            }
            // Read-only access (docs/operations.md): reading only; SELECT opens as EXAMINE does.
            (
                _,
                C::Create { .. }
                | C::Delete { .. }
                | C::Rename { .. }
                | C::Subscribe { .. }
                | C::Unsubscribe { .. }
                | C::Append { .. }
                | C::Copy { .. }
                | C::Move { .. },
            ) if self.read_only_user() => no(out, tag, READ_ONLY_ACCESS),
            (_, C::Select { mailbox, parameters }) => self.select(tag, &mailbox, &parameters, false, out),
            (_, C::Examine { mailbox, parameters }) => self.select(tag, &mailbox, &parameters, true, out),
            (_, C::Create { mailbox }) => self.create(tag, &mailbox, out),
            (_, C::Delete { mailbox }) => self.delete(tag, &mailbox, out),
            (_, C::Rename { from, to }) => self.rename(tag, &from, &to, out),
            (_, C::Subscribe { mailbox }) => self.subscribe(tag, &mailbox, true, out),
            (_, C::Unsubscribe { mailbox }) => self.subscribe(tag, &mailbox, false, out),
            (
                _,
                C::List {
                    reference,
                    mailbox_wildcard,
                },
            ) => self.list(tag, &reference, &mailbox_wildcard, false, out),
            (
                _,
                C::Lsub {
                    reference,
                    mailbox_wildcard,
                },
            ) => self.list(tag, &reference, &mailbox_wildcard, true, out),
            (_, C::Status { mailbox, item_names }) => self.status(tag, &mailbox, &item_names, out),
            (
                _,
                C::Append {
                    mailbox,
                    flags,
                    date,
                    message,
                },
            ) => {
                let data: &[u8] = match &message {
                    LiteralOrLiteral8::Literal(l) => l.data(),
                    LiteralOrLiteral8::Literal8(l) => &l.data,
                };
                let date = date.map(|d| {
                    let d = d.as_ref();
                    (d.timestamp(), (d.offset().local_minus_utc() / 60) as i16)
                });
                self.append(tag, &mailbox, &flags, date, data, out)
            }
            (_, C::Idle) => {
                out.extend_from_slice(b"+ idling\r\n");
                self.mode = Mode::Idle { tag: tag.to_string() };
                if matches!(self.state, State::Selected { .. }) {
                    self.catch_up(true, out);
                }
                return Flow::Continue;
            }
            (
                _,
                C::Sort { .. }
                | C::Thread { .. }
                | C::Compress { .. }
                | C::GetQuota { .. }
                | C::GetQuotaRoot { .. }
                | C::SetQuota { .. }
                | C::SetMetadata { .. }
                | C::GetMetadata { .. },
            ) => {
                return self.bad(out, tag, "Command not supported");
            }
            (P::Authenticated, _) => {
                return self.bad(out, tag, "No mailbox selected");
            }
            (P::Selected, C::Check) => ok(out, tag, "CHECK completed"),
            (P::Selected, C::Close) => {
                self.close_mailbox(true);
                ok(out, tag, "CLOSE completed");
                return Flow::Continue;
            }
            (P::Selected, C::Unselect) => {
                self.close_mailbox(false);
                ok(out, tag, "UNSELECT completed");
                return Flow::Continue;
            }
            (P::Selected, C::Expunge) => self.expunge(tag, None, out),
            (P::Selected, C::ExpungeUid { sequence_set }) => self.expunge(tag, Some(&sequence_set), out),
            (
                P::Selected,
                C::Fetch {
                    sequence_set,
                    macro_or_item_names,
                    uid,
                    modifiers,
                },
            ) => self.fetch(
                tag,
                &sequence_set,
                macro_or_item_names,
                uid,
                &modifiers,
                None,
                out,
            ),
            (
                P::Selected,
                C::Store {
                    sequence_set,
                    kind,
                    response,
                    flags,
                    uid,
                    modifiers,
                },
            ) => self.store_cmd(tag, &sequence_set, kind, response, &flags, uid, &modifiers, out),
            (
                P::Selected,
                C::Search {
                    charset,
                    criteria,
                    uid,
                },
            ) => self.search(
                tag,
                charset.as_ref().map(|c| c.as_ref()),
                criteria.as_ref(),
                uid,
                None,
                out,
            ),
            (
                P::Selected,
                C::Copy {
                    sequence_set,
                    mailbox,
                    uid,
                },
            ) => self.copy_or_move(tag, &sequence_set, &mailbox, uid, false, out),
            (
                P::Selected,
                C::Move {
                    sequence_set,
                    mailbox,
                    uid,
                },
            ) => self.copy_or_move(tag, &sequence_set, &mailbox, uid, true, out),
        };
        if reports_changes {
            self.report_changes_before_tagged(out, mark);
        }
        flow
    }

    /// The LIST-EXTENDED and ESEARCH forms imap-codec does not parse.
    fn dispatch_extended(&mut self, ext: Extended, out: &mut Vec<u8>) -> Flow {
        match (self.phase(), ext) {
            (_, Extended::Bad { tag, text }) => self.bad(out, &tag, text),
            (Phase::NotAuthenticated, Extended::List { tag, .. })
            | (Phase::NotAuthenticated, Extended::Search { tag, .. }) => {
                self.bad(out, &tag, "Command not valid before login")
            }
            (Phase::Logout, _) => Flow::Close,
            (Phase::Authenticated, Extended::Search { tag, .. }) => {
                self.bad(out, &tag, "No mailbox selected")
            }
            (_, Extended::List { tag, command }) => {
                let mark = out.len();
                let flow = self.list_extended(&tag, &command, false, out);
                self.report_changes_before_tagged(out, mark);
                flow
            }
            (
                Phase::Selected,
                Extended::Search {
                    tag,
                    options,
                    criteria,
                },
            ) => match CommandCodec::default().decode(&criteria) {
                Ok((
                    _,
                    Command {
                        body:
                            CommandBody::Search {
                                charset,
                                criteria,
                                uid,
                            },
                        ..
                    },
                )) => self.search(
                    &tag,
                    charset.as_ref().map(|c| c.as_ref()),
                    criteria.as_ref(),
                    uid,
                    Some(options),
                    out,
                ),
                _ => self.bad(out, &tag, "Invalid SEARCH criteria"),
            },
        }
    }

    /// Reports other sessions' changes before the tagged completion, the last line
    /// written since `mark`.
    fn report_changes_before_tagged(&mut self, out: &mut Vec<u8>, mark: usize) {
        if matches!(self.state, State::Selected { .. }) {
            let mut updates = Vec::new();
            self.catch_up(true, &mut updates);
            if !updates.is_empty() {
                let at = last_line_start(out, mark);
                out.splice(at..at, updates);
            }
        }
    }

    fn login(&mut self, tag: &str, user: String, password: Secret, out: &mut Vec<u8>) -> Flow {
        let credentials = Credentials {
            username: user,
            password,
            peer: self.info.peer,
            protocol: "imap",
        };
        match self.auth.authenticate(&credentials) {
            Ok(account) => {
                tracing::info!(user = %account.address, peer = %self.info.peer, "imap login");
                self.state = State::Authenticated { account };
                out.extend_from_slice(
                    format!("{tag} OK [CAPABILITY {}] Logged in\r\n", self.capabilities()).as_bytes(),
                );
                Flow::Continue
            }
            Err(err) => {
                let text = match &err {
                    AuthError::Invalid => "[AUTHENTICATIONFAILED] Authentication failed",
                    AuthError::RateLimited => "[UNAVAILABLE] Too many failed logins; try again later",
                    AuthError::AccessDenied => {
                        "[UNAVAILABLE] Mail access through this server is not available for your account now"
                    }
                    AuthError::OutsideOutage => {
                        "[UNAVAILABLE] Your own mail server is working; this server opens your mailbox only during an outage of it"
                    }
                    // RFC 5530 LIMIT; the text is what Outlook and iOS show the user.
                    AuthError::TooManySessions => {
                        "[LIMIT] Too many open connections for this account; close another mail app and try again"
                    }
                    // RFC 5530: the passphrase no longer grants access; get a new one.
                    AuthError::PasswordChangeRequired => {
                        "[EXPIRED] Your password must be changed; ask your administrator for a new one"
                    }
                    AuthError::Temporary(cause) => {
                        tracing::warn!(%cause, "imap login: auth backend failed");
                        "[UNAVAILABLE] Temporary failure; try again later"
                    }
                };
                no(out, tag, text);
                self.auth_failures += 1;
                if self.auth_failures >= self.limits.max_auth_failures {
                    out.extend_from_slice(b"* BYE Too many failed logins\r\n");
                    return Flow::Close;
                }
                Flow::Continue
            }
        }
    }

    fn authenticate(
        &mut self,
        tag: &str,
        mechanism: AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if !self.login_allowed() {
            no(
                out,
                tag,
                "[PRIVACYREQUIRED] Plaintext authentication disallowed; use STARTTLS",
            );
            return Flow::Continue;
        }
        match (mechanism, initial) {
            (AuthMechanism::Plain, Some(ir)) => self.sasl_plain(tag, &ir, out),
            (AuthMechanism::Plain, None) => {
                out.extend_from_slice(b"+ \r\n");
                self.mode = Mode::Sasl {
                    tag: tag.to_string(),
                    step: SaslStep::Plain,
                };
                Flow::Continue
            }
            (AuthMechanism::Login, Some(ir)) => match sasl::parse_login_step(&ir) {
                Ok(user) => {
                    out.extend_from_slice(
                        format!("+ {}\r\n", sasl::encode_challenge("Password:")).as_bytes(),
                    );
                    self.mode = Mode::Sasl {
                        tag: tag.to_string(),
                        step: SaslStep::LoginPassword { user },
                    };
                    Flow::Continue
                }
                Err(_) => self.bad(out, tag, "Malformed SASL response"),
            },
            (AuthMechanism::Login, None) => {
                out.extend_from_slice(format!("+ {}\r\n", sasl::encode_challenge("Username:")).as_bytes());
                self.mode = Mode::Sasl {
                    tag: tag.to_string(),
                    step: SaslStep::LoginUser,
                };
                Flow::Continue
            }
            _ => {
                no(out, tag, "Unsupported authentication mechanism");
                Flow::Continue
            }
        }
    }

    fn sasl_plain(&mut self, tag: &str, message: &[u8], out: &mut Vec<u8>) -> Flow {
        match sasl::parse_plain(message) {
            Ok((user, pass)) => self.login(tag, user, pass, out),
            Err(_) => self.bad(out, tag, "Malformed SASL response"),
        }
    }

    fn sasl_line(&mut self, tag: String, step: SaslStep, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let decoded = match sasl::decode_response(line) {
            Ok(d) => d,
            Err(SaslError::Cancelled) => return self.bad(out, &tag, "Authentication cancelled"),
            Err(_) => return self.bad(out, &tag, "Malformed SASL response"),
        };
        match step {
            SaslStep::Plain => self.sasl_plain(&tag, &decoded, out),
            SaslStep::LoginUser => match sasl::parse_login_step(&decoded) {
                Ok(user) => {
                    out.extend_from_slice(
                        format!("+ {}\r\n", sasl::encode_challenge("Password:")).as_bytes(),
                    );
                    self.mode = Mode::Sasl {
                        tag,
                        step: SaslStep::LoginPassword { user },
                    };
                    Flow::Continue
                }
                Err(_) => self.bad(out, &tag, "Malformed SASL response"),
            },
            SaslStep::LoginPassword { user } => match sasl::parse_login_step(&decoded) {
                Ok(pass) => self.login(&tag, user, Secret::new(pass), out),
                Err(_) => self.bad(out, &tag, "Malformed SASL response"),
            },
        }
    }

    fn idle_line(&mut self, tag: String, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.eq_ignore_ascii_case(b"DONE") {
            if matches!(self.state, State::Selected { .. }) {
                self.catch_up(true, out);
            }
            ok(out, &tag, "IDLE terminated");
            Flow::Continue
        } else {
            self.bad(out, &tag, "Expected DONE")
        }
    }

    /// Brings the selected view up to date and writes what the client must learn.
    fn catch_up(&mut self, allow_expunge: bool, out: &mut Vec<u8>) {
        let State::Selected { account, view } = &mut self.state else {
            return;
        };
        let changes = match self.store.changes_since(account, view.id, view.highest_modseq) {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%err, mailbox = view.id, "imap: reading mailbox changes failed");
                return;
            }
        };
        let has_new = changes
            .1
            .iter()
            .any(|(c, _)| c.kind == ChangeKind::Added && c.uid >= view.uid_next);
        let claimed = if has_new && !view.read_only {
            match self.store.claim_recent(account, view.id, changes.0.uid_next) {
                Ok(r) => Some(r),
                Err(err) => {
                    tracing::warn!(%err, mailbox = view.id, "imap: claiming \\Recent failed");
                    None
                }
            }
        } else {
            None
        };
        view.catch_up(changes, allow_expunge, self.condstore, claimed, out);
    }

    fn close_mailbox(&mut self, expunge: bool) {
        let state = std::mem::replace(&mut self.state, State::Logout);
        self.state = match state {
            State::Selected { account, view } => {
                if expunge && !view.read_only {
                    let uids: Vec<u32> = view
                        .messages
                        .iter()
                        .filter(|m| m.meta.flags.has(Flags::DELETED))
                        .map(|m| m.meta.uid)
                        .collect();
                    if !uids.is_empty() {
                        if let Err(err) = self.store.expunge(&account, view.id, &uids) {
                            tracing::warn!(%err, mailbox = view.id, "imap CLOSE: expunge failed");
                        }
                    }
                }
                State::Authenticated { account }
            }
            other => other,
        };
    }

    /// Turns CONDSTORE on; when a mailbox is selected the client learns its
    /// HIGHESTMODSEQ now (RFC 7162 §3.1).
    fn enable_condstore(&mut self, out: &mut Vec<u8>) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let State::Selected { view, .. } = &self.state {
            out.extend_from_slice(
                format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", view.highest_modseq).as_bytes(),
            );
        }
    }

    fn account_clone(&self) -> Option<Account> {
        self.account().cloned()
    }

    fn select(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        parameters: &[imap_codec::imap_types::command::SelectParameter],
        examine: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let read_only = examine || self.read_only_user();
        use imap_codec::imap_types::command::SelectParameter;
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let was_selected = matches!(self.state, State::Selected { .. });
        // Selecting deselects first, even when the new SELECT fails (RFC 3501 §6.3.1).
        self.state = State::Authenticated {
            account: account.clone(),
        };
        if was_selected {
            out.extend_from_slice(b"* OK [CLOSED] Previous mailbox closed\r\n");
        }
        for p in parameters {
            match p {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { .. } => {
                    return self.bad(out, tag, "QRESYNC not supported");
                }
            }
        }
        let Some(name) = mailbox_name(mailbox) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(err) => return backend_no(out, tag, &err),
        };
        let (info, metas) = match self.store.messages(&account, info.id) {
            Ok(r) => r,
            Err(err) => return backend_no(out, tag, &err),
        };
        // EXAMINE shows \Recent without taking it (RFC 3501 §6.3.2).
        let first_recent = if read_only {
            info.recent_uid
        } else {
            match self.store.claim_recent(&account, info.id, info.uid_next) {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(%err, mailbox = info.id, "imap: claiming \\Recent failed");
                    u32::MAX
                }
            }
        };
        let view = MailboxView::new(&info, metas, first_recent, read_only);
        view.push_flags_responses(out);
        out.extend_from_slice(format!("* {} EXISTS\r\n", view.exists()).as_bytes());
        out.extend_from_slice(format!("* {} RECENT\r\n", view.recent_count()).as_bytes());
        if let Some(unseen) = view.unseen_first() {
            out.extend_from_slice(format!("* OK [UNSEEN {unseen}] First unseen\r\n").as_bytes());
        }
        out.extend_from_slice(format!("* OK [UIDVALIDITY {}] UIDs valid\r\n", view.uid_validity).as_bytes());
        out.extend_from_slice(format!("* OK [UIDNEXT {}] Predicted next UID\r\n", view.uid_next).as_bytes());
        if self.condstore {
            out.extend_from_slice(
                format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", view.highest_modseq).as_bytes(),
            );
        }
        let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        let verb = if examine { "EXAMINE" } else { "SELECT" };
        out.extend_from_slice(format!("{tag} OK [{code}] {verb} completed\r\n").as_bytes());
        self.state = State::Selected {
            account,
            view: Box::new(view),
        };
        Flow::Continue
    }

    fn create(&mut self, tag: &str, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox) else {
            return self.bad(out, tag, "Invalid mailbox name");
        };
        let name = name.trim_end_matches('/').to_string();
        if name.is_empty() || name.split('/').any(str::is_empty) {
            return self.bad(out, tag, "Invalid mailbox name");
        }
        if name == "INBOX" {
            no(out, tag, "[ALREADYEXISTS] Mailbox already exists");
            return Flow::Continue;
        }
        match self.store.create_mailbox(&account, &name, None) {
            Ok(_) => ok(out, tag, "CREATE completed"),
            Err(err) => backend_no(out, tag, &err),
        };
        Flow::Continue
    }

    fn delete(&mut self, tag: &str, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        if name == "INBOX" {
            no(out, tag, "[CANNOT] INBOX cannot be deleted");
            return Flow::Continue;
        }
        if let State::Selected { view, .. } = &self.state {
            if view.name == name {
                no(out, tag, "[INUSE] Mailbox is selected; close it first");
                return Flow::Continue;
            }
        }
        match self.store.delete_mailbox(&account, &name) {
            Ok(()) => ok(out, tag, "DELETE completed"),
            Err(err) => backend_no(out, tag, &err),
        };
        Flow::Continue
    }

    fn rename(&mut self, tag: &str, from: &Mailbox<'_>, to: &Mailbox<'_>, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let (Some(from), Some(to)) = (mailbox_name(from), mailbox_name(to)) else {
            return self.bad(out, tag, "Invalid mailbox name");
        };
        let to = to.trim_end_matches('/').to_string();
        if to.is_empty() || to.split('/').any(str::is_empty) {
            return self.bad(out, tag, "Invalid mailbox name");
        }
        if to == "INBOX" {
            no(out, tag, "[ALREADYEXISTS] INBOX already exists");
            return Flow::Continue;
        }
        match self.store.rename_mailbox(&account, &from, &to) {
            Ok(()) => ok(out, tag, "RENAME completed"),
            Err(err) => backend_no(out, tag, &err),
        };
        if let State::Selected { view, .. } = &mut self.state {
            if view.name == from && from != "INBOX" {
                view.name = to;
            }
        }
        Flow::Continue
    }

    fn subscribe(&mut self, tag: &str, mailbox: &Mailbox<'_>, subscribed: bool, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        let verb = if subscribed { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
        match self.store.set_subscribed(&account, &name, subscribed) {
            Ok(()) => ok(out, tag, &format!("{verb} completed")),
            Err(err) => backend_no(out, tag, &err),
        };
        Flow::Continue
    }

    fn list(
        &mut self,
        tag: &str,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let reference: Vec<u8> = match reference {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => o.inner().as_ref().to_vec(),
        };
        let pattern: &[u8] = match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        let command = ListCommand {
            reference,
            patterns: vec![pattern.to_vec()],
            ..ListCommand::default()
        };
        self.list_extended(tag, &command, lsub, out)
    }

    /// LIST, LSUB and LIST-EXTENDED (RFC 3501 §6.3.8-9, RFC 5258, RFC 5819, RFC 6154).
    fn list_extended(&mut self, tag: &str, command: &ListCommand, lsub: bool, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let verb = if lsub { "LSUB" } else { "LIST" };
        // Each pattern costs its length × each name's length to match; no mailbox name
        // is longer than 255 octets, so longer patterns are refused rather than matched.
        let too_long = |p: &Vec<u8>| command.reference.len() + p.len() > MAX_LIST_PATTERN;
        if command.patterns.len() > MAX_LIST_PATTERNS || command.patterns.iter().any(too_long) {
            return self.bad(out, tag, "Pattern too long");
        }
        let reference = decode_name(&command.reference);
        let patterns: Vec<String> = command.patterns.iter().map(|p| decode_name(p)).collect();
        if !lsub && patterns.len() == 1 && patterns[0].is_empty() {
            out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            ok(out, tag, "LIST completed");
            return Flow::Continue;
        }
        let full: Vec<String> = patterns
            .iter()
            .map(|p| canonical_inbox(&format!("{reference}{p}")))
            .collect();
        let mailboxes = match self.store.list_mailboxes(&account) {
            Ok(m) => m,
            Err(err) => return backend_no(out, tag, &err),
        };
        // Every existing name plus the parents that exist only through their children,
        // which LIST shows as \Noselect (RFC 3501 §6.3.8).
        let mut names: Vec<(String, Option<&MailboxInfo>)> =
            mailboxes.iter().map(|m| (m.name.clone(), Some(m))).collect();
        for m in &mailboxes {
            let mut parent = m.name.as_str();
            while let Some(i) = parent.rfind('/') {
                parent = &parent[..i];
                if !names.iter().any(|(n, _)| n == parent) {
                    names.push((parent.to_string(), None));
                }
            }
        }
        names.sort_by(|a, b| {
            (a.0 != "INBOX")
                .cmp(&(b.0 != "INBOX"))
                .then_with(|| a.0.cmp(&b.0))
        });
        let selected_by = |info: Option<&MailboxInfo>| {
            info.is_some_and(|i| {
                (!command.select_subscribed || i.subscribed)
                    && (!command.select_special_use || i.special_use.is_some())
            })
        };
        let filtered = command.select_subscribed || command.select_special_use;
        let show_subscribed = command.select_subscribed || command.return_subscribed;
        for (name, info) in &names {
            if !full.iter().any(|p| list_matches(p, name)) {
                continue;
            }
            if lsub && !info.is_some_and(|i| i.subscribed) {
                continue;
            }
            let prefix = format!("{name}/");
            let mut child_info = false;
            if filtered && !selected_by(*info) {
                // RECURSIVEMATCH: a parent of a selected mailbox is listed with CHILDINFO
                // (RFC 5258 §3.5).
                child_info = command.recursive_match
                    && names
                        .iter()
                        .any(|(n, i)| n.starts_with(&prefix) && selected_by(*i));
                if !child_info {
                    continue;
                }
            }
            let has_children = names.iter().any(|(n, _)| n.starts_with(&prefix));
            let mut attrs: Vec<&str> = Vec::new();
            if info.is_none() {
                attrs.push(if filtered { "\\NonExistent" } else { "\\Noselect" });
            }
            if !lsub {
                attrs.push(if has_children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
                if show_subscribed && info.is_some_and(|i| i.subscribed) {
                    attrs.push("\\Subscribed");
                }
                if let Some(su) = info.and_then(|i| i.special_use) {
                    attrs.push(su.attribute());
                }
            }
            out.extend_from_slice(format!("* {verb} ({}) \"/\" ", attrs.join(" ")).as_bytes());
            push_mailbox(out, name);
            if child_info {
                let what = if command.select_subscribed {
                    "SUBSCRIBED"
                } else {
                    "SPECIAL-USE"
                };
                out.extend_from_slice(format!(" (\"CHILDINFO\" (\"{what}\"))").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            if let (Some(items), Some(info)) = (&command.return_status, info) {
                // LIST-STATUS (RFC 5819): a failure for one mailbox is left out, not fatal.
                if let Err(err) = self.status_response(&account, info, items, out) {
                    tracing::warn!(%err, mailbox = info.id, "imap LIST-STATUS failed");
                }
            }
        }
        ok(out, tag, &format!("{verb} completed"));
        Flow::Continue
    }

    fn status(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(err) => return backend_no(out, tag, &err),
        };
        if let Err(err) = self.status_response(&account, &info, items, out) {
            return backend_no(out, tag, &err);
        }
        ok(out, tag, "STATUS completed");
        Flow::Continue
    }

    /// `* STATUS name (...)`.
    fn status_response(
        &self,
        account: &Account,
        info: &MailboxInfo,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        // DELETED needs each message's flags; RECENT only when some message may still be
        // unclaimed (a mailbox nobody selected since new mail came).
        let needs_messages = items.iter().any(|i| match i {
            StatusDataItemName::Deleted => true,
            StatusDataItemName::Recent => info.recent_uid < info.uid_next,
            _ => false,
        });
        let (deleted, recent) = if needs_messages {
            let (_, metas) = self.store.messages(account, info.id)?;
            (
                metas.iter().filter(|m| m.flags.has(Flags::DELETED)).count(),
                metas.iter().filter(|m| m.uid >= info.recent_uid).count(),
            )
        } else {
            (0, 0)
        };
        let mut parts: Vec<String> = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", info.exists)),
                // Counted, not claimed: only SELECT takes \Recent (RFC 3501 §6.3.10).
                StatusDataItemName::Recent => parts.push(format!("RECENT {recent}")),
                StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", info.uid_next)),
                StatusDataItemName::UidValidity => parts.push(format!("UIDVALIDITY {}", info.uid_validity)),
                StatusDataItemName::Unseen => parts.push(format!("UNSEEN {}", info.unseen)),
                StatusDataItemName::Deleted => parts.push(format!("DELETED {deleted}")),
                StatusDataItemName::HighestModSeq => {
                    parts.push(format!("HIGHESTMODSEQ {}", info.highest_modseq))
                }
                _ => {}
            }
        }
        out.extend_from_slice(b"* STATUS ");
        push_mailbox(out, &info.name);
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(())
    }

    fn append(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<(i64, i16)>,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox) else {
            no(out, tag, "[TRYCREATE] Mailbox does not exist");
            return Flow::Continue;
        };
        // The message came in through `start_spool`, or inline in `data`.
        let spooled = self.spool.take();
        if spooled.is_some() && std::mem::take(&mut self.spool_failed) {
            no(out, tag, "[UNAVAILABLE] Temporary failure; try again later");
            return Flow::Continue;
        }
        let size = spooled.as_ref().map_or(data.len(), |s| s.len());
        if size > self.limits.max_literal as usize {
            no(out, tag, "[TOOBIG] Message too big");
            return Flow::Continue;
        }
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(BackendError::NotFound) => {
                no(out, tag, "[TRYCREATE] Mailbox does not exist");
                return Flow::Continue;
            }
            Err(err) => return backend_no(out, tag, &err),
        };
        let flags = convert_flags(flags);
        let appended = match spooled {
            Some(spool) => self.store.append_spooled(&account, info.id, spool, &flags, date),
            None => self.store.append(&account, info.id, data, &flags, date),
        };
        match appended {
            Ok((validity, uid)) => {
                self.catch_up(true, out);
                out.extend_from_slice(
                    format!("{tag} OK [APPENDUID {validity} {uid}] APPEND completed\r\n").as_bytes(),
                );
                Flow::Continue
            }
            Err(err) => backend_no(out, tag, &err),
        }
    }
}

/// `{123}\r\n` or `{123+}\r\n` at the end of a line: (length, non-synchronizing).
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    let mut digits = &line[open + 1..];
    let non_sync = digits.last() == Some(&b'+');
    if non_sync {
        digits = &digits[..digits.len() - 1];
    }
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((length, non_sync))
}

/// Where the last line of `out[mark..]` starts.
fn last_line_start(out: &[u8], mark: usize) -> usize {
    let body = &out[mark..out.len().saturating_sub(2).max(mark)];
    body.windows(2)
        .rposition(|w| w == b"\r\n")
        .map_or(mark, |i| mark + i + 2)
}

/// The tag of a (possibly malformed) command, or `*`.
fn tag_of(command: &[u8]) -> String {
    let end = command
        .iter()
        .position(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
        .unwrap_or(command.len());
    let tag = &command[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag.iter().all(|&b| {
            b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    if valid {
        String::from_utf8_lossy(tag).into_owned()
    } else {
        "*".to_string()
    }
}

fn ok(out: &mut Vec<u8>, tag: &str, text: &str) -> Flow {
    out.extend_from_slice(format!("{tag} OK {text}\r\n").as_bytes());
    Flow::Continue
}

fn no(out: &mut Vec<u8>, tag: &str, text: &str) -> Flow {
    out.extend_from_slice(format!("{tag} NO {text}\r\n").as_bytes());
    Flow::Continue
}

/// A store failure as the client sees it; causes of temporary failures go to the log.
fn backend_no(out: &mut Vec<u8>, tag: &str, err: &BackendError) -> Flow {
    let text = match err {
        BackendError::NotFound => "[NONEXISTENT] Mailbox does not exist",
        BackendError::AlreadyExists => "[ALREADYEXISTS] Mailbox already exists",
        BackendError::OverQuota => "[OVERQUOTA] Quota exceeded",
        BackendError::TooBig => "[TOOBIG] Message too big",
        BackendError::Invalid(cause) => {
            tracing::info!(%cause, "imap: store refused the operation");
            "[CANNOT] Operation not permitted"
        }
        BackendError::Temporary(cause) => {
            tracing::warn!(%cause, "imap: store failure");
            "[UNAVAILABLE] Temporary failure; try again later"
        }
    };
    no(out, tag, text);
    Flow::Continue
}

/// A client mailbox name (modified UTF-7, or raw UTF-8 from lax clients) as the store's
/// UTF-8 name, INBOX canonicalised. `None` for names that are neither.
fn mailbox_name(mailbox: &Mailbox<'_>) -> Option<String> {
    match mailbox {
        Mailbox::Inbox => Some("INBOX".to_string()),
        Mailbox::Other(other) => {
            let raw: &[u8] = other.inner().as_ref();
            let name = decode_name(raw);
            (!name.is_empty() || raw.is_empty()).then_some(name)
        }
    }
}

fn decode_name(raw: &[u8]) -> String {
    let name = text::decode_mutf7(raw)
        .or_else(|| String::from_utf8(raw.to_vec()).ok())
        .unwrap_or_default();
    canonical_inbox(&name)
}

/// Client flags as stored flags; `\Recent` and unknown `\System` flags are dropped.
fn convert_flags(flags: &[Flag<'_>]) -> Flags {
    let mut out = Flags::default();
    for f in flags {
        match f {
            Flag::Seen => out.system |= Flags::SEEN,
            Flag::Answered => out.system |= Flags::ANSWERED,
            Flag::Flagged => out.system |= Flags::FLAGGED,
            Flag::Deleted => out.system |= Flags::DELETED,
            Flag::Draft => out.system |= Flags::DRAFT,
            Flag::Extension(_) => {}
            Flag::Keyword(k) => {
                if !out.has_keyword(k.as_ref()) {
                    out.keywords.push(k.as_ref().to_string());
                }
            }
        }
    }
    out
}
