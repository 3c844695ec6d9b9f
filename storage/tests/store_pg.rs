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

/// Environment for a test's child process: the same PostgreSQL server.
pub fn child_env() -> Vec<(String, String)> {
    vec![(pg::ENV.to_string(), pg::base())]
}

/// Seeds of the property test in `bodies.rs` when `BODIES_SEED` is not set: one, as
/// every operation is a few round trips to the server here (about 10 s a seed).
pub fn default_seeds() -> Vec<u64> {
    vec![1]
}

/// Until ids, locks, caches and notifications are shared across nodes, one node only
/// may have a PostgreSQL store open: a second one is refused (after waiting a moment
/// for a store just closed), and gets in once the first closes.
#[test]
fn a_second_node_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = open_store(
        dir.path(),
        StoreOptions::default(),
        Arc::new(ManualClock::new(1_700_000_000)),
    )
    .err()
    .expect("a second node opened the store");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(first);
    let again = open(dir.path());
    assert_eq!(again.backend_name(), "postgres");
}
