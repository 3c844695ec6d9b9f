//! The contract between a protocol session and the network driver that feeds it: the
//! [`Session`] trait (implemented by each protocol's session in its own module, and here
//! once for `Box<S>`), and the [`Output`]/[`Action`] a step returns.
//!
//! The driver reads whatever bytes arrive (at most `READ_CHUNK` at a time), hands them to
//! the session's `receive`, writes `Output::bytes` back and then does what
//! `Output::action` says. Framing (lines, literals, SMTP DATA), every size bound and the
//! discarding of pipelined plaintext at STARTTLS live in the session, so they are tested
//! here without sockets.

use std::net::IpAddr;

/// Largest chunk the driver reads from a socket before handing it to a session.
pub const READ_CHUNK: usize = 64 * 1024;

/// What the driver does after writing `Output::bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Keep reading input.
    #[default]
    Continue,
    /// Perform the TLS handshake now, then call the session's `tls_started`. The session
    /// has already dropped any plaintext it had buffered after the STARTTLS command.
    StartTls,
    /// IMAP COMPRESS=DEFLATE (RFC 4978): this output goes out as it is, everything after
    /// it in both directions is raw DEFLATE. The session has dropped any input it had
    /// buffered after the command (a client must wait for the answer).
    Compress,
    /// IMAP IDLE: keep reading input, and also call the session's `mailbox_changed` when
    /// the store reports a change to `mailbox_id`.
    Idle { mailbox_id: u64 },
    /// Close the connection after writing.
    Close,
}

/// Bytes to send and what to do next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub action: Action,
}

impl Output {
    pub fn new(bytes: Vec<u8>, action: Action) -> Self {
        Output { bytes, action }
    }

    pub fn reply(bytes: impl Into<Vec<u8>>) -> Self {
        Output {
            bytes: bytes.into(),
            action: Action::Continue,
        }
    }

    pub fn close(bytes: impl Into<Vec<u8>>) -> Self {
        Output {
            bytes: bytes.into(),
            action: Action::Close,
        }
    }
}

/// Facts about the connection a session needs.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: IpAddr,
    /// The connection is already encrypted (implicit TLS port) or has completed STARTTLS.
    pub tls: bool,
    /// A TLS certificate is configured, so STARTTLS/STLS may be offered.
    pub tls_available: bool,
    /// Plaintext logins allowed before TLS (trusted networks only; off by default).
    pub allow_plaintext_auth: bool,
    /// The peer is a configured webmail host (`auth.webmail_hosts`): it logs in for many
    /// users from one address and may name each user's own address (IMAP `ID`
    /// `x-originating-ip`, RFC 2971), which the login throttle then counts instead.
    pub webmail_host: bool,
    /// Host name used in greetings and `Received` headers.
    pub hostname: String,
}

/// Why the driver ends a session on its own initiative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// The server is shutting down.
    Shutdown,
    /// The client was silent past the time-out.
    Timeout,
    /// An administrator ended the session (user deactivated).
    Revoked,
}

/// What the driver needs from any protocol session.
pub trait Session: Send + 'static {
    /// The server's first words. Runs on the async worker, so it must not block (every
    /// session's greeting is formatted from what it already holds).
    fn greeting(&mut self) -> Output;
    fn receive(&mut self, input: &[u8]) -> Output;
    /// Handles the part of `input` that needs neither the store nor a credential check,
    /// on the async worker, with no thread hand-off (an SMTP body streaming in). None,
    /// the default, when the session cannot: the driver then runs `receive` on the
    /// blocking pool. After `Some`, `has_pending` says whether a `receive(&[])` on the
    /// blocking pool must finish the job.
    fn receive_inline(&mut self, _input: &[u8]) -> Option<Output> {
        None
    }
    fn tls_started(&mut self);
    /// IMAP IDLE: the watched mailbox changed.
    fn mailbox_changed(&mut self) -> Output {
        Output::default()
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8>;
    /// Logged in: the longer idle time-out applies.
    fn authenticated(&self) -> bool {
        false
    }
    /// An SMTP transaction is being received: shutdown waits for it.
    fn busy(&self) -> bool {
        false
    }
    /// Complete commands are still buffered because the session capped one step's
    /// output; the driver calls `receive(&[])` again before reading more.
    fn has_pending(&self) -> bool {
        false
    }
    /// The user logged in on this session, so an admin can end it (the server's
    /// revocation wrapper answers this; the sessions themselves do not).
    fn account_id(&self) -> Option<u64> {
        None
    }
    /// Complete commands handled so far; 0 for sessions that are not paced.
    fn commands(&self) -> u64 {
        0
    }
}

/// A boxed session is a session (the driver takes `Box<dyn Session>`, wrappers box theirs).
impl<S: Session + ?Sized> Session for Box<S> {
    fn greeting(&mut self) -> Output {
        (**self).greeting()
    }
    fn receive(&mut self, input: &[u8]) -> Output {
        (**self).receive(input)
    }
    fn receive_inline(&mut self, input: &[u8]) -> Option<Output> {
        (**self).receive_inline(input)
    }
    fn tls_started(&mut self) {
        (**self).tls_started()
    }
    fn mailbox_changed(&mut self) -> Output {
        (**self).mailbox_changed()
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        (**self).goodbye(why)
    }
    fn authenticated(&self) -> bool {
        (**self).authenticated()
    }
    fn busy(&self) -> bool {
        (**self).busy()
    }
    fn has_pending(&self) -> bool {
        (**self).has_pending()
    }
    fn account_id(&self) -> Option<u64> {
        (**self).account_id()
    }
    fn commands(&self) -> u64 {
        (**self).commands()
    }
}
