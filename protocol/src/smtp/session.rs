//! The SMTP server session: ESMTP (RFC 5321) with PIPELINING (RFC 2920), SIZE (RFC
//! 1870), 8BITMIME (RFC 6152), ENHANCEDSTATUSCODES (RFC 2034, RFC 3463 codes on every
//! 2xx/4xx/5xx reply except the greeting and EHLO/HELO), SMTPUTF8 (RFC 6531), STARTTLS
//! (RFC 3207), CHUNKING (RFC 3030) and, in submission mode, AUTH PLAIN/LOGIN (RFC 4954).
//!
//! ```text
//!  greeting ──EHLO/HELO──> ready ──MAIL──> mail ──RCPT──> rcpt ──DATA──> data ──.──┐
//!     ^  │                  ^  │ AUTH (submission, after TLS)       └─BDAT n──> chunk┤
//!     │  └─STARTTLS─> TLS ──┘  └──> auth steps ──> ready            (BDAT n LAST)  │
//!     │                ready <── deliver → 250 / 4xx / 5xx ─────────────────────────┘
//!     └── after STARTTLS the client must say EHLO again (RFC 3207 §4.2)
//! ```
//!
//! `receive` answers every complete command of a chunk in one `Output` (PIPELINING) and
//! keeps only an incomplete line between calls. Command lines are bounded at 512 octets
//! (RFC 5321 §4.5.3.1.4; AUTH lines may carry a SASL response up to `MAX_SASL_LINE`).
//! Message bodies are streamed into a decoder bounded by the size limit.

use std::borrow::Cow;
use std::sync::Arc;

use mail_parser::{HeaderName, MessageParser};
use smtp_proto::{Error as ParseError, Request, AUTH_LOGIN, AUTH_PLAIN};
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8};

use super::body::BodyDecoder;
use super::received::{protocol_name, received_header, trace_id, Trace};
use super::reply::one_line;
use super::{DeliveryError, Envelope, RcptVerdict, SmtpBackend, SmtpLimits, SmtpMode};
use crate::auth::{AccessLevel, Account, AuthBackend, AuthError, Credentials};
use crate::sasl::{self, SaslError, MAX_SASL_LINE};
use crate::session::{Action, ConnectionInfo, Goodbye, Output, Session};

/// Longest command line with its CRLF (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest AUTH command line: RFC 4954 §4 lifts the 512 limit for the initial response.
const MAX_AUTH_LINE: usize = MAX_SASL_LINE + 64;

const SIZE_EXCEEDED: &str = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";
const LINE_TOO_LONG: &str = "500 5.5.6 Line too long\r\n";
const BAD_SEQUENCE_MAIL: &str = "503 5.5.1 Error: need MAIL command\r\n";
const NO_RECIPIENTS: &str = "554 5.5.1 Error: no valid recipients\r\n";
const AUTH_INVALID: &str = "535 5.7.8 Authentication credentials invalid\r\n";
const AUTH_TEMPORARY: &str = "454 4.7.0 Temporary authentication failure\r\n";
const AUTH_OUTSIDE_OUTAGE: &str =
    "454 4.7.0 Your own mail server is working; send through it (this server sends only during an outage)\r\n";
const TEMPORARY_FAILURE: &str = "451 4.3.0 Temporary failure, please try again later\r\n";

/// Where the next input bytes go.
#[derive(Debug)]
enum Phase {
    /// Command lines.
    Command,
    /// DATA body until `<CRLF>.<CRLF>`.
    Data(BodyDecoder),
    /// The rest of a BDAT chunk. With `discard`, the chunk is read and dropped and
    /// `discard` is the reply (no transaction, or it already failed).
    Bdat {
        remaining: usize,
        size: usize,
        last: bool,
        discard: Option<&'static str>,
    },
    /// A SASL response line.
    Auth(AuthStep),
    /// The body is complete (read by `receive_inline`); the next `receive` delivers it.
    Delivery(BodyDecoder),
    /// After QUIT, `421` or `goodbye`.
    Closed,
}

#[derive(Debug)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { username: String },
}

#[derive(Debug)]
struct Helo {
    name: String,
    extended: bool,
}

/// One mail transaction, from MAIL to the end of DATA or BDAT LAST.
#[derive(Debug)]
struct Transaction {
    mail_from: String,
    smtputf8: bool,
    body_8bit: bool,
    rcpts: Vec<String>,
    size_hint: usize,
    /// Set by the first BDAT: the body being assembled across chunks.
    chunks: Option<BodyDecoder>,
}

/// What `receive` does after one step.
enum Flow {
    /// `n` input bytes were used.
    Consumed(usize),
    /// The rest is an incomplete line: keep it for the next call.
    NeedMore,
    /// STARTTLS accepted: drop the rest of the input (RFC 3207 §4, CVE-2011-0411).
    StartTls,
    Close,
    /// `receive_inline`: `n` bytes were used and the next step needs the backend; the
    /// rest waits in `pending` for `receive` on a thread that may block.
    Defer(usize),
}

/// A framed line, or why there is none yet.
enum Line<'a> {
    Complete(&'a [u8]),
    /// An over-long line was dropped up to and including its LF: `n` bytes used.
    Dropped(usize),
    /// The line is growing past the limit: all `n` bytes were dropped.
    Discarding(usize),
    Incomplete,
}

/// One SMTP connection. See the module documentation for the protocol it speaks.
pub struct SmtpSession {
    info: ConnectionInfo,
    mode: SmtpMode,
    auth: Arc<dyn AuthBackend>,
    backend: Arc<dyn SmtpBackend>,
    limits: SmtpLimits,
    helo: Option<Helo>,
    account: Option<Account>,
    transaction: Option<Transaction>,
    phase: Phase,
    /// An incomplete command or SASL line carried over from the previous chunk.
    pending: Vec<u8>,
    /// Inside an over-long line: drop bytes up to its LF, then answer `500 5.5.6`.
    discarding_line: bool,
    errors: u32,
    /// Set during `receive_inline`: a step that would call a backend stops instead.
    inline: bool,
    /// `receive_inline` stopped before a backend call; `receive(&[])` does the rest.
    deferred: bool,
}

impl SmtpSession {
    pub fn new(
        info: ConnectionInfo,
        mode: SmtpMode,
        auth: Arc<dyn AuthBackend>,
        backend: Arc<dyn SmtpBackend>,
        limits: SmtpLimits,
    ) -> Self {
        SmtpSession {
            info,
            mode,
            auth,
            backend,
            limits,
            helo: None,
            account: None,
            transaction: None,
            phase: Phase::Command,
            pending: Vec::new(),
            discarding_line: false,
            errors: 0,
            inline: false,
            deferred: false,
        }
    }

    /// `220 <hostname> ESMTP Understudy`.
    pub fn greeting(&mut self) -> Output {
        Output::reply(format!("220 {} ESMTP Understudy\r\n", self.info.hostname))
    }

    /// True from an accepted MAIL until the transaction ends (delivered, refused or
    /// reset), so a graceful shutdown can wait for messages in flight.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// The authenticated user, for the driver's log span.
    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    /// The TLS handshake after STARTTLS succeeded. Everything learnt before it is
    /// forgotten (RFC 3207 §4.2): the client must send EHLO again.
    pub fn tls_started(&mut self) {
        self.info.tls = true;
        self.helo = None;
        self.account = None;
        self.transaction = None;
        self.pending.clear();
        self.discarding_line = false;
        self.phase = Phase::Command;
    }

    /// The last words when the driver ends the session; the session is closed after.
    pub fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        self.phase = Phase::Closed;
        self.transaction = None;
        let host = &self.info.hostname;
        match why {
            Goodbye::Shutdown => {
                format!("421 4.3.2 {host} Service shutting down, closing connection\r\n")
            }
            Goodbye::Timeout => format!("421 4.4.2 {host} Error: timeout exceeded\r\n"),
            Goodbye::Revoked => format!("421 4.7.0 {host} Session ended by administrator\r\n"),
        }
        .into_bytes()
    }

    /// Feeds bytes from the client; returns every reply they caused and what to do next.
    pub fn receive(&mut self, input: &[u8]) -> Output {
        self.inline = false;
        self.run(input)
    }

    /// Like `receive`, but calls no backend, so it never blocks and can run on an async
    /// worker: message bodies streaming in and the commands that need no look-up (EHLO,
    /// MX-side MAIL, DATA, RSET...) cost no thread hand-off. It stops before the first
    /// step that needs the store or the credential check (RCPT, AUTH, the end of a
    /// message...); then `has_deferred()` is true and `receive(&[])` must be called.
    pub fn receive_inline(&mut self, input: &[u8]) -> Output {
        self.inline = true;
        let out = self.run(input);
        self.inline = false;
        out
    }

    /// `receive_inline` left work that needs a backend: call `receive(&[])`.
    pub fn has_deferred(&self) -> bool {
        self.deferred
    }

    fn run(&mut self, input: &[u8]) -> Output {
        self.deferred = false;
        let mut out = Vec::new();
        let joined;
        let input = if self.pending.is_empty() {
            input
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(input);
            joined = pending;
            &joined[..]
        };
        let mut pos = 0;
        let action = loop {
            if matches!(self.phase, Phase::Closed) {
                break Action::Close;
            }
            let rest = input.get(pos..).unwrap_or_default();
            // A body read by `receive_inline` is delivered even when no input follows.
            if rest.is_empty() && !matches!(self.phase, Phase::Delivery(_)) {
                break Action::Continue;
            }
            match self.step(rest, &mut out) {
                Flow::Consumed(n) => pos += n,
                Flow::NeedMore => {
                    self.pending = rest.to_vec();
                    break Action::Continue;
                }
                Flow::StartTls => break Action::StartTls,
                Flow::Close => {
                    self.phase = Phase::Closed;
                    break Action::Close;
                }
                Flow::Defer(n) => {
                    self.pending = input.get(pos + n..).unwrap_or_default().to_vec();
                    self.deferred = true;
                    break Action::Continue;
                }
            }
        };
        Output::new(out, action)
    }

    fn step(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Flow {
        match &mut self.phase {
            Phase::Command => {
                let limit = if starts_with_ignore_case(rest, b"AUTH ") {
                    MAX_AUTH_LINE
                } else {
                    MAX_COMMAND_LINE
                };
                match self.frame_line(rest, limit) {
                    Line::Complete(line) if self.inline && self.needs_backend(line) => Flow::Defer(0),
                    Line::Complete(line) => match self.command(line, out) {
                        Flow::Consumed(_) => Flow::Consumed(line.len()),
                        other => other,
                    },
                    Line::Dropped(n) => self.line_too_long(n, out),
                    Line::Discarding(n) => Flow::Consumed(n),
                    Line::Incomplete => Flow::NeedMore,
                }
            }
            Phase::Data(decoder) => match decoder.feed(rest) {
                Some(used) if self.inline => {
                    // The body is complete; delivering it is the backend's part.
                    let Phase::Data(decoder) = std::mem::replace(&mut self.phase, Phase::Command) else {
                        return Flow::Consumed(used);
                    };
                    self.phase = Phase::Delivery(decoder);
                    Flow::Defer(used)
                }
                Some(used) => {
                    let Phase::Data(decoder) = std::mem::replace(&mut self.phase, Phase::Command) else {
                        return Flow::Consumed(used);
                    };
                    self.finish_message(decoder, out);
                    Flow::Consumed(used)
                }
                None => Flow::Consumed(rest.len()),
            },
            Phase::Bdat {
                remaining,
                size,
                last,
                discard,
            } => {
                let n = rest.len().min(*remaining);
                if self.inline && n == *remaining && *last && discard.is_none() {
                    // This completes the message: all of it is read on the blocking side.
                    return Flow::Defer(0);
                }
                *remaining -= n;
                let (done, size, last, discard) = (*remaining == 0, *size, *last, *discard);
                if discard.is_none() {
                    if let Some(decoder) = self.transaction.as_mut().and_then(|t| t.chunks.as_mut()) {
                        decoder.feed(rest.get(..n).unwrap_or_default());
                    }
                }
                if done {
                    self.phase = Phase::Command;
                    if let Flow::Close = self.end_chunk(size, last, discard, out) {
                        return Flow::Close;
                    }
                }
                Flow::Consumed(n)
            }
            Phase::Auth(_) if self.inline => Flow::Defer(0),
            Phase::Auth(_) => match self.frame_line(rest, MAX_SASL_LINE + 2) {
                Line::Complete(line) => {
                    let Phase::Auth(step) = std::mem::replace(&mut self.phase, Phase::Command) else {
                        return Flow::Consumed(line.len());
                    };
                    match self.auth_response(step, line, out) {
                        Flow::Consumed(_) => Flow::Consumed(line.len()),
                        other => other,
                    }
                }
                Line::Dropped(n) => {
                    self.phase = Phase::Command;
                    self.line_too_long(n, out)
                }
                Line::Discarding(n) => Flow::Consumed(n),
                Line::Incomplete => Flow::NeedMore,
            },
            Phase::Delivery(_) if self.inline => Flow::Defer(0),
            Phase::Delivery(_) => {
                if let Phase::Delivery(decoder) = std::mem::replace(&mut self.phase, Phase::Command) {
                    self.finish_message(decoder, out);
                }
                Flow::Consumed(0)
            }
            Phase::Closed => Flow::Close,
        }
    }

    /// Whether a command line may call a backend (`receive_inline` stops before it). Only
    /// commands known to need none pass; anything else, unknown verbs included, waits for
    /// `receive`.
    fn needs_backend(&self, line: &[u8]) -> bool {
        let Some(verb) = line.get(..4) else {
            return true;
        };
        if !matches!(line.get(4), Some(b' ' | b'\r' | b'\n')) {
            return true;
        }
        let verb = verb.to_ascii_uppercase();
        match &verb[..] {
            // Not BDAT: `BDAT 0 LAST` delivers at once. Its chunk's bytes pass inline.
            b"EHLO" | b"HELO" | b"DATA" | b"RSET" | b"NOOP" | b"QUIT" => false,
            // Submission checks the sender against the user's addresses.
            b"MAIL" => self.mode != SmtpMode::Mx,
            // Asks `check_recipient_now`, and defers if that cannot answer.
            b"RCPT" => false,
            _ => true,
        }
    }

    /// Cuts one line (with its LF) off `rest`, dropping lines longer than `limit`
    /// without buffering them.
    fn frame_line<'a>(&mut self, rest: &'a [u8], limit: usize) -> Line<'a> {
        let newline = rest.iter().position(|&b| b == b'\n');
        if self.discarding_line {
            return match newline {
                Some(lf) => {
                    self.discarding_line = false;
                    Line::Dropped(lf + 1)
                }
                None => Line::Discarding(rest.len()),
            };
        }
        match newline {
            Some(lf) if lf < limit => Line::Complete(rest.get(..=lf).unwrap_or_default()),
            Some(lf) => Line::Dropped(lf + 1),
            None if rest.len() >= limit => {
                self.discarding_line = true;
                Line::Discarding(rest.len())
            }
            None => Line::Incomplete,
        }
    }

    fn line_too_long(&mut self, used: usize, out: &mut Vec<u8>) -> Flow {
        match self.error(out, LINE_TOO_LONG) {
            Flow::Close => Flow::Close,
            _ => Flow::Consumed(used),
        }
    }

    /// Writes a failure reply and counts it; too many end the session.
    fn error(&mut self, out: &mut Vec<u8>, reply: &str) -> Flow {
        out.extend_from_slice(reply.as_bytes());
        self.errors += 1;
        if self.errors >= self.limits.max_errors {
            out.extend_from_slice(
                format!(
                    "421 4.7.0 {} Too many errors, closing connection\r\n",
                    self.info.hostname
                )
                .as_bytes(),
            );
            return Flow::Close;
        }
        Flow::Consumed(0)
    }

    fn ok(out: &mut Vec<u8>, reply: &str) -> Flow {
        out.extend_from_slice(reply.as_bytes());
        Flow::Consumed(0)
    }

    /// Handles one complete command line; `Consumed(_)` means "continue".
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        // NUL and other controls have no place in a command (RFC 5321 §4.1.1); refusing
        // them keeps them out of HELO names and addresses that reach logs and headers.
        let text = line
            .strip_suffix(b"\r\n")
            .or(line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return self.error(out, "500 5.5.2 Syntax error: control character in command\r\n");
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(error) => return self.parse_error(error, out),
        };
        match request {
            Request::Ehlo { host } => self.hello(&host, true, out),
            Request::Helo { host } => self.hello(&host, false, out),
            Request::Mail { from } => self.mail(from, out),
            // smtp-proto reads `<postmaster>` as the empty path; tell it from `<>`.
            Request::Rcpt { to } if to.address.is_empty() && contains_postmaster(text) => {
                self.rcpt("postmaster", out)
            }
            Request::Rcpt { to } => self.rcpt(&to.address, out),
            Request::Data => self.data(out),
            Request::Bdat { chunk_size, is_last } => self.bdat(chunk_size, is_last, out),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, &initial_response, out),
            Request::StartTls => self.starttls(out),
            Request::Rset => {
                self.transaction = None;
                Self::ok(out, "250 2.0.0 Ok\r\n")
            }
            Request::Noop { .. } => Self::ok(out, "250 2.0.0 Ok\r\n"),
            Request::Quit => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                Flow::Close
            }
            // Verifying would let anyone enumerate users (RFC 5321 §3.5.3 allows 252).
            Request::Vrfy { .. } => Self::ok(
                out,
                "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
            ),
            Request::Help { .. } => Self::ok(
                out,
                "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP \
                 STARTTLS AUTH\r\n",
            ),
            Request::Expn { .. }
            | Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(out, "502 5.5.1 Command not implemented\r\n"),
        }
    }

    fn parse_error(&mut self, error: ParseError, out: &mut Vec<u8>) -> Flow {
        let reply: Cow<'static, str> = match error {
            ParseError::UnknownCommand => "500 5.5.1 Command unrecognized\r\n".into(),
            ParseError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax\r\n".into(),
            ParseError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address syntax\r\n".into(),
            ParseError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}\r\n").into(),
            ParseError::InvalidParameter { param } => {
                format!("501 5.5.4 Invalid {param} parameter\r\n").into()
            }
            ParseError::UnsupportedParameter { .. } => "555 5.5.4 Unsupported parameter\r\n".into(),
            _ => "500 5.5.2 Syntax error\r\n".into(),
        };
        self.error(out, &reply)
    }

    fn hello(&mut self, host: &str, extended: bool, out: &mut Vec<u8>) -> Flow {
        // A new EHLO resets the transaction (RFC 5321 §4.1.4) but keeps the login.
        self.transaction = None;
        self.helo = Some(Helo {
            name: host.to_string(),
            extended,
        });
        let hostname = &self.info.hostname;
        if !extended {
            return Self::ok(out, &format!("250 {hostname}\r\n"));
        }
        let mut lines = vec![
            hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.limits.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "CHUNKING".to_string(),
        ];
        if self.info.tls_available && !self.info.tls {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_offered() && self.account.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
        Flow::Consumed(0)
    }

    fn auth_offered(&self) -> bool {
        self.mode == SmtpMode::Submission && (self.info.tls || self.info.allow_plaintext_auth)
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<Cow<'_, str>>, out: &mut Vec<u8>) -> Flow {
        if self.helo.is_none() {
            return self.error(out, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        }
        if self.transaction.is_some() {
            return self.error(out, "503 5.5.1 Error: nested MAIL command\r\n");
        }
        if self.mode == SmtpMode::Submission {
            let Some(account) = &self.account else {
                return self.error(out, "530 5.7.0 Authentication required\r\n");
            };
            if account.access != AccessLevel::Full {
                return self.error(out, "554 5.7.1 Sending is not permitted for this account\r\n");
            }
        }
        if from.size > self.limits.max_message_size {
            return self.error(out, SIZE_EXCEEDED);
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.error(out, "555 5.5.4 BODY=BINARYMIME is not supported\r\n");
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return self.error(out, "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
        }
        if let (SmtpMode::Submission, Some(account)) = (self.mode, &self.account) {
            if from.address.is_empty() || !self.backend.sender_allowed(account, &from.address) {
                return self.error(out, "553 5.7.1 Sender address is not owned by the user\r\n");
            }
        }
        self.transaction = Some(Transaction {
            mail_from: from.address.into_owned(),
            smtputf8,
            body_8bit: from.flags & MAIL_BODY_8BITMIME != 0,
            rcpts: Vec::new(),
            size_hint: from.size,
            chunks: None,
        });
        Self::ok(out, "250 2.1.0 Ok\r\n")
    }

    fn rcpt(&mut self, address: &str, out: &mut Vec<u8>) -> Flow {
        let Some(transaction) = &self.transaction else {
            return self.error(out, BAD_SEQUENCE_MAIL);
        };
        if !transaction.smtputf8 && !address.is_ascii() {
            return self.error(out, "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
        }
        // `<postmaster>` without a domain must be accepted (RFC 5321 §4.5.1, issue 19
        // item 10): it stands for the mailbox the backend names.
        let postmaster;
        let address = if address.eq_ignore_ascii_case("postmaster") {
            if self.inline {
                return Flow::Defer(0);
            }
            match self.backend.postmaster() {
                Some(a) => {
                    postmaster = a;
                    postmaster.as_str()
                }
                None => address,
            }
        } else {
            address
        };
        if transaction.rcpts.iter().any(|r| r.eq_ignore_ascii_case(address)) {
            return Self::ok(out, "250 2.1.5 Ok\r\n");
        }
        if transaction.rcpts.len() >= self.limits.max_recipients {
            out.extend_from_slice(b"452 4.5.3 Error: too many recipients\r\n");
            return Flow::Consumed(0);
        }
        let verdict = if self.inline {
            // Inline: only an answer from memory; otherwise the blocking side asks.
            match self
                .backend
                .check_recipient_now(self.mode, self.account.as_ref(), address)
            {
                Some(verdict) => verdict,
                None => return Flow::Defer(0),
            }
        } else {
            self.backend
                .check_recipient(self.mode, self.account.as_ref(), address)
        };
        match verdict {
            RcptVerdict::Accept => {
                if let Some(transaction) = &mut self.transaction {
                    transaction.rcpts.push(address.to_string());
                }
                Self::ok(out, "250 2.1.5 Ok\r\n")
            }
            RcptVerdict::Unknown => self.error(out, "550 5.1.1 Recipient address rejected: user unknown\r\n"),
            RcptVerdict::Inactive => {
                self.error(out, "550 5.2.1 Recipient address rejected: mailbox disabled\r\n")
            }
            RcptVerdict::RelayDenied => self.error(out, "550 5.7.1 Relaying denied\r\n"),
            RcptVerdict::Temporary => Self::ok(out, TEMPORARY_FAILURE),
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) -> Flow {
        let Some(transaction) = &self.transaction else {
            return self.error(out, BAD_SEQUENCE_MAIL);
        };
        if transaction.chunks.is_some() {
            return self.error(out, "503 5.5.1 Error: DATA after BDAT\r\n");
        }
        if transaction.rcpts.is_empty() {
            return self.error(out, NO_RECIPIENTS);
        }
        let decoder = BodyDecoder::new(true, self.limits.max_message_size, transaction.size_hint);
        self.phase = Phase::Data(decoder);
        Self::ok(out, "354 End data with <CR><LF>.<CR><LF>\r\n")
    }

    fn bdat(&mut self, size: usize, last: bool, out: &mut Vec<u8>) -> Flow {
        // The chunk follows whatever we answer, so it is always read (RFC 3030 §3).
        let discard = match &mut self.transaction {
            None => Some(BAD_SEQUENCE_MAIL),
            Some(t) if t.rcpts.is_empty() => Some(NO_RECIPIENTS),
            Some(t) => {
                if t.chunks.is_none() {
                    t.chunks = Some(BodyDecoder::new(false, self.limits.max_message_size, t.size_hint));
                }
                None
            }
        };
        if size == 0 {
            return self.end_chunk(0, last, discard, out);
        }
        self.phase = Phase::Bdat {
            remaining: size,
            size,
            last,
            discard,
        };
        Flow::Consumed(0)
    }

    fn end_chunk(
        &mut self,
        size: usize,
        last: bool,
        discard: Option<&'static str>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if let Some(reply) = discard {
            return self.error(out, reply);
        }
        let Some(transaction) = &mut self.transaction else {
            return self.error(out, BAD_SEQUENCE_MAIL);
        };
        let refusal = transaction.chunks.as_ref().and_then(refusal);
        if let Some(reply) = refusal {
            // RFC 3030 §3: a failed chunk fails the transaction.
            self.transaction = None;
            return Self::ok(out, reply);
        }
        if last {
            if let Some(mut decoder) = transaction.chunks.take() {
                decoder.finish();
                self.finish_message(decoder, out);
            }
            return Flow::Consumed(0);
        }
        Self::ok(out, &format!("250 2.0.0 {size} octets received\r\n"))
    }

    /// End of DATA or BDAT LAST: checks, trace header, delivery, reply. The transaction
    /// ends here whatever the outcome.
    fn finish_message(&mut self, decoder: BodyDecoder, out: &mut Vec<u8>) {
        let Some(transaction) = self.transaction.take() else {
            out.extend_from_slice(BAD_SEQUENCE_MAIL.as_bytes());
            return;
        };
        if let Some(reply) = refusal(&decoder) {
            out.extend_from_slice(reply.as_bytes());
            return;
        }
        let mut message = decoder.into_body();
        if let (SmtpMode::Submission, Some(account)) = (self.mode, &self.account) {
            if !self.header_senders_allowed(account, &message) {
                out.extend_from_slice(b"553 5.7.1 From header address is not owned by the user\r\n");
                return;
            }
        }
        let helo = self.helo.as_ref();
        let now = self.limits.clock.now();
        let id = self.backend.reserve_id().unwrap_or_else(|| trace_id(now));
        let header = received_header(&Trace {
            helo: helo.map(|h| h.name.as_str()).unwrap_or_default(),
            peer: self.info.peer,
            hostname: &self.info.hostname,
            protocol: protocol_name(
                helo.is_some_and(|h| h.extended),
                self.info.tls,
                self.account.is_some(),
                transaction.smtputf8,
            ),
            id: &id,
            rcpt: match transaction.rcpts.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            },
            date: now,
        });
        // Prepend in place: no second copy of a message that may be near the size limit.
        message.extend_from_slice(header.as_bytes());
        message.rotate_right(header.len());

        let envelope = Envelope {
            id: id.clone(),
            mode: self.mode,
            mail_from: transaction.mail_from,
            rcpts: transaction.rcpts,
            helo: helo.map(|h| h.name.clone()).unwrap_or_default(),
            peer: self.info.peer,
            tls: self.info.tls,
            account: self.account.clone(),
            smtputf8: transaction.smtputf8,
            body_8bit: transaction.body_8bit,
        };
        let reply = match self.backend.deliver(&envelope, &message) {
            Ok(receipt) => {
                tracing::info!(
                    id = %receipt.id,
                    from = %envelope.mail_from,
                    rcpts = envelope.rcpts.len(),
                    size = message.len(),
                    "message accepted"
                );
                format!("250 2.0.0 Ok: queued as {}\r\n", one_line(&receipt.id))
            }
            Err(DeliveryError::Temporary(cause)) => {
                tracing::warn!(%id, %cause, "delivery failed temporarily");
                TEMPORARY_FAILURE.to_string()
            }
            Err(DeliveryError::StorageFull) => {
                tracing::warn!(%id, "delivery failed: insufficient storage");
                "452 4.3.1 Insufficient system storage\r\n".to_string()
            }
            Err(DeliveryError::Rejected(reply)) => {
                tracing::info!(%id, %reply, "message rejected");
                reply.line()
            }
        };
        out.extend_from_slice(reply.as_bytes());
    }

    /// RFC 6409 §8.1 lets an MSA enforce the From header; every address in every From,
    /// Sender, Resent-From and Resent-Sender header must be the user's, and so must an
    /// address shown as a display name (`"bob@example.test" <alice@example.test>` spoofs
    /// a colleague in most mail apps, issue 19 item 10). A message with no From address
    /// is refused too.
    fn header_senders_allowed(&self, account: &Account, message: &[u8]) -> bool {
        let Some(parsed) = MessageParser::new().parse_headers(message) else {
            return false;
        };
        let allowed = |address: &str| self.backend.sender_allowed(account, address);
        let mut seen = false;
        for name in [
            HeaderName::From,
            HeaderName::Sender,
            HeaderName::ResentFrom,
            HeaderName::ResentSender,
        ] {
            for value in parsed.header_values(name.clone()) {
                let Some(list) = value.as_address() else {
                    return false;
                };
                for addr in list.iter() {
                    match addr.address() {
                        Some(address) if allowed(address) => seen |= name == HeaderName::From,
                        _ => return false,
                    }
                    let shown = addr.name().unwrap_or_default();
                    let spoofed = shown
                        .split(|c: char| c.is_whitespace() || "\"'<>()[],;:".contains(c))
                        .filter(|word| word.contains('@'))
                        .any(|word| !allowed(word));
                    if spoofed {
                        return false;
                    }
                }
            }
        }
        seen
    }

    fn auth(&mut self, mechanism: u64, initial: &str, out: &mut Vec<u8>) -> Flow {
        if self.mode != SmtpMode::Submission {
            return self.error(out, "502 5.5.1 AUTH not available\r\n");
        }
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return self.error(out, "503 5.5.1 Error: send EHLO first\r\n");
        }
        if !self.auth_offered() {
            return self.error(
                out,
                "538 5.7.11 Encryption required for requested authentication mechanism\r\n",
            );
        }
        if self.account.is_some() {
            return self.error(out, "503 5.5.1 Error: already authenticated\r\n");
        }
        if self.transaction.is_some() {
            return self.error(out, "503 5.5.1 Error: AUTH not allowed during a transaction\r\n");
        }
        let step = match mechanism {
            AUTH_PLAIN => AuthStep::Plain,
            AUTH_LOGIN => AuthStep::LoginUser,
            _ => return self.error(out, "504 5.5.4 Unrecognized authentication type\r\n"),
        };
        if initial.is_empty() {
            let challenge = match step {
                AuthStep::Plain => String::new(),
                _ => sasl::encode_challenge("Username:"),
            };
            self.phase = Phase::Auth(step);
            return Self::ok(out, &format!("334 {challenge}\r\n"));
        }
        self.auth_response(step, initial.as_bytes(), out)
    }

    fn auth_response(&mut self, step: AuthStep, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let decoded = match sasl::decode_response(line) {
            Ok(decoded) => decoded,
            Err(SaslError::Cancelled) => return self.error(out, "501 5.0.0 Authentication cancelled\r\n"),
            Err(_) => return self.error(out, "501 5.5.2 Cannot decode response\r\n"),
        };
        let (username, password) = match step {
            AuthStep::Plain => match sasl::parse_plain(&decoded) {
                Ok(pair) => pair,
                Err(_) => return self.error(out, AUTH_INVALID),
            },
            AuthStep::LoginUser => match sasl::parse_login_step(&decoded) {
                Ok(username) => {
                    self.phase = Phase::Auth(AuthStep::LoginPassword { username });
                    let challenge = sasl::encode_challenge("Password:");
                    return Self::ok(out, &format!("334 {challenge}\r\n"));
                }
                Err(_) => return self.error(out, AUTH_INVALID),
            },
            AuthStep::LoginPassword { username } => match sasl::parse_login_step(&decoded) {
                Ok(password) => (username, crate::auth::Secret::new(password)),
                Err(_) => return self.error(out, AUTH_INVALID),
            },
        };
        let credentials = Credentials {
            username,
            password,
            peer: self.info.peer,
            protocol: "submission",
        };
        match self.auth.authenticate(&credentials) {
            Ok(account) => {
                tracing::info!(user = %account.address, "authenticated");
                self.account = Some(account);
                Self::ok(out, "235 2.7.0 Authentication successful\r\n")
            }
            Err(AuthError::Invalid | AuthError::AccessDenied) => self.error(out, AUTH_INVALID),
            Err(AuthError::RateLimited | AuthError::TooManySessions) => self.error(out, AUTH_TEMPORARY),
            Err(AuthError::OutsideOutage) => self.error(out, AUTH_OUTSIDE_OUTAGE),
            // RFC 4954 §6.
            Err(AuthError::PasswordChangeRequired) => self.error(
                out,
                "432 4.7.12 A password transition is needed; ask your administrator for a new password\r\n",
            ),
            Err(AuthError::Temporary(cause)) => {
                tracing::warn!(%cause, "authentication could not be checked");
                self.error(out, AUTH_TEMPORARY)
            }
        }
    }

    fn starttls(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.info.tls {
            return self.error(out, "503 5.5.1 Error: TLS already active\r\n");
        }
        if !self.info.tls_available {
            return self.error(out, "454 4.7.0 TLS not available\r\n");
        }
        if self.transaction.is_some() {
            return self.error(
                out,
                "503 5.5.1 Error: STARTTLS not allowed during a transaction\r\n",
            );
        }
        out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
        self.pending.clear();
        Flow::StartTls
    }
}

/// The reply refusing a body the decoder flagged. Size wins over line length. A long
/// line gets 554 5.6.0: after the data RFC 5321 §4.3.2 allows only 250, 552, 554, 451,
/// 452, 450 and 550, and the problem is the content, not a command (500 is for
/// command lines, §4.5.3.1.10).
fn refusal(decoder: &BodyDecoder) -> Option<&'static str> {
    if decoder.oversize() {
        Some(SIZE_EXCEEDED)
    } else if decoder.long_line() {
        Some("554 5.6.0 Message has lines longer than 998 octets\r\n")
    } else {
        None
    }
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

impl Session for SmtpSession {
    fn greeting(&mut self) -> Output {
        SmtpSession::greeting(self)
    }
    fn receive(&mut self, input: &[u8]) -> Output {
        SmtpSession::receive(self, input)
    }
    fn receive_inline(&mut self, input: &[u8]) -> Option<Output> {
        Some(SmtpSession::receive_inline(self, input))
    }
    fn has_pending(&self) -> bool {
        self.has_deferred()
    }
    fn tls_started(&mut self) {
        SmtpSession::tls_started(self)
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        SmtpSession::goodbye(self, why)
    }
    fn authenticated(&self) -> bool {
        // SMTP uses one command time-out whether or not AUTH happened.
        true
    }
    fn busy(&self) -> bool {
        self.in_transaction()
    }
}

/// `RCPT TO:<postmaster>` (any case) in a command line.
fn contains_postmaster(line: &[u8]) -> bool {
    line.windows(12).any(|w| w.eq_ignore_ascii_case(b"<postmaster>"))
}
