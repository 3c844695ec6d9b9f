//! The storage boundary under `Store`: an ordered key-value store by column family with
//! consistent read views and atomic, durable batches. `Store` builds every operation the
//! server needs (accounts, mailboxes, queue, tracking, ...) on this interface, so the
//! engine underneath (RocksDB embedded, or PostgreSQL shared by several nodes) is chosen
//! at open time and nothing above `Store` knows which one runs.

pub(crate) mod pg;
pub(crate) mod rocks;

use std::path::Path;

use crate::error::StoreResult;

/// A raw key and value read from the backend.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// An iterator over one column family in key order (or reverse key order).
pub(crate) type KvIter<'a> = Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    Reverse,
}

/// Where an iteration starts: the first key, the last key, or the first key at or after
/// (forward) / at or before (reverse) the given one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IterMode<'a> {
    Start,
    End,
    From(&'a [u8], Direction),
}

/// One operation of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
    /// The value becomes the larger of itself and `value` (both big-endian u64; an
    /// absent value counts as 0). Id counters, so they never move backwards.
    MaxU64 {
        cf: &'static str,
        key: Vec<u8>,
        value: u64,
    },
    /// The value (big-endian i64, absent = 0) grows by `delta`. Body reference counts.
    AddI64 {
        cf: &'static str,
        key: Vec<u8>,
        delta: i64,
    },
    /// A precondition, not a write: the batch applies only if the record holds exactly
    /// `value` (`None`: is absent) when it commits; otherwise nothing of it is applied
    /// and the write fails with [`StoreError::Conflict`](crate::StoreError::Conflict).
    /// The fence of a queue lease (`lease.rs`) and the compare-and-set of an outage
    /// change (`outage.rs`): on PostgreSQL the row is locked (`FOR UPDATE`; an absent
    /// one by a transaction advisory lock on its key) and compared inside the committing
    /// transaction, so it holds even when the node's advisory lock connection was lost;
    /// RocksDB (one process) compares under the caller's locks.
    Expect {
        cf: &'static str,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
}

/// Writes applied together or not at all, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops.push(Op::Put {
            cf,
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        });
    }

    pub fn delete(&mut self, cf: &'static str, key: impl AsRef<[u8]>) {
        self.ops.push(Op::Delete {
            cf,
            key: key.as_ref().to_vec(),
        });
    }

    pub fn max_u64(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: u64) {
        self.ops.push(Op::MaxU64 {
            cf,
            key: key.as_ref().to_vec(),
            value,
        });
    }

    pub fn expect(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.expect_raw(cf, key, Some(value.as_ref()));
    }

    /// [`Batch::expect`] of a record that may be absent (`None`: must still be absent).
    pub fn expect_raw(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: Option<&[u8]>) {
        self.ops.push(Op::Expect {
            cf,
            key: key.as_ref().to_vec(),
            value: value.map(<[u8]>::to_vec),
        });
    }

    pub fn add_i64(&mut self, cf: &'static str, key: impl AsRef<[u8]>, delta: i64) {
        self.ops.push(Op::AddI64 {
            cf,
            key: key.as_ref().to_vec(),
            delta,
        });
    }
}

/// Reads, either of the latest committed state or of one consistent view.
pub(crate) trait ReadView {
    fn get(&self, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;

    fn multi_get(&self, cf: &'static str, keys: &[&[u8]]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(cf, k)).collect()
    }

    fn iter<'s>(&'s self, cf: &'static str, mode: IterMode<'s>) -> StoreResult<KvIter<'s>>;
}

/// An engine under `Store`.
pub(crate) trait KvBackend: ReadView + Send + Sync {
    /// A consistent read view: everything committed before it, nothing after.
    fn snapshot(&self) -> StoreResult<Box<dyn ReadView + '_>>;

    /// Applies `batch` atomically; durable before returning when `sync`.
    fn write(&self, batch: Batch, sync: bool) -> StoreResult<()>;

    /// Applies `batch` atomically, calls `release` (dropping the caller's locks) once
    /// the batch is visible in commit order, and returns once it is durable (`sync`).
    fn write_releasing<'a>(
        &self,
        batch: Batch,
        sync: bool,
        release: Box<dyn FnOnce() + 'a>,
    ) -> StoreResult<()>;

    /// Names the engine in messages ("rocksdb", "postgres").
    fn name(&self) -> &'static str;

    /// A consistent copy of the database into the directory `target` (RocksDB only).
    fn checkpoint(&self, target: &Path) -> StoreResult<()>;

    /// WAL fsyncs so far, when the engine counts them.
    fn wal_syncs(&self) -> u64 {
        0
    }

    /// Bytes used on disk, when the engine knows.
    fn disk_usage(&self) -> StoreResult<u64> {
        Ok(0)
    }

    /// Writes buffered data out (benchmarks before measuring disk usage).
    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    /// True when other nodes write the same store: in-process caches must not be
    /// trusted, locks and counters must be taken in the engine.
    fn shared(&self) -> bool {
        false
    }

    /// Reserves the next value of a counter in the engine: the larger of its value + 1
    /// and `floor`. None when the engine leaves counters to the process (one writer).
    fn next_counter(&self, _key: &'static [u8], _floor: u64) -> StoreResult<Option<u64>> {
        Ok(None)
    }

    /// Takes the engine-wide locks of `stripes` (sorted, distinct) in lock class
    /// `class`, for as long as the returned value lives. None when in-process locks
    /// suffice (one writer).
    fn lock_stripes(&self, _class: LockClass, _stripes: &[usize]) -> StoreResult<Option<RemoteLock>> {
        Ok(None)
    }

    /// Whether this node is the one that runs the store's background work (queue drain,
    /// outage monitor, retention): always on an engine with one writer; on a shared
    /// one, the node that holds the leader lock.
    fn leads(&self) -> bool {
        true
    }

    /// Tells the other nodes that `mailbox` changed (its highest modseq now `modseq`).
    fn announce(&self, _mailbox: u64, _modseq: u64) {}

    /// Starts hearing other nodes' announcements: `on_change(Some((mailbox, modseq)))`
    /// for each, `on_change(None)` after a reconnect (anything may have changed).
    fn listen(&self, _on_change: ChangeListener) {}
}

/// The two lock levels of `Store` (see `Store::lock_outer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockClass {
    Inner,
    Outer,
}

/// Engine-wide locks, released when dropped.
pub(crate) struct RemoteLock(#[allow(dead_code)] pub Box<dyn Send>);

/// See [`KvBackend::listen`].
pub(crate) type ChangeListener = std::sync::Arc<dyn Fn(Option<(u64, u64)>) + Send + Sync>;
