//! Opening the database, schema checks, id counters, striped locks and synced writes.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, ColumnFamilyDescriptor, DBCompressionType, MergeOperands, Options,
    WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::notify::Notifier;

/// Version of the on-disk layout this binary reads and writes.
/// 2: subscriptions in their own column family (`subscriptions.rs`), no longer a flag in
/// each mailbox record; a version 1 database is migrated when opened.
pub const SCHEMA_VERSION: u32 = 2;

/// A raw key and value read from RocksDB.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_writes: true,
            cache_bytes: 64 << 20,
            statistics: false,
            write_buffer_bytes: 64 << 20,
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
pub type Summariser = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

pub(crate) struct Inner {
    pub db: DB,
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
    pub notifier: Notifier,
    pub clock: Arc<dyn Clock>,
    sync: bool,
    /// Highest sequence number known to be in a synced WAL (see `commit_unlocking`).
    synced: Mutex<u64>,
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
    db_options: Options,
    /// Held (see [`lock_dir`]) for as long as the store is open; last, so it is
    /// released after the database is closed.
    _lock: fs::File,
}

fn max_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut best = existing.and_then(read_u64).unwrap_or(0);
    for op in operands {
        best = best.max(read_u64(op).unwrap_or(0));
    }
    Some(best.to_be_bytes().to_vec())
}

fn add_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut total = existing.and_then(read_i64).unwrap_or(0);
    for op in operands {
        total += read_i64(op).unwrap_or(0);
    }
    Some(total.to_be_bytes().to_vec())
}

pub(crate) fn read_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn cf_options(name: &str, cache: &rocksdb::Cache) -> Options {
    let mut opts = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Point reads (a recipient's address, user and domain on every RCPT) otherwise
    // search every level-0 file of their column family.
    table.set_bloom_filter(10.0, false);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    match name {
        CF_META => opts.set_merge_operator_associative("max_u64", max_merge),
        CF_BLOB_REFS => opts.set_merge_operator_associative("add_i64", add_merge),
        CF_BLOBS => {
            // Bodies go to blob files: the LSM tree then holds only small pointers and
            // compactions do not rewrite megabytes of mail again and again.
            opts.set_enable_blob_files(true);
            opts.set_min_blob_size(4096);
            opts.set_blob_compression_type(DBCompressionType::Zstd);
            opts.set_enable_blob_gc(true);
        }
        _ => {}
    }
    opts.set_block_based_table_factory(&table);
    opts
}

impl Store {
    /// Opens (creating if absent) the database in `dir`, which is created mode 0700.
    pub fn open(dir: &Path) -> StoreResult<Store> {
        Store::open_with(dir, StoreOptions::default(), Arc::new(SystemClock))
    }

    pub fn open_with(dir: &Path, options: StoreOptions, clock: Arc<dyn Clock>) -> StoreResult<Store> {
        let path_text = dir.display().to_string();
        let existed = dir.join("CURRENT").exists();
        if !existed {
            create_private_dir(dir)?;
            let non_empty = fs::read_dir(dir)?
                .filter_map(Result::ok)
                .any(|entry| entry.file_name() != LOCK_FILE);
            if non_empty {
                return Err(StoreError::NotUnderstudy {
                    path: path_text,
                    reason: "the directory is not empty and holds no RocksDB database".into(),
                });
            }
        }
        let lock = lock_dir(dir, &path_text)?;
        let cache = rocksdb::Cache::new_lru_cache(options.cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(!existed);
        db_opts.create_missing_column_families(true);
        db_opts.set_paranoid_checks(true);
        db_opts.increase_parallelism(2);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(5);
        db_opts.set_db_write_buffer_size(options.write_buffer_bytes);
        // A column family written rarely would otherwise pin every WAL file since its
        // last flush.
        db_opts.set_max_total_wal_size(4 * options.write_buffer_bytes as u64);
        if options.statistics {
            db_opts.enable_statistics();
        }
        let descriptors: Vec<ColumnFamilyDescriptor> = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)))
            .collect();
        let db = DB::open_cf_descriptors(&db_opts, dir, descriptors).map_err(|source| {
            if existed {
                StoreError::NotUnderstudy {
                    path: path_text.clone(),
                    reason: source.to_string(),
                }
            } else {
                StoreError::Open {
                    path: path_text.clone(),
                    source,
                }
            }
        })?;

        let meta = db.cf_handle(CF_META).ok_or_else(|| StoreError::NotUnderstudy {
            path: path_text.clone(),
            reason: "meta column family missing".into(),
        })?;
        match db.get_cf(&meta, SCHEMA_KEY)? {
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
                    let moved = crate::subscriptions::migrate_from_v1(&db)?;
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
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.put_cf_opt(&meta, SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes(), &wo)?;
            }
        }
        let counter = |name: &[u8]| -> StoreResult<u64> {
            Ok(db.get_cf(&meta, name)?.and_then(|v| read_u64(&v)).unwrap_or(0))
        };
        let counters = Counters {
            user: counter(COUNTER_USER)?,
            mailbox: counter(COUNTER_MAILBOX)?,
            queue: counter(COUNTER_QUEUE)?,
            tracking: counter(COUNTER_TRACKING)?,
            uid_validity: counter(COUNTER_UIDVALIDITY)?,
        };
        drop(meta);
        let locks = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        let outer_locks = (0..OUTER_LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: dir.to_path_buf(),
                locks,
                outer_locks,
                counters: Mutex::new(counters),
                queue_index: Mutex::new(None),
                notifier: Notifier::default(),
                clock,
                sync: options.sync_writes,
                synced: Mutex::new(0),
                inbox_ids: Mutex::new(HashMap::new()),
                accounts_cache: Mutex::new(Default::default()),
                outage_cache: Mutex::new(Default::default()),
                summariser: std::sync::OnceLock::new(),
                db_options: db_opts,
                _lock: lock,
            }),
        })
    }

    /// WAL fsyncs so far (needs `StoreOptions::statistics`): with group commit it is
    /// lower than the number of synced writes when writers are concurrent.
    pub fn wal_syncs(&self) -> u64 {
        self.inner
            .db_options
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
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
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.inner.db)?;
        cp.create_checkpoint(target)?;
        Ok(())
    }

    pub(crate) fn cf(&self, name: &'static str) -> StoreResult<Arc<BoundColumnFamily<'_>>> {
        self.inner.db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            cf: name,
            reason: "column family missing".into(),
        })
    }

    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        let handle = self.cf(cf)?;
        match self.inner.db.get_pinned_cf(&handle, key)? {
            Some(bytes) => decode(cf, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Store::get_json`] as of a snapshot.
    pub(crate) fn get_json_at<T: DeserializeOwned>(
        &self,
        snapshot: &rocksdb::Snapshot<'_>,
        cf: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        let handle = self.cf(cf)?;
        match snapshot.get_pinned_cf(&handle, key)? {
            Some(bytes) => decode(cf, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Store::scan_prefix`] as of a snapshot.
    pub(crate) fn scan_prefix_at(
        &self,
        snapshot: &rocksdb::Snapshot<'_>,
        cf: &'static str,
        prefix: &[u8],
    ) -> StoreResult<Vec<KeyValue>> {
        let handle = self.cf(cf)?;
        let mut out = Vec::new();
        let iter = snapshot.iterator_cf(
            &handle,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// All values under `prefix` in key order.
    pub(crate) fn scan_prefix(&self, cf: &'static str, prefix: &[u8]) -> StoreResult<Vec<KeyValue>> {
        let handle = self.cf(cf)?;
        let mut out = Vec::new();
        let iter = self.inner.db.iterator_cf(
            &handle,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// Commits a batch; synced unless the store was opened without sync (benchmarks of the
    /// unsafe mode only).
    pub(crate) fn commit(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.inner.sync);
        self.inner.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Commits a batch under `guards`, releases them, then returns once the batch is in a
    /// synced WAL: the group commit for deliveries. Holding a mailbox's lock across the
    /// fsync serialised every delivery to one mailbox (and to any mailbox sharing its lock
    /// stripe) at one fsync each, 194 deliveries/s into one INBOX; now the next writer
    /// assigns its UID while this one waits for the disk, and one fsync covers every
    /// writer queued behind the sync lock. UIDs still commit in the order assigned (the
    /// write itself happens under the lock). The batch is visible to readers a moment
    /// before it is durable; nothing is acknowledged until this returns.
    pub(crate) fn commit_unlocking<G>(&self, batch: WriteBatch, guards: G) -> StoreResult<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.inner.db.write_opt(batch, &wo)?;
        let written = self.inner.db.latest_sequence_number();
        drop(guards);
        if !self.inner.sync {
            return Ok(());
        }
        let mut synced = self.inner.synced.lock();
        if *synced >= written {
            // Another writer's fsync, after our write, covered it.
            return Ok(());
        }
        // Every write published up to here has its WAL record written already.
        let through = self.inner.db.latest_sequence_number();
        self.inner.db.flush_wal(true)?;
        *synced = through;
        Ok(())
    }

    /// Commits a batch that no reply promises (e.g. the \Recent mark); not synced.
    pub(crate) fn commit_lazy(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.inner.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Locks the stripes for the given lock keys, in a fixed order so that two writers
    /// never deadlock. Held across the synced write so that UIDs and modseqs commit in the
    /// order they were assigned.
    pub(crate) fn lock<K: Hash>(&self, keys: &[K]) -> Vec<MutexGuard<'_, ()>> {
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
        stripes
            .iter()
            .filter_map(|i| self.inner.locks.get(*i))
            .map(|m| m.lock())
            .collect()
    }

    /// Locks the outer stripe of `key` (a user's mailbox list). Take it before any
    /// [`Store::lock`] and never while holding one; inner locks may then be taken and
    /// released under it freely.
    pub(crate) fn lock_outer<K: Hash>(&self, key: K) -> Option<MutexGuard<'_, ()>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.inner
            .outer_locks
            .get((h.finish() as usize) % OUTER_LOCK_STRIPES)
            .map(|m| m.lock())
    }

    /// A consistent read view: everything committed before it, nothing after. Readers
    /// that combine several records (a message and its body, a mailbox and its change
    /// log) read them through one, so no write can fall between their reads.
    pub(crate) fn snapshot(&self) -> rocksdb::Snapshot<'_> {
        self.inner.db.snapshot()
    }

    /// Reserves the next id of a counter; the caller puts `counter_merge` in its batch.
    pub(crate) fn next_id(&self, counter: &'static [u8]) -> u64 {
        let mut c = self.inner.counters.lock();
        let slot = match counter {
            COUNTER_USER => &mut c.user,
            COUNTER_MAILBOX => &mut c.mailbox,
            COUNTER_QUEUE => &mut c.queue,
            COUNTER_TRACKING => &mut c.tracking,
            _ => &mut c.uid_validity,
        };
        *slot += 1;
        *slot
    }

    /// The last tracking id handed out (0 before the first delivery).
    pub(crate) fn last_tracking_id(&self) -> u64 {
        self.inner.counters.lock().tracking
    }

    /// A UIDVALIDITY that is the current time when possible and never repeats.
    pub(crate) fn next_uid_validity(&self) -> u32 {
        let now = self.now().clamp(1, u32::MAX as i64) as u64;
        let mut c = self.inner.counters.lock();
        c.uid_validity = now.max(c.uid_validity + 1).min(u32::MAX as u64);
        c.uid_validity as u32
    }

    pub(crate) fn counter_merge(
        &self,
        batch: &mut WriteBatch,
        counter: &'static [u8],
        value: u64,
    ) -> StoreResult<()> {
        batch.merge_cf(&self.cf(CF_META)?, counter, value.to_be_bytes());
        Ok(())
    }

    pub(crate) fn put_json<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: &[u8],
        value: &T,
    ) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
        batch.put_cf(&self.cf(cf)?, key, bytes);
        Ok(())
    }

    pub(crate) fn delete(&self, batch: &mut WriteBatch, cf: &'static str, key: &[u8]) -> StoreResult<()> {
        batch.delete_cf(&self.cf(cf)?, key);
        Ok(())
    }

    /// Total size of the live SST and blob files, for the bytes-per-message benchmark.
    pub fn disk_usage(&self) -> StoreResult<u64> {
        let mut total = 0u64;
        for entry in fs::read_dir(&self.inner.path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                total += meta.len();
            }
        }
        Ok(total)
    }

    /// Flushes memtables to SST files (used by benchmarks before measuring disk usage).
    pub fn flush(&self) -> StoreResult<()> {
        for name in ALL_CFS {
            self.inner.db.flush_cf(&self.cf(name)?)?;
        }
        Ok(())
    }
}

pub(crate) fn decode<T: DeserializeOwned>(cf: &'static str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        cf,
        reason: e.to_string(),
    })
}

/// The file in the database directory on which an open store holds an exclusive
/// `flock`, so that a second opener learns "in use" from the lock's own error
/// (`EWOULDBLOCK`) and not by reading RocksDB's message.
const LOCK_FILE: &str = "understudy.lock";

/// Takes the database directory's lock, or fails with `StoreError::Locked` when another
/// open store (in this process or another) holds it. The holder writes its pid into the
/// lock file, so the refusal can name it.
fn lock_dir(dir: &Path, path_text: &str) -> StoreResult<fs::File> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    #[cfg(unix)]
    {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        // SAFETY: flock takes a descriptor this function owns and no pointers.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !taken {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::WouldBlock {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(StoreError::Locked {
                    path: path_text.to_string(),
                    pid,
                });
            }
            return Err(error.into());
        }
        // Only the holder writes, so nobody reads a half-written pid for long; a reader
        // that does just names no pid.
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        write!(file, "{}", std::process::id())?;
    }
    Ok(file)
}

fn create_private_dir(dir: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
    Ok(())
}
