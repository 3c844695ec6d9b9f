//! Black-box tests: the real `understudy` binary on port 0, driven by real clients.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "suite/harness.rs"]
mod harness;

#[path = "suite/admin.rs"]
mod admin;

#[path = "suite/foundation.rs"]
mod foundation;

#[path = "suite/pop3.rs"]
mod pop3;

#[path = "suite/smtp.rs"]
mod smtp;

#[path = "suite/imap.rs"]
mod imap;

#[path = "suite/concurrency.rs"]
mod concurrency;

#[path = "suite/shutdown.rs"]
mod shutdown;

#[path = "suite/ops.rs"]
mod ops;

#[path = "suite/outage.rs"]
mod outage;

#[path = "suite/delivery.rs"]
mod delivery;

#[path = "suite/clients.rs"]
mod clients;

#[path = "suite/sink.rs"]
mod sink;

#[path = "suite/e2e.rs"]
mod e2e;

#[path = "suite/hostile.rs"]
mod hostile;

#[path = "suite/security.rs"]
mod security;

#[path = "suite/diskfull.rs"]
mod diskfull;
#[path = "suite/inbound_auth.rs"]
mod inbound_auth;
#[path = "suite/ldap.rs"]
mod ldap;

#[path = "suite/swaks.rs"]
mod swaks;
