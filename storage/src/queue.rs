//! The relay and outbound queue: per-recipient status, a next-attempt index, and the
//! write API the redeliverer and outbound delivery use.

use crate::db::{decode, Batch, IterMode, Store};

use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::*;

/// Result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered(String),
    /// 4xx or time-out: try again later.
    Deferred(String),
    /// 5xx: give up on this recipient.
    Failed(String),
}

impl Store {
    pub fn queue_entry(&self, id: u64) -> StoreResult<Option<QueueEntry>> {
        self.get_json(CF_QUEUE, &u64_key(id))
    }

    /// Entries due at or before `now`, oldest attempt time first, at most `limit`.
    pub fn due_entries(&self, now: i64, limit: usize) -> StoreResult<Vec<QueueEntry>> {
        let cf = CF_QUEUE_DUE;
        let mut out = Vec::new();
        for item in self.iter(cf, IterMode::Start)? {
            let (k, _) = item?;
            let Some((at, id)) = due_key_time(&k) else {
                continue;
            };
            if at > now || out.len() >= limit {
                break;
            }
            if let Some(entry) = self.queue_entry(id)? {
                if !entry.held {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    /// All entries, optionally of one domain, in id (arrival) order.
    pub fn queue_entries(&self, domain: Option<&str>) -> StoreResult<Vec<QueueEntry>> {
        let mut out = Vec::new();
        for (_, v) in self.scan_prefix(CF_QUEUE, b"")? {
            let entry: QueueEntry = decode(CF_QUEUE, &v)?;
            if domain.is_none_or(|d| entry.domain.eq_ignore_ascii_case(d)) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Records the outcome of an attempt for some recipients in one synced write, and
    /// reschedules the entry (or removes it when no recipient is pending). Must be called
    /// before the next attempt may start: that is what keeps redelivery free of doubles.
    pub fn record_attempt(
        &self,
        id: u64,
        outcomes: &[(String, AttemptOutcome)],
        next_attempt: i64,
    ) -> StoreResult<QueueEntry> {
        let (_guards, mut entry) = self.lock_entry(id)?;
        let mut batch = Batch::default();
        entry.lease = None;
        let events = apply_outcomes(&mut entry, outcomes, self.now());
        self.reschedule_into(&mut batch, &mut entry, next_attempt)?;
        self.tracking_into(&mut batch, entry.tracking_id, &events)?;
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(entry)
    }

    /// Marks pending recipients with a final status (expired, cancelled) without an attempt.
    pub fn finish_recipients(
        &self,
        id: u64,
        addresses: &[String],
        status: RecipientStatus,
        reason: &str,
    ) -> StoreResult<QueueEntry> {
        let (_guards, mut entry) = self.lock_entry(id)?;
        let mut events = Vec::new();
        for r in entry.recipients.iter_mut() {
            if r.status == RecipientStatus::Pending
                && addresses.iter().any(|a| a.eq_ignore_ascii_case(&r.address))
            {
                r.status = status;
                r.last_reply = Some(reason.to_string());
                events.push(TrackingEvent {
                    at: self.now(),
                    kind: format!("{status:?}").to_lowercase(),
                    detail: format!("{}: {reason}", r.address),
                });
            }
        }
        let mut batch = Batch::default();
        let next = entry.next_attempt;
        self.reschedule_into(&mut batch, &mut entry, next)?;
        self.tracking_into(&mut batch, entry.tracking_id, &events)?;
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(entry)
    }

    /// Holds or releases an entry (`queue hold|release`).
    pub fn set_held(&self, id: u64, held: bool) -> StoreResult<()> {
        let _guard = self.lock(&[("queue", id)])?;
        let mut entry = self
            .queue_entry(id)?
            .ok_or_else(|| StoreError::NotFound(format!("queue entry {id}")))?;
        entry.held = held;
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_QUEUE, &u64_key(id), &entry)?;
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(())
    }

    /// Moves the next attempt to `at` (`queue retry`: now).
    /// An entry a runner is attempting (its lease running) stays out of the due range
    /// until the lease ends, so that no other runner sends it meanwhile.
    pub fn retry_at(&self, id: u64, at: i64) -> StoreResult<()> {
        let (_guards, mut entry) = self.lock_entry(id)?;
        let at = entry.live_lease(self.now()).map_or(at, |l| at.max(l.until));
        let mut batch = Batch::default();
        self.reschedule_into(&mut batch, &mut entry, at)?;
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(())
    }

    /// Deletes an entry and releases its body (`queue purge`).
    pub fn purge(&self, id: u64) -> StoreResult<()> {
        let (_guards, mut entry) = self.lock_entry(id)?;
        for r in entry
            .recipients
            .iter_mut()
            .filter(|r| r.status == RecipientStatus::Pending)
        {
            r.status = RecipientStatus::Cancelled;
        }
        let mut batch = Batch::default();
        let event = TrackingEvent {
            at: self.now(),
            kind: "purged".into(),
            detail: format!("queue {id} purged by admin"),
        };
        self.tracking_into(&mut batch, entry.tracking_id, &[event])?;
        let next = entry.next_attempt;
        self.reschedule_into(&mut batch, &mut entry, next)?;
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(())
    }

    /// Locks an entry, its body's stripe and its tracking log in one `lock` call and
    /// reads the entry under the lock. One call takes the stripes in the global order:
    /// taking the body's stripe while holding the entry's could deadlock two writers (or
    /// one, when both keys fall on the same stripe) as soon as the entry is finished and
    /// its body released. The tracking lock keeps sibling entries of one message (relay
    /// and outbound) from writing their events under the same sequence numbers.
    pub(crate) fn lock_entry(&self, id: u64) -> StoreResult<(crate::db::Held<'_>, QueueEntry)> {
        let missing = || StoreError::NotFound(format!("queue entry {id}"));
        // An entry's body and tracking id never change: reading them unlocked is safe.
        let before = self.queue_entry(id)?.ok_or_else(missing)?;
        let guards = self.lock(&[
            ("queue", id),
            ("blob", u64::from_be_bytes(first8(&before.blob))),
            ("tracking", before.tracking_id),
        ])?;
        let entry = self.queue_entry(id)?.ok_or_else(missing)?;
        Ok((guards, entry))
    }

    /// Writes the entry back with a new due time, or removes it (and its body reference)
    /// when nothing is pending. Callers hold the entry's and the body's locks
    /// ([`Store::lock_entry`]).
    pub(crate) fn reschedule_into(
        &self,
        batch: &mut Batch,
        entry: &mut QueueEntry,
        next_attempt: i64,
    ) -> StoreResult<()> {
        let due_cf = CF_QUEUE_DUE;
        batch.delete(due_cf, due_key(entry.next_attempt, entry.id));
        if entry.is_done() {
            self.delete(batch, CF_QUEUE, &u64_key(entry.id))?;
            self.release_blob_into(batch, &entry.blob, 1)?;
        } else {
            entry.next_attempt = next_attempt;
            self.put_json(batch, CF_QUEUE, &u64_key(entry.id), entry)?;
            batch.put(due_cf, due_key(next_attempt, entry.id), b"");
        }
        Ok(())
    }
}

fn first8(blob: &BlobId) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blob[..8]);
    out
}

/// Applies one attempt's per-recipient outcomes to `entry` (pending recipients only) and
/// returns the tracking events that record them.
pub(crate) fn apply_outcomes(
    entry: &mut QueueEntry,
    outcomes: &[(String, AttemptOutcome)],
    now: i64,
) -> Vec<TrackingEvent> {
    let mut events = Vec::new();
    for (address, outcome) in outcomes {
        let Some(r) = entry
            .recipients
            .iter_mut()
            .find(|r| r.address.eq_ignore_ascii_case(address))
        else {
            continue;
        };
        if r.status != RecipientStatus::Pending {
            continue;
        }
        r.attempts += 1;
        let (status, kind, reply) = match outcome {
            AttemptOutcome::Delivered(reply) => (RecipientStatus::Delivered, "delivered", reply),
            AttemptOutcome::Deferred(reply) => (RecipientStatus::Pending, "deferred", reply),
            AttemptOutcome::Failed(reply) => (RecipientStatus::Failed, "bounced", reply),
        };
        r.status = status;
        r.last_reply = Some(reply.clone());
        events.push(TrackingEvent {
            at: now,
            kind: kind.into(),
            detail: format!("{address}: {reply}"),
        });
    }
    events
}
