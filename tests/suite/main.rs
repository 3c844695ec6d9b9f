//! Black-box tests: the real `understudy` binary on port 0, driven by real clients. One
//! test binary (`cargo test --test suite`), a module per area.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// `TestServer`: the real server with its own data directory, port 0, stopped on drop.
mod harness;
/// Stand-in primary / remote MX: Postfix's `smtp-sink` dumping each message to a file.
mod sink;

/// Admin commands through the admin socket while the server runs, taking effect at once.
mod admin;
/// Admin commands that say what happened: queue states, listings, formats, policies.
mod admin_reports;
/// The console's JSON API: scoped tokens, and schemathesis against its OpenAPI document.
mod api;
/// Backups that are private and hold the DKIM keys; restore refusing a running server.
mod backup;
/// The console in headless Chromium (playwright-core): the issue 16 scenario.
mod browser;
/// check-config: every problem at once, what serve would die of, warnings; clear errors.
mod check_config;
/// IMAP through third-party clients: curl, mbsync and imapclient over TLS.
mod clients;
/// Twenty IMAP sessions on one mailbox: every view true, every body there.
mod concurrency;
/// The web console over HTTPS: logins, CSRF, session fixation, roles, self-service.
mod console;
/// The queue runner against `smtp-sink`: redelivery, outbound with DKIM, 4xx and 5xx.
mod delivery;
/// A full disk: SMTP 452, IMAP NO, nothing damaged, recovery once space is back.
mod diskfull;
/// docs/operations.md and the README walked command by command on a throwaway install.
mod docs_walk;
/// The outage drill as an admin runs it, end to end, with its notices and a recovery.
mod drill;
/// The outage engine end to end: a thousand spooled messages, kills, exactly once.
mod e2e;
/// IMAP extensions through real clients: SORT, THREAD and QUOTA with imapclient,
/// COMPRESS=DEFLATE with Python's zlib on a raw TLS socket.
mod extensions;
/// Listeners on port 0, TLS, the admin CLI, config validation, restarts, SIGTERM.
mod foundation;
/// Hostile input over raw sockets: oversized lines and literals, deep MIME, floods.
mod hostile;
/// IMAP with Python's imaplib: logins, folders, FETCH, STORE/SEARCH/COPY/MOVE, IDLE.
mod imap;
/// SPF/DKIM/DMARC on the MX (configuration C): headers and `p=reject` enforcement.
mod inbound_auth;
/// LDAP sync and directory-down logins against a real `slapd`.
mod ldap;
/// Logs that answer "why", and one id per message that `track` finds.
mod logs;
/// Prometheus metrics and the health endpoint.
mod ops;
/// Outage detection against `smtp-sink` as the primary: engage, recover, notices.
mod outage;
/// Two nodes on one PostgreSQL through failures: leader kills during an outage, a
/// PostgreSQL restart under SMTP load.
mod pg_cluster;
/// POP3 with Python's poplib: logins, sizes, deletions at QUIT, stable UIDLs.
mod pop3;
/// The server on the PostgreSQL store.
mod postgres;
/// SIGHUP: routes and inbound checks reloaded, restart-only sections named.
mod reload;
/// Bodies in an S3 bucket (moto as the stand-in) under a PostgreSQL store.
mod s3;
/// Security defaults: no password before TLS, TLS 1.2+ only, lockouts, modes, logs.
mod security;
/// SIGTERM mid-session: each protocol's goodbye, SMTP DATA in flight finishes.
mod shutdown;
/// A smarthost that wants a login: AUTH over TLS only.
mod smarthost;
/// SMTP with Python's smtplib: MX recipient checks, delivery, submission rules.
mod smtp;
/// `understudy store copy` SIGKILLed mid-way and resumed, RocksDB to PostgreSQL and back.
mod store_copy;
/// SMTP with `swaks`: the MX receiver and submission as a second real client.
mod swaks;
/// Roundcube under `php -S` on a real server, in headless Chromium, during an outage.
mod webmail;
