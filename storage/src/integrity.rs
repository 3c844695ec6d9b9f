//! A consistency check of mailboxes, messages, bodies and the change log, read from one
//! snapshot: every message record's body exists, every reference count equals the
//! records, held entries (`view_holds.rs`) and queue entries that hold the body, no body
//! is kept without references, each mailbox's counters match its messages, and its
//! change log has exactly one entry per live message. The concurrency tests run it after every round; it is also what an
//! operator would want after restoring a backup.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::db::{decode, read_i64, IterMode, Store};
use crate::error::StoreResult;
use crate::keys::*;
use crate::model::*;

/// What [`Store::check_integrity`] found wrong; empty when the store is consistent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    pub problems: Vec<String>,
    /// Message records seen.
    pub messages: usize,
    /// Distinct bodies seen.
    pub bodies: usize,
}

impl IntegrityReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct MailboxTally {
    exists: u32,
    size: u64,
    unseen: u32,
    max_uid: u32,
    max_modseq: u64,
    /// Live messages' modseqs, to compare with the change log.
    modseqs: HashMap<u32, u64>,
}

impl Store {
    /// Checks the invariants the mail store relies on; see the module comment.
    pub fn check_integrity(&self) -> StoreResult<IntegrityReport> {
        let snapshot = self.snapshot()?;
        let mut report = IntegrityReport::default();
        let mut problem = |text: String| report.problems.push(text);

        let mut mailboxes: HashMap<u64, Mailbox> = HashMap::new();
        for (_, v) in self.scan_prefix_at(snapshot.as_ref(), CF_MAILBOXES, &[])? {
            let m: Mailbox = decode(CF_MAILBOXES, &v)?;
            mailboxes.insert(m.id, m);
        }

        let mut references: BTreeMap<BlobId, i64> = BTreeMap::new();
        let mut tallies: HashMap<u64, MailboxTally> = HashMap::new();
        let mut messages = 0;
        for (k, v) in self.scan_prefix_at(snapshot.as_ref(), CF_MESSAGES, &[])? {
            let Some((mailbox_id, uid)) = split_message_key(&k) else {
                problem(format!("message key {} is malformed", hex::encode(&k)));
                continue;
            };
            let record: MessageRecord = decode(CF_MESSAGES, &v)?;
            messages += 1;
            if record.uid != uid {
                problem(format!(
                    "message {mailbox_id}/{uid} says it is uid {}",
                    record.uid
                ));
            }
            if !mailboxes.contains_key(&mailbox_id) {
                problem(format!("message {mailbox_id}/{uid} belongs to no mailbox"));
            }
            *references.entry(record.blob).or_default() += 1;
            let t = tallies.entry(mailbox_id).or_default();
            t.exists += 1;
            t.size += u64::from(record.size);
            if record.flags & flags::SEEN == 0 {
                t.unseen += 1;
            }
            t.max_uid = t.max_uid.max(uid);
            t.max_modseq = t.max_modseq.max(record.modseq);
            t.modseqs.insert(uid, record.modseq);
        }
        for (_, v) in self.scan_prefix_at(snapshot.as_ref(), CF_QUEUE, &[])? {
            let entry: QueueEntry = decode(CF_QUEUE, &v)?;
            *references.entry(entry.blob).or_default() += 1;
        }
        // Expunged messages kept for the views that still show them (`view_holds.rs`).
        for (k, v) in self.scan_prefix_at(snapshot.as_ref(), CF_HELD, &[])? {
            let held: crate::view_holds::HeldMessage = decode(CF_HELD, &v)?;
            if split_message_key(&k).map(|(_, uid)| uid) != Some(held.record.uid) {
                problem(format!(
                    "held message key {} does not match its record",
                    hex::encode(&k)
                ));
            }
            *references.entry(held.record.blob).or_default() += 1;
        }

        let blobs_cf = CF_BLOBS;
        let refs_cf = CF_BLOB_REFS;
        let mut counted: BTreeMap<BlobId, i64> = BTreeMap::new();
        for item in snapshot.iter(refs_cf, IterMode::Start)? {
            let (k, v) = item?;
            let Ok(blob) = BlobId::try_from(&k[..]) else {
                problem(format!("reference count key {} is malformed", hex::encode(&k)));
                continue;
            };
            counted.insert(blob, read_i64(&v).unwrap_or(i64::MIN));
        }
        let mut stored: Vec<BlobId> = Vec::new();
        let mut marked: Vec<BlobId> = Vec::new();
        for (cf, into) in [(blobs_cf, &mut stored), (CF_BODY_OBJECTS, &mut marked)] {
            for item in snapshot.iter(cf, IterMode::Start)? {
                let (k, _) = item?;
                match BlobId::try_from(&k[..]) {
                    Ok(blob) => into.push(blob),
                    Err(_) => problem(format!("body key {} in {cf} is malformed", hex::encode(&k))),
                }
            }
        }
        // Bodies in the S3 object store: each marker needs its object (listed after
        // the snapshot, so a body released since may be gone: only missing objects of
        // bodies still marked now count).
        if let Some(objects) = self.listed_objects()? {
            let listed: BTreeSet<BlobId> = objects.into_iter().map(|(blob, _)| blob).collect();
            for blob in &marked {
                if !listed.contains(blob) && self.blob_exists(blob)? {
                    problem(format!("body {} is not in the object store", hex::encode(blob)));
                }
            }
        }
        stored.extend(marked);
        stored.sort_unstable();
        stored.dedup();
        for (blob, count) in &references {
            if stored.binary_search(blob).is_err() {
                problem(format!("body {} missing ({count} references)", hex::encode(blob)));
            }
            let recorded = counted.get(blob).copied().unwrap_or(0);
            if recorded != *count {
                problem(format!(
                    "body {} counted {recorded}, referenced {count}",
                    hex::encode(blob)
                ));
            }
        }
        for (blob, recorded) in &counted {
            if !references.contains_key(blob) {
                problem(format!(
                    "body {} counted {recorded} but nothing refers to it",
                    hex::encode(blob)
                ));
            }
        }
        let summaries_cf = CF_SUMMARIES;
        for item in snapshot.iter(summaries_cf, IterMode::Start)? {
            let (k, _) = item?;
            let known = BlobId::try_from(&k[..]).is_ok_and(|blob| stored.binary_search(&blob).is_ok());
            if !known {
                problem(format!(
                    "summary {} of a body that is not stored",
                    hex::encode(&k)
                ));
            }
        }
        for blob in &stored {
            if !references.contains_key(blob) {
                problem(format!(
                    "body {} stored but nothing refers to it",
                    hex::encode(blob)
                ));
            }
        }

        for (id, m) in &mailboxes {
            let empty = MailboxTally::default();
            let t = tallies.get(id).unwrap_or(&empty);
            if m.exists != t.exists || m.size != t.size || m.unseen != t.unseen {
                problem(format!(
                    "mailbox {id} says {} messages, {} octets, {} unseen; holds {}, {}, {}",
                    m.exists, m.size, m.unseen, t.exists, t.size, t.unseen
                ));
            }
            if t.exists > 0 && m.uid_next <= t.max_uid {
                problem(format!(
                    "mailbox {id} UIDNEXT {} not above uid {}",
                    m.uid_next, t.max_uid
                ));
            }
            if m.highest_modseq < t.max_modseq {
                problem(format!(
                    "mailbox {id} HIGHESTMODSEQ {} below a message's {}",
                    m.highest_modseq, t.max_modseq
                ));
            }
            let mut live: HashMap<u32, u64> = HashMap::new();
            for (k, v) in self.scan_prefix_at(snapshot.as_ref(), CF_CHANGES, &u64_key(*id))? {
                let change: ChangeRecord = decode(CF_CHANGES, &v)?;
                let key_modseq = split_u64_pair(&k).map(|(_, b)| b);
                if key_modseq != Some(change.modseq) {
                    problem(format!("change of mailbox {id} filed under the wrong modseq"));
                }
                if change.modseq > m.highest_modseq {
                    problem(format!(
                        "change {} of mailbox {id} above HIGHESTMODSEQ {}",
                        change.modseq, m.highest_modseq
                    ));
                }
                if change.kind != ChangeKind::Expunged && live.insert(change.uid, change.modseq).is_some() {
                    problem(format!("mailbox {id} uid {} has two change entries", change.uid));
                }
            }
            if live != t.modseqs {
                problem(format!(
                    "mailbox {id}: the change log's live entries do not match its messages"
                ));
            }
        }
        // A sort key for each message at most, with the message's body.
        for (k, v) in self.scan_prefix_at(snapshot.as_ref(), CF_SORT_KEYS, &[])? {
            let Some((mailbox_id, uid)) = split_message_key(&k) else {
                problem(format!("sort key {} is malformed", hex::encode(&k)));
                continue;
            };
            let record: Option<MessageRecord> =
                self.get_json_at(snapshot.as_ref(), CF_MESSAGES, &message_key(mailbox_id, uid))?;
            match record {
                Some(r) if v.get(..32) == Some(&r.blob[..]) => {}
                Some(_) => problem(format!("sort key of {mailbox_id}/{uid} names another body")),
                None => problem(format!("sort key of {mailbox_id}/{uid}, which does not exist")),
            }
        }
        for id in tallies.keys() {
            if !mailboxes.contains_key(id) {
                problem(format!("messages of mailbox {id}, which does not exist"));
            }
        }
        report.messages = messages;
        report.bodies = references.len();
        Ok(report)
    }
}
