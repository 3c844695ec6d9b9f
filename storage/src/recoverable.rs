//! Mail a user deleted during an outage, kept recoverable. The queue runner does not
//! redeliver a relay copy whose local copy the user deleted (SPEC "Redelivery"), but an
//! accidental delete on the outage day would then be lost at the primary too. So the
//! cancelled recipients are recorded in [`Recoverable`] records (`recoverable` column
//! family, key tracking id + queue id), each holding its own reference to the body,
//! until the domain's retention removes them; `queue redeliver TRACKING-ID` turns them
//! back into relay entries.

use crate::db::Batch;

use crate::db::{decode, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::*;

impl Store {
    /// Cancels `addresses` of relay entry `id` ("deleted by user") and records them as
    /// recoverable, in one synced write.
    pub fn cancel_as_deleted(&self, id: u64, addresses: &[String]) -> StoreResult<QueueEntry> {
        let (_guards, mut entry) = self.lock_entry(id)?;
        let now = self.now();
        let mut cancelled = Vec::new();
        let mut events = Vec::new();
        for r in entry.recipients.iter_mut() {
            if r.status == RecipientStatus::Pending
                && addresses.iter().any(|a| a.eq_ignore_ascii_case(&r.address))
            {
                r.status = RecipientStatus::Cancelled;
                r.last_reply = Some("deleted by user".into());
                cancelled.push((r.address.clone(), r.local_user));
                events.push(TrackingEvent {
                    at: now,
                    kind: "cancelled".into(),
                    detail: format!(
                        "{}: deleted by user; recoverable until retention (`understudy queue redeliver {}`)",
                        r.address,
                        crate::tracking::TrackingId(entry.tracking_id)
                    ),
                });
            }
        }
        if cancelled.is_empty() {
            return Ok(entry);
        }
        let mut batch = Batch::default();
        let key = u64_pair(entry.tracking_id, entry.id);
        let done = entry.is_done();
        let record = match self.get_json::<Recoverable>(CF_RECOVERABLE, &key)? {
            // Another recipient of the same entry was cancelled before: the record
            // holds its reference already, and the entry gives up its own as usual.
            Some(mut record) => {
                record.recipients.extend(cancelled);
                record.cancelled_at = now;
                let next = entry.next_attempt;
                self.reschedule_into(&mut batch, &mut entry, next)?;
                record
            }
            None => {
                if self.blob_refs(&entry.blob)? <= 0 {
                    return Err(StoreError::Corrupt {
                        cf: "blob_refs",
                        reason: format!("queue entry {id} holds a body with no references"),
                    });
                }
                if done {
                    // The finished entry's reference passes to the record: the entry
                    // goes without releasing it (a release read the count before this
                    // batch's own changes and would drop the body).
                    batch.delete(CF_QUEUE_DUE, due_key(entry.next_attempt, entry.id));
                    self.delete(&mut batch, CF_QUEUE, &u64_key(entry.id))?;
                } else {
                    batch.add_i64(CF_BLOB_REFS, entry.blob, 1);
                    let next = entry.next_attempt;
                    self.reschedule_into(&mut batch, &mut entry, next)?;
                }
                Recoverable {
                    tracking_id: entry.tracking_id,
                    queue_id: entry.id,
                    domain: entry.domain.clone(),
                    mail_from: entry.mail_from.clone(),
                    recipients: cancelled,
                    blob: entry.blob,
                    size: entry.size,
                    message_id: entry.message_id.clone(),
                    created_at: entry.created_at,
                    cancelled_at: now,
                    sent_copy: entry.sent_copy,
                }
            }
        };
        self.put_json(&mut batch, CF_RECOVERABLE, &key, &record)?;
        self.tracking_into(&mut batch, entry.tracking_id, &events)?;
        self.commit(batch)?;
        self.note_queue_entry(&entry);
        Ok(entry)
    }

    /// The recoverable copies of one message.
    pub fn recoverable(&self, tracking_id: u64) -> StoreResult<Vec<Recoverable>> {
        self.scan_prefix(CF_RECOVERABLE, &u64_key(tracking_id))?
            .iter()
            .map(|(_, v)| decode(CF_RECOVERABLE, v))
            .collect()
    }

    /// Every recoverable copy (retention walks them).
    pub fn all_recoverable(&self) -> StoreResult<Vec<Recoverable>> {
        self.scan_prefix(CF_RECOVERABLE, b"")?
            .iter()
            .map(|(_, v)| decode(CF_RECOVERABLE, v))
            .collect()
    }

    /// Turns a message's recoverable copies back into relay entries due at
    /// `next_attempt`, in one synced write; returns the new queue ids (none when nothing
    /// was recoverable). The recipients no longer name the user whose copy was deleted,
    /// so the runner does not cancel them again.
    pub fn redeliver_recoverable(&self, tracking_id: u64, next_attempt: i64) -> StoreResult<Vec<u64>> {
        let records = self.recoverable(tracking_id)?;
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let _guards = self.lock(&[
            ("blob", u64::from_be_bytes(first8(&first.blob))),
            ("tracking", tracking_id),
        ])?;
        // Re-read under the lock: a concurrent redeliver or retention may have taken them.
        let records = self.recoverable(tracking_id)?;
        let now = self.now();
        let mut batch = Batch::default();
        let mut entries = Vec::new();
        let mut events = Vec::new();
        for record in records {
            let id = self.next_id(crate::db::COUNTER_QUEUE)?;
            self.counter_merge(&mut batch, crate::db::COUNTER_QUEUE, id)?;
            let entry = QueueEntry {
                id,
                kind: QueueKind::Relay,
                domain: record.domain.clone(),
                mail_from: record.mail_from.clone(),
                recipients: record
                    .recipients
                    .iter()
                    .map(|(address, _)| QueueRecipient {
                        address: address.clone(),
                        status: RecipientStatus::Pending,
                        attempts: 0,
                        last_reply: None,
                        local_user: None,
                    })
                    .collect(),
                blob: record.blob,
                size: record.size,
                created_at: now,
                next_attempt,
                tracking_id,
                message_id: record.message_id.clone(),
                held: false,
                sent_copy: record.sent_copy,
                lease: None,
            };
            // The record's body reference becomes the entry's.
            self.put_json(&mut batch, CF_QUEUE, &u64_key(id), &entry)?;
            batch.put(CF_QUEUE_DUE, due_key(next_attempt, id), b"");
            self.delete(
                &mut batch,
                CF_RECOVERABLE,
                &u64_pair(tracking_id, record.queue_id),
            )?;
            let rcpts: Vec<&str> = record.recipients.iter().map(|(a, _)| a.as_str()).collect();
            events.push(TrackingEvent {
                at: now,
                kind: "redeliver".into(),
                detail: format!("requested by an admin: relay queue {id} for {}", rcpts.join(", ")),
            });
            entries.push(entry);
        }
        self.tracking_into(&mut batch, tracking_id, &events)?;
        self.commit(batch)?;
        for entry in &entries {
            self.note_queue_entry(entry);
        }
        Ok(entries.iter().map(|e| e.id).collect())
    }

    /// Drops the recoverable copies whose message arrived before the cutoff of their
    /// domain (`cutoff(domain)`, `None`: kept), releasing their bodies. Returns how many.
    pub fn expire_recoverable(&self, cutoff: impl Fn(&str) -> Option<i64>) -> StoreResult<usize> {
        let mut removed = 0;
        for record in self.all_recoverable()? {
            let Some(before) = cutoff(&record.domain) else {
                continue;
            };
            if record.created_at >= before {
                continue;
            }
            let _guards = self.lock(&[
                ("blob", u64::from_be_bytes(first8(&record.blob))),
                ("tracking", record.tracking_id),
            ])?;
            let key = u64_pair(record.tracking_id, record.queue_id);
            if self.get_json::<Recoverable>(CF_RECOVERABLE, &key)?.is_none() {
                continue;
            }
            let mut batch = Batch::default();
            self.delete(&mut batch, CF_RECOVERABLE, &key)?;
            self.release_blob_into(&mut batch, &record.blob, 1)?;
            let event = TrackingEvent {
                at: self.now(),
                kind: "expired".into(),
                detail: "deleted copy no longer recoverable: retention".into(),
            };
            self.tracking_into(&mut batch, record.tracking_id, &[event])?;
            self.commit(batch)?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn first8(blob: &BlobId) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blob[..8]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::mailbox::DeliveryRequest;
    use crate::model::*;
    use crate::queue::AttemptOutcome;
    use crate::Store;

    /// The body of a message the user deleted outlives the cancelled relay entry, goes
    /// back to the primary with `redeliver_recoverable`, and is freed by retention.
    #[test]
    fn a_deleted_message_stays_recoverable_with_its_body_until_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        let anna = store.create_user("anna@example.com", "Anna", None).unwrap();
        let deliver = |subject: &str| {
            let out = store
                .deliver(&DeliveryRequest {
                    body: format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
                    users: vec![anna.id],
                    queue: vec![NewQueueEntry {
                        kind: QueueKind::Relay,
                        domain: "example.com".into(),
                        mail_from: "x@outside.net".into(),
                        recipients: vec![("anna@example.com".into(), Some(anna.id))],
                        next_attempt: 0,
                        sent_copy: false,
                    }],
                    message_id: None,
                    summary: "t".into(),
                })
                .unwrap();
            (out.tracking_id, out.queue_ids[0], out.stored[0])
        };
        for subject in ["recovered", "expired"] {
            let (tracking, queue, (_, mailbox, uid)) = deliver(subject);
            let blob = store.queue_entry(queue).unwrap().unwrap().blob;
            store.expunge(anna.id, mailbox, &[uid]).unwrap();
            let entry = store
                .cancel_as_deleted(queue, &["anna@example.com".into()])
                .unwrap();
            assert!(entry.is_done());
            assert!(store.queue_entry(queue).unwrap().is_none());
            assert_eq!(store.blob_refs(&blob).unwrap(), 1, "the record holds the body");
            assert!(store.body(&blob).unwrap().ends_with(b"body\r\n"));
            assert_eq!(store.recoverable(tracking).unwrap().len(), 1);
            if subject == "recovered" {
                let ids = store.redeliver_recoverable(tracking, 0).unwrap();
                assert_eq!(ids.len(), 1);
                assert!(store.recoverable(tracking).unwrap().is_empty());
                let again = store.queue_entry(ids[0]).unwrap().unwrap();
                assert_eq!(again.recipients[0].local_user, None, "not cancelled again");
                assert!(store.body(&again.blob).is_ok());
                store
                    .record_attempt(
                        ids[0],
                        &[("anna@example.com".into(), AttemptOutcome::Delivered("250".into()))],
                        0,
                    )
                    .unwrap();
            } else {
                assert_eq!(store.expire_recoverable(|_| Some(i64::MAX)).unwrap(), 1);
                assert!(store.recoverable(tracking).unwrap().is_empty());
            }
            assert_eq!(store.blob_refs(&blob).unwrap(), 0, "{subject}: body freed");
            assert!(store.body(&blob).is_err());
        }
    }
}
