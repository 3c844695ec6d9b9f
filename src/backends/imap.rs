//! IMAP on the store: `ImapBackend` for the protocol crate's IMAP session, mapping
//! mailboxes, flags and the change log one to one onto `understudy-storage`.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use understudy_protocol::imap::backend::{
    AppendMessage, BackendError, Change, ChangeKind, Flags, ImapBackend, MailboxId, MailboxInfo, MessageMeta,
    MessageSummary, Quota, SpecialUse, Spool, StoreOp, ViewHold,
};
use understudy_protocol::Account;
use understudy_storage as storage;
use understudy_storage::{FlagOp, Mailbox, MessageRecord, Store, StoreError};

/// Mail access for IMAP sessions.
pub struct ImapStore {
    store: Store,
    /// Largest message APPEND accepts.
    max_message_size: u64,
    /// `<data_dir>/spool`: big APPEND messages while they arrive (`FileSpool`).
    spool_dir: PathBuf,
    spooled: AtomicU64,
    /// SORT and THREAD keys, shared by every session (`summaries.rs`).
    summaries: super::summaries::SummaryCache,
}

impl ImapStore {
    pub fn new(store: Store, max_message_size: u64) -> Self {
        let spool_dir = store
            .path()
            .parent()
            .map_or_else(|| PathBuf::from("spool"), |data| data.join("spool"));
        // What a crash left there belongs to APPENDs that were never answered.
        let _ = std::fs::remove_dir_all(&spool_dir);
        // Before any listener runs: every body written from now on gets its summary.
        super::summaries::install_summariser(&store);
        ImapStore {
            store,
            max_message_size,
            spool_dir,
            spooled: AtomicU64::new(0),
            summaries: Default::default(),
        }
    }
}

/// An APPEND message arriving into a file of its own (mode 0600 in the 0700 data
/// directory), removed when the APPEND is done or the connection ends.
struct FileSpool {
    path: PathBuf,
    file: std::fs::File,
    len: usize,
}

impl FileSpool {
    fn create(dir: &std::path::Path, n: u64) -> std::io::Result<FileSpool> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("append-{}-{n}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        Ok(FileSpool { path, file, len: 0 })
    }
}

impl Spool for FileSpool {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len();
        Ok(())
    }
    fn len(&self) -> usize {
        self.len
    }
    fn into_bytes(mut self: Box<Self>) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len);
        self.file.rewind()?;
        self.file.read_to_end(&mut out)?;
        Ok(out)
    }
}

impl Drop for FileSpool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The store's hold for a selected view (`storage::view_holds`).
struct StoreHold(storage::ViewHold);

impl ViewHold for StoreHold {
    fn advance(&mut self, horizon: u64) {
        self.0.advance(horizon);
    }
}

fn error(e: StoreError) -> BackendError {
    match e {
        StoreError::NotFound(_) => BackendError::NotFound,
        StoreError::AlreadyExists(_) => BackendError::AlreadyExists,
        StoreError::Invalid(text) => BackendError::Invalid(text),
        // Disk full: the client's remedy is the same as for a quota (RFC 5530 OVERQUOTA).
        StoreError::NoSpace(text) => {
            tracing::error!(error = %text, "store full: IMAP write refused");
            BackendError::OverQuota
        }
        other => {
            tracing::error!(error = %other, "store error in IMAP session");
            BackendError::Temporary(other.to_string())
        }
    }
}

fn special_use_to_store(s: SpecialUse) -> storage::SpecialUse {
    match s {
        SpecialUse::Sent => storage::SpecialUse::Sent,
        SpecialUse::Drafts => storage::SpecialUse::Drafts,
        SpecialUse::Trash => storage::SpecialUse::Trash,
        SpecialUse::Junk => storage::SpecialUse::Junk,
        SpecialUse::Archive => storage::SpecialUse::Archive,
    }
}

fn special_use_from_store(s: storage::SpecialUse) -> SpecialUse {
    match s {
        storage::SpecialUse::Sent => SpecialUse::Sent,
        storage::SpecialUse::Drafts => SpecialUse::Drafts,
        storage::SpecialUse::Trash => SpecialUse::Trash,
        storage::SpecialUse::Junk => SpecialUse::Junk,
        storage::SpecialUse::Archive => SpecialUse::Archive,
    }
}

fn info(m: &Mailbox) -> MailboxInfo {
    MailboxInfo {
        id: m.id,
        name: m.name.clone(),
        special_use: m.special_use.map(special_use_from_store),
        uid_validity: m.uid_validity,
        uid_next: m.uid_next,
        highest_modseq: m.highest_modseq,
        exists: m.exists,
        size: m.size,
        unseen: m.unseen,
        recent_uid: m.recent_uid,
    }
}

fn meta(r: &MessageRecord) -> MessageMeta {
    MessageMeta {
        uid: r.uid,
        // The system flag bits are the same in both crates.
        flags: Flags {
            system: r.flags,
            keywords: r.keywords.clone(),
        },
        modseq: r.modseq,
        internal_date: r.internal_date,
        internal_date_offset_minutes: r.tz_offset_minutes,
        size: r.size,
        sent_date: r.sent_date,
    }
}

/// Messages are stored with CRLF line ends, as SMTP delivers them and POP3 sizes assume.
fn crlf(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = message
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || message[i - 1] != b'\r'));
    if !bare {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    for (i, b) in message.iter().enumerate() {
        if *b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    std::borrow::Cow::Owned(out)
}

impl ImapBackend for ImapStore {
    fn mailbox(&self, account: &Account, name: &str) -> Result<MailboxInfo, BackendError> {
        match self.store.mailbox_by_name(account.id, name).map_err(error)? {
            Some(m) => Ok(info(&m)),
            None => Err(BackendError::NotFound),
        }
    }

    fn create_mailbox(
        &self,
        account: &Account,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxInfo, BackendError> {
        let m = self
            .store
            .create_mailbox(account.id, name, special_use.map(special_use_to_store))
            .map_err(error)?;
        Ok(info(&m))
    }

    fn delete_mailbox(&self, account: &Account, name: &str) -> Result<(), BackendError> {
        self.store.delete_mailbox(account.id, name).map_err(error)
    }

    fn rename_mailbox(&self, account: &Account, from: &str, to: &str) -> Result<(), BackendError> {
        self.store.rename_mailbox(account.id, from, to).map_err(error)
    }

    fn set_subscribed(&self, account: &Account, name: &str, subscribed: bool) -> Result<(), BackendError> {
        self.store
            .set_subscribed(account.id, name, subscribed)
            .map_err(error)
    }

    fn mailboxes_and_subscriptions(
        &self,
        account: &Account,
    ) -> Result<(Vec<MailboxInfo>, Vec<String>), BackendError> {
        let (mailboxes, subscriptions) = self
            .store
            .mailboxes_and_subscriptions(account.id)
            .map_err(error)?;
        Ok((mailboxes.iter().map(info).collect(), subscriptions))
    }

    fn messages(
        &self,
        account: &Account,
        mailbox: MailboxId,
    ) -> Result<(MailboxInfo, Vec<MessageMeta>), BackendError> {
        let (m, records) = self.store.messages(account.id, mailbox).map_err(error)?;
        Ok((info(&m), records.iter().map(meta).collect()))
    }

    fn claim_recent(&self, account: &Account, mailbox: MailboxId, below: u32) -> Result<u32, BackendError> {
        self.store.claim_recent(account.id, mailbox, below).map_err(error)
    }

    fn changes_since(
        &self,
        account: &Account,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<(MailboxInfo, Vec<(Change, Option<MessageMeta>)>), BackendError> {
        let (m, changes) = self
            .store
            .changes_since(account.id, mailbox, since)
            .map_err(error)?;
        let changes = changes
            .iter()
            .map(|(c, record)| {
                let kind = match c.kind {
                    storage::ChangeKind::Added => ChangeKind::Added,
                    storage::ChangeKind::Flags => ChangeKind::FlagsChanged,
                    storage::ChangeKind::Expunged => ChangeKind::Expunged,
                };
                (
                    Change {
                        uid: c.uid,
                        modseq: c.modseq,
                        kind,
                    },
                    record.as_ref().map(meta),
                )
            })
            .collect();
        Ok((info(&m), changes))
    }

    fn expunged_since(
        &self,
        account: &Account,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<Vec<(u64, u32)>, BackendError> {
        self.store
            .expunged_since(account.id, mailbox, since)
            .map_err(error)
    }

    fn body(&self, account: &Account, mailbox: MailboxId, uid: u32) -> Result<Vec<u8>, BackendError> {
        // Record and body in one read: another session's expunge makes the message
        // held (while a view shows it) or NotFound, never a record whose body has just
        // been freed.
        let (_, body) = self
            .store
            .message_body_or_held(account.id, mailbox, uid)
            .map_err(error)?;
        Ok(body)
    }

    fn hold_view(&self, _account: &Account, mailbox: MailboxId) -> Option<Box<dyn ViewHold>> {
        match self.store.hold_view(mailbox) {
            Ok(hold) => hold.map(|h| Box::new(StoreHold(h)) as Box<dyn ViewHold>),
            Err(err) => {
                // The session works without one (a shared store's database may be
                // unreachable); a FETCH of a message expunged under it answers NO
                // [EXPUNGEISSUED].
                tracing::warn!(%err, mailbox, "imap: taking a view hold failed");
                None
            }
        }
    }

    fn summaries(
        &self,
        account: &Account,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<(u32, Arc<MessageSummary>)>, BackendError> {
        self.summaries
            .get(&self.store, account.id, mailbox, uids)
            .map_err(error)
    }

    fn remember_sent_dates(
        &self,
        _account: &Account,
        mailbox: MailboxId,
        dates: &[(u32, i64)],
    ) -> Result<(), BackendError> {
        self.store.put_sent_dates(mailbox, dates).map_err(error)
    }

    fn quota(&self, account: &Account) -> Result<Option<Quota>, BackendError> {
        let Some(limit_bytes) = self
            .store
            .user(account.id)
            .map_err(error)?
            .and_then(|u| u.quota_bytes)
        else {
            return Ok(None);
        };
        let (_, used_bytes) = self.store.usage(account.id).map_err(error)?;
        Ok(Some(Quota {
            limit_bytes,
            used_bytes,
        }))
    }

    fn spool(&self, _account: &Account, size: usize) -> Option<Box<dyn Spool>> {
        if size as u64 > self.max_message_size {
            return None;
        }
        let n = self.spooled.fetch_add(1, Ordering::Relaxed);
        match FileSpool::create(&self.spool_dir, n) {
            Ok(spool) => Some(Box::new(spool)),
            Err(e) => {
                // Held in memory instead, as before.
                tracing::warn!(error = %e, dir = %self.spool_dir.display(), "cannot spool an APPEND");
                None
            }
        }
    }

    fn append(
        &self,
        account: &Account,
        mailbox: MailboxId,
        message: &[u8],
        flags: &Flags,
        internal_date: Option<(i64, i16)>,
    ) -> Result<(u32, u32), BackendError> {
        if message.len() as u64 > self.max_message_size {
            return Err(BackendError::TooBig);
        }
        let message = crlf(message);
        if let Some(quota) = self
            .store
            .user(account.id)
            .map_err(error)?
            .and_then(|u| u.quota_bytes)
        {
            let (_, used) = self.store.usage(account.id).map_err(error)?;
            if used + message.len() as u64 > quota {
                return Err(BackendError::OverQuota);
            }
        }
        self.store
            .append(
                account.id,
                mailbox,
                &message,
                flags.system,
                &flags.keywords,
                internal_date,
            )
            .map_err(error)
    }

    fn append_many(
        &self,
        account: &Account,
        mailbox: MailboxId,
        messages: &[AppendMessage<'_>],
    ) -> Result<(u32, Vec<u32>), BackendError> {
        if messages
            .iter()
            .any(|m| m.message.len() as u64 > self.max_message_size)
        {
            return Err(BackendError::TooBig);
        }
        let bodies: Vec<std::borrow::Cow<'_, [u8]>> = messages.iter().map(|m| crlf(m.message)).collect();
        if let Some(quota) = self
            .store
            .user(account.id)
            .map_err(error)?
            .and_then(|u| u.quota_bytes)
        {
            let (_, used) = self.store.usage(account.id).map_err(error)?;
            let adding: u64 = bodies.iter().map(|b| b.len() as u64).sum();
            if used + adding > quota {
                return Err(BackendError::OverQuota);
            }
        }
        let new: Vec<storage::NewMessage<'_>> = messages
            .iter()
            .zip(&bodies)
            .map(|(m, body)| storage::NewMessage {
                body,
                flags: m.flags.system,
                keywords: &m.flags.keywords,
                internal_date: m.internal_date,
            })
            .collect();
        self.store.append_many(account.id, mailbox, &new).map_err(error)
    }

    fn store_flags(
        &self,
        account: &Account,
        mailbox: MailboxId,
        uids: &[u32],
        op: StoreOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>), BackendError> {
        let op = match op {
            StoreOp::Add => FlagOp::Add,
            StoreOp::Remove => FlagOp::Remove,
            StoreOp::Replace => FlagOp::Replace,
        };
        let (changed, failed) = self
            .store
            .store_flags(
                account.id,
                mailbox,
                uids,
                op,
                flags.system,
                &flags.keywords,
                unchanged_since,
            )
            .map_err(error)?;
        Ok((changed.iter().map(meta).collect(), failed))
    }

    fn copy(
        &self,
        account: &Account,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<(u32, Vec<(u32, u32)>), BackendError> {
        self.store.copy(account.id, from, uids, to).map_err(error)
    }

    fn move_messages(
        &self,
        account: &Account,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<(u32, Vec<(u32, u32)>), BackendError> {
        self.store
            .move_messages(account.id, from, uids, to)
            .map_err(error)
    }

    fn expunge(&self, account: &Account, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>, BackendError> {
        self.store.expunge(account.id, mailbox, uids).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::crlf;

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(&*crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert!(matches!(crlf(b"a\r\nb\r\n"), std::borrow::Cow::Borrowed(_)));
    }
}
