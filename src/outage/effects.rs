//! Carrying out what the outage state machine decided: each transition persisted (synced,
//! with history), each notice queued, the memo saved. One function, used by the monitor
//! and by the admin's `outage start|stop`, so both record a change the same way.

use understudy_storage::outage_ops::{OutageMemo, QueueSummary};
use understudy_storage::{Domain, Store, StoreResult};

use super::machine::{Effect, NoticeKind, OutageMachine};
use super::notify::{self, Notice, OutageSummary};

/// Persists transitions (synced, with history), queues the notices and saves the memo
/// if it changed. Shared by the monitor and the `outage start|stop` commands.
pub fn apply_effects(
    store: &Store,
    hostname: &str,
    domain: &Domain,
    machine: &OutageMachine,
    memo_before: &OutageMemo,
    effects: &[Effect],
    now: i64,
) -> StoreResult<()> {
    let mut summary: Option<QueueSummary> = None;
    for effect in effects {
        match effect {
            Effect::Transition { from, to } => {
                store.set_outage_state(&domain.name, to)?;
                tracing::warn!(
                    domain = %domain.name,
                    from = ?from,
                    to = ?to.phase,
                    manual = to.manual,
                    reason = %to.reason,
                    "outage state changed"
                );
            }
            Effect::Notify(kind) => {
                let queue = match summary {
                    Some(s) => s,
                    None => {
                        let s = store
                            .queue_summaries()?
                            .get(&domain.name)
                            .copied()
                            .unwrap_or_default();
                        summary = Some(s);
                        s
                    }
                };
                // The last notice closes the episode: what became of its mail.
                let summary = match (kind, machine.memo().outage_started_at) {
                    (NoticeKind::AllReleased, Some(started_at)) => Some(OutageSummary {
                        started_at,
                        report: store.relay_report_since(&domain.name, started_at)?,
                        held: store.queue_held_count(&domain.name)?,
                    }),
                    _ => None,
                };
                let notice = Notice {
                    kind: *kind,
                    domain: &domain.name,
                    state: machine.state(),
                    queue,
                    now,
                    hostname,
                    summary,
                };
                notify::enqueue(store, &notice, &domain.alert_recipients)?;
            }
        }
    }
    if machine.memo() != memo_before {
        store.set_outage_memo(&domain.name, machine.memo())?;
    }
    Ok(())
}
