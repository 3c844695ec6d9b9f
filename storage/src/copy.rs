//! Copying a whole store into another (`understudy store copy`, RocksDB to PostgreSQL or
//! back): every column family record by record from one consistent view of the source,
//! in synced batches, then verified by per-family record counts and SHA-256 checksums
//! of both sides.

use sha2::{Digest, Sha256};

use crate::db::{Batch, IterMode, ReadView, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::ALL_CFS;

/// Records per batch written to the target, and bytes at most (bodies are large).
const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 8 << 20;

/// One column family's record count and checksum (SHA-256 over each key and value,
/// each preceded by its length, in key order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySummary {
    pub family: &'static str,
    pub records: u64,
    pub sha256: String,
}

fn summarise(view: &dyn ReadView) -> StoreResult<Vec<FamilySummary>> {
    let mut out = Vec::new();
    for cf in ALL_CFS {
        let mut hash = Sha256::new();
        let mut records = 0u64;
        for item in view.iter(cf, IterMode::Start)? {
            let (k, v) = item?;
            hash.update((k.len() as u64).to_be_bytes());
            hash.update(&k);
            hash.update((v.len() as u64).to_be_bytes());
            hash.update(&v);
            records += 1;
        }
        out.push(FamilySummary {
            family: cf,
            records,
            sha256: hex::encode(hash.finalize()),
        });
    }
    Ok(out)
}

impl Store {
    /// Per column family, the record count and checksum of the store as it is now.
    pub fn summary(&self) -> StoreResult<Vec<FamilySummary>> {
        let view = self.snapshot()?;
        summarise(view.as_ref())
    }

    /// Copies every record of this store into `target`, `progress(done, total)` after
    /// each batch, then checks that both have the same records (counts and checksums of
    /// every column family); returns the source's summary. Nobody may write either store
    /// meanwhile (the server stopped, or not yet started on the target). Records already
    /// in the target are overwritten, so a copy cut off can simply be run again; records
    /// in the target that the source lacks make the verification fail.
    pub fn copy_into(&self, target: &Store, progress: &dyn Fn(u64, u64)) -> StoreResult<Vec<FamilySummary>> {
        let view = self.snapshot()?;
        let source = summarise(view.as_ref())?;
        let total: u64 = source.iter().map(|f| f.records).sum();
        let mut done = 0u64;
        progress(0, total);
        for cf in ALL_CFS {
            let mut batch = Batch::default();
            let mut bytes = 0usize;
            for item in view.iter(cf, IterMode::Start)? {
                let (k, v) = item?;
                bytes += k.len() + v.len();
                batch.put(cf, &k, &v);
                if batch.ops.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                    done += batch.ops.len() as u64;
                    target.inner.backend.write(std::mem::take(&mut batch), true)?;
                    bytes = 0;
                    progress(done, total);
                }
            }
            if !batch.ops.is_empty() {
                done += batch.ops.len() as u64;
                target.inner.backend.write(batch, true)?;
                progress(done, total);
            }
        }
        let copied = target.summary()?;
        for (s, t) in source.iter().zip(&copied) {
            if s != t {
                return Err(StoreError::Invalid(format!(
                    "verification failed for {}: source {} records ({}), target {} records ({}); \
                     was the target empty?",
                    s.family, s.records, s.sha256, t.records, t.sha256
                )));
            }
        }
        Ok(source)
    }
}
