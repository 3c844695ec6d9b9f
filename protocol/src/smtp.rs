//! smtp session state machine (placeholder until its issue lands).
