//! Bodies in an S3 bucket (`[store] bodies = "s3"`, `bodies.rs`) against a local S3
//! stand-in (`support/moto.rs`): the shared cases (`store/cases.rs`, `store/bodies.rs`:
//! deliver, APPEND, COPY, MOVE, expunge, retention, queue completion of identical
//! bodies, the integrity check, SIGKILL at random points) with every body an object,
//! plus what is the object store's own: orphans of a crash between a PUT and its
//! commit swept, released objects kept for the grace period, identical bodies appended
//! and expunged at once while the sweep runs never losing one, and a bucket that is
//! down or silent failing the write with nothing of it kept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_storage::mailbox::{blob_id, DeliveryRequest};
use understudy_storage::*;

#[path = "store/bodies.rs"]
mod bodies;
#[path = "store/cases.rs"]
mod cases;
#[path = "support/moto.rs"]
mod moto;

/// The store in `dir` (RocksDB records) with its bodies in a bucket of its own; the
/// sweep's grace period is 0 unless a test sets one.
pub fn open_store(
    dir: &std::path::Path,
    mut options: StoreOptions,
    clock: Arc<dyn Clock>,
) -> StoreResult<Store> {
    if matches!(options.bodies, BodyOptions::Store) {
        options.bodies = moto::bodies_for(dir, Duration::ZERO);
    }
    Store::open_with(dir, options, clock)
}

pub fn open(dir: &std::path::Path) -> Store {
    open_store(
        dir,
        StoreOptions::default(),
        Arc::new(ManualClock::new(1_700_000_000)),
    )
    .unwrap()
}

/// A second node on the same store: with RocksDB (one process) a second handle of it.
pub fn second_node(_dir: &std::path::Path, first: &Store) -> Store {
    first.clone()
}

/// Environment for a test's child process: the same stand-in.
pub fn child_env() -> Vec<(String, String)> {
    vec![(moto::ENV.to_string(), moto::endpoint())]
}

/// Seeds of the property test in `bodies.rs`: each operation that writes a new body is
/// an HTTP round trip here.
pub fn default_seeds() -> Vec<u64> {
    vec![1, 2]
}

fn request<'a>(body: &'a [u8], users: Vec<u64>) -> DeliveryRequest<'a> {
    DeliveryRequest {
        body,
        users,
        queue: vec![],
        message_id: None,
        summary: "test".into(),
    }
}

/// The body object names in the store's bucket, listed by another client (boto3).
fn objects(dir: &std::path::Path) -> BTreeSet<String> {
    moto::list(&moto::bucket_for(dir), "bodies/")
        .into_iter()
        .collect()
}

fn object_name(body: &[u8]) -> String {
    format!("bodies/{}", hex::encode(blob_id(body)))
}

fn assert_consistent(store: &Store, when: &str) {
    let report = store.check_integrity().unwrap();
    assert!(report.is_ok(), "{when}: {:#?}", report.problems);
}

#[test]
fn bodies_are_objects_in_the_bucket_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = cases::with_user(dir.path());
    assert_eq!(store.bodies_kind(), "s3");
    let body = b"Subject: in the bucket\r\n\r\nhello\r\n";
    let outcome = store.deliver(&request(body, vec![user.id])).unwrap();
    let (_, _, uid) = outcome.stored[0];
    let inbox = store.inbox(user.id).unwrap();
    assert_eq!(objects(dir.path()), BTreeSet::from([object_name(body)]));
    let (_, read) = store.message_body(user.id, inbox.id, uid).unwrap();
    assert_eq!(read, body);
    // A second copy of the same body is no second object.
    store.append(user.id, inbox.id, body, 0, &[], None).unwrap();
    assert_eq!(objects(dir.path()).len(), 1);
    assert_consistent(&store, "two copies");
}

/// An object whose bytes are not the body its name is the hash of (replaced in the
/// bucket by something else) is refused as a damaged store, never served as the body.
#[test]
fn an_object_that_is_not_its_body_is_a_store_error_not_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = cases::with_user(dir.path());
    let body = b"Subject: the real one\r\n\r\nhello\r\n";
    let uid = store.deliver(&request(body, vec![user.id])).unwrap().stored[0].2;
    let inbox = store.inbox(user.id).unwrap();
    moto::put_object(
        &moto::bucket_for(dir.path()),
        &object_name(body),
        b"Subject: forged\r\n\r\n",
    );
    let err = store.message_body(user.id, inbox.id, uid).unwrap_err();
    assert!(
        err.to_string().contains("not the body its name is the hash of"),
        "{err}"
    );
}

#[test]
fn orphan_of_a_crash_between_put_and_commit_is_swept_and_a_live_body_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = cases::with_user(dir.path());
    let bucket = moto::bucket_for(dir.path());
    // What a crash after the PUT and before its commit leaves: an object no record knows.
    let orphan = b"Subject: never committed\r\n\r\n.\r\n";
    moto::put_object(&bucket, &object_name(orphan), orphan);
    // The same state for a body that is then delivered before the sweep comes.
    let revived = b"Subject: committed later\r\n\r\n.\r\n";
    moto::put_object(&bucket, &object_name(revived), revived);
    let uid = store.deliver(&request(revived, vec![user.id])).unwrap().stored[0].2;
    assert_consistent(&store, "with an orphan (not a problem)");
    let swept = store.sweep_bodies().unwrap();
    assert_eq!(swept.orphans, 1, "{swept:?}");
    assert_eq!(objects(dir.path()), BTreeSet::from([object_name(revived)]));
    let inbox = store.inbox(user.id).unwrap();
    assert_eq!(store.message_body(user.id, inbox.id, uid).unwrap().1, revived);
    // The orphan's body delivered after the sweep is stored again.
    let uid = store.deliver(&request(orphan, vec![user.id])).unwrap().stored[0].2;
    assert_eq!(store.message_body(user.id, inbox.id, uid).unwrap().1, orphan);
    assert_eq!(store.sweep_bodies().unwrap(), SweepOutcome::default());
    assert_consistent(&store, "after the sweep");
}

#[test]
fn released_objects_are_kept_for_the_grace_period_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let options = StoreOptions {
        bodies: moto::bodies_for(dir.path(), Duration::from_secs(600)),
        ..StoreOptions::default()
    };
    let store = open_store(dir.path(), options, clock.clone()).unwrap();
    store.add_domain(&Domain::new("example.com")).unwrap();
    let user = store.create_user("anna@example.com", "Anna", None).unwrap();
    let inbox = store.inbox(user.id).unwrap();
    let gone = b"Subject: expunged\r\n\r\n.\r\n";
    let back = b"Subject: expunged, then delivered again\r\n\r\n.\r\n";
    let uid_gone = store.deliver(&request(gone, vec![user.id])).unwrap().stored[0].2;
    let uid_back = store.deliver(&request(back, vec![user.id])).unwrap().stored[0].2;
    store.expunge(user.id, inbox.id, &[uid_gone, uid_back]).unwrap();
    assert!(store.blob_refs(&blob_id(gone)).unwrap() == 0);
    let swept = store.sweep_bodies().unwrap();
    assert_eq!((swept.released, swept.waiting), (0, 2), "{swept:?}");
    assert_eq!(objects(dir.path()).len(), 2, "deleted inside the grace period");
    let uid = store.deliver(&request(back, vec![user.id])).unwrap().stored[0].2;
    clock.advance(601);
    let swept = store.sweep_bodies().unwrap();
    assert_eq!((swept.released, swept.kept), (1, 0), "{swept:?}");
    assert_eq!(objects(dir.path()), BTreeSet::from([object_name(back)]));
    assert_eq!(store.message_body(user.id, inbox.id, uid).unwrap().1, back);
    assert_consistent(&store, "after the sweep");
}

#[test]
fn identical_bodies_appended_and_expunged_at_once_while_sweeping_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = cases::with_user(dir.path());
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("Subject: shared {i}\r\n\r\nthe same body, again and again\r\n").into_bytes())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut total = SweepOutcome::default();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let s = store.sweep_bodies().unwrap();
                total.released += s.released;
                total.orphans += s.orphans;
                total.kept += s.kept;
            }
            total
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            let bodies = bodies.clone();
            let user = user.id;
            std::thread::spawn(move || {
                let mailbox = store.create_mailbox(user, &format!("box{t}"), None).unwrap().id;
                for round in 0..25 {
                    let body = &bodies[(t + round) % bodies.len()];
                    let (_, uid) = store.append(user, mailbox, body, 0, &[], None).unwrap();
                    if round % 2 == 0 {
                        store.expunge(user, mailbox, &[uid]).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let swept = sweeper.join().unwrap();
    assert_consistent(&store, "after the writers and the sweep");
    // Every message left reads back with its body.
    let mut live = BTreeSet::new();
    for mailbox in store.mailboxes(user.id).unwrap() {
        let (_, records) = store.messages(user.id, mailbox.id).unwrap();
        for record in records {
            let (_, body) = store.message_body(user.id, mailbox.id, record.uid).unwrap();
            assert_eq!(blob_id(&body), record.blob);
            live.insert(format!("bodies/{}", hex::encode(record.blob)));
        }
    }
    assert!(!live.is_empty());
    // Whatever is released is swept once nothing references it; the live ones stay.
    store.sweep_bodies().unwrap();
    assert_eq!(objects(dir.path()), live, "sweeps during the run: {swept:?}");
    eprintln!("sweeps during the run: {swept:?}; {} bodies live", live.len());
}

#[test]
fn a_bucket_that_is_down_or_silent_fails_the_write_and_keeps_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    // Refused: nothing listens on the port. Silent: a listener that never answers.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (name, port) in [("refused", refused_port), ("silent", silent_port)] {
        let sub = dir.path().join(name);
        let mut s3 = moto::options_for(&sub, Duration::ZERO);
        s3.endpoint = format!("http://127.0.0.1:{port}");
        s3.timeout = Duration::from_secs(2);
        let options = StoreOptions {
            bodies: BodyOptions::S3(s3),
            ..StoreOptions::default()
        };
        let store = Store::open_with(&sub, options, Arc::new(ManualClock::new(1_700_000_000))).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        let user = store.create_user("anna@example.com", "Anna", None).unwrap();
        let started = Instant::now();
        let body = b"Subject: x\r\n\r\n.\r\n";
        let err = store.deliver(&request(body, vec![user.id])).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, StoreError::ObjectStore(_)), "{name}: {err:?}");
        assert!(took < Duration::from_secs(10), "{name}: took {took:?}");
        let inbox = store.inbox(user.id).unwrap();
        assert_eq!(inbox.exists, 0, "{name}: a record without its body");
        assert!(store.messages(user.id, inbox.id).unwrap().1.is_empty(), "{name}");
        assert_eq!(store.blob_refs(&blob_id(body)).unwrap(), 0, "{name}: counted");
        assert!(!store.blob_exists(&blob_id(body)).unwrap(), "{name}: marked");
        // The integrity check lists the bucket: it says it cannot, rather than passing.
        assert!(
            matches!(store.check_integrity(), Err(StoreError::ObjectStore(_))),
            "{name}"
        );
        eprintln!("{name}: {err} after {took:?}");
    }
    drop(silent);
}

#[test]
fn bodies_kept_in_the_store_stay_readable_after_the_switch_and_move_into_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let in_store = StoreOptions {
        bodies: BodyOptions::Store,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), in_store, clock.clone()).unwrap();
    store.add_domain(&Domain::new("example.com")).unwrap();
    let user = store.create_user("anna@example.com", "Anna", None).unwrap();
    let inbox = store.inbox(user.id).unwrap();
    let old: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("Subject: old {i}\r\n\r\n.\r\n").into_bytes())
        .collect();
    for body in &old {
        store.deliver(&request(body, vec![user.id])).unwrap();
    }
    drop(store);
    // Switched to S3: the old bodies are read from their records, new ones go to the
    // bucket, a copy of an old body shares its record.
    let store = open_store(dir.path(), StoreOptions::default(), clock).unwrap();
    assert!(objects(dir.path()).is_empty());
    assert_eq!(store.message_body(user.id, inbox.id, 1).unwrap().1, old[0]);
    store.deliver(&request(&old[0], vec![user.id])).unwrap();
    let new = b"Subject: new\r\n\r\n.\r\n";
    store.deliver(&request(new, vec![user.id])).unwrap();
    assert_eq!(objects(dir.path()), BTreeSet::from([object_name(new)]));
    // Expunging an old body's last copy drops its record; the sweep finds no object.
    store.expunge(user.id, inbox.id, &[3]).unwrap();
    store.sweep_bodies().unwrap();
    assert_consistent(&store, "mixed");
    let mut seen = Vec::new();
    let moved = store.move_bodies_to_objects(&mut |n| seen.push(n)).unwrap();
    assert_eq!((moved, seen.len()), (2, 2));
    assert_eq!(
        objects(dir.path()),
        BTreeSet::from([object_name(&old[0]), object_name(&old[1]), object_name(new)])
    );
    assert_eq!(store.move_bodies_to_objects(&mut |_| {}).unwrap(), 0);
    for uid in [1, 2, 4, 5] {
        store.message_body(user.id, inbox.id, uid).unwrap();
    }
    assert_eq!(store.message_body(user.id, inbox.id, 2).unwrap().1, old[1]);
    assert_consistent(&store, "after the move");
}
