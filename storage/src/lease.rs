//! Queue leases: how the queue runners of several nodes drain one queue without sending
//! an entry twice, and how a dead node's entries are taken over.
//!
//! A runner claims the due entries it is about to send in one synced write: each gets a
//! [`Lease`] (this node, a claim number, an end time) and its next attempt moves to the
//! lease's end, so no other runner finds it due while the lease runs (`SKIP LOCKED` by
//! the due index). The outcome of an attempt is recorded only if the entry still carries
//! the lease it was attempted under ([`Store::record_attempt_and_mark`]): the check is
//! made under the entry's lock and again in the committing write (`Op::Expect`, a row
//! lock and comparison inside the PostgreSQL transaction), so an outcome from a node
//! whose lease another node has claimed since is discarded, never written over the new
//! owner's. A runner that outlives its lease renews it ([`Store::renew_lease`]); one that
//! dies leaves its entries due at their lease's end, where any runner claims them.
//!
//! RocksDB runs the same code with one node; a lease left by a previous run of the
//! process is released when the runner starts ([`Store::release_stale_leases`]).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;

use crate::db::{decode, Batch, Direction, IterMode, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::{Lease, QueueEntry};

/// A node id nobody else picks: random keys of the standard library's hasher, over the
/// process id and the time.
pub(crate) fn new_node_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

impl Store {
    /// This open store's id in queue leases (one per process and open store).
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// An entry and its stored bytes (what a fenced write expects to find).
    pub(crate) fn queue_entry_raw(&self, id: u64) -> StoreResult<Option<(QueueEntry, Vec<u8>)>> {
        match self.get_raw(CF_QUEUE, &u64_key(id))? {
            Some(raw) => Ok(Some((decode(CF_QUEUE, &raw)?, raw))),
            None => Ok(None),
        }
    }

    /// Claims for this node, for `secs` seconds from `now`, those of `ids` that are still
    /// due at `now`, not held and not finished, in one synced write; returns them as
    /// claimed (lease set, next attempt at its end). An entry another runner claimed
    /// since it was found due is not due any more and is left out.
    pub fn claim_entries(&self, ids: &[u64], now: i64, secs: i64) -> StoreResult<Vec<QueueEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(&str, u64)> = ids.iter().map(|id| ("queue", *id)).collect();
        let _guard = self.lock(&keys)?;
        let mut batch = Batch::default();
        let mut claimed = Vec::new();
        for id in ids {
            let Some((mut entry, raw)) = self.queue_entry_raw(*id)? else {
                continue;
            };
            if entry.next_attempt > now || entry.held || entry.is_done() {
                continue;
            }
            if let Some(old) = entry.lease.filter(|l| l.node != self.node_id()) {
                tracing::warn!(
                    queue = entry.id,
                    node = format!("{:016x}", old.node),
                    "queue entry taken over: the node attempting it let its lease run out"
                );
            }
            let lease = Lease {
                node: self.node_id(),
                claim: self.inner.claims.fetch_add(1, Ordering::Relaxed) + 1,
                until: now + secs,
            };
            batch.expect(CF_QUEUE, u64_key(entry.id), &raw);
            batch.delete(CF_QUEUE_DUE, due_key(entry.next_attempt, entry.id));
            entry.lease = Some(lease);
            entry.next_attempt = lease.until;
            self.put_json(&mut batch, CF_QUEUE, &u64_key(entry.id), &entry)?;
            batch.put(CF_QUEUE_DUE, due_key(entry.next_attempt, entry.id), b"");
            claimed.push(entry);
        }
        if claimed.is_empty() {
            return Ok(claimed);
        }
        self.commit(batch)?;
        for entry in &claimed {
            self.note_queue_entry(entry);
        }
        Ok(claimed)
    }

    /// Extends `lease` to `now + secs`; None when the entry is gone or no longer under
    /// that lease (another node claimed it after it ran out).
    pub fn renew_lease(
        &self,
        id: u64,
        lease: &Lease,
        now: i64,
        secs: i64,
    ) -> StoreResult<Option<QueueEntry>> {
        let _guard = self.lock(&[("queue", id)])?;
        let Some((mut entry, raw)) = self.queue_entry_raw(id)? else {
            return Ok(None);
        };
        if entry.lease.as_ref() != Some(lease) {
            return Ok(None);
        }
        let renewed = Lease {
            until: (now + secs).max(lease.until),
            ..*lease
        };
        let mut batch = Batch::default();
        batch.expect(CF_QUEUE, u64_key(id), &raw);
        batch.delete(CF_QUEUE_DUE, due_key(entry.next_attempt, id));
        entry.lease = Some(renewed);
        if !entry.held {
            entry.next_attempt = renewed.until;
        }
        self.put_json(&mut batch, CF_QUEUE, &u64_key(id), &entry)?;
        batch.put(CF_QUEUE_DUE, due_key(entry.next_attempt, id), b"");
        match self.commit(batch) {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        self.note_queue_entry(&entry);
        Ok(Some(entry))
    }

    /// Gives up leases without an attempt (a runner stopping, a store error): each entry
    /// still under its lease is due at `at` again. Not synced: a release lost in a crash
    /// only delays the entry until the lease's end.
    pub fn release_leases(&self, leases: &[(u64, Lease)], at: i64) -> StoreResult<usize> {
        if leases.is_empty() {
            return Ok(0);
        }
        let keys: Vec<(&str, u64)> = leases.iter().map(|(id, _)| ("queue", *id)).collect();
        let _guard = self.lock(&keys)?;
        let mut batch = Batch::default();
        let mut released = Vec::new();
        for (id, lease) in leases {
            let Some((mut entry, raw)) = self.queue_entry_raw(*id)? else {
                continue;
            };
            if entry.lease.as_ref() != Some(lease) {
                continue;
            }
            batch.expect(CF_QUEUE, u64_key(*id), &raw);
            batch.delete(CF_QUEUE_DUE, due_key(entry.next_attempt, *id));
            entry.lease = None;
            if !entry.held {
                entry.next_attempt = at;
            }
            self.put_json(&mut batch, CF_QUEUE, &u64_key(*id), &entry)?;
            batch.put(CF_QUEUE_DUE, due_key(entry.next_attempt, *id), b"");
            released.push(entry);
        }
        if released.is_empty() {
            return Ok(0);
        }
        self.commit_lazy(batch)?;
        for entry in &released {
            self.note_queue_entry(entry);
        }
        Ok(released.len())
    }

    /// With one node (RocksDB), any lease found when the runner starts was left by an
    /// earlier run of the process, killed while attempting: those entries are due at
    /// `now` again instead of at their lease's end. Looks at the due index from `now` to
    /// `now + horizon` (where such leases end). Does nothing on a shared store, where
    /// the lease may be another running node's.
    pub fn release_stale_leases(&self, now: i64, horizon: i64) -> StoreResult<usize> {
        if self.shared() {
            return Ok(0);
        }
        let start = due_key(now, 0);
        let mut leased = Vec::new();
        for item in self.iter(CF_QUEUE_DUE, IterMode::From(&start, Direction::Forward))? {
            let (k, _) = item?;
            let Some((at, id)) = due_key_time(&k) else {
                continue;
            };
            if at > now.saturating_add(horizon) {
                break;
            }
            if let Some(entry) = self.queue_entry(id)? {
                if let Some(lease) = entry.lease.filter(|l| l.node != self.node_id()) {
                    leased.push((id, lease));
                }
            }
        }
        self.release_leases(&leased, now)
    }
}

/// The fenced part of recording an outcome: the entry as stored must still carry
/// `lease`; its bytes go into the batch as the write's precondition.
pub(crate) fn fence(
    batch: &mut Batch,
    id: u64,
    entry: &QueueEntry,
    raw: &[u8],
    lease: &Lease,
) -> StoreResult<()> {
    if entry.lease.as_ref() != Some(lease) {
        return Err(StoreError::Conflict(format!(
            "queue entry {id}: the lease this attempt ran under was taken over"
        )));
    }
    batch.expect(CF_QUEUE, u64_key(id), raw);
    Ok(())
}
