//! The shared store cases (`store/cases.rs`, `store/bodies.rs`) on the PostgreSQL
//! backend, against a throwaway PostgreSQL 15 started for this test process
//! (`support/pg.rs`), each store in a schema of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;

use understudy_storage::*;

#[path = "store/bodies.rs"]
mod bodies;
#[path = "store/cases.rs"]
mod cases;
#[path = "support/pg.rs"]
mod pg;

pub fn open_store(dir: &std::path::Path, options: StoreOptions, clock: Arc<dyn Clock>) -> StoreResult<Store> {
    let pg = PgOptions {
        url: pg::url_for(dir),
        password: None,
        pool_size: 4,
        tls: PgTls::Off,
    };
    Store::open_postgres(&pg, options, clock)
}

pub fn open(dir: &std::path::Path) -> Store {
    open_store(
        dir,
        StoreOptions::default(),
        Arc::new(ManualClock::new(1_700_000_000)),
    )
    .unwrap()
}

/// A second node on the same store: another store opened on the same schema, as a
/// second server would.
pub fn second_node(dir: &std::path::Path, _first: &Store) -> Store {
    open(dir)
}

/// Environment for a test's child process: the same PostgreSQL server.
pub fn child_env() -> Vec<(String, String)> {
    vec![(pg::ENV.to_string(), pg::base())]
}

/// Seeds of the property test in `bodies.rs` when `BODIES_SEED` is not set: one, as
/// every operation is a few round trips to the server here (about 10 s a seed).
pub fn default_seeds() -> Vec<u64> {
    vec![1]
}

/// Two nodes (two stores on one schema, as two servers would be) delivering to one
/// INBOX at once: every UID once, dense, and a reader on either node never sees UID n+1
/// without n (commit order is UID order across nodes).
#[test]
fn two_nodes_deliver_to_one_mailbox_with_uids_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, user) = cases::with_user(dir.path());
    let b = open(dir.path());
    let inbox = a.inbox(user.id).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader on node B while both nodes write.
    let reader = {
        let (b, done) = (b.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (_, records) = b.messages(user.id, inbox.id).unwrap();
                let uids: Vec<u32> = records.iter().map(|r| r.uid).collect();
                assert_eq!(
                    uids,
                    (1..=uids.len() as u32).collect::<Vec<_>>(),
                    "a gap seen on node B"
                );
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(t, store)| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        cases::deliver(&store, vec![user.id], format!("node {t} message {i}").as_bytes())
                            .stored[0]
                            .2
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut uids: Vec<u32> = writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    uids.sort_unstable();
    assert_eq!(uids, (1..=100).collect::<Vec<u32>>());
    for store in [&a, &b] {
        let (mailbox, records) = store.messages(user.id, inbox.id).unwrap();
        assert_eq!(mailbox.uid_next, 101);
        assert_eq!(records.len(), 100);
    }
    // Ids handed out by both nodes never collide.
    let mut ids: Vec<u64> = (0..6)
        .map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            node.create_user(&format!("u{i}@example.com"), "U", None)
                .unwrap()
                .id
        })
        .collect();
    ids.push(user.id);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7);
}

/// A watcher on node A wakes for a delivery through node B (LISTEN/NOTIFY), and node
/// A's account lookups see node B's changes at once (no stale cache).
#[test]
fn a_delivery_on_one_node_wakes_a_watcher_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, user) = cases::with_user(dir.path());
    let b = open(dir.path());
    let inbox = a.inbox(user.id).unwrap();
    let mut rx = a.subscribe(inbox.id, inbox.highest_modseq);
    assert!(!rx.has_changed().unwrap());
    // The listener may still be connecting: deliver until A hears, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut sent = 0;
    while !rx.has_changed().unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "node A never heard of node B's delivery"
        );
        if sent < 5 {
            cases::deliver(&b, vec![user.id], format!("through B {sent}").as_bytes());
            sent += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(*rx.borrow_and_update() > inbox.highest_modseq);

    assert!(matches!(
        a.resolve_recipient("anna@example.com").unwrap(),
        accounts::Recipient::Local(_)
    ));
    b.remove_user("anna@example.com").unwrap();
    assert!(!matches!(
        a.resolve_recipient("anna@example.com").unwrap(),
        accounts::Recipient::Local(_)
    ));
}

/// Exactly one node of a shared store leads the background work (queue drain, outage
/// monitor, retention), and when it goes another takes over.
#[test]
fn one_node_leads_and_another_takes_over_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    let b = open(dir.path());
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait("a leader", &|| a.leads() || b.leads());
    assert!(!(a.leads() && b.leads()), "both nodes lead");
    let (leader, other) = if a.leads() { (a, b) } else { (b, a) };
    drop(leader);
    wait("the other node to take over", &|| other.leads());
}

/// Two nodes draining one queue: each claims only what the other has not; a node whose
/// lease ran out (it died, or hung) has its entries taken over, and its late outcome is
/// discarded while the new owner's counts.
#[test]
fn two_nodes_claim_queue_entries_apart_and_a_lapsed_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let a = open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    let b = open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    assert_ne!(a.node_id(), b.node_id());
    a.add_domain(&Domain::new("example.com")).unwrap();
    let ids: Vec<u64> = (0..6)
        .map(|n| cases::queue_one(&a, 1_000, &format!("m{n}")))
        .collect();
    // Both look at the due index at once and try for every entry.
    let (ta, tb) = {
        let (a, b, ids_a, ids_b) = (a.clone(), b.clone(), ids.clone(), ids.clone());
        (
            std::thread::spawn(move || a.claim_entries(&ids_a, 1_000, 60).unwrap()),
            std::thread::spawn(move || b.claim_entries(&ids_b, 1_000, 60).unwrap()),
        )
    };
    let (got_a, got_b) = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!(got_a.len() + got_b.len(), ids.len(), "{got_a:?} {got_b:?}");
    for e in got_a.iter().chain(&got_b) {
        let owner = if got_a.iter().any(|x| x.id == e.id) {
            a.node_id()
        } else {
            b.node_id()
        };
        assert_eq!(e.lease.unwrap().node, owner);
    }
    assert!(
        got_a.iter().all(|e| got_b.iter().all(|x| x.id != e.id)),
        "an entry claimed by both"
    );
    // Node A "dies" holding its entries: after the lease, B takes them over.
    let (mine, theirs) = if got_a.is_empty() {
        (&got_b, &got_a)
    } else {
        (&got_a, &got_b)
    };
    let (owner, other) = if got_a.is_empty() { (&b, &a) } else { (&a, &b) };
    let _ = theirs;
    let ids_held: Vec<u64> = mine.iter().map(|e| e.id).collect();
    assert!(other.claim_entries(&ids_held, 1_059, 60).unwrap().is_empty());
    clock.set(1_060);
    let taken = other.claim_entries(&ids_held, 1_060, 60).unwrap();
    assert_eq!(taken.len(), ids_held.len());
    let old = mine[0].lease.unwrap();
    let late =
        owner.record_attempt_and_mark(mine[0].id, &cases::delivered(), 1_060, None, Some((&old, false)));
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    let new = taken[0].lease.unwrap();
    other
        .record_attempt_and_mark(mine[0].id, &cases::delivered(), 1_060, None, Some((&new, false)))
        .unwrap();
    assert!(a.queue_entry(mine[0].id).unwrap().is_none());
}

/// Issue 14 item 11 across nodes: node A's view holds what node B expunges until A's
/// horizon passes it; and when A dies with a view open, what it held goes once A's
/// lease has ended (`view_holds.rs`). The store is consistent at every step.
#[test]
fn a_view_on_one_node_keeps_what_another_node_expunges() {
    let dir = tempfile::tempdir().unwrap();
    let (a, user) = cases::with_user(dir.path());
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let b = open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    let inbox = a.inbox(user.id).unwrap().id;
    for n in 1..=3 {
        let body = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
        a.append(user.id, inbox, body.as_bytes(), 0, &[], None).unwrap();
    }
    let consistent = |store: &Store| {
        let report = store.check_integrity().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    };
    let mut hold = a.hold_view(inbox).unwrap().expect("a hold on a shared store");
    hold.advance(a.inbox(user.id).unwrap().highest_modseq);
    assert_eq!(b.expunge(user.id, inbox, &[2]).unwrap(), vec![2]);
    // A's view was not told: the message reads on either node.
    let (_, body) = a.message_body_or_held(user.id, inbox, 2).unwrap();
    assert_eq!(body, b"Subject: 2\r\n\r\nbody 2\r\n");
    assert_eq!(b.held_messages().unwrap().len(), 1);
    consistent(&b);
    // Told: the horizon passes the expunge and the entry goes with its body.
    hold.advance(b.inbox(user.id).unwrap().highest_modseq);
    assert!(a.held_messages().unwrap().is_empty());
    assert!(matches!(
        a.message_body_or_held(user.id, inbox, 2),
        Err(StoreError::NotFound(_))
    ));
    consistent(&a);

    // A's view has not caught up with this one.
    b.expunge(user.id, inbox, &[3]).unwrap();
    assert_eq!(a.held_messages().unwrap().len(), 1);
    // Node A "dies" with its view open: the hold is never dropped, and A's lease (renewed
    // by A's clock, which stands still) ends by B's clock.
    std::mem::forget(hold);
    drop(a);
    assert_eq!(b.sweep_view_holds().unwrap(), 0, "A's lease still runs");
    assert_eq!(b.held_messages().unwrap().len(), 1);
    clock.advance(NODE_LEASE_SECS + 1);
    assert_eq!(b.sweep_view_holds().unwrap(), 1, "A's lease has ended");
    assert!(b.held_messages().unwrap().is_empty());
    consistent(&b);
}
