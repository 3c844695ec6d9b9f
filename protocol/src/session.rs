//! The contract between a protocol session and the network driver that feeds it.
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
