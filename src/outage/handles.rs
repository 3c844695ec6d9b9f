//! Handles on the outage monitor that other parts of the server hold: [`MonitorWake`]
//! (an admin command changed a domain's outage state: adopt it now) and
//! [`DeliveryObservations`] (what the queue runner saw of each primary). `server::run`
//! creates one of each and passes clones to the monitor and to the tasks that feed it, so
//! nothing is shared through process globals and each test gets its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Wakes the monitor before its next tick. The command that calls [`MonitorWake::wake`]
/// has already persisted the change and queued its notice, so this only makes the
/// monitor adopt it (and act on the queue) without waiting for the tick.
#[derive(Debug, Clone, Default)]
pub struct MonitorWake(Arc<Notify>);

impl MonitorWake {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next [`MonitorWake::wake`] (or at once if one came since the
    /// last call).
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

/// What the redeliverer saw of each domain's primary since the monitor last looked
/// (SPEC: in pass-through the outage is also detected from the primary's own 4xx replies
/// and time-outs). Only the streak at the end matters to the machine, so a drain's
/// thousands of results per second fold into a few counters instead of a channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Some result of the other kind came before the current streak.
    pub broken: bool,
    /// The current streak: successes (true) or failures (false), and its length.
    pub ok: bool,
    pub run: u32,
    pub last_error: String,
}

/// The queue runner's results per domain, folded into streaks until the monitor takes
/// them (see [`Observed`]).
#[derive(Debug, Clone, Default)]
pub struct DeliveryObservations(Arc<Mutex<BTreeMap<String, Observed>>>);

impl DeliveryObservations {
    /// Records what a delivery attempt to `domain`'s relay host showed: `Ok` for a
    /// message the primary accepted, `Err` for a refused or timed-out connection or a 4xx
    /// that refused the whole transaction. The monitor counts these like its probes for
    /// domains with automatic engagement and monitoring on.
    pub fn record(&self, domain: &str, result: Result<(), String>) {
        let mut all = self.0.lock();
        let seen = all.entry(domain.to_ascii_lowercase()).or_default();
        let ok = result.is_ok();
        if seen.run > 0 && seen.ok != ok {
            seen.broken = true;
            seen.run = 0;
        }
        seen.ok = ok;
        seen.run = seen.run.saturating_add(1);
        if let Err(why) = result {
            seen.last_error = why;
        }
    }

    /// Everything observed since the last call, per (lower-cased) domain.
    pub fn take(&self) -> BTreeMap<String, Observed> {
        std::mem::take(&mut *self.0.lock())
    }

    /// The streak observed for a domain and not yet taken: (accepted?, length).
    #[cfg(test)]
    pub(crate) fn streak(&self, domain: &str) -> Option<(bool, u32)> {
        self.0
            .lock()
            .get(&domain.to_ascii_lowercase())
            .map(|o| (o.ok, o.run))
    }
}
