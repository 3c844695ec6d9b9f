//! Understudy's mail protocols as synchronous state machines with no I/O.
//!
//! Each protocol module (`imap`, `pop3`, `smtp`) holds a session type that the network
//! driver in the root crate feeds with complete lines or literals and that answers with
//! bytes to write and what the driver must do next. Sessions reach accounts and mail only
//! through the traits defined here and in each module, so they can be tested without a
//! socket and without RocksDB. Backend calls may block (they hit the store): the driver
//! runs session steps on a blocking pool, never on an async worker.

pub mod auth;
pub mod imap;
pub mod pop3;
pub mod sasl;
pub mod session;
pub mod smtp;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

pub use auth::{AccessLevel, Account, AuthBackend, AuthError, Credentials, Secret};
pub use session::{Action, ConnectionInfo, Goodbye, Output, Session};
