//! What the IMAP session needs from the mail store: mailboxes, message metadata, bodies,
//! flag changes and a per-mailbox change log ordered by modification sequence (RFC 7162).
//!
//! Every write method returns only after the change is durable (synced write); the
//! session answers `OK` only after that return.

use std::sync::Arc;

use crate::auth::Account;

pub use super::message::MessageSummary;

pub type MailboxId = u64;

/// A mailbox as the store sees it at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxInfo {
    pub id: MailboxId,
    /// Full UTF-8 name, "/" delimited, "INBOX" for the inbox.
    pub name: String,
    pub special_use: Option<SpecialUse>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub exists: u32,
    /// Sum of the messages' RFC822.SIZE (STATUS SIZE, RFC 8438).
    pub size: u64,
    pub unseen: u32,
    /// Lowest UID no session has claimed as `\Recent` yet (STATUS RECENT counts from it).
    pub recent_uid: u32,
}

/// RFC 6154 special-use attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    /// The LIST attribute, e.g. `\Sent`.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }
}

/// Stored flags of a message. `\Recent` is never stored: it is session state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// Bit set of the `Flags::SEEN` .. `Flags::DRAFT` constants.
    pub system: u8,
    /// Keywords as first written; compared ASCII-case-insensitively.
    pub keywords: Vec<String>,
}

impl Flags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    /// System flags in the order they are shown.
    pub const SYSTEM: [(u8, &'static str); 5] = [
        (Flags::SEEN, "\\Seen"),
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::DRAFT, "\\Draft"),
    ];

    pub fn has(&self, bit: u8) -> bool {
        self.system & bit != 0
    }

    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.keywords.iter().any(|k| k.eq_ignore_ascii_case(keyword))
    }

    pub fn is_empty(&self) -> bool {
        self.system == 0 && self.keywords.is_empty()
    }

    /// Adds every flag of `other` (STORE +FLAGS).
    pub fn add(&mut self, other: &Flags) {
        self.system |= other.system;
        for k in &other.keywords {
            if !self.has_keyword(k) {
                self.keywords.push(k.clone());
            }
        }
    }

    /// Removes every flag of `other` (STORE -FLAGS).
    pub fn remove(&mut self, other: &Flags) {
        self.system &= !other.system;
        self.keywords.retain(|k| !other.has_keyword(k));
    }

    /// Applies a STORE operation.
    pub fn apply(&mut self, op: StoreOp, other: &Flags) {
        match op {
            StoreOp::Add => self.add(other),
            StoreOp::Remove => self.remove(other),
            StoreOp::Replace => {
                self.system = 0;
                self.keywords.clear();
                self.add(other);
            }
        }
    }

    /// Same flags, keywords compared without regard to case or order.
    pub fn same_as(&self, other: &Flags) -> bool {
        self.system == other.system
            && self.keywords.len() == other.keywords.len()
            && self.keywords.iter().all(|k| other.has_keyword(k))
    }
}

/// Metadata of one message; everything FETCH FLAGS/UID/INTERNALDATE/RFC822.SIZE/MODSEQ
/// and the non-content SEARCH keys need, without reading the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    pub modseq: u64,
    /// Unix seconds.
    pub internal_date: i64,
    pub internal_date_offset_minutes: i16,
    pub size: u32,
    /// The Date header in Unix seconds, or `internal_date` when it has none that parses
    /// (what SORT DATE orders by, RFC 5256 §2.2), so that SORT by date, arrival or size
    /// reads nothing but these. `None`: the store does not know it (a message stored
    /// before it kept this); SORT then reads the message's summary and tells the store
    /// (`remember_sent_dates`).
    pub sent_date: Option<i64>,
}

/// An account's storage quota: octets allowed and octets used over all mailboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit_bytes: u64,
    pub used_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    FlagsChanged,
    Expunged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub uid: u32,
    pub modseq: u64,
    pub kind: ChangeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Add,
    Remove,
    Replace,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("over quota")]
    OverQuota,
    #[error("too big")]
    TooBig,
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("temporary failure: {0}")]
    Temporary(String),
}

/// The store as seen by one IMAP session. Implementations may block.
pub trait ImapBackend: Send + Sync {
    /// One mailbox by its UTF-8 name; "INBOX" is passed exactly so (the session
    /// canonicalises its case). `NotFound` if absent.
    fn mailbox(&self, account: &Account, name: &str) -> Result<MailboxInfo, BackendError>;
    /// `AlreadyExists` if the name is taken. Parents are not created implicitly.
    fn create_mailbox(
        &self,
        account: &Account,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxInfo, BackendError>;
    /// `NotFound` if absent; `Invalid` for INBOX.
    fn delete_mailbox(&self, account: &Account, name: &str) -> Result<(), BackendError>;
    /// Renames `from` and every child `from/...`. Renaming "INBOX" moves all its messages
    /// to a new mailbox `to` and leaves INBOX empty (RFC 3501 §6.3.5).
    fn rename_mailbox(&self, account: &Account, from: &str, to: &str) -> Result<(), BackendError>;
    /// SUBSCRIBE (`true`) or UNSUBSCRIBE. Subscriptions are names, kept apart from the
    /// mailboxes: DELETE leaves a subscription in place (RFC 3501 §6.3.9), RENAME moves
    /// the subscriptions of the names it renames, CREATE does not subscribe. Subscribing
    /// needs an existing mailbox; unsubscribing a name whose mailbox is gone works.
    /// `NotFound` when there is neither a mailbox nor a subscription of that name.
    fn set_subscribed(&self, account: &Account, name: &str, subscribed: bool) -> Result<(), BackendError>;
    /// Every mailbox and every subscribed name (existing or not, in no particular order),
    /// both as of one instant, for LIST and LSUB.
    #[allow(clippy::type_complexity)]
    fn mailboxes_and_subscriptions(
        &self,
        account: &Account,
    ) -> Result<(Vec<MailboxInfo>, Vec<String>), BackendError>;
    /// All messages of the mailbox in UID order, and the mailbox info at that instant.
    fn messages(
        &self,
        account: &Account,
        mailbox: MailboxId,
    ) -> Result<(MailboxInfo, Vec<MessageMeta>), BackendError>;
    /// Atomically claims \Recent: returns the lowest UID that is recent for this caller
    /// and moves the mailbox's recent mark up to `below` (the UIDNEXT of what the
    /// caller has read; never past the mailbox's), so exactly one session sees each.
    fn claim_recent(&self, account: &Account, mailbox: MailboxId, below: u32) -> Result<u32, BackendError>;
    /// Changes with modseq > since, in modseq order, and the mailbox info at that
    /// instant. `Added` and `FlagsChanged` entries carry the message's current meta;
    /// `Expunged` entries carry `None`. A message changed several times may appear once
    /// with its latest modseq.
    #[allow(clippy::type_complexity)]
    fn changes_since(
        &self,
        account: &Account,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<(MailboxInfo, Vec<(Change, Option<MessageMeta>)>), BackendError>;
    /// `(modseq, uid)` of the messages expunged after `since`, in modseq order, for
    /// QRESYNC's `VANISHED (EARLIER)` (RFC 7162 §3.2.5). A store that forgets old
    /// expunges must answer with every UID it cannot rule out (the RFC allows that).
    fn expunged_since(
        &self,
        account: &Account,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<Vec<(u64, u32)>, BackendError> {
        let (_, changes) = self.changes_since(account, mailbox, since)?;
        Ok(changes
            .iter()
            .filter(|(c, _)| c.kind == ChangeKind::Expunged)
            .map(|(c, _)| (c.modseq, c.uid))
            .collect())
    }
    /// Raw RFC 5322 octets, CRLF line ends. `NotFound` if expunged meanwhile and not
    /// held for a view (`hold_view`); the record and its body are read together, so
    /// never a message found without its body.
    fn body(&self, account: &Account, mailbox: MailboxId, uid: u32) -> Result<Vec<u8>, BackendError>;
    /// A claim, for a view about to read `mailbox`'s messages, that keeps each message
    /// it shows readable (`body`, `summaries`) after another session expunges it, until
    /// the view's horizon passes the expunge or the claim is dropped, whichever node of a
    /// shared store expunged it. `None`: the store keeps nothing, and such a FETCH
    /// answers `NO [EXPUNGEISSUED]`.
    fn hold_view(&self, _account: &Account, _mailbox: MailboxId) -> Option<Box<dyn ViewHold>> {
        None
    }
    /// The SORT and THREAD keys of the given UIDs, in the order given; UIDs that no
    /// longer exist are left out. The store keeps them beside each body (computed when
    /// it was written, `MessageSummary::to_bytes`) so this reads no bodies; this default
    /// parses each body's header, for stores that keep none.
    fn summaries(
        &self,
        account: &Account,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<(u32, Arc<MessageSummary>)>, BackendError> {
        let mut out = Vec::with_capacity(uids.len());
        for &uid in uids {
            match self.body(account, mailbox, uid) {
                Ok(body) => out.push((uid, Arc::new(MessageSummary::of(&body)))),
                Err(BackendError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }
    /// Keeps the sent dates SORT worked out (from `summaries`) for messages whose meta
    /// had none, as (UID, `MessageMeta::sent_date`), so the next SORT after a restart
    /// needs no summaries. Best effort: an error only costs that work again.
    fn remember_sent_dates(
        &self,
        _account: &Account,
        _mailbox: MailboxId,
        _dates: &[(u32, i64)],
    ) -> Result<(), BackendError> {
        Ok(())
    }
    /// The account's storage limit and use (QUOTA, RFC 9208): one quota root for all
    /// of the user's mailboxes. `None`: the account has no limit.
    fn quota(&self, _account: &Account) -> Result<Option<Quota>, BackendError> {
        Ok(None)
    }
    /// Stores a message; returns (uidvalidity, uid). `TooBig`/`OverQuota` refuse it.
    fn append(
        &self,
        account: &Account,
        mailbox: MailboxId,
        message: &[u8],
        flags: &Flags,
        internal_date: Option<(i64, i16)>,
    ) -> Result<(u32, u32), BackendError>;
    /// Stores several messages in one write, all or none (MULTIAPPEND, RFC 3502);
    /// returns the uidvalidity and the UIDs in the order given. `TooBig`/`OverQuota`
    /// refuse them all.
    fn append_many(
        &self,
        account: &Account,
        mailbox: MailboxId,
        messages: &[AppendMessage<'_>],
    ) -> Result<(u32, Vec<u32>), BackendError>;
    /// Somewhere for the message of an APPEND to go while it arrives, so that a session
    /// does not hold a big literal in memory for as long as a slow client takes to send
    /// it (issue 19 item 4); `None`: the session holds it.
    fn spool(&self, _account: &Account, _size: usize) -> Option<Box<dyn Spool>> {
        None
    }
    /// `append` of a message that arrived into a `spool`.
    fn append_spooled(
        &self,
        account: &Account,
        mailbox: MailboxId,
        message: Box<dyn Spool>,
        flags: &Flags,
        internal_date: Option<(i64, i16)>,
    ) -> Result<(u32, u32), BackendError> {
        let message = message
            .into_bytes()
            .map_err(|e| BackendError::Temporary(format!("spooled message unreadable: {e}")))?;
        self.append(account, mailbox, &message, flags, internal_date)
    }
    /// Applies to the given UIDs (absent ones are ignored); with unchanged_since,
    /// messages whose modseq is higher are left alone and returned in the second list.
    /// Returns the metas of every other named message that exists, as they are now
    /// (a message whose flags would not change is not written, but still returned, so
    /// the session learns what other sessions changed).
    fn store_flags(
        &self,
        account: &Account,
        mailbox: MailboxId,
        uids: &[u32],
        op: StoreOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>), BackendError>;
    /// Copies the given UIDs (absent ones ignored); returns the destination uidvalidity
    /// and (source uid, destination uid) pairs in source UID order.
    fn copy(
        &self,
        account: &Account,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<(u32, Vec<(u32, u32)>), BackendError>;
    /// Copy + expunge from the source in one synced write.
    fn move_messages(
        &self,
        account: &Account,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<(u32, Vec<(u32, u32)>), BackendError>;
    /// Removes the given UIDs (the caller decides which: \Deleted ones, or a UID EXPUNGE
    /// set); returns those actually removed.
    fn expunge(&self, account: &Account, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>, BackendError>;
}

/// A view's claim on what it shows (`ImapBackend::hold_view`); dropping it ends it.
pub trait ViewHold: Send {
    /// The view shows no message expunged at or below modseq `horizon` any more (it
    /// read its messages after, or told the client). Never called with a lower value.
    fn advance(&mut self, horizon: u64);
}

/// One message of a MULTIAPPEND.
#[derive(Clone, Copy, Debug)]
pub struct AppendMessage<'a> {
    pub message: &'a [u8],
    pub flags: &'a Flags,
    /// Unix seconds and offset in minutes; `None`: now.
    pub internal_date: Option<(i64, i16)>,
}

/// A message being received for APPEND, kept outside the session (a file, in the server).
pub trait Spool: Send {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Octets written so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The whole message, read back once for the store's write.
    fn into_bytes(self: Box<Self>) -> std::io::Result<Vec<u8>>;
}
