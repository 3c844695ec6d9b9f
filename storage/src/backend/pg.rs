//! The shared backend: PostgreSQL, one table per column family (`key bytea primary key,
//! value bytea`), so several Understudy nodes can serve from one replicated store.
//!
//! - A batch is one transaction, committed with `synchronous_commit = on` (a lazy batch
//!   sets it off for that transaction only); the call returns after COMMIT returned.
//!   Deadlocks and serialization failures are retried, a bounded number of times.
//! - A read view is a `REPEATABLE READ READ ONLY` transaction on one pooled connection.
//! - Iterators read pages in key order (`bytea` compares bytewise, as RocksDB does).
//! - Counters (`MaxU64`) are `greatest` upserts and reference counts (`AddI64`) are
//!   arithmetic upserts, atomic in the database whatever the order of the writers.
//!
//! tokio-postgres and its pool run on a small runtime of their own: the store's API is
//! synchronous, its callers are on blocking threads (or plain threads in tools and
//! tests), and waiting on a channel for a task of another runtime is safe from any of
//! them, where entering a runtime from inside another one is not.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use super::{
    Batch, ChangeListener, Direction, IterMode, KeyValue, KvBackend, KvIter, LockClass, Op, ReadView,
    RemoteLock,
};
use crate::error::{StoreError, StoreResult};
use crate::keys::ALL_CFS;

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP or a Unix socket: loopback or a private network only.
    Off,
    /// TLS, the server's certificate verified against the system's roots or `ca_file`.
    Require { ca_file: Option<std::path::PathBuf> },
}

/// Where the shared store is and how to reach it.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq-style URL or key=value string (`postgresql://user@host/db`).
    pub url: String,
    /// The password, when it is not in the URL (read from a file by the caller).
    pub password: Option<Vec<u8>>,
    /// Connections this node keeps open at most.
    pub pool_size: usize,
    pub tls: PgTls,
}

impl std::fmt::Debug for PgOptions {
    /// Never shows the URL (it may hold a password) or the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Whether `url` is a connection string tokio-postgres accepts; the error names
    /// what is wrong (never the URL itself, which may hold a password).
    pub fn check_url(url: &str) -> Result<(), String> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        if config.get_dbname().is_none() {
            return Err("names no database".into());
        }
        Ok(())
    }
}

/// Attempts of a transaction that fails with a deadlock or serialization failure.
const MAX_ATTEMPTS: usize = 5;
/// Rows read per page by iterators; bodies are read fewer at a time.
const PAGE_ROWS: i64 = 256;
const BODY_PAGE_ROWS: i64 = 8;
/// A pooled connection is waited for, and created, at most this long.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct PgBackend {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// Connections that hold `Store::lock` stripes (session advisory locks), one pool
    /// per lock class: a thread holding an outer lock may wait for an inner one, never
    /// for a connection of its own class, so the pools cannot starve each other.
    inner_locks: Pool,
    outer_locks: Pool,
    /// What the listener needs to open its own connection (not pooled: notifications
    /// arrive on the connection object, which the pool keeps to itself).
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The NOTIFY channel of this store (one per schema).
    channel: String,
    /// True while this node holds the leader lock (see [`LEADER_LOCK`]).
    leader: Arc<std::sync::atomic::AtomicBool>,
}

/// Held, on a connection of its own, by the one node that runs the background work of
/// the store (the queue drain, the outage monitor, retention). A node that dies loses
/// its connection and with it the lock, and another node takes over within
/// [`LEAD_RETRY`].
const LEADER_LOCK: &str = "SELECT pg_try_advisory_lock(72150173, hashtext(current_schema()))";
const LEAD_RETRY: Duration = Duration::from_secs(2);

/// Advisory lock keys are (class, stripe); these classes are Understudy's.
const INNER_LOCK_CLASS: i32 = 72150171;
const OUTER_LOCK_CLASS: i32 = 72150172;
/// The advisory lock class of records a batch expects to be absent (`Op::Expect`).
const EXPECT_LOCK_CLASS: i32 = 72150174;
const EXPECT_ABSENT_LOCK: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
/// A lost listener connection is opened again after this long.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

fn table(cf: &str) -> String {
    format!("understudy_{cf}")
}

fn pg_error(context: &str, e: impl std::error::Error) -> StoreError {
    // tokio-postgres says only "db error" at the top; the server's message is the source.
    let mut text = format!("{context}: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StoreError::Postgres(text)
}

/// True for errors after which the same transaction may succeed when retried.
fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code()
        .is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

fn tls_config(tls: &PgTls) -> StoreResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match tls {
        PgTls::Require { ca_file: Some(path) } => {
            let pem = std::fs::read(path)?;
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| pg_error(&format!("CA file {}", path.display()), e))?;
                roots
                    .add(cert)
                    .map_err(|e| pg_error(&format!("CA file {}", path.display()), e))?;
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pg_error("TLS", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PgBackend {
    /// Connects, creates the tables when absent, and says whether the store existed
    /// before (its `meta` table was there).
    pub fn open(options: &PgOptions) -> StoreResult<(PgBackend, bool)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("understudy-pg")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("store url: {e}")))?;
        if let Some(password) = &options.password {
            config.password(password);
        }
        // Every commit waits for its WAL flush, whatever the server's default.
        let options_text = match config.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=on"),
            None => "-c synchronous_commit=on".to_string(),
        };
        config.options(&options_text);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        let tls = match &options.tls {
            PgTls::Off => None,
            tls => {
                if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable
                    || config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer
                {
                    config.ssl_mode(tokio_postgres::config::SslMode::Require);
                }
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(tls)?))
            }
        };
        let build = |size: usize| -> StoreResult<Pool> {
            let manager_config = ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            };
            let manager = match &tls {
                None => Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
                Some(connector) => Manager::from_config(config.clone(), connector.clone(), manager_config),
            };
            let _enter = handle.enter();
            Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_TIMEOUT))
                .create_timeout(Some(POOL_TIMEOUT))
                .build()
                .map_err(|e| pg_error("connection pool", e))
        };
        let pool = build(options.pool_size)?;
        let inner_locks = build(options.pool_size)?;
        let outer_locks = build(options.pool_size)?;
        let mut backend = PgBackend {
            runtime: Some(runtime),
            handle,
            pool,
            inner_locks,
            outer_locks,
            config,
            tls,
            channel: String::new(),
            leader: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let existed = backend.run(Self::create_schema(backend.pool.clone()))?;
        let pool = backend.pool.clone();
        let schema: String = backend.run(async move {
            let client = get(&pool).await?;
            let row = client
                .query_one("SELECT current_schema()::text", &[])
                .await
                .map_err(|e| pg_error("schema", e))?;
            Ok(row.get(0))
        })?;
        backend.channel = format!("understudy_changes_{schema}");
        backend.start_leading();
        Ok((backend, existed))
    }

    /// Keeps trying for the leader lock, and holding it, on a connection of its own.
    fn start_leading(&self) {
        let (config, tls, leader) = (self.config.clone(), self.tls.clone(), self.leader.clone());
        self.handle.spawn(async move {
            loop {
                let result = match &tls {
                    None => lead_on(&config, tokio_postgres::NoTls, &leader).await,
                    Some(connector) => lead_on(&config, connector.clone(), &leader).await,
                };
                if leader.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    tracing::warn!("store: no longer the leading node (background work stops here)");
                }
                if let Err(e) = result {
                    tracing::warn!(error = %e, "store: leader lock connection lost; reconnecting");
                }
                tokio::time::sleep(LEAD_RETRY).await;
            }
        });
    }

    async fn create_schema(pool: Pool) -> StoreResult<bool> {
        let mut client = get(&pool).await?;
        let tx = client.transaction().await.map_err(|e| pg_error("begin", e))?;
        // Two nodes starting at once create the tables one after the other.
        tx.execute("SELECT pg_advisory_xact_lock(7215017001)", &[])
            .await
            .map_err(|e| pg_error("schema lock", e))?;
        let existed = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&table(crate::keys::CF_META)],
            )
            .await
            .map_err(|e| pg_error("schema check", e))?
            .get::<_, bool>(0);
        let mut sql = String::new();
        for cf in ALL_CFS {
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, value bytea NOT NULL);\n",
                table(cf)
            ));
        }
        // Big-endian i64 in bytea to bigint, for reference counts added in place.
        sql.push_str(
            "CREATE OR REPLACE FUNCTION understudy_i64(b bytea) RETURNS bigint \
             LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT ('x' || encode(b, 'hex'))::bit(64)::bigint $$;\n",
        );
        tx.batch_execute(&sql)
            .await
            .map_err(|e| pg_error("create tables", e))?;
        tx.commit().await.map_err(|e| pg_error("commit", e))?;
        Ok(existed)
    }

    /// Runs `task` on the backend's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        task: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(task.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Postgres("the database task ended without an answer".into()))?
    }

    async fn write_batch(pool: Pool, batch: Arc<Batch>, sync: bool) -> StoreResult<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = get(&pool).await?;
            match apply(&client, &batch, sync).await {
                Ok(Ok(())) => return Ok(()),
                // Rolled back: the connection is clean again.
                Ok(Err(conflict)) => return Err(StoreError::Conflict(conflict)),
                Err(e) => {
                    // The connection may be mid-transaction: never hand it back to the pool.
                    drop(Object::take(client));
                    if attempt < MAX_ATTEMPTS && retryable(&e) {
                        tracing::debug!(error = %e, attempt, "store: transaction retried");
                        tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                        continue;
                    }
                    return Err(pg_error("write", e));
                }
            }
        }
    }
}

async fn get(pool: &Pool) -> StoreResult<Object> {
    pool.get().await.map_err(|e| pg_error("connect", e))
}

/// The statements of a batch, pipelined in one transaction. The preconditions
/// (`Op::Expect`) go first, each locking its row (`FOR UPDATE`) until the commit; when
/// one does not hold, the transaction is rolled back and the inner result names it.
async fn apply(
    client: &Object,
    batch: &Batch,
    sync: bool,
) -> Result<Result<(), String>, tokio_postgres::Error> {
    client
        .batch_execute(if sync {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit = off"
        })
        .await?;
    let mut checks = Vec::new();
    for op in &batch.ops {
        if let Op::Expect { cf, key, value } = op {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT value FROM {} WHERE key = $1 FOR UPDATE",
                    table(cf)
                ))
                .await?;
            // No row to lock when the record must be absent: a transaction advisory lock
            // on its name stands in, so two writers expecting it absent commit one after
            // the other and the second sees the first's insert (READ COMMITTED: the
            // SELECT after the lock reads what committed before it was granted).
            let absent_lock = match value {
                Some(_) => None,
                None => Some(client.prepare_cached(EXPECT_ABSENT_LOCK).await?),
            };
            let name = format!("{cf}:{}", hex::encode(key));
            checks.push(async move {
                if let Some(lock) = &absent_lock {
                    client.execute(lock, &[&EXPECT_LOCK_CLASS, &name]).await?;
                }
                let row = client.query_opt(&statement, &[key]).await?;
                let found: Option<Vec<u8>> = row.map(|r| r.get(0));
                Ok::<_, tokio_postgres::Error>((found == *value, *cf))
            });
        }
    }
    for (holds, cf) in futures_util::future::try_join_all(checks).await? {
        if !holds {
            client.batch_execute("ROLLBACK").await?;
            return Ok(Err(format!("{cf} record changed")));
        }
    }
    let writes: Vec<&Op> = batch
        .ops
        .iter()
        .filter(|op| !matches!(op, Op::Expect { .. }))
        .collect();
    let mut statements = Vec::with_capacity(writes.len());
    for op in &writes {
        let sql = match op {
            Op::Put { cf, .. } => format!(
                "INSERT INTO {t} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                t = table(cf)
            ),
            Op::Delete { cf, .. } => format!("DELETE FROM {} WHERE key = $1", table(cf)),
            Op::MaxU64 { cf, .. } => format!(
                "INSERT INTO {t} AS t (key, value) VALUES ($1, $2) ON CONFLICT (key) \
                 DO UPDATE SET value = greatest(t.value, EXCLUDED.value)",
                t = table(cf)
            ),
            Op::AddI64 { cf, .. } => format!(
                "INSERT INTO {t} AS t (key, value) VALUES ($1, $2) ON CONFLICT (key) \
                 DO UPDATE SET value = int8send(understudy_i64(t.value) + understudy_i64(EXCLUDED.value))",
                t = table(cf)
            ),
            Op::Expect { .. } => continue,
        };
        statements.push(client.prepare_cached(&sql).await?);
    }
    let values: Vec<Vec<u8>> = writes
        .iter()
        .map(|op| match op {
            Op::MaxU64 { value, .. } => value.to_be_bytes().to_vec(),
            Op::AddI64 { delta, .. } => delta.to_be_bytes().to_vec(),
            _ => Vec::new(),
        })
        .collect();
    let mut pending = Vec::with_capacity(writes.len());
    for ((op, statement), number) in writes.iter().zip(&statements).zip(&values) {
        let params: Vec<&(dyn ToSql + Sync)> = match op {
            Op::Put { key, value, .. } => vec![key, value],
            Op::Delete { key, .. } => vec![key],
            Op::MaxU64 { key, .. } | Op::AddI64 { key, .. } => vec![key, number],
            Op::Expect { .. } => continue,
        };
        pending.push(async move { client.execute(statement, &params).await });
    }
    // Sent in order on the one connection (tokio-postgres pipelines them).
    futures_util::future::try_join_all(pending).await?;
    client.batch_execute("COMMIT").await.map(Ok)
}

async fn get_one(client: &Object, cf: &'static str, key: Vec<u8>) -> StoreResult<Option<Vec<u8>>> {
    let statement = client
        .prepare_cached(&format!("SELECT value FROM {} WHERE key = $1", table(cf)))
        .await
        .map_err(|e| pg_error("prepare", e))?;
    let row = client
        .query_opt(&statement, &[&key])
        .await
        .map_err(|e| pg_error("read", e))?;
    Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
}

async fn get_many(
    client: &Object,
    cf: &'static str,
    keys: Vec<Vec<u8>>,
) -> StoreResult<Vec<Option<Vec<u8>>>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT key, value FROM {} WHERE key = ANY($1)",
            table(cf)
        ))
        .await
        .map_err(|e| pg_error("prepare", e))?;
    let rows = client
        .query(&statement, &[&keys])
        .await
        .map_err(|e| pg_error("read", e))?;
    let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> = rows
        .into_iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
        .collect();
    Ok(keys.iter().map(|k| found.remove(k)).collect())
}

/// Where the next page starts.
#[derive(Clone)]
enum Cursor {
    /// At or after (forward) / at or before (reverse) the key.
    Inclusive(Vec<u8>),
    /// Strictly after / before the key (the last one returned).
    Exclusive(Vec<u8>),
    /// From the very first / last key.
    Open,
}

async fn page(
    client: &Object,
    cf: &'static str,
    reverse: bool,
    cursor: Cursor,
    limit: i64,
) -> StoreResult<Vec<KeyValue>> {
    let t = table(cf);
    let (order, incl, excl) = if reverse {
        ("DESC", "<=", "<")
    } else {
        ("ASC", ">=", ">")
    };
    let (condition, key) = match cursor {
        Cursor::Inclusive(k) => (format!("WHERE key {incl} $1"), Some(k)),
        Cursor::Exclusive(k) => (format!("WHERE key {excl} $1"), Some(k)),
        Cursor::Open => (String::new(), None),
    };
    let limit_param = if key.is_some() { "$2" } else { "$1" };
    let sql = format!("SELECT key, value FROM {t} {condition} ORDER BY key {order} LIMIT {limit_param}");
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(|e| pg_error("prepare", e))?;
    let rows = match &key {
        Some(k) => client.query(&statement, &[k, &limit]).await,
        None => client.query(&statement, &[&limit]).await,
    }
    .map_err(|e| pg_error("read", e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<_, Vec<u8>>(0).into_boxed_slice(),
                r.get::<_, Vec<u8>>(1).into_boxed_slice(),
            )
        })
        .collect())
}

/// Which connection an iterator or read runs on.
#[derive(Clone)]
enum Source {
    /// Any pooled connection, per page.
    Pool(Pool),
    /// The read view's own connection (its transaction).
    View(Arc<Object>),
}

impl Source {
    async fn client(&self) -> StoreResult<ClientRef> {
        match self {
            Source::Pool(pool) => Ok(ClientRef::Owned(Box::new(get(pool).await?))),
            Source::View(object) => Ok(ClientRef::Shared(object.clone())),
        }
    }
}

enum ClientRef {
    Owned(Box<Object>),
    Shared(Arc<Object>),
}

impl std::ops::Deref for ClientRef {
    type Target = Object;
    fn deref(&self) -> &Object {
        match self {
            ClientRef::Owned(o) => o,
            ClientRef::Shared(o) => o,
        }
    }
}

/// Pages through a table lazily: an iteration that stops after a few keys reads only
/// its first page.
struct PageIter<'a> {
    backend: &'a PgBackend,
    source: Source,
    cf: &'static str,
    reverse: bool,
    cursor: Option<Cursor>,
    buffer: std::vec::IntoIter<KeyValue>,
    page_rows: i64,
}

impl Iterator for PageIter<'_> {
    type Item = StoreResult<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.buffer.next() {
            return Some(Ok(item));
        }
        let cursor = self.cursor.take()?;
        let (source, cf, reverse, limit) = (self.source.clone(), self.cf, self.reverse, self.page_rows);
        let rows = match self.backend.run(async move {
            let client = source.client().await?;
            page(&client, cf, reverse, cursor, limit).await
        }) {
            Ok(rows) => rows,
            Err(e) => return Some(Err(e)),
        };
        if rows.len() as i64 == self.page_rows {
            self.cursor = rows.last().map(|(k, _)| Cursor::Exclusive(k.to_vec()));
        }
        self.buffer = rows.into_iter();
        self.buffer.next().map(Ok)
    }
}

impl PgBackend {
    fn read_get(&self, source: Source, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.run(async move { get_one(&*source.client().await?, cf, key).await })
    }

    fn read_many(
        &self,
        source: Source,
        cf: &'static str,
        keys: &[&[u8]],
    ) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.run(async move { get_many(&*source.client().await?, cf, keys).await })
    }

    fn read_iter<'s>(&'s self, source: Source, cf: &'static str, mode: IterMode<'s>) -> KvIter<'s> {
        let (reverse, cursor) = match mode {
            IterMode::Start => (false, Cursor::Open),
            IterMode::End => (true, Cursor::Open),
            IterMode::From(key, direction) => {
                (direction == Direction::Reverse, Cursor::Inclusive(key.to_vec()))
            }
        };
        Box::new(PageIter {
            backend: self,
            source,
            cf,
            reverse,
            cursor: Some(cursor),
            buffer: Vec::new().into_iter(),
            page_rows: if cf == crate::keys::CF_BLOBS {
                BODY_PAGE_ROWS
            } else {
                PAGE_ROWS
            },
        })
    }
}

impl ReadView for PgBackend {
    fn get(&self, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.read_get(Source::Pool(self.pool.clone()), cf, key)
    }

    fn multi_get(&self, cf: &'static str, keys: &[&[u8]]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.read_many(Source::Pool(self.pool.clone()), cf, keys)
    }

    fn iter<'s>(&'s self, cf: &'static str, mode: IterMode<'s>) -> StoreResult<KvIter<'s>> {
        Ok(self.read_iter(Source::Pool(self.pool.clone()), cf, mode))
    }
}

/// A read view: one connection in a `REPEATABLE READ` transaction, rolled back (and the
/// connection returned to the pool) when the view is dropped.
struct PgSnapshot<'a> {
    backend: &'a PgBackend,
    client: Option<Arc<Object>>,
}

impl PgSnapshot<'_> {
    fn source(&self) -> StoreResult<Source> {
        self.client
            .clone()
            .map(Source::View)
            .ok_or_else(|| StoreError::Postgres("read view closed".into()))
    }
}

impl ReadView for PgSnapshot<'_> {
    fn get(&self, cf: &'static str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.backend.read_get(self.source()?, cf, key)
    }

    fn multi_get(&self, cf: &'static str, keys: &[&[u8]]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.backend.read_many(self.source()?, cf, keys)
    }

    fn iter<'s>(&'s self, cf: &'static str, mode: IterMode<'s>) -> StoreResult<KvIter<'s>> {
        Ok(self.backend.read_iter(self.source()?, cf, mode))
    }
}

impl Drop for PgSnapshot<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Not waited for: the connection goes back to the pool after its ROLLBACK, or
            // is closed if that fails.
            self.backend.handle.spawn(async move {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    if let Ok(object) = Arc::try_unwrap(client) {
                        drop(Object::take(object));
                    }
                }
            });
        }
    }
}

impl KvBackend for PgBackend {
    fn snapshot(&self) -> StoreResult<Box<dyn ReadView + '_>> {
        let pool = self.pool.clone();
        let client = self.run(async move {
            let client = get(&pool).await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| pg_error("begin", e))?;
            Ok(client)
        })?;
        Ok(Box::new(PgSnapshot {
            backend: self,
            client: Some(Arc::new(client)),
        }))
    }

    fn write(&self, batch: Batch, sync: bool) -> StoreResult<()> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.run(Self::write_batch(self.pool.clone(), Arc::new(batch), sync))
    }

    /// Committed under the caller's locks (a transaction's commit is its durability
    /// point, there is no later fsync to share), then the locks are released.
    fn write_releasing<'a>(
        &self,
        batch: Batch,
        sync: bool,
        release: Box<dyn FnOnce() + 'a>,
    ) -> StoreResult<()> {
        let result = self.write(batch, sync);
        release();
        result
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    /// One statement, committed at once (not synchronously: a reservation lost in a
    /// crash was used by no committed batch, and the batch that uses it flushes the WAL
    /// that holds it).
    fn next_counter(&self, key: &'static [u8], floor: u64) -> StoreResult<Option<u64>> {
        let pool = self.pool.clone();
        let floor = floor as i64;
        self.run(async move {
            let client = get(&pool).await?;
            let statement = client
                .prepare_cached(&format!(
                    "INSERT INTO {t} AS t (key, value) VALUES ($1, int8send($2)) ON CONFLICT (key) \
                     DO UPDATE SET value = int8send(greatest(understudy_i64(t.value) + 1, $2)) \
                     RETURNING understudy_i64(value)",
                    t = table(crate::keys::CF_META)
                ))
                .await
                .map_err(|e| pg_error("prepare", e))?;
            client
                .batch_execute("BEGIN; SET LOCAL synchronous_commit = off")
                .await
                .map_err(|e| pg_error("counter", e))?;
            let value: i64 = match client.query_one(&statement, &[&key, &floor]).await {
                Ok(row) => row.get(0),
                Err(e) => {
                    drop(Object::take(client));
                    return Err(pg_error("counter", e));
                }
            };
            if let Err(e) = client.batch_execute("COMMIT").await {
                drop(Object::take(client));
                return Err(pg_error("counter", e));
            }
            Ok(Some(value as u64))
        })
    }

    /// Session advisory locks on a connection of the class's own pool, taken in the
    /// order given (sorted by the caller, the same order on every node), waited for in
    /// the server; released (and the connection handed back) when the value is dropped.
    fn lock_stripes(&self, class: LockClass, stripes: &[usize]) -> StoreResult<Option<RemoteLock>> {
        if stripes.is_empty() {
            return Ok(None);
        }
        let (pool, class) = match class {
            LockClass::Inner => (self.inner_locks.clone(), INNER_LOCK_CLASS),
            LockClass::Outer => (self.outer_locks.clone(), OUTER_LOCK_CLASS),
        };
        let stripes: Vec<i32> = stripes.iter().map(|s| *s as i32).collect();
        let client = self.run(async move {
            let client = get(&pool).await?;
            let statement = client
                .prepare_cached("SELECT pg_advisory_lock($1, $2)")
                .await
                .map_err(|e| pg_error("prepare", e))?;
            for stripe in &stripes {
                if let Err(e) = client.execute(&statement, &[&class, stripe]).await {
                    // Whatever it holds goes with the connection.
                    drop(Object::take(client));
                    return Err(pg_error("lock", e));
                }
            }
            Ok(client)
        })?;
        Ok(Some(RemoteLock(Box::new(PgLock {
            client: Some(client),
            handle: self.handle.clone(),
        }))))
    }

    fn leads(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn announce(&self, mailbox: u64, modseq: u64) {
        let pool = self.pool.clone();
        let channel = self.channel.clone();
        // Not waited for: the change is committed already; a lost announcement delays a
        // remote IDLE until its next change or reconnect, it loses nothing.
        self.handle.spawn(async move {
            let Ok(client) = get(&pool).await else {
                return;
            };
            let payload = format!("{mailbox}:{modseq}");
            if let Err(e) = client
                .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await
            {
                tracing::debug!(error = %e, "store: change announcement not sent");
            }
        });
    }

    fn listen(&self, on_change: ChangeListener) {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let channel = self.channel.clone();
        // The store is not handed out before its first LISTEN is in place, so no
        // change committed by another node after the open goes unheard.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                let result = match &tls {
                    None => {
                        listen_on(&config, tokio_postgres::NoTls, &channel, &on_change, ready.take()).await
                    }
                    Some(connector) => {
                        listen_on(&config, connector.clone(), &channel, &on_change, ready.take()).await
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "store: change listener lost its connection; reconnecting");
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        });
        if ready_rx.recv_timeout(POOL_TIMEOUT).is_err() {
            tracing::warn!(
                "store: change listener not connected yet; IDLE may miss other nodes' changes until it is"
            );
        }
    }

    fn checkpoint(&self, _target: &Path) -> StoreResult<()> {
        Err(StoreError::Invalid(
            "the store is in PostgreSQL: back it up with pg_dump or pg_basebackup".into(),
        ))
    }
}

/// Releases its advisory locks and hands its connection back, when dropped.
struct PgLock {
    client: Option<Object>,
    handle: tokio::runtime::Handle,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.handle.spawn(async move {
                if client
                    .batch_execute("SELECT pg_advisory_unlock_all()")
                    .await
                    .is_err()
                {
                    drop(Object::take(client));
                }
            });
        }
    }
}

/// One leader-lock connection's life: try for the lock every [`LEAD_RETRY`] until it is
/// taken, then check the connection as often; returns as soon as the connection fails
/// or ends.
async fn lead_on<T>(
    config: &tokio_postgres::Config,
    tls: T,
    leader: &std::sync::atomic::AtomicBool,
) -> StoreResult<()>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    use std::sync::atomic::Ordering;
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| pg_error("leader connect", e))?;
    let mut driver = tokio::spawn(connection);
    let result = async {
        loop {
            if leader.load(Ordering::SeqCst) {
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| pg_error("leader check", e))?;
            } else {
                let taken: bool = client
                    .query_one(LEADER_LOCK, &[])
                    .await
                    .map_err(|e| pg_error("leader lock", e))?
                    .get(0);
                if taken {
                    tracing::info!(
                        "store: this node leads (queue drain, outage monitor, retention run here)"
                    );
                    leader.store(true, Ordering::SeqCst);
                }
            }
            // A connection that ends (the server terminated it, restarted, failed over)
            // ends the lead at once, not at the next check: another node may hold the
            // lock a moment later, and two leaders would probe twice.
            tokio::select! {
                _ = tokio::time::sleep(LEAD_RETRY) => {}
                ended = &mut driver => {
                    return Err(match ended {
                        Ok(Ok(())) => StoreError::Postgres("leader connection closed".into()),
                        Ok(Err(e)) => pg_error("leader connection", e),
                        Err(e) => StoreError::Postgres(format!("leader connection task: {e}")),
                    });
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// One listening connection's life: LISTEN, then every notification to `on_change`
/// until the connection ends. The first connection says so on `ready` once LISTEN is in
/// place; after a reconnect everyone is woken instead, so nothing announced while it
/// was down goes unnoticed.
async fn listen_on<T>(
    config: &tokio_postgres::Config,
    tls: T,
    channel: &str,
    on_change: &ChangeListener,
    ready: Option<std::sync::mpsc::SyncSender<()>>,
) -> StoreResult<()>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    use futures_util::StreamExt;
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| pg_error("listen connect", e))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "")))
        .await
        .map_err(|e| pg_error("listen", e))?;
    match ready {
        Some(ready) => {
            let _ = ready.try_send(());
        }
        None => on_change(None),
    }
    while let Some(payload) = rx.recv().await {
        let mut parts = payload.split(':');
        if let (Some(Ok(mailbox)), Some(Ok(modseq))) = (
            parts.next().map(str::parse::<u64>),
            parts.next().map(str::parse::<u64>),
        ) {
            on_change(Some((mailbox, modseq)));
        }
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => Err(StoreError::Postgres("listen connection closed".into())),
        Ok(Err(e)) => Err(pg_error("listen connection", e)),
        Err(e) => Err(StoreError::Postgres(format!("listen task: {e}"))),
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another runtime's thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
