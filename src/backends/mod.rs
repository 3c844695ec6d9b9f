//! The protocol sessions' backends on the store: each implements the backend trait its
//! protocol crate module defines (`ImapBackend`, `Pop3Backend`, `SmtpBackend`) on top of
//! `understudy-storage`, so the sessions never name the store.

pub mod imap;
pub mod pop3;
pub mod smtp;
mod summaries;
