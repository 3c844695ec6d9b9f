//! The embedded backend: one RocksDB database, a column family per key space, batches
//! synced to the WAL with group commit, counters and reference counts as merge operands.

use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, ColumnFamilyDescriptor, DBCompressionType, MergeOperands, Options,
    WriteBatch, WriteOptions, DB,
};
use std::sync::Arc;

use super::{Batch, Direction, IterMode, KvBackend, KvIter, Op, ReadView};
use crate::db::{read_i64, read_u64, StoreOptions};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;

pub(crate) struct RocksBackend {
    db: DB,
    path: PathBuf,
    db_options: Options,
    /// Highest sequence number known to be in a synced WAL (see `write_releasing`).
    synced: Mutex<u64>,
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

fn rocks_mode(mode: IterMode<'_>) -> rocksdb::IteratorMode<'_> {
    match mode {
        IterMode::Start => rocksdb::IteratorMode::Start,
        IterMode::End => rocksdb::IteratorMode::End,
        IterMode::From(key, Direction::Forward) => {
            rocksdb::IteratorMode::From(key, rocksdb::Direction::Forward)
        }
        IterMode::From(key, Direction::Reverse) => {
            rocksdb::IteratorMode::From(key, rocksdb::Direction::Reverse)
        }
    }
}

impl RocksBackend {
    /// Opens (creating if absent) the database in `dir`, which is created mode 0700.
    /// Also says whether the database existed before.
    pub fn open(dir: &Path, options: &StoreOptions) -> StoreResult<(RocksBackend, bool)> {
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
        if db.cf_handle(CF_META).is_none() {
            return Err(StoreError::NotUnderstudy {
                path: path_text,
                reason: "meta column family missing".into(),
            });
        }
        Ok((
            RocksBackend {
                db,
                path: dir.to_path_buf(),
                db_options: db_opts,
                synced: Mutex::new(0),
                _lock: lock,
            },
            existed,
        ))
    }

    fn cf(&self, name: &'static str) -> StoreResult<Arc<BoundColumnFamily<'_>>> {
        self.db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            cf: name,
            reason: "column family missing".into(),
        })
    }

    fn write_batch(&self, batch: Batch) -> StoreResult<WriteBatch> {
        let mut out = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put { cf, key, value } => out.put_cf(&self.cf(cf)?, key, value),
                Op::Delete { cf, key } => out.delete_cf(&self.cf(cf)?, key),
                Op::MaxU64 { cf, key, value } => out.merge_cf(&self.cf(cf)?, key, value.to_be_bytes()),
                Op::AddI64 { cf, key, delta } => out.merge_cf(&self.cf(cf)?, key, delta.to_be_bytes()),
                // One process writes a RocksDB store and every writer of a fenced record
                // holds its lock (`Store::lock`): a read here is current until the write.
                Op::Expect { cf, key, value } => {
                    if self.db.get_cf(&self.cf(cf)?, &key)?.as_deref() != value.as_deref() {
                        return Err(StoreError::Conflict(format!("{cf} record changed")));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl ReadView for RocksBackend {
    fn get(&self, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf(cf)?, key)?)
    }

    fn multi_get(&self, cf: &'static str, keys: &[&[u8]]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let handle = self.cf(cf)?;
        self.db
            .multi_get_cf(keys.iter().map(|k| (&handle, *k)))
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    fn iter<'s>(&'s self, cf: &'static str, mode: IterMode<'s>) -> StoreResult<KvIter<'s>> {
        let handle = self.cf(cf)?;
        let iter = self.db.iterator_cf(&handle, rocks_mode(mode));
        Ok(Box::new(iter.map(|item| item.map_err(StoreError::from))))
    }
}

struct RocksSnapshot<'a> {
    backend: &'a RocksBackend,
    snapshot: rocksdb::Snapshot<'a>,
}

impl ReadView for RocksSnapshot<'_> {
    fn get(&self, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.snapshot.get_cf(&self.backend.cf(cf)?, key)?)
    }

    fn multi_get(&self, cf: &'static str, keys: &[&[u8]]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let handle = self.backend.cf(cf)?;
        self.snapshot
            .multi_get_cf(keys.iter().map(|k| (&handle, *k)))
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    fn iter<'s>(&'s self, cf: &'static str, mode: IterMode<'s>) -> StoreResult<KvIter<'s>> {
        let handle = self.backend.cf(cf)?;
        let iter = self.snapshot.iterator_cf(&handle, rocks_mode(mode));
        Ok(Box::new(iter.map(|item| item.map_err(StoreError::from))))
    }
}

impl KvBackend for RocksBackend {
    fn snapshot(&self) -> StoreResult<Box<dyn ReadView + '_>> {
        Ok(Box::new(RocksSnapshot {
            backend: self,
            snapshot: self.db.snapshot(),
        }))
    }

    fn write(&self, batch: Batch, sync: bool) -> StoreResult<()> {
        let batch = self.write_batch(batch)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// The group commit for deliveries: the batch is written under the caller's locks,
    /// which are released before the fsync. Holding a mailbox's lock across the fsync
    /// serialised every delivery to one mailbox (and to any mailbox sharing its lock
    /// stripe) at one fsync each, 194 deliveries/s into one INBOX; now the next writer
    /// assigns its UID while this one waits for the disk, and one fsync covers every
    /// writer queued behind the sync lock. The batch is visible to readers a moment
    /// before it is durable; nothing is acknowledged until this returns.
    fn write_releasing<'a>(
        &self,
        batch: Batch,
        sync: bool,
        release: Box<dyn FnOnce() + 'a>,
    ) -> StoreResult<()> {
        let batch = self.write_batch(batch)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo)?;
        let written = self.db.latest_sequence_number();
        release();
        if !sync {
            return Ok(());
        }
        let mut synced = self.synced.lock();
        if *synced >= written {
            // Another writer's fsync, after our write, covered it.
            return Ok(());
        }
        // Every write published up to here has its WAL record written already.
        let through = self.db.latest_sequence_number();
        self.db.flush_wal(true)?;
        *synced = through;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn checkpoint(&self, target: &Path) -> StoreResult<()> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        cp.create_checkpoint(target)?;
        Ok(())
    }

    fn wal_syncs(&self) -> u64 {
        self.db_options
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    /// Total size of the live SST and blob files, for the bytes-per-message benchmark.
    fn disk_usage(&self) -> StoreResult<u64> {
        let mut total = 0u64;
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                total += meta.len();
            }
        }
        Ok(total)
    }

    fn flush(&self) -> StoreResult<()> {
        for name in ALL_CFS {
            self.db.flush_cf(&self.cf(name)?)?;
        }
        Ok(())
    }
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
