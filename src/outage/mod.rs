//! The outage engine's detection side: the per-domain state machine, the probe toward
//! the primary, the monitor task, the notifications, and the outage/queue/track admin
//! commands. Redelivery (the queue runner) lives elsewhere and reads the phase from the
//! store.

pub mod cli;
pub mod handles;
pub mod machine;
pub mod monitor;
pub mod notify;
pub mod probe;
