//! Opening the store over its backend, schema checks, id counters, striped locks and
//! synced writes.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::pg::{PgBackend, PgOptions};
use crate::backend::rocks::RocksBackend;
pub(crate) use crate::backend::KeyValue;
pub(crate) use crate::backend::{
    Batch, Direction, IterMode, KvBackend, KvIter, LockClass, ReadView, RemoteLock,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::notify::Notifier;

/// Version of the on-disk layout this binary reads and writes.
/// 2: subscriptions in their own column family (`subscriptions.rs`), no longer a flag in
/// each mailbox record; a version 1 database is migrated when opened.
pub const SCHEMA_VERSION: u32 = 2;

pub(crate) const SCHEMA_KEY: &[u8] = b"schema_version";
const LOCK_STRIPES: usize = 1024;
const OUTER_LOCK_STRIPES: usize = 64;

/// Counters kept in `meta` and merged with `max`, so that two writers whose batches land
/// in either order never move a counter backwards.
pub(crate) const COUNTER_USER: &[u8] = b"next_user_id";
pub(crate) const COUNTER_MAILBOX: &[u8] = b"next_mailbox_id";
pub(crate) const COUNTER_QUEUE: &[u8] = b"next_queue_id";
pub(crate) const COUNTER_TRACKING: &[u8] = b"next_tracking_id";
pub(crate) const COUNTER_UIDVALIDITY: &[u8] = b"last_uid_validity";

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Sync every promised write (the default, and the only safe setting in production).
    pub sync_writes: bool,
    /// Block cache for reads, bytes.
    pub cache_bytes: usize,
    /// Collect RocksDB statistics (benchmarks read the WAL sync count).
    pub statistics: bool,
    /// All column families' memtables together, bytes. RocksDB's default is 64 MiB for
    /// each of them, so a busy outage (queue, messages, changes, tracking all written at
    /// once) held half a gigabyte of memtables; past this cap the largest one is flushed.
    pub write_buffer_bytes: usize,
    /// Where bodies are kept: in the store (the default) or an S3 object store.
    pub bodies: crate::bodies::BodyOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_writes: true,
            cache_bytes: 64 << 20,
            statistics: false,
            write_buffer_bytes: 64 << 20,
            bodies: crate::bodies::BodyOptions::Store,
        }
    }
}

pub(crate) struct Counters {
    user: u64,
    mailbox: u64,
    queue: u64,
    tracking: u64,
    uid_validity: u64,
}

/// The store. Cheap to clone; every clone shares one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// Turns a message body into the summary kept beside it (`CF_SUMMARIES`). The store
/// does not know what is in it; the server wires in the IMAP crate's SORT/THREAD keys.
pub type Summariser = Arc<dyn Fn(&[u8]) -> BodySummary + Send + Sync>;

/// What a [`Summariser`] makes of a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodySummary {
    /// Kept beside the body and in each of its messages' sort keys, opaque to the store.
    pub bytes: Vec<u8>,
    /// The Date header in Unix seconds, if it parses: each new record's `sent_date`
    /// (its internal date when `None`).
    pub sent_date: Option<i64>,
}

pub(crate) struct Inner {
    /// The engine (`backend/`): RocksDB in `path`, or PostgreSQL.
    pub(crate) backend: Box<dyn KvBackend>,
    pub path: PathBuf,
    locks: Vec<Mutex<()>>,
    /// Stripes for the outer level (a user's list of mailboxes), taken before and
    /// around the inner ones (`locks`). Kept apart so that an outer lock and the inner
    /// stripes taken under it can never be the same mutex: with one set, deleting a
    /// mailbox of a thousand distinct bodies locked nearly every stripe, its own outer
    /// stripe among them, and waited for itself.
    outer_locks: Vec<Mutex<()>>,
    counters: Mutex<Counters>,
    /// Per-domain queue summary kept beside the queue (`queue_index.rs`).
    pub(crate) queue_index: Mutex<Option<crate::queue_index::QueueIndex>>,
    pub notifier: Arc<Notifier>,
    pub clock: Arc<dyn Clock>,
    sync: bool,
    /// User id to INBOX id. An INBOX is never deleted and keeps its id (renaming INBOX
    /// moves its messages out), so an entry never goes stale; it saves a scan of the
    /// user's mailboxes on every delivery.
    pub(crate) inbox_ids: Mutex<HashMap<u64, u64>>,
    /// Domains and recipients read on every RCPT and delivery (`accounts.rs`).
    pub(crate) accounts_cache: Mutex<crate::accounts::AccountsCache>,
    /// Outage states read on every delivery (`outage.rs`).
    pub(crate) outage_cache: Mutex<crate::outage::OutageCache>,
    /// Computes a body's summary when the body is first written (`Store::set_summariser`).
    pub(crate) summariser: std::sync::OnceLock<Summariser>,
    /// This open store's node id in queue leases (`lease.rs`), and its claims so far.
    pub(crate) node_id: u64,
    pub(crate) claims: std::sync::atomic::AtomicU64,
    /// The selected IMAP views' holds on expunged messages (`view_holds.rs`).
    pub(crate) holds: Mutex<crate::view_holds::HoldRegistry>,
    /// Where new bodies go: None, in the store's records; or an S3 bucket (`bodies.rs`).
    pub(crate) bodies: Option<crate::bodies::ObjectBodies>,
}

/// Locks held (`Store::lock`, `Store::lock_outer`): the engine's, then this process's,
/// released when dropped.
pub(crate) struct Held<'a> {
    _remote: Option<RemoteLock>,
    _local: Vec<MutexGuard<'a, ()>>,
}

pub(crate) fn read_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl Store {
    /// Opens (creating if absent) the database in `dir`, which is created mode 0700.
    pub fn open(dir: &Path) -> StoreResult<Store> {
        Store::open_with(dir, StoreOptions::default(), Arc::new(SystemClock))
    }

    /// Opens the embedded RocksDB store in `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions, clock: Arc<dyn Clock>) -> StoreResult<Store> {
        let (backend, existed) = RocksBackend::open(dir, &options)?;
        Store::open_backend(Box::new(backend), existed, dir.to_path_buf(), options, clock)
    }

    /// Opens the store shared by several nodes in PostgreSQL, creating its tables when
    /// absent.
    pub fn open_postgres(pg: &PgOptions, options: StoreOptions, clock: Arc<dyn Clock>) -> StoreResult<Store> {
        let (backend, existed) = PgBackend::open(pg)?;
        Store::open_backend(
            Box::new(backend),
            existed,
            PathBuf::from("postgres"),
            options,
            clock,
        )
    }

    /// Checks the schema of (or initialises) an opened backend and loads the counters.
    /// `existed`: the backend held a database before, so a missing schema record means
    /// it is not Understudy's.
    pub(crate) fn open_backend(
        backend: Box<dyn KvBackend>,
        existed: bool,
        path: PathBuf,
        options: StoreOptions,
        clock: Arc<dyn Clock>,
    ) -> StoreResult<Store> {
        let path_text = path.display().to_string();
        match backend.get(CF_META, SCHEMA_KEY)? {
            Some(v) => {
                let found = v.as_slice().try_into().map(u32::from_be_bytes).map_err(|_| {
                    StoreError::NotUnderstudy {
                        path: path_text.clone(),
                        reason: "schema version record is damaged".into(),
                    }
                })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        path: path_text,
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < 2 {
                    let moved = crate::subscriptions::migrate_from_v1(backend.as_ref())?;
                    tracing::info!(
                        moved,
                        "store: schema 1 -> 2, subscriptions moved out of the mailbox records"
                    );
                }
            }
            None if existed => {
                return Err(StoreError::NotUnderstudy {
                    path: path_text,
                    reason: "no schema version record".into(),
                });
            }
            None => {
                let mut batch = Batch::default();
                batch.put(CF_META, SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes());
                backend.write(batch, true)?;
            }
        }
        let counter = |name: &[u8]| -> StoreResult<u64> {
            Ok(backend
                .get(CF_META, name)?
                .and_then(|v| read_u64(&v))
                .unwrap_or(0))
        };
        let counters = Counters {
            user: counter(COUNTER_USER)?,
            mailbox: counter(COUNTER_MAILBOX)?,
            queue: counter(COUNTER_QUEUE)?,
            tracking: counter(COUNTER_TRACKING)?,
            uid_validity: counter(COUNTER_UIDVALIDITY)?,
        };
        let bodies = match &options.bodies {
            crate::bodies::BodyOptions::Store => None,
            crate::bodies::BodyOptions::S3(s3) => Some(crate::bodies::ObjectBodies::open(s3)?),
        };
        let notifier = Arc::new(Notifier::default());
        let heard = notifier.clone();
        backend.listen(Arc::new(move |change| match change {
            Some((mailbox, modseq)) => heard.publish(mailbox, modseq),
            None => heard.wake_all(),
        }));
        let locks = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        let outer_locks = (0..OUTER_LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        let store = Store {
            inner: Arc::new(Inner {
                backend,
                path,
                locks,
                outer_locks,
                counters: Mutex::new(counters),
                queue_index: Mutex::new(None),
                notifier: notifier.clone(),
                clock,
                sync: options.sync_writes,
                inbox_ids: Mutex::new(HashMap::new()),
                accounts_cache: Mutex::new(Default::default()),
                outage_cache: Mutex::new(Default::default()),
                summariser: std::sync::OnceLock::new(),
                node_id: crate::lease::new_node_id(),
                claims: std::sync::atomic::AtomicU64::new(0),
                holds: Mutex::new(Default::default()),
                bodies,
            }),
        };
        if store.shared() {
            // Other nodes' sessions may need what is held: dead nodes' holds go with
            // their leases, at the leading node's sweep (`view_holds.rs`).
            store.start_heartbeat();
            return Ok(store);
        }
        // No session exists yet: what views held when the last process ended (a crash,
        // or a store copied from one) is needed by no one.
        let released = store.release_all_held()?;
        if released > 0 {
            tracing::info!(
                released,
                "store: released bodies held for sessions of the last run"
            );
        }
        Ok(store)
    }

    /// WAL fsyncs so far (needs `StoreOptions::statistics`): with group commit it is
    /// lower than the number of synced writes when writers are concurrent.
    pub fn wal_syncs(&self) -> u64 {
        self.inner.backend.wal_syncs()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The engine under the store: "rocksdb" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// A receiver that changes whenever a write to `mailbox` commits (value: its highest
    /// modseq). IMAP IDLE and NOOP use it instead of polling.
    pub fn subscribe(&self, mailbox: u64, current_modseq: u64) -> tokio::sync::watch::Receiver<u64> {
        self.inner.notifier.subscribe(mailbox, current_modseq)
    }

    /// Writes a RocksDB checkpoint (a consistent copy, hard-linked where possible) into
    /// `target`, which must not exist. Safe while the server runs.
    pub fn checkpoint(&self, target: &Path) -> StoreResult<()> {
        self.inner.backend.checkpoint(target)
    }

    /// One record's raw value.
    pub(crate) fn get_raw(&self, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.backend.get(cf, key)
    }

    /// An iterator over a column family, of the latest committed state.
    pub(crate) fn iter<'s>(&'s self, cf: &'static str, mode: IterMode<'s>) -> StoreResult<KvIter<'s>> {
        self.inner.backend.iter(cf, mode)
    }

    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match self.inner.backend.get(cf, key)? {
            Some(bytes) => decode(cf, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Store::get_json`] as of a snapshot.
    pub(crate) fn get_json_at<T: DeserializeOwned>(
        &self,
        snapshot: &dyn ReadView,
        cf: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match snapshot.get(cf, key)? {
            Some(bytes) => decode(cf, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Store::scan_prefix`] as of a snapshot.
    pub(crate) fn scan_prefix_at(
        &self,
        snapshot: &dyn ReadView,
        cf: &'static str,
        prefix: &[u8],
    ) -> StoreResult<Vec<KeyValue>> {
        scan_prefix_in(snapshot, cf, prefix)
    }

    /// All values under `prefix` in key order.
    pub(crate) fn scan_prefix(&self, cf: &'static str, prefix: &[u8]) -> StoreResult<Vec<KeyValue>> {
        scan_prefix_in(self.inner.backend.as_ref(), cf, prefix)
    }

    /// Commits a batch; synced unless the store was opened without sync (benchmarks of the
    /// unsafe mode only).
    pub(crate) fn commit(&self, batch: Batch) -> StoreResult<()> {
        self.inner.backend.write(batch, self.inner.sync)
    }

    /// Commits a batch under `guards`, releases them, then returns once the batch is
    /// durable: the group commit for deliveries (see the backend's `write_releasing`).
    /// UIDs still commit in the order assigned (the write itself happens under the
    /// lock); nothing is acknowledged until this returns.
    pub(crate) fn commit_unlocking<G>(&self, batch: Batch, guards: G) -> StoreResult<()> {
        self.inner
            .backend
            .write_releasing(batch, self.inner.sync, Box::new(move || drop(guards)))
    }

    /// Commits a batch that no reply promises (e.g. the \Recent mark); not synced.
    pub(crate) fn commit_lazy(&self, batch: Batch) -> StoreResult<()> {
        self.inner.backend.write(batch, false)
    }

    /// Locks the stripes for the given lock keys, in a fixed order so that two writers
    /// never deadlock. Held across the synced write so that UIDs and modseqs commit in the
    /// order they were assigned. On a shared backend the same stripes are also locked in
    /// the engine (after the in-process ones, in the same order), so other nodes are
    /// excluded too.
    pub(crate) fn lock<K: Hash>(&self, keys: &[K]) -> StoreResult<Held<'_>> {
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|k| {
                let mut h = DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() as usize) % LOCK_STRIPES
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let local = stripes
            .iter()
            .filter_map(|i| self.inner.locks.get(*i))
            .map(|m| m.lock())
            .collect();
        let remote = self.inner.backend.lock_stripes(LockClass::Inner, &stripes)?;
        Ok(Held {
            _remote: remote,
            _local: local,
        })
    }

    /// Locks the outer stripe of `key` (a user's mailbox list). Take it before any
    /// [`Store::lock`] and never while holding one; inner locks may then be taken and
    /// released under it freely.
    pub(crate) fn lock_outer<K: Hash>(&self, key: K) -> StoreResult<Held<'_>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let stripe = (h.finish() as usize) % OUTER_LOCK_STRIPES;
        let local = self
            .inner
            .outer_locks
            .get(stripe)
            .map(|m| m.lock())
            .into_iter()
            .collect();
        let remote = self.inner.backend.lock_stripes(LockClass::Outer, &[stripe])?;
        Ok(Held {
            _remote: remote,
            _local: local,
        })
    }

    /// Whether this node runs the store's background work (queue drain, outage monitor,
    /// retention, LDAP sync): always with RocksDB; with several nodes on PostgreSQL,
    /// exactly one of them at a time (the holder of the leader lock; another takes
    /// over within seconds when it dies).
    pub fn leads(&self) -> bool {
        self.inner.backend.leads()
    }

    /// True when other nodes share the store (PostgreSQL): caches are bypassed.
    pub(crate) fn shared(&self) -> bool {
        self.inner.backend.shared()
    }

    /// Whether other nodes may write this store too (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.shared()
    }

    /// Wakes this process's watchers of `mailbox` and tells the other nodes.
    pub(crate) fn publish(&self, mailbox: u64, modseq: u64) {
        self.inner.notifier.publish(mailbox, modseq);
        self.inner.backend.announce(mailbox, modseq);
    }

    /// A consistent read view: everything committed before it, nothing after. Readers
    /// that combine several records (a message and its body, a mailbox and its change
    /// log) read them through one, so no write can fall between their reads.
    pub(crate) fn snapshot(&self) -> StoreResult<Box<dyn ReadView + '_>> {
        self.inner.backend.snapshot()
    }

    /// Reserves the next id of a counter; the caller puts `counter_merge` in its batch.
    /// On a shared backend the engine hands it out, so two nodes never get the same.
    pub(crate) fn next_id(&self, counter: &'static [u8]) -> StoreResult<u64> {
        if let Some(id) = self.inner.backend.next_counter(counter, 1)? {
            return Ok(id);
        }
        let mut c = self.inner.counters.lock();
        let slot = match counter {
            COUNTER_USER => &mut c.user,
            COUNTER_MAILBOX => &mut c.mailbox,
            COUNTER_QUEUE => &mut c.queue,
            COUNTER_TRACKING => &mut c.tracking,
            _ => &mut c.uid_validity,
        };
        *slot += 1;
        Ok(*slot)
    }

    /// The last tracking id handed out (0 before the first delivery).
    pub(crate) fn last_tracking_id(&self) -> StoreResult<u64> {
        if self.shared() {
            return Ok(self
                .inner
                .backend
                .get(CF_META, COUNTER_TRACKING)?
                .and_then(|v| read_u64(&v))
                .unwrap_or(0));
        }
        Ok(self.inner.counters.lock().tracking)
    }

    /// A UIDVALIDITY that is the current time when possible and never repeats.
    pub(crate) fn next_uid_validity(&self) -> StoreResult<u32> {
        let now = self.now().clamp(1, u32::MAX as i64) as u64;
        if let Some(v) = self.inner.backend.next_counter(COUNTER_UIDVALIDITY, now)? {
            return Ok(v.min(u32::MAX as u64) as u32);
        }
        let mut c = self.inner.counters.lock();
        c.uid_validity = now.max(c.uid_validity + 1).min(u32::MAX as u64);
        Ok(c.uid_validity as u32)
    }

    pub(crate) fn counter_merge(
        &self,
        batch: &mut Batch,
        counter: &'static [u8],
        value: u64,
    ) -> StoreResult<()> {
        batch.max_u64(CF_META, counter, value);
        Ok(())
    }

    pub(crate) fn put_json<T: Serialize>(
        &self,
        batch: &mut Batch,
        cf: &'static str,
        key: &[u8],
        value: &T,
    ) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
        batch.put(cf, key, bytes);
        Ok(())
    }

    pub(crate) fn delete(&self, batch: &mut Batch, cf: &'static str, key: &[u8]) -> StoreResult<()> {
        batch.delete(cf, key);
        Ok(())
    }

    /// Total size of the live SST and blob files, for the bytes-per-message benchmark.
    pub fn disk_usage(&self) -> StoreResult<u64> {
        self.inner.backend.disk_usage()
    }

    /// Flushes memtables to SST files (used by benchmarks before measuring disk usage).
    pub fn flush(&self) -> StoreResult<()> {
        self.inner.backend.flush()
    }
}

/// All values under `prefix` in key order, from `view`.
pub(crate) fn scan_prefix_in(
    view: &dyn ReadView,
    cf: &'static str,
    prefix: &[u8],
) -> StoreResult<Vec<KeyValue>> {
    let mut out = Vec::new();
    for item in view.iter(cf, IterMode::From(prefix, Direction::Forward))? {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k, v));
    }
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(cf: &'static str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        cf,
        reason: e.to_string(),
    })
}
