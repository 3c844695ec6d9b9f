//! Message tracking: every message's events (received, stored, queued, each attempt,
//! delivered, bounced, deleted, expired) by tracking id or Message-ID.

use rocksdb::WriteBatch;

use crate::db::{decode, Store};
use crate::error::StoreResult;
use crate::keys::*;
use crate::model::TrackingEvent;

impl Store {
    /// Events of one message in the order they happened.
    pub fn tracking_events(&self, tracking_id: u64) -> StoreResult<Vec<TrackingEvent>> {
        self.scan_prefix(CF_TRACKING, &u64_key(tracking_id))?
            .iter()
            .map(|(_, v)| decode(CF_TRACKING, v))
            .collect()
    }

    /// Tracking ids of messages with this Message-ID (a resent message has several).
    pub fn tracking_ids_for_message_id(&self, message_id: &str) -> StoreResult<Vec<u64>> {
        let mut prefix = message_id.as_bytes().to_vec();
        prefix.push(0);
        Ok(self
            .scan_prefix(CF_MESSAGE_IDS, &prefix)?
            .iter()
            .filter_map(|(k, _)| {
                k.get(prefix.len()..)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
            })
            .collect())
    }

    /// Appends events to a message's log in one synced write.
    pub fn add_tracking_events(&self, tracking_id: u64, events: &[TrackingEvent]) -> StoreResult<()> {
        let _guard = self.lock(&[("tracking", tracking_id)]);
        let mut batch = WriteBatch::default();
        self.tracking_into(&mut batch, tracking_id, events)?;
        self.commit(batch)
    }

    /// Puts events after the last recorded one. Callers serialise per tracking id (the
    /// queue lock or the tracking lock).
    pub(crate) fn tracking_into(
        &self,
        batch: &mut WriteBatch,
        tracking_id: u64,
        events: &[TrackingEvent],
    ) -> StoreResult<()> {
        if events.is_empty() || tracking_id == 0 {
            return Ok(());
        }
        let next = self.scan_prefix(CF_TRACKING, &u64_key(tracking_id))?.len() as u32;
        for (i, event) in events.iter().enumerate() {
            self.put_json(
                batch,
                CF_TRACKING,
                &tracking_key(tracking_id, next + i as u32),
                event,
            )?;
        }
        Ok(())
    }
}
