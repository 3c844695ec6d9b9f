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

impl Store {
    /// Sets the function that summarises new bodies; the first call wins (the server
    /// sets it once at start). Bodies written before have no summary until
    /// [`Store::put_summary`] adds one.
    pub fn set_summariser(&self, summariser: Summariser) {
        let _ = self.inner.summariser.set(summariser);
    }

    /// For each UID that exists or is held for a view (others are left out), in the
    /// order given: its body id and the body's summary, if one was written. One snapshot.
    pub fn summaries(&self, user_id: u64, mailbox_id: u64, uids: &[u32]) -> StoreResult<Vec<SummaryEntry>> {
        let snapshot = self.snapshot()?;
        if self
            .get_json_at::<Mailbox>(snapshot.as_ref(), CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .is_none()
        {
            return Err(crate::StoreError::NotFound(format!("mailbox {mailbox_id}")));
        }
        let messages = CF_MESSAGES;
        let keys: Vec<[u8; 12]> = uids.iter().map(|u| message_key(mailbox_id, *u)).collect();
        let mut records = Vec::with_capacity(uids.len());
        for (uid, value) in uids
            .iter()
            .zip(snapshot.multi_get(messages, &keys.iter().map(|k| k.as_slice()).collect::<Vec<_>>())?)
        {
            if let Some(v) = value {
                let record: MessageRecord = decode(CF_MESSAGES, &v)?;
                records.push((*uid, record.blob));
            } else if let Some(v) = snapshot.get(CF_HELD, &message_key(mailbox_id, *uid))? {
                // Expunged, kept for a view that still shows it (`view_holds.rs`).
                let held: crate::view_holds::HeldMessage = decode(CF_HELD, &v)?;
                records.push((*uid, held.record.blob));
            }
        }
        let summaries = CF_SUMMARIES;
        let found = snapshot.multi_get(
            summaries,
            &records
                .iter()
                .map(|(_, blob)| blob.as_slice())
                .collect::<Vec<_>>(),
        )?;
        records
            .into_iter()
            .zip(found)
            .map(|((uid, blob), s)| Ok((uid, blob, s)))
            .collect()
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
