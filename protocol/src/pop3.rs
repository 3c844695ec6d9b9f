//! pop3 session state machine (placeholder until its issue lands).
