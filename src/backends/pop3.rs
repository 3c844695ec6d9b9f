//! POP3 on the store: the maildrop is the user's INBOX, one POP3 session per user at a
//! time, UIDLs `<UIDVALIDITY>.<UID>` (stable for a message's life and never reused,
//! because UIDs are never reused within an INBOX and UIDVALIDITY never repeats).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use understudy_protocol::pop3::{MaildropEntry, Pop3Backend, Pop3BackendError};
use understudy_protocol::Account;
use understudy_storage::{Store, StoreError};

/// Maildrop access for POP3 sessions.
pub struct Pop3Store {
    store: Store,
    /// Users with a POP3 session in TRANSACTION state, and their INBOX id.
    locked: Mutex<HashMap<u64, u64>>,
}

impl Pop3Store {
    pub fn new(store: Store) -> Self {
        Pop3Store {
            store,
            locked: Mutex::new(HashMap::new()),
        }
    }

    fn inbox_of(&self, account: &Account) -> Result<u64, Pop3BackendError> {
        match self.locked.lock().get(&account.id) {
            Some(inbox) => Ok(*inbox),
            None => Err(Pop3BackendError::Temporary("maildrop not open".into())),
        }
    }
}

fn temporary(e: StoreError) -> Pop3BackendError {
    Pop3BackendError::Temporary(e.to_string())
}

impl Pop3Backend for Pop3Store {
    fn open_maildrop(&self, account: &Account) -> Result<Vec<MaildropEntry>, Pop3BackendError> {
        let inbox = self.store.inbox(account.id).map_err(temporary)?;
        {
            let mut locked = self.locked.lock();
            if locked.contains_key(&account.id) {
                return Err(Pop3BackendError::InUse);
            }
            locked.insert(account.id, inbox.id);
        }
        match self.store.messages(account.id, inbox.id) {
            Ok((mailbox, messages)) => Ok(messages
                .into_iter()
                .map(|m| MaildropEntry {
                    key: m.uid as u64,
                    size: m.size as u64,
                    uidl: format!("{}.{}", mailbox.uid_validity, m.uid),
                })
                .collect()),
            Err(e) => {
                self.locked.lock().remove(&account.id);
                Err(temporary(e))
            }
        }
    }

    fn retrieve(&self, account: &Account, key: u64) -> Result<Vec<u8>, Pop3BackendError> {
        let inbox = self.inbox_of(account)?;
        let uid = u32::try_from(key).map_err(|_| Pop3BackendError::Gone)?;
        // Record and body in one read: an IMAP session expunging it meanwhile makes it
        // gone, never a record without its body.
        match self.store.message_body(account.id, inbox, uid) {
            Ok((_, body)) => Ok(body),
            Err(StoreError::NotFound(_)) => Err(Pop3BackendError::Gone),
            Err(e) => Err(temporary(e)),
        }
    }

    fn delete(&self, account: &Account, keys: &[u64]) -> Result<(), Pop3BackendError> {
        let inbox = self.inbox_of(account)?;
        let uids: Vec<u32> = keys.iter().filter_map(|k| u32::try_from(*k).ok()).collect();
        let removed = self.store.expunge(account.id, inbox, &uids).map_err(temporary)?;
        tracing::info!(user = %account.address, deleted = removed.len(), "pop3 update");
        Ok(())
    }

    fn release(&self, account: &Account) {
        self.locked.lock().remove(&account.id);
    }
}

/// Shared by all POP3 connections.
pub type SharedPop3Store = Arc<Pop3Store>;
