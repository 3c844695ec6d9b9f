//! Mailboxes, messages, content-addressed bodies and the per-mailbox change log.
//!
//! Every writer locks the mailboxes it changes and keeps the locks across its write, so
//! UIDs and modseqs become visible in the order they were assigned. The change log keeps
//! one entry per live message (its latest change) plus a tombstone per expunge: enough
//! for IMAP sessions, CONDSTORE and IDLE to catch up from any modseq.
//!
//! Bodies are content-addressed and reference-counted. The rules that keep every message
//! record's body present and every count equal to its references, whatever the
//! interleaving and wherever a crash falls:
//! - A count is read, changed or the body written or deleted only under the body's lock
//!   (`blob_lock`), by every writer: deliver, APPEND, COPY, expunge, queue completion.
//!   Records are read once to learn which bodies to lock, then again under the locks; a
//!   record whose body was not locked is left alone.
//! - A record and the reference it holds are written or removed in the same batch, so a
//!   crash keeps both or neither (RocksDB recovers a prefix of whole batches).
//! - UID lists are de-duplicated first: within one batch a record removed twice would be
//!   counted twice.
//! - Readers that need a record and its body read both from one snapshot.
//! - A mailbox is deleted in the same batch as its last messages.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::db::{
    decode, read_i64, Batch, BodySummary, Direction, IterMode, Store, COUNTER_QUEUE, COUNTER_TRACKING,
};
use sha2::{Digest, Sha256};

use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::*;

/// A message to deliver to local mailboxes and/or queue, in one synced write.
#[derive(Debug, Clone, Default)]
pub struct DeliveryRequest<'a> {
    /// The message as it will be stored and redelivered (CRLF line ends).
    pub body: &'a [u8],
    /// Users whose INBOX receives a copy (duplicates are ignored).
    pub users: Vec<u64>,
    /// Relay/outbound queue entries sharing the same body.
    pub queue: Vec<NewQueueEntry>,
    /// Message-ID header, for tracking look-ups.
    pub message_id: Option<String>,
    /// One line for the tracking log: who sent it, from where.
    pub summary: String,
}

/// A delivery written into a batch, not committed yet (`Store::stage_delivery`).
pub(crate) struct StagedDelivery {
    outcome: DeliveryOutcome,
    noted: Vec<QueueEntry>,
    touched: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub tracking_id: u64,
    /// `(user, mailbox, uid)` of each stored copy.
    pub stored: Vec<(u64, u64, u32)>,
    pub queue_ids: Vec<u64>,
}

/// One message of an IMAP APPEND (`Store::append_many`).
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// CRLF line ends, as stored.
    pub body: &'a [u8],
    pub flags: u8,
    pub keywords: &'a [String],
    /// Unix seconds and offset in minutes; `None`: now.
    pub internal_date: Option<(i64, i16)>,
}

/// A message as a mailbox view needs it, with the change that last touched it.
pub type Change = (ChangeRecord, Option<MessageRecord>);

pub fn blob_id(body: &[u8]) -> BlobId {
    Sha256::digest(body).into()
}

pub(crate) fn blob_lock(blob: &BlobId) -> (&'static str, u64) {
    let mut first = [0u8; 8];
    first.copy_from_slice(&blob[..8]);
    ("blob", u64::from_be_bytes(first))
}

pub(crate) fn mailbox_lock(id: u64) -> (&'static str, u64) {
    ("mailbox", id)
}

/// The outer lock of a user's list of mailboxes (create, rename, delete, subscribe).
pub(crate) fn mailboxes_of(user_id: u64) -> (&'static str, u64) {
    ("mailboxes-of", user_id)
}

/// `uids` without repeats, first occurrence kept (COPYUID pairs follow the given order).
fn unique(uids: &[u32]) -> Vec<u32> {
    let mut seen = HashSet::with_capacity(uids.len());
    uids.iter().copied().filter(|u| seen.insert(*u)).collect()
}

/// A failed attempt to lock every body a write needs, retried this many times: each
/// retry means a new body arrived between the read and the lock.
const LOCK_RETRIES: usize = 32;

impl Store {
    // ----- mailboxes -----

    pub fn mailboxes(&self, user_id: u64) -> StoreResult<Vec<Mailbox>> {
        self.scan_prefix(CF_MAILBOXES, &u64_key(user_id))?
            .iter()
            .map(|(_, v)| decode(CF_MAILBOXES, v))
            .collect()
    }

    pub fn mailbox(&self, user_id: u64, mailbox_id: u64) -> StoreResult<Mailbox> {
        self.get_json(CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox_id}")))
    }

    /// Finds a mailbox by name; "INBOX" matches case-insensitively (RFC 3501 §5.1).
    pub fn mailbox_by_name(&self, user_id: u64, name: &str) -> StoreResult<Option<Mailbox>> {
        let inbox = name.eq_ignore_ascii_case("INBOX");
        Ok(self
            .mailboxes(user_id)?
            .into_iter()
            .find(|m| if inbox { m.name == "INBOX" } else { m.name == name }))
    }

    pub fn inbox(&self, user_id: u64) -> StoreResult<Mailbox> {
        let known = self.inner.inbox_ids.lock().get(&user_id).copied();
        if let Some(id) = known {
            if let Some(mailbox) = self.get_json::<Mailbox>(CF_MAILBOXES, &u64_pair(user_id, id))? {
                return Ok(mailbox);
            }
        }
        let inbox = self
            .mailbox_by_name(user_id, "INBOX")?
            .ok_or_else(|| StoreError::NotFound(format!("INBOX of user {user_id}")))?;
        self.inner.inbox_ids.lock().insert(user_id, inbox.id);
        Ok(inbox)
    }

    pub fn create_mailbox(
        &self,
        user_id: u64,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> StoreResult<Mailbox> {
        validate_mailbox_name(name)?;
        let _guard = self.lock_outer(mailboxes_of(user_id))?;
        if self.mailbox_by_name(user_id, name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "mailbox {name} already exists"
            )));
        }
        let mut batch = Batch::default();
        let mailbox = self.new_mailbox_into(&mut batch, user_id, name, special_use)?;
        self.commit(batch)?;
        Ok(mailbox)
    }

    /// Deletes a mailbox and its messages. INBOX cannot be deleted. Its subscription, if
    /// any, stays (RFC 3501 §6.3.9).
    pub fn delete_mailbox(&self, user_id: u64, name: &str) -> StoreResult<()> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        let _guard = self.lock_outer(mailboxes_of(user_id))?;
        let mailbox = self
            .mailbox_by_name(user_id, name)?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
        self.destroy_mailbox(&mailbox)
    }

    /// Expunges every message of the mailbox, then removes it and its change log. The
    /// caller holds the user's outer lock, so nothing renames or deletes it meanwhile.
    pub(crate) fn destroy_mailbox(&self, mailbox: &Mailbox) -> StoreResult<()> {
        // A big mailbox goes a thousand messages per batch first...
        let uids: Vec<u32> = self
            .messages(mailbox.user_id, mailbox.id)?
            .1
            .iter()
            .map(|m| m.uid)
            .collect();
        for chunk in uids.chunks(1000) {
            self.expunge(mailbox.user_id, mailbox.id, chunk)?;
        }
        // ...then whatever arrived meanwhile (a delivery, an APPEND, a COPY into it) goes
        // in the batch that removes the mailbox, so no message outlives its mailbox.
        for _ in 0..LOCK_RETRIES {
            let (_, remaining) = self.messages(mailbox.user_id, mailbox.id)?;
            let blobs: BTreeSet<BlobId> = remaining.iter().map(|r| r.blob).collect();
            let mut keys = vec![mailbox_lock(mailbox.id)];
            keys.extend(blobs.iter().map(blob_lock));
            let _guards = self.lock(&keys)?;
            let (_, remaining) = self.messages(mailbox.user_id, mailbox.id)?;
            if remaining.iter().any(|r| !blobs.contains(&r.blob)) {
                continue;
            }
            let mut batch = Batch::default();
            let mut freed: BTreeMap<BlobId, i64> = BTreeMap::new();
            for record in &remaining {
                self.delete(&mut batch, CF_MESSAGES, &message_key(mailbox.id, record.uid))?;
                self.delete(&mut batch, CF_SORT_KEYS, &message_key(mailbox.id, record.uid))?;
                *freed.entry(record.blob).or_default() += 1;
            }
            for (blob, count) in freed {
                self.release_blob_into(&mut batch, &blob, count)?;
            }
            for (k, _) in self.scan_prefix(CF_CHANGES, &u64_key(mailbox.id))? {
                self.delete(&mut batch, CF_CHANGES, &k)?;
            }
            self.delete(&mut batch, CF_MAILBOXES, &u64_pair(mailbox.user_id, mailbox.id))?;
            self.commit(batch)?;
            self.publish(mailbox.id, u64::MAX);
            return Ok(());
        }
        Err(StoreError::Invalid(format!(
            "mailbox {} kept receiving new messages; try again",
            mailbox.name
        )))
    }

    /// Renames a mailbox and its children (`from/...`). Renaming INBOX moves its messages
    /// into a new mailbox `to` and leaves INBOX empty (RFC 3501 §6.3.5).
    pub fn rename_mailbox(&self, user_id: u64, from: &str, to: &str) -> StoreResult<()> {
        validate_mailbox_name(to)?;
        let _guard = self.lock_outer(mailboxes_of(user_id))?;
        if self.mailbox_by_name(user_id, to)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("mailbox {to} already exists")));
        }
        if from.eq_ignore_ascii_case("INBOX") {
            let inbox = self.inbox(user_id)?;
            let mut batch = Batch::default();
            let target = self.new_mailbox_into(&mut batch, user_id, to, None)?;
            // INBOX stays, and so does its subscription; the mailbox that takes its
            // messages is subscribed as INBOX was.
            if self.subscriptions(user_id)?.iter().any(|s| s == "INBOX") {
                self.subscribe_into(&mut batch, user_id, to)?;
            }
            self.commit(batch)?;
            let uids: Vec<u32> = self
                .messages(user_id, inbox.id)?
                .1
                .iter()
                .map(|m| m.uid)
                .collect();
            for chunk in uids.chunks(1000) {
                self.move_messages(user_id, inbox.id, chunk, target.id)?;
            }
            return Ok(());
        }
        let all = self.mailboxes(user_id)?;
        let prefix = format!("{from}/");
        let affected: Vec<&Mailbox> = all
            .iter()
            .filter(|m| m.name == from || m.name.starts_with(&prefix))
            .collect();
        if !affected.iter().any(|m| m.name == from) {
            return Err(StoreError::NotFound(format!("mailbox {from}")));
        }
        if to.starts_with(&prefix) {
            return Err(StoreError::Invalid("cannot move a mailbox into itself".into()));
        }
        // The records are read again under the mailboxes' locks: one read before them
        // would put back a stale UIDNEXT or count over a concurrent delivery's, and UIDs
        // would be handed out twice.
        let keys: Vec<(&str, u64)> = affected.iter().map(|m| mailbox_lock(m.id)).collect();
        let _mailboxes = self.lock(&keys)?;
        let mut batch = Batch::default();
        for m in affected {
            let mut renamed = self.mailbox(user_id, m.id)?;
            renamed.name = format!("{to}{}", &m.name[from.len()..]);
            self.put_json(&mut batch, CF_MAILBOXES, &u64_pair(user_id, m.id), &renamed)?;
        }
        self.rename_subscriptions_into(&mut batch, user_id, from, to)?;
        self.commit(batch)
    }

    // ----- messages -----

    /// The mailbox and all its messages in UID order, read from one snapshot: the
    /// counters, UIDNEXT and HIGHESTMODSEQ describe exactly the messages returned.
    pub fn messages(&self, user_id: u64, mailbox_id: u64) -> StoreResult<(Mailbox, Vec<MessageRecord>)> {
        let snapshot = self.snapshot()?;
        let mailbox: Mailbox = self
            .get_json_at(snapshot.as_ref(), CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox_id}")))?;
        let messages = self
            .scan_prefix_at(snapshot.as_ref(), CF_MESSAGES, &u64_key(mailbox_id))?
            .iter()
            .map(|(_, v)| decode(CF_MESSAGES, v))
            .collect::<StoreResult<Vec<MessageRecord>>>()?;
        Ok((mailbox, messages))
    }

    pub fn message(&self, user_id: u64, mailbox_id: u64, uid: u32) -> StoreResult<MessageRecord> {
        self.mailbox(user_id, mailbox_id)?;
        self.get_json(CF_MESSAGES, &message_key(mailbox_id, uid))?
            .ok_or_else(|| StoreError::NotFound(format!("message {uid}")))
    }

    /// A message and its body, read from one snapshot: a message expunged meanwhile is
    /// either read whole or not found (`NotFound`), never found without its body.
    pub fn message_body(
        &self,
        user_id: u64,
        mailbox_id: u64,
        uid: u32,
    ) -> StoreResult<(MessageRecord, Vec<u8>)> {
        self.read_message_body(user_id, mailbox_id, uid, false)
    }

    /// [`Store::message_body`] for a session that still shows the message: a message
    /// expunged meanwhile is read from its held entry (`view_holds.rs`) while a view
    /// holds it, as it was when expunged. One snapshot.
    pub fn message_body_or_held(
        &self,
        user_id: u64,
        mailbox_id: u64,
        uid: u32,
    ) -> StoreResult<(MessageRecord, Vec<u8>)> {
        self.read_message_body(user_id, mailbox_id, uid, true)
    }

    fn read_message_body(
        &self,
        user_id: u64,
        mailbox_id: u64,
        uid: u32,
        or_held: bool,
    ) -> StoreResult<(MessageRecord, Vec<u8>)> {
        let snapshot = self.snapshot()?;
        if self
            .get_json_at::<Mailbox>(snapshot.as_ref(), CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("mailbox {mailbox_id}")));
        }
        let key = message_key(mailbox_id, uid);
        let record = match self.get_json_at::<MessageRecord>(snapshot.as_ref(), CF_MESSAGES, &key)? {
            Some(record) => Some(record),
            None if or_held => self
                .get_json_at::<crate::view_holds::HeldMessage>(snapshot.as_ref(), CF_HELD, &key)?
                .map(|held| held.record),
            None => None,
        };
        let record = record.ok_or_else(|| StoreError::NotFound(format!("message {uid}")))?;
        let body = self
            .read_body(snapshot.as_ref(), &record.blob)?
            .ok_or_else(|| StoreError::Corrupt {
                cf: CF_BLOBS,
                reason: format!("body {} of message {uid} missing", hex::encode(record.blob)),
            })?;
        Ok((record, body))
    }

    pub fn body(&self, blob: &BlobId) -> StoreResult<Vec<u8>> {
        self.read_body(self.inner.backend.as_ref(), blob)?
            .ok_or_else(|| StoreError::Corrupt {
                cf: CF_BLOBS,
                reason: format!("body {} missing", hex::encode(blob)),
            })
    }

    pub fn blob_refs(&self, blob: &BlobId) -> StoreResult<i64> {
        let cf = CF_BLOB_REFS;
        Ok(self.get_raw(cf, blob)?.and_then(|v| read_i64(&v)).unwrap_or(0))
    }

    pub fn blob_exists(&self, blob: &BlobId) -> StoreResult<bool> {
        self.body_present(self.inner.backend.as_ref(), blob)
    }

    /// Changes after `since`, in modseq order, with the record of each message that
    /// still exists, all from one snapshot: the mailbox's HIGHESTMODSEQ covers exactly
    /// the changes returned, and each record is as of that point.
    pub fn changes_since(
        &self,
        user_id: u64,
        mailbox_id: u64,
        since: u64,
    ) -> StoreResult<(Mailbox, Vec<Change>)> {
        let snapshot = self.snapshot()?;
        let mailbox: Mailbox = self
            .get_json_at(snapshot.as_ref(), CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox_id}")))?;
        let cf = CF_CHANGES;
        let start = u64_pair(mailbox_id, since.saturating_add(1));
        let iter = snapshot.iter(cf, IterMode::From(&start, Direction::Forward))?;
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&u64_key(mailbox_id)) {
                break;
            }
            let change: ChangeRecord = decode(CF_CHANGES, &v)?;
            let record = match change.kind {
                ChangeKind::Expunged => None,
                _ => self.get_json_at(
                    snapshot.as_ref(),
                    CF_MESSAGES,
                    &message_key(mailbox_id, change.uid),
                )?,
            };
            out.push((change, record));
        }
        Ok((mailbox, out))
    }

    /// `(modseq, uid)` of every message expunged after `since`, in modseq order (QRESYNC,
    /// RFC 7162 §3.2.5): the log keeps a tombstone per expunge for the mailbox's life,
    /// so the answer is exact however old `since` is. Reads no message records.
    pub fn expunged_since(&self, user_id: u64, mailbox_id: u64, since: u64) -> StoreResult<Vec<(u64, u32)>> {
        let snapshot = self.snapshot()?;
        self.get_json_at::<Mailbox>(snapshot.as_ref(), CF_MAILBOXES, &u64_pair(user_id, mailbox_id))?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox_id}")))?;
        let cf = CF_CHANGES;
        let start = u64_pair(mailbox_id, since.saturating_add(1));
        let iter = snapshot.iter(cf, IterMode::From(&start, Direction::Forward))?;
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&u64_key(mailbox_id)) {
                break;
            }
            let change: ChangeRecord = decode(CF_CHANGES, &v)?;
            if change.kind == ChangeKind::Expunged {
                out.push((change.modseq, change.uid));
            }
        }
        Ok(out)
    }

    /// Delivers one message to local INBOXes and queue entries in one synced write. The
    /// body is stored once whatever the number of copies.
    pub fn deliver(&self, req: &DeliveryRequest<'_>) -> StoreResult<DeliveryOutcome> {
        self.deliver_as(self.reserve_tracking_id()?, req)
    }

    /// A tracking id for a message about to be delivered with [`Store::deliver_as`], so
    /// that its `Received` header and the SMTP reply can name it. An id reserved and never
    /// used is skipped, nothing more.
    pub fn reserve_tracking_id(&self) -> StoreResult<u64> {
        self.next_id(COUNTER_TRACKING)
    }

    /// [`Store::deliver`] under a tracking id from [`Store::reserve_tracking_id`].
    pub fn deliver_as(&self, tracking_id: u64, req: &DeliveryRequest<'_>) -> StoreResult<DeliveryOutcome> {
        let mut users = req.users.clone();
        users.sort_unstable();
        users.dedup();
        let mut inboxes = Vec::with_capacity(users.len());
        for user in &users {
            inboxes.push(self.inbox(*user)?.id);
        }
        let blob = blob_id(req.body);
        let mut lock_keys: Vec<(&str, u64)> = inboxes.iter().map(|id| mailbox_lock(*id)).collect();
        lock_keys.push(blob_lock(&blob));
        let guards = self.lock(&lock_keys)?;
        let mut batch = Batch::default();
        let staged = self.stage_delivery(&mut batch, tracking_id, req, &blob, (&users, &inboxes))?;
        self.commit_unlocking(batch, guards)?;
        Ok(self.delivered(staged))
    }

    /// The records of a delivery, into `batch`; the caller holds the locks of the
    /// INBOXes (`inboxes`, one per user of `users`) and of the body (`blob`, its id),
    /// commits, then
    /// passes the result to [`Store::delivered`]. Shared by [`Store::deliver_as`] and
    /// the outage change that queues its notices in the same write
    /// (`Store::record_outage_change`).
    pub(crate) fn stage_delivery(
        &self,
        batch: &mut Batch,
        tracking_id: u64,
        req: &DeliveryRequest<'_>,
        blob: &BlobId,
        (users, inboxes): (&[u64], &[u64]),
    ) -> StoreResult<StagedDelivery> {
        let blob = *blob;
        let now = self.now();
        let size =
            u32::try_from(req.body.len()).map_err(|_| StoreError::Invalid("message too large".into()))?;
        self.counter_merge(batch, COUNTER_TRACKING, tracking_id)?;
        let copies = (users.len() + req.queue.len()) as i64;
        let summary = self.summarise(req.body);
        let summary_bytes = summary.as_ref().map(|s| s.bytes.as_slice());
        self.add_blob_refs(batch, &blob, req.body, summary_bytes, copies)?;
        let mut events = vec![TrackingEvent {
            at: now,
            kind: "received".into(),
            detail: req.summary.clone(),
        }];

        let mut stored = Vec::with_capacity(users.len());
        let mut touched = Vec::with_capacity(users.len());
        for (user, inbox) in users.iter().zip(inboxes) {
            let mut mailbox = self.mailbox(*user, *inbox)?;
            let record = MessageRecord {
                uid: 0,
                blob,
                flags: 0,
                keywords: Vec::new(),
                modseq: 0,
                internal_date: now,
                tz_offset_minutes: 0,
                size,
                tracking_id,
                sent_date: summary.as_ref().map(|s| s.sent_date.unwrap_or(now)),
            };
            let record = self.add_message_into(batch, &mut mailbox, record, summary_bytes)?;
            stored.push((*user, mailbox.id, record.uid));
            touched.push((mailbox.id, mailbox.highest_modseq));
            events.push(TrackingEvent {
                at: now,
                kind: "stored".into(),
                detail: format!("user {user} INBOX uid {}", record.uid),
            });
        }

        let mut queue_ids = Vec::with_capacity(req.queue.len());
        let mut noted = Vec::with_capacity(req.queue.len());
        for entry in &req.queue {
            let id = self.next_id(COUNTER_QUEUE)?;
            self.counter_merge(batch, COUNTER_QUEUE, id)?;
            let queued = QueueEntry {
                id,
                kind: entry.kind,
                domain: entry.domain.clone(),
                mail_from: entry.mail_from.clone(),
                recipients: entry
                    .recipients
                    .iter()
                    .map(|(address, local_user)| QueueRecipient {
                        address: address.clone(),
                        status: RecipientStatus::Pending,
                        attempts: 0,
                        last_reply: None,
                        local_user: *local_user,
                    })
                    .collect(),
                blob,
                size: size as u64,
                created_at: now,
                next_attempt: entry.next_attempt,
                tracking_id,
                message_id: req.message_id.clone(),
                held: false,
                sent_copy: entry.sent_copy,
                lease: None,
            };
            self.put_json(batch, CF_QUEUE, &u64_key(id), &queued)?;
            noted.push(queued.clone());
            batch.put(CF_QUEUE_DUE, due_key(queued.next_attempt, id), b"");
            let rcpts: Vec<&str> = entry.recipients.iter().map(|(a, _)| a.as_str()).collect();
            events.push(TrackingEvent {
                at: now,
                kind: "queued".into(),
                detail: format!("{:?} queue {id} for {}", entry.kind, rcpts.join(", ")).to_lowercase(),
            });
            queue_ids.push(id);
        }
        for (seq, event) in events.iter().enumerate() {
            self.put_json(batch, CF_TRACKING, &tracking_key(tracking_id, seq as u32), event)?;
        }
        if let Some(mid) = &req.message_id {
            let mut key = mid.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&u64_key(tracking_id));
            batch.put(CF_MESSAGE_IDS, key, b"");
        }
        Ok(StagedDelivery {
            outcome: DeliveryOutcome {
                tracking_id,
                stored,
                queue_ids,
            },
            noted,
            touched,
        })
    }

    /// After a staged delivery committed: the queue index and the mailboxes' watchers
    /// learn of it.
    pub(crate) fn delivered(&self, staged: StagedDelivery) -> DeliveryOutcome {
        for entry in &staged.noted {
            self.note_queue_entry(entry);
        }
        for (mailbox, modseq) in staged.touched {
            self.publish(mailbox, modseq);
        }
        staged.outcome
    }

    /// IMAP APPEND: stores a message in one mailbox with the given flags and date.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        user_id: u64,
        mailbox_id: u64,
        body: &[u8],
        flags: u8,
        keywords: &[String],
        internal_date: Option<(i64, i16)>,
    ) -> StoreResult<(u32, u32)> {
        let message = NewMessage {
            body,
            flags,
            keywords,
            internal_date,
        };
        let (validity, uids) = self.append_many(user_id, mailbox_id, &[message])?;
        let uid = uids
            .first()
            .copied()
            .ok_or_else(|| StoreError::Invalid("nothing appended".into()))?;
        Ok((validity, uid))
    }

    /// IMAP APPEND of several messages (MULTIAPPEND, RFC 3502): all of them in one
    /// synced write, or none. Returns the UIDVALIDITY and the UIDs in the order given
    /// (consecutive). Identical bodies among them are stored once, counted once each.
    pub fn append_many(
        &self,
        user_id: u64,
        mailbox_id: u64,
        messages: &[NewMessage<'_>],
    ) -> StoreResult<(u32, Vec<u32>)> {
        let blobs: Vec<BlobId> = messages.iter().map(|m| blob_id(m.body)).collect();
        let mut keys = vec![mailbox_lock(mailbox_id)];
        keys.extend(blobs.iter().map(blob_lock));
        let guards = self.lock(&keys)?;
        let mut mailbox = self.mailbox(user_id, mailbox_id)?;
        let mut batch = Batch::default();
        // One count change per distinct body: within a batch a second `add_blob_refs`
        // would not see the first one's write.
        let mut counts: BTreeMap<BlobId, (usize, i64)> = BTreeMap::new();
        for (i, blob) in blobs.iter().enumerate() {
            counts.entry(*blob).or_insert((i, 0)).1 += 1;
        }
        let summaries: BTreeMap<BlobId, Option<BodySummary>> = counts
            .iter()
            .map(|(blob, (first, _))| (*blob, self.summarise(messages[*first].body)))
            .collect();
        let summary_of = |blob: &BlobId| summaries.get(blob).and_then(|s| s.as_ref());
        for (blob, (first, count)) in &counts {
            let summary = summary_of(blob).map(|s| s.bytes.as_slice());
            self.add_blob_refs(&mut batch, blob, messages[*first].body, summary, *count)?;
        }
        let mut uids = Vec::with_capacity(messages.len());
        for (message, blob) in messages.iter().zip(&blobs) {
            let size = u32::try_from(message.body.len())
                .map_err(|_| StoreError::Invalid("message too large".into()))?;
            let (date, tz) = message.internal_date.unwrap_or((self.now(), 0));
            let record = MessageRecord {
                uid: 0,
                blob: *blob,
                flags: message.flags,
                keywords: message.keywords.to_vec(),
                modseq: 0,
                internal_date: date,
                tz_offset_minutes: tz,
                size,
                tracking_id: 0,
                sent_date: summary_of(blob).map(|s| s.sent_date.unwrap_or(date)),
            };
            let summary = summary_of(blob).map(|s| s.bytes.as_slice());
            uids.push(
                self.add_message_into(&mut batch, &mut mailbox, record, summary)?
                    .uid,
            );
        }
        self.commit_unlocking(batch, guards)?;
        self.publish(mailbox.id, mailbox.highest_modseq);
        Ok((mailbox.uid_validity, uids))
    }

    /// Sets, adds or removes flags on `uids`. With `unchanged_since`, messages modified
    /// after it are left alone and returned in the second list (RFC 7162 §3.1.3). The
    /// first list holds every other named message that exists, as it is now, changed or
    /// not: a session learns from it what other sessions changed meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub fn store_flags(
        &self,
        user_id: u64,
        mailbox_id: u64,
        uids: &[u32],
        op: FlagOp,
        flags: u8,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> StoreResult<(Vec<MessageRecord>, Vec<u32>)> {
        let uids = unique(uids);
        let _guard = self.lock(&[mailbox_lock(mailbox_id)])?;
        let mut mailbox = self.mailbox(user_id, mailbox_id)?;
        let mut batch = Batch::default();
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        let mut written = false;
        for uid in &uids {
            let Some(mut record) =
                self.get_json::<MessageRecord>(CF_MESSAGES, &message_key(mailbox_id, *uid))?
            else {
                continue;
            };
            if unchanged_since.is_some_and(|since| record.modseq > since) {
                failed.push(*uid);
                continue;
            }
            let (new_flags, new_keywords) = apply_flags(&record, op, flags, keywords);
            if new_flags == record.flags && new_keywords == record.keywords {
                changed.push(record);
                continue;
            }
            match (record.flags & flags::SEEN != 0, new_flags & flags::SEEN != 0) {
                (false, true) => mailbox.unseen = mailbox.unseen.saturating_sub(1),
                (true, false) => mailbox.unseen += 1,
                _ => {}
            }
            record.flags = new_flags;
            record.keywords = new_keywords;
            self.touch_message(&mut batch, &mut mailbox, &mut record, ChangeKind::Flags)?;
            changed.push(record);
            written = true;
        }
        if written {
            self.put_json(&mut batch, CF_MAILBOXES, &u64_pair(user_id, mailbox_id), &mailbox)?;
            self.commit(batch)?;
            self.publish(mailbox_id, mailbox.highest_modseq);
        }
        Ok((changed, failed))
    }

    /// Copies messages into another mailbox of the same user; returns the destination's
    /// UIDVALIDITY and `(source uid, new uid)` pairs (UIDPLUS).
    pub fn copy(
        &self,
        user_id: u64,
        from: u64,
        uids: &[u32],
        to: u64,
    ) -> StoreResult<(u32, Vec<(u32, u32)>)> {
        self.copy_or_move(user_id, from, uids, to, false)
    }

    /// Copy and expunge from the source in one synced write (RFC 6851). Moving into the
    /// same mailbox gives the messages new UIDs there (RFC 6851 §3.3 allows it).
    pub fn move_messages(
        &self,
        user_id: u64,
        from: u64,
        uids: &[u32],
        to: u64,
    ) -> StoreResult<(u32, Vec<(u32, u32)>)> {
        self.copy_or_move(user_id, from, uids, to, true)
    }

    fn copy_or_move(
        &self,
        user_id: u64,
        from: u64,
        uids: &[u32],
        to: u64,
        remove: bool,
    ) -> StoreResult<(u32, Vec<(u32, u32)>)> {
        let uids = unique(uids);
        for _ in 0..LOCK_RETRIES {
            // A COPY adds references: the bodies' locks, like every writer of counts. A
            // MOVE carries each reference over with its record, and adds one for the
            // held entry when a view of the source still shows the message.
            let mut blobs = BTreeSet::new();
            for uid in &uids {
                if let Some(r) = self.get_json::<MessageRecord>(CF_MESSAGES, &message_key(from, *uid))? {
                    blobs.insert(r.blob);
                }
            }
            let mut keys = vec![mailbox_lock(from), mailbox_lock(to)];
            keys.extend(blobs.iter().map(blob_lock));
            let _guards = self.lock(&keys)?;
            let mut records = Vec::with_capacity(uids.len());
            for uid in &uids {
                if let Some(r) = self.get_json::<MessageRecord>(CF_MESSAGES, &message_key(from, *uid))? {
                    records.push(r);
                }
            }
            if records.iter().any(|r| !blobs.contains(&r.blob)) {
                // A UID's record and body never change, so this means a record appeared
                // between the two reads: impossible today, but never copy unlocked.
                continue;
            }
            let (validity, map, held) = self.copy_or_move_locked(user_id, from, &records, to, remove)?;
            drop(_guards);
            self.note_held(from, held);
            return Ok((validity, map));
        }
        Err(StoreError::Invalid(
            "the messages kept changing; try again".into(),
        ))
    }

    /// The write of [`Store::copy_or_move`]; the caller holds the mailboxes' and the
    /// bodies' locks, and gives the held entries written to [`Store::note_held`].
    #[allow(clippy::type_complexity)]
    fn copy_or_move_locked(
        &self,
        user_id: u64,
        from: u64,
        records: &[MessageRecord],
        to: u64,
        remove: bool,
    ) -> StoreResult<(u32, Vec<(u32, u32)>, Vec<(u64, u32, BlobId)>)> {
        let holding = remove && self.has_holds(from);
        let mut held = Vec::new();
        let mut source = self.mailbox(user_id, from)?;
        // Into the same mailbox the counters live in one record: `source`.
        let mut target = if from == to {
            None
        } else {
            Some(self.mailbox(user_id, to)?)
        };
        let mut batch = Batch::default();
        let mut map = Vec::with_capacity(records.len());
        let mut added: BTreeMap<BlobId, i64> = BTreeMap::new();
        for record in records {
            let copy = MessageRecord {
                uid: 0,
                modseq: 0,
                ..record.clone()
            };
            // The copy's sort key is the original's (same body), or the body's summary.
            let summary = match self.get_raw(CF_SORT_KEYS, &message_key(from, record.uid))? {
                Some(v) if v.len() >= 32 => Some(v[32..].to_vec()),
                _ => self.get_raw(CF_SUMMARIES, &record.blob)?,
            };
            let new = match target.as_mut() {
                Some(t) => self.add_message_into(&mut batch, t, copy, summary.as_deref())?,
                None => self.add_message_into(&mut batch, &mut source, copy, summary.as_deref())?,
            };
            map.push((record.uid, new.uid));
            if remove {
                self.remove_message_into(&mut batch, &mut source, record)?;
                if holding {
                    self.hold_into(&mut batch, from, source.highest_modseq, record)?;
                    held.push((source.highest_modseq, record.uid, record.blob));
                    *added.entry(record.blob).or_default() += 1;
                }
            } else {
                *added.entry(record.blob).or_default() += 1;
            }
        }
        let validity = target.as_ref().unwrap_or(&source).uid_validity;
        if map.is_empty() {
            return Ok((validity, map, held));
        }
        for (blob, count) in added {
            self.add_existing_blob_refs(&mut batch, &blob, count)?;
        }
        self.put_json(&mut batch, CF_MAILBOXES, &u64_pair(user_id, from), &source)?;
        self.commit(batch)?;
        self.publish(from, source.highest_modseq);
        if let Some(t) = &target {
            self.publish(to, t.highest_modseq);
        }
        Ok((validity, map, held))
    }

    /// Removes messages; frees bodies no longer referenced. Returns the UIDs removed.
    pub fn expunge(&self, user_id: u64, mailbox_id: u64, uids: &[u32]) -> StoreResult<Vec<u32>> {
        let uids = unique(uids);
        let mut records = Vec::with_capacity(uids.len());
        for uid in &uids {
            if let Some(r) = self.get_json::<MessageRecord>(CF_MESSAGES, &message_key(mailbox_id, *uid))? {
                records.push(r);
            }
        }
        let mut lock_keys = vec![mailbox_lock(mailbox_id)];
        lock_keys.extend(records.iter().map(|r| blob_lock(&r.blob)));
        let guards = self.lock(&lock_keys)?;
        let mut mailbox = self.mailbox(user_id, mailbox_id)?;
        let mut batch = Batch::default();
        let mut removed = Vec::new();
        let mut freed: BTreeMap<BlobId, i64> = BTreeMap::new();
        // A view that still shows them keeps them readable (`view_holds.rs`).
        let holding = self.has_holds(mailbox_id);
        let mut held = Vec::new();
        for uid in &uids {
            // Re-read under the lock: another session may have expunged it already.
            let Some(record) = self.get_json::<MessageRecord>(CF_MESSAGES, &message_key(mailbox_id, *uid))?
            else {
                continue;
            };
            if !records.iter().any(|r| r.blob == record.blob) {
                // Not locked (a copy arrived after the first read); leave it for next time.
                continue;
            }
            self.remove_message_into(&mut batch, &mut mailbox, &record)?;
            if holding {
                // The record's reference becomes the held entry's.
                self.hold_into(&mut batch, mailbox_id, mailbox.highest_modseq, &record)?;
                held.push((mailbox.highest_modseq, record.uid, record.blob));
            } else {
                *freed.entry(record.blob).or_default() += 1;
            }
            removed.push(*uid);
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        for (blob, count) in freed {
            self.release_blob_into(&mut batch, &blob, count)?;
        }
        self.put_json(&mut batch, CF_MAILBOXES, &u64_pair(user_id, mailbox_id), &mailbox)?;
        self.commit(batch)?;
        self.publish(mailbox_id, mailbox.highest_modseq);
        drop(guards);
        self.note_held(mailbox_id, held);
        Ok(removed)
    }

    /// Claims \Recent for the caller: returns the lowest UID recent for it and marks the
    /// messages below `below` (the UIDNEXT of what the caller has read) as seen by a
    /// session, so exactly one session gets each \Recent: a message that arrived after
    /// the caller's read stays recent for whoever sees it first.
    pub fn claim_recent(&self, user_id: u64, mailbox_id: u64, below: u32) -> StoreResult<u32> {
        let _guard = self.lock(&[mailbox_lock(mailbox_id)])?;
        let mut mailbox = self.mailbox(user_id, mailbox_id)?;
        let first = mailbox.recent_uid;
        let mark = below.min(mailbox.uid_next);
        if first < mark {
            mailbox.recent_uid = mark;
            let mut batch = Batch::default();
            self.put_json(&mut batch, CF_MAILBOXES, &u64_pair(user_id, mailbox_id), &mailbox)?;
            // Losing this mark in a crash only shows \Recent once more: no sync needed.
            self.commit_lazy(batch)?;
        }
        Ok(first)
    }

    // ----- internals; callers hold the locks -----

    /// Adds a message record (assigning UID and modseq), its change entry and its sort
    /// key (`summary`: the body's, when there is one), and puts the updated mailbox
    /// record in the batch.
    fn add_message_into(
        &self,
        batch: &mut Batch,
        mailbox: &mut Mailbox,
        mut record: MessageRecord,
        summary: Option<&[u8]>,
    ) -> StoreResult<MessageRecord> {
        if mailbox.uid_next == u32::MAX {
            return Err(StoreError::Invalid(format!(
                "mailbox {} has run out of UIDs",
                mailbox.name
            )));
        }
        record.uid = mailbox.uid_next;
        mailbox.uid_next += 1;
        mailbox.highest_modseq += 1;
        record.modseq = mailbox.highest_modseq;
        mailbox.exists += 1;
        mailbox.size += record.size as u64;
        if record.flags & flags::SEEN == 0 {
            mailbox.unseen += 1;
        }
        self.put_json(batch, CF_MESSAGES, &message_key(mailbox.id, record.uid), &record)?;
        if let Some(summary) = summary {
            batch.put(
                CF_SORT_KEYS,
                message_key(mailbox.id, record.uid),
                sort_key_value(&record.blob, summary),
            );
        }
        let change = ChangeRecord {
            uid: record.uid,
            modseq: record.modseq,
            kind: ChangeKind::Added,
        };
        self.put_json(batch, CF_CHANGES, &u64_pair(mailbox.id, record.modseq), &change)?;
        self.put_json(
            batch,
            CF_MAILBOXES,
            &u64_pair(mailbox.user_id, mailbox.id),
            mailbox,
        )?;
        Ok(record)
    }

    /// Gives a changed message a new modseq and moves its change-log entry.
    fn touch_message(
        &self,
        batch: &mut Batch,
        mailbox: &mut Mailbox,
        record: &mut MessageRecord,
        kind: ChangeKind,
    ) -> StoreResult<()> {
        self.delete(batch, CF_CHANGES, &u64_pair(mailbox.id, record.modseq))?;
        mailbox.highest_modseq += 1;
        record.modseq = mailbox.highest_modseq;
        self.put_json(batch, CF_MESSAGES, &message_key(mailbox.id, record.uid), record)?;
        let change = ChangeRecord {
            uid: record.uid,
            modseq: record.modseq,
            kind,
        };
        self.put_json(batch, CF_CHANGES, &u64_pair(mailbox.id, record.modseq), &change)
    }

    /// Deletes a message record and leaves an expunge tombstone; the caller handles the
    /// body reference.
    fn remove_message_into(
        &self,
        batch: &mut Batch,
        mailbox: &mut Mailbox,
        record: &MessageRecord,
    ) -> StoreResult<()> {
        self.delete(batch, CF_MESSAGES, &message_key(mailbox.id, record.uid))?;
        self.delete(batch, CF_SORT_KEYS, &message_key(mailbox.id, record.uid))?;
        self.delete(batch, CF_CHANGES, &u64_pair(mailbox.id, record.modseq))?;
        mailbox.highest_modseq += 1;
        mailbox.exists = mailbox.exists.saturating_sub(1);
        mailbox.size = mailbox.size.saturating_sub(record.size as u64);
        if record.flags & flags::SEEN == 0 {
            mailbox.unseen = mailbox.unseen.saturating_sub(1);
        }
        let tombstone = ChangeRecord {
            uid: record.uid,
            modseq: mailbox.highest_modseq,
            kind: ChangeKind::Expunged,
        };
        self.put_json(
            batch,
            CF_CHANGES,
            &u64_pair(mailbox.id, mailbox.highest_modseq),
            &tombstone,
        )
    }

    /// The summary of a body, when the server set a summariser.
    fn summarise(&self, body: &[u8]) -> Option<BodySummary> {
        self.inner.summariser.get().map(|summarise| summarise(body))
    }

    /// Adds `count` references to a body, writing it (and its `summary`) if it is new.
    /// Caller holds the body's lock.
    pub(crate) fn add_blob_refs(
        &self,
        batch: &mut Batch,
        blob: &BlobId,
        body: &[u8],
        summary: Option<&[u8]>,
        count: i64,
    ) -> StoreResult<()> {
        if count == 0 {
            return Ok(());
        }
        if self.blob_refs(blob)? <= 0 {
            self.put_body(batch, blob, body)?;
            batch.put(CF_BLOB_REFS, blob, count.to_be_bytes());
            // In the body's own batch: a body never exists without its summary once a
            // summariser is set, and the summary goes with the body (release_blob_into).
            if let Some(summary) = summary {
                batch.put(CF_SUMMARIES, blob, summary);
            }
        } else {
            batch.add_i64(CF_BLOB_REFS, blob, count);
        }
        Ok(())
    }

    /// Adds `count` references to a body some record already holds (COPY). Caller holds
    /// the body's lock. A count that is not positive means the store is damaged: the copy
    /// is refused rather than made to point at a body that may be gone.
    fn add_existing_blob_refs(&self, batch: &mut Batch, blob: &BlobId, count: i64) -> StoreResult<()> {
        if self.blob_refs(blob)? <= 0 || !self.blob_exists(blob)? {
            return Err(StoreError::Corrupt {
                cf: CF_BLOB_REFS,
                reason: format!("body {} is referenced but not counted", hex::encode(blob)),
            });
        }
        batch.add_i64(CF_BLOB_REFS, blob, count);
        Ok(())
    }

    /// Drops `count` references; deletes the body when none remain. Caller holds the
    /// body's lock.
    pub(crate) fn release_blob_into(&self, batch: &mut Batch, blob: &BlobId, count: i64) -> StoreResult<()> {
        if self.blob_refs(blob)? <= count {
            self.drop_body(batch, blob);
            self.delete(batch, CF_BLOB_REFS, blob)?;
            self.delete(batch, CF_SUMMARIES, blob)?;
        } else {
            batch.add_i64(CF_BLOB_REFS, blob, -count);
        }
        Ok(())
    }

    /// Per-user totals: (messages, bytes) over all mailboxes.
    pub fn usage(&self, user_id: u64) -> StoreResult<(u64, u64)> {
        let mut totals: HashMap<bool, u64> = HashMap::new();
        for m in self.mailboxes(user_id)? {
            *totals.entry(true).or_default() += m.exists as u64;
            *totals.entry(false).or_default() += m.size;
        }
        Ok((
            totals.get(&true).copied().unwrap_or(0),
            totals.get(&false).copied().unwrap_or(0),
        ))
    }
}

/// A `sort_keys` value: the body's id, then its summary.
pub(crate) fn sort_key_value(blob: &BlobId, summary: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(32 + summary.len());
    value.extend_from_slice(blob);
    value.extend_from_slice(summary);
    value
}

fn apply_flags(record: &MessageRecord, op: FlagOp, flags: u8, keywords: &[String]) -> (u8, Vec<String>) {
    let mut kw = record.keywords.clone();
    let new_flags = match op {
        FlagOp::Add => {
            for k in keywords {
                if !kw.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    kw.push(k.clone());
                }
            }
            record.flags | flags
        }
        FlagOp::Remove => {
            kw.retain(|x| !keywords.iter().any(|k| k.eq_ignore_ascii_case(x)));
            record.flags & !flags
        }
        FlagOp::Replace => {
            kw = keywords.to_vec();
            flags
        }
    };
    (new_flags, kw)
}

/// A mailbox name the store may create: the rules of `understudy_types::NewMailboxName`,
/// the one definition the IMAP session checks too, so no door creates a bad name.
pub fn validate_mailbox_name(name: &str) -> StoreResult<()> {
    understudy_types::NewMailboxName::new(name)
        .map(drop)
        .map_err(|e| StoreError::Invalid(e.to_string()))
}
