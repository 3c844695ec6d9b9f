//! Bodies kept for the sessions that still show an expunged message.
//!
//! An IMAP session may not be told of an expunge at once (RFC 3501 §7.4.1: not during
//! FETCH, STORE or SEARCH), and until it is told the message keeps its sequence number
//! and the client may FETCH it. So that the answer is the message's data and not a
//! `NO`, every selected mailbox view holds the store to keep what it shows:
//!
//! - A view registers a [`ViewHold`] on its mailbox (under the mailbox's lock, so an
//!   expunge either sees the hold or committed before the view read its messages) and
//!   keeps its *horizon* up to date: the view shows no message expunged at or below that
//!   modseq (it either read its messages after the expunge or told the client of it).
//! - An expunge (or a MOVE out) of a mailbox that has holds keeps each removed record in
//!   `held` (key mailbox, uid) with its expunge modseq, and the body reference moves from
//!   the record to that entry, in the same batch: a held body is counted like any other
//!   (`check_integrity` counts held entries as references).
//! - An entry goes when every hold of its mailbox has a horizon at or above its modseq,
//!   or the last hold goes (the view is dropped: CLOSE, another SELECT, LOGOUT, a cut
//!   connection). The check runs after each expunge and each horizon change; only this
//!   process writes entries, so it knows them all without reading the store.
//! - Holds live in memory: when the store is opened no session exists, so every entry
//!   left by a crash (or copied from another store) is released then.
//!
//! On a store shared by several nodes (PostgreSQL) a hold cannot see another node's
//! expunges in time, so no holds are taken there and a session answers such a FETCH
//! with `NO [EXPUNGEISSUED]` as before.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::db::{decode, Batch, IterMode, Store};
use crate::error::StoreResult;
use crate::keys::*;
use crate::mailbox::{blob_lock, mailbox_lock};
use crate::model::*;

/// An expunged message kept for the sessions that still show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMessage {
    /// The modseq of the expunge (its tombstone in the change log).
    pub expunged_modseq: u64,
    pub record: MessageRecord,
}

/// The holds of this process, by mailbox.
#[derive(Default)]
pub(crate) struct HoldRegistry {
    next_id: u64,
    /// Mailbox → hold id → horizon.
    views: HashMap<u64, HashMap<u64, u64>>,
    /// Mailbox → entries written and not yet released: (expunge modseq, uid, body).
    entries: HashMap<u64, Vec<(u64, u32, BlobId)>>,
}

/// A selected view's claim on the messages it shows (see the module comment). Dropping
/// it ends the claim and releases what only it kept.
pub struct ViewHold {
    store: Store,
    mailbox: u64,
    id: u64,
    horizon: u64,
}

impl ViewHold {
    pub fn mailbox(&self) -> u64 {
        self.mailbox
    }

    /// The view shows no message expunged at or below `horizon` any more. A horizon never
    /// goes down.
    pub fn advance(&mut self, horizon: u64) {
        if horizon <= self.horizon {
            return;
        }
        self.horizon = horizon;
        {
            let mut registry = self.store.inner.holds.lock();
            if let Some(h) = registry
                .views
                .get_mut(&self.mailbox)
                .and_then(|v| v.get_mut(&self.id))
            {
                *h = horizon;
            }
        }
        self.store.release_held(self.mailbox);
    }
}

impl Drop for ViewHold {
    fn drop(&mut self) {
        {
            let mut registry = self.store.inner.holds.lock();
            if let Some(views) = registry.views.get_mut(&self.mailbox) {
                views.remove(&self.id);
                if views.is_empty() {
                    registry.views.remove(&self.mailbox);
                }
            }
        }
        self.store.release_held(self.mailbox);
    }
}

impl std::fmt::Debug for ViewHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewHold")
            .field("mailbox", &self.mailbox)
            .field("horizon", &self.horizon)
            .finish()
    }
}

impl Store {
    /// A hold on `mailbox` for a view about to read its messages, horizon 0 (it keeps
    /// everything expunged from now on until it advances). `None` on a shared store.
    pub fn hold_view(&self, mailbox_id: u64) -> StoreResult<Option<ViewHold>> {
        if self.shared() {
            return Ok(None);
        }
        // Under the mailbox's lock: an expunge running now has either checked for holds
        // after this one exists, or committed before the view reads its messages.
        let _guard = self.lock(&[mailbox_lock(mailbox_id)])?;
        let mut registry = self.inner.holds.lock();
        registry.next_id += 1;
        let id = registry.next_id;
        registry.views.entry(mailbox_id).or_default().insert(id, 0);
        Ok(Some(ViewHold {
            store: self.clone(),
            mailbox: mailbox_id,
            id,
            horizon: 0,
        }))
    }

    /// Whether a view holds `mailbox`; the caller holds the mailbox's lock, so no hold
    /// appears until its write is committed.
    pub(crate) fn has_holds(&self, mailbox_id: u64) -> bool {
        self.inner.holds.lock().views.contains_key(&mailbox_id)
    }

    /// Puts a held entry for an expunged record in `batch`; the record's body reference
    /// becomes the entry's. Caller holds the mailbox's lock and commits, then calls
    /// [`Store::note_held`].
    pub(crate) fn hold_into(
        &self,
        batch: &mut Batch,
        mailbox_id: u64,
        expunged_modseq: u64,
        record: &MessageRecord,
    ) -> StoreResult<()> {
        let held = HeldMessage {
            expunged_modseq,
            record: record.clone(),
        };
        self.put_json(batch, CF_HELD, &message_key(mailbox_id, record.uid), &held)
    }

    /// Records committed held entries, then releases what no hold needs (the views may
    /// have moved past them while the write was being made).
    pub(crate) fn note_held(&self, mailbox_id: u64, held: Vec<(u64, u32, BlobId)>) {
        if held.is_empty() {
            return;
        }
        self.keep_held(mailbox_id, held);
        self.release_held(mailbox_id);
    }

    /// Entries of `mailbox` to release once no hold needs them.
    fn keep_held(&self, mailbox_id: u64, held: Vec<(u64, u32, BlobId)>) {
        self.inner
            .holds
            .lock()
            .entries
            .entry(mailbox_id)
            .or_default()
            .extend(held);
    }

    /// Releases the held entries of `mailbox` that no hold needs any more. Errors are
    /// logged: an entry that could not be released is tried again at the next change,
    /// and at the latest when the store is next opened.
    pub(crate) fn release_held(&self, mailbox_id: u64) {
        let due: Vec<(u64, u32, BlobId)> = {
            let mut registry = self.inner.holds.lock();
            let horizon = registry
                .views
                .get(&mailbox_id)
                .and_then(|v| v.values().min().copied())
                .unwrap_or(u64::MAX);
            let Some(entries) = registry.entries.get_mut(&mailbox_id) else {
                return;
            };
            let (due, keep): (Vec<_>, Vec<_>) = entries.drain(..).partition(|(m, _, _)| *m <= horizon);
            if keep.is_empty() {
                registry.entries.remove(&mailbox_id);
            } else if let Some(entries) = registry.entries.get_mut(&mailbox_id) {
                *entries = keep;
            }
            due
        };
        if due.is_empty() {
            return;
        }
        let keys: Vec<(u64, u32)> = due.iter().map(|(_, uid, _)| (mailbox_id, *uid)).collect();
        if let Err(err) = self.release_entries(&keys) {
            tracing::error!(%err, mailbox = mailbox_id, "store: releasing held bodies failed");
            self.keep_held(mailbox_id, due);
        }
    }

    /// Deletes the held entries `(mailbox, uid)` and their body references in one write.
    fn release_entries(&self, keys: &[(u64, u32)]) -> StoreResult<usize> {
        let mut entries = Vec::with_capacity(keys.len());
        for (mailbox, uid) in keys {
            if let Some(held) = self.get_json::<HeldMessage>(CF_HELD, &message_key(*mailbox, *uid))? {
                entries.push((*mailbox, held.record));
            }
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let mut freed: BTreeMap<BlobId, i64> = BTreeMap::new();
        for (_, record) in &entries {
            *freed.entry(record.blob).or_default() += 1;
        }
        let locks: Vec<(&str, u64)> = freed.keys().map(blob_lock).collect();
        let _guards = self.lock(&locks)?;
        let mut batch = Batch::default();
        for (mailbox, record) in &entries {
            self.delete(&mut batch, CF_HELD, &message_key(*mailbox, record.uid))?;
        }
        for (blob, count) in freed {
            self.release_blob_into(&mut batch, &blob, count)?;
        }
        // Unsynced: lost in a crash, the entries are released again at the next open.
        self.commit_lazy(batch)?;
        Ok(entries.len())
    }

    /// Releases every held entry: at open, when no session exists. Returns how many.
    pub(crate) fn release_all_held(&self) -> StoreResult<usize> {
        let mut keys = Vec::new();
        for item in self.iter(CF_HELD, IterMode::Start)? {
            let (k, _) = item?;
            if let Some(key) = split_message_key(&k) {
                keys.push(key);
            }
        }
        let mut released = 0;
        for chunk in keys.chunks(1000) {
            released += self.release_entries(chunk)?;
        }
        Ok(released)
    }

    /// A held message of `mailbox`, if one is kept for a view.
    pub fn held_message(&self, mailbox_id: u64, uid: u32) -> StoreResult<Option<HeldMessage>> {
        self.get_json(CF_HELD, &message_key(mailbox_id, uid))
    }

    /// Every held entry: `(mailbox, held)`; for integrity checks and tests.
    pub fn held_messages(&self) -> StoreResult<Vec<(u64, HeldMessage)>> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(CF_HELD, &[])? {
            if let Some((mailbox, _)) = split_message_key(&k) {
                out.push((mailbox, decode(CF_HELD, &v)?));
            }
        }
        Ok(out)
    }
}
