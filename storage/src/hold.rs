//! `queue hold|release DOMAIN`: a per-domain hold flag (so mail that arrives while the
//! domain is held is held too) and holding or releasing a domain's entries in one write.
//! Notices to the domain's alert recipients are not held.
//!
//! A held entry's next attempt moves to the end of time ([`HELD_DUE`]), out of the due
//! range, so the queue runner never reads it while looking for due mail (100,000 held
//! entries at the front of the due index were read and skipped on every look); release
//! makes them due at once.

use crate::db::Batch;

use crate::db::Store;
use crate::error::StoreResult;
use crate::keys::*;
use crate::model::{QueueEntry, QueueKind};

/// Next attempt of a held entry: 9999-12-31 23:59:59 UTC.
pub const HELD_DUE: i64 = 253_402_300_799;

fn hold_key(domain: &str) -> Vec<u8> {
    let mut key = domain.to_ascii_lowercase().into_bytes();
    key.extend_from_slice(b"\0hold");
    key
}

impl Store {
    /// Whether `queue hold DOMAIN` is in force for the domain.
    pub fn domain_held(&self, domain: &str) -> StoreResult<bool> {
        Ok(self
            .get_json::<bool>(CF_OUTAGE, &hold_key(domain))?
            .unwrap_or(false))
    }

    /// Sets or clears the domain's hold flag (synced) and holds or releases these entries
    /// (a released entry is due at `now`). Returns how many entries changed.
    pub fn set_domain_held(&self, domain: &str, held: bool, now: i64) -> StoreResult<usize> {
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_OUTAGE, &hold_key(domain), &held)?;
        self.commit(batch)?;
        let ids: Vec<u64> = self
            .queue_entries(Some(domain))?
            .into_iter()
            // Notices to the alert recipients are never held: they say what is going on.
            .filter(|e| e.held != held && (!held || e.kind != QueueKind::Notification))
            .map(|e| e.id)
            .collect();
        self.set_entries_held(&ids, held, now)
    }

    /// Holds (next attempt [`HELD_DUE`]) or releases (due at `now`) entries in one synced
    /// write; entries already in that state or gone are left alone. Returns the count.
    pub fn set_entries_held(&self, ids: &[u64], held: bool, now: i64) -> StoreResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys: Vec<(&str, u64)> = ids.iter().map(|id| ("queue", *id)).collect();
        let _guard = self.lock(&keys)?;
        let due_cf = CF_QUEUE_DUE;
        let mut batch = Batch::default();
        let mut changed = Vec::new();
        for id in ids {
            let Some(mut entry) = self.get_json::<QueueEntry>(CF_QUEUE, &u64_key(*id))? else {
                continue;
            };
            if entry.held == held || entry.is_done() {
                continue;
            }
            batch.delete(due_cf, due_key(entry.next_attempt, entry.id));
            entry.held = held;
            // Released while a runner attempts it: due when the lease ends.
            let due = entry.live_lease(now).map_or(now, |l| l.until.max(now));
            entry.next_attempt = if held { HELD_DUE } else { due };
            self.put_json(&mut batch, CF_QUEUE, &u64_key(entry.id), &entry)?;
            batch.put(due_cf, due_key(entry.next_attempt, entry.id), b"");
            changed.push(entry);
        }
        self.commit(batch)?;
        for entry in &changed {
            self.note_queue_entry(entry);
        }
        Ok(changed.len())
    }
}
