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
//! On a store shared by several nodes (PostgreSQL) the expunge may run on another node
//! than the view, so the holds are rows of the store (`view_holds`, [`CF_VIEW_HOLDS`]):
//!
//! - A hold is a row (mailbox, node, hold id) → horizon, written with the node's
//!   liveness row (node → lease end) under the mailbox's lock, which is the engine's
//!   advisory lock there: an expunge on any node either sees the row or committed
//!   before the view read its messages. Dropping the hold deletes its row.
//! - An expunge keeps `held` entries when the mailbox has any hold row (one range read
//!   under the lock it already holds), as above; the entries are rows like any other.
//! - The horizon is written only when an entry of the mailbox waits for it: an advance
//!   reads the mailbox's entries (a range read, usually empty) and writes the row only
//!   if one lies between the horizon last written and the new one, so a NOOP that sees
//!   flag changes or new mail writes nothing.
//! - An entry goes when every live hold of its mailbox has a written horizon at or above
//!   its modseq (checked after an expunge, a written horizon and a dropped hold, by
//!   whichever node did it). Entries are read first, hold rows after, so a hold that
//!   shows an entry is always seen; the delete expects the entry's exact bytes
//!   (`Op::Expect`), so two nodes releasing the same entry release it once.
//! - Each node renews its lease every [`HEARTBEAT`] for [`NODE_LEASE_SECS`]. A node that
//!   dies (SIGKILL, a lost host) leaves its rows; once its lease has ended the leading
//!   node's sweep deletes them and releases what only they kept. A node id is new at
//!   every start, so a restarted node has no rows of its own to drop: those of its last
//!   run go with that run's lease. Nothing is released when a node opens the store (the
//!   other nodes' views may need it).
//!
//! A node cut off from the database past its lease may find its views' entries
//! released: a FETCH of such a message answers `NO [EXPUNGEISSUED]`, never a record
//! without its body.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::db::{decode, read_u64, Batch, Direction, Inner, IterMode, Store};
use crate::error::{StoreError, StoreResult};
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

/// How long a node's liveness row lasts without renewal (shared store).
pub const NODE_LEASE_SECS: i64 = 15;
/// How often a node renews its lease, and the leading node sweeps dead nodes' holds.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

fn hold_prefix(mailbox: u64) -> [u8; 9] {
    let mut k = [b'h'; 9];
    k[1..].copy_from_slice(&mailbox.to_be_bytes());
    k
}

fn hold_key(mailbox: u64, node: u64, id: u64) -> [u8; 25] {
    let mut k = [b'h'; 25];
    k[1..9].copy_from_slice(&mailbox.to_be_bytes());
    k[9..17].copy_from_slice(&node.to_be_bytes());
    k[17..].copy_from_slice(&id.to_be_bytes());
    k
}

/// (mailbox, node) of a hold row's key.
fn split_hold_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 25 || key[0] != b'h' {
        return None;
    }
    Some((read_u64(&key[1..9])?, read_u64(&key[9..17])?))
}

fn node_key(node: u64) -> [u8; 9] {
    let mut k = [b'n'; 9];
    k[1..].copy_from_slice(&node.to_be_bytes());
    k
}

/// A selected view's claim on the messages it shows (see the module comment). Dropping
/// it ends the claim and releases what only it kept.
pub struct ViewHold {
    store: Store,
    mailbox: u64,
    id: u64,
    horizon: u64,
    /// On a shared store: the horizon in the hold's row.
    written: u64,
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
        if self.store.shared() {
            self.advance_shared();
            return;
        }
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

impl ViewHold {
    /// Writes the horizon if an entry of the mailbox waits for it, then releases.
    fn advance_shared(&mut self) {
        let waiting = match self.store.held_modseqs(self.mailbox) {
            Ok(modseqs) => modseqs.into_iter().any(|m| m > self.written && m <= self.horizon),
            Err(err) => {
                tracing::warn!(%err, mailbox = self.mailbox, "store: reading held entries failed");
                return;
            }
        };
        if !waiting {
            return;
        }
        let mut batch = Batch::default();
        batch.put(
            CF_VIEW_HOLDS,
            hold_key(self.mailbox, self.store.node_id(), self.id),
            self.horizon.to_be_bytes(),
        );
        match self.store.commit_lazy(batch) {
            Ok(()) => self.written = self.horizon,
            Err(err) => {
                tracing::warn!(%err, mailbox = self.mailbox, "store: writing a view's horizon failed");
                return;
            }
        }
        self.store.release_held_shared_logged(self.mailbox);
    }
}

impl Drop for ViewHold {
    fn drop(&mut self) {
        if self.store.shared() {
            let mut batch = Batch::default();
            batch.delete(
                CF_VIEW_HOLDS,
                hold_key(self.mailbox, self.store.node_id(), self.id),
            );
            if let Err(err) = self.store.commit_lazy(batch) {
                // The row goes with this node's lease at the latest.
                tracing::warn!(%err, mailbox = self.mailbox, "store: dropping a view hold failed");
                return;
            }
            self.store.release_held_shared_logged(self.mailbox);
            return;
        }
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
    /// everything expunged from now on until it advances). `Option` for stores that
    /// keep nothing for views; this one always gives one.
    pub fn hold_view(&self, mailbox_id: u64) -> StoreResult<Option<ViewHold>> {
        // Under the mailbox's lock: an expunge running now has either checked for holds
        // after this one exists, or committed before the view reads its messages.
        let _guard = self.lock(&[mailbox_lock(mailbox_id)])?;
        let id = {
            let mut registry = self.inner.holds.lock();
            registry.next_id += 1;
            registry.next_id
        };
        if self.shared() {
            // The row and this node's liveness, visible to every node before the lock
            // is released (unsynced: a database crash ends every session anyway).
            let mut batch = Batch::default();
            batch.put(
                CF_VIEW_HOLDS,
                node_key(self.node_id()),
                self.lease_end().to_be_bytes(),
            );
            batch.put(
                CF_VIEW_HOLDS,
                hold_key(mailbox_id, self.node_id(), id),
                0u64.to_be_bytes(),
            );
            self.commit_lazy(batch)?;
        } else {
            self.inner
                .holds
                .lock()
                .views
                .entry(mailbox_id)
                .or_default()
                .insert(id, 0);
        }
        Ok(Some(ViewHold {
            store: self.clone(),
            mailbox: mailbox_id,
            id,
            horizon: 0,
            written: 0,
        }))
    }

    /// Whether a view holds `mailbox`; the caller holds the mailbox's lock, so no hold
    /// appears until its write is committed. On a shared store a hold row of any node
    /// counts (a dead node's rows go at the next sweep); a failed read counts as a hold.
    pub(crate) fn has_holds(&self, mailbox_id: u64) -> bool {
        if !self.shared() {
            return self.inner.holds.lock().views.contains_key(&mailbox_id);
        }
        let prefix = hold_prefix(mailbox_id);
        let first = self
            .iter(CF_VIEW_HOLDS, IterMode::From(&prefix, Direction::Forward))
            .and_then(|mut rows| rows.next().transpose());
        match first {
            Ok(row) => row.is_some_and(|(k, _)| k.starts_with(&prefix)),
            Err(err) => {
                tracing::warn!(%err, mailbox = mailbox_id, "store: reading view holds failed");
                true
            }
        }
    }

    fn lease_end(&self) -> i64 {
        self.now().saturating_add(NODE_LEASE_SECS)
    }

    /// The expunge modseqs of `mailbox`'s held entries.
    fn held_modseqs(&self, mailbox_id: u64) -> StoreResult<Vec<u64>> {
        let mut out = Vec::new();
        for (_, v) in self.scan_prefix(CF_HELD, &u64_key(mailbox_id))? {
            out.push(decode::<HeldMessage>(CF_HELD, &v)?.expunged_modseq);
        }
        Ok(out)
    }

    /// Nodes whose lease has not ended, this one always among them.
    fn live_nodes(&self) -> StoreResult<BTreeSet<u64>> {
        let now = self.now();
        let mut live = BTreeSet::from([self.node_id()]);
        for (k, v) in self.scan_prefix(CF_VIEW_HOLDS, b"n")? {
            let (Some(node), Some(until)) = (k.get(1..).and_then(read_u64), crate::db::read_i64(&v)) else {
                continue;
            };
            if until >= now {
                live.insert(node);
            }
        }
        Ok(live)
    }

    /// Shared store: releases the held entries of `mailbox` that no live hold needs.
    fn release_held_shared(&self, mailbox_id: u64) -> StoreResult<usize> {
        // Entries first, holds after: a hold that still shows an entry is older than it.
        let mut entries = Vec::new();
        for (k, v) in self.scan_prefix(CF_HELD, &u64_key(mailbox_id))? {
            let held: HeldMessage = decode(CF_HELD, &v)?;
            entries.push((k, v, held));
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let live = self.live_nodes()?;
        let mut horizon = u64::MAX;
        for (k, v) in self.scan_prefix(CF_VIEW_HOLDS, &hold_prefix(mailbox_id))? {
            match (split_hold_key(&k), read_u64(&v)) {
                (Some((_, node)), Some(h)) if live.contains(&node) => horizon = horizon.min(h),
                _ => {}
            }
        }
        let due: Vec<(u64, Box<[u8]>, MessageRecord)> = entries
            .into_iter()
            .filter(|(_, _, held)| held.expunged_modseq <= horizon)
            .map(|(_, raw, held)| (mailbox_id, raw, held.record))
            .collect();
        self.release_records(due, true)
    }

    fn release_held_shared_logged(&self, mailbox_id: u64) {
        if let Err(err) = self.release_held_shared(mailbox_id) {
            // Tried again at the next change of the mailbox, or the next sweep.
            tracing::error!(%err, mailbox = mailbox_id, "store: releasing held bodies failed");
        }
    }

    /// Shared store, on the leading node: deletes the rows of nodes whose lease ended
    /// and releases every entry no live hold needs. Returns the entries released.
    pub fn sweep_view_holds(&self) -> StoreResult<usize> {
        if !self.shared() {
            return Ok(0);
        }
        let live = self.live_nodes()?;
        let mut batch = Batch::default();
        for (k, _) in self.scan_prefix(CF_VIEW_HOLDS, b"n")? {
            if k.get(1..).and_then(read_u64).is_some_and(|n| !live.contains(&n)) {
                batch.delete(CF_VIEW_HOLDS, &k);
            }
        }
        for (k, _) in self.scan_prefix(CF_VIEW_HOLDS, b"h")? {
            if split_hold_key(&k).is_some_and(|(_, node)| !live.contains(&node)) {
                batch.delete(CF_VIEW_HOLDS, &k);
            }
        }
        if !batch.ops.is_empty() {
            tracing::info!(
                rows = batch.ops.len(),
                "store: dropping view holds of nodes whose lease ended"
            );
            self.commit_lazy(batch)?;
        }
        let mut mailboxes = BTreeSet::new();
        for item in self.iter(CF_HELD, IterMode::Start)? {
            let (k, _) = item?;
            if let Some((mailbox, _)) = split_message_key(&k) {
                mailboxes.insert(mailbox);
            }
        }
        let mut released = 0;
        for mailbox in mailboxes {
            released += self.release_held_shared(mailbox)?;
        }
        Ok(released)
    }

    /// Renews this node's lease for as long as the store is open, and sweeps on the
    /// leading node (shared store only).
    pub(crate) fn start_heartbeat(&self) {
        let weak: Weak<Inner> = std::sync::Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("view-holds".into())
            .spawn(move || loop {
                std::thread::sleep(HEARTBEAT);
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let store = Store { inner };
                let mut batch = Batch::default();
                batch.put(
                    CF_VIEW_HOLDS,
                    node_key(store.node_id()),
                    store.lease_end().to_be_bytes(),
                );
                if let Err(err) = store.commit_lazy(batch) {
                    tracing::warn!(%err, "store: renewing this node's view hold lease failed");
                }
                if store.inner.backend.leads() {
                    match store.sweep_view_holds() {
                        Ok(0) => {}
                        Ok(released) => {
                            tracing::info!(released, "store: released bodies held for ended views")
                        }
                        Err(err) => tracing::warn!(%err, "store: sweeping view holds failed"),
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(%err, "store: starting the view hold heartbeat failed");
        }
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
        if self.shared() {
            // The other nodes' entries are not in this process's registry: read them.
            self.release_held_shared_logged(mailbox_id);
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
            if let Some(raw) = self.get_raw(CF_HELD, &message_key(*mailbox, *uid))? {
                let held: HeldMessage = decode(CF_HELD, &raw)?;
                entries.push((*mailbox, raw.into_boxed_slice(), held.record));
            }
        }
        self.release_records(entries, false)
    }

    /// Deletes held entries (as read: mailbox, stored bytes, record) and their body
    /// references in one write. `fenced`: the write applies only if every entry is still
    /// exactly as read, so of two nodes releasing the same entry one does; the other
    /// releases nothing (0).
    fn release_records(
        &self,
        entries: Vec<(u64, Box<[u8]>, MessageRecord)>,
        fenced: bool,
    ) -> StoreResult<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut freed: BTreeMap<BlobId, i64> = BTreeMap::new();
        for (_, _, record) in &entries {
            *freed.entry(record.blob).or_default() += 1;
        }
        let locks: Vec<(&str, u64)> = freed.keys().map(blob_lock).collect();
        let _guards = self.lock(&locks)?;
        let mut batch = Batch::default();
        for (mailbox, raw, record) in &entries {
            let key = message_key(*mailbox, record.uid);
            if fenced {
                batch.expect(CF_HELD, key, raw);
            }
            self.delete(&mut batch, CF_HELD, &key)?;
        }
        for (blob, count) in freed {
            self.release_blob_into(&mut batch, &blob, count)?;
        }
        // Unsynced: lost in a crash, the entries are released again at the next open
        // (on a shared store, at the next sweep).
        match self.commit_lazy(batch) {
            Ok(()) => Ok(entries.len()),
            Err(StoreError::Conflict(_)) if fenced => Ok(0),
            Err(e) => Err(e),
        }
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
