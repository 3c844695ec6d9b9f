//! IMAP4rev1 server session (RFC 3501), IMAP4rev2 (RFC 9051) when enabled, with the
//! extensions Outlook, iOS, Android and Thunderbird rely on, as an I/O-free state machine. Commands are parsed with
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
//! (RFC 3501 §3 and §6; SORT, THREAD RFC 5256, 5957, 5267; QUOTA RFC 9208; STATUS=SIZE
//! RFC 8438; COMPRESS RFC 4978; IDLE RFC 2177; ENABLE RFC 5161; CONDSTORE and QRESYNC RFC 7162; MULTIAPPEND RFC 3502; BINARY RFC 3516; CATENATE RFC 4469; CONTEXT=SEARCH and CONTEXT=SORT RFC 5267 §4;
//! UIDPLUS RFC 4315; MOVE RFC 6851; SPECIAL-USE RFC 6154; LITERAL+ RFC 7888; ID RFC 2971;
//! NAMESPACE RFC 2342; UNSELECT RFC 3691; CHILDREN RFC 3348; APPENDLIMIT RFC 7889.)
//!
//! Framing (`framing::Framer`) cuts the input into lines of at most
//! `ImapLimits::max_line` octets and literals of at most `ImapLimits::max_literal`, refused
//! before they are read (`NO [TOOBIG]` for a synchronizing literal, `BAD` and close for a
//! non-synchronizing one, whose octets are already on the way). A synchronizing literal
//! is accepted with `+ ` only after the command so far parses (imap-codec says
//! `LiteralFound`).
//!
//! Where each command is handled (one `match` on state and command in `dispatch` here):
//!
//! | file | commands |
//! |---|---|
//! | `login.rs` | LOGIN, AUTHENTICATE |
//! | `mailboxes.rs` | SELECT, EXAMINE, CLOSE, UNSELECT, CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS |
//! | `append.rs` | APPEND, MULTIAPPEND |
//! | `catenate.rs` | APPEND with CATENATE: URL parts |
//! | `idle.rs` | IDLE, DONE, pushes during IDLE |
//! | `fetch.rs` | FETCH, UID FETCH (BINARY items: `message/binary.rs` decodes) |
//! | `store.rs` | STORE, UID STORE |
//! | `search.rs` | SEARCH, UID SEARCH, ESEARCH |
//! | `context.rs` | CONTEXT=SEARCH and CONTEXT=SORT: RETURN (PARTIAL, UPDATE), CANCELUPDATE |
//! | `sort.rs` | SORT, UID SORT, SORT=DISPLAY keys, ESORT (`SORT RETURN`) |
//! | `thread.rs` | THREAD, UID THREAD (ORDEREDSUBJECT, REFERENCES) |
//! | `quota.rs` | GETQUOTA, GETQUOTAROOT, SETQUOTA (refused) |
//! | `compress.rs` | COMPRESS DEFLATE (the driver's `src/compress.rs` does the DEFLATE) |
//! | `copy_move.rs` | COPY, UID COPY, MOVE, UID MOVE |
//! | `expunge.rs` | EXPUNGE, UID EXPUNGE |
//! | `mod.rs` | CAPABILITY, NOOP, CHECK, LOGOUT, ID, ENABLE, NAMESPACE, STARTTLS |
//!
//! A new extension gets its own file beside these (an `impl ImapSession` block with its
//! command, one arm in `dispatch`, its capability in `capabilities`); message rendering
//! is in `message/` (`envelope.rs`, `structure.rs`, `section.rs`, `search.rs` over the
//! part tree in `message/mod.rs`), the selected mailbox's view in `view.rs`.
//!
//! Untagged EXISTS/RECENT/FETCH FLAGS/EXPUNGE updates from other sessions are delivered
//! after each command in Selected state, but EXPUNGE is held back during FETCH, STORE,
//! SEARCH and COPY by sequence number (RFC 3501 §7.4.1), see `view`. During IDLE the
//! driver calls `mailbox_changed` and every change is pushed at once.
//!
//! SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267) read the
//! per-message keys the store keeps beside each body (`message::MessageSummary`).
//!
//! QRESYNC (RFC 7162 §3.2): VANISHED replaces EXPUNGE once enabled (`view`), SELECT
//! (QRESYNC ...) in `mailboxes.rs`, UID FETCH (VANISHED) in `fetch.rs`.
//!
//! IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855) once the client ENABLEs them: UTF-8
//! names (`mailbox_name`, `text::push_mailbox`), ESEARCH for SEARCH (`search.rs`), no
//! `\Recent` and a LIST at SELECT (`mailboxes.rs`, `view.rs`), UID in every unsolicited
//! FETCH, `APPEND .. UTF8 (~{n})` (`append.rs`). The mapping to RFC 9051 Appendix E is in
//! docs/architecture.md.
//!
//! Not offered (so not advertised): QUOTASET, METADATA, UTF8=ONLY.

pub(crate) mod append;
pub mod backend;
pub(crate) mod catenate;
mod compress;
mod context;
mod copy_move;
mod expunge;
pub(crate) mod extended;
mod fetch;
mod framing;
mod idle;
mod login;
mod mailboxes;
pub mod message;
mod quota;
mod search;
mod searchres;
mod session_trait;
mod sort;
mod store;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_append;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_binary;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_catenate;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_context;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_qresync;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_quota;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_rev2;
#[cfg(test)]
mod tests_searchres;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests_sort_thread;
pub(crate) mod text;
mod thread;
mod view;

use std::net::IpAddr;
use std::sync::Arc;

use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::{
    auth::AuthMechanism,
    command::{Command, CommandBody},
    core::{IString, NString},
    extensions::{binary::LiteralOrLiteral8, enable::CapabilityEnable, utf8::Utf8Kind},
    flag::Flag,
    mailbox::{ListMailbox, Mailbox},
    status::StatusDataItemName,
};
use imap_codec::CommandCodec;

use crate::auth::{Account, AuthBackend, AuthError, Credentials, Secret};
use crate::sasl::{self, SaslError};
use crate::session::{Action, ConnectionInfo, Goodbye, Output, READ_CHUNK};

pub use backend::{
    BackendError, Change, ChangeKind, Flags, ImapBackend, MailboxId, MailboxInfo, MessageMeta, Quota,
    SpecialUse, Spool, StoreOp,
};

use extended::{Extended, ListCommand};
use framing::{literal_announcement, tag_of, Frame, Framer};
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
    /// Longest sequence set `$` (SEARCHRES, RFC 5182) may stand for once written out;
    /// a command whose `$` would come to more answers `NO [LIMIT]` instead of being
    /// parsed. 1 MiB holds the worst case of a 100,000-message mailbox.
    pub max_saved_set: usize,
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
            max_saved_set: 1 << 20,
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
    /// COMPRESS answered `OK`: the driver compresses from the next octet on.
    Compress,
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
    /// Lines and literals of the input (`framing`).
    framer: Framer,
    /// ENABLE CONDSTORE or SELECT (CONDSTORE) seen (RFC 7162 §3.1).
    condstore: bool,
    /// ENABLE QRESYNC seen (RFC 7162 §3.2.3): VANISHED instead of EXPUNGE, SELECT
    /// (QRESYNC ...), UID FETCH (VANISHED). Implies `condstore`.
    qresync: bool,
    /// ENABLE IMAP4rev2 seen (RFC 9051): ESEARCH for SEARCH, no `\Recent`, a LIST
    /// at SELECT, UID in every unsolicited FETCH. Implies `utf8`.
    rev2: bool,
    /// ENABLE UTF8=ACCEPT (RFC 6855) or IMAP4rev2 seen: mailbox names and quoted
    /// strings are UTF-8 both ways, never modified UTF-7; APPEND takes `UTF8 (~{n})`.
    utf8: bool,
    /// ENABLE UTF8=ACCEPT itself seen: SEARCH takes no CHARSET, SORT and THREAD only
    /// UTF-8 (RFC 6855 §3, erratum 4029).
    utf8_accept: bool,
    /// COMPRESS=DEFLATE is on (RFC 4978); a second COMPRESS is refused.
    compressing: bool,
    bad_commands: u32,
    auth_failures: u32,
    /// The user's own address as a webmail host named it before login (`ID`
    /// `x-originating-ip`); the login throttle counts it instead of the peer's.
    client_ip: Option<IpAddr>,
    pending_fetch: Option<PendingFetch>,
    /// UPDATE contexts of UID SEARCH (CONTEXT=SEARCH, `context.rs`), while selected.
    contexts: Vec<context::UpdateContext>,
    /// A SEARCH with UPDATE leaves its result and modseq here for `register_context`.
    new_context: Option<(Vec<u32>, u64)>,
    /// The UIDs `SEARCH RETURN (SAVE)` kept for `$` (SEARCHRES, `searchres.rs`).
    saved: Vec<u32>,
    /// Complete commands handled, for the driver's per-connection rate limit.
    commands: u64,
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
            framer: Framer::default(),
            condstore: false,
            qresync: false,
            rev2: false,
            utf8: false,
            utf8_accept: false,
            compressing: false,
            bad_commands: 0,
            auth_failures: 0,
            client_ip: None,
            pending_fetch: None,
            contexts: Vec::new(),
            new_context: None,
            saved: Vec::new(),
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
        self.framer.discard();
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

    pub fn receive(&mut self, input: &[u8]) -> Output {
        if matches!(self.state, State::Logout) {
            return Output::close(Vec::new());
        }
        if matches!(self.mode, Mode::AwaitingTls) {
            return Output::reply(Vec::new());
        }
        self.framer.push(input);
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
                if self.framer.buffered() > MAX_BUFFERED_INPUT {
                    out.extend_from_slice(b"* BYE Too much pipelined input\r\n");
                    self.state = State::Logout;
                    return Output::close(out);
                }
                Output::new(out, self.idle_action())
            }
            Flow::StartTls => {
                // CVE-2011-0411: nothing sent before the handshake may count after it.
                self.framer.discard_input();
                self.mode = Mode::AwaitingTls;
                Output::new(out, Action::StartTls)
            }
            Flow::Compress => {
                // A client must not send more before the answer; what came anyway was
                // compressed with a state we never saw.
                self.framer.discard_input();
                Output::new(out, Action::Compress)
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
        self.pending_fetch.is_some() || (matches!(self.mode, Mode::Command) && self.framer.has_line())
    }

    fn process_input(&mut self, out: &mut Vec<u8>) -> Flow {
        let flow = loop {
            if self.framer.in_literal() {
                if self.framer.take_literal() {
                    break Flow::Continue;
                }
                continue;
            }
            if self.pending_fetch.is_some()
                || (out.len() >= self.limits.max_output_per_step
                    && matches!(self.mode, Mode::Command)
                    && self.framer.command().is_empty())
            {
                // Output capped: the rest waits for `receive(&[])` (see `has_pending`).
                break Flow::Continue;
            }
            let line = match self.framer.next_line(self.limits.max_line) {
                Frame::Line(line) => line,
                Frame::NeedMore => break Flow::Continue,
                Frame::TooLong => {
                    out.extend_from_slice(b"* BAD Line too long\r\n* BYE Closing\r\n");
                    break Flow::Close;
                }
            };
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
        self.framer.compact();
        flow
    }

    /// One line in command mode: either the end of a command or a line announcing a
    /// literal.
    fn command_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        self.framer.append_to_command(line);
        let (max_literal, max_command) = if matches!(self.state, State::NotAuthenticated) {
            let max = self.limits.max_literal_before_login.min(self.limits.max_literal);
            (max, max as usize + self.limits.max_line)
        } else {
            let max = self.limits.max_literal;
            (max, max as usize + 4 * self.limits.max_line)
        };
        if self.framer.command().len() > max_command {
            out.extend_from_slice(b"* BAD Command too long\r\n* BYE Closing\r\n");
            return Flow::Close;
        }
        if let Some((length, non_sync)) = literal_announcement(line) {
            let tag = tag_of(self.framer.command());
            // A literal must fit, and so must the command with it: a MULTIAPPEND of
            // many literals stays within `max_command` in memory.
            let fits_command =
                (self.framer.command().len() as u64).saturating_add(length) <= max_command as u64;
            if length > u64::from(max_literal) || !fits_command {
                self.framer.clear_command();
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
                match CommandCodec::default().decode(self.framer.command()) {
                    Err(CommandDecodeError::LiteralFound { .. } | CommandDecodeError::Incomplete) => {
                        out.extend_from_slice(b"+ OK\r\n");
                    }
                    _ if extended::is_extended_form(self.framer.command())
                        || append::is_append(self.framer.command()) =>
                    {
                        out.extend_from_slice(b"+ OK\r\n");
                    }
                    _ => {
                        self.framer.clear_command();
                        return self.bad(out, &tag, "Invalid command");
                    }
                }
            }
            // `length` fits: it is at most max_literal, a u32.
            self.framer.begin_literal(length as usize);
            self.start_spool(length as usize);
            return Flow::Continue;
        }
        let mut command = self.framer.take_command();
        self.commands += 1;
        match self.substitute_saved(&command) {
            Some(searchres::Substituted::Command(c)) => command = c,
            Some(searchres::Substituted::Empty { tag, uid, verb }) => {
                self.catch_up(uid, out);
                ok(out, &tag, &format!("{verb} completed"));
                self.framer.drop_spool();
                return Flow::Continue;
            }
            Some(searchres::Substituted::TooLong { tag }) => {
                // A SEARCH RETURN (SAVE) refused so leaves the saved result empty.
                if let Some(extended::Extended::Search { options, .. }) = extended::parse(&command) {
                    if options.save {
                        self.saved.clear();
                    }
                }
                no(out, &tag, "[LIMIT] Saved search result too large");
                self.framer.drop_spool();
                return Flow::Continue;
            }
            None => {}
        }
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
                None => match append::parse_append(&command) {
                    Some(Ok(parsed)) => {
                        let mark = out.len();
                        let flow = self.append_extended(&command, parsed, out);
                        self.report_changes_before_tagged(out, mark);
                        flow
                    }
                    Some(Err(tag)) => self.bad(out, &tag, "Invalid APPEND arguments"),
                    None => {
                        let tag = tag_of(&command);
                        self.bad(out, &tag, "Invalid or unknown command")
                    }
                },
            },
        };
        // A spool the command did not use (it failed to parse) is not the next one's.
        self.framer.drop_spool();
        self.framer.recycle(command);
        flow
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
        let mut caps = String::from("IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR");
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
             LIST-STATUS ESEARCH CONDSTORE QRESYNC SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT \
             THREAD=REFERENCES STATUS=SIZE QUOTA QUOTA=RES-STORAGE MULTIAPPEND BINARY CATENATE CONTEXT=SEARCH CONTEXT=SORT SEARCHRES \
             UTF8=ACCEPT",
        );
        if !matches!(self.state, State::NotAuthenticated) && !self.compressing {
            caps.push_str(" COMPRESS=DEFLATE");
        }
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
            (_, C::Id { parameters }) => self.id(tag, parameters, out),
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
                let mut condstore = false;
                let mut qresync = false;
                let mut rev2 = false;
                let mut utf8 = false;
                for c in capabilities.as_ref() {
                    match c {
                        CapabilityEnable::CondStore => condstore = true,
                        CapabilityEnable::Utf8(Utf8Kind::Accept) => utf8 = true,
                        other if other.to_string().eq_ignore_ascii_case("QRESYNC") => qresync = true,
                        other if other.to_string().eq_ignore_ascii_case("IMAP4rev2") => rev2 = true,
                        _ => {}
                    }
                }
                // IMAP4rev2 and UTF8=ACCEPT change how a mailbox is presented, so they
                // are taken in the authenticated state only (RFC 5161 §3.1, RFC 6855
                // §3); asked for while selected they are not enabled, nor listed.
                if phase == P::Selected {
                    rev2 = false;
                    utf8 = false;
                }
                // ENABLED lists what this command turned on (RFC 5161 §3.2).
                let mut enabled = String::from("* ENABLED");
                if condstore && !self.condstore {
                    enabled.push_str(" CONDSTORE");
                }
                if qresync && !self.qresync {
                    enabled.push_str(" QRESYNC");
                }
                if rev2 && !self.rev2 {
                    enabled.push_str(" IMAP4rev2");
                }
                if utf8 && !self.utf8 {
                    enabled.push_str(" UTF8=ACCEPT");
                }
                enabled.push_str("\r\n");
                out.extend_from_slice(enabled.as_bytes());
                if qresync {
                    self.enable_qresync();
                }
                if rev2 {
                    self.rev2 = true;
                    self.utf8 = true;
                }
                if utf8 {
                    self.utf8 = true;
                    self.utf8_accept = true;
                }
                if condstore || qresync {
                    self.enable_condstore(out);
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
                P::Selected,
                C::Sort {
                    sort_criteria,
                    charset,
                    search_criteria,
                    uid,
                },
            ) => self.sort(
                tag,
                sort_criteria.as_ref(),
                charset.as_ref(),
                search_criteria.as_ref(),
                uid,
                None,
                out,
            ),
            (
                P::Selected,
                C::Thread {
                    algorithm,
                    charset,
                    search_criteria,
                    uid,
                },
            ) => self.thread(
                tag,
                &algorithm,
                charset.as_ref(),
                search_criteria.as_ref(),
                uid,
                out,
            ),
            (_, C::GetQuota { root }) => self.get_quota(tag, root.as_ref(), out),
            (_, C::GetQuotaRoot { mailbox }) => self.get_quota_root(tag, &mailbox, out),
            (_, C::SetQuota { .. }) => no(out, tag, "[NOPERM] Quotas are set by the administrator"),
            (_, C::Compress { .. }) => return self.compress(tag, out),
            (_, C::SetMetadata { .. } | C::GetMetadata { .. }) => {
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
            (phase, Extended::SearchSaveBad { tag, text }) => {
                if phase == Phase::Selected {
                    self.saved.clear();
                }
                self.bad(out, &tag, text)
            }
            (Phase::NotAuthenticated, Extended::List { tag, .. })
            | (Phase::NotAuthenticated, Extended::Search { tag, .. }) => {
                self.bad(out, &tag, "Command not valid before login")
            }
            (Phase::Logout, _) => Flow::Close,
            (Phase::Authenticated, Extended::Search { tag, .. } | Extended::CancelUpdate { tag, .. }) => {
                self.bad(out, &tag, "No mailbox selected")
            }
            (Phase::NotAuthenticated, Extended::CancelUpdate { tag, .. }) => {
                self.bad(out, &tag, "Command not valid before login")
            }
            (Phase::Selected, Extended::CancelUpdate { tag, tags }) => {
                let mark = out.len();
                let flow = self.cancel_update(&tag, &tags, out);
                self.report_changes_before_tagged(out, mark);
                flow
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
                    mut options,
                    criteria: criteria_bytes,
                },
            ) => match CommandCodec::default().decode(&criteria_bytes) {
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
                )) => {
                    if options.update {
                        match self.admit_context(&tag, uid, criteria.as_ref(), out) {
                            Ok(admitted) => options.update = admitted,
                            Err(text) => {
                                // A refused SAVE search empties the saved result too.
                                if options.save {
                                    self.saved.clear();
                                }
                                return self.bad(out, &tag, text);
                            }
                        }
                    }
                    let flow = self.search(
                        &tag,
                        charset.as_ref().map(|c| c.as_ref()),
                        criteria.as_ref(),
                        uid,
                        Some(options),
                        out,
                    );
                    if options.update {
                        self.register_context(&tag, criteria_bytes.clone());
                    }
                    flow
                }
                Ok((
                    _,
                    Command {
                        body:
                            CommandBody::Sort {
                                sort_criteria,
                                charset,
                                search_criteria,
                                uid,
                            },
                        ..
                    },
                )) => {
                    if options.update {
                        match self.admit_context(&tag, uid, search_criteria.as_ref(), out) {
                            Ok(admitted) => options.update = admitted,
                            Err(text) => return self.bad(out, &tag, text),
                        }
                    }
                    let flow = self.sort(
                        &tag,
                        sort_criteria.as_ref(),
                        charset.as_ref(),
                        search_criteria.as_ref(),
                        uid,
                        Some(options),
                        out,
                    );
                    if options.update {
                        self.register_context(&tag, criteria_bytes.clone());
                    }
                    flow
                }
                _ => {
                    if options.save {
                        self.saved.clear();
                    }
                    self.bad(out, &tag, "Invalid SEARCH criteria")
                }
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
        let claimed = if has_new && !view.read_only && !view.rev2 {
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
        self.update_contexts(out);
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

    /// Turns QRESYNC on (RFC 7162 §3.2.3); the selected view, if any, reports expunges
    /// as VANISHED from now on.
    fn enable_qresync(&mut self) {
        self.qresync = true;
        if let State::Selected { view, .. } = &mut self.state {
            view.qresync = true;
        }
    }

    fn account_clone(&self) -> Option<Account> {
        self.account().cloned()
    }
}

/// Where the last line of `out[mark..]` starts.
fn last_line_start(out: &[u8], mark: usize) -> usize {
    let body = &out[mark..out.len().saturating_sub(2).max(mark)];
    body.windows(2)
        .rposition(|w| w == b"\r\n")
        .map_or(mark, |i| mark + i + 2)
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

/// A client mailbox name as the store's UTF-8 name, INBOX canonicalised: modified
/// UTF-7 (or raw UTF-8 from lax clients), or with `utf8` (IMAP4rev2, UTF8=ACCEPT:
/// RFC 9051 §5.1, RFC 6855 §3) UTF-8 as it is, `&` being an ordinary character. `None`
/// for names that are neither.
fn mailbox_name(mailbox: &Mailbox<'_>, utf8: bool) -> Option<String> {
    match mailbox {
        Mailbox::Inbox => Some("INBOX".to_string()),
        Mailbox::Other(other) => {
            let raw: &[u8] = other.inner().as_ref();
            let name = decode_name(raw, utf8);
            (!name.is_empty() || raw.is_empty()).then_some(name)
        }
    }
}

fn decode_name(raw: &[u8], utf8: bool) -> String {
    let name = if utf8 {
        String::from_utf8(raw.to_vec()).unwrap_or_default()
    } else {
        text::decode_mutf7(raw)
            .or_else(|| String::from_utf8(raw.to_vec()).ok())
            .unwrap_or_default()
    };
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
