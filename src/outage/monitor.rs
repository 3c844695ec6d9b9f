//! `OutageMonitor`: the server task that probes every automatically engaged domain's
//! primary at its probe interval, drives each domain's [`OutageMachine`], persists every
//! transition with its reason and queues the notifications.
//!
//! The store is the source of truth: each tick (one second) re-reads every domain's
//! state, so a change made by an admin command — with the server stopped, or through the
//! admin socket while it runs — is adopted at once, and a restart resumes where the last
//! run stopped. Probes run as their own tasks so a 10 s time-out toward one primary
//! never delays another domain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use understudy_storage::outage::OutagePhase;
use understudy_storage::{Clock, Domain, Engagement, Store, StoreError, StoreResult};

use super::effects::apply_effects;
use super::handles::{DeliveryObservations, MonitorWake, Observed};
use super::machine::{Effect, Event, OutageMachine, Thresholds};
use super::probe;

/// How often the monitor re-reads the store and looks for due probes.
const TICK: Duration = Duration::from_secs(1);

/// Decisions on one event when each write loses to another node's: then the event is
/// dropped (logged), as a probe that failed to record would be.
const MAX_DECISIONS: u32 = 4;

/// What one look at a domain's observations feeds the machine: one event for the
/// streak at the end, after one of the other kind if the streak was broken (which resets
/// the machine's count). One event per look (per second), not one per message: a burst
/// of messages refused in the same second is one failure, like one failed probe, so an
/// outage engages only when deliveries keep failing for as many looks in a row as the
/// domain's threshold, and a momentary blip does not page anyone.
fn observed_events(seen: &Observed) -> Vec<Event> {
    let one = |ok: bool| {
        if ok {
            Event::ProbeSucceeded
        } else {
            Event::ProbeFailed(format!("delivery to the primary: {}", seen.last_error))
        }
    };
    let mut events = Vec::new();
    if seen.broken {
        events.push(one(!seen.ok));
    }
    if seen.run > 0 {
        events.push(one(seen.ok));
    }
    events
}

/// The handles the monitor listens to and the queue runner it wakes, all created by
/// `server::run` and shared with the tasks on the other end.
#[derive(Clone, Default)]
pub struct MonitorHandles {
    /// Admin commands run in this process wake the monitor.
    pub wake: MonitorWake,
    /// The queue runner reports what it saw of each primary.
    pub observations: DeliveryObservations,
    /// The queue runner's wakeup (`delivery::QueueWakeup`), woken when a notice was
    /// queued, so that alerts go out at once (and in the order they were raised) rather
    /// than at the runner's next poll. Named by its type, not the runner's alias, so the
    /// outage engine does not import the runner that imports its handles.
    pub queue_wakeup: Option<Arc<Notify>>,
}

/// The monitor's loop; it ends when `stop` turns true (spawn it into the server's tasks).
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    hostname: String,
    handles: MonitorHandles,
    stop: watch::Receiver<bool>,
) {
    OutageMonitor::new(store, clock, hostname, handles)
        .run(stop)
        .await
}

struct Tracked {
    machine: OutageMachine,
    next_probe: i64,
    probing: bool,
}

/// The monitor's state; all its store work runs on the blocking pool under this lock
/// (only the monitor's own loop takes it, so it is never contended).
pub struct OutageMonitor {
    store: Store,
    clock: Arc<dyn Clock>,
    hostname: String,
    domains: HashMap<String, Tracked>,
    handles: MonitorHandles,
}

fn wake_for_notices(wakeup: &Option<Arc<Notify>>, effects: &[Effect]) {
    if let Some(wakeup) = wakeup {
        if effects.iter().any(|e| matches!(e, Effect::Notify(_))) {
            wakeup.notify_one();
        }
    }
}

type ProbeResult = (String, Result<(), String>);

impl OutageMonitor {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        hostname: String,
        handles: MonitorHandles,
    ) -> OutageMonitor {
        OutageMonitor {
            store,
            clock,
            hostname,
            domains: HashMap::new(),
            handles,
        }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let helo = self.hostname.clone();
        let wake = self.handles.wake.clone();
        let leader = self.store.clone();
        let mut was_leading = false;
        let core = Arc::new(Mutex::new(self));
        // Probes in flight; aborted at shutdown (a probe changes nothing by itself).
        let mut probes = tokio::task::JoinSet::new();
        let (tx, mut rx) = mpsc::channel::<ProbeResult>(64);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!("outage monitor started");
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                _ = tick.tick() => {
                    // One monitor per store: with several nodes on PostgreSQL, the
                    // leading node's (probes, transitions and alerts are not doubled).
                    if !leader.leads() {
                        if std::mem::take(&mut was_leading) {
                            tracing::info!("outage monitor: no longer leading; probing stops here");
                        }
                        continue;
                    }
                    if !std::mem::replace(&mut was_leading, true) {
                        tracing::info!("outage monitor: this node leads; every domain resumes from the store");
                        // What was seen while another node led (or before this one lost
                        // the lead) is stale: it must not count toward a decision now.
                        core.lock().start_leading();
                    }
                    let c = core.clone();
                    let due = match tokio::task::spawn_blocking(move || c.lock().tick()).await {
                        Ok(due) => due,
                        Err(e) => {
                            tracing::error!(error = %e, "outage monitor tick failed");
                            Vec::new()
                        }
                    };
                    for (domain, relay_host) in due {
                        let tx = tx.clone();
                        let helo = helo.clone();
                        probes.spawn(async move {
                            let result = probe::probe(&relay_host, &helo).await;
                            let _ = tx.send((domain, result)).await;
                        });
                    }
                }
                Some(_) = probes.join_next(), if !probes.is_empty() => {}
                _ = wake.woken() => {
                    // Tick at once: the interval fires immediately after a reset.
                    tick.reset_immediately();
                }
                Some((domain, result)) = rx.recv() => {
                    let c = core.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || c.lock().probe_done(&domain, result)).await {
                        tracing::error!(error = %e, "outage monitor probe handling failed");
                    }
                }
            }
        }
        probes.shutdown().await;
        tracing::info!("outage monitor stopped");
    }

    /// On gaining the lead: forgets the probe streaks and the delivery results this node
    /// saw while another one led (its queue runner delivers as a follower too), so every
    /// domain resumes from the store with fresh streaks, as after a restart: a failure
    /// seen minutes ago must not count toward an outage engaged now, nor a success
    /// toward ending one.
    fn start_leading(&mut self) {
        self.domains.clear();
        self.handles.observations.take();
    }

    /// Re-reads the store, feeds queue snapshots to domains not in `normal`, and returns
    /// the probes that are due as `(domain, relay host)`.
    fn tick(&mut self) -> Vec<(String, String)> {
        match self.try_tick() {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "outage monitor cannot read the store");
                Vec::new()
            }
        }
    }

    fn try_tick(&mut self) -> StoreResult<Vec<(String, String)>> {
        let now = self.clock.now();
        let domains = self.store.domains()?;
        self.domains
            .retain(|name, _| domains.iter().any(|d| &d.name == name));
        for d in &domains {
            self.sync_from_store(&d.name, now)?;
        }
        let busy = self
            .domains
            .values()
            .any(|t| t.machine.state().phase != OutagePhase::Normal);
        if busy {
            let summaries = self.store.queue_summaries()?;
            for d in &domains {
                let Some(tracked) = self.domains.get(&d.name) else {
                    continue;
                };
                if tracked.machine.state().phase == OutagePhase::Normal {
                    continue;
                }
                let summary = summaries.get(&d.name).copied().unwrap_or_default();
                let event = Event::Queue {
                    relay_depth: summary.relay_depth,
                    newest_relay: summary.newest_relay,
                };
                if let Err(e) = self.feed(d, event, now) {
                    tracing::error!(domain = %d.name, error = %e, "cannot record outage change");
                }
            }
        }
        let observed = self.handles.observations.take();
        for (name, seen) in observed {
            let Some(d) = domains.iter().find(|d| d.name.eq_ignore_ascii_case(&name)) else {
                continue;
            };
            if d.engagement != Engagement::Automatic || !d.monitoring {
                continue;
            }
            for event in observed_events(&seen) {
                self.feed(d, event, now)?;
            }
        }
        let mut due = Vec::new();
        for d in &domains {
            let Some(tracked) = self.domains.get_mut(&d.name) else {
                continue;
            };
            let probed = d.engagement == Engagement::Automatic && d.monitoring;
            let Some(relay_host) = d.relay_host.as_ref().filter(|_| probed) else {
                continue;
            };
            if !tracked.probing && now >= tracked.next_probe {
                tracked.probing = true;
                tracked.next_probe = now + i64::from(d.probe_interval_secs.max(1));
                due.push((d.name.clone(), relay_host.clone()));
            }
        }
        Ok(due)
    }

    /// Makes the in-memory machine agree with the store (first sight, or an admin's
    /// change since the last tick).
    fn sync_from_store(&mut self, domain: &str, now: i64) -> StoreResult<()> {
        let stored = self.store.outage_state(domain)?;
        match self.domains.get_mut(domain) {
            Some(tracked) if tracked.machine.state() == &stored => {}
            Some(tracked) => {
                tracing::info!(domain, phase = ?stored.phase, reason = %stored.reason, "outage state changed by an admin");
                tracked.machine.adopt(stored, self.store.outage_memo(domain)?);
            }
            None => {
                if stored.phase != OutagePhase::Normal {
                    tracing::info!(domain, phase = ?stored.phase, reason = %stored.reason, "resuming outage state");
                }
                let machine = OutageMachine::resume(stored, self.store.outage_memo(domain)?);
                self.domains.insert(
                    domain.to_string(),
                    Tracked {
                        machine,
                        next_probe: now,
                        probing: false,
                    },
                );
            }
        }
        Ok(())
    }

    fn probe_done(&mut self, domain: &str, result: Result<(), String>) {
        if let Err(e) = self.try_probe_done(domain, result) {
            tracing::error!(domain, error = %e, "cannot record probe result");
        }
    }

    fn try_probe_done(&mut self, domain: &str, result: Result<(), String>) -> StoreResult<()> {
        let now = self.clock.now();
        if let Some(t) = self.domains.get_mut(domain) {
            t.probing = false;
        }
        // A probe that ends after this node stopped leading is the new leader's to
        // make: recording it here would count one probe twice.
        if !self.store.leads() {
            tracing::debug!(domain, "probe result dropped: this node no longer leads");
            return Ok(());
        }
        let Some(settings) = self.store.domain(domain)? else {
            return Ok(());
        };
        self.sync_from_store(domain, now)?;
        if !self.domains.contains_key(domain) {
            return Ok(());
        }
        let event = match result {
            Ok(()) => {
                tracing::debug!(domain, "probe succeeded");
                Event::ProbeSucceeded
            }
            Err(why) => {
                tracing::info!(domain, %why, "probe failed");
                Event::ProbeFailed(why)
            }
        };
        self.feed(&settings, event, now)
    }

    /// One event (a probe result, delivery results, a queue snapshot) for a domain
    /// already synced from the store: the machine handles it, its effects are recorded
    /// in one compare-and-set write and, if a notice was queued, the queue runner is
    /// woken. When the write loses (another node, or an admin, changed the domain since
    /// the machine last read it), the machine takes the stored state and decides again;
    /// when it fails, the machine goes back to what it was (the next tick re-reads).
    fn feed(&mut self, settings: &Domain, event: Event, now: i64) -> StoreResult<()> {
        let Some(tracked) = self.domains.get_mut(&settings.name) else {
            return Ok(());
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = tracked.machine.clone();
            let effects = tracked
                .machine
                .handle(event.clone(), now, Thresholds::of(settings));
            match apply_effects(
                &self.store,
                &self.hostname,
                settings,
                &before,
                &tracked.machine,
                &effects,
                now,
            ) {
                Ok(()) => {
                    wake_for_notices(&self.handles.queue_wakeup, &effects);
                    return Ok(());
                }
                Err(StoreError::Conflict(why)) if attempt < MAX_DECISIONS => {
                    tracing::info!(domain = %settings.name, %why, "outage state changed elsewhere; deciding again from the store");
                    let (state, memo) = self.store.outage_record(&settings.name)?;
                    tracked.machine = before;
                    tracked.machine.rebase(state, memo);
                }
                Err(e) => {
                    tracked.machine = before;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use understudy_storage::mailbox::DeliveryRequest;
    use understudy_storage::outage::OutageState;
    use understudy_storage::{ManualClock, NewQueueEntry, QueueKind, StoreOptions};

    use crate::outage::machine::REMINDER_INTERVAL_SECS;

    fn notices(store: &Store) -> Vec<String> {
        store
            .queue_entries(None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == QueueKind::Notification)
            .map(|e| e.message_id.unwrap())
            .collect()
    }

    fn relay_message(store: &Store, now: i64) -> u64 {
        store
            .deliver(&DeliveryRequest {
                body: b"Subject: x\r\n\r\nx\r\n",
                users: vec![],
                queue: vec![NewQueueEntry {
                    kind: QueueKind::Relay,
                    domain: "example.com".into(),
                    mail_from: "bob@example.net".into(),
                    recipients: vec![("anna@example.com".into(), None)],
                    next_attempt: now,
                    sent_copy: false,
                }],
                message_id: None,
                summary: "test".into(),
            })
            .unwrap()
            .queue_ids[0]
    }

    /// Pass-through: the redeliverer's own results count like probes, one per look.
    /// Refused transactions in three looks in a row engage the outage (a success in
    /// between resets the count), accepted messages in two looks end it, on the injected
    /// clock and without any probe.
    #[test]
    fn delivery_results_engage_and_end_an_automatic_outage() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
        let name = "passthrough-observed.test";
        let mut domain = Domain::new(name);
        domain.engagement = Engagement::Automatic;
        domain.monitoring = true;
        domain.relay_host = None;
        domain.failures_before_engage = 3;
        domain.successes_before_recover = 2;
        store.add_domain(&domain).unwrap();
        let handles = MonitorHandles::default();
        let observations = handles.observations.clone();
        let observe_delivery = |domain: &str, result| observations.record(domain, result);
        let mut monitor = OutageMonitor::new(store.clone(), clock.clone(), "mx.test".into(), handles);
        assert!(monitor.tick().is_empty(), "no relay host: nothing to probe");

        // Two failures, a success, then a burst of failures in one look: one failure.
        observe_delivery(name, Err("451 4.3.0 try later".into()));
        observe_delivery(name, Err("451 4.3.0 try later".into()));
        monitor.tick();
        observe_delivery(name, Ok(()));
        for _ in 0..50 {
            observe_delivery(name, Err("451 4.3.0 try later".into()));
        }
        monitor.tick();
        clock.advance(1);
        observe_delivery(name, Err("451 4.3.0 try later".into()));
        monitor.tick();
        assert_eq!(store.outage_state(name).unwrap().phase, OutagePhase::Normal);
        monitor.tick();
        assert_eq!(
            store.outage_state(name).unwrap().phase,
            OutagePhase::Normal,
            "no news is not a failure"
        );
        clock.advance(1);
        observe_delivery(name, Err("timed out waiting for the DATA reply".into()));
        monitor.tick();
        let state = store.outage_state(name).unwrap();
        assert_eq!(state.phase, OutagePhase::Outage);
        assert!(!state.manual);
        assert!(
            state.reason.contains("delivery to the primary: timed out"),
            "{state:?}"
        );

        clock.advance(60);
        observe_delivery(name, Ok(()));
        monitor.tick();
        assert_eq!(store.outage_state(name).unwrap().phase, OutagePhase::Outage);
        observe_delivery(name, Ok(()));
        monitor.tick();
        assert_eq!(store.outage_state(name).unwrap().phase, OutagePhase::Draining);

        // A manually engaged domain ignores them.
        let mut manual = Domain::new("manual-observed.test");
        manual.engagement = Engagement::Manual;
        manual.relay_host = None;
        manual.failures_before_engage = 1;
        store.add_domain(&manual).unwrap();
        observe_delivery("manual-observed.test", Err("421 closing".into()));
        monitor.tick();
        assert_eq!(
            store.outage_state("manual-observed.test").unwrap().phase,
            OutagePhase::Normal
        );
    }

    /// A node that gains the lead (again) counts only what it sees from then on: a probe
    /// failure from before it lost the lead, and a delivery failure its queue runner saw
    /// while another node led, do not add up with one fresh failure to engage an outage
    /// (threshold 2) on the injected clock; two fresh failures do.
    #[test]
    fn gaining_the_lead_forgets_streaks_and_results_seen_before() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
        let name = "lead-handover.test";
        let mut domain = Domain::new(name);
        domain.engagement = Engagement::Automatic;
        domain.monitoring = true;
        domain.relay_host = Some("127.0.0.1:9".into());
        domain.failures_before_engage = 2;
        domain.successes_before_recover = 2;
        store.add_domain(&domain).unwrap();
        let handles = MonitorHandles::default();
        let observations = handles.observations.clone();
        let mut monitor = OutageMonitor::new(store.clone(), clock.clone(), "mx.test".into(), handles);
        let failed = || Err::<(), String>("connect: refused".into());

        // Leading: one failed probe (streak 1), then the lead is lost.
        assert_eq!(monitor.tick().len(), 1);
        monitor.probe_done(name, failed());
        // Following: the queue runner sees the primary refuse a delivery.
        clock.advance(120);
        observations.record(name, failed());
        // Leading again: one fresh failure is not two.
        monitor.start_leading();
        monitor.tick();
        monitor.probe_done(name, failed());
        assert_eq!(store.outage_state(name).unwrap().phase, OutagePhase::Normal);
        clock.advance(1);
        monitor.tick();
        monitor.probe_done(name, failed());
        assert_eq!(store.outage_state(name).unwrap().phase, OutagePhase::Outage);
    }

    /// The monitor against a real store with an injected clock: it resumes a stored
    /// outage, announces spooling once, reminds every four hours while draining (also
    /// across a restart), and ends draining when the relay queue is empty.
    #[test]
    fn resumes_from_the_store_and_announces_each_step_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
        let mut domain = Domain::new("example.com");
        domain.engagement = Engagement::Manual;
        domain.alert_recipients = vec!["ops@example.net".into()];
        store.add_domain(&domain).unwrap();
        // An admin started an outage while the server was down.
        let outage = OutageState {
            phase: OutagePhase::Outage,
            since: clock.now(),
            reason: "maintenance".into(),
            manual: true,
        };
        store.set_outage_state("example.com", &outage).unwrap();

        let mut monitor = OutageMonitor::new(
            store.clone(),
            clock.clone(),
            "mx.test".into(),
            MonitorHandles::default(),
        );
        assert!(monitor.tick().is_empty(), "manual engagement: no probes");
        assert!(notices(&store).is_empty());
        clock.advance(10);
        let relay = relay_message(&store, clock.now());
        monitor.tick();
        monitor.tick();
        let sent = notices(&store);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].contains(".spooling@"), "{sent:?}");

        // The admin stops the outage (the store changes under the monitor).
        clock.advance(60);
        let mut machine = OutageMachine::resume(
            store.outage_state("example.com").unwrap(),
            store.outage_memo("example.com").unwrap(),
        );
        let before = machine.clone();
        let effects = machine.handle(
            Event::ManualStop("done".into()),
            clock.now(),
            Thresholds::of(&domain),
        );
        apply_effects(
            &store,
            "mx.test",
            &domain,
            &before,
            &machine,
            &effects,
            clock.now(),
        )
        .unwrap();
        // The monitor decided from the state before the stop: its write loses, and it
        // decides again from the stored one (nothing doubled, nothing lost).
        let stale = before.clone();
        let mut again = before;
        let effects = again.handle(
            Event::ManualStop("done twice".into()),
            clock.now(),
            Thresholds::of(&domain),
        );
        assert!(matches!(
            apply_effects(&store, "mx.test", &domain, &stale, &again, &effects, clock.now()),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(notices(&store).len(), 2);
        monitor.tick();
        assert_eq!(
            store.outage_state("example.com").unwrap().phase,
            OutagePhase::Draining
        );

        clock.advance(REMINDER_INTERVAL_SECS - 1);
        monitor.tick();
        assert_eq!(notices(&store).len(), 2);
        clock.advance(1);
        monitor.tick();
        monitor.tick();
        assert_eq!(notices(&store).len(), 3);
        // A restart does not repeat the reminder.
        let mut monitor = OutageMonitor::new(
            store.clone(),
            clock.clone(),
            "mx.test".into(),
            MonitorHandles::default(),
        );
        monitor.tick();
        assert_eq!(notices(&store).len(), 3);

        // Redelivered (here: purged): draining ends and that is announced.
        store.purge(relay).unwrap();
        monitor.tick();
        let state = store.outage_state("example.com").unwrap();
        assert_eq!(state.phase, OutagePhase::Normal);
        let sent = notices(&store);
        assert_eq!(sent.len(), 4);
        assert!(sent[3].contains(".released@"), "{sent:?}");
        let history: Vec<_> = store
            .outage_history("example.com")
            .unwrap()
            .into_iter()
            .map(|t| (t.from, t.to))
            .collect();
        assert_eq!(
            history,
            [
                (OutagePhase::Normal, OutagePhase::Outage),
                (OutagePhase::Outage, OutagePhase::Draining),
                (OutagePhase::Draining, OutagePhase::Normal)
            ]
        );
    }
}
