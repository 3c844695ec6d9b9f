//! Black-box tests: the real `understudy` binary on port 0, driven by real clients.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "suite/harness.rs"]
mod harness;

#[path = "suite/foundation.rs"]
mod foundation;

#[path = "suite/pop3.rs"]
mod pop3;

#[path = "suite/smtp.rs"]
mod smtp;

#[path = "suite/imap.rs"]
mod imap;

#[path = "suite/clients.rs"]
mod clients;
