//! Queries and bookkeeping the queue runner needs beyond `queue.rs`: whether a user still
//! holds a copy of a message (deleted mail is not redelivered; a copy in the Trash is
//! deleted), and moving entries in the due index without an attempt (relay entries parked
//! while their domain is in an outage).

use crate::db::Batch;

use crate::db::{decode, Store};
use crate::error::StoreResult;
use crate::keys::*;
use crate::model::{MessageRecord, QueueEntry};

impl Store {
    /// True when any of the user's mailboxes but the Trash holds a message from the
    /// delivery with this tracking id (copies and moves keep it). Scans the user's
    /// messages: called once per relay entry attempt, not per protocol command.
    pub fn user_has_tracking_id(&self, user_id: u64, tracking_id: u64) -> StoreResult<bool> {
        for mailbox in self.kept_mailboxes(user_id)? {
            for (_, v) in self.scan_prefix(CF_MESSAGES, &u64_key(mailbox.id))? {
                let record: MessageRecord = decode(CF_MESSAGES, &v)?;
                if record.tracking_id == tracking_id {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Tracking ids of every message the user holds, in any mailbox: one scan that the
    /// queue runner reuses for many relay entries of the same user.
    /// [`Store::user_tracking_ids`] and the last tracking id handed out before the scan
    /// began: a message with a higher id arrived after the scan started, so the scan's
    /// not finding it says nothing about whether the user deleted it.
    pub fn user_tracking_snapshot(&self, user_id: u64) -> StoreResult<(std::collections::HashSet<u64>, u64)> {
        let before = self.last_tracking_id()?;
        Ok((self.user_tracking_ids(user_id)?, before))
    }

    pub fn user_tracking_ids(&self, user_id: u64) -> StoreResult<std::collections::HashSet<u64>> {
        let mut out = std::collections::HashSet::new();
        for mailbox in self.kept_mailboxes(user_id)? {
            for (_, v) in self.scan_prefix(CF_MESSAGES, &u64_key(mailbox.id))? {
                let record: MessageRecord = decode(CF_MESSAGES, &v)?;
                out.insert(record.tracking_id);
            }
        }
        Ok(out)
    }

    /// The mailboxes whose messages the user keeps: all but the `\Trash` one. Delete in
    /// Roundcube, Outlook, Apple Mail or a phone moves a message there, and the user
    /// means it deleted: a copy left only in the Trash is not redelivered (Roundcube's
    /// Delete once sent a deleted message on to the primary, issue 20).
    fn kept_mailboxes(&self, user_id: u64) -> StoreResult<Vec<crate::model::Mailbox>> {
        let mut mailboxes = self.mailboxes(user_id)?;
        mailboxes.retain(|m| m.special_use != Some(crate::model::SpecialUse::Trash));
        Ok(mailboxes)
    }

    /// Moves the next attempt of these entries to `at` without counting an attempt, in one
    /// write. Not synced: no reply promises it, and after a crash an entry that is due
    /// earlier than planned is merely looked at again.
    pub fn postpone_entries(&self, ids: &[u64], at: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<(&str, u64)> = ids.iter().map(|id| ("queue", *id)).collect();
        let _guard = self.lock(&keys)?;
        let due_cf = CF_QUEUE_DUE;
        let mut batch = Batch::default();
        for id in ids {
            let Some(mut entry) = self.get_json::<QueueEntry>(CF_QUEUE, &u64_key(*id))? else {
                continue;
            };
            // A runner is attempting it: it stays out of the due range until the lease
            // ends, whoever would move it.
            if entry.next_attempt == at || entry.live_lease(self.now()).is_some() {
                continue;
            }
            batch.delete(due_cf, due_key(entry.next_attempt, entry.id));
            entry.next_attempt = at;
            self.put_json(&mut batch, CF_QUEUE, &u64_key(entry.id), &entry)?;
            batch.put(due_cf, due_key(at, entry.id), b"");
        }
        self.commit_lazy(batch)
    }
}
