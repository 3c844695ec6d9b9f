//! Support for the outage monitor and the queue/track admin commands: the monitor's
//! small per-domain memo (what it already announced), a per-domain summary of the queue,
//! and a tracking search by address.

use std::collections::HashMap;

use crate::db::{decode, Batch, Direction, IterMode, Store};
use serde::{Deserialize, Serialize};

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
    /// When the current (or last) outage began: draining back into an outage keeps it,
    /// so the last notice's summary covers the whole episode.
    pub outage_started_at: Option<i64>,
    /// When the relay host was last probed, and why that probe failed (`None`: it
    /// answered), for the dashboard.
    pub last_probe_at: Option<i64>,
    pub last_probe_error: Option<String>,
}

/// What happened to a domain's mail for its primary since an outage began, per message:
/// the summary of the last notice ("all spooled mail released").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReport {
    /// Messages that came in from outside for the domain's users.
    pub received: usize,
    /// Messages the domain's users sent (their record for the primary).
    pub sent: usize,
    /// Of those, handed to the primary.
    pub delivered: usize,
    /// Not redelivered because the user deleted them here (recoverable until retention).
    pub cancelled: usize,
    /// Refused by the primary (5xx) or expired in the queue: bounced to the sender.
    pub bounced: usize,
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

pub(crate) fn memo_key(domain: &str) -> Vec<u8> {
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

    /// Synced: a memo lost in a crash would repeat a notification. The outage engine
    /// writes it with its notices instead (`Store::record_outage_change`).
    pub fn set_outage_memo(&self, domain: &str, memo: &OutageMemo) -> StoreResult<()> {
        let mut batch = Batch::default();
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

    /// The first tracking id whose first event is at or after `at` (tracking ids grow
    /// with time): a binary search of seeks, not a scan.
    fn first_tracking_id_since(&self, at: i64) -> StoreResult<u64> {
        let cf = CF_TRACKING;
        // (id, time) of the first message with an id of at least `id`.
        let first_from = |id: u64| -> StoreResult<Option<(u64, i64)>> {
            let key = u64_key(id);
            let mut iter = self.iter(cf, IterMode::From(&key, Direction::Forward))?;
            match iter.next() {
                Some(item) => {
                    let (k, v) = item?;
                    let Some(found) = k.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
                    else {
                        return Ok(None);
                    };
                    let event: TrackingEvent = decode(CF_TRACKING, &v)?;
                    Ok(Some((found, event.at)))
                }
                None => Ok(None),
            }
        };
        let (mut low, mut high) = (0u64, self.last_tracking_id()?.saturating_add(1));
        while low < high {
            let mid = low + (high - low) / 2;
            match first_from(mid)? {
                Some((found, when)) if when < at => low = found + 1,
                _ => high = mid,
            }
        }
        Ok(low)
    }

    /// Per message, what became of the mail for `domain`'s primary received since
    /// `since`: read from the tracking log of the messages since then.
    pub fn relay_report_since(&self, domain: &str, since: i64) -> StoreResult<RelayReport> {
        let domain = domain.to_ascii_lowercase();
        let in_domain = |address: &str| crate::address::domain_of(address) == domain;
        let first = self.first_tracking_id_since(since)?;
        let cf = CF_TRACKING;
        let key = u64_key(first);
        let iter = self.iter(cf, IterMode::From(&key, Direction::Forward))?;
        #[derive(Default)]
        struct Seen {
            relay: bool,
            submitted: bool,
            delivered: bool,
            cancelled: bool,
            bounced: bool,
        }
        let mut report = RelayReport::default();
        let mut current: Option<(u64, Seen)> = None;
        let count = |seen: Seen, report: &mut RelayReport| {
            if !seen.relay {
                return;
            }
            if seen.submitted {
                report.sent += 1;
            } else {
                report.received += 1;
            }
            if seen.delivered {
                report.delivered += 1;
            } else if seen.cancelled {
                report.cancelled += 1;
            } else if seen.bounced {
                report.bounced += 1;
            }
        };
        for item in iter {
            let (k, v) = item?;
            let Some(id) = k.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                continue;
            };
            if current.as_ref().is_none_or(|(c, _)| *c != id) {
                if let Some((_, seen)) = current.take() {
                    count(seen, &mut report);
                }
                current = Some((id, Seen::default()));
            }
            let event: TrackingEvent = decode(CF_TRACKING, &v)?;
            let Some((_, seen)) = current.as_mut() else {
                continue;
            };
            let address = event.detail.split(':').next().unwrap_or("");
            match event.kind.as_str() {
                "received" => seen.submitted = event.detail.starts_with("submitted by"),
                "queued" => {
                    if let Some(rcpts) = event
                        .detail
                        .strip_prefix("relay queue ")
                        .and_then(|rest| rest.split_once(" for "))
                    {
                        seen.relay |= rcpts.1.split(", ").any(in_domain);
                    }
                }
                "delivered" if in_domain(address) => seen.delivered = true,
                "cancelled" if in_domain(address) => seen.cancelled = true,
                "bounced" | "expired" if in_domain(address) => seen.bounced = true,
                _ => {}
            }
        }
        if let Some((_, seen)) = current {
            count(seen, &mut report);
        }
        Ok(report)
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

    /// The last notice's summary: per message of the domain since the outage began,
    /// whatever became of it, found without scanning what came before.
    #[test]
    fn relay_report_counts_each_message_of_the_domain_since_the_outage_began() {
        use crate::queue::AttemptOutcome;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
        let relay = |summary: &str, rcpt: &str| {
            store
                .deliver(&DeliveryRequest {
                    body: format!("Subject: {summary}\r\n\r\nx\r\n").as_bytes(),
                    users: vec![],
                    queue: vec![NewQueueEntry {
                        kind: QueueKind::Relay,
                        domain: rcpt.rsplit_once('@').unwrap().1.into(),
                        mail_from: "x@outside.net".into(),
                        recipients: vec![(rcpt.into(), None)],
                        next_attempt: 0,
                        sent_copy: false,
                    }],
                    message_id: None,
                    summary: summary.into(),
                })
                .unwrap()
                .queue_ids[0]
        };
        relay("from <x@outside.net> before the outage", "anna@example.com");
        clock.advance(100);
        let started = store.now();
        let delivered = relay("from <x@outside.net>", "anna@example.com");
        let deleted = relay("from <x@outside.net>", "anna@example.com");
        let bounced = relay("from <x@outside.net>", "anna@example.com");
        let _waiting = relay("from <x@outside.net>", "anna@example.com");
        let sent = relay(
            "submitted by anna@example.com from [192.0.2.1] to bob@elsewhere.org",
            "anna@example.com",
        );
        let other = relay("from <x@outside.net>", "carl@other.org");
        clock.advance(10);
        let ok = |id| {
            store
                .record_attempt(
                    id,
                    &[(
                        "anna@example.com".into(),
                        AttemptOutcome::Delivered("250 ok".into()),
                    )],
                    0,
                )
                .unwrap()
        };
        ok(delivered);
        ok(sent);
        store
            .record_attempt(
                other,
                &[(
                    "carl@other.org".into(),
                    AttemptOutcome::Delivered("250 ok".into()),
                )],
                0,
            )
            .unwrap();
        store
            .cancel_as_deleted(deleted, &["anna@example.com".into()])
            .unwrap();
        store
            .record_attempt(
                bounced,
                &[("anna@example.com".into(), AttemptOutcome::Failed("550 no".into()))],
                0,
            )
            .unwrap();
        assert_eq!(store.first_tracking_id_since(started).unwrap(), 2);
        assert_eq!(store.first_tracking_id_since(0).unwrap(), 0);
        assert_eq!(
            store.relay_report_since("example.com", started).unwrap(),
            RelayReport {
                received: 4,
                sent: 1,
                delivered: 2,
                cancelled: 1,
                bounced: 1
            }
        );
        assert_eq!(store.relay_report_since("example.com", 0).unwrap().received, 5);
        assert_eq!(
            store.relay_report_since("example.com", store.now() + 1).unwrap(),
            RelayReport::default()
        );
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
            outage_started_at: Some(3),
            last_probe_at: Some(9),
            last_probe_error: Some("connection refused".into()),
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
