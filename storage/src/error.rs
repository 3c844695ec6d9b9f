//! The store's error type.

use thiserror::Error;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The text is a whole sentence ("x is already in use ...").
    #[error("{0}")]
    AlreadyExists(String),
    /// A request that cannot be carried out as given; the text is a whole sentence.
    #[error("{0}")]
    Invalid(String),
    #[error("no space left on the store's device: {0}")]
    NoSpace(String),
    #[error(
        "the database at {path} has schema version {found}, newer than this binary supports ({supported}); \
         run the newer Understudy or restore a backup"
    )]
    SchemaTooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("{path} is not an Understudy database or is damaged: {reason}")]
    NotUnderstudy { path: String, reason: String },
    /// Another open store (normally the running server) holds the database.
    #[error("the database at {path} is in use by another process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: String, pid: Option<u32> },
    #[error("cannot open the database at {path}: {source}")]
    Open { path: String, source: rocksdb::Error },
    #[error("storage I/O error: {0}")]
    Db(rocksdb::Error),
    /// The PostgreSQL backend failed (connection, statement or commit); the text has
    /// the cause. Temporary from a client's point of view.
    #[error("PostgreSQL store: {0}")]
    Postgres(String),
    /// A batch's precondition ([`crate::backend`] `Op::Expect`) did not hold: another
    /// writer changed the record first. Nothing of the batch was applied.
    #[error("record changed by another writer: {0}")]
    Conflict(String),
    /// The S3 object store of bodies failed or did not answer in time; the text has
    /// the cause (never the secret key). Temporary from a client's point of view.
    #[error("object store of bodies: {0}")]
    ObjectStore(String),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("filesystem error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// True when retrying later may succeed (device full, transient I/O); protocol layers
    /// map this to a temporary failure reply (SMTP 452/451, IMAP NO).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace(_))
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        let text = e.to_string();
        if text.contains("No space left") || text.contains("ENOSPC") {
            StoreError::NoSpace(text)
        } else {
            StoreError::Db(e)
        }
    }
}
