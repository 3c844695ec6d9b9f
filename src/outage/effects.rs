//! Carrying out what the outage state machine decided: the transitions (with history),
//! the notices and the memo recorded as ONE compare-and-set write, committed only if the
//! store still holds the state the machine decided from. One function, used by the
//! monitor and by the admin's `outage start|stop`, so both record a change the same way
//! and two nodes (or a node and an admin) deciding from the same state cannot both
//! announce it.

use understudy_storage::outage::OutageChange;
use understudy_storage::outage_ops::QueueSummary;
use understudy_storage::{Domain, Store, StoreResult};

use super::machine::{Effect, NoticeKind, OutageMachine};
use super::notify::{self, Notice, OutageSummary};

/// Records `effects` (what `machine` decided from `decided_from`, the machine as it was
/// before the event) in one synced write that applies only if the stored state and memo
/// are still `decided_from`'s. `Err(StoreError::Conflict)`: someone else changed them
/// first; nothing was written, and the caller re-reads the store and decides again.
pub fn apply_effects(
    store: &Store,
    hostname: &str,
    domain: &Domain,
    decided_from: &OutageMachine,
    machine: &OutageMachine,
    effects: &[Effect],
    now: i64,
) -> StoreResult<()> {
    if effects.is_empty() && machine.memo() == decided_from.memo() {
        return Ok(());
    }
    let mut summary: Option<QueueSummary> = None;
    let mut transitions = Vec::new();
    let mut prepared = Vec::new();
    for effect in effects {
        match effect {
            Effect::Transition { from, to } => transitions.push((*from, to.clone())),
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
                if let Some(p) = notify::prepare(&notice, &domain.alert_recipients)? {
                    prepared.push(p);
                }
            }
        }
    }
    let change = OutageChange {
        transitions,
        notices: prepared.iter().map(|p| p.request()).collect(),
        memo: (machine.memo() != decided_from.memo()).then(|| machine.memo().clone()),
    };
    let queued =
        store.record_outage_change(&domain.name, (decided_from.state(), decided_from.memo()), &change)?;
    for (from, to) in &change.transitions {
        tracing::warn!(
            domain = %domain.name,
            from = ?from,
            to = ?to.phase,
            manual = to.manual,
            reason = %to.reason,
            "outage state changed"
        );
    }
    for (notice, queue) in prepared.iter().zip(&queued) {
        tracing::info!(domain = %domain.name, kind = ?notice.kind, queue, "notice queued");
    }
    Ok(())
}
