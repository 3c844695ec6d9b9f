//! Understudy's durable store: accounts, mailboxes, messages, bodies, relay queue,
//! tracking log and outage state in one RocksDB database.
//!
//! The API is synchronous and thread-safe; async callers run it on a blocking pool.
//! Durability contract: every method that records a change a protocol reply will promise
//! (a delivery, an APPEND, a flag change, an expunge, a queue status) returns only after
//! its write batch is synced to the WAL. Concurrent writers share fsyncs through RocksDB's
//! group commit. Sessions learn of mailbox changes through [`Store::subscribe`].
//!
//! Key spaces (one column family each, numeric keys big-endian so they sort):
//! see [`keys`] and `docs/architecture.md`.

pub mod accounts;
pub mod address;
pub mod admins;
mod backend;
pub mod bodies;
mod clock;
pub mod copy;
mod db;
pub mod delivery;
pub mod drain;
mod error;
mod health;
pub mod hold;
pub mod integrity;
pub mod keys;
mod lease;
mod logins;
pub mod mailbox;
pub mod model;
mod notify;
pub mod outage;
pub mod outage_ops;
pub mod provisioning;
pub mod queue;
mod queue_index;
mod recoverable;
mod retention;
pub mod subscriptions;
pub mod summaries;
pub mod tracking;
pub mod view_holds;

pub use address::EmailAddress;
pub use backend::pg::{PgOptions, PgTls};
pub use bodies::{BodyOptions, S3Options, SweepOutcome};
pub use clock::{Clock, ManualClock, SystemClock};
pub use db::{BodySummary, Store, StoreOptions, Summariser, SCHEMA_VERSION};
pub use error::{StoreError, StoreResult};
pub use mailbox::NewMessage;
pub use model::*;
pub use tracking::TrackingId;
pub use view_holds::{HeldMessage, ViewHold, NODE_LEASE_SECS};
