//! An in-memory index of the queue by domain: how many entries, how many relay entries,
//! the oldest and newest, how many held. `outage status` and the outage monitor (every
//! second while a domain is out of `normal`) used to decode every queue entry for this;
//! on a 100,000-entry queue that was most of a core.
//!
//! Built by one scan on first use, then kept current by the queue's writers after each
//! commit ([`Store::note_queue_entry`]). Notes are idempotent (an entry is inserted,
//! replaced or removed by id), and a writer notes while holding the index lock, so a
//! note that lands while the index is being built is applied after the scan, which is
//! correct whichever of the two saw the write first.

use std::collections::{BTreeSet, HashMap};

use crate::db::{decode, Store};
use crate::error::StoreResult;
use crate::keys::*;
use crate::model::{QueueEntry, QueueKind};
use crate::outage_ops::QueueSummary;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Indexed {
    domain: String,
    relay: bool,
    created_at: i64,
    held: bool,
}

#[derive(Debug, Default)]
struct DomainQueue {
    all: BTreeSet<(i64, u64)>,
    relay: BTreeSet<(i64, u64)>,
    held: usize,
}

#[derive(Debug, Default)]
pub(crate) struct QueueIndex {
    entries: HashMap<u64, Indexed>,
    domains: HashMap<String, DomainQueue>,
}

impl QueueIndex {
    fn remove(&mut self, id: u64) {
        let Some(old) = self.entries.remove(&id) else {
            return;
        };
        if let Some(d) = self.domains.get_mut(&old.domain) {
            d.all.remove(&(old.created_at, id));
            d.relay.remove(&(old.created_at, id));
            if old.held {
                d.held = d.held.saturating_sub(1);
            }
            if d.all.is_empty() {
                self.domains.remove(&old.domain);
            }
        }
    }

    fn note(&mut self, entry: &QueueEntry) {
        self.remove(entry.id);
        if entry.is_done() {
            return;
        }
        let indexed = Indexed {
            domain: entry.domain.to_ascii_lowercase(),
            relay: entry.kind == QueueKind::Relay,
            created_at: entry.created_at,
            held: entry.held,
        };
        let d = self.domains.entry(indexed.domain.clone()).or_default();
        d.all.insert((indexed.created_at, entry.id));
        if indexed.relay {
            d.relay.insert((indexed.created_at, entry.id));
        }
        if indexed.held {
            d.held += 1;
        }
        self.entries.insert(entry.id, indexed);
    }

    pub(crate) fn summaries(&self) -> HashMap<String, QueueSummary> {
        self.domains
            .iter()
            .map(|(name, d)| {
                let summary = QueueSummary {
                    relay_depth: d.relay.len(),
                    oldest_relay: d.relay.first().map(|(at, _)| *at),
                    newest_relay: d.relay.last().map(|(at, _)| *at),
                    total: d.all.len(),
                    oldest: d.all.first().map(|(at, _)| *at),
                };
                (name.clone(), summary)
            })
            .collect()
    }

    fn held(&self, domain: &str) -> usize {
        self.domains
            .get(&domain.to_ascii_lowercase())
            .map_or(0, |d| d.held)
    }
}

impl Store {
    /// Runs `f` on the index, building it first if this process has not yet.
    /// On a shared store other nodes change the queue too: the index is built afresh
    /// for each call and not kept.
    pub(crate) fn with_queue_index<T>(&self, f: impl FnOnce(&QueueIndex) -> T) -> StoreResult<T> {
        if self.shared() {
            let mut index = QueueIndex::default();
            for (_, v) in self.scan_prefix(CF_QUEUE, b"")? {
                let entry: QueueEntry = decode(CF_QUEUE, &v)?;
                index.note(&entry);
            }
            return Ok(f(&index));
        }
        let mut guard = self.inner.queue_index.lock();
        if guard.is_none() {
            let mut index = QueueIndex::default();
            for (_, v) in self.scan_prefix(CF_QUEUE, b"")? {
                let entry: QueueEntry = decode(CF_QUEUE, &v)?;
                index.note(&entry);
            }
            *guard = Some(index);
        }
        let index = guard.get_or_insert_with(QueueIndex::default);
        Ok(f(index))
    }

    /// Called by every queue writer after its commit, with the entry as written (a
    /// finished entry is removed). Nothing to do before the index is first used: the
    /// scan that builds it sees the committed write.
    pub(crate) fn note_queue_entry(&self, entry: &QueueEntry) {
        if let Some(index) = self.inner.queue_index.lock().as_mut() {
            index.note(entry);
        }
    }

    /// Held entries of a domain (`queue hold`).
    pub fn queue_held_count(&self, domain: &str) -> StoreResult<usize> {
        self.with_queue_index(|index| index.held(domain))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use crate::mailbox::DeliveryRequest;
    use crate::model::NewQueueEntry;
    use crate::queue::AttemptOutcome;
    use crate::{ManualClock, QueueKind, Store, StoreOptions};

    fn queue(store: &Store, kind: QueueKind, domain: &str) -> u64 {
        store
            .deliver(&DeliveryRequest {
                body: format!("Subject: {}\r\n\r\nx\r\n", store.now()).as_bytes(),
                users: vec![],
                queue: vec![NewQueueEntry {
                    kind,
                    domain: domain.into(),
                    mail_from: "a@x.net".into(),
                    recipients: vec![("anna@example.com".into(), None)],
                    next_attempt: store.now(),
                    sent_copy: false,
                }],
                message_id: None,
                summary: "t".into(),
            })
            .unwrap()
            .queue_ids[0]
    }

    /// The index agrees with a full scan through additions before and after it is
    /// built, deliveries, holds, purges.
    #[test]
    fn index_matches_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
        let a = queue(&store, QueueKind::Relay, "example.com");
        clock.advance(10);
        // Built here, with one entry; later writes are noted.
        assert_eq!(
            store.queue_summaries().unwrap(),
            store.queue_summaries_scanned().unwrap()
        );
        let b = queue(&store, QueueKind::Relay, "Example.com");
        let c = queue(&store, QueueKind::Notification, "example.com");
        clock.advance(10);
        let d = queue(&store, QueueKind::Relay, "other.org");
        store.set_held(b, true).unwrap();
        assert_eq!(store.queue_held_count("EXAMPLE.COM").unwrap(), 1);
        assert_eq!(
            store.queue_summaries().unwrap(),
            store.queue_summaries_scanned().unwrap()
        );
        store
            .record_attempt(
                a,
                &[("anna@example.com".into(), AttemptOutcome::Delivered("250".into()))],
                0,
            )
            .unwrap();
        store.purge(d).unwrap();
        store.retry_at(c, 5).unwrap();
        let summaries = store.queue_summaries().unwrap();
        assert_eq!(summaries, store.queue_summaries_scanned().unwrap());
        let s = summaries["example.com"];
        assert_eq!((s.relay_depth, s.total, s.oldest_relay), (1, 2, Some(1_010)));
        assert!(!summaries.contains_key("other.org"));
        // A second handle on the same process state (clone) sees the same index.
        assert_eq!(store.clone().queue_held_count("example.com").unwrap(), 1);
    }
}
