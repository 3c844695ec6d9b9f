//! Bodies in an S3 bucket (moto, `support/moto.rs`) under the PostgreSQL backend
//! (`support/pg.rs`), where the body locks are PostgreSQL advisory locks shared by
//! several nodes: the property and SIGKILL tests of `store/bodies.rs`, and two nodes
//! appending and expunging the same bodies while the other node sweeps, never losing one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use understudy_storage::mailbox::blob_id;
use understudy_storage::*;

#[path = "store/bodies.rs"]
mod bodies;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/pg.rs"]
mod pg;

pub fn open_store(
    dir: &std::path::Path,
    mut options: StoreOptions,
    clock: Arc<dyn Clock>,
) -> StoreResult<Store> {
    if matches!(options.bodies, BodyOptions::Store) {
        options.bodies = moto::bodies_for(dir, Duration::ZERO);
    }
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

/// Environment for a test's child process: the same PostgreSQL server and stand-in.
pub fn child_env() -> Vec<(String, String)> {
    vec![
        (pg::ENV.to_string(), pg::base()),
        (moto::ENV.to_string(), moto::endpoint()),
    ]
}

pub fn default_seeds() -> Vec<u64> {
    vec![1]
}

#[test]
fn two_nodes_append_and_expunge_identical_bodies_while_one_sweeps_and_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.add_domain(&Domain::new("example.com")).unwrap();
    let user = a.create_user("anna@example.com", "Anna", None).unwrap().id;
    let b = open(dir.path());
    let bodies: Vec<Vec<u8>> = (0..2)
        .map(|i| format!("Subject: shared {i}\r\n\r\nthe same body on both nodes\r\n").into_bytes())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let b = b.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sweeps = 0u64;
            let mut released = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                released += b.sweep_bodies().unwrap().released;
                sweeps += 1;
            }
            (sweeps, released)
        })
    };
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .flat_map(|(node, store)| (0..2).map(move |t| (node, t, store.clone())))
        .map(|(node, t, store)| {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mailbox = store
                    .create_mailbox(user, &format!("node{node}-{t}"), None)
                    .unwrap()
                    .id;
                for round in 0..15 {
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
    let (sweeps, released) = sweeper.join().unwrap();
    let report = a.check_integrity().unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    let mut live = BTreeSet::new();
    for mailbox in a.mailboxes(user).unwrap() {
        let (_, records) = a.messages(user, mailbox.id).unwrap();
        for record in records {
            let (_, body) = b.message_body(user, mailbox.id, record.uid).unwrap();
            assert_eq!(blob_id(&body), record.blob);
            live.insert(format!("bodies/{}", hex::encode(record.blob)));
        }
    }
    a.sweep_bodies().unwrap();
    let listed: BTreeSet<String> = moto::list(&moto::bucket_for(dir.path()), "bodies/")
        .into_iter()
        .collect();
    assert_eq!(listed, live);
    eprintln!("two nodes: {sweeps} sweeps by node B, {released} objects released during the run");
}
