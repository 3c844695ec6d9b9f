//! Summaries kept beside bodies: a few hundred octets per body that the server's
//! summariser computes once, when the body is first written (the IMAP crate's SORT and
//! THREAD keys: dates, addresses, base subject, message ids), so that sorting or
//! threading a 50,000-message mailbox reads these instead of parsing every body. The
//! store treats them as opaque bytes: written in the body's batch, deleted with it.

use crate::db::{decode, Store, Summariser};
use crate::error::StoreResult;
use crate::keys::*;
use crate::mailbox::blob_lock;
use crate::model::*;

/// A message's UID, its body id and that body's summary if one was written.
pub type SummaryEntry = (u32, BlobId, Option<Vec<u8>>);

/// From this many UIDs asked, the mailbox's sort keys are read in one ordered scan
/// rather than one by one.
const SCAN_FROM: usize = 256;

impl Store {
    /// Sets the function that summarises new bodies; the first call wins (the server
    /// sets it once at start). Bodies written before have no summary until
    /// [`Store::put_summary`] adds one.
    pub fn set_summariser(&self, summariser: Summariser) {
        let _ = self.inner.summariser.set(summariser);
    }

    /// For each UID that exists or is held for a view (others are left out), in the
    /// order given: its body id and the body's summary, if one was written. One snapshot.
    /// The summaries come from `sort_keys` (one ordered scan of the mailbox when many are
    /// asked, as by a SORT of all of it: no message record or body is read); a message
    /// stored before sort keys existed is looked up through its record and the body's
    /// summary, and its sort key written then, so that the next look-up finds it.
    pub fn summaries(&self, user_id: u64, mailbox_id: u64, uids: &[u32]) -> StoreResult<Vec<SummaryEntry>> {
        let snapshot = self.snapshot()?;
        if self
            .get_json_at::<Mailbox>(snapshot.as_ref(), CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .is_none()
        {
            return Err(crate::StoreError::NotFound(format!("mailbox {mailbox_id}")));
        }
        let mut found: Vec<Option<SummaryEntry>> = vec![None; uids.len()];
        let split = |uid: u32, v: &[u8]| -> Option<SummaryEntry> {
            let blob = BlobId::try_from(v.get(..32)?).ok()?;
            Some((uid, blob, Some(v[32..].to_vec())))
        };
        if uids.len() >= SCAN_FROM {
            let mut keyed: Vec<(u32, Box<[u8]>)> = Vec::new();
            for (k, v) in self.scan_prefix_at(snapshot.as_ref(), CF_SORT_KEYS, &u64_key(mailbox_id))? {
                if let Some((_, uid)) = split_message_key(&k) {
                    keyed.push((uid, v));
                }
            }
            for (slot, uid) in found.iter_mut().zip(uids) {
                if let Ok(i) = keyed.binary_search_by_key(uid, |(u, _)| *u) {
                    *slot = split(*uid, &keyed[i].1);
                }
            }
        } else {
            let keys: Vec<[u8; 12]> = uids.iter().map(|u| message_key(mailbox_id, *u)).collect();
            let values = snapshot.multi_get(
                CF_SORT_KEYS,
                &keys.iter().map(|k| k.as_slice()).collect::<Vec<_>>(),
            )?;
            for ((slot, uid), value) in found.iter_mut().zip(uids).zip(values) {
                *slot = value.and_then(|v| split(*uid, &v));
            }
        }
        // The rest: through the record (or the held entry) and the body's summary.
        let missing: Vec<(usize, u32)> = found
            .iter()
            .zip(uids)
            .enumerate()
            .filter(|(_, (slot, _))| slot.is_none())
            .map(|(i, (_, uid))| (i, *uid))
            .collect();
        let mut backfill = Vec::new();
        if !missing.is_empty() {
            let keys: Vec<[u8; 12]> = missing.iter().map(|(_, u)| message_key(mailbox_id, *u)).collect();
            let values = snapshot.multi_get(
                CF_MESSAGES,
                &keys.iter().map(|k| k.as_slice()).collect::<Vec<_>>(),
            )?;
            let mut records = Vec::with_capacity(missing.len());
            for ((i, uid), value) in missing.iter().zip(values) {
                if let Some(v) = value {
                    let record: MessageRecord = decode(CF_MESSAGES, &v)?;
                    records.push((*i, *uid, record.blob, true));
                } else if let Some(v) = snapshot.get(CF_HELD, &message_key(mailbox_id, *uid))? {
                    // Expunged, kept for a view that still shows it (`view_holds.rs`).
                    let held: crate::view_holds::HeldMessage = decode(CF_HELD, &v)?;
                    records.push((*i, *uid, held.record.blob, false));
                }
            }
            let summaries = snapshot.multi_get(
                CF_SUMMARIES,
                &records
                    .iter()
                    .map(|(_, _, blob, _)| blob.as_slice())
                    .collect::<Vec<_>>(),
            )?;
            for ((i, uid, blob, live), summary) in records.into_iter().zip(summaries) {
                if let (true, Some(s)) = (live, &summary) {
                    backfill.push((uid, blob, s.clone()));
                }
                if let Some(slot) = found.get_mut(i) {
                    *slot = Some((uid, blob, summary));
                }
            }
        }
        drop(snapshot);
        if !backfill.is_empty() {
            self.put_sort_keys(mailbox_id, &backfill)?;
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Writes the sort keys of messages stored before there were any (unsynced: they can
    /// be written again), for those whose record still holds that body.
    fn put_sort_keys(&self, mailbox_id: u64, entries: &[(u32, BlobId, Vec<u8>)]) -> StoreResult<()> {
        let _guard = self.lock(&[crate::mailbox::mailbox_lock(mailbox_id)])?;
        let mut batch = crate::db::Batch::default();
        for (uid, blob, summary) in entries {
            let key = message_key(mailbox_id, *uid);
            let live = self
                .get_json::<MessageRecord>(CF_MESSAGES, &key)?
                .is_some_and(|r| r.blob == *blob);
            if live {
                batch.put(CF_SORT_KEYS, key, crate::mailbox::sort_key_value(blob, summary));
            }
        }
        self.commit_lazy(batch)
    }

    /// Fills in the `sent_date` of records written without one (before the field
    /// existed, or with no summariser set): `dates` are (UID, sent date) as IMAP worked
    /// them out from the bodies' summaries. Records that have one, or are gone, are left
    /// alone; the modseq does not change (no client sees the field). Unsynced: it can be
    /// worked out again.
    pub fn put_sent_dates(&self, mailbox_id: u64, dates: &[(u32, i64)]) -> StoreResult<()> {
        let _guard = self.lock(&[crate::mailbox::mailbox_lock(mailbox_id)])?;
        let keys: Vec<[u8; 12]> = dates.iter().map(|(u, _)| message_key(mailbox_id, *u)).collect();
        let snapshot = self.snapshot()?;
        let values = snapshot.multi_get(
            CF_MESSAGES,
            &keys.iter().map(|k| k.as_slice()).collect::<Vec<_>>(),
        )?;
        drop(snapshot);
        let mut batch = crate::db::Batch::default();
        for ((key, (_, date)), value) in keys.iter().zip(dates).zip(values) {
            let Some(value) = value else { continue };
            let mut record: MessageRecord = decode(CF_MESSAGES, &value)?;
            if record.sent_date.is_none() {
                record.sent_date = Some(*date);
                self.put_json(&mut batch, CF_MESSAGES, key, &record)?;
            }
        }
        self.commit_lazy(batch)
    }

    /// Adds the summary of a body written before a summariser was set. Unsynced: it can
    /// be computed again. Nothing is written if the body is gone meanwhile.
    pub fn put_summary(&self, blob: &BlobId, summary: &[u8]) -> StoreResult<()> {
        let _guard = self.lock(&[blob_lock(blob)])?;
        if !self.blob_exists(blob)? {
            return Ok(());
        }
        let mut batch = crate::db::Batch::default();
        batch.put(CF_SUMMARIES, blob, summary);
        self.commit_lazy(batch)?;
        Ok(())
    }
}
