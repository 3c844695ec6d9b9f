//! A PostgreSQL store across a restart of PostgreSQL itself (a test binary of its own,
//! as the restart cuts every connection of the process): writes fail while it is down
//! (never reported as done), succeed again once it is back without reopening the store,
//! nothing committed is lost, the change listener reconnects (watchers are woken) and a
//! node leads again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_storage::mailbox::DeliveryRequest;
use understudy_storage::*;

#[path = "support/pg.rs"]
mod pg;

fn deliver(store: &Store, user: u64, body: &str) -> StoreResult<u32> {
    store
        .deliver(&DeliveryRequest {
            body: body.as_bytes(),
            users: vec![user],
            queue: vec![],
            message_id: None,
            summary: "test".into(),
        })
        .map(|o| o.stored[0].2)
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_store_recovers_when_postgresql_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let options = PgOptions {
        url: pg::url_for(dir.path()),
        password: None,
        pool_size: 4,
        tls: PgTls::Off,
    };
    let store = Store::open_postgres(
        &options,
        StoreOptions::default(),
        Arc::new(ManualClock::new(1_700_000_000)),
    )
    .unwrap();
    store.add_domain(&Domain::new("example.com")).unwrap();
    let user = store.create_user("anna@example.com", "Anna", None).unwrap();
    let inbox = store.inbox(user.id).unwrap();
    for i in 1..=3 {
        assert_eq!(deliver(&store, user.id, &format!("before {i}")).unwrap(), i);
    }
    // A second node: its deliveries reach the first one's watcher only through the
    // first one's change listener, which must reconnect.
    let b = Store::open_postgres(
        &options,
        StoreOptions::default(),
        Arc::new(ManualClock::new(1_700_000_000)),
    )
    .unwrap();
    wait("a node to lead", || store.leads() || b.leads());
    let mut rx = store.subscribe(inbox.id, store.inbox(user.id).unwrap().highest_modseq);

    pg::restart();

    // Pooled connections died with the server: the first attempts may fail, with an
    // error (a 4xx for SMTP), until the pool has connected again.
    let mut failures = 0;
    let uid = loop {
        match deliver(&b, user.id, "after, through the second node") {
            Ok(uid) => break uid,
            Err(e) => {
                assert!(matches!(e, StoreError::Postgres(_)), "{e}");
                failures += 1;
                assert!(failures < 50, "still failing after {failures} attempts: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(uid, 4, "UIDs go on where they were");
    let (_, records) = store.messages(user.id, inbox.id).unwrap();
    assert_eq!(
        records.iter().map(|r| r.uid).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // The first node's listener came back and woke its watcher; a node leads again.
    wait("the first node's watcher to be woken", || {
        rx.has_changed().unwrap_or(false)
    });
    wait("a node to lead again", || store.leads() || b.leads());
    let _ = rx.borrow_and_update();
}
