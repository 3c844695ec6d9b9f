//! The store's behaviour that protocol replies rely on, the same on every backend (the
//! including file's `open` and `open_store` choose which): UIDs and modseqs that only
//! grow, shared bodies freed exactly when unused, alias resolution, change log and
//! notification, caches that never hide a change.

use std::sync::Arc;

use understudy_storage::accounts::Recipient;
use understudy_storage::mailbox::{blob_id, DeliveryRequest};
use understudy_storage::*;

use super::open;

pub fn with_user(dir: &std::path::Path) -> (Store, User) {
    let store = open(dir);
    store.add_domain(&Domain::new("example.com")).unwrap();
    let user = store.create_user("anna@example.com", "Anna", None).unwrap();
    (store, user)
}

pub fn deliver(store: &Store, users: Vec<u64>, body: &[u8]) -> mailbox::DeliveryOutcome {
    store
        .deliver(&DeliveryRequest {
            body,
            users,
            queue: vec![],
            message_id: None,
            summary: "test".into(),
        })
        .unwrap()
}

#[test]
fn uids_strictly_increase_and_are_never_reused_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = with_user(dir.path());
    let inbox = store.inbox(user.id).unwrap();
    let uids: Vec<u32> = (0..5)
        .map(|i| deliver(&store, vec![user.id], format!("m{i}").as_bytes()).stored[0].2)
        .collect();
    assert_eq!(uids, vec![1, 2, 3, 4, 5]);
    store.expunge(user.id, inbox.id, &[4, 5]).unwrap();
    drop(store);
    let store = open(dir.path());
    let next = deliver(&store, vec![user.id], b"after restart").stored[0].2;
    assert_eq!(next, 6, "UIDs 4 and 5 were expunged but must never be reused");
    let (uidvalidity, uid) = store
        .append(user.id, inbox.id, b"appended", flags::SEEN, &[], None)
        .unwrap();
    assert_eq!((uidvalidity, uid), (inbox.uid_validity, 7));
}

#[test]
fn concurrent_writers_to_one_mailbox_get_every_uid_once_in_commit_order() {
    // Deliveries and appends release the mailbox lock before their fsync (group commit);
    // UIDs must still be unique, dense and in the mailbox in order, across a reopen.
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = with_user(dir.path());
    let inbox = store.inbox(user.id).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let body = format!("thread {t} message {i}");
                        if i % 4 == 0 {
                            store
                                .append(user.id, inbox.id, body.as_bytes(), 0, &[], None)
                                .unwrap()
                                .1
                        } else {
                            deliver(&store, vec![user.id], body.as_bytes()).stored[0].2
                        }
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut uids: Vec<u32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    uids.sort_unstable();
    assert_eq!(uids, (1..=320).collect::<Vec<u32>>());
    drop(store);
    let store = open(dir.path());
    let (mailbox, records) = store.messages(user.id, inbox.id).unwrap();
    assert_eq!(mailbox.uid_next, 321);
    assert_eq!(
        records.iter().map(|r| r.uid).collect::<Vec<_>>(),
        (1..=320).collect::<Vec<u32>>()
    );
}

#[test]
fn modseq_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = with_user(dir.path());
    let inbox = store.inbox(user.id).unwrap();
    let trash = store.mailbox_by_name(user.id, "Trash").unwrap().unwrap();
    let mut last = inbox.highest_modseq;
    let mut check = |store: &Store| {
        let now = store.mailbox(user.id, inbox.id).unwrap().highest_modseq;
        assert!(now > last, "highest modseq went from {last} to {now}");
        last = now;
    };
    deliver(&store, vec![user.id], b"one");
    check(&store);
    deliver(&store, vec![user.id], b"two");
    check(&store);
    let (changed, _) = store
        .store_flags(user.id, inbox.id, &[1], FlagOp::Add, flags::SEEN, &[], None)
        .unwrap();
    assert_eq!(
        changed[0].modseq,
        store.mailbox(user.id, inbox.id).unwrap().highest_modseq
    );
    check(&store);
    // UNCHANGEDSINCE below the message's modseq: refused, nothing changes.
    let (changed, failed) = store
        .store_flags(user.id, inbox.id, &[1], FlagOp::Add, flags::FLAGGED, &[], Some(1))
        .unwrap();
    assert!(changed.is_empty());
    assert_eq!(failed, vec![1]);
    store.move_messages(user.id, inbox.id, &[2], trash.id).unwrap();
    check(&store);
    store.expunge(user.id, inbox.id, &[1]).unwrap();
    check(&store);
    let (_, changes) = store.changes_since(user.id, inbox.id, 0).unwrap();
    let modseqs: Vec<u64> = changes.iter().map(|(c, _)| c.modseq).collect();
    assert!(modseqs.windows(2).all(|w| w[0] < w[1]), "{modseqs:?}");
    let kinds: Vec<(u32, ChangeKind)> = changes.iter().map(|(c, _)| (c.uid, c.kind)).collect();
    assert_eq!(kinds, vec![(2, ChangeKind::Expunged), (1, ChangeKind::Expunged)]);
}

#[test]
fn shared_body_is_freed_only_when_every_copy_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let bob = store.create_user("bob@example.com", "Bob", None).unwrap();
    let body = b"Subject: shared\r\n\r\nsame body for two mailboxes\r\n";
    let outcome = deliver(&store, vec![anna.id, bob.id], body);
    let blob = blob_id(body);
    assert_eq!(store.blob_refs(&blob).unwrap(), 2);
    let (_, anna_box, anna_uid) = outcome.stored[0];
    let (_, bob_box, bob_uid) = outcome.stored[1];
    // A COPY adds a third reference to the same body.
    let archive = store.mailbox_by_name(anna.id, "Archive").unwrap().unwrap();
    let (_, map) = store.copy(anna.id, anna_box, &[anna_uid], archive.id).unwrap();
    assert_eq!(store.blob_refs(&blob).unwrap(), 3);
    store.expunge(anna.id, anna_box, &[anna_uid]).unwrap();
    store.expunge(anna.id, archive.id, &[map[0].1]).unwrap();
    assert!(
        store.blob_exists(&blob).unwrap(),
        "freed while Bob still has a copy"
    );
    store.expunge(bob.id, bob_box, &[bob_uid]).unwrap();
    assert!(
        !store.blob_exists(&blob).unwrap(),
        "not freed after the last copy went"
    );
    assert_eq!(store.blob_refs(&blob).unwrap(), 0);
}

#[test]
fn queue_copy_keeps_body_until_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let body = b"Subject: q\r\n\r\nqueued\r\n";
    let outcome = store
        .deliver(&DeliveryRequest {
            body,
            users: vec![anna.id],
            queue: vec![NewQueueEntry {
                kind: QueueKind::Relay,
                domain: "example.com".into(),
                mail_from: "x@example.net".into(),
                recipients: vec![("anna@example.com".into(), Some(anna.id))],
                next_attempt: 0,
                sent_copy: false,
            }],
            message_id: Some("<q@x>".into()),
            summary: "test".into(),
        })
        .unwrap();
    let (_, inbox, uid) = outcome.stored[0];
    store.expunge(anna.id, inbox, &[uid]).unwrap();
    assert!(store.blob_exists(&blob_id(body)).unwrap());
    let due = store.due_entries(0, 10).unwrap();
    assert_eq!(due.len(), 1);
    store
        .record_attempt(
            due[0].id,
            &[(
                "anna@example.com".into(),
                queue::AttemptOutcome::Delivered("250 ok".into()),
            )],
            0,
        )
        .unwrap();
    assert!(store.queue_entry(due[0].id).unwrap().is_none());
    assert!(!store.blob_exists(&blob_id(body)).unwrap());
    let kinds: Vec<String> = store
        .tracking_events(outcome.tracking_id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec!["received", "stored", "queued", "delivered"]);
    assert_eq!(
        store.tracking_ids_for_message_id("<q@x>").unwrap(),
        vec![outcome.tracking_id]
    );
}

#[test]
fn aliases_resolve_to_their_user() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    store.add_domain(&Domain::new("example.org")).unwrap();
    store.add_alias("Sales@Example.com", "anna@example.com").unwrap();
    store.add_alias("anna@example.org", "anna@example.com").unwrap();
    for address in [
        "sales@example.com",
        "SALES@example.com",
        "anna@example.org",
        "anna@example.com",
    ] {
        assert_eq!(
            store.resolve_recipient(address).unwrap(),
            Recipient::Local(anna.clone()),
            "{address}"
        );
    }
    assert_eq!(
        store.resolve_recipient("nobody@example.com").unwrap(),
        Recipient::Unknown
    );
    assert_eq!(
        store.resolve_recipient("anna@elsewhere.net").unwrap(),
        Recipient::NotLocal
    );
    assert!(store.address_belongs_to(anna.id, "sales@example.com").unwrap());
    assert!(matches!(
        store.add_alias("sales@example.com", "anna@example.com"),
        Err(StoreError::AlreadyExists(_))
    ));
    store.remove_alias("sales@example.com").unwrap();
    assert_eq!(
        store.resolve_recipient("sales@example.com").unwrap(),
        Recipient::Unknown
    );
}

#[test]
fn new_users_have_the_special_use_mailboxes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let names: Vec<(String, Option<SpecialUse>)> = store
        .mailboxes(anna.id)
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.special_use))
        .collect();
    let expected: Vec<(String, Option<SpecialUse>)> = DEFAULT_MAILBOXES
        .iter()
        .map(|(n, s)| (n.to_string(), *s))
        .collect();
    assert_eq!(names, expected);
    let validities: std::collections::HashSet<u32> = store
        .mailboxes(anna.id)
        .unwrap()
        .iter()
        .map(|m| m.uid_validity)
        .collect();
    assert_eq!(
        validities.len(),
        6,
        "UIDVALIDITY must differ between mailboxes created in the same second"
    );
}

#[test]
fn rename_inbox_moves_messages_and_leaves_inbox_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    deliver(&store, vec![anna.id], b"a");
    deliver(&store, vec![anna.id], b"b");
    store.rename_mailbox(anna.id, "inbox", "Old").unwrap();
    let old = store.mailbox_by_name(anna.id, "Old").unwrap().unwrap();
    assert_eq!(old.exists, 2);
    assert_eq!(store.inbox(anna.id).unwrap().exists, 0);
    store.create_mailbox(anna.id, "Projects/2026", None).unwrap();
    store.rename_mailbox(anna.id, "Projects", "Work").unwrap_err();
    store.create_mailbox(anna.id, "Projects", None).unwrap();
    store.rename_mailbox(anna.id, "Projects", "Work").unwrap();
    assert!(store.mailbox_by_name(anna.id, "Work/2026").unwrap().is_some());
    assert!(matches!(
        store.create_mailbox(anna.id, "a/../b", None),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn recent_is_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let inbox = store.inbox(anna.id).unwrap();
    deliver(&store, vec![anna.id], b"a");
    assert_eq!(store.claim_recent(anna.id, inbox.id, u32::MAX).unwrap(), 1);
    assert_eq!(
        store.claim_recent(anna.id, inbox.id, u32::MAX).unwrap(),
        2,
        "second session must see nothing recent"
    );
    deliver(&store, vec![anna.id], b"b");
    // A session that read the mailbox before "c" arrived claims only "b": "c" stays
    // recent for the next session to see it.
    let seen_uid_next = store.mailbox(anna.id, inbox.id).unwrap().uid_next;
    deliver(&store, vec![anna.id], b"c");
    assert_eq!(store.claim_recent(anna.id, inbox.id, seen_uid_next).unwrap(), 2);
    assert_eq!(store.claim_recent(anna.id, inbox.id, u32::MAX).unwrap(), 3);
}

#[test]
fn a_write_wakes_the_mailbox_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let inbox = store.inbox(anna.id).unwrap();
    let mut rx = store.subscribe(inbox.id, inbox.highest_modseq);
    assert!(!rx.has_changed().unwrap());
    deliver(&store, vec![anna.id], b"wake up");
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), inbox.highest_modseq + 1);
}

#[test]
fn retention_removes_old_mail_from_mailboxes_but_not_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let store = super::open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    let mut domain = Domain::new("example.com");
    domain.retention_days = 30;
    store.add_domain(&domain).unwrap();
    let anna = store.create_user("anna@example.com", "Anna", None).unwrap();
    let old_body = b"Subject: old\r\n\r\nold\r\n";
    store
        .deliver(&DeliveryRequest {
            body: old_body,
            users: vec![anna.id],
            queue: vec![NewQueueEntry {
                kind: QueueKind::Relay,
                domain: "example.com".into(),
                mail_from: "x@example.net".into(),
                recipients: vec![("anna@example.com".into(), Some(anna.id))],
                next_attempt: 0,
                sent_copy: false,
            }],
            message_id: None,
            summary: "old".into(),
        })
        .unwrap();
    for i in 0..5 {
        deliver(&store, vec![anna.id], format!("old {i}").as_bytes());
    }
    clock.advance(31 * 86_400);
    deliver(&store, vec![anna.id], b"recent");
    let mut pauses = 0;
    let removed = store.apply_retention(2, || pauses += 1).unwrap();
    assert_eq!(removed, 6);
    assert_eq!(pauses, 3, "six old messages in batches of two");
    let inbox = store.inbox(anna.id).unwrap();
    assert_eq!(inbox.exists, 1);
    // The relay queue keeps its copy (and so the body) until it is redelivered.
    assert_eq!(store.queue_entries(None).unwrap().len(), 1);
    assert!(store.blob_exists(&blob_id(old_body)).unwrap());
}

/// Domain settings and local recipients are cached in memory; every change through the
/// store is seen at once, and a removed domain is no longer protected.
#[test]
fn account_changes_are_seen_at_once_despite_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.add_domain(&Domain::new("example.net")).unwrap();
    let mut bea = store.create_user("bea@example.net", "Bea", None).unwrap();
    assert_eq!(
        store.cached_recipient("bea@example.net"),
        None,
        "not looked up yet"
    );
    assert_eq!(
        store.resolve_recipient("Bea@Example.net").unwrap(),
        Recipient::Local(bea.clone())
    );
    // A shared store (PostgreSQL) keeps no recipient cache: other nodes change users.
    let cached = (store.backend_name() == "rocksdb").then(|| Recipient::Local(bea.clone()));
    assert_eq!(store.cached_recipient("bea@example.net"), cached);
    bea.status = UserStatus::Inactive;
    store.update_user(&bea).unwrap();
    assert_eq!(store.cached_recipient("bea@example.net"), None);
    assert_eq!(
        store.resolve_recipient("bea@example.net").unwrap(),
        Recipient::Local(bea.clone())
    );
    store.remove_user("bea@example.net").unwrap();
    assert_eq!(store.cached_recipient("bea@example.net"), None);
    assert_eq!(
        store.resolve_recipient("bea@example.net").unwrap(),
        Recipient::Unknown
    );
    let first = store.domain("Example.NET").unwrap().unwrap();
    assert_eq!(first.delivery_mode, DeliveryMode::Both);
    let mut changed = first.clone();
    changed.delivery_mode = DeliveryMode::Relay;
    store.update_domain(&changed).unwrap();
    assert_eq!(
        store.domain("example.net").unwrap().unwrap().delivery_mode,
        DeliveryMode::Relay
    );
    store.remove_domain("example.net").unwrap();
    assert!(store.domain("example.net").unwrap().is_none());
    assert_eq!(
        store.resolve_recipient("anyone@example.net").unwrap(),
        Recipient::NotLocal
    );
}

#[test]
fn a_body_summary_is_written_with_the_body_shared_by_copies_and_freed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    // Before a summariser is set: no summary, and one can be added afterwards.
    let old = b"Subject: old\r\n\r\nwritten before summaries\r\n";
    let (_, inbox, old_uid) = deliver(&store, vec![anna.id], old).stored[0];
    assert_eq!(store.summaries(anna.id, inbox, &[old_uid]).unwrap()[0].2, None);
    store.set_summariser(Arc::new(|body: &[u8]| BodySummary {
        bytes: body[..9].to_vec(),
        sent_date: None,
    }));
    store.put_summary(&blob_id(old), b"late").unwrap();

    let body = b"Subject: new\r\n\r\nsummarised when written\r\n";
    let (_, _, uid) = deliver(&store, vec![anna.id], body).stored[0];
    let archive = store.mailbox_by_name(anna.id, "Archive").unwrap().unwrap();
    let (_, map) = store.copy(anna.id, inbox, &[uid], archive.id).unwrap();
    let got = store.summaries(anna.id, inbox, &[uid, 999, old_uid]).unwrap();
    assert_eq!(
        got,
        vec![
            (uid, blob_id(body), Some(b"Subject: ".to_vec())),
            (old_uid, blob_id(old), Some(b"late".to_vec())),
        ]
    );
    assert_eq!(
        store.summaries(anna.id, archive.id, &[map[0].1]).unwrap()[0].2,
        Some(b"Subject: ".to_vec())
    );
    store.expunge(anna.id, inbox, &[uid, old_uid]).unwrap();
    assert!(store.check_integrity().unwrap().is_ok());
    store.expunge(anna.id, archive.id, &[map[0].1]).unwrap();
    // Gone with the last copy; a late summary for a body that is gone is not written.
    store.put_summary(&blob_id(body), b"too late").unwrap();
    let report = store.check_integrity().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(store.summaries(anna.id, inbox, &[uid]).unwrap().is_empty());
}

#[test]
fn move_into_the_same_mailbox_gives_a_new_uid_and_keeps_the_body() {
    // RFC 6851 allows it; the store used to refuse it (issue 14 defect 9).
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = with_user(dir.path());
    let inbox = store.inbox(user.id).unwrap();
    deliver(&store, vec![user.id], b"Subject: x\r\n\r\nbody\r\n");
    let (validity, pairs) = store.move_messages(user.id, inbox.id, &[1], inbox.id).unwrap();
    assert_eq!((validity, pairs), (inbox.uid_validity, vec![(1, 2)]));
    let (mailbox, messages) = store.messages(user.id, inbox.id).unwrap();
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2]);
    assert_eq!(mailbox.exists, 1);
    assert_eq!(
        store.message_body(user.id, inbox.id, 2).unwrap().1,
        b"Subject: x\r\n\r\nbody\r\n"
    );
    assert!(store.check_integrity().unwrap().is_ok());
}

#[test]
fn a_message_left_only_in_the_trash_counts_as_deleted_for_redelivery() {
    // Delete in Roundcube (and most clients) is a move to the Trash; the queue runner
    // must not send such a message on to the primary (issue 20).
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = with_user(dir.path());
    let inbox = store.inbox(user.id).unwrap();
    let archive = store.mailbox_by_name(user.id, "Archive").unwrap().unwrap();
    let trash = store.mailbox_by_name(user.id, "Trash").unwrap().unwrap();
    let kept = deliver(&store, vec![user.id], b"Subject: kept\r\n\r\nbody\r\n").tracking_id;
    let binned = deliver(&store, vec![user.id], b"Subject: binned\r\n\r\nbody\r\n").tracking_id;
    store.move_messages(user.id, inbox.id, &[1], archive.id).unwrap();
    store.move_messages(user.id, inbox.id, &[2], trash.id).unwrap();
    assert!(store.user_has_tracking_id(user.id, kept).unwrap());
    assert!(!store.user_has_tracking_id(user.id, binned).unwrap());
    let (held, _) = store.user_tracking_snapshot(user.id).unwrap();
    assert!(held.contains(&kept) && !held.contains(&binned), "{held:?}");
    // Taken back out of the Trash, it is kept again.
    store.move_messages(user.id, trash.id, &[1], inbox.id).unwrap();
    assert!(store.user_has_tracking_id(user.id, binned).unwrap());
}

#[test]
fn subscriptions_outlive_delete_follow_rename_and_go_with_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let defaults: Vec<String> = {
        let mut names: Vec<String> = DEFAULT_MAILBOXES.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(store.subscriptions(anna.id).unwrap(), defaults);
    // CREATE does not subscribe; SUBSCRIBE needs the mailbox.
    store.create_mailbox(anna.id, "Work", None).unwrap();
    store.create_mailbox(anna.id, "Work/2024", None).unwrap();
    assert_eq!(store.subscriptions(anna.id).unwrap(), defaults);
    assert!(matches!(
        store.set_subscribed(anna.id, "Nowhere", true),
        Err(StoreError::NotFound(_))
    ));
    store.set_subscribed(anna.id, "Work", true).unwrap();
    store.set_subscribed(anna.id, "Work/2024", true).unwrap();
    store.set_subscribed(anna.id, "inbox", false).unwrap();
    // RENAME moves the subscriptions of the mailbox and its children.
    store.rename_mailbox(anna.id, "Work", "Jobs").unwrap();
    let names = store.subscriptions(anna.id).unwrap();
    assert!(names.contains(&"Jobs".to_string()) && names.contains(&"Jobs/2024".to_string()));
    assert!(
        !names.iter().any(|n| n.starts_with("Work") || n == "INBOX"),
        "{names:?}"
    );
    // DELETE leaves the subscription (RFC 3501 §6.3.9), which survives a reopen and can
    // still be removed.
    store.delete_mailbox(anna.id, "Jobs/2024").unwrap();
    drop(store);
    let store = open(dir.path());
    let (mailboxes, names) = store.mailboxes_and_subscriptions(anna.id).unwrap();
    assert!(!mailboxes.iter().any(|m| m.name == "Jobs/2024"));
    assert!(names.contains(&"Jobs/2024".to_string()), "{names:?}");
    store.set_subscribed(anna.id, "Jobs/2024", false).unwrap();
    assert!(matches!(
        store.set_subscribed(anna.id, "Jobs/2024", false),
        Err(StoreError::NotFound(_))
    ));
    store.remove_user("anna@example.com").unwrap();
    assert!(store.subscriptions(anna.id).unwrap().is_empty());
}

/// One relay entry for anna, due at `at`.
pub fn queue_one(store: &Store, at: i64, tag: &str) -> u64 {
    store
        .deliver(&DeliveryRequest {
            body: format!("Subject: {tag}\r\n\r\nqueued\r\n").as_bytes(),
            users: vec![],
            queue: vec![NewQueueEntry {
                kind: QueueKind::Relay,
                domain: "example.com".into(),
                mail_from: "x@example.net".into(),
                recipients: vec![("anna@example.com".into(), None)],
                next_attempt: at,
                sent_copy: false,
            }],
            message_id: Some(format!("<{tag}@x>")),
            summary: "test".into(),
        })
        .unwrap()
        .queue_ids[0]
}

pub fn delivered() -> Vec<(String, queue::AttemptOutcome)> {
    vec![(
        "anna@example.com".into(),
        queue::AttemptOutcome::Delivered("250 ok".into()),
    )]
}

/// A claimed entry is out of the due range until its lease ends; claimed again after
/// that, the outcome of the attempt under the old lease is discarded (nothing written)
/// and the one under the new lease is recorded; a release makes it due at once.
#[test]
fn a_queue_lease_keeps_an_entry_from_a_second_attempt_and_fences_late_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = super::open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    store.add_domain(&Domain::new("example.com")).unwrap();
    let id = queue_one(&store, 1_000, "lease");
    let claimed = store.claim_entries(&[id], 1_000, 60).unwrap();
    assert_eq!(claimed.len(), 1);
    let first = claimed[0].lease.unwrap();
    assert_eq!((first.node, first.until), (store.node_id(), 1_060));
    assert!(
        store.due_entries(1_059, 10).unwrap().is_empty(),
        "leased, not due"
    );
    assert!(
        store.claim_entries(&[id], 1_059, 60).unwrap().is_empty(),
        "claimed twice"
    );

    // Renewed while the attempt runs: still ours, later end.
    clock.set(1_030);
    let renewed = store
        .renew_lease(id, &first, 1_030, 60)
        .unwrap()
        .unwrap()
        .lease
        .unwrap();
    assert_eq!(renewed.until, 1_090);
    // The lease runs out (the attempt hung, its node died): the entry is due, and a
    // new claim takes it over.
    clock.set(1_090);
    assert_eq!(store.due_entries(1_090, 10).unwrap().len(), 1);
    let second = store.claim_entries(&[id], 1_090, 60).unwrap()[0].lease.unwrap();
    assert_ne!(second, renewed);
    assert!(store.renew_lease(id, &renewed, 1_090, 60).unwrap().is_none());
    // The late outcome of the first attempt is discarded ...
    let late = store.record_attempt_and_mark(id, &delivered(), 1_090, None, Some((&renewed, false)));
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    let entry = store.queue_entry(id).unwrap().unwrap();
    assert_eq!(entry.recipients[0].status, RecipientStatus::Pending);
    assert_eq!(entry.lease, Some(second));
    // ... the new owner's deferral is recorded and ends the lease.
    let deferred = vec![(
        "anna@example.com".to_string(),
        queue::AttemptOutcome::Deferred("451 later".into()),
    )];
    let entry = store
        .record_attempt_and_mark(id, &deferred, 1_200, None, Some((&second, false)))
        .unwrap();
    assert_eq!((entry.lease, entry.next_attempt), (None, 1_200));
    assert_eq!(entry.recipients[0].attempts, 1);
    // `queue retry` and outage release do not pull a leased entry forward.
    clock.set(1_200);
    let third = store.claim_entries(&[id], 1_200, 60).unwrap()[0].lease.unwrap();
    store.retry_at(id, 1_200).unwrap();
    store.postpone_entries(&[id], 1_200).unwrap();
    assert_eq!(store.queue_entry(id).unwrap().unwrap().next_attempt, 1_260);
    // Released (a runner stopping): due at once, claimable again.
    assert_eq!(store.release_leases(&[(id, third)], 1_201).unwrap(), 1);
    assert_eq!(store.due_entries(1_201, 10).unwrap().len(), 1);
    let fourth = store.claim_entries(&[id], 1_201, 60).unwrap()[0].lease.unwrap();
    store
        .record_attempt_and_mark(id, &delivered(), 1_201, None, Some((&fourth, false)))
        .unwrap();
    assert!(store.queue_entry(id).unwrap().is_none(), "delivered and gone");
}

/// One outage change: the transition, its notice (a notification queue entry) and the
/// memo, for `expected` state and memo.
fn outage_change<'a>(
    body: &'a [u8],
    transition: Option<(outage::OutagePhase, outage::OutageState)>,
    memo: outage_ops::OutageMemo,
) -> outage::OutageChange<'a> {
    outage::OutageChange {
        transitions: transition.into_iter().collect(),
        notices: vec![DeliveryRequest {
            body,
            users: vec![],
            queue: vec![NewQueueEntry {
                kind: QueueKind::Notification,
                domain: "example.com".into(),
                mail_from: "understudy@mx.test".into(),
                recipients: vec![("ops@example.net".into(), None)],
                next_attempt: 0,
                sent_copy: false,
            }],
            message_id: Some(format!("<{}@mx.test>", body.len())),
            summary: "notice".into(),
        }],
        memo: Some(memo),
    }
}

fn notices(store: &Store) -> Vec<QueueEntry> {
    store
        .queue_entries(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == QueueKind::Notification)
        .collect()
}

/// Two nodes (on RocksDB: two handles of the one store) decide from the same outage
/// state at once: exactly one change commits, with its transition, its one notice and
/// its memo; the other writes nothing and is told of the conflict. Deciding again from
/// the stored state then commits; a decision from a stale state never does.
#[test]
fn two_nodes_deciding_from_one_outage_state_commit_exactly_one_change() {
    use outage::{OutagePhase, OutageState};
    use outage_ops::OutageMemo;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = with_user(dir.path());
    let b = super::second_node(dir.path(), &a);
    let (state, memo) = (
        a.outage_state("example.com").unwrap(),
        a.outage_memo("example.com").unwrap(),
    );
    assert_eq!(state, OutageState::default(), "nothing stored yet");
    let engaged = OutageState {
        phase: OutagePhase::Outage,
        since: a.now(),
        reason: "3 failed probes".into(),
        manual: false,
    };
    let engaged_memo = OutageMemo {
        outage_started_at: Some(a.now()),
        ..OutageMemo::default()
    };
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let results: Vec<_> = [
        (a.clone(), "lost seen by A"),
        (b.clone(), "lost seen by B, longer"),
    ]
    .into_iter()
    .map(|(store, body)| {
        let (state, memo, engaged, engaged_memo, barrier) = (
            state.clone(),
            memo.clone(),
            engaged.clone(),
            engaged_memo.clone(),
            barrier.clone(),
        );
        std::thread::spawn(move || {
            let change = outage_change(
                body.as_bytes(),
                Some((OutagePhase::Normal, engaged)),
                engaged_memo,
            );
            barrier.wait();
            store.record_outage_change("example.com", (&state, &memo), &change)
        })
    })
    .collect::<Vec<_>>()
    .into_iter()
    .map(|t| t.join().unwrap())
    .collect();
    let committed: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(committed.len(), 1, "{results:?}");
    assert!(
        results.iter().any(|r| matches!(r, Err(StoreError::Conflict(_)))),
        "{results:?}"
    );
    for store in [&a, &b] {
        assert_eq!(store.outage_state("example.com").unwrap(), engaged);
        assert_eq!(store.outage_memo("example.com").unwrap(), engaged_memo);
        assert_eq!(notices(store).len(), 1, "one notice, whoever won");
        assert_eq!(store.outage_history("example.com").unwrap().len(), 1);
    }

    // The loser re-reads and decides again: spooling began (a memo change, no
    // transition), from the state the winner wrote.
    let spooling_memo = OutageMemo {
        spooling_notified_since: Some(engaged.since),
        ..engaged_memo.clone()
    };
    let stale = outage_change(b"spooling, stale", None, spooling_memo.clone());
    assert!(matches!(
        b.record_outage_change("example.com", (&state, &memo), &stale),
        Err(StoreError::Conflict(_))
    ));
    let fresh = outage_change(b"spooling", None, spooling_memo.clone());
    let queued = b
        .record_outage_change("example.com", (&engaged, &engaged_memo), &fresh)
        .unwrap();
    assert_eq!(queued.len(), 1);
    // The same decision once more (a node that missed the memo change) is refused.
    assert!(matches!(
        a.record_outage_change("example.com", (&engaged, &engaged_memo), &fresh),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(notices(&a).len(), 2);
    assert_eq!(a.outage_memo("example.com").unwrap(), spooling_memo);
    // The notice index (the dashboard's list): the two committed notices, oldest first,
    // each pointing at its message's tracking record; none for another domain or time.
    let indexed = a.outage_notice_ids("Example.com", engaged.since).unwrap();
    assert_eq!(indexed.len(), 2, "{indexed:?}");
    assert!(indexed[0] < indexed[1]);
    for id in &indexed {
        assert!(
            a.tracking_events(*id)
                .unwrap()
                .iter()
                .any(|e| e.kind == "received"),
            "{id}"
        );
    }
    assert!(a.outage_notice_ids("other.org", 0).unwrap().is_empty());
    assert!(a
        .outage_notice_ids("example.com", a.now() + 1)
        .unwrap()
        .is_empty());
}

#[test]
fn sort_keys_follow_their_messages_and_a_whole_mailbox_is_read_in_one_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    // Stored before there was a summariser: neither a summary nor a sort key.
    let old = b"Subject: old\r\n\r\nwritten before sort keys\r\n";
    let (_, inbox, old_uid) = deliver(&store, vec![anna.id], old).stored[0];
    store.set_summariser(Arc::new(|body: &[u8]| BodySummary {
        bytes: body[..13].to_vec(),
        sent_date: None,
    }));
    store.put_summary(&blob_id(old), b"late").unwrap();
    let bodies: Vec<Vec<u8>> = (0..300)
        .map(|n| format!("Subject: {n:04}\r\n\r\nbody\r\n").into_bytes())
        .collect();
    for body in &bodies {
        deliver(&store, vec![anna.id], body);
    }
    let all = |mailbox: u64| -> Vec<u32> {
        store
            .messages(anna.id, mailbox)
            .unwrap()
            .1
            .iter()
            .map(|m| m.uid)
            .collect()
    };
    let uids = all(inbox);
    // 301 asked: the scan; the old message through its record, in the order asked.
    let mut asked = uids.clone();
    asked.reverse();
    let got = store.summaries(anna.id, inbox, &asked).unwrap();
    assert_eq!(got.len(), 301);
    assert_eq!(got[300], (old_uid, blob_id(old), Some(b"late".to_vec())));
    assert_eq!(
        got[299],
        (uids[1], blob_id(&bodies[0]), Some(b"Subject: 0000".to_vec()))
    );
    assert_eq!(got[0].2, Some(b"Subject: 0299".to_vec()));
    // The old message's sort key is written now, and it is its message's.
    assert!(store.check_integrity().unwrap().is_ok());
    assert_eq!(store.summaries(anna.id, inbox, &asked).unwrap(), got);

    // COPY and MOVE carry the keys over (a few: read one by one), expunge drops them.
    let archive = store.mailbox_by_name(anna.id, "Archive").unwrap().unwrap().id;
    store.copy(anna.id, inbox, &[old_uid, uids[1]], archive).unwrap();
    store.move_messages(anna.id, inbox, &uids[2..4], archive).unwrap();
    store.move_messages(anna.id, inbox, &uids[4..5], inbox).unwrap();
    store.expunge(anna.id, inbox, &uids[5..10]).unwrap();
    let report = store.check_integrity().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let in_archive: Vec<Option<Vec<u8>>> = store
        .summaries(anna.id, archive, &all(archive))
        .unwrap()
        .into_iter()
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(
        in_archive,
        vec![
            Some(b"late".to_vec()),
            Some(b"Subject: 0000".to_vec()),
            Some(b"Subject: 0001".to_vec()),
            Some(b"Subject: 0002".to_vec()),
        ]
    );
    let left = store.summaries(anna.id, inbox, &all(inbox)).unwrap();
    assert_eq!(left.len(), 301 - 2 - 5);
    assert_eq!(left.last().unwrap().2, Some(b"Subject: 0003".to_vec()));
    // Deleting the mailbox takes its keys with it.
    store.delete_mailbox(anna.id, "Archive").unwrap();
    let report = store.check_integrity().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// A record written with a summariser carries its sent date (the Date header, or the
/// internal date without one), through APPEND, delivery and COPY; a record written
/// before has none until `put_sent_dates` fills it in, which leaves the modseq alone,
/// does not overwrite a date already there and survives a reopen.
#[test]
fn records_carry_their_sent_date_and_old_ones_get_it_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let (store, anna) = with_user(dir.path());
    let old = b"Date: Mon, 2 Jan 2023 10:00:00 +0000\r\nSubject: old\r\n\r\nx\r\n";
    let (_, inbox, old_uid) = deliver(&store, vec![anna.id], old).stored[0];
    // A stand-in for the IMAP summariser: "Date-Secs: <n>" gives the date.
    store.set_summariser(Arc::new(|body: &[u8]| BodySummary {
        bytes: b"s".to_vec(),
        sent_date: std::str::from_utf8(body)
            .ok()
            .and_then(|t| t.strip_prefix("Date-Secs: "))
            .and_then(|t| t.split("\r\n").next())
            .and_then(|n| n.parse().ok()),
    }));
    let (_, _, dated) = deliver(&store, vec![anna.id], b"Date-Secs: 1600000000\r\n\r\nx\r\n").stored[0];
    let (_, _, undated) = deliver(&store, vec![anna.id], b"Subject: none\r\n\r\nx\r\n").stored[0];
    let (_, appended) = store
        .append(
            anna.id,
            inbox,
            b"Subject: appended\r\n\r\ny\r\n",
            0,
            &[],
            Some((1_500_000_000, 60)),
        )
        .unwrap();
    let archive = store.mailbox_by_name(anna.id, "Archive").unwrap().unwrap();
    let (_, map) = store.copy(anna.id, inbox, &[dated], archive.id).unwrap();
    let sent = |mailbox: u64, uid: u32| store.message(anna.id, mailbox, uid).unwrap().sent_date;
    assert_eq!(
        sent(inbox, old_uid),
        None,
        "written before there was a summariser"
    );
    assert_eq!(sent(inbox, dated), Some(1_600_000_000));
    assert_eq!(
        sent(inbox, undated),
        Some(1_700_000_000),
        "no Date: the internal date"
    );
    assert_eq!(
        sent(inbox, appended),
        Some(1_500_000_000),
        "APPEND's internal date"
    );
    assert_eq!(sent(archive.id, map[0].1), Some(1_600_000_000), "a copy keeps it");

    let before = store.message(anna.id, inbox, old_uid).unwrap();
    let modseq = store.mailbox(anna.id, inbox).unwrap().highest_modseq;
    store
        .put_sent_dates(inbox, &[(old_uid, 1_672_653_600), (dated, 1), (999, 5)])
        .unwrap();
    let after = store.message(anna.id, inbox, old_uid).unwrap();
    assert_eq!(after.sent_date, Some(1_672_653_600));
    assert_eq!(after.modseq, before.modseq, "no client-visible change");
    assert_eq!(store.mailbox(anna.id, inbox).unwrap().highest_modseq, modseq);
    assert_eq!(sent(inbox, dated), Some(1_600_000_000), "a known date stays");
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.message(anna.id, inbox, old_uid).unwrap().sent_date,
        Some(1_672_653_600)
    );
    assert!(store.check_integrity().unwrap().is_ok());
}
