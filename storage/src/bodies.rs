//! Where message bodies live: in the store's own `blobs` records (the default), or in an
//! S3-compatible object store (`[store] bodies = "s3"`), one object per body named by
//! its SHA-256, while the store keeps the records, the reference counts and a marker
//! per body (`body_objects`).
//!
//! The rules that keep every message record's body present with objects outside the
//! store's transactions (issue 14's: a record without its body must never exist):
//! - A new body is PUT (idempotent: same name, same bytes) before the batch that adds
//!   its first reference commits, by a writer that holds the body's lock (`blob_lock`)
//!   across the PUT and the commit. A crash between the two leaves an orphan object only.
//! - The batch that drops the last reference deletes the marker and writes a sweep
//!   record (`body_sweep`: when it was released). No object is deleted in a writer's path.
//! - [`Store::sweep_bodies`] deletes an object only under the body's lock, after
//!   re-reading that the body has neither references nor a marker, and only once the
//!   grace period since the release (or, for an orphan, since the object was written)
//!   has passed: an appender of the same body holds that lock across its PUT and commit,
//!   so it either commits before the sweep looks or PUTs after the sweep deleted; the
//!   grace period covers readers that read the marker just before the release.
//! - Reads go to the object store; an object missing where a marker says it is, is a
//!   damaged store (the integrity check lists the bucket and reports it).
//!
//! The store's API is synchronous: the S3 client runs on a small runtime of its own (as
//! the PostgreSQL backend's does), each call bounded by a time-out, with the client's
//! own retries for transient failures inside it. A failure is a store error
//! ([`StoreError::ObjectStore`]), never a promise.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::db::{Batch, ReadView, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::BlobId;

/// Where bodies are kept.
#[derive(Debug, Clone, Default)]
pub enum BodyOptions {
    /// In the store's own records, in the same transaction as the messages.
    #[default]
    Store,
    /// In an S3-compatible object store.
    S3(S3Options),
}

/// An S3-compatible bucket for bodies.
#[derive(Clone)]
pub struct S3Options {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000` (with `allow_http`).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    /// Read from a file by the caller; never shown (see the `Debug` impl).
    pub secret_access_key: String,
    /// Objects are named `<prefix>/<hex sha-256>`; empty: at the bucket's root.
    pub prefix: String,
    /// Plain HTTP to the endpoint (a stand-in on loopback only).
    pub allow_http: bool,
    /// Each call to the object store, retries included, ends within this.
    pub timeout: Duration,
    /// How long a released or orphaned object is kept before the sweep deletes it.
    pub grace: Duration,
}

impl std::fmt::Debug for S3Options {
    /// Never shows the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// An object store call's time-out when the configuration names none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The sweep's grace period when the configuration names none.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
}

/// What one [`Store::sweep_bodies`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Objects of released bodies deleted.
    pub released: u64,
    /// Objects no record knew (a crash between a PUT and its commit) deleted.
    pub orphans: u64,
    /// Released bodies that were stored again before the sweep came: kept.
    pub kept: u64,
    /// Released bodies and orphans still inside the grace period.
    pub waiting: u64,
}

/// The reqwest client under object_store, with rustls on ring (object_store's own
/// transport would pull aws-lc-rs, which needs cmake to build).
#[derive(Debug)]
struct RingConnector {
    timeout: Duration,
    allow_http: bool,
}

impl HttpConnector for RingConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
            store: "S3",
            source: e,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| generic(Box::new(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(!self.allow_http)
            .no_proxy()
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .timeout(self.timeout)
            .build()
            .map_err(|e| generic(Box::new(e)))?;
        Ok(HttpClient::new(client))
    }
}

/// Bodies in an S3-compatible bucket (see the module comment).
pub(crate) struct ObjectBodies {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    s3: Arc<AmazonS3>,
    prefix: String,
    timeout: Duration,
    pub(crate) grace: Duration,
    /// Names the bucket in messages (never the key).
    label: String,
}

/// Largest object read as a body: no body is longer (`limits.max_message_size` is at
/// most `u32::MAX`), so a read stops there whatever the bucket sends.
const MAX_OBJECT: u64 = u32::MAX as u64;

fn s3_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::ObjectStore(format!("{what}: {e}"))
}

impl ObjectBodies {
    pub(crate) fn open(options: &S3Options) -> StoreResult<ObjectBodies> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("understudy-s3")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: options.timeout,
        };
        // Built with the client's runtime as the current one (reqwest may need it).
        let entered = handle.enter();
        let s3 = AmazonS3Builder::new()
            .with_endpoint(options.endpoint.trim_end_matches('/'))
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            .with_allow_http(options.allow_http)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(options.allow_http)
                    .with_timeout(options.timeout),
            )
            .with_http_connector(RingConnector {
                timeout: options.timeout,
                allow_http: options.allow_http,
            })
            .build()
            .map_err(|e| s3_error("S3 configuration", e))?;
        drop(entered);
        Ok(ObjectBodies {
            runtime: Some(runtime),
            handle,
            s3: Arc::new(s3),
            prefix: options.prefix.trim_matches('/').to_string(),
            timeout: options.timeout,
            grace: options.grace,
            label: format!("{} bucket {}", options.endpoint, options.bucket),
        })
    }

    fn path(&self, blob: &BlobId) -> ObjectPath {
        let name = hex::encode(blob);
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// The body an object's name stands for, if it is one of ours.
    fn blob_of(&self, path: &ObjectPath) -> Option<BlobId> {
        let name = path.as_ref();
        let name = if self.prefix.is_empty() {
            name
        } else {
            name.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
        };
        let bytes = hex::decode(name).ok()?;
        BlobId::try_from(bytes.as_slice()).ok()
    }

    /// Runs `task` on the client's runtime, bounded by the time-out, and waits for it:
    /// safe from a blocking thread of another runtime or a plain thread.
    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        task: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let label = self.label.clone();
        self.handle.spawn(async move {
            let result = match tokio::time::timeout(timeout, task).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::ObjectStore(format!(
                    "{what} at {label}: no answer within {} s",
                    timeout.as_secs_f64()
                ))),
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| StoreError::ObjectStore("the object store task ended without an answer".into()))?
    }

    pub(crate) fn put(&self, blob: &BlobId, body: &[u8]) -> StoreResult<()> {
        let s3 = self.s3.clone();
        let path = self.path(blob);
        let payload = PutPayload::from(body.to_vec());
        let label = self.label.clone();
        self.run("PUT", async move {
            s3.put(&path, payload)
                .await
                .map(drop)
                .map_err(|e| s3_error(&format!("PUT {path} at {label}"), e))
        })
    }

    /// The body, or None when there is no such object.
    pub(crate) fn get(&self, blob: &BlobId) -> StoreResult<Option<Vec<u8>>> {
        let blob = *blob;
        let s3 = self.s3.clone();
        let path = self.path(&blob);
        let label = self.label.clone();
        self.run("GET", async move {
            let what = || format!("GET {path} at {label}");
            match s3.get(&path).await {
                Ok(got) => {
                    // A body was at most the message size limit (under 4 GiB) when it
                    // was written: a bigger object, or one whose bytes are not the
                    // body its name is the hash of, is a damaged bucket, read no further.
                    if got.meta.size > MAX_OBJECT {
                        return Err(s3_error(&what(), format!("object of {} octets", got.meta.size)));
                    }
                    let mut body = Vec::with_capacity(got.meta.size.min(1 << 20) as usize);
                    let mut chunks = got.into_stream();
                    while let Some(chunk) = chunks.next().await {
                        let chunk = chunk.map_err(|e| s3_error(&what(), e))?;
                        if (body.len() + chunk.len()) as u64 > MAX_OBJECT {
                            return Err(s3_error(&what(), "object longer than any body"));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    if crate::mailbox::blob_id(&body) != blob {
                        return Err(s3_error(
                            &what(),
                            "the object is not the body its name is the hash of",
                        ));
                    }
                    Ok(Some(body))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(s3_error(&what(), e)),
            }
        })
    }

    /// Deletes the object; one already gone is no error.
    pub(crate) fn delete(&self, blob: &BlobId) -> StoreResult<()> {
        let s3 = self.s3.clone();
        let path = self.path(blob);
        let label = self.label.clone();
        self.run("DELETE", async move {
            match s3.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_error(&format!("DELETE {path} at {label}"), e)),
            }
        })
    }

    /// Every body object under the prefix, with its last-modified time (Unix seconds).
    pub(crate) fn list(&self) -> StoreResult<Vec<(BlobId, i64)>> {
        let s3 = self.s3.clone();
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let label = self.label.clone();
        let objects: Vec<(ObjectPath, i64)> = self.run("LIST", async move {
            let mut out = Vec::new();
            let mut stream = s3.list(prefix.as_ref());
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| s3_error(&format!("LIST at {label}"), e))?;
                out.push((meta.location, meta.last_modified.timestamp()));
            }
            Ok(out)
        })?;
        Ok(objects
            .iter()
            .filter_map(|(path, modified)| Some((self.blob_of(path)?, *modified)))
            .collect())
    }
}

impl Drop for ObjectBodies {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another runtime's thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Where new bodies go: "store" or "s3".
    pub fn bodies_kind(&self) -> &'static str {
        match &self.inner.bodies {
            Some(_) => "s3",
            None => "store",
        }
    }

    /// Makes a new body durable for the batch that adds its first reference: into the
    /// batch itself, or PUT to the object store now (before the batch commits) with a
    /// marker in the batch. Caller holds the body's lock until the batch has committed.
    pub(crate) fn put_body(&self, batch: &mut Batch, blob: &BlobId, body: &[u8]) -> StoreResult<()> {
        match &self.inner.bodies {
            None => batch.put(CF_BLOBS, blob, body),
            Some(objects) => {
                objects.put(blob, body)?;
                batch.put(CF_BODY_OBJECTS, blob, b"");
                // A release not swept yet is moot: the body is live again.
                batch.delete(CF_BODY_SWEEP, blob);
            }
        }
        Ok(())
    }

    /// The batch drops the body's last reference: its record or marker goes, and an
    /// object is left for the sweep. Caller holds the body's lock.
    pub(crate) fn drop_body(&self, batch: &mut Batch, blob: &BlobId) {
        batch.delete(CF_BLOBS, blob);
        batch.delete(CF_BODY_OBJECTS, blob);
        if self.inner.bodies.is_some() {
            batch.put(CF_BODY_SWEEP, blob, self.now().to_be_bytes());
        }
    }

    /// A body as of `view`: its record, or its object when the view has its marker.
    pub(crate) fn read_body(&self, view: &dyn ReadView, blob: &BlobId) -> StoreResult<Option<Vec<u8>>> {
        // The kind in use first: one read of the view for nearly every body (a body
        // written before the kind was changed takes two).
        let object = if self.inner.bodies.is_some() && view.get(CF_BODY_OBJECTS, blob)?.is_some() {
            true
        } else if let Some(body) = view.get(CF_BLOBS, blob)? {
            return Ok(Some(body));
        } else {
            self.inner.bodies.is_none() && view.get(CF_BODY_OBJECTS, blob)?.is_some()
        };
        if !object {
            return Ok(None);
        }
        match &self.inner.bodies {
            Some(objects) => match objects.get(blob)? {
                Some(body) => Ok(Some(body)),
                None => Err(StoreError::Corrupt {
                    cf: CF_BODY_OBJECTS,
                    reason: format!("body {} is not in the object store", hex::encode(blob)),
                }),
            },
            None => Err(StoreError::ObjectStore(format!(
                "body {} is in an S3 object store and [store.s3] is not configured",
                hex::encode(blob)
            ))),
        }
    }

    /// Whether a body is stored (as a record, or as an object with its marker).
    pub(crate) fn body_present(&self, view: &dyn ReadView, blob: &BlobId) -> StoreResult<bool> {
        Ok(view.get(CF_BLOBS, blob)?.is_some() || view.get(CF_BODY_OBJECTS, blob)?.is_some())
    }

    /// The object store's bodies, for the integrity check (None: bodies in the store).
    pub(crate) fn listed_objects(&self) -> StoreResult<Option<Vec<(BlobId, i64)>>> {
        match &self.inner.bodies {
            Some(objects) => objects.list().map(Some),
            None => Ok(None),
        }
    }

    /// Moves every body still kept as a record of the store (written before `[store]
    /// bodies` became "s3") into the bucket: each under its lock, PUT, then its record
    /// replaced by a marker in one batch, so a crash leaves at worst an orphan object and
    /// the record. Safe while servers run (writers take the same locks). `progress` gets
    /// the count so far. Returns how many moved; an error when bodies are not in S3.
    pub fn move_bodies_to_objects(&self, progress: &mut dyn FnMut(u64)) -> StoreResult<u64> {
        let Some(objects) = &self.inner.bodies else {
            return Err(StoreError::Invalid(
                "bodies are kept in the store ([store] bodies = \"store\"): nothing to move to".into(),
            ));
        };
        let mut ids: Vec<BlobId> = Vec::new();
        for item in self.iter(CF_BLOBS, crate::db::IterMode::Start)? {
            let (k, _) = item?;
            if let Ok(blob) = BlobId::try_from(&k[..]) {
                ids.push(blob);
            }
        }
        let mut moved = 0;
        for blob in ids {
            let _guard = self.lock(&[crate::mailbox::blob_lock(&blob)])?;
            // Released (or moved by another run) since the scan: nothing to do.
            let Some(body) = self.get_raw(CF_BLOBS, &blob)? else {
                continue;
            };
            objects.put(&blob, &body)?;
            let mut batch = Batch::default();
            batch.delete(CF_BLOBS, blob);
            batch.put(CF_BODY_OBJECTS, blob, b"");
            batch.delete(CF_BODY_SWEEP, blob);
            self.commit(batch)?;
            moved += 1;
            progress(moved);
        }
        Ok(moved)
    }

    /// Deletes the objects of released bodies and orphans older than the grace period,
    /// each under the body's lock after re-reading that nothing references it (see the
    /// module comment). Nothing to do when bodies are kept in the store. Run by the
    /// leading node in the background; safe to run on several at once.
    pub fn sweep_bodies(&self) -> StoreResult<SweepOutcome> {
        let Some(objects) = &self.inner.bodies else {
            return Ok(SweepOutcome::default());
        };
        let grace = objects.grace.as_secs() as i64;
        let mut outcome = SweepOutcome::default();
        let now = self.now();
        let released: Vec<(BlobId, i64)> = self
            .scan_prefix(CF_BODY_SWEEP, &[])?
            .iter()
            .filter_map(|(k, v)| {
                let blob = BlobId::try_from(&k[..]).ok()?;
                Some((blob, crate::db::read_i64(v).unwrap_or(0)))
            })
            .collect();
        for (blob, at) in released {
            if now.saturating_sub(at) < grace {
                outcome.waiting += 1;
                continue;
            }
            let _guard = self.lock(&[crate::mailbox::blob_lock(&blob)])?;
            let live = self.blob_refs(&blob)? > 0 || self.blob_exists(&blob)?;
            if !live {
                objects.delete(&blob)?;
            }
            let mut batch = Batch::default();
            batch.delete(CF_BODY_SWEEP, blob);
            self.commit(batch)?;
            if live {
                outcome.kept += 1;
            } else {
                outcome.released += 1;
            }
        }
        // Orphans: objects no record knows, written longer ago than the grace period
        // (object times are the object store's clock, compared with this host's).
        let wall = unix_now();
        for (blob, modified) in objects.list()? {
            if self.blob_exists(&blob)? || self.get_raw(CF_BODY_SWEEP, &blob)?.is_some() {
                continue;
            }
            if wall.saturating_sub(modified) < grace {
                outcome.waiting += 1;
                continue;
            }
            let _guard = self.lock(&[crate::mailbox::blob_lock(&blob)])?;
            if self.blob_refs(&blob)? > 0 || self.blob_exists(&blob)? {
                continue;
            }
            objects.delete(&blob)?;
            outcome.orphans += 1;
        }
        if outcome != SweepOutcome::default() {
            tracing::info!(
                released = outcome.released,
                orphans = outcome.orphans,
                kept = outcome.kept,
                waiting = outcome.waiting,
                "store: body objects swept"
            );
        }
        Ok(outcome)
    }
}
