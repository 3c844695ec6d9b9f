//! SORT and THREAD keys for IMAP sessions: the store keeps each body's summary
//! (`understudy_protocol::imap::message::MessageSummary`, written with the body by the
//! summariser set here), and a cache shared by every session keeps them decoded, so a
//! webmail that opens a connection per page sorts a 50,000-message INBOX without
//! reading the store at all after the first time.
//!
//! Entries are per (mailbox id, UID): a message's header never changes and neither
//! id is ever reused, so an entry never goes stale; whole mailboxes are dropped, least
//! recently used first, to stay under [`MAX_CACHED`] entries.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use understudy_protocol::imap::backend::{MailboxId, MessageSummary};
use understudy_storage::{BodySummary, Store, StoreError};

/// About 250 octets each: 200,000 entries are some 50 MB, four 50,000-message INBOXes.
pub const MAX_CACHED: usize = 200_000;

/// The summariser the store runs on each new body.
pub fn install_summariser(store: &Store) {
    store.set_summariser(Arc::new(|body: &[u8]| {
        let summary = MessageSummary::of(body);
        BodySummary {
            bytes: summary.to_bytes(),
            sent_date: summary.date,
        }
    }));
}

/// One mailbox's entries in UID order: sessions ask in UID order (their view's), so a
/// look-up of a whole mailbox is one merge walk, without hashing 50,000 keys.
#[derive(Default)]
struct MailboxEntries {
    by_uid: Vec<(u32, Arc<MessageSummary>)>,
    last_used: u64,
}

impl MailboxEntries {
    /// Fills `found` for `uids` (ascending or not) and lists the UIDs not cached.
    fn look_up(&self, uids: &[u32], found: &mut Vec<Option<Arc<MessageSummary>>>, missing: &mut Vec<u32>) {
        let mut at = 0;
        let mut previous = 0;
        for &uid in uids {
            if uid < previous {
                at = 0;
            }
            previous = uid;
            // Galloping would help sparse asks; a SORT asks for nearly everything.
            while at < self.by_uid.len() && self.by_uid[at].0 < uid {
                at += 1;
            }
            match self.by_uid.get(at) {
                Some((u, s)) if *u == uid => found.push(Some(s.clone())),
                _ => {
                    missing.push(uid);
                    found.push(None);
                }
            }
        }
    }

    /// Adds entries; returns how many were new.
    fn add(&mut self, fetched: HashMap<u32, Arc<MessageSummary>>) -> usize {
        let before = self.by_uid.len();
        let appends_only = self
            .by_uid
            .last()
            .is_none_or(|(last, _)| fetched.keys().all(|u| u > last));
        self.by_uid.extend(fetched);
        if appends_only {
            self.by_uid[before..].sort_unstable_by_key(|(u, _)| *u);
        } else {
            self.by_uid.sort_by_key(|(u, _)| *u);
            self.by_uid.dedup_by_key(|(u, _)| *u);
        }
        self.by_uid.len() - before
    }
}

#[derive(Default)]
struct Cache {
    mailboxes: HashMap<MailboxId, MailboxEntries>,
    entries: usize,
    clock: u64,
}

#[derive(Default)]
pub struct SummaryCache {
    inner: Mutex<Cache>,
}

impl SummaryCache {
    /// The summaries of `uids` of one mailbox, in the order given, leaving out UIDs
    /// that do not exist. Misses are read from the store; a body stored before
    /// summaries existed is summarised now and its summary written back.
    pub fn get(
        &self,
        store: &Store,
        user_id: u64,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<(u32, Arc<MessageSummary>)>, StoreError> {
        let mut found: Vec<Option<Arc<MessageSummary>>> = Vec::with_capacity(uids.len());
        let mut missing: Vec<u32> = Vec::new();
        {
            let mut cache = self.inner.lock();
            cache.clock += 1;
            let now = cache.clock;
            let entries = cache.mailboxes.get_mut(&mailbox);
            match entries {
                Some(entries) => {
                    entries.last_used = now;
                    entries.look_up(uids, &mut found, &mut missing);
                }
                None => {
                    missing.extend_from_slice(uids);
                    found.resize(uids.len(), None);
                }
            }
        }
        if !missing.is_empty() {
            let mut fetched: HashMap<u32, Arc<MessageSummary>> = HashMap::with_capacity(missing.len());
            for (uid, blob, stored) in store.summaries(user_id, mailbox, &missing)? {
                let summary = match stored.as_deref().and_then(MessageSummary::from_bytes) {
                    Some(s) => s,
                    None => {
                        let body = match store.body(&blob) {
                            Ok(b) => b,
                            // Expunged since the record was read.
                            Err(StoreError::Corrupt { .. }) if !store.blob_exists(&blob)? => continue,
                            Err(e) => return Err(e),
                        };
                        let s = MessageSummary::of(&body);
                        store.put_summary(&blob, &s.to_bytes())?;
                        s
                    }
                };
                fetched.insert(uid, Arc::new(summary));
            }
            for (slot, uid) in found.iter_mut().zip(uids) {
                if slot.is_none() {
                    *slot = fetched.get(uid).cloned();
                }
            }
            self.insert(mailbox, fetched);
        }
        Ok(uids
            .iter()
            .zip(found)
            .filter_map(|(uid, s)| s.map(|s| (*uid, s)))
            .collect())
    }

    fn insert(&self, mailbox: MailboxId, fetched: HashMap<u32, Arc<MessageSummary>>) {
        let mut cache = self.inner.lock();
        cache.clock += 1;
        let now = cache.clock;
        let entries = cache.mailboxes.entry(mailbox).or_default();
        entries.last_used = now;
        let added = entries.add(fetched);
        cache.entries += added;
        while cache.entries > MAX_CACHED {
            let oldest = cache
                .mailboxes
                .iter()
                .filter(|(id, _)| **id != mailbox)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| *id);
            let Some(oldest) = oldest else { break };
            if let Some(e) = cache.mailboxes.remove(&oldest) {
                cache.entries -= e.by_uid.len();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use understudy_storage::mailbox::DeliveryRequest;
    use understudy_storage::Domain;

    #[test]
    fn bodies_from_before_summaries_are_summarised_once_and_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        let user = store.create_user("anna@example.com", "Anna", None).unwrap();
        let deliver = |body: &[u8]| {
            store
                .deliver(&DeliveryRequest {
                    body,
                    users: vec![user.id],
                    queue: vec![],
                    message_id: None,
                    summary: "test".into(),
                })
                .unwrap()
                .stored[0]
        };
        let (_, inbox, old) = deliver(b"Subject: Re: old\r\n\r\nbefore\r\n");
        install_summariser(&store);
        let (_, _, new) = deliver(b"Subject: new\r\n\r\nafter\r\n");
        assert!(store.summaries(user.id, inbox, &[old]).unwrap()[0].2.is_none());
        let cache = SummaryCache::default();
        let got = cache.get(&store, user.id, inbox, &[new, 77, old]).unwrap();
        let subjects: Vec<(u32, &str)> = got.iter().map(|(u, s)| (*u, s.subject.as_str())).collect();
        assert_eq!(subjects, vec![(new, "NEW"), (old, "OLD")]);
        // Written back for the next process; and served from memory from now on.
        let stored = store.summaries(user.id, inbox, &[old]).unwrap()[0]
            .2
            .clone()
            .unwrap();
        assert_eq!(MessageSummary::from_bytes(&stored).unwrap().subject, "OLD");
        store.expunge(user.id, inbox, &[old]).unwrap();
        let again = cache.get(&store, user.id, inbox, &[old]).unwrap();
        assert_eq!(again.len(), 1, "a cached entry needs no store read");
    }
}
