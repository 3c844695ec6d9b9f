//! Message tracking: every message's events (received, stored, queued, each attempt,
//! delivered, bounced, deleted, expired) by tracking id or Message-ID.

use crate::db::Batch;

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
        let _guard = self.lock(&[("tracking", tracking_id)])?;
        let mut batch = Batch::default();
        self.tracking_into(&mut batch, tracking_id, events)?;
        self.commit(batch)
    }

    /// Puts events after the last recorded one. Callers serialise per tracking id (the
    /// queue lock or the tracking lock).
    pub(crate) fn tracking_into(
        &self,
        batch: &mut Batch,
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

/// A message's tracking id as people and other systems see it: in the `250 ... queued
/// as` reply, the `Received` header's `id`, the log, `track` and `queue` output. Upper
/// case hex, at least ten digits (`000000002A`), so it is one token that a spam
/// filter's log keeps and `understudy track ID` reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackingId(pub u64);

impl std::fmt::Display for TrackingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:010X}", self.0)
    }
}

impl std::str::FromStr for TrackingId {
    type Err = String;

    /// Hex digits, any case, leading zeros optional (at most 16 digits).
    fn from_str(text: &str) -> Result<TrackingId, String> {
        let t = text.trim();
        if t.is_empty() || t.len() > 16 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "'{text}' is not a tracking id (hex digits, as in `250 2.0.0 Ok: queued as 000000002A`)"
            ));
        }
        u64::from_str_radix(t, 16)
            .map(TrackingId)
            .map_err(|e| format!("'{text}' is not a tracking id: {e}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::TrackingId;

    #[test]
    fn tracking_ids_print_and_parse_back() {
        assert_eq!(TrackingId(42).to_string(), "000000002A");
        assert_eq!(TrackingId(u64::MAX).to_string(), "FFFFFFFFFFFFFFFF");
        assert_eq!("000000002a".parse::<TrackingId>().unwrap(), TrackingId(42));
        assert_eq!("2A".parse::<TrackingId>().unwrap(), TrackingId(42));
        assert!("queue 5".parse::<TrackingId>().is_err());
        assert!("".parse::<TrackingId>().is_err());
        assert!("1FFFFFFFFFFFFFFFF".parse::<TrackingId>().is_err());
    }
}
