//! The per-domain outage state machine (SPEC "Outage state machine"), pure: it is driven
//! by events and a clock reading and returns what to persist and what to announce.
//!
//! ```text
//!            N failed probes / manual start
//!   normal ─────────────────────────────────▶ outage ──┐ first relay message queued:
//!     ▲                                        │  ▲    │ "spooling began"
//!     │ relay queue empty:                     │  │    ◀┘
//!     │ "all spooled mail released"            │  │ N failed probes / manual start
//!     │      M successful probes (automatic) / │  │
//!     │      manual stop: "connectivity        ▼  │
//!     └──────────────────────────────────── draining ── every 4 h: reminder
//! ```
//!
//! A manual outage ignores probes: only `outage stop` ends it. The store holds the state
//! (`OutageState`) and a memo of what was announced, so a restart resumes where it was.

use understudy_storage::outage::{OutagePhase, OutageState};
use understudy_storage::outage_ops::OutageMemo;
use understudy_storage::Domain;

/// While draining, a reminder goes out this often until the relay queue is empty.
pub const REMINDER_INTERVAL_SECS: i64 = 4 * 60 * 60;

/// Something that happened to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ProbeSucceeded,
    ProbeFailed(String),
    ManualStart(String),
    ManualStop(String),
    /// The domain's relay queue: pending entries and the newest entry's arrival time.
    Queue {
        relay_depth: usize,
        newest_relay: Option<i64>,
    },
}

/// The alerts of SPEC "Outage state machine".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    ConnectivityLost,
    SpoolingBegan,
    ConnectivityRestored,
    AllReleased,
    DrainingReminder,
}

/// What the caller must do after an event, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Persist this state (with its reason) as a transition.
    Transition { from: OutagePhase, to: OutageState },
    /// Send this notice to the alert recipients.
    Notify(NoticeKind),
}

/// Thresholds from the domain settings (at least 1 each, whatever was configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub failures: u32,
    pub successes: u32,
}

impl Thresholds {
    pub fn of(domain: &Domain) -> Thresholds {
        Thresholds {
            failures: domain.failures_before_engage.max(1),
            successes: domain.successes_before_recover.max(1),
        }
    }
}

/// One domain's machine: the persisted state and memo plus the probe streaks, which
/// are not persisted (after a restart the streak starts again, which only delays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutageMachine {
    state: OutageState,
    memo: OutageMemo,
    failures: u32,
    successes: u32,
}

impl OutageMachine {
    /// Resumes from what the store holds.
    pub fn resume(state: OutageState, memo: OutageMemo) -> OutageMachine {
        OutageMachine {
            state,
            memo,
            failures: 0,
            successes: 0,
        }
    }

    pub fn state(&self) -> &OutageState {
        &self.state
    }

    pub fn memo(&self) -> &OutageMemo {
        &self.memo
    }

    /// Adopts a state someone else wrote (an admin command), dropping the streaks.
    pub fn adopt(&mut self, state: OutageState, memo: OutageMemo) {
        *self = OutageMachine::resume(state, memo);
    }

    /// Takes the stored state and memo but keeps the streaks: after a write that lost
    /// to another node's (the store changed under this machine), so it decides again
    /// from what the store holds without forgetting the probes it saw.
    pub fn rebase(&mut self, state: OutageState, memo: OutageMemo) {
        self.state = state;
        self.memo = memo;
    }

    pub fn handle(&mut self, event: Event, now: i64, thresholds: Thresholds) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::ProbeSucceeded => {
                self.memo.last_probe_at = Some(now);
                self.memo.last_probe_error = None;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.state.phase == OutagePhase::Outage
                    && !self.state.manual
                    && self.successes >= thresholds.successes
                {
                    let reason = format!(
                        "primary reachable again: {} successful probe(s) in a row",
                        self.successes
                    );
                    self.enter(OutagePhase::Draining, false, reason, now, &mut effects);
                    effects.push(Effect::Notify(NoticeKind::ConnectivityRestored));
                }
            }
            Event::ProbeFailed(why) => {
                self.memo.last_probe_at = Some(now);
                self.memo.last_probe_error = Some(why.clone());
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.state.phase != OutagePhase::Outage && self.failures >= thresholds.failures {
                    let reason = format!("{} failed probe(s) in a row; last: {why}", self.failures);
                    self.enter(OutagePhase::Outage, false, reason, now, &mut effects);
                    effects.push(Effect::Notify(NoticeKind::ConnectivityLost));
                }
            }
            Event::ManualStart(reason) => {
                self.failures = 0;
                self.successes = 0;
                if self.state.phase == OutagePhase::Outage {
                    if !self.state.manual {
                        // Already in an automatic outage: the admin takes it over, so it
                        // no longer ends by itself; nothing new to announce.
                        self.state.manual = true;
                        self.state.reason = format!("taken over by an admin: {reason}");
                        effects.push(Effect::Transition {
                            from: OutagePhase::Outage,
                            to: self.state.clone(),
                        });
                    }
                } else {
                    self.enter(OutagePhase::Outage, true, reason, now, &mut effects);
                    effects.push(Effect::Notify(NoticeKind::ConnectivityLost));
                }
            }
            Event::ManualStop(reason) => {
                self.failures = 0;
                self.successes = 0;
                if self.state.phase == OutagePhase::Outage {
                    // Marked manual: the notice must not claim the primary was seen back.
                    self.enter(OutagePhase::Draining, true, reason, now, &mut effects);
                    effects.push(Effect::Notify(NoticeKind::ConnectivityRestored));
                }
            }
            Event::Queue {
                relay_depth,
                newest_relay,
            } => match self.state.phase {
                OutagePhase::Normal => {}
                OutagePhase::Outage => {
                    let since = self.state.since;
                    if newest_relay.is_some_and(|t| t >= since)
                        && self.memo.spooling_notified_since != Some(since)
                    {
                        self.memo.spooling_notified_since = Some(since);
                        effects.push(Effect::Notify(NoticeKind::SpoolingBegan));
                    }
                }
                OutagePhase::Draining => {
                    if relay_depth == 0 {
                        let reason = "all spooled mail released to the primary".to_string();
                        self.enter(OutagePhase::Normal, false, reason, now, &mut effects);
                        effects.push(Effect::Notify(NoticeKind::AllReleased));
                    } else {
                        let last = self.memo.last_reminder_at.unwrap_or(self.state.since);
                        if now - last.max(self.state.since) >= REMINDER_INTERVAL_SECS {
                            self.memo.last_reminder_at = Some(now);
                            effects.push(Effect::Notify(NoticeKind::DrainingReminder));
                        }
                    }
                }
            },
        }
        effects
    }

    fn enter(
        &mut self,
        phase: OutagePhase,
        manual: bool,
        reason: String,
        now: i64,
        effects: &mut Vec<Effect>,
    ) {
        let from = self.state.phase;
        if phase == OutagePhase::Outage && from == OutagePhase::Normal {
            // A new episode: the last notice's summary counts from here. Draining back
            // into an outage continues the same one.
            self.memo.outage_started_at = Some(now);
        }
        self.state = OutageState {
            phase,
            since: now,
            reason,
            manual,
        };
        self.failures = 0;
        self.successes = 0;
        effects.push(Effect::Transition {
            from,
            to: self.state.clone(),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use understudy_storage::{Clock, ManualClock};

    const T: Thresholds = Thresholds {
        failures: 3,
        successes: 2,
    };

    fn phase_changes(effects: &[Effect]) -> Vec<OutagePhase> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Transition { to, .. } => Some(to.phase),
                _ => None,
            })
            .collect()
    }

    fn notices(effects: &[Effect]) -> Vec<NoticeKind> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(k) => Some(*k),
                _ => None,
            })
            .collect()
    }

    fn fresh() -> OutageMachine {
        OutageMachine::resume(OutageState::default(), OutageMemo::default())
    }

    #[test]
    fn failures_engage_only_at_the_threshold_and_in_a_row() {
        let clock = ManualClock::new(1_000);
        let mut m = fresh();
        assert!(m
            .handle(Event::ProbeFailed("refused".into()), clock.now(), T)
            .is_empty());
        assert!(m
            .handle(Event::ProbeFailed("refused".into()), clock.now(), T)
            .is_empty());
        // A success in between restarts the count.
        assert!(m.handle(Event::ProbeSucceeded, clock.now(), T).is_empty());
        assert!(m
            .handle(Event::ProbeFailed("refused".into()), clock.now(), T)
            .is_empty());
        assert!(m
            .handle(Event::ProbeFailed("refused".into()), clock.now(), T)
            .is_empty());
        clock.advance(60);
        let effects = m.handle(Event::ProbeFailed("421 busy".into()), clock.now(), T);
        assert_eq!(phase_changes(&effects), [OutagePhase::Outage]);
        assert_eq!(notices(&effects), [NoticeKind::ConnectivityLost]);
        assert_eq!(m.state().since, 1_060);
        assert!(!m.state().manual);
        assert!(
            m.state().reason.contains("3 failed probe(s)"),
            "{}",
            m.state().reason
        );
        assert!(m.state().reason.contains("421 busy"));
        // Further failures change nothing.
        assert!(m
            .handle(Event::ProbeFailed("x".into()), clock.now(), T)
            .is_empty());
    }

    #[test]
    fn successes_recover_at_the_threshold_then_empty_queue_ends_draining() {
        let clock = ManualClock::new(0);
        let mut m = fresh();
        for _ in 0..3 {
            m.handle(Event::ProbeFailed("timed out".into()), clock.now(), T);
        }
        assert_eq!(m.state().phase, OutagePhase::Outage);
        clock.advance(100);
        assert!(m.handle(Event::ProbeSucceeded, clock.now(), T).is_empty());
        let effects = m.handle(Event::ProbeSucceeded, clock.now(), T);
        assert_eq!(phase_changes(&effects), [OutagePhase::Draining]);
        assert_eq!(notices(&effects), [NoticeKind::ConnectivityRestored]);
        // Queue not empty yet: stays draining.
        let q = |depth| Event::Queue {
            relay_depth: depth,
            newest_relay: Some(50),
        };
        assert!(m.handle(q(3), clock.now(), T).is_empty());
        let effects = m.handle(q(0), clock.now(), T);
        assert_eq!(phase_changes(&effects), [OutagePhase::Normal]);
        assert_eq!(notices(&effects), [NoticeKind::AllReleased]);
    }

    #[test]
    fn manual_outage_never_ends_by_itself() {
        let clock = ManualClock::new(0);
        let mut m = fresh();
        let effects = m.handle(Event::ManualStart("maintenance".into()), clock.now(), T);
        assert_eq!(phase_changes(&effects), [OutagePhase::Outage]);
        assert_eq!(notices(&effects), [NoticeKind::ConnectivityLost]);
        assert!(m.state().manual);
        assert_eq!(m.state().reason, "maintenance");
        for _ in 0..100 {
            clock.advance(REMINDER_INTERVAL_SECS);
            assert!(m.handle(Event::ProbeSucceeded, clock.now(), T).is_empty());
            m.handle(
                Event::Queue {
                    relay_depth: 0,
                    newest_relay: None,
                },
                clock.now(),
                T,
            );
        }
        assert_eq!(m.state().phase, OutagePhase::Outage);
        let effects = m.handle(Event::ManualStop("done".into()), clock.now(), T);
        assert_eq!(phase_changes(&effects), [OutagePhase::Draining]);
        assert_eq!(notices(&effects), [NoticeKind::ConnectivityRestored]);
        assert!(m.state().manual, "ended by an admin, not by probes");
        assert_eq!(m.memo().outage_started_at, Some(0), "the episode's start");
    }

    #[test]
    fn manual_start_takes_over_an_automatic_outage() {
        let mut m = fresh();
        for _ in 0..3 {
            m.handle(Event::ProbeFailed("refused".into()), 10, T);
        }
        let effects = m.handle(Event::ManualStart("keep it down".into()), 20, T);
        assert!(notices(&effects).is_empty());
        assert!(m.state().manual);
        assert_eq!(m.state().since, 10);
        m.handle(Event::ProbeSucceeded, 30, T);
        m.handle(Event::ProbeSucceeded, 31, T);
        assert_eq!(m.state().phase, OutagePhase::Outage);
    }

    #[test]
    fn stop_outside_an_outage_does_nothing() {
        let mut m = fresh();
        assert!(m.handle(Event::ManualStop("x".into()), 5, T).is_empty());
        assert_eq!(m.state().phase, OutagePhase::Normal);
    }

    #[test]
    fn spooling_is_announced_once_per_outage_for_mail_queued_during_it() {
        let mut m = fresh();
        m.handle(Event::ManualStart("m".into()), 100, T);
        // Mail queued before the outage began does not count.
        let old = Event::Queue {
            relay_depth: 1,
            newest_relay: Some(99),
        };
        assert!(m.handle(old, 101, T).is_empty());
        let new = Event::Queue {
            relay_depth: 2,
            newest_relay: Some(102),
        };
        assert_eq!(
            notices(&m.handle(new.clone(), 103, T)),
            [NoticeKind::SpoolingBegan]
        );
        assert!(m.handle(new.clone(), 104, T).is_empty());
        // The memo survives a restart.
        let mut resumed = OutageMachine::resume(m.state().clone(), m.memo().clone());
        assert!(resumed.handle(new, 105, T).is_empty());
    }

    #[test]
    fn reminder_every_four_hours_while_draining() {
        let clock = ManualClock::new(0);
        let mut m = fresh();
        m.handle(Event::ManualStart("m".into()), clock.now(), T);
        clock.advance(600);
        m.handle(Event::ManualStop("back".into()), clock.now(), T);
        let busy = Event::Queue {
            relay_depth: 10,
            newest_relay: Some(5),
        };
        let mut reminders = Vec::new();
        // Tick every minute for 13 hours.
        for _ in 0..(13 * 60) {
            clock.advance(60);
            if notices(&m.handle(busy.clone(), clock.now(), T)) == [NoticeKind::DrainingReminder] {
                reminders.push(clock.now() - 600);
            }
        }
        assert_eq!(
            reminders,
            [
                REMINDER_INTERVAL_SECS,
                2 * REMINDER_INTERVAL_SECS,
                3 * REMINDER_INTERVAL_SECS
            ]
        );
        assert_eq!(m.state().phase, OutagePhase::Draining);
    }

    #[test]
    fn primary_lost_again_while_draining_goes_back_to_outage() {
        let mut m = fresh();
        m.handle(Event::ManualStart("m".into()), 0, T);
        m.handle(Event::ManualStop("m".into()), 10, T);
        for i in 0..2 {
            assert!(m
                .handle(Event::ProbeFailed("refused".into()), 20 + i, T)
                .is_empty());
        }
        let effects = m.handle(Event::ProbeFailed("refused".into()), 30, T);
        assert_eq!(phase_changes(&effects), [OutagePhase::Outage]);
        assert_eq!(notices(&effects), [NoticeKind::ConnectivityLost]);
    }
}
