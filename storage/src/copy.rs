//! Copying a whole store into another (`understudy store copy`, RocksDB to PostgreSQL or
//! back): every column family record by record from one consistent view of the source,
//! in synced batches, then verified by per-family record counts and SHA-256 checksums
//! of both sides.
//!
//! Resumable: every batch also writes a progress record into the target (`meta`, key
//! [`PROGRESS_KEY`]) saying which family and key it copied up to, in the same atomic
//! write as the records, so the record never claims more than the target holds. A copy
//! killed mid-way and run again finds it and continues after that key, provided the
//! source is unchanged (the record carries a fingerprint of the source's counts and
//! checksums; a changed source starts over). The record is left out of the checksums
//! and removed once both sides verify.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::Direction;
use crate::db::{Batch, IterMode, ReadView, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::{ALL_CFS, CF_META};

/// Records per batch written to the target by default, and bytes at most (bodies are
/// large).
pub const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 8 << 20;

/// The progress record of an unfinished copy, in the target's `meta` family.
pub const PROGRESS_KEY: &[u8] = b"store_copy_progress";

/// One column family's record count and checksum (SHA-256 over each key and value,
/// each preceded by its length, in key order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySummary {
    pub family: &'static str,
    pub records: u64,
    pub sha256: String,
}

/// What a copy reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEvent {
    /// The source holds `total` records; `resumed` of them were copied by an earlier run
    /// that was cut off (0 when starting from the beginning).
    Started { total: u64, resumed: u64 },
    /// `done` of `total` records are in the target (synced).
    Copied { done: u64, total: u64 },
    /// Every record is copied; both sides are being read for the verification.
    Verifying,
}

/// How a copy runs.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Records per synced batch (at most 8 MiB of keys and values in any case).
    pub batch_records: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            batch_records: BATCH_RECORDS,
        }
    }
}

/// Where an unfinished copy stopped: the family (index into `ALL_CFS`) and the last key
/// copied in it; every earlier family is complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    /// Hex SHA-256 over the source's summary: resume only from the same source.
    source: String,
    family: usize,
    #[serde(with = "hex_bytes")]
    last_key: Vec<u8>,
    done: u64,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// The progress record is not a record of the store: never copied, never checksummed.
fn is_progress(cf: &str, key: &[u8]) -> bool {
    cf == CF_META && key == PROGRESS_KEY
}

fn summarise(view: &dyn ReadView) -> StoreResult<Vec<FamilySummary>> {
    let mut out = Vec::new();
    for cf in ALL_CFS {
        let mut hash = Sha256::new();
        let mut records = 0u64;
        for item in view.iter(cf, IterMode::Start)? {
            let (k, v) = item?;
            if is_progress(cf, &k) {
                continue;
            }
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

fn fingerprint(summary: &[FamilySummary]) -> String {
    let mut hash = Sha256::new();
    for f in summary {
        hash.update(f.family.as_bytes());
        hash.update([0]);
        hash.update(f.records.to_be_bytes());
        hash.update(f.sha256.as_bytes());
    }
    hex::encode(hash.finalize())
}

impl Store {
    /// Per column family, the record count and checksum of the store as it is now.
    pub fn summary(&self) -> StoreResult<Vec<FamilySummary>> {
        let view = self.snapshot()?;
        summarise(view.as_ref())
    }

    /// Copies every record of this store into `target`, reporting to `on_event` as it
    /// goes, then checks that both have the same records (counts and checksums of every
    /// column family); returns the source's summary. Nobody may write either store
    /// meanwhile (the server stopped, or not yet started on the target). A copy cut off
    /// resumes where it stopped when run again on the same, unchanged source (module
    /// docs); records in the target that the source lacks make the verification fail.
    pub fn copy_into(
        &self,
        target: &Store,
        options: CopyOptions,
        on_event: &mut dyn FnMut(CopyEvent),
    ) -> StoreResult<Vec<FamilySummary>> {
        let view = self.snapshot()?;
        let source = summarise(view.as_ref())?;
        let source_id = fingerprint(&source);
        let total: u64 = source.iter().map(|f| f.records).sum();
        let resume = match target.inner.backend.get(CF_META, PROGRESS_KEY)? {
            Some(raw) => match serde_json::from_slice::<Progress>(&raw) {
                Ok(p) if p.source == source_id && p.family < ALL_CFS.len() => Some(p),
                // Another source, or a record this release cannot read: start over
                // (every record is overwritten, so nothing stale survives a full copy
                // except records the source lacks, which the verification reports).
                _ => None,
            },
            None => None,
        };
        let mut done = resume.as_ref().map_or(0, |p| p.done);
        on_event(CopyEvent::Started { total, resumed: done });
        let batch_records = options.batch_records.max(1);
        for (index, cf) in ALL_CFS.iter().copied().enumerate() {
            let after: Option<&[u8]> = match &resume {
                Some(p) if index < p.family => continue,
                Some(p) if index == p.family => Some(&p.last_key),
                _ => None,
            };
            let mode = match after {
                Some(key) => IterMode::From(key, Direction::Forward),
                None => IterMode::Start,
            };
            let mut batch = Batch::default();
            let mut bytes = 0usize;
            let mut last: Option<Box<[u8]>> = None;
            let mut flush = |batch: &mut Batch, last: &[u8], done: &mut u64| -> StoreResult<()> {
                let records = batch.ops.len() as u64;
                *done += records;
                let progress = Progress {
                    source: source_id.clone(),
                    family: index,
                    last_key: last.to_vec(),
                    done: *done,
                };
                let value = serde_json::to_vec(&progress)
                    .map_err(|e| StoreError::Invalid(format!("copy progress record: {e}")))?;
                batch.put(CF_META, PROGRESS_KEY, value);
                target.inner.backend.write(std::mem::take(batch), true)?;
                on_event(CopyEvent::Copied { done: *done, total });
                Ok(())
            };
            for item in view.iter(cf, mode)? {
                let (k, v) = item?;
                // `From` starts at the key itself, which the earlier run copied.
                if after.is_some_and(|a| *a == *k) || is_progress(cf, &k) {
                    continue;
                }
                bytes += k.len() + v.len();
                batch.put(cf, &k, &v);
                last = Some(k);
                if batch.ops.len() >= batch_records || bytes >= BATCH_BYTES {
                    if let Some(key) = &last {
                        flush(&mut batch, key, &mut done)?;
                    }
                    bytes = 0;
                }
            }
            if !batch.ops.is_empty() {
                if let Some(key) = &last {
                    flush(&mut batch, key, &mut done)?;
                }
            }
        }
        on_event(CopyEvent::Verifying);
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
        let mut finished = Batch::default();
        finished.delete(CF_META, PROGRESS_KEY);
        target.inner.backend.write(finished, true)?;
        Ok(source)
    }
}
