//! Store behaviour on the embedded RocksDB backend: the shared cases (`store/cases.rs`,
//! `store/bodies.rs`) plus what is RocksDB's own: durability across SIGKILL of the
//! writer, schema and directory checks, the schema 1 migration.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_storage::mailbox::blob_id;
use understudy_storage::*;

#[path = "store/bodies.rs"]
mod bodies;
#[path = "store/cases.rs"]
mod cases;

use cases::with_user;

pub fn open_store(dir: &std::path::Path, options: StoreOptions, clock: Arc<dyn Clock>) -> StoreResult<Store> {
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

/// Environment for a test's child process (none needed: the store is a directory).
pub fn child_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn sigkill_after_acknowledged_deliveries_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_store-bench"))
        .args([
            "--dir",
            db.to_str().unwrap(),
            "--count",
            "1000000",
            "--writers",
            "4",
            "--size",
            "2048",
            "--users",
            "8",
            "--ack",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        // "acked N user U uid X"
        acked.push((parts[3].parse::<u64>().unwrap(), parts[5].parse::<u32>().unwrap()));
        if acked.len() >= 300 || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL while writers are still delivering.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        acked.len() >= 300,
        "only {} deliveries acknowledged before the deadline",
        acked.len()
    );

    let store = open(&db);
    for (user, uid) in &acked {
        let inbox = store.inbox(*user).unwrap();
        let record = store
            .message(*user, inbox.id, *uid)
            .unwrap_or_else(|e| panic!("user {user} uid {uid} lost: {e}"));
        let body = store.body(&record.blob).unwrap();
        assert_eq!(blob_id(&body), record.blob, "body of uid {uid} damaged");
    }
    let queued = store.queue_entries(None).unwrap().len();
    assert!(
        queued >= acked.len(),
        "{queued} queue entries for {} acked deliveries",
        acked.len()
    );
}

#[test]
fn newer_schema_and_foreign_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    drop(open(&db));
    // Pretend a newer release wrote this database.
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let cfs = rocksdb::DB::list_cf(&opts, &db).unwrap();
        let raw = rocksdb::DB::open_cf(&opts, &db, cfs).unwrap();
        let meta = raw.cf_handle("meta").unwrap();
        raw.put_cf(&meta, b"schema_version", 99u32.to_be_bytes()).unwrap();
    }
    let err = Store::open(&db).err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hello").unwrap();
    let err = Store::open(&foreign).err().unwrap();
    assert!(err.to_string().contains("not an Understudy database"), "{err}");

    let damaged = dir.path().join("damaged");
    drop(open(&damaged));
    std::fs::write(damaged.join("CURRENT"), "MANIFEST-999999\n").unwrap();
    let err = Store::open(&damaged).err().unwrap();
    assert!(
        err.to_string()
            .contains("not an Understudy database or is damaged"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new").join("db");
    drop(open(&db));
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_schema_1_database_keeps_its_subscriptions_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (store, anna) = with_user(&db);
    store.create_mailbox(anna.id, "Lists/rust", None).unwrap();
    // In SST files: the raw RocksDB below has no merge operators, and replaying a WAL
    // with merges (the id counters) without them stops the replay part-way.
    store.flush().unwrap();
    drop(store);
    // Turn it into what schema 1 wrote: a `subscribed` flag in each mailbox record (Junk
    // and Archive off, the rest on), no subscriptions column family.
    let unsubscribed = ["Junk", "Archive"];
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &db).unwrap();
        let raw = rocksdb::DB::open_cf(&opts, &db, cfs).unwrap();
        raw.drop_cf("subscriptions").unwrap();
        let mailboxes = raw.cf_handle("mailboxes").unwrap();
        let records: Vec<_> = raw
            .iterator_cf(&mailboxes, rocksdb::IteratorMode::Start)
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), DEFAULT_MAILBOXES.len() + 1);
        for (key, value) in records {
            let mut record: serde_json::Value = serde_json::from_slice(&value).unwrap();
            let name = record["name"].as_str().unwrap().to_string();
            record["subscribed"] = serde_json::Value::Bool(!unsubscribed.contains(&name.as_str()));
            raw.put_cf(&mailboxes, key, serde_json::to_vec(&record).unwrap())
                .unwrap();
        }
        let meta = raw.cf_handle("meta").unwrap();
        raw.put_cf(&meta, b"schema_version", 1u32.to_be_bytes()).unwrap();
    }
    for _ in 0..2 {
        let store = open(&db);
        let mut expected: Vec<String> = DEFAULT_MAILBOXES
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| !unsubscribed.contains(&n.as_str()))
            .chain(["Lists/rust".to_string()])
            .collect();
        expected.sort();
        assert_eq!(store.subscriptions(anna.id).unwrap(), expected);
        assert_eq!(
            store.mailboxes(anna.id).unwrap().len(),
            DEFAULT_MAILBOXES.len() + 1
        );
        assert!(store.check_integrity().unwrap().is_ok());
    }
    // Migrated once: schema 2 recorded, the flags gone from the records.
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, &db).unwrap();
    let raw = rocksdb::DB::open_cf_for_read_only(&opts, &db, cfs, false).unwrap();
    let meta = raw.cf_handle("meta").unwrap();
    assert_eq!(
        raw.get_cf(&meta, b"schema_version").unwrap().unwrap(),
        SCHEMA_VERSION.to_be_bytes()
    );
    let mailboxes = raw.cf_handle("mailboxes").unwrap();
    for item in raw.iterator_cf(&mailboxes, rocksdb::IteratorMode::Start) {
        let (_, value) = item.unwrap();
        assert!(!String::from_utf8_lossy(&value).contains("subscribed"));
    }
}

/// Seeds of the property test in `bodies.rs` when `BODIES_SEED` is not set.
pub fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}

/// With one node, a lease left by a killed earlier run (another node id) is released
/// when the runner starts: the entry is due at once, not at the lease's end.
#[test]
fn leases_of_an_earlier_run_are_released_on_a_single_node_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    store.add_domain(&Domain::new("example.com")).unwrap();
    let id = cases::queue_one(&store, 1_000, "stale");
    assert_eq!(store.claim_entries(&[id], 1_000, 60).unwrap().len(), 1);
    drop(store);
    let store = open_store(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
    assert!(store.due_entries(1_001, 10).unwrap().is_empty());
    assert_eq!(store.release_stale_leases(1_001, 200).unwrap(), 1);
    let due = store.due_entries(1_001, 10).unwrap();
    assert_eq!((due.len(), due[0].lease), (1, None));
}
