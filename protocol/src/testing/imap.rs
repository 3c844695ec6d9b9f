//! An in-memory IMAP store and auth backend: one account, every mailbox in a `Vec`, a
//! change log per mailbox. Used by the session's unit tests and by the fuzz targets.

use std::sync::{Arc, Mutex};

use crate::auth::{AccessLevel, Account, AuthBackend, AuthError, Credentials};
use crate::imap::message::MessageSummary;
use crate::imap::{
    BackendError, Change, ChangeKind, Flags, ImapBackend, MailboxId, MailboxInfo, MessageMeta, Quota,
    SpecialUse, StoreOp,
};

pub const USER: &str = "tim@example.com";
pub const PASSWORD: &str = "tanstaaf";

pub struct MockAuth;

impl AuthBackend for MockAuth {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        assert_eq!(credentials.protocol, "imap");
        if credentials.username == USER && credentials.password.expose() == PASSWORD {
            Ok(account())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

pub fn account() -> Account {
    Account {
        id: 7,
        address: USER.to_string(),
        access: AccessLevel::Full,
    }
}

pub struct MockMailbox {
    pub info: MailboxInfo,
    pub messages: Vec<(MessageMeta, Vec<u8>)>,
    pub log: Vec<Change>,
}

pub struct MockState {
    pub mailboxes: Vec<MockMailbox>,
    /// Subscribed names, apart from the mailboxes as in the real store.
    pub subscriptions: Vec<String>,
    pub next_id: u64,
    pub calls: Vec<String>,
    /// The account's quota in octets (QUOTA), none by default.
    pub quota_limit: Option<u64>,
}

/// One account's mailboxes in memory, shared by every session of a test.
pub struct MockStore {
    pub state: Mutex<MockState>,
}

impl MockStore {
    pub fn new() -> Arc<MockStore> {
        let store = MockStore {
            state: Mutex::new(MockState {
                mailboxes: Vec::new(),
                subscriptions: Vec::new(),
                next_id: 1,
                calls: Vec::new(),
                quota_limit: None,
            }),
        };
        let a = account();
        store.create_mailbox(&a, "INBOX", None).unwrap();
        for (name, su) in [
            ("Sent", SpecialUse::Sent),
            ("Drafts", SpecialUse::Drafts),
            ("Trash", SpecialUse::Trash),
            ("Junk", SpecialUse::Junk),
            ("Archive", SpecialUse::Archive),
        ] {
            store.create_mailbox(&a, name, Some(su)).unwrap();
        }
        // A new account's mailboxes are subscribed; CREATE does not subscribe.
        for name in ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"] {
            store.set_subscribed(&a, name, true).unwrap();
        }
        Arc::new(store)
    }

    /// Delivers a message as the MX would.
    pub fn deliver(&self, mailbox: &str, text: &str, flags: u8) -> u32 {
        let id = self.mailbox(&account(), mailbox).unwrap().id;
        let flags = Flags {
            system: flags,
            keywords: Vec::new(),
        };
        self.append(&account(), id, text.as_bytes(), &flags, Some((1_700_000_000, 60)))
            .unwrap()
            .1
    }

    pub fn uids(&self, mailbox: &str) -> Vec<u32> {
        let st = self.state.lock().unwrap();
        let mb = st.mailboxes.iter().find(|m| m.info.name == mailbox).unwrap();
        mb.messages.iter().map(|m| m.0.uid).collect()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Makes `mailbox`'s messages look stored before the store kept sent dates.
    pub fn forget_sent_dates(&self, mailbox: &str) {
        let mut st = self.state.lock().unwrap();
        let mb = st.mailboxes.iter_mut().find(|m| m.info.name == mailbox).unwrap();
        for (meta, _) in &mut mb.messages {
            meta.sent_date = None;
        }
    }

    /// The sent dates the store holds for `mailbox`'s messages, in UID order.
    pub fn sent_dates(&self, mailbox: &str) -> Vec<Option<i64>> {
        let st = self.state.lock().unwrap();
        let mb = st.mailboxes.iter().find(|m| m.info.name == mailbox).unwrap();
        mb.messages.iter().map(|m| m.0.sent_date).collect()
    }
}

impl MockMailbox {
    fn bump(&mut self) -> u64 {
        self.info.highest_modseq += 1;
        self.info.highest_modseq
    }

    fn refresh(&mut self) {
        self.info.exists = self.messages.len() as u32;
        self.info.size = self.messages.iter().map(|m| u64::from(m.0.size)).sum();
        self.info.unseen = self
            .messages
            .iter()
            .filter(|m| !m.0.flags.has(Flags::SEEN))
            .count() as u32;
    }

    fn add(&mut self, body: Vec<u8>, flags: Flags, date: (i64, i16)) -> u32 {
        let uid = self.info.uid_next;
        self.info.uid_next += 1;
        let modseq = self.bump();
        self.messages.push((
            MessageMeta {
                uid,
                flags,
                modseq,
                internal_date: date.0,
                internal_date_offset_minutes: date.1,
                size: body.len() as u32,
                // As the real store writes it with the record.
                sent_date: Some(MessageSummary::of(&body).date.unwrap_or(date.0)),
            },
            body,
        ));
        self.log.push(Change {
            uid,
            modseq,
            kind: ChangeKind::Added,
        });
        self.refresh();
        uid
    }

    fn find(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.0.uid).ok()
    }

    fn remove(&mut self, uids: &[u32]) -> Vec<u32> {
        let mut removed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &uid in uids {
            if self.find(uid).is_some() && seen.insert(uid) {
                let modseq = self.bump();
                self.log.push(Change {
                    uid,
                    modseq,
                    kind: ChangeKind::Expunged,
                });
                removed.push(uid);
            }
        }
        let gone: std::collections::HashSet<u32> = removed.iter().copied().collect();
        self.messages.retain(|m| !gone.contains(&m.0.uid));
        self.refresh();
        removed
    }
}

impl MockState {
    fn by_name(&mut self, name: &str) -> Result<&mut MockMailbox, BackendError> {
        self.mailboxes
            .iter_mut()
            .find(|m| m.info.name == name)
            .ok_or(BackendError::NotFound)
    }
    fn by_id(&mut self, id: MailboxId) -> Result<&mut MockMailbox, BackendError> {
        self.mailboxes
            .iter_mut()
            .find(|m| m.info.id == id)
            .ok_or(BackendError::NotFound)
    }
}

/// An in-memory spool: the session's own memory no longer holds the literal, which is
/// what the tests look at; the server's spool is a file.
#[derive(Default)]
pub struct MemSpool(Vec<u8>);

impl crate::imap::Spool for MemSpool {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn into_bytes(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        Ok(self.0)
    }
}

impl ImapBackend for MockStore {
    fn spool(&self, _: &Account, _size: usize) -> Option<Box<dyn crate::imap::Spool>> {
        Some(Box::new(MemSpool::default()))
    }

    fn mailbox(&self, _: &Account, name: &str) -> Result<MailboxInfo, BackendError> {
        let mut st = self.state.lock().unwrap();
        st.by_name(name).map(|m| m.info.clone())
    }
    fn create_mailbox(
        &self,
        _: &Account,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxInfo, BackendError> {
        let mut st = self.state.lock().unwrap();
        if st.by_name(name).is_ok() {
            return Err(BackendError::AlreadyExists);
        }
        let id = st.next_id;
        st.next_id += 1;
        let info = MailboxInfo {
            id,
            name: name.to_string(),
            special_use,
            uid_validity: 1000 + id as u32,
            uid_next: 1,
            highest_modseq: 1,
            exists: 0,
            size: 0,
            unseen: 0,
            recent_uid: 1,
        };
        st.mailboxes.push(MockMailbox {
            info: info.clone(),
            messages: Vec::new(),
            log: Vec::new(),
        });
        Ok(info)
    }
    fn delete_mailbox(&self, _: &Account, name: &str) -> Result<(), BackendError> {
        let mut st = self.state.lock().unwrap();
        st.by_name(name)?;
        st.mailboxes.retain(|m| m.info.name != name);
        Ok(())
    }
    fn rename_mailbox(&self, a: &Account, from: &str, to: &str) -> Result<(), BackendError> {
        if self.mailbox(a, to).is_ok() {
            return Err(BackendError::AlreadyExists);
        }
        if from == "INBOX" {
            let new = self.create_mailbox(a, to, None)?;
            let mut st = self.state.lock().unwrap();
            if st.subscriptions.iter().any(|s| s == "INBOX") {
                st.subscriptions.push(to.to_string());
            }
            let inbox = st.by_name("INBOX")?;
            let msgs: Vec<(MessageMeta, Vec<u8>)> = inbox.messages.clone();
            let uids: Vec<u32> = msgs.iter().map(|m| m.0.uid).collect();
            inbox.remove(&uids);
            let dest = st.by_id(new.id)?;
            for (meta, body) in msgs {
                dest.add(
                    body,
                    meta.flags,
                    (meta.internal_date, meta.internal_date_offset_minutes),
                );
            }
            return Ok(());
        }
        let mut st = self.state.lock().unwrap();
        let prefix = format!("{from}/");
        st.by_name(from)?;
        let renamed = |name: &mut String| {
            if name == from {
                *name = to.to_string();
            } else if let Some(rest) = name.strip_prefix(&prefix) {
                *name = format!("{to}/{rest}");
            }
        };
        for m in &mut st.mailboxes {
            renamed(&mut m.info.name);
        }
        st.subscriptions.iter_mut().for_each(renamed);
        Ok(())
    }
    fn set_subscribed(&self, _: &Account, name: &str, subscribed: bool) -> Result<(), BackendError> {
        let mut st = self.state.lock().unwrap();
        let present = st.subscriptions.iter().any(|s| s == name);
        let exists = st.by_name(name).is_ok();
        match (subscribed, present) {
            (true, false) if exists => st.subscriptions.push(name.to_string()),
            (false, true) => st.subscriptions.retain(|s| s != name),
            (_, false) if !exists => return Err(BackendError::NotFound),
            _ => {}
        }
        Ok(())
    }
    fn mailboxes_and_subscriptions(
        &self,
        _: &Account,
    ) -> Result<(Vec<MailboxInfo>, Vec<String>), BackendError> {
        let st = self.state.lock().unwrap();
        let mailboxes = st.mailboxes.iter().map(|m| m.info.clone()).collect();
        Ok((mailboxes, st.subscriptions.clone()))
    }
    fn messages(
        &self,
        _: &Account,
        mailbox: MailboxId,
    ) -> Result<(MailboxInfo, Vec<MessageMeta>), BackendError> {
        let mut st = self.state.lock().unwrap();
        let mb = st.by_id(mailbox)?;
        Ok((mb.info.clone(), mb.messages.iter().map(|m| m.0.clone()).collect()))
    }
    fn claim_recent(&self, _: &Account, mailbox: MailboxId, below: u32) -> Result<u32, BackendError> {
        let mut st = self.state.lock().unwrap();
        let mb = st.by_id(mailbox)?;
        let first = mb.info.recent_uid;
        mb.info.recent_uid = first.max(below.min(mb.info.uid_next));
        Ok(first)
    }
    fn changes_since(
        &self,
        _: &Account,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<(MailboxInfo, Vec<(Change, Option<MessageMeta>)>), BackendError> {
        let mut st = self.state.lock().unwrap();
        let mb = st.by_id(mailbox)?;
        let changes = mb
            .log
            .iter()
            .filter(|c| c.modseq > since)
            .map(|c| {
                let meta = match c.kind {
                    ChangeKind::Expunged => None,
                    _ => mb.find(c.uid).map(|i| mb.messages[i].0.clone()),
                };
                (*c, meta)
            })
            .collect();
        Ok((mb.info.clone(), changes))
    }
    fn body(&self, _: &Account, mailbox: MailboxId, uid: u32) -> Result<Vec<u8>, BackendError> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!("body {uid}"));
        let mb = st.by_id(mailbox)?;
        mb.messages
            .iter()
            .find(|m| m.0.uid == uid)
            .map(|m| m.1.clone())
            .ok_or(BackendError::NotFound)
    }
    fn append(
        &self,
        _: &Account,
        mailbox: MailboxId,
        message: &[u8],
        flags: &Flags,
        internal_date: Option<(i64, i16)>,
    ) -> Result<(u32, u32), BackendError> {
        let mut st = self.state.lock().unwrap();
        let mb = st.by_id(mailbox)?;
        let uid = mb.add(
            message.to_vec(),
            flags.clone(),
            internal_date.unwrap_or((1_700_000_000, 0)),
        );
        Ok((mb.info.uid_validity, uid))
    }
    fn append_many(
        &self,
        _: &Account,
        mailbox: MailboxId,
        messages: &[crate::imap::backend::AppendMessage<'_>],
    ) -> Result<(u32, Vec<u32>), BackendError> {
        // One lock: all or none, as the store's one batch.
        let mut st = self.state.lock().unwrap();
        let mb = st.by_id(mailbox)?;
        let uids = messages
            .iter()
            .map(|m| {
                mb.add(
                    m.message.to_vec(),
                    m.flags.clone(),
                    m.internal_date.unwrap_or((1_700_000_000, 0)),
                )
            })
            .collect();
        Ok((mb.info.uid_validity, uids))
    }
    fn store_flags(
        &self,
        _: &Account,
        mailbox: MailboxId,
        uids: &[u32],
        op: StoreOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>), BackendError> {
        let mut st = self.state.lock().unwrap();
        let mb = st.by_id(mailbox)?;
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        for &uid in uids {
            let Some(i) = mb.find(uid) else {
                continue;
            };
            if unchanged_since.is_some_and(|u| mb.messages[i].0.modseq > u) {
                failed.push(uid);
                continue;
            }
            let mut new = mb.messages[i].0.flags.clone();
            new.apply(op, flags);
            if new.same_as(&mb.messages[i].0.flags) {
                changed.push(mb.messages[i].0.clone());
                continue;
            }
            let modseq = mb.bump();
            let m = &mut mb.messages[i].0;
            m.flags = new;
            m.modseq = modseq;
            changed.push(m.clone());
            mb.log.push(Change {
                uid,
                modseq,
                kind: ChangeKind::FlagsChanged,
            });
        }
        mb.refresh();
        Ok((changed, failed))
    }
    fn copy(
        &self,
        _: &Account,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<(u32, Vec<(u32, u32)>), BackendError> {
        let mut st = self.state.lock().unwrap();
        let src: Vec<(MessageMeta, Vec<u8>)> = st
            .by_id(from)?
            .messages
            .iter()
            .filter(|m| uids.contains(&m.0.uid))
            .cloned()
            .collect();
        let dest = st.by_id(to)?;
        let mut pairs = Vec::new();
        for (meta, body) in src {
            let uid = dest.add(
                body,
                meta.flags,
                (meta.internal_date, meta.internal_date_offset_minutes),
            );
            pairs.push((meta.uid, uid));
        }
        Ok((dest.info.uid_validity, pairs))
    }
    fn move_messages(
        &self,
        a: &Account,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<(u32, Vec<(u32, u32)>), BackendError> {
        let (validity, pairs) = self.copy(a, from, uids, to)?;
        let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        self.expunge(a, from, &moved)?;
        Ok((validity, pairs))
    }
    fn remember_sent_dates(
        &self,
        _: &Account,
        mailbox: MailboxId,
        dates: &[(u32, i64)],
    ) -> Result<(), BackendError> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!("remember_sent_dates {}", dates.len()));
        let mb = st.by_id(mailbox)?;
        for (uid, date) in dates {
            if let Some(i) = mb.find(*uid) {
                mb.messages[i].0.sent_date.get_or_insert(*date);
            }
        }
        Ok(())
    }
    fn quota(&self, _: &Account) -> Result<Option<Quota>, BackendError> {
        let st = self.state.lock().unwrap();
        let used_bytes = st.mailboxes.iter().map(|m| m.info.size).sum();
        Ok(st.quota_limit.map(|limit_bytes| Quota {
            limit_bytes,
            used_bytes,
        }))
    }
    fn expunge(&self, _: &Account, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>, BackendError> {
        let mut st = self.state.lock().unwrap();
        Ok(st.by_id(mailbox)?.remove(uids))
    }
}
