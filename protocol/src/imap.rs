//! imap session state machine (placeholder until its issue lands).
