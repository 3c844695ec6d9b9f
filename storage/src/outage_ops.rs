//! Support for the outage monitor and the queue/track admin commands: the monitor's
//! small per-domain memo (what it already announced), a per-domain summary of the queue,
//! and a tracking search by address.

use std::collections::HashMap;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::db::{decode, Store};
use crate::error::StoreResult;
use crate::keys::*;
use crate::model::{QueueEntry, QueueKind, TrackingEvent};

/// What the monitor already announced for a domain, so a restart neither repeats nor
/// forgets a notification. Kept in the `outage` key space under `domain 0x00 "memo"`
/// (a domain name never contains NUL, so it cannot collide with a state record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutageMemo {
    /// `since` of the outage whose "spooling began" notice went out.
    pub spooling_notified_since: Option<i64>,
    /// When the last "still draining" reminder went out.
    pub last_reminder_at: Option<i64>,
}

/// The queue of one domain at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// Relay entries (mail for the primary) still pending.
    pub relay_depth: usize,
    pub oldest_relay: Option<i64>,
    pub newest_relay: Option<i64>,
    /// Every entry of the domain, whatever its kind.
    pub total: usize,
    pub oldest: Option<i64>,
}

fn memo_key(domain: &str) -> Vec<u8> {
    let mut key = domain.to_ascii_lowercase().into_bytes();
    key.extend_from_slice(b"\0memo");
    key
}

impl QueueSummary {
    fn add(&mut self, entry: &QueueEntry) {
        let at = entry.created_at;
        self.total += 1;
        self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
        if entry.kind == QueueKind::Relay {
            self.relay_depth += 1;
            self.oldest_relay = Some(self.oldest_relay.map_or(at, |o| o.min(at)));
            self.newest_relay = Some(self.newest_relay.map_or(at, |o| o.max(at)));
        }
    }
}

impl Store {
    pub fn outage_memo(&self, domain: &str) -> StoreResult<OutageMemo> {
        Ok(self.get_json(CF_OUTAGE, &memo_key(domain))?.unwrap_or_default())
    }

    /// Synced: a memo lost in a crash would repeat a notification.
    pub fn set_outage_memo(&self, domain: &str, memo: &OutageMemo) -> StoreResult<()> {
        let mut batch = WriteBatch::default();
        self.put_json(&mut batch, CF_OUTAGE, &memo_key(domain), memo)?;
        self.commit(batch)
    }

    /// Queue summary per (lower-case) domain. Entries are removed when no recipient is
    /// pending, so every entry counts. From the in-memory queue index: one scan of the
    /// queue per process, then a look-up per domain (the monitor asks every second).
    pub fn queue_summaries(&self) -> StoreResult<HashMap<String, QueueSummary>> {
        self.with_queue_index(|index| index.summaries())
    }

    /// The same summary by a full scan of the queue (what the index must agree with).
    pub fn queue_summaries_scanned(&self) -> StoreResult<HashMap<String, QueueSummary>> {
        let mut out: HashMap<String, QueueSummary> = HashMap::new();
        for (_, v) in self.scan_prefix(CF_QUEUE, b"")? {
            let entry: QueueEntry = decode(CF_QUEUE, &v)?;
            out.entry(entry.domain.to_ascii_lowercase())
                .or_default()
                .add(&entry);
        }
        Ok(out)
    }

    /// Tracking ids of messages with an event at or after `since` whose text mentions
    /// `needle` (case-insensitive), oldest first. A full scan: an admin look-up, not a
    /// server path.
    pub fn tracking_ids_mentioning(&self, needle: &str, since: Option<i64>) -> StoreResult<Vec<u64>> {
        let needle = needle.to_ascii_lowercase();
        let mut out: Vec<u64> = Vec::new();
        for (k, v) in self.scan_prefix(CF_TRACKING, b"")? {
            let Some(id) = k.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                continue;
            };
            if out.last() == Some(&id) {
                continue;
            }
            let event: TrackingEvent = decode(CF_TRACKING, &v)?;
            if since.is_some_and(|s| event.at < s) {
                continue;
            }
            if event.detail.to_ascii_lowercase().contains(&needle) {
                out.push(id);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mailbox::DeliveryRequest;
    use crate::model::NewQueueEntry;
    use crate::outage::OutageState;
    use crate::{ManualClock, StoreOptions};

    fn queue(store: &Store, kind: QueueKind, domain: &str, from: &str, at: i64) {
        store
            .deliver(&DeliveryRequest {
                body: format!("Subject: {at}\r\n\r\nx\r\n").as_bytes(),
                users: vec![],
                queue: vec![NewQueueEntry {
                    kind,
                    domain: domain.into(),
                    mail_from: from.into(),
                    recipients: vec![("anna@example.com".into(), None)],
                    next_attempt: at,
                    sent_copy: false,
                }],
                message_id: None,
                summary: format!("from <{from}> to anna@example.com"),
            })
            .unwrap();
    }

    #[test]
    fn memo_summaries_and_address_search() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();

        // The memo lives beside the state without disturbing it.
        let state = OutageState {
            since: 5,
            ..OutageState::default()
        };
        store.set_outage_state("Example.com", &state).unwrap();
        let memo = OutageMemo {
            spooling_notified_since: Some(5),
            last_reminder_at: Some(7),
        };
        store.set_outage_memo("example.com", &memo).unwrap();
        assert_eq!(store.outage_memo("EXAMPLE.com").unwrap(), memo);
        assert_eq!(store.outage_state("example.com").unwrap(), state);
        assert_eq!(store.outage_memo("other.org").unwrap(), OutageMemo::default());

        queue(&store, QueueKind::Relay, "example.com", "a@x.net", 1_000);
        clock.advance(100);
        queue(&store, QueueKind::Relay, "example.com", "b@y.net", 1_100);
        queue(
            &store,
            QueueKind::Notification,
            "example.com",
            "understudy@mx",
            1_100,
        );
        let summaries = store.queue_summaries().unwrap();
        let s = summaries["example.com"];
        assert_eq!((s.relay_depth, s.total), (2, 3));
        assert_eq!((s.oldest_relay, s.newest_relay), (Some(1_000), Some(1_100)));
        assert!(!summaries.contains_key("other.org"));

        assert_eq!(store.tracking_ids_mentioning("A@X.NET", None).unwrap().len(), 1);
        assert_eq!(
            store
                .tracking_ids_mentioning("anna@example.com", None)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            store
                .tracking_ids_mentioning("anna@example.com", Some(1_050))
                .unwrap()
                .len(),
            2
        );
        assert!(store
            .tracking_ids_mentioning("nobody@z", None)
            .unwrap()
            .is_empty());
    }
}
