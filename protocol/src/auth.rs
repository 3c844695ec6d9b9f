//! Credentials, accounts and the authentication trait shared by IMAP, POP3 and submission.

use std::fmt;
use std::net::IpAddr;

/// A secret (password) whose `Debug` and `Display` never print it, so it cannot reach a
/// log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is checked or hashed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A login attempt: full address (or alias) and password, with where it came from.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    /// Client address, for per-IP rate limiting.
    pub peer: IpAddr,
    /// Protocol name for logs: "imap", "pop3", "submission".
    pub protocol: &'static str,
}

/// What an authenticated user may do right now (domain policy, user override and outage
/// state already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLevel {
    /// Read and send.
    Full,
    /// Read mail; no submission.
    ReadOnly,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Store id of the user.
    pub id: u64,
    /// Canonical (lower-case) address of the user.
    pub address: String,
    pub access: AccessLevel,
}

/// Why a login failed. The reply text a client sees is the same for `Invalid` whatever
/// the reason (unknown user, wrong password, inactive), so users cannot be enumerated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed logins; retry later")]
    RateLimited,
    /// Correct credentials, but the access policy forbids this login now.
    #[error("access denied by policy")]
    AccessDenied,
    /// Correct credentials, but an administrator marked the password as temporary
    /// (`user passwd --force-reset`): it must be changed before the account is used.
    #[error("the password must be changed")]
    PasswordChangeRequired,
    /// The check could not be made (store error); the client should retry later.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Correct credentials, but the domain opens mailboxes here only during an outage of
    /// its own server, and there is none now.
    #[error("mailbox reachable only during an outage")]
    OutsideOutage,
    /// Correct credentials, but the user has as many sessions open as the server allows.
    #[error("too many open sessions for this user")]
    TooManySessions,
}

/// Checks credentials. Implemented by the server on top of the store and the auth cache;
/// may block (argon2, store reads).
pub trait AuthBackend: Send + Sync {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError>;
}
