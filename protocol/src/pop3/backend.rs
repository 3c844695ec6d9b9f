//! The store-facing side of a POP3 session: the maildrop a login opens and the calls a
//! session makes to read and delete its messages.

use crate::auth::Account;

/// One message of a maildrop as of login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildropEntry {
    /// Store message key (the INBOX UID); passed back to `retrieve` and `delete`.
    pub key: u64,
    /// Exact octet count `retrieve` returns for this message: CRLF line ends, before
    /// dot-stuffing. LIST and STAT report it, and clients compare it with what RETR sends.
    pub size: u64,
    /// Unique-id listing (RFC 1939 §7): 1 to 70 characters in 0x21..=0x7E, stable for the
    /// life of the message, never reused for another message of the same user.
    pub uidl: String,
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pop3BackendError {
    /// Another POP3 session of the same user holds the maildrop lock (RFC 2449 `[IN-USE]`).
    #[error("maildrop in use by another session")]
    InUse,
    /// The message is no longer in the store (expunged by a concurrent IMAP session).
    #[error("message no longer exists")]
    Gone,
    /// Store failure; the client may retry later (RFC 3206 `[SYS/TEMP]`). The text is
    /// logged, never sent to the client.
    #[error("temporary store failure: {0}")]
    Temporary(String),
}

/// Mail access for POP3, implemented by the server on top of the store. Every method may
/// block; the driver runs session steps on a blocking pool.
pub trait Pop3Backend: Send + Sync {
    /// Takes the user's exclusive POP3 lock and returns the INBOX as it is now, in the
    /// order messages are numbered (1 = first entry; oldest first is what clients expect).
    /// `Err(InUse)` when another POP3 session holds the lock. After `Ok`, the session calls
    /// `release` exactly once, whatever happens.
    fn open_maildrop(&self, account: &Account) -> Result<Vec<MaildropEntry>, Pop3BackendError>;

    /// The message's full text, `MaildropEntry::size` octets long.
    fn retrieve(&self, account: &Account, key: u64) -> Result<Vec<u8>, Pop3BackendError>;

    /// Removes these messages from the INBOX in one atomic, synced write (RFC 1939 UPDATE
    /// state); keys already gone are skipped, not an error. Called at most once per
    /// session, at QUIT, with a non-empty list; the session answers `+OK` only after `Ok`.
    fn delete(&self, account: &Account, keys: &[u64]) -> Result<(), Pop3BackendError>;

    /// Drops the lock taken by `open_maildrop`; deletes nothing. Called after `delete` at
    /// QUIT, and when the session ends any other way (drop, time-out, shutdown). Should be
    /// cheap: it may run wherever the session is dropped.
    fn release(&self, account: &Account);
}
