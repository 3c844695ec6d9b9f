//! SMTP for the MX receiver (port 25) and authenticated submission (587/465), as an
//! I/O-free session plus the backend trait through which it validates recipients and
//! senders and hands accepted messages to the store and queues.
//!
//! The session (`SmtpSession`) does its own framing: command lines bounded at 512
//! octets (RFC 5321 §4.5.3.1.4), SASL lines, dot-terminated DATA and counted BDAT chunks
//! (RFC 3030). It never answers `250` to a message before `SmtpBackend::deliver` has
//! returned `Ok`, and `deliver` returns only after a synced write.

mod body;
mod received;
mod reply;
mod session;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::auth::Account;

pub use reply::{InvalidReply, SmtpReply};
pub use session::SmtpSession;

/// Which listener the session serves; it decides whether AUTH is offered and required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Port 25: mail for protected domains only, no AUTH, never a relay.
    Mx,
    /// Ports 587/465 (RFC 6409): AUTH required before MAIL, sender restricted to the
    /// user's own addresses.
    Submission,
}

/// Source of the time written into `Received` headers; injected so tests are exact.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The real clock (UTC, so no local-offset lookup is needed).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Bounds applied by a session.
#[derive(Clone)]
pub struct SmtpLimits {
    /// Largest message accepted, in octets after dot-unstuffing and before the
    /// `Received` header is added; advertised as `SIZE`.
    pub max_message_size: usize,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Failed commands (syntax, bad sequence, failed AUTH, rejected RCPT) before the
    /// session answers `421` and closes.
    pub max_errors: u32,
    /// Time for `Received` headers.
    pub clock: Arc<dyn Clock>,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for SmtpLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpLimits")
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("max_errors", &self.max_errors)
            .finish_non_exhaustive()
    }
}

/// The backend's answer to `RCPT TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptVerdict {
    /// `250 2.1.5`.
    Accept,
    /// No such user or alias in a protected domain: `550 5.1.1`.
    Unknown,
    /// The user exists but is deactivated: `550 5.2.1`.
    Inactive,
    /// Not a protected domain (MX) or not allowed to send there: `550 5.7.1`.
    RelayDenied,
    /// The check could not be made (store error): `451 4.3.0`.
    Temporary,
}

/// The envelope of one accepted transaction, handed to `SmtpBackend::deliver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The id the session gave this message in its `Received` header and log lines: the
    /// one [`SmtpBackend::reserve_id`] returned, or the session's own.
    pub id: String,
    pub mode: SmtpMode,
    /// Reverse-path as given; empty for the null sender `<>` (MX only: submission
    /// refuses `<>`).
    pub mail_from: String,
    /// Accepted recipients, in order, without duplicates (compared case-insensitively).
    pub rcpts: Vec<String>,
    /// HELO/EHLO argument.
    pub helo: String,
    pub peer: IpAddr,
    /// The transaction ran over TLS (implicit or after STARTTLS).
    pub tls: bool,
    /// The authenticated user (always `Some` in submission mode).
    pub account: Option<Account>,
    /// `MAIL FROM ... SMTPUTF8` was given (RFC 6531).
    pub smtputf8: bool,
    /// `MAIL FROM ... BODY=8BITMIME` was given (RFC 6152).
    pub body_8bit: bool,
}

/// Proof that a message is durably stored or queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// Queue or message id shown to the client in `250 2.0.0 Ok: queued as <id>`.
    pub id: String,
}

/// Why `deliver` did not take the message. Nothing may have been half-stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Store or queue error; the client retries: `451 4.3.0`.
    #[error("temporary delivery failure: {0}")]
    Temporary(String),
    /// Disk or quota full; the client retries: `452 4.3.1`.
    #[error("insufficient storage")]
    StorageFull,
    /// A policy rejection the backend words itself (DMARC `reject` gives `550 5.7.1`),
    /// checked when it was made ([`SmtpReply::refusal`]).
    #[error("rejected: {0}")]
    Rejected(SmtpReply),
}

/// What the session needs from the server. Methods may block (store reads and writes);
/// the driver runs sessions on a blocking pool.
pub trait SmtpBackend: Send + Sync {
    /// Decides `RCPT TO`. In MX mode: only active users and aliases of protected domains
    /// (`account` is `None`). In submission mode `account` is the authenticated
    /// full-access user and any recipient is accepted; the session makes no relay
    /// decision of its own.
    fn check_recipient(&self, mode: SmtpMode, account: Option<&Account>, rcpt: &str) -> RcptVerdict;

    /// `check_recipient` when the answer is at hand without blocking (in memory); None
    /// when it needs the store. Called on an async worker (`SmtpSession::receive_inline`),
    /// so it must never wait on I/O or a long lock. The default knows nothing.
    fn check_recipient_now(
        &self,
        _mode: SmtpMode,
        _account: Option<&Account>,
        _rcpt: &str,
    ) -> Option<RcptVerdict> {
        None
    }

    /// Whether `account` may use `address` as envelope sender and in `From:` (its own
    /// address or one of its aliases; compare case-insensitively). Submission only.
    fn sender_allowed(&self, account: &Account, address: &str) -> bool;

    /// An id for the message about to be delivered, so that the `Received` header, the
    /// log and the `250 ... queued as` reply can all name the id the backend will store
    /// it under (it comes back in [`Envelope::id`]). `None` (the default): the session
    /// makes a trace id of its own. Called once per message, on the blocking side.
    fn reserve_id(&self) -> Option<String> {
        None
    }

    /// The mailbox that `RCPT TO:<postmaster>` (no domain) reaches, which every SMTP
    /// server must accept (RFC 5321 §4.5.1); None: there is none, and it is refused
    /// like any unknown address. May block.
    fn postmaster(&self) -> Option<String> {
        None
    }

    /// Stores and/or queues `message` (the `Received` header already prepended, lines
    /// CRLF-terminated, dot-unstuffed) for `envelope.rcpts`, and returns only after the
    /// write is synced. The session answers `250` only on `Ok`.
    fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReceipt, DeliveryError>;
}
