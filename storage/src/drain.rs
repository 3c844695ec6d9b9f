//! What the queue runner needs to drain a large queue quickly without giving up
//! exactly-once: a look at the due index that skips the entries the runner already owns
//! before reading them, and one synced write that records an attempt's outcome together
//! with the "attempt started" mark of the next entry the same connection will carry.

use std::collections::HashSet;

use crate::db::{Batch, Direction, IterMode, Store};

use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::*;
use crate::queue::AttemptOutcome;

/// An "attempt started" mark to write before a message is sent.
#[derive(Debug, Clone)]
pub struct AttemptMark {
    pub tracking_id: u64,
    pub event: TrackingEvent,
}

impl Store {
    /// Entries due at or before `now`, oldest attempt time first, at most `limit`, leaving
    /// out held entries and those in `skip` (the runner's own, in flight or waiting for a
    /// connection) without reading them: a drain owns thousands of entries at the front
    /// of the index and re-reading each of them on every look cost more than sending.
    ///
    /// The look starts at due time `from`: a drain leaves one deleted key per sent
    /// message at the front of the index, and iterating over 100,000 of them on every
    /// look was most of the cost of a look. Also returns the due time of the first key
    /// found (or `now` when none), below which the index held nothing.
    pub fn due_entries_except(
        &self,
        now: i64,
        limit: usize,
        skip: &HashSet<u64>,
        from: i64,
    ) -> StoreResult<(Vec<QueueEntry>, i64)> {
        let cf = CF_QUEUE_DUE;
        let mut out = Vec::new();
        let start = due_key(from, 0);
        let mut first = None;
        let iter = self.iter(cf, IterMode::From(&start, Direction::Forward))?;
        for item in iter {
            let (k, _) = item?;
            let Some((at, id)) = due_key_time(&k) else {
                continue;
            };
            first.get_or_insert(at);
            if at > now || out.len() >= limit {
                break;
            }
            if skip.contains(&id) {
                continue;
            }
            if let Some(entry) = self.queue_entry(id)? {
                if !entry.held {
                    out.push(entry);
                }
            }
        }
        Ok((out, first.unwrap_or(now).min(now)))
    }

    /// [`Store::record_attempt`] plus, in the same synced batch, the "attempt started"
    /// mark of the next message the caller will send (another entry). One fsync per
    /// message instead of two, and the rule still holds: this entry's outcome is durable
    /// before anything else happens to it, and the next message's mark is durable before
    /// it is sent.
    ///
    /// `lease`: the lease the attempt ran under ([`crate::lease`]). The outcome is
    /// recorded only if the entry still carries it (checked in the committing write
    /// too); otherwise nothing is written and the error is [`StoreError::Conflict`]: the
    /// entry was taken over and its new owner's attempt counts. With `keep_lease` (more
    /// recipients of the entry still to send in this attempt) the lease stays and the
    /// entry stays not due; otherwise the lease ends with this write.
    pub fn record_attempt_and_mark(
        &self,
        id: u64,
        outcomes: &[(String, AttemptOutcome)],
        next_attempt: i64,
        mark: Option<&AttemptMark>,
        lease: Option<(&Lease, bool)>,
    ) -> StoreResult<QueueEntry> {
        let missing = || StoreError::NotFound(format!("queue entry {id}"));
        // Same locks as `record_attempt` (entry, body stripe, tracking log) plus the next
        // message's tracking log, all taken in one call so the global order holds.
        let before = self.queue_entry(id)?.ok_or_else(missing)?;
        let mut keys = vec![
            ("queue", id),
            ("blob", u64::from_be_bytes(first8(&before.blob))),
            ("tracking", before.tracking_id),
        ];
        if let Some(m) = mark {
            keys.push(("tracking", m.tracking_id));
        }
        let _guards = self.lock(&keys)?;
        let (mut entry, raw) = self.queue_entry_raw(id)?.ok_or_else(missing)?;
        let mut batch = Batch::default();
        let mut next_attempt = next_attempt;
        match lease {
            Some((lease, keep)) => {
                crate::lease::fence(&mut batch, id, &entry, &raw, lease)?;
                if keep {
                    next_attempt = entry.next_attempt;
                } else {
                    entry.lease = None;
                }
            }
            None => entry.lease = None,
        }
        let mut events = crate::queue::apply_outcomes(&mut entry, outcomes, self.now());
        self.reschedule_into(&mut batch, &mut entry, next_attempt)?;
        match mark {
            // Two messages of one delivery (sibling entries) share a log: one append.
            Some(m) if m.tracking_id == entry.tracking_id => {
                events.push(m.event.clone());
                self.tracking_into(&mut batch, entry.tracking_id, &events)?;
            }
            Some(m) => {
                self.tracking_into(&mut batch, entry.tracking_id, &events)?;
                self.tracking_into(&mut batch, m.tracking_id, std::slice::from_ref(&m.event))?;
            }
            None => self.tracking_into(&mut batch, entry.tracking_id, &events)?,
        }
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(entry)
    }
}

fn first8(blob: &BlobId) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blob[..8]);
    out
}
