//! The outage engine's detection side: the per-domain state machine, the probe toward
//! the primary, the monitor task and its handles, the notifications, and the recording
//! of the machine's effects (shared with the admin's `outage start|stop`, in
//! `crate::admin::outage`). Redelivery (the queue runner) lives elsewhere and reads the
//! phase from the store.

pub mod effects;
pub mod handles;
pub mod machine;
pub mod monitor;
pub mod notify;
pub mod probe;
